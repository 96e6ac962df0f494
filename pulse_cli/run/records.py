"""What a run writes about itself: the results line, the log's run header and its step lines.

Each is a dataclass; `to_json` is the one serializer. The status rule is written once, here.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..version import __version__

RESULTS_FILE = "results.jsonl"


def not_an_output_folder(out_dir: Path) -> str | None:
    """Why `out_dir` cannot be read as an output folder of `pulse upsample` (it has no results file), or None."""
    results = Path(out_dir) / RESULTS_FILE
    return None if results.is_file() else f"{results} does not exist: not an output folder of 'pulse upsample'"
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
    """A run's search options as recorded in logs and results (what a rerun compares)."""
    return json.loads(json.dumps({**dataclasses.asdict(config), "bad_noise_layers": list(config.bad_noise_layers)}))


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


class RecordError(ValueError):
    """A line of results.jsonl that is not a record of the shape this version writes; one line."""


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
    "best_l2": (_optional(_is_number), "a number"),
    "best_step": (_optional(_is_int), "a whole number"),
    "steps_run": (_optional(_is_int), "a whole number"),
    "seconds": (_optional(_is_number), "a number"),
    "samples": (lambda v: isinstance(v, list) and all(_is_sample(s) for s in v), "a list of sample records"),
    "error": (_optional(lambda v: isinstance(v, str)), "text"),
    "diversity": (_optional(lambda v: isinstance(v, dict) and all(_optional(_is_number)(x) for x in v.values())),
                  "an object of numbers"),
    "search": (_optional(lambda v: isinstance(v, dict)), "an object"),
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
    best_l2: float | None = None
    best_step: int | None = None
    steps_run: int = 0
    seconds: float = 0.0
    samples: list[SampleRecord | dict[str, Any]] = field(default_factory=list)  # dicts: from an earlier run
    error: str | None = None
    diversity: dict[str, float] | None = None  # only with several samples
    search: dict[str, Any] | None = None  # the search options the outputs were made with
    earlier_status: str | None = None  # skipped: the status the earlier run recorded (ok / not_converged)
    no_face: int | None = None  # with --check-face: how many of its samples show no face to dlib's detector

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
        return cls(**values)

    @classmethod
    def from_samples(cls, samples: list[SampleRecord], **common: Any) -> ResultRecord:
        """The record of an input whose samples all finished. The input is `ok` only when every sample is,
        so the sample furthest from eps (the highest best L2) decides its status and gives its `best_l2`
        and `best_step`: `status` is `ok` exactly when `best_l2` <= eps, as for a single sample."""
        deciding = max(samples, key=lambda s: s.best_l2)
        return cls(status=combined_status(s.status for s in samples), best_l2=deciding.best_l2,
                   best_step=deciding.best_step, steps_run=max(s.steps_run for s in samples),
                   seconds=round(sum(s.seconds for s in samples), 3), samples=samples, **common)


# Fields written only when they carry something, so records keep the shape readers know.
_OMIT_WHEN_NONE = {"diversity", "earlier_status", "no_face"}
# Log lines start with their type (and a header with the tool), as they always have.
_FIRST = ("type", "tool", "version", "torch", "python")


def to_json(record: Any) -> dict[str, Any]:
    """The JSON object of a record, fields in their declared order (`type` first)."""
    data = dataclasses.asdict(record)
    for name in _OMIT_WHEN_NONE:
        if name in data and data[name] is None:
            del data[name]
    ordered = {k: data.pop(k) for k in _FIRST if k in data}
    ordered.update(data)
    return ordered
