"""`pulse render LATENTS OUT`: re-render a saved result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import err_console, fail


def render(
    latents: Annotated[Path, typer.Argument(metavar="LATENTS", show_default=False,
                                            help="A .latents.safetensors file from --save-latents.")],
    out: Annotated[Path, typer.Argument(metavar="OUT", show_default=False,
                                        help="The .png file to write (PNG keeps the synthetic-image label).")],
    checkpoint: Annotated[Path | None, typer.Option(
        metavar="PATH", help="Generator checkpoint (it must hold the recorded network). Default: the one "
                             "recorded in the latents file, else a file with its sha256 in the weights "
                             "folders (a converted .safetensors counts).")] = None,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps. Bit for bit on "
                                                               "the device the result was made on.")] = "cpu",
    metadata: Annotated[bool, typer.Option("--metadata/--no-metadata", metavar="",
                                           help="Label the PNG as synthetic.")] = True,
) -> None:
    """Re-render a saved result from its latents and noise (same device: bit for bit)."""
    # the arguments first: torch takes seconds to import
    if not latents.is_file():
        raise fail(f"latents file {latents} does not exist")
    if out.suffix.lower() != ".png":
        raise fail(f"{out}: pulse render writes PNG (with the synthetic-image label); name it *.png")
    if checkpoint is not None and not checkpoint.exists():
        raise fail(f"checkpoint {checkpoint} does not exist")
    from ..device import check_device_spec, resolve_device

    try:
        check_device_spec(device)
    except ValueError as exc:
        raise fail(str(exc)) from None
    from ..checkpoints.errors import CheckpointError
    from ..files.latents import LatentsError
    from ..run.render import RenderError, render_latents_file

    try:
        render_latents_file(latents, out, checkpoint=checkpoint, device=resolve_device(device), metadata=metadata)
    except (RenderError, LatentsError, CheckpointError, ValueError) as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc.strerror or exc}") from None
    err_console.print(f"wrote {out}")
