"""Finding and loading generator checkpoints, with their latent statistics.

Formats are recognised by content, never by file name. Loading never executes code from a file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .generator import Generator, LatentStats
from .io import CheckpointError, load_tensor_file, sha256_file
from .latent_stats import PULSE_SAMPLES, compute_latent_stats, read_gaussian_fit, save_latent_stats
from .stylegan1 import StyleGAN1Generator

PULSE_SYNTHESIS = "synthesis.pt"
PULSE_MAPPING = "mapping.pt"
PULSE_GAUSSIAN_FIT = "gaussian_fit.pt"

Notify = Callable[[str], None]


@dataclass
class LoadedNetworks:
    """What a checkpoint file gave: the generator (no statistics yet) and where its mapping came from."""

    generator: Generator
    path: Path
    mapping_path: Path | None


def find_default_checkpoint(folders: list[Path]) -> Path | None:
    """The first checkpoint in the given folders (each searched at top level, then one level down)."""
    for folder in folders:
        for candidate in [folder / PULSE_SYNTHESIS, *sorted(folder.glob(f"*/{PULSE_SYNTHESIS}"))]:
            if candidate.is_file():
                return candidate
    return None


def _is_pulse_synthesis(data: object) -> bool:
    return isinstance(data, dict) and "blocks.4x4.const" in data


def _is_pulse_mapping(data: object) -> bool:
    return isinstance(data, dict) and "dense0.weight" in data and "blocks.4x4.const" not in data


def resolve_checkpoint_path(path: Path) -> Path:
    """A folder stands for the checkpoint inside it (PULSE's synthesis.pt)."""
    path = Path(path)
    if path.is_dir():
        candidate = path / PULSE_SYNTHESIS
        if candidate.is_file():
            return candidate
        raise CheckpointError(f"{path}: folder holds no {PULSE_SYNTHESIS}")
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    return path


def _load_pulse(path: Path, synthesis: dict) -> LoadedNetworks:
    mapping_path = path.with_name(PULSE_MAPPING)
    mapping = None
    if mapping_path.is_file():
        mapping = load_tensor_file(mapping_path)
        if not _is_pulse_mapping(mapping):
            raise CheckpointError(f"{mapping_path}: not a StyleGAN v1 mapping network (no dense0.weight)")
    try:
        generator = StyleGAN1Generator.from_state_dicts(synthesis, mapping)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return LoadedNetworks(generator, path, mapping_path if mapping is not None else None)


def load_networks(path: Path) -> LoadedNetworks:
    """Load the generator networks from a checkpoint path, recognising the format by content."""
    path = resolve_checkpoint_path(path)
    data = load_tensor_file(path)
    if _is_pulse_synthesis(data):
        return _load_pulse(path, data)
    if _is_pulse_mapping(data):
        raise CheckpointError(f"{path}: this is a mapping network; pass the synthesis network "
                              f"({PULSE_SYNTHESIS}) with {PULSE_MAPPING} beside it")
    raise CheckpointError(f"{path}: not a recognised generator checkpoint (expected PULSE's "
                          f"{PULSE_SYNTHESIS}: a state dict with blocks.4x4.const ...)")


def latent_stats_for(loaded: LoadedNetworks, *, gaussian_fit: Path | None, cache_dir: Path | None,
                     samples: int = PULSE_SAMPLES, notify: Notify | None = None) -> LatentStats:
    """Statistics from, in order: an explicit file, gaussian_fit.pt beside the checkpoint, the cache,
    or computed from the mapping network (then cached)."""
    if gaussian_fit is not None:
        return _checked(read_gaussian_fit(gaussian_fit), loaded.generator, gaussian_fit)
    beside = loaded.path.with_name(PULSE_GAUSSIAN_FIT)
    if beside.is_file():
        return _checked(read_gaussian_fit(beside), loaded.generator, beside)
    if loaded.mapping_path is None:
        raise CheckpointError(
            f"{loaded.path}: no latent statistics: put PULSE's {PULSE_GAUSSIAN_FIT} or the generator's "
            f"{PULSE_MAPPING} beside it, or pass --gaussian-fit PATH")
    cached = None
    if cache_dir is not None:
        key = sha256_file(loaded.mapping_path)
        suffix = "" if samples == PULSE_SAMPLES else f"-{samples}"
        cached = Path(cache_dir) / "latent-stats" / f"{key}{suffix}.pt"
        if cached.is_file():
            try:
                return _checked(read_gaussian_fit(cached), loaded.generator, cached)
            except CheckpointError:
                pass  # a damaged cache entry is recomputed below
    if notify is not None:
        notify(f"computing latent statistics from {loaded.mapping_path.name} "
               f"({samples:,} samples, once per checkpoint)")
    generator = loaded.generator
    stats = compute_latent_stats(generator.map, generator.z_dim, samples=samples, device=generator.device)
    if cached is not None:
        save_latent_stats(stats, cached)
    return stats


def _checked(stats: LatentStats, generator: Generator, path: Path) -> LatentStats:
    if stats.mean.shape[0] != generator.w_dim:
        raise CheckpointError(f"{path}: latent statistics have {stats.mean.shape[0]} dims, "
                              f"the generator's w has {generator.w_dim}")
    return stats


def load_generator(path: str | Path, device: str | torch.device = "cpu", *,
                   gaussian_fit: str | Path | None = None, cache_dir: str | Path | None = None,
                   notify: Notify | None = None) -> Generator:
    """Load a generator ready for the latent search: weights frozen, latent statistics attached.

    `cache_dir` defaults to the user cache (or `PULSE_HOME`); statistics computed from the mapping
    network are stored there so they are computed once per checkpoint.
    """
    if cache_dir is None:
        from ..weights.locations import cache_dir as default_cache_dir

        cache_dir = default_cache_dir()
    loaded = load_networks(Path(path))
    generator = loaded.generator.to(device)
    stats = latent_stats_for(loaded, gaussian_fit=Path(gaussian_fit) if gaussian_fit else None,
                             cache_dir=Path(cache_dir), notify=notify)
    generator.latent_stats = stats.to(device)
    generator.source = str(loaded.path)
    generator.source_sha256 = sha256_file(loaded.path)
    return generator
