"""Re-rendering a saved result from its latents file, with the checkpoint it was made with."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints.loading import load_networks
from ..files.atomic import sha256_file
from ..files.images import save_png
from ..files.latents import load_latents
from ..files.metadata import result_metadata
from ..weights.local import converted_from, find_by_sha256, resolve_checkpoint


class RenderError(ValueError):
    """The latents file, its checkpoint or the two together cannot be rendered; one line."""


def same_network(path: Path, sha256: str) -> bool:
    """Whether `path` holds the network of the checkpoint with this sha256: that very file, or pulse's
    .safetensors converted from it (the conversion keeps every tensor)."""
    return sha256_file(path) == sha256 or converted_from(path) == sha256


def locate_checkpoint(latents: Path, info: dict[str, str], explicit: Path | None = None) -> Path:
    """The checkpoint to render `latents` with: `explicit` if given (it must hold the recorded network);
    else the recorded path (absolute since results record it so); else a file in the weights folders with
    the recorded sha256, or converted from it. An environment variable never overrides the record."""
    recorded_sha = info.get("checkpoint_sha256") or None
    if explicit is not None:
        path = resolve_checkpoint(explicit)
        if recorded_sha and not same_network(path, recorded_sha):
            raise RenderError(f"{latents} was made with a checkpoint of sha256 {recorded_sha[:12]}…, which "
                              f"{path} is not (nor converted from it)")
        return path
    recorded = info.get("checkpoint", "")
    if recorded and Path(recorded).is_file() and (recorded_sha is None or same_network(Path(recorded), recorded_sha)):
        return Path(recorded)
    found = find_by_sha256(recorded_sha) if recorded_sha else None
    if found is None:
        raise RenderError(f"checkpoint {recorded or '(none recorded)'} of {latents} not found, nor a file with "
                          f"its sha256 in the weights folders; pass --checkpoint")
    return found


def render_latents_file(latents: Path, out: Path, *, checkpoint: Path | None = None,
                        device: torch.device = torch.device("cpu"), metadata: bool = True) -> Path:
    """Render `latents` (a `--save-latents` file) to the PNG `out`, bit for bit as the search wrote it on the
    same device, with the checkpoint `locate_checkpoint` finds. Raises RenderError, LatentsError,
    CheckpointError (all one line) or OSError when `out` cannot be written."""
    from ..engine import Engine

    ws, noise, info = load_latents(latents)
    path = locate_checkpoint(latents, info, checkpoint)
    # Rendering needs no latent statistics, but the search's own evaluation path.
    generator = load_networks(path).generator.use_fast_path(info.get("synthesis_path", "reference") == "fast")
    try:
        threads = int(info["threads"]) if info.get("threads", "").isdigit() else None  # as the search ran
        image = Engine(generator, device=device).render(ws, noise, threads=threads)
    except ValueError as exc:
        raise RenderError(f"{latents} does not fit this generator ({exc})") from None
    if not bool(torch.isfinite(image).all()):
        from ..search.pulse import NON_FINITE

        raise RenderError(f"{latents}: {NON_FINITE}")
    text = None
    if metadata:
        text = result_metadata(checkpoint=path.name, checkpoint_sha256=info.get("checkpoint_sha256") or None,
                               seed=int(info.get("seed", -1)), image_seed=int(info.get("image_seed", -1)),
                               steps=int(info.get("steps", -1)), l2=float(info.get("l2", "nan")),
                               status=info.get("status", "unknown"), input_sha256=info.get("input_sha256", ""),
                               family=generator.family)
    save_png(image, out, text=text)
    return out
