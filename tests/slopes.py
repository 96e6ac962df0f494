"""Gradient-accuracy measures that do not depend on which side of LeakyReLU's kink a value falls.

A pre-activation within rounding of zero takes the slope 1 in one run and 0.2 in another (kernel set, fused
multiply-add or not, thread count, batch shape): the gradients then differ by ~1e-3 relative however
accurate every op is. So a float32 run is compared with a float64 run that takes its LeakyReLU slopes
from that float32 run: the float32 computation's own derivative, evaluated exactly. What is left is
rounding, on every CPU and kernel set.

`record_slopes()` notes, for every LeakyReLU the network applies (functional, in place or not, inside
custom autograd Functions too), where its input was positive; `impose_slopes(masks)` makes another run
apply those slopes instead of deciding by its own inputs' signs. Both intercept torch calls
(`TorchFunctionMode`, public torch API), so the networks under test run unchanged. Imposed slopes reach the
gradient through autograd (`x * slope`), so the run they are imposed on must use the reference path: the
fast path's hand-written backward takes its slopes from the sign of its saved output again.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

LEAKY_RELUS = frozenset({F.leaky_relu, F.leaky_relu_})


def _negative_slope(args: tuple, kwargs: dict) -> float:
    return args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)


class record_slopes(TorchFunctionMode):  # noqa: N801 - used as a context manager, named like one
    """`with record_slopes() as slopes:` ... `slopes.masks`: one bool tensor per LeakyReLU call, in order
    (True: the input was positive, slope 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.masks: list[torch.Tensor] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in LEAKY_RELUS:  # a positive slope keeps the sign: out > 0 exactly where the input was
            self.masks.append((out > 0).detach().cpu())
        return out


class impose_slopes(TorchFunctionMode):  # noqa: N801
    """`with impose_slopes(masks) as imposed:` every LeakyReLU call takes the next mask's slopes
    (x * (1 where the mask is True, else the negative slope)); `imposed.used` counts the masks taken."""

    def __init__(self, masks: list[torch.Tensor]) -> None:
        super().__init__()
        self.masks = masks
        self.used = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in LEAKY_RELUS:
            return func(*args, **kwargs)
        x, mask = args[0], self.masks[self.used]
        assert mask.shape == x.shape, (self.used, mask.shape, x.shape)
        self.used += 1
        slope = torch.full(x.shape, _negative_slope(args, kwargs), dtype=x.dtype).masked_fill_(mask, 1)
        return x * slope.to(x.device)


def relative_error(value: torch.Tensor, exact: torch.Tensor) -> float:
    """|value - exact| / |exact| (Frobenius norms, in float64)."""
    value, exact = value.detach().double().cpu(), exact.detach().double().cpu()
    return ((value - exact).norm() / exact.norm()).item()


def nudged(t: torch.Tensor, ulps: int, seed: int | None = None) -> torch.Tensor:
    """`t` moved by `ulps` units in the last place (towards +inf for positive `ulps`); with a `seed`, each
    element moves by +ulps or -ulps at random. Moves every pre-activation by about its own rounding
    error, so a bound that holds only for one kink state fails for some nudge."""
    direction = torch.full_like(t, float("inf"))
    if seed is not None:
        signs = torch.randint(0, 2, t.shape, generator=torch.Generator().manual_seed(seed)).bool()
        direction = torch.where(signs, direction, -direction)
    elif ulps < 0:
        direction = -direction
    for _ in range(abs(ulps)):
        t = torch.nextafter(t, direction)
    return t
