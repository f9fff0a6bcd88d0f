"""kerasgen.measures without TensorFlow: the numerical methods against known answers, the
ranking against Jiang et al.'s definitions and scipy, steps and compute, the store's
``measures`` table, the report section and the catalogue's checks."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from kerasgen.measures import cost as C
from kerasgen.measures import numeric as N
from kerasgen.measures import rank as R
from kerasgen.measures import steps as S
from kerasgen.measures.catalogue import (
    DEFAULT_MEASURES,
    NETWORK_MEASURES,
    MeasureError,
    check_measure_names,
)
from kerasgen.store import Store, load_measure_rows, measure_keys, utc_now

# ---------------------------------------------------------------- numerical methods


def test_power_iteration_finds_the_largest_singular_value_of_a_matrix():
    a = np.random.default_rng(3).normal(size=(30, 20))
    sigma, info = N.power_iteration(lambda v: a @ v, lambda u: a.T @ u, (20,), iters=500,
                                    tol=1e-12)
    assert sigma == pytest.approx(np.linalg.norm(a, 2), rel=1e-8)
    assert info["converged"]


def _logistic(points, labels):
    """The mean logistic loss of a 2-parameter linear model and its gradient."""
    def loss_and_gradient(w):
        z = labels * (points @ w)
        loss = float(np.mean(np.logaddexp(0.0, -z)))
        grad = -(points * (labels / (1.0 + np.exp(z)))[:, None]).mean(axis=0)
        return loss, grad
    return loss_and_gradient


def test_eps_sharpness_ascent_reaches_the_maximum_a_grid_search_finds_in_two_dimensions():
    rng = np.random.default_rng(0)
    points, labels = rng.normal(size=(40, 2)), rng.choice([-1.0, 1.0], 40)
    f = _logistic(points, labels)
    w = np.array([0.7, -1.3])
    half = 0.05 * (np.abs(w) + 1.0)  # Keskar's box at epsilon = 0.05
    found = N.box_ascent(lambda d: f(w + d), half, steps=10)
    grid = [f(w + np.array([a, b]))[0] for a in np.linspace(-half[0], half[0], 201)
            for b in np.linspace(-half[1], half[1], 201)]
    assert found["base"] == pytest.approx(f(w)[0])
    assert found["max"] == pytest.approx(max(grid), rel=1e-9)
    assert np.all(np.abs(found["delta"]) <= half + 1e-15)


def test_adaptive_ascent_reaches_the_maximum_over_the_ellipse_found_by_a_dense_search():
    rng = np.random.default_rng(1)
    points, labels = rng.normal(size=(40, 2)), rng.choice([-1.0, 1.0], 40)
    f = _logistic(points, labels)
    w = np.array([1.5, 0.2])
    scale, rho = np.abs(w) + 0.01, 0.4
    found = N.ellipsoid_ascent(lambda d: f(w + d), scale, rho, steps=30)
    best = -np.inf
    for r in np.linspace(0, rho, 81):
        for angle in np.linspace(0, 2 * np.pi, 721):
            best = max(best, f(w + scale * r * np.array([np.cos(angle), np.sin(angle)]))[0])
    assert found["max"] == pytest.approx(best, rel=1e-5)
    assert np.linalg.norm(found["delta"] / scale) <= rho + 1e-12


def _quadratic(a, w0, base=0.3):
    """A loss with its minimum ``base`` at ``w0``: ``base + (w - w0)^T A (w - w0) / 2``."""
    return lambda w: base + 0.5 * float((w - w0) @ a @ (w - w0))


def test_pacbayes_sigma_on_a_quadratic_is_the_known_answer():
    # E[u^T A u] / 2 = sigma^2 tr(A) / 2 for u ~ N(0, sigma^2 I): the largest sigma with a
    # rise of at most t is sqrt(2 t / tr A).
    a = np.diag([4.0, 1.0, 0.25, 2.0, 9.0])
    w0 = np.array([1.0, -2.0, 0.5, 3.0, -0.1])
    sigma, info = N.pacbayes_sigma(_quadratic(a, w0), w0, target=0.1, samples=4000, steps=30)
    assert sigma == pytest.approx(math.sqrt(2 * 0.1 / np.trace(a)), rel=0.03)
    assert info["loss"] == pytest.approx(0.3)


def test_magnitude_aware_pacbayes_sigma_on_a_quadratic_is_the_known_answer():
    # u_i ~ N(0, sigma^2 w_i^2 + eps^2): E rise = (sigma^2 sum A_ii w_i^2 + eps^2 tr A) / 2.
    a = np.diag([4.0, 1.0, 0.25, 2.0, 9.0])
    w0 = np.array([1.0, -2.0, 0.5, 3.0, -0.1])
    eps, t = 0.05, 0.1
    sigma, _ = N.pacbayes_sigma(_quadratic(a, w0), w0, magnitude=True, target=t,
                                samples=4000, steps=30, epsilon=eps)
    expected = math.sqrt((2 * t - eps ** 2 * np.trace(a)) / np.sum(np.diag(a) * w0 ** 2))
    assert sigma == pytest.approx(expected, rel=0.03)


def test_largest_sigma_brackets_a_threshold_far_outside_its_start():
    sigma, info = N.largest_sigma(lambda s: s ** 2, 400.0, low=1e-4, high=1e-2, steps=40)
    assert sigma == pytest.approx(20.0, rel=1e-6) and sigma ** 2 <= 400.0


def test_gradient_noise_from_sums_is_the_definition_from_per_example_gradients():
    g = np.random.default_rng(2).normal(1.0, 2.0, size=(50, 7))
    out = N.gradient_noise(50, g.sum(0), float((g ** 2).sum()))
    trace = np.trace(np.cov(g.T, bias=True))
    assert out["trace_C"] == pytest.approx(trace, rel=1e-12)
    assert out["b_simple"] == pytest.approx(trace / np.sum(g.mean(0) ** 2), rel=1e-12)


# ---------------------------------------------------------------- ranking

def test_kendall_tau_is_scipys_tau_b_ties_included():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 5, 30).astype(float), rng.integers(0, 4, 30).astype(float)
        assert R.kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert math.isnan(R.kendall_tau([1, 1, 1], [1, 2, 3]))


def _frame_3x3x2():
    """A 3 x 3 grid with 2 seeds and no ties: the gap and a measure that tracks it
    imperfectly."""
    rng = np.random.default_rng(7)
    rows, cell = [], 0
    for bs, lr in itertools.product((16, 32, 64), (0.1, 0.2, 0.4)):
        cell += 1
        for seed in (0, 1):
            gap = 0.01 * math.log(bs / lr) + rng.normal(0, 0.01)
            value = gap + rng.normal(0, 0.01)
            rows.append({"study": "s", "model": "m", "dataset": "d", "batch_size": bs,
                         "learning_rate": lr, "seed": seed, "cell_id": 10 * cell + seed,
                         "gap": gap, "loss_gap": 2 * gap, "measure": "m1", "value": value})
    return pd.DataFrame(rows)


def _jiang_tau(pairs):
    """Jiang et al. (2020), eq. 3: the mean over ordered pairs of sign x sign."""
    total = sum(np.sign(a[0] - b[0]) * np.sign(a[1] - b[1])
                for a, b in itertools.permutations(pairs, 2))
    return total / (len(pairs) * (len(pairs) - 1))


def test_psi_and_tau_match_jiangs_definition_by_hand_and_scipy_on_a_3x3x2_frame():
    frame = _frame_3x3x2()
    assert frame["value"].nunique() == len(frame) and frame["gap"].nunique() == len(frame)
    psi = R.granulated_tau(frame)
    by_hand = {}
    for axis in ("batch_size", "learning_rate", "seed"):
        others = [a for a in ("batch_size", "learning_rate", "seed") if a != axis]
        taus = [_jiang_tau(list(zip(g["value"], g["gap"])))
                for _, g in frame.groupby(others)]
        by_hand[axis] = sum(taus) / len(taus)  # m_i groups: 3 x 2, 3 x 2, 3 x 3
        assert len(taus) == {"batch_size": 6, "learning_rate": 6, "seed": 9}[axis]
        assert psi[f"psi_{axis}"] == pytest.approx(by_hand[axis], abs=1e-12)
    assert psi["psi"] == pytest.approx(sum(by_hand.values()) / 3, abs=1e-12)
    ranking = R.rank_measures(frame)
    row = ranking[ranking["measure"] == "m1"].iloc[0]
    cells = frame.groupby(["batch_size", "learning_rate"])[["value", "gap"]].mean()
    assert row["tau"] == pytest.approx(stats.kendalltau(cells["value"], cells["gap"]).statistic)
    assert row["tau"] == pytest.approx(_jiang_tau(list(zip(cells["value"], cells["gap"]))))
    assert row["tau_p"] == pytest.approx(stats.kendalltau(cells["value"], cells["gap"]).pvalue)
    assert row["psi"] == pytest.approx(psi["psi"])
    assert row["n_cells"] == 9 and row["n_runs"] == 18 and row["n_seeds"] == 2


def _with_measures(frame, **measures):
    base = frame[frame["measure"] == "m1"].drop(columns=["measure", "value"])
    parts = [frame]
    for name, fn in measures.items():
        parts.append(base.assign(measure=name, value=fn(base)))
    return pd.concat(parts, ignore_index=True)


def test_a_measure_equal_to_the_gap_ranks_first_with_psi_one():
    frame = _with_measures(_frame_3x3x2(), exact=lambda b: b["gap"],
                           ratio=lambda b: b["batch_size"] / b["learning_rate"],
                           noise=lambda b: np.random.default_rng(1).normal(size=len(b)))
    ranking = R.rank_measures(frame)
    first = ranking.iloc[0]
    assert first["measure"] == "exact" and first["rank"] == 1
    assert first["psi"] == 1.0 and first["tau"] == 1.0 and first["tau_loss"] == 1.0
    assert first["psi_batch_size"] == first["psi_learning_rate"] == first["psi_seed"] == 1.0
    assert first["cmi"] == pytest.approx(1.0)  # V_m is V_gap: all of its information
    assert first["partial"] == 0.0 and first["partial_p"] == 1.0  # nothing left for the ratio
    ratio = ranking[ranking["measure"] == "ratio"].iloc[0]
    assert ratio["psi_seed"] == 0.0  # set by the grid: it cannot tell seeds apart
    assert ratio["cmi"] == pytest.approx(0.0)  # given (bs, lr) of both runs V_ratio is known
    sentence = R.verdict(ranking, "s", "m", "d")
    assert "best predictor of the gap is exact" in sentence
    assert "the ratio still says about the gap is not significant" in sentence


def test_the_interval_is_a_jackknife_over_seeds_with_three_seeds_and_missing_with_two():
    rng = np.random.default_rng(5)
    rows = []
    for bs, lr, seed in itertools.product((16, 32, 64), (0.1, 0.2), (0, 1, 2)):
        gap = 0.01 * math.log(bs / lr) + rng.normal(0, 0.01)
        rows.append({"study": "s", "model": "m", "dataset": "d", "batch_size": bs,
                     "learning_rate": lr, "seed": seed, "cell_id": len(rows), "gap": gap,
                     "loss_gap": gap, "measure": "m", "value": gap + rng.normal(0, 0.02)})
    frame = pd.DataFrame(rows)
    row = R.rank_measures(frame).iloc[0]
    leave_out = []
    for s in (0, 1, 2):
        c = frame[frame["seed"] != s].groupby(["batch_size", "learning_rate"])[["value", "gap"]].mean()
        leave_out.append(stats.kendalltau(c["value"], c["gap"]).statistic)
    se = math.sqrt(2 / 3 * sum((t - np.mean(leave_out)) ** 2 for t in leave_out))
    half = stats.t.ppf(0.975, 2) * se
    assert row["tau_low"] == pytest.approx(max(-1, row["tau"] - half))
    assert row["tau_high"] == pytest.approx(min(1, row["tau"] + half))
    assert row["interval"].startswith("jackknife over 3 seeds, t(2)")
    two = R.rank_measures(frame[frame["seed"] < 2]).iloc[0]
    assert math.isnan(two["tau_low"]) and "needs 3 or more" in two["interval"]
    assert two["seed_tau_min"] <= two["seed_tau_max"]


def test_partial_rank_correlation_is_the_precision_matrix_formula_on_ranks():
    rng = np.random.default_rng(9)
    z = rng.normal(size=60)
    x, y = z + rng.normal(size=60), z + 0.5 * rng.normal(size=60) + 0.3 * rng.normal(size=60)
    r, p = R.partial_rank_correlation(x, y, z)
    ranks = np.column_stack([stats.rankdata(v) for v in (x, y, z)])
    prec = np.linalg.inv(np.corrcoef(ranks.T))
    expected = -prec[0, 1] / math.sqrt(prec[0, 0] * prec[1, 1])
    assert r == pytest.approx(expected, abs=1e-12)
    t = expected * math.sqrt(57 / (1 - expected ** 2))
    assert p == pytest.approx(2 * stats.t.sf(abs(t), 57))


def test_unconditional_cmi_is_the_mutual_information_of_the_pair_signs_over_their_entropy():
    from sklearn.metrics import mutual_info_score

    frame = _frame_3x3x2()
    out = R.conditional_mi(frame)
    m, g = frame["value"].to_numpy(), frame["gap"].to_numpy()
    i, j = np.where(~np.eye(len(m), dtype=bool))
    vm, vg = np.sign(m[i] - m[j]), np.sign(g[i] - g[j])
    p = np.bincount((vg > 0).astype(int)) / len(vg)
    expected = mutual_info_score(vm, vg) / float(-(p * np.log(p)).sum())
    assert out["by_axes"][()] == pytest.approx(expected, abs=1e-12)
    assert out["cmi"] <= out["cmi_unconditional"] + 1e-12


def test_ranking_a_whole_demo_size_frame_is_fast_enough_for_the_dashboard():
    import time

    rng = np.random.default_rng(0)
    rows = []
    for model, bs, lr, seed in itertools.product(("a", "b"), (16, 32, 64, 128),
                                                 (0.025, 0.05, 0.1, 0.2), (0, 1)):
        gap = rng.normal()
        for k in range(20):
            rows.append({"study": "s", "model": model, "dataset": "d", "batch_size": bs,
                         "learning_rate": lr, "seed": seed, "cell_id": len(rows) // 20,
                         "gap": gap, "loss_gap": gap, "measure": f"m{k}",
                         "value": gap + rng.normal()})
    started = time.perf_counter()
    ranking = R.rank_measures(pd.DataFrame(rows))
    assert len(ranking) == 40 and time.perf_counter() - started < 20


# ---------------------------------------------------------------- steps and compute

def test_steps_per_epoch_keeps_or_drops_the_last_partial_batch():
    assert S.steps_per_epoch(1347, 16) == 85 and S.steps_per_epoch(1347, 16, True) == 84
    assert S.steps_per_epoch(64, 32) == 2


def _steps_store(path, accuracy, epochs=12):
    """A store of synthetic-8-1-10-64 runs (64 training images, so 4, 3 and 2 steps per
    epoch at batch sizes 16, 24 and 32) x 3 learning rates, ``epochs`` epochs each;
    ``accuracy(bs, lr, steps)`` is the test accuracy after ``steps`` SGD steps."""
    cells = [{"model": "resnet8", "dataset": "synthetic-8-1-10-64", "batch_size": bs,
              "learning_rate": lr, "seed": 0}
             for bs in (16, 24, 32) for lr in (0.05, 0.1, 0.2)]
    with Store(path) as store:
        store.create_study("st", {"name": "st", "training": {"last_batch": "keep"}}, cells)
        rows = store.conn.execute("SELECT cell_id, batch_size, learning_rate FROM cells").fetchall()
        for cell_id, bs, lr in rows:
            for epoch in range(epochs):
                steps = (epoch + 1) * -(-64 // bs)
                acc = accuracy(bs, lr, steps)
                store.record_epoch(cell_id, epoch, {
                    "train_loss": 0.5 / (epoch + 1), "train_accuracy": 0.9,
                    "train_eval_loss": 0.1, "train_eval_accuracy": 1.0,
                    "test_loss": 1 - acc, "test_accuracy": acc})
            store.finish_cell(cell_id, "done")
    return path


def _jitter(bs, lr):
    """A deterministic wobble of at most 4e-6, so no two cells tie exactly."""
    return 1e-6 * ((bs * 7 + int(lr * 100) * 13) % 5)


def test_matched_steps_reads_every_run_at_the_shortest_runs_step_count(tmp_path):
    from kerasgen.store import load_epochs, load_results

    db = _steps_store(tmp_path / "s.db", lambda bs, lr, steps: 0.5 + 0.01 * steps)
    results, epochs = load_results(db), load_epochs(db)
    out = S.matched_accuracy(results, epochs)
    # batch 32 trains 12 x 2 = 24 steps, the fewest: everyone is read at 24 steps
    assert set(out["budget"]) == {24.0}
    assert np.allclose(out["matched_accuracy"], 0.74)
    bs = results.set_index("cell_id")["batch_size"]
    epoch = dict(zip(out["cell_id"], out["matched_epoch"]))
    assert {bs[c]: e for c, e in epoch.items()} == {16: 6.0, 24: 8.0, 32: 12.0}
    # between evaluations, linear in steps; before a run's first evaluation, nothing
    early = S.matched_accuracy(results, epochs, budget=3.0)
    acc = {bs[c]: a for c, a in zip(early["cell_id"], early["matched_accuracy"])}
    assert math.isnan(acc[16]) and acc[24] == pytest.approx(0.53) and acc[32] == pytest.approx(0.53)
    lr_steps = S.matched_accuracy(results, epochs, by="lr_steps")
    assert np.allclose(lr_steps["budget"], 0.05 * 24)
    assert lr_steps["matched_accuracy"].notna().all()


def test_a_ratio_effect_that_is_only_fewer_steps_does_not_survive_matching(tmp_path):
    from kerasgen.store import load_epochs, load_results

    # Accuracy grows with learning rate x steps alone: after the same epochs a larger
    # batch has taken fewer steps, so at the kept epoch accuracy falls with the ratio.
    db = _steps_store(tmp_path / "s.db",
                      lambda bs, lr, steps: 0.5 + 0.01 * steps * lr + _jitter(bs, lr))
    table = S.matched_table3(load_results(db), load_epochs(db), alpha=0.05)
    rows = table[table["variable"] == "ratio"].set_index("accuracy")
    assert rows.loc["kept epoch", "significant"] and rows.loc["kept epoch", "scc"] < -0.8
    assert rows.loc["matched lr × steps", "n"] == 9
    assert rows.loc["matched lr × steps", "survives"] is False


def test_a_ratio_effect_beyond_the_steps_survives_matching(tmp_path):
    from kerasgen.store import load_epochs, load_results

    db = _steps_store(tmp_path / "s.db",
                      lambda bs, lr, steps: 0.9 - 0.001 * bs / lr + 1e-5 * steps + _jitter(bs, lr))
    table = S.matched_table3(load_results(db), load_epochs(db), alpha=0.05)
    rows = table[table["variable"] == "ratio"].set_index("accuracy")
    assert rows.loc["kept epoch", "significant"] and rows.loc["kept epoch", "scc"] < 0
    assert rows.loc["matched steps", "survives"] is True
    assert rows.loc["matched lr × steps", "survives"] is True


def test_steps_to_target_is_the_first_epoch_reaching_the_grids_common_accuracy(tmp_path):
    from kerasgen.store import load_epochs, load_results

    db = _steps_store(tmp_path / "s.db", lambda bs, lr, steps: 0.5 + 0.01 * steps)
    out = S.steps_to_target(load_results(db), load_epochs(db))
    # The common target is the batch-32 runs' best, 0.74 after 24 steps.
    assert out["target"].iloc[0] == pytest.approx(0.74)
    bs = load_results(db).set_index("cell_id")["batch_size"]
    for r in out.itertuples():
        assert r.epochs_to_target == {16: 6, 24: 8, 32: 12}[bs[r.cell_id]]
        assert r.steps_to_target == 24


# ---------------------------------------------------------------- the store and the frame

def _measure_row(cell_id, measure, value, key="k1", seconds=1.0):
    return {"cell_id": cell_id, "measure": measure, "settings_key": key, "value": value,
            "estimator": "exact", "settings_json": "{}", "details_json": "{}",
            "weights": "final", "weights_epoch": 2, "kept_epoch": 1, "seconds": seconds,
            "computed_at": utc_now()}


def test_measure_rows_are_written_once_per_run_measure_and_settings(tmp_path):
    db = _steps_store(tmp_path / "s.db", lambda bs, lr, steps: 0.6)
    with Store(db) as store:
        assert store.save_measure_rows([_measure_row(1, "sum_fro", 3.0)]) == 1
        # another process got there first: the stored value stays
        assert store.save_measure_rows([_measure_row(1, "sum_fro", 99.0)]) == 0
        assert store.save_measure_rows([_measure_row(1, "sum_fro", 5.0, key="k2"),
                                        _measure_row(2, "b_simple", math.inf)]) == 2
    rows = load_measure_rows(db)
    assert len(rows) == 3 and set(rows["study"]) == {"st"}
    assert rows[(rows["cell_id"] == 1) & (rows["settings_key"] == "k1")]["value"].iloc[0] == 3.0
    assert rows[rows["measure"] == "b_simple"]["value"].isna().all()  # inf is not storable
    assert measure_keys(db) == {(1, "sum_fro", "k1"), (1, "sum_fro", "k2"), (2, "b_simple", "k1")}


def test_the_measure_frame_joins_stored_derived_and_reference_measures(tmp_path):
    db = _steps_store(tmp_path / "s.db", lambda bs, lr, steps: 0.5 + 0.01 * steps)
    with Store(db) as store:
        store.save_measure_rows([_measure_row(c, "sum_fro", float(c)) for c in range(1, 10)]
                                + [_measure_row(1, "hessian_top", 2.0, "a1"),
                                   _measure_row(1, "hessian_top", 3.0, "b2")])
    frame = R.measure_frame(db)
    names = set(frame["measure"])
    assert {"sum_fro", "ratio", "epochs_to_stop", "steps_to_stop", "train_loss_kept"} <= names
    assert {"hessian_top@a1", "hessian_top@b2"} <= names  # two settings: kept apart
    ratio = frame[frame["measure"] == "ratio"]
    assert np.allclose(ratio["value"], ratio["batch_size"] / ratio["learning_rate"])
    assert len(frame[frame["measure"] == "sum_fro"]) == 9
    assert frame["gap"].notna().all()


def test_epochs_to_stop_follows_the_studys_stop_rule(tmp_path):
    from kerasgen.store import load_epochs, load_results, load_studies

    db = _steps_store(tmp_path / "s.db", lambda bs, lr, steps: 0.6)
    with Store(db) as store, store.transaction() as conn:
        conn.execute("UPDATE studies SET spec_json = ?",
                     (json.dumps({"name": "st", "stop": {"rule": "train_loss",
                                                          "threshold": 0.2}}),))
    results = S.with_stop_thresholds(load_results(db), load_studies(db))
    out = S.store_measures(results, load_epochs(db))
    # train_loss = 0.5 / (epoch + 1): below 0.2 at the third epoch
    assert set(out[out["measure"] == "epochs_to_stop"]["value"]) == {3.0}


# ---------------------------------------------------------------- report, catalogue, cost

def test_the_report_section_ranks_names_the_best_predictor_and_matches_steps(tmp_path):
    from kerasgen.report.measures import render_measures_section, write_measure_figures

    db = _steps_store(tmp_path / "s.db",
                      lambda bs, lr, steps: 0.9 - 0.001 * bs / lr + 1e-5 * steps + _jitter(bs, lr))
    from kerasgen.store import load_results

    gaps = load_results(db).set_index("cell_id")["gap"]
    with Store(db) as store:
        store.save_measure_rows([_measure_row(int(c), "hessian_top", float(g) * 7 + 1)
                                 for c, g in gaps.items()]
                                + [_measure_row(int(c), "sum_fro", float(c % 4))
                                   for c in gaps.index])
    text = render_measures_section(db)
    assert "## Generalization measures" in text and "## Steps and compute" in text
    assert "The best predictor of the gap is λ\\_max(H) (Ψ = +1.00, τ = +1.00)" in text
    assert "| 1 | λ\\_max(H) | sharpness | +1.00 |" in text
    assert "ratio's effect at the kept epoch" in text and "survives matched" in text
    assert "Cost at paper size" in text and "resnet110 CPU s" in text
    paths = write_measure_figures(db, tmp_path / "figures")
    assert [p.name for p in paths] == ["measures_st_resnet8_synthetic-8-1-10-64.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_report_section_without_measures_says_how_to_compute_them(tmp_path):
    from kerasgen.report.measures import render_measures_section

    db = _steps_store(tmp_path / "s.db", lambda bs, lr, steps: 0.6 + 0.001 * bs)
    text = render_measures_section(db)
    assert "No measures computed yet: run `kerasgen measures --db" in text


def test_measure_names_are_checked_with_the_bad_name_in_the_message():
    assert check_measure_names(["default"]) == DEFAULT_MEASURES
    assert check_measure_names(["all"]) == NETWORK_MEASURES
    assert check_measure_names(["noise", "sum_fro"]) == ("sum_fro", "noise_trace", "b_simple",
                                                         "b_simple_init")
    with pytest.raises(MeasureError, match="unknown measure 'sharpnes'"):
        check_measure_names(["sharpnes"])
    with pytest.raises(MeasureError, match="'theorem1' is read from the bounds table"):
        check_measure_names(["theorem1"])


def test_model_cost_counts_the_papers_parameters_and_device_checks_flops():
    assert C.model_cost("resnet110")["params"] == 1_730_714
    assert C.model_cost("vgg19")["params"] == 20_040_522
    assert C.model_cost("resnet8", (8, 8, 1))["params"] == 77_754
    sys.path.insert(0, "scripts")
    try:
        from device_check import train_flops_per_image
    finally:
        sys.path.remove("scripts")
    for name in ("resnet110", "vgg19", "resnet20"):
        assert train_flops_per_image(name) == 6 * C.model_cost(name)["macs"]
    small, large = C.model_cost("resnet8", (8, 8, 1)), C.model_cost("resnet110")
    assert C.project_seconds("sum_fro", 1.0, small, large)["cpu"] == pytest.approx(
        1_730_714 / 77_754)
    assert C.project_seconds("hessian_top", 1.0, small, large)["cpu"] == pytest.approx(
        large["macs"] / small["macs"])


def test_the_ranking_modules_never_import_tensorflow():
    code = ("import sys; sys.path.insert(0, 'tests'); import helpers.no_tensorflow; "
            "import kerasgen, kerasgen.measures; kerasgen.rank_measures; "
            "import kerasgen.measures.rank, kerasgen.measures.steps, kerasgen.report.measures;"
            " print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"
