"""Terminal feedback on stderr: a progress bar on a terminal, plain lines elsewhere, one line per failure."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from tqdm import tqdm

from ..run.records import OK, SKIPPED, ResultRecord
from ..run.reporter import Reporter
from .console import print_wrapped, printable


def l2_text(record: ResultRecord) -> str:
    """An input's L2 as the terminal says it: `L2 0.0019`; with several samples, `best L2 0.001, worst L2
    0.0023` (the worst sample decides the status, see `ResultRecord`)."""
    def number(value: float | None) -> str:
        return f"{value:.4g}" if value is not None else "-"

    if len(record.samples) > 1:
        return f"best L2 {number(record.best_sample_l2)}, worst L2 {number(record.worst_sample_l2)}"
    return f"L2 {number(record.worst_sample_l2)}"


def samples_met(record: ResultRecord) -> str:
    """`` or, with several samples, ` (2 of 3 samples met eps)`."""
    if len(record.samples) < 2:
        return ""
    met = sum((s.get("status") if isinstance(s, dict) else s.status) == OK for s in record.samples)
    return f" ({met} of {len(record.samples)} samples met eps)"


def done_line(record: ResultRecord) -> str:
    """`done <rel>: <status>, L2 <value>, <seconds> s`; with several samples, how many met eps and the best
    and worst sample's L2."""
    return f"done {printable(record.input)}: {record.status}{samples_met(record)}, {l2_text(record)}, " \
           f"{record.seconds:.1f} s"


class StepBar(tqdm):
    """A bar over optimisation steps whose ETA waits until it means something. The first step of a run is
    slow (warm-up: memory, the first backward pass; 2 s where the next ones take 0.07 s), so a rate measured
    from the start would promise hours for a run of a minute. The rate counts from the end of the first
    update on, and the ETA stays `?` until ETA_AFTER_SECONDS have passed since then and ETA_AFTER_SHARE of
    the steps are done."""

    ETA_AFTER_SECONDS = 3.0
    ETA_AFTER_SHARE = 0.02

    def __init__(self, *args, **kwargs):
        self._first: tuple[float, float] | None = None  # (steps, time) at the end of the first update
        super().__init__(*args, **kwargs)

    def update(self, n: float = 1) -> bool | None:
        shown = super().update(n)
        if self._first is None and n > 0:
            self._first = (self.n, self._time())
        return shown

    def measured_rate(self) -> float:
        """Steps per second since the first update; 0 while too little is measured (tqdm then shows `?`)."""
        if self._first is None or not self.total:
            return 0.0
        steps, since = self.n - self._first[0], self._time() - self._first[1]
        if since < self.ETA_AFTER_SECONDS or self.n < self.ETA_AFTER_SHARE * self.total or steps <= 0:
            return 0.0
        return steps / since

    @property
    def format_dict(self):
        return {**super().format_dict, "rate": self.measured_rate()}


class TerminalReporter(Reporter):
    """On a terminal: a tqdm bar over the run's optimisation steps (its ETA: the steps left at the rate
    measured since the first step, once it means something; see `StepBar`), whole inputs counted, and a line
    per finished input above the bar. Redirected to a file or a pipe: no carriage-return updates, the same
    line per finished input."""

    def __init__(self, console: Console, *, quiet: bool):
        self.console = console
        self.quiet = quiet
        self.interactive = console.file.isatty()
        self.bar: StepBar | None = None
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
        self.bar = StepBar(total=inputs * samples * steps, desc=self._description(), file=self.console.file,
                           dynamic_ncols=True, mininterval=0.1,
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
        """A line above the bar: on a terminal wrapped between words (see `print_wrapped`)."""
        if self.bar is not None:
            with self.bar.external_write_mode(file=self.console.file):
                print_wrapped(self.console, markup, indent=4, markup=True)
        else:
            print_wrapped(self.console, markup, indent=4, markup=True)
