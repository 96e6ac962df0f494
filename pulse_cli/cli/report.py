"""`pulse report OUT`: write OUT/report.html, one page showing every input of a run (see run/report.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import FAILED, DamagedLines, err_console, fail, printable
from .options import QuietFlag

HELP = """Write [bold]OUT/report.html[/]: every input of OUT beside its results, their loss curves and the
run's numbers, on one page that needs no network (open it from disk). Filter by status, sort by L2 or name.

The crops are shown when their folder is known: --inputs IN, or OUT/crops after an --align run.

[bold]Examples[/]

  pulse report out/ --inputs crops/ --open
"""


def inputs_folder(in_path: Path) -> Path:
    """The folder records' input names are relative to: IN itself, or the folder of a single input image."""
    return in_path if in_path.is_dir() else in_path.parent


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 1e6 else f"{max(1, round(count / 1e3))} kB"


def write_report_or_fail(out_dir: Path, inputs: Path | None, *, quiet: bool,
                         on_damaged: DamagedLines | None = None) -> Path:
    """Write the report; a one-line error if OUT holds no results or they cannot be read (exit 2), or the
    page cannot be written (exit 1). A damaged line of OUT gets one warning (`on_damaged`)."""
    from ..run.records import not_an_output_folder

    if (reason := not_an_output_folder(out_dir)) is not None:  # before the report code, which imports torch
        raise fail(reason)
    from ..errors import describe_os_error
    from ..run.report import ReportError, write_report

    try:
        summary = write_report(out_dir, inputs, on_damaged or DamagedLines(quiet=quiet))
    except ReportError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write the report: {describe_os_error(exc)}", FAILED) from None
    if not quiet:
        if summary.written:
            err_console.print(f"wrote {printable(str(summary.path))} ({summary.rows} input(s), "
                              f"{_size(summary.bytes)}, {summary.seconds:.1f} s)", markup=False)
        else:
            err_console.print(f"{printable(str(summary.path))} is left as it is: another process wrote it from "
                              "more records meanwhile", markup=False)
    return summary.path


def report(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT", show_default=False,
                                            help="Output folder of 'pulse upsample' (holding results.jsonl).")],
    inputs: Annotated[Path | None, typer.Option(
        "--inputs", metavar="IN", show_default=False,
        help="The IN the run read, to show each input's crop. Default: OUT/crops if there (--align).")] = None,
    open_page: Annotated[bool, typer.Option("--open", metavar="", help="Open the page in a web browser.")] = False,
    quiet: QuietFlag = False,
) -> None:
    if not out_dir.is_dir():
        raise fail(f"output folder {out_dir} does not exist")
    if inputs is not None and not inputs.exists():
        raise fail(f"input {inputs} does not exist")
    path = write_report_or_fail(out_dir, inputs_folder(inputs) if inputs is not None else None, quiet=quiet)
    if open_page:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            err_console.print(f"could not start a web browser; open {printable(str(path))}", markup=False)
