"""`pulse demo-generator FOLDER`: the small untrained StyleGAN the README's demo runs on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import err_console, fail


def demo_generator(
    folder: Annotated[Path, typer.Argument(help="Where to write synthesis.pt and mapping.pt.")],
    seed: Annotated[int, typer.Option(metavar="INT", help="Seed of the random weights.")] = 0,
) -> None:
    """Write the small untrained demo StyleGAN (PULSE layout): shows the mechanics, not faces."""
    if folder.exists() and not folder.is_dir():  # before torch, which takes seconds to import
        raise fail(f"cannot write {folder}: not a folder")
    from ..checkpoints.demo import write_demo_checkpoint

    try:
        path = write_demo_checkpoint(folder, seed)
    except OSError as exc:
        raise fail(f"cannot write {folder}: {exc.strerror or exc}") from None
    err_console.print(f"wrote {path} (untrained demo generator)")
