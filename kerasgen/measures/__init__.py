"""Which measure of a trained network predicts its generalization gap? Jiang et al.'s
method (ICLR 2020, *Fantastic Generalization Measures*) on a kerasgen study.

Two halves, on either side of the TensorFlow line:

- computing (Keras/TensorFlow; ``kerasgen measures`` only): ``catalogue`` (the measures
  and their defaults; no TensorFlow), ``numeric`` (power iteration, Lanczos, Hutchinson,
  projected ascent, bisection, the noise scale, on numpy callables), ``network`` (the
  measures of one Keras network), ``runs`` (every finished run of a store, into the
  ``measures`` table);
- ranking (pandas and scipy; the report and the dashboard): ``rank`` (Kendall's tau,
  the granulated Psi, seed-aware intervals, the partial rank correlation of the ratio
  given a measure, the conditional-mutual-information criterion), ``steps`` (steps to a
  target accuracy, accuracy at matched steps, Table 3 at matched steps).

Every public name is resolved lazily on first use, so ``import kerasgen.measures``
loads neither TensorFlow nor pandas.

Public API
----------
- ``MEASURES``, ``DEFAULT_MEASURES``, ``NETWORK_MEASURES``, ``check_measure_names(names)``,
  ``MeasureError``                                          (``catalogue``)
- ``compute_measures_for_store(db, study=None, cells=None, measures=None,
  data_dir="data", checkpoint_dir=None, config=MeasureConfig(), recompute=False)``,
  ``MeasureConfig``                                         (``runs``; TensorFlow)
- ``measure_frame(db, study=None) -> DataFrame``            one row per (run, measure)
- ``rank_measures(frame, target="gap", confidence=0.95) -> DataFrame``  (also
  ``kerasgen.rank_measures``)
- ``kendall_tau``, ``granulated_tau``, ``partial_rank_correlation``, ``conditional_mi``,
  ``jackknife_interval``, ``best_predictor``, ``verdict``  (``rank``)
- ``steps_to_target``, ``matched_accuracy``, ``matched_table3``, ``steps_per_epoch``
                                                            (``steps``)
"""

from __future__ import annotations

import importlib

_LAZY = {
    "MEASURES": "catalogue", "DEFAULT_MEASURES": "catalogue", "NETWORK_MEASURES": "catalogue",
    "MeasureError": "catalogue", "check_measure_names": "catalogue",
    "compute_measures_for_store": "runs", "MeasureConfig": "runs",
    "measure_frame": "rank", "rank_measures": "rank", "kendall_tau": "rank",
    "granulated_tau": "rank", "partial_rank_correlation": "rank", "conditional_mi": "rank",
    "jackknife_interval": "rank", "best_predictor": "rank", "verdict": "rank",
    "steps_to_target": "steps", "matched_accuracy": "steps", "matched_table3": "steps",
    "steps_per_epoch": "steps",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kerasgen.measures' has no attribute {name!r}")
    return getattr(importlib.import_module(f"kerasgen.measures.{module}"), name)
