"""Render the analyses of :mod:`kerasgen.analysis` as the paper's Tables 1-3 and Figures 1-2.

Imports only numpy, pandas and :mod:`kerasgen.analysis` at module level (matplotlib is
imported inside the figure functions, with the Agg backend), so it is cheap to import.

Public API (stable; what ``kerasgen report`` wires to)
------------------------------------------------------
- ``FORMATS = ("markdown", "csv", "latex")``
- ``render_report(frame, fmt="markdown", metric="test_accuracy", alpha=0.005,
  pvalue="auto", include_diverged=True, min_cells=3, permutations=9999,
  seed=0, train_accuracy_threshold=0.99) -> str``
    markdown: settings, cell counts, Tables 1-3, direction summary, beyond-paper
    metrics, premise check; csv: the tidy tests table (all metrics, ``metric`` first);
    latex: the three tables (booktabs).
- ``table_markdown(tests, table) -> str`` / ``table_latex(tests, table) -> str``
    one of Tables 1-3 from a tests frame of a single metric.
- ``tests_csv(tests) -> str``
- ``format_p(p) -> str`` (``2.6e-11``) / ``format_p_latex(p) -> str``
- ``display_name(name) -> str``   ``resnet110 -> ResNet-110``, ``cifar10 -> CIFAR-10``
- ``status_counts(frame) -> DataFrame``   cells per status per grid
- ``write_figures(frame, out_dir, metric="test_accuracy", include_diverged=True,
  dpi=120) -> list[Path]``
    ``figure1_ratio.png``, ``figure2a_batch_size.png``, ``figure2b_learning_rate.png``
    and one ``heatmap_<model>_<dataset>.png`` per grid (``heatmap_<study>_<model>_
    <dataset>.png`` when the frame holds several studies).

The CLI maps ``--format`` to ``fmt``, ``--alpha``, ``--pvalue``, ``--metric`` to the
same-named arguments, ``--exclude-diverged`` to ``include_diverged=False`` and
``--figures DIR`` to ``write_figures(frame, DIR, metric=...)``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from kerasgen import analysis as A
from kerasgen.vocabulary import display_name

FORMATS: tuple[str, ...] = ("markdown", "csv", "latex")

_TABLE_TITLES = {
    1: "Table 1: SCC and p of batch size to {metric} for each learning rate (LR)",
    2: "Table 2: SCC and p of learning rate to {metric} for each batch size (BS)",
    3: "Table 3: SCC and p of batch size / learning rate to {metric}",
}
_ROW_LABEL = {1: "LR", 2: "BS"}

# --------------------------------------------------------------------------- formatting


def _split_exp(p: float) -> tuple[str, int]:
    mant, exp = f"{p:.1e}".split("e")
    return mant, int(exp)


format_p = A.format_p


def format_p_latex(p: float) -> str:
    """A p-value in LaTeX math as the paper prints it: ``2.6 \\times 10^{-11}``."""
    if p is None or not math.isfinite(float(p)):
        return r"\text{n/a}"
    p = float(p)
    if p == 0.0:
        return r"<10^{-308}"
    mant, exp = _split_exp(p)
    if exp == 0:
        return mant
    return rf"{mant} \times 10^{{{exp}}}"


def _decimals(values: Sequence[float]) -> int:
    """Fewest decimals (2..6) that print every value exactly at 6 significant digits."""
    for d in range(2, 7):
        if all(abs(round(float(v), d) - float(v)) <= 1e-12 * max(1.0, abs(float(v))) for v in values):
            return d
    return 6


def _format_value(value: object, group_by: str | None, decimals: int | None = None) -> str:
    if group_by == "batch_size":
        return str(int(value))  # type: ignore[arg-type]
    v = float(value)  # type: ignore[arg-type]
    if decimals is None:
        decimals = _decimals([v])
    if v != 0 and abs(v) < 10.0 ** -decimals:
        return f"{v:.3g}"
    return f"{v:.{decimals}f}"


def _latex_escape(text: str) -> str:
    return re.sub(r"([_&%$#{}])", r"\\\1", str(text))


def _columns(tests: pd.DataFrame) -> list[tuple[str, str, str]]:
    keys = tests[["study", "model", "dataset"]].drop_duplicates()
    return [tuple(map(str, row)) for row in keys.itertuples(index=False)]  # type: ignore[misc]


def _column_label(key: tuple[str, str, str], several_studies: bool) -> str:
    study, model, dataset = key
    label = f"{display_name(model)} on {display_name(dataset)}"
    return f"{study}: {label}" if several_studies else label


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
        label = _column_label(key, several)
        header += [f"{label} SCC", "p"] + ([] if uniform_n else ["n"])
    align = ["---:"] * len(header)
    lines = [_md_row(header), _md_row(align)]
    dec = _decimals([float(v) for v in values]) if group_by == "learning_rate" else None
    for gv in values if group_by is not None else [None]:
        cells: list[str] = [] if group_by is None else [_format_value(gv, group_by, dec)]
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
        count = int(sum(1 for r in sub["reason"] if isinstance(r, str) and _mark_for(r, marks) == mark))
        notes.append(f"({mark}) {reason}: {count} group(s).")
    title = _TABLE_TITLES[table].format(metric=A.metric_label(metric, best_metric))
    return f"**{title}.**\n\n" + "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def status_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells per status for every (study, model, dataset): columns done, diverged,
    running, pending, failed, total."""
    statuses = ["done", "diverged", "running", "pending", "failed"]
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
        label = _column_label(tuple(map(str, key)), several)  # type: ignore[arg-type]
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
                _column_label((r.study, r.model, r.dataset), several)
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
                    premise["train_loss_min"], premise["train_loss_median"], premise["train_loss_max"]
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
            f"SCC({A.METRIC_SHORT.get(metric, metric)}, ratio)": [
                f"{s:+.2f} ({A.format_p_eq(p)})" if math.isfinite(s) else "n/a"
                for s, p in zip(premise["metric_ratio_scc"], premise["metric_ratio_p"])
            ],
        }
    )
    text = _markdown_frame(table) + "\n"
    lines = []
    for r in premise.itertuples():
        label = _column_label((r.study, r.model, r.dataset), several)
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
    label = A.metric_label(metric, best)
    parts = [
        "# Batch size, learning rate and generalization (He, Liu & Tao, NeurIPS 2019)\n",
        f"Metric: **{label}**; significance: p < {alpha:g}; p-values: {pvalue}; "
        f"diverged cells {'included' if include_diverged else 'excluded'}. "
        "Pending, running and failed cells are ignored. Every per-cell number is read at "
        "the cell's kept epoch"
        + (f" ({A.KEPT_EPOCH_RULES[best]})" if best in A.KEPT_EPOCH_RULES else "")
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
            parts.append(f"### {A.metric_label(other, best)}\n")
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
    title = _TABLE_TITLES[table].format(metric=A.metric_label(metric, best_metric))
    alpha = float(sub["alpha"].iloc[0])
    caption = _latex_escape(title.split(": ", 1)[1]).replace(" p ", " $p$ ")
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
        rf"\multicolumn{{{width}}}{{c}}{{{_latex_escape(_column_label(k, several))}}}" for k in keys
    ]
    lines.append(" & ".join(head) + r" \\")
    rules = [
        rf"\cmidrule(lr){{{lead + 1 + i * width}-{lead + (i + 1) * width}}}" for i in range(len(keys))
    ]
    lines.append(" ".join(rules))
    sub_head = [_ROW_LABEL.get(table, "")] * lead + (
        ["SCC", "$p$"] if uniform_n else ["SCC", "$p$", "$n$"]
    ) * len(keys)
    lines.append(" & ".join(sub_head) + r" \\")
    lines.append(r"\midrule")
    dec = _decimals([float(v) for v in values]) if group_by == "learning_rate" else None
    for gv in values if group_by is not None else [None]:
        cells = [] if group_by is None else [_format_value(gv, group_by, dec)]
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


# --------------------------------------------------------------------------- figures


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip("-") or "x"


def _panels(n: int) -> tuple[int, int]:
    ncols = 1 if n <= 1 else 2 if n <= 4 else 3
    return math.ceil(max(n, 1) / ncols), ncols


def _figure(n_panels: int, width: float = 5.2, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    nrows, ncols = _panels(n_panels)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


def _save(fig, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _grids(norm: pd.DataFrame) -> list[tuple[tuple[str, str, str], pd.DataFrame]]:
    return [
        (tuple(map(str, key)), grid)  # type: ignore[misc]
        for key, grid in norm.groupby(["study", "model", "dataset"], sort=True)
    ]


def _curve_cmap():
    """viridis without its lightest yellows, which vanish on a white background."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    return ListedColormap(plt.get_cmap("viridis")(np.linspace(0.0, 0.85, 256)), name="viridis_dark")


def _empty_panel(ax, text: str = "no finished cells yet") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _curves_figure(
    norm: pd.DataFrame,
    done: pd.DataFrame,
    metric: str,
    x: str,
    curve: str,
    path: Path,
    title: str,
    several: bool,
    dpi: int,
) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    grids = _grids(norm)
    fig, axes = _figure(len(grids), width=5.6)
    label = A.metric_label(metric, A.best_metric_of(norm))
    cmap = _curve_cmap()
    x_label = {"batch_size": "batch size", "learning_rate": "learning rate"}[x]
    c_label = {"batch_size": "batch size", "learning_rate": "learning rate"}[curve]
    for ax, (key, grid) in zip(axes, grids):
        cells = done[
            (done["study"] == key[0]) & (done["model"] == key[1]) & (done["dataset"] == key[2])
        ]
        ax.set_title(_column_label(key, several) + f" (n={len(cells)})", fontsize=11)
        ax.set_xlabel(x_label)
        ax.set_ylabel(label if len(label) < 30 else label.split(" (")[0])
        ax.grid(True, alpha=0.3)
        levels = sorted(grid[curve].unique())
        lo, hi = (min(levels), max(levels)) if levels else (0.0, 1.0)
        norm_c = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-9)
        if cells.empty:
            _empty_panel(ax)
        for level in levels:
            sub = cells[cells[curve] == level]
            if sub.empty:
                continue
            mean = sub.groupby(x)[metric].mean().sort_index()
            colour = cmap(norm_c(level))
            ax.plot(mean.index, mean.to_numpy(), "-o", color=colour, lw=1.2, ms=3)
            div = sub[sub["status"] == "diverged"]
            if not div.empty:
                ax.plot(div[x], div[metric], "x", color="red", ms=7, mew=1.8, zorder=5)
        sm = plt.cm.ScalarMappable(norm=norm_c, cmap=cmap)
        sm.set_array([])
        cbar = fig.colorbar(sm, ax=ax, pad=0.02)
        cbar.set_label(c_label)
        if 1 < len(levels) <= 10:
            dec = _decimals(levels) if curve == "learning_rate" else None
            cbar.set_ticks(levels)
            cbar.set_ticklabels([_format_value(v, curve, dec) for v in levels])
        if (cells["status"] == "diverged").any():
            ax.legend(
                handles=[Line2D([], [], ls="", marker="x", color="red", mew=1.8, label="diverged")],
                loc="best",
                fontsize=9,
            )
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _figure_ratio(
    norm: pd.DataFrame, done: pd.DataFrame, metric: str, path: Path, several: bool, dpi: int
) -> Path:
    grids = _grids(norm)
    fig, axes = _figure(len(grids))
    label = A.metric_label(metric, A.best_metric_of(norm))
    for ax, (key, _grid) in zip(axes, grids):
        cells = done[
            (done["study"] == key[0]) & (done["model"] == key[1]) & (done["dataset"] == key[2])
        ]
        ok = cells[cells["status"] == "done"]
        div = cells[cells["status"] == "diverged"]
        ax.set_title(_column_label(key, several) + f" (n={len(cells)})", fontsize=11)
        if cells.empty:
            _empty_panel(ax)
        else:
            ax.scatter(ok["ratio"], ok[metric], s=18, alpha=0.75, color="tab:blue", label="done")
            if not div.empty:
                ax.scatter(
                    div["ratio"], div[metric], s=40, marker="x", color="red", lw=1.8,
                    label="diverged (best before divergence)",
                )
            ax.set_xscale("log")
            ax.legend(loc="best", fontsize=9)
        ax.set_xlabel("batch size / learning rate (log scale)")
        ax.set_ylabel(label if len(label) < 30 else label.split(" (")[0])
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"Figure 1: {label} vs batch size / learning rate", fontsize=13)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _heatmap(
    grid: pd.DataFrame,
    done: pd.DataFrame,
    key: tuple[str, str, str],
    metric: str,
    path: Path,
    several: bool,
    dpi: int,
) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    bss = sorted(grid["batch_size"].unique())
    lrs = sorted(grid["learning_rate"].unique())
    values = np.full((len(bss), len(lrs)), np.nan)
    diverged = np.zeros_like(values, dtype=bool)
    mean = done.groupby(["batch_size", "learning_rate"])[metric].mean()
    for (bs, lr), v in mean.items():
        values[bss.index(bs), lrs.index(lr)] = v
    for (bs, lr), st in grid.groupby(["batch_size", "learning_rate"])["status"]:
        diverged[bss.index(bs), lrs.index(lr)] = bool((st == "diverged").any())
    width = max(6.0, 0.55 * len(lrs) + 3.0)
    height = max(4.5, 0.42 * len(bss) + 2.0)
    fig, ax = plt.subplots(figsize=(width, height))
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.85")
    masked = np.ma.masked_invalid(values)
    finite = values[np.isfinite(values)]
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    if vmax <= vmin:
        vmax = vmin + 1e-9
    im = ax.imshow(masked, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", aspect="auto")
    label = A.metric_label(metric, A.best_metric_of(grid))
    cbar = fig.colorbar(im, ax=ax, pad=0.02)
    cbar.set_label(label if len(label) < 30 else label.split(" (")[0])
    ax.set_xticks(range(len(lrs)))
    dec = _decimals(lrs)
    ax.set_xticklabels(
        [_format_value(v, "learning_rate", dec) for v in lrs], rotation=90 if len(lrs) > 8 else 0
    )
    ax.set_yticks(range(len(bss)))
    ax.set_yticklabels([str(int(v)) for v in bss])
    ax.set_xlabel("learning rate")
    ax.set_ylabel("batch size")
    annotate = len(bss) * len(lrs) <= 144
    for i in range(len(bss)):
        for j in range(len(lrs)):
            v = values[i, j]
            if annotate and math.isfinite(v):
                shade = (v - vmin) / (vmax - vmin)
                ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=8,
                        color="white" if shade < 0.55 else "black")
            elif not math.isfinite(v):
                ax.text(j, i, "–", ha="center", va="center", fontsize=9, color="0.35")
            if diverged[i, j]:
                ax.plot(j + 0.32, i + 0.3, marker="x", color="red", ms=6, mew=2)
    handles = []
    if not np.isfinite(values).all():
        handles.append(Patch(facecolor="0.85", edgecolor="0.5", label="not finished (–)"))
    if diverged.any():
        handles.append(Line2D([], [], ls="", marker="x", color="red", mew=2, label="diverged"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    n_done = int(np.isfinite(values).sum())
    n_div = int(diverged.sum())
    ax.set_title(
        f"{label} — {_column_label(key, several)}\n"
        f"{n_done} of {len(bss) * len(lrs)} (batch size, learning rate) pairs finished"
        + (f", {n_div} diverged" if n_div else ""),
        fontsize=11,
    )
    fig.tight_layout(rect=(0.0, 0.05 if handles else 0.0, 1.0, 1.0))
    return _save(fig, path, dpi)


def write_figures(
    frame: pd.DataFrame,
    out_dir: str | Path,
    metric: str = A.PAPER_METRIC,
    include_diverged: bool = True,
    dpi: int = 120,
) -> list[Path]:
    """Write the paper's figures for ``metric`` as PNG files into ``out_dir``.

    - ``figure1_ratio.png``: metric vs batch size / learning rate (log x), one panel
      per model x data set, every finished cell a point, diverged cells as red crosses;
    - ``figure2a_batch_size.png``: metric vs batch size, one curve per learning rate
      (colour bar), a panel per model x data set (seeds averaged);
    - ``figure2b_learning_rate.png``: metric vs learning rate, one curve per batch size;
    - ``heatmap_<model>_<dataset>.png``: metric over batch size x learning rate, values
      annotated when the grid has at most 144 pairs, unfinished pairs grey, diverged
      ones marked with a red cross.

    Returns the paths written (figures first, then heatmaps in grid order).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        return []
    frame = A.add_derived_metrics(frame)
    norm = A.normalize(frame)
    done = A.finished_cells(norm, metric, include_diverged)
    several = norm["study"].nunique() > 1
    label = A.metric_label(metric, A.best_metric_of(norm))
    paths = [
        _figure_ratio(norm, done, metric, out / "figure1_ratio.png", several, dpi),
        _curves_figure(
            norm, done, metric, "batch_size", "learning_rate", out / "figure2a_batch_size.png",
            f"Figure 2a: {label} vs batch size, one curve per learning rate", several, dpi,
        ),
        _curves_figure(
            norm, done, metric, "learning_rate", "batch_size", out / "figure2b_learning_rate.png",
            f"Figure 2b: {label} vs learning rate, one curve per batch size", several, dpi,
        ),
    ]
    for key, grid in _grids(norm):
        cells = done[
            (done["study"] == key[0]) & (done["model"] == key[1]) & (done["dataset"] == key[2])
        ]
        stem = "_".join(_safe(k) for k in (key if several else key[1:]))
        paths.append(_heatmap(grid, cells, key, metric, out / f"heatmap_{stem}.png", several, dpi))
    return paths
