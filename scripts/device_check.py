"""Does packing pay on an accelerator? One script, one short run, one table.

On a machine with a GPU it measures, within a time budget (``--budget-seconds``, 420 by
default, imports and compiles included), the training step of ResNet-110 and VGG-19 at
batch 16 for K = 1, 4, 20 packed copies, in both layouts (``branches``: K sub-networks in
one graph; ``fused``: grouped convolutions), with XLA on and off, next to a bare
single-network ``keras.Model.fit`` of the same network; it prints model-images/s (K x
images/s; min / median / max over interleaved repeats), the ratio to K = 1 of the same
layout and XLA setting, and the device-hours of the paper preset projected from the best
rates. ``--json PATH`` writes the same table as JSON (to bring it back from a device run).

    KERAS_BACKEND=jax python scripts/device_check.py --json device_check.json
    python scripts/device_check.py --smoke        # CPU, tiny networks, < 3 minutes

Backend: ``KERAS_BACKEND`` when set; otherwise TensorFlow where TensorFlow imports and sees
a GPU, else JAX. Its imports are Keras, numpy and kerasgen's TensorFlow-free parts
(``kerasgen.packing``, ``kerasgen.models``, ``kerasgen.spec``), so it runs on a machine that
has JAX but neither TensorFlow nor Keras, from the Keras and kerasgen wheels alone
(``pip install --no-deps`` for kerasgen; see the README's "Speed" section).

How a rate is measured: each configuration is built and warmed up (one short fit: the
compile, and under JAX without XLA the first call of every op), then timed in rounds that
interleave all configurations (a slow phase of the machine hits them alike). A timed
round is one ``fit`` on in-memory arrays, its steps sized to last about ``--seconds``; a
callback stamps the end of every batch (Keras then reads the step's logs, so every step
has finished on the device, as in kerasgen's runner, whose callback also reads them), and
the rate is taken from the end of the first batch to the end of the last: the fit call's
fixed cost and the first step are left out. Short fits on arrays compare configurations
fairly but are not what a 200-epoch study runs in, so after the rounds each configuration
(bare fits first, always kept in the budget) gets one **long fit** (``--long-seconds``,
12 s), fed as the runner feeds a study (a data set in memory, augmented, through
``kerasgen.data.train_dataset`` under TensorFlow or its numpy generator otherwise), timed
the same way; the table prints it beside the short fits' median with their ratio, and the
projection uses the steady state: a configuration's own long fit, else its short figure
times the bare fit's long/short ratio (it says which). Configurations that would not fit in what is
left of the budget (predicted from the same layout's smaller K) are skipped and say so; a
configuration that fails (a layout a backend cannot run) says so in the table; the
script exits 1 if any failed.

``--smoke`` runs the same code on tiny networks (ResNet-8, an 8-wide VGG-11, 8x8 images,
K = 1, 2) on whatever device there is; the test suite runs it under JAX with TensorFlow
blocked (tests/test_device_check.py), so this script cannot rot.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STARTED = time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "kerasgen" / "__init__.py").exists():  # run from a checkout; else the wheel
    sys.path.insert(0, str(ROOT))

PAPER_IMAGES = 50_000  # CIFAR-10/100 training images
FIRST_SHARE = 0.2
"""A configuration with nothing to predict its cost from (the first of a network and XLA
setting) starts only while this share of the budget is left beyond the timed rounds."""
SMOKE = {"models": "resnet8,vgg11_w8", "xla_off_models": "vgg11_w8", "copies": "1,2",
         "input_shape": "8,8,3",
         "seconds": 0.1, "repeats": 2, "min_steps": 3, "warmup_steps": 2,
         "long_seconds": 0.3}
# The smoke test compiles 20 tiny training steps on a CPU: XLA's quickest settings halve
# its compile time (the figures are not a measurement anyway).
SMOKE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="resnet110,vgg19")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--copies", default="1,4,20")
    p.add_argument("--layouts", default="bare,branches,fused",
                   help="'bare' = a plain keras.Model.fit of one network (K = 1 only)")
    p.add_argument("--jit", default="on,off", help="XLA: on, off, or on,off (in this order)")
    p.add_argument("--xla-off-models", default=None,
                   help="the networks also measured with XLA off (default: all of --models)")
    p.add_argument("--input-shape", default="32,32,3")
    p.add_argument("--budget-seconds", type=float, default=420.0,
                   help="the whole run, imports and compiles included (default 420)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds (fewer if over budget)")
    p.add_argument("--seconds", type=float, default=1.0, help="length of one timed fit")
    p.add_argument("--min-steps", type=int, default=4, help="per timed fit (3 or more)")
    p.add_argument("--warmup-steps", type=int, default=3, help="per warm-up fit (2 or more)")
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--long-seconds", type=float, default=12.0,
                   help="after the timed rounds, one fit per configuration this long, fed "
                        "as the runner feeds a study (tf.data or numpy, augmented): the "
                        "steady state beside the short fits (0: none)")
    p.add_argument("--json", help="also write the table as JSON to this path")
    p.add_argument("--smoke", action="store_true",
                   help="tiny networks, K = 1, 2, 8x8 images: the same code in about a minute")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
        args.budget_seconds = max(args.budget_seconds, 600.0)
    args.min_steps, args.warmup_steps = max(3, args.min_steps), max(2, args.warmup_steps)
    return args


# ---------------------------------------------------------------- backend and device

def choose_backend() -> str:
    """KERAS_BACKEND if set; TensorFlow where it imports and sees a GPU; else JAX."""
    chosen = os.environ.get("KERAS_BACKEND")
    if chosen:
        return chosen
    import importlib.util

    try:
        if importlib.util.find_spec("tensorflow") is not None:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                return "tensorflow"
    except Exception:  # noqa: BLE001 - no usable TensorFlow: JAX it is
        pass
    try:
        has_jax = importlib.util.find_spec("jax") is not None
    except Exception:  # noqa: BLE001
        has_jax = False
    return "jax" if has_jax else "tensorflow"


def device_facts() -> dict:
    """The device this process trains on, in words, and whether it is an accelerator."""
    import keras

    from kerasgen.runtime import cpu_model

    backend = keras.backend.backend()
    facts = {"backend": backend, "keras": keras.__version__, "python": platform.python_version(),
             "host_cpus": os.cpu_count(), "platform": platform.platform(),
             "cpu": cpu_model(), "accelerator": False}
    if backend == "jax":
        import jax

        devices = jax.devices()
        kinds = ", ".join(sorted({d.device_kind for d in devices}))
        facts.update(jax=jax.__version__, accelerator=jax.default_backend() != "cpu",
                     device=f"{jax.default_backend()}: {kinds} x{len(devices)}")
    elif backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                 for g in gpus]
        facts.update(tensorflow=tf.__version__, accelerator=bool(gpus),
                     device=f"gpu: {', '.join(names)} x{len(gpus)}" if gpus else "cpu")
    else:
        facts["device"] = f"{backend} (a backend this script does not know)"
    if not facts["accelerator"]:
        facts["device"] += f" ({facts['cpu']}, {os.cpu_count()} cores)"
    facts["tensorflow_imported"] = "tensorflow" in sys.modules
    return facts


# ---------------------------------------------------------------- what is measured

def train_flops_per_image(model: str, shape=(32, 32, 3), num_classes: int = 10) -> float:
    """Training FLOP per image of one network (a registry name): forward multiply-adds of
    its convolutions and dense layer, x2 (FLOP per multiply-add), x3 (forward and
    backward). Counted from the architecture, without building it (building ResNet-110
    and VGG-19 under JAX on a CPU takes many seconds); the test suite checks it against
    the layers of the built networks."""
    from kerasgen.models.resnet import STAGE_FILTERS
    from kerasgen.models.vgg import CONFIGS
    from kerasgen.naming import check_model_name, model_width

    family, depth, _ = check_model_name(model)
    h, w, c = (int(s) for s in shape)
    macs = 0
    if family == "resnet":
        filters = STAGE_FILTERS
        macs += h * w * 9 * c * filters[0]
        c = filters[0]
        for stage, f in enumerate(filters):
            for block in range((depth - 2) // 6):
                stride = 2 if stage > 0 and block == 0 else 1
                if stride == 2:  # pad 1 + 3x3 valid, stride 2; never below 1 pixel
                    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
                macs += h * w * 9 * c * f + h * w * 9 * f * f
                if stride != 1 or c != f:
                    macs += h * w * c * f  # the 1x1 projection shortcut
                c = f
        macs += c * num_classes
    else:
        for item in CONFIGS[depth]:
            if item == "M":
                if h >= 2 and w >= 2:
                    h, w = h // 2, w // 2
                continue
            out = item * model_width(model) // 64
            macs += h * w * 9 * c * out
            c = out
        macs += h * w * c * num_classes
    return 3 * 2 * float(macs)


@dataclass
class Config:
    model: str
    layout: str  # bare, branches, fused
    jit: bool
    copies: int
    status: str = "pending"  # measured, failed, skipped
    note: str = ""
    build_s: float = 0.0  # build + compile + warm-up fit
    step_s: float = 0.0  # seconds per step, from the warm-up fit
    steps: int = 0  # per timed fit
    rates: list = field(default_factory=list)
    fit_overhead_s: list = field(default_factory=list)  # fit wall - its timed steps' share
    long_rate: float | None = None  # a long fit fed as the runner feeds it (steady state)
    long_whole_rate: float | None = None  # the same fit timed as a whole call
    long_steps: int = 0
    long_note: str = ""
    net: object = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.model} {self.layout} xla={'on' if self.jit else 'off'} K={self.copies}"

    def median(self):
        return statistics.median(self.rates) if self.rates else None


def clock():
    """A Keras callback that stamps the end of every training batch."""
    import keras

    class _Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    return _Clock()


_DATA: dict = {}


def batches(batch_size: int, steps: int, copies: int, shape):
    """Random images and labels for ``steps`` batches (drawn once, reused by every fit)."""
    import numpy as np

    n = batch_size * steps
    key = (tuple(shape), batch_size)
    if key not in _DATA or len(_DATA[key][1]) < n:
        rng = np.random.default_rng(0)
        _DATA[key] = (rng.standard_normal((n, *shape), dtype=np.float32),
                      rng.integers(0, 10, n).astype(np.int32))
    x, y = _DATA[key][0][:n], _DATA[key][1][:n]
    return x, ([y] * copies if copies > 1 else y)


_WEIGHTS: dict = {}


def build(config: Config, shape):
    import keras

    from kerasgen.models import build_model
    from kerasgen.packing import build_pack

    keras.utils.set_random_seed(0)
    if config.layout == "bare" or config.model not in _WEIGHTS:
        single = build_model(config.model, 10, shape)
        _WEIGHTS[config.model] = single.get_weights()
    if config.layout == "bare":
        single.compile(optimizer=keras.optimizers.SGD(0.001),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"], jit_compile=config.jit)
        return single
    data = type("Shape", (), {"num_classes": 10, "input_shape": tuple(shape)})
    rates = [0.001 * (k + 1) for k in range(config.copies)]
    return build_pack(config.model, data, rates, _WEIGHTS[config.model],
                      jit_compile=config.jit, layout=config.layout)


def timed_fit(net, batch_size: int, steps: int, copies: int, shape):
    """(model-images/s over steps 2..n, the fit's wall time beyond n such steps, seconds
    per step)."""
    x, ys = batches(batch_size, steps, copies, shape)
    stamp = clock()
    started = time.perf_counter()
    net.fit(x, ys, batch_size=batch_size, epochs=1, verbose=0, shuffle=False, callbacks=[stamp])
    wall = time.perf_counter() - started
    times = stamp.times
    if len(times) < 2:
        raise RuntimeError(f"only {len(times)} batch(es) stamped; need 2 or more")
    window = times[-1] - times[0]
    step = window / (len(times) - 1)
    rate = copies * batch_size * (len(times) - 1) / window
    return rate, wall - step * len(times), step


def runner_feed(batch_size: int, steps: int, copies: int, shape, max_images: int = 0):
    """``steps`` training batches fed as kerasgen's runner feeds a study: a data set held
    in memory (random images), each epoch in its own order with the CIFAR augmentation
    (pad-crop-flip) where the inputs are images, through ``kerasgen.data.train_dataset``
    (tf.data) under TensorFlow and ``kerasgen.data.batch_generator`` (numpy) under any
    other backend. Returns (the stream, steps per epoch, epochs): an epoch holds at most
    ``max_images`` images (default: about 1 GB of float32), so a long fit may span epochs,
    as a study's does."""
    import keras
    import numpy as np

    from kerasgen import data as data_lib

    per_image = int(np.prod(shape)) * 4
    max_images = max_images or max(batch_size, 2**30 // per_image)
    per_epoch = max(1, min(steps, max_images // batch_size))
    epochs = math.ceil(steps / per_epoch)
    n = per_epoch * batch_size
    rng = np.random.default_rng(1)
    channels = shape[-1] if len(shape) == 3 else 1
    ds = data_lib.Dataset("long-fit", rng.random((n, *shape), dtype=np.float32),
                          rng.integers(0, 10, n), rng.random((batch_size, *shape),
                                                             dtype=np.float32),
                          rng.integers(0, 10, batch_size), 10, (0.5,) * channels,
                          (0.25,) * channels, augment=len(shape) == 3)
    if keras.backend.backend() == "tensorflow":
        stream = data_lib.train_dataset(ds, 0, batch_size, 0, epochs, copies=copies,
                                        drop_last=True)
    else:
        stream = data_lib.batch_generator(ds, 0, batch_size, 0, epochs, copies=copies,
                                          drop_last=True)
    return stream, per_epoch, epochs


def long_fit(net, batch_size: int, seconds: float, step_s: float, copies: int, shape,
             max_steps: int = 100_000, max_images: int = 0):
    """A fit long enough for the steady state: steps sized to last ``seconds`` (from the
    short fits' step time), fed as the runner feeds a study (``runner_feed``). Returns
    (model-images/s from the per-batch stamps after the first batch, model-images/s of
    the whole ``fit`` call, its steps)."""
    steps = int(min(max_steps, max(10, math.ceil(seconds / max(step_s, 1e-6)))))
    stream, per_epoch, epochs = runner_feed(batch_size, steps, copies, shape, max_images)
    stamp = clock()
    started = time.perf_counter()
    net.fit(stream, steps_per_epoch=per_epoch, epochs=epochs, verbose=0, shuffle=False,
            callbacks=[stamp])
    wall = time.perf_counter() - started
    times = stamp.times
    done = len(times)
    steady = copies * batch_size * (done - 1) / (times[-1] - times[0])
    return steady, copies * batch_size * done / wall, done


def plan(args) -> list[Config]:
    """Configurations in the order they are built: XLA on before off (the accelerator
    default first), per network the bare fit, then each layout by increasing K."""
    configs = []
    off_models = (args.xla_off_models or args.models).split(",")
    for jit in [j.strip() == "on" for j in args.jit.split(",")]:
        for model in args.models.split(","):
            if not jit and model not in off_models:
                continue
            for layout in args.layouts.split(","):
                for k in [int(c) for c in args.copies.split(",")]:
                    if layout == "bare" and k != 1:
                        continue
                    configs.append(Config(model, layout, jit, k))
    return configs


def predicted_seconds(config: Config, done: list[Config], args) -> float | None:
    """Build + warm-up + one timed fit of ``config``, predicted from what was measured:
    the same network, layout and XLA setting at the largest smaller K (branches grow as
    K: K graphs to compile; fused as sqrt(K): one graph of wider kernels; the step as K),
    else any layout of the same network and XLA setting at K = 1 (scaled the same way).
    None: nothing to go by (the first configuration of a network and XLA setting)."""
    measured = [c for c in done if c.status == "measured" and c.model == config.model
                and c.jit == config.jit]
    same = [c for c in measured if c.layout == config.layout and c.copies < config.copies]
    ones = [c for c in measured if c.copies == 1]
    if same:
        ref = max(same, key=lambda c: c.copies)
    elif ones:
        ref = max(ones, key=lambda c: c.build_s)
    else:
        return None
    grow = config.copies / ref.copies
    build_grow = math.sqrt(grow) if config.layout == "fused" else grow
    step = ref.step_s * grow
    return ref.build_s * build_grow + max(args.seconds, args.min_steps * step) + step


def round_seconds(configs: list[Config], args) -> float:
    """One timed fit of each built configuration, with a second per fit for its setup."""
    return sum(max(c.steps, args.min_steps) * c.step_s + c.step_s + 1.0 for c in configs
               if c.status == "measured")


def long_reserve(configs: list[Config], args) -> float:
    """The bare fits' long fits: kept in every budget decision, since the projection is
    corrected by them."""
    if args.long_seconds <= 0:
        return 0.0
    return sum(args.long_seconds + 2 * c.step_s + 1.0 for c in configs
               if c.layout == "bare" and c.status in ("pending", "measured"))


def elapsed() -> float:
    return time.perf_counter() - STARTED


def warm_up(config: Config, args, shape) -> None:
    started = time.perf_counter()
    config.net = build(config, shape)
    _, _, step = timed_fit(config.net, args.batch_size, args.warmup_steps, config.copies, shape)
    config.build_s = time.perf_counter() - started
    config.step_s = step
    config.steps = int(min(args.max_steps, max(args.min_steps, math.ceil(args.seconds / step))))
    config.status = "measured"


def run(args) -> tuple[list[Config], dict]:
    shape = tuple(int(s) for s in args.input_shape.split(","))
    configs = plan(args)
    done: list[Config] = []
    # Phase 1: build and warm up, in order, while the budget allows.
    for config in configs:
        left = args.budget_seconds - elapsed()
        predicted = predicted_seconds(config, done, args)
        # What must stay for one timed round of everything already built, and the bare
        # fits' long fits (the steady state the projection is corrected by).
        reserve = round_seconds(done, args) + long_reserve(done + [config], args)
        if (predicted is not None and predicted + reserve > left) or (
                predicted is None and left - reserve < FIRST_SHARE * args.budget_seconds):
            config.status = "skipped"
            config.note = (f"over budget: {left:.0f} s left, "
                           + (f"~{predicted:.0f} s predicted" if predicted is not None
                              else "too little for a first compile")
                           + f" + {reserve:.0f} s for the timed rounds")
            print(f"  skip  {config.label}: {config.note}", flush=True)
            done.append(config)
            continue
        try:
            warm_up(config, args, shape)
            print(f"  built {config.label}: {config.build_s:.1f} s (build, compile, warm-up), "
                  f"{config.steps} steps per timed fit", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported in the table, the run goes on
            config.status, config.net = "failed", None
            config.note = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
            print(f"  FAIL  {config.label}: {config.note}", flush=True)
        done.append(config)
    # Phase 2: interleaved timed rounds, as many as the budget allows (at least one).
    measured = [c for c in done if c.status == "measured"]
    print(f"  {len(measured)} configuration(s) built by {elapsed():.0f} s; timed rounds next",
          flush=True)
    rounds = 0
    for r in range(args.repeats):
        if r > 0 and (elapsed() + round_seconds(measured, args) + long_reserve(measured, args)
                      > args.budget_seconds):
            break
        for config in measured:
            if config.status != "measured":
                continue
            try:
                rate, overhead, _ = timed_fit(config.net, args.batch_size, config.steps,
                                              config.copies, shape)
                config.rates.append(rate)
                config.fit_overhead_s.append(overhead)
            except Exception as exc:  # noqa: BLE001
                config.status = "failed"
                config.note = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        rounds += 1
        print(f"  round {rounds} done at {elapsed():.0f} s", flush=True)
    long_fits(measured, args, shape)
    for config in done:
        config.net = None
    return done, {"rounds": rounds, "shape": shape}


def long_fits(configs: list[Config], args, shape) -> None:
    """After the timed rounds, while the budget allows: one long fit per configuration
    (``--long-seconds``), bare fits first, then by increasing K; each says why not when
    it was left out."""
    if args.long_seconds <= 0:
        return
    order = sorted((c for c in configs if c.status == "measured"),
                   key=lambda c: (c.layout != "bare", c.copies))
    for config in order:
        needed = args.long_seconds + 2 * config.step_s + 1.0
        if elapsed() + needed > args.budget_seconds:
            config.long_note = f"no long fit: {args.budget_seconds - elapsed():.0f} s left"
            continue
        try:
            config.long_rate, config.long_whole_rate, config.long_steps = long_fit(
                config.net, args.batch_size, args.long_seconds, config.step_s, config.copies,
                shape)
            print(f"  long fit {config.label}: {config.long_steps} steps, "
                  f"{config.long_rate:.1f} model-images/s", flush=True)
        except Exception as exc:  # noqa: BLE001 - reported in the table, the run goes on
            config.long_note = f"long fit failed: {type(exc).__name__}: {str(exc)[:120]}"
            print(f"  FAIL  long fit {config.label}: {config.long_note}", flush=True)


def long_over_short(config: Config, configs: list[Config]) -> float | None:
    """The steady state's rate over the short fits' for ``config``: its own long fit, else
    the bare fit's of the same network and XLA setting (the correction applied to the
    projection), else none."""
    if config.long_rate and config.rates:
        return config.long_rate / config.median()
    bare = next((c for c in configs if c.model == config.model and c.jit == config.jit
                 and c.layout == "bare" and c.long_rate and c.rates), None)
    return bare.long_rate / bare.median() if bare else None


# ---------------------------------------------------------------- the table

def ratio_to_k1(config: Config, configs: list[Config]):
    base = next((c for c in configs if c.model == config.model and c.layout == config.layout
                 and c.jit == config.jit and c.copies == 1 and c.rates), None)
    if base is None or not config.rates:
        return None
    return config.median() / base.median()


def projection(configs: list[Config], args, shape) -> dict:
    """Device-hours of the paper preset at the best measured rates (batch 16, the
    slowest of the preset's batch sizes: an upper bound). A network measured in place of
    the paper's (--smoke, --models) stands in for the paper's network of its family,
    its rate scaled by their FLOP ratio."""
    from kerasgen.spec import preset

    spec = preset("paper")
    per_model = spec.cell_count // len(spec.models)
    out = {"cells": spec.cell_count, "epochs": spec.epochs, "images": PAPER_IMAGES,
           "networks": {}}
    for paper_model in spec.models:
        family = paper_model.rstrip("0123456789")
        measured = [c for c in configs if c.rates and c.model.startswith(family)]
        if not measured:
            continue
        stand_in = measured[0].model
        flops = train_flops_per_image(stand_in, shape)
        scale = flops / train_flops_per_image(paper_model, (32, 32, 3))
        mine = [c for c in measured if c.model == stand_in]
        rate = {id(c): steady_rate(c, configs) for c in mine}
        best = max(mine, key=lambda c: rate[id(c)][0])
        unpacked = max((c for c in mine if c.copies == 1), key=lambda c: rate[id(c)][0],
                       default=None)
        image_epochs = per_model * spec.epochs * PAPER_IMAGES
        best_rate, best_basis = rate[id(best)]
        row = {"measured_as": stand_in, "flop_scale": scale, "best": best.label,
               "best_rate": best_rate * scale, "best_basis": best_basis,
               "best_short_rate": best.median() * scale,
               "best_tflops": best_rate * flops / 1e12,
               "hours_best": image_epochs / (best_rate * scale) / 3600}
        if unpacked is not None:
            unpacked_rate, unpacked_basis = rate[id(unpacked)]
            row.update(unpacked=unpacked.label, unpacked_rate=unpacked_rate * scale,
                       unpacked_basis=unpacked_basis,
                       hours_unpacked=image_epochs / (unpacked_rate * scale) / 3600)
        out["networks"][paper_model] = row
    rows = out["networks"].values()
    out["hours_best"] = sum(r["hours_best"] for r in rows)
    out["hours_unpacked"] = sum(r.get("hours_unpacked", math.nan) for r in rows)
    return out


def steady_rate(config: Config, configs: list[Config]) -> tuple[float, str]:
    """The rate a study would train at: the configuration's own long fit; else its short
    fits' median times the bare fit's long/short ratio of the same network and XLA
    setting; else the short fits' median (said so)."""
    if config.long_rate:
        return config.long_rate, "long fit"
    ratio = long_over_short(config, configs)
    if ratio:
        return config.median() * ratio, f"short fits x {ratio:.2f} (the bare fit's long/short)"
    return config.median(), "short fits (no long fit measured)"


def fmt(value, spec=".1f", missing="-"):
    return missing if value is None or (isinstance(value, float) and not math.isfinite(value)) \
        else format(value, spec)


def report(configs: list[Config], facts: dict, meta: dict, args) -> dict:
    shape = meta["shape"]
    print(f"\n# device_check: {facts['device']} (backend {facts['backend']}, keras "
          f"{facts['keras']}, python {facts['python']}, {facts['host_cpus']} host CPUs)")
    if not facts.get("accelerator"):
        print("# no accelerator found: these are CPU figures" +
              (" (--smoke: tiny networks, a test of the script, not a measurement)"
               if args.smoke else ""))
    print(f"# batch {args.batch_size}, images {'x'.join(map(str, shape))}; {meta['rounds']} "
          f"interleaved timed round(s); model-images/s = K x images/s over the steps after "
          "the first of each fit")
    print("# long: one fit of --long-seconds fed as the runner feeds a study (tf.data or "
          "numpy, augmented), rate after its first batch; long/short: its ratio to the short "
          "fits' median")
    head = (f"{'model':10s} {'layout':8s} {'xla':3s} {'K':>3s} {'min':>9s} {'median':>9s} "
            f"{'max':>9s} {'x K=1':>6s} {'steps':>5s} {'build s':>7s} {'long':>9s} "
            f"{'long/short':>10s}  status")
    print(head)
    rows = []
    for c in configs:
        ratio = ratio_to_k1(c, configs)
        status = c.status if not c.note else f"{c.status}: {c.note}"
        if c.long_note:
            status += f" ({c.long_note})"
        long_short = c.long_rate / c.median() if c.long_rate and c.rates else None
        print(f"{c.model:10s} {c.layout:8s} {'on' if c.jit else 'off':3s} {c.copies:3d} "
              f"{fmt(min(c.rates) if c.rates else None):>9s} {fmt(c.median()):>9s} "
              f"{fmt(max(c.rates) if c.rates else None):>9s} {fmt(ratio, '.2f'):>6s} "
              f"{c.steps if c.rates else '-':>5} {fmt(c.build_s if c.rates else None):>7s} "
              f"{fmt(c.long_rate):>9s} {fmt(long_short, '.2f'):>10s}  {status}", flush=True)
        row = {k: v for k, v in asdict(c).items() if k != "net"}
        row.update(median=c.median(), min=min(c.rates) if c.rates else None,
                   max=max(c.rates) if c.rates else None, ratio_to_k1=ratio,
                   long_over_short=long_short)
        rows.append(row)
    proj = projection(configs, args, shape)
    print(f"\n# projection: the paper preset ({proj['cells']:,} cells x {proj['epochs']} "
          f"epochs x {proj['images']:,} images) on this device, every cell at the rate of "
          f"batch {args.batch_size} (the slowest of its batch sizes: an upper bound)")
    for name, r in proj["networks"].items():
        stand_in = "" if r["measured_as"] == name else \
            f"; measured as {r['measured_as']}, rates x {r['flop_scale']:.3g} by FLOPs"
        print(f"projection {name}: best {r['hours_best']:,.0f} device-hours at "
              f"{r['best_rate']:,.1f} model-images/s ({r['best']}, {r['best_basis']}; "
              f"short fits {r['best_short_rate']:,.1f}; {r['best_tflops']:.3g} TFLOP/s); "
              f"one cell at a time {fmt(r.get('hours_unpacked'), ',.0f')} device-hours at "
              f"{fmt(r.get('unpacked_rate'), ',.1f')} model-images/s "
              f"({r.get('unpacked', '-')}, {r.get('unpacked_basis', '-')}){stand_in}")
    print(f"projection total: best {fmt(proj['hours_best'], ',.0f')} device-hours, one cell "
          f"at a time {fmt(proj['hours_unpacked'], ',.0f')} device-hours")
    print(f"# elapsed {elapsed():.0f} s of a {args.budget_seconds:.0f} s budget")
    facts["tensorflow_imported"] = "tensorflow" in sys.modules
    return {"facts": facts, "args": vars(args), "rounds": meta["rounds"], "rows": rows,
            "projection": proj, "elapsed_s": elapsed()}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = choose_backend()
    if args.smoke and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SMOKE_XLA_FLAGS}".strip()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    facts = device_facts()
    print(f"# device: {facts['device']} (keras backend {facts['backend']})", flush=True)
    configs, meta = run(args)
    result = report(configs, facts, meta, args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    return 1 if any(c.status == "failed" for c in configs) else 0


if __name__ == "__main__":
    sys.exit(main())
