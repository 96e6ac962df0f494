"""Planning a run: which inputs there are, which are done, and each search's seed. Needs no model."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..files.atomic import JsonlTail, is_plain_file
from ..files.discovery import InputFile, OutputPaths, discover_inputs, output_paths
from .records import DONE, FAILED, RESULTS_FILE, check_result_line, checked_lines


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
    check_face: bool = False  # dlib's face detector on every result (face_score in the records)
    identities: bool = False  # with check_face and several samples: dlib's face descriptors, people per input
    shard: tuple[int, int] | None = None  # (K, N): only the inputs of shard K of N


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


class FinishedIndex:
    """Per input, the latest record that finished it (ok or not_converged), unless a later one failed it;
    skipped records repeat an earlier one and change nothing. `refresh()` reads only what other processes
    sharing the folder appended since, so checking again before each input stays cheap.

    A line that is not a record of the shape `check_result_line` accepts (hand-edited, damaged) is passed
    over like a torn line: `on_damaged(line number, reason)` hears of it once."""

    def __init__(self, results_file: Path, on_damaged: Callable[[int, str], None] | None = None):
        self._tail = JsonlTail(results_file)
        self.on_damaged = on_damaged
        self.latest: dict[str, dict[str, Any]] = {}
        self.since_start: dict[str, dict[str, Any]] = {}  # only what was appended after the first read
        self._read(self.latest)

    def refresh(self) -> None:
        self._read(self.latest, self.since_start)

    def _read(self, *views: dict[str, dict[str, Any]]) -> None:
        for _, record in checked_lines(self._tail.new_lines(), check_result_line, self.on_damaged):
            rel, status = record["input"], record["status"]
            for view in views:
                if status in DONE:
                    view[rel] = record
                elif status == FAILED:
                    view.pop(rel, None)

    def finished(self, job: Job, out_dir: Path, *, since_start: bool = False) -> dict[str, Any] | None:
        """The record that finished `job` (with `since_start`, only one appended after this index was made,
        e.g. by another process of the same --overwrite run), if the outputs it lists are the job's and all
        exist (plain files, never through a link). The job's: those of its input for the number of samples
        the record lists, which may be another run's --samples: that input is done all the same, and only
        --overwrite replaces its results."""
        record = (self.since_start if since_start else self.latest).get(job.rel)
        if record is None:
            return None
        names = record["outputs"]
        samples = len(names)
        ours = [output_paths(out_dir, job.input.rel, sample=k, samples=samples).image for k in range(samples)]
        if not names or names != [p.relative_to(out_dir).as_posix() for p in ours]:
            return None
        if not all(is_plain_file(path) for path in ours):
            return None
        return record


def in_shard(rel: str, shard: tuple[int, int] | None) -> bool:
    """Whether input `rel` belongs to shard K of N: a stable hash of its path, so adding files moves no
    other file to another shard."""
    if shard is None:
        return True
    k, n = shard
    digest = hashlib.sha256(rel.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % n == k - 1


class Jobs(list):
    """The planned jobs, and how many inputs IN holds in all (`discovered`: more than the jobs with --shard)."""

    discovered: int = 0


def plan_jobs(in_dir: Path, out_dir: Path, options: RunOptions, index: FinishedIndex | None = None) -> Jobs:
    """Discover inputs (those of this shard, with --shard) and see which are done: an input is done when an
    earlier run recorded it finished (the record is written last, after every output) and the outputs it
    lists are all there."""
    found = discover_inputs(in_dir, recursive=options.recursive, exclude=out_dir)
    inputs = [i for i in found if in_shard(i.rel.as_posix(), options.shard)]
    if index is None:
        index = FinishedIndex(Path(out_dir) / RESULTS_FILE)
    jobs = Jobs()
    jobs.discovered = len(found)
    for item in inputs:
        job = Job(item, [output_paths(out_dir, item.rel, sample=k, samples=options.samples)
                         for k in range(options.samples)])
        if not options.overwrite:
            job.earlier = index.finished(job, Path(out_dir))
        jobs.append(job)
    return jobs
