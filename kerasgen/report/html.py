"""The report as one self-contained HTML page: readable offline, in any browser, by a
collaborator without a terminal.

The text is the Markdown report (``render_report``: settings, Tables 1-3, directions,
statistics, premise check, the bound section when asked), converted by ``markdown-it-py``
(CommonMark with tables; the parser ``rich`` and ``textual`` already use), so the page says
exactly what ``kerasgen report`` prints. Every figure is embedded as a PNG data URI with a
caption; the style sheet is inline; nothing is fetched from anywhere: raw HTML is off, and
an image that is not a ``data:`` URI is rendered as its alt text. Names (studies, models,
data sets) reach the Markdown escaped (``format.md_text``), so they arrive here as text.
"""

from __future__ import annotations

import base64
import html
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

CAPTIONS = (
    (r"^figure1_ratio", "Figure 1: test accuracy against batch size / learning rate, one "
                        "panel per grid, the grid's SCC and p in each panel"),
    (r"^figure2a_batch_size", "Figure 2a: test accuracy against batch size, one curve per "
                              "learning rate"),
    (r"^figure2b_learning_rate", "Figure 2b: test accuracy against learning rate, one curve "
                                 "per batch size"),
    (r"^heatmap_", "The grid's accuracy per cell (batch size x learning rate)"),
    (r"^curves_", "Learning curves: training and test accuracy of every cell by epoch, the "
                  "kept epoch marked"),
    (r"^gap_", "Generalization gap (clean train - test accuracy at the kept epoch) per cell"),
    (r"^bound", "PAC-Bayes bound terms against the ratio and the measured gap"),
)

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232a;
       max-width: 1180px; margin: 0 auto; padding: 1.5em 2em 4em; background: #fff; }
header { border-bottom: 2px solid #2f5d8a; margin-bottom: 1.5em; }
header p { color: #4b5563; margin: 0.2em 0 0.8em; }
h1 { font-size: 1.7em; margin: 0.2em 0; color: #1f3f63; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #d6dde5; color: #1f3f63; }
h3 { font-size: 1.1em; }
nav ol { columns: 2; padding-left: 1.2em; margin: 0 0 1em; }
nav a, a { color: #2f5d8a; }
table { border-collapse: collapse; margin: 0.8em 0 1.2em; font-size: 0.92em;
        font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d6dde5; padding: 0.25em 0.6em; }
th { background: #eef3f8; }
tbody tr:nth-child(even) { background: #f8fafc; }
code { background: #f1f4f7; padding: 0 0.25em; border-radius: 3px; }
figure { margin: 1.2em 0 2em; }
figure img { max-width: 100%; height: auto; border: 1px solid #e5e9ee; }
figcaption { color: #4b5563; font-size: 0.92em; margin-top: 0.3em; }
footer { margin-top: 3em; color: #6b7280; font-size: 0.85em; }
"""


def caption(path: Path) -> str:
    """What a figure file shows, from its name (``write_figures``' file names)."""
    stem = Path(path).stem
    for pattern, text in CAPTIONS:
        if re.search(pattern, stem):
            return text
    return stem.replace("_", " ")


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in used:
        slug, n = f"{base}-{n}", n + 1
    used.add(slug)
    return slug


def markdown_to_html(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(HTML body, [(anchor, title) of every level-2 heading]) of a Markdown text."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.add_render_rule("image", _local_image)
    tokens = md.parse(text)
    used: set[str] = set()
    toc = []
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            title = "".join(child.content for child in tokens[i + 1].children or []
                            if child.type in ("text", "code_inline"))
            anchor = _slug(title, used)
            token.attrSet("id", anchor)
            if token.tag == "h2":
                toc.append((anchor, title))
    return md.renderer.render(tokens, md.options, {}), toc


def _local_image(self, tokens, idx, options, env) -> str:
    """An image is embedded only from a ``data:`` URI: the page never fetches anything.
    Any other becomes its alt text (names are escaped before they reach Markdown, so
    only a report's own text could ask for one)."""
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    if src.startswith("data:"):
        return self.image(tokens, idx, options, env)
    return html.escape(self.renderInlineAsText(token.children or [], options, env))


def figure_html(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    text = html.escape(caption(path))
    return (f'<figure id="{html.escape(Path(path).stem)}"><img alt="{text}" '
            f'src="data:image/png;base64,{data}"><figcaption>{text} '
            f"<code>{html.escape(Path(path).name)}</code></figcaption></figure>")


def render_html(markdown: str, figures: Sequence[Path] = (), title: str | None = None,
                subtitle: str = "") -> str:
    """One self-contained HTML page: the Markdown report (its first ``# `` heading is the
    page title unless ``title`` is given), a contents list, then every figure."""
    from kerasgen import __version__

    lines = markdown.splitlines()
    if lines and lines[0].startswith("# "):
        title = title or lines[0][2:].strip()
        markdown = "\n".join(lines[1:])
    title = title or "kerasgen report"
    body, toc = markdown_to_html(markdown)
    figures = [Path(p) for p in figures if Path(p).suffix.lower() == ".png"]
    if figures:
        toc.append(("figures", "Figures"))
    nav = "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t in toc)
    figure_block = ("<h2 id=\"figures\">Figures</h2>\n" + "\n".join(map(figure_html, figures))
                    if figures else "")
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="kerasgen {html.escape(__version__)}">
<title>{html.escape(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>{html.escape(title)}</h1>
<p>{html.escape(subtitle) + " · " if subtitle else ""}written by kerasgen {html.escape(__version__)}
on {stamp}</p>
<nav><ol>{nav}</ol></nav>
</header>
<main>
{body}
{figure_block}
</main>
<footer>kerasgen: batch size, learning rate and generalization (He, Liu &amp; Tao, NeurIPS
2019). This page is self-contained: every figure is embedded.</footer>
</body>
</html>
"""


__all__ = ["CAPTIONS", "caption", "figure_html", "markdown_to_html", "render_html"]
