"""``crossentropy explain``: worked examples of the theory, step by step, with the numbers.

Each topic is two functions:

- ``compute_*`` builds a small frozen dataclass holding every number of the example, each one
  computed by the library's public functions (never typed in by hand);
- ``doc_*`` lays that dataclass out as a :class:`Doc`: the formulas first, then tables of the
  computation and a note. Table cells keep their numbers as floats (:class:`Num`).

A :class:`Doc` is then written as rich tables (``--format text``), as Markdown tables
(``--format markdown``) or as JSON (``--format json``: the formulas, every table with its raw
numbers, the notes, and the section's dataclass under ``"data"``). :data:`TOPICS` lists the
topics in the order ``explain all`` shows them.

User numbers (``--p``, ``--q``, ``--logits``, ``--label``, ``--probs``, ``--labels``,
``--base``) are parsed and checked before anything is printed: a bad value is one line on
stderr naming the option, exit status 2. The examples are worked by hand, entry by entry: a
list holds at most :data:`MAX_VALUES` numbers (``--probs`` at most that many rows), and a
logit is at most :data:`MAX_LOGIT` in magnitude, so that the finite-difference checks keep
their digits.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

import crossentropy as ce
from crossentropy import gradients

__all__ = [
    "FORMATS",
    "MAX_LOGIT",
    "MAX_VALUES",
    "TOPICS",
    "TOPIC_NAMES",
    "ConfidentMiss",
    "CrossEntropySection",
    "DivergenceSection",
    "Doc",
    "EntropySection",
    "ExplainOptions",
    "GradientSection",
    "InformationSection",
    "InputError",
    "KLSection",
    "ModelComparisonSection",
    "MultiLabelSection",
    "Num",
    "SoftmaxSection",
    "Topic",
    "Unit",
    "compute_cross_entropy",
    "compute_divergence",
    "compute_entropy",
    "compute_gradient",
    "compute_information",
    "compute_kl",
    "compute_model_comparison",
    "compute_multilabel",
    "compute_softmax",
    "explain",
    "parse_base",
    "parse_logits",
    "parse_matrix",
    "parse_vector",
    "render_all",
    "to_json",
    "to_markdown",
]


# --------------------------------------------------------------------------------------------
# Options, units and user input
# --------------------------------------------------------------------------------------------


class InputError(ValueError):
    """A bad value given on the command line; ``option`` names the option (``--p``)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


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


MAX_VALUES = 100
"""The most numbers one list option (``--p``, ``--logits``, ...) or ``--probs`` (rows) takes."""

MAX_LOGIT = 1e6
"""The largest magnitude of a logit: beyond it a step of 1e-5 is lost in the rounding of x."""


def parse_vector(text: str, option: str) -> tuple[float, ...]:
    """Parse comma-separated finite numbers such as ``0.7,0.2,0.1``.

    >>> parse_vector("2, 1,0.1", "--logits")
    (2.0, 1.0, 0.1)
    """
    count = text.count(",") + 1  # counted before splitting: a huge list costs nothing
    if count > MAX_VALUES:
        raise InputError(option, f"{count} numbers; a worked example takes at most {MAX_VALUES}")
    tokens = [t.strip() for t in text.split(",")]
    if not text.strip() or any(t == "" for t in tokens):
        raise InputError(
            option, f"{text!r} is not a list of numbers; expected e.g. 0.7,0.2,0.1 (no blanks)"
        )
    values = []
    for t in tokens:
        try:
            v = float(t)
        except ValueError:
            raise InputError(
                option, f"{t!r} is not a number; expected comma-separated numbers, e.g. 0.7,0.2,0.1"
            ) from None
        if math.isnan(v):
            raise InputError(option, "NaN is not allowed; give finite numbers")
        if not math.isfinite(v):
            raise InputError(option, f"{t!r} is not finite; give finite numbers")
        values.append(v)
    return tuple(values)


def parse_logits(text: str, option: str) -> tuple[float, ...]:
    """Parse logits: :func:`parse_vector`, each at most :data:`MAX_LOGIT` in magnitude."""
    values = parse_vector(text, option)
    for i, v in enumerate(values):
        if abs(v) > MAX_LOGIT:
            raise InputError(
                option, f"logit {i} is {v:g}; expected logits in [-{MAX_LOGIT:g}, {MAX_LOGIT:g}]"
            )
    return values


def parse_matrix(text: str, option: str) -> tuple[tuple[float, ...], ...]:
    """Parse rows separated by ``;``, each comma-separated: ``0.7,0.3;0.2,0.8``."""
    count = text.count(";") + 1
    if count > MAX_VALUES:
        raise InputError(option, f"{count} rows; a worked example takes at most {MAX_VALUES}")
    rows = tuple(parse_vector(row, option) for row in text.split(";"))
    if len({len(r) for r in rows}) != 1:
        raise InputError(
            option,
            f"rows have different lengths {[len(r) for r in rows]}; each needs one per class",
        )
    return rows


def _check_distribution(values: Sequence[float], option: str, what: str = "") -> None:
    where = f"{what} is " if what else ""
    for i, v in enumerate(values):
        if v < 0:
            raise InputError(
                option,
                f"{where}not a probability distribution: entry {i} is negative ({v:g})",
            )
        if v > 1:
            raise InputError(
                option, f"{where}not a probability distribution: entry {i} is {v:g} > 1"
            )
    total = math.fsum(values)
    if abs(total - 1.0) > 1e-6:
        raise InputError(
            option, f"{where}not a probability distribution: it sums to {total:.6g}, not 1"
        )


def _check_unit_interval(values: Sequence[float], option: str, what: str) -> None:
    for i, v in enumerate(values):
        if not 0 <= v <= 1:
            raise InputError(option, f"{what} must be in [0, 1]; entry {i} is {v:g}")


@dataclass(frozen=True)
class ExplainOptions:
    """What the user chose on the command line.

    ``base`` is the logarithm's base for the information-theory topics; when it is not given
    those topics show both nats and bits. The loss topics always use the natural log, as
    every training framework does. The number options are None when not given (the topic's
    own example is used).
    """

    base: float | None = None
    base_given: bool = False
    p: tuple[float, ...] | None = None
    q: tuple[float, ...] | None = None
    logits: tuple[float, ...] | None = None
    label: int | None = None
    probs: tuple[tuple[float, ...], ...] | None = None
    labels: tuple[float, ...] | None = None

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


def _names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(n))


# --------------------------------------------------------------------------------------------
# information: of an event
# --------------------------------------------------------------------------------------------


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


_EVENTS = (("likely event", 0.9), ("fair coin lands heads", 0.5), ("unlikely event", 0.01))


def compute_information(
    options: ExplainOptions, events: Sequence[tuple[str, float]] = _EVENTS
) -> InformationSection:
    """Information content -log p of a few events, in each unit."""
    units = options.units
    probs = _f64([p for _, p in events])
    per_unit = [_floats(ce.information(probs, base=u.base)) for u in units]
    with np.errstate(divide="ignore"):
        inverse = _floats(np.float64(1.0) / probs)
    rows = tuple(
        EventInformation(label, float(probs[i]), inverse[i], tuple(v[i] for v in per_unit))
        for i, (label, _) in enumerate(events)
    )
    likely = max(rows, key=lambda r: r.p)
    rare = min(rows, key=lambda r: r.p)
    ratio = rare.information[0] / likely.information[0] if likely.information[0] > 0 else None
    return InformationSection(units, rows, ratio)


def _information_for(o: ExplainOptions) -> InformationSection:
    if o.p is None:
        return compute_information(o)
    _check_unit_interval(o.p, "--p", "event probabilities")
    return compute_information(o, [(f"event {i}", v) for i, v in enumerate(o.p)])


def doc_information(s: InformationSection) -> Doc:
    table = TableBlock(("event", "p(x)", "1/p(x)", *(f"I(x) in {u.name}" for u in s.units)))
    for e in s.events:
        table.add(e.label, Num(e.p, "g"), Num(e.inverse, "g4"), *(Num(v) for v in e.information))
    likely = max(s.events, key=lambda e: e.p)
    rare = min(s.events, key=lambda e: e.p)
    ratio = (
        f"p = {rare.p:g} carries {s.ratio:.1f} times the information of p = {likely.p:g}. "
        if s.ratio is not None
        else ""
    )
    return Doc(
        "information",
        "Information: how surprising is one event?",
        [
            Formulas("I(x) = -log p(x)", "ln gives nats, log2 gives bits"),
            table,
            Note(f"The rarer the event, the more it tells you: {ratio}A fair coin flip is 1 bit."),
        ],
    )


# --------------------------------------------------------------------------------------------
# entropy: of a distribution, term by term
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


_WEATHER = ("sun", "clouds", "rain")


def compute_entropy(
    options: ExplainOptions,
    outcomes: Sequence[str] = _WEATHER,
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


def _entropy_for(o: ExplainOptions) -> EntropySection:
    if o.p is None:
        return compute_entropy(o)
    _check_distribution(o.p, "--p")
    return compute_entropy(o, _names("x", len(o.p)), o.p)


def doc_entropy(s: EntropySection) -> Doc:
    cols: list[str] = []
    for u in s.units:
        cols += [f"-{u.log} p_i", f"-p_i {u.log} p_i"]
    table = TableBlock(("outcome", "p_i", *cols))
    for t in s.terms:
        cells: list[Cell] = []
        for info, term in zip(t.information, t.term, strict=True):
            cells += [Num(info), Num(term)]
        table.add(t.outcome, Num(t.p, "g"), *cells)
    totals: list[Cell] = []
    for h in s.entropy:
        totals += [None, Num(h)]
    table.add("H(p) = sum", None, *totals, bold=True, section=True)
    entropy = ", ".join(f"{_n(h)} {u.name}" for u, h in zip(s.units, s.entropy, strict=True))
    maximum = ", ".join(f"{_n(h)} {u.name}" for u, h in zip(s.units, s.max_entropy, strict=True))
    n = len(s.terms)
    questions = (
        "In bits it counts yes/no questions: ask 'sun?', then if not, 'clouds?'. "
        if tuple(t.outcome for t in s.terms) == _WEATHER
        else "In bits it is the average number of yes/no questions an optimal code needs. "
    )
    return Doc(
        "entropy",
        "Entropy: the average information of a distribution",
        [
            Formulas("H(p) = -Σ_i p_i log p_i = Σ_i p_i I(x_i)"),
            table,
            Note(
                f"H(p) = {entropy}. {questions}The most uncertain {n}-outcome distribution, the "
                f"uniform one, has H = log {n} = {maximum}."
            ),
        ],
    )


# --------------------------------------------------------------------------------------------
# kl and cross-entropy: truth p, prediction q
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


CrossEntropySection = DivergenceSection

_P, _Q, _SOFT_P = (1.0, 0.0, 0.0), (0.7, 0.2, 0.1), (0.8, 0.1, 0.1)


def compute_divergence(
    options: ExplainOptions,
    labels: Sequence[str] = ("cat", "dog", "pig"),
    p: Sequence[float] = _P,
    q: Sequence[float] = _Q,
    soft_p: Sequence[float] | None = _SOFT_P,
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


compute_cross_entropy = compute_divergence


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
    labels: Sequence[str] = ("cat", "dog", "pig"),
    p: Sequence[float] = _SOFT_P,
    q: Sequence[float] = _Q,
) -> KLSection:
    """KL(p || q) term by term, in each unit, and the reverse KL(q || p)."""
    units = options.units
    pa, qa = _f64(p), _f64(q)
    per_unit = [_floats(ce.kl_divergence(pa[:, None], qa[:, None], base=u.base)) for u in units]
    terms = tuple(
        KLTerm(labels[i], float(pa[i]), float(qa[i]), tuple(col[i] for col in per_unit))
        for i in range(pa.size)
    )
    return KLSection(
        units,
        _floats(pa),
        _floats(qa),
        terms,
        tuple(_float(ce.kl_divergence(pa, qa, base=u.base)) for u in units),
        tuple(_float(ce.kl_divergence(qa, pa, base=u.base)) for u in units),
    )


def _pq(o: ExplainOptions, default_p: Sequence[float]) -> tuple[Sequence[float], Sequence[float]]:
    p = default_p if o.p is None else o.p
    q = _Q if o.q is None else o.q
    if o.p is not None:
        _check_distribution(o.p, "--p")
    if o.q is not None:
        _check_distribution(o.q, "--q")
    if len(p) != len(q):
        which = "--q" if o.q is not None else "--p"
        p_says = f"--p has {len(p)}" + ("" if o.p is not None else " (the default)")
        q_says = f"--q has {len(q)}" + ("" if o.q is not None else " (the default)")
        raise InputError(which, f"p and q must have the same length: {p_says}, {q_says}")
    return p, q


def _class_names(n: int, user: bool) -> tuple[str, ...]:
    return _names("class ", n) if user else ("cat", "dog", "pig")


def _kl_for(o: ExplainOptions) -> KLSection:
    p, q = _pq(o, _SOFT_P)
    return compute_kl(o, _class_names(len(p), o.p is not None or o.q is not None), p, q)


def _cross_entropy_for(o: ExplainOptions) -> DivergenceSection:
    p, q = _pq(o, _P)
    user = o.p is not None or o.q is not None
    return compute_divergence(
        o, _class_names(len(p), user), p, q, None if o.p is not None else _SOFT_P
    )


def doc_kl(s: KLSection) -> Doc:
    cols = [f"p_i {u.log}(p_i/q_i)" for u in s.units]
    table = TableBlock(("class", "p_i", "q_i", *cols), title=f"p = {_vec(s.p)}, q = {_vec(s.q)}")
    for t in s.terms:
        table.add(t.label, Num(t.p, "g"), Num(t.q, "g"), *(Num(v) for v in t.kl))
    table.add("KL(p‖q) = sum", None, None, *(Num(v) for v in s.kl), bold=True, section=True)
    summary = TableBlock(("divergence", *(u.name for u in s.units)), title="not symmetric")
    summary.add("KL(p‖q)", *(Num(v) for v in s.kl))
    summary.add("KL(q‖p)", *(Num(v) for v in s.reverse_kl))
    return Doc(
        "kl",
        "KL divergence: the extra cost of believing q when the truth is p",
        [
            Formulas(
                "KL(p‖q) = Σ_i p_i log(p_i / q_i) = H(p, q) - H(p)",
                "KL(p‖q) ≥ 0, with equality only when q = p",
            ),
            table,
            summary,
            Note(
                "Terms with p_i = 0 contribute 0 (0 log 0 = 0); a q_i = 0 where p_i > 0 makes "
                "KL infinite. KL is not a distance: KL(p‖q) and KL(q‖p) differ."
            ),
        ],
    )


def doc_cross_entropy(s: DivergenceSection) -> Doc:
    u = s.units[0]
    table = TableBlock(
        ("class", "p_i", "q_i", f"-p_i {u.log} q_i", f"p_i {u.log}(p_i/q_i)"),
        title=f"p = {_vec(s.p)}, q = {_vec(s.q)}, in {u.name}",
    )
    for t in s.terms:
        table.add(t.label, Num(t.p, "g"), Num(t.q, "g"), Num(t.cross_entropy), Num(t.kl))
    table.add(
        "sum",
        None,
        None,
        Num(math.fsum(t.cross_entropy for t in s.terms)),
        Num(math.fsum(t.kl for t in s.terms)),
        bold=True,
        section=True,
    )
    decomposition = TableBlock(("p", "unit", "H(p)", "KL(p‖q)", "H(p) + KL(p‖q)", "H(p, q)"))
    for d in s.decompositions:
        decomposition.add(
            _vec(d.p),
            d.unit.name,
            Num(d.entropy),
            Num(d.kl),
            Num(d.entropy_plus_kl),
            Num(d.cross_entropy),
        )
    first = s.decompositions[0]
    one_hot = sorted(first.p) == [0.0] * (len(first.p) - 1) + [1.0]
    lesson = (
        f"With a one-hot p = {_vec(first.p)}, H(p) = 0, so cross entropy equals KL: "
        "minimising cross entropy against hard labels is minimising the KL divergence, and "
        "only the true class's term -log q_true survives."
        if one_hot
        else f"Here H(p) = {_n(first.entropy)} {first.unit.name} > 0."
    )
    return Doc(
        "cross-entropy",
        "Cross entropy: H(p, q) = H(p) + KL(p‖q)",
        [
            Formulas(
                "H(p, q)  = -Σ_i p_i log q_i             (cross entropy)",
                "KL(p‖q)  =  Σ_i p_i log(p_i / q_i)      (Kullback-Leibler divergence)",
                "H(p, q)  =  H(p) + KL(p‖q)",
            ),
            table,
            Note("Terms with p_i = 0 contribute 0 (the convention 0 log 0 = 0)."),
            decomposition,
            Note(f"{lesson} With a soft p, H(p) > 0 is the part of H(p, q) no model can remove."),
        ],
    )


# --------------------------------------------------------------------------------------------
# softmax: from logits to probabilities
# --------------------------------------------------------------------------------------------


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
    classes: Sequence[str] = ("cat", "dog", "pig"),
    logits: Sequence[float] = (2.0, 1.0, 0.1),
    temperatures: Sequence[float] = (0.5, 1.0, 2.0, 10.0),
) -> SoftmaxSection:
    """softmax, log_softmax and logsumexp of ``logits``, and softmax under temperature."""
    del options
    x = _f64(logits)
    shifted = x - np.max(x)
    probs = _floats(ce.softmax(x))
    components = tuple(
        SoftmaxComponent(classes[i], float(x[i]), float(shifted[i]), lp, p, ps)
        for i, (lp, p, ps) in enumerate(
            zip(_floats(ce.log_softmax(x)), probs, _floats(ce.softmax(shifted)), strict=True)
        )
    )
    rows = tuple(
        TemperatureRow(float(t), _floats(ce.softmax(x / t)), _float(ce.entropy(ce.softmax(x / t))))
        for t in temperatures
    )
    return SoftmaxSection(components, _float(ce.logsumexp(x)), math.fsum(probs), rows)


def _logit_names(n: int, user: bool) -> tuple[str, ...]:
    return _names("class ", n) if user else ("cat", "dog", "pig")


def _softmax_for(o: ExplainOptions) -> SoftmaxSection:
    if o.logits is None:
        return compute_softmax(o)
    return compute_softmax(o, _logit_names(len(o.logits), True), o.logits)


def doc_softmax(s: SoftmaxSection) -> Doc:
    table = TableBlock(
        (
            "class",
            "x_i",
            "x_i - max x",
            "log p_i = x_i - LSE(x)",
            "p_i = softmax(x)_i",
            "softmax(x - max x)_i",
        ),
        title=f"logsumexp(x) = LSE(x) = {_n(s.logsumexp, 4)}",
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
    table.add("sum", None, None, None, Num(s.prob_sum, "f4"), None, bold=True, section=True)
    temps = TableBlock(
        ("temperature T", *(f"p({c.label})" for c in s.components), "H (nats)"),
        title="softmax(x / T): temperature",
    )
    for r in s.temperatures:
        temps.add(Num(r.temperature, "g"), *(Num(v, "f4") for v in r.probs), Num(r.entropy))
    return Doc(
        "softmax",
        "Softmax: from logits to probabilities",
        [
            Formulas(
                "softmax(x)_i = e^{x_i} / Σ_j e^{x_j}",
                "log softmax(x)_i = x_i - logsumexp(x)",
                "logsumexp(x) = max x + ln Σ_j e^{x_j - max x}",
                "softmax(x + c) = softmax(x): subtracting max x avoids overflow, changes nothing",
            ),
            table,
            temps,
            Note(
                "The probabilities are positive and sum to 1. A low temperature sharpens them "
                "towards the largest logit, a high one flattens them towards uniform (higher "
                "entropy)."
            ),
        ],
    )


# --------------------------------------------------------------------------------------------
# mse-vs-ce: two models scored by MSE and by cross entropy
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
class Saturation:
    """One sigmoid output with target 1, scored by both losses, with d loss / d logit."""

    logit: float
    prob: float  # sigmoid(z)
    cross_entropy: float
    cross_entropy_grad: float  # d CE / dz = sigmoid(z) - 1
    mse: float  # (sigmoid(z) - 1)^2
    mse_grad_prob: float  # d MSE / d sigmoid = 2 (sigmoid(z) - 1)
    sigmoid_grad: float  # d sigmoid / dz = sigmoid(z) (1 - sigmoid(z))
    mse_grad: float  # chain rule: their product


@dataclass(frozen=True)
class ModelComparisonSection:
    classes: tuple[str, ...]
    models: tuple[ModelScore, ...]
    miss_class: str
    misses: tuple[ConfidentMiss, ...]  # ever more confident wrong predictions of one sample
    saturation: tuple[Saturation, ...] = ()


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
    saturation_logits: Sequence[float] = (-6.0, -3.0, 0.0, 3.0),
) -> ModelComparisonSection:
    """Per-sample and mean cross entropy (nats) and squared error summed over the classes.

    ``misses`` scores one sample of the first class whose predicted probability falls through
    ``miss_probs``, the rest going to the last class: a more and more confident mistake.
    ``saturation`` differentiates both losses of a sigmoid output with respect to its logit.
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
    z = _f64(saturation_logits)
    ones = np.ones_like(z)
    sig = np.asarray(ce.sigmoid(z))
    bce, bce_grad = gradients.sigmoid_cross_entropy(z, ones, reduction="none")
    sq, sq_grad = gradients.mse(sig, ones, reduction="none")
    dsig = sig * (1.0 - sig)
    saturation = tuple(
        Saturation(
            float(z[i]),
            float(sig[i]),
            _floats(bce)[i],
            _floats(bce_grad)[i],
            _floats(sq)[i],
            _floats(sq_grad)[i],
            float(dsig[i]),
            float(np.asarray(sq_grad)[i] * dsig[i]),
        )
        for i in range(z.size)
    )
    return ModelComparisonSection(tuple(classes), tuple(scores), classes[0], misses, saturation)


def _comparison_for(o: ExplainOptions, standalone: bool) -> ModelComparisonSection:
    if o.probs is None:
        if standalone and o.labels is not None:
            raise InputError("--labels", "mse-vs-ce needs --probs (one row per label) as well")
        return compute_model_comparison(o)
    if o.labels is None:
        raise InputError("--probs", "mse-vs-ce needs --labels too: the true class of each row")
    n_classes = len(o.probs[0])
    if n_classes < 2:
        raise InputError("--probs", "each row needs at least 2 classes")
    for i, row in enumerate(o.probs):
        _check_distribution(row, "--probs", f"row {i}")
    if len(o.labels) != len(o.probs):
        raise InputError(
            "--labels", f"{len(o.labels)} labels for {len(o.probs)} rows of --probs; give one each"
        )
    classes = _names("class ", n_classes)
    true = []
    for v in o.labels:
        if v != int(v) or not 0 <= v < n_classes:
            raise InputError(
                "--labels",
                f"label {v:g} is not a class index in [0, {n_classes}) for mse-vs-ce",
            )
        true.append(classes[int(v)])
    return compute_model_comparison(o, classes, true, [("your model", o.probs)])


def doc_model_comparison(s: ModelComparisonSection) -> Doc:
    blocks: list[Block] = [
        Formulas(
            "cross entropy  CE  = -Σ_c y_c ln q_c = -ln q_true   (y one-hot)",
            "squared error  MSE =  Σ_c (q_c - y_c)²              (sum over the classes)",
        )
    ]
    for m in s.models:
        table = TableBlock(
            ("true class", *(f"q({c})" for c in s.classes), "q_true", "CE", "MSE"),
            title=f"{m.name}, per sample",
        )
        for sample in m.samples:
            table.add(
                sample.true_class,
                *(Num(v, "g") for v in sample.probs),
                Num(sample.p_true, "g"),
                Num(sample.cross_entropy),
                Num(sample.mse),
            )
        blanks: list[Cell] = [None] * (len(s.classes) + 1)
        table.add(
            "average",
            *blanks,
            Num(m.mean_cross_entropy),
            Num(m.mean_mse),
            bold=True,
            section=True,
        )
        blocks.append(table)
    summary = TableBlock(
        ("average loss", *(m.name for m in s.models)), title="summary (lower is better)"
    )
    summary.add("cross entropy (nats)", *(Num(m.mean_cross_entropy) for m in s.models))
    summary.add("MSE", *(Num(m.mean_mse) for m in s.models))
    blocks.append(summary)
    misses = TableBlock(
        (*(f"q({c})" for c in s.classes), "CE", "MSE"),
        title=f"one {s.miss_class}, ever more confidently wrong",
    )
    for miss in s.misses:
        misses.add(*(Num(v, "g") for v in miss.probs), Num(miss.cross_entropy), Num(miss.mse))
    blocks.append(misses)
    best = min(s.models, key=lambda m: m.mean_cross_entropy)
    ranking = ""
    if len(s.models) > 1:
        agree = best is min(s.models, key=lambda m: m.mean_mse)
        others = [m for m in s.models if m is not best]
        dominates = all(
            b.p_true > o.p_true
            for m in others
            for b, o in zip(best.samples, m.samples, strict=True)
        )
        why = ": it gives the true class more probability on every sample" if dominates else ""
        ranking = (
            f"Both losses rank {best.name} better{why}. But"
            if agree
            else f"Cross entropy ranks {best.name} better, MSE does not. And"
        )
    else:
        ranking = "Both losses fall as q_true rises. But"
    first, last = s.misses[0], s.misses[-1]
    blocks.append(
        Note(
            f"{ranking} cross entropy punishes a confident mistake far more: as "
            f"q({s.miss_class}) falls from {first.p_true:g} to {last.p_true:g}, -ln q climbs "
            f"from {_n(first.cross_entropy)} to {_n(last.cross_entropy)} nats without bound, "
            f"while the squared error only creeps from {_n(first.mse)} to {_n(last.mse)}, "
            f"never above 2."
        )
    )
    if s.saturation:
        sat = TableBlock(
            (
                "logit z",
                "σ(z)",
                "CE",
                "dCE/dz = σ - 1",
                "MSE",
                "dMSE/dσ",
                "dσ/dz",
                "dMSE/dz",
            ),
            title="one sigmoid output, target y = 1: gradients with respect to the logit",
        )
        for r in s.saturation:
            sat.add(
                Num(r.logit, "g"),
                Num(r.prob, "f4"),
                Num(r.cross_entropy, "f4"),
                Num(r.cross_entropy_grad, "f4"),
                Num(r.mse, "f4"),
                Num(r.mse_grad_prob, "f4"),
                Num(r.sigmoid_grad, "f4"),
                Num(r.mse_grad, "f4"),
            )
        blocks += [
            Formulas(
                "dCE/dz  = σ(z) - y",
                "dMSE/dz = dMSE/dσ · dσ/dz = 2(σ(z) - y) · σ(z)(1 - σ(z))",
            ),
            sat,
        ]
        worst = min(s.saturation, key=lambda r: r.logit)
        blocks.append(
            Note(
                f"When the output is confidently wrong (z = {worst.logit:g}), the cross-entropy "
                f"gradient is {_n(worst.cross_entropy_grad, 4)}, a full-size step, while MSE's "
                f"is {_n(worst.mse_grad, 4)}: the factor σ(1 - σ) of a saturated sigmoid makes "
                f"MSE learn slowly exactly when it is most wrong."
            )
        )
    return Doc("mse-vs-ce", "MSE vs cross entropy: scoring classifiers", blocks)


# --------------------------------------------------------------------------------------------
# multilabel: one sigmoid cross entropy per class
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
        math.fsum(probs),
    )


def _multilabel_for(o: ExplainOptions, standalone: bool) -> MultiLabelSection:
    use_labels = o.labels is not None and (standalone or o.probs is None)
    if not use_labels:
        if standalone and o.logits is not None:
            raise InputError(
                "--logits", "multilabel needs --labels too: the n-hot targets, e.g. 1,0,1"
            )
        return compute_multilabel(o)
    assert o.labels is not None
    if o.logits is None:
        raise InputError("--labels", "multilabel needs --logits too: one logit per label")
    _check_unit_interval(o.labels, "--labels", "multilabel targets")
    if len(o.labels) != len(o.logits):
        raise InputError(
            "--labels",
            f"{len(o.labels)} labels for {len(o.logits)} logits; multilabel needs one each",
        )
    return compute_multilabel(o, _names("class ", len(o.logits)), o.labels, o.logits)


def doc_multilabel(s: MultiLabelSection) -> Doc:
    present = [t.tag for t in s.tags if t.label]
    table = TableBlock(
        ("tag", "y_c", "logit x_c", "σ(x_c)", "ℓ_c (nats)"),
        title=f"an image tagged {{{', '.join(present)}}}",
    )
    for t in s.tags:
        table.add(t.tag, Num(t.label, "g"), Num(t.logit, "g"), Num(t.prob), Num(t.loss))
    table.add("sum", None, None, Num(s.prob_sum), Num(s.total), bold=True, section=True)
    table.add("mean", None, None, None, Num(s.mean))
    return Doc(
        "multilabel",
        "Multi-label (n-hot): one sigmoid cross entropy per class",
        [
            Formulas(
                "σ(x) = 1 / (1 + e^-x)",
                "ℓ_c  = -[ y_c ln σ(x_c) + (1 - y_c) ln(1 - σ(x_c)) ]",
                "L    = Σ_c ℓ_c",
            ),
            table,
            Note(
                f"Each tag is its own yes/no question: the σ column sums to {_n(s.prob_sum)}, "
                f"not 1, because an image can carry several tags at once. A softmax would make "
                f"the tags compete for one unit of probability."
            ),
        ],
    )


# --------------------------------------------------------------------------------------------
# gradients: the softmax Jacobian, the chain rule down to p - y, and finite differences
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
    classes: Sequence[str] = _CLASSES,
    logits: Sequence[float] = (2.0, 1.0, 0.1),
    label: int = 1,
    step: float = 1e-5,
) -> GradientSection:
    """Softmax Jacobian, chain rule and the analytic gradient vs central finite differences."""
    del options  # losses are in nats
    x = _f64(logits)
    n = x.size
    target = np.zeros_like(x)
    target[label] = 1.0
    probs = np.asarray(ce.softmax(x), dtype=np.float64)
    p = _floats(probs)
    p_minus_y = _floats(probs - target)
    loss, grad = gradients.sparse_softmax_cross_entropy(x, label)
    grads = _floats(grad)

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
                _float(ce.sparse_softmax_cross_entropy(up, label))
                - _float(ce.sparse_softmax_cross_entropy(down, label))
            )
            / (2 * step)
        )
    with np.errstate(divide="ignore"):  # -inf where p_y underflows to 0: what -1/p_y is
        dl_dp = np.where(target > 0, -target / np.where(target > 0, probs, 1.0), 0.0)
    # The chain rule Σ_i ∂L/∂p_i · ∂p_i/∂x_j, with each factor's p_i cancelled before the
    # product: (-y_i / p_i) · p_i (δ_ij - p_j) = -y_i (δ_ij - p_j). Taken literally, a p_y that
    # underflows (logits 800, 0) would make it -inf · 0 = NaN.
    jac_over_p = np.eye(n) - probs[None, :]  # ∂ log p_i / ∂x_j = J_ij / p_i
    chain = _floats(-target @ jac_over_p)
    components = tuple(
        GradientComponent(
            classes[j],
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
        classes[label],
        _float(loss),
        step,
        components,
        max(abs(g - f) for g, f in zip(grads, fd, strict=True)),
        label,
        tuple(tuple(row) for row in jac),
        tuple(_floats(row) for row in jac_fd),
        float(np.max(np.abs(np.asarray(jac) - jac_fd))),
        max(abs(c - d) for c, d in zip(chain, p_minus_y, strict=True)),
        math.fsum(grads),
    )


def _gradient_for(o: ExplainOptions) -> GradientSection:
    logits = (2.0, 1.0, 0.1) if o.logits is None else o.logits
    classes = _CLASSES if o.logits is None else _names("class ", len(logits))
    label = 1 if o.label is None else o.label
    if not 0 <= label < len(logits):
        raise InputError(
            "--label",
            f"label {label} is out of range for {len(logits)} logits; expected 0 to "
            f"{len(logits) - 1}",
        )
    return compute_gradient(o, classes, logits, label)


def doc_gradient(s: GradientSection) -> Doc:
    names = [c.label for c in s.components]
    blocks: list[Block] = [
        Formulas(
            "p = softmax(x),   L(x) = -ln p_y",
            "∂p_i/∂x_j = p_i (1 - p_i)   if i = j",
            "∂p_i/∂x_j = -p_i p_j        if i ≠ j",
            "∂L/∂p_i   = -y_i / p_i",
            "∂L/∂x_j   = Σ_i ∂L/∂p_i · ∂p_i/∂x_j = -(1/p_y)·(δ_yj p_y - p_y p_j) = p_j - y_j",
            f"check:   ∂/∂x_j ≈ [f(x + h e_j) - f(x - h e_j)] / 2h,   h = {s.step:g}",
        )
    ]
    if s.jacobian:
        jac = TableBlock(
            ("∂p_i/∂x_j", *(f"x_j: {n}" for n in names)),
            title="softmax Jacobian J = diag(p) - p pᵀ",
        )
        for name, row in zip(names, s.jacobian, strict=True):
            jac.add(f"p_i: {name}", *(Num(v, "f4") for v in row))
        jac_fd = TableBlock(
            ("finite diff.", *(f"x_j: {n}" for n in names)),
            title="J by central differences",
        )
        for name, row in zip(names, s.jacobian_fd, strict=True):
            jac_fd.add(f"p_i: {name}", *(Num(v, "f4") for v in row))
        blocks += [
            jac,
            jac_fd,
            Note(f"Largest |analytic - finite difference| entry: {s.jacobian_max_abs_error:.1e}."),
        ]
    table = TableBlock(
        (
            "class",
            "x_j",
            "p_j",
            "y_j",
            "∂L/∂p_j",
            "chain Σ_i",
            "p_j - y_j",
            "library",
            "finite diff.",
            "|diff.|",
        ),
        title=f"true class: {s.label}, loss L = {_n(s.loss, 4)} nats",
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
            "A gradient-descent step x ← x - η(p - y) raises the true class's logit (its "
            "gradient p_j - 1 is negative) and lowers every other logit in proportion to the "
            f"probability it took; the gradient sums to {_n(s.gradient_sum, 4)}. The chain rule "
            f"matches p - y to {s.chain_max_abs_error:.1e}, and the library's gradient "
            f"(crossentropy.gradients) agrees with the finite difference to "
            f"{s.max_abs_error:.1e}."
        ),
    ]
    return Doc("gradients", "The gradient of softmax cross entropy is p - y", blocks)


# --------------------------------------------------------------------------------------------
# Documents: blocks of formulas, tables and notes, and their three formats
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    """A number in a table and how it prints: ``f3``/``f4`` decimals, ``g``, ``g4``, ``e1``."""

    value: float
    style: str = "f3"

    def __str__(self) -> str:
        v = self.value
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if self.style.startswith("f"):
            return _n(v, int(self.style[1:]))
        if self.style == "g":
            return f"{v:g}"
        if self.style.startswith("g"):
            return f"{v:.{self.style[1:]}g}"
        return f"{v:.{self.style[1:]}e}"


Cell = str | Num | None


@dataclass(frozen=True)
class Formulas:
    lines: tuple[str, ...]

    def __init__(self, *lines: str) -> None:
        object.__setattr__(self, "lines", lines)


@dataclass(frozen=True)
class Note:
    text: str


@dataclass(frozen=True)
class Row:
    cells: tuple[Cell, ...]
    bold: bool = False
    section: bool = False  # a rule above this row


@dataclass
class TableBlock:
    columns: tuple[str, ...]
    title: str | None = None
    rows: list[Row] = field(default_factory=list)

    def add(self, *cells: Cell, bold: bool = False, section: bool = False) -> None:
        if len(cells) != len(self.columns):  # pragma: no cover - a bug in a doc_* function
            raise RuntimeError(f"{len(cells)} cells for columns {self.columns}")
        self.rows.append(Row(cells, bold, section))


Block = Formulas | Note | TableBlock


@dataclass
class Doc:
    """One topic laid out: its name, title, blocks, and the section's numbers (``data``)."""

    topic: str
    title: str
    blocks: list[Block]
    data: Any = None


def _n(x: float, digits: int = 3) -> str:
    text = f"{x:.{digits}f}"
    # -0.0 (e.g. -(1 * log 1)) and tiny negative rounding errors print as 0, not "-0.000"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _vec(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _cell_text(cell: Cell) -> str:
    return "" if cell is None else str(cell)


# ---- text (rich) ----


def _rich_table(block: TableBlock) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD,
        title=block.title,
        title_justify="left",
        title_style="bold",
        show_edge=False,
        pad_edge=False,
    )
    for i, name in enumerate(block.columns):
        # fold, never truncate: a narrow terminal must not turn 0.6590 into "0.6…"
        table.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    for row in block.rows:
        if row.section:
            table.add_section()
        # Text(), not markup: labels such as "[0.3, 0.3, 0.4]" must print as they are.
        table.add_row(*(Text(_cell_text(c)) for c in row.cells), style="bold" if row.bold else None)
    return table


def render_doc(console: Console, doc: Doc, number: int | None = None) -> None:
    """Print one topic with rich: heading, formulas, tables, notes."""
    console.print()
    heading = doc.title if number is None else f"{number}. {doc.title}"
    console.rule(Text(heading, style="bold"), align="left")
    for i, block in enumerate(doc.blocks):
        if isinstance(block, Formulas):
            for line in block.lines:
                console.print(Text("    " + line, style="bold cyan"))
            console.print()
        elif isinstance(block, TableBlock):
            console.print(_rich_table(block))
            console.print()
        else:
            console.print(Text(block.text, style="italic"))
            if i + 1 < len(doc.blocks):
                console.print()


_INTRO = "Cross entropy, step by step: every number below is computed by the library."


def render_all(console: Console, options: ExplainOptions) -> None:
    """Print every topic of :data:`TOPICS` in order."""
    docs = [t.doc(options, standalone=False) for t in TOPICS]
    console.print(Text(_INTRO))
    for i, doc in enumerate(docs, 1):
        render_doc(console, doc, i)
    console.print()


# ---- markdown ----


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _md_table(block: TableBlock) -> list[str]:
    lines = []
    if block.title:
        lines += [f"**{_md_cell(block.title)}**", ""]
    lines.append("| " + " | ".join(_md_cell(c) for c in block.columns) + " |")
    lines.append(
        "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(block.columns))) + "|"
    )
    for row in block.rows:
        cells = [_md_cell(_cell_text(c)) for c in row.cells]
        if row.bold:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def to_markdown(docs: Sequence[Doc], numbered: bool = False) -> str:
    """The topics as Markdown: a heading each, formulas in a code block, pipe tables."""
    lines: list[str] = []
    if numbered:
        lines += [f"# {_INTRO}", ""]
    for n, doc in enumerate(docs, 1):
        title = f"{n}. {doc.title}" if numbered else doc.title
        lines += [f"## {title}", ""]
        for block in doc.blocks:
            if isinstance(block, Formulas):
                lines += ["```text", *block.lines, "```"]
            elif isinstance(block, TableBlock):
                lines += _md_table(block)
            else:
                lines.append(block.text)
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# ---- json ----


def _jsonable(value: Any) -> Any:
    if isinstance(value, Num):
        return _jsonable(value.value)
    if isinstance(value, float):
        return value if math.isfinite(value) else ("nan" if math.isnan(value) else str(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _doc_json(doc: Doc) -> dict[str, Any]:
    formulas = [line for b in doc.blocks if isinstance(b, Formulas) for line in b.lines]
    tables = [
        {
            "title": b.title,
            "columns": list(b.columns),
            "rows": [[_jsonable(c) for c in r.cells] for r in b.rows],
        }
        for b in doc.blocks
        if isinstance(b, TableBlock)
    ]
    return {
        "topic": doc.topic,
        "title": doc.title,
        "formulas": formulas,
        "tables": tables,
        "notes": [b.text for b in doc.blocks if isinstance(b, Note)],
        "data": _jsonable(doc.data),
    }


def to_json(docs: Sequence[Doc], single: bool) -> str:
    """One topic as a JSON object, or ``{"topics": [...]}`` for ``all``.

    Non-finite numbers are the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (JSON has none).
    """
    payload: dict[str, Any] = (
        _doc_json(docs[0]) if single else {"topics": [_doc_json(d) for d in docs]}
    )
    return json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------------------------
# Topics and the command
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topic:
    """One topic of ``explain``: its name, the options it reads, and how to lay it out."""

    name: str
    options: tuple[str, ...]  # the command-line options this topic uses
    compute: Callable[[ExplainOptions, bool], Any]  # (options, standalone) -> section
    layout: Callable[[Any], Doc]

    def doc(self, options: ExplainOptions, standalone: bool = True) -> Doc:
        section = self.compute(options, standalone)
        doc = self.layout(section)
        doc.data = section
        return doc


def _plain(f: Callable[[ExplainOptions], Any]) -> Callable[[ExplainOptions, bool], Any]:
    return lambda o, standalone: f(o)


TOPICS: tuple[Topic, ...] = (
    Topic("information", ("--p", "--base"), _plain(_information_for), doc_information),
    Topic("entropy", ("--p", "--base"), _plain(_entropy_for), doc_entropy),
    Topic("kl", ("--p", "--q", "--base"), _plain(_kl_for), doc_kl),
    Topic("cross-entropy", ("--p", "--q", "--base"), _plain(_cross_entropy_for), doc_cross_entropy),
    Topic("softmax", ("--logits",), _plain(_softmax_for), doc_softmax),
    Topic("multilabel", ("--logits", "--labels"), _multilabel_for, doc_multilabel),
    Topic("mse-vs-ce", ("--probs", "--labels"), _comparison_for, doc_model_comparison),
    Topic("gradients", ("--logits", "--label"), _plain(_gradient_for), doc_gradient),
)
TOPIC_NAMES: tuple[str, ...] = (*(t.name for t in TOPICS), "all")
FORMATS = ("text", "markdown", "json")


def _check_base(value: str | None) -> str | None:
    if value is not None:
        try:
            parse_base(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _check_topic(value: str) -> str:
    if value not in TOPIC_NAMES:
        raise typer.BadParameter(f"unknown topic {value!r}; choose one of {', '.join(TOPIC_NAMES)}")
    return value


def _check_format(value: str) -> str:
    if value not in FORMATS:
        raise typer.BadParameter(f"unknown format {value!r}; choose one of {', '.join(FORMATS)}")
    return value


def _options(
    base: str | None,
    p: str | None,
    q: str | None,
    logits: str | None,
    label: int | None,
    probs: str | None,
    labels: str | None,
) -> ExplainOptions:
    return ExplainOptions(
        base=None if base is None else parse_base(base),
        base_given=base is not None,
        p=None if p is None else parse_vector(p, "--p"),
        q=None if q is None else parse_vector(q, "--q"),
        logits=None if logits is None else parse_logits(logits, "--logits"),
        label=label,
        probs=None if probs is None else parse_matrix(probs, "--probs"),
        labels=None if labels is None else parse_vector(labels, "--labels"),
    )


def build_docs(topic: str, options: ExplainOptions, given: Sequence[str] = ()) -> list[Doc]:
    """Compute and lay out ``topic`` (or every topic for ``all``); checks every input first.

    ``given`` names the options the user gave: one the topic does not use is an error.
    """
    if topic == "all":
        return [t.doc(options, standalone=False) for t in TOPICS]
    chosen = next(t for t in TOPICS if t.name == topic)
    for option in given:
        if option not in chosen.options:
            raise InputError(
                option,
                f"topic {topic!r} does not use {option} (it takes {', '.join(chosen.options)})",
            )
    return [chosen.doc(options)]


_NUMBERS = f"up to {MAX_VALUES} comma-separated numbers"


def explain(
    ctx: typer.Context,
    topic: Annotated[
        str,
        typer.Argument(
            metavar="[TOPIC]",
            callback=_check_topic,
            help=f"One of: {', '.join(TOPIC_NAMES)}.",
            show_default=True,
        ),
    ] = "all",
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            callback=_check_format,
            help="text (rich tables), markdown, or json (every number, machine-readable).",
        ),
    ] = "text",
    p: Annotated[
        str | None,
        typer.Option("--p", metavar="P", help=f"A distribution p, {_NUMBERS}: 1,0,0."),
    ] = None,
    q: Annotated[
        str | None,
        typer.Option("--q", metavar="Q", help=f"A prediction q, {_NUMBERS}: 0.7,0.2,0.1."),
    ] = None,
    logits: Annotated[
        str | None,
        typer.Option(
            "--logits",
            metavar="X",
            help=f"Logits, {_NUMBERS} in [-{MAX_LOGIT:g}, {MAX_LOGIT:g}]: 2,1,0.1.",
        ),
    ] = None,
    label: Annotated[
        int | None,
        typer.Option("--label", metavar="INDEX", help="The true class, in [0, len(logits))."),
    ] = None,
    probs: Annotated[
        str | None,
        typer.Option(
            "--probs",
            metavar="ROWS",
            help="Predicted distributions for mse-vs-ce, rows separated by ';': 0.7,0.3;0.4,0.6.",
        ),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            metavar="Y",
            help="Class indices of the --probs rows (mse-vs-ce), or n-hot targets of the "
            "--logits (multilabel).",
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            "-b",
            metavar="BASE",
            callback=_check_base,
            help="Logarithm base for information, entropy, kl and cross-entropy: e (nats), "
            "2 (bits), 10, ... (default: show both nats and bits).",
        ),
    ] = None,
) -> None:
    """Walk through worked examples of cross entropy, step by step, with the numbers."""
    given = [
        name
        for name, value in (
            ("--p", p),
            ("--q", q),
            ("--logits", logits),
            ("--label", label),
            ("--probs", probs),
            ("--labels", labels),
            ("--base", base),
        )
        if value is not None
    ]
    try:
        options = _options(base, p, q, logits, label, probs, labels)
        docs = build_docs(topic, options, given)
    except InputError as exc:
        raise typer.BadParameter(str(exc), ctx=ctx, param_hint=f"'{exc.option}'") from None
    except (ValueError, TypeError) as exc:  # the library refused a value: still one line
        raise typer.BadParameter(str(exc), ctx=ctx) from None
    if output_format == "json":
        typer.echo(to_json(docs, single=topic != "all"))
    elif output_format == "markdown":
        typer.echo(to_markdown(docs, numbered=topic == "all"), nl=False)
    else:
        console = Console(highlight=False)
        if topic == "all":
            console.print(Text(_INTRO))
            for i, doc in enumerate(docs, 1):
                render_doc(console, doc, i)
            console.print()
        else:
            render_doc(console, docs[0])
            console.print()
