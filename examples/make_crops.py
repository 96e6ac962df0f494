"""Regenerate the example crops in examples/crops/ (needs scikit-image, a dev-only dependency).

Source: scikit-image's `astronaut()`, a NASA photograph of Eileen Collins (public domain).
Run from the repo root: python examples/make_crops.py
"""

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

OUT = Path(__file__).resolve().parent / "crops"
FACE_BOX = (140, 20, 340, 220)  # left, top, right, bottom: the face, square


def main() -> None:
    OUT.mkdir(exist_ok=True)
    photo = Image.fromarray(np.asarray(data.astronaut()))
    face = photo.crop(FACE_BOX)
    face.resize((16, 16), Image.BICUBIC).save(OUT / "astronaut.png")
    face.resize((16, 16), Image.BICUBIC).convert("L").save(OUT / "astronaut_grey.png")
    mirrored = face.transpose(Image.FLIP_LEFT_RIGHT).resize((16, 16), Image.BICUBIC)
    mirrored.save(OUT / "astronaut_mirrored.jpg", quality=95)
    wider = photo.crop((110, 0, 370, 260))
    wider.resize((32, 32), Image.BICUBIC).save(OUT / "astronaut_32.png")


if __name__ == "__main__":
    main()
