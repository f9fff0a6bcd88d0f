"""Training throughput of packed cells: the step, measured side by side in one run.

For one network and batch size: model-images per second (K copies x images per second)
of the training step, for K = 1, 2, 4, 8, 20 packed copies in both layouts (K branches in
one graph, or the copies fused into grouped convolutions), with XLA (jit_compile) on and
off; beside them, in the same run, a bare single-network ``keras.Model.fit`` of the same
network and batch, and the runner end to end (a short study through ``kerasgen run`` in a
subprocess, its rate read from the store's epoch times). Each figure's min / median / max
over interleaved repeats and its ratio to K = 1 of the same layout and compile mode.
Then oneDNN on/off, tf.data autotuning, the input pipeline alone next to the step it
feeds, the share of epoch time in the runner's callbacks (checkpoint + SQLite), the epoch
time with and without the clean training metrics, and a projection of the paper preset's
device-hours from the measured FLOP rates.

    .venv/bin/python scripts/bench_train.py --model resnet20 --batch-size 16
    .venv/bin/python scripts/bench_train.py --copies 1,4,8 --repeats 3 --skip-projection
    .venv/bin/python scripts/bench_train.py --model resnet110 --batch-size 16 --copies 1,20 \
        --layouts branches,fused --jit on          # on a GPU (KERAS_BACKEND=jax works too)

How the step is timed: every configuration is built and warmed up first (compile, and
XLA's JIT); then each repeat runs one ``fit`` per configuration in turn (interleaved, so a
slow phase of a shared machine hits all of them alike), sized to last about ``--seconds``.
A callback stamps the end of every batch, and the rate is taken from the end of the first
batch to the end of the last: the fit call's fixed cost (iterator, callbacks, the first
step) is left out. The column ``whole fit`` is what timing the whole call gives (what
this script reported before, dominated by that fixed cost for short fits).

The steady state: short fits on arrays compare configurations fairly but read below what
a long study runs at (the fit's warm-up, numpy feeding). After them, ``--long-repeats``
rounds of one long fit (``--long-seconds``, 12 s) of the bare fit and of each K in
``--long-copies``, fed as the runner feeds a study (``device_check.long_fit``:
kerasgen.data's tf.data stream under TensorFlow, its numpy generator under JAX, augmented),
print the columns ``long`` and ``long/short``; the projection uses them. ``--torch PY``
runs the same network in a plain PyTorch loop (``scripts/torch_reference.py``, under that
Python) after each round of long fits and prints the one-cell rates against it.

    .venv/bin/python scripts/bench_train.py --copies 1,4,20 --torch /opt/torch/bin/python
    KERAS_BACKEND=jax .venv/bin/python scripts/bench_train.py --copies 1,4,20 --jit on

The runner end to end: ``kerasgen run`` trains a study of ``--runner-images`` synthetic
images (augmented, as CIFAR) for 4 epochs, the test set evaluated only after the last;
its rate is K x images / ``wall_seconds`` of epochs 1 and 2: the training steps fed by
the runner's tf.data pipeline plus its callbacks (per-step claim check, a checkpoint and
the SQLite rows each epoch), no evaluation, no compile (epoch 0).

The training figures come from this one process, oneDNN as ``kerasgen run`` sets it and
TensorFlow's op determinism off (``--determinism`` turns it on, as the runner does; Keras
then compiles every model without XLA, whatever ``jit_compile`` says, so the XLA rows
would repeat the others; ``--determinism-ab`` measures what determinism costs). Absolute
numbers on a shared 2-core machine are noisy (say so).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PAPER_IMAGES = 50_000
PAPER_EPOCHS = 200
RUNNER_EPOCHS = 4  # epoch 0 compiles, the last evaluates: epochs 1..2 are timed


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--copies", default="1,2,4,8,20")
    p.add_argument("--layouts", default="branches,fused")
    p.add_argument("--jit", default="off,on", help="off, on, or off,on")
    p.add_argument("--seconds", type=float, default=4.0,
                   help="length of one timed fit (its steps sized from the warm-up)")
    p.add_argument("--steps", type=int, default=0,
                   help="timed steps per repeat (default 0: as many as fill --seconds)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--input-shape", default="32,32,3")
    p.add_argument("--skip-bare", action="store_true",
                   help="no bare single-network keras.Model.fit beside the packs")
    p.add_argument("--runner-copies", default="1,4",
                   help="pack sizes trained end to end through kerasgen run ('' = none)")
    p.add_argument("--runner-images", type=int, default=1600)
    p.add_argument("--long-seconds", type=float, default=12.0,
                   help="after the short fits, long fits this long, fed as the runner feeds "
                        "a study (kerasgen.data's stream, augmented): the steady state "
                        "beside the short figure (0: none)")
    p.add_argument("--long-copies", default="1",
                   help="the K whose configurations get long fits (the bare fit always)")
    p.add_argument("--long-repeats", type=int, default=2)
    p.add_argument("--torch", metavar="PY",
                   help="a Python with torch: the same network in a plain PyTorch loop "
                        "(scripts/torch_reference.py), interleaved with the long fits")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="torch.set_num_threads for the reference (0: torch's default)")
    p.add_argument("--skip-pipeline", action="store_true")
    p.add_argument("--skip-overhead", action="store_true")
    p.add_argument("--skip-train-eval", action="store_true")
    p.add_argument("--skip-projection", action="store_true")
    p.add_argument("--skip-autotune", action="store_true")
    p.add_argument("--onednn-ab", action="store_true",
                   help="also rerun the K=1 and K=8 branch figures in subprocesses with "
                        "TF_ENABLE_ONEDNN_OPTS=0 and =1 (it is read once, at import)")
    p.add_argument("--determinism", action="store_true",
                   help="turn TensorFlow's op determinism on in this process, as the runner "
                        "does (Keras then runs every jit_compile=True model without XLA)")
    p.add_argument("--determinism-ab", action="store_true",
                   help="also rerun the K=1 and K=8 branch figures in subprocesses with op "
                        "determinism off and on")
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


def train_flops_per_image(model: str, shape) -> float:
    """Training FLOP per image of one network (see scripts/device_check.py)."""
    from device_check import train_flops_per_image as flops

    return flops(model, shape)


def bench_training(args, shape, between_repeats=None):
    """Every configuration is built and warmed up first; then each repeat times one fit of
    every configuration in turn (interleaved), so a slow phase of a shared machine slows
    all of them alike instead of biasing whichever ran during it. ``between_repeats(r)``
    runs after each repeat (the runner end to end, interleaved with the rest)."""
    import math

    import device_check as dc

    copies = [int(k) for k in args.copies.split(",")]
    layouts = args.layouts.split(",")
    jits = [j == "on" for j in args.jit.split(",")]
    plan = [dc.Config(args.model, "bare", jit, 1) for jit in jits if not args.skip_bare]
    plan += [dc.Config(args.model, layout, jit, k) for layout in layouts for jit in jits
             for k in copies]
    print(f"\n## training step: {args.model}, batch {args.batch_size}, {args.repeats} "
          f"interleaved repeats of one fit each (~{args.seconds:g} s; rate from per-batch "
          "timestamps, first batch left out); model-images/s = copies x images/s", flush=True)
    configs = []
    for config in plan:
        try:
            started = time.perf_counter()
            config.net = dc.build(config, shape)
            _, _, step = dc.timed_fit(config.net, args.batch_size, 4, config.copies, shape)
            config.build_s, config.step_s = time.perf_counter() - started, step
            config.steps = args.steps + 1 if args.steps else int(max(10, math.ceil(
                args.seconds / step)))
            config.status = "measured"
            configs.append(config)
            print(f"built {config.label} in {config.build_s:.0f} s ({step:.3f} s per step)",
                  flush=True)
        except Exception as exc:  # report and go on (e.g. a layout a backend lacks)
            config.status, config.note = "failed", f"{type(exc).__name__}: {str(exc)[:120]}"
            print(f"{config.label}: failed: {config.note}", flush=True)
    print(f"(built and compiled {len(configs)} configurations)", flush=True)
    for repeat in range(args.repeats):
        for config in configs:
            rate, overhead, step = dc.timed_fit(config.net, args.batch_size, config.steps,
                                                config.copies, shape)
            config.rates.append(rate)
            config.fit_overhead_s.append(overhead)
            whole = step * config.steps + overhead
            config.whole = getattr(config, "whole", []) + [
                config.copies * args.batch_size * config.steps / whole]
        if between_repeats is not None:
            between_repeats(repeat)
    torch_rates = long_fits(args, shape, configs)
    print(f"{'layout':9s} {'jit':4s} {'K':>3s} {'min':>8s} {'median':>8s} {'max':>8s} "
          f"{'x K=1':>6s} {'x bare':>6s} {'steps':>5s} {'fit cost s':>10s} {'whole fit':>9s} "
          f"{'long':>8s} {'long/short':>10s}")
    results = {}
    for config in configs:
        med = statistics.median(config.rates)
        base = next((c for c in configs if c.layout == config.layout and c.jit == config.jit
                     and c.copies == 1), None)
        bare = next((c for c in configs if c.layout == "bare" and c.jit == config.jit), None)
        ratio = med / statistics.median(base.rates) if base else float("nan")
        vs_bare = med / statistics.median(bare.rates) if bare else float("nan")
        results[(config.layout, config.jit, config.copies)] = med
        long = statistics.median(config.longs) if getattr(config, "longs", None) else None
        print(f"{config.layout:9s} {'on' if config.jit else 'off':4s} {config.copies:3d} "
              f"{min(config.rates):8.1f} {med:8.1f} {max(config.rates):8.1f} {ratio:6.2f} "
              f"{vs_bare:6.2f} {config.steps:5d} {statistics.median(config.fit_overhead_s):10.2f} "
              f"{statistics.median(config.whole):9.1f} "
              + (f"{long:8.1f} {long / med:10.2f}" if long else f"{'-':>8s} {'-':>10s}"),
              flush=True)
        if long:
            results[("long", config.layout, config.jit, config.copies)] = long
        print(f"RESULT {config.layout} {'on' if config.jit else 'off'} {config.copies} {med:.3f}",
              file=sys.stderr, flush=True)
    for config in configs:
        config.net = None
    if torch_rates:
        report_torch(args, torch_rates, results)
    return results


def long_fits(args, shape, configs) -> list[float]:
    """``--long-repeats`` rounds of one long fit per configuration of the bare fit and the
    K in ``--long-copies`` (``device_check.long_fit``: fed by kerasgen.data's stream as the
    runner feeds a study, its steps sized to ``--long-seconds``), each round followed by a
    PyTorch reference run when ``--torch`` is given. Returns the reference's rates."""
    import device_check as dc

    if args.long_seconds <= 0:
        return []
    wanted = {int(k) for k in args.long_copies.split(",") if k.strip()}
    chosen = [c for c in configs if c.layout == "bare" or c.copies in wanted]
    torch_rates: list[float] = []
    print(f"long fits: {len(chosen)} configurations x {args.long_repeats} rounds of "
          f"~{args.long_seconds:g} s" + (", each round then PyTorch" if args.torch else ""),
          flush=True)
    for _ in range(args.long_repeats):
        for config in chosen:
            rate, _, steps = dc.long_fit(config.net, args.batch_size, args.long_seconds,
                                         config.step_s, config.copies, shape)
            config.longs = getattr(config, "longs", []) + [rate]
        if args.torch:
            torch_rates.append(torch_reference(args, shape))
    return torch_rates


def torch_reference(args, shape) -> float:
    """One run of scripts/torch_reference.py under ``--torch``'s Python: images/s."""
    import json

    command = [args.torch, str(Path(__file__).resolve().parent / "torch_reference.py"),
               "--model", args.model, "--batch-size", str(args.batch_size),
               "--input-shape", ",".join(map(str, shape)), "--seconds", str(args.long_seconds),
               "--threads", str(args.torch_threads)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench_train.py: the PyTorch reference failed ({proc.returncode}): "
                         f"{proc.stderr[-600:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  PyTorch {out['torch']}: {out['rate']:.1f} images/s ({out['steps']} steps, "
          f"{out['threads']} threads, {out['parameters']:,} parameters)", flush=True)
    return float(out["rate"])


def report_torch(args, torch_rates: list[float], results: dict) -> None:
    import keras

    ref = statistics.median(torch_rates)
    print(f"\n## PyTorch reference: {args.model}, batch {args.batch_size}, a plain loop on "
          f"pre-made batches (scripts/torch_reference.py; no input pipeline), "
          f"{len(torch_rates)} runs interleaved with the long fits: median {ref:.1f} "
          f"images/s (" + ", ".join(f"{r:.0f}" for r in torch_rates) + ")")
    backend = keras.backend.backend()
    for (_, layout, jit, _k), rate in sorted(
            (k, v) for k, v in results.items() if k[0] == "long" and k[3] == 1):
        print(f"kerasgen on {backend}, {layout} XLA {'on' if jit else 'off'}, one cell, long "
              f"fit: {rate:.1f} model-images/s = {rate / ref:.2f}x PyTorch")


def runner_spec_toml(name: str, args, shape, copies: int) -> str:
    lrs = ", ".join(f"{0.01 * (i + 1):.2f}" for i in range(copies))
    dataset = f"synthetic-{shape[0]}-{shape[2]}-10-{args.runner_images}"
    return (f'name = "{name}"\nmodels = ["{args.model}"]\ndatasets = ["{dataset}"]\n'
            f"batch_sizes = [{args.batch_size}]\nlearning_rates = [{lrs}]\nseeds = [0]\n"
            f"epochs = {RUNNER_EPOCHS}\n\n[training]\naugment = true\n"
            f"test_every = {RUNNER_EPOCHS}\n")


def run_runner(args, shape, copies: int, repeat: int, tmp: Path, figures: dict) -> None:
    """One study through ``kerasgen run`` (a subprocess, as a user runs it); appends
    the model-images/s of its epochs 1..RUNNER_EPOCHS-2 to ``figures[copies]``."""
    from kerasgen.store import load_epochs

    name = f"runner-k{copies}-r{repeat}"
    spec = tmp / f"{name}.toml"
    spec.write_text(runner_spec_toml(name, args, shape, copies))
    db = tmp / f"{name}.db"
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "kerasgen", "run", str(spec), "--db", str(db),
                           "--data-dir", str(tmp), "--pack-size", str(copies),
                           "--progress", "plain"],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        print(f"runner K={copies}: failed ({proc.returncode}): {proc.stderr[-400:]}", flush=True)
        return
    epochs = load_epochs(db).groupby("epoch")["wall_seconds"].first()
    timed = [copies * args.runner_images / epochs[e] for e in range(1, RUNNER_EPOCHS - 1)]
    figures.setdefault(copies, []).extend(timed)
    figures.setdefault(("process", copies), []).append(wall)


def report_runner(args, figures: dict, results: dict) -> None:
    from kerasgen.packing import resolve_jit_compile, resolve_layout

    layout, jit = resolve_layout("auto"), resolve_jit_compile("auto")
    print(f"\n## the runner end to end: kerasgen run, {args.model}, batch {args.batch_size}, "
          f"{args.runner_images} augmented synthetic images, --layout auto ({layout}) "
          f"--jit-compile auto ({'on' if jit else 'off'}); model-images/s from the store's "
          f"wall_seconds of epochs 1..{RUNNER_EPOCHS - 2} (training + callbacks; no "
          f"evaluation, no compile) x {args.repeats} repeats")
    print(f"{'K':>3s} {'min':>8s} {'median':>8s} {'max':>8s} {'x K=1':>6s} "
          f"{'/ in-process step':>17s} {'process s':>9s}")
    base = None
    for copies in sorted(k for k in figures if isinstance(k, int)):
        rates = figures[copies]
        med = statistics.median(rates)
        base = base or (med if copies == 1 else None)
        step = results.get((layout, jit, copies))
        print(f"{copies:3d} {min(rates):8.1f} {med:8.1f} {max(rates):8.1f} "
              f"{med / base if base else float('nan'):6.2f} "
              f"{med / step if step else float('nan'):17.2f} "
              f"{statistics.median(figures[('process', copies)]):9.0f}", flush=True)


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


def ab_processes(args, title: str, variants: dict) -> None:
    """A setting read once per process (an environment variable, a process-wide flag):
    each figure comes from a fresh process, and the variants alternate (a, b, a, b, ...)
    so machine noise hits both. ``variants``: label -> (extra environment, extra args)."""
    import re

    print(f"\n## {title} ({args.repeats} alternating pairs of fresh processes, branches, "
          "jit off)")
    figures: dict = {}
    for _ in range(args.repeats):
        for label, (env_extra, argv_extra) in variants.items():
            out = subprocess.run(
                [sys.executable, __file__, "--model", args.model, "--batch-size",
                 str(args.batch_size), "--copies", "1,8", "--layouts", "branches", "--jit",
                 "off", "--steps", str(args.steps), "--seconds", str(args.seconds),
                 "--repeats", "1", "--input-shape", args.input_shape, "--skip-bare",
                 "--training-only", *argv_extra], env={**os.environ, **env_extra},
                capture_output=True, text=True)
            for line in out.stderr.splitlines():
                match = re.match(r"RESULT branches off (\d+) ([\d.]+)$", line)
                if match:
                    figures.setdefault((label, int(match.group(1))), []).append(
                        float(match.group(2)))
    a, b = list(variants)
    for k in (1, 8):
        if (a, k) in figures and (b, k) in figures:
            fa, fb = (statistics.median(figures[(v, k)]) for v in (a, b))
            print(f"K={k}: median {fa:.1f} ({a}) vs {fb:.1f} ({b}) model-images/s -> "
                  f"{b}/{a} = {fb / fa:.2f}   ({a}: "
                  + ", ".join(f"{r:.0f}" for r in figures[(a, k)]) + f"; {b}: "
                  + ", ".join(f"{r:.0f}" for r in figures[(b, k)]) + ")")


def onednn_ab(args):
    """TF_ENABLE_ONEDNN_OPTS is read once, at import."""
    ab_processes(args, "oneDNN: TF_ENABLE_ONEDNN_OPTS=0 vs =1",
                 {"off": ({"TF_ENABLE_ONEDNN_OPTS": "0"}, []),
                  "on": ({"TF_ENABLE_ONEDNN_OPTS": "1"}, [])})


def determinism_ab(args):
    """TensorFlow's op determinism is process-wide (the runner turns it on)."""
    ab_processes(args, "op determinism off vs on (the runner's setting)",
                 {"off": ({}, []), "on": ({}, ["--determinism"])})


def projection(results, args, shape):
    from kerasgen.spec import preset

    short = {k: v for k, v in results.items() if k[0] != "long"}
    # The steady state: a configuration's long fit, else its short figure times the bare
    # fit's long/short ratio under the same XLA setting (the short fits read low).
    steady = {}
    for (layout, jit, k), rate in short.items():
        bare_long, bare_short = results.get(("long", "bare", jit, 1)), short.get(("bare", jit, 1))
        steady[(layout, jit, k)] = results.get(
            ("long", layout, jit, k), rate * (bare_long / bare_short if bare_long else 1.0))
    unpacked = max((r for (_, _, k), r in steady.items() if k == 1), default=None)
    packed_key = max((key for key in steady if key[2] > 1), key=steady.get, default=None)
    if unpacked is None or packed_key is None:
        return
    packed = steady[packed_key]
    flops = train_flops_per_image(args.model, shape)
    spec = preset("paper")
    print(f"\n## projection: the paper preset ({spec.cell_count} cells x {PAPER_EPOCHS} epochs x "
          f"{PAPER_IMAGES:,} images) on this device")
    print(f"measured on {args.model}: {flops / 1e9:.3f} GFLOP per training image; "
          f"{unpacked * flops / 1e9:.1f} GFLOP/s unpacked (best K=1), "
          f"{packed * flops / 1e9:.1f} GFLOP/s packed (best: {packed_key[0]}, XLA "
          f"{'on' if packed_key[1] else 'off'}, K={packed_key[2]}), at the steady state "
          "(long fits; a configuration without one: its short figure x the bare fit's "
          "long/short); other networks scaled by FLOPs (an extrapolation: small batches and "
          "deep narrow nets run below it)")
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
    from kerasgen import runtime

    runtime.set_onednn("auto")  # what kerasgen run does, before TensorFlow loads
    import keras

    if keras.backend.backend() == "tensorflow" and args.determinism:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()  # as the runner (train.py)
    for line in machine_lines():
        print(f"# {line}")
    print(f"# op determinism: {'on' if args.determinism else 'off'} in this process (the "
          "runner's: on; under TensorFlow Keras then drops XLA)")
    runner_copies = [int(k) for k in args.runner_copies.split(",") if k.strip()]
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        def runner_round(repeat):
            for k in runner_copies:
                run_runner(args, shape, k, repeat, Path(tmp), figures)

        use_runner = runner_copies and not args.training_only
        results = bench_training(args, shape, runner_round if use_runner else None)
    if args.training_only:
        return 0
    if figures:
        report_runner(args, figures, results)
    if args.onednn_ab:
        onednn_ab(args)
    if args.determinism_ab:
        determinism_ab(args)
    if not args.skip_autotune:
        bench_autotune(args)
    if not args.skip_pipeline:
        k1 = [r for key, r in results.items() if key[0] != "long" and key[-1] == 1]
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
