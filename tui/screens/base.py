"""What every dashboard screen shares: the store banner on top, the footer below, and
``update_view`` which the app calls with each new :class:`~tui.view.ViewState`."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from tui.view import ViewState
from tui.widgets.banner import StoreBanner


class DashboardScreen(Screen):
    """A screen that renders the app's view state; subclasses fill ``compose_body``
    and ``show``."""

    TITLE_TEXT = ""

    def compose(self) -> ComposeResult:
        yield StoreBanner(self.TITLE_TEXT, id="store-banner")
        yield from self.compose_body()
        yield Footer(compact=True)  # compact: every key fits 80 columns

    def compose_body(self) -> ComposeResult:
        raise NotImplementedError

    def update_view(self, view: ViewState) -> None:
        """Render ``view``: the banner always; the body only when there is data."""
        self.query_one(StoreBanner).show(view, str(self.app.db), self.app.interval)
        has_data = view.snapshot is not None and view.snapshot.ok
        self.set_class(not has_data, "-no-data")
        if has_data:
            self.show(view)

    def show(self, view: ViewState) -> None:
        raise NotImplementedError

    def on_screen_resume(self) -> None:
        self.update_view(self.app.view)
