"""The reliability contract, third pass: one bad line never blocks a shared OUT, nothing is read or written
through a link out of OUT (issue 28's table, numbered as there).

Each test reproduces one break on real files, links, FIFOs, signals and processes, and fails without its fix.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import one_error_line, random_crop, strict_lines, write_crops
from PIL import Image
from typer.testing import CliRunner

from pulse_cli.cli import app

FAST = ["--steps", "3", "--device", "cpu"]


def upsample(runner: CliRunner, *args):
    return runner.invoke(app, ["upsample", *map(str, args)])


def report(runner: CliRunner, *args):
    return runner.invoke(app, ["report", *map(str, args)])


def warnings_about(stderr: str, name: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:") and name in line]


def page_data(out: Path) -> dict:
    html = (out / "report.html").read_text()
    blob = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(blob)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PULSE_CHECKPOINT"}
    env.update({"PULSE_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", **extra})
    return env


def pulse(*args, tmp_path: Path, **kwargs) -> subprocess.CompletedProcess:
    """`pulse ARGS` in a process of its own (as a pipeline runs it)."""
    return subprocess.run([sys.executable, "-m", "pulse_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=180, env=_env(tmp_path), **kwargs)


@pytest.fixture()
def done_out(runner, tmp_path, demo_checkpoint) -> tuple[Path, Path, list]:
    """IN with two crops and an OUT where both are done: (IN, OUT, the arguments that made it)."""
    src = write_crops(tmp_path / "in", 2)
    out = tmp_path / "out"
    args = [src, out, "--checkpoint", demo_checkpoint, *FAST]
    assert upsample(runner, *args).exit_code == 0
    return src, out, args


def _append(path: Path, text: str) -> None:
    with open(path, "a") as f:
        f.write(text + "\n")


# --- 1, 2, 3: one shape check for every reader of records and logs -----------------------------------------

DEEP = '{"x":' + "[" * 1000 + "]" * 1000 + "}"


def _damage(out: Path, how: str) -> None:
    """One damaged line in results.jsonl and one in a log, as the issue's adversary wrote them."""
    record = strict_lines(out / "results.jsonl")[0]
    if how == "deeply nested":
        _append(out / "results.jsonl", DEEP)
        _append(out / "logs" / "0.png.jsonl", DEEP)
    elif how == "400-digit numbers":
        _append(out / "results.jsonl", json.dumps({**record, "best_l2": int("9" * 400)}))
        _append(out / "results.jsonl", json.dumps({**record, "seconds": -int("9" * 400)}))
        _append(out / "logs" / "0.png.jsonl", json.dumps({"type": "step", "step": 9, "lr": 0.1, "loss": {},
                                                          "l2": int("9" * 400), "total": 1.0}))
    else:  # the shapes `pulse upsample` ignored and `pulse report` crashed on
        for damage in ({"outputs": 5}, {"samples": 7}, {"logs": {"a": 1}}):
            _append(out / "results.jsonl", json.dumps({**record, **damage}))
        _append(out / "logs" / "0.png.jsonl", json.dumps({"type": "step", "step": "x", "loss": 3}))


@pytest.mark.parametrize(("how", "bad_record_lines"), [("deeply nested", 1), ("400-digit numbers", 2),
                                                       ("fields of the wrong shape", 3)])
def test_one_bad_line_costs_one_warning_for_every_reader_of_out(runner, done_out, how, bad_record_lines):
    """1, 2, 3: upsample's planning, summary (--json too) and sheets, upsample --report and pulse report."""
    src, out, args = done_out
    _damage(out, how)
    for _ in range(2):  # and again: nothing else is ever blocked by them
        result = upsample(runner, *args, "--report", "--json", "--sheet")
        assert result.exit_code == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert len(warnings_about(result.stderr, "results.jsonl")) == bad_record_lines
        assert len(warnings_about(result.stderr, "0.png.jsonl")) == 1  # the log, read by --report
        assert json.loads(result.stdout)["skipped"] == 2
        alone = report(runner, out)
        assert alone.exit_code == 0, alone.stderr
        assert len(warnings_about(alone.stderr, "results.jsonl")) == bad_record_lines
        assert len(warnings_about(alone.stderr, "0.png.jsonl")) == 1
    rows = {r["name"]: r for r in page_data(out)["rows"]}
    assert set(rows) == {"0.png", "1.png"} and rows["0.png"]["samples"][0]["curve"]["l2"]


def test_a_line_nested_just_below_the_parsers_limit_is_refused_too(tmp_path):
    """Deep enough to parse, too deep to copy or write again (a skipped record repeats its input's fields)."""
    from pulse_cli.run.records import RecordError, ResultRecord

    record = {"input": "a.png", "status": "ok", "outputs": ["a.png.png"], "search": {"x": json.loads(
        "[" * 500 + "]" * 500)}}
    with pytest.raises(RecordError, match="nested"):
        ResultRecord.from_json(record)
    for value in (float("inf"), float("nan"), 10**400, -(10**400)):
        with pytest.raises(RecordError, match="finite"):
            ResultRecord.from_json({"input": "a", "status": "ok", "best_l2": value})


# --- 5, 6: links inside OUT ------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", ["logs", "frames", "sheets"])
def test_a_tool_folder_that_is_a_link_is_refused_before_anything_is_written(runner, tmp_path, demo_checkpoint,
                                                                            folder):
    src = write_crops(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / folder).symlink_to(elsewhere)
    result = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST, "--save-every", "1", "--sheet")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert f"{out / folder} is a symbolic link" in line and "remove it" in line
    assert list(elsewhere.iterdir()) == [] and not (out / "results.jsonl").exists()


def test_a_mirrored_folder_that_is_a_link_fails_its_inputs_and_nothing_lands_outside(runner, tmp_path,
                                                                                     demo_checkpoint):
    src = tmp_path / "in"
    write_crops(src / "sub", 1)
    write_crops(src, 1, name="top{k}.png")
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere)
    result = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST, "-r", "--save-latents")
    assert result.exit_code == 1, result.stderr
    latest = {r["input"]: r for r in strict_lines(out / "results.jsonl")}
    assert latest["sub/0.png"]["status"] == "failed"
    assert f"{out / 'sub'}: is a symbolic link" in latest["sub/0.png"]["error"]
    assert latest["top0.png"]["status"] in ("ok", "not_converged")
    assert list(elsewhere.iterdir()) == []


def test_a_link_put_in_out_after_the_checks_is_refused_by_every_write(tmp_path):
    """However late the link appears (another user, a race), the write opens each folder without following."""
    from pulse_cli.files.atomic import append_jsonl, atomic_write_bytes, confine
    from pulse_cli.files.claims import claim_path, try_claim

    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    confine(out)
    atomic_write_bytes(out / "logs" / "a.jsonl", b"{}\n")  # made as real folders
    (out / "sub").symlink_to(elsewhere)
    (out / ".claims").symlink_to(elsewhere)
    for write in (lambda: atomic_write_bytes(out / "sub" / "deeper" / "a.png", b"x"),
                  lambda: append_jsonl(out / "sub" / "results.jsonl", {"a": 1}),
                  lambda: try_claim(claim_path(out, "a.png"))):
        with pytest.raises(OSError, match="symbolic link"):
            write()
    assert list(elsewhere.iterdir()) == []
    assert (out / "logs" / "a.jsonl").read_bytes() == b"{}\n"


def _planted_out(out: Path, private: Path) -> None:
    """A run's OUT with a link to a private folder and a result that is itself a link out of OUT."""
    private.mkdir()
    random_crop(32, seed=5).save(private / "secret.png")
    (private / "secret.jsonl").write_text(json.dumps({"type": "step", "step": 0, "lr": 0.1, "loss": {},
                                                      "l2": 0.123456, "total": 1.0}) + "\n")
    out.mkdir()
    (out / "evil").symlink_to(private)
    (out / "linked.png.png").symlink_to(private / "secret.png")
    base = {"status": "ok", "seed": 0, "best_l2": 0.001, "steps_run": 1, "seconds": 1.0}
    records = [{**base, "input": "via-folder.png", "outputs": ["evil/secret.png"], "logs": ["evil/secret.jsonl"]},
               {**base, "input": "linked.png", "outputs": ["linked.png.png"], "logs": []}]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_report_never_reads_or_embeds_a_file_through_a_link_in_out(runner, tmp_path):
    out = tmp_path / "out"
    _planted_out(out, tmp_path / "private")
    crops = out / "crops"  # the default crops folder of an --align run: inside OUT too
    crops.symlink_to(tmp_path / "private")
    result = report(runner, out)
    assert result.exit_code == 0, result.stderr
    html = (out / "report.html").read_text()
    rows = {r["name"]: r for r in page_data(out)["rows"]}
    for row in rows.values():
        assert row["crop"] is None
        assert [(s["image"], s["down"], s["curve"]) for s in row["samples"]] == [(None, None, None)]
    assert "data:image" not in html and "0.123" not in html


# --- 12: messages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["link", "fifo"])
def test_report_on_a_results_file_that_is_a_link_or_a_fifo_says_what_it_is(tmp_path, kind):
    out = tmp_path / "out"
    out.mkdir()
    if kind == "link":
        (tmp_path / "elsewhere.jsonl").write_text("")
        (out / "results.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    else:
        os.mkfifo(out / "results.jsonl")
    done = pulse("report", out, tmp_path=tmp_path)  # a FIFO must not hang it
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert ("a symbolic link" if kind == "link" else "a FIFO") in line and "not a plain file" in line
    assert "cannot write" not in line and "does not exist" not in line


def test_a_32_bit_integer_tiff_is_scaled_by_its_own_depth(tmp_path):
    """Not as 16-bit (every value above 65535 white): a grey ramp stays a ramp."""
    from pulse_cli.files.images import load_rgb

    ramp = (np.arange(256, dtype=np.int64).reshape(16, 16) * (2**31 - 1) // 255).astype(np.int32)
    Image.fromarray(ramp).save(tmp_path / "ramp.tif")
    assert Image.open(tmp_path / "ramp.tif").mode == "I"
    grey = load_rgb(tmp_path / "ramp.tif")[0].numpy()
    assert np.allclose(grey, np.arange(256).reshape(16, 16) / 255, atol=1e-6)


# --- 7: concurrent writers of one report ------------------------------------------------------------------


def test_a_report_made_from_fewer_records_never_replaces_a_newer_one(tmp_path, done_out, monkeypatch):
    """Writer A reads results.jsonl, then is slow (preempted, a big OUT); B reads it later, with one more
    input, and finishes first. A's page must not replace B's; a page from a rewritten results.jsonl may."""
    import threading

    from pulse_cli.run import report as report_module

    _, out, _ = done_out
    real_render = report_module.render_page
    a_has_read, a_may_go = threading.Event(), threading.Event()

    def render_slowly_in_a(*args, **kwargs):
        if threading.current_thread().name == "A":
            a_has_read.set()
            assert a_may_go.wait(60)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(report_module, "render_page", render_slowly_in_a)
    a_summary = []
    writer_a = threading.Thread(target=lambda: a_summary.append(report_module.write_report(out)), name="A")
    writer_a.start()
    assert a_has_read.wait(60)
    newest = {**strict_lines(out / "results.jsonl")[0], "input": "late.png"}
    _append(out / "results.jsonl", json.dumps(newest))
    assert report_module.write_report(out).written  # B
    a_may_go.set()
    writer_a.join(60)
    assert a_summary and not a_summary[0].written
    assert {r["name"] for r in page_data(out)["rows"]} == {"0.png", "1.png", "late.png"}
    assert not list(out.glob(".report.html.*"))
    (out / "results.jsonl").write_text(json.dumps(newest) + "\n")  # started over: fewer, other records
    assert report_module.write_report(out).written
    assert [r["name"] for r in page_data(out)["rows"]] == ["late.png"]


# --- 8: signals from the first line on, and a report killed mid-write -------------------------------------


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGTERM, 143, "terminated"),
                                                   (signal.SIGINT, 130, "interrupted")])
def test_a_signal_while_pulse_is_still_starting_gets_its_line_and_code(tmp_path, sig, code, word):
    """Sent while the command's modules still load (Python reports each import as it ends: the signal goes
    the moment Rich is in, before Typer and the commands)."""
    process = subprocess.Popen([sys.executable, "-m", "pulse_cli", "weights", "list"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=_env(tmp_path, PYTHONPROFILEIMPORTTIME="1"))
    for line in process.stderr:
        if b"rich.console" in line:
            process.send_signal(sig)
            break
    _, rest = process.communicate(timeout=60)
    stderr = [line for line in rest.decode().splitlines() if not line.startswith("import time:")]
    assert process.returncode == code, stderr
    assert stderr == [f"{word}: finished outputs are kept; rerun the same command to resume"]


def _big_out(out: Path, inputs: int = 2000) -> None:
    """An OUT whose page is about 40 MB: failed inputs with long reasons (no images to read: quick to build)."""
    out.mkdir()
    line = {"status": "failed", "outputs": [], "logs": [], "seed": 0, "error": "x" * 20_000}
    (out / "results.jsonl").write_text("".join(json.dumps({**line, "input": f"{k}.png"}) + "\n"
                                               for k in range(inputs)))


def _signal_while_the_page_is_written(out: Path, tmp_path: Path, sig: int) -> subprocess.Popen | None:
    """Run `pulse report OUT` and send `sig` while its temporary page exists; None if it never showed."""
    process = subprocess.Popen([sys.executable, "-m", "pulse_cli", "report", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=_env(tmp_path))
    while process.poll() is None:
        if any(name.startswith(".report.html.") for name in os.listdir(out)):
            process.send_signal(sig)
            process.communicate(timeout=60)
            return process
        time.sleep(0.0005)
    process.communicate()
    return None


@pytest.mark.slow
def test_a_report_killed_while_writing_leaves_no_temporary_page(tmp_path):
    out = tmp_path / "out"
    _big_out(out)
    for _ in range(5):  # the page is on disk for a moment only: try again if the signal came too late
        process = _signal_while_the_page_is_written(out, tmp_path, signal.SIGTERM)
        if process is not None:
            break
        (out / "report.html").unlink()
    else:
        pytest.fail("never caught the report while it was being written")
    assert process.returncode == 143
    assert not [p for p in os.listdir(out) if p.startswith(".report.html.")]
    for _ in range(5):  # SIGKILL: nothing can clean up, so the next report does
        process = _signal_while_the_page_is_written(out, tmp_path, signal.SIGKILL)
        if process is not None:
            break
    assert [p for p in os.listdir(out) if p.startswith(".report.html.")]
    assert pulse("report", out, tmp_path=tmp_path).returncode == 0
    assert not [p for p in os.listdir(out) if p.startswith(".report.html.")]


# --- 14: a closed stdout or stderr pipe --------------------------------------------------------------------


def test_a_closed_stderr_pipe_stops_quietly_like_sigpipe_not_as_a_failed_input(tmp_path, demo_checkpoint):
    """`pulse upsample IN OUT 2>&1 | head -2`: exit 141, as a Unix tool killed by SIGPIPE; no input is
    recorded as failed and the rerun finishes the rest."""
    src = write_crops(tmp_path / "in", 3)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pulse_cli", "upsample", str(src), str(out), "--checkpoint",
               str(demo_checkpoint), *FAST]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(tmp_path))
    for _ in range(2):
        process.stdout.readline()
    process.stdout.close()  # what `head -2` does once it has its lines
    assert process.wait(timeout=120) == 141
    records = strict_lines(out / "results.jsonl") if (out / "results.jsonl").exists() else []
    assert all(r["status"] != "failed" for r in records)
    again = subprocess.run(command, capture_output=True, text=True, env=_env(tmp_path), timeout=120)
    assert again.returncode == 0, again.stderr
    assert {r["input"] for r in strict_lines(out / "results.jsonl")} == {"0.png", "1.png", "2.png"}


def test_a_closed_stdout_after_the_work_is_done_exits_141_not_1(tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 1)
    out = tmp_path / "out"
    read, write = os.pipe()
    os.close(read)  # nobody will read the --json summary
    done = subprocess.run([sys.executable, "-m", "pulse_cli", "upsample", str(src), str(out), "--checkpoint",
                           str(demo_checkpoint), *FAST, "--json"], stdout=write, stderr=subprocess.PIPE,
                          env=_env(tmp_path), timeout=120)
    os.close(write)
    assert done.returncode == 141
    assert done.stderr.count(b"Traceback") == 0 and b"error:" not in done.stderr
    assert [r["status"] for r in strict_lines(out / "results.jsonl")] in (["ok"], ["not_converged"])
