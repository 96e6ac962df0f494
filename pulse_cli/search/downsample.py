"""PULSE's bicubic downsampler: what "downscales back to the input" means."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def cubic_weight(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5, elementwise."""
    x = x.abs()
    near = (a + 2.0) * x**3 - (a + 3.0) * x**2 + 1.0
    far = a * x**3 - 5.0 * a * x**2 + 8.0 * a * x - 4.0 * a
    return torch.where(x <= 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def bicubic_kernel(factor: int) -> torch.Tensor:
    """Normalised 1-D kernel of length 4*factor, sampled at pixel centres of the input grid.

    Computed in float32 like the original, so the taps agree to the last bit.
    """
    size = 4 * factor
    positions = (torch.arange(size, dtype=torch.float32) - math.floor(size / 2) + 0.5) / factor
    kernel = cubic_weight(positions)
    return kernel / kernel.sum()


class BicubicDownsample(nn.Module):
    """Separable stride-`factor` bicubic filter with reflect padding, rows first then columns."""

    def __init__(self, factor: int):
        super().__init__()
        if factor < 1:
            raise ValueError(f"downsampling factor must be >= 1, got {factor}")
        self.factor = factor
        kernel = bicubic_kernel(factor)
        self.register_buffer("kernel_rows", kernel.view(1, 1, -1, 1).repeat(3, 1, 1, 1), persistent=False)
        self.register_buffer("kernel_cols", kernel.view(1, 1, 1, -1).repeat(3, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.ndim == 4 and x.shape[1] == 3, x.shape
        if self.factor == 1:
            return x
        pad = 3 * self.factor  # kernel length minus stride, split floor/ceil
        before, after = pad // 2, pad - pad // 2
        x = F.pad(x, (0, 0, before, after), mode="reflect")
        x = F.conv2d(x, self.kernel_rows.to(x.dtype), stride=(self.factor, 1), groups=3)
        x = F.pad(x, (before, after, 0, 0), mode="reflect")
        return F.conv2d(x, self.kernel_cols.to(x.dtype), stride=(1, self.factor), groups=3)
