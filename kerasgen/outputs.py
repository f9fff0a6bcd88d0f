"""Outputs are guests: a command writes, replaces or deletes only what it wrote itself.

Every output a command writes (a file given by ``-o``, a directory given by ``--out`` or
``--figures``) comes with a *manifest* of what the command wrote: the command, and each
file's name, size and SHA-256. The manifest of a directory is ``.kerasgen-output.json``
inside it; that of a file ``FILE`` is ``.FILE.kerasgen-output.json`` beside it.

- An existing output is replaced (``--force``, or a figure of the same name) only when its
  manifest says that the same command wrote it and every file still matches the manifest
  (a file the user edited since is theirs now).
- Anything else in the way is refused with ``OutputError`` (exit 2), naming it and the
  way out: a file or directory the command did not write, a store, a checkpoint root, a
  device node or fifo, a symbolic link (even one pointing at an earlier output).
- An output that is, or contains, an input (the store being read, its ``-wal``/``-shm``
  files, its checkpoint directory), or lies inside the checkpoint directory, is refused
  before anything is written.

A directory output is written into a staging directory beside it and swapped in when
complete; the old one (verified against its manifest again just before) is then deleted.
A file output is written atomically (``kerasgen.checkpoints.atomic_write_text``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

MANIFEST = ".kerasgen-output.json"
"""The manifest of a directory output, inside it."""


class OutputError(ValueError):
    """An output path that the command may not write; the message names it and what to do."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_files(root: Path, names: Iterable[str]) -> dict[str, dict]:
    """``{name: {"size", "sha256"}}`` of files under ``root``."""
    return {name: {"size": (root / name).stat().st_size, "sha256": _sha256(root / name)}
            for name in names}


def file_manifest(path: Path) -> Path:
    """Where the manifest of a file output lives: ``.NAME.kerasgen-output.json`` beside it."""
    return Path(path).with_name(f".{Path(path).name}{MANIFEST}")


def _read_manifest(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("files"), dict) else None


def _kind(path: Path) -> str:
    """What a non-regular path is, in words."""
    mode = path.lstat().st_mode
    if stat.S_ISLNK(mode):
        return f"a symbolic link (to {os.readlink(path)})"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device node"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a file"


def _is_store(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


# ---------------------------------------------------------------- inputs

def protected_paths(db: str | os.PathLike | None,
                    checkpoint_dir: str | os.PathLike | None = None) -> list[Path]:
    """The inputs an output may never be, contain, or lie in: a store, its ``-wal`` and
    ``-shm`` files and its checkpoint directory (``<db>.checkpoints`` or the one given)."""
    if not isinstance(db, (str, os.PathLike)):
        return []  # an open connection: nothing to protect by path
    db = Path(db)
    paths = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), Path(f"{db}-journal")]
    paths.append(Path(checkpoint_dir) if checkpoint_dir else Path(f"{db}.checkpoints"))
    return paths


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(path))


def check_not_an_input(out: Path, protected: Iterable[Path], flag: str) -> None:
    """Refuse an output equal to an input, containing one, or inside a checkpoint root."""
    target = _resolved(out)
    for item in protected:
        item_real = _resolved(item)
        if target == item_real:
            raise OutputError(f"{flag} {out} is an input of this command ({item}); choose "
                              "another output path.")
        if item_real.is_relative_to(target) and item.exists():
            raise OutputError(f"{flag} {out} contains {item}, an input of this command: "
                              "writing it could replace the input. Choose another output "
                              "path.")
        if item_real.is_dir() and target.is_relative_to(item_real):
            raise OutputError(f"{flag} {out} lies inside {item}, a checkpoint directory "
                              "kerasgen manages; choose another output path.")


# ---------------------------------------------------------------- one file (-o)

def check_file_output(path: Path, command: str, force: bool, protected: Iterable[Path] = (),
                      flag: str = "--output") -> None:
    """Refuse, before anything is written, a file output that would replace or destroy
    what ``command`` did not write (see the module docstring)."""
    path = Path(path)
    check_not_an_input(path, protected, flag)
    if path.is_symlink():
        raise OutputError(f"{flag} {path} is {_kind(path)}: kerasgen does not write through "
                          "links; give the real path, or another file name.")
    if not path.exists():
        return
    if not path.is_file():
        raise OutputError(f"{flag} {path} is {_kind(path)}; give a file name.")
    if not force:
        raise OutputError(f"{path} exists; pass --force to replace it (only an earlier "
                          f"output of `{command}` is replaced), or choose another {flag}.")
    manifest = _read_manifest(file_manifest(path))
    what = "a kerasgen store" if _is_store(path) else "a file"
    if manifest is None or manifest.get("command") != command:
        raise OutputError(f"{path} is {what} that `{command}` did not write (no manifest of "
                          f"it beside it): --force replaces only an earlier output of "
                          f"`{command}`. Remove it yourself, or choose another {flag}.")
    if describe_files(path.parent, [path.name]) != {path.name: manifest["files"].get(path.name)}:
        raise OutputError(f"{path} changed since `{command}` wrote it (its size or content "
                          "differs from the manifest): --force will not replace it. Remove it "
                          f"yourself, or choose another {flag}.")


def write_file_output(path: Path, data: str | bytes, command: str) -> None:
    """Write a file output atomically, then its manifest."""
    from kerasgen.checkpoints import _atomic

    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    _atomic(path, lambda fh: fh.write(payload))
    _atomic(file_manifest(path), lambda fh: fh.write(json.dumps(
        {"command": command, "files": describe_files(path.parent, [path.name])},
        indent=1).encode()))


# ---------------------------------------------------------------- a directory (--out)

def _listing(root: Path) -> tuple[list[str], list[Path]]:
    """(regular files relative to ``root``, entries that are not: links, devices, ...)."""
    files, odd = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in dirnames:
            if (base / name).is_symlink():
                odd.append(base / name)
        for name in filenames:
            entry = base / name
            if entry.is_symlink() or not entry.is_file():
                odd.append(entry)
            else:
                files.append(str(entry.relative_to(root)))
    return sorted(files), odd


def check_replaceable_directory(out: Path, command: str, flag: str = "--out") -> None:
    """Raise unless ``out`` holds exactly an earlier output of ``command``, unchanged."""
    manifest = _read_manifest(out / MANIFEST)
    files, odd = _listing(out)
    if odd:
        raise OutputError(f"{flag} {out} holds {odd[0]}, {_kind(odd[0])} that `{command}` did "
                          "not write: --force will not delete it. Choose another "
                          f"{flag}, or empty it yourself.")
    if manifest is None or manifest.get("command") != command:
        first = next((f for f in files if f != MANIFEST), None)
        what = (f"{first}, " + ("a kerasgen store" if first and _is_store(out / first)
                                else "a file") if first else "files")
        raise OutputError(f"{flag} {out} holds {what} that `{command}` did not write (no "
                          "manifest of an earlier output there): --force replaces only an "
                          f"earlier output of `{command}`. Choose another {flag}.")
    listed = manifest["files"]
    for name in files:
        if name == MANIFEST:
            continue
        if name not in listed:
            what = "a kerasgen store" if _is_store(out / name) else "a file"
            raise OutputError(f"{flag} {out} holds {name}, {what} that `{command}` did not "
                              "write: --force will not delete it. Move it away, or choose "
                              f"another {flag}.")
        if describe_files(out, [name])[name] != listed[name]:
            raise OutputError(f"{out / name} changed since `{command}` wrote it: --force will "
                              f"not delete it. Move it away, or choose another {flag}.")


def check_directory_output(out: Path, command: str, force: bool,
                           protected: Iterable[Path] = (), flag: str = "--out") -> None:
    """Refuse, before anything is written, a directory output that is not empty and not
    an earlier, unchanged output of ``command`` (with ``force``)."""
    out = Path(out)
    check_not_an_input(out, protected, flag)
    if out.is_symlink():
        raise OutputError(f"{flag} {out} is {_kind(out)}: kerasgen does not write through "
                          "links; give the real path.")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{flag} {out} is not a directory ({_kind(out)}); choose another "
                          f"{flag}.")
    if not any(out.iterdir()):
        return
    if not force:
        raise OutputError(f"{out} already holds files; pass --force to replace an earlier "
                          f"output of `{command}`, or choose another {flag}.")
    check_replaceable_directory(out, command, flag)


@contextmanager
def staged_directory(out: str | os.PathLike, command: str, force: bool = False,
                     protected: Iterable[Path] = (), flag: str = "--out",
                     error: type[OutputError] = OutputError) -> Iterator[Path]:
    """Yield a staging directory beside ``out``; on success it becomes ``out`` with its
    manifest, replacing an earlier output of ``command`` (checked first and again just
    before it is deleted). Nothing is left behind on failure. Refusals raise ``error``
    (an OutputError subclass of the caller's)."""
    out = Path(out)
    protected = list(protected)
    try:
        check_directory_output(out, command, force, protected, flag)
    except OutputError as exc:
        raise error(str(exc)) from None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = out.parent / f".{out.name}.stage-{uuid.uuid4().hex[:8]}"
        stage.mkdir()
    except OSError as exc:
        raise error(f"cannot write in {out.parent} ({exc.strerror or exc}); choose "
                    f"another {flag}.") from None
    try:
        yield stage
        files, _ = _listing(stage)
        (stage / MANIFEST).write_text(json.dumps(
            {"command": command, "files": describe_files(stage, files)}, indent=1))
        old = None
        if out.exists() and any(out.iterdir()):
            check_replaceable_directory(out, command, flag)  # nothing crept in meanwhile
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(old)
        elif out.exists():
            out.rmdir()  # empty: nothing to keep
        stage.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


# ---------------------------------------------------------------- files into a directory

def place_files(sources: list[Path], into: Path, command: str,
                protected: Iterable[Path] = (), flag: str = "--figures") -> list[Path]:
    """Copy ``sources`` (files a command drew in a scratch directory) into ``into``, a
    directory that may hold other things, recording them in its manifest. A file of the
    same name already there is replaced only when the manifest says ``command`` wrote it
    and it is unchanged; anything else is refused before any file is copied. Returns the
    paths written."""
    into = Path(into)
    check_not_an_input(into, protected, flag)
    if into.is_symlink() or (into.exists() and not into.is_dir()):
        raise OutputError(f"{flag} {into} is {_kind(into)}, not a directory; choose another "
                          f"{flag}.")
    try:
        into.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{flag} {into} cannot be created ({exc.strerror or exc}); choose "
                          f"another {flag}.") from None
    if not os.access(into, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {into} is not writable by this user; choose another "
                          f"{flag}.")
    manifest = _read_manifest(into / MANIFEST) or {"command": command, "files": {}}
    listed = manifest["files"] if manifest.get("command") == command else {}
    for source in sources:
        target = into / source.name
        if target.is_symlink() or (target.exists() and not target.is_file()):
            raise OutputError(f"{flag} {into} holds {target.name}, {_kind(target)}; kerasgen "
                              f"will not replace it. Choose another {flag}.")
        if target.exists() and (target.name not in listed or describe_files(
                into, [target.name])[target.name] != listed[target.name]):
            raise OutputError(f"{flag} {into} holds {target.name}, which `{command}` did not "
                              "write (or which changed since): kerasgen will not replace it. "
                              f"Move it away, or choose another {flag}.")
    from kerasgen.checkpoints import _atomic

    written = []
    for source in sources:
        data = Path(source).read_bytes()
        _atomic(into / source.name, lambda fh, data=data: fh.write(data))
        written.append(into / source.name)
    listed = {**listed, **describe_files(into, [p.name for p in written])}
    with contextlib.suppress(OSError):
        (into / MANIFEST).write_text(json.dumps({"command": command, "files": listed},
                                                indent=1))
    return written


# ---------------------------------------------------------------- text for spreadsheets

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet run a CSV cell as a formula (OWASP, "CSV injection")."""


def spreadsheet_safe(frame):
    """A copy of ``frame`` whose text cells that begin like a formula (``= + - @``, a tab
    or a carriage return) start with ``'``, as OWASP advises: a study named
    ``=HYPERLINK(...)`` is shown, never run. Numbers (negative ones included) are left
    alone."""
    import pandas as pd

    out = frame.copy()
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].map(
                lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_STARTS)
                else v)
    return out


__all__ = ["FORMULA_STARTS", "MANIFEST", "OutputError", "check_directory_output",
           "check_file_output", "check_not_an_input", "check_replaceable_directory",
           "describe_files", "file_manifest", "place_files", "protected_paths",
           "spreadsheet_safe", "staged_directory", "write_file_output"]
