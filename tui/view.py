"""What the user is looking at: the snapshot, the grid and the metric. Light to import
(no pandas, no Textual): the app and every screen share it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from kerasgen.vocabulary import METRICS as VOCABULARY_METRICS
from kerasgen.vocabulary import metric_label, short_label

if TYPE_CHECKING:
    from tui.data import GridKey, GridView, Snapshot, SpearmanView
    from tui.measures_data import MeasuresView

METRICS: tuple[str, ...] = VOCABULARY_METRICS
"""What the heatmap and the Spearman screen show (the report's metrics); ``m`` cycles."""


def metric_title(metric: str, best_metric: str | None = "test_accuracy") -> str:
    """The metric's label on screen (short enough for a banner)."""
    return metric_label(metric, best_metric).replace(" - ", " − ")


@dataclass(frozen=True)
class ViewState:
    """The app's state as the screens render it; replaced, never mutated."""

    snapshot: Snapshot | None = None
    grid_key: GridKey | None = None
    metric: str = METRICS[0]

    @property
    def grid(self) -> GridView | None:
        return self.snapshot.grid(self.grid_key) if self.snapshot is not None else None

    @property
    def spearman(self) -> SpearmanView | None:
        if self.snapshot is None or self.grid_key is None:
            return None
        return self.snapshot.spearman_for(self.grid_key[:3], self.metric)

    @property
    def measures(self) -> MeasuresView | None:
        """The ranking of the generalization measures of the selected grid's group."""
        if self.snapshot is None or self.grid_key is None:
            return None
        return self.snapshot.measures.get(self.grid_key[:3])

    @property
    def best_metric(self) -> str | None:
        grid = self.grid
        return grid.best_metric if grid is not None else "test_accuracy"

    @property
    def metric_title(self) -> str:
        """The metric's full label (it names the kept epoch's rule)."""
        return metric_title(self.metric, self.best_metric)

    @property
    def metric_short(self) -> str:
        return short_label(self.metric, self.best_metric)

    def with_(self, **changes) -> "ViewState":
        return replace(self, **changes)


def next_metric(metric: str) -> str:
    return METRICS[(METRICS.index(metric) + 1) % len(METRICS)] if metric in METRICS else METRICS[0]


def grid_title(snapshot: Snapshot | None, key: GridKey | None, mean: bool = False) -> str:
    """``ResNet-110 · CIFAR-10`` (+ ``· seed 1`` when the study has several seeds, or
    ``· mean of 2 seeds`` with ``mean``: what a screen that uses the means shows,
    + ``· study s`` when the store holds several studies)."""
    if snapshot is None or key is None:
        return ""
    study, model, dataset, seed = key
    label = snapshot.labels.get
    text = f"{label(model, model)} · {label(dataset, dataset)}"
    grid = snapshot.grid(key)
    if grid is not None and grid.several_seeds:
        if mean:
            count = sum(1 for g in snapshot.grids if g.group == grid.group)
            text += f" · mean of {count} seeds"
        else:
            text += f" · seed {seed}"
    return f"{text} · study {study}" if len(snapshot.studies) > 1 else text
