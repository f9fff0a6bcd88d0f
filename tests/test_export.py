"""A study leaves kerasgen: TensorBoard runs with HParams (read back with TensorBoard's own
reader), CSV and Parquet tables (read back with pandas), and nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kerasgen.export import ExportError, export_tables, export_tensorboard, staged_directory
from kerasgen.store import Store, load_epochs, load_results

ROOT = Path(__file__).resolve().parents[1]
WORKER = "host.invalid:1"


def curve(bs: int, lr: float, epoch: int, clean: bool = True) -> dict:
    test = round(0.5 + 0.1 * epoch - bs / 1000 + lr, 4)
    row = {"train_loss": round(1.5 - 0.2 * epoch, 4), "train_accuracy": round(test + 0.05, 4),
           "test_loss": round(1.6 - 0.2 * epoch + bs / 1000, 4), "test_accuracy": test}
    if clean:
        row.update(train_eval_loss=round(1.4 - 0.2 * epoch, 4),
                   train_eval_accuracy=round(test + 0.03, 4))
    return row


@pytest.fixture
def db(tmp_path) -> Path:
    """Two studies: "grid" (2 x 2, one cell diverged at epoch 2, one without clean
    metrics), "other" (1 cell, pending)."""
    path = tmp_path / "s.db"
    with Store(path) as store:
        cells = [{"model": "resnet8", "dataset": "digits", "batch_size": b, "learning_rate": lr,
                  "seed": 0} for b in (16, 32) for lr in (0.05, 0.1)]
        study = store.create_study("grid", {"name": "grid"}, cells)
        i = 0
        while (claim := store.claim_pack(study, WORKER, 4)) is not None:
            for cell in claim.cells:
                last = 2 if i == 3 else 3
                for e in range(last):
                    store.record_epoch(cell["cell_id"], e, curve(cell["batch_size"],
                                                                 cell["learning_rate"], e,
                                                                 clean=i != 2), 1.0, claim=claim)
                if i == 3:
                    store.finish_cell(cell["cell_id"], "diverged", diverged_epoch=2, claim=claim)
                else:
                    store.finish_cell(cell["cell_id"], "done", claim=claim)
                i += 1
        store.create_study("other", {"name": "other"},
                           [{"model": "vgg11", "dataset": "digits", "batch_size": 8,
                             "learning_rate": 0.2, "seed": 1}])
    return path


# ---------------------------------------------------------------- TensorBoard

def read_runs(out: Path) -> dict:
    """Every run under ``out`` through TensorBoard's own reader: {run: accumulator}."""
    from tensorboard.backend.event_processing import event_multiplexer

    mux = event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(out))
    mux.Reload()
    return {name: mux.GetAccumulator(name) for name in mux.Runs()}


def session_hparams(acc) -> dict:
    """A trial's hyper-parameters as TensorBoard's own parser reads them."""
    from tensorboard.plugins.hparams import metadata

    info = metadata.parse_session_start_info_plugin_data(
        acc.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG])
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in info.hparams.items()}


def experiment(runs: dict):
    """The experiment (hparams config), from whichever run holds it (one)."""
    from tensorboard.plugins.hparams import metadata

    def content(acc) -> dict:
        try:
            return acc.PluginTagToContent(metadata.PLUGIN_NAME)
        except KeyError:  # a seed's run: no hparams data
            return {}

    holders = [acc for acc in runs.values() if metadata.EXPERIMENT_TAG in content(acc)]
    assert len(holders) == 1
    return metadata.parse_experiment_plugin_data(
        holders[0].PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG])


@pytest.fixture
def seeds_db(tmp_path) -> Path:
    """2 batch sizes x 2 learning rates x 2 seeds under a stop rule, with momentum,
    weight decay and two extra hyper-parameters a user's SQLiteLogger recorded."""
    path = tmp_path / "seeds.db"
    spec = {"name": "grid", "epochs": 30, "stop": {"rule": "train_loss", "threshold": 0.05},
            "training": {"momentum": 0.9, "weight_decay": 0.0005}}
    with Store(path) as store:
        cells = [{"model": "resnet8", "dataset": "digits", "batch_size": b, "learning_rate": lr,
                  "seed": s} for b in (16, 32) for lr in (0.05, 0.1) for s in (0, 1)]
        study = store.create_study("grid", spec, cells)
        store.conn.execute("UPDATE cells SET hparams_json = ?",
                           ('{"dropout": 0.25, "width": 16}',))
        store.conn.commit()
        while (claim := store.claim_pack(study, WORKER, 4)) is not None:
            for cell in claim.cells:
                for e in range(3):
                    row = curve(cell["batch_size"], cell["learning_rate"], e)
                    row["test_accuracy"] = round(row["test_accuracy"] + 0.01 * cell["seed"], 4)
                    store.record_epoch(cell["cell_id"], e, row, 1.0, claim=claim)
                store.finish_cell(cell["cell_id"], "done", claim=claim)
    return path


def test_tensorboard_export_one_trial_per_cell_with_the_mean_over_seeds(seeds_db, tmp_path):
    out = tmp_path / "tb"
    done = export_tensorboard(seeds_db, out)
    results, epochs = load_results(seeds_db), load_epochs(seeds_db)
    assert (done["trials"], done["runs"], done["epochs"]) == (4, 8, len(epochs)) == (4, 8, 24)
    runs = read_runs(out)
    assert "." not in runs  # no stray run: the experiment lives in a trial
    trials = {name: acc for name, acc in runs.items() if "/seed-" not in name}
    seeds = {name: acc for name, acc in runs.items() if "/seed-" in name}
    assert len(trials) == 4 and len(seeds) == 8
    assert sorted(seeds) == sorted(f"{t}/seed-{s}" for t in trials for s in (0, 1))
    config = experiment(runs)
    names = {h.name for h in config.hparam_infos}
    assert {"study", "model", "dataset", "batch_size", "learning_rate", "ratio", "seeds",
            "status", "epochs", "stop.rule", "stop.threshold", "training.momentum",
            "training.weight_decay", "training.best_metric", "training.augment",
            "training.dtype", "dropout", "width"} <= names
    # One metric per column: best_test_accuracy is the kept epoch's test accuracy here.
    tags = [m.name.tag for m in config.metric_infos]
    assert "metrics/test_accuracy" in tags and "metrics/best_test_accuracy" not in tags
    assert len(tags) == len(set(tags))
    for name, acc in trials.items():
        hparams = session_hparams(acc)
        # Integers as integers: text TensorBoard prints as it is, not 16.000.
        assert hparams["batch_size"] in ("16", "32") and hparams["epochs"] == "30"
        assert hparams["width"] == "16" and hparams["seeds"] == "2"
        assert hparams["training.momentum"] == pytest.approx(0.9)
        assert hparams["training.weight_decay"] == pytest.approx(0.0005)
        assert hparams["stop.rule"] == "train_loss" and hparams["dropout"] == 0.25
        mine = results[(results["batch_size"] == int(hparams["batch_size"]))
                       & (results["learning_rate"] == hparams["learning_rate"])]
        assert len(mine) == 2
        (mean,) = acc.Scalars("metrics/test_accuracy")
        assert mean.value == pytest.approx(mine["test_accuracy"].mean(), abs=1e-6)
        for seed in (0, 1):
            run = seeds[f"{name}/seed-{seed}"]
            cell = mine[mine["seed"] == seed].iloc[0]
            (own,) = run.Scalars("metrics/test_accuracy")
            assert own.value == pytest.approx(cell["test_accuracy"], abs=1e-6)
            stored = epochs[epochs["cell_id"] == cell["cell_id"]].sort_values("epoch")
            assert [e.value for e in run.Scalars("epoch/test_accuracy")] == \
                pytest.approx(stored["test_accuracy"].tolist())
    # Hyper-parameter types as declared: integers are text, listed in numeric order.
    info = {h.name: h for h in config.hparam_infos}
    assert [v.string_value for v in info["batch_size"].domain_discrete.values] == ["16", "32"]


def test_tensorboard_export_keeps_best_test_accuracy_when_it_differs(db, tmp_path):
    from tensorboard.plugins.hparams import metadata  # noqa: F401

    out = tmp_path / "tb"
    conn = __import__("sqlite3").connect(db)
    conn.execute("UPDATE cells SET best_test_accuracy = best_test_accuracy + 0.01 "
                 "WHERE cell_id = 1")
    conn.commit()
    conn.close()
    export_tensorboard(db, out)
    tags = [m.name.tag for m in experiment(read_runs(out)).metric_infos]
    assert "metrics/best_test_accuracy" in tags


def test_tensorboard_export_of_one_study_and_its_refusals(db, tmp_path):
    out = tmp_path / "tb"
    assert export_tensorboard(db, out, study="other")["runs"] == 1
    assert set(read_runs(out)) == {"other/vgg11-digits-bs8-lr0.2",
                                   "other/vgg11-digits-bs8-lr0.2/seed-1"}
    with pytest.raises(ExportError, match="already holds files; pass --force"):
        export_tensorboard(db, out)
    assert len(read_runs(out)) == 2  # untouched
    export_tensorboard(db, out, force=True)
    assert len(read_runs(out)) == 10  # 5 cells of one seed: 5 trials, 5 runs
    with pytest.raises(ExportError, match="no study named 'nope'.*'grid', 'other'"):
        export_tensorboard(db, tmp_path / "tb2", study="nope")
    assert not (tmp_path / "tb2").exists()


# ---------------------------------------------------------------- tables

@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_export_reads_back_as_the_store(db, tmp_path, fmt):
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    paths = export_tables(db, tmp_path / fmt, fmt)
    assert sorted(p.name for p in paths) == sorted(f"{t}.{fmt}" for t in
                                                   ("cells", "epochs", "studies"))
    cells, epochs = read(tmp_path / fmt / f"cells.{fmt}"), read(tmp_path / fmt / f"epochs.{fmt}")
    expected = load_results(db)
    assert list(cells.columns) == list(expected.columns)
    pd.testing.assert_series_equal(cells["test_accuracy"], expected["test_accuracy"])
    pd.testing.assert_series_equal(cells["gap"], expected["gap"])
    assert cells["status"].tolist() == expected["status"].tolist()
    stored = load_epochs(db)
    assert len(epochs) == len(stored) == 11
    pd.testing.assert_series_equal(epochs["test_loss"], stored["test_loss"])
    studies = read(tmp_path / fmt / f"studies.{fmt}")
    assert set(studies["name"]) == {"grid", "other"}
    one = export_tables(db, tmp_path / f"{fmt}-grid", fmt, study="grid")
    assert set(read(one[0])["study"]) == {"grid"}


def test_an_export_that_fails_midway_leaves_nothing_behind(db, tmp_path, monkeypatch):
    out = tmp_path / "csv"

    def full_disk(self, path, **kwargs):
        Path(path).write_text("partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    with pytest.raises(OSError):
        export_tables(db, out, "csv")
    assert not out.exists() and not list(tmp_path.glob(".csv*"))


def test_replacing_with_force_keeps_the_old_export_until_the_new_one_is_complete(tmp_path):
    out = tmp_path / "x"
    with staged_directory(out, "cmd") as stage:
        (stage / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with staged_directory(out, "cmd", force=True) as stage:
            (stage / "new.txt").write_text("new")
            raise RuntimeError("interrupted")
    assert (out / "old.txt").read_text() == "old" and not (out / "new.txt").exists()
    with staged_directory(out, "cmd", force=True) as stage:
        (stage / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [".kerasgen-output.json", "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


# ---------------------------------------------------------------- the command

def kerasgen(*args, env=None):
    return subprocess.run([sys.executable, "-m", "kerasgen", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env)


def test_kerasgen_export_writes_and_refuses_with_exit_2(db, tmp_path):
    run = kerasgen("export", "csv", str(db), "--out", str(tmp_path / "c"))
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stdout and "cells.csv" in run.stdout
    again = kerasgen("export", "csv", str(db), "--out", str(tmp_path / "c"))
    assert again.returncode == 2 and "--force" in again.stderr
    blocked = tmp_path / "file"
    blocked.write_text("x")
    for args, message in [
        (["tensorboard", str(db), "--out", str(blocked / "tb")], "cannot write in"),
        (["tensorboard", str(db), "--out", str(blocked)], "is not a directory"),
        (["csv", str(db), "--out", str(tmp_path / "d"), "--study", "nope"],
         "no study named 'nope'"),
        (["csv", str(tmp_path / "missing.db"), "--out", str(tmp_path / "e")], "missing.db"),
    ]:
        run = kerasgen("export", *args)
        assert run.returncode == 2 and message in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()


def test_export_tensorboard_loads_no_tensorflow(db, tmp_path):
    code = ("import sys; sys.path.insert(0, 'tests'); import helpers.no_tensorflow; "
            "from kerasgen.cli import main; "
            f"sys.exit(main(['export', 'tensorboard', {str(db)!r}, '--out', "
            f"{str(tmp_path / 'tb')!r}]))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ})
    assert run.returncode == 0, run.stderr
    # 5 cells of one seed: a trial and a seed run each.
    assert len(list((tmp_path / "tb").rglob("events.out.tfevents.*"))) == 10


def test_kerasgen_report_html_writes_one_page_and_replaces_it_only_with_force(db, tmp_path):
    page = tmp_path / "out" / "report.html"
    run = kerasgen("report", str(db), "--study", "grid", "--format", "html", "-o", str(page))
    assert run.returncode == 0, run.stderr
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<img ") >= 4
    assert "curves_resnet8_digits.png" in text  # learning curves from the store's epochs
    assert not list(tmp_path.glob("kerasgen-figures-*"))  # the scratch figures are gone
    again = kerasgen("report", str(db), "--format", "html", "-o", str(page))
    assert again.returncode == 2 and "--force" in again.stderr
    forced = kerasgen("report", str(db), "--study", "grid", "--format", "html", "-o",
                      str(page), "--force")
    assert forced.returncode == 0 and page.read_text().startswith("<!DOCTYPE html>")
    # A page the user edited since is theirs: --force no longer replaces it.
    page.write_text("mine")
    edited = kerasgen("report", str(db), "--format", "html", "-o", str(page), "--force")
    assert edited.returncode == 2 and "changed since" in edited.stderr
    assert page.read_text() == "mine"
