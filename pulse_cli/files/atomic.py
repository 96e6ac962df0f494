"""Writes that never leave a half-written file, and a JSON-lines file that never holds a torn line.

Whole files: written to a temporary file in the same folder, fsynced, then renamed over the target. The
temporary name carries the writer's host and pid (`.<name>.<host>.<pid>.<random>.tmp`), so that a later
run can tell a dead writer's leftovers (removed by `remove_stale_temp_files`) from a live one's.

JSON lines: each line is appended whole under an exclusive lock; a torn last line left by a crash or a
full disk is cut off before the next append.

Below an output folder registered with `confine`, no symbolic link is ever followed, by writes or reads:
every folder from OUT down is opened with O_NOFOLLOW, one at a time, and the file is created or opened in
the folder so opened; a link put there at any moment (even between two writes) is refused, not followed.
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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

TEMP_SUFFIX = ".tmp"
_HOST = socket.gethostname().replace(".", "_") or "host"


def _file_mode() -> int:
    """What a plainly created file gets (0666 less the umask); mkstemp alone would leave 0600."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def temp_path_for(path: Path) -> Path:
    return path.with_name(f".{path.name}.{writer_tag()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written: a write may be short (signals, nearly full disks)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


# OUT folders of this process (absolute paths): see `confine`.
_CONFINED: set[str] = set()
LINK_INSIDE_OUT = "is a symbolic link: pulse never follows a link inside its output folder (remove it)"


def confine(root: Path) -> None:
    """From now on, every file this process writes or reads below `root` (an output folder) is reached
    without following a symbolic link below `root` (`root` itself may be one): nothing is read or written
    through a link that leads out of it. Such a link is an OSError (ELOOP) naming it."""
    _CONFINED.add(os.path.abspath(root))


def _confining_root(path: Path | str) -> str | None:
    """The confined folder `path` lies strictly inside (the innermost), if any."""
    full = os.path.abspath(path)
    roots = [root for root in _CONFINED if full.startswith(root.rstrip(os.sep) + os.sep)]
    return max(roots, key=len) if roots else None


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_folder(folder: Path, *, create: bool = False) -> int:
    """A file descriptor of `folder` (made, with its missing parents, when `create`). Below a confined root
    each folder is opened on its own with O_NOFOLLOW, so a symbolic link there is refused (LINK_INSIDE_OUT),
    never followed, whenever it appears."""
    root = _confining_root(folder)
    if root is None:
        if create:
            Path(folder).mkdir(parents=True, exist_ok=True)
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    parts = Path(os.path.relpath(os.path.abspath(folder), root)).parts
    try:
        for k, part in enumerate(parts):
            here = str(Path(folder).parents[len(parts) - 2 - k]) if k < len(parts) - 1 else str(folder)
            if create:
                try:
                    os.mkdir(part, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, fd):
                    raise OSError(errno.ELOOP, LINK_INSIDE_OUT, here) from None
                raise OSError(exc.errno, exc.strerror, here) from None
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def atomic_write_bytes(path: Path, data: bytes, *, commit: Callable[[Callable[[], None]], bool] | None = None
                       ) -> bool:
    """Write `path` whole or not at all. An OSError names `path` itself (or a link on the way to it), never
    the temporary file. `commit`, when given, is called with the function that renames the written file into
    place, once the data is on disk: it decides (under whatever lock it takes) whether to call it; if it
    does not, the temporary file is removed. Returns whether `path` was written."""
    path = Path(path)
    tmp = temp_path_for(path).name
    try:
        folder = open_folder(path.parent, create=True)
        try:
            try:  # inside: a signal the moment the open returns must not leave the file behind
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=folder)
                try:
                    _write_all(fd, data)
                    os.fchmod(fd, _file_mode())
                    os.fsync(fd)
                finally:
                    os.close(fd)

                def replace() -> None:
                    os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)

                if commit is None:
                    replace()
                    return True
                if commit(replace):
                    return True
                os.unlink(tmp, dir_fd=folder)
                return False
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=folder)
                except OSError:
                    pass
                raise
        finally:
            os.close(folder)
    except OSError as exc:
        named = exc.filename if exc.errno == errno.ELOOP and exc.filename else str(path)
        raise OSError(exc.errno, exc.strerror or str(exc), named) from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_tag() -> str:
    """`<host>.<pid>`: what a temporary name carries so that a later run can tell whether its writer lives."""
    return f"{_HOST}.{os.getpid()}"


def left_by_dead_writer(name: str, suffix: str) -> bool:
    """Whether `name` (`.<name>.<host>.<pid>.<random><suffix>`, see `writer_tag`) was left by a process of
    this host that is no longer running. Another host's, and a live process's, are not."""
    if not (name.startswith(".") and name.endswith(suffix)):
        return False
    parts = name[: -len(suffix)].rsplit(".", 3)
    if len(parts) != 4 or parts[1] != _HOST or not parts[2].isdigit():
        return False
    pid = int(parts[2])
    return pid != os.getpid() and not _pid_alive(pid)


def remove_stale_temp_files(root: Path) -> int:
    """Delete temporary files under `root` left by writers on this host that are no longer running.

    Another host's temporary files (a shared filesystem) and a live process's are left alone.
    Returns how many were removed.
    """
    removed = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if not left_by_dead_writer(name, TEMP_SUFFIX):
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
    file (a folder, a FIFO, a device): bookkeeping files are never written or read through such things.
    Below a confined root (see `confine`) no folder on the way is followed if it is a link either."""
    path = Path(path)
    folder = open_folder(path.parent, create=bool(flags & os.O_CREAT))
    try:
        fd = os.open(path.name, flags | os.O_NOFOLLOW | os.O_NONBLOCK, mode, dir_fd=folder)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "is a symbolic link, not a plain file", str(path)) from None
        if exc.errno == errno.EISDIR:
            raise OSError(errno.EISDIR, "is a folder, not a plain file", str(path)) from None
        if exc.errno == errno.ENXIO:  # a FIFO or socket nobody reads
            raise OSError(errno.EINVAL, "is a special file, not a plain file", str(path)) from None
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    finally:
        os.close(folder)
    try:
        kind = os.fstat(fd).st_mode
        if not stat.S_ISREG(kind):
            raise OSError(errno.EINVAL, f"is {describe_file_kind(kind)}, not a plain file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_for_reading(path: Path) -> BinaryIO:
    """`path` opened to read: below a confined root as `open_regular` opens it (no link followed, a plain
    file only); elsewhere as open() does (an input folder's links are its owner's business)."""
    if _confining_root(path) is None:
        return open(path, "rb")
    return os.fdopen(open_regular(path, os.O_RDONLY), "rb")


def is_plain_file(path: Path) -> bool:
    """Whether `path` is a file: below a confined root, a plain file reached without following a link."""
    if _confining_root(path) is None:
        return Path(path).is_file()
    try:
        folder = open_folder(Path(path).parent)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.stat(Path(path).name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False
    finally:
        os.close(folder)


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
    data = to_json_line(record).encode("ascii")
    with locked(path) as fd:
        try:
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
        except OSError as exc:  # a full disk's write names no file: this one
            raise OSError(exc.errno, exc.strerror or str(exc), exc.filename or str(path)) from None


@contextmanager
def locked(path: Path, *, write: bool = True) -> Iterator[int]:
    """`path` (a plain file, see `open_regular`; created if missing when `write`) opened and held under an
    exclusive lock: what appends to a JSON-lines file hold, and what holds off appends for a moment (a
    reader that only needs that opens it read-only: `write=False`)."""
    flags = os.O_RDWR | os.O_CREAT if write else os.O_RDONLY
    fd = open_regular(Path(path), flags, _file_mode())
    try:
        with _locked(fd):
            yield fd
    finally:
        os.close(fd)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every whole, valid JSON object line of a file (a torn or damaged line is passed over)."""
    return [value for _, value in _read_lines(Path(path), 0, whole_only=False)[2] if value is not None]


def _read_lines(path: Path, offset: int, *, whole_only: bool = True, digest: Any = None
                ) -> tuple[int, int, list[tuple[int, dict[str, Any] | None]]]:
    """From byte `offset` on, the whole lines of a plain file (see `open_regular`; with `whole_only=False`
    a last line without its newline too): (bytes they take, how many lines, [(index of each line that is not
    blank, its JSON object or None when it is not one)]); nothing when the file does not exist. `digest` (a
    hashlib object) is fed the bytes taken."""
    try:
        fd = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0, 0, []
    with os.fdopen(fd, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1 if whole_only else len(data)
    if digest is not None:
        digest.update(data[:end])
    lines = data[:end].split(b"\n")[:-1] if whole_only else data.split(b"\n")
    entries = []
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        value = parse_json_line(line)
        entries.append((number, value if isinstance(value, dict) else None))
    return end, len(lines), entries


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_json_line(line: bytes) -> Any:
    """One line as strict JSON (what jq reads: no NaN or Infinity), or None when it is not: a damaged line,
    however damaged (nested too deep for the parser included), is one bad line, never an error."""
    try:
        return json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None


class JsonlTail:
    """Reads a JSON-lines file as it grows: each `new_lines()` returns the whole lines appended since the last
    call (a torn last line waits until it is whole or cut), numbered from 1 as editors number them."""

    def __init__(self, path: Path, *, digest: bool = False):
        self.path = Path(path)
        self.offset = 0  # bytes of whole lines read so far
        self.lines = 0  # whole lines read so far
        self._digest = hashlib.sha256() if digest else None

    def sha256(self) -> str:
        """The sha256 of the `offset` bytes read so far (with `digest=True`)."""
        assert self._digest is not None, "made without digest=True"
        return self._digest.hexdigest()

    def new_lines(self) -> list[tuple[int, dict[str, Any] | None]]:
        """(line number, the JSON object or None for a line that is not one) per new whole line."""
        used, count, entries = _read_lines(self.path, self.offset, digest=self._digest)
        self.offset += used
        numbered = [(self.lines + 1 + k, value) for k, value in entries]
        self.lines += count
        return numbered

    def new_records(self) -> list[dict[str, Any]]:
        """The new whole lines that are JSON objects (a torn or damaged line is passed over)."""
        return [value for _, value in self.new_lines() if value is not None]
