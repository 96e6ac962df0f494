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


# Control characters in a file name (a newline, a carriage return, an escape) would split or rewrite a line;
# bidirectional controls (U+202E turns "gpj.exe" around) and line separators would reorder or break it.
_CONTROLS = ({c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}
             | {c: f"\\u{c:04x}" for c in [0x061C, 0x200E, 0x200F, *range(0x2028, 0x202F), *range(0x2066, 0x206A)]}
             | {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"})


def printable(text: str) -> str:
    """Text safe to print on one line, as it is: a file name that is not valid UTF-8 shows its odd bytes as
    `\\udcXX`, control characters (a newline in a name) as escapes such as `\\n`, bidirectional controls and
    line separators as `\\u202e`. For every text pulse did not write itself (names, checkpoint metadata)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").translate(_CONTROLS)
