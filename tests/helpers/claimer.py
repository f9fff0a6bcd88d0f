"""Subprocess entry point for tests/test_store.py: one worker claiming packs until none is
left, recording a few epochs per cell and finishing every claimed cell.

    python claimer.py DB STUDY_ID OUT_JSON GO_FILE PACK_SIZE EPOCHS [WORK_SECONDS]

WORK_SECONDS (default 0) is slept per claimed pack, standing in for training, so the
workers' claims interleave even when the machine schedules them unevenly.
Waits for GO_FILE to exist (so that all workers start claiming together), then writes
{"worker", "claims": [{"pack_id", "cell_ids", "resumed"}], "max_op_seconds"} to OUT_JSON.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path


def main() -> None:
    db, study_id, out, go, pack_size, epochs = sys.argv[1:7]
    work = float(sys.argv[7]) if len(sys.argv) > 7 else 0.0
    from kerasgen.store import Store

    store = Store(db)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    Path(out + ".ready").touch()  # imported and opened: ready to claim
    deadline = time.monotonic() + 60
    while not Path(go).exists():
        if time.monotonic() > deadline:
            raise SystemExit("the go file never appeared")
        time.sleep(0.005)
    claims, slowest = [], 0.0

    def timed(fn, *args, **kwargs):
        nonlocal slowest
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        slowest = max(slowest, time.perf_counter() - started)
        return result

    while True:
        claim = timed(store.claim_pack, int(study_id), worker, int(pack_size))
        if claim is None:
            break
        claims.append({"pack_id": claim.pack_id, "cell_ids": claim.cell_ids,
                       "resumed": claim.resumed,
                       "groups": [[c["model"], c["dataset"], c["seed"], c["batch_size"]]
                                  for c in claim.cells],
                       "learning_rates": [c["learning_rate"] for c in claim.cells]})
        timed(store.heartbeat, claim)
        time.sleep(work)
        for cell_id in claim.cell_ids:
            for epoch in range(int(epochs)):
                logs = {"train_loss": 1.0 / (epoch + 1), "train_accuracy": 0.5,
                        "test_loss": 1.5 / (epoch + 1), "test_accuracy": 0.4 + 0.1 * epoch}
                timed(store.record_epoch, cell_id, epoch, logs, 0.01, claim=claim)
            timed(store.finish_cell, cell_id, "done", claim=claim)
    store.close()
    Path(out).write_text(json.dumps({"worker": worker, "claims": claims,
                                     "max_op_seconds": slowest}))


if __name__ == "__main__":
    main()
