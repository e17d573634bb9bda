"""``explain softmax``: from logits to probabilities; log-sum-exp, the shift, temperature."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import crossentropy as ce
from crossentropy.cli.explain.common import CLASSES, as_f64, as_float, as_floats, class_names
from crossentropy.cli.explain.document import Doc, Formulas, Note, Num, TableBlock, fixed
from crossentropy.cli.explain.inputs import NATS, ExplainOptions
from crossentropy.i18n import gettext as _

__all__ = [
    "SoftmaxComponent",
    "SoftmaxSection",
    "TemperatureRow",
    "compute_softmax",
    "layout",
    "section",
]


@dataclass(frozen=True)
class SoftmaxComponent:
    label: str
    logit: float
    shifted: float  # x_i - max(x)
    log_prob: float  # log_softmax(x)_i
    prob: float  # softmax(x)_i
    prob_of_shifted: float  # softmax(x - max(x))_i: the same


@dataclass(frozen=True)
class TemperatureRow:
    temperature: float
    probs: tuple[float, ...]  # softmax(x / T)
    entropy: float  # H(softmax(x / T)), nats


@dataclass(frozen=True)
class SoftmaxSection:
    components: tuple[SoftmaxComponent, ...]
    logsumexp: float
    prob_sum: float
    temperatures: tuple[TemperatureRow, ...]


def compute_softmax(
    options: ExplainOptions,
    classes: Sequence[str] = CLASSES,
    logits: Sequence[float] = (2.0, 1.0, 0.1),
    temperatures: Sequence[float] = (0.5, 1.0, 2.0, 10.0),
) -> SoftmaxSection:
    """softmax, log_softmax and logsumexp of ``logits``, and softmax under temperature;
    ``classes`` translated."""
    del options
    x = as_f64(logits)
    shifted = x - np.max(x)
    probs = as_floats(ce.softmax(x))
    components = tuple(
        SoftmaxComponent(_(classes[i]), float(x[i]), float(shifted[i]), lp, p, ps)
        for i, (lp, p, ps) in enumerate(
            zip(as_floats(ce.log_softmax(x)), probs, as_floats(ce.softmax(shifted)), strict=True)
        )
    )
    rows = tuple(
        TemperatureRow(
            float(t), as_floats(ce.softmax(x / t)), as_float(ce.entropy(ce.softmax(x / t)))
        )
        for t in temperatures
    )
    return SoftmaxSection(components, as_float(ce.logsumexp(x)), math.fsum(probs), rows)


def section(o: ExplainOptions, standalone: bool) -> SoftmaxSection:
    """The section for the options the user gave (``standalone``: not inside ``all``)."""
    del standalone  # read the same way alone and inside all
    if o.logits is None:
        return compute_softmax(o)
    return compute_softmax(o, class_names(len(o.logits), True), o.logits)


def layout(s: SoftmaxSection) -> Doc:
    """The section laid out: formulas, tables and notes."""
    table = TableBlock(
        (
            _("class"),
            "x_i",
            "x_i - max x",
            "log p_i = x_i - LSE(x)",
            "p_i = softmax(x)_i",
            "softmax(x - max x)_i",
        ),
        title=f"logsumexp(x) = LSE(x) = {fixed(s.logsumexp, 4)}",
    )
    for c in s.components:
        table.add(
            c.label,
            Num(c.logit, "g"),
            Num(c.shifted, "g"),
            Num(c.log_prob, "f4"),
            Num(c.prob, "f4"),
            Num(c.prob_of_shifted, "f4"),
        )
    table.add(_("sum"), None, None, None, Num(s.prob_sum, "f4"), None, bold=True, section=True)
    temps = TableBlock(
        (
            _("temperature {symbol}").format(symbol="T"),
            *(f"p({c.label})" for c in s.components),
            f"H ({NATS.label})",
        ),
        title=_("{formula}: temperature").format(formula="softmax(x / T)"),
    )
    for r in s.temperatures:
        temps.add(Num(r.temperature, "g"), *(Num(v, "f4") for v in r.probs), Num(r.entropy))
    return Doc(
        "softmax",
        _("Softmax: from logits to probabilities"),
        [
            Formulas(
                "softmax(x)_i = e^{x_i} / Σ_j e^{x_j}",
                "log softmax(x)_i = x_i - logsumexp(x)",
                "logsumexp(x) = max x + ln Σ_j e^{x_j - max x}",
                "softmax(x + c) = softmax(x): "
                + _("subtracting {max} avoids overflow, changes nothing").format(max="max x"),
            ),
            table,
            temps,
            Note(
                _(
                    "The probabilities are positive and sum to 1. A low temperature sharpens "
                    "them towards the largest logit, a high one flattens them towards uniform "
                    "(higher entropy)."
                )
            ),
        ],
    )
