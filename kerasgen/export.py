"""A study out of kerasgen: TensorBoard runs with HParams, and the tables as CSV or Parquet.

- ``export_tensorboard(db, out)``: one TensorBoard run per cell, written with the
  ``tensorboard`` package's own writer and HParams API (``tensorboard.plugins.hparams``):
  the cell's hyper-parameters (study, model, data set, batch size, learning rate, ratio,
  seed, status), its metrics (at the kept epoch: test accuracy and loss, the gap and loss
  gap where recorded; the best test accuracy of any epoch; the final training loss) and
  every epoch's scalars. ``tensorboard --logdir out`` shows the HParams table, parallel
  coordinates and scatter plots. No TensorFlow is needed (``pip install
  'kerasgen[tensorboard]'``).
- ``export_tables(db, out, "csv"|"parquet")``: ``cells``, ``epochs`` and ``studies`` as
  files pandas and every other tool reads (Parquet through ``pyarrow``:
  ``pip install 'kerasgen[parquet]'``).

Every export is written into a temporary directory beside ``out`` and renamed into place
when complete: an interrupted or failed export leaves nothing half-written. An existing
``out`` is replaced only with ``force``, only once the new one is complete, and only when
it is an earlier export of the same kind, unchanged (``kerasgen.outputs``): a store, its
checkpoints or anyone else's files under ``out`` are never deleted.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from datetime import datetime
from pathlib import Path

import pandas as pd

from kerasgen.naming import file_stem
from kerasgen.outputs import OutputError, protected_paths, spreadsheet_safe, staged_directory
from kerasgen.store import load_epochs, load_results, load_studies

TABLE_FORMATS = ("csv", "parquet")
EPOCH_SCALARS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
                 "train_eval_loss", "train_eval_accuracy")
"""Per-epoch scalars, as ``epoch/<name>`` (``train_*``: Keras's running averages over the
epoch; ``train_eval_*``: the clean metrics on the fixed training subset)."""
CELL_METRICS = {
    "test_accuracy": "test accuracy at the kept epoch",
    "test_loss": "test loss at the kept epoch",
    "gap": "train_eval_accuracy - test_accuracy at the kept epoch",
    "loss_gap": "test_loss - train_eval_loss at the kept epoch",
    "best_test_accuracy": "the highest test accuracy of any epoch (the paper's measure)",
    "final_train_loss": "the last epoch's training loss (running average)",
}
"""The HParams metrics, as ``metrics/<name>``, written at the kept epoch."""


class ExportError(OutputError):
    """An export that cannot be made as asked; the message names the problem and the fix."""


def _frames(db, study: str | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    cells = load_results(db, study=study)
    if cells.empty:
        which = f" of study {study!r}" if study else ""
        known = ", ".join(repr(s) for s in load_studies(db)["name"])
        raise ExportError(f"{db} holds no cells{which}"
                          + (f" (its studies: {known})" if known and study else "") + ".")
    epochs = load_epochs(db, study=study).drop(columns=["row"])
    studies = load_studies(db)
    studies = studies[studies["name"].isin(set(cells["study"]))].reset_index(drop=True)
    return cells, epochs, studies


# ---------------------------------------------------------------- CSV / Parquet

def export_tables(db, out, fmt: str = "csv", study: str | None = None,
                  force: bool = False) -> list[Path]:
    """Write ``cells``, ``epochs`` and ``studies`` of the store (or of one study) as
    ``<out>/<table>.<fmt>``; returns the paths written."""
    if fmt not in TABLE_FORMATS:
        raise ExportError(f"the table format must be one of {TABLE_FORMATS}. Received: {fmt!r}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportError("Parquet needs pyarrow: pip install 'kerasgen[parquet]' "
                              "(or export csv).") from None
    tables = dict(zip(("cells", "epochs", "studies"), _frames(db, study)))
    written = []
    with staged_directory(out, f"kerasgen export {fmt}", force, protected_paths(db),
                          error=ExportError) as stage:
        for name, frame in tables.items():
            path = stage / f"{name}.{fmt}"
            if fmt == "csv":
                spreadsheet_safe(frame).to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False, engine="pyarrow")
            written.append(Path(out) / path.name)
    return written


# ---------------------------------------------------------------- TensorBoard

def _tensorboard():
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import summary_v2 as hp
        from tensorboard.summary.writer.record_writer import RecordWriter
    except ImportError:
        raise ExportError("TensorBoard export needs the tensorboard package: pip install "
                          "'kerasgen[tensorboard]'.") from None

    class EventFile:
        """An event file as TensorBoard's ``EventFileWriter`` writes it (same name, same
        first event, records framed by TensorBoard's own ``RecordWriter``), opened with
        ``open``: ``EventFileWriter`` opens it through ``tf.io.gfile``, which imports all
        of TensorFlow (seconds) wherever it is installed."""

        def __init__(self, logdir: str):
            os.makedirs(logdir, exist_ok=True)
            name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                    f"{os.getpid()}.{uuid.uuid4().hex[:8]}")
            self._records = RecordWriter(open(os.path.join(logdir, name), "wb"))
            self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

        def add_event(self, event) -> None:
            self._records.write(event.SerializeToString())

        def close(self) -> None:
            self._records.flush()
            self._records.close()

    return hp, EventFile, event_pb2, summary_pb2


def _seconds(stamp) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


RUN_NAME_LENGTH = 120
"""The longest run directory name (then cut, with a hash of the whole, ``file_stem``)."""


def run_name(cell, width: int = 1) -> str:
    """The run directory of a cell:
    ``<study slug>/cell-<id>-<model>-<dataset>-bs<b>-lr<lr>-s<seed>`` (names made
    file-safe, ids zero-padded to ``width`` digits so that runs sort as the grid; the
    hyper-parameters themselves are in the HParams data)."""
    label = (f"cell-{int(cell.cell_id):0{width}d}-{cell.model}-{cell.dataset}"
             f"-bs{int(cell.batch_size)}-lr{float(cell.learning_rate):g}-s{int(cell.seed)}")
    return f"{file_stem(cell.study)}/{file_stem(label, RUN_NAME_LENGTH)}"


def cell_hparams(cell) -> dict:
    return {
        "study": str(cell.study), "model": str(cell.model), "dataset": str(cell.dataset),
        "batch_size": int(cell.batch_size), "learning_rate": float(cell.learning_rate),
        "ratio": float(cell.ratio), "seed": int(cell.seed), "status": str(cell.status),
    }


def export_tensorboard(db, out, study: str | None = None, force: bool = False) -> dict:
    """Write one TensorBoard run per cell under ``out`` (see the module docstring);
    returns {"runs": cells written, "epochs": epoch rows written, "out": out}."""
    hp, EventFile, event_pb2, summary_pb2 = _tensorboard()
    cells, epochs, _ = _frames(db, study)

    def scalar(tag: str, value: float):
        return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag,
                                                                    simple_value=value)])

    hparams = [
        hp.HParam("study", hp.Discrete(sorted(set(cells["study"]))), description="study"),
        hp.HParam("model", hp.Discrete(sorted(set(cells["model"]))),
                  description="the network (registry name)"),
        hp.HParam("dataset", hp.Discrete(sorted(set(cells["dataset"]))),
                  description="the data set"),
        hp.HParam("batch_size", hp.Discrete(sorted({int(b) for b in cells["batch_size"]})),
                  description="SGD batch size (constant)"),
        hp.HParam("learning_rate",
                  hp.Discrete(sorted({float(v) for v in cells["learning_rate"]})),
                  description="SGD learning rate (constant)"),
        hp.HParam("ratio", hp.RealInterval(float(cells["ratio"].min()),
                                           float(cells["ratio"].max())),
                  description="batch size / learning rate (the paper's ratio)"),
        hp.HParam("seed", hp.Discrete(sorted({int(s) for s in cells["seed"]})),
                  description="initial weights and data order"),
        hp.HParam("status", hp.Discrete(sorted(set(cells["status"]))),
                  description="done, diverged, failed, running or pending"),
    ]
    width = len(str(int(cells["cell_id"].max())))
    metrics = [hp.Metric(f"metrics/{name}", display_name=name, description=text)
               for name, text in CELL_METRICS.items()]
    by_cell = {cell_id: rows for cell_id, rows in epochs.groupby("cell_id")}
    written = 0
    with staged_directory(out, "kerasgen export tensorboard", force, protected_paths(db),
                          error=ExportError) as stage:
        root = EventFile(str(stage))
        root.add_event(event_pb2.Event(wall_time=_now(), summary=hp.hparams_config_pb(
            hparams=hparams, metrics=metrics)))
        root.close()
        for cell in cells.itertuples(index=False):
            writer = EventFile(str(stage / run_name(cell, width)))
            start = _seconds(cell.started_at) or _now()
            writer.add_event(event_pb2.Event(wall_time=start, summary=hp.hparams_pb(
                cell_hparams(cell), trial_id=f"{cell.study}/cell-{int(cell.cell_id):0{width}d}",
                start_time_secs=start)))
            rows = by_cell.get(cell.cell_id)
            if rows is not None:
                for row in rows.itertuples(index=False):
                    wall = _seconds(row.recorded_at) or start
                    for name in EPOCH_SCALARS:
                        value = _finite(getattr(row, name))
                        if value is not None:
                            writer.add_event(event_pb2.Event(
                                wall_time=wall, step=int(row.epoch),
                                summary=scalar(f"epoch/{name}", value)))
                    written += 1
            step = int(cell.kept_epoch) if _finite(cell.kept_epoch) is not None else 0
            end = _seconds(cell.finished_at) or start
            for name in CELL_METRICS:
                value = _finite(getattr(cell, name))
                if value is not None:
                    writer.add_event(event_pb2.Event(wall_time=end, step=step,
                                                     summary=scalar(f"metrics/{name}", value)))
            writer.close()
    return {"runs": len(cells), "epochs": written, "out": Path(out)}


def _now() -> float:
    return datetime.now().timestamp()


__all__ = ["CELL_METRICS", "EPOCH_SCALARS", "ExportError", "TABLE_FORMATS", "cell_hparams",
           "export_tables", "export_tensorboard", "run_name", "staged_directory"]
