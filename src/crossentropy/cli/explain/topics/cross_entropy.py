"""``explain cross-entropy``: H(p, q) term by term, and H(p, q) = H(p) + KL(p‖q)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import crossentropy as ce
from crossentropy.cli.explain.common import (
    CLASSES,
    EXAMPLE_Q,
    SOFT_P,
    as_f64,
    as_float,
    as_floats,
    class_names,
)
from crossentropy.cli.explain.document import (
    Doc,
    Formulas,
    Note,
    Num,
    TableBlock,
    fixed,
    sentences,
    vector,
)
from crossentropy.cli.explain.inputs import ExplainOptions, Unit, p_and_q
from crossentropy.i18n import gettext as _

__all__ = [
    "CrossEntropySection",
    "Decomposition",
    "DivergenceSection",
    "DivergenceTerm",
    "compute_cross_entropy",
    "compute_divergence",
    "layout",
    "section",
]


@dataclass(frozen=True)
class DivergenceTerm:
    label: str
    p: float
    q: float
    cross_entropy: float  # -p_i log q_i, first unit
    kl: float  # p_i log(p_i / q_i), first unit


@dataclass(frozen=True)
class Decomposition:
    p: tuple[float, ...]
    unit: Unit
    entropy: float
    kl: float
    cross_entropy: float

    @property
    def entropy_plus_kl(self) -> float:
        return self.entropy + self.kl


@dataclass(frozen=True)
class DivergenceSection:
    units: tuple[Unit, ...]
    p: tuple[float, ...]
    q: tuple[float, ...]
    terms: tuple[DivergenceTerm, ...]
    decompositions: tuple[Decomposition, ...]


CrossEntropySection = DivergenceSection

_P = (1.0, 0.0, 0.0)  # the one-hot truth: a cat


def compute_divergence(
    options: ExplainOptions,
    labels: Sequence[str] = CLASSES,
    p: Sequence[float] = _P,
    q: Sequence[float] = EXAMPLE_Q,
    soft_p: Sequence[float] | None = SOFT_P,
) -> DivergenceSection:
    """Term-by-term KL and cross entropy of ``p`` against ``q``, and the decomposition.

    ``soft_p`` adds a second decomposition with a label that is not one-hot (H(p) > 0).
    ``labels`` are translated.
    """
    units = options.units
    pa, qa = as_f64(p), as_f64(q)
    first = units[0]
    ce_terms = as_floats(ce.cross_entropy(pa[:, None], qa[:, None], axis=-1, base=first.base))
    kl_terms = as_floats(ce.kl_divergence(pa[:, None], qa[:, None], axis=-1, base=first.base))
    terms = tuple(
        DivergenceTerm(_(labels[i]), float(pa[i]), float(qa[i]), ce_terms[i], kl_terms[i])
        for i in range(pa.size)
    )
    targets = [pa] if soft_p is None else [pa, as_f64(soft_p)]
    decompositions = tuple(
        Decomposition(
            as_floats(t),
            u,
            as_float(ce.entropy(t, base=u.base)),
            as_float(ce.kl_divergence(t, qa, base=u.base)),
            as_float(ce.cross_entropy(t, qa, base=u.base)),
        )
        for t in targets
        for u in units
    )
    return DivergenceSection(units, as_floats(pa), as_floats(qa), terms, decompositions)


compute_cross_entropy = compute_divergence


def section(o: ExplainOptions, standalone: bool) -> DivergenceSection:
    """The section for the options the user gave (``standalone``: not inside ``all``)."""
    del standalone  # read the same way alone and inside all
    p, q = p_and_q(o, _P, EXAMPLE_Q)
    user = o.p is not None or o.q is not None
    return compute_divergence(
        o, class_names(len(p), user), p, q, None if o.p is not None else SOFT_P
    )


def layout(s: DivergenceSection) -> Doc:
    """The section laid out: formulas, tables and notes."""
    u = s.units[0]
    table = TableBlock(
        (_("class"), "p_i", "q_i", f"-p_i {u.log} q_i", f"p_i {u.log}(p_i/q_i)"),
        title=_("{p_and_q}, in {unit}").format(
            p_and_q=f"p = {vector(s.p)}, q = {vector(s.q)}", unit=u.label
        ),
    )
    for t in s.terms:
        table.add(t.label, Num(t.p, "g"), Num(t.q, "g"), Num(t.cross_entropy), Num(t.kl))
    table.add(
        _("sum"),
        None,
        None,
        Num(math.fsum(t.cross_entropy for t in s.terms)),
        Num(math.fsum(t.kl for t in s.terms)),
        bold=True,
        section=True,
    )
    decomposition = TableBlock(("p", _("unit"), "H(p)", "KL(p‖q)", "H(p) + KL(p‖q)", "H(p, q)"))
    for d in s.decompositions:
        decomposition.add(
            vector(d.p),
            d.unit.label,
            Num(d.entropy),
            Num(d.kl),
            Num(d.entropy_plus_kl),
            Num(d.cross_entropy),
        )
    first = s.decompositions[0]
    one_hot = sorted(first.p) == [0.0] * (len(first.p) - 1) + [1.0]
    lesson = (
        _(
            "With a one-hot {p}, {zero}, so cross entropy equals KL: minimising cross entropy "
            "against hard labels is minimising the KL divergence, and only the true class's "
            "term {term} survives."
        ).format(p=f"p = {vector(first.p)}", zero="H(p) = 0", term="-log q_true")
        if one_hot
        else _("Here {entropy} > 0.").format(
            entropy=f"H(p) = {fixed(first.entropy)} {first.unit.label}"
        )
    )
    return Doc(
        "cross-entropy",
        _("Cross entropy: {identity}").format(identity="H(p, q) = H(p) + KL(p‖q)"),
        [
            Formulas(
                "H(p, q)  = -Σ_i p_i log q_i             (" + _("cross entropy") + ")",
                "KL(p‖q)  =  Σ_i p_i log(p_i / q_i)      ("
                + _("Kullback-Leibler divergence")
                + ")",
                "H(p, q)  =  H(p) + KL(p‖q)",
            ),
            table,
            Note(
                _("Terms with {zero} contribute 0 (the convention {convention}).").format(
                    zero="p_i = 0", convention="0 log 0 = 0"
                )
            ),
            decomposition,
            Note(
                sentences(
                    lesson,
                    _(
                        "With a soft p, {positive} is the part of {cross_entropy} no model can "
                        "remove."
                    ).format(positive="H(p) > 0", cross_entropy="H(p, q)"),
                )
            ),
        ],
    )
