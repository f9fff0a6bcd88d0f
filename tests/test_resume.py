"""Resume that always finishes (issue 22, item 0): a study killed with SIGKILL at every
boundary of a pack whose cells finish at different epochs ends, when the same command is
run again, with exactly the numbers of a run never interrupted, and within a timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.kernels import assert_same_kernels

from kerasgen.store import load_epochs, load_results

pytestmark = pytest.mark.slow

HELPER = Path(__file__).parent / "helpers" / "kill_at.py"
# One pack of four learning rates on one batch size; the train-loss rule stops the cells
# at different epochs (2, 2, 3 and 5 epochs here), the cap is 12.
SPEC = """
name = "resume"
models = ["resnet8"]
datasets = ["synthetic-8-1-4-64"]
batch_sizes = [16]
learning_rates = [0.05, 0.1, 0.2, 0.4]
seeds = [0]
epochs = 12
[stop]
rule = "train_loss"
threshold = 0.3
"""
RESUME_TIMEOUT = 300  # the hang of issue 22 waited forever; a resume takes ~20 s
COLUMNS = ["learning_rate", "epoch", "train_loss", "train_accuracy", "test_loss",
           "test_accuracy", "train_eval_loss", "train_eval_accuracy"]


def _args(tmp_path: Path, db: Path) -> list[str]:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    return ["run", str(spec), "--db", str(db), "--pack-size", "4", "--data-dir",
            str(tmp_path), "--progress", "plain"]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _table(db: Path):
    return load_epochs(db)[COLUMNS].sort_values(COLUMNS[:2]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    db = tmp / "reference.db"
    run = subprocess.run([sys.executable, "-m", "kerasgen", *_args(tmp, db)],
                         capture_output=True, text=True, timeout=600, env=_env())
    assert run.returncode == 0, run.stderr
    done = load_results(db)
    # The premise of the test: the pack's cells finish at different epochs.
    assert done["epochs_done"].nunique() >= 3, done[["learning_rate", "epochs_done"]]
    return db


@pytest.mark.parametrize("boundary", ["mid-pack", "first-finish", "after-first-finish",
                                      "checkpoint", "removal"])
def test_a_kill_at_any_boundary_of_a_pack_resumes_to_the_uninterrupted_numbers(
        tmp_path, reference, boundary):
    db = tmp_path / "killed.db"
    args = _args(tmp_path, db)
    killed = subprocess.run([sys.executable, str(HELPER), boundary, *args],
                            capture_output=True, text=True, timeout=600, env=_env())
    assert killed.returncode == -9, killed.stderr  # it died at the boundary, by SIGKILL
    before = _table(db)
    resumed = subprocess.run([sys.executable, "-m", "kerasgen", *args], capture_output=True,
                             text=True, timeout=RESUME_TIMEOUT, env=_env())
    assert resumed.returncode == 0, resumed.stderr
    assert_same_kernels(db, reference)
    final = _table(db)
    assert final.equals(_table(reference))
    # What was committed before the kill is kept as it was.
    kept = before.merge(final, on=["learning_rate", "epoch"], suffixes=("", "_final"))
    assert len(kept) == len(before)
    assert (kept["test_accuracy"] == kept["test_accuracy_final"]).all()
    got, want = load_results(db), load_results(reference)
    assert got["status"].tolist() == want["status"].tolist() == ["done"] * 4
    assert got["epochs_done"].tolist() == want["epochs_done"].tolist()
    assert got["test_accuracy"].tolist() == want["test_accuracy"].tolist()
    # Nothing is left of the pack's checkpoints (the removal the kill prevented included).
    assert not list(Path(str(db) + ".checkpoints").glob("*/pack-*")), \
        list(Path(str(db) + ".checkpoints").rglob("*"))
