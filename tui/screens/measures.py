"""``g``: the generalization measures of the selected grid, ranked as Jiang et al.
(2020) rank them (Ψ, each axis's ψ, Kendall's τ with the gap, what the ratio adds
beyond each), updated as ``kerasgen measures`` writes them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from tui.screens.base import DashboardScreen
from tui.view import ViewState, grid_title

if TYPE_CHECKING:
    from tui.measures_data import MeasureRow, MeasuresView


def _r(value: float | None) -> Text:
    """A signed coefficient without its leading zero (-.91, +.54, +1.00); dim — if none."""
    if value is None:
        return Text("—", style="dim")
    text = f"{value:+.2f}"
    return Text(text.replace("0.", ".", 1) if abs(value) < 1 else text)


def _range(pair: tuple[float, float] | None) -> Text:
    if pair is None:
        return Text("—", style="dim")
    return Text("[") + _r(pair[0]) + Text(",") + _r(pair[1]) + Text("]")


def _psi(row: MeasureRow) -> Text:
    text = _r(row.psi)
    if row.psi is not None:
        strength = abs(row.psi)
        text.stylize("bold green" if strength >= 0.5 and row.agrees else
                     "bold red" if strength >= 0.5 and row.agrees is False else "")
    return text


def _partial(row: MeasureRow) -> Text:
    if row.partial is None:
        return Text("—", style="dim")
    text = _r(row.partial)
    if row.partial_p is not None:
        text.append(f" p{row.partial_p:.1g}", style="dim" if row.partial_p >= 0.05 else "yellow")
    return text


def ranking_table(view: MeasuresView) -> Table:
    out = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), header_style="bold")
    for name, justify in (("#", "right"), ("measure", "left"), ("Ψ", "right"),
                          ("ψ BS", "right"), ("ψ LR", "right"), ("ψ seed", "right"),
                          ("τ gap", "right"), ("τ CI / per seed", "right"),
                          ("ratio|m", "right"), ("CMI", "right")):
        out.add_column(name, justify=justify, no_wrap=True)
    for row in view.rows:
        label = Text(row.label[:22])
        if row.agrees is False:
            label.append(" ↯", style="red")
        if row.family == "reference":
            label.stylize("italic")
        out.add_row(Text(str(row.rank) if row.rank is not None else "—",
                         style="" if row.rank is not None else "dim"),
                    label, _psi(row), _r(row.psi_batch_size), _r(row.psi_learning_rate),
                    _r(row.psi_seed), _r(row.tau),
                    _range(row.tau_interval or row.seed_range), _partial(row),
                    Text("—", style="dim") if row.cmi is None else Text(f"{row.cmi:.2f}"))
    return out


def summary(view: MeasuresView) -> Text:
    text = Text()
    text.append(f"{view.runs_measured} of {view.runs_finished} finished runs measured "
                f"({view.stored} values)", style="bold")
    if not view.stored:
        text.append(" · none yet: kerasgen measures DB computes them (ranked meanwhile: the "
                    "ratio and what the epochs give)", style="yellow")
    text.append("\n")
    text.append(view.verdict)
    text.append("\nΨ: Jiang et al.'s granulated τ over batch size, learning rate and seed; τ "
                "gap over cells (seeds averaged), its jackknife interval over seeds (3+) or "
                "the τ of each seed; ratio|m: partial rank correlation of the ratio with the "
                "gap given the measure; CMI: conditional mutual information criterion; ",
                style="dim")
    text.append("↯", style="red")
    text.append(" against the measure's intended sign", style="dim")
    return text


class MeasuresScreen(DashboardScreen):
    """The ranking table of the selected grid, best first; the body scrolls."""

    TITLE_TEXT = "Measures"

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="measures-body", classes="body"):
            yield Static(id="measures-summary")
            yield Static(id="measures-table")

    def show(self, view: ViewState) -> None:
        measures = view.measures
        shown = (measures, None if measures else view.grid_key)
        if shown == getattr(self, "_shown", None):
            return
        self._shown = shown
        top = self.query_one("#measures-summary", Static)
        table = self.query_one("#measures-table", Static)
        if measures is None:
            top.update(Text(f"Ranking the measures of {grid_title(view.snapshot, view.grid_key)}…",
                            style="dim"))
            table.update("")
            return
        if measures.error is not None:
            top.update(Text(f"The ranking failed on this grid: {measures.error}",
                            style="bold red"))
            table.update("")
            return
        top.update(summary(measures))
        title = Text(f"{grid_title(view.snapshot, view.grid_key)} · ranked by |Ψ|",
                     style="bold")
        table.update(Group(title, ranking_table(measures)))
