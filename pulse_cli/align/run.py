"""A folder of photos to FFHQ-aligned crops and `faces.jsonl`: the work of `pulse align`.

For photo `<rel>` (its path under PHOTOS, extension kept) and its N-th face, in dlib's order:
`CROPS/<rel>.face<N>.png` at the chosen size and, when asked, `CROPS/<rel>.face<N>.aligned.png` (1024).

`CROPS/faces.jsonl` gets, once a photo's outputs are all written, one line per face (status `ok`) or one
line for the photo (status `no_face` or `failed`). Face lines carry everything needed to map a result back
onto the photo: dlib's box and score, the 68 landmarks and the alignment quad (the aligned image's
top-left, bottom-left, bottom-right and top-right corners), all in pixels of the upright photo (EXIF
orientation applied), whose size is `image_size`.

A photo is done when its latest lines say so (all its faces, or `no_face`) and its outputs exist; a rerun
skips done photos and retries failed ones, `overwrite` redoes everything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import describe_os_error, first_line
from ..files.atomic import append_jsonl, read_jsonl, remove_stale_temp_files
from ..files.discovery import InputFile, discover_inputs
from .detect import DEFAULT_MIN_SCORE
from .sizes import check_crop_size

FACES_FILE = "faces.jsonl"
OK, NO_FACE, FAILED, SKIPPED = "ok", "no_face", "failed", "skipped"


def crop_path(crops: Path, rel: str, face: int) -> Path:
    return Path(crops) / f"{rel}.face{face}.png"


def aligned_path(crops: Path, rel: str, face: int) -> Path:
    return Path(crops) / f"{rel}.face{face}.aligned.png"


class AlignReporter:
    """What a run tells its caller as it goes; these defaults say nothing."""

    def note(self, message: str) -> None:
        pass

    def start(self, todo: int) -> None:
        """`todo` photos are about to be processed (done ones excluded)."""

    def photo_done(self, rel: str, status: str, faces: int, seconds: float) -> None:
        """A photo is finished: `ok` with `faces` crops, or `no_face`."""

    def photo_failed(self, rel: str, reason: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class AlignSummary:
    photos: int = 0  # photos found
    faces: int = 0  # crops written by this run
    counts: dict[str, int] = field(default_factory=lambda: {OK: 0, NO_FACE: 0, FAILED: 0, SKIPPED: 0})
    no_face_total: int = 0  # photos without a face, done earlier ones included (for --strict)
    other_options: int = 0  # done photos that were made with another size or min score (skipped all the same)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (rel, one-line reason)
    seconds: float = 0.0
    faces_file: Path | None = None


@dataclass
class _Earlier:
    status: str
    records: list[dict[str, Any]]


def _latest_attempts(faces_file: Path) -> dict[str, _Earlier]:
    """Per photo, its latest complete attempt from earlier runs; a failure or an unfinished set of face
    lines leaves it without one."""
    latest: dict[str, _Earlier | None] = {}
    for record in read_jsonl(faces_file):
        rel, status = record.get("source"), record.get("status")
        if not isinstance(rel, str):
            continue
        if status == NO_FACE:
            latest[rel] = _Earlier(NO_FACE, [record])
        elif status == OK and isinstance(record.get("face"), int):
            previous = latest.get(rel)
            if record["face"] == 0:
                latest[rel] = _Earlier(OK, [record])
            elif previous is not None and previous.status == OK and len(previous.records) == record["face"]:
                previous.records.append(record)
            else:
                latest[rel] = None
        elif status == FAILED:
            latest[rel] = None
    done = {}
    for rel, attempt in latest.items():
        if attempt is None:
            continue
        if attempt.status == OK and len(attempt.records) != attempt.records[0].get("faces"):
            continue  # interrupted between face lines
        done[rel] = attempt
    return done


def _outputs_exist(crops: Path, attempt: _Earlier, keep_aligned: bool) -> bool:
    if attempt.status != OK:
        return True
    for record in attempt.records:
        names = [record.get("crop")] + ([record.get("aligned")] if keep_aligned else [])
        if not all(isinstance(n, str) and (crops / n).is_file() for n in names):
            return False
    return True


def _rgb_uint8(path: Path) -> np.ndarray:
    """The photo as upright 8-bit RGB [H, W, 3], read as `pulse upsample` reads its inputs (first frame,
    EXIF orientation, alpha over white); ImageError with a one-line reason when it cannot be."""
    from ..files.images import load_rgb

    tensor = load_rgb(path)
    return np.rint(tensor.permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)


def _remove_extra_faces(crops: Path, rel: str, first: int) -> None:
    """An earlier run found more faces: its extra crops would be taken for this run's."""
    face = first
    while True:
        paths = [crop_path(crops, rel, face), aligned_path(crops, rel, face)]
        if not any(p.exists() for p in paths):
            return
        for p in paths:
            p.unlink(missing_ok=True)
        face += 1


def _json_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def _align_one(item: InputFile, crops: Path, detector, *, size: int, keep_aligned: bool,
               min_score: float) -> list[dict[str, Any]]:
    """Process one photo and write its outputs; return its records (not yet written)."""
    from PIL import Image

    from ..files.images import save_image_atomic, save_png
    from .ffhq import align_ffhq, downsample_aligned, ffhq_quad

    rel = item.rel.as_posix()
    rgb = _rgb_uint8(item.path)
    height, width, _ = rgb.shape
    detections = detector.detect(rgb)
    common = {"source": rel, "image_size": [width, height], "size": size, "min_score": min_score}
    if not detections:
        _remove_extra_faces(crops, rel, 0)
        return [{**common, "status": NO_FACE, "faces": 0}]
    photo = Image.fromarray(rgb, "RGB")
    records = []
    for index, found in enumerate(detections):
        aligned = align_ffhq(photo, found.landmarks)
        crop = crop_path(crops, rel, index)
        save_png(downsample_aligned(aligned, size), crop)
        aligned_name = None
        if keep_aligned:
            target = aligned_path(crops, rel, index)
            save_image_atomic(aligned, target)
            aligned_name = target.relative_to(crops).as_posix()
        else:
            aligned_path(crops, rel, index).unlink(missing_ok=True)  # an earlier run's, now stale
        quad = ffhq_quad(found.landmarks)
        records.append({
            **common, "status": OK, "face": index, "faces": len(detections),
            "box": list(found.box), "score": found.score,
            "landmarks": [[_json_number(x), _json_number(y)] for x, y in found.landmarks],
            "quad": [[float(x), float(y)] for x, y in quad.corners], "quad_size": quad.size,
            "crop": crop.relative_to(crops).as_posix(), "aligned": aligned_name,
        })
    _remove_extra_faces(crops, rel, len(detections))
    return records


def align_photos(photos: Path, crops: Path, *, size: int = 16, min_score: float = DEFAULT_MIN_SCORE,
                 recursive: bool = False, overwrite: bool = False, keep_aligned: bool = False,
                 reporter: AlignReporter | None = None) -> AlignSummary:
    """Align every face in `photos` (a folder, or one image) into `crops`; see the module docstring.

    Per-photo problems (unreadable file, no face) become records and never raise. Raises ValueError for a
    bad `size`, `detect.MissingExtra` when dlib or the landmark model is missing (both before any work),
    OSError when `faces.jsonl` cannot be written (the run cannot record anything more), and
    KeyboardInterrupt as it comes (finished photos are kept; a rerun resumes).
    """
    from .detect import FaceDetector, check_installed

    check_crop_size(size)
    check_installed()
    reporter = reporter or AlignReporter()
    photos, crops = Path(photos), Path(crops)
    started = time.monotonic()
    summary = AlignSummary(faces_file=crops / FACES_FILE)
    crops.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(crops)

    items = discover_inputs(photos, recursive=recursive, exclude=crops)
    summary.photos = len(items)
    earlier = {} if overwrite else _latest_attempts(summary.faces_file)
    todo = []
    for item in items:
        attempt = earlier.get(item.rel.as_posix())
        if attempt is not None and _outputs_exist(crops, attempt, keep_aligned):
            summary.counts[SKIPPED] += 1
            first = attempt.records[0]
            summary.no_face_total += attempt.status == NO_FACE
            if first.get("size") != size or first.get("min_score") != min_score:
                summary.other_options += 1
        else:
            todo.append(item)
    if summary.counts[SKIPPED]:
        reporter.note(f"{summary.counts[SKIPPED]} photo(s) already done")

    try:
        reporter.start(len(todo))
        detector = FaceDetector(min_score=min_score) if todo else None
        for item in todo:
            rel = item.rel.as_posix()
            began = time.monotonic()
            try:
                records = _align_one(item, crops, detector, size=size, keep_aligned=keep_aligned,
                                     min_score=min_score)
            except MemoryError:
                records = [{"source": rel, "status": FAILED, "reason": "out of memory (the photo is too large)"}]
            except OSError as exc:
                reason = f"cannot write {describe_os_error(exc)}" if exc.filename else first_line(exc)
                records = [{"source": rel, "status": FAILED, "reason": reason}]
            except Exception as exc:  # ImageError and whatever a decoder or dlib raises on a bad photo
                records = [{"source": rel, "status": FAILED, "reason": first_line(exc)}]
            seconds = round(time.monotonic() - began, 3)
            for record in records:
                append_jsonl(summary.faces_file, {**record, "seconds": seconds})
            status = records[0]["status"]
            summary.counts[status] += 1
            if status == FAILED:
                summary.failures.append((rel, records[0]["reason"]))
                reporter.photo_failed(rel, records[0]["reason"])
            else:
                faces = len(records) if status == OK else 0
                summary.faces += faces
                summary.no_face_total += status == NO_FACE
                reporter.photo_done(rel, status, faces, seconds)
    finally:
        summary.seconds = time.monotonic() - started
        reporter.close()
    return summary
