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

from kerasgen.report.layout import (
    CAPTIONS,
    FIGURES_HEADING,
    FINDINGS_HEADING,
    LEGEND_HEADING,
    MORE_FIGURES_HEADING,
    caption,
    interactive_note,
    is_key_figure,
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
section.findings { background: #fff8e1; border: 2px solid #e0a800; border-radius: 6px;
                   padding: 0.2em 1.2em 0.6em; margin: 0 0 1.5em; }
section.findings h2 { margin-top: 0.6em; border-bottom-color: #e0a800; }
details.legend { border: 1px solid #d6dde5; border-radius: 6px; padding: 0 1em;
                 margin: 1.5em 0; }
details.legend > summary { cursor: pointer; font-weight: 600; color: #1f3f63;
                           padding: 0.6em 0; }
"""
FINDINGS_BACKGROUND = "#fff8e1"
"""The findings box's background (a test finds the box on a screenshot by it)."""


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


def _section_span(body: str, anchor: str) -> tuple[int, int] | None:
    """(start, end) of the level-2 section whose heading has id ``anchor``: from its
    ``<h2`` up to the next ``<h2`` (or the end)."""
    match = re.search(rf'<h2 id="{re.escape(anchor)}">', body)
    if match is None:
        return None
    end = body.find("<h2", match.end())
    return match.start(), len(body) if end < 0 else end


def _slug_of(heading: str) -> str:
    return _slug(heading, set())


def _figures_section(body: str, heading: str, figures: Sequence[Path], note: str = ""
                     ) -> tuple[str, bool]:
    """The body with the section ``heading`` holding ``figures`` (embedded) and a note;
    the section is appended when the Markdown had none. Returns (body, appended)."""
    anchor = _slug_of(heading)
    block = (f'<h2 id="{anchor}">{html.escape(heading)}</h2>\n'
             + "\n".join(map(figure_html, figures))
             + (f"\n<p>{_inline(note)}</p>" if note else "") + "\n")
    span = _section_span(body, anchor)
    if span is None:
        return body + "\n" + block, True
    return body[:span[0]] + block + body[span[1]:], False


def _inline(text: str) -> str:
    """A note in Markdown's inline syntax (code spans) as HTML."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).renderInline(text)


def _wrap(body: str, heading: str, before: str, after: str, summary: bool = False) -> str:
    span = _section_span(body, _slug_of(heading))
    if span is None:
        return body
    start, end = span
    section = body[start:end]
    if summary:  # the heading becomes the <details>' summary, the rest folds under it
        head_end = section.index("</h2>") + len("</h2>")
        section = (f"<summary>{section[:head_end]}</summary>" + section[head_end:])
    return body[:start] + before + section + after + body[end:]


def render_html(markdown: str, figures: Sequence[Path] = (), title: str | None = None,
                subtitle: str = "") -> str:
    """One self-contained HTML page: the Markdown report (its first ``# `` heading is the
    page title unless ``title`` is given) with a contents list. The findings box is
    framed; Figure 1 and the heatmaps are embedded in the report's *Figures* section
    (before the tables), the other figures in *More figures* at the end; *How to read the
    tables* is folded (``<details>``)."""
    from kerasgen import __version__

    lines = markdown.splitlines()
    if lines and lines[0].startswith("# "):
        title = title or lines[0][2:].strip()
        markdown = "\n".join(lines[1:])
    title = title or "kerasgen report"
    body, toc = markdown_to_html(markdown)
    all_figures = [Path(p) for p in figures]
    pngs = [p for p in all_figures if p.suffix.lower() == ".png"]
    key = [p for p in pngs if is_key_figure(p)]
    rest = [p for p in pngs if not is_key_figure(p)]
    if pngs:
        body, appended = _figures_section(body, FIGURES_HEADING, key,
                                          interactive_note(all_figures))
        if appended:
            toc.append((_slug_of(FIGURES_HEADING), FIGURES_HEADING))
    if rest:
        body, appended = _figures_section(body, MORE_FIGURES_HEADING, rest)
        if appended:
            toc.append((_slug_of(MORE_FIGURES_HEADING), MORE_FIGURES_HEADING))
    body = _wrap(body, FINDINGS_HEADING, '<section class="findings" id="findings-box">',
                 "</section>\n")
    body = _wrap(body, LEGEND_HEADING, '<details class="legend">', "</details>\n",
                 summary=True)
    nav = "".join(f'<li><a href="#{a}">{html.escape(t)}</a></li>' for a, t in toc)
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
</main>
<footer>kerasgen: batch size, learning rate and generalization (He, Liu &amp; Tao, NeurIPS
2019). This page is self-contained: every figure is embedded.</footer>
</body>
</html>
"""


__all__ = ["CAPTIONS", "FINDINGS_BACKGROUND", "caption", "figure_html", "markdown_to_html",
           "render_html"]
