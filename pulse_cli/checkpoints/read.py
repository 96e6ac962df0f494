"""Reading the generator networks from one checkpoint file, whatever its format, without running its code.

torch files are read with `weights_only=True` (`io.load_torch_file`); other pickles only through the
allow-list unpickler of `safe_pickle`; safetensors files with the safetensors library. `detect` decides the
format, one reader per format builds the generator, and every problem is a one-line `CheckpointError`
naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import first_line
from ..networks.dcgan import DCGANGenerator
from ..networks.stylegan1 import StyleGAN1Generator
from ..networks.stylegan2 import StyleGAN2Generator
from . import nvidia
from . import safetensors_file as st
from .detect import classify_torch_data, container_of
from .errors import CheckpointError
from .formats import (
    DCGAN_CHECKPOINT_KEY,
    EXPECTED,
    FORMAT_DCGAN,
    FORMAT_LERNAPPARAT,
    FORMAT_NVIDIA_SD,
    FORMAT_PULSE,
    FORMAT_ROSINALITY,
    FORMAT_SAFETENSORS,
    FORMAT_SG1_TF,
    FORMAT_SG2_TF,
    FORMAT_SG2ADA,
    FORMAT_SG3,
    GAUSSIAN_FIT_DATA,
    PULSE_GAUSSIAN_FIT,
    PULSE_MAPPING,
    PULSE_MAPPING_DATA,
    PULSE_SYNTHESIS,
    SG3_MESSAGE,
    LoadedNetworks,
)
from .io import check_checkpoint_file, load_torch_file
from .latent_stats import check_stats_fit
from .lernapparat import lernapparat_to_pulse
from .rosinality import rosinality_to_nvidia
from .safe_pickle import load_restricted_pickle


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


def _checked(path: Path, build: Callable[..., Any], *args: Any) -> Any:
    """Run a translator/builder; any complaint about the structure becomes a one-line CheckpointError."""
    try:
        return build(*args)
    except CheckpointError:
        raise
    except _STRUCTURE_ERRORS as exc:
        raise CheckpointError(f"{path}: {first_line(exc)}") from None


def _tensors_only(path: Path, sd: Mapping[str, Any], what: str) -> dict[str, torch.Tensor]:
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {what} entry {bad[0]!r} is not a tensor")
    return dict(sd)


# ------------------------------------------------------------------------------------------------
# torch files


def _read_torch_data(path: Path, data: Any) -> LoadedNetworks:
    fmt = classify_torch_data(data)
    if fmt == FORMAT_PULSE:
        return _read_pulse(path, _tensors_only(path, data, "synthesis"))
    if fmt == PULSE_MAPPING_DATA:
        raise CheckpointError(f"{path}: this is a mapping network; pass the synthesis network "
                              f"({PULSE_SYNTHESIS}) with {PULSE_MAPPING} beside it")
    if fmt == GAUSSIAN_FIT_DATA:
        raise CheckpointError(f"{path}: this is a latent-statistics file ({PULSE_GAUSSIAN_FIT}), not a generator; "
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
    if fmt == FORMAT_DCGAN:
        return _read_dcgan(path, data)
    sample = ", ".join(str(k) for k in list(data)[:4]) if isinstance(data, Mapping) else type(data).__name__
    raise CheckpointError(f"{path}: not a recognised generator checkpoint (a torch file holding "
                          f"{sample or 'nothing'}; {EXPECTED})")


def _read_pulse(path: Path, synthesis: dict[str, torch.Tensor]) -> LoadedNetworks:
    mapping_path = path.with_name(PULSE_MAPPING)
    mapping = None
    if mapping_path.is_file():
        mapping = load_torch_file(mapping_path)
        if classify_torch_data(mapping) != PULSE_MAPPING_DATA:
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


def _read_dcgan(path: Path, data: Mapping[str, Any]) -> LoadedNetworks:
    sd = data.get(DCGAN_CHECKPOINT_KEY, data)
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{path}: {DCGAN_CHECKPOINT_KEY} is not a state dict")
    generator = _checked(path, DCGANGenerator.from_state_dict, _tensors_only(path, sd, "DCGAN state dict"))
    return LoadedNetworks(generator, path, None, FORMAT_DCGAN, use_fit_beside=False)


# ------------------------------------------------------------------------------------------------
# NVIDIA's network pickles


def _pickle_message(path: Path, message: str) -> str:
    """safe_pickle / nvidia messages name the file by its base name: name it by the path given instead."""
    name = path.name
    if name in message:
        return message.replace(name, str(path), 1)
    return f"{path}: {message}"


def _read_network_pickle(path: Path) -> LoadedNetworks:
    try:
        obj = load_restricted_pickle(path)
    except ValueError as exc:  # UnsafeCheckpointError, CorruptCheckpointError
        raise CheckpointError(_pickle_message(path, first_line(exc))) from None
    try:
        with nvidia.errors_name_file(path.name):
            fmt = nvidia.classify_pickle(obj)
            if fmt == FORMAT_SG3:
                raise ValueError(f"{path.name}: {SG3_MESSAGE}")
            if fmt == FORMAT_SG2ADA:
                generator = StyleGAN2Generator.from_state_dict(nvidia.sg2ada_state_dict(obj, path.name))
                return LoadedNetworks(generator, path, path, FORMAT_SG2ADA, use_fit_beside=False)
            if fmt == FORMAT_SG1_TF:
                synthesis, mapping, _extras = nvidia.sg1_tf_to_pulse(nvidia.tf_gs_state(obj))
                generator = StyleGAN1Generator.from_state_dicts(synthesis, mapping)
                return LoadedNetworks(generator, path, path, FORMAT_SG1_TF)
            if fmt == FORMAT_SG2_TF:
                generator = StyleGAN2Generator.from_state_dict(nvidia.sg2_tf_to_nvidia(nvidia.tf_gs_state(obj)))
                return LoadedNetworks(generator, path, path, FORMAT_SG2_TF, use_fit_beside=False)
    except ValueError as exc:
        raise CheckpointError(_pickle_message(path, first_line(exc))) from None
    except (KeyError, IndexError, TypeError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: malformed network pickle ({first_line(exc)})") from None
    raise CheckpointError(f"{path}: not a recognised generator checkpoint (a readable pickle of another kind; "
                          f"{EXPECTED})")


# ------------------------------------------------------------------------------------------------
# pulse's safetensors file


def _check_declared_shape(path: Path, metadata: Mapping[str, str], generator: Any) -> None:
    """What the metadata says of the network (resolution, latent sizes) must be what its tensors make: a file
    that says otherwise is damaged or edited, and `weights info` would repeat the claim."""
    for name in ("resolution", "num_ws", "w_dim", "z_dim"):
        declared, actual = metadata.get(name), getattr(generator, name, None)
        if declared is None or (declared == "none" and actual is None):
            continue
        if declared != str(actual):
            raise CheckpointError(f"{path}: metadata says {name} {declared} but the tensors make {actual}")


def _read_safetensors(path: Path) -> LoadedNetworks:
    tensors, stats, metadata = st.read_file(path)
    family = st.family_from_keys(tensors)
    declared = metadata.get("family")
    if family is None:
        raise CheckpointError(f"{path}: a safetensors file without a generator in it (no synthesis.blocks.4x4.const, "
                              f"synthesis.b4.const or main.0.weight; {EXPECTED})")
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
    elif family == "dcgan":
        if stats is not None:
            raise CheckpointError(f"{path}: latent statistics in a DCGAN file (its z is standard normal)")
        generator = _checked(path, DCGANGenerator.from_state_dict, tensors)
        return LoadedNetworks(generator, path, None, FORMAT_SAFETENSORS, None, metadata, use_fit_beside=False)
    else:
        generator = _checked(path, StyleGAN2Generator.from_state_dict, tensors)
        has_mapping = True
    if stats is not None:
        check_stats_fit(stats, generator, path)
    _check_declared_shape(path, metadata, generator)
    return LoadedNetworks(generator, path, path if has_mapping else None, FORMAT_SAFETENSORS, stats, metadata,
                          use_fit_beside=family == "stylegan1")
