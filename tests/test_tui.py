"""Claims about the dashboard (tui/): every screen driven with Pilot on a fixture store,
the layout of each screen pinned by snapshots, and its import kept light.

The fixture store: 2 models x 1 data set x 4 batch sizes x 4 learning rates, 5 epochs
per cell at most; resnet8 has done cells, one diverged, one running and pending ones,
vgg11 a few done cells. Timestamps are rewritten to fixed values and the app gets a
fixed clock, so rates, ETAs and the banner's time are the same on every run.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from rich.console import Console

from kerasgen import store as S
from kerasgen.store import Store

ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZES = (16, 32, 64, 128)
LEARNING_RATES = (0.01, 0.02, 0.05, 0.1)
EPOCHS = 5
WORKER = "gpu-a.invalid:101"  # a host that is not this one: never reclaimed as dead
NOW = datetime(2025, 1, 1, 12, 5, 0, tzinfo=timezone.utc)
SIZE = (120, 40)


# ---------------------------------------------------------------- the fixture store

def logs(model: str, bs: int, lr: float, epoch: int) -> dict:
    """Deterministic curves: better with small batches and large learning rates. Test
    accuracy peaks at epoch 3 (the kept epoch) and drops at epoch 4; Keras's running
    train accuracy runs above the clean one."""
    b, r = BATCH_SIZES.index(bs), LEARNING_RATES.index(lr)
    base = 0.55 + (0.05 if model == "resnet8" else 0.0) - 0.04 * b + 0.03 * r
    test = round(min(base + 0.06 * min(epoch, 3), 0.97) - (0.03 if epoch >= 4 else 0.0), 4)
    train = round(min(base + 0.09 * epoch + 0.02, 1.0), 4)
    clean = round(min(base + 0.08 * epoch + 0.01, 1.0), 4)
    return {"train_loss": round(2.0 - 1.5 * train, 4), "train_accuracy": train,
            "test_loss": round(2.2 - 1.5 * test, 4), "test_accuracy": test,
            "train_eval_loss": round(2.0 - 1.5 * clean, 4), "train_eval_accuracy": clean}


def train(store: Store, claim, epochs: int, finish: str | None = "done",
          diverge_at: int | None = None) -> None:
    for cell in claim.cells:
        last = epochs if diverge_at is None else diverge_at
        for e in range(last):
            store.record_epoch(cell["cell_id"], e, logs(cell["model"], cell["batch_size"],
                                                          cell["learning_rate"], e), 1.0,
                               claim=claim)
        if diverge_at is not None:
            store.finish_cell(cell["cell_id"], "diverged", diverged_epoch=diverge_at,
                              claim=claim)
        elif finish:
            store.finish_cell(cell["cell_id"], finish, claim=claim)


def build_store(path: Path) -> dict:
    cells = [{"model": m, "dataset": "digits", "batch_size": b, "learning_rate": lr, "seed": 0}
             for m in ("resnet8", "vgg11") for b in BATCH_SIZES for lr in LEARNING_RATES]
    spec = {"name": "grid", "epochs": EPOCHS, "models": ["resnet8", "vgg11"],
            "datasets": ["digits"]}
    store = Store(path)
    study = store.create_study("grid", spec, cells, {"host": "test"})
    # resnet8: BS 16 and 32 done (one BS-32 cell diverged), one BS-64 cell running.
    train(store, store.claim_pack(study, WORKER, 4), EPOCHS)
    claim = store.claim_pack(study, WORKER, 3)
    train(store, claim, EPOCHS)
    train(store, store.claim_pack(study, WORKER, 1), EPOCHS, diverge_at=2)
    running = store.claim_pack(study, WORKER, 1)
    train(store, running, 3, finish=None)
    # vgg11: three cells of BS 16 done, taken by hand (claims go in order).
    ids = [r[0] for r in store.conn.execute(
        "SELECT cell_id FROM cells WHERE model = 'vgg11' AND batch_size = 16 "
        "ORDER BY learning_rate LIMIT 3")]
    store.mark_running(ids, WORKER)
    for cell_id in ids:
        cell = store.cell(cell_id)
        for e in range(EPOCHS):
            store.record_epoch(cell_id, e, logs("vgg11", 16, cell["learning_rate"], e), 1.0)
        store.finish_cell(cell_id, "done")
    store.close()
    freeze(path)
    return {"study": study, "running": running, "running_id": running.cells[0]["cell_id"]}


def seed_offset(bs: int, lr: float, seed: int) -> float:
    """How much a seed's accuracies differ from seed 0's: a fixed pattern of +-1.5
    points, different for every seed and cell."""
    if seed == 0:
        return 0.0
    b, r = BATCH_SIZES.index(bs), LEARNING_RATES.index(lr)
    return 0.015 * (((3 * b + 5 * r + seed) % 5) - 2) / 2


def build_seed_store(path: Path, seeds: tuple[int, ...] = (0, 1)) -> None:
    """One model (resnet8) x 4 batch sizes x 4 learning rates x ``seeds``, every run
    done; each seed's accuracies shifted by :func:`seed_offset`."""
    cells = [{"model": "resnet8", "dataset": "digits", "batch_size": b, "learning_rate": lr,
              "seed": seed} for seed in seeds for b in BATCH_SIZES for lr in LEARNING_RATES]
    spec = {"name": "seeds", "epochs": EPOCHS, "models": ["resnet8"], "datasets": ["digits"],
            "seeds": list(seeds)}
    with Store(path) as store:
        study = store.create_study("seeds", spec, cells, {"host": "test"})
        while True:
            claim = store.claim_pack(study, WORKER, 4)
            if claim is None or not claim.cells:
                break
            for cell in claim.cells:
                shift = seed_offset(cell["batch_size"], cell["learning_rate"], cell["seed"])
                for e in range(EPOCHS):
                    values = logs("resnet8", cell["batch_size"], cell["learning_rate"], e)
                    for key in ("test_accuracy", "train_eval_accuracy", "train_accuracy"):
                        values[key] = round(values[key] + shift, 4)
                    store.record_epoch(cell["cell_id"], e, values, 1.0, claim=claim)
                store.finish_cell(cell["cell_id"], "done", claim=claim)
    freeze(path)


def freeze(path: Path) -> None:
    """Replace wall-clock timestamps by fixed ones: rates, ETAs and dates become
    deterministic (epochs one second apart, the last one 10 s before NOW)."""
    conn = sqlite3.connect(path)
    n = conn.execute("SELECT COUNT(*) FROM epochs").fetchone()[0]
    conn.execute(
        "UPDATE epochs SET recorded_at = strftime('%Y-%m-%dT%H:%M:%fZ', '2025-01-01 12:04:50', "
        "(rowid - ?) || ' seconds')", (n,))
    conn.execute("UPDATE studies SET created_at = '2025-01-01T11:50:00.000Z'")
    conn.execute("UPDATE cells SET heartbeat_at = '2025-01-01T12:04:59.000Z' "
                 "WHERE status = 'running'")
    conn.commit()
    conn.close()


@pytest.fixture
def store_path(tmp_path) -> Path:
    path = tmp_path / "grid.db"
    build_store(path)
    return path


@pytest.fixture
def seed_store_path(tmp_path) -> Path:
    path = tmp_path / "seeds.db"
    build_seed_store(path)
    return path


# ---------------------------------------------------------------- driving the app

def drive(test):
    """Run an async test (Pilot) in its own event loop; no asyncio plugin needed."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(test(*args, **kwargs))

    return run


def make_app(path: Path, **kwargs):
    from tui.app import DashboardApp

    kwargs.setdefault("interval", 3600)  # tests refresh with "r" or wait_for_refresh
    return DashboardApp(path, clock=lambda: NOW, **kwargs)


async def wait_for(pilot, condition, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for the dashboard")
        await pilot.pause(0.02)
    await pilot.pause()


async def refreshed(pilot, after: int = 0) -> None:
    """Wait until a snapshot newer than ``after`` refreshes is on screen."""
    await wait_for(pilot, lambda: pilot.app.refreshes > after)


def plain(renderable, width: int = 1000) -> str:
    """Text of a renderable, on a console wide enough that no message wraps."""
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def content_of(screen, selector: str) -> str:
    return plain(screen.query_one(selector).content)


def heatmap_text(app) -> str:
    from tui.widgets.heatmap import HeatmapGrid

    return app.screen.query_one(HeatmapGrid).render().plain


def banner_text(app) -> str:
    return content_of(app.screen, "#store-banner")


def screen_strips(app) -> list:
    """The screen as drawn, one Strip (segments and their styles) per terminal row."""
    return app.screen._compositor.render_strips()


def screen_lines(app, widget=None) -> list[str]:
    """The text of the rows on screen, or of the part of them ``widget`` covers."""
    strips = screen_strips(app)
    if widget is None:
        return [strip.text for strip in strips]
    r = widget.region
    return [strip.crop(r.x, r.right).text for strip in strips[r.y:r.bottom]]


# ---------------------------------------------------------------- the data layer

def test_refresh_reads_only_new_epoch_rows_and_keeps_the_curves_seen_so_far(store_path):
    from tui.data import DashboardData

    data = DashboardData(store_path)
    first = data.refresh(NOW)
    assert first.ok and first.generation == 1
    marker = data.marker
    running_id = next(c.cell_id for g in first.grids for c in g.cells.values()
                      if c.status == "running")
    assert len(first.curves[running_id]) == 3
    with Store(store_path) as store:
        store.record_epoch(running_id, 3, logs("resnet8", 64, 0.01, 3), 1.0)
    second = data.refresh(NOW)
    assert data.marker == marker + 1
    assert len(second.curves[running_id]) == 4
    assert list(second.curves[running_id].epoch) == [0, 1, 2, 3]
    # The earlier snapshot is unchanged (arrays are replaced, not mutated).
    assert len(first.curves[running_id]) == 3
    # Grids whose cells did not change are the very same objects (nothing to redraw).
    vgg = [g for g in first.grids if g.key[1] == "vgg11"][0]
    assert second.grid(vgg.key) is vgg


def test_spearman_tables_are_computed_when_shown_and_again_only_when_a_cell_finishes(
        store_path):
    from tui.data import DashboardData

    data = DashboardData(store_path)
    assert data.refresh(NOW).spearman == {}  # nothing on screen asks for them
    key = ("grid", "resnet8", "digits", "test_accuracy")
    data.wanted = {key}
    view = data.refresh(NOW).spearman[key]
    assert view.finished == 8 and view.total == 16
    assert len([r for r in view.rows if r.table == 1]) == 4
    assert any("under-trained" in w for w in view.premise_warnings)
    with Store(store_path) as store:
        running = store.conn.execute(
            "SELECT cell_id FROM cells WHERE status = 'running'").fetchone()[0]
        store.record_epoch(running, 3, logs("resnet8", 64, 0.01, 3), 1.0)
        assert data.refresh(NOW).spearman[key] is view  # still running: same tables
        store.finish_cell(running, "done")
    again = data.refresh(NOW).spearman[key]
    assert again is not view and again.finished == 9


@pytest.mark.parametrize("kind, words", [
    ("missing", "does not exist yet"),
    ("empty", "is empty"),
    ("foreign", "another application"),
    ("newer", "newer kerasgen"),
])
def test_an_unusable_store_is_a_message_and_the_next_refresh_tries_again(tmp_path, kind,
                                                                           words):
    from tui.data import DashboardData

    path = tmp_path / "x.db"
    make_unusable(path, kind)
    data = DashboardData(path)
    snapshot = data.refresh(NOW)
    assert not snapshot.ok and words in snapshot.message
    assert snapshot.state == ("waiting" if kind in ("missing", "empty") else "error")
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    build_store(path)
    assert data.refresh(NOW).ok


def make_unusable(path: Path, kind: str) -> None:
    if kind == "empty":
        path.touch()
    elif kind == "foreign":
        conn = sqlite3.connect(path)
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.commit()
        conn.close()
    elif kind == "newer":
        build_store(path)
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {S.SCHEMA_VERSION + 1}")
        conn.commit()
        conn.close()


def test_a_store_replaced_under_the_same_name_is_read_from_scratch(tmp_path):
    from tui.data import DashboardData

    path = tmp_path / "x.db"
    build_store(path)
    data = DashboardData(path)
    assert len(data.refresh(NOW).grids) == 2
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    with Store(path) as store:
        store.create_study("other", {"name": "other", "epochs": 2},
                           [{"model": "m", "dataset": "d", "batch_size": 8,
                             "learning_rate": 0.1, "seed": 0}])
    snapshot = data.refresh(NOW)
    assert [g.key for g in snapshot.grids] == [("other", "m", "d", 0)]
    assert snapshot.curves == {}


# ---------------------------------------------------------------- the app, with Pilot

@drive
async def test_every_screen_is_reachable_by_its_key_and_q_quits(store_path):
    from tui.screens.heatmap import HeatmapScreen
    from tui.screens.help import HelpScreen
    from tui.screens.overview import OverviewScreen
    from tui.screens.spearman import SpearmanScreen

    app = make_app(store_path)
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        assert isinstance(app.screen, OverviewScreen)
        for key, screen in (("h", HeatmapScreen), ("s", SpearmanScreen),
                            ("o", OverviewScreen), ("h", HeatmapScreen)):
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, screen), key
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert "cycle the metric" in plain(app.screen.query_one("#help-body").content)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, HeatmapScreen)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


@drive
async def test_footer_shows_the_key_bindings(store_path):
    app = make_app(store_path, mode="heatmap")
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        shown = {key for key, active in app.screen.active_bindings.items()
                 if active.binding.show}
        for key in ("o", "h", "s", "g", "m", "right_square_bracket", "question_mark", "q"):
            assert key in shown, key


@pytest.mark.parametrize("mode", ["overview", "heatmap", "spearman", "measures"])
@drive
async def test_the_key_bar_fits_80_columns_and_the_help_names_every_key(store_path, mode):
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    from tui.screens.help import KEYS

    app = make_app(store_path, mode=mode)
    async with app.run_test(size=(80, 24)) as pilot:
        await refreshed(pilot)
        keys = list(app.screen.query_one(Footer).query(FooterKey))
        assert {k.description for k in keys} >= {"Help", "Quit"}
        for key in keys:
            assert key.region.right <= 80, (key.description, key.region)
        documented = " ".join(k for k, _ in KEYS)
        names = {"left_square_bracket": "[", "right_square_bracket": "]",
                 "question_mark": "?", "up": "↑", "down": "↓", "left": "←", "right": "→",
                 "escape": "escape", "enter": "enter"}
        for key in app.screen.active_bindings:
            if "+" in key or key in ("home", "end", "tab", "shift+tab", "ctrl+c", "ctrl+q", "pageup",
                       "pagedown", "space", "ctrl+home", "ctrl+end", "ctrl+pageup",
                       "ctrl+pagedown"):
                continue
            assert names.get(key, key) in documented, key


@drive
async def test_metric_switch_changes_the_heatmap_values(store_path):
    app = make_app(store_path, mode="heatmap")
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        best = heatmap_text(app)
        # BS 16, LR 0.1: test accuracy peaks at .87 (epoch 3, the kept one), ends at .84.
        assert ".87" in best and "best test accuracy (kept epoch" in best
        await pilot.press("m")
        await pilot.pause()
        final = heatmap_text(app)
        assert app.view.metric == "final_test_accuracy"
        assert "final test accuracy" in final and ".84" in final and ".87" not in final
        await pilot.press("m")
        await pilot.pause()
        gap = heatmap_text(app)
        # clean train .85 - test .78 at the kept epoch (the running train accuracy, .90,
        # is not what the gap is measured with)
        assert app.view.metric == "gap" and "generalization gap" in gap and ".07" in gap
        await pilot.press("m")
        await pilot.pause()
        # Three digits: .31 with two.
        assert app.view.metric == "loss_gap" and ".305" in heatmap_text(app)
        await pilot.press("m")
        await pilot.pause()
        assert heatmap_text(app) == best


@drive
async def test_arrow_keys_move_the_cursor_and_the_detail_panel_shows_that_cell(store_path):
    from tui.widgets.heatmap import HeatmapGrid

    app = make_app(store_path, mode="heatmap")
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        grid = app.screen.query_one(HeatmapGrid)
        assert grid.cursor == (0, 0)
        detail = content_of(app.screen, "#cell-detail")
        assert "batch size" in detail and " 16" in detail and "0.01" in detail
        assert "done" in detail
        await pilot.press("down", "right", "right", "right")
        assert grid.cursor == (1, 3)
        detail = content_of(app.screen, "#cell-detail")
        assert "32" in detail and "0.1" in detail and "diverged" in detail
        assert "at epoch 2" in detail
        await pilot.press("down", "left", "left", "left", "left")  # clamped at column 0
        assert grid.cursor == (2, 0)
        detail = content_of(app.screen, "#cell-detail")
        assert "64" in detail and "running" in detail and "3/5 epochs" in detail
        assert WORKER in detail
        await pilot.press("down")
        assert "pending" in content_of(app.screen, "#cell-detail")
        await pilot.press("down")  # clamped at the last row
        assert grid.cursor == (3, 0)


@drive
async def test_brackets_switch_between_grids_on_every_screen(store_path):
    app = make_app(store_path, mode="heatmap")
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        assert app.view.grid_key == ("grid", "resnet8", "digits", 0)
        await pilot.press("right_square_bracket")
        assert app.view.grid_key == ("grid", "vgg11", "digits", 0)
        assert "vgg11" in banner_text(app).lower() or "VGG-11" in banner_text(app)
        await pilot.press("right_square_bracket")
        assert app.view.grid_key[1] == "resnet8"
        await pilot.press("left_square_bracket")
        assert app.view.grid_key[1] == "vgg11"


@drive
async def test_enter_on_an_overview_row_opens_the_heatmap_of_that_grid(store_path):
    from tui.screens.heatmap import HeatmapScreen

    app = make_app(store_path)
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        await pilot.press("down", "enter")
        await pilot.pause()
        assert isinstance(app.screen, HeatmapScreen)
        assert app.view.grid_key[1] == "vgg11"


@drive
async def test_a_store_that_changes_between_refreshes_updates_counts_heatmap_and_tables(
        store_path):
    from textual.widgets import DataTable

    app = make_app(store_path)
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        table = app.screen.query_one(DataTable)
        key = "\x1f".join(("grid", "resnet8", "digits"))
        assert str(table.get_cell(key, "done")) == "7"
        assert str(table.get_cell(key, "running")) == "1"
        with Store(store_path) as store:
            running = store.conn.execute(
                "SELECT cell_id FROM cells WHERE status = 'running'").fetchone()[0]
            for e in (3, 4):
                store.record_epoch(running, e, logs("resnet8", 64, 0.01, e), 1.0)
            store.finish_cell(running, "done")
        seen = app.refreshes
        await pilot.press("r")
        await refreshed(pilot, seen)
        assert str(table.get_cell(key, "done")) == "8"
        assert str(table.get_cell(key, "running")) == "0"
        await pilot.press("h", "down", "down")
        await pilot.pause()
        rows = heatmap_text(app).split("\n\n")[0]  # the grid, without the legend
        assert "▶" not in rows  # nothing runs any more
        detail = content_of(app.screen, "#cell-detail")
        assert "64" in detail and "done" in detail and "5/5 epochs" in detail
        await pilot.press("s")
        await wait_for(pilot, lambda: app.view.spearman is not None)
        assert app.view.spearman.finished == 9
        assert "9 of 16 cells finished" in content_of(app.screen, "#spearman-summary")


@drive
async def test_spearman_screen_shows_tables_counts_highlights_and_the_premise_warning(
        store_path):
    from tui.screens.spearman import value_cells

    app = make_app(store_path, mode="spearman")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view.spearman is not None)
        await pilot.pause()
        t1 = content_of(app.screen, "#spearman-table-1")
        t2 = content_of(app.screen, "#spearman-table-2")
        side = content_of(app.screen, "#spearman-side")
        assert "Table 1" in t1 and "n<3" in t1 and "2/4" in t1
        assert "Table 2" in t2 and "+1.00" in t2 and "4/4" in t2
        assert "Table 3" in side and "8/16" in side and "✕1" in side
        assert "Does the paper's direction hold?" in side
        assert "under-trained" in content_of(app.screen, "#spearman-premise")
        # Four perfectly ranked cells: the exact p-value (2/4! = 0.083) is not significant
        # at the paper's 0.005 (the t-approximation would have said p = 0).
        bs16 = next(r for r in app.view.spearman.rows if r.table == 2 and r.group_value == 16)
        assert not bs16.significant and bs16.agrees
        assert value_cells(bs16)[0].style != "bold green"
        await pilot.press("m")
        await wait_for(pilot, lambda: app.view.spearman is not None
                       and app.view.spearman.metric == "final_test_accuracy")


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@drive
async def test_the_eta_reads_whole_on_screen_even_when_it_grows_between_refreshes(
        store_path, size):
    """An hour after the last epoch nothing runs fast enough for an ETA ("?"); once the
    clock is back at NOW the ETA is "0m59s" / "1m44s", and every row shows it whole."""
    from datetime import timedelta

    from textual.widgets import DataTable

    clock = {"now": NOW + timedelta(hours=1)}
    app = make_app(store_path)
    app.clock = lambda: clock["now"]
    async with app.run_test(size=size) as pilot:
        await refreshed(pilot)
        assert [p.eta for p in app.view.snapshot.progress] == ["?", "?"]
        clock["now"] = NOW
        seen = app.refreshes
        await pilot.press("r")
        await refreshed(pilot, seen)
        etas = {app.view.snapshot.labels[p.key[1]]: p.eta for p in app.view.snapshot.progress}
        assert etas == {"ResNet-8": "0m59s", "VGG-11": "1m44s"}
        lines = screen_lines(app, app.screen.query_one(DataTable))
        for model, eta in etas.items():
            row = next(line for line in lines if model in line)
            assert f" {eta} " in f"{row} ", (model, row)


@drive
async def test_the_overview_table_follows_the_terminal_width_and_keeps_the_eta_whole(
        store_path):
    """Narrowed to 80 columns the table drops to short headers with the ETA beside the
    bar; widened again it shows every column under its full name."""
    from textual.widgets import DataTable

    app = make_app(store_path)
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        for size, headers in (((80, 24), ("ETA", "ep/s", "fail")),
                              (SIZE, ("study", "diverged", "epochs/s", "ETA"))):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.1)
            lines = screen_lines(app, app.screen.query_one(DataTable))
            row = next(line for line in lines if "ResNet-8" in line)
            assert " 0m59s " in row, (size, row)
            assert all(header in lines[0].split() for header in headers), lines[0]
        assert str(app.screen.query_one(DataTable).get_cell(
            "\x1f".join(("grid", "resnet8", "digits")), "done")) == "7"


@drive
async def test_spearman_table_3_verdicts_and_premise_are_readable_at_80x24(store_path):
    """Table 3's SCC, p and n/all are on screen whole; the verdicts and the premise
    warning are whole lines that scrolling the body (it shows a scrollbar) brings up."""
    from textual.containers import VerticalScroll

    app = make_app(store_path, mode="spearman")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.view.spearman is not None)
        await pilot.pause()
        ratio = next(r for r in app.view.spearman.rows if r.table == 3)
        # p perm.: the grid's rows and columns permuted (the paper's p is 1.7e-1).
        assert (f"{ratio.scc:+.2f}", ratio.p_text) == ("-0.54", "3.2e-1")
        first = screen_lines(app)
        assert any("Table 3" in line for line in first)
        assert any(all(part in line for part in ("-0.54", "3.2e-1", "8/16 ✕1"))
                   for line in first), "\n".join(first)
        body = app.screen.query_one("#spearman-body", VerticalScroll)
        assert body.max_scroll_y > 0 and body.show_vertical_scrollbar
        seen = list(first)
        for _ in range(10):  # the body has the focus: page down to its end
            await pilot.press("pagedown")
            await pilot.pause()
            seen += screen_lines(app)
        assert body.scroll_y == body.max_scroll_y
        text = "\n".join(seen)
        for whole in ("Does the paper's direction hold?",
                      "T1 batch size within each LR → untested",
                      "T2 learning rate within each BS → cannot reach alpha",
                      "T3 BS/LR over the whole grid → cannot reach alpha",
                      "SCC -0.54, p perm. 3.2e-1 (n=8)",
                      "⚠ Premise warning",
                      "1 of 8 runs diverged; their metrics are from the last finite epoch"):
            assert whole in text, whole


# ---------------------------------------------------------------- seeds, intervals, Holm / BH

SEED_GROUP = ("seeds", "resnet8", "digits")


def test_spearman_rows_carry_each_coefficients_seed_range_and_holm_bh(seed_store_path):
    from kerasgen import analysis
    from kerasgen.store import load_results
    from tui.data import DashboardData

    data = DashboardData(seed_store_path)
    data.wanted = {(*SEED_GROUP, "test_accuracy")}
    view = data.refresh(NOW).spearman[(*SEED_GROUP, "test_accuracy")]
    tests = analysis.spearman_tests(load_results(seed_store_path), alpha=view.alpha)
    assert view.seeds == 2 and len(view.rows) == len(tests) == 9
    for row, test in zip(view.rows, tests.itertuples()):
        assert row.scc == pytest.approx(test.scc)
        # Two seeds: no interval, the range of the two seeds' coefficients instead.
        assert row.ci is None and row.ci_reason == test.ci_reason
        assert row.seed_range == pytest.approx((test.seed_scc_min, test.seed_scc_max))
        assert (row.holm, row.bh) == (test.p_holm < view.alpha, test.p_bh < view.alpha)
        assert row.p_text == analysis.format_p(test.p_perm)
        # Four cells per group: the permutation test cannot reach 0.005.
        assert row.cannot_reach == (test.table != 3)
    assert {r.ci_reason for r in view.rows} == {
        "two seeds: the range of their coefficients, not an interval (it needs 3 or more "
        "seeds)"}


@pytest.mark.parametrize("size, layout", [((120, 40), "-narrow"), ((80, 24), "-stacked")])
@drive
async def test_the_spearman_screen_shows_intervals_and_holm_bh_whole_at_80_and_120_columns(
        seed_store_path, size, layout):
    from tui.screens.spearman import interval_text

    app = make_app(seed_store_path, mode="spearman")
    async with app.run_test(size=size) as pilot:
        await wait_for(pilot, lambda: app.view.spearman is not None)
        await pilot.pause()
        view = app.view.spearman
        ratio = next(r for r in view.rows if r.table == 3)
        assert ratio.holm and ratio.bh and ratio.ci is None and ratio.seed_range
        whole = (f"{ratio.scc:+.2f}", interval_text(ratio.seed_range, None).plain,
                 ratio.p_text, "✓ ✓", "16/16")
        first = screen_lines(app)  # Table 3 is on the first screen, every part whole
        assert any(all(part in line for part in whole) for line in first), "\n".join(first)
        assert app.screen.has_class(layout)
        t1 = content_of(app.screen, "#spearman-table-1")
        assert "2 seeds" in t1 and "95% CI" not in t1
        for row in (r for r in view.rows if r.table == 1):
            assert interval_text(row.seed_range, None).plain in t1
        summary = content_of(app.screen, "#spearman-summary")
        assert "2 seeds: the range of their own coefficients (no CI below 3 seeds)" in summary
        assert "after Holm / Benjamini-Hochberg over its family" in summary


def test_the_layout_follows_the_widths_the_tables_need():
    from tui.screens.spearman import layout_for

    assert layout_for(160, (40, 44, 44)) == "-wide"
    assert layout_for(120, (40, 44, 44)) == "-narrow"
    assert layout_for(116, (57, 57, 56)) == "-narrow"
    assert layout_for(76, (40, 44, 44)) == "-stacked"


@drive
async def test_the_detail_panel_shows_the_cells_value_in_every_seed(seed_store_path, store_path):
    app = make_app(seed_store_path, mode="heatmap")
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        await pilot.press("down", "right")  # BS 32, LR 0.02
        await pilot.pause()
        kept = logs("resnet8", 32, 0.02, 3)["test_accuracy"]  # the kept epoch of both
        values = [kept, round(kept + seed_offset(32, 0.02, 1), 4)]
        assert values[0] != values[1]
        mean = sum(values) / 2
        sd = abs(values[0] - values[1]) / 2 ** 0.5
        detail = content_of(app.screen, "#cell-detail")
        assert f"test acc by seed 0: {values[0]:.4f}  1: {values[1]:.4f}" in detail
        assert f"mean ± SD        {mean:.4f} ± {sd:.4f} (n=2)" in detail
        await pilot.press("m")  # the metric on screen: the last epoch's test accuracy
        await pilot.pause()
        final = logs("resnet8", 32, 0.02, EPOCHS - 1)["test_accuracy"]
        final = [final, round(final + seed_offset(32, 0.02, 1), 4)]
        assert f"final test acc by seed 0: {final[0]:.4f}  1: {final[1]:.4f}" in content_of(
            app.screen, "#cell-detail")
    app = make_app(store_path, mode="heatmap")  # one seed: no such rows
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        assert "by seed" not in content_of(app.screen, "#cell-detail")


MARKUP_STUDY = "[bold red]x[/bold red] [link=http://x]y[/link]"
BROKEN_STUDY = "oops[/]"
MARKUP_WORKER = "[link=x]w[/link]:1"
MARKUP_ERROR = "[red]boom[/red] [/]"


def build_markup_store(path: Path) -> None:
    """Two studies whose names are Rich markup (one of it malformed), a model and a data
    set named likewise, a running cell whose worker name is markup, a failed cell whose
    error is."""
    with Store(path) as store:
        for name, model, dataset in ((MARKUP_STUDY, "[b]net[/b]", "digits"),
                                     (BROKEN_STUDY, "resnet8", "d[/]")):
            cells = [{"model": model, "dataset": dataset, "batch_size": b, "learning_rate": lr,
                      "seed": 0} for b in (16, 32) for lr in (0.01, 0.1)]
            study = store.create_study(name, {"name": name, "epochs": 3}, cells)
            first = store.conn.execute(
                "SELECT cell_id FROM cells WHERE study_id = ? ORDER BY batch_size, "
                "learning_rate LIMIT 1", (study,)).fetchone()[0]
            if name == MARKUP_STUDY:
                store.mark_running([first], MARKUP_WORKER)
                store.record_epoch(first, 0, logs("resnet8", 16, 0.01, 0), 1.0)
            else:
                store.mark_failed([first], "Traceback …\n" + MARKUP_ERROR)


@drive
async def test_names_and_errors_that_look_like_markup_are_shown_literally_on_every_screen(
        tmp_path):
    from textual.widgets import DataTable

    path = tmp_path / "markup.db"
    build_markup_store(path)
    app = make_app(path)

    def no_link_on_screen() -> None:
        links = [seg.text for strip in screen_strips(app) for seg in strip
                 if seg.style is not None and seg.style.link]
        assert not links, links

    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        screen = app.screen
        studies = "\n".join(screen_lines(app, screen.query_one("#studies")))
        table = "\n".join(screen_lines(app, screen.query_one(DataTable)))
        workers = "\n".join(screen_lines(app, screen.query_one("#workers")))
        for name in (MARKUP_STUDY, BROKEN_STUDY):
            assert name in studies and name in table, name
        assert "[b]net[/b]" in table and "d[/]" in table
        assert MARKUP_WORKER in workers and "[b]net[/b]" in workers
        # The studies list draws the name in cyan, never bold or red as its markup says.
        row = next(strip for strip in screen_strips(app) if MARKUP_STUDY in strip.text)
        for seg in row:
            if seg.text.strip() and seg.text.strip() in MARKUP_STUDY:
                assert not seg.style.bold, seg
                assert seg.style.color is None or seg.style.color.name != "red", seg
        no_link_on_screen()

        await pilot.press("h")
        await pilot.pause(0.2)
        banner = screen_lines(app)[0]  # the banner names the grid's study
        assert MARKUP_STUDY in banner and "[b]net[/b]" in banner, banner
        detail = "\n".join(screen_lines(app, app.screen.query_one("#cell-detail")))
        assert MARKUP_WORKER in detail, detail  # the cursor is on the running cell
        no_link_on_screen()
        await pilot.press("right_square_bracket")
        await pilot.pause(0.2)
        banner = screen_lines(app)[0]
        assert BROKEN_STUDY in banner and "d[/]" in banner, banner
        detail = "\n".join(screen_lines(app, app.screen.query_one("#cell-detail")))
        assert MARKUP_ERROR in detail, detail  # the failed cell

        await pilot.press("s")
        await wait_for(pilot, lambda: app.view.spearman is not None)
        await pilot.pause()
        assert BROKEN_STUDY in screen_lines(app)[0]
        await pilot.press("left_square_bracket")
        await wait_for(pilot, lambda: app.view.spearman is not None)
        await pilot.pause()
        assert MARKUP_STUDY in screen_lines(app)[0]
        no_link_on_screen()

        await pilot.press("question_mark")
        await pilot.pause()
        assert any("cycle the metric" in line for line in screen_lines(app))
        await pilot.press("escape", "o")
        await pilot.pause()
        assert MARKUP_STUDY in "\n".join(screen_lines(app))


@pytest.mark.parametrize("kind, words", [
    ("foreign", "another application"),
    ("newer", "newer kerasgen"),
    ("empty", "is empty"),
])
@drive
async def test_an_unusable_store_shows_its_message_on_screen_not_a_traceback(tmp_path, kind,
                                                                             words):
    path = tmp_path / "x.db"
    make_unusable(path, kind)
    app = make_app(path)
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        for key in ("h", "s", "o"):
            await pilot.press(key)
            await pilot.pause()
            text = banner_text(app)
            assert words in text and "Checking again every" in text
            assert "Traceback" not in text
            assert app.screen.has_class("-no-data")


@drive
async def test_a_missing_store_waits_for_the_study_and_shows_it_when_it_appears(tmp_path):
    path = tmp_path / "later.db"
    app = make_app(path, study="grid", interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        assert "Waiting for the study" in banner_text(app)
        build_store(path)
        await wait_for(pilot, lambda: app.view.snapshot is not None and app.view.snapshot.ok)
        assert not app.screen.has_class("-no-data")
        assert "Overview" in banner_text(app)


# ---------------------------------------------------------------- snapshots (layout)

def _snapshot_app(path: Path, keys: tuple[str, ...] = (), spearman: bool = False):
    app = make_app(path)

    async def run_before(pilot) -> None:
        await refreshed(pilot)
        for key in keys:
            await pilot.press(key)
        if spearman:
            await wait_for(pilot, lambda: app.view.spearman is not None)
        await pilot.pause(0.2)  # the chart follows the cursor after a short delay

    return app, run_before


def test_snapshot_overview(store_path, snap_compare):
    app, run_before = _snapshot_app(store_path)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_heatmap_on_the_running_cell(store_path, snap_compare):
    app, run_before = _snapshot_app(store_path, ("h", "down", "down"))
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_heatmap_of_the_gap(store_path, snap_compare):
    app, run_before = _snapshot_app(store_path, ("h", "m", "m", "down", "right", "right", "right"))
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_spearman(store_path, snap_compare):
    """Tables 1 and 2 side by side, Table 3 and the verdicts below (all three side by
    side from ~136 columns)."""
    app, run_before = _snapshot_app(store_path, ("s",), spearman=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_spearman_two_seeds(seed_store_path, snap_compare):
    """Two seeds: an interval over seeds beside each coefficient; Tables 1 and 2 drop
    the interval over cells (4 cells per group) and say so in their titles."""
    app, run_before = _snapshot_app(seed_store_path, ("s",), spearman=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_spearman_two_seeds_at_80x24(seed_store_path, snap_compare):
    """Stacked: Table 3 with both intervals and the verdicts first."""
    app, run_before = _snapshot_app(seed_store_path, ("s",), spearman=True)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_snapshot_heatmap_two_seeds(seed_store_path, snap_compare):
    """The detail panel lists the cell's test accuracy in each seed and their mean ± SD."""
    app, run_before = _snapshot_app(seed_store_path, ("h", "down", "right"))
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_overview_at_80x24(store_path, snap_compare):
    """The compact table while a cell runs: the ETA whole, right after the bar (at
    120x40, test_snapshot_overview: the full table, the ETA whole in the last column)."""
    app, run_before = _snapshot_app(store_path)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_snapshot_spearman_at_80x24(store_path, snap_compare):
    """Every table stacked, Table 3 and the verdicts first, the body scrolls (at
    120x40, test_snapshot_spearman: Tables 1 and 2 side by side)."""
    app, run_before = _snapshot_app(store_path, ("s",), spearman=True)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_snapshot_help(store_path, snap_compare):
    app, run_before = _snapshot_app(store_path, ("h", "question_mark"))
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_snapshot_heatmap_at_80x24(store_path, snap_compare):
    """Three digits per cell, the key bar whole (? Help, q Quit), the chart's legend below
    it, not over the curves."""
    app, run_before = _snapshot_app(store_path, ("h", "down", "down"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_snapshot_help_at_80x24(store_path, snap_compare):
    """Taller than the screen: it scrolls (the title says how)."""
    app, run_before = _snapshot_app(store_path, ("h", "question_mark"))
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_snapshot_foreign_store_message(tmp_path, monkeypatch, snap_compare):
    monkeypatch.chdir(tmp_path)  # a relative path: the message is the same on every run
    make_unusable(Path("theirs.db"), "foreign")
    app, run_before = _snapshot_app(Path("theirs.db"))
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


# ---------------------------------------------------------------- import and entry points

def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_importing_the_dashboard_loads_no_tensorflow_and_takes_under_a_second():
    code = (
        "import time; t = time.perf_counter()\n"
        "import tui, tui.app, sys\n"
        "seconds = time.perf_counter() - t\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'tf_keras', 'pandas', 'scipy'))\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, heavy\n"
        "assert not heavy, heavy  # pandas and scipy load in the polling thread\n"
        "import tui.data\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
        "print(seconds)\n"
    )
    timings = []
    for _ in range(3):  # the best of three: the claim is about the code, not the load
        proc = subprocess.run([sys.executable, "-c", code], env=child_env(), cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        timings.append(float(proc.stdout))
        if timings[-1] < 1.0:
            break
    assert min(timings) < 1.0, timings


def test_python_dash_m_tui_and_run_dashboard_share_one_signature():
    import inspect

    from tui.app import run_dashboard

    params = inspect.signature(run_dashboard).parameters
    assert list(params) == ["db", "study", "interval"]
    assert params["study"].default is None and params["interval"].default == 2.0
    proc = subprocess.run([sys.executable, "-m", "tui", "--help"], env=child_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--study" in proc.stdout and "--interval" in proc.stdout


@drive
async def test_a_significant_coefficient_in_the_papers_direction_is_highlighted(store_path):
    from tui.screens.spearman import value_cells

    app = make_app(store_path, mode="spearman", alpha=0.1)  # 2/4! = 0.083 < 0.1
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.view.spearman is not None)
        await pilot.pause()
        bs16 = next(r for r in app.view.spearman.rows if r.table == 2 and r.group_value == 16)
        assert bs16.significant and bs16.agrees
        assert value_cells(bs16)[0].style == "bold green"


@drive
async def test_a_worker_without_a_heartbeat_is_shown_lost_not_training(store_path):
    # The fixture's running cell beats 1 s before NOW; a day without a heartbeat is lost.
    conn = sqlite3.connect(store_path)
    conn.execute("UPDATE cells SET heartbeat_at = '2024-12-31T12:00:00.000Z' "
                 "WHERE status = 'running'")
    conn.commit()
    conn.close()
    app = make_app(store_path)
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        assert app.view.snapshot.running == {}
        assert list(app.view.snapshot.lost) == [WORKER]
        workers = content_of(app.screen, "#workers")
        assert "Workers training now: 0" in workers and "Workers lost: 1" in workers


@drive
async def test_the_spearman_title_says_the_tables_use_the_mean_over_seeds(seed_store_path):
    app = make_app(seed_store_path, mode="spearman")
    async with app.run_test(size=SIZE) as pilot:
        await refreshed(pilot)
        banner = str(app.screen.query_one("#store-banner").render())
        assert "mean of 2 seeds" in banner and "seed 0" not in banner
        await pilot.press("h")
        await pilot.pause()
        assert "seed 0" in str(app.screen.query_one("#store-banner").render())


@drive
async def test_the_help_scrolls_at_80x24(store_path):
    app = make_app(store_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await refreshed(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        scroll = app.screen.query_one("#help-scroll")
        assert scroll.max_scroll_y > 0  # taller than the screen: it scrolls
        await pilot.press("end")
        await pilot.pause()
        assert scroll.scroll_y == scroll.max_scroll_y
