"""What a run writes about itself: the results line, the log's run header and its step lines.

Each is a dataclass; `to_json` is the one serializer. The status rule is written once, here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..files.atomic import describe_file_kind
from ..version import __version__

RESULTS_FILE = "results.jsonl"


def not_an_output_folder(out_dir: Path) -> str | None:
    """Why `out_dir` cannot be read as an output folder of `pulse upsample` (no results file, or one that is
    not a plain file: records are never read through a link, nor from a FIFO), or None."""
    results = Path(out_dir) / RESULTS_FILE
    try:
        kind = os.lstat(results).st_mode
    except FileNotFoundError:
        return f"{results} does not exist: not an output folder of 'pulse upsample'"
    except OSError as exc:
        return f"cannot read {results} ({exc.strerror or exc})"
    if not stat.S_ISREG(kind):
        return f"{results} is {describe_file_kind(kind)}, not a plain file: pulse reads its records only from one"
    return None


OK, NOT_CONVERGED, FAILED, SKIPPED = "ok", "not_converged", "failed", "skipped"
STATUSES = (OK, NOT_CONVERGED, FAILED, SKIPPED)
DONE = (OK, NOT_CONVERGED)  # an input with such a record (and its outputs) is done


def search_status(converged: bool) -> str:
    """A search is `ok` when some iterate met eps; else its best-L2 image is written as `not_converged`."""
    return OK if converged else NOT_CONVERGED


def combined_status(statuses: Iterable[str]) -> str:
    """An input with several samples is `ok` only when every sample is."""
    return OK if all(s == OK for s in statuses) else NOT_CONVERGED


def search_options(config: Any) -> dict[str, Any]:
    """A run's search options as recorded in logs and results (what a rerun compares), as the search used
    them (see `as_used`)."""
    return as_used(json.loads(json.dumps({**dataclasses.asdict(config),
                                          "bad_noise_layers": list(config.bad_noise_layers)})))


def as_used(search: dict[str, Any]) -> dict[str, Any]:
    """Recorded search options as the search used them: with `--search robust`, the options it decides itself
    hold its values (`RobustOptions.overrides`), whatever an earlier version recorded there."""
    if search.get("mode") != "robust":
        return search
    from ..search.robust import RobustOptions

    return {**search, **RobustOptions().overrides()}


@dataclass
class StepLine:
    """One optimisation step in a log: `loss` holds each term as the loss string names it (L2 clamped at
    eps, as optimised); `l2` is the unclamped mean squared error at input resolution, compared with eps."""

    step: int
    lr: float
    loss: dict[str, float]
    l2: float
    total: float
    type: str = "step"


@dataclass
class RunHeader:
    """The first line of every log: everything needed to repeat the result."""

    device: str
    input: str
    input_sha256: str
    seed: int
    sample: int
    image_seed: int
    checkpoint: str
    checkpoint_sha256: str | None
    generator: dict[str, Any]
    search: dict[str, Any]
    batch_size: int
    samples: int
    threads: int | None = None  # torch threads the search ran with (another count may round differently)
    type: str = "run"
    tool: str = "pulse-cli"
    version: str = __version__
    torch: str = ""
    python: str = field(default_factory=platform.python_version)

    def __post_init__(self) -> None:
        if not self.torch:
            import torch

            self.torch = torch.__version__


@dataclass
class SampleRecord:
    """One sample of an input, inside its results line."""

    output: str
    status: str
    best_l2: float
    best_step: int
    best_total: float
    steps_run: int
    seconds: float
    image_seed: int
    threads: int | None = None  # torch threads the search ran with (as in its log's header)
    restarts: list[int] | None = None  # --search robust: the steps at which it began again from a new start


class RecordError(ValueError):
    """A line of results.jsonl (or of a log) that is not a record of the shape this version writes; one line."""


MAX_DEPTH = 16  # records nest 4 levels deep; a line nested deeper is not one of them


def check_values(data: Any) -> None:
    """RecordError unless every value in `data` is one a record can hold: nested at most MAX_DEPTH levels,
    every number finite and within a float's range (a 400-digit integer is not one), so that no later use of
    the line (arithmetic, formatting, writing it again) can fail on it."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise RecordError(f"nested more than {MAX_DEPTH} levels deep")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and not _finite(value):
            raise RecordError("holds a number that is not finite or too large")


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _optional(check: Any) -> Any:
    return lambda value: value is None or check(value)


# What each field of a results line may hold (JSON has no NaN: a non-finite number is written as null).
_SAMPLE_FIELDS: dict[str, tuple[Any, str]] = {
    "output": (lambda v: isinstance(v, str), "text"),
    "status": (lambda v: v in STATUSES, "a status"),
    "best_l2": (_optional(_is_number), "a number"),
    "best_step": (_optional(_is_int), "a whole number"),
    "best_total": (_optional(_is_number), "a number"),
    "steps_run": (_optional(_is_int), "a whole number"),
    "seconds": (_optional(_is_number), "a number"),
    "image_seed": (_optional(_is_int), "a whole number"),
    "threads": (_optional(_is_int), "a whole number"),
    "restarts": (_optional(lambda v: isinstance(v, list) and all(_is_int(x) for x in v)), "a list of step numbers"),
}


def _is_sample(value: Any) -> bool:
    return isinstance(value, dict) and all(check(value[k]) for k, (check, _) in _SAMPLE_FIELDS.items() if k in value)


_RESULT_FIELDS: dict[str, tuple[Any, str]] = {
    "input": (lambda v: isinstance(v, str), "text"),
    "status": (lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
    "outputs": (_is_text_list, "a list of file names"),
    "logs": (_is_text_list, "a list of file names"),
    "seed": (_optional(_is_int), "a whole number"),
    "checkpoint": (_optional(lambda v: isinstance(v, str)), "text"),
    "checkpoint_sha256": (_optional(lambda v: isinstance(v, str)), "text"),
    "worst_sample_l2": (_optional(_is_number), "a number"),
    "best_sample_l2": (_optional(_is_number), "a number"),
    "best_l2": (_optional(_is_number), "a number"),  # older lines: the worst sample's (see `sample_l2_range`)
    "best_step": (_optional(_is_int), "a whole number"),  # older lines: the worst sample's
    "steps_run": (_optional(_is_int), "a whole number"),
    "seconds": (_optional(_is_number), "a number"),
    "samples": (lambda v: isinstance(v, list) and all(_is_sample(s) for s in v), "a list of sample records"),
    "error": (_optional(lambda v: isinstance(v, str)), "text"),
    "diversity": (_optional(lambda v: isinstance(v, dict) and all(_optional(_is_number)(x) for x in v.values())),
                  "an object of numbers"),
    "search": (_optional(lambda v: isinstance(v, dict)), "an object"),
    "disagreement": (_optional(lambda v: isinstance(v, dict)), "an object"),
    "identity": (_optional(lambda v: isinstance(v, dict)), "an object"),
    "earlier_status": (_optional(lambda v: v in STATUSES), "a status"),
}
_REQUIRED = ("input", "status")


@dataclass
class CheckedSampleRecord(SampleRecord):
    """A sample of a run with --check-face: the best score of dlib's face detector on the result, None (null)
    when it finds no face."""

    face_score: float | None = None


def has_no_face(sample: SampleRecord | dict[str, Any]) -> bool:
    """Whether a sample was checked (--check-face) and no face was found in it."""
    if isinstance(sample, dict):
        return "face_score" in sample and sample["face_score"] is None
    return isinstance(sample, CheckedSampleRecord) and sample.face_score is None


@dataclass
class ResultRecord:
    """One line of `results.jsonl`: one input of one run."""

    input: str
    outputs: list[str]
    logs: list[str]
    seed: int
    checkpoint: str
    checkpoint_sha256: str | None
    status: str
    worst_sample_l2: float | None = None  # the highest of its samples' L2: the sample that decides the status
    best_sample_l2: float | None = None  # the lowest (with one sample, both are its L2)
    steps_run: int = 0
    seconds: float = 0.0
    samples: list[SampleRecord | dict[str, Any]] = field(default_factory=list)  # dicts: from an earlier run
    error: str | None = None
    diversity: dict[str, float] | None = None  # only with several samples
    search: dict[str, Any] | None = None  # the search options the outputs were made with
    earlier_status: str | None = None  # skipped: the status the earlier run recorded (ok / not_converged)
    no_face: int | None = None  # with --check-face: how many of its samples show no face to dlib's detector
    # with several samples: the disagreement map's file (relative to OUT), its mean and max, and its scale
    disagreement: dict[str, Any] | None = None
    identity: dict[str, Any] | None = None  # with --check-face and several samples: how many people they are

    @property
    def met_eps(self) -> bool | None:
        """Whether the written results met eps (for a skipped input, as recorded); None if none exist."""
        status = self.earlier_status if self.status == SKIPPED else self.status
        return None if status not in DONE else status == OK

    @classmethod
    def from_json(cls, data: Any) -> ResultRecord:
        """The record a results line holds, every field checked (RecordError, one line, for a line of another
        shape: it is never trusted). Fields this version does not know are passed over."""
        if not isinstance(data, dict):
            raise RecordError("not a JSON object")
        check_values(data)
        for name in _REQUIRED:
            if name not in data:
                raise RecordError(f"no {name!r}")
        for name, (check, expected) in _RESULT_FIELDS.items():
            if name in data and not check(data[name]):
                raise RecordError(f"{name!r} is not {expected}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("outputs", [])
        values.setdefault("logs", [])
        values.setdefault("seed", 0)
        values.setdefault("checkpoint", "")
        values.setdefault("checkpoint_sha256", None)
        if "worst_sample_l2" not in data:  # an older line (see `sample_l2_range`)
            values["best_sample_l2"], values["worst_sample_l2"] = sample_l2_range(data)
        return cls(**values)

    @classmethod
    def from_samples(cls, samples: list[SampleRecord], **common: Any) -> ResultRecord:
        """The record of an input whose samples all finished. The input is `ok` only when every sample is,
        so the sample furthest from eps (the highest L2) decides its status: `status` is `ok` exactly when
        `worst_sample_l2` <= eps, as for a single sample."""
        l2 = [s.best_l2 for s in samples]
        return cls(status=combined_status(s.status for s in samples), worst_sample_l2=max(l2),
                   best_sample_l2=min(l2), steps_run=max(s.steps_run for s in samples),
                   seconds=round(sum(s.seconds for s in samples), 3), samples=samples, **common)


def sample_l2_range(record: dict[str, Any]) -> tuple[float | None, float | None]:
    """The lowest and the highest of an input's samples' L2, from a results line of this version or an older
    one (None where unknown). Older lines have `best_l2` instead, which held the highest: the L2 of the
    sample that decided the status; the lowest is then read from their samples."""
    def number(value: Any) -> float | None:
        return float(value) if _is_number(value) and math.isfinite(value) else None

    if "worst_sample_l2" in record or "best_sample_l2" in record:
        return number(record.get("best_sample_l2")), number(record.get("worst_sample_l2"))
    worst = number(record.get("best_l2"))
    samples = record.get("samples")
    per_sample = [number(s.get("best_l2")) for s in samples if isinstance(s, dict)] if isinstance(samples, list) else []
    best = min(per_sample) if per_sample and None not in per_sample else worst
    return best, worst


# Fields written only when they carry something, so records keep the shape readers know.
_OMIT_WHEN_NONE = {"diversity", "earlier_status", "no_face", "disagreement", "identity", "restarts"}
# Log lines start with their type (and a header with the tool), as they always have.
_FIRST = ("type", "tool", "version", "torch", "python")


def to_json(record: Any) -> dict[str, Any]:
    """The JSON object of a record, fields in their declared order (`type` first)."""
    data = dataclasses.asdict(record)
    samples = data.get("samples")  # a results line's sample records (a header's "samples" is their count)
    for fields in [data, *(samples if isinstance(samples, list) else [])]:
        for name in _OMIT_WHEN_NONE:
            if name in fields and fields[name] is None:
                del fields[name]
    ordered = {k: data.pop(k) for k in _FIRST if k in data}
    ordered.update(data)
    return ordered


def check_result_line(data: Any) -> dict[str, Any]:
    """A line of results.jsonl, checked as `ResultRecord.from_json` checks it (RecordError otherwise)."""
    ResultRecord.from_json(data)
    return data


_STEP_FIELDS: dict[str, tuple[Any, str]] = {
    "step": (_is_int, "a whole number"),
    "lr": (_optional(_is_number), "a number"),
    "loss": (lambda v: isinstance(v, dict) and all(_optional(_is_number)(x) for x in v.values()),
             "an object of numbers"),
    "l2": (_optional(_is_number), "a number"),
    "total": (_optional(_is_number), "a number"),
}


def check_log_line(data: Any) -> dict[str, Any]:
    """A line of a sample's log: its run header (`"type": "run"`) or a step line of the shape `StepLine`
    writes (a non-finite number is written as null); RecordError for anything else."""
    if not isinstance(data, dict):
        raise RecordError("not a JSON object")
    check_values(data)
    if data.get("type") == "run":
        return data
    if data.get("type") != "step":
        raise RecordError("neither a run header nor a step line")
    for name, (check, expected) in _STEP_FIELDS.items():
        if name not in data:
            raise RecordError(f"no {name!r}")
        if not check(data[name]):
            raise RecordError(f"{name!r} is not {expected}")
    return data


Damaged = Callable[[int, str], None]  # (line number, why): a line passed over


def checked_lines(entries: Iterable[tuple[int, Any]], check: Callable[[Any], dict[str, Any]],
                  on_damaged: Damaged | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """The one way records are read: each (line number, parsed line or None) of a JSON-lines file through
    `check` (`check_result_line`, `check_log_line`); a line it refuses (or that was not JSON) is passed over
    and `on_damaged` hears of it. Every reader of results.jsonl and of the logs reads them through this."""
    for number, value in entries:
        try:
            if value is None:
                raise RecordError("not a JSON object")
            yield number, check(value)
        except RecordError as exc:
            if on_damaged is not None:
                on_damaged(number, str(exc))
