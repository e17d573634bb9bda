"""What ``crossentropy explain`` reads from the command line, parsed and checked.

User numbers (``--p``, ``--q``, ``--logits``, ``--label``, ``--probs``, ``--labels``,
``--residuals``, ``--beta``, ``--base``) are parsed and checked before anything is printed:
a bad value is a :class:`~crossentropy.cli.errors.CliError` naming the option. The examples
are worked by hand, entry by entry: a list holds at most :data:`MAX_VALUES` numbers
(``--probs`` at most that many rows), a logit or a residual is at most :data:`MAX_LOGIT`
in magnitude, and ``--beta`` is within [:data:`MIN_BETA`, :data:`MAX_BETA`], so that the
finite-difference checks keep their digits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from crossentropy.cli.errors import CliError
from crossentropy.i18n import gettext as _

__all__ = [
    "BITS",
    "MAX_BETA",
    "MAX_LOGIT",
    "MAX_VALUES",
    "MIN_BETA",
    "NATS",
    "ExplainOptions",
    "Unit",
    "check_binary_labels",
    "check_distribution",
    "check_unit_interval",
    "p_and_q",
    "parse_base",
    "parse_beta",
    "parse_logits",
    "parse_matrix",
    "parse_residuals",
    "parse_vector",
    "unit_for",
]


@dataclass(frozen=True)
class Unit:
    """A unit of information: its English name and the ``base`` passed to the library."""

    name: str
    base: float | None  # None: natural log

    @property
    def label(self) -> str:
        """The unit's name as shown, in the current language (``name`` is the English one)."""
        if self.base is None:
            return _("nats")
        if self.base == 2:
            return _("bits")
        if self.base == 10:
            return _("hartleys")
        return _("base-{base:g} units").format(base=self.base)

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
        raise CliError(f"{count} numbers; a worked example takes at most {MAX_VALUES}", option)
    tokens = [t.strip() for t in text.split(",")]
    if not text.strip() or any(t == "" for t in tokens):
        raise CliError(
            f"{text!r} is not a list of numbers; expected e.g. 0.7,0.2,0.1 (no blanks)", option
        )
    values = []
    for t in tokens:
        try:
            v = float(t)
        except ValueError:
            raise CliError(
                f"{t!r} is not a number; expected comma-separated numbers, e.g. 0.7,0.2,0.1", option
            ) from None
        if math.isnan(v):
            raise CliError("NaN is not allowed; give finite numbers", option)
        if not math.isfinite(v):
            raise CliError(f"{t!r} is not finite; give finite numbers", option)
        values.append(v)
    return tuple(values)


def parse_logits(text: str, option: str) -> tuple[float, ...]:
    """Parse logits: :func:`parse_vector`, each at most :data:`MAX_LOGIT` in magnitude."""
    values = parse_vector(text, option)
    for i, v in enumerate(values):
        if abs(v) > MAX_LOGIT:
            raise CliError(
                f"logit {i} is {v:g}; expected logits in [-{MAX_LOGIT:g}, {MAX_LOGIT:g}]", option
            )
    return values


def parse_residuals(text: str, option: str) -> tuple[float, ...]:
    """Parse residuals r = prediction - target: :func:`parse_vector`, each at most
    :data:`MAX_LOGIT` in magnitude (the same bound, for the same finite differences)."""
    values = parse_vector(text, option)
    for i, v in enumerate(values):
        if abs(v) > MAX_LOGIT:
            raise CliError(
                f"residual {i} is {v:g}; expected residuals in [-{MAX_LOGIT:g}, {MAX_LOGIT:g}]",
                option,
            )
    return values


MIN_BETA = 1e-6
"""The narrowest quadratic zone ``--beta`` takes (smooth L1's beta, Huber's delta)."""

MAX_BETA = 1e6
"""The widest quadratic zone ``--beta`` takes."""


def parse_beta(text: str, option: str) -> float:
    """Parse ``--beta``: a finite number in [:data:`MIN_BETA`, :data:`MAX_BETA`] (> 0).

    >>> parse_beta("0.5", "--beta")
    0.5
    """
    try:
        beta = float(text)
    except ValueError:
        raise CliError(
            f"{text!r} is not a number; expected a number > 0 such as 1 or 0.5",
            option,
        ) from None
    if not (math.isfinite(beta) and MIN_BETA <= beta <= MAX_BETA):
        raise CliError(
            f"{text!r} is not a valid beta; expected a finite number in "
            f"[{MIN_BETA:g}, {MAX_BETA:g}]",
            option,
        )
    return beta


def parse_matrix(text: str, option: str) -> tuple[tuple[float, ...], ...]:
    """Parse rows separated by ``;``, each comma-separated: ``0.7,0.3;0.2,0.8``."""
    count = text.count(";") + 1
    if count > MAX_VALUES:
        raise CliError(f"{count} rows; a worked example takes at most {MAX_VALUES}", option)
    rows = tuple(parse_vector(row, option) for row in text.split(";"))
    if len({len(r) for r in rows}) != 1:
        raise CliError(
            f"rows have different lengths {[len(r) for r in rows]}; each needs one per class",
            option,
        )
    return rows


def check_distribution(values: Sequence[float], option: str, what: str = "") -> None:
    """Refuse ``values`` (given as ``option``) unless they are a probability distribution."""
    where = f"{what} is " if what else ""
    for i, v in enumerate(values):
        if v < 0:
            raise CliError(
                f"{where}not a probability distribution: entry {i} is negative ({v:g})", option
            )
        if v > 1:
            raise CliError(f"{where}not a probability distribution: entry {i} is {v:g} > 1", option)
    total = math.fsum(values)
    if abs(total - 1.0) > 1e-6:
        raise CliError(
            f"{where}not a probability distribution: it sums to {total:.6g}, not 1", option
        )


def check_unit_interval(values: Sequence[float], option: str, what: str) -> None:
    """Refuse ``values`` (given as ``option``; ``what`` names them) unless each is in [0, 1]."""
    for i, v in enumerate(values):
        if not 0 <= v <= 1:
            raise CliError(f"{what} must be in [0, 1]; entry {i} is {v:g}", option)


def check_binary_labels(values: Sequence[float], option: str) -> None:
    """Refuse ``values`` (given as ``option``) unless each is a binary label, 0 or 1."""
    for i, v in enumerate(values):
        if v not in (0.0, 1.0):
            raise CliError(f"label {i} is {v:g}; binary labels are 0 or 1", option)


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
    residuals: tuple[float, ...] | None = None
    beta: float | None = None

    @property
    def units(self) -> tuple[Unit, ...]:
        """The units the information-theory topics show: the one of ``--base``, or both."""
        if not self.base_given:
            return (NATS, BITS)
        return (unit_for(self.base),)


def p_and_q(
    o: ExplainOptions, default_p: Sequence[float], default_q: Sequence[float]
) -> tuple[Sequence[float], Sequence[float]]:
    """The truth p and the prediction q: ``--p`` and ``--q`` checked, or the defaults."""
    p = default_p if o.p is None else o.p
    q = default_q if o.q is None else o.q
    if o.p is not None:
        check_distribution(o.p, "--p")
    if o.q is not None:
        check_distribution(o.q, "--q")
    if len(p) != len(q):
        which = "--q" if o.q is not None else "--p"
        p_says = f"--p has {len(p)}" + ("" if o.p is not None else " (the default)")
        q_says = f"--q has {len(q)}" + ("" if o.q is not None else " (the default)")
        raise CliError(f"p and q must have the same length: {p_says}, {q_says}", which)
    return p, q
