"""Outputs are guests (issue 22, items 1, 2, 11): a command that writes or deletes a path
touches only what it wrote itself. Each reproduction is the issue's, with the bytes of what
was in the way checked after the refusal."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_export import db  # noqa: F401 (the fixture: a store of two studies)

from kerasgen.outputs import MANIFEST, OutputError, file_manifest, place_files, staged_directory
from kerasgen.store import Store

ROOT = Path(__file__).resolve().parents[1]


def kerasgen(*args):
    return subprocess.run([sys.executable, "-m", "kerasgen", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


def digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links as their target text) -> its SHA-256; a store's
    ``-wal``/``-shm`` files, which SQLite itself makes when a reader opens it, aside."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        if path.name.endswith(("-wal", "-shm")):
            continue
        if path.is_symlink():
            out[str(path.relative_to(root))] = "link:" + os.readlink(path)
        elif path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def study_dir(tmp_path: Path, db_path: Path) -> Path:
    """A study directory as a user keeps one: the store, its checkpoints, final weights."""
    where = tmp_path / "out" / "STUDYDIR"
    where.mkdir(parents=True)
    shutil.copy(db_path, where / "s.db")
    weights = where / "s.db.checkpoints" / "grid-x" / "cells"
    weights.mkdir(parents=True)
    (weights / "cell-1.weights.npz").write_bytes(b"weights")
    return where


def test_export_force_into_a_directory_holding_the_store_refuses_and_deletes_nothing(
        db, tmp_path):  # noqa: F811
    where = study_dir(tmp_path, db)
    before = digest(where)
    run = kerasgen("export", "csv", str(where / "s.db"), "--out", str(where), "--force")
    assert run.returncode == 2, run.stderr
    assert "contains" in run.stderr and "s.db" in run.stderr, run.stderr
    assert digest(where) == before  # the store and its weights are all there, unchanged


def test_export_force_refuses_a_foreign_file_and_replaces_its_own_earlier_export(
        db, tmp_path):  # noqa: F811
    out = tmp_path / "tables"
    assert kerasgen("export", "csv", str(db), "--out", str(out)).returncode == 0
    assert (out / MANIFEST).exists()
    again = kerasgen("export", "csv", str(db), "--out", str(out), "--force")
    assert again.returncode == 0, again.stderr  # its own earlier export: replaced
    (out / "notes.txt").write_text("mine")
    before = digest(out)
    refused = kerasgen("export", "csv", str(db), "--out", str(out), "--force")
    assert refused.returncode == 2 and "notes.txt" in refused.stderr, refused.stderr
    assert digest(out) == before
    other = kerasgen("export", "tensorboard", str(db), "--out", str(out), "--force")
    assert other.returncode == 2 and "did not write" in other.stderr  # another command's


def test_report_onto_its_own_store_is_refused_and_the_store_kept(db):  # noqa: F811
    before = db.read_bytes()
    run = kerasgen("report", str(db), "-o", str(db), "--force")
    assert run.returncode == 2 and "is an input of this command" in run.stderr, run.stderr
    assert db.read_bytes() == before


@pytest.mark.parametrize("what", ["store", "foreign", "fifo", "link", "dangling", "inside"])
def test_report_force_never_replaces_what_it_did_not_write(db, tmp_path, what):  # noqa: F811
    target = tmp_path / "report.md"
    if what == "store":
        shutil.copy(db, target)
    elif what == "foreign":
        target.write_text("my notes")
    elif what == "fifo":
        os.mkfifo(target)
    elif what == "link":
        (tmp_path / "elsewhere.md").write_text("elsewhere")
        target.symlink_to(tmp_path / "elsewhere.md")
    elif what == "dangling":
        target.symlink_to(tmp_path / "nowhere" / "x.md")
    elif what == "inside":
        target = Path(str(db) + ".checkpoints") / "report.md"
        target.parent.mkdir()
    before = digest(tmp_path)
    run = kerasgen("report", str(db), "-o", str(target), "--force")
    assert run.returncode == 2, (what, run.stdout[-500:], run.stderr)
    assert str(target.name) in run.stderr and "Traceback" not in run.stderr
    assert digest(tmp_path) == before
    assert (not target.exists() or target.is_symlink() or not target.is_file()
            or what in ("store", "foreign"))


def test_report_force_replaces_its_own_output_and_records_what_it_wrote(db, tmp_path):  # noqa: F811
    target = tmp_path / "report.md"
    assert kerasgen("report", str(db), "-o", str(target)).returncode == 0
    assert file_manifest(target).exists()
    assert kerasgen("report", str(db), "-o", str(target), "--force").returncode == 0


def test_figures_go_beside_other_files_but_never_over_one_the_command_did_not_write(
        db, tmp_path):  # noqa: F811
    figures = tmp_path / "figs"
    figures.mkdir()
    (figures / "holiday.png").write_bytes(b"photo")
    run = kerasgen("report", str(db), "--study", "grid", "--figures", str(figures))
    assert run.returncode == 0, run.stderr
    assert (figures / "holiday.png").read_bytes() == b"photo"
    assert (figures / "figure1_ratio.png").exists()
    # Its own figures are redrawn in place; a user's file of the same name is refused.
    assert kerasgen("report", str(db), "--study", "grid", "--figures",
                    str(figures)).returncode == 0
    (figures / "figure1_ratio.png").write_bytes(b"my own figure")
    again = kerasgen("report", str(db), "--study", "grid", "--figures", str(figures))
    assert again.returncode == 2 and "figure1_ratio.png" in again.stderr
    assert (figures / "figure1_ratio.png").read_bytes() == b"my own figure"


def test_a_refused_run_creates_no_log_and_no_checkpoint_directory(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text('name = "x"\nmodels = ["resnet8"]\ndatasets = ["cifar10"]\n'
                    'batch_sizes = [16]\nlearning_rates = [0.1]\nepochs = 1\n')
    store = tmp_path / "runs" / "x.db"
    run = kerasgen("run", str(spec), "--db", str(store), "--data-dir", str(tmp_path / "none"))
    assert run.returncode == 2 and "cifar10" in run.stderr.lower(), run.stderr
    assert not store.exists() and not Path(str(store) + ".log").exists()
    assert not Path(str(store) + ".checkpoints").exists()


def test_staged_directory_checks_again_just_before_it_deletes(tmp_path):
    out = tmp_path / "x"
    with staged_directory(out, "cmd") as stage:
        (stage / "a.txt").write_text("a")
    with pytest.raises(OutputError, match="late.txt"):
        with staged_directory(out, "cmd", force=True) as stage:
            (stage / "a.txt").write_text("b")
            (out / "late.txt").write_text("written meanwhile by someone else")
    assert (out / "late.txt").exists() and (out / "a.txt").read_text() == "a"


def test_place_files_refuses_before_copying_anything(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for name in ("a.png", "b.png"):
        (scratch / name).write_bytes(name.encode())
    into = tmp_path / "into"
    into.mkdir()
    (into / "b.png").write_bytes(b"theirs")
    with pytest.raises(OutputError, match="b.png"):
        place_files([scratch / "a.png", scratch / "b.png"], into, "cmd")
    assert sorted(p.name for p in into.iterdir()) == ["b.png"]


def _finished_pack_leftover(db_path: Path) -> tuple[Path, Path]:
    """Two finished packs' checkpoint directories left behind: one as kerasgen writes it,
    one holding a file of the user's."""
    from kerasgen.checkpoints import study_directory
    from kerasgen.store import study_uids

    with Store(db_path) as store:
        packs = {c["pack_id"] for c in map(store.cell, range(1, 5))}
    (first, second) = sorted(packs)[:2] if len(packs) > 1 else (sorted(packs)[0], None)
    directory = study_directory(Path(str(db_path) + ".checkpoints"), "grid",
                                study_uids(db_path)["grid"])
    mine = directory / f"pack-{first}"
    mine.mkdir(parents=True)
    (mine / "state-abc.json").write_text("{}")
    (mine / "state-abc-3.npz").write_bytes(b"x" * 1000)
    return mine, directory


def test_db_clean_removes_finished_packs_checkpoints_and_says_what_it_removed(db):  # noqa: F811
    mine, directory = _finished_pack_leftover(db)
    foreign = directory / "pack-unknown"
    foreign.mkdir()
    (foreign / "state-abc.json").write_text("{}")
    run = kerasgen("db", "clean", str(db))
    assert run.returncode == 0, run.stderr
    assert f"removed {mine}" in run.stdout and "1 finished pack" in run.stdout
    assert not mine.exists()
    assert foreign.exists()  # not a pack of this store: never touched


def test_db_clean_keeps_a_finished_packs_directory_holding_a_users_file(db):  # noqa: F811
    mine, _ = _finished_pack_leftover(db)
    (mine / "notes.txt").write_text("mine")
    run = kerasgen("db", "clean", str(db))
    assert run.returncode == 0 and "is kept" in run.stdout and "notes.txt" in run.stdout
    assert (mine / "notes.txt").exists()
