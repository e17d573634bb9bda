"""``explain information``: how surprising one event is, I(x) = -log p(x), in each unit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import crossentropy as ce
from crossentropy.cli.explain.common import as_f64, as_floats
from crossentropy.cli.explain.document import Doc, Formulas, Note, Num, TableBlock
from crossentropy.cli.explain.inputs import ExplainOptions, Unit, check_unit_interval
from crossentropy.i18n import gettext as _
from crossentropy.i18n import mark as N_

__all__ = [
    "EventInformation",
    "InformationSection",
    "compute_information",
    "layout",
    "section",
]


@dataclass(frozen=True)
class EventInformation:
    label: str
    p: float
    inverse: float  # 1 / p (inf for p = 0)
    information: tuple[float, ...]  # -log p, one value per unit


@dataclass(frozen=True)
class InformationSection:
    units: tuple[Unit, ...]
    events: tuple[EventInformation, ...]
    # information of the rarest event / that of the most likely one (None: that is 0)
    ratio: float | None


_EVENTS = (
    (N_("likely event"), 0.9),
    (N_("fair coin lands heads"), 0.5),
    (N_("unlikely event"), 0.01),
)


def compute_information(
    options: ExplainOptions, events: Sequence[tuple[str, float]] = _EVENTS
) -> InformationSection:
    """Information content -log p of a few events, in each unit (labels translated)."""
    units = options.units
    probs = as_f64([p for _label, p in events])
    per_unit = [as_floats(ce.information(probs, base=u.base)) for u in units]
    with np.errstate(divide="ignore"):
        inverse = as_floats(np.float64(1.0) / probs)
    rows = tuple(
        EventInformation(_(label), float(probs[i]), inverse[i], tuple(v[i] for v in per_unit))
        for i, (label, _p) in enumerate(events)
    )
    likely = max(rows, key=lambda r: r.p)
    rare = min(rows, key=lambda r: r.p)
    ratio = rare.information[0] / likely.information[0] if likely.information[0] > 0 else None
    return InformationSection(units, rows, ratio)


def section(o: ExplainOptions, standalone: bool) -> InformationSection:
    """The section for the options the user gave (``standalone``: not inside ``all``)."""
    del standalone  # read the same way alone and inside all
    if o.p is None:
        return compute_information(o)
    check_unit_interval(o.p, "--p", "event probabilities")
    return compute_information(
        o, [(_("event {index}").format(index=i), v) for i, v in enumerate(o.p)]
    )


def layout(s: InformationSection) -> Doc:
    """The section laid out: formulas, tables and notes."""
    table = TableBlock(
        (
            _("event"),
            "p(x)",
            "1/p(x)",
            *(_("{quantity} in {unit}").format(quantity="I(x)", unit=u.label) for u in s.units),
        )
    )
    for e in s.events:
        table.add(e.label, Num(e.p, "g"), Num(e.inverse, "g4"), *(Num(v) for v in e.information))
    likely = max(s.events, key=lambda e: e.p)
    rare = min(s.events, key=lambda e: e.p)
    note = (
        _(
            "The rarer the event, the more it tells you: {rare} carries {ratio:.1f} times the "
            "information of {likely}. A fair coin flip is 1 bit."
        ).format(rare=f"p = {rare.p:g}", ratio=s.ratio, likely=f"p = {likely.p:g}")
        if s.ratio is not None
        else _("The rarer the event, the more it tells you: A fair coin flip is 1 bit.")
    )
    return Doc(
        "information",
        _("Information: how surprising is one event?"),
        [
            Formulas(
                "I(x) = -log p(x)",
                _("{ln} gives nats, {log2} gives bits").format(ln="ln", log2="log2"),
            ),
            table,
            Note(note),
        ],
    )
