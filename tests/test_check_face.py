"""`pulse upsample --check-face`: dlib's detector score per result in results.jsonl, results without a face
counted in the summary and marked on the contact sheets."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from helpers import dcgan_state_dict, face_target, read_records, save_tensor_file, write_crops

pytest.importorskip("dlib")

from pulse_cli.align import detect, identity  # noqa: E402
from pulse_cli.cli import app  # noqa: E402


@pytest.fixture
def setup(tmp_path):
    checkpoint = save_tensor_file({"netG_state_dict": dcgan_state_dict()}, tmp_path / "netG.pt")
    crops = write_crops(tmp_path / "crops", 2, size=8)
    return checkpoint, crops


def upsample(runner, setup, out, *extra):
    checkpoint, crops = setup
    return runner.invoke(app, ["upsample", str(crops), str(out), "--checkpoint", str(checkpoint), "--steps", "3",
                               "--device", "cpu", "--samples", "2", *extra])


def test_face_score_finds_a_real_face_and_not_noise():
    face = (face_target(256).permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # the astronaut's face
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert detect.face_score(face) > 0.5
    assert detect.face_score(noise) is None
    small = np.asarray(face[::4, ::4])  # 64 px: upscaled before detection
    assert detect.face_score(small) is not None


def test_records_summary_and_sheets(runner, tmp_path, setup, monkeypatch):
    scores = itertools.cycle([1.25, None])  # the first sample of each input shows a face, the second none
    monkeypatch.setattr(identity, "read_face", lambda rgb, describe: identity.FaceReading(next(scores)))
    out = tmp_path / "out"
    result = upsample(runner, setup, out, "--check-face", "--sheet", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["no_face"] == 2
    assert "no face" in result.stderr  # the summary table's column
    records = read_records(out)
    assert [[s["face_score"] for s in r["samples"]] for r in records] == [[1.25, None], [1.25, None]]
    assert [r["no_face"] for r in records] == [1, 1]
    assert (out / "sheet.png").is_file() and (out / "sheets").is_dir()

    # a rerun skips the inputs and still counts their results without a face
    again = upsample(runner, setup, out, "--check-face", "--json", "--quiet")
    assert json.loads(again.stdout)["no_face"] == 2 and json.loads(again.stdout)["skipped"] == 2


def test_random_weights_show_no_face(runner, tmp_path, setup):
    """The real detector on a random-weight DCGAN's results: no face anywhere, every score null."""
    out = tmp_path / "out"
    result = upsample(runner, setup, out, "--check-face", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["no_face"] == 4
    assert all(s["face_score"] is None for r in read_records(out) for s in r["samples"])


def test_without_the_flag_nothing_is_added(runner, tmp_path, setup):
    out = tmp_path / "out"
    result = upsample(runner, setup, out, "--json", "--quiet")
    assert result.exit_code == 0 and "no_face" not in json.loads(result.stdout)
    record = read_records(out)[0]
    assert "no_face" not in record and all("face_score" not in s for s in record["samples"])


def test_missing_dlib_is_a_usage_error(runner, tmp_path, setup, monkeypatch):
    def missing():
        raise detect.MissingExtra("no dlib")

    monkeypatch.setattr(detect, "import_dlib", missing)
    result = upsample(runner, setup, tmp_path / "out", "--check-face")
    assert result.exit_code == 2
    assert "--check-face needs dlib (the 'align' extra)" in result.stderr and result.stderr.count("\n") == 1
    assert "pip install '.[align]'" in result.stderr  # from a clone: the package is not on PyPI
