"""Claims about kerasgen.callbacks.SQLiteLogger in real (tiny) Keras training runs."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from kerasgen.callbacks import SQLiteLogger  # noqa: E402
from kerasgen.models import packed  # noqa: E402
from kerasgen.store import Store, load_epochs, load_results  # noqa: E402


def data(n=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 3, size=n), 3).astype("float32")
    return x, y


def tiny():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(3, activation="softmax")])


def cell(lr, study="mine", **extra):
    return {"study": study, "model": "tiny", "dataset": "toy", "batch_size": 5,
            "learning_rate": lr, "seed": 0, **extra}


def rows_of(db, cell_id):
    return load_epochs(db, cell_ids=[cell_id]).sort_values("epoch").to_dict("records")


def expected_extras(history: dict, epoch: int, prefix: str = "",
                    fixed=("loss", "accuracy")) -> dict:
    """Every metric Keras reported for one output, except the fixed columns, named the
    way the store names them: train_<name> / test_<name>."""
    out = {}
    for key, values in history.items():
        split, name = ("test", key[4:]) if key.startswith("val_") else ("train", key)
        if not name.startswith(prefix):
            continue
        name = name[len(prefix):]
        if name not in fixed:
            out[f"{split}_{name}"] = values[epoch]
    return out


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def test_logger_in_a_plain_fit_writes_one_row_per_epoch_with_exactly_the_keras_metrics(
        tmp_path):
    db = tmp_path / "runs.db"
    x, y = data(10, 0)
    xv, yv = data(10, 1)
    model = tiny()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy",
                  metrics=["accuracy", "mae",
                           keras.metrics.MeanSquaredError(name="an_odd_metric_name")])
    history = model.fit(x, y, validation_data=(xv, yv), epochs=3, batch_size=5, verbose=0,
                        callbacks=[SQLiteLogger(db, cell(0.1))]).history
    assert {"loss", "accuracy", "mae", "an_odd_metric_name", "val_loss"} <= set(history)

    with Store(db) as store:
        cell_id = store.cell_id("mine", "tiny", "toy", 5, 0.1, 0)
        got = rows_of(store, cell_id)
        summary = store.cell(cell_id)
    assert [r["epoch"] for r in got] == [0, 1, 2]
    for e, row in enumerate(got):
        assert row["train_loss"] == pytest.approx(history["loss"][e], rel=1e-6)
        assert row["train_accuracy"] == pytest.approx(history["accuracy"][e], rel=1e-6)
        assert row["test_loss"] == pytest.approx(history["val_loss"][e], rel=1e-6)
        assert row["test_accuracy"] == pytest.approx(history["val_accuracy"][e], rel=1e-6)
        extras = json.loads(row["metrics_json"])
        want = expected_extras(history, e)
        assert set(extras) == set(want) == {"train_mae", "test_mae",
                                            "train_an_odd_metric_name",
                                            "test_an_odd_metric_name"}
        for key, value in want.items():
            assert extras[key] == pytest.approx(value, rel=1e-6)
        assert row["wall_seconds"] > 0
    assert summary["status"] == "done" and summary["epochs_done"] == 3
    best = max(history["val_accuracy"])
    assert summary["best_test_accuracy"] == pytest.approx(best, rel=1e-6)
    assert summary["best_epoch"] == history["val_accuracy"].index(best)
    assert summary["final_train_loss"] == pytest.approx(history["loss"][-1], rel=1e-6)
    frame = load_results(db)
    assert list(frame["status"]) == ["done"] and frame["ratio"].iloc[0] == pytest.approx(50)


def test_logger_on_a_packed_model_puts_each_copys_metrics_on_its_own_cell(tmp_path):
    db = tmp_path / "runs.db"
    x, y = data(10, 0)
    xv, yv = data(10, 1)
    lrs = [0.05, 0.5]
    model = packed(tiny, 2)
    names = [o.name.split("/")[0] for o in model.outputs]
    model.compile(
        optimizer=keras.optimizers.SGD(1.0),
        loss={"copy_0": "categorical_crossentropy", "copy_1": "categorical_crossentropy"},
        loss_weights={"copy_0": lrs[0], "copy_1": lrs[1]},
        metrics={"copy_0": ["accuracy"], "copy_1": ["accuracy", "mae"]})
    history = model.fit(x, {"copy_0": y, "copy_1": y},
                        validation_data=(xv, {"copy_0": yv, "copy_1": yv}),
                        epochs=3, batch_size=5, verbose=0,
                        callbacks=[SQLiteLogger(db, [cell(lr) for lr in lrs])]).history
    assert {"copy_0_loss", "copy_1_loss", "val_copy_1_accuracy", "loss"} <= set(history), (
        names, sorted(history))
    # The copies really took different paths, so a mix-up could not go unnoticed.
    assert history["copy_0_loss"][-1] != pytest.approx(history["copy_1_loss"][-1], rel=1e-3)

    with Store(db) as store:
        ids = [store.cell_id("mine", "tiny", "toy", 5, lr, 0) for lr in lrs]
        statuses = [store.cell(i)["status"] for i in ids]
        got = [rows_of(store, i) for i in ids]
    assert statuses == ["done", "done"]
    for k in range(2):
        assert [r["epoch"] for r in got[k]] == [0, 1, 2]
        for e, row in enumerate(got[k]):
            assert row["train_loss"] == pytest.approx(history[f"copy_{k}_loss"][e], rel=1e-6)
            assert row["train_accuracy"] == pytest.approx(history[f"copy_{k}_accuracy"][e],
                                                          rel=1e-6)
            assert row["test_loss"] == pytest.approx(history[f"val_copy_{k}_loss"][e],
                                                     rel=1e-6)
            assert row["test_accuracy"] == pytest.approx(
                history[f"val_copy_{k}_accuracy"][e], rel=1e-6)
            want = expected_extras(history, e, prefix=f"copy_{k}_")
            extras = json.loads(row["metrics_json"]) if row["metrics_json"] else {}
            assert set(extras) == set(want)
            for key, value in want.items():
                assert extras[key] == pytest.approx(value, rel=1e-6)
            # The packed total (sum of lr-weighted losses) belongs to no cell.
            assert row["train_loss"] != pytest.approx(history["loss"][e], rel=1e-6)
    assert set(json.loads(got[1][0]["metrics_json"])) == {"train_mae", "test_mae"}
    assert got[0][0]["metrics_json"] is None


def _nan_switch():
    """A loss that turns NaN from the epoch a callback chooses (deterministic
    divergence), and that callback."""
    scale = keras.Variable(1.0, trainable=False, dtype="float32")

    def loss(y_true, y_pred):
        return keras.losses.categorical_crossentropy(y_true, y_pred) * scale

    class Switch(keras.callbacks.Callback):
        def __init__(self, at):
            super().__init__()
            self.at = at

        def on_epoch_begin(self, epoch, logs=None):
            scale.assign(float("nan") if epoch >= self.at else 1.0)

    return loss, Switch


def test_a_cell_whose_training_loss_becomes_nan_is_diverged_at_that_epoch_and_not_written_on(
        tmp_path):
    db = tmp_path / "runs.db"
    x, y = data(10, 0)
    loss, Switch = _nan_switch()
    model = tiny()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, metrics=["accuracy"])
    history = model.fit(x, y, validation_data=data(10, 1), epochs=6, batch_size=5,
                        verbose=0, callbacks=[Switch(2), SQLiteLogger(db, cell(0.1))]).history
    assert math.isnan(history["loss"][2])
    assert len(history["loss"]) == 3  # nothing left to train: the logger stopped the fit
    with Store(db) as store:
        cell_id = store.cell_id("mine", "tiny", "toy", 5, 0.1, 0)
        summary = store.cell(cell_id)
        got = rows_of(store, cell_id)
    assert (summary["status"], summary["diverged_epoch"]) == ("diverged", 2)
    assert [r["epoch"] for r in got] == [0, 1]
    assert all(math.isfinite(r["train_loss"]) for r in got)
    assert summary["epochs_done"] == 2


def test_in_a_pack_only_the_copy_that_diverges_stops_being_written(tmp_path):
    db = tmp_path / "runs.db"
    x, y = data(10, 0)
    loss, Switch = _nan_switch()
    lrs = [0.05, 0.5]
    model = packed(tiny, 2)
    model.compile(optimizer=keras.optimizers.SGD(1.0),
                  loss={"copy_0": "categorical_crossentropy", "copy_1": loss},
                  loss_weights={"copy_0": lrs[0], "copy_1": lrs[1]},
                  metrics={"copy_0": ["accuracy"], "copy_1": ["accuracy"]})
    history = model.fit(x, {"copy_0": y, "copy_1": y}, epochs=4, batch_size=5, verbose=0,
                        callbacks=[Switch(1), SQLiteLogger(db, [cell(lr) for lr in lrs])]
                        ).history
    assert len(history["loss"]) == 4
    assert all(math.isfinite(v) for v in history["copy_0_loss"])
    with Store(db) as store:
        ids = [store.cell_id("mine", "tiny", "toy", 5, lr, 0) for lr in lrs]
        cells = [store.cell(i) for i in ids]
        got = [rows_of(store, i) for i in ids]
    assert cells[0]["status"] == "done" and cells[0]["diverged_epoch"] is None
    assert [r["epoch"] for r in got[0]] == [0, 1, 2, 3]
    for e, row in enumerate(got[0]):
        assert row["train_loss"] == pytest.approx(history["copy_0_loss"][e], rel=1e-6)
    assert (cells[1]["status"], cells[1]["diverged_epoch"]) == ("diverged", 1)
    assert [r["epoch"] for r in got[1]] == [0]


def test_logging_a_second_fit_into_a_finished_cell_is_refused_with_a_clear_error(tmp_path):
    import keras
    import numpy as np

    from kerasgen.callbacks import SQLiteLogger

    x = np.random.default_rng(0).random((10, 4)).astype("float32")
    y = (x.sum(axis=1) > 2).astype("int32")
    cell = dict(study="mine", model="mlp", dataset="toy", batch_size=5, learning_rate=0.01, seed=0)

    def fit():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model.fit(x, y, epochs=2, batch_size=5, verbose=0,
                         callbacks=[SQLiteLogger(tmp_path / "u.db", cell=cell)])

    fit()
    with pytest.raises(ValueError, match="finished cell .*cell 1 is done"):
        fit()


# ---------------------------------------------------------------- what the logger refuses

def _fit(db, the_cell, lr=0.1, batch_size=5, epochs=2):
    x, y = data(10, 0)
    model = tiny()
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    return model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0,
                     callbacks=[SQLiteLogger(db, the_cell)])


@pytest.mark.parametrize("change, words", [
    ({"learning_rate": -1.0}, "learning_rate must be a positive number. Received: learning_rate=-1.0"),
    ({"learning_rate": float("nan")}, "learning_rate must be a positive number"),
    ({"batch_size": True}, "batch_size must be an integer >= 1. Received: batch_size=True"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"seed": 2**32}, "seed must be an integer from 0 to 4294967295"),
    ({"model": ""}, "model must be a non-empty name"),
    ({"study": "a\nb"}, "study must be printable text"),
    ({"optimizer": ["adam"]}, "the extra hyper-parameter 'optimizer' must be text"),
])
def test_a_bad_cell_is_refused_at_construction_naming_the_value(tmp_path, change, words):
    with pytest.raises(ValueError) as caught:
        SQLiteLogger(tmp_path / "x.db", {**cell(0.1), **change})
    assert words in str(caught.value)
    assert not (tmp_path / "x.db").exists()  # nothing was opened, nothing written


def test_a_cell_missing_keys_names_them(tmp_path):
    with pytest.raises(ValueError, match="cell lacks learning_rate, seed"):
        SQLiteLogger(tmp_path / "x.db", {"study": "s", "model": "m", "dataset": "d",
                                         "batch_size": 5})


def test_extra_keys_are_kept_as_the_cells_hyper_parameters(tmp_path):
    db = tmp_path / "h.db"
    _fit(db, cell(0.1, optimizer="sgd", width=8, note=None))
    frame = load_results(db)
    assert json.loads(frame.iloc[0]["hparams"]) == {"note": None, "optimizer": "sgd", "width": 8}
    # The same cell with other hyper-parameters would mix two trainings: refused.
    with pytest.raises(ValueError, match="logged with extra hyper-parameters"):
        _fit(db, cell(0.1, optimizer="adam", width=8, note=None))


def test_a_cell_outside_a_studys_specification_is_refused_and_nothing_is_added(tmp_path):
    from kerasgen.spec import Spec

    db = tmp_path / "spec.db"
    spec = Spec(name="demo", models=["resnet8"], datasets=["digits"], batch_sizes=[16],
                learning_rates=[0.1])
    with Store(db) as store:
        store.create_study(spec.name, spec.to_dict(), spec.cells())
    foreign = {"study": "demo", "model": "tiny", "dataset": "toy", "batch_size": 5,
               "learning_rate": 0.1, "seed": 0}
    with pytest.raises(ValueError, match="created from a specification that has no cell"):
        _fit(db, foreign)
    assert len(load_results(db)) == 1 and load_epochs(db).empty


@pytest.mark.parametrize("fit_lr, fit_batch, words", [
    (0.01, 5, "optimizer has learning_rate=0.01, but the cell says learning_rate=0.1"),
    (0.1, 2, "the fit's batches hold 2 examples, but the cell says batch_size=5"),
])
def test_a_fit_that_is_not_the_cell_is_refused_before_anything_is_written(tmp_path, fit_lr,
                                                                          fit_batch, words):
    db = tmp_path / "m.db"
    with pytest.raises(ValueError) as caught:
        _fit(db, cell(0.1), lr=fit_lr, batch_size=fit_batch)
    assert words in str(caught.value)
    assert not db.exists() or load_results(db).empty  # no cell, no epoch


# ---------------------------------------------------------------- one writer per cell

LOGGER_FIT = os.path.join(os.path.dirname(__file__), "helpers", "logger_fit.py")
MLP_CELL = {"study": "mine", "model": "mlp", "dataset": "toy", "batch_size": 5,
            "learning_rate": 0.1, "seed": 0}


def _mlp_fit(db, epochs=3, initial_epoch=0, logger=None, raise_at=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4)).astype("float32")
    y = rng.integers(0, 3, size=10)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    class Break(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == raise_at:
                raise RuntimeError("broken")

    logger = logger or SQLiteLogger(db, MLP_CELL)
    model.fit(x, y, epochs=epochs, initial_epoch=initial_epoch, batch_size=5, verbose=0,
              validation_data=(x, y), callbacks=[logger, Break()])
    return logger


def test_a_second_process_logging_a_cell_another_live_logger_trains_is_refused(tmp_path):
    import subprocess
    import sys

    from kerasgen.store import CellBusy

    db = tmp_path / "two.db"
    other = subprocess.Popen([sys.executable, LOGGER_FIT, str(db), "mine", "slow"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "training"
        with pytest.raises(CellBusy, match=rf"cell 1 is being trained by .*:{other.pid}"):
            _mlp_fit(db)
        rows = load_epochs(db)
        assert rows["epoch"].is_unique  # the two fits never interleaved their epochs
        assert set(load_results(db)["worker"]) == {f"{os.uname().nodename}:{other.pid}"}
    finally:
        other.kill()
        other.wait()


def test_a_logger_reused_with_finish_false_numbers_its_second_fit_on_and_drops_nothing(
        tmp_path, capfd):
    db = tmp_path / "again.db"
    logger = SQLiteLogger(db, MLP_CELL, finish=False)
    _mlp_fit(db, epochs=3, logger=logger)
    assert load_results(db)["status"].tolist() == ["pending"]  # given back between fits
    _mlp_fit(db, epochs=2, logger=logger)  # Keras numbers this fit's epochs 0, 1 again
    assert load_epochs(db)["epoch"].tolist() == [0, 1, 2, 3, 4]
    assert "numbered on from epoch 3" in capfd.readouterr().err
    # A fit that continues with initial_epoch is numbered as Keras numbers it.
    _mlp_fit(db, epochs=7, initial_epoch=5, logger=logger)
    assert load_epochs(db)["epoch"].tolist() == list(range(7))


def test_an_epoch_written_twice_as_new_is_refused_not_dropped(tmp_path):
    from kerasgen.store import DuplicateEpoch

    with Store(tmp_path / "d.db") as store:
        store.ensure_cell("s", "m", "d", 16, 0.1, 0)
        store.record_epoch(1, 0, {"train_loss": 1.0})
        assert store.record_epoch(1, 0, {"train_loss": 1.0}) is False  # a replay
        with pytest.raises(DuplicateEpoch, match="epoch 0 of cell 1 is already recorded"):
            store.record_epoch(1, 0, {"train_loss": 2.0}, replay=False)
        assert store.epochs_of(1)[0]["train_loss"] == 1.0


def test_a_fit_that_raised_leaves_its_cell_failed_for_the_next_logger_of_the_process(tmp_path):
    from kerasgen.store import CellBusy

    db = tmp_path / "raised.db"
    with pytest.raises(RuntimeError, match="broken"):
        _mlp_fit(db, epochs=5, raise_at=1)
    assert load_results(db)["status"].tolist() == ["running"]
    with pytest.raises(CellBusy, match="cell 1 is failed"):
        _mlp_fit(db)
    cell = load_results(db).iloc[0]
    assert cell["status"] == "failed" and "stopped after 2 epochs" in cell["error"]
    assert load_epochs(db)["epoch"].tolist() == [0, 1]  # its rows are kept


@pytest.mark.slow
def test_a_run_after_a_logger_fit_that_raised_ends_instead_of_waiting_for_its_cell(tmp_path):
    import subprocess
    import sys

    # A spec study with one cell, logged by a user's fit that raised; then `kerasgen run`
    # on the study. Before: the cell stayed running with no pack and the run waited for it
    # forever. Now the logger holds a claim, and the dead logger's cell is failed at once.
    db = tmp_path / "s.db"
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "mine"\nmodels = ["resnet8"]\ndatasets = ["synthetic-8-1-3-10"]\n'
                    'batch_sizes = [5]\nlearning_rates = [0.1]\nepochs = 3\n')
    from kerasgen.spec import load_spec

    with Store(db) as store:
        s = load_spec(spec)
        store.create_study(s.name, s.to_dict(), s.cells())
    fit = subprocess.run([sys.executable, LOGGER_FIT, str(db), "mine", "raise", "resnet8",
                          "synthetic-8-1-3-10"],
                         capture_output=True, text=True, timeout=300)
    assert fit.returncode != 0 and "broke in epoch 2" in fit.stderr
    assert load_results(db)["status"].tolist() == ["running"]
    run = subprocess.run([sys.executable, "-m", "kerasgen", "run", str(spec), "--db", str(db),
                          "--data-dir", str(tmp_path), "--progress", "plain"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr  # it ended: one cell failed
    cell = load_results(db).iloc[0]
    assert cell["status"] == "failed" and "SQLiteLogger" in cell["error"]
    assert load_epochs(db)["epoch"].tolist() == [0, 1, 2]
