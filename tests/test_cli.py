"""`pulse upsample` end to end through Typer's CliRunner: exit codes, stdout vs stderr, files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_crop, read_records, write_crops
from PIL import Image
from typer.testing import CliRunner

from pulse_cli.checkpoints.demo import write_demo_checkpoint
from pulse_cli.cli import app

FAST = ["--steps", "4", "--device", "cpu"]


@pytest.fixture
def checkpoint(demo_checkpoint) -> Path:
    return demo_checkpoint






def upsample(runner: CliRunner, *args) -> object:
    return runner.invoke(app, ["upsample", *map(str, args)])




def read_log(path: Path) -> tuple[dict, list[dict]]:
    """(run header, step lines) of a per-image log."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["type"] == "run" and all(line["type"] == "step" for line in lines[1:])
    return lines[0], lines[1:]


def test_help_lists_every_option_with_defaults_and_examples(runner):
    result = runner.invoke(app, ["upsample", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--checkpoint", "--device", "--batch-size", "--seed", "--steps", "--eps", "--loss", "--lr",
                   "--lr-schedule", "--optimizer", "--noise-type", "--trainable-noise-layers",
                   "--bad-noise-layers", "--tile-latent", "--samples", "--recursive", "--overwrite", "--strict",
                   "--quiet", "--json"):
        assert option in result.stdout, option
    assert "100*L2+0.05*GEOCROSS" in result.stdout
    assert "linear1cycledrop" in result.stdout
    assert "Examples" in result.stdout and "pulse upsample crops/ out/" in result.stdout


def test_run_writes_outputs_logs_and_results(runner, tmp_path, checkpoint):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    random_crop(seed=1).save(src / "a.png")
    random_crop(seed=2).save(src / "a.jpg", quality=95)
    random_crop(seed=3).save(src / "sub" / "b.webp")
    (src / "notes.txt").write_text("not an image")
    out = tmp_path / "out"

    result = upsample(runner, src, out, "--checkpoint", checkpoint, "-r", "--batch-size", "2", *FAST)

    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # stdout stays clean for pipelines
    for rel in ("a.png", "a.jpg", "sub/b.webp"):
        image = Image.open(out / f"{rel}.png")
        assert image.size == (128, 128) and image.mode == "RGB"
        header, log = read_log(out / "logs" / f"{rel}.jsonl")
        assert [entry["step"] for entry in log] == [0, 1, 2, 3]
        assert set(log[0]) == {"type", "step", "lr", "loss", "l2", "total"}
        assert header["input"] == rel and header["search"]["steps"] == 4 and header["search"]["lr"] == 0.4
        assert header["checkpoint"] == str(checkpoint) and len(header["input_sha256"]) == 64
        assert header["generator"]["synthesis_path"] == "fast"  # --synthesis auto on a CPU
        assert set(log[0]["loss"]) == {"L2", "GEOCROSS"}
        assert log[0]["total"] == pytest.approx(100 * log[0]["loss"]["L2"] + 0.05 * log[0]["loss"]["GEOCROSS"],
                                                rel=1e-5)
    records = read_records(out)
    assert [r["input"] for r in records] == ["a.jpg", "a.png", "sub/b.webp"]
    for record in records:
        assert record["status"] in ("ok", "not_converged")
        assert record["outputs"] == [record["input"] + ".png"]
        (sample,) = record["samples"]
        assert record["steps_run"] == 4 and 0 <= sample["best_step"] < 4
        assert record["checkpoint"] == str(checkpoint)
        assert len(record["checkpoint_sha256"]) == 64
        assert record["error"] is None and record["seed"] == 0
        header, log = read_log(out / record["logs"][0])
        assert sample["best_l2"] == pytest.approx(log[sample["best_step"]]["l2"])
        assert record["worst_sample_l2"] == record["best_sample_l2"] == sample["best_l2"]  # one sample
        assert header["image_seed"] == record["samples"][0]["image_seed"]
    assert not list(out.rglob("*.tmp"))


def test_json_summary_on_stdout(runner, tmp_path, checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    random_crop().save(src / "x.png")
    result = upsample(runner, src, tmp_path / "out", "--checkpoint", checkpoint, "--json", "--quiet", *FAST)
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["total"] == 1 and summary["ok"] + summary["not_converged"] == 1
    assert summary["failed"] == 0 and summary["skipped"] == 0
    assert result.stderr == ""  # --quiet: nothing but errors


def make_bad_inputs(src: Path) -> dict[str, str]:
    """Bad files and what their one-line error must mention."""
    src.mkdir(parents=True, exist_ok=True)
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (src / "empty.jpg").write_bytes(b"")
    random_crop(16).resize((16, 12)).save(src / "wide.png")
    random_crop(17).save(src / "odd17.png")
    Image.new("RGB", (2048, 2048)).save(src / "huge.png")
    return {"corrupt.png": "corrupt", "empty.jpg": "empty", "wide.png": "square", "odd17.png": "divide",
            "huge.png": "larger"}


def test_each_bad_input_is_a_one_line_error_and_the_run_goes_on(runner, tmp_path, checkpoint):
    src = tmp_path / "in"
    expected = make_bad_inputs(src)
    random_crop().save(src / "good.png")
    Image.fromarray(np.full((16, 16, 4), 200, np.uint8), "RGBA").save(src / "rgba.png")
    random_crop().convert("L").save(src / "grey.png")
    Image.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 250).save(src / "deep16.png")
    (src / "folder.png").mkdir()
    good = (tmp_path / "good.png")
    random_crop().save(good)
    (src / "truncated.png").write_bytes(good.read_bytes()[:200])
    expected["truncated.png"] = "truncated"
    out = tmp_path / "out"

    result = upsample(runner, src, out, "--checkpoint", checkpoint, *FAST)

    assert result.exit_code == 1
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == len(expected)
    for name, word in expected.items():
        line = next(line for line in error_lines if f" {name}: " in line)
        reason = line.split(f" {name}: ", 1)[1]
        assert word in reason.lower(), line
    records = {r["input"]: r for r in read_records(out)}
    assert set(records) == set(expected) | {"good.png", "rgba.png", "grey.png", "deep16.png"}
    for name in expected:
        assert records[name]["status"] == "failed" and records[name]["error"]
        assert not (out / f"{name}.png").exists()
    for name in ("good.png", "rgba.png", "grey.png", "deep16.png"):
        assert records[name]["status"] in ("ok", "not_converged")
        assert (out / f"{name}.png").is_file()


@pytest.mark.parametrize("case", ["missing_in", "out_is_file", "out_under_file", "missing_checkpoint",
                                  "truncated_checkpoint", "bad_loss", "bad_device", "bad_schedule",
                                  "bad_noise_layers", "bad_batch_size", "noise_layer_out_of_range"])
def test_usage_errors_exit_2_with_one_line(runner, tmp_path, checkpoint, case):
    src = tmp_path / "in"
    src.mkdir()
    random_crop().save(src / "a.png")
    out = tmp_path / "out"
    args = [src, out, "--checkpoint", checkpoint, *FAST]
    if case == "missing_in":
        args[0] = tmp_path / "nope"
    elif case == "out_is_file":
        out.write_text("x")
    elif case == "out_under_file":
        (tmp_path / "file").write_text("x")
        args[1] = tmp_path / "file" / "out"
    elif case == "missing_checkpoint":
        args[3] = tmp_path / "missing.pt"
    elif case == "truncated_checkpoint":
        cut = tmp_path / "cut" / "synthesis.pt"
        cut.parent.mkdir()
        data = checkpoint.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        args[3] = cut
    elif case == "bad_loss":
        args += ["--loss", "100*L3"]
    elif case == "bad_device":
        args += ["--device", "tpu"]
    elif case == "bad_schedule":
        args += ["--lr-schedule", "cosine"]
    elif case == "bad_noise_layers":
        args += ["--bad-noise-layers", "x.y"]
    elif case == "bad_batch_size":
        args += ["--batch-size", "0"]
    elif case == "noise_layer_out_of_range":
        args += ["--bad-noise-layers", "17"]  # the demo generator has 12 noise layers

    result = upsample(runner, *args)

    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (out / "results.jsonl").exists()


def test_usage_errors_are_found_before_the_model_loads(runner, tmp_path, checkpoint, monkeypatch):
    import pulse_cli.engine as engine_module

    def no_loading(*args, **kwargs):
        raise AssertionError("model loaded before the arguments were checked")

    monkeypatch.setattr(engine_module, "load_generator", no_loading)
    src = tmp_path / "in"
    src.mkdir()
    random_crop().save(src / "a.png")
    result = upsample(runner, src, tmp_path / "out", "--checkpoint", checkpoint, "--loss", "L2", *FAST)
    assert result.exit_code == 2
    assert "WEIGHT*NAME" in result.stderr


def test_no_checkpoint_anywhere_is_a_usage_error(runner, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    random_crop().save(src / "a.png")
    result = upsample(runner, src, tmp_path / "out", *FAST)
    assert result.exit_code == 2
    assert "no checkpoint found" in result.stderr and "--checkpoint" in result.stderr
    # it says how to get one
    assert "pulse weights download NAME" in result.stderr and "pulse demo-generator" in result.stderr


def test_checkpoint_from_env_and_from_weights_folder(runner, tmp_path, checkpoint, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    random_crop().save(src / "a.png")
    monkeypatch.setenv("PULSE_CHECKPOINT", str(checkpoint))
    result = upsample(runner, src, tmp_path / "out1", *FAST)
    assert result.exit_code == 0, result.stderr
    assert read_records(tmp_path / "out1")[0]["checkpoint"] == str(checkpoint)

    monkeypatch.delenv("PULSE_CHECKPOINT")
    local = tmp_path / "weights" / "demo"  # runner fixture chdir'ed to tmp_path
    write_demo_checkpoint(local)
    (local / "gaussian_fit.pt").write_bytes((checkpoint.parent / "gaussian_fit.pt").read_bytes())
    result = upsample(runner, src, tmp_path / "out2", *FAST)
    assert result.exit_code == 0, result.stderr
    assert "using checkpoint" in result.stderr and "weights" in result.stderr
    assert Path(read_records(tmp_path / "out2")[0]["checkpoint"]).resolve() == (local / "synthesis.pt").resolve()


def test_rerun_skips_done_inputs_and_overwrite_redoes_them(runner, tmp_path, checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    random_crop(seed=1).save(src / "a.png")
    random_crop(seed=2).save(src / "b.png")
    out = tmp_path / "out"
    assert upsample(runner, src, out, "--checkpoint", checkpoint, *FAST).exit_code == 0
    stamp = (out / "a.png.png").stat().st_mtime_ns

    again = upsample(runner, src, out, "--checkpoint", checkpoint, *FAST)
    assert again.exit_code == 0
    assert [r["status"] for r in read_records(out)[2:]] == ["skipped", "skipped"]
    assert (out / "a.png.png").stat().st_mtime_ns == stamp

    redo = upsample(runner, src, out, "--checkpoint", checkpoint, "--overwrite", *FAST)
    assert redo.exit_code == 0
    assert [r["status"] for r in read_records(out)[4:]] != ["skipped", "skipped"]
    assert (out / "a.png.png").stat().st_mtime_ns != stamp


def test_interrupted_run_leaves_no_partial_files_and_resumes(runner, tmp_path, checkpoint, monkeypatch):
    import pulse_cli.search.pulse as search_module

    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        random_crop(seed=k).save(src / f"{k}.png")
    out = tmp_path / "out"
    real_step = search_module.SearchPool.step
    calls = []

    def interrupted_in_second_image(self):
        calls.append(1)
        if len(calls) == 6:  # 4 steps per image, batch of 1: the second image's second step
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(search_module.SearchPool, "step", interrupted_in_second_image)
    result = upsample(runner, src, out, "--checkpoint", checkpoint, *FAST)
    assert result.exit_code == 130
    assert "rerun" in result.stderr
    assert (out / "0.png.png").is_file() and not (out / "1.png.png").exists()
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*.tmp"))

    monkeypatch.setattr(search_module.SearchPool, "step", real_step)
    resumed = upsample(runner, src, out, "--checkpoint", checkpoint, *FAST)
    assert resumed.exit_code == 0
    statuses = {r["input"]: r["status"] for r in read_records(out)[1:]}
    assert statuses["0.png"] == "skipped"
    assert statuses["1.png"] != "skipped" and statuses["2.png"] != "skipped"


def test_a_run_reads_results_jsonl_once(runner, tmp_path, checkpoint, monkeypatch):
    # planning and the run share one index of OUT/results.jsonl (a file of millions of lines is not read twice)
    from pulse_cli.run import plan

    src = write_crops(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert upsample(runner, src, out, "--checkpoint", checkpoint, *FAST).exit_code == 0
    random_crop(seed=3).save(src / "new.png")
    reads = []

    class CountedTail(plan.JsonlTail):
        def __init__(self, path):
            reads.append(Path(path))
            super().__init__(path)

    monkeypatch.setattr(plan, "JsonlTail", CountedTail)
    again = upsample(runner, src, out, "--checkpoint", checkpoint, *FAST)
    assert again.exit_code == 0, again.output
    assert reads == [out / "results.jsonl"]
    assert [(r["input"], r["status"]) for r in read_records(out)[2:4]] == [("0.png", "skipped"), ("1.png", "skipped")]
    assert read_records(out)[4]["input"] == "new.png" and read_records(out)[4]["status"] != "skipped"


def test_not_converged_still_writes_the_best_image_and_strict_fails(runner, tmp_path, checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    random_crop().save(src / "a.png")
    lenient = upsample(runner, src, tmp_path / "out1", "--checkpoint", checkpoint, "--eps", "0", *FAST)
    assert lenient.exit_code == 0
    record = read_records(tmp_path / "out1")[0]
    assert record["status"] == "not_converged"
    assert (tmp_path / "out1" / "a.png.png").is_file()
    _, log = read_log(tmp_path / "out1" / "logs" / "a.png.jsonl")
    assert record["worst_sample_l2"] == min(entry["l2"] for entry in log)

    strict = upsample(runner, src, tmp_path / "out2", "--checkpoint", checkpoint, "--eps", "0", "--strict", *FAST)
    assert strict.exit_code == 1


def test_samples_give_distinct_results_and_seeded_runs_repeat(runner, tmp_path, checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    random_crop().save(src / "a.png")
    for out in ("out1", "out2"):
        result = upsample(runner, src, tmp_path / out, "--checkpoint", checkpoint, "--samples", "2",
                          "--seed", "0", *FAST)
        assert result.exit_code == 0, result.stderr
    first = [np.asarray(Image.open(tmp_path / "out1" / f"a.png.sample{k}.png")) for k in range(2)]
    second = [np.asarray(Image.open(tmp_path / "out2" / f"a.png.sample{k}.png")) for k in range(2)]
    assert not np.array_equal(first[0], first[1])  # two different invented faces
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    record = read_records(tmp_path / "out1")[0]
    assert len(record["samples"]) == 2 and record["samples"][0]["image_seed"] != record["samples"][1]["image_seed"]

    other = upsample(runner, src, tmp_path / "out3", "--checkpoint", checkpoint, "--seed", "1", *FAST)
    assert other.exit_code == 0
    zero = upsample(runner, src, tmp_path / "out4", "--checkpoint", checkpoint, "--seed", "0", *FAST)
    assert zero.exit_code == 0
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "out3" / "a.png.png")),
                              np.asarray(Image.open(tmp_path / "out4" / "a.png.png")))


def test_empty_input_folder_is_not_an_error(runner, tmp_path, checkpoint):
    (tmp_path / "in").mkdir()
    result = upsample(runner, tmp_path / "in", tmp_path / "out", "--checkpoint", checkpoint, *FAST)
    assert result.exit_code == 0
    assert "no images found" in result.stderr


def test_demo_generator_command_is_deterministic(runner, tmp_path):
    for name in ("a", "b"):
        assert runner.invoke(app, ["demo-generator", str(tmp_path / name)]).exit_code == 0
    for file in ("synthesis.pt", "mapping.pt"):
        left = torch.load(tmp_path / "a" / file, weights_only=True)
        right = torch.load(tmp_path / "b" / file, weights_only=True)
        assert left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_module_entry_point_and_help_do_not_import_torch():
    code = ("import sys; from pulse_cli.cli import app; "
            "assert 'torch' not in sys.modules, 'torch imported at CLI import'")
    subprocess.run([sys.executable, "-c", code], check=True)
    result = subprocess.run([sys.executable, "-m", "pulse_cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "upsample" in result.stdout


def test_out_of_memory_splits_the_batch_and_every_input_finishes(runner, tmp_path, checkpoint, monkeypatch):
    import pulse_cli.search.pulse as search_module

    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        random_crop(seed=k).save(src / f"{k}.png")
    real_step = search_module.SearchPool.step

    def oom_when_batched(self):
        if len(self) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_step(self)

    monkeypatch.setattr(search_module.SearchPool, "step", oom_when_batched)
    result = upsample(runner, src, tmp_path / "out", "--checkpoint", checkpoint, "--batch-size", "2", *FAST)
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "out of memory on cpu with a batch of 2: continuing with batches of 1" in result.stderr
    statuses = {r["input"]: r["status"] for r in read_records(tmp_path / "out")}
    assert set(statuses) == {"0.png", "1.png", "2.png"}
    assert set(statuses.values()) <= {"ok", "not_converged"}
    header, _ = read_log(tmp_path / "out" / "logs" / "2.png.jsonl")
    assert header["batch_size"] == 1  # the batch size in force when it ran


def test_out_of_memory_for_one_image_fails_it_with_advice(runner, tmp_path, checkpoint, monkeypatch):
    import pulse_cli.search.pulse as search_module

    src = tmp_path / "in"
    src.mkdir()
    random_crop().save(src / "a.png")

    def always_oom(self):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(search_module.SearchPool, "step", always_oom)
    result = upsample(runner, src, tmp_path / "out", "--checkpoint", checkpoint, *FAST)
    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "a.png" in line and "out of memory" in line and "--device cpu" in line
    (record,) = read_records(tmp_path / "out")
    assert record["status"] == "failed" and record["outputs"] == [] and record["logs"] == []


def test_stop_at_eps_finishes_images_early_and_refills_the_batch(runner, tmp_path, checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    for k in range(3):
        random_crop(seed=k).save(src / f"{k}.png")
    out = tmp_path / "out"
    result = upsample(runner, src, out, "--checkpoint", checkpoint, "--eps", "1", "--stop-at-eps",
                      "--batch-size", "2", *FAST)
    assert result.exit_code == 0, result.stderr
    for record in read_records(out):
        # every iterate meets eps=1 (pixels are in [0, 1]), so each image stops after its first step
        assert record["status"] == "ok" and record["steps_run"] == 1 and record["samples"][0]["best_step"] == 0
        _, log = read_log(out / record["logs"][0])
        assert len(log) == 1


@pytest.mark.numerics  # float results: `make test` runs it with AVX2 and SSE4.1 kernels too
def test_synthesis_path_is_recorded_and_both_paths_agree(runner, tmp_path, checkpoint):
    src = tmp_path / "in"
    src.mkdir()
    random_crop().save(src / "a.png")
    images = {}
    for path in ("fast", "reference"):
        out = tmp_path / path
        result = upsample(runner, src, out, "--checkpoint", checkpoint, "--synthesis", path, "--steps", "1",
                          "--device", "cpu")
        assert result.exit_code == 0, result.stderr
        header, _ = read_log(out / "logs" / "a.png.jsonl")
        assert header["generator"]["synthesis_path"] == path
        images[path] = np.asarray(Image.open(out / "a.png.png"), dtype=np.int16)
    # the same function: one step, so both render the same start (the same seed) and differ by float rounding
    # alone, a level at most in 8 bits. After optimisation steps they need not stay that close on every CPU:
    # their gradients can fall on different sides of a LeakyReLU kink (under SSE4.1 kernels, 3 levels at 4 steps)
    assert np.abs(images["fast"] - images["reference"]).max() <= 1
