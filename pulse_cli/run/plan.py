"""Planning a run: which inputs there are, which are done, and each search's seed. Needs no model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..files.discovery import InputFile, OutputPaths, discover_inputs, output_paths


def derive_seed(base_seed: int, rel: str, sample: int) -> int:
    """A per-image seed from the base seed and the input's relative path: independent of file order
    and of batch-mates, and different for every sample."""
    digest = hashlib.sha256(f"{base_seed}\0{rel}\0{sample}".encode()).hexdigest()
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
    done: bool  # every output exists from an earlier run

    @property
    def rel(self) -> str:
        """The input's path relative to IN, `/`-separated: its name in records and seeds."""
        return self.input.rel.as_posix()


def plan_jobs(in_dir: Path, out_dir: Path, options: RunOptions) -> list[Job]:
    """Discover inputs and see which are already done."""
    inputs = discover_inputs(in_dir, recursive=options.recursive, exclude=out_dir)
    jobs = []
    for item in inputs:
        outputs = [output_paths(out_dir, item.rel, sample=k, samples=options.samples)
                   for k in range(options.samples)]
        done = not options.overwrite and all(o.image.is_file() for o in outputs)
        jobs.append(Job(item, outputs, done))
    return jobs
