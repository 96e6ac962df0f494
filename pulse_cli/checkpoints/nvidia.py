"""Translate NVIDIA's network pickles into plain state dicts, without NVIDIA's code or TensorFlow.

Formats (all read through `safe_pickle.load_restricted_pickle`, so nothing in a file is executed), told
apart by `classify_pickle` (unpickled objects) and `sniff_pickle` (a file's first bytes) from one set of
markers:

* ``sg2ada``  stylegan2-ada-pytorch / stylegan3-repo StyleGAN2 pickles: a dict whose ``G_ema`` is a
  persistent object; we walk its ``_parameters`` / ``_buffers`` / ``_modules`` to rebuild exactly
  ``G_ema.state_dict()``.
* ``sg3``     the same container holding a StyleGAN3 generator: recognised and refused (no noise inputs,
  which the PULSE search optimises).
* ``sg2-tf``  StyleGAN2 TensorFlow pickles ``(G, D, Gs)``: translated to the ``G_ema`` layout the way
  NVIDIA's own legacy converter lays it out.
* ``sg1-tf``  StyleGAN v1 TensorFlow pickles ``(G, D, Gs)``: translated to PULSE's PyTorch key names.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .formats import (
    FORMAT_SG1_TF,
    FORMAT_SG2_TF,
    FORMAT_SG2ADA,
    FORMAT_SG3,
    SG3_KEY_PREFIXES,
    SG3_MESSAGE,
    TF_PICKLE_OTHER,
)
from .safe_pickle import (
    PERSISTENT_OBJECT_GLOBAL,
    TF_NETWORK_GLOBAL,
    PersistentObject,
    TFNetworkState,
    load_restricted_pickle,
)

__all__ = [
    "classify_pickle",
    "detect_pickle_format",
    "errors_name_file",
    "read_sg2ada_pickle",
    "read_tf_network_pickle",
    "sg1_tf_to_pulse",
    "sg2_tf_to_nvidia",
    "sg2ada_state_dict",
    "sniff_pickle",
    "tf_gs_state",
]

PathLike = str | os.PathLike[str]

# The markers. Class names and TF variable names also stand as plain strings early in the file, which is
# what lets `sniff_pickle` guess without unpickling.
SG3_CLASSES = ("SynthesisInput",)  # StyleGAN3's Fourier-feature input layer
# (format, a part of a variable name that only this generation's synthesis network has), first match wins:
# StyleGAN2 modulates ('4x4/Conv/mod_weight'), StyleGAN v1 has StyleMod layers ('4x4/Const/StyleMod/weight').
TF_SYNTHESIS_MARKERS = ((FORMAT_SG2_TF, "mod_weight"), (FORMAT_SG1_TF, "StyleMod"))


# --------------------------------------------------------------------------------------------------
# Small helpers


def _plain(obj: Any) -> Any:
    """EasyDict stubs / OrderedDicts / numpy scalars -> builtin dicts, lists and Python numbers."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _to_tensor(value: Any, name: str) -> torch.Tensor:
    # Pickled numpy arrays may be read-only views of the pickle's bytes: copy into torch-owned memory.
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (np.ndarray, np.generic, float, int)):
        return torch.from_numpy(np.array(value, copy=True))
    raise ValueError(f"variable {name!r} is a {type(value).__name__}, not an array")


_MAX_DEPTH = 32  # real generators nest 4 deep; a crafted pickle could even make the tree cyclic


def _walk_persistent_module(
    obj: PersistentObject, prefix: str, out: dict[str, torch.Tensor], depth: int = 0
) -> None:
    """Rebuild `nn.Module.state_dict()` order: own parameters, own persistent buffers, then children."""
    if depth > _MAX_DEPTH:
        raise ValueError("the module tree is nested too deeply (cyclic?)")
    state = obj.state
    params = state.get("_parameters") or {}
    buffers = state.get("_buffers") or {}
    modules = state.get("_modules") or {}
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for name, t in params.items():
        if t is not None:
            out[prefix + name] = _as_state_tensor(t, prefix + name)
    for name, t in buffers.items():
        if t is not None and name not in non_persistent:
            out[prefix + name] = _as_state_tensor(t, prefix + name)
    for name, child in modules.items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise ValueError(f"submodule {prefix + name} is not a persistent network object")
        _walk_persistent_module(child, f"{prefix}{name}.", out, depth + 1)


def _as_state_tensor(t: Any, key: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{key} is a {type(t).__name__}, not a tensor")
    return t.detach()


def _iter_classes(obj: PersistentObject, depth: int = 0) -> Iterator[str]:
    if depth > _MAX_DEPTH:
        raise ValueError("the module tree is nested too deeply (cyclic?)")
    yield obj.class_name
    for child in (obj.state.get("_modules") or {}).values():
        if isinstance(child, PersistentObject):
            yield from _iter_classes(child, depth + 1)


def _is_sg3(g_ema: PersistentObject, keys: Any = None) -> bool:
    if any(c in SG3_CLASSES for c in _iter_classes(g_ema)):
        return True
    synthesis = (g_ema.state.get("_modules") or {}).get("synthesis")
    if isinstance(synthesis, PersistentObject):
        names = (synthesis.state.get("_modules") or {}).keys()
        if "input" in names or any(re.match(r"L\d+_\d+_\d+$", n) for n in names):
            return True
    return keys is not None and any(k.startswith(SG3_KEY_PREFIXES) for k in keys)


def _tf_gs(obj: Any) -> TFNetworkState | None:
    """The Gs network of a TF pickle: (G, D, Gs) tuples, or a bare Gs network."""
    if isinstance(obj, TFNetworkState):
        return obj
    if isinstance(obj, (tuple, list)) and obj and all(isinstance(x, TFNetworkState) for x in obj):
        named = [x for x in obj if x.state.get("name") == "Gs"]
        return named[0] if named else obj[-1]  # NVIDIA writes (G, D, Gs)
    return None


def classify_pickle(obj: Any) -> str | None:
    """The format of an unpickled network pickle: "sg2ada", "sg3", "sg1-tf", "sg2-tf", or None."""
    if isinstance(obj, Mapping) and isinstance(obj.get("G_ema"), PersistentObject):
        return FORMAT_SG3 if _is_sg3(obj["G_ema"]) else FORMAT_SG2ADA
    gs = _tf_gs(obj)
    if gs is not None:
        synthesis = _tf_component(_tf_state_dict(gs), "synthesis")
        names = synthesis["variables"] if synthesis is not None else {}
        for fmt, marker in TF_SYNTHESIS_MARKERS:
            if any(marker in name.split("/") for name in names):
                return fmt
    return None


def sniff_pickle(head: bytes) -> str | None:
    """`classify_pickle`'s guess from a pickle's first bytes (no unpickling): the same markers, as strings.

    "tf-pickle" for a TensorFlow pickle whose generation the first bytes do not show.
    """
    if PERSISTENT_OBJECT_GLOBAL[0].encode() in head:
        return FORMAT_SG3 if any(c.encode() in head for c in SG3_CLASSES) else FORMAT_SG2ADA
    if TF_NETWORK_GLOBAL[0].encode() in head:
        # The synthesis network's source and variable names come early in NVIDIA's TF pickles.
        for fmt, marker in TF_SYNTHESIS_MARKERS:
            if marker.encode() in head:
                return fmt
        return TF_PICKLE_OTHER
    return None


@contextmanager
def errors_name_file(name: str) -> Iterator[None]:
    """Structural problems found after unpickling become one-line ValueErrors naming the file."""
    try:
        yield
    except ValueError as exc:
        if str(exc).startswith(name):
            raise
        raise ValueError(f"{name}: {exc}") from None
    except RecursionError:
        raise ValueError(f"{name}: the pickled structure is nested too deeply (cyclic?)") from None


def detect_pickle_format(path: PathLike) -> str:
    """Return "sg2ada", "sg3", "sg1-tf" or "sg2-tf" from the file's content (never its name)."""
    name = Path(path).name
    obj = load_restricted_pickle(path)
    with errors_name_file(name):
        fmt = classify_pickle(obj)
    if fmt is None:
        raise ValueError(
            f"{name} is a readable pickle but not a network format we know (expected a "
            "stylegan2-ada-pytorch pickle with G_ema, or a StyleGAN v1/v2 TensorFlow (G, D, Gs) pickle)"
        )
    return fmt


# --------------------------------------------------------------------------------------------------
# stylegan2-ada-pytorch / stylegan3 repo pickles


def read_sg2ada_pickle(path: PathLike, network: str = "G_ema") -> dict[str, Any]:
    """Read a stylegan2-ada-pytorch network pickle.

    Returns {"state_dict": G_ema.state_dict() (same keys/order), "init_kwargs": dict, "class_name": str}.
    `network` exists for tests and diagnostics: G (the training copy) is never the one to sample from.
    Raises ValueError for StyleGAN3 generators and for pickles of other formats.
    """
    name = Path(path).name
    obj = load_restricted_pickle(path)
    with errors_name_file(name):
        return _read_sg2ada(obj, name, network)


def sg2ada_state_dict(obj: Any, name: str) -> dict[str, torch.Tensor]:
    """`G_ema.state_dict()` of an unpickled stylegan2-ada-pytorch pickle (`name`: the file, for messages)."""
    return _read_sg2ada(obj, name, "G_ema")["state_dict"]


def _read_sg2ada(obj: Any, name: str, network: str) -> dict[str, Any]:
    if not (isinstance(obj, Mapping) and isinstance(obj.get(network), PersistentObject)):
        fmt = classify_pickle(obj)
        hint = f" (it looks like a {fmt} pickle)" if fmt else ""
        raise ValueError(f"{name} is not a stylegan2-ada-pytorch network pickle with {network}{hint}")
    net: PersistentObject = obj[network]
    if _is_sg3(net):
        raise ValueError(f"{name}: {SG3_MESSAGE}")
    state_dict: dict[str, torch.Tensor] = {}
    _walk_persistent_module(net, "", state_dict)
    if _is_sg3(net, state_dict.keys()):
        raise ValueError(f"{name}: {SG3_MESSAGE}")
    if "mapping.w_avg" not in state_dict or not any(k.endswith(".noise_const") for k in state_dict):
        raise ValueError(f"{name}: {network} is not a StyleGAN2 generator (no mapping.w_avg / noise buffers)")
    init_kwargs = _plain(net.state.get("_init_kwargs") or {})
    return {"state_dict": state_dict, "init_kwargs": init_kwargs, "class_name": net.class_name}


# --------------------------------------------------------------------------------------------------
# TensorFlow pickles


def _tf_state_dict(net: TFNetworkState, depth: int = 0) -> dict[str, Any]:
    """TF Network state -> {name, version, static_kwargs, build_func_name, variables, components}.

    `build_module_src` (Python source NVIDIA's loader execs) is deliberately dropped.
    """
    if depth > _MAX_DEPTH:
        raise ValueError("TF network components are nested too deeply (cyclic?)")
    st = net.state
    raw_vars = st.get("variables") or []
    items = raw_vars.items() if isinstance(raw_vars, Mapping) else raw_vars
    variables: dict[str, Any] = {}
    for entry in items:
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)):
            raise ValueError(f"TF network {st.get('name')!r} has a malformed variables list")
        variables[entry[0]] = entry[1]
    components: dict[str, Any] = {}
    for cname, comp in (st.get("components") or {}).items():
        if isinstance(comp, TFNetworkState):
            components[cname] = _tf_state_dict(comp, depth + 1)
    return {
        "name": st.get("name"),
        "version": st.get("version"),
        "static_kwargs": _plain(st.get("static_kwargs") or {}),
        "build_func_name": st.get("build_func_name"),
        "variables": variables,
        "components": components,
    }


def _tf_component(gs: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    # Component keys are "synthesis"/"mapping"; their network names "G_synthesis"/"G_mapping".
    comps = gs.get("components") or {}
    if kind in comps:
        return comps[kind]
    for comp in comps.values():
        if kind in str(comp.get("name", "")).lower():
            return comp
    return None


def tf_gs_state(obj: Any) -> dict[str, Any]:
    """The Gs network state (see `read_tf_network_pickle`) of an unpickled TensorFlow pickle."""
    gs = _tf_gs(obj)
    if gs is None:
        raise ValueError("not a TensorFlow network pickle (expected a (G, D, Gs) tuple)")
    return _tf_state_dict(gs)


def read_tf_network_pickle(path: PathLike) -> dict[str, Any]:
    """Read a StyleGAN v1/v2 TensorFlow pickle and return the Gs network state as plain data.

    {"name", "version", "static_kwargs", "build_func_name", "variables": {name: numpy array},
    "components": {"synthesis": {...same...}, "mapping": {...}}}.
    """
    name = Path(path).name
    obj = load_restricted_pickle(path)
    with errors_name_file(name):
        return tf_gs_state(obj)


def _require_component(gs_state: Mapping[str, Any], kind: str) -> dict[str, Any]:
    comp = _tf_component(gs_state, kind)
    if comp is None:
        raise ValueError(f"TF network {gs_state.get('name')!r} has no {kind} component")
    return comp


class _VarReader:
    """Hands out TF variables by name and remembers which were used, to catch unknown layouts."""

    def __init__(self, variables: Mapping[str, Any], where: str) -> None:
        self.vars = variables
        self.where = where
        self.used: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.vars

    def get(self, name: str) -> torch.Tensor:
        if name not in self.vars:
            raise ValueError(f"{self.where}: missing TF variable {name!r}")
        self.used.add(name)
        return _to_tensor(self.vars[name], name).float()

    def check_all_used(self, ignore: re.Pattern[str]) -> None:
        left = sorted(n for n in self.vars if n not in self.used and not ignore.match(n))
        if left:
            shown = ", ".join(left[:5]) + (" ..." if len(left) > 5 else "")
            raise ValueError(f"{self.where}: unsupported TF variables (unknown architecture?): {shown}")


def _hwio_to_oihw(w: torch.Tensor) -> torch.Tensor:
    return w.permute(3, 2, 0, 1).contiguous()


def _resolutions(variables: Mapping[str, Any]) -> list[int]:
    res = {int(m.group(1)) for n in variables if (m := re.match(r"^(\d+)x\1/", n))}
    if not res or min(res) != 4:
        raise ValueError("TF synthesis network has no 4x4 block")
    out = sorted(res)
    if out != [2**i for i in range(2, 2 + len(out))]:
        raise ValueError(f"TF synthesis resolutions are not consecutive powers of two: {out}")
    return out


def _mapping_dense(mapping: Mapping[str, Any], out_name: str) -> dict[str, torch.Tensor]:
    reader = _VarReader(mapping["variables"], "TF mapping network")
    sd: dict[str, torch.Tensor] = {}
    i = 0
    while reader.has(f"Dense{i}/weight"):
        w = reader.get(f"Dense{i}/weight").t().contiguous()  # TF dense is [in, out]
        b = reader.get(f"Dense{i}/bias")
        key = out_name.format(i=i)
        sd[f"{key}.weight"], sd[f"{key}.bias"] = w, b
        i += 1
    if i == 0:
        raise ValueError("TF mapping network has no Dense layers")
    reader.check_all_used(re.compile(r"^lod$"))
    return sd


def _dlatent_avg(gs_state: Mapping[str, Any]) -> torch.Tensor:
    if "dlatent_avg" not in gs_state["variables"]:
        raise ValueError(f"TF network {gs_state.get('name')!r} has no dlatent_avg (is this Gs?)")
    return _to_tensor(gs_state["variables"]["dlatent_avg"], "dlatent_avg").float()


def sg1_tf_to_pulse(
    gs_state: Mapping[str, Any],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """StyleGAN v1 TF Gs state -> (PULSE synthesis state dict, PULSE mapping state dict, extras).

    Weights stay raw (the equalised-lr multipliers are applied at run time in both codebases).
    extras = {"dlatent_avg": [512], "noise_const": list of [1, 1, r, r] in layer order}.
    """
    synthesis = _require_component(gs_state, "synthesis")
    mapping = _require_component(gs_state, "mapping")
    reader = _VarReader(synthesis["variables"], "TF StyleGAN v1 synthesis network")
    resolutions = _resolutions(synthesis["variables"])

    # PULSE's port applies this [1,2,1]x[1,2,1]/16 blur after every upsampling conv; it is a buffer there.
    f = torch.tensor([1.0, 2.0, 1.0])
    blur = (torch.outer(f, f) / 16.0).reshape(1, 1, 3, 3)

    def epilogue(prefix: str, tf_layer: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.noise.weight": reader.get(f"{tf_layer}/Noise/weight"),
            f"{prefix}.style_mod.lin.weight": reader.get(f"{tf_layer}/StyleMod/weight").t().contiguous(),
            f"{prefix}.style_mod.lin.bias": reader.get(f"{tf_layer}/StyleMod/bias"),
        }

    sd: dict[str, torch.Tensor] = {
        "torgb.weight": _hwio_to_oihw(reader.get("ToRGB_lod0/weight")),
        "torgb.bias": reader.get("ToRGB_lod0/bias"),
    }
    for r in resolutions:
        tf, pt = f"{r}x{r}", f"blocks.{r}x{r}"
        if r == 4:
            sd[f"{pt}.const"] = reader.get(f"{tf}/Const/const")
            sd[f"{pt}.bias"] = reader.get(f"{tf}/Const/bias")
            sd.update(epilogue(f"{pt}.epi1", f"{tf}/Const"))
            sd[f"{pt}.conv.weight"] = _hwio_to_oihw(reader.get(f"{tf}/Conv/weight"))
            sd[f"{pt}.conv.bias"] = reader.get(f"{tf}/Conv/bias")
            sd.update(epilogue(f"{pt}.epi2", f"{tf}/Conv"))
        else:
            # v1 stores the fused transposed-conv kernel in the same HWIO orientation: no flip.
            sd[f"{pt}.conv0_up.weight"] = _hwio_to_oihw(reader.get(f"{tf}/Conv0_up/weight"))
            sd[f"{pt}.conv0_up.bias"] = reader.get(f"{tf}/Conv0_up/bias")
            sd[f"{pt}.conv0_up.intermediate.kernel"] = blur.clone()
            sd.update(epilogue(f"{pt}.epi1", f"{tf}/Conv0_up"))
            sd[f"{pt}.conv1.weight"] = _hwio_to_oihw(reader.get(f"{tf}/Conv1/weight"))
            sd[f"{pt}.conv1.bias"] = reader.get(f"{tf}/Conv1/bias")
            sd.update(epilogue(f"{pt}.epi2", f"{tf}/Conv1"))

    # Two noise inputs per resolution, 4x4 included, named noise0..noise{2n-1}.
    noise_const = [reader.get(f"noise{i}") for i in range(2 * len(resolutions))]
    for i, n in enumerate(noise_const):
        r = resolutions[i // 2]
        if tuple(n.shape) != (1, 1, r, r):
            raise ValueError(f"TF noise{i} has shape {tuple(n.shape)}, expected (1, 1, {r}, {r})")
    # Lower-resolution ToRGB_lod{k>0} layers only serve progressive growing; `lod` is a training scalar.
    reader.check_all_used(re.compile(r"^(lod|ToRGB_lod[1-9]\d*/(weight|bias))$"))

    mapping_sd = _mapping_dense(mapping, "dense{i}")
    extras = {"dlatent_avg": _dlatent_avg(gs_state), "noise_const": noise_const}
    return sd, mapping_sd, extras


def _nvidia_resample_filter() -> torch.Tensor:
    # NVIDIA's upfirdn2d.setup_filter([1, 3, 3, 1]): outer product normalised to sum 1.
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(f, f)
    return k / k.sum()


def sg2_tf_to_nvidia(gs_state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """StyleGAN2 TF Gs state -> the `G_ema.state_dict()` of stylegan2-ada-pytorch (same keys and order).

    Supports the released 'skip' generator (and 'resnet' skip convs). Layout changes: conv HWIO -> OIHW,
    Conv0_up/Skip kernels flipped spatially, dense [in,out] -> [out,in], mod_bias + 1, noise [1,1,r,r] ->
    [r,r], dlatent_avg -> mapping.w_avg; resample_filter buffers are the fixed [1,3,3,1] filter.
    """
    synthesis = _require_component(gs_state, "synthesis")
    mapping = _require_component(gs_state, "mapping")
    reader = _VarReader(synthesis["variables"], "TF StyleGAN2 synthesis network")
    resolutions = _resolutions(synthesis["variables"])
    rf = _nvidia_resample_filter()
    noise_index = itertools.count()  # noise0, noise1, ... in layer order

    def layer(prefix: str, tf: str, r: int, flip: bool) -> dict[str, torch.Tensor]:
        w = _hwio_to_oihw(reader.get(f"{tf}/weight"))
        if flip:  # TF's transposed conv stores the kernel rotated by 180 degrees
            w = w.flip(2, 3).contiguous()
        idx = next(noise_index)
        noise = reader.get(f"noise{idx}")
        if tuple(noise.shape) != (1, 1, r, r):
            raise ValueError(f"TF noise{idx} has shape {tuple(noise.shape)}, expected (1, 1, {r}, {r})")
        return {
            f"{prefix}.weight": w,
            f"{prefix}.noise_strength": reader.get(f"{tf}/noise_strength").reshape(()),
            f"{prefix}.bias": reader.get(f"{tf}/bias"),
            f"{prefix}.resample_filter": rf.clone(),
            f"{prefix}.noise_const": noise[0, 0].contiguous(),
            f"{prefix}.affine.weight": reader.get(f"{tf}/mod_weight").t().contiguous(),
            f"{prefix}.affine.bias": reader.get(f"{tf}/mod_bias") + 1.0,  # TF stores bias - 1
        }

    sd: dict[str, torch.Tensor] = {}
    for r in resolutions:
        tf, pt = f"{r}x{r}", f"synthesis.b{r}"
        if r == 4:
            const = reader.get(f"{tf}/Const/const")  # TF [1, C, 4, 4] -> [C, 4, 4]
            sd[f"{pt}.const"] = const[0].contiguous() if const.dim() == 4 else const
            sd[f"{pt}.resample_filter"] = rf.clone()
            sd.update(layer(f"{pt}.conv1", f"{tf}/Conv", r, flip=False))
        else:
            sd[f"{pt}.resample_filter"] = rf.clone()
            sd.update(layer(f"{pt}.conv0", f"{tf}/Conv0_up", r, flip=True))
            sd.update(layer(f"{pt}.conv1", f"{tf}/Conv1", r, flip=False))
        if reader.has(f"{tf}/ToRGB/weight"):
            sd[f"{pt}.torgb.weight"] = _hwio_to_oihw(reader.get(f"{tf}/ToRGB/weight"))
            sd[f"{pt}.torgb.bias"] = reader.get(f"{tf}/ToRGB/bias")
            sd[f"{pt}.torgb.affine.weight"] = reader.get(f"{tf}/ToRGB/mod_weight").t().contiguous()
            sd[f"{pt}.torgb.affine.bias"] = reader.get(f"{tf}/ToRGB/mod_bias") + 1.0
        if reader.has(f"{tf}/Skip/weight"):
            sd[f"{pt}.skip.weight"] = _hwio_to_oihw(reader.get(f"{tf}/Skip/weight")).flip(2, 3).contiguous()
    reader.check_all_used(re.compile(r"^lod$"))

    # MappingNetwork registers w_avg (its own buffer) before its fc children.
    sd["mapping.w_avg"] = _dlatent_avg(gs_state)
    sd.update(_mapping_dense(mapping, "mapping.fc{i}"))
    return sd
