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


def _interval_reasons(tests: pd.DataFrame, seeds_column: bool) -> list[str]:
    """Why coefficients that exist have no interval (the rows without a coefficient say
    so once, in the reason column)."""
    tested = tests[tests["reason"].isna()] if "reason" in tests.columns else tests
    columns = ["ci_reason"] + (["seed_ci_reason"] if seeds_column else [])
    return [r for c in columns if c in tested.columns
            for r in tested[c].tolist() if isinstance(r, str)]


def _reason_marks(tests: pd.DataFrame, seeds_column: bool = False) -> dict[str, str]:
    reasons = [r for r in tests["reason"].tolist() if isinstance(r, str)]
    reasons += _interval_reasons(tests, seeds_column)
    general = sorted({re.sub(r" \(n=\d+\)$", "", r) for r in reasons})
    return {r: "abcdefghijklmnop"[i] for i, r in enumerate(general)}


def several_seeds(tests: pd.DataFrame) -> bool:
    """Whether any coefficient of a tests frame rests on two or more seeds."""
    return "n_seeds" in tests.columns and bool((pd.to_numeric(
        tests["n_seeds"], errors="coerce").fillna(0) >= 2).any())


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


HOLM_MARK, BH_MARK = "†", "‡"


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
    seeds = several_seeds(sub)
    marks = _reason_marks(sub, seeds)
    level = f"{confidence_of(sub):.0%} CI"
    header: list[str] = [] if group_by is None else [_ROW_LABEL[table]]
    for key in keys:
        label = md_label(key, several)
        header += ([f"{label} SCC", level] + ([f"{level} seeds"] if seeds else [])
                   + ["p"] + ([] if uniform_n else ["n"]))
    width = 3 + int(seeds) + int(not uniform_n)
    align = ["---:"] * len(header)
    lines = [_md_row(header), _md_row(align)]
    dec = decimals([float(v) for v in values]) if group_by == "learning_rate" else None

    def interval(row: pd.Series, low: str, high: str, why: str) -> str:
        text = format_interval(row.get(low), row.get(high))
        reason = row.get(why)
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
                scc, p = "n/a", f"n/a ({_mark_for(row['reason'], marks)})"
                cis = ["n/a"] * (1 + int(seeds))
            else:
                scc = f"{row['scc']:.2f}"
                p = format_p(row["p_value"])
                p = f"**{p}**" if row["significant"] else p
                p += (HOLM_MARK if survives(row, "p_holm") else "") + (
                    BH_MARK if survives(row, "p_bh") else "")
                cis = [interval(row, "ci_low", "ci_high", "ci_reason")]
                if seeds:
                    cis.append(interval(row, "seed_ci_low", "seed_ci_high", "seed_ci_reason"))
            cells += [scc, *cis, p] + ([] if uniform_n else [str(int(row["n"]))])
        lines.append(_md_row(cells))
    alpha = float(sub["alpha"].iloc[0])
    methods = ", ".join(sorted(set(sub["pvalue_method"]) - {"none"})) or "none"
    family = "its table's tests" if table != 3 else "its grid's Table 3 (one test)"
    notes = [f"Bold p: significant (p < {alpha:g}); p-values: {methods}; "
             f"{HOLM_MARK}: still below {alpha:g} after Holm-Bonferroni over {family}, "
             f"{BH_MARK}: after Benjamini-Hochberg."]
    cis = sorted({str(m) for m in sub["ci_method"].dropna() if m != "none"}) \
        if "ci_method" in sub.columns else []
    if cis:
        notes.append(f"{level}: {'; '.join(cis)}"
                     + (f"; {level} seeds: percentile bootstrap over whole seeds." if seeds
                        else "."))
    if not seeds:
        notes.append("One seed per cell: no interval over seeds (it needs two or more).")
    elif "n_runs" in sub.columns:
        notes.append("Each coefficient is computed on the cells' means over their seeds "
                     f"(n = cells; up to {int(sub['n_runs'].max())} runs behind one).")
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
    all_reasons += _interval_reasons(sub, seeds)
    for reason, mark in marks.items():
        count = sum(1 for r in all_reasons if _mark_for(r, marks) == mark)
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
    table = pd.DataFrame(
        {
            "grid": [
                md_label((r.study, r.model, r.dataset), several)
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
        label = md_label((r.study, r.model, r.dataset), several)
        for w in r.warnings:
            lines.append(f"- **Warning ({label})**: {w}.")
        for note in r.notes:
            lines.append(f"- Note ({label}): {note}.")
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
                "seed, so no coefficient has an interval over seeds and the noise floor is "
                "unknown; run two or more seeds (`seeds = [0, 1]`) for both.")
    low, high = float(per_cell.min()), float(per_cell.max())
    spread = (f"{low:.3g} seeds per cell" if math.isclose(low, high) else
              f"{low:.2g} to {high:.2g} finished seeds per cell on average (up to {seeds})")
    return (f"{spread} ({runs} runs of {_count(cells, 'cell')}): every coefficient in this report "
            "is computed on the cells' means over their seeds, with n = cells. Counting "
            "each run as an independent point would pretend to more cells than the grid "
            "has and make every p-value too small (pseudo-replication); the seeds instead "
            "give each coefficient an interval over seeds and each grid a noise floor.")


def multiple_testing_markdown(all_tests: pd.DataFrame, metric: str) -> str:
    """The counts of significant results that survive Holm and BH, one sentence for the
    report's metric and a table of every metric."""
    summary = A.multiple_testing_summary(all_tests)
    if summary.empty:
        return "_No tests._\n"
    main = summary[summary["metric"] == metric]
    row = (main if len(main) else summary).iloc[0]
    alpha = float(row["alpha"])
    n = int(row["tested"])
    label = V.METRIC_SHORT.get(str(row["metric"]), str(row["metric"]))
    significant, holm = int(row["significant"]), int(row["holm_table"])
    text = (
        f"Of the {_count(n, 'test')} of {label} with a coefficient, {significant} "
        f"{'is' if significant == 1 else 'are'} significant at p < {alpha:g}, where "
        f"{row['expected_by_chance']:.2g} would be expected by chance if batch size and "
        f"learning rate had no effect at all. {holm} {'stays' if holm == 1 else 'stay'} "
        f"significant after Holm-Bonferroni within {'its' if holm == 1 else 'their'} "
        f"table (family-wise error rate {alpha:g}) and {int(row['bh_table'])} after "
        f"Benjamini-Hochberg (false discovery rate {alpha:g}); over all "
        f"{_count(n, 'test')} together, {int(row['holm_all'])} after Holm and {int(row['bh_all'])} "
        "after Benjamini-Hochberg.\n\n"
    )
    table = pd.DataFrame({
        "metric": [V.METRIC_SHORT.get(str(m), str(m)) for m in summary["metric"]],
        "tests": summary["tested"],
        f"p < {alpha:g}": summary["significant"],
        "expected by chance": [f"{v:.2g}" for v in summary["expected_by_chance"]],
        "Holm, per table": summary["holm_table"],
        "BH, per table": summary["bh_table"],
        "Holm, all tests": summary["holm_all"],
        "BH, all tests": summary["bh_all"],
    })
    return text + _markdown_frame(table) + (
        "\nA family is one table of one grid and metric (Holm, BH per table) or every "
        "test of a metric in this report (all tests); a result survives when its adjusted "
        f"p-value is below {alpha:g}. Holm controls the chance of any false positive in "
        "the family, Benjamini-Hochberg the expected share of false positives among the "
        "significant results.\n")


def _slope_text(metric: str, row: pd.Series) -> tuple[str, str]:
    slope = float(row["slope"])
    if not math.isfinite(slope):
        return "n/a", "n/a"
    low, high = float(row["slope_low"]), float(row["slope_high"])
    amount = V.metric_amount
    unit = " points" if metric in V.POINT_METRICS else ""
    return amount(metric, slope, signed=True), (
        f"[{amount(metric, low, signed=True).removesuffix(unit)}, "
        f"{amount(metric, high, signed=True)}]")


def whole_grid_markdown(tests: pd.DataFrame, several: bool) -> str:
    """Table 3 of one metric with its intervals, per-seed coefficients and the
    Theil-Sen slope per doubling of the ratio, one row per grid."""
    whole = tests[tests["table"] == 3]
    if whole.empty:
        return "_No tests._\n"
    metric = _metric_of(tests)
    level = f"{confidence_of(whole):.0%}"
    seeds = several_seeds(whole)
    rows = []
    notes: list[str] = []

    def interval(row: pd.Series, prefix: str) -> str:
        text = format_interval(row[f"{prefix}ci_low"], row[f"{prefix}ci_high"])
        return f"n/a ({row[f'{prefix}ci_reason']})" if text == "n/a" else text

    for _, row in whole.iterrows():
        label = md_label((row["study"], row["model"], row["dataset"]), several)
        if isinstance(row["reason"], str):
            rows.append([label, f"n/a ({row['reason']})"] + ["n/a"] * (3 + 2 * seeds))
            continue
        per_seed = ([interval(row, "seed_"),
                     "n/a (one seed)" if int(row["seeds_tested"]) < 2 else
                     f"{row['seed_scc_min']:.2f} to {row['seed_scc_max']:.2f} "
                     f"(SD {row['seed_scc_sd']:.2f}, {int(row['seeds_tested'])} seeds)"]
                    if seeds else [])
        slope, slope_ci = _slope_text(metric, row)
        rows.append([label, f"{row['scc']:.2f}", interval(row, ""), *per_seed, slope,
                     slope_ci])
    table = pd.DataFrame(rows, columns=[
        "grid", "SCC", f"{level} CI over cells",
        *([f"{level} CI over seeds", "SCC of each seed alone"] if seeds else []),
        "slope per doubling of BS/LR", f"{level} CI of the slope"])
    if not seeds:
        notes.append("One seed per cell: no interval over seeds and no coefficient per "
                     "seed (they need two or more seeds).")
    unit = ("percentage points of " if metric in V.POINT_METRICS else "") + \
        V.METRIC_SHORT.get(metric, metric)
    notes.append(
        f"The slope is the Theil-Sen estimate (the median of the pairwise slopes) of the "
        f"cells' mean {V.METRIC_SHORT.get(metric, metric)} against log2(batch size / "
        f"learning rate): the change, in {unit}, when the ratio doubles; its interval is "
        "Sen's (scipy.stats.theilslopes). It says how large the effect is; the SCC only "
        "says how consistently it goes one way.")
    return _markdown_frame(table) + "\n" + " ".join(notes) + "\n"


def seeds_alone_markdown(frame: pd.DataFrame, tests: pd.DataFrame, metric: str,
                         several: bool, **kwargs: object) -> str:
    """Tables 1-3 for each seed alone (only with two or more seeds): per grid and seed,
    how many tests of Tables 1 and 2 are significant and Table 3's coefficient; then
    how much the coefficients of Tables 1-2 move from seed to seed."""
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
              else f"{whole['scc']:.2f} ({A.format_p_eq(whole['p_value'])})")
        rows.append([label, str(key[3]), counts(1), counts(2), t3])
    alpha = float(tests["alpha"].iloc[0])
    table = pd.DataFrame(rows, columns=["grid", "seed", f"Table 1: p < {alpha:g}",
                                        f"Table 2: p < {alpha:g}", "Table 3: SCC (p)"])
    text = _markdown_frame(table)
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
    resamples = int(kwargs.get("n_resamples", 999))  # type: ignore[call-overload]
    parts = [
        f"**Seeds.** {seeds_sentence(tests)}\n",
        f"**Intervals.** Every coefficient has a {level} interval from "
        f"`scipy.stats.bootstrap` ({resamples} resamples, seeded per test): over cells "
        "(BCa; the cells' means resampled with replacement, needing "
        f"{A.MIN_BOOTSTRAP_CELLS} or more cells) and, with two or more seeds, over seeds "
        "(percentile; whole seeds resampled, every cell's mean recomputed over the drawn "
        "seeds, so seed noise enters the interval). k seeds allow only a few distinct "
        "resamples (3 for two seeds), so with few seeds the interval over seeds is the "
        "spread of a handful of coefficients rather than a calibrated interval.\n",
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
        *_trained_under(frame),
        "## Cells\n",
        _markdown_frame(_names_as_text(status_counts(frame))),
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
    parts.append("## Statistics: seeds, intervals, multiple testing, effect sizes\n")
    kwargs = {k: v for k, v in (test_kwargs or {}).items() if k != "include_diverged"}
    parts.append(statistics_markdown(frame, all_tests, metric, several, include_diverged,
                                     **kwargs))
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


def _latex_interval(low: object, high: object) -> str:
    text = format_interval(low, high)
    return "n/a" if text == "n/a" else f"${text}$"


def table_latex(tests: pd.DataFrame, table: int, best_metric: str | None = None) -> str:
    """One of Tables 1-3 as a LaTeX ``table`` with booktabs rules, as in the paper:
    bold significant p-values, underlined non-significant ones, ``n/a`` where no
    coefficient could be computed, an n column when n varies; beside each SCC its
    interval over cells (and over seeds, with two or more seeds), and a dagger / double
    dagger on p-values that survive Holm / Benjamini-Hochberg over the table."""
    if tests.empty or not (tests["table"] == table).any():
        return "% no tests\n"
    metric = _metric_of(tests)
    sub, keys, several, uniform_n, group_by, values, lookup = _table_layout(tests, table)
    seeds = several_seeds(sub)
    level = f"{confidence_of(sub):.0%}".replace("%", r"\%")
    per_key = ["SCC", f"{level} CI"] + ([f"{level} CI seeds"] if seeds else []) + ["$p$"] + (
        [] if uniform_n else ["$n$"])
    width = len(per_key)
    lead = 0 if group_by is None else 1
    spec = ("l" * lead) + ("r" * width) * len(keys)
    title = _TABLE_TITLES[table].format(metric=V.metric_label(metric, best_metric))
    alpha = float(sub["alpha"].iloc[0])
    caption = latex_escape(title.split(": ", 1)[1]).replace(" p ", " $p$ ")
    caption += (f". Bold: $p < {alpha:g}$; underlined: not significant; $^\\dagger$: "
                f"below {alpha:g} after Holm-Bonferroni over the table, $^\\ddagger$: after "
                f"Benjamini-Hochberg. CI: {level} bootstrap interval over cells")
    caption += " and over seeds." if seeds else " (one seed: no interval over seeds)."
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
                p = format_p_latex(row["p_value"])
                marks = ((r"\dagger" if survives(row, "p_holm") else "")
                         + (r"\ddagger" if survives(row, "p_bh") else ""))
                marks = f"^{{{marks}}}" if marks else ""
                p = (rf"$\mathbf{{{p}}}{marks}$" if row["significant"]
                     else rf"\underline{{${p}$}}")
                cells += [f"${row['scc']:.2f}$", _latex_interval(row["ci_low"], row["ci_high"])]
                if seeds:
                    cells.append(_latex_interval(row["seed_ci_low"], row["seed_ci_high"]))
                cells.append(p)
            if not uniform_n:
                cells.append(str(int(row["n"])))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def statistics_latex(tests: pd.DataFrame, best_metric: str | None = None) -> str:
    """The whole grid (Table 3) per grid with its intervals over cells and seeds and the
    Theil-Sen slope per doubling of the ratio, and the multiple-testing counts of the
    metric, as one booktabs table."""
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
        f": SCC with {level} bootstrap intervals over cells and over seeds, and the "
        f"Theil-Sen slope per doubling of the ratio ({unit}). Of {int(counts['tested'])} "
        f"tests, {int(counts['significant'])} have $p < {alpha:g}$ "
        f"({counts['expected_by_chance']:.2g} expected by chance); "
        f"{int(counts['holm_table'])} survive Holm and {int(counts['bh_table'])} "
        f"Benjamini-Hochberg per table, {int(counts['holm_all'])} and "
        f"{int(counts['bh_all'])} over all tests."
        + ("" if several_seeds(whole) else " One seed per cell: no interval over seeds "
           "(it needs two or more)."))
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{caption}}}",
             r"\label{tab:scc-statistics}", r"\begin{tabular}{lrrrrr}", r"\toprule",
             rf" & SCC & {level} CI cells & {level} CI seeds & slope & {level} CI slope \\",
             r"\midrule"]
    scale = 100.0 if metric in V.POINT_METRICS else 1.0
    for _, row in whole.iterrows():
        label = latex_escape(column_label((row["study"], row["model"], row["dataset"]),
                                          several))
        if isinstance(row["reason"], str):
            lines.append(f"{label} & n/a & n/a & n/a & n/a & n/a " + r"\\")
            continue
        slope = float(row["slope"]) * scale
        slope_text = f"${slope:+.2f}$" if math.isfinite(slope) else "n/a"
        lines.append(" & ".join([
            label, f"${row['scc']:.2f}$", _latex_interval(row["ci_low"], row["ci_high"]),
            _latex_interval(row["seed_ci_low"], row["seed_ci_high"]), slope_text,
            _latex_interval(float(row["slope_low"]) * scale, float(row["slope_high"]) * scale),
        ]) + r" \\")
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
) -> str:
    """Render the full report of a results frame.

    ``fmt="markdown"``: settings, cells per status, Tables 1-3 of ``metric`` (each
    coefficient with its ``confidence`` intervals from ``n_resamples`` bootstrap
    resamples, its p-value marked where it survives Holm and Benjamini-Hochberg), the
    direction summary, the statistics section (seeds, multiple testing, the whole grid's
    intervals and slopes, the noise floor, each seed alone), the other ``metrics``
    (Table 3 and direction summary each), the premise check with its warnings.
    ``fmt="csv"``: the tidy tests table of ``metric`` followed by the other ``metrics``
    (every column of :data:`kerasgen.analysis.TEST_COLUMNS`).  ``fmt="latex"``: Tables
    1-3 of ``metric`` and the whole grid's intervals and slopes.
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
        return "\n".join([*(table_latex(tests, t, best) for t in (1, 2, 3)),
                          statistics_latex(tests, best)])
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
        A.normalize(frame), all_tests, metric, ordered, alpha, pvalue, include_diverged, premise,
        kwargs,
    )



__all__ = ["FORMATS", "format_interval", "multiple_testing_markdown", "render_report",
           "several_seeds", "statistics_latex", "statistics_markdown", "status_counts",
           "table_latex", "table_markdown", "tests_csv"]
