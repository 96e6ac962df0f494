"""What a run tells its user, as an interface: the terminal's implementation lives in the CLI."""

from __future__ import annotations

from .records import ResultRecord


class Reporter:
    """Progress and per-input outcomes of a run; this default tells nothing."""

    def note(self, message: str) -> None: ...

    def start(self, inputs: int, samples: int, steps: int) -> None:
        """The run will search `inputs` inputs, `samples` searches of `steps` steps each."""

    def step(self, image_steps: int, l2: float, step: int, steps: int) -> None:
        """`image_steps` more optimisation steps are done (one per search in the batch, or the steps a
        search skipped: stopped at eps, failed, done by another process); `l2` is the lowest current L2."""

    def file_done(self, record: ResultRecord) -> None: ...

    def file_failed(self, rel: str, reason: str) -> None: ...

    def close(self) -> None: ...
