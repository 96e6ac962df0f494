"""Checkpoints already on this machine: which one `pulse` uses when none is named, where copies of the known
models sit, and which files carry a sha256 record.

Importing this module does not import torch (`pulse weights list` stays quick); the checkpoint code is
imported by the functions that sniff files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import registry
from .locations import weights_search_dirs
from .registry import KnownModel

if TYPE_CHECKING:
    from ..checkpoints.detect import Candidate


def family_from_name(path: Path) -> str | None:
    """A family for files the content sniff cannot place, from the known models' file names."""
    for model in registry.KNOWN_MODELS:
        if model.kind == "generator" and model.filename == Path(path).name:
            return model.family
    return None


@dataclass(frozen=True)
class DefaultChoice:
    """The checkpoint `pulse` uses when none is named, and what it was chosen from."""

    found: list[tuple[Path, Candidate]]  # (searched folder, generator) for every generator found, best first
    folders: list[Path]  # the folders searched

    @property
    def path(self) -> Path:
        return self.found[0][1].path

    @property
    def demo(self) -> bool:
        return self.found[0][1].demo

    def reason(self) -> str:
        """Why this one, in a few words: the only one found, or what put it first."""
        where = " and ".join(str(f) for f in self.folders)
        (folder, chosen), others = self.found[0], self.found[1:]
        if not others:
            return f"the only generator found in {where}"
        if chosen.demo:
            return f"no trained generator in {where}: the untrained demo generator"
        demo = next((c for _, c in others if c.demo), None)
        if demo is not None:
            why = f"trained generators come before the untrained demo generator ({demo.path})"
        elif others[0][0] != folder:
            why = f"{folder} comes before {others[0][0]}"
        else:
            why = f"the first in {folder} by the default order"
        count = f"{len(others)} other{'s' if len(others) > 1 else ''}"
        return (f"a trained {chosen.family or 'unknown-family'} generator, chosen over {count}: {why}; the order "
                "is in 'pulse upsample --help'")


def choose_default_checkpoint(folders: list[Path] | None = None) -> DefaultChoice | None:
    """The checkpoint to use when none is named (None when there is none), by DEFAULT_ORDER over `folders`
    (default: `weights_search_dirs()`), each searched at top level, then one level down. Files are
    recognised by name, extension and a light look at their first bytes, never hashed or fully loaded."""
    from ..checkpoints.detect import candidate_rank, rank_in_folder

    folders = [Path(f) for f in (weights_search_dirs() if folders is None else folders)]
    ranked = [((c.demo, index, *candidate_rank(c)[1:]), folder, c)
              for index, folder in enumerate(folders) for c in rank_in_folder(folder, family_from_name)]
    if not ranked:
        return None
    ranked.sort(key=lambda item: item[0])
    return DefaultChoice([(folder, c) for _, folder, c in ranked], folders)


def find_default_checkpoint(folders: list[Path] | None = None) -> Path | None:
    """The path of `choose_default_checkpoint`'s choice, or None."""
    choice = choose_default_checkpoint(folders)
    return choice.path if choice is not None else None


def resolve_checkpoint(path: Path) -> Path:
    """The checkpoint file a path names: the file itself, or the one `pulse` would pick in a folder."""
    from ..checkpoints.loading import resolve_checkpoint_path

    return resolve_checkpoint_path(Path(path), family_from_name)


def local_copies(filename: str, folders: list[Path] | None = None) -> list[Path]:
    """Where a known model's file (or its converted .safetensors) sits: each folder (default:
    `weights_search_dirs()`) at top level, then one level down."""
    stem = Path(filename).stem
    names = [filename] if filename.endswith(".safetensors") else [filename, f"{stem}.safetensors"]
    found = []
    for folder in weights_search_dirs() if folders is None else folders:
        for name in names:
            for candidate in [folder / name, *sorted(folder.glob(f"*/{name}"))]:
                if candidate.is_file():
                    found.append(candidate)
    return found


def known_model_for(path: Path, family: str | None = None, resolution: int | None = None) -> KnownModel | None:
    """The registry generator whose file this is, judged by name (and, when given, family and resolution)."""
    for model in registry.KNOWN_MODELS:
        if model.kind != "generator":
            continue
        names = {model.filename, f"{Path(model.filename).stem}.safetensors"}
        if Path(path).name in names and family in (None, model.family) and resolution in (None, model.resolution):
            return model
    return None


def recorded_files(folders: list[Path]) -> list[Path]:
    """Files with a `<file>.sha256` record in `folders` (top level, then one level down)."""
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for record in [*sorted(folder.glob("*.sha256")), *sorted(folder.glob("*/*.sha256"))]:
            found.append(record.with_name(record.name[: -len(".sha256")]))
    return found


def converted_from(path: Path) -> str | None:
    """The sha256 of the file a pulse .safetensors was converted from (its `source_sha256`), read from the
    header alone; None for other files."""
    if Path(path).suffix != ".safetensors":
        return None
    from ..checkpoints.safetensors_file import header_metadata, read_header

    header = read_header(Path(path))
    return header_metadata(header).get("source_sha256") if header is not None else None


def find_by_sha256(sha256: str, folders: list[Path] | None = None) -> Path | None:
    """A checkpoint in the weights folders (default: `weights_search_dirs()`) that is the file with this
    sha256 by its `<file>.sha256` record, or a pulse .safetensors converted from it. Nothing is hashed."""
    from ..checkpoints.detect import candidate_files
    from .download import read_record

    for folder in weights_search_dirs() if folders is None else folders:
        for _, path in candidate_files(Path(folder)):
            try:
                recorded = read_record(path)
            except ValueError:  # a damaged record vouches for nothing
                recorded = None
            if recorded == sha256 or converted_from(path) == sha256:
                return path
    return None
