"""`pulse report OUT` and `pulse upsample --report`: OUT/report.html, checked as data and in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import Chromium, find_chromium
from helpers import random_crop, read_records, write_crops
from PIL import Image

from pulse_cli.cli import app
from pulse_cli.files.sheets import SHEET_NOTICE
from pulse_cli.run.report import CURVE_POINTS, REPORT_FILE, read_curves, write_report
from pulse_cli.search.downsample import BicubicDownsample

HOSTILE = ("<img src=x onerror=window.pwned=1>.png", "<script>.png")


def page_data(html: str) -> dict:
    """The JSON block of a report page."""
    blob = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(blob)


def write_log(path: Path, l2: list[float], *, geocross: bool = True) -> None:
    lines = [{"type": "run", "input": "x"}]
    for step, value in enumerate(l2):
        loss = {"L2": value, **({"GEOCROSS": 10.0 - step} if geocross else {})}
        lines.append({"type": "step", "step": step, "lr": 0.01 * step, "loss": loss, "l2": value, "total": 1.0})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def fabricated_out(out: Path, names: list[str], *, steps: int = 5) -> None:
    """An OUT as a run leaves it, written by hand: one 32 px result and log per input, every third failed."""
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for k, name in enumerate(names):
        if k % 3 == 2:
            records.append({"input": name, "outputs": [], "logs": [], "status": "failed", "seed": 0,
                            "checkpoint": "/w/g.pt", "checkpoint_sha256": "ab" * 32, "error": f"bad file {k}",
                            "search": {"eps": 0.002, "mode": "pulse", "steps": steps}})
            continue
        random_crop(32, seed=100 + k).save(out / f"{name}.png")
        write_log(out / "logs" / f"{name}.jsonl", [0.1 / (1 + s + k) for s in range(steps)])
        l2 = 0.1 / (steps + k)
        records.append({"input": name, "outputs": [f"{name}.png"], "logs": [f"logs/{name}.jsonl"], "seed": 0,
                        "checkpoint": "/w/g.pt", "checkpoint_sha256": "ab" * 32,
                        "status": "ok" if l2 <= 0.002 else "not_converged", "worst_sample_l2": l2,
                        "best_sample_l2": l2, "steps_run": steps, "seconds": 2.0,
                        "samples": [{"output": f"{name}.png", "status": "ok" if l2 <= 0.002 else "not_converged",
                                     "best_l2": l2, "steps_run": steps, "seconds": 2.0}],
                        "search": {"eps": 0.002, "mode": "pulse", "steps": steps}})
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


# -- the page as data ---------------------------------------------------------------------------------


def test_latest_record_per_input_counts_and_skipped_inputs_keep_their_earlier_time(tmp_path):
    out = tmp_path / "out"
    fabricated_out(out, ["a", "b", "c"])  # c failed
    records = read_records(out)
    skipped_a = {**records[0], "status": "skipped", "earlier_status": records[0]["status"], "seconds": 0.0}
    redone_c = {**records[1], "input": "c", "outputs": ["b.png"], "logs": ["logs/b.jsonl"], "seconds": 3.0}
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(skipped_a) + "\n" + json.dumps(redone_c) + "\n")

    summary = write_report(out)
    data = page_data((out / REPORT_FILE).read_text())
    numbers = dict(data["run"]["numbers"])
    rows = {r["name"]: r for r in data["rows"]}
    assert summary.rows == 3 and len(rows) == 3
    assert numbers["inputs"] == "3"
    # a skipped input counts as what its results are (c's latest record is the redone one)
    assert numbers["ok / not converged / failed"] == "0 / 3 / 0 (1 done by an earlier run, skipped by the latest)"
    assert rows["a"]["status"] == "skipped" and rows["a"]["earlier_status"] == "not_converged"
    assert rows["a"]["outcome"] == "not_converged"
    assert rows["a"]["seconds"] == 2.0  # from the run that made it, not the skipping run's 0
    # the search time as the terminal's summary has it: the records' seconds (2 + 2 + 3)
    assert numbers["search time"] == "7.0 s in all, 2.33 s per input searched (the time of their optimisation steps)"
    assert numbers["eps"] == "0.002" and numbers["search mode"] == "pulse"
    assert numbers["checkpoint"] == f"/w/g.pt (sha256 {'ab' * 32})"
    assert data["run"]["notice"] == SHEET_NOTICE
    assert "not given" in numbers["inputs folder"]


def test_records_of_older_versions_show_each_figure_for_what_it_is(tmp_path):
    """Lines written before the rename have `best_l2`, which held the worst sample's L2."""
    out = tmp_path / "out"
    fabricated_out(out, ["a"])
    older = {"input": "old", "status": "not_converged", "outputs": ["old.sample0.png", "old.sample1.png"],
             "logs": [], "best_l2": 0.003, "best_step": 4, "seconds": 1.0, "steps_run": 5,
             "samples": [{"output": "old.sample0.png", "status": "ok", "best_l2": 0.001},
                         {"output": "old.sample1.png", "status": "not_converged", "best_l2": 0.003}]}
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(older) + "\n")
    write_report(out)
    row = {r["name"]: r for r in page_data((out / REPORT_FILE).read_text())["rows"]}["old"]
    assert (row["best_sample_l2"], row["worst_sample_l2"]) == (0.001, 0.003)
    assert [s["best_l2"] for s in row["samples"]] == [0.001, 0.003]


def test_failed_row_carries_its_reason_and_no_images(tmp_path):
    out = tmp_path / "out"
    fabricated_out(out, ["a", "b", "c"])
    write_report(out)
    row = next(r for r in page_data((out / REPORT_FILE).read_text())["rows"] if r["name"] == "c")
    assert row["status"] == "failed" and row["error"] == "bad file 2"
    assert row["samples"] == [] and row["crop"] is None


def test_crop_and_downscaled_results_are_embedded_and_results_referenced(tmp_path):
    crops = write_crops(tmp_path / "in", 1, size=8, name="a{k}.png")
    out = tmp_path / "out"
    fabricated_out(out, ["a0.png"])
    write_report(out, crops)
    row = page_data((out / REPORT_FILE).read_text())["rows"][0]

    def decode(url: str) -> np.ndarray:
        assert url.startswith("data:image/png;base64,")
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))

    assert np.array_equal(decode(row["crop"]), np.asarray(Image.open(crops / "a0.png")))
    assert row["crop_size"] == "8x8"
    sample = row["samples"][0]
    assert sample["image"] == "a0.png.png"
    # the check PULSE makes: the 32 px result through PULSE's downsampler (tested against the original's
    # values elsewhere) at the crop's 8 px, rounded to 8 bits
    result = torch.from_numpy(np.asarray(Image.open(out / "a0.png.png").convert("RGB"), dtype=np.float32) / 255)
    expected = BicubicDownsample(4)(result.permute(2, 0, 1)[None])[0].clamp(0, 1).permute(1, 2, 0)
    assert np.array_equal(decode(sample["down"]), (expected.numpy() * 255).round().astype(np.uint8))


def test_curves_come_from_the_log_subsampled(tmp_path):
    log = tmp_path / "a.jsonl"
    write_log(log, [1.0 / (s + 1) for s in range(500)])
    curves = read_curves(log)
    assert len(curves["l2"]) == len(curves["geocross"]) == len(curves["lr"]) == CURVE_POINTS
    assert curves["l2"][0] == 1.0 and curves["l2"][-1] == pytest.approx(1 / 500, rel=1e-3)
    assert curves["geocross"][0] == 10.0 and curves["lr"][-1] == pytest.approx(4.99)
    write_log(log, [0.5, 0.25], geocross=False)
    assert read_curves(log) == {"l2": [0.5, 0.25], "lr": [0.0, 0.01]}
    log.write_text('{"type":"run"}\n')
    assert read_curves(log) is None


def test_hostile_names_never_leave_the_json_block(tmp_path):
    out = tmp_path / "out"
    fabricated_out(out, [*HOSTILE, "</script><script>window.pwned=2</script>"])
    html = (out / REPORT_FILE).read_text() if write_report(out) else ""
    assert html.count("<script") == 2 and html.count("</script>") == 2  # the page's own two blocks
    assert "<img" not in html  # the page has no image tags of its own: its script makes them
    names = {r["name"] for r in page_data(html)["rows"]}
    assert set(HOSTILE) <= names
    urls = [s["image"] for r in page_data(html)["rows"] for s in r["samples"]]
    assert "%3Cimg%20src%3Dx%20onerror%3Dwindow.pwned%3D1%3E.png.png" in urls


def test_non_utf8_names_records_pointing_outside_out_and_hand_edited_records(tmp_path):
    out = tmp_path / "out"
    fabricated_out(out, ["ok"])
    record = read_records(out)[0]
    odd = {**record, "input": "caf\udce9.png", "outputs": ["../../etc/passwd"], "logs": ["/etc/passwd"]}
    edited = {**record, "input": "edited", "status": "failed", "error": {"why": float("nan")}, "seconds": "x"}
    edited_ok = {**record, "input": "edited_ok", "seconds": "x", "steps_run": "y", "worst_sample_l2": float("inf")}
    with open(out / "results.jsonl", "a") as f:  # NaN and Infinity: what Python's json reads back
        f.write("".join(json.dumps(r) + "\n" for r in (odd, edited, edited_ok)))
    damaged = []
    write_report(out, on_damaged=lambda path, line, why: damaged.append((path.name, line, why)))
    rows = {r["name"]: r for r in page_data((out / REPORT_FILE).read_text())["rows"]}
    # records of another shape (NaN is not JSON; "seconds": "x"): passed over, as `pulse upsample` does
    assert "edited" not in rows and "edited_ok" not in rows
    assert [(name, line) for name, line, _ in damaged] == [("results.jsonl", 3), ("results.jsonl", 4)]
    assert rows["caf\\udce9.png"]["samples"] == [
        {"image": None, "down": None, "best_l2": record["samples"][0]["best_l2"],
         "status": record["samples"][0]["status"], "face_score": None, "curve": None}]


# -- the command ----------------------------------------------------------------------------------------


def test_report_command_writes_the_page_and_opens_it(runner, tmp_path, monkeypatch):
    out = tmp_path / "out"
    fabricated_out(out, ["a", "b"])
    opened = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    result = runner.invoke(app, ["report", str(out), "--open"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "wrote" in result.stderr and "2 input(s)" in result.stderr
    assert opened == [(out / REPORT_FILE).resolve().as_uri()]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_report_command_errors(runner, tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.stderr and "Traceback" not in result.output
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "results.jsonl does not exist" in result.stderr
    (tmp_path / "results.jsonl").write_text("")
    result = runner.invoke(app, ["report", str(tmp_path), "--inputs", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.stderr


def test_report_command_cannot_write(runner, tmp_path):
    out = tmp_path / "out"
    fabricated_out(out, ["a"])
    (out / REPORT_FILE).mkdir()  # a folder where the page goes: the rename fails
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: cannot write the report") and "Traceback" not in result.output


def test_upsample_report_with_shards_sharing_out_and_with_no_inputs(runner, tmp_path, demo_checkpoint):
    crops = write_crops(tmp_path / "in", 6)  # shard 1/2: 0-3.png, shard 2/2: 4-5.png
    out = tmp_path / "out"
    common = ["--checkpoint", str(demo_checkpoint), "--steps", "2", "--report"]
    shards = []
    for shard in ("1/2", "2/2"):  # one after the other: each rewrites the page from every record in OUT
        result = runner.invoke(app, ["upsample", str(crops), str(out), "--shard", shard, *common])
        assert result.exit_code == 0, result.output
        assert f"wrote {out / REPORT_FILE}" in result.stderr
        shards.append({r["name"] for r in page_data((out / REPORT_FILE).read_text())["rows"]})
    assert shards == [{f"{k}.png" for k in range(4)}, {f"{k}.png" for k in range(6)}]
    rows = page_data((out / REPORT_FILE).read_text())["rows"]
    assert all(r["crop"] and r["samples"][0]["down"] and r["samples"][0]["curve"] for r in rows)

    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["upsample", str(empty), str(tmp_path / "out2"), *common])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert not (tmp_path / "out2" / REPORT_FILE).exists()  # no records, no page


# -- in a real browser ----------------------------------------------------------------------------------

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install "
                                                                "chromium); the report's browser test needs it")

# Every image of the rows shown loaded now (they load lazily, as they scroll into view), then what each row shows.
LOAD_IMAGES = """Promise.all([...document.images].map((i) => {
    i.loading = "eager"; return i.decode().catch(() => 0); }))
  .then(() => [...document.querySelectorAll(".row")].map((r) => ({
    name: r.querySelector(".name").textContent, status: r.dataset.status,
    images: [...r.querySelectorAll("img")].map((i) => i.naturalWidth),
    curves: r.querySelectorAll("svg.curve polyline").length, eps: r.querySelectorAll("svg.curve line.eps").length,
    text: r.textContent })))"""


def choose(browser: Chromium, select: str, value: str) -> list[str]:
    """Pick an option as a person would; the names of the rows shown afterwards."""
    return browser.evaluate(f"""(() => {{ const s = document.getElementById({json.dumps(select)});
        s.value = {json.dumps(value)}; s.dispatchEvent(new Event("change"));
        return [...document.querySelectorAll(".row .name")].map((n) => n.textContent); }})()""")


@needs_chromium
@pytest.mark.slow
def test_demo_run_report_in_chromium(runner, tmp_path, demo_checkpoint):
    crops = write_crops(tmp_path / "in", 2, name="face{k}.png")
    for k, name in enumerate(HOSTILE):
        random_crop(16, seed=10 + k).save(crops / name)
    (crops / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    result = runner.invoke(app, ["upsample", str(crops), str(out), "--checkpoint", str(demo_checkpoint),
                                 "--steps", "3", "--samples", "2", "--batch-size", "4", "--report", "--quiet"])
    assert result.exit_code == 1, result.output  # broken.png failed
    records = {r["input"]: r for r in read_records(out)}
    assert len(records) == 5 and records["broken.png"]["status"] == "failed"

    with Chromium(CHROMIUM) as browser:
        browser.open(out / REPORT_FILE)
        assert browser.evaluate("document.body.dataset.ready") == "1"
        rows = browser.evaluate(LOAD_IMAGES)
        assert sorted(r["name"] for r in rows) == sorted(records)
        for row in rows:
            assert row["status"] == records[row["name"]]["status"]
            if row["status"] == "failed":
                assert records[row["name"]]["error"] in row["text"] and row["images"] == []
                continue
            # the crop, per sample its result and the result downscaled back, and the samples' disagreement map
            assert len(row["images"]) == 1 + 2 * 2 + 1 and all(w > 0 for w in row["images"]), row
            assert row["images"][1] == row["images"][5] == 128 and row["images"][0] == row["images"][2] == 16
            assert row["curves"] == 3 * 2 and row["eps"] == 1  # L2, GEOCROSS and lr, one line per sample
        # hostile names are text: the element shows them, and nothing in them ran
        assert browser.evaluate("window.pwned === undefined && document.title") == "pulse report"
        assert browser.evaluate("document.querySelectorAll('script').length") == 2
        assert browser.evaluate("[...document.images].some((i) => i.getAttribute('src') === 'x')") is False

        assert choose(browser, "filter", "failed") == ["broken.png"]
        converged = sorted(n for n, r in records.items() if r["status"] == "not_converged")
        assert sorted(choose(browser, "filter", "not_converged")) == converged
        by_l2 = sorted(converged, key=lambda n: records[n]["worst_sample_l2"])  # the sample deciding the status
        choose(browser, "filter", "all")
        assert choose(browser, "sort", "l2") == [*by_l2, "broken.png"]  # no L2: last
        assert choose(browser, "sort", "l2desc") == [*by_l2[::-1], "broken.png"]
        face = next(r for r in rows if r["name"] == "face0.png")
        best, worst = records["face0.png"]["best_sample_l2"], records["face0.png"]["worst_sample_l2"]
        shown = re.search(r"L2 best ([0-9.e+-]+), worst ([0-9.e+-]+); eps 0.00200", face["text"])  # each named
        assert shown and [float(v) for v in shown.groups()] == [pytest.approx(best, rel=1e-3),
                                                                pytest.approx(worst, rel=1e-3)]
        numbers = browser.evaluate("document.getElementById('numbers').textContent")
        assert "0 / 4 / 1" in numbers and records["face0.png"]["checkpoint_sha256"] in numbers
        assert browser.evaluate("document.getElementById('notice').textContent") == SHEET_NOTICE
        assert browser.errors() == []

    # a rerun skips the done inputs: the page still counts each input by its results, in the header and filter
    rerun = runner.invoke(app, ["upsample", str(crops), str(out), "--checkpoint", str(demo_checkpoint),
                                "--steps", "3", "--samples", "2", "--batch-size", "4", "--report", "--quiet"])
    assert rerun.exit_code == 1, rerun.output
    with Chromium(CHROMIUM) as browser:
        browser.open(out / REPORT_FILE)
        numbers = browser.evaluate("document.getElementById('numbers').textContent")
        assert "0 / 4 / 1 (4 done by an earlier run, skipped by the latest)" in numbers and "0 of 5" in numbers
        assert sorted(choose(browser, "filter", "not_converged")) == converged
        assert browser.evaluate("[...document.getElementById('filter').options].map((o) => o.value)") == \
            ["all", "ok", "not_converged", "failed"]
        assert browser.errors() == []


@needs_chromium
def test_large_report_pages_in_chromium(tmp_path):
    out = tmp_path / "out"
    names = [f"in{k:03d}.png" for k in range(120)]
    fabricated_out(out, names)
    write_report(out)
    with Chromium(CHROMIUM) as browser:
        browser.open(out / REPORT_FILE)
        shown = browser.evaluate("[...document.querySelectorAll('.row .name')].map((n) => n.textContent)")
        assert shown == names[:50]
        browser.evaluate("document.getElementById('next').click()")
        browser.evaluate("document.getElementById('next').click()")
        shown = browser.evaluate("[...document.querySelectorAll('.row .name')].map((n) => n.textContent)")
        assert shown == names[100:]
        assert browser.evaluate("document.getElementById('next').disabled") is True
        assert browser.evaluate("document.getElementById('shown').textContent") == "rows 101-120 of 120"
        failed = choose(browser, "filter", "failed")
        assert failed == [n for k, n in enumerate(names) if k % 3 == 2][:50]
        rows = browser.evaluate(LOAD_IMAGES)
        assert all(r["images"] == [] for r in rows)
        records = read_records(out)
        assert choose(browser, "filter", "ok") == [r["input"] for r in records if r["status"] == "ok"][:50]
        rows = browser.evaluate(LOAD_IMAGES)
        assert rows and all(r["images"] == [32] for r in rows)  # no inputs folder: the result only
        assert browser.errors() == []
