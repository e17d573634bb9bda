"""``crossentropy explain``: worked examples of the theory, step by step, with the numbers.

Each section is two functions:

- ``compute_*`` builds a small frozen dataclass holding every number of the example, each one
  computed by the library's public functions (never typed in by hand);
- ``render_*`` prints that dataclass with rich: the formula first, then the computation.

Keeping the numbers apart from their presentation lets other front ends (plain text, Markdown,
JSON: ``dataclasses.asdict`` works on every section) and other inputs (``--p``, ``--q``,
``--logits``, ``--label``) reuse the same computations. :data:`TOPICS` lists the sections in the
order ``explain`` shows them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

import crossentropy as ce
from crossentropy import gradients

__all__ = [
    "TOPICS",
    "DivergenceSection",
    "EntropySection",
    "ExplainOptions",
    "GradientSection",
    "InformationSection",
    "ModelComparisonSection",
    "MultiLabelSection",
    "Topic",
    "Unit",
    "compute_divergence",
    "compute_entropy",
    "compute_gradient",
    "compute_information",
    "compute_model_comparison",
    "compute_multilabel",
    "explain",
    "parse_base",
    "render_all",
]


# --------------------------------------------------------------------------------------------
# Options and units
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """A unit of information: the name shown and the ``base`` passed to the library."""

    name: str
    base: float | None  # None: natural log

    @property
    def log(self) -> str:
        """How the logarithm of this unit is written in formulas."""
        if self.base is None:
            return "ln"
        return f"log{self.base:g}"


NATS = Unit("nats", None)
BITS = Unit("bits", 2.0)


def unit_for(base: float | None) -> Unit:
    """The unit of information of logarithms to ``base`` (None: natural log)."""
    if base is None:
        return NATS
    if base == 2:
        return BITS
    if base == 10:
        return Unit("hartleys", 10.0)
    return Unit(f"base-{base:g} units", base)


def parse_base(text: str) -> float | None:
    """Parse ``--base``: ``e`` (natural log) or a positive number other than 1.

    >>> parse_base("e") is None, parse_base("2")
    (True, 2.0)
    """
    if text.strip().lower() in {"e", "ln", "nat", "nats"}:
        return None
    try:
        base = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number; use e, 2, 10 or another base > 0") from None
    if not math.isfinite(base) or base <= 0 or base == 1:
        raise ValueError(f"{text!r} is not a valid base; a base must be positive and not 1")
    return base


@dataclass(frozen=True)
class ExplainOptions:
    """What the user chose on the command line.

    ``base`` is the logarithm's base for the information-theory sections (1 to 3); when it is
    not given those sections show both nats and bits. The loss sections (4 to 6) always use the
    natural log, as every training framework does.
    """

    base: float | None = None
    base_given: bool = False

    @property
    def units(self) -> tuple[Unit, ...]:
        if not self.base_given:
            return (NATS, BITS)
        return (unit_for(self.base),)


def _f64(values: Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray[Any, Any]:
    return np.asarray(values, dtype=np.float64)


def _float(value: Any) -> float:
    return float(np.asarray(value))


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))


# --------------------------------------------------------------------------------------------
# 1. Information of an event
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventInformation:
    label: str
    p: float
    information: tuple[float, ...]  # -log p, one value per unit


@dataclass(frozen=True)
class InformationSection:
    units: tuple[Unit, ...]
    events: tuple[EventInformation, ...]
    ratio: float  # information of the rarest event / that of the most likely one


def compute_information(
    options: ExplainOptions,
    events: Sequence[tuple[str, float]] = (
        ("likely event", 0.9),
        ("fair coin lands heads", 0.5),
        ("unlikely event", 0.01),
    ),
) -> InformationSection:
    """Information content -log p of a few events, in each unit."""
    units = options.units
    probs = _f64([p for _, p in events])
    per_unit = [_floats(ce.information(probs, base=u.base)) for u in units]
    rows = tuple(
        EventInformation(label, float(probs[i]), tuple(values[i] for values in per_unit))
        for i, (label, _) in enumerate(events)
    )
    likely = max(rows, key=lambda r: r.p)
    rare = min(rows, key=lambda r: r.p)
    return InformationSection(units, rows, rare.information[0] / likely.information[0])


# --------------------------------------------------------------------------------------------
# 2. Entropy of a distribution, term by term
# --------------------------------------------------------------------------------------------


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


def compute_entropy(
    options: ExplainOptions,
    outcomes: Sequence[str] = ("sun", "clouds", "rain"),
    p: Sequence[float] = (0.5, 0.25, 0.25),
) -> EntropySection:
    """Entropy of ``p``, with each term -p_i log p_i (the entropy of a column of one value)."""
    units = options.units
    pa = _f64(p)
    uniform = np.full(pa.shape, 1.0 / pa.size)
    info = [_floats(ce.information(pa, base=u.base)) for u in units]
    terms = [_floats(ce.entropy(pa[:, None], axis=-1, base=u.base)) for u in units]
    rows = tuple(
        EntropyTerm(
            outcomes[i],
            float(pa[i]),
            tuple(col[i] for col in info),
            tuple(col[i] for col in terms),
        )
        for i in range(pa.size)
    )
    return EntropySection(
        units,
        rows,
        tuple(_float(ce.entropy(pa, base=u.base)) for u in units),
        tuple(_float(ce.entropy(uniform, base=u.base)) for u in units),
    )


# --------------------------------------------------------------------------------------------
# 3. KL divergence, cross entropy and H(p, q) = H(p) + KL(p || q)
# --------------------------------------------------------------------------------------------


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


def compute_divergence(
    options: ExplainOptions,
    labels: Sequence[str] = ("cat", "dog", "pig"),
    p: Sequence[float] = (1.0, 0.0, 0.0),
    q: Sequence[float] = (0.7, 0.2, 0.1),
    soft_p: Sequence[float] | None = (0.8, 0.1, 0.1),
) -> DivergenceSection:
    """Term-by-term KL and cross entropy of ``p`` against ``q``, and the decomposition.

    ``soft_p`` adds a second decomposition with a label that is not one-hot (H(p) > 0).
    """
    units = options.units
    pa, qa = _f64(p), _f64(q)
    first = units[0]
    ce_terms = _floats(ce.cross_entropy(pa[:, None], qa[:, None], axis=-1, base=first.base))
    kl_terms = _floats(ce.kl_divergence(pa[:, None], qa[:, None], axis=-1, base=first.base))
    terms = tuple(
        DivergenceTerm(labels[i], float(pa[i]), float(qa[i]), ce_terms[i], kl_terms[i])
        for i in range(pa.size)
    )
    targets = [pa] if soft_p is None else [pa, _f64(soft_p)]
    decompositions = tuple(
        Decomposition(
            _floats(t),
            u,
            _float(ce.entropy(t, base=u.base)),
            _float(ce.kl_divergence(t, qa, base=u.base)),
            _float(ce.cross_entropy(t, qa, base=u.base)),
        )
        for t in targets
        for u in units
    )
    return DivergenceSection(units, _floats(pa), _floats(qa), terms, decompositions)


# --------------------------------------------------------------------------------------------
# 4. Two models scored by MSE and by cross entropy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleScore:
    true_class: str
    probs: tuple[float, ...]
    p_true: float
    cross_entropy: float  # -sum_c y_c ln q_c = -ln q_true
    mse: float  # sum_c (q_c - y_c)^2


@dataclass(frozen=True)
class ModelScore:
    name: str
    samples: tuple[SampleScore, ...]
    mean_cross_entropy: float
    mean_mse: float

    @property
    def worst(self) -> SampleScore:
        return max(self.samples, key=lambda s: s.cross_entropy)


@dataclass(frozen=True)
class ConfidentMiss:
    probs: tuple[float, ...]
    p_true: float
    cross_entropy: float
    mse: float


@dataclass(frozen=True)
class ModelComparisonSection:
    classes: tuple[str, ...]
    models: tuple[ModelScore, ...]
    miss_class: str
    misses: tuple[ConfidentMiss, ...]  # ever more confident wrong predictions of one sample


_CLASSES = ("cat", "dog", "pig")
_TRUE = ("pig", "dog", "cat")
_MODELS = (
    ("model 1", ((0.3, 0.3, 0.4), (0.3, 0.4, 0.3), (0.1, 0.2, 0.7))),
    ("model 2", ((0.1, 0.2, 0.7), (0.1, 0.7, 0.2), (0.3, 0.4, 0.3))),
)


def compute_model_comparison(
    options: ExplainOptions,
    classes: Sequence[str] = _CLASSES,
    true_classes: Sequence[str] = _TRUE,
    models: Sequence[tuple[str, Sequence[Sequence[float]]]] = _MODELS,
    miss_probs: Sequence[float] = (0.1, 0.01, 0.001),
) -> ModelComparisonSection:
    """Per-sample and mean cross entropy (nats) and squared error summed over the classes.

    ``misses`` scores one sample of the first class whose predicted probability falls through
    ``miss_probs``, the rest going to the last class: a more and more confident mistake.
    """
    del options  # losses are in nats
    labels = np.asarray([list(classes).index(c) for c in true_classes])
    onehot = np.eye(len(classes), dtype=np.float64)[labels]
    scores = []
    for name, predictions in models:
        q = _f64(predictions)
        ce_per_sample = _floats(ce.cross_entropy(onehot, q, axis=-1))
        mse_per_sample = tuple(
            _float(ce.mse(q[i], onehot[i], reduction="sum")) for i in range(len(labels))
        )
        samples = tuple(
            SampleScore(
                true_classes[i],
                _floats(q[i]),
                float(q[i, labels[i]]),
                ce_per_sample[i],
                mse_per_sample[i],
            )
            for i in range(len(labels))
        )
        scores.append(
            ModelScore(
                name,
                samples,
                float(np.mean(ce_per_sample)),
                float(np.mean(mse_per_sample)),
            )
        )
    n = len(classes)
    miss_q = np.zeros((len(miss_probs), n), dtype=np.float64)
    miss_q[:, 0] = miss_probs
    miss_q[:, -1] = 1.0 - miss_q[:, 0]
    miss_y = np.zeros_like(miss_q)
    miss_y[:, 0] = 1.0
    miss_ce = _floats(ce.cross_entropy(miss_y, miss_q, axis=-1))
    misses = tuple(
        ConfidentMiss(
            _floats(miss_q[i]),
            float(miss_q[i, 0]),
            miss_ce[i],
            _float(ce.mse(miss_q[i], miss_y[i], reduction="sum")),
        )
        for i in range(len(miss_probs))
    )
    return ModelComparisonSection(tuple(classes), tuple(scores), classes[0], misses)


# --------------------------------------------------------------------------------------------
# 5. Multi-label (n-hot) sigmoid cross entropy
# --------------------------------------------------------------------------------------------


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
    tags: Sequence[str] = ("outdoor", "dog", "cat", "car"),
    labels: Sequence[float] = (1.0, 1.0, 0.0, 0.0),
    logits: Sequence[float] = (2.0, 0.5, -1.0, -3.0),
) -> MultiLabelSection:
    """Per-class sigmoid cross entropy of one image's tags, summed and averaged."""
    del options  # losses are in nats
    x, y = _f64(logits), _f64(labels)
    probs = _floats(ce.sigmoid(x))
    losses = _floats(ce.sigmoid_cross_entropy(x, y, reduction="none"))
    rows = tuple(
        TagLoss(tags[i], float(y[i]), float(x[i]), probs[i], losses[i]) for i in range(x.size)
    )
    return MultiLabelSection(
        rows,
        _float(ce.sigmoid_cross_entropy(x, y, reduction="sum")),
        _float(ce.sigmoid_cross_entropy(x, y, reduction="mean")),
        float(np.sum(probs)),
    )


# --------------------------------------------------------------------------------------------
# 6. The softmax cross-entropy gradient p - y, checked by finite differences
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradientComponent:
    label: str
    logit: float
    prob: float  # softmax(x)_j
    target: float  # y_j (one-hot)
    p_minus_y: float
    gradient: float  # from crossentropy.gradients.sparse_softmax_cross_entropy
    finite_difference: float


@dataclass(frozen=True)
class GradientSection:
    label: str
    loss: float
    step: float
    components: tuple[GradientComponent, ...]
    max_abs_error: float  # max_j |gradient_j - finite_difference_j|


def compute_gradient(
    options: ExplainOptions,
    classes: Sequence[str] = _CLASSES,
    logits: Sequence[float] = (2.0, 1.0, 0.1),
    label: int = 1,
    step: float = 1e-5,
) -> GradientSection:
    """Analytic gradient of sparse softmax cross entropy vs a central finite difference."""
    del options  # losses are in nats
    x = _f64(logits)
    target = np.zeros_like(x)
    target[label] = 1.0
    probs = ce.softmax(x)
    p_minus_y = _floats(probs - target)
    loss, grad = gradients.sparse_softmax_cross_entropy(x, label)

    def loss_at(z: np.ndarray[Any, Any]) -> float:
        return _float(ce.sparse_softmax_cross_entropy(z, label))

    fd = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = step
        fd.append((loss_at(x + e) - loss_at(x - e)) / (2 * step))
    grads = _floats(grad)
    p = _floats(probs)
    components = tuple(
        GradientComponent(
            classes[j],
            float(x[j]),
            p[j],
            float(target[j]),
            p_minus_y[j],
            grads[j],
            fd[j],
        )
        for j in range(x.size)
    )
    return GradientSection(
        classes[label],
        _float(loss),
        step,
        components,
        max(abs(g - f) for g, f in zip(grads, fd, strict=True)),
    )


# --------------------------------------------------------------------------------------------
# Rendering with rich
# --------------------------------------------------------------------------------------------


def _n(x: float, digits: int = 3) -> str:
    text = f"{x:.{digits}f}"
    # -0.0 (e.g. -(1 * log 1)) and tiny negative rounding errors print as 0, not "-0.000"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _vec(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _table(*columns: str, title: str | None = None) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        title=title,
        title_justify="left",
        title_style="bold",
        show_edge=False,
        pad_edge=False,
    )
    for i, name in enumerate(columns):
        # fold, never truncate: a narrow terminal must not turn 0.6590 into "0.6…"
        table.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    return table


def _row(table: Table, *cells: str, style: str | None = None) -> None:
    # Text(), not markup: labels such as "[0.3, 0.3, 0.4]" must print as they are.
    table.add_row(*(Text(c) for c in cells), style=style)


def _show(console: Console, table: Table) -> None:
    console.print(table)
    console.print()


def _heading(console: Console, number: int, title: str) -> None:
    console.print()
    console.rule(Text(f"{number}. {title}", style="bold"), align="left")


def _formulas(console: Console, *lines: str) -> None:
    for line in lines:
        console.print(Text("    " + line, style="bold cyan"))
    console.print()


def _note(console: Console, text: str) -> None:
    console.print(Text(text, style="italic"))


def render_information(console: Console, s: InformationSection) -> None:
    _heading(console, 1, "Information: how surprising is one event?")
    _formulas(console, "I(x) = -log p(x)", "ln gives nats, log2 gives bits")
    table = _table("event", "p(x)", "1/p(x)", *(f"I(x) in {u.name}" for u in s.units))
    for e in s.events:
        _row(table, e.label, f"{e.p:g}", f"{1 / e.p:.4g}", *(_n(v) for v in e.information))
    _show(console, table)
    likely = max(s.events, key=lambda e: e.p)
    rare = min(s.events, key=lambda e: e.p)
    _note(
        console,
        f"The rarer the event, the more it tells you: p = {rare.p:g} carries {s.ratio:.1f} times "
        f"the information of p = {likely.p:g}. A fair coin flip is 1 bit.",
    )


def render_entropy(console: Console, s: EntropySection) -> None:
    _heading(console, 2, "Entropy: the average information of a distribution")
    _formulas(console, "H(p) = -Σ_i p_i log p_i = Σ_i p_i I(x_i)")
    cols = []
    for u in s.units:
        cols += [f"-{u.log} p_i", f"-p_i {u.log} p_i"]
    table = _table("outcome", "p_i", *cols)
    for t in s.terms:
        cells = []
        for info, term in zip(t.information, t.term, strict=True):
            cells += [_n(info), _n(term)]
        _row(table, t.outcome, f"{t.p:g}", *cells)
    totals = []
    for h in s.entropy:
        totals += ["", _n(h)]
    table.add_section()
    _row(table, "H(p) = sum", "", *totals, style="bold")
    _show(console, table)
    entropy = ", ".join(f"{_n(h)} {u.name}" for u, h in zip(s.units, s.entropy, strict=True))
    maximum = ", ".join(f"{_n(h)} {u.name}" for u, h in zip(s.units, s.max_entropy, strict=True))
    _note(
        console,
        f"H(p) = {entropy}. In bits it counts yes/no questions: ask 'sun?', then if not, "
        f"'clouds?'. The most uncertain {len(s.terms)}-outcome distribution, the uniform one, "
        f"has H = log {len(s.terms)} = {maximum}.",
    )


def render_divergence(console: Console, s: DivergenceSection) -> None:
    _heading(console, 3, "KL divergence and cross entropy: truth p, prediction q")
    _formulas(
        console,
        "H(p, q)  = -Σ_i p_i log q_i             (cross entropy)",
        "KL(p‖q)  =  Σ_i p_i log(p_i / q_i)      (Kullback-Leibler divergence)",
        "H(p, q)  =  H(p) + KL(p‖q)",
    )
    u = s.units[0]
    table = _table(
        "class",
        "p_i",
        "q_i",
        f"-p_i {u.log} q_i",
        f"p_i {u.log}(p_i/q_i)",
        title=f"p = {_vec(s.p)}, q = {_vec(s.q)}, in {u.name}",
    )
    for t in s.terms:
        _row(table, t.label, f"{t.p:g}", f"{t.q:g}", _n(t.cross_entropy), _n(t.kl))
    table.add_section()
    _row(
        table,
        "sum",
        "",
        "",
        _n(sum(t.cross_entropy for t in s.terms)),
        _n(sum(t.kl for t in s.terms)),
        style="bold",
    )
    _show(console, table)
    _note(console, "Terms with p_i = 0 contribute 0 (the convention 0 log 0 = 0).")
    console.print()
    table = _table("p", "unit", "H(p)", "KL(p‖q)", "H(p) + KL(p‖q)", "H(p, q)")
    for d in s.decompositions:
        _row(
            table,
            _vec(d.p),
            d.unit.name,
            _n(d.entropy),
            _n(d.kl),
            _n(d.entropy_plus_kl),
            _n(d.cross_entropy),
        )
    _show(console, table)
    one_hot = s.decompositions[0]
    _note(
        console,
        f"With a one-hot p = {_vec(one_hot.p)}, H(p) = 0, so cross entropy equals KL: "
        f"minimising cross entropy against hard labels is minimising the KL divergence, and "
        f"only the true class's term -log q_true survives. With a soft p, H(p) > 0 is the "
        f"part of H(p, q) no model can remove.",
    )


def render_model_comparison(console: Console, s: ModelComparisonSection) -> None:
    _heading(console, 4, "MSE vs cross entropy: scoring two classifiers")
    _formulas(
        console,
        "cross entropy  CE  = -Σ_c y_c ln q_c = -ln q_true   (y one-hot)",
        "squared error  MSE =  Σ_c (q_c - y_c)²              (sum over the classes)",
    )
    for m in s.models:
        table = _table("true class", *(f"q({c})" for c in s.classes), "q_true", "CE", "MSE")
        table.title = f"{m.name}, per sample"
        for sample in m.samples:
            _row(
                table,
                sample.true_class,
                *(f"{v:g}" for v in sample.probs),
                f"{sample.p_true:g}",
                _n(sample.cross_entropy),
                _n(sample.mse),
            )
        table.add_section()
        blanks = [""] * (len(s.classes) + 1)
        _row(table, "average", *blanks, _n(m.mean_cross_entropy), _n(m.mean_mse), style="bold")
        _show(console, table)
    table = _table("average loss", *(m.name for m in s.models), title="summary (lower is better)")
    _row(table, "cross entropy (nats)", *(_n(m.mean_cross_entropy) for m in s.models))
    _row(table, "MSE", *(_n(m.mean_mse) for m in s.models))
    _show(console, table)
    table = _table(
        *(f"q({c})" for c in s.classes),
        "CE",
        "MSE",
        title=f"one {s.miss_class}, ever more confidently wrong",
    )
    for miss in s.misses:
        _row(table, *(f"{v:g}" for v in miss.probs), _n(miss.cross_entropy), _n(miss.mse))
    _show(console, table)
    best = min(s.models, key=lambda m: m.mean_cross_entropy)
    agree = best is min(s.models, key=lambda m: m.mean_mse)
    others = [m for m in s.models if m is not best]
    dominates = all(
        b.p_true > o.p_true for m in others for b, o in zip(best.samples, m.samples, strict=True)
    )
    why = ": it gives the true class more probability on every sample" if dominates else ""
    first, last = s.misses[0], s.misses[-1]
    ranking = (
        f"Both losses rank {best.name} better{why}."
        if agree
        else f"Cross entropy ranks {best.name} better, MSE does not."
    )
    _note(
        console,
        f"{ranking} But cross entropy punishes a confident mistake far more: as "
        f"q({s.miss_class}) falls from {first.p_true:g} to {last.p_true:g}, -ln q climbs from "
        f"{_n(first.cross_entropy)} to {_n(last.cross_entropy)} nats without bound, while the "
        f"squared error only creeps from {_n(first.mse)} to {_n(last.mse)}, never above 2.",
    )


def render_multilabel(console: Console, s: MultiLabelSection) -> None:
    _heading(console, 5, "Multi-label (n-hot): one sigmoid cross entropy per class")
    _formulas(
        console,
        "σ(x) = 1 / (1 + e^-x)",
        "ℓ_c  = -[ y_c ln σ(x_c) + (1 - y_c) ln(1 - σ(x_c)) ]",
        "L    = Σ_c ℓ_c",
    )
    present = [t.tag for t in s.tags if t.label]
    table = _table(
        "tag",
        "y_c",
        "logit x_c",
        "σ(x_c)",
        "ℓ_c (nats)",
        title=f"an image tagged {{{', '.join(present)}}}",
    )
    for t in s.tags:
        _row(table, t.tag, f"{t.label:g}", f"{t.logit:g}", _n(t.prob), _n(t.loss))
    table.add_section()
    _row(table, "sum", "", "", _n(s.prob_sum), _n(s.total), style="bold")
    _row(table, "mean", "", "", "", _n(s.mean))
    _show(console, table)
    _note(
        console,
        f"Each tag is its own yes/no question: the σ column sums to {_n(s.prob_sum)}, not 1, "
        f"because an image can be outdoor and show a dog at once. A softmax would make the "
        f"tags compete for one unit of probability.",
    )


def render_gradient(console: Console, s: GradientSection) -> None:
    _heading(console, 6, "The gradient of softmax cross entropy is p - y")
    _formulas(
        console,
        "p = softmax(x),   L(x) = -ln p_y",
        "∂L/∂x_j = p_j - y_j",
        f"check:   ∂L/∂x_j ≈ [L(x + h e_j) - L(x - h e_j)] / 2h,   h = {s.step:g}",
    )
    table = _table(
        "class",
        "x_j",
        "p_j",
        "y_j",
        "p_j - y_j",
        "library",
        "finite diff.",
        "|diff.|",
        title=f"true class: {s.label}, loss L = {_n(s.loss, 4)} nats",
    )
    for c in s.components:
        _row(
            table,
            c.label,
            f"{c.logit:g}",
            _n(c.prob, 4),
            f"{c.target:g}",
            _n(c.p_minus_y, 4),
            _n(c.gradient, 4),
            _n(c.finite_difference, 4),
            f"{abs(c.gradient - c.finite_difference):.1e}",
        )
    _show(console, table)
    _note(
        console,
        f"A gradient-descent step x ← x - η(p - y) raises the true class's logit (its "
        f"gradient p_j - 1 is negative) and lowers every other logit in proportion to the "
        f"probability it took. The library's gradient (crossentropy.gradients) agrees with "
        f"the finite difference to {s.max_abs_error:.1e}.",
    )


# --------------------------------------------------------------------------------------------
# Topics and the command
# --------------------------------------------------------------------------------------------

S = TypeVar("S")


@dataclass(frozen=True)
class Topic(Generic[S]):
    """One section of ``explain``: its name, how to compute it and how to render it."""

    name: str
    compute: Callable[[ExplainOptions], S]
    render: Callable[[Console, S], None]

    def show(self, console: Console, options: ExplainOptions) -> None:
        self.render(console, self.compute(options))


TOPICS: tuple[Topic[Any], ...] = (
    Topic("information", compute_information, render_information),
    Topic("entropy", compute_entropy, render_entropy),
    Topic("divergence", compute_divergence, render_divergence),
    Topic("mse-vs-ce", compute_model_comparison, render_model_comparison),
    Topic("multilabel", compute_multilabel, render_multilabel),
    Topic("gradient", compute_gradient, render_gradient),
)


def render_all(console: Console, options: ExplainOptions) -> None:
    """Print every section of :data:`TOPICS` in order."""
    console.print(
        Text("Cross entropy, step by step: every number below is computed by the library.")
    )
    for topic in TOPICS:
        topic.show(console, options)
    console.print()


def _check_base(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_base(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def explain(
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            "-b",
            metavar="BASE",
            callback=_check_base,
            help="Logarithm base for sections 1-3: e (nats), 2 (bits), 10, ... "
            "(default: show both nats and bits).",
        ),
    ] = None,
) -> None:
    """Walk through worked examples of cross entropy, step by step, with the numbers."""
    options = ExplainOptions(
        base=None if base is None else parse_base(base), base_given=base is not None
    )
    render_all(Console(highlight=False), options)
