"""`pulse align PHOTOS CROPS`: find the faces in real photos and write FFHQ-aligned crops for `pulse upsample`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .console import FAILED, err_console, fail, printable, sigterm_as_interrupt, stopped
from .options import (
    OUTPUT,
    JsonFlag,
    QuietFlag,
    UsageError,
    check_in_and_out,
    check_input,
    check_output_folder,
    flag,
)

ALIGNMENT = "Alignment"
DEFAULT_MIN_SCORE = 0.5  # the same as pulse_cli.align.detect.DEFAULT_MIN_SCORE (not imported: --help stays light)


def align(
    photos: Annotated[Path, typer.Argument(metavar="PHOTOS", help="Folder of photos, or one photo.",
                                           show_default=False)],
    crops: Annotated[Path, typer.Argument(metavar="CROPS", help="Folder for the crops and faces.jsonl.",
                                          show_default=False)],
    size: Annotated[int, typer.Option(metavar="PX", rich_help_panel=ALIGNMENT,
                                      help="Side of each crop: a power of two that divides 1024 (8, 16, 32, "
                                           "64, ...).")] = 16,
    min_score: Annotated[float, typer.Option(metavar="S", rich_help_panel=ALIGNMENT,
                                             help="Align only detections scoring at least S. Real frontal faces "
                                                  "mostly score above 0.5 and false ones just above 0 (a "
                                                  "mission patch: 0.12, the face beside it: 1.16). 0 keeps "
                                                  "every detection dlib reports by default, as PULSE did; "
                                                  "below 0 lowers dlib's threshold too.")]
    = DEFAULT_MIN_SCORE,
    keep_aligned: Annotated[bool, flag("--keep-aligned", panel=ALIGNMENT,
                                       help="Also keep the 1024x1024 aligned face, CROPS/<rel>.face<N>.aligned.png "
                                            "('pulse upsample CROPS' then takes it as an input too).")] = False,
    recursive: Annotated[bool, flag("--recursive", "-r", panel=OUTPUT,
                                    help="Include sub-folders (mirrored in CROPS).")] = False,
    overwrite: Annotated[bool, flag("--overwrite", panel=OUTPUT, help="Redo photos that are done.")] = False,
    strict: Annotated[bool, flag("--strict", panel=OUTPUT,
                                 help="Exit 1 if a photo (done earlier included) has no face.")] = False,
    quiet: QuietFlag = False,
    json_summary: JsonFlag = False,
) -> None:
    """Find the faces in photos and write FFHQ-aligned crops for 'pulse upsample'.

    For the N-th face of each photo it writes [bold]CROPS/<relative path>.face<N>.png[/] at --size, and one
    line per face in [bold]CROPS/faces.jsonl[/] (box, score, 68 landmarks and the alignment quad, in pixels of
    the upright photo: enough to map a result back onto it); a photo without a face, or one that failed,
    gets one line. Rerunning skips photos that are done. Then: [bold]pulse upsample CROPS OUT[/].

    Alignment is PULSE's: dlib's HOG face detector, its 68-point landmarks and the FFHQ crop, then PULSE's
    bicubic downsampler. Needs the extra: in your pulse-cli clone, pip install '.\\[align]'.

    [bold]Licence:[/] the 68-point landmark model was trained on the iBUG 300-W data set, whose terms
    exclude commercial use. PULSE_LANDMARKS_MODEL=PATH uses another 68-point dlib model file instead.

    Exit codes: 0 every photo was handled (faces or none); 1 a photo failed (or, with --strict, had no
    face); 2 usage error (bad PHOTOS/CROPS or --size, the extra not installed).
    """
    try:
        check_input(photos)
        check_in_and_out(photos, crops)
        if not math.isfinite(min_score):
            raise UsageError(f"--min-score {min_score}: use a finite number")
        from ..align.sizes import check_crop_size

        try:
            check_crop_size(size)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        check_output_folder(crops)
        from ..align.detect import MissingExtra, check_installed

        try:
            check_installed()
        except MissingExtra as exc:
            raise UsageError(str(exc)) from None
    except UsageError as exc:
        raise fail(str(exc)) from None

    from ..align.run import align_photos

    reporter = _TerminalReporter(quiet=quiet)
    try:
        with sigterm_as_interrupt():
            summary = align_photos(photos, crops, size=size, min_score=min_score, recursive=recursive,
                                   overwrite=overwrite, keep_aligned=keep_aligned, reporter=reporter)
    except OSError as exc:  # faces.jsonl itself could not be written
        from ..errors import describe_os_error

        message = f"cannot write {describe_os_error(exc)}; finished crops are kept, rerun to resume"
        raise fail(message, FAILED) from None
    except KeyboardInterrupt as exc:
        raise stopped(exc, "finished crops are kept; rerun the same command to resume") from None

    if summary.photos == 0:
        err_console.print(f"[yellow]warning:[/] no images found in {escape(printable(str(photos)))}"
                          + ("" if recursive or photos.is_file() else " (use --recursive for sub-folders)"))
    if summary.other_options and not quiet:
        err_console.print(f"[yellow]warning:[/] {summary.other_options} done photo(s) were aligned with another "
                          "--size or --min-score; they are skipped, --overwrite redoes them")
    if not quiet:
        _print_summary_table(summary)
    if json_summary:
        typer.echo(json.dumps(_summary_object(summary, crops)))
    if strict and summary.no_face_total:
        err_console.print(f"[bold red]error:[/] {summary.no_face_total} photo(s) have no face (--strict), "
                          "skipped ones included")
    failed = summary.counts["failed"] > 0 or (strict and summary.no_face_total > 0)
    raise typer.Exit(FAILED if failed else 0)


class _TerminalReporter:
    """A bar on a terminal; elsewhere one plain line per photo. Errors always, one line each."""

    def __init__(self, *, quiet: bool):
        self.quiet = quiet
        self.interactive = err_console.file.isatty()
        self.bar = None

    def note(self, message: str) -> None:
        if not self.quiet:
            self._write(escape(printable(message)))

    def start(self, todo: int) -> None:
        if self.quiet or todo == 0 or not self.interactive:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=todo, unit="photo", desc="aligning", file=err_console.file, dynamic_ncols=True)

    def photo_done(self, rel: str, status: str, faces: int, seconds: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
        elif not self.quiet:
            what = f"{faces} face(s)" if faces else "no face"
            self._write(escape(f"done {printable(rel)}: {what}, {seconds:.1f} s"))

    def photo_failed(self, rel: str, reason: str) -> None:
        if self.bar is not None:
            self.bar.update(1)
        self._write(f"[bold red]error:[/] {escape(printable(rel))}: {escape(printable(reason))}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _write(self, markup: str) -> None:
        if self.bar is not None:
            with self.bar.external_write_mode(file=err_console.file):
                err_console.print(markup, highlight=False)
        else:
            err_console.print(markup, highlight=False)


def _summary_object(summary, crops: Path) -> dict[str, Any]:
    return {
        "photos": summary.photos,
        **summary.counts,
        "faces": summary.faces,
        "seconds": round(summary.seconds, 3),
        "crops": str(crops),
        "faces_file": str(summary.faces_file),
    }


def _print_summary_table(summary) -> None:
    from rich.table import Table

    table = Table(title="pulse align", show_edge=False)
    for column in ("with faces", "faces", "no face", "failed", "skipped", "photos", "seconds"):
        table.add_column(column, justify="right")
    c = summary.counts
    table.add_row(str(c["ok"]), str(summary.faces), str(c["no_face"]), str(c["failed"]), str(c["skipped"]),
                  str(summary.photos), f"{summary.seconds:.1f}")
    err_console.print(table)


def check_align_extra() -> None:
    """UsageError (exit 2, before anything loads) when the 'align' extra is missing."""
    from ..align.detect import MissingExtra, check_installed

    try:
        check_installed()
    except MissingExtra as exc:
        raise UsageError(str(exc)) from None


def align_into(photos: Path, crops: Path, *, recursive: bool, overwrite: bool, quiet: bool) -> int:
    """`pulse upsample --align`'s first half: align `photos` into `crops` with the defaults of `pulse align`,
    printing as it does; returns how many photos failed."""
    from ..align.run import align_photos

    reporter = _TerminalReporter(quiet=quiet)
    try:
        with sigterm_as_interrupt():
            summary = align_photos(photos, crops, recursive=recursive, overwrite=overwrite, reporter=reporter)
    except OSError as exc:
        from ..errors import describe_os_error

        raise fail(f"cannot write {describe_os_error(exc)}; finished crops are kept, rerun to resume",
                   FAILED) from None
    except KeyboardInterrupt as exc:
        raise stopped(exc, "finished crops are kept; rerun the same command to resume") from None
    finally:
        reporter.close()
    if not quiet:
        err_console.print(f"aligned {summary.photos} photo(s): {summary.faces} new face crop(s) in "
                          f"{escape(printable(str(crops)))}")
    return summary.counts.get("failed", 0)
