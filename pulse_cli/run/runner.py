"""A run: every planned input through the engine's search pool, each finished one written and recorded.

The runner knows nothing of the terminal: progress and per-input outcomes go to a `Reporter`.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..engine import Engine
from ..errors import describe_os_error
from ..files.atomic import append_jsonl, confine, is_plain_file, locked, remove_stale_temp_files, sha256_file
from ..files.claims import Claim, claim_path, live_runs, run_claim_path, try_claim
from ..files.discovery import disagreement_path, result_stem, sheet_path
from ..files.images import ImageError, load_rgb
from ..files.metadata import disagreement_metadata
from ..search.pulse import ImageSearch, SearchConfig, SearchResult
from .disagreement import COLORMAP, SCALE_MAX, SCALE_TEXT, disagreement_map, write_map
from .disagreement import summary as map_summary
from .outputs import animation_frame, write_frame, write_sample
from .plan import FinishedIndex, Job, RunOptions, derive_seed
from .records import (
    DONE,
    FAILED,
    OK,
    RESULTS_FILE,
    SKIPPED,
    STATUSES,
    CheckedSampleRecord,
    RecordError,
    ResultRecord,
    RunHeader,
    SampleRecord,
    as_used,
    check_values,
    has_no_face,
    sample_l2_range,
    search_options,
    search_status,
    to_json,
)
from .reporter import Reporter
from .sheets import (
    SheetRow,
    downscale_results,
    sample_diversity,
    sheet_extras,
    write_input_sheet,
    write_run_sheets,
)


class OutInUse(Exception):
    """Another run searching in OUT uses another model or other options (one line)."""


@dataclass
class RunSummary:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    records: list[ResultRecord] = field(default_factory=list)
    seconds: float = 0.0
    # Skipped inputs whose earlier outputs were made with other options: option name -> how many inputs.
    other_options: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def no_face(self) -> int:
        """Results (samples) checked with --check-face in which no face was found, skipped inputs' included."""
        return sum(has_no_face(s) for r in self.records for s in r.samples)

    @property
    def not_met_eps(self) -> int:
        """Inputs whose written results did not meet eps, skipped ones included (what --strict counts)."""
        return sum(r.met_eps is False for r in self.records)


@dataclass(eq=False)
class _Input:
    """An input being searched: its claim, its target and the samples finished so far."""

    job: Job
    target: torch.Tensor
    input_sha256: str
    claim: Claim
    failed: bool = False
    # sample -> seed, result, seconds, threads
    finished: dict[int, tuple[int, SearchResult, float, int | None]] = field(default_factory=dict)


@dataclass(eq=False)
class _Search:
    input: _Input
    sample: int
    seed: int
    animation: list[Image.Image] = field(default_factory=list)  # small frames, with --animate
    frame_error: str | None = None  # a frame that could not be written fails the input


class Runner:
    def __init__(self, engine: Engine | None, out_dir: Path, *, options: RunOptions, checkpoint: Path | str,
                 config: SearchConfig | None = None, reporter: Reporter | None = None):
        """`engine` may be None when every job is already done (nothing to load); `config` is then the
        search options of this run (default: the engine's), to compare with what done inputs recorded."""
        self.engine = engine
        source = engine.checkpoint if engine is not None and engine.checkpoint else checkpoint
        self.checkpoint = str(Path(source).resolve())  # absolute: `pulse render` may run from anywhere
        self._checkpoint_sha256 = engine.checkpoint_sha256 if engine is not None else None
        self.config = config if config is not None else engine.config if engine is not None else SearchConfig()
        assert engine is None or engine.config == self.config, "the engine searches with other options"
        self.search = search_options(self.config)
        self.out_dir = Path(out_dir)
        confine(self.out_dir)  # no link below OUT is followed by any write or read of this process
        self.options = options
        self.reporter = reporter or Reporter()
        self.summary = RunSummary()
        self._searches: Generator[Any, None, None] | None = None  # the engine's searches of this run

    @property
    def checkpoint_sha256(self) -> str | None:
        if self._checkpoint_sha256 is None and Path(self.checkpoint).is_file():
            self._checkpoint_sha256 = sha256_file(Path(self.checkpoint))
        return self._checkpoint_sha256

    # -- the run ---------------------------------------------------------------------------------

    def run(self, jobs: Sequence[Job], index: FinishedIndex | None = None) -> RunSummary:
        """Every job: skipped if done, else searched and recorded. Inputs are claimed one at a time (see
        `files.claims`), so any number of processes may share OUT: each input is searched by one of them;
        an input another process holds is taken up later, once it is free, unless it got finished.
        `index`: the one `plan_jobs` read (results.jsonl is then read once; see `begin`)."""
        started = time.monotonic()
        steps = self.config.steps
        self._claims: list[Claim] = []
        try:
            todo = self.begin(jobs, index)
            self.reporter.start(len(todo), self.options.samples, steps)
            if todo:
                assert self.engine is not None, "jobs to do need an engine"
                self._search_all(todo, steps)
        finally:
            if self._searches is not None:  # its workers stop before the claims go
                self._searches.close()
            for claim in self._claims:  # still held: stopped early (Ctrl-C, an error), let others have them
                claim.release()
            self.leave()
            self.reporter.close()
        return self.end(jobs, started)

    def begin(self, jobs: Sequence[Job], index: FinishedIndex | None = None) -> list[Job]:
        """The start of a run, whoever searches (this runner or Ray workers): OUT ready, temporary files of
        killed runs removed, done jobs recorded as skipped. Returns the jobs to search. `index`: the index of
        results.jsonl the jobs were planned with, so the file is not read again (and what other processes
        append from then on counts as this run's, for --overwrite); None reads it now."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(self.out_dir)  # left by runs of this host that were killed
        self.index = index if index is not None else FinishedIndex(self.out_dir / RESULTS_FILE)
        todo = [job for job in jobs if not job.done]
        if todo:
            self._join()
        for job in jobs:
            if job.done:
                self.record(self._skipped(job))
        return todo

    def _join(self) -> None:
        """Join the runs searching in OUT: refused (OutInUse) when a live one searches with another model or
        other options, so that no OUT mixes them unnoticed; else announced for the next ones by a claim held
        until this run ends (`.claims/run.<host>.<pid>.claim`, with what `_differences` compares). Under
        results.jsonl's lock, so that two runs starting together see each other."""
        sha256 = self.checkpoint_sha256  # hashed before the lock: appends wait for none of it
        with locked(self.out_dir / RESULTS_FILE):
            for other in live_runs(self.out_dir):
                try:
                    check_values(other)  # read as records are: whatever another process wrote there
                except RecordError:
                    other = {}  # unreadable: it cannot be said to search with the same options
                names = self._differences(other, other.get("samples"))
                if names:
                    raise OutInUse(f"{self.out_dir} is in use by another run with other options "
                                   f"({', '.join(names)}): pid {other.get('pid')} on {other.get('host')}; "
                                   "wait until it ends, or write to another OUT")
            self._run_claim = try_claim(run_claim_path(self.out_dir), details={
                "run": True, "checkpoint": self.checkpoint, "checkpoint_sha256": sha256,
                "search": self.search, "seed": self.options.seed, "samples": self.options.samples})

    def leave(self) -> None:
        """The end of this run's search in OUT (see `_join`); a run ended by SIGKILL leaves its claim file to
        the next run, which finds it unheld and removes it."""
        claim = getattr(self, "_run_claim", None)
        if claim is not None:
            claim.release(finished=True)
            self._run_claim = None

    def end(self, jobs: Sequence[Job], started: float) -> RunSummary:
        """The end of a run: the run sheets (with --sheet) and the summary."""
        if self.options.sheet:
            self._write_run_sheets(jobs)
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def _take(self, job: Job) -> _Input | None | bool:
        """Claim `job` and read its target: the input to search; None when it needs no search (finished
        meanwhile by another process, or failed to load: recorded); False when another process holds it."""
        stem = result_stem(job.input.rel)
        try:
            claim = try_claim(claim_path(self.out_dir, stem), stem)
        except OSError as exc:  # the claim file cannot be used (see files.claims): this input fails alone
            self.record(self._failed(job, f"cannot claim: {describe_os_error(exc)}"))
            return None
        if claim is None:
            return False
        self._claims.append(claim)
        self.index.refresh()
        finished = self.index.finished(job, self.out_dir, since_start=self.options.overwrite)
        if finished is not None:  # another process sharing OUT did it
            self._let_go(claim)
            l2 = sample_l2_range(finished)[1]
            self.reporter.step(self.options.samples * self.config.steps, l2 if l2 is not None else float("nan"),
                               self.config.steps, self.config.steps)
            return None
        try:
            target = load_rgb(job.input.path, self.engine.resolution)
            return _Input(job, target, sha256_file(job.input.path), claim)
        except (ImageError, OSError) as exc:
            self.reporter.step(self.options.samples * self.config.steps, float("nan"), 0, self.config.steps)
            self.record(self._failed(job, str(exc) if isinstance(exc, ImageError) else describe_os_error(exc)))
            self._let_go(claim)
            return None

    def _let_go(self, claim: Claim) -> None:
        """Release the claim of an input whose record is written (or that needs none)."""
        self._claims.remove(claim)
        claim.release(finished=True)

    def _search_all(self, todo: list[Job], steps: int) -> None:
        assert self.engine is not None

        def items() -> Iterator[tuple[_Search, torch.Tensor, int] | None]:
            waiting = list(todo)
            while waiting:
                busy = []
                for job in waiting:
                    item = self._take(job)
                    if item is False:
                        busy.append(job)
                        continue
                    if item is None:
                        continue
                    for k in range(self.options.samples):
                        if not item.failed:  # a batch-mate's failure already failed this input
                            seed = derive_seed(self.options.seed, job.rel, k)
                            yield _Search(item, k, seed), item.target, seed
                if busy:
                    yield None  # held by other processes: nothing ready now, ask again soon
                waiting = busy

        def on_step(active: Sequence[ImageSearch]) -> None:
            self.reporter.step(len(active), min((s.history[-1].l2 for s in active if s.history),
                                                default=float("nan")),
                               max(s.step for s in active), steps)

        def on_frame(search: _Search, step: int, image: torch.Tensor) -> None:
            try:
                if self.options.save_every:
                    write_frame(search.input.job.outputs[search.sample], step, image)
            except OSError as exc:
                search.frame_error = search.frame_error or describe_os_error(exc)
            if self.options.animate:
                search.animation.append(animation_frame(image))

        self._searches = self.engine.searches(items(), stop_at_eps=self.options.stop_at_eps,
                                              save_every=self._frame_interval(), on_step=on_step,
                                              on_frame=on_frame, total=len(todo) * self.options.samples)
        for done in self._searches:  # closed by `run` however it ends: the engine's worker processes stop
            search: _Search = done.key  # type: ignore[assignment]
            item = search.input
            if done.result is None:
                self.reporter.step(steps, float("nan"), steps, steps)  # at most a few of them were run
                self._fail(item, done.error or "search failed")
                continue
            if done.result.steps_run < steps:  # stopped at eps: the bar owes it the steps it skipped
                self.reporter.step(steps - done.result.steps_run, done.result.best_l2, steps, steps)
            if item.failed:
                continue
            if search.frame_error:
                self._fail(item, search.frame_error)
                continue
            try:
                write_sample(item.job.outputs[search.sample], self._header(search, done.threads), done.result,
                             self.options, search.animation)
                search.animation = []
                item.finished[search.sample] = (search.seed, done.result, done.seconds, done.threads)
                if len(item.finished) == self.options.samples:
                    self._finish(item)
            except OSError as exc:  # this input's files: it fails, the run goes on (results.jsonl: see record)
                self._fail(item, describe_os_error(exc))

    def _fail(self, item: _Input, reason: str) -> None:
        if not item.failed:
            item.failed = True
            item.finished.clear()
            self.record(self._failed(item.job, reason))
            self._let_go(item.claim)

    def _frame_interval(self) -> int | None:
        if self.options.save_every:
            return self.options.save_every
        # An animation without --save-every: about 25 frames over the search.
        return max(1, self.config.steps // 25) if self.options.animate else None

    # -- records ---------------------------------------------------------------------------------

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.out_dir).as_posix()

    def _identity(self, job: Job) -> dict[str, Any]:
        """The fields every record of this input has, whatever happened to it."""
        return {"input": job.rel, "outputs": [self._rel(o.image) for o in job.outputs],
                "logs": [self._rel(o.log) for o in job.outputs], "seed": self.options.seed}

    def _this_checkpoint(self) -> dict[str, Any]:
        """The checkpoint of this run (hashed only when a record needs it: not when every input is done)."""
        return {"checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256}

    def _failed(self, job: Job, error: str) -> ResultRecord:
        """A failed input's record: it lists no files, for none of them counts."""
        return ResultRecord(status=FAILED, error=error, search=self.search, **self._this_checkpoint(),
                            **{**self._identity(job), "outputs": [], "logs": []})

    def _skipped(self, job: Job) -> ResultRecord:
        """A done input's record repeats what the earlier run found, and says how that run ended."""
        earlier = job.earlier or {}
        for name in self._differences(earlier, len(earlier.get("outputs") or ())):
            self.summary.other_options[name] = self.summary.other_options.get(name, 0) + 1
        best, worst = sample_l2_range(earlier)
        return ResultRecord(status=SKIPPED, earlier_status=earlier.get("status"), worst_sample_l2=worst,
                            best_sample_l2=best, steps_run=earlier.get("steps_run") or 0,
                            samples=list(earlier.get("samples") or []), diversity=earlier.get("diversity"),
                            disagreement=earlier.get("disagreement"), identity=earlier.get("identity"),
                            search=earlier.get("search"), checkpoint=earlier.get("checkpoint", self.checkpoint),
                            checkpoint_sha256=earlier.get("checkpoint_sha256"),
                            # its files: those the earlier run made (another --samples may have named them)
                            **{**self._identity(job), "outputs": earlier["outputs"], "logs": earlier.get("logs", [])})

    def _differences(self, earlier: dict[str, Any], samples: Any) -> list[str]:
        """Options of this run that differ from those the earlier outputs (or another live run) were made with;
        `samples`: their number of samples."""
        names = []
        recorded = earlier.get("search")
        if isinstance(recorded, dict):
            # an option added after the earlier run had its default value then
            recorded = as_used({**search_options(SearchConfig()), **recorded})
            names += [k for k in sorted(set(recorded) | set(self.search)) if recorded.get(k) != self.search.get(k)]
        if earlier.get("seed") != self.options.seed:
            names.append("seed")
        if samples != self.options.samples:
            names.append("samples")
        if self._other_checkpoint(earlier.get("checkpoint"), earlier.get("checkpoint_sha256")):
            names.append("checkpoint")
        return names

    def _other_checkpoint(self, path: Any, sha256: Any) -> bool:
        """Whether a done input was made with another checkpoint. The same path (or its folder) is the same one,
        unhashed: a done folder costs no hashing of the model. Another path is compared by content when the
        record has the sha256: a copy elsewhere is the same model."""
        if not path or path == self.checkpoint or Path(self.checkpoint) in Path(str(path)).parents:
            return False
        if isinstance(sha256, str) and sha256 and self.checkpoint_sha256:
            return sha256 != self.checkpoint_sha256
        return True

    def record(self, record: ResultRecord) -> None:
        """Append the input's record: written last, it is what marks the input done. An OSError here
        ends the run (the caller reports it): without its record an input is not done."""
        append_jsonl(self.out_dir / RESULTS_FILE, to_json(record))
        self.summary.counts[record.status] += 1
        self.summary.records.append(record)
        if record.status == FAILED:
            self.reporter.file_failed(record.input, record.error or "failed")
        else:
            self.reporter.file_done(record)

    def _header(self, search: _Search, threads: int | None) -> RunHeader:
        engine = self.engine
        G = engine.generator
        return RunHeader(
            device=str(engine.device), input=search.input.job.rel, input_sha256=search.input.input_sha256,
            seed=self.options.seed, sample=search.sample, image_seed=search.seed, checkpoint=self.checkpoint,
            checkpoint_sha256=self.checkpoint_sha256,
            generator={"family": G.family, "resolution": G.resolution, "num_ws": G.num_ws, "w_dim": G.w_dim,
                       "synthesis_path": engine.synthesis_path},
            search=self.search, batch_size=engine.batch_size, samples=self.options.samples, threads=threads)

    def _finish(self, item: _Input) -> None:
        """All samples of an input are written: its record, diversity, disagreement map, identities and sheet."""
        samples: list[SampleRecord] = []
        descriptors = []
        for k in range(self.options.samples):
            seed, result, seconds, threads = item.finished[k]
            fields = dict(output=self._rel(item.job.outputs[k].image), status=search_status(result.converged),
                          best_l2=result.best_l2, best_step=result.best_step, best_total=result.best_total,
                          steps_run=result.steps_run, seconds=round(seconds, 3), image_seed=seed, threads=threads,
                          restarts=list(result.restarts) if self.config.mode == "robust" else None)
            if self.options.check_face:
                from ..align.identity import read_face

                rgb = (result.image.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
                reading = read_face(rgb, describe=self.options.identities)
                samples.append(CheckedSampleRecord(**fields, face_score=reading.score))
                descriptors.append(reading.descriptor)
            else:
                samples.append(SampleRecord(**fields))
        record = ResultRecord.from_samples(samples, search=self.search, **self._this_checkpoint(),
                                           **self._identity(item.job))
        if self.options.check_face:
            record.no_face = sum(has_no_face(s) for s in samples)
        images = torch.stack([item.finished[k][1].image for k in range(self.options.samples)])
        if len(images) > 1 or self.options.sheet:
            downscaled = downscale_results(images, item.target.shape[-1])  # once, for both uses
        spread = None
        if len(images) > 1:
            record.diversity = sample_diversity(images, downscaled)
            spread = disagreement_map(images)  # from the results found: no pass over the model
            record.disagreement = self._write_map(item, spread)
            if self.options.identities:
                from ..align.identity import count_identities

                record.identity = count_identities(descriptors).to_json()
        if self.options.sheet:
            write_input_sheet(sheet_path(self.out_dir, item.job.input.rel), item.target, images, downscaled,
                              samples, metadata=self.options.metadata, spread=spread,
                              identity=record.identity)
        item.finished.clear()  # the images are written; free them
        self.record(record)
        self._let_go(item.claim)

    def _write_map(self, item: _Input, spread: torch.Tensor) -> dict[str, Any]:
        """OUT/<stem>.disagreement.png, labelled as the results are; what the record says of it."""
        path = disagreement_path(self.out_dir, item.job.input.rel)
        described = map_summary(spread, self._rel(path))
        text = None
        if self.options.metadata:
            text = disagreement_metadata(samples=self.options.samples, mean=described["mean"], scale=SCALE_TEXT,
                                         scale_max=SCALE_MAX, colormap=COLORMAP,
                                         checkpoint=Path(self.checkpoint).name,
                                         checkpoint_sha256=self.checkpoint_sha256, seed=self.options.seed,
                                         input_sha256=item.input_sha256)
        write_map(path, spread, text)
        return described

    def _write_run_sheets(self, jobs: Sequence[Job]) -> None:
        by_input = {r.input: r for r in self.summary.records}
        rows = []
        for job in jobs:
            record = by_input.get(job.rel)
            results = [self.out_dir / name for name in record.outputs] if record is not None else []
            if record is None or record.status == FAILED or not all(is_plain_file(p) for p in results):
                continue
            l2 = [s.best_l2 if isinstance(s, SampleRecord) else s.get("best_l2") for s in record.samples]
            status = [s.status if isinstance(s, SampleRecord) else s.get("status") for s in record.samples]
            rows.append(SheetRow(job.input.path, job.input.rel.name, results,
                                 l2 if l2 and None not in l2 else None, bool(record.met_eps),
                                 [has_no_face(s) for s in record.samples],
                                 [None if st not in DONE else st == OK for st in status],
                                 **sheet_extras(disagreement_path(self.out_dir, job.input.rel), record.disagreement,
                                                record.identity)))
        shard = self.options.shard
        write_run_sheets(self.out_dir, rows, "sheet" if shard is None else f"sheet-shard{shard[0]}of{shard[1]}",
                         metadata=self.options.metadata)
