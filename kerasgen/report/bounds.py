"""The PAC-Bayes bound section of the report: the terms ``kerasgen bound`` stored (table
``bounds``) against the grid's ratio |S|/eta and the measured generalization gaps, read at
the same weights as the bound (the final epoch's: ``kerasgen bound`` estimates A and C at
each run's final weights). ``gap`` = clean train accuracy - test accuracy, the 0-1 error
gap, is the nearest of the measured numbers to what Theorems 1-2 bound (a [0, 1] loss
averaged over the posterior Q); ``loss_gap`` = test loss - clean train loss is
cross-entropy at one point of weight space, unbounded and not Q's average, shown beside it.

No TensorFlow here (numpy, pandas, scipy through :mod:`kerasgen.analysis`; matplotlib
inside the figure function with the Agg backend).

Public API
----------
- ``BOUND_TERMS``: the columns correlated (``theorem1``, ``theorem2``, ``kl``,
  ``trace_ca_inv``, ``logdet_sigma``, ``d_eff``)
- ``load_bounds(db, study=None) -> DataFrame``: one row per (run, params) with the
  run's coordinates, ``ratio``, ``gap`` / ``loss_gap`` at the kept epoch and
  ``final_gap`` / ``final_loss_gap`` at the final epoch (the bound's weights; NaN for a
  store written before the clean training metrics existed) and, from ``report_json``,
  ``d_eff``, ``treatment``, ``seconds`` and the whole-space estimates of the
  matrix-free estimator (``ws_trace_ca_inv``, ``ws_critical_ratio``, ``ws_assumption2``)
  where present
- ``near_minimum(inference_loss, training_loss) -> Series``: were A and C taken at a
  minimum (the section reports the correlations without the cells that were not)
- ``cell_means(frame) -> DataFrame``: the runs of each cell averaged over their seeds
- ``bound_correlations(frame) -> DataFrame``: Spearman of every term vs the ratio, the
  gap and the loss gap (both at the final weights) over the cells' means per (study,
  model, dataset, params, estimator)
- ``render_bounds_section(db, study=None) -> str``: Markdown
- ``write_bound_figures(db, out_dir, study=None) -> list[Path]``: ``bounds_<params>.png``
  (a row of panels per model x data set: bound vs ratio (log x), bound vs gap)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from kerasgen import analysis as A
from kerasgen.report.format import md_text
from kerasgen.store import load_bound_rows, load_results

BOUND_TERMS = ("theorem1", "theorem2", "kl", "trace_ca_inv", "logdet_sigma", "d_eff")
TERM_LABELS = {
    "theorem1": "Theorem 1 (eq. 16)",
    "theorem2": "Theorem 2 (eq. 18)",
    "kl": "KL(Q||P)",
    "trace_ca_inv": "tr(C A^-1)",
    "logdet_sigma": "log det Sigma",
    "d_eff": "d_eff (dimensions kept)",
}


def _from_report(text) -> dict:
    try:
        rep = json.loads(text) if isinstance(text, str) else {}
    except (TypeError, ValueError):
        rep = {}
    cur = rep.get("curvature", {}) if isinstance(rep, dict) else {}
    ws = rep.get("bounds", {}).get("whole_space") if isinstance(rep.get("bounds"), dict) else None
    out = {
        "inference_train_loss": cur.get("train_loss"),
        "d_eff": cur.get("d_eff"),
        "treatment": cur.get("treatment"),
        "project_rtol": cur.get("project_rtol"),
        "damping": cur.get("damping"),
        "seconds": rep.get("seconds"),
        "n_train": rep.get("n_train"),
        "ws_trace_ca_inv": ws.get("trace_CAinv") if ws else None,
        "ws_trace_ca_inv_stderr": ws.get("trace_CAinv_stderr") if ws else None,
        "ws_critical_ratio": ws.get("critical_ratio") if ws else None,
        "ws_assumption2": ws.get("assumption2") if ws else None,
        "ws_theorem2": ws.get("theorem2") if ws else None,
    }
    return out


def load_bounds(db, study: str | None = None) -> pd.DataFrame:
    """The ``bounds`` rows joined with their cells (see the module docstring)."""
    bounds = load_bound_rows(db)
    cells = A.add_derived_metrics(load_results(db, study=study))
    cells["final_gap"] = cells["final_train_eval_accuracy"] - cells["final_test_accuracy"]
    cells["final_loss_gap"] = cells["final_test_loss"] - cells["final_train_eval_loss"]
    keep = ["study", "cell_id", "model", "dataset", "batch_size", "learning_rate", "seed",
            "ratio", "status", "test_accuracy", "train_eval_accuracy", "gap", "loss_gap",
            "final_gap", "final_loss_gap", "final_train_loss"]
    frame = bounds.merge(cells[keep], on="cell_id", how="inner")
    extra = pd.DataFrame([_from_report(t) for t in frame["report_json"]], index=frame.index)
    if len(frame):
        frame = pd.concat([frame, extra], axis=1)
    else:
        for col in extra.columns if len(extra.columns) else _from_report("{}").keys():
            frame[col] = pd.Series(dtype=float)
    for col in ("theorem1", "theorem1_discrete", "theorem2", "kl", "trace_ca_inv",
                "logdet_sigma", "critical_ratio", "commutator", "d_eff", "ratio", "gap",
                "loss_gap", "final_gap", "final_loss_gap"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    frame["assumption2"] = pd.to_numeric(frame["assumption2"], errors="coerce").astype("boolean")
    frame["near_minimum"] = near_minimum(frame["inference_train_loss"], frame["final_train_loss"])
    order = ["study", "model", "dataset", "params", "cell_id"]
    return frame.sort_values(order).reset_index(drop=True)


def near_minimum(inference_loss, training_loss) -> pd.Series:
    """Whether A and C were taken near a minimum: the mean training loss at the final
    weights in inference mode (batch norm with its moving statistics, as A and C are
    computed) is at most ``max(2 x, x + 0.05)`` of the loss the runner recorded in
    training mode (``final_train_loss``). Where the moving statistics do not match the
    network (seen on the demo's VGG cells that hit the epoch cap), the inference-mode
    loss is far higher, the point is no minimum and Section 3's premise fails.
    Unknown (NaN) losses give ``<NA>``."""
    inf = pd.to_numeric(pd.Series(inference_loss), errors="coerce").astype(float)
    tr = pd.to_numeric(pd.Series(training_loss), errors="coerce").astype(float)
    ok = inf <= np.maximum(2 * tr, tr + 0.05)
    out = ok.astype("boolean")
    out[inf.isna() | tr.isna()] = pd.NA
    return out


def _finite_pairs(x: pd.Series, y: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(xa) & np.isfinite(ya)
    return xa[ok], ya[ok]


_AGAINST = {"ratio": "ratio", "gap": "final_gap", "loss_gap": "final_loss_gap"}
"""Result name -> the column it correlates: the gaps at the final weights, where the
bound is computed."""
_CELL_KEYS = ["study", "model", "dataset", "params", "estimator", "batch_size",
              "learning_rate"]


def cell_means(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of :func:`load_bounds` averaged over each cell's seeds (runs of a cell
    are replicates: correlating runs would count a cell once per seed). Non-finite
    terms (an infinite or undefined bound) are left out of a cell's mean; a cell whose
    every run has one keeps it (inf stays inf, NaN stays NaN). ``runs``: how many."""
    if frame.empty:
        return frame.assign(runs=pd.Series(dtype=int))
    numeric = [c for c in (*BOUND_TERMS, "ratio", "gap", "loss_gap", "final_gap",
                           "final_loss_gap") if c in frame.columns]

    def mean(values: pd.Series) -> float:
        v = values.to_numpy(dtype=float)
        finite = v[np.isfinite(v)]
        if len(finite):
            return float(finite.mean())
        return float(v[0]) if len(v) and np.isinf(v).all() else float("nan")

    grouped = frame.groupby(_CELL_KEYS, sort=True)
    out = grouped[numeric].agg(mean)
    out["runs"] = grouped.size()
    return out.reset_index()


def bound_correlations(frame: pd.DataFrame, terms=BOUND_TERMS) -> pd.DataFrame:
    """Spearman's rho of each term with the ratio, the gap and the loss gap (both at the
    final weights, where the bound is computed) per grid and parameter set, over the
    cells' means over seeds (non-finite values -- an infinite or undefined bound, a gap
    a store without clean training metrics lacks -- left out)."""
    rows = []
    keys = ["study", "model", "dataset", "params", "estimator"]
    for key, grid in cell_means(frame).groupby(keys, sort=True):
        for term in terms:
            rec = dict(zip(keys, key), term=term)
            for name, against in _AGAINST.items():
                x, y = _finite_pairs(grid[against], grid[term])
                res = A.spearman(x, y)
                rec[f"rho_{name}"] = res.scc
                rec[f"p_{name}"] = res.p_value
                rec[f"n_{name}"] = res.n
                rec[f"reason_{name}"] = res.reason
            rows.append(rec)
    cols = keys + ["term"] + [f"{what}_{name}" for name in _AGAINST
                              for what in ("rho", "p", "n", "reason")]
    return pd.DataFrame(rows, columns=cols)


def _cells_and_runs(grid: pd.DataFrame) -> str:
    cells = int(len(grid.drop_duplicates(["batch_size", "learning_rate"])))
    if len(grid) == cells:
        return f"{cells} cells"
    return f"{cells} cells, {len(grid)} runs (averaged per cell)"


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if float(v).is_integer() and abs(v) < 1e7:
        return f"{int(v):,}"
    return f"{v:.{digits}g}"


def _rho(rho, p, n, reason) -> str:
    if isinstance(reason, str) and reason:
        return f"— ({reason})"
    return f"{rho:+.2f} (p={A.format_p(p)}, n={n})"


def _range(values) -> str:
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), float)
    v = v[np.isfinite(v)]
    if not v.size:
        return "—"
    return f"{_fmt(float(v.min()))} … {_fmt(float(v.max()))}"


def _ws_theorem2(values) -> str:
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), float)
    v = v[~np.isnan(v)]
    n_inf = int(np.isinf(v).sum())
    if n_inf and n_inf == len(v):
        return (f"infinite (vacuous) in all {n_inf} cells: C has rank < n <= d, so the "
                f"commuting-form Sigma is singular")
    text = _range(v)
    return text + (f"; infinite in {n_inf} cells (singular C)" if n_inf else "")


def render_bounds_section(db, study: str | None = None) -> str:
    """Markdown: what was estimated and how, then per grid and parameter set the
    Spearman correlations of each bound term with the ratio and with the measured gap,
    Assumption 2, and the critical ratio r* against the grid's ratios."""
    from kerasgen.vocabulary import display_name

    frame = load_bounds(db, study=study)
    lines = ["## PAC-Bayes bound terms (He, Liu & Tao 2019, Theorems 1-2)", ""]
    if frame.empty:
        lines.append("No bound terms in this store yet: run `kerasgen bound --db "
                     f"{db}` (after the cells have finished).")
        return "\n".join(lines) + "\n"
    lines += [
        "Per finished cell, at its final weights and on its training set (normalized, no "
        "augmentation; batch norm in inference mode): A = Hessian of the mean training loss "
        "and C = covariance of the per-example gradients (mean-centred, 1/n), restricted to "
        "the parameters named below. Where A is not positive definite the bound is "
        "evaluated on the subspace where A's and then C's eigenvalues exceed a relative "
        "threshold (`project`; the posterior equals the prior N(0, I) elsewhere), or with A "
        "damped (`damp`) -- see `report_json` of each row. Terms: Theorem 1 = eq. 16 "
        "(McAllester with Sigma from the Lyapunov equation 17), Theorem 2 = eq. 18 "
        "(undefined where C is singular), KL(Q||P), tr(C A^-1), log det Sigma. The measured "
        "gaps are read at the same final weights: `gap` = clean train accuracy - test "
        "accuracy, the 0-1 error gap, the nearest of these numbers to what Theorems 1-2 "
        "bound (a [0, 1] loss averaged over the posterior Q); `loss gap` = test loss - clean "
        "train loss, cross-entropy at one point of weight space (unbounded, and not Q's "
        "average: beside it, not the theorems' quantity). The clean training metrics are a "
        "fixed training subset measured as the test set. Each cell's runs (seeds) are "
        "averaged first; Spearman's rho over the cells of each grid (p asymptotic; "
        "non-finite values left out).",
        "",
    ]
    corr = bound_correlations(frame)
    keys = ["study", "model", "dataset", "params", "estimator"]
    several = frame["study"].nunique() > 1
    groups = sorted(frame.groupby(keys, sort=True),
                    key=lambda kv: (kv[0][:3], kv[0][3] != "classifier", kv[0][3:]))
    for key, grid in groups:
        st, model, dataset, params, estimator = key
        title = f"### {md_text(display_name(model))} on {md_text(display_name(dataset))}" + (
            f" (study {md_text(st)})" if several else "")
        lines += [title, ""]
        treatments = ", ".join(sorted({str(t) for t in grid["treatment"].dropna()})) or "—"
        d = sorted({int(v) for v in grid["n_params"].dropna()})
        lines.append(
            f"Parameters: **{params}** (d = {', '.join(map(str, d))}); estimator: "
            f"**{estimator}**; treatment: {treatments}; dimensions kept d_eff: "
            f"{_range(grid['d_eff'])}; examples: {_range(grid['n_examples'])}; "
            f"delta = {_range(grid['delta'])}; {_cells_and_runs(grid)}.")
        lines.append("")
        means = cell_means(grid)
        gap_rho = A.spearman(*_finite_pairs(means["ratio"], means["final_gap"]))
        loss_rho = A.spearman(*_finite_pairs(means["ratio"], means["final_loss_gap"]))
        lines.append(f"Measured gaps (final weights) vs ratio (the paper's prediction: "
                     f"positive): gap "
                     f"{_rho(gap_rho.scc, gap_rho.p_value, gap_rho.n, gap_rho.reason)}, "
                     f"loss gap "
                     f"{_rho(loss_rho.scc, loss_rho.p_value, loss_rho.n, loss_rho.reason)}.")
        lines.append("")
        lines += ["| term | range | Spearman vs ratio | Spearman vs gap (0-1 error) | "
                  "Spearman vs loss gap |", "|---|---|---|---|---|"]
        sub = corr[(corr["study"] == st) & (corr["model"] == model) & (corr["dataset"] == dataset)
                   & (corr["params"] == params) & (corr["estimator"] == estimator)]
        for r in sub.itertuples():
            lines.append(f"| {TERM_LABELS.get(r.term, r.term)} | {_range(grid[r.term])} | "
                         f"{_rho(r.rho_ratio, r.p_ratio, r.n_ratio, r.reason_ratio)} | "
                         f"{_rho(r.rho_gap, r.p_gap, r.n_gap, r.reason_gap)} | "
                         f"{_rho(r.rho_loss_gap, r.p_loss_gap, r.n_loss_gap, r.reason_loss_gap)} |")
        lines.append("")
        off = grid[grid["near_minimum"] == False]  # noqa: E712 (nullable boolean)
        if len(off):
            at_min = grid[grid["near_minimum"] == True]  # noqa: E712
            kept = cell_means(at_min)
            parts = []
            for term, label in (("theorem1", "Theorem 1"), ("theorem2", "Theorem 2")):
                r1 = A.spearman(*_finite_pairs(kept["ratio"], kept[term]))
                r2 = A.spearman(*_finite_pairs(kept["final_gap"], kept[term]))
                parts.append(f"{label} vs ratio {_rho(r1.scc, r1.p_value, r1.n, r1.reason)}, "
                             f"vs gap {_rho(r2.scc, r2.p_value, r2.n, r2.reason)}")
            listed = ", ".join(
                f"{int(r.cell_id)} (|S|={int(r.batch_size)}, eta={r.learning_rate:g}: "
                f"{_fmt(r.inference_train_loss)} vs {_fmt(r.final_train_loss)})"
                for r in off.itertuples())
            what = "runs" if grid["seed"].nunique() > 1 else "cells"
            lines += [
                f"**Not at a minimum in {len(off)} of {len(grid)} {what}**: the mean training "
                f"loss at the final weights in inference mode (batch norm with its moving "
                f"statistics, as A and C are computed) is far above the loss recorded in "
                f"training -- {what} {listed}. Section 3 assumes a minimum; on the "
                f"{len(at_min)} remaining {what}"
                + ("" if what == "cells" else f" ({len(kept)} cells)") + ": "
                + "; ".join(parts) + ".", ""]
        a2 = grid["assumption2"].dropna()
        ratios = grid["ratio"].astype(float)
        rstar = grid["critical_ratio"].astype(float)
        above = int(np.sum(ratios.to_numpy() > rstar.to_numpy()))
        undefined_t2 = int(grid["theorem2"].isna().sum())
        inf_t1 = int(np.isinf(grid["theorem1"].astype(float)).sum())
        lines.append(
            f"Assumption 2 (d > tr(C A^-1) eta / 2|S|, i.e. r > r*) holds in "
            f"{int(a2.sum())} of {len(a2)} cells; r* = tr(C A^-1)/(2 d) ranges "
            f"{_range(rstar)} against the grid's ratios {_range(ratios)} "
            f"({above} cells above their own r*). Commutator ||AC - CA||/(||A|| ||C||): "
            f"{_range(grid['commutator'])}."
            + (f" Theorem 2 undefined (singular C) in {undefined_t2} cells."
               if undefined_t2 else "")
            + (f" Theorem 1 infinite (vacuous) in {inf_t1} cells." if inf_t1 else ""))
        if grid["ws_trace_ca_inv"].notna().any():
            ws_a2 = grid["ws_assumption2"].dropna()
            lines.append("")
            lines.append(
                f"Whole network (CG / SLQ, damped A): tr(C A^-1) {_range(grid['ws_trace_ca_inv'])}"
                f" (standard errors {_range(grid['ws_trace_ca_inv_stderr'])}); r* "
                f"{_range(grid['ws_critical_ratio'])}; Assumption 2 holds in "
                f"{int(ws_a2.astype(bool).sum())} of {len(ws_a2)} cells; Theorem 2 (commuting "
                f"form) {_ws_theorem2(grid['ws_theorem2'])}.")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_bound_figures(db, out_dir, study: str | None = None, dpi: int = 120) -> list[Path]:
    from kerasgen.report.figures import literal_text

    return literal_text(_write_bound_figures)(db, out_dir, study, dpi)


def _write_bound_figures(db, out_dir, study: str | None = None, dpi: int = 120) -> list[Path]:
    """``bounds_<params>.png`` per parameter set: a row per model x data set, with the
    bound terms of Theorems 1 and 2 against the ratio |S|/eta (log x) and against the
    measured gap; Spearman's rho in each panel's title. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from kerasgen.naming import file_stem
    from kerasgen.vocabulary import display_name

    frame = load_bounds(db, study=study)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        return []
    paths = []
    several = frame["study"].nunique() > 1
    for params, sub in frame.groupby("params", sort=True):
        grids = list(sub.groupby(["study", "model", "dataset", "estimator"], sort=True))
        fig, axes = plt.subplots(len(grids), 2, figsize=(11, 3.9 * len(grids)), squeeze=False)
        for row, ((st, model, dataset, _estimator), grid) in enumerate(grids):
            grid = cell_means(grid)  # one point per cell, its seeds averaged
            name = f"{display_name(model)} / {display_name(dataset)}"
            name += f" ({st})" if several else ""
            bss = sorted(grid["batch_size"].unique())
            cmap = plt.get_cmap("viridis", max(len(bss), 2))
            for col, against in enumerate(("ratio", "final_gap")):
                ax = axes[row][col]
                titles = []
                for term, marker, label in (("theorem1", "o", "Thm 1"), ("theorem2", "^", "Thm 2")):
                    x, y = grid[against].astype(float), grid[term].astype(float)
                    ok = np.isfinite(x) & np.isfinite(y)
                    for i, bs in enumerate(bss):
                        m = ok & (grid["batch_size"] == bs)
                        ax.scatter(x[m], y[m], marker=marker, color=cmap(i), s=36,
                                   alpha=0.85 if term == "theorem1" else 0.55,
                                   edgecolors="black" if term == "theorem1" else "none",
                                   linewidths=0.4,
                                   label=f"{label}, |S|={bs}" if col == 0 else None)
                    res = A.spearman(*_finite_pairs(x, y))
                    titles.append(f"{label} ρ={res.scc:+.2f}" if not res.reason
                                  else f"{label} ρ=—")
                if against == "ratio":
                    ax.set_xscale("log")
                    ax.set_xlabel("batch size / learning rate")
                else:
                    ax.set_xlabel("0-1 error gap (clean train acc − test acc, final weights)")
                ax.set_ylabel("bound term (sqrt of eq. 16 / 18)")
                ax.set_title(f"{name}: vs {'ratio' if against == 'ratio' else 'gap'}\n"
                             + ", ".join(titles), fontsize=9)
                ax.grid(True, alpha=0.3)
            axes[row][0].legend(fontsize=6.5, ncol=2, loc="best")
        d = sorted({int(v) for v in sub["n_params"].dropna()})
        fig.suptitle(f"PAC-Bayes bound terms, params={params} (d={', '.join(map(str, d))}), "
                     f"estimator {', '.join(sorted(sub['estimator'].unique()))}", fontsize=10)
        fig.tight_layout()
        path = out / f"bounds_{file_stem(params)}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


__all__ = ["BOUND_TERMS", "bound_correlations", "cell_means", "load_bounds",
           "render_bounds_section", "write_bound_figures"]
