"""Spearman analyses of a batch-size x learning-rate grid (He, Liu & Tao 2019, Section 4).

Pure functions over the frame returned by :func:`kerasgen.store.load_results` (one
row per run: a cell, i.e. a (model, dataset, batch size, learning rate), trained with
one seed).  Nothing here imports TensorFlow, Keras or matplotlib, and scipy is
imported lazily, so importing this module is cheap (the dashboard uses it live).

Public API (stable)
-------------------
- ``METRICS``, ``PAPER_METRIC``, ``PVALUE_METHODS``, ``TEST_COLUMNS``,
  ``DIRECTION_COLUMNS``, ``PREMISE_COLUMNS``, ``SEED_SUMMARY_COLUMNS``,
  ``NOISE_COLUMNS``, ``MULTIPLE_TESTING_COLUMNS``, ``MIN_BOOTSTRAP_CELLS``
                                                        constants (metric names and
  labels come from :mod:`kerasgen.vocabulary`)
- ``normalize(frame) -> DataFrame``                     canonical copy (rounded LR/ratio)
- ``add_derived_metrics(frame) -> DataFrame``           ``test_accuracy``, ``gap`` and
  ``loss_gap`` at the kept epoch (clean training metrics; never the running ones)
- ``best_metric_of(frame) -> str | None``               the studies' kept-epoch rule
- ``finished_cells(frame, metric, include_diverged=True) -> DataFrame``
- ``spearman(x, y, pvalue="asymptotic", ...) -> SpearmanResult``  one coefficient
- ``exact_spearman_pvalue(x, y) -> float``              full enumeration (small n)
- ``format_p(p) -> str``                                 ``2.6e-11`` as in the paper
- ``expected_sign(metric, variable) -> int``            the paper's predicted sign
- ``expected_test_count(frame) -> int``                 tests the grid's shape implies
- ``spearman_tests(frame, metric=..., alpha=..., pvalue=..., include_diverged=...,
  min_cells=3, permutations=9999, seed=0, *, intervals=True, confidence=0.95,
  n_resamples=999, min_bootstrap=8) -> DataFrame``       Tables 1-3, tidy
- ``spearman_tests_all(frame, metrics=METRICS, **kwargs) -> DataFrame``
- ``seed_tests(frame, metric=..., **kwargs) -> DataFrame``  Tables 1-3 of each seed alone
- ``seed_summary(frame, metrics=METRICS) -> DataFrame``  mean, SD, n over seeds per cell
- ``adjust_pvalues(tests) -> DataFrame``                Holm and BH columns
- ``multiple_testing_summary(tests) -> DataFrame``      significant results surviving them
- ``noise_floor(frame, metric=...) -> DataFrame``       seed SD vs the grid's range
- ``direction_summary(tests) -> DataFrame``             does the paper's sign hold?
- ``premise_check(frame, train_accuracy_threshold=0.99, alpha=0.005,
  include_diverged=True, metric=PAPER_METRIC) -> DataFrame``   trained to ~zero error,
  equally well? (with the direction of the confound, and small last batches)

The tidy tests frame
--------------------
One row per Spearman test, columns ``TEST_COLUMNS``:

``study, model, dataset`` -- which grid; ``table`` -- 1 (metric vs batch size within
one learning rate), 2 (metric vs learning rate within one batch size) or 3 (metric
vs ratio over the whole grid); ``variable`` -- ``"batch_size" | "learning_rate" |
"ratio"``; ``group_by`` -- ``"learning_rate" | "batch_size" | None``;
``group_value`` -- the fixed learning rate / batch size (``None`` for Table 3);
``metric``; ``n`` -- finished cells behind the coefficient; ``n_diverged`` -- how
many of their runs diverged; ``n_total`` -- cells of the group in the frame whatever
their status; ``scc``, ``p_value``; ``pvalue_method`` -- ``"asymptotic"``,
``"exact (120 permutations)"``, ``"monte-carlo (9999 resamples)"`` ...;
``significant`` -- ``p_value < alpha``; ``alpha``; ``reason`` -- ``None`` or why
there is no coefficient (``"fewer than 3 finished cells (n=2)"``,
``"variable is constant"``, ``"metric is constant"``).

Then, beyond the paper (see "Statistics" below):

``n_runs`` -- finished runs behind the n cells; ``n_seeds`` -- seeds among them;
``seeds_tested``, ``seed_scc_min``, ``seed_scc_max``, ``seed_scc_sd`` -- the
coefficient of each seed alone: how many seeds have one, their range and SD (NaN
with one seed); ``confidence`` -- the intervals' level (0.95); ``ci_low``,
``ci_high`` -- the interval over cells, ``ci_method`` how it was computed
(``"BCa bootstrap over cells (999 resamples)"``), ``ci_reason`` why there is none
(``"fewer than 8 cells for a bootstrap over cells (n=4)"``); ``seed_ci_low``,
``seed_ci_high``, ``seed_ci_reason`` -- the interval over seeds (``"one seed: no
interval over seeds (it needs two or more)"``); ``p_holm``, ``p_bh`` -- Holm and
Benjamini-Hochberg adjusted p-values over the test's table (one grid, metric and
table), ``p_holm_all``, ``p_bh_all`` -- over every test of the metric in the frame;
``slope``, ``slope_low``, ``slope_high`` -- the Theil-Sen slope of the metric (the
cells' means) against log2 of the variable, i.e. the change per doubling, in the
metric's units (x100 for accuracy points), with Sen's interval.

Groups are defined by *all* rows of the frame (pending ones too), so a partial
study yields as many tests as the finished one will, with a reason on those that
cannot be computed yet: the paper's 2 models x 2 datasets x 20 x 20 grid always
gives 4 x (20 + 20 + 1) = 164 rows per metric.

Statistics
----------
*Seeds are replicates.* A cell trained with several seeds is one point of a test: its
metric is averaged over its finished seeds and the coefficient is computed on those
means (n = cells). With one seed this is exactly the paper's test. Pooling the runs
(the old behaviour) counted each cell once per seed, as if the grid had k times the
cells, and made p-values too small (pseudo-replication).

*Two intervals, separate columns.* ``ci_low``/``ci_high`` resample the cells: the
cells' (variable, mean) pairs are drawn with replacement (``scipy.stats.bootstrap``,
BCa, ``n_resamples``), answering "how much would the coefficient move with other cells
of the same kind"; groups below ``min_bootstrap`` cells (8) get a reason.
``seed_ci_low``/``seed_ci_high`` resample whole seeds: k seed indices are drawn with
replacement, every cell's mean is recomputed over the drawn seeds (a seed drawn twice
weighs twice; a cell left without a drawn finished seed drops out) and the coefficient
is computed on those means (percentile): seed noise, and only seed noise, enters it.
With k seeds there are C(2k-1, k) distinct resamples (3 for two seeds), so with few
seeds it is the spread of a handful of coefficients. Both are seeded from ``seed`` and
the test's identity (each row is reproducible alone); a distribution that BCa cannot
correct (every resample the same coefficient, e.g. a perfect ranking) gives the
percentile interval, and the method says so.

*Multiple testing.* The paper's per-test threshold stays (``significant``); the
families for Holm (family-wise error) and Benjamini-Hochberg (false discovery rate) are
each table of each grid and metric, and all tests of a metric (a report's 164).

*Effect size and noise floor.* ``slope`` says how many accuracy points a doubling
costs, beside the SCC that says only how consistently; :func:`noise_floor` sets the
seed-to-seed SD against the range of the grid's cell means.
"""

from __future__ import annotations

import inspect
import itertools
import math
import zlib
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import numpy as np
import pandas as pd

from kerasgen.inference import MIN_BOOTSTRAP_CELLS
from kerasgen.vocabulary import (
    DIVERGED,
    DONE,
    FINISHED,
    GROWING_METRICS,
    METRIC_SHORT,
    METRICS,
    PAPER_METRIC,
    metric_amount,
)

# --------------------------------------------------------------------------- constants

def best_metric_of(frame: pd.DataFrame) -> str | None:
    """The one ``best_metric`` of a results frame's studies (a frame without the column
    is the paper's rule), or None when its studies differ."""
    if "best_metric" not in frame.columns:
        return "test_accuracy"
    values = set(frame["best_metric"].dropna().astype(str))
    return values.pop() if len(values) == 1 else None


FINISHED_STATUSES: tuple[str, ...] = FINISHED
PVALUE_METHODS: tuple[str, ...] = ("auto", "asymptotic", "exact", "permutation")
PValueMethod = Literal["auto", "asymptotic", "exact", "permutation"]

MAX_EXACT_N = 8
"""Largest n for which ``pvalue="exact"`` enumerates all n! permutations (8! = 40320)."""

TABLE_VARIABLE: dict[int, tuple[str, str | None]] = {
    1: ("batch_size", "learning_rate"),
    2: ("learning_rate", "batch_size"),
    3: ("ratio", None),
}
"""Table number -> (variable correlated with the metric, variable held fixed)."""

TEST_COLUMNS: list[str] = [
    "study", "model", "dataset", "table", "variable", "group_by", "group_value",
    "metric", "n", "n_diverged", "n_total", "scc", "p_value", "pvalue_method",
    "alpha", "significant", "reason",
    # seeds as replicates
    "n_runs", "n_seeds", "seeds_tested", "seed_scc_min", "seed_scc_max", "seed_scc_sd",
    # intervals
    "confidence", "ci_low", "ci_high", "ci_method", "ci_reason",
    "seed_ci_low", "seed_ci_high", "seed_ci_reason",
    # multiple testing
    "p_holm", "p_bh", "p_holm_all", "p_bh_all",
    # effect size
    "slope", "slope_low", "slope_high",
]

SEED_SUMMARY_COLUMNS: list[str] = [
    "study", "model", "dataset", "batch_size", "learning_rate", "ratio", "metric",
    "n", "n_diverged", "mean", "sd", "values",
]

NOISE_COLUMNS: list[str] = [
    "study", "model", "dataset", "metric", "n_cells", "n_seeds", "n_replicated",
    "seed_sd", "mean_min", "mean_max", "mean_range", "range_over_sd", "summary",
]

MULTIPLE_TESTING_COLUMNS: list[str] = [
    "metric", "tests", "tested", "alpha", "significant", "expected_by_chance",
    "holm_table", "bh_table", "holm_all", "bh_all",
]

DIRECTION_COLUMNS: list[str] = [
    "study", "model", "dataset", "metric", "table", "variable", "expected_sign",
    "groups", "tested", "expected_direction", "significant_expected",
    "significant_against", "verdict", "holds", "summary",
]

PREMISE_COLUMNS: list[str] = [
    "study", "model", "dataset", "n", "n_diverged", "train_source",
    "train_accuracy_min", "train_accuracy_median", "train_accuracy_max",
    "train_loss_min", "train_loss_median", "train_loss_max",
    "threshold", "n_below_threshold",
    "loss_ratio_scc", "loss_ratio_p", "accuracy_ratio_scc", "accuracy_ratio_p",
    "metric", "metric_ratio_scc", "metric_ratio_p", "small_last_batches",
    "ok", "warnings", "notes",
]

_KEYS = ["study", "model", "dataset"]
_SIG_DIGITS = 12


SMALL_N = 10
"""Below this many cells scipy's asymptotic p-value is unreliable (and 0 when rho = +-1)."""

# --------------------------------------------------------------------------- helpers


def format_p(p: float | None) -> str:
    """A p-value as the paper prints it, in plain text: ``2.6e-11``, ``1.4e-2``.

    NaN/None -> ``n/a``; an exact zero (a perfect rank agreement under the asymptotic
    method, or underflow below ~1e-308) -> ``<1e-308``; exponent 0 -> ``0.5``.
    """
    if p is None or not math.isfinite(float(p)):
        return "n/a"
    p = float(p)
    if p == 0.0:
        return "<1e-308"
    mant, exp = f"{p:.1e}".split("e")
    return mant if int(exp) == 0 else f"{mant}e{int(exp)}"


def format_p_eq(p: float | None) -> str:
    """``p=2.6e-11``, ``p<1e-308`` for an exact zero, ``p=n/a``."""
    text = format_p(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def round_sig(value: float, digits: int = _SIG_DIGITS) -> float:
    """Round ``value`` to ``digits`` significant digits (NaN/inf pass through).

    Used to group learning rates and ratios robustly: ``0.1`` and ``0.1000000001``
    become one group, ``0.1`` and ``0.11`` stay two.
    """
    value = float(value)
    if not math.isfinite(value) or value == 0.0:
        return value
    return float(f"{value:.{digits}g}")


def _round_series(series: pd.Series, digits: int = _SIG_DIGITS) -> pd.Series:
    values = pd.to_numeric(series, errors="coerce").astype(float).to_numpy()
    return pd.Series([round_sig(v, digits) for v in values], index=series.index, dtype=float)


def normalize(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a canonical copy of a results frame.

    - ``study`` is filled with ``""`` when missing; ``model``/``dataset``/``status``
      become plain ``str``;
    - ``learning_rate`` and ``ratio`` are rounded to 12 significant digits (``ratio``
      is computed as ``batch_size / learning_rate`` when absent or NaN);
    - ``batch_size`` becomes ``int``; ``seed`` an ``int`` (0 when absent).
    """
    out = frame.copy()
    if "seed" not in out.columns:
        out["seed"] = 0
    out["seed"] = pd.to_numeric(out["seed"], errors="coerce").fillna(0).astype("int64")
    if "study" not in out.columns:
        out["study"] = ""
    for col in ("study", "model", "dataset", "status"):
        if col not in out.columns:
            out[col] = ""
        out[col] = out[col].fillna("").astype(str).astype(object)
    out["batch_size"] = pd.to_numeric(out["batch_size"]).astype("int64")
    out["learning_rate"] = _round_series(out["learning_rate"])
    computed = out["batch_size"].astype(float) / out["learning_rate"]
    if "ratio" in out.columns:
        ratio = pd.to_numeric(out["ratio"], errors="coerce").astype(float)
        ratio = ratio.where(ratio.notna(), computed)
    else:
        ratio = computed
    out["ratio"] = _round_series(ratio)
    return out


def add_derived_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``frame`` with the kept-epoch metrics every analysis uses.

    - ``test_accuracy``: as loaded; a frame without it (built by hand, or an old
      results frame) is one whose kept epoch is the paper's, so it is
      ``best_test_accuracy``;
    - ``gap = train_eval_accuracy - test_accuracy`` and ``loss_gap = test_loss -
      train_eval_loss``, both at the kept epoch, from the clean training metrics. Where
      those are missing (a store written before they existed) the gaps are NaN: never
      computed from Keras's running training metrics, which are averaged over an epoch of
      augmented batches with batch norm in training mode.
    """
    out = frame.copy()
    if "test_accuracy" not in out.columns and "best_test_accuracy" in out.columns:
        out["test_accuracy"] = out["best_test_accuracy"]

    def column(name: str) -> pd.Series:
        if name in out.columns:
            return pd.to_numeric(out[name], errors="coerce").astype(float)
        return pd.Series(np.nan, index=out.index, dtype=float)

    if "gap" not in out.columns:
        out["gap"] = (column("train_eval_accuracy") - column("test_accuracy")).astype(float)
    if "loss_gap" not in out.columns:
        out["loss_gap"] = (column("test_loss") - column("train_eval_loss")).astype(float)
    return out


def _with_metric(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    if metric not in frame.columns:
        frame = add_derived_metrics(frame)
        if metric not in frame.columns:
            raise KeyError(f"metric {metric!r} is not a column of the results frame")
    return frame


def finished_cells(
    frame: pd.DataFrame, metric: str = PAPER_METRIC, include_diverged: bool = True
) -> pd.DataFrame:
    """Cells that count for ``metric``: status ``done`` (or ``diverged`` when
    ``include_diverged``) with a finite metric value.  Pending, running and failed
    cells are dropped.  The frame is normalized (see :func:`normalize`)."""
    frame = normalize(_with_metric(frame, metric))
    statuses = FINISHED_STATUSES if include_diverged else (DONE,)
    values = pd.to_numeric(frame[metric], errors="coerce").astype(float)
    keep = frame["status"].isin(statuses) & np.isfinite(values)
    return frame.loc[keep].copy()


# --------------------------------------------------------------------------- one test


@dataclass(frozen=True)
class SpearmanResult:
    """One Spearman test: coefficient, p-value, how it was computed, or why not."""

    scc: float
    p_value: float
    n: int
    method: str
    reason: str | None = None


def _scc(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho alone (no p-value): the Pearson correlation of average ranks, as
    ``scipy.stats.spearmanr(x, y).statistic``, without its overhead."""
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    return float(rx @ ry / math.sqrt(float(rx @ rx) * float(ry @ ry)))


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values).astype(float)


def _all_permutations(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))), dtype=np.intp)


def exact_spearman_pvalue(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided exact permutation p-value of Spearman's rho.

    Enumerates all n! pairings of ``y`` with ``x`` (ties keep their average ranks,
    i.e. the test is conditional on the observed ties) and returns the fraction with
    ``|rho| >= |rho_observed|`` (up to 1e-12 relative tolerance).  Meant for
    n <= :data:`MAX_EXACT_N`; cost is O(n! * n).
    """
    rx = _ranks(np.asarray(x, dtype=float))
    ry = _ranks(np.asarray(y, dtype=float))
    rx = rx - rx.mean()
    ry = ry - ry.mean()
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    if denom == 0.0:
        return float("nan")
    observed = abs(float(rx @ ry)) / denom
    perms = _all_permutations(len(rx))
    rhos = np.abs(ry[perms] @ rx) / denom
    return float(np.mean(rhos >= observed * (1.0 - 1e-12) - 1e-15))


def _permutation_pvalue(
    x: np.ndarray, y: np.ndarray, n_resamples: int, seed_parts: Iterable[int]
) -> tuple[float, str]:
    """scipy.stats.permutation_test (pairings) of Spearman's rho.

    Exact when ``n! <= n_resamples`` (scipy enumerates), Monte Carlo otherwise.
    """
    from scipy import stats

    # Ranks of a permuted x are the permuted ranks of x: rank once, then each
    # resample's rho is a Pearson correlation of ranks (no re-ranking per resample).
    rx = stats.rankdata(x)
    ry = stats.rankdata(y)
    ry = ry - ry.mean()
    ry_norm = math.sqrt(float(ry @ ry))

    def statistic(xs: np.ndarray, axis: int = -1) -> np.ndarray:
        xs = np.moveaxis(xs, axis, -1)
        xc = xs - xs.mean(axis=-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (xc @ ry) / (np.sqrt((xc * xc).sum(axis=-1)) * ry_norm)

    rng = np.random.default_rng(np.random.SeedSequence(list(seed_parts)))
    params = inspect.signature(stats.permutation_test).parameters
    kwargs = {"rng" if "rng" in params else "random_state": rng}
    res = stats.permutation_test(
        (rx,),
        statistic,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        **kwargs,
    )
    n = len(x)
    if math.factorial(n) <= n_resamples:
        return float(res.pvalue), f"exact ({math.factorial(n)} permutations)"
    return float(res.pvalue), f"monte-carlo ({n_resamples} resamples)"


def spearman(
    x: Sequence[float],
    y: Sequence[float],
    pvalue: PValueMethod = "auto",
    min_cells: int = 3,
    permutations: int = 9999,
    seed_parts: Iterable[int] = (0,),
) -> SpearmanResult:
    """Spearman's rank correlation of ``y`` with ``x`` and its two-sided p-value.

    The coefficient is always ``scipy.stats.spearmanr(x, y).statistic`` (average
    ranks for ties).  The p-value:

    - ``"auto"`` (default): asymptotic for n >= :data:`SMALL_N` (the paper's groups
      have 20 and 400 cells, so the paper's own method), exact below it — the
      t-approximation gives p = 0 to a perfect rank agreement of three cells;
    - ``"asymptotic"``: scipy's t-distribution approximation;
    - ``"exact"``: enumeration of all n! pairings when n <= :data:`MAX_EXACT_N`
      (:func:`exact_spearman_pvalue`), else Monte Carlo with ``permutations``
      resamples (the method string says which);
    - ``"permutation"``: ``scipy.stats.permutation_test`` with ``permutations``
      resamples (scipy itself enumerates when n! <= permutations).  The installed
      scipy's ``spearmanr`` has no ``method=`` argument, hence permutation_test.

    Returns NaN coefficient and p-value with a ``reason`` when there are fewer than
    ``min_cells`` pairs or either input is constant.
    """
    if pvalue not in PVALUE_METHODS:
        raise ValueError(f"pvalue must be one of {PVALUE_METHODS}, not {pvalue!r}")
    xa = np.asarray(x, dtype=float)
    ya = np.asarray(y, dtype=float)
    n = int(len(xa))
    nan = float("nan")
    if n < max(min_cells, 2):
        return SpearmanResult(nan, nan, n, "none", f"fewer than {min_cells} finished cells (n={n})")
    if np.all(xa == xa[0]):
        return SpearmanResult(nan, nan, n, "none", "variable is constant")
    if np.all(ya == ya[0]):
        return SpearmanResult(nan, nan, n, "none", "metric is constant")
    from scipy import stats

    res = stats.spearmanr(xa, ya)
    scc = float(res.statistic)
    if pvalue == "auto":
        pvalue = "asymptotic" if n >= SMALL_N else "exact"
    if pvalue == "asymptotic":
        return SpearmanResult(scc, float(res.pvalue), n, "asymptotic")
    if pvalue == "exact" and n <= MAX_EXACT_N:
        return SpearmanResult(
            scc, exact_spearman_pvalue(xa, ya), n, f"exact ({math.factorial(n)} permutations)"
        )
    p, method = _permutation_pvalue(xa, ya, permutations, seed_parts)
    return SpearmanResult(scc, p, n, method)


# --------------------------------------------------------------------------- the tables


def _stable_seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


def _group_value(value: object, group_by: str | None) -> object:
    if group_by is None:
        return None
    if group_by == "batch_size":
        return int(value)  # type: ignore[arg-type]
    return float(value)  # type: ignore[arg-type]


def expected_test_count(frame: pd.DataFrame) -> int:
    """Number of rows :func:`spearman_tests` returns for one metric: for every
    (study, model, dataset), one per distinct learning rate + one per distinct batch
    size + one (the ratio).  2 x 2 x (20 + 20 + 1) = 164 for the paper's grid."""
    if frame.empty:
        return 0
    norm = normalize(frame)
    total = 0
    for _, grid in norm.groupby(_KEYS, sort=True):
        total += grid["learning_rate"].nunique() + grid["batch_size"].nunique() + 1
    return int(total)


# --------------------------------------------------------------------------- seeds


_CELL = ["batch_size", "learning_rate"]


@dataclass(frozen=True)
class _SeedMatrix:
    """The finished runs of one grid for one metric: one row per cell (batch size x
    learning rate with at least one finished seed), one column per seed (NaN where that
    seed's run of the cell did not finish)."""

    cells: pd.DataFrame  # batch_size, learning_rate, ratio, mean, runs, diverged
    seeds: tuple[int, ...]
    values: np.ndarray  # cells x seeds


def _seed_matrix(runs: pd.DataFrame, metric: str) -> _SeedMatrix:
    if runs.empty:
        empty = pd.DataFrame(columns=[*_CELL, "ratio", "mean", "runs", "diverged"])
        return _SeedMatrix(empty, (), np.empty((0, 0)))
    values = runs.groupby([*_CELL, "seed"], sort=True)[metric].mean().unstack("seed")
    grouped = runs.groupby(_CELL, sort=True)
    diverged = (runs["status"] == DIVERGED).astype(int)
    cells = pd.DataFrame({
        "ratio": grouped["ratio"].first(),
        "runs": grouped.size(),
        "diverged": diverged.groupby([runs[c] for c in _CELL], sort=True).sum(),
    }).reindex(values.index)
    matrix = values.to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        cells["mean"] = np.nanmean(matrix, axis=1)
    cells = cells.reset_index()
    return _SeedMatrix(cells, tuple(int(s) for s in values.columns), matrix)


def seed_summary(
    frame: pd.DataFrame, metrics: Sequence[str] = METRICS, include_diverged: bool = True
) -> pd.DataFrame:
    """Seeds as replicates: for every (study, model, dataset, batch size, learning
    rate) and metric, the mean, standard deviation (ddof=1; NaN with one seed) and n of
    the metric over the cell's finished seeds. Columns :data:`SEED_SUMMARY_COLUMNS`
    (``n_diverged``: diverged runs among the n; ``values``: the seeds' values, in seed
    order, as a tuple of (seed, value))."""
    if frame.empty:
        return pd.DataFrame(columns=SEED_SUMMARY_COLUMNS)
    frame = add_derived_metrics(frame)
    rows = []
    for metric in metrics:
        done = finished_cells(frame, metric, include_diverged)
        for key, part in done.groupby([*_KEYS, *_CELL], sort=True):
            part = part.sort_values("seed", kind="mergesort")
            values = part[metric].to_numpy(dtype=float)
            rows.append({
                "study": key[0], "model": key[1], "dataset": key[2],
                "batch_size": int(key[3]), "learning_rate": float(key[4]),
                "ratio": float(part["ratio"].iloc[0]), "metric": metric,
                "n": int(len(values)), "n_diverged": int((part["status"] == DIVERGED).sum()),
                "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                "values": tuple(zip(part["seed"].astype(int).tolist(), values.tolist())),
            })
    return pd.DataFrame(rows, columns=SEED_SUMMARY_COLUMNS)


# --------------------------------------------------------------------------- the tables


def _design_constant(design: pd.DataFrame, variable: str) -> bool:
    return design[variable].nunique() <= 1


def _one_test(
    x: np.ndarray,
    matrix: np.ndarray,
    *,
    pvalue: PValueMethod,
    min_cells: int,
    permutations: int,
    seed_parts: tuple[int, ...],
    intervals: bool,
    confidence: float,
    n_resamples: int,
    min_bootstrap: int,
    constant_design: bool,
) -> dict[str, object]:
    """Every number of one test: the coefficient of the cells' seed means (the paper's
    test with one seed), its intervals over cells and over seeds, the per-seed
    coefficients and the Theil-Sen slope against log2 of the variable."""
    from kerasgen import inference

    nan = float("nan")
    with np.errstate(invalid="ignore"):
        means = np.nanmean(matrix, axis=1) if matrix.size else np.empty(0)
    result = spearman(x, means, pvalue=pvalue, min_cells=min_cells,
                      permutations=permutations, seed_parts=seed_parts)
    reason = result.reason
    if constant_design:
        reason = "variable is constant"
        result = SpearmanResult(nan, nan, result.n, "none", reason)
    seeds_with_runs = int(np.isfinite(matrix).any(axis=0).sum()) if matrix.size else 0
    out: dict[str, object] = {
        "n": result.n, "scc": result.scc, "p_value": result.p_value,
        "pvalue_method": result.method, "reason": reason, "n_seeds": seeds_with_runs,
        "confidence": float(confidence),
    }
    no_test = f"no coefficient ({reason})" if reason else None
    if reason is not None or not intervals:
        why = no_test or "intervals not computed"
        cells_ci = seeds_ci = inference.Interval.none(why)
        slope = (nan, nan, nan)
    else:
        cells_ci = inference.cells_interval(
            x, means, confidence=confidence, n_resamples=n_resamples,
            min_cells=min_bootstrap, rng=inference.make_rng((*seed_parts, 1)))
        seeds_ci = inference.seeds_interval(
            x, matrix, confidence=confidence, n_resamples=n_resamples,
            rng=inference.make_rng((*seed_parts, 2)))
        slope = (inference.theil_sen(np.log2(x), means, confidence) if (x > 0).all()
                 else (nan, nan, nan))
    per_seed = []
    if reason is None:
        if matrix.shape[1] == 1:
            per_seed = [result.scc]
        else:
            for column in matrix.T:
                ok = np.isfinite(column)
                xs, ys = x[ok], column[ok]
                if len(xs) >= max(min_cells, 2) and np.ptp(xs) > 0 and np.ptp(ys) > 0:
                    per_seed.append(_scc(xs, ys))
    out.update({
        "ci_low": cells_ci.low, "ci_high": cells_ci.high, "ci_method": cells_ci.method,
        "ci_reason": cells_ci.reason,
        "seed_ci_low": seeds_ci.low, "seed_ci_high": seeds_ci.high,
        "seed_ci_reason": seeds_ci.reason,
        "seeds_tested": len(per_seed),
        "seed_scc_min": min(per_seed) if per_seed else nan,
        "seed_scc_max": max(per_seed) if per_seed else nan,
        "seed_scc_sd": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else nan,
        "slope": slope[0], "slope_low": slope[1], "slope_high": slope[2],
    })
    return out


def adjust_pvalues(tests: pd.DataFrame) -> pd.DataFrame:
    """A copy of a tests frame with ``p_holm`` and ``p_bh`` (Holm-Bonferroni and
    Benjamini-Hochberg over each *family*: one table of one grid and metric, i.e. the
    rows sharing study, model, dataset, metric and table) and ``p_holm_all`` /
    ``p_bh_all`` (over every test of the metric in the frame: a report's 164 for the
    paper's grid). Tests without a p-value are not counted in a family."""
    from kerasgen import inference

    out = tests.copy()
    if out.empty:
        for col in ("p_holm", "p_bh", "p_holm_all", "p_bh_all"):
            out[col] = pd.Series(dtype=float)
        return out
    p = pd.to_numeric(out["p_value"], errors="coerce").astype(float)
    family = ["study", "model", "dataset", "metric", "table"]
    out["p_holm"] = p.groupby([out[c] for c in family], sort=False).transform(inference.holm)
    out["p_bh"] = p.groupby([out[c] for c in family], sort=False).transform(
        inference.benjamini_hochberg)
    out["p_holm_all"] = p.groupby(out["metric"], sort=False).transform(inference.holm)
    out["p_bh_all"] = p.groupby(out["metric"], sort=False).transform(
        inference.benjamini_hochberg)
    return out


def spearman_tests(
    frame: pd.DataFrame,
    metric: str = PAPER_METRIC,
    alpha: float = 0.005,
    pvalue: PValueMethod = "auto",
    include_diverged: bool = True,
    min_cells: int = 3,
    permutations: int = 9999,
    seed: int = 0,
    *,
    intervals: bool = True,
    confidence: float = 0.95,
    n_resamples: int = 999,
    min_bootstrap: int = MIN_BOOTSTRAP_CELLS,
) -> pd.DataFrame:
    """Spearman tests of Tables 1-3 of the paper for every (study, model, dataset).

    - Table 1: ``metric`` vs batch size within each learning rate;
    - Table 2: ``metric`` vs learning rate within each batch size;
    - Table 3: ``metric`` vs batch size / learning rate over the whole grid.

    Groups come from every row of ``frame`` (whatever its status); coefficients use
    only finished cells (:func:`finished_cells`).  Diverged cells count with the
    metric they reached before diverging unless ``include_diverged`` is False.

    Seeds are replicates: each coefficient is computed on the cells' means over their
    finished seeds (``n`` cells, never the ``n_runs`` runs pooled), so with one seed it
    is exactly the paper's test.  ``significant`` is ``p_value < alpha`` (the paper uses
    0.005); ``p_holm``/``p_bh`` and ``p_holm_all``/``p_bh_all`` adjust the p-values
    over the test's table and over every test of the metric (:func:`adjust_pvalues`).

    ``intervals`` (default True): ``ci_low``/``ci_high``, a BCa bootstrap interval
    over cells at ``confidence`` from ``n_resamples`` resamples (groups of fewer than
    ``min_bootstrap`` cells get a ``ci_reason`` instead), ``seed_ci_low``/
    ``seed_ci_high``, a percentile bootstrap over whole seeds (two or more seeds), and
    the Theil-Sen ``slope`` of the metric against log2 of the variable with its
    interval (see :mod:`kerasgen.inference`).  Monte Carlo p-values and every bootstrap
    are seeded from ``seed`` and the group's identity, so each row is reproducible on
    its own.  Returns a frame with columns :data:`TEST_COLUMNS`, sorted by study,
    model, dataset, table, group value.
    """
    if pvalue not in PVALUE_METHODS:
        raise ValueError(f"pvalue must be one of {PVALUE_METHODS}, not {pvalue!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence!r}")
    if frame.empty:
        return pd.DataFrame(columns=TEST_COLUMNS)
    all_cells = normalize(_with_metric(frame, metric))
    done = finished_cells(all_cells, metric, include_diverged)
    rows: list[dict[str, object]] = []
    for key, grid in all_cells.groupby(_KEYS, sort=True):
        study, model, dataset = (str(k) for k in key)
        grid_done = done[
            (done["study"] == study) & (done["model"] == model) & (done["dataset"] == dataset)
        ]
        seeds = _seed_matrix(grid_done, metric)
        design = grid.drop_duplicates(_CELL)
        for table, (variable, group_by) in TABLE_VARIABLE.items():
            if group_by is None:
                groups = [(None, design, np.ones(len(seeds.cells), dtype=bool))]
            else:
                held = seeds.cells[group_by].to_numpy()
                groups = [(value, part, held == value)
                          for value, part in design.groupby(group_by, sort=True)]
            for value, cells, used in groups:
                gv = _group_value(value, group_by)
                matrix = seeds.values[used]
                picked = seeds.cells[used]
                stats_ = _one_test(
                    picked[variable].to_numpy(dtype=float), matrix,
                    pvalue=pvalue, min_cells=min_cells, permutations=permutations,
                    seed_parts=(seed, _stable_seed(study, model, dataset, table, gv, metric)),
                    intervals=intervals, confidence=confidence, n_resamples=n_resamples,
                    min_bootstrap=min_bootstrap,
                    constant_design=_design_constant(cells, variable),
                )
                p = stats_["p_value"]
                rows.append({
                    "study": study, "model": model, "dataset": dataset, "table": table,
                    "variable": variable, "group_by": group_by, "group_value": gv,
                    "metric": metric, "n_diverged": int(picked["diverged"].sum()),
                    "n_total": int(len(cells)), "alpha": float(alpha),
                    "significant": bool(stats_["reason"] is None
                                        and math.isfinite(p) and p < alpha),  # type: ignore
                    "n_runs": int(picked["runs"].sum()),
                    **stats_,
                })
    out = adjust_pvalues(pd.DataFrame(rows)).reindex(columns=TEST_COLUMNS)
    # Keep ints as ints (batch sizes), floats as floats and None as None.
    for col in ("group_by", "group_value", "reason", "ci_reason", "seed_ci_reason"):
        out[col] = pd.Series([r[col] for r in rows], dtype=object, index=out.index)
    return out.reset_index(drop=True)


def spearman_tests_all(
    frame: pd.DataFrame, metrics: Sequence[str] = METRICS, **kwargs: object
) -> pd.DataFrame:
    """:func:`spearman_tests` for each metric in ``metrics``, concatenated (tidy)."""
    frame = add_derived_metrics(frame)
    parts = [spearman_tests(frame, metric=m, **kwargs) for m in metrics]  # type: ignore[arg-type]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=TEST_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def seed_tests(frame: pd.DataFrame, metric: str = PAPER_METRIC, **kwargs: object
               ) -> pd.DataFrame:
    """Tables 1-3 for each seed alone: :func:`spearman_tests` on each seed's runs
    (without intervals), concatenated with a leading ``seed`` column. Groups come from
    the seed's own rows."""
    if frame.empty:
        return pd.DataFrame(columns=["seed", *TEST_COLUMNS])
    norm = normalize(_with_metric(frame, metric))
    kwargs = {**kwargs, "intervals": False}
    parts = []
    for seed_value in sorted(norm["seed"].unique()):
        part = spearman_tests(norm[norm["seed"] == seed_value], metric=metric,
                              **kwargs)  # type: ignore[arg-type]
        part.insert(0, "seed", int(seed_value))
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------- multiple testing


def multiple_testing_summary(tests: pd.DataFrame) -> pd.DataFrame:
    """How many results survive a correction for multiple testing: one row per metric of
    a tests frame (columns :data:`MULTIPLE_TESTING_COLUMNS`): ``tests`` (rows),
    ``tested`` (with a p-value), ``significant`` (the paper's rule, p < alpha),
    ``expected_by_chance`` (tested x alpha: the significant results expected if no
    effect existed anywhere), and how many stay below alpha after Holm-Bonferroni and
    Benjamini-Hochberg within each table (``holm_table``, ``bh_table``) and over every
    test of the metric (``holm_all``, ``bh_all``)."""
    if tests.empty:
        return pd.DataFrame(columns=MULTIPLE_TESTING_COLUMNS)
    if "p_holm" not in tests.columns:
        tests = adjust_pvalues(tests)
    rows = []
    for metric, part in tests.groupby("metric", sort=False):
        alpha = float(part["alpha"].iloc[0])
        tested = int(pd.to_numeric(part["p_value"], errors="coerce").notna().sum())

        def below(column: str, part: pd.DataFrame = part, alpha: float = alpha) -> int:
            return int((pd.to_numeric(part[column], errors="coerce") < alpha).sum())

        rows.append({
            "metric": metric, "tests": int(len(part)), "tested": tested, "alpha": alpha,
            "significant": int(part["significant"].astype(bool).sum()),
            "expected_by_chance": tested * alpha,
            "holm_table": below("p_holm"), "bh_table": below("p_bh"),
            "holm_all": below("p_holm_all"), "bh_all": below("p_bh_all"),
        })
    return pd.DataFrame(rows, columns=MULTIPLE_TESTING_COLUMNS)


# --------------------------------------------------------------------------- noise floor

NOISE_CLEAR = 4.0
"""A grid whose cell means span at least this many seed-to-seed SDs stands "well above
seed noise"; from half of it, "a few SDs"; below, "within seed noise"."""


def _noise_sentence(metric: str, n_cells: int, n_seeds: int, n_rep: int, per_cell: float,
                    sd: float, spread: float) -> str:
    label = METRIC_SHORT.get(metric, metric)
    if n_cells == 0:
        return f"No finished cells yet, so no noise floor for the {label}."
    if n_rep == 0:
        return (f"One seed per cell, so the seed-to-seed noise of the {label} cannot be "
                f"measured: nothing says how much of the {metric_amount(metric, spread)} "
                f"spread of the {n_cells} cells is noise (run two or more seeds).")
    where = (f"pooled over {n_rep} cells with {n_seeds} seeds; a mean of "
             f"{per_cell:g} seeds is uncertain by about "
             f"{metric_amount(metric, sd / math.sqrt(per_cell))}")
    if sd == 0.0:
        return (f"Every seed gave the same {label} in each of {n_rep} cells (seed-to-seed "
                f"SD 0), against a range of {metric_amount(metric, spread)} across the "
                f"{n_cells} cell means: the pattern is not seed noise.")
    times = spread / sd
    if times >= NOISE_CLEAR:
        verdict = "the grid's pattern stands well above seed noise"
    elif times >= NOISE_CLEAR / 2:
        verdict = ("the pattern is only a few seed SDs tall, so neighbouring cells are not "
                   "reliably ordered")
    else:
        verdict = "the pattern is within seed noise"
    return (f"Seed-to-seed SD of the {label} {metric_amount(metric, sd)} ({where}) against "
            f"a range of {metric_amount(metric, spread)} across the {n_cells} cell means, "
            f"{times:.1f} times the SD: {verdict}.")


def noise_floor(
    frame: pd.DataFrame, metric: str = PAPER_METRIC, include_diverged: bool = True
) -> pd.DataFrame:
    """The noise floor of each grid: the seed-to-seed standard deviation of ``metric``
    against the range of the grid's cell means, with one plain sentence (``summary``).

    Columns :data:`NOISE_COLUMNS`: ``n_cells`` (cells with a finished run),
    ``n_seeds`` (seeds with a finished run), ``n_replicated`` (cells with two or more
    finished seeds), ``seed_sd`` (the pooled within-cell SD over those cells,
    sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)); NaN with one seed), ``mean_min`` /
    ``mean_max`` / ``mean_range`` of the cell means, ``range_over_sd``."""
    if frame.empty:
        return pd.DataFrame(columns=NOISE_COLUMNS)
    all_cells = normalize(_with_metric(frame, metric))
    done = finished_cells(all_cells, metric, include_diverged)
    nan = float("nan")
    rows = []
    for key in all_cells.groupby(_KEYS, sort=True).groups:
        study, model, dataset = (str(k) for k in key)
        runs = done[(done["study"] == study) & (done["model"] == model)
                    & (done["dataset"] == dataset)]
        per_cell = runs.groupby(_CELL, sort=True)[metric].agg(["mean", "var", "count"])
        replicated = per_cell[per_cell["count"] >= 2]
        dof = float((replicated["count"] - 1).sum())
        sd = (math.sqrt(float(((replicated["count"] - 1) * replicated["var"]).sum()) / dof)
              if dof else nan)
        n_cells = int(len(per_cell))
        low = float(per_cell["mean"].min()) if n_cells else nan
        high = float(per_cell["mean"].max()) if n_cells else nan
        spread = high - low
        times = spread / sd if math.isfinite(sd) and sd > 0 else nan
        n_seeds = int(runs["seed"].nunique())
        typical = float(replicated["count"].median()) if len(replicated) else 1.0
        rows.append({
            "study": study, "model": model, "dataset": dataset, "metric": metric,
            "n_cells": n_cells, "n_seeds": n_seeds, "n_replicated": int(len(replicated)),
            "seed_sd": sd, "mean_min": low, "mean_max": high, "mean_range": spread,
            "range_over_sd": times,
            "summary": _noise_sentence(metric, n_cells, n_seeds, int(len(replicated)),
                                       typical, sd, spread),
        })
    return pd.DataFrame(rows, columns=NOISE_COLUMNS)


# --------------------------------------------------------------------------- directions


def expected_sign(metric: str, variable: str) -> int:
    """The sign the paper predicts for ``metric`` vs ``variable``.

    Accuracy metrics fall with batch size and with the ratio and rise with the
    learning rate (-1, +1, -1); the generalization gaps (and losses) do the opposite.
    """
    base = {"batch_size": -1, "learning_rate": 1, "ratio": -1}[variable]
    return -base if metric in GROWING_METRICS else base


def _verdict(tested: int, sig_expected: int, sig_against: int) -> str:
    if tested == 0:
        return "untested"
    if sig_against == 0 and sig_expected == tested:
        return "holds"
    if sig_against == 0 and sig_expected * 2 > tested:
        return "mostly holds"
    if sig_expected == 0 and sig_against == 0:
        return "not significant"
    if sig_against * 2 > tested and sig_expected == 0:
        return "reversed"
    if sig_against > 0 and sig_expected > 0:
        return "mixed"
    if sig_against > 0:
        return "partly reversed"
    return "weak"


def direction_summary(tests: pd.DataFrame) -> pd.DataFrame:
    """Does the paper's direction hold?  One row per (study, model, dataset, metric,
    table) of a tests frame from :func:`spearman_tests` / :func:`spearman_tests_all`.

    Columns (:data:`DIRECTION_COLUMNS`): ``expected_sign`` (+1/-1), ``groups``
    (rows), ``tested`` (rows with a coefficient), ``expected_direction`` (coefficient
    with the expected sign), ``significant_expected`` / ``significant_against``
    (significant with / against it), ``verdict`` (``holds`` = every tested group
    significant in the expected direction; ``mostly holds`` = a majority and none
    against; ``not significant``; ``mixed``; ``partly reversed``; ``reversed``;
    ``weak``; ``untested``), ``holds`` (verdict is holds or mostly holds) and a
    one-line ``summary`` in plain words.
    """
    if tests.empty:
        return pd.DataFrame(columns=DIRECTION_COLUMNS)
    rows: list[dict[str, object]] = []
    keys = ["study", "model", "dataset", "metric", "table", "variable"]
    for key, grp in tests.groupby(keys, sort=False):
        study, model, dataset, metric, table, variable = key
        sign = expected_sign(str(metric), str(variable))
        scc = grp["scc"].astype(float)
        has = scc.notna()
        tested = int(has.sum())
        with_sign = int((np.sign(scc[has]) == sign).sum())
        sig = grp["significant"].astype(bool) & has
        sig_exp = int((sig & (np.sign(scc) == sign)).sum())
        sig_against = int((sig & (np.sign(scc) == -sign)).sum())
        verdict = _verdict(tested, sig_exp, sig_against)
        alpha = float(grp["alpha"].iloc[0])
        word = "negative" if sign < 0 else "positive"
        what = {
            "batch_size": "batch size (within each learning rate)",
            "learning_rate": "learning rate (within each batch size)",
            "ratio": "batch size / learning rate (whole grid)",
        }[str(variable)]
        label = METRIC_SHORT.get(str(metric), str(metric))
        if tested == 0:
            summary = f"{label} vs {what}: no group has enough finished cells yet ({verdict})."
        elif table == 3:
            row = grp[has].iloc[0]
            summary = (
                f"{label} vs {what}: SCC {row['scc']:+.2f}, {format_p_eq(row['p_value'])} "
                f"(n={int(row['n'])}), expected {word} -> {verdict}."
            )
        else:
            summary = (
                f"{label} vs {what}: {tested}/{len(grp)} groups tested, {with_sign} {word}, "
                f"{sig_exp} significantly {word} and {sig_against} significantly the other way "
                f"(p<{alpha:g}) -> {verdict}."
            )
        rows.append(
            {
                "study": study,
                "model": model,
                "dataset": dataset,
                "metric": metric,
                "table": int(table),
                "variable": variable,
                "expected_sign": sign,
                "groups": int(len(grp)),
                "tested": tested,
                "expected_direction": with_sign,
                "significant_expected": sig_exp,
                "significant_against": sig_against,
                "verdict": verdict,
                "holds": verdict in ("holds", "mostly holds"),
                "summary": summary,
            }
        )
    return pd.DataFrame(rows, columns=DIRECTION_COLUMNS)


# --------------------------------------------------------------------------- premise


def _small_last_batches(grid: pd.DataFrame, model: str, dataset: str) -> tuple:
    """(batch_size, last batch size) of the grid's batch sizes whose epoch ends with a
    batch smaller than a quarter of the batch size, for a batch-norm network trained with
    the last partial batch kept; () when unknown (a model or data set outside the
    registry) or not the case."""
    from kerasgen.naming import check_model_name, known_train_size

    try:
        _family, _depth, batch_norm = check_model_name(model)
    except ValueError:
        return ()
    n = known_train_size(dataset)
    if not batch_norm or not n:
        return ()
    keep = grid["last_batch"].fillna("keep") if "last_batch" in grid.columns \
        else pd.Series("keep", index=grid.index)
    out = []
    for bs in sorted(set(grid.loc[keep == "keep", "batch_size"].astype(int))):
        rest = n % bs
        if 0 < rest < bs / 4:
            out.append((bs, rest))
    return tuple(out)


def premise_check(
    frame: pd.DataFrame,
    train_accuracy_threshold: float = 0.99,
    alpha: float = 0.005,
    include_diverged: bool = True,
    min_cells: int = 3,
    metric: str = PAPER_METRIC,
) -> pd.DataFrame:
    """Check the paper's premise: every cell trained to (almost) zero training error,
    equally well across the grid.

    Per (study, model, dataset) over finished cells, on the clean training metrics at
    the kept epoch (``train_eval_accuracy``/``train_eval_loss``: a fixed training subset
    measured as the test set, the weights the cell is judged by); where a store lacks
    them, on Keras's running final metrics, with a warning saying so
    (``train_source``). Columns :data:`PREMISE_COLUMNS`: min/median/max of train
    accuracy and loss over runs, how many runs are below ``train_accuracy_threshold``,
    the Spearman correlation of train loss, train accuracy and ``metric`` with the ratio
    (on the cells' means over seeds, as :func:`spearman_tests`), and the batch sizes
    whose epoch ends with a batch smaller than a quarter of the batch size
    (``small_last_batches``, batch-norm networks only).

    ``warnings`` (``ok`` is True when there are none), in plain words:

    - under-trained cells;
    - the confound: training loss rising (or training accuracy falling) with the
      ratio while ``metric`` moves the paper's way, so large-ratio cells fit worse and
      may test worse for that reason alone (both coefficients are given);
    - unequal fit without the paper's trend in ``metric``;
    - small last batches, with their weight in batch norm's moving averages;
    - diverged cells; missing clean metrics; no finished cells.

    ``notes``: the opposite trend (large-ratio cells fit the training set *better* yet
    test worse), which under-training cannot explain.
    """
    if frame.empty:
        return pd.DataFrame(columns=PREMISE_COLUMNS)
    all_cells = normalize(add_derived_metrics(frame))
    clean = ("train_eval_accuracy" in all_cells.columns
             and pd.to_numeric(all_cells["train_eval_accuracy"], errors="coerce").notna().any())
    acc_col, loss_col = (("train_eval_accuracy", "train_eval_loss") if clean
                         else ("final_train_accuracy", "final_train_loss"))
    source = "clean (kept epoch)" if clean else "running (Keras, last epoch)"
    for col in (acc_col, loss_col, metric):
        if col not in all_cells.columns:
            all_cells[col] = np.nan
    done = finished_cells(all_cells, acc_col, include_diverged)
    rows: list[dict[str, object]] = []
    nan = float("nan")
    expected = expected_sign(metric, "ratio")
    for key, grid in all_cells.groupby(_KEYS, sort=True):
        study, model, dataset = (str(k) for k in key)
        cells = done[
            (done["study"] == study) & (done["model"] == model) & (done["dataset"] == dataset)
        ].sort_values(["batch_size", "learning_rate"], kind="mergesort")
        acc = cells[acc_col].to_numpy(dtype=float)
        loss = pd.to_numeric(cells[loss_col], errors="coerce").to_numpy(dtype=float)
        target = pd.to_numeric(cells[metric], errors="coerce").to_numpy(dtype=float)
        ratio = cells["ratio"].to_numpy(dtype=float)
        n = int(len(cells))
        n_div = int((cells["status"] == DIVERGED).sum())
        warnings: list[str] = []
        notes: list[str] = []
        below = int((acc < train_accuracy_threshold).sum())
        # The correlations with the ratio: on the cells' means over seeds (replicates,
        # as in spearman_tests; one seed: the runs themselves).
        means = pd.DataFrame({"ratio": ratio, "acc": acc, "loss": loss, "target": target,
                              "bs": cells["batch_size"].to_numpy(),
                              "lr": cells["learning_rate"].to_numpy()}
                             ).groupby(["bs", "lr"], sort=True).mean()
        m_ratio = means["ratio"].to_numpy(dtype=float)

        results = []
        for column in ("loss", "acc", "target"):
            values = means[column].to_numpy(dtype=float)
            ok = np.isfinite(values)
            results.append(spearman(m_ratio[ok], values[ok], min_cells=min_cells))
        loss_res, acc_res, target_res = results
        small = _small_last_batches(grid, model, dataset)
        what = "clean train" if clean else "running train"

        def stat(fn, values: np.ndarray) -> float:
            values = values[np.isfinite(values)]
            return float(fn(values)) if len(values) else nan

        def significant(res: SpearmanResult) -> bool:
            return res.reason is None and res.p_value < alpha

        if n == 0:
            warnings.append("no finished cells with a train accuracy yet")
        if not clean and n:
            warnings.append(
                "the clean training metrics are missing (the store was written before "
                "kerasgen measured them), so this check uses Keras's running averages over "
                "the last epoch (augmented images, batch norm in training mode) and no gap "
                "is computed")
        if below:
            warnings.append(
                f"{below} of {n} cells are below {train_accuracy_threshold:.0%} {what} "
                f"accuracy (lowest {np.min(acc):.3f}): the paper assumes every cell is "
                "trained to ~zero training error, so these cells are under-trained"
            )
        fits_worse = ((significant(loss_res) and loss_res.scc > 0)
                      or (significant(acc_res) and acc_res.scc < 0))
        fits_better = ((significant(loss_res) and loss_res.scc < 0)
                       or (significant(acc_res) and acc_res.scc > 0))
        fit_res, fit_name = ((loss_res, "loss") if significant(loss_res) else (acc_res, "accuracy"))
        fit_text = (f"{what} {fit_name} {'rises' if fit_res.scc > 0 else 'falls'} with "
                    f"batch size / learning rate (SCC {fit_res.scc:+.2f}, "
                    f"{format_p_eq(fit_res.p_value)})") if fits_worse or fits_better else ""
        paper_way = target_res.reason is None and np.sign(target_res.scc) == expected
        label = METRIC_SHORT.get(metric, metric)
        target_text = (f"{label} vs the ratio: SCC {target_res.scc:+.2f}, "
                       f"{format_p_eq(target_res.p_value)}" if target_res.reason is None
                       else f"{label} vs the ratio: {target_res.reason}")
        if fits_worse and paper_way:
            warnings.append(
                f"{fit_text} while {target_text}, the paper's direction: large-ratio cells "
                "fit the training set worse, so the correlation with the ratio may measure "
                "under-training, not generalization")
        elif fits_worse:
            warnings.append(
                f"{fit_text}, so cells are not equally well fitted ({target_text}, not the "
                "paper's direction)")
        elif fits_better and paper_way:
            notes.append(
                f"{fit_text} while {target_text}: large-ratio cells fit the training set "
                "better yet test worse, which under-training cannot explain")
        elif fits_better:
            notes.append(f"{fit_text}; {target_text}")
        if small:
            sizes = ", ".join(f"{bs} (last batch {rest})" for bs, rest in small)
            from kerasgen.naming import BN_MOMENTUM

            warnings.append(
                f"batch sizes {sizes} end each epoch with a batch of fewer than a quarter "
                f"of their images, whose batch-norm statistics weigh {1 - BN_MOMENTUM:.0%} "
                "in the moving averages the test uses; set training.last_batch = \"drop\" "
                "to train without it")
        if n_div:
            warnings.append(
                f"{n_div} of {n} cells diverged; their metrics are from the last "
                "finite epoch" + ("" if include_diverged else " (excluded here)")
            )
        rows.append(
            {
                "study": study,
                "model": model,
                "dataset": dataset,
                "n": n,
                "n_diverged": n_div,
                "train_source": source,
                "train_accuracy_min": stat(np.min, acc),
                "train_accuracy_median": stat(np.median, acc),
                "train_accuracy_max": stat(np.max, acc),
                "train_loss_min": stat(np.min, loss),
                "train_loss_median": stat(np.median, loss),
                "train_loss_max": stat(np.max, loss),
                "threshold": float(train_accuracy_threshold),
                "n_below_threshold": below,
                "loss_ratio_scc": loss_res.scc,
                "loss_ratio_p": loss_res.p_value,
                "accuracy_ratio_scc": acc_res.scc,
                "accuracy_ratio_p": acc_res.p_value,
                "metric": metric,
                "metric_ratio_scc": target_res.scc,
                "metric_ratio_p": target_res.p_value,
                "small_last_batches": small,
                "ok": not warnings,
                "warnings": tuple(warnings),
                "notes": tuple(notes),
            }
        )
    return pd.DataFrame(rows, columns=PREMISE_COLUMNS)
