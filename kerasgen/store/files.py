"""Opening a store file: inspection without modification, tracked connections, read-only
readers (a snapshot where this user may not write beside the file), waiting for locks."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

from kerasgen.store import schema
from kerasgen.store.common import APPLICATION_ID, StoreError

BUSY_TIMEOUT_MS = 30_000
"""How long one SQLite call waits for a lock (``KERASGEN_BUSY_TIMEOUT_MS`` overrides it,
for tests). Past it a write does not fail: it reports who holds the lock and waits on."""
LOCK_REPORT_SECONDS = 60.0
"""While a write waits for the lock, how often it says so again."""


def busy_timeout_ms() -> int:
    try:
        return max(int(os.environ.get("KERASGEN_BUSY_TIMEOUT_MS", BUSY_TIMEOUT_MS)), 1)
    except ValueError:
        return BUSY_TIMEOUT_MS

def _ro_uri(path: Path) -> str:
    return f"{path.resolve().as_uri()}?mode=ro"


class _Unusable(StoreError):
    """A refusal that may be a snapshot of a file caught mid-write (checked again)."""


# How often, and after how long, a file that looks truncated/corrupt/foreign is looked at
# again before it is refused: a writer's commit or checkpoint in another process can make
# a raw look at the file see a new header before the pages it promises, or a concurrent
# migration can be half-visible to an unlocked (immutable) read. Real damage persists.
INSPECT_ATTEMPTS = 5
INSPECT_RETRY_SECONDS = 0.02


# Store files this process has SQLite connections to (resolved path -> count).
# SQLite's locks are POSIX advisory locks, which belong to the process: closing ANY file
# descriptor on the database file drops all of them (SQLite's "how to corrupt a
# database", section 2.2). So the raw header read below must never happen while this
# process has the file open through SQLite: a dashboard thread or a heartbeat opening
# a second connection would silently release the worker's locks (seen as "disk I/O
# error" in readers). While a connection is open here, the file was already inspected,
# and it is looked at through SQLite only.
_OPEN_HERE: dict[str, int] = {}
_OPEN_LOCK = threading.Lock()


def _key(path: Path) -> str:
    return os.path.realpath(path)


def _track(path: Path, delta: int) -> None:
    with _OPEN_LOCK:
        key = _key(path)
        count = _OPEN_HERE.get(key, 0) + delta
        if count > 0:
            _OPEN_HERE[key] = count
        else:
            _OPEN_HERE.pop(key, None)


def _open_here(path: Path) -> bool:
    with _OPEN_LOCK:
        return _key(path) in _OPEN_HERE


class TrackedConnection(sqlite3.Connection):
    """A connection that tells ``inspect_store`` while it holds the file open."""

    def close(self) -> None:
        tracked = getattr(self, "_tracked_path", None)
        super().close()
        if tracked is not None:
            self._tracked_path = None
            _track(tracked, -1)


def _connect(path: Path, uri: str | None = None, **kwargs) -> sqlite3.Connection:
    conn = sqlite3.connect(uri or path, uri=uri is not None, factory=TrackedConnection,
                           timeout=busy_timeout_ms() / 1000, check_same_thread=False, **kwargs)
    conn._tracked_path = Path(path)
    _track(Path(path), +1)
    return conn


def inspect_store(path: str | os.PathLike) -> dict:
    """Look at a file without changing it: {"exists", "empty", "user_version", ...}.

    Raises StoreError for a file that is not SQLite, is corrupt or truncated, or is a
    SQLite database of some other application, or of a newer kerasgen. Creates nothing
    beside the file (no -wal/-shm) when nobody has it open.
    """
    path = Path(path)
    if path.exists() and _open_here(path):
        return _inspect_through_sqlite(path)
    for attempt in range(INSPECT_ATTEMPTS):
        try:
            return _inspect_once(path)
        except _Unusable as exc:
            if attempt == INSPECT_ATTEMPTS - 1:
                raise StoreError(str(exc)) from exc.__cause__
            time.sleep(INSPECT_RETRY_SECONDS * (attempt + 1))
    raise AssertionError("unreachable")


def _inspect_through_sqlite(path: Path) -> dict:
    """Inspection of a file this process already has open through SQLite (so it was
    inspected when first opened): version and application id, no raw file access."""
    conn = sqlite3.connect(_ro_uri(path), uri=True, timeout=busy_timeout_ms() / 1000)
    try:
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} cannot be read ({exc}).") from exc
    finally:
        conn.close()
    if application_id == 0 and user_version == 0:
        return {"exists": True, "empty": True, "user_version": 0}
    if application_id != APPLICATION_ID:
        raise StoreError(f"{path} is a SQLite database of another application, not a "
                         "kerasgen store. Use a new file name for the store.")
    if user_version > schema.SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer kerasgen (schema version {user_version}; this "
            f"kerasgen understands up to {schema.SCHEMA_VERSION}). Upgrade kerasgen "
            "(pip install -U kerasgen); the file has not been modified.")
    return {"exists": True, "empty": False, "user_version": user_version}


def _inspect_once(path: Path) -> dict:
    if not path.exists():
        return {"exists": False, "empty": True, "user_version": 0}
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a kerasgen store (a .db file).")
    with open(path, "rb") as fh:
        header = fh.read(100)
    if not header:
        return {"exists": True, "empty": True, "user_version": 0}
    if not b"SQLite format 3\x00".startswith(header[:16]):
        raise StoreError(
            f"{path} is not a kerasgen store: it is not a SQLite database at all. "
            "Pass the path of a store that kerasgen created, or a new file name."
        )
    if len(header) < 100:
        raise _Unusable(f"{path} is corrupt: its SQLite header is truncated "
                        f"({len(header)} bytes).")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    page_count = int.from_bytes(header[28:32], "big")
    # The in-header page count is valid only when its "version-valid-for" number matches
    # the change counter (SQLite < 3.7.0 did not maintain it).
    if header[24:28] != header[92:96]:
        page_count = 0
    # Order matters: header, then the -wal, then the size. A checkpoint that grows the
    # file runs while the -wal exists, so a -wal that is gone after the header was read
    # means the file had its full size before it was measured.
    wal = Path(str(path) + "-wal")
    wal_exists = wal.exists()
    wal_has_frames = wal_exists and _size(wal) > 0
    size = _size(path)
    if page_count and size < page_size * page_count and not wal_has_frames:
        raise _Unusable(
            f"{path} is corrupt: it is truncated ({size} bytes, but its header promises "
            f"{page_count} pages of {page_size} bytes). Restore it from a backup; kerasgen "
            "has not touched it."
        )
    # A WAL-mode file with no -wal next to it has no open connection and nothing to
    # recover: read it as immutable. A plain ``mode=ro`` connection would create empty
    # -wal and -shm files beside it (and leave them behind), which must not happen to a
    # file that turns out to belong to another application or a newer kerasgen. When a
    # -wal exists (a live or crashed writer), the ordinary read-only connection is needed
    # to see its committed frames; it then creates nothing new except, at most, the -shm.
    # A reader that may not write beside the file (a read-only directory or -shm) cannot
    # use the WAL index at all; it reads the file as immutable too (see connect_readonly).
    wal_mode = header[18] == 2 or header[19] == 2
    immutable = wal_mode and (not wal_exists or not _can_share_wal_index(path))
    uri = _ro_uri(path) + ("&immutable=1" if immutable else "")
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout_ms() / 1000,
                               isolation_level=None)
    except sqlite3.Error as exc:
        raise _Unusable(f"{path} cannot be opened: {exc}") from exc
    try:
        # One read transaction: the three facts come from the same snapshot (in autocommit
        # a migration committed between two statements would show tables without the
        # application id).
        conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms()}")
        conn.execute("BEGIN")
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        user_version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        raise _Unusable(
            f"{path} is corrupt ({exc}). Restore it from a backup; kerasgen has not touched it."
        ) from exc
    finally:
        conn.close()
    if application_id != APPLICATION_ID:
        if not tables and application_id == 0 and user_version == 0:
            return {"exists": True, "empty": True, "user_version": 0}
        raise _Unusable(
            f"{path} is a SQLite database of another application, not a kerasgen store "
            f"(tables: {', '.join(sorted(tables)) or 'none'}). Use a new file name for "
            "the store; kerasgen has not touched this one."
        )
    if user_version > schema.SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer kerasgen (schema version {user_version}; this "
            f"kerasgen understands up to {schema.SCHEMA_VERSION}). Upgrade kerasgen "
            "(pip install -U kerasgen); the file has not been modified."
        )
    return {"exists": True, "empty": False, "user_version": user_version, "tables": tables}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms()}")
    conn.execute("PRAGMA foreign_keys = ON")


def _enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Switch to WAL. On a new file several processes may try at once; switching needs an
    exclusive lock, and SQLite answers one of two contenders "database is locked" at once,
    without its busy handler (it would deadlock otherwise), so retry here (past the busy
    timeout too, saying who holds the lock)."""
    waiter = LockWait(path)
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if not _is_locked(exc):
                raise _store_error(path, exc) from exc
            waiter.wait(short=True)
    if str(mode).lower() != "wal":
        raise StoreError(
            f"{path} cannot use SQLite's WAL journal (it stayed in {mode!r} mode), which "
            "kerasgen needs so that readers never block writers; a network file system "
            "is the usual cause. Put the store on a local disk.")


def _can_share_wal_index(path: Path) -> bool:
    """Whether this process may use the store's WAL index: create (or write) the -shm
    beside it. A user who may only read the store and its directory cannot."""
    shm = Path(str(path) + "-shm")
    if shm.exists():
        return os.access(shm, os.R_OK | os.W_OK)
    directory = path.parent if str(path.parent) else Path(".")
    return os.access(directory, os.W_OK | os.X_OK)


def connect_readonly(path: str | os.PathLike) -> sqlite3.Connection:
    """A read-only connection to an existing store (checked first).

    The connection is an ordinary ``mode=ro`` one where it can be: a dashboard keeps it
    open while workers write, and only a WAL reader that shares the -shm index sees their
    commits safely. On a store that no process has open, SQLite therefore creates the
    (empty) -wal and -shm files beside it; they belong to the store and are removed by
    the next writer that closes it. Files that are refused are never opened this way
    (``inspect_store`` reads them as immutable).

    A user who may only read the store (a read-only directory or -shm) cannot share the
    WAL index; the store is then read as ``immutable``: its main file only, nothing
    created. If a -wal file with content lies beside it, changes not yet copied into the
    main file are not seen; ``readonly_note(conn)`` says so (the CLI prints it)."""
    path = Path(path)
    info = inspect_store(path)
    if not info["exists"]:
        raise StoreError(f"{path} does not exist: no study has been run into it yet "
                         "(start one with `kerasgen run ... --db PATH`).")
    if info["empty"]:
        raise StoreError(f"{path} is empty: no study has been run into it yet.")
    if _can_share_wal_index(path):
        conn = _connect(path, uri=_ro_uri(path))
        _configure(conn)
        conn.readonly_note = None
        return conn
    conn = _connect(path, uri=_ro_uri(path) + "&immutable=1")
    _configure(conn)
    wal = Path(str(path) + "-wal")
    conn.readonly_note = (
        f"{path} is read as a snapshot (this user may not write beside it): "
        + (f"its last changes ({_size(wal):,} bytes in {wal.name}) are not seen, and a "
           "study still running is not followed" if _size(wal) else
           "a study still running is not followed"))
    return conn


@contextlib.contextmanager
def read_snapshot(conn: sqlite3.Connection):
    """One read transaction on a reader's connection: every read inside it sees the same
    state of the store (a writer committing meanwhile is seen by the next snapshot)."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.rollback()


def readonly_note(conn) -> str | None:
    """Why a reader's view of the store may be stale, or None (see connect_readonly)."""
    return getattr(conn, "readonly_note", None)


# ---------------------------------------------------------------- locks and write errors

def check_writable(path: str | os.PathLike) -> None:
    """Raise StoreError when a store at ``path`` could not be written by this process
    (checked before anything is created or claimed)."""
    path = Path(path)
    _check_writable(path, inspect_store(path)["exists"])


def _check_writable(path: Path, exists: bool) -> None:
    """Refuse, before SQLite creates anything, a store this process cannot write: not a
    regular file (``/dev/null``), a read-only file, or a directory where the journal
    files (``-wal``, ``-shm``) cannot be created."""
    if exists and not path.is_file():
        raise StoreError(f"{path} is not a regular file, so it cannot hold a store; pass "
                         "the path of a .db file")
    directory = path.parent if str(path.parent) else Path(".")
    if exists and not os.access(path, os.W_OK):
        raise StoreError(f"the store {path} is read-only for this user, so nothing can be "
                         "written to it; status, report, db and tui can still read it")
    if directory.exists() and not os.access(directory, os.W_OK | os.X_OK):
        raise StoreError(f"the directory {directory} is not writable, so the store {path} "
                         "cannot be written (SQLite needs its -wal and -shm files beside it); "
                         "status, report, db and tui can still read it")


def _is_locked(exc: Exception) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _is_write_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(w in text for w in ("full", "readonly", "read-only", "disk i/o", "locked",
                                   "unable to open"))


def _store_error(path: Path, exc: Exception) -> StoreError:
    """A write error as a StoreError that names the store and what to do."""
    text = str(exc).lower()
    if "full" in text:
        return StoreError(f"the disk holding the store {path} is full ({exc}); free space "
                          "and run the same command again (nothing recorded is lost)")
    if "readonly" in text or "read-only" in text or "permission" in text:
        return StoreError(f"the store {path} cannot be written ({exc}): check the "
                          "permissions of the file and its directory")
    return StoreError(f"the store {path} cannot be written ({exc})")


def lock_holders(path: Path) -> list[str]:
    """Other processes of this machine that have the store (or its -wal/-shm) open, as
    ``pid (command)``; Linux only (empty elsewhere or when /proc cannot be read)."""
    targets = {os.path.realpath(str(path) + suffix) for suffix in ("", "-wal", "-shm")}
    out = []
    proc = Path("/proc")
    if not proc.is_dir():
        return out
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
            if not any(os.path.realpath(fd) in targets for fd in fds):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:
            continue
        out.append(f"{entry.name} ({command[:60] or '?'})")
    return sorted(out)


class LockWait:
    """Waiting for the store's write lock past SQLite's busy timeout: reports on stderr
    (who holds the lock, how long it has waited) at once and every
    ``LOCK_REPORT_SECONDS``, then waits on. A lock is never a reason to fail."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.started: float | None = None
        self.reported = 0.0
        self.delay = 0.002

    def wait(self, short: bool = False) -> None:
        now = time.monotonic()
        if self.started is None:
            self.started = now
        # SQLite's busy handler has already waited the busy timeout, except for the few
        # calls that it answers at once (switching to WAL): those report once they too
        # have waited that long.
        due = now - self.started >= (busy_timeout_ms() / 1000 if short else 0.0)
        if due and (self.reported == 0.0 or now - self.reported >= LOCK_REPORT_SECONDS):
            self.reported = now
            holders = lock_holders(self.path)
            who = f"held by {', '.join(holders)}" if holders else "held by another process"
            waited = busy_timeout_ms() / 1000 + (now - self.started if not short else 0.0)
            print(f"kerasgen: waiting for the store lock on {self.path} ({who}) for "
                  f"{waited:.0f} s so far; kerasgen goes on when it is released",
                  file=sys.stderr, flush=True)
        time.sleep(self.delay)
        self.delay = min(self.delay * 2, 0.25 if short else 1.0)



__all__ = ["BUSY_TIMEOUT_MS", "LockWait", "busy_timeout_ms", "check_writable",
           "connect_readonly", "inspect_store", "lock_holders", "read_snapshot",
           "readonly_note"]
