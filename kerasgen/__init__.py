"""kerasgen: controlled studies of how batch size and learning rate shape generalization.

Importing ``kerasgen`` is cheap: TensorFlow is loaded only by the modules that train
(``kerasgen.models``, ``kerasgen.train``, ``kerasgen.worker``, ``kerasgen.callbacks``),
so the store, the analysis and the dashboard start in well under a second.

Public names (resolved lazily on first use):

- ``Spec(name=..., models=[...], ...)``  a study (lists, ranges and dicts as the TOML)
- ``spec_from_dict(data)``, ``load_spec(path)``, ``preset(name)``  other ways to get one
- ``RunOptions(...)``            how it runs (pack size, checkpoint directory, oneDNN, ...)
- ``run_study(spec, db, options)``  train every cell of a study into a SQLite store
- ``load_results(db)``           one row per cell as a ``pandas.DataFrame``
- ``load_epochs(db, ...)``       one row per cell per epoch
- ``SQLiteLogger``               a Keras callback that streams epochs into a store
- ``Store``, ``StoreError``      the store itself
- ``register_model(name, build_fn)``  a network of your own, by name in a spec's models
- ``Dataset``                    what a data set of your own may return (arrays and how
                                 to normalise and augment them)
- ``rank_measures(frame)``       generalization measures ranked as Jiang et al. (2020) do
  (``kerasgen.measures``: the frame from ``measure_frame(db)``)
- ``spearman_tests(frame, metric=..., alpha=..., ...)``  Tables 1-3 of a results frame,
  tidy: coefficients, the paper's and the permutation p-values, intervals over seeds,
  adjusted p-values (``kerasgen.analysis``)
- ``ratio_model(frame, metric=...)``  does only the ratio matter? ``metric ~ log2(batch
  size) + log2(learning rate)`` per grid (statsmodels MixedLM; OLS with one seed), with
  the test of beta_BS + beta_LR = 0
- ``noise_floor(frame, ...)``, ``premise_check(frame, ...)``  do the cells differ by more
  than seed noise; is every cell trained equally well
- ``summary(db, study=None, metric=...)``  one row per grid: the report's headline numbers
  (Table 3's SCC with its interval and Holm verdict, only the ratio?, the noise floor, the
  premise warnings, the tests that cannot reach alpha), as Keras Tuner's
  ``results_summary()`` or Optuna's ``trials_dataframe()``
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "run_study": "kerasgen.worker",
    "load_results": "kerasgen.store",
    "load_epochs": "kerasgen.store",
    "Store": "kerasgen.store",
    "StoreError": "kerasgen.store",
    "SQLiteLogger": "kerasgen.callbacks",
    "Spec": "kerasgen.spec",
    "SpecError": "kerasgen.spec",
    "load_spec": "kerasgen.spec",
    "spec_from_dict": "kerasgen.spec",
    "preset": "kerasgen.spec",
    "RunOptions": "kerasgen.options",
    "register_model": "kerasgen.naming",
    "Dataset": "kerasgen.data",
    "rank_measures": "kerasgen.measures.rank",
    "spearman_tests": "kerasgen.analysis",
    "ratio_model": "kerasgen.analysis",
    "noise_floor": "kerasgen.analysis",
    "premise_check": "kerasgen.analysis",
    "summary": "kerasgen.report.headline",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kerasgen' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
