"""The paper's figures as PNG files (matplotlib with the Agg backend, imported inside the
functions): Figure 1 (metric vs ratio), Figures 2a/2b (metric vs batch size / learning
rate), a heatmap per grid."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from kerasgen import analysis as A
from kerasgen import vocabulary as V
from kerasgen.report.format import column_label, decimals, format_value
from kerasgen.vocabulary import DIVERGED, DONE


def file_stem(name: str) -> str:
    """A name as a file-name stem (letters, digits, ``.``, ``_``, ``-``)."""
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
) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    grids = _grids(norm)
    fig, axes = _figure(len(grids), width=5.6)
    label = V.metric_label(metric, A.best_metric_of(norm))
    cmap = _curve_cmap()
    x_label = {"batch_size": "batch size", "learning_rate": "learning rate"}[x]
    c_label = {"batch_size": "batch size", "learning_rate": "learning rate"}[curve]
    for ax, (key, grid) in zip(axes, grids):
        cells = done[
            (done["study"] == key[0]) & (done["model"] == key[1]) & (done["dataset"] == key[2])
        ]
        ax.set_title(column_label(key, several) + _count_text(cells), fontsize=11)
        ax.set_xlabel(x_label)
        ax.set_ylabel(label if len(label) < 30 else label.split(" (")[0])
        ax.grid(True, alpha=0.3)
        levels = sorted(grid[curve].unique())
        lo, hi = (min(levels), max(levels)) if levels else (0.0, 1.0)
        norm_c = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-9)
        if cells.empty:
            _empty_panel(ax)
        seeds = _seed_count(cells)
        for level in levels:
            sub = cells[cells[curve] == level]
            if sub.empty:
                continue
            mean = sub.groupby(x)[metric].mean().sort_index()
            colour = cmap(norm_c(level))
            if seeds >= 2:  # each point a cell's mean over its seeds, the bar its SD
                sd = sub.groupby(x)[metric].std().reindex(mean.index).fillna(0.0)
                ax.errorbar(mean.index, mean.to_numpy(), yerr=sd.to_numpy(), fmt="-o",
                            color=colour, lw=1.2, ms=3, elinewidth=0.8, capsize=2)
            else:
                ax.plot(mean.index, mean.to_numpy(), "-o", color=colour, lw=1.2, ms=3)
            div = sub[sub["status"] == DIVERGED]
            if not div.empty:
                ax.plot(div[x], div[metric], "x", color="red", ms=7, mew=1.8, zorder=5)
        sm = plt.cm.ScalarMappable(norm=norm_c, cmap=cmap)
        sm.set_array([])
        cbar = fig.colorbar(sm, ax=ax, pad=0.02)
        cbar.set_label(c_label)
        if 1 < len(levels) <= 10:
            dec = decimals(levels) if curve == "learning_rate" else None
            cbar.set_ticks(levels)
            cbar.set_ticklabels([format_value(v, curve, dec) for v in levels])
        handles = []
        if seeds >= 2:
            handles.append(Line2D([], [], ls="-", marker="o", color="0.3", ms=3,
                                  label=_seed_bars_label(seeds)))
        if (cells["status"] == DIVERGED).any():
            handles.append(Line2D([], [], ls="", marker="x", color="red", mew=1.8,
                                  label="diverged"))
        if handles:
            ax.legend(handles=handles, loc="best", fontsize=9)
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return _save(fig, path, dpi)


def _figure_ratio(
    norm: pd.DataFrame, done: pd.DataFrame, metric: str, path: Path, several: bool, dpi: int
) -> Path:
    grids = _grids(norm)
    fig, axes = _figure(len(grids))
    label = V.metric_label(metric, A.best_metric_of(norm))
    for ax, (key, _grid) in zip(axes, grids):
        cells = done[
            (done["study"] == key[0]) & (done["model"] == key[1]) & (done["dataset"] == key[2])
        ]
        ok = cells[cells["status"] == DONE]
        div = cells[cells["status"] == DIVERGED]
        ax.set_title(column_label(key, several) + _count_text(cells), fontsize=11)
        seeds = _seed_count(cells)
        if cells.empty:
            _empty_panel(ax)
        else:
            if seeds >= 2:  # a point per cell: its mean over seeds, the bar their SD
                per_cell = cells.groupby(["batch_size", "learning_rate"]).agg(
                    ratio=("ratio", "first"), mean=(metric, "mean"), sd=(metric, "std"))
                ax.errorbar(per_cell["ratio"], per_cell["mean"],
                            yerr=per_cell["sd"].fillna(0.0).to_numpy(), fmt="o", ms=4,
                            alpha=0.8, color="tab:blue", elinewidth=0.8, capsize=2,
                            label=_seed_bars_label(seeds))
            else:
                ax.scatter(ok["ratio"], ok[metric], s=18, alpha=0.75, color="tab:blue",
                           label="done")
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
        f"{label} — {column_label(key, several)}\n"
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
      with two or more seeds a point is a cell's mean over its seeds with an error bar
      of their standard deviation;
    - ``figure2a_batch_size.png``: metric vs batch size, one curve per learning rate
      (colour bar), a panel per model x data set (seeds averaged; with two or more
      seeds each point has an error bar: the SD over seeds);
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
    label = V.metric_label(metric, A.best_metric_of(norm))
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
        stem = "_".join(file_stem(k) for k in (key if several else key[1:]))
        paths.append(_heatmap(grid, cells, key, metric, out / f"heatmap_{stem}.png", several, dpi))
    return paths

__all__ = ["file_stem", "write_figures"]
