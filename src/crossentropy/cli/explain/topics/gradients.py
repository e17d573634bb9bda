"""``explain gradients``: the gradient of softmax cross entropy is p - y.

The softmax Jacobian, the chain rule down to p - y, and the library's gradient against central
finite differences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import crossentropy as ce
from crossentropy import gradients
from crossentropy.cli.errors import CliError
from crossentropy.cli.explain.common import CLASSES, as_f64, as_float, as_floats, class_names
from crossentropy.cli.explain.document import Block, Doc, Formulas, Note, Num, TableBlock, fixed
from crossentropy.cli.explain.inputs import ExplainOptions
from crossentropy.i18n import gettext as _

__all__ = [
    "GradientComponent",
    "GradientSection",
    "compute_gradient",
    "layout",
    "section",
]


@dataclass(frozen=True)
class GradientComponent:
    label: str
    logit: float
    prob: float  # softmax(x)_j
    target: float  # y_j (one-hot)
    p_minus_y: float
    gradient: float  # from crossentropy.gradients.sparse_softmax_cross_entropy
    finite_difference: float
    dloss_dprob: float = 0.0  # dL/dp_j = -y_j / p_j
    chain: float = 0.0  # Σ_i dL/dp_i · ∂p_i/∂x_j


@dataclass(frozen=True)
class GradientSection:
    label: str
    loss: float
    step: float
    components: tuple[GradientComponent, ...]
    max_abs_error: float  # max_j |gradient_j - finite_difference_j|
    label_index: int = 1
    jacobian: tuple[tuple[float, ...], ...] = ()  # [i][j] = ∂p_i/∂x_j, from softmax's p
    jacobian_fd: tuple[tuple[float, ...], ...] = ()  # central differences of softmax
    jacobian_max_abs_error: float = 0.0
    chain_max_abs_error: float = 0.0  # max_j |chain_j - (p_j - y_j)|
    gradient_sum: float = 0.0  # Σ_j ∂L/∂x_j (0: softmax is shift invariant)


def compute_gradient(
    options: ExplainOptions,
    classes: Sequence[str] = CLASSES,
    logits: Sequence[float] = (2.0, 1.0, 0.1),
    label: int = 1,
    step: float = 1e-5,
) -> GradientSection:
    """Softmax Jacobian, chain rule and the analytic gradient vs central finite differences;
    ``classes`` translated."""
    del options  # losses are in nats
    x = as_f64(logits)
    n = x.size
    target = np.zeros_like(x)
    target[label] = 1.0
    probs = np.asarray(ce.softmax(x), dtype=np.float64)
    p = as_floats(probs)
    p_minus_y = as_floats(probs - target)
    loss, grad = gradients.sparse_softmax_cross_entropy(x, label)
    grads = as_floats(grad)

    # ∂p_i/∂x_j: p_i (1 - p_i) on the diagonal, -p_i p_j off it
    jac = [[p[i] * (1.0 - p[i]) if i == j else -p[i] * p[j] for j in range(n)] for i in range(n)]
    jac_fd = np.zeros((n, n))
    fd = []
    for j in range(n):
        e = np.zeros_like(x)
        e[j] = step
        up, down = x + e, x - e
        jac_fd[:, j] = (np.asarray(ce.softmax(up)) - np.asarray(ce.softmax(down))) / (2 * step)
        fd.append(
            (
                as_float(ce.sparse_softmax_cross_entropy(up, label))
                - as_float(ce.sparse_softmax_cross_entropy(down, label))
            )
            / (2 * step)
        )
    with np.errstate(divide="ignore"):  # -inf where p_y underflows to 0: what -1/p_y is
        dl_dp = np.where(target > 0, -target / np.where(target > 0, probs, 1.0), 0.0)
    # The chain rule Σ_i ∂L/∂p_i · ∂p_i/∂x_j, with each factor's p_i cancelled before the
    # product: (-y_i / p_i) · p_i (δ_ij - p_j) = -y_i (δ_ij - p_j). Taken literally, a p_y that
    # underflows (logits 800, 0) would make it -inf · 0 = NaN.
    jac_over_p = np.eye(n) - probs[None, :]  # ∂ log p_i / ∂x_j = J_ij / p_i
    chain = as_floats(-target @ jac_over_p)
    components = tuple(
        GradientComponent(
            _(classes[j]),
            float(x[j]),
            p[j],
            float(target[j]),
            p_minus_y[j],
            grads[j],
            fd[j],
            float(dl_dp[j]),
            chain[j],
        )
        for j in range(n)
    )
    return GradientSection(
        _(classes[label]),
        as_float(loss),
        step,
        components,
        max(abs(g - f) for g, f in zip(grads, fd, strict=True)),
        label,
        tuple(tuple(row) for row in jac),
        tuple(as_floats(row) for row in jac_fd),
        float(np.max(np.abs(np.asarray(jac) - jac_fd))),
        max(abs(c - d) for c, d in zip(chain, p_minus_y, strict=True)),
        math.fsum(grads),
    )


def section(o: ExplainOptions, standalone: bool) -> GradientSection:
    """The section for the options the user gave (``standalone``: not inside ``all``)."""
    del standalone  # read the same way alone and inside all
    logits = (2.0, 1.0, 0.1) if o.logits is None else o.logits
    classes = CLASSES if o.logits is None else class_names(len(logits), True)
    label = 1 if o.label is None else o.label
    if not 0 <= label < len(logits):
        raise CliError(
            f"label {label} is out of range for {len(logits)} logits; expected 0 to "
            f"{len(logits) - 1}",
            "--label",
        )
    return compute_gradient(o, classes, logits, label)


def layout(s: GradientSection) -> Doc:
    """The section laid out: formulas, tables and notes."""
    names = [c.label for c in s.components]
    blocks: list[Block] = [
        Formulas(
            "p = softmax(x),   L(x) = -ln p_y",
            "∂p_i/∂x_j = p_i (1 - p_i)   " + _("if {condition}").format(condition="i = j"),
            "∂p_i/∂x_j = -p_i p_j        " + _("if {condition}").format(condition="i ≠ j"),
            "∂L/∂p_i   = -y_i / p_i",
            "∂L/∂x_j   = Σ_i ∂L/∂p_i · ∂p_i/∂x_j = -(1/p_y)·(δ_yj p_y - p_y p_j) = p_j - y_j",
            _("check:") + f"   ∂/∂x_j ≈ [f(x + h e_j) - f(x - h e_j)] / 2h,   h = {s.step:g}",
        )
    ]
    if s.jacobian:
        jac = TableBlock(
            ("∂p_i/∂x_j", *(f"x_j: {n}" for n in names)),
            title=_("softmax Jacobian {formula}").format(formula="J = diag(p) - p pᵀ"),
        )
        for name, row in zip(names, s.jacobian, strict=True):
            jac.add(f"p_i: {name}", *(Num(v, "f4") for v in row))
        jac_fd = TableBlock(
            (_("finite diff."), *(f"x_j: {n}" for n in names)),
            title=_("{matrix} by central differences").format(matrix="J"),
        )
        for name, row in zip(names, s.jacobian_fd, strict=True):
            jac_fd.add(f"p_i: {name}", *(Num(v, "f4") for v in row))
        blocks += [
            jac,
            jac_fd,
            Note(
                _("Largest |analytic - finite difference| entry: {error:.1e}.").format(
                    error=s.jacobian_max_abs_error
                )
            ),
        ]
    table = TableBlock(
        (
            _("class"),
            "x_j",
            "p_j",
            "y_j",
            "∂L/∂p_j",
            _("chain {sum}").format(sum="Σ_i"),
            "p_j - y_j",
            _("library"),
            _("finite diff."),
            "|" + _("diff.") + "|",
        ),
        title=_("true class: {label}, loss {loss} nats").format(
            label=s.label, loss=f"L = {fixed(s.loss, 4)}"
        ),
    )
    for c in s.components:
        table.add(
            c.label,
            Num(c.logit, "g"),
            Num(c.prob, "f4"),
            Num(c.target, "g"),
            Num(c.dloss_dprob, "f4"),
            Num(c.chain, "f4"),
            Num(c.p_minus_y, "f4"),
            Num(c.gradient, "f4"),
            Num(c.finite_difference, "f4"),
            Num(abs(c.gradient - c.finite_difference), "e1"),
        )
    blocks += [
        table,
        Note(
            _(
                "A gradient-descent step {step} raises the true class's logit (its gradient "
                "{true_gradient} is negative) and lowers every other logit in proportion to the "
                "probability it took; the gradient sums to {total}. The chain rule matches "
                "{p_minus_y} to {chain_error:.1e}, and the library's gradient ({module}) agrees "
                "with the finite difference to {error:.1e}."
            ).format(
                step="x ← x - η(p - y)",
                true_gradient="p_j - 1",
                total=fixed(s.gradient_sum, 4),
                p_minus_y="p - y",
                chain_error=s.chain_max_abs_error,
                module="crossentropy.gradients",
                error=s.max_abs_error,
            )
        ),
    ]
    return Doc(
        "gradients",
        _("The gradient of softmax cross entropy is {formula}").format(formula="p - y"),
        blocks,
    )
