"""The registry of known checkpoints and the weight search locations."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from pulse_cli.weights.locations import cache_dir, user_dir, weights_search_dirs
from pulse_cli.weights.registry import KNOWN_MODELS, KnownModel, Source, UnknownModelError, find_model


def test_names_and_filenames_are_unique():
    names = [m.name for m in KNOWN_MODELS]
    assert len(names) == len(set(names))
    assert len({m.filename for m in KNOWN_MODELS}) == len(KNOWN_MODELS)


def test_generators_have_licence_url_and_training_note():
    generators = [m for m in KNOWN_MODELS if m.kind == "generator"]
    assert {m.family for m in generators} >= {"stylegan1", "stylegan2", "dcgan"}
    for m in generators:
        assert m.url and m.url.startswith("https://"), m.name
        assert "non-commercial" in m.licence.lower(), m.name
        if m.family.startswith("stylegan"):  # NVIDIA's
            assert "FFHQ" in m.training_data_note, m.name
            assert m.resolution == 1024
        else:  # the small DCGAN for trying pulse says what it is for
            assert "DigiFace-1M" in m.training_data_note and m.purpose, m.name


def test_stylegan1_tries_nvidias_drive_file_before_the_unverified_cdn_guess():
    v1 = find_model("stylegan-ffhq-1024")
    assert [(s.kind, s.verified) for s in v1.sources] == [("gdrive", True), ("url", False)]
    drive, cdn = v1.sources
    assert drive.location == "1MEGjdvVpUsu1jB4zrXZN7Y4kBBOzizDQ"
    assert v1.url == drive.url == "https://drive.google.com/uc?id=1MEGjdvVpUsu1jB4zrXZN7Y4kBBOzizDQ"
    assert cdn.label == f"{cdn.url} (unverified)" and drive.label == drive.url


def test_stylegan2_sources_are_the_ones_nvidia_names():
    expected = {
        "stylegan2-ffhq-config-f": "https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-ffhq-config-f.pkl",
        "stylegan2-ada-ffhq": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
        "stylegan2-ffhq-1024": "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
                               "stylegan2-ffhq-1024x1024.pkl",
    }
    for name, url in expected.items():
        assert [(s.kind, s.url, s.verified) for s in find_model(name).sources] == [("url", url, True)]


def test_source_validates_kind_and_url():
    with pytest.raises(ValueError):
        Source("ftp", "ftp://example.invalid/x.pkl", verified=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Source("url", "example.invalid/x.pkl", verified=False)


def test_latent_stats_are_computed_not_downloaded():
    fit = find_model("gaussian-fit-stylegan-ffhq")
    assert fit.kind == "latent-stats" and fit.sources == () and fit.url is None
    assert fit.filename == "gaussian_fit.pt"
    assert "computes" in fit.note


def test_no_unverified_checksums():
    # A digest may only be pinned when published by the source; none of ours is, today.
    for m in KNOWN_MODELS:
        assert m.sha256 is None or len(m.sha256) == 64


def test_find_model_is_case_insensitive():
    assert find_model("StyleGAN-FFHQ-1024").filename == "karras2019stylegan-ffhq-1024x1024.pkl"


def test_find_model_unknown_suggests_close_names():
    with pytest.raises(UnknownModelError) as info:
        find_model("stylegan2-ffhq-confg-f")
    message = str(info.value)
    assert "unknown model 'stylegan2-ffhq-confg-f'" in message
    assert "Did you mean stylegan2-ffhq-config-f" in message
    assert isinstance(info.value, KeyError)


def test_find_model_unknown_without_close_match_lists_known():
    with pytest.raises(KeyError) as info:
        find_model("zzz")
    assert "Did you mean" not in str(info.value)
    assert "stylegan-ffhq-1024" in str(info.value)


def test_known_model_validates_kind_and_digest():
    base = KNOWN_MODELS[0]
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    with pytest.raises(ValueError):
        KnownModel(**{**fields, "kind": "vae"})
    with pytest.raises(ValueError):
        KnownModel(**{**fields, "sha256": "abc"})


def test_search_dirs_honour_pulse_home(monkeypatch, tmp_path):
    home = tmp_path / "home"
    monkeypatch.setenv("PULSE_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert weights_search_dirs() == [tmp_path / "weights", home]
    assert user_dir() == home
    assert cache_dir().parent == home


def test_search_dirs_default_to_platform_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("PULSE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    dirs = weights_search_dirs()
    assert dirs[0] == tmp_path / "weights"
    assert dirs[1] == Path(platformdirs.user_cache_dir("pulse-cli"))
    assert cache_dir().parent == dirs[1]


def test_empty_pulse_home_is_ignored_and_tilde_expanded(monkeypatch):
    monkeypatch.setenv("PULSE_HOME", "")
    assert user_dir() == Path(platformdirs.user_cache_dir("pulse-cli"))
    monkeypatch.setenv("PULSE_HOME", "~/pulse-weights")
    assert user_dir() == Path.home() / "pulse-weights"
