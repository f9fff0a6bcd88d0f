"""Packed training is plain SGD, cell by cell; divergence and stopping rules per cell."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kerasgen import data  # noqa: E402
from kerasgen.models import build_model, copies_of  # noqa: E402
from kerasgen.options import RunOptions  # noqa: E402
from kerasgen.packing import PackedSGD, build_pack  # noqa: E402
from kerasgen.spec import Spec, Stop, Training  # noqa: E402
from kerasgen.store import Store, load_epochs, load_results  # noqa: E402
from kerasgen.train import configure_determinism  # noqa: E402
from kerasgen.worker import run_study  # noqa: E402

# Every test here trains real (tiny) networks.
pytestmark = pytest.mark.slow

N_TRAIN, BATCH, EPOCHS = 64, 16, 2


def tiny_dataset(dtype: str = "float32") -> data.Dataset:
    ds = data.load_synthetic(size=8, channels=1, n_train=N_TRAIN)
    ds.x_train = ds.x_train.astype(dtype)
    ds.x_test = ds.x_test.astype(dtype)
    return ds


@pytest.fixture
def floatx():
    """Set Keras's float type (and dtype policy) for one test, restore it afterwards."""
    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()

    def set_float(dtype):
        keras.config.set_floatx(dtype)
        keras.config.set_dtype_policy(dtype)

    yield set_float
    keras.config.set_floatx(old_floatx)
    keras.config.set_dtype_policy(old_policy)


def fit_packed(ds, learning_rates, init, momentum=0.0, layout="branches", weight_decay=0.0):
    pack = build_pack("resnet8", ds, learning_rates, init, momentum=momentum, layout=layout,
                      weight_decay=weight_decay)
    k = len(learning_rates)
    history = pack.fit(
        data.train_dataset(ds, 0, BATCH, 0, EPOCHS, copies=k),
        steps_per_epoch=data.steps_per_epoch(N_TRAIN, BATCH), epochs=EPOCHS,
        validation_data=data.test_dataset(ds, copies=k), verbose=0, shuffle=False,
    ).history
    return pack, history


def fit_separately(ds, learning_rate, init, momentum=0.0, weight_decay=0.0):
    """The reference: an ordinary model with ``SGD(learning_rate)``, no packing."""
    model = build_model("resnet8", ds.num_classes, ds.input_shape)
    model.set_weights(init)
    # Keras's SGD decay is decoupled (w -= lr * wd * w), which equals PyTorch's coupled
    # decay when there is no momentum.
    model.compile(keras.optimizers.SGD(learning_rate, momentum=momentum,
                                       weight_decay=weight_decay or None),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(
        data.train_dataset(ds, 0, BATCH, 0, EPOCHS),
        steps_per_epoch=data.steps_per_epoch(N_TRAIN, BATCH), epochs=EPOCHS,
        validation_data=data.test_dataset(ds), verbose=0, shuffle=False,
    ).history
    return model, history


def assert_pack_matches(pack, history, ds, learning_rates, init, atol, momentum=0.0,
                        layout="branches", weight_decay=0.0):
    from kerasgen.packing import cell_weights

    per_copy = cell_weights(pack, layout)
    for k, lr in enumerate(learning_rates):
        model, ref = fit_separately(ds, lr, init, momentum, weight_decay)
        packed_weights = per_copy[k]
        assert len(packed_weights) == len(model.get_weights())
        for got, want in zip(packed_weights, model.get_weights()):
            np.testing.assert_allclose(got, want, rtol=0, atol=atol)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            packed_key = key.replace("val_", "val_copy_%d_" % k) if key.startswith("val_") \
                else f"copy_{k}_{key}"
            np.testing.assert_allclose(history[packed_key], ref[key], rtol=0, atol=atol)


def test_packed_run_matches_separate_runs_bit_for_bit_in_float32():
    # Each copy's update is SGD's own operation (w -= lr * g) on the same numbers, so a
    # pack equals separate runs bit for bit, for any learning rates (not only the
    # powers of two where a loss-weighted formulation would agree).
    ds = tiny_dataset()
    configure_determinism(0)
    init = build_model("resnet8", ds.num_classes, ds.input_shape).get_weights()
    learning_rates = [0.03, 0.1, 0.17]
    pack, history = fit_packed(ds, learning_rates, init)
    assert_pack_matches(pack, history, ds, learning_rates, init, atol=0.0)


def test_packed_run_matches_separate_runs_in_float64(floatx):
    floatx("float64")
    ds = tiny_dataset("float64")
    configure_determinism(0)
    init = build_model("resnet8", ds.num_classes, ds.input_shape).get_weights()
    learning_rates = [0.05, 0.1, 0.3]
    pack, history = fit_packed(ds, learning_rates, init)
    assert_pack_matches(pack, history, ds, learning_rates, init, atol=0.0)


def test_fused_layout_trains_exactly_like_separate_cells_in_float64(floatx):
    floatx("float64")
    ds = tiny_dataset("float64")
    configure_determinism(3)
    init = build_model("resnet8", ds.num_classes, ds.input_shape).get_weights()
    learning_rates = [0.05, 0.2]
    pack, history = fit_packed(ds, learning_rates, init, layout="fused")
    assert_pack_matches(pack, history, ds, learning_rates, init, atol=1e-10, layout="fused")


def test_fused_layout_scales_weight_decay_per_copy(floatx):
    floatx("float64")
    ds = tiny_dataset("float64")
    configure_determinism(4)
    init = build_model("resnet8", ds.num_classes, ds.input_shape).get_weights()
    learning_rates = [0.05, 0.2]
    pack, history = fit_packed(ds, learning_rates, init, layout="fused", weight_decay=0.01)
    # The reference applies decay after the gradient step (Keras, decoupled) and the pack
    # inside it: equal in exact arithmetic, ~1e-10 apart after 8 float64 steps. A wrong
    # per-copy rate would be off by lr * wd * w ~ 1e-4.
    assert_pack_matches(pack, history, ds, learning_rates, init, atol=1e-8, layout="fused",
                        weight_decay=0.01)


def test_packed_momentum_matches_separate_momentum_sgd():
    ds = tiny_dataset()
    configure_determinism(1)
    init = build_model("resnet8", ds.num_classes, ds.input_shape).get_weights()
    learning_rates = [0.03, 0.07]
    pack, history = fit_packed(ds, learning_rates, init, momentum=0.5)
    assert_pack_matches(pack, history, ds, learning_rates, init, atol=0.0, momentum=0.5)


def test_packed_weight_decay_is_coupled_and_scaled_by_each_copys_learning_rate():
    # PyTorch's SGD(weight_decay=wd): w <- w - lr * (g + wd * w), per copy.
    ds = tiny_dataset()
    configure_determinism(2)
    init = build_model("resnet8", ds.num_classes, ds.input_shape).get_weights()
    learning_rates, wd = [0.1, 0.4], 0.05
    pack = build_pack("resnet8", ds, learning_rates, init, weight_decay=wd)
    x, y = next(iter(data.train_dataset(ds, 0, BATCH, 0, 1, copies=2)))
    import tensorflow as tf

    with tf.GradientTape() as tape:
        outputs = pack(x, training=True)
        losses = [keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y[k], outputs[k])
                  for k in range(2)]
    variables = pack.trainable_variables
    grads = tape.gradient(losses, variables)  # unweighted sum: copies share nothing
    before = [v.numpy().copy() for v in variables]
    owner = {id(v): lr for net, lr in zip(copies_of(pack), learning_rates)
             for v in net.trainable_variables}
    pack.optimizer.apply(grads, variables)
    for v, g, w in zip(variables, grads, before):
        lr = owner[id(v)]
        np.testing.assert_allclose(v.numpy(), w - lr * (g.numpy() + wd * w), rtol=1e-5, atol=1e-7)
    assert isinstance(pack.optimizer, PackedSGD)


def study(tmp_path, learning_rates, epochs=3, stop=None, name="t"):
    return Spec(name=name, models=("resnet8",), datasets=("synthetic-8-1-10-64",),
                batch_sizes=(BATCH,), learning_rates=tuple(learning_rates), epochs=epochs,
                stop=stop or Stop())


def rows_by_cell(db):
    epochs = load_epochs(db)
    cols = ["learning_rate", "epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    return epochs[cols].sort_values(["learning_rate", "epoch"]).reset_index(drop=True)


def _first_nonfinite_epoch(tmp_path, db, learning_rate) -> int:
    from kerasgen.train import initial_weights

    ds = data.load_dataset("synthetic-8-1-10-64")
    init = initial_weights("resnet8", ds, 0, tmp_path / f"{db.name}.checkpoints")
    model = build_model("resnet8", ds.num_classes, ds.input_shape)
    model.set_weights(init)
    model.compile(keras.optimizers.SGD(learning_rate),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    losses = model.fit(data.train_dataset(ds, 0, BATCH, 0, 3),
                       steps_per_epoch=data.steps_per_epoch(ds.train_size, BATCH), epochs=3,
                       verbose=0, shuffle=False).history["loss"]
    return next(e for e, loss in enumerate(losses) if not np.isfinite(loss))


def test_diverged_cell_does_not_disturb_its_pack(tmp_path):
    sane = [0.0625, 0.125]
    absurd = 1.0e6
    with_absurd = tmp_path / "with.db"
    alone = tmp_path / "alone.db"
    counts = run_study(study(tmp_path, sane + [absurd]), with_absurd,
                       RunOptions(pack_size=3, data_dir=str(tmp_path)), progress=False)
    assert counts == {"pending": 0, "running": 0, "done": 2, "diverged": 1, "failed": 0}
    # Alone = one cell per fit: also proves a pack of one records the same (unweighted)
    # losses as a pack of several.
    run_study(study(tmp_path, sane), alone, RunOptions(pack_size=1, data_dir=str(tmp_path)),
              progress=False)
    results = load_results(with_absurd).set_index("learning_rate")
    assert results.loc[absurd, "status"] == "diverged"
    # Marked at the epoch whose training loss became non-finite: the same cell trained
    # alone by plain Keras, from the group's saved initial weights, says which one.
    assert results.loc[absurd, "diverged_epoch"] == _first_nonfinite_epoch(
        tmp_path, with_absurd, absurd)
    # The diverged cell has no rows at or after the epoch it diverged.
    epochs = load_epochs(with_absurd)
    assert (epochs.loc[epochs.learning_rate == absurd, "epoch"]
            < results.loc[absurd, "diverged_epoch"]).all()
    got = rows_by_cell(with_absurd)
    got = got[got.learning_rate != absurd].reset_index(drop=True)
    want = rows_by_cell(alone)
    # The sane cells trained as if the absurd one had never been in their pack.
    assert got.equals(want), (got, want)


def test_train_loss_rule_stops_each_cell_at_its_threshold(tmp_path):
    threshold = 1.9
    spec = study(tmp_path, [0.02, 0.5], epochs=6, stop=Stop(rule="train_loss", threshold=threshold))
    run_study(spec, tmp_path / "s.db", RunOptions(pack_size=2, data_dir=str(tmp_path)),
              progress=False)
    results = load_results(tmp_path / "s.db").set_index("learning_rate")
    epochs = load_epochs(tmp_path / "s.db")
    for lr, row in results.iterrows():
        assert row["status"] == "done"
        losses = epochs.loc[epochs.learning_rate == lr].sort_values("epoch")["train_loss"].tolist()
        below = [i for i, loss in enumerate(losses) if loss < threshold]
        if below:  # stopped at the first epoch below the threshold, not later
            assert len(losses) == below[0] + 1
        else:  # never reached it: trained to the cap
            assert len(losses) == spec.epochs
    # The fast learner stopped early, the slow one did not: the rule is per cell.
    assert results.loc[0.5, "epochs_done"] < results.loc[0.02, "epochs_done"]


def test_each_cell_of_a_group_starts_from_the_same_initial_weights(tmp_path):
    from kerasgen.checkpoints import group_weights_path
    from kerasgen.train import initial_weights

    ds = tiny_dataset()
    first = initial_weights("resnet8", ds, 5, tmp_path)
    # Drawn once: a later call (another pack, process or restart) loads, never redraws.
    keras.utils.set_random_seed(123)
    again = initial_weights("resnet8", ds, 5, tmp_path)
    assert group_weights_path(tmp_path, "resnet8", ds.name, 5).exists()
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other_seed = initial_weights("resnet8", ds, 6, tmp_path)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other_seed))


def test_rerunning_a_finished_study_trains_nothing_and_changes_nothing(tmp_path):
    spec = study(tmp_path, [0.0625], epochs=2)
    options = RunOptions(pack_size=1, data_dir=str(tmp_path))
    run_study(spec, tmp_path / "s.db", options, progress=False)
    before = load_epochs(tmp_path / "s.db")
    counts = run_study(spec, tmp_path / "s.db", options, progress=False)
    assert counts["done"] == 1
    assert load_epochs(tmp_path / "s.db").equals(before)
    with Store(tmp_path / "s.db") as store:
        assert store.cell(1)["attempts"] == 1


def test_the_same_cell_trained_twice_gives_the_same_numbers(tmp_path):
    spec = study(tmp_path, [0.1], epochs=2)
    for name in ("a.db", "b.db"):
        run_study(spec, tmp_path / name, RunOptions(pack_size=1, data_dir=str(tmp_path)),
                  progress=False)
    assert rows_by_cell(tmp_path / "a.db").equals(rows_by_cell(tmp_path / "b.db"))


def test_spec_training_options_reach_the_optimizer(tmp_path):
    from kerasgen.packing import PACKS

    spec = study(tmp_path, [0.05], epochs=1).replace(
        training={**Training().__dict__, "momentum": 0.9, "weight_decay": 5e-4})
    run_study(spec, tmp_path / "s.db", RunOptions(pack_size=1, data_dir=str(tmp_path)),
              progress=False)
    # The optimizer that trained the pack (kept for reuse) has them...
    optimizer = PACKS.net.optimizer
    assert isinstance(optimizer, PackedSGD)
    assert optimizer.momentum == 0.9 and optimizer.coupled_weight_decay == 5e-4
    assert optimizer.momentums and any(np.any(m.numpy() != 0) for m in optimizer.momentums)
    # ...and they changed the numbers: plain SGD from the same weights differs.
    run_study(study(tmp_path, [0.05], epochs=1), tmp_path / "plain.db",
              RunOptions(pack_size=1, data_dir=str(tmp_path)), progress=False)
    assert not rows_by_cell(tmp_path / "s.db").equals(rows_by_cell(tmp_path / "plain.db"))
    with Store(tmp_path / "s.db") as store:
        stored = store.study("t")
    import json

    recorded = json.loads(stored["spec_json"])["training"]
    assert recorded["momentum"] == 0.9 and recorded["weight_decay"] == 5e-4
    # How the worker trained is recorded too: what "auto" resolved to on this device.
    env = json.loads(stored["environment_json"])
    (worker,) = [v for k, v in env.items() if k.startswith("worker ")]
    assert worker["jit_compile"] is False and worker["layout"] == "branches"
    assert worker["keras_backend"] == "tensorflow" and worker["pack_size"] == 1


def test_xla_asked_for_under_tensorflow_is_recorded_as_the_compile_that_ran(tmp_path, capsys):
    """The runner's op determinism makes Keras compile without XLA under TensorFlow; the
    study records what ran (the pack's own jit_compile), not what was asked, and says so."""
    import json

    from kerasgen.packing import PACKS

    db = tmp_path / "x.db"
    run_study(study(tmp_path, [0.05], epochs=1), db,
              RunOptions(pack_size=1, jit_compile=True, data_dir=str(tmp_path)), progress=False)
    with Store(db) as store:
        env = json.loads(store.study("t")["environment_json"])
    (worker,) = [v for k, v in env.items() if k.startswith("worker ")]
    assert PACKS.net.jit_compile is False
    assert worker["jit_compile"] is PACKS.net.jit_compile
    assert "--jit-compile on has no effect under TensorFlow" in capsys.readouterr().err


# ---------------------------------------------------------------- clean metrics, dtype, last batch

def test_clean_train_metrics_are_the_weights_evaluated_like_the_test_set_on_a_fixed_subset(
        tmp_path):
    from kerasgen.checkpoints import load_cell_weights, study_files

    # Augmentation on, so Keras's running training metrics are of augmented images.
    spec = study(tmp_path, [0.05, 0.2], epochs=2).replace(
        training={**Training().__dict__, "augment": True})
    db = tmp_path / "c.db"
    run_study(spec, db, RunOptions(pack_size=2, data_dir=str(tmp_path)), progress=False)
    epochs = load_epochs(db)
    assert epochs[["train_eval_loss", "train_eval_accuracy"]].notna().all().all()
    ds = data.load_dataset("synthetic-8-1-10-64")
    subset = data.train_eval_indices(0, ds.train_size, "test", len(ds.y_test))
    assert len(subset) == len(ds.y_test)  # default size: as many images as the test set
    x, y = data.train_eval_arrays(ds, subset)
    for cell in load_results(db).itertuples():
        # The cell's final weights, in a plain single network, in inference mode on
        # the un-augmented subset: exactly the last epoch's clean metrics.
        model = build_model("resnet8", ds.num_classes, ds.input_shape)
        model.set_weights(load_cell_weights(study_files(db, "t"), cell.cell_id))
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        loss, accuracy = model.evaluate(x, y, batch_size=1000, verbose=0)
        last = epochs[epochs.cell_id == cell.cell_id].sort_values("epoch").iloc[-1]
        assert last["train_eval_loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6)
        assert last["train_eval_accuracy"] == pytest.approx(accuracy, abs=1e-9)
        # not Keras's running average over augmented batches
        assert last["train_eval_loss"] != last["train_loss"]
    # train_eval_size = 0: nothing is measured, nothing is recorded.
    off = spec.replace(name="off", training={**spec.to_dict()["training"], "train_eval_size": 0})
    run_study(off, tmp_path / "off.db", RunOptions(pack_size=2, data_dir=str(tmp_path)),
              progress=False)
    assert load_epochs(tmp_path / "off.db")["train_eval_loss"].isna().all()


def test_a_float64_study_trains_in_float64_end_to_end_and_packs_equal_single_cells(
        tmp_path, monkeypatch):
    import json

    from kerasgen.checkpoints import PackCheckpoint, load_cell_weights, study_files
    from kerasgen.packing import PACKS

    # A finished pack's checkpoints are removed; keep them here to read their dtype.
    monkeypatch.setattr(PackCheckpoint, "remove", lambda self: None)

    spec = study(tmp_path, [0.05, 0.2], epochs=2).replace(
        training={**Training().__dict__, "dtype": "float64"})
    packed_db, alone_db = tmp_path / "packed.db", tmp_path / "alone.db"
    run_study(spec, packed_db, RunOptions(pack_size=2, data_dir=str(tmp_path)), progress=False)
    # Variables, optimizer state: float64 in the model that trained.
    assert {v.dtype for v in PACKS.net.variables} == {"float64"}
    assert PACKS.net.optimizer.copy_learning_rates.dtype == "float64"
    files = study_files(packed_db, "t")
    assert all(w.dtype == np.float64 for w in load_cell_weights(files, 1))
    pack = next(files.glob("pack-*"))
    meta = json.loads(next(pack.glob("state-*.json")).read_text())
    with np.load(pack / meta["arrays"]) as saved:
        floats = [saved[k] for k in saved.files if saved[k].dtype.kind == "f"]
    assert floats and all(a.dtype == np.float64 for a in floats)
    # And Keras's float type is back to float32 for whatever the process does next.
    assert keras.config.floatx() == "float32"
    run_study(spec, alone_db, RunOptions(pack_size=1, data_dir=str(tmp_path)), progress=False)
    assert rows_by_cell(packed_db).equals(rows_by_cell(alone_db))


def test_dropping_the_last_batch_changes_only_batch_sizes_that_do_not_divide_the_data(tmp_path):
    # 64 training images: batch 16 has no partial batch, batch 24 ends with 16 images.
    def run(name, last_batch):
        spec = study(tmp_path, [0.1], epochs=2, name=name).replace(
            batch_sizes=[16, 24], training={**Training().__dict__, "last_batch": last_batch})
        run_study(spec, tmp_path / f"{name}.db", RunOptions(pack_size=1, data_dir=str(tmp_path)),
                  progress=False)
        return load_epochs(tmp_path / f"{name}.db")

    keep, drop = run("keep", "keep"), run("drop", "drop")
    cols = ["epoch", "train_loss", "test_loss", "test_accuracy", "train_eval_loss"]
    for bs, same in ((16, True), (24, False)):
        a = keep[keep.batch_size == bs][cols].reset_index(drop=True)
        b = drop[drop.batch_size == bs][cols].reset_index(drop=True)
        assert a.equals(b) is same, bs


def test_a_cell_mirrored_on_two_devices_with_synchronized_bn_matches_one_device(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "helpers" / "mirrored_cell.py"
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    single, mirrored = out["False"], out["True"]
    assert len(single) == len(mirrored) == 2
    for a, b in zip(single, mirrored):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            # float64: only the order of the cross-replica sums differs.
            assert abs(a[key] - b[key]) < 1e-10, (key, a, b)
    # Sanity: the recorded loss is the cross-entropy itself, not lr * cross-entropy.
    assert single[0]["train_loss"] > 1.0


def _backend_run(backend: str, tmp_path, init_from=None, labels=None):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "helpers" / "backend_run.py"
    env = {**__import__("os").environ, "KERAS_BACKEND": backend}
    args = [sys.executable, str(script), str(tmp_path), str(init_from) if init_from else "-"]
    args += [labels] if labels else []
    run = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _close(rows_a, rows_b, atol):
    assert len(rows_a) == len(rows_b) > 0
    for a, b in zip(rows_a, rows_b):
        for key, value in a.items():
            assert abs(value - b[key]) <= atol, (key, a, b)


def test_packed_training_runs_under_the_jax_backend_and_matches_separate_cells(tmp_path):
    pytest.importorskip("jax", reason="JAX is not installed")
    out = _backend_run("jax", tmp_path)
    assert out["backend"] == "jax"
    # Within JAX, in float64: a pack of two (either layout) trains each cell as alone.
    _close(out["branches"], out["separate"], atol=1e-10)
    _close(out["fused"], out["separate"], atol=1e-10)
    # TensorFlow against JAX from the same initial weights: tests/test_backends.py.


def test_a_pack_records_the_training_loss_of_its_cells_alone_when_the_last_batch_is_partial(
        tmp_path):
    # 64 images at batch 24: each epoch ends with a batch of 16. Keras's own per-output
    # loss of a pack then averages batches, not examples (the batch size is unknown to
    # TensorFlow's graph), while a network alone averages examples: the same weights
    # gave train losses 7e-5 apart. The recorded loss is the mean over examples in both.
    spec = study(tmp_path, [0.05, 0.2], epochs=2).replace(batch_sizes=[24])
    for size in (2, 1):
        run_study(spec, tmp_path / f"k{size}.db",
                  RunOptions(pack_size=size, data_dir=str(tmp_path)), progress=False)
    packed, alone = rows_by_cell(tmp_path / "k2.db"), rows_by_cell(tmp_path / "k1.db")
    assert len(packed) == 4 and packed.equals(alone)


def test_a_reused_compiled_pack_trains_exactly_like_a_freshly_built_one(tmp_path):
    from kerasgen.packing import PACKS

    options = RunOptions(pack_size=2, data_dir=str(tmp_path))
    both = study(tmp_path, [0.05, 0.1], epochs=2).replace(batch_sizes=[16, 32])
    PACKS.clear()
    run_study(both, tmp_path / "both.db", options, progress=False)  # bs 32 reuses bs 16's
    PACKS.clear()
    run_study(both.replace(batch_sizes=[32]), tmp_path / "fresh.db", options, progress=False)
    reused = load_epochs(tmp_path / "both.db").query("batch_size == 32")
    fresh = load_epochs(tmp_path / "fresh.db")
    cols = ["learning_rate", "epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    assert reused[cols].reset_index(drop=True).equals(fresh[cols].reset_index(drop=True))


def test_validation_images_are_held_out_measured_like_the_test_set_and_choose_the_kept_epoch(
        tmp_path):
    from kerasgen.checkpoints import load_cell_weights, study_files

    spec = study(tmp_path, [0.05, 0.2], epochs=3).replace(
        training={**Training().__dict__, "validation_size": 16, "best_metric": "val_loss",
                  "train_eval_size": "all"})
    db = tmp_path / "v.db"
    run_study(spec, db, RunOptions(pack_size=2, data_dir=str(tmp_path)), progress=False)
    epochs = load_epochs(db)
    assert epochs[["val_loss", "val_accuracy"]].notna().all().all()
    full = data.load_dataset("synthetic-8-1-10-64")
    rest, held = data.hold_out(full, 16)
    # "all" clean training images are the 48 left: the validation images are not among
    # them, nor in any batch (test_data checks the batches).
    assert rest.train_size == 48 and len(held) == 16
    x, y = data.train_eval_arrays(full, held)
    for cell in load_results(db).itertuples():
        rows = epochs[epochs.cell_id == cell.cell_id].sort_values("epoch")
        # The kept epoch is the one of lowest validation loss, and the cell's numbers
        # are read there.
        kept = rows.loc[rows["val_loss"].idxmin()]
        assert cell.kept_epoch == kept["epoch"] and cell.val_loss == kept["val_loss"]
        assert cell.test_accuracy == kept["test_accuracy"]
        model = build_model("resnet8", full.num_classes, full.input_shape)
        model.set_weights(load_cell_weights(study_files(db, "t"), cell.cell_id))
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        loss, accuracy = model.evaluate(x, y, batch_size=1000, verbose=0)
        last = rows.iloc[-1]
        assert last["val_loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6)
        assert last["val_accuracy"] == pytest.approx(accuracy, abs=1e-9)
