"""The store's schema: numbered migrations (``PRAGMA user_version``), tables and views.

``MIGRATIONS[i]`` takes a store from version i to i + 1; each runs inside one write
transaction with the version bump, so a store is always at a whole version. A migration
is frozen once released: later code may change what the writer writes, never what an old
migration did.
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from kerasgen.store.common import APPLICATION_ID  # noqa: F401 (the store's mark)


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
                                  CHECK (status IN
                                         ('pending','running','done','diverged','failed')),
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


EPOCHS_LONG_VIEW_SQL = """
    CREATE VIEW epochs_long AS
        SELECT s.name AS study, c.model, c.dataset, c.batch_size, c.learning_rate, c.seed,
               c.batch_size / c.learning_rate AS ratio, e.cell_id, e.epoch,
               e.train_loss, e.train_accuracy, e.test_loss, e.test_accuracy,
               e.train_eval_loss, e.train_eval_accuracy,
               e.train_eval_accuracy - e.test_accuracy AS gap,
               e.test_loss - e.train_eval_loss AS loss_gap,
               e.wall_seconds AS pack_wall_seconds, e.pack_cells,
               e.wall_seconds / e.pack_cells AS cell_wall_seconds,
               e.metrics_json, e.recorded_at
        FROM epochs e JOIN cells c USING (cell_id) JOIN studies s USING (study_id);
"""


def _migration_6(conn: sqlite3.Connection) -> None:
    # What SQL users asked for: a learning-curve view without joins (epochs_long), the
    # extra hyper-parameters a user's own SQLiteLogger cell carries (cells.hparams_json),
    # and how many cells shared an epoch's wall time (epochs.pack_cells: wall_seconds is
    # the pack's, a cell's share is wall_seconds / pack_cells).
    run_script(conn, f"""
        ALTER TABLE cells ADD COLUMN hparams_json TEXT;
        ALTER TABLE epochs ADD COLUMN pack_cells INTEGER;
        {EPOCHS_LONG_VIEW_SQL}
    """)


def _migration_7(conn: sqlite3.Connection) -> None:
    # The claim that owns a running cell, by its token (kerasgen.store.Claim.token): a
    # worker checks ownership against its own claim, so one that stalled past the stale
    # limit and woke up after its pack was taken over (and maybe finished) writes nothing,
    # even when the new owner runs under the same worker name.
    run_script(conn, """
        ALTER TABLE cells ADD COLUMN claim_token TEXT;
    """)


def _migration_8(conn: sqlite3.Connection) -> None:
    # A study that grows (kerasgen run --extend with more epochs): a finished cell goes
    # back to pending with the epoch it continues from, its final weights; cells of one
    # pack share it (a new cell of the same group starts from 0 in a pack of its own).
    run_script(conn, """
        ALTER TABLE cells ADD COLUMN continue_from INTEGER;
    """)


def _migration_9(conn: sqlite3.Connection) -> None:
    # Generalization measures per finished run (`kerasgen measures`, Jiang et al. 2020):
    # one row per (run, measure, settings). `settings_key` is a hash of `settings_json`,
    # so the same measure under other settings is another row and a rerun with the same
    # settings replaces nothing (idempotent under several processes). `weights` names
    # the weights the value was taken at ('final': the weights the run finished with, at
    # epoch `weights_epoch`; 'initial': the group's initial weights) beside the run's
    # `kept_epoch` when it was computed. Self-contained (it creates only this table).
    run_script(conn, """
        CREATE TABLE measures (
            cell_id        INTEGER NOT NULL REFERENCES cells(cell_id) ON DELETE CASCADE,
            measure        TEXT NOT NULL,
            settings_key   TEXT NOT NULL,
            value          REAL,
            estimator      TEXT NOT NULL,
            settings_json  TEXT NOT NULL,
            details_json   TEXT,
            weights        TEXT NOT NULL,
            weights_epoch  INTEGER,
            kept_epoch     INTEGER,
            seconds        REAL NOT NULL,
            computed_at    TEXT NOT NULL,
            PRIMARY KEY (cell_id, measure, settings_key)
        );
    """)


# Schema 10: the view best also carries the validation metrics at the kept epoch.
BEST_VIEW_SQL_10 = f"""
    CREATE VIEW best AS
        SELECT s.name AS study, c.cell_id, c.model, c.dataset, c.batch_size,
               c.learning_rate, c.seed, c.batch_size / c.learning_rate AS ratio,
               c.status, {BEST_METRIC_SQL} AS best_metric, c.kept_epoch,
               k.test_accuracy, k.test_loss, k.train_eval_accuracy, k.train_eval_loss,
               k.train_eval_accuracy - k.test_accuracy AS gap,
               k.test_loss - k.train_eval_loss AS loss_gap,
               k.val_accuracy, k.val_loss,
               c.best_test_accuracy, c.best_epoch, c.final_train_accuracy,
               c.final_train_loss, c.final_test_accuracy, c.final_test_loss,
               c.final_train_eval_accuracy, c.final_train_eval_loss, c.epochs_done,
               c.diverged_epoch
        FROM cells c JOIN studies s USING (study_id)
        LEFT JOIN epochs k ON k.cell_id = c.cell_id AND k.epoch = c.kept_epoch;
"""

EPOCHS_LONG_VIEW_SQL_10 = """
    CREATE VIEW epochs_long AS
        SELECT s.name AS study, c.model, c.dataset, c.batch_size, c.learning_rate, c.seed,
               c.batch_size / c.learning_rate AS ratio, e.cell_id, e.epoch,
               e.train_loss, e.train_accuracy, e.test_loss, e.test_accuracy,
               e.train_eval_loss, e.train_eval_accuracy, e.val_loss, e.val_accuracy,
               e.train_eval_accuracy - e.test_accuracy AS gap,
               e.test_loss - e.train_eval_loss AS loss_gap,
               e.wall_seconds AS pack_wall_seconds, e.pack_cells,
               e.wall_seconds / e.pack_cells AS cell_wall_seconds,
               e.metrics_json, e.recorded_at
        FROM epochs e JOIN cells c USING (cell_id) JOIN studies s USING (study_id);
"""


def _migration_10(conn: sqlite3.Connection) -> None:
    # Validation images held out of the training set (training.validation_size), so
    # that the kept epoch can be chosen without the test set (best_metric = val_accuracy
    # or val_loss); the views carry them. Existing rows have none (NULL), and their kept
    # epoch is unchanged: no study before this version could choose on validation.
    run_script(conn, f"""
        ALTER TABLE epochs ADD COLUMN val_loss REAL;
        ALTER TABLE epochs ADD COLUMN val_accuracy REAL;
        DROP VIEW best;
        {BEST_VIEW_SQL_10}
        DROP VIEW epochs_long;
        {EPOCHS_LONG_VIEW_SQL_10}
    """)


# Schema 11: an exact ratio. batch_size / learning_rate in floating point differs in the
# last bits between equal ratios (16 / 0.07 and 32 / 0.14), so GROUP BY ratio split the
# paper's 255 ratios into 258. Rounded to 10 significant digits (far finer than any two
# distinct ratios of a grid, far coarser than the rounding error), in plain SQL (no
# log10: not every SQLite has it), so the views read the same in any SQLite client.
RATIO_SQL = """ROUND(c.batch_size / c.learning_rate, CASE
        WHEN c.batch_size / c.learning_rate >= 1e9 THEN 0
        WHEN c.batch_size / c.learning_rate >= 1e8 THEN 1
        WHEN c.batch_size / c.learning_rate >= 1e7 THEN 2
        WHEN c.batch_size / c.learning_rate >= 1e6 THEN 3
        WHEN c.batch_size / c.learning_rate >= 1e5 THEN 4
        WHEN c.batch_size / c.learning_rate >= 1e4 THEN 5
        WHEN c.batch_size / c.learning_rate >= 1e3 THEN 6
        WHEN c.batch_size / c.learning_rate >= 1e2 THEN 7
        WHEN c.batch_size / c.learning_rate >= 1e1 THEN 8
        WHEN c.batch_size / c.learning_rate >= 1 THEN 9
        ELSE 12 END)"""

# One row per run (cell) at its kept epoch: the name says what it holds (``best`` read
# as "the best cells"); ``best`` stays as an alias, so old queries read the same rows.
CELL_RESULTS_VIEW_SQL_11 = BEST_VIEW_SQL_10.replace(
    "CREATE VIEW best AS", "CREATE VIEW cell_results AS").replace(
    "c.batch_size / c.learning_rate AS ratio", f"{RATIO_SQL} AS ratio")
EPOCHS_LONG_VIEW_SQL_11 = EPOCHS_LONG_VIEW_SQL_10.replace(
    "c.batch_size / c.learning_rate AS ratio", f"{RATIO_SQL} AS ratio")


def _migration_11(conn: sqlite3.Connection) -> None:
    # The view cell_results (what best held), best an alias of it, and the exact ratio
    # in both views.
    run_script(conn, f"""
        DROP VIEW best;
        {CELL_RESULTS_VIEW_SQL_11}
        CREATE VIEW best AS SELECT * FROM cell_results;
        DROP VIEW epochs_long;
        {EPOCHS_LONG_VIEW_SQL_11}
    """)


# Numbered migrations: MIGRATIONS[i] takes the schema from version i to i + 1.
MIGRATIONS: list[tuple[str, Any]] = [
    ("studies, cells, epochs; views best and progress", _migration_1),
    ("index epochs by (cell_id, recorded_at)", _migration_2),
    ("bounds: PAC-Bayes bound terms per cell", _migration_3),
    ("clean training metrics, the kept epoch; view best with gap and loss_gap", _migration_4),
    ("studies.uid: the key of a study's files beside the store", _migration_5),
    ("view epochs_long; cells.hparams_json; epochs.pack_cells", _migration_6),
    ("cells.claim_token: ownership checked against the claim itself", _migration_7),
    ("cells.continue_from: finished cells that continue when a study grows", _migration_8),
    ("measures: generalization measures per run", _migration_9),
    ("epochs.val_loss, epochs.val_accuracy (validation images); views with them",
     _migration_10),
    ("view cell_results (best an alias of it); an exact ratio in the views", _migration_11),
]
SCHEMA_VERSION = len(MIGRATIONS)


def register_migration(name: str, step) -> None:
    """Append a migration (tests use it to exercise upgrades). Every migration of the
    project belongs in ``MIGRATIONS`` above, never registered at import time by another
    module: a process that did not import that module would see a "newer" store."""
    global SCHEMA_VERSION
    MIGRATIONS.append((name, step))
    SCHEMA_VERSION = len(MIGRATIONS)



__all__ = ["BEST_METRIC_SQL", "BEST_VIEW_SQL", "BEST_VIEW_SQL_10", "CELL_RESULTS_VIEW_SQL_11",
           "EPOCHS_LONG_VIEW_SQL", "EPOCHS_LONG_VIEW_SQL_10", "EPOCHS_LONG_VIEW_SQL_11",
           "MIGRATIONS", "RATIO_SQL",
           "SCHEMA_VERSION", "register_migration", "run_script"]
