"""A run: every planned input through the engine's search pool, each finished one written and recorded.

The runner knows nothing of the terminal: progress and per-input outcomes go to a `Reporter`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..engine import Engine
from ..files.atomic import append_jsonl, sha256_file
from ..files.discovery import sheet_path
from ..files.images import ImageError, load_rgb
from ..search.pulse import ImageSearch, SearchResult
from .outputs import write_sample
from .plan import Job, RunOptions, derive_seed
from .records import FAILED, SKIPPED, STATUSES, ResultRecord, RunHeader, SampleRecord, search_status, to_json
from .reporter import Reporter
from .sheets import SheetRow, downscale_results, sample_diversity, write_input_sheet, write_run_sheets

RESULTS_FILE = "results.jsonl"


@dataclass
class RunSummary:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    records: list[ResultRecord] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(eq=False)
class _Input:
    """An input being searched: its target and the samples finished so far."""

    job: Job
    target: torch.Tensor
    input_sha256: str
    failed: bool = False
    finished: dict[int, tuple[int, SearchResult, float]] = field(default_factory=dict)  # sample -> seed, ...


@dataclass(eq=False)
class _Search:
    input: _Input
    sample: int
    seed: int


class Runner:
    def __init__(self, engine: Engine | None, out_dir: Path, *, options: RunOptions, checkpoint: Path | str,
                 reporter: Reporter | None = None):
        """`engine` may be None when every job is already done (nothing to load)."""
        self.engine = engine
        self.checkpoint = engine.checkpoint if engine is not None and engine.checkpoint else str(checkpoint)
        self._checkpoint_sha256 = engine.checkpoint_sha256 if engine is not None else None
        self.out_dir = Path(out_dir)
        self.options = options
        self.reporter = reporter or Reporter()
        self.summary = RunSummary()

    @property
    def checkpoint_sha256(self) -> str | None:
        if self._checkpoint_sha256 is None and Path(self.checkpoint).is_file():
            self._checkpoint_sha256 = sha256_file(Path(self.checkpoint))
        return self._checkpoint_sha256

    # -- the run ---------------------------------------------------------------------------------

    def run(self, jobs: Sequence[Job]) -> RunSummary:
        started = time.monotonic()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        searches: list[_Search] = []
        for job in jobs:
            if job.done:
                self._emit(self._record(job, SKIPPED))
                continue
            assert self.engine is not None, "jobs to do need an engine"
            try:
                target = load_rgb(job.input.path, self.engine.resolution)
                item = _Input(job, target, sha256_file(job.input.path))
            except ImageError as exc:
                self._emit(self._record(job, FAILED, error=str(exc)))
                continue
            searches.extend(_Search(item, k, derive_seed(self.options.seed, job.rel, k))
                            for k in range(self.options.samples))
        steps = self.engine.config.steps if self.engine is not None else 0
        self.reporter.start(len(searches), steps)
        try:
            if searches:
                self._search_all(searches, steps)
        finally:
            self.reporter.close()
        if self.options.sheet:
            self._write_run_sheets(jobs)
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def _search_all(self, searches: list[_Search], steps: int) -> None:
        assert self.engine is not None

        def items() -> Iterator[tuple[_Search, torch.Tensor, int]]:
            for search in searches:
                if not search.input.failed:  # a batch-mate's failure already failed this input
                    yield search, search.input.target, search.seed

        def on_step(active: Sequence[ImageSearch]) -> None:
            self.reporter.step(len(active) / steps, min(s.history[-1].l2 for s in active),
                               max(s.step for s in active), steps)

        for done in self.engine.searches(items(), stop_at_eps=self.options.stop_at_eps,
                                         save_every=self._frame_interval(), on_step=on_step):
            search: _Search = done.key  # type: ignore[assignment]
            item = search.input
            if done.result is None:
                if not item.failed:
                    item.failed = True
                    self._emit(self._record(item.job, FAILED, error=done.error))
                continue
            if done.result.steps_run < steps:  # stopped at eps: the bar owes it the steps it skipped
                self.reporter.step((steps - done.result.steps_run) / steps, done.result.best_l2, steps, steps)
            if item.failed:
                continue
            write_sample(item.job.outputs[search.sample], self._header(search), done.result, self.options)
            item.finished[search.sample] = (search.seed, done.result, done.seconds)
            if len(item.finished) == self.options.samples:
                self._finish(item)

    def _frame_interval(self) -> int | None:
        if self.options.save_every:
            return self.options.save_every
        # An animation without --save-every: about 25 frames over the search.
        return max(1, self.engine.config.steps // 25) if self.options.animate else None

    # -- records ---------------------------------------------------------------------------------

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.out_dir).as_posix()

    def _identity(self, job: Job) -> dict[str, Any]:
        """The fields every record of this input has, whatever happened to it."""
        return {"input": job.rel, "outputs": [self._rel(o.image) for o in job.outputs],
                "logs": [self._rel(o.log) for o in job.outputs], "seed": self.options.seed,
                "checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256}

    def _record(self, job: Job, status: str, error: str | None = None) -> ResultRecord:
        """The record of an input that was not searched (skipped) or failed."""
        return ResultRecord(status=status, error=error, **self._identity(job))

    def _emit(self, record: ResultRecord) -> None:
        append_jsonl(self.out_dir / RESULTS_FILE, to_json(record))
        self.summary.counts[record.status] += 1
        self.summary.records.append(record)
        if record.status == FAILED:
            self.reporter.file_failed(record.input, record.error or "failed")
        else:
            self.reporter.file_done(record)

    def _header(self, search: _Search) -> RunHeader:
        engine = self.engine
        G = engine.generator
        config = engine.config
        return RunHeader(
            device=str(engine.device), input=search.input.job.rel, input_sha256=search.input.input_sha256,
            seed=self.options.seed, sample=search.sample, image_seed=search.seed, checkpoint=self.checkpoint,
            checkpoint_sha256=self.checkpoint_sha256,
            generator={"family": G.family, "resolution": G.resolution, "num_ws": G.num_ws, "w_dim": G.w_dim,
                       "synthesis_path": engine.synthesis_path},
            search={**dataclasses.asdict(config), "bad_noise_layers": list(config.bad_noise_layers)},
            batch_size=engine.batch_size, samples=self.options.samples)

    def _finish(self, item: _Input) -> None:
        """All samples of an input are written: its record, diversity and sheet."""
        samples = []
        for k in range(self.options.samples):
            seed, result, seconds = item.finished[k]
            samples.append(SampleRecord(
                output=self._rel(item.job.outputs[k].image), status=search_status(result.converged),
                best_l2=result.best_l2, best_step=result.best_step, best_total=result.best_total,
                steps_run=result.steps_run, seconds=round(seconds, 3), image_seed=seed))
        record = ResultRecord.from_samples(samples, **self._identity(item.job))
        images = torch.stack([item.finished[k][1].image for k in range(self.options.samples)])
        if len(images) > 1 or self.options.sheet:
            downscaled = downscale_results(images, item.target.shape[-1])  # once, for both uses
        if len(images) > 1:
            record.diversity = sample_diversity(images, downscaled)
        if self.options.sheet:
            write_input_sheet(sheet_path(self.out_dir, item.job.input.rel), item.target, images, downscaled,
                              samples)
        item.finished.clear()  # the images are written; free them
        self._emit(record)

    def _write_run_sheets(self, jobs: Sequence[Job]) -> None:
        by_input = {r.input: r for r in self.summary.records}
        rows = []
        for job in jobs:
            record = by_input.get(job.rel)
            if record is None or record.status == FAILED or not all(o.image.is_file() for o in job.outputs):
                continue
            rows.append(SheetRow(job.input.path, job.input.rel.name, [o.image for o in job.outputs],
                                 [s.best_l2 for s in record.samples] or None))
        write_run_sheets(self.out_dir, rows)
