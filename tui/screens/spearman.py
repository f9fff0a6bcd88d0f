"""``s``: Tables 1-3 of the paper for the selected grid, whether the paper's direction
holds, and the premise warning (under-trained cells) when it fires."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Static

from tui.screens.base import DashboardScreen
from tui.view import ViewState, grid_title

if TYPE_CHECKING:
    from tui.data import SpearmanRow, SpearmanView

VERDICT_STYLES = {"holds": "bold green", "mostly holds": "green", "not significant": "yellow",
                  "weak": "yellow", "mixed": "bold yellow", "partly reversed": "red",
                  "reversed": "bold red", "untested": "dim", "cannot reach alpha": "dim"}
VARIABLE_WORDS = {"batch_size": "batch size within each LR",
                  "learning_rate": "learning rate within each BS",
                  "ratio": "BS/LR over the whole grid"}
SHORT_REASONS = {"variable is constant": "constant", "metric is constant": "metric const."}


def _short_reason(reason: str) -> str:
    if reason.startswith("fewer than"):
        return "n<" + reason.split()[2]
    if reason.startswith("one seed"):
        return "1 seed"
    if reason.startswith("two seeds"):
        return "2 seeds"
    if reason.startswith("no coefficient"):
        return ""
    return SHORT_REASONS.get(reason, reason[:12])


def _r(value: float) -> str:
    """A signed correlation without its leading zero, as statistics prints it: -.91,
    +.54, -1.00."""
    text = f"{value:+.2f}"
    return text.replace("0.", ".", 1) if abs(value) < 1 else text


def interval_text(interval: tuple[float, float] | None, reason: str | None) -> Text:
    """``[-.91,-.72]``, or the reason it is missing, short and dim (``n<8``)."""
    if interval is None:
        return Text(_short_reason(reason or ""), style="dim")
    return Text(f"[{_r(interval[0])},{_r(interval[1])}]")


def adjusted_text(row: SpearmanRow) -> Text:
    """Whether the test survives Holm and Benjamini-Hochberg over its table: a check
    mark (green) or a dot, one each."""
    if row.scc is None:
        return Text("")
    text = Text()
    for kept in (row.holm, row.bh):
        text.append("✓" if kept else "·", style="green" if kept else "dim")
        text.append(" ")
    text.rstrip()
    return text


def value_cells(row: SpearmanRow, seeds: int = 1, cells: bool = True
                ) -> tuple[Text, ...]:
    """SCC, its interval over seeds (``cells``: the table has the column; three or
    more ``seeds``) or the range of the two seeds' coefficients (two seeds), the
    permutation p of the verdict, survival of Holm / BH, and n of one test: significant
    ones bold green (the paper's direction) or bold red (against it); untested ones dim
    with the reason; a test that cannot reach alpha has its p dim."""
    n = Text(f"{row.n}/{row.n_total}")
    if row.n_diverged:
        n.append(f" ✕{row.n_diverged}", style="red")
    cis = ((interval_text(row.ci, row.ci_reason),) if cells and seeds >= 3 else ()) + (
        (interval_text(row.seed_range, "no range"),) if seeds == 2 else ())
    if row.scc is None:
        return (Text("—", style="dim"), *cis, Text(_short_reason(row.reason or ""),
                                                   style="dim"), Text(""), n)
    style = ""
    if row.significant:
        style = "bold green" if row.agrees else "bold red"
    p = Text(row.p_text, style=style or ("dim" if row.cannot_reach else ""))
    if row.cannot_reach:
        p.append("*", style="dim")
    return (Text(f"{row.scc:+.2f}", style=style), *cis, p, adjusted_text(row), n)


TABLE_TITLES = {1: "Table 1 · batch size, per LR",
                2: "Table 2 · learning rate, per BS",
                3: "Table 3 · BS/LR, whole grid"}


def _table(columns: tuple[str, ...]) -> Table:
    out = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), header_style="bold")
    for name in columns:
        out.add_column(name, justify="right", no_wrap=True)
    return out


def _too_small(rows: list[SpearmanRow]) -> bool:
    """No coefficient of these rows can have an interval: every tested group has too
    few cells (a 4 x 4 grid's Tables 1 and 2)."""
    tested = [r for r in rows if r.scc is not None]
    return bool(tested) and all(r.ci is None and (r.ci_reason or "").startswith("fewer than")
                                for r in tested)


def _cells_column(rows: list[SpearmanRow]) -> bool:
    """Whether a table shows the interval column: not when no row has a coefficient
    yet, nor when every group has too few cells for one."""
    return any(r.scc is not None for r in rows) and not _too_small(rows)


def _title(view: SpearmanView, table: int, rows: list[SpearmanRow]) -> Text:
    title = Text(TABLE_TITLES[table], style="bold")
    if _too_small(rows) and view.seeds >= 3:
        title.append(f" · CI: n<{view.min_cells}", style="dim")
    return title


def value_columns(view: SpearmanView, cells: bool = True) -> tuple[str, ...]:
    level = f"{view.confidence:.0%}"
    seeds = ((f"{level} CI",) if cells and view.seeds >= 3 else ()) + (
        ("2 seeds",) if view.seeds == 2 else ())
    return ("SCC", *seeds, "p perm.", "H B", "n/all")


def group_table(view: SpearmanView, table: int) -> Group:
    """Table 1 (rows: learning rates) or Table 2 (rows: batch sizes) with its title."""
    rows = [row for row in view.rows if row.table == table]
    cells = _cells_column(rows)
    out = _table(({1: "LR", 2: "BS"}[table], *value_columns(view, cells)))
    for row in rows:
        value = f"{row.group_value:g}" if table == 1 else f"{row.group_value}"
        out.add_row(value, *value_cells(row, view.seeds, cells))
    return Group(_title(view, table, rows), out)


def ratio_table(view: SpearmanView) -> Group:
    rows = [row for row in view.rows if row.table == 3]
    cells = _cells_column(rows)
    out = _table(value_columns(view, cells))
    for row in rows:
        out.add_row(*value_cells(row, view.seeds, cells))
    return Group(_title(view, 3, rows), out)


SIDE_MIN = 44  # the verdicts wrap below this width


def layout_for(width: int, tables: tuple[int, int, int]) -> str:
    """The screen's layout class for ``width`` columns of body and the widths Tables 1,
    2 and 3 need: all three side by side (``-wide``), Tables 1 and 2 side by side with
    Table 3 and the verdicts below (``-narrow``), or one below the other, Table 3 first
    (``-stacked``)."""
    t1, t2, t3 = tables
    if t1 + t2 + max(t3, SIDE_MIN) + 4 <= width:
        return "-wide"
    if t1 + t2 + 2 <= width:
        return "-narrow"
    return "-stacked"


def directions(view: SpearmanView) -> Text:
    """Per table: the verdict of ``kerasgen.analysis.direction_summary`` and its counts."""
    text = Text()
    text.append("Does the paper's direction hold?", style="bold")
    ratio = next((r for r in view.rows if r.table == 3), None)
    for d in view.directions:
        text.append(f"\nT{d.table} {VARIABLE_WORDS.get(d.variable, d.variable)} → ")
        text.append(d.verdict, style=VERDICT_STYLES.get(d.verdict, ""))
        if not d.tested:
            counts = ("no group has 3 finished cells yet" if d.table != 3
                      else "fewer than 3 finished cells yet")
        elif d.table == 3 and ratio is not None and ratio.scc is not None:
            counts = f"SCC {ratio.scc:+.2f}, p perm. {ratio.p_text} (n={ratio.n})"
        else:
            counts = (f"{d.tested}/{d.groups} tested: {d.significant_expected} sig. as "
                      f"predicted, {d.significant_against} against")
        text.append(f"\n   {counts}", style="dim")
        rows = [r for r in view.rows if r.table == d.table and r.significant]
        if d.table != 3 and rows:
            text.append(f"\n   of {len(rows)} sig.: {sum(r.holm for r in rows)} survive Holm, "
                        f"{sum(r.bh for r in rows)} BH (over the grid's table)", style="dim")
    return text


def premise(view: SpearmanView) -> Text:
    if not view.premise_warnings:
        return Text("✓ premise check: no warning (finished cells at ≥99% clean train "
                    "accuracy, their fit does not worsen with BS/LR)", style="green")
    text = Text()
    text.append("⚠ Premise warning\n", style="bold yellow")
    for warning in view.premise_warnings:
        text.append(f"• {warning}\n", style="yellow")
    text.rstrip()
    return text


def summary_line(view: SpearmanView) -> Text:
    text = Text()
    text.append(f"{view.finished} of {view.total} cells finished", style="bold")
    text.append(f" · α = {view.alpha:g} (p perm.: cells permuted; T3 rows x columns) · ")
    text.append("green", style="bold green")
    text.append(" significant as the paper predicts · ")
    text.append("red", style="bold red")
    text.append(" against it")
    if view.seeds >= 3:
        text.append(f"\n{view.confidence:.0%} CI: jackknife over {view.seeds} seeds "
                    f"(n ≥ {view.min_cells})")
    elif view.seeds == 2:
        text.append("\n2 seeds: the range of their own coefficients (no CI below 3 seeds)")
    else:
        text.append("\n1 seed: no CI (seed noise unmeasured)")
    text.append(" · * cannot reach α")
    text.append("\nH B ")
    text.append("✓", style="green")
    text.append(": still significant after Holm / Benjamini-Hochberg over its family")
    if view.small_n:
        text.append(f"\nCaution: asymptotic p-values are unreliable below n = "
                    f"{view.small_reliable_n} (here n = {', '.join(map(str, view.small_n))}); "
                    "exact ones: kerasgen report --pvalue exact", style="yellow")
    return text


class SpearmanScreen(DashboardScreen):
    """Tables 1-3 side by side, Table 3 and the verdicts on the right; on a narrower
    terminal Table 3 and the verdicts go below Tables 1 and 2, and where Tables 1 and 2
    do not fit side by side every table stacks, Table 3 and the verdicts first. The
    body scrolls (it has the focus: arrows, page up/down)."""

    TITLE_TEXT = "Spearman"
    # The layout follows the tables' widths (they grow with an interval over seeds and
    # with long learning rates), not fixed breakpoints: see layout_for.
    HORIZONTAL_BREAKPOINTS: list = []
    LAYOUTS = ("-wide", "-narrow", "-stacked")
    _needed: tuple[int, int, int] = (0, 0, 0)

    def on_mount(self) -> None:
        self.set_class(True, "-stacked")

    def on_resize(self) -> None:
        self.arrange_tables()

    def arrange_tables(self) -> None:
        """Set the layout class for the screen's width and the tables on it."""
        chosen = layout_for(self.size.width - 4, self._needed)  # padding, scrollbar
        for name in self.LAYOUTS:
            self.set_class(name == chosen, name)

    def _measure(self, *renderables) -> tuple[int, ...]:
        from rich.measure import Measurement

        console = self.app.console
        return tuple(Measurement.get(console, console.options, r).maximum
                     for r in renderables)

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="spearman-body", classes="body"):
            yield Static(id="spearman-summary")
            # Stacked (a narrow terminal), Table 3 and the verdicts come first: the
            # whole grid's test is the headline; otherwise they sit beside or below.
            yield Static(id="spearman-side-top")
            with Horizontal(id="spearman-tables"):
                yield Static(id="spearman-table-1")
                yield Static(id="spearman-table-2")
                yield Static(id="spearman-side")
            yield Static(id="spearman-premise")

    def show(self, view: ViewState) -> None:
        spearman = view.spearman
        shown = (spearman, None if spearman else (view.grid_key, view.metric))
        if shown == getattr(self, "_shown", None):
            return  # the same tables (they change only when a cell finishes)
        self._shown = shown
        summary = self.query_one("#spearman-summary", Static)
        parts = [self.query_one(f"#{name}", Static) for name in
                 ("spearman-table-1", "spearman-table-2", "spearman-side", "spearman-premise",
                  "spearman-side-top")]
        if spearman is None:
            title = grid_title(view.snapshot, view.grid_key)
            summary.update(Text(f"Computing Tables 1–3 for {title} "
                                f"({view.metric_title})…", style="dim"))
            for part in parts:
                part.update("")
            return
        if spearman.error is not None:
            summary.update(Text(f"The Spearman analysis failed on this grid: {spearman.error}",
                                style="bold red"))
            for part in parts:
                part.update("")
            return
        summary.update(summary_line(spearman))
        tables = group_table(spearman, 1), group_table(spearman, 2), ratio_table(spearman)
        self._needed = self._measure(*tables)  # type: ignore[assignment]
        self.arrange_tables()
        parts[0].update(tables[0])
        parts[1].update(tables[1])
        parts[2].update(Group(tables[2], directions(spearman)))
        parts[3].update(premise(spearman))
        parts[4].update(Group(tables[2], directions(spearman)))
