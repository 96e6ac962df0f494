"""Terminal feedback on stderr: a tqdm bar over images and one line per failed file."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from tqdm import tqdm

from ..run.reporter import Reporter


class TerminalReporter(Reporter):
    def __init__(self, console: Console, *, quiet: bool):
        self.console = console
        self.quiet = quiet
        self.bar: tqdm | None = None

    def note(self, message: str) -> None:
        if not self.quiet:
            self._write(message)

    def start(self, total_searches: int, steps: int) -> None:
        if self.quiet or total_searches == 0:
            return
        interactive = self.console.file.isatty()
        self.bar = tqdm(total=total_searches, unit="img", desc="upsampling", file=self.console.file,
                        dynamic_ncols=True, mininterval=0.1 if interactive else 2.0,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total} img [{elapsed}<{remaining}{postfix}]")

    def step(self, finished_fraction: float, l2: float, step: int, steps: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"step {step}/{steps}, L2 {l2:.4g}", refresh=False)
            self.bar.update(finished_fraction)

    def file_failed(self, rel: str, reason: str) -> None:
        # Errors are shown even with --quiet, one line each.
        self._write(f"[bold red]error:[/] {escape(rel)}: {escape(reason)}", markup=True)

    def close(self) -> None:
        if self.bar is not None:
            if abs(self.bar.n - self.bar.total) < 1e-6:  # float steps add up to just under the total
                self.bar.n = self.bar.total
            self.bar.close()
            self.bar = None

    def _write(self, message: str, markup: bool = False) -> None:
        if self.bar is not None:
            with self.bar.external_write_mode(file=self.console.file):
                self.console.print(message, markup=markup, highlight=False)
        else:
            self.console.print(message, markup=markup, highlight=False)
