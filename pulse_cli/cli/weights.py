"""`pulse weights ...`: list, download, verify, inspect and convert generator checkpoints.

torch and the model code are imported inside the commands so that `pulse --help` answers at once.
Results go to stdout; progress, notes and one-line errors to stderr (exit 2: bad file or argument,
exit 1: a failed download or verification).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .console import FAILED, fail, note

PULSE_SAMPLES = 1_000_000  # as latent_stats.PULSE_SAMPLES, without importing torch for --help

weights_app = typer.Typer(
    name="weights",
    help="List, download, verify, inspect and convert generator checkpoints (none ships with pulse).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _out_console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------- helpers


def _local_copies(filename: str) -> list[Path]:
    """Where a known model's file (or its converted .safetensors) sits in the weights folders."""
    from ..weights.locations import weights_search_dirs

    stem = Path(filename).stem
    names = [filename] if filename.endswith(".safetensors") else [filename, f"{stem}.safetensors"]
    found = []
    for folder in weights_search_dirs():
        for name in names:
            for candidate in [folder / name, *sorted(folder.glob(f"*/{name}"))]:
                if candidate.is_file():
                    found.append(candidate)
    return found


def _known_model_for(path: Path, family: str | None = None, resolution: int | None = None):
    """The registry entry whose file this is, judged by name (and, when given, family and resolution)."""
    from ..weights.registry import KNOWN_MODELS

    for model in KNOWN_MODELS:
        if model.kind != "generator":
            continue
        names = {model.filename, f"{Path(model.filename).stem}.safetensors"}
        if path.name in names and family in (None, model.family) and resolution in (None, model.resolution):
            return model
    return None


def _model_metadata(model: Any) -> dict[str, str]:
    return {
        "source": model.url or model.source,
        "licence": model.licence,
        "training_data": model.training_data_note,
        "model": model.name,
    }


def _sha256_arg(value: str | None) -> str | None:
    if value is None:
        return None
    from ..weights.download import normalize_sha256

    try:
        return normalize_sha256(value)
    except ValueError:
        raise fail(f"--sha256 {value!r}: expected 64 hexadecimal digits") from None


def _converted_name(src: Path, fmt: str) -> str:
    stem = src.parent.name if fmt == "pulse" and src.name == "synthesis.pt" and src.parent.name else src.stem
    return f"{stem}.safetensors"


def _convert(src: Any, dst: Path, *, gaussian_fit: Path | None, samples: int, metadata: dict[str, str]) -> Path:
    """Convert and record the result's sha256 beside it; every failure is a CheckpointError."""
    from ..checkpoints.io import CheckpointError
    from ..checkpoints.loading import convert_checkpoint
    from ..files.atomic import sha256_file
    from ..weights.download import write_record
    from ..weights.locations import cache_dir

    written = convert_checkpoint(src, dst, gaussian_fit=gaussian_fit, samples=samples, metadata=metadata,
                                 cache_dir=cache_dir(), notify=note)
    try:
        write_record(written, sha256_file(written))
    except OSError as exc:
        raise CheckpointError(f"{written}: written, but its sha256 record could not be ({exc.strerror or exc})") \
            from None
    return written


# --------------------------------------------------------------------------------------------- list


@weights_app.command("list")
def list_command(
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON array on stdout.")] = False,
) -> None:
    """Known checkpoints: name, family, resolution, source, licence, and whether a copy is present locally."""
    from ..weights.registry import KNOWN_MODELS

    rows = []
    for m in KNOWN_MODELS:
        copies = _local_copies(m.filename)
        rows.append({
            "name": m.name, "kind": m.kind, "family": m.family, "resolution": m.resolution, "url": m.url,
            "filename": m.filename, "sha256": m.sha256, "licence": m.licence, "source": m.source,
            "training_data": m.training_data_note, "note": m.note, "present": bool(copies),
            "local_paths": [str(p) for p in copies],
        })
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(show_lines=True)
    table.add_column("name", no_wrap=True)
    for column in ("family", "res", "source", "licence", "local"):
        table.add_column(column, overflow="fold")
    for r in rows:
        where = r["url"] or f"computed by pulse ({r['source']})"
        local = "\n".join(r["local_paths"]) if r["present"] else "no"
        table.add_row(r["name"], r["family"], str(r["resolution"]), where, r["licence"], local)
    console = _out_console()
    console.print(table)
    console.print("All are trained on FFHQ (Flickr faces, skewed in age and ethnicity) and licensed for "
                  "non-commercial use only. Download with: pulse weights download NAME")


# --------------------------------------------------------------------------------------------- download


def _target(name_or_url: str) -> tuple[str, str, Any]:
    """(url, file name, registry entry or None) for a NAME or URL argument."""
    from urllib.parse import unquote, urlparse

    from ..weights.registry import UnknownModelError, find_model

    if "://" in name_or_url:
        parsed = urlparse(name_or_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise fail(f"{name_or_url}: only http:// and https:// URLs can be downloaded")
        filename = unquote(parsed.path.rsplit("/", 1)[-1]).strip()
        if not filename or filename.startswith(".") or "/" in filename or "\\" in filename:
            filename = "downloaded-checkpoint.bin"
        return name_or_url, filename, None
    try:
        model = find_model(name_or_url)
    except UnknownModelError as exc:
        raise fail(str(exc)) from None
    if model.url is None:
        raise fail(f"{model.name}: nothing to download: {model.note}")
    return model.url, model.filename, model


@weights_app.command("download", no_args_is_help=True)
def download_command(
    target: Annotated[str, typer.Argument(metavar="NAME|URL", help="A name from `pulse weights list`, or a URL.",
                                          show_default=False)],
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 (hex); a mismatch leaves nothing behind.")]
    = None,
    dest: Annotated[Path | None, typer.Option(help="Folder to download into. Default: the user weights folder "
                                                   "(PULSE_HOME or the platform cache dir).")] = None,
    convert: Annotated[bool, typer.Option("--convert/--no-convert", help="Convert to pulse's .safetensors file "
                                                                         "with latent statistics.")] = True,
    latent_samples: Annotated[int, typer.Option(min=2, help="Samples for the latent statistics (PULSE: 10^6).")]
    = PULSE_SAMPLES,
) -> None:
    """Download a checkpoint (resumable, checksummed), then convert it to pulse's single file.

    The sha256 of what arrived is recorded beside it (`<file>.sha256`); `pulse weights verify` checks it.
    Conversion computes the latent statistics once, so the next `pulse upsample` starts at once.
    Exit codes: 0 done; 1 download or checksum failure (nothing unverified is left); 2 bad argument or an
    unusable file.
    """
    url, filename, model = _target(target)
    pin = _sha256_arg(sha256) or (model.sha256 if model is not None else None)
    from ..weights.download import DownloadError, download
    from ..weights.locations import user_dir

    folder = dest if dest is not None else user_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(f"cannot create {folder} ({exc.strerror or exc})") from None
    if model is not None:
        note(f"{model.name}: {model.licence}")
    try:
        result = download(url, folder / filename, sha256=pin)
    except DownloadError as exc:
        raise fail(str(exc), FAILED) from None
    except KeyboardInterrupt:
        note("interrupted: the partial download is kept; rerun the same command to resume")
        raise typer.Exit(130) from None
    note(f"downloaded {result.path} ({result.size:,} bytes, sha256 {result.sha256})")
    if not convert:
        return

    from ..checkpoints.formats import FORMAT_SAFETENSORS
    from ..checkpoints.io import CheckpointError
    from ..checkpoints.loading import load_networks

    try:
        loaded = load_networks(result.path)
    except CheckpointError as exc:
        raise fail(f"downloaded, but not usable: {exc}") from None
    if loaded.format == FORMAT_SAFETENSORS and loaded.latent_stats is not None:
        note(f"ready: {result.path} is a pulse checkpoint with latent statistics")
        return
    metadata = _model_metadata(model) if model is not None else {"source": url}
    metadata["source_sha256"] = result.sha256
    dst = result.path.with_name(_converted_name(result.path, loaded.format))
    if dst == result.path:
        dst = result.path.with_name(f"{result.path.stem}.converted.safetensors")
    try:
        written = _convert(loaded, dst, gaussian_fit=None, samples=latent_samples, metadata=metadata)
    except CheckpointError as exc:
        raise fail(f"downloaded, but not usable: {exc}") from None
    except KeyboardInterrupt:
        note("interrupted: the download is kept; run `pulse weights convert` on it to finish")
        raise typer.Exit(130) from None
    note(f"ready: {written} (pulse will find it; the original stays at {result.path})")


# --------------------------------------------------------------------------------------------- verify


def _recorded_files(folders: list[Path]) -> list[Path]:
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for record in [*sorted(folder.glob("*.sha256")), *sorted(folder.glob("*/*.sha256"))]:
            found.append(record.with_name(record.name[: -len(".sha256")]))
    return found


@weights_app.command("verify")
def verify_command(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders. Default: every file with a "
                                                            "sha256 record in the weights folders.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON array on stdout.")] = False,
) -> None:
    """Check files against the sha256 recorded beside them (`<file>.sha256`). Exit 1 on any mismatch."""
    from ..weights.download import verify_file
    from ..weights.locations import weights_search_dirs

    targets: list[Path] = []
    if not paths:
        targets = _recorded_files(weights_search_dirs())
        if not targets:
            note("nothing to verify: no .sha256 records in " + ", ".join(str(p) for p in weights_search_dirs()))
            return
    for path in paths or []:
        if path.is_dir():
            targets.extend(_recorded_files([path]))
        elif path.name.endswith(".sha256") and path.is_file():
            targets.append(path.with_name(path.name[: -len(".sha256")]))
        elif path.exists() or path.with_name(path.name + ".sha256").is_file():
            targets.append(path)
        else:
            raise fail(f"{path}: no such file")
    if not targets:
        note("nothing to verify: no .sha256 records in " + ", ".join(str(p) for p in paths or []))
        return
    results = [verify_file(p) for p in targets]
    failed = [r for r in results if r.status in ("mismatch", "missing", "bad-record")]
    if json_out:
        typer.echo(json.dumps([{"path": str(r.path), "status": r.status, "expected": r.expected,
                                "actual": r.actual} for r in results], indent=2))
    else:
        labels = {"ok": "ok", "mismatch": "MISMATCH", "missing": "MISSING", "bad-record": "BAD RECORD",
                  "unrecorded": "no record"}
        for r in results:
            line = f"{labels[r.status]:<10} {r.path}"
            if r.status == "mismatch":
                line += f" (expected {r.expected}, got {r.actual})"
            elif r.status == "unrecorded":
                line += f" (sha256 {r.actual}; nothing recorded to check against)"
            typer.echo(line)
    if failed:
        raise fail(f"{len(failed)} of {len(results)} file(s) failed verification", FAILED)


# --------------------------------------------------------------------------------------------- info


@weights_app.command("info", no_args_is_help=True)
def info_command(
    path: Annotated[Path, typer.Argument(help="A checkpoint file (any supported format) or folder.",
                                         show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON object on stdout.")] = False,
) -> None:
    """What a checkpoint is: format, family, resolution, latents, noise layers, size, sha256, licence."""
    if not path.exists():
        raise fail(f"{path}: no such file")
    from ..checkpoints.io import CheckpointError
    from ..checkpoints.loading import describe
    from ..weights.locations import cache_dir

    try:
        facts = describe(path, cache_dir=cache_dir())
    except CheckpointError as exc:
        raise fail(str(exc)) from None
    meta = facts.pop("metadata")
    model = _known_model_for(Path(str(facts["path"])), str(facts["family"]), int(facts["resolution"]))
    facts["licence"] = meta.get("licence") or (model.licence if model is not None else None)
    facts["training_data"] = meta.get("training_data") or (model.training_data_note if model is not None else None)
    facts["source"] = meta.get("source") or (model.url if model is not None else None)
    if meta.get("source_sha256"):
        facts["source_sha256"] = meta["source_sha256"]
    if meta:
        facts["file_metadata"] = meta
    if json_out:
        typer.echo(json.dumps(facts, indent=2))
        return
    labels = [("path", "path"), ("format", "format_description"), ("family", "family"),
              ("resolution", "resolution"), ("num_ws", "num_ws"), ("w_dim", "w_dim"), ("z_dim", "z_dim"),
              ("noise layers", "noise_layers"), ("parameters", "parameters"), ("size", "size_bytes"),
              ("sha256", "sha256"), ("mapping", "mapping"), ("latent stats", "latent_stats"),
              ("source", "source"), ("source sha256", "source_sha256"), ("licence", "licence"),
              ("training data", "training_data")]
    for label, key in labels:
        value = facts.get(key)
        if value is None and key in ("licence", "training_data"):
            value = "unknown: check where the file came from"
        if value is None:
            continue
        if key in ("parameters", "size_bytes"):
            value = f"{value:,}" + (" bytes" if key == "size_bytes" else "")
        typer.echo(f"{label + ':':<15}{value}")


# --------------------------------------------------------------------------------------------- convert


@weights_app.command("convert", no_args_is_help=True)
def convert_command(
    src: Annotated[Path, typer.Argument(help="Any supported checkpoint (or a folder holding one).",
                                        show_default=False)],
    dst: Annotated[Path, typer.Argument(help="The .safetensors file to write, or a folder (a name without "
                                             "extension counts as one) to write <name>.safetensors into.",
                                        show_default=False)],
    gaussian_fit: Annotated[Path | None, typer.Option(help="Latent statistics to attach (PULSE's "
                                                           "gaussian_fit.pt). Default: beside SRC, cached, "
                                                           "or computed.")] = None,
    latent_samples: Annotated[int, typer.Option(min=2, help="Samples when computing the latent statistics "
                                                            "(PULSE: 10^6).")] = PULSE_SAMPLES,
    licence: Annotated[str | None, typer.Option(help="Licence to record in the file's metadata.")] = None,
    source: Annotated[str | None, typer.Option(help="Where the weights came from (URL), for the metadata.")]
    = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace DST if it exists.")] = False,
) -> None:
    """Convert any supported checkpoint to pulse's single .safetensors file (no pickle), latent statistics and
    metadata included. The result loads fast and records where it came from."""
    if not src.exists():
        raise fail(f"{src}: no such file")
    if gaussian_fit is not None and not gaussian_fit.is_file():
        raise fail(f"gaussian fit {gaussian_fit} does not exist")
    from ..checkpoints.formats import sniff
    from ..checkpoints.io import CheckpointError
    from ..checkpoints.loading import load_networks
    from ..weights.local import resolve_checkpoint

    try:
        real_src = resolve_checkpoint(src)
    except CheckpointError as exc:
        raise fail(str(exc)) from None
    if dst.is_dir() or (not dst.exists() and not dst.suffix):
        dst = dst / _converted_name(real_src, sniff(real_src).format or "")
    if dst.exists() and not overwrite:
        raise fail(f"{dst} exists; pass --overwrite to replace it")
    metadata: dict[str, str] = {}
    try:
        loaded = load_networks(real_src)
        g = loaded.generator
        model = _known_model_for(real_src, g.family, g.resolution)
        if model is not None and not loaded.metadata.get("licence"):
            metadata.update(_model_metadata(model))
        if licence is not None:
            metadata["licence"] = licence
        if source is not None:
            metadata["source"] = source
        written = _convert(loaded, dst, gaussian_fit=gaussian_fit, samples=latent_samples, metadata=metadata)
    except CheckpointError as exc:
        raise fail(str(exc)) from None
    note(f"wrote {written}")
