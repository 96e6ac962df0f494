"""A result's latents and noise as a safetensors file, enough to re-render it bit for bit."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors_bytes

from .atomic import atomic_write_bytes

LATENTS_FORMAT = "pulse-latents/1"


class LatentsError(ValueError):
    """A latents file is missing or not ours; the message is one line."""


def save_latents(path: Path, ws: torch.Tensor, noise: list[torch.Tensor], metadata: dict[str, str]) -> None:
    tensors = {"ws": ws.detach().cpu().contiguous()}
    tensors.update({f"noise.{i:02d}": n.detach().cpu().contiguous() for i, n in enumerate(noise)})
    info = {"format": LATENTS_FORMAT, **{k: str(v) for k, v in metadata.items()}}
    atomic_write_bytes(Path(path), save_safetensors_bytes(tensors, metadata=info))


def load_latents(path: Path) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, str]]:
    """(ws [num_ws, w_dim], noise list, metadata) from a file written by `save_latents`."""
    path = Path(path)
    if not path.is_file():
        raise LatentsError(f"{path}: no such latents file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, ValueError, OSError) as exc:
        raise LatentsError(f"{path}: not a safetensors latents file ({exc})") from None
    if metadata.get("format") != LATENTS_FORMAT or "ws" not in tensors:
        raise LatentsError(f"{path}: not a pulse latents file (expected format {LATENTS_FORMAT})")
    noise_keys = sorted(k for k in tensors if k.startswith("noise."))
    for key in ["ws", *noise_keys]:
        tensor = tensors[key]
        if not tensor.is_floating_point():
            raise LatentsError(f"{path}: {key} is stored as {str(tensor.dtype).removeprefix('torch.')}; "
                               f"latents are floating point")
        if not bool(torch.isfinite(tensor).all()):
            raise LatentsError(f"{path}: {key} holds non-finite values (NaN or infinity)")
        tensors[key] = tensor.float()  # the search saves float32; float16 or float64 ones are read as such
    return tensors["ws"], [tensors[k] for k in noise_keys], metadata
