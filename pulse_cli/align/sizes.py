"""The size alignment works at and the crop sizes `pulse align --size` takes: no numpy here, so that a bad
--size is refused before the alignment code is imported."""

from __future__ import annotations

ALIGNED_SIZE = 1024  # FFHQ's resolution, the generator's
MIN_CROP_SIZE = 4  # what `pulse upsample` accepts at the least


def check_crop_size(size: int) -> None:
    """A crop size must be a power of two from 4 to 1024, so that it divides the aligned 1024."""
    if not (MIN_CROP_SIZE <= size <= ALIGNED_SIZE and size & (size - 1) == 0):
        raise ValueError(f"--size {size}: use a power of two from {MIN_CROP_SIZE} to {ALIGNED_SIZE} "
                         f"(8, 16, 32, 64, ...) so that it divides the aligned {ALIGNED_SIZE}")
