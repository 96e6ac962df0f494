"""The restricted unpickler: checkpoints are data, so anything that would run code must be refused."""

from __future__ import annotations

import io
import os
import pickle
import random
import re
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pulse_cli.checkpoints.safe_pickle import (
    CorruptCheckpointError,
    EasyDictStub,
    PersistentObject,
    TFNetworkState,
    UnsafeCheckpointError,
    allowed_globals,
    load_restricted_pickle,
)


class _Reduce:
    """Pickles as `fn(*args)`: the shape of every pickle exploit."""

    def __init__(self, fn: Any, args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.fn, self.args


def _write(path: Path, payload: Any) -> Path:
    path.write_bytes(pickle.dumps(payload, protocol=4))
    return path


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    m = tmp_path / "pwned"
    assert not m.exists()
    return m


@pytest.fixture
def fake_persistence(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A stand-in `torch_utils.persistence` module, only so that the test can *write* such pickles."""
    calls: list[Any] = []

    def _reconstruct_persistent_obj(meta: Any) -> Any:
        calls.append(meta)  # must never run during loading
        return None

    def _src_to_module(src: str) -> Any:
        calls.append(src)
        return None

    pkg = types.ModuleType("torch_utils")
    mod = types.ModuleType("torch_utils.persistence")
    for fn in (_reconstruct_persistent_obj, _src_to_module):
        fn.__module__ = mod.__name__
        fn.__qualname__ = fn.__name__
        setattr(mod, fn.__name__, fn)
    pkg.persistence = mod  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch_utils", pkg)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", mod)
    return types.SimpleNamespace(module=mod, calls=calls)


# ----------------------------------------------------------------------------------------------
# Malicious pickles


def test_os_system_hand_written_payload_refused(tmp_path: Path, marker: Path) -> None:
    # The classic protocol-0 exploit names os.system literally.
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(UnsafeCheckpointError) as info:
        load_restricted_pickle(path)
    msg = str(info.value)
    assert "os.system" in msg and "evil.pkl" in msg and "\n" not in msg
    assert not marker.exists()


def test_os_system_via_reduce_refused(tmp_path: Path, marker: Path) -> None:
    path = _write(tmp_path / "evil.pkl", {"G_ema": _Reduce(os.system, (f"touch {marker}",))})
    with pytest.raises(UnsafeCheckpointError) as info:
        load_restricted_pickle(path)
    # pickle records os.system under its defining module (posix on Linux, nt on Windows).
    assert f"{os.system.__module__}.system" in str(info.value)
    assert not marker.exists()


def test_builtins_eval_refused(tmp_path: Path, marker: Path) -> None:
    code = f"__import__('os').system('touch {marker}')"
    path = _write(tmp_path / "eval.pkl", [1, 2, _Reduce(eval, (code,))])
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.eval"):
        load_restricted_pickle(path)
    assert not marker.exists()


def test_subprocess_popen_refused(tmp_path: Path, marker: Path) -> None:
    path = _write(tmp_path / "popen.pkl", _Reduce(subprocess.Popen, (["touch", str(marker)],)))
    with pytest.raises(UnsafeCheckpointError, match=r"subprocess\.Popen"):
        load_restricted_pickle(path)
    assert not marker.exists()


def test_unsafe_error_is_a_value_error() -> None:
    assert issubclass(UnsafeCheckpointError, ValueError)
    assert issubclass(CorruptCheckpointError, ValueError)


def test_persistent_object_source_is_never_executed(
    tmp_path: Path, marker: Path, fake_persistence: types.SimpleNamespace
) -> None:
    # NVIDIA's loader execs module_src; ours keeps it as an inert string.
    src = f"import os\nos.system('touch {marker}')\nclass Generator: pass\n"
    meta = {
        "type": "class",
        "version": 6,
        "module_src": src,
        "class_name": "Generator",
        "state": {"_parameters": OrderedDict(w=torch.ones(2)), "_buffers": {}, "_modules": {}},
    }
    fn = fake_persistence.module._reconstruct_persistent_obj
    path = _write(tmp_path / "persist.pkl", {"G_ema": _Reduce(fn, (meta,))})
    obj = load_restricted_pickle(path)
    g = obj["G_ema"]
    assert isinstance(g, PersistentObject)
    assert g.class_name == "Generator" and g.version == 6 and g.module_src == src
    assert torch.equal(g.state["_parameters"]["w"], torch.ones(2))
    assert fake_persistence.calls == []
    assert not marker.exists()


def test_other_persistence_helpers_refused(
    tmp_path: Path, marker: Path, fake_persistence: types.SimpleNamespace
) -> None:
    src = f"import os\nos.system('touch {marker}')\n"
    fn = fake_persistence.module._src_to_module
    path = _write(tmp_path / "persist_src.pkl", _Reduce(fn, (src,)))
    with pytest.raises(UnsafeCheckpointError, match=r"torch_utils\.persistence\._src_to_module"):
        load_restricted_pickle(path)
    assert fake_persistence.calls == []
    assert not marker.exists()


def test_malicious_tensor_blob_refused(tmp_path: Path, marker: Path) -> None:
    # A storage blob is itself a (legacy) torch.save pickle: it goes through torch's weights_only loader.
    buf = io.BytesIO()
    torch.save(_Reduce(os.system, (f"touch {marker}",)), buf, _use_new_zipfile_serialization=False)
    path = _write(tmp_path / "blob.pkl", _Reduce(torch.storage._load_from_bytes, (buf.getvalue(),)))
    with pytest.raises(UnsafeCheckpointError) as info:
        load_restricted_pickle(path)
    assert "system" in str(info.value) and "blob.pkl" in str(info.value)
    assert not marker.exists()


def test_pickle_cannot_tamper_with_allowed_globals(tmp_path: Path) -> None:
    # BUILD on an allowed function / class would otherwise let a file change the loader for later files.
    path = tmp_path / "tamper.pkl"
    path.write_bytes(b"ctorch._utils\n_rebuild_parameter\n(dS'__doc__'\nS'x'\nsb.")
    with pytest.raises(ValueError, match="tamper.pkl"):
        load_restricted_pickle(path)
    path.write_bytes(b"cdnnlib.util\nEasyDict\n(N(dS'__init__'\nctorch._utils\n_rebuild_parameter\nstb.")
    with pytest.raises(ValueError, match="tamper.pkl"):
        load_restricted_pickle(path)
    assert EasyDictStub.__init__ is dict.__init__
    # The loader still works afterwards.
    ok = _write(tmp_path / "ok.pkl", {"t": torch.nn.Parameter(torch.ones(3))})
    assert torch.equal(load_restricted_pickle(ok)["t"], torch.ones(3))


def test_numpy_object_arrays_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "objarr.pkl", np.array([1, "a"], dtype=object))
    with pytest.raises(ValueError, match="objarr.pkl"):
        load_restricted_pickle(path)


# ----------------------------------------------------------------------------------------------
# Corrupt files


def _assert_clean_value_error(path: Path) -> None:
    with pytest.raises(ValueError) as info:
        load_restricted_pickle(path)
    assert type(info.value) is CorruptCheckpointError  # not EOFError / UnpicklingError / ...
    msg = str(info.value)
    assert path.name in msg and "\n" not in msg


@pytest.mark.parametrize("fixture", ["sg2ada_network.pkl", "sg2tf_network.pkl"])
def test_truncated_fixture(fixtures_dir: Path, tmp_path: Path, fixture: str) -> None:
    data = (fixtures_dir / fixture).read_bytes()
    path = tmp_path / f"truncated_{fixture}"
    path.write_bytes(data[: len(data) // 2])
    _assert_clean_value_error(path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pkl"
    path.write_bytes(b"")
    _assert_clean_value_error(path)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / f"random{seed}.pkl"
    path.write_bytes(rng.randbytes(rng.choice([1, 7, 100, 4096])))
    with pytest.raises(ValueError) as info:  # random opcodes may also name a refused global
        load_restricted_pickle(path)
    assert path.name in str(info.value) and "\n" not in str(info.value)


def test_random_bytes_after_pickle_header(tmp_path: Path) -> None:
    rng = random.Random(1234)
    for i in range(20):
        path = tmp_path / f"hdr{i}.pkl"
        path.write_bytes(b"\x80\x04" + rng.randbytes(200))
        with pytest.raises(ValueError, match=path.name):
            load_restricted_pickle(path)


def test_torch_zip_archive_is_not_a_network_pickle(tmp_path: Path) -> None:
    path = tmp_path / "state.pt"
    torch.save({"w": torch.ones(2)}, path)
    _assert_clean_value_error(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope.pkl"):
        load_restricted_pickle(tmp_path / "nope.pkl")


# ----------------------------------------------------------------------------------------------
# Benign content round-trips


def test_tensors_numpy_and_containers_round_trip(tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    payload = {
        "param": torch.nn.Parameter(torch.randn(3, 2)),
        "view": base[1:, ::2],  # non-contiguous view with an offset
        "half": torch.ones(5, dtype=torch.float16),
        "scalar0d": torch.tensor(2.5),
        "od": OrderedDict(a=1, b=[1, 2]),
        "np": np.arange(6, dtype=np.float32).reshape(2, 3),
        "np_scalar": np.float64(0.125),
        "np_f32": np.float32(1.5),
        "set": {1, 2},
        "dtype": torch.float32,
    }
    path = _write(tmp_path / "ok.pkl", payload)
    out = load_restricted_pickle(path)
    assert type(out["param"]) is torch.Tensor and not out["param"].requires_grad
    assert torch.equal(out["param"], payload["param"].detach())
    assert torch.equal(out["view"], payload["view"])
    assert out["half"].dtype == torch.float16 and out["scalar0d"].shape == ()
    assert out["od"] == payload["od"] and isinstance(out["od"], OrderedDict)
    np.testing.assert_array_equal(out["np"], payload["np"])
    assert out["np_scalar"] == 0.125 and out["np_f32"].dtype == np.float32
    assert out["set"] == {1, 2} and out["dtype"] is torch.float32


def test_fixture_globals_are_rebuilt_as_stubs(fixtures_dir: Path) -> None:
    tf = load_restricted_pickle(fixtures_dir / "sg1tf_network.pkl")
    assert isinstance(tf, tuple) and all(isinstance(n, TFNetworkState) for n in tf)
    assert tf[2].state["name"] == "Gs"
    assert "dnnlib" not in sys.modules and "torch_utils" not in sys.modules


def test_allow_list_is_explicit() -> None:
    allowed = allowed_globals()
    assert "torch_utils.persistence._reconstruct_persistent_obj" in allowed
    assert "dnnlib.tflib.network.Network" in allowed
    for bad in ("os.system", "posix.system", "builtins.eval", "builtins.exec", "subprocess.Popen"):
        assert bad not in allowed
    assert not any(g.startswith(("builtins.getattr", "copyreg.", "importlib.")) for g in allowed)


@pytest.mark.parametrize(
    "name", ["torch.load", "torch._inductor", "torch.storage.TypedStorage", "numpy.save"]
)
def test_other_torch_and_numpy_globals_refused(tmp_path: Path, name: str) -> None:
    module, attr = name.rsplit(".", 1)
    path = tmp_path / "g.pkl"
    path.write_bytes(f"c{module}\n{attr}\n.".encode())
    with pytest.raises(UnsafeCheckpointError, match=re.escape(name)):
        load_restricted_pickle(path)
