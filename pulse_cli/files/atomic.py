"""Writes that never leave a half-written file, and a JSON-lines file that never holds a torn line.

Whole files: written to a temporary file in the same folder, fsynced, then renamed over the target. The
temporary name carries the writer's host and pid (`.<name>.<host>.<pid>.<random>.tmp`), so that a later
run can tell a dead writer's leftovers (removed by `remove_stale_temp_files`) from a live one's.

JSON lines: each line is appended whole under an exclusive lock; a torn last line left by a crash or a
full disk is cut off before the next append.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import secrets
import socket
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"
_HOST = socket.gethostname().replace(".", "_") or "host"


def _file_mode() -> int:
    """What a plainly created file gets (0666 less the umask); mkstemp alone would leave 0600."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def temp_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written: a write may be short (signals, nearly full disks)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all. An OSError names `path` itself, never the temporary file."""
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(tmp, _file_mode())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temp_files(root: Path) -> int:
    """Delete temporary files under `root` left by writers on this host that are no longer running.

    Another host's temporary files (a shared filesystem) and a live process's are left alone.
    Returns how many were removed.
    """
    removed = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
                continue
            parts = name[: -len(TEMP_SUFFIX)].rsplit(".", 3)
            if len(parts) != 4 or parts[1] != _HOST or not parts[2].isdigit():
                continue
            pid = int(parts[2])
            if pid == os.getpid() or _pid_alive(pid):
                continue
            try:
                os.unlink(os.path.join(dirpath, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def sha256_file(path: Path | str, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, streamed (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def _json_safe(value: Any) -> Any:
    """Non-finite floats become null: JSON has no NaN or infinity, and a reader must never fail."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def to_json_line(record: dict[str, Any]) -> str:
    """One JSON object on one line, ASCII only: a file name that is not valid UTF-8 (held as surrogate
    escapes) is written as `\\udcXX` escapes, which read back to the same name."""
    return json.dumps(_json_safe(record), ensure_ascii=True, allow_nan=False, separators=(",", ":")) + "\n"


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    atomic_write_bytes(path, "".join(to_json_line(r) for r in records).encode("ascii"))


@contextmanager
def _locked(fd: int) -> Iterator[None]:
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _cut_torn_tail(fd: int) -> None:
    """If the file does not end with a newline, cut it back to its last whole line."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end, block = size, 1 << 16
    while end > 0:
        start = max(0, end - block)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            os.ftruncate(fd, start + newline + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def open_regular(path: Path, flags: int, mode: int = 0o666) -> int:
    """os.open that neither follows a symbolic link nor waits on a FIFO, and refuses anything but a plain
    file (a folder, a FIFO, a device): bookkeeping files are never written or read through such things."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symbolic link, not a plain file", str(path)) from None
        if exc.errno == errno.EISDIR:
            raise OSError(errno.EISDIR, "is a folder, not a plain file", str(path)) from None
        if exc.errno == errno.ENXIO:  # a FIFO or socket nobody reads
            raise OSError(errno.EINVAL, "is a special file, not a plain file", str(path)) from None
        raise
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            raise OSError(errno.EINVAL, f"is {describe_file_kind(kind)}, not a plain file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def describe_file_kind(mode: int) -> str:
    """What a file is, from its `st_mode`, for messages: `a folder`, `a FIFO`, ..."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a plain file" if stat.S_ISREG(mode) else "a special file"


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one whole line. Under an exclusive lock (several runs may share a file): a torn last line
    is cut off first, the line is written in full or, if the write fails, cut off again."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_json_line(record).encode("ascii")
    fd = open_regular(path, os.O_RDWR | os.O_CREAT, _file_mode())
    try:
        with _locked(fd):
            _cut_torn_tail(fd)
            size = os.fstat(fd).st_size
            try:
                os.lseek(fd, size, os.SEEK_SET)
                _write_all(fd, data)
                os.fsync(fd)
            except BaseException:
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    pass  # the next append cuts the torn tail
                raise
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every whole, valid JSON object line of a file (a torn or damaged line is passed over)."""
    return [value for _, value in _read_lines(Path(path), 0, whole_only=False)[2] if value is not None]


def _read_lines(path: Path, offset: int, *, whole_only: bool = True
                ) -> tuple[int, int, list[tuple[int, dict[str, Any] | None]]]:
    """From byte `offset` on, the whole lines of a plain file (see `open_regular`; with `whole_only=False`
    a last line without its newline too): (bytes they take, how many lines, [(index of each line that is not
    blank, its JSON object or None when it is not one)]); nothing when the file does not exist."""
    try:
        fd = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0, 0, []
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1 if whole_only else len(data)
    lines = data[:end].split(b"\n")[:-1] if whole_only else data.split(b"\n")
    entries = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError:
            value = None
        entries.append((number, value if isinstance(value, dict) else None))
    return end, len(lines), entries


class JsonlTail:
    """Reads a JSON-lines file as it grows: each `new_lines()` returns the whole lines appended since the last
    call (a torn last line waits until it is whole or cut), numbered from 1 as editors number them."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.offset = 0
        self.lines = 0  # whole lines read so far

    def new_lines(self) -> list[tuple[int, dict[str, Any] | None]]:
        """(line number, the JSON object or None for a line that is not one) per new whole line."""
        used, count, entries = _read_lines(self.path, self.offset)
        self.offset += used
        numbered = [(self.lines + 1 + k, value) for k, value in entries]
        self.lines += count
        return numbered

    def new_records(self) -> list[dict[str, Any]]:
        """The new whole lines that are JSON objects (a torn or damaged line is passed over)."""
        return [value for _, value in self.new_lines() if value is not None]
