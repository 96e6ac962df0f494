"""Re-rendering a saved result from its latents file, with the checkpoint it was made with."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints.loading import load_networks
from ..files.atomic import sha256_file
from ..files.images import save_png
from ..files.latents import load_latents
from ..files.metadata import result_metadata
from ..weights.local import resolve_checkpoint


class RenderError(ValueError):
    """The latents file, its checkpoint or the two together cannot be rendered; one line."""


def render_latents_file(latents: Path, out: Path, *, checkpoint: Path | None = None,
                        device: torch.device = torch.device("cpu"), metadata: bool = True) -> Path:
    """Render `latents` (a `--save-latents` file) to the PNG `out`, bit for bit as the search wrote it on the
    same device. The checkpoint is the one recorded in the file unless `checkpoint` is given; either way its
    sha256 must match the recorded one. Raises RenderError, LatentsError, CheckpointError (all one line)
    or OSError when `out` cannot be written."""
    from ..engine import Engine

    ws, noise, info = load_latents(latents)
    path = checkpoint if checkpoint is not None else Path(info.get("checkpoint", ""))
    if not str(path) or not path.exists():
        raise RenderError(f"checkpoint {path} recorded in {latents} not found; pass --checkpoint")
    path = resolve_checkpoint(path)
    digest = sha256_file(path)
    recorded = info.get("checkpoint_sha256")
    if recorded and recorded != digest:
        raise RenderError(f"{latents} was made with a checkpoint of sha256 {recorded[:12]}…, "
                          f"but {path} has {digest[:12]}…")
    # Rendering needs no latent statistics, but the search's own evaluation path.
    generator = load_networks(path).generator.use_fast_path(info.get("synthesis_path", "reference") == "fast")
    try:
        image = Engine(generator, device=device).render(ws, noise)
    except ValueError as exc:
        raise RenderError(f"{latents} does not fit this generator ({exc})") from None
    text = None
    if metadata:
        text = result_metadata(checkpoint=path.name, checkpoint_sha256=digest,
                               seed=int(info.get("seed", -1)), image_seed=int(info.get("image_seed", -1)),
                               steps=int(info.get("steps", -1)), l2=float(info.get("l2", "nan")),
                               status=info.get("status", "unknown"), input_sha256=info.get("input_sha256", ""))
    save_png(image, out, text=text)
    return out
