"""``explain pitfalls``: what users of the frameworks get wrong, each shown with numbers.

(a) softmax applied before a loss that applies its own (a double softmax); (b) probabilities
passed to a loss that expects logits; (c) cross entropy read as if it were bounded by 1;
(d) binary cross entropy is softmax cross entropy on the two logits (z, 0); (e) clipping the
probabilities at eps caps the loss and zeroes its gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import crossentropy as ce
from crossentropy import gradients
from crossentropy.cli.explain.common import CLASSES, as_f64, as_float, as_floats
from crossentropy.cli.explain.document import (
    Block,
    Doc,
    Formulas,
    Note,
    Num,
    TableBlock,
    aligned,
    fixed,
    vector,
)
from crossentropy.cli.explain.inputs import ExplainOptions
from crossentropy.i18n import gettext as _

__all__ = [
    "Clipping",
    "DoubleSoftmax",
    "DoubleSoftmaxFloor",
    "LogitsMisuse",
    "PitfallsSection",
    "TwoLogits",
    "Unbounded",
    "compute_pitfalls",
    "layout",
    "section",
]


@dataclass(frozen=True)
class DoubleSoftmax:
    logits: tuple[float, ...]  # x
    label: int
    loss: float  # sparse_softmax_cross_entropy(x, y): the loss as meant
    grad: tuple[float, ...]  # its gradient p - y
    double_loss: float  # sparse_softmax_cross_entropy(softmax(x), y)
    double_grad: tuple[float, ...]  # Jᵀ (softmax(p) - y), J = diag(p) - p pᵀ the softmax Jacobian
    double_grad_fd: tuple[float, ...]  # central differences of the double loss in x


@dataclass(frozen=True)
class DoubleSoftmaxFloor:
    classes: int  # C
    floor: float  # the double loss at p = one-hot: ln(e + C - 1) - 1
    uniform: float  # the loss of a uniform guess, ln C (the same both ways)


@dataclass(frozen=True)
class LogitsMisuse:
    prob: float  # a probability p, passed where a logit is expected
    label: float
    loss: float  # binary_cross_entropy(p, y): the loss meant
    with_logits: float  # sigmoid_cross_entropy(p, y): what the loss computes instead
    read_as: float  # σ(p): the probability the loss takes it for
    with_logits_grad: float  # d/dp of sigmoid_cross_entropy(p, y) = σ(p) - y


@dataclass(frozen=True)
class Unbounded:
    q: float  # the probability of the true class
    nats: float  # cross_entropy(one-hot, (q, 1 - q))
    bits: float


@dataclass(frozen=True)
class TwoLogits:
    z: float
    label: float  # y ∈ {0, 1}; class 0 of the softmax is y = 1
    binary: float  # sigmoid_cross_entropy(z, y)
    softmax: float  # sparse_softmax_cross_entropy((z, 0), 0 if y = 1 else 1)
    binary_grad: float  # σ(z) - y
    softmax_grad: float  # ∂/∂z of the softmax loss: p_0 - [y = 1]


@dataclass(frozen=True)
class Clipping:
    prob: float  # p, with label 1
    clipped: float  # binary_cross_entropy(p, 1, eps=eps)
    true: float  # binary_cross_entropy(p, 1, eps=0): -ln p
    clipped_grad: float  # 0 where p < eps
    true_grad: float  # -1/p


@dataclass(frozen=True)
class PitfallsSection:
    double_softmax: tuple[DoubleSoftmax, ...]
    double_softmax_max_abs_error: float  # library chain rule vs finite differences
    floors: tuple[DoubleSoftmaxFloor, ...]
    logits_misuse: tuple[LogitsMisuse, ...]
    with_logits_floor: tuple[float, float]  # its least value over p ∈ [0, 1], for y = 1 and y = 0
    unbounded: tuple[Unbounded, ...]
    two_logits: tuple[TwoLogits, ...]
    two_logits_max_abs_difference: float
    eps: float
    cap: float  # -ln eps
    clipping: tuple[Clipping, ...]


_DOUBLE = (((2.0, 1.0, 0.1), 0), ((-2.0, 4.0, 0.0), 0), ((5.0, 0.0, 0.0), 0))
_FLOOR_CLASSES = (2, 3, 10, 1000)
_MISUSE = ((0.9, 1.0), (0.2, 0.0), (1.0, 1.0), (0.0, 0.0))
_UNBOUNDED = (0.5, 0.1, 0.01, 0.001)
_TWO_LOGITS = ((-2.0, 1.0), (0.0, 1.0), (1.5, 0.0), (3.0, 1.0))
_CLIPPED = (1e-3, 1e-9, 0.0)


def _double_loss(x: np.ndarray, label: int) -> float:
    """The double softmax: the softmax's probabilities fed to a loss that takes logits."""
    return as_float(ce.sparse_softmax_cross_entropy(ce.softmax(x), label))


def _double_softmax(logits: Sequence[float], label: int, step: float) -> DoubleSoftmax:
    x = as_f64(logits)
    p = np.asarray(ce.softmax(x), dtype=np.float64)
    loss, grad = gradients.sparse_softmax_cross_entropy(x, label)
    double_loss, grad_p = gradients.sparse_softmax_cross_entropy(p, label)
    # the chain rule through the first softmax: ∂L/∂x = Jᵀ ∂L/∂p, J = diag(p) - p pᵀ
    jacobian = np.diag(p) - np.outer(p, p)
    double_grad = jacobian.T @ np.asarray(grad_p, dtype=np.float64)
    fd = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = step
        fd.append((_double_loss(x + e, label) - _double_loss(x - e, label)) / (2 * step))
    return DoubleSoftmax(
        as_floats(x),
        label,
        as_float(loss),
        as_floats(grad),
        as_float(double_loss),
        as_floats(double_grad),
        tuple(fd),
    )


def compute_pitfalls(
    options: ExplainOptions, eps: float = 1e-7, step: float = 1e-6
) -> PitfallsSection:
    """Every pitfall's numbers, from the library."""
    del options  # losses are in nats
    double = tuple(_double_softmax(x, y, step) for x, y in _DOUBLE)
    floors = tuple(
        DoubleSoftmaxFloor(
            c,
            as_float(ce.sparse_softmax_cross_entropy(np.eye(c)[0], 0)),
            as_float(ce.sparse_softmax_cross_entropy(np.zeros(c), 0)),
        )
        for c in _FLOOR_CLASSES
    )

    p, y = (as_f64(v) for v in zip(*_MISUSE, strict=True))
    misuse_grad = gradients.sigmoid_cross_entropy(p, y, reduction="none")[1]
    misuse = tuple(
        LogitsMisuse(float(pi), float(yi), bce, wl, s, g)
        for pi, yi, bce, wl, s, g in zip(
            p,
            y,
            as_floats(ce.binary_cross_entropy(p, y, reduction="none")),
            as_floats(ce.sigmoid_cross_entropy(p, y, reduction="none")),
            as_floats(ce.sigmoid(p)),
            as_floats(misuse_grad),
            strict=True,
        )
    )
    # its derivative σ(p) - y is < 0 for y = 1 (least value at p = 1) and > 0 for y = 0
    # (least value at p = 0)
    floor = (
        as_float(ce.sigmoid_cross_entropy(np.float64(1.0), np.float64(1.0))),
        as_float(ce.sigmoid_cross_entropy(np.float64(0.0), np.float64(0.0))),
    )

    q = as_f64(_UNBOUNDED)
    pairs = np.stack([q, 1.0 - q], axis=-1)
    onehot = np.zeros_like(pairs)
    onehot[:, 0] = 1.0
    nats = as_floats(ce.cross_entropy(onehot, pairs, axis=-1))
    bits = as_floats(ce.cross_entropy(onehot, pairs, axis=-1, base=2))
    unbounded = tuple(Unbounded(float(q[i]), nats[i], bits[i]) for i in range(q.size))

    two = []
    for z, label in _TWO_LOGITS:
        b_loss, b_grad = gradients.sigmoid_cross_entropy(
            np.float64(z), np.float64(label), reduction="sum"
        )
        index = 0 if label == 1.0 else 1
        s_loss, s_grad = gradients.sparse_softmax_cross_entropy(as_f64((z, 0.0)), index)
        two.append(
            TwoLogits(
                z,
                label,
                as_float(b_loss),
                as_float(s_loss),
                as_float(b_grad),
                float(np.asarray(s_grad)[0]),
            )
        )
    difference = max(
        max(abs(t.binary - t.softmax), abs(t.binary_grad - t.softmax_grad)) for t in two
    )

    probs = as_f64(_CLIPPED)
    ones = np.ones_like(probs)
    clipped, clipped_grad = gradients.binary_cross_entropy(probs, ones, eps=eps, reduction="none")
    true, true_grad = gradients.binary_cross_entropy(probs, ones, eps=0.0, reduction="none")
    clipping = tuple(
        Clipping(float(probs[i]), c, t, cg, tg)
        for i, (c, t, cg, tg) in enumerate(
            zip(
                as_floats(clipped),
                as_floats(true),
                as_floats(clipped_grad),
                as_floats(true_grad),
                strict=True,
            )
        )
    )
    return PitfallsSection(
        double,
        max(
            abs(g - f) for d in double for g, f in zip(d.double_grad, d.double_grad_fd, strict=True)
        ),
        floors,
        misuse,
        floor,
        unbounded,
        tuple(two),
        difference,
        eps,
        as_float(ce.information(np.float64(eps))),
        clipping,
    )


def section(o: ExplainOptions, standalone: bool) -> PitfallsSection:
    """The section of the topic's own examples (it reads no options)."""
    del standalone
    return compute_pitfalls(o)


def _double_blocks(s: PitfallsSection) -> list[Block]:
    table = TableBlock(
        (
            _("logits x"),
            _("true class"),
            "CE(x)",
            "∂CE/∂x_y",
            "CE(softmax(x))",
            "∂/∂x_y",
            _("finite diff."),
        ),
        title=_("(a) softmax before a loss that applies its own: a double softmax"),
    )
    for d in s.double_softmax:
        y = d.label
        table.add(
            vector(d.logits),
            _(CLASSES[y]) if len(d.logits) == len(CLASSES) else str(y),
            Num(d.loss, "f4"),
            Num(d.grad[y], "f4"),
            Num(d.double_loss, "f4"),
            Num(d.double_grad[y], "f4"),
            Num(d.double_grad_fd[y], "f4"),
        )
    floors = TableBlock(
        (_("classes C"), _("floor ln(e + C - 1) - 1"), _("uniform guess ln C")),
        title=_("the least loss a double softmax can reach"),
    )
    for f in s.floors:
        floors.add(str(f.classes), Num(f.floor, "f4"), Num(f.uniform, "f4"))
    mistake = s.double_softmax[1]
    sure = s.double_softmax[-1]
    three = next(f for f in s.floors if f.classes == len(CLASSES))
    big = s.floors[-1]
    right, wrong, floor_ = aligned(_("right:"), _("wrong:"), _("floor:"))
    return [
        Formulas(
            right + "  L = CE(x)          = -ln softmax(x)_y",
            wrong + "  L = CE(softmax(x)) = -ln softmax(softmax(x))_y",
            floor_ + "  p = one-hot  ⇒  L = -ln(e / (e + C - 1)) = ln(e + C - 1) - 1",
        ),
        table,
        floors,
        Note(
            _(
                "A loss such as PyTorch's CrossEntropyLoss applies its own softmax, so "
                "probabilities passed to it are squashed twice. Probabilities lie in [0, 1], so "
                "as logits they differ by at most 1: however sure the model is, the loss cannot "
                "go below {floor} for {classes} classes ({big} for {big_classes}), and where the "
                "first softmax saturates its Jacobian is 0. The model sure of the right class "
                "(x = {sure}) still scores {sure_double} instead of {sure_loss}; for the "
                "confident mistake (x = {mistake}) the true class's gradient is {double_grad} "
                "instead of {grad}: it learns slowly, then not at all. Pass the logits (the "
                "chain rule agrees with finite differences to {error})."
            ).format(
                floor=fixed(three.floor, 4),
                classes=three.classes,
                big=fixed(big.floor, 4),
                big_classes=big.classes,
                sure=vector(sure.logits),
                sure_double=fixed(sure.double_loss, 4),
                sure_loss=fixed(sure.loss, 4),
                mistake=vector(mistake.logits),
                double_grad=fixed(mistake.double_grad[mistake.label], 4),
                grad=fixed(mistake.grad[mistake.label], 4),
                error=f"{s.double_softmax_max_abs_error:.1e}",
            )
        ),
    ]


def _misuse_blocks(s: PitfallsSection) -> list[Block]:
    table = TableBlock(
        ("p", "y", "BCE(p)", _("with logits"), _("read as σ(p)"), _("its gradient")),
        title=_("(b) probabilities passed to a loss that expects logits"),
    )
    for m in s.logits_misuse:
        table.add(
            Num(m.prob, "g"),
            Num(m.label, "g"),
            Num(m.loss, "f4"),
            Num(m.with_logits, "f4"),
            Num(m.read_as, "f4"),
            Num(m.with_logits_grad, "f4"),
        )
    perfect = next(m for m in s.logits_misuse if m.prob == 1.0 and m.label == 1.0)
    right, wrong = aligned(_("right:"), _("wrong:"))
    return [
        Formulas(
            right + "  binary_cross_entropy(p, y)  = -[y ln p + (1 - y) ln(1 - p)]",
            wrong + "  sigmoid_cross_entropy(p, y) = -[y ln σ(p) + (1 - y) ln(1 - σ(p))]",
        ),
        table,
        Note(
            _(
                "A *_with_logits loss (BCEWithLogitsLoss, sigmoid_cross_entropy_with_logits, "
                "the library's sigmoid_cross_entropy) applies the sigmoid itself. Given a "
                "probability it squashes it again: a perfect p = 1 for a positive is read as "
                "σ(1) = {read} and scores {loss} instead of 0, with a gradient of {grad} that "
                "keeps pushing. On probabilities it never goes below {floor1} for y = 1 or "
                "{floor0} for y = 0. Logits go to *_with_logits, probabilities to "
                "binary_cross_entropy."
            ).format(
                read=fixed(perfect.read_as, 4),
                loss=fixed(perfect.with_logits, 4),
                grad=fixed(perfect.with_logits_grad, 4),
                floor1=fixed(s.with_logits_floor[0], 4),
                floor0=fixed(s.with_logits_floor[1], 4),
            )
        ),
    ]


def _unbounded_blocks(s: PitfallsSection) -> list[Block]:
    table = TableBlock(
        ("q_y", _("CE (nats)"), _("CE (bits)")),
        title=_("(c) cross entropy is not bounded by 1"),
    )
    for u in s.unbounded:
        table.add(Num(u.q, "g"), Num(u.nats, "f4"), Num(u.bits, "f4"))
    worst = s.unbounded[-1]
    hundredth = next((u for u in s.unbounded if u.q == 0.01), worst)
    return [
        Formulas("CE = -ln q_y ∈ [0, ∞)"),
        table,
        Note(
            _(
                "Cross entropy is not a probability or an accuracy: it is -ln q_y, 0 only for "
                "a certain right answer, and it grows without bound as q_y falls: {nats} nats "
                "when the true class gets q_y = {q}, {worst} at q_y = {worst_q}. A uniform guess "
                "over C classes scores ln C, above 1 from C = 3 on."
            ).format(
                nats=fixed(hundredth.nats, 4),
                q=f"{hundredth.q:g}",
                worst=fixed(worst.nats, 4),
                worst_q=f"{worst.q:g}",
            )
        ),
    ]


def _two_logits_blocks(s: PitfallsSection) -> list[Block]:
    table = TableBlock(
        ("z", "y", "BCE(σ(z), y)", "CE(softmax(z, 0))", "σ(z) - y", "∂CE/∂z"),
        title=_("(d) binary cross entropy is softmax cross entropy on the logits (z, 0)"),
    )
    for t in s.two_logits:
        table.add(
            Num(t.z, "g"),
            Num(t.label, "g"),
            Num(t.binary, "f6"),
            Num(t.softmax, "f6"),
            Num(t.binary_grad, "f6"),
            Num(t.softmax_grad, "f6"),
        )
    return [
        Formulas("softmax(z, 0)_0 = e^z / (e^z + e^0) = 1 / (1 + e^-z) = σ(z)"),
        table,
        Note(
            _(
                "Two classes need one logit: a sigmoid output with binary cross entropy is a "
                "two-class softmax whose second logit is pinned at 0. The losses and their "
                "gradients agree to {difference}, so the choice between them is one of "
                "convenience, not of results."
            ).format(difference=f"{s.two_logits_max_abs_difference:.1e}")
        ),
    ]


def _clipping_blocks(s: PitfallsSection) -> list[Block]:
    table = TableBlock(
        (
            _("p (y = 1)"),
            _("clipped loss"),
            _("true loss -ln p"),
            _("clipped gradient"),
            _("true gradient -1/p"),
        ),
        title=_("(e) clip(p, eps, 1 - eps) with eps = {eps}").format(eps=f"{s.eps:g}"),
    )
    for c in s.clipping:
        table.add(
            Num(c.prob, "g"),
            Num(c.clipped, "f4"),
            Num(c.true, "f4"),
            Num(c.clipped_grad, "g4"),
            Num(c.true_grad, "g4"),
        )
    below = next(c for c in s.clipping if 0 < c.prob < s.eps)
    return [
        Formulas("L = -ln clip(p, eps, 1 - eps) ≤ -ln eps"),
        table,
        Note(
            _(
                "Clipping keeps the loss finite but caps it at -ln eps = {cap} nats: p = {p} "
                "scores {clipped} instead of {true}, and below eps the clipped loss is flat, so "
                "its gradient is {clipped_grad} instead of {true_grad}. The predictions that are "
                "most wrong get no push at all. From logits, sigmoid_cross_entropy needs no "
                "clipping."
            ).format(
                cap=fixed(s.cap, 3),
                p=f"{below.prob:g}",
                clipped=fixed(below.clipped, 3),
                true=fixed(below.true, 3),
                clipped_grad=f"{below.clipped_grad:g}",
                true_grad=f"{below.true_grad:g}",
            )
        ),
    ]


def layout(s: PitfallsSection) -> Doc:
    """The section laid out: formulas, tables and notes, one group per pitfall."""
    return Doc(
        "pitfalls",
        _("Pitfalls: what goes wrong with cross entropy in practice"),
        [
            *_double_blocks(s),
            *_misuse_blocks(s),
            *_unbounded_blocks(s),
            *_two_logits_blocks(s),
            *_clipping_blocks(s),
        ],
    )
