"""The batch size x learning rate heatmap: one coloured cell per trained model, a cursor
moved with the arrow keys, and a legend of the colour scale and the marks."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.events import Click
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

from kerasgen.vocabulary import DIVERGED, DONE, FAILED, PENDING, RUNNING

if TYPE_CHECKING:
    from tui.data import CellView, GridView

# Viridis, sampled: dark (low) to bright (high); readable with black or white text.
RAMP = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e",
        "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725")
DIVERGED_BG = "#b4232a"
FAILED_BG = "#8e3a9e"
MARKS = {RUNNING: "▶", DIVERGED: "✕", FAILED: "!"}
ROW_LABEL_MIN = 5


def ramp_colour(fraction: float) -> str:
    """The colour at ``fraction`` (0..1) of the scale, as ``#rrggbb``."""
    fraction = min(max(fraction, 0.0), 1.0) * (len(RAMP) - 1)
    low = int(math.floor(fraction))
    high = min(low + 1, len(RAMP) - 1)
    t = fraction - low
    a, b = _rgb(RAMP[low]), _rgb(RAMP[high])
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b))


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def text_colour(background: str) -> str:
    r, g, b = _rgb(background)
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def format_value(value: float | None, digits: int = 3) -> str:
    """``digits`` decimals without the leading zero, ``digits + 2`` characters at most:
    ``.983``, ``1.000``, ``-.053`` (three: 13 of 16 ResNet-8 cells of the demo read
    ``.98`` with two); ``.93``, ``1.00``, ``-.05``, ``-1.0`` with two; ``–`` when
    missing."""
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:.{digits}f}"
    if text.startswith("0."):
        text = text[1:]
    elif text.startswith("-0."):
        text = "-" + text[2:]
    return text if len(text) <= digits + 2 else f"{value:.{digits - 1}f}"[:digits + 2]


def format_rate(value: float, width: int = 4) -> str:
    """A learning rate in ``width`` characters: ``0.05``, ``.005``, ``.013``, ``1e-4``."""
    candidates = [f"{value:g}", f"{value:g}".replace("0.", ".", 1)]
    if 0 < value < 1:
        rounded = f"{value:.{width - 1}f}".lstrip("0")
        if float(rounded) and abs(float(rounded) - value) <= 0.05 * value:
            candidates.append(rounded)
    candidates.append(f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e"))
    for text in candidates:
        if len(text) <= width:
            return text
    return candidates[-1][:width]


def value_range(grid: GridView, metric: str) -> tuple[float, float] | None:
    values = [v for c in grid.cells.values()
              if c.status in (DONE, DIVERGED, RUNNING)
              and (v := c.value(metric)) is not None]
    if not values:
        return None
    low, high = min(values), max(values)
    return (low, high) if high > low else (low - 0.005, high + 0.005)


def cell_text(cell: CellView | None, metric: str, scale: tuple[float, float] | None,
              width: int) -> Text:
    """One cell of the heatmap: a mark (▶ running, ✕ diverged, ! failed) and the value,
    on its colour; pending cells a dim dot."""
    if cell is None:
        return Text(" " * width)
    value = cell.value(metric)
    mark = MARKS.get(cell.status, " ")
    if cell.status == PENDING:
        return Text("·".center(width), style="dim")
    if cell.status == FAILED:
        return Text(f"{mark}err".rjust(width), style=f"bold #ffffff on {FAILED_BG}")
    # Three digits in a 6-column cell (a space apart), two in a narrower one.
    body = format_value(value, 3 if width >= 6 else 2)
    # The mark hugs its value (" ▶.76", "✕1.00") so it never reads as the neighbour's.
    text = f"{mark.strip()}{body}".rjust(width)[-width:] if mark.strip() else body.rjust(width)
    if cell.status == DIVERGED:
        return Text(text, style=f"bold #ffffff on {DIVERGED_BG}")
    if value is None or scale is None:
        return Text(text, style="bold")
    bg = ramp_colour((value - scale[0]) / (scale[1] - scale[0]))
    return Text(text, style=f"{'bold ' if cell.status == RUNNING else ''}{text_colour(bg)} on {bg}")


def legend(scale: tuple[float, float] | None, metric_label: str, blocks: int = 20) -> Text:
    text = Text()
    if scale is None:
        text.append("no values yet", style="dim")
    else:
        text.append(f"{format_value(scale[0])} ")  # three digits: the cells' own
        for i in range(blocks):
            text.append(" ", style=Style(bgcolor=ramp_colour(i / (blocks - 1))))
        text.append(f" {format_value(scale[1])}")
    text.append(f"  {metric_label}   ")
    text.append(" ▶ ", style="bold")
    text.append("running ")
    text.append(" ✕ ", style=f"bold #ffffff on {DIVERGED_BG}")
    text.append(" diverged ")
    text.append(" · ", style="dim")
    text.append("pending ")
    text.append(" ! ", style=f"bold #ffffff on {FAILED_BG}")
    text.append(" failed")
    return text


class HeatmapGrid(Widget, can_focus=True):
    """A batch size (rows) x learning rate (columns) grid of one metric."""

    BINDINGS = [
        Binding("up", "move(-1, 0)", "Move", key_display="↑↓←→", show=False),  # in the help
        Binding("down", "move(1, 0)", "Down", show=False),
        Binding("left", "move(0, -1)", "Left", show=False),
        Binding("right", "move(0, 1)", "Right", show=False),
        Binding("home", "jump(0)", "First", show=False),
        Binding("end", "jump(-1)", "Last", show=False),
    ]

    cursor: reactive[tuple[int, int]] = reactive((0, 0), always_update=True)

    class CellSelected(Message):
        """The cursor is on a cell (``cell`` None: the grid is empty)."""

        def __init__(self, grid: GridView | None, cell: CellView | None) -> None:
            super().__init__()
            self.grid = grid
            self.cell = cell

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.grid: GridView | None = None
        self.metric = "test_accuracy"
        self.metric_label = ""
        self._strips: dict[tuple, Strip] = {}
        self._scale_key: tuple | None = None
        self._scale_value: tuple[float, float] | None = None

    # -- input
    def show(self, grid: GridView | None, metric: str, metric_label: str) -> None:
        """Draw ``grid`` (keeping the cursor where it was, clamped)."""
        changed = grid is not self.grid or metric != self.metric
        self.grid, self.metric, self.metric_label = grid, metric, metric_label
        if changed:
            self._strips.clear()
            self.cursor = self._clamp(*self.cursor)
            self.refresh(layout=True)

    @property
    def selected(self) -> CellView | None:
        return self.grid.cell_at(*self.cursor) if self.grid is not None else None

    def _clamp(self, row: int, col: int) -> tuple[int, int]:
        if self.grid is None:
            return (0, 0)
        return (min(max(row, 0), max(len(self.grid.batch_sizes) - 1, 0)),
                min(max(col, 0), max(len(self.grid.learning_rates) - 1, 0)))

    def action_move(self, rows: int, cols: int) -> None:
        self.cursor = self._clamp(self.cursor[0] + rows, self.cursor[1] + cols)

    def action_jump(self, where: int) -> None:
        edge = 0 if where == 0 else 10**6
        self.cursor = self._clamp(edge, edge)

    def watch_cursor(self) -> None:
        self.refresh()
        self.post_message(self.CellSelected(self.grid, self.selected))

    def on_click(self, event: Click) -> None:
        if self.grid is None:
            return
        offset = event.get_content_offset(self)
        if offset is None:
            return
        label, width = self._geometry()
        row, col = offset.y - self.HEADER_LINES, (offset.x - label) // width
        if 0 <= row < len(self.grid.batch_sizes) and 0 <= col < len(self.grid.learning_rates) \
                and offset.x >= label:
            self.cursor = (row, col)

    # -- drawing
    # Rows are drawn line by line and cached: a cursor move redraws the header and two
    # rows, not 400 cells (a 20 x 20 grid is ~10 ms to draw whole on a slow machine).
    HEADER_LINES = 2

    def _geometry(self) -> tuple[int, int]:
        """(row label width, cell width): 6-character cells (three digits) when they fit,
        else 5, else 4 (two digits)."""
        assert self.grid is not None
        label = max(ROW_LABEL_MIN, max((len(str(b)) for b in self.grid.batch_sizes),
                                       default=0) + 1)
        columns = max(len(self.grid.learning_rates), 1)
        for width in (6, 5):
            if label + width * columns <= max(self.size.width, 1) or not self.size.width:
                return label, width
        return label, 4

    def get_content_height(self, container, viewport, width: int) -> int:
        if self.grid is None or not self.grid.cells:
            return 1
        return self.HEADER_LINES + len(self.grid.batch_sizes) + 2

    def render_lines_text(self) -> list[Text]:
        """Every line as rich Text (tests and the plain-text view read this)."""
        return [self._line_text(y) for y in range(self.get_content_height(None, None, 0))]

    def render(self) -> Text:
        return Text("\n").join(self.render_lines_text())

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if self.grid is None or y >= self.get_content_height(None, None, width):
            return Strip.blank(width, self.rich_style)
        key = self._line_key(y)
        strip = self._strips.get(key) if key is not None else None
        if strip is None:
            text = self._line_text(y)
            text.stylize_before(self.rich_style)
            segments = list(text.render(self.app.console, end=""))
            strip = Strip(segments).crop_extend(0, width, self.rich_style)
            if key is not None:
                if len(self._strips) > 4096:
                    self._strips.clear()
                self._strips[key] = strip
        return strip

    def _line_key(self, y: int) -> tuple | None:
        """What line ``y`` depends on; None for lines not worth caching."""
        grid, (row_at, col_at) = self.grid, self.cursor
        assert grid is not None
        row = y - self.HEADER_LINES
        if y == 1:
            return (id(grid), "header", col_at, self.size.width)
        if 0 <= row < len(grid.batch_sizes):
            return (id(grid), self.metric, self._scale, row, col_at if row == row_at else -1,
                    self.size.width)
        return None

    @property
    def _scale(self) -> tuple[float, float] | None:
        key = (id(self.grid), self.metric)
        if self._scale_key != key:
            self._scale_key = key
            self._scale_value = value_range(self.grid, self.metric) if self.grid else None
        return self._scale_value

    def _line_text(self, y: int) -> Text:
        grid = self.grid
        if grid is None or not grid.cells:
            return Text("No cells in this grid.", style="dim")
        label, width = self._geometry()
        row_at, col_at = self.cursor
        out = Text(no_wrap=True, overflow="crop")
        row = y - self.HEADER_LINES
        if y == 0:
            out.append(f"{'BS ↓':>{label - 1}} ", style="bold")
            out.append("learning rate →", style="bold")
        elif y == 1:
            out.append(" " * label)
            for j, lr in enumerate(grid.learning_rates):
                out.append(f"{format_rate(lr, width - 1):>{width}}",
                           style="reverse bold" if j == col_at else "bold")
        elif 0 <= row < len(grid.batch_sizes):
            bs = grid.batch_sizes[row]
            out.append(f"{bs:>{label - 1}} ", style="reverse bold" if row == row_at else "bold")
            for j, lr in enumerate(grid.learning_rates):
                piece = cell_text(grid.cells.get((bs, lr)), self.metric, self._scale, width)
                if (row, j) == (row_at, col_at):
                    piece.stylize("reverse bold underline")
                out.append_text(piece)
        elif row == len(grid.batch_sizes) + 1:
            out.append_text(legend(self._scale, self.metric_label))
        return out
