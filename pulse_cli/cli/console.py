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

from ..errors import printable
from .signals import (  # noqa: F401  (the exit codes and exceptions re-exported for the commands)
    INTERRUPTED,
    KEPT,
    PIPE_CLOSED,
    TERMINATED,
    PipeClosed,
    Terminated,
    stop_code,
    stop_line,
)
from .signals import raise_terminated as _raise_terminated

USAGE_ERROR = 2
FAILED = 1

# emoji=False: a name such as `:fire:.png` is printed as it is (and rich's emoji table is not loaded)
err_console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def fail(message: str, code: int = USAGE_ERROR) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise. The message is plain text: brackets
    in it (paths, `pulse-depixelizer[align]`) are printed as they are."""
    err_console.print(f"[bold red]error:[/] {escape(printable(message))}", markup=True)
    return typer.Exit(code)


def note(message: str) -> None:
    """One line on stderr, as it is (see `printable`: a path or name in it may hold anything)."""
    err_console.print(printable(message), markup=False)


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


class DamagedLines:
    """The warning for a line of OUT's records or logs that is passed over (see `run.records.checked_lines`):
    one per line, however many readers of OUT one command has (planning, the run, --report)."""

    def __init__(self, *, quiet: bool):
        self.quiet = quiet
        self.seen: set[tuple[str, int]] = set()

    def __call__(self, path: Any, line: int, reason: str) -> None:
        if (str(path), line) in self.seen:
            return
        self.seen.add((str(path), line))
        if not self.quiet:
            err_console.print(f"[yellow]warning:[/] {escape(printable(str(path)))} line {line} is not a record "
                              f"pulse can use ({escape(printable(reason))}); it is ignored", markup=True)


def stopped(exc: KeyboardInterrupt, kept: str = KEPT) -> typer.Exit:
    """The Exit of a command stopped by Ctrl-C, SIGTERM or a closed output pipe (see `signals`), after its
    one line on stderr (none for a closed pipe: no one reads it). Raise it `from None`."""
    if not isinstance(exc, PipeClosed):
        err_console.print(stop_line(exc, kept), markup=False)
    return typer.Exit(stop_code(exc))


def stops_cleanly(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command that, stopped by SIGTERM or Ctrl-C at any moment (importing torch, loading the model,
    printing the summary), ends with its one line and exit code 143 or 130, never a traceback or a silent
    death, also when called in-process (tests). Typer reads the wrapped function's options."""
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with sigterm_as_interrupt():
            try:
                return command(*args, **kwargs)
            except KeyboardInterrupt as exc:
                raise stopped(exc) from None

    return wrapper


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` in the main thread, so a run stops as it does on Ctrl-C.
    (`pulse` itself does this from its first line on: see `signals.run_command`.)"""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (e.g. a test runner's worker): leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
