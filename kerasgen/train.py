"""Training one claimed pack to the end: its data, its model (``kerasgen.packing``), the
callback that records every epoch, the heartbeat, the checkpoints, resuming.

Every epoch where the test set is evaluated, each copy is also evaluated on a fixed
subset of the training set, exactly as the test set is (no augmentation, batch norm in
inference mode): the clean training metrics (``train_eval_*``) that the generalization
gap is measured with. Then the pack is checkpointed (atomically; ``kerasgen.checkpoints``),
then each cell's row is committed to the store. A killed pack resumes from its last
checkpoint; rows that the checkpoint holds but the store lacks are written back first,
so nothing is missing and nothing is written twice.

``training.dtype = "float64"`` trains in float64 end to end: Keras's float type and
dtype policy are float64 while the pack is built and trained (variables, computation,
optimizer state), from the group's initial weights drawn in float32 (so float32 and
float64 studies of a group start from the same weights).
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras

from kerasgen import data as data_lib
from kerasgen.callbacks import Heartbeat, SQLiteLogger, split_logs
from kerasgen.checkpoints import (
    PackCheckpoint,
    atomic_savez,
    default_root,
    group_weights_path,
    load_arrays,
    load_cell_weights,
    save_cell_weights,
    study_directory,
)
from kerasgen.models import build_model, fingerprint
from kerasgen.naming import ModelRef, model_ref
from kerasgen.options import RunOptions
from kerasgen.packing import (
    PACKS,
    build_pack,
    cell_weights,
    float_type,
    mirrored_strategy,
    resolve_jit_compile,
    resolve_layout,
    set_cell_weights,
)
from kerasgen.spec import Spec
from kerasgen.store import Claim, ClaimLost, Store
from kerasgen.vocabulary import DIVERGED, DONE, RUNNING

# ---------------------------------------------------------------- determinism and init

def configure_backend() -> None:
    """Ask the backend for deterministic kernels (TensorFlow's op determinism; JAX is
    deterministic on one device for one program). Process-wide, and idempotent.

    Determinism costs some speed on GPU (no non-deterministic cuDNN algorithms); it is
    what makes a resumed or repeated cell give the same numbers on the same machine.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def configure_determinism(seed: int) -> None:
    """Seed Python, numpy and the backend, and ask for deterministic kernels."""
    keras.utils.set_random_seed(int(seed))
    configure_backend()


def initial_weights(model: ModelRef, ds: data_lib.Dataset, seed: int,
                    checkpoint_dir: Path) -> list:
    """The group's initial weights: drawn once from the seed (in float32, whatever the
    study's dtype), saved, and loaded by every cell of the group (on any worker, in any
    process, after any restart). A network of your own is named by its fingerprint too,
    so a changed network never loads another's weights."""
    model = model if isinstance(model, ModelRef) else model_ref(model)
    if model.builtin:
        path = group_weights_path(checkpoint_dir, model.name, ds.name, seed)
        if path.exists():
            return load_arrays(path)
    keras.utils.set_random_seed(int(seed))
    with float_type("float32"):
        net = build_model(model, num_classes=ds.num_classes, input_shape=ds.input_shape)
        weights = net.get_weights()
    if not model.builtin:
        path = group_weights_path(checkpoint_dir, model, ds.name, seed, fingerprint(net))
        if path.exists():
            return load_arrays(path)
    del net
    atomic_savez(path, {f"w{i}": w for i, w in enumerate(weights)})
    return weights


# ---------------------------------------------------------------- the pack callback

class PackLogger(SQLiteLogger):
    """``SQLiteLogger`` plus what the runner needs: the stopping rule, a checkpoint
    before rows are committed, and an abort when the claim is lost."""

    def __init__(self, store: Store, claim: Claim, cell_ids: list[int], spec: Spec,
                 checkpoint: PackCheckpoint, active: list[bool], history: dict,
                 lost: threading.Event, layout: str = "branches", train_eval=None,
                 study_dir: Path | None = None, keep_weights: str = "final", validation=None):
        super().__init__(store, cell=cell_ids, claim=claim)
        self.keep_weights = keep_weights
        self.spec = spec
        self.study_dir = study_dir if study_dir is not None else checkpoint.directory.parent
        self.layout = layout
        self.train_eval = train_eval  # the clean training subset, as model.evaluate takes it
        self.validation = validation  # the held-out validation images, likewise
        self.checkpoint = checkpoint
        self.active = list(active)
        self.history = history  # cell_id -> list of [epoch, row, wall_seconds]
        self.lost = lost
        self._finishing: list[bool] = []
        self.statuses: dict[str, list] = {}

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if self.lost.is_set():
            raise ClaimLost("this worker's claim on the pack was taken over; stopping")

    def add_metrics(self, epoch: int, rows: list[dict]) -> None:
        """Clean training metrics, at every epoch where the test set was evaluated: each
        copy on the fixed training subset, through ``model.evaluate`` as the test set
        (same weights, batch norm in inference mode, no augmentation); and the held-out
        validation images the same way (``val_loss``, ``val_accuracy``)."""
        if not any("test_loss" in row for row in rows):
            return
        for data, prefix in ((self.train_eval, "train_eval"), (self.validation, "val")):
            if data is None:
                continue
            if isinstance(data, tuple):  # numpy arrays (backends without tf.data)
                x, y = data
                logs = self.model.evaluate(x, y, batch_size=1000, verbose=0, return_dict=True)
            else:
                logs = self.model.evaluate(data, verbose=0, return_dict=True)
            clean = split_logs({f"val_{k}": v for k, v in logs.items()}, len(rows))
            for row, measured in zip(rows, clean):
                for name in ("loss", "accuracy"):
                    if f"test_{name}" in measured:
                        row[f"{prefix}_{name}"] = measured[f"test_{name}"]

    def before_write(self, epoch: int, rows: list[dict], diverged: list[bool]) -> None:
        if self.claim is not None:
            # A worker that stalled past the stale limit and woke up finds its pack taken
            # over here, before it writes a weight file or a checkpoint.
            self.store.check_claim(self.claim)
        wall = self.wall
        cap_reached = epoch + 1 >= self.spec.epochs
        self._finishing = []
        for k, row in enumerate(rows):
            finishing = False
            if self.active[k] and not diverged[k]:
                if cap_reached:
                    finishing = True
                elif self.spec.stop.rule == "train_loss":
                    loss = row.get("train_loss")
                    finishing = loss is not None and loss < self.spec.stop.threshold
                self.history.setdefault(str(self.cell_ids[k]), []).append([epoch, row, wall])
            self._finishing.append(finishing)
        statuses = []
        for k, cell_id in enumerate(self.cell_ids):
            if not self.active[k]:
                statuses.append(self.statuses.get(str(cell_id)))
            elif diverged[k]:
                statuses.append([DIVERGED, epoch])
            elif self._finishing[k]:
                statuses.append([DONE, epoch])
            else:
                statuses.append(None)
        self.statuses = {str(c): s for c, s in zip(self.cell_ids, statuses)}
        finishing = [k for k, f in enumerate(self._finishing) if f]
        if finishing and self.keep_weights == "final":
            # A finished copy keeps training with its pack-mates; keep the weights it
            # finished with (the theory's estimates of A and C are taken at them).
            weights = cell_weights(self.model, self.layout)
            for k in finishing:
                save_cell_weights(self.study_dir, self.cell_ids[k], weights[k])
        changed = any(self.active[k] and (diverged[k] or self._finishing[k])
                      for k in range(len(rows)))
        every = self.spec.training.checkpoint_every
        if not (changed or cap_reached or (epoch + 1) % every == 0):
            # Between checkpoints: the rows are committed; a resume redoes these epochs
            # from the last checkpoint, identically, and the store keeps what it has.
            return
        self.checkpoint.save(self.model, {
            "epoch": epoch, "cell_ids": self.cell_ids, "statuses": self.statuses,
            "history": self.history, "pack_id": self.claim.pack_id if self.claim else None,
            "layout": self.layout,
        })

    def copy_finished(self, index: int, epoch: int, row: dict) -> bool:
        return self._finishing[index]


# ---------------------------------------------------------------- training a pack

def checkpoint_root(db_path: Path, options: RunOptions) -> Path:
    return default_root(db_path, options.checkpoint_dir)


def study_dir_of(store, claim: Claim, options: RunOptions) -> Path:
    """Where the claim's study keeps its checkpoints and weights (see kerasgen.checkpoints)."""
    return study_directory(checkpoint_root(store.path, options), claim.study, claim.study_uid)


@dataclass
class PackState:
    """Where a claimed pack starts: its cells (the checkpoint's, in learning-rate order),
    their learning rates, which still train, what the checkpoint decided and recorded,
    the first epoch to train, and (when finished cells continue after their study grew)
    each copy's own weights to start from."""

    meta: dict | None
    cell_ids: list[int]
    learning_rates: list[float]
    active: list[bool]
    statuses: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)
    initial_epoch: int = 0
    start_weights: list | None = None


def pack_state(store: Store, claim: Claim, checkpoint: PackCheckpoint,
               study_dir: Path) -> PackState:
    """Read where a claimed pack starts (``PackState``): from its latest checkpoint (made
    this claim's own first, and what it holds but the store lacks written back), else
    from the beginning, or from the cells' final weights when they continue."""
    meta = checkpoint.adopt()
    if meta is not None:
        cell_ids = [int(c) for c in meta["cell_ids"]]
        missing = set(claim.cell_ids) - set(cell_ids)
        if missing:
            raise RuntimeError(f"checkpoint {checkpoint.directory} does not hold cells "
                               f"{sorted(missing)} of pack {claim.pack_id}")
        _replay(store, claim, meta)
        cells = {c: store.cell(c) for c in cell_ids}
        state = PackState(meta, cell_ids, [float(cells[c]["learning_rate"]) for c in cell_ids],
                          [], meta["statuses"], meta["history"], int(meta["epoch"]) + 1)
    else:
        cells = {c["cell_id"]: c for c in claim.cells}
        cell_ids = list(claim.cell_ids)
        continue_from = claim.cells[0].get("continue_from")
        state = PackState(None, cell_ids, [float(cells[c]["learning_rate"]) for c in cell_ids],
                          [], initial_epoch=int(continue_from or 0))
        if continue_from:
            state.start_weights = [load_cell_weights(study_dir, c) for c in cell_ids]
    state.active = [state.statuses.get(str(c)) is None and c in claim.cell_ids
                    and store.cell(c)["status"] == RUNNING for c in state.cell_ids]
    return state


def train_pack(store: Store, claim: Claim, spec: Spec, ds: data_lib.Dataset,
               options: RunOptions) -> dict:
    """Train (or resume) one claimed pack to the end; returns a small summary."""
    root = checkpoint_root(store.path, options)
    study_dir = study_dir_of(store, claim, options)
    checkpoint = PackCheckpoint(study_dir / f"pack-{claim.pack_id}", owner=claim.token)
    first = claim.cells[0]
    model, seed = spec.model(first["model"]), int(first["seed"])

    state = pack_state(store, claim, checkpoint, study_dir)
    if not any(state.active) or state.initial_epoch >= spec.epochs:
        _finish_leftovers(store, claim, state.cell_ids)
        checkpoint.remove()
        return {"pack_id": claim.pack_id, "epochs": 0, "resumed_from": state.initial_epoch}

    # Validation images leave the training set before anything else sees it.
    full = ds
    ds, held = data_lib.hold_out(full, spec.training.validation_size)
    configure_determinism(seed)
    weights = initial_weights(model, ds, seed, root)
    with float_type(spec.training.dtype):
        started = time.perf_counter()
        _fit_pack(FitSettings(store, claim, spec, ds, options, checkpoint, study_dir,
                              validation=(full, held)), state, weights)
    # Finished: every row and status is in the store, the final weights are kept; the
    # checkpoints are only needed to resume (a failed pack keeps them for that and for
    # the post-mortem).
    checkpoint.remove()
    return {"pack_id": claim.pack_id, "epochs": spec.epochs - state.initial_epoch,
            "resumed_from": state.initial_epoch, "seconds": time.perf_counter() - started}


@dataclass(frozen=True)
class FitSettings:
    """What one pack's fit is given: the store and the claim it writes under, the study,
    its data set, how it runs, its checkpoint and the study's directory."""

    store: Store
    claim: Claim
    spec: Spec
    ds: data_lib.Dataset
    options: RunOptions
    checkpoint: PackCheckpoint
    study_dir: Path
    validation: tuple | None = None  # (the full data set, its held-out indices)


def _fit_pack(fit: FitSettings, state: PackState, weights: list) -> None:
    store, claim, spec, ds, options = fit.store, fit.claim, fit.spec, fit.ds, fit.options
    first = claim.cells[0]
    ref, seed, batch_size = spec.model(first["model"]), int(first["seed"]), \
        int(first["batch_size"])
    training = spec.training
    meta, learning_rates, initial_epoch = state.meta, state.learning_rates, state.initial_epoch
    jit = resolve_jit_compile(options.jit_compile, options.exact)
    # A resumed pack keeps the layout its checkpoint was written in.
    layout = (meta.get("layout", "branches") if meta is not None
              else resolve_layout(options.layout, ref))
    strategy = mirrored_strategy() if options.mirrored else None

    def build():
        return build_pack(ref, ds, learning_rates, weights, training.momentum,
                          training.weight_decay, jit, options.steps_per_execution,
                          synchronized_bn=strategy is not None, layout=layout)

    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        if strategy is not None:
            PACKS.clear()
            model = build()
        else:
            key = (keras.backend.backend(), keras.config.floatx(), ref, ds.name,
                   ds.input_shape, ds.num_classes, len(learning_rates), layout, jit,
                   options.steps_per_execution, training.momentum, training.weight_decay)
            model = PACKS.get(key, build, weights, learning_rates)
        if meta is not None:
            fit.checkpoint.restore(model, meta)
            print(f"kerasgen: resuming pack {claim.pack_id} ({ref.name}, batch {batch_size}) "
                  f"from epoch {initial_epoch}", file=sys.stderr, flush=True)
        elif state.start_weights is not None:
            set_cell_weights(model, layout, state.start_weights)
            print(f"kerasgen: pack {claim.pack_id} ({ref.name}, batch {batch_size}) continues "
                  f"its cells from their final weights at epoch {initial_epoch}",
                  file=sys.stderr, flush=True)

    augment = ds.augment if training.augment == "default" else bool(training.augment)
    drop_last = training.last_batch == "drop"
    cell_ids = state.cell_ids
    copies = len(cell_ids)
    subset = data_lib.train_eval_indices(seed, ds.train_size, training.train_eval_size,
                                         int(ds.x_test.shape[0]))
    train_eval = data_lib.train_eval_arrays(ds, subset, copies) if len(subset) else None
    full, held = fit.validation if fit.validation is not None else (ds, ())
    held_out = data_lib.train_eval_arrays(full, held, copies) if len(held) else None
    if keras.backend.backend() == "tensorflow":
        train = data_lib.train_dataset(ds, seed, batch_size, initial_epoch, spec.epochs,
                                       copies=copies, augment=augment, drop_last=drop_last)
        test = data_lib.test_dataset(ds, copies=copies)
        if train_eval is not None:
            train_eval = data_lib.evaluation_dataset(*train_eval)
        if held_out is not None:
            held_out = data_lib.evaluation_dataset(*held_out)
    else:  # JAX (or another backend): the same batches, from numpy
        train = data_lib.batch_generator(ds, seed, batch_size, initial_epoch, spec.epochs,
                                         copies=copies, augment=augment, drop_last=drop_last)
        test = data_lib.test_arrays(ds, copies=copies)
    heartbeat = Heartbeat(store, claim, options.heartbeat_interval)
    logger = PackLogger(store, claim, cell_ids, spec, fit.checkpoint, state.active,
                        state.history, heartbeat.lost, layout, train_eval=train_eval,
                        study_dir=fit.study_dir, keep_weights=options.keep_weights,
                        validation=held_out)
    logger.statuses = dict(state.statuses)
    heartbeat.start()
    try:
        model.fit(
            train, steps_per_epoch=data_lib.steps_per_epoch(ds.train_size, batch_size, drop_last),
            initial_epoch=initial_epoch, epochs=spec.epochs, validation_data=test,
            validation_freq=training.test_every, callbacks=[logger], verbose=options.verbose,
            shuffle=False, validation_batch_size=1000,
        )
    finally:
        heartbeat.stop()
        if strategy is not None:
            del model
            keras.backend.clear_session(free_memory=True)
            gc.collect()
    if heartbeat.lost.is_set():
        raise ClaimLost(f"pack {claim.pack_id} was taken over by another worker")


def _replay(store: Store, claim: Claim, meta: dict) -> None:
    """Write back what the checkpoint holds and the store lacks (a kill between the
    checkpoint and the commit), then the statuses the checkpoint decided: for the cells
    this claim holds only. A cell of the pack that an earlier owner finished (and
    committed) before it was killed is not ours to write, and is already complete."""
    mine = set(claim.cell_ids)
    for cell_id, rows in meta["history"].items():
        if int(cell_id) not in mine:
            continue
        for epoch, row, wall in rows:
            store.record_epoch(int(cell_id), int(epoch), row, wall, claim=claim,
                               pack_cells=len(meta["cell_ids"]))
    for cell_id, status in meta["statuses"].items():
        if status is None or int(cell_id) not in mine:
            continue
        current = store.cell(int(cell_id))["status"]
        if current == RUNNING:
            kind, epoch = status
            store.finish_cell(int(cell_id), kind,
                              diverged_epoch=epoch if kind == DIVERGED else None, claim=claim)


def _finish_leftovers(store: Store, claim: Claim, cell_ids: list[int]) -> None:
    for cell_id in cell_ids:
        if cell_id in claim.cell_ids and store.cell(cell_id)["status"] == RUNNING:
            store.finish_cell(cell_id, DONE, claim=claim)


def prepare_dataset(name: str, options: RunOptions, dtype: str = "float32") -> data_lib.Dataset:
    ds = data_lib.load_dataset(name, data_dir=options.data_dir)
    if dtype == "float64":
        ds.x_train = ds.x_train.astype(dtype)
        ds.x_test = ds.x_test.astype(dtype)
    return ds


__all__ = ["PackLogger", "checkpoint_root", "configure_backend", "configure_determinism",
           "initial_weights", "prepare_dataset", "study_dir_of", "train_pack"]
