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
import stat
import time
from dataclasses import dataclass
from pathlib import Path

CLAIMS_FOLDER = ".claims"
CLAIM_SUFFIX = ".claim"


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


def try_claim(path: Path, label: str = "") -> Claim | None:
    """The claim on `path` if no other process holds it, else None. Never waits. `label` (the input) is
    written in the file for people looking. ClaimError (an OSError) when `path` is not a plain file: it is
    never followed or written through (OUT may be shared with other users)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_a_claim(path, "a symbolic link") from None
        if exc.errno == errno.EISDIR:
            raise _not_a_claim(path, "a folder") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _not_a_claim(path, "a special file")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    owner = json.dumps({"input": label, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()},
                       ensure_ascii=True) + "\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
    except OSError:
        pass  # who holds it is for people to read; the lock is what counts
    return Claim(path, fd)
