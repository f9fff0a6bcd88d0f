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
import numbers
import re
import sys
import threading
import time

import keras

from kerasgen.runtime import worker_name
from kerasgen.store import DEFAULT_STALE_SECONDS, CellBusy, Claim, ClaimLost, Store
from kerasgen.vocabulary import DIVERGED, DONE, EXAMPLE_LOSS, PENDING, RUNNING

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
        for split in ("train", "test"):
            # A pack's per-copy loss as Keras tracks it weighs every batch alike when the
            # batch dimension is unknown (a last partial batch, under TensorFlow), while
            # a single network's total weighs every example alike: the runner's networks
            # carry EXAMPLE_LOSS, the mean over examples whatever the pack, and it is the
            # loss recorded.
            if f"{split}_{EXAMPLE_LOSS}" in row:
                row[f"{split}_loss"] = row.pop(f"{split}_{EXAMPLE_LOSS}")
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


CELL_KEYS = ("study", "model", "dataset", "batch_size", "learning_rate", "seed")
MAX_SEED = 2**32 - 1


class CellError(ValueError):
    """A cell a SQLiteLogger was given cannot be logged; the message names the value."""


def check_cell(cell) -> tuple[dict, dict]:
    """A cell given as a dict, checked: (its natural key, its other hyper-parameters).

    Every key of ``CELL_KEYS`` must be there with its type: ``study``, ``model``,
    ``dataset`` names (non-empty text), ``batch_size`` an integer >= 1, ``learning_rate``
    a finite number > 0, ``seed`` an integer from 0 to 2**32 - 1. Any other key (an
    optimizer's name, a width) is kept as an extra hyper-parameter of the cell: text,
    a number, true/false or null. Raises CellError naming the first bad value.
    """
    if not isinstance(cell, dict):
        raise CellError("cell must be a cell id or a dict with study, model, dataset, "
                        f"batch_size, learning_rate, seed. Received: {cell!r}")
    missing = [k for k in CELL_KEYS if k not in cell]
    if missing:
        raise CellError(f"cell lacks {', '.join(missing)} (a cell is "
                        f"{', '.join(CELL_KEYS)}). Received: {cell!r}")
    for key in ("study", "model", "dataset"):
        value = cell[key]
        if not isinstance(value, str) or not value.strip():
            raise CellError(f"{key} must be a non-empty name. Received: {key}={value!r}")
    if key_error := _name_error(cell["study"]):
        raise CellError(key_error)
    cell = {k: _plain_number(v) for k, v in cell.items()}
    bs = cell["batch_size"]
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise CellError(f"batch_size must be an integer >= 1. Received: batch_size={bs!r}")
    lr = cell["learning_rate"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) \
            or lr <= 0:
        raise CellError("learning_rate must be a positive number. "
                        f"Received: learning_rate={lr!r}")
    seed = cell["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise CellError(f"seed must be an integer from 0 to {MAX_SEED}. Received: seed={seed!r}")
    hparams = {k: v for k, v in cell.items() if k not in CELL_KEYS}
    for key, value in hparams.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, (str, bool, int))
                                            or (isinstance(value, float)
                                                and math.isfinite(value))):
            raise CellError(f"the extra hyper-parameter {key!r} must be text, a finite number, "
                            f"true/false or null. Received: {key}={value!r}")
    key = {k: cell[k] for k in CELL_KEYS}
    key["learning_rate"] = float(lr)
    return key, hparams


def _plain_number(value):
    """A NumPy (or other numbers-ABC) scalar as the Python int or float it is."""
    if isinstance(value, bool) or not isinstance(value, numbers.Number):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _name_error(name: str) -> str | None:
    from kerasgen.spec import SpecError, check_name

    try:
        check_name(name)
    except SpecError as exc:
        return str(exc).replace("name must", "study must", 1)
    return None


# ---------------------------------------------------------------- heartbeat

class Heartbeat(threading.Thread):
    """Refreshes a claim from a thread of its own (an epoch can outlast the stale limit);
    sets ``lost`` when another worker has taken the pack over. Any other error (the store
    briefly unwritable, the Ray actor slow) is reported and the next beat tries again:
    the thread never dies while training goes on.

    ``store`` is the trainer's store-like object; its ``heartbeat_sender(claim)`` gives a
    callable safe to use from this thread (a connection of its own for a local store, a
    message to the store's owner for the Ray backend) and a closer.
    """

    def __init__(self, store, claim: Claim, interval: float, alive=None):
        super().__init__(daemon=True, name=f"heartbeat-{claim.pack_id}")
        self.store, self.claim, self.interval = store, claim, interval
        self.alive = alive  # None, or a callable: beat only while it says training goes on
        self.lost = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        beat, close = None, None
        reported = 0.0
        try:
            while not self._halt.wait(self.interval):
                if self.alive is not None and not self.alive():
                    continue  # no progress: let the claim go stale (a fit that raised)
                try:
                    if beat is None:
                        beat, close = self.store.heartbeat_sender(self.claim)
                    beat()
                except ClaimLost:
                    self.lost.set()
                    return
                except Exception as exc:  # noqa: BLE001 - reported; the next beat retries
                    if time.monotonic() - reported > 60.0:
                        reported = time.monotonic()
                        print(f"kerasgen: the heartbeat of pack {self.claim.pack_id} failed "
                              f"({type(exc).__name__}: {exc}); retrying every "
                              f"{self.interval:g} s while training goes on",
                              file=sys.stderr, flush=True)
        finally:
            if close is not None:
                close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


# ---------------------------------------------------------------- the logger

_CLAIMS: dict[str, int] = {}
"""Tokens of the claims this process's loggers hold -> the thread whose fit holds each.
A claim still listed for the calling thread belongs to a fit that raised (a thread runs
one fit at a time): the next logger on that cell in this process fails it at once."""


def _abandoned(owner: str | None, token: str | None) -> bool:
    """Whether a cell's running claim belongs to this process and no fit of it can still
    be running: not listed (its logger never ended it), or listed for this very thread."""
    if owner != worker_name():
        return False
    holder = _CLAIMS.get(token or "")
    return holder is None or holder == threading.get_ident()


class SQLiteLogger(keras.callbacks.Callback):
    """Stream each epoch's logs into a kerasgen store.

    Args:
        db: path of the store (created if missing) or an open ``Store``.
        cell: the cell the model trains: an id, or a dict with ``study``, ``model``,
            ``dataset``, ``batch_size``, ``learning_rate``, ``seed`` (the cell, and a
            study of kind "manual", are created when missing); any other key is kept as
            an extra hyper-parameter of the cell (``load_results`` returns them in
            ``hparams``). For a packed model, a list with one such entry per copy, in
            output order.
        accuracy_name: the metric that fills the ``*_accuracy`` columns, if not one of
            the usual names.
        finish: mark the cells ``done`` when training ends (default True). With
            ``finish=False`` they go back to pending and a later fit (this logger or
            another) logs on, numbering its epochs after the last recorded one.
        loss_weight: for a single-output model compiled with ``loss_weights=[w]``,
            the weight to divide out of the logged loss.
        claim: a worker's claim (the study runner's); writes are refused once the claim
            is lost. Without one the logger claims its cells itself when the fit starts,
            as a worker claims a pack: one writer per cell.
        train_eval_data: ``(x, y)``, a fixed part of the training set, evaluated as the
            test set is at every epoch that has test metrics (``model.evaluate``: the
            weights of the epoch's end, batch norm in inference mode, no augmentation):
            the clean training metrics ``train_eval_loss``/``train_eval_accuracy`` that the
            generalization ``gap`` and ``loss_gap`` are measured with.
        heartbeat_seconds: how often the logger's claim is refreshed while the fit makes
            progress (a run's claim loop fails a logger's cells once its heartbeat is
            older than the run's stale limit, and never waits for them forever).

    One writer per cell: the logger refuses (``CellBusy``) a cell that another live owner
    trains (another process's logger, or a ``kerasgen run`` pack). A fit that raises
    leaves its cells claimed without heartbeat: they are marked ``failed`` (rows kept) by
    the next logger of this process on them, by ``kerasgen run``'s claim loop, or once the
    claim goes stale. A second fit (``finish=False``) numbers its epochs on after the
    last recorded one; an epoch already recorded is never dropped silently
    (``DuplicateEpoch``).

    What it refuses, each naming the value and before anything is written: a cell whose
    keys, types or values are wrong (at once, in ``__init__``); a cell of a study created
    from a specification that the specification does not contain; a finished cell
    (appending would mix two trainings); a cell already logged with other extra
    hyper-parameters; a ``fit`` whose optimizer's learning rate or whose batch size (the
    first batch's, as Keras counts it) is not the cell's.
    """

    def __init__(self, db, cell, accuracy_name: str | None = None, finish: bool = True,
                 claim: Claim | None = None, loss_weight: float = 1.0,
                 train_eval_data=None, heartbeat_seconds: float = 5.0,
                 stale_seconds: float = DEFAULT_STALE_SECONDS):
        super().__init__()
        self.db = db
        entries = list(cell) if isinstance(cell, (list, tuple)) else [cell]
        self.cell_spec = [c if isinstance(c, int) and not isinstance(c, bool) else check_cell(c)
                          for c in entries]
        self.accuracy_name = accuracy_name
        self.finish = finish
        self.claim = claim
        self.loss_weight = loss_weight
        self.train_eval_data = train_eval_data
        if train_eval_data is not None and (not isinstance(train_eval_data, (tuple, list))
                                            or len(train_eval_data) != 2):
            raise CellError("train_eval_data must be (x, y): a fixed part of the training set. "
                            f"Received: {type(train_eval_data).__name__}")
        self.heartbeat_seconds = float(heartbeat_seconds)
        self.stale_seconds = float(stale_seconds)
        self.store: Store | None = None
        self.cell_ids: list[int] = []
        self.active: list[bool] = []
        self._owns_store = False
        self._started = False
        self._epoch_started = 0.0
        self.wall = 0.0
        self._own_claim: Claim | None = None  # the claim this logger took itself
        self._heartbeat: Heartbeat | None = None
        self._progress = 0.0  # monotonic time of the last callback of the fit
        self._first_epoch: int | None = None  # Keras's first epoch in this fit
        self._offset: list[int] = []  # added to Keras's epoch: numbering on after a fit

    # -- hooks for subclasses (the study runner checkpoints before rows are written)
    def add_metrics(self, epoch: int, rows: list[dict]) -> None:
        """Add measurements of this epoch to each copy's row before anything is written:
        the clean training metrics on ``train_eval_data``, at every epoch that has test
        metrics (the runner's PackLogger measures its own fixed subset)."""
        if self.train_eval_data is None or not any(
                "test_loss" in row or "test_accuracy" in row for row in rows):
            return
        x, y = self.train_eval_data
        logs = self.model.evaluate(x, y, batch_size=1000, verbose=0, return_dict=True)
        clean = split_logs({f"val_{k}": v for k, v in logs.items()}, len(rows),
                           self.accuracy_name, self.loss_weight)
        for row, measured in zip(rows, clean):
            for name in ("loss", "accuracy"):
                if f"test_{name}" in measured:
                    row[f"train_eval_{name}"] = measured[f"test_{name}"]

    def before_write(self, epoch: int, rows: list[dict], diverged: list[bool]) -> None:
        """Called at the end of each epoch before anything is written; ``self.wall``
        is the epoch's wall time (training, evaluation and added metrics)."""

    def copy_finished(self, index: int, epoch: int, row: dict) -> bool:
        """Whether copy ``index`` is finished after ``epoch`` (besides divergence)."""
        return False

    # -- Keras callbacks
    def on_train_begin(self, logs=None):
        self._first_epoch = None
        self._progress = time.monotonic()
        if isinstance(self.db, Store) or hasattr(self.db, "record_epoch"):
            self.store = self.db  # a Store, or a store-like proxy (the Ray backend's)
        else:
            self.store = Store(self.db)
            self._owns_store = True
        self._started = False
        try:
            self._check_cells()
            self._check_learning_rate()
        except BaseException:
            self._close()
            raise

    def on_train_batch_end(self, batch, logs=None):
        self._progress = time.monotonic()
        if not self._started:
            self._check_batch_size(batch)
            self._start()
        if self._heartbeat is not None and self._heartbeat.lost.is_set():
            raise ClaimLost(f"the claim of this SQLiteLogger on cells {self.cell_ids} was "
                            "taken over (its heartbeat went stale); stopping")

    def on_test_batch_end(self, batch, logs=None):
        self._progress = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._progress = time.monotonic()
        if self._first_epoch is None:
            self._first_epoch = int(epoch)
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if not self._started:
            self._start()
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
            self.store.record_epoch(cell_id, epoch + self._offset_of(k), rows[k], wall,
                                    claim=self.claim, pack_cells=len(self.cell_ids),
                                    replay=self._own_claim is None)
            if self.copy_finished(k, epoch, rows[k]):
                self.active[k] = False
                self.store.finish_cell(cell_id, DONE, claim=self.claim)
        if not any(self.active):
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.store is None:
            return
        try:
            if self.finish and self._started:
                for k, cell_id in enumerate(self.cell_ids):
                    if self.active[k]:
                        self.store.finish_cell(cell_id, DONE, claim=self.claim)
                        self.active[k] = False
            if self._own_claim is not None:
                # finish=False, or a fit stopped early: what is still running is given back
                # for a later fit to log on.
                self.store.release_cells(self._own_claim, PENDING)
        finally:
            self._end_claim()
            self._close()

    def _offset_of(self, k: int) -> int:
        return self._offset[k] if k < len(self._offset) else 0

    # -- checks (read only: nothing is written before they pass)
    def _check_cells(self) -> None:
        assert self.store is not None
        self._found: list[int | None] = []
        for entry in self.cell_spec:
            if isinstance(entry, int):
                self.store.cell(entry)  # raises a clear error when it does not exist
                self._found.append(entry)
                continue
            key, hparams = entry
            found = self.store.find_cell(**key)
            if found is None:
                if self.store.study_kind(key["study"]) == "spec":
                    coordinates = ", ".join(f"{k}={v!r}" for k, v in key.items()
                                            if k != "study")
                    raise CellError(
                        f"the study {key['study']!r} in {self.store.path} was created from a "
                        f"specification that has no cell ({coordinates}); log your own runs "
                        "to a study of your own (another study name)")
                self._found.append(None)
                continue
            cell_id, stored = found
            if stored != hparams:
                raise CellError(
                    f"cell {cell_id} of study {key['study']!r} was logged with extra "
                    f"hyper-parameters {stored} and is now given {hparams}: its results "
                    "would mix two trainings. Give this run another seed or study name.")
            self._found.append(cell_id)
        if self.claim is None:
            finished = []
            for cell_id in self._found:
                if cell_id is not None:
                    status = self.store.cell(cell_id)["status"]
                    if status not in (PENDING, RUNNING):
                        finished.append(f"cell {cell_id} is {status}")
            if finished:
                raise CellError(
                    f"SQLiteLogger will not append epochs to a finished cell "
                    f"({', '.join(finished)}) in {self.store.path}: its results would mix "
                    "two trainings. Log to a new cell (another study name or seed).")

    def _dict_cells(self) -> list[dict]:
        return [entry[0] for entry in self.cell_spec if not isinstance(entry, int)]

    def _check_learning_rate(self) -> None:
        cells = self._dict_cells()
        rates = {c["learning_rate"] for c in cells}
        optimizer = getattr(self.model, "optimizer", None)
        if self.claim is not None or len(rates) != 1 or optimizer is None:
            return
        try:
            actual = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        except (TypeError, ValueError, AttributeError):
            return  # a schedule object Keras cannot read as one number
        (wanted,) = rates
        if not math.isclose(actual, wanted, rel_tol=1e-6):
            raise CellError(
                f"the model's optimizer has learning_rate={actual:g}, but the cell says "
                f"learning_rate={wanted:g}: compile with the cell's learning rate, or log "
                "the run as the cell it is")

    def _check_batch_size(self, batch: int) -> None:
        """The first batch's size, from Keras's own loss tracker (it weighs each batch's
        loss by its number of examples), against the cell's batch size."""
        cells = self._dict_cells()
        sizes = {c["batch_size"] for c in cells}
        tracker = getattr(self.model, "_loss_tracker", None)
        if self.claim is not None or len(sizes) != 1 or tracker is None:
            return
        try:
            seen = float(keras.ops.convert_to_numpy(tracker.count))
        except (TypeError, ValueError, AttributeError):
            return
        if seen <= 0:
            return  # not counted (a custom train_step, or a backend that syncs later)
        actual = seen / (int(batch) + 1)
        (wanted,) = sizes
        if abs(actual - wanted) > 1e-6 and not (int(batch) == 0 and actual < wanted
                                                and self.params.get("steps") == 1):
            raise CellError(
                f"the fit's batches hold {actual:g} examples, but the cell says "
                f"batch_size={wanted}: pass batch_size={wanted} to fit (or batch the "
                "dataset so), or log the run as the cell it is")

    # -- writes
    def _start(self) -> None:
        """Create the cells that do not exist yet and mark them running (a user's own
        fit), once the checks have passed."""
        assert self.store is not None
        self._started = True
        ids = []
        for entry, found in zip(self.cell_spec, self._found):
            if found is not None:
                ids.append(found)
                continue
            key, hparams = entry
            from kerasgen.runtime import environment_facts

            self.store.ensure_cell(**key, environment=environment_facts(), hparams=hparams)
            ids.append(self.store.cell_id(**key))
        self.cell_ids = ids
        if self.claim is None:
            self._take_claim()
        if not self.active:
            statuses = [self.store.cell(i)["status"] for i in self.cell_ids]
            self.active = [s in (PENDING, RUNNING) for s in statuses]

    def _take_claim(self) -> None:
        """Claim this fit's cells (one writer per cell), start the heartbeat, and number
        this fit's epochs after those already recorded (a later fit logs on)."""
        assert self.store is not None
        claim = self.store.claim_cells(self.cell_ids, worker_name(), self.stale_seconds,
                                       abandoned=_abandoned)
        self._own_claim = claim
        _CLAIMS[claim.token] = threading.get_ident()
        missing = sorted(set(self.cell_ids) - set(claim.cell_ids))
        if missing:
            self._end_claim(release=True)
            states = ", ".join(f"cell {i} is {self.store.cell(i)['status']}" for i in missing)
            raise CellBusy(
                f"SQLiteLogger cannot log into {states} in {self.store.path}: an earlier fit "
                "of this process on it stopped without finishing (its rows are kept, the cell "
                "failed). Log the new training as another cell (another seed or study name).")
        self.claim = claim
        first = self._first_epoch if self._first_epoch is not None else 0
        self._offset = []
        for cell_id in self.cell_ids:
            done = self.store.epochs_of(cell_id)
            last = max((int(r["epoch"]) for r in done), default=-1)
            self._offset.append(max(0, last + 1 - first))
        if any(self._offset):
            print(f"kerasgen: SQLiteLogger: cells {self.cell_ids} already hold epochs; this "
                  f"fit's epochs are numbered on from epoch {first + max(self._offset)}.",
                  file=sys.stderr, flush=True)
        if hasattr(self.store, "heartbeat_sender"):
            self._heartbeat = Heartbeat(self.store, claim, self.heartbeat_seconds,
                                        alive=self._making_progress)
            self._heartbeat.start()

    def _making_progress(self) -> bool:
        return time.monotonic() - self._progress < max(4 * self.heartbeat_seconds, 60.0)

    def _end_claim(self, release: bool = False) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self._own_claim is not None:
            if release and self.store is not None:
                self.store.release_cells(self._own_claim, PENDING)
            _CLAIMS.pop(self._own_claim.token, None)
            self._own_claim = None
            self.claim = None

    def _close(self) -> None:
        if self._owns_store and self.store is not None:
            self.store.close()
        self.store = None


__all__ = ["CELL_KEYS", "CellError", "SQLiteLogger", "check_cell", "is_diverged",
           "split_logs"]
