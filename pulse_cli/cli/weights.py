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

from .console import FAILED, fail, note, print_wrapped, printable, stopped
from .options import Command, Group

PULSE_SAMPLES = 1_000_000  # as latent_stats.PULSE_SAMPLES, without importing torch for --help

weights_app = typer.Typer(
    cls=Group,
    name="weights",
    help="List, download, verify, inspect and convert generator checkpoints (none ships with pulse).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _out_console():
    """stdout, as rich sees it (is it a terminal, how wide); lines are printed whole (see `print_wrapped`)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True, emoji=False)


# --------------------------------------------------------------------------------------------- list


@weights_app.command("list", cls=Command)
def list_command(
    json_out: Annotated[bool, typer.Option("--json", metavar="", help="Print a JSON array on stdout.")] = False,
) -> None:
    """Known checkpoints: name, family, resolution, licence, whether a copy is here, and the download
    sources in the order tried. On a terminal each model takes a few lines; in a pipe or file, one line
    each (tab-separated fields, see the note on stderr), and --json gives every field."""
    from ..weights.install import list_models

    rows = list_models()
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    console = _out_console()
    footer = ("The StyleGAN models are trained on FFHQ (Flickr faces, skewed in age and ethnicity) and licensed "
              "for non-commercial use only; dcgan-digiface-64 is a small DCGAN on synthetic faces (DigiFace-1M) "
              "for trying pulse. Sources are tried in the order shown; (unverified): no NVIDIA repository "
              "names that address.")
    if not console.is_terminal:  # for grep and awk: a record per line, the prose on stderr
        for r in rows:
            local = ", ".join(r["local_paths"]) if r["present"] else "not downloaded"
            sources = " ".join(_source_label(s) for s in r["sources"]) or "computed by pulse"
            typer.echo("\t".join([r["name"], r["family"], f"{r['resolution']} px", local, r["licence"],
                                  r["purpose"] or "-", sources]))
        note("one model per line, tab-separated: name, family, resolution, local copies, licence, purpose, "
             "sources in the order tried (--json: every field). " + footer)
        return
    computed = []
    for r in rows:
        if not r["sources"]:  # nothing to download: pulse makes it (PULSE's gaussian fit)
            computed.append(r["name"])
            continue
        local = "here: " + ", ".join(r["local_paths"]) if r["present"] else "not downloaded"
        print_wrapped(console, f"[bold]{r['name']}[/]  {r['family']}, {r['resolution']} px, {local}", indent=4,
                      markup=True)
        print_wrapped(console, f"  licence: {r['licence']}", indent=4)
        if r["purpose"]:
            print_wrapped(console, f"  for: {r['purpose']}", indent=4)
        for i, source in enumerate(r["sources"], 1):
            # a URL on a line of its own: the terminal may wrap it but nothing splits it into a column
            console.print(f"  {i}. {_source_label(source)}", markup=False, soft_wrap=True)
    console.print()
    print_wrapped(console, footer)
    if computed:
        print_wrapped(console, f"Not downloaded but computed by pulse from a generator: {', '.join(computed)} "
                               "(see 'pulse weights info NAME').")
    console.print("Download with: pulse weights download NAME", markup=False)


def _source_label(row: dict[str, Any]) -> str:
    return row["url"] if row["verified"] else f"{row['url']} (unverified)"


# --------------------------------------------------------------------------------------------- download


@weights_app.command("download", no_args_is_help=True, cls=Command)
def download_command(
    target: Annotated[str, typer.Argument(metavar="NAME|URL", help="A name from 'pulse weights list', or a URL.",
                                          show_default=False)],
    sha256: Annotated[str | None, typer.Option(metavar="HEX",
                                               help="Expected sha256 (hex); a mismatch leaves nothing behind.")]
    = None,
    dest: Annotated[Path | None, typer.Option(metavar="FOLDER", help="Folder to download into. Default: the user "
                                                                     "weights folder (PULSE_HOME or the platform "
                                                                     "cache dir).")] = None,
    convert: Annotated[bool, typer.Option("--convert/--no-convert", metavar="",
                                          help="Convert to pulse's .safetensors file with latent statistics.")]
    = True,
    latent_samples: Annotated[int, typer.Option(min=2, metavar="N",
                                                help="Samples for the latent statistics (PULSE: 10^6).")]
    = PULSE_SAMPLES,
) -> None:
    """Download a checkpoint (checksummed), then convert it to pulse's single file.

    A known model's sources are tried in the order 'pulse weights list' shows (Google Drive through gdown
    first where NVIDIA publishes the file there); a failed source gets one line and the next is tried.
    The sha256 of what arrived is recorded beside it (<file>.sha256); 'pulse weights verify' checks it.
    There is no resume: an interrupted or failed download leaves nothing behind.
    Conversion computes the latent statistics once, so the next 'pulse upsample' starts at once.
    Exit codes: 0 done; 1 download or checksum failure (nothing unverified is left); 2 bad argument or an
    unusable file.
    """
    from ..checkpoints.errors import CheckpointError
    from ..weights.download import AllSourcesFailed, DownloadError
    from ..weights.install import WeightsUsageError, fetch, install_download, parse_sha256, resolve_target

    try:
        wanted = resolve_target(target)
        pin = parse_sha256(sha256)
    except WeightsUsageError as exc:
        raise fail(str(exc)) from None
    if wanted.model is not None:
        note(f"{wanted.model.name}: {wanted.model.licence}")

    def source_failed(exc: DownloadError, last: bool) -> None:
        if not last:  # the last failure is the error line below: one line per failed source in all
            note(f"{exc}; trying the next source")

    try:
        result = fetch(wanted, dest, sha256=pin, on_failure=source_failed)
    except WeightsUsageError as exc:
        raise fail(str(exc)) from None
    except AllSourcesFailed as exc:
        every = " (every source failed)" if len(exc.failures) > 1 else ""
        raise fail(f"{exc.failures[-1]}{every}; {_manual_help(wanted, dest)}", FAILED) from None
    except DownloadError as exc:
        raise fail(str(exc), FAILED) from None
    except KeyboardInterrupt as exc:
        raise stopped(exc, "nothing was kept; rerun the same command to download again") from None
    if result.url is None:  # a file matching the expected sha256 was there already: nothing was fetched
        note(f"already here: {result.path} ({result.size:,} bytes, sha256 {result.sha256}, as expected)")
    else:
        note(f"downloaded {result.path} ({result.size:,} bytes, sha256 {result.sha256})")
    if not convert:
        return
    try:
        written = install_download(result, wanted, samples=latent_samples, notify=note)
    except CheckpointError as exc:
        raise fail(f"downloaded, but not usable: {exc}") from None
    except KeyboardInterrupt as exc:
        raise stopped(exc, "the download is kept; run `pulse weights convert` on it to finish") from None
    if written is None:
        note(f"ready: {result.path} is a pulse checkpoint with latent statistics")
    else:
        note(f"ready: {written} (pulse will find it; the original stays at {result.path})")


def _manual_help(wanted, dest: Path | None) -> str:
    """The by-hand route, into the folder `pulse upsample` searches (or --dest, then named with --checkpoint)."""
    from ..weights.download import manual_help
    from ..weights.locations import user_dir, weights_search_dirs

    folder = dest if dest is not None else user_dir()
    text = manual_help(wanted.sources, folder)
    if Path(folder).resolve() not in [p.resolve() for p in weights_search_dirs()]:
        text += f" and pass --checkpoint {folder} to pulse upsample"
    return text


# --------------------------------------------------------------------------------------------- verify


@weights_app.command("verify", cls=Command)
def verify_command(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders. Default: every file with a "
                                                            "sha256 record in the weights folders.")] = None,
    json_out: Annotated[bool, typer.Option("--json", metavar="", help="Print a JSON array on stdout.")] = False,
) -> None:
    """Check files against the sha256 recorded beside them (<file>.sha256). Exit 1 on any mismatch."""
    from ..weights.download import verify_file
    from ..weights.install import WeightsUsageError, files_to_verify

    try:
        targets, searched = files_to_verify(paths)
    except WeightsUsageError as exc:
        raise fail(str(exc)) from None
    if not targets:
        note("nothing to verify: no .sha256 records in " + ", ".join(str(p) for p in searched))
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


@weights_app.command("info", no_args_is_help=True, cls=Command)
def info_command(
    path: Annotated[Path, typer.Argument(help="A checkpoint file (any supported format) or folder, or the "
                                              "name of a known model.", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", metavar="", help="Print a JSON object on stdout.")] = False,
) -> None:
    """What a checkpoint is: format, family, resolution, latents, noise layers, size, sha256, licence; for a
    known model's name, its registry entry and download sources (in the order tried)."""
    from ..weights.install import WeightsUsageError, describe_model

    if not path.exists():
        try:
            model = describe_model(str(path))
        except WeightsUsageError:
            raise fail(f"{path}: no such file (nor the name of a known model)") from None
        if json_out:
            typer.echo(json.dumps(model, indent=2))
        else:
            _print_model(model)
        return
    from ..checkpoints.errors import CheckpointError
    from ..weights.install import describe_file

    try:
        facts = describe_file(path)
    except (WeightsUsageError, CheckpointError) as exc:
        raise fail(str(exc)) from None
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
        _print_field(label, value)
    _print_sources(facts.get("sources", []))


def _print_field(label: str, value: Any) -> None:
    """`label:  value` on one line: a value from a file's metadata is anyone's text, so a newline in it cannot
    forge a line (`sha256: ... (verified)`) nor a bidirectional control turn it around (see `printable`)."""
    typer.echo(f"{label + ':' if label else '':<15}{printable(str(value))}")


def _print_sources(sources: list[dict[str, Any]]) -> None:
    for i, source in enumerate(sources, 1):
        _print_field("sources" if i == 1 else "", f"{i}. {_source_label(source)}"
                     + (f" - {source['note']}" if source["note"] else ""))


def _print_model(model: dict[str, Any]) -> None:
    for label, key in [("model", "name"), ("kind", "kind"), ("family", "family"), ("resolution", "resolution"),
                       ("file", "filename"), ("project", "source"), ("licence", "licence"),
                       ("training data", "training_data"), ("note", "note")]:
        _print_field(label, model[key])
    _print_sources(model["sources"])
    _print_field("local", ", ".join(model["local_paths"]) or "no copy in the weights folders")


# --------------------------------------------------------------------------------------------- convert


@weights_app.command("convert", no_args_is_help=True, cls=Command)
def convert_command(
    src: Annotated[Path, typer.Argument(help="Any supported checkpoint (or a folder holding one).",
                                        show_default=False)],
    dst: Annotated[Path, typer.Argument(help="The .safetensors file to write, or a folder (a name without "
                                             "extension counts as one) to write <name>.safetensors into.",
                                        show_default=False)],
    gaussian_fit: Annotated[Path | None, typer.Option(metavar="PATH", help="Latent statistics to attach (PULSE's "
                                                           "gaussian_fit.pt). Default: beside SRC, cached, "
                                                           "or computed.")] = None,
    latent_samples: Annotated[int, typer.Option(min=2, metavar="N", help="Samples when computing the latent "
                                                                         "statistics (PULSE: 10^6).")]
    = PULSE_SAMPLES,
    licence: Annotated[str | None, typer.Option(metavar="TEXT", help="Licence to record in the file's metadata.")]
    = None,
    source: Annotated[str | None, typer.Option(metavar="URL",
                                               help="Where the weights came from (URL), for the metadata.")]
    = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", metavar="", help="Replace DST if it exists.")] = False,
) -> None:
    """Convert any supported checkpoint to pulse's single .safetensors file (no pickle), latent statistics and
    metadata included. The result loads fast and records where it came from."""
    from ..checkpoints.errors import CheckpointError
    from ..weights.install import WeightsUsageError, convert_file

    try:
        written = convert_file(src, dst, gaussian_fit=gaussian_fit, samples=latent_samples, licence=licence,
                               source=source, overwrite=overwrite, notify=note)
    except (WeightsUsageError, CheckpointError) as exc:
        raise fail(str(exc)) from None
    note(f"wrote {written}")
