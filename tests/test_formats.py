"""Every checkpoint format through `load_networks` / `load_generator`, recognised by content, against the
reference outputs in ../shared/fixtures; broken, hostile and StyleGAN3 files refused; pulse's safetensors
file round trip; default checkpoint choice."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shlex
import shutil
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import load_pt, write_fake_stylegan3_pickle
from PIL import Image
from typer.testing import CliRunner

import pulse_cli.checkpoints.detect as detect_module
import pulse_cli.checkpoints.loading as checkpoint_module
import pulse_cli.checkpoints.read as read_module
from pulse_cli.checkpoints import nvidia
from pulse_cli.checkpoints.errors import CheckpointError
from pulse_cli.checkpoints.io import load_torch_file
from pulse_cli.checkpoints.loading import (
    convert_checkpoint,
    latent_stats_for,
    load_generator,
    load_networks,
)
from pulse_cli.checkpoints.nvidia import read_sg2ada_pickle
from pulse_cli.checkpoints.safe_pickle import load_restricted_pickle
from pulse_cli.cli import app
from pulse_cli.weights.local import find_default_checkpoint

pytestmark = pytest.mark.numerics  # float results: `make test` runs these with AVX2 and SSE4.1 kernels too

TOL = 1e-4


def _one_line(exc: BaseException) -> bool:
    return "\n" not in str(exc) and str(exc).strip() != ""


@pytest.fixture(scope="module")
def ref(fixtures_dir: Path) -> dict:
    return load_pt(fixtures_dir / "pulse_reference_fixture.pt")


@pytest.fixture(scope="module")
def sg1_expected(fixtures_dir: Path) -> dict:
    return load_pt(fixtures_dir / "sg1tf_expected.pt")


@pytest.fixture(scope="module")
def sg2_expected(fixtures_dir: Path) -> dict:
    return load_pt(fixtures_dir / "sg2ada_expected.pt")


@pytest.fixture(scope="module")
def fit_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "pulse_gaussian_fit.pt"  # 512 dims: fits every fixture generator


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, ref: dict, fixtures_dir: Path) -> dict[str, Path]:
    """Checkpoints in the formats that have no file in the shared fixtures, built from the fixtures."""
    root = tmp_path_factory.mktemp("made")
    files: dict[str, Path] = {}

    pulse = root / "pulse"
    pulse.mkdir()
    torch.save(ref["synthesis_state_dict"], pulse / "synthesis.pt")
    torch.save(ref["mapping_state_dict"], pulse / "mapping.pt")
    files["pulse"] = pulse / "synthesis.pt"

    # lernapparat's notebook layout (written out here from its key_translate): prefixes, and the noise weight
    # inside an `epiN.top_epi` Sequential.
    lern: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in ref["mapping_state_dict"].items():
        lern[f"g_mapping.{key}"] = value
    for key, value in ref["synthesis_state_dict"].items():
        key = key.replace(".epi1.noise.", ".epi1.top_epi.noise.").replace(".epi2.noise.", ".epi2.top_epi.noise.")
        lern[f"g_synthesis.{key}"] = value
    assert any(k.endswith("4x4.epi1.top_epi.noise.weight") for k in lern)
    files["lernapparat"] = root / "karras2019stylegan-ffhq-1024x1024.for_g_all.pt"
    torch.save(lern, files["lernapparat"])

    # A rosinality *training* checkpoint: g_ema plus an argparse.Namespace (and optimiser-like state).
    ros = load_pt(fixtures_dir / "rosinality_g_ema.pt")
    train = {
        "g": ros["g_ema"], "d": {"convs.0.0.weight": torch.zeros(4, 3, 1, 1)}, "g_ema": ros["g_ema"],
        "g_optim": {"state": {}, "param_groups": [{"lr": 0.002, "betas": (0.0, 0.99), "params": [0, 1]}]},
        "args": argparse.Namespace(size=64, lr=0.002, channel_multiplier=2, path="lmdb/ffhq", r1=10.0),
        "latent_avg": ros["latent_avg"],
    }
    files["rosinality-train"] = root / "080000.pt"
    torch.save(train, files["rosinality-train"])

    files["nvidia-sd"] = root / "g_ema_state_dict.pt"
    torch.save(read_sg2ada_pickle(fixtures_dir / "sg2ada_network.pkl")["state_dict"], files["nvidia-sd"])
    return files


def _path(name: str, fixtures_dir: Path, made: dict[str, Path]) -> Path:
    return made[name] if name in made else fixtures_dir / name


SG2_SOURCES = {
    "sg2ada_network.pkl": "sg2ada",
    "sg2tf_network.pkl": "sg2-tf",
    "rosinality_g_ema.pt": "rosinality",
    "rosinality-train": "rosinality",
    "nvidia-sd": "nvidia-state-dict",
}
SG1_SOURCES = {"sg1tf_network.pkl": "sg1-tf", "lernapparat": "lernapparat", "pulse": "pulse"}


def _const_noise(expected: dict, batch: int) -> list[torch.Tensor]:
    return [n[None, None].expand(batch, 1, -1, -1) for n in expected["noise_const"]]


# --------------------------------------------------------------------------------------------------------------
# Each format reproduces the reference outputs


@pytest.mark.parametrize("name", list(SG2_SOURCES))
def test_stylegan2_formats_reproduce_nvidia(name: str, fixtures_dir: Path, made: dict, sg2_expected: dict,
                                            fit_path: Path, tmp_path: Path) -> None:
    path = _path(name, fixtures_dir, made)
    assert load_networks(path).format == SG2_SOURCES[name]
    G = load_generator(path, gaussian_fit=fit_path, cache_dir=tmp_path / "cache")
    assert (G.family, G.resolution, G.num_ws, G.w_dim, len(G.noise_shapes(1))) == ("stylegan2", 64, 10, 512, 9)
    e = sg2_expected
    with torch.no_grad():
        img = G.synthesize(e["ws"], _const_noise(e, 2))
        img2 = G.synthesize(e["ws2"], [n[None, None].expand(2, 1, -1, -1) for n in e["noise2"]])
        w = G.map(e["z"])
    assert (img - e["img"]).abs().max() <= TOL
    assert (img2 - e["img2"]).abs().max() <= TOL
    assert (w - e["ws"][:, 0]).abs().max() <= TOL
    assert G.source == str(path) and G.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert G.latent_stats is not None


@pytest.mark.parametrize("name", list(SG1_SOURCES))
def test_stylegan1_formats_reproduce_the_original_port(name: str, fixtures_dir: Path, made: dict,
                                                       sg1_expected: dict, fit_path: Path, tmp_path: Path) -> None:
    path = _path(name, fixtures_dir, made)
    assert load_networks(path).format == SG1_SOURCES[name]
    G = load_generator(path, gaussian_fit=fit_path, cache_dir=tmp_path / "cache")
    assert (G.family, G.resolution, G.num_ws, G.w_dim, len(G.noise_shapes(1))) == ("stylegan1", 256, 14, 512, 14)
    e = sg1_expected
    with torch.no_grad():
        img = G.synthesize(e["synthesis_dlatents"], e["synthesis_noise"])
        img_const = G.synthesize(e["synthesis_dlatents"], e["noise_const"])
        w = G.map(e["mapping_z"])
    assert (img - e["synthesis_image"]).abs().max() <= TOL
    assert (img_const - e["image_const_noise"]).abs().max() <= TOL
    assert (w - e["mapping_w"]).abs().max() <= TOL


# --------------------------------------------------------------------------------------------------------------
# Recognised by content, not name


def test_misleading_names_still_load(fixtures_dir: Path, made: dict, tmp_path: Path) -> None:
    cases = {
        "sg1tf_network.pkl": ("stylegan2-ffhq-config-f.safetensors", "sg1-tf"),
        "sg2ada_network.pkl": ("synthesis.pt", "sg2ada"),
        "sg2tf_network.pkl": ("karras2019stylegan-ffhq-1024x1024.for_g_all.pt", "sg2-tf"),
        "rosinality_g_ema.pt": ("network-snapshot.pkl", "rosinality"),
        "lernapparat": ("ffhq.pkl", "lernapparat"),
    }
    for i, (name, (misleading, fmt)) in enumerate(cases.items()):
        folder = tmp_path / str(i)
        folder.mkdir()
        shutil.copyfile(_path(name, fixtures_dir, made), folder / misleading)
        loaded = load_networks(folder / misleading)
        assert loaded.format == fmt, misleading
    converted = convert_checkpoint(fixtures_dir / "sg2ada_network.pkl", tmp_path / "conv.safetensors",
                                   samples=256, cache_dir=tmp_path / "cache")
    shutil.copyfile(converted, tmp_path / "mapping.pt")
    assert load_networks(tmp_path / "mapping.pt").format == "pulse-safetensors"


# --------------------------------------------------------------------------------------------------------------
# Refused: StyleGAN3, truncated, hostile, unknown


def test_stylegan3_is_refused_with_a_clear_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_fake_stylegan3_pickle(tmp_path / "ffhq.pkl", monkeypatch)  # a StyleGAN2 name: content decides
    with pytest.raises(CheckpointError, match="StyleGAN3 generators are not supported") as info:
        load_networks(path)
    assert _one_line(info.value) and str(path) in str(info.value)
    sd = {"synthesis.input.freqs": torch.zeros(8, 2), "synthesis.L0_36_512.weight": torch.zeros(4, 4, 3, 3),
          "mapping.fc0.weight": torch.zeros(4, 8)}
    torch.save(sd, tmp_path / "sg3.pt")
    with pytest.raises(CheckpointError, match="StyleGAN3"):
        load_networks(tmp_path / "sg3.pt")
    assert detect_module.sniff(path).format == "sg3"
    assert find_default_checkpoint([tmp_path]) is None


@pytest.mark.parametrize("name", ["sg1tf_network.pkl", "sg2tf_network.pkl", "sg2ada_network.pkl",
                                  "rosinality_g_ema.pt", "rosinality-train", "lernapparat", "pulse",
                                  "safetensors"])
def test_truncated_copies_are_checkpoint_errors(name: str, fixtures_dir: Path, made: dict, tmp_path: Path) -> None:
    if name == "safetensors":
        src = convert_checkpoint(fixtures_dir / "sg2ada_network.pkl", tmp_path / "full.safetensors", samples=256,
                                 cache_dir=tmp_path / "cache")
    else:
        src = _path(name, fixtures_dir, made)
    data = src.read_bytes()
    for i, cut in enumerate((len(data) // 2, len(data) - 1000, 40)):
        path = tmp_path / f"cut{i}" / src.name
        path.parent.mkdir()
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as info:
            load_networks(path)
        assert _one_line(info.value), info.value
        assert str(path) in str(info.value)


def test_unrecognised_files(tmp_path: Path) -> None:
    cases = {
        "empty.pkl": b"",
        "text.pt": b"hello, this is not a checkpoint\n" * 10,
        "random.safetensors": np.random.default_rng(0).bytes(5000),
        "list.pkl": pickle.dumps([1, 2, 3], protocol=4),
        "fake-header.safetensors": struct.pack("<Q", 20) + b'{"a": 1, "b": [1,2]}',
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            load_networks(tmp_path / name)
        assert _one_line(info.value) and str(tmp_path / name) in str(info.value), name
    torch.save({"mean": torch.zeros(512), "std": torch.ones(512)}, tmp_path / "fit.pt")
    with pytest.raises(CheckpointError, match="latent-statistics file"):
        load_networks(tmp_path / "fit.pt")


def test_namespace_is_the_only_extra_global_allowed(fixtures_dir: Path, tmp_path: Path) -> None:
    import fractions

    ros = load_pt(fixtures_dir / "rosinality_g_ema.pt")
    torch.save({**ros, "args": fractions.Fraction(1, 3)}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="unsafe") as info:
        load_networks(tmp_path / "odd.pt")
    assert _one_line(info.value)


def _evil(marker: Path) -> Any:
    class Evil:
        def __reduce__(self) -> Any:
            return os.system, (f"touch {shlex.quote(str(marker))}",)

    return Evil()


def test_malicious_pickle_via_upsample_exits_2_without_running(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PULSE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PULSE_CHECKPOINT", raising=False)
    marker = tmp_path / "pwned"
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(src / "a.png")
    evil_files = {
        "evil.pkl": pickle.dumps(_evil(marker), protocol=4),
        "evil-sg2ada.pkl": pickle.dumps({"G_ema": _evil(marker), "G": None}, protocol=4),
    }
    for name, data in evil_files.items():
        (tmp_path / name).write_bytes(data)
        result = CliRunner().invoke(app, ["upsample", str(src), str(tmp_path / "out"), "--checkpoint",
                                          str(tmp_path / name), "--steps", "3", "--device", "cpu"])
        assert result.exit_code == 2, result.stderr
        assert "Traceback" not in result.stderr and "refusing" in result.stderr and "system" in result.stderr
        assert not marker.exists()
    assert not (tmp_path / "out" / "results.jsonl").exists()


# --------------------------------------------------------------------------------------------------------------
# Latent statistics


def _no_compute(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("latent statistics were recomputed")


def test_pickle_statistics_are_cached_under_the_files_sha256(fixtures_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = fixtures_dir / "sg2ada_network.pkl"
    loaded = load_networks(path)
    assert loaded.mapping_path == path
    stats = latent_stats_for(loaded, gaussian_fit=None, cache_dir=tmp_path, samples=512)
    entry = tmp_path / "latent-stats" / f"{hashlib.sha256(path.read_bytes()).hexdigest()}-512.pt"
    assert entry.is_file()
    monkeypatch.setattr(checkpoint_module, "compute_latent_stats", _no_compute)
    again = latent_stats_for(load_networks(path), gaussian_fit=None, cache_dir=tmp_path, samples=512)
    assert torch.equal(stats.mean, again.mean) and torch.equal(stats.std, again.std)


def test_gaussian_fit_beside_applies_to_stylegan1_only(fixtures_dir: Path, fit_path: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("sg1tf_network.pkl", "sg2ada_network.pkl"):
        shutil.copyfile(fixtures_dir / name, tmp_path / name)
    shutil.copyfile(fit_path, tmp_path / "gaussian_fit.pt")
    fit = load_pt(fit_path)
    monkeypatch.setattr(checkpoint_module, "compute_latent_stats", _no_compute)
    stats = latent_stats_for(load_networks(tmp_path / "sg1tf_network.pkl"), gaussian_fit=None, cache_dir=None)
    assert torch.equal(stats.mean, fit["mean"].float())
    # PULSE's fit is the StyleGAN v1 FFHQ mapping's: never silently used for a StyleGAN2 beside it.
    with pytest.raises(AssertionError, match="recomputed"):
        latent_stats_for(load_networks(tmp_path / "sg2ada_network.pkl"), gaussian_fit=None, cache_dir=None)


# --------------------------------------------------------------------------------------------------------------
# pulse's safetensors file


@pytest.mark.parametrize("name", ["sg2ada_network.pkl", "sg1tf_network.pkl", "pulse", "rosinality-train"])
def test_safetensors_round_trip(name: str, fixtures_dir: Path, made: dict, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    src = _path(name, fixtures_dir, made)
    original = load_networks(src).generator
    stats = latent_stats_for(load_networks(src), gaussian_fit=None, cache_dir=tmp_path / "cache", samples=1024)
    dst = convert_checkpoint(src, tmp_path / "out" / "model.safetensors", samples=1024,
                             cache_dir=tmp_path / "cache", metadata={"licence": "test licence"})
    assert dst.read_bytes()[8:9] == b"{" and b"__metadata__" in dst.read_bytes()[:100_000]

    monkeypatch.setattr(checkpoint_module, "compute_latent_stats", _no_compute)
    loaded = load_networks(dst)
    assert loaded.format == "pulse-safetensors" and loaded.latent_stats is not None
    meta = loaded.metadata
    assert meta["format"] == "pulse-generator" and meta["format_version"] == "1"
    assert meta["family"] == original.family and meta["resolution"] == str(original.resolution)
    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert meta["licence"] == "test licence" and "1024 samples" in meta["latent_stats"]
    G = load_generator(dst, cache_dir=tmp_path / "empty-cache")
    original.use_fast_path(G.synthesis_path == "fast")  # compare like with like: same evaluation path
    assert torch.equal(G.latent_stats.mean, stats.mean) and torch.equal(G.latent_stats.std, stats.std)
    torch.manual_seed(0)
    ws = torch.randn(2, G.num_ws, G.w_dim)
    noise = [torch.randn(s) for s in G.noise_shapes(2)]
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        assert torch.equal(G.synthesize(ws, noise), original.synthesize(ws, noise))
        assert torch.equal(G.map(z), original.map(z))
    assert not (tmp_path / "empty-cache").exists()


def test_safetensors_is_read_without_pickle(fixtures_dir: Path, tmp_path: Path, monkeypatch) -> None:
    dst = convert_checkpoint(fixtures_dir / "sg2ada_network.pkl", tmp_path / "m.safetensors", samples=256,
                             cache_dir=tmp_path / "cache")

    def no_unpickling(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle used to read a safetensors file")

    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    assert load_networks(dst).generator.resolution == 64


def _rewrite_metadata(src: Path, dst: Path, **changes: str) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(changes)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_safetensors_refusals(fixtures_dir: Path, tmp_path: Path) -> None:
    good = convert_checkpoint(fixtures_dir / "sg2ada_network.pkl", tmp_path / "m.safetensors", samples=256,
                              cache_dir=tmp_path / "cache")
    newer = _rewrite_metadata(good, tmp_path / "newer.safetensors", format_version="2")
    with pytest.raises(CheckpointError, match="newer pulse"):
        load_networks(newer)
    wrong = _rewrite_metadata(good, tmp_path / "wrong.safetensors", family="stylegan1")
    with pytest.raises(CheckpointError, match="family"):
        load_networks(wrong)
    from safetensors.torch import save_file

    save_file({"latents": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="without a generator") as info:
        load_networks(tmp_path / "other.safetensors")
    assert _one_line(info.value)
    with pytest.raises(CheckpointError, match="overwrite the source"):
        convert_checkpoint(good, good, cache_dir=tmp_path / "cache")


def test_converted_pulse_checkpoint_without_mapping_keeps_the_fit(ref: dict, fit_path: Path,
                                                                  tmp_path: Path) -> None:
    torch.save(ref["synthesis_state_dict"], tmp_path / "synthesis.pt")
    shutil.copyfile(fit_path, tmp_path / "gaussian_fit.pt")
    dst = convert_checkpoint(tmp_path / "synthesis.pt", tmp_path / "out" / "pulse.safetensors",
                             cache_dir=tmp_path / "cache")
    loaded = load_networks(dst)
    assert loaded.mapping_path is None and loaded.generator.z_dim is None
    G = load_generator(dst, cache_dir=tmp_path / "cache")
    assert torch.equal(G.latent_stats.mean, load_pt(fit_path)["mean"].float())


# --------------------------------------------------------------------------------------------------------------
# Choosing a default checkpoint


def test_default_checkpoint_prefers_stylegan1_and_stays_cheap(fixtures_dir: Path, made: dict, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "weights"
    (weights / "sub").mkdir(parents=True)
    shutil.copyfile(fixtures_dir / "sg2ada_network.pkl", weights / "a-stylegan2.pkl")
    shutil.copyfile(fixtures_dir / "rosinality_g_ema.pt", weights / "b.pt")
    shutil.copyfile(fixtures_dir / "pulse_gaussian_fit.pt", weights / "gaussian_fit.pt")
    shutil.copyfile(made["pulse"].with_name("mapping.pt"), weights / "mapping.pt")
    (weights / "notes.txt").write_text("not a checkpoint")
    (weights / "half.pkl.part").write_bytes(b"\x80\x04partial")
    shutil.copyfile(fixtures_dir / "sg1tf_network.pkl", weights / "sub" / "zz-v1.pkl")

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("find_default_checkpoint must not hash or load checkpoints")

    with monkeypatch.context() as m:
        for module, name in [(checkpoint_module, "read_networks"), (checkpoint_module, "sha256_file"),
                             (read_module, "load_torch_file"), (read_module, "load_restricted_pickle"),
                             (torch, "load"), (pickle, "Unpickler")]:
            m.setattr(module, name, forbidden)
        assert find_default_checkpoint([tmp_path / "missing", weights]) == weights / "sub" / "zz-v1.pkl"
        (weights / "sub" / "zz-v1.pkl").unlink()
        assert find_default_checkpoint([weights]) == weights / "a-stylegan2.pkl"
        shutil.copyfile(made["lernapparat"], weights / "sub" / "lern.pt")
        assert find_default_checkpoint([weights]) == weights / "sub" / "lern.pt"
    # a converted file beats the same family's pickle; the first folder holding anything wins
    shutil.copyfile(fixtures_dir / "sg1tf_network.pkl", weights / "karras.pkl")
    convert_checkpoint(weights / "karras.pkl", weights / "karras.safetensors", samples=256,
                       cache_dir=tmp_path / "cache")
    assert find_default_checkpoint([weights]) == weights / "karras.safetensors"
    first = tmp_path / "first"
    first.mkdir()
    shutil.copyfile(fixtures_dir / "sg2tf_network.pkl", first / "v2.pkl")
    assert find_default_checkpoint([first, weights]) == first / "v2.pkl"
    # and a folder given as --checkpoint stands for the file pulse would pick in it
    assert load_networks(first).path == first / "v2.pkl"


def test_default_checkpoint_keeps_pulse_layout(made: dict, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(made["pulse"].parent, weights / "pulse")
    assert find_default_checkpoint([weights]) == weights / "pulse" / "synthesis.pt"
    assert load_networks(weights / "pulse").path == weights / "pulse" / "synthesis.pt"


@pytest.mark.parametrize("name", ["sg1tf_network.pkl", "sg2tf_network.pkl", "sg2ada_network.pkl",
                                  "rosinality_g_ema.pt", "rosinality-train", "lernapparat", "pulse", "nvidia-sd",
                                  "pulse_gaussian_fit.pt", "mapping.pt"])
def test_sniff_agrees_with_the_reader(name: str, fixtures_dir: Path, made: dict) -> None:
    """The cheap sniff (first bytes) and the classifiers (loaded data) read one table of markers."""
    path = made["pulse"].with_name(name) if name == "mapping.pt" else _path(name, fixtures_dir, made)
    guess = detect_module.sniff(path)
    if detect_module.container_of(path) == "pickle":
        expected = nvidia.classify_pickle(load_restricted_pickle(path))
    else:
        expected = detect_module.classify_torch_data(load_torch_file(path))
    assert guess.format == expected is not None
    assert guess.family == detect_module.FORMAT_FAMILIES.get(expected)


def test_describe_is_json_clean(fixtures_dir: Path, tmp_path: Path) -> None:
    facts = checkpoint_module.describe(fixtures_dir / "sg2tf_network.pkl", cache_dir=tmp_path)
    json.dumps(facts)
    assert facts["format"] == "sg2-tf" and facts["noise_layers"] == 9 and facts["parameters"] > 1_000_000
    assert facts["latent_stats"].startswith("computed on first use")
