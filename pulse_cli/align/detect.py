"""Face detection and landmarks with dlib, as PULSE's `align_face.py` does them.

Detector: dlib's frontal face detector (HOG), the photo upsampled once. Landmarks: dlib's 68-point shape
predictor, `shape_predictor_68_face_landmarks.dat`, found in the `face_recognition_models` package.

Both come from the optional extra `pulse-depixelizer[align]` (`dlib-bin`, prebuilt dlib wheels, and
`face_recognition_models`); nothing is compiled. dlib is imported only when a detector is made.

The 68-point model was trained on the iBUG 300-W data set, whose licence excludes commercial use.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import first_line

INSTALL_HINT = "in your pulse-cli clone, pip install '.[align]' (pulse-depixelizer is not on PyPI)"
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
PREDICTOR_ENV = "PULSE_LANDMARKS_MODEL"  # a shape_predictor_68_face_landmarks.dat of one's own

UPSAMPLE = 1  # PULSE's `detector(img, 1)`

DEFAULT_MIN_SCORE = 0.5
"""Detections scoring below this are not aligned by default.

dlib's HOG detector reports a detection when its SVM score is above 0; real frontal faces mostly score
well above 0.5 (the astronaut photo's face: 1.16), while its false positives crowd just above 0 (the
mission patch on her suit: 0.12). 0 keeps every detection, as PULSE did."""


class MissingExtra(RuntimeError):
    """dlib or the landmark model is not installed; the message says what to install, in one line."""


@dataclass(frozen=True)
class Detection:
    """One face: dlib's box (left, top, right, bottom; right and bottom inclusive, as dlib reports them;
    it may reach outside the photo), its score and the 68 landmarks (float64 [68, 2], x then y)."""

    box: tuple[int, int, int, int]
    score: float
    landmarks: np.ndarray


def import_dlib():
    try:
        import dlib
    except ImportError as exc:
        # A broken install (say, a missing shared library) is worth naming; plain absence is not.
        detail = "" if isinstance(exc, ModuleNotFoundError) else f" ({first_line(exc)})"
        raise MissingExtra(f"pulse align needs dlib (the 'align' extra): {INSTALL_HINT}{detail}") from None
    return dlib


def predictor_path() -> Path:
    """Where the 68-point model is: $PULSE_LANDMARKS_MODEL, else inside `face_recognition_models`.

    The package is located without being imported: its `__init__` imports `pkg_resources`, which recent
    setuptools no longer ships.
    """
    explicit = os.environ.get(PREDICTOR_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise MissingExtra(f"{PREDICTOR_ENV}={explicit} is not a file")
        return path
    for folder in model_folders():
        if (folder / PREDICTOR_FILE).is_file():
            return folder / PREDICTOR_FILE
    raise MissingExtra(f"pulse align needs the 68-point landmark model (package face_recognition_models): "
                       f"{INSTALL_HINT}")


def model_folders() -> list[Path]:
    """The `models` folders of the installed `face_recognition_models` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return [Path(location) / "models" for location in locations]


def check_installed() -> None:
    """Raise MissingExtra, before any work, if dlib or the model cannot be found."""
    import_dlib()
    predictor_path()


@functools.lru_cache(maxsize=1)
def _load_models(path: str):
    """dlib's detector and the shape predictor; kept for the process (reading the model takes ~1 s)."""
    dlib = import_dlib()
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(path)


class FaceDetector:
    """dlib's HOG face detector and 68-point shape predictor."""

    def __init__(self, *, min_score: float = DEFAULT_MIN_SCORE):
        self.min_score = float(min_score)
        self._detector, self._predictor = _load_models(str(predictor_path()))

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an 8-bit RGB photo ([H, W, 3]) scoring at least `min_score`, numbered as PULSE numbered
        them: dlib's order, best score first; equal scores (the same face twice) left to right, then top down.

        dlib's own threshold is 0 (what PULSE used); a negative `min_score` lowers it to match."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        boxes, scores, _ = self._detector.run(rgb, UPSAMPLE, min(0.0, self.min_score))
        found = []
        for box, score in zip(boxes, scores, strict=True):
            if score < self.min_score:
                continue
            shape = self._predictor(rgb, box)
            landmarks = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            found.append(Detection((box.left(), box.top(), box.right(), box.bottom()), float(score), landmarks))
        return sorted(found, key=lambda d: (-d.score, d.box[0], d.box[1]))


CHECK_SIZE = 256  # results smaller than this are upscaled (bicubic) before detection: HOG needs ~80 px faces


@functools.lru_cache(maxsize=1)
def _frontal_detector():
    return import_dlib().get_frontal_face_detector()


def check_image(rgb: np.ndarray) -> np.ndarray:
    """An 8-bit RGB result [H, W, 3] as the checks see it: upscaled (bicubic) to CHECK_SIZE if smaller."""
    from PIL import Image

    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.shape[0] < CHECK_SIZE:
        rgb = np.asarray(Image.fromarray(rgb).resize((CHECK_SIZE, CHECK_SIZE), Image.BICUBIC))
    return np.ascontiguousarray(rgb)


def best_face(image: np.ndarray):
    """dlib's best detection (HOG, upsampling once, as `pulse align`) in an image made by `check_image`:
    (its rectangle, its score), or None when no detection scores above 0."""
    boxes, scores, _ = _frontal_detector().run(image, UPSAMPLE, 0.0)
    if not len(scores):
        return None
    best = max(range(len(scores)), key=lambda k: scores[k])
    return boxes[best], float(scores[best])


def face_score(rgb: np.ndarray) -> float | None:
    """The best score of dlib's HOG detector (upsampling once, as `pulse align`) on an 8-bit RGB image
    [H, W, 3], first upscaled to CHECK_SIZE if smaller; None when it finds no face (no detection above 0)."""
    found = best_face(check_image(rgb))
    return None if found is None else round(found[1], 4)
