"""OUT/report.html: one page with every input of OUT, its crop, its results, their loss curves and the run's
numbers, built from results.jsonl, the per-sample logs and the images in OUT.

Images: the crop and each result downscaled back (PULSE's bicubic check) are input-sized, so they are
embedded as data: URLs (a few hundred bytes each); the results themselves are referenced by relative path
and loaded lazily, one page of rows at a time (see bench/README.md for why, measured on 10,000 inputs).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import torch
from PIL import Image

from ..align.identity import identity_sentence, run_counts, run_sentence
from ..errors import describe_os_error, printable
from ..files.atomic import (
    JsonlTail,
    atomic_write_bytes,
    confine,
    is_plain_file,
    locked,
    open_regular,
    remove_stale_temp_files,
)
from ..files.images import ImageError, load_rgb, to_pil
from ..files.sheets import SHEET_NOTICE
from ..search.downsample import BicubicDownsample
from .disagreement import MAP_LINE, SCALE_MAX, colour_bar
from .records import (
    DONE,
    FAILED,
    RESULTS_FILE,
    SKIPPED,
    STATUSES,
    Damaged,
    check_log_line,
    check_result_line,
    checked_lines,
    not_an_output_folder,
    sample_l2_range,
)
from .report_page import PAGE, ROWS_PER_PAGE, SCRIPT, STYLE

REPORT_FILE = "report.html"
CURVE_POINTS = 60  # points per curve kept from a log: enough for its shape, small for 10,000 inputs
CROP_MAX = 128  # a larger input is embedded shrunk to this size


class ReportError(Exception):
    """OUT cannot give a report (no results.jsonl, or one that cannot be read)."""


@dataclass
class ReportSummary:
    path: Path
    rows: int
    bytes: int
    seconds: float
    written: bool = True  # False: a report made from more records (by another process) was there; it is kept


# (file, line number, why): a line of results.jsonl or of a log passed over
OnDamaged = Callable[[Path, int, str], None]


def write_report(out_dir: Path, inputs_dir: Path | None = None, on_damaged: OnDamaged | None = None
                 ) -> ReportSummary:
    """Write OUT/report.html atomically from what OUT holds now. `inputs_dir`: the folder the inputs were
    read from (their crops are shown); default OUT/crops when it exists (an --align run), else none.

    Records and logs are read through the one shape check (`records.checked_lines`): a line of another shape
    is passed over and `on_damaged` hears of it. Nothing in OUT is read through a symbolic link (see
    `files.atomic.confine`). Several processes may write the report of one OUT at once: the page records how
    much of results.jsonl it was made from, and a page made from less never replaces one made from more."""
    started = time.monotonic()
    out_dir = Path(out_dir)
    results = out_dir / RESULTS_FILE
    if (reason := not_an_output_folder(out_dir)) is not None:
        raise ReportError(reason)
    confine(out_dir)
    remove_stale_temp_files(out_dir)  # a killed writer's page, say
    if inputs_dir is None and (out_dir / "crops").is_dir():
        inputs_dir = out_dir / "crops"
    tail = JsonlTail(results, digest=True)
    try:
        entries = tail.new_lines()
    except OSError as exc:
        raise ReportError(f"cannot read {describe_os_error(exc)}") from None
    damaged = (lambda line, why: on_damaged(results, line, why)) if on_damaged is not None else None
    latest, last_done = _latest_records([r for _, r in checked_lines(entries, check_result_line, damaged)])
    builder = _RowBuilder(out_dir, inputs_dir, on_damaged)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # input-sized images: waking a thread pool per tiny op costs ~100x (measured)
    try:
        rows = [builder.row(record, last_done.get(name)) for name, record in latest.items()]
    finally:
        torch.set_num_threads(threads)
    data = {"run": _run_numbers(list(latest.values()), last_done, inputs_dir), "rows": rows}
    made_from = _Generation(tail.offset, tail.sha256())
    page = render_page(data, made_from)
    path = out_dir / REPORT_FILE
    written = atomic_write_bytes(path, page, commit=functools.partial(_replace_unless_newer, results, path, made_from))
    return ReportSummary(path, len(rows), len(page), time.monotonic() - started, written)


@dataclass(frozen=True)
class _Generation:
    """How much of results.jsonl a page was made from: its first `size` bytes, whose sha256 is `sha256`."""

    size: int
    sha256: str

    def mark(self) -> str:
        return f"{self.size} {self.sha256}"


_MARK = re.compile(rb'<meta name="pulse-records" content="(\d+) ([0-9a-f]{64})">')


def _page_generation(path: Path) -> _Generation | None:
    """What the report at `path` was made from, from its head; None for none (or a page without the mark)."""
    try:
        with os.fdopen(open_regular(path, os.O_RDONLY), "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    found = _MARK.search(head)
    return _Generation(int(found.group(1)), found.group(2).decode()) if found else None


def _replace_unless_newer(results: Path, path: Path, mine: _Generation, replace: Callable[[], None]) -> bool:
    """Put the new page in place, unless the page there was made from more of results.jsonl as it still is
    (a writer that read the records later and finished sooner). Under results.jsonl's lock, so that no
    other writer's check and rename comes between, and briefly: appends wait only for this."""
    with locked(results, write=False) as fd:
        theirs = _page_generation(path)
        if theirs is not None and mine.size < theirs.size <= os.fstat(fd).st_size:
            digest, done = hashlib.sha256(), 0
            while done < theirs.size:
                block = os.pread(fd, min(1 << 20, theirs.size - done), done)
                if not block:  # cut meanwhile, by hand: theirs is no page of this file
                    break
                digest.update(block)
                done += len(block)
            if digest.hexdigest() == theirs.sha256:
                return False
        replace()
        return True


def render_page(data: dict[str, Any], made_from: _Generation | None = None) -> bytes:
    """The HTML page holding `data` as JSON. `<`, `>` and `&` are escaped inside the JSON so that no value
    can end its script block; the page's policy lets only this page's own style and script run. `made_from`:
    how much of results.jsonl it shows, marked in its head (see `write_report`)."""
    blob = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    blob = blob.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    script = SCRIPT % {"per_page": ROWS_PER_PAGE}
    html = PAGE % {"style": STYLE, "script": script, "data": blob,
                   "style_hash": _csp_hash(STYLE), "script_hash": _csp_hash(script),
                   "records": made_from.mark() if made_from is not None else "0 " + "0" * 64}
    return html.encode("ascii")


def _csp_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _latest_records(records: list[dict[str, Any]]) -> tuple[dict[str, dict], dict[str, dict]]:
    """Per input, its latest record (what OUT says of it now), and its latest ok / not_converged record
    (a skipped record repeats that one's results but not its time). The records are checked ones."""
    latest: dict[str, dict] = {}
    last_done: dict[str, dict] = {}
    for record in records:
        name, status = record["input"], record["status"]
        latest[name] = record
        if status in DONE:
            last_done[name] = record
    return latest, last_done


def _distinct(values: list[Any]) -> str:
    seen = list(dict.fromkeys(json.dumps(v) if isinstance(v, (dict, list)) else v for v in values if v is not None))
    return ", ".join(str(v) for v in seen) if seen else "-"


def outcome(record: dict[str, Any]) -> str:
    """Where an input stands by its latest record: ok, not_converged or failed; a skipped input counts as
    what its earlier run found (a report of an OUT several runs wrote counts each input once, by its results).
    `skipped` only for a skipped record that does not say (hand-edited)."""
    status = record.get("status")
    if status == SKIPPED:
        earlier = record.get("earlier_status")
        return earlier if earlier in DONE else SKIPPED
    return status


def _run_numbers(records: list[dict[str, Any]], last_done: dict[str, dict], inputs_dir: Path | None) -> dict:
    counts = dict.fromkeys(STATUSES, 0)
    for record in records:
        counts[outcome(record)] += 1
    skipped = sum(r["status"] == SKIPPED for r in records)
    searches = [r.get("search") if isinstance(r.get("search"), dict) else {} for r in records]
    eps_values = [s.get("eps") for s in searches if isinstance(s.get("eps"), (int, float))]
    seconds = [_number(r.get("seconds")) or 0.0 for r in last_done.values()]
    searched = sum(s > 0 for s in seconds)
    total = sum(seconds)
    checkpoints = [f"{printable(str(r.get('checkpoint')))} (sha256 {r.get('checkpoint_sha256') or 'unknown'})"
                   for r in records if r.get("checkpoint")]
    samples = [len(r.get("outputs") or []) for r in records if r.get("status") != FAILED]
    numbers = [
        ("inputs", str(len(records))),
        ("ok / not converged / failed",
         f"{counts['ok']} / {counts['not_converged']} / {counts['failed']}"
         + (f" / {counts['skipped']} skipped, results unknown" if counts["skipped"] else "")
         + (f" ({skipped} done by an earlier run, skipped by the latest)" if skipped else "")),
        ("met eps", f"{counts['ok']} of {len(records)}"),
        ("eps", _distinct(eps_values)),
        ("search mode", _distinct([s.get("mode", "pulse") for s in searches])),
        ("steps", _distinct([s.get("steps") for s in searches])),
        ("loss", _distinct([s.get("loss") for s in searches])),
        ("samples per input", _distinct(samples)),
        ("checkpoint", _distinct(checkpoints)),
        ("search time", f"{total:.1f} s in all, {total / searched:.2f} s per input searched (the time of "
                        "their optimisation steps)" if searched else "-"),
        ("inputs folder", printable(str(inputs_dir)) if inputs_dir else "not given: crops are not shown"),
        ("written", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    counts = run_counts(r.get("identity") for r in records)
    if counts:
        numbers.insert(3, ("identity (dlib)", run_sentence(counts)))
    eps = eps_values[-1] if eps_values else None
    run = {"notice": SHEET_NOTICE, "numbers": numbers, "eps": eps}
    if any(isinstance(r.get("disagreement"), dict) for r in records):
        run["scale"] = {"bar": _data_url(colour_bar(256, 12)), "max": SCALE_MAX, "text": MAP_LINE}
    return run


def _text(value: Any) -> str | None:
    """A record's free-form value as text for the page (a hand-edited record may hold anything)."""
    return None if value is None else printable(str(value))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _url(rel: str) -> str:
    """A relative URL for a path relative to OUT: every character that means something in a URL quoted,
    so a name can be neither a scheme (`javascript:`) nor a query; bytes not valid UTF-8 kept as bytes."""
    return quote(rel.encode("utf-8", "surrogateescape"), safe="/")


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _inside(root: Path, rel: str) -> Path | None:
    """`root/rel` when `rel` (from a record) is a plain relative path that stays inside `root`."""
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        return None
    return root.joinpath(*parts)


def _subsample(values: list[float], points: int = CURVE_POINTS) -> list[float]:
    if len(values) <= points:
        return [float(f"{v:.3g}") for v in values]
    picks = [round(i * (len(values) - 1) / (points - 1)) for i in range(points)]
    return [float(f"{values[i]:.3g}") for i in picks]


def read_curves(log: Path, on_damaged: Damaged | None = None) -> dict[str, list[float]] | None:
    """L2 (unclamped), GEOCROSS and learning rate per step, from one sample's log (its lines through the one
    shape check, `records.check_log_line`: `on_damaged` hears of each other line); None if unreadable."""
    l2, geocross, lr = [], [], []
    try:
        entries = JsonlTail(log).new_lines()
    except OSError:
        return None
    for _, line in checked_lines(entries, check_log_line, on_damaged):
        if line["type"] != "step":
            continue
        value = _number(line["l2"])
        if value is None:
            continue
        l2.append(value)
        geocross_value = _number(line["loss"].get("GEOCROSS"))
        if geocross_value is not None:
            geocross.append(geocross_value)
        if _number(line["lr"]) is not None:
            lr.append(line["lr"])
    if not l2:
        return None
    curves = {"l2": _subsample(l2)}
    if len(geocross) == len(l2):
        curves["geocross"] = _subsample(geocross)
    if len(lr) == len(l2):
        curves["lr"] = _subsample(lr)
    return curves


class _RowBuilder:
    def __init__(self, out_dir: Path, inputs_dir: Path | None, on_damaged: OnDamaged | None = None):
        self.out_dir = out_dir
        self.inputs_dir = inputs_dir
        self.on_damaged = on_damaged
        self._downsamplers: dict[int, BicubicDownsample] = {}

    def _curves(self, log: Path) -> dict[str, list[float]] | None:
        if self.on_damaged is None:
            return read_curves(log)
        on_damaged = self.on_damaged
        return read_curves(log, lambda line, why: on_damaged(log, line, why))

    def _crop(self, name: str) -> tuple[torch.Tensor | None, str | None]:
        path = _inside(self.inputs_dir, name) if self.inputs_dir is not None else None
        if path is None or not is_plain_file(path):
            return None, None
        try:
            crop = load_rgb(path)
        except (ImageError, OSError):
            return None, None
        image = to_pil(crop)
        if max(image.size) > CROP_MAX:
            image.thumbnail((CROP_MAX, CROP_MAX), Image.Resampling.LANCZOS)
        return crop, _data_url(image)

    @torch.no_grad()
    def _downscaled(self, result: Path, crop: torch.Tensor | None) -> str | None:
        """The result as PULSE's downsampler sees it at the input's size (None without the crop)."""
        if crop is None:
            return None
        try:
            image = load_rgb(result)
        except (ImageError, OSError):
            return None
        factor = image.shape[-1] // crop.shape[-1]
        if factor < 1 or image.shape[-1] != factor * crop.shape[-1] or image.shape[-2] != image.shape[-1]:
            return None
        if factor not in self._downsamplers:
            self._downsamplers[factor] = BicubicDownsample(factor)
        return _data_url(to_pil(self._downsamplers[factor](image[None])[0]))

    def row(self, record: dict[str, Any], done: dict[str, Any] | None) -> dict[str, Any]:
        name, status = record["input"], record["status"]
        seconds = record.get("seconds")
        if status == SKIPPED and done is not None:
            seconds = done.get("seconds")
        row: dict[str, Any] = {
            "name": printable(name), "status": status, "error": _text(record.get("error")),
            "earlier_status": _text(record.get("earlier_status")) if status == SKIPPED else None,
            "outcome": outcome(record),
            **dict(zip(("best_sample_l2", "worst_sample_l2"), sample_l2_range(record), strict=True)),
            "steps": record.get("steps_run") if status != FAILED and isinstance(record.get("steps_run"), int) else None,
            "seconds": _number(seconds), "crop": None, "crop_size": None, "samples": [],
        }
        if status == FAILED:
            return row
        crop, row["crop"] = self._crop(name)
        if crop is not None:
            row["crop_size"] = f"{crop.shape[-1]}x{crop.shape[-2]}"
        samples = record.get("samples") or []
        outputs = record.get("outputs") or []
        logs = record.get("logs") or []
        for k, output in enumerate(outputs):
            sample = samples[k] if k < len(samples) else {}
            image = _inside(self.out_dir, output)
            present = image is not None and is_plain_file(image)  # never through a link in OUT
            log = _inside(self.out_dir, logs[k]) if k < len(logs) else None
            row["samples"].append({
                "image": _url(output) if present else None,
                "down": self._downscaled(image, crop) if present else None,
                "best_l2": _number(sample.get("best_l2", row["worst_sample_l2"] if len(outputs) == 1 else None)),
                "status": _text(sample.get("status")),
                "face_score": _number(sample.get("face_score")),
                "curve": self._curves(log) if log is not None else None,
            })
        row.update(self._invented(record))
        return row

    def _invented(self, record: dict[str, Any]) -> dict[str, Any]:
        """With several samples: their disagreement map (linked, as results are) and its mean; with
        --check-face, how many people they are, as a sentence. Nothing for a record without them."""
        shown: dict[str, Any] = {}
        described = record.get("disagreement")
        if isinstance(described, dict) and isinstance(described.get("map"), str):
            path = _inside(self.out_dir, described["map"])
            present = path is not None and is_plain_file(path)  # never through a link in OUT
            shown["disagreement"] = {"image": _url(described["map"]) if present else None,
                                     "mean": _number(described.get("mean"))}
        identity = record.get("identity")
        if isinstance(identity, dict):
            shown["identity"] = _text(identity_sentence(identity))
        return shown
