#!/usr/bin/env python
"""Threads, OpenMP's wait policy and searches side by side, on an idle and on a loaded machine (`make bench-threads`).

    python bench/threads.py [--quick] [--models dcgan,demo,full] [--loads idle,loaded] [--out FILE]

For each model and load, every configuration runs in a fresh process (OpenMP reads its settings when torch
loads it):

- `1`: `--threads 1` (what `OMP_NUM_THREADS=1` gave);
- `2-spin`: `--threads 2` with GNU OpenMP's default wait (spin 300,000 times, then sleep; given as
  GOMP_SPINCOUNT=300000, its documented default, so that pulse leaves it): what a run did before `--threads`;
- `2-short-spin`: `--threads 2`, GOMP_SPINCOUNT=10000;
- `2-passive`: `--threads 2`, OMP_WAIT_POLICY=passive (what pulse sets for `--threads N` unless the user chose);
- `auto`: `--threads auto`, the default (with OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=10000, which pulse sets for
  it unless the user chose).

Models: the small trained DCGAN (`dcgan-digiface-64`, 64 px; `make bench-threads` downloads it) and the
untrained demo StyleGAN (128 px, made here), each a whole `pulse upsample` of a folder of `--crops` random
crops (8x8 and 16x16) timed by the run's own `seconds` (the search of the folder, writes included; the
command's wall time, with Python, torch and the model loading, is given too); and one full-size 1024 px
StyleGAN v1 step (fast path, random weights of realistic scale as bench/bench.py builds them, needs
../shared/fixtures), the median of `--full-steps` steps after one warm-up step.

Loads: `idle` (whatever else runs on the machine: see `foreign`), and `loaded`: two CPU-bound processes
(`while True: pass`) that this script starts in sessions of their own, as other users' programs are, and
stops. `foreign` is the CPU (in cores, averaged over the measurement) used by processes other than the
measured one and the two competitors: above ~0.2 the idle numbers are not idle. A configuration that takes
`--cap` times longer than `1` is stopped and shown as `>` its time so far: that is the cliff.

Results: a table on stdout and `bench/threads_results.json`; the README's "How long it takes" quotes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_name  # bench/machine.py (the script's own folder is on sys.path)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DCGAN = ROOT / "weights" / "dcgan-digiface-64.safetensors"
FIXTURES = Path(os.environ.get("PULSE_FIXTURES", ROOT.parent / "shared" / "fixtures"))
OPENMP_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# name: (--threads, the OpenMP environment)
CONFIGS: dict[str, tuple[str, dict[str, str]]] = {
    "1": ("1", {}),
    "2-spin": ("2", {"GOMP_SPINCOUNT": "300000"}),
    "2-short-spin": ("2", {"GOMP_SPINCOUNT": "10000"}),
    "2-passive": ("2", {"OMP_WAIT_POLICY": "passive"}),
    "auto": ("auto", {}),
}


# -- the measured processes ------------------------------------------------------------------------------------


def _clean_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_VARIABLES and k != "PULSE_CHECKPOINT"}
    env.update(PULSE_HOME=str(home), PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    env.update(extra)
    return env


def _upsample_command(crops: Path, out: Path, checkpoint: Path, steps: int, threads: str) -> list[str]:
    return [sys.executable, "-m", "pulse_cli", "upsample", str(crops), str(out), "--checkpoint", str(checkpoint),
            "--device", "cpu", "--steps", str(steps), "--threads", threads, "--json", "--overwrite"]


def _full_command(threads: str, steps: int) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child-full", threads, "--full-steps", str(steps)]


def child_full(threads: str, steps: int) -> None:
    """One full-size search's step times, through the engine as `pulse upsample` would run it."""
    sys.path[:0] = [str(ROOT), str(HERE)]
    if threads == "auto":
        from pulse_cli.threads import prefer_wait_policy

        prefer_wait_policy("auto")  # as `pulse upsample` does before torch loads
    import torch

    import bench as B  # bench/bench.py: the full-size generator without weights
    from pulse_cli.device import configure_cpu_allocator
    from pulse_cli.engine import Engine
    from pulse_cli.search.pulse import SearchConfig

    configure_cpu_allocator()
    G = B.build_stylegan1().use_fast_path(True)
    engine = Engine(G, device="cpu", config=SearchConfig(steps=steps + 1),
                    threads=int(threads) if threads != "auto" else "auto")
    target = torch.rand(3, B.TARGET_SIZE, B.TARGET_SIZE, generator=torch.Generator().manual_seed(1))
    stamps = [time.perf_counter()]
    used = []

    def on_step(_searches) -> None:
        stamps.append(time.perf_counter())
        used.append(torch.get_num_threads())

    for done in engine.searches([(0, target, 1)], on_step=on_step):
        assert done.result is not None, done.error
    seconds = [b - a for a, b in zip(stamps[1:-1], stamps[2:], strict=True)]  # after the warm-up step
    print(json.dumps({"seconds": statistics.median(seconds), "all": seconds, "threads_used": used[-1]}))


# -- measuring -------------------------------------------------------------------------------------------------


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _cpu_of(pids: list[int]) -> float:
    hz = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / hz
        except OSError:
            pass
    return total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(command: list[str], env: dict[str, str], cap: float | None, competitors: list[int]) -> dict:
    """Run `command`; its JSON answer (the last line of stdout), wall time and the foreign CPU meanwhile.
    Stopped after `cap` seconds (then `capped`)."""
    busy, ours, theirs = _machine_busy(), _children_cpu(), _cpu_of(competitors)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=cap)
        capped = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)  # the run and its workers
        stdout, stderr = process.communicate()
        capped = True
    except BaseException:  # interrupted: nothing of the bench outlives it
        os.killpg(process.pid, 9)
        raise
    wall = time.perf_counter() - started
    used = _children_cpu() - ours
    foreign = (_machine_busy() - busy - used - (_cpu_of(competitors) - theirs)) / wall
    row = {"wall": round(wall, 2), "capped": capped, "foreign": round(max(0.0, foreign), 2),
           "load_before": round(load, 2), "cpu": round(used / wall, 2)}
    if not capped:
        if process.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr}")
        answer = json.loads(stdout.strip().splitlines()[-1])
        row.update({k: answer[k] for k in ("seconds", "all", "threads_used") if k in answer})
    if "searching side by side" in stderr:  # what auto did (pulse upsample's note)
        row["side_by_side"] = True
    return row


def _write_crops(folder: Path, count: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(size)
    for k in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{k:02d}.png")


class Competitors:
    """Two CPU-bound processes in sessions of their own (as other users' programs are)."""

    def __init__(self, count: int = 2):
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
                          for _ in range(count)]
        time.sleep(1.0)  # let them take their share

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        for p in self.processes:
            p.kill()
            p.wait()


# -- the report ------------------------------------------------------------------------------------------------


def _seconds(row: dict) -> float:
    return row["wall"] if row["capped"] else row["seconds"]


def _best(rows: list[dict]) -> dict:
    """The fastest of a configuration's repeats (other processes only ever slow a run down)."""
    return min(rows, key=lambda r: (r["capped"], _seconds(r)))


def _cell(runs: list[dict] | None) -> str:
    if not runs:
        return "-"
    row = _best(runs)
    text = f"> {row['wall']:.1f}" if row["capped"] else f"{row['seconds']:.2f}"
    if row.get("side_by_side"):
        text += " [2p]"
    elif row.get("threads_used") is not None and row.get("threads_used") != 1:
        text += f" [{row['threads_used']}t]"
    return text + (f" (f {row['foreign']:.1f})" if row["foreign"] >= 0.2 else "")


def report(results: dict) -> str:
    lines = [f"{results['cpu']}, {results['cores']} usable cores, torch {results['torch']} ({results['openmp']})", ""]
    names = list(CONFIGS)
    lines.append("| model | load | " + " | ".join(names) + " | auto / best other | 1 / auto |")
    lines.append("| --- | --- | " + " | ".join("---" for _ in names) + " | --- | --- |")
    for key, runs in results["rows"].items():
        model, load = key.split("/")
        cells = [_cell(runs.get(n)) for n in names]
        rows = {n: _best(r) for n, r in runs.items() if r}
        others = [_seconds(r) for n, r in rows.items() if n != "auto" and not r["capped"]]
        auto = rows.get("auto")
        vs_best = f"{_seconds(auto) / min(others):.2f}" if auto and others and not auto["capped"] else "-"
        one = rows.get("1")
        vs_one = f"{_seconds(one) / _seconds(auto):.2f}" if auto and one and not auto["capped"] \
            and not one["capped"] else "-"
        lines.append(f"| {model} | {load} | " + " | ".join(cells) + f" | {vs_best} | {vs_one} |")
    lines += ["", "Seconds: small models, the run's search of the folder; full, one step (median); the fastest of "
              "the repeats. Columns: --threads 1; 2 threads with GNU OpenMP's default spinning, a short spin "
              "(GOMP_SPINCOUNT=10000) and passive waiting; auto ([2p]: it searched side by side in 2 processes, [2t]: "
              "with 2 threads). `> T`: stopped at T s (the cliff). `(f X)`: X cores used by other processes meanwhile "
              "(not idle)."]
    return "\n".join(lines)


def _machine() -> tuple[str, str, str]:
    probe = ("import torch, re; info = torch.__config__.parallel_info(); "
             "print(torch.__version__); print('GNU OpenMP' if 'OpenMP' in info and 'libgomp' in "
             "open('/proc/self/maps').read() else ('Intel OpenMP' if 'libiomp' in open('/proc/self/maps').read() "
             "else 'OpenMP runtime unknown'))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split("\n")
    return cpu_name(), out[0], out[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="dcgan,demo,full")
    parser.add_argument("--loads", default="idle,loaded")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="names, comma-separated")
    parser.add_argument("--crops", type=int, default=8)
    parser.add_argument("--dcgan-steps", type=int, default=100)
    parser.add_argument("--demo-steps", type=int, default=30)
    parser.add_argument("--full-steps", type=int, default=3)
    parser.add_argument("--cap", type=float, default=3.0, help="stop a configuration after this many times the "
                        "1-thread time (at least 30 s)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of every configuration, interleaved; the "
                        "fastest counts (on a machine others use)")
    parser.add_argument("--quick", action="store_true", help="20 DCGAN steps, 10 demo steps, 2 full steps")
    parser.add_argument("--out", type=Path, default=HERE / "threads_results.json")
    parser.add_argument("--child-full", metavar="THREADS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_full:
        child_full(args.child_full, args.full_steps)
        return 0
    if args.quick:
        args.dcgan_steps, args.demo_steps, args.full_steps = 20, 10, 2
    configs = [c.strip() for c in args.configs.split(",")]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; known: {list(CONFIGS)}")
    configs.sort(key=lambda c: c != "1")  # first: the others' cap is relative to it
    models = [m.strip() for m in args.models.split(",")]
    if "dcgan" in models and not DCGAN.is_file():
        print(f"skipping dcgan: no {DCGAN} (make bench-threads downloads it)", file=sys.stderr)
        models.remove("dcgan")
    if "full" in models and not (FIXTURES / "pulse_ffhq1024_state_dict_manifest.json").is_file():
        print(f"skipping full: no fixtures at {FIXTURES} (set PULSE_FIXTURES)", file=sys.stderr)
        models.remove("full")

    from pulse_cli.threads import foreign_load, usable_cores

    busy = foreign_load(window=1.0)
    if busy is not None and busy >= 0.2:
        print(f"warning: other processes use {busy:.1f} cores now: the idle numbers will not be idle (see the "
              f"(f X) marks); run it on a quiet machine", file=sys.stderr)
    cpu, torch_version, openmp = _machine()
    results = {"cpu": cpu, "cores": usable_cores(), "torch": torch_version, "openmp": openmp, "busy_at_start": busy,
               "platform": platform.platform(), "crops": args.crops,
               "steps": {"dcgan": args.dcgan_steps, "demo": args.demo_steps, "full": args.full_steps}, "rows": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pulse-threads-") as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "home"
        checkpoints = {"dcgan": DCGAN, "demo": tmp / "demo" / "synthesis.pt"}
        if "demo" in models:
            subprocess.run([sys.executable, "-m", "pulse_cli", "demo-generator", str(tmp / "demo")], check=True,
                           env=_clean_env(home, {}), capture_output=True)
        crops = {"dcgan": tmp / "crops8", "demo": tmp / "crops16"}
        _write_crops(crops["dcgan"], args.crops, 8)
        _write_crops(crops["demo"], args.crops, 16)
        for load in [x.strip() for x in args.loads.split(",")]:
            competitors = Competitors() if load == "loaded" else None
            try:
                for _ in range(args.repeat):
                    for model in models:
                        runs = results["rows"].setdefault(f"{model}/{load}", {})
                        for name in configs:
                            threads, extra = CONFIGS[name]
                            if model == "full":
                                command = _full_command(threads, args.full_steps)
                            else:
                                out = tmp / f"out-{model}-{load}-{name}"
                                steps = args.dcgan_steps if model == "dcgan" else args.demo_steps
                                command = _upsample_command(crops[model], out, checkpoints[model], steps, threads)
                            base = runs.get("1", [None])[-1]
                            cap = max(30.0, args.cap * base["wall"]) if base and name != "1" else None
                            row = measure(command, _clean_env(home, extra), cap,
                                          competitors.pids if competitors else [])
                            runs.setdefault(name, []).append(row)
                            print(f"{model:5} {load:6} {name:12} {_cell([row]):>22}  wall {row['wall']:.1f} s, "
                                  f"cpu {row['cpu']:.2f}, load {row['load_before']:.1f}", file=sys.stderr, flush=True)
            finally:
                if competitors is not None:
                    competitors.stop()
    results["bench_seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(report(results))
    print(f"\n{results['bench_seconds']:.0f} s in all; written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
