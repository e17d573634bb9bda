"""The document a topic of ``crossentropy explain`` is laid out as, before any format.

A :class:`Doc` is a title and a list of blocks: :class:`Formulas` (lines of math),
:class:`TableBlock` (columns and :class:`Row` s of cells) and :class:`Note` (a sentence or
two). A table cell is text, a :class:`Num` (the float itself and how it prints, so that JSON
keeps the number and text keeps the digits), or None (an empty cell).
:mod:`crossentropy.cli.explain.render` writes a :class:`Doc` as rich tables, Markdown or
JSON.

The words of a document are in the current language (:mod:`crossentropy.i18n`): the topics
translate them as they lay a section out, and :func:`sentences` strings sentences together as
the language writes them. Formulas and numbers are the same in every language.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.cells import cell_len

from crossentropy.i18n import gettext as _

__all__ = [
    "Block",
    "Cell",
    "Doc",
    "Formulas",
    "Note",
    "Num",
    "Row",
    "TableBlock",
    "aligned",
    "cell_text",
    "fixed",
    "sentences",
    "vector",
]


@dataclass(frozen=True)
class Num:
    """A number in a table and how it prints: ``f3``/``f4`` decimals, ``g``, ``g4``, ``e1``."""

    value: float
    style: str = "f3"

    def __str__(self) -> str:
        v = self.value
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if self.style.startswith("f"):
            return fixed(v, int(self.style[1:]))
        if self.style == "g":
            return f"{v:g}"
        if self.style.startswith("g"):
            return f"{v:.{self.style[1:]}g}"
        return f"{v:.{self.style[1:]}e}"


Cell = str | Num | None


@dataclass(frozen=True)
class Formulas:
    lines: tuple[str, ...]

    def __init__(self, *lines: str) -> None:
        object.__setattr__(self, "lines", lines)


@dataclass(frozen=True)
class Note:
    text: str


@dataclass(frozen=True)
class Row:
    cells: tuple[Cell, ...]
    bold: bool = False
    section: bool = False  # a rule above this row


@dataclass
class TableBlock:
    columns: tuple[str, ...]
    title: str | None = None
    rows: list[Row] = field(default_factory=list)

    def add(self, *cells: Cell, bold: bool = False, section: bool = False) -> None:
        if len(cells) != len(self.columns):  # pragma: no cover - a bug in a doc_* function
            raise RuntimeError(f"{len(cells)} cells for columns {self.columns}")
        self.rows.append(Row(cells, bold, section))


Block = Formulas | Note | TableBlock


@dataclass
class Doc:
    """One topic laid out: its name, title, blocks, and the section's numbers (``data``)."""

    topic: str
    title: str
    blocks: list[Block]
    data: Any = None


def fixed(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` decimals; a negative zero prints as 0.

    >>> fixed(-0.0), fixed(2 / 3, 4)
    ('0.000', '0.6667')
    """
    text = f"{x:.{digits}f}"
    # -0.0 (e.g. -(1 * log 1)) and tiny negative rounding errors print as 0, not "-0.000"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def vector(values: Sequence[float]) -> str:
    """A short vector as written in a title: ``[0.7, 0.2, 0.1]``."""
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def cell_text(cell: Cell) -> str:
    """A cell as printed: empty for None."""
    return "" if cell is None else str(cell)


def aligned(*labels: str) -> tuple[str, ...]:
    """``labels`` padded with spaces to one width as a terminal shows them (a CJK character
    is two columns wide), so that the formulas written after them line up in any language.

    >>> aligned("right:", "floor:", "猫:")
    ('right:', 'floor:', '猫:   ')
    """
    width = max(cell_len(label) for label in labels)
    return tuple(label + " " * (width - cell_len(label)) for label in labels)


def sentences(*parts: str) -> str:
    """The non-empty ``parts`` one after another, as the current language strings sentences
    together (a space between them in English and Russian, none in Chinese).

    >>> sentences("One.", "", "Two.")
    'One. Two.'
    """
    text = ""
    for part in parts:
        if part:
            text = _("{sentence} {next}").format(sentence=text, next=part) if text else part
    return text
