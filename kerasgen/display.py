"""The progress display of ``kerasgen run``: a rich live panel on a terminal, plain
lines otherwise. It polls the store read-only from a thread of its own, so it shows
exactly what the store holds, whichever process is training."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from kerasgen.progress import GroupProgress, estimate, format_duration, study_progress
from kerasgen.store import StoreError
from kerasgen.vocabulary import DIVERGED, FAILED, RUNNING


def progress_table(groups: list[GroupProgress], title: str | None = None) -> Table:
    """Names are data: they are shown as plain text (a study named ``[bold]x`` or
    ``oops[/]`` is printed as written, never read as markup)."""
    table = Table(title=Text(title) if title is not None else None, expand=False)
    for col in ("model", "dataset", "progress", "cells done", "epochs", "diverged",
                "failed", RUNNING, "epochs/s", "ETA"):
        left = col in ("model", "dataset", "progress")
        table.add_column(col, justify="left" if left else "right")
    for g in groups:
        table.add_row(
            Text(g.model), Text(g.dataset),
            ProgressBar(total=max(g.cells, 1), completed=g.ended, width=24),
            f"{g.finished}/{g.cells}",
            f"{g.epochs_done}/{'≈' if g.estimated else ''}{g.epochs_total}",
            str(g.counts[DIVERGED]), str(g.counts[FAILED]),
            str(g.counts[RUNNING]), f"{g.epochs_per_second:.2f}", format_duration(g.eta_seconds),
        )
    running = [r for g in groups for r in g.running]
    if running:
        workers = sorted({r[0] for r in running})
        lines = []
        for w in workers:
            mine = [r for r in running if r[0] == w]
            lrs = ", ".join(f"{r[3]:g}" for r in mine[:6]) + (" ..." if len(mine) > 6 else "")
            lines.append(f"{w}: batch {mine[0][2]}, lr {lrs}, epoch {max(r[4] for r in mine)}")
        table.caption = Text("\n".join(lines))
    return table


def summary_line(groups: list[GroupProgress]) -> str:
    """One line for a study: cells first, epochs second, one ETA
    (:func:`kerasgen.progress.estimate`: the epochs left at the whole study's rate)."""
    e = estimate(groups)
    return (f"{e.finished}/{e.cells} cells finished ({e.epochs_text()}), {e.running} "
            f"running, {e.diverged} diverged, "
            + (f"{e.failed} failed, " if e.failed else "") +
            f"{e.epochs_per_second:.2f} epochs/s, ETA {format_duration(e.eta_seconds)}")


class ProgressMonitor(threading.Thread):
    """Shows a study's progress until stopped. ``mode``: "auto" (live panel on a
    terminal, plain lines otherwise), "live" or "plain"."""

    def __init__(self, db: Path, study: str, mode: str | bool = "auto", interval: float = 1.0,
                 plain_every: float = 10.0, console: Console | None = None):
        super().__init__(daemon=True, name="kerasgen-progress")
        self.db, self.study = Path(db), study
        self.interval, self.plain_every = interval, plain_every
        self.console = console or Console(stderr=True)
        if mode in ("auto", True):
            mode = "live" if self.console.is_terminal else "plain"
        self.mode = mode
        self._halt = threading.Event()

    def _groups(self) -> list[GroupProgress]:
        try:
            return [g for g in study_progress(self.db) if g.study == self.study]
        except (StoreError, OSError):
            return []

    def run(self) -> None:
        if self.mode == "live":
            with Live(progress_table(self._groups(), self.study), console=self.console,
                      refresh_per_second=2, transient=False) as live:
                while not self._halt.wait(self.interval):
                    live.update(progress_table(self._groups(), self.study))
                live.update(progress_table(self._groups(), self.study))
            return
        last_line, last_time = "", 0.0
        while not self._halt.wait(self.interval):
            line = summary_line(self._groups())
            if line != last_line and time.monotonic() - last_time >= self.plain_every:
                print(f"[{self.study}] {line}", file=sys.stderr, flush=True)
                last_line, last_time = line, time.monotonic()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        if self.mode == "plain":
            print(f"[{self.study}] {summary_line(self._groups())}", file=sys.stderr, flush=True)
