"""A worker in a fresh interpreter: `python -m pulse_cli.worker_main FD PARENT_PID`.

Where a worker cannot be a fork of the run (not Linux, or more than one thread per search), `pulse_cli.workers`
starts this. It is the one module that knows both the engine and its workers: `workers` runs the searches with
the engine class it is given, so that it never imports the engine that imports it.
"""

from __future__ import annotations

import sys

from .workers import _become_worker, _receive, _say, serve


def main(argv: list[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    _become_worker(parent)  # before anything slow: it must die with the run from here on
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    try:
        setup = _receive(conn)  # loads torch, with the thread settings of this process's environment
    except (EOFError, OSError):
        return 0
    try:
        from .engine import Engine

        return serve(conn, Engine, setup["generator"], config=setup["config"], batch_size=setup["batch_size"],
                     threads=setup["threads"], stop_at_eps=setup["stop_at_eps"], save_every=setup["save_every"])
    except Exception as exc:  # noqa: BLE001 - one line on stderr, which the parent reads
        _say(exc)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
