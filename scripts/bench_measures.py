"""Seconds per generalization measure per run on the demo's networks, projected to the
paper's ResNet-110 and VGG-19 (CIFAR-10) on this machine and on one GPU.

For each demo network (ResNet-8 and VGG-11 at width 16 on the 8x8 digits): the measures
of ``kerasgen measures`` at its defaults (256 examples), each timed ``--repeats`` times
after an untimed warm-up (tracing), median reported. Weights: a run's final weights
from ``--db`` (a demo store: ``kerasgen demo``) when given, else the network's initial
weights (the times differ little: the same passes run either way).

Projection (``kerasgen.measures.cost``): a measure's time scales with the parameters
(norms) or the multiply-adds per example (everything that runs the network: the number
of examples stays 256). On this CPU at paper size: demo seconds x that ratio x (the
demo network's training FLOP rate here / the paper network's), both rates measured here
(one forward and backward pass of a batch); on one GPU: demo seconds x the ratio x (the
demo network's rate here / the GPU's rate), the GPU's rate an H200 at ``--gpu-fraction``
of its fp32 peak (67 TFLOP/s; the convention of scripts/bench_checkpoint.py), i.e. each
measure assumed to run at the device's training rate. Practical: at most 60 s per run on
one GPU (the paper's 1,600 runs in about a day).

The last lines project the measures on the demo's 64 runs (32 per network; tr(C) and
B_simple share one per-example gradient pass, half its time each, as in the command).

    python scripts/bench_measures.py [--db data/demo.db] [--repeats 3] [--gpu-fraction 0.25]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

H200_FP32_TFLOPS = 67.0
DEMO = (("resnet8", "resnet110"), ("vgg11_w16", "vgg19"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default=None, help="a demo store whose final weights to use")
    p.add_argument("--data-dir", default="data", help="where data sets are")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measure")
    p.add_argument("--gpu-fraction", type=float, default=0.25,
                   help="share of the H200's fp32 peak a measure runs at (a stated guess)")
    p.add_argument("--rate-batch", type=int, default=32,
                   help="batch of the forward-backward pass that measures FLOP rates")
    p.add_argument("--measures", nargs="+", default=["default"], help="which measures")
    p.add_argument("--no-paper-rate", action="store_true",
                   help="do not build the paper's networks to measure their FLOP rate here "
                        "(the CPU projection then assumes the demo network's rate)")
    return p.parse_args(argv)


def flop_rate(model_name: str, shape, batch: int, repeats: int = 3) -> float:
    """Training FLOP/s of one forward and backward pass of ``batch`` images here."""
    import numpy as np
    import tensorflow as tf

    from kerasgen.measures.cost import model_cost
    from kerasgen.models import build_model

    model = build_model(model_name, num_classes=10, input_shape=shape)
    x = tf.constant(np.random.default_rng(0).normal(size=(batch, *shape)).astype("float32"))
    y = tf.constant(np.zeros(batch, dtype="int32"))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            logits = model(x, training=False)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        return tape.gradient(loss, model.trainable_variables)

    step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return 6 * model_cost(model_name, shape)["macs"] * batch / statistics.median(times)


def time_measures(model_name: str, names, args) -> dict:
    """measure -> median seconds per run (and b_simple_init's per group)."""
    import numpy as np

    from kerasgen.checkpoints import default_root, group_weights_path, load_arrays
    from kerasgen.measures.network import NetworkMeasures
    from kerasgen.measures.runs import MeasureConfig, _at_initial, _examples, _measure
    from kerasgen.models import build_model
    from kerasgen.options import RunOptions
    from kerasgen.train import prepare_dataset

    config = MeasureConfig()
    ds = prepare_dataset("digits", RunOptions(data_dir=args.data_dir))
    x, y, _ = _examples(ds, 0, "test", config)
    model = build_model(model_name, num_classes=ds.num_classes, input_shape=ds.input_shape)
    initial = model.get_weights()
    if args.db:
        from kerasgen.checkpoints import load_cell_weights, study_files
        from kerasgen.store import load_results

        frame = load_results(args.db)
        row = frame[(frame["model"] == model_name) & (frame["status"] == "done")].iloc[0]
        model.set_weights(load_cell_weights(study_files(args.db, row["study"]),
                                            int(row["cell_id"])))
        path = group_weights_path(default_root(args.db), model_name, "digits", int(row["seed"]))
        if path.exists():
            initial = load_arrays(path)
    net = NetworkMeasures(model, x, y, chunk=config.chunk, pex_chunk=config.pex_chunk)
    out = {}
    shared = [n for n in ("noise_trace", "b_simple") if n in names]
    if shared:  # one per-example gradient pass gives both, as kerasgen measures runs it
        runs = []
        for _ in range(args.repeats + 1):
            started = time.perf_counter()
            _measure(model, net, shared, config, initial, None)
            runs.append(time.perf_counter() - started)
        for name in shared:
            out[name] = statistics.median(runs[1:]) / len(shared)
            print(f"  {model_name} {name}: {out[name]:.3f} s (its share of one pass)", flush=True)
    for name in names:
        if name in shared:
            continue
        if name == "b_simple_init":
            runs = []
            for _ in range(args.repeats + 1):
                started = time.perf_counter()
                _at_initial(model, net, initial, "—")
                runs.append(time.perf_counter() - started)
            out[name] = statistics.median(runs[1:])
            continue
        runs = []
        for _ in range(args.repeats + 1):
            started = time.perf_counter()
            _measure(model, net, [name], config, initial, None)
            runs.append(time.perf_counter() - started)
        out[name] = statistics.median(runs[1:])
        print(f"  {model_name} {name}: {out[name]:.3f} s", flush=True)
    del np
    return {name: out[name] for name in names}


def main(argv=None) -> int:
    args = parse_args(argv)
    from kerasgen.measures.catalogue import check_measure_names
    from kerasgen.measures.cost import PRACTICAL_GPU_SECONDS, model_cost, scale_factor

    names = check_measure_names(args.measures)
    gpu_rate = args.gpu_fraction * H200_FP32_TFLOPS * 1e12
    print(f"# bench_measures: {', '.join(names)}; {args.repeats} repeats, median; "
          f"weights {'of ' + args.db if args.db else 'at initialisation'}")
    rows, rates, totals = {}, {}, {}
    for demo, paper in DEMO:
        small = model_cost(demo, (8, 8, 1))
        large = model_cost(paper, (32, 32, 3))
        rates[demo] = flop_rate(demo, (8, 8, 1), 256)
        rates[paper] = (rates[demo] if args.no_paper_rate
                        else flop_rate(paper, (32, 32, 3), args.rate_batch))
        print(f"  training FLOP rate here: {demo} {rates[demo] / 1e9:.2f} GFLOP/s (batch 256), "
              f"{paper} {rates[paper] / 1e9:.2f} GFLOP/s "
              + ("(not measured: --no-paper-rate)" if args.no_paper_rate
                 else f"(batch {args.rate_batch})"), flush=True)
        seconds = time_measures(demo, names, args)
        for name, sec in seconds.items():
            factor = scale_factor(name, small, large)
            cpu = sec * factor * rates[demo] / rates[paper]
            gpu = sec * factor * rates[demo] / gpu_rate
            rows.setdefault(name, {})[demo] = (sec, cpu, gpu)
        per_run = sum(s for n, s in seconds.items() if n != "b_simple_init")
        totals[demo] = 32 * per_run + 2 * seconds.get("b_simple_init", 0.0)
    print()
    print("| measure | ResNet-8 s | VGG-11-w16 s | ResNet-110 CPU s | ResNet-110 GPU s | "
          "VGG-19 CPU s | VGG-19 GPU s | practical at paper size on one GPU |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        r, v = rows[name]["resnet8"], rows[name]["vgg11_w16"]
        practical = max(r[2], v[2]) <= PRACTICAL_GPU_SECONDS
        note = " (per model, data set and seed)" if name == "b_simple_init" else ""
        print(f"| {name}{note} | {r[0]:.3f} | {v[0]:.3f} | {r[1]:.3g} | {r[2]:.3g} | "
              f"{v[1]:.3g} | {v[2]:.3g} | {'yes' if practical else 'no'} |")
    total = sum(totals.values())
    print(f"\nGPU: an H200 at {args.gpu_fraction:.0%} of {H200_FP32_TFLOPS:g} TFLOP/s fp32 "
          f"(a stated guess); practical: <= {PRACTICAL_GPU_SECONDS:g} s per run.")
    print(f"The measures asked for on the demo's 64 runs (32 per network, b_simple_init once "
          f"per network and seed), computing alone: {total / 60:.1f} min on this machine "
          f"(ResNet-8 {totals['resnet8'] / 60:.1f}, VGG-11-w16 {totals['vgg11_w16'] / 60:.1f}),"
          f" plus start-up and data loading.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
