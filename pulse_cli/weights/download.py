"""Resumable, checksummed downloads with the standard library (urllib) and a tqdm bar on stderr.

Layout beside `dest`:
    <name>.part    bytes received so far; a later call resumes it with a `Range` request
    <name>         only ever appears complete: `.part` is renamed onto it with `os.replace`
    <name>.sha256  "<hex>  <name>\\n", what arrived (or the pin it matched); later calls use it as the pin
"""

from __future__ import annotations

import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from pulse_cli import __version__
from pulse_cli.files.atomic import atomic_write_bytes, sha256_file

USER_AGENT = f"pulse-cli/{__version__} (+urllib)"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE_RE = re.compile(r"^bytes\s+\*/(\d+)$")
# 4xx codes that describe a passing condition rather than a wrong URL.
_TRANSIENT_4XX = frozenset({408, 425, 429})
_MAX_BACKOFF_S = 60.0


class DownloadError(Exception):
    """A download that cannot succeed (now). `str()` is a single line naming the URL."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.url = url
        self.status = status


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sha256: str
    size: int
    resumed: bool  # True when bytes from an earlier, interrupted transfer were kept


VerifyStatus = Literal["ok", "mismatch", "unrecorded", "bad-record", "missing"]


@dataclass(frozen=True)
class VerifyResult:
    path: Path
    ok: bool | None  # None: nothing recorded to check against
    expected: str | None
    actual: str | None  # None when the file is missing
    status: VerifyStatus


# --------------------------------------------------------------------------- checksums and records


def record_path(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def normalize_sha256(value: str) -> str:
    hexdigest = value.strip().lower()
    if not _SHA256_RE.match(hexdigest):
        raise ValueError(f"not a SHA-256 hex digest: {value!r}")
    return hexdigest


def read_record(path: Path | str) -> str | None:
    """Digest recorded beside `path` (sha256sum format), None if there is no record; ValueError if garbled."""
    record = record_path(path)
    try:
        text = record.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    fields = text.split()
    if not fields:
        raise ValueError(f"empty checksum record {record}")
    try:
        return normalize_sha256(fields[0])
    except ValueError:
        raise ValueError(f"garbled checksum record {record}") from None


def write_record(path: Path | str, hexdigest: str) -> Path:
    """Write `<hex>  <name>\\n` beside `path` atomically (temp file in the same folder + os.replace)."""
    path = Path(path)
    record = record_path(path)
    line = f"{normalize_sha256(hexdigest)}  {path.name}\n"
    atomic_write_bytes(record, line.encode("utf-8"))
    return record


def verify_file(path: Path | str) -> VerifyResult:
    """Check `path` against the `.sha256` record beside it."""
    path = Path(path)
    try:
        expected = read_record(path)
        bad_record = False
    except ValueError:
        expected, bad_record = None, True
    if not path.is_file():
        return VerifyResult(path, False, expected, None, "missing")
    actual = sha256_file(path)
    if bad_record:
        return VerifyResult(path, False, None, actual, "bad-record")
    if expected is None:
        return VerifyResult(path, None, None, actual, "unrecorded")
    ok = actual == expected
    return VerifyResult(path, ok, expected, actual, "ok" if ok else "mismatch")


# --------------------------------------------------------------------------- download


class _Retryable(Exception):
    """A failure worth another attempt (network hiccup, 5xx, short read)."""


class _Fatal(Exception):
    """A failure no retry will fix (404, HTML instead of a file...)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def download(
    url: str,
    dest: Path | str,
    *,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 30,
    progress: bool = True,
    chunk_size: int = 1 << 20,
    backoff: float = 1.0,
) -> DownloadResult:
    """Download `url` to `dest`, resuming `dest.part` if present, and record/check its SHA-256.

    `sha256` pins the expected digest; when None, a `.sha256` record already beside `dest` is the pin.
    If `dest` already matches the pin, nothing is fetched. Connection errors, timeouts, 5xx and short
    reads are retried `retries` times (waiting `backoff * 2**n` s); other 4xx fail at once. A checksum
    mismatch deletes the partial file so nothing unverified is left behind.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        pin = normalize_sha256(sha256) if sha256 is not None else read_record(dest)
    except ValueError as e:
        raise DownloadError(f"cannot download {url}: {e}", url=url) from None

    if pin is not None and dest.is_file() and sha256_file(dest, chunk_size) == pin:
        return DownloadResult(dest, pin, dest.stat().st_size, resumed=False)

    dest.parent.mkdir(parents=True, exist_ok=True)
    part_was_there = part.exists()

    def drop_empty_part() -> None:
        # Keep partial data for a later resume, but never leave an empty file this call made.
        if not part_was_there and part.exists() and part.stat().st_size == 0:
            part.unlink()

    resumed = False
    attempt = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        try:
            resumed = _fetch_once(url, part, offset, dest.name, timeout, chunk_size, progress, resumed)
            break
        except _Fatal as e:
            drop_empty_part()
            raise DownloadError(f"cannot download {url}: {e}", url=url, status=e.status) from None
        except _Retryable as e:
            attempt += 1
            if attempt > retries:
                drop_empty_part()
                raise DownloadError(
                    f"cannot download {url}: {e} (gave up after {attempt} attempts)", url=url
                ) from None
            if backoff > 0:
                time.sleep(min(backoff * 2 ** (attempt - 1), _MAX_BACKOFF_S))
        except OSError as e:  # local disk trouble (full, permissions): retrying will not help
            raise DownloadError(f"cannot write {part} while downloading {url}: {e}", url=url) from None

    actual = sha256_file(part, chunk_size)
    if pin is not None and actual != pin:
        part.unlink(missing_ok=True)
        raise DownloadError(f"checksum mismatch for {url}: expected {pin}, got {actual}", url=url)
    size = part.stat().st_size
    os.replace(part, dest)
    write_record(dest, actual)
    return DownloadResult(dest, actual, size, resumed)


def _fetch_once(
    url: str,
    part: Path,
    offset: int,
    label: str,
    timeout: float,
    chunk_size: int,
    progress: bool,
    resumed: bool,
) -> bool:
    """One HTTP request into `part`, continuing at `offset`. Returns the updated `resumed` flag."""
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        with e:
            if e.code == 416 and offset:
                return _range_not_satisfiable(e, part, offset, resumed)
            reason = f"HTTP {e.code} {e.reason}".strip()
            if e.code >= 500 or e.code in _TRANSIENT_4XX:
                raise _Retryable(reason) from None
            raise _Fatal(reason, status=e.code) from None
    except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, resets, bad status lines
        raise _Retryable(_describe(e)) from None

    with response:
        status = response.status
        content_type = response.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() == "text/html":
            # Google Drive quota pages, login walls, error pages served with 200: not a checkpoint.
            raise _Fatal(f"server sent an HTML page (HTTP {status}), not the file", status=status)
        if status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink(missing_ok=True)  # cannot splice at the wrong place: start over
                raise _Retryable(f"server resumed at byte {start}, not {offset}")
            mode, resumed = "ab", resumed or offset > 0
        elif status == 200:
            # A 200 to a Range request means the server ignored it: restart from zero.
            mode, offset, resumed = "wb", 0, False
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise _Fatal(f"unexpected HTTP {status}", status=status)

        received = offset
        with (
            open(part, mode) as f,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=sys.stderr,
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while True:
                try:
                    chunk = response.read(chunk_size)
                except (OSError, http.client.HTTPException) as e:
                    raise _Retryable(_describe(e)) from None
                if not chunk:
                    break
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())

    # http.client returns b"" (no exception) when a connection with Content-Length closes early.
    if total is not None and received != total:
        raise _Retryable(f"transfer cut short at {received} of {total} bytes")
    return resumed


def _range_not_satisfiable(e: urllib.error.HTTPError, part: Path, offset: int, resumed: bool) -> bool:
    """416 for `bytes=offset-`: the partial file is either already complete or longer than the remote."""
    match = _UNSATISFIED_RANGE_RE.match((e.headers.get("Content-Range") or "").strip())
    if match and int(match.group(1)) == offset:
        return True  # every byte was already there
    part.unlink(missing_ok=True)
    raise _Retryable("partial file does not fit the remote file; restarting") from None


def _parse_content_range(value: str) -> tuple[int, int | None]:
    """`bytes START-END/TOTAL` -> (START, TOTAL or None when the server says `*`)."""
    match = _CONTENT_RANGE_RE.match(value.strip())
    if not match:
        raise _Retryable(f"bad Content-Range header {value!r}")
    start, _end, total = match.groups()
    return int(start), (None if total == "*" else int(total))


def _describe(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        reason = e.reason
        return f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
    if isinstance(e, (TimeoutError,)):
        return "timed out"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
