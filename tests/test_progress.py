"""Claims about progress (kerasgen.progress): one ETA for a study, the work left at the
whole study's rate, with the epochs of unfinished cells estimated from the finished cells
of their grid under a stop rule; the CLI's lines and the dashboard share the estimate.

The simulated store: a study with a train-loss stop rule and a cap of 30 epochs, two
grids of 4 cells. resnet8 has two cells done after 5 and 9 epochs, one running at epoch
3 and one pending; vgg11 has not started. 17 epochs were recorded, one every 10 s, the
last 10 s before NOW: 17 epochs in 170 s, 0.1 epochs/s.

By hand: resnet8's cells take (5 + 9) / 2 = 7 epochs; the running cell needs 7 - 3 = 4
more, the pending one 7: 11. vgg11 has no finished cell: 4 x the cap, 120. 131 epochs at
0.1 epochs/s: 1310 s, "21m50s". The old ETA (the largest of the groups' ETAs, the cap for
every unfinished cell) said 27+30 = 57 epochs at resnet8's rate, and nothing for vgg11.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest

from kerasgen.display import summary_line
from kerasgen.progress import estimate, format_duration, study_progress
from kerasgen.store import Store

NOW = datetime(2025, 1, 1, 12, 5, 0, tzinfo=timezone.utc)
WORKER = "gpu-a.invalid:101"
LOGS = {"train_loss": 1.0, "train_accuracy": 0.5, "test_loss": 1.0, "test_accuracy": 0.5}


def build(path, stop=True) -> None:
    cells = [{"model": m, "dataset": "digits", "batch_size": b, "learning_rate": 0.1,
              "seed": 0} for m in ("resnet8", "vgg11") for b in (16, 32, 64, 128)]
    spec = {"name": "s", "epochs": 30, "models": ["resnet8", "vgg11"], "datasets": ["digits"]}
    if stop:
        spec["stop"] = {"rule": "train_loss", "threshold": 0.05}
    with Store(path) as store:
        study = store.create_study("s", spec, cells, {"host": "test"})
        for epochs in (5, 9):
            claim = store.claim_pack(study, WORKER, 1)
            for e in range(epochs):
                store.record_epoch(claim.cells[0]["cell_id"], e, LOGS, 1.0, claim=claim)
            store.finish_cell(claim.cells[0]["cell_id"], "done", claim=claim)
        claim = store.claim_pack(study, WORKER, 1)
        for e in range(3):
            store.record_epoch(claim.cells[0]["cell_id"], e, LOGS, 1.0, claim=claim)
    conn = sqlite3.connect(path)
    n = conn.execute("SELECT COUNT(*) FROM epochs").fetchone()[0]
    assert n == 17
    conn.execute("UPDATE epochs SET recorded_at = strftime('%Y-%m-%dT%H:%M:%fZ', "
                 "'2025-01-01 12:04:50', ((rowid - ?) * 10) || ' seconds')", (n,))
    conn.execute("UPDATE cells SET heartbeat_at = '2025-01-01T12:04:59.000Z' "
                 "WHERE status = 'running'")
    conn.commit()
    conn.close()


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "p.db"
    build(path)
    return path


def test_one_eta_for_the_study_with_a_grid_not_started_and_a_stop_rule(db):
    groups = study_progress(db, now=NOW)
    resnet, vgg = groups
    assert resnet.expected_epochs == 7.0 and vgg.expected_epochs == 30.0
    assert resnet.epochs_remaining == 11 and vgg.epochs_remaining == 120
    assert vgg.eta_seconds is None  # no rate of its own
    e = estimate(groups)
    assert e.epochs_per_second == pytest.approx(0.1)
    assert e.epochs_remaining == 131
    assert e.eta_seconds == pytest.approx(1310.0)
    assert format_duration(e.eta_seconds) == "21m50s"
    assert (e.cells, e.finished, e.epochs_done, e.epochs_total) == (8, 2, 17, 148)
    assert e.estimated and e.epochs_text() == "17/≈148 epochs"


def test_progress_counts_cells_first_and_epochs_second(db):
    line = summary_line(study_progress(db, now=NOW))
    assert line.startswith("2/8 cells finished (17/≈148 epochs), 1 running")
    assert line.endswith("0.10 epochs/s, ETA 21m50s")
    resnet = study_progress(db, now=NOW)[0]
    assert resnet.fraction == 0.5  # 2 of 4 cells, not 17 of 4 x 30 epochs


def test_without_a_stop_rule_unfinished_cells_take_the_cap(tmp_path):
    build(tmp_path / "e.db", stop=False)
    e = estimate(study_progress(tmp_path / "e.db", now=NOW))
    # running: 30 - 3; pending resnet8: 30; vgg11: 4 x 30.
    assert e.epochs_remaining == 27 + 30 + 120 and not e.estimated
    assert e.eta_seconds == pytest.approx(1770.0)


def test_the_dashboard_shows_the_same_estimate(db):
    from tui.data import DashboardData

    snapshot = DashboardData(db).refresh(NOW)
    (study,) = snapshot.studies
    assert study.eta == "21m50s" and study.epochs_text == "17/≈148 epochs"
    assert study.stop == "train loss < 0.05" and study.finished == 2
    from tui.screens.overview import studies_text

    text = studies_text(snapshot).plain
    assert "2/8 cells · 17/≈148 epochs · ETA 21m50s" in text
    assert "30 epochs each" not in text and "until train loss < 0.05, at most 30" in text
