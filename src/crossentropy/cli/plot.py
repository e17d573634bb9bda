"""``crossentropy plot``: draw the figures of :mod:`crossentropy.viz` to PNG or SVG files.

matplotlib is an optional extra (``pip install crossentropy[plot]``): this module imports
:mod:`crossentropy.viz` only when the command runs, so the rest of the command line works
without it, and a missing matplotlib is one line on stderr with the command to install it.

``--lang en|zh|ru`` is the language of the figures' text (their titles, labels, legends and
notes; the numbers are the same in all three); without it, the locale's (``LC_ALL``,
``LC_MESSAGES``, ``LANG``; English when it names none of these).

Every bad input (an unknown figure or language, an ``--out`` that cannot be created or
written, a missing matplotlib, ``--lang zh`` without a font that has the Chinese glyphs) is
one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import enum
import importlib
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from crossentropy import i18n
from crossentropy.cli.errors import CliError

__all__ = ["FIGURE_NAMES", "Format", "plot"]

#: The figures, in the order ``all`` draws them (the keys of ``crossentropy.viz.FIGURES``;
#: repeated here so that ``--help`` and the error for an unknown name need no matplotlib).
FIGURE_NAMES = (
    "information",
    "binary-entropy",
    "ce-vs-mse-probability",
    "ce-vs-mse-logit",
    "regression-losses",
    "softmax-temperature",
)


class Format(str, enum.Enum):
    """The file formats ``--format`` accepts."""

    png = "png"
    svg = "svg"


def _viz() -> ModuleType:
    try:
        viz = importlib.import_module("crossentropy.viz")
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != "matplotlib":
            raise
        raise CliError(
            "plotting needs matplotlib, which is not installed: pip install crossentropy[plot]"
        ) from None
    return viz


def _selected(names: list[str] | None) -> list[str]:
    if not names:
        return list(FIGURE_NAMES)
    chosen: list[str] = []
    for name in names:
        if name == "all":
            wanted = list(FIGURE_NAMES)
        elif name in FIGURE_NAMES:
            wanted = [name]
        else:
            raise CliError(
                f"unknown figure {name!r}; choose from: all, {', '.join(FIGURE_NAMES)}", "FIGURE"
            )
        chosen.extend(n for n in wanted if n not in chosen)
    return chosen


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _prepare(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {str(out)!r} is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create the --out directory {str(out)!r}: {_why(exc)}") from None


def _language(value: str | None) -> str:
    try:
        return i18n.check_language(value, "--lang")
    except ValueError as exc:
        raise CliError(str(exc).removeprefix("--lang: "), "--lang") from None


def plot(
    out_text: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Directory to write the figures to (created if missing).",
        ),
    ],
    figures: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FIGURE",
            show_default=False,
            help=f"Figures to draw: {', '.join(FIGURE_NAMES)}, or all (the default).",
        ),
    ] = None,
    fmt: Annotated[
        Format,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            case_sensitive=False,
            help="File format: png or svg.",
        ),
    ] = Format.png,
    lang_text: Annotated[
        str | None,
        typer.Option(
            "--lang",
            metavar="LANG",
            show_default=False,
            help="Language of the figures' text: en, zh or ru (default: the locale's, else en).",
        ),
    ] = None,
) -> None:
    """Draw figures of cross entropy, MSE and friends, and print the paths written."""
    if not out_text.strip():
        raise CliError(f"--out: expected a directory; got {out_text!r}")
    out = Path(out_text)
    names = _selected(figures)
    lang = _language(lang_text)
    viz = _viz()
    _prepare(out)
    suffix = fmt.value
    for name in names:
        path = out / f"{name}.{suffix}"
        try:
            fig = viz.make_figure(name, lang=lang)
        except viz.MissingFontError as exc:
            raise CliError(str(exc).removeprefix("lang='zh': "), "--lang") from None
        try:
            viz.save_figure(fig, path, format=suffix)
        except OSError as exc:
            raise CliError(f"cannot write {str(path)!r}: {_why(exc)}") from None
        typer.echo(str(path))
