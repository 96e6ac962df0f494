"""The yardstick of `--search robust`: how often each search mode finds a face, how fast, and how real.

    python bench/search.py                  # the full run: pulse vs robust (3 seeds) + ablation, ~30 min
    python bench/search.py --part main      # only pulse vs robust
    python bench/search.py --part ablation  # only the ablation (StyleGAN v1 16x16 targets, 2 seeds)
    python bench/search.py --quick          # fewer targets and seeds, for a smoke run

Targets with a perfect answer: images rendered by the shared 256-px StyleGAN v1 fixture generator
(PULSE layout) and by the 64-px StyleGAN2 fixture generator (rosinality_g_ema.pt) from random latents
and noise (this script's seeds; 10 StyleGAN v1 and 14 StyleGAN2 targets), downscaled to 16x16 and
32x32 by the project's BicubicDownsample and rounded to 8 bits as if read from a PNG. Targets without
one: the real crops in examples/crops/, searched with the StyleGAN2 generator (the best L2 reached is
reported). The ablation runs on the StyleGAN v1 16x16 targets with one seed. Every search runs eps 1e-3
for 100 steps (PULSE's settings otherwise); reaching 2e-3 is read from the same runs' L2 curves.
Writes bench/search_results.json and prints tables.
"""

from __future__ import annotations

import argparse
import dataclasses
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

from pulse_cli.checkpoints.latent_stats import compute_latent_stats  # noqa: E402
from pulse_cli.engine import load_generator  # noqa: E402
from pulse_cli.networks.stylegan1 import StyleGAN1Generator  # noqa: E402
from pulse_cli.search.downsample import BicubicDownsample  # noqa: E402
from pulse_cli.search.losses import geocross_loss  # noqa: E402
from pulse_cli.search.pulse import SearchConfig, SearchPool  # noqa: E402
from pulse_cli.search.robust import RobustOptions, lag1_autocorrelation, w_distance  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures"
EPS = 1e-3
STEPS = 100
TARGET_SEED_BASE = {"sg1": 1000, "sg2": 2000}
SEARCH_SEEDS = (11, 22, 33)

PULSE = SearchConfig(eps=EPS, steps=STEPS)
ROBUST = dataclasses.replace(PULSE, mode="robust")
_R = RobustOptions()
# name -> (config, robust options or None, what it shows)
ABLATION: dict[str, tuple[SearchConfig, RobustOptions | None, str]] = {
    "pulse": (PULSE, None, "PULSE as published (5 coarsest noise layers, L2 clamped at eps)"),
    "+all-noise": (ROBUST, RobustOptions(noise_reg_weight=0, renormalise_noise=False, hinge=1.0),
                   "every noise layer trained, nothing else"),
    "+all-noise+reg": (ROBUST, RobustOptions(hinge=1.0), "every layer, with the projector regulariser and "
                       "renormalisation"),
    "+hinge": (ROBUST, RobustOptions(train_all_noise=False, noise_reg_weight=0, renormalise_noise=False),
               f"only the L2 hinge at {_R.hinge:g} eps"),
    "+all-noise+hinge": (ROBUST, RobustOptions(noise_reg_weight=0, renormalise_noise=False),
                         "every layer + hinge, no regulariser"),
    "robust": (ROBUST, None, "all three (the --search robust default)"),
    "robust-no-renorm": (ROBUST, RobustOptions(renormalise_noise=False), "robust without renormalisation"),
    "robust-hinge0.25": (ROBUST, RobustOptions(hinge=0.25), "robust, hinge at 0.25 eps"),
    "robust-lr0.2": (dataclasses.replace(ROBUST, lr=0.2), None, "robust at half the learning rate"),
    "robust-lr0.8": (dataclasses.replace(ROBUST, lr=0.8), None, "robust at twice the learning rate"),
}


def sg1_generator() -> StyleGAN1Generator:
    ref = torch.load(FIXTURES / "pulse_reference_fixture.pt", map_location="cpu", weights_only=True)
    G = StyleGAN1Generator.from_state_dicts(ref["synthesis_state_dict"], ref["mapping_state_dict"])
    G.use_fast_path(True)  # what `pulse upsample` uses on a CPU
    G.latent_stats = compute_latent_stats(G.map, G.z_dim, samples=200_000)
    G.requires_grad_(False)
    return G


def sg2_generator(cache: Path):
    return load_generator(FIXTURES / "rosinality_g_ema.pt", cache_dir=cache)


@torch.no_grad()
def generated_targets(G, seed_base: int, count: int, size: int) -> list[torch.Tensor]:
    """`count` images of G from random z and noise, downscaled to size x size and rounded to 8 bits."""
    down = BicubicDownsample(G.resolution // size)
    out = []
    for k in range(count):
        rng = torch.Generator().manual_seed(seed_base + 100 * size + k)
        ws = G.map(torch.randn(1, G.z_dim, generator=rng))[:, None].expand(-1, G.num_ws, -1)
        noise = [torch.randn(s, generator=rng) for s in G.noise_shapes(1)]
        image = ((G.synthesize(ws, noise) + 1) / 2).clamp(0, 1)
        out.append((down(image)[0].clamp(0, 1) * 255).round() / 255)
    return out


def crop_targets() -> dict[str, torch.Tensor]:
    crops = {}
    for path in sorted((ROOT / "examples" / "crops").iterdir()):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            array = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255
            crops[path.name] = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return crops


def optimised_layers(config: SearchConfig, robust: RobustOptions | None, num_layers: int) -> list[int]:
    zeroed = config.zeroed_noise_layers(num_layers)
    every = config.mode == "robust" and (robust or RobustOptions()).train_all_noise
    return [i for i in range(num_layers) if i not in zeroed and (every or i < config.trainable_noise_layers)]


def run_searches(G, targets: list[tuple[str, torch.Tensor]], seeds, config: SearchConfig,
                 robust: RobustOptions | None) -> list[dict]:
    """Every (target, seed) in one pool (results do not depend on batch-mates); one record each."""
    pool = SearchPool(G, config=config, robust=robust)
    for name, target in targets:
        for seed in seeds:
            pool.add((name, seed), target, seed)
    layers = optimised_layers(config, robust, len(G.noise_shapes(1)))
    records = []
    start = time.perf_counter()
    while len(pool):
        pool.step()
        for (name, seed), r in pool.pop_finished():
            l2 = [h.l2 for h in r.history]
            records.append({
                "target": name, "seed": seed,
                "first_1e-3": next((i for i, v in enumerate(l2) if v <= 1e-3), None),
                "first_2e-3": next((i for i, v in enumerate(l2) if v <= 2e-3), None),
                "best_l2": r.best_l2, "best_step": r.best_step,
                "geocross": float(geocross_loss(r.ws[None].double())[0]),
                "noise_autocorr": statistics.fmean(abs(lag1_autocorrelation(r.noise[i])) for i in layers),
                "noise_autocorr_coarse5": statistics.fmean(abs(lag1_autocorrelation(r.noise[i]))
                                                           for i in range(5) if r.noise[i].abs().sum() > 0),
                "w_distance": w_distance(r.ws, G.latent_stats),
            })
    seconds = time.perf_counter() - start
    for rec in records:
        rec["batch_seconds"] = seconds
    return records


def summarise(records: list[dict]) -> dict:
    n = len(records)
    first = [r["first_1e-3"] for r in records if r["first_1e-3"] is not None]
    return {
        "searches": n,
        "reach_1e-3": sum(r["first_1e-3"] is not None for r in records) / n,
        "reach_2e-3": sum(r["first_2e-3"] is not None for r in records) / n,
        "median_step_1e-3": statistics.median(first) if first else None,
        "median_best_l2": statistics.median(r["best_l2"] for r in records),
        "geocross": statistics.fmean(r["geocross"] for r in records),
        "noise_autocorr": statistics.fmean(r["noise_autocorr"] for r in records),
        "noise_autocorr_coarse5": statistics.fmean(r["noise_autocorr_coarse5"] for r in records),
        "w_distance": statistics.fmean(r["w_distance"] for r in records),
    }


def seconds_per_step(G, target: torch.Tensor, rounds: int) -> dict[str, float]:
    """Batch-1 step time of each mode, alternating steps so that load from elsewhere hits both alike."""
    pools = {mode: SearchPool(G, config=dataclasses.replace(PULSE, mode=mode, steps=10_000))
             for mode in ("pulse", "robust")}
    for pool in pools.values():
        pool.add(0, target, 0)
        pool.step()  # warm-up
    times: dict[str, list[float]] = {mode: [] for mode in pools}
    for _ in range(rounds):
        for mode, pool in pools.items():
            start = time.perf_counter()
            pool.step()
            times[mode].append(time.perf_counter() - start)
    return {mode: min(t) for mode, t in times.items()} | {f"{mode}_median": statistics.median(t)
                                                           for mode, t in times.items()}


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: dict[str, dict], first_col: str) -> str:
    lines = [f"| {first_col} | searches | reach 1e-3 | reach 2e-3 | median step to 1e-3 | median best L2 | "
             "GEOCROSS | noise lag-1 autocorr (optimised / 5 coarsest) | W distance |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in rows.items():
        lines.append(f"| {name} | {s['searches']} | {s['reach_1e-3']:.0%} | {s['reach_2e-3']:.0%} | "
                     f"{fmt(s['median_step_1e-3'], 'g')} | {s['median_best_l2']:.2e} | {s['geocross']:.3f} | "
                     f"{s['noise_autocorr']:.3f} / {s['noise_autocorr_coarse5']:.3f} | {s['w_distance']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("all", "main", "ablation", "timing"), default="all",
                        help="what to run; results of other parts already in --out are kept")
    parser.add_argument("--quick", action="store_true", help="a third of the targets, one seed")
    parser.add_argument("--variants", default=",".join(ABLATION), help="ablation variants, comma-separated")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "search_results.json")
    parser.add_argument("--cache", type=Path, default=None, help="latent statistics cache (default: the user cache)")
    parser.add_argument("--steps", type=int, default=STEPS, help="steps per search (smoke runs only)")
    args = parser.parse_args()
    global PULSE, ROBUST
    if args.steps != STEPS:
        PULSE, ROBUST = (dataclasses.replace(c, steps=args.steps) for c in (PULSE, ROBUST))
        for name, (config, robust, what) in ABLATION.items():
            ABLATION[name] = (dataclasses.replace(config, steps=args.steps), robust, what)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    seeds = SEARCH_SEEDS[:1] if args.quick else SEARCH_SEEDS
    scale = 3 if args.quick else 1
    G1, G2 = sg1_generator(), sg2_generator(args.cache)
    sets = {  # name -> (generator, [(target name, target)])
        "sg1-16": (G1, [(f"sg1-16-{k}", t) for k, t in
                        enumerate(generated_targets(G1, TARGET_SEED_BASE["sg1"], 8 // scale, 16))]),
        "sg1-32": (G1, [(f"sg1-32-{k}", t) for k, t in
                        enumerate(generated_targets(G1, TARGET_SEED_BASE["sg1"], 2 // scale or 1, 32))]),
        "sg2-16": (G2, [(f"sg2-16-{k}", t) for k, t in
                        enumerate(generated_targets(G2, TARGET_SEED_BASE["sg2"], 10 // scale, 16))]),
        "sg2-32": (G2, [(f"sg2-32-{k}", t) for k, t in
                        enumerate(generated_targets(G2, TARGET_SEED_BASE["sg2"], 4 // scale or 1, 32))]),
        "crops (sg2)": (G2, list(crop_targets().items())),
    }
    results: dict = {"config": {"eps": EPS, "steps": STEPS, "seeds": list(seeds), "quick": args.quick,
                                "robust_options": dataclasses.asdict(RobustOptions()),
                                "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
                                "threads": 1}}
    if args.out.is_file():
        try:
            previous = json.loads(args.out.read_text())
            results.update({k: v for k, v in previous.items() if k != "config"})
        except ValueError:
            pass

    if args.part in ("all", "main", "timing"):
        timing = {"sg1-256px": seconds_per_step(G1, sets["sg1-16"][1][0][1], 15),
                  "sg2-64px": seconds_per_step(G2, sets["sg2-16"][1][0][1], 15)}
        results["seconds_per_step"] = timing
        for name, t in timing.items():
            print(f"{name}: pulse {t['pulse']:.4f} s/step, robust {t['robust']:.4f} s/step (min of 15; "
                  f"medians {t['pulse_median']:.4f} / {t['robust_median']:.4f}); "
                  f"robust/pulse {t['robust'] / t['pulse']:.3f}", flush=True)

    if args.part in ("all", "main"):
        main_rows: dict[str, dict] = {}
        records: dict[str, list] = {}
        for mode, config in (("pulse", PULSE), ("robust", ROBUST)):
            generated: list[dict] = []
            for set_name, (G, targets) in sets.items():
                recs = run_searches(G, targets, seeds, config, None)
                records[f"{mode} {set_name}"] = recs
                main_rows[f"{mode} {set_name}"] = summarise(recs)
                if not set_name.startswith("crops"):
                    generated += recs
                print(f"{mode} {set_name}: {main_rows[f'{mode} {set_name}']}", flush=True)
            main_rows[f"{mode} all generated"] = summarise(generated)
        results["main"] = main_rows
        results["main_records"] = records
        print(table(main_rows, "mode / targets"))

    if args.part in ("all", "ablation"):
        G, targets = sets["sg1-16"]
        abl_seeds = seeds[:1]
        rows = dict(results.get("ablation", {}).get("rows", {}))
        for name in args.variants.split(","):
            config, robust, _ = ABLATION[name]
            main_records = results.get("main_records", {}).get(f"{name} sg1-16")
            if main_records and robust is None:  # the same searches as the main table's: reuse them
                rows[name] = summarise([r for r in main_records if r["seed"] in abl_seeds])
            else:
                rows[name] = summarise(run_searches(G, targets, abl_seeds, config, robust))
            print(f"{name}: {rows[name]}", flush=True)
        rows = {n: rows[n] for n in ABLATION if n in rows}
        results["ablation"] = {"targets": "sg1-16", "seeds": list(abl_seeds),
                               "variants": {n: ABLATION[n][2] for n in rows}, "rows": rows}
        print(table(rows, "variant (sg1 16x16)"))

    args.out.write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
