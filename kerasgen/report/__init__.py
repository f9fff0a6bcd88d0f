"""Render the analyses of :mod:`kerasgen.analysis` as the paper's Tables 1-3 and Figures 1-2.

``tables`` (Markdown, LaTeX, CSV), ``figures`` (PNG), ``bounds`` (the PAC-Bayes section),
``format`` (p-values, learning rates, labels).

Imports only numpy, pandas and :mod:`kerasgen.analysis` at module level (matplotlib is
imported inside the figure functions, with the Agg backend), so it is cheap to import.

Public API (stable; what ``kerasgen report`` wires to)
------------------------------------------------------
- ``FORMATS = ("markdown", "csv", "latex")``
- ``render_report(frame, fmt="markdown", metric="test_accuracy", alpha=0.005,
  pvalue="auto", include_diverged=True, min_cells=3, permutations=9999,
  seed=0, train_accuracy_threshold=0.99, confidence=0.95, n_resamples=999) -> str``
    markdown: settings, cell counts, Tables 1-3 (each SCC with its interval over seeds
    or the range of two seeds, the paper's p and the permutation p of the verdict,
    marked where it survives Holm / Benjamini-Hochberg / Benjamini-Yekutieli), direction
    summary, the statistics section (seeds, intervals, verdicts, multiple testing, the
    whole grid's intervals and Theil-Sen slopes, noise floor, each seed alone), "Does
    only the ratio matter?", the selection of the kept epoch, beyond-paper metrics,
    premise check; csv: the tidy tests table (all metrics, ``metric`` first; Table 3
    rows carry the grid's ratio model); latex: the three tables (booktabs), the whole
    grid's intervals and slopes, and the ratio model.
- ``format_interval(low, high) -> str``   ``[-0.91, -0.72]``, ``n/a``
- ``table_markdown(tests, table) -> str`` / ``table_latex(tests, table) -> str``
    one of Tables 1-3 from a tests frame of a single metric.
- ``tests_csv(tests) -> str``
- ``format_p(p) -> str`` (``2.6e-11``) / ``format_p_latex(p) -> str``
- ``display_name(name) -> str``   ``resnet110 -> ResNet-110``, ``cifar10 -> CIFAR-10``
- ``status_counts(frame) -> DataFrame``   cells per status per grid
- ``write_figures(frame, out_dir, metric="test_accuracy", include_diverged=True,
  dpi=120) -> list[Path]``
    ``figure1_ratio.png``, ``figure2a_batch_size.png``, ``figure2b_learning_rate.png``
    and one ``heatmap_<model>_<dataset>.png`` per grid (``heatmap_<study>_<model>_
    <dataset>.png`` when the frame holds several studies).

The CLI maps ``--format`` to ``fmt``, ``--alpha``, ``--pvalue``, ``--metric``,
``--confidence``, ``--permutations`` to the same-named arguments,
``--exclude-diverged`` to ``include_diverged=False`` and ``--figures DIR`` to
``write_figures(frame, DIR, metric=...)``.
"""

from kerasgen.report.figures import file_stem, write_figures
from kerasgen.report.format import format_p, format_p_latex
from kerasgen.report.tables import (
    FORMATS,
    format_interval,
    render_report,
    status_counts,
    table_latex,
    table_markdown,
    tests_csv,
)
from kerasgen.vocabulary import display_name

__all__ = ["FORMATS", "display_name", "file_stem", "format_interval", "format_p", "format_p_latex",
           "render_report", "status_counts", "table_latex", "table_markdown", "tests_csv",
           "write_figures"]
