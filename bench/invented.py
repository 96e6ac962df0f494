"""What the search invents: where an input's samples disagree, and whether they are the same person.

    python bench/invented.py            # `make bench-quality` runs it after bench/quality.py; ~7 min on 1 thread
    python bench/invented.py --faces 8  # a smoke run

Targets: as bench/quality.py, 48 faces of dcgan-digiface-64 (seeds 1000-1047), rendered at 64x64, downscaled to
8x8 and 16x16 with the project's BicubicDownsample and rounded to 8 bits. Each crop is searched 3 times (search
seeds 0, 1, 2; `--search pulse`, 100 steps, eps 2e-3: the CLI's defaults), as `pulse upsample --samples 3` would.

Measures, per crop size, with the product's own functions (`pulse_cli.run.disagreement`,
`pulse_cli.align.identity`: what `pulse upsample --samples 3 --check-face` records):
- disagreement: the map of each crop's 3 samples (per-pixel standard deviation across them, RMS over channels,
  pixels in [0, 1]); its mean inside the face and outside it. The face is dlib's HOG detection box on the true
  face (the face the crop came from; upscaled to 256 px as --check-face does, the box scaled back to 64 px);
  where dlib finds no face in the true face, the mean box of the others. For scale, the same map of the samples
  downscaled back to the crop's size (what the crop fixed: small when the samples met eps). Also over the crops
  whose 3 samples all met eps only.
- identities: dlib's face descriptor of each sample dlib finds a face in, and per crop the number of people at
  dlib's threshold 0.6 (connected groups, see pulse_cli/align/identity.py). The share of crops whose samples are
  different people (at least two people), the share where every sample is a different person, the crops not
  measured (fewer than two samples with a face), and the median pairwise distance. For scale: the true faces'
  pairwise distances (how often two different true faces fall under 0.6).
Results go to bench/invented_results.json; a table is printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from face_crops import crops_of, model_faces  # noqa: E402

from pulse_cli.align.detect import best_face, check_image  # noqa: E402
from pulse_cli.align.identity import SAME_PERSON, count_identities, read_face  # noqa: E402
from pulse_cli.engine import load_generator  # noqa: E402
from pulse_cli.run.disagreement import disagreement_map  # noqa: E402
from pulse_cli.search.config import SearchConfig  # noqa: E402
from pulse_cli.search.downsample import BicubicDownsample  # noqa: E402
from pulse_cli.search.pulse import SearchPool  # noqa: E402

MODEL = ROOT / "weights" / "dcgan-digiface-64.safetensors"
SEEDS = range(1000, 1048)  # bench/quality.py's faces
SIZES = (8, 16)
SAMPLES = 3
BATCH = 16


def rgb8(image: torch.Tensor) -> np.ndarray:
    """A result [3, R, R] in [0, 1] as the 8-bit image it is written as."""
    return (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def face_boxes(truths: torch.Tensor) -> tuple[list[tuple[int, int, int, int]], list[bool]]:
    """Per true face, dlib's detection box in its own pixels (left, top, right, bottom; exclusive ends), and
    whether dlib found it (if not: the mean box of those it found)."""
    found: list[tuple[int, int, int, int] | None] = []
    for truth in truths:
        image = check_image(rgb8(truth))
        scale = image.shape[0] / truth.shape[-1]
        best = best_face(image)
        if best is None:
            found.append(None)
            continue
        box = best[0]
        size = truth.shape[-1]
        found.append((max(0, int(box.left() / scale)), max(0, int(box.top() / scale)),
                      min(size, int(np.ceil((box.right() + 1) / scale))),
                      min(size, int(np.ceil((box.bottom() + 1) / scale)))))
    known = [b for b in found if b is not None]
    mean = tuple(int(round(v)) for v in np.mean(known, axis=0)) if known else (0, 0, truths.shape[-1], truths.shape[-1])
    return [b if b is not None else mean for b in found], [b is not None for b in found]


def search_all(G, targets: dict[int, torch.Tensor], steps: int, mode: str = "pulse") -> dict[tuple[int, int], dict]:
    """Every target searched SAMPLES times (seeds 0..SAMPLES-1), at most BATCH at a time."""
    config = SearchConfig(steps=steps, mode=mode).for_latent(G.latent_kind)
    pool = SearchPool(G, config=config)
    waiting = [((i, k), target, k) for i, target in targets.items() for k in range(SAMPLES)]
    results = {}
    while waiting or len(pool):
        while waiting and len(pool) < BATCH:
            pool.add(*waiting.pop(0))
        pool.step()
        for key, result in pool.pop_finished():
            results[key] = {"image": result.image, "converged": result.converged, "best_l2": result.best_l2}
    return results


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=len(SEEDS), help="how many of the 48 faces (default all)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--search", choices=("pulse", "robust"), default="pulse",
                        help="the search mode (default pulse; its results are bench/invented_results.json)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the VM is shared)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "invented_results.json")
    args = parser.parse_args()
    if not MODEL.is_file():
        sys.exit(f"{MODEL} not found: run `pulse weights download dcgan-digiface-64 --dest weights` (or make demo)")
    torch.set_num_threads(args.threads)
    G = load_generator(MODEL, "cpu")
    seeds = list(SEEDS)[: args.faces]
    truths = model_faces(G, seeds)
    boxes, detected = face_boxes(truths)
    truth_desc = [read_face(rgb8(t), describe=True).descriptor for t in truths]
    truth_pairs = count_identities(truth_desc).distances
    rows, records = {}, []
    for size in SIZES:
        crops = crops_of(truths, size)
        started = time.perf_counter()
        found = search_all(G, dict(enumerate(crops)), args.steps, args.search)
        seconds = time.perf_counter() - started
        down = BicubicDownsample(truths.shape[-1] // size)
        for i, seed in enumerate(seeds):
            images = torch.stack([found[(i, k)]["image"] for k in range(SAMPLES)])
            spread = disagreement_map(images).numpy()
            inside = np.zeros_like(spread, dtype=bool)
            left, top, right, bottom = boxes[i]
            inside[top:bottom, left:right] = True
            with torch.no_grad():
                at_crop = disagreement_map(down(images).clamp(0, 1)).numpy()
            readings = [read_face(rgb8(image), describe=True) for image in images]
            identity = count_identities([r.descriptor for r in readings])
            records.append({
                "size": size, "seed": seed, "face_box": boxes[i], "face_detected_in_truth": detected[i],
                "met_eps": sum(found[(i, k)]["converged"] for k in range(SAMPLES)),
                "spread_mean": float(spread.mean()), "spread_inside": float(spread[inside].mean()),
                "spread_outside": float(spread[~inside].mean()) if (~inside).any() else None,
                "spread_at_crop": float(at_crop.mean()),
                "faces": len(identity.faces), "people": identity.people, "median_distance": identity.median_distance,
            })
        mine = [r for r in records if r["size"] == size]
        all_met = [r for r in mine if r["met_eps"] == SAMPLES]
        measured = [r for r in mine if r["people"] is not None]
        row = {
            "crops": len(mine), "all_samples_met_eps": len(all_met),
            "spread_inside": statistics.mean(r["spread_inside"] for r in mine),
            "spread_outside": statistics.mean(r["spread_outside"] for r in mine if r["spread_outside"] is not None),
            "spread_at_crop": statistics.mean(r["spread_at_crop"] for r in mine),
            "spread_inside_all_met": statistics.mean(r["spread_inside"] for r in all_met) if all_met else None,
            "spread_outside_all_met": statistics.mean(r["spread_outside"] for r in all_met) if all_met else None,
            "measured": len(measured),
            "different_people": sum(r["people"] >= 2 for r in measured) / len(measured) if measured else None,
            "all_different": sum(r["people"] == SAMPLES for r in measured) / len(measured) if measured else None,
            "median_distance": median([r["median_distance"] for r in measured]),
            "seconds": seconds,
        }
        rows[f"{size}x{size}"] = row
        print(f"{size}x{size}: {row}", file=sys.stderr)
    summary = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads},
        "faces": len(seeds), "samples": SAMPLES, "steps": args.steps, "search": args.search, "eps": SearchConfig().eps,
        "threshold": SAME_PERSON, "true_faces_detected": sum(detected),
        "true_faces_described": sum(d is not None for d in truth_desc),
        "true_faces_pairwise_median": median([d for _, _, d in truth_pairs]),
        "true_faces_pairwise_under_threshold": (sum(d < SAME_PERSON for _, _, d in truth_pairs) / len(truth_pairs)
                                                if truth_pairs else None),
        "rows": rows, "records": records,
    }
    args.out.write_text(json.dumps(summary, indent=1) + "\n")

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.0%}"

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    print(f"\ntrue faces: dlib describes {summary['true_faces_described']} of {len(seeds)}; two different true "
          f"faces are {num(summary['true_faces_pairwise_median'])} apart (median), "
          f"{pct(summary['true_faces_pairwise_under_threshold'])} of pairs under {SAME_PERSON}")
    print("| crop | spread inside the face | outside | at the crop's size | inside / outside, all 3 met eps "
          "(crops) | samples are different people | every sample a different person | measured | "
          "median distance |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {num(r['spread_inside'])} | {num(r['spread_outside'])} | {num(r['spread_at_crop'])} | "
              f"{num(r['spread_inside_all_met'])} / {num(r['spread_outside_all_met'])} ({r['all_samples_met_eps']}) | "
              f"{pct(r['different_people'])} | {pct(r['all_different'])} | {r['measured']} of {r['crops']} | "
              f"{num(r['median_distance'])} |")


if __name__ == "__main__":
    main()
