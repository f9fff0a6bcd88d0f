"""Which Keras backend trains a study: asked for, or chosen by measurement, and recorded.

``RunOptions.keras_backend`` (``kerasgen run --keras-backend``) is ``"tensorflow"``,
``"jax"`` or ``"auto"``. Every training process sets it before Keras is imported
(``KERAS_BACKEND`` is read once, at import); a process whose Keras already runs another
backend trains the study in a fresh worker process instead (``runtime.unhonoured_settings``).

``"auto"`` resolves, in order, to:

1. the backend the study's earlier runs were trained with (a study never mixes kernels);
2. the only candidate installed (JAX is an extra: ``pip install 'kerasgen[jax]'``);
3. the faster candidate for this study, measured on this machine for its network and
   first pack shape, from the cache (``~/.cache/kerasgen/backends.json``) or measured
   now: each candidate in a fresh process builds the study's first pack (its network, data
   shape, batch size and copies), times its compilation and then its training steps,
   within ``CALIBRATION_SECONDS``. "Faster" is the study's projected time: a compilation
   per pack shape (model, data set, batch size) plus its training images at the step
   rate, because XLA's compilations can cost a short study more than its faster steps
   gain (the demo: 7.9 min under TensorFlow, 10.7 under JAX with XLA). It is measured only
   when that costs at most 2 % of the study, judged by a lower bound of the study's time
   (its training FLOPs at an optimistic device rate, ``FAST_FLOPS``);
4. otherwise TensorFlow, the reference backend.

The choice and why are printed, and every worker records the backend in effect.
Mixed precision is never chosen here: ``training.dtype`` is part of the specification.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CANDIDATES = ("tensorflow", "jax")
CALIBRATION_SECONDS = 45.0
"""The most one candidate's measurement may take (start-up, compile, timed steps)."""
CALIBRATION_SHARE = 0.02
"""The most the measurement of every candidate may cost, as a share of the study."""
FAST_FLOPS = {"cpu": 2e11, "gpu": 5e14}
"""Training FLOP/s no device of the kind reaches (2-core CPU here: ~6e10): a study's time
estimated with it is a lower bound, so measuring is never more than the share claimed."""


def installed(backend: str) -> bool:
    return importlib.util.find_spec(backend) is not None


def cache_path() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "kerasgen" / "backends.json"


def cache_key(shape: dict) -> str:
    from kerasgen.runtime import cpu_model

    gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), "gpus": gpus, **shape},
                      sort_keys=True)


def _read_cache() -> dict:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, rates: dict) -> None:
    from kerasgen.checkpoints import atomic_write_text

    cache = _read_cache()
    cache[key] = rates
    try:
        atomic_write_text(cache_path(), json.dumps(cache, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only home: measured again next time


def first_pack(spec, pack_size: int) -> dict:
    """The shape of the study's first pack (what workers claim first): its network, data
    set, batch size and number of copies."""
    return {"model": spec.models[0], "dataset": spec.datasets[0],
            "batch_size": int(min(spec.batch_sizes)),
            "copies": int(min(pack_size, len(spec.learning_rates))),
            "dtype": spec.training.dtype}


def study_seconds_lower_bound(spec, shapes: dict, device: str = "cpu") -> float | None:
    """A lower bound of the study's training time: its FLOPs at ``FAST_FLOPS`` (None when a
    network is not a built-in one, whose FLOPs the name does not tell)."""
    from kerasgen.measures.cost import model_cost
    from kerasgen.naming import model_ref

    total = 0.0
    for model in spec.models:
        if not model_ref(model, spec.model_targets).builtin:
            return None
        for shape, classes, n_train in shapes.values():
            macs = model_cost(model, shape, classes)["macs"]
            images = n_train * spec.epochs * len(spec.batch_sizes) * len(spec.learning_rates) \
                * len(spec.seeds)
            total += 6.0 * macs * images  # forward 2 FLOPs per MAC, backward twice that
    return total / FAST_FLOPS[device]


def measure(backend: str, shape: dict, seconds: float = CALIBRATION_SECONDS,
            input_shape=(32, 32, 3), num_classes: int = 10) -> dict:
    """Train the pack ``shape`` under ``backend`` in a fresh process for at most ``seconds``
    (start-up included); returns {"rate": model-images/s after warm-up, "seconds": the
    whole run} or {"error": ...}."""
    args = json.dumps({"shape": shape, "seconds": seconds, "input_shape": list(input_shape),
                       "num_classes": num_classes})
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    try:
        run = subprocess.run([sys.executable, "-c", "import sys; from kerasgen.packing import "
                              "measure_pack_rate; measure_pack_rate(sys.argv[1])", args],
                             capture_output=True, text=True, timeout=seconds + 60, env=env)
    except subprocess.TimeoutExpired:
        return {"error": "timed out", "seconds": time.perf_counter() - started}
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode != 0 or not lines:
        return {"error": (run.stderr.strip().splitlines() or ["failed"])[-1],
                "seconds": time.perf_counter() - started}
    return {**json.loads(lines[-1]), "seconds": time.perf_counter() - started}


def choose(spec, options, recorded: list[str], shapes: dict) -> tuple[str, str]:
    """(backend, why) for ``options.keras_backend`` (see the module docstring).
    ``recorded``: backends the study's earlier workers trained with; ``shapes``: data set
    -> (input shape, classes, training images)."""
    asked = options.keras_backend
    if asked != "auto":
        if not installed(asked):
            from kerasgen.worker import StudyError

            raise StudyError(f"--keras-backend {asked}: {asked} is not installed "
                             f"(pip install 'kerasgen[{asked}]' for JAX).")
        return asked, "asked for"
    if recorded:
        return recorded[0], "the study's earlier runs were trained with it"
    candidates = [b for b in CANDIDATES if installed(b)]
    if len(candidates) == 1:
        return candidates[0], "the only backend installed"
    shape = first_pack(spec, options.pack_size)
    key = cache_key(shape)
    rates = _read_cache().get(key)
    work = study_work(spec, shapes)
    if rates:
        return _faster(rates, work, "measured on this machine earlier (cached)")
    device = "gpu" if os.environ.get("CUDA_VISIBLE_DEVICES", "") not in ("", "-1") else "cpu"
    floor = study_seconds_lower_bound(spec, shapes, device)
    input_shape, classes, _ = shapes[shape["dataset"]]
    if floor is not None and len(candidates) * CALIBRATION_SECONDS <= CALIBRATION_SHARE * floor:
        rates = {}
        for backend in candidates:
            got = measure(backend, shape, CALIBRATION_SECONDS, input_shape, classes)
            if "rate" in got:
                rates[backend] = {"rate": got["rate"], "compile": got["compile"]}
        if len(rates) == len(candidates):
            _write_cache(key, rates)
            return _faster(rates, work, "measured now")
    why = ("too short a study to measure within 2 % of its time" if floor is not None
           else "a network of your own, whose cost the name does not tell")
    return "tensorflow", f"the reference backend, not measured: {why}"


def study_work(spec, shapes: dict) -> tuple[int, float]:
    """(pack shapes to compile, model-images to train) of a study."""
    images = sum(n_train for _, _, n_train in shapes.values()) * spec.epochs \
        * len(spec.batch_sizes) * len(spec.learning_rates) * len(spec.seeds) * len(spec.models)
    return len(spec.models) * len(spec.datasets) * len(spec.batch_sizes), float(images)


def _faster(rates: dict, work: tuple[int, float], how: str) -> tuple[str, str]:
    compiles, images = work

    def projected(r: dict) -> float:
        return compiles * r["compile"] + images / r["rate"]

    best = min(rates, key=lambda b: projected(rates[b]))
    seen = ", ".join(f"{b}: {r['rate']:,.0f} model-images/s after {r['compile']:.1f} s of "
                     f"compiling, {projected(r) / 60:,.1f} min projected"
                     for b, r in sorted(rates.items()))
    return best, f"{how}; {seen}"


__all__ = ["CALIBRATION_SECONDS", "CANDIDATES", "cache_path", "choose", "first_pack",
           "installed", "measure", "study_seconds_lower_bound"]
