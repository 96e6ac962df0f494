"""Terminal feedback on stderr: a progress bar on a terminal, plain lines elsewhere, one line per failure."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from tqdm import tqdm

from ..run.records import SKIPPED, ResultRecord
from ..run.reporter import Reporter
from .console import printable


class TerminalReporter(Reporter):
    """On a terminal: a tqdm bar over images (with the current L2). Redirected to a file or a pipe: no
    carriage-return updates, one plain line per finished input instead."""

    def __init__(self, console: Console, *, quiet: bool):
        self.console = console
        self.quiet = quiet
        self.interactive = console.file.isatty()
        self.bar: tqdm | None = None

    def note(self, message: str) -> None:
        if not self.quiet:
            self._write(escape(message))

    def start(self, total_searches: int, steps: int) -> None:
        if self.quiet or total_searches == 0 or not self.interactive:
            return
        self.bar = tqdm(total=total_searches, unit="img", desc="upsampling", file=self.console.file,
                        dynamic_ncols=True, mininterval=0.1,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total} img [{elapsed}<{remaining}{postfix}]")

    def step(self, finished_fraction: float, l2: float, step: int, steps: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"step {step}/{steps}, L2 {l2:.4g}", refresh=False)
            self.bar.update(finished_fraction)

    def file_done(self, record: ResultRecord) -> None:
        if self.quiet or self.interactive or record.status == SKIPPED:
            return
        l2 = f"L2 {record.best_l2:.4g}" if record.best_l2 is not None else "L2 -"
        self._write(escape(f"done {printable(record.input)}: {record.status}, {l2}, {record.seconds:.1f} s"))

    def file_failed(self, rel: str, reason: str) -> None:
        # Errors are shown even with --quiet, one line each.
        self._write(f"[bold red]error:[/] {escape(printable(rel))}: {escape(printable(reason))}")

    def close(self) -> None:
        if self.bar is not None:
            if abs(self.bar.n - self.bar.total) < 1e-6:  # float steps add up to just under the total
                self.bar.n = self.bar.total
            self.bar.close()
            self.bar = None

    def _write(self, markup: str) -> None:
        if self.bar is not None:
            with self.bar.external_write_mode(file=self.console.file):
                self.console.print(markup, highlight=False)
        else:
            self.console.print(markup, highlight=False)
