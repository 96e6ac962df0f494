"""One engine: a generator loaded once, ready for PULSE searches and renders (placeholder, see below)."""

from __future__ import annotations

from pathlib import Path

import torch

from .checkpoints.loading import load_generator as _load_generator
from .networks.generator import Generator
from .weights.local import family_from_name
from .weights.locations import cache_dir as default_cache_dir


def load_generator(path: str | Path, device: str | torch.device = "cpu", *,
                   gaussian_fit: str | Path | None = None, cache_dir: str | Path | None = None,
                   notify=None, fast: bool | None = None) -> Generator:
    """A generator ready for the latent search (weights frozen, latent statistics attached).

    `path` is any supported checkpoint or a folder holding one. Statistics computed from the mapping
    network are cached in `cache_dir` (default: the user cache, or `PULSE_HOME`). `fast`: the generator's
    fast evaluation where it has one (None: where verified, i.e. on the CPU).
    """
    return _load_generator(path, device, gaussian_fit=gaussian_fit,
                           cache_dir=cache_dir if cache_dir is not None else default_cache_dir(),
                           notify=notify, fast=fast, name_family=family_from_name)
