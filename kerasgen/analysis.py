"""Spearman analyses of a batch-size x learning-rate grid (He, Liu & Tao 2019, Section 4).

Pure functions over the frame returned by :func:`kerasgen.store.load_results` (one
row per cell).  Nothing here imports TensorFlow, Keras or matplotlib, and scipy is
imported lazily, so importing this module is cheap (the dashboard uses it live).

Public API (stable)
-------------------
- ``METRICS``, ``PAPER_METRIC``, ``PVALUE_METHODS``, ``TEST_COLUMNS``,
  ``DIRECTION_COLUMNS``, ``PREMISE_COLUMNS``            constants (metric names and
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
  min_cells=3, permutations=9999, seed=0) -> DataFrame``      Tables 1-3, tidy
- ``spearman_tests_all(frame, metrics=METRICS, **kwargs) -> DataFrame``
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
many of those diverged; ``n_total`` -- cells of the group in the frame whatever
their status; ``scc``, ``p_value``; ``pvalue_method`` -- ``"asymptotic"``,
``"exact (120 permutations)"``, ``"monte-carlo (9999 resamples)"`` ...;
``significant`` -- ``p_value < alpha``; ``alpha``; ``reason`` -- ``None`` or why
there is no coefficient (``"fewer than 3 finished cells (n=2)"``,
``"variable is constant"``, ``"metric is constant"``).

Groups are defined by *all* rows of the frame (pending ones too), so a partial
study yields as many tests as the finished one will, with a reason on those that
cannot be computed yet: the paper's 2 models x 2 datasets x 20 x 20 grid always
gives 4 x (20 + 20 + 1) = 164 rows per metric.
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

from kerasgen.vocabulary import (
    DIVERGED,
    DONE,
    FINISHED,
    GROWING_METRICS,
    METRIC_SHORT,
    METRICS,
    PAPER_METRIC,
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
    - ``batch_size`` becomes ``int``.
    """
    out = frame.copy()
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


def spearman_tests(
    frame: pd.DataFrame,
    metric: str = PAPER_METRIC,
    alpha: float = 0.005,
    pvalue: PValueMethod = "auto",
    include_diverged: bool = True,
    min_cells: int = 3,
    permutations: int = 9999,
    seed: int = 0,
) -> pd.DataFrame:
    """Spearman tests of Tables 1-3 of the paper for every (study, model, dataset).

    - Table 1: ``metric`` vs batch size within each learning rate;
    - Table 2: ``metric`` vs learning rate within each batch size;
    - Table 3: ``metric`` vs batch size / learning rate over the whole grid.

    Groups come from every row of ``frame`` (whatever its status); coefficients use
    only finished cells (:func:`finished_cells`).  Diverged cells count with the
    metric they reached before diverging unless ``include_diverged`` is False.
    ``significant`` is ``p_value < alpha`` (the paper uses 0.005).  Monte Carlo
    p-values are seeded from ``seed`` and the group's identity, so each row is
    reproducible on its own.  Returns a frame with columns :data:`TEST_COLUMNS`,
    sorted by study, model, dataset, table, group value.
    """
    if pvalue not in PVALUE_METHODS:
        raise ValueError(f"pvalue must be one of {PVALUE_METHODS}, not {pvalue!r}")
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
        for table, (variable, group_by) in TABLE_VARIABLE.items():
            if group_by is None:
                groups: list[tuple[object, pd.DataFrame, pd.DataFrame]] = [(None, grid, grid_done)]
            else:
                groups = [
                    (value, grid[grid[group_by] == value], grid_done[grid_done[group_by] == value])
                    for value in sorted(grid[group_by].unique())
                ]
            for value, cells, used in groups:
                used = used.sort_values(["batch_size", "learning_rate"], kind="mergesort")
                gv = _group_value(value, group_by)
                result = spearman(
                    used[variable].to_numpy(dtype=float),
                    used[metric].to_numpy(dtype=float),
                    pvalue=pvalue,
                    min_cells=min_cells,
                    permutations=permutations,
                    seed_parts=(seed, _stable_seed(study, model, dataset, table, gv, metric)),
                )
                rows.append(
                    {
                        "study": study,
                        "model": model,
                        "dataset": dataset,
                        "table": table,
                        "variable": variable,
                        "group_by": group_by,
                        "group_value": gv,
                        "metric": metric,
                        "n": result.n,
                        "n_diverged": int((used["status"] == DIVERGED).sum()),
                        "n_total": int(len(cells)),
                        "scc": result.scc,
                        "p_value": result.p_value,
                        "pvalue_method": result.method,
                        "alpha": float(alpha),
                        "significant": bool(
                            result.reason is None
                            and math.isfinite(result.p_value)
                            and result.p_value < alpha
                        ),
                        "reason": result.reason,
                    }
                )
    out = pd.DataFrame(rows, columns=TEST_COLUMNS)
    # Keep ints as ints (batch sizes), floats as floats and None as None.
    for col in ("group_by", "group_value", "reason"):
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
    accuracy and loss, how many cells are below ``train_accuracy_threshold``, the
    Spearman correlation (asymptotic p) of train loss, train accuracy and ``metric``
    with the ratio, and the batch sizes whose epoch ends with a batch smaller than a
    quarter of the batch size (``small_last_batches``, batch-norm networks only).

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
        finite_loss = np.isfinite(loss)
        loss_res = spearman(ratio[finite_loss], loss[finite_loss], min_cells=min_cells)
        acc_res = spearman(ratio, acc, min_cells=min_cells)
        finite_target = np.isfinite(target)
        target_res = spearman(ratio[finite_target], target[finite_target], min_cells=min_cells)
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
