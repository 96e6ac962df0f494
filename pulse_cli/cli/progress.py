"""Terminal feedback on stderr: a progress bar on a terminal, plain lines elsewhere, one line per failure."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from tqdm import tqdm

from ..run.records import SKIPPED, ResultRecord
from ..run.reporter import Reporter
from .console import printable


def done_line(record: ResultRecord) -> str:
    """`done <rel>: <status>, L2 <value>, <seconds> s`; with several samples, how many met eps. The L2 is
    the record's: with samples, the one of the sample that decides the status (see `ResultRecord`)."""
    l2 = f"L2 {record.best_l2:.4g}" if record.best_l2 is not None else "L2 -"
    status = record.status
    if len(record.samples) > 1:
        met = sum(getattr(s, "status", None) == "ok" for s in record.samples)
        status += f" ({met} of {len(record.samples)} samples met eps)"
    return f"done {printable(record.input)}: {status}, {l2}, {record.seconds:.1f} s"


class TerminalReporter(Reporter):
    """On a terminal: a tqdm bar over the run's optimisation steps (its ETA is steps left at the average
    rate so far), whole inputs counted, and a line per finished input above the bar. Redirected to a file or
    a pipe: no carriage-return updates, the same line per finished input."""

    def __init__(self, console: Console, *, quiet: bool):
        self.console = console
        self.quiet = quiet
        self.interactive = console.file.isatty()
        self.bar: tqdm | None = None
        self.inputs = 0
        self.inputs_done = 0
        self.status = ""

    def note(self, message: str) -> None:
        if not self.quiet:
            self._write(escape(printable(message)))

    def start(self, inputs: int, samples: int, steps: int) -> None:
        self.inputs, self.inputs_done = inputs, 0
        if self.quiet or inputs == 0 or not self.interactive:
            return
        # smoothing=0: the rate is steps done over time elapsed, so the ETA is steps left at that rate.
        self.bar = tqdm(total=inputs * samples * steps, desc=self._description(), file=self.console.file,
                        dynamic_ncols=True, mininterval=0.1, smoothing=0,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]")

    def step(self, image_steps: int, l2: float, step: int, steps: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"step {step}/{steps}, L2 {l2:.4g}", refresh=False)
            self.bar.update(max(0, min(image_steps, self.bar.total - self.bar.n)))  # never past the end

    def file_done(self, record: ResultRecord) -> None:
        if record.status == SKIPPED:
            return
        self._count_input()
        if not self.quiet:
            self._write(escape(done_line(record)))

    def file_failed(self, rel: str, reason: str) -> None:
        self._count_input()
        # Errors are shown even with --quiet, one line each.
        self._write(f"[bold red]error:[/] {escape(printable(rel))}: {escape(printable(reason))}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def _description(self) -> str:
        return f"upsampling {self.inputs_done}/{self.inputs} input{'s' if self.inputs != 1 else ''}"

    def _count_input(self) -> None:
        self.inputs_done += 1
        if self.bar is not None:
            self.bar.set_description_str(self._description(), refresh=False)

    def _write(self, markup: str) -> None:
        if self.bar is not None:
            with self.bar.external_write_mode(file=self.console.file):
                self.console.print(markup, highlight=False)
        else:
            self.console.print(markup, highlight=False)
