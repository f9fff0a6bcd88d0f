"""Claims about kerasgen.analysis, each checked against scipy computed independently."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kerasgen import analysis as A

PAPER_BS = [16 * i for i in range(1, 21)]
PAPER_LR = [round(0.01 * i, 2) for i in range(1, 21)]


def make_grid(
    batch_sizes,
    learning_rates,
    accuracy=lambda bs, lr, rng: 0.9 - 0.02 * math.log(bs / lr) + rng.normal(0, 0.01),
    models=("resnet110",),
    datasets=("cifar10",),
    seeds=(0,),
    study="s",
    rng_seed=0,
) -> pd.DataFrame:
    """A results frame in the shape of kerasgen.store.load_results()."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    cell_id = 0
    for model, dataset in itertools.product(models, datasets):
        for bs, lr, seed in itertools.product(batch_sizes, learning_rates, seeds):
            acc = float(accuracy(bs, lr, rng))
            rows.append(
                {
                    "study": study,
                    "cell_id": cell_id,
                    "model": model,
                    "dataset": dataset,
                    "batch_size": int(bs),
                    "learning_rate": float(lr),
                    "seed": seed,
                    "ratio": bs / lr,
                    "status": "done",
                    "best_metric": "test_accuracy",
                    "kept_epoch": 10.0,
                    "test_accuracy": acc,
                    "test_loss": 2.0 * (1.0 - acc),
                    "train_eval_accuracy": 1.0,
                    "train_eval_loss": float(rng.uniform(0.001, 0.01)),
                    "best_test_accuracy": acc,
                    "best_epoch": 10.0,
                    "final_train_accuracy": 1.0,
                    "final_train_loss": float(rng.uniform(0.001, 0.01)),
                    "final_test_accuracy": acc - 0.01,
                    "final_test_loss": 1.0,
                    "epochs_done": 20,
                    "diverged_epoch": np.nan,
                }
            )
            cell_id += 1
    return pd.DataFrame(rows)


def _rows(tests: pd.DataFrame, table: int) -> pd.DataFrame:
    return tests[tests["table"] == table]


# --------------------------------------------------------------------------- counts


def test_paper_grid_2_models_2_datasets_20x20_yields_164_tests():
    frame = make_grid(PAPER_BS, PAPER_LR, models=("resnet110", "vgg19"), datasets=("cifar10", "cifar100"))
    tests = A.spearman_tests(frame, pvalue="asymptotic")
    assert len(tests) == 164 == A.expected_test_count(frame)
    assert (tests["table"].value_counts().sort_index().tolist()) == [80, 80, 4]
    assert tests["reason"].isna().all() and tests["n"].groupby(tests["table"]).max().tolist() == [20, 20, 400]


def test_3x4_grid_gives_one_test_per_lr_per_bs_plus_ratio():
    frame = make_grid([32, 64, 128], [0.01, 0.05, 0.1, 0.2], models=("a", "b"))
    tests = A.spearman_tests(frame, pvalue="asymptotic")
    assert len(tests) == 2 * (4 + 3 + 1) == A.expected_test_count(frame)
    assert sorted(_rows(tests, 1)["group_value"].unique()) == [0.01, 0.05, 0.1, 0.2]
    assert sorted(_rows(tests, 2)["group_value"].unique()) == [32, 64, 128]
    assert set(_rows(tests, 1)["n"]) == {3} and set(_rows(tests, 2)["n"]) == {4}


def test_learning_rates_differing_only_by_float_noise_form_one_group():
    frame = make_grid([32, 64, 128], [0.1, 0.2])
    frame.loc[frame["batch_size"] == 64, "learning_rate"] = frame["learning_rate"] + 1e-14
    tests = A.spearman_tests(frame, pvalue="asymptotic")
    t1 = _rows(tests, 1)
    assert len(t1) == 2 and set(t1["n"]) == {3}
    assert sorted(t1["group_value"]) == [0.1, 0.2]


def test_batch_size_group_values_stay_ints_and_table3_has_none():
    tests = A.spearman_tests(make_grid([32, 64, 128], [0.1, 0.2, 0.3]), pvalue="asymptotic")
    assert all(type(v) is int for v in _rows(tests, 2)["group_value"])
    assert all(type(v) is float for v in _rows(tests, 1)["group_value"])
    t3 = _rows(tests, 3).iloc[0]
    assert t3["group_value"] is None and t3["group_by"] is None and t3["variable"] == "ratio"


# --------------------------------------------------------------------------- coefficients


def test_perfect_monotone_grid_gives_scc_minus_one_for_bs_plus_one_for_lr():
    frame = make_grid([16, 32, 64, 128], [0.01, 0.02, 0.04], accuracy=lambda bs, lr, rng: 1.0 - bs / 1000 + lr)
    tests = A.spearman_tests(frame, pvalue="asymptotic")
    assert np.allclose(_rows(tests, 1)["scc"], -1.0)
    assert np.allclose(_rows(tests, 2)["scc"], 1.0)
    assert _rows(tests, 3)["scc"].iloc[0] < -0.8


def test_every_coefficient_and_pvalue_equals_scipy_spearmanr_on_the_same_cells():
    # Quantized accuracies create ties; ratios also tie (32/0.02 == 16/0.01).
    frame = make_grid(
        [16, 32, 48, 64, 80],
        [0.01, 0.02, 0.03, 0.04],
        accuracy=lambda bs, lr, rng: round(0.9 - 0.001 * bs + lr + rng.normal(0, 0.02), 2),
        models=("m1", "m2"),
    )
    tests = A.spearman_tests(frame, pvalue="asymptotic")
    assert len(tests) == 2 * (4 + 5 + 1)
    for row in tests.itertuples():
        cells = frame[frame["model"] == row.model]
        if row.table == 1:
            cells = cells[np.isclose(cells["learning_rate"], row.group_value)]
            x = cells["batch_size"]
        elif row.table == 2:
            cells = cells[cells["batch_size"] == row.group_value]
            x = cells["learning_rate"]
        else:
            x = cells["batch_size"] / cells["learning_rate"]
        expected = stats.spearmanr(x.to_numpy(), cells["test_accuracy"].to_numpy())
        assert row.n == len(cells)
        assert row.scc == pytest.approx(expected.statistic, abs=1e-12)
        assert row.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
        assert row.pvalue_method == "asymptotic"
        assert row.significant_paper == (expected.pvalue < 0.005)


def test_ratio_ties_are_treated_as_ties_despite_float_rounding():
    # Learning rates 0.01 * i carry float noise, so equal ratios (16/0.01 == 48/0.03)
    # differ in the last bits; the exact ratio is the fraction 100 * bs / i.
    steps = range(1, 21)
    frame = make_grid([16 * i for i in steps], [0.01 * i for i in steps], accuracy=lambda bs, lr, rng: rng.normal())
    exact = [float(Fraction(100 * bs) / Fraction(round(lr * 100))) for bs, lr in zip(frame["batch_size"], frame["learning_rate"])]
    assert frame["ratio"].nunique() > len(set(exact))  # the noise is really there
    t3 = _rows(A.spearman_tests(frame, pvalue="asymptotic"), 3).iloc[0]
    expected = stats.spearmanr(exact, frame["test_accuracy"])
    assert t3["scc"] == pytest.approx(expected.statistic, abs=1e-12)
    assert t3["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)


def test_constant_metric_group_has_nan_coefficient_and_a_reason():
    frame = make_grid([16, 32, 64], [0.01, 0.02], accuracy=lambda bs, lr, rng: 0.5 if lr == 0.01 else bs / 100)
    tests = A.spearman_tests(frame, pvalue="asymptotic")
    row = _rows(tests, 1).set_index("group_value").loc[0.01]
    assert math.isnan(row["scc"]) and math.isnan(row["p_value"])
    assert row["reason"] == "metric is constant" and not row["significant"]
    assert _rows(tests, 1).set_index("group_value").loc[0.02, "reason"] is None


def test_group_with_one_batch_size_over_seeds_reports_variable_is_constant():
    frame = make_grid([32], [0.01, 0.02, 0.03], seeds=(0, 1, 2))
    t1 = _rows(A.spearman_tests(frame, pvalue="asymptotic"), 1)
    assert set(t1["reason"]) == {"variable is constant"}
    # Seeds are replicates: each group is one cell (n = 1) averaged over 3 runs.
    assert t1["scc"].isna().all() and set(t1["n"]) == {1}
    assert set(t1["n_runs"]) == {3} and set(t1["n_seeds"]) == {3}


def test_groups_smaller_than_min_cells_report_fewer_than_3_with_n():
    frame = make_grid([32, 64], [0.01, 0.02, 0.03])
    tests = A.spearman_tests(frame, pvalue="asymptotic")
    t1 = _rows(tests, 1)
    assert set(t1["reason"]) == {"fewer than 3 finished cells (n=2)"}
    assert t1["scc"].isna().all() and t1["p_value"].isna().all() and not t1["significant"].any()
    assert _rows(tests, 2)["reason"].isna().all()
    assert A.spearman_tests(frame, min_cells=4, pvalue="asymptotic")["reason"].str.contains("fewer than 4").sum() == len(t1) + 2


def test_no_coefficient_is_ever_a_bare_nan():
    frame = make_grid([16, 32, 64], [0.01, 0.02, 0.03])
    frame.loc[:4, "status"] = "pending"
    frame.loc[frame["learning_rate"] == 0.03, "test_accuracy"] = 0.7
    tests = A.spearman_tests(frame, pvalue="asymptotic")
    assert (tests["scc"].isna() == tests["reason"].notna()).all()
    assert (tests["p_value"].isna() == tests["reason"].notna()).all()


def test_significance_is_the_permutation_p_strictly_below_alpha_and_the_papers_is_kept():
    frame = make_grid([16, 32, 48, 64, 80, 96], [0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    tests = A.spearman_tests(frame, alpha=0.05, pvalue="asymptotic")
    ok = tests["reason"].isna()
    assert (tests.loc[ok, "significant"] == (tests.loc[ok, "p_perm"] < 0.05)).all()
    assert (tests.loc[ok, "significant_paper"] == (tests.loc[ok, "p_value"] < 0.05)).all()
    assert (tests["alpha"] == 0.05).all()
    # Six cells: every pairing enumerated (exact); the whole grid: rows and columns.
    assert set(tests.loc[ok & (tests["table"] != 3), "p_perm_method"]) == {
        "exact (720 permutations)"}
    assert _rows(tests, 3)["p_perm_method"].iloc[0] == (
        "monte-carlo (9999 permutations of rows and columns)")


# --------------------------------------------------------------------------- statuses


def test_diverged_cells_count_with_best_accuracy_and_can_be_excluded():
    frame = make_grid([16, 32, 64, 128], [0.01, 0.02, 0.04, 0.08])
    div = (frame["learning_rate"] == 0.08) & (frame["batch_size"] <= 32)
    frame.loc[div, ["status", "diverged_epoch"]] = ["diverged", 3.0]
    included = A.spearman_tests(frame, pvalue="asymptotic")
    excluded = A.spearman_tests(frame, include_diverged=False, pvalue="asymptotic")
    g_in = _rows(included, 1).set_index("group_value").loc[0.08]
    g_ex = _rows(excluded, 1).set_index("group_value").loc[0.08]
    assert (g_in["n"], g_in["n_diverged"]) == (4, 2)
    assert (g_ex["n"], g_ex["n_diverged"]) == (2, 0)
    assert g_ex["reason"] == "fewer than 3 finished cells (n=2)"
    assert _rows(included, 3)["n"].iloc[0] == 16 and _rows(excluded, 3)["n"].iloc[0] == 14
    kept = frame[frame["learning_rate"] == 0.08]
    assert g_in["scc"] == pytest.approx(stats.spearmanr(kept["batch_size"], kept["test_accuracy"]).statistic)


def test_partial_grid_ignores_pending_running_failed_and_keeps_the_test_count():
    frame = make_grid([16, 32, 64, 128], [0.01, 0.02, 0.04])
    frame.loc[0, "status"] = "pending"
    frame.loc[1, "status"] = "running"
    frame.loc[2, "status"] = "failed"
    frame.loc[[0, 1], "test_accuracy"] = np.nan
    frame.loc[3, "test_accuracy"] = np.nan  # done but never finished an epoch
    tests = A.spearman_tests(frame, pvalue="asymptotic")
    assert len(tests) == 3 + 4 + 1
    t3 = _rows(tests, 3).iloc[0]
    assert (t3["n"], t3["n_total"]) == (12 - 4, 12)
    done = frame.drop(index=[0, 1, 2, 3])
    expected = stats.spearmanr(done["batch_size"] / done["learning_rate"], done["test_accuracy"])
    assert t3["scc"] == pytest.approx(expected.statistic)
    assert t3["p_value"] == pytest.approx(expected.pvalue)


def test_frame_with_only_pending_cells_yields_reasons_not_errors():
    frame = make_grid([16, 32, 64], [0.01, 0.02, 0.03])
    frame["status"] = "pending"
    frame["test_accuracy"] = np.nan
    tests = A.spearman_tests(frame, pvalue="asymptotic")
    assert len(tests) == 7 and tests["reason"].str.startswith("fewer than 3 finished cells (n=0)").all()


def test_empty_frame_gives_empty_results_with_the_documented_columns():
    empty = make_grid([16], [0.1]).iloc[0:0]
    assert list(A.spearman_tests(empty, pvalue="asymptotic").columns) == A.TEST_COLUMNS
    assert list(A.direction_summary(A.spearman_tests(empty, pvalue="asymptotic")).columns) == A.DIRECTION_COLUMNS
    assert list(A.premise_check(empty).columns) == A.PREMISE_COLUMNS


def test_studies_are_analysed_separately():
    a = make_grid([16, 32, 64], [0.01, 0.02], study="a")
    b = make_grid([16, 32, 64], [0.01, 0.02], study="b", rng_seed=1)
    tests = A.spearman_tests(pd.concat([a, b], ignore_index=True), pvalue="asymptotic")
    assert len(tests) == 2 * (2 + 3 + 1)
    assert set(_rows(tests, 3)["n"]) == {6}


# --------------------------------------------------------------------------- p-value methods


def _brute_force_pvalue(x, y) -> float:
    observed = abs(stats.spearmanr(x, y).statistic)
    hits = [
        abs(stats.spearmanr(x, [y[i] for i in perm]).statistic) >= observed - 1e-12
        for perm in itertools.permutations(range(len(y)))
    ]
    return sum(hits) / len(hits)


@pytest.mark.parametrize(
    "y",
    [
        [0.81, 0.79, 0.80, 0.75, 0.70],  # no ties
        [0.80, 0.80, 0.78, 0.75, 0.75],  # ties
        [0.70, 0.71, 0.72, 0.73, 0.74],  # perfect
    ],
)
def test_exact_pvalue_for_n5_equals_brute_force_enumeration(y):
    x = [16, 32, 64, 128, 256]
    expected = _brute_force_pvalue(x, y)
    assert A.exact_spearman_pvalue(x, y) == pytest.approx(expected, abs=1e-12)
    result = A.spearman(x, y, pvalue="exact")
    assert result.p_value == pytest.approx(expected, abs=1e-12)
    assert result.method == "exact (120 permutations)"
    assert result.scc == pytest.approx(stats.spearmanr(x, y).statistic)


def test_exact_pvalues_in_tests_frame_match_enumeration():
    frame = make_grid([16, 32, 64, 128, 256], [0.01, 0.02, 0.03])
    tests = A.spearman_tests(frame, pvalue="exact")
    for row in _rows(tests, 1).itertuples():
        cells = frame[np.isclose(frame["learning_rate"], row.group_value)]
        assert row.p_value == pytest.approx(
            _brute_force_pvalue(cells["batch_size"].tolist(), cells["test_accuracy"].tolist())
        )
        assert row.pvalue_method == "exact (120 permutations)"


def test_exact_falls_back_to_monte_carlo_above_8_cells_and_says_so():
    x = np.arange(12)
    y = x + np.random.default_rng(0).normal(0, 3, 12)
    result = A.spearman(x, y, pvalue="exact", permutations=999)
    assert result.method == "monte-carlo (999 resamples)"
    assert 1 / 1000 <= result.p_value <= 1


def test_permutation_pvalue_is_exact_for_small_n_and_matches_enumeration():
    x = [1, 2, 3, 4, 5, 6]
    y = [0.3, 0.1, 0.4, 0.6, 0.5, 0.9]
    result = A.spearman(x, y, pvalue="permutation", permutations=9999)
    assert result.method == "exact (720 permutations)"
    assert result.p_value == pytest.approx(_brute_force_pvalue(x, y), abs=1e-9)


def test_monte_carlo_pvalues_are_deterministic_for_a_seed_and_close_to_asymptotic():
    frame = make_grid(PAPER_BS[:12], PAPER_LR[:3], accuracy=lambda bs, lr, rng: rng.normal())
    one = A.spearman_tests(frame, pvalue="permutation", permutations=2000, seed=3)
    two = A.spearman_tests(frame, pvalue="permutation", permutations=2000, seed=3)
    pd.testing.assert_frame_equal(one, two)
    big = one["n"] > 6  # 7! > 2000 resamples: Monte Carlo; 3 cells: 3! = 6 enumerated
    assert one.loc[big, "pvalue_method"].eq("monte-carlo (2000 resamples)").all()
    assert one.loc[~big, "pvalue_method"].eq("exact (6 permutations)").all()
    asym = A.spearman_tests(frame, pvalue="asymptotic")
    t1 = _rows(one, 1)["p_value"].to_numpy()
    assert np.allclose(t1, _rows(asym, 1)["p_value"].to_numpy(), atol=0.06)


def test_unknown_pvalue_method_is_rejected():
    with pytest.raises(ValueError):
        A.spearman_tests(make_grid([16, 32, 64], [0.1]), pvalue="bootstrap")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- metrics and directions


def test_gaps_are_clean_train_minus_test_at_the_kept_epoch_never_the_running_metrics():
    frame = make_grid([16, 32], [0.1])
    frame["train_eval_accuracy"] = [0.99, 0.98]
    frame["test_accuracy"] = [0.9, 0.7]
    frame["train_eval_loss"] = [0.01, 0.05]
    frame["test_loss"] = [0.3, 0.9]
    out = A.add_derived_metrics(frame)
    assert out["gap"].tolist() == pytest.approx([0.09, 0.28])
    assert out["loss_gap"].tolist() == pytest.approx([0.29, 0.85])
    assert "gap" not in frame.columns
    # A store without clean metrics: no gap at all, even though Keras's running train
    # accuracy is there (it is averaged over augmented batches in training mode).
    old = frame.drop(columns=["train_eval_accuracy", "train_eval_loss"])
    assert old["final_train_accuracy"].notna().all()
    derived = A.add_derived_metrics(old)
    assert derived["gap"].isna().all() and derived["loss_gap"].isna().all()
    tests = A.spearman_tests(old, metric="gap")
    assert tests["scc"].isna().all() and tests["reason"].notna().all()


def test_a_frame_without_kept_epoch_columns_is_read_with_the_papers_rule():
    frame = make_grid([16, 32, 64], [0.1, 0.2]).drop(columns=["test_accuracy"])
    out = A.add_derived_metrics(frame)
    assert out["test_accuracy"].tolist() == frame["best_test_accuracy"].tolist()


def test_all_metrics_get_the_same_three_analyses():
    frame = make_grid([16, 32, 64], [0.01, 0.02, 0.03])
    tests = A.spearman_tests_all(frame)
    assert tests.groupby("metric").size().to_dict() == {m: 7 for m in A.METRICS}


def test_direction_summary_holds_for_the_paper_pattern_and_flips_for_gap():
    # 7 cells per group: the smallest exact p-value, 2/7! = 4e-4, can pass alpha = 0.005
    # (with 5 cells it is 2/5! = 0.017 and nothing is ever significant).
    frame = make_grid([16 * 2**i for i in range(7)], [0.01 * 2**i for i in range(7)],
                      accuracy=lambda bs, lr, rng: 1 - bs / lr / 1e6)
    frame["train_eval_accuracy"] = 1.0
    frame["train_eval_loss"] = 0.001
    summary = A.direction_summary(A.spearman_tests_all(frame, pvalue="exact"))
    assert summary["holds"].all(), summary[["metric", "variable", "verdict"]]
    gap = summary[summary["metric"] == "gap"].set_index("variable")
    assert gap.loc["ratio", "expected_sign"] == 1 and gap.loc["batch_size", "expected_sign"] == 1
    assert gap.loc["learning_rate", "expected_sign"] == -1
    loss_gap = summary[summary["metric"] == "loss_gap"].set_index("variable")
    assert loss_gap.loc["ratio", "expected_sign"] == 1 and loss_gap.loc["ratio", "holds"]
    acc = summary[summary["metric"] == "test_accuracy"].set_index("variable")
    assert acc.loc["batch_size", "significant_expected"] == 7 and acc.loc["batch_size", "significant_against"] == 0
    assert "7/7 groups tested" in acc.loc["batch_size", "summary"]


def test_direction_summary_counts_expected_against_and_untested_groups():
    base = dict(study="s", model="m", dataset="d", table=1, variable="batch_size", group_by="learning_rate",
                metric="best_test_accuracy", n=5, n_diverged=0, n_total=5, pvalue_method="asymptotic", alpha=0.005)
    rows = [
        {**base, "group_value": 0.1, "scc": -0.9, "p_value": 1e-4, "significant": True, "reason": None},
        {**base, "group_value": 0.2, "scc": -0.3, "p_value": 0.4, "significant": False, "reason": None},
        {**base, "group_value": 0.3, "scc": 0.95, "p_value": 1e-5, "significant": True, "reason": None},
        {**base, "group_value": 0.4, "scc": np.nan, "p_value": np.nan, "significant": False,
         "reason": "metric is constant"},
    ]
    row = A.direction_summary(pd.DataFrame(rows)).iloc[0]
    assert (row["groups"], row["tested"], row["expected_direction"]) == (4, 3, 2)
    assert (row["significant_expected"], row["significant_against"]) == (1, 1)
    assert row["verdict"] == "mixed" and not row["holds"]


# --------------------------------------------------------------------------- premise


GRID_4X4 = ([16, 32, 64, 128], [0.01, 0.02, 0.04, 0.08])


def test_premise_check_warns_of_the_confound_when_clean_loss_rises_and_accuracy_falls():
    # The paper's direction (accuracy falls with the ratio, make_grid's default) and
    # large-ratio cells that fit the training set worse: under-training could explain it.
    frame = make_grid(*GRID_4X4)
    frame["train_eval_loss"] = 1e-4 * frame["ratio"]
    row = A.premise_check(frame).iloc[0]
    assert row["train_source"] == "clean (kept epoch)"
    assert row["loss_ratio_scc"] == pytest.approx(
        stats.spearmanr(frame["ratio"], frame["train_eval_loss"]).statistic)
    assert row["metric_ratio_scc"] < 0
    assert not row["ok"]
    (warning,) = [w for w in row["warnings"] if "under-training" in w]
    assert "clean train loss rises" in warning and "SCC +1.00" in warning
    assert f"SCC {row['metric_ratio_scc']:+.2f}" in warning and row["notes"] == ()


def test_premise_check_says_the_opposite_trend_cannot_be_under_training():
    # Large-ratio cells fit better (clean loss falls with the ratio, as on the paper-size
    # store of scripts/bench_tui.py) yet test worse: under-fitting of the small-ratio
    # cells would make them test worse, not better, so no warning, a note.
    frame = make_grid(*GRID_4X4)
    frame["train_eval_loss"] = 1.0 / frame["ratio"]
    row = A.premise_check(frame).iloc[0]
    assert row["ok"] and row["fit_trend"] and not row["confound"]
    (note,) = row["notes"]
    assert "clean train loss falls" in note and "small-ratio cells fit the training set worse" \
        in note and "under-training cannot explain its trend" in note


def test_premise_check_notes_unequal_fit_that_cannot_explain_the_metric():
    # Large-ratio cells fit worse, yet accuracy rises with the ratio: the fit differs,
    # but under-fitting would pull the other way.
    frame = make_grid(*GRID_4X4, accuracy=lambda bs, lr, rng: 0.5 + 1e-4 * bs / lr)
    frame["train_eval_loss"] = 1e-4 * frame["ratio"]
    row = A.premise_check(frame).iloc[0]
    assert row["metric_ratio_scc"] > 0 and row["fit_trend"] and not row["confound"]
    assert row["warnings"] == ()
    (note,) = row["notes"]
    assert "large-ratio cells fit the training set worse, but" in note


def test_premise_check_knows_that_under_fitting_shrinks_a_gap():
    # Large-ratio cells fit worse (lower clean train accuracy). That lowers test
    # accuracy -- the paper's direction, a confound -- but it shrinks the gap, so a gap
    # rising with the ratio (the paper's direction for the gap) is no sign of it, and a
    # gap falling with the ratio is.
    frame = make_grid(*GRID_4X4)
    frame["train_eval_accuracy"] = 1.0 - 1e-5 * frame["ratio"]
    frame["train_eval_loss"] = 0.01  # constant: only the accuracy criterion can fire
    frame["test_accuracy"] = frame["train_eval_accuracy"] - 0.05 - 2e-6 * frame["ratio"]
    rising = A.premise_check(frame, metric="gap").iloc[0]
    assert rising["metric_ratio_scc"] > 0 and rising["fit_trend"] and not rising["confound"]
    frame["test_accuracy"] = frame["train_eval_accuracy"] - 0.05 + 2e-6 * frame["ratio"]
    falling = A.premise_check(frame, metric="gap").iloc[0]
    assert falling["metric_ratio_scc"] < 0 and falling["confound"]
    (warning,) = [w for w in falling["warnings"] if "under-training" in w]
    # The message comes from the criterion that fired: accuracy, not loss.
    assert warning.startswith("clean train accuracy falls with batch size / learning rate")
    assert "loss rises" not in warning
    frame["test_accuracy"] = frame["train_eval_accuracy"] - 0.05 - 2e-6 * frame["ratio"]
    accuracy = A.premise_check(frame).iloc[0]  # test accuracy falls: the confound
    assert accuracy["metric_ratio_scc"] < 0 and accuracy["confound"]


def test_premise_check_counts_cells_and_tests_at_0_05():
    # Two seeds per cell: the check counts 16 cells, not 32 runs, and a trend in fit at
    # p = 0.01-0.05 (missed at the discovery threshold 0.005) is reported.
    frame = make_grid(*GRID_4X4, seeds=(0, 1))
    rng = np.random.default_rng(3)
    frame["train_eval_loss"] = 0.01 + 1e-6 * frame["ratio"] + rng.normal(0, 0.006, len(frame))
    frame.loc[frame["batch_size"] == 16, "train_eval_accuracy"] = 0.98
    row = A.premise_check(frame).iloc[0]
    assert row["n"] == 16 and row["n_below_threshold"] == 4 and row["alpha"] == 0.05
    assert any(w.startswith("4 of 16 cells are below 99%") for w in row["warnings"])
    assert 0.005 < row["loss_ratio_p"] < 0.05 and row["fit_trend"], row["loss_ratio_p"]


def test_premise_checks_partial_spearman_holds_the_train_loss_fixed():
    # Test accuracy follows the train loss, which follows the ratio: once the loss is
    # held fixed the ratio predicts nothing more. The partial coefficient equals the
    # textbook formula on the three pairwise Spearman coefficients.
    frame = make_grid([16, 32, 64, 128, 256], [0.0125, 0.025, 0.05, 0.1, 0.2])
    rng = np.random.default_rng(8)
    frame["train_eval_loss"] = np.log(frame["ratio"]) + rng.normal(0, 0.8, len(frame))
    frame["test_accuracy"] = 0.9 - 0.01 * frame["train_eval_loss"] + rng.normal(0, 0.001,
                                                                                 len(frame))
    row = A.premise_check(frame).iloc[0]
    r = {pair: stats.spearmanr(frame[a], frame[b]).statistic for pair, (a, b) in {
        "xy": ("ratio", "test_accuracy"), "xz": ("ratio", "train_eval_loss"),
        "yz": ("test_accuracy", "train_eval_loss")}.items()}
    expected = (r["xy"] - r["xz"] * r["yz"]) / math.sqrt((1 - r["xz"] ** 2) * (1 - r["yz"] ** 2))
    assert row["partial_scc"] == pytest.approx(expected, abs=1e-12)
    assert abs(row["partial_scc"]) < 0.3 < abs(row["metric_ratio_scc"])


def test_premise_check_warns_about_cells_below_train_accuracy_threshold():
    frame = make_grid([16, 32, 64], [0.01, 0.02, 0.04])
    frame.loc[[0, 4], "train_eval_accuracy"] = [0.6, 0.95]
    frame["final_train_accuracy"] = 0.5  # the running metric is not what is judged
    row = A.premise_check(frame, train_accuracy_threshold=0.99).iloc[0]
    assert row["n_below_threshold"] == 2 and row["train_accuracy_min"] == 0.6
    assert row["train_accuracy_median"] == 1.0 and row["train_accuracy_max"] == 1.0
    assert any("2 of 9 cells are below 99% clean train accuracy" in w for w in row["warnings"])


def test_premise_check_is_quiet_when_every_cell_fits_and_loss_is_unrelated():
    frame = make_grid(*GRID_4X4)
    frame["train_eval_loss"] = np.random.default_rng(5).permutation(np.linspace(0.001, 0.002, 16))
    row = A.premise_check(frame).iloc[0]
    assert row["ok"] and row["warnings"] == () and row["n_below_threshold"] == 0
    assert math.isnan(row["accuracy_ratio_scc"])  # constant train accuracy: no coefficient


def test_premise_check_without_clean_metrics_says_so_and_uses_the_running_ones():
    frame = make_grid(*GRID_4X4).drop(columns=["train_eval_accuracy", "train_eval_loss"])
    frame["final_train_loss"] = 1e-4 * frame["ratio"]
    row = A.premise_check(frame).iloc[0]
    assert row["train_source"].startswith("running")
    assert any("clean training metrics are missing" in w for w in row["warnings"])
    assert any("running train loss rises" in w for w in row["warnings"])


@pytest.mark.parametrize("model, last_batch, flagged", [
    ("resnet8", "keep", ((16, 3), (32, 3), (64, 3))),  # 1347 = 84 * 16 + 3 ...
    ("resnet8", "drop", ()),
    ("vgg11_nobn", "keep", ()),  # no batch norm, no moving statistics
    ("mine", "keep", ()),  # not a registry model: nothing is assumed
])
def test_premise_check_names_small_last_batches_of_batch_norm_networks(model, last_batch,
                                                                       flagged):
    frame = make_grid([16, 32, 64, 128], [0.1, 0.2], models=(model,), datasets=("digits",))
    frame["last_batch"] = last_batch
    row = A.premise_check(frame).iloc[0]
    assert row["small_last_batches"] == flagged
    warned = [w for w in row["warnings"] if "last batch" in w]
    if flagged:  # 1347 mod 128 = 67 is more than a quarter of 128: not named
        (warning,) = warned
        assert "16 (last batch 3), 32 (last batch 3), 64 (last batch 3)" in warning
        assert "10%" in warning and "128" not in warning
    else:
        assert warned == []


# --------------------------------------------------------------------------- module hygiene


def test_importing_analysis_and_report_loads_no_tensorflow_keras_or_matplotlib():
    code = (
        "import sys, kerasgen.analysis, kerasgen.report; "
        "bad = [m for m in ('tensorflow', 'keras', 'matplotlib', 'scipy') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_results_are_deterministic_and_do_not_mutate_the_input():
    frame = make_grid([16, 32, 64, 128], [0.01, 0.02, 0.04], seeds=(0, 1))
    before = frame.copy()
    one = A.spearman_tests_all(frame, pvalue="exact", permutations=500)
    two = A.spearman_tests_all(frame.sample(frac=1.0, random_state=1), pvalue="exact", permutations=500)
    pd.testing.assert_frame_equal(one, two)
    pd.testing.assert_frame_equal(frame, before)


def test_auto_pvalues_are_exact_for_small_groups_and_asymptotic_for_large_ones():
    from scipy import stats

    small_x, small_y = [16, 32, 64], [0.9, 0.8, 0.7]
    small = A.spearman(small_x, small_y)  # the default is "auto"
    # A perfect ranking of three cells: asymptotic p is 0, the exact one is 2/6.
    assert stats.spearmanr(small_x, small_y).pvalue == 0.0
    assert small.p_value == pytest.approx(2 / 6)
    assert small.method.startswith("exact")
    rng = np.random.default_rng(0)
    big_x = np.arange(20)
    big_y = big_x + rng.normal(0, 5, 20)
    big = A.spearman(big_x, big_y)
    assert big.method == "asymptotic"
    assert big.p_value == pytest.approx(stats.spearmanr(big_x, big_y).pvalue, rel=1e-12)
