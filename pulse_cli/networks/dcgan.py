"""DCGAN generator (Radford et al. 2016), in the layout of the PyTorch DCGAN tutorial.

z [B, nz] -> four ConvTranspose2d + BatchNorm2d (eval mode: running statistics) + ReLU stages, then a
ConvTranspose2d and tanh: a [B, nc, 64, 64] image. Its state dict keys are the tutorial's
(`main.{0,1,3,4,6,7,9,10,12}.*`); sizes (nz, ngf, nc) are read from the tensors.

For the latent search the generator has one latent, z itself: `num_ws = 1`, `w_dim = z_dim = nz`, no noise
inputs and no mapping network. z is standard normal, so PULSE's search keeps it on the sphere of radius
sqrt(nz) where such samples concentrate (`latent_kind = "gaussian"`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .generator import Generator, LatentStats

# Indices in `main` of the transposed convolutions and batch norms (ReLU / tanh hold no weights).
CONV_INDICES = (0, 3, 6, 9, 12)
NORM_INDICES = (1, 4, 7, 10)
RESOLUTION = 64


def _stage(in_channels: int, out_channels: int, stride: int, padding: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(in_channels, out_channels, 4, stride, padding, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(True)]


def _shape(sd: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ValueError(f"not a DCGAN generator state dict: no {key}")
    return tuple(sd[key].shape)


class DCGANGenerator(Generator):
    """The PyTorch tutorial's DCGAN generator (64x64), weights frozen, batch norm in eval mode."""

    family = "dcgan"
    latent_kind = "gaussian"

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3):
        super().__init__()
        self.resolution = RESOLUTION
        self.num_ws = 1
        self.w_dim = nz
        self.z_dim = nz
        self.channels = nc
        self.main = nn.Sequential(
            *_stage(nz, ngf * 8, 1, 0),  # 4x4
            *_stage(ngf * 8, ngf * 4, 2, 1),  # 8x8
            *_stage(ngf * 4, ngf * 2, 2, 1),  # 16x16
            *_stage(ngf * 2, ngf, 2, 1),  # 32x32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),  # 64x64
            nn.Tanh(),
        )
        # z ~ N(0, I): the statistics PULSE's search space maps through are the identity's.
        self.latent_stats = LatentStats(torch.zeros(nz), torch.ones(nz))

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> DCGANGenerator:
        """Build from the tutorial's `netG.state_dict()` keys; ValueError on any other layout."""
        nz, ngf8 = _shape(sd, "main.0.weight")[:2]
        ngf, nc = _shape(sd, "main.12.weight")[:2]
        if nc != 3 or ngf8 != 8 * ngf:
            raise ValueError(f"not a 64x64 RGB DCGAN generator: main.0.weight is {_shape(sd, 'main.0.weight')}, "
                             f"main.12.weight {_shape(sd, 'main.12.weight')}")
        generator = cls(nz, ngf, nc)
        expected = set(generator.state_dict())
        missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
        if missing or extra:
            what = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(extra[:3])}"
            raise ValueError(f"state dict does not fit a DCGAN generator: {what}")
        try:
            # Strict: every key present, nothing extra, every shape right.
            generator.load_state_dict({k: v.detach() for k, v in sd.items()}, strict=True)
        except RuntimeError as err:  # a wrong shape: torch names it on the last line
            reason = str(err).splitlines()[-1].strip()
            raise ValueError(f"state dict does not fit a DCGAN generator: {reason}") from None
        return generator.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> DCGANGenerator:
        # Batch norm always uses its running statistics: a search's image never depends on its batch-mates.
        return super().train(False)

    def noise_shapes(self, batch: int) -> list[tuple[int, ...]]:
        return []

    def synthesize(self, ws: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (1, self.w_dim):
            raise ValueError(f"z must be [B, 1, {self.w_dim}], got {tuple(ws.shape)}")
        if noise:
            raise ValueError(f"a DCGAN generator has no noise inputs, got {len(noise)}")
        return self.main(ws.reshape(ws.shape[0], self.w_dim, 1, 1))

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """No mapping network: the latent the search optimises is z itself."""
        return z
