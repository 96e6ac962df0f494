"""The contract pipelines rely on: one true record per input per run, nothing lost or half-written, exact exit
codes, no traceback — under bad numbers, odd names, full disks, signals and kills at any moment.

Each test reproduces a way the contract was once broken (see the pipeline-reliability issue's table).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import one_error_line, strict_lines, write_crops
from PIL import Image
from typer.testing import CliRunner

from pulse_cli.cli import app
from pulse_cli.run.disagreement import MAP_LINE

FAST = ["--steps", "3", "--device", "cpu"]








def upsample(runner: CliRunner, *args):
    return runner.invoke(app, ["upsample", *map(str, args)])


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.tmp")]


# --- IN and OUT ---------------------------------------------------------------------------------------------


def test_one_image_as_input_is_processed(runner, tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 2)
    result = upsample(runner, src / "1.png", tmp_path / "out", "--checkpoint", demo_checkpoint, *FAST)
    assert result.exit_code == 0, result.stderr
    (record,) = strict_lines(tmp_path / "out" / "results.jsonl")
    assert record["input"] == "1.png" and record["status"] in ("ok", "not_converged")
    assert (tmp_path / "out" / "1.png.png").is_file() and not (tmp_path / "out" / "0.png.png").exists()


@pytest.mark.parametrize("layout", ["not an image", "out is in", "in inside out"])
def test_inputs_and_outputs_that_cannot_work_are_usage_errors(runner, tmp_path, demo_checkpoint, layout):
    src = write_crops(tmp_path / "in", 1)
    if layout == "not an image":
        (tmp_path / "notes.txt").write_text("hello")
        args = [tmp_path / "notes.txt", tmp_path / "out"]
    elif layout == "out is in":
        args = [src, src]
    else:
        args = [tmp_path / "out" / "in", tmp_path / "out"]
        write_crops(tmp_path / "out" / "in", 1)
    result = upsample(runner, *args, "--checkpoint", demo_checkpoint, *FAST)
    assert result.exit_code == 2
    assert "error:" in one_error_line(result.stderr)
    assert not list(src.glob("*.png.png"))


def test_out_inside_in_is_never_read_as_input(runner, tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 1)
    for _ in range(2):
        result = upsample(runner, src, src / "out", "--checkpoint", demo_checkpoint, *FAST)
        assert result.exit_code == 0, result.stderr
    assert not list((src / "out").glob("*.png.png.png"))
    assert [r["input"] for r in strict_lines(src / "out" / "results.jsonl")] == ["0.png", "0.png"]


def test_tool_files_never_collide_with_mirrored_inputs(runner, tmp_path, demo_checkpoint):
    """Input folders named like the tool's own (sheets/, logs/, frames/) keep their results apart."""
    src = tmp_path / "in"
    for sub in ("", "sheets", "logs", "frames"):
        write_crops(src / sub, 1)
        (src / sub / "0.png").rename(src / sub / "z.png")
    out = tmp_path / "out"
    result = upsample(runner, src, out, "-r", "--sheet", "--save-every", "2", "--checkpoint", demo_checkpoint,
                      *FAST)
    assert result.exit_code == 0, result.stderr
    written = {r["input"]: r for r in strict_lines(out / "results.jsonl")}
    assert set(written) == {"z.png", "sheets/z.png", "logs/z.png", "frames/z.png"}
    for rel in written:
        with Image.open(out / f"{rel}.png") as image:
            assert image.size == (128, 128)  # a result, not a sheet
        with Image.open(out / "sheets" / f"{rel}.sheet.png") as sheet:
            assert sheet.size != (128, 128)
        assert (out / "logs" / f"{rel}.jsonl").is_file()
    rerun = upsample(runner, src, out, "-r", "--sheet", "--checkpoint", demo_checkpoint, *FAST)
    assert rerun.exit_code == 0
    assert [r["status"] for r in strict_lines(out / "results.jsonl")[4:]] == ["skipped"] * 4


# --- numbers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", [
    ["--eps", "inf"], ["--eps", "1e38"], ["--eps", "1e300"], ["--eps", "nan"], ["--lr", "inf"], ["--lr", "nan"],
    ["--lr", "0"], ["--loss", "nan*L2"], ["--loss", "inf*L2"], ["--loss", "1e400*L2"], ["--loss", "-5*L2"],
    ["--loss", "0*L2"], ["--steps", "0"], ["--samples", "0"], ["--save-every", "0"], ["--steps", "10000000"],
])
def test_bad_numbers_are_usage_errors_before_the_model_loads(runner, tmp_path, demo_checkpoint, monkeypatch,
                                                             option):
    import pulse_cli.engine as engine_module

    def no_loading(*args, **kwargs):
        raise AssertionError("model loaded before the numbers were checked")

    monkeypatch.setattr(engine_module, "load_generator", no_loading)
    src = write_crops(tmp_path / "in", 1)
    result = upsample(runner, src, tmp_path / "out", "--checkpoint", demo_checkpoint, *FAST, *option)
    assert result.exit_code == 2, (option, result.stderr)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_options_that_depend_on_the_generator_are_checked_before_any_search(runner, tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 1)
    for option in (["--trainable-noise-layers", "99"], ["--bad-noise-layers", "40"]):
        result = upsample(runner, src, tmp_path / "out", "--checkpoint", demo_checkpoint, *FAST, *option)
        assert result.exit_code == 2, result.stderr
        assert "12 noise layers" in one_error_line(result.stderr)
        assert not (tmp_path / "out" / "results.jsonl").exists()


# --- names --------------------------------------------------------------------------------------------------


def test_file_names_that_are_not_utf8_are_processed_and_recorded_losslessly(runner, tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 2)
    odd = os.fsencode(src) + b"/caf\xe9.png"  # Latin-1 bytes: not valid UTF-8
    os.rename(os.fsencode(src / "0.png"), odd)
    result = upsample(runner, src, tmp_path / "out", "--checkpoint", demo_checkpoint, *FAST)
    assert result.exit_code == 0, result.stderr
    records = strict_lines(tmp_path / "out" / "results.jsonl")
    assert sorted(os.fsencode(r["input"]) for r in records) == [b"1.png", b"caf\xe9.png"]
    assert all(r["status"] in ("ok", "not_converged") for r in records)
    assert os.path.isfile(os.fsencode(tmp_path / "out") + b"/caf\xe9.png.png")


# --- caches, disks, records ---------------------------------------------------------------------------------


@pytest.mark.parametrize("home", ["a file", "read-only"])
def test_an_unusable_cache_folder_is_a_warning(tmp_path, demo_checkpoint, monkeypatch, home):
    import pulse_cli.checkpoints.loading as loading
    from pulse_cli.checkpoints.latent_stats import compute_latent_stats

    if home == "read-only" and os.geteuid() == 0:
        pytest.skip("root can write to read-only folders")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    for name in ("synthesis.pt", "mapping.pt"):  # no gaussian_fit.pt: statistics must be computed
        (checkpoint / name).write_bytes((demo_checkpoint.parent / name).read_bytes())
    # the statistics themselves are not under test: a few samples instead of PULSE's million
    monkeypatch.setattr(loading, "compute_latent_stats",
                        lambda mapping, z_dim, **kw: compute_latent_stats(mapping, z_dim, samples=2048))
    pulse_home = tmp_path / "home"
    if home == "a file":
        pulse_home.write_text("not a folder")
    else:
        pulse_home.mkdir(mode=0o500)
    monkeypatch.setenv("PULSE_HOME", str(pulse_home))
    src = write_crops(tmp_path / "in", 1)
    result = CliRunner().invoke(app, ["upsample", str(src), str(tmp_path / "out"), "--checkpoint",
                                      str(checkpoint / "synthesis.pt"), *FAST])
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr and "could not cache the latent statistics" in result.stderr


def test_a_result_image_without_its_record_is_redone(runner, tmp_path, demo_checkpoint):
    """A run killed after writing an input's PNG but before its record: the rerun redoes it and records it."""
    src = write_crops(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST).exit_code == 0
    first = strict_lines(out / "results.jsonl")
    kept = [r for r in first if r["input"] == "0.png"]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))  # 1.png's record lost
    before = np.asarray(Image.open(out / "1.png.png"))
    result = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST)
    assert result.exit_code == 0
    rerun = {r["input"]: r for r in strict_lines(out / "results.jsonl")[1:]}
    assert rerun["0.png"]["status"] == "skipped" and rerun["0.png"]["worst_sample_l2"] == kept[0]["worst_sample_l2"]
    assert rerun["1.png"]["status"] in ("ok", "not_converged") and rerun["1.png"]["worst_sample_l2"] is not None
    assert np.array_equal(np.asarray(Image.open(out / "1.png.png")), before)  # same seed, same face


def test_failed_records_list_no_files(runner, tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 1)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = upsample(runner, src, tmp_path / "out", "--checkpoint", demo_checkpoint, *FAST)
    assert result.exit_code == 1
    failed = [r for r in strict_lines(tmp_path / "out" / "results.jsonl") if r["status"] == "failed"]
    assert [(r["input"], r["outputs"], r["logs"]) for r in failed] == [("broken.png", [], [])]


def test_strict_counts_earlier_results_and_says_why(runner, tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 2)
    out = tmp_path / "out"
    args = [src, out, "--checkpoint", demo_checkpoint, *FAST, "--eps", "0", "--strict"]  # nothing meets eps 0
    first = upsample(runner, *args)
    assert first.exit_code == 1
    assert "2 input(s) did not reach eps" in one_error_line(first.stderr)
    again = upsample(runner, *args)  # now both are skipped: still not converged
    assert again.exit_code == 1
    assert "2 input(s) did not reach eps" in one_error_line(again.stderr)
    assert [r["earlier_status"] for r in strict_lines(out / "results.jsonl")[2:]] == ["not_converged"] * 2
    assert upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST, "--eps", "0").exit_code == 0


def test_a_rerun_with_other_options_says_so(runner, tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST).exit_code == 0
    result = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST, "--loss", "100*L2", "--seed", "3")
    assert result.exit_code == 0
    assert "2 done input(s) were made with other options (loss, seed)" in result.stderr
    assert "--overwrite" in result.stderr
    quiet_same = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST)
    assert "other options" not in quiet_same.stderr


def _full_disk(monkeypatch, after_bytes: int) -> None:
    """Make every write past `after_bytes` in total fail with ENOSPC, as a full disk does."""
    import errno

    import pulse_cli.files.atomic as atomic

    real_write = os.write
    budget = {"left": after_bytes}

    def write(fd, data):
        if budget["left"] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        chunk = bytes(data[: budget["left"]])
        budget["left"] -= len(chunk)
        return real_write(fd, chunk)

    monkeypatch.setattr(atomic.os, "write", write)


def test_a_full_disk_is_one_line_and_loses_nothing(runner, tmp_path, demo_checkpoint, monkeypatch):
    """On a real tmpfs when the tests run as root (CI), else with ENOSPC injected into every write."""
    src = write_crops(tmp_path / "in", 4)
    out = tmp_path / "out"
    out.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(out)],
                                 capture_output=True).returncode == 0
    if not mounted:
        _full_disk(monkeypatch, after_bytes=120_000)
    try:
        result = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST, "--save-latents")
        assert result.exit_code == 1
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert errors and all("No space left on device" in line and str(out) in line for line in errors)
        records = strict_lines(out / "results.jsonl") if (out / "results.jsonl").exists() else []
        for record in records:  # every record is true: what it lists exists
            assert all((out / name).is_file() for name in record["outputs"] + record["logs"])
        assert not temp_files(out)
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=20m", str(out)], check=True)
        else:
            monkeypatch.undo()
        resumed = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST, "--save-latents")
        assert resumed.exit_code == 0, resumed.stderr
        latest = {r["input"]: r for r in strict_lines(out / "results.jsonl")}
        assert set(latest) == {"0.png", "1.png", "2.png", "3.png"}
        assert all(r["status"] in ("ok", "not_converged", "skipped") for r in latest.values())
        assert not temp_files(out)
    finally:
        if mounted:
            subprocess.run(["umount", str(out)], check=False)


# --- processes: signals, kills, redirected stderr -----------------------------------------------------------


def _command(src: Path, out: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pulse_cli", "upsample", str(src), str(out), "--checkpoint", str(checkpoint),
            "--device", "cpu", *extra]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PULSE_CHECKPOINT"}
    env["PULSE_HOME"] = str(tmp_path / "home")
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_redirected_stderr_gets_plain_lines_not_carriage_returns(tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 2)
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        done = subprocess.run(_command(src, tmp_path / "out", demo_checkpoint, "--steps", "3"),
                              stderr=stderr, stdout=subprocess.PIPE, env=_env(tmp_path), timeout=120)
    assert done.returncode == 0
    text = log.read_text()
    assert "\r" not in text
    assert [line.split(":")[0] for line in text.splitlines() if line.startswith("done ")] == ["done 0.png",
                                                                                              "done 1.png"]


def test_sigterm_stops_like_ctrl_c_with_exit_143(tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 3)
    out = tmp_path / "out"
    process = subprocess.Popen(_command(src, out, demo_checkpoint, "--steps", "400", "--save-every", "1"),
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=_env(tmp_path))
    deadline = time.monotonic() + 90
    while not (out / "frames" / "0.png" / "step-0002.png").exists():  # the search is running
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr.decode()
    assert b"Traceback" not in stderr and b"rerun the same command to resume" in stderr
    assert not temp_files(out)
    # frames are written as the search makes them: those of the stopped search are there
    assert len(list((out / "frames" / "0.png").glob("step-*.png"))) >= 3


@pytest.mark.slow
def test_killed_at_random_moments_a_rerun_finishes_everything(tmp_path, demo_checkpoint):
    """SIGKILL at many random moments (as a power cut would), each followed by nothing but the same command:
    the file of records is never torn for readers, and the final rerun finishes every input exactly once with
    the very images an uninterrupted run makes, leaving no temporary file behind."""
    src = write_crops(tmp_path / "in", 4)
    args = ("--steps", "3", "--save-latents", "--sheet")
    reference = tmp_path / "reference"
    assert subprocess.run(_command(src, reference, demo_checkpoint, *args), env=_env(tmp_path),
                          capture_output=True, timeout=180).returncode == 0
    full_run = max(1.0, _time_one_run(src, tmp_path / "timing", demo_checkpoint, args, _env(tmp_path)))
    out = tmp_path / "out"
    rng = random.Random(1234)
    kills = 0
    for _ in range(int(os.environ.get("PULSE_KILL_TEST_ROUNDS", "24"))):
        process = subprocess.Popen(_command(src, out, demo_checkpoint, *args), env=_env(tmp_path),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, full_run))
        if process.poll() is None:
            process.kill()
            kills += 1
        process.wait(timeout=60)
        if (out / "results.jsonl").exists():  # readers never fail, whatever the moment of the kill
            text = (out / "results.jsonl").read_text("ascii")
            whole = text[: text.rfind("\n") + 1]
            for line in whole.splitlines():
                json.loads(line)
    assert kills >= 8, "the kills should land during runs"
    final = subprocess.run(_command(src, out, demo_checkpoint, *args), env=_env(tmp_path), capture_output=True,
                           timeout=180)
    assert final.returncode == 0, final.stderr.decode()
    records = strict_lines(out / "results.jsonl")
    last_run = records[-4:]
    assert sorted(r["input"] for r in last_run) == ["0.png", "1.png", "2.png", "3.png"]
    for record in last_run:
        assert record["status"] in ("ok", "not_converged", "skipped")
        for name in record["outputs"] + record["logs"]:
            assert (out / name).is_file()
        rel = record["input"]
        assert np.array_equal(np.asarray(Image.open(out / f"{rel}.png")),
                              np.asarray(Image.open(reference / f"{rel}.png")))
        assert (out / f"{rel}.latents.safetensors").is_file() and (out / "sheets" / f"{rel}.sheet.png").is_file()
    assert not temp_files(out)


def _time_one_run(src, out, checkpoint, args, env) -> float:
    started = time.monotonic()
    subprocess.run(_command(src, out, checkpoint, *args), env=env, capture_output=True, timeout=180, check=True)
    return time.monotonic() - started


# --- pulse render finds what the run used ---------------------------------------------------------------------


def _render(latents: Path, out: Path, *extra: str):
    return CliRunner().invoke(app, ["render", str(latents), str(out), *extra])


def test_render_works_from_another_folder_and_ignores_pulse_checkpoint(runner, tmp_path, demo_checkpoint,
                                                                        monkeypatch):
    # the run names its checkpoint by a path relative to where it started
    local = tmp_path / "weights"
    local.mkdir()
    for name in ("synthesis.pt", "mapping.pt", "gaussian_fit.pt"):
        (local / name).write_bytes((demo_checkpoint.parent / name).read_bytes())
    src = write_crops(tmp_path / "in", 1)
    result = upsample(runner, "in", "out", "--checkpoint", "weights/synthesis.pt", *FAST, "--save-latents")
    assert result.exit_code == 0, result.stderr
    (record,) = strict_lines(tmp_path / "out" / "results.jsonl")
    assert record["checkpoint"] == str(local / "synthesis.pt")  # recorded absolute
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    other = tmp_path / "other"
    from pulse_cli.checkpoints.demo import write_demo_checkpoint

    monkeypatch.setenv("PULSE_CHECKPOINT", str(write_demo_checkpoint(other, seed=5)))  # must not win
    rendered = _render(tmp_path / "out" / "0.png.latents.safetensors", elsewhere / "again.png")
    assert rendered.exit_code == 0, rendered.stderr
    assert np.array_equal(np.asarray(Image.open(elsewhere / "again.png")),
                          np.asarray(Image.open(tmp_path / "out" / "0.png.png")))
    assert src.is_dir()


def test_render_finds_a_converted_checkpoint_by_the_recorded_sha256(runner, tmp_path, demo_checkpoint,
                                                                    monkeypatch):
    from pulse_cli.checkpoints.loading import convert_checkpoint

    local = tmp_path / "weights" / "pulse"
    local.mkdir(parents=True)
    for name in ("synthesis.pt", "mapping.pt", "gaussian_fit.pt"):
        (local / name).write_bytes((demo_checkpoint.parent / name).read_bytes())
    src = write_crops(tmp_path / "in", 1)
    assert upsample(runner, src, tmp_path / "out", "--checkpoint", local / "synthesis.pt", *FAST,
                    "--save-latents").exit_code == 0
    # the user converts the checkpoint and deletes the original: the converted file holds the same network
    converted = convert_checkpoint(local / "synthesis.pt", tmp_path / "weights" / "demo.safetensors",
                                   cache_dir=tmp_path / "cache")
    for name in ("synthesis.pt", "mapping.pt", "gaussian_fit.pt"):
        (local / name).unlink()
    rendered = _render(tmp_path / "out" / "0.png.latents.safetensors", tmp_path / "again.png")
    assert rendered.exit_code == 0, rendered.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")),
                          np.asarray(Image.open(tmp_path / "out" / "0.png.png")))
    explicit = _render(tmp_path / "out" / "0.png.latents.safetensors", tmp_path / "again2.png",
                       "--checkpoint", str(converted))
    assert explicit.exit_code == 0, explicit.stderr
    converted.unlink()
    missing = _render(tmp_path / "out" / "0.png.latents.safetensors", tmp_path / "again3.png")
    assert missing.exit_code == 2 and "--checkpoint" in one_error_line(missing.stderr)


# --- honest surfaces --------------------------------------------------------------------------------------------


def test_sheet_headers_say_how_many_results_met_eps(runner, tmp_path, demo_checkpoint, monkeypatch):
    import pulse_cli.run.sheets as sheets

    titles: list[str] = []
    real = sheets.grid_sheet

    def recording(grid, **options):
        titles.append(options["title"])
        return real(grid, **options)

    monkeypatch.setattr(sheets, "grid_sheet", recording)
    src = write_crops(tmp_path / "in", 2)
    result = upsample(runner, src, tmp_path / "out", "--checkpoint", demo_checkpoint, *FAST, "--eps", "0",
                      "--samples", "2", "--sheet")
    assert result.exit_code == 0
    # two samples: a second line says what their disagreement map shows
    assert titles[:2] == [["0 of 2 met eps. Synthetic faces invented by PULSE; none is the real person.",
                           MAP_LINE]] * 2
    assert titles[2][0].startswith("0 of 2 inputs met eps.") and titles[2][1] == MAP_LINE
    assert not any("each fits" in line for title in titles for line in title)


def test_upsample_help_reads_well_at_80_columns(runner):
    result = CliRunner().invoke(app, ["upsample", "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0
    text = result.stdout
    for panel in ("Model", "Search", "Output", "Transparency", "Performance"):
        assert f"─ {panel} ─" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    for option in ("--trainable-noise-layers", "--bad-noise-layers", "--save-latents", "--stop-at-eps",
                   "--batch-size", "--synthesis", "--gaussian-fit", "--no-metadata"):
        assert option in text, option  # never cut short
    flags = [line for line in text.splitlines() if any(f in line for f in ("--strict", "--sheet", "--quiet"))]
    assert flags and not any("<bool>" in line for line in flags)
    assert "<bool>" not in text  # Typer's own --help flag included
    for command in ([], ["align"], ["render"], ["weights"], ["weights", "download"]):
        other = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "80"})
        assert other.exit_code == 0 and "<bool>" not in other.stdout, command


def test_no_output_name_can_be_taken_twice_whatever_the_inputs_are_called():
    """Every file a run may write, for inputs named to collide with the tool's own files, is distinct."""
    from pathlib import PurePosixPath

    from pulse_cli.files.discovery import output_paths, sheet_path

    names = ["z.png", "sheets/z.png", "sheets/z.png.sheet", "sheet", "sheet-001", "sheet.png", "logs/z.png",
             "logs/z.png.jsonl", "z.png.sample0", "z.png.sample0.png", "frames/z.png/step-0000",
             "frames/z.png/step-0000.png", "z.png.search.gif", "z.png.latents", "z.png.latents.safetensors",
             "results.jsonl", "Z.PNG", "z.png.image", "z.png.image.png", "a.jpg", "a.png"]
    out = Path("/out")
    for samples in (1, 2):
        taken: dict[Path, str] = {out / "results.jsonl": "results", out / "sheet.png": "run sheet",
                                  out / "sheet-001.png": "run sheet page"}
        for name in names:
            rel = PurePosixPath(name)
            files = [sheet_path(out, rel)]
            for k in range(samples):
                paths = output_paths(out, rel, sample=k, samples=samples)
                files += [paths.image, paths.log, paths.latents, paths.animation,
                          *(paths.frames / f"step-{s:04d}.png" for s in range(2))]
            for path in files:
                assert path not in taken, f"{name} and {taken[path]} both write {path}"
                taken[path] = name


def test_a_rerun_with_everything_done_reads_no_checkpoint(runner, tmp_path, demo_checkpoint, monkeypatch):
    """Skipped records repeat the checkpoint recorded earlier: a done folder costs no hashing of the model."""
    import pulse_cli.run.runner as runner_module

    src = write_crops(tmp_path / "in", 2)
    out = tmp_path / "out"
    assert upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST).exit_code == 0

    def no_hashing(path):
        raise AssertionError(f"hashed {path}")

    monkeypatch.setattr(runner_module, "sha256_file", no_hashing)
    again = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST)
    assert again.exit_code == 0, again.stderr
    first, rerun = strict_lines(out / "results.jsonl")[:2], strict_lines(out / "results.jsonl")[2:]
    assert [r["checkpoint_sha256"] for r in rerun] == [r["checkpoint_sha256"] for r in first]
