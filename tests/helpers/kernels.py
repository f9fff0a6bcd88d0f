"""Comparisons that compare like with like: two stores' runs were trained under the same
kernel settings (backend, oneDNN, XLA, device) before their numbers are compared."""

from __future__ import annotations

import json
import sqlite3

from kerasgen.settings import KERNEL_SETTINGS


def kernel_settings(db) -> set[tuple]:
    """The distinct kernel settings every worker of every study in ``db`` recorded."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        found = set()
        for (text,) in conn.execute("SELECT environment_json FROM studies"):
            env = json.loads(text or "{}")
            for key, value in env.items():
                if key.startswith("worker ") and isinstance(value, dict):
                    found.add(tuple((k, value.get(k)) for k in KERNEL_SETTINGS))
        return found
    finally:
        conn.close()


def assert_same_kernels(a, b) -> None:
    """Fail with the settings, not with a float mismatch, when two stores' runs were
    trained under different kernel settings (or one recorded none)."""
    ka, kb = kernel_settings(a), kernel_settings(b)
    assert ka and kb, f"a store recorded no worker settings: {a}: {ka}; {b}: {kb}"
    assert len(ka) == 1 and ka == kb, (
        f"the two sides ran under different kernel settings, so their numbers cannot be "
        f"compared bit for bit: {a}: {sorted(ka)}; {b}: {sorted(kb)}")
