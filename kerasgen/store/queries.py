"""Reads: every SELECT kerasgen makes outside the writer. ``load_results``/``load_epochs``
for people and pandas, the one cell-summary query (``read_cell_rows``) that the report
and the dashboard share, progress counts, the dashboard's incremental reads, bounds.
Paths are opened read-only; an open connection (or Store) may be passed instead."""

from __future__ import annotations

import json
import sqlite3
from typing import Sequence

import pandas as pd

from kerasgen.store.common import BOUND_COLUMNS, StoreError
from kerasgen.store.files import connect_readonly
from kerasgen.store.writer import Store

RESULT_COLUMNS = [
    "study", "cell_id", "model", "dataset", "batch_size", "learning_rate", "seed", "ratio",
    "status", "best_metric", "kept_epoch", "test_accuracy", "test_loss",
    "train_eval_accuracy", "train_eval_loss", "gap", "loss_gap", "val_accuracy", "val_loss",
    "best_test_accuracy",
    "best_epoch", "final_train_accuracy", "final_train_loss", "final_test_accuracy",
    "final_test_loss", "final_train_eval_accuracy", "final_train_eval_loss", "epochs_done",
    "diverged_epoch", "last_batch", "error", "worker", "pack_id", "attempts", "failures",
    "heartbeat_at", "started_at", "finished_at", "updated_at", "hparams", "trained_under",
]

_OPERATIONAL = ("c.error, c.worker, c.pack_id, c.attempts, c.failures, c.heartbeat_at, "
                "c.started_at, c.finished_at, c.updated_at")
_LAST_BATCH_SQL = "COALESCE(json_extract(s.spec_json, '$.training.last_batch'), 'keep')"

# A store written before migration 4 (read, never migrated, by a reader): the same
# columns, with NULL clean metrics and the kept epoch as the paper's.
_LEGACY_RESULTS_SQL = (
    "SELECT s.name AS study, c.cell_id, c.model, c.dataset, c.batch_size, c.learning_rate, "
    "c.seed, c.batch_size / c.learning_rate AS ratio, c.status, "
    "'test_accuracy' AS best_metric, c.best_epoch AS kept_epoch, "
    "c.best_test_accuracy AS test_accuracy, "
    "(SELECT e.test_loss FROM epochs e WHERE e.cell_id = c.cell_id AND e.epoch = c.best_epoch)"
    " AS test_loss, NULL AS train_eval_accuracy, NULL AS train_eval_loss, NULL AS gap, "
    "NULL AS loss_gap, c.best_test_accuracy, c.best_epoch, c.final_train_accuracy, "
    "c.final_train_loss, c.final_test_accuracy, c.final_test_loss, "
    "NULL AS final_train_eval_accuracy, NULL AS final_train_eval_loss, c.epochs_done, "
    f"c.diverged_epoch, {_LAST_BATCH_SQL} AS last_batch, {_OPERATIONAL} "
    "FROM cells c JOIN studies s USING (study_id)")
_RESULTS_SQL = (
    f"SELECT b.*, {_LAST_BATCH_SQL} AS last_batch, {_OPERATIONAL} "
    "FROM best b JOIN cells c USING (cell_id) JOIN studies s ON s.study_id = c.study_id")


def check_study(conn: sqlite3.Connection, study: str | None) -> None:
    """Refuse a study the store does not hold (a typo would read as 0 rows), naming
    those it holds."""
    if study is None:
        return
    names = [r[0] for r in conn.execute("SELECT name FROM studies ORDER BY study_id")]
    if study not in names:
        held = ", ".join(map(repr, names)) if names else "none"
        raise StoreError(f"This store holds no study named {study!r}; the studies it "
                         f"holds: {held}.")


def has_clean_metrics(conn: sqlite3.Connection) -> bool:
    """Whether the store has the clean training metrics' columns (schema >= 4)."""
    return _has_column(conn, "cells", "kept_epoch")


def _has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    return any(r[1] == column for r in conn.execute(f"PRAGMA table_info({table})"))


def _reader(db) -> tuple[sqlite3.Connection, bool]:
    if isinstance(db, sqlite3.Connection):
        return db, False
    if isinstance(db, Store):
        return db.conn, False
    return connect_readonly(db), True


def read_cell_rows(conn: sqlite3.Connection, study: str | None = None,
                   order: str = "cell_id") -> tuple[list[str], list[tuple]]:
    """The one cell-summary query (``RESULT_COLUMNS``) as plain tuples: what
    ``load_results`` and the dashboard read. ``order``: ``"cell_id"``, or ``"grid"``
    (study, model, dataset, seed, cell id: the dashboard's grids)."""
    sql = _RESULTS_SQL if has_clean_metrics(conn) else _LEGACY_RESULTS_SQL
    hparams = "c.hparams_json" if _has_column(conn, "cells", "hparams_json") else "NULL"
    # A store read (never migrated) before its validation columns existed: NULL.
    val = ("" if _has_column(conn, "epochs", "val_accuracy")
           else "NULL AS val_accuracy, NULL AS val_loss, ")
    # The kernel settings its (last) worker recorded: runtime.describe_kernels of the
    # study's "worker <name>" entry.
    worker_env = ("json_extract(st.environment_json, '$.\"worker ' || c.worker || '\"')"
                  if _has_column(conn, "studies", "environment_json") else "NULL")
    sql = (f"SELECT r.*, {val}{hparams} AS hparams, {worker_env} AS trained_under "
           f"FROM ({sql}) r "
           "JOIN studies st ON st.name = r.study JOIN cells c ON c.cell_id = r.cell_id")
    params: tuple = ()
    if study is not None:
        sql += " WHERE r.study = ?"
        params = (study,)
    sql += {"cell_id": " ORDER BY r.cell_id",
            "grid": " ORDER BY st.study_id, r.model, r.dataset, r.seed, r.cell_id"}[order]
    try:
        cursor = conn.execute(sql, params)
    except sqlite3.OperationalError as exc:
        raise (damaged_specifications(conn) or exc) from None
    columns = [d[0] for d in cursor.description]
    try:
        return columns, cursor.fetchall()
    except sqlite3.OperationalError as exc:
        raise (damaged_specifications(conn) or exc) from None


def damaged_specifications(conn: sqlite3.Connection) -> StoreError | None:
    """A StoreError naming the studies whose stored specification is not JSON (the views
    read it), or None when every one is."""
    bad = [r[0] for r in conn.execute("SELECT name FROM studies WHERE NOT json_valid(spec_json)")]
    if not bad:
        return None
    return StoreError(f"The specification of study {', '.join(map(repr, bad))} in this store "
                      "is damaged (not JSON): its results cannot be read. Restore the store "
                      "from a copy.")




def load_results(db, study: str | None = None) -> pd.DataFrame:
    """One row per cell (columns ``RESULT_COLUMNS``): the grid's coordinates,
    ``ratio = batch_size / learning_rate``, status, and every number at the kept epoch
    (``kept_epoch``, chosen by the study's ``best_metric``): ``test_accuracy``,
    ``test_loss``, the clean training metrics ``train_eval_accuracy`` /
    ``train_eval_loss``, ``gap`` (train_eval_accuracy - test_accuracy) and ``loss_gap``
    (test_loss - train_eval_loss), ``val_accuracy`` / ``val_loss`` (the validation images
    held out of the training set, NaN without ``training.validation_size``); beside them
    ``best_test_accuracy`` (the highest of any epoch, the paper's measure) and the last
    epoch's ``final_*`` values (``final_train_*``: Keras's running averages).

    ``db`` is a path (opened read-only) or an open connection. Accuracies are fractions
    in [0, 1]; cells with no finished epoch, and clean metrics a store written before
    they existed lacks, are NaN.
    """
    conn, owned = _reader(db)
    try:
        check_study(conn, study)
        columns, rows = read_cell_rows(conn, study)
    finally:
        if owned:
            conn.close()
    frame = pd.DataFrame(rows, columns=columns)
    frame["trained_under"] = [_kernels(text) for text in frame["trained_under"]]
    for col in ("best_epoch", "kept_epoch", "diverged_epoch"):
        frame[col] = frame[col].astype(float)
    for col in ("ratio", "test_accuracy", "test_loss", "train_eval_accuracy", "train_eval_loss",
                "gap", "loss_gap", "val_accuracy", "val_loss", "best_test_accuracy",
                "final_train_accuracy", "final_train_loss", "final_test_accuracy",
                "final_test_loss", "final_train_eval_accuracy", "final_train_eval_loss"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    return frame[RESULT_COLUMNS]


def _kernels(text) -> str | None:
    if not isinstance(text, str) or not text:
        return None
    from kerasgen.settings import describe_kernels

    try:
        env = json.loads(text)
    except ValueError:
        return None
    return describe_kernels(env) if isinstance(env, dict) else None


def load_epochs(db, study: str | None = None, cell_ids: Sequence[int] | None = None,
                after: int = 0) -> pd.DataFrame:
    """Epoch rows (one per cell per epoch), joined with their cell's coordinates.

    ``wall_seconds`` is the epoch time of the fit that trained the cell, shared by its
    ``pack_cells`` cells (a pack); ``after`` is a marker from a previous read (see
    ``read_new_epochs``): only rows recorded after it are returned. The ``row`` column is
    that marker's unit.
    """
    conn, owned = _reader(db)
    try:
        check_study(conn, study)
        clean = ("e.train_eval_loss, e.train_eval_accuracy" if has_clean_metrics(conn)
                 else "NULL AS train_eval_loss, NULL AS train_eval_accuracy")
        cells = "e.pack_cells" if _has_column(conn, "epochs", "pack_cells") else "NULL"
        val = ("e.val_loss, e.val_accuracy" if _has_column(conn, "epochs", "val_accuracy")
               else "NULL AS val_loss, NULL AS val_accuracy")
        sql = ("SELECT e.rowid AS row, s.name AS study, e.cell_id, c.model, c.dataset, "
               "c.batch_size, c.learning_rate, c.seed, e.epoch, e.train_loss, "
               f"e.train_accuracy, e.test_loss, e.test_accuracy, {clean}, {val}, "
               "e.wall_seconds, "
               f"{cells} AS pack_cells, e.metrics_json, e.recorded_at FROM epochs e "
               "JOIN cells c USING (cell_id) JOIN studies s USING (study_id) WHERE e.rowid > ?")
        params: list = [int(after)]
        if study is not None:
            sql += " AND s.name = ?"
            params.append(study)
        if cell_ids is not None:
            ids = [int(i) for i in cell_ids]
            sql += f" AND e.cell_id IN ({','.join('?' * len(ids)) or 'NULL'})"
            params.extend(ids)
        sql += " ORDER BY e.rowid"
        return pd.read_sql_query(sql, conn, params=params)
    finally:
        if owned:
            conn.close()


def read_new_epochs(db, marker: int = 0) -> tuple[pd.DataFrame, int]:
    """Incremental read for a live dashboard: the epoch rows recorded after ``marker``,
    and the new marker. Rows are only ever inserted (a resumed pack replays nothing), so
    ``rowid`` only grows."""
    frame = load_epochs(db, after=marker)
    new_marker = int(frame["row"].iloc[-1]) if len(frame) else int(marker)
    return frame, new_marker


def _read_frame(db, sql: str) -> pd.DataFrame:
    conn, owned = _reader(db)
    try:
        return pd.read_sql_query(sql, conn)
    finally:
        if owned:
            conn.close()


def load_studies(db) -> pd.DataFrame:
    """One row per study: its specification, environment and creation."""
    return _read_frame(db, "SELECT * FROM studies ORDER BY study_id")


def load_progress(db) -> pd.DataFrame:
    """The ``progress`` view: cells per status per (study, model, dataset)."""
    return _read_frame(db, "SELECT * FROM progress")





# ---------------------------------------------------------------- progress

def progress_rows(conn: sqlite3.Connection, since: str) -> dict:
    """What ``kerasgen.progress`` summarizes, in one read: the epoch cap of each study
    (``caps``) and its stop rule (``stops``: "epochs", "train_loss"), cells and epochs
    per (study, model, dataset, status) (``counts``), epochs
    recorded after ``since`` per (study, model, dataset) with the first time
    (``recent``), the running cells with their workers and heartbeats (``running``), and
    each study's recorded environment (``environments``: a worker's stale limit)."""
    import json

    caps, stops = {}, {}
    for name, spec in conn.execute("SELECT name, spec_json FROM studies"):
        try:
            data = json.loads(spec)
            caps[name] = int(data.get("epochs", 0) or 0)
        except (ValueError, TypeError, AttributeError):
            caps[name], data = 0, {}
        stop = data.get("stop") if isinstance(data, dict) else None
        stops[name] = str(stop.get("rule") or "epochs") if isinstance(stop, dict) else "epochs"
    counts = conn.execute(
        "SELECT s.name, c.model, c.dataset, c.status, COUNT(*), SUM(c.epochs_done) "
        "FROM cells c JOIN studies s USING (study_id) "
        "GROUP BY s.name, c.model, c.dataset, c.status").fetchall()
    recent = conn.execute(
        "SELECT s.name, c.model, c.dataset, COUNT(*), MIN(e.recorded_at) "
        "FROM epochs e JOIN cells c USING (cell_id) JOIN studies s USING (study_id) "
        "WHERE e.recorded_at > ? GROUP BY s.name, c.model, c.dataset", (since,)).fetchall()
    running = conn.execute(
        "SELECT s.name, c.model, c.dataset, c.worker, c.cell_id, c.batch_size, "
        "c.learning_rate, c.epochs_done, c.heartbeat_at FROM cells c "
        "JOIN studies s USING (study_id) "
        "WHERE c.status = 'running' ORDER BY c.worker, c.learning_rate").fetchall()
    environments = {}
    for name, env in conn.execute("SELECT name, environment_json FROM studies"):
        try:
            environments[name] = json.loads(env or "{}")
        except ValueError:
            environments[name] = {}
    return {"caps": caps, "stops": stops, "counts": counts, "recent": recent,
            "running": running, "environments": environments}


# ---------------------------------------------------------------- the dashboard

def study_overview(conn: sqlite3.Connection) -> list[tuple]:
    """(name, spec_json, created_at, cells) of every study, in creation order."""
    return conn.execute(
        "SELECT s.name, s.spec_json, s.created_at, COUNT(c.cell_id) FROM studies s "
        "LEFT JOIN cells c USING (study_id) GROUP BY s.study_id ORDER BY s.study_id").fetchall()


def last_epoch_row(conn: sqlite3.Connection) -> int:
    """The marker of the newest epoch row (rows are only ever inserted: it only grows)."""
    return int(conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM epochs").fetchone()[0])


def epoch_curve_rows(conn: sqlite3.Connection, after: int, upto: int,
                     study: str | None = None) -> list[tuple]:
    """Epoch rows with ``after < rowid <= upto`` as tuples (cell_id, epoch, train_accuracy,
    test_accuracy, train_loss, test_loss, train_eval_accuracy): the dashboard's curves.
    No join, no text columns: the first read of a paper-size store is 320,000 rows."""
    clean = "train_eval_accuracy" if has_clean_metrics(conn) else "NULL"
    sql = ("SELECT cell_id, epoch, train_accuracy, test_accuracy, train_loss, test_loss, "
           f"{clean} FROM epochs WHERE rowid > ? AND rowid <= ?")
    params: list = [int(after), int(upto)]
    if study is not None:
        sql += (" AND cell_id IN (SELECT cell_id FROM cells WHERE study_id = "
                "(SELECT study_id FROM studies WHERE name = ?))")
        params.append(study)
    return conn.execute(sql, params).fetchall()


# ---------------------------------------------------------------- studies and bounds

def study_uids(db) -> dict[str, str | None]:
    """Study name -> uid (None for a store written before studies had one)."""
    conn, owned = _reader(db)
    try:
        has_uid = any(r[1] == "uid" for r in conn.execute("PRAGMA table_info(studies)"))
        return dict(conn.execute(
            f"SELECT name, {'uid' if has_uid else 'NULL'} FROM studies").fetchall())
    finally:
        if owned:
            conn.close()


def load_bound_rows(db) -> pd.DataFrame:
    """The ``bounds`` table (empty with its columns on a store that has none yet)."""
    conn, owned = _reader(db)
    try:
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'bounds'"
                           ).fetchone()
        if not has:
            return pd.DataFrame(columns=BOUND_COLUMNS)
        return pd.read_sql_query("SELECT * FROM bounds ORDER BY cell_id, params", conn)
    finally:
        if owned:
            conn.close()


def bound_cell_ids(db, params: str) -> set[int]:
    """Cells that already have bound terms for ``params``."""
    conn, owned = _reader(db)
    try:
        has = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'bounds'"
                           ).fetchone()
        if not has:
            return set()
        return {int(r[0]) for r in conn.execute("SELECT cell_id FROM bounds WHERE params = ?",
                                                (params,))}
    finally:
        if owned:
            conn.close()


# ---------------------------------------------------------------- measures

MEASURE_COLUMNS = ["cell_id", "measure", "settings_key", "value", "estimator",
                   "settings_json", "details_json", "weights", "weights_epoch", "kept_epoch",
                   "seconds", "computed_at"]


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def load_measure_rows(db, study: str | None = None) -> pd.DataFrame:
    """The ``measures`` table (``MEASURE_COLUMNS``) with the study of each row, ordered by
    cell and measure; empty with its columns on a store that has none yet."""
    conn, owned = _reader(db)
    try:
        if not _has_table(conn, "measures"):
            return pd.DataFrame(columns=["study", *MEASURE_COLUMNS])
        sql = ("SELECT s.name AS study, m.* FROM measures m JOIN cells c USING (cell_id) "
               "JOIN studies s USING (study_id)")
        params: tuple = ()
        if study is not None:
            sql += " WHERE s.name = ?"
            params = (study,)
        return pd.read_sql_query(sql + " ORDER BY m.cell_id, m.measure, m.computed_at",
                                 conn, params=params)
    finally:
        if owned:
            conn.close()


def measure_keys(db) -> set[tuple[int, str, str]]:
    """(cell_id, measure, settings_key) of every stored measure."""
    conn, owned = _reader(db)
    try:
        if not _has_table(conn, "measures"):
            return set()
        return {(int(c), str(m), str(k)) for c, m, k in
                conn.execute("SELECT cell_id, measure, settings_key FROM measures")}
    finally:
        if owned:
            conn.close()


def measure_signature(conn: sqlite3.Connection) -> tuple[int, str | None]:
    """(rows, newest computed_at) of the measures table: what changes when a measure
    arrives (the dashboard recomputes its ranking only then)."""
    if not _has_table(conn, "measures"):
        return (0, None)
    count, newest = conn.execute("SELECT COUNT(*), MAX(computed_at) FROM measures").fetchone()
    return int(count), newest


__all__ = ["BOUND_COLUMNS", "MEASURE_COLUMNS", "RESULT_COLUMNS", "bound_cell_ids",
           "epoch_curve_rows", "has_clean_metrics", "last_epoch_row", "load_bound_rows",
           "load_epochs", "load_measure_rows", "load_progress", "load_results",
           "load_studies", "measure_keys", "measure_signature", "progress_rows",
           "read_cell_rows", "read_new_epochs", "study_overview", "study_uids"]
