"""``?``: the key bindings and what the marks and colours mean."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tui.widgets.heatmap import DIVERGED_BG, FAILED_BG

KEYS = (
    ("o", "overview: every study, progress per model and data set, live workers"),
    ("h", "heatmap of the selected grid (batch size × learning rate)"),
    ("s", "Spearman Tables 1–3 of the selected grid, direction verdicts, premise"),
    ("g", "generalization measures of the selected grid, ranked (kerasgen measures)"),
    ("m", "cycle the metric: test accuracy → final test accuracy → gap → loss gap"),
    ("[  ]", "previous / next grid (model, data set); with several seeds they also step "
             "through each seed's grid"),
    ("↑ ↓ ← →", "move the heatmap cursor (also Home / End, or click a cell)"),
    ("enter", "on the overview: open the heatmap of the highlighted row"),
    ("r", "read the store now (it is read every few seconds anyway)"),
    ("?", "this help; escape closes it"),
    ("q", "quit (training goes on: the dashboard only reads the store)"),
)


def help_text() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for key, what in KEYS:
        table.add_row(key, what)
    table.add_row("", "")
    table.add_row(Text(" ▶.71", style="bold"), "running: the best value so far")
    table.add_row(Text(" ✕.42", style=f"bold #ffffff on {DIVERGED_BG}"),
                  "diverged: best value before it diverged (it counts in Spearman)")
    table.add_row(Text("  ·  ", style="dim"), "pending: not started")
    table.add_row(Text(" !err", style=f"bold #ffffff on {FAILED_BG}"),
                  "failed (see the detail panel)")
    table.add_row("", "")
    table.add_row("Spearman", "bold green: significant (p perm. < α: cells permuted, Table 3 "
                  "rows and columns) in the paper's direction; bold red: significant "
                  "against it; *: cannot reach α (too few cells); n/all: finished cells "
                  "behind the value / all cells of the group (✕: how many of them "
                  "diverged); with several seeds each cell is its mean over seeds. 95% CI: "
                  "jackknife over seeds (3 or more); 2 seeds: the range of their own "
                  "coefficients; H B ✓: still significant after Holm / Benjamini-Hochberg "
                  "over its family")
    return table


class HelpScreen(ModalScreen[None]):
    """Key bindings and legend."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("question_mark", "dismiss", "Close", key_display="?", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-panel"):
            yield Static(Text("kerasgen dashboard — keys (↑ ↓ scroll, escape closes)",
                              style="bold"), id="help-title")
            # Scrolls: at 80 x 24 the keys and the legend are taller than the screen.
            with VerticalScroll(id="help-scroll"):
                yield Static(help_text(), id="help-body")

    AUTO_FOCUS = "#help-scroll"

    def action_dismiss(self) -> None:
        self.dismiss(None)
