"""The report's intervals keep their rate: the reduced calibration harness
(scripts/bench_calibration.py --quick) on simulated demo grids with a known truth, under
independent and crossed (seed x row, seed x column) noise. Every 95 % interval the
report prints must cover its truth in at least 85 % of the grids of every scenario, and
two seeds must print no interval at all. The full table (paper and demo grids, 1-10
seeds, the verdicts' false-positive rates) is the script's; the README shows it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _harness():
    spec = importlib.util.spec_from_file_location("bench_calibration",
                                                  ROOT / "scripts" / "bench_calibration.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def coverage():
    bench = _harness()
    args = bench.parse(["--quick"])
    scenarios = bench.scenarios_of(args.grids, args.seeds,
                                   [tuple(m.split("+")) for m in args.models])
    table, verdicts = bench.run(scenarios, args, progress=False)
    assert verdicts.empty  # --quick measures the intervals only
    return table


def test_every_printed_95_percent_interval_covers_its_truth_at_least_85_percent(coverage):
    claimed = coverage[~coverage["interval"].str.contains("noise-free|candidate")]
    printed = claimed[claimed["printed"] > 0]
    # Three and five seeds print the whole grid's interval and its slope's, in every
    # noise model.
    assert set(printed["seeds"]) == {3, 5} and set(printed["interval"]) == {
        "CI", "CI of the slope"}
    assert len(printed) == 4 * 2 * 2
    low = printed[printed["coverage"] < 0.85]
    assert low.empty, low[["interval", "table", "truth", "noise", "seeds", "coverage"]]


def test_two_seeds_print_their_range_and_no_interval(coverage):
    two = coverage[coverage["seeds"] == 2]
    assert len(two) and (two["printed"] == 0).all()
