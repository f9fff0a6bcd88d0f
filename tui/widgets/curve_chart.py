"""Per-epoch accuracies of one cell (clean train, test, Keras's running train), drawn
with textual-plotext."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from textual_plotext import PlotextPlot

if TYPE_CHECKING:
    from tui.data import CellView, Curve


def _finite(xs, ys) -> tuple[list[float], list[float]]:
    pairs = [(float(x), float(y)) for x, y in zip(xs, ys) if math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def epoch_ticks(last: int, count: int = 6) -> list[int]:
    """Whole epochs, evenly spread from 0 to ``last``."""
    if last <= 0:
        return [0]
    step = max(1, -(-last // (count - 1)))
    for nice in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        if nice >= step:
            step = nice
            break
    return list(range(0, last + 1, step))


class CurveChart(PlotextPlot):
    """Accuracy against epoch: the clean training accuracy (a fixed training subset
    measured as the test set), the test accuracy and Keras's running training accuracy;
    a vertical line marks the kept epoch."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: tuple | None = None

    def show(self, cell: CellView | None, curve: Curve | None) -> None:
        shown = (None if cell is None else (cell.cell_id, cell.kept_epoch, cell.status),
                 id(curve), None if curve is None else len(curve))
        if shown == self._shown:
            return
        self._shown = shown
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.xlabel("epoch")
        if cell is None:
            plt.title("no cell selected")
        elif curve is None or not len(curve):
            plt.title(f"BS {cell.batch_size} · LR {cell.learning_rate:g}: no epochs recorded yet")
        else:
            plt.title(f"BS {cell.batch_size} · LR {cell.learning_rate:g}: accuracy per epoch")
            # The legend is the x label, below the plot: plotext draws its own legend
            # over the curves' top-left corner.
            plt.xlabel("epoch · test: orange · clean train: cyan · running train: gray")
            for values, colour in ((curve.train_accuracy, "gray"),
                                   (curve.train_eval_accuracy, "cyan"),
                                   (curve.test_accuracy, "orange")):
                x, y = _finite(curve.epoch, values)
                if x:
                    plt.plot(x, y, color=colour, marker="braille")
            if cell.kept_epoch is not None:
                plt.vline(cell.kept_epoch, color="gray")
            last = int(max(curve.epoch)) if len(curve) else 0
            plt.xticks(epoch_ticks(last))
        self.refresh()
