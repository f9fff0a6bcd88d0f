"""``o``: every study in the store; per (model, dataset) a progress bar and counts,
epochs per second and ETA; the workers alive and the cells they train."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Static

from kerasgen.vocabulary import DIVERGED, DONE, FAILED, PENDING, RUNNING
from tui.screens.base import DashboardScreen
from tui.view import ViewState

if TYPE_CHECKING:
    from tui.data import ProgressView, RunningCell, Snapshot

BAR_WIDTH = 12
COLUMNS = ("study", "model", "dataset", "progress", PENDING, RUNNING, DONE, DIVERGED,
           FAILED, "epochs/s", "ETA")
COUNT_STYLES = {PENDING: "dim", RUNNING: "yellow", DONE: "green", DIVERGED: "red",
                FAILED: "magenta"}
CELL_PADDING = 1  # DataTable's default, on each side of a cell
ETA_WIDTH = 6  # the longest ETA format_duration writes below 100 days: "12d03h"


@dataclass(frozen=True)
class TableLayout:
    """Which columns the progress table shows, in which order, under which headers."""

    columns: tuple[tuple[str, str], ...]  # (column key, header)
    bar_width: int

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.columns)


WIDE = TableLayout(tuple((name, name) for name in COLUMNS), BAR_WIDTH)
"""Every column under its full name, the ETA last: when the table fits."""

COMPACT_HEADERS = {"epochs/s": "ep/s", PENDING: "pend", RUNNING: "run", DIVERGED: "div",
                   FAILED: "fail"}


def compact_layout(several_studies: bool) -> TableLayout:
    """For a narrow terminal (80 columns): the ETA right after the bar, so it is on
    screen whole even when the counts scroll off; short headers; a shorter bar; the study
    column only when the store holds several (the list above names the one)."""
    order = (("study",) if several_studies else ()) + (
        "model", "dataset", "progress", "ETA", "epochs/s", PENDING, RUNNING, DONE,
        DIVERGED, FAILED)
    return TableLayout(tuple((name, COMPACT_HEADERS.get(name, name)) for name in order), 8)


def row_key(group: tuple[str, str, str]) -> str:
    return "\x1f".join(group)


def progress_bar(fraction: float, width: int = BAR_WIDTH) -> Text:
    filled = int(round(fraction * width))
    bar = Text("━" * filled, style="green" if fraction >= 1 else "cyan")
    bar.append("━" * (width - filled), style="grey30")
    bar.append(f" {fraction:4.0%}")
    return bar


def progress_cells(p: ProgressView, labels, bar_width: int = BAR_WIDTH) -> dict[str, Text]:
    """One row of the table by column key. Every cell is a Text: names are data, never
    read as markup (a study named ``oops[/]`` is shown as it is)."""
    cells = {"study": Text(p.key[0]), "model": Text(labels.get(p.key[1], p.key[1])),
             "dataset": Text(labels.get(p.key[2], p.key[2])),
             "progress": progress_bar(p.fraction, bar_width)}
    for status in (PENDING, RUNNING, DONE, DIVERGED, FAILED):
        count = p.counts.get(status, 0)
        cells[status] = Text(str(count), style=COUNT_STYLES[status] if count else "dim")
    cells["epochs/s"] = Text(f"{p.epochs_per_second:.2f}" if p.epochs_per_second else "–")
    cells["ETA"] = Text(p.eta)
    return cells


def table_width(layout: TableLayout, rows: list[dict[str, Text]]) -> int:
    """Columns the table needs to show every cell of ``rows`` whole."""
    width = 0
    for key, header in layout.columns:
        content = max([Text(header).cell_len] + [row[key].cell_len for row in rows])
        if key == "ETA":
            content = max(content, ETA_WIDTH)  # room for the ETA to grow
        width += content + 2 * CELL_PADDING
    return width


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
    if snapshot.lost:
        text.append(f"\nWorkers lost: {len(snapshot.lost)}", style="bold magenta")
        text.append("  (no heartbeat, or the process is gone: their packs go to the next "
                    "worker that claims)", style="dim")
        for worker, cells in snapshot.lost.items():
            text.append(f"\n  {worker}", style="magenta")
            text.append(f"  {len(cells)} cell(s) left running")
    return text


def studies_text(snapshot: Snapshot) -> Text:
    text = Text()
    text.append(f"Studies in {snapshot.path.rsplit('/', 1)[-1]}: {len(snapshot.studies)}",
                style="bold")
    for s in snapshot.studies:
        text.append(f"\n  {s.name}", style="cyan")
        each = (f"{s.epochs or '?'} epochs each" if s.stop == "epochs"
                else f"until {s.stop}, at most {s.epochs or '?'} epochs")
        text.append(f"  {s.finished}/{s.cells} cells · {s.epochs_text or '0 epochs'} · "
                    f"ETA {s.eta} · {each} · created "
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

    SCROLLBAR = 2  # columns a vertical scrollbar takes when the rows overflow

    _layout: TableLayout | None = None

    def compose_body(self) -> ComposeResult:
        with Vertical(id="overview-body", classes="body"):
            yield Static(id="studies")
            yield DataTable(id="progress-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="workers")

    def table_layout(self, snapshot: Snapshot) -> tuple[TableLayout, list[dict[str, Text]]]:
        """The full table when it fits the screen's width, else the compact one; and
        the rows in that layout."""
        rows = [progress_cells(p, snapshot.labels) for p in snapshot.progress]
        width = self.size.width or self.app.size.width
        available = width - 2 - self.SCROLLBAR  # less #overview-body's padding
        if table_width(WIDE, rows) <= available:
            return WIDE, rows
        layout = compact_layout(len(snapshot.studies) > 1)
        return layout, [progress_cells(p, snapshot.labels, layout.bar_width)
                        for p in snapshot.progress]

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
        layout, rows = self.table_layout(snapshot)
        if layout != self._layout:
            self._layout = layout
            table.clear(columns=True)
            for key, header in layout.columns:
                table.add_column(header, key=key)
        if [str(k.value) for k in table.rows] != keys:
            table.clear()
            for key, cells in zip(keys, rows):
                table.add_row(*(cells[c] for c in layout.keys), key=key)
        else:
            for key, cells in zip(keys, rows):
                for column in layout.keys:
                    # update_width: a column grows with its cells ("?" -> "1h05m").
                    table.update_cell(key, column, cells[column], update_width=True)
        if view.grid_key is not None:
            selected = row_key(view.grid_key[:3])
            if selected in keys and table.cursor_row != keys.index(selected):
                table.move_cursor(row=keys.index(selected))

    def on_resize(self, event: events.Resize) -> None:
        view = self.app.view
        if view.snapshot is not None and view.snapshot.ok:
            self.show(view)  # the full table or the compact one, for the new width

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        group = getattr(self, "_groups", {}).get(str(event.row_key.value))
        if group is not None:
            self.post_message(self.GridChosen(group))
