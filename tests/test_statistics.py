"""Claims about the statistics beyond the paper's tests (kerasgen.inference and their use
in kerasgen.analysis): seeds as replicates, bootstrap intervals, Holm and
Benjamini-Hochberg, Theil-Sen slopes, the noise floor. Each is checked against scipy
or against values computed by hand."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_analysis import make_grid  # tests/ is on sys.path

from kerasgen import analysis as A
from kerasgen import inference as I

GRID = ([16, 32, 64, 128, 256], [0.0125, 0.025, 0.05, 0.1, 0.2])


def _table(tests: pd.DataFrame, table: int) -> pd.DataFrame:
    return tests[tests["table"] == table]


def _cell_means(frame: pd.DataFrame, metric: str = "test_accuracy") -> pd.DataFrame:
    """Per (model, dataset, batch size, learning rate): the mean over seeds, computed
    here with pandas alone."""
    return (frame.groupby(["model", "dataset", "batch_size", "learning_rate"])[metric]
            .mean().reset_index())


# --------------------------------------------------------------------------- Holm and BH


def test_holm_and_benjamini_hochberg_on_a_vector_computed_by_hand():
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    # m = 4 (the NaN is not a test). Sorted: .005, .01, .03, .04.
    # Holm: 4 x .005 = .02; 3 x .01 = .03; 2 x .03 = .06; 1 x .04 = .04 -> running max .06.
    assert I.holm(p)[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: .005 x 4/1 = .02; .01 x 4/2 = .02; .03 x 4/3 = .04; .04 x 4/4 = .04 (running
    # minimum from the largest).
    assert I.benjamini_hochberg(p)[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert math.isnan(I.holm(p)[4]) and math.isnan(I.benjamini_hochberg(p)[4])


def test_benjamini_hochbergs_own_example_rejects_four_and_holm_three():
    # Benjamini & Hochberg (1995), section 4.1: 15 p-values; at q = 0.05 BH rejects the
    # four smallest, Bonferroni-type procedures (Holm) the three smallest.
    p = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459,
         0.3240, 0.4262, 0.5719, 0.6528, 0.7590, 1.000]
    assert int((I.benjamini_hochberg(p) < 0.05).sum()) == 4
    assert int((I.holm(p) < 0.05).sum()) == 3
    assert I.holm(p)[2] == pytest.approx(13 * 0.0019)
    assert I.benjamini_hochberg(p)[3] == pytest.approx(0.0095 * 15 / 4)


def test_adjusted_pvalues_use_each_tables_family_and_every_test_of_the_metric():
    base = dict(study="s", dataset="d", variable="batch_size", group_by="learning_rate",
                alpha=0.05, significant=True, reason=None)
    rows = [
        {**base, "model": "m", "metric": "test_accuracy", "table": 1, "p_value": 0.01},
        {**base, "model": "m", "metric": "test_accuracy", "table": 1, "p_value": 0.02},
        {**base, "model": "m", "metric": "test_accuracy", "table": 3, "p_value": 0.03},
        {**base, "model": "v", "metric": "test_accuracy", "table": 1, "p_value": 0.04},
        {**base, "model": "m", "metric": "gap", "table": 1, "p_value": 0.01},
        {**base, "model": "m", "metric": "test_accuracy", "table": 1, "p_value": np.nan},
    ]
    out = A.adjust_pvalues(pd.DataFrame(rows))
    # Family (m, test_accuracy, Table 1) has two tested rows: Holm 2 x .01, max(.02, 1 x .02).
    assert out["p_holm"].tolist()[:2] == pytest.approx([0.02, 0.02])
    # Families of one test keep their p-value.
    assert out["p_holm"].tolist()[2:5] == pytest.approx([0.03, 0.04, 0.01])
    # Over every test of test_accuracy (4 with a p-value): .01 x 4, .02 x 3, .03 x 2, .04.
    assert out["p_holm_all"].tolist()[:4] == pytest.approx([0.04, 0.06, 0.06, 0.06])
    assert out["p_bh_all"].tolist()[:4] == pytest.approx([0.04, 0.04, 0.04, 0.04])
    assert out["p_holm_all"].iloc[4] == pytest.approx(0.01)  # gap is its own metric
    assert out.iloc[5][["p_holm", "p_bh", "p_holm_all", "p_bh_all"]].isna().all()
    counts = A.multiple_testing_summary(out).set_index("metric")
    assert counts.loc["test_accuracy", ["tested", "significant"]].tolist() == [4, 5]
    assert counts.loc["test_accuracy", "expected_by_chance"] == pytest.approx(4 * 0.05)
    assert counts.loc["test_accuracy", ["holm_table", "holm_all", "bh_all"]].tolist() == \
        [4, 1, 4]


# --------------------------------------------------------------------------- resampling


def test_each_resampled_coefficient_equals_spearmanr_of_the_explicit_resample():
    rng = np.random.default_rng(1)
    x = np.repeat(np.arange(8.0), 3)  # ties in x
    y = np.round(-x + rng.normal(0, 3, 24))  # ties in y
    statistic = I.resampled_spearman(x, y)
    draws = rng.integers(0, 24, (300, 24))
    got = statistic(draws)
    for row, value in zip(draws, got):
        expected = stats.spearmanr(x[row], y[row]).statistic
        assert value == pytest.approx(expected, abs=1e-12) or (
            math.isnan(value) and math.isnan(expected))
    # A jackknife sample (one point left out) as scipy's BCa passes it.
    left_out = np.delete(np.arange(24), 5)
    assert statistic(left_out[None])[0] == pytest.approx(
        stats.spearmanr(x[left_out], y[left_out]).statistic, abs=1e-12)


def test_each_seed_resample_is_the_coefficient_of_the_cells_means_over_the_drawn_seeds():
    rng = np.random.default_rng(2)
    x = np.arange(10.0)
    values = -x[:, None] + rng.normal(0, 3, (10, 3))
    values[2, 1] = np.nan  # seed 1 of cell 2 did not finish
    values[7, [0, 2]] = np.nan  # cell 7 finished seed 1 only
    statistic = I.seed_means_spearman(x, values)
    for draw in rng.integers(0, 3, (60, 3)):
        # A seed drawn twice weighs twice; a cell none of whose drawn seeds finished
        # drops out.
        columns = values[:, draw]
        counted = np.isfinite(columns).sum(axis=1)
        means = np.where(counted > 0,
                         np.nansum(columns, axis=1) / np.maximum(counted, 1), np.nan)
        ok = np.isfinite(means)
        expected = stats.spearmanr(x[ok], means[ok]).statistic
        assert statistic(draw[None])[0] == pytest.approx(expected, abs=1e-12)


def _bivariate(rng, n: int, r: float) -> tuple[np.ndarray, np.ndarray]:
    z = rng.standard_normal((n, 2))
    return z[:, 0], r * z[:, 0] + math.sqrt(1 - r * r) * z[:, 1]


def test_the_interval_over_cells_covers_the_true_coefficient_at_about_its_nominal_rate():
    # For a bivariate normal with correlation r, Spearman's rho is (6/pi) asin(r/2).
    r, n, reps = 0.6, 30, 300
    truth = 6 / math.pi * math.asin(r / 2)
    rng = np.random.default_rng(20240611)
    covered = 0
    widths = []
    for rep in range(reps):
        x, y = _bivariate(rng, n, r)
        ci = I.cells_interval(x, y, confidence=0.95, n_resamples=999,
                              rng=I.make_rng((rep,)))
        assert ci.reason is None and ci.method.startswith("BCa")
        covered += ci.low <= truth <= ci.high
        widths.append(ci.high - ci.low)
    # Binomial SD of the rate at 300 repetitions: 0.013. A resampler that drew x and y
    # independently, that did not resample, or that did not re-rank fails this.
    assert 0.91 <= covered / reps <= 0.985, covered / reps
    assert 0.3 < np.median(widths) < 0.7


def test_permutation_pvalues_are_reproducible_per_test_and_follow_the_seed():
    # A weak trend, so that the Monte Carlo p-values are not all at their floor.
    frame = make_grid(*GRID, models=("a", "b"), rng_seed=11,
                      accuracy=lambda bs, lr, rng: 0.9 - 0.001 * math.log2(bs / lr)
                      + rng.normal(0, 0.01))
    one = A.spearman_tests(frame)
    alone = A.spearman_tests(frame[frame["model"] == "a"])
    columns = ["p_perm", "p_perm_method", "ci_low", "ci_high"]
    pd.testing.assert_frame_equal(one[one["model"] == "a"][columns].reset_index(drop=True),
                                  alone[columns].reset_index(drop=True))
    other = A.spearman_tests(frame, seed=1)
    assert not np.allclose(_table(one, 3)["p_perm"], _table(other, 3)["p_perm"])


def test_permutation_pvalues_enumerate_small_groups_and_keep_the_level_by_monte_carlo():
    x = np.arange(6.0)
    y = np.array([0.3, 0.1, 0.4, 0.2, 0.6, 0.5])
    p, method = I.permutation_pvalue(x, y)
    assert method == "exact (720 permutations)"
    assert p == pytest.approx(A.exact_spearman_pvalue(x, y), abs=1e-12)
    # Four distinct values: the best ranking in either direction, 2 of 24 pairings.
    assert I.smallest_pvalue(np.arange(4.0)) == pytest.approx(2 / 24)
    assert I.smallest_pvalue(np.arange(20.0), permutations=999) == pytest.approx(1 / 1000)
    # Monte Carlo: (1 + hits) / (1 + B), close to scipy's permutation test.
    x, y = np.arange(20.0), np.random.default_rng(2).normal(size=20) - 0.05 * np.arange(20)
    p, method = I.permutation_pvalue(x, y, 9999, I.make_rng((1,)))
    expected = stats.permutation_test((y,), lambda v: stats.spearmanr(x, v).statistic,
                                      permutation_type="pairings", n_resamples=9999,
                                      rng=np.random.default_rng(1)).pvalue
    assert method == "monte-carlo (9999 permutations)"
    assert p == pytest.approx(expected, abs=0.015) and p >= 1 / 10000


def test_the_grid_permutation_relabels_rows_and_columns_and_enumerates_small_grids():
    # A 3 x 3 grid: 3! x 3! = 36 relabellings, enumerated; each moves the ratio's values
    # among the cells (rows by batch size, columns by learning rate).
    bs, lr = np.array([16.0, 32, 64]), np.array([0.05, 0.1, 0.2])
    x = bs[:, None] / lr[None, :]
    y = -np.log(x) + np.array([[0.3, -0.2, 0.1], [0.0, 0.4, -0.3], [0.2, -0.1, 0.0]])
    p, method = I.grid_permutation_pvalue(x, y)
    observed = abs(stats.spearmanr(x.ravel(), y.ravel()).statistic)
    hits = [abs(stats.spearmanr(x[np.ix_(r, c)].ravel(), y.ravel()).statistic) >=
            observed - 1e-12
            for r in itertools.permutations(range(3)) for c in itertools.permutations(range(3))]
    assert method == "exact (36 permutations of rows and columns)"
    assert p == pytest.approx(np.mean(hits), abs=1e-12)
    # A missing cell leaves the design's x everywhere and drops the cell.
    y[1, 1] = np.nan
    p_missing, _ = I.grid_permutation_pvalue(x, y)
    ok = np.isfinite(y.ravel())
    observed = abs(stats.spearmanr(x.ravel()[ok], y.ravel()[ok]).statistic)
    hits = [abs(stats.spearmanr(x[np.ix_(r, c)].ravel()[ok], y.ravel()[ok]).statistic) >=
            observed - 1e-12
            for r in itertools.permutations(range(3)) for c in itertools.permutations(range(3))]
    assert p_missing == pytest.approx(np.mean(hits), abs=1e-12)


def test_benjamini_yekutieli_is_scipys_and_table_3_is_one_family_across_grids():
    p = [0.001, 0.01, 0.02, 0.04, float("nan")]
    assert I.benjamini_yekutieli(p)[:4] == pytest.approx(
        stats.false_discovery_control([0.001, 0.01, 0.02, 0.04], method="by"))
    frame = make_grid(*GRID, models=("a", "b"), datasets=("c", "d"))
    tests = A.spearman_tests(frame)
    t3 = _table(tests, 3)
    assert len(t3) == 4 and (t3["family"] == "the table: every grid's Table 3").all()
    assert t3["p_holm"].to_numpy() == pytest.approx(I.holm(t3["p_perm"].to_numpy()))
    assert t3["p_by"].to_numpy() == pytest.approx(
        I.benjamini_yekutieli(t3["p_perm"].to_numpy()))
    one = _table(tests, 1)
    one = one[(one["model"] == "a") & (one["dataset"] == "c")]
    assert (one["family"] == "the grid's table").all()
    assert one["p_bh"].to_numpy() == pytest.approx(I.benjamini_hochberg(one["p_perm"]))


# --------------------------------------------------------------------------- seeds


def _cell_effect(bs: int, lr: float) -> float:
    """What a cell does whatever the seed (its own quirk), the same for all its runs."""
    return float(np.random.default_rng([bs, round(lr * 1e4)]).normal(0, 0.02))


def test_a_multi_seed_frame_is_tested_on_cell_means_where_pooling_overstated_p():
    # A weak trend, cells that differ by more than the trend, runs of one cell that
    # nearly agree: pooling the 3 runs of each cell as 75 independent points (the old
    # test) counts every cell three times and calls the trend significant; the 25
    # cells' means do not.
    frame = make_grid(*GRID, seeds=(0, 1, 2), rng_seed=3,
                      accuracy=lambda bs, lr, rng: 0.8 - 0.002 * math.log2(bs / lr)
                      + _cell_effect(bs, lr) + rng.normal(0, 0.002))
    t3 = _table(A.spearman_tests(frame, alpha=0.005), 3).iloc[0]
    pooled = stats.spearmanr(frame["ratio"], frame["test_accuracy"])
    means = frame.groupby(["batch_size", "learning_rate"])["test_accuracy"].mean()
    ratio = [bs / lr for bs, lr in means.index]
    expected = stats.spearmanr(ratio, means.to_numpy())
    assert (t3["n"], t3["n_runs"], t3["n_seeds"]) == (25, 75, 3)
    assert t3["scc"] == pytest.approx(expected.statistic, abs=1e-12)
    assert t3["p_value"] == pytest.approx(expected.pvalue, rel=1e-9)
    assert pooled.pvalue < 0.005 <= t3["p_value"], (pooled.pvalue, t3["p_value"])
    assert not t3["significant"]


def test_each_seed_alone_gives_its_own_tables_and_their_spread():
    frame = make_grid(*GRID, seeds=(0, 1, 2), rng_seed=4)
    tests = A.spearman_tests(frame, pvalue="asymptotic")
    alone = A.seed_tests(frame, pvalue="asymptotic")
    assert sorted(alone["seed"].unique()) == [0, 1, 2] and len(alone) == 3 * len(tests)
    for seed in (0, 1, 2):
        runs = frame[frame["seed"] == seed]
        row = _table(alone[alone["seed"] == seed], 3).iloc[0]
        expected = stats.spearmanr(runs["ratio"], runs["test_accuracy"])
        assert (row["scc"], row["n"]) == (pytest.approx(expected.statistic), 25)
        assert row["p_value"] == pytest.approx(expected.pvalue)
    for row in tests.itertuples():
        same = alone[(alone["table"] == row.table)
                     & ((alone["group_value"] == row.group_value) | (row.table == 3))]
        assert len(same) == 3
        assert (row.seed_scc_min, row.seed_scc_max) == pytest.approx(
            (same["scc"].min(), same["scc"].max()))
        assert row.seed_scc_sd == pytest.approx(same["scc"].std()) and row.seeds_tested == 3


def test_seed_summary_gives_mean_sd_and_n_of_every_metric_over_seeds():
    frame = make_grid([16, 32], [0.1], seeds=(0, 1, 2))
    frame.loc[(frame["batch_size"] == 32) & (frame["seed"] == 2), "status"] = "failed"
    summary = A.seed_summary(frame).set_index(["metric", "batch_size"])
    runs = frame[frame["batch_size"] == 16]["test_accuracy"]
    row = summary.loc[("test_accuracy", 16)]
    assert (row["n"], row["mean"], row["sd"]) == (3, pytest.approx(runs.mean()),
                                                   pytest.approx(runs.std(ddof=1)))
    assert summary.loc[("test_accuracy", 32), "n"] == 2  # the failed seed is not counted
    assert set(summary.index.get_level_values("metric")) == set(A.METRICS)
    assert [s for s, _ in row["values"]] == [0, 1, 2]


def _jackknife_by_hand(x, values, confidence=0.95):
    """rho of the means over all seeds +- t(k-1) x the jackknife SE of the coefficients
    that leave one seed out, computed with scipy alone."""
    k = values.shape[1]
    full = stats.spearmanr(x, values.mean(axis=1)).statistic
    left = np.array([stats.spearmanr(x, np.delete(values, i, axis=1).mean(axis=1)).statistic
                     for i in range(k)])
    se = math.sqrt((k - 1) / k * np.sum((left - left.mean()) ** 2))
    half = stats.t.ppf(0.5 + confidence / 2, k - 1) * se
    return max(-1.0, full - half), min(1.0, full + half)


def test_the_interval_is_the_jackknife_over_seeds_with_t_k_minus_1():
    frame = make_grid(*GRID, seeds=(0, 1, 2, 3), rng_seed=5,
                      accuracy=lambda bs, lr, rng: 0.8 - 0.01 * math.log2(bs / lr)
                      + rng.normal(0, 0.02))
    t3 = _table(A.spearman_tests(frame), 3).iloc[0]
    values = frame.pivot_table(index=["batch_size", "learning_rate"], columns="seed",
                               values="test_accuracy")
    ratio = np.array([bs / lr for bs, lr in values.index])
    low, high = _jackknife_by_hand(ratio, values.to_numpy())
    assert (t3["ci_low"], t3["ci_high"]) == (pytest.approx(low, abs=1e-12),
                                             pytest.approx(high, abs=1e-12))
    assert t3["ci_method"] == "jackknife over 4 seeds, t(3)" and t3["ci_reason"] is None
    # Seeds that agree exactly leave no seed noise: the interval is the coefficient.
    same = frame.copy()
    same["test_accuracy"] = same.groupby(["batch_size", "learning_rate"])[
        "test_accuracy"].transform("first")
    t3 = _table(A.spearman_tests(same), 3).iloc[0]
    assert t3["ci_low"] == t3["ci_high"] == pytest.approx(t3["scc"])


def test_two_seeds_give_their_range_and_never_an_interval():
    frame = make_grid(*GRID, seeds=(0, 1), rng_seed=5,
                      accuracy=lambda bs, lr, rng: 0.8 - 0.01 * math.log2(bs / lr)
                      + rng.normal(0, 0.02))
    tests = A.spearman_tests(frame)
    tested = tests[tests["reason"].isna()]
    assert tested["ci_low"].isna().all() and tested["slope_low"].isna().all()
    assert set(tested["ci_reason"]) == {
        "two seeds: the range of their coefficients, not an interval (it needs 3 or more "
        "seeds)"}
    t3 = _table(tests, 3).iloc[0]
    each = [stats.spearmanr(frame.loc[frame["seed"] == s, "ratio"],
                            frame.loc[frame["seed"] == s, "test_accuracy"]).statistic
            for s in (0, 1)]
    assert (t3["seed_scc_min"], t3["seed_scc_max"]) == pytest.approx((min(each), max(each)))


def test_one_seed_keeps_the_papers_test_and_gives_a_reason_instead_of_an_interval():
    frame = make_grid(*GRID)
    tests = A.spearman_tests(frame, pvalue="asymptotic")
    tested = tests[tests["reason"].isna()]
    assert tested["ci_low"].isna().all() and tested["ci_high"].isna().all()
    assert set(tested["ci_reason"]) == {
        "one seed: seed noise cannot be measured, so no interval (it needs 3 or more seeds)"}
    t3 = _table(tests, 3).iloc[0]
    expected = stats.spearmanr(frame["ratio"], frame["test_accuracy"])
    assert (t3["scc"], t3["p_value"]) == (pytest.approx(expected.statistic, abs=1e-12),
                                          pytest.approx(expected.pvalue, rel=1e-9))
    assert (t3["n"], t3["n_runs"], t3["n_seeds"]) == (25, 25, 1)
    assert math.isnan(t3["seed_scc_sd"]) and t3["seed_scc_min"] == t3["scc"]


def test_groups_too_small_for_an_interval_get_a_reason_and_cannot_reach_alpha():
    frame = make_grid([16, 32, 64, 128], [0.025, 0.05, 0.1, 0.2], seeds=(0, 1, 2))
    tests = A.spearman_tests(frame)
    small = tests[tests["table"] != 3]
    assert small["ci_low"].isna().all()
    assert set(small["ci_reason"]) == {"fewer than 8 cells for an interval (n=4)"}
    # Four cells: the smallest p-value of their permutation test is 2/24, never < 0.005.
    assert small["min_p"].to_numpy() == pytest.approx(2 / 24)
    assert not small["can_reach"].any()
    assert not small["significant"].any()
    t3 = _table(tests, 3).iloc[0]
    assert t3["ci_low"] <= t3["scc"] <= t3["ci_high"] and t3["ci_reason"] is None
    assert t3["can_reach"] and t3["min_p"] == pytest.approx(2 / 576)
    fewer = A.spearman_tests(frame, min_interval=4)
    assert fewer["ci_low"].notna().all()
    # A row without a coefficient has no interval and says why.
    frame.loc[frame["learning_rate"] == 0.2, "test_accuracy"] = 0.5
    row = _table(A.spearman_tests(frame), 1).set_index("group_value").loc[0.2]
    assert row["ci_reason"] == "no coefficient (metric is constant)"
    assert row["can_reach"] is None


def test_a_perfect_ranking_has_a_degenerate_interval_not_a_missing_one():
    frame = make_grid([16 * i for i in range(1, 9)], [0.05, 0.1, 0.2], seeds=(0, 1, 2),
                      accuracy=lambda bs, lr, rng: 1.0 - bs / 1000 + lr / 10)
    t1 = _table(A.spearman_tests(frame), 1)  # 8 cells per group
    assert t1["scc"].to_numpy() == pytest.approx(-1.0)
    assert t1["ci_low"].to_numpy() == pytest.approx(-1.0)
    assert t1["ci_high"].to_numpy() == pytest.approx(-1.0)


# --------------------------------------------------------------------------- effect size


def test_the_theil_sen_slope_recovers_a_known_slope_per_doubling():
    # 1.5 accuracy points lost per doubling of the ratio, exactly: the slope against
    # log2(batch size) is -1.5 points, against log2(learning rate) +1.5.
    frame = make_grid(*GRID, accuracy=lambda bs, lr, rng: 0.9 - 0.015 * math.log2(bs / lr))
    tests = A.spearman_tests(frame)
    assert _table(tests, 3)["slope"].iloc[0] == pytest.approx(-0.015, abs=1e-9)
    assert _table(tests, 1)["slope"].to_numpy() == pytest.approx(-0.015, abs=1e-9)
    assert _table(tests, 2)["slope"].to_numpy() == pytest.approx(0.015, abs=1e-9)
    noisy = make_grid(*GRID, rng_seed=6, seeds=(0, 1, 2),
                      accuracy=lambda bs, lr, rng: 0.9 - 0.015 * math.log2(bs / lr)
                      + rng.normal(0, 0.005))
    t3 = _table(A.spearman_tests(noisy), 3).iloc[0]
    assert t3["slope"] == pytest.approx(-0.015, abs=0.002)
    # Its interval: the jackknife over seeds of the Theil-Sen slope of the cells' means.
    values = noisy.pivot_table(index=["batch_size", "learning_rate"], columns="seed",
                               values="test_accuracy").to_numpy()
    x = np.log2([bs / lr for bs, lr in noisy.groupby(["batch_size", "learning_rate"]).groups])
    slope = stats.theilslopes(values.mean(axis=1), x).slope
    left = np.array([stats.theilslopes(np.delete(values, i, axis=1).mean(axis=1), x).slope
                     for i in range(3)])
    half = stats.t.ppf(0.975, 2) * math.sqrt(2 / 3 * np.sum((left - left.mean()) ** 2))
    assert (t3["slope"], t3["slope_low"], t3["slope_high"]) == pytest.approx(
        (slope, slope - half, slope + half))


# --------------------------------------------------------------------------- noise floor


def test_the_noise_floor_is_a_one_way_anova_across_cells_with_its_icc():
    frame = make_grid([16, 32, 64], [0.1, 0.2], seeds=(0, 1, 2), rng_seed=9,
                      accuracy=lambda bs, lr, rng: 0.9 - bs / 1000 + rng.normal(0, 0.005))
    row = A.noise_floor(frame).iloc[0]
    groups = [g["test_accuracy"].to_numpy()
              for _, g in frame.groupby(["batch_size", "learning_rate"])]
    expected = stats.f_oneway(*groups)
    assert (row["anova_f"], row["anova_p"]) == (pytest.approx(expected.statistic),
                                                pytest.approx(expected.pvalue))
    assert (row["anova_df_cells"], row["anova_df_seeds"]) == (5, 12)
    # ICC(1) with three runs per cell: (MSB - MSW) / (MSB + 2 MSW).
    grand = frame["test_accuracy"].mean()
    msb = 3 * sum((g.mean() - grand) ** 2 for g in groups) / 5
    msw = sum(((g - g.mean()) ** 2).sum() for g in groups) / 12
    assert row["icc"] == pytest.approx((msb - msw) / (msb + 2 * msw))
    assert row["seed_sd"] == pytest.approx(math.sqrt(msw))
    assert row["above_noise"] and "The cells differ by more than seed noise" in row["summary"]
    assert f"intraclass correlation {row['icc']:.2f}" in row["summary"]
    # Cells that differ by seed noise alone.
    frame["test_accuracy"] = 0.9 + np.random.default_rng(11).normal(0, 0.005, len(frame))
    row = A.noise_floor(frame).iloc[0]
    assert not row["above_noise"] and "do not differ by more than seed noise" in row["summary"]


def test_with_one_seed_the_noise_floor_says_it_cannot_be_measured():
    row = A.noise_floor(make_grid([16, 32, 64], [0.1, 0.2])).iloc[0]
    assert math.isnan(row["seed_sd"]) and row["n_replicated"] == 0
    assert row["summary"].startswith("One seed per cell, so the seed-to-seed noise")


def test_the_premise_checks_correlations_use_the_cells_means_over_seeds():
    frame = make_grid(*GRID, seeds=(0, 1), rng_seed=7)
    frame["train_eval_loss"] = 1e-4 * frame["ratio"] * np.where(frame["seed"] == 0, 1.0, 3.0)
    row = A.premise_check(frame).iloc[0]
    means = frame.groupby(["batch_size", "learning_rate"])[["train_eval_loss",
                                                            "test_accuracy"]].mean()
    ratio = [bs / lr for bs, lr in means.index]
    assert row["loss_ratio_scc"] == pytest.approx(
        stats.spearmanr(ratio, means["train_eval_loss"]).statistic)
    expected = stats.spearmanr(ratio, means["test_accuracy"])
    assert row["metric_ratio_scc"] == pytest.approx(expected.statistic)
    # Its p-value permutes the grid's rows and columns (999 draws: at least 1/1000).
    assert 1 / 1000 <= row["metric_ratio_p"] <= 0.01
    assert row["n"] == 25  # cells: the premise is about every cell of the grid


def test_an_interval_over_seeds_whose_resamples_often_lack_a_coefficient_gives_a_reason():
    # Seed 1 reached the same accuracy in every cell: the quarter of the resamples that
    # draw it twice have tied means and no coefficient, too many to leave out.
    x = np.arange(6.0)
    values = np.column_stack([0.9 - 0.01 * x + [0.001, -0.002, 0.003, 0, 0.001, -0.001],
                              np.full(6, 0.95)])
    ci = I.seeds_interval(x, values, rng=I.make_rng((3,)))
    assert math.isnan(ci.low) and math.isnan(ci.high)
    share = int(ci.reason.split("%")[0])
    assert 20 <= share <= 30, ci.reason
    assert ci.reason.endswith("of the resamples over 2 seeds have cell means that all tie "
                              "(no coefficient)")


# --------------------------------------------------------------------------- the ratio


def _ratio_frame(seeds, beta: float = 0.012, rng_seed: int = 12, extra_bs: float = 0.0):
    """Accuracy that depends on log2(batch size / learning rate) alone (beta_BS =
    -beta_LR = -beta), unless ``extra_bs`` adds to the batch size's coefficient; each
    seed lifts the grid (intercept), its rows (seed x BS) and its columns (seed x LR)."""
    rng = np.random.default_rng(rng_seed)
    effects = {s: (rng.normal(0, 0.004), {b: rng.normal(0, 0.003) for b in GRID[0]},
                   {lr: rng.normal(0, 0.003) for lr in GRID[1]}) for s in seeds}

    def accuracy(bs, lr, rng, state={"i": 0}):  # noqa: B006 (the run's seed, in order)
        seed = seeds[state["i"] % len(seeds)]
        state["i"] += 1
        lift, rows, cols = effects[seed]
        return (0.9 - beta * math.log2(bs / lr) + extra_bs * math.log2(bs) + lift
                + rows[bs] + cols[lr] + rng.normal(0, 0.002))

    return make_grid(*GRID, seeds=tuple(seeds), rng_seed=rng_seed, accuracy=accuracy)


@pytest.mark.filterwarnings("ignore")  # statsmodels' own, on the direct fit
def test_the_ratio_model_is_statsmodels_mixedlm_with_seed_by_row_and_column_components():
    import statsmodels.formula.api as smf

    frame = _ratio_frame((0, 1, 2, 3))
    row = A.ratio_model(frame).iloc[0]
    data = frame.assign(lbs=np.log2(frame["batch_size"]), llr=np.log2(frame["learning_rate"]),
                        y=(frame["test_accuracy"] - frame["test_accuracy"].mean())
                        / frame["test_accuracy"].std(ddof=0))
    direct = smf.mixedlm("y ~ lbs + llr", data, groups="seed", re_formula="1",
                         vc_formula={"bs": "0 + C(batch_size)", "lr": "0 + C(learning_rate)"}
                         ).fit(reml=True, method=["lbfgs", "powell"])
    scale = frame["test_accuracy"].std(ddof=0)
    assert row["beta_bs"] == pytest.approx(direct.params["lbs"] * scale, rel=1e-4)
    assert row["beta_lr"] == pytest.approx(direct.params["llr"] * scale, rel=1e-4)
    # Intervals and the test on statsmodels' standard errors, with t quantiles on the
    # containment degrees of freedom: 4 seeds x (5 batch sizes - 1) - 1 = 15.
    assert "t on 15 / 15 df" in row["method"]
    half = stats.t.ppf(0.975, 15) * direct.bse["lbs"] * scale
    assert (row["beta_bs_low"], row["beta_bs_high"]) == pytest.approx(
        (row["beta_bs"] - half, row["beta_bs"] + half), rel=1e-3)
    cov = direct.cov_params().loc[["lbs", "llr"], ["lbs", "llr"]].to_numpy()
    t = (direct.params["lbs"] + direct.params["llr"]) / math.sqrt(cov.sum())
    assert row["p_ratio"] == pytest.approx(2 * stats.t.sf(abs(t), 15), rel=1e-3, abs=1e-6)
    # The truth: beta_BS = -beta_LR = -1.2 points per doubling; only the ratio matters.
    assert row["beta_bs_low"] < -0.012 < row["beta_bs_high"]
    assert row["beta_lr_low"] < 0.012 < row["beta_lr_high"]
    assert row["p_ratio"] > 0.05 and row["converged"]
    assert row["method"].startswith("MixedLM (REML): seed intercept + seed x BS and seed x LR")
    assert float(direct.t_test(np.array([[0.0, 1.0, 1.0]])).pvalue) < row["p_ratio"]  # z
    assert "consistent with only the ratio mattering" in row["summary"]


@pytest.mark.filterwarnings("ignore")  # statsmodels' own, on the direct fit
def test_the_ratio_model_rejects_when_batch_size_acts_beyond_the_ratio_and_fits_one_seed():
    import statsmodels.formula.api as smf

    frame = _ratio_frame((0, 1, 2), extra_bs=0.008)
    row = A.ratio_model(frame).iloc[0]
    assert row["p_ratio"] < 0.001 and row["beta_sum_low"] < 0.008 < row["beta_sum_high"]
    assert "do not act only through their ratio" in row["summary"]
    # One seed: its rows' and columns' effects as variance components (the seed the
    # only group, no intercept variance), t on rows - 2 = 3 df.
    one = frame[frame["seed"] == 0]
    row = A.ratio_model(one).iloc[0]
    data = one.assign(lbs=np.log2(one["batch_size"]), llr=np.log2(one["learning_rate"]),
                      y=(one["test_accuracy"] - one["test_accuracy"].mean())
                      / one["test_accuracy"].std(ddof=0))
    direct = smf.mixedlm("y ~ lbs + llr", data, groups="seed", re_formula="0",
                         vc_formula={"bs": "0 + C(batch_size)", "lr": "0 + C(learning_rate)"}
                         ).fit(reml=True, method=["lbfgs", "powell"])
    scale = one["test_accuracy"].std(ddof=0)
    assert row["method"] == ("MixedLM (REML): seed x BS and seed x LR variance components; "
                             "t on 3 / 3 df")
    assert row["beta_bs"] == pytest.approx(direct.params["lbs"] * scale, rel=1e-4)
    half = stats.t.ppf(0.975, 3) * direct.bse["llr"] * scale
    assert (row["beta_lr_low"], row["beta_lr_high"]) == pytest.approx(
        (row["beta_lr"] - half, row["beta_lr"] + half), rel=1e-3)
    # OLS, which takes the cells as independent, stays available and is statsmodels'.
    fit = I.fit_ratio_model(one["test_accuracy"], np.log2(one["batch_size"]),
                            np.log2(one["learning_rate"]), one["seed"], one_seed="ols")
    ols = smf.ols("test_accuracy ~ np.log2(batch_size) + np.log2(learning_rate)", one).fit()
    assert fit.method == "OLS (one seed)"
    assert fit.beta_bs == pytest.approx(ols.params.iloc[1], rel=1e-9)
    assert (fit.beta_lr_low, fit.beta_lr_high) == pytest.approx(tuple(ols.conf_int().iloc[2]),
                                                                rel=1e-9)
    assert fit.p_ratio == pytest.approx(float(ols.t_test(
        "np.log2(batch_size) + np.log2(learning_rate) = 0").pvalue), rel=1e-9)
