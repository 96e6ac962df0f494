"""Where an input's samples disagree: the map of what the crop did not fix, and so was invented.

With `--samples N` (N >= 2) every sample downscales to (within eps of) the same crop, so whatever differs
between them was not in the crop's pixels. The map is, per pixel of the results, the standard deviation across
the N samples (N - 1 in the denominator: an unbiased variance, so maps of runs with another N are comparable
on average), root-mean-squared over the three colour channels; pixels are in [0, 1]. It is computed from the
results already found (no pass over the model) and drawn with a fixed scale, SCALE_MAX, so that maps of
different inputs and runs can be compared by eye.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..files.images import png_info, save_image_atomic

SCALE_MAX = 0.25
"""The colour scale's top: a spread of 0 is black, SCALE_MAX (a quarter of the full pixel range) and more is
the scale's last colour. Two 8-bit samples differing by 90 levels in every channel are ~0.25 apart."""

# matplotlib's "inferno" (perceptually uniform, dark to light, readable in grey), 10 anchors at i/9, linear
# in between: viridisLite's inferno(10).
INFERNO_ANCHORS = (
    (0x00, 0x00, 0x04), (0x1B, 0x0C, 0x42), (0x4B, 0x0C, 0x6B), (0x78, 0x1C, 0x6D), (0xA5, 0x2C, 0x60),
    (0xCF, 0x44, 0x46), (0xED, 0x69, 0x25), (0xFB, 0x9A, 0x06), (0xF7, 0xD0, 0x3C), (0xFC, 0xFF, 0xA4),
)
COLORMAP = "inferno"


@torch.no_grad()
def disagreement_map(images: torch.Tensor) -> torch.Tensor:
    """The spread of N results [N, 3, R, R] (in [0, 1]) per pixel: [R, R] float64, in the images' units."""
    assert images.ndim == 4 and images.shape[1] == 3 and len(images) >= 2, images.shape
    variance = images.double().var(dim=0, unbiased=True)  # [3, R, R]
    return variance.mean(dim=0).sqrt()


def _palette() -> np.ndarray:
    """256 colours [256, 3] uint8 from the anchors, linear in between."""
    anchors = np.asarray(INFERNO_ANCHORS, dtype=np.float64)
    at = np.linspace(0, len(anchors) - 1, 256)
    low = np.floor(at).astype(int).clip(0, len(anchors) - 2)
    frac = (at - low)[:, None]
    return np.round(anchors[low] * (1 - frac) + anchors[low + 1] * frac).astype(np.uint8)


PALETTE = _palette()


def colour_index(values: np.ndarray) -> np.ndarray:
    """Palette index (0-255) of spread values on the fixed scale: 0 -> 0, SCALE_MAX and above -> 255."""
    return np.round(np.clip(np.asarray(values, dtype=np.float64) / SCALE_MAX, 0, 1) * 255).astype(np.uint8)


def heatmap(spread: torch.Tensor | np.ndarray) -> Image.Image:
    """The map as an RGB image of the same size, on the fixed scale."""
    values = spread.cpu().numpy() if isinstance(spread, torch.Tensor) else np.asarray(spread)
    return Image.fromarray(PALETTE[colour_index(values)], mode="RGB")


def colour_bar(width: int, height: int) -> Image.Image:
    """The scale as a horizontal bar, 0 at the left to SCALE_MAX at the right."""
    ramp = PALETTE[colour_index(np.linspace(0, SCALE_MAX, width))]
    return Image.fromarray(np.ascontiguousarray(np.repeat(ramp[None], height, axis=0)), mode="RGB")


def legend(size: int, background: tuple[int, int, int] = (24, 24, 24)) -> Image.Image:
    """A square tile for a contact sheet: the colour bar with its end values and what it measures."""
    tile = Image.new("RGB", (size, size), background)
    margin = max(4, size // 16)
    bar_top, bar_height = size // 2 - size // 8, size // 4
    tile.paste(colour_bar(size - 2 * margin, bar_height), (margin, bar_top))
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default()
    colour = (235, 235, 235)
    draw.text((margin, bar_top - 28), "spread across", fill=colour, font=font)
    draw.text((margin, bar_top - 16), "the samples", fill=colour, font=font)
    below = bar_top + bar_height + 4
    draw.text((margin, below), "0", fill=colour, font=font)
    top = f"{SCALE_MAX:g}+"
    draw.text((size - margin - draw.textlength(top, font=font), below), top, fill=colour, font=font)
    return tile


def write_map(path: Path, spread: torch.Tensor, text: dict[str, str] | None) -> None:
    """OUT/<stem>.disagreement.png: the heatmap at the results' resolution, labelled (`text`) as results are."""
    save_image_atomic(heatmap(spread), path, pnginfo=png_info(text))


def summary(spread: torch.Tensor, map_rel: str) -> dict[str, object]:
    """What results.jsonl records of a map: its file (relative to OUT), mean and maximum, and the scale."""
    return {"map": map_rel, "mean": round(float(spread.mean()), 6), "max": round(float(spread.max()), 6),
            "scale_max": SCALE_MAX}


# What a map shows, in one line: the sheets' second title line and the report's legend.
MAP_LINE = ("Spread: where the samples disagree, the crop did not decide and the detail is invented "
            f"(black 0, pale yellow {SCALE_MAX:g}+).")
SCALE_TEXT = (f"per-pixel standard deviation across the samples (pixels in [0, 1]), drawn with {COLORMAP} from "
              f"0 (black) to {SCALE_MAX:g} (pale yellow) and above")
