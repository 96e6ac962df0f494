"""rosinality/stylegan2-pytorch checkpoints -> NVIDIA's `G_ema.state_dict()` key names and shapes.

rosinality's port has the same weights as NVIDIA's StyleGAN2 under other names (`convs.N`, `to_rgbs.N`,
`style.N`, `noises.noise_N`), convolution weights with a leading batch axis and blur kernels scaled by
up**2. The translation renames and reshapes; every key must be understood, none is silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ..networks.stylegan2 import setup_filter

__all__ = ["rosinality_to_nvidia"]


def _ros_styled_conv(src: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """A rosinality StyledConv / ToRGB's tensors under NVIDIA's SynthesisLayer / ToRGBLayer suffixes."""
    out = {
        "weight": src[f"{prefix}.conv.weight"][0],  # [1, O, I, k, k] -> [O, I, k, k]
        "affine.weight": src[f"{prefix}.conv.modulation.weight"],
        "affine.bias": src[f"{prefix}.conv.modulation.bias"],
    }
    if f"{prefix}.noise.weight" in src:  # StyledConv
        out["noise_strength"] = src[f"{prefix}.noise.weight"].reshape(())
        out["bias"] = src[f"{prefix}.activate.bias"]
    else:  # ToRGB: bias stored as [1, 3, 1, 1]
        out["bias"] = src[f"{prefix}.bias"].reshape(-1)
    return out


def _ros_filter(src: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """NVIDIA's resample filter: rosinality's blur kernels are the same filter times up**2, so renormalise."""
    for key in ("to_rgbs.0.upsample.kernel", "convs.0.conv.blur.kernel"):
        if key in src:
            return (src[key] / src[key].sum()).float()
    return setup_filter()


def rosinality_to_nvidia(
    state_dict: Mapping[str, Any], latent_avg: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Rename a rosinality stylegan2-pytorch `g_ema` state dict to NVIDIA `G_ema.state_dict()` keys/shapes.

    Blur kernels are dropped (NVIDIA keeps the normalised filter as `resample_filter` buffers instead).
    `mapping.w_avg` comes from `latent_avg`, or zeros if it is not given (it only matters for truncation).
    A whole checkpoint `{'g_ema': ..., 'latent_avg': ...}` (training state and options beside them are
    ignored) is accepted too. Raises ValueError for anything else.
    """
    if "g_ema" in state_dict:  # a g_ema state dict never has this key: this is a whole checkpoint
        if latent_avg is None:
            latent_avg = state_dict.get("latent_avg")
        state_dict = state_dict["g_ema"]
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError("g_ema is not a state dict of tensors")
    if latent_avg is not None and not isinstance(latent_avg, torch.Tensor):
        raise ValueError("latent_avg is not a tensor")
    src = state_dict
    if "input.input" not in src or "style.1.weight" not in src:
        raise ValueError(
            "not a rosinality stylegan2-pytorch g_ema state dict (no 'input.input' / 'style.1.weight'; "
            f"first keys: {', '.join(list(src)[:5]) or '<empty>'})"
        )
    try:
        out = _convert_rosinality(src, latent_avg)
    except KeyError as err:
        raise ValueError(f"rosinality state dict is missing {err.args[0]!r}") from err
    return {k: v.contiguous() for k, v in out.items()}


def _convert_rosinality(
    src: Mapping[str, torch.Tensor], latent_avg: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    num_up = len({m.group(1) for k in src if (m := re.match(r"^to_rgbs\.(\d+)\.", k))})
    resolutions = [2**i for i in range(2, num_up + 3)]
    filt = _ros_filter(src)
    noise_layers = ["synthesis.b4.conv1"] + [
        f"synthesis.b{r}.conv{j}" for r in resolutions[1:] for j in (0, 1)
    ]

    out: dict[str, torch.Tensor] = {"synthesis.b4.const": src["input.input"][0]}
    ros_convs = ["conv1"] + [f"convs.{i}" for i in range(2 * num_up)]
    for i, (ros, nv) in enumerate(zip(ros_convs, noise_layers, strict=True)):
        for suffix, tensor in _ros_styled_conv(src, ros).items():
            out[f"{nv}.{suffix}"] = tensor
        out[f"{nv}.resample_filter"] = filt.clone()
        out[f"{nv}.noise_const"] = src[f"noises.noise_{i}"][0, 0]

    ros_rgbs = ["to_rgb1"] + [f"to_rgbs.{k}" for k in range(num_up)]
    for ros, res in zip(ros_rgbs, resolutions, strict=True):
        for suffix, tensor in _ros_styled_conv(src, ros).items():
            out[f"synthesis.b{res}.torgb.{suffix}"] = tensor
        out[f"synthesis.b{res}.resample_filter"] = filt.clone()

    fc_ids = sorted(int(m.group(1)) for k in src if (m := re.match(r"^style\.(\d+)\.weight$", k)))
    if not fc_ids or fc_ids != list(range(1, len(fc_ids) + 1)):
        raise ValueError(f"mapping layers must be style.1..style.N without gaps; got {fc_ids}")
    num_fc = len(fc_ids)
    for i in range(num_fc):
        out[f"mapping.fc{i}.weight"] = src[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = src[f"style.{i + 1}.bias"]
    w_dim = out[f"mapping.fc{num_fc - 1}.weight"].shape[0]
    out["mapping.w_avg"] = latent_avg.reshape(-1) if latent_avg is not None else torch.zeros(w_dim)

    _check_all_consumed(src, num_up)
    return out


def _check_all_consumed(src: Mapping[str, torch.Tensor], num_up: int) -> None:
    """Refuse keys we do not understand rather than silently dropping weights."""
    known = re.compile(
        r"^(input\.input|style\.\d+\.(weight|bias)|noises\.noise_\d+|"
        r"(conv1|convs\.\d+|to_rgb1|to_rgbs\.\d+)\.(conv\.(weight|modulation\.(weight|bias)|blur\.kernel)"
        r"|noise\.weight|activate\.bias|bias|upsample\.kernel))$"
    )
    unknown = [k for k in src if not known.match(k)]
    if unknown:
        raise ValueError(f"unexpected keys in rosinality state dict: {unknown[:5]}")
    n_convs = len({m.group(1) for k in src if (m := re.match(r"^convs\.(\d+)\.", k))})
    n_noise = len([k for k in src if k.startswith("noises.")])
    if n_convs != 2 * num_up or n_noise != 2 * num_up + 1:
        raise ValueError(
            f"inconsistent rosinality layout: {num_up} to_rgbs, {n_convs} convs, {n_noise} noise buffers"
        )
