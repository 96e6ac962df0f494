"""Reading torch files as data: `torch.load` only with `weights_only=True`, every failure one line."""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import first_line
from ..files.atomic import describe_file_kind
from .errors import CheckpointError

__all__ = ["CheckpointError", "check_checkpoint_file", "load_torch_file", "refused_global"]

# rosinality's training checkpoints pickle their argparse options; a Namespace is only an attribute bag.
_TORCH_SAFE_GLOBALS = [argparse.Namespace]
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def check_checkpoint_file(path: Path) -> Path:
    """The path, if it is a non-empty file; else a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        if path.exists():  # a FIFO, a device such as /dev/zero, a folder: there is no file to read
            kind = describe_file_kind(path.stat().st_mode)
            raise CheckpointError(f"{path}: is {kind}, not a checkpoint file")
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    return path


def refused_global(exc: pickle.UnpicklingError) -> str | None:
    """The global ("os.system") torch's weights-only loader refused, when its message names one."""
    found = _REFUSED_GLOBAL.search(str(exc))
    return found.group(1) if found else None


def load_torch_file(path: Path, *, mmap: bool = False) -> Any:
    """torch.load as data only (`weights_only=True`, argparse.Namespace allowed), tensors on the CPU.

    `mmap` maps a zip-format file instead of reading it. Anything unsafe or unreadable is a one-line
    CheckpointError naming the file.
    """
    path = check_checkpoint_file(path)
    try:
        with torch.serialization.safe_globals(_TORCH_SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        name = refused_global(exc)
        what = f"it references {name}" if name else first_line(exc)
        raise CheckpointError(f"{path}: refused as unsafe: {what}, which a checkpoint never needs") from None
    except Exception as exc:  # a damaged file makes torch's reader fail in many ways (EOF, struct, index ...)
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({first_line(exc)})") from None
