"""Formatting shared by the tables and the figures: p-values, learning rates, labels."""

from __future__ import annotations

import math
import re
from typing import Sequence

from kerasgen import analysis as A
from kerasgen.vocabulary import display_name


def _split_exp(p: float) -> tuple[str, int]:
    mant, exp = f"{p:.1e}".split("e")
    return mant, int(exp)


format_p = A.format_p


def format_p_latex(p: float) -> str:
    """A p-value in LaTeX math as the paper prints it: ``2.6 \\times 10^{-11}``."""
    if p is None or not math.isfinite(float(p)):
        return r"\text{n/a}"
    p = float(p)
    if p == 0.0:
        return r"<10^{-308}"
    mant, exp = _split_exp(p)
    if exp == 0:
        return mant
    return rf"{mant} \times 10^{{{exp}}}"


def decimals(values: Sequence[float]) -> int:
    """Fewest decimals (2..6) that print every value exactly at 6 significant digits."""
    for d in range(2, 7):
        if all(abs(round(float(v), d) - float(v)) <= 1e-12 * max(1.0, abs(float(v)))
               for v in values):
            return d
    return 6


_fewest_decimals = decimals  # the parameter below shadows the function's name


def format_value(value: object, group_by: str | None, decimals: int | None = None) -> str:
    if group_by == "batch_size":
        return str(int(value))  # type: ignore[arg-type]
    v = float(value)  # type: ignore[arg-type]
    if decimals is None:
        decimals = _fewest_decimals([v])
    if v != 0 and abs(v) < 10.0 ** -decimals:
        return f"{v:.3g}"
    return f"{v:.{decimals}f}"


_LATEX = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "#": r"\#", "$": r"\$",
          "%": r"\%", "&": r"\&", "_": r"\_", "^": r"\textasciicircum{}",
          "~": r"\textasciitilde{}"}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX))


def latex_escape(text: str) -> str:
    """Text as LaTeX typesets it literally: each of the ten special characters
    (``\\ { } # $ % & _ ^ ~``) escaped, line breaks and tabs as spaces (a name never
    starts a paragraph or a command)."""
    flat = " ".join(str(text).split())
    return _LATEX_RE.sub(lambda m: _LATEX[m.group(0)], flat)


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#+!|~&])")


def md_text(text: object) -> str:
    """Text as Markdown (CommonMark with tables) renders it literally: every character
    that can open markup (emphasis, code, link, image, autolink or HTML, heading, list,
    table cell, entity) backslash-escaped, line breaks and tabs as spaces. Plain words,
    ``-``, ``.`` and ``/`` stay as they are, so ``ResNet-8 on CIFAR-10`` reads unchanged."""
    flat = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", flat)


def column_label(key: tuple[str, str, str], several_studies: bool) -> str:
    """A grid's label as plain text (escape it for its target: ``md_label``,
    ``latex_escape``)."""
    study, model, dataset = key
    label = f"{display_name(model)} on {display_name(dataset)}"
    return f"{study}: {label}" if several_studies else label


def md_label(key: tuple[str, str, str], several_studies: bool) -> str:
    """A grid's label as Markdown text (``md_text`` of ``column_label``)."""
    return md_text(column_label(key, several_studies))


__all__ = ["column_label", "decimals", "format_p", "format_p_latex", "format_value",
           "latex_escape", "md_label", "md_text"]
