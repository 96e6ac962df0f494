"""Exceptions as one-line messages, for the one-line errors every command prints."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """An exception as one line: the first line of its message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
