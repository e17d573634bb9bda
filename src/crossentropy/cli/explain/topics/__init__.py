"""The topics of ``crossentropy explain``, one module each, and :data:`TOPICS`: the table of them.

:data:`TOPICS` is the one place that says which topics exist: their names on the command
line, the options each reads, and, in its order, the order ``explain all`` shows them in. The
command (its help, its checks, ``all``) and the tests read it and nothing else.

A topic module (see :mod:`~crossentropy.cli.explain.topics.entropy` for a small one) holds:

- a frozen dataclass, the *section*: every number of the worked example, each computed by
  the library's public functions (never typed in by hand); ``--format json`` writes it under
  ``"data"``;
- ``compute_<topic>(options, ...)``: the section of the topic's own example, or of the
  numbers it is given;
- ``section(options, standalone)``: the section for what the user gave (``--p``,
  ``--logits``, ...), each value checked, a bad one raising
  :class:`~crossentropy.cli.errors.CliError` that names the option. ``standalone`` is False
  inside ``all``, where every topic sees the same options and a topic may ignore one that
  is meant for another (``multilabel`` and ``mse-vs-ce`` share ``--labels``);
- ``layout(section)``: the section laid out as a
  :class:`~crossentropy.cli.explain.document.Doc`: the formulas, tables, notes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crossentropy.cli.explain.document import Doc
from crossentropy.cli.explain.inputs import ExplainOptions
from crossentropy.cli.explain.topics import (
    binary_gradient,
    cross_entropy,
    entropy,
    gradients,
    information,
    kl,
    likelihood,
    mse_vs_ce,
    multilabel,
    pitfalls,
    regression,
    softmax,
)

__all__ = ["TOPICS", "TOPIC_NAMES", "Topic", "find_topic"]


@dataclass(frozen=True)
class Topic:
    """One topic of ``explain``: its name, the options it reads, and how to lay it out."""

    name: str
    options: tuple[str, ...]  # the command-line options this topic uses
    compute: Callable[[ExplainOptions, bool], Any]  # the module's section
    layout: Callable[[Any], Doc]  # the module's layout

    def doc(self, options: ExplainOptions, standalone: bool = True) -> Doc:
        """The topic laid out for ``options``; ``standalone``: shown alone, not in ``all``."""
        section = self.compute(options, standalone)
        doc = self.layout(section)
        doc.data = section
        return doc


TOPICS: tuple[Topic, ...] = (
    Topic("information", ("--p", "--base"), information.section, information.layout),
    Topic("entropy", ("--p", "--base"), entropy.section, entropy.layout),
    Topic("kl", ("--p", "--q", "--base"), kl.section, kl.layout),
    Topic("cross-entropy", ("--p", "--q", "--base"), cross_entropy.section, cross_entropy.layout),
    Topic("softmax", ("--logits",), softmax.section, softmax.layout),
    Topic("multilabel", ("--logits", "--labels"), multilabel.section, multilabel.layout),
    Topic("mse-vs-ce", ("--probs", "--labels"), mse_vs_ce.section, mse_vs_ce.layout),
    Topic("gradients", ("--logits", "--label"), gradients.section, gradients.layout),
    Topic("likelihood", ("--probs", "--labels"), likelihood.section, likelihood.layout),
    Topic("regression", ("--residuals", "--beta"), regression.section, regression.layout),
    Topic("binary-gradient", (), binary_gradient.section, binary_gradient.layout),
    Topic("pitfalls", (), pitfalls.section, pitfalls.layout),
)
"""Every topic, in the order ``explain all`` shows them. A new topic is one line here."""

TOPIC_NAMES: tuple[str, ...] = (*(t.name for t in TOPICS), "all")
"""What the ``TOPIC`` argument accepts: each topic's name, and ``all``."""


def find_topic(name: str) -> Topic:
    """The topic called ``name`` in :data:`TOPICS` (``KeyError`` if none is)."""
    for topic in TOPICS:
        if topic.name == name:
            return topic
    raise KeyError(name)
