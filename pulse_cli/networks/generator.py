"""What every generator family exposes to the latent search.

A latent search needs exactly this: the output resolution, how many W+ latents and of which size, the
shapes of the per-layer noise inputs, a differentiable `synthesize(ws, noise)`, the mapping network
(for latent statistics) and the latent statistics themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LatentStats:
    """Per-dimension statistics of `LeakyReLU(5)(mapping(z))`, as PULSE's `gaussian_fit.pt`."""

    mean: torch.Tensor  # [w_dim]
    std: torch.Tensor  # [w_dim]

    def to(self, device: torch.device | str) -> LatentStats:
        return LatentStats(self.mean.to(device), self.std.to(device))


class Generator(nn.Module):
    """Base class: a synthesis network plus its mapping network, weights frozen.

    Subclasses set `family`, `resolution`, `num_ws`, `w_dim` and implement `noise_shapes`,
    `synthesize` and `map`.
    """

    family: str = "unknown"
    # "w+": the search optimises W+ rows mapped from PULSE's Gaussian fit (StyleGAN); "gaussian": it optimises
    # a standard normal z directly, on the sphere of radius sqrt(w_dim) (DCGAN: no mapping, no noise inputs).
    latent_kind: str = "w+"
    resolution: int
    num_ws: int
    w_dim: int
    z_dim: int | None  # None when the mapping network was not loaded

    def __init__(self) -> None:
        super().__init__()
        self.latent_stats: LatentStats | None = None
        self.latent_stats_origin: str | None = None  # where the statistics came from, for people and logs
        self.source: str | None = None  # path the weights came from, for logs
        self.source_sha256: str | None = None

    def noise_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """Shapes of the noise inputs, lowest resolution first (PULSE's order)."""
        raise NotImplementedError

    def synthesize(self, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """`ws` [B, num_ws, w_dim] and noise (as `noise_shapes(B)`) -> raw image [B, 3, R, R]."""
        raise NotImplementedError

    def use_fast_path(self, enabled: bool = True) -> Generator:
        """Families with a faster evaluation of `synthesize` switch to it here; the default has none."""
        return self

    @property
    def synthesis_path(self) -> str:
        """"fast" or "reference": which evaluation `synthesize` uses (recorded so renders match)."""
        return "reference"

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """Mapping network: z [B, z_dim] -> w [B, w_dim]."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
