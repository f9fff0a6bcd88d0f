"""``o``: every study in the store; per (model, dataset) a progress bar and counts,
epochs per second and ETA; the workers alive and the cells they train."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from tui.screens.base import DashboardScreen
from tui.view import ViewState

if TYPE_CHECKING:
    from tui.data import ProgressView, RunningCell, Snapshot

BAR_WIDTH = 12  # the table fits 120 columns with an ETA like "12d 3h"
COLUMNS = ("study", "model", "dataset", "progress", "pending", "running", "done", "diverged",
           "failed", "epochs/s", "ETA")
COUNT_STYLES = {"pending": "dim", "running": "yellow", "done": "green", "diverged": "red",
                "failed": "magenta"}


def row_key(group: tuple[str, str, str]) -> str:
    return "\x1f".join(group)


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> Text:
    filled = int(round(fraction * width))
    bar = Text("━" * filled, style="green" if fraction >= 1 else "cyan")
    bar.append("━" * (width - filled), style="grey30")
    bar.append(f" {fraction:4.0%}")
    return bar


def progress_row(p: ProgressView, labels) -> list[Text]:
    """One row of the table. Every cell is a Text: names are data, never read as markup
    (a study named ``oops[/]`` is shown as it is)."""
    counts = [Text(str(p.counts.get(s, 0)), style=COUNT_STYLES[s] if p.counts.get(s) else "dim")
              for s in ("pending", "running", "done", "diverged", "failed")]
    rate = f"{p.epochs_per_second:.2f}" if p.epochs_per_second else "–"
    return [Text(p.key[0]), Text(labels.get(p.key[1], p.key[1])),
            Text(labels.get(p.key[2], p.key[2])), progress_bar(p.fraction), *counts,
            Text(rate), Text(p.eta)]


def _rates(cells: tuple[RunningCell, ...]) -> str:
    """``LR 0.01, 0.02`` for a few cells, ``LR 0.01–0.2 (20 cells)`` for a pack."""
    rates = sorted(c.learning_rate for c in cells)
    if len(rates) <= 4:
        return "LR " + ", ".join(f"{r:g}" for r in rates)
    return f"LR {rates[0]:g}–{rates[-1]:g} ({len(rates)} cells)"


def workers_text(snapshot: Snapshot) -> Text:
    text = Text()
    text.append(f"Workers training now: {len(snapshot.running)}", style="bold")
    if not snapshot.running:
        text.append("  (none: nothing is running)", style="dim")
    epochs = {s.name: s.epochs for s in snapshot.studies}
    for worker, cells in snapshot.running.items():
        by_grid: dict[tuple, list[RunningCell]] = {}
        for c in cells:
            by_grid.setdefault((c.study, c.model, c.dataset, c.batch_size), []).append(c)
        for (study, model, dataset, bs), mine in by_grid.items():
            cap = epochs.get(study, 0)
            epoch = max(c.epochs_done for c in mine)
            text.append(f"\n  {worker}", style="cyan")
            text.append(f"  {snapshot.labels.get(model, model)} · "
                        f"{snapshot.labels.get(dataset, dataset)}"
                        + (f" · {study}" if len(snapshot.studies) > 1 else ""))
            text.append(f"  BS {bs}  {_rates(tuple(mine))}  ")
            text.append(f"{epoch}" + (f"/{cap}" if cap else "") + " epochs", style="bold")
    return text


def studies_text(snapshot: Snapshot) -> Text:
    text = Text()
    text.append(f"Studies in {snapshot.path.rsplit('/', 1)[-1]}: {len(snapshot.studies)}",
                style="bold")
    for s in snapshot.studies:
        text.append(f"\n  {s.name}", style="cyan")
        text.append(f"  {s.cells} cells · {s.epochs or '?'} epochs each · created "
                    f"{s.created_at[:16].replace('T', ' ')} UTC")
    return text


class OverviewScreen(DashboardScreen):
    """Studies, a progress table with one row per (study, model, dataset), workers."""

    TITLE_TEXT = "Overview"
    AUTO_FOCUS = "#progress-table"

    class GridChosen(Message):
        """Enter on a row: show the heatmap of that (study, model, dataset)."""

        def __init__(self, group: tuple[str, str, str]) -> None:
            super().__init__()
            self.group = group

    def compose_body(self) -> ComposeResult:
        with Vertical(id="overview-body", classes="body"):
            yield Static(id="studies")
            table = DataTable(id="progress-table", cursor_type="row", zebra_stripes=True)
            for name in COLUMNS:
                table.add_column(name, key=name)
            yield table
            yield Static(id="workers")

    def show(self, view: ViewState) -> None:
        snapshot = view.snapshot
        assert snapshot is not None
        for selector, text in (("#studies", studies_text(snapshot)),
                               ("#workers", workers_text(snapshot))):
            static = self.query_one(selector, Static)
            if static.content != text:
                static.update(text)
        table = self.query_one(DataTable)
        keys = [row_key(p.key) for p in snapshot.progress]
        self._groups = {row_key(p.key): p.key for p in snapshot.progress}
        if [str(k.value) for k in table.rows] != keys:
            table.clear()
            for key, p in zip(keys, snapshot.progress):
                table.add_row(*progress_row(p, snapshot.labels), key=key)
        else:
            for key, p in zip(keys, snapshot.progress):
                for column, value in zip(COLUMNS, progress_row(p, snapshot.labels)):
                    table.update_cell(key, column, value)
        if view.grid_key is not None:
            selected = row_key(view.grid_key[:3])
            if selected in keys and table.cursor_row != keys.index(selected):
                table.move_cursor(row=keys.index(selected))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        group = getattr(self, "_groups", {}).get(str(event.row_key.value))
        if group is not None:
            self.post_message(self.GridChosen(group))
