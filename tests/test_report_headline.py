"""Claims about the report's headline (issue 25): the findings box comes first in every form
and says what the analyses say; the figures come before the tables; the figures show the
effect (zoomed, log axes for geometric grids, shared y, a style per seed); the interactive
page; kerasgen.summary and `kerasgen report --format summary`."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kerasgen import analysis as A
from kerasgen import report as R
from kerasgen.report import figures as F
from kerasgen.report.headline import headline, summary_text
from kerasgen.report.html import FINDINGS_BACKGROUND, render_html

BS = [16, 32, 64, 128]
LR = [0.0125, 0.025, 0.05, 0.1]  # geometric, as the demo's


def demo_like(seeds=(0, 1), models=("resnet8", "vgg11_w16"), rng_seed=0) -> pd.DataFrame:
    """A results frame like the demo's: accuracies at 0.97-0.99, a geometric LR grid."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for model in models:
        for seed in seeds:
            for bs in BS:
                for lr in LR:
                    acc = 0.985 - 0.002 * math.log2(bs / lr / 160) + rng.normal(0, 0.001)
                    rows.append({
                        "study": "demo", "cell_id": len(rows), "model": model,
                        "dataset": "mnist", "batch_size": bs, "learning_rate": lr,
                        "seed": seed, "ratio": bs / lr, "status": "done",
                        "best_metric": "test_accuracy", "kept_epoch": 8.0,
                        "test_accuracy": acc, "test_loss": 2.0 * (1.0 - acc),
                        "train_eval_accuracy": 0.999,
                        "train_eval_loss": float(rng.uniform(0.001, 0.01)),
                        "best_test_accuracy": acc, "best_epoch": 8.0,
                        "final_train_accuracy": 0.999, "final_train_loss": 0.005,
                        "final_test_accuracy": acc - 0.001, "final_test_loss": 0.05,
                        "epochs_done": 10, "diverged_epoch": np.nan,
                    })
    return pd.DataFrame(rows)


def epochs_of(frame: pd.DataFrame, epochs: int = 10) -> pd.DataFrame:
    """Learning curves that start low (0.2) and end where the cells differ (0.97-0.99)."""
    rows = []
    for cell in frame.itertuples():
        for e in range(epochs):
            t = cell.test_accuracy - 0.78 * math.exp(-2.0 * e)
            rows.append({"study": cell.study, "cell_id": cell.cell_id, "model": cell.model,
                         "dataset": cell.dataset, "batch_size": cell.batch_size,
                         "learning_rate": cell.learning_rate, "seed": cell.seed, "epoch": e,
                         "train_loss": 0.1, "train_accuracy": t + 0.01, "test_loss": 0.1,
                         "test_accuracy": t, "train_eval_loss": 0.1,
                         "train_eval_accuracy": min(t + 0.01, 1.0)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return demo_like()


@pytest.fixture(scope="module")
def rows(frame) -> pd.DataFrame:
    return headline(frame, permutations=999)


@pytest.fixture(scope="module")
def drawn(frame, tmp_path_factory):
    """The figures, drawn once, with every figure object kept (savefig recorded)."""
    from matplotlib.figure import Figure

    seen: dict[str, Figure] = {}
    real = Figure.savefig

    def savefig(self, path, *args, **kwargs):
        seen[Path(path).name] = self
        return real(self, path, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Figure, "savefig", savefig)
        paths = R.write_figures(frame, tmp_path_factory.mktemp("figs"), epochs=epochs_of(frame))
    return seen, paths


# --------------------------------------------------------------------------- the numbers


def test_the_headline_numbers_are_the_analyses_numbers(frame, rows):
    tests = A.spearman_tests(frame, permutations=999)
    models = A.ratio_model(frame)
    noise = A.noise_floor(frame)
    assert len(rows) == 2
    for row in rows.itertuples():
        t = tests[(tests["table"] == 3) & (tests["model"] == row.model)].iloc[0]
        grid = tests[tests["model"] == row.model]
        assert row.scc == pytest.approx(t["scc"]) and row.p_perm == pytest.approx(t["p_perm"])
        # Two seeds: the range of the two seeds' own coefficients, never a "95% CI".
        assert row.interval == "range of 2 seeds"
        assert (row.ci_low, row.ci_high) == pytest.approx((t["seed_scc_min"], t["seed_scc_max"]))
        assert row.holm == (t["p_holm"] < t["alpha"]) and row.significant == t["significant"]
        m = models[models["model"] == row.model].iloc[0]
        assert row.p_ratio == pytest.approx(m["p_ratio"])
        assert row.only_ratio == (m["p_ratio"] >= m["alpha"])
        nz = noise[noise["model"] == row.model].iloc[0]
        assert row.above_noise == nz["above_noise"] and row.noise_p == pytest.approx(nz["anova_p"])
        # Tables 1-2 of a 4 x 4 grid: 4 cells per group, smallest p 1/12 > 0.005.
        assert row.cannot_reach == int((grid["can_reach"] == False).sum()) == 8  # noqa: E712
        assert row.tests == 9


def test_three_seeds_give_the_interval_and_one_seed_none():
    three = headline(demo_like(seeds=(0, 1, 2)), permutations=999)
    tests = A.spearman_tests(demo_like(seeds=(0, 1, 2)), permutations=999)
    t3 = tests[tests["table"] == 3].set_index("model")
    for row in three.itertuples():
        assert row.interval == "95% CI"
        assert (row.ci_low, row.ci_high) == pytest.approx(
            (t3.loc[row.model, "ci_low"], t3.loc[row.model, "ci_high"]))
    one = headline(demo_like(seeds=(0,)), permutations=999)
    assert set(one["interval"]) == {"none"} and one["above_noise"].isna().all()
    assert "one seed: no interval" in summary_text(one)


def test_the_findings_box_is_first_in_markdown_and_says_the_numbers(frame, rows):
    markdown = R.render_report(frame, permutations=999)
    headings = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert headings[:4] == ["Findings", "Figures", "How to read the tables", "Cells"]
    assert headings.index("Figures") < headings.index("Tables 1-3 (as in the paper)")
    box = markdown.split("## Findings", 1)[1].split("\n## ", 1)[0]
    for row in rows.itertuples():
        assert f"SCC {row.scc:+.2f} (range of 2 seeds {row.ci_low:.2f} to {row.ci_high:.2f})" \
            in box
        assert f"p perm. = {A.format_p(row.p_perm)}" in box
        assert ("does not survive Holm over the 2 grids" in box) or \
            ("survives Holm over the 2 grids" in box)
        assert f"{A.format_p_eq(row.p_ratio)}" in box
    assert box.count("8 of its 9 tests (Tables 1-3) cannot reach α = 0.005") == 2
    assert box.count("Seeds: the cells") == 2
    # Titles are short: the kept-epoch rule is stated once, not in every title.
    assert markdown.count("(kept epoch: highest test accuracy)") == 2  # box and legend
    assert "**Table 3: SCC and p of batch size / learning rate to best test accuracy.**" \
        in markdown


def test_premise_warnings_reach_the_box_one_line_each():
    f = demo_like()
    # Under-training that tracks the ratio: the premise check's warning.
    f["train_eval_accuracy"] = 0.999 - 0.01 * np.log2(f["ratio"] / f["ratio"].min())
    markdown = R.render_report(f, permutations=999)
    box = markdown.split("## Findings", 1)[1].split("\n## ", 1)[0]
    premise = A.premise_check(f)
    warnings = [w for ws in premise["warnings"] for w in ws]
    assert warnings
    assert box.count("**Warning**:") == len(warnings)


def test_cannot_reach_is_said_in_every_table_cell_that_cannot(frame):
    markdown = R.render_report(frame, permutations=999)
    tests = A.spearman_tests(frame, permutations=999)
    for number in (1, 2):
        block = markdown.split(f"**Table {number}:", 1)[1].split("**Table", 1)[0]
        rows = [line for line in block.splitlines() if line.startswith("| ") and "---" not in
                line][1:]
        expected = int(((tests["table"] == number) & (tests["can_reach"] == False)).sum())  # noqa: E712
        assert sum(line.count("cannot reach α") for line in rows) == expected == 8


def test_the_latex_report_opens_with_the_findings_box(frame, rows, tmp_path):
    latex = R.render_report(frame, fmt="latex", permutations=999)
    assert latex.index(r"\section*{Findings}") < latex.index(r"\begin{table}")
    box = latex.split(r"\end{minipage}", 1)[0]
    for row in rows.itertuples():
        assert f"SCC +{row.scc:.2f}".replace("+-", "-") in box or f"SCC {row.scc:+.2f}" in box
    assert box.count(r"\item \textbf{Warning}") == 0
    # With figures, Figure 1 and the heatmaps come between the box and the tables.
    figures = [tmp_path / "figure1_ratio.png", tmp_path / "heatmap_resnet8_mnist.png",
               tmp_path / "curves_resnet8_mnist.png"]
    latex = R.render_report(frame, fmt="latex", permutations=999, figures=figures)
    assert latex.index("Findings") < latex.index("figure1_ratio.png") \
        < latex.index("heatmap_resnet8_mnist.png") < latex.index(r"\begin{table}") \
        < latex.index("curves_resnet8_mnist.png")


# --------------------------------------------------------------------------- HTML


class _Order(HTMLParser):
    """The page's sections and figures in document order."""

    def __init__(self):
        super().__init__()
        self.order: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and attrs.get("class") == "findings":
            self.order.append("findings-box")
        elif tag == "h2":
            self.order.append("h2:" + (attrs.get("id") or ""))
        elif tag == "figure":
            self.order.append("figure:" + (attrs.get("id") or ""))
        elif tag == "table":
            self.order.append("table")
        elif tag == "details":
            self.order.append("details")


@pytest.fixture(scope="module")
def page(frame, drawn, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("page") / "report.html"
    path.write_text(render_html(R.render_report(frame, permutations=999), drawn[1]))
    return path


def test_the_html_page_puts_the_box_then_figure_1_and_the_heatmaps_before_the_tables(page):
    reader = _Order()
    reader.feed(page.read_text())
    order = reader.order
    assert order[0] == "findings-box" and order[1] == "h2:findings"
    first_table = order.index("table")
    figures = [o for o in order if o.startswith("figure:")]
    before = [o for o in order[:first_table] if o.startswith("figure:")]
    assert before == ["figure:figure1_ratio", "figure:heatmap_resnet8_mnist",
                      "figure:heatmap_vgg11_w16_mnist"]
    # The other figures come after the tables, under "More figures".
    after = figures[len(before):]
    assert "figure:figure2a_batch_size" in after and "figure:curves_resnet8_mnist" in after
    assert order.index("h2:more-figures") > first_table
    # The legend is stated once, folded.
    assert order.index("details") < first_table
    text = page.read_text()
    assert "<details class=\"legend\"><summary><h2 id=\"how-to-read-the-tables\">" in text
    assert "interactive_heatmaps.html" in text


def test_the_html_pages_first_screen_shows_the_findings_box_in_chromium(page, tmp_path):
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome",
                                             "headless_shell") if shutil.which(b)), None)
    if binary is None:
        pytest.skip("no chromium binary on this machine (apt-get install chromium); the "
                    "page's order is still checked by the parser test above")
    shot = tmp_path / "first-screen.png"
    subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1280,1200", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    from matplotlib import image

    img = (image.imread(shot)[..., :3] * 255).round().astype(int)
    assert img.shape[:2] == (1200, 1280)
    colour = [int(FINDINGS_BACKGROUND[i:i + 2], 16) for i in (1, 3, 5)]
    box = np.all(np.abs(img - colour) <= 2, axis=-1)
    rows_with_box = np.flatnonzero(box.sum(axis=1) > 600)  # the box spans the page's width
    # The box is on the first screen, and tall enough to hold its lines.
    assert rows_with_box.size > 150, rows_with_box.size
    assert rows_with_box.min() < 600


# --------------------------------------------------------------------------- figures


def test_learning_curves_are_zoomed_to_the_data_with_a_style_per_seed(frame, drawn):
    seen, _ = drawn
    fig = seen["curves_resnet8_mnist.png"]
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    epochs = epochs_of(frame)
    mine = epochs[epochs["model"] == "resnet8"]
    late = mine[mine["epoch"] >= 4.5]
    values = late[["train_eval_accuracy", "test_accuracy"]].to_numpy()
    assert low <= values.min() and high >= values.max()
    assert low > 0.9 and high - low < 0.1  # not 0.2-1.0: the curves start at ~0.2
    # Every panel shares the zoom; each seed has its own line style, same colour.
    assert all(a.get_ylim() == (low, high) for a in fig.axes)
    styles = {line.get_linestyle() for line in ax.lines
              if line.get_color() == "tab:blue" and len(line.get_xdata()) > 1}
    assert len(styles) == 2
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "seed 0" in legend and "seed 1" in legend


def test_geometric_grids_go_on_log_axes_and_arithmetic_ones_stay_linear(drawn, tmp_path,
                                                                        monkeypatch):
    seen, _ = drawn
    fig2b = seen["figure2b_learning_rate.png"]
    panels = [a for a in fig2b.axes if a.get_label() != "<colorbar>"]
    assert all(a.get_xscale() == "log" for a in panels)
    assert all(a.xaxis.get_transform().base == 2 for a in panels)  # each LR doubles
    assert F.geometric_ratio(LR) == pytest.approx(2.0)
    assert F.geometric_ratio([0.01, 0.02, 0.03, 0.04]) is None  # the paper's grid: linear
    assert F.geometric_ratio([0.1, 0.2]) is None
    assert all(a.get_xscale() == "log" for a in seen["figure1_ratio.png"].axes[:2])
    # Tick labels are plain numbers, never mathtext source.
    fig1 = seen["figure1_ratio.png"]
    fig1.canvas.draw()
    labels = [t.get_text() for t in fig1.axes[0].get_xticklabels()]
    assert labels and not any("mathdefault" in t for t in labels)


def test_panels_of_one_data_set_share_their_y_axis(drawn, frame, tmp_path, monkeypatch):
    seen, _ = drawn
    for name in ("figure1_ratio.png", "figure2a_batch_size.png", "figure2b_learning_rate.png"):
        panels = [a for a in seen[name].axes if a.get_label() != "<colorbar>"]
        assert len(panels) == 2
        assert panels[0].get_ylim() == panels[1].get_ylim(), name
    # Off on request; across data sets only when asked (accuracies of different test
    # sets are not comparable).
    assert F.share_y_groups([("s", "a", "mnist"), ("s", "b", "cifar10")], "auto") == [[0], [1]]
    assert F.share_y_groups([("s", "a", "mnist"), ("s", "b", "cifar10")], True) == [[0, 1]]
    from matplotlib.figure import Figure

    kept: dict = {}
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, path, *a, **k: (
        kept.__setitem__(Path(path).name, self), real(self, path, *a, **k))[1])
    R.write_figures(frame, tmp_path, share_y=False, interactive=False)
    panels = kept["figure1_ratio.png"].axes[:2]
    assert panels[0].get_ylim() != panels[1].get_ylim()
    with pytest.raises(ValueError):
        R.write_figures(frame, tmp_path / "bad", share_y="yes")


def test_the_interactive_page_is_self_contained_with_a_tooltip_per_cell(drawn, frame):
    pytest.importorskip("plotly")
    page = [p for p in drawn[1] if p.suffix == ".html"]
    assert [p.name for p in page] == ["interactive_heatmaps.html"]
    text = page[0].read_text()
    assert not re.search(r'<script[^>]+src="http', text)  # the JavaScript is inlined
    # One tooltip per cell of each grid, with the cell's mean over seeds.
    mean = frame.groupby(["model", "batch_size", "learning_rate"])["test_accuracy"].mean()
    for (_model, bs, lr), value in mean.items():
        assert f"batch size {bs}<br>learning rate {lr:g}<br>ratio {bs / lr:g}<br>" \
               f"best test accuracy: {value:.4f}" in text.replace("\\u003cbr\\u003e", "<br>")


def test_without_plotly_the_report_says_so_and_skips_only_that_page(frame, tmp_path,
                                                                    monkeypatch):
    import builtins

    real = builtins.__import__

    def no_plotly(name, *args, **kwargs):
        if name.startswith("plotly"):
            raise ImportError("no plotly")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_plotly)
    monkeypatch.setattr("importlib.util.find_spec",
                        lambda name, *a: None if name == "plotly" else object())
    paths = R.write_figures(frame, tmp_path)
    assert paths and all(p.suffix == ".png" for p in paths)
    page = render_html(R.render_report(frame, permutations=99), paths)
    assert "No interactive page: plotly is not installed" in page


# --------------------------------------------------------------------------- summary


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """Two finished 4 x 4 grids of two seeds in a real store (three epochs each)."""
    from kerasgen.store import Store

    db = tmp_path_factory.mktemp("store") / "demo.db"
    rng = np.random.default_rng(3)
    with Store(db) as st:
        ids = []
        for model in ("resnet8", "vgg11_w16"):
            for seed in (0, 1):
                for bs in BS:
                    for lr in LR:
                        st.ensure_cell("demo", model, "mnist", bs, lr, seed)
                        ids.append((len(ids) + 1,  # cells are numbered from 1 as created
                                    0.985 - 0.002 * math.log2(bs / lr / 160)))
        for cell_id, acc in ids:
            for epoch in range(3):
                a = acc - 0.01 * (2 - epoch) + float(rng.normal(0, 0.001))
                st.record_epoch(cell_id, epoch, {
                    "train_loss": 0.1, "train_accuracy": a + 0.01, "test_loss": 0.1,
                    "test_accuracy": a, "train_eval_loss": 0.05,
                    "train_eval_accuracy": min(a + 0.012, 1.0)})
            st.finish_cell(cell_id, "done")
    return db


def test_summary_is_a_frame_of_the_analyses_numbers_one_row_per_grid(store):
    import kerasgen
    from kerasgen.store import load_results

    table = kerasgen.summary(store, permutations=999)
    assert isinstance(table, pd.DataFrame) and len(table) == 2
    frame = A.add_derived_metrics(load_results(store))
    tests = A.spearman_tests(frame, permutations=999)
    t3 = tests[tests["table"] == 3].set_index("model")
    models = A.ratio_model(frame).set_index("model")
    for row in table.itertuples():
        assert row.scc == pytest.approx(t3.loc[row.model, "scc"])
        assert row.p_perm == pytest.approx(t3.loc[row.model, "p_perm"])
        assert row.p_ratio == pytest.approx(models.loc[row.model, "p_ratio"])
        assert row.cells == 16 and row.seeds == 2
    assert list(table.columns[:3]) == ["study", "model", "dataset"]
    assert kerasgen.summary(store, study="demo", permutations=999)["scc"].tolist() == \
        pytest.approx(table["scc"].tolist())


def test_report_format_summary_prints_one_line_per_grid(store, tmp_path):
    import os

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-m", "kerasgen", "report", "--db", str(store),
                           "--format", "summary", "--permutations", "999"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].startswith("ResNet-8 on MNIST (16 cells, 2 seeds): SCC ")
    assert lines[1].startswith("VGG-11 (width 16) on MNIST (16 cells, 2 seeds): SCC ")
    table = headline(A.add_derived_metrics(__import__("kerasgen").load_results(store)),
                     permutations=999)
    for line, row in zip(lines, table.itertuples()):
        assert f"SCC {row.scc:+.2f}" in line and f"p perm. = {A.format_p(row.p_perm)}" in line
        assert f"{row.cannot_reach} of {row.tests} tests cannot reach α" in line


def test_importing_kerasgen_summary_loads_no_tensorflow():
    code = ("import sys, kerasgen; kerasgen.summary; "
            "assert not [m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'jax')], 'TF loaded'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(
                              Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr[-2000:]
