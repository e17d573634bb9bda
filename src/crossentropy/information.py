"""Information theory on probability distributions.

Natural logarithms (nats) by default; ``base=2`` gives bits, ``base=10`` hartleys, any
positive base other than 1 is accepted: log_b(x) = ln(x) / ln(b). By the limit
p log p -> 0 as p -> 0, every ``0 · log 0`` term is taken as 0, so a zero-probability
outcome contributes nothing (and never NaN).

The functions do not normalise their inputs: a distribution that does not sum to one is
used as given (SciPy's ``scipy.stats.entropy`` normalises; pass ``p / p.sum()`` for that).
"""

from __future__ import annotations

from typing import Any

from . import _validate
from ._array import Array, from_compute, namespace, quiet, result_dtype, to_compute

__all__ = ["binary_entropy", "cross_entropy", "entropy", "information", "kl_divergence"]


def _prepare(name: str, p: Any, xp: Any, *, upper: bool = False) -> Array:
    _validate.floating(name, p, xp)
    p = to_compute(p, xp)
    _validate.probabilities(name, p, xp, upper=upper)
    return p


def _in_base(nats: Array, log_base: float | None) -> Array:
    # "+ 0.0" turns the -0.0 of a negated zero (the entropy of a certain outcome, the
    # information of p = 1) into 0.0, and changes no other value
    nats = nats + 0.0
    return nats if log_base is None else nats / log_base


def _xlogy(x: Array, y: Array, xp: Any) -> Array:
    """x · log y with 0 · log y = 0 for every y (0 · log 0 included)."""
    return xp.where(x == 0, xp.zeros_like(x), x * xp.log(y))


@quiet
def information(p: Array, *, base: float | None = None) -> Array:
    r"""Information content (surprisal) of events with probability ``p``.

    .. math::

        I(p) = -\log_b p

    A certain event carries no information; an impossible one carries infinitely much.

    Args:
        p: probabilities, any shape, each in [0, 1].
        base: logarithm base; ``None`` for nats, 2 for bits.

    Returns:
        -log p, elementwise, same shape; ``+inf`` where p = 0.

    Example:
        >>> from crossentropy import information
        >>> print(f"{float(information(0.5, base=2)):.1f} bit")
        1.0 bit
        >>> print(f"{float(information(0.01)):.4f} nats")
        4.6052 nats

    References:
        C. E. Shannon, "A Mathematical Theory of Communication", 1948.
    """
    log_base = _validate.base(base)
    xp, (p,) = namespace(p, names=("p",))
    dtype = result_dtype(p, xp)
    p = _prepare("p", p, xp, upper=True)
    return from_compute(_in_base(-xp.log(p), log_base), dtype, xp)


@quiet
def entropy(p: Array, *, axis: int = -1, base: float | None = None) -> Array:
    r"""Shannon entropy of the distribution(s) ``p`` along ``axis``.

    .. math::

        H(p) = -\sum_i p_i \log_b p_i, \qquad 0 \log 0 = 0

    Args:
        p: probabilities, shape (..., K, ...) with the outcomes along ``axis``.
        axis: the axis of outcomes.
        base: logarithm base; ``None`` for nats, 2 for bits.

    Returns:
        The entropy, with ``axis`` reduced.

    Example:
        >>> from crossentropy import entropy
        >>> print(f"{float(entropy([0.5, 0.25, 0.25], base=2)):.2f} bits")
        1.50 bits

    References:
        T. M. Cover and J. A. Thomas, "Elements of Information Theory", 2nd ed., ch. 2.
    """
    log_base = _validate.base(base)
    xp, (p,) = namespace(p, names=("p",))
    dtype = result_dtype(p, xp)
    _validate.at_least_1d("p", p)
    axis = _validate.axis("p", axis, p.ndim)
    p = _prepare("p", p, xp)
    h = -xp.sum(_xlogy(p, p, xp), axis=axis)
    return from_compute(_in_base(h, log_base), dtype, xp)


@quiet
def binary_entropy(p: Array, *, base: float | None = None) -> Array:
    r"""Entropy of a coin that shows heads with probability ``p``.

    .. math::

        H_b(p) = -p \log_b p - (1 - p) \log_b (1 - p)

    Args:
        p: probabilities, any shape, each in [0, 1].
        base: logarithm base; ``None`` for nats, 2 for bits.

    Returns:
        The binary entropy, elementwise; 0 at p = 0 and p = 1, maximal (1 bit) at 1/2.

    Example:
        >>> from crossentropy import binary_entropy
        >>> print([round(float(binary_entropy(p, base=2)), 4) for p in (0.0, 0.11, 0.5)])
        [0.0, 0.4999, 1.0]

    References:
        Cover and Thomas, "Elements of Information Theory", eq. (2.5).
    """
    log_base = _validate.base(base)
    xp, (p,) = namespace(p, names=("p",))
    dtype = result_dtype(p, xp)
    _validate.floating("p", p, xp)
    p = to_compute(p, xp)
    _validate.probabilities("p", p, xp, upper=True)
    q = 1.0 - p
    h = -(_xlogy(p, p, xp) + _xlogy(q, q, xp))
    return from_compute(_in_base(h, log_base), dtype, xp)


def _pair(p: Any, q: Any, axis: int) -> tuple[Any, Array, Array, int, Any]:
    xp, (p, q) = namespace(p, q, names=("p", "q"))
    dtype = result_dtype(p, xp)
    _validate.broadcastable("p", p, "q", q)
    p = _prepare("p", p, xp)
    q = _prepare("q", q, xp)
    if p.dtype != q.dtype:
        common = xp.result_type(p, q)
        p, q = xp.astype(p, common), xp.astype(q, common)
    p, q = xp.broadcast_arrays(p, q)
    _validate.at_least_1d("p", p)
    return xp, p, q, _validate.axis("p", axis, p.ndim), dtype


@quiet
def kl_divergence(p: Array, q: Array, *, axis: int = -1, base: float | None = None) -> Array:
    r"""Kullback-Leibler divergence of ``q`` from ``p``: the extra cost of coding ``p`` with ``q``.

    .. math::

        D_{KL}(p \,\|\, q) = \sum_i p_i \log_b \frac{p_i}{q_i}

    Terms with p_i = 0 are 0; a term with p_i > 0 and q_i = 0 is ``+inf``.

    Args:
        p: the true distribution(s), outcomes along ``axis``.
        q: the model distribution(s), broadcastable with ``p``.
        axis: the axis of outcomes.
        base: logarithm base; ``None`` for nats, 2 for bits.

    Returns:
        The divergence, with ``axis`` reduced; >= 0 for normalised p and q.

    Example:
        >>> from crossentropy import kl_divergence
        >>> print(f"{float(kl_divergence([1, 0, 0], [0.7, 0.2, 0.1])):.4f}")
        0.3567

    References:
        S. Kullback and R. A. Leibler, "On Information and Sufficiency", 1951.
    """
    log_base = _validate.base(base)
    xp, p, q, axis, dtype = _pair(p, q, axis)
    # p (log p - log q), not p log(p/q): p/q can overflow or underflow where the logs do not;
    # each term is exactly 0 where p = q, and 0 where p = 0 whatever q is
    terms = xp.where(p == 0, xp.zeros_like(p), p * (xp.log(p) - xp.log(q)))
    d = xp.sum(terms, axis=axis)
    return from_compute(_in_base(d, log_base), dtype, xp)


@quiet
def cross_entropy(p: Array, q: Array, *, axis: int = -1, base: float | None = None) -> Array:
    r"""Cross entropy of ``q`` relative to ``p``: the cost of coding ``p``'s outcomes with ``q``.

    .. math::

        H(p, q) = -\sum_i p_i \log_b q_i = H(p) + D_{KL}(p \,\|\, q)

    Args:
        p: the true distribution(s), outcomes along ``axis``.
        q: the model distribution(s), broadcastable with ``p``.
        axis: the axis of outcomes.
        base: logarithm base; ``None`` for nats, 2 for bits.

    Returns:
        The cross entropy, with ``axis`` reduced.

    Example:
        >>> from crossentropy import cross_entropy
        >>> print(f"{float(cross_entropy([1, 0, 0], [0.7, 0.2, 0.1])):.4f}")
        0.3567
        >>> print(f"{float(cross_entropy([0.5, 0.5], [0.9, 0.1], base=2)):.4f} bits")
        1.7370 bits

    References:
        Cover and Thomas, "Elements of Information Theory", section 5.4.
    """
    log_base = _validate.base(base)
    xp, p, q, axis, dtype = _pair(p, q, axis)
    h = -xp.sum(_xlogy(p, q, xp), axis=axis)
    return from_compute(_in_base(h, log_base), dtype, xp)
