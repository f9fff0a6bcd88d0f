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
        assert cells[1] == f"{row.scc:.2f}"
        p = R.format_p(row.p_value)
        assert cells[2] == (f"**{p}**" if row.p_value < 0.05 else p)


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
                    "### loss gap", "## Premise"):
        assert heading in text, heading
    assert text.count("**Table 1:") == 1 and text.count("**Table 3:") == 4
    assert "Metric: **best test accuracy (kept epoch: highest test accuracy)**" in text
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
    assert sorted(names[3:]) == [
        "heatmap_resnet110_cifar10.png", "heatmap_resnet110_cifar100.png",
        "heatmap_vgg19_cifar10.png", "heatmap_vgg19_cifar100.png",
    ]
    for path in paths:
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
    assert len(paths) == 5 and all(p.stat().st_size > 5_000 for p in paths)
