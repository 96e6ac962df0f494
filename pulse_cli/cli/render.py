"""`pulse render LATENTS OUT`: re-render a saved result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import err_console, fail


def render(
    latents: Annotated[Path, typer.Argument(help="A .latents.safetensors file from --save-latents.")],
    out: Annotated[Path, typer.Argument(help="PNG to write.")],
    checkpoint: Annotated[Path | None, typer.Option(
        metavar="PATH", help="Generator checkpoint (it must hold the recorded network). Default: the one "
                             "recorded in the latents file, else a file with its sha256 in the weights "
                             "folders (a converted .safetensors counts).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps. Bit-for-bit on the device the "
                                             "result was made on.")] = "cpu",
    metadata: Annotated[bool, typer.Option("--metadata/--no-metadata", metavar="",
                                           help="Label the PNG as synthetic.")] = True,
) -> None:
    """Re-render a saved result from its latents and noise (same device: bit for bit)."""
    from ..files.discovery import IMAGE_SUFFIXES

    if out.suffix.lower() not in IMAGE_SUFFIXES:  # the suffix says the format
        raise fail(f"{out}: name the image to write with an image extension, e.g. {out.name or 'out'}.png")
    from ..checkpoints.io import CheckpointError
    from ..device import resolve_device
    from ..files.latents import LatentsError
    from ..run.render import RenderError, render_latents_file

    try:
        render_latents_file(latents, out, checkpoint=checkpoint, device=resolve_device(device), metadata=metadata)
    except (RenderError, LatentsError, CheckpointError, ValueError) as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    err_console.print(f"wrote {out}")
