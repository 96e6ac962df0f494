"""StyleGAN2 generator against NVIDIA's own outputs (sg2ada_expected.pt) for the rosinality fixture."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from helpers import load_pt

from pulse_cli.checkpoints.rosinality import rosinality_to_nvidia
from pulse_cli.networks.generator import Generator
from pulse_cli.networks.stylegan2 import StyleGAN2Generator, infer_config

pytestmark = pytest.mark.numerics  # float results: `make test` runs these with AVX2 and SSE4.1 kernels too

TOL = 1e-4


@pytest.fixture(scope="module")
def rosinality(fixtures_dir: Path) -> dict:
    return load_pt(fixtures_dir / "rosinality_g_ema.pt")


@pytest.fixture(scope="module")
def expected(fixtures_dir: Path) -> dict:
    return load_pt(fixtures_dir / "sg2ada_expected.pt")


@pytest.fixture(scope="module")
def nvidia_sd(rosinality: dict) -> dict[str, torch.Tensor]:
    return rosinality_to_nvidia(rosinality["g_ema"], rosinality["latent_avg"])


@pytest.fixture(scope="module")
def generator(nvidia_sd: dict[str, torch.Tensor]) -> StyleGAN2Generator:
    return StyleGAN2Generator.from_state_dict(nvidia_sd)


@pytest.fixture(scope="module")
def manifest(fixtures_dir: Path) -> dict[str, list[int]]:
    text = (fixtures_dir / "stylegan2_ffhq1024_state_dict_manifest.json").read_text()
    return json.loads(text)["state_dict"]


def _as_batch(noise: list[torch.Tensor], batch: int) -> list[torch.Tensor]:
    """Fixture noise is [r, r]; the generator takes [B, 1, r, r]."""
    return [n[None, None].expand(batch, 1, -1, -1) for n in noise]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --- architecture --------------------------------------------------------------------------------------


def test_architecture_of_64px_fixture(generator: StyleGAN2Generator, expected: dict) -> None:
    assert isinstance(generator, Generator)
    assert generator.family == "stylegan2"
    assert generator.resolution == 64
    assert generator.num_ws == 10
    assert generator.w_dim == 512
    assert generator.config.channels == {int(k): v for k, v in expected["config"]["channels"].items()}
    assert generator.config.mapping_layers == expected["config"]["mapping_layers"]


def test_noise_shapes_lowest_resolution_first(generator: StyleGAN2Generator, expected: dict) -> None:
    shapes = generator.noise_shapes(3)
    assert len(shapes) == 9  # 2 * log2(64) - 3
    assert shapes == [(3, 1, h, w) for h, w in expected["config"]["noise_shapes"]]


def test_const_noise_is_stored_buffers_in_order(generator: StyleGAN2Generator, expected: dict) -> None:
    noise = generator.const_noise()
    assert [tuple(n.shape) for n in noise] == generator.noise_shapes(1)
    for got, want in zip(noise, expected["noise_const"], strict=True):
        assert torch.equal(got[0, 0], want)
    noise[0].add_(1.0)  # fresh copies: editing them must not touch the buffers
    assert torch.equal(generator.const_noise()[0][0, 0], expected["noise_const"][0])


def test_w_avg_is_latent_avg(generator: StyleGAN2Generator, expected: dict) -> None:
    assert "mapping.w_avg" in dict(generator.named_buffers())
    assert torch.equal(generator.w_avg, expected["w_avg"])


def test_converted_keys_are_nvidia_layout(
    nvidia_sd: dict[str, torch.Tensor], generator: StyleGAN2Generator, manifest: dict[str, list[int]]
) -> None:
    def up_to_64(key: str) -> bool:
        m = re.match(r"synthesis\.b(\d+)\.", key)
        return m is None or int(m.group(1)) <= 64

    assert set(nvidia_sd) == {k for k in manifest if up_to_64(k)}
    assert set(generator.state_dict()) == set(nvidia_sd)
    assert all(t.is_contiguous() for t in nvidia_sd.values())
    assert nvidia_sd["synthesis.b8.conv0.noise_strength"].shape == ()
    assert nvidia_sd["synthesis.b4.torgb.bias"].shape == (3,)


def test_whole_rosinality_checkpoint_is_accepted(rosinality: dict, nvidia_sd: dict) -> None:
    converted = rosinality_to_nvidia(rosinality)
    assert converted.keys() == nvidia_sd.keys()
    assert all(torch.equal(converted[k], nvidia_sd[k]) for k in converted)


# --- numerics against NVIDIA ---------------------------------------------------------------------------


@torch.no_grad()
def test_mapping_matches(generator: StyleGAN2Generator, expected: dict) -> None:
    w = generator.map(expected["z"])
    assert w.shape == (2, 512)
    assert _max_diff(w, expected["ws"][:, 0]) < TOL


@torch.no_grad()
def test_synthesis_with_const_noise_matches(generator: StyleGAN2Generator, expected: dict) -> None:
    img = generator.synthesize(expected["ws"], _as_batch(expected["noise_const"], 2))
    assert img.shape == (2, 3, 64, 64)
    assert _max_diff(img, expected["img"]) < TOL
    assert _max_diff(generator.synthesize(expected["ws"], generator.const_noise(2)), expected["img"]) < TOL


@torch.no_grad()
def test_synthesis_with_custom_noise_matches(generator: StyleGAN2Generator, expected: dict) -> None:
    img = generator.synthesize(expected["ws2"], _as_batch(expected["noise2"], 2))
    assert _max_diff(img, expected["img2"]) < TOL


@torch.no_grad()
def test_synthesis_without_noise_matches(generator: StyleGAN2Generator, expected: dict) -> None:
    noise = [torch.zeros(s) for s in generator.noise_shapes(2)]
    assert _max_diff(generator.synthesize(expected["ws"], noise), expected["img_nonoise"]) < TOL


@torch.no_grad()
def test_truncated_ws_match(generator: StyleGAN2Generator, expected: dict) -> None:
    w = generator.map(expected["z"])
    ws = (generator.w_avg + 0.7 * (w - generator.w_avg))[:, None].expand(-1, generator.num_ws, -1)
    assert _max_diff(ws, expected["ws_trunc"]) < TOL
    img = generator.synthesize(expected["ws_trunc"], generator.const_noise(2))
    assert _max_diff(img, expected["img_trunc"]) < TOL


def test_ws_and_noise_get_gradients(generator: StyleGAN2Generator, expected: dict) -> None:
    ws = expected["ws"][:1].clone().requires_grad_(True)
    noise = [n.requires_grad_(True) for n in generator.const_noise(1)]
    generator.synthesize(ws, noise).square().mean().backward()
    assert ws.grad is not None and torch.isfinite(ws.grad).all() and ws.grad.abs().sum() > 0
    # torgb-only w (last index) and every noise layer must be reached.
    assert ws.grad[0, -1].abs().sum() > 0
    for n in noise:
        assert n.grad is not None and n.grad.abs().sum() > 0
    assert all(p.grad is None for p in generator.parameters())  # weights stay frozen


def test_bad_input_shapes_are_rejected(generator: StyleGAN2Generator, expected: dict) -> None:
    with pytest.raises(ValueError, match="ws must be"):
        generator.synthesize(expected["ws"][:, :9], generator.const_noise(2))
    with pytest.raises(ValueError, match="noise tensors"):
        generator.synthesize(expected["ws"], generator.const_noise(2)[:-1])
    with pytest.raises(ValueError, match=r"noise\[0\]"):
        generator.synthesize(expected["ws"], [torch.zeros(2, 1, 8, 8)] + generator.const_noise(2)[1:])


# --- layout validation ---------------------------------------------------------------------------------


def test_rosinality_dict_without_conversion_is_refused(rosinality: dict) -> None:
    with pytest.raises(ValueError, match="rosinality_to_nvidia"):
        StyleGAN2Generator.from_state_dict(rosinality["g_ema"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.pop("synthesis.b16.conv1.weight"), "b16.conv1.weight"),
        (lambda sd: sd.__setitem__("synthesis.b8.conv0.weight", torch.zeros(64, 64, 5, 5)), "size mismatch"),
        (lambda sd: sd.__setitem__("synthesis.b8.extra", torch.zeros(1)), "Unexpected"),
        (lambda sd: sd.__setitem__("synthesis.b8.skip.weight", torch.zeros(64, 64, 1, 1)), "resnet"),
        (lambda sd: [sd.pop(k) for k in list(sd) if re.match(r"synthesis\.b(4|8|16|32)\.torgb", k)], "orig"),
        (lambda sd: sd.pop("mapping.fc3.weight"), "fc0..fcN"),
        (lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("synthesis.b16.")], "doubling"),
        (lambda sd: sd.__setitem__("mapping.embed.weight", torch.zeros(512, 10)), "conditional"),
    ],
    ids=["missing", "shape", "extra", "resnet", "orig", "mapping-gap", "block-gap", "conditional"],
)
def test_garbled_state_dict_is_refused(nvidia_sd: dict, edit, message: str) -> None:
    sd = dict(nvidia_sd)
    edit(sd)
    with pytest.raises(ValueError, match=message):
        StyleGAN2Generator.from_state_dict(sd)


def test_foreign_state_dicts_are_refused() -> None:
    with pytest.raises(ValueError, match="not a stylegan2-ada-pytorch"):
        StyleGAN2Generator.from_state_dict({"weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="StyleGAN3"):
        StyleGAN2Generator.from_state_dict({"synthesis.L0_36_512.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="tensors"):
        infer_config({"synthesis.b4.const": [1, 2, 3]})


def test_garbled_rosinality_dict_is_refused(rosinality: dict) -> None:
    with pytest.raises(ValueError, match="not a rosinality"):
        rosinality_to_nvidia({"mapping.fc0.weight": torch.zeros(2, 2)})
    broken = dict(rosinality["g_ema"])
    broken.pop("convs.3.conv.weight")
    with pytest.raises(ValueError, match="convs.3.conv.weight"):
        rosinality_to_nvidia(broken)
    broken = dict(rosinality["g_ema"], **{"convs.0.mystery": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected keys"):
        rosinality_to_nvidia(broken)


# --- full-size layout ----------------------------------------------------------------------------------


def test_ffhq_config_f_manifest_builds(manifest: dict[str, list[int]]) -> None:
    torch.manual_seed(0)
    sd = {k: torch.randn(shape) for k, shape in manifest.items()}
    generator = StyleGAN2Generator.from_state_dict(sd)  # build only: a 1024 forward is too slow for tests
    assert generator.resolution == 1024
    assert generator.num_ws == 18
    assert len(generator.noise_shapes(1)) == 17
    assert generator.noise_shapes(1)[0] == (1, 1, 4, 4)
    assert generator.noise_shapes(1)[-1] == (1, 1, 1024, 1024)
    assert generator.config.channels[1024] == 32 and generator.config.channels[4] == 512
    assert torch.equal(generator.synthesis.b1024.conv1.noise_const, sd["synthesis.b1024.conv1.noise_const"])
