"""How many threads a search uses, and how many searches run side by side (`--threads N|auto`).

Nothing here imports torch at module level: a bad value is refused before torch loads, and the OpenMP
settings are made while they can still take effect (OpenMP reads its environment once, when torch loads it).

What `auto` does, and why (measured with bench/threads.py; the table is in the README's "How long it takes"):

- On a CPU, a torch thread that reaches the end of a parallel operation before the others spins (GNU OpenMP's
  default), and when another process holds a core, the thread it waits for is not running: a small generator,
  whose step is thousands of small operations, then runs up to 10x slower with two threads than with one.
  `OMP_WAIT_POLICY=passive` (waiting threads sleep at once) removes most of that. Even so, two threads on a busy
  machine are slower than one: they wait for each other's turn on the cores.
- So `auto` uses only the cores other processes leave free, measured (`free_cores`) as a search starts:
- small generators (at most `SMALL_RESOLUTION` px): one thread per search (a second thread gains little on
  such small operations, and stalls on a busy machine); a folder's inputs are searched side by side, in this
  process and up to (cores - 1) worker processes (`pulse_cli.workers`), each started once the work left pays
  for it and a core is free for it;
- full-size generators: one search at a time, with as many threads as cores are free as it starts (all of them
  on an idle machine, where two make a step ~1.7x faster than one; one on a busy one, where one is as fast).
  A search keeps its count to the end, and every result records it (another count can round differently).
- How waiting threads wait (`prefer_wait_policy`, unless the user chose): with `auto`, a short spin and then
  sleep, because auto runs two threads only where the cores are free, and there a full-size step with passive
  waiting paid a wake-up at each of its ~900 barriers (2-9% slower than spinning on the 2-vCPU EPYC, by the
  day); with a fixed count, which runs whatever the load, passive waiting at once (a short spin cost up to 1.5x
  passive's with two threads forced on a busy machine).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from typing import Literal

AUTO = "auto"
Threads = int | Literal["auto"]
# Generators up to this resolution count as small (measured: 64 px DCGAN, 128 px StyleGAN; 1024 px is large).
SMALL_RESOLUTION = 256
MAX_THREADS = 1024
PROBE_SECONDS = 0.1  # how long the load of the machine is measured for (this process sleeps meanwhile)
# The OpenMP settings that decide how waiting threads wait (GNU OpenMP reads the first two, Intel's and LLVM's
# the first and last): one set by the user is left as it is.
WAIT_POLICY_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# `auto`'s spin before a waiting thread sleeps (GNU OpenMP): ~0.1 ms by libgomp's own estimate of 100,000 spins a
# millisecond, where its default is 300,000 and passive waiting 0.
SHORT_SPIN = 10000


def parse_threads(value: object) -> Threads:
    """`auto` or a whole number of threads (1 to MAX_THREADS); ValueError with a one-line reason."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        number = int(text) if text.isascii() and text.isdigit() else 0
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        number = 0
    if not 1 <= number <= MAX_THREADS:
        raise ValueError(f"threads {value!r}: use a whole number from 1 to {MAX_THREADS}, or 'auto'")
    return number


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, cpusets), capped by a container's CPU
    quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`), which torch's own default ignores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs the container's quota allows (None: no quota, or none readable)."""
    candidates = [(f"{root}/cpu.max", None), (f"{root}/cpu/cpu.cfs_quota_us", f"{root}/cpu/cpu.cfs_period_us")]
    for path, period_path in candidates:
        try:
            with open(path) as file:
                fields = file.read().split()
            if period_path is not None:
                with open(period_path) as file:
                    fields.append(file.read().strip())
        except OSError:
            continue
        if len(fields) < 2 or fields[0] in ("max", "-1"):
            return None
        try:
            quota, period = float(fields[0]), float(fields[1])
        except ValueError:
            return None
        return quota / period if quota > 0 and period > 0 else None
    return None


def foreign_load(window: float = PROBE_SECONDS, ours: Sequence[int] = ()) -> float | None:
    """How many of this process's cores other processes keep busy: measured over `window` seconds, during which
    this process sleeps, on the CPUs it may run on (Linux's /proc/stat; steal time counts as busy), less what
    the processes `ours` (its workers) used meanwhile. None where /proc/stat cannot be read."""
    try:
        cpus = {f"cpu{n}" for n in os.sched_getaffinity(0)}
    except (AttributeError, OSError):
        cpus = None
    before, mine = _cpu_ticks(cpus), _ticks_of(ours)
    if before is None:
        return None
    time.sleep(window)
    after = _cpu_ticks(cpus)
    if after is None:
        return None
    busy = sum(after[cpu][0] - before[cpu][0] for cpu in after if cpu in before)
    total = sum(after[cpu][1] - before[cpu][1] for cpu in after if cpu in before)
    if total <= 0:
        return None
    cores = len(after)
    return max(0.0, (busy - (_ticks_of(ours) - mine)) * cores / total)


def _cpu_ticks(cpus: set[str] | None) -> dict[str, tuple[int, int]] | None:
    """Per CPU (those in `cpus`, else all): (busy ticks, all ticks)."""
    try:
        with open("/proc/stat") as file:
            lines = file.read().splitlines()
    except OSError:
        return None
    ticks = {}
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu" or (cpus is not None and name not in cpus):
            continue
        fields = [int(x) for x in rest.split()[:8]]  # user nice system idle iowait irq softirq steal
        if len(fields) == 8:
            ticks[name] = (sum(fields) - fields[3] - fields[4], sum(fields))
    return ticks or None


def _ticks_of(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def free_cores(cores: int, ours: Sequence[int] = ()) -> int:
    """How many of `cores` are free now: those other processes do not keep at least half busy (at least 1).
    Where the load cannot be measured, all are."""
    load = foreign_load(ours=ours)
    if load is None:
        return cores
    return max(1, min(cores, math.ceil(cores - load - 0.5)))


@dataclass(frozen=True)
class ThreadPlan:
    """How an engine searches: `threads` torch threads in each searching process, and up to `processes`
    processes side by side (this one and `processes - 1` workers). `auto`: chosen by `plan_threads("auto")`:
    then workers start only once the work left pays for their start-up and a core is free for each, and with
    `adaptive` each search (started in an empty batch) takes as many threads, up to `threads`, as cores are
    free at its start."""

    threads: int
    processes: int = 1
    auto: bool = False
    adaptive: bool = False

    def describe(self) -> str:
        if self.processes > 1:
            return (f"{self.threads} per search, searches side by side in up to {self.processes} processes"
                    + (" while cores are free" if self.auto else ""))
        if self.adaptive:
            return f"up to {self.threads} per search, as many as cores are free as it starts"
        return str(self.threads)


def plan_threads(threads: Threads, *, device_type: str, resolution: int, cores: int | None = None) -> ThreadPlan:
    """The plan for `--threads` (see the module's docstring for what `auto` does). A number: that many threads
    in this one process."""
    if threads != AUTO:
        return ThreadPlan(parse_threads(threads))  # type: ignore[arg-type]
    cores = usable_cores() if cores is None else cores
    if device_type != "cpu":  # the GPU computes; the CPU threads only feed it
        return ThreadPlan(cores, 1, auto=True)
    if resolution <= SMALL_RESOLUTION:  # side by side where worker processes can be started (POSIX)
        return ThreadPlan(1, cores if os.name == "posix" else 1, auto=True)
    return ThreadPlan(cores, 1, auto=True, adaptive=cores > 1)


def prefer_wait_policy(threads: Threads, environ: MutableMapping[str, str] | None = None) -> bool:
    """How OpenMP's waiting threads wait, in this process and the processes it starts, unless the user set a wait
    policy (any of WAIT_POLICY_VARIABLES): they sleep (`OMP_WAIT_POLICY=passive`), and with `auto` they first spin
    briefly on GNU OpenMP (`GOMP_SPINCOUNT=SHORT_SPIN`, which it reads before the policy; LLVM's and Intel's
    OpenMP read only the policy). `auto` gives a search two threads only when the cores are free as it starts,
    where a short spin keeps a full-size step as fast as spinning; a fixed count runs whatever the load, where
    only sleeping at once keeps a small model off the cliff (measured: the module's docstring). It takes effect
    only if torch (and with it OpenMP) is not loaded yet: returns whether this process's searches get it."""
    import sys

    env = os.environ if environ is None else environ
    if not any(name in env for name in WAIT_POLICY_VARIABLES):
        env["OMP_WAIT_POLICY"] = "passive"
        if threads == AUTO:
            env["GOMP_SPINCOUNT"] = str(SHORT_SPIN)
    return "torch" not in sys.modules


def worker_environment(threads: int, *, auto: bool, environ: MutableMapping[str, str] | None = None
                       ) -> dict[str, str]:
    """The environment of a worker process with `threads` threads: OpenMP's and MKL's thread counts, and the wait
    policy of `auto` or of a fixed count (`prefer_wait_policy`) unless one is set, all read when the worker loads
    torch."""
    env = dict(os.environ if environ is None else environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    prefer_wait_policy(AUTO if auto else threads, env)
    return env
