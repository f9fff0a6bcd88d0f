"""Claims about study specifications and the registry's names (kerasgen.spec,
kerasgen.naming). No TensorFlow: tests/test_architecture.py runs this file where
importing it fails."""

from __future__ import annotations

import pytest

from kerasgen import naming
from kerasgen.spec import PRESETS, Spec, SpecError, Stop, Training, from_dict, load_spec, preset

BASE = dict(name="s", models=["resnet8"], datasets=["digits"], batch_sizes=[16],
            learning_rates=[0.1])


# ---------------------------------------------------------------- building

def test_ranges_are_inclusive_and_floats_are_clean():
    spec = from_dict({**BASE, "batch_sizes": {"start": 16, "stop": 64, "step": 16},
                      "learning_rates": {"start": 0.01, "stop": 0.05, "step": 0.01}})
    assert spec.batch_sizes == (16, 32, 48, 64)
    assert spec.learning_rates == (0.01, 0.02, 0.03, 0.04, 0.05)  # not 0.030000000000000002


def test_a_spec_takes_lists_ranges_and_tables_as_the_toml_does():
    spec = Spec(**{**BASE, "batch_sizes": range(16, 65, 16), "seeds": [0, 1],
                   "stop": {"rule": "train_loss", "threshold": 0.1},
                   "training": {"last_batch": "drop"}})
    assert spec.batch_sizes == (16, 32, 48, 64) and spec.seeds == (0, 1)
    assert spec.stop == Stop("train_loss", 0.1) and spec.training.last_batch == "drop"
    assert spec == from_dict(spec.to_dict())  # the stored form round-trips
    assert spec.cell_count == 4 * 2 == len(spec.cells())


def test_cells_come_in_the_order_workers_claim_them():
    spec = Spec(**{**BASE, "batch_sizes": [32, 16], "learning_rates": [0.2, 0.1]})
    assert [(c["batch_size"], c["learning_rate"]) for c in spec.cells()] == [
        (32, 0.2), (32, 0.1), (16, 0.2), (16, 0.1)]


def test_an_unknown_key_is_named_with_the_closest_known_one():
    with pytest.raises(SpecError, match=r"'epoch' \(did you mean 'epochs'\?\)"):
        from_dict({**BASE, "epoch": 3})
    with pytest.raises(SpecError, match=r"\[training\].*'dtyp' \(did you mean 'dtype'\?\)"):
        from_dict({**BASE, "training": {"dtyp": "float64"}})


def test_a_toml_file_is_read_and_a_broken_one_named(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('name = "g"\nmodels = ["vgg11_w16"]\ndatasets = ["synthetic"]\n'
                    "batch_sizes = [32]\nlearning_rates = [0.05]\n[training]\ndtype = 'float64'\n")
    assert load_spec(good).training.dtype == "float64"
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(SpecError, match="bad.toml is not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.toml")


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("change, message", [
    ({"models": ["resnet9"]}, "6n + 2"),
    ({"models": ["vgg12"]}, "VGG depth must be one of"),
    ({"models": ["resnet8_w16"]}, "only VGG takes a _w<width> suffix"),
    ({"datasets": ["imagenet"]}, "Unknown data set 'imagenet'"),
    ({"batch_sizes": [16, 16]}, "lists 16 twice"),
    ({"batch_sizes": [0]}, "must be positive"),
    ({"batch_sizes": [2000]}, "larger than the 1347 training examples"),
    ({"batch_sizes": [16.5]}, "must be a list of integers"),
    ({"learning_rates": [float("nan")]}, "learning_rates must be numbers"),
    ({"learning_rates": [-0.1]}, "must be positive"),
    ({"learning_rates": []}, "must not be empty"),
    ({"seeds": [-1]}, "seeds must be integers from 0"),
    ({"seeds": [True]}, "seeds must be a list of integers"),
    ({"epochs": 0}, "epochs must be >= 1"),
    ({"name": ""}, "name must be a non-empty string"),
    ({"name": "tab\tname"}, "name must be printable text"),
    ({"stop": {"rule": "train_loss"}}, "stop.threshold must be a positive number"),
    ({"stop": {"rule": "never"}}, "stop.rule must be one of"),
    ({"training": {"momentum": 1.0}}, "training.momentum must be in [0, 1)"),
    ({"training": {"augment": "maybe"}}, "training.augment must be"),
    ({"training": {"test_every": 0}}, "training.test_every must be an integer >= 1"),
    ({"training": {"train_eval_size": -1}}, "training.train_eval_size must be"),
    ({"training": {"train_eval_size": 2000}}, "larger than the 1347 training examples"),
    ({"training": {"validation_size": -5}}, "training.validation_size must be a number"),
    ({"training": {"best_metric": "val_accuracy"}}, "set training.validation_size"),
    ({"training": {"validation_size": 1340}}, "leaves 7 of the 1347 training examples"),
    ({"training": {"validation_size": 300, "train_eval_size": 1100}},
     "left after the 300 held out for validation"),
])
def test_a_bad_value_is_refused_naming_it(change, message):
    with pytest.raises(SpecError) as caught:
        from_dict({**BASE, **change})
    assert message in str(caught.value)


def test_a_good_spec_passes_and_defaults_are_the_papers():
    spec = from_dict(BASE)
    assert spec.epochs == 200 and spec.seeds == (0,) and spec.stop == Stop()
    assert spec.training == Training()
    assert (spec.training.momentum, spec.training.weight_decay) == (0.0, 0.0)
    assert spec.training.best_metric == "test_accuracy" and spec.training.last_batch == "keep"
    assert spec.training.validation_size == 0  # the paper's rule: the epoch chosen on test
    held = from_dict({**BASE, "training": {"validation_size": 200, "best_metric": "val_loss"}})
    assert (held.training.validation_size, held.training.best_metric) == (200, "val_loss")


def test_the_presets_are_the_papers_grid_and_the_offline_demo():
    paper = preset("paper")
    assert paper.cell_count == 1600
    assert paper.batch_sizes == tuple(range(16, 321, 16))
    assert paper.learning_rates == tuple(round(0.01 * i, 2) for i in range(1, 21))
    assert paper.training == Training() and paper.epochs == 200
    demo = preset("demo")
    assert demo.training.last_batch == "drop" and demo.cell_count == 64
    assert demo.seeds == (0, 1)  # replicates: the report's intervals over seeds
    assert set(PRESETS) == {"paper", "demo", "smoke"}
    with pytest.raises(SpecError, match="Unknown preset 'x'"):
        preset("x")


# ---------------------------------------------------------------- names

@pytest.mark.parametrize("name, parsed", [
    ("resnet8", ("resnet", 8, True)), ("resnet110", ("resnet", 110, True)),
    ("vgg19", ("vgg", 19, True)), ("vgg19_nobn", ("vgg", 19, False)),
    ("vgg11_w16", ("vgg", 11, True)),
])
def test_model_names_parse(name, parsed):
    assert naming.check_model_name(name) == parsed


@pytest.mark.parametrize("name", ["resnet8\n", "resnet٨", " resnet8", "resnet", "vgg11_w0",
                                  "resnet8_nobn", "ResNet8", 8])
def test_model_names_that_are_not_the_grammar_are_refused(name):
    with pytest.raises(ValueError, match="Unknown model"):
        naming.check_model_name(name)


def test_data_set_names_and_the_sizes_known_from_them():
    assert naming.known_train_size("cifar10") == 50_000
    assert naming.known_train_size("synthetic-8-3-10-64") == 64
    assert naming.known_train_size("mystery") is None
    for bad in ("synthetic-8-3-10", "synthetic-8-3-1-64", "synthetic-٨-3-10-64", "cifar"):
        with pytest.raises(ValueError, match="Unknown data set"):
            naming.check_dataset_name(bad)
