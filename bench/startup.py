"""How long `pulse` takes to refuse a bad argument, against `pulse --version` (goal: within 2x).

Each command runs as a fresh process (`python -m pulse_cli ...`), `--repeat` times, alternating with the
others so machine noise spreads evenly; the median wall time counts, and the median CPU time (user and
system) of the process, which another process's load changes less. An argument error should be found
before torch is imported (seconds). What is left is Python, Typer and rich, and Typer's reading of the
values (on Typer 0.29 through pydantic, which `--version`, an eager option, never reaches). The
machine's load average is printed before and after: on a busy machine the numbers mean little.

    python bench/startup.py [--repeat 15] [--out bench/results_startup.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

COMMANDS = {
    "pulse --version": ["--version"],
    "pulse --help": ["--help"],
    "weights download <unknown name>": ["weights", "download", "no-such-model"],
    "weights download NAME --sha256 <bad>": ["weights", "download", "stylegan-ffhq-1024", "--sha256", "bad"],
    "render <missing latents>": ["render", "missing.latents.safetensors", "out.png"],
    "upsample IN OUT --loss <bad>": ["upsample", "crops", "out", "--loss", "3*L3"],
    "upsample IN OUT --device <bad>": ["upsample", "crops", "out", "--device", "gpu"],
    "upsample IN OUT --steps 0": ["upsample", "crops", "out", "--steps", "0"],
    "upsample IN OUT --synthesis <bad>": ["upsample", "crops", "out", "--synthesis", "fst"],
    "upsample IN OUT --ray local --device <bad>": ["upsample", "crops", "out", "--ray", "local", "--device", "gpu"],
    "render LATENTS OUT --device <bad>": ["render", "crops/a.png", "out.png", "--device", "gpu"],
    "report <not an output folder>": ["report", "crops"],
    "align IN OUT --size 0": ["align", "crops", "aligned", "--size", "0"],
    "upsample IN OUT --steps abc": ["upsample", "crops", "out", "--steps", "abc"],
    "upsample IN OUT --steps 1.5": ["upsample", "crops", "out", "--steps", "1.5"],
    "upsample IN OUT --eps nan": ["upsample", "crops", "out", "--eps", "nan"],
    "import torch (for scale)": None,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("bench/results_startup.json"))
    args = parser.parse_args()
    load_before = _load()
    wall: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpu: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "crops").mkdir()
        Image.new("RGB", (16, 16)).save(Path(folder) / "crops" / "a.png")
        for _ in range(args.repeat):
            for name, argv in COMMANDS.items():
                command = [sys.executable, "-c", "import torch"] if argv is None else [
                    sys.executable, "-m", "pulse_cli", *argv]
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.perf_counter()
                subprocess.run(command, cwd=folder, capture_output=True, check=False)
                wall[name].append(time.perf_counter() - started)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append(after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime)
    rows = {name: {**_row("wall", wall, name), **_row("cpu", cpu, name)} for name in COMMANDS}
    load = {"before": load_before, "after": _load()}
    print(f"{'':<46} {'wall':>9}  {'x':>5}  {'CPU':>9}  {'x':>5}")
    for name, row in rows.items():
        print(f"{name:<46} {row['wall_s']:7.3f} s  {row['wall_vs_version']:5.2f}  {row['cpu_s']:7.3f} s  "
              f"{row['cpu_vs_version']:5.2f}")
    errors = [row for name, row in rows.items() if name not in ("pulse --version", "pulse --help")
              and not name.startswith("import torch")]
    print(f"argument errors: at most {max(r['wall_vs_version'] for r in errors):.2f}x of pulse --version in wall "
          f"time, {max(r['cpu_vs_version'] for r in errors):.2f}x in CPU time (goal: 2x); load average (1, 5, "
          f"15 min) before {load['before']}, after {load['after']}")
    import typer

    args.out.write_text(json.dumps({"repeat": args.repeat, "python": sys.version.split()[0],
                                    "typer": typer.__version__, "load_average": load, "rows": rows},
                                   indent=2) + "\n")


def _row(kind: str, times: dict[str, list[float]], name: str) -> dict[str, float]:
    """The median of one command's times and its ratio to `pulse --version`'s."""
    median, version = statistics.median(times[name]), statistics.median(times["pulse --version"])
    return {f"{kind}_s": round(median, 3), f"{kind}_vs_version": round(median / version, 2)}


def _load() -> list[float] | None:
    """The load average over 1, 5 and 15 minutes (None where the OS does not say)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


if __name__ == "__main__":
    main()
