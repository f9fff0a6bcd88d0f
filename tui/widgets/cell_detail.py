"""What the heatmap's cursor is on: coordinates, status, the kept epoch and its numbers,
and with several seeds the metric on screen in each seed."""

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


METRIC_WORDS = {"test_accuracy": "test acc", "final_test_accuracy": "final test acc",
                "gap": "gap", "loss_gap": "loss gap"}


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:+.4f}" if metric in ("gap", "loss_gap") else f"{value:.4f}"


def seed_rows(table: Table, metric: str,
              seeds: tuple[tuple[int, CellView | None], ...]) -> None:
    """The cell's ``metric`` in every seed (``–`` where that run has not finished), and
    their mean ± SD over the finished seeds."""
    finished = (DONE, DIVERGED)
    values = [(seed, c.value(metric) if c is not None and c.status in finished else None)
              for seed, c in seeds]
    text = Text()
    for i, (seed, value) in enumerate(values):
        text.append(("  " if i else "") + f"{seed}: ", style="dim")
        text.append(_value(metric, value))
    table.add_row(f"{METRIC_WORDS.get(metric, metric)} by seed", text)
    got = [v for _, v in values if v is not None]
    if len(got) >= 2:
        mean = sum(got) / len(got)
        sd = (sum((v - mean) ** 2 for v in got) / (len(got) - 1)) ** 0.5
        table.add_row("mean ± SD", f"{_value(metric, mean)} ± {sd:.4f} (n={len(got)})")
    else:
        table.add_row("mean ± SD", Text(f"needs two finished seeds ({len(got)} so far)",
                                        style="dim"))


def detail_table(grid: GridView, cell: CellView, metric: str = "test_accuracy",
                 seeds: tuple[tuple[int, CellView | None], ...] = ()) -> Table:
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
    if len(seeds) >= 2:
        seed_rows(table, metric, seeds)
    if cell.worker and cell.status == RUNNING:
        table.add_row("worker", Text(cell.worker))  # a name: never read as markup
    if cell.error:
        table.add_row("error", Text(cell.error.splitlines()[-1][:200], style="magenta"))
    table.add_row("cell id", Text(str(cell.cell_id), style="dim"))
    return table


class CellDetail(Static):
    """The selected cell's facts (with several seeds: the metric on screen in each seed,
    and their mean ± SD)."""

    def show(self, grid: GridView | None, cell: CellView | None, metric: str = "test_accuracy",
             seeds: tuple[tuple[int, CellView | None], ...] = ()) -> None:
        shown = (None if grid is None else (grid.key, grid.epochs), cell, metric, seeds)
        if shown == getattr(self, "_shown", False):
            return
        self._shown = shown
        content = (Text("No cell selected.", style="dim") if grid is None or cell is None
                   else detail_table(grid, cell, metric, seeds))
        self.update(content, layout=False)  # a fixed-size panel
