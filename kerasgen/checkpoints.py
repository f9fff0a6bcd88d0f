"""Files a study writes beside its store: pack checkpoints, initial and final weights.

Layout under the checkpoint root (``--checkpoint-dir``, default ``<db>.checkpoints``)::

    initial/<model>-<dataset>-seed<seed>.weights.npz     a group's initial weights
    <study-slug>-<study-uid>/pack-<pack id>/             one pack's checkpoints, removed
        state-<owner>.json, state-<owner>-<epoch>.npz     when the pack finishes
    <study-slug>-<study-uid>/cells/cell-<id>.weights.npz a finished cell's final weights
                                                         (unless --keep-weights none)

A study's directory is named by a slug of its name (letters, digits, ``.``, ``_``, ``-``;
at most 40 characters) and the study's uid, a random id the store gives every study: a
name never forms a path on its own (``../x`` stays inside the root), and two stores that
share a root (the Ray setup) never share a directory, even for studies of the same name.

Every file is written atomically (a temporary file in the same directory, fsync, rename);
a failed write (a full disk) removes its temporary file. A pack's checkpoint files carry
the writing claim's owner token: an owner deletes only its own older files, so a former
owner that wakes up after its pack was taken over can never delete the files the new
owner resumes from: the new owner first adopts the latest state (a hard link under its own
name) and resumes from that.

No TensorFlow here (numpy only); models are used through ``get_weights``/``set_weights``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

SLUG_LENGTH = 40


class DiskFull(OSError):
    """A write failed for lack of space (ENOSPC/EDQUOT); nothing half-written is left."""


def _is_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and _is_full(exc):
            raise DiskFull(exc.errno, f"no space left on the device holding {path.parent} "
                                      f"(writing {path.name})") from exc
        raise


def atomic_savez(path: Path, arrays: dict) -> None:
    """``numpy.savez`` to ``path``, atomically."""
    _atomic(path, lambda fh: np.savez(fh, **arrays))


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda fh: fh.write(text.encode()))


def load_arrays(path: Path, prefix: str = "w") -> list:
    with np.load(path) as saved:
        count = sum(1 for k in saved.files if k.startswith(prefix))
        return [saved[f"{prefix}{i}"] for i in range(count)]


# ---------------------------------------------------------------- where things go

def slug(name: str) -> str:
    """A file-name-safe form of a study name (never empty, never ``.``/``..``)."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", str(name)).strip(".-")[:SLUG_LENGTH].strip(".-")
    return text or "study"


def study_directory(root: Path, name: str, uid: str | None) -> Path:
    """The study's directory under the checkpoint root: ``<slug>-<uid>``.

    A study registered before stores gave studies a uid kept its files in
    ``<root>/<name>``; that directory is used while it exists and the new one does not,
    so packs in flight when kerasgen was upgraded resume from their checkpoints.
    """
    root = Path(root)
    if uid:
        path = root / f"{slug(name)}-{uid[:12]}"
        legacy = root / name if _plain_component(name) else None
        if not path.exists() and legacy is not None and legacy.is_dir() and (
                (legacy / "cells").exists() or any(legacy.glob("pack-*"))):
            return legacy
        return path
    if not _plain_component(name):
        raise ValueError(f"study name {name!r} cannot name a directory; it needs a uid")
    return root / name


def _plain_component(name: str) -> bool:
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\\" not in name and "\x00" not in name and len(name.encode()) <= 255)


def default_root(db: str | os.PathLike, checkpoint_dir: str | os.PathLike | None = None) -> Path:
    """The checkpoint root of a store: ``checkpoint_dir``, else ``<db>.checkpoints``."""
    return Path(checkpoint_dir) if checkpoint_dir else Path(str(db) + ".checkpoints")


def study_files(db: str | os.PathLike, study: str,
                checkpoint_dir: str | os.PathLike | None = None) -> Path:
    """The directory of ``study``'s files for the store at ``db`` (its uid read there)."""
    from kerasgen.store import study_uids

    uids = study_uids(db)
    if study not in uids:
        raise KeyError(f"no study named {study!r} in {db}")
    return study_directory(default_root(db, checkpoint_dir), study, uids[study])


def group_weights_path(root: Path, model, dataset: str, seed: int,
                       network: dict | None = None) -> Path:
    """Where a (model, data set, seed) group's initial weights live. A built-in network
    (``model`` its name) keeps its plain name; a network of your own (a ModelRef and its
    ``fingerprint``) is named by a stem of its name, its arguments and its network hash."""
    from kerasgen.naming import file_stem

    if network is None:
        name = getattr(model, "name", model)
        return Path(root) / "initial" / f"{name}-{file_stem(dataset)}-seed{seed}.weights.npz"
    stem = file_stem(f"{model.name}{dict(model.args) or ''}", 60)
    return (Path(root) / "initial" /
            f"{stem}-{file_stem(dataset)}-seed{seed}-{network['network_hash']}.weights.npz")


def cell_weights_path(study_dir: Path, cell_id: int) -> Path:
    return Path(study_dir) / "cells" / f"cell-{cell_id}.weights.npz"


def save_cell_weights(study_dir: Path, cell_id: int, weights: list) -> None:
    """A finished cell's final weights (single-network order), saved atomically."""
    atomic_savez(cell_weights_path(study_dir, cell_id), {f"w{i}": w for i, w in enumerate(weights)})


def load_cell_weights(study_dir: Path, cell_id: int) -> list:
    path = cell_weights_path(study_dir, cell_id)
    if not path.exists():
        raise FileNotFoundError(f"no final weights for cell {cell_id} at {path}: the cell is "
                                "not finished, or its study ran with --keep-weights none "
                                "(train it again with --keep-weights final)")
    return load_arrays(path)


def existing_ancestor(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent directory."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_directory(root: Path, min_free_bytes: int = 0) -> None:
    """Refuse a checkpoint root that cannot be written, or whose disk has less than
    ``min_free_bytes`` free; raises OSError naming the directory and what to do. Creates
    nothing: a root that does not exist yet is judged by its nearest existing parent (a
    refused run leaves nothing behind; the root is made when the first file is written)."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise OSError(f"the checkpoint directory {root} cannot be written (it is not a "
                      "directory); choose another with --checkpoint-dir")
    probe_dir = existing_ancestor(root)
    if not probe_dir.is_dir():
        raise OSError(f"the checkpoint directory {root} cannot be written ({probe_dir} is "
                      "not a directory); choose another with --checkpoint-dir")
    try:
        probe = probe_dir / f".kerasgen-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        atomic_write_text(probe, "probe")
        probe.unlink()
    except OSError as exc:
        raise OSError(exc.errno, f"the checkpoint directory {root} cannot be written "
                                 f"({exc.strerror or exc}); choose another with "
                                 "--checkpoint-dir") from exc
    free = shutil.disk_usage(probe_dir).free
    if free < min_free_bytes:
        raise DiskFull(errno.ENOSPC, f"the checkpoint directory {root} has {free / 1e6:,.0f} MB "
                                     f"free, less than the {min_free_bytes / 1e6:,.0f} MB the "
                                     "study needs; free space or choose another --checkpoint-dir")


# ---------------------------------------------------------------- pack checkpoints

class PackCheckpoint:
    """A pack's checkpoints, written by one owner (a claim's token).

    ``save`` writes ``state-<owner>-<epoch>.npz`` (weights and optimizer variables), then
    ``state-<owner>.json`` (epoch, cells, their statuses, every recorded row) naming it,
    each atomically, then deletes this owner's older npz files. ``latest`` reads every
    owner's state and returns the one of the latest epoch (a legacy ``state.json`` too).
    """

    def __init__(self, directory: Path, owner: str):
        self.directory = Path(directory)
        self.owner = re.sub(r"[^A-Za-z0-9]", "", owner)[:32] or "owner"

    def latest(self) -> dict | None:
        best = None
        for path in self.directory.glob("state*.json"):
            try:
                meta = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a file another owner is replacing; the others suffice
            if not (self.directory / str(meta.get("arrays", ""))).exists():
                continue
            if best is None or int(meta["epoch"]) > int(best["epoch"]):
                best = meta
        return best

    def exists(self) -> bool:
        return self.latest() is not None

    def adopt(self) -> dict | None:
        """The latest state, made this owner's own before it is used: its arrays are
        linked (or copied) under this owner's name and its JSON rewritten, so the former
        owner, should it wake up and save again, deletes only its own file, never the one
        this owner resumes from. None when there is no checkpoint yet."""
        for _ in range(100):
            meta = self.latest()
            if meta is None or meta.get("owner") == self.owner:
                return meta
            name = f"state-{self.owner}-{meta['epoch']}.npz"
            source, target = self.directory / meta["arrays"], self.directory / name
            try:
                target.unlink(missing_ok=True)
                try:
                    os.link(source, target)
                except OSError as exc:
                    if isinstance(exc, FileNotFoundError):
                        raise
                    shutil.copyfile(source, target)  # a file system without hard links
            except FileNotFoundError:
                continue  # the former owner replaced it meanwhile: take the newer one
            meta = {**meta, "arrays": name, "owner": self.owner}
            atomic_write_text(self.directory / f"state-{self.owner}.json", json.dumps(meta))
            return meta
        raise RuntimeError(f"the checkpoints in {self.directory} keep changing under "
                           "this worker; is another worker still training this pack?")

    def save(self, model, meta: dict) -> None:
        epoch = meta["epoch"]
        arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
        arrays.update({f"o{i}": np.asarray(v) for i, v in
                       enumerate(model.optimizer.variables)})
        name = f"state-{self.owner}-{epoch}.npz"
        atomic_savez(self.directory / name, arrays)
        atomic_write_text(self.directory / f"state-{self.owner}.json",
                          json.dumps({**meta, "arrays": name, "owner": self.owner}))
        for old in self.directory.glob(f"state-{self.owner}-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def remove(self) -> None:
        """Delete the pack's checkpoint files, every owner's (the pack is finished; nothing
        will resume from them), then the directory if that left it empty: only files
        named as kerasgen writes them are deleted (``_PACK_FILE``), never anything else
        someone put there."""
        remove_pack_files(self.directory)

    def restore(self, model, meta: dict) -> None:
        with np.load(self.directory / meta["arrays"]) as saved:
            n_weights = sum(1 for k in saved.files if k.startswith("w"))
            model.set_weights([saved[f"w{i}"] for i in range(n_weights)])
            optimizer = model.optimizer
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
            for i, variable in enumerate(optimizer.variables):
                variable.assign(saved[f"o{i}"])


# ---------------------------------------------------------------- cleaning up

_PACK_FILE = re.compile(r"^(state(-[A-Za-z0-9]+)?(-\d+)?\.(json|npz)|\.state[^/]*\.tmp)$")
"""The files a pack checkpoint directory holds when kerasgen alone wrote it: states,
their arrays, and temporary files of an interrupted atomic write."""


def remove_pack_files(directory: Path) -> None:
    """Unlink the checkpoint files kerasgen writes in a pack directory, then remove the
    directory if nothing else is left in it."""
    directory = Path(directory)
    try:
        entries = list(directory.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.is_symlink() and entry.is_file() and _PACK_FILE.match(entry.name):
            entry.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()


def foreign_entries(directory: Path) -> list[Path]:
    """What in a pack checkpoint directory kerasgen did not write (a user's file, a
    folder, a link): a directory holding any is never removed."""
    found = []
    for entry in Path(directory).iterdir():
        if entry.is_symlink() or not entry.is_file() or not _PACK_FILE.match(entry.name):
            found.append(entry)
    return found


def clean_finished_packs(store, root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """Remove the checkpoint directories of the store's finished packs under ``root``:
    those whose cells are all done or diverged (a failed pack keeps its checkpoints for a
    retry and the post-mortem; a running or pending one resumes from them). A kill
    between a pack's last result and the removal of its directory, or a former owner that
    wrote after its pack was finished, leaves one behind (up to 1.6 GB at paper size).

    Only ``pack-<id>`` directories of the store's own studies (``<slug>-<uid>``) are
    looked at, and only those holding nothing but kerasgen's own checkpoint files are
    removed. Returns ``(removed, kept)``: each removed directory with the bytes it freed,
    and a sentence for each finished pack's directory left because it holds something
    else."""
    removed: list[tuple[Path, int]] = []
    kept: list[str] = []
    root = Path(root)
    if not root.is_dir():
        return removed, kept
    for name, uid, packs in store.finished_packs():
        directory = study_directory(root, name, uid)
        for pack_id in packs:
            path = directory / f"pack-{pack_id}"
            if path.is_symlink() or not path.is_dir():
                continue
            foreign = foreign_entries(path)
            if foreign:
                kept.append(f"{path} is kept: it holds {foreign[0].name!r}, which kerasgen "
                            "did not write")
                continue
            size = sum(f.stat().st_size for f in path.iterdir())
            remove_pack_files(path)
            removed.append((path, size))
    return removed, kept


__all__ = ["DiskFull", "PackCheckpoint", "atomic_savez", "atomic_write_text",
           "cell_weights_path", "check_directory", "clean_finished_packs", "default_root",
           "existing_ancestor", "foreign_entries", "group_weights_path", "load_arrays",
           "load_cell_weights", "save_cell_weights", "slug", "study_directory",
           "study_files"]
