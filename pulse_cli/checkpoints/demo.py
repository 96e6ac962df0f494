"""A small, untrained StyleGAN v1 made deterministically, so the tool can be shown without real weights.

It has PULSE's layout and file format (synthesis.pt + mapping.pt), 128x128 output and random weights:
it shows the mechanics of the search, not faces. Real weights cannot be shipped (NVIDIA's licence).
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from ..files.atomic import atomic_write_bytes
from ..networks.stylegan1 import MAPPING_LR_MULTIPLIER, StyleGAN1Generator
from .demo_marker import DEMO_MARKER, DEMO_MARKER_TEXT

DEMO_CHANNELS = {4: 128, 8: 128, 16: 64, 32: 64, 64: 32, 128: 16}
DEMO_W_DIM = 128  # smaller than FFHQ's 512 so latent statistics compute in seconds
DEMO_MAPPING_LAYERS = 8


def make_demo_generator(seed: int = 0) -> StyleGAN1Generator:
    """Same seed, same weights, on every machine (drawn on the CPU in a fixed order)."""
    rng = torch.Generator().manual_seed(seed)
    generator = StyleGAN1Generator(DEMO_CHANNELS, DEMO_W_DIM, [DEMO_W_DIM] * (DEMO_MAPPING_LAYERS + 1))
    with torch.no_grad():
        for name, tensor in sorted(generator.state_dict(keep_vars=True).items()):
            if name.endswith("intermediate.kernel"):
                kernel = torch.tensor([1.0, 2.0, 1.0])
                tensor.copy_((kernel[:, None] * kernel[None, :] / 16).view(1, 1, 3, 3))
            elif name.endswith("noise.weight"):
                tensor.fill_(0.1)
            elif name.endswith("bias"):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=rng))
            elif name.startswith("mapping."):  # StyleGAN's init: std 1/lr multiplier, scaled back at run time
                tensor.copy_(torch.randn(tensor.shape, generator=rng) / MAPPING_LR_MULTIPLIER)
            else:  # raw weights are unit normal: the equalised learning rate scales them at run time
                tensor.copy_(torch.randn(tensor.shape, generator=rng))
    return generator.eval().requires_grad_(False)


def _tensor_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def write_demo_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Write synthesis.pt and mapping.pt into `folder`, and the marker that makes `pulse upsample` say it
    runs on the demo generator; returns the synthesis path."""
    generator = make_demo_generator(seed)
    folder = Path(folder)
    atomic_write_bytes(folder / "mapping.pt", _tensor_bytes(generator.mapping.state_dict()))
    atomic_write_bytes(folder / "synthesis.pt", _tensor_bytes(generator.synthesis.state_dict()))
    atomic_write_bytes(folder / DEMO_MARKER, DEMO_MARKER_TEXT.encode())
    return folder / "synthesis.pt"
