"""The runner end to end: kill-and-resume, workers, failures, the CLI."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kerasgen.store import Store, load_epochs, load_results

SPEC = """
name = "resume"
models = ["resnet8"]
datasets = ["synthetic-8-1-10-96"]
batch_sizes = [16, 32]
learning_rates = [0.0625, 0.125]
seeds = [0]
epochs = {epochs}
"""


def write_spec(tmp_path: Path, epochs: int = 5) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC.format(epochs=epochs))
    return path


def kerasgen(*args, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen([sys.executable, "-m", "kerasgen", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def epoch_rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM epochs").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def comparable(db: Path):
    cols = ["batch_size", "learning_rate", "epoch", "train_loss", "train_accuracy",
            "test_loss", "test_accuracy"]
    return load_epochs(db)[cols].sort_values(["batch_size", "learning_rate", "epoch"]) \
        .reset_index(drop=True)


@pytest.mark.slow
def test_a_study_killed_with_sigkill_resumes_to_identical_results(tmp_path):
    spec = write_spec(tmp_path)
    args = [str(spec), "--pack-size", "2", "--data-dir", str(tmp_path), "--progress", "plain"]
    # The reference: the same study, never interrupted.
    reference = tmp_path / "reference.db"
    done = kerasgen("run", *args, "--db", str(reference))
    out, err = done.communicate(timeout=600)
    assert done.returncode == 0, err

    db = tmp_path / "killed.db"
    victim = kerasgen("run", *args, "--db", str(db))
    deadline = time.monotonic() + 300
    # Kill in the middle of the first pack: after some epochs, before its last one.
    while epoch_rows(db) < 4 and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert victim.poll() is None, "the study finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    rows_at_kill = comparable(db)
    assert 0 < len(rows_at_kill) < len(comparable(reference))
    with Store(db) as store:
        assert store.counts(1)["running"] > 0  # the dead worker's claim is still there

    resumed = kerasgen("run", *args, "--db", str(db))
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    # It continued the killed pack from its checkpoint instead of starting it over.
    assert "resuming pack" in err and "from epoch 0" not in err, err

    final = comparable(db)
    assert final.equals(comparable(reference))
    # No row was duplicated (the key forbids it) and none is missing.
    assert not final.duplicated(["batch_size", "learning_rate", "epoch"]).any()
    assert len(final) == 4 * 5
    # What was recorded before the kill was kept as it was.
    merged = rows_at_kill.merge(final, on=["batch_size", "learning_rate", "epoch"],
                                suffixes=("", "_final"))
    assert len(merged) == len(rows_at_kill)
    assert (merged["test_accuracy"] == merged["test_accuracy_final"]).all()
    ref, got = load_results(reference), load_results(db)
    assert got["best_test_accuracy"].tolist() == ref["best_test_accuracy"].tolist()
    assert set(got["status"]) == {"done"}


@pytest.mark.slow
def test_two_worker_processes_share_a_study_and_claim_each_pack_once(tmp_path):
    spec = write_spec(tmp_path, epochs=2)
    db = tmp_path / "two.db"
    run = kerasgen("run", str(spec), "--db", str(db), "--workers", "2", "--pack-size", "1",
                   "--data-dir", str(tmp_path), "--progress", "plain")
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    results = load_results(db)
    assert set(results["status"]) == {"done"}
    assert (results["epochs_done"] == 2).all()
    with Store(db) as store:
        # Claimed exactly once each: no pack was taken twice, none trained twice.
        assert all(store.cell(int(c))["attempts"] == 1 for c in results["cell_id"])
        assert all(store.cell(int(c))["device"] for c in results["cell_id"])
    assert not load_epochs(db).duplicated(["cell_id", "epoch"]).any()


def test_a_missing_dataset_fails_fast_and_leaves_the_store_untouched(tmp_path, monkeypatch):
    spec = tmp_path / "cifar.toml"
    spec.write_text('name = "c"\nmodels = ["resnet20"]\ndatasets = ["cifar10"]\n'
                    'batch_sizes = [16]\nlearning_rates = [0.1]\nepochs = 1\n')
    db = tmp_path / "c.db"
    started = time.monotonic()
    run = kerasgen("run", str(spec), "--db", str(db), "--data-dir", str(tmp_path / "empty"))
    out, err = run.communicate(timeout=120)
    assert run.returncode == 2
    assert "cifar-10-binary.tar.gz" in err and "Traceback" not in err
    assert time.monotonic() - started < 60
    assert not db.exists()  # nothing was registered, nothing claimed


def test_a_pack_that_keeps_failing_is_marked_failed_and_the_study_goes_on(tmp_path, monkeypatch):
    from kerasgen import train
    from kerasgen.spec import Spec
    from kerasgen.options import RunOptions
    from kerasgen.worker import run_study

    real = train.train_pack

    def flaky(store, claim, spec, ds, options):
        if claim.cells[0]["batch_size"] == 32:
            raise RuntimeError("simulated out-of-memory in batch 32")
        return real(store, claim, spec, ds, options)

    monkeypatch.setattr(train, "train_pack", flaky)
    spec = Spec(name="f", models=("resnet8",), datasets=("synthetic-8-1-10-64",),
                batch_sizes=(16, 32), learning_rates=(0.1,), epochs=1)
    counts = run_study(spec, tmp_path / "f.db",
                       RunOptions(pack_size=1, max_attempts=2, data_dir=str(tmp_path)),
                       progress=False)
    assert counts["done"] == 1 and counts["failed"] == 1
    failed = load_results(tmp_path / "f.db").query("status == 'failed'").iloc[0]
    assert failed["batch_size"] == 32
    assert "simulated out-of-memory in batch 32" in failed["error"]


_BASE = ('name = "x"\nmodels = ["resnet8"]\ndatasets = ["digits"]\nbatch_sizes = [16]\n'
         'learning_rates = [0.1]\n')


@pytest.mark.parametrize("content, message", [
    ('name = "x"\nmodels = ["resnet21"]\ndatasets = ["digits"]\nbatch_sizes = [16]\n'
     'learning_rates = [0.1]\n', "6n + 2"),
    ('name = "x"\nmodels = ["resnet8"]\ndatasets = ["digits"]\nbatch_sizes = [16, 16]\n'
     'learning_rates = [0.1]\n', "16 twice"),
    ('name = "x"\nmodels = ["resnet8"]\ndatasets = ["digits"]\nbatch_sizes = [16]\n'
     'learning_rates = [0.1]\nepoch = 3\n', "did you mean 'epochs'"),
    ('name = "x"\nmodels = ["resnet8"]\ndatasets = ["imagenet"]\nbatch_sizes = [16]\n'
     'learning_rates = [0.1]\n', "Unknown data set 'imagenet'"),
    ('name = "x"\nmodels = ["resnet8"]\ndatasets = ["digits"]\nbatch_sizes = [4096]\n'
     'learning_rates = [0.1]\n', "larger than the 1347"),
    ('name = "x"\nmodels = ["resnet8"]\ndatasets = ["digits"]\nbatch_sizes = [16]\n'
     'learning_rates = [0.0]\n', "positive"),
    ('name = "x"\nmodels = "resnet8"\ndatasets = ["digits"]\nbatch_sizes = [16]\n'
     'learning_rates = [0.1]\n', "must be a list"),
    ('name = "x"\nmodels = ["resnet8"\n', "not valid TOML"),
    (_BASE + '[training]\nbest_metric = "val_acc"\n', "training.best_metric must be one of"),
    (_BASE + '[training]\ndtype = "float16"\n', "training.dtype must be one of"),
    (_BASE + '[training]\nlast_batch = "trim"\n', "'trim'"),
    (_BASE + '[training]\ntrain_eval_size = 5000\n', "train_eval_size = 5000 is larger than"),
])
def test_cli_refuses_a_bad_spec_with_a_message_naming_the_bad_value(tmp_path, content, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(content)
    run = kerasgen("run", str(spec), "--db", str(tmp_path / "x.db"))
    out, err = run.communicate(timeout=120)
    assert run.returncode == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "x.db").exists()


def test_cli_refuses_a_foreign_database_without_touching_it(tmp_path):
    foreign = tmp_path / "other.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    run = kerasgen("run", "--preset", "smoke", "--db", str(foreign), "--data-dir", str(tmp_path))
    out, err = run.communicate(timeout=120)
    assert run.returncode == 2
    assert "another application" in err and "Traceback" not in err
    assert foreign.read_bytes() == before


@pytest.mark.parametrize("machine, exported, expected", [
    ("x86_64", None, True),      # measured 1.6x faster on both x86 CPUs we tried
    ("AMD64", None, True),
    ("aarch64", None, None),     # no measurement: TensorFlow's own default
    ("x86_64", "0", None),       # a value the user exported wins
])
def test_onednn_auto_resolves_on_for_x86_unless_the_user_chose(monkeypatch, machine, exported,
                                                               expected):
    import platform

    from kerasgen import runtime

    monkeypatch.setattr(platform, "machine", lambda: machine)
    if exported is None:
        monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    else:
        monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", exported)
    assert runtime.resolve_onednn_auto() is expected


# A child that refuses to import TensorFlow or Keras, then runs the CLI.
NO_TENSORFLOW = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tensorflow_datasets"):
            raise ImportError("this process must not import " + name)
sys.meta_path.insert(0, Refuse())
from kerasgen.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_options_spec_validation_and_store_setup_never_import_tensorflow(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(_BASE.replace("resnet8", "resnet9"))
    run = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, "run", str(bad), "--db",
                          str(tmp_path / "x.db"), "--onednn", "off"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "6n + 2" in run.stderr and "resnet9" in run.stderr and "Traceback" not in run.stderr
    # The readers too: status and report of a store, with TensorFlow unavailable.
    db = tmp_path / "s.db"
    with Store(db) as store:
        store.create_study("s", {"name": "s", "epochs": 1}, [
            {"model": "resnet8", "dataset": "digits", "batch_size": 16, "learning_rate": 0.1,
             "seed": 0}])
    for command in ("status", "report", "db"):
        run = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, command, "--db", str(db)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode in (0, 2) and "Traceback" not in run.stderr, (command, run.stderr)


def _onednn_records(db: Path) -> tuple[object, list[tuple]]:
    import json

    with Store(db) as store:
        env = json.loads(store.study("resume")["environment_json"])
    workers = [(v["tf_enable_onednn_opts"], v["onednn_in_effect"])
               for k, v in env.items() if k.startswith("worker ")]
    return env["tf_enable_onednn_opts"], workers


@pytest.mark.slow
@pytest.mark.parametrize("choice, workers, variable, in_effect", [
    ("off", 2, "0", False),   # spawned worker processes
    ("on", 1, "1", True),     # the driver's own worker
])
def test_the_onednn_choice_takes_effect_in_every_training_process(tmp_path, choice, workers,
                                                                  variable, in_effect):
    spec = write_spec(tmp_path, epochs=1)
    db = tmp_path / f"{choice}.db"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    run = subprocess.run([sys.executable, "-m", "kerasgen", "run", str(spec), "--db", str(db),
                          "--onednn", choice, "--workers", str(workers), "--pack-size", "2",
                          "--data-dir", str(tmp_path), "--progress", "plain"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr
    study_variable, recorded = _onednn_records(db)
    assert study_variable == variable
    assert len(recorded) == workers and all(r == (variable, in_effect) for r in recorded), recorded
