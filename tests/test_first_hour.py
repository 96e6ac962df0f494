"""What a newcomer sees: the progress bar and per-input lines, the run summary, the header, warnings and hints."""

from __future__ import annotations

import io
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
from helpers import dcgan_state_dict, pulse_in_a_fresh_process, read_records, save_tensor_file, write_crops
from rich.console import Console

from pulse_cli.cli import app
from pulse_cli.cli.progress import TerminalReporter
from pulse_cli.cli.progress import l2_text as progress_l2_text
from pulse_cli.run.records import ResultRecord, SampleRecord, sample_l2_range, to_json
from pulse_cli.weights.local import choose_default_checkpoint

FAST = ["--steps", "3", "--device", "cpu"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _record(rel: str, statuses_l2: list[tuple[str, float]]) -> ResultRecord:
    samples = [SampleRecord(f"{rel}.sample{k}.png", status, l2, 1, 1.0, 3, 1.0, k)
               for k, (status, l2) in enumerate(statuses_l2)]
    return ResultRecord.from_samples(samples, input=rel, outputs=[], logs=[], seed=0, checkpoint="c",
                                     checkpoint_sha256=None)


def test_terminal_bar_counts_steps_and_whole_inputs_and_prints_each_finished_input():
    stream = _Terminal()
    reporter = TerminalReporter(Console(file=stream, width=100), quiet=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a TqdmWarning ("clamping frac") would fail the test
        reporter.start(2, 3, 10)  # 2 inputs, 3 samples, 10 steps: 60 optimisation steps in all
        assert reporter.bar is not None and reporter.bar.total == 60
        for _ in range(10):
            reporter.step(3, 0.01, 1, 10)  # a batch of three searches takes a step
        reporter.file_done(_record("a.png", [("ok", 0.0019), ("ok", 0.001), ("not_converged", 0.0023)]))
        assert reporter.bar.n == 30 and reporter.bar.format_dict["prefix"] == "upsampling 1/2 inputs"
        reporter.step(1000, 0.01, 10, 10)  # more than is left never takes the bar past its end
        reporter.close()
    text = stream.getvalue()
    # the finished input's line is printed above the bar, on a terminal too, with how its samples add up and
    # each figure named for what it is
    assert "done a.png: not_converged (2 of 3 samples met eps), best L2 0.001, worst L2 0.0023, 3.0 s" in text
    assert not re.search(r"\d\.\d+/\d+ img", text)  # no fractional image counts
    assert "TqdmWarning" not in text


def test_first_eta_waits_for_a_meaningful_rate():
    """The first step is slow (warm-up): an ETA from it promised an hour for a run of 49 s. The rate counts from
    the first step's end, and no ETA is shown until some seconds and steps are measured."""
    clock = [0.0]
    reporter = TerminalReporter(Console(file=_Terminal(), width=100), quiet=False)
    reporter.start(2, 3, 10)  # 60 steps
    bar = reporter.bar
    bar._time = lambda: clock[0]
    bar.start_t = 0.0

    def remaining() -> str:
        return bar.format_meter(**bar.format_dict).rsplit("<", 1)[1].split(",")[0]

    clock[0] = 10.0
    reporter.step(3, 0.01, 1, 10)  # the first step of a batch of three took 10 s
    assert remaining() == "?"  # from the start: 57 steps at 0.3 steps/s, more than 3 minutes
    for _ in range(11):  # then a step every 0.25 s
        clock[0] += 0.25
        reporter.step(3, 0.01, 2, 10)
        assert remaining() == "?"  # under 3 s of steady steps measured
    clock[0] += 0.25
    reporter.step(3, 0.01, 13, 10)
    # 36 steps in 3 s since the first: 12 steps/s, 21 steps left: 1.75 s
    assert bar.n == 39 and remaining() == "00:01"
    assert bar.measured_rate() == pytest.approx(12.0)
    reporter.close()


def test_records_name_each_l2_for_what_it_is():
    record = _record("a.png", [("ok", 0.0019), ("not_converged", 0.0023)])
    # the status is the worst sample's: ok exactly when worst_sample_l2 <= eps; the best sample is named too
    assert record.status == "not_converged" and record.worst_sample_l2 == 0.0023 and record.best_sample_l2 == 0.0019
    record = _record("b.png", [("ok", 0.0019), ("ok", 0.0007)])
    assert record.status == "ok" and record.worst_sample_l2 == 0.0019 and record.best_sample_l2 == 0.0007
    data = to_json(record)
    assert "best_l2" not in data and "best_step" not in data  # the input's figures: no name that says otherwise
    assert [s["best_l2"] for s in data["samples"]] == [0.0019, 0.0007]  # each sample's own
    assert progress_l2_text(record) == "best L2 0.0007, worst L2 0.0019"
    assert progress_l2_text(_record("c.png", [("ok", 0.0019)])) == "L2 0.0019"


def test_records_of_older_versions_stay_readable():
    """Lines written before the rename hold `best_l2` (then: the worst sample's) and `best_step`."""
    older = {"input": "a.png", "status": "not_converged", "outputs": ["a.png.sample0.png", "a.png.sample1.png"],
             "best_l2": 0.0023, "best_step": 7,
             "samples": [{"output": "a.png.sample0.png", "status": "ok", "best_l2": 0.0019},
                         {"output": "a.png.sample1.png", "status": "not_converged", "best_l2": 0.0023}]}
    assert sample_l2_range(older) == (0.0019, 0.0023)
    record = ResultRecord.from_json(older)
    assert (record.best_sample_l2, record.worst_sample_l2) == (0.0019, 0.0023)
    assert sample_l2_range({"input": "b.png", "status": "ok", "best_l2": 0.001}) == (0.001, 0.001)
    assert sample_l2_range({"input": "c.png", "status": "failed"}) == (None, None)


@pytest.fixture
def crops(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    write_crops(folder, 4)
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def test_summary_lists_failed_and_unconverged_inputs_and_says_what_next(runner, crops, tmp_path, demo_checkpoint):
    out = tmp_path / "out"
    result = runner.invoke(app, ["upsample", str(crops), str(out), "--checkpoint", str(demo_checkpoint), *FAST])
    assert result.exit_code == 1  # broken.png failed
    err = result.stderr
    # the demo generator says what it is
    assert "warning: demo generator: random weights, not faces" in err
    assert "failed (1):\n  broken.png: " in err
    assert "not converged, L2 above eps 0.002 (4):" in err  # 3 steps of an untrained generator: none converge
    for k in range(4):
        assert re.search(rf"^  {k}\.png: L2 0\.\d+$", err, re.M)
    assert f"next: results: {out}/" in err and "--search robust" in err and "--steps" in err
    assert "--overwrite" in err

    # a rerun: the skipped inputs' breakdown, in --json and on stderr
    rerun = runner.invoke(app, ["upsample", str(crops), str(out), "--checkpoint", str(demo_checkpoint), *FAST,
                                "--json"])
    summary = json.loads(rerun.stdout)
    assert summary["skipped"] == 4 and summary["skipped_earlier"] == {"ok": 0, "not_converged": 4}
    assert [f["input"] for f in summary["failed_inputs"]] == ["broken.png"]
    assert {u["input"] for u in summary["not_converged_inputs"]} == {f"{k}.png" for k in range(4)}
    assert all(u["earlier"] for u in summary["not_converged_inputs"])
    assert "skipped 4 done earlier: 0 ok, 4 not converged" in rerun.stderr
    assert "0.png: L2" in rerun.stderr and "(done earlier)" in rerun.stderr


def test_names_are_printed_as_they_are(runner, tmp_path):
    result = runner.invoke(app, ["upsample", ":fire:.png", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.stderr == "error: input :fire:.png does not exist\n"


def test_hints_fit_the_run(runner, tmp_path, demo_checkpoint):
    crops = write_crops(tmp_path / "in", 2, size=8)
    args = ["--checkpoint", str(demo_checkpoint), *FAST]
    # --search robust did not converge: the hint does not suggest it again; three samples: three PNGs each
    robust = runner.invoke(app, ["upsample", str(crops), str(tmp_path / "robust"), *args, "--search", "robust",
                                 "--samples", "3"])
    assert robust.exit_code == 0, robust.stderr
    assert "not converged (best images written): more --steps may get closer" in robust.stderr
    assert "--search robust" not in robust.stderr
    assert "(3 PNGs per input, <name>.sample0.png to .sample2.png)" in robust.stderr
    assert "one PNG per input" not in robust.stderr
    assert sorted(p.name for p in (tmp_path / "robust").glob("*.sample*.png")) == \
        [f"{k}.png.sample{s}.png" for k in range(2) for s in range(3)]
    # the not-converged lines name both figures of three samples
    assert re.search(r"^  0\.png: 0 of 3 samples met eps, best L2 [0-9.]+, worst L2 [0-9.]+$", robust.stderr, re.M)
    # an empty IN: a warning, and no "next: results" line for results that do not exist
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["upsample", str(tmp_path / "empty"), str(tmp_path / "nothing"), *args])
    assert empty.exit_code == 0 and "warning: no images found" in empty.stderr
    assert "next:" not in empty.stderr and "results:" not in empty.stderr


def _in_a_terminal(args: list[str], cwd: Path, columns: int = 80) -> str:
    """`pulse ARGS` with stdout and stderr on a pseudo-terminal `columns` wide: what the user sees, without
    the colours and with the progress bar's redrawn lines (carriage returns) left out."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "PULSE_CHECKPOINT")}
    process = subprocess.Popen([sys.executable, "-m", "pulse_cli", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                               stdout=terminal, stderr=terminal, env={**env, "TERM": "xterm"})
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert process.wait(timeout=300) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n"))


def test_next_lines_break_between_words_at_80_columns(tmp_path, demo_checkpoint):
    write_crops(tmp_path / "in", 1, size=8)
    out = "out|tty"  # as the newcomer ran it: "records in out|tty/results.jsonl" was cut at "out|tty/resu"
    screen = _in_a_terminal(["upsample", "in", out, "--checkpoint", str(demo_checkpoint), "--samples", "2",
                             "--sheet", *FAST], tmp_path)
    hints = screen[screen.index("next: "):].rstrip().splitlines()
    assert len(hints) > 3 and all(len(line) <= 80 for line in hints), hints
    assert all(line.startswith("      ") for line in hints[1:])  # continued under the hint's text
    words = " ".join(hints).split()
    # every path whole on its line, none broken mid-word
    for path in (f"{out}/", f"{out}/logs/,", f"{out}/results.jsonl", f"{out}/sheet.png", f"{out}/sheets/"):
        assert path in words, (path, hints)
    assert all(len(line) <= 80 for line in screen.splitlines())


def test_default_checkpoint_prefers_a_trained_model_and_says_why(runner, tmp_path, demo_checkpoint):
    """After `make demo` (the DCGAN in ./weights) and `make demo-untrained` (the demo generator in
    ./weights/demo), `pulse upsample` picks the trained model, and says which and why."""
    weights, home = tmp_path / "weights", tmp_path / "home"  # the runner's cwd and PULSE_HOME
    shutil.copytree(demo_checkpoint.parent, weights / "demo")
    demo = weights / "demo" / "synthesis.pt"
    dcgan = save_tensor_file({"netG_state_dict": dcgan_state_dict()}, weights / "dcgan-digiface-64.pt")
    choice = choose_default_checkpoint([weights, home])
    assert (choice.path, choice.demo) == (dcgan, False)
    crops = write_crops(tmp_path / "in", 1, size=8)
    result = runner.invoke(app, ["upsample", str(crops), "out", *FAST])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[0] == (
        f"using checkpoint {dcgan} (a trained dcgan generator, chosen over 1 other: trained generators come "
        f"before the untrained demo generator ({demo}); the order is in 'pulse upsample --help')")
    assert "warning: demo generator" not in result.stderr
    assert read_records(tmp_path / "out")[0]["checkpoint"] == str(dcgan)

    # a trained model in the user's folder comes before the demo generator in ./weights too
    home.mkdir(exist_ok=True)
    moved = dcgan.rename(home / dcgan.name)
    assert choose_default_checkpoint([weights, home]).path == moved
    # with trained models in both, ./weights comes first
    again = save_tensor_file({"netG_state_dict": dcgan_state_dict(seed=1)}, weights / "mine.pt")
    choice = choose_default_checkpoint([weights, home])
    assert choice.path == again and "trained generators come before the untrained demo generator" in choice.reason()
    shutil.rmtree(weights / "demo")
    assert f"{weights} comes before {home}" in choose_default_checkpoint([weights, home]).reason()
    assert choose_default_checkpoint([tmp_path / "nowhere"]) is None
    # only the demo generator: it is used, and the run says what it is
    again.unlink()
    moved.unlink()
    shutil.copytree(demo_checkpoint.parent, weights / "demo")
    result = runner.invoke(app, ["upsample", str(crops), "out2", *FAST])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(f"using checkpoint {demo} (the only generator found in {weights} and {home})")
    assert "warning: demo generator: random weights, not faces" in result.stderr


def test_upsample_help_says_how_the_default_checkpoint_is_chosen(runner):
    from pulse_cli.weights import DEFAULT_ORDER

    text = " ".join(runner.invoke(app, ["upsample", "--help"], env={"COLUMNS": "80"}).stdout.split())
    text = re.sub(r" ?│ ?", " ", text)
    assert " ".join(DEFAULT_ORDER.split()) in " ".join(text.split())
    assert "the FFHQ model in ./weights/" not in text


def test_summary_list_stops_at_a_screenful(runner, tmp_path, demo_checkpoint):
    crops = write_crops(tmp_path / "in", 20, size=8)
    out = tmp_path / "out"
    result = runner.invoke(app, ["upsample", str(crops), str(out), "--checkpoint", str(demo_checkpoint),
                                 "--steps", "1", "--device", "cpu"])
    assert result.exit_code == 0
    listed = re.findall(r"^  \d+\.png: L2", result.stderr, re.M)
    assert 10 <= len(listed) < 20
    assert f"more line(s): see {out / 'results.jsonl'}" in result.stderr


def test_sharded_header_says_how_many_of_the_folder(runner, tmp_path, demo_checkpoint):
    crops = write_crops(tmp_path / "in", 8, size=8)
    counts = []
    for k in (1, 2):
        result = runner.invoke(app, ["upsample", str(crops), str(tmp_path / "out"), "--checkpoint",
                                     str(demo_checkpoint), "--steps", "1", "--device", "cpu", "--shard", f"{k}/2"])
        assert result.exit_code == 0, result.stderr
        match = re.search(r"^(\d+) of 8 image\(s\) in .* \(shard (\d)/2\), 0 already done", result.stderr, re.M)
        assert match and match.group(2) == str(k), result.stderr
        counts.append(int(match.group(1)))
    assert sum(counts) == 8 == len(read_records(tmp_path / "out"))


# Each is refused with exit 2, in one line, before torch is imported (torch takes seconds to import; the check,
# milliseconds; bench/startup.py measures it against `pulse --version`).
ARGUMENT_ERRORS = [
    ["weights", "download", "no-such-model"],
    ["weights", "download", "stylegan-ffhq-1024", "--sha256", "not-hex"],
    ["weights", "download", "gaussian-fit-stylegan-ffhq"],
    ["weights", "info", "no-such-model"],
    ["weights", "convert", "missing.pkl", "out.safetensors"],
    ["render", "missing.latents.safetensors", "out.png"],
    ["render", "{crop}", "out.jpg"],
    ["render", "{crop}", "out.png", "--device", "gpu"],
    ["report", "{crops}"],
    ["align", "{crops}", "aligned", "--size", "0"],
    ["demo-generator", "{crop}"],
    ["upsample", "missing", "out"],
    ["upsample", "{crops}", "out", "--loss", "3*L3"],
    ["upsample", "{crops}", "out", "--loss", "0.05*GEOCROSS"],
    ["upsample", "{crops}", "out", "--device", "gpu"],
    ["upsample", "{crops}", "out", "--ray", "local", "--device", "gpu"],
    ["upsample", "{crops}", "out", "--lr", "0"],
    ["upsample", "{crops}", "out", "--steps", "0"],
    ["upsample", "{crops}", "out", "--steps", "abc"],
    ["upsample", "{crops}", "out", "--eps", "x"],
    ["upsample", "{crops}", "out", "--synthesis", "fst"],
    ["upsample", "{crops}", "out", "--search", "fancy"],
    ["upsample", "{crops}", "out", "--bad-noise-layers", "x"],
    ["upsample", "{crops}", "out", "--batch-size", "0"],
    ["upsample", "{crops}", "out", "--threads", "0"],
    ["upsample", "{crops}", "out", "--threads", "2", "--ray", "local"],
    ["upsample", "{crops}", "out", "--shard", "3/2"],
    ["upsample", "{crops}", "out", "--checkpoint", "nowhere.pt"],
]


@pytest.mark.parametrize("args", ARGUMENT_ERRORS, ids=lambda a: " ".join(a))
def test_argument_errors_come_before_importing_torch(args, tmp_path):
    crops = write_crops(tmp_path / "crops", 1)
    args = [a.format(crops=crops, crop=crops / "0.png") for a in args]
    outcome, stderr = pulse_in_a_fresh_process(args, tmp_path)
    assert outcome == {"code": 2, "torch": False}, stderr
    assert stderr.startswith("error: ") and stderr.count("\n") == 1  # one line


# --- help at 80 columns -------------------------------------------------------------------------------------------

def _every_command() -> list[list[str]]:
    """Every command path of the app: [], ["upsample"], ..., ["weights", "list"], ..."""
    import typer.main

    def walk(command, path):
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


TYPE_NAMES = re.compile(r"<(?:str|int|float|bool|path|text|integer|choice|int range|float range|list\[[^\]]*\])>")
WIDTH = 80


@pytest.mark.parametrize("command", _every_command(), ids=lambda c: " ".join(c) or "pulse")
def test_help_reads_at_80_columns(runner, command):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert all(len(line) <= WIDTH for line in lines)
    assert not TYPE_NAMES.search(result.stdout), TYPE_NAMES.search(result.stdout)
    assert "`" not in result.stdout  # rich mode shows backticks as they are: names are quoted with ' instead
    # placeholders are upper-case words, in the usage line and the Arguments panel alike
    usage = next(line for line in lines if "Usage:" in line).split("[OPTIONS]")[-1].split()
    assert all(re.fullmatch(r"\[?[A-Z0-9_|]+\]?(\.\.\.)?", word) for word in usage), usage
    in_arguments = False
    for line in lines:
        if "─ Arguments ─" in line:
            in_arguments = True
        elif line.startswith("╰"):
            in_arguments = False
        elif in_arguments and (name := re.match(r"│ [* ] {1,4}(\S+)  ", line)):
            assert name.group(1) == name.group(1).upper(), line
    # no hard-wrap artefacts: in the text above the panels, a line never ends where the next line's first
    # word would still have fitted (the source's line breaks kept: "in" alone on a line)
    text = lines[:next((i for i, line in enumerate(lines) if line.startswith("╭")), len(lines))]
    for line, following in zip(text, text[1:], strict=False):
        prose, next_prose = line.rstrip(), following.rstrip()
        if not prose or not next_prose or next_prose.startswith("   ") or prose.startswith("   "):
            continue  # paragraph ends and indented examples keep their lines
        assert len(prose) + 1 + len(next_prose.split()[0]) > WIDTH - 2, (prose, next_prose)


def _panels(text: str) -> dict[str, list[str]]:
    """The options of each panel of a --help, by panel title."""
    panels: dict[str, list[str]] = {}
    title = None
    for line in text.splitlines():
        if line.startswith("╭─ "):
            title = line[3:].split(" ─")[0]
            panels[title] = []
        elif title and (option := re.match(r"│ [* ]? ?(--[a-z-]+)", line)):
            panels[title].append(option.group(1))
    return panels


def test_upsample_help_groups_outputs_and_the_stylegan_only_options(runner):
    from typer.testing import CliRunner

    text = CliRunner().invoke(app, ["upsample", "--help"], env={"COLUMNS": "80"}).stdout
    panels = _panels(text)
    assert panels["Advanced (StyleGAN)"] == ["--noise-type", "--trainable-noise-layers", "--bad-noise-layers",
                                             "--tile-latent"]
    assert {"--sheet", "--report", "--save-latents", "--save-every", "--animate"} <= set(panels["Output"])
    assert panels["Transparency"] == ["--metadata", "--check-face"]
    assert not set(panels["Advanced (StyleGAN)"]) & set(panels["Search"])
    assert list(panels)[-1] == "Advanced (StyleGAN)"  # last: what most runs never touch
    assert re.search(r"│ --eps +THRESHOLD ", text)


def test_upsample_help_gives_each_description_room(runner):
    from typer.testing import CliRunner

    text = CliRunner().invoke(app, ["upsample", "--help"], env={"COLUMNS": "80"}).stdout
    search = text[text.index("─ Search ─"):text.index("─ Output ─")]
    # the descriptions start within the first 45 columns, and --search takes few lines
    steps = next(line for line in search.splitlines() if "--steps" in line)
    assert steps.index("Optimisation steps") <= 45
    block = search[search.index("--search"):search.index("--lr ")]
    assert block.count("\n") <= 4


# --- sheets -----------------------------------------------------------------------------------------------------

def test_run_sheet_marks_the_samples_that_missed_eps_and_keeps_its_whole_header(runner, tmp_path, demo_checkpoint,
                                                                              monkeypatch):
    import pulse_cli.run.sheets as sheets
    from pulse_cli.files.sheets import CAPTION_HEIGHT, SHEET_NOTICE, Tile, grid_sheet

    drawn: list[tuple[str, list[list[str]]]] = []

    def recording(grid, *, tile_size, title, **options):
        drawn.append((title, [[tile.caption for tile in row if tile is not None] for row in grid]))
        return grid_sheet(grid, tile_size=tile_size, title=title, **options)

    monkeypatch.setattr(sheets, "grid_sheet", recording)
    crops = write_crops(tmp_path / "in", 2, size=8)
    marks = set()
    for eps in ("1", "0.002"):  # every sample meets eps 1; after 3 steps of the demo generator none meets 0.002
        drawn.clear()
        out = tmp_path / f"out-{eps}"
        result = runner.invoke(app, ["upsample", str(crops), str(out), "--checkpoint", str(demo_checkpoint), *FAST,
                                     "--samples", "2", "--sheet", "--eps", eps])
        assert result.exit_code == 0, result.stderr
        records = {r["input"]: r for r in read_records(out)}
        title, rows = drawn[-1]  # the run sheet comes last, after the inputs' own
        assert title[0].startswith(f"{sum(r['status'] == 'ok' for r in records.values())} of 2 inputs met eps")
        for name, captions in zip(sorted(records), rows, strict=True):
            assert captions[0] == name and captions[-1].startswith("spread")  # the samples' disagreement map last
            for k, (caption, sample) in enumerate(zip(captions[1:-1], records[name]["samples"], strict=True)):
                mark = "ok" if sample["status"] == "ok" else "> eps"
                assert caption == f"#{k} L2 {sample['best_l2']:.4f} {mark}"  # as on the input's own sheet
                marks.add(mark)
    assert marks == {"ok", "> eps"}

    # one sample per input: the sheet is two tiles wide, and its header takes the lines it needs, never cut
    from PIL import Image

    tile = Image.new("RGB", (8, 8))
    title = f"1 of 6 inputs met eps. {SHEET_NOTICE}"
    narrow = grid_sheet([[Tile(tile, "a.png"), Tile(tile, "#0 L2 0.0059 > eps")]], tile_size=128, title=title)
    wide = grid_sheet([[Tile(tile, "a.png")] + [Tile(tile, "#0")] * 3], tile_size=128, title=title)
    assert narrow.height - wide.height == CAPTION_HEIGHT  # one more line of header
    assert " ".join(_title_lines(title, narrow.width)) == title  # every word, none shortened


def _title_lines(text: str, width: int) -> list[str]:
    """A sheet's title as `grid_sheet` breaks it for a sheet `width` pixels wide; each line fits."""
    from PIL import Image, ImageDraw, ImageFont

    from pulse_cli.files.sheets import PADDING, _wrap

    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = _wrap(draw, text, ImageFont.load_default(), width - 2 * PADDING)
    assert all(draw.textlength(line, font=ImageFont.load_default()) <= width - 2 * PADDING for line in lines)
    return lines


def test_sheets_carry_text_metadata_and_whole_names(runner, tmp_path, demo_checkpoint, monkeypatch):
    from PIL import Image

    import pulse_cli.run.sheets as sheets
    from pulse_cli.files.sheets import _fit

    captions: list[str] = []
    real = sheets.grid_sheet

    def recording(grid, **options):
        captions.extend(tile.caption for row in grid for tile in row if tile is not None)
        return real(grid, **options)

    monkeypatch.setattr(sheets, "grid_sheet", recording)
    crops = tmp_path / "in"
    write_crops(crops, 1, name="astronaut_mirrored_{k}.jpg")
    out = tmp_path / "out"
    result = runner.invoke(app, ["upsample", str(crops), str(out), "--checkpoint", str(demo_checkpoint), *FAST,
                                 "--sheet"])
    assert result.exit_code == 0, result.stderr
    assert "astronaut_mirrored_0.jpg" in captions  # the run sheet's label is the whole name
    for sheet in (out / "sheet.png", out / "sheets" / "astronaut_mirrored_0.jpg.sheet.png"):
        with Image.open(sheet) as image:
            assert "not reconstructions of the people" in image.text["Description"]
            assert image.text["DigitalSourceType"].endswith("compositeWithTrainedAlgorithmicMedia")
            assert image.text["Software"].startswith("pulse-cli")
    # a name too long for its tile is shortened in the middle: its extension stays
    from PIL import ImageDraw, ImageFont

    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    short = _fit(draw, "a_rather_long_photo_name_of_someone.face0.jpg", ImageFont.load_default(), 128)
    assert short.endswith(".jpg") and ".." in short
    assert draw.textlength(short, font=ImageFont.load_default()) <= 128
