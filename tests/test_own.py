"""Your own network and data under the study's controls (issue 23): models and data sets
by import path or registered name, tfds by name, NumPy types, studies that grow, the
clean training metrics for a user's own fit; every bad input named before anything is
claimed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kerasgen.options import RunOptions
from kerasgen.spec import Spec, SpecError
from kerasgen.store import StudyMismatch, load_epochs, load_results

TESTS = Path(__file__).parent
COLUMNS = ["batch_size", "learning_rate", "seed", "epoch", "train_loss", "train_accuracy",
           "test_loss", "test_accuracy", "train_eval_loss", "train_eval_accuracy"]


def rows(db, study=None):
    return (load_epochs(db, study=study)[COLUMNS].sort_values(COLUMNS[:4])
            .reset_index(drop=True))


def spec(**changes):
    base = dict(name="own", models=("helpers.own:resnet8",), datasets=("synthetic-8-1-3-32",),
                batch_sizes=(16,), learning_rates=(0.1, 0.2), epochs=2)
    return Spec(**{**base, **changes})


def run(spec_, db, tmp_path, **kwargs):
    from kerasgen.worker import run_study

    options = kwargs.pop("options", None) or RunOptions(pack_size=2, data_dir=str(tmp_path))
    return run_study(spec_, db, options, progress=False, **kwargs)


def env_with_tests():
    """Worker processes find ``helpers.own`` as a user's installed package would be found."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.mark.slow
def test_an_own_network_by_import_path_gives_the_builtin_numbers_in_one_or_two_workers(
        tmp_path, monkeypatch):
    run(spec(models=("resnet8",)), tmp_path / "builtin.db", tmp_path)
    run(spec(), tmp_path / "own.db", tmp_path)
    assert rows(tmp_path / "own.db").equals(rows(tmp_path / "builtin.db"))
    # Two worker processes import the network by its path, as the test's process does.
    monkeypatch.setenv("PYTHONPATH", env_with_tests()["PYTHONPATH"])
    from kerasgen.worker import run_study

    run_study(spec(batch_sizes=(16, 32)), tmp_path / "two.db",
              RunOptions(pack_size=2, data_dir=str(tmp_path)), workers=2, progress=False)
    two = rows(tmp_path / "two.db")
    assert two[two.batch_size == 16].reset_index(drop=True).equals(rows(tmp_path / "own.db"))
    assert len(two) == 8


def test_a_registered_name_is_recorded_with_its_import_path_for_worker_processes():
    import helpers.own as own

    from kerasgen import register_model
    from kerasgen.spec import from_dict

    register_model("tiny_mlp", own.mlp)
    s = spec(models=("tiny_mlp",), model_args={"tiny_mlp": {"width": 4}})
    assert s.model_targets == {"tiny_mlp": "helpers.own:mlp"}
    # A fresh process (here: the registry emptied) reads the name back from the store.
    from kerasgen import naming

    naming._REGISTERED.pop("tiny_mlp")
    again = from_dict(s.to_dict())
    assert again.model("tiny_mlp").target == "helpers.own:mlp"
    assert dict(again.model("tiny_mlp").args) == {"width": 4}
    with pytest.raises(ValueError, match="built-in network's name"):
        register_model("resnet20", own.mlp)


@pytest.mark.slow
def test_a_changed_module_is_refused_on_resume_naming_what_changed(tmp_path):
    module = tmp_path / "mynets.py"
    module.write_text((TESTS / "helpers" / "own.py").read_text())
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text('name = "m"\nmodels = ["mynets:mlp"]\ndatasets = ["synthetic-8-1-3-32"]\n'
                         'batch_sizes = [16]\nlearning_rates = [0.1]\nepochs = 1\n')
    env = {**env_with_tests(), "PYTHONPATH": f"{tmp_path}{os.pathsep}{TESTS}"}
    args = [sys.executable, "-m", "kerasgen", "run", str(spec_file), "--db",
            str(tmp_path / "m.db"), "--data-dir", str(tmp_path), "--progress", "plain"]
    first = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr  # the same network: fine
    module.write_text(module.read_text().replace("width=16", "width=17"))
    changed = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env)
    assert changed.returncode == 2, changed.stderr
    assert "mynets:mlp on synthetic-8-1-3-32" in changed.stderr
    assert "network_hash" in changed.stderr and "module_hash" in changed.stderr


@pytest.mark.parametrize("changes, words", [
    ({"models": ("helpers.nope:build",)}, ["helpers.nope", "does not import"]),
    ({"models": ("helpers.own:not_a_model",)}, ["returned str, not a keras.Model"]),
    ({"models": ("helpers.own:three_outputs",), "datasets": ("synthetic-8-1-10-32",)},
     ["outputs shape (1, 3)", "(batch, 10)"]),
    ({"models": ("helpers.own:softmax_net",)}, ["ends in a softmax"]),
    ({"models": ("helpers.own:mlp",), "datasets": ("helpers.own:mismatched",)},
     ["'helpers.own:mismatched'", "x_train has 64 examples but y_train has 63"]),
    ({"models": ("helpers.own:mlp",), "datasets": ("helpers.own:labels_out_of_range",)},
     ["labels run from -1"]),
    ({"models": ("helpers.own:mlp",), "datasets": ("helpers.own:nan_pixels",)},
     ["NaN or infinite values (example 5"]),
])
def test_bad_networks_and_data_are_named_before_anything_is_claimed(tmp_path, changes, words):
    from kerasgen.data import DataError
    from kerasgen.naming import ModelError

    db = tmp_path / "bad.db"
    with pytest.raises((ModelError, DataError)) as caught:
        run(spec(**changes), db, tmp_path)
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))
    assert not db.exists()


def test_the_cli_names_a_network_that_does_not_import_with_exit_2(tmp_path):
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text('name = "m"\nmodels = ["helpers.nope:build"]\n'
                         'datasets = ["synthetic-8-1-3-32"]\nbatch_sizes = [16]\n'
                         'learning_rates = [0.1]\nepochs = 1\n')
    run_ = subprocess.run([sys.executable, "-m", "kerasgen", "run", str(spec_file), "--db",
                           str(tmp_path / "m.db")], capture_output=True, text=True, timeout=300,
                          env=env_with_tests())
    assert run_.returncode == 2 and "does not import" in run_.stderr, run_.stderr
    assert "Traceback" not in run_.stderr and not (tmp_path / "m.db").exists()


@pytest.mark.slow
def test_a_data_set_of_your_own_trains_with_its_own_normalisation_and_augmentation(tmp_path):
    from kerasgen.data import load_dataset

    ds = load_dataset("helpers.own:blobs_dataset")
    assert ds.input_shape == (6, 6, 1) and ds.num_classes == 3 and ds.augment
    arrays = load_dataset("helpers.own:blobs")
    assert arrays.input_shape == (6, 6, 1) and not arrays.augment  # (n, h, w) got a channel
    run(spec(models=("helpers.own:mlp",), datasets=("helpers.own:blobs_dataset",),
             model_args={"helpers.own:mlp": {"width": 8}}), tmp_path / "d.db", tmp_path)
    got = load_results(tmp_path / "d.db")
    assert set(got["status"]) == {"done"} and got["gap"].notna().all()


@pytest.mark.slow
def test_a_tfds_data_set_by_name_trains_through_the_cifar_path(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    from kerasgen import data

    # tfds's own mock (as the CIFAR loader's tests use it): it "downloads" generated data.
    monkeypatch.setattr(data, "_network_reachable", lambda *a, **k: True)
    with tfds.testing.mock_data(num_examples=40):
        run(spec(models=("helpers.own:mlp",), datasets=("tfds:mnist",)), tmp_path / "t.db",
            tmp_path)
    got = load_results(tmp_path / "t.db")
    assert set(got["status"]) == {"done"} and len(got) == 2


@pytest.mark.parametrize("name, words", [
    ("tfds:no_such_data_set", ["knows no 'no_such_data_set'"]),
    ("tfds:glue/cola", ["not image classification"]),
])
def test_a_tfds_name_that_cannot_train_is_named(tmp_path, name, words):
    pytest.importorskip("tensorflow_datasets")
    from kerasgen.data import DataError, load_dataset

    with pytest.raises(DataError) as caught:
        load_dataset(name, data_dir=tmp_path)
    for word in words:
        assert word in str(caught.value)


def test_a_tfds_data_set_not_prepared_offline_fails_fast_naming_what_to_do(tmp_path,
                                                                          monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    from kerasgen import data
    from kerasgen.data import DataError

    monkeypatch.setattr(data, "_network_reachable", lambda *a, **k: False)
    with pytest.raises(DataError, match="not prepared under .*network is unreachable"):
        data.load_dataset("tfds:mnist", data_dir=tmp_path)


def test_numpy_arrays_and_scalars_are_taken_where_numbers_are_meant():
    s = Spec(name="np", models=np.array(["resnet8"]), datasets=["digits"],
             batch_sizes=np.array([16, 32]), learning_rates=np.linspace(0.05, 0.1, 2),
             seeds=np.arange(2), epochs=np.int64(3))
    assert s.batch_sizes == (16, 32) and type(s.batch_sizes[0]) is int
    assert s.learning_rates == (0.05, 0.1) and type(s.learning_rates[0]) is float
    assert s.epochs == 3 and type(s.epochs) is int
    with pytest.raises(SpecError, match="batch_sizes must be a list of integers"):
        Spec(name="np", models=["resnet8"], datasets=["digits"],
             batch_sizes=np.array([16.5]), learning_rates=[0.1])


def test_a_logger_takes_numpy_numbers_and_measures_the_clean_training_metrics(tmp_path):
    import keras

    from kerasgen.callbacks import SQLiteLogger

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 4)).astype("float32"), rng.integers(0, 3, 20)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    cell = {"study": "mine", "model": "mlp", "dataset": "toy", "batch_size": np.int64(10),
            "learning_rate": np.float32(0.1), "seed": np.uint8(0)}
    logger = SQLiteLogger(tmp_path / "l.db", cell, train_eval_data=(x[:10], y[:10]))
    model.fit(x, y, batch_size=10, epochs=2, validation_data=(x, y), verbose=0,
              callbacks=[logger])
    got = load_results(tmp_path / "l.db").iloc[0]
    assert got["batch_size"] == 10 and got["train_eval_accuracy"] == got["train_eval_accuracy"]
    assert not np.isnan(got["gap"])
    clean = model.evaluate(x[:10], y[:10], verbose=0, return_dict=True)
    assert load_epochs(tmp_path / "l.db")["train_eval_loss"].iloc[-1] == pytest.approx(
        clean["loss"], rel=1e-6)


@pytest.mark.slow
def test_a_study_grows_its_old_cells_untouched_and_its_new_ones_as_if_there_from_the_start(
        tmp_path, capfd):
    small = spec(models=("resnet8",), learning_rates=(0.1, 0.2), epochs=2)
    db = tmp_path / "grow.db"
    run(small, db, tmp_path)
    before = rows(db)
    large = spec(models=("resnet8",), learning_rates=(0.1, 0.15, 0.2), epochs=3)
    with pytest.raises(StudyMismatch, match=r"adds \+ learning rates \[0.15\].*--extend"):
        run(large, db, tmp_path)
    run(large, db, tmp_path, extend=True)
    assert "+ learning rates [0.15]; epochs 2 -> 3" in capfd.readouterr().err
    after = rows(db)
    old = after.merge(before, on=COLUMNS[:4], suffixes=("", "_before"))
    assert len(old) == len(before)  # every old row is still there ...
    for col in COLUMNS[4:]:  # ... exactly as it was
        assert (old[col].fillna(-1) == old[f"{col}_before"].fillna(-1)).all(), col
    run(large, tmp_path / "scratch.db", tmp_path)
    assert after.equals(rows(tmp_path / "scratch.db"))
    changed = spec(models=("resnet8",), learning_rates=(0.1, 0.15, 0.2), epochs=3,
                   training={"momentum": 0.9})
    with pytest.raises(StudyMismatch, match="training"):
        run(changed, db, tmp_path, extend=True)
