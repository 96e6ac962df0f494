"""Input discovery, image reading/writing, atomic writes, and the batch runner on a tiny generator."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
import torch
from helpers import face_target, random_state_dicts, save_tensor_file, write_pulse_checkpoint
from PIL import Image

from pulse_cli import SearchConfig, load_generator, pulse_search
from pulse_cli.checkpoints.latent_stats import compute_latent_stats
from pulse_cli.engine import Engine
from pulse_cli.files.atomic import append_jsonl, atomic_write_bytes, read_jsonl, write_jsonl
from pulse_cli.files.discovery import discover_inputs, output_paths
from pulse_cli.files.images import ImageError, check_size, load_rgb, save_png, to_pil
from pulse_cli.networks.stylegan1 import StyleGAN1Generator
from pulse_cli.run.plan import RunOptions, derive_seed, plan_jobs
from pulse_cli.run.reporter import Reporter
from pulse_cli.run.runner import Runner

RED, GREEN, BLUE, OTHER = (255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 200, 30)


def _quadrants(size: int = 16) -> np.ndarray:
    a = np.zeros((size, size, 3), np.uint8)
    h = size // 2
    a[:h, :h], a[:h, h:], a[h:, :h], a[h:, h:] = RED, GREEN, BLUE, OTHER
    return a


def _png_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def _as_hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def _one_line(exc: BaseException) -> bool:
    return bool(str(exc)) and "\n" not in str(exc)


# --- discovery -------------------------------------------------------------------------------------------


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    png = _png_bytes(_quadrants(8))
    (root / "b.png").write_bytes(png)
    Image.fromarray(_quadrants(8)).save(root / "a.jpg")
    (root / "sub").mkdir()
    (root / "sub" / "c.png").write_bytes(png)
    (root / ".hidden.png").write_bytes(png)
    (root / ".hdir").mkdir()
    (root / ".hdir" / "d.png").write_bytes(png)
    (root / "notes.txt").write_text("not an image\n")
    (root / "README").write_text("# readme\n")
    (root / "corrupt.png").write_bytes(random.Random(0).randbytes(300))
    (root / "weird.dat").write_bytes(png)  # a real PNG under an unknown extension
    (root / "noext").write_bytes(png)
    (root / "folder.png").mkdir()  # a folder with an image name
    (root / "folder.png" / "e.png").write_bytes(png)
    (root / "out").mkdir()
    (root / "out" / "b.png.png").write_bytes(png)
    return root


def _rels(found) -> list[str]:
    return [str(f) for f in found]


def test_discover_non_recursive(tree: Path) -> None:
    found = discover_inputs(tree, recursive=False)
    assert _rels(found) == ["a.jpg", "b.png", "corrupt.png", "noext", "weird.dat"]
    assert all(f.path == tree / f.rel for f in found)
    assert all(isinstance(f.rel, PurePosixPath) for f in found)


def test_discover_recursive_excludes_output_folder(tree: Path) -> None:
    found = discover_inputs(tree, recursive=True, exclude=tree / "out")
    assert _rels(found) == ["a.jpg", "b.png", "corrupt.png", "folder.png/e.png", "noext", "sub/c.png", "weird.dat"]


def test_discover_exclude_path_is_resolved(tree: Path) -> None:
    found = discover_inputs(tree, recursive=True, exclude=tree / "sub" / ".." / "out")
    assert "out/b.png.png" not in _rels(found)


def test_discover_recursive_without_exclude_lists_everything_visible(tree: Path) -> None:
    rels = _rels(discover_inputs(tree, recursive=True))
    assert "out/b.png.png" in rels
    assert rels == sorted(rels)
    assert not any(part.startswith(".") for r in rels for part in r.split("/"))
    assert "notes.txt" not in rels and "README" not in rels


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature, IHDR claiming width x height RGB, and IEND: Pillow opens it lazily."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_discover_survives_decompression_bomb_with_unknown_extension(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(_png_bytes(_quadrants(8)))
    (tmp_path / "huge.dat").write_bytes(_png_header_only(20000, 20000))
    rels = _rels(discover_inputs(tmp_path, recursive=False))
    assert "ok.png" in rels


def test_decompression_bomb_with_image_extension_is_listed_and_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "huge.png").write_bytes(_png_header_only(20000, 20000))
    assert _rels(discover_inputs(tmp_path, recursive=False)) == ["huge.png"]
    with pytest.raises(ImageError) as info:
        load_rgb(tmp_path / "huge.png", resolution=1024)
    assert _one_line(info.value)


# --- output paths ----------------------------------------------------------------------------------------


def test_output_paths_single_sample(tmp_path: Path) -> None:
    p = output_paths(tmp_path, PurePosixPath("a.jpg"), sample=0, samples=1)
    assert p.image == tmp_path / "a.jpg.png"
    assert p.log == tmp_path / "logs" / "a.jpg.jsonl"
    q = output_paths(tmp_path, PurePosixPath("a.png"), sample=0, samples=1)
    assert q.image == tmp_path / "a.png.png" != p.image
    assert q.log != p.log
    nested = output_paths(tmp_path, PurePosixPath("sub/c.png"), sample=0, samples=1)
    assert nested.image == tmp_path / "sub" / "c.png.png"
    assert nested.log == tmp_path / "logs" / "sub" / "c.png.jsonl"


def test_output_paths_samples(tmp_path: Path) -> None:
    paths = [output_paths(tmp_path, PurePosixPath("a.jpg"), sample=k, samples=3) for k in range(3)]
    assert [p.image.name for p in paths] == ["a.jpg.sample0.png", "a.jpg.sample1.png", "a.jpg.sample2.png"]
    assert [p.log for p in paths] == [tmp_path / "logs" / f"a.jpg.sample{k}.jsonl" for k in range(3)]


def test_output_paths_never_collide(tmp_path: Path) -> None:
    rels = ["a.jpg", "a.png", "a", "a.png.png", "sub/a.jpg", "logs/a.jpg", "A.jpg"]
    for samples in (1, 2):
        images, logs = [], []
        for rel in rels:
            for k in range(samples):
                p = output_paths(tmp_path, PurePosixPath(rel), sample=k, samples=samples)
                images.append(p.image)
                logs.append(p.log)
        assert len(set(images)) == len(images)
        assert len(set(logs)) == len(logs)
        assert not set(images) & set(logs)


# --- reading images --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, suffix, kwargs", [
    ("PNG", ".png", {}),
    ("BMP", ".bmp", {}),
    ("WEBP", ".webp", {"lossless": True}),
    ("TIFF", ".tif", {}),
    ("GIF", ".gif", {}),
    ("PPM", ".ppm", {}),
    ("TGA", ".tga", {}),
])
def test_load_rgb_lossless_formats(tmp_path: Path, fmt: str, suffix: str, kwargs: dict) -> None:
    a = _quadrants()
    path = tmp_path / f"img{suffix}"
    Image.fromarray(a).save(path, fmt, **kwargs)
    t = load_rgb(path)
    assert t.shape == (3, 16, 16) and t.dtype == torch.float32
    assert np.array_equal(_as_hwc(t), a.astype(np.float32) / 255)


def test_load_rgb_jpeg(tmp_path: Path) -> None:
    a = _quadrants()
    path = tmp_path / "img.jpg"
    Image.fromarray(a).save(path, quality=95)
    t = load_rgb(path)
    assert t.shape == (3, 16, 16)
    # lossy (and chroma-subsampled), but the colours are where they should be: compare quadrant interiors
    img = _as_hwc(t)
    for rows, cols, colour in [(slice(2, 6), slice(2, 6), RED), (slice(2, 6), slice(10, 14), GREEN),
                               (slice(10, 14), slice(2, 6), BLUE), (slice(10, 14), slice(10, 14), OTHER)]:
        assert np.abs(img[rows, cols].reshape(-1, 3).mean(0) - np.array(colour) / 255).max() < 0.1
    with Image.open(path) as im:
        assert np.array_equal(_as_hwc(t), np.asarray(im.convert("RGB"), np.float32) / 255)


def test_load_rgb_real_photo(tmp_path: Path) -> None:
    from skimage import data

    photo = data.astronaut()[:256, :256]
    Image.fromarray(photo).save(tmp_path / "astronaut.png")
    t = load_rgb(tmp_path / "astronaut.png", resolution=1024)
    assert np.array_equal(_as_hwc(t), photo.astype(np.float32) / 255)


def test_load_rgb_gif_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(path) as im:
        assert im.n_frames == 2
    t = load_rgb(path)
    assert torch.equal(t, torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 8, 8))


def test_load_rgb_grey_l(tmp_path: Path) -> None:
    Image.new("L", (8, 8), 100).save(tmp_path / "g.png")
    t = load_rgb(tmp_path / "g.png")
    assert torch.equal(t, torch.full((3, 8, 8), 100 / 255, dtype=torch.float32))


def test_load_rgb_palette(tmp_path: Path) -> None:
    im = Image.new("P", (4, 4), 0)
    im.putpalette([*RED, *GREEN, *BLUE] + [0] * (256 * 3 - 9))
    im.putpixel((1, 2), 2)
    im.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as check:
        assert check.mode == "P"
    t = load_rgb(tmp_path / "p.png")
    assert t[:, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert t[:, 2, 1].tolist() == [0.0, 0.0, 1.0]  # row 2, column 1


def test_load_rgb_palette_transparency_over_white(tmp_path: Path) -> None:
    im = Image.new("P", (4, 4), 0)
    im.putpalette([*RED, *GREEN] + [0] * (256 * 3 - 6))
    im.putpixel((0, 0), 1)
    im.save(tmp_path / "pt.png", transparency=0)
    t = load_rgb(tmp_path / "pt.png")
    assert t[:, 0, 0].tolist() == [0.0, 1.0, 0.0]
    assert t[:, 3, 3].tolist() == [1.0, 1.0, 1.0]  # transparent red shows white


@pytest.mark.parametrize("values", [
    [[0, 1, 255, 256], [1000, 30000, 65535, 2], [7, 77, 777, 7777], [12345, 54321, 40000, 60000]],
    [[0, 1, 2, 3], [10, 20, 30, 40], [100, 150, 200, 255], [5, 6, 7, 8]],  # dark: every value <= 255
])
def test_load_rgb_16bit_grey_png(tmp_path: Path, values: list[list[int]]) -> None:
    x = np.array(values, np.uint16)
    Image.fromarray(x).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as check:
        assert check.mode.startswith("I")
    t = load_rgb(tmp_path / "g16.png")
    expected = torch.from_numpy((x / 65535.0).astype(np.float32))
    for c in range(3):
        assert torch.equal(t[c], expected)


def test_load_rgb_16bit_pgm(tmp_path: Path) -> None:
    x = np.array([[0, 1, 2, 3], [10, 20, 30, 40], [100, 150, 200, 255], [5, 6, 7, 8]], np.uint16)
    Image.fromarray(x).save(tmp_path / "g16.pgm")
    assert (tmp_path / "g16.pgm").read_bytes().startswith(b"P5\n4 4\n65535\n")
    t = load_rgb(tmp_path / "g16.pgm")
    assert torch.equal(t[0], torch.from_numpy((x / 65535.0).astype(np.float32)))


def test_load_rgb_rgba_over_white(tmp_path: Path) -> None:
    a = np.zeros((2, 2, 4), np.uint8)
    a[0, 0] = [255, 0, 0, 0]  # fully transparent red -> white
    a[0, 1] = [255, 0, 0, 255]  # opaque red
    a[1, 0] = [0, 0, 0, 128]  # half-transparent black -> mid grey
    a[1, 1] = [0, 0, 255, 255]
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    t = load_rgb(tmp_path / "a.png")
    assert t[:, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert t[:, 0, 1].tolist() == [1.0, 0.0, 0.0]
    assert torch.allclose(t[:, 1, 0], torch.full((3,), 127 / 255), atol=1.01 / 255)
    assert t[:, 1, 1].tolist() == [0.0, 0.0, 1.0]


def _oriented_test_image() -> np.ndarray:
    """Stored 16 wide x 8 high: left half red with a green top-left 8x4 corner, right half blue."""
    a = np.zeros((8, 16, 3), np.uint8)
    a[:, :8] = RED
    a[:4, :8] = GREEN
    a[:, 8:] = BLUE
    return a


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_load_rgb_applies_exif_orientation_6(tmp_path: Path, suffix: str) -> None:
    """Orientation 6: the viewer rotates 90 degrees clockwise. Stored (x, y) shows at (H-1-y, x)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"o6{suffix}"
    Image.fromarray(_oriented_test_image()).save(path, exif=exif, **({"quality": 95} if suffix == ".jpg" else {}))
    t = load_rgb(path)
    assert t.shape == (3, 16, 8)  # displayed 8 wide x 16 high
    img = _as_hwc(t)

    def mean(region: np.ndarray) -> np.ndarray:
        return region.reshape(-1, 3).mean(0)

    tol = 0.02 if suffix == ".png" else 0.15
    # stored left half (red/green) -> displayed top half; stored top rows (green) -> displayed right side
    assert np.abs(mean(img[1:7, 5:7]) - np.array(GREEN) / 255).max() < tol
    assert np.abs(mean(img[1:7, 1:3]) - np.array(RED) / 255).max() < tol
    assert np.abs(mean(img[9:15, 1:7]) - np.array(BLUE) / 255).max() < tol


def test_rotated_non_square_image_is_still_refused_as_non_square(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: swaps width and height, never makes a square
    Image.new("RGB", (32, 16)).save(tmp_path / "o.png", exif=exif)
    with pytest.raises(ImageError, match="square"):
        load_rgb(tmp_path / "o.png", resolution=1024)


# --- size checks and broken files ------------------------------------------------------------------------


@pytest.mark.parametrize("w, h, res", [(16, 16, 1024), (1024, 1024, 1024), (4, 4, 1024), (32, 32, 256),
                                       (256, 256, 256)])
def test_check_size_accepts(w: int, h: int, res: int) -> None:
    check_size(w, h, res)


@pytest.mark.parametrize("w, h, res, words", [
    (17, 17, 1024, ["17x17", "divide", "1024"]),
    (16, 15, 1024, ["16x15", "square"]),
    (2048, 2048, 1024, ["2048x2048", "larger", "1024x1024"]),
    (48, 48, 256, ["48x48", "divide"]),
])
def test_check_size_rejects(tmp_path: Path, w: int, h: int, res: int, words: list[str]) -> None:
    with pytest.raises(ImageError) as info:
        check_size(w, h, res)
    assert _one_line(info.value)
    assert all(word in str(info.value) for word in words)
    Image.new("RGB", (w, h)).save(tmp_path / "x.png")
    with pytest.raises(ImageError) as info2:
        load_rgb(tmp_path / "x.png", resolution=res)
    assert str(info2.value) == str(info.value)


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty") as info:
        load_rgb(tmp_path / "empty.png")
    assert _one_line(info.value)


@pytest.mark.parametrize("content", [random.Random(1).randbytes(500), b"hello, I am text\n" * 10])
def test_corrupt_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "bad.png").write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_rgb(tmp_path / "bad.png")
    assert _one_line(info.value)


def test_truncated_png(tmp_path: Path) -> None:
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = _png_bytes(noisy)
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as info:
        load_rgb(tmp_path / "cut.png")
    assert _one_line(info.value)


def test_size_is_checked_before_decoding(tmp_path: Path) -> None:
    noisy = np.random.default_rng(0).integers(0, 256, (17, 17, 3), dtype=np.uint8)
    data = _png_bytes(noisy)
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="17x17"):
        load_rgb(tmp_path / "cut.png", resolution=1024)


def test_wrong_size_png_is_rejected_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import PngImagePlugin

    Image.new("RGB", (48, 48)).save(tmp_path / "x.png")
    decoded = []
    original = PngImagePlugin.PngImageFile.load

    def spy(self):
        decoded.append(self.size)
        return original(self)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", spy)
    with pytest.raises(ImageError, match="48x48"):
        load_rgb(tmp_path / "x.png", resolution=1024)
    assert decoded == []


def test_wrong_size_jpeg_is_rejected_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import JpegImagePlugin

    Image.new("RGB", (48, 48)).save(tmp_path / "x.jpg")
    decoded = []
    original = JpegImagePlugin.JpegImageFile.load

    def spy(self):
        decoded.append(self.size)
        return original(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    with pytest.raises(ImageError, match="48x48"):
        load_rgb(tmp_path / "x.jpg", resolution=1024)
    assert decoded == []


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as info:
        load_rgb(tmp_path / "nope.png")
    assert _one_line(info.value)


# --- writing images --------------------------------------------------------------------------------------


def test_save_png_round_trip(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 16, 16), generator=g).float() / 255
    path = tmp_path / "deep" / "er" / "x.png"
    save_png(image, path, text={"pulse": "ünïcode ✓", "seed": "7"})
    assert torch.equal(load_rgb(path), image)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (16, 16)
        assert im.text["pulse"] == "ünïcode ✓" and im.text["seed"] == "7"
    assert os.listdir(path.parent) == ["x.png"]


def test_to_pil_rounds_and_clamps() -> None:
    image = torch.tensor([-1.0, 0.0, 0.4 / 255, 0.6 / 255, 0.502, 1.0, 2.0]).view(1, 1, 7).expand(3, 1, 7)
    assert np.asarray(to_pil(image))[0, :, 0].tolist() == [0, 0, 0, 1, 128, 255, 255]


def test_save_png_failure_leaves_destination_untouched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.png"
    path.write_bytes(b"old content")

    def boom(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        save_png(torch.zeros(3, 4, 4), path)
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["x.png"]


def test_atomic_write_failure_during_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")

    def boom(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new" * 1000)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_atomic_write_replaces(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.bin"
    atomic_write_bytes(path, b"one")
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(path.parent) == ["b.bin"]


def test_jsonl_writers(tmp_path: Path) -> None:
    records = [{"a": 1, "s": "ünï\ncode"}, {"b": [1.5, None, True]}]
    path = tmp_path / "x.jsonl"
    write_jsonl(path, records)
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 2
    assert [json.loads(line) for line in raw.decode("utf-8").splitlines()] == records
    write_jsonl(path, records[:1])
    assert [json.loads(line) for line in path.read_text("utf-8").splitlines()] == records[:1]

    log = tmp_path / "sub" / "log.jsonl"
    for r in records:
        append_jsonl(log, r)
    append_jsonl(log, {"c": "three"})
    assert [json.loads(line) for line in log.read_text("utf-8").splitlines()] == [*records, {"c": "three"}]


def _strict_json(line: str):
    def refuse(name):
        raise AssertionError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_jsonl_writes_non_finite_numbers_as_null(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    write_jsonl(path, [{"l2": float("nan"), "loss": {"L2": float("inf")}, "xs": [1.5, float("-inf")]}])
    assert _strict_json(path.read_text()) == {"l2": None, "loss": {"L2": None}, "xs": [1.5, None]}
    append_jsonl(path, {"total": float("inf")})
    assert [_strict_json(line) for line in path.read_text().splitlines()][1] == {"total": None}


def test_jsonl_keeps_names_that_are_not_utf8(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not valid UTF-8, held as a surrogate escape
    append_jsonl(tmp_path / "r.jsonl", {"input": name})
    raw = (tmp_path / "r.jsonl").read_bytes()
    assert raw.isascii()
    assert os.fsencode(_strict_json(raw.decode())["input"]) == b"caf\xe9.png"


def test_append_cuts_a_torn_last_line_first(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "ab") as f:
        f.write(b'{"b": 2, "tor')  # a crash or a full disk mid-line
    assert read_jsonl(path) == [{"a": 1}]  # readers pass over it meanwhile
    append_jsonl(path, {"c": 3})
    assert [_strict_json(line) for line in path.read_text().splitlines()] == [{"a": 1}, {"c": 3}]
    path.write_bytes(b'{"only": "torn')
    append_jsonl(path, {"d": 4})
    assert path.read_text() == '{"d":4}\n'


def test_append_writes_the_whole_line_despite_short_writes(tmp_path: Path, monkeypatch) -> None:
    import pulse_cli.files.atomic as atomic

    real_write = os.write

    def short_write(fd, data):
        return real_write(fd, bytes(data[:3]))  # the kernel may accept fewer bytes than asked

    monkeypatch.setattr(atomic.os, "write", short_write)
    append_jsonl(tmp_path / "r.jsonl", {"key": "a value longer than three bytes"})
    atomic_write_bytes(tmp_path / "f.bin", b"0123456789")
    monkeypatch.undo()
    assert _strict_json((tmp_path / "r.jsonl").read_text()) == {"key": "a value longer than three bytes"}
    assert (tmp_path / "f.bin").read_bytes() == b"0123456789"


def test_a_failed_append_leaves_no_partial_line(tmp_path: Path, monkeypatch) -> None:
    import errno

    import pulse_cli.files.atomic as atomic

    path = tmp_path / "r.jsonl"
    append_jsonl(path, {"a": 1})
    real_write = os.write
    calls = []

    def full_disk(fd, data):
        calls.append(1)
        if len(calls) == 1:
            return real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", full_disk)
    with pytest.raises(OSError):
        append_jsonl(path, {"b": "does not fit"})
    monkeypatch.undo()
    assert path.read_text() == '{"a":1}\n'


def test_atomic_write_errors_name_the_file_and_leave_nothing(tmp_path: Path, monkeypatch) -> None:
    import errno

    import pulse_cli.files.atomic as atomic

    def full_disk(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", full_disk)
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(tmp_path / "out.png", b"x" * 100)
    assert caught.value.filename == str(tmp_path / "out.png") and caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    import pulse_cli.files.atomic as atomic

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    (tmp_path / "sub").mkdir()
    stale = tmp_path / "sub" / f".a.png.png.{atomic._HOST}.{dead_pid}.0a0b0c0d.tmp"
    live = tmp_path / f".b.png.png.{atomic._HOST}.{os.getpid()}.0a0b0c0d.tmp"
    other_host = tmp_path / f".c.png.png.otherhost.{dead_pid}.0a0b0c0d.tmp"
    user_file = tmp_path / "notes.tmp"
    for path in (stale, live, other_host, user_file):
        path.write_bytes(b"x")
    assert atomic.remove_stale_temp_files(tmp_path) == 1
    assert not stale.exists() and live.exists() and other_host.exists() and user_file.exists()


# --- runner ----------------------------------------------------------------------------------------------


def test_derive_seed_stable_and_path_dependent() -> None:
    s = derive_seed(0, "a.png", 0)
    assert s == derive_seed(0, "a.png", 0)
    assert 0 <= s < 2**63
    torch.Generator().manual_seed(s)  # usable as a torch seed
    variants = {derive_seed(0, "b.png", 0), derive_seed(0, "sub/a.png", 0), derive_seed(1, "a.png", 0),
                derive_seed(0, "a.png", 1), derive_seed(0, "a.png.png", 0)}
    assert s not in variants and len(variants) == 5


def test_derive_seed_same_in_another_process() -> None:
    code = "from pulse_cli.run.plan import derive_seed; print(derive_seed(7, 'sub/face.png', 2))"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert int(out.stdout) == derive_seed(7, "sub/face.png", 2)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32x32 StyleGAN v1 in PULSE's format, with a gaussian_fit.pt beside it."""
    folder = tmp_path_factory.mktemp("tiny")
    synthesis, mapping = random_state_dicts()
    path = write_pulse_checkpoint(folder, synthesis, mapping)
    gen = StyleGAN1Generator.from_state_dicts(synthesis, mapping)
    stats = compute_latent_stats(gen.map, gen.z_dim, samples=4096)
    save_tensor_file({"mean": stats.mean, "std": stats.std}, folder / "gaussian_fit.pt")
    return path


@pytest.fixture(scope="module")
def tiny_G(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    return load_generator(tiny_checkpoint, cache_dir=tmp_path_factory.mktemp("cache"))


class RecordingReporter(Reporter):
    def __init__(self) -> None:
        self.done: list[dict] = []
        self.failed: list[tuple[str, str]] = []
        self.steps = 0
        self.image_steps = 0
        self.started: tuple[int, int, int] | None = None
        self.closed = False

    def start(self, inputs: int, samples: int, steps: int) -> None:
        self.started = (inputs, samples, steps)

    def step(self, image_steps: int, l2: float, step: int, steps: int) -> None:
        self.steps += 1
        self.image_steps += image_steps

    def file_done(self, record) -> None:
        self.done.append(record)

    def file_failed(self, rel: str, reason: str) -> None:
        self.failed.append((rel, reason))

    def close(self) -> None:
        self.closed = True


RUN_CONFIG = SearchConfig(steps=4)
RECORD_FIELDS = {"input", "outputs", "logs", "seed", "checkpoint", "checkpoint_sha256", "status", "worst_sample_l2",
                 "best_sample_l2", "steps_run", "seconds", "samples", "error"}


def _make_inputs(root: Path) -> None:
    root.mkdir(parents=True)
    Image.fromarray((_as_hwc(face_target(8)) * 255).round().astype(np.uint8)).save(root / "face.png")
    Image.fromarray((_as_hwc(face_target(8, crop=(0, 0, 256, 256))) * 255).round().astype(np.uint8)).save(
        root / "corner.bmp")
    (root / "bad.png").write_bytes(random.Random(2).randbytes(200))
    Image.new("RGB", (7, 7)).save(root / "odd.png")
    Image.new("RGB", (64, 64)).save(root / "big.png")
    (root / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(root / "sub" / "deep.png")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _finished(rel: str, outputs: list[str], status: str = "ok") -> dict:
    return {"input": rel, "outputs": outputs, "status": status}


def test_plan_jobs_marks_done_by_the_record_written_last(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _make_inputs(root)
    out = root / "out"
    jobs = plan_jobs(root, out, RunOptions())
    assert [str(j.input) for j in jobs] == ["bad.png", "big.png", "corner.bmp", "face.png", "odd.png"]
    assert not any(j.done for j in jobs)
    out.mkdir()
    (out / "face.png.png").write_bytes(b"x")
    (out / "face.png.png.png").write_bytes(b"x")  # an output in the output folder is not an input
    # a result image alone (a run killed before its record) does not make an input done
    assert not any(j.done for j in plan_jobs(root, out, RunOptions()))
    results = out / "results.jsonl"
    append_jsonl(results, _finished("face.png", ["face.png.png"], "not_converged"))
    append_jsonl(results, _finished("corner.bmp", ["corner.bmp.png"]))  # recorded, but its image is gone
    jobs = {str(j.input): j for j in plan_jobs(root, out, RunOptions())}
    assert jobs["face.png"].done and jobs["face.png"].earlier["status"] == "not_converged"
    assert sum(j.done for j in jobs.values()) == 1
    assert not any(j.done for j in plan_jobs(root, out, RunOptions(overwrite=True)))
    # a later failure (e.g. a rerun with --overwrite) undoes it; a skipped record changes nothing
    append_jsonl(results, _finished("face.png", [], "failed"))
    assert not any(j.done for j in plan_jobs(root, out, RunOptions()))
    append_jsonl(results, _finished("face.png", ["face.png.png"]))
    append_jsonl(results, _finished("face.png", ["face.png.png"], "skipped"))
    assert {str(j.input): j.done for j in plan_jobs(root, out, RunOptions())}["face.png"]
    # with two samples, done means a record listing both outputs, and both there
    (out / "corner.bmp.sample0.png").write_bytes(b"x")
    (out / "corner.bmp.sample1.png").write_bytes(b"x")
    assert not {str(j.input): j.done for j in plan_jobs(root, out, RunOptions(samples=2))}["corner.bmp"]
    append_jsonl(results, _finished("corner.bmp", ["corner.bmp.sample0.png", "corner.bmp.sample1.png"]))
    jobs = {str(j.input): j for j in plan_jobs(root, out, RunOptions(samples=2))}
    # face.png was done with one sample: done all the same (only --overwrite redoes it, with two)
    assert jobs["corner.bmp"].done and jobs["face.png"].done
    # but never by a record listing files that are not its input's
    append_jsonl(results, _finished("face.png", ["corner.bmp.sample0.png", "corner.bmp.sample1.png"]))
    assert not {str(j.input): j.done for j in plan_jobs(root, out, RunOptions(samples=2))}["face.png"]
    assert len(plan_jobs(root, out, RunOptions(recursive=True))) == 6


def test_plan_jobs_takes_one_image_as_input(tmp_path: Path) -> None:
    root = tmp_path / "in"
    _make_inputs(root)
    (job,) = plan_jobs(root / "sub" / "deep.png", tmp_path / "out", RunOptions())
    assert str(job.input) == "deep.png" and job.outputs[0].image == tmp_path / "out" / "deep.png.png"


def test_runner_end_to_end(tmp_path: Path, tiny_G, tiny_checkpoint: Path) -> None:
    root = tmp_path / "in"
    _make_inputs(root)
    out = root / "out"
    options = RunOptions(seed=7)
    jobs = plan_jobs(root, out, options)
    reporter = RecordingReporter()
    engine = Engine(tiny_G, config=RUN_CONFIG, batch_size=2)
    summary = Runner(engine, out, options=options, checkpoint=tiny_checkpoint, reporter=reporter).run(jobs)

    records = _read_jsonl(out / "results.jsonl")
    assert len(records) == 5 == summary.total
    by_input = {r["input"]: r for r in records}
    assert set(by_input) == {"bad.png", "big.png", "corner.bmp", "face.png", "odd.png"}
    sha = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    for r in records:
        assert RECORD_FIELDS <= set(r)
        assert r["checkpoint"] == str(tiny_checkpoint)
        assert r["checkpoint_sha256"] == sha
        assert r["seed"] == 7

    # failures: status, one-line error, nothing written, the run went on
    for name, word in [("bad.png", ""), ("big.png", "larger"), ("odd.png", "divide")]:
        r = by_input[name]
        assert r["status"] == "failed"
        assert isinstance(r["error"], str) and r["error"] and "\n" not in r["error"] and word in r["error"]
        assert not (out / f"{name}.png").exists()
    assert sorted(rel for rel, _ in reporter.failed) == ["bad.png", "big.png", "odd.png"]
    assert reporter.closed and reporter.steps > 0
    # the progress is counted in whole optimisation steps and adds up to the run's, failures included
    assert reporter.started == (5, 1, RUN_CONFIG.steps)
    assert reporter.image_steps == 5 * RUN_CONFIG.steps

    # successes: image, log, record
    for name in ("face.png", "corner.bmp"):
        r = by_input[name]
        assert r["status"] in ("ok", "not_converged") and r["error"] is None
        assert r["outputs"] == [f"{name}.png"] and r["logs"] == [f"logs/{name}.jsonl"]
        with Image.open(out / f"{name}.png") as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (32, 32)
        log = [line for line in _read_jsonl(out / "logs" / f"{name}.jsonl")
               if "step" in line and line.get("type", "step") != "run"]  # step lines (skip any header)
        assert [line["step"] for line in log] == list(range(RUN_CONFIG.steps))
        assert all({"step", "lr", "loss", "l2", "total"} <= set(line) for line in log)
        l2s = [line["l2"] for line in log]
        converged = any(v <= RUN_CONFIG.eps for v in l2s)
        assert r["status"] == ("ok" if converged else "not_converged")
        if not converged:
            assert r["worst_sample_l2"] == min(l2s)
        assert r["steps_run"] == RUN_CONFIG.steps
        (sample,) = r["samples"]
        assert sample["image_seed"] == derive_seed(7, name, 0)
        assert sample["best_l2"] == r["worst_sample_l2"] == r["best_sample_l2"]
    assert summary.counts["failed"] == 3
    assert summary.counts["ok"] + summary.counts["not_converged"] == 2
    assert len(reporter.done) == 2

    # the saved image is what the search gives that input alone with its derived seed
    target = load_rgb(root / "face.png")
    (alone,) = pulse_search(tiny_G, target[None], seeds=[derive_seed(7, "face.png", 0)], config=RUN_CONFIG)
    saved = load_rgb(out / "face.png.png")
    assert (saved - alone.image).abs().max().item() <= 1.01 / 255

    # a rerun skips what is done, without a generator
    jobs = plan_jobs(root, out, options)
    done = [j for j in jobs if j.done]
    assert sorted(str(j.input) for j in done) == ["corner.bmp", "face.png"]
    summary2 = Runner(None, out, options=options, checkpoint=tiny_checkpoint).run(done)
    assert summary2.counts["skipped"] == 2
    records = _read_jsonl(out / "results.jsonl")
    assert len(records) == 7
    assert [r["status"] for r in records[5:]] == ["skipped", "skipped"]
    assert all(RECORD_FIELDS <= set(r) for r in records[5:])


def test_runner_one_pixel_input_fails_alone(tmp_path: Path, tiny_G, tiny_checkpoint: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    Image.new("RGB", (1, 1), (9, 9, 9)).save(root / "a_dot.png")
    Image.fromarray((_as_hwc(face_target(8)) * 255).round().astype(np.uint8)).save(root / "face.png")
    out = tmp_path / "out"
    options = RunOptions()
    Runner(Engine(tiny_G, config=RUN_CONFIG), out, options=options,
           checkpoint=tiny_checkpoint).run(plan_jobs(root, out, options))
    by_input = {r["input"]: r for r in _read_jsonl(out / "results.jsonl")}
    assert by_input["a_dot.png"]["status"] == "failed" and "at least 4x4" in by_input["a_dot.png"]["error"]
    assert by_input["face.png"]["status"] in ("ok", "not_converged")


def test_runner_several_samples(tmp_path: Path, tiny_G, tiny_checkpoint: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    Image.fromarray((_as_hwc(face_target(8)) * 255).round().astype(np.uint8)).save(root / "face.png")
    out = tmp_path / "out"
    options = RunOptions(samples=2, seed=3)
    summary = Runner(Engine(tiny_G, config=RUN_CONFIG, batch_size=3), out, options=options,
                     checkpoint=tiny_checkpoint).run(plan_jobs(root, out, options))
    (record,) = _read_jsonl(out / "results.jsonl")
    assert summary.total == 1
    assert record["outputs"] == ["face.png.sample0.png", "face.png.sample1.png"]
    assert record["logs"] == ["logs/face.png.sample0.jsonl", "logs/face.png.sample1.jsonl"]
    assert [s["image_seed"] for s in record["samples"]] == [derive_seed(3, "face.png", k) for k in range(2)]
    # the sample furthest from eps decides the input's status: its L2 is the worst sample's
    l2 = [s["best_l2"] for s in record["samples"]]
    assert (record["worst_sample_l2"], record["best_sample_l2"]) == (max(l2), min(l2))
    assert (record["status"] == "ok") == (record["worst_sample_l2"] <= RUN_CONFIG.eps)
    a, b = load_rgb(out / "face.png.sample0.png"), load_rgb(out / "face.png.sample1.png")
    assert (a - b).abs().max() > 0.05  # different seeds, different faces
    assert all((out / "logs" / f"face.png.sample{k}.jsonl").is_file() for k in range(2))


def test_atomic_writes_get_the_umask_mode_not_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "x.bin", b"data")
    finally:
        os.umask(old)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o644


def test_runner_progress_adds_up_with_samples_and_stop_at_eps(tmp_path: Path, tiny_G, tiny_checkpoint: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray((_as_hwc(face_target(8)) * 255).round().astype(np.uint8)).save(root / name)
    out = tmp_path / "out"
    options = RunOptions(samples=2, stop_at_eps=True)
    config = SearchConfig(steps=6, eps=1.0)  # every search meets eps at its first step and stops there
    reporter = RecordingReporter()
    Runner(Engine(tiny_G, config=config, batch_size=2), out, options=options, checkpoint=tiny_checkpoint,
           reporter=reporter).run(plan_jobs(root, out, options))
    assert all(r["steps_run"] < config.steps for r in _read_jsonl(out / "results.jsonl"))
    # the steps a stopped search skipped are owed to the bar: it ends exactly at its total
    assert reporter.started == (3, 2, 6) and reporter.image_steps == 3 * 2 * 6
