"""Recognising checkpoint files by content: the container, then the structure inside it.

Containers are told apart by their first bytes: a safetensors prologue, a torch.save zip archive, the
legacy torch.save magic number, or another pickle. Inside torch files one table of key markers decides the
format, both on loaded data (`classify_torch_data`, when reading) and on the raw pickled structure (`sniff`,
when choosing among many files: it reads at most a few MiB and never loads tensors or hashes). NVIDIA's
pickles are told apart by `nvidia.classify_pickle` / `nvidia.sniff_pickle`, likewise from one set of markers.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import lernapparat, nvidia
from . import safetensors_file as st
from .formats import (
    DCGAN_CHECKPOINT_KEY,
    FORMAT_DCGAN,
    FORMAT_FAMILIES,
    FORMAT_LERNAPPARAT,
    FORMAT_NVIDIA_SD,
    FORMAT_PULSE,
    FORMAT_ROSINALITY,
    FORMAT_SAFETENSORS,
    FORMAT_SG3,
    GAUSSIAN_FIT_DATA,
    PULSE_GAUSSIAN_FIT,
    PULSE_MAPPING,
    PULSE_MAPPING_DATA,
    SG3_KEY_PREFIXES,
)

# torch.save's legacy (pre-zip) format starts with a protocol-2 pickle of this magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_SNIFF_BYTES = 1 << 20


def container_of(path: Path) -> str | None:
    """"safetensors", "torch-zip", "torch-legacy", "pickle", or None, from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(32)
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head.startswith(_LEGACY_MAGIC):
        return "torch-legacy"
    if st.looks_like_safetensors(head):
        return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return None


# ------------------------------------------------------------------------------------------------
# The structure inside torch files


@dataclass(frozen=True)
class TorchMarker:
    """A format's sign in a torch file's top-level keys: all of `keys`, or a key starting with a prefix."""

    format: str
    keys: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    def in_keys(self, keys: Collection[str]) -> bool:
        return all(k in keys for k in self.keys) and (
            not self.prefixes or any(k.startswith(self.prefixes) for k in keys))

    def in_pickled(self, blob: bytes) -> bool:
        # A torch file's pickled structure holds the key names as plain strings; the tensor data is elsewhere.
        return all(k.encode() in blob for k in self.keys) and (
            not self.prefixes or any(p.encode() in blob for p in self.prefixes))


# First match wins: rows for specific layouts come before the looser ones below them.
TORCH_MARKERS = (
    TorchMarker(FORMAT_LERNAPPARAT, prefixes=(lernapparat.SYNTHESIS_PREFIX, lernapparat.MAPPING_PREFIX)),
    TorchMarker(FORMAT_PULSE, keys=("blocks.4x4.const",)),
    TorchMarker(PULSE_MAPPING_DATA, keys=("dense0.weight",)),
    TorchMarker(FORMAT_ROSINALITY, keys=("g_ema",)),  # a training checkpoint
    TorchMarker(FORMAT_ROSINALITY, keys=("input.input", "style.1.weight")),  # a bare g_ema state dict
    TorchMarker(FORMAT_SG3, prefixes=SG3_KEY_PREFIXES),
    TorchMarker(FORMAT_NVIDIA_SD, keys=("synthesis.b4.const",)),
    TorchMarker(FORMAT_DCGAN, keys=(DCGAN_CHECKPOINT_KEY,)),
    TorchMarker(FORMAT_DCGAN, keys=("main.0.weight", "main.12.weight")),
    TorchMarker(GAUSSIAN_FIT_DATA, keys=("mean", "std")),
)


def classify_torch_data(data: Any) -> str | None:
    """The format of a torch.load result: a FORMAT_* name, "pulse-mapping", "gaussian-fit" or None."""
    if not isinstance(data, Mapping):
        return None
    keys = {k for k in data if isinstance(k, str)}
    return next((m.format for m in TORCH_MARKERS if m.in_keys(keys)), None)


def _sniff_torch_structure(blob: bytes) -> str | None:
    return next((m.format for m in TORCH_MARKERS if m.in_pickled(blob)), None)


# ------------------------------------------------------------------------------------------------
# Cheap recognition, for choosing a default checkpoint among many files


@dataclass(frozen=True)
class Sniff:
    """A guess from a file's first bytes: the format (or "pulse-mapping", "gaussian-fit", None) and family."""

    format: str | None
    family: str | None

    @property
    def is_generator(self) -> bool:
        # A TF pickle of unknown generation counts: `choose_in_folder` may know its family by name.
        return self.format not in (None, FORMAT_SG3, PULSE_MAPPING_DATA, GAUSSIAN_FIT_DATA)


def _sniffed(fmt: str | None) -> Sniff:
    return Sniff(fmt, FORMAT_FAMILIES.get(fmt or ""))


def sniff(path: Path) -> Sniff:
    """Guess the format from at most a few MiB of the file (never hashes or loads the tensors)."""
    try:
        container = container_of(path)
        if container == "safetensors":
            header = st.read_header(path)
            if header is None:
                return Sniff(None, None)
            family = st.header_metadata(header).get("family") or st.family_from_keys(header)
            return Sniff(FORMAT_SAFETENSORS if family else None, family)
        if container == "torch-zip":
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not names:
                    return Sniff(None, None)
                with archive.open(names[0]) as member:
                    return _sniffed(_sniff_torch_structure(member.read(4 * _SNIFF_BYTES)))
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
        if container == "torch-legacy":
            return _sniffed(_sniff_torch_structure(head))
        if container == "pickle":
            return _sniffed(nvidia.sniff_pickle(head))
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError):
        pass
    return Sniff(None, None)


# ------------------------------------------------------------------------------------------------
# Choosing the checkpoint in a folder


CANDIDATE_SUFFIXES = (".safetensors", ".pkl", ".pickle", ".pt", ".pth", ".ckpt")
_NOT_GENERATORS = (PULSE_MAPPING, PULSE_GAUSSIAN_FIT)
_FAMILY_RANK = {"stylegan1": 0, "stylegan2": 1}
_FORMAT_RANK = {FORMAT_SAFETENSORS: 0, FORMAT_PULSE: 1, FORMAT_LERNAPPARAT: 2}


def candidate_files(folder: Path) -> list[tuple[int, Path]]:
    """Files in `folder` (depth 0) and its sub-folders (depth 1) that could be generator checkpoints."""
    def usable(p: Path) -> bool:
        name = p.name
        return (not name.startswith(".") and name.endswith(CANDIDATE_SUFFIXES) and name not in _NOT_GENERATORS
                and not name.endswith((".gaussian_fit.pt", ".latents.safetensors")))

    found: list[tuple[int, Path]] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return found
    for entry in entries:
        try:
            if entry.is_file() and usable(entry):
                found.append((0, entry))
            elif entry.is_dir() and not entry.name.startswith("."):
                found.extend((1, sub) for sub in sorted(entry.iterdir()) if sub.is_file() and usable(sub))
        except OSError:
            continue
    return found


@dataclass(frozen=True)
class Candidate:
    """A generator checkpoint found in a folder: what the default choice weighs (see `rank_in_folder`)."""

    path: Path
    family: str | None
    demo: bool  # the untrained demo generator (`pulse demo-generator`): random weights, not faces
    depth: int  # 0: at the folder's top level, 1: in a sub-folder
    format: str | None


def rank_in_folder(folder: Path, name_family: Callable[[Path], str | None] | None = None) -> list[Candidate]:
    """The generator checkpoints in `folder` (top level and one level down), best first: trained ones before
    the untrained demo generator, then StyleGAN v1 (PULSE's paper used StyleGAN v1 FFHQ), StyleGAN2, other
    families (the DCGAN); top level before sub-folders; pulse's own safetensors files before PULSE's
    synthesis.pt before the others; then by name. Files are recognised by a light content sniff;
    `name_family(path)` may supply a family for pickles the sniff cannot place."""
    from .demo_marker import is_demo_checkpoint

    found = []
    for depth, path in candidate_files(Path(folder)):
        guess = sniff(path)
        if not guess.is_generator:
            continue
        family = guess.family or (name_family(path) if name_family is not None else None)
        found.append(Candidate(path, family, is_demo_checkpoint(path), depth, guess.format))
    return sorted(found, key=candidate_rank)


def candidate_rank(c: Candidate) -> tuple:
    """The order of `rank_in_folder`, as a sort key."""
    return (c.demo, _FAMILY_RANK.get(c.family or "", 2), c.depth, _FORMAT_RANK.get(c.format or "", 3), c.path.name)


def choose_in_folder(folder: Path, name_family: Callable[[Path], str | None] | None = None) -> Path | None:
    """The checkpoint `pulse` would pick in `folder` (top level and one level down), or None: the first of
    `rank_in_folder`."""
    ranked = rank_in_folder(folder, name_family)
    return ranked[0].path if ranked else None
