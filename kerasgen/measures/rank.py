"""Ranking generalization measures the way the field does (Jiang et al., ICLR 2020,
*Fantastic Generalization Measures and Where to Find Them*), per grid.

The frame
---------
One row per (run, measure): the run's coordinates (``study, model, dataset,
batch_size, learning_rate, seed, cell_id, ratio``), its ``gap`` (clean training accuracy
minus test accuracy at the kept epoch) and ``loss_gap`` (test loss minus clean training
loss), and ``measure`` / ``value``. :func:`measure_frame` builds it from a store: the
``measures`` table, the measures derived from the epochs (``epochs_to_stop``,
``steps_to_stop``, ``train_loss_kept``), the ``bounds`` table's terms when present and
the ratio itself as the reference. Only runs with status ``done`` enter.

The coefficients, per (grid, measure)
-------------------------------------
``tau``        Kendall's tau of the measure with the gap over the grid's *cells*, each
               cell's measure and gap averaged over its seeds first (seeds are
               replicates); ``tau_loss`` the same with the loss gap.
               ``scipy.stats.kendalltau`` (tau-b, which is Jiang et al.'s eq. 3 when
               no two values tie).
``psi_<axis>`` Jiang et al.'s granulated coefficient along one axis (``batch_size``,
               ``learning_rate``, ``seed``): the mean, over every setting of the other
               two axes, of tau over the runs where only this axis varies. A group
               where the measure does not vary counts as tau = 0 (it carries no
               information; Jiang's sign(0) = 0); one where the gap does not vary is
               left out (nothing to predict).
``psi``        the mean of the axes' psi (the axes with at least one group).
intervals      seed-aware: a jackknife over seeds (leave one seed out, recompute;
               standard error ``sqrt((k-1)/k sum (theta_-s - mean)^2)``; ``theta +- t_{k-1}
               SE``, clipped to [-1, 1]) where there are 3 or more seeds; with 2 the
               interval is missing and the reason says so, and ``seed_tau_min`` /
               ``seed_tau_max`` give tau on each seed alone. (A simple seed-aware method
               of this module's own; it moves to the report's shared interval
               machinery once that settles.)
``partial``    does the ratio still predict the gap once the measure is known? The
               partial rank correlation of ratio and gap given the measure over the
               cells (Spearman's: Pearson's on ranks, each residualized linearly on the
               measure's ranks), with its p-value (t with n - 3 degrees of freedom).
               ``ratio_rho`` is the ratio's own Spearman rho with the gap, for contrast.
``cmi``        Jiang et al.'s conditional-mutual-information criterion (Section 6):
               over ordered pairs of runs, ``V_m = sign(m_i - m_j)`` and ``V_g =
               sign(g_i - g_j)``; for each set S of at most two axes, ``I(V_m; V_g |
               U_S) / H(V_g | U_S)`` with ``U_S`` the pair's values of those axes; the
               criterion is the minimum over S (``cmi_axes`` names it). Plug-in
               estimates: biased upward where the classes of U_S hold few pairs (a 4 x 4
               x 2 grid's pairs of cells hold four pairs each), so compare measures with
               it, never against a threshold.

A measure of constant value over a grid gets no coefficient, and ``reason`` says why.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
import pandas as pd

from kerasgen.measures.catalogue import measure_family, measure_label, measure_sign

GRID = ["study", "model", "dataset"]
AXES = ("batch_size", "learning_rate", "seed")
RUN_COLUMNS = ["study", "cell_id", "model", "dataset", "batch_size", "learning_rate", "seed",
               "ratio", "gap", "loss_gap"]
RANK_COLUMNS = [
    "study", "model", "dataset", "measure", "label", "family", "sign", "rank", "n_cells",
    "n_runs", "n_seeds", "psi", "psi_low", "psi_high", "psi_batch_size",
    "psi_learning_rate", "psi_seed", "tau", "tau_p", "tau_low", "tau_high", "tau_loss",
    "seed_tau_min", "seed_tau_max", "interval", "partial", "partial_p", "ratio_rho",
    "cmi", "cmi_axes", "cmi_unconditional", "agrees", "reason",
]
MIN_JACKKNIFE_SEEDS = 3


# ---------------------------------------------------------------- Kendall's tau and Psi

def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of ``x`` and ``y`` (pairs with a non-finite value left out); NaN
    for fewer than two pairs or a constant input. The statistic of
    ``scipy.stats.kendalltau`` (the tests hold them equal, ties included), computed here
    from the pairs' signs because the granulated coefficient takes hundreds of small
    groups per measure and scipy's call costs more than the arithmetic."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[ok], ya[ok]
    if len(xa) < 2:
        return math.nan
    i, j = np.triu_indices(len(xa), 1)
    sx, sy = np.sign(xa[i] - xa[j]), np.sign(ya[i] - ya[j])
    nx, ny = np.count_nonzero(sx), np.count_nonzero(sy)
    if nx == 0 or ny == 0:
        return math.nan
    return float(np.clip((sx * sy).sum() / math.sqrt(nx * ny), -1.0, 1.0))


def kendall_p(x: Sequence[float], y: Sequence[float]) -> float:
    """The two-sided p-value of ``scipy.stats.kendalltau(x, y)``."""
    from scipy import stats

    xa, ya = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    return float(stats.kendalltau(xa[ok], ya[ok]).pvalue)


def _group_tau(values: np.ndarray, target: np.ndarray) -> float | None:
    """tau within one group of a granulated coefficient: None when the gap does not vary
    (left out), 0 when the measure does not vary, else Kendall's tau."""
    ok = np.isfinite(values) & np.isfinite(target)
    values, target = values[ok], target[ok]
    if len(target) < 2 or np.all(target == target[0]):
        return None
    if np.all(values == values[0]):
        return 0.0
    return kendall_tau(values, target)


def _codes(runs: pd.DataFrame, axes: Sequence[str]) -> np.ndarray:
    """One integer per distinct combination of ``axes`` (0 for no axis)."""
    if not axes:
        return np.zeros(len(runs), dtype=np.int64)
    stacked = np.column_stack([np.unique(runs[a].to_numpy(), return_inverse=True)[1]
                               .reshape(-1) for a in axes])
    return np.unique(stacked, axis=0, return_inverse=True)[1].reshape(-1)


def granulated_tau(runs: pd.DataFrame, value: str = "value", target: str = "gap",
                   axes: Sequence[str] = AXES) -> dict[str, float]:
    """``psi_<axis>`` for each axis and their mean ``psi`` (see the module docstring) over
    the runs of one grid (one row per run)."""
    values, gaps = runs[value].to_numpy(float), runs[target].to_numpy(float)
    out: dict[str, float] = {}
    for axis in axes:
        others = _codes(runs, [a for a in axes if a != axis])
        along = runs[axis].to_numpy()
        taus = []
        for code in np.unique(others):
            member = others == code
            if len(np.unique(along[member])) < 2:
                continue
            t = _group_tau(values[member], gaps[member])
            if t is not None and math.isfinite(t):
                taus.append(t)
        out[f"psi_{axis}"] = float(np.mean(taus)) if taus else math.nan
    found = [out[f"psi_{a}"] for a in axes if math.isfinite(out[f"psi_{a}"])]
    out["psi"] = float(np.mean(found)) if found else math.nan
    return out


def cell_means(runs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """One row per cell (batch size, learning rate): ``columns`` averaged over its seeds
    (non-finite values left out of each mean)."""
    codes = _codes(runs, ["batch_size", "learning_rate"])
    if not len(codes):
        return pd.DataFrame(columns=["batch_size", "learning_rate", *columns])
    first = np.unique(codes, return_index=True)[1]
    out = {"batch_size": runs["batch_size"].to_numpy()[first],
           "learning_rate": runs["learning_rate"].to_numpy()[first]}
    for col in columns:
        v = runs[col].to_numpy(float)
        ok = np.isfinite(v)
        sums = np.bincount(codes[ok], v[ok], minlength=len(first))
        counts = np.bincount(codes[ok], minlength=len(first))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[col] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return pd.DataFrame(out)


def jackknife_interval(estimates: Sequence[float], full: float, confidence: float = 0.95
                       ) -> tuple[float, float]:
    """``full +- t_{k-1} * SE`` with the jackknife standard error of the leave-one-out
    ``estimates``, clipped to [-1, 1]."""
    from scipy import stats

    est = np.asarray(estimates, float)
    k = len(est)
    if k < 2 or not np.all(np.isfinite(est)) or not math.isfinite(full):
        return math.nan, math.nan
    se = math.sqrt((k - 1) / k * float(np.sum((est - est.mean()) ** 2)))
    half = float(stats.t.ppf(0.5 + confidence / 2, k - 1)) * se
    return max(-1.0, full - half), min(1.0, full + half)


# ---------------------------------------------------------------- conditional

def partial_rank_correlation(x, y, z) -> tuple[float, float]:
    """Spearman's partial correlation of ``x`` and ``y`` given ``z``, and its two-sided
    p-value (t with n - 3 degrees of freedom). Written out (ranks, two least-squares
    residuals, Pearson) because neither numpy nor scipy has it and it is three lines."""
    from scipy import stats

    xa, ya, za = (np.asarray(v, float) for v in (x, y, z))
    ok = np.isfinite(xa) & np.isfinite(ya) & np.isfinite(za)
    xa, ya, za = xa[ok], ya[ok], za[ok]
    n = len(xa)
    if n < 4 or any(np.all(v == v[0]) for v in (xa, ya, za)):
        return math.nan, math.nan
    rx, ry, rz = (stats.rankdata(v) for v in (xa, ya, za))
    design = np.column_stack([np.ones(n), rz])

    def residual(v):
        coef, *_ = np.linalg.lstsq(design, v, rcond=None)
        return v - design @ coef

    ex, ey = residual(rx), residual(ry)
    if np.allclose(ex, 0):  # x is a function of z: nothing of x is left to correlate
        return math.nan, math.nan
    if np.allclose(ey, 0):  # z orders y completely: nothing of y is left for x
        return 0.0, 1.0
    r = float(np.clip(np.corrcoef(ex, ey)[0, 1], -1.0, 1.0))
    if abs(r) >= 1.0:
        return r, 0.0
    t = r * math.sqrt((n - 3) / (1 - r * r))
    return r, float(2 * stats.t.sf(abs(t), n - 3))


def _entropy(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum())


def conditional_mi(runs: pd.DataFrame, value: str = "value", target: str = "gap",
                   axes: Sequence[str] = AXES, max_size: int = 2) -> dict:
    """Jiang et al.'s criterion (module docstring): ``cmi`` = min over axis sets S
    (``|S| <= max_size``) of ``I(V_m; V_g | U_S) / H(V_g | U_S)``, ``cmi_axes`` the S
    that attains it, ``cmi_unconditional`` the value for S = {} and ``by_axes`` all."""
    m = runs[value].to_numpy(float)
    g = runs[target].to_numpy(float)
    ok = np.isfinite(m) & np.isfinite(g)
    sub = runs.loc[ok]
    m, g = m[ok], g[ok]
    n = len(m)
    empty = {"cmi": math.nan, "cmi_axes": None, "cmi_unconditional": math.nan, "by_axes": {}}
    if n < 3:
        return empty
    i, j = np.where(~np.eye(n, dtype=bool))
    vm, vg = np.sign(m[i] - m[j]), np.sign(g[i] - g[j])
    keep = (vm != 0) & (vg != 0)
    i, j, vm, vg = i[keep], j[keep], vm[keep] > 0, vg[keep] > 0
    if not len(i):
        return empty
    coords = {a: sub[a].to_numpy() for a in axes}
    by_axes: dict[tuple, float] = {}
    for size in range(0, max_size + 1):
        for chosen in itertools.combinations(axes, size):
            if chosen:
                keys = np.column_stack([np.unique(coords[a], return_inverse=True)[1][idx]
                                        for a in chosen for idx in (i, j)])
                _, u = np.unique(keys, axis=0, return_inverse=True)
                u = u.reshape(-1)
            else:
                u = np.zeros(len(i), dtype=int)
            cells = np.zeros((int(u.max()) + 1, 2, 2))
            np.add.at(cells, (u, vm.astype(int), vg.astype(int)), 1)
            weight = cells.sum(axis=(1, 2))
            mi = h = 0.0
            for c, w in zip(cells, weight):
                if w == 0:
                    continue
                hg = _entropy(c.sum(axis=0))
                mi += w * (_entropy(c.sum(axis=1)) + hg - _entropy(c.reshape(-1)))
                h += w * hg
            if h > 0:
                by_axes[chosen] = float(mi / h)
    if not by_axes:
        return empty
    best = min(by_axes, key=by_axes.get)
    return {"cmi": by_axes[best], "cmi_axes": ",".join(best) or "none",
            "cmi_unconditional": by_axes.get((), math.nan), "by_axes": by_axes}


# ---------------------------------------------------------------- the ranking

def rank_measures(frame: pd.DataFrame, target: str = "gap", confidence: float = 0.95,
                  conditional: bool = True) -> pd.DataFrame:
    """The ranking of every measure of ``frame`` per grid (columns ``RANK_COLUMNS``,
    described in the module docstring), best first: by ``|psi|``, then ``|tau|``.
    ``rank`` is 1 for the best; a measure without tau over the cells (one that does not
    vary from cell to cell, such as B_simple at the shared initial weights) comes last,
    unranked, with its ``reason``."""
    if frame.empty:
        return pd.DataFrame(columns=RANK_COLUMNS)
    missing = [c for c in ("measure", "value", target, *AXES, *GRID) if c not in frame.columns]
    if missing:
        raise KeyError(f"the measures frame lacks column(s) {missing}")
    frame = frame.copy()
    if "ratio" not in frame.columns:
        frame["ratio"] = frame["batch_size"] / frame["learning_rate"]
    if "loss_gap" not in frame.columns:
        frame["loss_gap"] = math.nan
    rows = []
    for key, grid in frame.groupby(GRID + ["measure"], sort=True):
        rows.append(_rank_one(dict(zip(GRID + ["measure"], key)), grid, target, confidence,
                              conditional))
    out = pd.DataFrame(rows)
    ranked = []
    for _, grid in out.groupby(GRID, sort=True):
        order = grid.assign(_ranked=grid["tau"].notna(), _psi=grid["psi"].abs().fillna(-1),
                            _tau=grid["tau"].abs().fillna(-1)).sort_values(
            ["_ranked", "_psi", "_tau", "measure"], ascending=[False, False, False, True])
        order = order.drop(columns=["_ranked", "_psi", "_tau"])
        has = order["tau"].notna()
        order["rank"] = np.where(has, np.cumsum(has), np.nan)
        ranked.append(order)
    return pd.concat(ranked, ignore_index=True).reindex(columns=RANK_COLUMNS)


def _rank_one(rec: dict, runs: pd.DataFrame, target: str, confidence: float,
              conditional: bool) -> dict:
    name = rec["measure"]
    runs = runs[np.isfinite(runs["value"].astype(float))
                & np.isfinite(runs[target].astype(float))]
    seeds = sorted(runs["seed"].unique())
    rec.update({"label": measure_label(name), "family": measure_family(name),
                "sign": measure_sign(name), "n_runs": int(len(runs)),
                "n_seeds": int(len(seeds)), "reason": None})
    cells = cell_means(runs, ["value", target, "loss_gap", "ratio"]) if len(runs) else runs
    rec["n_cells"] = int(len(cells))
    nan = math.nan
    rec.update({k: nan for k in RANK_COLUMNS if k not in rec and k not in ("cmi_axes",
                                                                            "interval", "agrees")})
    rec.update({"cmi_axes": None, "interval": None, "agrees": None})
    if len(cells) < 3:
        rec["reason"] = f"fewer than 3 cells with a value (n={len(cells)})"
        return rec
    if np.all(cells["value"] == cells["value"].iloc[0]) and len(seeds) < 2:
        rec["reason"] = "the measure does not vary over the grid"
        return rec
    from scipy import stats

    rec["tau"] = kendall_tau(cells["value"], cells[target])
    if math.isfinite(rec["tau"]):
        rec["tau_p"] = kendall_p(cells["value"], cells[target])
    elif cells["value"].nunique() <= 1:
        rec["reason"] = ("the same value for every cell of a seed: a property of the "
                         "initialisation, not of the run")
    rec["tau_loss"] = kendall_tau(cells["value"], cells["loss_gap"])
    rec.update(granulated_tau(runs, "value", target))
    per_seed = [kendall_tau(*(lambda c: (c["value"], c[target]))(
        cell_means(runs[runs["seed"] == s], ["value", target]))) for s in seeds]
    per_seed = [t for t in per_seed if math.isfinite(t)]
    if per_seed:
        rec["seed_tau_min"], rec["seed_tau_max"] = min(per_seed), max(per_seed)
    if len(seeds) >= MIN_JACKKNIFE_SEEDS:
        taus, psis = [], []
        for s in seeds:
            rest = runs[runs["seed"] != s]
            c = cell_means(rest, ["value", target])
            taus.append(kendall_tau(c["value"], c[target]))
            psis.append(granulated_tau(rest, "value", target)["psi"])
        rec["tau_low"], rec["tau_high"] = jackknife_interval(taus, rec["tau"], confidence)
        rec["psi_low"], rec["psi_high"] = jackknife_interval(psis, rec["psi"], confidence)
        rec["interval"] = f"jackknife over {len(seeds)} seeds, t({len(seeds) - 1}), " \
                          f"{confidence:.0%}"
    else:
        rec["interval"] = (f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}: the jackknife "
                           f"over seeds needs {MIN_JACKKNIFE_SEEDS} or more")
    rho = stats.spearmanr(cells["ratio"], cells[target]).statistic \
        if cells["ratio"].nunique() > 1 and cells[target].nunique() > 1 else nan
    rec["ratio_rho"] = float(rho)
    if name != "ratio":
        rec["partial"], rec["partial_p"] = partial_rank_correlation(
            cells["ratio"], cells[target], cells["value"])
    if conditional:
        cmi = conditional_mi(runs, "value", target)
        rec["cmi"], rec["cmi_axes"] = cmi["cmi"], cmi["cmi_axes"]
        rec["cmi_unconditional"] = cmi["cmi_unconditional"]
    coefficient = rec["psi"] if math.isfinite(rec["psi"]) else rec["tau"]
    if math.isfinite(coefficient) and coefficient != 0:
        rec["agrees"] = bool(np.sign(coefficient) == rec["sign"])
    return rec


def best_predictor(ranking: pd.DataFrame, study: str, model: str, dataset: str
                   ) -> pd.Series | None:
    """The top-ranked measure of a grid other than the ratio (None when none has a
    coefficient)."""
    grid = ranking[(ranking["study"] == study) & (ranking["model"] == model)
                   & (ranking["dataset"] == dataset) & ranking["rank"].notna()
                   & (ranking["measure"] != "ratio")]
    return None if grid.empty else grid.sort_values("rank").iloc[0]


def _c(value) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:+.2f}"


def verdict(ranking: pd.DataFrame, study: str, model: str, dataset: str,
            alpha: float = 0.05, target: str = "gap", name=str) -> str:
    """One sentence: the grid's best predictor and whether the ratio predicts the gap
    beyond it (the partial rank correlation at ``alpha``). ``name`` formats a measure's
    label (the report escapes it for Markdown)."""
    best = best_predictor(ranking, study, model, dataset)
    if best is None:
        return "No measure has a coefficient on this grid yet."
    best = best.copy()
    best["label"] = name(best["label"])
    grid = ranking[(ranking["study"] == study) & (ranking["model"] == model)
                   & (ranking["dataset"] == dataset)]
    ratio = grid[grid["measure"] == "ratio"]
    text = (f"The best predictor of the {target.replace('_', ' ')} is {best['label']} "
            f"(Ψ = {_c(best['psi'])}, τ = {_c(best['tau'])}")
    if math.isfinite(best["tau_low"]):
        text += f" [{_c(best['tau_low'])}, {_c(best['tau_high'])}]"
    text += ")"
    if best["agrees"] is False:
        text += ", though its sign is the opposite of the one it is meant to have"
    if len(ratio) and math.isfinite(ratio.iloc[0]["psi"]):
        r = ratio.iloc[0]
        text += f"; the ratio itself has Ψ = {_c(r['psi'])}, τ = {_c(r['tau'])}"
    partial, p = best["partial"], best["partial_p"]
    if not math.isfinite(partial):
        text += ". Whether the ratio adds anything beyond it cannot be said here."
    elif p < alpha:
        text += (f". Given {best['label']}, the ratio still predicts the {target.replace('_', ' ')}"
                 f" (partial rank correlation {partial:+.2f}, p = {p:.2g} < {alpha:g}).")
    else:
        text += (f". Given {best['label']}, what the ratio still says about the "
                 f"{target.replace('_', ' ')} is not significant at α = {alpha:g} (partial "
                 f"rank correlation {partial:+.2f}, p = {p:.2g}).")
    return text


# ---------------------------------------------------------------- from a store

def measure_frame(db, study: str | None = None) -> pd.DataFrame:
    """The long frame :func:`rank_measures` takes (module docstring), from a store: the
    ``measures`` table (a measure stored under several settings appears once per
    settings, named ``measure@key``), the measures derived from the epochs, the bound
    terms (``theorem1[classifier]``) and the ratio. Columns: ``RUN_COLUMNS`` plus
    ``measure``, ``value``, ``source``, ``seconds``, ``weights_epoch``, ``kept_epoch``."""
    from kerasgen import analysis
    from kerasgen.measures.steps import store_measures, with_stop_thresholds
    from kerasgen.store import (
        load_bound_rows,
        load_epochs,
        load_measure_rows,
        load_results,
        load_studies,
    )

    results = analysis.add_derived_metrics(load_results(db, study=study))
    runs = results[results["status"] == "done"][RUN_COLUMNS + ["kept_epoch", "epochs_done",
                                                               "last_batch"]]
    parts = []
    stored = load_measure_rows(db, study=study)
    if len(stored):
        variants = stored.groupby("measure")["settings_key"].nunique()
        stored = stored.assign(measure=[
            m if variants[m] == 1 else f"{m}@{k[:6]}"
            for m, k in zip(stored["measure"], stored["settings_key"])])
        parts.append(stored[["cell_id", "measure", "value", "seconds", "weights_epoch"]]
                     .assign(source="network"))
    derived = store_measures(with_stop_thresholds(results, load_studies(db)),
                             load_epochs(db, study=study))
    if len(derived):
        parts.append(derived.assign(source="store", seconds=0.0, weights_epoch=math.nan))
    bounds = load_bound_rows(db)
    if len(bounds):
        for term in ("theorem1", "theorem2", "trace_ca_inv"):
            part = bounds[["cell_id", "params", term]].rename(columns={term: "value"})
            part = part.assign(measure=[f"{term}[{p}]" for p in part["params"]])
            parts.append(part[["cell_id", "measure", "value"]].assign(
                source="bounds", seconds=0.0, weights_epoch=math.nan))
    parts.append(runs[["cell_id"]].assign(measure="ratio", value=runs["ratio"].to_numpy(),
                                          source="grid", seconds=0.0, weights_epoch=math.nan))
    long = pd.concat(parts, ignore_index=True)
    long["value"] = pd.to_numeric(long["value"], errors="coerce").astype(float)
    out = runs.merge(long, on="cell_id", how="inner")
    return out.sort_values(GRID + ["measure", "cell_id"]).reset_index(drop=True)


__all__ = ["AXES", "RANK_COLUMNS", "best_predictor", "cell_means", "conditional_mi",
           "granulated_tau", "jackknife_interval", "kendall_p", "kendall_tau", "measure_frame",
           "partial_rank_correlation", "rank_measures", "verdict"]
