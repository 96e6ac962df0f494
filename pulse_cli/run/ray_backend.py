"""A run on Ray: the driver plans and records, a pool of Ray actors (one engine each) searches and writes.

Who writes what:
- the driver (the `pulse upsample` process) plans the jobs, records done inputs as skipped, shows the progress
  and is the only writer of `OUT/results.jsonl`: it appends each record as a worker returns it;
- each worker (a Ray Data actor, `compute=ActorPoolStrategy(size=N)`) loads the model once, then for each
  batch of inputs claims them (`files.claims`, as a plain run does, so a Ray run may share OUT with plain
  processes), searches them with the engine's pool and writes every output file atomically
  (`outputs.write_sample`) straight into OUT, which must be a filesystem the workers and the driver share.
  It keeps an input's claim until the driver has appended its record (it checks `results.jsonl` on its
  next call), so another process sharing OUT never takes up an input whose files are written but whose
  record is not yet.

A worker that dies loses its claims at once (the OS drops its locks); Ray Data restarts it and retries its
batch: the retry claims the inputs again, finds no record and searches them again, overwriting any files the
dead worker had written (atomic writes: never a half-written file). The driver receives one row per input,
so each input ends with exactly one record.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files.claims import Claim, claim_path, try_claim
from ..files.discovery import InputFile, output_paths, result_stem
from .plan import FinishedIndex, Job, RunOptions
from .records import FAILED, RESULTS_FILE, ResultRecord
from .reporter import Reporter
from .runner import Runner, RunSummary, _Input

# Tests only: a path; the first worker call that manages to create this file exits the worker (os._exit) after
# writing its outputs and before returning them, as a crashed machine would.
DIE_ONCE_ENV = "PULSE_TEST_RAY_DIE_ONCE"


class RayRunError(Exception):
    """Ray or a worker failed in a way no retry mends (a worker's model would not load, the cluster went).
    `bad_input`: the worker's error was a ValueError (an unusable checkpoint or option, a missing device), the
    kind a plain run reports as a usage error."""

    def __init__(self, message: str, *, bad_input: bool = False):
        super().__init__(message)
        self.bad_input = bad_input


def _is_value_error(qualified_name: str) -> bool:
    """Whether the exception class named `module.Name` in a worker's report is a ValueError."""
    import builtins
    import importlib

    module, _, name = qualified_name.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module) if module else builtins, name)
    except (ImportError, AttributeError):
        return False
    return isinstance(cls, type) and issubclass(cls, ValueError)


class _HeldClaim:
    """A worker's claim: `release(finished=True)` (its record is made) keeps the lock until the driver has
    appended the record; a plain release (the input was not finished) lets go at once."""

    def __init__(self, claim: Claim, rel: str, held: list[tuple[str, Claim]]):
        self.claim, self.rel, self.held = claim, rel, held
        self.released = False

    def release(self, *, finished: bool = False) -> None:
        if self.released:
            return
        self.released = True
        if finished:
            self.held.append((self.rel, self.claim))
        else:
            self.claim.release()


class _WorkerRunner(Runner):
    """The runner's search and writes, its records returned instead of appended."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.index = FinishedIndex(self.out_dir / RESULTS_FILE)
        self.held: list[tuple[str, Claim]] = []  # finished inputs whose record the driver has not appended yet
        self._records: list[ResultRecord] = []
        self._failed_rels: set[str] = set()

    def release_recorded(self) -> None:
        """Let go of the claims of inputs the driver has recorded since (failed ones at once)."""
        if not self.held:
            return
        self.index.refresh()
        keep = []
        for rel, claim in self.held:
            if rel in self.index.since_start or rel in self._failed_rels:
                claim.release(finished=True)
            else:
                keep.append((rel, claim))
        self.held = keep

    def search_jobs(self, jobs: Sequence[Job]) -> list[ResultRecord | None]:
        """Search `jobs`; per job its record, or None when another process sharing OUT finished it."""
        self.release_recorded()
        self._records, self._claims = [], []
        self.summary = RunSummary()
        try:
            self._search_all(list(jobs), self.config.steps)
        finally:
            for claim in self._claims:  # still held: stopped early, let others have them
                claim.release()
        by_input = {r.input: r for r in self._records}
        return [by_input.get(job.rel) for job in jobs]

    def _take(self, job: Job) -> _Input | None | bool:
        item = super()._take(job)
        if isinstance(item, _Input):
            held = _HeldClaim(item.claim, job.rel, self.held)
            self._claims[self._claims.index(item.claim)] = held  # type: ignore[call-overload]
            item.claim = held  # type: ignore[assignment]
        return item

    def record(self, record: ResultRecord) -> None:
        self._records.append(record)
        if record.status == FAILED:
            self._failed_rels.add(record.input)


class Searcher:
    """The Ray Data callable class: the engine built once per worker, each call a batch of inputs."""

    def __init__(self, *, checkpoint: str, out_dir: str, options: RunOptions, engine_options: dict[str, Any],
                 threads: int, die_once: str | None = None):
        import torch

        from ..engine import Engine

        torch.set_num_threads(threads)
        engine = Engine.load(checkpoint, **{**engine_options, "threads": threads})
        self.runner = _WorkerRunner(engine, Path(out_dir), options=options, checkpoint=checkpoint,
                                    config=engine_options["config"])
        self.die_once = die_once

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        jobs = [pickle.loads(bytes(b)) for b in batch["job"]]
        records = self.runner.search_jobs(jobs)
        if self.die_once:
            try:
                os.close(os.open(self.die_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return {"input": np.array([j.rel for j in jobs], dtype=object),
                "record": np.array([pickle.dumps(r) for r in records], dtype=object)}


def _absolute(job: Job, out_dir: Path, options: RunOptions) -> Job:
    """The job with absolute paths: a worker's working folder is not the driver's."""
    out = out_dir.resolve()
    return Job(InputFile(job.input.path.resolve(), job.input.rel),
               [output_paths(out, job.input.rel, sample=k, samples=options.samples) for k in range(options.samples)],
               job.earlier)


def _rows(dataset: Any) -> Any:
    """The dataset's rows; a failure no retry mended as a RayRunError (one line, for the user)."""
    import ray.exceptions

    try:
        yield from dataset.iter_rows()
    except ray.exceptions.RayError as exc:
        # the worker's own exception is the last "module.SomeError: message" line of Ray's report
        import re

        text = "\n".join(str(e) for e in (exc, exc.__cause__) if e is not None)
        found = [(m.group(1), m.group(2)) for m in re.finditer(r"^\s*([\w.]+(?:Error|Exception)): (.+)$", text, re.M)
                 if not m.group(1).startswith("ray.")]
        reason = found[-1][1] if found else type(exc).__name__
        raise RayRunError(f"a Ray worker failed: {reason}",
                          bad_input=bool(found) and _is_value_error(found[-1][0])) from exc


def _remove_claim_files(todo: Sequence[Job], out_dir: Path, wait: float = 10.0) -> None:
    """Remove the claim files of the inputs now recorded, once the stopping workers have let go of them."""
    import time

    index = FinishedIndex(out_dir / RESULTS_FILE)
    pending = list(todo)
    deadline = time.monotonic() + wait
    while pending:
        busy = []
        for job in pending:
            try:
                claim = try_claim(claim_path(out_dir, result_stem(job.input.rel)))
            except OSError:
                continue  # not a claim file of ours: nothing to remove
            if claim is None:
                busy.append(job)
            else:
                claim.release(finished=index.finished(job, out_dir) is not None)
        if not busy or time.monotonic() > deadline:
            return  # a claim file left behind is harmless: the lock is what counts
        pending = busy
        time.sleep(0.2)


def init_ray(address: str, cpus: int) -> bool:
    """Connect to Ray (`local`: start an instance on 127.0.0.1 for this run). True when this call started it
    (the caller then shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    import logging

    logging.getLogger("ray").setLevel(logging.WARNING)
    if address == "local":
        # its notice that token authentication is on: the instance is this run's own, on 127.0.0.1
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
        ray.init(num_cpus=cpus, _node_ip_address="127.0.0.1", **kwargs)
    else:
        ray.init(address=address, **kwargs)
    return True


def run_on_ray(jobs: Sequence[Job], out_dir: Path, checkpoint: Path | str, options: RunOptions, *,
               engine_options: dict[str, Any], address: str = "local", workers: int | None = None,
               gpus_per_worker: float | None = None, threads: int = 1, rows_per_call: int | None = None,
               reporter: Reporter | None = None, index: FinishedIndex | None = None) -> RunSummary:
    """Every job: skipped if done, else searched by a pool of Ray workers; the records appended here."""
    import time

    reporter = reporter or Reporter()
    started = time.monotonic()
    out_dir = Path(out_dir)
    config = engine_options["config"]
    recorder = Runner(None, out_dir, options=options, checkpoint=checkpoint, config=config, reporter=reporter)
    shutdown = False
    try:
        todo = recorder.begin(jobs, index)
        reporter.start(len(todo), options.samples, config.steps)
        if todo:
            import ray
            import ray.data

            local_cpus = max(os.cpu_count() or 1, (workers or 1) * threads)
            shutdown = init_ray(address, local_cpus)
            import logging

            # Ray Data's progress lines, notes and its multi-line reports of a failed worker: the run has its
            # own progress and says what failed in one line (Ray's full report stays in its session logs)
            logging.getLogger("ray.data").setLevel(logging.CRITICAL)
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False  # the run has its own
            context.print_on_execution_start = False
            resources = ray.cluster_resources()
            gpus = gpus_per_worker if gpus_per_worker is not None else (1 if resources.get("GPU", 0) > 0 else 0)
            if workers is None:
                workers = int(resources.get("GPU", 0) // gpus) if gpus else int(resources.get("CPU", 1) // threads)
            workers = max(1, min(workers, len(todo)))
            if rows_per_call is None:  # --batch-size auto: a GPU worker's pool wants several inputs at a time
                rows_per_call = 16 if gpus else 1
            reporter.note(f"ray: {workers} worker(s), {threads} thread(s)"
                          + (f", {gpus:g} GPU(s)" if gpus else "") + " each")
            data = ray.data.from_items([{"job": pickle.dumps(_absolute(j, out_dir, options))} for j in todo],
                                       override_num_blocks=min(len(todo), 200))
            if engine_options.get("gaussian_fit") is not None:  # a worker's working folder is not this one's
                engine_options = {**engine_options, "gaussian_fit": Path(engine_options["gaussian_fit"]).resolve()}
            searched = data.map_batches(
                Searcher, batch_size=rows_per_call, compute=ray.data.ActorPoolStrategy(size=workers),
                num_cpus=threads, num_gpus=gpus or None,
                fn_constructor_kwargs={"checkpoint": str(Path(checkpoint).resolve()), "out_dir": str(out_dir.resolve()),
                                       "options": options, "engine_options": engine_options,
                                       "threads": threads, "die_once": os.environ.get(DIE_ONCE_ENV)})
            steps = config.steps
            seen: set[str] = set()
            for row in _rows(searched):
                rel = row["input"]
                record: ResultRecord | None = pickle.loads(bytes(row["record"]))
                if rel in seen:  # a retried batch whose first attempt's rows did arrive: recorded once
                    continue
                seen.add(rel)
                l2 = record.worst_sample_l2 if record is not None else None
                reporter.step(options.samples * steps, l2 if l2 is not None else float("nan"), steps, steps)
                if record is not None:
                    recorder.record(record)
            del searched, data
            if shutdown:  # the workers go, and with them their claims
                ray.shutdown()
                shutdown = False
            _remove_claim_files(todo, out_dir)
    finally:
        recorder.leave()
        reporter.close()
        if shutdown:
            import ray

            ray.shutdown()
    return recorder.end(jobs, started)
