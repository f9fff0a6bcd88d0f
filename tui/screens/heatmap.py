"""``h``: the grid of one (model, dataset) as a heatmap, the cell under the cursor, and
its per-epoch curves."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.timer import Timer

from tui.screens.base import DashboardScreen
from tui.view import ViewState
from tui.widgets.cell_detail import CellDetail
from tui.widgets.curve_chart import CurveChart
from tui.widgets.heatmap import HeatmapGrid


class HeatmapScreen(DashboardScreen):
    """Heatmap, detail panel, curves."""

    TITLE_TEXT = "Heatmap"
    AUTO_FOCUS = "#heatmap-grid"

    def compose_body(self) -> ComposeResult:
        with Vertical(id="heatmap-body", classes="body"):
            yield HeatmapGrid(id="heatmap-grid")
            with Horizontal(id="heatmap-lower"):
                yield CellDetail(id="cell-detail")
                yield CurveChart(id="curve-chart")

    CHART_DELAY = 0.08  # seconds: a held arrow key redraws the chart once it stops

    _chart_timer: Timer | None = None

    def show(self, view: ViewState) -> None:
        grid = view.grid
        heatmap = self.query_one(HeatmapGrid)
        heatmap.show(grid, view.metric, view.metric_title)
        self._show_cell()
        self._show_chart()

    def _show_cell(self) -> None:
        heatmap = self.query_one(HeatmapGrid)
        grid, cell = heatmap.grid, heatmap.selected
        snapshot = self.app.view.snapshot
        seeds = ()
        if grid is not None and cell is not None and grid.several_seeds and snapshot:
            seeds = snapshot.seed_cells(grid.group, cell.batch_size, cell.learning_rate)
        self.query_one(CellDetail).show(grid, cell, self.app.view.metric, seeds)

    def _show_chart(self) -> None:
        cell = self.query_one(HeatmapGrid).selected
        snapshot = self.app.view.snapshot
        curve = snapshot.curves.get(cell.cell_id) if cell is not None and snapshot else None
        self.query_one(CurveChart).show(cell, curve)

    def on_heatmap_grid_cell_selected(self, message: HeatmapGrid.CellSelected) -> None:
        self._show_cell()
        # Plotting costs tens of milliseconds: wait until the cursor rests.
        if self._chart_timer is not None:
            self._chart_timer.stop()
        self._chart_timer = self.set_timer(self.CHART_DELAY, self._show_chart)
