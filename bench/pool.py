"""Images per hour for a folder of 16 crops, with and without the search pool's refill.

With `--stop-at-eps` an image is done at its first iterate meeting eps. Without refill (the original's
batches) a batch runs until its slowest member is done and the finished members keep being computed;
with refill (the project's `SearchPool`) a finished image leaves and the next crop takes its place.
Run on the small demo generator (128x128) so it takes a minute on a CPU: the ratio is what it measures.

    python bench/pool.py [--batch 4] [--eps 0.004] [--out bench/results_pool.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pulse_cli.checkpoints.demo import make_demo_generator  # noqa: E402
from pulse_cli.checkpoints.latent_stats import compute_latent_stats  # noqa: E402
from pulse_cli.device import configure_cpu_allocator  # noqa: E402
from pulse_cli.search.pulse import SearchConfig, SearchPool  # noqa: E402


def crops(count: int, size: int = 16) -> list[torch.Tensor]:
    from skimage import data  # dev-only dependency: a public-domain NASA photo

    photo = Image.fromarray(np.asarray(data.astronaut()))
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        side = int(rng.integers(160, 320))
        x, y = int(rng.integers(0, 512 - side)), int(rng.integers(0, 512 - side))
        crop = photo.crop((x, y, x + side, y + side)).resize((size, size), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255).permute(2, 0, 1))
    return out


def with_refill(G, targets, batch, config) -> tuple[float, int]:
    pool = SearchPool(G, config=config, stop_at_eps=True)
    pending = list(enumerate(targets))
    image_steps = 0
    started = time.perf_counter()
    while pending or len(pool):
        while len(pool) < batch and pending:
            key, target = pending.pop(0)
            pool.add(key, target, key)
        pool.step()
        image_steps += len(pool)
        pool.pop_finished()
    return time.perf_counter() - started, image_steps


def without_refill(G, targets, batch, config) -> tuple[float, int]:
    """Fixed batches; each runs until all its members met eps (or ran out of steps), computing all."""
    image_steps = 0
    started = time.perf_counter()
    for first in range(0, len(targets), batch):
        pool = SearchPool(G, config=config, stop_at_eps=False)
        members = targets[first:first + batch]
        for key, target in enumerate(members):
            pool.add(first + key, target, first + key)
        while len(pool):
            pool.step()
            image_steps += len(pool)
            if all(state.converged for _, state in pool.active) or pool.active[0][1].done:
                break
    return time.perf_counter() - started, image_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--eps", type=float, default=4e-3)
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results_pool.json")
    args = parser.parse_args()
    configure_cpu_allocator()
    G = make_demo_generator().use_fast_path()
    G.latent_stats = compute_latent_stats(G.map, G.z_dim)
    config = SearchConfig(eps=args.eps)
    targets = crops(args.count)
    rows = {}
    for name, run in (("without refill", without_refill), ("with refill", with_refill)):
        seconds, image_steps = run(G, targets, args.batch, config)
        rows[name] = {"seconds": seconds, "image_steps": image_steps,
                      "images_per_hour": args.count / seconds * 3600}
    for name, row in rows.items():
        print(f"{name:15s} {row['seconds']:7.1f} s  {row['image_steps']:5d} image-steps  "
              f"{row['images_per_hour']:8.0f} images/h")
    speedup = rows["with refill"]["images_per_hour"] / rows["without refill"]["images_per_hour"]
    print(f"refill: {speedup:.2f}x images per hour (batch {args.batch}, eps {args.eps}, {args.count} crops)")
    args.out.write_text(json.dumps({"batch": args.batch, "eps": args.eps, "count": args.count, **rows,
                                    "speedup": speedup}, indent=2))


if __name__ == "__main__":
    main()
