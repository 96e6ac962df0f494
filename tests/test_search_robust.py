"""`--search robust`: noise trained and kept white, L2 hinge inside eps, its own learning rate; the rest as PULSE."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import in_float64, random_state_dicts, three_targets, tiny_generator
from PIL import Image
from typer.testing import CliRunner

from pulse_cli import SearchConfig, pulse_search
from pulse_cli.checkpoints.latent_stats import compute_latent_stats
from pulse_cli.checkpoints.rosinality import rosinality_to_nvidia
from pulse_cli.cli import app
from pulse_cli.networks.generator import LatentStats
from pulse_cli.networks.stylegan1 import StyleGAN1Generator
from pulse_cli.networks.stylegan2 import StyleGAN2Generator
from pulse_cli.search.pulse import SearchPool, render
from pulse_cli.search.robust import (
    ROBUST_SCHEDULES,
    RobustOptions,
    lag1_autocorrelation,
    noise_regularisation,
    w_distance,
)

pytestmark = pytest.mark.numerics  # float results: `make test` runs these with AVX2 and SSE4.1 kernels too

ROBUST = SearchConfig(steps=8, mode="robust")


@pytest.fixture(scope="module")
def G() -> StyleGAN1Generator:
    return tiny_generator()


@pytest.fixture(scope="module")
def G64(G: StyleGAN1Generator) -> StyleGAN1Generator:
    return in_float64(G)


@pytest.fixture(scope="module")
def targets() -> torch.Tensor:
    return three_targets()


@pytest.fixture(scope="module")
def robust_batch(G: StyleGAN1Generator, targets: torch.Tensor) -> list:
    return pulse_search(G, targets, seeds=[0, 1, 2], config=ROBUST)


# --- the regulariser and the measures ----------------------------------------------------------------


def _projector_reg(noise: torch.Tensor) -> float:
    """StyleGAN2's projector (run_projector / projector.py), written out for one map [r, r]."""
    n = noise[None, None].double()
    reg = 0.0
    while True:
        reg += (n * torch.roll(n, shifts=1, dims=3)).mean() ** 2
        reg += (n * torch.roll(n, shifts=1, dims=2)).mean() ** 2
        if n.shape[2] <= 8:
            break
        n = F.avg_pool2d(n, kernel_size=2)
    return float(reg)


def test_noise_regularisation_is_the_projectors_per_image() -> None:
    rng = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 1, r, r, generator=rng, dtype=torch.float64) for r in (4, 16, 32)]
    maps[1][1] = maps[1][1].cumsum(-1)  # image 1 has one strongly correlated map
    values = noise_regularisation(maps)
    for b in range(2):
        assert values[b].item() == pytest.approx(sum(_projector_reg(m[b, 0]) for m in maps), rel=1e-12)
    assert values[1] > 10 * values[0]
    # image 0's value does not depend on image 1
    assert noise_regularisation([m[:1] for m in maps])[0].item() == pytest.approx(values[0].item(), rel=1e-12)


@pytest.mark.parametrize("sizes", [(4, 4, 8, 8, 16, 16, 32, 32, 64, 128, 256), (4, 64), (256,), (8,), (12, 4, 48, 16)])
def test_noise_regularisation_equals_one_pyramid_per_map_for_any_sizes(sizes) -> None:
    # the pyramids go down together; gaps in the sizes and sizes off the halving chain must not change sums
    rng = torch.Generator().manual_seed(1)
    maps = [torch.randn(2, 1, r, r, generator=rng, dtype=torch.float64).cumsum(-1) for r in sizes]
    values = noise_regularisation(maps)
    for b in range(2):
        assert values[b].item() == pytest.approx(sum(_projector_reg(m[b, 0]) for m in maps), rel=1e-12)


def test_lag1_autocorrelation_and_w_distance() -> None:
    rng = torch.Generator().manual_seed(0)
    white = torch.randn(1, 64, 64, generator=rng)
    assert abs(lag1_autocorrelation(white)) < 0.05
    assert lag1_autocorrelation(white.cumsum(-1).cumsum(-2)) > 0.5
    assert lag1_autocorrelation(torch.zeros(1, 8, 8)) == 0.0
    stats = LatentStats(torch.full((16,), 0.5), torch.full((16,), 2.0))
    x = torch.randn(4, 16, generator=rng)
    ws = F.leaky_relu(x * stats.std + stats.mean, 0.2)  # PULSE's mapping from search space to W
    expected = x.double().pow(2).mean(-1).sqrt().mean().item()
    assert w_distance(ws, stats) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("options", "match"), [
    (RobustOptions(hinge=0), "hinge"), (RobustOptions(lr_factor=0), "lr factor"),
    (RobustOptions(lr_schedule="linear1cycledrop"), "robust lr schedule"),
    (RobustOptions(max_noise_ratio=0), "noise ratio"), (RobustOptions(noise_lr_factor=0), "noise lr factor"),
])
def test_robust_options_are_checked(options, match) -> None:
    with pytest.raises(ValueError, match=match):
        SearchPool(StyleGAN1Generator.from_state_dicts(*random_state_dicts()), robust=options)


def test_robust_learning_rate_follows_its_factor_and_schedule(G, targets) -> None:
    config = dataclasses.replace(ROBUST, steps=10, lr=0.3)
    # warmup20-linear over 10 steps: 0.1 at step 0, 1 at step 2, down to 0.1 at step 9, then the drop
    expected = [0.1, 0.55, 1.0, 1 - 0.9 / 7, 1 - 1.8 / 7, 1 - 2.7 / 7, 1 - 3.6 / 7, 1 - 4.5 / 7, 1 - 5.4 / 7, 0.1]
    (r,) = pulse_search(G, targets[:1], seeds=[0], config=config,
                        robust=RobustOptions(lr_factor=2.0, lr_schedule="warmup20-linear"))
    assert [h.lr for h in r.history] == pytest.approx([0.6 * m for m in expected], rel=1e-9)
    # "pulse": SearchConfig's own schedule (linear1cycledrop: one cycle over the first 90% of the steps)
    (p,) = pulse_search(G, targets[:1], seeds=[0], config=config,
                        robust=RobustOptions(lr_factor=0.5, lr_schedule="pulse"))
    assert p.history[0].lr == pytest.approx(0.3 * 0.5 * 0.1)
    assert max(h.lr for h in p.history) == pytest.approx(0.3 * 0.5 * (9 * (1 - abs(4 / 9 - 1 / 2) * 2) + 1) / 10)


def test_noise_steps_at_its_own_rate_and_the_latents_do_not_feel_it(G, targets) -> None:
    def first_step(factor: float) -> tuple[torch.Tensor, list[torch.Tensor], float]:
        pool = SearchPool(G, config=ROBUST, robust=RobustOptions(noise_lr_factor=factor))
        pool.add(0, targets[0], 0)
        (_, search), = pool.active
        start = [n.detach().clone() for n in search.noise]
        pool.step()
        moved = [(n.detach() - s).norm().item() for n, s in zip(search.noise, start, strict=True)]
        return search.latent.detach().clone(), moved, search.history[0].lr

    latent1, moved1, lr1 = first_step(1.0)
    latent3, moved3, lr3 = first_step(3.0)
    assert lr1 == lr3  # the logged rate is the latents'
    assert torch.equal(latent1, latent3)  # same first gradient, same latent step
    trained = [i for i, m in enumerate(moved1) if m > 0]
    assert trained
    # Adam's first step is lr * sign(grad) per value; the maps then go back on their spheres, so the
    # distance moved grows with the rate without being exactly 3x.
    assert all(moved3[i] > 1.5 * moved1[i] for i in trained)


def test_robust_schedules_rise_hold_and_decay() -> None:
    hold = ROBUST_SCHEDULES["warmup10-hold70-cosine"]
    # 0.1 -> 1 over the first 10 steps, 1 until step 70, then a cosine to 0.001: half-way (step 85) is
    # 0.001 + 0.999 / 2, and step 99 is 0.001 + 0.999 * (1 - cos(pi / 30)) / 2
    assert [hold(i, 100) for i in (0, 5, 10, 50, 69, 70, 85)] == pytest.approx([0.1, 0.55, 1, 1, 1, 1, 0.5005])
    assert hold(99, 100) == pytest.approx(0.0037362, rel=1e-4)
    cosine = ROBUST_SCHEDULES["warmup10-cosine"]  # no hold: the cosine starts at the peak
    assert [cosine(i, 100) for i in (0, 5, 10, 55)] == pytest.approx([0.1, 0.55, 1, 0.5005])
    assert RobustOptions().lr_schedule == "warmup10-cosine"


def test_max_noise_ratio_trains_only_maps_up_to_that_many_times_the_target(G, targets) -> None:
    config = dataclasses.replace(ROBUST, steps=3)
    pool = SearchPool(G, config=config, robust=RobustOptions(max_noise_ratio=2))
    pool.add(0, targets[0], 0)  # 8x8 target: maps up to 16x16 are trained
    (_, search), = pool.active
    shapes = G.noise_shapes(1)
    assert search.trainable_layers == [i for i, s in enumerate(shapes) if s[-1] <= 16]
    assert len(search.trainable_layers) < len(shapes) - 1  # the option leaves some layers out here
    start = [n.detach().clone() for n in search.noise]
    for _ in range(3):
        pool.step()
    last = len(shapes) - 1
    for i, (before, after) in enumerate(zip(start, search.noise, strict=True)):
        if i in search.trainable_layers:
            assert not torch.equal(before, after)
        else:
            assert torch.equal(before, after)  # fixed: PULSE's random noise (zero for the bad layer)
            assert (after.abs().sum() == 0) == (i == last)


# --- the search --------------------------------------------------------------------------------------


def test_mode_is_checked_and_pulse_is_the_default() -> None:
    assert SearchConfig().mode == "pulse"
    with pytest.raises(ValueError, match="search mode"):
        SearchConfig(mode="fast").validate()
    ROBUST.validate()


def test_every_noise_layer_but_the_zeroed_trains_on_its_sphere_and_stays_centred(G, targets) -> None:
    pool = SearchPool(G, config=ROBUST)
    pool.add(0, targets[0], 0)
    (_, search), = pool.active
    last = len(G.noise_shapes(1)) - 1
    assert search.trainable_layers == list(range(last))  # the last ("bad") layer stays zero
    start = [n.detach().clone() for n in search.noise]
    for _ in range(3):
        pool.step()
    for i, (before, after) in enumerate(zip(start, search.noise, strict=True)):
        if i == last:
            assert not after.requires_grad and after.abs().sum() == 0
            continue
        assert not torch.equal(before, after)  # it was optimised
        assert after.norm().item() == pytest.approx(before.norm().item(), rel=1e-4)  # on its sphere
        assert abs(after.mean().item()) < 1e-5  # renormalised: mean 0


def test_log_has_every_term_and_the_hinge(robust_batch) -> None:
    options = RobustOptions()
    for r in robust_batch:
        for h in r.history:
            assert set(h.losses) == {"L2", "GEOCROSS", "NOISE"}
            assert h.losses["L2"] == pytest.approx(max(h.l2, options.hinge * ROBUST.eps), rel=1e-5)
            expected = 100 * h.losses["L2"] + 0.05 * h.losses["GEOCROSS"] + options.noise_reg_weight * h.losses["NOISE"]
            assert h.total == pytest.approx(expected, rel=1e-5)


def test_saved_noise_is_what_rendered_the_result(G, robust_batch) -> None:
    for r in robust_batch:
        again = render(G, r.ws[None], [n[None] for n in r.noise])[0]
        assert torch.equal(again, r.image)
        assert r.best_l2 == min(h.l2 for h in r.history)  # eps 2e-3 not met here: the lowest L2 is returned
        for n in r.noise[:-1]:
            assert abs(n.mean().item()) < 1e-5  # the renormalised maps


def test_robust_batch_results_equal_solo_results_and_do_not_depend_on_order(G64, targets, float64_default):
    config = dataclasses.replace(ROBUST, steps=10)
    batch = pulse_search(G64, targets.double(), seeds=[0, 1, 2], config=config)
    flipped = pulse_search(G64, targets.double().flip(0), seeds=[2, 1, 0], config=config)
    for b in range(3):
        (solo,) = pulse_search(G64, targets[b:b + 1].double(), seeds=[b], config=config)
        for other in (solo, flipped[2 - b]):
            assert (other.image - batch[b].image).abs().max().item() < 1e-9
            assert other.best_step == batch[b].best_step
            assert [h.l2 for h in other.history] == pytest.approx([h.l2 for h in batch[b].history], rel=1e-9)


def test_robust_differs_from_pulse_and_pulse_ignores_robust_options(G, targets) -> None:
    pulse = pulse_search(G, targets[:1], seeds=[0], config=SearchConfig(steps=4))
    ignored = pulse_search(G, targets[:1], seeds=[0], config=SearchConfig(steps=4), robust=RobustOptions(hinge=0.1))
    robust = pulse_search(G, targets[:1], seeds=[0], config=SearchConfig(steps=4, mode="robust"))
    assert [h.l2 for h in ignored[0].history] == [h.l2 for h in pulse[0].history]
    assert set(pulse[0].history[0].losses) == {"L2", "GEOCROSS"}
    assert [h.l2 for h in robust[0].history][1:] != [h.l2 for h in pulse[0].history][1:]


def test_stop_at_eps_ends_a_robust_search_at_its_first_iterate_meeting_eps(G64, targets, float64_default):
    config = dataclasses.replace(ROBUST, steps=12, eps=0.1)
    (full,) = pulse_search(G64, targets[:1].double(), seeds=[0], config=config)
    first = next(h.step for h in full.history if h.l2 <= config.eps)
    (early,) = pulse_search(G64, targets[:1].double(), seeds=[0], config=config, stop_at_eps=True)
    assert early.converged and early.steps_run == first + 1 < config.steps


def test_robust_on_stylegan2(fixtures_dir) -> None:
    ckpt = torch.load(fixtures_dir / "rosinality_g_ema.pt", map_location="cpu", weights_only=True)
    gen = StyleGAN2Generator.from_state_dict(rosinality_to_nvidia(ckpt["g_ema"], ckpt["latent_avg"]))
    gen.latent_stats = compute_latent_stats(gen.map, gen.z_dim, samples=4096)
    target = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    (r,) = pulse_search(gen, target[None], seeds=[0], config=dataclasses.replace(ROBUST, steps=3))
    assert len(r.noise) == len(gen.noise_shapes(1))
    assert set(r.history[0].losses) == {"L2", "GEOCROSS", "NOISE"}
    assert torch.equal(render(gen, r.ws[None], [n[None] for n in r.noise])[0], r.image)


# --- the command line ----------------------------------------------------------------------------------


def test_cli_search_robust_is_recorded_and_renders_bit_for_bit(tmp_path, demo_checkpoint) -> None:
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(src / "a.png")
    out = tmp_path / "out"
    runner = CliRunner(env={"PULSE_HOME": str(tmp_path / "home")})
    result = runner.invoke(app, ["upsample", str(src), str(out), "--checkpoint", str(demo_checkpoint),
                                 "--steps", "3", "--device", "cpu", "--search", "robust", "--save-latents"])
    assert result.exit_code == 0, result.stderr
    record = json.loads((out / "results.jsonl").read_text().splitlines()[0])
    assert json.dumps(record).count('"mode": "robust"') >= 1
    steps = [json.loads(line) for line in (out / "logs" / "a.png.jsonl").read_text().splitlines()]
    step_lines = [s for s in steps if "loss" in s]
    assert step_lines and all({"L2", "GEOCROSS", "NOISE"} <= set(s["loss"]) for s in step_lines)
    result = runner.invoke(app, ["render", str(out / "a.png.latents.safetensors"), str(tmp_path / "again.png")])
    assert result.exit_code == 0, result.stderr
    assert np.array_equal(np.asarray(Image.open(out / "a.png.png")), np.asarray(Image.open(tmp_path / "again.png")))


def test_cli_rejects_an_unknown_search_mode(tmp_path, demo_checkpoint) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (16, 16)).save(src / "a.png")
    result = CliRunner(env={"PULSE_HOME": str(tmp_path / "home")}).invoke(
        app, ["upsample", str(src), str(tmp_path / "out"), "--checkpoint", str(demo_checkpoint), "--search", "fast"])
    assert result.exit_code == 2
    assert "search mode" in result.stderr


def test_search_modules_do_not_import_each_other() -> None:
    """The configuration types live in search/config.py: robust.py never imports pulse.py, not even for
    type checking (pulse.py imports robust.py)."""
    import ast
    from pathlib import Path

    import pulse_cli.search.robust as robust_module

    tree = ast.parse(Path(robust_module.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "pulse" not in imported and "config" in imported, imported
