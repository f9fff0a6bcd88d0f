"""``kerasgen`` run as a command, killed with SIGKILL at one boundary of a pack's life.

    python kill_at.py BOUNDARY kerasgen-arguments...

BOUNDARY:

- ``mid-pack``: after the 3rd committed epoch row, before any cell of the pack finished;
- ``first-finish``: right after the first cell of a pack is committed ``done`` (its
  pack-mates still train);
- ``after-first-finish``: at the first epoch row committed after a cell finished (the
  rest of the pack is mid-training, one cell done);
- ``checkpoint``: right after the checkpoint of the first epoch at which a cell finishes
  is written, before that epoch's rows and statuses are committed;
- ``removal``: after the pack's last cell is committed done, before its checkpoint
  directory is removed.
"""

from __future__ import annotations

import os
import signal
import sys


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(boundary: str) -> None:
    from kerasgen.checkpoints import PackCheckpoint
    from kerasgen.store import writer

    state = {"rows": 0, "finished": False}
    record_epoch, finish_cell = writer.Store.record_epoch, writer.Store.finish_cell
    save = PackCheckpoint.save

    def recording(self, cell_id, epoch, logs, *args, **kwargs):
        written = record_epoch(self, cell_id, epoch, logs, *args, **kwargs)
        if written:
            state["rows"] += 1
            if boundary == "mid-pack" and state["rows"] == 3:
                die()
            if boundary == "after-first-finish" and state["finished"]:
                die()
        return written

    def finishing(self, cell_id, status="done", *args, **kwargs):
        finish_cell(self, cell_id, status, *args, **kwargs)
        state["finished"] = True
        if boundary == "first-finish":
            die()

    def saving(self, model, meta):
        save(self, model, meta)
        if boundary == "checkpoint" and any(meta["statuses"].values()):
            die()

    def removing(self):
        die()

    writer.Store.record_epoch = recording
    writer.Store.finish_cell = finishing
    PackCheckpoint.save = saving
    if boundary == "removal":
        PackCheckpoint.remove = removing


if __name__ == "__main__":
    arm(sys.argv[1])
    from kerasgen.cli import main

    sys.exit(main(sys.argv[2:]))
