"""NVIDIA checkpoint formats -> plain state dicts, checked against the reference fixtures."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import load_pt, write_fake_stylegan3_pickle

from pulse_cli.checkpoints.nvidia import (
    detect_pickle_format,
    read_sg2ada_pickle,
    read_tf_network_pickle,
    sg1_tf_to_pulse,
    sg2_tf_to_nvidia,
)

pytestmark = pytest.mark.numerics  # float results: `make test` runs these with AVX2 and SSE4.1 kernels too

TOL = 1e-6


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) if a[k].numel() else 0.0 for k in b)


def _assert_same_state(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert list(actual) == list(expected)  # same keys, same order
    for k, v in expected.items():
        assert actual[k].shape == v.shape, k
        assert actual[k].dtype == v.dtype, k
    assert _max_diff(actual, expected) <= TOL


@pytest.fixture(scope="module")
def sg2ada(fixtures_dir: Path) -> dict[str, Any]:
    return read_sg2ada_pickle(fixtures_dir / "sg2ada_network.pkl")


@pytest.fixture(scope="module")
def sg2ada_expected(fixtures_dir: Path) -> dict[str, Any]:
    return load_pt(fixtures_dir / "sg2ada_expected.pt")


@pytest.fixture(scope="module")
def sg1_gs(fixtures_dir: Path) -> dict[str, Any]:
    return read_tf_network_pickle(fixtures_dir / "sg1tf_network.pkl")


@pytest.fixture(scope="module")
def sg2_gs(fixtures_dir: Path) -> dict[str, Any]:
    return read_tf_network_pickle(fixtures_dir / "sg2tf_network.pkl")


@pytest.fixture(scope="module")
def sg2_manifest(fixtures_dir: Path) -> dict[str, list[int]]:
    return json.loads((fixtures_dir / "stylegan2_ffhq1024_state_dict_manifest.json").read_text())["state_dict"]


# ----------------------------------------------------------------------------------------------
# Format detection


@pytest.mark.parametrize(
    ("fixture", "fmt"),
    [("sg2ada_network.pkl", "sg2ada"), ("sg2tf_network.pkl", "sg2-tf"), ("sg1tf_network.pkl", "sg1-tf")],
)
def test_detect_pickle_format(fixtures_dir: Path, fixture: str, fmt: str) -> None:
    assert detect_pickle_format(fixtures_dir / fixture) == fmt


def test_detection_uses_content_not_name(fixtures_dir: Path, tmp_path: Path) -> None:
    misleading = tmp_path / "karras2019stylegan-ffhq-1024x1024.pkl"
    misleading.symlink_to(fixtures_dir / "sg2ada_network.pkl")
    assert detect_pickle_format(misleading) == "sg2ada"
    other = tmp_path / "ffhq.pkl"
    other.symlink_to(fixtures_dir / "sg1tf_network.pkl")
    assert detect_pickle_format(other) == "sg1-tf"


def test_unrecognised_pickle(tmp_path: Path) -> None:
    path = tmp_path / "something.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ValueError, match="something.pkl"):
        detect_pickle_format(path)
    with pytest.raises(ValueError, match="something.pkl"):
        read_sg2ada_pickle(path)
    with pytest.raises(ValueError, match="something.pkl"):
        read_tf_network_pickle(path)


def test_readers_reject_the_other_format(fixtures_dir: Path) -> None:
    with pytest.raises(ValueError, match="sg2-tf"):
        read_sg2ada_pickle(fixtures_dir / "sg2tf_network.pkl")
    with pytest.raises(ValueError, match="not a TensorFlow network pickle"):
        read_tf_network_pickle(fixtures_dir / "sg2ada_network.pkl")


# ----------------------------------------------------------------------------------------------
# stylegan2-ada-pytorch pickle


def _manifest_at(manifest: dict[str, list[int]], resolution: int) -> list[str]:
    """The 1024 manifest's keys restricted to blocks <= resolution (same order)."""
    keep = []
    for k in manifest:
        m = re.match(r"synthesis\.b(\d+)\.", k)
        if m is None or int(m.group(1)) <= resolution:
            keep.append(k)
    return keep


def test_sg2ada_state_dict_layout(sg2ada: dict[str, Any], sg2_manifest: dict[str, list[int]]) -> None:
    sd = sg2ada["state_dict"]
    assert sg2ada["class_name"] == "Generator"
    assert list(sd) == _manifest_at(sg2_manifest, 64)
    for k in sd:
        if k.startswith("mapping.") or k.endswith(("resample_filter", "noise_strength")):
            assert list(sd[k].shape) == sg2_manifest[k], k
    assert all(type(v) is torch.Tensor and not v.requires_grad for v in sd.values())
    assert sd["synthesis.b8.conv0.noise_strength"].shape == ()
    noise = [k for k in sd if k.endswith(".noise_const")]
    assert len(noise) == 9 and noise[0] == "synthesis.b4.conv1.noise_const"


def test_sg2ada_init_kwargs_are_plain(sg2ada: dict[str, Any]) -> None:
    kw = sg2ada["init_kwargs"]
    assert type(kw) is dict and type(kw["synthesis_kwargs"]) is dict
    assert kw["img_resolution"] == 64 and kw["mapping_kwargs"]["num_layers"] == 8


def test_sg2ada_matches_nvidia_outputs(sg2ada: dict[str, Any], sg2ada_expected: dict[str, Any]) -> None:
    sd = sg2ada["state_dict"]
    assert float((sd["mapping.w_avg"] - sg2ada_expected["w_avg"]).abs().max()) <= TOL
    noise = [v for k, v in sd.items() if k.endswith(".noise_const")]
    assert [tuple(n.shape) for n in noise] == [tuple(n.shape) for n in sg2ada_expected["noise_const"]]
    for ours, theirs in zip(noise, sg2ada_expected["noise_const"], strict=True):
        assert float((ours - theirs).abs().max()) <= TOL
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = torch.outer(f, f) / 64
    assert torch.allclose(sd["synthesis.b32.conv1.resample_filter"], k)


def test_sg2ada_uses_g_ema_not_g(fixtures_dir: Path, sg2ada: dict[str, Any]) -> None:
    # sg2ada_expected has img_from_G_training_copy because G's small tensors differ from G_ema's.
    g = read_sg2ada_pickle(fixtures_dir / "sg2ada_network.pkl", network="G")["state_dict"]
    ema = sg2ada["state_dict"]
    assert list(g) == list(ema)
    differing = [k for k in ema if not torch.equal(ema[k], g[k])]
    assert "synthesis.b4.const" in differing and "mapping.fc0.bias" in differing


def test_sg2ada_matches_rosinality_copy(fixtures_dir: Path, sg2ada: dict[str, Any]) -> None:
    # Independent cross-check: rosinality's converted checkpoint holds the same raw values.
    ros = load_pt(fixtures_dir / "rosinality_g_ema.pt")
    sd, g = sg2ada["state_dict"], ros["g_ema"]
    assert torch.equal(sd["synthesis.b4.const"], g["input.input"][0])
    assert torch.equal(sd["synthesis.b4.conv1.weight"], g["conv1.conv.weight"][0])
    assert torch.equal(sd["synthesis.b8.conv0.weight"], g["convs.0.conv.weight"][0])
    assert torch.equal(sd["mapping.fc0.weight"], g["style.1.weight"])
    assert torch.equal(sd["mapping.w_avg"], ros["latent_avg"])


# ----------------------------------------------------------------------------------------------
# StyleGAN3 (refused)


def test_stylegan3_is_detected_and_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_fake_stylegan3_pickle(tmp_path / "stylegan3-t-ffhq-1024x1024.pkl", monkeypatch)
    assert detect_pickle_format(path) == "sg3"
    with pytest.raises(ValueError, match="StyleGAN3 generators are not supported: they have no noise inputs"):
        read_sg2ada_pickle(path)


# ----------------------------------------------------------------------------------------------
# TensorFlow pickles


def test_read_tf_network_pickle_structure(sg2_gs: dict[str, Any]) -> None:
    assert sg2_gs["name"] == "Gs"
    assert set(sg2_gs["components"]) == {"synthesis", "mapping"}
    assert "build_module_src" not in sg2_gs  # the code is never kept, let alone run
    assert sg2_gs["variables"]["dlatent_avg"].shape == (512,)
    syn = sg2_gs["components"]["synthesis"]
    assert syn["static_kwargs"]["resolution"] == 64
    assert syn["variables"]["8x8/Conv0_up/weight"].shape == (3, 3, 64, 64)
    assert isinstance(syn["variables"]["noise0"], np.ndarray)


def test_sg2_tf_equals_sg2ada_pickle(sg2_gs: dict[str, Any], sg2ada: dict[str, Any]) -> None:
    # NVIDIA's own converter turns this TF pickle into exactly that G_ema.
    _assert_same_state(sg2_tf_to_nvidia(sg2_gs), sg2ada["state_dict"])


def test_sg1_tf_equals_pulse_reference(fixtures_dir: Path, sg1_gs: dict[str, Any]) -> None:
    ref = load_pt(fixtures_dir / "pulse_reference_fixture.pt")
    expected = load_pt(fixtures_dir / "sg1tf_expected.pt")
    synthesis, mapping, extras = sg1_tf_to_pulse(sg1_gs)
    _assert_same_state(synthesis, ref["synthesis_state_dict"])
    _assert_same_state(mapping, ref["mapping_state_dict"])
    assert float((extras["dlatent_avg"] - expected["dlatent_avg"]).abs().max()) <= TOL
    assert [tuple(n.shape) for n in extras["noise_const"]] == [tuple(n.shape) for n in expected["noise_const"]]
    assert tuple(extras["noise_const"][0].shape) == (1, 1, 4, 4) and len(extras["noise_const"]) == 14
    for ours, theirs in zip(extras["noise_const"], expected["noise_const"], strict=True):
        assert float((ours - theirs).abs().max()) <= TOL


def test_tf_translators_reject_the_wrong_generation(sg1_gs: dict[str, Any], sg2_gs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="missing TF variable"):
        sg2_tf_to_nvidia(sg1_gs)
    with pytest.raises(ValueError, match="missing TF variable"):
        sg1_tf_to_pulse(sg2_gs)


def test_tf_translator_rejects_unknown_variables(sg2_gs: dict[str, Any]) -> None:
    syn = dict(sg2_gs["components"]["synthesis"])
    syn["variables"] = {**syn["variables"], "8x8/Attention/weight": np.zeros(3, np.float32)}
    gs = {**sg2_gs, "components": {**sg2_gs["components"], "synthesis": syn}}
    with pytest.raises(ValueError, match="8x8/Attention/weight"):
        sg2_tf_to_nvidia(gs)


# ----------------------------------------------------------------------------------------------
# Full-size layouts (zeros of the real shapes; no real weights exist here)


def _fake_sg2_tf_from_manifest(manifest: dict[str, list[int]]) -> dict[str, Any]:
    syn: dict[str, Any] = {}
    mapping: dict[str, Any] = {}
    gs_vars: dict[str, Any] = {}
    noise = 0
    for key, shape in manifest.items():
        z = lambda s: np.zeros(s, np.float32)  # noqa: E731
        if key == "mapping.w_avg":
            gs_vars["dlatent_avg"] = z(shape)
        elif m := re.match(r"mapping\.fc(\d+)\.(weight|bias)$", key):
            mapping[f"Dense{m[1]}/{m[2]}"] = z(shape[::-1])
        elif key.endswith("resample_filter"):
            continue
        elif m := re.match(r"synthesis\.b(\d+)\.const$", key):
            syn[f"{m[1]}x{m[1]}/Const/const"] = z([1, *shape])
        elif m := re.match(r"synthesis\.b(\d+)\.(conv0|conv1|torgb)\.(.+)$", key):
            r, layer, leaf = m[1], m[2], m[3]
            tf_layer = {"conv0": "Conv0_up", "conv1": "Conv" if r == "4" else "Conv1", "torgb": "ToRGB"}[layer]
            base = f"{r}x{r}/{tf_layer}"
            if leaf == "weight":
                syn[f"{base}/weight"] = z([shape[2], shape[3], shape[1], shape[0]])
            elif leaf == "affine.weight":
                syn[f"{base}/mod_weight"] = z(shape[::-1])
            elif leaf == "affine.bias":
                syn[f"{base}/mod_bias"] = z(shape)
            elif leaf == "noise_const":
                syn[f"noise{noise}"] = z([1, 1, *shape])
                noise += 1
            elif leaf == "noise_strength":
                syn[f"{base}/noise_strength"] = np.float32(0)
            else:
                syn[f"{base}/{leaf}"] = z(shape)
        else:
            raise AssertionError(key)

    def net(name: str, variables: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "static_kwargs": {}, "variables": variables, "components": {}}

    return {
        **net("Gs", gs_vars),
        "components": {"synthesis": net("G_synthesis", syn), "mapping": net("G_mapping", mapping)},
    }


def test_sg2_tf_translation_full_size_layout(sg2_manifest: dict[str, list[int]]) -> None:
    sd = sg2_tf_to_nvidia(_fake_sg2_tf_from_manifest(sg2_manifest))
    assert list(sd) == list(sg2_manifest) and len(sd) == 182
    assert {k: list(v.shape) for k, v in sd.items()} == sg2_manifest


def test_sg1_tf_translation_full_size_layout(fixtures_dir: Path) -> None:
    manifest = json.loads((fixtures_dir / "pulse_ffhq1024_state_dict_manifest.json").read_text())
    syn: dict[str, Any] = {}
    z = lambda s: np.zeros(s, np.float32)  # noqa: E731
    for key, shape in manifest["synthesis"].items():
        if key.startswith("torgb."):
            leaf = key.split(".")[1]
            syn[f"ToRGB_lod0/{leaf}"] = z([1, 1, shape[1], shape[0]] if leaf == "weight" else shape)
            continue
        m = re.match(r"blocks\.(\d+)x\1\.(.+)$", key)
        assert m, key
        r, rest = m[1], m[2]
        first, second = ("Const", "Conv") if r == "4" else ("Conv0_up", "Conv1")
        tf = {
            "const": f"{first}/const",
            "bias": f"{first}/bias",
            "conv.weight": f"{second}/weight",
            "conv.bias": f"{second}/bias",
            "conv0_up.weight": f"{first}/weight",
            "conv0_up.bias": f"{first}/bias",
            "conv1.weight": f"{second}/weight",
            "conv1.bias": f"{second}/bias",
            "epi1.noise.weight": f"{first}/Noise/weight",
            "epi1.style_mod.lin.weight": f"{first}/StyleMod/weight",
            "epi1.style_mod.lin.bias": f"{first}/StyleMod/bias",
            "epi2.noise.weight": f"{second}/Noise/weight",
            "epi2.style_mod.lin.weight": f"{second}/StyleMod/weight",
            "epi2.style_mod.lin.bias": f"{second}/StyleMod/bias",
        }.get(rest)
        if tf is None:
            assert rest == "conv0_up.intermediate.kernel"
            continue
        if tf.endswith("/weight") and len(shape) == 4:
            shape = [shape[2], shape[3], shape[1], shape[0]]
        elif tf.endswith("StyleMod/weight"):
            shape = shape[::-1]
        syn[f"{r}x{r}/{tf}"] = z(shape)
    for i in range(18):
        r = 2 ** (i // 2 + 2)
        syn[f"noise{i}"] = z([1, 1, r, r])
    mapping = {f"Dense{k[5]}/{k.split('.')[1]}": z(s[::-1]) for k, s in manifest["mapping"].items()}
    gs = {
        "name": "Gs",
        "variables": {"dlatent_avg": z([512]), "lod": np.float32(0)},
        "components": {
            "synthesis": {"name": "G_synthesis", "variables": syn},
            "mapping": {"name": "G_mapping", "variables": mapping},
        },
    }
    synthesis, mapping_sd, extras = sg1_tf_to_pulse(gs)
    assert {k: list(v.shape) for k, v in synthesis.items()} == manifest["synthesis"]
    assert {k: list(v.shape) for k, v in mapping_sd.items()} == manifest["mapping"]
    assert len(extras["noise_const"]) == 18


def test_cyclic_module_tree_is_a_clean_error(tmp_path: Path) -> None:
    # Hand-written opcodes: after building G_ema, put it into its own _modules (memo GET + SETITEM).
    path = tmp_path / "cyclic.pkl"
    path.write_bytes(
        b"(dp0\nS'G_ema'\nctorch_utils.persistence\n_reconstruct_persistent_obj\n"
        b"((dp1\nS'type'\nS'class'\nsS'class_name'\nS'Generator'\nsS'state'\n"
        b"(dp2\nS'_parameters'\n(dsS'_buffers'\n(dsS'_modules'\n(dp3\nss"
        b"tRp4\ns"
        b"g3\nS'synthesis'\ng4\ns0."
    )
    with pytest.raises(ValueError, match=r"cyclic\.pkl: .*cyclic"):
        read_sg2ada_pickle(path)
    with pytest.raises(ValueError, match=r"cyclic\.pkl: .*cyclic"):
        detect_pickle_format(path)
