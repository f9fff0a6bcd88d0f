"""The paper-size benchmark scripts of the store, report and dashboard still run against
the code they measure (scripts/bench_tui.py once asked the dashboard for a metric the
vocabulary had renamed and died on its own assertion, unseen, because nothing ran it).
Their figures are not checked here: benchmarks print ratios, tests do not time."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_bench_tui_builds_a_paper_store_and_times_every_refresh(tmp_path):
    out = run_script("bench_tui.py", "--repeats", "1", "--no-ui", "--db",
                     str(tmp_path / "paper.db"))
    for label in ("first load (fresh reader", "first load + one grid's Spearman",
                  "refresh with nothing new", "incremental refresh",
                  "refresh after a cell finished", "Spearman, all 4 grids x 3 metrics"):
        assert re.search(rf"^\s+{re.escape(label)}.*min\s+[\d.]+ ms", out, re.M), (label, out)


@pytest.mark.slow
def test_bench_report_renders_the_paper_frame_in_every_format():
    out = run_script("bench_report.py", "--repeats", "1", "--permutations", "99")
    assert "paper-size frame: 1600 runs (1600 cells x 1 seed(s))" in out
    for fmt in ("markdown", "csv", "latex"):
        assert re.search(rf"^\s+{fmt}\s+best of 1:\s+[\d.]+ s wall", out, re.M), (fmt, out)
