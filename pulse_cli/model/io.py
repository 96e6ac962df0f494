"""Reading checkpoint files as data: `torch.load` only with `weights_only=True`."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not what was expected; the message is one line."""


def load_tensor_file(path: Path) -> Any:
    """torch.load as data only; tensors land on the CPU whatever device they were saved from."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a plain tensor checkpoint or refused as unsafe ({first})") from None
    except Exception as exc:  # a damaged file makes torch's reader fail in many ways (EOF, struct, index …)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({reason})") from None

