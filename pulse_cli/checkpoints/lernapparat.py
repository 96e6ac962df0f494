"""lernapparat's StyleGAN v1 conversion (`karras2019stylegan-ffhq-1024x1024.for_g_all.pt`) -> PULSE's layout."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["lernapparat_to_pulse"]

SYNTHESIS_PREFIX = "g_synthesis."
MAPPING_PREFIX = "g_mapping."
# The notebook's optional truncation module: PULSE does not truncate, so it is not needed.
_IGNORED = {"truncation.avg_latent"}


def lernapparat_to_pulse(data: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """lernapparat's `g_all` state dict -> (PULSE synthesis state dict, PULSE mapping state dict).

    PULSE's port is lernapparat's without the `top_epi` Sequential around the noise layer and without the
    `g_synthesis.` / `g_mapping.` prefixes; tensors are identical (raw weights, blur kernel buffers).
    """
    synthesis: dict[str, torch.Tensor] = {}
    mapping: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in data.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"entry {key!r} is not a tensor")
        if key.startswith(SYNTHESIS_PREFIX):
            synthesis[key[len(SYNTHESIS_PREFIX):].replace(".top_epi.", ".")] = value
        elif key.startswith(MAPPING_PREFIX):
            mapping[key[len(MAPPING_PREFIX):]] = value
        elif key not in _IGNORED:
            unknown.append(key)
    if unknown:
        raise ValueError(f"unexpected keys outside g_synthesis./g_mapping.: {unknown[:3]}")
    return synthesis, mapping
