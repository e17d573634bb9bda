"""``explain kl``: KL(p‖q) term by term in each unit, and the reverse KL(q‖p)."""

from __future__ import annotations

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
from crossentropy.cli.explain.document import Doc, Formulas, Note, Num, TableBlock, vector
from crossentropy.cli.explain.inputs import ExplainOptions, Unit, p_and_q
from crossentropy.i18n import gettext as _

__all__ = [
    "KLSection",
    "KLTerm",
    "compute_kl",
    "layout",
    "section",
]


@dataclass(frozen=True)
class KLTerm:
    label: str
    p: float
    q: float
    kl: tuple[float, ...]  # p_i log(p_i / q_i), per unit


@dataclass(frozen=True)
class KLSection:
    units: tuple[Unit, ...]
    p: tuple[float, ...]
    q: tuple[float, ...]
    terms: tuple[KLTerm, ...]
    kl: tuple[float, ...]  # KL(p || q), per unit
    reverse_kl: tuple[float, ...]  # KL(q || p), per unit (inf where q puts mass on p_i = 0)


def compute_kl(
    options: ExplainOptions,
    labels: Sequence[str] = CLASSES,
    p: Sequence[float] = SOFT_P,
    q: Sequence[float] = EXAMPLE_Q,
) -> KLSection:
    """KL(p || q) term by term, in each unit, and the reverse KL(q || p); ``labels``
    translated."""
    units = options.units
    pa, qa = as_f64(p), as_f64(q)
    per_unit = [as_floats(ce.kl_divergence(pa[:, None], qa[:, None], base=u.base)) for u in units]
    terms = tuple(
        KLTerm(_(labels[i]), float(pa[i]), float(qa[i]), tuple(col[i] for col in per_unit))
        for i in range(pa.size)
    )
    return KLSection(
        units,
        as_floats(pa),
        as_floats(qa),
        terms,
        tuple(as_float(ce.kl_divergence(pa, qa, base=u.base)) for u in units),
        tuple(as_float(ce.kl_divergence(qa, pa, base=u.base)) for u in units),
    )


def section(o: ExplainOptions, standalone: bool) -> KLSection:
    """The section for the options the user gave (``standalone``: not inside ``all``)."""
    del standalone  # read the same way alone and inside all
    p, q = p_and_q(o, SOFT_P, EXAMPLE_Q)
    return compute_kl(o, class_names(len(p), o.p is not None or o.q is not None), p, q)


def layout(s: KLSection) -> Doc:
    """The section laid out: formulas, tables and notes."""
    cols = [f"p_i {u.log}(p_i/q_i)" for u in s.units]
    table = TableBlock(
        (_("class"), "p_i", "q_i", *cols), title=f"p = {vector(s.p)}, q = {vector(s.q)}"
    )
    for t in s.terms:
        table.add(t.label, Num(t.p, "g"), Num(t.q, "g"), *(Num(v) for v in t.kl))
    total = "KL(p‖q) = " + _("sum")
    table.add(total, None, None, *(Num(v) for v in s.kl), bold=True, section=True)
    summary = TableBlock((_("divergence"), *(u.label for u in s.units)), title=_("not symmetric"))
    summary.add("KL(p‖q)", *(Num(v) for v in s.kl))
    summary.add("KL(q‖p)", *(Num(v) for v in s.reverse_kl))
    return Doc(
        "kl",
        _("KL divergence: the extra cost of believing q when the truth is p"),
        [
            Formulas(
                "KL(p‖q) = Σ_i p_i log(p_i / q_i) = H(p, q) - H(p)",
                _("{inequality}, with equality only when {condition}").format(
                    inequality="KL(p‖q) ≥ 0", condition="q = p"
                ),
            ),
            table,
            summary,
            Note(
                _(
                    "Terms with {zero} contribute 0 ({convention}); a {q_zero} where {p_positive} "
                    "makes KL infinite. KL is not a distance: {forward} and {reverse} differ."
                ).format(
                    zero="p_i = 0",
                    convention="0 log 0 = 0",
                    q_zero="q_i = 0",
                    p_positive="p_i > 0",
                    forward="KL(p‖q)",
                    reverse="KL(q‖p)",
                )
            ),
        ],
    )
