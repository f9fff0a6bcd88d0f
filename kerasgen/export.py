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
from kerasgen.store import StoreError, load_epochs, load_results, load_studies

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
    try:
        cells = load_results(db, study=study)
    except StoreError as exc:  # a study the store does not hold: its message names them
        raise ExportError(str(exc)) from None
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

INTEGER_COLUMNS = ("cell_id", "study_id", "batch_size", "seed", "epoch", "kept_epoch",
                   "best_epoch", "diverged_epoch", "epochs_done", "attempts", "failures",
                   "pack_cells", "continue_from")
"""Columns that hold whole numbers: written as (nullable) integers, never ``3.0``."""


def typed(frame: pd.DataFrame, timestamps: bool) -> pd.DataFrame:
    """``frame`` with its integer columns as nullable integers and, with ``timestamps``,
    its ``*_at`` columns (ISO 8601 text in the store) as UTC timestamps."""
    frame = frame.copy()
    for col in frame.columns:
        if col in INTEGER_COLUMNS:
            values = pd.to_numeric(frame[col], errors="coerce")
            if values.dropna().eq(values.dropna().round()).all():
                frame[col] = values.astype("Int64")
        elif timestamps and col.endswith("_at"):
            frame[col] = pd.to_datetime(frame[col], utc=True, errors="coerce",
                                        format="ISO8601")
    return frame

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
            frame = typed(frame, timestamps=fmt == "parquet")
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

TRIAL_KEYS = ("study", "model", "dataset", "batch_size", "learning_rate")
"""A trial of the HParams view: one cell of the grid, its seeds being its runs."""


def run_name(cell, width: int = 1) -> str:
    """The run directory of a seed of a cell:
    ``<study slug>/<model>-<dataset>-bs<b>-lr<lr>/seed-<seed>`` (names made file-safe;
    the trial, :func:`trial_name`, is the directory above)."""
    return f"{trial_name(cell)}/seed-{int(cell.seed)}"


def trial_name(cell) -> str:
    """The run that holds a cell's trial (its hyper-parameters and the metrics' means
    over seeds): ``<study slug>/<model>-<dataset>-bs<b>-lr<lr>``."""
    label = (f"{cell.model}-{cell.dataset}-bs{int(cell.batch_size)}"
             f"-lr{float(cell.learning_rate):g}")
    return f"{file_stem(cell.study)}/{file_stem(label, RUN_NAME_LENGTH)}"


def _whole(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and float(value).is_integer()


def _hparam_value(value):
    """A value TensorBoard's HParams table shows as it is: TensorBoard prints every
    number with five significant digits ("16.000"), so whole numbers go as text ("16");
    booleans stay booleans, other numbers numbers, the rest text."""
    if isinstance(value, bool) or value is None:
        return bool(value) if value is not None else "none"
    if _whole(value):
        return str(int(value))
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


def study_settings(spec: dict) -> dict:
    """What a study's specification fixes for every cell: the epoch cap, the stop rule
    and every training setting (``training.*``), by their spec names."""
    out = {"epochs": spec.get("epochs")}
    stop = spec.get("stop") if isinstance(spec.get("stop"), dict) else {}
    out["stop.rule"] = stop.get("rule") or "epochs"
    out["stop.threshold"] = stop.get("threshold")
    from dataclasses import asdict

    from kerasgen.spec import Training

    training = {**asdict(Training()), **(spec.get("training") or {})}
    for key, value in sorted(training.items()):
        out[f"training.{key}"] = value
    return out


def cell_hparams(cell, settings: dict | None = None, seeds=(), statuses=()) -> dict:
    """The hyper-parameters of a trial: its coordinates, its study's settings, the
    extra hyper-parameters a user's SQLiteLogger recorded (``hparams_json``), the seeds
    behind its means and their statuses."""
    import json

    out = {"study": str(cell.study), "model": str(cell.model), "dataset": str(cell.dataset),
           "batch_size": int(cell.batch_size), "learning_rate": float(cell.learning_rate),
           "ratio": float(cell.ratio)}
    out.update(settings or {})
    extra = getattr(cell, "hparams", None)
    if isinstance(extra, str) and extra:
        try:
            for key, value in json.loads(extra).items():
                out.setdefault(str(key), value)
        except (ValueError, AttributeError):
            pass
    if seeds:
        out["seeds"] = len(seeds)
        out["status"] = "+".join(sorted(set(statuses)))
    return {k: _hparam_value(v) for k, v in out.items()}


def _metrics_for(cells: pd.DataFrame) -> dict[str, str]:
    """The HParams metrics: CELL_METRICS, less ``best_test_accuracy`` when it is the
    kept epoch's ``test_accuracy`` in every cell (the default rule: one column, not two
    identical ones)."""
    metrics = dict(CELL_METRICS)
    same = cells["best_test_accuracy"].fillna(-1).eq(cells["test_accuracy"].fillna(-1)).all()
    if same:
        del metrics["best_test_accuracy"]
    return metrics


def _hparam_infos(hp, trials: list[dict]):
    """One HParam per name: numbers as a numeric domain, the rest as their values (text
    integers listed in numeric order)."""
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import api_pb2

    names = sorted({k for t in trials for k in t}, key=lambda k: (
        k not in ("study", "model", "dataset", "batch_size", "learning_rate", "ratio"), k))
    infos = []
    for name in names:
        values = [t[name] for t in trials if name in t]
        if all(isinstance(v, float) for v in values):
            infos.append(api_pb2.HParamInfo(
                name=name, type=api_pb2.DATA_TYPE_FLOAT64,
                domain_interval=api_pb2.Interval(min_value=min(values), max_value=max(values))))
            continue
        if all(isinstance(v, bool) for v in values):
            kind, make = api_pb2.DATA_TYPE_BOOL, lambda v: struct_pb2.Value(bool_value=v)
        else:
            kind, make = api_pb2.DATA_TYPE_STRING, lambda v: struct_pb2.Value(string_value=str(v))
        unique = sorted({str(v) if kind == api_pb2.DATA_TYPE_STRING else v for v in values},
                        key=lambda v: (0, float(v), "") if _numeric_text(v) else (1, 0.0, str(v)))
        domain = struct_pb2.ListValue(values=[make(v) for v in unique])
        infos.append(api_pb2.HParamInfo(name=name, type=kind, domain_discrete=domain))
    return infos


def _numeric_text(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def export_tensorboard(db, out, study: str | None = None, force: bool = False) -> dict:
    """Write one HParams trial per cell of the grid (study, model, data set, batch size,
    learning rate) under ``out``: the trial's run holds its hyper-parameters and the mean
    over seeds of each metric; each seed is a run below it (``seed-<s>``) with its
    per-epoch scalars and its own metrics. Returns {"trials", "runs" (seeds), "epochs"
    (epoch rows written), "out"}."""
    import json

    hp, EventFile, event_pb2, summary_pb2 = _tensorboard()
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.hparams.summary_v2 import _summary_pb

    cells, epochs, studies = _frames(db, study)

    def scalar(tag: str, value: float):
        return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag,
                                                                    simple_value=value)])

    settings = {}
    for row in studies.itertuples(index=False):
        try:
            settings[row.name] = study_settings(json.loads(row.spec_json))
        except (ValueError, TypeError, AttributeError):
            settings[row.name] = {}
    metrics = _metrics_for(cells)
    keys = list(TRIAL_KEYS) + ["hparams"]
    grouped = cells.assign(hparams=cells["hparams"].fillna("")).groupby(
        keys, sort=True, dropna=False)
    trials = []
    for _, part in grouped:
        first = next(part.itertuples(index=False))
        trials.append((part, cell_hparams(first, settings.get(first.study), tuple(part["seed"]),
                                          tuple(part["status"]))))
    by_cell = {cell_id: rows for cell_id, rows in epochs.groupby("cell_id")}
    written = 0
    with staged_directory(out, "kerasgen export tensorboard", force, protected_paths(db),
                          error=ExportError) as stage:
        config = None
        if trials:
            # The HParams experiment as hp.hparams_config_pb writes it, built from
            # HParamInfo protos: integers as text in numeric order need their own domain.
            config = _summary_pb(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(
                experiment=api_pb2.Experiment(
                    hparam_infos=_hparam_infos(hp, [t for _, t in trials]),
                    metric_infos=[api_pb2.MetricInfo(
                        name=api_pb2.MetricName(tag=f"metrics/{name}"), display_name=name,
                        description=f"{text}; the mean over seeds")
                        for name, text in metrics.items()], time_created_secs=_now())))
        for part, values in trials:
            first = next(part.itertuples(index=False))
            start = min((_seconds(c) for c in part["started_at"] if _seconds(c)),
                        default=None) or _now()
            end = max((_seconds(c) for c in part["finished_at"] if _seconds(c)),
                      default=None) or start
            trial = EventFile(str(stage / trial_name(first)))
            if config is not None:  # the experiment, in the first trial: no run "."
                trial.add_event(event_pb2.Event(wall_time=start, summary=config))
                config = None
            trial.add_event(event_pb2.Event(wall_time=start, summary=hp.hparams_pb(
                values, trial_id=trial_name(first), start_time_secs=start)))
            for name in metrics:
                seen = [v for v in (_finite(x) for x in part[name]) if v is not None]
                if seen:
                    trial.add_event(event_pb2.Event(wall_time=end, step=0, summary=scalar(
                        f"metrics/{name}", sum(seen) / len(seen))))
            trial.close()
            for cell in part.itertuples(index=False):
                writer = EventFile(str(stage / run_name(cell)))
                begun = _seconds(cell.started_at) or start
                rows = by_cell.get(cell.cell_id)
                if rows is not None:
                    for row in rows.itertuples(index=False):
                        wall = _seconds(row.recorded_at) or begun
                        for name in EPOCH_SCALARS:
                            value = _finite(getattr(row, name))
                            if value is not None:
                                writer.add_event(event_pb2.Event(
                                    wall_time=wall, step=int(row.epoch),
                                    summary=scalar(f"epoch/{name}", value)))
                        written += 1
                step = int(cell.kept_epoch) if _finite(cell.kept_epoch) is not None else 0
                finished = _seconds(cell.finished_at) or begun
                for name in metrics:
                    value = _finite(getattr(cell, name))
                    if value is not None:
                        writer.add_event(event_pb2.Event(
                            wall_time=finished, step=step,
                            summary=scalar(f"metrics/{name}", value)))
                writer.close()
    return {"trials": len(trials), "runs": len(cells), "epochs": written, "out": Path(out)}


def _now() -> float:
    return datetime.now().timestamp()


__all__ = ["CELL_METRICS", "EPOCH_SCALARS", "ExportError", "TABLE_FORMATS", "TRIAL_KEYS",
           "cell_hparams", "export_tables", "export_tensorboard", "run_name", "staged_directory",
           "study_settings", "trial_name", "typed"]
