"""Claims about the store's names for people: the view ``cell_results`` (``best`` an
alias), an exact ``ratio``, Parquet types, and ``load_results`` refusing a study the
store does not hold."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest

from kerasgen.export import export_tables
from kerasgen.spec import preset
from kerasgen.store import Store, StoreError, load_epochs, load_results

WORKER = "host.invalid:1"
LOGS = {"train_loss": 1.0, "train_accuracy": 0.5, "test_loss": 1.2, "test_accuracy": 0.45}


@pytest.fixture
def paper_grid(tmp_path):
    """The paper's batch sizes x learning rates, one model and data set."""
    spec = preset("paper")
    cells = [{"model": "resnet8", "dataset": "digits", "batch_size": b, "learning_rate": lr,
              "seed": 0} for b in spec.batch_sizes for lr in spec.learning_rates]
    path = tmp_path / "paper.db"
    with Store(path) as store:
        store.create_study("paper", {"name": "paper", "epochs": 2}, cells)
    return path, spec


def test_group_by_ratio_on_the_paper_grid_gives_the_exact_ratios(paper_grid):
    from fractions import Fraction

    path, spec = paper_grid
    exact = {Fraction(b) / Fraction(str(lr)) for b in spec.batch_sizes
             for lr in spec.learning_rates}
    assert len(exact) == 255
    conn = sqlite3.connect(path)
    floats = conn.execute("SELECT COUNT(DISTINCT batch_size / learning_rate) "
                          "FROM cells").fetchone()[0]
    assert floats == 258  # the float quotient splits equal ratios
    for view in ("cell_results", "best", "epochs_long"):
        if view == "epochs_long":
            continue  # no epochs yet; the same expression (checked below)
        groups = conn.execute(f"SELECT ratio, COUNT(*) FROM {view} GROUP BY ratio").fetchall()
        assert len(groups) == 255, view
        assert sorted(r for r, _ in groups) == pytest.approx(sorted(map(float, exact)),
                                                             rel=1e-9)
    assert len(load_results(path)["ratio"].unique()) == 255
    conn.close()


def test_cell_results_is_the_view_and_best_its_alias(tmp_path):
    path = tmp_path / "s.db"
    with Store(path) as store:
        study = store.create_study("s", {"name": "s"}, [
            {"model": "resnet8", "dataset": "digits", "batch_size": b, "learning_rate": 0.07,
             "seed": 0} for b in (16, 32)])
        while (claim := store.claim_pack(study, WORKER, 2)) is not None:
            for cell in claim.cells:
                for e in range(2):
                    store.record_epoch(cell["cell_id"], e, LOGS, 1.0, claim=claim)
                store.finish_cell(cell["cell_id"], "done", claim=claim)
    conn = sqlite3.connect(path)
    views = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'")}
    assert {"cell_results", "best", "epochs_long"} <= views
    a = conn.execute("SELECT * FROM cell_results ORDER BY cell_id").fetchall()
    b = conn.execute("SELECT * FROM best ORDER BY cell_id").fetchall()
    assert a == b and len(a) == 2
    ratios = [r[0] for r in conn.execute("SELECT DISTINCT ratio FROM epochs_long")]
    assert ratios == [pytest.approx(16 / 0.07), pytest.approx(32 / 0.07)]
    # 32 / 0.14 would be another float than 2 * 16 / 0.07; rounded, the same.
    assert conn.execute("SELECT ratio FROM cell_results WHERE batch_size = 32").fetchone()[0] \
        == round(32 / 0.07, 7)
    conn.close()


def test_load_results_refuses_a_study_the_store_does_not_hold(tmp_path):
    path = tmp_path / "s.db"
    with Store(path) as store:
        for name in ("mine", "theirs"):
            store.create_study(name, {"name": name}, [
                {"model": "resnet8", "dataset": "digits", "batch_size": 16,
                 "learning_rate": 0.1, "seed": 0}])
    with pytest.raises(StoreError, match="no study named 'Mine'.*'mine', 'theirs'"):
        load_results(path, study="Mine")
    with pytest.raises(StoreError, match="no study named 'Mine'"):
        load_epochs(path, study="Mine")
    assert len(load_results(path, study="mine")) == 1


def test_parquet_keeps_timestamps_as_timestamps_and_integers_as_integers(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "s.db"
    with Store(path) as store:
        study = store.create_study("s", {"name": "s"}, [
            {"model": "resnet8", "dataset": "digits", "batch_size": b, "learning_rate": 0.1,
             "seed": 0} for b in (16, 32)])
        claim = store.claim_pack(study, WORKER, 1)  # one cell done, one pending
        for e in range(3):
            store.record_epoch(claim.cells[0]["cell_id"], e, LOGS, 1.0, claim=claim)
        store.finish_cell(claim.cells[0]["cell_id"], "done", claim=claim)
    export_tables(path, tmp_path / "pq", "parquet")
    cells = pq.read_table(tmp_path / "pq" / "cells.parquet").schema
    epochs = pq.read_table(tmp_path / "pq" / "epochs.parquet").schema
    studies = pq.read_table(tmp_path / "pq" / "studies.parquet").schema
    import pyarrow as pa

    for schema, columns in ((cells, ("kept_epoch", "best_epoch", "diverged_epoch",
                                     "epochs_done", "batch_size", "seed", "cell_id")),
                            (epochs, ("epoch", "cell_id", "batch_size"))):
        for col in columns:
            assert pa.types.is_integer(schema.field(col).type), (col, schema.field(col).type)
    for schema, columns in ((cells, ("started_at", "finished_at", "heartbeat_at",
                                     "updated_at")), (epochs, ("recorded_at",)),
                            (studies, ("created_at",))):
        for col in columns:
            assert pa.types.is_timestamp(schema.field(col).type), (col, schema.field(col).type)
    frame = pd.read_parquet(tmp_path / "pq" / "cells.parquet")
    # The same values every epoch: the first is kept. The pending cell has none.
    assert str(frame["kept_epoch"].dtype) == "Int64" and frame["epochs_done"].tolist() == [3, 0]
    assert frame["kept_epoch"].tolist()[0] == 0 and pd.isna(frame["kept_epoch"].tolist()[1])
