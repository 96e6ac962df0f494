"""The terminal side shared by every command: one stderr console, one-line errors, exit codes."""

from __future__ import annotations

import typer
from rich.console import Console

USAGE_ERROR = 2
FAILED = 1
INTERRUPTED = 130

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = USAGE_ERROR) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", markup=True)
    return typer.Exit(code)


def note(message: str) -> None:
    err_console.print(message, markup=False)
