"""The reliability contract, second pass: the edges an adversary found after the first (issue 19's table).

Each test reproduces one row and fails without its fix. Files cases use the real filesystem: symbolic links,
FIFOs, long names, folders where files belong.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import one_error_line, strict_lines, write_crops
from typer.testing import CliRunner

from pulse_cli.cli import app

FAST = ["--steps", "3", "--device", "cpu"]


def upsample(runner: CliRunner, *args):
    return runner.invoke(app, ["upsample", *map(str, args)])


def no_model_loading(monkeypatch) -> None:
    """Make loading a model fail the test: what is checked must be found before it."""
    import pulse_cli.engine as engine_module

    def refuse(*args, **kwargs):
        raise AssertionError("model loaded before the bookkeeping was checked")

    monkeypatch.setattr(engine_module, "load_generator", refuse)


# --- 1: an input name too long for anything derived from it -------------------------------------------------


def test_an_input_with_a_name_of_250_bytes_fails_alone_and_later_inputs_are_done(runner, tmp_path,
                                                                                demo_checkpoint):
    src = write_crops(tmp_path / "in", 3)
    long_name = "a" * 246 + ".png"  # 250 bytes: legal, but no output named after it fits
    os.rename(src / "1.png", src / long_name)
    out = tmp_path / "out"
    for _ in range(2):  # a rerun does the same, and stops nowhere either
        result = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST)
        assert result.exit_code == 1, result.stderr
        assert "Traceback" not in result.stderr
        latest = {r["input"]: r for r in strict_lines(out / "results.jsonl")}
        assert latest[long_name]["status"] == "failed" and "too long" in latest[long_name]["error"]
        assert {latest["0.png"]["status"], latest["2.png"]["status"]} <= {"ok", "not_converged", "skipped"}
    assert (out / "0.png.png").is_file() and (out / "2.png.png").is_file()


def test_claim_file_names_have_one_short_length_whatever_the_input_is_called():
    from pulse_cli.files.claims import claim_path

    names = ["a.png", "x" * 1000 + ".png", "deep/" * 40 + "a.png", "caf\udce9.png"]
    paths = [claim_path(Path("/out"), name) for name in names]
    assert len({p.name for p in paths}) == len(names)
    assert all(p.parent == Path("/out/.claims") and len(p.name) < 64 for p in paths)


# --- 2: a record of the wrong shape --------------------------------------------------------------------------


@pytest.mark.parametrize("damage", [{"samples": 5}, {"samples": [1, 2]}, {"worst_sample_l2": "abc"}, {"outputs": "x"},
                                    {"status": 3}, {"input": None}])
def test_a_record_of_the_wrong_shape_is_passed_over_with_one_warning(runner, tmp_path, demo_checkpoint, damage):
    src = write_crops(tmp_path / "in", 2)
    out = tmp_path / "out"
    args = [src, out, "--checkpoint", demo_checkpoint, *FAST, "--sheet"]
    assert upsample(runner, *args).exit_code == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    damaged = {**json.loads(lines[0]), **damage}
    (out / "results.jsonl").write_text("\n".join([lines[1], json.dumps(damaged)]) + "\n")
    for _ in range(2):
        result = upsample(runner, *args)
        assert result.exit_code == 0, result.stderr
        assert "Traceback" not in result.stderr
        warnings = [line for line in result.stderr.splitlines() if "line 2" in line]
        assert len(warnings) == 1 and warnings[0].startswith("warning:") and "ignored" in warnings[0]
    redone = [r for r in strict_lines(out / "results.jsonl")[2:] if r["input"] == json.loads(lines[0])["input"]]
    assert redone[0]["status"] in ("ok", "not_converged")  # not trusted: searched again, then skipped
    assert redone[1]["status"] == "skipped"


# --- 3: symbolic links in OUT's bookkeeping ------------------------------------------------------------------


def test_a_symlinked_claim_file_is_never_written_through(runner, tmp_path, demo_checkpoint, monkeypatch):
    from pulse_cli.files.claims import claim_path

    src = write_crops(tmp_path / "in", 1)
    out = tmp_path / "out"
    victim = tmp_path / "someone-elses.txt"
    victim.write_text("precious")
    link = claim_path(out, "0.png")
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    no_model_loading(monkeypatch)
    result = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert str(link) in line and "symbolic link" in line and "remove it" in line
    assert victim.read_text() == "precious" and link.is_symlink()


def test_a_claim_that_turns_into_a_symlink_fails_that_input_alone(tmp_path):
    """After the check (another user, a race): the claim refuses it and the input fails with its reason."""
    from pulse_cli.files.claims import ClaimError, claim_path, try_claim

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = claim_path(tmp_path / "out", "0.png")
    link.parent.mkdir(parents=True)
    link.symlink_to(victim)
    with pytest.raises(ClaimError, match="symbolic link"):
        try_claim(link)
    assert victim.read_text() == "precious"
    link.unlink()
    os.mkfifo(link)
    with pytest.raises(ClaimError, match="special file"):
        try_claim(link)


def test_a_symlinked_results_file_is_refused_and_its_target_kept(runner, tmp_path, demo_checkpoint, monkeypatch):
    src = write_crops(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.jsonl"
    victim.write_text("precious\n")
    (out / "results.jsonl").symlink_to(victim)
    no_model_loading(monkeypatch)
    result = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST)
    assert result.exit_code == 2
    assert "symbolic link" in one_error_line(result.stderr)
    assert victim.read_text() == "precious\n"


def test_appending_never_follows_a_symlink(tmp_path):
    from pulse_cli.files.atomic import append_jsonl

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "results.jsonl").symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        append_jsonl(tmp_path / "results.jsonl", {"a": 1})
    assert victim.read_text() == "precious"


# --- 5: results.jsonl a folder or a FIFO ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_results_file_that_is_not_a_file_is_a_usage_error(tmp_path, demo_checkpoint, kind):
    """In a subprocess: a FIFO must not hang the run (the timeout would fail the test)."""
    src = write_crops(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    if kind == "folder":
        (out / "results.jsonl").mkdir()
    else:
        os.mkfifo(out / "results.jsonl")
    env = {k: v for k, v in os.environ.items() if k != "PULSE_CHECKPOINT"}
    done = subprocess.run([os.sys.executable, "-m", "pulse_cli", "upsample", str(src), str(out), "--checkpoint",
                           str(demo_checkpoint), *FAST], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert "results.jsonl" in line and ("folder" if kind == "folder" else "FIFO") in line
    assert "remove or rename it" in line


def test_reading_records_never_waits_on_a_fifo(tmp_path):
    from pulse_cli.files.atomic import JsonlTail

    os.mkfifo(tmp_path / "results.jsonl")
    with pytest.raises(OSError, match="FIFO"):
        JsonlTail(tmp_path / "results.jsonl").new_lines()


# --- 6: an unusable claims folder ----------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["a file", "a claim that is a folder", "read-only"])
def test_an_unusable_claims_folder_is_a_usage_error_before_the_model_loads(runner, tmp_path, demo_checkpoint,
                                                                          monkeypatch, damage):
    from pulse_cli.files.claims import claim_path

    src = write_crops(tmp_path / "in", 2)
    out = tmp_path / "out"
    claims = out / ".claims"
    mounted = False
    if damage == "a file":
        out.mkdir()
        claims.write_text("x")
        expected = "not a folder"
    elif damage == "a claim that is a folder":
        claim_path(out, "1.png").mkdir(parents=True)
        expected = "is a folder, not a claim file"
    else:
        claims.mkdir(parents=True)
        if os.geteuid() == 0:
            mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(claims)],
                                     capture_output=True).returncode == 0
        if not mounted:
            if os.geteuid() == 0:
                pytest.skip("root without mount: a read-only folder stays writable")
            claims.chmod(0o500)
        expected = "not writable"
    no_model_loading(monkeypatch)
    try:
        result = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST)
    finally:
        if mounted:
            subprocess.run(["umount", str(claims)], check=False)
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result.stderr)
    assert ".claims" in line and expected in line
    assert not (out / "results.jsonl").exists()


# --- 4: non-finite checkpoints and images --------------------------------------------------------------------


def _copy_checkpoint(demo_checkpoint: Path, folder: Path) -> Path:
    folder.mkdir()
    for name in ("synthesis.pt", "mapping.pt", "gaussian_fit.pt"):
        (folder / name).write_bytes((demo_checkpoint.parent / name).read_bytes())
    return folder / "synthesis.pt"


@pytest.mark.parametrize("where", ["synthesis", "mapping", "gaussian fit std"])
def test_a_checkpoint_with_one_non_finite_value_is_refused_at_load(runner, tmp_path, demo_checkpoint, where):
    from helpers import load_pt, save_tensor_file

    checkpoint = _copy_checkpoint(demo_checkpoint, tmp_path / "ckpt")
    name = {"synthesis": "synthesis.pt", "mapping": "mapping.pt", "gaussian fit std": "gaussian_fit.pt"}[where]
    data = load_pt(checkpoint.parent / name)
    key = "std" if where == "gaussian fit std" else next(k for k, v in data.items() if v.is_floating_point())
    data[key] = data[key].clone()
    data[key].view(-1)[0] = float("inf") if where == "gaussian fit std" else float("nan")
    save_tensor_file(data, checkpoint.parent / name)
    src = write_crops(tmp_path / "in", 1)
    result = upsample(runner, src, tmp_path / "out", "--checkpoint", checkpoint, *FAST)
    assert result.exit_code == 2, result.stderr
    assert "non-finite values" in one_error_line(result.stderr)
    assert not (tmp_path / "out" / "0.png.png").exists()


def test_the_finite_check_refuses_nan_and_infinity_but_not_large_finite_values(tmp_path):
    """It sums each tensor first (cheap); a sum that overflows on finite values must not refuse them."""
    import torch

    from pulse_cli.checkpoints.latent_stats import check_finite
    from pulse_cli.checkpoints.loading import CheckpointError

    check_finite([("large", torch.full((8,), 3e38)), ("half", torch.full((8,), 6e4, dtype=torch.float16)),
                  ("counts", torch.arange(5))], tmp_path)
    for bad in (float("nan"), float("inf"), -float("inf")):
        tensor = torch.ones(7)
        tensor[3] = bad
        with pytest.raises(CheckpointError, match="'?w'? holds non-finite values"):
            check_finite([("w", tensor)], tmp_path)


def test_a_search_whose_images_turn_non_finite_fails_that_input_not_a_black_result(runner, tmp_path,
                                                                                   demo_checkpoint, monkeypatch):
    """A generator that yields NaN (a finite checkpoint can overflow too): the input fails with the reason,
    no PNG is written or recorded, and a rerun does not skip it."""
    import torch

    import pulse_cli.engine as engine_module

    real = engine_module.load_generator

    def poisoned(*args, **kwargs):
        generator = real(*args, **kwargs)
        with torch.no_grad():
            next(p for p in generator.parameters() if p.ndim > 1).fill_(float("nan"))
        return generator

    monkeypatch.setattr(engine_module, "load_generator", poisoned)
    src = write_crops(tmp_path / "in", 2)
    out = tmp_path / "out"
    for _ in range(2):
        result = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST)
        assert result.exit_code == 1, result.stderr
        assert "Traceback" not in result.stderr
    records = strict_lines(out / "results.jsonl")
    assert [r["status"] for r in records] == ["failed"] * 4
    assert all("non-finite values" in r["error"] for r in records)
    assert not list(out.glob("*.png"))


# --- 7: pulse render's edges ---------------------------------------------------------------------------------


@pytest.fixture()
def saved_latents(runner, tmp_path, demo_checkpoint) -> Path:
    src = write_crops(tmp_path / "in", 1)
    assert upsample(runner, src, tmp_path / "out", "--checkpoint", demo_checkpoint, *FAST,
                    "--save-latents").exit_code == 0
    return tmp_path / "out" / "0.png.latents.safetensors"


def _render(*args):
    return CliRunner().invoke(app, ["render", *map(str, args)])


@pytest.mark.parametrize("name", ["x", "x.safetensors", "x.jpg"])
def test_render_to_a_name_that_is_not_png_is_one_line(tmp_path, saved_latents, name):
    """pulse render writes PNG only (the format that keeps the synthetic-image label)."""
    result = _render(saved_latents, tmp_path / name)
    assert result.exit_code == 2
    assert "name it *.png" in one_error_line(result.stderr)
    assert not (tmp_path / name).exists()


def _rewrite_latents(path: Path, change) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    changed = path.with_name(f"changed.{path.name}")
    save_file({k: change(k, v) for k, v in tensors.items()}, str(changed), metadata=metadata)
    return changed


@pytest.mark.parametrize("dtype", ["float16", "float64", "int64", "nan"])
def test_render_reads_latents_of_any_float_type_and_refuses_the_rest_in_one_line(tmp_path, saved_latents, dtype):
    import numpy as np
    import torch
    from PIL import Image

    if dtype == "nan":
        latents = _rewrite_latents(saved_latents, lambda k, v: torch.full_like(v, float("nan")) if k == "ws" else v)
    else:
        latents = _rewrite_latents(saved_latents, lambda k, v: v.to(getattr(torch, dtype)))
    result = _render(latents, tmp_path / "again.png")
    if dtype in ("int64", "nan"):
        assert result.exit_code == 2, result.stderr
        assert ("int64" if dtype == "int64" else "non-finite") in one_error_line(result.stderr)
        assert not (tmp_path / "again.png").exists()
        return
    assert result.exit_code == 0, result.stderr
    if dtype == "float64":  # float32 values widened: the very same image
        assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")),
                              np.asarray(Image.open(saved_latents.parent / "0.png.png")))


def test_render_refuses_a_generator_that_produces_non_finite_values(tmp_path, saved_latents, monkeypatch):
    import torch

    import pulse_cli.run.render as render_module

    real = render_module.load_networks

    def poisoned(path):
        loaded = real(path)
        with torch.no_grad():
            next(p for p in loaded.generator.parameters() if p.ndim > 1).fill_(float("nan"))
        return loaded

    monkeypatch.setattr(render_module, "load_networks", poisoned)
    result = _render(saved_latents, tmp_path / "again.png")
    assert result.exit_code == 2
    assert "non-finite values" in one_error_line(result.stderr)
    assert not (tmp_path / "again.png").exists()


# --- 8: shard indices from arguments and schedulers ----------------------------------------------------------


@pytest.mark.parametrize(("shard", "env", "named"), [
    ("auto/abc", {"SLURM_ARRAY_TASK_ID": "1"}, "shard count"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "three", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "x"}, "SLURM_ARRAY_TASK_COUNT"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "x", "SLURM_ARRAY_TASK_COUNT": "4"},
     "SLURM_ARRAY_TASK_MIN"),
    ("auto/4", {"JOB_COMPLETION_INDEX": "first"}, "JOB_COMPLETION_INDEX"),
])
def test_shard_values_from_arguments_and_the_environment_are_one_line_errors(runner, tmp_path, demo_checkpoint,
                                                                            monkeypatch, shard, env, named):
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX",
                 "PULSE_SHARD_COUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    no_model_loading(monkeypatch)
    src = write_crops(tmp_path / "in", 1)
    result = upsample(runner, src, tmp_path / "out", "--checkpoint", demo_checkpoint, *FAST, "--shard", shard)
    assert result.exit_code == 2, result.stderr
    assert named in one_error_line(result.stderr)


# --- 9: a checksum record that is not a file -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_verify_with_a_record_that_is_not_a_file_says_bad_record(tmp_path, kind):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"weights")
    record = tmp_path / "model.safetensors.sha256"
    if kind == "folder":
        record.mkdir()
    else:
        os.mkfifo(record)
    done = subprocess.run([os.sys.executable, "-m", "pulse_cli", "weights", "verify", str(target)],
                          capture_output=True, text=True, timeout=60)  # a FIFO must not hang it
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.startswith("BAD RECORD") and one_error_line(done.stderr)


def test_verify_reads_every_line_of_a_record(tmp_path):
    from pulse_cli.weights.download import read_record

    target = tmp_path / "model.bin"
    target.write_bytes(b"weights")
    a, b = "a" * 64, "b" * 64
    record = tmp_path / "model.bin.sha256"
    record.write_text(f"{a}  model.bin\n{b}  model.bin\n")  # two digests for one file: which is it?
    with pytest.raises(ValueError, match="garbled"):
        read_record(target)
    record.write_text(f"{b}  other.bin\n{a}  model.bin\n")  # sha256sum's record of several files
    assert read_record(target) == a
    record.write_text(f"{a}  model.bin\n")
    assert read_record(target) == a


# --- 10: one image inside OUT --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["directly", "through a link"])
def test_a_single_image_inside_out_is_refused(runner, tmp_path, demo_checkpoint, monkeypatch, how):
    out = tmp_path / "out"
    write_crops(out, 1, name="a.png.png")
    image = out / "a.png.png"
    if how == "through a link":
        (tmp_path / "elsewhere.png").symlink_to(image)
        image = tmp_path / "elsewhere.png"
    no_model_loading(monkeypatch)
    result = upsample(runner, image, out, "--checkpoint", demo_checkpoint, *FAST)
    assert result.exit_code == 2
    assert "inside the output folder" in one_error_line(result.stderr)
    assert sorted(p.name for p in out.iterdir()) == ["a.png.png"]


# --- 11: convert never overwrites what it reads ---------------------------------------------------------------


@pytest.mark.parametrize("companion", ["mapping.pt", "gaussian_fit.pt"])
def test_convert_refuses_to_overwrite_a_companion_of_its_source(runner, tmp_path, demo_checkpoint, companion):
    checkpoint = _copy_checkpoint(demo_checkpoint, tmp_path / "gen")
    before = (checkpoint.parent / companion).read_bytes()
    result = runner.invoke(app, ["weights", "convert", str(checkpoint), str(checkpoint.parent / companion),
                                 "--overwrite", "--latent-samples", "64"])
    assert result.exit_code == 2, result.stderr
    assert "refusing to overwrite the source's" in one_error_line(result.stderr)
    assert (checkpoint.parent / companion).read_bytes() == before
    again = upsample(runner, write_crops(tmp_path / "in", 1), tmp_path / "out", "--checkpoint", checkpoint, *FAST)
    assert again.exit_code == 0, again.stderr


# --- the smaller ones ----------------------------------------------------------------------------------------


def test_a_name_with_a_newline_keeps_its_done_line_whole(runner, tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 1, name="a\nb.png")
    result = upsample(runner, src, tmp_path / "out", "--checkpoint", demo_checkpoint, *FAST)
    assert result.exit_code == 0, result.stderr
    (done,) = [line for line in result.stderr.splitlines() if line.startswith("done ")]
    assert done.startswith("done a\\nb.png: ")
    assert not any(line.startswith("b.png") for line in result.stderr.splitlines())


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_checkpoint_that_is_a_fifo_or_a_device_is_named_as_such(runner, tmp_path, monkeypatch, kind):
    if kind == "fifo":
        checkpoint = tmp_path / "model.pt"
        os.mkfifo(checkpoint)
    else:
        checkpoint = Path("/dev/zero")
    no_model_loading(monkeypatch)
    result = upsample(runner, write_crops(tmp_path / "in", 1), tmp_path / "out", "--checkpoint", checkpoint, *FAST)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert ("FIFO" if kind == "fifo" else "device") in line and "does not exist" not in line


def test_a_checkpoint_file_named_as_a_fifo_is_refused_by_the_loader_too(tmp_path):
    from pulse_cli.checkpoints.loading import CheckpointError, load_networks

    os.mkfifo(tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="FIFO, not a checkpoint file"):
        load_networks(tmp_path / "model.pt")


def test_a_safetensors_whose_metadata_claims_another_resolution_is_refused(tmp_path, demo_checkpoint):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from pulse_cli.checkpoints.loading import CheckpointError, convert_checkpoint, load_networks

    converted = convert_checkpoint(demo_checkpoint, tmp_path / "demo.safetensors", samples=64)
    with safe_open(str(converted), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    assert metadata["resolution"] == "128"
    save_file(tensors, str(tmp_path / "claims-1024.safetensors"), metadata={**metadata, "resolution": "1024"})
    with pytest.raises(CheckpointError, match="metadata says resolution 1024 but the tensors make 128"):
        load_networks(tmp_path / "claims-1024.safetensors")
    assert load_networks(converted).generator.resolution == 128


@pytest.mark.parametrize("option", [["--steps", "0"], ["--samples", "0"], ["--eps", "nan"], ["--bogus"],
                                    ["--batch-size"]])
def test_bad_arguments_are_one_error_line_not_a_box(runner, tmp_path, demo_checkpoint, option):
    result = upsample(runner, write_crops(tmp_path / "in", 1), tmp_path / "out", "--checkpoint", demo_checkpoint,
                      *option)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert option[0] in result.stderr and "╭" not in result.stderr


def test_a_rerun_with_another_checkpoint_says_so(runner, tmp_path, demo_checkpoint):
    """Another path is judged by content when the records hold the checkpoint's sha256: a copy elsewhere is the
    same model. (The same path is taken as the same model, unhashed: see test_reliability.py.)"""
    from pulse_cli.checkpoints.demo import write_demo_checkpoint

    src = write_crops(tmp_path / "in", 1)
    out = tmp_path / "out"
    mine = _copy_checkpoint(demo_checkpoint, tmp_path / "mine")
    assert upsample(runner, src, out, "--checkpoint", mine, *FAST).exit_code == 0
    same_folder = upsample(runner, src, out, "--checkpoint", mine.parent, *FAST)
    assert same_folder.exit_code == 0 and "other options" not in same_folder.stderr
    same_bytes = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST)
    assert same_bytes.exit_code == 0 and "other options" not in same_bytes.stderr
    other = write_demo_checkpoint(tmp_path / "other", seed=1)
    result = upsample(runner, src, out, "--checkpoint", other, *FAST)
    assert result.exit_code == 0
    assert "1 done input(s) were made with other options (checkpoint)" in result.stderr


def test_sigterm_while_torch_loads_exits_143_with_its_line(tmp_path, demo_checkpoint):
    import signal
    import time

    src = write_crops(tmp_path / "in", 1)
    env = {k: v for k, v in os.environ.items() if k != "PULSE_CHECKPOINT"}
    env["PULSE_HOME"] = str(tmp_path / "home")
    process = subprocess.Popen([os.sys.executable, "-m", "pulse_cli", "upsample", str(src), str(tmp_path / "out"),
                                "--checkpoint", str(demo_checkpoint), *FAST], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    maps = Path(f"/proc/{process.pid}/maps")
    while "libtorch" not in maps.read_text():  # the command has started importing torch
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr.decode()
    assert b"Traceback" not in stderr and b"terminated: " in stderr and b"rerun the same command" in stderr
