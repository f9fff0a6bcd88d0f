"""The report's headline: per grid (model x data set), the numbers a reader wants first.

One row per grid of a results frame, every value taken from :mod:`kerasgen.analysis`
exactly as the report's sections print it: Table 3's coefficient (the SCC of the metric
with batch size / learning rate, on the cells' means over seeds) with its interval over
seeds (three or more seeds), the range of two seeds' own coefficients (two) or none
(one), its permutation p and whether it survives Holm over Table 3's grids; the ratio
model's test of beta_BS + beta_LR = 0 ("does only the ratio matter?"); the premise
check's warnings; the noise floor (do the cells differ by more than seed noise?); and how
many of the grid's tests (Tables 1-3) cannot reach alpha at all.

``headline_rows`` builds the frame from analyses already computed (the report computes
them once); ``summary`` (``kerasgen.summary``) opens a store and computes them; the
``findings_*`` functions render the box at the top of the Markdown and LaTeX reports, and
``summary_text`` the one-line-per-grid text of ``kerasgen report --format summary``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from kerasgen import analysis as A
from kerasgen import vocabulary as V
from kerasgen.report.format import column_label, latex_escape, md_label, md_text

SUMMARY_COLUMNS: list[str] = [
    "study", "model", "dataset", "metric", "cells", "seeds", "scc", "interval",
    "ci_low", "ci_high", "p_perm", "alpha", "significant", "holm", "p_holm",
    "only_ratio", "p_ratio", "beta_sum", "above_noise", "noise_p", "seed_sd",
    "warnings", "tests", "cannot_reach", "slope", "reason",
]
"""Columns of :func:`summary` / :func:`headline_rows`: ``cells`` (finished cells behind
the coefficient), ``seeds`` (most seeds behind it), ``scc`` (Table 3), ``interval`` (the
kind of interval, as the report prints it: ``"95% CI"``, ``"range of 2 seeds"`` or
``"none"``) with ``ci_low`` / ``ci_high`` (the interval's ends, or the two seeds'
coefficients), ``p_perm`` (the verdict's p), ``significant`` (p_perm < alpha), ``holm``
(still below alpha after Holm over Table 3's grids) and ``p_holm``, ``only_ratio`` (the
ratio model does not reject beta_BS + beta_LR = 0; None without a model) with
``p_ratio`` and ``beta_sum`` (per doubling of both), ``above_noise`` (the cells differ by
more than seed noise; None with one seed) with the ANOVA's ``noise_p`` and the pooled
``seed_sd``, ``warnings`` (the premise check's, a tuple of sentences), ``tests`` (the
grid's tests with a coefficient, Tables 1-3), ``cannot_reach`` (of them, those whose
permutation test cannot give p < alpha), ``slope`` (Theil-Sen, per doubling of the
ratio) and ``reason`` (why there is no coefficient)."""


def _key(row) -> tuple[str, str, str]:
    return (str(row["study"]), str(row["model"]), str(row["dataset"]))


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def headline_rows(tests: pd.DataFrame, models: pd.DataFrame, noise: pd.DataFrame,
                  premise: pd.DataFrame) -> pd.DataFrame:
    """The headline frame (:data:`SUMMARY_COLUMNS`) of one metric from its tests
    (``spearman_tests``), ratio models (``ratio_model``), noise floor (``noise_floor``)
    and premise check (``premise_check``)."""
    if tests.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    by_model = {_key(r): r for _, r in models.iterrows()}
    by_noise = {_key(r): r for _, r in noise.iterrows()}
    by_premise = {_key(r): r for _, r in premise.iterrows()}
    rows = []
    for _, t in tests[tests["table"] == 3].iterrows():
        key = _key(t)
        grid = tests[(tests["study"] == key[0]) & (tests["model"] == key[1])
                     & (tests["dataset"] == key[2])]
        tested = grid[grid["reason"].isna()]
        reachable = tested["can_reach"] if "can_reach" in tested.columns else pd.Series()
        seeds = int(t["n_seeds"]) if _finite(t.get("n_seeds")) else 0
        has_coef = not isinstance(t["reason"], str)
        if not has_coef:
            kind, low, high = "none", math.nan, math.nan
        elif seeds >= A.MIN_INTERVAL_SEEDS and _finite(t.get("ci_low")):
            kind = f"{float(t['confidence']):.0%} CI"
            low, high = float(t["ci_low"]), float(t["ci_high"])
        elif seeds == 2 and int(t.get("seeds_tested", 0) or 0) >= 2:
            kind = "range of 2 seeds"
            low, high = float(t["seed_scc_min"]), float(t["seed_scc_max"])
        else:
            kind, low, high = "none", math.nan, math.nan
        alpha = float(t["alpha"])
        m = by_model.get(key)
        p_ratio = float(m["p_ratio"]) if m is not None and _finite(m["p_ratio"]) else math.nan
        nz = by_noise.get(key)
        replicated = nz is not None and int(nz["n_replicated"]) > 0 and _finite(nz["anova_p"])
        pr = by_premise.get(key)
        p_holm = float(t["p_holm"]) if _finite(t.get("p_holm")) else math.nan
        rows.append({
            "study": key[0], "model": key[1], "dataset": key[2], "metric": str(t["metric"]),
            "cells": int(t["n"]), "seeds": seeds,
            "scc": float(t["scc"]) if has_coef else math.nan,
            "interval": kind, "ci_low": low, "ci_high": high,
            "p_perm": float(t["p_perm"]) if has_coef else math.nan, "alpha": alpha,
            "significant": bool(has_coef and bool(t["significant"])),
            "holm": bool(math.isfinite(p_holm) and p_holm < alpha), "p_holm": p_holm,
            "only_ratio": (None if not math.isfinite(p_ratio)
                           else bool(p_ratio >= float(m["alpha"]))),  # type: ignore[index]
            "p_ratio": p_ratio,
            "beta_sum": float(m["beta_sum"]) if m is not None and _finite(m["beta_sum"])
            else math.nan,
            "above_noise": bool(nz["above_noise"]) if replicated else None,  # type: ignore[index]
            "noise_p": float(nz["anova_p"]) if replicated else math.nan,  # type: ignore[index]
            "seed_sd": float(nz["seed_sd"]) if nz is not None and _finite(nz["seed_sd"])
            else math.nan,
            "warnings": tuple(pr["warnings"]) if pr is not None else (),
            "tests": int(len(tested)),
            "cannot_reach": int((reachable == False).sum()),  # noqa: E712 (object column)
            "slope": float(t["slope"]) if _finite(t.get("slope")) else math.nan,
            "reason": t["reason"] if not has_coef else None,
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def headline(frame: pd.DataFrame, metric: str = A.PAPER_METRIC, alpha: float = 0.005,
             pvalue: A.PValueMethod = "auto", include_diverged: bool = True,
             permutations: int = 9999, seed: int = 0, confidence: float = 0.95,
             train_accuracy_threshold: float = 0.99) -> pd.DataFrame:
    """The headline frame of a results frame (``load_results``' columns)."""
    if frame.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    frame = A.add_derived_metrics(frame)
    tests = A.spearman_tests(frame, metric=metric, alpha=alpha, pvalue=pvalue,
                             include_diverged=include_diverged, permutations=permutations,
                             seed=seed, confidence=confidence)
    models = A.ratio_model(frame, metric=metric, include_diverged=include_diverged,
                           confidence=confidence)
    noise = A.noise_floor(frame, metric=metric, include_diverged=include_diverged)
    premise = A.premise_check(frame, train_accuracy_threshold=train_accuracy_threshold,
                              include_diverged=include_diverged, metric=metric)
    return headline_rows(tests, models, noise, premise)


def summary(db: str | Path, study: str | None = None, metric: str = A.PAPER_METRIC,
            alpha: float = 0.005, permutations: int = 9999, confidence: float = 0.95,
            include_diverged: bool = True) -> pd.DataFrame:
    """One row per grid (study x model x data set) of a store: the report's headline
    numbers as a ``pandas.DataFrame`` (columns :data:`SUMMARY_COLUMNS`), as Keras Tuner's
    ``results_summary()`` or Optuna's ``trials_dataframe()`` give theirs. The values are
    those of :func:`kerasgen.analysis.spearman_tests` (Table 3), ``ratio_model``,
    ``noise_floor`` and ``premise_check`` with the report's defaults."""
    from kerasgen.store import load_results

    frame = load_results(db, study=study)
    return headline(frame, metric=metric, alpha=alpha, permutations=permutations,
                    confidence=confidence, include_diverged=include_diverged)


# --------------------------------------------------------------------------- words


def interval_words(row) -> str:
    """``95% CI [-0.91, -0.72]``, ``range of 2 seeds -0.97 to -0.93``, or why none."""
    if row["interval"] == "range of 2 seeds":
        return f"range of 2 seeds {row['ci_low']:.2f} to {row['ci_high']:.2f}"
    if row["interval"] != "none":
        return f"{row['interval']} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
    if int(row["seeds"]) <= 1:
        return "one seed: no interval"
    return "no interval"


def verdict_words(row, grids: int) -> str:
    """The coefficient's verdict and its Holm verdict over Table 3's grids."""
    alpha = float(row["alpha"])
    if isinstance(row["reason"], str):
        return f"no coefficient ({row['reason']})"
    head = (f"p perm. = {A.format_p(row['p_perm'])}, "
            + (f"significant at {alpha:g}" if row["significant"]
               else f"not significant at {alpha:g}"))
    if grids > 1:
        holm = (f"survives Holm over the {grids} grids" if row["holm"]
                else f"does not survive Holm over the {grids} grids")
    else:
        holm = "survives Holm (one grid)" if row["holm"] else "does not survive Holm (one grid)"
    return f"{head}; {holm}"


def ratio_words(row) -> str:
    if row["only_ratio"] is None or (isinstance(row["only_ratio"], float)
                                     and math.isnan(row["only_ratio"])):
        return "Only the ratio? no model (too few cells)"
    amount = V.metric_amount(str(row["metric"]), float(row["beta_sum"]), signed=True)
    if row["only_ratio"]:
        return (f"Only the ratio? consistent with it (β_BS + β_LR = {amount}, "
                f"{A.format_p_eq(row['p_ratio'])})")
    return (f"Only the ratio? no: batch size and learning rate do not act only through "
            f"their ratio (β_BS + β_LR = {amount}, {A.format_p_eq(row['p_ratio'])})")


def noise_words(row) -> str:
    metric = str(row["metric"])
    if row["above_noise"] is None or (isinstance(row["above_noise"], float)
                                      and math.isnan(row["above_noise"])):
        return "Seeds: one seed per cell, so the noise floor is unknown"
    sd = (f"; seed SD {V.metric_amount(metric, float(row['seed_sd']))}"
          if _finite(row["seed_sd"]) else "")
    if row["above_noise"]:
        return (f"Seeds: the cells differ by more than seed noise (ANOVA "
                f"{A.format_p_eq(row['noise_p'])}{sd})")
    return (f"Seeds: the cells do not differ by more than seed noise (ANOVA "
            f"{A.format_p_eq(row['noise_p'])}{sd}): the pattern may be noise")


def reach_words(row) -> str:
    alpha = float(row["alpha"])
    n, k = int(row["tests"]), int(row["cannot_reach"])
    if not k:
        return f"Every one of its {n} tests (Tables 1-3) can reach p < {alpha:g}"
    return (f"{k} of its {n} tests (Tables 1-3) cannot reach α = {alpha:g}: too few cells "
            "for their permutation test, so \"not significant\" says nothing there")


def _coefficient(row) -> str:
    if isinstance(row["reason"], str):
        return "SCC n/a"
    return f"SCC {row['scc']:+.2f} ({interval_words(row)})"


def _grid_header(row, several: bool) -> str:
    key = (row["study"], row["model"], row["dataset"])
    return (f"{column_label(key, several)} ({int(row['cells'])} cells, "
            f"{int(row['seeds'])} seed{'s' if int(row['seeds']) != 1 else ''})")


def findings_markdown(rows: pd.DataFrame, metric_label: str) -> str:
    """The findings box of the Markdown report: a paragraph per grid, its lines below."""
    if rows.empty:
        return "_No tests yet._\n"
    several = rows["study"].nunique() > 1
    grids = len(rows)
    alpha = float(rows["alpha"].iloc[0])
    out = [f"Metric: {md_text(metric_label)} against batch size / learning rate (Table 3, "
           f"on the cells' means over seeds); α = {alpha:g}.\n"]
    for _, row in rows.iterrows():
        key = (row["study"], row["model"], row["dataset"])
        head = md_label(key, several)
        rest = _grid_header(row, several)[len(column_label(key, several)):]
        out.append(f"- **{head}** {md_text(rest.strip())}: {md_text(_coefficient(row))}; "
                   f"{md_text(verdict_words(row, grids))}.")
        out.append(f"  - {md_text(ratio_words(row))}.")
        out.append(f"  - {md_text(noise_words(row))}.")
        for warning in row["warnings"]:
            out.append(f"  - **Warning**: {md_text(warning)}.")
        out.append(f"  - {md_text(reach_words(row))}.")
    return "\n".join(out) + "\n"


def findings_latex(rows: pd.DataFrame, metric_label: str) -> str:
    """The findings box of the LaTeX report: a framed list, one item per grid."""
    if rows.empty:
        return "% no findings\n"
    several = rows["study"].nunique() > 1
    grids = len(rows)
    alpha = float(rows["alpha"].iloc[0])
    lines = [r"\section*{Findings}", r"\noindent\fbox{\begin{minipage}{0.96\linewidth}",
             rf"Metric: {latex_escape(metric_label)} against batch size / learning rate "
             f"(Table 3, on the cells' means over seeds); $\\alpha = {alpha:g}$.",
             r"\begin{itemize}"]
    for _, row in rows.iterrows():
        lines.append(rf"\item \textbf{{{latex_escape(_grid_header(row, several))}}}: "
                     f"{latex_escape(_coefficient(row))}; "
                     f"{latex_escape(verdict_words(row, grids))}.")
        lines.append(r"\begin{itemize}")
        lines.append(rf"\item {latex_escape(ratio_words(row))}.")
        lines.append(rf"\item {latex_escape(noise_words(row))}.")
        for warning in row["warnings"]:
            lines.append(rf"\item \textbf{{Warning}}: {latex_escape(warning)}.")
        lines.append(rf"\item {latex_escape(reach_words(row))}.")
        lines.append(r"\end{itemize}")
    lines += [r"\end{itemize}", r"\end{minipage}}", ""]
    return "\n".join(lines) + "\n"


def summary_text(rows: pd.DataFrame) -> str:
    """One line per grid: ``kerasgen report --format summary``."""
    if rows.empty:
        return "No grid has a coefficient yet.\n"
    several = rows["study"].nunique() > 1
    grids = len(rows)
    lines = []
    for _, row in rows.iterrows():
        only = ("only ratio: n/a" if row["only_ratio"] is None else
                f"only ratio: {'yes' if row['only_ratio'] else 'no'} "
                f"({A.format_p_eq(row['p_ratio'])})")
        noise = ("noise floor: unknown (1 seed)" if row["above_noise"] is None else
                 f"above seed noise: {'yes' if row['above_noise'] else 'no'}")
        warn = f"{len(row['warnings'])} warning(s)" if len(row["warnings"]) else "no warnings"
        lines.append(
            f"{_grid_header(row, several)}: {_coefficient(row)}; "
            f"{verdict_words(row, grids)}; {only}; {noise}; {warn}; "
            f"{int(row['cannot_reach'])} of {int(row['tests'])} tests cannot reach α")
    return "\n".join(" ".join(line.split()) for line in lines) + "\n"


__all__ = ["SUMMARY_COLUMNS", "findings_latex", "findings_markdown", "headline",
           "headline_rows", "summary", "summary_text"]
