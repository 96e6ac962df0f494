"""The search pool: images leave when done and others join, without changing anyone's result."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import face_target, in_float64, tiny_generator

from pulse_cli.networks.stylegan1 import StyleGAN1Generator
from pulse_cli.search.pulse import SearchConfig, SearchPool, pulse_search

pytestmark = pytest.mark.numerics  # float results: `make test` runs these with AVX2 and SSE4.1 kernels too

CONFIG = SearchConfig(steps=8)


@pytest.fixture(scope="module")
def G64() -> StyleGAN1Generator:
    """A tiny generator in float64, where batching changes results by ~1e-13 instead of ~1e-5."""
    return in_float64(tiny_generator())


def solo(G, target, seed, config=CONFIG):
    (result,) = pulse_search(G, target[None], seeds=[seed], config=config)
    return result


def test_a_search_that_joins_late_gets_the_result_it_would_get_alone(G64, float64_default):
    early, late = face_target(8).double(), face_target(8, crop=(0, 0, 256, 256)).double()
    pool = SearchPool(G64, config=CONFIG)
    pool.add("early", early, 1)
    for _ in range(3):
        pool.step()
    pool.add("late", late, 2)
    results = {}
    while len(pool):
        pool.step()
        results.update(pool.pop_finished())
    for key, target, seed in (("early", early, 1), ("late", late, 2)):
        alone = solo(G64, target, seed)
        assert results[key].steps_run == CONFIG.steps
        assert results[key].best_step == alone.best_step
        assert (results[key].image - alone.image).abs().max() < 1e-9
        assert [r.lr for r in results[key].history] == [r.lr for r in alone.history]  # its own schedule


def test_targets_of_different_sizes_share_a_pool(G64, float64_default):
    small, large = face_target(8).double(), face_target(16).double()
    pool = SearchPool(G64, config=CONFIG)
    pool.add("small", small, 3)
    pool.add("large", large, 4)
    results = {}
    while len(pool):
        pool.step()
        results.update(pool.pop_finished())
    assert (results["small"].image - solo(G64, small, 3).image).abs().max() < 1e-9
    assert (results["large"].image - solo(G64, large, 4).image).abs().max() < 1e-9


def test_stop_at_eps_ends_a_search_at_its_first_iterate_meeting_eps(G64, float64_default):
    target = face_target(8).double()
    full = solo(G64, target, 0, dataclasses.replace(CONFIG, eps=0.5))
    first_meeting = next(r.step for r in full.history if r.l2 <= 0.5)
    (stopped,) = pulse_search(G64, target[None], seeds=[0], config=dataclasses.replace(CONFIG, eps=0.5),
                              stop_at_eps=True)
    assert stopped.converged
    assert stopped.steps_run == first_meeting + 1
    assert stopped.best_step == first_meeting
    assert stopped.history == full.history[: first_meeting + 1]


def test_stop_at_eps_without_convergence_runs_every_step(G64, float64_default):
    (result,) = pulse_search(G64, face_target(8).double()[None], seeds=[0],
                             config=dataclasses.replace(CONFIG, eps=0.0), stop_at_eps=True)
    assert not result.converged and result.steps_run == CONFIG.steps


def test_pool_rejects_bad_targets_before_any_step(G64):
    pool = SearchPool(G64, config=CONFIG)
    with pytest.raises(ValueError, match="square"):
        pool.add("x", torch.rand(3, 8, 4, dtype=torch.float64), 0)
    with pytest.raises(ValueError, match="at least 4x4"):
        pool.add("x", torch.rand(3, 2, 2, dtype=torch.float64), 0)
    assert len(pool) == 0
