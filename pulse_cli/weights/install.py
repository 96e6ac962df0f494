"""What `pulse weights` does, without the terminal: describe the known models, fetch one from its sources,
convert a download or any checkpoint to pulse's .safetensors file with its provenance, and pick files to verify.

Errors: `WeightsUsageError` (a bad argument: exit 2 in the CLI), `DownloadError` (exit 1),
`pulse_cli.checkpoints.io.CheckpointError` (an unusable file: exit 2). Messages are single lines.
torch is imported only by the functions that read or write checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from . import registry
from .download import DownloadError, DownloadResult, download_first, normalize_sha256, write_record
from .local import known_model_for, local_copies, recorded_files
from .locations import cache_dir, user_dir, weights_search_dirs
from .registry import KnownModel, Source, UnknownModelError, find_model

Notify = Callable[[str], None]


class WeightsUsageError(ValueError):
    """A bad argument: unknown model, unsupported URL, unusable folder, missing file..."""


# --------------------------------------------------------------------------------------------- the registry


def model_row(model: KnownModel) -> dict[str, Any]:
    """A known model as `pulse weights list --json` shows it (sources in the order they are tried)."""
    copies = local_copies(model.filename)
    return {
        "name": model.name, "kind": model.kind, "family": model.family, "resolution": model.resolution,
        "url": model.url, "filename": model.filename, "sha256": model.sha256, "licence": model.licence,
        "source": model.source, "sources": [source_row(s) for s in model.sources],
        "training_data": model.training_data_note, "note": model.note, "purpose": model.purpose,
        "present": bool(copies),
        "local_paths": [str(p) for p in copies],
    }


def source_row(source: Source) -> dict[str, Any]:
    return {**source.as_dict(), "status": "verified" if source.verified else "unverified"}


def list_models() -> list[dict[str, Any]]:
    return [model_row(m) for m in registry.KNOWN_MODELS]


def model_metadata(model: KnownModel, source_url: str | None = None) -> dict[str, str]:
    """Provenance written into a converted file: where it came from, its licence and training data."""
    return {
        "source": source_url or model.url or model.source,
        "licence": model.licence,
        "training_data": model.training_data_note,
        "model": model.name,
    }


# --------------------------------------------------------------------------------------------- download


@dataclass(frozen=True)
class Target:
    """What `pulse weights download NAME|URL` fetches."""

    filename: str
    sources: tuple[Source, ...]
    model: KnownModel | None  # None for a plain URL


def resolve_target(name_or_url: str) -> Target:
    """A model name or an http(s) URL as a download target; WeightsUsageError otherwise."""
    if "://" in name_or_url:
        parsed = urlparse(name_or_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise WeightsUsageError(f"{name_or_url}: only http:// and https:// URLs can be downloaded")
        filename = unquote(parsed.path.rsplit("/", 1)[-1]).strip()
        if not filename or filename.startswith(".") or "/" in filename or "\\" in filename:
            filename = "downloaded-checkpoint.bin"
        return Target(filename, (Source("url", name_or_url, verified=False),), None)
    try:
        model = find_model(name_or_url)
    except UnknownModelError as exc:
        raise WeightsUsageError(str(exc)) from None
    if not model.sources:
        raise WeightsUsageError(f"{model.name}: nothing to download: pulse computes it from the generator's "
                                f"mapping network (`pulse weights download` of a generator does it, once); "
                                f"see `pulse weights info {model.name}`")
    return Target(model.filename, model.sources, model)


def parse_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalize_sha256(value)
    except ValueError:
        raise WeightsUsageError(f"--sha256 {value!r}: expected 64 hexadecimal digits") from None


def fetch(target: Target, folder: Path | None = None, *, sha256: str | None = None,
          on_failure: Callable[[DownloadError, bool], None] | None = None, progress: bool = True) -> DownloadResult:
    """Download `target` into `folder` (default: the user weights folder), trying its sources in order.

    The pin is `sha256`, else the registry's digest, else a `.sha256` record already there (trust on first
    use). Raises WeightsUsageError when the folder cannot be made, DownloadError (AllSourcesFailed for a
    model whose every source failed) when nothing could be downloaded; nothing partial is left behind.
    """
    folder = Path(folder) if folder is not None else user_dir()
    made = [p for p in (folder.absolute(), *folder.absolute().parents) if not p.exists()]  # innermost first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsUsageError(f"cannot create {folder} ({exc.strerror or exc})") from None
    pin = sha256 or (target.model.sha256 if target.model is not None else None)
    try:
        return download_first(target.sources, folder / target.filename, sha256=pin, on_failure=on_failure,
                              progress=progress)
    except BaseException:  # nothing downloaded: no folder made for it stays behind either
        for path in made:
            try:
                path.rmdir()
            except OSError:  # not empty (something else is there now), or gone
                break
        raise


def install_download(result: DownloadResult, target: Target, *, samples: int, notify: Notify | None = None
                     ) -> Path | None:
    """Convert a download to pulse's .safetensors file with its provenance; None when it already is one
    (with latent statistics). Raises CheckpointError when the file is not a usable checkpoint."""
    from ..checkpoints.formats import FORMAT_SAFETENSORS
    from ..checkpoints.loading import load_networks

    loaded = load_networks(result.path)
    if loaded.format == FORMAT_SAFETENSORS and loaded.latent_stats is not None:
        return None
    source_url = result.url or target.sources[0].url
    metadata = model_metadata(target.model, source_url) if target.model is not None else {"source": source_url}
    metadata["source_sha256"] = result.sha256
    dst = result.path.with_name(converted_name(result.path, loaded.format))
    if dst == result.path:
        dst = result.path.with_name(f"{result.path.stem}.converted.safetensors")
    return convert_and_record(loaded, dst, gaussian_fit=None, samples=samples, metadata=metadata, notify=notify)


# --------------------------------------------------------------------------------------------- convert


def converted_name(src: Path, fmt: str) -> str:
    """`<stem>.safetensors`; for a pulse folder checkpoint (`<name>/synthesis.pt`), `<name>.safetensors`."""
    stem = src.parent.name if fmt == "pulse" and src.name == "synthesis.pt" and src.parent.name else src.stem
    return f"{stem}.safetensors"


def convert_and_record(src: Any, dst: Path, *, gaussian_fit: Path | None, samples: int, metadata: dict[str, str],
                       notify: Notify | None = None) -> Path:
    """Convert and record the result's sha256 beside it; every failure is a CheckpointError."""
    from ..checkpoints.io import CheckpointError
    from ..checkpoints.loading import convert_checkpoint
    from ..files.atomic import sha256_file

    written = convert_checkpoint(src, dst, gaussian_fit=gaussian_fit, samples=samples, metadata=metadata,
                                 cache_dir=cache_dir(), notify=notify)
    try:
        write_record(written, sha256_file(written))
    except OSError as exc:
        raise CheckpointError(f"{written}: written, but its sha256 record could not be ({exc.strerror or exc})") \
            from None
    return written


def convert_file(src: Path, dst: Path, *, gaussian_fit: Path | None = None, samples: int,
                 licence: str | None = None, source: str | None = None, overwrite: bool = False,
                 notify: Notify | None = None) -> Path:
    """`pulse weights convert`: any supported checkpoint (or a folder holding one) to pulse's .safetensors
    file. `dst` may be a folder (or a name without extension). A known model's provenance is recorded unless
    the file already carries a licence; `licence` and `source` override it."""
    if not src.exists():
        raise WeightsUsageError(f"{src}: no such file")
    if gaussian_fit is not None and not gaussian_fit.is_file():
        raise WeightsUsageError(f"gaussian fit {gaussian_fit} does not exist")
    from ..checkpoints.detect import sniff  # torch: only once the arguments are known good
    from ..checkpoints.loading import load_networks
    from .local import resolve_checkpoint

    real_src = resolve_checkpoint(src)
    if dst.is_dir() or (not dst.exists() and not dst.suffix):
        dst = dst / converted_name(real_src, sniff(real_src).format or "")
    if dst.exists() and not overwrite:
        raise WeightsUsageError(f"{dst} exists; pass --overwrite to replace it")
    loaded = load_networks(real_src)
    g = loaded.generator
    model = known_model_for(real_src, g.family, g.resolution)
    metadata: dict[str, str] = {}
    if model is not None and not loaded.metadata.get("licence"):
        metadata.update(model_metadata(model))
    if licence is not None:
        metadata["licence"] = licence
    if source is not None:
        metadata["source"] = source
    return convert_and_record(loaded, dst, gaussian_fit=gaussian_fit, samples=samples, metadata=metadata,
                              notify=notify)


# --------------------------------------------------------------------------------------------- info


def describe_model(name: str) -> dict[str, Any]:
    """`pulse weights info NAME`: a known model's registry entry, its sources and local copies."""
    try:
        return model_row(find_model(name))
    except UnknownModelError as exc:
        raise WeightsUsageError(str(exc)) from None


def describe_file(path: Path) -> dict[str, Any]:
    """`pulse weights info FILE`: the checkpoint's facts, its provenance (from its metadata, else from the
    known model its name matches) and, for a known model, where it can be downloaded."""
    from ..checkpoints.loading import describe

    if not path.exists():
        raise WeightsUsageError(f"{path}: no such file")
    facts = describe(path, cache_dir=cache_dir())
    meta = facts.pop("metadata")
    model = known_model_for(Path(str(facts["path"])), str(facts["family"]), int(facts["resolution"]))
    facts["licence"] = meta.get("licence") or (model.licence if model is not None else None)
    facts["training_data"] = meta.get("training_data") or (model.training_data_note if model is not None else None)
    facts["source"] = meta.get("source") or (model.url if model is not None else None)
    if meta.get("source_sha256"):
        facts["source_sha256"] = meta["source_sha256"]
    if model is not None:
        facts["model"] = model.name
        facts["sources"] = [source_row(s) for s in model.sources]
    if meta:
        facts["file_metadata"] = meta
    return facts


# --------------------------------------------------------------------------------------------- verify


def files_to_verify(paths: list[Path] | None) -> tuple[list[Path], list[Path]]:
    """(files to check, folders searched) for `pulse weights verify [PATHS]`: by default every file with a
    sha256 record in the weights folders; a folder gives its recorded files; a `.sha256` record, its file."""
    if not paths:
        folders = weights_search_dirs()
        return recorded_files(folders), folders
    targets: list[Path] = []
    for path in paths:
        if path.is_dir():
            targets.extend(recorded_files([path]))
        elif path.name.endswith(".sha256") and path.is_file():
            targets.append(path.with_name(path.name[: -len(".sha256")]))
        elif path.exists() or path.with_name(path.name + ".sha256").is_file():
            targets.append(path)
        else:
            raise WeightsUsageError(f"{path}: no such file")
    return targets, list(paths)
