"""Claims: which process works on which input, when several share one output folder.

A claim is an exclusive `flock` on `OUT/.claims/<stem>.claim`, held for as long as the process works on that
input; the file says who holds it (host, pid, since when) for people looking. The operating system drops a
lock the moment its process ends, however it ends (SIGKILL included), so a dead owner's claim is free at once
and no heartbeat is needed on a local disk. On a shared filesystem the lock is the file server's (NFS's lock
manager releases a dead client's locks when its lease runs out).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

CLAIMS_FOLDER = ".claims"


def claim_path(out_dir: Path, stem: str) -> Path:
    return Path(out_dir) / CLAIMS_FOLDER / f"{stem}.claim"


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


def try_claim(path: Path) -> Claim | None:
    """The claim on `path` if no other process holds it, else None. Never waits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}) + "\n"
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
    except OSError:
        pass  # who holds it is for people to read; the lock is what counts
    return Claim(path, fd)
