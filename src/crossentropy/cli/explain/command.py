"""The ``crossentropy explain`` command: its options, its checks, and the format it prints.

The topic and the options are read through :mod:`~crossentropy.cli.explain.inputs`, the
topic is looked up in :data:`~crossentropy.cli.explain.topics.TOPICS`, and its
:class:`~crossentropy.cli.explain.document.Doc` is written by
:mod:`~crossentropy.cli.explain.render`. A bad input is a
:class:`~crossentropy.cli.errors.CliError`, raised before anything is printed.

The text is in the language of ``--lang`` (English, Chinese or Russian; by default the
locale's, from ``LC_ALL``, ``LC_MESSAGES`` or ``LANG``): the topics are computed and laid out
inside :func:`crossentropy.i18n.language`, so that every word they mark is translated from the
``explain`` catalogue; the numbers and formulas are the same in every language.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import typer
from rich.console import Console

from crossentropy.cli.errors import CliError
from crossentropy.cli.explain.document import Doc
from crossentropy.cli.explain.inputs import (
    MAX_BETA,
    MAX_LOGIT,
    MAX_VALUES,
    MIN_BETA,
    ExplainOptions,
    parse_base,
    parse_beta,
    parse_logits,
    parse_matrix,
    parse_residuals,
    parse_vector,
)
from crossentropy.cli.explain.render import render_text, to_json, to_markdown
from crossentropy.cli.explain.topics import TOPIC_NAMES, TOPICS, find_topic
from crossentropy.i18n import LANGUAGES, check_language, language, translations

__all__ = ["FORMATS", "build_docs", "explain", "render_all"]

FORMATS = ("text", "markdown", "json")
"""What ``--format`` accepts."""


def _check_base(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_base(value)
        except ValueError as exc:
            raise CliError(str(exc), "--base", "-b") from None
    return value


def _check_lang(value: str | None) -> str:
    """``--lang`` checked, or the locale's language when it is not given."""
    try:
        lang = check_language(value, "--lang")
    except ValueError as exc:
        raise CliError(str(exc).removeprefix("--lang: "), "--lang") from None
    try:
        translations(lang, "explain")
    except ValueError as exc:  # a broken install: no catalogue for the language
        raise CliError(str(exc)) from None
    return lang


def _check_topic(value: str) -> str:
    if value not in TOPIC_NAMES:
        raise CliError(
            f"unknown topic {value!r}; choose one of {', '.join(TOPIC_NAMES)}", "[TOPIC]"
        )
    return value


def _check_format(value: str) -> str:
    if value not in FORMATS:
        raise CliError(
            f"unknown format {value!r}; choose one of {', '.join(FORMATS)}", "--format", "-f"
        )
    return value


def _options(
    base: str | None,
    p: str | None,
    q: str | None,
    logits: str | None,
    label: int | None,
    probs: str | None,
    labels: str | None,
    residuals: str | None = None,
    beta: str | None = None,
) -> ExplainOptions:
    return ExplainOptions(
        base=None if base is None else parse_base(base),
        base_given=base is not None,
        p=None if p is None else parse_vector(p, "--p"),
        q=None if q is None else parse_vector(q, "--q"),
        logits=None if logits is None else parse_logits(logits, "--logits"),
        label=label,
        probs=None if probs is None else parse_matrix(probs, "--probs"),
        labels=None if labels is None else parse_vector(labels, "--labels"),
        residuals=None if residuals is None else parse_residuals(residuals, "--residuals"),
        beta=None if beta is None else parse_beta(beta, "--beta"),
    )


def build_docs(topic: str, options: ExplainOptions, given: Sequence[str] = ()) -> list[Doc]:
    """Compute and lay out ``topic`` (or every topic for ``all``); checks every input first.

    ``given`` names the options the user gave: one the topic does not use is an error.
    """
    if topic == "all":
        return [t.doc(options, standalone=False) for t in TOPICS]
    chosen = find_topic(topic)
    for option in given:
        if option not in chosen.options:
            takes = ", ".join(chosen.options) if chosen.options else "no options"
            raise CliError(f"topic {topic!r} does not use {option} (it takes {takes})", option)
    return [chosen.doc(options)]


_NUMBERS = f"up to {MAX_VALUES} comma-separated numbers"


def explain(
    topic: Annotated[
        str,
        typer.Argument(
            metavar="TOPIC",
            callback=_check_topic,
            help=f"One of: {', '.join(TOPIC_NAMES)}.",
            show_default=True,
        ),
    ] = "all",
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            callback=_check_format,
            help="text (rich tables), markdown, or json (every number, machine-readable).",
        ),
    ] = "text",
    p: Annotated[
        str | None,
        typer.Option("--p", metavar="P", help=f"A distribution p, {_NUMBERS}: 1,0,0."),
    ] = None,
    q: Annotated[
        str | None,
        typer.Option("--q", metavar="Q", help=f"A prediction q, {_NUMBERS}: 0.7,0.2,0.1."),
    ] = None,
    logits: Annotated[
        str | None,
        typer.Option(
            "--logits",
            metavar="X",
            help=f"Logits, {_NUMBERS} in [-{MAX_LOGIT:g}, {MAX_LOGIT:g}]: 2,1,0.1.",
        ),
    ] = None,
    label: Annotated[
        int | None,
        typer.Option("--label", metavar="INDEX", help="The true class, in [0, len(logits))."),
    ] = None,
    probs: Annotated[
        str | None,
        typer.Option(
            "--probs",
            metavar="ROWS",
            help="Predicted distributions for mse-vs-ce, rows separated by ';': 0.7,0.3;0.4,0.6; "
            "or one row of predictions in [0, 1] for likelihood: 0.9,0.2,0.7.",
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            metavar="Y",
            help="Class indices of the --probs rows (mse-vs-ce), n-hot targets of the "
            "--logits (multilabel), or 0/1 labels of the --probs (likelihood).",
        ),
    ] = None,
    residuals: Annotated[
        str | None,
        typer.Option(
            "--residuals",
            metavar="R",
            help=f"Residuals r = prediction - target for regression, {_NUMBERS} in "
            f"[-{MAX_LOGIT:g}, {MAX_LOGIT:g}]: -3,-1,0,1,3.",
        ),
    ] = None,
    beta: Annotated[
        str | None,
        typer.Option(
            "--beta",
            metavar="BETA",
            help=f"Smooth L1's beta and Huber's delta for regression, in [{MIN_BETA:g}, "
            f"{MAX_BETA:g}] (default 1).",
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            "-b",
            metavar="BASE",
            callback=_check_base,
            help="Logarithm base for information, entropy, kl and cross-entropy: e (nats), "
            "2 (bits), 10, ... (default: show both nats and bits).",
        ),
    ] = None,
    lang: Annotated[
        str | None,
        typer.Option(
            "--lang",
            metavar="LANG",
            callback=_check_lang,
            help=f"The language of the text: {', '.join(LANGUAGES)} (default: the locale's, "
            "from LC_ALL or LANG; English when it is none of these). The numbers and formulas "
            "are the same in every language.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Walk through worked examples of cross entropy, step by step, with the numbers."""
    given = [
        name
        for name, value in (
            ("--p", p),
            ("--q", q),
            ("--logits", logits),
            ("--label", label),
            ("--probs", probs),
            ("--labels", labels),
            ("--residuals", residuals),
            ("--beta", beta),
            ("--base", base),
        )
        if value is not None
    ]
    with language(_check_lang(lang), "explain"):
        try:
            options = _options(base, p, q, logits, label, probs, labels, residuals, beta)
            docs = build_docs(topic, options, given)
        except CliError:
            raise
        except (ValueError, TypeError) as exc:  # the library refused a value: still one line
            raise CliError(str(exc)) from None
        if output_format == "json":
            typer.echo(to_json(docs, single=topic != "all"))
        elif output_format == "markdown":
            typer.echo(to_markdown(docs, numbered=topic == "all"), nl=False)
        else:
            render_text(Console(highlight=False), docs, numbered=topic == "all")


def render_all(console: Console, options: ExplainOptions, lang: str = "en") -> None:
    """Print every topic of :data:`~crossentropy.cli.explain.topics.TOPICS` in order, in
    ``lang`` (one of :data:`crossentropy.i18n.LANGUAGES`)."""
    with language(check_language(lang), "explain"):
        render_text(console, build_docs("all", options), numbered=True)
