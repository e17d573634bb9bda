"""The three formats of ``crossentropy explain``: rich text, Markdown and JSON.

A :class:`~crossentropy.cli.explain.document.Doc` is written as rich tables
(:func:`render_text`, ``--format text``), as Markdown tables (:func:`to_markdown`) or as
JSON (:func:`to_json`: the formulas, every table with its raw numbers, the notes, and the
section's dataclass under ``"data"``). The documents are already in their language; the
words added here (:data:`INTRO`) are translated as they are written, and the JSON says which
language it is in (``"lang"``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from crossentropy.cli.explain.document import Doc, Formulas, Note, Num, TableBlock, cell_text
from crossentropy.i18n import current_language
from crossentropy.i18n import gettext as _
from crossentropy.i18n import mark as N_

__all__ = ["INTRO", "render_doc", "render_text", "to_json", "to_markdown"]


# ---- text (rich) ----


def _rich_table(block: TableBlock) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        title=block.title,
        title_justify="left",
        title_style="bold",
        show_edge=False,
        pad_edge=False,
    )
    for i, name in enumerate(block.columns):
        # fold, never truncate: a narrow terminal must not turn 0.6590 into "0.6…"
        table.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    for row in block.rows:
        if row.section:
            table.add_section()
        # Text(), not markup: labels such as "[0.3, 0.3, 0.4]" must print as they are.
        table.add_row(*(Text(cell_text(c)) for c in row.cells), style="bold" if row.bold else None)
    return table


def render_doc(console: Console, doc: Doc, number: int | None = None) -> None:
    """Print one topic with rich: heading, formulas, tables, notes."""
    console.print()
    heading = doc.title if number is None else f"{number}. {doc.title}"
    console.rule(Text(heading, style="bold"), align="left")
    for i, block in enumerate(doc.blocks):
        if isinstance(block, Formulas):
            for line in block.lines:
                console.print(Text("    " + line, style="bold cyan"))
            console.print()
        elif isinstance(block, TableBlock):
            console.print(_rich_table(block))
            console.print()
        else:
            console.print(Text(block.text, style="italic"))
            if i + 1 < len(doc.blocks):
                console.print()


INTRO = N_("Cross entropy, step by step: every number below is computed by the library.")
"""The line ``explain all`` opens with (a heading in Markdown), in English: it is
translated where it is written."""


def _unwrapped(console: Console, docs: Sequence[Doc]) -> None:
    """Written to a file or a pipe, no line is wrapped and no table folds a number.

    A terminal has a width, and a table folds its cells to fit it (a column too narrow for
    a number splits the number over two lines, as a narrow terminal must). A file or a pipe
    has none: rich would use ``COLUMNS`` or 80, and a fold there splits a number mid-digit
    in the file. So the console is made at least as wide as the widest table's natural
    width, and text (formulas, notes) is soft-wrapped: one line, however long.
    """
    if console.is_terminal:
        return
    unbounded = console.options.update_width(1_000_000)
    widest = max(
        (
            Measurement.get(console, unbounded, _rich_table(block)).maximum
            for doc in docs
            for block in doc.blocks
            if isinstance(block, TableBlock)
        ),
        default=0,
    )
    console.width = max(console.width, widest)
    console.soft_wrap = True


def render_text(console: Console, docs: Sequence[Doc], numbered: bool = False) -> None:
    """Print the topics with rich; ``numbered`` (``all``): the intro, then 1., 2., ...

    Not on a terminal (a file, a pipe), the console is widened first so that nothing wraps
    (:func:`_unwrapped`).
    """
    _unwrapped(console, docs)
    if numbered:
        console.print(Text(_(INTRO)))
    for i, doc in enumerate(docs, 1):
        render_doc(console, doc, i if numbered else None)
    console.print()


# ---- markdown ----


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _md_table(block: TableBlock) -> list[str]:
    lines = []
    if block.title:
        lines += [f"**{_md_cell(block.title)}**", ""]
    lines.append("| " + " | ".join(_md_cell(c) for c in block.columns) + " |")
    lines.append(
        "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(block.columns))) + "|"
    )
    for row in block.rows:
        cells = [_md_cell(cell_text(c)) for c in row.cells]
        if row.bold:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(docs: Sequence[Doc], numbered: bool = False) -> str:
    """The topics as Markdown: a heading each, formulas in a code block, pipe tables."""
    lines: list[str] = []
    if numbered:
        lines += [f"# {_(INTRO)}", ""]
    for n, doc in enumerate(docs, 1):
        title = f"{n}. {doc.title}" if numbered else doc.title
        lines += [f"## {title}", ""]
        for block in doc.blocks:
            if isinstance(block, Formulas):
                lines += ["```text", *block.lines, "```"]
            elif isinstance(block, TableBlock):
                lines += _md_table(block)
            else:
                lines.append(block.text)
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# ---- json ----


def _jsonable(value: Any) -> Any:
    if isinstance(value, Num):
        return _jsonable(value.value)
    if isinstance(value, float):
        return value if math.isfinite(value) else ("nan" if math.isnan(value) else str(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _doc_json(doc: Doc) -> dict[str, Any]:
    formulas = [line for b in doc.blocks if isinstance(b, Formulas) for line in b.lines]
    tables = [
        {
            "title": b.title,
            "columns": list(b.columns),
            "rows": [[_jsonable(c) for c in r.cells] for r in b.rows],
        }
        for b in doc.blocks
        if isinstance(b, TableBlock)
    ]
    return {
        "topic": doc.topic,
        "title": doc.title,
        "formulas": formulas,
        "tables": tables,
        "notes": [b.text for b in doc.blocks if isinstance(b, Note)],
        "data": _jsonable(doc.data),
    }


def to_json(docs: Sequence[Doc], single: bool, lang: str | None = None) -> str:
    """One topic as a JSON object, or ``{"topics": [...]}`` for ``all``; either has a
    ``"lang"`` field, the language of its text (``lang``, or the current language).

    Non-finite numbers are the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (JSON has none).
    """
    payload: dict[str, Any] = (
        _doc_json(docs[0]) if single else {"topics": [_doc_json(d) for d in docs]}
    )
    payload["lang"] = current_language() if lang is None else lang
    return json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False)
