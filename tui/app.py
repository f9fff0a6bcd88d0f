"""The dashboard app: wires the screens, the key bindings and the polling thread.

Everything it shows comes from :mod:`tui.data`, read in a worker thread every
``interval`` seconds (and on ``r``); the interface thread only renders snapshots.
``tui.data`` (pandas, the store) is imported by that thread, so the window opens at
once, before the first read.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from textual.app import App, ScreenStackError
from textual.binding import Binding
from textual.reactive import reactive
from textual.worker import Worker, WorkerState

from tui.screens.base import DashboardScreen
from tui.screens.heatmap import HeatmapScreen
from tui.screens.help import HelpScreen
from tui.screens.measures import MeasuresScreen
from tui.screens.overview import OverviewScreen
from tui.screens.spearman import SpearmanScreen
from tui.view import ViewState, next_metric

if TYPE_CHECKING:
    from tui.data import DashboardData, Snapshot

POLL_GROUP = "poll"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class DashboardApp(App[int]):
    """Live view of a kerasgen store: overview, heatmap, Spearman tables, measures."""

    TITLE = "kerasgen"
    CSS_PATH = "dashboard.tcss"
    ENABLE_COMMAND_PALETTE = False
    MODES = {"overview": OverviewScreen, "heatmap": HeatmapScreen, "spearman": SpearmanScreen,
             "measures": MeasuresScreen}
    DEFAULT_MODE = "overview"
    BINDINGS = [
        Binding("o", "show('overview')", "Overview"),
        Binding("h", "show('heatmap')", "Heatmap"),
        Binding("s", "show('spearman')", "Spearman"),
        Binding("m", "cycle_metric", "Metric"),
        # One entry for both (the help names each): the key bar fits 80 columns whole.
        Binding("left_square_bracket", "cycle_grid(-1)", "Prev grid", key_display="[",
                show=False),
        Binding("right_square_bracket", "cycle_grid(1)", "Grid", key_display="[ ]"),
        Binding("r", "poll", "Refresh", show=False),
        Binding("g", "show('measures')", "Measures"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    view: reactive[ViewState] = reactive(ViewState, init=False, always_update=True)

    def __init__(self, db: str | Path, study: str | None = None, interval: float = 2.0,
                 clock: Callable[[], datetime] = utc_now, mode: str = "overview",
                 alpha: float | None = None) -> None:
        super().__init__()
        self.db = Path(db)
        self.alpha = alpha
        self.study = study
        self.interval = float(interval)
        self.clock = clock
        self.start_mode = mode
        self.refreshes = 0  # snapshots applied (tests wait on it)
        self._data: DashboardData | None = None
        self._polling = False
        self._poll_again = False
        self._warmed = False

    # -- lifecycle
    def on_mount(self) -> None:
        self.switch_mode(self.start_mode)
        self.set_interval(self.interval, self.action_poll)
        self.action_poll()

    def watch_view(self, view: ViewState) -> None:
        try:
            screen = self.screen
        except ScreenStackError:  # a read that finished while the app shuts down
            return
        if isinstance(screen, DashboardScreen):
            screen.update_view(view)
        if self.current_mode == "spearman" and view.snapshot is not None \
                and view.snapshot.ok and view.grid_key is not None and view.spearman is None:
            self.action_poll()  # the tables on screen are not computed yet
        if self.current_mode == "measures" and view.snapshot is not None \
                and view.snapshot.ok and view.grid_key is not None and view.measures is None:
            self.action_poll()  # the ranking on screen is not computed yet

    # -- polling
    def action_poll(self) -> None:
        """Read the store in the worker thread (again after the current read, if any)."""
        if self._polling:
            self._poll_again = True
            return
        self._polling = True
        self._poll_again = False
        wanted = set()
        if self.current_mode == "spearman" and self.view.grid_key is not None:
            wanted = {(*self.view.grid_key[:3], self.view.metric)}
        measures = (self.view.grid_key[:3] if self.current_mode == "measures"
                    and self.view.grid_key is not None else None)
        now = self.clock()
        self.run_worker(lambda: self._read(wanted, now, measures), thread=True,
                        group=POLL_GROUP, name="read store", exit_on_error=False)

    def _read(self, wanted: set, now: datetime, measures=None) -> Snapshot:
        """Runs in the worker thread."""
        if self._data is None:
            from tui.data import DashboardData  # pandas and the store, off the UI thread

            kwargs = {} if self.alpha is None else {"alpha": self.alpha}
            self._data = DashboardData(self.db, study=self.study, **kwargs)
        self._data.wanted = wanted
        self._data.wanted_measures = measures
        return self._data.refresh(now)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != POLL_GROUP or event.state not in (
                WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            return
        self._polling = False
        if event.state == WorkerState.SUCCESS:
            self.apply_snapshot(event.worker.result)
        elif event.state == WorkerState.ERROR:
            self.apply_snapshot(self._failed(event.worker.error))
        if self._poll_again:
            self.action_poll()

    def _failed(self, error: BaseException | None) -> Snapshot:
        from tui.data import Snapshot

        return Snapshot(state="error", path=str(self.db), taken_at=self.clock(),
                        message=f"The dashboard could not read {self.db}: "
                                f"{type(error).__name__}: {error}")

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        key = self.view.grid_key
        if snapshot.ok and snapshot.grid(key) is None:
            key = snapshot.grids[0].key if snapshot.grids else None
            if self.study is not None:
                key = next((g.key for g in snapshot.grids if g.key[0] == self.study), key)
        self.refreshes += 1
        if snapshot.ok and not self._warmed:
            self._warmed = True
            self.run_worker(_warm_up, thread=True, group="warm-up", exit_on_error=False)
        self.view = self.view.with_(snapshot=snapshot, grid_key=key)

    # -- navigation
    def action_show(self, mode: str) -> None:
        self.switch_mode(mode)
        if mode == "spearman" and self.view.spearman is None:
            self.action_poll()
        if mode == "measures" and self.view.measures is None:
            self.action_poll()

    def action_cycle_metric(self) -> None:
        self.view = self.view.with_(metric=next_metric(self.view.metric))

    def action_cycle_grid(self, step: int) -> None:
        snapshot = self.view.snapshot
        if snapshot is None or not snapshot.grids:
            return
        keys = [g.key for g in snapshot.grids]
        index = keys.index(self.view.grid_key) if self.view.grid_key in keys else -step
        self.view = self.view.with_(grid_key=keys[(index + step) % len(keys)])

    def on_overview_screen_grid_chosen(self, message: OverviewScreen.GridChosen) -> None:
        snapshot = self.view.snapshot
        if snapshot is None:
            return
        key = next((g.key for g in snapshot.grids if g.key[:3] == message.group), None)
        if key is not None:
            self.view = self.view.with_(grid_key=key)
            self.action_show("heatmap")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def action_quit(self) -> None:
        self.exit(0)


def _warm_up() -> None:
    """Import scipy.stats in the background once the first snapshot is on screen, so the
    first visit to the Spearman screen does not wait for it (1-3 s on a slow disk)."""
    import scipy.stats  # noqa: F401


def run_dashboard(db: str | Path, study: str | None = None, interval: float = 2.0) -> int:
    """Run the dashboard on ``db`` until the user quits; the exit status."""
    app = DashboardApp(db, study=study, interval=interval)
    app.run()
    return int(app.return_code or 0)


def _interval(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0.1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number of seconds >= 0.1")
    return value


def add_arguments(parser) -> None:
    """The dashboard's arguments: the same for ``kerasgen tui`` and ``python -m tui``."""
    from kerasgen.options import add_store_arguments

    add_store_arguments(parser)
    parser.add_argument("--study", default=None, help="show only this study (default: all)")
    parser.add_argument("--interval", type=_interval, default=2.0,
                        help="seconds between reads of the store")
    parser.add_argument("--wait", action="store_true",
                        help="wait for a store that does not exist yet (a study about to "
                             "start) instead of saying so and exiting")


def main_from_args(parser, args) -> int:
    """Run the dashboard as the arguments of ``add_arguments`` say; 2 (with a message)
    for a store that does not exist (unless ``--wait``) or a stdout that is no terminal."""
    import sys

    from kerasgen.options import store_path

    db = store_path(parser, args)
    if not Path(db).exists() and not args.wait:
        print(f"{parser.prog}: error: {db} does not exist: no study has been run into it yet. "
              "Start one (kerasgen run ... --db PATH), or pass --wait to watch for it.",
              file=sys.stderr)
        return 2
    if not sys.stdout.isatty():
        print(f"{parser.prog}: error: the dashboard needs a terminal (stdout is not one); "
              "use `kerasgen status` for a plain-text view.", file=sys.stderr)
        return 2
    return run_dashboard(db, study=args.study, interval=args.interval)
