"""What a newcomer sees: the progress bar and per-input lines, the run summary, the header, warnings and hints."""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path

import pytest
from helpers import pulse_in_a_fresh_process, read_records, write_crops
from rich.console import Console

from pulse_cli.cli import app
from pulse_cli.cli.progress import TerminalReporter
from pulse_cli.run.records import ResultRecord, SampleRecord

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
        # the ETA is the steps left at the average rate so far: half done after 10 s leaves 10 s
        meter = reporter.bar.format_meter(**{**reporter.bar.format_dict, "elapsed": 10.0})
        assert "00:10<00:10" in meter
        reporter.step(1000, 0.01, 10, 10)  # more than is left never takes the bar past its end
        reporter.close()
    text = stream.getvalue()
    # the finished input's line is printed above the bar, on a terminal too, with how its samples add up
    assert "done a.png: not_converged (2 of 3 samples met eps), L2 0.0023, 3.0 s" in text
    assert not re.search(r"\d\.\d+/\d+ img", text)  # no fractional image counts
    assert "TqdmWarning" not in text


def test_samples_line_and_record_agree():
    record = _record("a.png", [("ok", 0.0019), ("not_converged", 0.0023)])
    # the status is the worst sample's, and so is the L2: status ok exactly when best_l2 <= eps
    assert record.status == "not_converged" and record.best_l2 == 0.0023
    record = _record("b.png", [("ok", 0.0019), ("ok", 0.0007)])
    assert record.status == "ok" and record.best_l2 == 0.0019


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
# milliseconds) and without pydantic (Typer's way of reading values: ~70 ms; see pulse_cli/cli/values.py).
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
    assert outcome == {"code": 2, "torch": False, "pydantic": False}, stderr
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

def test_sheets_carry_text_metadata_and_whole_names(runner, tmp_path, demo_checkpoint, monkeypatch):
    from PIL import Image

    import pulse_cli.run.sheets as sheets
    from pulse_cli.files.sheets import _fit

    captions: list[str] = []
    real = sheets.grid_sheet

    def recording(grid, *, tile_size, title):
        captions.extend(tile.caption for row in grid for tile in row if tile is not None)
        return real(grid, tile_size=tile_size, title=title)

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
