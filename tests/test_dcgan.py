"""The `dcgan` family: recognised by content, read as data, converted, searched on its Gaussian z, and the
options that cannot apply to it refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import dcgan_reference, dcgan_state_dict, read_records, save_tensor_file
from PIL import Image

from pulse_cli.checkpoints import safetensors_file as st
from pulse_cli.checkpoints.detect import choose_in_folder, sniff
from pulse_cli.checkpoints.errors import CheckpointError
from pulse_cli.checkpoints.loading import convert_checkpoint, latent_kind_of, load_generator, load_networks
from pulse_cli.cli import app
from pulse_cli.search.config import SearchConfig
from pulse_cli.search.downsample import BicubicDownsample
from pulse_cli.search.pulse import SearchPool, pulse_search

pytestmark = pytest.mark.numerics  # float results: `make test` runs these with AVX2 and SSE4.1 kernels too

NZ = 8


@pytest.fixture(scope="module")
def state_dict() -> dict[str, torch.Tensor]:
    return dcgan_state_dict(nz=NZ)


@pytest.fixture
def training_checkpoint(tmp_path, state_dict) -> Path:
    """As the tutorial's training code saves it: {"netG_state_dict": ...}, tensors tagged cuda:0, a .tar name."""
    return save_tensor_file({"netG_state_dict": state_dict}, tmp_path / "weights.tar", device_tag="cuda:0")


def test_training_checkpoint_is_recognised_by_content_and_loads_on_the_cpu(training_checkpoint, state_dict):
    guess = sniff(training_checkpoint)
    assert (guess.format, guess.family) == ("dcgan-torch", "dcgan")
    assert choose_in_folder(training_checkpoint.parent) is None  # .tar is no checkpoint suffix ...
    assert latent_kind_of(training_checkpoint) == "gaussian"  # ... but named, it is read by content
    G = load_generator(training_checkpoint)
    assert (G.family, G.resolution, G.num_ws, G.w_dim, G.noise_shapes(1)) == ("dcgan", 64, 1, NZ, [])
    assert G.device.type == "cpu" and not any(p.requires_grad for p in G.parameters())
    z = torch.randn(3, NZ, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        image = G.synthesize(z[:, None], [])
    torch.testing.assert_close(image, dcgan_reference(state_dict, z), rtol=1e-5, atol=1e-5)
    G.train()  # batch norm stays on its running statistics: one image's result never depends on the batch
    with torch.no_grad():
        torch.testing.assert_close(G.synthesize(z[:1, None], []), image[:1], rtol=1e-5, atol=1e-5)


def test_bare_state_dict_is_recognised_too(tmp_path, state_dict):
    path = save_tensor_file(state_dict, tmp_path / "netG.pt")
    assert sniff(path).family == "dcgan" and choose_in_folder(tmp_path) == path
    assert load_networks(path).format == "dcgan-torch"


def test_wrong_layouts_are_one_line_errors(tmp_path, state_dict):
    missing = {k: v for k, v in state_dict.items() if k != "main.4.running_var"}
    path = save_tensor_file({"netG_state_dict": missing}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match=r"a\.pt: .*main\.4\.running_var") as info:
        load_networks(path)
    assert "\n" not in str(info.value)
    gray = dict(state_dict, **{"main.12.weight": torch.zeros(4, 1, 4, 4)})
    with pytest.raises(CheckpointError, match="not a 64x64 RGB DCGAN"):
        load_networks(save_tensor_file(gray, tmp_path / "b.pt"))


def test_code_in_the_file_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    torch.save({"netG_state_dict": Payload()}, path)
    with pytest.raises(CheckpointError, match="refused as unsafe"):
        load_networks(path)


def test_conversion_keeps_the_network_and_adds_licence_metadata(tmp_path, training_checkpoint):
    out = convert_checkpoint(training_checkpoint, tmp_path / "dcgan.safetensors",
                             metadata={"licence": "MIT", "training_data": "DigiFace-1M"})
    header = st.read_header(out)
    meta = st.header_metadata(header)
    assert (meta["family"], meta["licence"], meta["training_data"], meta["source_format"]) == \
        ("dcgan", "MIT", "DigiFace-1M", "dcgan-torch")
    assert st.STATS_MEAN not in header  # z is standard normal: no statistics to store
    assert sniff(out).family == "dcgan" and latent_kind_of(tmp_path) == "gaussian"
    z = torch.randn(2, 1, NZ, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(load_generator(out).synthesize(z, []),
                                   load_generator(training_checkpoint).synthesize(z, []), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="takes no --gaussian-fit"):
        load_generator(out, gaussian_fit=training_checkpoint)


def test_search_keeps_z_on_its_sphere_and_converges_on_a_target_it_made(training_checkpoint):
    G = load_generator(training_checkpoint)
    with torch.no_grad():
        z = torch.randn(2, 1, NZ, generator=torch.Generator().manual_seed(5))
        z = z * (NZ ** 0.5 / z.norm(dim=-1, keepdim=True))
        targets = BicubicDownsample(8)(((G.synthesize(z, []) + 1) / 2).clamp(0, 1))
    for mode in ("pulse", "robust"):
        config = SearchConfig(steps=100, eps=1e-3, mode=mode).for_latent("gaussian")
        assert config.loss == "100*L2"
        results = pulse_search(G, targets, seeds=[0, 1], config=config)
        for result, target in zip(results, targets, strict=True):
            assert result.converged and result.best_l2 <= 1e-3, (mode, result.best_l2)
            assert result.noise == [] and result.ws.shape == (1, NZ)
            if mode == "pulse":  # on the sphere of radius sqrt(nz)
                assert abs(result.ws.norm().item() - NZ ** 0.5) < 1e-4
            else:  # robust's radius stays where that of N(0, I) draws lies: sqrt(nz) +- 3.09 / sqrt(2) std
                half = 3.09 / (2 * NZ) ** 0.5
                assert NZ ** 0.5 * (1 - half) - 1e-4 <= result.ws.norm().item() <= NZ ** 0.5 * (1 + half) + 1e-4
            downscaled = BicubicDownsample(8)(result.image[None])[0]
            assert (downscaled - target).pow(2).mean().item() <= 1e-3 + 1e-6


def test_search_without_options_uses_the_defaults_that_apply(training_checkpoint):
    """A notebook's `pulse_search(G, targets, seeds=...)` on a DCGAN: PULSE's loss without GEOCROSS, as the
    Engine and the CLI do; GEOCROSS named explicitly is still refused."""
    G = load_generator(training_checkpoint)
    targets = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    (result,) = pulse_search(G, targets, seeds=[0])
    assert result.steps_run == SearchConfig().steps
    assert set(result.history[-1].losses) == {"L2"}  # PULSE's 100*L2+0.05*GEOCROSS, less GEOCROSS
    assert SearchPool(G).config.loss == "100*L2"
    with pytest.raises(ValueError, match="GEOCROSS has no meaning"):
        pulse_search(G, targets, seeds=[0], config=SearchConfig())


def test_options_without_meaning_for_a_gaussian_latent_are_refused():
    with pytest.raises(ValueError, match="GEOCROSS has no meaning"):
        SearchConfig(loss="100*L2+0.1*GEOCROSS").for_latent("gaussian")
    with pytest.raises(ValueError, match="GEOCROSS has no meaning"):  # the default loss, named explicitly
        SearchConfig().for_latent("gaussian", given={"loss"})
    with pytest.raises(ValueError, match="--noise-type has no meaning"):
        SearchConfig(noise_type="zero").for_latent("gaussian")
    with pytest.raises(ValueError, match="--bad-noise-layers has no meaning"):
        SearchConfig().for_latent("gaussian", given={"bad_noise_layers"})
    assert SearchConfig(loss="10*L1").for_latent("gaussian").loss == "10*L1"
    assert SearchConfig().for_latent("w+") == SearchConfig()


@pytest.fixture
def crops(tmp_path, training_checkpoint) -> Path:
    """Two 8x8 crops of faces the generator made."""
    G = load_generator(training_checkpoint)
    folder = tmp_path / "crops"
    folder.mkdir()
    with torch.no_grad():
        z = torch.randn(2, 1, NZ, generator=torch.Generator().manual_seed(9))
        small = BicubicDownsample(8)(((G.synthesize(z, []) + 1) / 2).clamp(0, 1))
    for k, image in enumerate(small):
        array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(array).save(folder / f"{k}.png")
    return folder


@pytest.mark.parametrize("args, message", [
    (["--loss", "100*L2+0.05*GEOCROSS"], "GEOCROSS has no meaning"),
    (["--noise-type", "trainable"], "--noise-type has no meaning"),
    (["--trainable-noise-layers", "2"], "--trainable-noise-layers has no meaning"),
    (["--tile-latent"], "--tile-latent has no meaning"),
])
def test_cli_usage_errors(runner, tmp_path, training_checkpoint, crops, args, message):
    result = runner.invoke(app, ["upsample", str(crops), str(tmp_path / "out"), "--checkpoint",
                                 str(training_checkpoint), "--device", "cpu", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and result.stderr.count("\n") == 1 and result.stdout == ""


@pytest.mark.parametrize("search", ["pulse", "robust"])
def test_cli_runs_with_the_default_options(runner, tmp_path, training_checkpoint, crops, search):
    out = tmp_path / "out"
    result = runner.invoke(app, ["upsample", str(crops), str(out), "--checkpoint", str(training_checkpoint),
                                 "--device", "cpu", "--steps", "20", "--search", search, "--json", "--quiet",
                                 "--save-latents"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"] == 2
    records = read_records(out)
    assert len(records) == 2
    log = json.loads((out / "logs" / "0.png.jsonl").read_text().splitlines()[0])
    assert log["search"]["loss"] == "100*L2" and log["generator"]["family"] == "dcgan"
    assert Image.open(out / "0.png.png").size == (64, 64)
    # the saved z re-renders the result bit for bit (pulse render builds its engine with the defaults)
    again = runner.invoke(app, ["render", str(out / "0.png.latents.safetensors"), str(tmp_path / "again.png"),
                                "--device", "cpu"])
    assert again.exit_code == 0, again.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")), np.asarray(Image.open(out / "0.png.png")))
    # both PNGs name the generator that made them: a DCGAN, not a StyleGAN
    for png in (out / "0.png.png", tmp_path / "again.png"):
        description = Image.open(png).text["Description"]
        assert "in a DCGAN generator" in description and "StyleGAN" not in description


def test_engine_defaults_fit_the_generator(training_checkpoint):
    from pulse_cli.engine import Engine

    engine = Engine.load(training_checkpoint, device="cpu")
    assert engine.config.loss == "100*L2" and engine.config == SearchConfig().for_latent("gaussian")
    with pytest.raises(ValueError, match="GEOCROSS has no meaning"):
        Engine(engine.generator, config=SearchConfig())


def test_demo_crops_are_the_generators_faces_downscaled(tmp_path, training_checkpoint):
    """examples/face_crops.py (make demo): seeded faces, and 8x8 crops that are those faces downscaled."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    try:
        import face_crops
    finally:
        sys.path.pop(0)
    face_crops.main([str(training_checkpoint), str(tmp_path / "demo"), "--seeds", "3-4", "--size", "8"])
    G = load_generator(training_checkpoint)
    for seed in (3, 4):
        truth = np.asarray(Image.open(tmp_path / "demo" / "true-faces" / f"face-{seed}.png"), dtype=np.float32)
        crop = np.asarray(Image.open(tmp_path / "demo" / "crops" / f"face-{seed}.png"), dtype=np.float32)
        assert truth.shape == (64, 64, 3) and crop.shape == (8, 8, 3)
        z = torch.randn(NZ, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            face = ((G.synthesize(z[None, None], []) + 1) / 2).clamp(0, 1)
        assert np.abs(face[0].permute(1, 2, 0).numpy() * 255 - truth).max() <= 0.5 + 1e-3
        small = BicubicDownsample(8)(face).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255
        assert np.abs(small - crop).max() <= 0.5 + 1e-3
