"""Training throughput of packed cells, measured side by side in one run.

For one network and batch size: model-images per second (K copies x images per second)
for K = 1, 2, 4, 8, 20, in both packed layouts (K branches in one graph, or the copies
fused into grouped convolutions), with XLA (jit_compile) on and off; each figure's min
and median over repeats and its ratio to K = 1 of the same layout and compile mode.
Then the input pipeline alone (augmentation included) next to the step it feeds, the
share of epoch time spent in the runner's callbacks (checkpoint + SQLite), the epoch time
with and without the clean training metrics, and a projection of the paper preset's
device-hours from the measured FLOP rates.

    .venv/bin/python scripts/bench_train.py --model resnet20 --batch-size 16
    .venv/bin/python scripts/bench_train.py --model resnet110 --batch-size 16 --copies 1,20 \
        --layouts branches,fused --jit on          # on a GPU (KERAS_BACKEND=jax works too)

Everything runs in this one process, one configuration after another, so the ratios
compare like with like; absolute numbers on a shared 2-core machine are noisy (say so).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAPER_IMAGES = 50_000
PAPER_EPOCHS = 200


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--copies", default="1,2,4,8,20")
    p.add_argument("--layouts", default="branches,fused")
    p.add_argument("--jit", default="off,on", help="off, on, or off,on")
    p.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--input-shape", default="32,32,3")
    p.add_argument("--skip-pipeline", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--skip-train-eval", action="store_true")
    p.add_argument("--skip-projection", action="store_true")
    p.add_argument("--skip-autotune", action="store_true")
    p.add_argument("--onednn-ab", action="store_true",
                   help="also rerun the K=1 and K=8 branch figures in subprocesses with "
                        "TF_ENABLE_ONEDNN_OPTS=0 and =1 (it is read once, at import)")
    p.add_argument("--training-only", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def machine_lines() -> list[str]:
    import keras

    from kerasgen.runtime import describe_device, environment_facts, onednn_in_effect

    facts = environment_facts()
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        f"device: {describe_device()}",
        f"python {facts['python']}, keras {facts['keras']} (backend {keras.backend.backend()}), "
        f"tensorflow {facts['tensorflow']}",
        f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}"
        f" (oneDNN in effect: {onednn_in_effect()})",
    ]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        lines.append(f"threads: intra_op={tf.config.threading.get_intra_op_parallelism_threads()}"
                     f" inter_op={tf.config.threading.get_inter_op_parallelism_threads()}"
                     " (0 = TensorFlow chooses)")
    return lines


def build(model: str, layout: str, copies: int, shape, jit: bool):
    import keras

    from kerasgen.data import Dataset
    from kerasgen.models import build_model
    from kerasgen.packing import build_pack

    keras.utils.set_random_seed(0)
    single = build_model(model, 10, shape)
    ds = Dataset("bench", None, None, None, None, 10, (0.0,), (1.0,))
    ds.x_train = __import__("numpy").zeros((1, *shape), "float32")
    lrs = [0.01 * (k + 1) for k in range(copies)]
    return build_pack(model, ds, lrs, single.get_weights(), jit_compile=jit, layout=layout)


def training_batches(batch_size: int, steps: int, copies: int, shape):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((batch_size * steps, *shape), dtype=np.float32)
    y = rng.integers(0, 10, batch_size * steps)
    return x, ([y] * copies if copies > 1 else y)


def time_one_fit(net, batch_size: int, x, ys, copies: int) -> float:
    """Model-images per second of one epoch over (x, ys)."""
    started = time.perf_counter()
    net.fit(x, ys, batch_size=batch_size, epochs=1, verbose=0, shuffle=False)
    return copies * len(x) / (time.perf_counter() - started)


def warm_up(net, batch_size: int, x, ys, copies: int) -> None:
    """Compile (and, with XLA, JIT) the step outside the timed fits."""
    warm = batch_size * 2
    net.fit(x[:warm], [t[:warm] for t in ys] if copies > 1 else ys[:warm],
            batch_size=batch_size, epochs=1, verbose=0, shuffle=False)


def train_flops_per_image(model: str, shape) -> float:
    """Forward multiply-adds of a single network, x2 FLOP, x3 for forward + backward."""
    from kerasgen.models import build_model

    net = build_model(model, 10, shape)
    macs = 0
    for layer in net.layers:
        cls = type(layer).__name__
        if cls == "Conv2D":
            _, h, w, c_out = layer.output.shape
            kh, kw, c_in, _ = layer.kernel.shape
            macs += h * w * kh * kw * c_in * c_out
        elif cls == "Dense":
            macs += layer.kernel.shape[0] * layer.kernel.shape[1]
    return 3 * 2 * macs


def bench_training(args, shape):
    """Every configuration is built and warmed up first; then each repeat times one fit of
    every configuration in turn (interleaved), so a slow phase of a shared machine slows
    all of them alike instead of biasing whichever ran during it."""
    copies = [int(k) for k in args.copies.split(",")]
    layouts = args.layouts.split(",")
    jits = [j == "on" for j in args.jit.split(",")]
    print(f"\n## training: {args.model}, batch {args.batch_size}, {args.steps} steps x "
          f"{args.repeats} interleaved repeats (model-images/s = copies x images/s)")
    configs = {}
    for layout in layouts:
        for jit in jits:
            for k in copies:
                try:
                    net = build(args.model, layout, k, shape, jit)
                    x, ys = training_batches(args.batch_size, args.steps, k, shape)
                    warm_up(net, args.batch_size, x, ys, k)
                except Exception as exc:  # report and go on (e.g. a layout a backend lacks)
                    print(f"{layout:9s} {'on' if jit else 'off':4s} {k:3d}  failed: "
                          f"{type(exc).__name__}: {str(exc)[:120]}", flush=True)
                    continue
                configs[(layout, jit, k)] = (net, x, ys, [])
    print(f"(built and compiled {len(configs)} configurations)", flush=True)
    for _ in range(args.repeats):
        for (_layout, _jit, k), (net, x, ys, rates) in configs.items():
            rates.append(time_one_fit(net, args.batch_size, x, ys, k))
    print(f"{'layout':9s} {'jit':4s} {'K':>3s} {'min':>9s} {'median':>9s} {'max':>9s} "
          f"{'x K=1 (median)':>15s} {'x K=1 (max)':>12s}")
    results = {}
    for layout in layouts:
        for jit in jits:
            base = None
            for k in copies:
                if (layout, jit, k) not in configs:
                    continue
                rates = configs[(layout, jit, k)][3]
                med, best = statistics.median(rates), max(rates)
                base = base or (med, best)
                results[(layout, jit, k)] = med
                print(f"{layout:9s} {'on' if jit else 'off':4s} {k:3d} {min(rates):9.1f} "
                      f"{med:9.1f} {best:9.1f} {med / base[0]:15.2f} {best / base[1]:12.2f}",
                      flush=True)
    return results


def bench_pipeline(args, shape, step_rate: float | None):
    import numpy as np

    from kerasgen import data

    n = 10_000
    rng = np.random.default_rng(0)
    ds = data.Dataset("bench", rng.random((n, *shape), dtype=np.float32),
                      rng.integers(0, 10, n), rng.random((100, *shape), dtype=np.float32),
                      rng.integers(0, 10, 100), 10, (0.5,) * shape[2], (0.25,) * shape[2],
                      augment=True)
    print(f"\n## input pipeline alone: {n} images of {shape}, pad-4 crop + flip, "
          f"batch {args.batch_size}")
    import keras

    if keras.backend.backend() == "tensorflow":
        stream = data.train_dataset(ds, 0, args.batch_size, 0, 1, copies=1)
        for _ in stream.take(2):
            pass
        started = time.perf_counter()
        count = sum(int(x.shape[0]) for x, _ in data.train_dataset(ds, 0, args.batch_size, 1, 2))
        rate = count / (time.perf_counter() - started)
        print(f"tf.data pipeline:  {rate:10.0f} images/s")
    started = time.perf_counter()
    count = sum(len(y) for _, y in data.numpy_batches(ds, 0, 0, args.batch_size))
    numpy_rate = count / (time.perf_counter() - started)
    print(f"numpy reference:   {numpy_rate:10.0f} images/s")
    if step_rate:
        delivered = rate if keras.backend.backend() == "tensorflow" else numpy_rate
        print(f"training step it feeds (fastest K=1 config): {step_rate:.0f} images/s -> the "
              f"pipeline delivers {delivered / step_rate:.0f}x what the step consumes")


def bench_overhead(args):
    """Share of epoch time in the runner's callbacks (checkpoint + SQLite rows)."""
    from kerasgen import train as train_lib
    from kerasgen.options import RunOptions
    from kerasgen.runtime import environment_facts, worker_name
    from kerasgen.spec import Spec
    from kerasgen.store import Store

    spent = {"callback": 0.0}
    original = train_lib.PackLogger.on_epoch_end

    def timed(self, epoch, logs=None):
        started = time.perf_counter()
        try:
            return original(self, epoch, logs)
        finally:
            spent["callback"] += time.perf_counter() - started

    train_lib.PackLogger.on_epoch_end = timed
    print("\n## store and logging overhead: the runner's real pack training "
          "(resnet8, synthetic 8x8, 1,024 images, batch 32, K=8, 5 epochs)")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            spec = Spec(name="overhead", models=("resnet8",), datasets=("synthetic-8-3-10-1024",),
                        batch_sizes=(32,), learning_rates=tuple(0.01 * (i + 1) for i in range(8)),
                        epochs=5)
            options = RunOptions(pack_size=8, data_dir=tmp)
            store = Store(Path(tmp) / "o.db")
            study = store.create_study(spec.name, spec.to_dict(), spec.cells(), environment_facts())
            ds = train_lib.prepare_dataset(spec.datasets[0], options)
            claim = store.claim_pack(study, worker_name(), 8)
            started = time.perf_counter()
            train_lib.train_pack(store, claim, spec, ds, options)
            total = time.perf_counter() - started
            walls = [r["wall_seconds"] for r in store.epochs_of(claim.cell_ids[0])]
            store.close()
    finally:
        train_lib.PackLogger.on_epoch_end = original
    epoch_time = sum(walls)
    print(f"epochs: {epoch_time:.2f} s in all; callbacks (checkpoint + 8 rows/epoch): "
          f"{spent['callback']:.3f} s = {100 * spent['callback'] / epoch_time:.1f} % of epoch "
          f"time; whole pack incl. build/compile: {total:.2f} s")


def bench_train_eval(args):
    """Epoch time of the runner with the clean training metrics (the default: a training
    subset as large as the test set, evaluated each epoch) against without them
    (train_eval_size = 0), interleaved repeats, in one run."""
    from kerasgen import train as train_lib
    from kerasgen.options import RunOptions
    from kerasgen.runtime import environment_facts, worker_name
    from kerasgen.spec import Spec, Training
    from kerasgen.store import Store

    dataset = "synthetic-16-3-10-1000"  # 1,000 training, 250 test images (CIFAR: 50,000/10,000)
    print("\n## clean training metrics: epoch time with / without (the runner, resnet20, "
          f"{dataset}, batch 32, K=4, 3 epochs; epoch 0 left out: it compiles)")
    walls: dict[str, list[float]] = {"test": [], "0": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for size in ("test", 0) if repeat % 2 == 0 else (0, "test"):
                spec = Spec(name=f"eval-{size}-{repeat}", models=("resnet20",),
                            datasets=(dataset,), batch_sizes=(32,),
                            learning_rates=(0.01, 0.02, 0.03, 0.04), epochs=3,
                            training=Training(train_eval_size=size))
                options = RunOptions(pack_size=4, data_dir=tmp)
                store = Store(Path(tmp) / f"{spec.name}.db")
                study = store.create_study(spec.name, spec.to_dict(), spec.cells(),
                                           environment_facts())
                ds = train_lib.prepare_dataset(dataset, options)
                claim = store.claim_pack(study, worker_name(), 4)
                train_lib.train_pack(store, claim, spec, ds, options)
                walls[str(size)] += [r["wall_seconds"] for r in store.epochs_of(claim.cell_ids[0])
                                     if r["epoch"] > 0]
                store.close()
    on, off = statistics.median(walls["test"]), statistics.median(walls["0"])
    share = on / off - 1
    print(f"epoch seconds (median of {len(walls['0'])}): without {off:.2f} "
          f"(min {min(walls['0']):.2f}, max {max(walls['0']):.2f}), with {on:.2f} "
          f"(min {min(walls['test']):.2f}, max {max(walls['test']):.2f}): "
          f"overhead {100 * share:+.1f} %")
    print(f"at CIFAR's proportions (a test set 1/5 of the training set, here 1/4): about "
          f"{100 * share * 0.8:+.1f} %")


def bench_autotune(args):
    """How long model.fit takes to return after its last batch, with tf.data autotuning
    on (TensorFlow's default) and off (kerasgen's pipeline_options)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from kerasgen import data
    from kerasgen.models import build_model

    if keras.backend.backend() != "tensorflow":
        return
    n, batch, epochs = 2048, 32, 3
    rng = np.random.default_rng(0)
    ds = data.Dataset("bench", rng.random((n, 8, 8, 3), dtype=np.float32),
                      rng.integers(0, 10, n), rng.random((256, 8, 8, 3), dtype=np.float32),
                      rng.integers(0, 10, 256), 10, (0.5,) * 3, (0.25,) * 3, augment=True)

    class LastBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.at = time.perf_counter()

    print(f"\n## model.fit with tf.data autotuning on vs off: ResNet-8, {n} images 8x8, "
          f"batch {batch}, {epochs} epochs, test set each epoch; 'tail' = fit's return "
          "after its last training batch")
    print(f"{'autotune':9s} {'fit s (median)':>15s} {'tail s (median)':>16s}  runs")
    results: dict = {True: [], False: []}
    for _ in range(3):
        for autotune in (True, False):
            keras.utils.set_random_seed(0)
            model = build_model("resnet8", 10, (8, 8, 3))
            model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(
                from_logits=True), metrics=["accuracy"], jit_compile=False)
            options = data.pipeline_options()
            options.autotune.enabled = autotune
            train = data.train_dataset(ds, 0, batch, 0, epochs).with_options(options)
            test = data.test_dataset(ds).with_options(options)
            marker = LastBatch()
            started = time.perf_counter()
            model.fit(train, steps_per_epoch=data.steps_per_epoch(n, batch), epochs=epochs,
                      validation_data=test, verbose=0, shuffle=False, callbacks=[marker])
            ended = time.perf_counter()
            results[autotune].append((ended - started, ended - marker.at))
            keras.backend.clear_session()
    for autotune in (True, False):
        fits = [f for f, _ in results[autotune]]
        tails = [t for _, t in results[autotune]]
        print(f"{'on' if autotune else 'off':9s} {statistics.median(fits):15.2f} "
              f"{statistics.median(tails):16.2f}  " + ", ".join(f"{f:.2f}" for f in fits))
    on = statistics.median(f for f, _ in results[True])
    off = statistics.median(f for f, _ in results[False])
    print(f"off / on = {off / on:.2f} (fit time)")
    _ = tf


def onednn_ab(args):
    """TF_ENABLE_ONEDNN_OPTS is read once, at import: each figure comes from a fresh
    process, and the two settings alternate (0, 1, 0, 1, ...) so machine noise hits both."""
    import re
    import subprocess

    print(f"\n## oneDNN: TF_ENABLE_ONEDNN_OPTS=0 vs =1 ({args.repeats} alternating pairs of "
          "fresh processes, branches, jit off)")
    figures: dict = {}
    for _ in range(args.repeats):
        for value in ("0", "1"):
            env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": value}
            out = subprocess.run(
                [sys.executable, __file__, "--model", args.model, "--batch-size",
                 str(args.batch_size), "--copies", "1,8", "--layouts", "branches", "--jit",
                 "off", "--steps", str(args.steps), "--repeats", "1", "--input-shape",
                 args.input_shape, "--training-only"], env=env, capture_output=True, text=True)
            for line in out.stdout.splitlines():
                match = re.match(r"branches\s+off\s+(\d+)\s+([\d.]+)\s+([\d.]+)", line)
                if match:
                    figures.setdefault((value, int(match.group(1))), []).append(
                        float(match.group(3)))
    for k in (1, 8):
        if ("0", k) in figures and ("1", k) in figures:
            off, on = (statistics.median(figures[(v, k)]) for v in ("0", "1"))
            print(f"K={k}: median {off:.1f} (off) vs {on:.1f} (on) model-images/s -> "
                  f"on/off = {on / off:.2f}   (off: "
                  + ", ".join(f"{r:.0f}" for r in figures[("0", k)]) + "; on: "
                  + ", ".join(f"{r:.0f}" for r in figures[("1", k)]) + ")")


def projection(results, args, shape):
    from kerasgen.spec import preset

    if not results:
        return
    flops = train_flops_per_image(args.model, shape)
    jit_best = {}
    for (_layout, _jit, k), rate in results.items():
        jit_best[k] = max(jit_best.get(k, 0.0), rate)
    unpacked = jit_best.get(1)
    packed_k = max(jit_best)
    packed = jit_best[packed_k]
    if unpacked is None:
        return
    spec = preset("paper")
    print(f"\n## projection: the paper preset ({spec.cell_count} cells x {PAPER_EPOCHS} epochs x "
          f"{PAPER_IMAGES:,} images) on this device")
    print(f"measured on {args.model}: {flops / 1e9:.3f} GFLOP per training image; "
          f"{unpacked * flops / 1e9:.1f} GFLOP/s unpacked (K=1), "
          f"{packed * flops / 1e9:.1f} GFLOP/s packed (K={packed_k}); other networks scaled "
          "by FLOPs (an extrapolation: small batches and deep narrow nets run below it)")
    cells_per_model = spec.cell_count // len(spec.models)
    print(f"{'network':10s} {'GFLOP/img':>10s} {'cells':>6s} {'PFLOP':>9s} "
          f"{'unpacked h':>11s} {'packed h':>9s}")
    total_flop = total_unpacked = total_packed = 0.0
    for model in spec.models:
        f = train_flops_per_image(model, (32, 32, 3))
        flop = f * PAPER_IMAGES * PAPER_EPOCHS * cells_per_model
        hours_unpacked = flop / (unpacked * flops) / 3600
        hours_packed = flop / (packed * flops) / 3600
        total_flop += flop
        total_unpacked += hours_unpacked
        total_packed += hours_packed
        print(f"{model:10s} {f / 1e9:10.3f} {cells_per_model:6d} {flop / 1e15:9.0f} "
              f"{hours_unpacked:11.0f} {hours_packed:9.0f}")
    steps = sum(-(-PAPER_IMAGES // b) for b in spec.batch_sizes) * PAPER_EPOCHS * \
        len(spec.learning_rates) * len(spec.models) * len(spec.datasets)
    print(f"{'total':10s} {'':10s} {spec.cell_count:6d} {total_flop / 1e15:9.0f} "
          f"{total_unpacked:11.0f} {total_packed:9.0f}   ({total_flop:.1e} FLOP, "
          f"{steps / 1e6:.0f} million SGD steps unpacked)")


def main() -> int:
    args = parse_args()
    shape = tuple(int(s) for s in args.input_shape.split(","))
    for line in machine_lines():
        print(f"# {line}")
    results = bench_training(args, shape)
    if args.training_only:
        return 0
    if args.onednn_ab:
        onednn_ab(args)
    if not args.skip_autotune:
        bench_autotune(args)
    if not args.skip_pipeline:
        k1 = [r for (layout, jit, k), r in results.items() if k == 1]
        bench_pipeline(args, shape, max(k1) if k1 else None)
    if not args.skip_overhead:
        bench_overhead(args)
    if not args.skip_train_eval:
        bench_train_eval(args)
    if not args.skip_projection:
        projection(results, args, shape)
    return 0


if __name__ == "__main__":
    sys.exit(main())
