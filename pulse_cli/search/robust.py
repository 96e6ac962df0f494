"""`--search robust`: PULSE's search plus what later work found to help, and the measures used to judge it.

PULSE optimises the W+ latents on their sphere and only the 5 coarsest noise maps. `robust` keeps that
(same latents, same GEOCROSS, same spherical Adam and schedule) and changes three things:

- every noise layer the generator has (except the zeroed "bad" ones) is trained, each on its own sphere;
- so that trained noise stays noise, the StyleGAN2 projector's regulariser is added (the squared lag-1
  autocorrelation of each map along x and y, at every scale down to 8x8), and after every step each
  trained map is re-centred (mean 0) and put back on its sphere (the projector's renormalisation);
- the L2 (or L1) term is a hinge at a fraction of eps instead of at eps, so the search aims well inside
  eps rather than stopping at its edge; below the hinge, only the realism terms pull.

Each of these is a field of `RobustOptions`, so the benchmark can switch them one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..networks.generator import LatentStats

SEARCH_MODES = ("pulse", "robust")


@dataclass(frozen=True)
class RobustOptions:
    """What `--search robust` changes; the defaults are what `robust` means (chosen by bench/search.py)."""

    train_all_noise: bool = True  # every non-zeroed noise layer trainable (PULSE: the 5 coarsest)
    noise_reg_weight: float = 5.0  # weight of the NOISE term (0 switches it off)
    renormalise_noise: bool = True  # re-centre trained noise maps after each step (then back on the sphere)
    hinge: float = 0.5  # the L2/L1 term is clamped at hinge * eps (PULSE: 1, i.e. at eps)

    def validate(self) -> None:
        if not 0 < self.hinge <= 1:
            raise ValueError(f"hinge must be above 0 and at most 1 (a fraction of eps), got {self.hinge}")
        if not 0 <= self.noise_reg_weight < float("inf"):
            raise ValueError(f"noise regularisation weight must be >= 0, got {self.noise_reg_weight}")


def noise_regularisation(noise: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-image [B] multi-scale autocorrelation penalty over noise maps [B, 1, r, r] (StyleGAN2 projector).

    For each map and each scale (halved by 2x2 average pooling down to 8x8): the squared mean of the map
    times itself shifted by one pixel, along x and along y (wrapping around). White noise scores near 0.
    """
    # Maps of one size go through the pyramid together (as channels): the same sums, fewer small ops.
    by_size: dict[int, list[torch.Tensor]] = {}
    for n in noise:
        by_size.setdefault(n.shape[-1], []).append(n)
    total = noise[0].new_zeros(noise[0].shape[0])
    for maps in by_size.values():
        n = torch.cat(maps, 1) if len(maps) > 1 else maps[0]
        while True:
            x = (n * torch.roll(n, shifts=1, dims=3)).mean((2, 3)).pow(2)
            y = (n * torch.roll(n, shifts=1, dims=2)).mean((2, 3)).pow(2)
            total = total + (x + y).sum(1)
            if n.shape[-1] <= 8:
                break
            n = F.avg_pool2d(n, kernel_size=2)
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
