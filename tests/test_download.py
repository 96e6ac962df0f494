"""The downloader against a local HTTP server (127.0.0.1 only) that can cut, fail and ignore ranges."""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pulse_cli.weights import download as download_module
from pulse_cli.weights.download import (
    AllSourcesFailed,
    DownloadError,
    download,
    download_first,
    read_record,
    record_path,
    sha256_file,
    verify_file,
    write_record,
)
from pulse_cli.weights.registry import Source

DATA = random.Random(20200615).randbytes(300_000)
DATA_SHA = hashlib.sha256(DATA).hexdigest()
FAST = dict(progress=False, backoff=0.0, timeout=5.0)


@dataclass
class Served:
    """What the test server saw and what it serves; one per test."""

    body: bytes = DATA
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    hits: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ranges(self, path: str) -> list[str | None]:
        return [r for p, r in self.requests if p == path]


def _make_handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection: closing = end of transfer

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            try:
                self._route()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up on us (timeout test): expected

        def _route(self) -> None:
            path = self.path.split("?")[0]
            with served.lock:
                served.requests.append((path, self.headers.get("Range")))
                n = served.hits[path] = served.hits.get(path, 0) + 1
            body = served.body
            if path == "/file.bin":
                self._send_ranged(body)
            elif path == "/missing.bin":
                self._send_plain(404, b"not here")
            elif path == "/cut.bin":
                if n == 1:  # full Content-Length, half the body, then hang up
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    self._send_ranged(body)
            elif path == "/flaky.bin":
                if n == 1:
                    self._send_plain(500, b"oops")
                else:
                    self._send_ranged(body)
            elif path == "/broken.bin":
                self._send_plain(503, b"down")
            elif path == "/slow.bin":
                if n == 1:
                    time.sleep(2.0)  # far longer than the client's timeout
                self._send_ranged(body)
            elif path == "/page.html":
                self._send_plain(200, b"<html>quota exceeded</html>", "text/html; charset=utf-8")
            else:
                self._send_plain(404, b"no route")

        def _send_plain(self, code: int, body: bytes, ctype: str = "application/octet-stream") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _send_ranged(self, body: bytes) -> None:
            header = self.headers.get("Range")
            match = re.fullmatch(r"bytes=(\d+)-", header or "")
            if not match:
                self._send_plain(200, body)
                return
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(served))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_success_writes_file_and_record(server, tmp_path):
    base, served = server
    dest = tmp_path / "sub" / "w.pkl"  # missing parent folders are created
    result = download(f"{base}/file.bin", dest, **FAST)
    assert dest.read_bytes() == DATA
    assert result.path == dest and result.sha256 == DATA_SHA and result.size == len(DATA)
    assert result.url == f"{base}/file.bin"
    assert record_path(dest).read_text() == f"{DATA_SHA}  w.pkl\n"
    assert _leftovers(dest.parent) == ["w.pkl", "w.pkl.sha256"]
    assert served.ranges("/file.bin") == [None]


def test_matching_pin_succeeds(server, tmp_path):
    base, _ = server
    result = download(f"{base}/file.bin", tmp_path / "w.pkl", sha256=DATA_SHA.upper(), **FAST)
    assert result.sha256 == DATA_SHA


def test_progress_bar_goes_to_stderr(server, tmp_path, capsys, monkeypatch):
    base, _ = server
    bar = download_module._progress_bar
    monkeypatch.setattr(download_module, "_progress_bar", lambda **options: bar(**{**options, "delay": 0}))
    download(f"{base}/file.bin", tmp_path / "w.pkl", **{**FAST, "progress": True})
    out, err = capsys.readouterr()
    assert out == ""
    assert "w.pkl" in err


def test_404_fails_at_once_and_leaves_nothing(server, tmp_path):
    base, served = server
    url = f"{base}/missing.bin"
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "w.pkl", retries=3, **{k: v for k, v in FAST.items()})
    message = str(info.value)
    assert url in message and "404" in message and "\n" not in message
    assert info.value.status == 404
    assert served.hits["/missing.bin"] == 1  # no retries on a 4xx
    assert _leftovers(tmp_path) == []


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    base, _ = server
    url = f"{base}/file.bin"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "w.pkl", sha256=wrong, **FAST)
    assert str(info.value) == f"checksum mismatch for {url}: expected {wrong}, got {DATA_SHA}"
    assert _leftovers(tmp_path) == []


def test_cut_transfer_is_retried_from_zero(server, tmp_path):
    base, served = server
    dest = tmp_path / "w.pkl"
    result = download(f"{base}/cut.bin", dest, sha256=DATA_SHA, **FAST)
    assert served.ranges("/cut.bin") == [None, None]  # no resume: the second attempt starts over
    assert dest.read_bytes() == DATA and result.sha256 == DATA_SHA
    assert _leftovers(tmp_path) == ["w.pkl", "w.pkl.sha256"]


def test_cut_transfer_leaves_nothing_and_a_rerun_succeeds(server, tmp_path):
    base, served = server
    dest = tmp_path / "w.pkl"
    with pytest.raises(DownloadError, match="IncompleteRead|Connection broken") as info:
        download(f"{base}/cut.bin", dest, retries=0, **FAST)
    assert "\n" not in str(info.value)
    assert _leftovers(tmp_path) == []  # no partial file, no record of half a file
    result = download(f"{base}/cut.bin", dest, retries=0, **FAST)
    assert result.sha256 == DATA_SHA and dest.read_bytes() == DATA
    assert _leftovers(tmp_path) == ["w.pkl", "w.pkl.sha256"]


@pytest.mark.parametrize("stale_name", ["w.pkl.part", "w.pkl12345678.part", ".w.pkl.download-abcd1234"])
def test_stale_partial_file_of_another_file_never_reaches_the_result(server, tmp_path, stale_name):
    """Old pulse versions resumed `<name>.part` without If-Range, splicing another file's bytes in and then
    trusting the spliced digest. Now every call starts from zero in its own staging folder."""
    base, served = server
    dest = tmp_path / "w.pkl"
    stale = tmp_path / stale_name
    other = b"\xff" * 100_000  # the first bytes of some other file with the same name
    if stale_name.startswith("."):
        stale.mkdir()
        (stale / "w.pkl").write_bytes(other)
    else:
        stale.write_bytes(other)
    result = download(f"{base}/file.bin", dest, **FAST)  # no pin: what arrives is trusted, so it must be right
    assert served.ranges("/file.bin") == [None]
    assert dest.read_bytes() == DATA and result.sha256 == DATA_SHA == read_record(dest)
    assert verify_file(dest).status == "ok"
    assert sorted(_leftovers(tmp_path)) == sorted(["w.pkl", "w.pkl.sha256", stale_name])  # not ours: untouched


def test_5xx_then_ok_is_retried(server, tmp_path):
    base, served = server
    result = download(f"{base}/flaky.bin", tmp_path / "w.pkl", **FAST)
    assert served.hits["/flaky.bin"] == 2
    assert result.sha256 == DATA_SHA


def test_persistent_5xx_gives_up_after_retries(server, tmp_path):
    base, served = server
    url = f"{base}/broken.bin"
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "w.pkl", **{**FAST, "retries": 2})
    assert served.hits["/broken.bin"] == 3
    assert url in str(info.value) and "503" in str(info.value) and "3 attempts" in str(info.value)
    assert _leftovers(tmp_path) == []


def test_timeout_is_retried(server, tmp_path):
    base, served = server
    result = download(f"{base}/slow.bin", tmp_path / "w.pkl", **{**FAST, "timeout": 0.5})
    assert served.hits["/slow.bin"] == 2
    assert result.sha256 == DATA_SHA


def test_connection_refused_is_an_error(tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/x.bin"
    with pytest.raises(DownloadError, match="2 attempts") as info:
        download(url, tmp_path / "w.pkl", **{**FAST, "retries": 1})
    assert url in str(info.value) and "connection refused" in str(info.value)
    assert _leftovers(tmp_path) == []


def test_html_page_is_rejected(server, tmp_path):
    base, served = server
    with pytest.raises(DownloadError, match="HTML"):
        download(f"{base}/page.html", tmp_path / "w.pkl", **FAST)
    assert served.hits["/page.html"] == 1
    assert _leftovers(tmp_path) == []


def test_recorded_sha256_is_used_as_pin(server, tmp_path):
    base, served = server
    url = f"{base}/file.bin"
    dest = tmp_path / "w.pkl"
    download(url, dest, **FAST)

    # Already there and matching the record: nothing is fetched.
    again = download(url, dest, **FAST)
    assert again.sha256 == DATA_SHA and again.url is None and served.hits["/file.bin"] == 1

    # File gone, record kept, server now serves something else: the record catches it.
    dest.unlink()
    served.body = DATA[::-1]
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(url, dest, **FAST)
    assert _leftovers(tmp_path) == ["w.pkl.sha256"]
    assert read_record(dest) == DATA_SHA

    # An explicit pin overrides the record (and replaces it).
    new_sha = hashlib.sha256(DATA[::-1]).hexdigest()
    result = download(url, dest, sha256=new_sha, **FAST)
    assert result.sha256 == new_sha and read_record(dest) == new_sha


def test_garbled_record_is_an_error(server, tmp_path):
    base, _ = server
    dest = tmp_path / "w.pkl"
    record_path(dest).write_text("not a digest\n")
    with pytest.raises(DownloadError, match="garbled checksum record"):
        download(f"{base}/file.bin", dest, **FAST)


def test_verify_file_ok_and_tampered(server, tmp_path):
    base, _ = server
    dest = tmp_path / "w.pkl"
    download(f"{base}/file.bin", dest, **FAST)

    good = verify_file(dest)
    assert (good.ok, good.status, good.expected, good.actual) == (True, "ok", DATA_SHA, DATA_SHA)

    with open(dest, "r+b") as f:  # flip one byte
        f.seek(1234)
        byte = f.read(1)
        f.seek(1234)
        f.write(bytes([byte[0] ^ 0xFF]))
    bad = verify_file(dest)
    assert bad.ok is False and bad.status == "mismatch"
    assert bad.expected == DATA_SHA and bad.actual == sha256_file(dest) != DATA_SHA


def test_verify_file_without_record_or_file(tmp_path):
    path = tmp_path / "w.pkl"
    missing = verify_file(path)
    assert missing.ok is False and missing.status == "missing" and missing.actual is None

    path.write_bytes(b"abc")
    unrecorded = verify_file(path)
    assert unrecorded.ok is None and unrecorded.status == "unrecorded"
    assert unrecorded.actual == hashlib.sha256(b"abc").hexdigest()

    record_path(path).write_text("zzz\n")
    assert verify_file(path).status == "bad-record"


def test_write_record_is_sha256sum_format(tmp_path):
    path = tmp_path / "w.pkl"
    write_record(path, DATA_SHA.upper())
    assert record_path(path).read_text() == f"{DATA_SHA}  w.pkl\n"
    assert _leftovers(tmp_path) == ["w.pkl.sha256"]  # no temp file left
    with pytest.raises(ValueError):
        write_record(path, "abc")


# --------------------------------------------------------------------------- Google Drive (gdown) and fallbacks

DRIVE_ID = "1MEGjdvVpUsu1jB4zrXZN7Y4kBBOzizDQ"


@pytest.fixture
def fake_gdown(monkeypatch):
    """Replace gdown.download (no network); `behave(output)` decides what one call does."""
    import gdown

    calls: list[dict] = []
    state = {"behave": lambda output: Path(output).write_bytes(DATA)}

    def fake_download(url=None, output=None, quiet=False, id=None, **kwargs):
        calls.append({"url": url, "id": id, "output": output, "quiet": quiet, **kwargs})
        state["behave"](output)
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    return calls, state


def test_drive_source_passes_the_file_id_to_gdown(fake_gdown, tmp_path):
    calls, _ = fake_gdown
    dest = tmp_path / "w.pkl"
    result = download(Source("gdrive", DRIVE_ID, verified=True), dest, **FAST)
    assert [c["id"] for c in calls] == [DRIVE_ID] and calls[0]["url"] is None and calls[0]["quiet"] is True
    assert Path(calls[0]["output"]).parent != tmp_path  # gdown writes into the private staging folder
    assert result.url == f"https://drive.google.com/uc?id={DRIVE_ID}" and result.sha256 == DATA_SHA
    assert _leftovers(tmp_path) == ["w.pkl", "w.pkl.sha256"]


def _quota(output):
    from gdown.exceptions import FileURLRetrievalError

    Path(output + "abcdefgh.part").write_bytes(DATA[:1000])  # gdown keeps partial files for its own resume
    raise FileURLRetrievalError("Too many users have viewed or downloaded this file recently.\nTry later.")


def _offline(output):
    import requests

    raise requests.ConnectionError("HTTPSConnectionPool(host='drive.google.com', port=443): Max retries exceeded")


def _html(output):
    Path(output).write_bytes(b"\n  <!DOCTYPE html><html><title>Google Drive - Virus scan warning</title></html>")


@pytest.mark.parametrize("behave,reason", [
    (_quota, "Too many users"),
    (_offline, "connection failed"),
    (_html, "HTML page arrived"),
])
def test_drive_refusals_are_one_line_with_the_manual_route(fake_gdown, tmp_path, behave, reason):
    _, state = fake_gdown
    state["behave"] = behave
    with pytest.raises(DownloadError) as info:
        download(Source("gdrive", DRIVE_ID, verified=True), tmp_path / "w.pkl", **FAST)
    message = str(info.value)
    assert "\n" not in message and reason in message
    assert f"https://drive.google.com/uc?id={DRIVE_ID}" in message
    assert f"`pulse weights convert FILE {tmp_path}`" in message  # DEST: the folder the download was for
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("behave", [_quota, _offline, _html])
def test_drive_failure_falls_back_to_the_next_source(fake_gdown, server, tmp_path, behave):
    calls, state = fake_gdown
    state["behave"] = behave
    base, served = server
    heard = []
    sources = [Source("gdrive", DRIVE_ID, verified=True), Source("url", f"{base}/file.bin", verified=False)]
    result = download_first(sources, tmp_path / "w.pkl", on_failure=lambda e, last: heard.append((str(e), last)),
                            **FAST)
    # a network error is retried (3 times by default); Drive's refusals and HTML pages are not
    assert len(calls) == (4 if behave is _offline else 1) and served.hits["/file.bin"] == 1
    assert result.url == f"{base}/file.bin" and result.sha256 == DATA_SHA
    assert len(heard) == 1 and heard[0][1] is False
    assert _leftovers(tmp_path) == ["w.pkl", "w.pkl.sha256"]


def test_every_source_failing_lists_each_and_leaves_nothing(fake_gdown, server, tmp_path):
    _, state = fake_gdown
    state["behave"] = _quota
    base, _ = server
    heard = []
    sources = [Source("gdrive", DRIVE_ID, verified=True), Source("url", f"{base}/missing.bin", verified=False)]
    with pytest.raises(AllSourcesFailed) as info:
        download_first(sources, tmp_path / "w.pkl", on_failure=lambda e, last: heard.append(last), **FAST)
    assert [("Too many users" in str(f), "404" in str(f)) for f in info.value.failures] == [(True, False),
                                                                                          (False, True)]
    assert heard == [False, True]
    assert _leftovers(tmp_path) == []


def test_interrupted_download_leaves_nothing(fake_gdown, tmp_path):
    _, state = fake_gdown

    def interrupted(output):
        Path(output).write_bytes(DATA[:5000])
        raise KeyboardInterrupt

    state["behave"] = interrupted
    with pytest.raises(KeyboardInterrupt):
        download(Source("gdrive", DRIVE_ID, verified=True), tmp_path / "w.pkl", **FAST)
    assert _leftovers(tmp_path) == []


def _unresolvable(output):
    import requests

    raise requests.ConnectionError(
        "HTTPSConnectionPool(host='drive.google.com', port=443): Max retries exceeded with url: /uc?id=x "
        "(Caused by NameResolutionError(\"<urllib3.connection.HTTPSConnection object>: Failed to resolve "
        "'drive.google.com' ([Errno -3] Temporary failure in name resolution)\"))")


def test_drive_unreachable_says_the_real_cause_once_without_retrying_lines(fake_gdown, tmp_path, capfd):
    calls, state = fake_gdown
    state["behave"] = _unresolvable
    with pytest.raises(DownloadError) as info:
        download(Source("gdrive", DRIVE_ID, verified=True), tmp_path / "w.pkl", **{**FAST, "retries": 3})
    message = str(info.value)
    assert "refused" not in message  # Drive never answered
    assert "the host drive.google.com could not be resolved (no network, or no DNS)" in message
    assert len(calls) == 1 and calls[0]["retries"] == 0  # an unknown host is not retried; gdown never retries
    assert "Retrying" not in capfd.readouterr().err


def test_drive_network_errors_are_retried_quietly(fake_gdown, tmp_path, capfd):
    calls, state = fake_gdown
    state["behave"] = _offline
    with pytest.raises(DownloadError, match="cannot reach Google Drive"):
        download(Source("gdrive", DRIVE_ID, verified=True), tmp_path / "w.pkl", **{**FAST, "retries": 2})
    assert len(calls) == 3 and all(c["retries"] == 0 for c in calls)
    assert capfd.readouterr().err == ""
