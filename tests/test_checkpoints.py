"""Claims about kerasgen.checkpoints: files beside a store that are never lost, never
shared between stores, never outside their directory. No TensorFlow here."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from kerasgen import checkpoints as C


class FakeVariable:
    def __init__(self, value):
        self.value = np.array(value)

    def __array__(self, dtype=None, copy=None):
        return self.value

    def assign(self, value):
        self.value = np.array(value)


class FakeOptimizer:
    def __init__(self, values):
        self.variables = [FakeVariable(v) for v in values]
        self.built = True


class FakeModel:
    """What PackCheckpoint uses of a Keras model."""

    def __init__(self, weights, optimizer_values=(0.0,)):
        self.weights = [np.array(w, dtype=float) for w in weights]
        self.optimizer = FakeOptimizer(optimizer_values)

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.array(w) for w in weights]


def meta(epoch):
    return {"epoch": epoch, "cell_ids": [1, 2], "statuses": {}, "history": {}, "pack_id": "p"}


def test_a_former_owner_never_deletes_the_files_the_new_owner_resumes_from(tmp_path):
    pack = tmp_path / "pack-p"
    old, new = C.PackCheckpoint(pack, "aaaa"), C.PackCheckpoint(pack, "bbbb")
    old.save(FakeModel([[1.0]]), meta(5))
    # The new owner takes over and resumes from epoch 5 (adopting it as its own) ...
    resume = new.adopt()
    assert resume["epoch"] == 5 and resume["owner"] == "bbbb"
    # ... while the former owner, awake again, writes its epoch 6 (and cleans up its own
    # older files, as every save does).
    old.save(FakeModel([[2.0]]), meta(6))
    restored = FakeModel([[0.0]])
    new.restore(restored, resume)  # the file the new owner chose is still there
    assert restored.weights[0].tolist() == [1.0]
    new.save(FakeModel([[3.0]]), meta(6))
    new.save(FakeModel([[4.0]]), meta(7))
    assert new.latest()["epoch"] == 7 and new.latest()["owner"] == "bbbb"
    # Each owner removed only its own older files.
    names = sorted(p.name for p in pack.glob("*.npz"))
    assert names == ["state-aaaa-6.npz", "state-bbbb-7.npz"]


def test_adopting_follows_a_former_owner_that_saves_meanwhile(tmp_path, monkeypatch):
    pack = tmp_path / "pack-p"
    old, new = C.PackCheckpoint(pack, "aaaa"), C.PackCheckpoint(pack, "bbbb")
    old.save(FakeModel([[1.0]]), meta(5))
    real_link = os.link
    calls = []

    def racing_link(source, target):
        if not calls:  # between choosing epoch 5 and linking it, the old owner saves 6
            calls.append(source)
            old.save(FakeModel([[2.0]]), meta(6))
        return real_link(source, target)

    monkeypatch.setattr(os, "link", racing_link)
    adopted = new.adopt()
    assert adopted["epoch"] == 6 and adopted["arrays"] == "state-bbbb-6.npz"
    restored = FakeModel([[0.0]])
    new.restore(restored, adopted)
    assert restored.weights[0].tolist() == [2.0]


def test_a_checkpoint_written_by_the_previous_code_is_still_resumed(tmp_path):
    pack = tmp_path / "pack-p"
    pack.mkdir()
    np.savez(pack / "state-3.npz", w0=np.ones(2), o0=np.zeros(1))
    (pack / "state.json").write_text(json.dumps({**meta(3), "arrays": "state-3.npz"}))
    assert C.PackCheckpoint(pack, "cccc").latest()["epoch"] == 3


@pytest.mark.parametrize("name", ["../escaped", "/etc/passwd", "a/b", "..", ".", "x" * 128,
                                  "oops[/]", "spaces are fine"])
def test_a_study_name_is_only_ever_part_of_a_directory_name_under_the_root(tmp_path, name):
    root = tmp_path / "root"
    path = C.study_directory(root, name, "0123456789abcdef0123")
    assert path.parent == root  # inside the root, one level down, whatever the name
    assert path.name.endswith("-0123456789ab") and len(path.name.encode()) <= 60
    assert "/" not in path.name and path.name not in (".", "..")


def test_two_stores_give_a_study_of_the_same_name_two_directories(tmp_path):
    a = C.study_directory(tmp_path, "paper", "a" * 32)
    b = C.study_directory(tmp_path, "paper", "b" * 32)
    assert a != b


def test_a_study_that_wrote_under_its_name_before_uids_keeps_its_directory(tmp_path):
    legacy = tmp_path / "mine" / "pack-x"
    legacy.mkdir(parents=True)
    assert C.study_directory(tmp_path, "mine", "f" * 32) == tmp_path / "mine"
    # unless the new directory exists already, or the name is not a plain file name
    assert C.study_directory(tmp_path, "../mine", "f" * 32).parent == tmp_path


def test_a_failed_write_leaves_no_temporary_file_and_names_a_full_disk(tmp_path, monkeypatch):
    def full(fh, **arrays):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    with pytest.raises(C.DiskFull, match="no space left on the device holding"):
        C.atomic_savez(tmp_path / "w.npz", {"w0": np.ones(3)})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_an_unwritable_checkpoint_directory_is_refused_naming_it(tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    with pytest.raises(OSError, match="checkpoint directory .* cannot be written"):
        C.check_directory(blocked / "sub")


def test_too_little_free_space_is_refused_before_anything_is_claimed(tmp_path):
    free = __import__("shutil").disk_usage(tmp_path).free
    with pytest.raises(C.DiskFull, match="MB free, less than"):
        C.check_directory(tmp_path, min_free_bytes=free * 10)
    C.check_directory(tmp_path, min_free_bytes=1)
    assert not [p for p in Path(tmp_path).iterdir() if p.name.startswith(".kerasgen-probe")]
    assert os.access(tmp_path, os.W_OK)


def test_removing_a_finished_packs_checkpoints_deletes_only_kerasgens_files(tmp_path):
    from kerasgen.checkpoints import PackCheckpoint

    pack = tmp_path / "pack-1"
    pack.mkdir()
    for name in ("state-a.json", "state-a-3.npz", "state-b-4.npz", ".state-a-5.npz.1.x.tmp"):
        (pack / name).write_bytes(b"x")
    (pack / "notes.txt").write_text("mine")
    PackCheckpoint(pack, owner="a").remove()
    assert sorted(p.name for p in pack.iterdir()) == ["notes.txt"]
    (pack / "notes.txt").unlink()
    (pack / "state-a.json").write_text("{}")
    PackCheckpoint(pack, owner="a").remove()
    assert not pack.exists()
