"""Intervals, effect sizes and multiple-testing corrections for Spearman coefficients, on
plain arrays: what :mod:`kerasgen.analysis` applies to every test of Tables 1-3.

numpy at import; scipy inside the functions (the dashboard imports this module live).

- ``cells_interval(x, y, ...)``: a bootstrap interval of Spearman's rho over cells
  (``scipy.stats.bootstrap``, BCa): the (x, y) pairs are resampled with replacement;
- ``seeds_interval(x, values, ...)``: a bootstrap interval over seeds: whole seeds are
  resampled with replacement, every cell's mean is recomputed over the drawn seeds (a
  seed drawn twice counts twice), and rho is computed on those means (percentile);
- ``holm(p)``, ``benjamini_hochberg(p)``: adjusted p-values (NaN ignored);
- ``theil_sen(x, y, confidence)``: the Theil-Sen slope and its interval.

Every resampled coefficient is computed without re-ranking raw values: a bootstrap
resample is a vector of counts (how often each original point was drawn), and the
average rank of a tie group in the resample follows from the counts of the groups below
it, so one resample costs O(n) (``rankcounts``). The tests check each resampled
coefficient against ``scipy.stats.spearmanr`` of the explicit resample.
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

MIN_BOOTSTRAP_CELLS = 8
"""Fewest cells a bootstrap over cells is computed from: below it the resamples repeat so
few distinct cells that the interval says more about the resampling than the data."""


@dataclass(frozen=True)
class Interval:
    """A confidence interval, or why there is none (``low``/``high`` NaN, ``reason``)."""

    low: float
    high: float
    method: str
    reason: str | None = None

    @classmethod
    def none(cls, reason: str) -> "Interval":
        return cls(float("nan"), float("nan"), "none", reason)


def make_rng(parts: Iterable[int]) -> np.random.Generator:
    """A generator seeded from integers (a test's identity): reproducible per test."""
    return np.random.default_rng(np.random.SeedSequence([int(p) for p in parts]))


def _rng_kwargs(function: Callable, rng: np.random.Generator) -> dict:
    """``rng=`` (scipy >= 1.15) or ``random_state=`` (older)."""
    params = inspect.signature(function).parameters
    return {"rng" if "rng" in params else "random_state": rng}


# --------------------------------------------------------------------------- ranks


def _tie_groups(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, first index of each tie group in sorted order, group of each point)."""
    order = np.argsort(values, kind="stable")
    new = np.r_[True, values[order][1:] != values[order][:-1]]
    group = np.empty(len(values), dtype=np.intp)
    group[order] = np.cumsum(new) - 1
    return order, np.flatnonzero(new), group


def rankcounts(counts: np.ndarray, values: np.ndarray | tuple) -> np.ndarray:
    """Average ranks of ``values`` in resamples given as ``counts`` (rows: resamples,
    columns: how often each value was drawn). Returns the rank, in each resample, of
    every original value (whether drawn or not): a tie group of size c whose lower
    groups hold s draws has ranks s+1 .. s+c, average s + (c + 1) / 2. ``values`` may be
    given as its ``_tie_groups`` (computed once for many calls)."""
    groups = values if isinstance(values, tuple) else _tie_groups(np.asarray(values, float))
    order, starts, group = groups
    per_group = np.add.reduceat(counts[:, order], starts, axis=1)
    ranks = np.cumsum(per_group, axis=1) - (per_group - 1.0) / 2.0
    return ranks[:, group]


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    """Rows of drawn indices -> rows of counts (B x n)."""
    rows = indices.shape[0]
    flat = (indices + n * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(float)


def resampled_spearman(x: np.ndarray, y: np.ndarray) -> Callable[..., np.ndarray]:
    """A vectorized statistic for ``scipy.stats.bootstrap`` over ``np.arange(len(x))``:
    given drawn indices (any leading shape, the draws on ``axis``), Spearman's rho of
    the drawn (x, y) pairs, exactly as ``scipy.stats.spearmanr`` of those pairs (NaN
    where the drawn x or y are constant)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    gx, gy = _tie_groups(x), _tie_groups(y)

    def statistic(indices: np.ndarray, axis: int = -1) -> np.ndarray:
        indices = np.moveaxis(np.asarray(indices), axis, -1)
        lead = indices.shape[:-1]
        drawn = indices.reshape(-1, indices.shape[-1]).astype(np.intp)
        counts = _counts(drawn, n)
        mean = (drawn.shape[1] + 1) / 2.0
        rx = rankcounts(counts, gx) - mean
        ry = rankcounts(counts, gy) - mean
        sxy = np.einsum("ij,ij,ij->i", counts, rx, ry)
        sxx = np.einsum("ij,ij,ij->i", counts, rx, rx)
        syy = np.einsum("ij,ij,ij->i", counts, ry, ry)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = sxy / np.sqrt(sxx * syy)
        rho[(sxx <= 1e-12) | (syy <= 1e-12)] = np.nan
        return rho.reshape(lead)

    return statistic


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair, NaN entries left out (NaN when fewer than
    three pairs are left or either row is constant)."""
    ok = np.isfinite(a) & np.isfinite(b)
    count = ok.sum(axis=1)
    a = np.where(ok, a, 0.0)
    b = np.where(ok, b, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ma = a.sum(axis=1) / count
        mb = b.sum(axis=1) / count
        ac = np.where(ok, a - ma[:, None], 0.0)
        bc = np.where(ok, b - mb[:, None], 0.0)
        saa = (ac * ac).sum(axis=1)
        sbb = (bc * bc).sum(axis=1)
        rho = (ac * bc).sum(axis=1) / np.sqrt(saa * sbb)
    rho[(count < 3) | (saa <= 1e-12) | (sbb <= 1e-12)] = np.nan
    return rho


def seed_means_spearman(x: np.ndarray, values: np.ndarray) -> Callable[..., np.ndarray]:
    """A vectorized statistic for ``scipy.stats.bootstrap`` over seed indices: given
    drawn seeds (leading shape, the draws on ``axis``), every cell's mean over the drawn
    seeds (a seed drawn twice weighs twice; a seed a cell has no value for is left out,
    and a cell none of whose seeds was drawn drops out), then Spearman's rho of ``x``
    with those means. ``values``: cells x seeds, NaN where a run did not finish."""
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=float)
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    filled = np.where(finite, values, 0.0).T
    present = finite.T.astype(float)
    complete = bool(finite.all())
    k = values.shape[1]
    rx = rankdata(x)
    rx = rx - rx.mean()

    def statistic(indices: np.ndarray, axis: int = -1) -> np.ndarray:
        indices = np.moveaxis(np.asarray(indices), axis, -1)
        lead = indices.shape[:-1]
        drawn = indices.reshape(-1, indices.shape[-1]).astype(np.intp)
        # k seeds allow few distinct draws (3 for two seeds): compute each once.
        weights, back = np.unique(_counts(drawn, k), axis=0, return_inverse=True)
        return on_weights(weights)[back.ravel()].reshape(lead)

    def on_weights(weights: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (weights @ filled) / (weights @ present)  # B x n
        if complete:
            ry = rankdata(means, axis=-1)
            ry = ry - ry.mean(axis=-1, keepdims=True)
            syy = (ry * ry).sum(axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                rho = (ry @ rx) / np.sqrt(syy * float(rx @ rx))
            rho[syy <= 1e-12] = np.nan
        else:
            xs = np.where(np.isfinite(means), x[None, :], np.nan)
            rho = _pearson_rows(rankdata(xs, axis=-1, nan_policy="omit"),
                                rankdata(means, axis=-1, nan_policy="omit"))
        return rho

    return statistic


# --------------------------------------------------------------------------- intervals


def _percentiles(distribution: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(low, high, fraction of finite resamples) of a bootstrap distribution."""
    finite = distribution[np.isfinite(distribution)]
    if not len(finite):
        return float("nan"), float("nan"), 0.0
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high), len(finite) / len(distribution)


MAX_UNDEFINED = 0.05
"""Largest share of resamples without a coefficient (a constant variable or metric drawn)
that an interval may leave out; above it there is no interval, with the reason."""


def _finish(res, confidence: float, what: str, n_resamples: int, method: str,
            constant: str = "a constant variable or metric") -> Interval:
    """The interval of a scipy bootstrap result; where scipy's is undefined (NaN: a
    resample without a coefficient, or a degenerate distribution that BCa cannot
    correct), the percentile interval of the resamples that have one."""
    low, high = (float(v) for v in res.confidence_interval)
    label = f"{method} bootstrap over {what} ({n_resamples} resamples)"
    if math.isfinite(low) and math.isfinite(high):
        return Interval(low, high, label)
    low, high, share = _percentiles(np.asarray(res.bootstrap_distribution), confidence)
    if share < 1.0 - MAX_UNDEFINED:
        return Interval.none(
            f"{1.0 - share:.0%} of the resamples over {what} have {constant} (no "
            "coefficient)")
    note = "every resample gives the same coefficient" if share == 1.0 and low == high \
        else f"{1.0 - share:.1%} of resamples without a coefficient left out"
    return Interval(low, high, f"percentile bootstrap over {what} ({n_resamples} resamples; "
                               f"{note})")


def cells_interval(
    x: np.ndarray,
    y: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 999,
    min_cells: int = MIN_BOOTSTRAP_CELLS,
    rng: np.random.Generator | None = None,
) -> Interval:
    """BCa bootstrap interval of Spearman's rho of ``y`` with ``x``, resampling the
    (x, y) pairs (cells) with replacement: ``scipy.stats.bootstrap`` on the cells'
    indices with :func:`resampled_spearman`."""
    from scipy import stats

    n = len(x)
    if n < min_cells:
        return Interval.none(f"fewer than {min_cells} cells for a bootstrap over cells "
                             f"(n={n})")
    rng = rng if rng is not None else make_rng((0,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate distributions: handled in _finish
        res = stats.bootstrap((np.arange(n),), resampled_spearman(x, y), vectorized=True,
                              n_resamples=n_resamples, confidence_level=confidence,
                              method="BCa", **_rng_kwargs(stats.bootstrap, rng))
    return _finish(res, confidence, "cells", n_resamples, "BCa")


def seeds_interval(
    x: np.ndarray,
    values: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 999,
    rng: np.random.Generator | None = None,
) -> Interval:
    """Percentile bootstrap interval of Spearman's rho of the cells' seed means with
    ``x``, resampling whole seeds (columns of ``values``, cells x seeds, NaN where a run
    did not finish) with replacement: ``scipy.stats.bootstrap`` on the seeds' indices
    with :func:`seed_means_spearman`. Needs two seeds with a value; k seeds give at most
    C(2k-1, k) distinct resamples (3 for two seeds), so with few seeds the interval is
    the spread of a handful of coefficients, not a calibrated 95 %."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    values = values[:, np.isfinite(values).any(axis=0)]
    k = values.shape[1]
    if k < 2:
        return Interval.none("one seed: no interval over seeds (it needs two or more)")
    rng = rng if rng is not None else make_rng((0,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((np.arange(k),), seed_means_spearman(x, values),
                              vectorized=True, n_resamples=n_resamples,
                              confidence_level=confidence, method="percentile",
                              **_rng_kwargs(stats.bootstrap, rng))
    # x is fixed here: a resample without a coefficient is one whose cell means tie
    # (e.g. one seed's cells reached the same accuracy, drawn k times).
    return _finish(res, confidence, f"{k} seeds", n_resamples, "percentile",
                   constant="cell means that all tie")


# --------------------------------------------------------------------------- p-values


def holm(p: Iterable[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error): the i-th smallest of m
    p-values becomes max over j <= i of min(1, (m - j + 1) p_(j)). NaN entries stay NaN
    and are not counted in m."""
    p = np.asarray(list(p) if not isinstance(p, np.ndarray) else p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    q = p[ok]
    m = len(q)
    if m:
        order = np.argsort(q, kind="stable")
        adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * q[order]))
        result = np.empty(m)
        result[order] = adjusted
        out[ok] = result
    return out


def benjamini_hochberg(p: Iterable[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate),
    ``scipy.stats.false_discovery_control(method="bh")``; NaN entries stay NaN and are
    not counted."""
    from scipy.stats import false_discovery_control

    p = np.asarray(list(p) if not isinstance(p, np.ndarray) else p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="bh")
    return out


# --------------------------------------------------------------------------- slopes


def theil_sen(x: np.ndarray, y: np.ndarray, confidence: float = 0.95
              ) -> tuple[float, float, float]:
    """(slope, low, high): ``scipy.stats.theilslopes(y, x, alpha=confidence)``, the
    median of the pairwise slopes with Sen's interval; NaN with fewer than two distinct
    x values."""
    from scipy.stats import theilslopes

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    nan = float("nan")
    if len(x) < 2 or np.unique(x).size < 2 or not np.isfinite(x).all():
        return nan, nan, nan
    res = theilslopes(y, x, alpha=confidence)
    return float(res.slope), float(res.low_slope), float(res.high_slope)


__all__ = ["MAX_UNDEFINED", "MIN_BOOTSTRAP_CELLS", "Interval", "benjamini_hochberg",
           "cells_interval", "holm", "make_rng", "rankcounts", "resampled_spearman",
           "seed_means_spearman", "seeds_interval", "theil_sen"]
