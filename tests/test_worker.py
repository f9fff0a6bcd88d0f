"""The runner end to end: kill-and-resume, workers, failures, the CLI."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.kernels import assert_same_kernels

from kerasgen.options import RunOptions
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_pack_that_keeps_failing_is_marked_failed_and_the_study_goes_on(tmp_path, monkeypatch):
    from kerasgen import train
    from kerasgen.options import RunOptions
    from kerasgen.spec import Spec
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


# ---------------------------------------------------------------- hostile conditions

def _cells(db: Path):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT cell_id, status, worker, attempts FROM cells").fetchall()
    finally:
        conn.close()


def _weight_files(db: Path) -> dict[str, bytes]:
    import hashlib

    root = Path(str(db) + ".checkpoints")
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).digest()
            for p in root.rglob("*.npz") if "initial" not in p.parts}


@pytest.mark.slow
def test_a_stalled_owner_whose_pack_was_taken_over_and_finished_writes_nothing_when_it_wakes(
        tmp_path):
    # Reproductions: (issue 18) with a 0.5 s stale limit two workers stole a pack from
    # each other 265 times and one crashed on a checkpoint the other had deleted; (issue
    # 22, item 5) a worker stopped past the stale limit woke after the new owner had
    # finished its pack, rewrote the cells' final weights (the ownership check passed once
    # no cell was running) and left a pack checkpoint directory behind. Now ownership is
    # the claim's token, checked before anything is written.
    spec = write_spec(tmp_path, epochs=6)
    args = [str(spec), "--pack-size", "2", "--data-dir", str(tmp_path), "--progress", "plain",
            "--stale-seconds", "1"]
    reference = tmp_path / "reference.db"
    done = kerasgen("run", *args, "--db", str(reference))
    assert done.communicate(timeout=600)[1] is not None and done.returncode == 0
    db = tmp_path / "shared.db"
    owner = kerasgen("run", *args, "--db", str(db))
    deadline = time.monotonic() + 300
    while epoch_rows(db) < 4 and time.monotonic() < deadline and owner.poll() is None:
        time.sleep(0.05)
    assert owner.poll() is None, "the study finished before the owner could be stalled"
    owner.send_signal(signal.SIGSTOP)  # a stall: alive, but no heartbeat
    try:
        second = kerasgen("run", *args, "--db", str(db))
        # The second worker takes the stalled owner's pack over after the stale limit,
        # and finishes the whole study while the owner sleeps.
        _, second_err = second.communicate(timeout=600)
        taken_over = [w for _, _, w, _ in _cells(db)]
        weights = _weight_files(db)
    finally:
        owner.send_signal(signal.SIGCONT)  # the owner wakes up mid-epoch
    _, owner_err = owner.communicate(timeout=600)
    assert owner.returncode == 0 and second.returncode == 0, (owner_err, second_err)
    for err in (owner_err, second_err):
        assert "FileNotFoundError" not in err and "Traceback" not in err, err
    assert all(w.endswith(f":{second.pid}") for w in taken_over), taken_over
    # The woken owner wrote nothing: no weight file changed, no checkpoint was left.
    assert _weight_files(db) == weights and len(weights) == 4
    assert not list(Path(str(db) + ".checkpoints").glob("*/pack-*"))
    final = comparable(db)
    assert_same_kernels(db, reference)
    assert final.equals(comparable(reference))  # each epoch once, as if uninterrupted
    assert not final.duplicated(["batch_size", "learning_rate", "epoch"]).any()
    assert set(s for _, s, _, _ in _cells(db)) == {"done"}
    # No livelock: the stalled pack changed hands once, not hundreds of times.
    assert max(a for *_, a in _cells(db)) <= 3


@pytest.mark.slow
def test_a_store_locked_past_the_busy_timeout_delays_the_run_without_failing_it(tmp_path):
    spec = write_spec(tmp_path, epochs=8)
    db = tmp_path / "locked.db"
    env_extra = {"KERASGEN_BUSY_TIMEOUT_MS": "300"}
    # Locked before the run starts (its registration waits) ...
    with Store(db) as store:
        store.create_study("other", {"name": "other"}, [])
    hold = "import sqlite3,sys,time;c=sqlite3.connect(sys.argv[1],isolation_level=None);" \
           "c.execute('BEGIN IMMEDIATE');print('locked',flush=True);time.sleep(float(sys.argv[2]))"
    holder = subprocess.Popen([sys.executable, "-c", hold, str(db), "8"], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    run = subprocess.Popen([sys.executable, "-m", "kerasgen", "run", str(spec), "--db", str(db),
                            "--pack-size", "2", "--data-dir", str(tmp_path), "--progress",
                            "plain"], env={**os.environ, **env_extra, "TF_CPP_MIN_LOG_LEVEL": "2"},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    holder.wait(timeout=60)
    # ... and again while it trains (its epoch rows and heartbeats wait).
    deadline = time.monotonic() + 300
    while epoch_rows(db) < 2 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.05)
    holder = subprocess.Popen([sys.executable, "-c", hold, str(db), "3"], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    assert run.poll() is None, "the run ended before the store was locked mid-run"
    holder.wait(timeout=60)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err
    assert err.count("waiting for the store lock") >= 2 and "Traceback" not in err, err
    results = load_results(db, study="resume")
    assert set(results["status"]) == {"done"} and (results["epochs_done"] == 8).all()
    with Store(db) as store:
        assert all(store.cell(int(c))["failures"] == 0 for c in results["cell_id"])


@pytest.mark.slow
def test_two_stores_sharing_a_checkpoint_directory_keep_their_own_final_weights(tmp_path):
    from kerasgen.checkpoints import load_cell_weights, study_files
    from kerasgen.spec import Spec
    from kerasgen.worker import run_study

    shared = tmp_path / "shared-checkpoints"
    base = dict(name="same-name", models=("resnet8",), datasets=("synthetic-8-1-10-64",),
                batch_sizes=(16,), epochs=1)
    for db, lr in (("sA.db", 0.05), ("sB.db", 0.2)):
        run_study(Spec(**base, learning_rates=(lr,)), tmp_path / db,
                  RunOptions(pack_size=1, data_dir=str(tmp_path), checkpoint_dir=str(shared)),
                  progress=False)
    a, b = study_files(tmp_path / "sA.db", "same-name", shared), \
        study_files(tmp_path / "sB.db", "same-name", shared)
    assert a != b and a.parent == b.parent == shared
    wa, wb = load_cell_weights(a, 1), load_cell_weights(b, 1)
    # sA's cell 1 (lr 0.05) kept its own weights: sB's run (lr 0.2) did not overwrite them.
    assert any(not np.array_equal(x, y) for x, y in zip(wa, wb))


@pytest.mark.slow
def test_a_study_name_cannot_write_outside_the_checkpoint_directory(tmp_path):
    from kerasgen.spec import Spec
    from kerasgen.worker import run_study

    root = tmp_path / "inside" / "checkpoints"
    for name in ("../escaped", str(tmp_path / "absolute")):
        run_study(Spec(name=name, models=("resnet8",), datasets=("synthetic-8-1-10-64",),
                       batch_sizes=(32,), learning_rates=(0.1,), epochs=1),
                  tmp_path / "inside" / "s.db",
                  RunOptions(data_dir=str(tmp_path), checkpoint_dir=str(root)), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inside"]  # nothing escaped
    assert sorted(p.name for p in (tmp_path / "inside").iterdir()) == \
        ["checkpoints", "s.db", "s.db-shm", "s.db-wal"] or \
        sorted(p.name for p in (tmp_path / "inside").iterdir()) == ["checkpoints", "s.db"]
    written = [p for p in root.rglob("*") if p.is_file()]
    assert written and all(root in p.parents for p in written)


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers: '0': must be an integer >= 1"),
    (["--pack-size", "0"], "--pack-size: '0': must be an integer >= 1"),
    (["--stale-seconds", "nan"], "--stale-seconds: 'nan': must be a number of seconds >= 1"),
    (["--stale-seconds", "0.5"], "--stale-seconds: '0.5': must be a number of seconds >= 1"),
    (["--steps-per-execution", "0"], "--steps-per-execution: '0': must be an integer >= 1"),
    (["--epochs", "x"], "--epochs: 'x' is not an integer"),
])
def test_a_bad_option_value_is_named_with_exit_2_and_no_traceback(tmp_path, args, message):
    run = subprocess.run([sys.executable, "-m", "kerasgen", "run", "--preset", "smoke", "--db",
                          str(tmp_path / "x.db"), *args], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize("line, message", [
    ('models = ["resnet8\\n"]', r"Unknown model 'resnet8\n'"),
    ('models = ["resnet٨"]', "Unknown model 'resnet٨'"),
    ("seeds = [4294967296]", "seeds must be integers from 0 to 4294967295"),
    ("batch_sizes = [[16]]", "batch_sizes must be a list of integers. Received: [16]"),
    ("models = [{ a = 1 }]", "models must be a list of names"),
    ('name = "a\\u0000b"', "name must be printable text"),
    (f'name = "{"x" * 200}"', "name must be at most 128 characters"),
])
def test_spec_values_that_used_to_fail_later_are_refused_up_front(tmp_path, line, message):
    key = line.split(" =")[0]
    spec = tmp_path / "s.toml"
    body = {"name": 'name = "x"', "models": 'models = ["resnet8"]',
            "datasets": 'datasets = ["synthetic"]', "batch_sizes": "batch_sizes = [16]",
            "learning_rates": "learning_rates = [0.1]", "seeds": "seeds = [0]"}
    body[key] = line
    spec.write_text("\n".join(body.values()) + "\nepochs = 1\n")
    run = subprocess.run([sys.executable, "-m", "kerasgen", "run", str(spec), "--db",
                          str(tmp_path / "x.db")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "x.db").exists()


def test_a_grid_of_a_million_cells_needs_force(tmp_path):
    spec = tmp_path / "big.toml"
    spec.write_text('name = "big"\nmodels = ["resnet8"]\ndatasets = ["synthetic"]\n'
                    'batch_sizes = { start = 1, stop = 100, step = 1 }\n'
                    'learning_rates = { start = 0.0001, stop = 1.0, step = 0.0001 }\nepochs = 1\n')
    run = subprocess.run([sys.executable, "-m", "kerasgen", "run", str(spec), "--db",
                          str(tmp_path / "big.db")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "1,000,000 cells" in run.stderr and "--force" in run.stderr
    assert not (tmp_path / "big.db").exists()


@pytest.mark.slow
def test_configuration_errors_are_found_before_anything_is_claimed(tmp_path):
    spec = write_spec(tmp_path, epochs=1)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    cases = [
        (["--mirrored"], "--mirrored trains each cell on several devices"),
        (["--checkpoint-dir", str(blocked / "sub")], "cannot be written"),
    ]
    for extra, message in cases:
        db = tmp_path / "c.db"
        run = subprocess.run([sys.executable, "-m", "kerasgen", "run", str(spec), "--db", str(db),
                              "--data-dir", str(tmp_path), *extra],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        assert run.returncode == 2, run.stderr
        assert message in run.stderr and "Traceback" not in run.stderr
        assert not db.exists()  # nothing registered, nothing claimed


@pytest.mark.slow
def test_a_full_disk_pauses_the_pack_instead_of_failing_it(tmp_path, monkeypatch, capfd):
    from kerasgen import checkpoints, claims
    from kerasgen.spec import Spec
    from kerasgen.worker import run_study

    monkeypatch.setattr(claims, "DISK_FULL_WAIT_SECONDS", 0.01)
    real = checkpoints.np.savez
    calls = []

    def full_once(fh, **arrays):
        calls.append(1)
        if len(calls) == 3:  # a pack checkpoint, mid-training
            fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fh, **arrays)

    monkeypatch.setattr(checkpoints.np, "savez", full_once)
    db = tmp_path / "full.db"
    counts = run_study(Spec(name="full", models=("resnet8",), datasets=("synthetic-8-1-10-64",),
                            batch_sizes=(16,), learning_rates=(0.1,), epochs=3), db,
                       RunOptions(pack_size=1, max_attempts=1, data_dir=str(tmp_path)),
                       progress=False)
    assert counts["done"] == 1 and counts["failed"] == 0  # max_attempts=1: not one burnt
    assert "is paused, not failed" in capfd.readouterr().err
    assert not list((tmp_path / "full.db.checkpoints").rglob("*.tmp"))
    assert (load_epochs(db)["epoch"].tolist()) == [0, 1, 2]


def test_failed_cells_are_not_counted_as_finished_and_the_run_exits_non_zero(tmp_path,
                                                                           monkeypatch, capsys):
    from kerasgen import cli, train
    from kerasgen.display import summary_line
    from kerasgen.progress import study_progress

    def broken(store, claim, spec, ds, options):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(train, "train_pack", broken)
    spec = write_spec(tmp_path, epochs=1)
    db = tmp_path / "f.db"
    code = cli.main(["run", str(spec), "--db", str(db), "--data-dir", str(tmp_path),
                     "--max-attempts", "1", "--progress", "plain"])
    assert code == 1
    out = capsys.readouterr().out
    assert "0 of 4 cells finished" in out and "4 failed" in out
    line = summary_line(study_progress(db))
    assert line.startswith("0/4 cells finished") and "4 failed" in line


def test_status_prints_names_with_markup_as_they_are(tmp_path):
    db = tmp_path / "m.db"
    cell = [{"model": "resnet8", "dataset": "digits", "batch_size": 16, "learning_rate": 0.1,
             "seed": 0}]
    with Store(db) as store:
        for name in ("oops[/]", "[bold red]x[/bold red] [link=http://x]y[/link]"):
            store.create_study(name, {"name": name, "epochs": 1}, cell)
    run = subprocess.run([sys.executable, "-m", "kerasgen", "status", "--db", str(db)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr
    assert "study oops[/]" in run.stdout
    assert "study [bold red]x[/bold red] [link=http://x]y[/link]" in run.stdout


@pytest.mark.slow
def test_tensorflows_start_up_lines_go_to_the_log_unless_verbose(tmp_path):
    spec = tmp_path / "one.toml"
    spec.write_text('name = "one"\nmodels = ["resnet8"]\ndatasets = ["synthetic-8-1-10-32"]\n'
                    "batch_sizes = [32]\nlearning_rates = [0.1]\nepochs = 1\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    for verbose in (False, True):
        db = tmp_path / f"v{int(verbose)}.db"
        run = subprocess.run([sys.executable, "-m", "kerasgen", "run", str(spec), "--db",
                              str(db), "--data-dir", str(tmp_path), "--progress", "plain",
                              *(["--verbose"] if verbose else [])],
                             capture_output=True, text=True, timeout=600, env=env)
        assert run.returncode == 0, run.stderr
        # kerasgen's own lines always reach the terminal ...
        assert "[one] 1/1 cells finished" in run.stderr
        native = ("absl::InitializeLog" in run.stderr or "I0000" in run.stderr
                  or "cuda" in run.stderr.lower())
        log = Path(str(db) + ".log")
        # ... TensorFlow's only with --verbose; otherwise they are in <db>.log.
        assert native is verbose, run.stderr[-2000:]
        if not verbose:
            assert log.exists() and ("I0000" in log.read_text() or "absl" in log.read_text())
