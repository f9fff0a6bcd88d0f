"""The line at the top of every screen: which store, which grid, when it was read; or,
when the store cannot be read, the reason in a box that replaces the screen's body."""

from __future__ import annotations

from datetime import timezone
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

from tui.view import ViewState, grid_title

if TYPE_CHECKING:
    from tui.data import Snapshot


def _when(snapshot: Snapshot) -> str:
    """The time of the refresh in UTC (the store's timestamps are UTC too)."""
    moment = snapshot.taken_at
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%H:%M:%S UTC")


class StoreBanner(Static):
    """Store, screen, grid, metric and the time of the last refresh."""

    def __init__(self, screen_name: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.screen_name = screen_name

    def show(self, view: ViewState, path: str, interval: float) -> None:
        snapshot = view.snapshot
        problem = snapshot is None or not snapshot.ok
        text = self._text(view, path, interval)
        if text == getattr(self, "_shown", None) and problem == self.has_class("-problem"):
            return
        self._shown = text
        self.set_class(problem, "-problem")
        self.set_class(snapshot is not None and snapshot.state == "error", "-error")
        # One line when all is well: no need to lay the screen out again.
        self.update(text, layout=problem or self.size.height != 1)

    def _text(self, view: ViewState, path: str, interval: float) -> Text:
        snapshot = view.snapshot
        if snapshot is None:
            return Text.assemble(("kerasgen", "bold"), f"  reading {path}…")
        if not snapshot.ok:
            title = "Cannot read the store" if snapshot.state == "error" else "Waiting"
            return Text.assemble(
                (f"{title}\n\n", "bold"), snapshot.message,
                (f"\n\nChecking again every {interval:g} s (last check {_when(snapshot)}). "
                 "q quits.", "dim"))
        name = path.rsplit("/", 1)[-1]
        text = Text.assemble(("kerasgen", "bold"), f" · {name} · ", (self.screen_name, "bold"))
        if self.screen_name != "Overview" and view.grid_key is not None:
            # The Spearman tables use each cell's mean over seeds.
            mean = self.screen_name == "Spearman"
            text.append(f" · {grid_title(snapshot, view.grid_key, mean=mean)}")
            text.append(f" · {view.metric_short}")
        text.append(f" · updated {_when(snapshot)}", style="dim")
        return text
