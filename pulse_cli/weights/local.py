"""Checkpoints already on this machine: which one `pulse` uses when none is named."""

from __future__ import annotations

from pathlib import Path

from ..checkpoints.formats import choose_in_folder
from ..checkpoints.loading import resolve_checkpoint_path
from .locations import weights_search_dirs
from .registry import KNOWN_MODELS


def family_from_name(path: Path) -> str | None:
    """A family for files the content sniff cannot place, from the known models' file names."""
    for model in KNOWN_MODELS:
        if model.kind == "generator" and model.filename == Path(path).name:
            return model.family
    return None


def find_default_checkpoint(folders: list[Path] | None = None) -> Path | None:
    """The checkpoint to use from the first folder holding one (each searched at top level, then one level
    down; default: `weights_search_dirs()`). Within a folder StyleGAN v1 comes first (as in the PULSE paper),
    then StyleGAN2; files are recognised by name, extension and a light look at their first bytes, never
    hashed or fully loaded."""
    for folder in weights_search_dirs() if folders is None else folders:
        found = choose_in_folder(Path(folder), family_from_name)
        if found is not None:
            return found
    return None


def resolve_checkpoint(path: Path) -> Path:
    """The checkpoint file a path names: the file itself, or the one `pulse` would pick in a folder."""
    return resolve_checkpoint_path(Path(path), family_from_name)
