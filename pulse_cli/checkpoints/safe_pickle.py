"""Read NVIDIA's network pickles as data, never as code.

A pickle is a small program: every global it names is imported and called while loading. NVIDIA's
checkpoints additionally embed Python source that their own loader `exec`s. We therefore unpickle with an
explicit allow-list: each permitted global maps to a function or stub class written here that only
builds inert data (dicts, tensors, numpy arrays). Anything else - `os.system`, `builtins.eval`,
`subprocess.Popen`, `torch_utils.persistence` helpers other than the reconstructor - is refused before it
is imported, with `UnsafeCheckpointError`.
"""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import first_line
from .io import refused_global

try:  # numpy >= 2 moved the C core; pickles name either spelling.
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray  # type: ignore[no-redef]

__all__ = [
    "PERSISTENT_OBJECT_GLOBAL",
    "TF_NETWORK_GLOBAL",
    "CorruptCheckpointError",
    "PersistentObject",
    "TFNetworkState",
    "UnsafeCheckpointError",
    "allowed_globals",
    "load_restricted_pickle",
]


class UnsafeCheckpointError(ValueError):
    """The pickle references a global outside the allow-list (it could run code when loaded)."""


class CorruptCheckpointError(ValueError):
    """The file is not a readable pickle (truncated, empty, random bytes, wrong structure)."""


# --------------------------------------------------------------------------------------------------
# Inert stand-ins for the classes NVIDIA's pickles name.


@dataclass
class PersistentObject:
    """What `torch_utils.persistence._reconstruct_persistent_obj(meta)` would have built, as plain data.

    NVIDIA's version execs `module_src` to recreate the class; we keep the source only as a string
    (useful for format detection) and expose the instance `__dict__` as `state`.
    """

    class_name: str
    state: dict[str, Any]
    version: Any = None
    module_src: str | None = field(default=None, repr=False)

    def __setstate__(self, state: Any) -> None:  # never reached via pickle; blocks class-level BUILD
        raise CorruptCheckpointError("unexpected state for a persistent object")


class TFNetworkState:
    """Stand-in for `dnnlib.tflib.network.Network`.

    The real class rebuilds a TensorFlow graph in `__setstate__` (after exec'ing `build_module_src`);
    we only keep the state dict it was given.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # pickle may call cls() via REDUCE
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise CorruptCheckpointError("a TensorFlow Network's pickled state is not a dict")
        self.state = state

    def __repr__(self) -> str:
        return f"TFNetworkState(name={self.state.get('name')!r})"


class EasyDictStub(dict):
    """`dnnlib.util.EasyDict` is a dict with attribute access; the dict part is all we need."""

    def __setstate__(self, state: Any) -> None:
        # EasyDict keeps everything in the dict items; a __dict__ state (if any) is folded in.
        if isinstance(state, dict):
            self.update(state)


# --------------------------------------------------------------------------------------------------
# Allowed callables. Each validates its arguments so that an allowed name cannot be turned into a
# gadget (e.g. `_rebuild_tensor_v2` is given only storages, `_reconstruct` only ndarray).


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict):
        raise CorruptCheckpointError("persistent object metadata is not a dict with a 'state' dict")
    if meta.get("type", "class") != "class":
        raise CorruptCheckpointError(f"unsupported persistent object type {meta.get('type')!r}")
    src = meta.get("module_src")
    return PersistentObject(
        class_name=str(meta.get("class_name")),
        state=meta["state"],
        version=meta.get("version"),
        module_src=src if isinstance(src, str) else None,
    )


def _load_storage_from_bytes(blob: Any) -> Any:
    # Each storage is a legacy torch.save blob; torch's own _load_from_bytes would use
    # weights_only=False, so we reload it with torch's safe loader instead.
    if not isinstance(blob, (bytes, bytearray)):
        raise CorruptCheckpointError("tensor storage payload is not bytes")
    try:
        return torch.load(io.BytesIO(bytes(blob)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's safe loader refused something inside the blob: report it as unsafe, naming the global.
        refused = refused_global(exc)
        if refused is None:
            raise
        raise UnsafeCheckpointError(
            f"an embedded tensor blob references {refused}, which a checkpoint never needs"
        ) from None


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    # Hooks and metadata are dropped: checkpoints only need the values. set_ checks the geometry
    # against the storage size, so a bad offset/stride cannot read outside it.
    if not isinstance(storage, torch.TypedStorage):
        raise CorruptCheckpointError(f"tensor rebuilt from a {type(storage).__name__}, not a storage")
    if not (isinstance(storage_offset, int) and all(isinstance(s, int) for s in (*size, *stride))):
        raise CorruptCheckpointError("tensor geometry is not made of integers")
    t = torch.empty((0,), dtype=storage.dtype)
    return t.set_(storage._untyped_storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any) -> torch.Tensor:
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> torch.Tensor:
    # A checkpoint Parameter is just its values; no autograd state is wanted.
    if not isinstance(data, torch.Tensor):
        raise CorruptCheckpointError("parameter payload is not a tensor")
    return data.detach()


def _np_dtype(*args: Any) -> np.dtype:
    dt = np.dtype(*args)
    if dt.hasobject:  # object arrays hold Python objects, never weights
        raise CorruptCheckpointError("numpy object dtypes are not allowed in a checkpoint")
    return dt


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise CorruptCheckpointError("numpy scalar with an object dtype or non-bytes payload")
    return _np_multiarray.scalar(dtype, data)


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise CorruptCheckpointError("numpy array reconstruction of a subclass is not allowed")
    return _np_multiarray._reconstruct(np.ndarray, shape, dtype)


def _codecs_encode(text: Any, encoding: Any = "utf-8", *rest: Any) -> bytes:
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CorruptCheckpointError("unexpected _codecs.encode call")
    return text.encode("latin1")


class _FrozenCallable:
    """Wraps an allowed Python function so the pickle cannot modify it.

    A pickle's BUILD opcode can set attributes on any object it holds (e.g. a function's __defaults__),
    which would leak into later loads; this wrapper refuses any state or attribute change.
    """

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(*args, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        raise CorruptCheckpointError("the pickle tries to modify a loader function")

    def __setstate__(self, state: Any) -> None:
        raise CorruptCheckpointError("the pickle tries to modify a loader function")

    def __repr__(self) -> str:
        return f"<allowed {self._fn.__name__}>"


# The globals that make a PersistentObject / a TFNetworkState; `nvidia.sniff_pickle` looks for these names.
PERSISTENT_OBJECT_GLOBAL = ("torch_utils.persistence", "_reconstruct_persistent_obj")
TF_NETWORK_GLOBAL = ("dnnlib.tflib.network", "Network")

_NUMPY_MULTIARRAY = {"scalar": _FrozenCallable(_np_scalar), "_reconstruct": _FrozenCallable(_np_reconstruct)}

_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _FrozenCallable(_codecs_encode),
    ("dnnlib.util", "EasyDict"): EasyDictStub,
    PERSISTENT_OBJECT_GLOBAL: _FrozenCallable(_reconstruct_persistent_obj),
    TF_NETWORK_GLOBAL: TFNetworkState,
    ("torch._utils", "_rebuild_tensor_v2"): _FrozenCallable(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor"): _FrozenCallable(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _FrozenCallable(_rebuild_parameter),
    ("torch.storage", "_load_from_bytes"): _FrozenCallable(_load_storage_from_bytes),
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("numpy", "dtype"): _FrozenCallable(_np_dtype),
    ("numpy", "ndarray"): np.ndarray,
    **{("numpy.core.multiarray", k): v for k, v in _NUMPY_MULTIARRAY.items()},
    **{("numpy._core.multiarray", k): v for k, v in _NUMPY_MULTIARRAY.items()},
}


# `torch.float32` etc. pickle as globals of the torch module. Looked up in a table built once from
# vars(torch): a getattr(torch, name) with a name from the file could trigger torch's lazy submodule imports.
_TORCH_DTYPES: dict[str, torch.dtype] = {n: v for n, v in vars(torch).items() if isinstance(v, torch.dtype)}


def allowed_globals() -> list[str]:
    """The allow-list, as "module.name" strings (torch dtypes such as torch.float32 are also allowed)."""
    return sorted(f"{m}.{n}" for m, n in _ALLOWED)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, source_name: str) -> None:
        super().__init__(file)
        self._source_name = source_name

    def find_class(self, module: str, name: str) -> Any:
        # Never call super().find_class: it would import the module.
        target = _ALLOWED.get((module, name))
        if target is None and module == "torch":
            target = _TORCH_DTYPES.get(name)
        if target is None:
            raise UnsafeCheckpointError(
                f"refusing to load {self._source_name}: it references {module}.{name}, "
                "which a checkpoint never needs"
            )
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise CorruptCheckpointError(
            f"cannot read {self._source_name}: it uses persistent ids (a torch.save archive, not a network "
            "pickle); load it with torch.load(..., weights_only=True)"
        )


def load_restricted_pickle(path: str | os.PathLike[str]) -> object:
    """Unpickle `path` allowing only the globals NVIDIA's network pickles need.

    Raises UnsafeCheckpointError for any other global, CorruptCheckpointError (a ValueError) for files
    that are empty, truncated or not pickles. Both messages are one line and name the file.
    """
    p = Path(path)
    name = p.name
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise CorruptCheckpointError(f"cannot read {name}: {first_line(exc)}") from None
    if size == 0:
        raise CorruptCheckpointError(f"cannot read {name}: the file is empty (0 bytes)")
    with p.open("rb") as fh:
        head = fh.read(2)
        fh.seek(0)
        if head == b"PK":  # zip: a torch.save archive, not a pickle
            raise CorruptCheckpointError(
                f"cannot read {name}: it is a zip archive (torch.save format), not a network pickle"
            )
        try:
            return _RestrictedUnpickler(fh, name).load()
        except UnsafeCheckpointError as exc:  # from find_class (already names the file) or a tensor blob
            msg, lead = str(exc), f"refusing to load {name}: "
            raise UnsafeCheckpointError(msg if msg.startswith(lead) else lead + msg) from None
        except CorruptCheckpointError as exc:  # from an allowed callable's argument checks
            msg, lead = str(exc), f"cannot read {name}: "
            raise CorruptCheckpointError(msg if msg.startswith(lead) else lead + msg) from None
        except RecursionError:
            raise CorruptCheckpointError(f"cannot read {name}: the pickle is nested too deeply") from None
        except MemoryError:
            raise CorruptCheckpointError(
                f"cannot read {name}: corrupt pickle (asks for an impossible amount of memory)"
            ) from None
        except Exception as exc:  # EOFError, UnpicklingError, struct errors, bad opcodes, ...
            raise CorruptCheckpointError(
                f"cannot read {name}: not a readable pickle, truncated or corrupt ({first_line(exc)})"
            ) from None
