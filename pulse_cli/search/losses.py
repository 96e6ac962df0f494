"""PULSE's losses, per image, from a loss string such as "100*L2+0.05*GEOCROSS".

Each term returns a [B] tensor; the search sums over the batch, which gives every image the same
gradient as a batch of one (each image's loss depends only on its own latents).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .limits import LOSS_NAMES, LossTerm, parse_loss  # noqa: F401  (the loss string's syntax lives there)


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
