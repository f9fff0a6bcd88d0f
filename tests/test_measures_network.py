"""kerasgen.measures on Keras networks: each measure against an independent computation
on a tiny network (numpy, a dense Hessian, a grid search, the definition from
per-example gradients), then ``kerasgen measures`` on a tiny trained study."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kerasgen.measures import network as N  # noqa: E402
from kerasgen.measures.catalogue import MeasureError  # noqa: E402


def _conv_net(seed=0):
    """conv(3x3, 2->3, same) - BN - ReLU - GAP - dense(3->4), float64, with BN moving
    statistics and scales away from their defaults."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((4, 4, 2), dtype="float64")
    x = keras.layers.Conv2D(3, 3, padding="same", use_bias=False, dtype="float64",
                            name="conv")(inp)
    x = keras.layers.BatchNormalization(dtype="float64", name="bn")(x)
    x = keras.layers.ReLU(dtype="float64")(x)
    x = keras.layers.GlobalAveragePooling2D(dtype="float64")(x)
    out = keras.layers.Dense(4, dtype="float64", name="head")(x)
    model = keras.Model(inp, out)
    bn = model.get_layer("bn")
    rng = np.random.default_rng(seed)
    bn.set_weights([rng.uniform(0.5, 2.0, 3), rng.normal(size=3), rng.normal(size=3),
                    rng.uniform(0.2, 3.0, 3)])
    return model


def _mlp(seed=0, n_in=4, hidden=5, classes=3, bn=False):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((n_in,), dtype="float64")
    h = keras.layers.Dense(hidden, dtype="float64", name="hidden")(inp)
    if bn:
        h = keras.layers.BatchNormalization(dtype="float64", name="bn")(h)
    h = keras.layers.Activation("tanh" if not bn else "relu", dtype="float64")(h)
    out = keras.layers.Dense(classes, dtype="float64", name="classifier")(h)
    model = keras.Model(inp, out)
    if bn:
        rng = np.random.default_rng(seed + 1)
        model.get_layer("bn").set_weights([rng.uniform(0.5, 2.0, hidden), rng.normal(size=hidden),
                                           rng.normal(size=hidden), rng.uniform(0.2, 3, hidden)])
    return model


def _data(n, shape, classes, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)), rng.integers(0, classes, n)


def _bn_scale(model):
    gamma, _, _, var = model.get_layer("bn").get_weights()
    return gamma / np.sqrt(var + model.get_layer("bn").epsilon)


# ---------------------------------------------------------------- norms

def test_norms_equal_numpy_on_the_folded_kernels():
    model = _conv_net()
    initial = [w + 0.1 for w in model.get_weights()]
    out = N.norms(model, initial)
    folded = model.get_layer("conv").get_weights()[0] * _bn_scale(model)
    head = model.get_layer("head").get_weights()[0]
    fro = [np.sqrt(np.sum(folded ** 2)), np.sqrt(np.sum(head ** 2))]
    assert out["sum_fro"][0] == pytest.approx(sum(fro), rel=1e-12)
    assert out["log_prod_fro"][0] == pytest.approx(np.log(fro[0] * fro[1]), rel=1e-12)
    spec = np.linalg.svd(folded.reshape(18, 3), compute_uv=False)[0] * \
        np.linalg.svd(head, compute_uv=False)[0]
    assert out["log_prod_spec"][0] == pytest.approx(np.log(spec), rel=1e-6)
    trainable = {v.path for v in model.trainable_variables}
    dist = np.sqrt(sum(np.sum((w - i) ** 2) for v, w, i in
                       zip(model.weights, model.get_weights(), initial) if v.path in trainable))
    assert out["dist_init"][0] == pytest.approx(dist, rel=1e-12)
    assert out["sum_fro"][1]["bn_folded"] == 1


def _numpy_conv_matrix(kernel, h, w):
    """The matrix of a stride-1 'same' convolution on (h, w, c_in) images, by loops."""
    kh, kw, cin, cout = kernel.shape
    mat = np.zeros((h * w * cout, h * w * cin))
    for i, j, o in np.ndindex(h, w, cout):
        row = (i * w + j) * cout + o
        for di, dj, c in np.ndindex(kh, kw, cin):
            y, x = i + di - kh // 2, j + dj - kw // 2
            if 0 <= y < h and 0 <= x < w:
                mat[row, (y * w + x) * cin + c] += kernel[di, dj, c, o]
    return mat


def test_the_conv_operators_spectral_norm_is_the_largest_singular_value_of_its_matrix():
    model = _conv_net(seed=3)
    maps = N.linear_maps(model)
    value, info = N.conv_spectral_norms(maps, iters=2000, tol=1e-13)
    conv = next(m for m in maps if m.kind == "conv")
    dense = next(m for m in maps if m.kind == "dense")
    sigma_conv = np.linalg.norm(_numpy_conv_matrix(conv.kernel, 4, 4), 2)
    expected = np.log(sigma_conv) + np.log(np.linalg.norm(dense.kernel, 2))
    assert value == pytest.approx(expected, rel=1e-6)
    assert "input shape" in info["operator"]


def test_path_norm_is_the_sum_over_paths_of_squared_weights():
    model = _mlp(bn=True)
    value, _ = N.path_norm(model)
    w1 = model.get_layer("hidden").get_weights()[0] * _bn_scale(model)  # BN folded
    w2 = model.get_layer("classifier").get_weights()[0]
    paths = sum(w1[i, j] ** 2 * w2[j, k] ** 2 for i, j, k in np.ndindex(4, 5, 3))
    assert value == pytest.approx(np.log(paths), rel=1e-10)


# ---------------------------------------------------------------- data measures

def test_hessian_top_eigenvalue_and_trace_match_the_dense_hessian():
    from kerasgen.curvature import Objective, select_parameters

    model = _mlp()
    x, y = _data(40, (4,), 3)
    net = N.NetworkMeasures(model, x, y)
    dense, _ = Objective(model, select_parameters(model, "all"), x, y).hessian()
    eig = np.linalg.eigvalsh(dense)
    top, info = N.hessian_top(net, steps=net.d)
    assert top == pytest.approx(eig[-1], rel=1e-8) and info["residual"] < 1e-6
    trace, info = N.hessian_trace(net, probes=3000)
    assert abs(trace - np.trace(dense)) < 4 * info["stderr"]
    assert info["stderr"] < 0.05 * abs(np.trace(dense))


def test_eps_sharpness_of_a_two_parameter_network_is_the_maximum_of_a_grid_search():
    keras.utils.set_random_seed(0)
    inp = keras.Input((1,), dtype="float64")
    out = keras.layers.Dense(2, use_bias=False, dtype="float64")(inp)
    model = keras.Model(inp, out)
    model.set_weights([np.array([[0.8, -0.4]])])
    x, y = _data(30, (1,), 2, seed=1)
    net = N.NetworkMeasures(model, x, y)
    value, info = N.eps_sharpness(net, epsilon=0.05, steps=10)

    def loss(w):
        logits = x @ w.reshape(1, 2)
        logits = logits - logits.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(30), y]))

    w = net.w
    half = 0.05 * (np.abs(w) + 1)
    best = max(loss(w + np.array([a, b])) for a in np.linspace(-half[0], half[0], 201)
               for b in np.linspace(-half[1], half[1], 201))
    base = loss(w)
    assert info["loss"] == pytest.approx(base, rel=1e-10)
    assert value == pytest.approx(100 * (best - base) / (1 + base), rel=1e-6)


def test_pacbayes_flatness_grows_as_the_network_gets_sharper():
    model = _mlp()
    x, y = _data(40, (4,), 3)
    net = N.NetworkMeasures(model, x, y)
    flat, info = N.pacbayes_flatness(net, samples=8, steps=12)
    assert flat == pytest.approx(1 / info["sigma"] ** 2)
    # the same function of 10x the weights' scale in the last layer: sharper
    model.get_layer("classifier").set_weights([w * 10 for w in
                                               model.get_layer("classifier").get_weights()])
    net.refresh()
    sharp, _ = N.pacbayes_flatness(net, samples=8, steps=12)
    assert sharp > flat


def test_b_simple_is_its_definition_from_dense_per_example_gradients():
    keras.utils.set_random_seed(0)
    inp = keras.Input((4,), dtype="float64")
    out = keras.layers.Dense(3, dtype="float64",
                             bias_initializer=keras.initializers.RandomNormal(0, 0.5))(inp)
    model = keras.Model(inp, out)
    x, y = _data(50, (4,), 3, seed=2)
    net = N.NetworkMeasures(model, x, y, pex_chunk=7)
    noise = net.gradient_noise()
    kernel, bias = model.get_weights()
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    residual = p - np.eye(3)[y]                      # dl_i/dlogits
    per_example = np.concatenate([np.einsum("ni,nk->nik", x, residual).reshape(50, -1),
                                  residual], axis=1)  # [dW_i, db_i], Keras's order
    centred = per_example - per_example.mean(0)
    trace = float(np.sum(centred ** 2) / 50)
    assert noise["trace_C"] == pytest.approx(trace, rel=1e-10)
    assert noise["b_simple"] == pytest.approx(trace / np.sum(per_example.mean(0) ** 2), rel=1e-10)


def test_the_output_margin_is_the_tenth_percentile_of_the_logit_margins():
    model = _mlp()
    x, y = _data(60, (4,), 3, seed=4)
    net = N.NetworkMeasures(model, x, y)
    value, info = N.output_margin(net)
    (w1, b1), (w2, b2) = (model.get_layer(n).get_weights() for n in ("hidden", "classifier"))
    logits = np.tanh(x @ w1 + b1) @ w2 + b2
    other = np.where(np.eye(3)[y] > 0, -np.inf, logits).max(1)
    margins = logits[np.arange(60), y] - other
    assert value == pytest.approx(np.percentile(margins, 10), rel=1e-10)
    assert info["misclassified"] == int(np.sum(margins <= 0))


def test_a_layer_the_path_norm_does_not_know_is_named_in_the_error():
    inp = keras.Input((3,))
    x = keras.layers.Dense(2)(inp)
    out = keras.layers.LayerNormalization(name="ln")(x)
    with pytest.raises(MeasureError, match="ln/gamma"):
        N.path_norm(keras.Model(inp, out))


# ---------------------------------------------------------------- kerasgen measures

@pytest.fixture(scope="module")
def trained_store(tmp_path_factory):
    from kerasgen.options import RunOptions
    from kerasgen.spec import Spec
    from kerasgen.worker import run_study

    root = tmp_path_factory.mktemp("measures")
    spec = Spec(name="tiny", models=("resnet8",), datasets=("synthetic-8-1-10-64",),
                batch_sizes=(16, 32), learning_rates=(0.05, 0.1), epochs=2)
    db = root / "s.db"
    counts = run_study(spec, db, RunOptions(pack_size=2, data_dir=str(root)), progress=False)
    assert counts["done"] == 4
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
        return [dict(r) for r in conn.execute("SELECT * FROM measures ORDER BY cell_id, measure")]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "kerasgen", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_measures_writes_each_run_once_resumes_and_recomputes_on_request(trained_store, tmp_path):
    from kerasgen.measures.runs import compute_measures_for_store

    db, data_dir = _copy(trained_store, tmp_path)
    rows = compute_measures_for_store(db, measures=["norm", "b_simple", "output_margin"],
                                      data_dir=data_dir, cells=[1, 2])
    stored = _rows(db)
    assert len(rows) == len(stored) == 2 * 8
    for r in stored:
        assert r["weights"] == "final" and r["weights_epoch"] == 1
        assert r["kept_epoch"] in (0, 1) and r["seconds"] >= 0
    margin = next(r for r in stored if r["measure"] == "output_margin")
    assert '"max_examples": 256' in margin["settings_json"]
    # resumed: the two runs are done, the two others are computed, nothing twice
    more = compute_measures_for_store(db, measures=["norm", "b_simple", "output_margin"],
                                      data_dir=data_dir)
    assert {r["cell_id"] for r in more} == {3, 4} and len(_rows(db)) == 4 * 8
    assert compute_measures_for_store(db, measures=["sum_fro"], data_dir=data_dir) == []
    stamp = {(r["cell_id"], r["measure"]): r["computed_at"] for r in _rows(db)}
    again = compute_measures_for_store(db, measures=["sum_fro"], data_dir=data_dir, cells=[1],
                                       recompute=True)
    assert len(again) == 1
    after = {(r["cell_id"], r["measure"]): r["computed_at"] for r in _rows(db)}
    assert after[(1, "sum_fro")] != stamp[(1, "sum_fro")]
    assert after[(2, "sum_fro")] == stamp[(2, "sum_fro")]
    # other settings: another row beside the first
    from kerasgen.measures.runs import MeasureConfig

    compute_measures_for_store(db, measures=["output_margin"], data_dir=data_dir, cells=[1],
                               config=MeasureConfig(max_examples=32))
    assert len([r for r in _rows(db) if r["cell_id"] == 1 and r["measure"] == "output_margin"]) == 2


@pytest.mark.slow
def test_measures_command_refuses_bad_input_naming_it_and_loses_nothing(trained_store, tmp_path):
    db, data_dir = _copy(trained_store, tmp_path)
    ok = _cli("measures", db, "--measures", "sum_fro", "--cells", "1", "--data-dir", data_dir)
    assert ok.returncode == 0, ok.stderr
    before = _rows(db)
    for args, message in [
        (("--measures", "sharpnes"), "unknown measure 'sharpnes'"),
        (("--study", "nope"), "holds no study named 'nope'"),
        (("--cells", "99"), r"unknown run id(s) [99]"),
        (("--cells", "2", "--checkpoint-dir", tmp_path / "elsewhere"), "no final weights for run 2"),
    ]:
        run = _cli("measures", db, "--data-dir", data_dir, *args)
        assert run.returncode == 2, (args, run.stderr)
        assert message in run.stderr, run.stderr
    assert _rows(db) == before
    missing = _cli("measures", tmp_path / "none.db")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "none.db.log").exists()


@pytest.mark.slow
def test_two_processes_on_one_store_store_each_measure_once(trained_store, tmp_path):
    db, data_dir = _copy(trained_store, tmp_path)
    args = [sys.executable, "-m", "kerasgen", "measures", str(db), "--measures", "norm",
            "output_margin", "--data-dir", data_dir]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    rows = _rows(db)
    keys = [(r["cell_id"], r["measure"], r["settings_key"]) for r in rows]
    assert len(keys) == len(set(keys)) == 4 * 7


@pytest.mark.slow
def test_the_report_ranks_the_computed_measures(trained_store, tmp_path):
    db, data_dir = _copy(trained_store, tmp_path)
    assert _cli("measures", db, "--measures", "norm", "--data-dir", data_dir).returncode == 0
    run = _cli("report", db, "--measures")
    assert run.returncode == 0, run.stderr
    assert "## Generalization measures" in run.stdout and "log path norm" in run.stdout
    assert "## Steps and compute" in run.stdout


@pytest.mark.slow
def test_bench_measures_runs_and_prints_its_table(tmp_path):
    run = subprocess.run([sys.executable, "scripts/bench_measures.py", "--measures", "sum_fro",
                          "b_simple", "--repeats", "1", "--no-paper-rate",
                          "--data-dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| sum_fro | " in run.stdout and "| b_simple | " in run.stdout
    assert "on the demo's 64 runs" in run.stdout
