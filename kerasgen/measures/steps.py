"""Steps and compute beside epochs (Shallue et al. 2019, *Measuring the Effects of Data
Parallelism on Neural Network Training*), from the ``epochs`` table alone.

With a fixed epoch budget a large batch takes fewer SGD steps, so a large ratio |S|/eta
is also fewer steps, and a smaller step size: under-training can pass for the ratio's
effect. This module reads each run's learning curve in steps instead of epochs:

- ``steps_per_epoch(n, batch_size, drop_last)``: what the runner takes (the last
  partial batch kept or dropped as the study's ``training.last_batch`` says);
- :func:`steps_to_target`: the epochs and steps each run needs to reach a target test
  accuracy (default per grid: the highest accuracy every finished run reaches);
- :func:`matched_accuracy`: each run's test accuracy at a matched budget: the same
  number of SGD steps (``by="steps"``), or the same learning rate x steps
  (``by="lr_steps"``, the "time" of SGD's continuous-time picture), by default the
  smallest budget any finished run of the grid trained for, so that every run has it.
  Between two evaluated epochs the accuracy is interpolated linearly in steps; a budget
  before a run's first evaluation has no value;
- :func:`matched_table3`: the paper's Table 3 (Spearman of test accuracy with the ratio
  over the grid's cells, seeds averaged) at the kept epoch, at matched steps and at
  matched learning rate x steps, with batch size and learning rate beside, and whether
  the ratio's effect survives the matching;
- :func:`store_measures`: the optimisation measures read from the epochs
  (``epochs_to_stop``, ``steps_to_stop``, ``train_loss_kept``).

The training-set size comes from the data set's name (CIFAR, digits, synthetic); for
another data set the step counts are missing and the reason says so.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from kerasgen import analysis
from kerasgen.naming import known_train_size

GRID = ["study", "model", "dataset"]
STOP_ACCURACY = 0.99  # clean training accuracy that counts as "trained" without a stop rule


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def _with_steps(epochs: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """The epoch rows of finished runs with ``steps`` (SGD steps done by the end of the
    epoch) and ``lr_steps`` (learning rate x steps); NaN steps where the training-set
    size is unknown."""
    done = results[results["status"] == "done"]
    info = done[["cell_id", "batch_size", "learning_rate", "dataset", "last_batch"]]
    rows = epochs.drop(columns=[c for c in ("batch_size", "learning_rate", "dataset")
                                if c in epochs.columns]).merge(info, on="cell_id", how="inner")
    spe = []
    for r in rows[["dataset", "batch_size", "last_batch"]].itertuples(index=False):
        n = known_train_size(str(r.dataset))
        spe.append(math.nan if n is None else steps_per_epoch(n, int(r.batch_size),
                                                              r.last_batch == "drop"))
    rows["steps_per_epoch"] = spe
    rows["steps"] = (rows["epoch"] + 1) * rows["steps_per_epoch"]
    rows["lr_steps"] = rows["steps"] * rows["learning_rate"]
    return rows.sort_values(["cell_id", "epoch"]).reset_index(drop=True)


def steps_to_target(results: pd.DataFrame, epochs: pd.DataFrame,
                    target: float | None = None) -> pd.DataFrame:
    """Per finished run: ``target`` (its grid's), ``epochs_to_target`` (epochs until the
    test accuracy first reaches it; NaN if never) and ``steps_to_target``."""
    rows = _with_steps(epochs, results)
    done = analysis.normalize(results[results["status"] == "done"])
    out = []
    for key, grid in done.groupby(GRID, sort=True):
        curves = rows[rows["cell_id"].isin(grid["cell_id"])]
        best = curves.groupby("cell_id")["test_accuracy"].max()
        goal = float(best.min()) if target is None else float(target)
        for cell_id, curve in curves.groupby("cell_id", sort=True):
            hit = curve[curve["test_accuracy"] >= goal - 1e-12]
            first = hit.iloc[0] if len(hit) else None
            out.append({**dict(zip(GRID, key)), "cell_id": int(cell_id), "target": goal,
                        "epochs_to_target": math.nan if first is None else int(first["epoch"]) + 1,
                        "steps_to_target": math.nan if first is None else float(first["steps"])})
    return pd.DataFrame(out, columns=[*GRID, "cell_id", "target", "epochs_to_target",
                                      "steps_to_target"])


def matched_accuracy(results: pd.DataFrame, epochs: pd.DataFrame, by: str = "steps",
                     budget: float | None = None) -> pd.DataFrame:
    """Per finished run: its test accuracy at its grid's matched budget (``by`` =
    ``"steps"`` or ``"lr_steps"``; module docstring): columns ``budget``,
    ``matched_accuracy``, ``matched_epoch`` (the fractional epoch it corresponds to)."""
    if by not in ("steps", "lr_steps"):
        raise ValueError(f"by must be 'steps' or 'lr_steps', not {by!r}")
    rows = _with_steps(epochs, results)
    rows = rows[rows["test_accuracy"].notna()]
    done = analysis.normalize(results[results["status"] == "done"])
    out = []
    for key, grid in done.groupby(GRID, sort=True):
        curves = rows[rows["cell_id"].isin(grid["cell_id"])]
        if curves.empty or curves[by].isna().all():
            continue
        at = float(curves.groupby("cell_id")[by].max().min()) if budget is None else float(budget)
        for cell_id, curve in curves.groupby("cell_id", sort=True):
            x, y = curve[by].to_numpy(float), curve["test_accuracy"].to_numpy(float)
            e = curve["epoch"].to_numpy(float) + 1
            if not len(x) or at < x[0] - 1e-9 or at > x[-1] + 1e-9:
                acc, epoch = math.nan, math.nan
            else:
                acc, epoch = float(np.interp(at, x, y)), float(np.interp(at, x, e))
            out.append({**dict(zip(GRID, key)), "cell_id": int(cell_id), "by": by,
                        "budget": at, "matched_accuracy": acc, "matched_epoch": epoch})
    return pd.DataFrame(out, columns=[*GRID, "cell_id", "by", "budget", "matched_accuracy",
                                      "matched_epoch"])


def _spearman_rows(grid: pd.DataFrame, column: str, label: str, alpha: float) -> list[dict]:
    cells = grid.groupby(["batch_size", "learning_rate"], sort=True)[column].mean().reset_index()
    cells = cells[np.isfinite(cells[column])]
    cells["ratio"] = cells["batch_size"] / cells["learning_rate"]
    out = []
    for variable in ("ratio", "batch_size", "learning_rate"):
        res = analysis.spearman(cells[variable], cells[column])
        out.append({"accuracy": label, "variable": variable, "scc": res.scc,
                    "p_value": res.p_value, "n": res.n, "reason": res.reason,
                    "significant": bool(res.reason is None and res.p_value < alpha)})
    return out


def matched_table3(results: pd.DataFrame, epochs: pd.DataFrame, alpha: float = 0.005
                   ) -> pd.DataFrame:
    """Per grid, Spearman's rho of test accuracy (cell means over seeds) with the ratio,
    the batch size and the learning rate: at the kept epoch (the paper's Table 3), at
    matched steps and at matched learning rate x steps (:func:`matched_accuracy`), with
    the budgets; ``survives`` says for the ratio rows whether a significant negative
    correlation at the kept epoch is still significant and negative when matched."""
    done = analysis.normalize(analysis.add_derived_metrics(results[results["status"] == "done"]))
    steps = matched_accuracy(results, epochs, "steps")
    lr_steps = matched_accuracy(results, epochs, "lr_steps")
    rows = []
    for key, grid in done.groupby(GRID, sort=True):
        base = dict(zip(GRID, key))
        kept = _spearman_rows(grid, "test_accuracy", "kept epoch", alpha)
        parts = [(kept, math.nan)]
        for frame, label in ((steps, "matched steps"), (lr_steps, "matched lr × steps")):
            sub = frame[(frame["study"] == key[0]) & (frame["model"] == key[1])
                        & (frame["dataset"] == key[2])]
            merged = grid.merge(sub[["cell_id", "matched_accuracy"]], on="cell_id")
            budget = float(sub["budget"].iloc[0]) if len(sub) else math.nan
            parts.append((_spearman_rows(merged, "matched_accuracy", label, alpha)
                          if len(merged) else [], budget))
        reference = next(r for r in kept if r["variable"] == "ratio")
        negative = reference["significant"] and reference["scc"] < 0
        for found, budget in parts:
            for r in found:
                survives = None
                if r["variable"] == "ratio" and r["accuracy"] != "kept epoch":
                    survives = (bool(negative and r["significant"] and r["scc"] < 0)
                                if negative else None)
                rows.append({**base, **r, "budget": budget, "survives": survives})
    return pd.DataFrame(rows, columns=[*GRID, "accuracy", "variable", "scc", "p_value", "n",
                                       "reason", "significant", "budget", "survives"])


def store_measures(results: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """The optimisation measures of the finished runs read from their epochs, long
    (``cell_id``, ``measure``, ``value``): ``epochs_to_stop`` (epochs until the Keras
    training loss fell below the stop rule's threshold, else until the clean training
    accuracy reached 99%; NaN if never), ``steps_to_stop`` and ``train_loss_kept`` (the
    clean training loss at the kept epoch)."""
    if results.empty or epochs.empty:
        return pd.DataFrame(columns=["cell_id", "measure", "value"])
    rows = _with_steps(epochs, results)
    thresholds = _stop_thresholds(results)
    out = []
    done = results[results["status"] == "done"]
    for r in done.itertuples():
        curve = rows[rows["cell_id"] == r.cell_id]
        threshold = thresholds.get(r.study)
        if threshold is not None:
            hit = curve[curve["train_loss"] < threshold]
        else:
            hit = curve[curve["train_eval_accuracy"] >= STOP_ACCURACY]
        first = hit.iloc[0] if len(hit) else None
        out.append((r.cell_id, "epochs_to_stop",
                    math.nan if first is None else float(first["epoch"]) + 1))
        out.append((r.cell_id, "steps_to_stop",
                    math.nan if first is None else float(first["steps"])))
        out.append((r.cell_id, "train_loss_kept", float(r.train_eval_loss)
                    if r.train_eval_loss is not None else math.nan))
    return pd.DataFrame(out, columns=["cell_id", "measure", "value"])


def _stop_thresholds(results: pd.DataFrame) -> dict:
    """study -> the train_loss stop rule's threshold (None: no such rule)."""
    if "stop_threshold" in results.columns:
        return dict(zip(results["study"], results["stop_threshold"]))
    return {}


def with_stop_thresholds(results: pd.DataFrame, studies: pd.DataFrame) -> pd.DataFrame:
    """``results`` with ``stop_threshold`` (the study's train_loss rule, else None) from
    the ``studies`` table's specifications."""
    out = {}
    for name, spec in zip(studies["name"], studies["spec_json"]):
        try:
            stop = json.loads(spec).get("stop", {})
        except (TypeError, ValueError):
            stop = {}
        out[name] = stop.get("threshold") if stop.get("rule") == "train_loss" else None
    return results.assign(stop_threshold=[out.get(s) for s in results["study"]])


__all__ = ["matched_accuracy", "matched_table3", "steps_per_epoch", "steps_to_target",
           "store_measures", "with_stop_thresholds"]
