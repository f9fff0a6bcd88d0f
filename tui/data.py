"""The dashboard's data layer: what the screens show, read from a store. No Textual here.

``DashboardData(path, study=None).refresh(now)`` returns a :class:`Snapshot`, an
immutable picture of the store made of plain Python values, ready to render: the
screens never touch SQL, pandas or scipy, so the interface thread never waits on them.

Each refresh, inside one read transaction of a long-lived read-only connection:

- re-reads the cells table (small: one row per trained model) and the progress counts;
- reads only the epoch rows written since the last refresh (``rowid`` above a marker:
  rows are only ever inserted) and appends them to the per-cell curves kept in memory;
- computes the Spearman tables (Tables 1-3 with their bootstrap intervals and Holm /
  Benjamini-Hochberg survival, direction verdicts, premise check) of the grid and
  metric on screen (``wanted``), and again only when one of its cells finished; a
  paper-size grid costs ~0.35 s per metric (~0.55 s with two seeds), so nothing else
  is computed.

A missing file is "waiting" (a study about to start, as in ``kerasgen demo``); a store
that cannot be read (empty, foreign, corrupt, newer) gives its message. Either way the
next refresh tries again, so the dashboard recovers as soon as the store is usable. A
file replaced under the same name (a new inode) is read again from scratch.

Imports pandas (through ``kerasgen.store``): the dashboard imports this module from
its polling thread, never at start-up.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from kerasgen import analysis
from kerasgen.progress import estimate, format_duration, study_progress
from kerasgen.store import (
    Connection,
    ReadError,
    StoreError,
    connect_readonly,
    epoch_curve_rows,
    inspect_store,
    last_epoch_row,
    measure_signature,
    read_cell_rows,
    read_snapshot,
    study_overview,
)
from kerasgen.vocabulary import METRICS, display_name
from tui.measures_data import MeasuresReader, MeasuresView

ALPHA = 0.005  # the paper's significance level
TABLES = (1, 2, 3)

# Per-epoch columns kept for the curves, in this order.
CURVE_COLUMNS = ("epoch", "train_accuracy", "test_accuracy", "train_loss", "test_loss",
                 "train_eval_accuracy")

GroupKey = tuple[str, str, str]  # (study, model, dataset): one progress bar, one Spearman set
GridKey = tuple[str, str, str, int]  # (study, model, dataset, seed): one heatmap


# ---------------------------------------------------------------- the snapshot

@dataclass(frozen=True)
class CellView:
    """One cell as the heatmap and the detail panel show it: every number at the kept
    epoch (``test_accuracy``, the clean ``train_eval_accuracy``, ``gap``, ``loss_gap``),
    beside the highest test accuracy of any epoch and the last epoch's values."""

    cell_id: int
    batch_size: int
    learning_rate: float
    ratio: float
    status: str
    epochs_done: int
    kept_epoch: int | None
    test_accuracy: float | None
    train_eval_accuracy: float | None
    gap: float | None
    loss_gap: float | None
    best_test_accuracy: float | None
    final_test_accuracy: float | None
    final_train_accuracy: float | None  # Keras's running average over the last epoch
    diverged_epoch: int | None
    worker: str | None
    error: str | None

    def value(self, metric: str) -> float | None:
        return getattr(self, metric)


@dataclass(frozen=True)
class GridView:
    """The batch size x learning rate grid of one (study, model, dataset, seed)."""

    key: GridKey
    batch_sizes: tuple[int, ...]
    learning_rates: tuple[float, ...]
    cells: Mapping[tuple[int, float], CellView]
    epochs: int  # the study's epoch cap (0 when the spec names none)
    several_seeds: bool
    best_metric: str | None = "test_accuracy"  # the study's rule for the kept epoch

    @property
    def group(self) -> GroupKey:
        return self.key[:3]

    def cell_at(self, row: int, col: int) -> CellView | None:
        if 0 <= row < len(self.batch_sizes) and 0 <= col < len(self.learning_rates):
            return self.cells.get((self.batch_sizes[row], self.learning_rates[col]))
        return None


@dataclass(frozen=True)
class Curve:
    """Per-epoch values of one cell (numpy arrays of equal length, by epoch)."""

    epoch: np.ndarray
    train_accuracy: np.ndarray  # Keras's running average over the epoch
    test_accuracy: np.ndarray
    train_loss: np.ndarray
    test_loss: np.ndarray
    train_eval_accuracy: np.ndarray  # clean: a fixed training subset, measured as the test

    def __len__(self) -> int:
        return len(self.epoch)


@dataclass(frozen=True)
class RunningCell:
    study: str
    model: str
    dataset: str
    batch_size: int
    learning_rate: float
    epochs_done: int


@dataclass(frozen=True)
class ProgressView:
    """One (study, model, dataset): its progress bar and counts."""

    key: GroupKey
    cells: int
    counts: Mapping[str, int]  # pending, running, done, diverged, failed
    fraction: float  # cells that train no more / cells
    epochs_done: int
    epochs_total: int  # an estimate under a stop rule (kerasgen.progress)
    epochs_per_second: float
    eta: str  # "1h05m", "done" when finished, "?" when nothing runs
    estimated: bool = False  # epochs_total is an estimate (a stop rule)


@dataclass(frozen=True)
class StudyView:
    name: str
    epochs: int
    cells: int
    created_at: str
    stop: str = "epochs"  # the stop rule: "epochs", or "train_loss < 0.05"
    # kerasgen.progress.estimate over the study's groups: the same numbers as the CLI's
    finished: int = 0
    epochs_text: str = ""  # "412/≈960 epochs"
    eta: str = "?"


@dataclass(frozen=True)
class SpearmanRow:
    """One Spearman test of Tables 1-3, formatted."""

    table: int
    group_value: float | int | None  # the fixed learning rate (1) / batch size (2)
    scc: float | None
    p_text: str
    n: int  # finished cells behind the coefficient
    n_total: int  # cells of the group, whatever their status
    n_diverged: int
    significant: bool
    agrees: bool | None  # coefficient has the paper's sign (None: no coefficient)
    reason: str | None
    ci: tuple[float, float] | None = None  # jackknife interval over seeds (3+ seeds)
    ci_reason: str | None = None  # why there is none
    seed_range: tuple[float, float] | None = None  # the seeds' own coefficients (2+)
    cannot_reach: bool = False  # the permutation test cannot give p < alpha here
    holm: bool = False  # p still below alpha after Holm over its family
    bh: bool = False  # ... after Benjamini-Hochberg over its family


@dataclass(frozen=True)
class DirectionView:
    table: int
    variable: str
    verdict: str
    holds: bool
    tested: int
    groups: int
    significant_expected: int
    significant_against: int
    summary: str


@dataclass(frozen=True)
class SpearmanView:
    """Tables 1-3, the direction verdicts and the premise warnings of one group/metric."""

    key: GroupKey
    metric: str
    alpha: float
    rows: tuple[SpearmanRow, ...]
    directions: tuple[DirectionView, ...]
    premise_warnings: tuple[str, ...]
    finished: int
    total: int
    small_n: tuple[int, ...] = ()  # n of tested rows below small_reliable_n
    small_reliable_n: int = 10  # kerasgen.analysis.SMALL_N
    error: str | None = None  # the analysis failed on this grid (the rest is empty)
    seeds: int = 1  # most seeds behind a coefficient (3+: intervals; 2: their range)
    confidence: float = 0.95  # the intervals' level
    min_cells: int = 8  # fewest cells of an interval


@dataclass(frozen=True)
class Snapshot:
    """Everything the dashboard shows, as of one refresh."""

    state: str  # "ok", "waiting" (no store or study yet), "error" (unusable store)
    message: str
    path: str
    taken_at: datetime
    generation: int = 0
    studies: tuple[StudyView, ...] = ()
    progress: tuple[ProgressView, ...] = ()
    running: Mapping[str, tuple[RunningCell, ...]] = field(default_factory=dict)
    # Workers that hold running cells without a heartbeat (or whose process is gone).
    lost: Mapping[str, tuple[RunningCell, ...]] = field(default_factory=dict)
    grids: tuple[GridView, ...] = ()
    curves: Mapping[int, Curve] = field(default_factory=dict)
    spearman: Mapping[tuple[str, str, str, str], SpearmanView] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)  # resnet110 -> ResNet-110
    seconds: float = 0.0  # how long the refresh took
    # group -> the ranking of its generalization measures (tui.measures_data), for the
    # group the Measures screen shows
    measures: Mapping[GroupKey, MeasuresView] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def workers(self) -> tuple[str, ...]:
        return tuple(sorted(self.running))

    def grid(self, key: GridKey | None) -> GridView | None:
        for grid in self.grids:
            if grid.key == key:
                return grid
        return None

    def spearman_for(self, group: GroupKey, metric: str) -> SpearmanView | None:
        return self.spearman.get((*group, metric))

    def seed_cells(self, group: GroupKey, batch_size: int, learning_rate: float
                   ) -> tuple[tuple[int, CellView | None], ...]:
        """The cell at (batch size, learning rate) in each seed's grid of ``group``:
        (seed, its view or None), by seed."""
        return tuple((grid.key[3], grid.cells.get((batch_size, learning_rate)))
                     for grid in sorted((g for g in self.grids if g.group == group),
                                        key=lambda g: g.key[3]))


# ---------------------------------------------------------------- plain reads

def read_epoch_rows(conn: Connection, after: int, upto: int,
                    study: str | None = None) -> np.ndarray:
    """Epoch rows with ``after < rowid <= upto`` as a float array, columns
    (cell_id, epoch, train_accuracy, test_accuracy, train_loss, test_loss,
    train_eval_accuracy); NULL -> NaN (``kerasgen.store.epoch_curve_rows``)."""
    rows = epoch_curve_rows(conn, after, upto, study)
    if not rows:
        return np.empty((0, 7))
    return np.array(rows, dtype=float)


def merge_curves(curves: dict[int, Curve], rows: np.ndarray) -> set[int]:
    """Append epoch rows (from :func:`read_epoch_rows`) to the per-cell curves, in
    place; returns the cells that changed. A cell's arrays are replaced, never mutated,
    so a snapshot that holds the old ones is unaffected."""
    if not len(rows):
        return set()
    order = np.lexsort((rows[:, 1], rows[:, 0]))
    rows = rows[order]
    ids, starts = np.unique(rows[:, 0], return_index=True)
    touched = set()
    for cell_id, part in zip(ids.astype(int).tolist(), np.split(rows, starts[1:])):
        columns = part[:, 1:].T  # epoch, train_acc, test_acc, train_loss, test_loss, clean
        old = curves.get(cell_id)
        if old is not None:
            merged = np.concatenate([np.vstack([old.epoch, old.train_accuracy,
                                                old.test_accuracy, old.train_loss,
                                                old.test_loss, old.train_eval_accuracy]),
                                     columns], axis=1)
            if np.any(np.diff(merged[0]) < 0):
                merged = merged[:, np.argsort(merged[0], kind="stable")]
            columns = merged
        curves[cell_id] = Curve(*(np.ascontiguousarray(c) for c in columns))
        touched.add(cell_id)
    return touched


def _num(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _int(value) -> int | None:
    value = _num(value)
    return None if value is None else int(value)


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


CELL_COLUMNS = ("study", "cell_id", "model", "dataset", "seed", "batch_size",
                "learning_rate", "ratio", "status", "epochs_done", "kept_epoch",
                "best_metric", "test_accuracy", "test_loss", "train_eval_accuracy",
                "train_eval_loss", "gap", "loss_gap", "best_test_accuracy",
                "final_test_accuracy", "final_train_accuracy", "final_train_loss",
                "last_batch", "diverged_epoch", "worker", "error")
"""What the dashboard reads of each cell (from the store's one cell-summary query)."""
_AT = {name: i for i, name in enumerate(CELL_COLUMNS)}
# Coordinates, then what a finished cell's Spearman tables depend on.
_COORDINATES = tuple(_AT[c] for c in ("study", "cell_id", "model", "dataset", "seed",
                                      "batch_size", "learning_rate"))
_OUTCOME = tuple(_AT[c] for c in ("status", "best_metric", "test_accuracy", "test_loss",
                                  "train_eval_accuracy", "train_eval_loss", "gap",
                                  "loss_gap", "best_test_accuracy", "final_test_accuracy",
                                  "final_train_accuracy", "final_train_loss", "last_batch"))
_NUMERIC = ("kept_epoch", "test_accuracy", "test_loss", "train_eval_accuracy",
            "train_eval_loss", "gap", "loss_gap", "best_test_accuracy",
            "final_test_accuracy", "final_train_accuracy", "final_train_loss",
            "diverged_epoch")


def read_cells(conn: Connection, study: str | None = None) -> list[tuple]:
    """The cells as tuples (columns :data:`CELL_COLUMNS`), ordered by study, model,
    dataset, seed: ``kerasgen.store.read_cell_rows`` (the query behind
    ``load_results``) without a DataFrame, since this runs on every refresh."""
    columns, rows = read_cell_rows(conn, study, order="grid")
    index = [columns.index(c) for c in CELL_COLUMNS]
    return [tuple(row[i] for i in index) for row in rows]


def cells_frame(rows: list[tuple]) -> pd.DataFrame:
    """Rows of :func:`read_cells` as the frame ``kerasgen.analysis`` expects."""
    frame = pd.DataFrame(rows, columns=list(CELL_COLUMNS))
    for col in ("study", "model", "dataset", "status", "best_metric", "last_batch"):
        frame[col] = frame[col].astype(object)
    for col in _NUMERIC:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    return frame


def _cell_view(row: tuple) -> CellView:
    get = dict(zip(CELL_COLUMNS, row)).get
    return CellView(
        int(get("cell_id")), int(get("batch_size")), analysis.round_sig(get("learning_rate")),
        float(get("ratio")), str(get("status")), int(get("epochs_done") or 0),
        _int(get("kept_epoch")), _num(get("test_accuracy")), _num(get("train_eval_accuracy")),
        _num(get("gap")), _num(get("loss_gap")), _num(get("best_test_accuracy")),
        _num(get("final_test_accuracy")), _num(get("final_train_accuracy")),
        _int(get("diverged_epoch")), _text(get("worker")), _text(get("error")))


def split_rows(rows: list[tuple], index: tuple[int, ...]) -> dict[tuple, list[tuple]]:
    """Rows grouped by the columns at ``index`` (rows come sorted by them)."""
    out: dict[tuple, list[tuple]] = {}
    for row in rows:
        out.setdefault(tuple(row[i] for i in index), []).append(row)
    return out


_GRID_INDEX = (0, 2, 3, 4)  # study, model, dataset, seed
_GROUP_INDEX = (0, 2, 3)  # study, model, dataset


def build_grids(rows: list[tuple], epochs_by_study: Mapping[str, int],
                previous: Mapping[GridKey, tuple[list[tuple], GridView]] | None = None,
                ) -> dict[GridKey, tuple[list[tuple], GridView]]:
    """One :class:`GridView` per (study, model, dataset, seed), keyed and with the rows
    it was built from; a grid whose rows did not change is the previous object (so the
    interface can skip redrawing it)."""
    previous = previous or {}
    seeds: dict[GroupKey, set] = {}
    for study, model, dataset, seed in split_rows(rows, _GRID_INDEX):
        seeds.setdefault((study, model, dataset), set()).add(seed)
    out = {}
    for raw_key, part in split_rows(rows, _GRID_INDEX).items():
        key = (str(raw_key[0]), str(raw_key[1]), str(raw_key[2]), int(raw_key[3]))
        several = len(seeds[key[:3]]) > 1
        old = previous.get(key)
        epochs = int(epochs_by_study.get(key[0], 0) or 0)
        if old is not None and old[0] == part and old[1].epochs == epochs \
                and old[1].several_seeds == several:
            out[key] = old
            continue
        mapping = {}
        for row in part:
            cell = _cell_view(row)
            mapping[(cell.batch_size, cell.learning_rate)] = cell
        out[key] = (part, GridView(
            key=key,
            batch_sizes=tuple(sorted({bs for bs, _ in mapping})),
            learning_rates=tuple(sorted({lr for _, lr in mapping})),
            cells=mapping, epochs=epochs, several_seeds=several,
            best_metric=_text(part[0][_AT["best_metric"]])))
    return out


def build_spearman(cells: pd.DataFrame, metric: str, alpha: float = ALPHA,
                   premise: tuple[str, ...] | None = None) -> SpearmanView:
    """Tables 1-3, direction verdicts and premise warnings of one (study, model, dataset)
    (``cells``: its rows, as from :func:`cells_frame` or ``load_results``) for one
    metric. ``premise`` reuses warnings already computed (they do not depend on the
    metric)."""
    study, model, dataset = (str(cells[c].iloc[0]) for c in ("study", "model", "dataset"))
    frame = analysis.add_derived_metrics(cells)
    tests = analysis.spearman_tests(frame, metric=metric, alpha=alpha)
    directions = analysis.direction_summary(tests)
    if premise is None:
        premise = premise_warnings(frame, alpha)
    rows = []
    for t in tests.itertuples(index=False):
        scc = _num(t.scc)
        sign = analysis.expected_sign(metric, t.variable)
        rows.append(SpearmanRow(
            table=int(t.table),
            group_value=t.group_value,
            scc=scc,
            p_text=analysis.format_p(t.p_perm) if t.reason is None else "n/a",
            n=int(t.n), n_total=int(t.n_total), n_diverged=int(t.n_diverged),
            significant=bool(t.significant),
            agrees=None if scc is None else bool(np.sign(scc) == sign),
            reason=t.reason if isinstance(t.reason, str) else None,
            ci=_interval(t.ci_low, t.ci_high), ci_reason=_text(t.ci_reason),
            seed_range=(_interval(t.seed_scc_min, t.seed_scc_max)
                        if int(t.seeds_tested or 0) >= 2 else None),
            cannot_reach=t.can_reach is False,
            holm=_below(t.p_holm, alpha), bh=_below(t.p_bh, alpha),
        ))
    views = tuple(DirectionView(
        table=int(d.table), variable=str(d.variable), verdict=str(d.verdict),
        holds=bool(d.holds), tested=int(d.tested), groups=int(d.groups),
        significant_expected=int(d.significant_expected),
        significant_against=int(d.significant_against), summary=str(d.summary))
        for d in directions.itertuples(index=False))
    finished = int(cells["status"].isin(analysis.FINISHED_STATUSES).sum())
    # Only asymptotic p-values of small groups deserve the caution ("auto" gives them
    # exact p-values).
    small = tuple(sorted({int(t.n) for t in tests.itertuples(index=False)
                          if t.reason is None and t.pvalue_method == "asymptotic"
                          and t.n < analysis.SMALL_N}))
    seeds = int(pd.to_numeric(tests["n_seeds"], errors="coerce").max()) if len(tests) else 1
    return SpearmanView((study, model, dataset), metric, alpha, tuple(rows), views,
                        tuple(premise), finished, int(len(cells)), small, analysis.SMALL_N,
                        seeds=max(seeds, 1), confidence=float(tests["confidence"].iloc[0])
                        if len(tests) else 0.95, min_cells=analysis.MIN_INTERVAL_CELLS)


def _interval(low, high) -> tuple[float, float] | None:
    low, high = _num(low), _num(high)
    return None if low is None or high is None else (low, high)


def _below(p, alpha: float) -> bool:
    p = _num(p)
    return p is not None and p < alpha


def premise_warnings(frame: pd.DataFrame, alpha: float = ALPHA) -> tuple[str, ...]:
    """``kerasgen.analysis.premise_check``'s warnings for one (study, model, dataset)."""
    del alpha  # the premise tests at its own level (analysis.PREMISE_ALPHA)
    premise = analysis.premise_check(frame)  # against the paper's metric
    return tuple(premise["warnings"].iloc[0]) if len(premise) else ()


def finished_signature(rows: list[tuple]) -> tuple:
    """What the Spearman tables of a group depend on: its cells' coordinates (all of
    them define the groups) and the outcomes of the finished ones."""
    return tuple(tuple(row[i] for i in _COORDINATES)
                 + (tuple(row[i] for i in _OUTCOME)
                    if row[_AT["status"]] in analysis.FINISHED_STATUSES else ())
                 for row in rows)


def _progress_views(conn, now: datetime, study: str | None):
    groups = study_progress(conn, now=now)
    if study is not None:
        groups = [g for g in groups if g.study == study]
    views = tuple(ProgressView(
        key=(g.study, g.model, g.dataset), cells=g.cells, counts=dict(g.counts),
        fraction=min(max(g.fraction, 0.0), 1.0), epochs_done=g.epochs_done,
        epochs_total=g.epochs_total, epochs_per_second=g.epochs_per_second,
        eta="done" if g.eta_seconds == 0 else format_duration(g.eta_seconds),
        estimated=g.estimated) for g in groups)
    estimates = {name: estimate([g for g in groups if g.study == name])
                 for name in {g.study for g in groups}}

    def by_worker(kind: str) -> dict[str, tuple[RunningCell, ...]]:
        out: dict[str, list[RunningCell]] = {}
        for g in groups:
            for worker, _cell_id, bs, lr, done in getattr(g, kind):
                out.setdefault(worker or "?", []).append(
                    RunningCell(g.study, g.model, g.dataset, int(bs), float(lr), int(done or 0)))
        return {w: tuple(sorted(cs, key=lambda c: (c.batch_size, c.learning_rate)))
                for w, cs in sorted(out.items())}

    return views, by_worker("running"), by_worker("lost"), estimates


def _stop_text(spec: dict) -> str:
    stop = spec.get("stop") if isinstance(spec, dict) else None
    if not isinstance(stop, dict) or (stop.get("rule") or "epochs") == "epochs":
        return "epochs"
    rule, threshold = str(stop.get("rule")), stop.get("threshold")
    return f"{rule.replace('_', ' ')} < {threshold:g}" if isinstance(
        threshold, (int, float)) else rule


def _studies(conn, study: str | None, estimates=None) -> tuple[StudyView, ...]:
    out = []
    estimates = estimates or {}
    for name, spec_json, created_at, count in study_overview(conn):
        if study is not None and name != study:
            continue
        try:
            spec = json.loads(spec_json)
            epochs = int(spec.get("epochs") or 0)
        except (ValueError, TypeError, AttributeError):
            spec, epochs = {}, 0
        e = estimates.get(name)
        extra = {} if e is None else {
            "finished": e.finished, "epochs_text": e.epochs_text(),
            "eta": "done" if e.eta_seconds == 0 else format_duration(e.eta_seconds)}
        out.append(StudyView(name, epochs, int(count), str(created_at or ""),
                             stop=_stop_text(spec), **extra))
    return tuple(out)


# ---------------------------------------------------------------- the reader

class DashboardData:
    """Reads a store for the dashboard, incrementally. One refresh at a time (the
    dashboard polls from one worker thread).

    ``wanted`` names the Spearman tables to keep up to date, as (study, model, dataset,
    metric) keys: those of the grid on screen (they cost ~0.35 s per grid and
    metric on a paper-size grid, so they are computed only when shown and only again
    when one of the grid's cells finished). The others in the snapshot are the last
    ones computed that are still current.
    """

    def __init__(self, path: str | os.PathLike, study: str | None = None,
                 alpha: float = ALPHA):
        self.path = Path(path)
        self.study = study
        self.alpha = alpha
        self.wanted: set[tuple[str, str, str, str]] = set()
        self.wanted_measures: GroupKey | None = None  # the Measures screen's grid
        self._measures = MeasuresReader()
        self.generation = 0
        self._conn: Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._reset()

    def _reset(self) -> None:
        self.marker = 0
        self.curves: dict[int, Curve] = {}
        self._grids: dict[GridKey, tuple[list[tuple], GridView]] = {}
        # (study, model, dataset, metric) -> (signature, view); group -> (signature, warnings)
        self._spearman: dict[tuple[str, str, str, str], tuple[tuple, SpearmanView]] = {}
        self._premise: dict[GroupKey, tuple[tuple, tuple[str, ...]]] = {}
        if hasattr(self, "_measures"):
            self._measures.reset()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
                self._identity = None

    # -- one refresh
    def refresh(self, now: datetime | None = None) -> Snapshot:
        """Read what changed since the last refresh; never raises for a store problem
        (the snapshot's ``state`` and ``message`` say what is wrong)."""
        now = now or datetime.now(timezone.utc)
        started = time.perf_counter()
        self.generation += 1
        try:
            snapshot = self._refresh(now)
        except (StoreError, ReadError) as exc:
            self.close()
            self._reset()
            snapshot = self._problem("error", _store_message(self.path, exc), now)
        return replace(snapshot, seconds=time.perf_counter() - started)

    def _problem(self, state: str, message: str, now: datetime) -> Snapshot:
        return Snapshot(state=state, message=message, path=str(self.path), taken_at=now,
                        generation=self.generation)

    def _connect(self) -> str | None:
        """Open (or keep) the connection; a reason to wait instead, or None."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            self.close()
            self._reset()
            return "missing"
        identity = (stat.st_dev, stat.st_ino)
        if self._conn is not None and identity != self._identity:
            # Replaced under the same name (a new study run into a fresh file).
            self.close()
            self._reset()
        if self._conn is None:
            info = inspect_store(self.path)  # raises for foreign/corrupt/newer files
            if info["empty"]:
                return "empty"
            self._conn = connect_readonly(self.path)
            self._identity = identity
        return None

    def _refresh(self, now: datetime) -> Snapshot:
        wait = self._connect()
        if wait == "missing":
            return self._problem("waiting", f"Waiting for the study… {self.path} does not "
                                 "exist yet (it appears when a study starts).", now)
        if wait == "empty":
            return self._problem("waiting", f"Waiting for the study… {self.path} is empty: "
                                 "no study has been run into it yet.", now)
        conn = self._conn
        assert conn is not None
        with read_snapshot(conn):  # one state of the store for all the reads below
            progress, running, lost, estimates = _progress_views(conn, now, self.study)
            studies = _studies(conn, self.study, estimates)
            rows = read_cells(conn, self.study)
            upto = last_epoch_row(conn)
            if upto < self.marker:  # rows vanished: not the same store any more
                self._reset()
            epoch_rows = read_epoch_rows(conn, self.marker, upto, self.study)
            measured = measure_signature(conn)
        merge_curves(self.curves, epoch_rows)
        self.marker = max(self.marker, int(upto))
        if not studies or not rows:
            what = f"the study {self.study!r}" if self.study else "a study"
            return self._problem("waiting", f"Waiting for the study… {self.path} holds no "
                                 f"cells of {what} yet.", now)
        self._grids = build_grids(rows, {s.name: s.epochs for s in studies}, self._grids)
        spearman = self._update_spearman(rows)
        measures = self._measures.update(conn, self.wanted_measures,
                                         (measured, finished_signature(rows)))
        return Snapshot(state="ok", message="", path=str(self.path), taken_at=now,
                        generation=self.generation, studies=studies, progress=progress,
                        running=running, lost=lost, grids=tuple(g for _, g in self._grids.values()),
                        curves=dict(self.curves), spearman=spearman, measures=measures,
                        labels={name: display_name(name) for name in
                                {r[2] for r in rows} | {r[3] for r in rows}})

    def _update_spearman(self, rows: list[tuple]) -> dict:
        """Recompute the wanted Spearman views whose grid changed; return the current
        ones (stale views of grids not on screen are left out)."""
        current = {}
        for raw_key, part in split_rows(rows, _GROUP_INDEX).items():
            group = (str(raw_key[0]), str(raw_key[1]), str(raw_key[2]))
            signature = finished_signature(part)
            frame = None
            for metric in METRICS:
                key = (*group, metric)
                cached = self._spearman.get(key)
                if cached is not None and cached[0] == signature:
                    current[key] = cached[1]
                    continue
                if key not in self.wanted:
                    continue
                try:
                    if frame is None:
                        frame = cells_frame(part)
                    premise = self._premise.get(group)
                    if premise is None or premise[0] != signature:
                        premise = (signature, premise_warnings(frame, self.alpha))
                        self._premise[group] = premise
                    view = build_spearman(frame, metric, self.alpha, premise=premise[1])
                except Exception as exc:  # noqa: BLE001 - shown on screen, not fatal
                    view = SpearmanView(group, metric, self.alpha, (), (), (), 0, len(part),
                                        error=f"{type(exc).__name__}: {exc}")
                self._spearman[key] = (signature, view)
                current[key] = view
        return current


def _store_message(path: Path, exc: Exception) -> str:
    if isinstance(exc, StoreError):
        return str(exc)
    return f"{path} cannot be read right now ({exc})."
