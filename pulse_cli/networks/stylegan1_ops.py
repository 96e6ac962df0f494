"""StyleGAN v1 primitives shared by the reference modules (stylegan1.py) and the fast path
(stylegan1_fast.py): both import from here, so neither imports the other's internals."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)
# From this output resolution upward StyleGAN fuses nearest upscale + conv into one transposed conv.
FUSED_UPSCALE_MIN_RES = 128


def he_scale(fan_in: int, gain: float) -> float:
    """Equalised learning rate: the He-init scale applied to raw weights at run time."""
    return gain * fan_in**-0.5


def fold_transposed(weight: torch.Tensor) -> torch.Tensor:
    """[O, I, 3, 3] kernel -> [I, O, 4, 4] stride-2 transposed-conv kernel: StyleGAN's fused upscale.

    The 4x4 kernel is the 3x3 kernel summed over its four 1-pixel shifts. It equals nearest upscale +
    conv with the kernel flipped, not the unfused path; trained weights expect exactly this.
    """
    w = F.pad(weight.transpose(0, 1), (1, 1, 1, 1))
    return w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]
