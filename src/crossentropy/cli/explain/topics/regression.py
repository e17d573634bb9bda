"""``explain regression``: L1, L2 (MSE), smooth L1 and Huber, values and derivatives.

Each loss at a row of residuals r = prediction - target, with its derivative from
:mod:`crossentropy.gradients` beside it, checked against central finite differences of the
library's loss: L1's derivative is ±1 however small r is, L2's grows with r, smooth L1's and
Huber's grow like L2's near zero and stop growing beyond beta.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import crossentropy as ce
from crossentropy import gradients
from crossentropy.cli.explain.common import as_f64, as_floats
from crossentropy.cli.explain.document import Doc, Formulas, Note, Num, TableBlock, fixed
from crossentropy.cli.explain.inputs import ExplainOptions
from crossentropy.i18n import gettext as _

__all__ = [
    "LossCheck",
    "RegressionPoint",
    "RegressionSection",
    "compute_regression",
    "layout",
    "section",
]


@dataclass(frozen=True)
class RegressionPoint:
    residual: float  # r = prediction - target
    l1: float  # |r|
    l1_grad: float  # sign(r), 0 at r = 0
    l2: float  # r², the library's mse
    l2_grad: float  # 2r
    smooth_l1: float  # 0.5 r²/β inside |r| < β, |r| - 0.5 β outside
    smooth_l1_grad: float  # r/β inside, sign(r) outside
    huber: float  # 0.5 r² inside |r| < δ, δ(|r| - 0.5 δ) outside (δ = β)
    huber_grad: float  # r inside, δ sign(r) outside


@dataclass(frozen=True)
class LossCheck:
    """One loss's derivative (crossentropy.gradients) against central finite differences."""

    loss: str  # the library function
    max_abs_grad: float  # max_r |d loss/dr| over the row
    max_error: float  # max_r |analytic - finite difference| / max(1, |analytic|)


@dataclass(frozen=True)
class RegressionSection:
    beta: float  # smooth L1's beta, Huber's delta
    step: float  # h: the finite difference at r uses h · max(1, |r|) · min(1, β)
    points: tuple[RegressionPoint, ...]
    checks: tuple[LossCheck, ...]  # l1, mse, smooth_l1, huber


_RESIDUALS = (-3.0, -1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 3.0)

_Loss = Callable[[Any, Any], Any]
_Gradient = Callable[[Any, Any], tuple[Any, Any]]


def compute_regression(
    options: ExplainOptions,
    residuals: Sequence[float] = _RESIDUALS,
    beta: float = 1.0,
    step: float = 1e-5,
) -> RegressionSection:
    """The four losses and their derivatives at ``residuals`` (as prediction r, target 0)."""
    del options
    r = as_f64(residuals)
    zero = np.zeros_like(r)
    losses: list[tuple[str, _Loss, _Gradient]] = [
        (
            "l1",
            lambda x, t: ce.l1(x, t, reduction="none"),
            lambda x, t: gradients.l1(x, t, reduction="none"),
        ),
        (
            "mse",
            lambda x, t: ce.mse(x, t, reduction="none"),
            lambda x, t: gradients.mse(x, t, reduction="none"),
        ),
        (
            "smooth_l1",
            lambda x, t: ce.smooth_l1(x, t, beta=beta, reduction="none"),
            lambda x, t: gradients.smooth_l1(x, t, beta=beta, reduction="none"),
        ),
        (
            "huber",
            lambda x, t: ce.huber(x, t, delta=beta, reduction="none"),
            lambda x, t: gradients.huber(x, t, delta=beta, reduction="none"),
        ),
    ]
    # a step that scales with |r| (so that r ± h still differ from r in float64) and with β
    # (so that it does not step over the whole quadratic zone)
    h = step * np.maximum(1.0, np.abs(r)) * min(1.0, beta)
    values, derivatives, checks = [], [], []
    for name, loss, gradient in losses:
        value = np.asarray(loss(r, zero), dtype=np.float64)
        grad = np.asarray(gradient(r, zero)[1], dtype=np.float64)
        fd = (np.asarray(loss(r + h, zero)) - np.asarray(loss(r - h, zero))) / (2 * h)
        error = np.abs(grad - fd) / np.maximum(1.0, np.abs(grad))
        values.append(as_floats(value))
        derivatives.append(as_floats(grad))
        checks.append(LossCheck(name, float(np.max(np.abs(grad))), float(np.max(error))))
    points = tuple(
        RegressionPoint(
            float(r[i]),
            values[0][i],
            derivatives[0][i],
            values[1][i],
            derivatives[1][i],
            values[2][i],
            derivatives[2][i],
            values[3][i],
            derivatives[3][i],
        )
        for i in range(r.size)
    )
    return RegressionSection(beta, step, points, tuple(checks))


def section(o: ExplainOptions, standalone: bool) -> RegressionSection:
    """The section for the options the user gave (``standalone``: not inside ``all``)."""
    del standalone  # --residuals and --beta are this topic's alone
    residuals = _RESIDUALS if o.residuals is None else o.residuals
    beta = 1.0 if o.beta is None else o.beta
    return compute_regression(o, residuals, beta)


def layout(s: RegressionSection) -> Doc:
    """The section laid out: formulas, tables and notes."""
    b = f"{s.beta:g}"
    table = TableBlock(
        (
            "r",
            "L1 |r|",
            "dL1/dr",
            "L2 r²",
            "dL2/dr",
            _("smooth L1"),
            "dSL1/dr",
            _("Huber"),
            "dH/dr",
        ),
        title=_(
            "each loss and its derivative at a residual r = prediction - target, β = δ = {beta}"
        ).format(beta=b),
    )
    for p in s.points:
        table.add(
            Num(p.residual, "g"),
            Num(p.l1, "f4"),
            Num(p.l1_grad, "f4"),
            Num(p.l2, "f4"),
            Num(p.l2_grad, "f4"),
            Num(p.smooth_l1, "f4"),
            Num(p.smooth_l1_grad, "f4"),
            Num(p.huber, "f4"),
            Num(p.huber_grad, "f4"),
        )
    names = {"l1": "L1", "mse": "L2 (MSE)", "smooth_l1": _("smooth L1"), "huber": _("Huber")}
    checks = TableBlock(
        (
            _("loss"),
            _("library function"),
            _("largest |derivative|"),
            "max |" + _("diff.") + "| / max(1, |dL/dr|)",
        ),
        title=_("the derivatives of crossentropy.gradients against central finite differences"),
    )
    for c in s.checks:
        checks.add(names[c.loss], c.loss, Num(c.max_abs_grad, "f4"), Num(c.max_error, "e1"))
    by_name = {c.loss: c for c in s.checks}
    small = min(
        (p for p in s.points if p.residual != 0), key=lambda p: abs(p.residual), default=None
    )
    large = max(s.points, key=lambda p: abs(p.residual))
    notes = []
    if small is not None:
        notes.append(
            Note(
                _(
                    "L1: its derivative is ±1 at every residual but 0, at r = {r} as at "
                    "r = {large}: a fixed learning rate η moves the prediction by η however close "
                    "it is, so late in training, when the residuals are small, it keeps "
                    "overshooting the target."
                ).format(r=f"{small.residual:g}", large=f"{large.residual:g}")
            )
        )
    notes += [
        Note(
            _(
                "L2: its derivative grows with the residual, {grad} at r = {r}: an outlier, or "
                "a model early in training, takes steps in proportion to its error, large and "
                "unstable. The library's MSE is r², so its derivative is 2r; texts that write "
                "½r² get r."
            ).format(grad=fixed(large.l2_grad, 4), r=f"{large.residual:g}")
        ),
        Note(
            _(
                "Smooth L1 is quadratic inside |r| < β = {beta} (derivative r/β, shrinking to 0 "
                "as the target is reached, like L2) and linear outside (derivative ±1, like "
                "L1): its gradient is bounded by 1, here at most {sl1}, against L2's {l2}. Huber "
                "with δ = β is δ times smooth L1: the same shape, its gradient bounded by δ "
                "(at most {huber} here)."
            ).format(
                beta=b,
                sl1=fixed(by_name["smooth_l1"].max_abs_grad, 4),
                l2=fixed(by_name["mse"].max_abs_grad, 4),
                huber=fixed(by_name["huber"].max_abs_grad, 4),
            )
        ),
    ]
    return Doc(
        "regression",
        _("Regression losses: L1, L2, smooth L1 and Huber"),
        [
            Formulas(
                "L1(r)  = |r|                                  dL1/dr = sign(r)",
                "L2(r)  = r²                                   dL2/dr = 2r",
                "SL1(r) = 0.5 r²/β  if |r| < β,  |r| - 0.5β    dSL1/dr = r/β  or  sign(r)",
                "H(r)   = 0.5 r²    if |r| < δ,  δ(|r| - 0.5δ)  dH/dr  = r    or  δ sign(r)",
                _("check:")
                + f"  dL/dr ≈ [L(r + h) - L(r - h)] / 2h,   h = {s.step:g} · max(1, |r|) · "
                + "min(1, β)",
            ),
            table,
            checks,
            *notes,
        ],
    )
