"""The fast StyleGAN v1 evaluation computes the reference function: values and gradients."""

from __future__ import annotations

import platform

import pytest
import torch
import torch.nn.functional as F

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


def _gradients(G, reference, dtype):
    ws = reference["synthesis_dlatents"].to(dtype).clone().requires_grad_(True)
    noise = [n.to(dtype).clone().requires_grad_(i < 5) for i, n in enumerate(reference["synthesis_noise"])]
    image = G.synthesize(ws, noise)
    (image * torch.linspace(-1, 1, image.numel(), dtype=dtype).view_as(image)).sum().backward()
    return [ws.grad.double()] + [n.grad.double() for n in noise[:5]]


def test_fast_path_gradients_are_as_accurate_as_the_reference_path(reference):
    """Against a float64 run of the reference: the fast path's float32 gradients must be no less accurate
    than the reference path's own float32 gradients (this network amplifies rounding).

    Relative distance from float64, fast / reference path (latents; noise maps 0-4), measured on an
    AVX-512 CPU with its own kernels and with AVX2 and SSE4.1 ones forced (`make test` runs all three):
    AVX-512 1.5e-7 / 1.6e-6 (1.2e-6-2.1e-6 / 1.6e-5-4.3e-5), AVX2 1.6e-6 / 2.5e-6 (1.6e-5-4.3e-5 /
    3.5e-5-6.8e-5), SSE4.1 1.9e-7 / 2.2e-5 (2.0e-6-3.8e-6 / 3.7e-4-6.9e-4). With one float32 pass per
    channel sum instead of `plane_sums` the fast path was 2-12x worse than the reference on AVX2 and SSE4.1.
    """
    exact = _gradients(generator(reference, fast=False).double(), reference, torch.float64)
    plain = _gradients(generator(reference, fast=False), reference, torch.float32)
    fast = _gradients(generator(reference, fast=True), reference, torch.float32)
    for e, p, f in zip(exact, plain, fast, strict=True):
        reference_error = ((p - e).norm() / e.norm()).item()
        fast_error = ((f - e).norm() / e.norm()).item()
        assert fast_error <= 3 * reference_error + 1e-5, (fast_error, reference_error)


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
    exact = _gradients(generator(reference, fast=False).double(), reference, torch.float64)
    fast = _gradients(generator(reference, fast=True).double(), reference, torch.float64)
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
