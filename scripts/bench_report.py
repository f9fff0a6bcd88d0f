"""How long ``kerasgen report`` takes on a paper-size study, now that every coefficient
has permutation p-values, intervals over seeds, adjusted p-values, a Theil-Sen slope
and a ratio model per grid.

Builds a results frame in the shape of ``kerasgen.store.load_results`` for the paper's
grid (2 models x 2 data sets x 20 batch sizes x 20 learning rates = 1,600 cells: 164
tests per metric, 4 metrics), with ``--seeds`` seeds per cell (1: the paper), and times
``render_report`` in each format (the best of ``--repeats``, wall and CPU seconds).
scipy is imported before timing (the CLI pays it once either way).

Usage: python scripts/bench_report.py [--seeds N] [--repeats N] [--permutations N]
Target: the Markdown report under ~10 s on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kerasgen.report import render_report  # noqa: E402
from kerasgen.spec import preset  # noqa: E402

PAPER = preset("paper")  # the grid the paper trains, as kerasgen runs it
MODELS, DATASETS = PAPER.models, PAPER.datasets
BATCH_SIZES, LEARNING_RATES = PAPER.batch_sizes, PAPER.learning_rates


def paper_frame(seeds: int, rng_seed: int = 0) -> pd.DataFrame:
    """Accuracy falling with log(BS/LR), seed noise of one point, clean train ~1."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for model in MODELS:
        for dataset in DATASETS:
            for bs in BATCH_SIZES:
                for lr in LEARNING_RATES:
                    for seed in range(seeds):
                        acc = 0.9 - 0.02 * math.log(bs / lr) + rng.normal(0, 0.01)
                        rows.append({
                            "study": "paper", "cell_id": len(rows), "model": model,
                            "dataset": dataset, "batch_size": bs, "learning_rate": lr,
                            "seed": seed, "ratio": bs / lr, "status": "done",
                            "best_metric": "test_accuracy", "kept_epoch": 150.0,
                            "test_accuracy": acc, "test_loss": 2.0 * (1.0 - acc),
                            "train_eval_accuracy": 1.0,
                            "train_eval_loss": float(rng.uniform(0.001, 0.01)),
                            "best_test_accuracy": acc, "best_epoch": 150.0,
                            "final_train_accuracy": 1.0, "final_train_loss": 0.005,
                            "final_test_accuracy": acc - 0.01, "final_test_loss": 1.0,
                            "epochs_done": 200, "diverged_epoch": np.nan,
                        })
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--permutations", type=int, default=9999)
    args = parser.parse_args(argv)
    import scipy.stats  # noqa: F401  (imported once by the CLI too; not what is timed)

    frame = paper_frame(args.seeds)
    print(f"paper-size frame: {len(frame)} runs ({len(frame) // args.seeds} cells x "
          f"{args.seeds} seed(s)), {args.permutations} permutations per Monte Carlo p")
    for fmt in ("markdown", "csv", "latex"):
        walls, cpus = [], []
        for _ in range(args.repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            render_report(frame, fmt=fmt, permutations=args.permutations)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        print(f"  {fmt:8s} best of {args.repeats}: {min(walls):5.2f} s wall, "
              f"{min(cpus):5.2f} s CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
