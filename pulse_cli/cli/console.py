"""The terminal side shared by every command: one stderr console, one-line errors, exit codes."""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import printable  # noqa: F401  (re-exported for the commands)

USAGE_ERROR = 2
FAILED = 1
INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
TERMINATED = 143  # SIGTERM (128 + SIGTERM)

# emoji=False: a name such as `:fire:.png` is printed as it is (and rich's emoji table is not loaded)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def fail(message: str, code: int = USAGE_ERROR) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise. The message is plain text: brackets
    in it (paths, `pulse-depixelizer[align]`) are printed as they are."""
    err_console.print(f"[bold red]error:[/] {escape(printable(message))}", markup=True)
    return typer.Exit(code)


def note(message: str) -> None:
    err_console.print(message, markup=False)


def print_wrapped(console: Console, line: str, *, indent: int = 0, markup: bool = False) -> None:
    """A line of prose: on a terminal, wrapped between words at its width (rich breaks a word only when it
    is wider than a line) and continued `indent` columns in; elsewhere whole, so that grep finds it.
    `markup`: the line holds rich markup."""
    from rich.text import Text

    text = Text.from_markup(line) if markup else Text(line)
    if not console.is_terminal:
        console.print(text, soft_wrap=True)
        return
    width = max(40, console.width)
    lines = list(text.wrap(console, width))
    for part in lines:
        part.rstrip()  # the space the line was broken at
    if len(lines) > 1 and indent:  # the rest again, `indent` columns narrower
        rest = Text(" ").join(lines[1:]).wrap(console, width - indent)
        lines = [lines[0], *(Text(" " * indent) + part for part in rest)]
    for part in lines:
        console.print(part, soft_wrap=True)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (finished outputs kept) but ending with exit code 143."""


def stops_cleanly(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command that, stopped by SIGTERM or Ctrl-C at any moment (importing torch, loading the model,
    printing the summary), ends with its one line and exit code 143 or 130, never a traceback or a silent
    death. Typer reads the wrapped function's options."""
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with sigterm_as_interrupt():
            try:
                return command(*args, **kwargs)
            except KeyboardInterrupt as exc:
                terminated = isinstance(exc, Terminated)
                err_console.print(f"{'terminated' if terminated else 'interrupted'}: finished outputs are kept; "
                                  "rerun the same command to resume", markup=False)
                raise typer.Exit(TERMINATED if terminated else INTERRUPTED) from None

    return wrapper


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` in the main thread, so a run stops as it does on Ctrl-C."""
    def handler(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a test runner's worker): leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
