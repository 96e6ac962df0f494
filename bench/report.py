"""`pulse report` on large runs: time to write OUT/report.html, its size, and how fast headless Chromium opens
it, for results referenced by relative path (what `pulse report` does) against thumbnails embedded.

The large OUTs are made from a real run (default: `make demo`'s, 100 steps, 2 samples, 128 px results): its
records, logs, results and crops repeated under N names (hard links), so the report reads N real logs and
images. Usage:
    python bench/report.py --source demo-out/untrained --inputs examples/crops --counts 1000 10000
    python bench/report.py --source demo-out/untrained --inputs examples/crops --screenshot docs/report.png
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from browser import Chromium, find_chromium  # noqa: E402

from pulse_cli.files.atomic import atomic_write_bytes, read_jsonl  # noqa: E402
from pulse_cli.run.report import REPORT_FILE, render_page, write_report  # noqa: E402

THUMBNAIL = 128


def repeat_run(source: Path, inputs: Path, count: int, into: Path) -> tuple[Path, Path]:
    """An OUT of `count` inputs (and their IN) from the records, logs, results and crops of `source`."""
    records = [r for r in read_jsonl(source / "results.jsonl") if r.get("status") in ("ok", "not_converged")]
    out, crops = into / "out", into / "in"
    (out / "logs").mkdir(parents=True)
    crops.mkdir()
    lines = []
    for k in range(count):
        record = dict(records[k % len(records)])
        prefix = f"{k:05d}-"
        os.link(inputs / record["input"], crops / (prefix + record["input"]))
        for name in record["outputs"] + record["logs"]:
            target = out / (name.replace("logs/", "logs/" + prefix) if name.startswith("logs/") else prefix + name)
            os.link(source / name, target)
        record["input"] = prefix + record["input"]
        record["outputs"] = [prefix + n for n in record["outputs"]]
        record["logs"] = [n.replace("logs/", "logs/" + prefix) for n in record["logs"]]
        record["samples"] = [{**s, "output": prefix + s["output"]} for s in record["samples"]]
        lines.append(json.dumps(record) + "\n")
    (out / "results.jsonl").write_text("".join(lines))
    return out, crops


def page_data(path: Path) -> dict:
    html = path.read_text()
    return json.loads(re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1))


def embed_thumbnails(out: Path) -> float:
    """Rewrite OUT/report.html with each result embedded as a 128 px PNG; the seconds it takes."""
    started = time.monotonic()
    data = page_data(out / REPORT_FILE)
    for row in data["rows"]:
        for sample in row["samples"]:
            if sample["image"]:
                with Image.open(out / sample["image"]) as image:
                    image = image.convert("RGB")
                    image.thumbnail((THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS)
                    buffer = io.BytesIO()
                    image.save(buffer, format="PNG")
                sample["image"] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    atomic_write_bytes(out / "report-embedded.html", render_page(data))
    return time.monotonic() - started


FIRST_PAGE_IMAGES = """Promise.all([...document.images].map((i) => { i.loading = "eager";
    return i.decode().catch(() => 0); })).then(() => document.images.length)"""


def open_in_browser(page: Path) -> dict:
    with Chromium(find_chromium()) as browser:
        seconds = browser.open(page)
        started = time.monotonic()
        images = browser.evaluate(FIRST_PAGE_IMAGES)
        images_seconds = time.monotonic() - started
        started = time.monotonic()
        browser.evaluate("document.getElementById('sort').value = 'l2'; "
                         "document.getElementById('sort').dispatchEvent(new Event('change'))")
        sort_seconds = time.monotonic() - started
        rows = browser.evaluate("document.querySelectorAll('.row').length")
        errors = [e[:160] for e in browser.errors()]
    return {"load_s": round(seconds, 2), "first_page_images": images, "first_page_images_s": round(images_seconds, 2),
            "sort_s": round(sort_seconds, 2), "rows_shown": rows, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO / "demo-out" / "untrained")
    parser.add_argument("--inputs", type=Path, default=REPO / "examples" / "crops")
    parser.add_argument("--counts", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "report_results.json")
    parser.add_argument("--screenshot", type=Path, help="Only write a screenshot of SOURCE's report here.")
    args = parser.parse_args()

    if args.screenshot:
        write_report(args.source, args.inputs)
        with Chromium(find_chromium(), width=1100, height=760) as browser:
            browser.open(args.source / REPORT_FILE)
            browser.evaluate(FIRST_PAGE_IMAGES)
            assert not browser.errors(), browser.errors()
            browser.screenshot(args.screenshot)
        with Image.open(args.screenshot) as shot:  # a small PNG for the README
            shot.convert("RGB").quantize(colors=128, dither=Image.Dither.NONE).save(args.screenshot, optimize=True)
        print(f"wrote {args.screenshot} ({args.screenshot.stat().st_size / 1e3:.0f} kB)")
        return

    results = []
    for count in args.counts:
        with tempfile.TemporaryDirectory(prefix="pulse-report-bench-") as tmp:
            out, crops = repeat_run(args.source, args.inputs, count, Path(tmp))
            started = time.monotonic()
            summary = write_report(out, crops)
            relative_s = time.monotonic() - started
            embed_s = embed_thumbnails(out)
            row = {
                "inputs": count,
                "relative": {"write_s": round(relative_s, 2), "mb": round(summary.bytes / 1e6, 2),
                             **open_in_browser(out / REPORT_FILE)},
                "embedded": {"write_s": round(relative_s + embed_s, 2),
                             "mb": round((out / "report-embedded.html").stat().st_size / 1e6, 2),
                             **open_in_browser(out / "report-embedded.html")},
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    source = {"source": str(args.source), "records": len(read_jsonl(args.source / "results.jsonl"))}
    args.out.write_text(json.dumps({"source": source, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
