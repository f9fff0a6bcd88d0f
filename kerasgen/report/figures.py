"""The paper's figures as PNG files (matplotlib with the Agg backend, imported inside the
functions): Figure 1 (metric vs ratio, coloured by learning rate, the grid's SCC in each
panel), Figures 2a/2b (metric vs batch size on a log-2 axis / learning rate, one colour
per curve with a discrete legend), a heatmap per grid, the generalization gap vs ratio, and
learning curves per grid (small multiples, the kept epoch marked). Every figure names its
study."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from kerasgen import analysis as A
from kerasgen import vocabulary as V
from kerasgen.naming import file_stem
from kerasgen.report.format import column_label, decimals, format_p, format_value
from kerasgen.report.layout import INTERACTIVE_PAGE
from kerasgen.vocabulary import DIVERGED


def literal_text(function):
    """Draw with mathtext off: a name such as ``$x$`` or ``$\\frac{`` is shown as it is
    written, never parsed as a formula (an invalid one crashed every figure)."""
    @functools.wraps(function)
    def drawing(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return function(*args, **kwargs)

    return drawing


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


MAX_LEGEND_LEVELS = 10
"""Up to this many curves get a legend entry each; more share a discrete colour bar."""


def _level_colours(levels) -> dict:
    """One colour per level, evenly spaced along the curve colour map (discrete)."""
    cmap = _curve_cmap()
    n = len(levels)
    return {level: cmap(i / max(n - 1, 1)) for i, level in enumerate(levels)}


def _level_key(fig, axes, levels, colours: dict, name: str) -> float:
    """A discrete key of the levels for the whole figure: a legend below the panels for a
    few, a stepped colour bar beside them for many. Returns the height (as a fraction of
    the figure) to keep free at the bottom."""
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.lines import Line2D

    dec = decimals(levels) if name == "learning_rate" else None
    text = {"batch_size": "batch size", "learning_rate": "learning rate"}[name]
    labels = [format_value(v, name, dec) for v in levels]
    if len(levels) <= MAX_LEGEND_LEVELS:
        handles = [Line2D([], [], ls="-", marker="o", ms=4, color=colours[v], label=lab)
                   for v, lab in zip(levels, labels)]
        fig.legend(handles=handles, title=text, fontsize=9, title_fontsize=9,
                   loc="lower center", ncol=len(handles), frameon=False)
        return 0.11 if len(fig.axes) <= 2 else 0.06
    import matplotlib.cm as cm

    cmap = ListedColormap([colours[v] for v in levels])
    bounds = np.arange(len(levels) + 1) - 0.5
    bar = fig.colorbar(cm.ScalarMappable(norm=BoundaryNorm(bounds, cmap.N), cmap=cmap),
                       ax=axes, pad=0.02, ticks=np.arange(len(levels)))
    step = max(1, math.ceil(len(levels) / 10))
    bar.ax.set_yticklabels([lab if i % step == 0 else "" for i, lab in enumerate(labels)])
    bar.set_label(text)
    return 0.0


def study_title(norm: pd.DataFrame) -> str:
    studies = sorted(map(str, norm["study"].unique()))
    return f"study {studies[0]}" if len(studies) == 1 else "studies " + ", ".join(studies)


def _table3(frame: pd.DataFrame, metric: str, include_diverged: bool, alpha: float,
            pvalue) -> dict:
    """(study, model, dataset) -> the Table 3 test of ``metric`` (SCC, p, n)."""
    try:
        tests = A.spearman_tests(frame, metric=metric, alpha=alpha, pvalue=pvalue,
                                 include_diverged=include_diverged, intervals=False)
    except (KeyError, ValueError):
        return {}
    rows = tests[tests["table"] == 3]
    return {(str(r.study), str(r.model), str(r.dataset)): r for r in rows.itertuples()}


def _scc_text(test) -> str:
    if test is None or not np.isfinite(test.scc):
        reason = getattr(test, "reason", "") if test is not None else ""
        return "SCC n/a" + (f" ({reason})" if isinstance(reason, str) and reason else "")
    mark = f" < {test.alpha:g}" if bool(test.significant) else ""
    return (f"SCC {test.scc:+.2f}, p perm. = {format_p(test.p_perm)}{mark} (paper p = "
            f"{format_p(test.p_value)}, n={int(test.n)})")


def _annotate_scc(ax, test, alpha: float) -> None:
    """The grid's Table 3 coefficient in the panel (``p < alpha`` when significant)."""
    ax.text(0.02, 0.03, _scc_text(test), transform=ax.transAxes, fontsize=8.5,
            va="bottom", ha="left", bbox=dict(boxstyle="round,pad=0.25", fc="white",
                                              ec="0.75", alpha=0.9))


def _seed_count(cells: pd.DataFrame) -> int:
    """Most finished seeds of any cell (batch size x learning rate) of a grid."""
    if cells.empty or "seed" not in cells.columns:
        return 1 if not cells.empty else 0
    return int(cells.groupby(["batch_size", "learning_rate"])["seed"].nunique().max())


def _count_text(cells: pd.DataFrame) -> str:
    """`` (n=16)``: the finished cells of a panel; `` (16 cells, 32 runs)`` with seeds."""
    if _seed_count(cells) < 2:
        return f" (n={len(cells)})"
    n = len(cells.drop_duplicates(["batch_size", "learning_rate"]))
    return f" ({n} cells, {len(cells)} runs)"


def _seed_bars_label(seeds: int) -> str:
    return f"mean ± SD over {seeds} seeds"


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
    share_y="auto",
) -> Path:
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator

    grids = _grids(norm)
    fig, axes = _figure(len(grids), width=5.6)
    label = V.short_label(metric, A.best_metric_of(norm))
    all_levels = sorted(norm[curve].unique())
    colours = _level_colours(all_levels)
    geometric_lr = geometric_ratio(norm["learning_rate"].unique()) is not None
    x_label = {"batch_size": "batch size (log 2 scale)",
               "learning_rate": "learning rate (log scale)" if geometric_lr
               else "learning rate"}[x]
    for ax, (key, grid) in zip(axes, grids):
        cells = done[
            (done["study"] == key[0]) & (done["model"] == key[1]) & (done["dataset"] == key[2])
        ]
        ax.set_title(column_label(key, several) + _count_text(cells), fontsize=11)
        ax.set_xlabel(x_label)
        ax.set_ylabel(label if len(label) < 30 else label.split(" (")[0])
        ax.grid(True, alpha=0.3)
        levels = sorted(grid[curve].unique())
        if cells.empty:
            _empty_panel(ax)
        seeds = _seed_count(cells)
        for level in levels:
            sub = cells[cells[curve] == level]
            if sub.empty:
                continue
            mean = sub.groupby(x)[metric].mean().sort_index()
            colour = colours[level]
            if seeds >= 2:  # each point a cell's mean over its seeds, the bar its SD
                sd = sub.groupby(x)[metric].std().reindex(mean.index).fillna(0.0)
                ax.errorbar(mean.index, mean.to_numpy(), yerr=sd.to_numpy(), fmt="-o",
                            color=colour, lw=1.2, ms=3, elinewidth=0.8, capsize=2)
            else:
                ax.plot(mean.index, mean.to_numpy(), "-o", color=colour, lw=1.2, ms=3)
            div = sub[sub["status"] == DIVERGED]
            if not div.empty:
                ax.plot(div[x], div[metric], "x", color="red", ms=7, mew=1.8, zorder=5)
        if x == "batch_size":
            ax.set_xscale("log", base=2)
            ticks = sorted(grid["batch_size"].unique())
            step = max(1, math.ceil(len(ticks) / 8))
            ax.xaxis.set_major_locator(FixedLocator(ticks[::step]))
            ax.xaxis.set_major_formatter(_IntFormatter())
            ax.xaxis.set_minor_locator(NullLocator())
        elif geometric_lr:  # a geometric grid of learning rates: evenly spaced on a log axis
            _log_x(ax, grid["learning_rate"].unique())
        handles = []
        if seeds >= 2:
            handles.append(Line2D([], [], ls="-", marker="o", color="0.3", ms=3,
                                  label=_seed_bars_label(seeds)))
        if (cells["status"] == DIVERGED).any():
            handles.append(Line2D([], [], ls="", marker="x", color="red", mew=1.8,
                                  label="diverged"))
        if handles:
            ax.legend(handles=handles, loc="lower left", fontsize=8)
    _share_y(axes, [key for key, _ in grids], share_y)
    fig.suptitle(f"{title} ({study_title(norm)})", fontsize=13)
    fig.tight_layout()
    bottom = _level_key(fig, axes, all_levels, colours, curve)
    if bottom:
        fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    return _save(fig, path, dpi)


def _IntFormatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f"{int(round(v))}")


def geometric_ratio(values) -> float | None:
    """The common ratio of a geometric grid (three or more positive values, each the one
    before times the same factor, within 1 %), else None: such a grid belongs on a log
    axis, where its points are evenly spaced."""
    levels = sorted({float(v) for v in values})
    if len(levels) < 3 or levels[0] <= 0:
        return None
    steps = np.diff(np.log(levels))
    if steps.min() <= 0 or (steps.max() - steps.min()) > 0.01 * steps.mean():
        return None
    return float(math.exp(steps.mean()))


def _log_x(ax, levels) -> None:
    """A log axis with a tick at each level (thinned to about eight), printed plainly
    (never as mathtext, which ``literal_text`` turns off)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ratio = geometric_ratio(levels)
    ax.set_xscale("log", base=2 if ratio and abs(ratio - 2) < 0.02 else 10)
    axis = ax.xaxis
    ticks = sorted({float(v) for v in levels})
    step = max(1, math.ceil(len(ticks) / 8))
    axis.set_major_locator(FixedLocator(ticks[::step]))
    dec = decimals(ticks)
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.{dec}f}".rstrip("0")
                                           .rstrip(".") if v < 1 else f"{v:g}"))
    axis.set_minor_locator(NullLocator())


def _plain_log_ticks(axis) -> None:
    """Tick labels of a log axis as plain numbers (``1000``, ``1e+04``): mathtext is off in
    the figures (names are drawn literally), so matplotlib's default ``10^3`` would print
    as its source."""
    from matplotlib.ticker import FuncFormatter, LogFormatter

    minor = LogFormatter(labelOnlyBase=False, minor_thresholds=(0, 0))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    axis.set_minor_formatter(minor)


SHARE_Y = ("auto", True, False)


def share_y_groups(keys, share_y) -> list[list[int]]:
    """Which panels share a y range: ``True`` every panel, ``False`` none, ``"auto"``
    the panels of one data set (the same metric on the same test set is comparable
    across models; accuracies of different data sets are not)."""
    if share_y not in SHARE_Y:
        raise ValueError(f"share_y must be one of {SHARE_Y}, not {share_y!r}")
    if share_y is False:
        return [[i] for i in range(len(keys))]
    if share_y is True:
        return [list(range(len(keys)))]
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(str(key[2]), []).append(i)
    return list(groups.values())


def _share_y(axes, keys, share_y) -> None:
    """Give each group of panels (``share_y_groups``) one y range: the union of theirs."""
    for group in share_y_groups(keys, share_y):
        shown = [axes[i] for i in group if axes[i].has_data()]
        if len(shown) < 2:
            continue
        low = min(ax.get_ylim()[0] for ax in shown)
        high = max(ax.get_ylim()[1] for ax in shown)
        for ax in shown:
            ax.set_ylim(low, high)


def _figure_ratio(
    norm: pd.DataFrame, done: pd.DataFrame, metric: str, path: Path, several: bool, dpi: int,
    tests: dict | None = None, alpha: float = 0.005, title: str | None = None,
    share_y="auto",
) -> Path:
    """Figure 1 (and the gap figure): ``metric`` against the ratio, every cell coloured by
    its learning rate, the grid's Table 3 SCC and p in each panel."""
    from matplotlib.lines import Line2D

    grids = _grids(norm)
    fig, axes = _figure(len(grids), width=5.6)
    label = V.short_label(metric, A.best_metric_of(norm))
    levels = sorted(norm["learning_rate"].unique())
    colours = _level_colours(levels)
    for ax, (key, _grid) in zip(axes, grids):
        cells = done[
            (done["study"] == key[0]) & (done["model"] == key[1]) & (done["dataset"] == key[2])
        ]
        ax.set_title(column_label(key, several) + _count_text(cells), fontsize=11)
        seeds = _seed_count(cells)
        if cells.empty:
            _empty_panel(ax)
        else:
            per_cell = cells.groupby(["batch_size", "learning_rate"]).agg(
                ratio=("ratio", "first"), mean=(metric, "mean"), sd=(metric, "std"),
                diverged=("status", lambda st: bool((st == DIVERGED).any()))).reset_index()
            if seeds >= 2:  # a point per cell: its mean over seeds, the bar their SD
                ax.errorbar(per_cell["ratio"], per_cell["mean"],
                            yerr=per_cell["sd"].fillna(0.0).to_numpy(), fmt="none",
                            ecolor="0.55", elinewidth=0.8, capsize=2, zorder=1)
            ok = per_cell[~per_cell["diverged"]]
            ax.scatter(ok["ratio"], ok["mean"], s=22, alpha=0.9, zorder=2,
                       c=[colours[v] for v in ok["learning_rate"]])
            div = per_cell[per_cell["diverged"]]
            if not div.empty:
                ax.scatter(div["ratio"], div["mean"], s=40, marker="x", color="red", lw=1.8,
                           zorder=3)
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis)
            handles = []
            if seeds >= 2:
                handles.append(Line2D([], [], ls="", marker="o", color="0.55", ms=4,
                                      label=_seed_bars_label(seeds)))
            if not div.empty:
                handles.append(Line2D([], [], ls="", marker="x", color="red", mew=1.8,
                                      label="diverged (best before divergence)"))
            if handles:
                ax.legend(handles=handles, loc="upper right", fontsize=8)
        if tests is not None:
            _annotate_scc(ax, tests.get(key), alpha)
        ax.set_xlabel("batch size / learning rate (log scale)")
        ax.set_ylabel(label if len(label) < 30 else label.split(" (")[0])
        ax.grid(True, which="both", alpha=0.3)
    _share_y(axes, [key for key, _ in grids], share_y)
    heading = title or f"Figure 1: {label} vs batch size / learning rate"
    fig.suptitle(f"{heading} ({study_title(norm)})", fontsize=13)
    fig.tight_layout()
    bottom = _level_key(fig, axes, levels, colours, "learning_rate")
    if bottom:
        fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
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
        diverged[bss.index(bs), lrs.index(lr)] = bool((st == DIVERGED).any())
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
    label = V.metric_label(metric, A.best_metric_of(grid))
    cbar = fig.colorbar(im, ax=ax, pad=0.02)
    cbar.set_label(label if len(label) < 30 else label.split(" (")[0])
    ax.set_xticks(range(len(lrs)))
    dec = decimals(lrs)
    ax.set_xticklabels(
        [format_value(v, "learning_rate", dec) for v in lrs], rotation=90 if len(lrs) > 8 else 0
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
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9,
                   frameon=False)
    n_done = int(np.isfinite(values).sum())
    n_div = int(diverged.sum())
    ax.set_title(
        f"{label} — {column_label(key, several)} ({study_title(grid)})\n"
        f"{n_done} of {len(bss) * len(lrs)} (batch size, learning rate) pairs finished"
        + (f", {n_div} diverged" if n_div else ""),
        fontsize=11,
    )
    fig.tight_layout(rect=(0.0, 0.05 if handles else 0.0, 1.0, 1.0))
    return _save(fig, path, dpi)


def _learning_curves(
    epochs: pd.DataFrame, cells: pd.DataFrame, key: tuple[str, str, str], path: Path,
    several: bool, dpi: int,
) -> Path:
    """Small multiples of one grid: a panel per (batch size, learning rate), rows by batch
    size, columns by learning rate; in each, every seed's test accuracy and clean training
    accuracy (Keras's running training accuracy where no clean one was recorded) by epoch,
    the kept epoch marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    bss = sorted(cells["batch_size"].unique())
    lrs = sorted(cells["learning_rate"].unique())
    clean = epochs["train_eval_accuracy"].notna().any()
    train_col = "train_eval_accuracy" if clean else "train_accuracy"
    panel = 1.25
    width, height = panel * len(lrs) + 1.2, panel * 0.8 * len(bss) + 1.4
    dpi = int(min(dpi, 3000 / width, 3000 / height))
    fig, axes = plt.subplots(len(bss), len(lrs), figsize=(width, height), sharex=True,
                             sharey=True, squeeze=False)
    kept = cells.set_index("cell_id")["kept_epoch"]
    status = cells.set_index("cell_id")["status"]
    seed_of = cells.set_index("cell_id")["seed"] if "seed" in cells.columns else pd.Series()
    seeds = sorted(seed_of.dropna().unique().tolist())
    styles = {seed: SEED_STYLES[i % len(SEED_STYLES)] for i, seed in enumerate(seeds)}
    by_cell = dict(tuple(epochs.groupby("cell_id")))
    low, high = curve_limits(epochs[epochs["cell_id"].isin(cells["cell_id"])],
                             [train_col, "test_accuracy"], kept)
    dec = decimals(lrs)
    for i, bs in enumerate(bss):
        for j, lr in enumerate(lrs):
            ax = axes[i, j]
            ax.tick_params(labelsize=6, length=2)
            ax.grid(True, alpha=0.25)
            ids = cells[(cells["batch_size"] == bs) & (cells["learning_rate"] == lr)]["cell_id"]
            for cell_id in ids:
                rows = by_cell.get(cell_id)
                if rows is None or rows.empty:
                    continue
                rows = rows.sort_values("epoch")
                ls = styles.get(seed_of.get(cell_id), "-")
                ax.plot(rows["epoch"], rows[train_col], color="tab:orange", lw=0.9, ls=ls)
                ax.plot(rows["epoch"], rows["test_accuracy"], color="tab:blue", lw=0.9, ls=ls)
                k = kept.get(cell_id)
                if k is not None and np.isfinite(k):
                    hit = rows[rows["epoch"] == int(k)]["test_accuracy"]
                    ax.axvline(k, color="0.4", ls=":", lw=0.8)
                    if len(hit):
                        ax.plot([k], [hit.iloc[0]], "o", color="tab:blue", ms=3)
                if status.get(cell_id) == DIVERGED:
                    for side in ax.spines.values():
                        side.set_color("red")
            if i == 0:
                ax.set_title(f"lr {format_value(lr, 'learning_rate', dec)}", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"bs {int(bs)}", fontsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=7)
    if math.isfinite(low) and math.isfinite(high):
        axes[0, 0].set_ylim(low, high)  # shared by every panel of the grid
    handles = [Line2D([], [], color="tab:blue", label="test accuracy"),
               Line2D([], [], color="tab:orange",
                      label="clean train accuracy" if clean else "train accuracy (running)"),
               Line2D([], [], color="0.4", ls=":", marker="o", ms=3, label="kept epoch")]
    if (cells["status"] == DIVERGED).any():
        handles.append(Line2D([], [], color="red", label="diverged (red frame)"))
    if len(seeds) >= 2:
        handles += [Line2D([], [], color="0.3", ls=styles[seed], label=f"seed {seed}")
                    for seed in seeds]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8,
               frameon=False)
    fig.suptitle(f"Learning curves — {column_label(key, several)} ({study_title(cells)}); "
                 "y zoomed to the second half of training", fontsize=11)
    fig.tight_layout(rect=(0.0, 0.04, 1.0, 1.0))
    return _save(fig, path, dpi)


SEED_STYLES: tuple = ("-", "--", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)))
"""One line style per seed in the learning curves (never ``:``, the kept epoch's)."""


def curve_limits(epochs: pd.DataFrame, columns, kept: pd.Series | None = None,
                 margin: float = 0.05) -> tuple[float, float]:
    """The y range of learning curves, zoomed to the data: every value of the second half
    of each run's epochs and at its kept epoch, with ``margin`` of the range on each side
    (the first epochs, far below, run off the bottom; a 0-1 axis would flatten the
    differences that matter to a line)."""
    values = []
    for cell_id, rows in epochs.groupby("cell_id"):
        rows = rows.sort_values("epoch")
        last = rows[rows["epoch"] >= rows["epoch"].min()
                    + (rows["epoch"].max() - rows["epoch"].min()) / 2.0]
        values.append(last[list(columns)].to_numpy(dtype=float).ravel())
        k = kept.get(cell_id) if kept is not None else None
        if k is not None and np.isfinite(k):
            values.append(rows[rows["epoch"] == int(k)][list(columns)].to_numpy(
                dtype=float).ravel())
    flat = np.concatenate(values) if values else np.array([])
    flat = flat[np.isfinite(flat)]
    if not flat.size:
        return math.nan, math.nan
    low, high = float(flat.min()), float(flat.max())
    pad = margin * (high - low) if high > low else max(1e-3, abs(high) * 1e-3)
    return low - pad, high + pad


def _interactive_page(norm: pd.DataFrame, done: pd.DataFrame, metric: str, path: Path,
                      several: bool) -> Path | None:
    """The interactive page beside the PNGs: per grid, a heatmap of the metric (the mean
    over seeds) over log2 batch size x log2 learning rate, a tooltip per cell (batch
    size, learning rate, ratio, mean, SD and count of seeds, status). One self-contained
    HTML file (plotly, its JavaScript inlined: nothing fetched). None when plotly is not
    installed (the report says so)."""
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        return None
    grids = _grids(norm)
    label = V.short_label(metric, A.best_metric_of(norm))
    fig = make_subplots(rows=len(grids), cols=1, vertical_spacing=0.12 / max(len(grids), 1),
                        subplot_titles=[column_label(k, several) for k, _ in grids])
    for row, (key, grid) in enumerate(grids, start=1):
        bss = sorted(grid["batch_size"].unique())
        lrs = sorted(grid["learning_rate"].unique())
        cells = done[(done["study"] == key[0]) & (done["model"] == key[1])
                     & (done["dataset"] == key[2])]
        stats = cells.groupby(["batch_size", "learning_rate"])[metric].agg(
            ["mean", "std", "count"])
        status = grid.groupby(["batch_size", "learning_rate"])["status"].agg(
            lambda st: ", ".join(sorted(set(map(str, st)))))
        z = [[float(stats["mean"].get((bs, lr), np.nan)) for lr in lrs] for bs in bss]
        text = [[(f"batch size {int(bs)}<br>learning rate {lr:g}<br>ratio {bs / lr:g}<br>"
                  f"{label}: " + (f"{stats['mean'][(bs, lr)]:.4f}" if (bs, lr) in stats.index
                                  else "not finished")
                  + (f" ± {stats['std'][(bs, lr)]:.4f} (SD over "
                     f"{int(stats['count'][(bs, lr)])} seeds)"
                     if (bs, lr) in stats.index and stats["count"][(bs, lr)] >= 2 else "")
                  + f"<br>status: {status.get((bs, lr), 'n/a')}")
                 for lr in lrs] for bs in bss]
        fig.add_trace(go.Heatmap(
            x=[math.log2(v) for v in lrs], y=[math.log2(v) for v in bss], z=z, text=text,
            hovertemplate="%{text}<extra></extra>", colorscale="Viridis",
            colorbar=dict(title=label, len=1.0 / len(grids),
                          y=1.0 - (row - 0.5) / len(grids))), row=row, col=1)
        fig.update_xaxes(title_text="log2 learning rate", row=row, col=1,
                         tickvals=[math.log2(v) for v in lrs], ticktext=[f"{v:g}" for v in lrs])
        fig.update_yaxes(title_text="log2 batch size", row=row, col=1,
                         tickvals=[math.log2(v) for v in bss], ticktext=[str(int(v)) for v in bss])
    fig.update_layout(title=f"{label} over batch size x learning rate ({study_title(norm)})",
                      height=420 * len(grids), width=820)
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path


@literal_text
def write_figures(
    frame: pd.DataFrame,
    out_dir: str | Path,
    metric: str = A.PAPER_METRIC,
    include_diverged: bool = True,
    dpi: int = 120,
    epochs: pd.DataFrame | None = None,
    alpha: float = 0.005,
    pvalue: A.PValueMethod = "auto",
    share_y="auto",
    interactive: bool = True,
) -> list[Path]:
    """Write the paper's figures for ``metric`` as PNG files into ``out_dir``.

    ``share_y``: panels of Figures 1, 2a and 2b (and the gap figure) share one y range:
    ``"auto"`` (default) those of one data set (the same metric on the same test set,
    comparable across models), ``True`` all, ``False`` none. ``interactive``: also write
    ``interactive_heatmaps.html`` (plotly; skipped when plotly is not installed).

    - ``figure1_ratio.png``: metric vs batch size / learning rate (log x), one panel
      per model x data set, every finished cell a point coloured by its learning rate,
      diverged cells as red crosses, the grid's Table 3 SCC and p in the panel; with two
      or more seeds a point is a cell's mean over its seeds with an error bar of their
      standard deviation;
    - ``figure2a_batch_size.png``: metric vs batch size (log-2 axis), one curve per
      learning rate (a colour each, a legend of the values; a stepped colour bar beyond
      10 curves), a panel per model x data set (seeds averaged; with two or more seeds
      each point has an error bar: the SD over seeds);
    - ``figure2b_learning_rate.png``: metric vs learning rate, one curve per batch size;
    - ``heatmap_<model>_<dataset>.png``: metric over batch size x learning rate, values
      annotated when the grid has at most 144 pairs, unfinished pairs grey, diverged
      ones marked with a red cross;
    - ``gap_ratio.png``: the generalization gap (clean train - test accuracy at the kept
      epoch) vs the ratio, as Figure 1, when the store has clean training metrics;
    - ``curves_<model>_<dataset>.png`` (when ``epochs``, ``load_epochs``' frame, is given):
      learning curves, a panel per (batch size, learning rate), the kept epoch marked.

    Every figure names its study; with several studies the file names start with the
    study. Returns the paths written (figures, heatmaps, the gap, learning curves).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        return []
    frame = A.add_derived_metrics(frame)
    norm = A.normalize(frame)
    done = A.finished_cells(norm, metric, include_diverged)
    several = norm["study"].nunique() > 1
    share_y_groups([], share_y)  # refuse a wrong value before drawing anything
    label = V.short_label(metric, A.best_metric_of(norm))
    tests = _table3(frame, metric, include_diverged, alpha, pvalue)
    paths = [
        _figure_ratio(norm, done, metric, out / "figure1_ratio.png", several, dpi, tests, alpha,
                      share_y=share_y),
        _curves_figure(
            norm, done, metric, "batch_size", "learning_rate", out / "figure2a_batch_size.png",
            f"Figure 2a: {label} vs batch size, one curve per learning rate", several, dpi,
            share_y,
        ),
        _curves_figure(
            norm, done, metric, "learning_rate", "batch_size", out / "figure2b_learning_rate.png",
            f"Figure 2b: {label} vs learning rate, one curve per batch size", several, dpi,
            share_y,
        ),
    ]
    grids = _grids(norm)

    def stem(key):
        return "_".join(file_stem(k) for k in (key if several else key[1:]))

    for key, grid in grids:
        cells = done[
            (done["study"] == key[0]) & (done["model"] == key[1]) & (done["dataset"] == key[2])
        ]
        paths.append(_heatmap(grid, cells, key, metric, out / f"heatmap_{stem(key)}.png",
                              several, dpi))
    gap_done = A.finished_cells(norm, "gap", include_diverged)
    if metric != "gap" and gap_done["gap"].notna().any():
        paths.append(_figure_ratio(
            norm, gap_done, "gap", out / "gap_ratio.png", several, dpi,
            _table3(frame, "gap", include_diverged, alpha, pvalue), alpha,
            title=f"{V.metric_label('gap')} vs batch size / learning rate", share_y=share_y))
    if epochs is not None and not epochs.empty:
        for key, grid in grids:
            mine = epochs[(epochs["study"] == key[0]) & (epochs["model"] == key[1])
                          & (epochs["dataset"] == key[2])]
            if not mine.empty:
                paths.append(_learning_curves(mine, grid, key, out / f"curves_{stem(key)}.png",
                                              several, dpi))
    if interactive:
        page = _interactive_page(norm, done, metric, out / INTERACTIVE_PAGE, several)
        if page is not None:
            paths.append(page)
    return paths


__all__ = ["MAX_LEGEND_LEVELS", "SEED_STYLES", "SHARE_Y", "curve_limits", "file_stem",
           "geometric_ratio", "share_y_groups", "study_title", "write_figures"]
