"""What the heatmap's cursor is on: coordinates, status, the kept epoch and its numbers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from kerasgen.vocabulary import DIVERGED, DONE, FAILED, PENDING, RUNNING

if TYPE_CHECKING:
    from tui.data import CellView, GridView

STATUS_STYLES = {PENDING: "dim", RUNNING: "bold yellow", DONE: "bold green",
                 DIVERGED: "bold red", FAILED: "bold magenta"}


def _acc(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def status_text(cell: CellView, epochs: int) -> Text:
    text = Text()
    text.append(cell.status, style=STATUS_STYLES.get(cell.status, ""))
    cap = f"/{epochs}" if epochs else ""
    if cell.status == RUNNING:
        text.append(f"  {cell.epochs_done}{cap} epochs")
    elif cell.status == DIVERGED and cell.diverged_epoch is not None:
        text.append(f"  at epoch {cell.diverged_epoch}")
    elif cell.status in (DONE, FAILED):
        text.append(f"  {cell.epochs_done}{cap} epochs")
    return text


def detail_table(grid: GridView, cell: CellView) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("batch size", f"{cell.batch_size}")
    table.add_row("learning rate", f"{cell.learning_rate:g}")
    table.add_row("ratio BS/LR", f"{cell.ratio:,.4g}")
    table.add_row("status", status_text(cell, grid.epochs))
    kept = _acc(cell.test_accuracy)
    if cell.kept_epoch is not None:
        kept += f" at epoch {cell.kept_epoch}"
    table.add_row("test acc", kept)
    if grid.best_metric not in (None, "test_accuracy"):
        table.add_row("best test acc", _acc(cell.best_test_accuracy))
    table.add_row("clean train acc", _acc(cell.train_eval_accuracy))
    table.add_row("gap", "–" if cell.gap is None else f"{cell.gap:+.4f}")
    table.add_row("loss gap", "–" if cell.loss_gap is None else f"{cell.loss_gap:+.4f}")
    table.add_row("running train", Text(_acc(cell.final_train_accuracy) + " (Keras)",
                                        style="dim"))
    if cell.worker and cell.status == RUNNING:
        table.add_row("worker", Text(cell.worker))  # a name: never read as markup
    if cell.error:
        table.add_row("error", Text(cell.error.splitlines()[-1][:200], style="magenta"))
    table.add_row("cell id", Text(str(cell.cell_id), style="dim"))
    return table


class CellDetail(Static):
    """The selected cell's facts."""

    def show(self, grid: GridView | None, cell: CellView | None) -> None:
        shown = (None if grid is None else (grid.key, grid.epochs), cell)
        if shown == getattr(self, "_shown", False):
            return
        self._shown = shown
        content = (Text("No cell selected.", style="dim") if grid is None or cell is None
                   else detail_table(grid, cell))
        self.update(content, layout=False)  # a fixed-size panel
