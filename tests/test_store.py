"""Claims about kerasgen.store, the SQLite results store.

Every test names one claim and fails when it breaks. Concurrency and crash claims run
real subprocesses (tests/helpers/), each with its own ``Store``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kerasgen import store as S
from kerasgen.store import (
    APPLICATION_ID,
    ClaimLost,
    Store,
    StoreError,
    StudyMismatch,
    connect_readonly,
    inspect_store,
    load_epochs,
    load_progress,
    load_results,
    read_new_epochs,
)
from kerasgen.store import schema as SCHEMA

ROOT = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).resolve().parent / "helpers"
HOST = socket.gethostname()
# Worker names on a host that is not this one: never subject to the dead-pid rule.
ELSEWHERE_A = "elsewhere-a.invalid:101"
ELSEWHERE_B = "elsewhere-b.invalid:202"

RESULT_VIEW_COLUMNS = ["study", "model", "dataset", "batch_size", "learning_rate", "seed",
                       "ratio", "status", "best_test_accuracy", "best_epoch",
                       "final_train_accuracy"]


# ---------------------------------------------------------------- helpers

def grid(batch_sizes, learning_rates, models=("m",), datasets=("d",), seeds=(0,)):
    return [{"model": m, "dataset": d, "batch_size": b, "learning_rate": lr, "seed": s}
            for m in models for d in datasets for s in seeds
            for b in batch_sizes for lr in learning_rates]


def spec_of(name="s", **extra):
    spec = {"name": name, "epochs": 3, "models": ["m"], "datasets": ["d"]}
    spec.update(extra)
    return spec


def new_study(path, cells, name="s", **spec_extra):
    store = Store(path)
    study_id = store.create_study(name, spec_of(name, **spec_extra), cells)
    return store, study_id


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sidecars(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir()
                  if p.name != path.name and p.name.startswith(path.name))


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(proc.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


def rows(store: Store, sql: str, *params):
    return store.conn.execute(sql, params).fetchall()


def logs(loss=1.0, acc=0.5, test_loss=1.2, test_acc=0.4, **extra):
    return {"train_loss": loss, "train_accuracy": acc, "test_loss": test_loss,
            "test_accuracy": test_acc, **extra}


# ---------------------------------------------------------------- 1. concurrency

def test_four_processes_claim_every_pack_exactly_once_while_a_readonly_reader_polls_unlocked(
        tmp_path):
    db = tmp_path / "runs.db"
    batch_sizes = list(range(1, 201))          # 200 groups ...
    learning_rates = [0.1, 0.05]                # ... of 2 cells: 200 packs of pack_size 2
    store, study_id = new_study(db, grid(batch_sizes, learning_rates))
    all_ids = {r[0] for r in rows(store, "SELECT cell_id FROM cells")}
    store.close()
    assert len(all_ids) == 400

    go = tmp_path / "go"
    outs = [tmp_path / f"claims{k}.json" for k in range(4)]
    procs = [subprocess.Popen([sys.executable, str(HELPERS / "claimer.py"), str(db),
                               str(study_id), str(out), str(go), "2", "2", "0.01"],
                              env=child_env(), stderr=subprocess.PIPE, text=True)
             for out in outs]

    errors: list[str] = []
    polls = {"results": 0, "epochs": 0}
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def reader():
        marker = 0
        held = connect_readonly(db)  # one long-lived dashboard-like connection too
        try:
            while not stop.is_set():
                try:
                    frame = load_results(db)
                    assert len(frame) == 400
                    polls["results"] += 1
                    new, marker = read_new_epochs(held if polls["epochs"] % 2 else db, marker)
                    seen.extend(zip(new["cell_id"], new["epoch"]))
                    polls["epochs"] += 1
                except sqlite3.OperationalError as exc:  # "database is locked" and kin
                    errors.append(f"OperationalError: {exc}")
                except Exception as exc:  # noqa: BLE001 - any failure of a reader counts
                    errors.append(f"{type(exc).__name__}: {exc}")
            new, marker = read_new_epochs(db, marker)
            seen.extend(zip(new["cell_id"], new["epoch"]))
        finally:
            held.close()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not all(Path(str(out) + ".ready").exists() for out in outs):
        assert time.monotonic() < deadline, "the workers never got ready"
        assert all(proc.poll() is None for proc in procs), "a worker died at start"
        time.sleep(0.01)
    assert polls["results"] >= 1  # the reader is polling before the workers start
    started = time.monotonic()
    go.touch()
    try:
        for proc in procs:
            proc.wait(timeout=90)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        stop.set()
        thread.join(timeout=30)
    elapsed = time.monotonic() - started
    for proc in procs:
        assert proc.returncode == 0, proc.stderr.read()

    assert not errors, errors[:5]
    assert polls["results"] >= 5 and polls["epochs"] >= 5  # it really polled throughout
    assert elapsed < 60, f"writers took {elapsed:.1f}s"
    reports = [json.loads(out.read_text()) for out in outs]
    print("polls", polls, "claims", [len(r["claims"]) for r in reports],
          "slowest op", max(r["max_op_seconds"] for r in reports), "elapsed", elapsed)
    # No single store call of any writer waited anywhere near the busy timeout.
    assert max(r["max_op_seconds"] for r in reports) < 5.0

    claimed = [i for r in reports for c in r["claims"] for i in c["cell_ids"]]
    assert len(claimed) == len(set(claimed)), "a cell was claimed twice"
    assert set(claimed) == all_ids
    packs = [c["pack_id"] for r in reports for c in r["claims"]]
    assert len(packs) == len(set(packs)) == 200
    for r in reports:
        for c in r["claims"]:
            assert not c["resumed"]
            assert len({tuple(g) for g in c["groups"]}) == 1
            assert c["learning_rates"] == sorted(c["learning_rates"])
    # The claims really were concurrent (each pack "trains" 10 ms, so one worker alone
    # would need 2 s; on a loaded 2-core machine a late starter may still get none).
    assert sum(1 for r in reports if r["claims"]) >= 2

    with Store(db) as store:
        assert store.counts(study_id)["done"] == 400
        assert rows(store, "SELECT COUNT(*) FROM epochs")[0][0] == 800
        assert rows(store, "SELECT MIN(epochs_done), MAX(epochs_done) FROM cells")[0] == (2, 2)
    # The incremental reads saw every row exactly once.
    assert len(seen) == 800 and len(set(seen)) == 800


# ---------------------------------------------------------------- 2. crash safety

def _committed_epochs(lines: list[str]) -> set[int]:
    return {int(line.split()[1]) for line in lines if line.startswith("committed ")}


def test_sigkill_mid_transaction_keeps_every_committed_epoch_and_no_uncommitted_row(tmp_path):
    db = tmp_path / "runs.db"
    store, _ = new_study(db, grid([32], [0.1]))
    cell_id = rows(store, "SELECT cell_id FROM cells")[0][0]
    store.close()

    proc = subprocess.Popen([sys.executable, str(HELPERS / "killed_writer.py"), str(db),
                             str(cell_id), "25", "big-transaction"],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "in-transaction":
                break
        assert lines and lines[-1] == "in-transaction", proc.stderr.read()
        # Really mid-transaction: it holds the write lock, and its uncommitted rows have
        # spilled into the -wal.
        other = sqlite3.connect(db, timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
        assert Path(str(db) + "-wal").stat().st_size > 1_000_000
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    committed = _committed_epochs(lines)
    assert committed == set(range(25))

    with Store(db) as store:
        assert rows(store, "PRAGMA integrity_check") == [("ok",)]
        stored = {r[0] for r in rows(store, "SELECT epoch FROM epochs WHERE cell_id = ?",
                                     cell_id)}
        assert stored == committed
        assert rows(store, "SELECT COUNT(*) FROM epochs WHERE epoch >= 100000")[0][0] == 0
        cell = store.cell(cell_id)
        assert cell["status"] != "failed" and cell["error"] is None
        assert cell["epochs_done"] == 25
        # The store is writable again after the crash.
        assert store.record_epoch(cell_id, 25, logs())


def test_sigkill_at_a_random_moment_of_a_commit_loop_loses_no_reported_epoch(tmp_path):
    db = tmp_path / "runs.db"
    store, _ = new_study(db, grid([32], [0.1]))
    cell_id = rows(store, "SELECT cell_id FROM cells")[0][0]
    store.close()

    proc = subprocess.Popen([sys.executable, str(HELPERS / "killed_writer.py"), str(db),
                             str(cell_id), "0", "loop"],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line.strip())
            if len(lines) >= 40:
                break
        assert len(lines) >= 40, proc.stderr.read()
        time.sleep(random.uniform(0.0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        lines += [line.strip() for line in proc.stdout]  # what was still in the pipe
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    committed = _committed_epochs(lines)
    with Store(db) as store:
        assert rows(store, "PRAGMA integrity_check") == [("ok",)]
        stored = {r[0] for r in rows(store, "SELECT epoch FROM epochs WHERE cell_id = ?",
                                     cell_id)}
    assert committed <= stored
    # At most the one epoch committed between its COMMIT and its print is extra.
    assert stored - committed <= {max(committed) + 1}
    assert stored == set(range(len(stored)))


# ---------------------------------------------------------------- 3. refusing files

def _foreign(path: Path, wal: bool) -> None:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer TEXT, total REAL)")
    conn.executemany("INSERT INTO invoices (customer, total) VALUES (?, ?)",
                     [(f"c{i}", i * 1.5) for i in range(500)])
    conn.commit()
    conn.close()


def _real_store_with_rows(path: Path) -> None:
    store, _ = new_study(path, grid([16, 32, 64, 128], [0.1, 0.2, 0.3, 0.4, 0.5]))
    ids = [r[0] for r in rows(store, "SELECT cell_id FROM cells")]
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO epochs (cell_id, epoch, train_loss, metrics_json, recorded_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(i, e, 0.5, json.dumps({"train_pad": e}) + " " * 100, S.utc_now())
             for i in ids for e in range(100)])
    store.close()


def _truncated(path: Path) -> None:
    _real_store_with_rows(path)
    assert not Path(str(path) + "-wal").exists()
    size = path.stat().st_size
    assert size > 200_000
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"batch_size,learning_rate,accuracy\n" + b"16,0.1,0.9\n" * 1000)


def _newer(path: Path) -> None:
    _real_store_with_rows(path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA.SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    assert sidecars(path) == []  # closed cleanly: WAL checkpointed and removed


REFUSED = {
    "foreign_rollback": (lambda p: _foreign(p, wal=False), "another application"),
    "foreign_wal": (lambda p: _foreign(p, wal=True), "another application"),
    "truncated": (_truncated, "truncated"),
    "not_sqlite": (_not_sqlite, "not a SQLite database"),
    "newer": (_newer, "newer kerasgen"),
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_unusable_file_is_refused_with_a_clear_message_and_left_byte_identical(tmp_path,
                                                                                kind):
    make, words = REFUSED[kind]
    path = tmp_path / f"{kind}.db"
    make(path)
    assert sidecars(path) == []
    before = sha256(path)
    for attempt in (lambda: Store(path), lambda: load_results(path),
                    lambda: load_epochs(path), lambda: load_progress(path),
                    lambda: connect_readonly(path), lambda: inspect_store(path)):
        with pytest.raises(StoreError, match=words) as info:
            attempt()
        assert str(path) in str(info.value)
        assert sha256(path) == before
        # Inspection created no -wal/-shm/-journal beside it.
        assert sidecars(path) == [], kind


def test_store_of_another_application_is_refused_even_while_that_application_has_it_open(
        tmp_path):
    path = tmp_path / "theirs.db"
    _foreign(path, wal=True)
    theirs = sqlite3.connect(path)
    theirs.execute("INSERT INTO invoices (customer, total) VALUES ('live', 1.0)")
    theirs.commit()  # committed into their -wal, not yet checkpointed
    try:
        with pytest.raises(StoreError, match="another application"):
            Store(path)
        with pytest.raises(StoreError, match="another application"):
            load_results(path)
        assert theirs.execute("SELECT COUNT(*) FROM invoices").fetchone()[0] == 501
    finally:
        theirs.close()


def test_an_empty_file_becomes_a_new_store_but_a_missing_one_is_not_read(tmp_path):
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match="empty"):
        load_results(empty)
    assert empty.stat().st_size == 0
    with Store(empty) as store:
        assert store.conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert len(load_results(empty)) == 0
    with pytest.raises(StoreError, match="does not exist"):
        Store(tmp_path / "nothing.db", create=False)
    assert not (tmp_path / "nothing.db").exists()


# ---------------------------------------------------------------- 4. studies

def test_creating_the_same_study_twice_returns_its_id_and_adds_no_cell(tmp_path):
    store, study_id = new_study(tmp_path / "r.db", grid([16, 32], [0.1, 0.2]))
    # The same spec with its keys in another order is the same spec.
    spec = dict(reversed(list(spec_of("s").items())))
    again = store.create_study("s", spec, grid([16, 32], [0.1, 0.2]))
    assert again == study_id
    assert rows(store, "SELECT COUNT(*) FROM cells")[0][0] == 4
    assert rows(store, "SELECT COUNT(*) FROM studies")[0][0] == 1
    with Store(tmp_path / "r.db") as other:  # and from another handle
        assert other.create_study("s", spec_of("s"), grid([16, 32], [0.1, 0.2])) == study_id
    assert rows(store, "SELECT COUNT(*) FROM cells")[0][0] == 4


def test_a_different_spec_under_the_same_name_raises_study_mismatch_naming_the_key(tmp_path):
    training = {"momentum": 0.0, "dtype": "float32"}
    store, _ = new_study(tmp_path / "r.db", grid([16], [0.1]), epochs=3, training=training)
    with pytest.raises(StudyMismatch, match=r"epochs: 3 in the store, 200 now") as info:
        store.create_study("s", spec_of("s", epochs=200, training=training),
                           grid([16], [0.1]))
    assert "models" not in str(info.value) and "training" not in str(info.value)
    with pytest.raises(StudyMismatch, match=r"training\.momentum: 0\.0 in the store, 0\.9 now"
                       ) as info:
        store.create_study("s", spec_of("s", epochs=3, training={**training, "momentum": 0.9}),
                           grid([16], [0.1]))
    assert "dtype" not in str(info.value) and "epochs" not in str(info.value)
    assert rows(store, "SELECT COUNT(*) FROM studies")[0][0] == 1
    # Another name is another study.
    assert store.create_study("t", spec_of("t", epochs=200), grid([16], [0.1])) != 1


# ---------------------------------------------------------------- 5. claims

def test_a_pack_is_up_to_pack_size_cells_of_one_group_and_batch_size_in_learning_rate_order(
        tmp_path):
    cells = grid([16, 32], [0.3, 0.1, 0.2], models=("a", "b"), seeds=(0, 1))
    random.Random(0).shuffle(cells)
    store, study_id = new_study(tmp_path / "r.db", cells)
    claims = []
    while (claim := store.claim_pack(study_id, ELSEWHERE_A, pack_size=2)) is not None:
        claims.append(claim)
    ids = [i for c in claims for i in c.cell_ids]
    assert len(ids) == len(set(ids)) == len(cells)
    for claim in claims:
        keys = {(c["model"], c["dataset"], c["seed"], c["batch_size"]) for c in claim.cells}
        assert len(keys) == 1
        lrs = [c["learning_rate"] for c in claim.cells]
        assert lrs == sorted(lrs) and 1 <= len(lrs) <= 2
        assert not claim.resumed
    # Each group of 3 learning rates is split 2 + 1, the two smallest first.
    assert sorted(len(c.cells) for c in claims) == [1] * 8 + [2] * 8
    assert [c["learning_rate"] for c in claims[0].cells] == [0.1, 0.2]
    assert store.counts(study_id)["running"] == len(cells)


def test_a_stale_claim_is_reclaimed_with_exactly_its_cells_and_resumed(tmp_path):
    store, study_id = new_study(tmp_path / "r.db", grid([16, 32], [0.1, 0.2, 0.3]))
    old = store.claim_pack(study_id, ELSEWHERE_A, pack_size=3, stale_seconds=0.2)
    time.sleep(0.3)
    new = store.claim_pack(study_id, ELSEWHERE_B, pack_size=3, stale_seconds=0.2)
    assert new.pack_id == old.pack_id
    assert new.cell_ids == old.cell_ids
    assert new.resumed and not old.resumed
    assert {c["worker"] for c in new.cells} == {ELSEWHERE_B}
    assert store.counts(study_id) == {"pending": 3, "running": 3, "done": 0,
                                      "diverged": 0, "failed": 0}


def test_a_claim_with_a_manipulated_old_heartbeat_is_reclaimed(tmp_path):
    store, study_id = new_study(tmp_path / "r.db", grid([16], [0.1, 0.2]))
    old = store.claim_pack(study_id, ELSEWHERE_A, pack_size=2)
    store.conn.execute("UPDATE cells SET heartbeat_at = '2001-01-01T00:00:00.000Z'")
    new = store.claim_pack(study_id, ELSEWHERE_B, pack_size=2)
    assert (new.pack_id, new.cell_ids, new.resumed) == (old.pack_id, old.cell_ids, True)


def test_a_live_claim_whose_heartbeat_is_fresh_is_not_reclaimed(tmp_path):
    store, study_id = new_study(tmp_path / "r.db", grid([16], [0.1, 0.2]))
    old = store.claim_pack(study_id, ELSEWHERE_A, pack_size=2, stale_seconds=0.5)
    assert store.claim_pack(study_id, ELSEWHERE_B, pack_size=2) is None  # default limit
    for _ in range(3):
        time.sleep(0.3)
        store.heartbeat(old)  # beats more often than the limit
        assert store.claim_pack(study_id, ELSEWHERE_B, 2, stale_seconds=0.5) is None
    assert {store.cell(i)["worker"] for i in old.cell_ids} == {ELSEWHERE_A}


def test_old_owner_after_takeover_gets_claim_lost_and_writes_nothing(tmp_path):
    store, study_id = new_study(tmp_path / "r.db", grid([16], [0.1, 0.2]))
    old = store.claim_pack(study_id, ELSEWHERE_A, pack_size=2)
    assert store.record_epoch(old.cell_ids[0], 0, logs(), claim=old)
    store.conn.execute("UPDATE cells SET heartbeat_at = '2001-01-01T00:00:00.000Z'")
    new = store.claim_pack(study_id, ELSEWHERE_B, pack_size=2)
    assert new.pack_id == old.pack_id

    with pytest.raises(ClaimLost, match=ELSEWHERE_B):
        store.heartbeat(old)
    before = rows(store, "SELECT * FROM epochs ORDER BY rowid")
    cells_before = rows(store, "SELECT * FROM cells ORDER BY cell_id")
    with pytest.raises(ClaimLost):
        store.record_epoch(old.cell_ids[0], 1, logs(), claim=old)
    with pytest.raises(ClaimLost):
        store.record_epoch(old.cell_ids[1], 0, logs(), claim=old)
    with pytest.raises(ClaimLost):
        store.finish_cell(old.cell_ids[0], "done", claim=old)
    assert rows(store, "SELECT * FROM epochs ORDER BY rowid") == before
    assert rows(store, "SELECT * FROM cells ORDER BY cell_id") == cells_before
    # The new owner writes fine.
    store.heartbeat(new)
    assert store.record_epoch(new.cell_ids[0], 1, logs(), claim=new)
    assert not store.conn.in_transaction


def test_a_pack_of_a_dead_local_worker_is_reclaimed_at_once_despite_a_large_stale_limit(
        tmp_path):
    store, study_id = new_study(tmp_path / "r.db", grid([16, 32], [0.1, 0.2]))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = store.claim_pack(study_id, f"{HOST}:{sleeper.pid}", 2, stale_seconds=1e9)
        dead = store.claim_pack(study_id, f"{HOST}:{dead_pid()}", 2, stale_seconds=1e9)
        assert live.pack_id != dead.pack_id
        again = store.claim_pack(study_id, ELSEWHERE_B, 2, stale_seconds=1e9)
        assert (again.pack_id, again.cell_ids, again.resumed) == (dead.pack_id,
                                                                   dead.cell_ids, True)
        # The live local worker's pack is not taken...
        assert store.claim_pack(study_id, ELSEWHERE_A, 2, stale_seconds=1e9) is None
        sleeper.kill()
        sleeper.wait()
        # ... until that worker dies.
        taken = store.claim_pack(study_id, ELSEWHERE_A, 2, stale_seconds=1e9)
        assert (taken.pack_id, taken.cell_ids, taken.resumed) == (live.pack_id,
                                                                   live.cell_ids, True)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_release_puts_the_pack_back_together_and_fails_it_after_max_attempts(tmp_path):
    store, study_id = new_study(tmp_path / "r.db", grid([16, 32], [0.1, 0.2, 0.3]))
    first = claim = store.claim_pack(study_id, ELSEWHERE_A, pack_size=2)
    for attempt in (1, 2):
        assert store.release(claim, f"boom {attempt}", max_attempts=3) == "pending"
        cells = [store.cell(i) for i in first.cell_ids]
        assert {c["status"] for c in cells} == {"pending"}
        assert {c["pack_id"] for c in cells} == {first.pack_id}
        assert {c["error"] for c in cells} == {f"boom {attempt}"}
        assert {c["worker"] for c in cells} == {None}
        claim = store.claim_pack(study_id, ELSEWHERE_B, pack_size=3)  # larger pack_size
        assert (claim.pack_id, claim.cell_ids, claim.resumed) == (first.pack_id,
                                                                   first.cell_ids, True)
    assert store.release(claim, "boom 3\nTraceback ...", max_attempts=3) == "failed"
    cells = [store.cell(i) for i in first.cell_ids]
    assert {c["status"] for c in cells} == {"failed"}
    assert {c["error"] for c in cells} == {"boom 3\nTraceback ..."}
    assert all(c["finished_at"] for c in cells) and {c["failures"] for c in cells} == {3}
    # The failed pack is not handed out again; the other cells are.
    following = store.claim_pack(study_id, ELSEWHERE_B, pack_size=3)
    assert following.pack_id != first.pack_id
    assert not set(following.cell_ids) & set(first.cell_ids)


def test_release_without_counting_a_failure_never_fails_the_pack(tmp_path):
    store, study_id = new_study(tmp_path / "r.db", grid([16], [0.1, 0.2]))
    claim = store.claim_pack(study_id, ELSEWHERE_A, pack_size=2)
    for _ in range(5):
        assert store.release(claim, "interrupted", max_attempts=1,
                             count_failure=False) == "pending"
        claim = store.claim_pack(study_id, ELSEWHERE_A, pack_size=2)
        assert claim.resumed
    assert {store.cell(i)["failures"] for i in claim.cell_ids} == {0}
    # Even a pack that has already failed as often as allowed is not failed by an
    # interruption.
    for _ in range(2):
        assert store.release(claim, "real error", max_attempts=3) == "pending"
        claim = store.claim_pack(study_id, ELSEWHERE_A, pack_size=2)
    assert store.release(claim, "interrupted", max_attempts=2,
                         count_failure=False) == "pending"
    claim = store.claim_pack(study_id, ELSEWHERE_A, pack_size=2)
    assert {store.cell(i)["failures"] for i in claim.cell_ids} == {2}
    assert store.release(claim, "real error", max_attempts=3) == "failed"


# ---------------------------------------------------------------- 6. epochs and outcomes

def test_divergence_is_a_status_with_its_epoch(tmp_path):
    store, study_id = new_study(tmp_path / "r.db", grid([16], [0.1, 0.2]))
    a, b = (r[0] for r in rows(store, "SELECT cell_id FROM cells ORDER BY cell_id"))
    for e in range(3):
        store.record_epoch(a, e, logs())
    store.finish_cell(a, "diverged", diverged_epoch=3)
    cell = store.cell(a)
    assert (cell["status"], cell["diverged_epoch"], cell["epochs_done"]) == ("diverged", 3, 3)
    frame = load_results(tmp_path / "r.db").set_index("cell_id")
    assert frame.loc[a, "status"] == "diverged" and frame.loc[a, "diverged_epoch"] == 3
    assert math.isnan(frame.loc[b, "diverged_epoch"])
    with pytest.raises(ValueError, match="diverged"):
        store.finish_cell(b, "diverged")  # without its epoch
    with pytest.raises(ValueError):
        store.finish_cell(b, "nan")


def test_non_finite_values_are_stored_as_null_never_as_numbers(tmp_path):
    store, _ = new_study(tmp_path / "r.db", grid([16], [0.1]))
    (cell_id,), = rows(store, "SELECT cell_id FROM cells")
    assert store.record_epoch(cell_id, 0, {
        "train_loss": float("nan"), "train_accuracy": float("inf"),
        "test_loss": float("-inf"), "test_accuracy": 0.25,
        "train_mae": float("nan"), "test_mae": 0.5, "train_other": float("inf")},
        wall_seconds=float("nan"))
    types = rows(store, "SELECT typeof(train_loss), typeof(train_accuracy), "
                        "typeof(test_loss), typeof(test_accuracy), typeof(wall_seconds) "
                        "FROM epochs")
    assert types == [("null", "null", "null", "real", "null")]
    assert json.loads(rows(store, "SELECT metrics_json FROM epochs")[0][0]) == {"test_mae": 0.5}
    cell = store.cell(cell_id)
    assert cell["final_train_loss"] is None and cell["final_train_accuracy"] is None


def test_summaries_follow_the_epoch_rows_best_is_max_test_accuracy_earliest_on_ties(tmp_path):
    store, _ = new_study(tmp_path / "r.db", grid([16], [0.1]))
    (cell_id,), = rows(store, "SELECT cell_id FROM cells")
    test_acc = [0.30, 0.70, None, 0.70, 0.65]
    for e in (0, 1, 3, 2, 4):  # not even in order
        store.record_epoch(cell_id, e, logs(loss=1.0 / (e + 1), acc=0.1 * e,
                                            test_loss=2.0 - 0.1 * e, test_acc=test_acc[e]))
        got = store.cell(cell_id)
        recorded = [x for x in range(5) if x in (0, 1, 3, 2, 4)[:(0, 1, 3, 2, 4).index(e) + 1]]
        accs = [(test_acc[x], x) for x in recorded if test_acc[x] is not None]
        best = max(a for a, _ in accs)
        assert got["best_test_accuracy"] == best
        assert got["best_epoch"] == min(x for a, x in accs if a == best)
        last = max(recorded)
        assert got["final_train_loss"] == 1.0 / (last + 1)
        assert got["final_train_accuracy"] == 0.1 * last
        assert got["final_test_loss"] == 2.0 - 0.1 * last
        assert got["final_test_accuracy"] == test_acc[last]
        assert got["epochs_done"] == len(recorded)
    assert (got["best_test_accuracy"], got["best_epoch"]) == (0.70, 1)
    store.finish_cell(cell_id, "done")
    assert store.cell(cell_id)["best_epoch"] == 1  # finishing recomputes the same


def test_recording_an_epoch_twice_writes_it_once_and_returns_false(tmp_path):
    store, _ = new_study(tmp_path / "r.db", grid([16], [0.1]))
    (cell_id,), = rows(store, "SELECT cell_id FROM cells")
    assert store.record_epoch(cell_id, 0, logs(loss=1.0)) is True
    assert store.record_epoch(cell_id, 0, logs(loss=9.0)) is False
    assert rows(store, "SELECT epoch, train_loss FROM epochs") == [(0, 1.0)]
    assert store.cell(cell_id)["epochs_done"] == 1
    assert store.epochs_of(cell_id)[0]["train_loss"] == 1.0


# ---------------------------------------------------------------- 7. read API

def test_read_api_imports_neither_tensorflow_nor_keras(tmp_path):
    db = tmp_path / "r.db"
    store, study_id = new_study(db, grid([16], [0.1]))
    store.record_epoch(1, 0, logs())
    store.close()
    code = (
        "import sys, kerasgen, kerasgen.store, kerasgen.progress\n"
        f"db = {str(db)!r}\n"
        "kerasgen.load_results(db); kerasgen.store.read_new_epochs(db, 0)\n"
        "kerasgen.store.load_epochs(db); kerasgen.store.load_progress(db)\n"
        "kerasgen.progress.study_progress(db)\n"
        "s = kerasgen.store.Store(db); s.claim_pack(1, 'x:1', 1); s.close()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'tf_keras', 'jax', 'torch'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_load_results_has_the_grid_ratio_status_and_summary_columns(tmp_path):
    db = tmp_path / "r.db"
    store, _ = new_study(db, grid([16, 32], [0.1, 0.4]))
    for cell_id in (1, 2):
        for e, acc in enumerate([0.5, 0.8, 0.6]):
            store.record_epoch(cell_id, e, logs(acc=acc / 2, test_acc=acc))
    store.finish_cell(1, "done")
    store.close()
    frame = load_results(db)
    assert set(RESULT_VIEW_COLUMNS) <= set(frame.columns)
    assert len(frame) == 4
    for row in frame.itertuples():
        assert row.ratio == pytest.approx(row.batch_size / row.learning_rate, rel=1e-12)
    one = frame.set_index("cell_id").loc[1]
    assert (one.study, one.model, one.dataset, one.seed) == ("s", "m", "d", 0)
    assert (one.status, one.best_test_accuracy, one.best_epoch) == ("done", 0.8, 1.0)
    assert one.final_train_accuracy == 0.3
    untouched = frame.set_index("cell_id").loc[3]
    assert untouched.status == "pending" and math.isnan(untouched.best_test_accuracy)
    with pytest.raises(StoreError, match="no study named 'nope'"):  # never 0 rows silently
        load_results(db, study="nope")


def test_read_new_epochs_returns_only_rows_after_the_marker_and_the_new_marker(tmp_path):
    db = tmp_path / "r.db"
    store, _ = new_study(db, grid([16], [0.1, 0.2]))
    for e in range(3):
        store.record_epoch(1, e, logs())
    frame, marker = read_new_epochs(db, 0)
    assert list(zip(frame["cell_id"], frame["epoch"])) == [(1, 0), (1, 1), (1, 2)]
    again, same = read_new_epochs(db, marker)
    assert len(again) == 0 and same == marker
    store.record_epoch(2, 0, logs())
    store.record_epoch(1, 3, logs())
    store.record_epoch(1, 3, logs())  # a replay adds nothing
    new, newer = read_new_epochs(db, marker)
    assert list(zip(new["cell_id"], new["epoch"])) == [(2, 0), (1, 3)]
    assert newer > marker
    assert read_new_epochs(db, newer)[1] == newer
    assert {"model", "batch_size", "learning_rate", "train_loss", "test_accuracy"} <= set(
        new.columns)


def test_readers_use_read_only_connections_that_cannot_write(tmp_path):
    db = tmp_path / "r.db"
    store, _ = new_study(db, grid([16], [0.1]))
    conn = connect_readonly(db)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("INSERT INTO epochs (cell_id, epoch, recorded_at) VALUES (1, 0, 'x')")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("UPDATE cells SET status = 'done'")
        assert conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 1
    finally:
        conn.close()
    assert store.cell(1)["status"] == "pending"
    with pytest.raises(StoreError, match="does not exist"):
        load_results(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()


def test_a_reader_never_blocks_a_writer_holding_its_snapshot(tmp_path):
    db = tmp_path / "r.db"
    store, _ = new_study(db, grid([16], [0.1]))
    conn = connect_readonly(db)
    try:
        conn.execute("BEGIN")
        assert conn.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] == 0
        started = time.perf_counter()
        for e in range(20):
            store.record_epoch(1, e, logs())
        assert time.perf_counter() - started < 2.0
        # The reader's snapshot is stable; a new read sees everything.
        assert conn.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] == 0
        conn.execute("COMMIT")
        assert conn.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] == 20
    finally:
        conn.close()


# ---------------------------------------------------------------- 8. views

def test_best_view_has_the_documented_columns_and_fractional_accuracies(tmp_path):
    db = tmp_path / "r.db"
    store, _ = new_study(db, grid([16, 48], [0.1, 0.3]))
    rng = random.Random(1)
    truth = {}
    for cell_id in range(1, 5):
        accs = [rng.random() for _ in range(4)]
        truth[cell_id] = max(accs)
        for e, a in enumerate(accs):
            store.record_epoch(cell_id, e, logs(acc=rng.random(), test_acc=a))
    store.close()
    conn = connect_readonly(db)
    try:
        cur = conn.execute("SELECT * FROM best")
        columns = [d[0] for d in cur.description]
        found = [dict(zip(columns, r)) for r in cur.fetchall()]
    finally:
        conn.close()
    assert set(RESULT_VIEW_COLUMNS) <= set(columns)
    assert [c for c in columns if c in RESULT_VIEW_COLUMNS] == RESULT_VIEW_COLUMNS
    assert len(found) == 4
    for row in found:
        assert 0.0 <= row["best_test_accuracy"] <= 1.0
        assert 0.0 <= row["final_train_accuracy"] <= 1.0
        assert row["best_test_accuracy"] == truth[row["cell_id"]]
        assert row["ratio"] == pytest.approx(row["batch_size"] / row["learning_rate"])
        assert isinstance(row["ratio"], float)


def test_progress_view_counts_cells_by_status_per_study_model_and_dataset(tmp_path):
    db = tmp_path / "r.db"
    store = Store(db)
    s1 = store.create_study("one", spec_of("one"),
                            grid([16, 32], [0.1, 0.2], models=("a", "b"), datasets=("x",)))
    s2 = store.create_study("two", spec_of("two"), grid([16], [0.1, 0.2, 0.3]))
    cells = {r[0]: r[1:] for r in rows(store, "SELECT cell_id, study_id, model FROM cells")}
    statuses = ["done", "diverged", "failed", "running", "pending"]
    expected: dict = {}
    for k, (cell_id, (study_id, model)) in enumerate(sorted(cells.items())):
        status = statuses[k % len(statuses)]
        if status == "done":
            store.record_epoch(cell_id, 0, logs())
            store.finish_cell(cell_id, "done")
        elif status == "diverged":
            store.finish_cell(cell_id, "diverged", diverged_epoch=0)
        elif status == "failed":
            store.mark_failed([cell_id], "x")
        elif status == "running":
            store.mark_running([cell_id], "w:1")
        name = "one" if study_id == s1 else "two"
        dataset = "x" if study_id == s1 else "d"
        counter = expected.setdefault((name, model, dataset), dict.fromkeys(statuses, 0))
        counter[status] += 1
    store.close()
    frame = load_progress(db)
    assert len(frame) == len(expected) == 3
    for row in frame.to_dict("records"):
        want = expected[(row["study"], row["model"], row["dataset"])]
        assert {s: row[s] for s in statuses} == want
        assert row["cells"] == sum(want.values())
        assert row["epochs_done"] == want["done"]
    assert s2 != s1


# ---------------------------------------------------------------- 9. schema

def test_a_new_store_is_versioned_marked_wal_with_foreign_keys_and_a_migration_row_each(
        tmp_path):
    db = tmp_path / "new.db"
    store = Store(db)
    conn = store.conn
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA.SCHEMA_VERSION >= 1
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    versions = [r[0] for r in conn.execute("SELECT version FROM migrations ORDER BY version")]
    assert versions == list(range(1, SCHEMA.SCHEMA_VERSION + 1))
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {"studies", "cells", "epochs", "best", "progress", "migrations"} <= names
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        conn.execute("INSERT INTO epochs (cell_id, epoch, recorded_at) VALUES (999, 0, 'x')")
    store.close()
    # Reopening migrates nothing twice; readers see the same versions.
    Store(db).close()
    assert inspect_store(db)["user_version"] == SCHEMA.SCHEMA_VERSION
    ro = connect_readonly(db)
    try:
        assert ro.execute("SELECT COUNT(*) FROM migrations").fetchone()[0] == SCHEMA.SCHEMA_VERSION
        assert ro.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        ro.close()


def test_an_older_store_is_migrated_atomically_to_the_current_version(tmp_path, monkeypatch):
    db = tmp_path / "old.db"
    Store(db).close()

    def _add_notes(conn):
        conn.execute("CREATE TABLE notes (cell_id INTEGER REFERENCES cells(cell_id), "
                     "text TEXT)")

    def _broken(conn):
        conn.execute("CREATE TABLE half (x)")
        raise RuntimeError("migration failed midway")

    monkeypatch.setattr(SCHEMA, "MIGRATIONS", list(SCHEMA.MIGRATIONS))
    monkeypatch.setattr(SCHEMA, "SCHEMA_VERSION", SCHEMA.SCHEMA_VERSION)
    old_version = SCHEMA.SCHEMA_VERSION
    SCHEMA.register_migration("notes", _add_notes)
    SCHEMA.register_migration("broken", _broken)
    with pytest.raises(RuntimeError, match="midway"):
        Store(db)
    # Nothing of the failed upgrade is left: same version, no table of either step.
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == old_version
    assert {"notes", "half"}.isdisjoint(
        r[0] for r in conn.execute("SELECT name FROM sqlite_master"))
    conn.close()
    SCHEMA.MIGRATIONS.pop()
    SCHEMA.SCHEMA_VERSION = len(SCHEMA.MIGRATIONS)
    with Store(db) as store:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == old_version + 1
        assert rows(store, "SELECT version, name FROM migrations ORDER BY version")[-1] == (
            old_version + 1, "notes")
        assert rows(store, "SELECT COUNT(*) FROM notes")[0][0] == 0


def test_processes_opening_the_same_new_stores_at_once_all_succeed(tmp_path):
    """Three processes open, create a study in, and close the same 100 fresh files in
    step: whoever comes first creates the store while the others inspect it, switch it
    to WAL and migrate it. None may see a half-created store as foreign or truncated, nor
    fail to switch the journal ("database is locked")."""
    count, procs = 100, []
    start = time.time() + 2.0
    for k in range(3):
        procs.append(subprocess.Popen(
            [sys.executable, str(HELPERS / "opener.py"), str(tmp_path), str(count),
             str(start), str(tmp_path / f"errors{k}.json")],
            env=child_env(), stderr=subprocess.PIPE, text=True))
    for proc in procs:
        proc.wait(timeout=90)
        assert proc.returncode == 0, proc.stderr.read()
    errors = [e for k in range(3) for e in json.loads((tmp_path / f"errors{k}.json").read_text())]
    assert errors == []
    for i in (0, count // 2, count - 1):
        with Store(tmp_path / f"{i}.db") as store:
            assert rows(store, "SELECT COUNT(*) FROM migrations")[0][0] == SCHEMA.SCHEMA_VERSION
            assert rows(store, "SELECT COUNT(*) FROM cells")[0][0] == 1


def test_a_store_of_every_earlier_schema_version_upgrades_to_the_current_one(tmp_path,
                                                                             monkeypatch):
    full = list(SCHEMA.MIGRATIONS)
    for version in range(1, len(full)):
        db = tmp_path / f"v{version}.db"
        monkeypatch.setattr(SCHEMA, "MIGRATIONS", full[:version])
        monkeypatch.setattr(SCHEMA, "SCHEMA_VERSION", version)
        with Store(db) as old:
            # Written as that version's code wrote it: the columns each table has had
            # since version 1.
            with old.transaction() as conn:
                conn.execute("INSERT INTO studies (name, spec_json, spec_hash, created_at) "
                             "VALUES ('s', '{}', 'x', '2024-01-01T00:00:00Z')")
                if version >= 5:  # that version's code gave every study its uid
                    conn.execute("UPDATE studies SET uid = 'u'")
                conn.execute("INSERT INTO cells (study_id, model, dataset, batch_size, "
                             "learning_rate, seed) VALUES (1, 'm', 'd', 16, 0.1, 0)")
                conn.execute("INSERT INTO epochs (cell_id, epoch, train_loss, test_accuracy, "
                             "recorded_at) VALUES (1, 0, 1.0, 0.5, '2024-01-01T00:00:00Z')")
        monkeypatch.setattr(SCHEMA, "MIGRATIONS", full)
        monkeypatch.setattr(SCHEMA, "SCHEMA_VERSION", len(full))
        assert inspect_store(db)["user_version"] == version
        with Store(db) as store:
            assert rows(store, "PRAGMA user_version")[0][0] == len(full)
            assert [r[0] for r in rows(store, "SELECT version FROM migrations ORDER BY 1")
                    ] == list(range(1, len(full) + 1))
            assert store.epochs_of(1)[0]["train_loss"] == 1.0  # the data came along
            assert rows(store, "PRAGMA integrity_check") == [("ok",)]
            # every study got a uid (the key of its files beside the store)
            assert rows(store, "SELECT COUNT(*) FROM studies WHERE uid IS NULL")[0][0] == 0


def test_progress_rate_query_probes_recent_epochs_per_cell_even_with_planner_statistics(
        tmp_path):
    """On a paper-size store, the recent-epochs query of kerasgen.progress must not read
    every epoch row of every cell, with or without ANALYZE statistics (PRAGMA optimize
    writes them): it was 170 ms instead of 4-6 ms on 320,000 rows."""
    db = tmp_path / "r.db"
    store, _ = new_study(db, grid(range(1, 41), [0.1 * k for k in range(1, 41)]))
    ids = [r[0] for r in rows(store, "SELECT cell_id FROM cells")]
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO epochs (cell_id, epoch, recorded_at) VALUES (?, ?, ?)",
            [(i, e, f"2024-01-01T00:{e:02d}:00.000Z") for i in ids for e in range(20)])
    sql = ("EXPLAIN QUERY PLAN SELECT s.name, c.model, c.dataset, COUNT(*), "
           "MIN(e.recorded_at) FROM epochs e JOIN cells c USING (cell_id) JOIN studies s "
           "USING (study_id) WHERE e.recorded_at > ? GROUP BY s.name, c.model, c.dataset")
    for statistics in (False, True):
        if statistics:
            store.conn.execute("ANALYZE")
        detail = [r[-1] for r in rows(store, sql, "2024-01-01T00:19:00.000Z")]
        about_epochs = [d for d in detail if d.split()[1] == "e"]
        assert about_epochs and all("recorded_at" in d for d in about_epochs), detail
    # kerasgen.progress really runs that query (same text, so the plan above is its plan).
    source = (ROOT / "kerasgen" / "store" / "queries.py").read_text()
    assert "WHERE e.recorded_at > ? GROUP BY s.name, c.model, c.dataset" in source


def test_cells_running_outside_any_pack_are_never_handed_out_as_an_empty_stale_claim(
        tmp_path):
    """A user's own fit (SQLiteLogger without a claim) marks its cell running with no
    pack; once its heartbeat is old, claim_pack must not 'reclaim' that as a pack of no
    cells, and must go on handing out the pending ones."""
    store, study_id = new_study(tmp_path / "r.db", grid([16, 32], [0.1]))
    store.mark_running([1])
    store.conn.execute("UPDATE cells SET heartbeat_at = '2001-01-01T00:00:00.000Z'")
    claim = store.claim_pack(study_id, ELSEWHERE_A, pack_size=4, stale_seconds=1)
    assert claim is not None and claim.cell_ids == [2] and not claim.resumed
    assert store.claim_pack(study_id, ELSEWHERE_B, pack_size=4, stale_seconds=1) is None


def test_a_second_connection_opened_and_closed_in_the_same_process_leaves_the_wal_alone(
        tmp_path):
    # SQLite's locks are POSIX locks owned by the process: closing any descriptor on the
    # file drops them all. If opening a second Store (a heartbeat thread, the progress
    # display) read the file behind SQLite's back, the writer's shared lock would vanish;
    # the second connection's close would then believe it was the last one, checkpoint
    # and delete the -wal and -shm under the writer's feet ("disk I/O error" after).
    from kerasgen.store import Store, connect_readonly, load_results

    db = tmp_path / "locks.db"
    writer = Store(db)
    study = writer.create_study("s", {"a": 1}, [dict(model="m", dataset="d", batch_size=b,
                                                     learning_rate=0.1, seed=0)
                                                for b in (1, 2)], {})
    claim = writer.claim_pack(study, "w", 1)
    writer.record_epoch(claim.cell_ids[0], 0, {"train_loss": 1.0}, claim=claim)
    for _ in range(3):
        Store(db).close()
        connect_readonly(db).close()
    # Another process (sqlite3 by hand, a dashboard) opens and closes the store: it must
    # see that this process still has it open, and leave the -wal and -shm alone.
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", "import sqlite3; c = sqlite3.connect("
                    f"{str(db)!r}); c.execute('SELECT COUNT(*) FROM epochs').fetchone(); "
                    "c.close()"], check=True, timeout=60)
    assert (tmp_path / "locks.db-shm").exists() and (tmp_path / "locks.db-wal").exists()
    writer.record_epoch(claim.cell_ids[0], 1, {"train_loss": 0.5}, claim=claim)
    assert load_results(db)["epochs_done"].tolist() == [2, 0]
    writer.close()


def test_a_closed_writer_leaves_every_commit_in_the_main_file_while_a_reader_watches(tmp_path):
    # A dashboard (read-only) still attached when the runner finishes: SQLite does not
    # checkpoint on the writer's close then, and a read-only connection never does.
    # The results must still be in the `.db` file itself, which is what users copy.
    db = tmp_path / "runs.db"
    store, study_id = new_study(db, grid([16], [0.1]))
    reader = connect_readonly(db)
    assert reader.execute("SELECT COUNT(*) FROM cells").fetchone()[0] == 1
    claim = store.claim_pack(study_id, ELSEWHERE_A, 1)
    cell_id = claim.cell_ids[0]
    for epoch in range(3):
        store.record_epoch(cell_id, epoch, {"train_loss": 0.5, "test_accuracy": 0.25 * epoch},
                           claim=claim)
    store.finish_cell(cell_id, "done", claim=claim)
    store.close()
    reader.close()
    copy = tmp_path / "copy.db"
    copy.write_bytes(db.read_bytes())  # the main file alone, without -wal / -shm
    result = load_results(copy)
    assert result["status"].tolist() == ["done"]
    assert result["best_test_accuracy"].tolist() == [0.5]
    assert len(load_epochs(copy)) == 3


# ---------------------------------------------------------------- the kept epoch and clean metrics

def _three_epochs(store: Store, cell_id: int) -> None:
    # test accuracy peaks at epoch 2, test loss bottoms out at epoch 1; on the validation
    # images accuracy peaks at epoch 1 and loss bottoms out at epoch 0
    for epoch, (test_loss, test_acc, clean_loss, clean_acc, val_loss, val_acc) in enumerate(
            [(1.0, 0.50, 0.9, 0.6, 0.60, 0.70), (0.7, 0.70, 0.5, 0.8, 0.65, 0.80),
             (0.8, 0.75, 0.3, 0.9, 0.70, 0.75)]):
        store.record_epoch(cell_id, epoch, logs(test_loss=test_loss, test_acc=test_acc,
                                                train_eval_loss=clean_loss,
                                                train_eval_accuracy=clean_acc,
                                                val_loss=val_loss, val_accuracy=val_acc))


@pytest.mark.parametrize("best_metric, kept, test_acc", [
    ("test_accuracy", 2, 0.75),   # the paper's: the epoch of highest test accuracy
    ("test_loss", 1, 0.70),       # the epoch of lowest test loss
    ("val_accuracy", 1, 0.70),    # chosen without the test set: highest validation acc.
    ("val_loss", 0, 0.50),        # ... lowest validation loss
])
def test_the_kept_epoch_follows_the_studys_best_metric_and_every_number_is_read_there(
        tmp_path, best_metric, kept, test_acc):
    store, _ = new_study(tmp_path / "k.db", grid([16], [0.1]),
                         training={"best_metric": best_metric})
    _three_epochs(store, 1)
    store.finish_cell(1, "done")
    store.close()
    row = load_results(tmp_path / "k.db").iloc[0]
    clean_acc, clean_loss, test_loss = {2: (0.9, 0.3, 0.8), 1: (0.8, 0.5, 0.7),
                                        0: (0.6, 0.9, 1.0)}[kept]
    assert row["best_metric"] == best_metric and row["kept_epoch"] == kept
    assert row["val_accuracy"] == [0.70, 0.80, 0.75][kept]
    assert row["test_accuracy"] == test_acc and row["test_loss"] == test_loss
    assert row["train_eval_accuracy"] == clean_acc and row["train_eval_loss"] == clean_loss
    assert row["gap"] == pytest.approx(clean_acc - test_acc)
    assert row["loss_gap"] == pytest.approx(test_loss - clean_loss)
    # Named for what they are, whatever the rule: the highest test accuracy of any epoch,
    # and the last epoch's values.
    assert row["best_test_accuracy"] == 0.75 and row["best_epoch"] == 2
    assert row["final_test_loss"] == 0.8 and row["final_train_eval_accuracy"] == 0.9
    # The view for people says the same.
    conn = sqlite3.connect(tmp_path / "k.db")
    view = conn.execute("SELECT kept_epoch, test_accuracy, gap, loss_gap, final_test_loss "
                        "FROM best").fetchone()
    conn.close()
    assert view == (kept, test_acc, pytest.approx(clean_acc - test_acc),
                    pytest.approx(test_loss - clean_loss), 0.8)


def test_a_store_written_before_clean_metrics_reads_with_nulls_and_no_running_gap(tmp_path,
                                                                                 monkeypatch):
    db = tmp_path / "v3.db"
    full = list(SCHEMA.MIGRATIONS)
    monkeypatch.setattr(SCHEMA, "MIGRATIONS", full[:3])
    monkeypatch.setattr(SCHEMA, "SCHEMA_VERSION", 3)
    with Store(db) as old:
        with old.transaction() as conn:  # as version 3's code wrote them
            conn.execute("INSERT INTO studies (name, spec_json, spec_hash, created_at) "
                         "VALUES ('s', '{}', 'x', '2024-01-01T00:00:00Z')")
            conn.executemany("INSERT INTO cells (study_id, model, dataset, batch_size, "
                             "learning_rate, seed) VALUES (1, 'm', 'd', ?, 0.1, 0)",
                             [(16,), (32,)])
            conn.execute("INSERT INTO epochs (cell_id, epoch, train_loss, train_accuracy, "
                         "test_loss, test_accuracy, recorded_at) VALUES "
                         "(1, 0, 0.1, 0.99, 0.5, 0.8, '2024-01-01T00:00:00Z')")
            conn.execute("UPDATE cells SET status = 'done', best_test_accuracy = 0.8, "
                         "best_epoch = 0, final_train_accuracy = 0.99 WHERE cell_id = 1")
    monkeypatch.setattr(SCHEMA, "MIGRATIONS", full)
    monkeypatch.setattr(SCHEMA, "SCHEMA_VERSION", len(full))
    before = sha256(db)
    frame = load_results(db)  # a reader: never migrates
    assert sha256(db) == before and inspect_store(db)["user_version"] == 3
    first = frame.iloc[0]
    assert first["test_accuracy"] == 0.8 and first["kept_epoch"] == 0 and first["test_loss"] == 0.5
    assert frame["train_eval_accuracy"].isna().all() and frame["gap"].isna().all()
    assert frame["val_accuracy"].isna().all() and frame["val_loss"].isna().all()
    assert load_epochs(db)["train_eval_loss"].isna().all()
    assert load_epochs(db)["val_loss"].isna().all()
    # A writer migrates it: the kept epoch is filled in, the clean metrics stay missing.
    with Store(db):
        pass
    again = load_results(db).iloc[0]
    assert again["kept_epoch"] == 0 and math.isnan(again["gap"])


# ---------------------------------------------------------------- hostile conditions

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def test_a_write_lock_held_past_the_busy_timeout_is_waited_for_and_named(tmp_path, monkeypatch,
                                                                        capfd):
    monkeypatch.setenv("KERASGEN_BUSY_TIMEOUT_MS", "200")
    store, _ = new_study(tmp_path / "l.db", grid([16], [0.1]))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "l.db"), "2.0"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    store.record_epoch(1, 0, logs())  # waits ~2 s (ten busy timeouts), then writes
    waited = time.monotonic() - started
    holder.wait(timeout=30)
    assert waited > 1.0
    assert store.epochs_of(1)[0]["test_accuracy"] == 0.4
    err = capfd.readouterr().err
    assert "waiting for the store lock" in err and f"held by {holder.pid}" in err
    store.close()


def test_the_heartbeat_thread_survives_store_errors_and_says_so(capfd):
    from kerasgen.train import Heartbeat

    beats = []

    class FlakyStore:
        def heartbeat_sender(self, claim):
            def beat():
                beats.append(time.monotonic())
                if len(beats) == 2:
                    raise sqlite3.OperationalError("disk I/O error")
            return beat, lambda: None

    claim = S.Claim("p", "w", (), False)
    heartbeat = Heartbeat(FlakyStore(), claim, interval=0.02)
    heartbeat.start()
    deadline = time.monotonic() + 10
    while len(beats) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    alive = heartbeat.is_alive()
    heartbeat.stop()
    assert len(beats) >= 5 and alive and not heartbeat.lost.is_set()
    assert "heartbeat of pack p failed (OperationalError: disk I/O error)" in capfd.readouterr().err


def test_a_full_store_disk_is_a_store_error_naming_it_and_keeps_what_was_written(tmp_path):
    store, _ = new_study(tmp_path / "f.db", grid([16], [0.1]))
    store.record_epoch(1, 0, logs())
    pages = rows(store, "PRAGMA page_count")[0][0]
    store.conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "disk is full"
    with pytest.raises(StoreError, match=r"disk holding the store .*f\.db is full"):
        for epoch in range(1, 400):
            store.record_epoch(1, epoch, logs(), claim=None)
    store.close()
    assert load_epochs(tmp_path / "f.db").iloc[0]["test_accuracy"] == 0.4


@pytest.mark.parametrize("path", ["/dev/null", "DIR"])
def test_a_path_that_is_not_a_regular_file_is_refused_and_nothing_is_created(tmp_path, path):
    target = tmp_path if path == "DIR" else Path(path)
    before = sorted(p.name for p in target.parent.iterdir())
    with pytest.raises(StoreError, match="not a regular file|is a directory"):
        Store(target)
    assert sorted(p.name for p in target.parent.iterdir()) == before


def _as_unprivileged(args: list[str], **kwargs):
    """Run a command as a user who may only read what others may (root: as nobody)."""
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot drop privileges")
        args = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *args]
        _skip_unless_nobody_can_import_kerasgen(args[:4], kwargs.get("env"))
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


_NOBODY_IMPORTS: dict = {}


def _skip_unless_nobody_can_import_kerasgen(drop: list[str], env) -> None:
    """A checkout under a directory only its owner may enter (``mktemp -d`` makes one
    0700) cannot be read by the unprivileged user: say so instead of failing on it."""
    if "ok" not in _NOBODY_IMPORTS:
        probe = subprocess.run([*drop, sys.executable, "-c", "import kerasgen"],
                               capture_output=True, text=True, timeout=120, env=env)
        _NOBODY_IMPORTS["ok"] = probe.returncode == 0
    if not _NOBODY_IMPORTS["ok"]:
        pytest.skip(f"user nobody cannot read this checkout ({ROOT} or a directory above it "
                    "is not readable by others, as in a clone made in `mktemp -d`): clone "
                    "into a readable directory to run this test")


@pytest.fixture
def readonly_store():
    """A finished-looking store in a directory this user may only read, a -wal beside
    it holding the last change (as a writer that is still running leaves it)."""
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="kerasgen-ro-"))
    os.chmod(top, 0o755)
    directory = top / "ro"
    directory.mkdir()
    db = directory / "s.db"
    store, _ = new_study(db, grid([16, 32], [0.1]))
    store.record_epoch(1, 0, logs())
    store.finish_cell(1, "done")
    store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    keep = sqlite3.connect(db)  # a second connection keeps the -wal when the store closes
    keep.execute("PRAGMA journal_mode").fetchone()
    store.record_epoch(2, 0, logs(test_acc=0.9))
    store.conn.close()
    os.chmod(db, 0o444)
    os.chmod(directory, 0o555)
    yield db
    keep.close()
    os.chmod(directory, 0o755)
    shutil.rmtree(top)


def test_a_user_who_may_only_read_the_store_gets_status_report_db_and_results(readonly_store):
    db = readonly_store
    before = sorted(p.name for p in db.parent.iterdir())
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": "/tmp"}
    for command in ("status", "report", "db"):
        run = _as_unprivileged([sys.executable, "-m", "kerasgen", command, "--db", str(db)],
                               env=env)
        assert run.returncode == 0, (command, run.stderr)
        assert "Traceback" not in run.stderr and "readonly" not in run.stderr.lower()
        if command != "db":
            assert "read as a snapshot" in run.stderr, (command, run.stderr)
    code = "import sys, kerasgen; print(len(kerasgen.load_results(sys.argv[1])))"
    run = _as_unprivileged([sys.executable, "-c", code, str(db)], env=env)
    assert run.returncode == 0 and run.stdout.strip() == "2", run.stderr
    assert sorted(p.name for p in db.parent.iterdir()) == before  # nothing created


def test_running_into_a_store_this_user_may_only_read_says_so_and_leaves_nothing(
        readonly_store):
    db = readonly_store
    before = sorted(p.name for p in db.parent.iterdir())
    spec = db.parent.parent / "spec.toml"  # readable by everyone
    spec.write_text('name = "s"\nmodels = ["resnet8"]\ndatasets = ["synthetic"]\n'
                    'batch_sizes = [16]\nlearning_rates = [0.1]\nepochs = 1\n')
    os.chmod(spec, 0o644)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": "/tmp"}
    run = _as_unprivileged([sys.executable, "-m", "kerasgen", "run", str(spec), "--db", str(db),
                            "--checkpoint-dir", "/tmp/kerasgen-ro-ckpt-unused"], env=env)
    assert run.returncode == 2, run.stderr
    assert "cannot be written" in run.stderr or "read-only" in run.stderr
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in db.parent.iterdir()) == before


def test_epochs_long_gives_learning_curves_without_joins_and_each_cells_share_of_time(
        tmp_path):
    store, _ = new_study(tmp_path / "l.db", grid([16], [0.1, 0.2]))
    store.record_epoch(1, 0, logs(train_eval_accuracy=0.9, train_eval_loss=0.3), 6.0,
                       pack_cells=2)
    store.record_epoch(2, 0, logs(), 6.0, pack_cells=2)
    store.close()
    conn = sqlite3.connect(tmp_path / "l.db")
    row = conn.execute("SELECT study, model, batch_size, learning_rate, ratio, epoch, "
                       "test_accuracy, gap, loss_gap, pack_wall_seconds, pack_cells, "
                       "cell_wall_seconds FROM epochs_long WHERE learning_rate = 0.1").fetchone()
    conn.close()
    assert row[:7] == ("s", "m", 16, 0.1, 160.0, 0, 0.4)
    assert row[7] == pytest.approx(0.9 - 0.4) and row[8] == pytest.approx(1.2 - 0.3)
    assert row[9:] == (6.0, 2, 3.0)
    assert load_epochs(tmp_path / "l.db")["pack_cells"].tolist() == [2, 2]
