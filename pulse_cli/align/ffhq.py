"""FFHQ face alignment: from 68 landmarks to the 1024x1024 face the generator was trained on.

This is the procedure of NVIDIA's ffhq-dataset (`recreate_aligned_images`) as PULSE's `shape_predictor.py`
runs it, step for step and constant for constant, so that a photo aligned here gives the crop PULSE's
`align_face.py` gives:

1. an oriented square (the "quad") from the eye centres (mean of points 36-41 and 42-47) and the mouth
   corners (points 48 and 54): its side is the larger of 2x the eye distance and 1.8x the eye-to-mouth
   distance, its centre 0.1 of the way from the eyes to the mouth;
2. for a very large face, shrink the photo by an integer factor first (Lanczos);
3. crop to the quad with a border of 10% of its size;
4. where the quad leaves the photo, reflect-pad it and hide the seam: blur towards the edge and fade to the
   median colour;
5. map the quad onto a 4096x4096 square (bilinear), then a Lanczos resize to 1024x1024.

The whole of it works on 8-bit RGB like the original (Pillow images, numpy in float32 for the padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .sizes import ALIGNED_SIZE

TRANSFORM_SIZE = 4096  # the quad is sampled at this size first, then reduced with Lanczos


@dataclass(frozen=True)
class Quad:
    """The aligned square in photo coordinates (pixels, x right, y down, of the upright photo).

    `corners` are the aligned image's top-left, bottom-left, bottom-right and top-right corners, in that
    order (Pillow's QUAD order); `size` is the length of a side.
    """

    corners: np.ndarray  # float64 [4, 2]
    size: float


def ffhq_quad(landmarks: np.ndarray) -> Quad:
    """The oriented square FFHQ crops, from dlib's 68 landmarks ([68, 2], x then y)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected 68 landmarks as [68, 2], got {list(lm.shape)}")
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eyes = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth - eyes

    # Half a side along the face's horizontal axis: the eye line, tilted by the eye-to-mouth direction
    # turned a quarter; then the vertical half-side is that turned a quarter the other way.
    half_x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    half_x = half_x / np.hypot(*half_x)
    half_x = half_x * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    half_y = np.flipud(half_x) * [-1, 1]
    centre = eyes + eye_to_mouth * 0.1
    corners = np.stack([centre - half_x - half_y, centre - half_x + half_y,
                        centre + half_x + half_y, centre + half_x - half_y])
    return Quad(corners=corners, size=float(np.hypot(*half_x) * 2))


def _bounds(quad: np.ndarray) -> tuple[int, int, int, int]:
    return (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
            int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))


def _pad_and_fill(image: Image.Image, pad: np.ndarray, qsize: float) -> Image.Image:
    """Reflect-pad, then blur the padding more the further out it lies and fade it to the median colour."""
    left, top, right, bottom = (int(p) for p in pad)
    array = np.pad(np.float32(image), ((top, bottom), (left, right), (0, 0)), "reflect")
    height, width, _ = array.shape
    ys, xs, _ = np.ogrid[:height, :width, :1]
    # 1 at the padded image's edge, falling to 0 where the photo starts (and below 0 inside it).
    # (Dividing float32 by numpy integers: float64, as in the original under numpy 2.)
    mask = np.maximum(1.0 - np.minimum(np.float32(xs) / pad[0], np.float32(width - 1 - xs) / pad[2]),
                      1.0 - np.minimum(np.float32(ys) / pad[1], np.float32(height - 1 - ys) / pad[3]))
    from scipy.ndimage import gaussian_filter

    blur = qsize * 0.02
    array += (gaussian_filter(array, [blur, blur, 0]) - array) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    array += (np.median(array, axis=(0, 1)) - array) * np.clip(mask, 0.0, 1.0)
    return Image.fromarray(np.uint8(np.clip(np.rint(array), 0, 255)), "RGB")


def align_ffhq(image: Image.Image, landmarks: np.ndarray, *, output_size: int = ALIGNED_SIZE) -> Image.Image:
    """The FFHQ-aligned face (RGB, `output_size` square) of the face whose 68 landmarks are given.

    `image` is the whole photo, upright, as 8-bit RGB.
    """
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode}")
    quad_info = ffhq_quad(landmarks)
    quad, qsize = quad_info.corners.copy(), quad_info.size
    img = image

    # Shrink: a face larger than twice the output is first reduced by a whole factor.
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        size = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(size, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink

    # Crop to the quad plus a border.
    border = max(int(np.rint(qsize * 0.1)), 3)
    left, top, right, bottom = _bounds(quad)
    crop = (max(left - border, 0), max(top - border, 0),
            min(right + border, img.size[0]), min(bottom + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]

    # Pad where the quad (plus border) leaves the photo.
    left, top, right, bottom = _bounds(quad)
    pad = (max(-left + border, 0), max(-top + border, 0),
           max(right - img.size[0] + border, 0), max(bottom - img.size[1] + border, 0))
    if max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        img = _pad_and_fill(img, pad, qsize)
        quad += pad[:2]

    # Transform: the quad onto a square, sampled bilinearly at 4096, then Lanczos down to the output size.
    img = img.transform((TRANSFORM_SIZE, TRANSFORM_SIZE), Image.Transform.QUAD, tuple((quad + 0.5).flatten()),
                        Image.Resampling.BILINEAR)
    if output_size < TRANSFORM_SIZE:
        img = img.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return img


def downsample_aligned(aligned: Image.Image, size: int):
    """PULSE's bicubic downsampler from the aligned face to `size` (a divisor of its side): a float32
    [3, size, size] tensor in [0, 1], before any 8-bit rounding."""
    import torch

    from ..search.downsample import BicubicDownsample

    side = aligned.size[0]
    if size < 1 or side % size:
        raise ValueError(f"size {size} does not divide {side}")
    tensor = torch.from_numpy(np.asarray(aligned, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        small = BicubicDownsample(side // size)(tensor.contiguous())
    return small[0].clamp(0, 1)
