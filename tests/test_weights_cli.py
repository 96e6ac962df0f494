"""`pulse weights ...` through Typer's CliRunner; downloads only from a server started here on 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pulse_cli.checkpoints.loading import convert_checkpoint, load_networks
from pulse_cli.cli import app
from pulse_cli.weights import registry
from pulse_cli.weights.local import find_default_checkpoint
from pulse_cli.weights.locations import user_dir, weights_search_dirs

SAMPLES = ["--latent-samples", "1024"]  # PULSE uses 10^6; a few suffice to test the plumbing
DRIVE_ID = "1MEGjdvVpUsu1jB4zrXZN7Y4kBBOzizDQ"
DRIVE_URL = f"https://drive.google.com/uc?id={DRIVE_ID}"
CDN_V1 = "https://nvlabs-fi-cdn.nvidia.com/stylegan/networks/karras2019stylegan-ffhq-1024x1024.pkl"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()




def weights(runner: CliRunner, *args: object):
    return runner.invoke(app, ["weights", *map(str, args)])


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    """The sg2ada fixture (StyleGAN2 64x64) as pulse's safetensors file, statistics included."""
    folder = tmp_path_factory.mktemp("served")
    return convert_checkpoint(fixtures_dir / "sg2ada_network.pkl", folder / "small.safetensors", samples=1024,
                              cache_dir=folder / "cache", metadata={"licence": "test-only licence"})


@pytest.fixture(scope="module")
def server(converted: Path, fixtures_dir: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT serving /small.safetensors and, under /fixtures/, the read-only fixtures."""
    root = converted.parent
    (root / "fixtures").mkdir(exist_ok=True)
    link = root / "fixtures" / "sg2ada_network.pkl"
    if not link.exists():
        link.symlink_to(fixtures_dir / "sg2ada_network.pkl")  # served in place, never copied

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# ------------------------------------------------------------------------------------------------------ list


def test_list_json_and_table(runner: CliRunner, tmp_path: Path) -> None:
    result = weights(runner, "list", "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == [m.name for m in registry.KNOWN_MODELS]
    for r in rows:
        assert {"name", "family", "resolution", "url", "licence", "present", "training_data"} <= set(r)
        assert r["present"] is False
    generators = [r for r in rows if r["kind"] == "generator"]
    assert all(r["url"].startswith("https://") and "non-commercial" in r["licence"].lower() for r in generators)

    # a converted copy in ./weights counts as present
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "karras2019stylegan-ffhq-1024x1024.safetensors").write_bytes(b"x")
    rows = json.loads(weights(runner, "list", "--json").stdout)
    present = {r["name"]: r["present"] for r in rows}
    assert present["stylegan-ffhq-1024"] is True and present["stylegan2-ffhq-config-f"] is False

    table = weights(runner, "list")
    assert table.exit_code == 0 and "stylegan2-ada-ffhq" in table.stdout and "non-commercial" in table.stdout


def test_list_shows_sources_in_order_and_the_unverified_one(runner: CliRunner) -> None:
    rows = {r["name"]: r for r in json.loads(weights(runner, "list", "--json").stdout)}
    v1 = rows["stylegan-ffhq-1024"]
    assert [(s["kind"], s["verified"], s["status"]) for s in v1["sources"]] == [
        ("gdrive", True, "verified"), ("url", False, "unverified")]
    assert v1["sources"][0]["location"] == DRIVE_ID and v1["url"] == DRIVE_URL
    assert v1["sources"][1]["url"] == CDN_V1
    for name in ("stylegan2-ffhq-config-f", "stylegan2-ada-ffhq", "stylegan2-ffhq-1024"):
        assert [(s["kind"], s["status"]) for s in rows[name]["sources"]] == [("url", "verified")], name
        assert rows[name]["url"] == rows[name]["sources"][0]["url"]
    assert rows["gaussian-fit-stylegan-ffhq"]["sources"] == [] and rows["gaussian-fit-stylegan-ffhq"]["url"] is None

    table = runner.invoke(app, ["weights", "list"], env={"COLUMNS": "400"}).stdout  # wide: no folded URLs
    assert f"{CDN_V1} (unverified)" in table and table.replace("(unverified):", "").count("(unverified)") == 1
    assert DRIVE_URL in table


# ------------------------------------------------------------------------------------------------------ info


@pytest.mark.parametrize("name,fmt,family,res,num_ws,noise", [
    ("sg1tf_network.pkl", "sg1-tf", "stylegan1", 256, 14, 14),
    ("sg2tf_network.pkl", "sg2-tf", "stylegan2", 64, 10, 9),
    ("sg2ada_network.pkl", "sg2ada", "stylegan2", 64, 10, 9),
    ("rosinality_g_ema.pt", "rosinality", "stylegan2", 64, 10, 9),
])
def test_info_on_fixtures(runner: CliRunner, fixtures_dir: Path, name: str, fmt: str, family: str, res: int,
                          num_ws: int, noise: int) -> None:
    result = weights(runner, "info", fixtures_dir / name, "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert (info["format"], info["family"], info["resolution"]) == (fmt, family, res)
    assert (info["num_ws"], info["w_dim"], info["noise_layers"]) == (num_ws, 512, noise)
    assert info["parameters"] > 1_000_000 and info["sha256"] == sha256(fixtures_dir / name)
    assert info["licence"] is None  # unknown: nothing in the file or its name says
    text = weights(runner, "info", fixtures_dir / name)
    assert text.exit_code == 0 and f"noise layers:  {noise}" in text.stdout and "unknown" in text.stdout


def test_info_on_converted_file_shows_metadata(runner: CliRunner, converted: Path) -> None:
    info = json.loads(weights(runner, "info", converted, "--json").stdout)
    assert info["format"] == "pulse-safetensors" and info["latent_stats"] == "in the file"
    assert info["licence"] == "test-only licence" and info["source"] == "sg2ada_network.pkl"
    assert len(info["source_sha256"]) == 64


def test_info_on_a_model_name_shows_sources_and_the_unverified_label(runner: CliRunner) -> None:
    text = weights(runner, "info", "stylegan-ffhq-1024")
    assert text.exit_code == 0, text.stderr
    lines = text.stdout.splitlines()
    assert [line for line in lines if "(unverified)" in line] == [
        next(line for line in lines if CDN_V1 in line)]
    assert any(line.startswith("sources:") and DRIVE_URL in line for line in lines)
    model = json.loads(weights(runner, "info", "stylegan-ffhq-1024", "--json").stdout)
    assert [s["status"] for s in model["sources"]] == ["verified", "unverified"]
    assert "(unverified)" not in weights(runner, "info", "stylegan2-ada-ffhq").stdout


def test_info_on_a_known_model_file_shows_its_sources(runner: CliRunner, fixtures_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # The real file is 1024 px; the fixture is a 256 px StyleGAN v1 TF pickle, so the entry is shrunk to match.
    real = registry.find_model("stylegan-ffhq-1024")
    monkeypatch.setattr(registry, "KNOWN_MODELS", (registry.KnownModel(**{**real.__dict__, "resolution": 256}),))
    path = tmp_path / real.filename
    path.symlink_to(fixtures_dir / "sg1tf_network.pkl")
    info = json.loads(weights(runner, "info", path, "--json").stdout)
    assert info["model"] == "stylegan-ffhq-1024" and info["licence"] == real.licence
    assert [(s["url"], s["status"]) for s in info["sources"]] == [(DRIVE_URL, "verified"), (CDN_V1, "unverified")]
    text = weights(runner, "info", path).stdout
    assert f"{CDN_V1} (unverified)" in text and "sources:" in text


def test_info_errors_are_one_line_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04junk")
    for path in (tmp_path / "missing.pt", tmp_path / "junk.pkl"):
        result = weights(runner, "info", path)
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr and str(path) in result.stderr


# ------------------------------------------------------------------------------------------------------ convert


def test_convert_then_verify(runner: CliRunner, fixtures_dir: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out" / "v1.safetensors"
    result = weights(runner, "convert", fixtures_dir / "sg1tf_network.pkl", dst, *SAMPLES,
                     "--licence", "CC BY-NC 4.0 (test)", "--source", "https://example.invalid/v1.pkl")
    assert result.exit_code == 0, result.stderr
    assert "computing latent statistics" in result.stderr and result.stdout == ""
    loaded = load_networks(dst)
    assert loaded.format == "pulse-safetensors" and loaded.latent_stats is not None
    assert loaded.metadata["licence"] == "CC BY-NC 4.0 (test)"
    assert loaded.metadata["source"] == "https://example.invalid/v1.pkl"
    assert loaded.metadata["source_format"] == "sg1-tf"
    assert (dst.parent / "v1.safetensors.sha256").read_text().split()[0] == sha256(dst)

    again = weights(runner, "convert", fixtures_dir / "sg1tf_network.pkl", dst, *SAMPLES)
    assert again.exit_code == 2 and "--overwrite" in again.stderr

    ok = weights(runner, "verify", dst)
    assert ok.exit_code == 0 and ok.stdout.startswith("ok")
    data = bytearray(dst.read_bytes())
    data[-10] ^= 0xFF
    dst.write_bytes(bytes(data))
    bad = weights(runner, "verify", dst)
    assert bad.exit_code == 1 and "MISMATCH" in bad.stdout and "failed verification" in bad.stderr
    assert "Traceback" not in bad.stderr
    report = json.loads(weights(runner, "verify", dst.parent, "--json").stdout)
    assert [r["status"] for r in report] == ["mismatch"]


def test_convert_into_a_folder_and_bad_sources(runner: CliRunner, fixtures_dir: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    result = weights(runner, "convert", fixtures_dir / "rosinality_g_ema.pt", tmp_path / "w", *SAMPLES)
    assert result.exit_code == 0, result.stderr
    assert load_networks(tmp_path / "w" / "rosinality_g_ema.safetensors").format == "pulse-safetensors"
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 truncated zip")
    for src in (tmp_path / "bad.pt", tmp_path / "nope.pkl", fixtures_dir / "pulse_gaussian_fit.pt"):
        result = weights(runner, "convert", src, tmp_path / "x.safetensors", *SAMPLES)
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.safetensors").exists()


def test_verify_default_scans_the_weights_folders(runner: CliRunner, converted: Path, tmp_path: Path) -> None:
    nothing = weights(runner, "verify")
    assert nothing.exit_code == 0 and "nothing to verify" in nothing.stderr
    home = weights_search_dirs()[1]
    home.mkdir(parents=True)
    shutil.copyfile(converted, home / "m.safetensors")
    (home / "m.safetensors.sha256").write_text(f"{sha256(converted)}  m.safetensors\n")
    result = weights(runner, "verify")
    assert result.exit_code == 0 and "ok" in result.stdout and "m.safetensors" in result.stdout
    assert weights(runner, "verify", tmp_path / "nope.bin").exit_code == 2
    (home / "m.safetensors").unlink()
    missing = weights(runner, "verify")
    assert missing.exit_code == 1 and "MISSING" in missing.stdout


# ------------------------------------------------------------------------------------------------------ download


def test_download_converted_file(runner: CliRunner, server: str, converted: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dl"
    result = weights(runner, "download", f"{server}/small.safetensors", "--dest", dest)
    assert result.exit_code == 0, result.stderr
    got = dest / "small.safetensors"
    assert got.read_bytes() == converted.read_bytes()
    assert (dest / "small.safetensors.sha256").read_text().split()[0] == sha256(converted)
    assert "ready" in result.stderr and sorted(p.name for p in dest.iterdir()) == [
        "small.safetensors", "small.safetensors.sha256"]
    assert weights(runner, "verify", got).exit_code == 0
    pinned = weights(runner, "download", f"{server}/small.safetensors", "--dest", tmp_path / "dl2",
                     "--sha256", sha256(converted).upper())
    assert pinned.exit_code == 0, pinned.stderr


def test_download_failures_exit_1_and_leave_nothing(runner: CliRunner, server: str, tmp_path: Path) -> None:
    dest = tmp_path / "dl"
    missing = weights(runner, "download", f"{server}/nothing-here.pkl", "--dest", dest)
    assert missing.exit_code == 1 and "404" in missing.stderr and "Traceback" not in missing.stderr
    assert not dest.exists()  # not even the folder it would have gone into
    wrong = weights(runner, "download", f"{server}/small.safetensors", "--dest", dest, "--sha256", "0" * 64)
    assert wrong.exit_code == 1 and "checksum mismatch" in wrong.stderr
    assert wrong.stderr.count("\n") == 1
    assert not dest.exists()


def test_download_argument_errors_exit_2(runner: CliRunner, tmp_path: Path) -> None:
    cases = {
        "stylegan2-ffhq-confg-f": "Did you mean stylegan2-ffhq-config-f",
        "gaussian-fit-stylegan-ffhq": "nothing to download",
        "ftp://127.0.0.1/x.pkl": "http",
    }
    for target, message in cases.items():
        result = weights(runner, "download", target, "--dest", tmp_path / "dl")
        assert result.exit_code == 2 and message in result.stderr, (target, result.stderr)
    bad_pin = weights(runner, "download", "http://127.0.0.1:9/x.pkl", "--sha256", "xyz")
    assert bad_pin.exit_code == 2 and "64 hexadecimal" in bad_pin.stderr


def test_download_by_name_converts_with_licence(runner: CliRunner, server: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry.find_model("stylegan2-ada-ffhq")
    source = registry.Source("url", f"{server}/fixtures/sg2ada_network.pkl", verified=True)
    local = registry.KnownModel(**{**real.__dict__, "sources": (source,)})
    monkeypatch.setattr(registry, "KNOWN_MODELS", (local,))
    result = weights(runner, "download", "stylegan2-ada-ffhq", *SAMPLES)  # into the user folder
    assert result.exit_code == 0, result.stderr
    home = weights_search_dirs()[1]
    assert (home / "ffhq.pkl").is_file() and (home / "ffhq.pkl.sha256").is_file()
    converted = home / "ffhq.safetensors"
    meta = load_networks(converted).metadata
    assert meta["licence"] == real.licence and meta["source"] == local.url and "FFHQ" in meta["training_data"]
    assert meta["source_sha256"] == sha256(home / "ffhq.pkl")
    assert find_default_checkpoint(weights_search_dirs()) == converted
    assert weights(runner, "verify").exit_code == 0
    assert json.loads(weights(runner, "list", "--json").stdout)[0]["present"] is True


def _drive_refuses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """gdown.download that meets Drive's quota page (no network); returns the file ids it was asked for."""
    import gdown
    from gdown.exceptions import FileURLRetrievalError

    asked: list[str] = []

    def refuse(url=None, output=None, quiet=False, id=None, **kwargs):
        asked.append(id)
        raise FileURLRetrievalError("Too many users have viewed or downloaded this file recently.")

    monkeypatch.setattr(gdown, "download", refuse)
    return asked


def _v1_with_sources(monkeypatch: pytest.MonkeyPatch, second_url: str) -> registry.KnownModel:
    real = registry.find_model("stylegan-ffhq-1024")
    model = registry.KnownModel(**{**real.__dict__, "resolution": 256, "sources": (
        real.sources[0], registry.Source("url", second_url, verified=False))})
    monkeypatch.setattr(registry, "KNOWN_MODELS", (model,))
    return model


def test_download_falls_back_from_drive_to_the_next_source(runner: CliRunner, server: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _drive_refuses(monkeypatch)
    (tmp_path / "served").mkdir()
    url = f"{server}/fixtures/sg2ada_network.pkl"  # any checkpoint will do: the test is about the sources
    _v1_with_sources(monkeypatch, url)
    dest = tmp_path / "dl"
    result = weights(runner, "download", "stylegan-ffhq-1024", "--dest", dest, "--no-convert")
    assert result.exit_code == 0, result.stderr
    assert asked == [DRIVE_ID]
    refused = [line for line in result.stderr.splitlines() if "Google Drive refused" in line]
    assert len(refused) == 1 and DRIVE_URL in refused[0] and f"pulse weights convert FILE {dest}" in refused[0]
    assert "trying the next source" in refused[0]
    assert sorted(p.name for p in dest.iterdir()) == [
        "karras2019stylegan-ffhq-1024x1024.pkl", "karras2019stylegan-ffhq-1024x1024.pkl.sha256"]


def test_download_with_every_source_failing_exit_1_one_line_each(runner: CliRunner, server: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _drive_refuses(monkeypatch)
    _v1_with_sources(monkeypatch, f"{server}/nothing-here.pkl")
    dest = tmp_path / "dl"
    result = weights(runner, "download", "stylegan-ffhq-1024", "--dest", dest)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr  # the licence note, then one line per failed source
    assert "Google Drive refused" in lines[1] and "404" in lines[2] and "every source failed" in lines[2]
    # the last line says how to do it by hand, into the folder the download was for
    assert DRIVE_URL in lines[2] and f"{server}/nothing-here.pkl" in lines[2]
    assert f"`pulse weights convert FILE {dest}`" in lines[2] and f"--checkpoint {dest}" in lines[2]
    assert not dest.exists()


def test_a_failed_stylegan2_download_names_the_folder_upsample_searches(runner: CliRunner, server: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    real = registry.find_model("stylegan2-ffhq-config-f")
    url = f"{server}/missing/stylegan2-ffhq-config-f.pkl"
    model = registry.KnownModel(**{**real.__dict__, "sources": (registry.Source("url", url, verified=True),)})
    monkeypatch.setattr(registry, "KNOWN_MODELS", (model,))
    result = weights(runner, "download", "stylegan2-ffhq-config-f")
    assert result.exit_code == 1
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    home = user_dir()  # the runner's PULSE_HOME: where `pulse upsample` looks, so no --checkpoint is needed
    assert "404" in error and f"by hand: fetch {url}" in error and f"`pulse weights convert FILE {home}`" in error
    assert "--checkpoint" not in error


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_list_at_80_columns_keeps_urls_whole_and_leaves_out_what_is_not_downloaded(runner: CliRunner) -> None:
    # FORCE_COLOR: rich takes stdout for a terminal, as `pulse weights list` typed in one
    table = ANSI.sub("", runner.invoke(app, ["weights", "list"], env={"COLUMNS": "80", "FORCE_COLOR": "1"}).stdout)
    for model in registry.KNOWN_MODELS:
        for source in model.sources:
            assert source.url in table  # on a line of its own, whole
    assert "gaussian-fit-stylegan-ffhq" in table and "computed by pulse" in table
    prose = [line for line in table.splitlines() if "://" not in line]
    assert max(len(line) for line in prose) <= 80
    # a model's lines that wrap go on indented, under its name: only names start in column 0
    starts = [line.split()[0] for line in prose if line and not line[0].isspace()]
    names = [m.name for m in registry.KNOWN_MODELS if m.sources]
    assert starts[:len(names)] == names
    result = weights(runner, "download", "gaussian-fit-stylegan-ffhq")
    assert result.exit_code == 2 and "computes it from the generator" in result.stderr


def test_list_in_a_pipe_is_one_record_per_line(runner: CliRunner, tmp_path: Path) -> None:
    """`pulse weights list | grep NAME` gives the whole record; `awk -F'\t'` its fields, whatever the width."""
    (tmp_path / "weights").mkdir()
    copy = tmp_path / "weights" / "ffhq.pkl"
    copy.write_bytes(b"x")
    result = runner.invoke(app, ["weights", "list"], env={"COLUMNS": "40"})
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == [m.name for m in registry.KNOWN_MODELS]
    for line, model in zip(lines, registry.KNOWN_MODELS, strict=True):
        name, family, resolution, local, licence, purpose, sources = line.split("\t")
        assert (family, resolution, licence) == (model.family, f"{model.resolution} px", model.licence)
        assert purpose == (model.purpose or "-")
        labels = [w for s in model.sources for w in ([s.url] if s.verified else [s.url, "(unverified)"])]
        assert sources.split() == labels or (not model.sources and sources == "computed by pulse")
        assert local == (str(copy) if model.name == "stylegan2-ada-ffhq" else "not downloaded")
    # the prose is on stderr, with the fields named and --json pointed to
    assert "tab-separated" in result.stderr and "--json" in result.stderr and "FFHQ" in result.stderr


# ------------------------------------------------------------------------------------------------------ upsample


def _one_crop(folder: Path) -> Path:
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / "a.png")
    return folder


def test_upsample_end_to_end_on_converted_stylegan2(runner: CliRunner, converted: Path, tmp_path: Path) -> None:
    src = _one_crop(tmp_path / "in")
    result = runner.invoke(app, ["upsample", str(src), str(tmp_path / "out"), "--checkpoint", str(converted),
                                 "--steps", "3", "--device", "cpu", "--json", "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert "computing latent statistics" not in result.stderr
    summary = json.loads(result.stdout)
    assert summary["total"] == 1 and summary["failed"] == 0
    with Image.open(tmp_path / "out" / "a.png.png") as image:
        assert image.size == (64, 64)


def test_upsample_end_to_end_on_stylegan1_pickle(runner: CliRunner, fixtures_dir: Path, tmp_path: Path) -> None:
    src = _one_crop(tmp_path / "in")
    result = runner.invoke(app, ["upsample", str(src), str(tmp_path / "out"), "--checkpoint",
                                 str(fixtures_dir / "sg1tf_network.pkl"), "--gaussian-fit",
                                 str(fixtures_dir / "pulse_gaussian_fit.pt"), "--steps", "3", "--device", "cpu",
                                 "--json", "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["failed"] == 0
    with Image.open(tmp_path / "out" / "a.png.png") as image:
        assert image.size == (256, 256)


def test_help_lists_weights_without_importing_torch() -> None:
    code = "import sys; from pulse_cli.cli import app; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    result = subprocess.run([sys.executable, "-m", "pulse_cli", "weights", "--help"], capture_output=True,
                            text=True)
    assert result.returncode == 0
    for command in ("list", "download", "verify", "info", "convert"):
        assert command in result.stdout
