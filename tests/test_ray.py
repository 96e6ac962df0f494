"""`pulse upsample --ray`: the same results as one process, on a local Ray instance (started once here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import dcgan_state_dict, read_records, same_images, save_tensor_file, write_crops
from typer.testing import CliRunner

from pulse_cli.cli import app
from pulse_cli.run import ray_backend, ray_extra


def _args(src: Path, out: Path, checkpoint: Path, *extra: str) -> list[str]:
    return ["upsample", str(src), str(out), "--checkpoint", str(checkpoint), "--device", "cpu", "--steps", "3",
            "--quiet", *extra]


def test_without_ray_it_says_what_to_install(monkeypatch, tmp_path, demo_checkpoint):
    monkeypatch.setattr(ray_extra, "ray_available", lambda: False)
    result = CliRunner().invoke(app, _args(write_crops(tmp_path / "in", 1), tmp_path / "out", demo_checkpoint,
                                           "--ray", "local"))
    assert result.exit_code == 2
    assert "pip install '.[ray]'" in result.output
    assert not (tmp_path / "out").exists()


def test_worker_options_need_ray(tmp_path, demo_checkpoint):
    result = CliRunner().invoke(app, _args(write_crops(tmp_path / "in", 1), tmp_path / "out", demo_checkpoint,
                                           "--workers", "2"))
    assert result.exit_code == 2
    assert "--ray" in result.output


ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (starting one takes seconds); `--ray local` reuses it."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, demo_checkpoint):
    """8 crops and a plain one-process run of them (one thread: bit-identical with a worker's)."""
    tmp = tmp_path_factory.mktemp("single")
    src = write_crops(tmp / "in", 8, name="{k:02d}.png")
    reference = tmp / "single"
    env = {k: v for k, v in os.environ.items() if k != "PULSE_CHECKPOINT"}
    env.update(PULSE_HOME=str(tmp / "home"), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "pulse_cli", *_args(src, reference, demo_checkpoint)], env=env,
                   check=True, timeout=300)
    return src, reference, sorted(p.name for p in src.iterdir())


def _check(out: Path, reference: Path, names: list[str]) -> None:
    records = read_records(out)
    assert sorted(r["input"] for r in records) == names  # each input exactly once
    assert all(r["status"] in ("ok", "not_converged") for r in records)
    by_input = {r["input"]: r for r in read_records(reference)}
    assert all(r["worst_sample_l2"] == by_input[r["input"]]["worst_sample_l2"] for r in records)
    assert same_images(out, reference, names)
    assert not list(out.rglob("*.tmp"))


def test_a_ray_run_makes_a_single_process_runs_results_and_resumes(local_ray, monkeypatch, tmp_path,
                                                                   demo_checkpoint, single_run):
    src, reference, names = single_run
    monkeypatch.delenv("PULSE_CHECKPOINT", raising=False)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, _args(src, out, demo_checkpoint, "--ray", "local", "--workers", "2"))
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # --quiet: none of Ray Data's progress lines, notes or stats
    _check(out, reference, names)
    assert not list((out / ".claims").iterdir())
    again = CliRunner().invoke(app, _args(src, out, demo_checkpoint, "--ray", "local", "--workers", "2"))
    assert again.exit_code == 0, again.output
    assert [r["status"] for r in read_records(out)[len(names):]] == ["skipped"] * len(names)


def test_a_worker_that_dies_has_its_inputs_retried_each_recorded_once(local_ray, monkeypatch, tmp_path,
                                                                     demo_checkpoint, single_run):
    src, reference, names = single_run
    monkeypatch.delenv("PULSE_CHECKPOINT", raising=False)
    marker = tmp_path / "died"
    # the first call to finish exits its worker after writing its outputs, before returning their records
    monkeypatch.setenv(ray_backend.DIE_ONCE_ENV, str(marker))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, _args(src, out, demo_checkpoint, "--ray", "local", "--workers", "2"))
    assert result.exit_code == 0, result.output
    assert marker.exists()  # a worker did die
    _check(out, reference, names)


def test_a_ray_run_and_a_plain_process_share_out(local_ray, monkeypatch, tmp_path, demo_checkpoint, single_run):
    src, reference, names = single_run
    monkeypatch.delenv("PULSE_CHECKPOINT", raising=False)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PULSE_CHECKPOINT"}
    env.update(PULSE_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    plain = subprocess.Popen([sys.executable, "-m", "pulse_cli", *_args(src, out, demo_checkpoint)], env=env)
    result = CliRunner().invoke(app, _args(src, out, demo_checkpoint, "--ray", "local", "--workers", "1"))
    assert plain.wait(timeout=300) == 0
    assert result.exit_code == 0, result.output
    _check(out, reference, names)


def test_a_dcgan_on_ray_gives_a_plain_runs_results(local_ray, monkeypatch, tmp_path):
    """A DCGAN (one Gaussian z, no noise): the workers search it as a plain process does, with the loss that
    applies to it (no GEOCROSS), and a GEOCROSS loss is refused before any worker starts."""
    monkeypatch.delenv("PULSE_CHECKPOINT", raising=False)
    checkpoint = save_tensor_file({"netG_state_dict": dcgan_state_dict(nz=8)}, tmp_path / "dcgan.tar")
    src = write_crops(tmp_path / "in", 3, size=8)
    names = sorted(p.name for p in src.iterdir())
    env = {k: v for k, v in os.environ.items() if k != "PULSE_CHECKPOINT"}
    env.update(PULSE_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "pulse_cli", *_args(src, tmp_path / "single", checkpoint)], env=env,
                   check=True, timeout=300)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, _args(src, out, checkpoint, "--ray", "local", "--workers", "2"))
    assert result.exit_code == 0, result.output
    _check(out, tmp_path / "single", names)
    assert all(r["search"]["loss"] == "100*L2" for r in read_records(out))
    refused = CliRunner().invoke(app, _args(src, tmp_path / "out2", checkpoint, "--ray", "local",
                                            "--loss", "100*L2+0.05*GEOCROSS"))
    assert refused.exit_code == 2 and "GEOCROSS has no meaning" in refused.stderr
    assert not (tmp_path / "out2" / "results.jsonl").exists()


def test_a_worker_that_cannot_load_the_model_fails_the_run_in_one_line(local_ray, monkeypatch, tmp_path):
    monkeypatch.delenv("PULSE_CHECKPOINT", raising=False)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(app, _args(write_crops(tmp_path / "in", 2), tmp_path / "out", bad, "--ray", "local"))
    assert result.exit_code == 2  # as a plain run reports an unusable checkpoint
    assert "a Ray worker failed: " in result.output and "not a recognised generator checkpoint" in result.output


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_the_workers_resolve_the_device_not_the_driver(local_ray, monkeypatch, tmp_path, demo_checkpoint):
    # `--device cuda` is not refused by a driver without a GPU: the workers (here: without one too) say so
    monkeypatch.delenv("PULSE_CHECKPOINT", raising=False)
    args = _args(write_crops(tmp_path / "in", 1), tmp_path / "out", demo_checkpoint, "--ray", "local")
    args[args.index("--device") + 1] = "cuda"
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "a Ray worker failed: device 'cuda' requested but no CUDA GPU is available" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    results = tmp_path / "out" / "results.jsonl"
    assert not results.exists() or not read_records(tmp_path / "out")  # nothing searched, nothing recorded
    plain = CliRunner().invoke(app, args[:args.index("--ray")])  # without Ray: refused up front
    assert plain.exit_code == 2 and "no CUDA GPU is available" in plain.stderr
    assert "Ray" not in plain.stderr
