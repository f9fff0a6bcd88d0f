"""kerasgen.curvature: A (Hessian) and C (per-example gradient covariance) of Keras
models, the matrix-free estimators, the bound evaluation and ``kerasgen bound``'s store
path. Tiny float64 models make the checks exact up to round-off."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerasgen import curvature as K  # noqa: E402
from kerasgen import theory as T  # noqa: E402

# ---------------------------------------------------------------- tiny models

def _mlp(seed=0, n_in=5, hidden=6, classes=3):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((n_in,), dtype="float64")
    h = keras.layers.Dense(hidden, activation="tanh", dtype="float64", name="hidden")(inp)
    out = keras.layers.Dense(classes, dtype="float64", name="classifier")(h)
    return keras.Model(inp, out)


def _softmax_regression(seed=0, n_in=4, classes=3):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((n_in,), dtype="float64")
    out = keras.layers.Dense(classes, dtype="float64", name="classifier",
                             kernel_initializer=keras.initializers.RandomNormal(0, 0.5, seed=seed),
                             bias_initializer=keras.initializers.RandomNormal(0, 0.5, seed=seed + 1))(inp)
    return keras.Model(inp, out)


def _data(n, n_in, classes, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)), rng.integers(0, classes, n)


@pytest.fixture(scope="module")
def mlp():
    model = _mlp()
    x, y = _data(60, 5, 3)
    sel = K.select_parameters(model, "all")
    return model, x, y, sel, K.Objective(model, sel, x, y, chunk=25, pfor_rows=7)


def _gradient_at(model, sel, x, y, flat):
    """The mean-loss gradient at theta = flat, by a plain GradientTape (independent of
    Objective): set the variables, differentiate, restore."""
    import tensorflow as tf

    variables = [model.trainable_variables[i] for i in sel.indices]
    saved = [v.numpy() for v in variables]
    at = 0
    for v in variables:
        size = int(np.prod(v.shape))
        v.assign(flat[at:at + size].reshape(v.shape))
        at += size
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y.astype("int32"), logits=model(x, training=False)))
    grads = tape.gradient(loss, variables)
    for v, s in zip(variables, saved):
        v.assign(s)
    return np.concatenate([g.numpy().ravel() for g in grads])


def _theta(model, sel):
    return np.concatenate([model.trainable_variables[i].numpy().ravel() for i in sel.indices])


# ---------------------------------------------------------------- A and C, exactly

def test_dense_hessian_equals_finite_differences_of_an_independent_gradient(mlp):
    model, x, y, sel, obj = mlp
    H, asym = obj.hessian()
    theta = _theta(model, sel)
    eps = 1e-5
    fd = np.stack([(_gradient_at(model, sel, x, y, theta + eps * e)
                    - _gradient_at(model, sel, x, y, theta - eps * e)) / (2 * eps)
                   for e in np.eye(sel.d)], axis=1)
    assert sel.d == 5 * 6 + 6 + 6 * 3 + 3
    assert asym < 1e-12
    np.testing.assert_allclose(H, (fd + fd.T) / 2, atol=1e-7 * np.abs(H).max())


def test_dense_hessian_rows_equal_single_hessian_vector_products_whatever_the_block_size(mlp):
    model, x, y, sel, obj = mlp
    H, _ = obj.hessian()  # pfor_rows=7 < d=57: blocks of rows
    cols = np.stack([obj.hvp(e) for e in np.eye(sel.d)], axis=1)
    np.testing.assert_allclose(H, cols, atol=1e-12 * np.abs(H).max())
    one_block = K.Objective(model, sel, x, y, chunk=60, pfor_rows=1000).hessian()[0]
    np.testing.assert_allclose(one_block, H, atol=1e-12 * np.abs(H).max())


def test_per_example_gradients_equal_gradients_of_one_example_at_a_time(mlp):
    model, x, y, sel, obj = mlp
    G = obj.per_example_gradients()
    theta = _theta(model, sel)
    assert G.shape == (60, sel.d)
    for i in (0, 17, 59):
        np.testing.assert_allclose(G[i], _gradient_at(model, sel, x[i:i + 1], y[i:i + 1], theta),
                                   rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(G.mean(0), obj.loss_and_gradient()[1], atol=1e-14)


def test_c_is_the_biased_np_cov_of_the_per_example_gradients_and_matrix_free_products_agree(mlp):
    _, _, _, sel, obj = mlp
    G = obj.per_example_gradients()
    C = K.gradient_covariance(G)
    np.testing.assert_allclose(C, np.cov(G.T, bias=True), atol=1e-15)
    v = np.random.default_rng(1).normal(size=sel.d)
    w = np.random.default_rng(2).normal(size=obj.n)
    np.testing.assert_allclose(obj.jvp_examples(v), G @ v, atol=1e-12)
    np.testing.assert_allclose(obj.vjp_examples(w), G.T @ w, atol=1e-12)
    np.testing.assert_allclose(obj.c_matvec(v), C @ v, atol=1e-12)


def test_softmax_regression_hessian_and_gradients_equal_the_closed_form():
    F, Kc, n = 4, 3, 50
    model = _softmax_regression(n_in=F, classes=Kc)
    x, y = _data(n, F, Kc, seed=3)
    sel = K.select_parameters(model, "classifier")
    assert sel.head == "classifier" and sel.d == F * Kc + Kc
    obj = K.Objective(model, sel, x, y)
    W, b = (v.numpy() for v in model.trainable_variables)
    logits = x @ W + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    xt = np.hstack([x, np.ones((n, 1))])  # theta = rows of [W; b] raveled: kron(x~, .)
    H = sum(np.kron(np.outer(xt[i], xt[i]), np.diag(p[i]) - np.outer(p[i], p[i]))
            for i in range(n)) / n
    G = np.stack([np.kron(xt[i], p[i] - np.eye(Kc)[y[i]]) for i in range(n)])
    np.testing.assert_allclose(obj.hessian()[0], H, atol=1e-13)
    np.testing.assert_allclose(obj.per_example_gradients(), G, atol=1e-13)


def test_head_path_equals_the_whole_network_path_for_the_classifier(mlp):
    model, x, y, _, _ = mlp
    sel = K.select_parameters(model, "classifier")
    assert sel.head == "classifier" and sel.d == 6 * 3 + 3
    head = K.Objective(model, sel, x, y)
    net = K.Objective(model, dataclasses.replace(sel, head=None), x, y, chunk=25)
    assert (head.mode, net.mode) == ("head", "network")
    np.testing.assert_allclose(head.hessian()[0], net.hessian()[0], atol=1e-13)
    np.testing.assert_allclose(head.per_example_gradients(), net.per_example_gradients(),
                               atol=1e-13)


def test_explicit_selection_by_layer_name_and_unknown_names_are_refused(mlp):
    model = mlp[0]
    sel = K.select_parameters(model, ["hidden"])
    assert sel.paths == ("hidden/kernel", "hidden/bias") and sel.d == 36 and sel.head is None
    assert K.select_parameters(model, ["classifier/kernel", "classifier/bias"]).head == "classifier"
    with pytest.raises(K.CurvatureError, match="names no trainable variable"):
        K.select_parameters(model, ["no_such_layer"])


# ---------------------------------------------------------------- positive definiteness

def test_project_removes_exactly_the_softmax_shift_null_space_and_records_it():
    F, Kc = 4, 3
    model = _softmax_regression(n_in=F, classes=Kc)
    x, y = _data(80, F, Kc, seed=4)
    est = K.estimate_curvature(model, x, y, "classifier")
    info = est.info
    assert info["estimator"] == "exact-dense" and info["treatment"] == "project"
    # Adding a vector to every class's weights leaves the softmax unchanged: F + 1 flat
    # directions, where C vanishes too.
    assert info["n_discarded_A"] == F + 1
    assert est.d_eff == (Kc - 1) * (F + 1) == info["d_eff"]
    assert np.all(np.diag(est.A) > 0) and np.linalg.eigvalsh(est.C)[0] > 0


def test_damp_adds_the_recorded_ridge_to_the_clipped_spectrum():
    rng = np.random.default_rng(0)
    V = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    lam = np.array([-0.5, 0.2, 1e-3, 0.5, 1.0, 4.0])
    A = (V * lam) @ V.T
    C = np.eye(6)
    A_t, C_t, info = K.treat_dense(A, C, "damp", damping_rtol=1e-2)
    assert info["damping"] == pytest.approx(0.04) and info["n_clipped_negative"] == 1
    np.testing.assert_allclose(np.sort(np.diag(A_t)), np.sort(np.clip(lam, 0, None)) + 0.04)
    np.testing.assert_allclose(C_t, np.eye(6), atol=1e-12)
    _, _, proj = K.treat_dense(A, C, "project", project_rtol=1e-2)
    assert proj["d_eff"] == 4 and proj["n_discarded_negative"] == 1


@pytest.mark.parametrize("case", ["regular", "large_eta", "singular_C"])
def test_eigenbasis_evaluation_equals_theory_evaluate_bounds(case):
    rng = np.random.default_rng(7)
    d = 12
    M = rng.normal(size=(d, d))
    A = M @ M.T / d + 0.05 * np.eye(d)
    N = rng.normal(size=(d, 3 if case == "singular_C" else 2 * d))
    C = N @ N.T / d
    eta = 5.0 / np.linalg.eigvalsh(A)[-1] if case == "large_eta" else 0.1
    ours = K.evaluate_bounds_eig(A, C, eta, 32, 1000, 0.05).as_dict()
    ref = T.evaluate_bounds(A, C, eta, 32, 1000, 0.05).as_dict()
    assert ours.keys() == ref.keys()
    for key, value in ref.items():
        if isinstance(value, float) and np.isfinite(value):
            assert ours[key] == pytest.approx(value, rel=1e-7, abs=1e-9), key
        elif key.endswith("reason"):
            assert (ours[key] is None) == (value is None), key
        else:
            assert ours[key] == value, key
    if case == "large_eta":
        assert ours["theorem1_discrete"] is None
    if case == "singular_C":
        assert ours["theorem2"] is None


# ---------------------------------------------------------------- matrix-free estimators

@pytest.fixture(scope="module")
def mlp_many():
    """d = 57 parameters, n = 200 examples (so C can be nonsingular)."""
    model = _mlp(seed=1)
    x, y = _data(200, 5, 3, seed=5)
    sel = K.select_parameters(model, "all")
    obj = K.Objective(model, sel, x, y, chunk=100)
    H, _ = obj.hessian()
    C = K.gradient_covariance(obj.per_example_gradients())
    lam = np.linalg.eigvalsh(H)
    damping = 1e-2 * lam[-1] + max(0.0, -2 * lam[0])
    return obj, H, C, damping


def test_slq_logdet_agrees_with_the_dense_log_determinant_within_its_stated_error(mlp_many):
    obj, H, C, damping = mlp_many
    Ad = H + damping * np.eye(obj.d)
    exact = np.linalg.slogdet(Ad)[1]
    res = K.slq_logdet(lambda v: obj.hvp(v) + damping * v, obj.d, probes=12, steps=20, seed=0)
    assert abs(res["estimate"] - exact) <= 3 * res["stderr"] + res["quadrature_change"] + 1e-6
    assert res["stderr"] < 0.1 * abs(exact)
    # C through its matrix-free product, with a ridge (its raw condition number here is
    # ~1e15: see the docstring, the quadrature gauge is not to be trusted there).
    ridge = 1e-2 * np.linalg.eigvalsh(C)[-1]
    exact_c = np.linalg.slogdet(C + ridge * np.eye(obj.d))[1]
    res_c = K.slq_logdet(lambda v: obj.c_matvec(v) + ridge * v, obj.d, probes=12, steps=20,
                         seed=1)
    assert abs(res_c["estimate"] - exact_c) <= 3 * res_c["stderr"] + res_c["quadrature_change"] + 1e-6


def test_cg_trace_estimate_agrees_with_dense_tr_C_A_inv_within_its_stated_error(mlp_many):
    obj, H, C, damping = mlp_many
    Ad = H + damping * np.eye(obj.d)
    exact = np.trace(np.linalg.solve(Ad, C))
    gbar = obj.loss_and_gradient()[1]
    res = K.trace_CAinv_cg(obj, lambda v: obj.hvp(v) + damping * v, gbar, probes=40,
                           tol=1e-8, maxiter=200, seed=0)
    assert res["converged"]
    assert abs(res["estimate"] - exact) <= 3 * res["stderr"]
    assert res["stderr"] < 0.25 * exact
    # A wrong estimator (no centring of the gradients) is detected by the same check.
    wrong = np.trace(np.linalg.solve(Ad, C + np.outer(gbar, gbar) * 50))
    assert abs(res["estimate"] - wrong) > 3 * res["stderr"]


def test_cg_solves_a_positive_definite_system_and_flags_an_indefinite_one():
    rng = np.random.default_rng(0)
    M = rng.normal(size=(30, 30))
    A = M @ M.T + np.eye(30)
    b = rng.normal(size=30)
    x, info = K.conjugate_gradient(lambda v: A @ v, b, tol=1e-10, maxiter=200)
    assert info["converged"] and np.allclose(A @ x, b, atol=1e-8)
    _, bad = K.conjugate_gradient(lambda v: -A @ v, b)
    assert bad["indefinite"] and not bad["converged"]


def test_lanczos_subspace_estimator_equals_the_exact_one_when_the_krylov_space_is_everything(mlp_many):
    obj, _, _, _ = mlp_many
    model = obj.model
    x, y = obj.x_input, obj.y
    exact = K.estimate_curvature(model, x, y, "all", K.CurvatureConfig())
    cfg = K.CurvatureConfig(exact_limit=0, lanczos_steps=obj.d, whole_space=True,
                            hvp_examples=None, cg_probes=2, slq_probes=2, slq_steps=10)
    free = K.estimate_curvature(model, x, y, "all", cfg)
    assert exact.estimator == "exact-dense" and free.estimator == "lanczos-subspace"
    assert free.d_eff == exact.d_eff and free.info["project_rtol"] == exact.info["project_rtol"]
    b_exact = K.bound_terms(exact, 0.1, 16, 1000)
    b_free = K.bound_terms(free, 0.1, 16, 1000)
    for key in ("theorem1", "theorem2", "kl", "trace_CAinv", "logdet_sigma", "commutator_norm"):
        assert b_free[key] == pytest.approx(b_exact[key], rel=1e-6), key
    ws = b_free["whole_space"]
    assert np.isfinite(ws["trace_CAinv"]) and np.isfinite(ws["theorem2"])  # n - 1 >= d here
    assert "whole_space" not in b_exact


def test_whole_space_bound_is_reported_vacuous_when_examples_are_fewer_than_parameters():
    model = _mlp(seed=2)
    x, y = _data(30, 5, 3, seed=6)  # n - 1 = 29 < d = 57: C is singular
    cfg = K.CurvatureConfig(exact_limit=0, lanczos_steps=20, hvp_examples=None, cg_probes=2,
                            slq_probes=2, slq_steps=8)
    est = K.estimate_curvature(model, x, y, "all", cfg)
    ws = est.info["whole_space"]
    assert ws["logdet_C"] == -np.inf and "rank(C)" in ws["logdet_C_reason"]
    terms = K.bound_terms(est, 0.1, 16, 1000)
    assert terms["whole_space"]["theorem2"] == np.inf
    assert np.isfinite(terms["theorem1"])  # the subspace estimate stays finite


# ---------------------------------------------------------------- the store

@pytest.fixture(scope="module")
def trained_store(tmp_path_factory):
    from kerasgen.options import RunOptions
    from kerasgen.spec import Spec
    from kerasgen.worker import run_study

    root = tmp_path_factory.mktemp("bound")
    spec = Spec(name="tiny", models=("resnet8",), datasets=("synthetic-8-1-10-64",),
                batch_sizes=(16,), learning_rates=(0.05, 0.1), epochs=1)
    db = root / "s.db"
    counts = run_study(spec, db, RunOptions(pack_size=2, data_dir=str(root)), progress=False)
    assert counts["done"] == 2
    return root, db


def _copy(trained_store, tmp_path):
    root, db = trained_store
    new = tmp_path / "s.db"
    shutil.copy(db, new)
    shutil.copytree(str(db) + ".checkpoints", str(new) + ".checkpoints")
    return new, str(root)


def _rows(db):
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM bounds ORDER BY cell_id")]


@pytest.mark.slow
def test_bound_writes_a_row_per_finished_cell_then_skips_and_recomputes_on_request(
        trained_store, tmp_path, capsys):
    db, data_dir = _copy(trained_store, tmp_path)
    rows = K.compute_bounds_for_store(db, data_dir=data_dir)
    out = capsys.readouterr().out
    assert len(rows) == 2 and "d=650 classifier exact-dense" in out
    stored = _rows(db)
    assert [r["cell_id"] for r in stored] == [r["cell_id"] for r in rows]
    for r in stored:
        assert r["params"] == "classifier" and r["estimator"] == "exact-dense"
        assert r["n_params"] == 650 and r["n_examples"] == 64 and r["delta"] == 0.05
        assert np.isfinite(r["theorem1"]) and r["theorem1"] > 0
        report = json.loads(r["report_json"])
        cur = report["curvature"]
        assert cur["treatment"] == "project" and cur["d_eff"] <= 585
        assert cur["data"] == "training set, normalized, no augmentation"
        assert report["bounds"]["theorem1"] == pytest.approx(r["theorem1"])
    stamp = {r["cell_id"]: r["computed_at"] for r in stored}
    assert K.compute_bounds_for_store(db, data_dir=data_dir) == []
    assert "already in the store; skipped" in capsys.readouterr().out
    again = K.compute_bounds_for_store(db, data_dir=data_dir, cells=[rows[0]["cell_id"]],
                                       recompute=True, max_examples=32)
    assert len(again) == 1 and again[0]["n_examples"] == 32
    after = {r["cell_id"]: r for r in _rows(db)}
    assert after[rows[0]["cell_id"]]["computed_at"] != stamp[rows[0]["cell_id"]]
    assert after[rows[1]["cell_id"]]["computed_at"] == stamp[rows[1]["cell_id"]]


@pytest.mark.slow
def test_bound_on_an_explicit_subset_of_a_batch_normalized_network(trained_store, tmp_path):
    db, data_dir = _copy(trained_store, tmp_path)
    rows = K.compute_bounds_for_store(db, data_dir=data_dir, cells=[1],
                                      params=["stage3_block1_bn2"])
    assert rows[0]["params"] == "stage3_block1_bn2" and rows[0]["n_params"] == 128
    cur = rows[0]["report"]["curvature"]
    assert cur["path"].startswith("whole network") and cur["project_rtol"] == 1e-5


@pytest.mark.slow
def test_bound_refuses_unknown_cells_unfinished_cells_and_missing_weights(trained_store, tmp_path):
    db, data_dir = _copy(trained_store, tmp_path)
    with pytest.raises(K.CurvatureError, match=r"unknown cell id\(s\) \[99\]"):
        K.compute_bounds_for_store(db, cells=[99], data_dir=data_dir)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE cells SET status = 'pending' WHERE cell_id = 2")
    with pytest.raises(K.CurvatureError, match=r"not finished: 2 \(pending\)"):
        K.compute_bounds_for_store(db, cells=[2], data_dir=data_dir)
    with pytest.raises(K.CurvatureError, match="no final weights for cell 1"):
        K.compute_bounds_for_store(db, cells=[1], data_dir=data_dir,
                                   checkpoint_dir=str(tmp_path / "elsewhere"))
    with pytest.raises(K.CurvatureError, match="does not exist"):
        K.compute_bounds_for_store(tmp_path / "nothing.db")
    with pytest.raises(K.CurvatureError, match=r"delta must lie in \(0, 1\)"):
        K.compute_bounds_for_store(db, delta=1.5, data_dir=data_dir)
    assert _rows(db) == []


@pytest.mark.slow
def test_bound_skips_diverged_cells_with_the_reason(trained_store, tmp_path, capsys):
    db, data_dir = _copy(trained_store, tmp_path)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE cells SET status = 'diverged', diverged_epoch = 0 WHERE cell_id = 2")
    rows = K.compute_bounds_for_store(db, data_dir=data_dir)
    assert [r["cell_id"] for r in rows] == [1]
    assert "cell 2 resnet8 bs=16 lr=0.1: skipped (diverged at epoch 0" in capsys.readouterr().out


def test_projection_sensitivity_at_the_used_threshold_reproduces_the_reported_bounds():
    F, Kc = 4, 3
    model = _softmax_regression(n_in=F, classes=Kc)
    x, y = _data(80, F, Kc, seed=4)
    est = K.estimate_curvature(model, x, y, "classifier")
    terms = K.bound_terms(est, 0.1, 16, 1000)
    sens = {s["rtol"]: s for s in terms["sensitivity"]}
    used = sens[est.info["project_rtol"]]
    assert used["d_eff"] == est.d_eff
    for key in ("theorem1", "theorem2", "trace_CAinv"):
        assert used[key] == pytest.approx(terms[key], rel=1e-9), key
    assert sens[1e-3]["d_eff"] <= used["d_eff"]
