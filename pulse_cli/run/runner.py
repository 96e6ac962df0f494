"""Batch orchestration: which inputs to do, in which batches, and what to write for each.

The runner knows nothing of the terminal: progress and per-file errors go to a `Reporter`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import platform
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..files.atomic import append_jsonl, sha256_file, write_jsonl
from ..files.discovery import InputFile, OutputPaths, discover_inputs, output_paths, sheet_path
from ..files.images import ImageError, load_rgb, save_image_atomic, save_png, to_pil
from ..files.latents import save_latents
from ..files.metadata import result_metadata
from ..files.sheets import Tile, grid_sheet, save_animation
from ..networks.generator import Generator
from ..search.downsample import BicubicDownsample
from ..search.pulse import SearchConfig, SearchPool, SearchResult

RESULTS_FILE = "results.jsonl"
STATUSES = ("ok", "not_converged", "failed", "skipped")
SHEET_ROWS_PER_PAGE = 16
SHEET_TILE = 128


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
    metadata: bool = True  # provenance in every PNG
    save_latents: bool = False
    save_every: int | None = None  # intermediate images every K steps
    animate: bool = False
    sheet: bool = False
    stop_at_eps: bool = False  # an image leaves the batch at its first iterate meeting eps


@dataclass
class Job:
    """One input file and what the run will do with it."""

    input: InputFile
    outputs: list[OutputPaths]
    done: bool  # every output exists from an earlier run
    failed: bool = False
    input_sha256: str = ""
    target: torch.Tensor | None = None
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


@dataclass(eq=False)
class _Search:
    job: Job
    sample: int
    seed: int
    target: torch.Tensor
    seconds: float = 0.0  # this search's share of the pool's step times


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

    @property
    def checkpoint_sha256(self) -> str | None:
        if self._checkpoint_sha256 is None and Path(self.checkpoint).is_file():
            self._checkpoint_sha256 = sha256_file(Path(self.checkpoint))
        return self._checkpoint_sha256

    # -- records ---------------------------------------------------------------------------------

    def _base_record(self, job: Job) -> dict[str, Any]:
        return {
            "input": job.input.rel.as_posix(),
            "outputs": [self._rel(o.image) for o in job.outputs],
            "logs": [self._rel(o.log) for o in job.outputs],
            "seed": self.options.seed,
            "checkpoint": self.checkpoint,
            "checkpoint_sha256": self.checkpoint_sha256,
        }

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.out_dir).as_posix()

    def _emit(self, record: dict[str, Any]) -> None:
        append_jsonl(self.out_dir / RESULTS_FILE, record)
        self.summary.counts[record["status"]] += 1
        self.summary.records.append(record)
        if record["status"] == "failed":
            self.reporter.file_failed(record["input"], record["error"])
        else:
            self.reporter.file_done(record)

    def _emit_without_search(self, job: Job, status: str, error: str | None = None) -> None:
        self._emit({**self._base_record(job), "status": status, "best_l2": None, "best_step": None,
                    "steps_run": 0, "seconds": 0.0, "samples": [], "error": error})

    # -- the run ---------------------------------------------------------------------------------

    def run(self, jobs: Sequence[Job]) -> RunSummary:
        started = time.monotonic()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        searches: list[_Search] = []
        for job in jobs:
            if job.done:
                self._emit_without_search(job, "skipped")
                continue
            assert self.generator is not None, "jobs to do need a generator"
            try:
                job.target = load_rgb(job.input.path, self.generator.resolution)
                job.input_sha256 = sha256_file(job.input.path)
            except ImageError as exc:
                self._emit_without_search(job, "failed", str(exc))
                continue
            rel = job.input.rel.as_posix()
            searches.extend(_Search(job, k, derive_seed(self.options.seed, rel, k), job.target)
                            for k in range(self.options.samples))
        self.reporter.start(len(searches), self.config.steps)
        try:
            if searches:
                self._search_all(searches)
        finally:
            self.reporter.close()
        if self.options.sheet:
            self._write_run_sheets(jobs)
        self.summary.seconds = time.monotonic() - started
        return self.summary

    def _search_all(self, searches: list[_Search]) -> None:
        """Keep up to `batch_size` searches in one pool; as one finishes, the next input takes its place."""
        steps = self.config.steps
        pool = SearchPool(self.generator, config=self.config, device=self.device,
                          stop_at_eps=self.options.stop_at_eps, save_every=self._frame_interval())
        pending = deque(searches)
        while pending or len(pool):
            while len(pool) < self.options.batch_size and pending:
                search = pending.popleft()
                pool.add(search, search.target, search.seed)
            started = time.monotonic()
            try:
                pool.step()
            except torch.OutOfMemoryError:
                self._fail_searches(pool.clear(), f"out of memory on {self.device} with a batch of "
                                                  f"{self.options.batch_size}; try a smaller --batch-size "
                                                  "or --device cpu")
                continue
            except RuntimeError as exc:  # e.g. a device error: those inputs fail, the run goes on
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self._fail_searches(pool.clear(), f"search failed on {self.device}: {first}")
                continue
            share = (time.monotonic() - started) / len(pool)
            for search, _ in pool.active:
                search.seconds += share
            self.reporter.step(len(pool) / steps, min(state.history[-1].l2 for _, state in pool.active),
                               max(state.step for _, state in pool.active), steps)
            for search, result in pool.pop_finished():
                if result.steps_run < steps:  # stopped at eps: the bar owes it the steps it skipped
                    self.reporter.step((steps - result.steps_run) / steps, result.best_l2, steps, steps)
                self._write_sample(search, result)
                search.job.finished[search.sample] = (search, result, search.seconds)
                if len(search.job.finished) == self.options.samples and not search.job.failed:
                    self._finish_job(search.job)

    def _frame_interval(self) -> int | None:
        if self.options.save_every:
            return self.options.save_every
        # An animation without --save-every: about 25 frames over the search.
        return max(1, self.config.steps // 25) if self.options.animate else None

    def _fail_searches(self, searches: list[_Search], reason: str) -> None:
        for job in _unique_jobs(searches):
            if not job.failed:
                job.failed = True
                self._emit_without_search(job, "failed", reason)

    # -- writing ---------------------------------------------------------------------------------

    def _run_header(self, search: _Search) -> dict[str, Any]:
        """First line of every log: everything needed to repeat the result."""
        G = self.generator
        return {
            "type": "run", "tool": "pulse-cli", "version": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "device": str(self.device),
            "input": search.job.input.rel.as_posix(), "input_sha256": search.job.input_sha256,
            "seed": self.options.seed, "sample": search.sample, "image_seed": search.seed,
            "checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256,
            "generator": {"family": G.family, "resolution": G.resolution, "num_ws": G.num_ws, "w_dim": G.w_dim,
                          "synthesis_path": G.synthesis_path},
            "search": {**dataclasses.asdict(self.config), "bad_noise_layers": list(self.config.bad_noise_layers)},
            "batch_size": self.options.batch_size, "samples": self.options.samples,
        }

    def _write_sample(self, search: _Search, result: SearchResult) -> None:
        paths = search.job.outputs[search.sample]
        status = "ok" if result.converged else "not_converged"
        header = self._run_header(search)
        write_jsonl(paths.log, itertools.chain([header], (_step_record(r) for r in result.history)))
        if self.options.save_latents:
            save_latents(paths.latents, result.ws, result.noise, {
                "checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256 or "",
                "input": header["input"], "input_sha256": search.job.input_sha256, "seed": self.options.seed,
                "image_seed": search.seed, "best_step": result.best_step, "steps": result.steps_run,
                "l2": result.best_l2, "status": status, "device": str(self.device),
                "synthesis_path": self.generator.synthesis_path,
            })
        if result.frames:
            self._write_frames(paths, result)
        text = None
        if self.options.metadata:
            text = result_metadata(checkpoint=Path(self.checkpoint).name, checkpoint_sha256=self.checkpoint_sha256,
                                   seed=self.options.seed, image_seed=search.seed, steps=result.steps_run,
                                   l2=result.best_l2, status=status, input_sha256=search.job.input_sha256)
        # The image goes last: its presence is what marks this sample done on a rerun.
        save_png(result.image, paths.image, text=text)

    def _write_frames(self, paths: OutputPaths, result: SearchResult) -> None:
        frames = [(step, to_pil(image)) for step, image in result.frames]
        if self.options.save_every:
            for step, image in frames:
                save_image_atomic(image, paths.frames / f"step-{step:04d}.png")
        if self.options.animate:
            save_animation([image for _, image in frames] + [to_pil(result.image)], paths.animation)

    def _finish_job(self, job: Job) -> None:
        samples = []
        for k in range(self.options.samples):
            search, result, seconds = job.finished[k]
            samples.append({
                "output": self._rel(job.outputs[k].image),
                "status": "ok" if result.converged else "not_converged",
                "best_l2": result.best_l2, "best_step": result.best_step, "best_total": result.best_total,
                "steps_run": result.steps_run, "seconds": round(seconds, 3), "image_seed": search.seed,
            })
        best = min(samples, key=lambda s: s["best_l2"])
        status = "ok" if all(s["status"] == "ok" for s in samples) else "not_converged"
        record = {**self._base_record(job), "status": status, "best_l2": best["best_l2"],
                  "best_step": best["best_step"], "steps_run": max(s["steps_run"] for s in samples),
                  "seconds": round(sum(s["seconds"] for s in samples), 3), "samples": samples, "error": None}
        images = torch.stack([job.finished[k][1].image for k in range(self.options.samples)])
        if len(images) > 1 or self.options.sheet:
            with torch.no_grad():  # once, for both: the results as PULSE's downsampler sees them
                downscaled = BicubicDownsample(self.generator.resolution // job.target.shape[-1])(images)
        if len(images) > 1:
            record["diversity"] = sample_diversity(images, downscaled)
        if self.options.sheet:
            self._write_input_sheet(job, images, downscaled, samples)
        job.finished.clear()  # the images are written; free them
        self._emit(record)

    def _write_input_sheet(self, job: Job, images: torch.Tensor, downscaled: torch.Tensor,
                           samples: list[dict[str, Any]]) -> None:
        """Input (nearest), bicubic upscale, each result; below each result, it downscaled again."""
        target = job.target
        size = self.generator.resolution
        bicubic = torch.nn.functional.interpolate(target[None], size=(size, size), mode="bicubic",
                                                  align_corners=False)[0].clamp(0, 1)
        top = [Tile(to_pil(target), "input"), Tile(to_pil(bicubic), "bicubic")]
        bottom: list[Tile | None] = [None, None]
        for k, sample in enumerate(samples):
            mark = "ok" if sample["status"] == "ok" else "> eps"
            top.append(Tile(to_pil(images[k]), f"#{k} L2 {sample['best_l2']:.4f} {mark}"))
            bottom.append(Tile(to_pil(downscaled[k]), f"#{k} downscaled"))
        sheet = grid_sheet([top, bottom], tile_size=max(SHEET_TILE, min(size, 256)))
        save_image_atomic(sheet, sheet_path(self.out_dir, job.input.rel))

    def _write_run_sheets(self, jobs: Sequence[Job]) -> None:
        """OUT/sheet.png (or sheet-001.png, … for many inputs): every input beside its results."""
        by_input = {r["input"]: r for r in self.summary.records}
        rows = []
        for job in jobs:
            record = by_input.get(job.input.rel.as_posix())
            if record is None or record["status"] == "failed" or not all(o.image.is_file() for o in job.outputs):
                continue
            row = [Tile(to_pil(load_rgb(job.input.path)), job.input.rel.name[:18])]
            for k, paths in enumerate(job.outputs):
                caption = f"#{k}"
                if record["samples"]:
                    caption += f" L2 {record['samples'][k]['best_l2']:.4f}"
                row.append(Tile(to_pil(load_rgb(paths.image)), caption))
            rows.append(row)
        pages = [rows[i:i + SHEET_ROWS_PER_PAGE] for i in range(0, len(rows), SHEET_ROWS_PER_PAGE)]
        for n, page in enumerate(pages, start=1):
            name = "sheet.png" if len(pages) == 1 else f"sheet-{n:03d}.png"
            save_image_atomic(grid_sheet(page, tile_size=SHEET_TILE), self.out_dir / name)


def sample_diversity(images: torch.Tensor, downscaled: torch.Tensor) -> dict[str, float]:
    """Mean pairwise RMS difference between samples at full and at input resolution (pixels in [0, 1]).

    Large at full resolution and small at input resolution: different faces that fit the same input.
    """
    def mean_pairwise_rms(x: torch.Tensor) -> float:
        flat = x.flatten(1).double()
        pairs = [(i, j) for i in range(len(flat)) for j in range(i + 1, len(flat))]
        return float(sum((flat[i] - flat[j]).pow(2).mean().sqrt() for i, j in pairs) / len(pairs))

    return {"pairwise_rms_full": mean_pairwise_rms(images), "pairwise_rms_input": mean_pairwise_rms(downscaled)}


def _step_record(record) -> dict[str, Any]:
    # "loss" holds each term as the loss string names it (L2 clamped at eps, as optimised);
    # "l2" is the unclamped mean squared error at input resolution, the value compared with eps.
    return {"type": "step", "step": record.step, "lr": record.lr, "loss": record.losses, "l2": record.l2,
            "total": record.total}


def _unique_jobs(searches: list[_Search]) -> list[Job]:
    jobs: list[Job] = []
    for search in searches:
        if all(search.job is not job for job in jobs):
            jobs.append(search.job)
    return jobs
