"""``kerasgen bound``: the bound terms of every finished cell of a store, from its final
weights, written to the ``bounds`` table (and printed as they come)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from kerasgen.curvature.autodiff import (
    CurvatureConfig,
    Objective,
    _subset,
    bound_terms,
    estimate_curvature,
    select_parameters,
)
from kerasgen.curvature.config import CurvatureError
from kerasgen.vocabulary import DIVERGED, DONE

# ---------------------------------------------------------------- the store



def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def compute_bounds_for_store(db, study: str | None = None, cells: Sequence[int] | None = None,
                             params: str = "classifier", delta: float = 0.05,
                             data_dir: str = "data", checkpoint_dir: str | None = None,
                             max_examples: int | None = None,
                             recompute: bool = False) -> list[dict]:
    """Estimate A and C for the finished cells of a store and write their bound terms
    into the ``bounds`` table (one row per cell and ``params``); prints a line per cell.

    Cells: every ``done`` cell of ``study`` (or of all studies), or exactly ``cells``.
    Diverged cells are skipped with the reason printed; an unknown id, a requested cell
    that is not finished, or a missing final-weights file raise :class:`CurvatureError`
    (for the default selection a ``done`` cell without weights is skipped, with the
    reason printed). Cells whose row exists are skipped unless ``recompute``.
    Returns the rows written (dicts with the ``bounds`` columns plus ``report``).
    """
    from kerasgen.store import Store, bound_cell_ids, load_results, study_uids

    db = Path(db)
    if not db.exists():
        raise CurvatureError(f"{db} does not exist; train a study first (kerasgen run)")
    if max_examples is not None and max_examples < 2:
        raise CurvatureError(f"max_examples must be at least 2, got {max_examples}")
    if not 0.0 < float(delta) < 1.0:
        raise CurvatureError(f"delta must lie in (0, 1) (the confidence parameter), got {delta}")
    with Store(db) as store:  # migrate (creates the bounds table on an older store)
        uids = study_uids(store)
    frame = load_results(db, study=study)
    if frame.empty:
        raise CurvatureError(f"{db} holds no cells" + (f" of study {study!r}" if study else ""))
    label = params if isinstance(params, str) else ",".join(params)
    explicit = cells is not None
    if explicit:
        wanted = [int(c) for c in cells]
        unknown = sorted(set(wanted) - set(frame["cell_id"].astype(int)))
        if unknown:
            raise CurvatureError(f"unknown cell id(s) {unknown} in {db}"
                                 + (f" (study {study!r})" if study else ""))
        frame = frame[frame["cell_id"].isin(wanted)]
        bad = frame[~frame["status"].isin([DONE, DIVERGED])]
        if len(bad):
            listed = ", ".join(f"{int(r.cell_id)} ({r.status})" for r in bad.itertuples())
            raise CurvatureError(f"cell(s) not finished: {listed}; only done cells have "
                                 f"final weights (run `kerasgen run` to finish them)")
    selected = []
    for row in frame.itertuples():
        if row.status == DIVERGED:
            print(f"cell {row.cell_id} {row.model} bs={row.batch_size} lr={row.learning_rate:g}: "
                  f"skipped (diverged at epoch {row.diverged_epoch}: no minimum to take A "
                  "and C at)")
        elif row.status == DONE:
            selected.append(row)
    done_already = set() if recompute else bound_cell_ids(db, label)
    todo = []
    for row in selected:
        if row.cell_id in done_already:
            print(f"cell {row.cell_id} {row.model} bs={row.batch_size} lr={row.learning_rate:g}: "
                  f"bounds ({label}) already in the store; skipped (--recompute to redo)")
        else:
            todo.append(row)
    if not todo:
        return []

    from kerasgen.checkpoints import cell_weights_path, default_root, study_directory
    from kerasgen.options import RunOptions

    options = RunOptions(data_dir=data_dir, checkpoint_dir=checkpoint_dir)
    root = default_root(db, checkpoint_dir)
    dirs = {name: study_directory(root, name, uid) for name, uid in uids.items()}
    runnable = []
    for row in todo:
        path = cell_weights_path(dirs[row.study], row.cell_id)
        if path.exists():
            runnable.append(row)
        elif explicit:
            raise CurvatureError(f"no final weights for cell {row.cell_id} at {path}; "
                                 "pass --checkpoint-dir if the study was run with one; a study run "
                                 "with --keep-weights none kept no final weights")
        else:
            print(f"cell {row.cell_id} {row.model} bs={row.batch_size} lr={row.learning_rate:g}: "
                  f"skipped (no final weights at {path})")
    if not runnable:
        return []
    return _compute_rows(db, runnable, params, label, delta, options, dirs, max_examples)


def _compute_rows(db: Path, rows, params, label: str, delta: float, options, dirs: dict,
                  max_examples: int | None) -> list[dict]:
    from kerasgen import runtime

    runtime.quiet_tensorflow()
    config = CurvatureConfig()
    with _single_threaded_blas():
        return _compute_rows_inner(db, rows, params, label, delta, options, dirs,
                                   max_examples, config)


def _single_threaded_blas():
    """numpy's OpenBLAS, multi-threaded next to TensorFlow's thread pools, made
    ``eigvalsh`` of a 1161 x 1161 matrix 20x slower (4.5 s vs 0.2 s) on 2 cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _compute_rows_inner(db, rows, params, label, delta, options, dirs, max_examples, config):
    from kerasgen.checkpoints import load_cell_weights
    from kerasgen.models import build_model
    from kerasgen.store import Store, utc_now
    from kerasgen.train import prepare_dataset

    written: list[dict] = []
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault((row.study, row.model, row.dataset), []).append(row)
    with Store(db) as store:
        for (study_name, model_name, dataset), members in groups.items():
            # Read through the open connection: a second, read-only one next to this
            # writer once failed with "disk I/O error" (WAL index) mid-run.
            study_row = store.study(study_name) or {}
            spec = json.loads(study_row.get("spec_json") or "{}")
            dtype = spec.get("training", {}).get("dtype", "float32")
            ds = prepare_dataset(dataset, options, dtype)
            idx = _subset(ds.train_size, max_examples, config.seed)
            x = ds.normalize(ds.x_train[idx])
            y = ds.y_train[idx]
            from kerasgen.naming import model_ref

            ref = model_ref(model_name, spec.get("model_targets")).with_args(
                (spec.get("model_args") or {}).get(model_name))
            model = build_model(ref, num_classes=ds.num_classes, input_shape=ds.input_shape)
            selection = select_parameters(model, params)
            objective = None
            for row in members:
                started = time.perf_counter()
                model.set_weights(load_cell_weights(dirs[study_name], row.cell_id))
                if objective is None:
                    objective = Objective(model, selection, x, y, config.chunk, config.pfor_rows)
                est = estimate_curvature(model, x, y, selection, config, objective=objective)
                report = bound_terms(est, float(row.learning_rate), float(row.batch_size),
                                     ds.train_size, delta)
                seconds = time.perf_counter() - started
                runner_loss = row.final_train_loss
                loss = est.info.get("train_loss")
                near_min = None
                if loss is not None and runner_loss is not None and math.isfinite(runner_loss):
                    near_min = bool(loss <= max(2 * runner_loss, runner_loss + 0.05))
                details = {"curvature": est.info, "bounds": report, "seconds": seconds,
                           "n_train": ds.train_size, "max_examples": max_examples,
                           "runner_final_train_loss": runner_loss, "near_minimum": near_min,
                           "config": asdict(config)}
                values = {
                    "cell_id": int(row.cell_id), "params": label, "estimator": est.estimator,
                    "n_params": est.d, "n_examples": est.n_examples, "delta": float(delta),
                    "trace_ca_inv": report["trace_CAinv"], "logdet_sigma": report["logdet_sigma"],
                    "kl": report["kl"], "theorem1": report["theorem1"],
                    "theorem1_discrete": report["theorem1_discrete"],
                    "theorem2": report["theorem2"], "commutator": report["commutator_norm"],
                    "assumption2": int(bool(report["assumption2"])),
                    "critical_ratio": report["critical_ratio"],
                    "report_json": json.dumps(_json_safe(details), sort_keys=True),
                    "computed_at": utc_now(),
                }
                store.save_bound_row(values)
                written.append({**values, "report": details})
                t2 = report["theorem2"]
                print(f"cell {row.cell_id} {model_name} bs={row.batch_size} "
                      f"lr={row.learning_rate:g}: d={est.d} {label} {est.estimator} "
                      f"({est.info.get('treatment')}: d_eff={est.d_eff}), "
                      f"theorem1={report['theorem1']:.4g}, "
                      f"theorem2={'undefined' if t2 is None else f'{t2:.4g}'}, "
                      f"tr(CA^-1)={report['trace_CAinv']:.4g}, "
                      f"assumption2={'yes' if report['assumption2'] else 'no'} "
                      f"[{seconds:.1f} s]", flush=True)
                if near_min is False:
                    print(f"  warning: cell {row.cell_id} is not at a minimum in inference mode "
                          f"(mean training loss {loss:.3g} with batch norm's moving statistics "
                          f"vs {runner_loss:.3g} recorded in training); Section 3 assumes one",
                          flush=True)
    return written

__all__ = ["compute_bounds_for_store"]
