"""Contact sheets of a run, and how different an input's samples are: a result is one face among many."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..align.identity import identity_sentence
from ..errors import printable
from ..files.atomic import is_plain_file
from ..files.images import load_rgb, png_info, save_image_atomic, to_pil
from ..files.metadata import sheet_metadata
from ..files.sheets import SHEET_NOTICE, Tile, grid_sheet
from ..search.downsample import BicubicDownsample
from .disagreement import MAP_LINE, SCALE_MAX, heatmap, legend
from .records import OK, SampleRecord, has_no_face

SHEET_ROWS_PER_PAGE = 16
SHEET_TILE = 128


@torch.no_grad()
def downscale_results(images: torch.Tensor, target_size: int) -> torch.Tensor:
    """The results [N, 3, R, R] as PULSE's downsampler sees them at the input's size."""
    return BicubicDownsample(images.shape[-1] // target_size)(images)


def sample_diversity(images: torch.Tensor, downscaled: torch.Tensor) -> dict[str, float]:
    """Mean pairwise RMS difference between samples at full and at input resolution (pixels in [0, 1]).

    Large at full resolution and small at input resolution: different faces that fit the same input.
    """
    def mean_pairwise_rms(x: torch.Tensor) -> float:
        flat = x.flatten(1).double()
        pairs = [(i, j) for i in range(len(flat)) for j in range(i + 1, len(flat))]
        return float(sum((flat[i] - flat[j]).pow(2).mean().sqrt() for i, j in pairs) / len(pairs))

    return {"pairwise_rms_full": mean_pairwise_rms(images), "pairwise_rms_input": mean_pairwise_rms(downscaled)}


def write_input_sheet(path: Path, target: torch.Tensor, images: torch.Tensor, downscaled: torch.Tensor,
                      samples: Sequence[SampleRecord], *, metadata: bool = True, spread: torch.Tensor | None = None,
                      identity: dict[str, Any] | None = None) -> None:
    """Input (nearest), bicubic upscale, each result; below each result, it downscaled again. With several
    samples, their disagreement map (`spread`) after them with its scale below it, and (`identity`) how many
    people they are, as a sentence under the results."""
    size = images.shape[-1]
    tile_size = max(SHEET_TILE, min(size, 256))
    bicubic = torch.nn.functional.interpolate(target[None], size=(size, size), mode="bicubic",
                                              align_corners=False)[0].clamp(0, 1)
    top = [Tile(to_pil(target), "input"), Tile(to_pil(bicubic), "bicubic")]
    bottom: list[Tile | None] = [None, None]
    for k, sample in enumerate(samples):
        caption = result_caption(k, sample.best_l2, sample.status == OK, has_no_face(sample))
        top.append(Tile(to_pil(images[k]), caption))
        bottom.append(Tile(to_pil(downscaled[k]), f"#{k} downscaled"))
    title: list[str] = [f"{sum(sample.status == OK for sample in samples)} of {len(samples)} met eps. {SHEET_NOTICE}"]
    notes = None
    if spread is not None:
        top.append(Tile(heatmap(spread), f"spread, mean {float(spread.mean()):.3f}"))
        bottom.append(Tile(legend(tile_size), f"scale 0 to {SCALE_MAX:g}"))
        title.append(MAP_LINE)
        sentence = identity_sentence(identity) if identity else None
        notes = [sentence, None]
    save_image_atomic(grid_sheet([top, bottom], tile_size=tile_size, title=title, notes=notes), path,
                      pnginfo=png_info(sheet_metadata() if metadata else None))


def result_caption(k: int, l2: float | None, met_eps: bool | None, no_face: bool = False) -> str:
    """A result's caption on a sheet: `#0 L2 0.0063 > eps`, `#1 L2 0.0020 ok`; `NO FACE` (--check-face)
    comes first, as the caption is cut to the tile's width."""
    mark = "" if met_eps is None else " ok" if met_eps else " > eps"
    value = "" if l2 is None else f" {l2:.4f}"
    return f"#{k} NO FACE{value}{mark}" if no_face else f"#{k}" + (f" L2{value}" if value else "") + mark


@dataclass
class SheetRow:
    """One input of the run sheet: the input file, its result images, (when known) their L2 and whether each
    met eps."""

    input: Path
    name: str
    results: list[Path]
    l2: list[float] | None
    met_eps: bool
    no_face: list[bool] | None = None  # per result, with --check-face: no face found in it
    samples_met_eps: list[bool | None] | None = None  # per result (None: not recorded)
    disagreement: Path | None = None  # with several samples: the map
    disagreement_mean: float | None = None
    note: str | None = None  # with --check-face and several samples: how many people they are


def sheet_extras(map_path: Path, disagreement: Any, identity: Any) -> dict[str, Any]:
    """A record's disagreement map (at `map_path`, the input's own, when the record has one and it is there) and
    identity sentence, as SheetRow fields (what an earlier run recorded may lack them, or hold anything)."""
    extras: dict[str, Any] = {}
    if isinstance(disagreement, dict) and is_plain_file(map_path):  # never through a link in OUT
        mean = disagreement.get("mean")
        extras.update(disagreement=map_path, disagreement_mean=mean if isinstance(mean, (int, float)) else None)
    if isinstance(identity, dict):
        extras["note"] = identity_sentence(identity)
    return extras


def write_run_sheets(out_dir: Path, rows: Sequence[SheetRow], name: str = "sheet", *, metadata: bool = True) -> None:
    """OUT/sheet.png (or sheet-001.png, … for many inputs): every input beside its results, each captioned
    with its L2 and whether it met eps (as on the input's own sheet), and (with several samples) their
    disagreement map; the header says how many inputs' results met eps."""
    tiles = []
    for row in rows:
        line = [Tile(to_pil(load_rgb(row.input)), printable(row.name))]  # shortened in the middle to fit
        for k, image in enumerate(row.results):
            met = row.samples_met_eps[k] if row.samples_met_eps and k < len(row.samples_met_eps) else None
            no_face = bool(row.no_face and k < len(row.no_face) and row.no_face[k])
            line.append(Tile(to_pil(load_rgb(image)), result_caption(k, row.l2[k] if row.l2 else None, met, no_face)))
        if row.disagreement is not None:
            mean = "" if row.disagreement_mean is None else f", mean {row.disagreement_mean:.3f}"
            line.append(Tile(to_pil(load_rgb(row.disagreement)), f"spread{mean}"))
        tiles.append(line)
    met = sum(row.met_eps for row in rows)
    no_face = sum(sum(row.no_face or []) for row in rows)
    title = [f"{met} of {len(rows)} inputs met eps" + (f", {no_face} results show no face" if no_face else "") +
             f". {SHEET_NOTICE}"]
    if any(row.disagreement is not None for row in rows):
        title.append(MAP_LINE)
    pairs = list(zip(rows, tiles, strict=True))
    pages = [pairs[i:i + SHEET_ROWS_PER_PAGE] for i in range(0, len(pairs), SHEET_ROWS_PER_PAGE)]
    for n, page in enumerate(pages, start=1):
        file = f"{name}.png" if len(pages) == 1 else f"{name}-{n:03d}.png"
        grid = grid_sheet([t for _, t in page], tile_size=SHEET_TILE, title=title, notes=[r.note for r, _ in page])
        save_image_atomic(grid, Path(out_dir) / file, pnginfo=png_info(sheet_metadata() if metadata else None))
