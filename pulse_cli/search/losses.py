"""PULSE's losses, per image, from a loss string such as "100*L2+0.05*GEOCROSS".

Each term returns a [B] tensor; the search sums over the batch, which gives every image the same
gradient as a batch of one (each image's loss depends only on its own latents).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .limits import MAX_LOSS_WEIGHT

LOSS_NAMES = ("L2", "L1", "GEOCROSS")


@dataclass(frozen=True)
class LossTerm:
    weight: float
    name: str


def parse_loss(spec: str) -> tuple[LossTerm, ...]:
    """"100*L2+0.05*GEOCROSS" -> terms; raises ValueError with a one-line reason."""
    terms = []
    for part in spec.replace(" ", "").split("+"):
        weight, sep, name = part.partition("*")
        if not sep:
            raise ValueError(f"loss term {part!r} must look like WEIGHT*NAME, e.g. 100*L2")
        if name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {name!r} in {spec!r}; known: {', '.join(LOSS_NAMES)}")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"loss weight {weight!r} in {spec!r} is not a number") from None
        if not 0 < value <= MAX_LOSS_WEIGHT:  # also refuses nan and inf
            raise ValueError(f"loss weight {weight!r} in {spec!r} must be a number above 0 and at most "
                             f"{MAX_LOSS_WEIGHT:g}")
        terms.append(LossTerm(value, name))
    if not any(t.name in ("L2", "L1") for t in terms):
        raise ValueError(f"loss {spec!r} needs an L2 or L1 term, or nothing ties the result to the input")
    return tuple(terms)


def mean_squared_error(generated_lr: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Unclamped per-image MSE at input resolution: the 'L2' that is compared with eps."""
    return (generated_lr - target).pow(2).mean((1, 2, 3))


def l2_loss(generated_lr: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    # Clamped at eps: once an image downscales well enough, L2 stops pulling on it.
    return mean_squared_error(generated_lr, target).clamp(min=eps)


def l1_loss(generated_lr: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    return 10 * (generated_lr - target).abs().mean((1, 2, 3)).clamp(min=eps)


def geocross_loss(ws: torch.Tensor) -> torch.Tensor:
    """Mean squared geodesic distance between an image's W+ vectors (keeps them on one 'face')."""
    batch, num_ws, w_dim = ws.shape
    if num_ws == 1:
        return ws.new_zeros(batch)
    x = ws.view(batch, 1, num_ws, w_dim)
    y = ws.view(batch, num_ws, 1, w_dim)
    a = ((x - y).pow(2).sum(-1) + 1e-9).sqrt()
    b = ((x + y).pow(2).sum(-1) + 1e-9).sqrt()
    distance = 2 * torch.atan2(a, b)
    return (distance.pow(2) * w_dim).mean((1, 2)) / 8.0


def loss_terms(terms: tuple[LossTerm, ...], *, ws: torch.Tensor, generated_lr: torch.Tensor,
               target: torch.Tensor, eps: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-image total [B] and each named term [B] (unweighted, as PULSE logs them)."""
    compute: dict[str, Callable[[], torch.Tensor]] = {
        "L2": lambda: l2_loss(generated_lr, target, eps),
        "L1": lambda: l1_loss(generated_lr, target, eps),
        "GEOCROSS": lambda: geocross_loss(ws),
    }
    values: dict[str, torch.Tensor] = {}
    total = torch.zeros(ws.shape[0], device=ws.device, dtype=generated_lr.dtype)
    for term in terms:
        if term.name not in values:
            values[term.name] = compute[term.name]()
        total = total + term.weight * values[term.name]
    return total, values
