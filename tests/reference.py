"""Float64 NumPy references for every public function of crossentropy.

Written plainly from the contract (spec/API.md) and the textbook formulas, independently of
the library: explicit loops over examples where the rule is per example, direct formulas
elsewhere.  Nothing here imports crossentropy.  Products ``0 * (+-inf)`` are taken to be 0
(a zero coefficient means "this term is absent"), which is the contract's convention.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

F64 = np.float64


def _f64(x: object) -> np.ndarray:
    return np.asarray(x, dtype=F64)


def _log_base(base: float | None) -> float:
    return 1.0 if base is None else math.log(base)


def _mul0(a: object, b: object) -> np.ndarray:
    """a * b elementwise, with 0 wherever a == 0 (even if b is +-inf)."""
    a, b = np.broadcast_arrays(_f64(a), _f64(b))
    with np.errstate(invalid="ignore", over="ignore"):
        prod = a * b
    return np.where(a == 0, 0.0, prod)


def _xlogy(a: object, b: object) -> np.ndarray:
    """a * log(b), 0 where a == 0."""
    a, b = np.broadcast_arrays(_f64(a), _f64(b))
    with np.errstate(divide="ignore", invalid="ignore"):
        logb = np.log(b)
    return _mul0(a, logb)


def _reduce(per: np.ndarray, reduction: str, denom: float | None = None) -> np.ndarray:
    if reduction == "none":
        return per
    total = per.sum()
    if reduction == "sum":
        return np.asarray(total)
    if reduction != "mean":
        raise ValueError(reduction)
    d = float(per.size) if denom is None else float(denom)
    if d == 0.0:
        return np.asarray(0.0)
    return np.asarray(total / d)


# --------------------------------------------------------------------------- primitives


def logsumexp(x: object, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    x = _f64(x)
    m = np.max(x, axis=axis, keepdims=True) if x.shape[axis] else None
    if m is None:  # empty class axis: log(0)
        out = np.full(np.delete(np.array(x.shape), axis % x.ndim), -np.inf)
        return np.expand_dims(out, axis) if keepdims else out
    m_safe = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        s = np.log(np.exp(x - m_safe).sum(axis=axis, keepdims=True)) + m_safe
    return s if keepdims else np.squeeze(s, axis=axis)


def log_softmax(x: object, axis: int = -1) -> np.ndarray:
    x = _f64(x)
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x: object, axis: int = -1) -> np.ndarray:
    x = _f64(x)
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softplus(x: object) -> np.ndarray:
    x = _f64(x)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def sigmoid(x: object) -> np.ndarray:
    x = _f64(x)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def log_sigmoid(x: object) -> np.ndarray:
    return -softplus(-_f64(x))


# ------------------------------------------------------------------- information theory


def information(p: object, base: float | None = None) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return -np.log(_f64(p)) / _log_base(base)


def entropy(p: object, axis: int = -1, base: float | None = None) -> np.ndarray:
    p = _f64(p)
    return -_xlogy(p, p).sum(axis=axis) / _log_base(base)


def binary_entropy(p: object, base: float | None = None) -> np.ndarray:
    p = _f64(p)
    return -(_xlogy(p, p) + _xlogy(1.0 - p, 1.0 - p)) / _log_base(base)


def kl_divergence(p: object, q: object, axis: int = -1, base: float | None = None) -> np.ndarray:
    p, q = np.broadcast_arrays(_f64(p), _f64(q))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = p * (np.log(p) - np.log(q))
    terms = np.where(p == 0, 0.0, terms)
    return terms.sum(axis=axis) / _log_base(base)


def cross_entropy(p: object, q: object, axis: int = -1, base: float | None = None) -> np.ndarray:
    return -_xlogy(p, q).sum(axis=axis) / _log_base(base)


# ----------------------------------------------------------------------------- losses


def _weights(weight: object | None, c: int) -> np.ndarray:
    return np.ones(c) if weight is None else _f64(weight)


def softmax_cross_entropy(
    logits, labels, axis=-1, weight=None, label_smoothing=0.0, reduction="mean"
) -> np.ndarray:
    x = np.moveaxis(_f64(logits), axis, -1)
    y = np.moveaxis(_f64(labels), axis, -1)
    c = x.shape[-1]
    w = _weights(weight, c)
    eps = label_smoothing
    ys = (1.0 - eps) * y + eps / c
    lp = log_softmax(x, axis=-1)
    per = -_mul0(ys * w, lp).sum(axis=-1)
    return _reduce(per, reduction)  # mean over examples, weights not normalised


def sparse_softmax_cross_entropy(
    logits,
    labels,
    axis=-1,
    weight=None,
    ignore_index=-100,
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    reduction="mean",
) -> np.ndarray:
    x = np.moveaxis(_f64(logits), axis, -1)
    lab = np.asarray(labels)
    c = x.shape[-1]
    w = _weights(weight, c)
    if softcap is not None:
        x = softcap * np.tanh(x / softcap)
    lead = x.shape[:-1]
    rows = x.reshape(-1, c)
    flat_lab = lab.reshape(-1)
    eps = label_smoothing
    per = np.zeros(rows.shape[0])
    denom = 0.0
    for i in range(rows.shape[0]):
        t = int(flat_lab[i])
        if t == ignore_index:
            continue
        row = rows[i]
        lse = float(logsumexp(row))
        lp = row - lse
        nll = float(_mul0(w[t], -lp[t]))
        smooth = float(_mul0(w, -lp).sum())
        li = float(_mul0(1.0 - eps, nll)) + float(_mul0(eps / c, smooth))
        if z_loss:
            li += z_loss * w[t] * lse**2
        per[i] = li
        denom += w[t]
    return _reduce(per.reshape(lead), reduction, denom=denom)


def sigmoid_cross_entropy(logits, labels, pos_weight=None, weight=None, reduction="mean"):
    x = _f64(logits)
    y = _f64(labels)
    pw = 1.0 if pos_weight is None else _f64(pos_weight)
    per = _mul0(pw * y, softplus(-x)) + _mul0(1.0 - y, softplus(x))
    if weight is not None:
        per = per * _f64(weight)
    per = np.broadcast_to(per, np.broadcast_shapes(x.shape, y.shape)).copy()
    return _reduce(per, reduction)


def binary_cross_entropy(probs, labels, eps=None, weight=None, reduction="mean"):
    p = _f64(probs)
    y = _f64(labels)
    with np.errstate(divide="ignore"):
        if eps is None:
            lp = np.maximum(np.log(p), -100.0)
            l1p = np.maximum(np.log(1.0 - p), -100.0)
        else:
            pc = np.clip(p, eps, 1.0 - eps)
            lp = np.log(pc)
            l1p = np.log(1.0 - pc)
    per = -(y * lp + (1.0 - y) * l1p)
    if weight is not None:
        per = per * _f64(weight)
    return _reduce(per, reduction)


def nll_loss(log_probs, labels, axis=-1, weight=None, ignore_index=-100, reduction="mean"):
    lp = np.moveaxis(_f64(log_probs), axis, -1)
    lab = np.asarray(labels)
    c = lp.shape[-1]
    w = _weights(weight, c)
    rows = lp.reshape(-1, c)
    flat = lab.reshape(-1)
    per = np.zeros(rows.shape[0])
    denom = 0.0
    for i in range(rows.shape[0]):
        t = int(flat[i])
        if t == ignore_index:
            continue
        per[i] = float(_mul0(w[t], -rows[i, t]))
        denom += w[t]
    return _reduce(per.reshape(lp.shape[:-1]), reduction, denom=denom)


def mse(input, target, reduction="mean"):
    d = _f64(input) - _f64(target)
    return _reduce(d * d, reduction)


def l1(input, target, reduction="mean"):
    return _reduce(np.abs(_f64(input) - _f64(target)), reduction)


def smooth_l1(input, target, beta=1.0, reduction="mean"):
    a = np.abs(_f64(input) - _f64(target))
    per = np.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)
    return _reduce(per, reduction)


def huber(input, target, delta=1.0, reduction="mean"):
    a = np.abs(_f64(input) - _f64(target))
    per = np.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta))
    return _reduce(per, reduction)


LOSSES: dict[str, Callable[..., np.ndarray]] = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "sparse_softmax_cross_entropy": sparse_softmax_cross_entropy,
    "sigmoid_cross_entropy": sigmoid_cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
    "nll_loss": nll_loss,
    "mse": mse,
    "l1": l1,
    "smooth_l1": smooth_l1,
    "huber": huber,
}


# ------------------------------------------------------------------ analytic gradients
# Gradient of the *reduced* loss (of loss.sum() for reduction="none") w.r.t. the first
# argument, derived by hand from the formulas above.


def _mean_scale(reduction: str, denom: float) -> float:
    if reduction in ("sum", "none"):
        return 1.0
    return 0.0 if denom == 0 else 1.0 / denom


def grad_softmax_cross_entropy(
    logits, labels, axis=-1, weight=None, label_smoothing=0.0, reduction="mean"
) -> np.ndarray:
    x = np.moveaxis(_f64(logits), axis, -1)
    y = np.moveaxis(_f64(labels), axis, -1)
    c = x.shape[-1]
    w = _weights(weight, c)
    a = ((1.0 - label_smoothing) * y + label_smoothing / c) * w
    s = np.exp(log_softmax(x, axis=-1))
    g = a.sum(axis=-1, keepdims=True) * s - a
    n = int(np.prod(x.shape[:-1]))
    g = g * _mean_scale(reduction, n)
    return np.moveaxis(g, -1, axis)


def grad_sparse_softmax_cross_entropy(
    logits,
    labels,
    axis=-1,
    weight=None,
    ignore_index=-100,
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    reduction="mean",
) -> np.ndarray:
    x0 = np.moveaxis(_f64(logits), axis, -1)
    c = x0.shape[-1]
    w = _weights(weight, c)
    x = x0 if softcap is None else softcap * np.tanh(x0 / softcap)
    rows = x.reshape(-1, c)
    flat = np.asarray(labels).reshape(-1)
    eps = label_smoothing
    g = np.zeros_like(rows)
    denom = 0.0
    for i in range(rows.shape[0]):
        t = int(flat[i])
        if t == ignore_index:
            continue
        lse = float(logsumexp(rows[i]))
        s = np.exp(rows[i] - lse)
        a = (eps / c) * w
        a[t] += (1.0 - eps) * w[t]
        g[i] = a.sum() * s - a + 2.0 * z_loss * w[t] * lse * s
        denom += w[t]
    g = g.reshape(x.shape) * _mean_scale(reduction, denom)
    if softcap is not None:
        g = g * (1.0 - np.tanh(x0 / softcap) ** 2)
    return np.moveaxis(g, -1, axis)


def grad_sigmoid_cross_entropy(logits, labels, pos_weight=None, weight=None, reduction="mean"):
    x = _f64(logits)
    y = _f64(labels)
    pw = 1.0 if pos_weight is None else _f64(pos_weight)
    g = -_mul0(pw * y, sigmoid(-x)) + (1.0 - y) * sigmoid(x)
    if weight is not None:
        g = g * _f64(weight)
    g = np.broadcast_to(g, x.shape)
    return g * _mean_scale(reduction, x.size)


def grad_binary_cross_entropy(probs, labels, eps=None, weight=None, reduction="mean"):
    """Valid away from the clamp (p > e**-100) and, for float eps, off the clip edges."""
    p = _f64(probs)
    y = _f64(labels)
    g = -y / p + (1.0 - y) / (1.0 - p)
    if eps is not None:
        g = np.where((p < eps) | (p > 1.0 - eps), 0.0, g)
    if weight is not None:
        g = g * _f64(weight)
    g = np.broadcast_to(g, p.shape)
    return g * _mean_scale(reduction, p.size)


def grad_nll_loss(log_probs, labels, axis=-1, weight=None, ignore_index=-100, reduction="mean"):
    lp = np.moveaxis(_f64(log_probs), axis, -1)
    c = lp.shape[-1]
    w = _weights(weight, c)
    flat = np.asarray(labels).reshape(-1)
    g = np.zeros((flat.size, c))
    denom = 0.0
    for i, t in enumerate(flat):
        t = int(t)
        if t == ignore_index:
            continue
        g[i, t] = -w[t]
        denom += w[t]
    g = g.reshape(lp.shape) * _mean_scale(reduction, denom)
    return np.moveaxis(g, -1, axis)


def grad_mse(input, target, reduction="mean"):
    d = _f64(input) - _f64(target)
    return 2.0 * d * _mean_scale(reduction, d.size)


def grad_l1(input, target, reduction="mean"):
    d = _f64(input) - _f64(target)
    return np.sign(d) * _mean_scale(reduction, d.size)


def grad_smooth_l1(input, target, beta=1.0, reduction="mean"):
    d = _f64(input) - _f64(target)
    g = np.where(np.abs(d) < beta, d / beta, np.sign(d))
    return g * _mean_scale(reduction, d.size)


def grad_huber(input, target, delta=1.0, reduction="mean"):
    d = _f64(input) - _f64(target)
    g = np.where(np.abs(d) <= delta, d, delta * np.sign(d))
    return g * _mean_scale(reduction, d.size)


GRADIENTS: dict[str, Callable[..., np.ndarray]] = {
    "softmax_cross_entropy": grad_softmax_cross_entropy,
    "sparse_softmax_cross_entropy": grad_sparse_softmax_cross_entropy,
    "sigmoid_cross_entropy": grad_sigmoid_cross_entropy,
    "binary_cross_entropy": grad_binary_cross_entropy,
    "nll_loss": grad_nll_loss,
    "mse": grad_mse,
    "l1": grad_l1,
    "smooth_l1": grad_smooth_l1,
    "huber": grad_huber,
}


def numerical_grad(f: Callable[[np.ndarray], object], x: object, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of sum(f(x)) w.r.t. x, one coordinate at a time."""
    x = _f64(x).copy()
    g = np.zeros_like(x)
    flat_x = x.reshape(-1)
    flat_g = g.reshape(-1)
    for k in range(flat_x.size):
        old = flat_x[k]
        flat_x[k] = old + h
        up = float(np.sum(f(x)))
        flat_x[k] = old - h
        down = float(np.sum(f(x)))
        flat_x[k] = old
        flat_g[k] = (up - down) / (2.0 * h)
    return g
