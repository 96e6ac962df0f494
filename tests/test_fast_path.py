"""The fast StyleGAN v1 evaluation computes the reference function: values and gradients."""

from __future__ import annotations

import platform

import pytest
import torch
import torch.nn.functional as F
from slopes import impose_slopes, nudged, record_slopes, relative_error

from pulse_cli.device import configure_cpu_allocator
from pulse_cli.networks.stylegan1 import StyleGAN1Generator
from pulse_cli.networks.stylegan1_fast import FusedEpilogue, channel_stats

pytestmark = pytest.mark.numerics  # float results: `make test` runs these with AVX2 and SSE4.1 kernels too


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return torch.load(fixtures_dir / "pulse_reference_fixture.pt", map_location="cpu", weights_only=True)


def generator(reference, fast: bool) -> StyleGAN1Generator:
    G = StyleGAN1Generator.from_state_dicts(reference["synthesis_state_dict"], reference["mapping_state_dict"])
    return G.use_fast_path(fast)


def test_fast_path_matches_the_original_implementation(reference):
    G = generator(reference, fast=True)
    assert G.synthesis_path == "fast"
    with torch.no_grad():
        image = G.synthesize(reference["synthesis_dlatents"], reference["synthesis_noise"])
    # Values computed by the original PULSE code (fixtures README); the fixture's 256x256 output spans [-6, 6].
    assert (image - reference["synthesis_image"]).abs().max() < 1e-4


def _inputs(reference, dtype=torch.float32, nudge: tuple[int, int | None] = (0, None)):
    """The fixture's latents and noise (optionally nudged by ulps, see `slopes.nudged`), as leaves."""
    ulps, seed = nudge
    ws, noise = reference["synthesis_dlatents"], list(reference["synthesis_noise"])
    if ulps:
        ws = nudged(ws, ulps, seed)
        noise = [nudged(n, ulps, None if seed is None else seed + 1 + i) for i, n in enumerate(noise)]
    return ws.to(dtype), [n.to(dtype) for n in noise]


def _gradients(G, inputs):
    """Gradients of a fixed linear function of the image: latents, then noise maps 0-4, in float64."""
    ws, noise = inputs
    ws = ws.clone().requires_grad_(True)
    noise = [n.clone().requires_grad_(i < 5) for i, n in enumerate(noise)]
    image = G.synthesize(ws, noise)
    (image * torch.linspace(-1, 1, image.numel(), dtype=image.dtype).view_as(image)).sum().backward()
    return [ws.grad.double()] + [n.grad.double() for n in noise[:5]]


# Inputs as recorded, and moved by one ulp (all up, all down, each at random): each moves every
# pre-activation by about its own rounding error, so a bound that holds for one kink state only fails for
# one of them on any CPU (the former bound, fast <= 3 x reference + 1e-5 against plain float64, fails on
# this project's AVX-512 AMD EPYC with its own kernels for the downward nudge, and unnudged with AVX2 kernels).
NUDGES = [pytest.param((0, None), id="as-recorded"), pytest.param((1, None), id="up-1ulp"),
          pytest.param((-1, None), id="down-1ulp"), pytest.param((1, 0), id="random-1ulp")]
# Rounding level for this 256-px network in float32, against float64 with the same slopes, latents and noise
# maps 0-4. Measured on an AMD EPYC with AVX-512, with its own, AVX2 and SSE4.1 kernels, 1 and 2 threads,
# seven nudges: latents 1.5e-7-2.6e-7, noise maps 1.1e-6-4.1e-6, both paths. Against plain float64 (which
# decides its own slopes) the same runs are 1.6e-7 to 9e-5 (latents) and 1.1e-6 to 2e-3 (noise maps), by
# kink state alone (issue 26).
ROUNDING_LEVEL = {"latents": 1e-6, "noise": 1e-5}


@pytest.mark.parametrize("nudge", NUDGES)
def test_fast_path_gradients_are_as_accurate_as_the_reference_path(reference, nudge):
    """Each path's float32 gradients against float64 taking that run's own LeakyReLU slopes (its exact
    derivative; see tests/slopes.py): both at float32 rounding level, under the same bound. (The fast path
    is 0.8-2.2x the reference path's error, tensor by tensor, in the runs measured: rounding noise.)"""
    exact_G = generator(reference, fast=False).double()
    for path in ("fast", "reference"):
        with record_slopes() as slopes:
            got = _gradients(generator(reference, fast=path == "fast"), _inputs(reference, torch.float32, nudge))
        with impose_slopes(slopes.masks) as imposed:
            exact = _gradients(exact_G, _inputs(reference, torch.float64, nudge))
        assert imposed.used == len(slopes.masks) == 14  # every LeakyReLU of this 7-block network
        errors = [relative_error(g, e) for g, e in zip(got, exact, strict=True)]
        assert errors[0] < ROUNDING_LEVEL["latents"], (path, errors)
        assert max(errors[1:]) < ROUNDING_LEVEL["noise"], (path, errors)


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_epilogue_forward_and_backward_equal_the_plain_ops(channels_last):
    rng = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 8, 32, 32, generator=rng) * 3 + 5)  # a large mean: the variance must not cancel
    noise = torch.randn(2, 1, 32, 32, generator=rng)
    noise_weight = torch.randn(8, generator=rng)
    scale, shift = torch.randn(2, 8, generator=rng) + 1, torch.randn(2, 8, generator=rng)
    upstream = torch.randn(2, 8, 32, 32, generator=rng)

    def run(fused: bool):
        xs = x.clone().contiguous(memory_format=torch.channels_last if fused and channels_last
                                  else torch.contiguous_format).requires_grad_(True)
        ns, sc, sh = noise.clone().requires_grad_(True), scale.clone().requires_grad_(True), \
            shift.clone().requires_grad_(True)
        if fused:
            out = FusedEpilogue.apply(xs, noise_weight, ns, sc, sh)
        else:  # the original op sequence, on NCHW tensors
            y = F.leaky_relu(xs + noise_weight.view(1, -1, 1, 1) * ns, 0.2)
            out = F.instance_norm(y, eps=1e-5) * sc[:, :, None, None] + sh[:, :, None, None]
        (out * upstream).sum().backward()
        return out.detach(), xs.grad, ns.grad, sc.grad, sh.grad

    for ref, fused in zip(run(False), run(True), strict=True):
        assert (fused - ref).abs().max() <= 1e-4 * max(1.0, ref.abs().max().item())


def test_channel_stats_are_exact_for_offset_data():
    rng = torch.Generator().manual_seed(1)
    y = torch.randn(1, 4, 64, 64, generator=rng) * 0.01 + 100.0  # E[y^2] - E[y]^2 would lose everything
    mean, var = channel_stats(y)
    expected_var, expected_mean = torch.var_mean(y.double(), dim=(2, 3), keepdim=True, correction=0)
    assert torch.allclose(mean.double(), expected_mean, rtol=0, atol=1e-5)
    assert torch.allclose(var.double(), expected_var, rtol=1e-3, atol=0)


def test_the_fast_path_can_be_switched_off(reference):
    G = generator(reference, fast=True)
    ws, noise = reference["synthesis_dlatents"], reference["synthesis_noise"]
    with torch.no_grad():
        first = G.synthesize(ws, noise)
        G.use_fast_path(False)
        assert G.synthesis_path == "reference"
        assert (G.synthesize(ws, noise) - first).abs().max() < 1e-4


def test_the_fast_path_follows_the_generator_to_float64_and_back(reference):
    """After G.double() the fast path computes in float64 (it is rebuilt from the float64 weights) and
    equals the float64 reference to rounding; after .float() it is float32 again."""
    ws, noise = reference["synthesis_dlatents"], reference["synthesis_noise"]
    ws64, noise64 = ws.double(), [n.double() for n in noise]
    G = generator(reference, fast=True)
    with torch.no_grad():
        fast32 = G.synthesize(ws, noise)  # builds (and caches) the float32 plan first
        G.double()
        fast64 = G.synthesize(ws64, noise64)
        exact = G.use_fast_path(False).synthesize(ws64, noise64)
        assert fast64.dtype == exact.dtype == torch.float64
        assert (fast64 - exact).abs().max() < 1e-10  # measured: ~8e-14 on outputs spanning [-6, 6]
        G.use_fast_path(True).float()
        again32 = G.synthesize(ws, noise)
    assert again32.dtype == torch.float32
    assert torch.equal(again32, fast32)
    assert (again32.double() - exact).abs().max() < 1e-4


def test_float64_fast_path_gradients_equal_the_float64_reference(reference):
    inputs = _inputs(reference, torch.float64)
    exact = _gradients(generator(reference, fast=False).double(), inputs)
    fast = _gradients(generator(reference, fast=True).double(), inputs)
    for e, f in zip(exact, fast, strict=True):
        assert ((f - e).norm() / e.norm()).item() < 1e-9


def test_the_fast_path_is_rebuilt_when_weights_change_in_place(reference):
    G = generator(reference, fast=True)
    ws, noise = reference["synthesis_dlatents"], reference["synthesis_noise"]
    with torch.no_grad():
        before = G.synthesize(ws, noise)
        G.synthesis.torgb.bias.add_(1.0)
        after = G.synthesize(ws, noise)
    assert torch.allclose(after, before + 1.0, atol=1e-5)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_cpu_allocator_setting_is_accepted_by_glibc():
    assert configure_cpu_allocator() is True


def test_the_fast_path_does_not_import_the_reference_modules():
    """Dependencies point one way: stylegan1 -> stylegan1_fast -> stylegan1_ops (no import circle)."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, pulse_cli.networks.stylegan1_fast; "
            "assert 'pulse_cli.networks.stylegan1' not in sys.modules, 'stylegan1_fast imports stylegan1'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
