"""`--search robust`: PULSE's search plus what later work found to help, and the measures used to judge it.

PULSE optimises the W+ latents on their sphere and only the 5 coarsest noise maps. `robust` keeps that
(same latents, same GEOCROSS, same spherical Adam) and changes five things:

- every noise layer (except the zeroed "bad" ones) whose maps are at most `max_noise_ratio` times the
  target's size is trained, each on its own sphere; finer maps cannot change the downscaled image much,
  so they keep PULSE's fixed random noise (this also keeps the cost per step down at 1024 px);
- so that trained noise stays noise, the StyleGAN2 projector's regulariser is added (the squared lag-1
  autocorrelation of each map along x and y, at every scale down to 8x8), and after every step each
  trained map is re-centred (mean 0) and put back on its sphere (the projector's renormalisation);
- the L2 (or L1) term is a hinge at a fraction of eps instead of at eps, so the search aims well inside
  eps rather than stopping at its edge; below the hinge, only the realism terms pull;
- the learning rate is twice SearchConfig.lr (0.8 by default), with a schedule that peaks at 10% of the
  steps and decays along a cosine, instead of PULSE's peak at 45%;
- the trained noise maps step at three times the latents' rate (PULSE: the same rate).

Each of these is a field of `RobustOptions`, so the benchmark can switch them one by one. The trained
maps of one size are one tensor and Adam runs multi-tensor (`foreach`): fewer small ops per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..networks.generator import LatentStats
from .config import SearchConfig
from .optim import lr_multiplier


def _warmup_linear(peak: float) -> Callable[[int, int], float]:
    """PULSE's linear1cycledrop with its peak moved to `peak` of the steps: up from 0.1 to 1 at `peak`,
    down to 0.1 at 90% of the steps, then a linear drop towards 0.001."""
    def multiplier(step: int, steps: int) -> float:
        rise, drop = peak * steps, 0.9 * steps
        if step < rise:
            return 0.1 + 0.9 * step / rise
        if step < drop:
            return 1 - 0.9 * (step - rise) / (drop - rise)
        return 0.1 + (step - drop) / (steps - drop) * (1 / 1000 - 1 / 10)
    return multiplier


def _warmup_cosine(peak: float, hold: float | None = None) -> Callable[[int, int], float]:
    """Up from 0.1 to 1 over the first `peak` of the steps, held at 1 until `hold` of them (if given), then
    a cosine down to 0.001 at the end."""
    def multiplier(step: int, steps: int) -> float:
        rise, held = peak * steps, (hold or peak) * steps
        if step < rise:
            return 0.1 + 0.9 * step / rise
        if step < held:
            return 1.0
        return 0.001 + 0.999 * (1 + math.cos(math.pi * (step - held) / (steps - held))) / 2
    return multiplier


# Schedules robust may use on top of PULSE's (`pulse` means: SearchConfig.lr_schedule, as PULSE).
ROBUST_SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "warmup20-linear": _warmup_linear(0.2),
    "warmup10-cosine": _warmup_cosine(0.1),
    "warmup10-hold70-cosine": _warmup_cosine(0.1, hold=0.7),
}


@dataclass(frozen=True)
class RobustOptions:
    """What `--search robust` changes; the defaults are what `robust` means (chosen by bench/search.py)."""

    train_all_noise: bool = True  # every non-zeroed noise layer trainable (PULSE: the 5 coarsest) ...
    max_noise_ratio: int | None = 8  # ... up to maps this many times the target's size (None: all)
    noise_reg_weight: float = 5.0  # weight of the NOISE term (0 switches it off)
    renormalise_noise: bool = True  # re-centre trained noise maps after each step (then back on the sphere)
    hinge: float = 0.5  # the L2/L1 term is clamped at hinge * eps (PULSE: 1, i.e. at eps)
    lr_factor: float = 2.0  # robust's learning rate is SearchConfig.lr times this
    lr_schedule: str = "warmup10-cosine"  # one of ROBUST_SCHEDULES, or "pulse": SearchConfig.lr_schedule
    noise_lr_factor: float = 3.0  # trained noise maps step at this many times the latents' rate

    def validate(self) -> None:
        if not 0 < self.hinge <= 1:
            raise ValueError(f"hinge must be above 0 and at most 1 (a fraction of eps), got {self.hinge}")
        if not 0 <= self.noise_reg_weight < float("inf"):
            raise ValueError(f"noise regularisation weight must be >= 0, got {self.noise_reg_weight}")
        if not 0 < self.lr_factor < float("inf"):
            raise ValueError(f"lr factor must be above 0, got {self.lr_factor}")
        if not 0 < self.noise_lr_factor < float("inf"):
            raise ValueError(f"noise lr factor must be above 0, got {self.noise_lr_factor}")
        if self.lr_schedule != "pulse" and self.lr_schedule not in ROBUST_SCHEDULES:
            raise ValueError(f"unknown robust lr schedule {self.lr_schedule!r}; known: pulse, "
                             f"{', '.join(ROBUST_SCHEDULES)}")
        if self.max_noise_ratio is not None and self.max_noise_ratio < 1:
            raise ValueError(f"max noise ratio must be at least 1 (or None: every layer), got {self.max_noise_ratio}")

    def overrides(self) -> dict[str, object]:
        """The SearchConfig fields this search does not use, each with what records say instead: its own
        learning-rate schedule; and, training every noise layer up to `max_noise_ratio` times the target's
        size, no `trainable_noise_layers` (null). The command line refuses them (see `pulse upsample`)."""
        used: dict[str, object] = {}
        if self.lr_schedule != "pulse":
            used["lr_schedule"] = self.lr_schedule
        if self.train_all_noise:
            used["trainable_noise_layers"] = None
        return used

    def learning_rate(self, config: SearchConfig, step: int) -> float:
        """Robust's learning rate at optimiser step `step` (0-based) of `config.steps`."""
        if self.lr_schedule == "pulse":
            multiplier = lr_multiplier(config.lr_schedule, step, config.steps)
        else:
            multiplier = ROBUST_SCHEDULES[self.lr_schedule](step, config.steps)
        return config.lr * self.lr_factor * multiplier


def noise_regularisation(noise: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image [B] multi-scale autocorrelation penalty over noise maps [B, 1, r, r] (StyleGAN2 projector).

    For each map and each scale (halved by 2x2 average pooling down to 8x8): the squared mean of the map
    times itself shifted by one pixel, along x and along y (wrapping around). White noise scores near 0.
    """
    # The pyramids of all maps go down together: at each size, the maps of that size and those pooled
    # from above it are one tensor (as channels). The same sums as one pyramid per map, far fewer ops.
    by_size: dict[int, list[torch.Tensor]] = {}
    for n in noise:
        by_size.setdefault(n.shape[-1], []).append(n)
    total = noise[0].new_zeros(noise[0].shape[0])
    carried: torch.Tensor | None = None  # maps from larger sizes whose pyramid goes on, pooled to this size
    while by_size or carried is not None:
        size = carried.shape[-1] if carried is not None else max(by_size)
        if any(s > size for s in by_size):  # a size off the halving chain (not a power of 2): its own pyramid
            total = total + noise_regularisation([m for s in list(by_size) if s > size for m in by_size.pop(s)])
        maps = ([carried] if carried is not None else []) + by_size.pop(size, [])
        n = torch.cat(maps, 1) if len(maps) > 1 else maps[0]
        x = (n * torch.roll(n, shifts=1, dims=3)).mean((2, 3)).pow(2)
        y = (n * torch.roll(n, shifts=1, dims=2)).mean((2, 3)).pow(2)
        total = total + (x + y).sum(1)
        carried = F.avg_pool2d(n, kernel_size=2) if size > 8 else None  # each map's pyramid ends at 8x8
    return total


# --- measures (bench/search.py and the tests) ----------------------------------------------------------


def lag1_autocorrelation(noise: torch.Tensor) -> float:
    """Normalised lag-1 autocorrelation of one noise map [..., r, r], mean of x and y (white noise: ~0)."""
    n = noise.reshape(noise.shape[-2:]).double()
    n = n - n.mean()
    var = n.pow(2).mean()
    if var == 0:
        return 0.0
    x = (n * torch.roll(n, 1, dims=1)).mean() / var
    y = (n * torch.roll(n, 1, dims=0)).mean() / var
    return float((x + y) / 2)


def w_distance(ws: torch.Tensor, stats: LatentStats) -> float:
    """Mean over W+ rows [num_ws, w_dim] of the RMS z-score of LeakyReLU(5)(w) under the gaussian fit.

    PULSE's search space is exactly these z-scores (w = LeakyReLU(0.2)(x * std + mean)), so a row the
    mapping network could have made scores about 1.
    """
    x = (F.leaky_relu(ws.double(), 5.0) - stats.mean.double().to(ws.device)) / stats.std.double().to(ws.device)
    return float(x.pow(2).mean(-1).sqrt().mean())
