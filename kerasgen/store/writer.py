"""The writer: a read-write ``Store`` handle. Studies and their cells, atomic pack claims,
heartbeats, epochs and outcomes; every write a short ``BEGIN IMMEDIATE`` transaction."""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import sqlite3
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from kerasgen.store import schema
from kerasgen.store.common import (
    APPLICATION_ID,
    BOUND_COLUMNS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_STALE_SECONDS,
    EPOCH_COLUMNS,
    LOGGER_PACK_PREFIX,
    STATUSES,
    CellBusy,
    ClaimLost,
    DuplicateEpoch,
    StoreError,
    StudyMismatch,
    _utc_ago,
    utc_now,
)
from kerasgen.store.files import (
    LockWait,
    _check_writable,
    _configure,
    _connect,
    _enable_wal,
    _is_locked,
    _is_write_error,
    _store_error,
    inspect_store,
)
from kerasgen.store.schema import BEST_METRIC_SQL
from kerasgen.vocabulary import DIVERGED, DONE, FAILED, PENDING, RUNNING


@dataclass(frozen=True)
class Claim:
    """A pack claimed by a worker: its cells (ordered by learning rate), its study, and
    a token unique to this claim (checkpoint files carry it: a former owner of the pack
    never deletes the files of the one that took it over)."""

    pack_id: str
    worker: str
    cells: tuple[dict, ...]
    resumed: bool  # True when the pack was reclaimed from a dead worker or retried
    study: str = ""
    study_uid: str | None = None
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    @property
    def cell_ids(self) -> list[int]:
        return [c["cell_id"] for c in self.cells]


class Store:
    """A read-write handle on a store file. Cheap to open; one per process or thread."""

    def __init__(self, path: str | os.PathLike, create: bool = True):
        self.path = Path(path)
        info = inspect_store(self.path)
        if not info["exists"] and not create:
            raise StoreError(f"{self.path} does not exist.")
        _check_writable(self.path, info["exists"])
        if not info["exists"]:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"the store {self.path} cannot be created: {exc.strerror} "
                                 f"({self.path.parent}); choose another --db") from exc
        try:
            self.conn = _connect(self.path, isolation_level=None)
            _configure(self.conn)
            _enable_wal(self.conn, self.path)
            self.conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.OperationalError as exc:
            raise _store_error(self.path, exc) from exc
        self._migrate(info["user_version"])

    # -- lifecycle
    def close(self) -> None:
        # Copy what the WAL holds into the main file before leaving. SQLite does that
        # itself when the last connection closes, but not when a reader (a dashboard,
        # always read-only) is still attached: the study would then live partly in
        # `-wal`, and a user copying the `.db` alone would lose its last results.
        # PASSIVE never waits for readers or writers; it is best effort.
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction that takes the write lock at once.

        Past SQLite's busy timeout it waits on, saying who holds the lock, instead of
        failing; a full disk or a read-only file is a StoreError naming the store."""
        waiter = None
        while True:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise _store_error(self.path, exc) from exc
                waiter = waiter or LockWait(self.path)
                waiter.wait()
        try:
            yield self.conn
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError) and _is_write_error(exc):
                raise _store_error(self.path, exc) from exc
            raise
        else:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
                raise _store_error(self.path, exc) from exc

    def _migrate(self, current: int) -> None:
        if current >= schema.SCHEMA_VERSION:
            return
        with self.transaction() as conn:
            # Re-read under the lock: another process may have migrated meanwhile.
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            for version in range(current, schema.SCHEMA_VERSION):
                name, step = schema.MIGRATIONS[version]
                step(conn)
                conn.execute("INSERT INTO migrations VALUES (?, ?, ?)",
                             (version + 1, name, utc_now()))
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")

    # -- studies
    def create_study(self, name: str, spec: dict, cells: Iterable[dict],
                     environment: dict | None = None, normalize=None) -> int:
        """Create a study with its cells, or attach to the existing one of that name.

        ``spec`` is the normalized specification (JSON-serializable). A different
        specification under the same name is refused, naming the differences.
        ``normalize`` maps a stored specification to the form ``spec`` is in (a study
        registered by an older kerasgen lacks the options added since, at their
        defaults); without it the stored text must match exactly.
        """
        spec_json = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        spec_hash = _hash(spec_json)
        env = dict(environment or {})
        with self.transaction() as conn:
            row = conn.execute("SELECT study_id, spec_json FROM studies WHERE name = ?",
                               (name,)).fetchone()
            if row is not None:
                study_id, existing = row
                try:
                    stored = json.loads(existing)
                except ValueError:
                    raise StoreError(f"The specification of study {name!r} in {self.path} is "
                                     "damaged (not JSON); it cannot be resumed. Run the study "
                                     "under another name or into another store.") from None
                if existing != spec_json and (normalize is None or normalize(stored) != spec):
                    diff = describe_difference(stored, spec)
                    raise StudyMismatch(
                        f"A study named {name!r} already exists in {self.path} with a "
                        f"different specification: {diff}. Give the new study another "
                        "name, or use another store."
                    )
                return study_id
            cur = conn.execute(
                "INSERT INTO studies (name, spec_json, spec_hash, kerasgen_version, "
                "tensorflow_version, keras_version, python_version, host, device, "
                "environment_json, created_at, uid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (name, spec_json, spec_hash, env.get("kerasgen"), env.get("tensorflow"),
                 env.get("keras"), env.get("python"), env.get("host"), env.get("device"),
                 json.dumps(env, sort_keys=True), utc_now(), uuid.uuid4().hex),
            )
            study_id = cur.lastrowid
            conn.executemany(
                "INSERT INTO cells (study_id, model, dataset, batch_size, learning_rate, seed,"
                " updated_at) VALUES (?,?,?,?,?,?,?)",
                [(study_id, c["model"], c["dataset"], int(c["batch_size"]),
                  float(c["learning_rate"]), int(c["seed"]), utc_now()) for c in cells],
            )
            return study_id

    def extend_study(self, study_id: int, spec: dict, cells: Iterable[dict],
                     continue_after: int | None = None) -> dict[str, int]:
        """Grow a study (``kerasgen run --extend``): its specification becomes ``spec``,
        the cells it lacks are added (pending), and with ``continue_after`` (the old
        epochs, under the epochs rule) every cell done at exactly that many epochs goes
        back to pending to continue from its final weights (``continue_from``). Old rows
        are untouched. Returns {"added": ..., "continued": ...}."""
        spec_json = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        now = utc_now()
        with self.transaction() as conn:
            conn.execute("UPDATE studies SET spec_json = ?, spec_hash = ? WHERE study_id = ?",
                         (spec_json, _hash(spec_json), study_id))
            added = conn.executemany(
                "INSERT OR IGNORE INTO cells (study_id, model, dataset, batch_size, "
                "learning_rate, seed, updated_at) VALUES (?,?,?,?,?,?,?)",
                [(study_id, c["model"], c["dataset"], int(c["batch_size"]),
                  float(c["learning_rate"]), int(c["seed"]), now) for c in cells]).rowcount
            continued = 0
            if continue_after is not None:
                continued = conn.execute(
                    "UPDATE cells SET status = 'pending', continue_from = epochs_done, "
                    "pack_id = NULL, worker = NULL, claim_token = NULL, heartbeat_at = NULL, "
                    "finished_at = NULL, updated_at = ? WHERE study_id = ? AND status = 'done' "
                    "AND epochs_done = ?", (now, study_id, int(continue_after))).rowcount
        return {"added": added, "continued": continued}

    def ensure_cell(self, study: str, model: str, dataset: str, batch_size: int,
                    learning_rate: float, seed: int, environment: dict | None = None,
                    hparams: dict | None = None) -> None:
        """Create a cell (and a study of kind "manual", recording ``environment``) for a
        user's own ``model.fit``; ``hparams``: its other hyper-parameters, kept as JSON."""
        with self.transaction() as conn:
            row = conn.execute("SELECT study_id FROM studies WHERE name = ?",
                               (study,)).fetchone()
            if row is None:
                env = dict(environment or {})
                spec = {"kind": "manual", "name": study}
                study_id = conn.execute(
                    "INSERT INTO studies (name, spec_json, spec_hash, kerasgen_version, "
                    "tensorflow_version, keras_version, python_version, host, "
                    "environment_json, created_at, uid) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (study, json.dumps(spec, sort_keys=True), _hash(json.dumps(spec)),
                     env.get("kerasgen"), env.get("tensorflow"), env.get("keras"),
                     env.get("python"), env.get("host"), json.dumps(env, sort_keys=True),
                     utc_now(), uuid.uuid4().hex)).lastrowid
            else:
                study_id = row[0]
            conn.execute(
                "INSERT OR IGNORE INTO cells (study_id, model, dataset, batch_size, "
                "learning_rate, seed, updated_at, hparams_json) VALUES (?,?,?,?,?,?,?,?)",
                (study_id, model, dataset, int(batch_size), float(learning_rate), int(seed),
                 utc_now(), json.dumps(hparams, sort_keys=True) if hparams else None))

    def mark_running(self, cell_ids: Sequence[int], worker: str | None = None) -> None:
        """Mark cells trained outside the claim protocol (a user's own fit) as running."""
        now = utc_now()
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE cells SET status = 'running', worker = ?, heartbeat_at = ?, "
                "started_at = COALESCE(started_at, ?), updated_at = ? WHERE cell_id = ? "
                "AND status IN ('pending', 'running')",
                [(worker, now, now, now, i) for i in cell_ids])

    def study(self, name: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM studies WHERE name = ?", (name,)).fetchone()
        return _row_dict(self.conn, row, "studies") if row else None

    def study_environment(self, study_id: int) -> dict:
        """The study's recorded environment (``environment_json``): the facts at its
        creation and one ``"worker <name>"`` entry per worker that trained it."""
        row = self.conn.execute("SELECT environment_json FROM studies WHERE study_id = ?",
                                (study_id,)).fetchone()
        try:
            return json.loads(row[0] or "{}") if row else {}
        except ValueError:
            return {}

    def update_study_environment(self, study_id: int, **fields: Any) -> None:
        """Merge runtime facts (e.g. the compile mode a worker chose) into the study."""
        with self.transaction() as conn:
            env = json.loads(conn.execute("SELECT environment_json FROM studies WHERE "
                                          "study_id = ?", (study_id,)).fetchone()[0] or "{}")
            env.update(fields)
            conn.execute("UPDATE studies SET environment_json = ? WHERE study_id = ?",
                         (json.dumps(env, sort_keys=True), study_id))

    # -- claims
    def claim_pack(self, study_id: int, worker: str, pack_size: int,
                   stale_seconds: float = DEFAULT_STALE_SECONDS,
                   device: str | None = None) -> Claim | None:
        """Atomically claim the next pack of a study, or None when nothing is left.

        A pack whose heartbeat is older than ``stale_seconds`` (its worker died) is
        reclaimed first, with exactly its cells, so it resumes from its checkpoint; a
        stale pack of a user's ``SQLiteLogger`` (no checkpoint: nothing can resume it) is
        marked failed instead, its rows kept. Otherwise up to ``pack_size`` pending cells of
        one (model, dataset, seed, batch_size) group form a new pack, in ascending learning
        rate. Every claimed cell carries the claim's token (``cells.claim_token``).
        """
        if pack_size < 1:
            raise ValueError(f"pack_size must be >= 1. Received: pack_size={pack_size!r}")
        now = utc_now()
        token = uuid.uuid4().hex[:16]
        with self.transaction() as conn:
            while True:
                stale = conn.execute(
                    "SELECT pack_id FROM cells WHERE study_id = ? AND status = 'running' "
                    "AND pack_id IS NOT NULL AND heartbeat_at < ? ORDER BY heartbeat_at "
                    "LIMIT 1", (study_id, _utc_ago(stale_seconds)),
                ).fetchone() or _dead_local_pack(conn, study_id)
                if stale is None or not str(stale[0]).startswith(LOGGER_PACK_PREFIX):
                    break
                _fail_logger_pack(conn, stale[0], now)
            if stale is not None:
                pack_id, resumed = stale[0], True
                conn.execute(
                    "UPDATE cells SET worker = ?, device = ?, heartbeat_at = ?, claim_token = ?,"
                    " attempts = attempts + 1, updated_at = ? "
                    "WHERE pack_id = ? AND status = 'running'",
                    (worker, device, now, token, now, pack_id),
                )
            else:
                retry = conn.execute(
                    "SELECT pack_id FROM cells WHERE study_id = ? AND status = 'pending' "
                    "AND pack_id IS NOT NULL AND pack_id NOT LIKE ? ORDER BY cell_id LIMIT 1",
                    (study_id, LOGGER_PACK_PREFIX + "%"),
                ).fetchone()
                if retry is not None:
                    # A released pack (its worker failed and gave it back): same cells,
                    # same checkpoint.
                    pack_id, resumed = retry[0], True
                    ids = [r[0] for r in conn.execute(
                        "SELECT cell_id FROM cells WHERE pack_id = ? AND status = 'pending'",
                        (pack_id,))]
                else:
                    # A pack: one (model, dataset, seed, batch size) group, and one starting
                    # epoch (cells that continue after the study grew apart from new ones).
                    first = conn.execute(
                        "SELECT model, dataset, seed, batch_size, COALESCE(continue_from, 0) "
                        "FROM cells WHERE study_id = ? AND status = 'pending' AND pack_id IS "
                        "NULL ORDER BY model, dataset, seed, batch_size, "
                        "COALESCE(continue_from, 0), learning_rate LIMIT 1",
                        (study_id,),
                    ).fetchone()
                    if first is None:
                        return None
                    ids = [r[0] for r in conn.execute(
                        "SELECT cell_id FROM cells WHERE study_id = ? AND status = 'pending' "
                        "AND pack_id IS NULL AND model = ? AND dataset = ? AND seed = ? "
                        "AND batch_size = ? AND COALESCE(continue_from, 0) = ? "
                        "ORDER BY learning_rate LIMIT ?",
                        (study_id, *first, pack_size),
                    )]
                    pack_id, resumed = uuid.uuid4().hex[:16], False
                conn.executemany(
                    "UPDATE cells SET status = 'running', pack_id = ?, worker = ?, device = ?,"
                    " heartbeat_at = ?, claim_token = ?, started_at = COALESCE(started_at, ?), "
                    "attempts = attempts + 1, updated_at = ? WHERE cell_id = ?",
                    [(pack_id, worker, device, now, token, now, now, i) for i in ids],
                )
            rows = conn.execute(
                "SELECT * FROM cells WHERE pack_id = ? AND status = 'running' "
                "ORDER BY learning_rate", (pack_id,),
            ).fetchall()
            cells = tuple(_row_dict(conn, r, "cells") for r in rows)
            name, uid = conn.execute("SELECT name, uid FROM studies WHERE study_id = ?",
                                     (study_id,)).fetchone()
        return Claim(pack_id, worker, cells, resumed, study=name, study_uid=uid, token=token)

    def claim_cells(self, cell_ids: Sequence[int], worker: str,
                    stale_seconds: float = DEFAULT_STALE_SECONDS,
                    abandoned=None) -> Claim:
        """A user's ``SQLiteLogger`` claims its cells, as the runner claims a pack (one
        owner per cell): pending cells, or cells of an earlier logger whose owner is gone
        (its process dead on this host, its heartbeat older than ``stale_seconds``, or
        ``abandoned(worker, token)`` true: a fit of this process that raised). Raises
        CellBusy naming the cell and its owner when another live owner holds one, or when
        it belongs to a ``kerasgen run`` pack (that pack's checkpoint resumes it; finish it
        with ``kerasgen run``). A cell whose earlier logger was abandoned mid-fit is marked
        failed first (its rows kept), and then refused as finished by the logger."""
        now = utc_now()
        token = uuid.uuid4().hex[:16]
        pack_id = f"{LOGGER_PACK_PREFIX}{uuid.uuid4().hex[:12]}"
        with self.transaction() as conn:
            rows = {r[0]: r for r in conn.execute(
                f"SELECT cell_id, status, pack_id, worker, heartbeat_at, claim_token FROM cells "
                f"WHERE cell_id IN ({', '.join('?' * len(cell_ids))})", list(cell_ids))}
            ago = _utc_ago(stale_seconds)
            for cell_id in cell_ids:
                _, status, pack, owner, beat, owner_token = rows[cell_id]
                logger_pack = pack is not None and str(pack).startswith(LOGGER_PACK_PREFIX)
                if pack is not None and not logger_pack and status in (RUNNING, PENDING):
                    raise CellBusy(
                        f"cell {cell_id} belongs to pack {pack} of `kerasgen run` (status "
                        f"{status}, worker {owner}): its checkpoint resumes it; finish it "
                        "with `kerasgen run`, or log your fit as another cell")
                if status != RUNNING:
                    continue
                gone = (worker_is_gone(owner) or (beat is not None and beat < ago)
                        or (abandoned is not None and abandoned(owner, owner_token)))
                if not gone:
                    raise CellBusy(
                        f"cell {cell_id} is being trained by {owner} (heartbeat at {beat}): "
                        "one writer per cell. Wait for it to finish, or log your fit as "
                        "another cell (another seed or study name)")
                _fail_logger_pack(conn, pack, now, only=[cell_id])
            conn.executemany(
                "UPDATE cells SET status = 'running', pack_id = ?, worker = ?, heartbeat_at = ?,"
                " claim_token = ?, started_at = COALESCE(started_at, ?), "
                "attempts = attempts + 1, updated_at = ? WHERE cell_id = ? "
                "AND status = 'pending'",
                [(pack_id, worker, now, token, now, now, i) for i in cell_ids])
            claimed = conn.execute(
                f"SELECT * FROM cells WHERE claim_token = ? AND cell_id IN "
                f"({', '.join('?' * len(cell_ids))})", [token, *cell_ids]).fetchall()
            cells = tuple(_row_dict(conn, r, "cells") for r in claimed)
        return Claim(pack_id, worker, cells, False, token=token)

    def release_orphans(self, study_id: int, worker: str, keep: Iterable[str] = ()) -> list[str]:
        """Give back every running pack of the study recorded under ``worker`` (this very
        process's name) except ``keep`` (the packs it is training now): nothing trains
        them, so none may wait for its heartbeat to go stale. A worker's pack goes back to
        pending (it resumes from its checkpoint); a logger's is marked failed (nothing can
        resume it; its rows are kept). Returns the packs given back."""
        keep = set(keep)
        now = utc_now()
        with self.transaction() as conn:
            packs = [r[0] for r in conn.execute(
                "SELECT DISTINCT pack_id FROM cells WHERE study_id = ? AND status = 'running' "
                "AND worker = ? AND pack_id IS NOT NULL", (study_id, worker))
                if r[0] not in keep]
            for pack_id in packs:
                if str(pack_id).startswith(LOGGER_PACK_PREFIX):
                    _fail_logger_pack(conn, pack_id, now)
                else:
                    conn.execute(
                        "UPDATE cells SET status = 'pending', worker = NULL, heartbeat_at = NULL,"
                        " claim_token = NULL, error = ?, updated_at = ? WHERE pack_id = ? "
                        "AND status = 'running'",
                        (f"released: recorded as running under {worker}, which was not "
                         "training it", now, pack_id))
        return packs

    def pack_owners(self, claim: Claim) -> set[str]:
        """The tokens that own the claim's running cells now (empty: none runs)."""
        return {r[0] for r in self.conn.execute(
            f"SELECT claim_token FROM cells WHERE status = 'running' AND cell_id IN "
            f"({', '.join('?' * len(claim.cell_ids))})", claim.cell_ids)}

    def heartbeat(self, claim: Claim) -> None:
        """Refresh the claim; raise ClaimLost when another claim took its cells over."""
        now = utc_now()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE cells SET heartbeat_at = ? WHERE pack_id = ? AND claim_token = ? "
                "AND status = 'running'", (now, claim.pack_id, claim.token))
            _check_claim(conn, claim)

    def check_claim(self, claim: Claim) -> None:
        """Raise ClaimLost unless every cell of ``claim`` still carries its token (checked
        before a checkpoint or a weight file is written, so a former owner never writes
        one: not even after the new owner finished the pack)."""
        _check_claim(self.conn, claim)

    def heartbeat_sender(self, claim: Claim):
        """(beat, close) for a heartbeat thread: a connection of its own, so the thread
        never shares this one with the trainer."""
        other = Store(self.path)
        return (lambda: other.heartbeat(claim)), other.close

    def release(self, claim: Claim, error: str,
                max_attempts: int = DEFAULT_MAX_ATTEMPTS, count_failure: bool = True) -> str:
        """Give a pack back after an error: pending again (kept together, to resume from
        its checkpoint), or ``failed`` with the error once it has failed
        ``max_attempts`` times. An interruption (``count_failure=False``) never fails a
        pack. Returns the new status."""
        now = utc_now()
        bump = 1 if count_failure else 0
        with self.transaction() as conn:
            failures = (conn.execute(
                "SELECT MAX(failures) FROM cells WHERE pack_id = ? AND status = 'running'",
                (claim.pack_id,)).fetchone()[0] or 0) + bump
            status = FAILED if count_failure and failures >= max_attempts else PENDING
            conn.execute(
                "UPDATE cells SET status = ?, error = ?, failures = ?, worker = NULL, "
                "heartbeat_at = NULL, claim_token = NULL, "
                "finished_at = CASE WHEN ? = 'failed' THEN ? END, "
                "updated_at = ? WHERE pack_id = ? AND claim_token = ? AND status = 'running'",
                (status, error, failures, status, now, now, claim.pack_id, claim.token))
        return status

    def release_cells(self, claim: Claim, status: str, error: str | None = None) -> None:
        """A logger's claim given back: its running cells ``pending`` (a later fit may log
        on, numbering epochs on) or ``failed`` (the fit raised; the rows are kept)."""
        now = utc_now()
        with self.transaction() as conn:
            conn.execute(
                "UPDATE cells SET status = ?, error = ?, worker = CASE WHEN ? = 'failed' THEN "
                "worker END, heartbeat_at = NULL, claim_token = NULL, "
                "finished_at = CASE WHEN ? = 'failed' THEN ? END, updated_at = ? "
                "WHERE pack_id = ? AND claim_token = ? AND status = 'running'",
                (status, error, status, status, now, now, claim.pack_id, claim.token))

    def mark_failed(self, cell_ids: Sequence[int], error: str) -> None:
        now = utc_now()
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE cells SET status = 'failed', error = ?, finished_at = ?, "
                "updated_at = ? WHERE cell_id = ?", [(error, now, now, i) for i in cell_ids])

    def reset_failed(self, study_id: int) -> int:
        """Put failed cells back to pending (``kerasgen run --retry-failed``); a failed cell
        that a user's SQLiteLogger recorded epochs into stays failed (a run would append to
        another training's rows): ``logged_failures`` lists them."""
        with self.transaction() as conn:
            return conn.execute(
                "UPDATE cells SET status = 'pending', failures = 0, error = NULL, "
                "updated_at = ? WHERE study_id = ? AND status = 'failed' "
                "AND NOT (COALESCE(pack_id, '') LIKE ? AND epochs_done > 0)",
                (utc_now(), study_id, LOGGER_PACK_PREFIX + "%")).rowcount

    def logged_failures(self, study_id: int) -> list[int]:
        """Failed cells whose rows a user's SQLiteLogger wrote (never retried by a run)."""
        return [r[0] for r in self.conn.execute(
            "SELECT cell_id FROM cells WHERE study_id = ? AND status = 'failed' "
            "AND COALESCE(pack_id, '') LIKE ? AND epochs_done > 0",
            (study_id, LOGGER_PACK_PREFIX + "%"))]

    # -- epochs and outcomes
    def record_epoch(self, cell_id: int, epoch: int, logs: dict,
                     wall_seconds: float | None = None,
                     claim: Claim | None = None, pack_cells: int | None = None,
                     replay: bool = True) -> bool:
        """Write one epoch of one cell and update its summary, in one transaction.

        ``logs`` maps metric names to numbers, with ``train_``/``test_`` prefixes for
        the standard ones (``train_loss``, ``test_accuracy``, ...); any other finite
        number is kept in ``metrics_json``. ``wall_seconds`` is the fit's epoch time,
        shared by the ``pack_cells`` cells trained in it. Writing an epoch that is
        already recorded does nothing and returns False when ``replay`` (a resumed pack
        redoes epochs since its checkpoint, identically: nothing is written twice); else
        it raises DuplicateEpoch (a row is never dropped silently).
        """
        fixed = {k: _finite_or_none(logs.get(k)) for k in EPOCH_COLUMNS}
        extra = {k: float(v) for k, v in logs.items()
                 if k not in EPOCH_COLUMNS and _finite_or_none(v) is not None}
        now = utc_now()
        with self.transaction() as conn:
            if claim is not None:
                _check_owner(conn, claim, cell_id)
            cur = conn.execute(
                f"INSERT OR IGNORE INTO epochs (cell_id, epoch, {', '.join(EPOCH_COLUMNS)}, "
                "wall_seconds, pack_cells, metrics_json, recorded_at) "
                f"VALUES (?, ?, {', '.join('?' * len(EPOCH_COLUMNS))}, ?, ?, ?, ?)",
                (cell_id, int(epoch), *(fixed[k] for k in EPOCH_COLUMNS),
                 _finite_or_none(wall_seconds), None if pack_cells is None else int(pack_cells),
                 json.dumps(extra, sort_keys=True) if extra else None, now),
            )
            if cur.rowcount == 0:
                if not replay:
                    raise DuplicateEpoch(
                        f"epoch {int(epoch)} of cell {cell_id} is already recorded in "
                        f"{self.path}: a fit that numbers its epochs from 0 again would mix "
                        "two trainings. Continue with initial_epoch=<the next epoch>, or log "
                        "the new training as another cell.")
                return False
            _refresh_summary(conn, cell_id, now)
            return True

    def finish_cell(self, cell_id: int, status: str = DONE,
                    diverged_epoch: int | None = None, error: str | None = None,
                    claim: Claim | None = None) -> None:
        """Mark a cell done, diverged (at an epoch) or failed (with the error)."""
        if status not in (DONE, DIVERGED, FAILED):
            raise ValueError(f"A finished cell is done, diverged or failed, not {status!r}.")
        if status == DIVERGED and diverged_epoch is None:
            raise ValueError("A diverged cell needs the epoch at which it diverged.")
        now = utc_now()
        with self.transaction() as conn:
            if claim is not None:
                _check_owner(conn, claim, cell_id)
            conn.execute(
                "UPDATE cells SET status = ?, diverged_epoch = ?, error = ?, finished_at = ?,"
                " heartbeat_at = NULL, updated_at = ? WHERE cell_id = ?",
                (status, diverged_epoch, error, now, now, cell_id))
            _refresh_summary(conn, cell_id, now)

    # -- reads through the writer's connection (workers need them to resume)
    def epochs_of(self, cell_id: int) -> list[dict]:
        rows = self.conn.execute("SELECT * FROM epochs WHERE cell_id = ? ORDER BY epoch",
                                 (cell_id,)).fetchall()
        return [_row_dict(self.conn, r, "epochs") for r in rows]

    def cell(self, cell_id: int) -> dict:
        row = self.conn.execute("SELECT * FROM cells WHERE cell_id = ?", (cell_id,)).fetchone()
        if row is None:
            raise StoreError(f"No cell with cell_id={cell_id} in {self.path}.")
        return _row_dict(self.conn, row, "cells")

    def study_kind(self, name: str) -> str | None:
        """``"manual"`` (created by a user's own SQLiteLogger), ``"spec"`` (from a
        specification: its cells are fixed) or None (no such study)."""
        row = self.conn.execute("SELECT json_extract(spec_json, '$.kind') FROM studies "
                                "WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return "manual" if row[0] == "manual" else "spec"

    def find_cell(self, study: str, model: str, dataset: str, batch_size: int,
                  learning_rate: float, seed: int) -> tuple[int, dict] | None:
        """(cell id, its extra hyper-parameters) of a cell by its natural key, or None."""
        row = self.conn.execute(
            "SELECT c.cell_id, c.hparams_json FROM cells c JOIN studies s USING (study_id) "
            "WHERE s.name = ? AND c.model = ? AND c.dataset = ? AND c.batch_size = ? "
            "AND abs(c.learning_rate - ?) <= 1e-12 * abs(?) AND c.seed = ?",
            (study, model, dataset, batch_size, learning_rate, learning_rate, seed),
        ).fetchone()
        return None if row is None else (row[0], json.loads(row[1] or "{}"))

    def cell_id(self, study: str, model: str, dataset: str, batch_size: int,
                learning_rate: float, seed: int) -> int:
        """The id of one cell by its natural key (for ``SQLiteLogger``)."""
        row = self.find_cell(study, model, dataset, batch_size, learning_rate, seed)
        if row is None:
            raise StoreError(
                f"No cell (study={study!r}, model={model!r}, dataset={dataset!r}, "
                f"batch_size={batch_size}, learning_rate={learning_rate}, seed={seed}) "
                f"in {self.path}.")
        return row[0]

    def save_bound_row(self, values: dict) -> None:
        """Insert (or replace) one cell's bound terms (a row of ``bounds``)."""
        with self.transaction() as conn:
            conn.execute(f"INSERT OR REPLACE INTO bounds ({', '.join(BOUND_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(BOUND_COLUMNS))})",
                         [values[c] for c in BOUND_COLUMNS])

    def save_measure_rows(self, rows: Sequence[dict]) -> int:
        """Write measures (rows of ``measures``) in one transaction; a row whose (cell,
        measure, settings) is already stored is kept as it is (another process computed
        it first, with the same settings). Returns the rows inserted."""
        from kerasgen.store.queries import MEASURE_COLUMNS

        if not rows:
            return 0
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                f"INSERT OR IGNORE INTO measures ({', '.join(MEASURE_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(MEASURE_COLUMNS))})",
                [[_finite_or_none(r[c]) if c == "value" else r[c] for c in MEASURE_COLUMNS]
                 for r in rows])
            return conn.total_changes - before

    def delete_measure_rows(self, cell_id: int, measure: str, settings_key: str) -> None:
        """Remove one stored measure (``kerasgen measures --recompute``)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM measures WHERE cell_id = ? AND measure = ? AND "
                         "settings_key = ?", (int(cell_id), measure, settings_key))

    def finished_packs(self) -> list[tuple[str, str | None, list[str]]]:
        """(study name, uid, pack ids) of every study: the packs whose cells are all done
        or diverged, whose checkpoints nothing will resume from."""
        rows = self.conn.execute(
            "SELECT s.name, s.uid, c.pack_id FROM cells c JOIN studies s USING (study_id) "
            "WHERE c.pack_id IS NOT NULL GROUP BY s.study_id, c.pack_id "
            "HAVING SUM(c.status NOT IN ('done', 'diverged')) = 0 ORDER BY s.study_id"
        ).fetchall()
        found: dict[tuple, list[str]] = {}
        for name, uid, pack in rows:
            found.setdefault((name, uid), []).append(pack)
        return [(name, uid, packs) for (name, uid), packs in found.items()]

    def running_packs(self) -> dict[str, int]:
        """Packs in training now: pack id -> the fewest epochs done by one of its cells."""
        return dict(self.conn.execute(
            "SELECT pack_id, MIN(epochs_done) FROM cells WHERE status = 'running' "
            "AND pack_id IS NOT NULL GROUP BY pack_id").fetchall())

    def counts(self, study_id: int) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, COUNT(*) FROM cells WHERE study_id = ? "
                                 "GROUP BY status", (study_id,)).fetchall()
        counts = dict.fromkeys(STATUSES, 0)
        counts.update(dict(rows))
        return counts


def _dead_local_pack(conn: sqlite3.Connection, study_id: int) -> tuple | None:
    """A running pack whose worker was a process on this host that no longer exists
    (killed, crashed): reclaimable at once instead of after the stale limit."""
    host = socket.gethostname()
    rows = conn.execute("SELECT DISTINCT pack_id, worker FROM cells WHERE study_id = ? "
                        "AND status = 'running' AND pack_id IS NOT NULL AND worker LIKE ?",
                        (study_id, f"%{host}:%"))
    for pack_id, worker in rows.fetchall():
        if worker_is_gone(worker):
            return (pack_id,)
    return None


def worker_is_gone(worker: str | None) -> bool:
    """Whether a worker is known to be dead: its name ends in ``<host>:<pid>``
    (``runtime.worker_name``, possibly after a role prefix such as ``ray-driver:``), the
    host is this one and no process has that pid. A worker elsewhere is never known dead
    (its heartbeat tells)."""
    if not worker:
        return False
    head, _, pid_text = worker.rpartition(":")
    if head.rpartition(":")[2] != socket.gethostname():
        return False
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    return pid != os.getpid() and not _process_alive(pid)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_owner(conn: sqlite3.Connection, claim: Claim, cell_id: int) -> None:
    row = conn.execute("SELECT worker, status, claim_token FROM cells WHERE cell_id = ?",
                       (cell_id,)).fetchone()
    if row is None or row[2] != claim.token or row[1] != RUNNING:
        raise ClaimLost(f"cell {cell_id} is no longer claimed by {claim.worker} "
                        f"(worker={row[0] if row else None}, status={row[1] if row else None})")


def _check_claim(conn: sqlite3.Connection, claim: Claim) -> None:
    """ClaimLost unless every cell of ``claim`` still carries its token, whatever its
    status: a cell finished under another claim is lost too."""
    taken = conn.execute(
        f"SELECT cell_id, worker, status FROM cells WHERE cell_id IN "
        f"({', '.join('?' * len(claim.cell_ids))}) AND COALESCE(claim_token, '') != ?",
        [*claim.cell_ids, claim.token]).fetchall()
    if taken:
        owners = sorted({f"{w} ({s})" for _, w, s in taken})
        raise ClaimLost(f"pack {claim.pack_id} was taken over: cells "
                        f"{sorted(c for c, _, _ in taken)} now belong to {', '.join(owners)}")


def _fail_logger_pack(conn: sqlite3.Connection, pack_id: str, now: str,
                      only: Sequence[int] | None = None) -> None:
    """A user's SQLiteLogger stopped without finishing (its process died, or its fit
    raised): its running cells are failed, naming what happened; their rows are kept."""
    where = "pack_id = ? AND status = 'running'"
    params: list = [pack_id]
    if only is not None:
        where += f" AND cell_id IN ({', '.join('?' * len(only))})"
        params += list(only)
    conn.execute(
        "UPDATE cells SET status = 'failed', error = 'the SQLiteLogger of ' || "
        "COALESCE(worker, '?') || ' stopped after ' || epochs_done || ' epochs without "
        "finishing (its process died or its fit raised); its rows are kept', "
        f"heartbeat_at = NULL, claim_token = NULL, finished_at = ?, updated_at = ? WHERE {where}",
        [now, now, *params])


def _refresh_summary(conn: sqlite3.Connection, cell_id: int, now: str) -> None:
    """Recompute a cell's summary columns from its epoch rows (one source of truth).

    ``kept_epoch`` follows the study's ``best_metric``: the epoch of highest test
    accuracy (the paper's), of lowest test loss, of highest validation accuracy or of
    lowest validation loss; ties go to the earlier epoch."""
    conn.execute(
        f"""
        UPDATE cells SET
            epochs_done = (SELECT COUNT(*) FROM epochs WHERE cell_id = :id),
            best_test_accuracy = (SELECT MAX(test_accuracy) FROM epochs WHERE cell_id = :id),
            best_epoch = (SELECT epoch FROM epochs WHERE cell_id = :id
                          AND test_accuracy IS NOT NULL
                          ORDER BY test_accuracy DESC, epoch ASC LIMIT 1),
            kept_epoch = CASE (SELECT {BEST_METRIC_SQL} FROM studies s
                               WHERE s.study_id = cells.study_id)
                WHEN 'test_loss' THEN (SELECT epoch FROM epochs WHERE cell_id = :id
                                       AND test_loss IS NOT NULL
                                       ORDER BY test_loss ASC, epoch ASC LIMIT 1)
                WHEN 'val_accuracy' THEN (SELECT epoch FROM epochs WHERE cell_id = :id
                                          AND val_accuracy IS NOT NULL
                                          ORDER BY val_accuracy DESC, epoch ASC LIMIT 1)
                WHEN 'val_loss' THEN (SELECT epoch FROM epochs WHERE cell_id = :id
                                      AND val_loss IS NOT NULL
                                      ORDER BY val_loss ASC, epoch ASC LIMIT 1)
                ELSE (SELECT epoch FROM epochs WHERE cell_id = :id
                      AND test_accuracy IS NOT NULL
                      ORDER BY test_accuracy DESC, epoch ASC LIMIT 1) END,
            final_train_loss = (SELECT train_loss FROM epochs WHERE cell_id = :id
                                ORDER BY epoch DESC LIMIT 1),
            final_train_accuracy = (SELECT train_accuracy FROM epochs WHERE cell_id = :id
                                    ORDER BY epoch DESC LIMIT 1),
            final_test_loss = (SELECT test_loss FROM epochs WHERE cell_id = :id
                               ORDER BY epoch DESC LIMIT 1),
            final_test_accuracy = (SELECT test_accuracy FROM epochs WHERE cell_id = :id
                                   ORDER BY epoch DESC LIMIT 1),
            final_train_eval_loss = (SELECT train_eval_loss FROM epochs WHERE cell_id = :id
                                     ORDER BY epoch DESC LIMIT 1),
            final_train_eval_accuracy = (SELECT train_eval_accuracy FROM epochs
                                         WHERE cell_id = :id ORDER BY epoch DESC LIMIT 1),
            updated_at = :now
        WHERE cell_id = :id
        """,
        {"id": cell_id, "now": now},
    )


def _finite_or_none(value) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _row_dict(conn: sqlite3.Connection, row: tuple, table: str) -> dict:
    cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
    return dict(zip(cols, row))


def _hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def describe_difference(old: Any, new: Any, prefix: str = "") -> str:
    """Name the keys whose values differ between two JSON-like objects."""
    diffs: list[str] = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key, "<missing>"), b.get(key, "<missing>"),
                     f"{path}.{key}" if path else key)
        elif a != b:
            diffs.append(f"{path or 'spec'}: {a!r} in the store, {b!r} now")

    walk(old, new, prefix)
    return "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")



__all__ = ["Claim", "Store", "describe_difference", "worker_is_gone"]
