"""Images per hour with 1 and 2 processes (one torch thread each), and on Ray: how a run scales past one process.

Each configuration is a whole `pulse upsample` run on the same crops with the demo generator (128x128), timed
from launch to exit, so process start, model load and the writes count as they do in real runs:

- 1 process;
- 2 processes with `--shard 1/2` and `--shard 2/2` (a stable hash splits the inputs: not always evenly);
- 2 processes sharing OUT without --shard (claims hand out inputs one at a time: always balanced);
- `--ray local --workers 2` (a local Ray instance started by the run: its start-up counts).

Scaling = images/hour of 2 processes / of 1 (goal >= 1.8); Ray's overhead = its time / 2 plain processes'
time - 1 (goal <= 10%). Ray's fixed cost (starting the local instance and its worker actors, shutting down)
is measured apart, as a Ray run minus a plain run on 2 crops x 1 step, and the overhead is also given without
it (on a cluster the instance is up already, and a long run pays the actors' start once).

The default 256 crops are named 000.png..255.png; the stable hash of --shard splits them 126/130 (printed):
with few files a hash split is uneven (32 names: 10/22), with many it evens out.

    python bench/scale.py [--crops 256] [--steps 50] [--repeat 1] [--out bench/results_scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PULSE_CHECKPOINT"}
    env.update(PULSE_HOME=str(home), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return env


def _command(src: Path, out: Path, checkpoint: Path, steps: int, *extra: str) -> list[str]:
    # one process means one: not auto's searches side by side (Ray workers take --threads-per-worker)
    threads = [] if "--ray" in extra else ["--threads", "1"]
    return [sys.executable, "-m", "pulse_cli", "upsample", str(src), str(out), "--checkpoint", str(checkpoint),
            "--device", "cpu", "--batch-size", "1", "--steps", str(steps), "--quiet", *threads, *extra]


def _timed(commands: list[list[str]], env: dict[str, str]) -> float:
    started = time.perf_counter()
    processes = [subprocess.Popen(c, env=env) for c in commands]
    codes = [p.wait() for p in processes]
    seconds = time.perf_counter() - started
    if any(codes):
        raise SystemExit(f"a run failed: exit codes {codes}")
    return seconds


def _count(out: Path) -> int:
    return sum(1 for line in (out / "results.jsonl").read_text().splitlines()
               if json.loads(line).get("status") in ("ok", "not_converged"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each configuration, interleaved; "
                        "the fastest counts (a shared VM's noise only slows runs down)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results_scale.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pulse-scale-") as tmp_name:
        tmp = Path(tmp_name)
        env = _env(tmp / "home")
        subprocess.run([sys.executable, "-m", "pulse_cli", "demo-generator", str(tmp / "ckpt")], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        checkpoint = tmp / "ckpt" / "synthesis.pt"
        src = tmp / "in"
        src.mkdir()
        for k in range(args.crops):
            pixels = np.random.default_rng(k).integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(src / f"{k:03d}.png")
        # once untimed: the gaussian fit is computed and cached, files are in the page cache
        subprocess.run(_command(src, tmp / "warm", checkpoint, 1), env=env, check=True)

        runs = {
            "1 process": [_command(src, tmp / "one", checkpoint, args.steps)],
            "2 processes, --shard": [_command(src, tmp / "shard", checkpoint, args.steps, "--shard", f"{k}/2")
                                     for k in (1, 2)],
            "2 processes sharing OUT": [_command(src, tmp / "shared", checkpoint, args.steps) for _ in range(2)],
            "ray local, 2 workers": [_command(src, tmp / "ray", checkpoint, args.steps, "--ray", "local",
                                              "--workers", "2", "--threads-per-worker", "1")],
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _attempt in range(args.repeat):
            for name, commands in runs.items():
                out = Path(commands[0][5])
                shutil.rmtree(out, ignore_errors=True)
                seconds = _timed(commands, env)
                done = _count(out)
                assert done == args.crops, f"{name}: {done} of {args.crops} inputs recorded"
                times[name].append(round(seconds, 2))
                print(f"{name:26s} {seconds:7.1f} s", flush=True)
        results = {}
        for name, seconds in times.items():
            best = min(seconds)
            results[name] = {"seconds": best, "all_seconds": seconds,
                             "images_per_hour": round(args.crops / best * 3600)}
            print(f"{name:26s} {best:7.1f} s  {results[name]['images_per_hour']:7d} images/hour (best)")
        # Ray's fixed cost: a Ray run and a plain run of 2 crops x 1 step, the best of 3 each
        small = tmp / "small"
        small.mkdir()
        for name in sorted(src.iterdir())[:2]:
            shutil.copy(name, small / name.name)
        fixed = {}
        for name, extra in (("plain", ()), ("ray", ("--ray", "local", "--workers", "2", "--threads-per-worker", "1"))):
            seconds = []
            for k in range(3):
                seconds.append(_timed([_command(small, tmp / f"small-{name}-{k}", checkpoint, 1, *extra)], env))
            fixed[name] = min(seconds)
        ray_start = fixed["ray"] - fixed["plain"]
        print(f"ray fixed cost: {ray_start:.1f} s (2 crops x 1 step: ray {fixed['ray']:.1f} s, "
              f"plain {fixed['plain']:.1f} s)", flush=True)

    one = results["1 process"]["images_per_hour"]
    from pulse_cli.run.plan import in_shard

    first = sum(in_shard(f"{k:03d}.png", (1, 2)) for k in range(args.crops))
    print(f"--shard split the {args.crops} crops {first}/{args.crops - first}")
    summary = {
        "shard_split": [first, args.crops - first],
        "scaling_2_processes_shard": round(results["2 processes, --shard"]["images_per_hour"] / one, 2),
        "scaling_2_processes_shared": round(results["2 processes sharing OUT"]["images_per_hour"] / one, 2),
        "scaling_ray_2_workers": round(results["ray local, 2 workers"]["images_per_hour"] / one, 2),
        "ray_overhead_vs_shared": round(results["ray local, 2 workers"]["seconds"]
                                        / results["2 processes sharing OUT"]["seconds"] - 1, 3),
        "ray_overhead_vs_shard": round(results["ray local, 2 workers"]["seconds"]
                                       / results["2 processes, --shard"]["seconds"] - 1, 3),
        # the same without Ray's fixed cost (the local instance and its actors started, then stopped)
        "ray_fixed_seconds": round(ray_start, 2),
        "ray_overhead_vs_shared_without_start": round((results["ray local, 2 workers"]["seconds"] - ray_start)
                                                      / results["2 processes sharing OUT"]["seconds"] - 1, 3),
    }
    for key, value in summary.items():
        print(f"{key:28s} {value}")
    report = {"crops": args.crops, "steps": args.steps, "cpu_cores": os.cpu_count(), "threads_per_process": 1,
              "generator": "demo (128x128)", "runs": results, **summary,
              "goals": {"scaling": ">= 1.8", "ray_overhead": "<= 0.10"}}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
