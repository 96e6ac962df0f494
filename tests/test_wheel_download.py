"""`pulse weights download dcgan-digiface-64`: the pinned wheel through pip (a stand-in pip here, run as a real
subprocess), both sha256 checks, the weights extracted and converted, and nothing left behind on any failure."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import dcgan_state_dict, save_tensor_file

from pulse_cli.checkpoints import safetensors_file as st
from pulse_cli.cli import app
from pulse_cli.weights import download, registry

MEMBER = "gan_face_generate/weights.tar"
REQUIREMENT = "gan-face-generate==1.1.1"
# A stand-in for `python -m pip`: records its arguments and environment, then acts as FAKE_PIP_MODE says.
FAKE_PIP = '''
import json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_PIP_LOG"], "w") as f:
    json.dump({"args": args, "index_url": os.environ.get("PIP_INDEX_URL")}, f)
mode = os.environ.get("FAKE_PIP_MODE", "ok")
if mode == "fail":
    print("Looking in indexes: https://mirror.invalid/simple", file=sys.stderr)
    print("ERROR: No matching distribution found for " + args[-1], file=sys.stderr)
    sys.exit(1)
dest = args[args.index("--dest") + 1]
os.makedirs(dest, exist_ok=True)
shutil.copy(os.environ["FAKE_WHEEL"], os.path.join(dest, "gan_face_generate-1.1.1-py3-none-any.whl"))
'''


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_wheel(folder: Path, member: str = MEMBER) -> tuple[Path, Path]:
    """A wheel holding a small DCGAN's training checkpoint at `member` (and a module that must never run)."""
    weights = save_tensor_file({"netG_state_dict": dcgan_state_dict()}, folder / "weights.tar", device_tag="cuda:0")
    wheel = folder / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(weights, member)
        archive.writestr("gan_face_generate/__init__.py", "raise SystemExit('package code ran')\n")
    return wheel, weights


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """The registry's dcgan-digiface-64 pinned to a test wheel, and pip replaced by FAKE_PIP."""
    wheel, weights = make_wheel(tmp_path)
    script = tmp_path / "fake_pip.py"
    script.write_text(FAKE_PIP)
    log = tmp_path / "pip-log.json"
    monkeypatch.setattr(download, "PIP_COMMAND", (sys.executable, str(script)))
    monkeypatch.setenv("FAKE_WHEEL", str(wheel))
    monkeypatch.setenv("FAKE_PIP_LOG", str(log))
    real = registry.find_model("dcgan-digiface-64")
    source = dataclasses.replace(real.sources[0], archive_sha256=sha256(wheel))
    model = dataclasses.replace(real, sources=(source,), sha256=sha256(weights))
    monkeypatch.setattr(registry, "KNOWN_MODELS", (model,))
    return {"wheel": wheel, "weights": weights, "log": log, "model": model, "real": real}


def run(runner, dest: Path, *args: str):
    return runner.invoke(app, ["weights", "download", "dcgan-digiface-64", "--dest", str(dest), *args])


def test_registry_pins_the_published_wheel_and_weights():
    model = registry.find_model("dcgan-digiface-64")
    [source] = model.sources
    assert (source.kind, source.location, source.member) == ("pip", REQUIREMENT, MEMBER)
    assert source.archive_sha256 == "24102f4be41d164e44251168ede0458a45e498a888c81493e2aea48529640569"
    assert model.sha256 == "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f"
    assert source.url == "https://pypi.org/project/gan-face-generate/1.1.1/"


def test_download_extracts_checks_and_converts(runner, tmp_path, stand_in, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.invalid/simple")  # the user's pip settings reach pip
    dest = tmp_path / "weights"
    result = run(runner, dest)
    assert result.exit_code == 0, result.stderr
    pip = json.loads(stand_in["log"].read_text())
    assert pip["args"][:2] == ["download", "--no-deps"] and pip["args"][-1] == REQUIREMENT
    assert pip["index_url"] == "https://mirror.invalid/simple"
    assert sorted(p.name for p in dest.iterdir()) == [
        "dcgan-digiface-64.pt", "dcgan-digiface-64.pt.sha256", "dcgan-digiface-64.safetensors",
        "dcgan-digiface-64.safetensors.sha256"]  # no wheel, no staging folder
    assert (dest / "dcgan-digiface-64.pt").read_bytes() == stand_in["weights"].read_bytes()
    meta = st.header_metadata(st.read_header(dest / "dcgan-digiface-64.safetensors"))
    assert meta["family"] == "dcgan" and meta["licence"].startswith("MIT")
    assert "DigiFace-1M" in meta["training_data"] and meta["source_sha256"] == stand_in["model"].sha256
    assert "package code ran" not in result.output


def test_list_shows_licence_and_purpose(runner, stand_in):
    rows = json.loads(runner.invoke(app, ["weights", "list", "--json"]).stdout)
    assert rows[0]["licence"].startswith("MIT") and "trying the tool" in rows[0]["purpose"]
    table = runner.invoke(app, ["weights", "list"], env={"COLUMNS": "250", "FORCE_COLOR": "1"}).stdout  # a terminal
    assert "dcgan-digiface-64" in table and "for: a small model for trying the tool" in table
    # which part is MIT and which non-commercial, said as such (not "MIT ... (non-commercial)")
    (licence,) = [line for line in table.splitlines() if "licence:" in line]
    assert licence.strip() == "licence: " + rows[0]["licence"]
    assert rows[0]["licence"].startswith("MIT for the code") and \
        "non-commercial research only by the terms of its training data (DigiFace-1M)" in rows[0]["licence"]


@pytest.mark.parametrize("what", ["wheel", "weights"])
def test_a_checksum_mismatch_leaves_nothing(runner, tmp_path, stand_in, monkeypatch, what):
    model = stand_in["model"]
    if what == "wheel":  # the real pin: the test wheel is another file
        model = dataclasses.replace(model, sources=stand_in["real"].sources)
    else:
        model = dataclasses.replace(model, sha256=stand_in["real"].sha256)
    monkeypatch.setattr(registry, "KNOWN_MODELS", (model,))
    dest = tmp_path / "weights"
    result = run(runner, dest)
    assert result.exit_code == 1
    assert "checksum mismatch" in result.stderr and result.stderr.strip().count("\n") == 1  # licence note + error
    assert not dest.exists()  # nor the folder made for it


def test_pip_failing_is_one_line_and_leaves_nothing(runner, tmp_path, stand_in, monkeypatch):
    monkeypatch.setenv("FAKE_PIP_MODE", "fail")
    dest = tmp_path / "weights"
    result = run(runner, dest)
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert f"pip download {REQUIREMENT} failed (exit 1): ERROR: No matching distribution" in last
    assert not dest.exists()  # nor the folder made for it


def test_pip_missing(runner, tmp_path, stand_in, monkeypatch):
    monkeypatch.setattr(download, "PIP_COMMAND", (str(tmp_path / "no-python"), "-m", "pip"))
    dest = tmp_path / "weights"
    result = run(runner, dest)
    assert result.exit_code == 1 and "pip could not be started" in result.stderr
    assert not dest.exists()  # nor the folder made for it
    # a Python without pip
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    monkeypatch.setattr(download, "PIP_COMMAND", (str(venv / "bin" / "python"), "-m", "pip"))
    result = run(runner, dest)
    assert result.exit_code == 1 and "pip is not installed for" in result.stderr
    assert not dest.exists()  # nor the folder made for it


def test_a_wheel_without_the_weights(runner, tmp_path, stand_in, monkeypatch):
    (tmp_path / "other").mkdir()
    other, _ = make_wheel(tmp_path / "other", member="gan_face_generate/other.tar")
    monkeypatch.setenv("FAKE_WHEEL", str(other))
    source = dataclasses.replace(stand_in["model"].sources[0], archive_sha256=sha256(other))
    monkeypatch.setattr(registry, "KNOWN_MODELS", (dataclasses.replace(stand_in["model"], sources=(source,)),))
    dest = tmp_path / "weights"
    result = run(runner, dest)
    assert result.exit_code == 1 and f"holds no {MEMBER}" in result.stderr
    assert not dest.exists()  # nor the folder made for it
