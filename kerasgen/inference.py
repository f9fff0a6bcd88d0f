"""Intervals, p-values, effect sizes, multiple-testing corrections and the ratio model, on
plain arrays: what :mod:`kerasgen.analysis` applies to every test of Tables 1-3.

numpy at import; scipy and statsmodels inside the functions (the dashboard imports this
module live).

What the report prints (each measured by ``scripts/bench_calibration.py``):

- ``seeds_jackknife(x, values, ...)``: the interval of Spearman's rho over seeds, rho
  +- t(k - 1) x the jackknife standard error of the coefficients that leave one seed
  out (``seeds_jackknife_of`` for any statistic of the cells' seed means: the
  Theil-Sen slope);
- ``permutation_pvalue(x, y, ...)``, ``smallest_pvalue(x, ...)``: the verdict's p-value
  of a group (its cells permuted; exact up to 8 cells) and the smallest it can reach;
- ``grid_permutation_pvalue(x, y, ...)``, ``grid_smallest_pvalue``: the whole grid's
  (Table 3), the grid's rows and columns permuted;
- ``holm(p)``, ``benjamini_hochberg(p)``, ``benjamini_yekutieli(p)``: adjusted p-values
  (NaN ignored);
- ``theil_sen(x, y, confidence)``: the Theil-Sen slope (and Sen's interval);
- ``partial_spearman(x, y, z)``: rho of y with x, z held fixed (the premise check);
- ``fit_ratio_model(y, log2_bs, log2_lr, seed, ...)``: does only the ratio matter?

Kept, not printed (the harness measures them beside the others, to show why):

- ``cells_interval(x, y, ...)``: a BCa bootstrap over cells (``scipy.stats.bootstrap``);
- ``seeds_interval(x, values, ...)``: a percentile bootstrap over whole seeds;
- ``grid_interval(x, y, ...)``: a bootstrap of the grid's rows and columns.

Every resampled coefficient of the cell bootstrap is computed without re-ranking raw
values: a bootstrap resample is a vector of counts (how often each original point was
drawn), and the average rank of a tie group in the resample follows from the counts of
the groups below it, so one resample costs O(n) (``rankcounts``). The tests check each
resampled coefficient against ``scipy.stats.spearmanr`` of the explicit resample.
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


def spearman_of(x: np.ndarray) -> Callable[[np.ndarray], float]:
    """Spearman's rho of ``x`` with a vector of cell means, cells whose mean is NaN left
    out (NaN with fewer than three cells left or constant ranks)."""
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=float)

    def statistic(means: np.ndarray) -> float:
        ok = np.isfinite(means)
        if ok.sum() < 3:
            return float("nan")
        rx, ry = rankdata(x[ok]), rankdata(means[ok])
        rx, ry = rx - rx.mean(), ry - ry.mean()
        denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
        return float(rx @ ry / denom) if denom > 1e-12 else float("nan")

    return statistic


def seeds_jackknife(
    x: np.ndarray,
    values: np.ndarray,
    confidence: float = 0.95,
    min_seeds: int = 3,
) -> Interval:
    """Jackknife interval over seeds of Spearman's rho of the cells' seed means with ``x``
    (``values``: cells x seeds, NaN where a run did not finish): rho +- t(k - 1) x the
    jackknife standard error of the k coefficients that leave one seed out, clipped to
    [-1, 1] (:func:`seeds_jackknife_of`).

    Seeds are the independent draws of a study (whatever a seed shares along a row or a
    column of the grid, it shares within itself), so leaving one out at a time measures
    how much the coefficient moves with the seeds. What the interval covers is the
    coefficient this grid gives with k seeds, on average over draws of the seeds; the
    coefficient of the noise-free cell means is not estimable without bias from noisy
    means (noise pulls |rho| towards 0, and a rank statistic's bias does not shrink as
    a smooth 1/k, so a jackknife bias correction does not fix it: its coverage fell as
    seeds were added). Needs ``min_seeds`` seeds: with two, the interval
    would rest on one degree of freedom (the report prints the two seeds' range
    instead)."""
    return seeds_jackknife_of(spearman_of(x), values, confidence, min_seeds, (-1.0, 1.0))


def grid_spearman(x: np.ndarray, y: np.ndarray) -> Callable[..., np.ndarray]:
    """A vectorized statistic for ``scipy.stats.bootstrap`` over a grid's rows and
    columns (two samples, resampled independently): given drawn row indices (leading
    shape, the draws last) and drawn column indices, Spearman's rho of ``x`` and ``y``
    (matrices, rows x columns; NaN where the grid has no cell) over every drawn
    (row, column) cell, a row or column drawn twice giving its cells twice."""
    from scipy.stats import rankdata

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    complete = bool(np.isfinite(x).all() and np.isfinite(y).all())

    def statistic(rows: np.ndarray, cols: np.ndarray, axis: int = -1) -> np.ndarray:
        rows = np.moveaxis(np.asarray(rows), axis, -1).astype(np.intp)
        cols = np.moveaxis(np.asarray(cols), axis, -1).astype(np.intp)
        lead = np.broadcast_shapes(rows.shape[:-1], cols.shape[:-1])
        rows = np.broadcast_to(rows, lead + rows.shape[-1:]).reshape(-1, rows.shape[-1])
        cols = np.broadcast_to(cols, lead + cols.shape[-1:]).reshape(-1, cols.shape[-1])
        xs = x[rows[:, :, None], cols[:, None, :]].reshape(len(rows), -1)
        ys = y[rows[:, :, None], cols[:, None, :]].reshape(len(rows), -1)
        if complete:
            rx = rankdata(xs, axis=-1)
            ry = rankdata(ys, axis=-1)
            rx -= rx.mean(axis=-1, keepdims=True)
            ry -= ry.mean(axis=-1, keepdims=True)
            sxx, syy = (rx * rx).sum(axis=-1), (ry * ry).sum(axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                rho = (rx * ry).sum(axis=-1) / np.sqrt(sxx * syy)
            rho[(sxx <= 1e-12) | (syy <= 1e-12)] = np.nan
        else:
            ok = np.isfinite(xs) & np.isfinite(ys)
            xs, ys = np.where(ok, xs, np.nan), np.where(ok, ys, np.nan)
            rho = _pearson_rows(rankdata(xs, axis=-1, nan_policy="omit"),
                                rankdata(ys, axis=-1, nan_policy="omit"))
        return rho.reshape(lead)

    return statistic


def grid_interval(
    x: np.ndarray,
    y: np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 999,
    rng: np.random.Generator | None = None,
    method: str = "BCa",
) -> Interval:
    """Bootstrap interval of Spearman's rho over a whole grid that resamples its rows
    (batch sizes) and its columns (learning rates) independently, with replacement: the
    design's two crossed factors (``scipy.stats.bootstrap`` with two unpaired samples,
    the row and column indices, and :func:`grid_spearman`). Cells of one row share that
    row's effects (a seed x batch-size effect, say) and cells of one column the
    column's, so resampling cells one by one would pretend to independent draws."""
    from scipy import stats

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    nr, nc = y.shape
    if nr < 3 or nc < 3:
        return Interval.none(f"a {nr} x {nc} grid is too small to resample its rows "
                             "and columns (3 of each needed)")
    rng = rng if rng is not None else make_rng((0,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((np.arange(nr), np.arange(nc)), grid_spearman(x, y),
                              paired=False, vectorized=True, n_resamples=n_resamples,
                              confidence_level=confidence, method=method,
                              **_rng_kwargs(stats.bootstrap, rng))
    return _finish(res, confidence, "rows and columns", n_resamples, method)


def grid_permutation_pvalue(
    x: np.ndarray,
    y: np.ndarray,
    permutations: int = 9999,
    rng: np.random.Generator | None = None,
) -> tuple[float, str]:
    """Two-sided p-value of Spearman's rho of ``y`` with ``x`` over a grid (matrices,
    rows x columns, NaN where there is no cell) that permutes the rows and the columns
    independently: the labels of the batch sizes among the rows, those of the learning
    rates among the columns. Under "no effect of batch size or learning rate" the rows
    of the grid are exchangeable and so are its columns, even when a seed shares an
    effect along a row or a column, so the test keeps its level where permuting single
    cells would not (a column effect would count as 20 independent cells). Exact when
    nr! nc! <= ``permutations`` (all pairs of permutations enumerated), Monte Carlo
    otherwise (p = (1 + #{|rho*| >= |rho|}) / (1 + B), valid at any B)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    nr, nc = y.shape
    ok = np.isfinite(x) & np.isfinite(y)
    statistic = grid_spearman(x, np.where(ok, y, np.nan))
    observed = statistic(np.arange(nr)[None], np.arange(nc)[None])[0]
    if not np.isfinite(observed):
        return float("nan"), "none"
    total = math.factorial(nr) * math.factorial(nc)
    if total <= permutations:
        import itertools

        row_perms = np.array(list(itertools.permutations(range(nr))), dtype=np.intp)
        col_perms = np.array(list(itertools.permutations(range(nc))), dtype=np.intp)
        r = np.repeat(row_perms, len(col_perms), axis=0)
        c = np.tile(col_perms, (len(row_perms), 1))
        rho = _permuted_grid_rho(x, y, ok, r, c)
        p = float(np.mean(np.abs(rho) >= abs(observed) * (1 - 1e-12) - 1e-15))
        return p, f"exact ({total} permutations of rows and columns)"
    rng = rng if rng is not None else make_rng((0,))
    hits = 0
    done = 0
    while done < permutations:
        size = min(2000, permutations - done)
        r = rng.permuted(np.tile(np.arange(nr), (size, 1)), axis=1)
        c = rng.permuted(np.tile(np.arange(nc), (size, 1)), axis=1)
        rho = _permuted_grid_rho(x, y, ok, r, c)
        hits += int(np.sum(np.abs(rho) >= abs(observed) * (1 - 1e-12) - 1e-15))
        done += size
    return (1 + hits) / (1 + permutations), \
        f"monte-carlo ({permutations} permutations of rows and columns)"


def _permuted_grid_rho(x: np.ndarray, y: np.ndarray, ok: np.ndarray, r: np.ndarray,
                       c: np.ndarray) -> np.ndarray:
    """rho of y with x whose rows and columns are relabelled by r and c (x's values move,
    y and the set of cells stay)."""
    from scipy.stats import rankdata

    mask = ok.ravel()
    ry = rankdata(y.ravel()[mask])
    ry = ry - ry.mean()
    if mask.all():
        # Relabelling rows and columns moves x's values among the same cells: the ranks
        # of the moved values are the moved ranks (no ranking per permutation).
        ranks = rankdata(x.ravel()).reshape(x.shape)
        rx = ranks[r[:, :, None], c[:, None, :]].reshape(len(r), -1)
        rx = rx - rx.mean(axis=-1, keepdims=True)
    else:
        xs = x[r[:, :, None], c[:, None, :]].reshape(len(r), -1)[:, mask]
        rx = rankdata(xs, axis=-1)
        rx -= rx.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx @ ry) / np.sqrt((rx * rx).sum(axis=-1) * float(ry @ ry))


def grid_smallest_pvalue(x: np.ndarray, ok: np.ndarray, permutations: int = 9999) -> float:
    """The smallest p-value :func:`grid_permutation_pvalue` can give on this grid: with
    all permutations enumerated, that of a metric ranked exactly as ``x``; with Monte
    Carlo, 1 / (1 + B)."""
    x = np.asarray(x, dtype=float)
    nr, nc = x.shape
    if math.factorial(nr) * math.factorial(nc) > permutations:
        return 1.0 / (1 + permutations)
    return grid_permutation_pvalue(x, np.where(ok, x, np.nan), permutations)[0]


def permutation_pvalue(
    x: np.ndarray,
    y: np.ndarray,
    permutations: int = 9999,
    rng: np.random.Generator | None = None,
    max_exact: int = 8,
) -> tuple[float, str]:
    """Two-sided permutation p-value of Spearman's rho of ``y`` with ``x`` (pairings):
    all n! pairings enumerated when n <= ``max_exact`` (the fraction with |rho| >= the
    observed one), else Monte Carlo with ``permutations`` random pairings and
    p = (1 + hits) / (1 + B), which keeps the level at any B. Ties keep their average
    ranks (the test is conditional on them). Under "no association" the cells of a
    group are exchangeable -- also when a seed shares an effect along the row or column
    the group lies in, since every cell of the group shares it -- so the p-value is
    exact or Monte-Carlo exact, where the t approximation is not (at n = 20 it puts the
    two-sided 0.005 at |rho| = 0.602, the permutation distribution at 0.614).
    numpy rather than ``scipy.stats.permutation_test``: one group costs a gather and a
    dot product per pairing, ten times faster at n = 20, and a report has hundreds."""
    from scipy.stats import rankdata

    rx = rankdata(np.asarray(x, dtype=float))
    ry = rankdata(np.asarray(y, dtype=float))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float(rx @ rx) * float(ry @ ry))
    n = len(rx)
    if norm == 0.0:
        return float("nan"), "none"
    observed = abs(float(rx @ ry)) / norm
    threshold = observed * (1.0 - 1e-12) - 1e-15
    if n <= max_exact:
        import itertools

        perms = np.array(list(itertools.permutations(range(n))), dtype=np.intp)
        p = float(np.mean(np.abs(ry[perms] @ rx) / norm >= threshold))
        return p, f"exact ({len(perms)} permutations)"
    rng = rng if rng is not None else make_rng((0,))
    hits, done = 0, 0
    while done < permutations:
        size = min(20000, permutations - done)
        drawn = rng.permuted(np.tile(np.arange(n), (size, 1)), axis=1)
        hits += int(np.sum(np.abs(ry[drawn] @ rx) / norm >= threshold))
        done += size
    return (1 + hits) / (1 + permutations), f"monte-carlo ({permutations} permutations)"


def smallest_pvalue(x: np.ndarray, permutations: int = 9999, max_exact: int = 8) -> float:
    """The smallest p-value :func:`permutation_pvalue` can give for a group with these
    ``x``: enumerated, that of a metric ranked exactly as ``x`` (2/24 = 0.083 for four
    distinct values); Monte Carlo, 1 / (1 + B)."""
    x = np.asarray(x, dtype=float)
    if len(x) > max_exact:
        return 1.0 / (1 + permutations)
    return permutation_pvalue(x, x, permutations, max_exact=max_exact)[0]


def seeds_jackknife_of(statistic: Callable[[np.ndarray], float], values: np.ndarray,
                       confidence: float = 0.95, min_seeds: int = 3,
                       bounds: tuple[float, float] = (-math.inf, math.inf)) -> Interval:
    """The jackknife over seeds of any statistic of the cells' seed means (``values``:
    cells x seeds, NaN where a run did not finish): estimate +- t(k - 1) x the
    jackknife standard error sqrt((k - 1) / k sum (theta_(i) - theta_(.))^2), each
    theta_(i) computed on the means over the seeds but i; clipped to ``bounds``."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    values = values[:, np.isfinite(values).any(axis=0)]
    k = values.shape[1]
    if k < min_seeds:
        what = "one seed" if k <= 1 else f"{k} seeds"
        return Interval.none(f"{what}: no interval (it needs {min_seeds} or more seeds)")

    def means(columns: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(columns, axis=1)

    estimate = statistic(means(values))
    left_out = np.array([statistic(means(np.delete(values, i, axis=1))) for i in range(k)])
    if not (np.isfinite(estimate) and np.isfinite(left_out).all()):
        return Interval.none("a seed left out leaves no coefficient")
    se = math.sqrt((k - 1) / k * float(np.sum((left_out - left_out.mean()) ** 2)))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, k - 1)) * se
    return Interval(max(bounds[0], estimate - half), min(bounds[1], estimate + half),
                    f"jackknife over {k} seeds, t({k - 1})")


def partial_spearman(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """Spearman's rho of ``y`` with ``x`` controlling for ``z``: the correlation of the
    ranks of x and y once each is regressed on the ranks of z (the partial correlation
    of ranks). Written out (two least-squares residuals) because neither scipy nor
    statsmodels has a partial correlation; NaN with fewer than four points or a
    constant input."""
    from scipy.stats import rankdata

    x, y, z = (np.asarray(v, dtype=float) for v in (x, y, z))
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    x, y, z = x[ok], y[ok], z[ok]
    if len(x) < 4 or min(np.ptp(x), np.ptp(y), np.ptp(z)) == 0:
        return float("nan")
    design = np.column_stack([np.ones(len(z)), rankdata(z)])

    def residual(v: np.ndarray) -> np.ndarray:
        r = rankdata(v)
        return r - design @ np.linalg.lstsq(design, r, rcond=None)[0]

    rx, ry = residual(x), residual(y)
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry / denom) if denom > 0 else float("nan")


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


def benjamini_yekutieli(p: Iterable[float]) -> np.ndarray:
    """Benjamini-Yekutieli adjusted p-values (false discovery rate under any dependence
    between the tests, e.g. tests sharing cells), ``scipy.stats.false_discovery_control(
    method="by")``: BH's times sum_{i<=m} 1/i. NaN entries stay NaN and are not counted."""
    from scipy.stats import false_discovery_control

    p = np.asarray(list(p) if not isinstance(p, np.ndarray) else p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = false_discovery_control(p[ok], method="by")
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




# --------------------------------------------------------------------------- ratio model


@dataclass(frozen=True)
class RatioFit:
    """``metric ~ log2(batch size) + log2(learning rate)`` over one grid's runs: the two
    coefficients (change per doubling) with their intervals, their sum with its interval
    and the test of beta_BS + beta_LR = 0 (only the ratio matters), or why there is
    none (``reason``)."""

    method: str
    beta_bs: float
    beta_bs_low: float
    beta_bs_high: float
    beta_lr: float
    beta_lr_low: float
    beta_lr_high: float
    beta_sum: float
    beta_sum_low: float
    beta_sum_high: float
    p_ratio: float
    n_runs: int
    n_seeds: int
    converged: bool
    reason: str | None = None

    @classmethod
    def none(cls, reason: str, n_runs: int = 0, n_seeds: int = 0) -> "RatioFit":
        nan = float("nan")
        return cls("none", *([nan] * 10), n_runs, n_seeds, False, reason)


def _vc_spec(groups: np.ndarray, labels: np.ndarray, rows: np.ndarray, cols: np.ndarray):
    """statsmodels' VCSpec of a seed x batch-size and a seed x learning-rate variance
    component: within each seed (group, in ``labels`` order) one indicator column per
    batch size and per learning rate of the grid."""
    from statsmodels.regression.mixed_linear_model import VCSpec

    nr, nc = int(rows.max()) + 1, int(cols.max()) + 1
    mats: list[list[np.ndarray]] = [[], []]
    names: list[list[list[str]]] = [[], []]
    for g in labels:
        mask = groups == g
        mats[0].append(np.eye(nr)[rows[mask]])
        mats[1].append(np.eye(nc)[cols[mask]])
        names[0].append([f"bs{i}" for i in range(nr)])
        names[1].append([f"lr{i}" for i in range(nc)])
    return VCSpec(["seed x batch size", "seed x learning rate"], names, mats)


def fit_ratio_model(
    y: np.ndarray,
    log2_bs: np.ndarray,
    log2_lr: np.ndarray,
    seed: np.ndarray,
    confidence: float = 0.95,
    one_seed: str = "mixed",
) -> RatioFit:
    """Does only the ratio matter? ``y ~ log2(batch size) + log2(learning rate)`` over a
    grid's runs (``seed``: each run's seed), fitted with statsmodels:

    - two or more seeds: ``MixedLM`` (REML) with a random intercept per seed and, within
      each seed, a variance component for batch size and one for learning rate (the
      seed x BS and seed x LR effects: runs of one seed share an initialisation and a
      data order, so a seed can lift a whole row or column of the grid);
    - one seed: the same variance components with the one seed as the only group
      (``one_seed="mixed"``, the default: a row or column effect of that seed is noise
      of its row or column), or ``OLS`` (``one_seed="ols"``), which takes the cells as
      independent: under seed x row and seed x column effects it covered 0.80 and
      rejected a true "only the ratio" 19 % of the time at 0.05 on the 4 x 4 grid
      (scripts/bench_calibration.py --one-seed-model ols).

    If only the ratio batch size / learning rate mattered, y would depend on
    log2(BS) - log2(LR) alone: beta_BS = -beta_LR. The test of beta_BS + beta_LR = 0 is a
    Wald test on statsmodels' estimates and covariance: for OLS its ``t_test`` and
    ``conf_int``; for MixedLM with t quantiles on containment degrees of freedom
    (k (rows - 1) - 1 for batch size, k (columns - 1) - 1 for learning rate, the smaller
    for their sum) where statsmodels' own are normal."""
    import statsmodels.api as sm
    from scipy import stats

    y, log2_bs, log2_lr = (np.asarray(v, dtype=float) for v in (y, log2_bs, log2_lr))
    seed = np.asarray(seed)
    ok = np.isfinite(y) & np.isfinite(log2_bs) & np.isfinite(log2_lr)
    y, log2_bs, log2_lr, seed = y[ok], log2_bs[ok], log2_lr[ok], seed[ok]
    labels = np.unique(seed)
    k, n = len(labels), len(y)
    if n < 5 or np.ptp(log2_bs) == 0 or np.ptp(log2_lr) == 0:
        return RatioFit.none("too few runs, batch sizes or learning rates for the model "
                             f"(n={n})", n, k)
    if np.ptp(y) == 0:
        return RatioFit.none("metric is constant", n, k)
    # Fitted on the metric standardized (an accuracy's variances, ~1e-5, leave the
    # optimizer far from its tolerances); coefficients and intervals scaled back.
    centre, scale = float(y.mean()), float(y.std())
    y = (y - centre) / scale
    exog = np.column_stack([np.ones(n), log2_bs, log2_lr])
    _, rows = np.unique(log2_bs, return_inverse=True)
    _, cols = np.unique(log2_lr, return_inverse=True)
    converged = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence: res.converged says it
        if k == 1 and one_seed == "ols":
            res = sm.OLS(y, exog).fit()
            method = "OLS (one seed)"
        else:
            from statsmodels.regression.mixed_linear_model import MixedLM

            exog_re = np.ones((n, 1)) if k > 1 else None
            model = MixedLM(y, exog, seed, exog_re=exog_re,
                            exog_vc=_vc_spec(seed, labels, rows, cols))
            try:
                res = model.fit(reml=True, method=["lbfgs", "powell"])
            except (np.linalg.LinAlgError, ValueError) as exc:
                return RatioFit.none(f"the mixed model did not fit ({exc})", n, k)
            converged = bool(getattr(res, "converged", True))
            method = ("MixedLM (REML): " + ("seed intercept + " if k > 1 else "")
                      + "seed x BS and seed x LR variance components")
    tail = 1.0 - confidence
    if method.startswith("OLS"):
        params = np.asarray(res.params, dtype=float)[:3] * scale
        bounds = np.asarray(res.conf_int(alpha=tail), dtype=float)[:3] * scale
        total = res.t_test(np.array([[0.0, 1.0, 1.0]]))
        low, high = np.asarray(total.conf_int(alpha=tail), dtype=float)[0] * scale
        return RatioFit(method, float(params[1]), float(bounds[1, 0]), float(bounds[1, 1]),
                        float(params[2]), float(bounds[2, 0]), float(bounds[2, 1]),
                        float(np.asarray(total.effect).ravel()[0]) * scale, float(low),
                        float(high), float(np.asarray(total.pvalue).ravel()[0]), n, k,
                        converged)
    # MixedLM's own intervals and Wald test are normal; but batch size acts only between
    # the grid's rows within a seed (k x rows units) and learning rate between its
    # columns, so their coefficients rest on k (rows - 1) - 1 and k (columns - 1) - 1
    # degrees of freedom (containment, as SAS's DDFM=CONTAIN): t quantiles on them. With
    # one 4 x 4 grid the normal's covered 0.84 and rejected a true "only the ratio" 10 %
    # of the time at 0.05 (scripts/bench_calibration.py).
    nr, nc = int(rows.max()) + 1, int(cols.max()) + 1
    df = (max(k * (nr - 1) - 1, 1), max(k * (nc - 1) - 1, 1))
    fe = np.asarray(res.fe_params, dtype=float)[:3]
    cov = np.asarray(res.cov_params(), dtype=float)[:3, :3]
    contrasts = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    values = contrasts @ fe
    ses = np.sqrt(np.einsum("ij,jk,ik->i", contrasts, cov, contrasts))
    dfs = np.array([df[0], df[1], min(df)], dtype=float)
    half = stats.t.ppf(1.0 - tail / 2.0, dfs) * ses
    p_sum = float(2.0 * stats.t.sf(abs(values[2] / ses[2]), dfs[2]))
    lo, hi = (values - half) * scale, (values + half) * scale
    values = values * scale
    return RatioFit(method + f"; t on {df[0]} / {df[1]} df", float(values[0]), float(lo[0]),
                    float(hi[0]), float(values[1]), float(lo[1]), float(hi[1]),
                    float(values[2]), float(lo[2]), float(hi[2]), p_sum, n, k, converged)


__all__ = ["MAX_UNDEFINED", "MIN_BOOTSTRAP_CELLS", "Interval", "RatioFit", "benjamini_hochberg",
           "benjamini_yekutieli", "cells_interval", "fit_ratio_model", "grid_interval",
           "grid_permutation_pvalue", "grid_smallest_pvalue", "grid_spearman", "holm",
           "make_rng", "partial_spearman", "permutation_pvalue", "rankcounts",
           "resampled_spearman", "seed_means_spearman", "seeds_interval", "seeds_jackknife",
           "seeds_jackknife_of", "smallest_pvalue", "spearman_of", "theil_sen"]
