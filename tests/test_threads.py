"""`--threads N|auto`: the value reaches torch in the process that searches, the records say what each search
used, a bad value is one line, and searches side by side in worker processes give a plain run's results bit
for bit, with every guarantee of a plain run (one record per input, nothing half-written, resuming).

Speed is measured by bench/threads.py, not here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import dcgan_state_dict, read_records, same_images, strict_lines, write_crops
from safetensors.torch import load_file

from pulse_cli import threads as threads_module
from pulse_cli import workers
from pulse_cli.cli import app
from pulse_cli.engine import Engine
from pulse_cli.networks.dcgan import DCGANGenerator
from pulse_cli.networks.generator import LatentStats
from pulse_cli.run.records import RecordError, ResultRecord
from pulse_cli.search.pulse import SearchConfig
from pulse_cli.threads import ThreadPlan, parse_threads, plan_threads

FAST = ["--device", "cpu", "--quiet"]


# --- the value --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [("auto", "auto"), (" AUTO ", "auto"), ("1", 1), (" 2 ", 2), (3, 3),
                                             ("1024", 1024)])
def test_good_thread_values(value, expected):
    assert parse_threads(value) == expected


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "x", "", "1025", "\u0663", 0, True, 2.0, None])
def test_bad_thread_values_are_one_line(value):
    with pytest.raises(ValueError, match=r"^threads .*: use a whole number from 1 to 1024, or 'auto'$"):
        parse_threads(value)


def test_auto_plans_by_model_size_and_device():
    assert plan_threads("auto", device_type="cpu", resolution=64, cores=4) == ThreadPlan(1, 4, auto=True)
    assert plan_threads("auto", device_type="cpu", resolution=256, cores=2) == ThreadPlan(1, 2, auto=True)
    assert plan_threads("auto", device_type="cpu", resolution=1024, cores=2) == \
        ThreadPlan(2, 1, auto=True, adaptive=True)
    assert plan_threads("auto", device_type="cpu", resolution=1024, cores=1) == ThreadPlan(1, 1, auto=True)
    assert plan_threads("auto", device_type="cuda", resolution=64, cores=8) == ThreadPlan(8, 1, auto=True)
    assert plan_threads(3, device_type="cpu", resolution=64, cores=8) == ThreadPlan(3)


@pytest.mark.parametrize("load, cores, free", [(0.0, 2, 2), (0.4, 2, 2), (0.5, 2, 1), (1.0, 2, 1), (2.0, 2, 1),
                                               (7.0, 2, 1), (3.2, 8, 5), (None, 4, 4)])
def test_free_cores_are_those_others_leave_at_least_half_free(monkeypatch, load, cores, free):
    monkeypatch.setattr(threads_module, "foreign_load", lambda **_: load)
    assert threads_module.free_cores(cores) == free


def test_foreign_load_counts_busy_ticks_of_our_cpus_less_our_workers(monkeypatch):
    # two CPUs, 100 ticks each in the window: cpu0 fully busy, cpu1 a quarter; our worker used 50 of them
    samples = iter([{"cpu0": (1000, 5000), "cpu1": (300, 5000)}, {"cpu0": (1100, 5100), "cpu1": (325, 5100)}])
    ours = iter([10, 60])
    monkeypatch.setattr(threads_module, "_cpu_ticks", lambda cpus: next(samples))
    monkeypatch.setattr(threads_module, "_ticks_of", lambda pids: next(ours))
    assert threads_module.foreign_load(window=0.0, ours=[1]) == pytest.approx(0.75)


def test_foreign_load_sees_a_busy_process_on_the_cpus_we_may_use():
    """A real measurement: a spinning process pinned with us to one CPU keeps that one busy."""
    if not hasattr(os, "sched_setaffinity") or not os.path.exists("/proc/stat"):
        pytest.skip("Linux only")
    cpu = min(os.sched_getaffinity(0))
    pin = f"import os; os.sched_setaffinity(0, {{{cpu}}})"
    code = f"{pin}; from pulse_cli import threads; print(threads.foreign_load(window=0.5))"
    spinner = subprocess.Popen([sys.executable, "-c", f"{pin}\nwhile True: pass"])
    try:
        time.sleep(0.3)
        load = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    timeout=60).stdout)
    finally:
        spinner.kill()
        spinner.wait()
    assert load >= 0.8  # the spinner had the CPU whenever this process slept


def test_usable_cores_follow_the_affinity_and_the_container_quota(tmp_path):
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity here")
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " \
           "from pulse_cli.threads import usable_cores; print(usable_cores())"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip() == "1"
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads_module._cgroup_cpu_quota(str(tmp_path)) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads_module._cgroup_cpu_quota(str(tmp_path)) is None
    assert threads_module._cgroup_cpu_quota(str(tmp_path / "none")) is None


def test_records_say_the_threads_and_refuse_a_bad_count():
    sample = {"output": "a.png.png", "status": "ok", "best_l2": 0.001, "threads": 2}
    record = ResultRecord.from_json({"input": "a.png", "status": "ok", "samples": [sample]})
    assert record.samples[0]["threads"] == 2
    with pytest.raises(RecordError):
        ResultRecord.from_json({"input": "a.png", "status": "ok", "samples": [{**sample, "threads": "two"}]})


# --- the engine -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dcgan() -> DCGANGenerator:
    G = DCGANGenerator.from_state_dict(dcgan_state_dict(nz=8))
    G.latent_stats = LatentStats(torch.zeros(8), torch.ones(8))
    return G


def _targets(count: int, size: int = 8) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(3))


def _same(a, b) -> bool:
    return (torch.equal(a.image, b.image) and torch.equal(a.ws, b.ws) and len(a.noise) == len(b.noise)
            and all(torch.equal(x, y) for x, y in zip(a.noise, b.noise, strict=True)) and a.history == b.history
            and a.best_step == b.best_step)


def _search_all(engine: Engine, targets: torch.Tensor, **kwargs) -> tuple[list, list]:
    """Every target searched (seeds 10, 11, ...): results in order, and Finished in the order they came."""
    finished = list(engine.searches(zip(range(len(targets)), targets, range(10, 10 + len(targets)), strict=True),
                                    total=len(targets), **kwargs))
    assert all(f.error is None for f in finished), [f.error for f in finished]
    by_key = {f.key: f for f in finished}
    return [by_key[k].result for k in range(len(targets))], finished


def test_the_thread_count_reaches_torch_while_searching_and_is_given_back(demo_checkpoint):
    engine = Engine.load(demo_checkpoint, "cpu", config=SearchConfig(steps=3), threads=2)
    before = torch.get_num_threads()
    seen = []
    _, finished = _search_all(engine, _targets(2, 16), on_step=lambda searches: seen.append(torch.get_num_threads()))
    assert seen == [2] * 6 and [f.threads for f in finished] == [2, 2]
    assert torch.get_num_threads() == before


def test_a_render_uses_the_threads_its_search_ran_with_whatever_the_process_is_set_to(demo_checkpoint,
                                                                                       tmp_path, monkeypatch):
    from pulse_cli.files.latents import save_latents
    from pulse_cli.run import render as render_module

    rendered: list[torch.Tensor] = []
    monkeypatch.setattr(render_module, "save_png", lambda image, out, text=None: rendered.append(image))

    G = Engine.load(demo_checkpoint, "cpu").generator
    engine = Engine(G, device="cpu", config=SearchConfig(steps=3))
    before = torch.get_num_threads()
    try:
        for count, other in ((1, 2), (2, 1)):
            (result,), (done,) = _search_all(Engine(G, device="cpu", config=SearchConfig(steps=3), threads=count),
                                             _targets(1, 16))
            assert done.threads == count
            torch.set_num_threads(other)
            assert torch.equal(engine.render(result.ws, result.noise, threads=done.threads), result.image)
            assert torch.get_num_threads() == other  # given back
            # pulse render reads the count from the latents file (written with it by the run)
            latents = tmp_path / f"{count}.latents.safetensors"
            save_latents(latents, result.ws, result.noise, {"checkpoint": str(demo_checkpoint),
                                                            "synthesis_path": G.synthesis_path, "threads": count})
            render_module.render_latents_file(latents, tmp_path / f"{count}.png", metadata=False)
            assert torch.equal(rendered[-1], result.image)
    finally:
        torch.set_num_threads(before)


def test_engine_values_are_checked(demo_checkpoint, dcgan):
    with pytest.raises(ValueError, match="threads 0: use a whole number"):
        Engine.load(demo_checkpoint, "cpu", threads=0)
    with pytest.raises(ValueError, match="processes must be a whole number"):
        Engine(dcgan, device="cpu", threads=1, processes=0)
    with pytest.raises(ValueError, match="need a thread count"):
        Engine(dcgan, device="cpu", processes=2)
    assert Engine(dcgan, device="cpu").threads_plan is None  # as before: the process's own setting


def _count_worker_results(monkeypatch) -> list[int]:
    """The ids of the searches workers finished (this process's own are not counted)."""
    done: list[int] = []
    handle = workers._handle

    def counting(worker, message, *args):
        if message[0] == "done":
            done.append(message[1])
        return handle(worker, message, *args)

    monkeypatch.setattr(workers, "_handle", counting)
    return done


@pytest.mark.parametrize("model", ["dcgan", "stylegan"])
def test_side_by_side_results_are_a_plain_runs_bit_for_bit(monkeypatch, demo_checkpoint, dcgan, model):
    """Searches in a forked worker and in this process equal those of a plain engine with one thread at batch
    size 1, whichever process ran them (the StyleGAN's numbers change with the thread count, so this holds only
    because both run one thread)."""
    G, size = (dcgan, 8) if model == "dcgan" else (Engine.load(demo_checkpoint, "cpu").generator, 16)
    config = SearchConfig(steps=4).for_latent(G.latent_kind)
    targets = _targets(5, size)
    plain, _ = _search_all(Engine(G, device="cpu", config=config, threads=1), targets)
    by_workers = _count_worker_results(monkeypatch)
    notes: list[str] = []
    side, finished = _search_all(Engine(G, device="cpu", config=config, threads=1, processes=2,
                                        notify=notes.append), targets)
    assert notes == ["searching side by side: 2 processes, 1 thread(s) each"]
    assert 1 <= len(by_workers) < len(targets)  # both processes searched
    assert all(_same(a, b) for a, b in zip(plain, side, strict=True))
    assert [f.threads for f in finished] == [1] * len(targets)


@pytest.mark.slow
def test_a_worker_started_as_a_fresh_interpreter_gives_the_same_results(monkeypatch, demo_checkpoint):
    """Where a fork is not used (not Linux, or several threads per search), the worker is `python -m
    pulse_cli.worker_main`, which gets the generator over its connection: the same results."""
    monkeypatch.setattr(workers, "START", "spawn")
    G = Engine.load(demo_checkpoint, "cpu").generator
    config = SearchConfig(steps=40)
    targets = _targets(6, 16)
    plain, _ = _search_all(Engine(G, device="cpu", config=config, threads=1), targets)
    by_workers = _count_worker_results(monkeypatch)
    side, _ = _search_all(Engine(G, device="cpu", config=config, threads=1, processes=2), targets)
    assert by_workers  # the worker did search (it starts in seconds; the searches take longer)
    assert all(_same(a, b) for a, b in zip(plain, side, strict=True))


def test_where_no_worker_can_start_the_searches_go_on_here(monkeypatch, dcgan):
    def cannot(*args, **kwargs):
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(workers, "WorkerProcess", cannot)
    config = SearchConfig(steps=4).for_latent(dcgan.latent_kind)
    targets = _targets(4)
    notes: list[str] = []
    alone, _ = _search_all(Engine(dcgan, device="cpu", config=config, threads=1, processes=2, notify=notes.append),
                           targets)
    plain, _ = _search_all(Engine(dcgan, device="cpu", config=config, threads=1), targets)
    assert notes == ["cannot start a search process (Resource temporarily unavailable); searching in this one"]
    assert all(_same(a, b) for a, b in zip(plain, alone, strict=True))


def test_auto_starts_a_worker_only_when_a_core_is_free_and_the_work_pays(monkeypatch, dcgan):
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    config = SearchConfig(steps=6).for_latent(dcgan.latent_kind)
    probes: list[int] = []

    def busy(cores, ours=()):
        probes.append(cores)
        return 1

    monkeypatch.setattr(threads_module, "free_cores", busy)
    monkeypatch.setattr(workers, "WORKER_WORTH_SECONDS", 0.0)
    notes: list[str] = []
    engine = Engine(dcgan, device="cpu", config=config, threads="auto", notify=notes.append)
    assert engine.threads_plan == ThreadPlan(1, 2, auto=True)
    _search_all(engine, _targets(4))
    assert probes and notes == []  # a busy machine: no second process (and looked again only after a while)
    assert len(probes) == 1
    monkeypatch.setattr(threads_module, "free_cores", lambda cores, ours=(): 2)
    monkeypatch.setattr(workers, "WORKER_WORTH_SECONDS", 3600.0)
    _search_all(engine, _targets(4))
    assert notes == []  # free, but the work is not worth a process's start
    monkeypatch.setattr(workers, "WORKER_WORTH_SECONDS", 0.0)
    _search_all(engine, _targets(4))
    assert notes == ["searching side by side: 2 processes, 1 thread(s) each"]


def test_adaptive_threads_are_chosen_as_each_search_starts_and_kept_to_its_end(monkeypatch, demo_checkpoint):
    """A full-size model's plan (the demo counts as one here): each search takes the free cores at its start;
    each result is a plain engine's with that thread count."""
    monkeypatch.setattr(threads_module, "SMALL_RESOLUTION", 64)
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    free = iter([2, 1, 2])
    monkeypatch.setattr(threads_module, "free_cores", lambda cores, ours=(): next(free))
    G = Engine.load(demo_checkpoint, "cpu").generator
    config = SearchConfig(steps=3)
    engine = Engine(G, device="cpu", config=config, threads="auto")
    assert engine.threads_plan == ThreadPlan(2, 1, auto=True, adaptive=True)
    seen: list[int] = []
    targets = _targets(3, 16)
    results, finished = _search_all(engine, targets, on_step=lambda s: seen.append(torch.get_num_threads()))
    assert [f.threads for f in finished] == [2, 1, 2] and seen == [2] * 3 + [1] * 3 + [2] * 3
    for count in (1, 2):
        plain, _ = _search_all(Engine(G, device="cpu", config=config, threads=count), targets)
        assert all(_same(a, b) for a, b, f in zip(plain, results, finished, strict=True) if f.threads == count)


# --- the command ------------------------------------------------------------------------------------------------


def _side_by_side_forced(monkeypatch) -> None:
    """`--threads auto` on a 2-core machine that is idle, with any work worth a worker."""
    monkeypatch.setattr(threads_module, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads_module, "free_cores", lambda cores, ours=(): cores)
    monkeypatch.setattr(workers, "WORKER_WORTH_SECONDS", 0.0)


def test_a_run_side_by_side_records_each_input_once_with_a_plain_runs_results_and_resumes(
        runner, monkeypatch, tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 5)
    names = sorted(p.name for p in src.iterdir())
    args = ["--checkpoint", str(demo_checkpoint), "--steps", "4", "--samples", "2", "--save-latents",
            "--save-every", "2", "--animate", *FAST]
    plain = runner.invoke(app, ["upsample", str(src), str(tmp_path / "plain"), "--threads", "1", *args])
    assert plain.exit_code == 0, plain.stderr
    _side_by_side_forced(monkeypatch)
    by_workers = _count_worker_results(monkeypatch)
    out = tmp_path / "out"
    result = runner.invoke(app, ["upsample", str(src), str(out), *args[:-1]])
    assert result.exit_code == 0, result.stderr
    assert "searching side by side: 2 processes, 1 thread(s) each" in result.stderr
    assert "threads: 1 per search, searches side by side in up to 2 processes while cores are free (auto)" \
        in result.stderr
    assert by_workers
    records = strict_lines(out / "results.jsonl")
    assert sorted(r["input"] for r in records) == names
    reference = {r["input"]: r for r in read_records(tmp_path / "plain")}
    for record in records:
        earlier = reference[record["input"]]["samples"]
        assert [s["best_l2"] for s in record["samples"]] == [s["best_l2"] for s in earlier]
        assert [s["threads"] for s in record["samples"]] == [1, 1]
        for k in range(2):
            header = strict_lines(out / "logs" / f"{record['input']}.sample{k}.jsonl")[0]
            assert header["threads"] == 1
            name = f"{record['input']}.sample{k}"
            assert same_images(out, tmp_path / "plain", [name])
            ours, theirs = (load_file(folder / f"{name}.latents.safetensors") for folder in (out, tmp_path / "plain"))
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[key], theirs[key]) for key in ours)
            # the frames and animations of a worker's searches are written here, as it makes them
            frames = sorted(p.name for p in (out / "frames" / name).iterdir())
            assert frames == ["step-0000.png", "step-0002.png"]
            assert same_images(out / "frames" / name, tmp_path / "plain" / "frames" / name, ["step-0002"])
            assert (out / f"{name}.search.gif").is_file()
    assert not list(out.rglob("*.tmp")) and not list((out / ".claims").iterdir())
    again = runner.invoke(app, ["upsample", str(src), str(out), *args])
    assert again.exit_code == 0, again.stderr
    assert [r["status"] for r in read_records(out)[len(names):]] == ["skipped"] * len(names)


def test_bad_thread_options_are_one_line(runner, tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 1)
    for extra, message in [(["--threads", "0"], "--threads '0': use a whole number from 1 to 1024, or 'auto'"),
                           (["--threads", "two"], "--threads 'two': use a whole number from 1 to 1024, or 'auto'"),
                           (["--threads", "2", "--ray", "local"],
                            "--threads is for a run on this machine; Ray workers take --threads-per-worker")]:
        result = runner.invoke(app, ["upsample", str(src), str(tmp_path / "out"), "--checkpoint",
                                     str(demo_checkpoint), *extra])
        if "--ray" in extra and "needs Ray" in result.stderr:
            continue
        assert result.exit_code == 2 and result.stderr == f"error: {message}\n", result.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()


# --- how waiting threads wait -----------------------------------------------------------------------------------


@pytest.mark.parametrize("threads, expected", [
    ("auto", {"OMP_WAIT_POLICY": "passive", "GOMP_SPINCOUNT": "10000"}),  # a short spin, then sleep
    (2, {"OMP_WAIT_POLICY": "passive"}),  # a fixed count runs whatever the load: sleep at once
    (1, {"OMP_WAIT_POLICY": "passive"}),
])
def test_the_wait_policy_follows_the_thread_choice(threads, expected):
    env: dict[str, str] = {"PATH": "/bin"}
    assert threads_module.prefer_wait_policy(threads, env) is False  # torch is loaded here: too late for us
    assert env == {"PATH": "/bin", **expected}
    worker = threads_module.worker_environment(3, auto=threads == "auto", environ={"PATH": "/bin"})
    assert worker == {"PATH": "/bin", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", **expected}


@pytest.mark.parametrize("users", [{"OMP_WAIT_POLICY": "active"}, {"GOMP_SPINCOUNT": "300000"},
                                   {"KMP_BLOCKTIME": "200"}])
def test_a_wait_policy_the_user_set_is_left_as_it_is(users):
    for threads in ("auto", 2):
        env = dict(users)
        threads_module.prefer_wait_policy(threads, env)
        assert env == users


def _openmp_settings(tmp_path: Path, checkpoint: Path, threads: str, **extra_env: str) -> dict[str, str]:
    """What the OpenMP runtime of a `pulse upsample --threads THREADS` process read (GNU OpenMP prints it with
    OMP_DISPLAY_ENV as it loads); skipped where torch's OpenMP does not."""
    src = write_crops(tmp_path / f"in-{threads}", 1)
    env = {k: v for k, v in _env(tmp_path).items() if k not in threads_module.WAIT_POLICY_VARIABLES}
    result = subprocess.run([sys.executable, "-m", "pulse_cli", "upsample", str(src), str(tmp_path / f"out-{threads}"),
                             "--checkpoint", str(checkpoint), "--device", "cpu", "--steps", "1", "--quiet",
                             "--threads", threads], env={**env, "OMP_DISPLAY_ENV": "verbose", **extra_env},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    if "OPENMP DISPLAY ENVIRONMENT" not in result.stderr:
        pytest.skip("torch's OpenMP runtime here does not display its settings (not GNU OpenMP)")
    settings = {}
    for line in result.stderr.splitlines():
        name, sep, value = line.strip().partition(" = ")
        if sep:
            settings[name] = value.strip("'")
    return settings


def test_the_openmp_runtime_of_a_run_gets_its_wait_policy(tmp_path, demo_checkpoint):
    auto = _openmp_settings(tmp_path, demo_checkpoint, "auto")
    assert (auto["OMP_WAIT_POLICY"], auto["GOMP_SPINCOUNT"]) == ("PASSIVE", "10000")
    fixed = _openmp_settings(tmp_path, demo_checkpoint, "2")
    assert (fixed["OMP_WAIT_POLICY"], fixed["GOMP_SPINCOUNT"]) == ("PASSIVE", "0")
    users = _openmp_settings(tmp_path, demo_checkpoint, "auto", GOMP_SPINCOUNT="300000")
    assert users["GOMP_SPINCOUNT"] == "300000"


# --- processes that die -----------------------------------------------------------------------------------------

# `pulse upsample` in a fresh process, with side by side forced as in _side_by_side_forced
_FORCED = ("import sys; from pulse_cli import threads, workers; threads.usable_cores = lambda: 2; "
           "threads.free_cores = lambda cores, ours=(): cores; workers.WORKER_WORTH_SECONDS = 0.0; "
           "from pulse_cli.cli import main; sys.argv[0] = 'pulse'; main()")


def _forced_command(src: Path, out: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", _FORCED, "upsample", str(src), str(out), "--checkpoint", str(checkpoint),
            "--device", "cpu", *extra]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PULSE_CHECKPOINT"}
    env["PULSE_HOME"] = str(tmp_path / "home")
    return env


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _wait_for_worker(process: subprocess.Popen, deadline: float = 120) -> int:
    """The run's worker, once the run says it started one (stderr: a pipe, not --quiet): its child that is a fork of
    it and stays one (other children come and go: find_library's ldconfig, forked before it runs)."""
    for line in iter(process.stderr.readline, b""):
        if b"searching side by side" in line:
            break
    else:
        raise AssertionError("the run ended without starting a worker")
    command = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    end = time.monotonic() + deadline
    seen: set[int] = set()
    while True:
        for child in _children(process.pid):
            try:
                if Path(f"/proc/{child}/cmdline").read_bytes() == command:
                    if child in seen:
                        return child
                    seen.add(child)
            except OSError:
                pass
        assert time.monotonic() < end, "no worker found"
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")


@needs_proc
@pytest.mark.slow
def test_killed_with_its_worker_running_nothing_is_left_and_a_rerun_finishes(tmp_path, demo_checkpoint):
    """SIGKILL to the run while its worker searches: the worker dies with it (nothing keeps computing or holds a
    claim), nothing is half-written, and the same command finishes every input once with a plain run's
    images."""
    src = write_crops(tmp_path / "in", 6)
    names = sorted(p.name for p in src.iterdir())
    args = ("--steps", "40")
    reference = tmp_path / "reference"
    subprocess.run(_forced_command(src, reference, demo_checkpoint, "--threads", "1", *args), env=_env(tmp_path),
                   check=True, capture_output=True, timeout=600)
    out = tmp_path / "out"
    process = subprocess.Popen(_forced_command(src, out, demo_checkpoint, *args), env=_env(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # not --quiet: its notes
    worker = _wait_for_worker(process)
    time.sleep(0.5)
    process.kill()
    process.wait(timeout=60)
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)
    final = subprocess.run(_forced_command(src, out, demo_checkpoint, *args), env=_env(tmp_path),
                           capture_output=True, timeout=600)
    assert final.returncode == 0, final.stderr.decode()
    finished = [r for r in strict_lines(out / "results.jsonl") if r["status"] in ("ok", "not_converged")]
    assert sorted(r["input"] for r in finished) == names  # each once, over both runs
    assert same_images(out, reference, names)
    assert not list(out.rglob("*.tmp"))


@needs_proc
@pytest.mark.slow
def test_a_worker_that_dies_has_its_searches_done_here_and_the_run_goes_on(tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 6)
    names = sorted(p.name for p in src.iterdir())
    args = ("--steps", "40")
    reference = tmp_path / "reference"
    subprocess.run(_forced_command(src, reference, demo_checkpoint, "--threads", "1", "--quiet", *args),
                   env=_env(tmp_path), check=True, capture_output=True, timeout=600)
    out = tmp_path / "out"
    process = subprocess.Popen(_forced_command(src, out, demo_checkpoint, *args), env=_env(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    worker = _wait_for_worker(process)
    time.sleep(0.5)
    os.kill(worker, signal.SIGKILL)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr.decode()
    assert "a search process died (killed by signal 9); its searches start again in this one" in stderr.decode()
    assert sorted(r["input"] for r in read_records(out)) == names
    assert same_images(out, reference, names)


@needs_proc
def test_sigterm_stops_the_run_and_its_worker(tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 4)
    process = subprocess.Popen(_forced_command(src, tmp_path / "out", demo_checkpoint, "--steps", "400"),
                               env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    worker = _wait_for_worker(process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr.decode()
    assert b"Traceback" not in stderr and b"rerun the same command to resume" in stderr
    assert not _alive(worker)
    assert not list((tmp_path / "out").rglob("*.tmp"))
