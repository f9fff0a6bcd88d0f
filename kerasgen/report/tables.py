"""The report's text: Tables 1-3 laid out as in the paper (Markdown, LaTeX, CSV), the
direction summary, the other metrics and the premise check. ``render_report`` is the entry
point ``kerasgen report`` calls."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from kerasgen import analysis as A
from kerasgen import vocabulary as V
from kerasgen.outputs import spreadsheet_safe
from kerasgen.report.format import (
    column_label,
    decimals,
    format_p,
    format_p_latex,
    format_value,
    latex_escape,
    md_label,
    md_text,
)
from kerasgen.report.headline import findings_latex, findings_markdown, headline_rows
from kerasgen.report.layout import (
    FIGURES_HEADING,
    FINDINGS_HEADING,
    LEGEND_HEADING,
    MORE_FIGURES_HEADING,
    figures_latex,
    figures_markdown,
    is_key_figure,
)
from kerasgen.vocabulary import DIVERGED, DONE, FAILED, PENDING, RUNNING

FORMATS: tuple[str, ...] = ("markdown", "csv", "latex")

_TABLE_TITLES = {
    1: "Table 1: SCC and p of batch size to {metric} for each learning rate (LR)",
    2: "Table 2: SCC and p of learning rate to {metric} for each batch size (BS)",
    3: "Table 3: SCC and p of batch size / learning rate to {metric}",
}
"""Each table's title; the metric is named by its short label (``best test accuracy``),
its definition (the kept-epoch rule) stated once, under *How to read the tables*."""
_ROW_LABEL = {1: "LR", 2: "BS"}


def _columns(tests: pd.DataFrame) -> list[tuple[str, str, str]]:
    keys = tests[["study", "model", "dataset"]].drop_duplicates()
    return [tuple(map(str, row)) for row in keys.itertuples(index=False)]  # type: ignore[misc]


def _interval_reasons(tests: pd.DataFrame, ci_column: bool) -> list[str]:
    """Why coefficients that exist have no interval (the rows without a coefficient say
    so once, in the reason column)."""
    if not ci_column or "ci_reason" not in tests.columns:
        return []
    tested = tests[tests["reason"].isna()] if "reason" in tests.columns else tests
    return [r for r in tested["ci_reason"].tolist() if isinstance(r, str)]


def reach_text(row: pd.Series) -> str | None:
    """``cannot reach α (n = 4: smallest p 0.083)`` for a group whose permutation test
    cannot give p < alpha; None otherwise."""
    if row.get("can_reach") is not False:
        return None
    return (f"cannot reach α = {float(row['alpha']):g} (n = {int(row['n'])}: smallest p "
            f"{float(row['min_p']):.2g})")


def _reach_reasons(tests: pd.DataFrame) -> list[str]:
    return [t for t in (reach_text(r) for _, r in tests.iterrows()) if t]


def _reason_marks(tests: pd.DataFrame, ci_column: bool = False) -> dict[str, str]:
    reasons = [r for r in tests["reason"].tolist() if isinstance(r, str)]
    reasons += _interval_reasons(tests, ci_column)
    general = sorted({re.sub(r" \(n=\d+\)$", "", r) for r in reasons})
    general += sorted(set(_reach_reasons(tests)))
    return {r: "abcdefghijklmnopqrstuvwxyz"[i] for i, r in enumerate(general)}


def several_seeds(tests: pd.DataFrame) -> bool:
    """Whether any coefficient of a tests frame rests on two or more seeds."""
    return seed_count(tests) >= 2


def seed_count(tests: pd.DataFrame) -> int:
    """The most seeds behind a coefficient of a tests frame (0 when none)."""
    if "n_seeds" not in tests.columns or tests.empty:
        return 0
    return int(pd.to_numeric(tests["n_seeds"], errors="coerce").fillna(0).max())


def _seed_columns(tests: pd.DataFrame) -> tuple[bool, bool]:
    """(an interval column, a "range of 2 seeds" column): intervals need three or more
    seeds; with two, the table shows the range of the two seeds' coefficients."""
    seeds = pd.to_numeric(tests.get("n_seeds", pd.Series(dtype=float)), errors="coerce")
    return bool((seeds >= A.MIN_INTERVAL_SEEDS).any()), bool((seeds == 2).any())


def _seed_range(row: pd.Series) -> str:
    if int(row.get("seeds_tested", 0) or 0) < 2:
        return "n/a"
    return f"{float(row['seed_scc_min']):.2f} to {float(row['seed_scc_max']):.2f}"


def confidence_of(tests: pd.DataFrame) -> float:
    if "confidence" in tests.columns and len(tests):
        return float(tests["confidence"].iloc[0])
    return 0.95


def format_interval(low: object, high: object, digits: int = 2) -> str:
    """``[-0.91, -0.72]``; ``n/a`` when either end is missing."""
    try:
        lo, hi = float(low), float(high)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    return f"[{lo:.{digits}f}, {hi:.{digits}f}]"


def survives(row: pd.Series, column: str) -> bool:
    """The test's adjusted p-value (``p_holm``, ``p_bh``, ...) is below its alpha."""
    value = row.get(column) if hasattr(row, "get") else None
    try:
        return math.isfinite(float(value)) and float(value) < float(row["alpha"])
    except (TypeError, ValueError):
        return False


HOLM_MARK, BH_MARK, BY_MARK = "†", "‡", "§"


def _mark_for(reason: str, marks: dict[str, str]) -> str:
    return marks.get(re.sub(r" \(n=\d+\)$", "", reason), marks.get(reason, "?"))


def _table_layout(tests: pd.DataFrame, table: int):
    sub = tests[tests["table"] == table]
    keys = _columns(sub)
    several = sub["study"].nunique() > 1
    uniform_n = sub["n"].nunique() == 1 and sub["reason"].isna().all()
    group_by = A.TABLE_VARIABLE[table][1]
    values = [] if group_by is None else sorted(set(sub["group_value"].tolist()))
    lookup: dict[tuple[object, ...], pd.Series] = {}
    for _, row in sub.iterrows():
        key = (row["study"], row["model"], row["dataset"])
        gv = None if group_by is None else row["group_value"]
        lookup[(*key, gv)] = row
    return sub, keys, several, uniform_n, group_by, values, lookup


def _metric_of(tests: pd.DataFrame) -> str:
    metrics = tests["metric"].unique().tolist()
    if len(metrics) != 1:
        raise ValueError(f"expected a tests frame of one metric, got {metrics}")
    return str(metrics[0])


def family_words(sub: pd.DataFrame, table: int) -> str:
    """The family Holm / BH / BY adjusted over, in words, with its size."""
    tested = sub[sub["reason"].isna()] if "reason" in sub.columns else sub
    if table == 3:
        return f"the table's {len(tested)} test(s), one per grid"
    per_grid = tested.groupby(["study", "model", "dataset"]).size()
    size = (f"{int(per_grid.iloc[0])} tests" if per_grid.nunique() == 1 and len(per_grid)
            else "its tests")
    return f"each grid's column of this table ({size})"


def _p_methods(sub: pd.DataFrame) -> tuple[str, str]:
    paper = ", ".join(sorted(set(sub["pvalue_method"]) - {"none"})) or "none"
    perm = ", ".join(sorted(set(sub.get("p_perm_method", pd.Series(dtype=str)).dropna())
                            - {"none"})) or "none"
    return paper, perm


# --------------------------------------------------------------------------- markdown


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_markdown(tests: pd.DataFrame, table: int, best_metric: str | None = None,
                   legend: bool = True) -> str:
    """One of Tables 1-3 as a Markdown table, laid out as in the paper.

    Rows are learning rates (Table 1), batch sizes (Table 2) or a single row
    (Table 3); for each model x data set there is an SCC, its interval (three or more
    seeds) or the range of the two seeds' coefficients (two seeds), the paper's p, the
    permutation p that gives the verdict, and an n column unless every coefficient rests
    on the same n (then a footnote says it). Significant p-values are bold; groups
    without a coefficient show a lettered footnote, and those whose test cannot reach
    alpha say so in the cell ("cannot reach α") with a footnote giving n and the smallest
    p. ``legend=False`` leaves out what every table shares (what p, p perm., bold, the
    marks and the intervals mean: :func:`legend_markdown` states it once for the report)
    and keeps what is this table's own (its family, n, footnotes).
    """
    if tests.empty or not (tests["table"] == table).any():
        return "_No tests._\n"
    metric = _metric_of(tests)
    sub, keys, several, uniform_n, group_by, values, lookup = _table_layout(tests, table)
    ci_column, range_column = _seed_columns(sub)
    marks = _reason_marks(sub, ci_column)
    level = f"{confidence_of(sub):.0%} CI"
    header: list[str] = [] if group_by is None else [_ROW_LABEL[table]]
    for key in keys:
        label = md_label(key, several)
        header += ([f"{label} SCC"] + ([level] if ci_column else [])
                   + (["range of 2 seeds"] if range_column else []) + ["p", "p perm."]
                   + ([] if uniform_n else ["n"]))
    width = 3 + int(ci_column) + int(range_column) + int(not uniform_n)
    align = ["---:"] * len(header)
    lines = [_md_row(header), _md_row(align)]
    dec = decimals([float(v) for v in values]) if group_by == "learning_rate" else None

    def interval(row: pd.Series) -> str:
        text = format_interval(row.get("ci_low"), row.get("ci_high"))
        reason = row.get("ci_reason")
        if text == "n/a" and isinstance(reason, str):
            text += f" ({_mark_for(reason, marks)})"
        return text

    for gv in values if group_by is not None else [None]:
        cells: list[str] = [] if group_by is None else [format_value(gv, group_by, dec)]
        for key in keys:
            row = lookup.get((*key, gv))
            if row is None:
                cells += [""] * width
                continue
            if isinstance(row["reason"], str):
                mark = _mark_for(row["reason"], marks)
                cells += (["n/a"] + ["n/a"] * (int(ci_column) + int(range_column))
                          + [f"n/a ({mark})", "n/a"])
            else:
                perm = format_p(row["p_perm"])
                perm = f"**{perm}**" if row["significant"] else perm
                perm += ((HOLM_MARK if survives(row, "p_holm") else "")
                         + (BH_MARK if survives(row, "p_bh") else "")
                         + (BY_MARK if survives(row, "p_by") else ""))
                reach = reach_text(row)
                if reach:
                    perm += f" cannot reach α ({_mark_for(reach, marks)})"
                cells += ([f"{row['scc']:.2f}"] + ([interval(row)] if ci_column else [])
                          + ([_seed_range(row)] if range_column else [])
                          + [format_p(row["p_value"]), perm])
            if not uniform_n:
                cells.append(str(int(row["n"])))
        lines.append(_md_row(cells))
    alpha = float(sub["alpha"].iloc[0])
    paper, perm = _p_methods(sub)
    permuted = ("the grid's rows (batch sizes) and columns (learning rates) permuted, "
                "which keeps its level when a seed lifts a whole row or column"
                if table == 3 else "the group's cells permuted")
    shared: list[str] = []
    notes = [f"p: the paper's p-value ({paper}; cells taken as independent). p perm.: "
             f"{perm}, {permuted}; bold: p perm. < {alpha:g}, the report's verdict. "
             f"{HOLM_MARK} / {BH_MARK} / {BY_MARK}: still below {alpha:g} after "
             f"Holm-Bonferroni / Benjamini-Hochberg / Benjamini-Yekutieli over "
             f"{family_words(sub, table)}."] if legend else [
        f"p: {paper}; p perm.: {perm}; family of {HOLM_MARK} / {BH_MARK} / {BY_MARK}: "
        f"{family_words(sub, table)}."]
    disagree = sub[sub["reason"].isna()
                   & (sub["significant"].astype(bool) != sub["significant_paper"].astype(bool))]
    if len(disagree):
        notes.append(f"The paper's p and the permutation p disagree about {len(disagree)} "
                     "group(s).")
    methods = sorted({str(m) for m in sub["ci_method"].dropna() if m != "none"}) \
        if ci_column else []
    if methods:
        shared.append(f"{level}: {'; '.join(methods)} (seeds are the study's independent "
                      "draws; the interval covers the coefficient the grid gives with this "
                      "many seeds).")
    if range_column:
        shared.append("Range of 2 seeds: the two seeds' own coefficients (two seeds are "
                      "too few for an interval).")
    if seed_count(sub) <= 1:
        shared.append("One seed per cell: seed noise cannot be measured, so no interval "
                      f"(it needs {A.MIN_INTERVAL_SEEDS} or more seeds).")
    elif "n_runs" in sub.columns:
        shared.append("Each coefficient is computed on the cells' means over their seeds "
                      f"(n = cells; up to {int(sub['n_runs'].max())} runs behind one).")
    if legend:
        notes += shared
    tested = sub[sub["reason"].isna()]
    if (sub["pvalue_method"] == "asymptotic").any() and (tested["n"] < A.SMALL_N).any():
        notes.append(
            f"Caution: asymptotic p-values are unreliable below n = {A.SMALL_N} "
            "(a perfect rank agreement gets p = 0); use exact p-values (`--pvalue exact`)."
        )
    if uniform_n:
        notes.append(f"Every coefficient is computed from n = {int(sub['n'].iloc[0])} cells.")
    diverged = int(sub["n_diverged"].sum())
    if diverged:
        notes.append("Diverged cells are included with the accuracy reached before diverging.")
    all_reasons = [r for r in sub["reason"] if isinstance(r, str)]
    all_reasons += _interval_reasons(sub, ci_column) + _reach_reasons(sub)
    for reason, mark in marks.items():
        count = sum(1 for r in all_reasons if _mark_for(r, marks) == mark)
        notes.append(f"({mark}) {reason}: {count} group(s).")
    title = _TABLE_TITLES[table].format(metric=V.short_label(metric, best_metric))
    return f"**{title}.**\n\n" + "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def legend_markdown(tests: pd.DataFrame) -> str:
    """What every table of the report shares, stated once: the two p-values, bold, the
    marks of the multiple-testing corrections, "cannot reach α", the intervals over seeds
    and the cells' means (the tables then carry only their own notes)."""
    if tests.empty:
        return ""
    alpha = float(tests["alpha"].iloc[0])
    ci_column, range_column = _seed_columns(tests)
    level = f"{confidence_of(tests):.0%} CI"
    items = [
        "**SCC**: Spearman's rank correlation of the metric with the table's variable "
        "(batch size, learning rate, or batch size / learning rate).",
        "**p**: the paper's p-value (cells taken as independent). **p perm.**: the "
        "verdict's permutation p-value: Tables 1-2 permute the group's cells (exact up to "
        "8 cells); Table 3 permutes the grid's rows (batch sizes) and columns (learning "
        "rates), which keeps its level when a seed lifts a whole row or column.",
        f"**Bold**: p perm. < {alpha:g}, the report's verdict. {HOLM_MARK} / {BH_MARK} / "
        f"{BY_MARK}: still below {alpha:g} after Holm-Bonferroni / Benjamini-Hochberg / "
        "Benjamini-Yekutieli over the family each table names.",
        f"**cannot reach α**: the group has so few cells that its permutation test cannot "
        f"give p < {alpha:g} at any data (its smallest p is in the footnote): "
        "\"not significant\" says nothing there.",
    ]
    if ci_column:
        items.append(f"**{level}**: the jackknife over seeds (each seed left out in turn, "
                     "t with k - 1 degrees of freedom).")
    if range_column:
        items.append("**range of 2 seeds**: the two seeds' own coefficients (two seeds are "
                     "too few for an interval).")
    if seed_count(tests) <= 1:
        items.append("One seed per cell: seed noise cannot be measured, so no interval "
                     f"(it needs {A.MIN_INTERVAL_SEEDS} or more seeds).")
    else:
        items.append("Each coefficient is computed on the cells' means over their seeds "
                     "(n = cells, never runs).")
    return "\n".join(f"- {item}" for item in items) + "\n"


def status_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells per status for every (study, model, dataset): columns done, diverged,
    running, pending, failed, total."""
    statuses = [DONE, DIVERGED, RUNNING, PENDING, FAILED]
    if frame.empty:
        return pd.DataFrame(columns=["study", "model", "dataset", *statuses, "total"])
    norm = A.normalize(frame)
    counts = (
        norm.groupby(["study", "model", "dataset"])["status"]
        .value_counts()
        .unstack(fill_value=0)
        .reindex(columns=statuses, fill_value=0)
    )
    counts["total"] = counts.sum(axis=1)
    return counts.reset_index()


def _names_as_text(df: pd.DataFrame) -> pd.DataFrame:
    """The frame with its name columns (study, model, data set) escaped for Markdown."""
    names = [c for c in ("study", "model", "dataset") if c in df.columns]
    return df.assign(**{c: df[c].map(md_text) for c in names})


def _markdown_frame(df: pd.DataFrame) -> str:
    lines = [_md_row([str(c) for c in df.columns]), _md_row(["---"] * len(df.columns))]
    for row in df.itertuples(index=False):
        lines.append(_md_row([str(v) for v in row]))
    return "\n".join(lines) + "\n"


def _direction_markdown(directions: pd.DataFrame, several: bool) -> str:
    out = []
    for key, grp in directions.groupby(["study", "model", "dataset"], sort=False):
        label = md_label(tuple(map(str, key)), several)  # type: ignore[arg-type]
        out.append(f"- **{label}**")
        for summary in grp["summary"]:
            out.append(f"  - {summary}")
    return "\n".join(out) + "\n"


def _premise_markdown(premise: pd.DataFrame, several: bool) -> str:
    if premise.empty:
        return "_No cells._\n"
    metric = str(premise["metric"].iloc[0])
    label = V.METRIC_SHORT.get(metric, metric)

    def scc(values, ps) -> list[str]:
        return [f"{s:+.2f} ({A.format_p_eq(p)})" if math.isfinite(s) else "n/a"
                for s, p in zip(values, ps)]

    table = pd.DataFrame(
        {
            "grid": [
                md_label((r.study, r.model, r.dataset), several)
                for r in premise.itertuples()
            ],
            "cells": premise["n"],
            "train metrics": premise["train_source"],
            "train acc. min / median / max": [
                f"{a:.3f} / {b:.3f} / {c:.3f}" if math.isfinite(a) else "n/a"
                for a, b, c in zip(
                    premise["train_accuracy_min"],
                    premise["train_accuracy_median"],
                    premise["train_accuracy_max"],
                )
            ],
            "train loss min / median / max": [
                f"{a:.3g} / {b:.3g} / {c:.3g}" if math.isfinite(a) else "n/a"
                for a, b, c in zip(
                    premise["train_loss_min"], premise["train_loss_median"],
                    premise["train_loss_max"],
                )
            ],
            f"below {premise['threshold'].iloc[0]:.0%}": premise["n_below_threshold"],
            "SCC(train loss, ratio)": scc(premise["loss_ratio_scc"], premise["loss_ratio_p"]),
            "SCC(train acc., ratio)": scc(premise["accuracy_ratio_scc"],
                                          premise["accuracy_ratio_p"]),
            f"SCC({label}, ratio)": scc(premise["metric_ratio_scc"], premise["metric_ratio_p"]),
            f"partial SCC({label}, ratio; train loss fixed)": [
                f"{v:+.2f}" if math.isfinite(v) else "n/a" for v in premise["partial_scc"]],
        }
    )
    alpha = float(premise["alpha"].iloc[0])
    text = _markdown_frame(table) + (
        f"\nOne value per cell (its mean over seeds). Each p permutes the grid's rows and "
        f"columns (as Table 3's verdict); a trend in fit is one with p < {alpha:g}, a level "
        "that catches a confound before it becomes a discovery. The partial SCC is the "
        f"{label}'s correlation with the ratio once the clean train loss is held fixed "
        "(the correlation of their ranks' residuals on the loss's ranks): whether the ratio "
        "still predicts once under-training is accounted for.\n\n")
    lines = []
    for r in premise.itertuples():
        label_ = md_label((r.study, r.model, r.dataset), several)
        for w in r.warnings:
            lines.append(f"- **Warning ({label_})**: {w}.")
        for note in r.notes:
            lines.append(f"- Note ({label_}): {note}.")
    if lines:
        text += "\n".join(lines) + "\n"
    if not any(len(r.warnings) for r in premise.itertuples()):
        text += "Every grid is trained to near-zero training error, as the paper assumes.\n"
    return text


# --------------------------------------------------------------------------- statistics


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def seeds_sentence(tests: pd.DataFrame) -> str:
    """How the report treats seeds, from the Table 3 rows of one metric's tests."""
    whole = tests[tests["table"] == 3]
    tested = whole[whole["n"] > 0]
    if tested.empty:
        return "No finished cells yet."
    per_cell = tested["n_runs"] / tested["n"]
    seeds = int(tested["n_seeds"].max())
    cells, runs = int(tested["n"].sum()), int(tested["n_runs"].sum())
    if seeds <= 1:
        return (f"One seed per cell ({_count(cells, 'cell')}), as in the paper: every "
                "coefficient is the paper's test. Seed noise cannot be measured with one "
                "seed, so no coefficient has an interval and the noise floor is unknown; "
                f"run {A.MIN_INTERVAL_SEEDS} or more seeds (`seeds = [0, 1, 2]`) for both.")
    low, high = float(per_cell.min()), float(per_cell.max())
    spread = (f"{low:.3g} seeds per cell" if math.isclose(low, high) else
              f"{low:.2g} to {high:.2g} finished seeds per cell on average (up to {seeds})")
    return (f"{spread} ({runs} runs of {_count(cells, 'cell')}): every coefficient in this report "
            "is computed on the cells' means over their seeds, with n = cells. Counting "
            "each run as an independent point would pretend to more cells than the grid "
            "has and make every p-value too small (pseudo-replication); the seeds instead "
            "give each coefficient its spread over seeds and each grid a noise floor.")


def intervals_sentence(tests: pd.DataFrame, level: str) -> str:
    """What the report's intervals are, and why there are no others."""
    k = seed_count(tests)
    head = (f"With {A.MIN_INTERVAL_SEEDS} or more seeds every coefficient of "
            f"{A.MIN_INTERVAL_CELLS} or more cells has a {level} interval: the jackknife "
            "over seeds (each seed left out in turn; coefficient +- t(k - 1) x the "
            "jackknife standard error), and the Theil-Sen slope the same. Seeds are the "
            "study's independent draws, whatever a seed shares along a row or a column "
            "of the grid, so the interval holds under that sharing. It covers the "
            "coefficient this grid gives with this many seeds on average over draws of "
            "the seeds; noise pulls |SCC| towards 0, so the coefficient of noise-free "
            "cell means may lie further out. ")
    if k <= 1:
        now = ("With one seed there is no interval: seed noise cannot be measured. ")
    elif k == 2:
        now = ("With two seeds, each coefficient shows the range of the two seeds' own "
               "coefficients, never a 95 % interval (one degree of freedom). ")
    else:
        now = ""
    why = ("No interval resamples cells: the cells are the grid's fixed design, and "
           "resampling them (the bootstrap over cells, or over rows and columns) answers "
           "\"what if the grid had other cells\", which misses its rate on this grid "
           "(`scripts/bench_calibration.py` measures every interval the report prints on "
           "simulated grids with a known truth).")
    return head + now + why


def multiple_testing_markdown(all_tests: pd.DataFrame, metric: str) -> str:
    """The counts of significant results that survive Holm, BH and BY, one sentence for
    the report's metric and a table of every metric."""
    summary = A.multiple_testing_summary(all_tests)
    if summary.empty:
        return "_No tests._\n"
    main = summary[summary["metric"] == metric]
    row = (main if len(main) else summary).iloc[0]
    alpha = float(row["alpha"])
    n = int(row["tested"])
    label = V.METRIC_SHORT.get(str(row["metric"]), str(row["metric"]))
    significant, holm = int(row["significant"]), int(row["holm_table"])
    unreachable = int(row["cannot_reach"])
    text = (
        f"Of the {_count(n, 'test')} of {label} with a coefficient, {significant} "
        f"{'is' if significant == 1 else 'are'} significant at p < {alpha:g} (permutation "
        f"p), where {row['expected_by_chance']:.2g} would be expected by chance if batch "
        f"size and learning rate had no effect at all"
        + (f"; {unreachable} of the {n} cannot reach p < {alpha:g} at all, having too "
           "few cells for their permutation test" if unreachable else "")
        + f". {holm} {'stays' if holm == 1 else 'stay'} significant after Holm-Bonferroni "
        f"within {'its' if holm == 1 else 'their'} family (family-wise error rate "
        f"{alpha:g}), {int(row['bh_table'])} after Benjamini-Hochberg and "
        f"{int(row['by_table'])} after Benjamini-Yekutieli (false discovery rate "
        f"{alpha:g}; BY holds under any dependence, and tests of one grid share its "
        f"cells); over all {_count(n, 'test')} together, {int(row['holm_all'])} after "
        f"Holm, {int(row['bh_all'])} after BH and {int(row['by_all'])} after BY.\n\n"
    )
    table = pd.DataFrame({
        "metric": [V.METRIC_SHORT.get(str(m), str(m)) for m in summary["metric"]],
        "tests": summary["tested"],
        f"p < {alpha:g}": summary["significant"],
        "expected by chance": [f"{v:.2g}" for v in summary["expected_by_chance"]],
        f"cannot reach {alpha:g}": summary["cannot_reach"],
        "Holm, family": summary["holm_table"],
        "BH, family": summary["bh_table"],
        "BY, family": summary["by_table"],
        "Holm, all": summary["holm_all"],
        "BH, all": summary["bh_all"],
        "BY, all": summary["by_all"],
    })
    floor = _monte_carlo_floor(all_tests, alpha, n)
    return text + _markdown_frame(table) + (
        "\nFamilies: Tables 1 and 2, each grid's column of the table (the 20 tests of "
        "Table 1 of one grid); Table 3, the table itself (every grid's whole-grid test, "
        "as the paper prints it); \"all\", every test of the metric in this report. A "
        f"result survives when its adjusted p-value is below {alpha:g}. Holm controls "
        "the chance of any false positive in the family, Benjamini-Hochberg and "
        "Benjamini-Yekutieli the expected share of false positives among the "
        "significant results.\n" + floor)


def _monte_carlo_floor(tests: pd.DataFrame, alpha: float, m: int) -> str:
    """A note when Holm over all tests needs a p-value below what Monte Carlo
    permutations can give."""
    if "p_perm_method" not in tests.columns or not m:
        return ""
    counts = [int(x) for x in tests["p_perm_method"].astype(str).str.extract(
        r"monte-carlo \((\d+) permutations")[0].dropna()]
    if not counts:
        return ""
    floor = 1.0 / (1 + min(counts))
    if alpha / m >= floor:
        return ""
    return (f"\nHolm over all {m} tests needs p < {alpha / m:.2g} for its first result, "
            f"below the smallest Monte Carlo p-value of {min(counts)} permutations "
            f"({floor:.2g}): raise `--permutations` to about {math.ceil(3 * m / alpha):,} "
            "for that family to be able to reject.\n")


def _slope_text(metric: str, row: pd.Series) -> tuple[str, str]:
    slope = float(row["slope"])
    if not math.isfinite(slope):
        return "n/a", "n/a"
    low, high = float(row["slope_low"]), float(row["slope_high"])
    amount = V.metric_amount
    unit = " points" if metric in V.POINT_METRICS else ""
    if not (math.isfinite(low) and math.isfinite(high)):
        return amount(metric, slope, signed=True), "n/a"
    return amount(metric, slope, signed=True), (
        f"[{amount(metric, low, signed=True).removesuffix(unit)}, "
        f"{amount(metric, high, signed=True).removesuffix(unit)}]{unit}")


def whole_grid_markdown(tests: pd.DataFrame, several: bool) -> str:
    """Table 3 of one metric with its interval, per-seed coefficients and the Theil-Sen
    slope per doubling of the ratio, one row per grid."""
    whole = tests[tests["table"] == 3]
    if whole.empty:
        return "_No tests._\n"
    metric = _metric_of(tests)
    level = f"{confidence_of(whole):.0%}"
    seeds = several_seeds(whole)
    rows = []
    notes: list[str] = []

    has_ci = bool(pd.to_numeric(whole["ci_low"], errors="coerce").notna().any())

    def interval(row: pd.Series) -> str:
        text = format_interval(row["ci_low"], row["ci_high"])
        return f"n/a ({row['ci_reason']})" if text == "n/a" else text

    for _, row in whole.iterrows():
        label = md_label((row["study"], row["model"], row["dataset"]), several)
        if isinstance(row["reason"], str):
            rows.append([label, f"n/a ({row['reason']})"] + ["n/a"] * (3 + seeds + 2 * has_ci))
            continue
        per_seed = (["n/a (one seed)" if int(row["seeds_tested"]) < 2 else
                     f"{row['seed_scc_min']:.2f} to {row['seed_scc_max']:.2f} "
                     f"(SD {row['seed_scc_sd']:.2f}, {int(row['seeds_tested'])} seeds)"]
                    if seeds else [])
        slope, slope_ci = _slope_text(metric, row)
        rows.append([label, f"{row['scc']:.2f}", *([interval(row)] if has_ci else []),
                     *per_seed, A.format_p(row["p_value"]), A.format_p(row["p_perm"]), slope,
                     *([slope_ci] if has_ci else [])])
    table = pd.DataFrame(rows, columns=[
        "grid", "SCC", *([f"{level} CI"] if has_ci else []),
        *(["SCC of each seed alone"] if seeds else []),
        "p (paper)", "p perm. (rows x columns)", "slope per doubling of BS/LR",
        *([f"{level} CI of the slope"] if has_ci else [])])
    if not seeds:
        notes.append("One seed per cell: no interval and no coefficient per seed (they "
                     "need several seeds).")
    elif not has_ci:
        reasons = sorted({str(r) for r in whole["ci_reason"].dropna()})
        notes.append("No interval: " + "; ".join(reasons) + ".")
    unit = ("percentage points of " if metric in V.POINT_METRICS else "") + \
        V.METRIC_SHORT.get(metric, metric)
    notes.append(
        f"The slope is the Theil-Sen estimate (the median of the pairwise slopes) of the "
        f"cells' mean {V.METRIC_SHORT.get(metric, metric)} against log2(batch size / "
        f"learning rate): the change, in {unit}, when the ratio doubles; its interval is "
        "the jackknife over seeds. It says how large the effect is; the SCC only says "
        "how consistently it goes one way.")
    return _markdown_frame(table) + "\n" + " ".join(notes) + "\n"


def seeds_alone_markdown(frame: pd.DataFrame, tests: pd.DataFrame, metric: str,
                         several: bool, **kwargs: object) -> str:
    """Tables 1-3 for each seed alone (only with two or more seeds): per grid and seed,
    how many tests of Tables 1 and 2 are significant and Table 3's coefficient; then
    how much the coefficients of Tables 1-2 move from seed to seed. The permutation
    p-values here use at most 999 permutations (p >= 0.001 still tells p < 0.005; each
    seed's tables would otherwise cost as much as the report's own)."""
    kwargs = {**kwargs, "permutations": min(int(kwargs.get("permutations", 999)), 999)}
    per_seed = A.seed_tests(frame, metric=metric, **kwargs)
    rows = []
    for key, part in per_seed.groupby(["study", "model", "dataset", "seed"], sort=True):
        label = md_label(tuple(map(str, key[:3])), several)  # type: ignore[arg-type]

        def counts(table: int, part: pd.DataFrame = part) -> str:
            sub = part[part["table"] == table]
            tested = int(sub["reason"].isna().sum())
            return f"{int(sub['significant'].sum())} of {tested}"

        whole = part[part["table"] == 3].iloc[0]
        t3 = ("n/a" if isinstance(whole["reason"], str)
              else f"{whole['scc']:.2f} ({A.format_p_eq(whole['p_perm'])})")
        rows.append([label, str(key[3]), counts(1), counts(2), t3])
    alpha = float(tests["alpha"].iloc[0])
    table = pd.DataFrame(rows, columns=["grid", "seed", f"Table 1: p < {alpha:g}",
                                        f"Table 2: p < {alpha:g}", "Table 3: SCC (p perm.)"])
    text = _markdown_frame(table) + (
        f"\nEach seed's permutation p-values use {kwargs['permutations']} permutations.\n")
    groups = tests[(tests["table"] != 3) & tests["seed_scc_sd"].notna()]
    if len(groups):
        worst = groups.loc[groups["seed_scc_sd"].idxmax()]
        what = (f"{_ROW_LABEL[int(worst['table'])]} "
                f"{format_value(worst['group_value'], worst['group_by'])}")
        label = md_label((worst["study"], worst["model"], worst["dataset"]), several)
        text += (
            f"\nFrom seed to seed the coefficients of Tables 1-2 move with a median SD of "
            f"{groups['seed_scc_sd'].median():.2f} (largest {worst['seed_scc_sd']:.2f}: "
            f"{label}, Table {int(worst['table'])}, {what}, "
            f"{worst['seed_scc_min']:.2f} to {worst['seed_scc_max']:.2f}).\n")
    return text


def statistics_markdown(frame: pd.DataFrame, all_tests: pd.DataFrame, metric: str,
                        several: bool, include_diverged: bool, **kwargs: object) -> str:
    """The report's statistics section: seeds as replicates, intervals, multiple
    testing, effect sizes and the noise floor."""
    tests = all_tests[all_tests["metric"] == metric]
    if tests.empty:
        return "_No tests._\n"
    level = f"{confidence_of(tests):.0%}"
    kwargs = {k: v for k, v in kwargs.items() if k != "n_resamples"}
    parts = [
        f"**Seeds.** {seeds_sentence(tests)}\n",
        f"**Intervals.** {intervals_sentence(tests, level)}\n",
        "**Verdicts.** A coefficient is significant when its permutation p-value is below "
        "alpha: the group's cells permuted for Tables 1-2 (exact up to 8 cells), the "
        "grid's rows and columns permuted for Table 3. The paper's p-value (the t "
        "approximation, cells taken as independent) is printed beside it; for Table 3 "
        "it rejects far too often when a seed lifts a whole row or column of the grid "
        "(runs of one seed share an initialisation and a data order).\n",
        "### Multiple testing\n",
        multiple_testing_markdown(all_tests, metric),
        "### The whole grid (Table 3): intervals and effect size\n",
        whole_grid_markdown(tests, several),
        "### Noise floor\n",
    ]
    noise = A.noise_floor(frame, metric=metric, include_diverged=include_diverged)
    parts.append("\n".join(
        f"- **{md_label((r.study, r.model, r.dataset), several)}**: {r.summary}"
        for r in noise.itertuples()) + "\n")
    if several_seeds(tests):
        parts.append("### Each seed alone\n")
        parts.append(seeds_alone_markdown(frame, tests, metric, several,
                                          include_diverged=include_diverged, **kwargs))
    return "\n".join(parts)


def ratio_markdown(models: pd.DataFrame, several: bool) -> str:
    """The section "Does only the ratio matter?": per grid, the two coefficients of
    ``metric ~ log2(BS) + log2(LR)``, their sum and its test, in a table and in words."""
    if models.empty:
        return "_No cells._\n"
    metric = str(models["metric"].iloc[0])
    label = V.METRIC_SHORT.get(metric, metric)
    level = f"{float(models['confidence'].iloc[0]):.0%}"
    alpha = float(models["alpha"].iloc[0])

    def amount(value: float) -> str:
        return V.metric_amount(metric, value, signed=True) if math.isfinite(value) else "n/a"

    def interval(low: float, high: float) -> str:
        unit = " points" if metric in V.POINT_METRICS else ""
        if not (math.isfinite(low) and math.isfinite(high)):
            return "n/a"
        return f"[{amount(low).removesuffix(unit)}, {amount(high).removesuffix(unit)}]{unit}"

    rows = []
    for r in models.itertuples():
        grid = md_label((r.study, r.model, r.dataset), several)
        if isinstance(r.reason, str):
            rows.append([grid, f"n/a ({r.reason})"] + ["n/a"] * 6)
            continue
        rows.append([grid, amount(r.beta_bs), interval(r.beta_bs_low, r.beta_bs_high),
                     amount(r.beta_lr), interval(r.beta_lr_low, r.beta_lr_high),
                     amount(r.beta_sum), interval(r.beta_sum_low, r.beta_sum_high),
                     A.format_p(r.p_ratio)])
    table = pd.DataFrame(rows, columns=[
        "grid", "β_BS per doubling", f"{level} CI", "β_LR per doubling", f"{level} CI",
        "β_BS + β_LR", f"{level} CI", "p (β_BS + β_LR = 0)"])
    text = (f"If the {label} depended on batch size / learning rate alone, it would depend "
            "on log2(BS) - log2(LR), so a doubling of the batch size would act exactly as "
            "a halving of the learning rate: β_BS = -β_LR in "
            f"`{metric} ~ log2(batch size) + log2(learning rate)`. The model is fitted "
            "to every run (statsmodels MixedLM, REML: a random intercept per seed and, "
            "within each seed, variance components for batch size and for learning rate, "
            "since a seed may lift a whole row or column of the grid; with one seed those "
            "components are its rows' and columns'), and the test of β_BS + β_LR = 0 is its "
            "Wald test with t quantiles on k (rows - 1) - 1 and k (columns - 1) - 1 degrees "
            f"of freedom (rejected below p = {alpha:g}). Not rejecting it is no proof: the "
            "interval of the sum says how far from \"only the ratio\" the grid can be.\n\n")
    text += _markdown_frame(table) + "\n"
    text += "\n".join(f"- **{md_label((r.study, r.model, r.dataset), several)}**: "
                      f"{r.summary}" for r in models.itertuples()) + "\n"
    return text


def _trained_under(frame: pd.DataFrame) -> list[str]:
    """The kernel settings the runs were trained under (backend, oneDNN, XLA, device), as
    their workers recorded them: one line, or one per kind when a study mixed them."""
    if "trained_under" not in frame.columns:
        return []
    counts = frame["trained_under"].dropna().value_counts()
    if counts.empty:
        return []
    if len(counts) == 1:
        return [f"Trained under: {md_text(counts.index[0])}.\n"]
    kinds = "; ".join(f"{md_text(k)} ({n} runs)" for k, n in counts.items())
    return [f"Trained under **{len(counts)} different kernel settings** (their numbers are "
            f"not comparable bit for bit): {kinds}.\n"]


def _as_markdown(
    frame: pd.DataFrame,
    all_tests: pd.DataFrame,
    metric: str,
    metrics: Sequence[str],
    alpha: float,
    pvalue: str,
    include_diverged: bool,
    premise: pd.DataFrame,
    test_kwargs: dict | None = None,
    figures: Sequence[Path] | None = None,
) -> str:
    several = frame["study"].nunique() > 1 if "study" in frame.columns else False
    best = A.best_metric_of(frame)
    label = V.metric_label(metric, best)
    tests = all_tests[all_tests["metric"] == metric]
    confidence = confidence_of(tests)
    models = ratio_models_of(all_tests, frame, metric, include_diverged, confidence)
    parts = ["# Batch size, learning rate and generalization (He, Liu & Tao, NeurIPS 2019)\n"]
    if not tests.empty:
        rows = headline_rows(tests, models, A.noise_floor(frame, metric=metric,
                                                          include_diverged=include_diverged),
                             premise)
        parts += [f"## {FINDINGS_HEADING}\n", findings_markdown(rows, label)]
    parts += figures_markdown(figures, FIGURES_HEADING, is_key_figure)
    parts += [
        f"## {LEGEND_HEADING}\n",
        f"Metric: **{label}**; significance: p < {alpha:g}; p-values: {pvalue}; "
        f"diverged cells {'included' if include_diverged else 'excluded'}. "
        "Pending, running and failed cells are ignored. Every per-cell number is read at "
        "the cell's kept epoch"
        + (f" ({V.KEPT_EPOCH_RULES[best]}"
           + ("; the paper's rule, chosen on the test set itself: see *Selection of the "
              "kept epoch*" if best in V.TEST_SELECTED else "") + ")"
           if best in V.KEPT_EPOCH_RULES else "")
        + "; clean train metrics are measured on a fixed training subset exactly as the "
        "test set (no augmentation, batch norm in inference mode).\n",
        *_trained_under(frame),
        legend_markdown(tests),
        "## Cells\n",
        _markdown_frame(_names_as_text(status_counts(frame))),
    ]
    if tests.empty:
        parts.append("\n_No cells to analyse._\n")
        return "\n".join(parts)
    parts.append("## Tables 1-3 (as in the paper)\n")
    for table in (1, 2, 3):
        parts.append(table_markdown(tests, table, best, legend=False))
    directions = A.direction_summary(all_tests)
    parts.append("## Direction of the correlations\n")
    parts.append(
        "Expected by the paper: accuracy falls with batch size and with the ratio and rises "
        "with the learning rate; the generalization gaps do the opposite.\n"
    )
    parts.append(_direction_markdown(directions[directions["metric"] == metric], several))
    parts.append("## Statistics: seeds, intervals, multiple testing, effect sizes\n")
    kwargs = {k: v for k, v in (test_kwargs or {}).items() if k != "include_diverged"}
    parts.append(statistics_markdown(frame, all_tests, metric, several, include_diverged,
                                     **kwargs))
    parts.append("## Does only the ratio matter?\n")
    parts.append(ratio_markdown(models, several))
    parts.append("## Selection of the kept epoch\n")
    parts.append(inflation_markdown(A.selection_inflation(frame,
                                                          include_diverged=include_diverged),
                                    several))
    others = [m for m in metrics if m != metric]
    if others:
        parts.append("## Beyond the paper: other metrics\n")
        parts.append(
            "The same three analyses for other measures of generalization "
            "(full tables in `--format csv`).\n"
        )
        for other in others:
            sub = all_tests[all_tests["metric"] == other]
            parts.append(f"### {V.metric_label(other, best)}\n")
            if other in ("gap", "loss_gap") and sub["reason"].notna().all():
                parts.append("_No gap: the clean training metrics are missing for every "
                             "cell (a store written before kerasgen measured them)._\n")
                continue
            parts.append(table_markdown(sub, 3, best, legend=False))
            parts.append(_direction_markdown(directions[directions["metric"] == other], several))
    parts.append("## Premise: is every cell trained to ~zero training error?\n")
    parts.append(_premise_markdown(premise, several))
    if figures:
        parts += figures_markdown([p for p in figures if not is_key_figure(p)],
                                  MORE_FIGURES_HEADING, lambda _p: True)
    return "\n".join(parts)


def inflation_markdown(inflation: pd.DataFrame, several: bool) -> str:
    """What choosing the kept epoch adds to the test accuracy, per grid, in a table and
    in words (:func:`kerasgen.analysis.selection_inflation`)."""
    if inflation.empty:
        return "_No cells._\n"

    def points(value: float) -> str:
        return V.metric_amount("test_accuracy", value) if math.isfinite(value) else "n/a"

    def trend(scc: float, p: float) -> str:
        return f"{scc:+.2f} ({A.format_p_eq(p)})" if math.isfinite(scc) else "n/a"

    rows = []
    for r in inflation.itertuples():
        rows.append([md_label((r.study, r.model, r.dataset), several),
                     V.KEPT_EPOCH_RULES.get(str(r.best_metric), str(r.best_metric)),
                     points(r.kept_minus_final_mean), points(r.kept_minus_final_max),
                     trend(r.kept_minus_final_scc, r.kept_minus_final_p),
                     points(r.test_minus_val_mean),
                     trend(r.test_minus_val_scc, r.test_minus_val_p)])
    table = pd.DataFrame(rows, columns=[
        "grid", "kept epoch", "kept - final: mean", "largest", "SCC with the ratio",
        "test- minus validation-selected: mean", "SCC with the ratio"])
    text = ("The paper keeps each run's epoch of highest test accuracy, so the test accuracy "
            "it reports was chosen on the test set: some of the lift over the last epoch is "
            "selection. With `training.validation_size` and `best_metric = \"val_accuracy\"` "
            "the epoch is chosen on held-out training images, and the report measures what "
            "the test-selected rule would have added. An inflation that grows with the "
            "ratio would bias Table 3 by itself (SCC on the cells' means; p permutes the "
            "grid's rows and columns).\n\n")
    text += _markdown_frame(table) + "\n"
    text += "\n".join(f"- **{md_label((r.study, r.model, r.dataset), several)}**: "
                      f"{r.summary}" for r in inflation.itertuples()) + "\n"
    return text


def ratio_models_of(all_tests: pd.DataFrame, frame: pd.DataFrame, metric: str,
                    include_diverged: bool, confidence: float) -> pd.DataFrame:
    """The grids' ratio models of ``metric``: fitted here (the tests frame carries the
    coefficients, the model's summary needs the fit)."""
    del all_tests
    return A.ratio_model(frame, metric=metric, include_diverged=include_diverged,
                         confidence=confidence)


# --------------------------------------------------------------------------- latex


def _latex_interval(low: object, high: object) -> str:
    text = format_interval(low, high)
    return "n/a" if text == "n/a" else f"${text}$"


def table_latex(tests: pd.DataFrame, table: int, best_metric: str | None = None) -> str:
    """One of Tables 1-3 as a LaTeX ``table`` with booktabs rules, as in the paper: the
    SCC, its interval over seeds (three or more seeds) or the range of two seeds' own
    coefficients, the paper's $p$ and the permutation $p$ of the verdict (bold when
    significant, underlined when not, a footnote mark where the test cannot reach
    alpha), ``n/a`` where no coefficient could be computed, an n column when n varies,
    and daggers on permutation p-values that survive Holm / Benjamini-Hochberg /
    Benjamini-Yekutieli over the family the caption names."""
    if tests.empty or not (tests["table"] == table).any():
        return "% no tests\n"
    metric = _metric_of(tests)
    sub, keys, several, uniform_n, group_by, values, lookup = _table_layout(tests, table)
    ci_column, range_column = _seed_columns(sub)
    level = f"{confidence_of(sub):.0%}".replace("%", r"\%")
    per_key = (["SCC"] + ([f"{level} CI"] if ci_column else [])
               + (["range, 2 seeds"] if range_column else []) + ["$p$", r"$p_{\mathrm{perm}}$"]
               + ([] if uniform_n else ["$n$"]))
    width = len(per_key)
    lead = 0 if group_by is None else 1
    spec = ("l" * lead) + ("r" * width) * len(keys)
    title = _TABLE_TITLES[table].format(metric=V.metric_label(metric, best_metric))
    alpha = float(sub["alpha"].iloc[0])
    paper, perm = _p_methods(sub)
    caption = latex_escape(title.split(": ", 1)[1]).replace(" p ", " $p$ ")
    permuted = ("rows (batch sizes) and columns (learning rates) of the grid permuted"
                if table == 3 else "the group's cells permuted")
    caption += (f". $p$: the paper's ({latex_escape(paper)}; cells as independent); "
                rf"$p_{{\mathrm{{perm}}}}$: {latex_escape(perm)}, {permuted}. Bold: "
                rf"$p_{{\mathrm{{perm}}}} < {alpha:g}$; underlined: not significant; "
                f"$^\\dagger$, $^\\ddagger$, $^\\S$: below {alpha:g} after Holm-Bonferroni, "
                "Benjamini-Hochberg, Benjamini-Yekutieli over "
                f"{latex_escape(family_words(sub, table))}")
    if ci_column:
        caption += f"; CI: {level} jackknife interval over seeds, $t(k-1)$"
    if range_column:
        caption += "; range: the two seeds' own coefficients (no interval with two seeds)"
    if seed_count(sub) <= 1:
        caption += "; one seed: no interval"
    unreachable = _reach_reasons(sub)
    if unreachable:
        caption += (f"; $^*$: cannot reach $p < {alpha:g}$ ({len(unreachable)} group(s); "
                    f"{latex_escape(unreachable[0].split('(', 1)[1].rstrip(')'))})")
    caption += "."
    if uniform_n:
        caption += f" Each coefficient is computed from $n = {int(sub['n'].iloc[0])}$ cells."
    lines = [
        r"\begin{table}[ht]",
        r"\centering",
        rf"\caption{{{caption}}}",
        rf"\label{{tab:scc-{table}}}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
    ]
    head = [""] * lead + [
        rf"\multicolumn{{{width}}}{{c}}{{{latex_escape(column_label(k, several))}}}" for k in keys
    ]
    lines.append(" & ".join(head) + r" \\")
    rules = [
        rf"\cmidrule(lr){{{lead + 1 + i * width}-{lead + (i + 1) * width}}}"
        for i in range(len(keys))
    ]
    lines.append(" ".join(rules))
    sub_head = [_ROW_LABEL.get(table, "")] * lead + per_key * len(keys)
    lines.append(" & ".join(sub_head) + r" \\")
    lines.append(r"\midrule")
    dec = decimals([float(v) for v in values]) if group_by == "learning_rate" else None
    for gv in values if group_by is not None else [None]:
        cells = [] if group_by is None else [format_value(gv, group_by, dec)]
        for key in keys:
            row = lookup.get((*key, gv))
            if row is None:
                cells += [""] * width
                continue
            if isinstance(row["reason"], str):
                cells += ["n/a"] * (width - int(not uniform_n))
            else:
                p = format_p_latex(row["p_perm"])
                marks = ((r"\dagger" if survives(row, "p_holm") else "")
                         + (r"\ddagger" if survives(row, "p_bh") else "")
                         + (r"\S" if survives(row, "p_by") else "")
                         + ("*" if reach_text(row) else ""))
                marks = f"^{{{marks}}}" if marks else ""
                p = (rf"$\mathbf{{{p}}}{marks}$" if row["significant"]
                     else rf"\underline{{${p}$}}" + (f"${marks}$" if marks else ""))
                cells.append(f"${row['scc']:.2f}$")
                if ci_column:
                    cells.append(_latex_interval(row["ci_low"], row["ci_high"]))
                if range_column:
                    text = _seed_range(row)
                    cells.append(text if text == "n/a" else f"${text.replace(' to ', ', ')}$")
                cells += [f"${format_p_latex(row['p_value'])}$", p]
            if not uniform_n:
                cells.append(str(int(row["n"])))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def statistics_latex(tests: pd.DataFrame, best_metric: str | None = None) -> str:
    """The whole grid (Table 3) per grid with its interval over seeds, both p-values and
    the Theil-Sen slope per doubling of the ratio, and the multiple-testing counts of
    the metric, as one booktabs table."""
    whole = tests[tests["table"] == 3] if not tests.empty else tests
    if whole.empty:
        return "% no tests\n"
    metric = _metric_of(tests)
    several = whole["study"].nunique() > 1
    level = f"{confidence_of(whole):.0%}".replace("%", r"\%")
    counts = A.multiple_testing_summary(tests).iloc[0]
    alpha = float(counts["alpha"])
    unit = "percentage points" if metric in V.POINT_METRICS else "units of the metric"
    caption = (
        f"Batch size / learning rate and {latex_escape(V.metric_label(metric, best_metric))}"
        f": SCC with its {level} jackknife interval over seeds (three or more seeds), the "
        "paper's $p$ and the $p$ of a permutation of the grid's rows and columns, and the "
        f"Theil-Sen slope per doubling of the ratio ({unit}). Of {int(counts['tested'])} "
        f"tests, {int(counts['significant'])} have $p_{{\\mathrm{{perm}}}} < {alpha:g}$ "
        f"({counts['expected_by_chance']:.2g} expected by chance; "
        f"{int(counts['cannot_reach'])} cannot reach it); {int(counts['holm_table'])} "
        f"survive Holm, {int(counts['bh_table'])} Benjamini-Hochberg and "
        f"{int(counts['by_table'])} Benjamini-Yekutieli within their family (Tables 1-2: "
        "each grid's column; Table 3: the table), "
        f"{int(counts['holm_all'])}, {int(counts['bh_all'])} and {int(counts['by_all'])} "
        "over all tests."
        + ("" if seed_count(whole) >= A.MIN_INTERVAL_SEEDS else
           f" Fewer than {A.MIN_INTERVAL_SEEDS} seeds per cell: no interval."))
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{caption}}}",
             r"\label{tab:scc-statistics}", r"\begin{tabular}{lrrrrrr}", r"\toprule",
             rf" & SCC & {level} CI & $p$ & $p_{{\mathrm{{perm}}}}$ & slope & "
             rf"{level} CI slope \\",
             r"\midrule"]
    scale = 100.0 if metric in V.POINT_METRICS else 1.0
    for _, row in whole.iterrows():
        label = latex_escape(column_label((row["study"], row["model"], row["dataset"]),
                                          several))
        if isinstance(row["reason"], str):
            lines.append(f"{label} & n/a & n/a & n/a & n/a & n/a & n/a " + r"\\")
            continue
        slope = float(row["slope"]) * scale
        slope_text = f"${slope:+.2f}$" if math.isfinite(slope) else "n/a"
        lines.append(" & ".join([
            label, f"${row['scc']:.2f}$", _latex_interval(row["ci_low"], row["ci_high"]),
            f"${format_p_latex(row['p_value'])}$", f"${format_p_latex(row['p_perm'])}$",
            slope_text,
            _latex_interval(float(row["slope_low"]) * scale, float(row["slope_high"]) * scale),
        ]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def ratio_latex(models: pd.DataFrame) -> str:
    """"Does only the ratio matter?" as a booktabs table: per grid, beta_BS and beta_LR
    of ``metric ~ log2(BS) + log2(LR)`` with their intervals, their sum and the p-value
    of beta_BS + beta_LR = 0."""
    if models.empty:
        return "% no ratio model\n"
    metric = str(models["metric"].iloc[0])
    several = models["study"].nunique() > 1
    level = f"{float(models['confidence'].iloc[0]):.0%}".replace("%", r"\%")
    scale = 100.0 if metric in V.POINT_METRICS else 1.0
    unit = "percentage points" if metric in V.POINT_METRICS else "units of the metric"
    methods = "; ".join(sorted({latex_escape(str(m)) for m in models["method"]} - {"none"}))
    caption = (
        f"Does only the ratio matter? {latex_escape(V.METRIC_SHORT.get(metric, metric))} "
        r"$\sim \beta_{BS} \log_2(\mathrm{BS}) + \beta_{LR} \log_2(\mathrm{LR})$ over every "
        f"run ({methods}); coefficients per doubling, in {unit}, with {level} intervals. If "
        r"only the ratio mattered, $\beta_{BS} + \beta_{LR} = 0$; $p$ is its Wald test.")
    lines = [r"\subsection*{Does only the ratio matter?}",
             r"\begin{table}[ht]", r"\centering", rf"\caption{{{caption}}}",
             r"\label{tab:ratio-model}", r"\begin{tabular}{lrrrrrrr}", r"\toprule",
             rf" & $\beta_{{BS}}$ & {level} CI & $\beta_{{LR}}$ & {level} CI & "
             rf"$\beta_{{BS}} + \beta_{{LR}}$ & {level} CI & $p$ \\", r"\midrule"]
    for r in models.itertuples():
        label = latex_escape(column_label((r.study, r.model, r.dataset), several))
        if isinstance(r.reason, str):
            lines.append(f"{label} & " + " & ".join(["n/a"] * 7) + r" \\")
            continue
        lines.append(" & ".join([
            label,
            f"${r.beta_bs * scale:+.2f}$",
            _latex_interval(r.beta_bs_low * scale, r.beta_bs_high * scale),
            f"${r.beta_lr * scale:+.2f}$",
            _latex_interval(r.beta_lr_low * scale, r.beta_lr_high * scale),
            f"${r.beta_sum * scale:+.2f}$",
            _latex_interval(r.beta_sum_low * scale, r.beta_sum_high * scale),
            f"${format_p_latex(r.p_ratio)}$"]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def tests_csv(tests: pd.DataFrame) -> str:
    """The tidy tests frame as CSV (columns :data:`kerasgen.analysis.TEST_COLUMNS`); text
    that a spreadsheet would run as a formula starts with ``'`` (``spreadsheet_safe``)."""
    return spreadsheet_safe(tests.reindex(columns=A.TEST_COLUMNS)).to_csv(
        index=False, lineterminator="\n")


# --------------------------------------------------------------------------- entry point


def render_report(
    frame: pd.DataFrame,
    fmt: str = "markdown",
    metric: str = A.PAPER_METRIC,
    alpha: float = 0.005,
    pvalue: A.PValueMethod = "auto",
    include_diverged: bool = True,
    min_cells: int = 3,
    permutations: int = 9999,
    seed: int = 0,
    train_accuracy_threshold: float = 0.99,
    metrics: Sequence[str] = A.METRICS,
    confidence: float = 0.95,
    n_resamples: int = 999,
    figures: Sequence[Path] | None = None,
) -> str:
    """Render the full report of a results frame.

    Every form opens with the findings box (per grid: Table 3's coefficient with its
    interval, its verdict and Holm's, the ratio model's verdict, the noise floor, the
    premise warnings and the tests that cannot reach alpha), then Figure 1 and the
    heatmaps (``figures``: the paths ``write_figures`` returned; without them the
    Markdown says how to get them), then the tables; the other figures come last.

    ``fmt="markdown"``: settings, cells per status, Tables 1-3 of ``metric`` (each
    coefficient with its ``confidence`` interval over seeds, the paper's p and the
    permutation p of the verdict, marked where it survives Holm, Benjamini-Hochberg and
    Benjamini-Yekutieli), the direction summary, the statistics section (seeds,
    intervals, multiple testing, the whole grid's intervals and slopes, the noise floor,
    each seed alone), "Does only the ratio matter?" (the grids' ratio models), the other
    ``metrics`` (Table 3 and direction summary each), the premise check with its
    warnings. ``fmt="csv"``: the tidy tests table of ``metric`` followed by the other
    ``metrics`` (every column of :data:`kerasgen.analysis.TEST_COLUMNS`; Table 3 rows
    carry their grid's ratio model). ``fmt="latex"``: Tables 1-3 of ``metric``, the
    whole grid's intervals and slopes, and the ratio model. ``n_resamples`` is kept for
    callers; no printed interval is a bootstrap (see :func:`kerasgen.analysis.spearman_tests`).
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    frame = A.add_derived_metrics(frame) if not frame.empty else frame
    ordered = [metric] + [m for m in metrics if m != metric]
    kwargs = dict(
        alpha=alpha,
        pvalue=pvalue,
        include_diverged=include_diverged,
        min_cells=min_cells,
        permutations=permutations,
        seed=seed,
        confidence=confidence,
        n_resamples=n_resamples,
    )
    if fmt == "latex":
        tests = A.spearman_tests(frame, metric=metric, **kwargs)  # type: ignore[arg-type]
        best = A.best_metric_of(frame)
        models = A.ratio_model(frame, metric=metric, include_diverged=include_diverged,
                               confidence=confidence)
        premise = A.premise_check(frame, train_accuracy_threshold=train_accuracy_threshold,
                                  include_diverged=include_diverged, metric=metric)
        rows = headline_rows(tests, models, A.noise_floor(
            frame, metric=metric, include_diverged=include_diverged), premise)
        return "\n".join([findings_latex(rows, V.metric_label(metric, best)),
                          figures_latex(figures, is_key_figure),
                          *(table_latex(tests, t, best) for t in (1, 2, 3)),
                          statistics_latex(tests, best), ratio_latex(models),
                          figures_latex(figures, lambda p: not is_key_figure(p))])
    all_tests = A.spearman_tests_all(frame, metrics=ordered, with_ratio_model=fmt == "csv",
                                     **kwargs)
    if fmt == "csv":
        return tests_csv(all_tests)
    premise = A.premise_check(
        frame,
        train_accuracy_threshold=train_accuracy_threshold,
        include_diverged=include_diverged,
        metric=metric,
    )
    if frame.empty:
        return "# Batch size, learning rate and generalization\n\n_No cells in the store._\n"
    return _as_markdown(
        A.normalize(frame), all_tests, metric, ordered, alpha, pvalue, include_diverged, premise,
        kwargs, figures,
    )



__all__ = ["FORMATS", "format_interval", "inflation_markdown", "legend_markdown",
           "multiple_testing_markdown",
           "ratio_latex",
           "ratio_markdown", "render_report", "several_seeds", "statistics_latex",
           "statistics_markdown", "status_counts", "table_latex", "table_markdown", "tests_csv"]
