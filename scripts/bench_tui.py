"""How long the dashboard's refresh takes on a paper-size store.

Builds a store like the paper's study (2 models x 2 data sets x 20 batch sizes x 20
learning rates = 1,600 cells, 200 epochs each: 320,000 epoch rows; most cells done,
some diverged, one pack running, some pending), then times with ``tui.data``:

- the first, full load (a fresh ``DashboardData``: every epoch row);
- an incremental refresh after a few new epoch rows (the steady state of a live study);
- a refresh after a cell finished (recomputes that grid's Spearman tables);
- the Spearman recomputation itself (one grid, three metrics; and all four grids);
- what applying a snapshot and a key press cost the interface (``--no-ui`` skips it).

Usage:  python scripts/bench_tui.py [--db PATH] [--repeats N]
The refresh runs in the dashboard's polling thread; what it costs the interface thread
is only the rendering of the snapshot.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kerasgen.spec import preset  # noqa: E402
from kerasgen.store import Store, load_results, read_new_epochs  # noqa: E402
from tui.data import METRICS, DashboardData, build_spearman, cells_frame, read_cells  # noqa: E402

PAPER = preset("paper")  # the grid the paper trains, as kerasgen runs it
MODELS, DATASETS = PAPER.models, PAPER.datasets
BATCH_SIZES, LEARNING_RATES = PAPER.batch_sizes, PAPER.learning_rates
EPOCHS = PAPER.epochs


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def synthetic_curve(bs: int, lr: float, epochs: int, rng: random.Random):
    """Plausible curves: training accuracy rises to ~1, test accuracy peaks lower when
    batch size / learning rate is large (the paper's effect), plus noise."""
    ratio = bs / lr
    speed = 0.02 + 0.15 * lr
    ceiling = 0.95 - 0.00003 * ratio
    out = []
    for e in range(epochs):
        train = 1 - math.exp(-speed * (e + 1)) * 0.9
        test = ceiling * (1 - math.exp(-speed * (e + 1))) + rng.gauss(0, 0.004)
        out.append((e, -math.log(max(1 - train, 1e-4)) / 5, min(train, 1.0),
                    1.5 - test, max(min(test, 1.0), 0.0)))
    return out


def build_paper_store(path: Path, epochs: int = EPOCHS, seed: int = 0) -> dict:
    """Write a paper-size store with bulk inserts (not through ``record_epoch``)."""
    rng = random.Random(seed)
    cells = [{"model": m, "dataset": d, "batch_size": b, "learning_rate": lr, "seed": 0}
             for m in MODELS for d in DATASETS for b in BATCH_SIZES for lr in LEARNING_RATES]
    store = Store(path)
    spec = {"name": "paper", "epochs": epochs, "models": list(MODELS),
            "datasets": list(DATASETS), "batch_sizes": list(BATCH_SIZES),
            "learning_rates": list(LEARNING_RATES)}
    study_id = store.create_study("paper", spec, cells, {"host": "bench"})
    ids = [r[0] for r in store.conn.execute(
        "SELECT cell_id FROM cells WHERE study_id = ? ORDER BY cell_id", (study_id,))]
    n = len(ids)
    running = set(ids[n - 60:n - 40])  # one pack of 20, mid-way
    pending = set(ids[n - 40:])
    diverged = {i for i in ids[: n - 60] if rng.random() < 0.02}
    now = datetime.now(timezone.utc)
    start = now - timedelta(hours=20)
    total_rows = 0
    epoch_rows, updates = [], []
    for k, (cell_id, cell) in enumerate(zip(ids, cells)):
        if cell_id in pending:
            continue
        done_epochs = epochs // 2 if cell_id in running else epochs
        if cell_id in diverged:
            done_epochs = rng.randint(3, 30)
        curve = synthetic_curve(cell["batch_size"], cell["learning_rate"], done_epochs, rng)
        for e, tl, ta, vl, va in curve:
            # Finished cells spread over the past 20 h; the running pack's last epochs
            # fall in the last minutes (what the rate window sees).
            if cell_id in running:
                moment = now - timedelta(seconds=(done_epochs - e) * 9)
            else:
                moment = start + timedelta(seconds=(k * epochs + e) * 0.2)
            epoch_rows.append((cell_id, e, tl, ta, vl, va, 30.0, _iso(moment)))
        total_rows += len(curve)
        best = max(curve, key=lambda r: (r[4], -r[0]))
        last = curve[-1]
        status = ("running" if cell_id in running else
                  "diverged" if cell_id in diverged else "done")
        updates.append((status, "bench-host:4242" if status == "running" else None,
                        _iso(now) if status == "running" else None, len(curve), best[4],
                        best[0], last[1], last[2], last[3], last[4],
                        last[0] + 1 if status == "diverged" else None, cell_id))
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO epochs (cell_id, epoch, train_loss, train_accuracy, test_loss, "
            "test_accuracy, wall_seconds, recorded_at) VALUES (?,?,?,?,?,?,?,?)", epoch_rows)
        conn.executemany(
            "UPDATE cells SET status = ?, worker = ?, heartbeat_at = ?, epochs_done = ?, "
            "best_test_accuracy = ?, best_epoch = ?, final_train_loss = ?, "
            "final_train_accuracy = ?, final_test_loss = ?, final_test_accuracy = ?, "
            "diverged_epoch = ?, pack_id = CASE WHEN ? IS NULL THEN NULL ELSE 'pack-r' END "
            "WHERE cell_id = ?",
            [u[:11] + (u[1], u[11]) for u in updates])
    store.close()
    return {"cells": n, "epoch_rows": total_rows, "running": sorted(running),
            "pending": len(pending), "diverged": len(diverged)}


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def report(label: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(f"  {label:<58} min {min(ms):8.1f} ms   median {statistics.median(ms):8.1f} ms"
          f"   (n={len(ms)})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="where to build the store (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-ui", action="store_true", help="skip the interface timings")
    args = parser.parse_args(argv)
    tmp = tempfile.TemporaryDirectory()
    path = Path(args.db) if args.db else Path(tmp.name) / "paper.db"
    if path.exists():
        sys.exit(f"{path} exists; give a new path.")
    t = time.perf_counter()
    facts = build_paper_store(path)
    print(f"built {path}: {facts['cells']} cells, {facts['epoch_rows']:,} epoch rows "
          f"({len(facts['running'])} running, {facts['pending']} pending, "
          f"{facts['diverged']} diverged) in {time.perf_counter() - t:.1f} s")
    import tui.data  # noqa: F401  (the imports are not part of a refresh)

    print("refresh (tui.data.DashboardData.refresh):")
    report("first load (fresh reader, all epoch rows, no Spearman)",
           timed(lambda: DashboardData(path).refresh(), max(2, args.repeats // 2)))

    def first_with_spearman():
        reader = DashboardData(path)
        reader.wanted = {("paper", MODELS[0], DATASETS[0], METRICS[0])}  # the paper's measure
        assert reader.refresh().spearman
    report("first load + one grid's Spearman (as on the Spearman screen)",
           timed(first_with_spearman, max(2, args.repeats // 2)))

    reader = DashboardData(path)
    # The Spearman screen on the grid that is training (where cells finish).
    reader.wanted = {("paper", MODELS[-1], DATASETS[-1], METRICS[0])}  # the paper's measure
    reader.refresh()
    report("refresh with nothing new", timed(reader.refresh, args.repeats * 2))

    writer = Store(path)
    running = list(facts["running"])
    next_epoch = {c: EPOCHS // 2 for c in running}

    def add_rows(k: int = 5) -> None:
        for cell_id in running[:k]:
            writer.record_epoch(cell_id, next_epoch[cell_id],
                                {"train_loss": 0.1, "train_accuracy": 0.97,
                                 "test_loss": 0.5, "test_accuracy": 0.9}, 30.0)
            next_epoch[cell_id] += 1

    samples = []
    for _ in range(args.repeats * 2):
        add_rows()
        t = time.perf_counter()
        snap = reader.refresh()
        samples.append(time.perf_counter() - t)
    assert snap.ok
    report("incremental refresh (5 new epoch rows)", samples)

    samples = []
    for cell_id in running[: args.repeats]:
        writer.finish_cell(cell_id, "done")
        t = time.perf_counter()
        reader.refresh()
        samples.append(time.perf_counter() - t)
    report("refresh after a cell finished (+ that grid's Spearman)", samples)
    writer.close()

    print("parts:")
    from kerasgen.store import connect_readonly

    conn = connect_readonly(path)
    conn_frame = cells_frame(read_cells(conn))
    group = conn_frame[(conn_frame.model == MODELS[0]) & (conn_frame.dataset == DATASETS[0])]
    report("tui.data.read_cells (the cells table, every refresh)",
           timed(lambda: read_cells(conn), args.repeats))
    report("Spearman, one grid x 3 metrics (Tables 1-3, directions, premise)",
           timed(lambda: [build_spearman(group, m) for m in METRICS], args.repeats))
    report("Spearman, all 4 grids x 3 metrics",
           timed(lambda: [build_spearman(g, m) for _, g in
                          conn_frame.groupby(["model", "dataset"]) for m in METRICS],
                 max(2, args.repeats // 2)))
    report("kerasgen.store.read_new_epochs from 0 (for comparison)",
           timed(lambda: read_new_epochs(path, 0), 2))
    report("kerasgen.store.load_results (for comparison)",
           timed(lambda: load_results(conn), args.repeats))
    conn.close()
    if not args.no_ui:
        import asyncio

        print("interface (App.run_test at 120x40; process CPU time, so the 'm' key on the "
              "Spearman screen includes the polling thread computing that metric's tables):")
        asyncio.run(_bench_interface(path, args.repeats))
    tmp.cleanup()
    return 0


async def _bench_interface(path: Path, repeats: int) -> None:
    """What a snapshot and a key press cost the interface thread: the refresh itself
    runs in the polling thread and is left out here (it is timed above)."""
    from tui.app import DashboardApp

    app = DashboardApp(path, interval=3600)
    async with app.run_test(size=(120, 40)) as pilot:
        while app.refreshes == 0:
            await pilot.pause(0.05)
        writer = Store(path)
        running = [r[0] for r in writer.conn.execute(
            "SELECT cell_id FROM cells WHERE status = 'running' ORDER BY cell_id")]
        for mode, key in (("overview", "m"), ("heatmap", "down"), ("spearman", "m")):
            await pilot.press(mode[0])
            while mode == "spearman" and app.view.spearman is None:
                await pilot.pause(0.05)
            await pilot.pause(0.3)
            applied, pressed = [], []
            for _ in range(repeats * 2):
                for cell_id in running[:5]:
                    done = writer.cell(cell_id)["epochs_done"]
                    writer.record_epoch(cell_id, done, {"train_accuracy": 0.9,
                                                        "test_accuracy": 0.8}, 1.0)
                snapshot = app._data.refresh()  # the polling thread's job, done here
                cpu = time.process_time()
                app.apply_snapshot(snapshot)
                await pilot.pause(0.2)
                applied.append(time.process_time() - cpu)
                cpu = time.process_time()
                await pilot.press(key)
                await pilot.pause(0.2)
                pressed.append(time.process_time() - cpu)
            report(f"{mode}: apply a snapshot and redraw", applied)
            report(f"{mode}: key {key!r} and redraw", pressed)
        writer.close()


if __name__ == "__main__":
    sys.exit(main())
