"""The `pulse` Typer app: its commands, each in a module of its own.

torch and the model code are imported inside the commands so that `--help` answers at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ..version import __version__
from .align import align
from .console import stops_cleanly
from .demo import demo_generator
from .options import Command, Group
from .render import render
from .report import HELP as REPORT_HELP
from .report import report
from .upsample import HELP as UPSAMPLE_HELP
from .upsample import upsample
from .weights import weights_app

app = typer.Typer(
    name="pulse",
    help="Batch PULSE face depixelizer: invents a high-resolution face that downscales to each small input.\n\n"
         "The result is a plausible face invented by a face generator (such as a StyleGAN trained on FFHQ), "
         "never a recovery of the real person.\n\n"
         "Documentation: README.md and docs/ in the repository; 'pulse COMMAND --help' for each command.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    cls=Group,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pulse {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, metavar="",
                                          help="Print the version and exit.")] = False,
) -> None:
    """Batch PULSE face depixelizer."""


app.command("upsample", help=UPSAMPLE_HELP, no_args_is_help=True, cls=Command)(stops_cleanly(upsample))
app.command("render", no_args_is_help=True, cls=Command)(render)
app.command("report", help=REPORT_HELP, no_args_is_help=True, cls=Command)(report)
app.command("align", no_args_is_help=True, cls=Command)(align)
app.command("demo-generator", cls=Command)(demo_generator)
app.add_typer(weights_app, name="weights")
