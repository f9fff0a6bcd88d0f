"""Subprocess entry point for tests/test_store.py: a writer to be killed with SIGKILL.

    python killed_writer.py DB CELL_ID COMMITTED_EPOCHS MODE

Records epochs 0, 1, ... of CELL_ID one committed transaction at a time and prints
``committed <epoch>`` after each commit. MODE:

- ``big-transaction``: after COMMITTED_EPOCHS epochs, opens a BEGIN IMMEDIATE, inserts
  many large epoch rows (epochs >= 100000, with a tiny page cache so that they spill
  into the -wal before any commit) and changes the cell's status, prints
  ``in-transaction`` and sleeps without ever committing.
- ``loop``: keeps committing epochs forever (the parent kills it at a random moment).
"""

from __future__ import annotations

import sys
import time


def main() -> None:
    db, cell_id, committed, mode = sys.argv[1:5]
    cell_id, committed = int(cell_id), int(committed)
    from kerasgen.store import Store, utc_now

    store = Store(db)
    epoch = 0
    while mode == "loop" or epoch < committed:
        store.record_epoch(cell_id, epoch, {"train_loss": 1.0 / (epoch + 1),
                                            "test_accuracy": 0.5}, 0.01)
        print(f"committed {epoch}", flush=True)
        epoch += 1
    conn = store.conn
    conn.execute("PRAGMA cache_size = 4")  # pages: forces the dirty pages into the -wal
    conn.execute("BEGIN IMMEDIATE")
    padding = "x" * 2000
    now = utc_now()
    conn.executemany(
        "INSERT INTO epochs (cell_id, epoch, train_loss, metrics_json, recorded_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [(cell_id, 100_000 + i, 0.0, f'{{"pad": "{padding}"}}', now) for i in range(3000)])
    conn.execute("UPDATE cells SET status = 'failed', error = 'uncommitted' "
                 "WHERE cell_id = ?", (cell_id,))
    print("in-transaction", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
