"""Latent statistics: PULSE's `gaussian_fit.pt`, read or computed from the mapping network."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

from ..files.atomic import atomic_write_bytes
from ..networks.generator import Generator, LatentStats
from .errors import CheckpointError
from .io import load_torch_file

PULSE_SAMPLES = 1_000_000
PULSE_SEED = 0
# Rows of z per chunk: a multiple of 16 so chunked draws equal one big draw from the same generator.
CHUNK_ROWS = 50_000


def read_gaussian_fit(path: Path) -> LatentStats:
    """Read a `{"mean": [w_dim], "std": [w_dim]}` file (legacy or zip format, any device tag)."""
    data = load_torch_file(path)
    if not isinstance(data, dict) or not {"mean", "std"} <= set(data):
        raise CheckpointError(f"{path}: not a gaussian fit (expected a dict with 'mean' and 'std')")
    mean, std = data["mean"], data["std"]
    if not (isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)) or mean.ndim != 1 \
            or mean.shape != std.shape:
        raise CheckpointError(f"{path}: gaussian fit 'mean' and 'std' must be two vectors of one size")
    return LatentStats(mean.float(), std.float())


def check_finite(tensors: Iterable[tuple[str, torch.Tensor]], path: Path) -> None:
    """CheckpointError naming `path` and the first tensor holding NaN or infinity: such a network would make
    black images that look like results. Once per load: a sum per tensor (NaN and infinity carry through
    it; ~10x cheaper than testing each value), each value tested only when the sum is not finite (overflow)."""
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor.sum())) \
                and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path}: {name} holds non-finite values (NaN or infinity); the file is "
                                  f"damaged")


def check_stats_fit(stats: LatentStats, generator: Generator, path: Path) -> LatentStats:
    """The statistics, if they are finite and the size of the generator's w; else a CheckpointError naming
    `path`."""
    if stats.mean.shape[0] != generator.w_dim:
        raise CheckpointError(f"{path}: latent statistics have {stats.mean.shape[0]} dims, "
                              f"the generator's w has {generator.w_dim}")
    check_finite([("latent statistics mean", stats.mean), ("latent statistics std", stats.std)], path)
    return stats


@torch.no_grad()
def compute_latent_stats(mapping: Callable[[torch.Tensor], torch.Tensor], z_dim: int, *,
                         samples: int = PULSE_SAMPLES, seed: int = PULSE_SEED,
                         chunk_rows: int = CHUNK_ROWS, device: torch.device | str = "cpu") -> LatentStats:
    """Mean and unbiased std of LeakyReLU(5)(mapping(z)) over `samples` seeded normal z, as PULSE.

    Drawn in chunks so that 1e6 samples fit in memory; sums are kept in float64.
    """
    if samples < 2:
        raise ValueError("need at least 2 samples for a standard deviation")
    rng = torch.Generator().manual_seed(seed)
    total = total_sq = None
    done = 0
    while done < samples:
        rows = min(chunk_rows, samples - done)
        z = torch.randn((rows, z_dim), generator=rng).to(device)
        w = F.leaky_relu(mapping(z), 5.0).double()
        total = w.sum(0) if total is None else total + w.sum(0)
        total_sq = w.pow(2).sum(0) if total_sq is None else total_sq + w.pow(2).sum(0)
        done += rows
    mean = total / samples
    var = (total_sq - samples * mean.pow(2)) / (samples - 1)
    return LatentStats(mean.float().cpu(), var.clamp(min=0).sqrt().float().cpu())


def save_latent_stats(stats: LatentStats, path: Path) -> None:
    """Write in PULSE's format, atomically (temp file in the same folder, then rename)."""
    buffer = io.BytesIO()
    torch.save({"mean": stats.mean, "std": stats.std}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
