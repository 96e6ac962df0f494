"""Past one process: shards, and any number of processes sharing one OUT (each input searched once)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import read_records, same_images, write_crops

from pulse_cli.cli.options import UsageError, parse_shard
from pulse_cli.run.plan import in_shard


def test_parse_shard():
    assert parse_shard(None) is None
    assert parse_shard("2/8") == (2, 8)
    assert parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1",
                                "SLURM_ARRAY_TASK_COUNT": "10"}) == (5, 10)
    assert parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}) == (1, 4)
    assert parse_shard("auto/6", {"JOB_COMPLETION_INDEX": "5"}) == (6, 6)
    for bad, env in [("0/4", {}), ("5/4", {}), ("2", {}), ("a/b", {}), ("auto", {}),
                     ("auto", {"JOB_COMPLETION_INDEX": "1"}), ("auto/3", {"JOB_COMPLETION_INDEX": "3"})]:
        with pytest.raises(UsageError):
            parse_shard(bad, env)


def test_shards_partition_the_inputs_and_new_files_move_no_other():
    rng = random.Random(0)
    names = [f"dir{rng.randrange(5)}/img{rng.randrange(10**6)}.png" for _ in range(400)]
    for n in (1, 3, 8):
        owners = {name: [k for k in range(1, n + 1) if in_shard(name, (k, n))] for name in names}
        assert all(len(ks) == 1 for ks in owners.values())
        sizes = [sum(ks == [k] for ks in owners.values()) for k in range(1, n + 1)]
        assert min(sizes) > len(names) / n * 0.6  # roughly even
    # the shard of a path depends on that path alone, not on which other files exist
    first = {name: in_shard(name, (2, 8)) for name in names[:200]}
    assert first == {name: in_shard(name, (2, 8)) for name in names[:200]}




def _command(src: Path, out: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pulse_cli", "upsample", str(src), str(out), "--checkpoint", str(checkpoint),
            "--device", "cpu", "--steps", "3", "--quiet", *extra]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PULSE_CHECKPOINT"}
    env.update(PULSE_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")  # one thread: bit-identical runs
    return env






def _searched_once(records: list[dict], names: list[str]) -> None:
    """Each input finished by exactly one record; any other is a `skipped` one, written after it by a process that
    planned its run once the input was done (how soon depends on how fast the processes start)."""
    done = [r["input"] for r in records if r["status"] in ("ok", "not_converged")]
    assert sorted(done) == names
    for k, record in enumerate(records):
        assert record["status"] in ("ok", "not_converged", "skipped"), record
        if record["status"] == "skipped":
            assert record["input"] in [r["input"] for r in records[:k] if r["status"] != "skipped"]


@pytest.fixture
def single_run(tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 8, name="{k:02d}.png")
    reference = tmp_path / "single"
    subprocess.run(_command(src, reference, demo_checkpoint), env=_env(tmp_path), check=True, timeout=300)
    return src, reference, sorted(p.name for p in src.iterdir())


def test_shards_together_do_every_input_once(tmp_path, demo_checkpoint, single_run):
    src, reference, names = single_run
    out = tmp_path / "out"
    for k in (1, 2, 3):
        subprocess.run(_command(src, out, demo_checkpoint, "--shard", f"{k}/3"), env=_env(tmp_path), check=True,
                       timeout=300)
    records = read_records(out)
    assert sorted(r["input"] for r in records) == names
    assert all(r["status"] in ("ok", "not_converged") for r in records)
    assert same_images(out, reference, names)


@pytest.mark.slow
def test_four_processes_share_one_out_and_search_each_input_once(tmp_path, demo_checkpoint, single_run):
    src, reference, names = single_run
    out = tmp_path / "out"
    processes = [subprocess.Popen(_command(src, out, demo_checkpoint), env=_env(tmp_path)) for _ in range(4)]
    assert [p.wait(timeout=300) for p in processes] == [0, 0, 0, 0]
    _searched_once(read_records(out), names)  # searched by exactly one process
    assert same_images(out, reference, names)
    assert not list(out.rglob("*.tmp")) and not list((out / ".claims").iterdir())


@pytest.mark.slow
def test_a_process_killed_mid_run_leaves_its_inputs_to_the_others(tmp_path, demo_checkpoint, single_run):
    src, reference, names = single_run
    out = tmp_path / "out"
    slow = ["--steps", "40"]
    victim = subprocess.Popen(_command(src, out, demo_checkpoint, *slow), env=_env(tmp_path))
    deadline = time.monotonic() + 120
    while not (out / ".claims").is_dir() or not list((out / ".claims").iterdir()):  # it holds an input
        assert victim.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    others = [subprocess.Popen(_command(src, out, demo_checkpoint, *slow), env=_env(tmp_path)) for _ in range(2)]
    time.sleep(1.0)
    victim.kill()
    victim.wait(timeout=60)
    assert [p.wait(timeout=600) for p in others] == [0, 0]
    records = read_records(out)
    _searched_once(records, names)  # the victim's input too
    assert not list(out.rglob("*.tmp"))
    rerun = subprocess.run(_command(src, out, demo_checkpoint, *slow), env=_env(tmp_path), timeout=300)
    assert rerun.returncode == 0
    assert [r["status"] for r in read_records(out)[len(records):]] == ["skipped"] * len(names)
