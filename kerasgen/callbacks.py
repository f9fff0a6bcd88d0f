"""``SQLiteLogger``: a Keras callback that streams per-epoch logs into a kerasgen store.

Shaped like ``keras.callbacks.CSVLogger``: it opens the store when training begins,
writes one committed row per epoch (per cell), and closes at the end. Any user can add it
to their own ``model.fit``::

    logger = SQLiteLogger("runs.db", cell={"study": "mine", "model": "cnn",
                                           "dataset": "mnist", "batch_size": 32,
                                           "learning_rate": 0.01, "seed": 0})
    model.fit(x, y, validation_data=(x_test, y_test), epochs=10, callbacks=[logger])

Metric names are never hard-coded: Keras's ``val_<name>`` becomes ``test_<name>`` and
``<name>`` becomes ``train_<name>``. ``loss`` and the accuracy metric (by default the
first of ``accuracy``, ``acc``, ``sparse_categorical_accuracy``, ``categorical_accuracy``,
``binary_accuracy`` present) fill the store's columns; every other finite number is kept
in ``epochs.metrics_json``. For a packed model (outputs ``copy_0``, ``copy_1``, ...),
``cell`` is a list with one cell per output and each copy's metrics land on its cell.

A cell whose training loss becomes non-finite is marked ``diverged`` at that epoch (NaN
is not storable in SQLite) and no longer written.
"""

from __future__ import annotations

import math
import re
import time

import keras

from kerasgen.store import Claim, Store
from kerasgen.vocabulary import DIVERGED, DONE, PENDING, RUNNING

ACCURACY_ALIASES = ("accuracy", "acc", "sparse_categorical_accuracy",
                    "categorical_accuracy", "binary_accuracy")
_COPY = re.compile(r"^copy_(\d+)_(.+)$")


def split_logs(logs: dict, copies: int, accuracy_name: str | None = None,
               loss_weight: float = 1.0) -> list[dict]:
    """Keras epoch logs -> one dict per copy with ``train_``/``test_`` keys.

    ``copies`` = 1 for an ordinary model (unprefixed names); for a packed model the
    ``copy_<k>_`` prefix picks the copy and unprefixed totals (the weighted sum of
    losses) are dropped. ``loss_weight``: a single-output model compiled with
    ``loss_weights=[w]`` logs ``w * loss`` as its loss (Keras names per-output losses
    only when there are several outputs); it is divided out here.
    """
    rows: list[dict] = [{} for _ in range(copies)]
    for key, value in logs.items():
        split = "test" if key.startswith("val_") else "train"
        name = key[4:] if split == "test" else key
        index = 0
        if copies > 1:
            match = _COPY.match(name)
            if match is None:
                continue  # the packed total, meaningless per cell
            index, name = int(match.group(1)), match.group(2)
            if index >= copies:
                continue
        else:
            match = _COPY.match(name)
            if match is not None and match.group(1) == "0":
                name = match.group(2)  # a packed model with a single copy
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if copies == 1 and name == "loss" and loss_weight != 1.0:
            number = number / loss_weight
        rows[index][f"{split}_{name}"] = number
    for row in rows:
        _alias_accuracy(row, accuracy_name)
    return rows


def _alias_accuracy(row: dict, accuracy_name: str | None) -> None:
    for split in ("train", "test"):
        if f"{split}_accuracy" in row:
            continue
        names = (accuracy_name,) if accuracy_name else ACCURACY_ALIASES
        for name in names:
            if f"{split}_{name}" in row:
                row[f"{split}_accuracy"] = row.pop(f"{split}_{name}")
                break


def is_diverged(row: dict) -> bool:
    loss = row.get("train_loss")
    return loss is not None and not math.isfinite(loss)


class SQLiteLogger(keras.callbacks.Callback):
    """Stream each epoch's logs into a kerasgen store.

    Args:
        db: path of the store (created if missing) or an open ``Store``.
        cell: the cell the model trains: an id, or a dict with ``study``, ``model``,
            ``dataset``, ``batch_size``, ``learning_rate``, ``seed`` (the cell, and a
            study of kind "manual", are created when missing). For a packed model, a
            list with one such entry per copy, in output order.
        accuracy_name: the metric that fills the ``*_accuracy`` columns, if not one of
            the usual names.
        finish: mark the cells ``done`` when training ends (default True).
        loss_weight: for a single-output model compiled with ``loss_weights=[w]``,
            the weight to divide out of the logged loss.
        claim: a worker's claim; writes are refused once the claim is lost.
    """

    def __init__(self, db, cell, accuracy_name: str | None = None, finish: bool = True,
                 claim: Claim | None = None, loss_weight: float = 1.0):
        super().__init__()
        self.db = db
        self.cell_spec = list(cell) if isinstance(cell, (list, tuple)) else [cell]
        self.accuracy_name = accuracy_name
        self.finish = finish
        self.claim = claim
        self.loss_weight = loss_weight
        self.store: Store | None = None
        self.cell_ids: list[int] = []
        self.active: list[bool] = []
        self._owns_store = False
        self._epoch_started = 0.0
        self.wall = 0.0

    # -- hooks for subclasses (the study runner checkpoints before rows are written)
    def add_metrics(self, epoch: int, rows: list[dict]) -> None:
        """Add measurements of this epoch to each copy's row (the runner's clean
        training metrics), before anything is written."""

    def before_write(self, epoch: int, rows: list[dict], diverged: list[bool]) -> None:
        """Called at the end of each epoch before anything is written; ``self.wall``
        is the epoch's wall time (training, evaluation and added metrics)."""

    def copy_finished(self, index: int, epoch: int, row: dict) -> bool:
        """Whether copy ``index`` is finished after ``epoch`` (besides divergence)."""
        return False

    # -- Keras callbacks
    def on_train_begin(self, logs=None):
        if isinstance(self.db, Store) or hasattr(self.db, "record_epoch"):
            self.store = self.db  # a Store, or a store-like proxy (the Ray backend's)
        else:
            self.store = Store(self.db)
            self._owns_store = True
        self.cell_ids = [self._resolve(c) for c in self.cell_spec]
        if not self.active:
            statuses = [self.store.cell(i)["status"] for i in self.cell_ids]
            self.active = [s in (PENDING, RUNNING) for s in statuses]
            finished = [(i, s) for i, s in zip(self.cell_ids, statuses)
                        if s not in (PENDING, RUNNING)]
            if finished and self.claim is None:
                cells = ", ".join(f"cell {i} is {s}" for i, s in finished)
                raise ValueError(
                    f"SQLiteLogger will not append epochs to a finished cell ({cells}) in "
                    f"{self.store.path}: its results would mix two trainings. Log to a new "
                    "cell (another study name or seed).")
        if self.claim is None:
            self._mark_running()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        rows = split_logs(logs or {}, len(self.cell_ids), self.accuracy_name, self.loss_weight)
        diverged = [self.active[k] and is_diverged(rows[k]) for k in range(len(rows))]
        self.add_metrics(epoch, rows)
        wall = self.wall = time.perf_counter() - self._epoch_started
        self.before_write(epoch, rows, diverged)
        assert self.store is not None
        for k, cell_id in enumerate(self.cell_ids):
            if not self.active[k]:
                continue
            if diverged[k]:
                self.active[k] = False
                self.store.finish_cell(cell_id, DIVERGED, diverged_epoch=epoch,
                                       claim=self.claim)
                continue
            self.store.record_epoch(cell_id, epoch, rows[k], wall, claim=self.claim)
            if self.copy_finished(k, epoch, rows[k]):
                self.active[k] = False
                self.store.finish_cell(cell_id, DONE, claim=self.claim)
        if not any(self.active):
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.store is None:
            return
        if self.finish:
            for k, cell_id in enumerate(self.cell_ids):
                if self.active[k]:
                    self.store.finish_cell(cell_id, DONE, claim=self.claim)
                    self.active[k] = False
        if self._owns_store:
            self.store.close()
        self.store = None

    # -- helpers
    def _resolve(self, cell) -> int:
        assert self.store is not None
        if isinstance(cell, int) and not isinstance(cell, bool):
            self.store.cell(cell)  # raises a clear error when it does not exist
            return cell
        if not isinstance(cell, dict):
            raise ValueError("cell must be a cell id or a dict with study, model, dataset, "
                             f"batch_size, learning_rate, seed. Received: {cell!r}")
        needed = ("study", "model", "dataset", "batch_size", "learning_rate", "seed")
        missing = [k for k in needed if k not in cell]
        if missing:
            raise ValueError(f"cell lacks {', '.join(missing)}. Received: {cell!r}")
        key = {k: cell[k] for k in needed}
        study = key.pop("study")
        from kerasgen.runtime import environment_facts

        self.store.ensure_cell(study, **key, environment=environment_facts())
        return self.store.cell_id(study, **key)

    def _mark_running(self) -> None:
        assert self.store is not None
        self.store.mark_running([i for i, a in zip(self.cell_ids, self.active) if a])


__all__ = ["SQLiteLogger", "is_diverged", "split_logs"]
