"""The results store: one SQLite file per study collection, that loses nothing.

Every SQL statement kerasgen runs lives in this package:

- ``schema``   the tables and views, raised by numbered migrations (``PRAGMA user_version``)
- ``files``    opening a file: inspection without modification, read-only readers, locks
- ``writer``   ``Store``: studies, cells, atomic pack claims, heartbeats, epochs, outcomes
- ``queries``  every read: ``load_results``, ``load_epochs``, progress, dashboard, bounds

- WAL journal, ``busy_timeout``, foreign keys, ``synchronous=NORMAL`` (a committed
  transaction survives a killed process); every write is a short ``BEGIN IMMEDIATE``
  transaction, so a writer never holds the lock across training; a lock held past the
  busy timeout is waited for, never a failure.
- ``PRAGMA application_id`` marks the file as a kerasgen store. A file that is not a
  kerasgen store, is corrupt or truncated, or comes from a newer kerasgen is refused with a
  message saying which, and is never modified: it is first inspected read-only.
- Readers use read-only connections (``mode=ro``; an immutable snapshot where this user
  may not write beside the file) and never block a writer.

Tables: ``studies`` (spec as JSON, versions, host, uid), ``cells`` (one trained model,
its status and summary), ``epochs`` (one row per cell per epoch), ``bounds``,
``measures`` (generalization measures per run and settings). Views:
``best`` (one row per cell, every number at the kept epoch) and ``progress`` (counts by
status). The README documents them.

No TensorFlow here (an import contract in pyproject.toml holds the line).
"""

from kerasgen.store.common import (
    APPLICATION_ID,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_STALE_SECONDS,
    EPOCH_COLUMNS,
    FINISHED,
    LOGGER_PACK_PREFIX,
    MAX_STALE_SECONDS,
    STATUSES,
    CellBusy,
    ClaimLost,
    Connection,
    DuplicateEpoch,
    ReadError,
    StoreError,
    StudyMismatch,
    utc_now,
)
from kerasgen.store.files import (
    BUSY_TIMEOUT_MS,
    check_writable,
    connect_readonly,
    inspect_store,
    lock_holders,
    read_snapshot,
    readonly_note,
)
from kerasgen.store.queries import (
    BOUND_COLUMNS,
    MEASURE_COLUMNS,
    RESULT_COLUMNS,
    bound_cell_ids,
    epoch_curve_rows,
    has_clean_metrics,
    last_epoch_row,
    load_bound_rows,
    load_epochs,
    load_measure_rows,
    load_progress,
    load_results,
    load_studies,
    measure_keys,
    measure_signature,
    progress_rows,
    read_cell_rows,
    read_new_epochs,
    study_overview,
    study_uids,
)
from kerasgen.store.schema import MIGRATIONS, SCHEMA_VERSION, register_migration
from kerasgen.store.writer import Claim, Store, describe_difference, worker_is_gone

__all__ = [
    "APPLICATION_ID", "BOUND_COLUMNS", "BUSY_TIMEOUT_MS", "CellBusy", "Claim", "ClaimLost",
    "Connection", "DuplicateEpoch", "LOGGER_PACK_PREFIX", "MAX_STALE_SECONDS",
    "DEFAULT_MAX_ATTEMPTS", "DEFAULT_STALE_SECONDS", "EPOCH_COLUMNS", "FINISHED",
    "MEASURE_COLUMNS", "MIGRATIONS",
    "RESULT_COLUMNS", "ReadError", "SCHEMA_VERSION", "STATUSES", "Store", "StoreError",
    "StudyMismatch", "bound_cell_ids", "check_writable", "connect_readonly",
    "describe_difference", "epoch_curve_rows", "has_clean_metrics", "inspect_store",
    "last_epoch_row", "load_bound_rows", "load_epochs", "load_measure_rows", "load_progress",
    "load_results", "load_studies", "lock_holders", "measure_keys", "measure_signature",
    "progress_rows", "read_cell_rows", "read_new_epochs", "read_snapshot", "readonly_note",
    "register_migration", "study_overview", "study_uids", "utc_now", "worker_is_gone",
]
