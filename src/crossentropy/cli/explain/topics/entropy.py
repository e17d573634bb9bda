"""``explain entropy``: the average information of a distribution, term by term."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import crossentropy as ce
from crossentropy.cli.explain.common import as_f64, as_float, as_floats, numbered
from crossentropy.cli.explain.document import (
    Cell,
    Doc,
    Formulas,
    Note,
    Num,
    TableBlock,
    fixed,
    sentences,
)
from crossentropy.cli.explain.inputs import ExplainOptions, Unit, check_distribution
from crossentropy.i18n import gettext as _
from crossentropy.i18n import mark as N_
from crossentropy.i18n import ngettext

__all__ = [
    "EntropySection",
    "EntropyTerm",
    "compute_entropy",
    "layout",
    "section",
]


@dataclass(frozen=True)
class EntropyTerm:
    outcome: str
    p: float
    information: tuple[float, ...]  # -log p_i, per unit
    term: tuple[float, ...]  # -p_i log p_i, per unit


@dataclass(frozen=True)
class EntropySection:
    units: tuple[Unit, ...]
    terms: tuple[EntropyTerm, ...]
    entropy: tuple[float, ...]  # H(p), per unit
    max_entropy: tuple[float, ...]  # H(uniform) = log n, per unit


_WEATHER = (N_("sun"), N_("clouds"), N_("rain"))


def compute_entropy(
    options: ExplainOptions,
    outcomes: Sequence[str] = _WEATHER,
    p: Sequence[float] = (0.5, 0.25, 0.25),
) -> EntropySection:
    """Entropy of ``p``, with each term -p_i log p_i (the entropy of a column of one value);
    the ``outcomes`` translated."""
    units = options.units
    pa = as_f64(p)
    uniform = np.full(pa.shape, 1.0 / pa.size)
    info = [as_floats(ce.information(pa, base=u.base)) for u in units]
    terms = [as_floats(ce.entropy(pa[:, None], axis=-1, base=u.base)) for u in units]
    rows = tuple(
        EntropyTerm(
            _(outcomes[i]),
            float(pa[i]),
            tuple(col[i] for col in info),
            tuple(col[i] for col in terms),
        )
        for i in range(pa.size)
    )
    return EntropySection(
        units,
        rows,
        tuple(as_float(ce.entropy(pa, base=u.base)) for u in units),
        tuple(as_float(ce.entropy(uniform, base=u.base)) for u in units),
    )


def section(o: ExplainOptions, standalone: bool) -> EntropySection:
    """The section for the options the user gave (``standalone``: not inside ``all``)."""
    del standalone  # read the same way alone and inside all
    if o.p is None:
        return compute_entropy(o)
    check_distribution(o.p, "--p")
    return compute_entropy(o, numbered("x", len(o.p)), o.p)


def layout(s: EntropySection) -> Doc:
    """The section laid out: formulas, tables and notes."""
    cols: list[str] = []
    for u in s.units:
        cols += [f"-{u.log} p_i", f"-p_i {u.log} p_i"]
    table = TableBlock((_("outcome"), "p_i", *cols))
    for t in s.terms:
        cells: list[Cell] = []
        for info, term in zip(t.information, t.term, strict=True):
            cells += [Num(info), Num(term)]
        table.add(t.outcome, Num(t.p, "g"), *cells)
    totals: list[Cell] = []
    for h in s.entropy:
        totals += [None, Num(h)]
    table.add("H(p) = " + _("sum"), None, *totals, bold=True, section=True)
    entropy = ", ".join(f"{fixed(h)} {u.label}" for u, h in zip(s.units, s.entropy, strict=True))
    maximum = ", ".join(
        f"{fixed(h)} {u.label}" for u, h in zip(s.units, s.max_entropy, strict=True)
    )
    n = len(s.terms)
    outcomes = tuple(t.outcome for t in s.terms)
    questions = (
        _("In bits it counts yes/no questions: ask '{first}?', then if not, '{second}?'.").format(
            first=outcomes[0], second=outcomes[1]
        )
        if outcomes == tuple(_(w) for w in _WEATHER)
        else _("In bits it is the average number of yes/no questions an optimal code needs.")
    )
    uniform = ngettext(
        "The most uncertain {n}-outcome distribution, the uniform one, has {formula}.",
        "The most uncertain {n}-outcome distribution, the uniform one, has {formula}.",
        n,
    ).format(n=n, formula=f"H = log {n} = {maximum}")
    return Doc(
        "entropy",
        _("Entropy: the average information of a distribution"),
        [
            Formulas("H(p) = -Σ_i p_i log p_i = Σ_i p_i I(x_i)"),
            table,
            Note(
                sentences(_("{equation}.").format(equation=f"H(p) = {entropy}"), questions, uniform)
            ),
        ],
    )
