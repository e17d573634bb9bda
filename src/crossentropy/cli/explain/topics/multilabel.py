"""``explain multilabel``: one sigmoid cross entropy per class, for n-hot targets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import crossentropy as ce
from crossentropy.cli.errors import CliError
from crossentropy.cli.explain.common import as_f64, as_float, as_floats, class_names
from crossentropy.cli.explain.document import Doc, Formulas, Note, Num, TableBlock, fixed
from crossentropy.cli.explain.inputs import NATS, ExplainOptions, check_unit_interval
from crossentropy.i18n import gettext as _
from crossentropy.i18n import mark as N_

__all__ = [
    "MultiLabelSection",
    "TagLoss",
    "compute_multilabel",
    "layout",
    "section",
]


@dataclass(frozen=True)
class TagLoss:
    tag: str
    label: float
    logit: float
    prob: float  # sigmoid(logit)
    loss: float


@dataclass(frozen=True)
class MultiLabelSection:
    tags: tuple[TagLoss, ...]
    total: float  # reduction="sum"
    mean: float  # reduction="mean"
    prob_sum: float


def compute_multilabel(
    options: ExplainOptions,
    tags: Sequence[str] = (N_("outdoor"), N_("dog"), N_("cat"), N_("car")),
    labels: Sequence[float] = (1.0, 1.0, 0.0, 0.0),
    logits: Sequence[float] = (2.0, 0.5, -1.0, -3.0),
) -> MultiLabelSection:
    """Per-class sigmoid cross entropy of one image's tags, summed and averaged; ``tags``
    translated."""
    del options  # losses are in nats
    x, y = as_f64(logits), as_f64(labels)
    probs = as_floats(ce.sigmoid(x))
    losses = as_floats(ce.sigmoid_cross_entropy(x, y, reduction="none"))
    rows = tuple(
        TagLoss(_(tags[i]), float(y[i]), float(x[i]), probs[i], losses[i]) for i in range(x.size)
    )
    return MultiLabelSection(
        rows,
        as_float(ce.sigmoid_cross_entropy(x, y, reduction="sum")),
        as_float(ce.sigmoid_cross_entropy(x, y, reduction="mean")),
        math.fsum(probs),
    )


def section(o: ExplainOptions, standalone: bool) -> MultiLabelSection:
    """The section for the options the user gave (``standalone``: not inside ``all``)."""
    use_labels = o.labels is not None and (standalone or o.probs is None)
    if not use_labels:
        if standalone and o.logits is not None:
            raise CliError(
                "multilabel needs --labels too: the n-hot targets, e.g. 1,0,1", "--logits"
            )
        return compute_multilabel(o)
    assert o.labels is not None
    if o.logits is None:
        raise CliError("multilabel needs --logits too: one logit per label", "--labels")
    check_unit_interval(o.labels, "--labels", "multilabel targets")
    if len(o.labels) != len(o.logits):
        raise CliError(
            f"{len(o.labels)} labels for {len(o.logits)} logits; multilabel needs one each",
            "--labels",
        )
    return compute_multilabel(o, class_names(len(o.logits), True), o.labels, o.logits)


def layout(s: MultiLabelSection) -> Doc:
    """The section laid out: formulas, tables and notes."""
    present = [t.tag for t in s.tags if t.label]
    table = TableBlock(
        (
            _("tag"),
            "y_c",
            _("logit {symbol}").format(symbol="x_c"),
            "σ(x_c)",
            f"ℓ_c ({NATS.label})",
        ),
        title=_("an image tagged {tags}").format(tags="{" + ", ".join(present) + "}"),
    )
    for t in s.tags:
        table.add(t.tag, Num(t.label, "g"), Num(t.logit, "g"), Num(t.prob), Num(t.loss))
    table.add(_("sum"), None, None, Num(s.prob_sum), Num(s.total), bold=True, section=True)
    table.add(_("mean"), None, None, None, Num(s.mean))
    return Doc(
        "multilabel",
        _("Multi-label (n-hot): one sigmoid cross entropy per class"),
        [
            Formulas(
                "σ(x) = 1 / (1 + e^-x)",
                "ℓ_c  = -[ y_c ln σ(x_c) + (1 - y_c) ln(1 - σ(x_c)) ]",
                "L    = Σ_c ℓ_c",
            ),
            table,
            Note(
                _(
                    "Each tag is its own yes/no question: the σ column sums to {total}, not 1, "
                    "because an image can carry several tags at once. A softmax would make the "
                    "tags compete for one unit of probability."
                ).format(total=fixed(s.prob_sum))
            ),
        ],
    )
