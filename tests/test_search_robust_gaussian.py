"""`--search robust` on a generator with one Gaussian latent (the DCGAN): it steps along the principal axes,
with Adam's shorter memory, a latent norm that may move within that of N(0, I) draws, and a fresh start when
a cycle ends without meeting eps. Each mechanism is checked here on a tiny random DCGAN; whether they find the
face is measured by `make bench-quality`, not here."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import dcgan_state_dict, in_float64, read_records, save_tensor_file, tiny_generator
from typer.testing import CliRunner

from pulse_cli.checkpoints.loading import load_generator
from pulse_cli.cli import app
from pulse_cli.search.config import SearchConfig
from pulse_cli.search.downsample import BicubicDownsample
from pulse_cli.search.pulse import SearchPool, pulse_search
from pulse_cli.search.robust import RobustOptions, principal_axes, start_bank

pytestmark = pytest.mark.numerics  # float results: `make test` runs these with AVX2 and SSE4.1 kernels too

NZ = 8
ROBUST = SearchConfig(steps=12, mode="robust").for_latent("gaussian")
UNREACHABLE = 1e-12  # an eps no search of a random network meets


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tensor_file(dcgan_state_dict(nz=NZ), tmp_path_factory.mktemp("dcgan") / "generator.pt")


@pytest.fixture(scope="module")
def G(checkpoint):
    return load_generator(checkpoint)


@pytest.fixture(scope="module")
def targets(G) -> torch.Tensor:
    with torch.no_grad():
        z = torch.randn(3, 1, NZ, generator=torch.Generator().manual_seed(7))
        return BicubicDownsample(8)(((G.synthesize(z, []) + 1) / 2).clamp(0, 1))


def cycling(cycle_steps: int) -> RobustOptions:
    return dataclasses.replace(RobustOptions.for_latent("gaussian"), cycle_steps=cycle_steps)


def test_robust_for_stylegan_is_what_it_was_and_the_gaussian_options_are_refused_there() -> None:
    assert RobustOptions.for_latent("w+") == RobustOptions()
    assert RobustOptions().cycle_steps is None and RobustOptions().principal_axes == 0
    with pytest.raises(ValueError, match="one Gaussian latent"):
        SearchPool(tiny_generator(), config=SearchConfig(steps=2, mode="robust"),
                   robust=RobustOptions(principal_axes=16))
    with pytest.raises(ValueError, match="one Gaussian latent"):
        SearchPool(tiny_generator(), config=SearchConfig(steps=2, mode="robust"), robust=RobustOptions(radius_spread=1))
    with pytest.raises(ValueError, match="one Gaussian latent"):
        SearchPool(tiny_generator(), config=SearchConfig(steps=2, mode="robust"), robust=RobustOptions(start_bank=8))


@pytest.mark.parametrize(("options", "match"), [
    (dict(principal_axes=-1), "principal axes"), (dict(adam_betas=(0.9, 1.0)), "betas"),
    (dict(radius_spread=0.0), "radius spread"), (dict(radius_lr_factor=0.0), "radius lr"),
    (dict(cycle_steps=0), "cycle steps"), (dict(start_bank=-1), "start bank"),
    (dict(start_bank=4, start_choices=5), "start choices"), (dict(start_jitter=-0.1), "start jitter"),
])
def test_gaussian_options_are_checked(G, options, match) -> None:
    with pytest.raises(ValueError, match=match):
        SearchPool(G, config=ROBUST, robust=RobustOptions(**options))


@pytest.mark.parametrize(("steps", "restarts"), [
    (9, []), (10, []), (14, []),  # a last cycle shorter than half of one joins the one before it
    (15, [10]), (16, [10]), (31, [10, 20]), (35, [10, 20, 30]),
])
def test_a_search_that_misses_eps_starts_again_each_cycle_and_never_exceeds_its_budget(G, targets, steps, restarts):
    config = dataclasses.replace(ROBUST, steps=steps, eps=UNREACHABLE)
    (result,) = pulse_search(G, targets[:1], seeds=[3], config=config, robust=cycling(10))
    assert not result.converged
    assert result.restarts == restarts
    assert result.steps_run == steps == len(result.history)
    assert [h.step for h in result.history] == list(range(steps))
    lrs = [h.lr for h in result.history]
    for start in restarts:  # the schedule begins again: warm-up from its first rate
        assert lrs[start] == lrs[0] < lrs[start + 1]


def test_a_search_that_met_eps_ends_with_its_cycle_instead_of_starting_again(G, targets) -> None:
    config = dataclasses.replace(ROBUST, steps=35, eps=1.0)  # every iterate meets it
    (result,) = pulse_search(G, targets[:1], seeds=[3], config=config, robust=cycling(10))
    assert result.converged and result.restarts == []
    assert result.steps_run == 10 == len(result.history)
    # within a single cycle (the budget itself) nothing ends early
    (single,) = pulse_search(G, targets[:1], seeds=[3], config=dataclasses.replace(config, steps=14),
                             robust=cycling(10))
    assert single.steps_run == 14


def test_without_a_bank_a_restart_begins_from_the_next_draw_of_the_images_own_seed(G, targets) -> None:
    config = dataclasses.replace(ROBUST, steps=20, eps=UNREACHABLE)
    pool = SearchPool(G, config=config, robust=dataclasses.replace(cycling(10), start_bank=0))
    pool.add("a", targets[0], 11)
    rng = torch.Generator().manual_seed(11)  # what the seed gives, drawn here independently
    draws = [torch.randn(1, 1, NZ, generator=rng) for _ in range(2)]
    draws = [d * (NZ ** 0.5 / d.norm()) for d in draws]
    (_, search), = pool.active
    assert torch.allclose(search.search_latent().detach(), draws[0], atol=1e-5)  # rotated and back: the start
    for _ in range(10):
        pool.step()
    assert search.restarts == [10]
    assert torch.allclose(search.search_latent().detach(), draws[1], atol=1e-5)


class LinearGenerator:
    """A stand-in whose 8x8 image is linear in z with known stiff directions: image = z Q diag(scales) P, so
    E[JᵀJ] = Q diag(scales²) Qᵀ and its axes, stiffest first, are Q's columns."""

    w_dim, device = NZ, torch.device("cpu")

    def __init__(self):
        rng = torch.Generator().manual_seed(2)
        self.Q = torch.linalg.qr(torch.randn(NZ, NZ, generator=rng))[0]
        self.scales = 2.0 ** -torch.arange(NZ, dtype=torch.float32)  # 1, 1/2, 1/4, ...
        self.P = torch.linalg.qr(torch.randn(3 * 64, NZ, generator=rng))[0].T  # orthonormal rows [NZ, 192]

    def noise_shapes(self, n):
        return []

    def synthesize(self, z, noise):
        return (z.reshape(-1, NZ) @ self.Q @ torch.diag(self.scales) @ self.P).reshape(-1, 3, 8, 8)


def test_a_search_starts_near_the_bank_crops_nearest_its_target_in_an_order_its_seed_draws(G) -> None:
    down = BicubicDownsample(8)
    bank_z, bank_crops = start_bank(G, down, 64)
    assert bank_z.shape == (64, 1, NZ) and bank_crops.shape == (64, 3, 8, 8)
    torch.testing.assert_close(bank_z.norm(dim=-1), torch.full((64, 1), NZ ** 0.5))
    target = (bank_crops[5] + 0.02 * torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    nearest = (bank_crops - target).pow(2).flatten(1).mean(1).argsort()[:4].tolist()
    config = dataclasses.replace(ROBUST, steps=4, eps=UNREACHABLE)
    options = dataclasses.replace(cycling(1), start_bank=64, start_choices=4, start_jitter=0.0)
    starts = {}
    for seed in (0, 1):
        pool = SearchPool(G, config=config, robust=options)
        pool.add("a", target, seed)
        (_, search), = pool.active
        starts[seed] = []
        for _ in range(4):  # a restart after every step: each of the 4 nearest once
            starts[seed].append(search.search_latent().detach())
            pool.step()
    for seed in (0, 1):
        chosen = [min(range(64), key=lambda k, s=s: (bank_z[k] - s).norm().item()) for s in starts[seed]]
        assert sorted(chosen) == sorted(nearest)
        for k, s in zip(chosen, starts[seed], strict=True):
            torch.testing.assert_close(s, bank_z[k][None], atol=1e-5, rtol=0)
    assert [s.tolist() for s in starts[0]] != [s.tolist() for s in starts[1]]  # another seed, another order


def test_jitter_moves_the_bank_start_by_the_seeds_own_draw(G) -> None:
    down = BicubicDownsample(8)
    bank_z, bank_crops = start_bank(G, down, 64)
    options = dataclasses.replace(RobustOptions.for_latent("gaussian"), start_bank=64, start_choices=1,
                                  start_jitter=0.6)
    for seed in (3, 4):
        pool = SearchPool(G, config=ROBUST, robust=options)
        pool.add("a", bank_crops[9], seed)
        (_, search), = pool.active
        rng = torch.Generator().manual_seed(seed)
        rng_order = torch.randperm(1, generator=rng)  # the order of the (one) choice comes first
        assert rng_order.tolist() == [0]
        expected = bank_z[9][None] + 0.6 * torch.randn(1, 1, NZ, generator=rng)
        expected = expected * (NZ ** 0.5 / expected.norm())
        torch.testing.assert_close(search.search_latent().detach(), expected, atol=1e-5, rtol=0)


def test_principal_axes_are_the_stiff_directions_of_the_crop_stiffest_first_and_repeatable(G) -> None:
    linear = LinearGenerator()
    axes = principal_axes(linear, lambda image: image, 8, 2048)
    assert axes.shape == (NZ, NZ)
    torch.testing.assert_close(axes.T @ axes, torch.eye(NZ), atol=1e-5, rtol=0)
    alignment = (axes * linear.Q).sum(0).abs()  # |cos| between each found axis and the true one
    assert alignment.min().item() > 0.98, alignment
    down = BicubicDownsample(8)
    assert torch.equal(principal_axes(G, down, 8, 64), principal_axes(G, down, 8, 64))


def test_restarting_searches_give_in_a_batch_what_they_give_alone(G, targets, float64_default) -> None:
    G64 = in_float64(G)
    config = dataclasses.replace(ROBUST, steps=16, eps=2e-3)
    noise = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # no face meets eps on it
    mixed = torch.cat([targets[:2], noise]).double()
    batch = pulse_search(G64, mixed, seeds=[0, 1, 2], config=config, robust=cycling(6))
    assert batch[2].restarts == [6, 12] and batch[0].steps_run < 16  # one started again, one ended with its cycle
    for b in range(3):
        (solo,) = pulse_search(G64, mixed[b:b + 1], seeds=[b], config=config, robust=cycling(6))
        assert solo.restarts == batch[b].restarts and solo.steps_run == batch[b].steps_run
        assert (solo.image - batch[b].image).abs().max().item() < 1e-9
        assert [h.l2 for h in solo.history] == pytest.approx([h.l2 for h in batch[b].history], rel=1e-9)


def test_stop_at_eps_ends_a_robust_dcgan_search_at_its_first_iterate_meeting_eps(G, targets) -> None:
    # a random start (no bank, which starts this tiny model's targets within eps already) and an eps met only
    # after some steps: the search must stop there, not at its first step nor at its budget's end
    options = dataclasses.replace(RobustOptions.for_latent("gaussian"), start_bank=0)
    config = dataclasses.replace(ROBUST, steps=40, eps=2e-4)
    (full,) = pulse_search(G, targets[:1], seeds=[0], config=config, robust=options)
    first = next(h.step for h in full.history if h.l2 <= config.eps)
    (early,) = pulse_search(G, targets[:1], seeds=[0], config=config, stop_at_eps=True, robust=options)
    assert early.converged and 0 < first and early.steps_run == first + 1 < config.steps


def test_records_say_when_a_robust_search_started_again(tmp_path, checkpoint, G, targets) -> None:
    from PIL import Image

    crops = tmp_path / "crops"
    crops.mkdir()
    Image.fromarray((targets[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(crops / "a.png")
    runner = CliRunner()
    for mode, steps, expected in (("robust", 150, [100]), ("robust", 20, []), ("pulse", 150, None)):
        out = tmp_path / f"out-{mode}-{steps}"
        result = runner.invoke(app, ["upsample", str(crops), str(out), "--checkpoint", str(checkpoint),
                                     "--search", mode, "--steps", str(steps), "--eps", "1e-9"])
        assert result.exit_code == 0, (result.stdout, result.stderr)  # not_converged: outputs written
        (record,) = read_records(out)
        (sample,) = record["samples"]
        assert record["status"] == "not_converged"
        assert sample.get("restarts", None) == expected
        if mode == "pulse":
            assert "restarts" not in sample
        log = [json.loads(line) for line in (out / record["logs"][0]).read_text().splitlines()]
        assert len(log) == 1 + steps  # a header, then every step of the budget, no more


def test_starts_and_axes_are_made_once_per_process_for_a_generator_size_and_thread_count(checkpoint, targets,
                                                                                        monkeypatch) -> None:
    import pulse_cli.search.pulse as pulse_module

    made = []
    real_bank = pulse_module.start_bank
    monkeypatch.setattr(pulse_module, "start_bank", lambda *a, **k: made.append(a[-1]) or real_bank(*a, **k))
    G = load_generator(checkpoint)  # a generator of its own: nothing made for it yet
    first = pulse_search(G, targets[:1], seeds=[0], config=ROBUST)
    again = pulse_search(G, targets[:1], seeds=[0], config=ROBUST)  # another pool, as a notebook's next call
    assert len(made) == 1
    assert [h.l2 for h in again[0].history] == [h.l2 for h in first[0].history]
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if previous > 1 else 2)  # other rounding: made again
        pulse_search(G, targets[:1], seeds=[0], config=ROBUST)
    finally:
        torch.set_num_threads(previous)
    assert len(made) == 2
    pulse_search(load_generator(checkpoint), targets[:1], seeds=[0], config=ROBUST)  # another generator
    assert len(made) == 3


@pytest.mark.parametrize("bad", ["100", [100, "200"], [1.5], {"at": 100}])
def test_a_results_line_with_restarts_that_are_not_step_numbers_is_refused(bad) -> None:
    from pulse_cli.run.records import RecordError, ResultRecord

    sample = {"output": "a.png.png", "status": "ok", "best_l2": 0.001, "restarts": [100, 200]}
    record = ResultRecord.from_json({"input": "a.png", "status": "ok", "samples": [sample]})
    assert record.samples[0]["restarts"] == [100, 200]
    with pytest.raises(RecordError, match="not a list of sample records"):
        ResultRecord.from_json({"input": "a.png", "status": "ok", "samples": [{**sample, "restarts": bad}]})
