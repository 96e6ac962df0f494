"""Loading PULSE checkpoints (synthesis.pt + mapping.pt) and latent statistics (gaussian_fit.pt)."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import shlex
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import random_state_dicts, save_tensor_file, write_pulse_checkpoint

import pulse_cli
from pulse_cli.checkpoints import loading as checkpoint_module
from pulse_cli.checkpoints.errors import CheckpointError
from pulse_cli.checkpoints.io import load_torch_file
from pulse_cli.checkpoints.latent_stats import compute_latent_stats, read_gaussian_fit
from pulse_cli.checkpoints.loading import latent_stats_for, load_networks, resolve_latent_stats

pytestmark = pytest.mark.numerics  # float results: `make test` runs these with AVX2 and SSE4.1 kernels too

TOL = 1e-4
FORMATS = {
    "zip": {},
    "legacy": {"legacy": True},
    "zip-cuda0": {"device_tag": "cuda:0"},
    "legacy-cuda0": {"legacy": True, "device_tag": "cuda:0"},
}


@pytest.fixture(scope="module")
def ref(fixtures_dir: Path) -> dict:
    return torch.load(fixtures_dir / "pulse_reference_fixture.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def gaussian_fit_path(fixtures_dir: Path) -> Path:
    return fixtures_dir / "pulse_gaussian_fit.pt"


@pytest.fixture(scope="module")
def gaussian_fit(gaussian_fit_path: Path) -> dict[str, torch.Tensor]:
    return torch.load(gaussian_fit_path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def ref_checkpoints(ref: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reference networks written as PULSE's synthesis.pt + mapping.pt in each on-disk format."""
    paths = {}
    for name, kwargs in FORMATS.items():
        folder = tmp_path_factory.mktemp(f"ref-{name}")
        paths[name] = write_pulse_checkpoint(folder, ref["synthesis_state_dict"], ref["mapping_state_dict"],
                                             **kwargs)
    return paths


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    synthesis, mapping = random_state_dicts()
    folder = tmp_path_factory.mktemp("tiny")
    return {"synthesis": synthesis, "mapping": mapping, "path": write_pulse_checkpoint(folder, synthesis, mapping)}


def _copy_tiny(tiny: dict, dest: Path, *, mapping: bool = True) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(tiny["path"], dest / "synthesis.pt")
    if mapping:
        shutil.copy(tiny["path"].with_name("mapping.pt"), dest / "mapping.pt")
    return dest / "synthesis.pt"


def _one_line(exc: BaseException) -> bool:
    return bool(str(exc)) and "\n" not in str(exc)


def _render_ref(G, ref: dict) -> torch.Tensor:
    with torch.no_grad():
        return G.synthesize(ref["synthesis_dlatents"], list(ref["synthesis_noise"]))


# --- the helper really writes what it claims ---------------------------------------------------------------


def test_helper_formats_are_what_they_claim(ref_checkpoints: dict[str, Path]) -> None:
    assert zipfile.is_zipfile(ref_checkpoints["zip"])
    assert zipfile.is_zipfile(ref_checkpoints["zip-cuda0"])
    assert not zipfile.is_zipfile(ref_checkpoints["legacy"])
    assert not zipfile.is_zipfile(ref_checkpoints["legacy-cuda0"])
    if not torch.cuda.is_available():
        for name in ("zip-cuda0", "legacy-cuda0"):
            with pytest.raises(RuntimeError, match="(?i)cuda"):
                torch.load(ref_checkpoints[name], weights_only=True)
        torch.load(ref_checkpoints["zip"], weights_only=True)  # untagged loads without map_location


def test_real_gaussian_fit_is_legacy_and_cuda_tagged(gaussian_fit_path: Path) -> None:
    assert not zipfile.is_zipfile(gaussian_fit_path)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="(?i)cuda"):
            torch.load(gaussian_fit_path, weights_only=True)


# --- loading the reference networks ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_load_generator_every_format_reproduces_reference(fmt: str, ref: dict, ref_checkpoints: dict[str, Path],
                                                          gaussian_fit_path: Path, gaussian_fit: dict,
                                                          tmp_path: Path) -> None:
    path = ref_checkpoints[fmt]
    G = pulse_cli.load_generator(path, gaussian_fit=gaussian_fit_path, cache_dir=tmp_path)
    assert (G.resolution, G.num_ws, G.w_dim, G.z_dim) == (256, 14, 512, 512)
    assert G.device == torch.device("cpu")
    assert (_render_ref(G, ref) - ref["synthesis_image"]).abs().max().item() < TOL
    assert (G.map(ref["mapping_z"]) - ref["mapping_w"]).abs().max().item() < TOL
    assert torch.equal(G.latent_stats.mean, gaussian_fit["mean"])
    assert torch.equal(G.latent_stats.std, gaussian_fit["std"])
    assert G.source == str(path)
    assert G.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert all(not p.requires_grad for p in G.parameters())
    assert list(tmp_path.iterdir()) == []  # statistics were given: nothing computed or cached


def test_load_generator_from_folder_and_str(ref: dict, ref_checkpoints: dict[str, Path],
                                            gaussian_fit_path: Path, tmp_path: Path) -> None:
    folder = ref_checkpoints["zip"].parent
    G = pulse_cli.load_generator(str(folder), gaussian_fit=str(gaussian_fit_path), cache_dir=str(tmp_path))
    assert G.source == str(folder / "synthesis.pt")
    assert (_render_ref(G, ref) - ref["synthesis_image"]).abs().max().item() < TOL


def test_load_networks(ref_checkpoints: dict[str, Path]) -> None:
    path = ref_checkpoints["legacy-cuda0"]
    loaded = load_networks(path)
    assert loaded.path == path
    assert loaded.mapping_path == path.with_name("mapping.pt")
    G = loaded.generator
    assert G.family == "stylegan1" and G.resolution == 256 and G.num_ws == 14 and G.w_dim == 512
    assert G.latent_stats is None
    assert len(G.noise_shapes(1)) == 14


def test_tiny_checkpoint_architecture(tiny: dict) -> None:
    loaded = load_networks(tiny["path"].parent)
    G = loaded.generator
    assert (G.resolution, G.num_ws, G.w_dim, G.z_dim) == (32, 8, 32, 32)
    assert G.noise_shapes(1)[-1] == (1, 1, 32, 32)


# --- broken and hostile files ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_truncated_checkpoint(fmt: str, ref_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    data = ref_checkpoints[fmt].read_bytes()
    path = tmp_path / "synthesis.pt"
    path.write_bytes(data[: len(data) // 2])
    for load in (load_networks, lambda p: pulse_cli.load_generator(p, cache_dir=tmp_path / "cache")):
        with pytest.raises(CheckpointError) as info:
            load(path)
        assert _one_line(info.value)
        assert str(path) in str(info.value)


@pytest.mark.parametrize("cut", [1, 3, 18, 28])
def test_legacy_checkpoint_cut_inside_header(cut: int, ref_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "synthesis.pt"
    path.write_bytes(ref_checkpoints["legacy"].read_bytes()[:cut])
    with pytest.raises(CheckpointError) as info:
        load_torch_file(path)  # documented: anything unreadable becomes a one-line CheckpointError
    assert _one_line(info.value)


def test_zero_byte_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "synthesis.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty") as info:
        load_networks(path)
    assert _one_line(info.value)


def test_random_bytes_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "synthesis.pt"
    path.write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(CheckpointError) as info:
        load_networks(path)
    assert _one_line(info.value)


def _evil_class(marker: Path) -> type:
    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {shlex.quote(str(marker))}",)

    return Evil


def test_malicious_payload_is_live(tmp_path: Path) -> None:
    """The payload used below really runs code when unpickled unsafely (so the next test means something)."""
    marker = tmp_path / "proof"
    pickle.loads(pickle.dumps(_evil_class(marker)()))
    assert marker.exists()


@pytest.mark.parametrize("container", ["raw-pickle", "torch-zip", "torch-legacy"])
def test_malicious_pickle_is_refused_without_running(container: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = _evil_class(marker)()
    path = tmp_path / "synthesis.pt"
    if container == "raw-pickle":
        path.write_bytes(pickle.dumps(evil, protocol=2))
    else:
        payload = {"blocks.4x4.const": evil, "torgb.weight": torch.zeros(3, 8, 1, 1)}
        torch.save(payload, path, _use_new_zipfile_serialization=container == "torch-zip")
    assert not marker.exists()
    with pytest.raises(CheckpointError) as info:
        load_networks(path)
    assert _one_line(info.value)
    with pytest.raises(CheckpointError):
        pulse_cli.load_generator(path, cache_dir=tmp_path / "cache")
    assert not marker.exists()


def test_mapping_passed_as_checkpoint(tiny: dict) -> None:
    mapping_path = tiny["path"].with_name("mapping.pt")
    with pytest.raises(CheckpointError) as info:
        load_networks(mapping_path)
    message = str(info.value)
    assert _one_line(info.value)
    assert "mapping" in message and "synthesis.pt" in message


def test_not_a_generator_state_dict(tmp_path: Path) -> None:
    path = save_tensor_file({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a recognised") as info:
        load_networks(path)
    assert _one_line(info.value)
    path = save_tensor_file(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError):
        load_networks(path)


def test_bad_shapes_become_checkpoint_errors(tiny: dict, tmp_path: Path) -> None:
    synthesis = dict(tiny["synthesis"], **{"blocks.8x8.conv1.weight": torch.zeros(16, 16, 1, 1)})
    path = write_pulse_checkpoint(tmp_path, synthesis, tiny["mapping"])
    with pytest.raises(CheckpointError, match="conv1") as info:
        load_networks(path)
    assert _one_line(info.value)


def test_mapping_beside_that_is_not_a_mapping(tiny: dict, tmp_path: Path) -> None:
    path = _copy_tiny(tiny, tmp_path, mapping=False)
    shutil.copy(path, tmp_path / "mapping.pt")
    with pytest.raises(CheckpointError, match="mapping") as info:
        load_networks(path)
    assert _one_line(info.value)


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such"):
        load_networks(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="synthesis.pt"):
        load_networks(tmp_path)  # a folder without synthesis.pt
    with pytest.raises(CheckpointError):
        load_torch_file(tmp_path)


def test_synthesis_without_mapping_or_gaussian_fit(tiny: dict, tmp_path: Path) -> None:
    path = _copy_tiny(tiny, tmp_path / "ckpt", mapping=False)
    with pytest.raises(CheckpointError) as info:
        pulse_cli.load_generator(path, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert _one_line(info.value)
    assert "gaussian_fit" in message and "mapping" in message


def test_synthesis_without_mapping_but_with_gaussian_fit(ref: dict, gaussian_fit_path: Path,
                                                         tmp_path: Path) -> None:
    path = write_pulse_checkpoint(tmp_path / "ckpt", ref["synthesis_state_dict"], None)
    G = pulse_cli.load_generator(path, gaussian_fit=gaussian_fit_path, cache_dir=tmp_path / "cache")
    assert G.mapping is None and G.z_dim is None
    assert (_render_ref(G, ref) - ref["synthesis_image"]).abs().max().item() < TOL
    # gaussian_fit.pt beside the checkpoint is found on its own
    shutil.copy(gaussian_fit_path, path.with_name("gaussian_fit.pt"))
    G2 = pulse_cli.load_generator(path, cache_dir=tmp_path / "cache")
    assert G2.latent_stats is not None and G2.latent_stats.mean.shape == (512,)


def test_gaussian_fit_of_wrong_size(tiny: dict, gaussian_fit_path: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="512") as info:
        pulse_cli.load_generator(tiny["path"], gaussian_fit=gaussian_fit_path, cache_dir=tmp_path)
    assert _one_line(info.value)


# --- latent statistics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["original", *FORMATS])
def test_read_gaussian_fit(fmt: str, gaussian_fit_path: Path, gaussian_fit: dict, tmp_path: Path) -> None:
    if fmt == "original":
        path = gaussian_fit_path
    else:
        path = save_tensor_file(dict(gaussian_fit), tmp_path / "gaussian_fit.pt", **FORMATS[fmt])
    stats = read_gaussian_fit(path)
    assert stats.mean.shape == stats.std.shape == (512,)
    assert stats.mean.dtype == stats.std.dtype == torch.float32
    assert stats.mean.device.type == "cpu"
    assert torch.equal(stats.mean, gaussian_fit["mean"]) and torch.equal(stats.std, gaussian_fit["std"])
    assert (stats.std > 0).all()


@pytest.mark.parametrize("content", [
    {"mean": torch.zeros(4)},
    {"mean": torch.zeros(4), "std": torch.zeros(5)},
    {"mean": torch.zeros(2, 4), "std": torch.zeros(2, 4)},
    {"mean": [0.0], "std": [1.0]},
    torch.zeros(4),
])
def test_read_gaussian_fit_rejects(content: object, tmp_path: Path) -> None:
    path = save_tensor_file(content, tmp_path / "gaussian_fit.pt")
    with pytest.raises(CheckpointError) as info:
        read_gaussian_fit(path)
    assert _one_line(info.value)


def _direct_stats(mapping, z_dim: int, samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """PULSE's computation in one shot: one draw of all z, LeakyReLU(5) of the mapping, mean and std."""
    z = torch.randn((samples, z_dim), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        w = F.leaky_relu(mapping(z), 5.0)
    return w.mean(0), w.std(0)


def test_compute_latent_stats_equals_one_shot(tiny: dict) -> None:
    G = load_networks(tiny["path"]).generator
    mean, std = _direct_stats(G.map, G.z_dim, 1000)
    results = [compute_latent_stats(G.map, G.z_dim, samples=1000, chunk_rows=c) for c in (7, 16, 48, 100, 1000, 5000)]
    for stats in results:
        assert stats.mean.shape == stats.std.shape == (G.w_dim,)
        assert stats.mean.dtype == torch.float32
        assert (stats.mean - mean).abs().max().item() < 1e-5
        assert (stats.std - std).abs().max().item() < 1e-5
    # chunk size does not matter
    for stats in results[1:]:
        assert (stats.mean - results[0].mean).abs().max().item() < 1e-6
        assert (stats.std - results[0].std).abs().max().item() < 1e-6


def test_compute_latent_stats_reference_mapping(ref: dict) -> None:
    G = pulse_cli.networks.stylegan1.StyleGAN1Generator.from_state_dicts(ref["synthesis_state_dict"],
                                                                      ref["mapping_state_dict"])
    mean, std = _direct_stats(G.map, 512, 600)
    stats = compute_latent_stats(G.map, 512, samples=600, chunk_rows=256)
    assert (stats.mean - mean).abs().max().item() < 1e-5
    assert (stats.std - std).abs().max().item() < 1e-5


def test_compute_latent_stats_seed_and_samples(tiny: dict) -> None:
    G = load_networks(tiny["path"]).generator
    a = compute_latent_stats(G.map, G.z_dim, samples=300)
    b = compute_latent_stats(G.map, G.z_dim, samples=300, seed=1)
    torch.manual_seed(99)  # the global RNG does not matter
    c = compute_latent_stats(G.map, G.z_dim, samples=300)
    assert not torch.equal(a.mean, b.mean)
    assert torch.equal(a.mean, c.mean) and torch.equal(a.std, c.std)
    with pytest.raises(ValueError):
        compute_latent_stats(G.map, G.z_dim, samples=1)


def test_latent_stats_for_prefers_explicit_then_beside(tiny: dict, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = _copy_tiny(tiny, tmp_path / "ckpt")
    beside = {"mean": torch.arange(32.0), "std": torch.ones(32)}
    explicit = {"mean": -torch.arange(32.0), "std": 2 * torch.ones(32)}
    save_tensor_file(beside, path.with_name("gaussian_fit.pt"), legacy=True, device_tag="cuda:0")
    explicit_path = save_tensor_file(explicit, tmp_path / "explicit.pt")

    def must_not_compute(*args, **kwargs):
        raise AssertionError("statistics were computed although a gaussian fit was available")

    monkeypatch.setattr(checkpoint_module, "compute_latent_stats", must_not_compute)
    loaded = load_networks(path)
    stats = latent_stats_for(loaded, gaussian_fit=None, cache_dir=tmp_path / "cache")
    assert torch.equal(stats.mean, beside["mean"])
    stats = latent_stats_for(loaded, gaussian_fit=explicit_path, cache_dir=tmp_path / "cache")
    assert torch.equal(stats.mean, explicit["mean"]) and torch.equal(stats.std, explicit["std"])
    assert not (tmp_path / "cache").exists()


def test_latent_stats_cache(tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _copy_tiny(tiny, tmp_path / "ckpt")
    loaded = load_networks(path)
    cache = tmp_path / "cache"
    messages: list[str] = []
    first = latent_stats_for(loaded, gaussian_fit=None, cache_dir=cache, samples=300, notify=messages.append)
    assert len(messages) == 1 and "mapping.pt" in messages[0]
    expected = compute_latent_stats(loaded.generator.map, 32, samples=300)
    assert torch.equal(first.mean, expected.mean) and torch.equal(first.std, expected.std)
    key = hashlib.sha256(path.with_name("mapping.pt").read_bytes()).hexdigest()
    entries = list((cache / "latent-stats").iterdir())
    assert [e.name for e in entries] == [f"{key}-300.pt"]
    assert torch.equal(read_gaussian_fit(entries[0]).mean, first.mean)

    def must_not_compute(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(checkpoint_module, "compute_latent_stats", must_not_compute)
    second = latent_stats_for(load_networks(path), gaussian_fit=None, cache_dir=cache, samples=300,
                              notify=messages.append)
    assert len(messages) == 1
    assert torch.equal(second.mean, first.mean) and torch.equal(second.std, first.std)
    monkeypatch.undo()

    # a damaged cache entry is recomputed and rewritten
    entries[0].write_bytes(b"garbage")
    third = latent_stats_for(loaded, gaussian_fit=None, cache_dir=cache, samples=300)
    assert torch.equal(third.mean, first.mean)
    assert torch.equal(read_gaussian_fit(entries[0]).mean, first.mean)
    assert [e.name for e in (cache / "latent-stats").iterdir()] == [f"{key}-300.pt"]  # no temp files left


def test_one_resolver_says_where_the_statistics_come_from(tiny: dict, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every source in order of precedence: what describe reports (compute=False) is what loading uses."""
    path = _copy_tiny(tiny, tmp_path / "ckpt")
    cache = tmp_path / "cache"
    loaded = load_networks(path)
    assert resolve_latent_stats(loaded, cache_dir=cache, compute=False) == (None, "computed on first use (then cached)")
    G = pulse_cli.load_generator(path, cache_dir=cache)
    assert G.latent_stats_origin == "computed"
    monkeypatch.setattr(checkpoint_module, "compute_latent_stats",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    stats, origin = resolve_latent_stats(loaded, cache_dir=cache, compute=False)
    assert origin == "cached" and torch.equal(stats.mean, G.latent_stats.mean)
    assert pulse_cli.load_generator(path, cache_dir=cache).latent_stats_origin == "cached"
    fit = save_tensor_file({"mean": torch.zeros(32), "std": torch.ones(32)}, path.with_name("gaussian_fit.pt"))
    assert pulse_cli.load_generator(path, cache_dir=cache).latent_stats_origin == "gaussian_fit.pt beside the file"
    explicit = pulse_cli.load_generator(path, gaussian_fit=fit, cache_dir=cache)
    assert explicit.latent_stats_origin == f"--gaussian-fit {fit}"
    fit.unlink()
    path.with_name("mapping.pt").unlink()
    assert resolve_latent_stats(load_networks(path), cache_dir=cache, compute=False) == (
        None, "none (pass --gaussian-fit PATH)")
    with pytest.raises(CheckpointError, match="no latent statistics"):
        resolve_latent_stats(load_networks(path), cache_dir=cache)


def test_latent_stats_without_cache_dir(tiny: dict, tmp_path: Path) -> None:
    path = _copy_tiny(tiny, tmp_path / "ckpt")
    stats = latent_stats_for(load_networks(path), gaussian_fit=None, cache_dir=None, samples=100)
    assert stats.mean.shape == (32,)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ckpt", "mapping.pt", "synthesis.pt"]


def test_load_generator_computes_pulse_statistics_once(tiny: dict, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a gaussian fit, load_generator computes PULSE's 1e6-sample statistics and caches them."""
    path = _copy_tiny(tiny, tmp_path / "ckpt")
    cache = tmp_path / "cache"
    G = pulse_cli.load_generator(path, cache_dir=cache)
    key = hashlib.sha256(path.with_name("mapping.pt").read_bytes()).hexdigest()
    assert [e.name for e in (cache / "latent-stats").iterdir()] == [f"{key}.pt"]
    # statistics of 1e6 samples: close to a 20k-sample one-shot estimate
    mean, std = _direct_stats(G.map, 32, 20_000)
    assert (G.latent_stats.mean - mean).abs().max().item() < 0.05 * std.max().item()
    assert torch.allclose(G.latent_stats.std, std, rtol=0.05)

    monkeypatch.setattr(checkpoint_module, "compute_latent_stats",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    G2 = pulse_cli.load_generator(path, cache_dir=cache)
    assert torch.equal(G2.latent_stats.mean, G.latent_stats.mean)
    assert torch.equal(G2.latent_stats.std, G.latent_stats.std)
