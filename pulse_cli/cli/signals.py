"""How `pulse` stops when it is told to, or when no one reads it any more.

SIGTERM raises `Terminated` and Ctrl-C Python's KeyboardInterrupt, from the process's first line on
(`run_command` installs this before it imports anything else); a write to a closed stdout or stderr pipe
(`pulse ... | head`) raises `PipeClosed`. All three are KeyboardInterrupts, so every command unwinds as on
Ctrl-C: claims let go, temporary files removed, finished outputs kept. Exit codes: 130, 143, and 141
(128 + SIGPIPE, with nothing printed: a well-behaved Unix tool dies quietly of SIGPIPE). Nothing here imports
more than the standard library.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Callable

INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
PIPE_CLOSED = 141  # stdout or stderr closed under us (128 + SIGPIPE)
TERMINATED = 143  # SIGTERM (128 + SIGTERM)
KEPT = "finished outputs are kept; rerun the same command to resume"


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (finished outputs kept) but ending with exit code 143."""


class PipeClosed(KeyboardInterrupt):
    """stdout or stderr is a pipe whose reader has gone: stop as on Ctrl-C, quietly, with exit code 141."""


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def stop_code(exc: KeyboardInterrupt) -> int:
    if isinstance(exc, PipeClosed):
        return PIPE_CLOSED
    return TERMINATED if isinstance(exc, Terminated) else INTERRUPTED


def stop_line(exc: KeyboardInterrupt, kept: str = KEPT) -> str:
    """`terminated: <kept>` or `interrupted: <kept>`."""
    return f"{'terminated' if isinstance(exc, Terminated) else 'interrupted'}: {kept}"


class _Guarded:
    """A text stream whose writes raise PipeClosed, not an OSError, once its pipe is closed: so no code that
    handles OSError (a file it writes) takes a closed terminal pipe for a failed input."""

    def __init__(self, stream: object):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ESHUTDOWN):
                raise PipeClosed() from None
            raise

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ESHUTDOWN):
                raise PipeClosed() from None
            raise

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def _silence() -> None:
    """Point stdout and stderr at /dev/null, so that the interpreter's last flush cannot complain either."""
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        try:
            os.dup2(null, fd)
        except OSError:
            pass
    os.close(null)


def _interrupt_in(exc: BaseException) -> KeyboardInterrupt | None:
    """The interrupt (or closed pipe) that an exit was made from, if any: Typer turns a KeyboardInterrupt that
    reaches it into a silent exit 130, and a closed pipe into exit 1."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return seen
        if isinstance(seen, BrokenPipeError):
            return PipeClosed()
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return None


def _stop(exc: KeyboardInterrupt) -> None:
    """End the process for `exc`: its line (none for a closed pipe) and its exit code."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second signal must not interrupt the last line
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    code = stop_code(exc)
    if code != PIPE_CLOSED:
        try:
            print(stop_line(exc), file=sys.stderr, flush=True)
        except (PipeClosed, OSError):
            code = PIPE_CLOSED
    if code == PIPE_CLOSED:
        _silence()
    sys.exit(code)


def run_command(load: Callable[[], Callable[[], object]]) -> None:
    """Run the command `load()` returns (the Typer app), with signals handled before `load` imports anything,
    so that a SIGTERM or Ctrl-C at any moment (loading the modules, parsing the arguments) ends with its line
    and exit code."""
    try:
        _run(load)
    except KeyboardInterrupt as exc:  # one that came while the end of the command was being handled
        _stop(exc)


def _run(load: Callable[[], Callable[[], object]]) -> None:
    try:
        signal.signal(signal.SIGTERM, raise_terminated)
        sys.stdout, sys.stderr = _Guarded(sys.stdout), _Guarded(sys.stderr)
        load()()
    except KeyboardInterrupt as exc:
        _stop(exc)
    except SystemExit as exc:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command has ended: too late to stop it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        interrupt = _interrupt_in(exc)
        if interrupt is not None:
            _stop(interrupt)
        if exc.code == PIPE_CLOSED:  # a command that stopped for it itself
            _silence()
        if exc.code not in (None, 0):
            raise
        try:  # a clean exit: its output must reach the pipe, or the exit says it did not
            sys.stdout.flush()
        except KeyboardInterrupt as late:
            _stop(late)
        raise
