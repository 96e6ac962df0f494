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


def test_a_record_nested_below_the_parsers_limit_is_refused_too(runner, done_out):
    """Deep enough to parse, too deep to copy or write again (a skipped record repeats its input's fields)."""
    from pulse_cli.run.records import RecordError, ResultRecord

    src, out, args = done_out
    record = strict_lines(out / "results.jsonl")[0]
    _append(out / "results.jsonl", json.dumps({**record, "search": {"x": json.loads("[" * 500 + "]" * 500)}}))
    result = upsample(runner, *args)
    assert result.exit_code == 0, result.stderr
    assert len(warnings_about(result.stderr, "line 3")) == 1 and "nested" in result.stderr
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
    """Sent while the command's modules load: `pulse`'s own entry (`run_command`, as `python -m pulse_cli`
    runs it) with a loader that says when it has begun and then waits, so the signal lands inside the loading
    on any machine (waiting for an import line raced on a busy one: the whole command could end first)."""
    child = ("import sys, time\n"
             "from pulse_cli.cli import _load_app\n"
             "from pulse_cli.cli.signals import run_command\n"
             "def load():\n"
             "    print('loading', file=sys.stderr, flush=True)\n"
             "    time.sleep(60)\n"
             "    return _load_app()\n"
             "sys.argv = ['pulse', 'weights', 'list']\n"
             "run_command(load)\n")
    # as from a terminal: a process started with SIGINT ignored (a background job of a shell, nohup) keeps
    # ignoring it, as Python and every well-behaved tool do, and would never see this Ctrl-C
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=_env(tmp_path), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stderr.readline() == b"loading\n"
    process.send_signal(sig)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == code, rest
    assert rest.decode().splitlines() == [f"{word}: finished outputs are kept; rerun the same command to resume"]


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


# --- 4: SIGTERM while `weights download` runs pip ------------------------------------------------------------

# A pip that starts to fill its --dest, says its pid, and then takes its time (as a slow mirror does).
SLOW_PIP = """
import os, sys, time
args = sys.argv[1:]
dest = args[args.index("--dest") + 1]
os.makedirs(dest, exist_ok=True)
with open(os.path.join(dest, "partial.whl"), "wb") as f:
    f.write(b"x" * 100_000)
with open(os.environ["SLOW_PIP_PID"], "w") as f:
    f.write(str(os.getpid()))
time.sleep(120)
"""
DOWNLOAD_WITH = """
import sys
import pulse_cli.weights.download as download
download.PIP_COMMAND = (sys.executable, sys.argv[1])
sys.argv = ["pulse", "weights", "download", "dcgan-digiface-64", "--dest", sys.argv[2], "--no-convert"]
from pulse_cli.cli import main
main()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (its parent has not reaped it yet) has ended
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _start_download(tmp_path: Path, dest: Path, pip: str) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "pip.py"
    script.write_text(pip)
    pid_file = tmp_path / "pip.pid"
    pid_file.unlink(missing_ok=True)
    process = subprocess.Popen([sys.executable, "-c", DOWNLOAD_WITH, str(script), str(dest)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=_env(tmp_path, SLOW_PIP_PID=str(pid_file)))
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return process, pid_file


def test_sigterm_during_a_pip_download_stops_pip_and_removes_its_folder(tmp_path):
    dest = tmp_path / "weights"
    dest.mkdir()
    process, pid_file = _start_download(tmp_path, dest, SLOW_PIP)
    pip_pid = int(pid_file.read_text())
    assert [p.name for p in dest.iterdir() if p.name.startswith(".dcgan-digiface-64.pt.")]  # staging, filling
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert stderr.decode().splitlines()[-1] == ("terminated: nothing was kept; rerun the same command to "
                                                "download again")
    assert not _alive(pip_pid)
    assert list(dest.iterdir()) == []


def test_a_rerun_removes_what_a_killed_download_left(tmp_path):
    dest = tmp_path / "weights"
    process, pid_file = _start_download(tmp_path, dest, SLOW_PIP)
    pip_pid = int(pid_file.read_text())
    process.kill()  # SIGKILL: no cleanup can run; its pip lives on, an orphan
    process.wait()
    try:
        assert [p.name for p in dest.iterdir() if p.name.startswith(".dcgan-digiface-64.pt.")]
        failing = SLOW_PIP.replace("time.sleep(120)", "sys.exit(1)")
        again, _ = _start_download(tmp_path, dest, failing)
        _, stderr = again.communicate(timeout=60)
        assert again.returncode == 1, stderr
        assert list(dest.iterdir()) == []
    finally:
        os.kill(pip_pid, signal.SIGKILL)


# --- 9: untrusted text printed escaped ---------------------------------------------------------------------


def test_checkpoint_metadata_and_input_names_cannot_forge_or_turn_around_a_line(runner, tmp_path, demo_checkpoint):
    forged = "https://example.org/g.pt\nsha256:        " + "0" * 64 + " (verified)"
    converted = tmp_path / "g.safetensors"
    made = runner.invoke(app, ["weights", "convert", str(demo_checkpoint), str(converted), "--latent-samples",
                               "64", "--source", forged, "--licence", "MIT \u202etxt.exe"])
    assert made.exit_code == 0, made.stderr
    info = runner.invoke(app, ["weights", "info", str(converted)])
    assert info.exit_code == 0, info.stderr
    lines = info.stdout.splitlines()
    assert not [line for line in lines if line.startswith("sha256:") and "0" * 64 in line]
    assert any(line.startswith("source:") and "\\nsha256:" in line for line in lines)
    assert any(line.startswith("licence:") and "MIT \\u202etxt.exe" in line for line in lines)
    assert "\u202e" not in info.stdout
    src = write_crops(tmp_path / "in", 1, name="a\u202egnp{k}.png")
    result = upsample(runner, src, tmp_path / "out", "--checkpoint", demo_checkpoint, *FAST)
    assert result.exit_code == 0, result.stderr
    assert "\u202e" not in result.stderr
    assert any(line.startswith("done a\\u202egnp0.png: ") for line in result.stderr.splitlines())


# --- 10: a second model joining a running OUT --------------------------------------------------------------


def _running(src: Path, out: Path, checkpoint: Path, tmp_path: Path) -> subprocess.Popen:
    """A long run in OUT, returned once it is searching (its first frame written)."""
    process = subprocess.Popen([sys.executable, "-m", "pulse_cli", "upsample", str(src), str(out), "--checkpoint",
                                str(checkpoint), "--device", "cpu", "--steps", "300", "--save-every", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(tmp_path))
    deadline = time.monotonic() + 120
    while not ((out / "frames").is_dir() and any((out / "frames").rglob("step-0001.png"))):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return process


def other_model(folder: Path) -> Path:
    """Another demo generator (seed 1), with a gaussian fit beside it from few samples (fast to load)."""
    from pulse_cli.checkpoints.demo import make_demo_generator, write_demo_checkpoint
    from pulse_cli.checkpoints.latent_stats import compute_latent_stats, save_latent_stats

    path = write_demo_checkpoint(folder, seed=1)
    generator = make_demo_generator(seed=1)
    save_latent_stats(compute_latent_stats(generator.map, generator.z_dim, samples=4096), folder / "gaussian_fit.pt")
    return path


def test_a_second_model_cannot_join_a_running_out(tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 2)
    out = tmp_path / "out"
    other = other_model(tmp_path / "other")
    first = _running(src, out, demo_checkpoint, tmp_path)
    try:
        second = pulse("upsample", src, out, "--checkpoint", other, *FAST, tmp_path=tmp_path)
        assert second.returncode == 2, second.stderr
        line = one_error_line(second.stderr)
        assert f"{out} is in use by another run with other options" in line and "checkpoint" in line
        assert f"pid {first.pid}" in line
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert {r["checkpoint"] for r in strict_lines(out / "results.jsonl")} <= {str(demo_checkpoint.resolve())}


def test_a_killed_run_does_not_keep_out_for_its_model(tmp_path, demo_checkpoint):
    src = write_crops(tmp_path / "in", 1)
    out = tmp_path / "out"
    other = other_model(tmp_path / "other")
    first = _running(src, out, demo_checkpoint, tmp_path)
    first.kill()
    first.wait()
    second = pulse("upsample", src, out, "--checkpoint", other, *FAST, tmp_path=tmp_path)
    assert second.returncode == 0, second.stderr
    assert [r["checkpoint"] for r in strict_lines(out / "results.jsonl")] == [str(other.resolve())]
    assert not list((out / ".claims").iterdir())


# --- 11: every option applied or refused -------------------------------------------------------------------


@pytest.mark.parametrize("option", [["--lr-schedule", "fixed"], ["--trainable-noise-layers", "3"]])
def test_an_option_robust_search_decides_itself_is_refused(runner, tmp_path, demo_checkpoint, option):
    src = write_crops(tmp_path / "in", 1)
    result = upsample(runner, src, tmp_path / "out", "--checkpoint", demo_checkpoint, *FAST, "--search", "robust",
                      *option)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert f"{option[0]} does not apply to --search robust" in line
    assert not (tmp_path / "out").exists()


def test_records_of_a_robust_search_say_what_it_used(runner, tmp_path, demo_checkpoint):
    from pulse_cli.search.robust import RobustOptions

    src = write_crops(tmp_path / "in", 1)
    out = tmp_path / "out"
    assert upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST, "--search", "robust").exit_code == 0
    (record,) = strict_lines(out / "results.jsonl")
    header = strict_lines(out / "logs" / "0.png.jsonl")[0]
    for search in (record["search"], header["search"]):
        assert search["lr_schedule"] == RobustOptions().lr_schedule == "warmup10-cosine"
        assert search["trainable_noise_layers"] is None
    # an OUT whose records an earlier version wrote (PULSE's defaults there): the same options, no warning
    (out / "results.jsonl").write_text(json.dumps({**record, "search": {
        **record["search"], "lr_schedule": "linear1cycledrop", "trainable_noise_layers": 5}}) + "\n")
    again = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST, "--search", "robust")
    assert again.exit_code == 0 and "other options" not in again.stderr


# --- 12: messages ------------------------------------------------------------------------------------------


def test_a_full_disk_while_appending_results_names_the_file(runner, tmp_path, demo_checkpoint):
    """On a real, full tmpfs (the tests run as root in CI)."""
    src = write_crops(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(out)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        filler = os.open(out / "filler", os.O_WRONLY | os.O_CREAT)
        try:  # every block taken
            while os.write(filler, b"\0" * 4096):
                pass
        except OSError:
            pass
        os.close(filler)
        result = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST)
        assert result.exit_code == 1
        last = [line for line in result.stderr.splitlines() if line.startswith("error:")][-1]
        assert last.startswith(f"error: cannot write {out / 'results.jsonl'}: No space left on device")
    finally:
        subprocess.run(["umount", str(out)], check=False)


def test_a_matching_file_already_there_is_recorded_not_said_downloaded(runner, tmp_path):
    """Nothing is fetched (the URL leads nowhere); the copy gets its .sha256 record, so `verify` checks it."""
    import hashlib

    dest = tmp_path / "weights"
    dest.mkdir()
    (dest / "g.pt").write_bytes(b"weights")
    pin = hashlib.sha256(b"weights").hexdigest()
    result = runner.invoke(app, ["weights", "download", "http://127.0.0.1:9/g.pt", "--sha256", pin, "--dest",
                                 str(dest), "--no-convert"])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(f"already here: {dest / 'g.pt'}") and "downloaded" not in result.stderr
    assert (dest / "g.pt.sha256").read_text() == f"{pin}  g.pt\n"
    assert runner.invoke(app, ["weights", "verify", str(dest / "g.pt")]).stdout.startswith("ok")


# --- 13: a rerun with other --samples -------------------------------------------------------------------


def test_a_rerun_with_other_samples_skips_and_says_so_and_only_overwrite_replaces(runner, tmp_path,
                                                                                 demo_checkpoint):
    src = write_crops(tmp_path / "in", 1, name="face-{k}.png")
    out = tmp_path / "out"
    base = [src, out, "--checkpoint", demo_checkpoint, *FAST]
    assert upsample(runner, *base).exit_code == 0
    made = (out / "face-0.png.png").stat()
    for samples in ("2", "1"):
        result = upsample(runner, *base, "--samples", samples)
        assert result.exit_code == 0, result.stderr
        assert "1 image(s) in" in result.stderr and "1 already done" in result.stderr
        assert ("made with other options (samples)" in result.stderr) == (samples == "2")
        assert (out / "face-0.png.png").stat().st_mtime_ns == made.st_mtime_ns
        assert not list(out.glob("*.sample*.png"))
    skipped = strict_lines(out / "results.jsonl")[-1]
    assert skipped["status"] == "skipped" and skipped["outputs"] == ["face-0.png.png"]
    redone = upsample(runner, *base, "--samples", "2", "--overwrite")
    assert redone.exit_code == 0
    assert sorted(p.name for p in out.glob("*.sample*.png")) == ["face-0.png.sample0.png", "face-0.png.sample1.png"]


# --- 15: nothing made before the arguments are accepted --------------------------------------------------


@pytest.mark.parametrize("why", ["no checkpoint found", "a missing gaussian fit"])
def test_a_usage_error_leaves_no_output_folder(runner, tmp_path, demo_checkpoint, why):
    """Both are found after OUT is checked: it must be checked without being made."""
    src = write_crops(tmp_path / "in", 1)
    out = tmp_path / "new" / "out"
    if why == "no checkpoint found":
        result = upsample(runner, src, out, *FAST)
    else:
        result = upsample(runner, src, out, "--checkpoint", demo_checkpoint, *FAST, "--gaussian-fit",
                          tmp_path / "missing.pt")
    assert result.exit_code == 2
    one_error_line(result.stderr)
    assert not (tmp_path / "new").exists()
