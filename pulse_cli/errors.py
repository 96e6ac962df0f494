"""Text for one-line messages: exceptions as one line, file names that may not be valid UTF-8."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """An exception as one line: the first line of its message, or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def describe_os_error(exc: OSError) -> str:
    """A failed read or write as one line that names the file: `cannot write OUT/a.png: No space left`."""
    reason = exc.strerror or first_line(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


# Control characters in a file name (a newline, a carriage return, an escape) would split or rewrite a line.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]} | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def printable(text: str) -> str:
    """Text safe to print on one line: a file name that is not valid UTF-8 shows its odd bytes as `\\udcXX`,
    control characters (a newline in a name) as escapes such as `\\n`."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").translate(_CONTROLS)
