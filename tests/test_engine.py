"""The engine used directly, as a notebook or a worker would: load once, search, render; and the typed records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import face_target, in_float64

from pulse_cli import SearchConfig, pulse_search
from pulse_cli.checkpoints.io import CheckpointError
from pulse_cli.engine import Engine
from pulse_cli.run.records import (
    NOT_CONVERGED,
    OK,
    ResultRecord,
    RunHeader,
    SampleRecord,
    StepLine,
    combined_status,
    search_status,
    to_json,
)

pytestmark = pytest.mark.numerics  # float results: `make test` runs these with AVX2 and SSE4.1 kernels too

CONFIG = SearchConfig(steps=3)


@pytest.fixture(scope="module")
def engine(demo_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    return Engine.load(demo_checkpoint, device="cpu", config=CONFIG, batch_size=2,
                       cache_dir=tmp_path_factory.mktemp("cache"))


def test_load_records_the_checkpoint_and_chooses_the_cpu_fast_path(engine: Engine, demo_checkpoint: Path):
    assert engine.checkpoint == str(demo_checkpoint)
    assert engine.checkpoint_sha256 is not None and len(engine.checkpoint_sha256) == 64
    assert engine.device == torch.device("cpu")
    assert engine.synthesis_path == "fast"  # "auto" is fast on the CPU
    assert engine.batch_size == 2 and not engine.batch_size_auto
    assert engine.resolution == 128
    assert engine.latent_stats_origin == "gaussian_fit.pt beside the file"


def test_search_then_render_round_trip_is_bit_exact(engine: Engine):
    targets = torch.stack([face_target(16), face_target(16, crop=(0, 0, 256, 256)),
                           face_target(16, crop=(100, 0, 400, 300))])
    results = engine.search(targets, seeds=[1, 2, 3])
    assert [r.steps_run for r in results] == [3, 3, 3]
    for result in results:
        assert result.image.shape == (3, 128, 128)
        assert torch.equal(engine.render(result.ws, result.noise), result.image)


def test_each_result_of_an_engine_is_what_its_target_gives_alone(engine: Engine, float64_default):
    # The engine batches 2 at a time and the pool refills; another batch size rounds the batched convolutions
    # differently, and in float32 Adam's first, magnitude-normalised steps amplify that past any fixed bound on
    # some kernels (0.0054 against 1/255 under SSE4.1). In float64 batching changes the iterates by ~1e-13, so
    # batched and alone agree far inside the bounds, on any kernels.
    G = in_float64(engine.generator)
    targets = torch.stack([face_target(16), face_target(16, crop=(0, 0, 256, 256)),
                           face_target(16, crop=(100, 0, 400, 300))]).double()
    results = Engine(G, device="cpu", config=CONFIG, batch_size=2).search(targets, seeds=[1, 2, 3])
    (alone,) = pulse_search(G, targets[1:2], seeds=[2], config=CONFIG)
    assert (alone.image - results[1].image).abs().max().item() < 1e-9
    assert abs(alone.best_l2 - results[1].best_l2) < 1e-9


def test_searches_yields_failures_alone_and_goes_on(engine: Engine):
    items = [("good", face_target(16), 0), ("odd", torch.zeros(3, 7, 7), 1), ("also good", face_target(8), 2)]
    finished = {done.key: done for done in engine.searches(items)}
    assert set(finished) == {"good", "odd", "also good"}
    assert finished["odd"].result is None and "divid" in finished["odd"].error
    assert finished["good"].error is None and finished["good"].result.steps_run == 3
    assert finished["good"].seconds > 0


def test_render_refuses_latents_of_another_shape(engine: Engine):
    G = engine.generator
    noise = [torch.zeros(s[1:]) for s in G.noise_shapes(1)]
    with pytest.raises(ValueError, match="latents"):
        engine.render(torch.zeros(G.num_ws + 1, G.w_dim), noise)
    with pytest.raises(ValueError, match="noise"):
        engine.render(torch.zeros(G.num_ws, G.w_dim), noise[:-1])


def test_options_are_checked_before_and_right_after_loading(demo_checkpoint: Path, tmp_path: Path, monkeypatch):
    import pulse_cli.engine as engine_module

    def no_loading(*args, **kwargs):
        raise AssertionError("loaded before the options were checked")

    with monkeypatch.context() as m:
        m.setattr(engine_module, "load_generator", no_loading)
        for bad in ({"config": SearchConfig(loss="7*NOPE")}, {"synthesis": "turbo"}, {"batch_size": 0},
                    {"device": "tpu"}):
            with pytest.raises(ValueError):
                Engine.load(demo_checkpoint, **({"device": "cpu"} | bad))
    with pytest.raises(ValueError, match="out of range"):  # the demo generator has 12 noise layers
        Engine.load(demo_checkpoint, device="cpu", config=SearchConfig(bad_noise_layers=(40,)),
                    cache_dir=tmp_path)
    with pytest.raises(CheckpointError):
        Engine.load(tmp_path / "missing.pt", device="cpu")


def test_reference_path_and_auto_batch_size(demo_checkpoint: Path, tmp_path: Path):
    engine = Engine.load(demo_checkpoint, device="cpu", synthesis="reference", cache_dir=tmp_path)
    assert engine.synthesis_path == "reference"
    assert engine.batch_size == 1 and engine.batch_size_auto  # batching buys nothing per image on a CPU


def test_status_rule():
    assert search_status(True) == OK and search_status(False) == NOT_CONVERGED
    assert combined_status([OK, OK]) == OK
    assert combined_status([OK, NOT_CONVERGED]) == NOT_CONVERGED


def test_records_serialize_in_the_documented_shape():
    samples = [SampleRecord("a.png.sample0.png", OK, 0.001, 4, 0.2, 5, 1.0, 11),
               SampleRecord("a.png.sample1.png", NOT_CONVERGED, 0.003, 2, 0.4, 5, 1.5, 12)]
    record = ResultRecord.from_samples(samples, input="a.png", outputs=["x"], logs=["y"], seed=0,
                                       checkpoint="c.pt", checkpoint_sha256=None)
    data = to_json(record)
    # the sample that did not meet eps decides the status: ok exactly when worst_sample_l2 <= eps
    assert data["status"] == NOT_CONVERGED and data["worst_sample_l2"] == 0.003 and data["best_sample_l2"] == 0.001
    assert data["steps_run"] == 5 and data["seconds"] == 2.5
    assert "diversity" not in data  # written only with several samples' numbers
    assert list(data) == ["input", "outputs", "logs", "seed", "checkpoint", "checkpoint_sha256", "status",
                          "worst_sample_l2", "best_sample_l2", "steps_run", "seconds", "samples", "error", "search"]
    record.diversity = {"pairwise_rms_full": 0.2, "pairwise_rms_input": 0.01}
    assert json.loads(json.dumps(to_json(record)))["diversity"]["pairwise_rms_full"] == 0.2
    line = to_json(StepLine(step=0, lr=0.1, loss={"L2": 0.5}, l2=0.5, total=50.0))
    assert list(line) == ["type", "step", "lr", "loss", "l2", "total"] and line["type"] == "step"
    header = to_json(RunHeader(device="cpu", input="a.png", input_sha256="0" * 64, seed=0, sample=0,
                               image_seed=5, checkpoint="c.pt", checkpoint_sha256=None, generator={}, search={},
                               batch_size=1, samples=1))
    assert list(header)[:5] == ["type", "tool", "version", "torch", "python"] and header["type"] == "run"
    assert header["torch"] == torch.__version__


_SEARCH_AND_REPORT_DYNAMO = """
import json, sys
sys.path.insert(0, sys.argv[1])
import torch
from helpers import dcgan_state_dict, save_tensor_file, tiny_generator
from pulse_cli.checkpoints.loading import load_generator
from pulse_cli.engine import Engine
from pulse_cli.search.pulse import SearchConfig
dcgan = load_generator(save_tensor_file(dcgan_state_dict(), __import__("pathlib").Path(sys.argv[2]) / "g.pt"))
stylegan = tiny_generator()
for G, config in ((stylegan, SearchConfig(steps=2)), (stylegan, SearchConfig(steps=2, optimizer="sgdm")),
                  (stylegan, SearchConfig(steps=2, mode="robust")),
                  (dcgan, SearchConfig(steps=2, mode="robust").for_latent("gaussian"))):
    Engine(G, device="cpu", config=config).search(torch.rand(1, 3, 8, 8), seeds=[0])
print(json.dumps({"dynamo": "torch._dynamo" in sys.modules}))
"""


def test_a_search_never_imports_torch_dynamo(tmp_path: Path):
    # torch.optim's compile marks import torch._dynamo (1.2 s, ~800 modules) on first use, in every searching
    # process: longer than a small model's whole search. A search (default, another optimiser, robust) in a
    # fresh interpreter must leave it unloaded.
    import subprocess
    import sys

    tests = Path(__file__).resolve().parent
    result = subprocess.run([sys.executable, "-c", _SEARCH_AND_REPORT_DYNAMO, str(tests), str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"dynamo": False}
