"""The report's order, shared by its Markdown, HTML and LaTeX forms: the findings box
first, then Figure 1 and the heatmaps, then how to read the tables (stated once), then
the tables and the sections that explain them, then the other figures.

A figure is known by its file name (``write_figures``' names); ``figures_markdown`` and
``figures_latex`` place them, and :func:`kerasgen.report.html.render_html` embeds them
at the same places."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

FINDINGS_HEADING = "Findings"
FIGURES_HEADING = "Figures"
LEGEND_HEADING = "How to read the tables"
MORE_FIGURES_HEADING = "More figures"

INTERACTIVE_PAGE = "interactive_heatmaps.html"
"""The interactive page ``write_figures`` writes beside the PNGs (plotly)."""

CAPTIONS = (
    (r"^figure1_ratio", "Figure 1: the metric against batch size / learning rate, one "
                        "panel per grid (a point per cell, its mean over seeds, coloured by "
                        "learning rate), the grid's SCC and p in each panel"),
    (r"^figure2a_batch_size", "Figure 2a: the metric against batch size, one curve per "
                              "learning rate"),
    (r"^figure2b_learning_rate", "Figure 2b: the metric against learning rate, one curve "
                                 "per batch size"),
    (r"^heatmap_", "The grid's metric per cell (batch size x learning rate, the mean over "
                   "seeds)"),
    (r"^curves_", "Learning curves: training and test accuracy of every cell by epoch, one "
                  "line style per seed, the kept epoch marked; the y axis is zoomed to the "
                  "second half of training"),
    (r"^gap_", "Generalization gap (clean train - test accuracy at the kept epoch) per cell"),
    (r"^bound", "PAC-Bayes bound terms against the ratio and the measured gap"),
    (r"^interactive_", "Interactive heatmaps: the metric over log2 batch size x log2 "
                       "learning rate, a tooltip per cell"),
)


def caption(path: Path) -> str:
    """What a figure file shows, from its name (``write_figures``' file names)."""
    stem = Path(path).stem
    for pattern, text in CAPTIONS:
        if re.search(pattern, stem):
            return text
    return stem.replace("_", " ")


def is_key_figure(path: Path) -> bool:
    """Figure 1 and the heatmaps: the figures that come before the tables."""
    stem = Path(path).stem
    return Path(path).suffix.lower() == ".png" and (stem.startswith("figure1_")
                                                    or stem.startswith("heatmap_"))


def interactive_note(figures: Iterable[Path]) -> str:
    """Where the interactive page is, or why there is none (plotly not installed)."""
    pages = [Path(p) for p in figures if Path(p).name == INTERACTIVE_PAGE]
    if pages:
        return (f"Interactive heatmaps (hover a cell for its numbers): `{pages[0].name}`, "
                "written beside the PNG files.")
    from importlib.util import find_spec

    if find_spec("plotly") is None:
        return ("No interactive page: plotly is not installed "
                "(`pip install 'kerasgen[interactive]'`).")
    return ""


def _destination(path: Path) -> str:
    return "<" + re.sub(r"[<>\s]", lambda m: "%20" if m.group(0).isspace() else "",
                        Path(path).as_posix()) + ">"


def figures_markdown(figures: Sequence[Path] | None, heading: str,
                     select: Callable[[Path], bool]) -> list[str]:
    """A figures section of the Markdown report: the selected PNGs as images (their
    captions as alt text) with the interactive page's note; without figures, how to get
    them (only for the key figures' section)."""
    if figures is None:
        if heading != FIGURES_HEADING:
            return []
        return [f"## {heading}\n",
                "Figure 1 and a heatmap per grid: `kerasgen report --figures DIR` writes them "
                "as PNG files (with an interactive page), `--format html` embeds them here.\n"]
    chosen = [Path(p) for p in figures if Path(p).suffix.lower() == ".png" and select(Path(p))]
    if not chosen and heading != FIGURES_HEADING:
        return []
    lines = [f"## {heading}\n"]
    lines += [f"![{caption(p)}]({_destination(p)})\n" for p in chosen]
    if heading == FIGURES_HEADING:
        note = interactive_note(figures)
        if note:
            lines.append(note + "\n")
    return lines


def figures_latex(figures: Sequence[Path] | None, select: Callable[[Path], bool]) -> str:
    """The selected PNGs as LaTeX figures (``graphicx``), each with its caption."""
    from kerasgen.report.format import latex_escape

    if not figures:
        return ""
    out = []
    for p in figures:
        p = Path(p)
        if p.suffix.lower() != ".png" or not select(p):
            continue
        out += [r"\begin{figure}[ht]", r"\centering",
                rf"\includegraphics[width=\linewidth]{{{p.as_posix()}}}",
                rf"\caption{{{latex_escape(caption(p))}.}}",
                rf"\label{{fig:{re.sub(r'[^A-Za-z0-9]+', '-', p.stem)}}}",
                r"\end{figure}", ""]
    return "\n".join(out)


__all__ = ["CAPTIONS", "FIGURES_HEADING", "FINDINGS_HEADING", "INTERACTIVE_PAGE",
           "LEGEND_HEADING", "MORE_FIGURES_HEADING", "caption",
           "figures_latex", "figures_markdown", "interactive_note", "is_key_figure"]
