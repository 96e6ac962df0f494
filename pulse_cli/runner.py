"""Batch orchestration: which inputs to do, in which batches, and what to write for each.

The runner knows nothing of the terminal: progress and per-file errors go to a `Reporter`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .files.atomic import append_jsonl, write_jsonl
from .files.discovery import InputFile, OutputPaths, discover_inputs, output_paths
from .files.images import ImageError, load_rgb, save_png
from .model.generator import Generator
from .model.io import sha256_file
from .search.pulse import SearchConfig, SearchResult, pulse_search

RESULTS_FILE = "results.jsonl"
STATUSES = ("ok", "not_converged", "failed", "skipped")


def derive_seed(base_seed: int, rel: str, sample: int) -> int:
    """A per-image seed from the base seed and the input's relative path: independent of file order
    and of batch-mates, and different for every sample."""
    digest = hashlib.sha256(f"{base_seed}\0{rel}\0{sample}".encode()).hexdigest()
    return int(digest[:15], 16)


@dataclass(frozen=True)
class RunOptions:
    batch_size: int = 1
    samples: int = 1
    seed: int = 0
    overwrite: bool = False
    recursive: bool = False


@dataclass
class Job:
    """One input file and what the run will do with it."""

    input: InputFile
    outputs: list[OutputPaths]
    done: bool  # every output exists from an earlier run
    failed: bool = False
    finished: dict[int, tuple[_Search, SearchResult, float]] = field(default_factory=dict)  # by sample


@dataclass
class RunSummary:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    records: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Reporter:
    """What a run tells its user; the default tells nothing."""

    def start(self, total_searches: int, steps: int) -> None: ...

    def step(self, finished_fraction: float, l2: float, step: int, steps: int) -> None: ...

    def file_done(self, record: dict[str, Any]) -> None: ...

    def file_failed(self, rel: str, reason: str) -> None: ...

    def close(self) -> None: ...


def plan_jobs(in_dir: Path, out_dir: Path, options: RunOptions) -> list[Job]:
    """Discover inputs and see which are already done; needs no model."""
    inputs = discover_inputs(in_dir, recursive=options.recursive, exclude=out_dir)
    jobs = []
    for item in inputs:
        outputs = [output_paths(out_dir, item.rel, sample=k, samples=options.samples)
                   for k in range(options.samples)]
        done = not options.overwrite and all(o.image.is_file() for o in outputs)
        jobs.append(Job(item, outputs, done))
    return jobs


@dataclass
class _Search:
    job: Job
    sample: int
    seed: int
    target: torch.Tensor


class Runner:
    def __init__(self, generator: Generator | None, out_dir: Path, *, config: SearchConfig,
                 options: RunOptions, device: torch.device, checkpoint: Path,
                 reporter: Reporter | None = None):
        """`generator` may be None when every job is already done (nothing to load)."""
        self.generator = generator
        self.checkpoint = str(generator.source) if generator is not None and generator.source else str(checkpoint)
        self._checkpoint_sha256 = generator.source_sha256 if generator is not None else None
        self.out_dir = Path(out_dir)
        self.config = config
        self.options = options
        self.device = device
        self.reporter = reporter or Reporter()
        self.summary = RunSummary()

    def _base_record(self, job: Job) -> dict[str, Any]:
        return {
            "input": job.input.rel.as_posix(),
            "outputs": [o.image.relative_to(self.out_dir).as_posix() for o in job.outputs],
            "logs": [o.log.relative_to(self.out_dir).as_posix() for o in job.outputs],
            "seed": self.options.seed,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
        }

    @property
    def checkpoint_sha256(self) -> str | None:
        if self._checkpoint_sha256 is None and Path(self.checkpoint).is_file():
            self._checkpoint_sha256 = sha256_file(Path(self.checkpoint))
        return self._checkpoint_sha256

    def _emit(self, record: dict[str, Any]) -> None:
        append_jsonl(self.out_dir / RESULTS_FILE, record)
        self.summary.counts[record["status"]] += 1
        self.summary.records.append(record)
        if record["status"] == "failed":
            self.reporter.file_failed(record["input"], record["error"])
        else:
            self.reporter.file_done(record)

    def run(self, jobs: Sequence[Job]) -> RunSummary:
        started = time.monotonic()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        searches: list[_Search] = []
        for job in jobs:
            if job.done:
                self._emit({**self._base_record(job), "status": "skipped", "best_l2": None, "best_step": None,
                            "steps_run": 0, "seconds": 0.0, "samples": [], "error": None})
                continue
            assert self.generator is not None, "jobs to do need a generator"
            try:
                target = load_rgb(job.input.path, self.generator.resolution)
            except ImageError as exc:
                self._emit({**self._base_record(job), "status": "failed", "best_l2": None, "best_step": None,
                            "steps_run": 0, "seconds": 0.0, "samples": [], "error": str(exc)})
                continue
            rel = job.input.rel.as_posix()
            searches.extend(_Search(job, k, derive_seed(self.options.seed, rel, k), target)
                            for k in range(self.options.samples))
        self.reporter.start(len(searches), self.config.steps)
        try:
            for batch in _batches(searches, self.options.batch_size):
                self._run_batch(batch)
        finally:
            self.reporter.close()
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def _run_batch(self, batch: list[_Search]) -> None:
        steps = self.config.steps

        def on_step(step: int, states: Sequence) -> None:
            l2 = min(s.history[-1].l2 for s in states)
            self.reporter.step(len(states) / steps, l2, step + 1, steps)

        started = time.monotonic()
        targets = torch.stack([s.target for s in batch])
        try:
            results = pulse_search(self.generator, targets, seeds=[s.seed for s in batch], config=self.config,
                                   device=self.device, on_step=on_step)
        except torch.OutOfMemoryError:
            self._fail_batch(batch, f"out of memory on {self.device} with a batch of {len(batch)}; "
                                    "try a smaller --batch-size or --device cpu")
            return
        seconds_each = (time.monotonic() - started) / len(batch)
        for search, result in zip(batch, results, strict=True):
            self._write_sample(search, result)
            search.job.finished[search.sample] = (search, result, seconds_each)
            if len(search.job.finished) == self.options.samples and not search.job.failed:
                self._emit(self._job_record(search.job))

    def _fail_batch(self, batch: list[_Search], reason: str) -> None:
        for job in _unique_jobs(batch):
            if job.failed:
                continue
            job.failed = True
            self._emit({**self._base_record(job), "status": "failed", "best_l2": None, "best_step": None,
                        "steps_run": 0, "seconds": 0.0, "samples": [], "error": reason})

    def _write_sample(self, search: _Search, result: SearchResult) -> None:
        paths = search.job.outputs[search.sample]
        write_jsonl(paths.log, (_step_record(r) for r in result.history))
        # The image goes last: its presence is what marks this sample done on a rerun.
        save_png(result.image, paths.image)

    def _job_record(self, job: Job) -> dict[str, Any]:
        samples = []
        for k in range(self.options.samples):
            search, result, seconds = job.finished[k]
            samples.append({
                "output": job.outputs[k].image.relative_to(self.out_dir).as_posix(),
                "status": "ok" if result.converged else "not_converged",
                "best_l2": result.best_l2, "best_step": result.best_step, "best_total": result.best_total,
                "steps_run": result.steps_run, "seconds": round(seconds, 3), "image_seed": search.seed,
            })
        best = min(samples, key=lambda s: s["best_l2"])
        status = "ok" if all(s["status"] == "ok" for s in samples) else "not_converged"
        return {**self._base_record(job), "status": status, "best_l2": best["best_l2"],
                "best_step": best["best_step"], "steps_run": max(s["steps_run"] for s in samples),
                "seconds": round(sum(s["seconds"] for s in samples), 3), "samples": samples, "error": None}


def _step_record(record) -> dict[str, Any]:
    # "loss" holds each term as the loss string names it (L2 clamped at eps, as optimised);
    # "l2" is the unclamped mean squared error at input resolution, the value compared with eps.
    return {"step": record.step, "lr": record.lr, "loss": record.losses, "l2": record.l2, "total": record.total}


def _unique_jobs(batch: list[_Search]) -> list[Job]:
    jobs: list[Job] = []
    for search in batch:
        if all(search.job is not job for job in jobs):
            jobs.append(search.job)
    return jobs


def _batches(searches: list[_Search], batch_size: int) -> list[list[_Search]]:
    """Consecutive batches of searches whose targets have one size (one downsampling factor)."""
    by_size: dict[int, list[_Search]] = {}
    for search in searches:
        by_size.setdefault(search.target.shape[-1], []).append(search)
    return [group[i:i + batch_size] for group in by_size.values() for i in range(0, len(group), batch_size)]
