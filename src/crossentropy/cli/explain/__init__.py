"""``crossentropy explain``: worked examples of the theory, step by step, with the numbers.

The package, in the order a topic's numbers travel through it:

- :mod:`~crossentropy.cli.explain.inputs`: the command-line values (``--p``, ``--logits``,
  ``--base``, ...) parsed and checked into :class:`ExplainOptions`;
- :mod:`~crossentropy.cli.explain.topics`: one module per topic, and :data:`TOPICS`, the one
  table of them. A topic computes a frozen dataclass holding every number of its example,
  each one computed by the library's public functions (never typed in by hand), and lays it
  out as a :class:`Doc`: the formulas first, then tables of the computation and a note;
- :mod:`~crossentropy.cli.explain.document`: :class:`Doc` and its blocks; table cells keep
  their numbers as floats (:class:`Num`);
- :mod:`~crossentropy.cli.explain.render`: a :class:`Doc` as rich tables (``--format
  text``), as Markdown tables (``--format markdown``) or as JSON (``--format json``: the
  formulas, every table with its raw numbers, the notes, and the section's dataclass under
  ``"data"``);
- :mod:`~crossentropy.cli.explain.command`: the command itself (:func:`explain`).

A bad value is a :class:`~crossentropy.cli.errors.CliError` naming the option, raised before
anything is printed; the command line prints it as one line on stderr, exit status 2.

Adding a topic is one new module and one line:

1. ``topics/<name>.py``, shaped as the others (``topics/entropy.py`` is a small one): the
   section dataclass, ``compute_<name>``, ``section(options, standalone)`` and
   ``layout(section)``; every number from the library, every user value checked; every
   word shown marked for translation (``_("...")`` from :mod:`crossentropy.i18n`, numbers
   and formulas as ``{fields}``, never inside the words), and translated in the ``explain``
   catalogues (``locale/{zh,ru}/LC_MESSAGES/explain.po``, ``make translations``);
2. one ``Topic(...)`` line in :data:`TOPICS` (``topics/__init__.py``): the name, the options
   it reads, its ``section`` and ``layout``. Its place in the table is its place in
   ``explain all``.

The help, the check of the ``TOPIC`` argument and of the options a topic does not use,
``all``, the three formats and the tests (``tests/test_cli_explain_topics.py`` renders every
topic of the table in every format, ``tests/test_cli_explain_lang.py`` in every language)
follow from the table; nothing else lists the topics.
"""

from __future__ import annotations

from crossentropy.cli.explain.command import FORMATS, build_docs, explain, render_all
from crossentropy.cli.explain.document import Doc, Num
from crossentropy.cli.explain.inputs import (
    MAX_LOGIT,
    MAX_VALUES,
    ExplainOptions,
    Unit,
    parse_base,
    parse_logits,
    parse_matrix,
    parse_vector,
)
from crossentropy.cli.explain.render import render_doc, render_text, to_json, to_markdown
from crossentropy.cli.explain.topics import TOPIC_NAMES, TOPICS, Topic, find_topic
from crossentropy.cli.explain.topics.cross_entropy import (
    CrossEntropySection,
    DivergenceSection,
    compute_cross_entropy,
    compute_divergence,
)
from crossentropy.cli.explain.topics.entropy import EntropySection, compute_entropy
from crossentropy.cli.explain.topics.gradients import GradientSection, compute_gradient
from crossentropy.cli.explain.topics.information import InformationSection, compute_information
from crossentropy.cli.explain.topics.kl import KLSection, compute_kl
from crossentropy.cli.explain.topics.mse_vs_ce import (
    ConfidentMiss,
    ModelComparisonSection,
    compute_model_comparison,
)
from crossentropy.cli.explain.topics.multilabel import MultiLabelSection, compute_multilabel
from crossentropy.cli.explain.topics.softmax import SoftmaxSection, compute_softmax

__all__ = [
    "FORMATS",
    "MAX_LOGIT",
    "MAX_VALUES",
    "TOPICS",
    "TOPIC_NAMES",
    "ConfidentMiss",
    "CrossEntropySection",
    "DivergenceSection",
    "Doc",
    "EntropySection",
    "ExplainOptions",
    "GradientSection",
    "InformationSection",
    "KLSection",
    "ModelComparisonSection",
    "MultiLabelSection",
    "Num",
    "SoftmaxSection",
    "Topic",
    "Unit",
    "build_docs",
    "compute_cross_entropy",
    "compute_divergence",
    "compute_entropy",
    "compute_gradient",
    "compute_information",
    "compute_kl",
    "compute_model_comparison",
    "compute_multilabel",
    "compute_softmax",
    "explain",
    "find_topic",
    "parse_base",
    "parse_logits",
    "parse_matrix",
    "parse_vector",
    "render_all",
    "render_doc",
    "render_text",
    "to_json",
    "to_markdown",
]
