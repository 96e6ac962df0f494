"""Every checkpoint format pulse reads, recognised by content (never by file name), read without running code.

Containers are told apart by their first bytes: a safetensors prologue, a torch.save zip archive, the
legacy torch.save magic number, or another pickle. torch files are read with `weights_only=True`; other
pickles only through the allow-list unpickler of `safe_pickle`. The structure inside then decides:

* ``pulse`` (StyleGAN v1): PULSE's ``synthesis.pt`` (``blocks.4x4.const`` ...), ``mapping.pt`` beside it;
* ``lernapparat`` (StyleGAN v1): ``karras2019stylegan-ffhq-1024x1024.for_g_all.pt``, ``g_mapping.`` /
  ``g_synthesis.`` keys, noise weights under ``epiN.top_epi.noise``;
* ``sg1-tf`` (StyleGAN v1) / ``sg2-tf`` (StyleGAN2): NVIDIA's TensorFlow pickles ``(G, D, Gs)``;
* ``sg2ada`` (StyleGAN2): stylegan2-ada-pytorch / stylegan3-repo StyleGAN2 pickles (``G_ema``);
* ``rosinality`` (StyleGAN2): rosinality/stylegan2-pytorch ``{"g_ema", "latent_avg", ...}``;
* ``nvidia-state-dict`` (StyleGAN2): a bare ``G_ema.state_dict()`` saved with torch.save;
* ``pulse-safetensors`` (either): pulse's own single file (see `formats_safetensors`).

StyleGAN3 generators are recognised and refused. Everything else is a `CheckpointError` naming the file.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import first_line
from ..networks.generator import Generator, LatentStats
from ..networks.stylegan1 import StyleGAN1Generator
from ..networks.stylegan2 import StyleGAN2Generator
from . import safetensors_file as st
from .errors import CheckpointError
from .io import check_checkpoint_file, load_torch_file
from .lernapparat import lernapparat_to_pulse
from .rosinality import rosinality_to_nvidia

PULSE_SYNTHESIS = "synthesis.pt"
PULSE_MAPPING = "mapping.pt"
PULSE_GAUSSIAN_FIT = "gaussian_fit.pt"

FORMAT_PULSE = "pulse"
FORMAT_LERNAPPARAT = "lernapparat"
FORMAT_SG1_TF = "sg1-tf"
FORMAT_SG2_TF = "sg2-tf"
FORMAT_SG2ADA = "sg2ada"
FORMAT_SG3 = "sg3"
FORMAT_ROSINALITY = "rosinality"
FORMAT_NVIDIA_SD = "nvidia-state-dict"
FORMAT_SAFETENSORS = "pulse-safetensors"

FORMAT_DESCRIPTIONS = {
    FORMAT_PULSE: "PULSE synthesis.pt (+ mapping.pt)",
    FORMAT_LERNAPPARAT: "lernapparat StyleGAN v1 conversion (for_g_all.pt)",
    FORMAT_SG1_TF: "NVIDIA StyleGAN v1 TensorFlow pickle",
    FORMAT_SG2_TF: "NVIDIA StyleGAN2 TensorFlow pickle",
    FORMAT_SG2ADA: "stylegan2-ada-pytorch / stylegan3-repo StyleGAN2 pickle",
    FORMAT_SG3: "StyleGAN3 pickle (not supported)",
    FORMAT_ROSINALITY: "rosinality stylegan2-pytorch checkpoint",
    FORMAT_NVIDIA_SD: "NVIDIA StyleGAN2 G_ema state dict",
    FORMAT_SAFETENSORS: "pulse single-file safetensors",
}

EXPECTED = ("expected PULSE's synthesis.pt, a pulse .safetensors file, an NVIDIA StyleGAN v1/StyleGAN2 "
            "network pickle, a lernapparat for_g_all.pt or a rosinality stylegan2-pytorch checkpoint")

SG3_MESSAGE = ("StyleGAN3 generators are not supported: they have no noise inputs (PULSE optimises per-layer "
               "noise) and a different synthesis network; use a StyleGAN2 or StyleGAN v1 checkpoint")

# torch.save's legacy (pre-zip) format starts with a protocol-2 pickle of this magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_SG3_KEY = re.compile(r"^synthesis\.(input\.|L\d+_\d+_\d+\.)")
_SNIFF_BYTES = 1 << 20


@dataclass
class LoadedNetworks:
    """What a checkpoint file gave: the generator (no statistics yet) and where its mapping came from.

    `mapping_path` is the file holding the mapping network (PULSE's mapping.pt, or the checkpoint itself for
    single-file formats); None when the mapping was not loaded. `latent_stats` are set when the file carries
    them. `use_fit_beside`: whether a `gaussian_fit.pt` beside the file applies to this generator.
    """

    generator: Generator
    path: Path
    mapping_path: Path | None
    format: str = FORMAT_PULSE
    latent_stats: LatentStats | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    use_fit_beside: bool = True


# ------------------------------------------------------------------------------------------------
# Containers


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
# Reading


def read_networks(path: Path) -> LoadedNetworks:
    """Load the generator networks from one checkpoint file, recognising the format by content."""
    path = check_checkpoint_file(path)
    try:
        container = container_of(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if container == "safetensors":
        return _read_safetensors(path)
    if container in ("torch-zip", "torch-legacy"):
        data = load_torch_file(path, mmap=container == "torch-zip")
        return _read_torch_data(path, data)
    if container == "pickle":
        return _read_network_pickle(path)
    raise CheckpointError(f"{path}: not a recognised generator checkpoint ({EXPECTED})")


_STRUCTURE_ERRORS = (ValueError, KeyError, IndexError, TypeError, AttributeError, RuntimeError)


def _checked(path: Path, build: Any, *args: Any) -> Any:
    """Run a converter/builder; any complaint about the structure becomes a one-line CheckpointError."""
    try:
        return build(*args)
    except CheckpointError:
        raise
    except _STRUCTURE_ERRORS as exc:
        raise CheckpointError(f"{path}: {first_line(exc)}") from None


def classify_torch_data(data: Any) -> str | None:
    """The format of a torch.load result: a FORMAT_* name, "pulse-mapping", "gaussian-fit" or None."""
    if not isinstance(data, Mapping):
        return None
    keys = [k for k in data if isinstance(k, str)]
    if any(k.startswith(("g_synthesis.", "g_mapping.")) for k in keys):
        return FORMAT_LERNAPPARAT
    if "blocks.4x4.const" in data:
        return FORMAT_PULSE
    if "dense0.weight" in data:
        return "pulse-mapping"
    if isinstance(data.get("g_ema"), Mapping) or ("input.input" in data and "style.1.weight" in data):
        return FORMAT_ROSINALITY
    if any(_SG3_KEY.match(k) for k in keys):
        return FORMAT_SG3
    if "synthesis.b4.const" in data:
        return FORMAT_NVIDIA_SD
    if {"mean", "std"} <= set(keys):
        return "gaussian-fit"
    return None


def _tensors_only(path: Path, sd: Mapping[str, Any], what: str) -> dict[str, torch.Tensor]:
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {what} entry {bad[0]!r} is not a tensor")
    return dict(sd)


def _read_torch_data(path: Path, data: Any) -> LoadedNetworks:
    fmt = classify_torch_data(data)
    if fmt == FORMAT_PULSE:
        return _read_pulse(path, _tensors_only(path, data, "synthesis"))
    if fmt == "pulse-mapping":
        raise CheckpointError(f"{path}: this is a mapping network; pass the synthesis network "
                              f"({PULSE_SYNTHESIS}) with {PULSE_MAPPING} beside it")
    if fmt == "gaussian-fit":
        raise CheckpointError(f"{path}: this is a latent-statistics file (gaussian_fit.pt), not a generator; "
                              f"pass it with --gaussian-fit")
    if fmt == FORMAT_LERNAPPARAT:
        return _read_lernapparat(path, data)
    if fmt == FORMAT_ROSINALITY:
        return _read_rosinality(path, data)
    if fmt == FORMAT_SG3:
        raise CheckpointError(f"{path}: {SG3_MESSAGE}")
    if fmt == FORMAT_NVIDIA_SD:
        sd = _tensors_only(path, data, "state dict")
        generator = _checked(path, StyleGAN2Generator.from_state_dict, sd)
        return LoadedNetworks(generator, path, path, FORMAT_NVIDIA_SD, use_fit_beside=False)
    sample = ", ".join(str(k) for k in list(data)[:4]) if isinstance(data, Mapping) else type(data).__name__
    raise CheckpointError(f"{path}: not a recognised generator checkpoint (a torch file holding "
                          f"{sample or 'nothing'}; {EXPECTED})")


def _read_pulse(path: Path, synthesis: dict[str, torch.Tensor]) -> LoadedNetworks:
    mapping_path = path.with_name(PULSE_MAPPING)
    mapping = None
    if mapping_path.is_file():
        mapping = load_torch_file(mapping_path)
        if classify_torch_data(mapping) != "pulse-mapping":
            raise CheckpointError(f"{mapping_path}: not a StyleGAN v1 mapping network (no dense0.weight)")
        mapping = _tensors_only(mapping_path, mapping, "mapping")
    generator = _checked(path, StyleGAN1Generator.from_state_dicts, synthesis, mapping)
    return LoadedNetworks(generator, path, mapping_path if mapping is not None else None, FORMAT_PULSE)


def _read_lernapparat(path: Path, data: Mapping[str, Any]) -> LoadedNetworks:
    try:
        synthesis, mapping = lernapparat_to_pulse(data)
    except ValueError as exc:
        raise CheckpointError(f"{path}: lernapparat StyleGAN file: {exc}") from None
    generator = _checked(path, StyleGAN1Generator.from_state_dicts, synthesis, mapping or None)
    return LoadedNetworks(generator, path, path if mapping else None, FORMAT_LERNAPPARAT)


def _read_rosinality(path: Path, data: Mapping[str, Any]) -> LoadedNetworks:
    sd = _checked(path, rosinality_to_nvidia, data)
    generator = _checked(path, StyleGAN2Generator.from_state_dict, sd)
    return LoadedNetworks(generator, path, path, FORMAT_ROSINALITY, use_fit_beside=False)


def _pickle_message(path: Path, message: str) -> str:
    """safe_pickle / nvidia messages name the file by its base name: name it by the path given instead."""
    name = path.name
    if name in message:
        return message.replace(name, str(path), 1)
    return f"{path}: {message}"


def _read_network_pickle(path: Path) -> LoadedNetworks:
    from . import nvidia
    from .safe_pickle import load_restricted_pickle

    try:
        obj = load_restricted_pickle(path)
    except ValueError as exc:  # UnsafeCheckpointError, CorruptCheckpointError
        raise CheckpointError(_pickle_message(path, first_line(exc))) from None
    try:
        with nvidia._errors_name_file(path.name):
            fmt = nvidia._classify(obj)
            if fmt == FORMAT_SG3:
                raise ValueError(f"{path.name}: {SG3_MESSAGE}")
            if fmt == FORMAT_SG2ADA:
                sd = nvidia._read_sg2ada(obj, path.name, "G_ema")["state_dict"]
                generator = StyleGAN2Generator.from_state_dict(sd)
                return LoadedNetworks(generator, path, path, FORMAT_SG2ADA, use_fit_beside=False)
            if fmt in (FORMAT_SG1_TF, FORMAT_SG2_TF):
                gs_state = nvidia._tf_state_dict(nvidia._tf_gs(obj))
                if fmt == FORMAT_SG1_TF:
                    synthesis, mapping, _extras = nvidia.sg1_tf_to_pulse(gs_state)
                    generator = StyleGAN1Generator.from_state_dicts(synthesis, mapping)
                    return LoadedNetworks(generator, path, path, FORMAT_SG1_TF)
                generator = StyleGAN2Generator.from_state_dict(nvidia.sg2_tf_to_nvidia(gs_state))
                return LoadedNetworks(generator, path, path, FORMAT_SG2_TF, use_fit_beside=False)
    except ValueError as exc:
        raise CheckpointError(_pickle_message(path, first_line(exc))) from None
    except (KeyError, IndexError, TypeError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: malformed network pickle ({first_line(exc)})") from None
    raise CheckpointError(f"{path}: not a recognised generator checkpoint (a readable pickle of another kind; "
                          f"{EXPECTED})")


def _read_safetensors(path: Path) -> LoadedNetworks:
    tensors, stats, metadata = st.read_file(path)
    family = st.family_from_keys(tensors)
    declared = metadata.get("family")
    if family is None:
        raise CheckpointError(f"{path}: a safetensors file without a generator in it (no synthesis.blocks.4x4.const "
                              f"or synthesis.b4.const; {EXPECTED})")
    if declared is not None and declared != family:
        raise CheckpointError(f"{path}: metadata says family {declared!r} but the tensors are a {family} generator")
    if family == "stylegan1":
        synthesis = st.split_prefixed(tensors, st.SYNTHESIS_PREFIX)
        mapping = st.split_prefixed(tensors, st.MAPPING_PREFIX)
        other = [k for k in tensors if not k.startswith((st.SYNTHESIS_PREFIX, st.MAPPING_PREFIX))]
        if other:
            raise CheckpointError(f"{path}: unexpected tensors {other[:3]} in a StyleGAN v1 file")
        generator = _checked(path, StyleGAN1Generator.from_state_dicts, synthesis, mapping or None)
        has_mapping = bool(mapping)
    else:
        generator = _checked(path, StyleGAN2Generator.from_state_dict, tensors)
        has_mapping = True
    if stats is not None and stats.mean.shape[0] != generator.w_dim:
        raise CheckpointError(f"{path}: latent statistics have {stats.mean.shape[0]} dims, "
                              f"the generator's w has {generator.w_dim}")
    return LoadedNetworks(generator, path, path if has_mapping else None, FORMAT_SAFETENSORS, stats, metadata,
                          use_fit_beside=family == "stylegan1")


# ------------------------------------------------------------------------------------------------
# Cheap recognition, for choosing a default checkpoint among many files


@dataclass(frozen=True)
class Sniff:
    """A guess from a file's first bytes: the format (or "pulse-mapping", "gaussian-fit", None) and family."""

    format: str | None
    family: str | None

    @property
    def is_generator(self) -> bool:
        return self.format not in (None, FORMAT_SG3, "pulse-mapping", "gaussian-fit")


def _sniff_torch_structure(blob: bytes) -> Sniff:
    # The pickled structure holds the key names as plain strings; tensor data is elsewhere.
    if b"g_synthesis." in blob:
        return Sniff(FORMAT_LERNAPPARAT, "stylegan1")
    if b"blocks.4x4.const" in blob:
        return Sniff(FORMAT_PULSE, "stylegan1")
    if b"dense0.weight" in blob:
        return Sniff("pulse-mapping", "stylegan1")
    if b"g_ema" in blob or (b"input.input" in blob and b"style.1.weight" in blob):
        return Sniff(FORMAT_ROSINALITY, "stylegan2")
    if b"synthesis.L0_" in blob or b"synthesis.input." in blob:
        return Sniff(FORMAT_SG3, None)
    if b"synthesis.b4.const" in blob:
        return Sniff(FORMAT_NVIDIA_SD, "stylegan2")
    if b"mean" in blob and b"std" in blob:
        return Sniff("gaussian-fit", None)
    return Sniff(None, None)


def _sniff_pickle(head: bytes) -> Sniff:
    if b"torch_utils.persistence" in head:
        return Sniff(FORMAT_SG3, None) if b"SynthesisInput" in head else Sniff(FORMAT_SG2ADA, "stylegan2")
    if b"dnnlib.tflib.network" in head:
        # The synthesis network's source and variable names come early: StyleGAN2 modulates ('mod_weight'),
        # StyleGAN v1 has StyleMod layers.
        if b"mod_weight" in head:
            return Sniff(FORMAT_SG2_TF, "stylegan2")
        if b"StyleMod" in head:
            return Sniff(FORMAT_SG1_TF, "stylegan1")
        return Sniff("tf-pickle", None)
    return Sniff(None, None)


def sniff(path: Path) -> Sniff:
    """Guess the format from at most ~1 MiB of the file (never hashes or loads the tensors)."""
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
                    return _sniff_torch_structure(member.read(4 * _SNIFF_BYTES))
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
        if container == "torch-legacy":
            return _sniff_torch_structure(head)
        if container == "pickle":
            return _sniff_pickle(head)
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError):
        pass
    return Sniff(None, None)


CANDIDATE_SUFFIXES = (".safetensors", ".pkl", ".pickle", ".pt", ".pth", ".ckpt")
_NOT_GENERATORS = (PULSE_MAPPING, PULSE_GAUSSIAN_FIT)
_FAMILY_RANK = {"stylegan1": 0, "stylegan2": 1}
_FORMAT_RANK = {FORMAT_SAFETENSORS: 0, FORMAT_PULSE: 1, FORMAT_LERNAPPARAT: 2}


def _candidate_files(folder: Path) -> list[tuple[int, Path]]:
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


def choose_in_folder(folder: Path, name_family: Any = None) -> Path | None:
    """The checkpoint `pulse` would pick in `folder` (top level and one level down), or None.

    StyleGAN v1 first (PULSE's paper used StyleGAN v1 FFHQ), then StyleGAN2; top level before sub-folders;
    pulse's own safetensors files before PULSE's synthesis.pt before the others. Files are recognised by a
    light content sniff; `name_family(path)` may supply a family for pickles the sniff cannot place.
    """
    ranked = []
    for depth, path in _candidate_files(Path(folder)):
        guess = sniff(path)
        if not guess.is_generator:
            continue
        family = guess.family or (name_family(path) if name_family is not None else None)
        ranked.append((_FAMILY_RANK.get(family or "", 2), depth, _FORMAT_RANK.get(guess.format or "", 3),
                       path.name, path))
    return min(ranked)[-1] if ranked else None
