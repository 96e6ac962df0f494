"""Contact sheets and search animations: pictures that show a result is one invented face among many."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .images import save_image_atomic

CAPTION_HEIGHT = 16
PADDING = 4
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
NOTE = (255, 212, 121)  # a row's note: what the row's samples show together
SHEET_NOTICE = "Synthetic faces invented by PULSE; none is the real person."


@dataclass(frozen=True)
class Tile:
    image: Image.Image
    caption: str


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> str:
    """`text`, shortened in the middle until it fits `width` pixels (so captions never spill into the next
    tile, and a file name keeps its end: `astronaut_m..red.jpg`)."""
    if draw.textlength(text, font=font) <= width:
        return text
    keep = len(text)
    while keep > 0:
        keep -= 1
        head, tail = text[:(keep + 1) // 2], text[len(text) - keep // 2:] if keep > 1 else ""
        short = f"{head}..{tail}"
        if draw.textlength(short, font=font) <= width:
            return short
    return ""


def grid_sheet(grid: list[list[Tile | None]], *, tile_size: int, title: str | Sequence[str] = SHEET_NOTICE,
               notes: Sequence[str | None] | None = None) -> Image.Image:
    """Tiles resized to `tile_size` (nearest, so small inputs show their pixels), captions below. `title`: one
    line, or several. `notes`: per row, a line of text under its captions (rows get the room only when some row
    has a note)."""
    lines = [title] if isinstance(title, str) else list(title)
    columns = max((len(row) for row in grid), default=1)
    noted = notes is not None and any(notes)
    cell_w, cell_h = tile_size + PADDING, tile_size + CAPTION_HEIGHT * (2 if noted else 1) + PADDING
    header = CAPTION_HEIGHT * max(1, len(lines)) + PADDING
    sheet = Image.new("RGB", (PADDING + columns * cell_w, header + PADDING + len(grid) * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for k, line in enumerate(lines):
        draw.text((PADDING, PADDING + k * CAPTION_HEIGHT), _fit(draw, line, font, sheet.width - 2 * PADDING),
                  fill=TEXT, font=font)
    for r, row in enumerate(grid):
        y = header + PADDING + r * cell_h
        for c, tile in enumerate(row):
            if tile is None:
                continue
            x = PADDING + c * cell_w
            sheet.paste(tile.image.convert("RGB").resize((tile_size, tile_size), Image.NEAREST), (x, y))
            draw.text((x, y + tile_size + 2), _fit(draw, tile.caption, font, tile_size), fill=TEXT, font=font)
        if noted and r < len(notes) and notes[r]:
            draw.text((PADDING, y + tile_size + CAPTION_HEIGHT + 2),
                      _fit(draw, notes[r], font, sheet.width - 2 * PADDING), fill=NOTE, font=font)
    return sheet


def save_animation(frames: list[Image.Image], path: Path, *, frame_ms: int = 120, max_size: int = 256) -> None:
    """Animated GIF (or WebP, by suffix) of the search converging; frames are shrunk to `max_size`."""
    if not frames:
        raise ValueError("an animation needs at least one frame")
    size = min(max_size, frames[0].width)
    small = [f.convert("RGB").resize((size, size), Image.BICUBIC) for f in frames]
    # The last frame (the chosen result) is held longer so the eye lands on it.
    durations = [frame_ms] * (len(small) - 1) + [frame_ms * 8]
    save_image_atomic(small[0], path, save_all=True, append_images=small[1:], duration=durations, loop=0)
