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


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """`text` in lines that fit `width` pixels, broken between words (a word wider than a line is shortened
    in the middle, see `_fit`)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(_fit(draw, word, font, width))
    return lines or [""]


def grid_sheet(grid: list[list[Tile | None]], *, tile_size: int, title: str | Sequence[str] = SHEET_NOTICE,
               notes: Sequence[str | None] | None = None) -> Image.Image:
    """Tiles resized to `tile_size` (nearest, so small inputs show their pixels), captions below. `title`: one
    paragraph, or several, each above on as many lines as it needs (a sheet one result wide is narrow).
    `notes`: per row, a line of text under its captions (rows get the room only when some row has a note)."""
    paragraphs = [title] if isinstance(title, str) else list(title)
    columns = max((len(row) for row in grid), default=1)
    noted = notes is not None and any(notes)
    cell_w, cell_h = tile_size + PADDING, tile_size + CAPTION_HEIGHT * (2 if noted else 1) + PADDING
    width = PADDING + columns * cell_w
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    font = _font()
    title_lines = [line for paragraph in paragraphs for line in _wrap(draw, paragraph, font, width - 2 * PADDING)]
    header = CAPTION_HEIGHT * max(1, len(title_lines)) + PADDING
    sheet = Image.new("RGB", (width, header + PADDING + len(grid) * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for n, line in enumerate(title_lines):
        draw.text((PADDING, PADDING + n * CAPTION_HEIGHT), line, fill=TEXT, font=font)
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
