"""Reading input images into RGB tensors and writing results as PNG."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from ..errors import first_line
from .atomic import atomic_write_bytes, open_for_reading


class ImageError(ValueError):
    """An input cannot be used; the message is one line, fit for a per-file error."""


MIN_SIZE = 4  # below this the downsampler's padding exceeds the generated image, and nothing is left to fit


def check_size(width: int, height: int, resolution: int) -> None:
    """Inputs must be square with a size that divides the generator's resolution."""
    if width != height:
        raise ImageError(f"image is {width}x{height}; inputs must be square")
    if width < MIN_SIZE:
        raise ImageError(f"image is {width}x{height}; inputs must be at least {MIN_SIZE}x{MIN_SIZE}")
    if width > resolution:
        raise ImageError(f"image is {width}x{height}, larger than the generator's {resolution}x{resolution}")
    if resolution % width:
        sizes = ", ".join(str(resolution >> k) for k in range(7, 1, -1) if resolution >> k >= 4)
        raise ImageError(f"image is {width}x{height}; its size must divide the generator's resolution "
                         f"{resolution} (e.g. {sizes})")


def _to_rgb_array(image: Image.Image, integer_full_scale: float = 65535.0) -> np.ndarray:
    """HxWx3 float32 in [0, 1] from any Pillow mode; alpha is composited over white. `integer_full_scale`:
    white in an integer mode (see `_integer_full_scale`)."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow reads 16-bit grey (PNG, TIFF, PGM) into these integer modes: full scale is 65535; and 32-bit
        # integer grey (TIFF) into "I", whose full scale its BitsPerSample and SampleFormat tags say.
        grey = np.asarray(image, dtype=np.float64) / integer_full_scale
        return np.repeat(np.clip(grey, 0, 1)[..., None], 3, axis=2).astype(np.float32)
    if image.mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
        return np.repeat(grey[..., None], 3, axis=2)
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _integer_full_scale(image: Image.Image) -> float:
    """The value that is white in a Pillow integer-mode image: 2**31 - 1 (signed) or 2**32 - 1 for a 32-bit
    TIFF, else 65535 (16-bit PNG, TIFF, PGM)."""
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None  # BitsPerSample
    if image.mode == "I" and bits and max(bits) == 32:
        signed = (tags.get(339) or (1,))[0] == 2  # SampleFormat 2: two's complement
        return float(2**31 - 1 if signed else 2**32 - 1)
    return 65535.0


def open_image(path: Path) -> Image.Image:
    """Open lazily (header only) with one-line errors; the caller checks the size before decoding. A file in
    an output folder is read without following a link there (see `files.atomic.confine`)."""
    try:
        with open_for_reading(path) as f:
            data = f.read()
        if not data:
            raise ImageError("file is empty (0 bytes)")
        return Image.open(io.BytesIO(data))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read (corrupt or unknown format)") from None
    except Image.DecompressionBombError:
        raise ImageError("image has too many pixels to open safely") from None
    except OSError as exc:
        if exc.errno is not None:  # the file system's complaint, e.g. permission denied
            raise ImageError(f"cannot open: {exc.strerror or exc}") from None
        raise ImageError(f"corrupt or truncated image ({exc})") from None


def load_rgb(path: Path, resolution: int | None = None) -> torch.Tensor:
    """Read an image as [3, H, W] float32 in [0, 1]: first frame, EXIF orientation applied.

    With `resolution`, the size is checked before the pixels are decoded.
    """
    image = open_image(path)
    with image:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                if resolution is not None:
                    # From the header, before decoding. EXIF orientation only swaps width and height,
                    # which changes neither squareness nor divisibility.
                    check_size(*image.size, resolution)
                image.seek(0)
                image.load()
                full_scale = _integer_full_scale(image)  # from the file's tags, which a transposed copy lacks
                image = ImageOps.exif_transpose(image)
                array = _to_rgb_array(image, full_scale)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError("image has too many pixels to decode safely") from None
        except Exception as exc:  # decoders raise many types on bad data (OSError, struct.error, ...)
            raise ImageError(f"corrupt or truncated image ({first_line(exc)})") from None
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).contiguous()


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3, H, W] in [0, 1] -> 8-bit RGB, rounding to nearest."""
    assert image.ndim == 3 and image.shape[0] == 3, image.shape
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


def save_image_atomic(image: Image.Image, path: Path, **save_options) -> None:
    """Write a Pillow image atomically, in the format its suffix names (PNG, GIF, WebP, ...)."""
    buffer = io.BytesIO()
    image.save(buffer, format=Image.registered_extensions()[Path(path).suffix.lower()], **save_options)
    atomic_write_bytes(Path(path), buffer.getvalue())


def png_info(text: dict[str, str] | None) -> PngImagePlugin.PngInfo | None:
    """PNG text chunks (iTXt: any Unicode) for `save_image_atomic(..., pnginfo=...)`."""
    if not text:
        return None
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value)
    return info


def save_png(image: torch.Tensor, path: Path, text: dict[str, str] | None = None) -> None:
    """Write a [3, H, W] result as PNG atomically, with optional text chunks."""
    save_image_atomic(to_pil(image), path, pnginfo=png_info(text))
