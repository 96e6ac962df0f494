"""Claims: which process works on which input, when several share one output folder.

A claim is an exclusive `flock` on `OUT/.claims/<hash>.claim` (a hash of the input's result name, so no input
name is too long for it), held for as long as the process works on that input; the file says which input and
who holds it (host, pid, since when) for people looking. The operating system drops a
lock the moment its process ends, however it ends (SIGKILL included), so a dead owner's claim is free at once
and no heartbeat is needed on a local disk. On a shared filesystem the lock is the file server's (NFS's lock
manager releases a dead client's locks when its lease runs out).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import open_regular, parse_json_line, writer_tag

CLAIMS_FOLDER = ".claims"
CLAIM_SUFFIX = ".claim"
RUN_PREFIX = "run."  # a run's own claim (an input's is named by a hex digest)


def run_claim_path(out_dir: Path) -> Path:
    """`OUT/.claims/run.<host>.<pid>.claim`: held by a run for as long as it searches in OUT (see `live_runs`)."""
    return Path(out_dir) / CLAIMS_FOLDER / f"{RUN_PREFIX}{writer_tag()}{CLAIM_SUFFIX}"


def live_runs(out_dir: Path) -> list[dict[str, Any]]:
    """What each run now searching in OUT wrote in its run claim (its model and options); the claim file of a
    run that has ended (its lock free: killed, say) is removed on the way."""
    folder = Path(out_dir) / CLAIMS_FOLDER
    try:
        names = sorted(n for n in os.listdir(folder) if n.startswith(RUN_PREFIX) and n.endswith(CLAIM_SUFFIX))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        try:
            fd = open_regular(folder / name, os.O_RDONLY)
        except OSError:  # gone meanwhile, or not a plain file (refused before a run starts)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: its run goes on
                data = parse_json_line(os.pread(fd, 1 << 16, 0))
                found.append(data if isinstance(data, dict) else {})
                continue
            (folder / name).unlink(missing_ok=True)
        finally:
            os.close(fd)
    return found


def claim_path(out_dir: Path, stem: str) -> Path:
    """`OUT/.claims/<sha256 of stem>.claim`: one flat name of fixed length for every input."""
    digest = hashlib.sha256(stem.encode("utf-8", "surrogateescape")).hexdigest()[:40]
    return Path(out_dir) / CLAIMS_FOLDER / f"{digest}{CLAIM_SUFFIX}"


class ClaimError(OSError):
    """A claim file that is not a plain file of ours (a symlink, a folder, a FIFO): never written through."""


@dataclass
class Claim:
    path: Path
    fd: int

    def release(self, *, finished: bool = False) -> None:
        """Let go. When the input is finished (its record written) the claim file goes too; a process that
        opened it meanwhile finds the input done and lets go as well."""
        if self.fd < 0:
            return
        if finished:
            try:
                self.path.unlink()
            except OSError:
                pass
        os.close(self.fd)
        self.fd = -1


def _not_a_claim(path: Path, what: str) -> ClaimError:
    return ClaimError(errno.EINVAL, f"{what}, not a claim file; remove it", str(path))


def try_claim(path: Path, label: str = "", details: dict[str, Any] | None = None) -> Claim | None:
    """The claim on `path` if no other process holds it, else None. Never waits. `label` (the input) and
    `details` are written in the file for people (and other runs) to read. ClaimError (an OSError) when `path`
    is not a plain file: it is never followed or written through (OUT may be shared with other users), nor is
    a link on the way to it inside a confined OUT (see `files.atomic.confine`)."""
    try:
        fd = open_regular(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if exc.filename == str(path) and exc.errno in _NOT_A_FILE:
            raise _not_a_claim(path, _NOT_A_FILE[exc.errno]) from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    owner = json.dumps({"input": label, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
                        **(details or {})}, ensure_ascii=True) + "\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
    except OSError:
        pass  # who holds it is for people to read; the lock is what counts
    return Claim(path, fd)


_NOT_A_FILE = {errno.ELOOP: "a symbolic link", errno.EISDIR: "a folder", errno.EINVAL: "a special file"}
