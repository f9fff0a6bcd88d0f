"""Claims about kerasgen.report: the paper's table layout in three formats, and figures."""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pandas as pd
import pytest

from kerasgen import analysis as A
from kerasgen import report as R


def make_grid(batch_sizes, learning_rates, models=("resnet110",), datasets=("cifar10",), rng_seed=0):
    """A results frame in the shape of kerasgen.store.load_results()."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for model in models:
        for dataset in datasets:
            for bs in batch_sizes:
                for lr in learning_rates:
                    acc = 0.9 - 0.02 * math.log(bs / lr) + rng.normal(0, 0.01)
                    rows.append({
                        "study": "s", "cell_id": len(rows), "model": model, "dataset": dataset,
                        "batch_size": bs, "learning_rate": lr, "seed": 0, "ratio": bs / lr,
                        "status": "done", "best_metric": "test_accuracy", "kept_epoch": 10.0,
                        "test_accuracy": acc, "test_loss": 2.0 * (1.0 - acc),
                        "train_eval_accuracy": 1.0,
                        "train_eval_loss": float(rng.uniform(0.001, 0.01)),
                        "best_test_accuracy": acc, "best_epoch": 10.0,
                        "final_train_accuracy": 1.0, "final_train_loss": float(rng.uniform(0.001, 0.01)),
                        "final_test_accuracy": acc - 0.01, "final_test_loss": 1.0,
                        "epochs_done": 20, "diverged_epoch": np.nan,
                    })
    return pd.DataFrame(rows)


BS = [32, 64, 128, 256]
LR = [0.01, 0.05, 0.1, 0.2, 0.3]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """2 models x 2 datasets x 4 BS x 5 LR, one diverged and three pending cells."""
    f = make_grid(BS, LR, models=("resnet110", "vgg19"), datasets=("cifar10", "cifar100"))
    div = (f["model"] == "vgg19") & (f["batch_size"] == 32) & (f["learning_rate"] == 0.3)
    f.loc[div, ["status", "diverged_epoch"]] = ["diverged", 4.0]
    pend = (f["model"] == "resnet110") & (f["dataset"] == "cifar100") & (f["batch_size"] == 256) & (f["learning_rate"] >= 0.1)
    f.loc[pend, "status"] = "pending"
    f.loc[pend, ["test_accuracy", "test_loss", "train_eval_accuracy", "train_eval_loss",
                 "best_test_accuracy", "final_test_accuracy", "final_train_accuracy"]] = np.nan
    return f


def _table_block(markdown: str, number: int) -> list[str]:
    """The Markdown rows (header and separator excluded) of Table `number`."""
    start = markdown.index(f"**Table {number}:")
    lines = markdown[start:].splitlines()[2:]
    body = list()
    for line in lines:
        if not line.startswith("|"):
            break
        body.append(line)
    return body[2:]


# --------------------------------------------------------------------------- formatting


@pytest.mark.parametrize(
    "p, text",
    [(2.6e-11, "2.6e-11"), (0.0134, "1.3e-2"), (0.5, "5.0e-1"), (0.0, "<1e-308"), (float("nan"), "n/a"), (1.0, "1.0")],
)
def test_format_p_prints_like_the_paper(p, text):
    assert R.format_p(p) == text


def test_format_p_latex_uses_times_ten_to_the():
    assert R.format_p_latex(3.3e-235) == r"3.3 \times 10^{-235}"


def test_display_names_match_the_paper():
    assert [R.display_name(n) for n in ("resnet110", "vgg19", "cifar10", "cifar100", "mlp")] == [
        "ResNet-110", "VGG-19", "CIFAR-10", "CIFAR-100", "mlp",
    ]


# --------------------------------------------------------------------------- markdown


def test_markdown_table1_has_a_row_per_learning_rate_and_scc_p_n_per_grid(frame):
    text = R.table_markdown(A.spearman_tests(frame, pvalue="asymptotic"), 1)
    header = text.splitlines()[2]
    assert header.count(" SCC |") == 4 and header.startswith("| LR |")
    assert "ResNet-110 on CIFAR-100 SCC" in header
    rows = _table_block(text, 1)
    assert [r.split("|")[1].strip() for r in rows] == ["0.01", "0.05", "0.10", "0.20", "0.30"]
    # n varies (pending cells), so there is an n column per model x dataset
    assert header.count("| n |") + header.endswith("| n |") >= 4


def test_markdown_table2_has_a_row_per_batch_size_and_table3_one_row(frame):
    tests = A.spearman_tests(frame, pvalue="asymptotic")
    rows2 = _table_block(R.table_markdown(tests, 2), 2)
    assert [r.split("|")[1].strip() for r in rows2] == ["32", "64", "128", "256"]
    assert len(_table_block(R.table_markdown(tests, 3), 3)) == 1


def test_markdown_cells_show_the_tests_values_and_bold_only_significant_p(frame):
    tests = A.spearman_tests(frame, alpha=0.05, pvalue="asymptotic")
    rows = _table_block(R.table_markdown(tests, 1), 1)
    t1 = tests[(tests["table"] == 1) & (tests["model"] == "resnet110") & (tests["dataset"] == "cifar10")]
    for line, row in zip(rows, t1.itertuples()):
        cells = [c.strip() for c in line.split("|")[1:-1]]
        # One seed: no interval column; the paper's p, then the verdict's p.
        assert cells[1] == f"{row.scc:.2f}" and cells[2] == R.format_p(row.p_value)
        p = R.format_p(row.p_perm)
        marks = (("†" if row.p_holm < 0.05 else "") + ("‡" if row.p_bh < 0.05 else "")
                 + ("§" if row.p_by < 0.05 else ""))
        assert cells[3].startswith((f"**{p}**" if row.p_perm < 0.05 else p) + marks)
        # Four cells per group: no permutation p below 0.083, so none can reach 0.05.
        assert not row.can_reach and cells[3].endswith(")")
    text = R.table_markdown(tests, 1)
    assert "cannot reach α = 0.05 (n = 4: smallest p 0.083): 17 group(s)." in text


def test_markdown_n_goes_to_a_footnote_when_all_equal():
    tests = A.spearman_tests(make_grid([16, 32, 64, 128], [0.01, 0.02, 0.03], models=("a", "b")), pvalue="asymptotic")
    text = R.table_markdown(tests, 1)
    assert "| n |" not in text and "n = 4 cells" in text
    assert len(_table_block(text, 1)) == 3


def test_markdown_groups_without_coefficient_show_na_and_the_reason(frame):
    text = R.table_markdown(A.spearman_tests(frame, pvalue="asymptotic"), 2)
    row256 = [r for r in _table_block(text, 2) if r.startswith("| 256 |")][0]
    assert "n/a (a)" in row256
    assert "(a) fewer than 3 finished cells: 1 group(s)." in text


def test_markdown_report_has_tables_directions_other_metrics_and_premise(frame):
    text = R.render_report(frame, pvalue="asymptotic")
    for heading in ("## Cells", "## Tables 1-3", "## Direction of the correlations",
                    "## Beyond the paper", "### final test accuracy", "### generalization gap",
                    "### loss gap", "## Premise", "## Does only the ratio matter?",
                    "## Selection of the kept epoch"):
        assert heading in text, heading
    assert text.count("**Table 1:") == 1 and text.count("**Table 3:") == 4
    assert "Metric: **best test accuracy (kept epoch: highest test accuracy)**" in text
    assert "(highest test accuracy; the paper's rule, chosen on the test set itself" in text
    # cell counts: the pending and diverged cells appear
    assert re.search(r"\| s \| resnet110 \| cifar100 \| 17 \| 0 \| 0 \| 3 \| 0 \| 20 \|", text)
    assert "Diverged cells are included" in text


def test_markdown_report_warns_when_clean_train_loss_tracks_the_ratio(frame):
    f = frame.copy()
    f["train_eval_loss"] = 1e-5 * f["ratio"]
    text = R.render_report(f, pvalue="asymptotic")
    assert "**Warning (ResNet-110 on CIFAR-10)**: clean train loss rises" in text
    assert "under-training" in text
    quiet = R.render_report(frame, pvalue="asymptotic")
    assert "clean train loss rises" not in quiet


def test_markdown_report_of_a_store_without_clean_metrics_says_they_are_missing(frame):
    old = frame.drop(columns=["train_eval_accuracy", "train_eval_loss"])
    text = R.render_report(old, pvalue="asymptotic")
    assert text.count("_No gap: the clean training metrics are missing") == 2  # gap, loss gap
    assert "clean training metrics are missing" in text.split("## Premise")[1]


def test_a_study_that_keeps_the_lowest_test_loss_epoch_is_labelled_so(frame):
    f = frame.copy()
    f["best_metric"] = "test_loss"
    text = R.render_report(f, pvalue="asymptotic")
    assert "Metric: **test accuracy (kept epoch: lowest test loss)**" in text
    assert "best test accuracy" not in text.split("## Premise")[0]


def test_markdown_report_of_a_study_with_nothing_finished_still_renders():
    f = make_grid([16, 32], [0.1, 0.2])
    f["status"] = "pending"
    f[["test_accuracy", "train_eval_accuracy", "best_test_accuracy", "final_train_accuracy",
       "final_test_accuracy"]] = np.nan
    text = R.render_report(f, pvalue="asymptotic")
    assert "fewer than 3 finished cells" in text and "no finished cells" in text


def test_exclude_diverged_changes_the_rendered_n(frame):
    inc = R.render_report(frame, fmt="csv", pvalue="asymptotic")
    exc = R.render_report(frame, fmt="csv", include_diverged=False, pvalue="asymptotic")
    a, b = pd.read_csv(io.StringIO(inc)), pd.read_csv(io.StringIO(exc))
    key = (a["model"] == "vgg19") & (a["table"] == 3) & (a["metric"] == "test_accuracy")
    assert (a.loc[key, "n"] - b.loc[key, "n"]).tolist() == [1, 1]


# --------------------------------------------------------------------------- csv and latex


def test_csv_is_the_tidy_tests_table_of_all_metrics(frame):
    out = pd.read_csv(io.StringIO(R.render_report(frame, fmt="csv", pvalue="asymptotic")))
    assert list(out.columns) == A.TEST_COLUMNS
    assert len(out) == len(A.METRICS) * A.expected_test_count(frame)
    assert out["metric"].iloc[0] == "test_accuracy"
    direct = A.spearman_tests(frame, pvalue="asymptotic")
    first = out[out["metric"] == "test_accuracy"].reset_index(drop=True)
    assert np.allclose(first["scc"], direct["scc"], equal_nan=True)
    assert np.allclose(first["p_value"], direct["p_value"], equal_nan=True, rtol=1e-12)


def test_csv_leads_with_the_chosen_metric(frame):
    out = pd.read_csv(io.StringIO(R.render_report(frame, fmt="csv", metric="gap", pvalue="asymptotic")))
    assert out["metric"].iloc[0] == "gap"


def test_latex_renders_three_booktabs_tables_laid_out_like_the_paper(frame):
    text = R.render_report(frame, fmt="latex", pvalue="asymptotic")
    # Tables 1-3, the whole grid's intervals and slopes (tab:scc-statistics), the ratio
    # model (tab:ratio-model).
    assert text.count(r"\begin{tabular}") == 5 and text.count(r"\label{tab:scc-statistics}") == 1
    assert text.count(r"\label{tab:ratio-model}") == 1
    assert r"\subsection*{Does only the ratio matter?}" in text
    text = text.split(r"\begin{table}[ht]" + "\n" + r"\centering" + "\n" + r"\caption{Batch size")[0]
    assert text.count(r"\begin{tabular}") == 3
    assert text.count(r"\toprule") == text.count(r"\midrule") == text.count(r"\bottomrule") == 3
    assert text.count(r"\multicolumn") == 3 * 4
    tables = text.split(r"\begin{table}")[1:]
    body_rows = [t.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines() for t in tables]
    assert [len(r) for r in body_rows] == [len(LR), len(BS), 1]
    assert r"\mathbf{" in text and r"\underline{" in text
    assert "$p$" in text and r"\$p\$" not in text


def test_unknown_format_is_rejected(frame):
    with pytest.raises(ValueError):
        R.render_report(frame, fmt="html", pvalue="asymptotic")


# --------------------------------------------------------------------------- figures


def _decode(path):
    import matplotlib.image as mpimg

    return mpimg.imread(path)


def test_write_figures_writes_decodable_pngs_with_the_documented_names_and_closes_them(frame, tmp_path):
    import matplotlib.pyplot as plt

    paths = R.write_figures(frame, tmp_path)
    assert plt.get_fignums() == []  # no figure left open (the dashboard calls this repeatedly)
    names = [p.name for p in paths]
    assert names[:3] == ["figure1_ratio.png", "figure2a_batch_size.png", "figure2b_learning_rate.png"]
    assert sorted(names[3:7]) == [
        "heatmap_resnet110_cifar10.png", "heatmap_resnet110_cifar100.png",
        "heatmap_vgg19_cifar10.png", "heatmap_vgg19_cifar100.png",
    ]
    # The frame has clean metrics (the gap figure); no epochs given; plotly is installed
    # with the `interactive` extra (the page is tested in test_report_headline.py).
    assert names[7:] == ["gap_ratio.png", "interactive_heatmaps.html"]
    for path in paths[:-1]:
        assert path.exists() and path.stat().st_size > 10_000
        img = _decode(path)
        h, w = img.shape[:2]
        assert 400 <= w <= 3000 and 300 <= h <= 3000, (path.name, w, h)
        assert img.std() > 0.05  # not a blank canvas


def test_write_figures_handles_a_grid_with_no_finished_cell(tmp_path):
    f = make_grid([16, 32], [0.1, 0.2], models=("a", "b"))
    f.loc[f["model"] == "b", "status"] = "pending"
    f.loc[f["model"] == "b", "best_test_accuracy"] = np.nan
    paths = R.write_figures(f, tmp_path, metric="gap")
    assert len(paths) == 6 and all(p.stat().st_size > 5_000 for p in paths)
    assert paths[-1].name == "interactive_heatmaps.html"


# --------------------------------------------------------------------------- statistics


def _seeded(seeds, rng_seed=0) -> pd.DataFrame:
    """The 4 x 5 grid of the fixture, 2 models x 1 data set, with one row per seed (the
    seeds differ by noise)."""
    parts = []
    for seed in seeds:
        part = make_grid(BS, LR, models=("resnet110", "vgg19"), rng_seed=rng_seed + seed)
        part["seed"] = seed
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out["cell_id"] = range(len(out))
    return out


def _section(markdown: str, heading: str) -> str:
    start = markdown.index(heading)
    end = markdown.find("\n## ", start + 1)
    return markdown[start:end if end > 0 else None]


def test_the_statistics_section_counts_what_survives_holm_bh_and_by_and_shows_the_intervals():
    frame = _seeded((0, 1, 2))
    text = R.render_report(frame)
    section = _section(text, "## Statistics: seeds, intervals, multiple testing, effect sizes")
    tests = A.spearman_tests_all(frame)
    counts = A.multiple_testing_summary(tests).set_index("metric").loc["test_accuracy"]
    n = int(counts["tested"])
    assert counts["significant"] > 1 and counts["holm_table"] > 1
    assert (f"Of the {n} tests of test accuracy with a coefficient, "
            f"{int(counts['significant'])} are significant at p < 0.005") in section
    assert (f"{int(counts['holm_table'])} stay significant after Holm-Bonferroni within "
            f"their family (family-wise error rate 0.005), {int(counts['bh_table'])} "
            f"after Benjamini-Hochberg and {int(counts['by_table'])} after "
            "Benjamini-Yekutieli") in section
    assert (f"over all {n} tests together, {int(counts['holm_all'])} after Holm, "
            f"{int(counts['bh_all'])} after BH and {int(counts['by_all'])} after BY") in section
    assert "3 seeds per cell (120 runs of 40 cells)" in section
    # The whole grid's row: its SCC, interval, both p-values and the slope, as in the
    # tests frame.
    t3 = tests[(tests["metric"] == "test_accuracy") & (tests["table"] == 3)
               & (tests["model"] == "vgg19")].iloc[0]
    row = next(line for line in section.splitlines() if line.startswith("| VGG-19 on CIFAR-10"))
    for text_ in (f"{t3['scc']:.2f}", R.format_interval(t3["ci_low"], t3["ci_high"]),
                  R.format_p(t3["p_value"]), R.format_p(t3["p_perm"]),
                  f"{100 * t3['slope']:+.2f} points"):
        assert text_ in row, (text_, row)
    assert section.count("- **ResNet-110 on CIFAR-10**: The cells differ by more than seed "
                         "noise (one-way ANOVA across cells F(19, 40)") == 1
    assert "### Each seed alone" in section and "| VGG-19 on CIFAR-10 | 2 |" in section


def test_tables_1_3_show_an_interval_with_3_seeds_and_the_range_with_2(frame):
    one = R.table_markdown(A.spearman_tests(frame, pvalue="asymptotic"), 3)
    assert "95% CI" not in one.splitlines()[2] and "range of 2 seeds" not in one
    assert "One seed per cell: seed noise cannot be measured, so no interval" in one
    tests = A.spearman_tests(_seeded((0, 1)), pvalue="asymptotic")
    two = R.table_markdown(tests, 3)
    assert "95% CI" not in two.splitlines()[2]
    assert two.splitlines()[2].count("range of 2 seeds") == 2
    row = _table_block(two, 3)[0]
    t3 = tests[tests["table"] == 3].iloc[0]
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[:3] == [f"{t3['scc']:.2f}",
                         f"{t3['seed_scc_min']:.2f} to {t3['seed_scc_max']:.2f}",
                         R.format_p(t3["p_value"])]
    tests = A.spearman_tests(_seeded((0, 1, 2)), pvalue="asymptotic")
    three = R.table_markdown(tests, 3)
    assert three.splitlines()[2].count("95% CI") == 2 and "range of 2 seeds" not in three
    t3 = tests[tests["table"] == 3].iloc[0]
    cells = [c.strip() for c in _table_block(three, 3)[0].split("|")[1:-1]]
    assert cells[:2] == [f"{t3['scc']:.2f}", R.format_interval(t3["ci_low"], t3["ci_high"])]
    assert cells[3].endswith("†‡§") == (t3["p_holm"] < 0.005 and t3["p_bh"] < 0.005
                                       and t3["p_by"] < 0.005)
    assert "jackknife over 3 seeds, t(2)" in three


def test_a_one_seed_report_says_why_instead_of_printing_nan(frame):
    for fmt in ("markdown", "latex"):
        text = R.render_report(frame, fmt=fmt, pvalue="asymptotic")
        assert not re.search(r"\bnan\b", text, flags=re.IGNORECASE), fmt
        assert "one seed" in text.lower(), fmt
    text = R.render_report(frame, pvalue="asymptotic")
    assert "One seed per cell (77 cells), as in the paper" in text
    assert "One seed per cell, so the seed-to-seed noise of the test accuracy cannot be " \
           "measured" in text
    assert "### Each seed alone" not in text


def test_csv_and_latex_carry_the_intervals_adjusted_pvalues_and_slopes(frame):
    out = pd.read_csv(io.StringIO(R.render_report(frame, fmt="csv", pvalue="asymptotic")))
    direct = A.spearman_tests(frame, pvalue="asymptotic")
    first = out[out["metric"] == "test_accuracy"].reset_index(drop=True)
    for column in ("ci_low", "ci_high", "p_perm", "p_holm", "p_bh", "p_by", "p_holm_all",
                   "p_bh_all", "p_by_all", "slope"):
        assert np.allclose(first[column], direct[column], equal_nan=True, rtol=1e-12), column
    # Each Table 3 row carries its grid's ratio model.
    models = A.ratio_model(frame).set_index(["model", "dataset"])
    whole = first[first["table"] == 3].set_index(["model", "dataset"])
    for column in ("beta_bs", "beta_lr_high", "beta_sum", "p_ratio"):
        assert np.allclose(whole[column], models.loc[whole.index, column], rtol=1e-9), column
    assert first.loc[first["table"] != 3, "beta_bs"].isna().all()
    latex = R.render_report(frame, fmt="latex", pvalue="asymptotic")
    assert r"^{\dagger\ddagger\S}" in latex and r"\label{tab:ratio-model}" in latex
    t3 = direct[(direct["table"] == 3) & (direct["model"] == "vgg19")
                & (direct["dataset"] == "cifar10")].iloc[0]
    assert f"${R.format_p_latex(t3['p_perm'])}$" in latex.split(r"\label{tab:scc-statistics}")[1]
    assert f"${100 * t3['slope']:+.2f}$" in latex.split(r"\label{tab:scc-statistics}")[1]
    assert "each grid's column of this table (5 tests)" in latex


def _error_bars(monkeypatch) -> dict:
    """Record, per PNG written, the error bars of its figure: for each one the bar
    half-lengths (the SDs drawn)."""
    from matplotlib.container import ErrorbarContainer
    from matplotlib.figure import Figure

    seen: dict[str, list[np.ndarray]] = {}
    real = Figure.savefig

    def savefig(self, path, *args, **kwargs):
        bars = []
        for ax in self.axes:
            for container in ax.containers:
                if isinstance(container, ErrorbarContainer):
                    segments = container.lines[2][0].get_segments()
                    bars.append(np.array([abs(s[1][1] - s[0][1]) / 2 for s in segments]))
        seen[str(path).rsplit("/", 1)[-1]] = bars
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return seen


def test_figures_1_and_2_draw_seed_error_bars_only_with_several_seeds(frame, tmp_path,
                                                                      monkeypatch):
    seen = _error_bars(monkeypatch)
    R.write_figures(frame, tmp_path / "one")
    assert all(seen[name] == [] for name in ("figure1_ratio.png", "figure2a_batch_size.png",
                                              "figure2b_learning_rate.png"))
    seeded = _seeded((0, 1, 2))
    R.write_figures(seeded, tmp_path / "three")
    sd = seeded.groupby(["model", "batch_size", "learning_rate"])["test_accuracy"].std()
    # Figure 1: one bar per cell of each panel, as long as the SD over its seeds.
    bars = seen["figure1_ratio.png"]
    assert len(bars) == 2 and all(len(b) == len(BS) * len(LR) for b in bars)
    assert sorted(np.concatenate(bars)) == pytest.approx(sorted(sd), rel=1e-9)
    # Figure 2a/2b: a curve per learning rate / batch size, each point with its bar.
    assert len(seen["figure2a_batch_size.png"]) == 2 * len(LR)
    assert len(seen["figure2b_learning_rate.png"]) == 2 * len(BS)
    assert sorted(np.concatenate(seen["figure2a_batch_size.png"])) == pytest.approx(
        sorted(sd), rel=1e-9)


# --------------------------------------------------------------------------- figures, read


def _figures_seen(monkeypatch) -> dict:
    """Record, per PNG written, what its figure shows: the title, the texts and x scale of
    each panel, the figure legends' entries, the scatter colours per panel."""
    from matplotlib.figure import Figure

    seen: dict[str, dict] = {}
    real = Figure.savefig

    def savefig(self, path, *args, **kwargs):
        panels = []
        for ax in self.axes:
            if ax.get_label() == "<colorbar>":
                continue
            colours = set()
            for coll in ax.collections:
                colours |= {tuple(np.round(c, 4)) for c in coll.get_facecolors()}
            panels.append({
                "texts": [t.get_text() for t in ax.texts],
                "xscale": ax.get_xscale(),
                "xbase": getattr(ax.xaxis.get_transform(), "base", None),
                "legend": ([t.get_text() for t in ax.get_legend().get_texts()]
                           if ax.get_legend() else []),
                "colours": colours,
                "xlabel": ax.get_xlabel(),
                "vlines": sum(1 for line in ax.lines if line.get_linestyle() == ":"),
            })
        seen[str(path).rsplit("/", 1)[-1]] = {
            "title": self._suptitle.get_text() if self._suptitle else
            " ".join(ax.get_title() for ax in self.axes),
            "panels": panels,
            "legends": [[t.get_text() for t in leg.get_texts()] for leg in self.legends],
            "colorbars": sum(1 for ax in self.axes if ax.get_label() == "<colorbar>"),
        }
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return seen


@pytest.fixture(scope="module")
def drawn(frame, tmp_path_factory):
    """The fixture frame's figures, drawn once (with learning curves): (seen, paths)."""
    with pytest.MonkeyPatch.context() as mp:
        seen = _figures_seen(mp)
        paths = R.write_figures(frame, tmp_path_factory.mktemp("figures"),
                                epochs=_epochs_of(frame))
    return seen, paths


def _epochs_of(frame: pd.DataFrame, epochs: int = 12) -> pd.DataFrame:
    """Epoch rows for every finished cell of a results frame (load_epochs' columns)."""
    rows = []
    for cell in frame.itertuples():
        if cell.status not in ("done", "diverged"):
            continue
        for e in range(epochs):
            rows.append({"study": cell.study, "cell_id": cell.cell_id, "model": cell.model,
                         "dataset": cell.dataset, "batch_size": cell.batch_size,
                         "learning_rate": cell.learning_rate, "seed": cell.seed, "epoch": e,
                         "train_loss": 1.0 / (e + 1), "train_accuracy": 0.5 + 0.04 * e,
                         "test_loss": 1.2 / (e + 1), "test_accuracy": 0.45 + 0.035 * e,
                         "train_eval_loss": 1.0 / (e + 1), "train_eval_accuracy": 0.5 + 0.04 * e})
    return pd.DataFrame(rows)


def test_figure_1_colours_cells_by_learning_rate_and_states_each_grids_scc(frame, drawn):
    seen, _ = drawn
    fig1 = seen["figure1_ratio.png"]
    assert "study s" in fig1["title"]
    tests = A.spearman_tests(frame, intervals=False)
    table3 = tests[tests["table"] == 3].sort_values(["model", "dataset"])
    assert len(fig1["panels"]) == len(table3) == 4
    for panel, row in zip(fig1["panels"], table3.itertuples()):
        (text,) = [t for t in panel["texts"] if t.startswith("SCC")]
        assert f"SCC {row.scc:+.2f}, p perm. = {R.format_p(row.p_perm)}" in text
        assert f"(paper p = {R.format_p(row.p_value)}, n={row.n})" in text
        # One colour per learning rate of the grid (and red for diverged cells).
        assert len(panel["colours"] - {(1.0, 0.0, 0.0, 1.0)}) == frame[(frame["model"] == row.model)
                                              & (frame["dataset"] == row.dataset)
                                              & (frame["status"] == "done")
                                              ]["learning_rate"].nunique()
        assert "done" not in panel["legend"]  # only what needs a key: diverged, seeds
        assert ("diverged (best before divergence)" in panel["legend"]) == \
            (row.model == "vgg19")  # the fixture diverges a vgg19 cell of each data set
    # The key is one discrete legend entry per learning rate.
    assert fig1["legends"] == [[f"{v:.2f}" for v in LR]]


def test_figures_2_have_a_discrete_key_and_batch_size_on_a_log_2_axis(drawn, tmp_path,
                                                                      monkeypatch):
    fig2a, fig2b = drawn[0]["figure2a_batch_size.png"], drawn[0]["figure2b_learning_rate.png"]
    seen = _figures_seen(monkeypatch)
    assert all(p["xscale"] == "log" and p["xbase"] == 2 for p in fig2a["panels"])
    assert all(p["xscale"] == "linear" for p in fig2b["panels"])
    assert fig2a["legends"] == [[f"{v:.2f}" for v in LR]] and fig2a["colorbars"] == 0
    assert fig2b["legends"] == [[str(b) for b in BS]]
    # Beyond ten curves: a stepped colour bar, not a legend of dozens of entries.
    wide = make_grid(list(range(16, 16 * 13, 16)), [0.1, 0.2])
    R.write_figures(wide, tmp_path / "wide")
    assert seen["figure2b_learning_rate.png"]["legends"] == []
    assert seen["figure2b_learning_rate.png"]["colorbars"] == 1


def test_learning_curves_and_the_gap_figure_per_grid_name_the_study(frame, drawn, tmp_path):
    seen, paths = drawn
    names = [p.name for p in paths]
    assert "gap_ratio.png" in names
    curves = sorted(n for n in names if n.startswith("curves_"))
    assert curves == ["curves_resnet110_cifar10.png", "curves_resnet110_cifar100.png",
                      "curves_vgg19_cifar10.png", "curves_vgg19_cifar100.png"]
    grid = seen["curves_vgg19_cifar10.png"]
    assert len(grid["panels"]) == len(BS) * len(LR)
    # Every finished cell's kept epoch is marked in its panel.
    assert all(p["vlines"] == 1 for p in grid["panels"])
    assert grid["legends"] == [["test accuracy", "clean train accuracy", "kept epoch",
                                "diverged (red frame)"]]
    # resnet110 on cifar100 has pending cells: their panels are empty.
    assert sum(p["vlines"] for p in seen["curves_resnet110_cifar100.png"]["panels"]) == \
        len(BS) * len(LR) - 3  # the three pending cells (batch size 256, lr >= 0.1)
    gap_texts = [t for p in seen["gap_ratio.png"]["panels"] for t in p["texts"]]
    assert sum(t.startswith("SCC") for t in gap_texts) == 4
    for name, figure in seen.items():
        assert "study s" in figure["title"], name
    # Without epochs, no learning curves.
    assert not [p for p in R.write_figures(frame, tmp_path / "no") if "curves_" in p.name]


# --------------------------------------------------------------------------- HTML


def test_the_html_report_is_one_page_with_every_table_and_every_figure(frame, drawn):
    import base64
    from html.parser import HTMLParser

    from kerasgen.report.html import render_html
    from kerasgen.report.layout import is_key_figure

    markdown = R.render_report(frame)
    page = render_html(markdown, drawn[1])
    # Figure 1 and the heatmaps come first (before the tables), the others at the end.
    pngs = [p for p in drawn[1] if p.suffix == ".png"]
    paths = [p for p in pngs if is_key_figure(p)] + [p for p in pngs if not is_key_figure(p)]

    class Reader(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tables, self.images, self.links, self.ids = 0, [], [], set()

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self.ids.add(attrs.get("id"))
            if tag == "table":
                self.tables += 1
            elif tag == "img":
                self.images.append(attrs["src"])
            elif tag in ("link", "script") or (tag == "a" and
                                               not attrs.get("href", "").startswith("#")):
                self.links.append(attrs)

    reader = Reader()
    reader.feed(page)
    # Every Markdown table became an HTML table.
    separators = [line for line in markdown.splitlines()
                  if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line)]
    assert reader.tables == len(separators) > 5
    # Every figure, embedded as a PNG; nothing fetched from elsewhere.
    assert len(reader.images) == len(paths)
    for src, path in zip(reader.images, paths):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == path.read_bytes()
    assert reader.links == []
    # The contents list points at sections that exist.
    for anchor in re.findall(r'href="#([^"]+)"', page):
        assert anchor in reader.ids, anchor
    assert "<title>Batch size, learning rate and generalization" in page
    for heading in ("Tables 1-3", "Premise", "Figures", "Statistics",
                    "Does only the ratio matter?", "Selection of the kept epoch"):
        assert heading in page, heading
