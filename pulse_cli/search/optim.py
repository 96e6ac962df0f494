"""Optimisers on spheres and PULSE's learning-rate schedules."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import torch

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "sgdm": partial(torch.optim.SGD, momentum=0.9),
    "adamax": torch.optim.Adamax,
}


# torch.optim marks an optimiser's construction, step and zero_grad for torch.compile ("do not trace", graph
# breaks), and the marks import torch._dynamo on first use: 1.2 s and ~800 modules in every process that searches
# (measured on the AMD EPYC this was written on), longer than a small generator's whole search. pulse never
# compiles, so it calls the code those marks wrap: the same code, the same update, bit for bit. Where a torch
# wraps them differently, the marked methods are called as they are (slower to start, same result).


@contextmanager
def _construction_without_dynamo() -> Iterator[None]:
    """The marks on Optimizer.__init__ and add_param_group cache their unmarked function on the function they
    wrap (`__dynamo_disable`), importing torch._dynamo only to make it: that cache holds the function itself while
    an optimiser is built."""
    filled = []
    for name in ("__init__", "add_param_group"):
        wrapped = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if wrapped is not None and getattr(wrapped, "__dynamo_disable", None) is None:
            wrapped.__dynamo_disable = wrapped
            filled.append(wrapped)
    try:
        yield
    finally:  # torch.compile, if a caller uses it later, finds the caches empty and fills them as torch meant
        for wrapped in filled:
            if getattr(wrapped, "__dynamo_disable", None) is wrapped:
                del wrapped.__dynamo_disable


def _unmarked_step(optimizer: torch.optim.Optimizer) -> Callable[[], object]:
    """The optimiser's own `step`, without the profiler/hook wrapper and the grad-mode wrapper that imports
    torch._dynamo (grad mode: the caller's no_grad, which is what that wrapper sets for a non-differentiable
    optimiser). Its hooks are not called: this module registers none."""
    cls = type(optimizer)
    step = inspect.unwrap(cls.step)
    if step.__qualname__ != f"{cls.__name__}.step" or optimizer.defaults.get("differentiable"):
        return optimizer.step
    return partial(step, optimizer)


def _radius(param: torch.Tensor) -> torch.Tensor:
    """Norm over every dim from 2 on: one radius per [b, i] vector (per noise map for noise)."""
    return (param.pow(2).sum(tuple(range(2, param.ndim)), keepdim=True) + 1e-9).sqrt()


class SphericalOptimizer:
    """Wraps an optimiser and projects each parameter back onto its initial sphere after every step.

    PULSE searches on the sphere where a Gaussian's samples concentrate, so latents stay realistic.
    """

    def __init__(self, name: str, params: Sequence[torch.Tensor], *, lr: float, foreach: bool = False,
                 lr_scales: Sequence[float] | None = None, betas: tuple[float, float] | None = None,
                 free: Sequence[tuple[torch.Tensor, float]] = ()):
        """`foreach=True` updates all parameters with one multi-tensor op per step (fewer small ops; the
        same update up to rounding). PULSE mode leaves it off, so its numerics stay as they were.
        `lr_scales` (one per parameter) makes each parameter's rate that multiple of `set_lr`'s. `betas`:
        Adam's (and Adamax's) moment decays instead of torch's (0.9, 0.999). `free`: (parameter, rate
        multiple) pairs the optimiser steps but does not put back on a sphere."""
        if name not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
        self.params = list(params)
        kwargs = {"lr": lr} | ({"foreach": True} if foreach else {})
        if betas is not None and name in ("adam", "adamax"):
            kwargs["betas"] = betas
        groups: list = self.params  # or one group per rate
        if lr_scales is not None or free:
            by_scale: dict[float, list[torch.Tensor]] = {}  # one group per rate: multi-tensor ops stay whole
            scales = [1.0] * len(self.params) if lr_scales is None else lr_scales
            for param, scale in [*zip(self.params, scales, strict=True), *free]:
                by_scale.setdefault(scale, []).append(param)
            groups = [{"params": ps, "lr_scale": s} for s, ps in by_scale.items()]
        with _construction_without_dynamo():
            self.opt = OPTIMIZERS[name](groups, **kwargs)
        self._step = _unmarked_step(self.opt)
        with torch.no_grad():
            self.radii = [_radius(p) for p in self.params]

    def set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    @torch.no_grad()
    def step(self) -> None:
        self._step()
        for param, radius in zip(self.params, self.radii, strict=True):
            param.div_(_radius(param))
            param.mul_(radius)

    def zero_grad(self) -> None:
        # what Optimizer.zero_grad(set_to_none=True) does, without its mark (see above)
        for group in self.opt.param_groups:
            for param in group["params"]:
                param.grad = None


def _fixed(step: int, steps: int) -> float:
    return 1.0


def _linear1cycle(step: int, steps: int) -> float:
    # Up from 0.1 to 1 at mid-run, back down to 0.1 at the end.
    return (9 * (1 - abs(step / steps - 1 / 2) * 2) + 1) / 10


def _linear1cycledrop(step: int, steps: int) -> float:
    # One cycle over the first 90% of steps, then a linear drop from 0.1 towards 0.001.
    if step < 0.9 * steps:
        return (9 * (1 - abs(step / (0.9 * steps) - 1 / 2) * 2) + 1) / 10
    return 1 / 10 + (step - 0.9 * steps) / (0.1 * steps) * (1 / 1000 - 1 / 10)


LR_SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "fixed": _fixed,
    "linear1cycle": _linear1cycle,
    "linear1cycledrop": _linear1cycledrop,
}


def lr_multiplier(schedule: str, step: int, steps: int) -> float:
    """Multiplier of the base learning rate for optimiser step `step` (0-based) of `steps`."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"unknown lr schedule {schedule!r}; known: {', '.join(LR_SCHEDULES)}")
    return LR_SCHEDULES[schedule](step, steps)
