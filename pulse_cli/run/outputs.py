"""Writing one sample's files: its log, latents, frames and animation, and last its image."""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from PIL import Image

from ..files.atomic import write_jsonl
from ..files.discovery import OutputPaths
from ..files.images import save_image_atomic, save_png, to_pil
from ..files.latents import save_latents
from ..files.metadata import result_metadata
from ..search.pulse import SearchResult, StepRecord
from .plan import RunOptions
from .records import RunHeader, StepLine, search_status, to_json


def step_line(record: StepRecord) -> StepLine:
    return StepLine(step=record.step, lr=record.lr, loss=record.losses, l2=record.l2, total=record.total)


def write_sample(paths: OutputPaths, header: RunHeader, result: SearchResult, options: RunOptions,
                 frames: list[Image.Image] = ()) -> None:
    """Every file of one finished search (`frames`: the animation's small frames, with --animate)."""
    status = search_status(result.converged)
    write_jsonl(paths.log, itertools.chain([to_json(header)], (to_json(step_line(r)) for r in result.history)))
    if options.save_latents:
        save_latents(paths.latents, result.ws, result.noise, {
            "checkpoint": header.checkpoint, "checkpoint_sha256": header.checkpoint_sha256 or "",
            "input": header.input, "input_sha256": header.input_sha256, "seed": header.seed,
            "image_seed": header.image_seed, "best_step": result.best_step, "steps": result.steps_run,
            "l2": result.best_l2, "status": status, "device": header.device,
            "synthesis_path": header.generator["synthesis_path"],
            **({"threads": header.threads} if header.threads is not None else {}),
        })
    if options.animate:
        write_animation(paths, frames, result)
    text = None
    if options.metadata:
        text = result_metadata(checkpoint=Path(header.checkpoint).name, checkpoint_sha256=header.checkpoint_sha256,
                               seed=header.seed, image_seed=header.image_seed, steps=result.steps_run,
                               l2=result.best_l2, status=status, input_sha256=header.input_sha256,
                               family=header.generator.get("family"))
    save_png(result.image, paths.image, text=text)


# Animation frames are kept this small while the search runs: a 1024 px frame is 3 MiB.
ANIMATION_SIZE = 256


def write_frame(paths: OutputPaths, step: int, image: torch.Tensor) -> None:
    """One --save-every frame, written as the search makes it."""
    save_image_atomic(to_pil(image), paths.frames / f"step-{step:04d}.png")


def animation_frame(image: torch.Tensor) -> Image.Image:
    frame = to_pil(image)
    if frame.width > ANIMATION_SIZE:
        frame = frame.resize((ANIMATION_SIZE, ANIMATION_SIZE), Image.Resampling.LANCZOS)
    return frame


def write_animation(paths: OutputPaths, frames: list[Image.Image], result: SearchResult) -> None:
    from ..files.sheets import save_animation

    save_animation([*frames, animation_frame(result.image)], paths.animation)
