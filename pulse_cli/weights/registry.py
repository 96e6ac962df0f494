"""Checkpoints `pulse` knows how to fetch or build. None of them is bundled with `pulse`.

Every generator here was trained by NVIDIA on FFHQ and is licensed for non-commercial use only; the user
downloads it from NVIDIA's own host. `sha256` is filled in only where a digest is published by the
source; otherwise it is None and `pulse weights download` records the digest of what arrived (trust on
first use), which `pulse weights verify` then checks.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["generator", "latent-stats"]
KINDS: tuple[str, ...] = ("generator", "latent-stats")

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

FFHQ_NOTE = (
    "Trained on FFHQ: 70,000 face photos crawled from Flickr; it inherits Flickr's biases and is skewed in "
    "age and ethnicity, so the faces it invents lean toward the groups it saw most."
)
CC_BY_NC = "CC BY-NC 4.0 (NVIDIA): non-commercial use only; not bundled with pulse"
NVIDIA_SCL_NC = (
    "NVIDIA Source Code License-NC: non-commercial (research/evaluation) use only; not bundled with pulse"
)


@dataclass(frozen=True)
class KnownModel:
    name: str  # what users type: `pulse weights download <name>`
    family: str  # generator family, as `Generator.family` ("stylegan1", "stylegan2")
    resolution: int
    url: str | None  # None: nothing to download, `pulse` builds it (see `note`)
    filename: str  # name on disk inside a weights search dir
    sha256: str | None  # only when published by the source
    size: int | None  # bytes, only when published by the source
    licence: str
    source: str  # project page / repository the file comes from
    training_data_note: str
    kind: Kind
    note: str = ""  # provenance caveats: dead links, unconfirmed URLs, how to build it

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, not {self.kind!r}")
        if self.sha256 is not None and not _SHA256_RE.match(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel(
        name="stylegan-ffhq-1024",
        family="stylegan1",
        resolution=1024,
        url="https://nvlabs-fi-cdn.nvidia.com/stylegan/networks/karras2019stylegan-ffhq-1024x1024.pkl",
        filename="karras2019stylegan-ffhq-1024x1024.pkl",
        sha256=None,
        size=None,
        licence=CC_BY_NC,
        source="https://github.com/NVlabs/stylegan",
        training_data_note=FFHQ_NOTE,
        kind="generator",
        note=(
            "The generator PULSE used (TensorFlow pickle: _G, _D, Gs). NVIDIA's README documents it on "
            "Google Drive (https://drive.google.com/uc?id=1MEGjdvVpUsu1jB4zrXZN7Y4kBBOzizDQ, often over "
            "quota). This CDN address follows the layout of NVIDIA's StyleGAN2 CDN; it is not quoted by NVIDIA "
            "and could not be checked (no internet where it was written)."
        ),
    ),
    KnownModel(
        name="stylegan2-ffhq-config-f",
        family="stylegan2",
        resolution=1024,
        url="https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-ffhq-config-f.pkl",
        filename="stylegan2-ffhq-config-f.pkl",
        sha256=None,
        size=None,
        licence=NVIDIA_SCL_NC,
        source="https://github.com/NVlabs/stylegan2",
        training_data_note=FFHQ_NOTE,
        kind="generator",
        note="Original StyleGAN2 TensorFlow pickle (config F); pulse reads it without TensorFlow.",
    ),
    KnownModel(
        name="stylegan2-ada-ffhq",
        family="stylegan2",
        resolution=1024,
        url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
        filename="ffhq.pkl",
        sha256=None,
        size=None,
        licence=NVIDIA_SCL_NC,
        source="https://github.com/NVlabs/stylegan2-ada-pytorch",
        training_data_note=FFHQ_NOTE,
        kind="generator",
        note="StyleGAN2 FFHQ 1024 (trained with original StyleGAN2) as a stylegan2-ada-pytorch pickle.",
    ),
    KnownModel(
        name="stylegan2-ffhq-1024",
        family="stylegan2",
        resolution=1024,
        url=(
            "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
            "stylegan2-ffhq-1024x1024.pkl"
        ),
        filename="stylegan2-ffhq-1024x1024.pkl",
        sha256=None,
        size=None,
        licence=NVIDIA_SCL_NC,
        source="https://github.com/NVlabs/stylegan3 (NGC catalog nvidia:research:stylegan2)",
        training_data_note=FFHQ_NOTE,
        kind="generator",
        note="StyleGAN2 FFHQ 1024 on NVIDIA NGC, in the pickle format of the stylegan3 code base.",
    ),
    KnownModel(
        name="gaussian-fit-stylegan-ffhq",
        family="stylegan1",
        resolution=1024,
        url=None,
        filename="gaussian_fit.pt",
        sha256=None,
        size=None,
        licence="Derived from NVIDIA's StyleGAN FFHQ weights (CC BY-NC 4.0): non-commercial use only",
        source="https://github.com/adamian98/pulse",
        training_data_note=FFHQ_NOTE,
        kind="latent-stats",
        note=(
            "PULSE's per-dimension mean/std of LeakyReLU(5)(mapping(z)) over 10^6 z (seed 0). Upstream "
            "builds it from a mapping network on Google Drive that is over quota / unavailable, and "
            "publishes no download of the file itself, so `pulse` computes it from the generator's mapping "
            "network and caches it."
        ),
    ),
)


class UnknownModelError(KeyError):
    """`find_model` got a name that is not in `KNOWN_MODELS`."""

    def __str__(self) -> str:  # KeyError's default str() wraps the message in quotes
        return str(self.args[0]) if self.args else "unknown model"


def model_names() -> list[str]:
    return [m.name for m in KNOWN_MODELS]


def find_model(name: str) -> KnownModel:
    """The known model called `name` (case-insensitive); `UnknownModelError` with close matches otherwise."""
    wanted = name.strip().lower()
    for model in KNOWN_MODELS:
        if model.name.lower() == wanted:
            return model
    names = model_names()
    close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}.{hint} Known models: {', '.join(names)}.")
