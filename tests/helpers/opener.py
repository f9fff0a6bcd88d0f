"""Subprocess entry point for tests/test_store.py: opens fresh stores that other
processes open at the same moment.

    python opener.py DIR COUNT START_AT OUT_JSON

From wall-clock time START_AT on, for i in 0..COUNT-1: opens DIR/<i>.db with ``Store``
(the first of the processes to get there creates it), creates the same study in it and
closes it. Writes the errors it met (type and message) to OUT_JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    folder, count, start_at, out = sys.argv[1:5]
    from kerasgen.store import Store

    cells = [{"model": "m", "dataset": "d", "batch_size": 16, "learning_rate": 0.1,
              "seed": 0}]
    while time.time() < float(start_at):
        pass
    errors = []
    for i in range(int(count)):
        try:
            store = Store(Path(folder) / f"{i}.db")
            store.create_study("s", {"name": "s"}, cells)
            store.close()
        except Exception as exc:  # noqa: BLE001 - reported to the test
            errors.append(f"{i}: {type(exc).__name__}: {exc}")
    Path(out).write_text(json.dumps(errors))


if __name__ == "__main__":
    main()
