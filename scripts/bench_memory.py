"""Does a long-lived worker leak? Train many tiny packs in one process, print RSS.

A worker trains hundreds of packs in one process; Keras/TensorFlow are known to grow
across models built in one process unless state is cleared. This script trains
``--packs`` tiny packs (ResNet-8 on synthetic 8x8 images, K copies, 1 epoch each) through
the real runner (`kerasgen.train.train_pack`, store and checkpoints included), and prints
the resident memory after each, then the growth from pack 10 to the last.

    .venv/bin/python scripts/bench_memory.py --packs 50
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packs", type=int, default=50)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--same-batch-size", action="store_true",
                        help="every pack at batch size 16 (more learning rates instead); "
                             "by default each pack has its own batch size, the worst case")
    args = parser.parse_args()

    import psutil
    from tensorflow.python.eager import context  # a private API, only to count traces

    from kerasgen.options import RunOptions
    from kerasgen.runtime import environment_facts, worker_name
    from kerasgen.spec import Spec
    from kerasgen.store import Store
    from kerasgen.train import prepare_dataset, train_pack

    process = psutil.Process()
    if args.same_batch_size:
        batch_sizes = (16,)
        lrs = tuple(round(0.001 * (i + 1), 6) for i in range(args.copies * args.packs))
    else:
        # One batch size per pack: every pack a new input shape for the compiled step.
        batch_sizes = tuple(range(8, 8 + args.packs))
        lrs = tuple(0.01 * (i + 1) for i in range(args.copies))
    spec = Spec(name="memory", models=("resnet8",), datasets=("synthetic-8-1-10-128",),
                batch_sizes=batch_sizes, learning_rates=lrs, epochs=args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "memory.db"
        options = RunOptions(pack_size=args.copies, data_dir=tmp)
        store = Store(db)
        study_id = store.create_study(spec.name, spec.to_dict(), spec.cells(), environment_facts())
        ds = prepare_dataset(spec.datasets[0], options)
        facts = environment_facts()
        print(f"# {facts['platform']}, python {facts['python']}, TensorFlow {facts['tensorflow']}, "
              f"Keras {facts['keras']}, {facts['cpu_count']} CPUs")
        print(f"# {args.packs} packs x {args.copies} copies of ResNet-8, "
              f"{args.epochs} epoch(s) each")
        print(f"# TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}; "
              "'functions' = graph functions registered in TensorFlow's eager context "
              "(constant = nothing is retraced)")
        print("pack  rss_mb  seconds  functions")
        rss = []
        for i in range(args.packs):
            started = time.perf_counter()
            claim = store.claim_pack(study_id, worker_name(), args.copies)
            assert claim is not None
            train_pack(store, claim, spec, ds, options)
            rss.append(process.memory_info().rss / 2**20)
            functions = len(context.context().list_function_names())
            seconds = time.perf_counter() - started
            print(f"{i + 1:4d}  {rss[-1]:7.1f}  {seconds:6.2f}  {functions:9d}",
                  flush=True)
        store.close()
    if len(rss) >= 10:
        growth = rss[-1] - rss[9]
        print(f"# growth from pack 10 to pack {len(rss)}: {growth:+.1f} MB "
              f"({growth / (len(rss) - 10):+.2f} MB per pack); target: under 100 MB")
        return 0 if growth < 100 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
