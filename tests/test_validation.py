"""Validation up front (issue 22, items 9, 10): each input that used to be accepted and
fail later, or to end in a traceback, is refused with exit 2 and a sentence naming the bad
value, and nothing is created on disk."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_data import make_cifar10

from kerasgen.spec import Spec, SpecError

ROOT = Path(__file__).resolve().parents[1]
BASE = """name = "v"
models = ["resnet8"]
datasets = ["{dataset}"]
batch_sizes = [16]
learning_rates = [{lr}]
epochs = {epochs}
{extra}"""


def kerasgen(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "kerasgen", *map(str, args)],
                          capture_output=True, text=True, timeout=300, cwd=cwd or ROOT,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def refused(run, *words):
    assert run.returncode == 2, (run.returncode, run.stderr[-2000:])
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    for word in words:
        assert word in run.stderr, (word, run.stderr[-2000:])


def nothing_created(tmp_path: Path, db: Path) -> None:
    assert not db.exists()
    assert not Path(f"{db}.log").exists() and not Path(f"{db}.checkpoints").exists()


@pytest.mark.parametrize("dataset, lr, epochs, extra, words", [
    ("synthetic-8-1-3-32", "0.1", 2, "[training]\ntest_every = 3", ["test_every = 3", "2 epochs"]),
    ("synthetic-8-1-3-32", "1e-310", 2, "", ["learning_rates", "1e-310"]),
    ("synthetic-8-1-3-32", "1e300", 2, "", ["learning_rates", "1e+300"]),
    ("synthetic-100000-3-10-100000000", "0.1", 2, "", ["synthetic-100000-3-10-100000000",
                                                         "GiB of memory"]),
])
def test_a_spec_that_would_fail_later_is_refused_up_front(tmp_path, dataset, lr, epochs,
                                                          extra, words):
    spec = tmp_path / "spec.toml"
    spec.write_text(BASE.format(dataset=dataset, lr=lr, epochs=epochs, extra=extra))
    db = tmp_path / "v.db"
    refused(kerasgen("run", spec, "--db", db, "--data-dir", tmp_path), *words)
    nothing_created(tmp_path, db)


def test_a_cifar_archive_with_no_records_is_refused_before_anything_is_registered(tmp_path):
    def empty(blobs):
        for name in blobs:
            blobs[name] = b""

    make_cifar10(tmp_path, edit=empty)
    spec = tmp_path / "spec.toml"
    spec.write_text(BASE.format(dataset="cifar10", lr="0.1", epochs=1, extra=""))
    db = tmp_path / "v.db"
    refused(kerasgen("run", spec, "--db", db, "--data-dir", tmp_path), "hold no records")
    nothing_created(tmp_path, db)


@pytest.mark.parametrize("args, words", [
    (["--stale-seconds", "1e308"], ["--stale-seconds", "1e308", "<= 2.592e+06"]),
    (["--stale-seconds", "nan"], ["--stale-seconds"]),
])
def test_run_options_out_of_range_are_refused(tmp_path, args, words):
    spec = tmp_path / "spec.toml"
    spec.write_text(BASE.format(dataset="synthetic-8-1-3-32", lr="0.1", epochs=1, extra=""))
    db = tmp_path / "v.db"
    refused(kerasgen("run", spec, "--db", db, *args), *words)
    nothing_created(tmp_path, db)


@pytest.mark.parametrize("content, words", [
    (b"\x00\xff\xfe binary", ["not text"]),
    (None, ["is a directory"]),
])
def test_a_spec_file_that_is_no_text_file_is_named(tmp_path, content, words):
    spec = tmp_path / "spec.toml"
    if content is None:
        spec.mkdir()
    else:
        spec.write_bytes(content)
    db = tmp_path / "v.db"
    refused(kerasgen("run", spec, "--db", db), str(spec), *words)
    nothing_created(tmp_path, db)


def test_spec_with_a_training_that_is_not_a_table_is_a_spec_error():
    with pytest.raises(SpecError, match="training must be a table"):
        Spec(name="x", models=("resnet8",), datasets=("digits",), batch_sizes=(16,),
             learning_rates=(0.1,), training=5)


@pytest.fixture
def store(tmp_path) -> Path:
    from kerasgen.store import Store

    db = tmp_path / "s.db"
    with Store(db) as s:
        s.ensure_cell("st", "m", "d", 16, 0.1, 0)
        s.record_epoch(1, 0, {"test_accuracy": 0.5, "train_loss": 1.0})
        s.finish_cell(1, "done")
    return db


def test_report_options_out_of_range_are_refused(store, tmp_path):
    refused(kerasgen("report", store, "--alpha", "5"), "--alpha", "'5'")
    (tmp_path / "afile").write_text("x")
    refused(kerasgen("report", store, "--figures", tmp_path / "afile"), "--figures",
            "is not a directory")
    assert (tmp_path / "afile").read_text() == "x"


def test_bound_cells_that_are_not_ids_are_a_usage_error(store):
    refused(kerasgen("bound", store, "--cells", "1,x"), "--cells", "'x'")


def test_a_dangling_out_link_is_refused_and_left_alone(store, tmp_path):
    link = tmp_path / "out"
    link.symlink_to(tmp_path / "gone" / "away")
    refused(kerasgen("export", "csv", store, "--out", link), str(link), "symbolic link")
    assert link.is_symlink() and not (tmp_path / "gone").exists()


@pytest.mark.parametrize("command", [["report"], ["export", "csv", "--out", "x"], ["status"]])
def test_a_damaged_specification_in_the_store_is_named(store, tmp_path, command):
    conn = sqlite3.connect(store)
    conn.execute("UPDATE studies SET spec_json = '{not json'")
    conn.commit()
    conn.close()
    *head, = command
    run = kerasgen(*head[:2], store, *head[2:], cwd=tmp_path) if len(head) > 1 else \
        kerasgen(head[0], store, cwd=tmp_path)
    if command == ["status"]:
        assert run.returncode in (0, 2) and "Traceback" not in run.stderr, run.stderr
    else:
        refused(run, "damaged", "'st'")
