"""The report's text: Tables 1-3 laid out as in the paper (Markdown, LaTeX, CSV), the
direction summary, the other metrics and the premise check. ``render_report`` is the entry
point ``kerasgen report`` calls."""

from __future__ import annotations

import math
import re
from typing import Sequence

import pandas as pd

from kerasgen import analysis as A
from kerasgen import vocabulary as V
from kerasgen.report.format import (
    column_label,
    decimals,
    format_p,
    format_p_latex,
    format_value,
    latex_escape,
)
from kerasgen.vocabulary import DIVERGED, DONE, FAILED, PENDING, RUNNING

FORMATS: tuple[str, ...] = ("markdown", "csv", "latex")

_TABLE_TITLES = {
    1: "Table 1: SCC and p of batch size to {metric} for each learning rate (LR)",
    2: "Table 2: SCC and p of learning rate to {metric} for each batch size (BS)",
    3: "Table 3: SCC and p of batch size / learning rate to {metric}",
}
_ROW_LABEL = {1: "LR", 2: "BS"}


def _columns(tests: pd.DataFrame) -> list[tuple[str, str, str]]:
    keys = tests[["study", "model", "dataset"]].drop_duplicates()
    return [tuple(map(str, row)) for row in keys.itertuples(index=False)]  # type: ignore[misc]


def _reason_marks(tests: pd.DataFrame) -> dict[str, str]:
    reasons = [r for r in tests["reason"].tolist() if isinstance(r, str)]
    general = sorted({re.sub(r" \(n=\d+\)$", "", r) for r in reasons})
    return {r: "abcdefghij"[i] for i, r in enumerate(general)}


def _mark_for(reason: str, marks: dict[str, str]) -> str:
    return marks.get(re.sub(r" \(n=\d+\)$", "", reason), "?")


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


# --------------------------------------------------------------------------- markdown


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table_markdown(tests: pd.DataFrame, table: int, best_metric: str | None = None) -> str:
    """One of Tables 1-3 as a Markdown table, laid out as in the paper.

    Rows are learning rates (Table 1), batch sizes (Table 2) or a single row
    (Table 3); for each model x data set there is an SCC and a p column, plus an n
    column unless every coefficient rests on the same n (then a footnote says it).
    Significant p-values are bold; groups without a coefficient show ``n/a`` with a
    lettered footnote giving the reason.
    """
    if tests.empty or not (tests["table"] == table).any():
        return "_No tests._\n"
    metric = _metric_of(tests)
    sub, keys, several, uniform_n, group_by, values, lookup = _table_layout(tests, table)
    marks = _reason_marks(sub)
    header: list[str] = [] if group_by is None else [_ROW_LABEL[table]]
    for key in keys:
        label = column_label(key, several)
        header += [f"{label} SCC", "p"] + ([] if uniform_n else ["n"])
    align = ["---:"] * len(header)
    lines = [_md_row(header), _md_row(align)]
    dec = decimals([float(v) for v in values]) if group_by == "learning_rate" else None
    for gv in values if group_by is not None else [None]:
        cells: list[str] = [] if group_by is None else [format_value(gv, group_by, dec)]
        for key in keys:
            row = lookup.get((*key, gv))
            if row is None:
                cells += ["", ""] + ([] if uniform_n else [""])
                continue
            if isinstance(row["reason"], str):
                scc, p = "n/a", f"n/a ({_mark_for(row['reason'], marks)})"
            else:
                scc = f"{row['scc']:.2f}"
                p = format_p(row["p_value"])
                p = f"**{p}**" if row["significant"] else p
            cells += [scc, p] + ([] if uniform_n else [str(int(row["n"]))])
        lines.append(_md_row(cells))
    alpha = float(sub["alpha"].iloc[0])
    methods = ", ".join(sorted(set(sub["pvalue_method"]) - {"none"})) or "none"
    notes = [f"Bold p: significant (p < {alpha:g}); p-values: {methods}."]
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
    for reason, mark in marks.items():
        count = int(sum(1 for r in sub["reason"]
                        if isinstance(r, str) and _mark_for(r, marks) == mark))
        notes.append(f"({mark}) {reason}: {count} group(s).")
    title = _TABLE_TITLES[table].format(metric=V.metric_label(metric, best_metric))
    return f"**{title}.**\n\n" + "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


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


def _markdown_frame(df: pd.DataFrame) -> str:
    lines = [_md_row([str(c) for c in df.columns]), _md_row(["---"] * len(df.columns))]
    for row in df.itertuples(index=False):
        lines.append(_md_row([str(v) for v in row]))
    return "\n".join(lines) + "\n"


def _direction_markdown(directions: pd.DataFrame, several: bool) -> str:
    out = []
    for key, grp in directions.groupby(["study", "model", "dataset"], sort=False):
        label = column_label(tuple(map(str, key)), several)  # type: ignore[arg-type]
        out.append(f"- **{label}**")
        for summary in grp["summary"]:
            out.append(f"  - {summary}")
    return "\n".join(out) + "\n"


def _premise_markdown(premise: pd.DataFrame, several: bool) -> str:
    if premise.empty:
        return "_No cells._\n"
    metric = str(premise["metric"].iloc[0])
    table = pd.DataFrame(
        {
            "grid": [
                column_label((r.study, r.model, r.dataset), several)
                for r in premise.itertuples()
            ],
            "n": premise["n"],
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
            "SCC(train loss, ratio)": [
                f"{s:+.2f} ({A.format_p_eq(p)})" if math.isfinite(s) else "n/a"
                for s, p in zip(premise["loss_ratio_scc"], premise["loss_ratio_p"])
            ],
            "SCC(train acc., ratio)": [
                f"{s:+.2f} ({A.format_p_eq(p)})" if math.isfinite(s) else "n/a"
                for s, p in zip(premise["accuracy_ratio_scc"], premise["accuracy_ratio_p"])
            ],
            f"SCC({V.METRIC_SHORT.get(metric, metric)}, ratio)": [
                f"{s:+.2f} ({A.format_p_eq(p)})" if math.isfinite(s) else "n/a"
                for s, p in zip(premise["metric_ratio_scc"], premise["metric_ratio_p"])
            ],
        }
    )
    text = _markdown_frame(table) + "\n"
    lines = []
    for r in premise.itertuples():
        label = column_label((r.study, r.model, r.dataset), several)
        for w in r.warnings:
            lines.append(f"- **Warning ({label})**: {w}.")
        for note in r.notes:
            lines.append(f"- Note ({label}): {note}.")
    if lines:
        text += "\n".join(lines) + "\n"
    if not any(len(r.warnings) for r in premise.itertuples()):
        text += "Every grid is trained to near-zero training error, as the paper assumes.\n"
    return text


def _as_markdown(
    frame: pd.DataFrame,
    all_tests: pd.DataFrame,
    metric: str,
    metrics: Sequence[str],
    alpha: float,
    pvalue: str,
    include_diverged: bool,
    premise: pd.DataFrame,
) -> str:
    several = frame["study"].nunique() > 1 if "study" in frame.columns else False
    best = A.best_metric_of(frame)
    label = V.metric_label(metric, best)
    parts = [
        "# Batch size, learning rate and generalization (He, Liu & Tao, NeurIPS 2019)\n",
        f"Metric: **{label}**; significance: p < {alpha:g}; p-values: {pvalue}; "
        f"diverged cells {'included' if include_diverged else 'excluded'}. "
        "Pending, running and failed cells are ignored. Every per-cell number is read at "
        "the cell's kept epoch"
        + (f" ({V.KEPT_EPOCH_RULES[best]})" if best in V.KEPT_EPOCH_RULES else "")
        + "; clean train metrics are measured on a fixed training subset exactly as the "
        "test set (no augmentation, batch norm in inference mode).\n",
        "## Cells\n",
        _markdown_frame(status_counts(frame)),
    ]
    tests = all_tests[all_tests["metric"] == metric]
    if tests.empty:
        parts.append("\n_No cells to analyse._\n")
        return "\n".join(parts)
    parts.append("## Tables 1-3 (as in the paper)\n")
    for table in (1, 2, 3):
        parts.append(table_markdown(tests, table, best))
    directions = A.direction_summary(all_tests)
    parts.append("## Direction of the correlations\n")
    parts.append(
        "Expected by the paper: accuracy falls with batch size and with the ratio and rises "
        "with the learning rate; the generalization gaps do the opposite.\n"
    )
    parts.append(_direction_markdown(directions[directions["metric"] == metric], several))
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
            parts.append(table_markdown(sub, 3, best))
            parts.append(_direction_markdown(directions[directions["metric"] == other], several))
    parts.append("## Premise: is every cell trained to ~zero training error?\n")
    parts.append(_premise_markdown(premise, several))
    return "\n".join(parts)


# --------------------------------------------------------------------------- latex


def table_latex(tests: pd.DataFrame, table: int, best_metric: str | None = None) -> str:
    """One of Tables 1-3 as a LaTeX ``table`` with booktabs rules, as in the paper:
    bold significant p-values, underlined non-significant ones, ``n/a`` where no
    coefficient could be computed, an n column when n varies."""
    if tests.empty or not (tests["table"] == table).any():
        return "% no tests\n"
    metric = _metric_of(tests)
    sub, keys, several, uniform_n, group_by, values, lookup = _table_layout(tests, table)
    width = 2 if uniform_n else 3
    lead = 0 if group_by is None else 1
    spec = ("l" * lead) + ("rr" if uniform_n else "rrr") * len(keys)
    title = _TABLE_TITLES[table].format(metric=V.metric_label(metric, best_metric))
    alpha = float(sub["alpha"].iloc[0])
    caption = latex_escape(title.split(": ", 1)[1]).replace(" p ", " $p$ ")
    caption += f". Bold: $p < {alpha:g}$; underlined: not significant."
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
    sub_head = [_ROW_LABEL.get(table, "")] * lead + (
        ["SCC", "$p$"] if uniform_n else ["SCC", "$p$", "$n$"]
    ) * len(keys)
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
                cells += ["n/a", "n/a"]
            else:
                p = format_p_latex(row["p_value"])
                p = rf"$\mathbf{{{p}}}$" if row["significant"] else rf"\underline{{${p}$}}"
                cells += [f"${row['scc']:.2f}$", p]
            if not uniform_n:
                cells.append(str(int(row["n"])))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def tests_csv(tests: pd.DataFrame) -> str:
    """The tidy tests frame as CSV (columns :data:`kerasgen.analysis.TEST_COLUMNS`)."""
    return tests.reindex(columns=A.TEST_COLUMNS).to_csv(index=False, lineterminator="\n")


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
) -> str:
    """Render the full report of a results frame.

    ``fmt="markdown"``: settings, cells per status, Tables 1-3 of ``metric``, the
    direction summary, the other ``metrics`` (Table 3 and direction summary each),
    the premise check with its warnings.  ``fmt="csv"``: the tidy tests table of
    ``metric`` followed by the other ``metrics``.  ``fmt="latex"``: Tables 1-3 of
    ``metric``.
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
    )
    if fmt == "latex":
        tests = A.spearman_tests(frame, metric=metric, **kwargs)  # type: ignore[arg-type]
        best = A.best_metric_of(frame)
        return "\n".join(table_latex(tests, t, best) for t in (1, 2, 3))
    all_tests = A.spearman_tests_all(frame, metrics=ordered, **kwargs)
    if fmt == "csv":
        return tests_csv(all_tests)
    premise = A.premise_check(
        frame,
        train_accuracy_threshold=train_accuracy_threshold,
        alpha=alpha,
        include_diverged=include_diverged,
        metric=metric,
    )
    if frame.empty:
        return "# Batch size, learning rate and generalization\n\n_No cells in the store._\n"
    return _as_markdown(
        A.normalize(frame), all_tests, metric, ordered, alpha, pvalue, include_diverged, premise
    )



__all__ = ["FORMATS", "render_report", "status_counts", "table_latex", "table_markdown",
           "tests_csv"]
