"""``crossentropy explore``: write the interactive page of :mod:`crossentropy.explore`.

The page is one self-contained HTML file (no network, no server needed) where a person drags
logits and watches probabilities, losses and gradients move. ``--serve`` also serves it on
localhost and opens it in the default browser; Ctrl-C stops the server. ``--lang`` picks the
language the page opens in (English, Chinese or Russian; the locale's by default); the page
has a switch for the others.

Every bad input (2 to 6 logits, a label out of range, a temperature outside [0.1, 10], an
``--out`` that cannot be written, a port that cannot be bound, a language there is no
catalogue for) is one line on stderr and exit
status 2, never a traceback.
"""

from __future__ import annotations

import enum
import sys
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from crossentropy.cli.errors import CliError
from crossentropy.cli.explain import parse_vector
from crossentropy.explore import (
    MAX_TEMPERATURE,
    MIN_TEMPERATURE,
    PageServer,
    build_page,
    make_server,
)
from crossentropy.i18n import check_language

__all__ = ["DEFAULT_OUT", "View", "explore"]

DEFAULT_OUT = Path("explore.html")
"""Where the page goes without ``--out``."""


class View(str, enum.Enum):
    """The view the page opens with."""

    softmax = "softmax"
    binary = "binary"
    regression = "regression"


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _target(out: Path) -> Path:
    """``out``, or ``out/explore.html`` when ``out`` is a directory."""
    return out / DEFAULT_OUT.name if out.is_dir() else out


def _write(path: Path, page: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {str(path)!r}: {_why(exc)}", "--out") from None


def _bind(page: str, port: int, name: str) -> PageServer:
    try:
        return make_server(page, port=port, name=name)
    except OSError as exc:
        raise CliError(f"cannot serve on 127.0.0.1:{port}: {_why(exc)}", "--port") from None


def _serve(server: PageServer, open_browser: bool) -> None:
    url = server.url
    typer.echo(f"serving {url} (Ctrl-C stops)")
    sys.stdout.flush()
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo(f"stopped serving {url}")
    finally:
        server.server_close()


def explore(
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            metavar="PATH",
            help="The HTML file to write (a directory: explore.html in it).",
        ),
    ] = str(DEFAULT_OUT),
    logits: Annotated[
        str,
        typer.Option(
            "--logits",
            metavar="X,...",
            help="The starting logits: 2 to 6 comma-separated numbers in [-10, 10].",
        ),
    ] = "2,1,0.1",
    label: Annotated[
        int,
        typer.Option("--label", metavar="K", help="The starting true class (an index)."),
    ] = 0,
    temperature: Annotated[
        float,
        typer.Option(
            "--temperature",
            "-t",
            metavar="T",
            help=f"The starting temperature, in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}].",
        ),
    ] = 1.0,
    view: Annotated[
        View,
        typer.Option(
            "--view",
            metavar="VIEW",
            case_sensitive=False,
            help="The view the page opens with: softmax, binary or regression.",
        ),
    ] = View.softmax,
    lang: Annotated[
        str | None,
        typer.Option(
            "--lang",
            metavar="LANG",
            help="The page's language: en, zh or ru (default: the locale's, LC_ALL, "
            "LC_MESSAGES or LANG; English when it is none of them).",
            show_default=False,
        ),
    ] = None,
    serve: Annotated[
        bool,
        typer.Option("--serve", help="Also serve the page on localhost and open it; Ctrl-C stops."),
    ] = False,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            metavar="PORT",
            min=0,
            max=65535,
            help="The port for --serve (default: a free one).",
            show_default=False,
        ),
    ] = None,
    no_open: Annotated[
        bool,
        typer.Option("--no-open", help="With --serve: do not open a browser."),
    ] = False,
) -> None:
    """Write an interactive page to play with logits, softmax, cross entropy and MSE."""
    if not serve and (port is not None or no_open):
        raise CliError("only applies with --serve", "--port" if port is not None else "--no-open")
    try:
        language = check_language(lang, "--lang")
    except ValueError as exc:  # "--lang: expected one of en, zh, ru; got 'fr'"
        raise CliError(str(exc).partition(": ")[2], "--lang") from None
    values = parse_vector(logits, "--logits")
    try:
        page = build_page(
            values, label=label, temperature=temperature, view=view.value, lang=language
        )
    except (ValueError, TypeError) as exc:  # "label: expected ...": the option's error
        name, _, message = str(exc).partition(": ")
        option = {"logits": "--logits", "label": "--label", "temperature": "--temperature"}
        if name in option:
            raise CliError(message, option[name]) from None
        raise CliError(str(exc)) from None
    if not out.strip():
        raise CliError(f"expected a file or a directory; got {out!r}", "--out")
    path = _target(Path(out))
    # bind first: a port that cannot be had leaves nothing written
    server = _bind(page, port or 0, path.name) if serve else None
    try:
        _write(path, page)
    except CliError:
        if server is not None:
            server.server_close()
        raise
    typer.echo(str(path))
    if server is not None:
        _serve(server, open_browser=not no_open)
