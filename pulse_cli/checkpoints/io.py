"""Reading checkpoint files as data: `torch.load` only with `weights_only=True`."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not what was expected; the message is one line."""


def first_line(exc: BaseException) -> str:
    """An exception as one line, for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_checkpoint_file(path: Path) -> Path:
    """The path, if it is a non-empty file; else a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    return path


def load_tensor_file(path: Path) -> Any:
    """torch.load as data only; tensors land on the CPU whatever device they were saved from."""
    path = check_checkpoint_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: not a plain tensor checkpoint or refused as unsafe "
                              f"({first_line(exc)})") from None
    except Exception as exc:  # a damaged file makes torch's reader fail in many ways (EOF, struct, index …)
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({first_line(exc)})") from None

