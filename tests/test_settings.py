"""Settings read once per process (oneDNN at TensorFlow's import, the Keras backend at
Keras's) reach every run as asked, are recorded per worker, and a study never silently
mixes runs trained under different kernel settings (issue 28)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kerasgen.options import RunOptions
from kerasgen.runtime import unhonoured_settings
from kerasgen.settings import SettingsMismatch, kernel_differences
from kerasgen.store import Store, load_results

HELPER = Path(__file__).parent / "helpers" / "preloaded_tf.py"


def _helper(tmp_path, process):
    run = subprocess.run([sys.executable, str(HELPER), str(tmp_path), process],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1]), run.stderr


@pytest.mark.slow
def test_a_run_asking_for_a_onednn_setting_this_process_cannot_give_trains_in_a_fresh_one(
        tmp_path):
    # The cause of issue 28: TensorFlow already imported with oneDNN off, a run asking
    # for on trained here silently with off (and so differed from fresh Ray workers).
    out, err = _helper(tmp_path, "auto")
    assert out["here"] is False
    (worker,) = out["workers"].values()
    assert worker["onednn_in_effect"] is True
    assert worker["pid"] != out["pid"]  # not this process: a fresh worker
    assert "training in a fresh worker process" in err and "oneDNN" in err


@pytest.mark.slow
def test_a_run_pinned_to_this_process_refuses_a_setting_it_cannot_give_naming_both(tmp_path):
    out, _ = _helper(tmp_path, "this")
    assert "oneDNN" in out["refused"]
    assert "on for a fresh process" in out["refused"]
    assert "with oneDNN off" in out["refused"]
    assert out.get("workers", {}) == {}  # nothing was trained or recorded


def test_nothing_loaded_means_every_setting_can_still_take_effect(monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    assert unhonoured_settings(True) == []
    assert unhonoured_settings(False, "jax") == []


def _study(tmp_path, env_of_first_worker):
    db = tmp_path / "s.db"
    store = Store(db)
    study_id = store.create_study("s", {"name": "s"}, [
        {"model": "m", "dataset": "d", "batch_size": 16, "learning_rate": 0.1, "seed": 0}])
    store.update_study_environment(study_id, **{"worker a:1": env_of_first_worker})
    return db, store, study_id


KERNELS = {"keras_backend": "tensorflow", "backend_version": "2.21.0",
           "onednn_in_effect": False, "jit_compile": False, "device": "CPU (x, 2 cores)"}


def test_a_worker_under_other_kernel_settings_is_refused_naming_the_difference(tmp_path):
    from kerasgen.worker import record_worker

    db, store, study_id = _study(tmp_path, KERNELS)
    mine = {**KERNELS, "onednn_in_effect": True}
    with pytest.raises(SettingsMismatch, match=r"onednn_in_effect True here, False for a:1"):
        record_worker(store, study_id, "b:2", mine, RunOptions())
    assert "worker b:2" not in store.study_environment(study_id)
    # The same settings join the study.
    record_worker(store, study_id, "c:3", dict(KERNELS), RunOptions())
    assert "worker c:3" in store.study_environment(study_id)
    store.close()


def test_forced_mixed_settings_are_recorded_and_the_report_names_both(tmp_path):
    from kerasgen.report import render_report
    from kerasgen.worker import record_worker

    db, store, study_id = _study(tmp_path, KERNELS)
    mine = {**KERNELS, "onednn_in_effect": True}
    record_worker(store, study_id, "b:2", mine, RunOptions(allow_mixed_settings=True))
    cell = store.conn.execute("SELECT cell_id FROM cells").fetchone()[0]
    store.conn.execute("INSERT INTO cells (study_id, model, dataset, batch_size, "
                       "learning_rate, seed, updated_at, worker, status) "
                       "VALUES (?, 'm', 'd', 32, 0.1, 0, 'now', 'b:2', 'done')", (study_id,))
    store.conn.execute("UPDATE cells SET worker = 'a:1', status = 'done' WHERE cell_id = ?",
                       (cell,))
    store.close()
    frame = load_results(db)
    assert sorted(frame["trained_under"]) == [
        "tensorflow 2.21.0, oneDNN off, XLA off, CPU (x, 2 cores)",
        "tensorflow 2.21.0, oneDNN on, XLA off, CPU (x, 2 cores)"]
    report = render_report(frame)
    assert "2 different kernel settings" in report and "oneDNN on" in report


def test_kernel_differences_ignore_settings_that_do_not_choose_kernels():
    assert kernel_differences({**KERNELS, "pack_size": 4}, {"a": {**KERNELS, "pack_size": 2}}) == []
    assert kernel_differences({**KERNELS, "device": "GPU"}, {"a": KERNELS}) == [
        "device 'GPU' here, 'CPU (x, 2 cores)' for a"]


# ---------------------------------------------------------------- choosing the backend

def _choice_spec(**changes):
    from kerasgen.spec import Spec

    base = dict(name="b", models=("resnet8",), datasets=("digits",), batch_sizes=(16, 32),
                learning_rates=(0.1, 0.2), epochs=2)
    return Spec(**{**base, **changes})


@pytest.fixture
def backends(monkeypatch, tmp_path):
    from kerasgen import backends

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(backends, "installed", lambda name: True)
    measured = []

    def fake_measure(backend, shape, seconds, input_shape, classes):
        measured.append(backend)
        return {"tensorflow": {"rate": 100.0, "compile": 2.0},
                "jax": {"rate": 150.0, "compile": 30.0}}[backend]

    monkeypatch.setattr(backends, "measure", fake_measure)
    return backends, measured


SHAPES = {"digits": ((8, 8, 1), 10, 1347)}


def test_auto_keeps_the_backend_of_the_studys_earlier_runs(backends):
    module, measured = backends
    got = module.choose(_choice_spec(), RunOptions(keras_backend="auto"), ["jax"], SHAPES)
    assert got[0] == "jax" and "earlier runs" in got[1] and measured == []


def test_auto_measures_only_when_it_costs_at_most_two_percent_and_weighs_compilation(
        backends):
    module, measured = backends
    short = _choice_spec()
    got = module.choose(short, RunOptions(keras_backend="auto"), [], SHAPES)
    assert got[0] == "tensorflow" and "not measured" in got[1] and measured == []
    # A long study (its FLOPs at an optimistic rate) pays for two 45 s measurements.
    long = _choice_spec(epochs=20000, learning_rates=tuple(0.01 * i for i in range(1, 21)))
    floor = module.study_seconds_lower_bound(long, SHAPES)
    assert 2 * module.CALIBRATION_SECONDS <= 0.02 * floor
    got = module.choose(long, RunOptions(keras_backend="auto"), [], SHAPES)
    assert measured == ["tensorflow", "jax"]
    # Faster steps win over a long study: 30 s of compiling is nothing beside its images.
    assert got[0] == "jax" and "measured now" in got[1]
    # ... and the next run reads the cached measurement instead of measuring again.
    again = module.choose(long, RunOptions(keras_backend="auto"), [], SHAPES)
    assert again[0] == "jax" and "cached" in again[1] and measured == ["tensorflow", "jax"]


def test_the_faster_backend_counts_compilations_per_pack_shape():
    from kerasgen.backends import _faster

    rates = {"tensorflow": {"rate": 100.0, "compile": 2.0}, "jax": {"rate": 150.0, "compile": 30.0}}
    # Few images, many shapes: TensorFlow's cheap compilations win.
    assert _faster(rates, (16, 10_000.0), "x")[0] == "tensorflow"
    assert _faster(rates, (16, 10_000_000.0), "x")[0] == "jax"
