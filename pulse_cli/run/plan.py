"""Planning a run: which inputs there are, which are done, and each search's seed. Needs no model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files.atomic import read_jsonl
from ..files.discovery import InputFile, OutputPaths, discover_inputs, output_paths
from .records import DONE, FAILED, RESULTS_FILE


def derive_seed(base_seed: int, rel: str, sample: int) -> int:
    """A per-image seed from the base seed and the input's relative path: independent of file order
    and of batch-mates, and different for every sample."""
    # surrogateescape: a file name that is not valid UTF-8 hashes as its own bytes (valid names as before)
    digest = hashlib.sha256(f"{base_seed}\0{rel}\0{sample}".encode("utf-8", "surrogateescape")).hexdigest()
    return int(digest[:15], 16)


@dataclass(frozen=True)
class RunOptions:
    """What a run does besides the search itself (the search options live in the engine)."""

    samples: int = 1
    seed: int = 0
    overwrite: bool = False
    recursive: bool = False
    metadata: bool = True  # provenance in every PNG
    save_latents: bool = False
    save_every: int | None = None  # intermediate images every K steps
    animate: bool = False
    sheet: bool = False
    stop_at_eps: bool = False  # an image leaves the batch at its first iterate meeting eps


@dataclass
class Job:
    """One input file and the outputs the run owes it."""

    input: InputFile
    outputs: list[OutputPaths]  # one per sample
    earlier: dict[str, Any] | None = None  # the record that finished this input in an earlier run

    @property
    def done(self) -> bool:
        return self.earlier is not None

    @property
    def rel(self) -> str:
        """The input's path relative to IN, `/`-separated: its name in records and seeds."""
        return self.input.rel.as_posix()


def finished_records(results_file: Path) -> dict[str, dict[str, Any]]:
    """Per input, the latest record of an earlier run that finished it (ok or not_converged), unless a
    later run failed it. Skipped records repeat an earlier one and change nothing."""
    latest: dict[str, dict[str, Any]] = {}
    for record in read_jsonl(results_file):
        rel, status = record.get("input"), record.get("status")
        if not isinstance(rel, str):
            continue
        if status in DONE:
            latest[rel] = record
        elif status == FAILED:
            latest.pop(rel, None)
    return latest


def plan_jobs(in_dir: Path, out_dir: Path, options: RunOptions) -> list[Job]:
    """Discover inputs and see which are done: an input is done when an earlier run recorded it finished
    (the record is written last, after every output) and the outputs it lists are all there."""
    inputs = discover_inputs(in_dir, recursive=options.recursive, exclude=out_dir)
    earlier = {} if options.overwrite else finished_records(Path(out_dir) / RESULTS_FILE)
    jobs = []
    for item in inputs:
        outputs = [output_paths(out_dir, item.rel, sample=k, samples=options.samples)
                   for k in range(options.samples)]
        record = earlier.get(item.rel.as_posix())
        names = [o.image.relative_to(out_dir).as_posix() for o in outputs]
        if record is not None and (record.get("outputs") != names or not all(o.image.is_file() for o in outputs)):
            record = None
        jobs.append(Job(item, outputs, record))
    return jobs
