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
                  "reversed": "bold red", "untested": "dim"}
VARIABLE_WORDS = {"batch_size": "batch size within each LR",
                  "learning_rate": "learning rate within each BS",
                  "ratio": "BS/LR over the whole grid"}
SHORT_REASONS = {"variable is constant": "constant", "metric is constant": "metric const."}


def _short_reason(reason: str) -> str:
    if reason.startswith("fewer than"):
        return "n<" + reason.split()[2]
    return SHORT_REASONS.get(reason, reason[:12])


def value_cells(row: SpearmanRow) -> tuple[Text, Text, Text]:
    """SCC, p and n of one test: significant ones bold green (the paper's direction) or
    bold red (against it); untested ones dim with the reason."""
    n = Text(f"{row.n}/{row.n_total}")
    if row.n_diverged:
        n.append(f" ✕{row.n_diverged}", style="red")
    if row.scc is None:
        return Text("—", style="dim"), Text(_short_reason(row.reason or ""), style="dim"), n
    style = ""
    if row.significant:
        style = "bold green" if row.agrees else "bold red"
    return Text(f"{row.scc:+.2f}", style=style), Text(row.p_text, style=style), n


TABLE_TITLES = {1: "Table 1 · batch size, per LR",
                2: "Table 2 · learning rate, per BS",
                3: "Table 3 · BS/LR, whole grid"}


def _table(columns: tuple[str, ...]) -> Table:
    out = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), header_style="bold")
    for name in columns:
        out.add_column(name, justify="right", no_wrap=True)
    return out


def group_table(view: SpearmanView, table: int) -> Group:
    """Table 1 (rows: learning rates) or Table 2 (rows: batch sizes) with its title."""
    out = _table(({1: "LR", 2: "BS"}[table], "SCC", "p", "n/all"))
    for row in view.rows:
        if row.table == table:
            value = f"{row.group_value:g}" if table == 1 else f"{row.group_value}"
            out.add_row(value, *value_cells(row))
    return Group(Text(TABLE_TITLES[table], style="bold"), out)


def ratio_table(view: SpearmanView) -> Group:
    out = _table(("SCC", "p", "n/all"))
    for row in view.rows:
        if row.table == 3:
            out.add_row(*value_cells(row))
    return Group(Text(TABLE_TITLES[3], style="bold"), out)


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
            counts = f"SCC {ratio.scc:+.2f}, p {ratio.p_text} (n={ratio.n})"
        else:
            counts = (f"{d.tested}/{d.groups} tested: {d.significant_expected} sig. as "
                      f"predicted, {d.significant_against} against")
        text.append(f"\n   {counts}", style="dim")
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
    text.append(f" · α = {view.alpha:g} (p: exact below n = 10, asymptotic above) · ")
    text.append("green", style="bold green")
    text.append(" significant as the paper predicts · ")
    text.append("red", style="bold red")
    text.append(" against it")
    if view.small_n:
        text.append(f"\nCaution: asymptotic p-values are unreliable below n = "
                    f"{view.small_reliable_n} (here n = {', '.join(map(str, view.small_n))}); "
                    "exact ones: kerasgen report --pvalue exact", style="yellow")
    return text


class SpearmanScreen(DashboardScreen):
    """Tables 1-3 side by side, Table 3 and the verdicts on the right; on a narrower
    terminal Table 3 and the verdicts go below Tables 1 and 2, and below ~66 columns
    every table stacks. The body scrolls (it has the focus: arrows, page up/down)."""

    TITLE_TEXT = "Spearman"
    # Tables 1 and 2 take ~62 columns; beside them Table 3 and the verdicts need ~50.
    HORIZONTAL_BREAKPOINTS = [(0, "-stacked"), (66, "-narrow"), (114, "-wide")]

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="spearman-body", classes="body"):
            yield Static(id="spearman-summary")
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
                 ("spearman-table-1", "spearman-table-2", "spearman-side", "spearman-premise")]
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
        parts[0].update(group_table(spearman, 1))
        parts[1].update(group_table(spearman, 2))
        parts[2].update(Group(ratio_table(spearman), directions(spearman)))
        parts[3].update(premise(spearman))
