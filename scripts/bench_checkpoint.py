"""What a pack checkpoint costs: its write time against the pack's epoch time.

The runner checkpoints every pack at the end of every epoch
(``kerasgen.checkpoints.PackCheckpoint.save``: every weight and optimizer variable in one
npz, then a JSON with the pack's history, each written atomically with an fsync). This
script measures, on this machine:

- the save of a built pack (ResNet-20, K = 4 by default) and its epoch time at the
  paper's smallest and largest batch sizes (16, 320; steps timed after warm-up from
  per-batch timestamps, an epoch = 50,000 images);
- the save of checkpoints of the size a K = 20 pack of ResNet-110 and of VGG-19 has
  (their weights: 1,730,714 and 20,040,522 parameters, plus batch-norm statistics, x K;
  no optimizer slots: the paper's SGD has no momentum, with momentum each weight has a
  slot and the file doubles), with the history JSON of a pack at epoch 200;

and projects the same for an H200: an epoch's FLOPs (K x 50,000 images x training FLOP
per image) at a stated fraction of the H200's peak (fp32 67 TFLOP/s, bf16 dense 989
TFLOP/s), or at the rates a device_check.py run measured (``--device-check JSON``), and
the write at a stated disk bandwidth. For each case it prints what checkpoints cost when
written every epoch (write time / epoch time, a share of training time), and the
``checkpoint_every`` (epochs between checkpoints) that keeps that cost under 5 %.

    .venv/bin/python scripts/bench_checkpoint.py
    .venv/bin/python scripts/bench_checkpoint.py --fraction 0.1 --disk-gbps 0.5 \\
        --device-check device_check.json

Figures on a shared 2-core machine are noisy: min / median / max of interleaved repeats.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PAPER_IMAGES = 50_000
PAPER_EPOCHS = 200
TARGET_SHARE = 0.05
H200_TFLOPS = {"fp32": 67.0, "bf16": 989.0}  # H200 SXM peak: FP32; BF16 tensor, dense
PAPER_PARAMS = {"resnet110": 1_730_714, "vgg19": 20_040_522}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20", help="the pack built and timed here")
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--batch-sizes", default="16,320",
                   help="batch sizes whose epoch time is measured (the paper: 16..320)")
    p.add_argument("--paper-copies", type=int, default=20, help="K of the paper-size packs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fraction", type=float, default=0.25,
                   help="share of the H200's peak an epoch runs at (a stated guess; "
                        "device_check.py measures it)")
    p.add_argument("--disk-gbps", type=float, default=1.0,
                   help="checkpoint write bandwidth on the H200 machine, GB/s (stated)")
    p.add_argument("--device-check", help="a device_check.py --json result: use its rates")
    p.add_argument("--skip-paper-sizes", action="store_true",
                   help="do not write the 0.1-1.6 GB paper-size checkpoints here")
    p.add_argument("--dir", help="where checkpoints are written (default: a temporary "
                                 "directory on this machine's disk)")
    return p.parse_args()


def every_for(write_s: float, epoch_s: float) -> int:
    """Fewest epochs between checkpoints that keep their share of training time < 5 %."""
    return max(1, math.ceil(write_s / (TARGET_SHARE * epoch_s) - 1e-12))


class Arrays:
    """A stand-in for a compiled pack: what PackCheckpoint.save reads (get_weights and
    optimizer.variables), holding arrays of a real pack's shapes."""

    def __init__(self, weights, optimizer_variables):
        self._weights = weights
        self.optimizer = type("Optimizer", (), {"variables": optimizer_variables})()

    def get_weights(self):
        return self._weights


def history(cells: int, epochs: int) -> dict:
    """The ``history`` a pack's checkpoint JSON holds after ``epochs`` epochs: every
    recorded row of every cell (the runner's PackLogger)."""
    row = {"train_loss": 0.123456789, "train_accuracy": 0.987654321, "test_loss": 0.3456789,
           "test_accuracy": 0.91234567, "train_eval_loss": 0.1123456, "train_eval_accuracy":
           0.97654321, "learning_rate": 0.05}
    return {str(c): [[e, row, 123.456789] for e in range(epochs)] for c in range(cells)}


def time_saves(model, directory: Path, meta_of, repeats: int, label: str) -> dict:
    """Seconds of ``repeats`` consecutive PackCheckpoint.save calls (one per epoch, as the
    runner: each deletes the previous npz), and the files' size."""
    from kerasgen.checkpoints import PackCheckpoint

    checkpoint = PackCheckpoint(directory, owner=f"bench{label}")
    seconds = []
    for epoch in range(repeats):
        started = time.perf_counter()
        checkpoint.save(model, meta_of(epoch))
        seconds.append(time.perf_counter() - started)
    size = sum(p.stat().st_size for p in directory.glob(f"state-{checkpoint.owner}*"))
    return {"seconds": seconds, "bytes": size}


def step_seconds(net, batch_size: int, copies: int, shape, steps: int) -> float:
    """Seconds per step of ``net`` at ``batch_size`` (device_check's per-batch clock)."""
    import device_check as dc

    _, _, step = dc.timed_fit(net, batch_size, steps, copies, shape)
    return step


def measure_pack(args, tmp: Path) -> dict:
    import device_check as dc

    shape = (32, 32, 3)
    config = dc.Config(args.model, "branches", False, args.copies)
    net = dc.build(config, shape)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    for b in batch_sizes:  # compile for each batch size before anything is timed
        step_seconds(net, b, args.copies, shape, 3)
    cells = list(range(args.copies))
    steps: dict = {b: [] for b in batch_sizes}
    saves = []
    for repeat in range(args.repeats):  # interleaved: steps, then a checkpoint, per repeat
        for b in batch_sizes:
            steps[b].append(step_seconds(net, b, args.copies, shape, 12 if b <= 64 else 4))
        saves += time_saves(net, tmp / f"pack-{repeat}", lambda e: {
            "epoch": e, "cell_ids": cells, "statuses": {}, "history": history(len(cells), e),
            "pack_id": 1, "layout": "branches"}, 3, f"r{repeat}")["seconds"]
    size = sum(p.stat().st_size for p in (tmp / "pack-0").glob("state-*"))
    epochs = {b: [s * math.ceil(PAPER_IMAGES / b) for s in steps[b]] for b in batch_sizes}
    return {"saves": saves, "bytes": size, "epochs": epochs,
            "params": sum(int(w.size) for w in net.get_weights())}


def paper_arrays(model: str, copies: int, momentum: bool):
    """K copies' weights of a paper network (shapes from the built single network,
    values random), and the optimizer's variables (PackedSGD: iterations, the K rates,
    and a momentum slot per trainable weight when momentum is on)."""
    import numpy as np

    from kerasgen.models import build_model

    net = build_model(model, 10, (32, 32, 3))
    trainable = sum(int(np.prod(v.shape)) for v in net.trainable_weights)
    assert trainable == PAPER_PARAMS[model], (model, trainable)
    # (np.savez stores the bytes uncompressed: their values do not matter)
    weights = [np.full(tuple(w.shape), 0.5, np.float32) for _ in range(copies) for w in net.weights]
    optimizer = [np.zeros((), np.int64), np.zeros((copies,), np.float32)]
    if momentum:
        optimizer += [np.zeros(tuple(v.shape), np.float32)
                      for _ in range(copies) for v in net.trainable_weights]
    return Arrays(weights, optimizer), trainable


def stats(values) -> str:
    return (f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}")


def main() -> int:
    args = parse_args()
    from kerasgen import runtime

    runtime.set_onednn("auto")
    from device_check import train_flops_per_image

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        print(f"# {runtime.cpu_model()}, {os.cpu_count()} cores; checkpoints written under "
              f"{'--dir' if args.dir else 'a temporary directory'} on this machine's disk")
        print(f"\n## a built pack: {args.model}, K = {args.copies} (branches, SGD without "
              f"momentum), 32x32x3; {args.repeats} interleaved repeats (3 saves each)")
        pack = measure_pack(args, tmp)
        save_med = statistics.median(pack["saves"])
        print(f"checkpoint: {pack['bytes'] / 1e6:.1f} MB ({pack['params']:,} numbers); save "
              f"min / median / max {stats(pack['saves'])} s "
              f"({pack['bytes'] / save_med / 1e6:.0f} MB/s)")
        print(f"{'batch':>5s} {'epoch s (min / median / max)':>30s} {'cost every epoch':>17s} "
              f"{'checkpoint_every':>16s}")
        for b, epochs in pack["epochs"].items():
            epoch = statistics.median(epochs)
            print(f"{b:5d} {stats(epochs):>30s} {100 * save_med / epoch:16.2f}% "
                  f"{every_for(save_med, epoch):16d}")

        written = {}
        if not args.skip_paper_sizes:
            print(f"\n## paper-size checkpoints (K = {args.paper_copies}, no momentum, the "
                  f"history JSON of epoch {PAPER_EPOCHS}), written here")
            for model in PAPER_PARAMS:
                arrays, _ = paper_arrays(model, args.paper_copies, momentum=False)
                cells = list(range(args.paper_copies))
                meta = {"epoch": PAPER_EPOCHS - 1, "cell_ids": cells, "statuses": {},
                        "history": history(len(cells), PAPER_EPOCHS), "pack_id": 1,
                        "layout": "fused"}
                result = time_saves(arrays, tmp / model, lambda e, meta=meta: {**meta,
                                    "epoch": PAPER_EPOCHS - 1 + e}, args.repeats, model)
                written[model] = result
                med = statistics.median(result["seconds"])
                print(f"{model:10s} {result['bytes'] / 1e9:6.3f} GB: save min / median / max "
                      f"{stats(result['seconds'])} s ({result['bytes'] / med / 1e9:.2f} GB/s)",
                      flush=True)
                del arrays

    measured_rates = {}
    if args.device_check:
        result = json.loads(Path(args.device_check).read_text())
        for model, row in result["projection"]["networks"].items():
            measured_rates[model] = (row["best_rate"], row["best"])
    k = args.paper_copies
    print(f"\n## projection for an H200: a K = {k} pack, 50,000 images per epoch, an epoch's "
          f"FLOPs at {100 * args.fraction:.0f} % of the peak (fp32 "
          f"{H200_TFLOPS['fp32']:.0f}, bf16 {H200_TFLOPS['bf16']:.0f} TFLOP/s dense)"
          + (", or at the rates device_check.py measured" if measured_rates else "")
          + f"; a checkpoint's write: its size at {args.disk_gbps:g} GB/s, or the save "
          "measured here if slower (a pack of many small arrays is bound by their count)")
    print(f"{'network':19s} {'epoch at':>22s} {'epoch s':>8s} {'ckpt GB':>8s} {'write s':>8s} "
          f"{'cost every epoch':>17s} {'checkpoint_every':>16s}")
    for model, params in PAPER_PARAMS.items():
        flops = train_flops_per_image(model, (32, 32, 3)) * k * PAPER_IMAGES
        # weights + batch-norm statistics (from the written file when there is one)
        bytes_plain = written[model]["bytes"] if model in written else params * k * 4
        here = statistics.median(written[model]["seconds"]) if model in written else 0.0
        scenarios = [(f"{100 * args.fraction:.0f}% of {p} peak",
                      flops / (args.fraction * tflops * 1e12))
                     for p, tflops in H200_TFLOPS.items()]
        if model in measured_rates:
            rate, _ = measured_rates[model]
            scenarios.append(("device_check rate", k * PAPER_IMAGES / rate))
        for momentum in (False, True):
            size = bytes_plain + (params * k * 4 if momentum else 0)
            write = max(size / (args.disk_gbps * 1e9), here * size / bytes_plain)
            for name, epoch in scenarios:
                print(f"{model + (' +momentum' if momentum else ''):19s} {name:>22s} "
                      f"{epoch:8.1f} {size / 1e9:8.2f} {write:8.2f} {100 * write / epoch:16.2f}% "
                      f"{every_for(write, epoch):16d}")
            print(f"{'':19s} checkpointing every epoch stays under 5 % while an epoch takes "
                  f"over {write / TARGET_SHARE:.0f} s")
    print("(cost = checkpoint write time / epoch time, as a share of training time, when "
          "written every epoch; checkpoint_every = the fewest epochs n between checkpoints "
          "that keep write / (n x epoch) under 5 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
