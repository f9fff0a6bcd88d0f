"""Does a long-lived worker leak? Train many tiny packs in one process, print RSS.

A worker trains hundreds of packs in one process; Keras/TensorFlow are known to grow
across models built in one process unless state is cleared. This script trains
``--packs`` tiny packs (ResNet-8 on synthetic 8x8 images, K copies, 1 epoch each) through
the real runner (`kerasgen.train.train_pack`, store and checkpoints included), and prints
the resident memory after each, then the growth from pack 10 to the last.

    .venv/bin/python scripts/bench_memory.py --packs 50                  # worst case
    .venv/bin/python scripts/bench_memory.py --packs 50 --batch-sizes 20 # the paper's pattern
    .venv/bin/python scripts/bench_memory.py --packs 50 --malloc-trim --tracemalloc

Batch sizes: by default every pack has a batch size of its own (the worst case: every
pack a new input shape for the compiled step). ``--batch-sizes N``: the paper's pattern,
where a worker meets at most N (20) batch sizes per group before the group (model, data
set) changes and the cached pack is dropped: packs come in groups of N batch sizes, each
group on a data set of its own. Where the growth is: ``--malloc-trim`` returns the C
heap's free memory to the system after each pack (glibc's ``malloc_trim``) and prints the
RSS after it (memory freed but kept by the allocator is not a leak); ``--tracemalloc``
prints the memory held by Python objects; 'functions' counts the graph functions
registered in TensorFlow's eager context (constant: nothing is retraced).
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
    parser.add_argument("--batch-sizes", type=int, default=0,
                        help="distinct batch sizes per group, then a new group (a data set "
                             "of its own): the paper's pattern is 20 (default 0: one group, "
                             "every pack a new batch size)")
    parser.add_argument("--malloc-trim", action="store_true",
                        help="after each pack, glibc malloc_trim(0); print the RSS after it")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="print the memory held by Python objects (slower)")
    args = parser.parse_args()

    import ctypes
    import tracemalloc

    import psutil
    from tensorflow.python.eager import context  # a private API, only to count traces

    from kerasgen.options import RunOptions
    from kerasgen.runtime import environment_facts, worker_name
    from kerasgen.spec import Spec
    from kerasgen.store import Store
    from kerasgen.train import prepare_dataset, train_pack

    process = psutil.Process()
    datasets = ("synthetic-8-1-10-128",)
    if args.same_batch_size:
        batch_sizes = (16,)
        lrs = tuple(round(0.001 * (i + 1), 6) for i in range(args.copies * args.packs))
    elif args.batch_sizes:
        # Groups of N batch sizes, each group a data set of its own (the runner drops its
        # cached pack when the group changes, as between the paper's model/data groups).
        batch_sizes = tuple(range(8, 8 + args.batch_sizes))
        lrs = tuple(0.01 * (i + 1) for i in range(args.copies))
        groups = -(-args.packs // args.batch_sizes)
        datasets = tuple(f"synthetic-8-1-{10 + g}-128" for g in range(groups))
    else:
        # One batch size per pack: every pack a new input shape for the compiled step.
        batch_sizes = tuple(range(8, 8 + args.packs))
        lrs = tuple(0.01 * (i + 1) for i in range(args.copies))
    spec = Spec(name="memory", models=("resnet8",), datasets=datasets,
                batch_sizes=batch_sizes, learning_rates=lrs, epochs=args.epochs)
    libc = ctypes.CDLL("libc.so.6") if args.malloc_trim else None
    if args.tracemalloc:
        tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "memory.db"
        options = RunOptions(pack_size=args.copies, data_dir=tmp)
        store = Store(db)
        study_id = store.create_study(spec.name, spec.to_dict(), spec.cells(), environment_facts())
        loaded = {}
        facts = environment_facts()
        print(f"# {facts['platform']}, python {facts['python']}, TensorFlow {facts['tensorflow']}, "
              f"Keras {facts['keras']}, {facts['cpu_count']} CPUs")
        pattern = ("every pack at batch size 16" if args.same_batch_size else
                   f"groups of {args.batch_sizes} batch sizes, each on a data set of its own"
                   if args.batch_sizes else "every pack a new batch size (the worst case)")
        print(f"# {args.packs} packs x {args.copies} copies of ResNet-8, "
              f"{args.epochs} epoch(s) each; {pattern}")
        print(f"# TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}; "
              "'functions' = graph functions registered in TensorFlow's eager context "
              "(constant = nothing is retraced)")
        print("pack  batch  rss_mb" + ("  trimmed_mb" if libc else "")
              + ("  python_mb" if args.tracemalloc else "") + "  seconds  functions")
        rss, trimmed, python = [], [], []
        for i in range(args.packs):
            started = time.perf_counter()
            claim = store.claim_pack(study_id, worker_name(), args.copies)
            assert claim is not None
            name = claim.cells[0]["dataset"]
            if name not in loaded:
                loaded.clear()
                loaded[name] = prepare_dataset(name, options)
            train_pack(store, claim, spec, loaded[name], options)
            seconds = time.perf_counter() - started
            rss.append(process.memory_info().rss / 2**20)
            line = f"{i + 1:4d}  {claim.cells[0]['batch_size']:5d}  {rss[-1]:6.1f}"
            if libc:
                libc.malloc_trim(0)
                trimmed.append(process.memory_info().rss / 2**20)
                line += f"  {trimmed[-1]:10.1f}"
            if args.tracemalloc:
                python.append(tracemalloc.get_traced_memory()[0] / 2**20)
                line += f"  {python[-1]:9.1f}"
            functions = len(context.context().list_function_names())
            print(f"{line}  {seconds:7.2f}  {functions:9d}", flush=True)
        store.close()
    if len(rss) >= 10:
        growth = rss[-1] - rss[9]
        print(f"# growth from pack 10 to pack {len(rss)}: {growth:+.1f} MB "
              f"({growth / (len(rss) - 10):+.2f} MB per pack); target: under 100 MB")
        for label, series in (("after malloc_trim", trimmed), ("Python objects", python)):
            if series:
                print(f"# {label}: {series[-1] - series[9]:+.1f} MB from pack 10 to pack "
                      f"{len(series)}")
        return 0 if growth < 100 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
