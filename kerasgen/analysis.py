"""Spearman analyses of a batch-size x learning-rate grid (He, Liu & Tao 2019, Section 4).

Pure functions over the frame returned by :func:`kerasgen.store.load_results` (one
row per run: a cell, i.e. a (model, dataset, batch size, learning rate), trained with
one seed).  Nothing here imports TensorFlow, Keras or matplotlib, and scipy is
imported lazily, so importing this module is cheap (the dashboard uses it live).

Public API (stable)
-------------------
- ``METRICS``, ``PAPER_METRIC``, ``PVALUE_METHODS``, ``TEST_COLUMNS``,
  ``DIRECTION_COLUMNS``, ``PREMISE_COLUMNS``, ``SEED_SUMMARY_COLUMNS``,
  ``NOISE_COLUMNS``, ``MULTIPLE_TESTING_COLUMNS``, ``RATIO_MODEL_COLUMNS``,
  ``MIN_INTERVAL_CELLS``, ``MIN_INTERVAL_SEEDS``, ``NOISE_ALPHA``, ``PREMISE_ALPHA``
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
  n_resamples=999, min_interval=8, with_ratio_model=False) -> DataFrame``
                                                        Tables 1-3, tidy
- ``spearman_tests_all(frame, metrics=METRICS, **kwargs) -> DataFrame``
- ``seed_tests(frame, metric=..., **kwargs) -> DataFrame``  Tables 1-3 of each seed alone
- ``seed_summary(frame, metrics=METRICS) -> DataFrame``  mean, SD, n over seeds per cell
- ``adjust_pvalues(tests) -> DataFrame``                Holm, BH and BY columns
- ``multiple_testing_summary(tests) -> DataFrame``      significant results surviving them
- ``noise_floor(frame, metric=...) -> DataFrame``       one-way ANOVA across cells, ICC
- ``direction_summary(tests) -> DataFrame``             does the paper's sign hold?
- ``premise_check(frame, train_accuracy_threshold=0.99, alpha=0.05,
  include_diverged=True, metric=PAPER_METRIC) -> DataFrame``   trained to ~zero error,
  equally well? (with the direction of the confound, and small last batches)
- ``ratio_model(frame, metric=..., confidence=0.95, alpha=0.05) -> DataFrame``
  does only the ratio matter? beta_BS, beta_LR and the test of their sum = 0
- ``selection_inflation(frame) -> DataFrame``          what choosing the kept epoch adds
  to the test accuracy (kept minus final; test- minus validation-selected), vs the ratio

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
their status; ``scc``, ``p_value`` -- the paper's test; ``pvalue_method`` --
``"asymptotic"``, ``"exact (120 permutations)"``, ``"monte-carlo (9999 resamples)"``
...; ``alpha``; ``significant`` -- the report's verdict, ``p_perm < alpha``;
``reason`` -- ``None`` or why there is no coefficient (``"fewer than 3 finished cells
(n=2)"``, ``"variable is constant"``, ``"metric is constant"``).

Then, beyond the paper (see "Statistics" below):

``p_perm``, ``p_perm_method`` -- the permutation p-value of the verdict (Tables 1-2:
the group's cells permuted, ``"exact (24 permutations)"`` or ``"monte-carlo (9999
permutations)"``; Table 3: the grid's rows and columns, ``"... permutations of rows
and columns"``); ``min_p`` -- the smallest p-value that test can give the group,
``can_reach`` -- ``min_p < alpha`` (None without a coefficient); ``significant_paper``
-- the paper's verdict, ``p_value < alpha``; ``n_runs`` -- finished runs behind the n
cells; ``n_seeds`` -- seeds among them; ``seeds_tested``, ``seed_scc_min``,
``seed_scc_max``, ``seed_scc_sd`` -- the coefficient of each seed alone: how many
seeds have one, their range (the report's "range of 2 seeds") and SD (NaN with one
seed); ``confidence`` -- the interval's level (0.95); ``ci_low``, ``ci_high`` -- the
jackknife interval over seeds, ``ci_method`` (``"jackknife over 5 seeds, t(4)"``),
``ci_reason`` why there is none (``"two seeds: the range of their coefficients, not
an interval (it needs 3 or more seeds)"``, ``"fewer than 8 cells for an interval
(n=4)"``); ``family`` -- the family of the adjusted p-values; ``p_holm``, ``p_bh``,
``p_by`` -- Holm, Benjamini-Hochberg and Benjamini-Yekutieli over it, ``p_holm_all``,
``p_bh_all``, ``p_by_all`` -- over every test of the metric in the frame; ``slope``,
``slope_low``, ``slope_high`` -- the Theil-Sen slope of the metric (the cells' means)
against log2 of the variable, i.e. the change per doubling, in the metric's units,
with its jackknife interval over seeds; on Table 3 rows with ``with_ratio_model``,
``ratio_model`` (its method), ``beta_bs``, ``beta_lr``, ``beta_sum`` with
``_low``/``_high`` and ``p_ratio`` (:func:`ratio_model`).

Groups are defined by *all* rows of the frame (pending ones too), so a partial
study yields as many tests as the finished one will, with a reason on those that
cannot be computed yet: the paper's 2 models x 2 datasets x 20 x 20 grid always
gives 4 x (20 + 20 + 1) = 164 rows per metric.

Statistics
----------
Every interval and verdict here is measured by ``scripts/bench_calibration.py`` on
simulated grids with a known truth, under the noise this design has (seeds shared
along a row or a column of the grid): the README shows its table.

*Seeds are replicates.* A cell trained with several seeds is one point of a test: its
metric is averaged over its finished seeds and the coefficient is computed on those
means (n = cells). With one seed this is exactly the paper's test. Pooling the runs
counted each cell once per seed and made p-values too small (pseudo-replication).

*Verdicts.* A permutation p-value decides: it keeps its level on this design, where
the paper's t approximation does not (for Table 3 it treats 400 cells as independent
when a seed lifts whole rows and columns; at n = 20 it is also a little
anti-conservative near 0.005). The paper's p-value stays beside it. A group whose
permutation test cannot reach alpha (four cells: 0.083 at best) says so.

*One interval, over seeds.* Seeds are the independent draws of a study; the jackknife
over seeds with t(k - 1) covers the coefficient the grid gives with k seeds (on
average over draws of the seeds) at its rate from three seeds. Two seeds give their
range, never an interval; one seed gives none (seed noise cannot be measured). No
interval resamples cells: cells are a fixed design, and the bootstrap over cells (or
over rows and columns) answers another question and misses its rate here.

*Multiple testing.* Holm (family-wise error), Benjamini-Hochberg and
Benjamini-Yekutieli (false discovery rate; BY under any dependence) adjust ``p_perm``
over each family: Tables 1-2, one grid's table; Table 3, the table's tests across
grids, as the paper prints it; and over all tests of a metric.

*Effect size, noise floor, the ratio.* ``slope`` says how many accuracy points a
doubling costs, beside the SCC that says only how consistently; :func:`noise_floor`
tests whether the cells differ by more than seed noise (one-way ANOVA, ICC);
:func:`ratio_model` tests whether batch size and learning rate act only through their
ratio.
"""

from __future__ import annotations

import inspect
import itertools
import math
import warnings
import zlib
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

import numpy as np
import pandas as pd

from kerasgen.inference import MIN_BOOTSTRAP_CELLS  # noqa: F401 (public name)
from kerasgen.vocabulary import (
    DIVERGED,
    DONE,
    FINISHED,
    GROWING_METRICS,
    METRIC_SHORT,
    METRICS,
    PAPER_METRIC,
    metric_amount,
    underfit_sign,
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
    # the verdict's p-value: permutations (Table 3: of rows and columns)
    "p_perm", "p_perm_method", "min_p", "can_reach", "significant_paper",
    # seeds as replicates
    "n_runs", "n_seeds", "seeds_tested", "seed_scc_min", "seed_scc_max", "seed_scc_sd",
    # the interval (over seeds)
    "confidence", "ci_low", "ci_high", "ci_method", "ci_reason",
    # multiple testing
    "family", "p_holm", "p_bh", "p_by", "p_holm_all", "p_bh_all", "p_by_all",
    # effect size
    "slope", "slope_low", "slope_high",
    # does only the ratio matter? (Table 3 rows: the grid's ratio model)
    "ratio_model", "beta_bs", "beta_bs_low", "beta_bs_high", "beta_lr", "beta_lr_low",
    "beta_lr_high", "beta_sum", "beta_sum_low", "beta_sum_high", "p_ratio",
]

SEED_SUMMARY_COLUMNS: list[str] = [
    "study", "model", "dataset", "batch_size", "learning_rate", "ratio", "metric",
    "n", "n_diverged", "mean", "sd", "values",
]

NOISE_COLUMNS: list[str] = [
    "study", "model", "dataset", "metric", "n_cells", "n_seeds", "n_replicated",
    "seed_sd", "mean_min", "mean_max", "mean_range", "range_over_sd",
    "anova_f", "anova_df_cells", "anova_df_seeds", "anova_p", "icc", "above_noise",
    "summary",
]

MULTIPLE_TESTING_COLUMNS: list[str] = [
    "metric", "tests", "tested", "alpha", "significant", "expected_by_chance",
    "cannot_reach", "holm_table", "bh_table", "by_table", "holm_all", "bh_all", "by_all",
]

RATIO_MODEL_COLUMNS: list[str] = [
    "study", "model", "dataset", "metric", "n_cells", "n_runs", "n_seeds", "method",
    "confidence", "beta_bs", "beta_bs_low", "beta_bs_high", "beta_lr", "beta_lr_low",
    "beta_lr_high", "beta_sum", "beta_sum_low", "beta_sum_high", "p_ratio", "alpha",
    "converged", "reason", "summary",
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
    "metric", "metric_ratio_scc", "metric_ratio_p", "partial_scc", "alpha",
    "fit_trend", "confound", "small_last_batches", "ok", "warnings", "notes",
]

_KEYS = ["study", "model", "dataset"]
_SIG_DIGITS = 12


SMALL_N = 10
"""Below this many cells scipy's asymptotic p-value is unreliable (and 0 when rho = +-1)."""

MIN_INTERVAL_CELLS = MIN_BOOTSTRAP_CELLS
"""Fewest cells a coefficient gets an interval from: Spearman's rho of four cells takes
eleven values, and the jackknife over seeds of so discrete a statistic misses its rate
(scripts/bench_calibration.py)."""

MIN_INTERVAL_SEEDS = 3
"""Fewest seeds behind an interval: the jackknife over seeds with t(k - 1); two seeds give
the range of their two coefficients, never a "95 % CI"."""

NOISE_ALPHA = 0.05
"""Level of the noise floor's one-way ANOVA ("the cells differ by more than seed noise")."""

PREMISE_ALPHA = 0.05
"""Level of the premise check's tests of a trend in fit: a check for a confound should
catch one at p = 0.08 rather than wait for the discovery threshold 0.005."""

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


def _by_grid(done: pd.DataFrame) -> "dict[tuple[str, str, str], pd.DataFrame]":
    """The finished runs of each (study, model, dataset), split once (filtering the
    frame per grid would cost a pass over every run for each grid)."""
    return {tuple(str(k) for k in key): part
            for key, part in done.groupby(_KEYS, sort=False)}


def _runs_of(grids: dict, key: tuple[str, str, str], like: pd.DataFrame) -> pd.DataFrame:
    return grids.get(key, like.iloc[0:0])


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
    alpha: float,
    min_cells: int,
    permutations: int,
    seed_parts: tuple[int, ...],
    intervals: bool,
    confidence: float,
    min_interval: int,
    constant_design: bool,
    layout: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, object]:
    """Every number of one test: the coefficient of the cells' seed means (the paper's
    test with one seed) with the paper's p-value and the permutation p-value the verdict
    uses, its interval over seeds, the per-seed coefficients and the Theil-Sen slope
    against log2 of the variable. ``layout`` (Table 3): each cell's row and column in the
    grid and the grid's variable as a rows x columns matrix, for the permutation of rows
    and columns."""
    from kerasgen import inference

    nan = float("nan")
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
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
        "p_perm": nan, "p_perm_method": "none", "min_p": nan, "can_reach": None,
    }
    if reason is None:
        rng = inference.make_rng((*seed_parts, 3))
        if layout is None:
            p, method = inference.permutation_pvalue(x, means, permutations, rng,
                                                     max_exact=MAX_EXACT_N)
            smallest = inference.smallest_pvalue(x, permutations, max_exact=MAX_EXACT_N)
        else:
            rows, cols, grid_x = layout
            grid_y = np.full(grid_x.shape, np.nan)
            grid_y[rows, cols] = means
            p, method = inference.grid_permutation_pvalue(grid_x, grid_y, permutations, rng)
            smallest = inference.grid_smallest_pvalue(grid_x, np.isfinite(grid_y),
                                                      permutations)
        out.update({"p_perm": p, "p_perm_method": method, "min_p": smallest,
                    "can_reach": bool(smallest < alpha)})
    out["significant"] = bool(reason is None and math.isfinite(out["p_perm"])  # type: ignore
                              and out["p_perm"] < alpha)  # type: ignore[operator]
    out["significant_paper"] = bool(reason is None and math.isfinite(result.p_value)
                                    and result.p_value < alpha)
    no_test = f"no coefficient ({reason})" if reason else None
    k = seeds_with_runs
    if reason is not None or not intervals:
        ci = inference.Interval.none(no_test or "intervals not computed")
        slope = (nan, nan, nan)
    else:
        positive = bool((x > 0).all())
        if k < MIN_INTERVAL_SEEDS:
            ci = inference.Interval.none(
                "one seed: seed noise cannot be measured, so no interval (it needs "
                f"{MIN_INTERVAL_SEEDS} or more seeds)" if k <= 1 else
                f"two seeds: the range of their coefficients, not an interval (it needs "
                f"{MIN_INTERVAL_SEEDS} or more seeds)")
        elif result.n < min_interval:
            ci = inference.Interval.none(f"fewer than {min_interval} cells for an "
                                         f"interval (n={result.n})")
        else:
            ci = inference.seeds_jackknife(x, matrix, confidence, MIN_INTERVAL_SEEDS)
        point = (inference.theil_sen(np.log2(x), means, confidence)[0] if positive
                 else nan)
        slope_ci = (inference.seeds_jackknife_of(
            lambda m: _theil_sen_slope(np.log2(x), m), matrix, confidence,
            MIN_INTERVAL_SEEDS) if ci.reason is None and positive else None)
        slope = (point, slope_ci.low if slope_ci else nan, slope_ci.high if slope_ci else nan)
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
        "ci_low": ci.low, "ci_high": ci.high, "ci_method": ci.method,
        "ci_reason": ci.reason,
        "seeds_tested": len(per_seed),
        "seed_scc_min": min(per_seed) if per_seed else nan,
        "seed_scc_max": max(per_seed) if per_seed else nan,
        "seed_scc_sd": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else nan,
        "slope": slope[0], "slope_low": slope[1], "slope_high": slope[2],
    })
    return out


def _theil_sen_slope(x: np.ndarray, y: np.ndarray) -> float:
    """The Theil-Sen slope of y on x (cells whose y is NaN left out)."""
    from scipy.stats import theilslopes

    ok = np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0:
        return float("nan")
    return float(theilslopes(y[ok], x[ok]).slope)


def family_of(table: int) -> str:
    """The family a test's adjusted p-values are computed over, in words."""
    return ("the table: every grid's Table 3" if int(table) == 3
            else "the grid's table")


def adjust_pvalues(tests: pd.DataFrame) -> pd.DataFrame:
    """A copy of a tests frame with adjusted p-values of the verdict's p-value
    (``p_perm``; ``p_value`` where a frame lacks it): ``p_holm`` (Holm-Bonferroni,
    family-wise error), ``p_bh`` (Benjamini-Hochberg, false discovery rate) and
    ``p_by`` (Benjamini-Yekutieli, false discovery rate under any dependence: the tests
    of a grid share its cells) over each test's *family* (``family``): for Tables 1 and
    2 one table of one grid and metric (the 20 tests of Table 1 of ResNet-110 on
    CIFAR-10), for Table 3 the table itself, every grid's whole-grid test of the metric,
    as the paper prints it; and ``p_holm_all`` / ``p_bh_all`` / ``p_by_all`` over every
    test of the metric in the frame (a report's 164). Tests without a p-value are not
    counted in a family."""
    from kerasgen import inference

    out = tests.copy()
    if out.empty:
        for col in ("family", "p_holm", "p_bh", "p_by", "p_holm_all", "p_bh_all", "p_by_all"):
            out[col] = pd.Series(dtype=float)
        return out
    column = "p_perm" if "p_perm" in out.columns else "p_value"
    p = pd.to_numeric(out[column], errors="coerce").astype(float)
    table = pd.to_numeric(out["table"], errors="coerce")
    grid = out["study"].astype(str) + "\0" + out["model"].astype(str) + "\0" + \
        out["dataset"].astype(str)
    family = np.where(table == 3, "", grid)
    keys = [pd.Series(family, index=out.index), out["metric"], out["table"]]
    out["family"] = [family_of(t) for t in table]
    for name, adjust in (("holm", inference.holm), ("bh", inference.benjamini_hochberg),
                         ("by", inference.benjamini_yekutieli)):
        out[f"p_{name}"] = p.groupby(keys, sort=False).transform(adjust)
        out[f"p_{name}_all"] = p.groupby(out["metric"], sort=False).transform(adjust)
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
    min_interval: int = MIN_INTERVAL_CELLS,
    with_ratio_model: bool = False,
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
    is exactly the paper's test, and ``p_value`` is the paper's p-value (``pvalue``:
    asymptotic from 10 cells, as the paper; see :func:`spearman`).

    The verdict: ``significant`` is ``p_perm < alpha`` (the paper uses 0.005), where
    ``p_perm`` is a permutation p-value that keeps its level on this design: Tables 1-2
    permute the cells of the group (exact up to 8 cells, else Monte Carlo with
    ``permutations`` draws), Table 3 permutes the grid's rows (batch sizes) and columns
    (learning rates), since a seed may lift a whole row or column and the paper's
    p-value, which counts 400 independent cells, then rejects far too often.
    ``significant_paper`` keeps the paper's verdict (``p_value < alpha``). ``min_p`` is
    the smallest p-value the permutation test can give the group and ``can_reach``
    whether it is below alpha: four cells can never reach 0.005 (smallest p 0.083).
    ``p_holm``/``p_bh``/``p_by`` and the ``_all`` columns adjust ``p_perm`` over each
    test's family and over every test of the metric (:func:`adjust_pvalues`).

    ``intervals`` (default True): ``ci_low``/``ci_high``, the jackknife over seeds with
    t(k - 1) at ``confidence`` (:func:`kerasgen.inference.seeds_jackknife`), with three
    or more seeds and ``min_interval`` or more cells; otherwise ``ci_reason`` says why
    there is none (with two seeds, ``seed_scc_min``/``seed_scc_max`` hold the range of
    the two coefficients). ``slope`` is the Theil-Sen slope of the metric against log2
    of the variable, ``slope_low``/``slope_high`` its jackknife interval over seeds
    (same conditions). ``n_resamples`` is kept for callers of the bootstrap intervals
    this function no longer prints (:mod:`kerasgen.inference` keeps them; the harness
    scripts/bench_calibration.py measures why). ``with_ratio_model`` (default False) fills
    the Table 3 rows' ``beta_*`` and ``p_ratio`` columns with :func:`ratio_model`.

    Monte Carlo p-values are seeded from ``seed`` and the group's identity, so each row
    is reproducible on its own. Returns a frame with columns :data:`TEST_COLUMNS`,
    sorted by study, model, dataset, table, group value.
    """
    if pvalue not in PVALUE_METHODS:
        raise ValueError(f"pvalue must be one of {PVALUE_METHODS}, not {pvalue!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence!r}")
    del n_resamples  # no printed interval is a bootstrap any more
    if frame.empty:
        return pd.DataFrame(columns=TEST_COLUMNS)
    all_cells = normalize(_with_metric(frame, metric))
    done = finished_cells(all_cells, metric, include_diverged)
    grids = _by_grid(done)
    rows: list[dict[str, object]] = []
    for key, grid in all_cells.groupby(_KEYS, sort=True):
        study, model, dataset = (str(k) for k in key)
        grid_done = _runs_of(grids, (study, model, dataset), done)
        seeds = _seed_matrix(grid_done, metric)
        design = grid.drop_duplicates(_CELL)
        layout = _grid_layout(design, seeds.cells)
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
                    pvalue=pvalue, alpha=alpha, min_cells=min_cells,
                    permutations=permutations,
                    seed_parts=(seed, _stable_seed(study, model, dataset, table, gv, metric)),
                    intervals=intervals, confidence=confidence, min_interval=min_interval,
                    constant_design=_design_constant(cells, variable),
                    layout=layout if group_by is None else None,
                )
                rows.append({
                    "study": study, "model": model, "dataset": dataset, "table": table,
                    "variable": variable, "group_by": group_by, "group_value": gv,
                    "metric": metric, "n_diverged": int(picked["diverged"].sum()),
                    "n_total": int(len(cells)), "alpha": float(alpha),
                    "n_runs": int(picked["runs"].sum()),
                    **stats_,
                })
    out = adjust_pvalues(pd.DataFrame(rows)).reindex(columns=TEST_COLUMNS)
    if with_ratio_model:
        models = ratio_model(frame, metric=metric, include_diverged=include_diverged,
                             confidence=confidence)
        out = _with_ratio_model(out, models)
    # Keep ints as ints (batch sizes), floats as floats and None as None.
    for col in ("group_by", "group_value", "reason", "ci_reason", "can_reach"):
        out[col] = pd.Series([r[col] for r in rows], dtype=object, index=out.index)
    return out.reset_index(drop=True)


def _grid_layout(design: pd.DataFrame, cells: pd.DataFrame
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each finished cell's row (batch size) and column (learning rate) in the grid of
    ``design``, and the ratio of every (row, column) as a matrix."""
    bss = np.sort(design["batch_size"].unique())
    lrs = np.sort(design["learning_rate"].unique())
    rows = np.searchsorted(bss, cells["batch_size"].to_numpy())
    cols = np.searchsorted(lrs, cells["learning_rate"].to_numpy())
    ratio = np.array([[round_sig(b / lr) for lr in lrs] for b in bss], dtype=float)
    return rows, cols, ratio.reshape(len(bss), len(lrs))


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
    ``tested`` (with a p-value), ``significant`` (the report's verdict, p_perm <
    alpha), ``expected_by_chance`` (tested x alpha: the significant results expected if
    no effect existed anywhere), ``cannot_reach`` (tested groups whose permutation test
    cannot give p < alpha at all), and how many stay below alpha after Holm-Bonferroni,
    Benjamini-Hochberg and Benjamini-Yekutieli within each test's family
    (``holm_table``, ``bh_table``, ``by_table``; see :func:`adjust_pvalues`) and over
    every test of the metric (``holm_all``, ``bh_all``, ``by_all``)."""
    if tests.empty:
        return pd.DataFrame(columns=MULTIPLE_TESTING_COLUMNS)
    if "p_holm" not in tests.columns or "p_by" not in tests.columns:
        tests = adjust_pvalues(tests)
    rows = []
    for metric, part in tests.groupby("metric", sort=False):
        alpha = float(part["alpha"].iloc[0])
        column = "p_perm" if "p_perm" in part.columns else "p_value"
        tested = int(pd.to_numeric(part[column], errors="coerce").notna().sum())

        def below(column: str, part: pd.DataFrame = part, alpha: float = alpha) -> int:
            return int((pd.to_numeric(part[column], errors="coerce") < alpha).sum())

        unreachable = (int((part["can_reach"] == False).sum())  # noqa: E712 (object column)
                       if "can_reach" in part.columns else 0)
        rows.append({
            "metric": metric, "tests": int(len(part)), "tested": tested, "alpha": alpha,
            "significant": int(part["significant"].astype(bool).sum()),
            "expected_by_chance": tested * alpha, "cannot_reach": unreachable,
            "holm_table": below("p_holm"), "bh_table": below("p_bh"),
            "by_table": below("p_by"), "holm_all": below("p_holm_all"),
            "bh_all": below("p_bh_all"), "by_all": below("p_by_all"),
        })
    return pd.DataFrame(rows, columns=MULTIPLE_TESTING_COLUMNS)


# --------------------------------------------------------------------------- noise floor

def _noise_sentence(metric: str, n_cells: int, n_rep: int, sd: float, spread: float,
                    f: float, df: tuple[int, int], p: float, icc: float) -> str:
    label = METRIC_SHORT.get(metric, metric)
    if n_cells == 0:
        return f"No finished cells yet, so no noise floor for the {label}."
    if n_rep == 0:
        return (f"One seed per cell, so the seed-to-seed noise of the {label} cannot be "
                f"measured: nothing says how much of the {metric_amount(metric, spread)} "
                f"spread of the {n_cells} cells is noise (run two or more seeds).")
    sizes = (f"seed-to-seed SD {metric_amount(metric, sd)} (pooled over {n_rep} cells) "
             f"against a range of {metric_amount(metric, spread)} across the {n_cells} "
             "cell means")
    if not math.isfinite(p):
        return (f"Every seed gave the same {label} in each cell ({sizes}): the pattern "
                "is not seed noise." if sd == 0.0 else
                f"No test of the noise floor ({sizes}).")
    test = f"one-way ANOVA across cells F({df[0]}, {df[1]}) = {f:.2f}, {format_p_eq(p)}"
    share = (f"{max(icc, 0.0):.0%} of the run-to-run variance of the {label} lies between "
             f"cells (intraclass correlation {icc:.2f})")
    if p < NOISE_ALPHA:
        verdict = (f"The cells differ by more than seed noise ({test}, below "
                   f"{NOISE_ALPHA:g}): {share}")
    else:
        verdict = (f"The cells do not differ by more than seed noise ({test}, not below "
                   f"{NOISE_ALPHA:g}): {share}, so the grid's pattern may be noise")
    return f"{verdict}; {sizes}."


def noise_floor(
    frame: pd.DataFrame, metric: str = PAPER_METRIC, include_diverged: bool = True
) -> pd.DataFrame:
    """The noise floor of each grid: do the cells differ by more than seed noise?

    A one-way ANOVA across the grid's cells (``scipy.stats.f_oneway``; a cell's runs
    are its group) tests whether the cell means differ by more than the seed-to-seed
    noise, at :data:`NOISE_ALPHA` (``above_noise``); the intraclass correlation
    ICC(1) = (MSB - MSW) / (MSB + (n0 - 1) MSW) says which share of the run-to-run
    variance lies between cells. Needs two or more seeds in some cell.

    Columns :data:`NOISE_COLUMNS`: ``n_cells`` (cells with a finished run), ``n_seeds``
    (seeds with a finished run), ``n_replicated`` (cells with two or more finished
    seeds), ``seed_sd`` (the pooled within-cell SD, sqrt(MSW); NaN with one seed),
    ``mean_min`` / ``mean_max`` / ``mean_range`` of the cell means,
    ``range_over_sd`` (descriptive: the range grows with the number of cells even for
    pure noise, so it is no test), ``anova_f``, ``anova_df_cells``, ``anova_df_seeds``,
    ``anova_p``, ``icc``, ``above_noise`` and a plain ``summary``."""
    from scipy import stats

    if frame.empty:
        return pd.DataFrame(columns=NOISE_COLUMNS)
    all_cells = normalize(_with_metric(frame, metric))
    done = finished_cells(all_cells, metric, include_diverged)
    grids = _by_grid(done)
    nan = float("nan")
    rows = []
    for key in all_cells.groupby(_KEYS, sort=True).groups:
        study, model, dataset = (str(k) for k in key)
        runs = _runs_of(grids, (study, model, dataset), done)
        per_cell = runs.groupby(_CELL, sort=True)[metric].agg(["mean", "var", "count"])
        replicated = per_cell[per_cell["count"] >= 2]
        n_cells = int(len(per_cell))
        total = int(per_cell["count"].sum()) if n_cells else 0
        df_cells, df_seeds = n_cells - 1, total - n_cells
        f = p = icc = nan
        if n_cells >= 2 and df_seeds > 0:
            groups = [g.to_numpy(dtype=float) for _, g in runs.groupby(_CELL, sort=True)[metric]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = stats.f_oneway(*groups)
            f, p = float(res.statistic), float(res.pvalue)
            counts = per_cell["count"].to_numpy(dtype=float)
            msw = float(((counts - 1) * per_cell["var"].fillna(0.0)).sum()) / df_seeds
            grand = float(runs[metric].mean())
            msb = float((counts * (per_cell["mean"] - grand) ** 2).sum()) / df_cells
            n0 = (total - float((counts ** 2).sum()) / total) / df_cells
            icc = (msb - msw) / (msb + (n0 - 1) * msw) if msb + (n0 - 1) * msw > 0 else nan
        dof = float((replicated["count"] - 1).sum())
        sd = (math.sqrt(float(((replicated["count"] - 1) * replicated["var"]).sum()) / dof)
              if dof else nan)
        low = float(per_cell["mean"].min()) if n_cells else nan
        high = float(per_cell["mean"].max()) if n_cells else nan
        spread = high - low
        times = spread / sd if math.isfinite(sd) and sd > 0 else nan
        n_seeds = int(runs["seed"].nunique())
        rows.append({
            "study": study, "model": model, "dataset": dataset, "metric": metric,
            "n_cells": n_cells, "n_seeds": n_seeds, "n_replicated": int(len(replicated)),
            "seed_sd": sd, "mean_min": low, "mean_max": high, "mean_range": spread,
            "range_over_sd": times, "anova_f": f, "anova_df_cells": df_cells,
            "anova_df_seeds": df_seeds, "anova_p": p, "icc": icc,
            "above_noise": bool(math.isfinite(p) and p < NOISE_ALPHA),
            "summary": _noise_sentence(metric, n_cells, int(len(replicated)), sd, spread,
                                       f, (df_cells, df_seeds), p, icc),
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


def _verdict(tested: int, sig_expected: int, sig_against: int, unreachable: int = 0) -> str:
    if tested == 0:
        return "untested"
    if unreachable == tested:
        return "cannot reach alpha"
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
    against; ``not significant``; ``cannot reach alpha`` = no tested group has enough
    cells for its permutation test to give p < alpha; ``mixed``; ``partly reversed``;
    ``reversed``; ``weak``; ``untested``), ``holds`` (verdict is holds or mostly holds)
    and a one-line ``summary`` in plain words.
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
        unreachable = (int(((grp["can_reach"] == False) & has).sum())  # noqa: E712
                       if "can_reach" in grp.columns else 0)
        verdict = _verdict(tested, sig_exp, sig_against, unreachable)
        alpha = float(grp["alpha"].iloc[0])
        word = "negative" if sign < 0 else "positive"
        what = {
            "batch_size": "batch size (within each learning rate)",
            "learning_rate": "learning rate (within each batch size)",
            "ratio": "batch size / learning rate (whole grid)",
        }[str(variable)]
        label = METRIC_SHORT.get(str(metric), str(metric))
        p_col = "p_perm" if "p_perm" in grp.columns else "p_value"
        if tested == 0:
            summary = f"{label} vs {what}: no group has enough finished cells yet ({verdict})."
        elif table == 3:
            row = grp[has].iloc[0]
            summary = (
                f"{label} vs {what}: SCC {row['scc']:+.2f}, {format_p_eq(row[p_col])} "
                f"(n={int(row['n'])}), expected {word} -> {verdict}."
            )
        else:
            reach = (f"; {unreachable} cannot reach p < {alpha:g} (too few cells)"
                     if unreachable else "")
            summary = (
                f"{label} vs {what}: {tested}/{len(grp)} groups tested, {with_sign} {word}, "
                f"{sig_exp} significantly {word} and {sig_against} significantly the other way "
                f"(p<{alpha:g}{reach}) -> {verdict}."
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


def _ratio_trend(ratio: np.ndarray, column: np.ndarray, layout: tuple, permutations: int,
                 seed_parts: tuple[int, ...], min_cells: int) -> tuple[float, float]:
    """(Spearman's rho, the p-value of a permutation of the grid's rows and columns) of
    a per-cell quantity against the ratio; NaN where there is no coefficient."""
    from kerasgen import inference

    nan = float("nan")
    rows, cols, grid_x = layout
    ok = np.isfinite(column)
    res = spearman(ratio[ok], column[ok], pvalue="asymptotic", min_cells=min_cells)
    if res.reason is not None:
        return nan, nan
    y = np.full(grid_x.shape, np.nan)
    y[rows[ok], cols[ok]] = column[ok]
    p, _ = inference.grid_permutation_pvalue(grid_x, y, permutations,
                                             inference.make_rng(seed_parts))
    return res.scc, p


def premise_check(
    frame: pd.DataFrame,
    train_accuracy_threshold: float = 0.99,
    alpha: float = PREMISE_ALPHA,
    include_diverged: bool = True,
    min_cells: int = 3,
    metric: str = PAPER_METRIC,
    permutations: int = 999,
) -> pd.DataFrame:
    """Check the paper's premise: every cell trained to (almost) zero training error,
    equally well across the grid.

    Per (study, model, dataset), on the cells' means over their finished seeds (a cell
    counts once, whatever its seeds), of the clean training metrics at the kept epoch
    (``train_eval_accuracy``/``train_eval_loss``: a fixed training subset measured as
    the test set, the weights the cell is judged by); where a store lacks them, of
    Keras's running final metrics, with a warning saying so (``train_source``). Columns
    :data:`PREMISE_COLUMNS`: ``n`` cells (``n_diverged``: diverged runs among them),
    min/median/max of the cells' train accuracy and loss, how many cells are below
    ``train_accuracy_threshold``, the Spearman correlations of train loss, train
    accuracy and ``metric`` with the ratio, each with the p-value of a permutation of
    the grid's rows and columns (as Table 3's verdict: it keeps its level when a seed
    lifts a whole row or column), ``partial_scc`` (the metric against the ratio with the
    clean train loss held fixed: does the ratio still predict once under-training is
    accounted for?), and the batch sizes whose epoch ends with a batch smaller than a
    quarter of the batch size (``small_last_batches``, batch-norm networks only).

    A trend in fit (``fit_trend``) is a train loss or accuracy correlated with the ratio
    at ``alpha`` (0.05: a check for a confound should not wait for the discovery
    threshold). It is a ``confound`` when it would move ``metric`` the way ``metric``
    moves: under-fitting lowers accuracy but *shrinks* a generalization gap
    (:func:`kerasgen.vocabulary.underfit_sign`), so worse fit at large ratios explains
    an accuracy falling with the ratio, and a gap falling with it, never a gap rising.

    ``warnings`` (``ok`` is True when there are none), in plain words, each from the
    criterion that fired: under-trained cells; the confound; small last batches, with
    their weight in batch norm's moving averages; diverged runs; missing clean
    metrics; no finished cells. ``notes``: a trend in fit that cannot explain the
    metric's trend."""
    from kerasgen import inference

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
    grids = _by_grid(done)
    rows: list[dict[str, object]] = []
    nan = float("nan")
    label = METRIC_SHORT.get(metric, metric)
    what = "clean train" if clean else "running train"
    for key, grid in all_cells.groupby(_KEYS, sort=True):
        study, model, dataset = (str(k) for k in key)
        runs = _runs_of(grids, (study, model, dataset), done)
        n_div = int((runs["status"] == DIVERGED).sum())
        values = pd.DataFrame({
            "acc": runs[acc_col].to_numpy(dtype=float),
            "loss": pd.to_numeric(runs[loss_col], errors="coerce").to_numpy(dtype=float),
            "target": pd.to_numeric(runs[metric], errors="coerce").to_numpy(dtype=float),
            "batch_size": runs["batch_size"].to_numpy(),
            "learning_rate": runs["learning_rate"].to_numpy()})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = values.groupby(_CELL, sort=True).mean().reset_index()
        n = int(len(means))
        acc = means["acc"].to_numpy(dtype=float)
        loss = means["loss"].to_numpy(dtype=float)
        target = means["target"].to_numpy(dtype=float)
        rows_, cols_, grid_x = _grid_layout(grid.drop_duplicates(_CELL), means)
        ratio = grid_x[rows_, cols_] if n else np.empty(0)
        seed_parts = (_stable_seed(study, model, dataset, "premise"),)

        layout = (rows_, cols_, grid_x)
        (loss_scc, loss_p), (acc_scc, acc_p), (target_scc, target_p) = (
            _ratio_trend(ratio, column, layout, permutations, (*seed_parts, part), min_cells)
            for part, column in enumerate((loss, acc, target)))
        partial = inference.partial_spearman(ratio, target, loss) if n >= 4 else nan
        small = _small_last_batches(grid, model, dataset)
        warnings_: list[str] = []
        notes: list[str] = []

        def stat(fn, values: np.ndarray) -> float:
            values = values[np.isfinite(values)]
            return float(fn(values)) if len(values) else nan

        if n == 0:
            warnings_.append("no finished cells with a train accuracy yet")
        if not clean and n:
            warnings_.append(
                "the clean training metrics are missing (the store was written before "
                "kerasgen measured them), so this check uses Keras's running averages over "
                "the last epoch (augmented images, batch norm in training mode) and no gap "
                "is computed")
        below = int((acc < train_accuracy_threshold).sum())
        if below:
            warnings_.append(
                f"{below} of {n} cells are below {train_accuracy_threshold:.0%} {what} "
                f"accuracy (lowest {np.nanmin(acc):.3f}, a cell's mean over its seeds): the "
                "paper assumes every cell is trained to ~zero training error, so these "
                "cells are under-trained")
        # Which criteria fired, and which way the fit goes with the ratio (+1: worse).
        fired = []
        for name, scc, p, worse_sign in (("loss", loss_scc, loss_p, 1),
                                         ("accuracy", acc_scc, acc_p, -1)):
            if math.isfinite(p) and p < alpha:
                direction = "rises" if scc > 0 else "falls"
                fired.append((f"{what} {name} {direction} with batch size / learning rate "
                              f"(SCC {scc:+.2f}, {format_p_eq(p)})",
                              1 if np.sign(scc) == worse_sign else -1))
        fit_trend = bool(fired)
        worse = {d for _, d in fired}
        confound = False
        if fit_trend:
            text = " and ".join(t for t, _ in fired)
            target_text = (f"{label} vs the ratio: SCC {target_scc:+.2f}, "
                           f"{format_p_eq(target_p)}" if math.isfinite(target_scc)
                           else f"{label} vs the ratio: no coefficient")
            held = (f"; with the {what} loss held fixed the {label}'s partial SCC with the "
                    f"ratio is {partial:+.2f}" if math.isfinite(partial) else "")
            if len(worse) > 1:
                notes.append(f"{text}: the two criteria disagree about which cells fit "
                             f"better ({target_text})")
            else:
                direction = worse.pop()  # +1: large-ratio cells fit worse
                predicted = underfit_sign(metric) * direction
                where = "large" if direction > 0 else "small"
                if math.isfinite(target_scc) and np.sign(target_scc) == predicted:
                    confound = True
                    warnings_.append(
                        f"{text}: {where}-ratio cells fit the training set worse, and "
                        f"the {label} moves with the ratio as under-fitting would move it "
                        f"({target_text}), so its correlation with the ratio may measure "
                        f"under-training, not generalization{held}")
                else:
                    notes.append(
                        f"{text}: {where}-ratio cells fit the training set worse, but the "
                        f"{label} moves the other way from what under-fitting would do "
                        f"({target_text}), so under-training cannot explain its trend"
                        f"{held}")
        if small:
            sizes = ", ".join(f"{bs} (last batch {rest})" for bs, rest in small)
            from kerasgen.naming import BN_MOMENTUM

            warnings_.append(
                f"batch sizes {sizes} end each epoch with a batch of fewer than a quarter "
                f"of their images, whose batch-norm statistics weigh {1 - BN_MOMENTUM:.0%} "
                "in the moving averages the test uses; set training.last_batch = \"drop\" "
                "to train without it")
        if n_div:
            warnings_.append(
                f"{n_div} of {int(len(runs))} runs diverged; their metrics are from the last "
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
                "loss_ratio_scc": loss_scc,
                "loss_ratio_p": loss_p,
                "accuracy_ratio_scc": acc_scc,
                "accuracy_ratio_p": acc_p,
                "metric": metric,
                "metric_ratio_scc": target_scc,
                "metric_ratio_p": target_p,
                "partial_scc": partial,
                "alpha": float(alpha),
                "fit_trend": fit_trend,
                "confound": confound,
                "small_last_batches": small,
                "ok": not warnings_,
                "warnings": tuple(warnings_),
                "notes": tuple(notes),
            }
        )
    return pd.DataFrame(rows, columns=PREMISE_COLUMNS)


# --------------------------------------------------------------------------- the ratio


RATIO_MODEL_ONE_SEED = "mixed"
"""How :func:`ratio_model` fits a grid of one seed: ``"mixed"`` (the seed's row and
column effects as variance components) or ``"ols"`` (cells independent, miscalibrated
when a seed lifts rows or columns); see :func:`kerasgen.inference.fit_ratio_model`."""


def ratio_model(
    frame: pd.DataFrame,
    metric: str = PAPER_METRIC,
    include_diverged: bool = True,
    confidence: float = 0.95,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """Does only the ratio matter? Per (study, model, dataset), ``metric ~ log2(batch
    size) + log2(learning rate)`` over the grid's finished runs
    (:func:`kerasgen.inference.fit_ratio_model`: statsmodels MixedLM with a random
    intercept per seed (with two or more) and seed x batch-size and seed x learning-rate
    variance components, t on containment degrees of freedom). If the metric depended on
    batch size / learning rate
    alone, log2(BS) and log2(LR) would act with opposite coefficients: beta_BS =
    -beta_LR. Columns :data:`RATIO_MODEL_COLUMNS`: ``beta_bs``, ``beta_lr`` (change of
    the metric per doubling) and their sum with ``confidence`` intervals, ``p_ratio``
    (test of beta_BS + beta_LR = 0; below ``alpha`` the grid says more than the ratio
    matters), ``method``, ``converged``, ``reason`` (why there is no fit) and a
    ``summary`` in words."""
    from kerasgen import inference

    if frame.empty:
        return pd.DataFrame(columns=RATIO_MODEL_COLUMNS)
    all_cells = normalize(_with_metric(frame, metric))
    done = finished_cells(all_cells, metric, include_diverged)
    grids = _by_grid(done)
    rows = []
    for key in all_cells.groupby(_KEYS, sort=True).groups:
        study, model, dataset = (str(k) for k in key)
        runs = _runs_of(grids, (study, model, dataset), done)
        fit = inference.fit_ratio_model(
            runs[metric].to_numpy(dtype=float),
            np.log2(runs["batch_size"].to_numpy(dtype=float)),
            np.log2(runs["learning_rate"].to_numpy(dtype=float)),
            runs["seed"].to_numpy(), confidence, one_seed=RATIO_MODEL_ONE_SEED)
        n_cells = int(len(runs.drop_duplicates(_CELL)))
        rows.append({
            "study": study, "model": model, "dataset": dataset, "metric": metric,
            "n_cells": n_cells, "n_runs": fit.n_runs, "n_seeds": fit.n_seeds,
            "method": fit.method, "confidence": float(confidence),
            **{name: getattr(fit, name) for name in (
                "beta_bs", "beta_bs_low", "beta_bs_high", "beta_lr", "beta_lr_low",
                "beta_lr_high", "beta_sum", "beta_sum_low", "beta_sum_high", "p_ratio")},
            "alpha": float(alpha), "converged": fit.converged, "reason": fit.reason,
            "summary": _ratio_sentence(metric, fit, confidence, alpha),
        })
    return pd.DataFrame(rows, columns=RATIO_MODEL_COLUMNS)


def _ratio_sentence(metric: str, fit, confidence: float, alpha: float) -> str:
    label = METRIC_SHORT.get(metric, metric)
    if fit.reason is not None:
        return f"No model of the {label}: {fit.reason}."

    def amount(value: float) -> str:
        return metric_amount(metric, value, signed=True)

    def interval(low: float, high: float) -> str:
        unit = " points" if amount(low).endswith(" points") else ""
        return f"[{amount(low).removesuffix(unit)}, {amount(high).removesuffix(unit)}]{unit}"

    level = f"{confidence:.0%}"
    head = (f"Per doubling, the {label} changes by {amount(fit.beta_bs)} with batch size "
            f"({level} CI {interval(fit.beta_bs_low, fit.beta_bs_high)}) and by "
            f"{amount(fit.beta_lr)} with learning rate "
            f"({interval(fit.beta_lr_low, fit.beta_lr_high)}); their sum, 0 if only the "
            f"ratio mattered, is {amount(fit.beta_sum)} "
            f"({interval(fit.beta_sum_low, fit.beta_sum_high)}), {format_p_eq(fit.p_ratio)}")
    if fit.p_ratio < alpha:
        verdict = (f": batch size and learning rate do not act only through their ratio "
                   f"(p < {alpha:g}); doubling both would change the {label} by "
                   f"{amount(fit.beta_sum)}")
    else:
        verdict = (f": consistent with only the ratio mattering (p >= {alpha:g}), within "
                   f"the interval of the sum")
    note = "" if fit.converged else " (the fit did not fully converge: read it with care)"
    return head + verdict + note + f". Model: {fit.method}, {fit.n_runs} runs."


def _with_ratio_model(tests: pd.DataFrame, models: pd.DataFrame) -> pd.DataFrame:
    """Copy the grids' ratio models into their Table 3 rows."""
    out = tests.copy()
    out["ratio_model"] = out["ratio_model"].astype(object)
    columns = ["beta_bs", "beta_bs_low", "beta_bs_high", "beta_lr", "beta_lr_low",
               "beta_lr_high", "beta_sum", "beta_sum_low", "beta_sum_high", "p_ratio"]
    for row in models.itertuples(index=False):
        where = ((out["table"] == 3) & (out["study"] == row.study) & (out["model"] == row.model)
                 & (out["dataset"] == row.dataset))
        out.loc[where, "ratio_model"] = row.method
        for col in columns:
            out.loc[where, col] = getattr(row, col)
    return out


# --------------------------------------------------------------------------- selection

INFLATION_COLUMNS: list[str] = [
    "study", "model", "dataset", "best_metric", "n_cells",
    "kept_minus_final_mean", "kept_minus_final_median", "kept_minus_final_max",
    "kept_minus_final_scc", "kept_minus_final_p",
    "test_minus_val_mean", "test_minus_val_median", "test_minus_val_max",
    "test_minus_val_scc", "test_minus_val_p", "summary",
]


def selection_inflation(
    frame: pd.DataFrame, include_diverged: bool = True, permutations: int = 999,
    min_cells: int = 3,
) -> pd.DataFrame:
    """How much choosing the kept epoch lifts the test accuracy, per (study, model,
    dataset), on the cells' means over seeds:

    - ``kept_minus_final``: test accuracy at the kept epoch minus at the last epoch.
      Under the paper's rule (the epoch of highest *test* accuracy) it is never negative
      and part of it is selection on the test set itself;
    - ``test_minus_val`` (only where the kept epoch is chosen on validation images): the
      highest test accuracy of any epoch minus the test accuracy at the epoch the
      validation images chose, i.e. what the paper's test-selected rule would have added.

    For each: mean, median and largest over cells, and Spearman's rho against the ratio
    with the p-value of a permutation of the grid's rows and columns (an inflation that
    grows with the ratio would bias Table 3 by itself). Columns
    :data:`INFLATION_COLUMNS`, with a ``summary`` in words."""
    if frame.empty:
        return pd.DataFrame(columns=INFLATION_COLUMNS)
    nan = float("nan")
    all_cells = normalize(add_derived_metrics(frame))
    for col in ("final_test_accuracy", "best_test_accuracy"):
        if col not in all_cells.columns:
            all_cells[col] = np.nan
    done = finished_cells(all_cells, "test_accuracy", include_diverged)
    grids = _by_grid(done)
    rows = []
    for key, grid in all_cells.groupby(_KEYS, sort=True):
        study, model, dataset = (str(k) for k in key)
        runs = _runs_of(grids, (study, model, dataset), done)
        rule = best_metric_of(runs) if len(runs) else best_metric_of(grid)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = pd.DataFrame({
                "batch_size": runs["batch_size"].to_numpy(),
                "learning_rate": runs["learning_rate"].to_numpy(),
                "kept": pd.to_numeric(runs["test_accuracy"], errors="coerce").to_numpy(float),
                "final": pd.to_numeric(runs["final_test_accuracy"], errors="coerce"
                                       ).to_numpy(float),
                "best": pd.to_numeric(runs["best_test_accuracy"], errors="coerce"
                                      ).to_numpy(float),
            }).groupby(_CELL, sort=True).mean().reset_index()
        rows_, cols_, grid_x = _grid_layout(grid.drop_duplicates(_CELL), means)
        ratio = grid_x[rows_, cols_] if len(means) else np.empty(0)
        layout = (rows_, cols_, grid_x)
        seed_parts = (_stable_seed(study, model, dataset, "inflation"),)
        out: dict[str, object] = {"study": study, "model": model, "dataset": dataset,
                                  "best_metric": rule, "n_cells": int(len(means))}
        validated = rule is not None and rule.startswith("val_")
        for name, values, present in (
                ("kept_minus_final", (means["kept"] - means["final"]).to_numpy(), True),
                ("test_minus_val", (means["best"] - means["kept"]).to_numpy(), validated)):
            finite = values[np.isfinite(values)] if present else np.empty(0)
            scc, p = (_ratio_trend(ratio, values, layout, permutations,
                                   (*seed_parts, len(name)), min_cells)
                      if len(finite) else (nan, nan))
            out.update({
                f"{name}_mean": float(finite.mean()) if len(finite) else nan,
                f"{name}_median": float(np.median(finite)) if len(finite) else nan,
                f"{name}_max": float(finite.max()) if len(finite) else nan,
                f"{name}_scc": scc, f"{name}_p": p})
        out["summary"] = _inflation_sentence(out)
        rows.append(out)
    return pd.DataFrame(rows, columns=INFLATION_COLUMNS)


def _inflation_sentence(row: dict) -> str:
    if not row["n_cells"]:
        return "No finished cells yet."
    rule = row["best_metric"]
    words = {"test_accuracy": "the epoch of highest test accuracy (the paper's rule: chosen "
             "on the test set)", "test_loss": "the epoch of lowest test loss (chosen on the "
             "test set)", "val_accuracy": "the epoch of highest validation accuracy",
             "val_loss": "the epoch of lowest validation loss"}.get(str(rule), "the kept epoch")

    def trend(name: str) -> str:
        scc, p = row[f"{name}_scc"], row[f"{name}_p"]
        if not math.isfinite(scc):
            return "no coefficient with the ratio"
        grows = ("it grows with the ratio" if scc > 0 else "it shrinks as the ratio grows")
        return (f"SCC {scc:+.2f} with the ratio, {format_p_eq(p)}"
                + (f": {grows}, so it moves Table 3 by itself" if p < 0.05 else ""))

    text = (f"Kept epoch: {words}. Test accuracy at it minus at the last epoch: mean "
            f"{metric_amount('test_accuracy', row['kept_minus_final_mean'])}, median "
            f"{metric_amount('test_accuracy', row['kept_minus_final_median'])}, largest "
            f"{metric_amount('test_accuracy', row['kept_minus_final_max'])} over "
            f"{row['n_cells']} cells ({trend('kept_minus_final')}).")
    if math.isfinite(row["test_minus_val_mean"]):
        text += (" What choosing on the test set would add (highest test accuracy minus "
                 "the test accuracy at the validation-chosen epoch): mean "
                 f"{metric_amount('test_accuracy', row['test_minus_val_mean'])}, largest "
                 f"{metric_amount('test_accuracy', row['test_minus_val_max'])} "
                 f"({trend('test_minus_val')}).")
    elif rule in ("test_accuracy", "test_loss"):
        text += (" Part of it is selection on the test set itself; "
                 "training.validation_size with best_metric = \"val_accuracy\" measures "
                 "how much.")
    return text
