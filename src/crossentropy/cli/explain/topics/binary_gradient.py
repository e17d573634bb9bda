"""``explain binary-gradient``: the chain rule through a sigmoid unit, to (ŷ - y)·x.

z = w·x + b, ŷ = σ(z), L = BCE(y, ŷ). Three partial derivatives, each from the library:
dL/dŷ (:func:`crossentropy.gradients.binary_cross_entropy`), dŷ/dz = ŷ(1 - ŷ) and
dz/dw = x; their product is (ŷ - y)·x, which
:func:`crossentropy.gradients.sigmoid_cross_entropy` gives in one step (as ŷ - y, times x).
Each weight's derivative is checked against central finite differences of the loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import crossentropy as ce
from crossentropy import gradients
from crossentropy.cli.explain.common import as_f64, as_float
from crossentropy.cli.explain.document import Doc, Formulas, Note, Num, TableBlock, fixed, vector
from crossentropy.cli.explain.inputs import ExplainOptions
from crossentropy.i18n import gettext as _

__all__ = [
    "BinaryGradientSection",
    "ParameterGradient",
    "compute_binary_gradient",
    "layout",
    "section",
]


@dataclass(frozen=True)
class ParameterGradient:
    name: str  # w_1, w_2, ..., b
    value: float
    dz_dparam: float  # x_j for w_j, 1 for b
    chain: float  # dL/dŷ · dŷ/dz · dz/dθ
    closed_form: float  # (ŷ - y) · dz/dθ, ŷ - y from crossentropy.gradients.sigmoid_cross_entropy
    finite_difference: float


@dataclass(frozen=True)
class BinaryGradientSection:
    x: tuple[float, ...]
    w: tuple[float, ...]
    b: float
    y: float
    z: float  # w·x + b
    prob: float  # ŷ = σ(z), crossentropy.sigmoid
    loss: float  # crossentropy.binary_cross_entropy(ŷ, y)
    loss_from_logit: float  # crossentropy.sigmoid_cross_entropy(z, y): the same number
    dloss_dprob: float  # -y/ŷ + (1 - y)/(1 - ŷ), crossentropy.gradients.binary_cross_entropy
    dprob_dz: float  # ŷ (1 - ŷ)
    dloss_dz: float  # their product
    dloss_dz_library: float  # ŷ - y, crossentropy.gradients.sigmoid_cross_entropy
    step: float
    parameters: tuple[ParameterGradient, ...]
    max_abs_error: float  # max |chain - finite difference| over the parameters


def _loss(x: np.ndarray, w: np.ndarray, b: float, y: float) -> float:
    """L(w, b) = BCE(y, σ(w·x + b)), from the logit."""
    return as_float(ce.sigmoid_cross_entropy(np.float64(x @ w + b), np.float64(y)))


def compute_binary_gradient(
    options: ExplainOptions,
    x: Sequence[float] = (1.0, 2.0),
    w: Sequence[float] = (0.5, -0.3),
    b: float = 0.4,
    y: float = 1.0,
    step: float = 1e-6,
) -> BinaryGradientSection:
    """The three factors of dL/dw for one sigmoid unit and one example, and the check."""
    del options  # losses are in nats
    xa, wa = as_f64(x), as_f64(w)
    z = float(xa @ wa + b)
    prob = as_float(ce.sigmoid(np.float64(z)))
    loss, dl_dp = gradients.binary_cross_entropy(np.float64(prob), np.float64(y), reduction="sum")
    loss_z, dl_dz_lib = gradients.sigmoid_cross_entropy(
        np.float64(z), np.float64(y), reduction="sum"
    )
    dp_dz = prob * (1.0 - prob)
    dl_dz = as_float(dl_dp) * dp_dz
    params = []
    for j in range(xa.size + 1):
        e = np.zeros_like(wa)
        if j < xa.size:  # a weight w_j: dz/dw_j = x_j
            name, value, dz = f"w_{j + 1}", float(wa[j]), float(xa[j])
            e[j] = step
            up, down = _loss(xa, wa + e, b, y), _loss(xa, wa - e, b, y)
        else:  # the bias: dz/db = 1
            name, value, dz = "b", b, 1.0
            up, down = _loss(xa, wa, b + step, y), _loss(xa, wa, b - step, y)
        params.append(
            ParameterGradient(
                name, value, dz, dl_dz * dz, as_float(dl_dz_lib) * dz, (up - down) / (2 * step)
            )
        )
    return BinaryGradientSection(
        tuple(float(v) for v in xa),
        tuple(float(v) for v in wa),
        b,
        y,
        z,
        prob,
        as_float(loss),
        as_float(loss_z),
        as_float(dl_dp),
        dp_dz,
        dl_dz,
        as_float(dl_dz_lib),
        step,
        tuple(params),
        max(abs(p.chain - p.finite_difference) for p in params),
    )


def section(o: ExplainOptions, standalone: bool) -> BinaryGradientSection:
    """The section of the topic's own example (it reads no options)."""
    del standalone
    return compute_binary_gradient(o)


def layout(s: BinaryGradientSection) -> Doc:
    """The section laid out: formulas, tables and notes."""
    forward = TableBlock(
        (_("quantity"), _("formula"), _("value")),
        title=_("forward: x = {x}, w = {w}, b = {b}, y = {y}").format(
            x=vector(s.x), w=vector(s.w), b=f"{s.b:g}", y=f"{s.y:g}"
        ),
    )
    forward.add(_("logit"), "z = w·x + b", Num(s.z, "f4"))
    forward.add(_("prediction"), "ŷ = σ(z)", Num(s.prob, "f4"))
    forward.add(_("loss"), "L = -[y ln ŷ + (1 - y) ln(1 - ŷ)]", Num(s.loss, "f4"))
    factors = TableBlock(
        (_("factor"), _("formula"), _("value")),
        title=_("the three partial derivatives"),
    )
    factors.add("∂L/∂ŷ", "-(y/ŷ) + (1 - y)/(1 - ŷ)", Num(s.dloss_dprob, "f4"))
    factors.add("∂ŷ/∂z", "ŷ(1 - ŷ)", Num(s.dprob_dz, "f4"))
    factors.add("∂L/∂z", "∂L/∂ŷ · ∂ŷ/∂z = ŷ - y", Num(s.dloss_dz, "f4"))
    factors.add("∂z/∂w_j, ∂z/∂b", "x_j, 1", None)
    params = TableBlock(
        (
            _("parameter"),
            _("value"),
            "∂z/∂θ",
            "∂L/∂ŷ · ∂ŷ/∂z · ∂z/∂θ",
            "(ŷ - y) · ∂z/∂θ",
            _("finite diff."),
            "|" + _("diff.") + "|",
        ),
        title=_("the gradient, parameter by parameter"),
    )
    for p in s.parameters:
        params.add(
            p.name,
            Num(p.value, "g"),
            Num(p.dz_dparam, "g"),
            Num(p.chain, "f6"),
            Num(p.closed_form, "f6"),
            Num(p.finite_difference, "f6"),
            Num(abs(p.chain - p.finite_difference), "e1"),
        )
    return Doc(
        "binary-gradient",
        _("The binary chain rule: dL/dw = (ŷ - y)·x"),
        [
            Formulas(
                "z = w·x + b,   ŷ = σ(z),   L = -[y ln ŷ + (1 - y) ln(1 - ŷ)]",
                "∂L/∂w_j = ∂L/∂ŷ · ∂ŷ/∂z · ∂z/∂w_j",
                "        = [-(y/ŷ) + (1 - y)/(1 - ŷ)] · ŷ(1 - ŷ) · x_j",
                "        = [-y(1 - ŷ) + (1 - y)ŷ] · x_j = (ŷ - y) · x_j",
                _("check:") + f"   ∂L/∂θ ≈ [L(θ + h) - L(θ - h)] / 2h,   h = {s.step:g}",
            ),
            forward,
            factors,
            params,
            Note(
                _(
                    "The 1/ŷ and 1/(1 - ŷ) of the loss cancel the ŷ(1 - ŷ) of the sigmoid: "
                    "∂L/∂z = ŷ - y = {dz}, the library's sigmoid_cross_entropy gradient "
                    "({library}), with no factor that vanishes when the sigmoid saturates. The "
                    "chain rule agrees with the finite differences to {error}. The softmax case "
                    "is the same result for C classes: ∂L/∂x = p - y (see the gradients topic)."
                ).format(
                    dz=fixed(s.dloss_dz, 6),
                    library=fixed(s.dloss_dz_library, 6),
                    error=f"{s.max_abs_error:.1e}",
                )
            ),
        ],
    )
