"""Exceptions as one-line messages, for the one-line errors every command prints."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """An exception as one line: the first line of its message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_os_error(exc: OSError) -> str:
    """A failed read or write as one line that names the file: `cannot write OUT/a.png: No space left`."""
    reason = exc.strerror or first_line(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason
