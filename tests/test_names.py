"""Names are text everywhere (issue 22, items 7, 8): hostile study, model and data-set
names taken through every output format come out as the characters they are, never as
markup, a formula, a remote resource or a path; file names stay within the file system's
limits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kerasgen.store import Store

LATEX_SPECIALS = "\\{}#$%&_^~"
HOSTILE = {
    "study": "=HYPERLINK(\"http://evil/x\") ![t](http://host/x.png) | $\\frac{",
    "model": "net\n# Injected heading | <b>bold</b> \\input{/etc/hostname} " + LATEX_SPECIALS,
    "dataset": "+data @set -x " + "d" * 300,
}


@pytest.fixture
def hostile(tmp_path) -> Path:
    """A finished 2 x 2 grid whose study, model and data set have hostile names."""
    db = tmp_path / "h.db"
    with Store(db) as store:
        for bs in (16, 32):
            for lr in (0.05, 0.1):
                store.ensure_cell(HOSTILE["study"], HOSTILE["model"], HOSTILE["dataset"], bs,
                                  lr, 0)
        for cell_id in range(1, 5):
            for epoch in range(3):
                acc = 0.5 + 0.1 * epoch - 0.01 * cell_id
                store.record_epoch(cell_id, epoch, {
                    "train_loss": 1.0 - 0.2 * epoch, "train_accuracy": acc + 0.05,
                    "test_loss": 1.1 - 0.2 * epoch, "test_accuracy": acc,
                    "train_eval_loss": 0.9 - 0.2 * epoch, "train_eval_accuracy": acc + 0.04})
            store.finish_cell(cell_id, "done")
    return db


def test_markdown_and_html_carry_names_as_text_with_no_remote_resource(hostile, tmp_path):
    from markdown_it import MarkdownIt

    from kerasgen.report import render_report, write_figures
    from kerasgen.report.html import render_html
    from kerasgen.store import load_results

    frame = load_results(hostile)
    markdown = render_report(frame)
    tokens = MarkdownIt("commonmark", {"html": False}).enable("table").parse(markdown)
    headings = [tokens[i + 1].content for i, t in enumerate(tokens) if t.type == "heading_open"]
    assert not any("Injected" in h for h in headings)  # no heading from a name's newline
    inline = [c for t in tokens if t.type == "inline" for c in t.children or []]
    assert not [c for c in inline if c.type in ("image", "link_open", "html_inline")]
    # Every row of every table has as many cells as its header (no | from a name).
    rows = [line for line in markdown.splitlines() if line.startswith("| ")]
    for line in rows:
        assert len(re.findall(r"(?<!\\)\|", line)) >= 2
    page = render_html(markdown, write_figures(frame, tmp_path / "figs"))
    assert re.findall(r'src="(?!data:)', page) == []
    assert "http://host/x.png" in page  # the name, shown as text
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page


def test_latex_escapes_all_ten_special_characters(hostile):
    from kerasgen.report import render_report
    from kerasgen.report.format import latex_escape
    from kerasgen.store import load_results

    assert latex_escape(LATEX_SPECIALS) == (
        r"\textbackslash{}\{\}\#\$\%\&\_\textasciicircum{}\textasciitilde{}")
    latex = render_report(load_results(hostile), fmt="latex")
    assert r"\input" not in latex.replace(r"\textbackslash{}input", "")
    assert r"\textbackslash{}input\{/etc/hostname\}" in latex
    assert "Injected" in latex and "\n# Injected" not in latex


def test_csv_cells_that_would_run_as_formulas_start_with_a_quote(hostile, tmp_path):
    import pandas as pd

    from kerasgen.export import export_tables
    from kerasgen.report import render_report
    from kerasgen.store import load_results

    report = render_report(load_results(hostile), fmt="csv")
    assert "'=HYPERLINK" in report
    assert not re.search(r'(^|,)"?=HYPERLINK', report, re.M)
    export_tables(hostile, tmp_path / "csv", "csv")
    cells = pd.read_csv(tmp_path / "csv" / "cells.csv")
    assert set(cells["study"]) == {"'" + HOSTILE["study"]}
    assert set(cells["dataset"]) == {"'" + HOSTILE["dataset"]}
    assert (cells["batch_size"] > 0).all()  # numbers stay numbers


def test_figures_draw_a_name_with_invalid_mathtext_and_a_name_too_long_for_a_file(
        hostile, tmp_path):
    from kerasgen.report import write_figures
    from kerasgen.store import load_results

    frame = load_results(hostile)
    paths = write_figures(frame, tmp_path / "figs")
    assert len(paths) >= 4 and all(p.exists() for p in paths)
    assert all(len(p.name.encode()) <= 255 for p in paths)


def test_tensorboard_run_names_are_safe_capped_paths(hostile, tmp_path):
    pytest.importorskip("tensorboard")
    from kerasgen.export import export_tensorboard

    export_tensorboard(hostile, tmp_path / "tb")
    runs = [p for p in (tmp_path / "tb").rglob("*") if p.is_dir()]
    assert runs and all(len(p.name.encode()) <= 255 for p in runs)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in runs)


def test_file_stems_are_capped_and_distinct_names_never_share_one():
    from kerasgen.naming import file_stem

    assert file_stem("resnet8") == "resnet8"
    assert file_stem("a b") != file_stem("a/b")
    long = file_stem("x" * 1000)
    assert len(long) <= 60 and long != file_stem("x" * 999)
    assert not file_stem("../..").startswith(".")
