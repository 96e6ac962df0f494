from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES} (the checkout needs ../shared beside it)")
    return FIXTURES


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory) -> Path:
    """The 128x128 demo generator (PULSE layout), with a gaussian fit beside it from few samples (fast)."""
    from pulse_cli.checkpoints.demo import make_demo_generator, write_demo_checkpoint
    from pulse_cli.checkpoints.latent_stats import compute_latent_stats, save_latent_stats

    folder = tmp_path_factory.mktemp("demo-ckpt")
    path = write_demo_checkpoint(folder)
    generator = make_demo_generator()
    save_latent_stats(compute_latent_stats(generator.map, generator.z_dim, samples=4096),
                      folder / "gaussian_fit.pt")
    return path


@pytest.fixture()
def float64_default():
    """Run a test with float64 as torch's default dtype (where batching changes results by ~1e-13)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@pytest.fixture
def runner(monkeypatch, tmp_path):
    """Typer's CliRunner in a clean environment: a private PULSE_HOME, no PULSE_CHECKPOINT, cwd tmp_path."""
    from typer.testing import CliRunner

    monkeypatch.setenv("PULSE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PULSE_CHECKPOINT", raising=False)
    monkeypatch.chdir(tmp_path)
    return CliRunner()
