"""Small face crops made from a generator's own faces, for `make demo` and bench/quality.py.

Each seed draws z ~ N(0, I) on the CPU (the same face on every machine), the generator renders it, and the
face is downscaled with the search's own bicubic downsampler and rounded to 8 bits, as a PNG crop of it would
be. The full-resolution faces are written too: the real face behind each crop, to compare results with.

Run from the repo root:
    python examples/face_crops.py weights/dcgan-digiface-64.safetensors demo-out --seeds 1-6 --size 8
writes demo-out/crops/face-<seed>.png (8x8) and demo-out/true-faces/face-<seed>.png (64x64).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pulse_cli.engine import load_generator
from pulse_cli.search.downsample import BicubicDownsample


@torch.no_grad()
def model_faces(G, seeds: Sequence[int]) -> torch.Tensor:
    """The generator's faces [N, 3, R, R] in [0, 1], one per seed (z drawn from N(0, I) by that seed)."""
    z = torch.stack([torch.randn(G.z_dim, generator=torch.Generator().manual_seed(seed)) for seed in seeds])
    ws = z[:, None].to(G.device) if G.latent_kind == "gaussian" else G.map(z.to(G.device))[:, None].expand(
        -1, G.num_ws, -1)
    noise = [torch.zeros(shape, device=G.device) for shape in G.noise_shapes(len(seeds))]
    return ((G.synthesize(ws, noise) + 1) / 2).clamp(0, 1).cpu()


@torch.no_grad()
def crops_of(faces: torch.Tensor, size: int) -> torch.Tensor:
    """Faces [N, 3, R, R] downscaled to size x size as the search sees them, rounded to 8 bits."""
    small = BicubicDownsample(faces.shape[-1] // size)(faces).clamp(0, 1)
    return (small * 255).round() / 255


def to_png(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def parse_seeds(text: str) -> list[int]:
    """"1-6" or "1,4,9"."""
    if "-" in text:
        first, last = (int(part) for part in text.split("-", 1))
        return list(range(first, last + 1))
    return [int(part) for part in text.split(",")]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path, help="writes OUT/crops/ and OUT/true-faces/")
    parser.add_argument("--seeds", default="1-6", help="e.g. 1-6 or 1,4,9 (default 1-6)")
    parser.add_argument("--size", type=int, default=8, help="crop size in pixels (default 8)")
    args = parser.parse_args(argv)
    G = load_generator(args.checkpoint, "cpu")
    seeds = parse_seeds(args.seeds)
    faces = model_faces(G, seeds)
    for seed, face, crop in zip(seeds, faces, crops_of(faces, args.size), strict=True):
        to_png(crop, args.out / "crops" / f"face-{seed}.png")
        to_png(face, args.out / "true-faces" / f"face-{seed}.png")
    print(f"wrote {len(seeds)} {args.size}x{args.size} crops to {args.out / 'crops'} and the faces they come "
          f"from to {args.out / 'true-faces'}", file=sys.stderr)


if __name__ == "__main__":
    main()
