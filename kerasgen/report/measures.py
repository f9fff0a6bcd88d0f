"""The generalization-measures section of the report (``kerasgen report --measures``):
the measures of ``kerasgen measures`` ranked per grid as Jiang et al. (2020) rank them,
the sentence naming the best predictor and what the ratio adds beyond it, the gradient
noise scale against the grid's batch sizes, what each measure would cost at paper size;
then steps and compute (Shallue et al. 2019): steps to a target accuracy and the
paper's Table 3 at matched SGD steps. Figures: each measure against the gap (small
multiples) and the noise scale against the batch sizes, per grid.

No TensorFlow (numpy, pandas, scipy through :mod:`kerasgen.measures`; matplotlib inside
the figure functions with the Agg backend).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from kerasgen.measures import cost as C
from kerasgen.measures import rank as R
from kerasgen.measures import steps as S
from kerasgen.naming import synthetic_args
from kerasgen.report.format import md_text

GRID = ["study", "model", "dataset"]


def _c(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:+.{digits}f}"


def _g(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.3g}"


def _interval(low, high) -> str:
    if low is None or not (math.isfinite(low) and math.isfinite(high)):
        return "—"
    return f"[{low:+.2f}, {high:+.2f}]"


def _p(p) -> str:
    if p is None or not math.isfinite(p):
        return "—"
    return f"{p:.2g}"


def input_shape(dataset: str) -> tuple[int, int, int] | None:
    """The image shape of a data set known by name (None for another)."""
    if dataset in ("cifar10", "cifar100"):
        return (32, 32, 3)
    if dataset == "digits":
        return (8, 8, 1)
    if dataset.startswith("synthetic"):
        args = {"size": 8, "channels": 3, **synthetic_args(dataset)}
        return (args["size"], args["size"], args["channels"])
    return None


def _title(model: str, dataset: str, study: str, several: bool) -> str:
    from kerasgen.vocabulary import display_name

    text = f"{md_text(display_name(model))} on {md_text(display_name(dataset))}"
    return text + (f" (study {md_text(study)})" if several else "")


def render_measures_section(db, study: str | None = None, alpha: float = 0.005) -> str:
    """Markdown: the ranked measures per grid, then steps and compute."""
    from kerasgen.store import load_epochs, load_results

    frame = R.measure_frame(db, study=study)
    lines = ["## Generalization measures (Jiang et al. 2020)", ""]
    network = frame[frame["source"] == "network"] if len(frame) else frame
    if network.empty:
        lines += [f"No measures computed yet: run `kerasgen measures --db {md_text(db)}` "
                  "(after the runs have finished). Ranked below: what the store already "
                  "holds (the ratio, the epochs to the stop rule, the training loss).", ""]
    lines += [
        "Each measure is taken at the run's final weights (the weights it had when it "
        "finished; `kerasgen measures` stores the epoch and the run's kept epoch beside "
        "each value) on its clean training subset (normalized, no augmentation, batch norm "
        "in inference mode). Per grid, measures are ranked by Jiang et al.'s granulated "
        "coefficient Ψ: the mean over the axes batch size, learning rate and seed of "
        "Kendall's τ between the measure and the gap within the groups where only that "
        "axis varies (a measure constant within a group counts τ = 0: it cannot tell those "
        "runs apart, which is why the ratio and everything set by the hyper-parameters get "
        "ψ seed = 0). τ gap is Kendall's τ over the cells (seeds averaged) with the gap "
        "(clean training accuracy − test accuracy at the kept epoch), τ loss with the loss "
        "gap. Intervals: a jackknife over seeds (3 or more seeds); with fewer, the τ of each "
        "seed alone is shown. `ratio | m` is the partial rank correlation of the ratio with "
        "the gap given the measure (does the ratio predict the gap beyond it?), with its "
        "p-value; CMI is Jiang et al.'s conditional-mutual-information criterion (the "
        "minimum over sets of at most two axes of I(V_m; V_gap | U_S) / H(V_gap | U_S); "
        "plug-in, biased upward on small grids: compare measures with it). A sign against "
        "the measure's intended direction is marked ↯.", ""]
    if frame.empty:
        return "\n".join(lines) + "\n"
    ranking = R.rank_measures(frame)
    several = frame["study"].nunique() > 1
    # mean, not median: B_simple at init costs its whole pass on a group's first run
    seconds = (network.groupby(GRID + ["measure"])["seconds"].mean()
               if len(network) else pd.Series(dtype=float))
    for key, grid in ranking.groupby(GRID, sort=True):
        st, model, dataset = key
        runs = frame[(frame["study"] == st) & (frame["model"] == model)
                     & (frame["dataset"] == dataset)]
        lines += [f"### {_title(model, dataset, st, several)}", ""]
        lines += [R.verdict(ranking, st, model, dataset, alpha, name=md_text), ""]
        n_runs = runs["cell_id"].nunique()
        n_seeds = runs["seed"].nunique()
        n_cells = runs[["batch_size", "learning_rate"]].drop_duplicates().shape[0]
        lines += [f"{n_runs} runs, {n_cells} cells, {n_seeds} seed{'s' if n_seeds != 1 else ''}; "
                  f"{grid['interval'].dropna().iloc[0] if grid['interval'].notna().any() else ''}.",
                  ""]
        lines += ["| rank | measure | family | Ψ | Ψ interval | ψ BS | ψ LR | ψ seed | τ gap | "
                  "τ interval | τ per seed | τ loss | ratio \\| m (p) | CMI | s/run |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in grid.itertuples():
            mark = " ↯" if r.agrees is False else ""
            per_seed = (f"{_c(r.seed_tau_min)} … {_c(r.seed_tau_max)}"
                        if math.isfinite(r.seed_tau_min) else "—")
            partial = ("—" if not math.isfinite(r.partial)
                       else f"{r.partial:+.2f} ({_p(r.partial_p)})")
            sec = seconds.get((st, model, dataset, r.measure), math.nan)
            rank = "—" if not math.isfinite(r.rank) else str(int(r.rank))
            lines.append(
                f"| {rank} | {md_text(r.label)}{mark} | {r.family} | {_c(r.psi)} | "
                f"{_interval(r.psi_low, r.psi_high)} | {_c(r.psi_batch_size)} | "
                f"{_c(r.psi_learning_rate)} | {_c(r.psi_seed)} | {_c(r.tau)} | "
                f"{_interval(r.tau_low, r.tau_high)} | {per_seed} | {_c(r.tau_loss)} | "
                f"{partial} | {_g(r.cmi)} | {_g(sec)} |")
        lines.append("")
        reasons = grid[grid["rank"].isna() & grid["reason"].notna()]
        if len(reasons):
            lines += ["Not ranked: " + "; ".join(f"{md_text(r.label)} ({md_text(r.reason)})"
                                                for r in reasons.itertuples()) + ".", ""]
        lines += _noise_lines(runs)
        lines += _weights_lines(runs)
        lines += _cost_lines(runs, seconds, st, model, dataset)
    results = load_results(db, study=study)
    epochs = load_epochs(db, study=study)
    lines += render_steps_section(results, epochs, alpha, several)
    return "\n".join(lines) + "\n"


def _noise_lines(runs: pd.DataFrame) -> list[str]:
    """B_simple at the initial weights per seed and at the final weights per batch size,
    against the grid's batch sizes (McCandlish et al.: the critical batch size ~ B_simple)."""
    init = runs[runs["measure"] == "b_simple_init"]
    final = runs[runs["measure"] == "b_simple"]
    if init.empty and final.empty:
        return []
    sizes = sorted(runs["batch_size"].unique())
    out = ["Gradient noise scale B_simple = tr(C)/|g|² against the grid's batch sizes "
           f"({', '.join(map(str, sizes))}; McCandlish et al. 2018: training gains little "
           "from a batch larger than about B_simple):"]
    if len(init):
        per_seed = init.groupby("seed")["value"].first()
        crit = float(per_seed.median())
        above = [b for b in sizes if b > crit]
        values = ", ".join(f"{v:.3g} (seed {s})" for s, v in per_seed.items())
        out.append(f"at the initial weights {values}: {len(above)} of the grid's "
                   f"{len(sizes)} batch sizes lie above it"
                   + (f" ({', '.join(map(str, above))})" if above else "") + ";")
    if len(final):
        med = final.groupby("batch_size")["value"].median()
        out.append("at the final weights (median over the runs of each batch size) "
                   + ", ".join(f"{_g(v)} (|S| = {b})" for b, v in med.items()) + ".")
    return [" ".join(out), ""]


def _weights_lines(runs: pd.DataFrame) -> list[str]:
    net = runs[(runs["source"] == "network") & runs["weights_epoch"].notna()]
    per_run = net.drop_duplicates("cell_id")
    if per_run.empty:
        return []
    differ = per_run[per_run["weights_epoch"].astype(float) != per_run["kept_epoch"].astype(float)]
    if differ.empty:
        return ["Every run's measures are at its kept epoch (its last).", ""]
    return [f"In {len(differ)} of {len(per_run)} runs the kept epoch (where the gap is "
            "read) is not the last; their measures are at the final weights, the only ones "
            "the runner keeps.", ""]


def _cost_lines(runs, seconds, st, model, dataset) -> list[str]:
    shape = input_shape(dataset)
    if shape is None or seconds.empty:
        return []
    try:
        small = C.model_cost(model, shape, 10)
    except ValueError:
        return []
    mine = {m: s for (a, b, c, m), s in seconds.items() if (a, b, c) == (st, model, dataset)}
    if not mine:
        return []
    out = [f"Cost at paper size, per run (this store's mean seconds per run, tracing "
           "included, scaled by parameters "
           f"or multiply-adds per example; one GPU = CPU / {C.GPU_OVER_CPU:g}, a stated guess "
           f"(kerasgen.measures.cost); practical: at most {C.PRACTICAL_GPU_SECONDS:g} s per "
           "run, the paper's 1,600 runs in about a day):", "",
           "| measure | s/run here | " + " | ".join(
               f"{md_text(n)} CPU s | GPU s" for n, _, _ in C.PAPER_NETWORKS) + " | practical |",
           "|---|---|" + "---|---|" * len(C.PAPER_NETWORKS) + "---|"]
    for measure, sec in sorted(mine.items(), key=lambda kv: -kv[1]):
        cells, practical = [], True
        for name, pshape, classes in C.PAPER_NETWORKS:
            p = C.project_seconds(measure, float(sec), small, C.model_cost(name, pshape, classes))
            cells.append(f"{_g(p['cpu'])} | {_g(p['gpu'])}")
            practical &= p["practical"]
        out.append(f"| {md_text(measure)} | {_g(sec)} | " + " | ".join(cells)
                   + f" | {'yes' if practical else 'no'} |")
    return out + [""]


def render_steps_section(results: pd.DataFrame, epochs: pd.DataFrame, alpha: float = 0.005,
                         several: bool = False) -> list[str]:
    """Markdown lines: steps to a target accuracy and Table 3 at matched budgets."""
    from kerasgen.vocabulary import display_name  # noqa: F401 (titles)

    lines = ["## Steps and compute (Shallue et al. 2019)", "",
             "With a fixed epoch budget a large batch takes fewer SGD steps: is the ratio's "
             "effect under-training? Read from the epochs alone: the SGD steps each run "
             "needs to reach a target test accuracy (the highest every finished run of the "
             "grid reaches), and Table 3 (Spearman of test accuracy with batch size / "
             "learning rate over the cells, seeds averaged) at the kept epoch, at matched "
             "steps (every run read at the step count of the shortest-trained run, "
             "interpolated linearly between evaluated epochs) and at matched learning rate × "
             f"steps (SGD's time). α = {alpha:g}.", ""]
    if results.empty or epochs.empty:
        return lines + ["No finished runs yet.", ""]
    targets = S.steps_to_target(results, epochs)
    table = S.matched_table3(results, epochs, alpha)
    if table.empty:
        return lines + ["No finished runs yet.", ""]
    done = results[results["status"] == "done"][["cell_id", "batch_size"]]
    for key, grid in table.groupby(GRID, sort=True):
        st, model, dataset = key
        lines += [f"### {_title(model, dataset, st, several)}", ""]
        tgt = targets[(targets["study"] == st) & (targets["model"] == model)
                      & (targets["dataset"] == dataset)].merge(done, on="cell_id")
        if len(tgt) and tgt["steps_to_target"].notna().any():
            goal = float(tgt["target"].iloc[0])
            med = tgt.groupby("batch_size")[["steps_to_target", "epochs_to_target"]].median()
            lines += [f"To {goal:.1%} test accuracy (median over runs): "
                      + ", ".join(f"|S| = {b}: {_g(r.steps_to_target)} steps "
                                  f"({_g(r.epochs_to_target)} epochs)"
                                  for b, r in med.iterrows()) + ".", ""]
        lines += ["| accuracy read at | budget | vs ratio | vs batch size | vs learning rate |",
                  "|---|---|---|---|---|"]
        for label, part in grid.groupby("accuracy", sort=False):
            cells = []
            for variable in ("ratio", "batch_size", "learning_rate"):
                r = part[part["variable"] == variable].iloc[0]
                cells.append(f"{r['scc']:+.2f} (p={_p(r['p_value'])}, n={r['n']})"
                             if r["reason"] is None else f"— ({md_text(r['reason'])})")
            budget = part["budget"].iloc[0]
            shown = "—" if not math.isfinite(budget) else (
                f"{budget:,.0f} steps" if label == "matched steps" else f"{budget:.4g} (η × steps)")
            lines.append(f"| {label} | {shown} | " + " | ".join(cells) + " |")
        lines.append("")
        lines += [_survival_sentence(grid, alpha), ""]
    return lines


def _survival_sentence(grid: pd.DataFrame, alpha: float) -> str:
    ratio = grid[grid["variable"] == "ratio"]
    kept = ratio[ratio["accuracy"] == "kept epoch"].iloc[0]
    if not (kept["significant"] and kept["scc"] < 0):
        return (f"At the kept epoch the ratio's effect is not a significant negative "
                f"correlation (SCC {_c(kept['scc'])}, p = {_p(kept['p_value'])}), so there is "
                "no effect for the matching to explain away.")
    parts = []
    for label in ("matched steps", "matched lr × steps"):
        row = ratio[ratio["accuracy"] == label]
        if row.empty or row.iloc[0]["reason"] is not None:
            parts.append(f"at {label} it cannot be computed")
            continue
        r = row.iloc[0]
        word = "survives" if r["survives"] else "does not survive"
        parts.append(f"it {word} {label} (SCC {r['scc']:+.2f}, p = {_p(r['p_value'])}, "
                     f"n = {r['n']} cells)")
    return (f"The ratio's effect at the kept epoch (SCC {kept['scc']:+.2f}, p = "
            f"{_p(kept['p_value'])} < {alpha:g}): " + "; ".join(parts) + ".")


# ---------------------------------------------------------------- figures

def write_measure_figures(db, out_dir, study: str | None = None, dpi: int = 110) -> list[Path]:
    from kerasgen.report.figures import literal_text

    return literal_text(_write_measure_figures)(db, out_dir, study, dpi)


def _write_measure_figures(db, out_dir, study, dpi) -> list[Path]:
    """``measures_<study>_<model>_<dataset>.png``: each ranked measure (cell means over
    seeds) against the gap, coloured by log2 of the ratio, best first, with τ and Ψ in
    each panel's title; ``noise_scale_<...>.png``: B_simple per run against its batch
    size, the initial weights' value as a line per seed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain_numbers = FuncFormatter(lambda v, _: f"{v:g}")  # mathtext is off (literal_text)

    from kerasgen.naming import file_stem
    from kerasgen.vocabulary import display_name

    frame = R.measure_frame(db, study=study)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        return []
    ranking = R.rank_measures(frame)
    paths = []
    for key, grid in ranking.groupby(GRID, sort=True):
        st, model, dataset = key
        runs = frame[(frame["study"] == st) & (frame["model"] == model)
                     & (frame["dataset"] == dataset)]
        shown = grid[grid["rank"].notna()].sort_values("rank")
        if shown.empty:
            continue
        cols = min(5, len(shown))
        rows = -(-len(shown) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False,
                                 layout="constrained")
        for ax in axes.flat[len(shown):]:
            ax.axis("off")
        for ax, r in zip(axes.flat, shown.itertuples()):
            cells = R.cell_means(runs[runs["measure"] == r.measure], ["value", "gap", "ratio"])
            sc = ax.scatter(cells["value"], cells["gap"], c=np.log2(cells["ratio"].astype(float)),
                            cmap="viridis", s=22, edgecolors="black", linewidths=0.3)
            ax.set_title(f"{int(r.rank)}. {r.label}\nτ={_c(r.tau)} Ψ={_c(r.psi)}", fontsize=8)
            ax.tick_params(labelsize=6)
            ax.grid(True, alpha=0.3)
        fig.colorbar(sc, ax=axes.ravel().tolist(), shrink=0.6, label="log2(batch size / lr)")
        fig.suptitle(f"{display_name(model)} / {display_name(dataset)}: each measure (x) vs "
                     f"the gap (y), cells averaged over seeds", fontsize=10)
        stem = file_stem(f"{st}_{model}_{dataset}")
        path = out / f"measures_{stem}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
        noise = runs[runs["measure"] == "b_simple"]
        init = runs[runs["measure"] == "b_simple_init"]
        if len(noise) or len(init):
            fig, ax = plt.subplots(figsize=(6.0, 3.8), layout="constrained")
            if len(noise):
                points = ax.scatter(noise["batch_size"], noise["value"],
                                    c=np.log2(noise["learning_rate"]), cmap="plasma", s=24,
                                    edgecolors="black", linewidths=0.3)
                fig.colorbar(points, ax=ax, label="log2(learning rate)")
            for seed, value in init.groupby("seed")["value"].first().items():
                ax.axhline(value, ls="--", lw=1, color="gray")
                ax.text(0.01, value, f"B_simple at init, seed {seed}", fontsize=7,
                        va="bottom", transform=ax.get_yaxis_transform())
            sizes = sorted(runs["batch_size"].unique())
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(sizes, [str(b) for b in sizes])
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_minor_formatter(NullFormatter())
            ax.yaxis.set_major_formatter(plain_numbers)
            ax.set_xlabel("batch size |S| (the grid's)")
            ax.set_ylabel("B_simple = tr(C)/|g|² (dots: final weights)")
            ax.set_title(f"{display_name(model)} / {display_name(dataset)}: gradient noise "
                         "scale vs the grid's batch sizes", fontsize=9)
            ax.grid(True, alpha=0.3)
            path = out / f"noise_scale_{stem}.png"
            fig.savefig(path, dpi=dpi, bbox_inches="tight")
            plt.close(fig)
            paths.append(path)
    return paths


__all__ = ["input_shape", "render_measures_section", "render_steps_section",
           "write_measure_figures"]
