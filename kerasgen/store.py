"""The results store: one SQLite file per study collection, that loses nothing.

- WAL journal, ``busy_timeout``, foreign keys, ``synchronous=NORMAL`` (a committed
  transaction survives a killed process); every write is a short ``BEGIN IMMEDIATE``
  transaction, so a writer never holds the lock across training.
- ``PRAGMA application_id`` marks the file as a kerasgen store; ``PRAGMA user_version``
  is the schema version, raised by numbered migrations (recorded in ``migrations``).
  A file that is not a kerasgen store, is corrupt or truncated, or comes from a newer
  kerasgen is refused with a message saying which, and is never modified: it is first
  inspected through a read-only connection.
- Readers (``load_results``, ``load_epochs``, the dashboard) use read-only connections
  (``mode=ro``) and never block a writer.

Tables: ``studies`` (spec as JSON, versions, host), ``cells`` (one trained model, its
status and summary), ``epochs`` (one row per cell per epoch). Views: ``best`` (one row
per cell, for people) and ``progress`` (counts by status). The README documents them.

This module imports no TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sqlite3
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import pandas as pd

# "kgen" in ASCII: lets `file`-like tools and this module recognize a store.
APPLICATION_ID = 0x6B67656E
STATUSES = ("pending", "running", "done", "diverged", "failed")
FINISHED = ("done", "diverged")
DEFAULT_STALE_SECONDS = 600.0
DEFAULT_MAX_ATTEMPTS = 3
BUSY_TIMEOUT_MS = 30_000
"""How long one SQLite call waits for a lock (``KERASGEN_BUSY_TIMEOUT_MS`` overrides it,
for tests). Past it a write does not fail: it reports who holds the lock and waits on."""
LOCK_REPORT_SECONDS = 60.0
"""While a write waits for the lock, how often it says so again."""


def busy_timeout_ms() -> int:
    try:
        return max(int(os.environ.get("KERASGEN_BUSY_TIMEOUT_MS", BUSY_TIMEOUT_MS)), 1)
    except ValueError:
        return BUSY_TIMEOUT_MS

# Columns of `epochs` with a fixed meaning; other numbers Keras reports go to metrics_json.
# train_loss/train_accuracy: Keras's running averages over the epoch; train_eval_*: the
# clean training metrics (a fixed training subset, measured as the test set).
EPOCH_COLUMNS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
                 "train_eval_loss", "train_eval_accuracy")


class StoreError(RuntimeError):
    """The file cannot be used as a kerasgen store; the message says why and what to do."""


class StudyMismatch(StoreError):
    """A study of that name exists with a different specification."""


class ClaimLost(StoreError):
    """This worker's claim on a pack was taken over (its heartbeat went stale)."""


def utc_now() -> str:
    """ISO-8601 UTC with milliseconds: sortable as text."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _utc_ago(seconds: float) -> str:
    moment = datetime.now(timezone.utc) - timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- schema and migrations

def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute SQL statements one by one inside the caller's transaction
    (``executescript`` would COMMIT first, breaking the migration's atomicity)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"Incomplete SQL statement in migration: {statement!r}")


def _migration_1(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        CREATE TABLE migrations (
            version     INTEGER PRIMARY KEY,
            name        TEXT NOT NULL,
            applied_at  TEXT NOT NULL
        );
        CREATE TABLE studies (
            study_id            INTEGER PRIMARY KEY,
            name                TEXT NOT NULL UNIQUE,
            spec_json           TEXT NOT NULL,
            spec_hash           TEXT NOT NULL,
            kerasgen_version    TEXT,
            tensorflow_version  TEXT,
            keras_version       TEXT,
            python_version      TEXT,
            host                TEXT,
            device              TEXT,
            environment_json    TEXT,
            created_at          TEXT NOT NULL
        );
        CREATE TABLE cells (
            cell_id               INTEGER PRIMARY KEY,
            study_id              INTEGER NOT NULL REFERENCES studies(study_id) ON DELETE CASCADE,
            model                 TEXT NOT NULL,
            dataset               TEXT NOT NULL,
            batch_size            INTEGER NOT NULL CHECK (batch_size > 0),
            learning_rate         REAL NOT NULL CHECK (learning_rate > 0),
            seed                  INTEGER NOT NULL,
            status                TEXT NOT NULL DEFAULT 'pending'
                                  CHECK (status IN ('pending','running','done','diverged','failed')),
            pack_id               TEXT,
            worker                TEXT,
            device                TEXT,
            attempts              INTEGER NOT NULL DEFAULT 0,
            failures              INTEGER NOT NULL DEFAULT 0,
            heartbeat_at          TEXT,
            started_at            TEXT,
            finished_at           TEXT,
            epochs_done           INTEGER NOT NULL DEFAULT 0,
            best_test_accuracy    REAL,
            best_epoch            INTEGER,
            final_train_loss      REAL,
            final_train_accuracy  REAL,
            final_test_loss       REAL,
            final_test_accuracy   REAL,
            diverged_epoch        INTEGER,
            error                 TEXT,
            updated_at            TEXT,
            UNIQUE (study_id, model, dataset, batch_size, learning_rate, seed)
        );
        CREATE INDEX cells_by_status ON cells(study_id, status);
        CREATE INDEX cells_by_pack ON cells(pack_id);
        CREATE TABLE epochs (
            cell_id         INTEGER NOT NULL REFERENCES cells(cell_id) ON DELETE CASCADE,
            epoch           INTEGER NOT NULL CHECK (epoch >= 0),
            train_loss      REAL,
            train_accuracy  REAL,
            test_loss       REAL,
            test_accuracy   REAL,
            wall_seconds    REAL,
            metrics_json    TEXT,
            recorded_at     TEXT NOT NULL,
            PRIMARY KEY (cell_id, epoch)
        );
        CREATE INDEX epochs_by_time ON epochs(recorded_at);
        CREATE VIEW best AS
            SELECT s.name AS study, c.cell_id, c.model, c.dataset, c.batch_size,
                   c.learning_rate, c.seed, c.batch_size / c.learning_rate AS ratio,
                   c.status, c.best_test_accuracy, c.best_epoch, c.final_train_accuracy,
                   c.final_train_loss, c.final_test_accuracy, c.epochs_done, c.diverged_epoch
            FROM cells c JOIN studies s USING (study_id);
        CREATE VIEW progress AS
            SELECT s.name AS study, c.model, c.dataset, COUNT(*) AS cells,
                   SUM(c.status = 'pending')  AS pending,
                   SUM(c.status = 'running')  AS running,
                   SUM(c.status = 'done')     AS done,
                   SUM(c.status = 'diverged') AS diverged,
                   SUM(c.status = 'failed')   AS failed,
                   SUM(c.epochs_done)         AS epochs_done
            FROM cells c JOIN studies s USING (study_id)
            GROUP BY s.name, c.model, c.dataset;
        """
    )


def _migration_2(conn: sqlite3.Connection) -> None:
    # Recent epochs per cell. The progress display counts the epochs recorded in the last
    # minutes per (study, model, dataset); SQLite runs that join from the cells, and with
    # only (cell_id, epoch) and (recorded_at) to choose from it read every epoch row of
    # every cell (~170 ms on a 320,000-row study); with this index each cell is one probe
    # (~6 ms).
    run_script(conn, "CREATE INDEX epochs_by_cell_time ON epochs(cell_id, recorded_at);")


def _migration_3(conn: sqlite3.Connection) -> None:
    # The PAC-Bayes bound terms of Theorems 1-2, estimated per finished cell
    # (`kerasgen bound`); one row per cell and parameter set.
    run_script(conn, """
        CREATE TABLE bounds (
            cell_id           INTEGER NOT NULL REFERENCES cells(cell_id) ON DELETE CASCADE,
            params            TEXT NOT NULL,
            estimator         TEXT NOT NULL,
            n_params          INTEGER NOT NULL,
            n_examples        INTEGER NOT NULL,
            delta             REAL NOT NULL,
            trace_ca_inv      REAL,
            logdet_sigma      REAL,
            kl                REAL,
            theorem1          REAL,
            theorem1_discrete REAL,
            theorem2          REAL,
            commutator        REAL,
            assumption2       INTEGER,
            critical_ratio    REAL,
            report_json       TEXT,
            computed_at       TEXT NOT NULL,
            PRIMARY KEY (cell_id, params)
        );
    """)


# The study's rule for the kept epoch (``training.best_metric``); studies without one
# (a user's own ``SQLiteLogger`` runs) keep the paper's, the highest test accuracy.
BEST_METRIC_SQL = ("COALESCE(json_extract(s.spec_json, '$.training.best_metric'), "
                   "'test_accuracy')")

# One row per cell, every number read at the kept epoch `k` (its epoch row) or named
# for what it is: `best_test_accuracy` is the highest test accuracy of any epoch (the
# paper's measure; the kept epoch's when best_metric is test_accuracy), `final_*` the
# last epoch's, and `final_train_loss`/`final_train_accuracy` Keras's running averages
# over that epoch (augmented images, batch norm in training mode). The clean training
# metrics `train_eval_*` are measured like the test set on a fixed training subset.
BEST_VIEW_SQL = f"""
    CREATE VIEW best AS
        SELECT s.name AS study, c.cell_id, c.model, c.dataset, c.batch_size,
               c.learning_rate, c.seed, c.batch_size / c.learning_rate AS ratio,
               c.status, {BEST_METRIC_SQL} AS best_metric, c.kept_epoch,
               k.test_accuracy, k.test_loss, k.train_eval_accuracy, k.train_eval_loss,
               k.train_eval_accuracy - k.test_accuracy AS gap,
               k.test_loss - k.train_eval_loss AS loss_gap,
               c.best_test_accuracy, c.best_epoch, c.final_train_accuracy,
               c.final_train_loss, c.final_test_accuracy, c.final_test_loss,
               c.final_train_eval_accuracy, c.final_train_eval_loss, c.epochs_done,
               c.diverged_epoch
        FROM cells c JOIN studies s USING (study_id)
        LEFT JOIN epochs k ON k.cell_id = c.cell_id AND k.epoch = c.kept_epoch;
"""


def _migration_4(conn: sqlite3.Connection) -> None:
    # Clean generalization metrics: the training set measured as the test set is (a
    # fixed subset, no augmentation, batch norm in inference mode), and the kept epoch
    # chosen by the study's best_metric. Older stores read with NULL clean metrics.
    run_script(conn, f"""
        ALTER TABLE epochs ADD COLUMN train_eval_loss REAL;
        ALTER TABLE epochs ADD COLUMN train_eval_accuracy REAL;
        ALTER TABLE cells ADD COLUMN kept_epoch INTEGER;
        ALTER TABLE cells ADD COLUMN final_train_eval_loss REAL;
        ALTER TABLE cells ADD COLUMN final_train_eval_accuracy REAL;
        DROP VIEW best;
        {BEST_VIEW_SQL}
    """)
    # Existing cells: the kept epoch by their study's rule (frozen here: later
    # migrations may change what _refresh_summary writes).
    conn.execute(f"""
        UPDATE cells SET kept_epoch = CASE (SELECT {BEST_METRIC_SQL} FROM studies s
                                            WHERE s.study_id = cells.study_id)
            WHEN 'test_loss' THEN (SELECT e.epoch FROM epochs e WHERE e.cell_id = cells.cell_id
                                   AND e.test_loss IS NOT NULL
                                   ORDER BY e.test_loss ASC, e.epoch ASC LIMIT 1)
            ELSE (SELECT e.epoch FROM epochs e WHERE e.cell_id = cells.cell_id
                  AND e.test_accuracy IS NOT NULL
                  ORDER BY e.test_accuracy DESC, e.epoch ASC LIMIT 1) END
    """)


def _migration_5(conn: sqlite3.Connection) -> None:
    # A random id per study: the study's files beside the store are keyed by it (and a
    # slug of the name), never by the name alone, so two stores sharing a checkpoint
    # directory cannot overwrite each other's weights and a name never forms a path.
    run_script(conn, "ALTER TABLE studies ADD COLUMN uid TEXT;")
    for (study_id,) in conn.execute("SELECT study_id FROM studies").fetchall():
        conn.execute("UPDATE studies SET uid = ? WHERE study_id = ?",
                     (uuid.uuid4().hex, study_id))


# Numbered migrations: MIGRATIONS[i] takes the schema from version i to i + 1.
MIGRATIONS: list[tuple[str, Any]] = [
    ("studies, cells, epochs; views best and progress", _migration_1),
    ("index epochs by (cell_id, recorded_at)", _migration_2),
    ("bounds: PAC-Bayes bound terms per cell", _migration_3),
    ("clean training metrics, the kept epoch; view best with gap and loss_gap", _migration_4),
    ("studies.uid: the key of a study's files beside the store", _migration_5),
]
SCHEMA_VERSION = len(MIGRATIONS)


def register_migration(name: str, step) -> None:
    """Append a migration (tests use it to exercise upgrades). Every migration of the
    project belongs in ``MIGRATIONS`` above, never registered at import time by another
    module: a process that did not import that module would see a "newer" store."""
    global SCHEMA_VERSION
    MIGRATIONS.append((name, step))
    SCHEMA_VERSION = len(MIGRATIONS)


# ---------------------------------------------------------------- opening and checking

def _ro_uri(path: Path) -> str:
    return f"{path.resolve().as_uri()}?mode=ro"


class _Unusable(StoreError):
    """A refusal that may be a snapshot of a file caught mid-write (checked again)."""


# How often, and after how long, a file that looks truncated/corrupt/foreign is looked at
# again before it is refused: a writer's commit or checkpoint in another process can make
# a raw look at the file see a new header before the pages it promises, or a concurrent
# migration can be half-visible to an unlocked (immutable) read. Real damage persists.
INSPECT_ATTEMPTS = 5
INSPECT_RETRY_SECONDS = 0.02


# Store files this process has SQLite connections to (resolved path -> count).
# SQLite's locks are POSIX advisory locks, which belong to the process: closing ANY file
# descriptor on the database file drops all of them (SQLite's "how to corrupt a
# database", section 2.2). So the raw header read below must never happen while this
# process has the file open through SQLite: a dashboard thread or a heartbeat opening
# a second connection would silently release the worker's locks (seen as "disk I/O
# error" in readers). While a connection is open here, the file was already inspected,
# and it is looked at through SQLite only.
_OPEN_HERE: dict[str, int] = {}
_OPEN_LOCK = threading.Lock()


def _key(path: Path) -> str:
    return os.path.realpath(path)


def _track(path: Path, delta: int) -> None:
    with _OPEN_LOCK:
        key = _key(path)
        count = _OPEN_HERE.get(key, 0) + delta
        if count > 0:
            _OPEN_HERE[key] = count
        else:
            _OPEN_HERE.pop(key, None)


def _open_here(path: Path) -> bool:
    with _OPEN_LOCK:
        return _key(path) in _OPEN_HERE


class TrackedConnection(sqlite3.Connection):
    """A connection that tells ``inspect_store`` while it holds the file open."""

    def close(self) -> None:
        tracked = getattr(self, "_tracked_path", None)
        super().close()
        if tracked is not None:
            self._tracked_path = None
            _track(tracked, -1)


def _connect(path: Path, uri: str | None = None, **kwargs) -> sqlite3.Connection:
    conn = sqlite3.connect(uri or path, uri=uri is not None, factory=TrackedConnection,
                           timeout=busy_timeout_ms() / 1000, check_same_thread=False, **kwargs)
    conn._tracked_path = Path(path)
    _track(Path(path), +1)
    return conn


def inspect_store(path: str | os.PathLike) -> dict:
    """Look at a file without changing it: {"exists", "empty", "user_version", ...}.

    Raises StoreError for a file that is not SQLite, is corrupt or truncated, or is a
    SQLite database of some other application, or of a newer kerasgen. Creates nothing
    beside the file (no -wal/-shm) when nobody has it open.
    """
    path = Path(path)
    if path.exists() and _open_here(path):
        return _inspect_through_sqlite(path)
    for attempt in range(INSPECT_ATTEMPTS):
        try:
            return _inspect_once(path)
        except _Unusable as exc:
            if attempt == INSPECT_ATTEMPTS - 1:
                raise StoreError(str(exc)) from exc.__cause__
            time.sleep(INSPECT_RETRY_SECONDS * (attempt + 1))
    raise AssertionError("unreachable")


def _inspect_through_sqlite(path: Path) -> dict:
    """Inspection of a file this process already has open through SQLite (so it was
    inspected when first opened): version and application id, no raw file access."""
    conn = sqlite3.connect(_ro_uri(path), uri=True, timeout=busy_timeout_ms() / 1000)
    try:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} cannot be read ({exc}).") from exc
    finally:
        conn.close()
    if application_id == 0 and user_version == 0:
        return {"exists": True, "empty": True, "user_version": 0}
    if application_id != APPLICATION_ID:
        raise StoreError(f"{path} is a SQLite database of another application, not a "
                         "kerasgen store. Use a new file name for the store.")
    if user_version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer kerasgen (schema version {user_version}; this "
            f"kerasgen understands up to {SCHEMA_VERSION}). Upgrade kerasgen "
            "(pip install -U kerasgen); the file has not been modified.")
    return {"exists": True, "empty": False, "user_version": user_version}


def _inspect_once(path: Path) -> dict:
    if not path.exists():
        return {"exists": False, "empty": True, "user_version": 0}
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a kerasgen store (a .db file).")
    with open(path, "rb") as fh:
        header = fh.read(100)
    if not header:
        return {"exists": True, "empty": True, "user_version": 0}
    if not b"SQLite format 3\x00".startswith(header[:16]):
        raise StoreError(
            f"{path} is not a kerasgen store: it is not a SQLite database at all. "
            "Pass the path of a store that kerasgen created, or a new file name."
        )
    if len(header) < 100:
        raise _Unusable(f"{path} is corrupt: its SQLite header is truncated "
                        f"({len(header)} bytes).")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    page_count = int.from_bytes(header[28:32], "big")
    # The in-header page count is valid only when its "version-valid-for" number matches
    # the change counter (SQLite < 3.7.0 did not maintain it).
    if header[24:28] != header[92:96]:
        page_count = 0
    # Order matters: header, then the -wal, then the size. A checkpoint that grows the
    # file runs while the -wal exists, so a -wal that is gone after the header was read
    # means the file had its full size before it was measured.
    wal = Path(str(path) + "-wal")
    wal_exists = wal.exists()
    wal_has_frames = wal_exists and _size(wal) > 0
    size = _size(path)
    if page_count and size < page_size * page_count and not wal_has_frames:
        raise _Unusable(
            f"{path} is corrupt: it is truncated ({size} bytes, but its header promises "
            f"{page_count} pages of {page_size} bytes). Restore it from a backup; kerasgen "
            "has not touched it."
        )
    # A WAL-mode file with no -wal next to it has no open connection and nothing to
    # recover: read it as immutable. A plain ``mode=ro`` connection would create empty
    # -wal and -shm files beside it (and leave them behind), which must not happen to a
    # file that turns out to belong to another application or a newer kerasgen. When a
    # -wal exists (a live or crashed writer), the ordinary read-only connection is needed
    # to see its committed frames; it then creates nothing new except, at most, the -shm.
    # A reader that may not write beside the file (a read-only directory or -shm) cannot
    # use the WAL index at all; it reads the file as immutable too (see connect_readonly).
    wal_mode = header[18] == 2 or header[19] == 2
    immutable = wal_mode and (not wal_exists or not _can_share_wal_index(path))
    uri = _ro_uri(path) + ("&immutable=1" if immutable else "")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms() / 1000,
                               isolation_level=None)
    except sqlite3.Error as exc:
        raise _Unusable(f"{path} cannot be opened: {exc}") from exc
    try:
        # One read transaction: the three facts come from the same snapshot (in autocommit
        # a migration committed between two statements would show tables without the
        # application id).
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms()}")
        conn.execute("BEGIN")
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise _Unusable(
            f"{path} is corrupt ({exc}). Restore it from a backup; kerasgen has not touched it."
        ) from exc
    finally:
        conn.close()
    if application_id != APPLICATION_ID:
        if not tables and application_id == 0 and user_version == 0:
            return {"exists": True, "empty": True, "user_version": 0}
        raise _Unusable(
            f"{path} is a SQLite database of another application, not a kerasgen store "
            f"(tables: {', '.join(sorted(tables)) or 'none'}). Use a new file name for "
            "the store; kerasgen has not touched this one."
        )
    if user_version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer kerasgen (schema version {user_version}; this "
            f"kerasgen understands up to {SCHEMA_VERSION}). Upgrade kerasgen "
            "(pip install -U kerasgen); the file has not been modified."
        )
    return {"exists": True, "empty": False, "user_version": user_version, "tables": tables}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms()}")
    conn.execute("PRAGMA foreign_keys = ON")


def _enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Switch to WAL. On a new file several processes may try at once; switching needs an
    exclusive lock, and SQLite answers one of two contenders "database is locked" at once,
    without its busy handler (it would deadlock otherwise), so retry here (past the busy
    timeout too, saying who holds the lock)."""
    waiter = LockWait(path)
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if not _is_locked(exc):
                raise _store_error(path, exc) from exc
            waiter.wait(short=True)
    if str(mode).lower() != "wal":
        raise StoreError(
            f"{path} cannot use SQLite's WAL journal (it stayed in {mode!r} mode), which "
            "kerasgen needs so that readers never block writers; a network file system "
            "is the usual cause. Put the store on a local disk.")


def _can_share_wal_index(path: Path) -> bool:
    """Whether this process may use the store's WAL index: create (or write) the -shm
    beside it. A user who may only read the store and its directory cannot."""
    shm = Path(str(path) + "-shm")
    if shm.exists():
        return os.access(shm, os.R_OK | os.W_OK)
    directory = path.parent if str(path.parent) else Path(".")
    return os.access(directory, os.W_OK | os.X_OK)


def connect_readonly(path: str | os.PathLike) -> sqlite3.Connection:
    """A read-only connection to an existing store (checked first).

    The connection is an ordinary ``mode=ro`` one where it can be: a dashboard keeps it
    open while workers write, and only a WAL reader that shares the -shm index sees their
    commits safely. On a store that no process has open, SQLite therefore creates the
    (empty) -wal and -shm files beside it; they belong to the store and are removed by
    the next writer that closes it. Files that are refused are never opened this way
    (``inspect_store`` reads them as immutable).

    A user who may only read the store (a read-only directory or -shm) cannot share the
    WAL index; the store is then read as ``immutable``: its main file only, nothing
    created. If a -wal file with content lies beside it, changes not yet copied into the
    main file are not seen; ``readonly_note(conn)`` says so (the CLI prints it)."""
    path = Path(path)
    info = inspect_store(path)
    if not info["exists"]:
        raise StoreError(f"{path} does not exist: no study has been run into it yet "
                         "(start one with `kerasgen run ... --db PATH`).")
    if info["empty"]:
        raise StoreError(f"{path} is empty: no study has been run into it yet.")
    if _can_share_wal_index(path):
        conn = _connect(path, uri=_ro_uri(path))
        _configure(conn)
        conn.readonly_note = None
        return conn
    conn = _connect(path, uri=_ro_uri(path) + "&immutable=1")
    _configure(conn)
    wal = Path(str(path) + "-wal")
    conn.readonly_note = (
        f"{path} is read as a snapshot (this user may not write beside it): "
        + (f"its last changes ({_size(wal):,} bytes in {wal.name}) are not seen, and a "
           "study still running is not followed" if _size(wal) else
           "a study still running is not followed"))
    return conn


def readonly_note(conn) -> str | None:
    """Why a reader's view of the store may be stale, or None (see connect_readonly)."""
    return getattr(conn, "readonly_note", None)


# ---------------------------------------------------------------- locks and write errors

def check_writable(path: str | os.PathLike) -> None:
    """Raise StoreError when a store at ``path`` could not be written by this process
    (checked before anything is created or claimed)."""
    path = Path(path)
    _check_writable(path, inspect_store(path)["exists"])


def _check_writable(path: Path, exists: bool) -> None:
    """Refuse, before SQLite creates anything, a store this process cannot write: not a
    regular file (``/dev/null``), a read-only file, or a directory where the journal
    files (``-wal``, ``-shm``) cannot be created."""
    if exists and not path.is_file():
        raise StoreError(f"{path} is not a regular file, so it cannot hold a store; pass "
                         "the path of a .db file")
    directory = path.parent if str(path.parent) else Path(".")
    if exists and not os.access(path, os.W_OK):
        raise StoreError(f"the store {path} is read-only for this user, so nothing can be "
                         "written to it; status, report, db and tui can still read it")
    if directory.exists() and not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"the directory {directory} is not writable, so the store {path} "
                         "cannot be written (SQLite needs its -wal and -shm files beside it); "
                         "status, report, db and tui can still read it")


def _is_locked(exc: Exception) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _is_write_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("full", "readonly", "read-only", "disk i/o", "locked",
                                   "unable to open"))


def _store_error(path: Path, exc: Exception) -> StoreError:
    """A write error as a StoreError that names the store and what to do."""
    text = str(exc).lower()
    if "full" in text:
        return StoreError(f"the disk holding the store {path} is full ({exc}); free space "
                          "and run the same command again (nothing recorded is lost)")
    if "readonly" in text or "read-only" in text or "permission" in text:
        return StoreError(f"the store {path} cannot be written ({exc}): check the "
                          "permissions of the file and its directory")
    return StoreError(f"the store {path} cannot be written ({exc})")


def lock_holders(path: Path) -> list[str]:
    """Other processes of this machine that have the store (or its -wal/-shm) open, as
    ``pid (command)``; Linux only (empty elsewhere or when /proc cannot be read)."""
    targets = {os.path.realpath(str(path) + suffix) for suffix in ("", "-wal", "-shm")}
    out = []
    proc = Path("/proc")
    if not proc.is_dir():
        return out
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
            if not any(os.path.realpath(fd) in targets for fd in fds):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:
            continue
        out.append(f"{entry.name} ({command[:60] or '?'})")
    return sorted(out)


class LockWait:
    """Waiting for the store's write lock past SQLite's busy timeout: reports on stderr
    (who holds the lock, how long it has waited) at once and every
    ``LOCK_REPORT_SECONDS``, then waits on. A lock is never a reason to fail."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.started: float | None = None
        self.reported = 0.0
        self.delay = 0.002

    def wait(self, short: bool = False) -> None:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        # SQLite's busy handler has already waited the busy timeout, except for the few
        # calls that it answers at once (switching to WAL): those report once they too
        # have waited that long.
        due = now - self.started >= (busy_timeout_ms() / 1000 if short else 0.0)
        if due and (self.reported == 0.0 or now - self.reported >= LOCK_REPORT_SECONDS):
            self.reported = now
            holders = lock_holders(self.path)
            who = f"held by {', '.join(holders)}" if holders else "held by another process"
            waited = busy_timeout_ms() / 1000 + (now - self.started if not short else 0.0)
            print(f"kerasgen: waiting for the store lock on {self.path} ({who}) for "
                  f"{waited:.0f} s so far; kerasgen goes on when it is released",
                  file=sys.stderr, flush=True)
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 0.25 if short else 1.0)


# ---------------------------------------------------------------- the store

@dataclass(frozen=True)
class Claim:
    """A pack claimed by a worker: its cells (ordered by learning rate), its study, and
    a token unique to this claim (checkpoint files carry it: a former owner of the pack
    never deletes the files of the one that took it over)."""

    pack_id: str
    worker: str
    cells: tuple[dict, ...]
    resumed: bool  # True when the pack was reclaimed from a dead worker or retried
    study: str = ""
    study_uid: str | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @property
    def cell_ids(self) -> list[int]:
        return [c["cell_id"] for c in self.cells]


class Store:
    """A read-write handle on a store file. Cheap to open; one per process or thread."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path)
        info = inspect_store(self.path)
        if not info["exists"] and not create:
            raise StoreError(f"{self.path} does not exist.")
        _check_writable(self.path, info["exists"])
        if not info["exists"]:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"the store {self.path} cannot be created: {exc.strerror} "
                                 f"({self.path.parent}); choose another --db") from exc
        try:
            self.conn = _connect(self.path, isolation_level=None)
            _configure(self.conn)
            _enable_wal(self.conn, self.path)
            self.conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError as exc:
            raise _store_error(self.path, exc) from exc
        self._migrate(info["user_version"])

    # -- lifecycle
    def close(self) -> None:
        # Copy what the WAL holds into the main file before leaving. SQLite does that
        # itself when the last connection closes, but not when a reader (a dashboard,
        # always read-only) is still attached: the study would then live partly in
        # `-wal`, and a user copying the `.db` alone would lose its last results.
        # PASSIVE never waits for readers or writers; it is best effort.
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction that takes the write lock at once.

        Past SQLite's busy timeout it waits on, saying who holds the lock, instead of
        failing; a full disk or a read-only file is a StoreError naming the store."""
        waiter = None
        while True:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise _store_error(self.path, exc) from exc
                waiter = waiter or LockWait(self.path)
                waiter.wait()
        try:
            yield self.conn
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and _is_write_error(exc):
                raise _store_error(self.path, exc) from exc
            raise
        else:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
                raise _store_error(self.path, exc) from exc

    def _migrate(self, current: int) -> None:
        if current >= SCHEMA_VERSION:
            return
        with self.transaction() as conn:
            # Re-read under the lock: another process may have migrated meanwhile.
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            for version in range(current, SCHEMA_VERSION):
                name, step = MIGRATIONS[version]
                step(conn)
                conn.execute("INSERT INTO migrations VALUES (?, ?, ?)",
                             (version + 1, name, utc_now()))
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- studies
    def create_study(self, name: str, spec: dict, cells: Iterable[dict],
                     environment: dict | None = None, normalize=None) -> int:
        """Create a study with its cells, or attach to the existing one of that name.

        ``spec`` is the normalized specification (JSON-serializable). A different
        specification under the same name is refused, naming the differences.
        ``normalize`` maps a stored specification to the form ``spec`` is in (a study
        registered by an older kerasgen lacks the options added since, at their
        defaults); without it the stored text must match exactly.
        """
        spec_json = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        spec_hash = _hash(spec_json)
        env = dict(environment or {})
        with self.transaction() as conn:
            row = conn.execute("SELECT study_id, spec_json FROM studies WHERE name = ?",
                               (name,)).fetchone()
            if row is not None:
                study_id, existing = row
                stored = json.loads(existing)
                if existing != spec_json and (normalize is None or normalize(stored) != spec):
                    diff = describe_difference(stored, spec)
                    raise StudyMismatch(
                        f"A study named {name!r} already exists in {self.path} with a "
                        f"different specification: {diff}. Give the new study another "
                        "name, or use another store."
                    )
                return study_id
            cur = conn.execute(
                "INSERT INTO studies (name, spec_json, spec_hash, kerasgen_version, "
                "tensorflow_version, keras_version, python_version, host, device, "
                "environment_json, created_at, uid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (name, spec_json, spec_hash, env.get("kerasgen"), env.get("tensorflow"),
                 env.get("keras"), env.get("python"), env.get("host"), env.get("device"),
                 json.dumps(env, sort_keys=True), utc_now(), uuid.uuid4().hex),
            )
            study_id = cur.lastrowid
            conn.executemany(
                "INSERT INTO cells (study_id, model, dataset, batch_size, learning_rate, seed,"
                " updated_at) VALUES (?,?,?,?,?,?,?)",
                [(study_id, c["model"], c["dataset"], int(c["batch_size"]),
                  float(c["learning_rate"]), int(c["seed"]), utc_now()) for c in cells],
            )
            return study_id

    def ensure_cell(self, study: str, model: str, dataset: str, batch_size: int,
                    learning_rate: float, seed: int) -> None:
        """Create a cell (and a study of kind "manual") for a user's own ``model.fit``."""
        with self.transaction() as conn:
            row = conn.execute("SELECT study_id FROM studies WHERE name = ?",
                               (study,)).fetchone()
            if row is None:
                from kerasgen.runtime import environment_facts

                env = environment_facts()
                spec = {"kind": "manual", "name": study}
                study_id = conn.execute(
                    "INSERT INTO studies (name, spec_json, spec_hash, kerasgen_version, "
                    "tensorflow_version, keras_version, python_version, host, "
                    "environment_json, created_at, uid) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (study, json.dumps(spec, sort_keys=True), _hash(json.dumps(spec)),
                     env.get("kerasgen"), env.get("tensorflow"), env.get("keras"),
                     env.get("python"), env.get("host"), json.dumps(env, sort_keys=True),
                     utc_now(), uuid.uuid4().hex)).lastrowid
            else:
                study_id = row[0]
            conn.execute(
                "INSERT OR IGNORE INTO cells (study_id, model, dataset, batch_size, "
                "learning_rate, seed, updated_at) VALUES (?,?,?,?,?,?,?)",
                (study_id, model, dataset, int(batch_size), float(learning_rate), int(seed),
                 utc_now()))

    def mark_running(self, cell_ids: Sequence[int], worker: str | None = None) -> None:
        """Mark cells trained outside the claim protocol (a user's own fit) as running."""
        now = utc_now()
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE cells SET status = 'running', worker = ?, heartbeat_at = ?, "
                "started_at = COALESCE(started_at, ?), updated_at = ? WHERE cell_id = ? "
                "AND status IN ('pending', 'running')",
                [(worker, now, now, now, i) for i in cell_ids])

    def study(self, name: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM studies WHERE name = ?", (name,)).fetchone()
        return _row_dict(self.conn, row, "studies") if row else None

    def update_study_environment(self, study_id: int, **fields: Any) -> None:
        """Merge runtime facts (e.g. the compile mode a worker chose) into the study."""
        with self.transaction() as conn:
            env = json.loads(conn.execute("SELECT environment_json FROM studies WHERE "
                                          "study_id = ?", (study_id,)).fetchone()[0] or "{}")
            env.update(fields)
            conn.execute("UPDATE studies SET environment_json = ? WHERE study_id = ?",
                         (json.dumps(env, sort_keys=True), study_id))

    # -- claims
    def claim_pack(self, study_id: int, worker: str, pack_size: int,
                   stale_seconds: float = DEFAULT_STALE_SECONDS,
                   device: str | None = None) -> Claim | None:
        """Atomically claim the next pack of a study, or None when nothing is left.

        A pack whose heartbeat is older than ``stale_seconds`` (its worker died) is
        reclaimed first, with exactly its cells, so it resumes from its checkpoint.
        Otherwise up to ``pack_size`` pending cells of one (model, dataset, seed,
        batch_size) group form a new pack, in ascending learning rate.
        """
        if pack_size < 1:
            raise ValueError(f"pack_size must be >= 1. Received: pack_size={pack_size!r}")
        now = utc_now()
        with self.transaction() as conn:
            stale = conn.execute(
                "SELECT pack_id FROM cells WHERE study_id = ? AND status = 'running' "
                "AND pack_id IS NOT NULL AND heartbeat_at < ? ORDER BY heartbeat_at LIMIT 1",
                (study_id, _utc_ago(stale_seconds)),
            ).fetchone() or _dead_local_pack(conn, study_id)
            if stale is not None:
                pack_id, resumed = stale[0], True
                conn.execute(
                    "UPDATE cells SET worker = ?, device = ?, heartbeat_at = ?, "
                    "attempts = attempts + 1, updated_at = ? "
                    "WHERE pack_id = ? AND status = 'running'",
                    (worker, device, now, now, pack_id),
                )
            else:
                retry = conn.execute(
                    "SELECT pack_id FROM cells WHERE study_id = ? AND status = 'pending' "
                    "AND pack_id IS NOT NULL ORDER BY cell_id LIMIT 1", (study_id,),
                ).fetchone()
                if retry is not None:
                    # A released pack (its worker failed and gave it back): same cells,
                    # same checkpoint.
                    pack_id, resumed = retry[0], True
                    ids = [r[0] for r in conn.execute(
                        "SELECT cell_id FROM cells WHERE pack_id = ? AND status = 'pending'",
                        (pack_id,))]
                else:
                    first = conn.execute(
                        "SELECT model, dataset, seed, batch_size FROM cells "
                        "WHERE study_id = ? AND status = 'pending' "
                        "ORDER BY model, dataset, seed, batch_size, learning_rate LIMIT 1",
                        (study_id,),
                    ).fetchone()
                    if first is None:
                        return None
                    ids = [r[0] for r in conn.execute(
                        "SELECT cell_id FROM cells WHERE study_id = ? AND status = 'pending' "
                        "AND model = ? AND dataset = ? AND seed = ? AND batch_size = ? "
                        "ORDER BY learning_rate LIMIT ?",
                        (study_id, *first, pack_size),
                    )]
                    pack_id, resumed = uuid.uuid4().hex[:16], False
                conn.executemany(
                    "UPDATE cells SET status = 'running', pack_id = ?, worker = ?, device = ?,"
                    " heartbeat_at = ?, started_at = COALESCE(started_at, ?), "
                    "attempts = attempts + 1, updated_at = ? WHERE cell_id = ?",
                    [(pack_id, worker, device, now, now, now, i) for i in ids],
                )
            rows = conn.execute(
                "SELECT * FROM cells WHERE pack_id = ? AND status = 'running' "
                "ORDER BY learning_rate", (pack_id,),
            ).fetchall()
            cells = tuple(_row_dict(conn, r, "cells") for r in rows)
            name, uid = conn.execute("SELECT name, uid FROM studies WHERE study_id = ?",
                                     (study_id,)).fetchone()
        return Claim(pack_id, worker, cells, resumed, study=name, study_uid=uid)

    def heartbeat(self, claim: Claim) -> None:
        """Refresh the claim; raise ClaimLost when another worker took the pack over."""
        now = utc_now()
        with self.transaction() as conn:
            cur = conn.execute(
                "UPDATE cells SET heartbeat_at = ? WHERE pack_id = ? AND worker = ? "
                "AND status = 'running'", (now, claim.pack_id, claim.worker))
            if cur.rowcount == 0:
                owner = conn.execute(
                    "SELECT worker FROM cells WHERE pack_id = ? AND status = 'running'",
                    (claim.pack_id,)).fetchone()
                if owner is not None:
                    raise ClaimLost(f"pack {claim.pack_id} was taken over by {owner[0]}")

    def check_claim(self, claim: Claim) -> None:
        """Raise ClaimLost unless ``claim``'s worker still owns its pack (checked before
        a checkpoint is written, so a former owner never writes one)."""
        owners = {r[0] for r in self.conn.execute(
            "SELECT worker FROM cells WHERE pack_id = ? AND status = 'running'",
            (claim.pack_id,))}
        if owners and owners != {claim.worker}:
            raise ClaimLost(f"pack {claim.pack_id} was taken over by "
                            f"{', '.join(sorted(str(o) for o in owners))}")

    def heartbeat_sender(self, claim: Claim):
        """(beat, close) for a heartbeat thread: a connection of its own, so the thread
        never shares this one with the trainer."""
        other = Store(self.path)
        return (lambda: other.heartbeat(claim)), other.close

    def release(self, claim: Claim, error: str,
                max_attempts: int = DEFAULT_MAX_ATTEMPTS, count_failure: bool = True) -> str:
        """Give a pack back after an error: pending again (kept together, to resume from
        its checkpoint), or ``failed`` with the error once it has failed
        ``max_attempts`` times. An interruption (``count_failure=False``) never fails a
        pack. Returns the new status."""
        now = utc_now()
        bump = 1 if count_failure else 0
        with self.transaction() as conn:
            failures = (conn.execute(
                "SELECT MAX(failures) FROM cells WHERE pack_id = ? AND status = 'running'",
                (claim.pack_id,)).fetchone()[0] or 0) + bump
            status = "failed" if count_failure and failures >= max_attempts else "pending"
            conn.execute(
                "UPDATE cells SET status = ?, error = ?, failures = ?, worker = NULL, "
                "heartbeat_at = NULL, finished_at = CASE WHEN ? = 'failed' THEN ? END, "
                "updated_at = ? WHERE pack_id = ? AND worker = ? AND status = 'running'",
                (status, error, failures, status, now, now, claim.pack_id, claim.worker))
        return status

    def mark_failed(self, cell_ids: Sequence[int], error: str) -> None:
        now = utc_now()
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE cells SET status = 'failed', error = ?, finished_at = ?, "
                "updated_at = ? WHERE cell_id = ?", [(error, now, now, i) for i in cell_ids])

    def reset_failed(self, study_id: int) -> int:
        """Put failed cells back to pending (``kerasgen run --retry-failed``)."""
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE cells SET status = 'pending', failures = 0, error = NULL, "
                "updated_at = ? WHERE study_id = ? AND status = 'failed'",
                (utc_now(), study_id)).rowcount

    # -- epochs and outcomes
    def record_epoch(self, cell_id: int, epoch: int, logs: dict,
                     wall_seconds: float | None = None,
                     claim: Claim | None = None) -> bool:
        """Write one epoch of one cell and update its summary, in one transaction.

        ``logs`` maps metric names to numbers, with ``train_``/``test_`` prefixes for
        the standard ones (``train_loss``, ``test_accuracy``, ...); any other finite
        number is kept in ``metrics_json``. Writing an epoch that is already recorded
        does nothing and returns False (a resumed pack replays nothing twice).
        """
        fixed = {k: _finite_or_none(logs.get(k)) for k in EPOCH_COLUMNS}
        extra = {k: float(v) for k, v in logs.items()
                 if k not in EPOCH_COLUMNS and _finite_or_none(v) is not None}
        now = utc_now()
        with self.transaction() as conn:
            if claim is not None:
                _check_owner(conn, claim, cell_id)
            cur = conn.execute(
                f"INSERT OR IGNORE INTO epochs (cell_id, epoch, {', '.join(EPOCH_COLUMNS)}, "
                "wall_seconds, metrics_json, recorded_at) "
                f"VALUES (?, ?, {', '.join('?' * len(EPOCH_COLUMNS))}, ?, ?, ?)",
                (cell_id, int(epoch), *(fixed[k] for k in EPOCH_COLUMNS),
                 _finite_or_none(wall_seconds),
                 json.dumps(extra, sort_keys=True) if extra else None, now),
            )
            if cur.rowcount == 0:
                return False
            _refresh_summary(conn, cell_id, now)
            return True

    def finish_cell(self, cell_id: int, status: str = "done",
                    diverged_epoch: int | None = None, error: str | None = None,
                    claim: Claim | None = None) -> None:
        """Mark a cell done, diverged (at an epoch) or failed (with the error)."""
        if status not in ("done", "diverged", "failed"):
            raise ValueError(f"A finished cell is done, diverged or failed, not {status!r}.")
        if status == "diverged" and diverged_epoch is None:
            raise ValueError("A diverged cell needs the epoch at which it diverged.")
        now = utc_now()
        with self.transaction() as conn:
            if claim is not None:
                _check_owner(conn, claim, cell_id)
            conn.execute(
                "UPDATE cells SET status = ?, diverged_epoch = ?, error = ?, finished_at = ?,"
                " heartbeat_at = NULL, updated_at = ? WHERE cell_id = ?",
                (status, diverged_epoch, error, now, now, cell_id))
            _refresh_summary(conn, cell_id, now)

    # -- reads through the writer's connection (workers need them to resume)
    def epochs_of(self, cell_id: int) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM epochs WHERE cell_id = ? ORDER BY epoch",
                                 (cell_id,)).fetchall()
        return [_row_dict(self.conn, r, "epochs") for r in rows]

    def cell(self, cell_id: int) -> dict:
        row = self.conn.execute("SELECT * FROM cells WHERE cell_id = ?", (cell_id,)).fetchone()
        if row is None:
            raise StoreError(f"No cell with cell_id={cell_id} in {self.path}.")
        return _row_dict(self.conn, row, "cells")

    def cell_id(self, study: str, model: str, dataset: str, batch_size: int,
                learning_rate: float, seed: int) -> int:
        """The id of one cell by its natural key (for ``SQLiteLogger``)."""
        row = self.conn.execute(
            "SELECT c.cell_id FROM cells c JOIN studies s USING (study_id) WHERE s.name = ? "
            "AND c.model = ? AND c.dataset = ? AND c.batch_size = ? "
            "AND abs(c.learning_rate - ?) <= 1e-12 * abs(?) AND c.seed = ?",
            (study, model, dataset, batch_size, learning_rate, learning_rate, seed),
        ).fetchone()
        if row is None:
            raise StoreError(
                f"No cell (study={study!r}, model={model!r}, dataset={dataset!r}, "
                f"batch_size={batch_size}, learning_rate={learning_rate}, seed={seed}) "
                f"in {self.path}.")
        return row[0]

    def counts(self, study_id: int) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, COUNT(*) FROM cells WHERE study_id = ? "
                                 "GROUP BY status", (study_id,)).fetchall()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(dict(rows))
        return counts


def _dead_local_pack(conn: sqlite3.Connection, study_id: int) -> tuple | None:
    """A running pack whose worker was a process on this host that no longer exists
    (killed, crashed): reclaimable at once instead of after the stale limit.

    Worker names end in ``<host>:<pid>`` (``runtime.worker_name``), possibly after a
    role prefix (``ray-driver:<host>:<pid>``).
    """
    host = socket.gethostname()
    rows = conn.execute("SELECT DISTINCT pack_id, worker FROM cells WHERE study_id = ? "
                        "AND status = 'running' AND pack_id IS NOT NULL AND worker LIKE ?",
                        (study_id, f"%{host}:%"))
    for pack_id, worker in rows.fetchall():
        head, _, pid_text = worker.rpartition(":")
        if head.rpartition(":")[2] != host:
            continue
        try:
            pid = int(pid_text)
        except ValueError:
            continue
        if pid == os.getpid():
            continue
        if not _process_alive(pid):
            return (pack_id,)
    return None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_owner(conn: sqlite3.Connection, claim: Claim, cell_id: int) -> None:
    row = conn.execute("SELECT worker, status FROM cells WHERE cell_id = ?",
                       (cell_id,)).fetchone()
    if row is None or row[0] != claim.worker or row[1] != "running":
        raise ClaimLost(f"cell {cell_id} is no longer claimed by {claim.worker} "
                        f"(worker={row[0] if row else None}, status={row[1] if row else None})")


def _refresh_summary(conn: sqlite3.Connection, cell_id: int, now: str) -> None:
    """Recompute a cell's summary columns from its epoch rows (one source of truth).

    ``kept_epoch`` follows the study's ``best_metric``: the epoch of highest test
    accuracy (the paper's), or of lowest test loss; ties go to the earlier epoch."""
    conn.execute(
        f"""
        UPDATE cells SET
            epochs_done = (SELECT COUNT(*) FROM epochs WHERE cell_id = :id),
            best_test_accuracy = (SELECT MAX(test_accuracy) FROM epochs WHERE cell_id = :id),
            best_epoch = (SELECT epoch FROM epochs WHERE cell_id = :id
                          AND test_accuracy IS NOT NULL
                          ORDER BY test_accuracy DESC, epoch ASC LIMIT 1),
            kept_epoch = CASE (SELECT {BEST_METRIC_SQL} FROM studies s
                               WHERE s.study_id = cells.study_id)
                WHEN 'test_loss' THEN (SELECT epoch FROM epochs WHERE cell_id = :id
                                       AND test_loss IS NOT NULL
                                       ORDER BY test_loss ASC, epoch ASC LIMIT 1)
                ELSE (SELECT epoch FROM epochs WHERE cell_id = :id
                      AND test_accuracy IS NOT NULL
                      ORDER BY test_accuracy DESC, epoch ASC LIMIT 1) END,
            final_train_loss = (SELECT train_loss FROM epochs WHERE cell_id = :id
                                ORDER BY epoch DESC LIMIT 1),
            final_train_accuracy = (SELECT train_accuracy FROM epochs WHERE cell_id = :id
                                    ORDER BY epoch DESC LIMIT 1),
            final_test_loss = (SELECT test_loss FROM epochs WHERE cell_id = :id
                               ORDER BY epoch DESC LIMIT 1),
            final_test_accuracy = (SELECT test_accuracy FROM epochs WHERE cell_id = :id
                                   ORDER BY epoch DESC LIMIT 1),
            final_train_eval_loss = (SELECT train_eval_loss FROM epochs WHERE cell_id = :id
                                     ORDER BY epoch DESC LIMIT 1),
            final_train_eval_accuracy = (SELECT train_eval_accuracy FROM epochs
                                         WHERE cell_id = :id ORDER BY epoch DESC LIMIT 1),
            updated_at = :now
        WHERE cell_id = :id
        """,
        {"id": cell_id, "now": now},
    )


def _finite_or_none(value) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _row_dict(conn: sqlite3.Connection, row: tuple, table: str) -> dict:
    cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    return dict(zip(cols, row))


def _hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_difference(old: Any, new: Any, prefix: str = "") -> str:
    """Name the keys whose values differ between two JSON-like objects."""
    diffs: list[str] = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key, "<missing>"), b.get(key, "<missing>"), f"{path}.{key}" if path else key)
        elif a != b:
            diffs.append(f"{path or 'spec'}: {a!r} in the store, {b!r} now")

    walk(old, new, prefix)
    return "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")


# ---------------------------------------------------------------- read API (no TensorFlow)

RESULT_COLUMNS = [
    "study", "cell_id", "model", "dataset", "batch_size", "learning_rate", "seed", "ratio",
    "status", "best_metric", "kept_epoch", "test_accuracy", "test_loss",
    "train_eval_accuracy", "train_eval_loss", "gap", "loss_gap", "best_test_accuracy",
    "best_epoch", "final_train_accuracy", "final_train_loss", "final_test_accuracy",
    "final_test_loss", "final_train_eval_accuracy", "final_train_eval_loss", "epochs_done",
    "diverged_epoch", "last_batch", "error", "worker", "pack_id", "attempts", "failures",
    "heartbeat_at", "started_at", "finished_at", "updated_at",
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


def has_clean_metrics(conn: sqlite3.Connection) -> bool:
    """Whether the store has the clean training metrics' columns (schema >= 4)."""
    return any(r[1] == "kept_epoch" for r in conn.execute("PRAGMA table_info(cells)"))


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
    sql = (f"SELECT r.* FROM ({sql}) r JOIN studies st ON st.name = r.study")
    params: tuple = ()
    if study is not None:
        sql += " WHERE r.study = ?"
        params = (study,)
    sql += {"cell_id": " ORDER BY r.cell_id",
            "grid": " ORDER BY st.study_id, r.model, r.dataset, r.seed, r.cell_id"}[order]
    cursor = conn.execute(sql, params)
    columns = [d[0] for d in cursor.description]
    return columns, cursor.fetchall()


def load_results(db, study: str | None = None) -> pd.DataFrame:
    """One row per cell (columns ``RESULT_COLUMNS``): the grid's coordinates,
    ``ratio = batch_size / learning_rate``, status, and every number at the kept epoch
    (``kept_epoch``, chosen by the study's ``best_metric``): ``test_accuracy``,
    ``test_loss``, the clean training metrics ``train_eval_accuracy`` /
    ``train_eval_loss``, ``gap`` (train_eval_accuracy - test_accuracy) and ``loss_gap``
    (test_loss - train_eval_loss); beside them ``best_test_accuracy`` (the highest of
    any epoch, the paper's measure) and the last epoch's ``final_*`` values
    (``final_train_*``: Keras's running averages).

    ``db`` is a path (opened read-only) or an open connection. Accuracies are fractions
    in [0, 1]; cells with no finished epoch, and clean metrics a store written before
    they existed lacks, are NaN.
    """
    conn, owned = _reader(db)
    try:
        columns, rows = read_cell_rows(conn, study)
    finally:
        if owned:
            conn.close()
    frame = pd.DataFrame(rows, columns=columns)
    for col in ("best_epoch", "kept_epoch", "diverged_epoch"):
        frame[col] = frame[col].astype(float)
    for col in ("ratio", "test_accuracy", "test_loss", "train_eval_accuracy", "train_eval_loss",
                "gap", "loss_gap", "best_test_accuracy", "final_train_accuracy",
                "final_train_loss", "final_test_accuracy", "final_test_loss",
                "final_train_eval_accuracy", "final_train_eval_loss"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    return frame[RESULT_COLUMNS]


def load_epochs(db, study: str | None = None, cell_ids: Sequence[int] | None = None,
                after: int = 0) -> pd.DataFrame:
    """Epoch rows (one per cell per epoch), joined with their cell's coordinates.

    ``after`` is a marker from a previous read (see ``read_new_epochs``): only rows
    recorded after it are returned. The ``row`` column is that marker's unit.
    """
    conn, owned = _reader(db)
    try:
        clean = ("e.train_eval_loss, e.train_eval_accuracy" if has_clean_metrics(conn)
                 else "NULL AS train_eval_loss, NULL AS train_eval_accuracy")
        sql = ("SELECT e.rowid AS row, s.name AS study, e.cell_id, c.model, c.dataset, "
               "c.batch_size, c.learning_rate, c.seed, e.epoch, e.train_loss, "
               f"e.train_accuracy, e.test_loss, e.test_accuracy, {clean}, e.wall_seconds, "
               "e.metrics_json, e.recorded_at FROM epochs e JOIN cells c USING (cell_id) "
               "JOIN studies s USING (study_id) WHERE e.rowid > ?")
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


def load_studies(db) -> pd.DataFrame:
    conn, owned = _reader(db)
    try:
        return pd.read_sql_query("SELECT * FROM studies ORDER BY study_id", conn)
    finally:
        if owned:
            conn.close()


def load_progress(db) -> pd.DataFrame:
    conn, owned = _reader(db)
    try:
        return pd.read_sql_query("SELECT * FROM progress", conn)
    finally:
        if owned:
            conn.close()


__all__ = [
    "APPLICATION_ID", "Claim", "ClaimLost", "SCHEMA_VERSION", "STATUSES", "Store",
    "StoreError", "StudyMismatch", "check_writable", "connect_readonly", "inspect_store",
    "load_epochs", "read_cell_rows", "readonly_note",
    "load_progress", "load_results", "load_studies", "read_new_epochs", "utc_now",
]
