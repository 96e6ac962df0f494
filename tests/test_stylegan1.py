"""StyleGAN v1 in PULSE's layout against the original PULSE code's outputs (pulse_reference_fixture.pt)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import ffhq_channels, mapping_shapes, random_state_dicts, synthesis_shapes

from pulse_cli.networks.generator import Generator
from pulse_cli.networks.stylegan1 import (
    ScaledConv,
    StyleGAN1Generator,
    infer_mapping_dims,
    infer_synthesis_channels,
)

pytestmark = pytest.mark.numerics  # float results: `make test` runs these with AVX2 and SSE4.1 kernels too

TOL = 1e-4


@pytest.fixture(scope="module")
def ref(fixtures_dir: Path) -> dict:
    return torch.load(fixtures_dir / "pulse_reference_fixture.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def generator(ref: dict) -> StyleGAN1Generator:
    return StyleGAN1Generator.from_state_dicts(ref["synthesis_state_dict"], ref["mapping_state_dict"])


@pytest.fixture(scope="module")
def manifest(fixtures_dir: Path) -> dict[str, dict[str, list[int]]]:
    return json.loads((fixtures_dir / "pulse_ffhq1024_state_dict_manifest.json").read_text())


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --- parity with the original PULSE code -----------------------------------------------------------------


def test_synthesis_matches_original(generator: StyleGAN1Generator, ref: dict) -> None:
    image = generator.synthesize(ref["synthesis_dlatents"], list(ref["synthesis_noise"]))
    assert image.shape == ref["synthesis_image"].shape == (2, 3, 256, 256)
    assert _max_diff(image, ref["synthesis_image"]) < TOL


def test_mapping_matches_original(generator: StyleGAN1Generator, ref: dict) -> None:
    w = generator.map(ref["mapping_z"])
    assert w.shape == ref["mapping_w"].shape == (2, 512)
    assert _max_diff(w, ref["mapping_w"]) < TOL


def test_synthesis_images_are_independent_across_the_batch(generator: StyleGAN1Generator, ref: dict) -> None:
    noise = list(ref["synthesis_noise"])
    for b in range(2):
        alone = generator.synthesize(ref["synthesis_dlatents"][b:b + 1], [n[b:b + 1] for n in noise])
        assert _max_diff(alone[0], ref["synthesis_image"][b]) < TOL


def test_weights_are_frozen_and_eval(generator: StyleGAN1Generator) -> None:
    assert not generator.training
    assert all(not p.requires_grad for p in generator.parameters())


def test_gradients_flow_to_latents_and_noise(generator: StyleGAN1Generator, ref: dict) -> None:
    ws = ref["synthesis_dlatents"][:1].clone().requires_grad_(True)
    noise = [n[:1].clone().requires_grad_(True) for n in ref["synthesis_noise"]]
    generator.synthesize(ws, noise).square().mean().backward()
    assert ws.grad is not None and ws.grad.abs().sum() > 0
    # every layer's latent and noise influences the image
    assert (ws.grad.abs().sum(-1) > 0).all()
    assert all(n.grad is not None and n.grad.abs().sum() > 0 for n in noise)


# --- architecture read off the shapes --------------------------------------------------------------------


def test_architecture_of_reference_network(generator: StyleGAN1Generator, ref: dict) -> None:
    cfg = ref["synthesis_config"]
    assert isinstance(generator, Generator)
    assert generator.family == "stylegan1"
    assert generator.resolution == cfg["resolution"] == 256
    assert generator.num_ws == 14
    assert generator.w_dim == 512
    assert generator.z_dim == 512
    expected = ffhq_channels(256, cfg["fmap_base"], cfg["fmap_max"])
    assert infer_synthesis_channels(ref["synthesis_state_dict"]) == expected
    assert infer_mapping_dims(ref["mapping_state_dict"]) == [512] * 9


def test_noise_shapes_match_reference_noise(generator: StyleGAN1Generator, ref: dict) -> None:
    assert generator.noise_shapes(2) == [tuple(n.shape) for n in ref["synthesis_noise"]]
    assert generator.noise_shapes(5) == [(5, 1, 2 ** (i // 2 + 2), 2 ** (i // 2 + 2)) for i in range(14)]


def test_helper_layout_equals_real_ffhq_manifest(manifest: dict) -> None:
    """The hand-written layout used by the tiny test networks is PULSE's real one."""
    assert synthesis_shapes(ffhq_channels(), 512) == {k: tuple(v) for k, v in manifest["synthesis"].items()}
    assert mapping_shapes([512] * 9) == {k: tuple(v) for k, v in manifest["mapping"].items()}


def test_full_size_manifest_builds_ffhq_1024(manifest: dict) -> None:
    rng = torch.Generator().manual_seed(0)
    synthesis = {k: torch.randn(v, generator=rng) for k, v in manifest["synthesis"].items()}
    mapping = {k: torch.randn(v, generator=rng) for k, v in manifest["mapping"].items()}
    assert len(synthesis) == 100 and len(mapping) == 16
    gen = StyleGAN1Generator.from_state_dicts(synthesis, mapping)
    assert gen.resolution == 1024
    assert gen.num_ws == 18
    assert gen.w_dim == 512 and gen.z_dim == 512
    shapes = gen.noise_shapes(1)
    assert len(shapes) == 18
    assert shapes[0] == shapes[1] == (1, 1, 4, 4)
    assert shapes[-2] == shapes[-1] == (1, 1, 1024, 1024)
    # the loaded tensors are the ones given (strict, unchanged)
    sd = gen.synthesis.state_dict()
    assert set(sd) == set(synthesis)
    assert torch.equal(sd["blocks.1024x1024.conv1.weight"], synthesis["blocks.1024x1024.conv1.weight"])
    assert set(gen.mapping.state_dict()) == set(mapping)


@pytest.mark.parametrize("channels, w_dim, layers", [
    ({4: 16, 8: 16, 16: 8, 32: 8}, 32, 2),
    ({4: 8, 8: 8, 16: 8, 32: 4, 64: 4}, 24, 3),
    ({4: 8}, 16, 1),
])
def test_tiny_architectures_are_inferred(channels: dict[int, int], w_dim: int, layers: int) -> None:
    synthesis, mapping = random_state_dicts(channels, w_dim, layers, z_dim=w_dim + 4)
    gen = StyleGAN1Generator.from_state_dicts(synthesis, mapping)
    res = max(channels)
    assert gen.resolution == res
    assert gen.num_ws == 2 * int(math.log2(res)) - 2
    assert gen.w_dim == w_dim
    assert gen.z_dim == w_dim + 4
    assert infer_synthesis_channels(synthesis) == channels
    batch = 2
    ws = torch.randn(batch, gen.num_ws, w_dim)
    noise = [torch.randn(s) for s in gen.noise_shapes(batch)]
    image = gen.synthesize(ws, noise)
    assert image.shape == (batch, 3, res, res)
    assert torch.isfinite(image).all()
    assert gen.map(torch.randn(3, w_dim + 4)).shape == (3, w_dim)


def test_synthesis_only_generator_has_no_mapping(ref: dict) -> None:
    gen = StyleGAN1Generator.from_state_dicts(ref["synthesis_state_dict"])
    assert gen.mapping is None and gen.z_dim is None
    with pytest.raises(ValueError, match="mapping"):
        gen.map(torch.zeros(1, 512))


# --- layout errors ---------------------------------------------------------------------------------------


def test_missing_block_is_rejected() -> None:
    synthesis, mapping = random_state_dicts()
    broken = {k: v for k, v in synthesis.items() if not k.startswith("blocks.16x16.")}
    with pytest.raises(ValueError, match="double"):
        StyleGAN1Generator.from_state_dicts(broken, mapping)


def test_wrong_shape_is_rejected() -> None:
    synthesis, mapping = random_state_dicts()
    synthesis = dict(synthesis, **{"blocks.8x8.conv1.weight": torch.zeros(16, 16, 1, 1)})
    with pytest.raises(ValueError, match=r"blocks\.8x8\.conv1\.weight"):
        StyleGAN1Generator.from_state_dicts(synthesis, mapping)


def test_unexpected_key_is_rejected() -> None:
    synthesis, mapping = random_state_dicts()
    with pytest.raises(ValueError, match="unexpected"):
        StyleGAN1Generator.from_state_dicts(dict(synthesis, extra=torch.zeros(1)), mapping)


def test_mapping_size_mismatch_is_rejected() -> None:
    synthesis, _ = random_state_dicts(w_dim=32)
    _, mapping = random_state_dicts(w_dim=24)
    with pytest.raises(ValueError, match="does not match"):
        StyleGAN1Generator.from_state_dicts(synthesis, mapping)


def test_not_a_synthesis_state_dict() -> None:
    _, mapping = random_state_dicts()
    with pytest.raises(ValueError, match="blocks.4x4.const"):
        StyleGAN1Generator.from_state_dicts(mapping, mapping)
    with pytest.raises(ValueError, match="dense0"):
        infer_mapping_dims({"foo": torch.zeros(1)})


# --- building blocks -------------------------------------------------------------------------------------


def test_fused_upscale_is_nearest_upscale_then_true_convolution() -> None:
    """StyleGAN's fused form (>= 128 px) is a stride-2 transposed conv with the 3x3 kernel summed over its
    four shifts. A transposed conv is a true convolution, so it equals nearest x2 followed by a
    cross-correlation with the spatially FLIPPED 3x3 kernel (zero padding), everywhere, borders included.
    The unfused form (< 128 px) is nearest x2 followed by a plain cross-correlation."""
    torch.manual_seed(0)
    conv = ScaledConv(4, 5, 3, gain=math.sqrt(2), upscale=True)
    with torch.no_grad():
        conv.weight.normal_()
        conv.bias.normal_()
        conv.intermediate.kernel.copy_(torch.eye(3)[1].outer(torch.eye(3)[1]).view(1, 1, 3, 3))  # identity blur
    weight = conv.weight * (math.sqrt(2) / math.sqrt(4 * 9))

    x = torch.randn(2, 4, 64, 64)  # 64 -> 128: the fused path
    direct = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight.flip(-1, -2), conv.bias,
                      padding=1)
    fused = conv(x)
    assert fused.shape == direct.shape == (2, 5, 128, 128)
    assert _max_diff(fused, direct) < 1e-4

    small = torch.randn(2, 4, 16, 16)  # 16 -> 32: the unfused path
    direct_small = F.conv2d(F.interpolate(small, scale_factor=2, mode="nearest"), weight, conv.bias, padding=1)
    assert _max_diff(conv(small), direct_small) < 1e-5


def test_upscale_conv_applies_the_blur_kernel() -> None:
    conv = ScaledConv(1, 1, 1, gain=1.0, upscale=True)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        k = torch.tensor([1.0, 2.0, 1.0])
        conv.intermediate.kernel.copy_((k[:, None] * k[None, :] / 16).view(1, 1, 3, 3))
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1.0
    out = conv(x)[0, 0]
    # nearest x2 makes a 2x2 block of ones at rows/cols 2..3; [1,2,1]/4 blur in each direction
    row = torch.tensor([0.0, 0.25, 0.75, 0.75, 0.25, 0.0, 0.0, 0.0])
    assert torch.allclose(out, row[:, None] * row[None, :], atol=1e-6)


def test_equalised_learning_rate_is_applied_at_run_time() -> None:
    """A 1x1 torgb-like conv: out = x * w / sqrt(fan_in) + b with raw stored weights."""
    conv = ScaledConv(4, 1, 1, gain=1.0)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(0.5)
    x = torch.ones(1, 4, 2, 2)
    # each output = sum over 4 channels of 1 * 2 * 4**-0.5 + 0.5 = 4 + 0.5
    assert torch.allclose(conv(x), torch.full((1, 1, 2, 2), 4.5))
