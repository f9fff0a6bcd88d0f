"""kerasgen.report.bounds on a store with fake ``bounds`` rows (no TensorFlow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from kerasgen.report import bounds as BR
from kerasgen.store import Store, utc_now

BATCH_SIZES = (16, 32, 64, 128)
LEARNING_RATES = (0.025, 0.05, 0.1, 0.2)
MODELS = ("resnet8", "vgg11_w16")


def _make_store(path, with_bounds=True, all_params=False):
    cells = [{"model": m, "dataset": "digits", "batch_size": bs, "learning_rate": lr, "seed": 0}
             for m in MODELS for bs in BATCH_SIZES for lr in LEARNING_RATES]
    with Store(path) as store:
        store.create_study("fake", {"name": "fake"}, cells)
        rows = store.conn.execute("SELECT cell_id, model, batch_size, learning_rate FROM cells"
                                  ).fetchall()
        for cell_id, model, bs, lr in rows:
            # The gap grows with the ratio for ResNet, shrinks for VGG: one epoch whose
            # clean train accuracy is 1 and whose test accuracy is 1 - gap.
            gap = 0.01 + (1e-5 if model == "resnet8" else -1e-5) * bs / lr
            store.record_epoch(cell_id, 0, {
                "train_loss": 0.02, "train_accuracy": 1.0, "train_eval_loss": 0.02,
                "train_eval_accuracy": 1.0, "test_loss": 0.02 + 2 * gap,
                "test_accuracy": 1.0 - gap})
            store.finish_cell(cell_id, "done")
        with store.transaction() as conn:
            for cell_id, model, bs, lr in rows:
                ratio = bs / lr
                # One cell whose inference-mode loss says it is no minimum.
                off_minimum = model == "resnet8" and bs == 16 and lr == 0.2
                if not with_bounds:
                    continue
                for params in ("classifier", "all") if all_params else ("classifier",):
                    t1 = 0.5 + 0.1 * math.log(ratio)         # increases with the ratio
                    t2 = None if (model == "vgg11_w16" and bs == 16) else t1 + 0.05
                    if model == "vgg11_w16" and bs == 128 and lr == 0.2:
                        t1 = math.inf                         # a vacuous bound
                    tr = 100.0 / ratio
                    report = {"curvature": {"d_eff": 585, "treatment": "project",
                                            "project_rtol": 1e-9,
                                            "train_loss": 3.0 if off_minimum else 0.01},
                              "seconds": 1.0,
                              "n_train": 1347,
                              "bounds": {"whole_space": {"trace_CAinv": 9.0,
                                                         "trace_CAinv_stderr": 0.5,
                                                         "critical_ratio": 6e-5,
                                                         "assumption2": True,
                                                         "theorem2": math.inf}}
                              if params == "all" else {}}
                    conn.execute(
                        "INSERT INTO bounds (cell_id, params, estimator, n_params, n_examples,"
                        " delta, trace_ca_inv, logdet_sigma, kl, theorem1, theorem1_discrete,"
                        " theorem2, commutator, assumption2, critical_ratio, report_json,"
                        " computed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (cell_id, params, "exact-dense" if params == "classifier"
                         else "lanczos-subspace", 650 if params == "classifier" else 77754,
                         1347, 0.05, tr, -100.0 - math.log(ratio), 30.0 + math.log(ratio),
                         t1, None, t2, 0.2, int(ratio > 300), 300.0 / 1.0,
                         json.dumps(report), utc_now()))
    return path


@pytest.fixture()
def store(tmp_path):
    return _make_store(tmp_path / "fake.db")


def test_load_bounds_joins_cells_and_adds_the_gap_and_report_fields(store):
    frame = BR.load_bounds(store)
    assert len(frame) == 32
    row = frame[(frame["model"] == "resnet8") & (frame["batch_size"] == 64)
                & (frame["learning_rate"] == 0.1)].iloc[0]
    assert row["ratio"] == pytest.approx(640.0)
    assert row["gap"] == pytest.approx(0.01 + 1e-5 * 640)
    assert row["loss_gap"] == pytest.approx(2 * (0.01 + 1e-5 * 640))
    assert row["d_eff"] == 585 and row["treatment"] == "project"
    assert row["assumption2"] == True  # noqa: E712 (nullable boolean)
    assert frame["theorem2"].isna().sum() == 4


def test_correlations_are_spearman_per_grid_and_leave_out_non_finite_bounds(store):
    corr = BR.bound_correlations(BR.load_bounds(store))
    t1 = corr[corr["term"] == "theorem1"].set_index("model")
    assert t1.loc["resnet8", "rho_ratio"] == pytest.approx(1.0)
    assert t1.loc["resnet8", "rho_gap"] == pytest.approx(1.0)
    assert t1.loc["vgg11_w16", "rho_gap"] == pytest.approx(-1.0)
    assert t1.loc["vgg11_w16", "rho_loss_gap"] == pytest.approx(-1.0)
    assert t1.loc["vgg11_w16", "n_ratio"] == 15  # the infinite bound is left out
    t2 = corr[corr["term"] == "theorem2"].set_index("model")
    assert t2.loc["vgg11_w16", "n_ratio"] == 12  # undefined Theorem 2 left out
    tr = corr[corr["term"] == "trace_ca_inv"].set_index("model")
    assert tr.loc["resnet8", "rho_ratio"] == pytest.approx(-1.0)


def test_bound_section_names_the_estimator_and_reports_correlations_and_assumption2(store):
    text = BR.render_bounds_section(store)
    assert text.startswith("## PAC-Bayes bound terms")
    assert "### ResNet-8 on digits" in text and "### VGG-11 (width 16) on digits" in text
    assert "Parameters: **classifier** (d = 650); estimator: **exact-dense**" in text
    assert "| Theorem 1 (eq. 16) |" in text and "+1.00 (p=" in text
    assert ("Measured gaps (final weights) vs ratio (the paper's prediction: positive): "
            "gap +1.00") in text
    assert "Assumption 2 (d > tr(C A^-1) eta / 2|S|, i.e. r > r*) holds in" in text
    assert "Theorem 2 undefined (singular C) in 4 cells" in text
    assert "Theorem 1 infinite (vacuous) in 1 cells" in text


def test_bound_section_shows_the_whole_network_estimates_of_the_matrix_free_rows(tmp_path):
    db = _make_store(tmp_path / "both.db", all_params=True)
    text = BR.render_bounds_section(db)
    assert "Parameters: **all** (d = 77754); estimator: **lanczos-subspace**" in text
    assert "Whole network (CG / SLQ, damped A): tr(C A^-1) 9 … 9" in text


def test_bound_section_without_rows_says_how_to_compute_them(tmp_path):
    db = _make_store(tmp_path / "none.db", with_bounds=False)
    assert "No bound terms in this store yet: run `kerasgen bound" in BR.render_bounds_section(db)
    assert BR.write_bound_figures(db, tmp_path / "figs") == []


def test_bound_figures_are_one_decodable_png_per_parameter_set(tmp_path):
    import matplotlib.pyplot as plt

    db = _make_store(tmp_path / "both.db", all_params=True)
    paths = BR.write_bound_figures(db, tmp_path / "figs")
    assert [p.name for p in paths] == ["bounds_all.png", "bounds_classifier.png"]
    for p in paths:
        image = plt.imread(p)
        assert image.ndim == 3 and image.shape[0] > 600 and image.shape[1] > 1000
        assert np.std(image[..., :3]) > 0.05  # not blank
    assert plt.get_fignums() == []


def test_the_bounds_report_never_imports_tensorflow(store, tmp_path):
    code = ("import sys; from kerasgen.report import bounds as B; "
            f"B.render_bounds_section({str(store)!r}); "
            f"B.write_bound_figures({str(store)!r}, {str(tmp_path / 'f')!r}); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cells_not_at_a_minimum_are_named_and_correlations_are_also_given_without_them(store):
    frame = BR.load_bounds(store)
    assert int((frame["near_minimum"] == False).sum()) == 1  # noqa: E712
    text = BR.render_bounds_section(store)
    assert "**Not at a minimum in 1 of 16 cells**" in text
    assert "(|S|=16, eta=0.2: 3 vs 0.02)" in text
    assert "on the 15 remaining cells: Theorem 1 vs ratio +1.00" in text
    assert list(BR.near_minimum([0.03, 0.2, float("nan")], [0.02, 0.02, 0.02])) == [True, False, pd.NA]


def test_the_bound_section_averages_seeds_per_cell_and_reads_the_gap_at_the_bounds_weights(
        tmp_path):
    # Two seeds per cell, two epochs per run: the kept epoch (highest test accuracy,
    # epoch 0) and the final one (epoch 1) have different gaps; the bound is of the final
    # weights, so the gap it is compared with is the final epoch's. Seed 1's gap is
    # larger by a constant, so a correlation over runs would see each cell twice.
    db = tmp_path / "seeds.db"
    cells = [{"model": "resnet8", "dataset": "digits", "batch_size": bs, "learning_rate": lr,
              "seed": seed} for bs in BATCH_SIZES for lr in LEARNING_RATES for seed in (0, 1)]
    with Store(db) as store:
        store.create_study("seeds", {"name": "seeds"}, cells)
        rows = store.conn.execute("SELECT cell_id, batch_size, learning_rate, seed "
                                  "FROM cells").fetchall()
        for cell_id, bs, lr, seed in rows:
            final_gap = 0.01 + 1e-5 * bs / lr + 0.02 * seed
            kept_gap = 0.05 - 1e-5 * bs / lr  # the kept epoch's gap falls with the ratio
            for epoch, gap, acc in ((0, kept_gap, 0.95), (1, final_gap, 0.90)):
                store.record_epoch(cell_id, epoch, {
                    "train_loss": 0.02, "train_accuracy": 1.0, "train_eval_loss": 0.02,
                    "train_eval_accuracy": acc + gap, "test_loss": 0.1 + gap,
                    "test_accuracy": acc})
            store.finish_cell(cell_id, "done")
        with store.transaction() as conn:
            for cell_id, bs, lr, seed in rows:
                t1 = 0.5 + 0.1 * math.log(bs / lr) + 0.01 * seed
                conn.execute(
                    "INSERT INTO bounds (cell_id, params, estimator, n_params, n_examples, "
                    "delta, theorem1, theorem2, report_json, computed_at) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (cell_id, "classifier", "exact-dense", 650, 1347, 0.05, t1, t1,
                     json.dumps({"curvature": {"train_loss": 0.01}}), utc_now()))
    frame = BR.load_bounds(db)
    assert len(frame) == 32 and len(BR.cell_means(frame)) == 16
    corr = BR.bound_correlations(frame).set_index("term")
    assert corr.loc["theorem1", "n_ratio"] == 16  # cells, not runs
    assert corr.loc["theorem1", "rho_gap"] == pytest.approx(1.0)  # final gap, not kept
    means = BR.cell_means(frame)
    assert means["final_gap"].to_numpy() == pytest.approx(
        0.02 + 1e-5 * means["batch_size"] / means["learning_rate"])
    text = BR.render_bounds_section(db)
    assert "16 cells, 32 runs (averaged per cell)" in text
    assert "Measured gaps (final weights) vs ratio (the paper's prediction: positive): gap +1.00" \
        in text
    assert "the 0-1 error gap, the nearest of these numbers to what Theorems 1-2 bound" in text
