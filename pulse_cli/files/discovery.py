"""Which files in the input folder are images, and where each one's outputs go."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

# Extensions we treat as images without looking inside; anything else is sniffed by Pillow.
IMAGE_SUFFIXES = frozenset({
    ".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".webp", ".tif", ".tiff", ".gif",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico",
})


@dataclass(frozen=True)
class InputFile:
    path: Path
    rel: PurePosixPath  # relative to the input folder, '/'-separated on every OS

    def __str__(self) -> str:
        return self.rel.as_posix()


def _looks_like_image(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with Image.open(path):
            return True
    except Image.DecompressionBombError:
        return True  # Pillow knows the format; the per-file check will refuse it with a reason
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def is_image_file(path: Path) -> bool:
    """A file `pulse` takes as an input image: an image extension, or content Pillow recognises."""
    return Path(path).is_file() and _looks_like_image(Path(path))


def discover_inputs(root: Path, *, recursive: bool, exclude: Path | None = None) -> list[InputFile]:
    """Image files under `root`, sorted by relative path; hidden entries and `exclude` are skipped.
    `root` may also be one image file: it is then the only input, named by its file name.

    A file with an image extension is listed even if it turns out to be corrupt, so that it gets a
    per-file error instead of silently vanishing; other files are listed only if Pillow knows them.
    """
    root = Path(root)
    if root.is_file():
        return [InputFile(root, PurePosixPath(root.name))] if _looks_like_image(root) else []
    excluded = exclude.resolve() if exclude is not None else None
    found: list[InputFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (excluded is None or (here / d).resolve() != excluded))
        if not recursive:
            dirnames.clear()
        for name in filenames:
            path = here / name
            if name.startswith(".") or not path.is_file():
                continue
            if _looks_like_image(path):
                found.append(InputFile(path, PurePosixPath(path.relative_to(root).as_posix())))
    return sorted(found, key=lambda f: f.rel.as_posix())


@dataclass(frozen=True)
class OutputPaths:
    image: Path  # OUT/<stem>.png
    log: Path  # OUT/logs/<stem>.jsonl
    latents: Path  # OUT/<stem>.latents.safetensors (with --save-latents)
    frames: Path  # OUT/frames/<stem>/ (with --save-every)
    animation: Path  # OUT/<stem>.search.gif (with --animate)


def result_stem(rel: PurePosixPath) -> str:
    """The name an input's outputs are made from: its relative path, extension kept (so `a.jpg` and `a.png`
    never share outputs). An input without an image extension (recognised by its content) gets `.image`
    added: the tool's own files (`sheet.png`, `<stem>.sheet.png`, `<stem>.sample<k>.png`,
    `<stem>.disagreement.png`, `frames/<stem>/step-NNNN.png`) never end in an image extension + `.png`, so no
    input's result can take one of their names, whatever the input files and folders are called."""
    name = rel.as_posix()
    return name if rel.suffix.lower() in IMAGE_SUFFIXES else f"{name}.image"


def output_paths(out_dir: Path, rel: PurePosixPath, *, sample: int, samples: int) -> OutputPaths:
    """`OUT/<stem>.png` and `OUT/logs/<stem>.jsonl` (see `result_stem`); with several samples
    `<stem>.sample<k>.png`."""
    stem = result_stem(rel) if samples == 1 else f"{result_stem(rel)}.sample{sample}"
    out_dir = Path(out_dir)
    return OutputPaths(image=out_dir / f"{stem}.png", log=out_dir / "logs" / f"{stem}.jsonl",
                       latents=out_dir / f"{stem}.latents.safetensors", frames=out_dir / "frames" / stem,
                       animation=out_dir / f"{stem}.search.gif")


def sheet_path(out_dir: Path, rel: PurePosixPath) -> Path:
    """Per-input contact sheet: OUT/sheets/<stem>.sheet.png, apart from the result of an input that itself
    sits in a folder called `sheets` (see `result_stem`)."""
    return Path(out_dir) / "sheets" / f"{result_stem(rel)}.sheet.png"


def disagreement_path(out_dir: Path, rel: PurePosixPath) -> Path:
    """Where an input's samples disagree (with several samples): OUT/<stem>.disagreement.png (see `result_stem`)."""
    return Path(out_dir) / f"{result_stem(rel)}.disagreement.png"
