"""PULSE's search primitives (downsampler, losses, spherical optimiser, schedules) against the original code's
outputs in pulse_reference_fixture.pt and hand-derived values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from pulse_cli.search.downsample import BicubicDownsample, bicubic_kernel, cubic_weight
from pulse_cli.search.losses import (
    LossTerm,
    geocross_loss,
    l1_loss,
    l2_loss,
    loss_terms,
    mean_squared_error,
    parse_loss,
)
from pulse_cli.search.optim import SphericalOptimizer, lr_multiplier

pytestmark = pytest.mark.numerics  # float results: `make test` runs these with AVX2 and SSE4.1 kernels too


@pytest.fixture(scope="module")
def ref(fixtures_dir: Path) -> dict:
    return torch.load(fixtures_dir / "pulse_reference_fixture.pt", map_location="cpu", weights_only=True)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


# --- bicubic downsampler ---------------------------------------------------------------------------------


def test_reference_covers_the_expected_factors(ref: dict) -> None:
    assert sorted(ref["bicubic_output"]) == [4, 16, 32, 64]


@pytest.mark.parametrize("factor", [4, 16, 32, 64])
def test_bicubic_matches_original(ref: dict, factor: int) -> None:
    x = ref["bicubic_input_uint8"].float() / 255
    expected = ref["bicubic_output"][factor]
    out = BicubicDownsample(factor)(x)
    assert out.shape == expected.shape == (1, 3, 1024 // factor, 1024 // factor)
    assert _max_diff(out, expected) < 1e-5


def test_cubic_kernel_hand_values() -> None:
    # Keys' kernel with a = -0.5: W(0)=1, W(1)=W(2)=0, W(0.5)=0.5625, W(1.5)=-0.0625, 0 beyond 2
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5, -1.5])
    expected = torch.tensor([1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625, -0.0625])
    assert torch.allclose(cubic_weight(x), expected, atol=1e-7)


@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_bicubic_kernel_shape_normalised_symmetric(factor: int) -> None:
    k = bicubic_kernel(factor)
    assert k.shape == (4 * factor,)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(k, k.flip(0), atol=1e-7)


def test_bicubic_kernel_factor_2_taps() -> None:
    # positions (i - 4 + 0.5) / 2 = +-0.25, +-0.75, +-1.25, +-1.75; weights normalised by their sum (= 2)
    def w(t: float) -> float:
        t = abs(t)
        return 1.5 * t**3 - 2.5 * t**2 + 1 if t <= 1 else -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2

    raw = [w((i - 4 + 0.5) / 2) for i in range(8)]
    expected = torch.tensor([r / sum(raw) for r in raw])
    assert torch.allclose(bicubic_kernel(2), expected, atol=1e-7)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_bicubic_keeps_constant_images_and_shapes(factor: int) -> None:
    x = torch.full((2, 3, 32, 32), 0.3)
    out = BicubicDownsample(factor)(x)
    assert out.shape == (2, 3, 32 // factor, 32 // factor)
    assert torch.allclose(out, torch.full_like(out, 0.3), atol=1e-6)


def test_bicubic_is_per_image_and_per_channel() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32)
    down = BicubicDownsample(4)
    batch = down(x)
    for b in range(3):
        assert _max_diff(down(x[b:b + 1])[0], batch[b]) < 1e-6
    # changing one channel leaves the other channels' outputs alone
    y = x.clone()
    y[:, 1] = 0
    assert torch.equal(down(y)[:, 0], batch[:, 0]) and torch.equal(down(y)[:, 2], batch[:, 2])


def test_bicubic_factor_one_is_identity_and_bad_factor_rejected() -> None:
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(BicubicDownsample(1)(x), x)
    with pytest.raises(ValueError):
        BicubicDownsample(0)


def test_bicubic_is_differentiable() -> None:
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    BicubicDownsample(4)(x).sum().backward()
    # each of the 4*4*3 outputs is a weighted mean (weights sum to 1, reflect padding folds them back in)
    assert x.grad is not None
    assert x.grad.sum().item() == pytest.approx(16.0 * 3, rel=1e-5)


# --- GEOCROSS --------------------------------------------------------------------------------------------


def test_geocross_matches_original(ref: dict) -> None:
    value = geocross_loss(ref["geocross_latent"])
    assert value.shape == (2,)
    assert value.sum().item() == pytest.approx(ref["geocross_value"].item(), rel=1e-5, abs=1e-5)


def test_geocross_is_per_image(ref: dict) -> None:
    latent = ref["geocross_latent"]
    both = geocross_loss(latent)
    for b in range(2):
        assert geocross_loss(latent[b:b + 1]).item() == pytest.approx(both[b].item(), rel=1e-6)


def test_geocross_hand_values() -> None:
    w_dim = 8
    e = torch.eye(w_dim)
    # two orthogonal vectors of equal norm: geodesic distance pi/2 off the diagonal, ~0 on it;
    # mean over the 2x2 pairs of d^2 * w_dim, over 8
    ws = torch.stack([3 * e[0], 3 * e[1]]).unsqueeze(0)
    expected = (2 * (math.pi / 2) ** 2 / 4) * w_dim / 8
    assert geocross_loss(ws).item() == pytest.approx(expected, rel=1e-4)
    # identical vectors: ~0 (only the 1e-9 inside the square root)
    same = torch.stack([e[0], e[0], e[0]]).unsqueeze(0)
    assert geocross_loss(same).item() < 1e-6
    # antipodal vectors: distance pi
    opposite = torch.stack([e[0], -e[0]]).unsqueeze(0)
    assert geocross_loss(opposite).item() == pytest.approx((2 * math.pi**2 / 4) * w_dim / 8, rel=1e-4)
    # scale does not matter (it is an angle)
    assert geocross_loss(ws * 7).item() == pytest.approx(geocross_loss(ws).item(), rel=1e-5)


def test_geocross_single_latent_is_zero() -> None:
    assert torch.equal(geocross_loss(torch.randn(3, 1, 16)), torch.zeros(3))


# --- pixel losses and the loss string ---------------------------------------------------------------------


def test_mse_l2_l1_by_hand() -> None:
    target = torch.zeros(2, 3, 2, 2)
    generated = torch.zeros(2, 3, 2, 2)
    generated[0] = 0.1  # mse 0.01, mean abs 0.1
    generated[1, 0, 0, 0] = 1.2  # mse 1.44/12 = 0.12, mean abs 0.1
    assert torch.allclose(mean_squared_error(generated, target), torch.tensor([0.01, 0.12]), atol=1e-7)
    assert torch.allclose(l2_loss(generated, target, eps=0.05), torch.tensor([0.05, 0.12]), atol=1e-7)
    assert torch.allclose(l1_loss(generated, target, eps=0.0), torch.tensor([1.0, 1.0]), atol=1e-6)
    # PULSE clamps the mean absolute error at eps, then multiplies by 10
    assert torch.allclose(l1_loss(generated, target, eps=2.0), torch.tensor([20.0, 20.0]))


def test_parse_loss_valid() -> None:
    assert parse_loss("100*L2+0.05*GEOCROSS") == (LossTerm(100.0, "L2"), LossTerm(0.05, "GEOCROSS"))
    assert parse_loss(" 1 * L1 ") == (LossTerm(1.0, "L1"),)
    assert parse_loss("1e2*L2") == (LossTerm(100.0, "L2"),)


@pytest.mark.parametrize("spec", ["100*L3", "L2", "1e*L2", "0.05*GEOCROSS", "", "100*l2", "100*L2+", "*L2"])
def test_parse_loss_rejects(spec: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_loss(spec)
    assert "\n" not in str(info.value) and str(info.value)


def test_loss_terms_weights_and_sums() -> None:
    torch.manual_seed(0)
    ws = torch.randn(2, 4, 8)
    target = torch.rand(2, 3, 4, 4)
    generated = torch.rand(2, 3, 4, 4)
    total, values = loss_terms(parse_loss("100*L2+0.05*GEOCROSS+2*L1"), ws=ws, generated_lr=generated,
                               target=target, eps=0.0)
    assert set(values) == {"L2", "GEOCROSS", "L1"}
    mse = (generated - target).pow(2).mean((1, 2, 3))
    l1 = 10 * (generated - target).abs().mean((1, 2, 3))
    assert torch.allclose(values["L2"], mse)
    assert torch.allclose(values["L1"], l1)
    assert torch.allclose(values["GEOCROSS"], geocross_loss(ws))
    assert torch.allclose(total, 100 * mse + 0.05 * geocross_loss(ws) + 2 * l1, rtol=1e-6)
    # a repeated term counts twice
    total2, _ = loss_terms(parse_loss("1*L2+2*L2"), ws=ws, generated_lr=generated, target=target, eps=0.0)
    assert torch.allclose(total2, 3 * mse)


# --- spherical optimiser ---------------------------------------------------------------------------------


def test_spherical_adam_two_steps_match_original(ref: dict) -> None:
    p = ref["sphere_p0"].clone().requires_grad_(True)
    opt = SphericalOptimizer("adam", [p], lr=ref["sphere_lr"])
    p.grad = ref["sphere_grad1"].clone()
    opt.step()
    assert _max_diff(p.detach(), ref["sphere_p1"]) < 1e-5
    p.grad = ref["sphere_grad2"].clone()
    opt.step()
    assert _max_diff(p.detach(), ref["sphere_p2"]) < 1e-5


@pytest.mark.parametrize("name", ["adam", "sgd", "sgdm", "adamax"])
def test_spherical_optimizers_keep_each_vector_on_its_sphere(name: str) -> None:
    torch.manual_seed(0)
    latent = (torch.randn(2, 5, 16) * torch.rand(2, 5, 1) * 3).requires_grad_(True)
    noise = torch.randn(1, 1, 8, 8).requires_grad_(True)
    radii = latent.detach().norm(dim=-1)
    noise_radius = noise.detach().norm()
    opt = SphericalOptimizer(name, [latent, noise], lr=0.5)
    for _ in range(3):
        (latent.sin().sum() + noise.cos().sum()).backward()
        opt.step()
        opt.zero_grad()
        assert latent.grad is None and noise.grad is None
    assert not torch.equal(latent.detach().norm(dim=-1), torch.zeros_like(radii))
    assert torch.allclose(latent.detach().norm(dim=-1), radii, rtol=1e-5)
    assert noise.detach().norm().item() == pytest.approx(noise_radius.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["adam", "sgd", "sgdm", "adamax"])
def test_spherical_steps_are_torch_optims_own_bit_for_bit(name: str) -> None:
    # SphericalOptimizer calls the code under torch.optim's compile marks (so torch._dynamo never loads): the
    # same parameters stepped through torch.optim's public, marked methods and put back on their spheres here
    # must come out bit for bit the same, with rate groups, betas and a free parameter as robust uses them.
    torch.manual_seed(1)
    start = [torch.randn(2, 5, 16), torch.randn(1, 1, 8, 8), torch.randn(3, 4)]
    ours = [t.clone().requires_grad_(True) for t in start]
    theirs = [t.clone().requires_grad_(True) for t in start]
    betas = {"betas": (0.8, 0.8)} if name in ("adam", "adamax") else {}
    opt = SphericalOptimizer(name, ours[:2], lr=0.1, lr_scales=[1.0, 0.5], free=[(ours[2], 0.5)], **betas)
    kwargs = {"momentum": 0.9} if name == "sgdm" else betas
    torch_name = {"sgdm": "SGD", "adam": "Adam", "sgd": "SGD", "adamax": "Adamax"}[name]
    reference = getattr(torch.optim, torch_name)([{"params": [theirs[0]], "lr": 0.3},
                                                   {"params": [theirs[1], theirs[2]], "lr": 0.15}], lr=1.0, **kwargs)
    radii = [(t.pow(2).sum(tuple(range(2, t.ndim)), keepdim=True) + 1e-9).sqrt() for t in start[:2]]
    opt.set_lr(0.3)
    for _ in range(4):
        for params in (ours, theirs):
            (params[0].sin().sum() + params[1].cos().sum() + (params[2] ** 3).sum()).backward()
        opt.step()
        opt.zero_grad()
        reference.step()
        reference.zero_grad(set_to_none=True)
        with torch.no_grad():
            for param, radius in zip(theirs[:2], radii, strict=True):
                param.div_((param.pow(2).sum(tuple(range(2, param.ndim)), keepdim=True) + 1e-9).sqrt())
                param.mul_(radius)
        assert all(p.grad is None for p in ours)
    assert not torch.equal(ours[0], start[0])
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a.detach(), b.detach())


def test_unknown_optimizer_rejected() -> None:
    with pytest.raises(ValueError, match="optimizer"):
        SphericalOptimizer("lbfgs", [torch.zeros(1, 1, 2, requires_grad=True)], lr=0.1)


# --- learning-rate schedules ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["linear1cycle", "linear1cycledrop"])
def test_schedules_match_original(ref: dict, name: str) -> None:
    steps = ref["schedule_steps"]
    expected = ref["schedule_multipliers"][name]
    assert expected.shape == (steps + 1,)
    got = torch.tensor([lr_multiplier(name, s, steps) for s in range(steps + 1)], dtype=torch.float64)
    assert _max_diff(got, expected.double()) < 1e-9


def test_schedule_hand_values() -> None:
    assert lr_multiplier("linear1cycle", 0, 100) == pytest.approx(0.1)
    assert lr_multiplier("linear1cycle", 50, 100) == pytest.approx(1.0)
    assert lr_multiplier("linear1cycle", 100, 100) == pytest.approx(0.1)
    assert lr_multiplier("linear1cycledrop", 0, 100) == pytest.approx(0.1)
    assert lr_multiplier("linear1cycledrop", 45, 100) == pytest.approx(1.0)
    assert lr_multiplier("linear1cycledrop", 90, 100) == pytest.approx(0.1)
    assert lr_multiplier("linear1cycledrop", 100, 100) == pytest.approx(0.001)


def test_fixed_schedule_is_one() -> None:
    assert all(lr_multiplier("fixed", s, 100) == 1 for s in range(101))


def test_unknown_schedule_rejected() -> None:
    with pytest.raises(ValueError, match="schedule"):
        lr_multiplier("cosine", 0, 100)
