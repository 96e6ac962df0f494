"""pulse's own single-file checkpoint: one safetensors file, no pickle anywhere.

Layout (format version 1):

* tensors ``synthesis.<key>`` and ``mapping.<key>``: the generator's ``state_dict()``. For StyleGAN v1 the
  keys after the prefix are PULSE's (``synthesis.blocks.4x4.const``, ``mapping.dense0.weight``); for
  StyleGAN2 the whole set is NVIDIA's ``G_ema.state_dict()`` (``synthesis.b4.const``, ``mapping.w_avg``); for
  DCGAN the tutorial's generator keys, unprefixed (``main.0.weight`` ... ``main.12.weight``).
* tensors ``latent_stats.mean`` / ``latent_stats.std`` [w_dim]: PULSE's Gaussian fit of
  ``LeakyReLU(5)(mapping(z))``, so loading needs no computation (none for DCGAN: its z is standard normal).
* ``__metadata__`` (strings): ``format`` = ``pulse-generator``, ``format_version``, ``family``,
  ``resolution``, ``num_ws``, ``w_dim``, ``source``, ``source_format``, ``source_sha256``, ``licence``,
  ``training_data``, ``latent_stats``, ``created_by``.

Reading uses the safetensors library only: the header is JSON and the rest raw little-endian tensors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import first_line
from ..files.atomic import atomic_write_bytes
from ..networks.generator import Generator, LatentStats
from .errors import CheckpointError

FORMAT_NAME = "pulse-generator"
FORMAT_VERSION = 1
SYNTHESIS_PREFIX = "synthesis."
MAPPING_PREFIX = "mapping."
STATS_MEAN = "latent_stats.mean"
STATS_STD = "latent_stats.std"
# A real header lists a few hundred tensors (tens of kB); anything near this is not a checkpoint we wrote.
_MAX_HEADER_BYTES = 64 << 20


def looks_like_safetensors(head: bytes) -> bool:
    """True when the first bytes are a safetensors prologue: u64 header length, then a JSON object."""
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= _MAX_HEADER_BYTES and head[8:9] == b"{"


def read_header(path: Path) -> dict[str, Any] | None:
    """The JSON header (tensor index and ``__metadata__``) without reading any tensor; None if unreadable."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None
            n = int.from_bytes(head, "little")
            if not 2 <= n <= _MAX_HEADER_BYTES:
                return None
            raw = f.read(n)
    except OSError:
        return None
    if len(raw) != n or not raw.startswith(b"{"):
        return None
    try:
        header = json.loads(raw)
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def header_metadata(header: dict[str, Any]) -> dict[str, str]:
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def family_from_keys(keys: Any) -> str | None:
    keys = set(keys)
    if "synthesis.blocks.4x4.const" in keys:
        return "stylegan1"
    if "synthesis.b4.const" in keys:
        return "stylegan2"
    if "main.0.weight" in keys and "main.12.weight" in keys:
        return "dcgan"
    return None


def read_file(path: Path) -> tuple[dict[str, torch.Tensor], LatentStats | None, dict[str, str]]:
    """(generator state dict, latent statistics if present, metadata). CheckpointError on any problem."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # SafetensorError, OSError, bad JSON, ...: all mean "not readable"
        raise CheckpointError(f"{path}: unreadable or truncated safetensors file ({first_line(exc)})") from None
    version = metadata.get("format_version")
    if version is not None:
        try:
            newer = int(version) > FORMAT_VERSION
        except ValueError:
            raise CheckpointError(f"{path}: bad format_version {version!r} in the safetensors metadata") from None
        if newer:
            raise CheckpointError(f"{path}: written by a newer pulse (format version {version}, this one reads "
                                  f"{FORMAT_VERSION}); upgrade pulse-depixelizer")
    stats = None
    if STATS_MEAN in tensors or STATS_STD in tensors:
        mean, std = tensors.pop(STATS_MEAN, None), tensors.pop(STATS_STD, None)
        if mean is None or std is None or mean.ndim != 1 or mean.shape != std.shape:
            raise CheckpointError(f"{path}: {STATS_MEAN} and {STATS_STD} must be two vectors of one size")
        stats = LatentStats(mean.float(), std.float())
    return tensors, stats, metadata


def split_prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def write_file(path: Path, generator: Generator, stats: LatentStats | None, metadata: dict[str, str]) -> None:
    """Write the generator (and statistics) atomically: temp file in the target folder, then rename."""
    from safetensors.torch import save as to_safetensors_bytes

    tensors: dict[str, torch.Tensor] = {}
    for key, value in generator.state_dict().items():
        # Clone: safetensors refuses tensors that share storage, and wants them contiguous on the CPU.
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    if stats is not None:
        tensors[STATS_MEAN] = stats.mean.detach().to("cpu", torch.float32).contiguous().clone()
        tensors[STATS_STD] = stats.std.detach().to("cpu", torch.float32).contiguous().clone()
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), **metadata}
    meta = {str(k): str(v) for k, v in meta.items() if v is not None}
    atomic_write_bytes(Path(path), to_safetensors_bytes(tensors, metadata=meta))
