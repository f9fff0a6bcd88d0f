"""``kerasgen measures``: the generalization measures of every finished run of a store,
at the weights it kept, written to the ``measures`` table (and printed as they come).

Which weights
-------------
The runner keeps each run's *final* weights, the weights it had when it finished (its
stop rule or the epoch cap), in ``<db>.checkpoints/<study-dir>/cells/cell-<id>.weights.npz``,
and each group's initial weights in ``initial/<model>-<dataset>-seed<seed>.weights.npz``.
Every measure here is taken at the final weights (``weights = 'final'``, at
``weights_epoch``, the run's last epoch) except ``b_simple_init`` (the initial weights).
The report reads every other number at the run's *kept* epoch; where the kept epoch is
not the last one, each row records both (``kept_epoch`` beside ``weights_epoch``) and
the command says how many runs that concerns. (Keeping the kept epoch's weights needs
the runner to save them; it does not today.)

What is measured on
-------------------
The run's clean training subset, the images its clean training metrics were measured
on (``training.train_eval_size``, the same for every run of a seed), normalized, never
augmented, batch norm in inference mode; at most ``max_examples`` of them (a seeded
subset), the same for every measure of a run.

Resuming, several processes
---------------------------
One row per (run, measure, settings): a run's rows are written in one transaction after
its measures are computed, and a measure already stored with the same settings is not
computed again (``recompute`` replaces it). Any number of ``kerasgen measures`` processes
may work on one store at once: each walks the runs in its own order (rotated by its
process id), checks the store again just before each run and writes with ``INSERT OR
IGNORE``, so a (run, measure, settings) is stored once whoever computes it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from kerasgen.measures.catalogue import MeasureError, check_measure_names
from kerasgen.vocabulary import DIVERGED, DONE


@dataclass(frozen=True)
class MeasureConfig:
    """The knobs of every measure (each row stores the ones its value depends on)."""

    max_examples: int = 256          # examples of the clean training subset used
    seed: int = 0                    # example subset, probes, noise draws, start vectors
    fold_bn: bool = True             # fold batch norm into the kernel before it (norms)
    power_iters: int = 100           # reshaped kernels
    conv_power_iters: int = 30       # convolution operators
    lanczos_steps: int = 10          # hessian_top (the top Ritz value converged to
                                     # 1e-6 relative residual on the demo in 15 steps)
    hutchinson_probes: int = 10      # hessian_trace
    epsilon: float = 5e-4            # eps_sharpness (Keskar et al.: 1e-3 and 5e-4)
    ascent_steps: int = 10           # eps_sharpness, adaptive_sharpness
    rho: float = 0.5                 # adaptive_sharpness (ASAM's rho for CIFAR)
    eta: float = 0.01                # adaptive_sharpness: |w| + eta
    flatness_rise: float = 0.1       # pacbayes_*: allowed rise of the mean training loss
    flatness_samples: int = 3        # noise draws per sigma
    flatness_steps: int = 8          # bisections (in log sigma)
    flatness_epsilon: float = 1e-3   # pacbayes_mag_flatness: the floor of the noise
    margin_percentile: float = 10.0  # output_margin
    chunk: int = 256                 # examples per TensorFlow call
    pex_chunk: int = 32              # examples per per-example-gradient call

    def __post_init__(self):
        if self.max_examples < 2:
            raise MeasureError(f"max_examples must be at least 2, got {self.max_examples}")


ESTIMATORS = {
    "dist_init": "exact", "sum_fro": "exact", "log_prod_fro": "exact",
    "log_prod_spec": "power iteration (reshaped kernel)",
    "log_prod_spec_conv": "power iteration (convolution operator)",
    "log_path_norm": "forward pass (squared weights, all-ones input)",
    "hessian_top": "Lanczos", "hessian_trace": "Hutchinson",
    "eps_sharpness": "projected gradient ascent (box)",
    "adaptive_sharpness": "projected gradient ascent (ellipsoid)",
    "pacbayes_flatness": "bisection (Monte Carlo)",
    "pacbayes_mag_flatness": "bisection (Monte Carlo)",
    "noise_trace": "per-example gradients", "b_simple": "per-example gradients",
    "b_simple_init": "per-example gradients", "output_margin": "forward pass",
}

_KNOBS = {
    "dist_init": (), "sum_fro": ("fold_bn",), "log_prod_fro": ("fold_bn",),
    "log_prod_spec": ("fold_bn", "power_iters"),
    "log_prod_spec_conv": ("fold_bn", "conv_power_iters"),
    "log_path_norm": (),
    "hessian_top": ("max_examples", "seed", "lanczos_steps"),
    "hessian_trace": ("max_examples", "seed", "hutchinson_probes"),
    "eps_sharpness": ("max_examples", "seed", "epsilon", "ascent_steps"),
    "adaptive_sharpness": ("max_examples", "seed", "rho", "eta", "ascent_steps"),
    "pacbayes_flatness": ("max_examples", "seed", "flatness_rise", "flatness_samples",
                          "flatness_steps"),
    "pacbayes_mag_flatness": ("max_examples", "seed", "flatness_rise", "flatness_samples",
                              "flatness_steps", "flatness_epsilon"),
    "noise_trace": ("max_examples", "seed"), "b_simple": ("max_examples", "seed"),
    "b_simple_init": ("max_examples", "seed"),
    "output_margin": ("max_examples", "seed", "margin_percentile"),
}


def measure_settings(name: str, config: MeasureConfig) -> dict:
    """The settings ``name``'s value depends on (what its settings key hashes)."""
    values = asdict(config)
    out = {k: values[k] for k in _KNOBS[name]}
    if "max_examples" in out:
        out["data"] = "clean training subset, normalized, no augmentation, BN inference"
    return out


def settings_key(settings: dict) -> str:
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _json(obj) -> str:
    def clean(o):
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, (np.floating, np.integer, np.bool_)):
            o = o.item()
        if isinstance(o, float) and not math.isfinite(o):
            return str(o)
        return o
    return json.dumps(clean(obj), sort_keys=True)


def _describe(row) -> str:
    return f"run {row.cell_id} {row.model} seed={row.seed} bs={row.batch_size} " \
           f"lr={row.learning_rate:g}"


# ---------------------------------------------------------------- the store

def compute_measures_for_store(db, study: str | None = None, cells: Sequence[int] | None = None,
                               measures: Sequence[str] | None = None, data_dir: str = "data",
                               checkpoint_dir: str | None = None,
                               config: MeasureConfig = MeasureConfig(),
                               recompute: bool = False) -> list[dict]:
    """Compute ``measures`` (names, families, ``default`` or ``all``; default: the
    catalogue's default set) for the finished runs of a store and write them to the
    ``measures`` table; prints a line per run. Returns the rows written.

    Runs: every ``done`` run of ``study`` (or of all studies), or exactly ``cells``.
    Diverged runs are skipped with the reason printed. An unknown measure, study or run
    id, a requested run that is not finished, or (for requested runs) missing weights
    raise :class:`MeasureError` naming the value, before anything is computed; nothing
    stored is ever changed except by ``recompute``.
    """
    from kerasgen.store import Store, load_results, measure_keys, study_uids

    names = check_measure_names(measures or ["default"])
    db = Path(db)
    if not db.exists():
        raise MeasureError(f"{db} does not exist; train a study first (kerasgen run)")
    with Store(db, create=False) as store:  # migrate (creates the measures table)
        uids = study_uids(store)
    if study is not None and study not in uids:
        raise MeasureError(f"{db} holds no study named {study!r}"
                           + (f" (it holds {', '.join(map(repr, sorted(uids)))})" if uids else ""))
    frame = load_results(db, study=study)
    if frame.empty:
        raise MeasureError(f"{db} holds no runs" + (f" of study {study!r}" if study else ""))
    explicit = cells is not None
    if explicit:
        wanted = [int(c) for c in cells]
        unknown = sorted(set(wanted) - set(frame["cell_id"].astype(int)))
        if unknown:
            raise MeasureError(f"unknown run id(s) {unknown} in {db}"
                               + (f" (study {study!r})" if study else ""))
        frame = frame[frame["cell_id"].isin(wanted)]
        bad = frame[~frame["status"].isin([DONE, DIVERGED])]
        if len(bad):
            listed = ", ".join(f"{int(r.cell_id)} ({r.status})" for r in bad.itertuples())
            raise MeasureError(f"run(s) not finished: {listed}; only finished runs have final "
                               "weights (run `kerasgen run` to finish them)")
    from kerasgen.checkpoints import (
        cell_weights_path,
        default_root,
        group_weights_path,
        study_directory,
    )

    root = default_root(db, checkpoint_dir)
    dirs = {name: study_directory(root, name, uid) for name, uid in uids.items()}
    keys = {n: settings_key(measure_settings(n, config)) for n in names}
    stored = set() if recompute else measure_keys(db)
    todo, complete = [], 0
    for row in frame.itertuples():
        if row.status == DIVERGED:
            print(f"{_describe(row)}: skipped (diverged at epoch {row.diverged_epoch}: no "
                  "minimum to measure at)")
            continue
        if row.status != DONE:
            continue
        missing = [n for n in names if (int(row.cell_id), n, keys[n]) not in stored]
        if not missing:
            complete += 1
            continue
        path = cell_weights_path(dirs[row.study], row.cell_id)
        if not path.exists():
            if explicit:
                raise MeasureError(f"no final weights for run {row.cell_id} at {path}; pass "
                                   "--checkpoint-dir if the study was run with one; a study run "
                                   "with --keep-weights none kept no weights to measure")
            print(f"{_describe(row)}: skipped (no final weights at {path})")
            continue
        todo.append((row, missing))
    finished = sum(1 for r in frame.itertuples() if r.status == DONE)
    if not finished:
        print("no finished run to measure yet (kerasgen run finishes them)")
        return []
    if not todo:
        print(f"every finished run already has {', '.join(names)} (same settings) or was "
              "skipped above; --recompute to redo")
        return []
    if complete:
        print(f"{complete} finished run(s) already have every measure asked for; skipped")
    initial = {}
    for row, _ in todo:
        key = (row.model, row.dataset, int(row.seed))
        initial[key] = group_weights_path(root, *key)
    return _compute(db, todo, names, keys, config, dirs, initial, data_dir, checkpoint_dir,
                    recompute)


def _compute(db, todo, names, keys, config, dirs, initial, data_dir, checkpoint_dir,
             recompute) -> list[dict]:
    from kerasgen import runtime
    from kerasgen.curvature.runs import _single_threaded_blas

    runtime.quiet_tensorflow()
    with _single_threaded_blas():
        return _compute_inner(db, todo, names, keys, config, dirs, initial, data_dir,
                              checkpoint_dir, recompute)


def _rotated(items: list, offset: int) -> list:
    if not items:
        return items
    k = offset % len(items)
    return items[k:] + items[:k]


def _compute_inner(db, todo, names, keys, config, dirs, initial, data_dir, checkpoint_dir,
                   recompute) -> list[dict]:
    from kerasgen.checkpoints import load_arrays, load_cell_weights
    from kerasgen.measures.network import NetworkMeasures
    from kerasgen.models import build_model
    from kerasgen.options import RunOptions
    from kerasgen.store import Store, measure_keys
    from kerasgen.train import prepare_dataset

    options = RunOptions(data_dir=data_dir, checkpoint_dir=checkpoint_dir)
    groups: dict[tuple, list] = {}
    for row, missing in todo:
        groups.setdefault((row.study, row.model, row.dataset, int(row.seed)), []).append(
            (row, missing))
    written: list[dict] = []
    differing = 0
    offset = os.getpid()
    datasets: dict[tuple, object] = {}
    with Store(db) as store:
        for (study_name, model_name, dataset, seed), members in _rotated(
                sorted(groups.items()), offset):
            spec = json.loads((store.study(study_name) or {}).get("spec_json") or "{}")
            training = spec.get("training", {})
            dtype = training.get("dtype", "float32")
            if (dataset, dtype) not in datasets:
                datasets[(dataset, dtype)] = prepare_dataset(dataset, options, dtype)
            ds = datasets[(dataset, dtype)]
            x, y, subset = _examples(ds, seed, training.get("train_eval_size", "test"), config)
            model = build_model(model_name, num_classes=ds.num_classes,
                                input_shape=ds.input_shape)
            init_path = initial[(model_name, dataset, seed)]
            init_weights = load_arrays(init_path) if init_path.exists() else None
            net = NetworkMeasures(model, x, y, chunk=config.chunk, pex_chunk=config.pex_chunk)
            at_init = None
            for row, missing in _rotated(members, offset):
                if not recompute:  # another process may have done it meanwhile
                    stored = measure_keys(store)
                    missing = [n for n in missing if (int(row.cell_id), n, keys[n]) not in stored]
                    if not missing:
                        continue
                if "b_simple_init" in missing and at_init is None:
                    at_init = _at_initial(model, net, init_weights, init_path)
                model.set_weights(load_cell_weights(dirs[study_name], row.cell_id))
                net.refresh()
                values = _measure(model, net, missing, config, init_weights, at_init)
                weights_epoch = int(row.epochs_done) - 1 if row.epochs_done else None
                kept = None if math.isnan(row.kept_epoch) else int(row.kept_epoch)
                differing += (kept is not None and weights_epoch is not None
                              and kept != weights_epoch)
                rows = []
                for name in missing:
                    if name not in values:
                        continue
                    value, details, seconds = values[name]
                    details = {**details, "examples": subset}
                    if name == "b_simple_init":
                        details["weights_file"] = str(init_path)
                    rows.append({
                        "cell_id": int(row.cell_id), "measure": name, "settings_key": keys[name],
                        "value": value, "estimator": ESTIMATORS[name],
                        "settings_json": _json(measure_settings(name, config)),
                        "details_json": _json(details),
                        "weights": "initial" if name == "b_simple_init" else "final",
                        "weights_epoch": None if name == "b_simple_init" else weights_epoch,
                        "kept_epoch": kept, "seconds": float(seconds),
                        "computed_at": _now(),
                    })
                if recompute:
                    for r in rows:
                        store.delete_measure_rows(r["cell_id"], r["measure"], r["settings_key"])
                store.save_measure_rows(rows)
                written.extend(rows)
                shown = ", ".join(f"{r['measure']}={_fmt(r['value'])}" for r in rows)
                total = sum(r["seconds"] for r in rows)
                print(f"{_describe(row)}: {shown} [{total:.1f} s]", flush=True)
    if differing:
        print(f"note: {differing} run(s) kept an epoch other than their last; their measures "
              "are at the final weights (each row records weights_epoch and kept_epoch)")
    return written


def _now() -> str:
    from kerasgen.store import utc_now

    return utc_now()


def _fmt(value) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _examples(ds, seed: int, size, config: MeasureConfig):
    """The run's clean training subset (``data.train_eval_indices``), at most
    ``max_examples`` of it (seeded), normalized."""
    from kerasgen.data import train_eval_indices

    idx = train_eval_indices(seed, ds.train_size, size, int(ds.x_test.shape[0]))
    source = f"clean training subset (train_eval_size={size!r}, {len(idx)} images)"
    if len(idx) == 0:
        idx = np.arange(ds.train_size)
        source = "training set (the study measured no clean training subset)"
    if len(idx) > config.max_examples:
        rng = np.random.default_rng([config.seed, int(seed)])
        idx = np.sort(rng.choice(idx, size=config.max_examples, replace=False))
        source += f", {config.max_examples} of them (seeded)"
    return ds.normalize(ds.x_train[idx]), ds.y_train[idx], f"{source}; n={len(idx)}"


def _at_initial(model, net, init_weights, path) -> dict | None:
    """B_simple at the group's initial weights (computed once per group)."""
    if init_weights is None:
        print(f"  b_simple_init: no initial weights at {path}; not computed")
        return None
    started = time.perf_counter()
    saved = model.get_weights()
    model.set_weights(init_weights)
    net.refresh()
    noise = net.gradient_noise()
    model.set_weights(saved)
    net.refresh()
    noise["seconds"] = time.perf_counter() - started
    return noise


def _measure(model, net, names, config: MeasureConfig, init_weights, at_init) -> dict:
    """name -> (value, details, seconds) for the measures of one run."""
    from kerasgen.measures import network as N

    out: dict[str, tuple] = {}

    def timed(name, fn, *args, **kwargs):
        started = time.perf_counter()
        try:
            value, info = fn(*args, **kwargs)
        except MeasureError as exc:
            print(f"  {name}: not computed ({exc})")
            return
        out[name] = (value, info, time.perf_counter() - started)

    norm_names = {"dist_init", "sum_fro", "log_prod_fro", "log_prod_spec"} & set(names)
    if norm_names:
        started = time.perf_counter()
        values = N.norms(model, init_weights if "dist_init" in names else None,
                         config.fold_bn, config.power_iters, config.seed)
        spent = time.perf_counter() - started
        for name in norm_names:
            if name in values:
                value, info = values[name]
                out[name] = (value, info, info.pop("seconds", spent / len(norm_names)))
        if "dist_init" in names and "dist_init" not in values:
            print("  dist_init: no initial weights for this group; not computed")
    if "log_prod_spec_conv" in names:
        timed("log_prod_spec_conv", lambda: N.conv_spectral_norms(
            N.linear_maps(model, config.fold_bn), config.conv_power_iters, config.seed))
    if "log_path_norm" in names:
        timed("log_path_norm", N.path_norm, model)
    if "output_margin" in names:
        timed("output_margin", N.output_margin, net, config.margin_percentile)
    if "hessian_top" in names:
        timed("hessian_top", N.hessian_top, net, config.lanczos_steps, None, config.seed)
    if "hessian_trace" in names:
        timed("hessian_trace", N.hessian_trace, net, config.hutchinson_probes, None,
              config.seed + 1)
    if "eps_sharpness" in names:
        timed("eps_sharpness", N.eps_sharpness, net, config.epsilon, config.ascent_steps)
    if "adaptive_sharpness" in names:
        timed("adaptive_sharpness", N.adaptive_sharpness, net, config.rho, config.eta,
              config.ascent_steps)
    for name, magnitude in (("pacbayes_flatness", False), ("pacbayes_mag_flatness", True)):
        if name in names:
            timed(name, N.pacbayes_flatness, net, magnitude, config.flatness_rise,
                  config.flatness_samples, config.flatness_steps, config.flatness_epsilon,
                  config.seed + 2)
    if {"noise_trace", "b_simple"} & set(names):
        noise = N.gradient_noise_measures(net)
        both = {"noise_trace", "b_simple"} & set(names)
        share = noise.pop("seconds") / len(both)
        note = {"shared": "one per-example gradient pass gives tr(C) and B_simple; its time "
                          "is split between them"} if len(both) == 2 else {}
        if "noise_trace" in names:
            out["noise_trace"] = (noise["trace_C"], {**noise, **note}, share)
        if "b_simple" in names:
            out["b_simple"] = (noise["b_simple"], {**noise, **note}, share)
    if "b_simple_init" in names and at_init is not None:
        first = not at_init.get("reported")
        seconds = at_init["seconds"] if first else 0.0
        at_init["reported"] = True
        info = {k: v for k, v in at_init.items() if k not in ("seconds", "reported")}
        out["b_simple_init"] = (at_init["b_simple"], {
            **info, "note": "one value per model, data set and seed, computed once (its time "
                            "is on the first run of the group)"}, seconds)
    return out


__all__ = ["ESTIMATORS", "MeasureConfig", "compute_measures_for_store", "measure_settings",
           "settings_key"]
