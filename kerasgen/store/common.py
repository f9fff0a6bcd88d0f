"""What every part of the store shares: its errors, its clock, its constants."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

from kerasgen.vocabulary import FINISHED, STATUSES

# "kgen" in ASCII: lets `file`-like tools and this module recognize a store.
APPLICATION_ID = 0x6B67656E
DEFAULT_STALE_SECONDS = 600.0
DEFAULT_MAX_ATTEMPTS = 3

# Columns of `epochs` with a fixed meaning; other numbers Keras reports go to metrics_json.
# train_loss/train_accuracy: Keras's running averages over the epoch; train_eval_*: the
# clean training metrics (a fixed training subset, measured as the test set); val_*: the
# validation images held out of the training set (training.validation_size), measured as
# the test set. (Keras's own "val_" metrics are of the data passed as validation_data,
# which kerasgen's runner and SQLiteLogger record as test_*.)
EPOCH_COLUMNS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
                 "train_eval_loss", "train_eval_accuracy", "val_loss", "val_accuracy")


BOUND_COLUMNS = ["cell_id", "params", "estimator", "n_params", "n_examples", "delta",
                 "trace_ca_inv", "logdet_sigma", "kl", "theorem1", "theorem1_discrete",
                 "theorem2", "commutator", "assumption2", "critical_ratio", "report_json",
                 "computed_at"]
"""The columns of ``bounds`` (one row per cell and parameter set), written and read."""


class StoreError(RuntimeError):
    """The file cannot be used as a kerasgen store; the message says why and what to do."""


class StudyMismatch(StoreError):
    """A study of that name exists with a different specification."""


class ClaimLost(StoreError):
    """This worker's claim on a pack was taken over (its heartbeat went stale)."""


class CellBusy(StoreError):
    """A cell another live owner is training (a worker's pack, or another SQLiteLogger);
    the message names the cell and its owner."""


class DuplicateEpoch(StoreError):
    """An epoch row that is already recorded for the cell, written as new (a user's fit
    that numbers its epochs from 0 again): refused, never dropped silently."""


LOGGER_PACK_PREFIX = "logger-"
"""The pack id of a claim taken by a user's ``SQLiteLogger`` (one fit, no checkpoint):
the claim loop never trains such a pack; a stale one is marked failed, its rows kept."""


def utc_now() -> str:
    """ISO-8601 UTC with milliseconds: sortable as text."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


MAX_STALE_SECONDS = 30 * 24 * 3600.0
"""The longest stale limit: a month (a longer one would never reclaim a dead worker's
pack, and past about 10^14 s the clock arithmetic overflows)."""


def _utc_ago(seconds: float) -> str:
    moment = datetime.now(timezone.utc) - timedelta(seconds=min(seconds, MAX_STALE_SECONDS))
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")



ReadError = sqlite3.Error
"""What a reader's query may raise while the file changes under it (a replaced file, a
disk error): the dashboard catches it and shows the message instead of crashing."""
Connection = sqlite3.Connection
"""A connection to a store (for type hints outside the store package)."""

__all__ = ["APPLICATION_ID", "BOUND_COLUMNS", "CellBusy", "ClaimLost", "Connection",
           "DEFAULT_MAX_ATTEMPTS", "DEFAULT_STALE_SECONDS", "DuplicateEpoch", "EPOCH_COLUMNS",
           "FINISHED", "LOGGER_PACK_PREFIX", "MAX_STALE_SECONDS", "ReadError", "STATUSES",
           "StoreError", "StudyMismatch", "utc_now"]
