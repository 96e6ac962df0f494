"""Results labelled as synthetic, shown as one face among many, and reproducible from saved latents."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pulse_cli.checkpoints.demo import write_demo_checkpoint
from pulse_cli.cli import app
from pulse_cli.files.sheets import BACKGROUND, CAPTION_HEIGHT, PADDING, Tile, grid_sheet

FAST = ["--steps", "4", "--device", "cpu"]
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


@pytest.fixture
def checkpoint(demo_checkpoint) -> Path:
    return demo_checkpoint


@pytest.fixture
def crops(tmp_path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(src / name)
    return src


def run(tmp_path, *args):
    result = CliRunner(env={"PULSE_HOME": str(tmp_path / "home")}).invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr
    return result


def results(out: Path) -> dict[str, dict]:
    return {r["input"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def test_every_png_says_it_is_synthetic_and_carries_its_provenance(tmp_path, checkpoint, crops):
    out = tmp_path / "out"
    run(tmp_path, "upsample", crops, out, "--checkpoint", checkpoint, *FAST)
    record = results(out)["a.png"]
    with Image.open(out / "a.png.png") as image:
        text = dict(image.text)
    assert "not a reconstruction of the person" in text["Description"]
    assert "in a StyleGAN generator" in text["Description"]  # the demo generator is a StyleGAN (v1)
    assert text["Software"].startswith("pulse-cli ")
    assert text["DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert text["pulse:checkpoint"] == checkpoint.name
    assert text["pulse:checkpoint_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert text["pulse:input_sha256"] == hashlib.sha256((crops / "a.png").read_bytes()).hexdigest()
    assert text["pulse:seed"] == "0"
    assert text["pulse:image_seed"] == str(record["samples"][0]["image_seed"])
    assert text["pulse:steps"] == "4"
    assert float(text["pulse:l2"]) == pytest.approx(record["samples"][0]["best_l2"], rel=1e-5)
    xmp = text["XML:com.adobe.xmp"]
    assert f'Iptc4xmpExt:DigitalSourceType="{TRAINED_ALGORITHMIC_MEDIA}"' in xmp
    assert "not a reconstruction of the person" in xmp


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed (CI installs it)")
def test_exiftool_reads_the_digital_source_type(tmp_path, checkpoint, crops):
    out = tmp_path / "out"
    run(tmp_path, "upsample", crops, out, "--checkpoint", checkpoint, *FAST)
    raw = subprocess.run(["exiftool", "-j", "-XMP:all", str(out / "a.png.png")], capture_output=True, text=True,
                         check=True).stdout
    tags = json.loads(raw)[0]
    assert tags["DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert "not a reconstruction" in tags["Description"]


def test_no_metadata_leaves_the_png_bare(tmp_path, checkpoint, crops):
    out = tmp_path / "out"
    run(tmp_path, "upsample", crops, out, "--checkpoint", checkpoint, "--no-metadata", *FAST)
    with Image.open(out / "a.png.png") as image:
        assert not any(key in image.info for key in ("Description", "XML:com.adobe.xmp", "pulse:seed"))


def test_render_reproduces_the_saved_result_bit_for_bit(tmp_path, checkpoint, crops):
    out = tmp_path / "out"
    run(tmp_path, "upsample", crops, out, "--checkpoint", checkpoint, "--save-latents", "--batch-size", "2",
        *FAST)
    latents = out / "b.png.latents.safetensors"
    assert latents.is_file()
    run(tmp_path, "render", latents, tmp_path / "again.png")
    original = np.asarray(Image.open(out / "b.png.png"))
    again = np.asarray(Image.open(tmp_path / "again.png"))
    assert original.shape == (128, 128, 3)
    assert np.array_equal(original, again)


def test_render_refuses_a_different_checkpoint(tmp_path, checkpoint, crops):
    out = tmp_path / "out"
    run(tmp_path, "upsample", crops, out, "--checkpoint", checkpoint, "--save-latents", *FAST)
    other = write_demo_checkpoint(tmp_path / "other", seed=1)
    result = CliRunner().invoke(app, ["render", str(out / "a.png.latents.safetensors"), str(tmp_path / "x.png"),
                                      "--checkpoint", str(other)])
    assert result.exit_code == 2
    assert "sha256" in result.stderr and not (tmp_path / "x.png").exists()


def test_render_rejects_a_file_that_is_not_latents(tmp_path):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not safetensors at all")
    result = CliRunner().invoke(app, ["render", str(bogus), str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr and "bogus.safetensors" in result.stderr


def test_save_every_writes_frames_and_animate_makes_a_gif(tmp_path, checkpoint, crops):
    out = tmp_path / "out"
    run(tmp_path, "upsample", crops, out, "--checkpoint", checkpoint, "--steps", "6", "--device", "cpu",
        "--save-every", "2", "--animate")
    frames = sorted(p.name for p in (out / "frames" / "a.png").iterdir())
    assert frames == ["step-0000.png", "step-0002.png", "step-0004.png"]
    with Image.open(out / "a.png.search.gif") as gif:
        assert gif.n_frames == len(frames) + 1  # the frames, then the chosen result


def test_samples_sheet_and_diversity(tmp_path, checkpoint, crops):
    out = tmp_path / "out"
    run(tmp_path, "upsample", crops, out, "--checkpoint", checkpoint, "--samples", "3", "--sheet", *FAST)
    record = results(out)["a.png"]

    images = [np.asarray(Image.open(out / f"a.png.sample{k}.png"), dtype=np.float64) / 255 for k in range(3)]
    pairwise = [np.sqrt(np.mean((images[i] - images[j]) ** 2)) for i in range(3) for j in range(i + 1, 3)]
    assert record["diversity"]["pairwise_rms_full"] == pytest.approx(np.mean(pairwise), abs=2 / 255)
    assert record["diversity"]["pairwise_rms_full"] > 0.01  # three different faces
    assert 0 <= record["diversity"]["pairwise_rms_input"]

    tile = 128
    with Image.open(out / "sheets" / "a.png.sheet.png") as sheet:
        # input, bicubic, three results and their disagreement map across; results above their downscaled
        # versions, the map above its scale; two title lines (the second says what the map shows)
        assert sheet.size == (PADDING + 6 * (tile + PADDING),
                              2 * CAPTION_HEIGHT + 2 * PADDING + 2 * (tile + CAPTION_HEIGHT + PADDING))
        top = 2 * CAPTION_HEIGHT + 2 * PADDING
        input_tile = np.asarray(sheet.crop((PADDING, top, PADDING + tile, top + tile)))
        expected = np.asarray(Image.open(crops / "a.png").convert("RGB").resize((tile, tile), Image.NEAREST))
        assert np.array_equal(input_tile, expected)
        result_x = PADDING + 2 * (tile + PADDING)
        result_tile = np.asarray(sheet.crop((result_x, top, result_x + tile, top + tile)))
        assert np.array_equal(result_tile, (images[0] * 255).round().astype(np.uint8))
        map_x = PADDING + 5 * (tile + PADDING)
        map_tile = np.asarray(sheet.crop((map_x, top, map_x + tile, top + tile)))
        assert np.array_equal(map_tile, np.asarray(Image.open(out / "a.png.disagreement.png")))
    with Image.open(out / "sheet.png") as run_sheet:  # each input, its three results and their map
        assert run_sheet.size == (PADDING + 5 * (tile + PADDING),
                                  2 * CAPTION_HEIGHT + 2 * PADDING + 2 * (tile + CAPTION_HEIGHT + PADDING))


def test_grid_sheet_captions_are_drawn_under_tiles_only():
    tile = Image.new("RGB", (8, 8), (255, 0, 0))
    sheet = np.asarray(grid_sheet([[Tile(tile, "L2 0.0012 ok"), None]], tile_size=32, title=""))
    caption_top = CAPTION_HEIGHT + 2 * PADDING + 32
    captioned = sheet[caption_top:caption_top + CAPTION_HEIGHT, PADDING:PADDING + 32]
    empty = sheet[caption_top:caption_top + CAPTION_HEIGHT, 2 * PADDING + 32:2 * PADDING + 64]
    assert (captioned != BACKGROUND).any()
    assert (empty == BACKGROUND).all()
