"""What a run tells its user, as an interface: the terminal's implementation lives in the CLI."""

from __future__ import annotations

from .records import ResultRecord


class Reporter:
    """Progress and per-input outcomes of a run; this default tells nothing."""

    def note(self, message: str) -> None: ...

    def start(self, total_searches: int, steps: int) -> None: ...

    def step(self, finished_fraction: float, l2: float, step: int, steps: int) -> None: ...

    def file_done(self, record: ResultRecord) -> None: ...

    def file_failed(self, rel: str, reason: str) -> None: ...

    def close(self) -> None: ...
