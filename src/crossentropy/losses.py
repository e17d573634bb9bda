"""Every loss of the cross-entropy family, and the regression losses it is compared with.

Each loss is computed in two steps that :mod:`crossentropy.gradients` shares:

1. a ``..._terms`` function (``softmax_cross_entropy_terms`` for ``softmax_cross_entropy``,
   and so on, with the loss's arguments) validates the input, moves the class axis last,
   upcasts half precision to float32 and computes the per-example loss together with the
   pieces its derivative needs (log-probabilities, masks, weights, the mean's denominator),
   returned as the family's :class:`Terms` (a frozen dataclass whose fields are exactly
   what the gradient reads);
2. :meth:`Terms.reduced` applies the reduction.

A regression loss is described once by a :class:`RegressionLoss`: its value and its
derivative in ``d = input - target``, side by side.

Conventions, decided once for every loss:

- ``reduction="mean"`` divides by the number of examples, or, for integer labels, by the
  summed class weight of the counted (not ignored) targets, as PyTorch does. A mean over
  nothing (an empty batch, every target ignored, zero total weight) is 0, never NaN.
- A term ``0 · log 0`` or ``0 · inf`` (zero label mass on a ``-inf`` logit, a zero weight on
  an infinite loss) is 0: such entries are selected away with ``where``, never multiplied.
- float16/bfloat16 inputs are computed in float32 and the result is cast back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from . import _validate
from ._array import (
    Array,
    core_log_softmax,
    from_compute,
    move_axis_last,
    namespace,
    quiet,
    result_dtype,
    shift_and_log_sum,
    size,
    softplus,
    to_compute,
    wide_labels,
)

# the nine losses, and what crossentropy.gradients differentiates: each loss's terms
# (``<loss>_terms`` with the loss's arguments) and the shared rules
__all__ = [
    "LOG_CLAMP",
    "BinaryTerms",
    "DistillationTerms",
    "NllTerms",
    "RegressionLoss",
    "RegressionTerms",
    "SigmoidTerms",
    "SoftmaxTerms",
    "SparseSoftmaxTerms",
    "Terms",
    "binary_cross_entropy",
    "binary_cross_entropy_terms",
    "distillation_loss",
    "distillation_loss_terms",
    "huber",
    "huber_terms",
    "l1",
    "l1_terms",
    "mean_scale",
    "mse",
    "mse_terms",
    "nll_loss",
    "nll_loss_terms",
    "reduction_scale",
    "safe_mean",
    "sigmoid_cross_entropy",
    "sigmoid_cross_entropy_terms",
    "smooth_l1",
    "smooth_l1_terms",
    "softmax_cross_entropy",
    "softmax_cross_entropy_terms",
    "sparse_softmax_cross_entropy",
    "sparse_softmax_cross_entropy_terms",
    "times",
]

# ----------------------------------------------------------------------------------------
# shared pieces


def _zeros(x: Array, xp: Any) -> Array:
    return xp.zeros_like(x)


def times(coefficient: Array, value: Array, xp: Any) -> Array:
    """coefficient · value, with 0 wherever the coefficient is 0 and the value is a number
    (±inf included); a NaN value stays NaN: an undefined input is never hidden."""
    zero = (coefficient == 0) & ~xp.isnan(value)
    return xp.where(zero, _zeros(value * coefficient, xp), coefficient * value)


def safe_mean(total: Array, count: Array, xp: Any) -> Array:
    """total / count, or 0 when count is 0: a mean over nothing (an empty batch, every
    target ignored, zero total weight) is 0 and has zero gradient. Every mean of the
    library is taken through this function or :func:`mean_scale` (the PyTorch layer's
    too, on tensors or on the host).

    The count is a summed weight: negative class weights can make it negative, and then it
    is divided by like any other non-zero total, as PyTorch does.
    """
    nonzero = count != 0
    safe = xp.where(nonzero, count, xp.ones_like(count))
    return xp.where(nonzero, total / safe, xp.zeros_like(total))


def mean_scale(count: Array, xp: Any) -> Array:
    """d(mean)/d(each term): 1 / count, or 0 when count is 0 (:func:`safe_mean` of 1)."""
    return safe_mean(xp.ones_like(count), count, xp)


def _reduce(per_example: Array, reduction: str, count: Array, xp: Any) -> Array:
    if reduction == "none":
        return per_example
    total = xp.sum(per_example)
    if reduction == "sum":
        return total
    return total * mean_scale(count, xp)


def reduction_scale(reduction: str, count: Array, xp: Any) -> Array | float:
    """d(reduced loss) / d(per-example loss); ``"none"`` is treated as ``"sum"``."""
    return mean_scale(count, xp) if reduction == "mean" else 1.0


def _as_float(name: str, x: Array, like: Array, xp: Any) -> Array:
    """``x`` converted to ``like``'s (compute) dtype."""
    _validate.floating(name, x, xp)
    return x if x.dtype == like.dtype else xp.astype(x, like.dtype)


def _count(n: int, like: Array, xp: Any) -> Array:
    return xp.asarray(float(n), dtype=like.dtype)


@dataclass(frozen=True)
class Terms:
    """A loss's per-example values; each family's subclass adds what its derivative needs.

    ``x`` is the first argument in its compute dtype with the class axis last; ``axis`` is
    where that axis was; ``dtype`` is the dtype results are returned in; ``count`` is the
    mean's denominator.
    """

    xp: Any
    x: Array
    axis: int
    dtype: Any
    per_example: Array
    count: Array

    def reduced(self, reduction: str) -> Array:
        """The loss under ``reduction``, in the dtype results are returned in."""
        return from_compute(
            _reduce(self.per_example, reduction, self.count, self.xp), self.dtype, self.xp
        )


def _logits(name: str, logits: Array, axis: int, xp: Any) -> tuple[Array, int, Any]:
    _validate.floating(name, logits, xp)
    _validate.at_least_1d(name, logits)
    axis = _validate.axis(name, axis, logits.ndim)
    dtype = result_dtype(logits, xp)
    return move_axis_last(to_compute(logits, xp), axis, xp), axis, dtype


def _class_weight(weight: Array | None, x: Array, xp: Any) -> Array | None:
    if weight is None:
        return None
    _validate.class_weight(weight, int(x.shape[-1]))
    return _as_float("weight", weight, x, xp)


def _onehot(labels: Array, num_classes: int, xp: Any) -> Array:
    """Boolean (..., C): True at each label's class (nowhere for an ignored label)."""
    classes = xp.arange(num_classes, dtype=labels.dtype, device=_device(labels))
    return xp.expand_dims(labels, axis=-1) == classes


def _device(x: Array) -> Any:
    import array_api_compat

    return array_api_compat.device(x)


def _pick(values: Array, onehot: Array, xp: Any) -> Array:
    """values[..., label] for each row (0 where the row has no label)."""
    return xp.sum(xp.where(onehot, values, _zeros(values, xp)), axis=-1)


def _integer_labels(
    labels: Array,
    logits_shape: tuple[int, ...],
    axis: int,
    x: Array,
    ignore_index: int | None,
    xp: Any,
) -> tuple[Array, Array]:
    """Validated labels, their one-hot mask (nowhere on an ignored row) and the mask of
    counted rows. The labels are compared in a wide integer dtype whatever theirs (see
    :func:`wide_labels`); an ``ignore_index`` outside that dtype equals no label."""
    _validate.label_shape(logits_shape, axis, labels)
    labels = wide_labels(labels, xp)
    num_classes = int(x.shape[-1])
    _validate.integer_labels(labels, num_classes, ignore_index, xp)
    counted = ~_validate.ignored(labels, ignore_index, xp)
    onehot = _onehot(labels, num_classes, xp) & xp.expand_dims(counted, axis=-1)
    return onehot, counted


# ----------------------------------------------------------------------------------------
# softmax cross entropy with soft (dense) labels


@dataclass(frozen=True)
class SoftmaxTerms(Terms):
    """:func:`softmax_cross_entropy`'s terms: ``mass`` a_c = w_c y'_c, the smoothed and
    weighted label mass of each class, and ``log_probs`` = log softmax(x)."""

    mass: Array
    log_probs: Array


def softmax_cross_entropy_terms(
    logits: Array,
    labels: Array,
    *,
    axis: int,
    weight: Array | None,
    label_smoothing: float,
    reduction: str,
) -> SoftmaxTerms:
    _validate.reduction(reduction)
    eps = _validate.label_smoothing(label_smoothing)
    xp, (logits, labels, weight) = namespace(
        logits, labels, weight, names=("logits", "labels", "weight"), optional=("weight",)
    )
    _validate.same_shape("logits", logits, "labels", labels)
    x, axis, dtype = _logits("logits", logits, axis, xp)
    y = _as_float("labels", move_axis_last(labels, axis, xp), x, xp)
    _validate.probabilities("labels", y, xp)
    w = _class_weight(weight, x, xp)
    num_classes = int(x.shape[-1])
    if eps > 0 and num_classes > 0:  # no classes: no mass to smooth
        y = (1.0 - eps) * y + eps / num_classes
    # a_c = w_c y'_c is the mass each class's log-probability is weighted with
    a = y if w is None else w * y
    log_probs = core_log_softmax(x, -1, xp)
    per_example = -xp.sum(times(a, log_probs, xp), axis=-1)
    count = _count(size(per_example), x, xp)
    return SoftmaxTerms(xp, x, axis, dtype, per_example, count, mass=a, log_probs=log_probs)


@quiet
def softmax_cross_entropy(
    logits: Array,
    labels: Array,
    *,
    axis: int = -1,
    weight: Array | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Array:
    r"""Softmax cross entropy with soft (probability or one-hot) labels.

    .. math::

        \ell = -\sum_c w_c\, y'_c \log \operatorname{softmax}(x)_c, \qquad
        y' = (1 - \varepsilon)\, y + \varepsilon / C

    Args:
        logits: unnormalised scores, shape (..., C) with the classes along ``axis``.
        labels: a distribution over the classes for each example, the shape of ``logits``.
            Labels that do not sum to one are used as given.
        axis: the class axis.
        weight: per-class weights w, shape (C,); ``None`` for all ones.
        label_smoothing: epsilon in [0, 1], mixing the labels with the uniform distribution.
        reduction: ``"mean"`` over examples, ``"sum"``, or ``"none"`` for per-example losses.

    Returns:
        The reduced loss, or the per-example losses (the class axis removed).

    Example:
        >>> import numpy as np
        >>> from crossentropy import softmax_cross_entropy
        >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
        >>> labels = np.array([[1.0, 0.0, 0.0], [0.0, 0.8, 0.2]])
        >>> print(np.round(softmax_cross_entropy(logits, labels, reduction="none"), 4))
        [0.417 0.66 ]

    References:
        optax.softmax_cross_entropy; torch.nn.functional.cross_entropy with class
        probabilities; C. Szegedy et al., "Rethinking the Inception Architecture", 2016
        (label smoothing).
    """
    t = softmax_cross_entropy_terms(
        logits,
        labels,
        axis=axis,
        weight=weight,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
    return t.reduced(reduction)


# ----------------------------------------------------------------------------------------
# softmax cross entropy with integer (sparse) labels


@dataclass(frozen=True)
class SparseSoftmaxTerms(Terms):
    """:func:`sparse_softmax_cross_entropy`'s terms (names as in its formula).

    ``z`` the soft-capped logits (the logits when ``cap`` is ``None``), ``lse`` their
    logsumexp per row, ``log_probs`` = z - lse; ``onehot`` the label's class in each counted
    row; ``live`` the rows that contribute (counted, and of non-zero weight unless smoothing
    spreads some); ``w_target`` w_y per row (0 on ignored rows), ``w`` the class weights or
    ``None``; ``eps`` the label smoothing, ``smooth`` = eps / C; ``z_loss`` lambda_z.
    """

    z: Array
    cap: float | None
    lse: Array
    log_probs: Array
    onehot: Array
    live: Array
    w_target: Array
    w: Array | None
    eps: float
    smooth: float
    z_loss: float


def sparse_softmax_cross_entropy_terms(
    logits: Array,
    labels: Array,
    *,
    axis: int,
    weight: Array | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    reduction: str,
) -> SparseSoftmaxTerms:
    _validate.reduction(reduction)
    eps = _validate.label_smoothing(label_smoothing)
    z_coef = _validate.z_loss(z_loss)
    cap = _validate.softcap(softcap)
    ignore_index = _validate.ignore_index(ignore_index)
    xp, (logits, labels, weight) = namespace(
        logits, labels, weight, names=("logits", "labels", "weight"), optional=("weight",)
    )
    shape = tuple(logits.shape)
    x, axis, dtype = _logits("logits", logits, axis, xp)
    onehot, counted = _integer_labels(labels, shape, axis, x, ignore_index, xp)
    w = _class_weight(weight, x, xp)
    # eps/C of each class; with no classes every label is ignored and there is nothing
    # to smooth
    smooth = eps / int(x.shape[-1]) if int(x.shape[-1]) > 0 else 0.0
    ones = xp.ones(onehot.shape[:-1], dtype=x.dtype, device=_device(x))
    w_target = ones if w is None else _pick(xp.broadcast_to(w, x.shape), onehot, xp)
    w_target = xp.where(counted, w_target, _zeros(w_target, xp))
    # rows that cannot contribute (ignored; zero weight without smoothing) are replaced by
    # zeros before any math: their loss is 0 either way, and autograd through the core then
    # never meets log(0) or inf - inf in them (an all -inf ignored row gave NaN gradients)
    live = counted if eps > 0 else counted & (w_target != 0)
    x = xp.where(xp.expand_dims(live, axis=-1), x, _zeros(x, xp))

    z = x if cap is None else cap * xp.tanh(x / cap)
    shift, log_sum = shift_and_log_sum(z, -1, xp)
    log_probs = (z - shift) - log_sum
    lse = xp.squeeze(shift + log_sum, axis=-1)

    # l = (1-eps) w_y (-log p_y) + (eps/C) sum_c w_c (-log p_c) + z_loss w_y lse^2
    loss = times((1.0 - eps) * w_target, -_pick(log_probs, onehot, xp), xp)
    if eps > 0:
        w_all = xp.ones_like(x) if w is None else xp.broadcast_to(w, x.shape)
        loss = loss + smooth * xp.sum(times(w_all, -log_probs, xp), axis=-1)
    if z_coef > 0:
        loss = loss + times(z_coef * w_target, lse * lse, xp)
    per_example = xp.where(counted, loss, _zeros(loss, xp))
    return SparseSoftmaxTerms(
        xp,
        x,
        axis,
        dtype,
        per_example,
        xp.sum(w_target),
        z=z,
        cap=cap,
        lse=lse,
        log_probs=log_probs,
        onehot=onehot,
        live=live,
        w_target=w_target,
        w=w,
        eps=eps,
        smooth=smooth,
        z_loss=z_coef,
    )


@quiet
def sparse_softmax_cross_entropy(
    logits: Array,
    labels: Array,
    *,
    axis: int = -1,
    weight: Array | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Softmax cross entropy with integer class labels.

    .. math::

        z = c \tanh(x / c), \qquad \log p = z - \operatorname{logsumexp}(z)

        \ell_i = (1 - \varepsilon)\, w_{y_i} (-\log p_{i y_i})
               + \frac{\varepsilon}{C} \sum_c w_c (-\log p_{ic})
               + \lambda_z\, w_{y_i} \operatorname{logsumexp}(z_i)^2

    The soft-capping (``softcap=c``) is skipped when ``c`` is ``None``. With
    ``reduction="mean"`` the sum is divided by the summed weight of the counted targets,
    sum_i w_{y_i} over rows whose label is not ``ignore_index`` (PyTorch's rule); the z-loss
    term is weighted like its row, so with no class weights it is averaged over the counted
    tokens (PaLM's z-loss).

    Args:
        logits: unnormalised scores, shape (..., C) with the classes along ``axis``.
        labels: integer class indices in [0, C), the shape of ``logits`` without ``axis``.
            Entries equal to ``ignore_index`` contribute zero loss and zero gradient.
        axis: the class axis.
        weight: per-class weights, shape (C,); ``None`` for all ones.
        ignore_index: the label value that marks a target to skip.
        label_smoothing: epsilon in [0, 1].
        z_loss: lambda_z >= 0, the weight of the log-partition penalty logsumexp(z)^2.
        softcap: c > 0 to soft-cap the logits to (-c, c) first, or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per example, the class axis removed).

    Returns:
        The reduced loss, or the per-example losses.

    Example:
        >>> import numpy as np
        >>> from crossentropy import sparse_softmax_cross_entropy
        >>> logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3], [9.0, 0.0, 0.0]])
        >>> labels = np.array([0, 1, -100])
        >>> print(f"{float(sparse_softmax_cross_entropy(logits, labels)):.4f}")
        0.3185

    References:
        optax.softmax_cross_entropy_with_integer_labels; torch.nn.functional.cross_entropy;
        A. Chowdhery et al., "PaLM", 2022 (z-loss); Gemma 2 report, 2024 (logit soft-capping).
    """
    t = sparse_softmax_cross_entropy_terms(
        logits,
        labels,
        axis=axis,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        reduction=reduction,
    )
    return t.reduced(reduction)


# ----------------------------------------------------------------------------------------
# negative log likelihood on log-probabilities


@dataclass(frozen=True)
class NllTerms(Terms):
    """:func:`nll_loss`'s terms: ``onehot`` the label's class in each counted row, and
    ``w_target`` w_y per row (0 on ignored rows)."""

    onehot: Array
    w_target: Array


def nll_loss_terms(
    log_probs: Array,
    labels: Array,
    *,
    axis: int,
    weight: Array | None,
    ignore_index: int,
    reduction: str,
) -> NllTerms:
    _validate.reduction(reduction)
    ignore_index = _validate.ignore_index(ignore_index)
    xp, (log_probs, labels, weight) = namespace(
        log_probs, labels, weight, names=("log_probs", "labels", "weight"), optional=("weight",)
    )
    shape = tuple(log_probs.shape)
    x, axis, dtype = _logits("log_probs", log_probs, axis, xp)
    onehot, counted = _integer_labels(labels, shape, axis, x, ignore_index, xp)
    w = _class_weight(weight, x, xp)
    ones = xp.ones(onehot.shape[:-1], dtype=x.dtype, device=_device(x))
    w_target = ones if w is None else _pick(xp.broadcast_to(w, x.shape), onehot, xp)
    w_target = xp.where(counted, w_target, _zeros(w_target, xp))
    per_example = times(w_target, -_pick(x, onehot, xp), xp)
    count = xp.sum(w_target)
    return NllTerms(xp, x, axis, dtype, per_example, count, onehot=onehot, w_target=w_target)


@quiet
def nll_loss(
    log_probs: Array,
    labels: Array,
    *,
    axis: int = -1,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Array:
    r"""Negative log likelihood of integer labels under given log-probabilities.

    .. math::

        \ell_i = -w_{y_i} \log p_{i y_i}

    With ``reduction="mean"`` the sum is divided by sum_i w_{y_i} over counted targets.
    ``nll_loss(log_softmax(x), y)`` equals ``sparse_softmax_cross_entropy(x, y)``.

    Args:
        log_probs: log-probabilities, shape (..., C) with the classes along ``axis``.
        labels: integer class indices in [0, C) or ``ignore_index``, the shape of
            ``log_probs`` without ``axis``.
        axis: the class axis.
        weight: per-class weights, shape (C,).
        ignore_index: the label value that marks a target to skip.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The reduced loss, or the per-example losses.

    Example:
        >>> import numpy as np
        >>> from crossentropy import nll_loss
        >>> log_probs = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]))
        >>> print(f"{float(nll_loss(log_probs, np.array([0, 1]))):.4f}")
        0.2899

    References:
        torch.nn.functional.nll_loss.
    """
    t = nll_loss_terms(
        log_probs, labels, axis=axis, weight=weight, ignore_index=ignore_index, reduction=reduction
    )
    return t.reduced(reduction)


# ----------------------------------------------------------------------------------------
# distillation: a student's softmax towards a teacher's


@dataclass(frozen=True)
class DistillationTerms(Terms):
    """:func:`distillation_loss`'s terms: the settings (``divergence`` with the convention
    applied, ``beta``, ``temperature``, the weights), ``log_ps``/``log_pt`` the student's
    and the teacher's log-softmax at temperature T and ``ps``/``pt`` their exponentials,
    ``coefficient`` a_k (the gradient's per-class coefficient; ``None`` for forward KL),
    ``row_term`` R = sum_k p_s,k a_k (per row), ``hard_log_probs`` the student's
    log-softmax at temperature 1 and ``onehot`` its target (``None`` without a hard
    weight), ``live`` the counted rows."""

    divergence: str
    beta: float
    temperature: float
    soft_weight: float
    hard_weight: float
    log_ps: Array
    log_pt: Array
    ps: Array
    pt: Array
    coefficient: Array | None
    row_term: Array
    hard_log_probs: Array | None
    onehot: Array | None
    live: Array


def _with_mass(p: Array, value: Array, xp: Any) -> Array:
    """p · value, exactly 0 where p is 0 whatever the value (never 0 · -inf); a NaN p
    stays NaN."""
    return xp.where(p == 0, _zeros(p, xp), p * value)


def _teacher_logits(t: Array, s: Array, x: Array, xp: Any) -> Array:
    """The teacher's logits checked against the student's (floating, same shape, the
    vocabularies named when they differ), in the student's compute dtype."""
    _validate.floating("teacher_logits", t, xp)
    _validate.at_least_1d("teacher_logits", t)
    if int(t.shape[-1]) != int(s.shape[-1]):
        raise ValueError(
            f"teacher_logits: expected the student's vocabulary size {int(s.shape[-1])} "
            f"(student_logits of shape {tuple(s.shape)}); got {int(t.shape[-1])} (shape "
            f"{tuple(t.shape)}): teacher and student must share a vocabulary"
        )
    _validate.same_shape("student_logits", s, "teacher_logits", t)
    return _as_float("teacher_logits", to_compute(t, xp), x, xp)


def _target_labels(
    y: Array, shape: tuple[int, ...], ignore_index: int, xp: Any
) -> tuple[Array, Array]:
    """The target checked by the name ``target`` (integer, shape (...), in [0, V) or
    ``ignore_index``): its one-hot mask (nowhere on an ignored token) and the mask of the
    counted tokens."""
    if tuple(y.shape) != shape[:-1]:
        raise ValueError(
            f"target: expected shape {shape[:-1]} (student_logits' shape {shape} without "
            f"the class axis, the last); got {tuple(y.shape)}"
        )
    y = wide_labels(y, xp, name="target")
    _validate.integer_labels(y, shape[-1], ignore_index, xp, name="target")
    live = ~_validate.ignored(y, ignore_index, xp)
    onehot = _onehot(y, shape[-1], xp) & xp.expand_dims(live, axis=-1)
    return onehot, live


def distillation_loss_terms(
    student_logits: Array,
    teacher_logits: Array,
    target: Array | None,
    *,
    divergence: str,
    beta: float,
    temperature: float,
    ignore_index: int,
    soft_weight: float,
    hard_weight: float,
    reduction: str,
) -> DistillationTerms:
    _validate.reduction(reduction)
    name, b, temp, soft, hard = _validate.distillation(
        divergence, beta, temperature, soft_weight, hard_weight, has_target=target is not None
    )
    ignore_index = _validate.ignore_index(ignore_index)
    xp, (s, t, y) = namespace(
        student_logits,
        teacher_logits,
        target,
        names=("student_logits", "teacher_logits", "target"),
        optional=("target",),
    )
    shape = tuple(s.shape)
    x, axis, dtype = _logits("student_logits", s, -1, xp)
    v = _teacher_logits(t, s, x, xp)
    if y is None:
        onehot = None
        live = xp.ones(x.shape[:-1], dtype=xp.bool, device=_device(x))
    else:
        onehot, live = _target_labels(y, shape, ignore_index, xp)
    # rows that do not count are replaced by zeros first: their loss is 0 either way
    keep = xp.expand_dims(live, axis=-1)
    x = xp.where(keep, x, _zeros(x, xp))
    v = xp.where(keep, v, _zeros(v, xp))

    def log_softmax(z: Array) -> Array:
        shift, log_sum = shift_and_log_sum(z, -1, xp)
        return (z - shift) - log_sum

    log_ps = log_softmax(x / temp)
    log_pt = log_softmax(v / temp)
    ps, pt = xp.exp(log_ps), xp.exp(log_pt)
    coefficient = None
    if name == "forward_kl":
        d = xp.sum(_with_mass(pt, log_pt - log_ps, xp), axis=-1)
        row_term = _zeros(d, xp)
    elif name == "reverse_kl":
        coefficient = log_ps - log_pt
        d = xp.sum(_with_mass(ps, coefficient, xp), axis=-1)
        row_term = d
    else:
        log_m = xp.logaddexp(log_pt + math.log(b), log_ps + math.log1p(-b))
        coefficient = (1.0 - b) * (log_ps - log_m)
        row_term = xp.sum(_with_mass(ps, coefficient, xp), axis=-1)
        d = b * xp.sum(_with_mass(pt, log_pt - log_m, xp), axis=-1) + row_term
    loss = _zeros(d, xp)
    if soft > 0:
        loss = loss + soft * d
    hard_log_probs = None
    if hard > 0 and onehot is not None:
        hard_log_probs = log_softmax(x)
        loss = loss + hard * -_pick(hard_log_probs, onehot, xp)
    per_example = xp.where(live, loss, _zeros(loss, xp))
    count = xp.sum(xp.astype(live, x.dtype))
    return DistillationTerms(
        xp,
        x,
        axis,
        dtype,
        per_example,
        count,
        divergence=name,
        beta=b,
        temperature=temp,
        soft_weight=soft,
        hard_weight=hard,
        log_ps=log_ps,
        log_pt=log_pt,
        ps=ps,
        pt=pt,
        coefficient=coefficient,
        row_term=row_term,
        hard_log_probs=hard_log_probs,
        onehot=onehot,
        live=live,
    )


@quiet
def distillation_loss(
    student_logits: Array,
    teacher_logits: Array,
    target: Array | None = None,
    *,
    divergence: str = "jsd",
    beta: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int = -100,
    soft_weight: float = 1.0,
    hard_weight: float = 0.0,
    reduction: str = "mean",
) -> Array:
    r"""The distillation loss of a student towards a teacher, from both models' logits.

    Per token (the classes along the last axis), with p_s = softmax(z_s / T) and
    p_t = softmax(z_t / T):

    .. math::

        \ell = w_{soft} D + w_{hard} (-\log \operatorname{softmax}(z_s)_y)

        D_{forward} = \operatorname{KL}(p_t \| p_s), \qquad
        D_{reverse} = \operatorname{KL}(p_s \| p_t)

        D_{jsd} = \beta \operatorname{KL}(p_t \| M) + (1 - \beta) \operatorname{KL}(p_s \| M),
        \qquad M = \beta p_t + (1 - \beta) p_s

    in nats, with log M = logaddexp(log beta + log p_t, log(1 - beta) + log p_s). The jsd
    formula tends to 0 as beta -> 0 or 1; by the convention of TRL's generalized JSD and
    of Liger-Kernel, ``divergence="jsd"`` with beta = 0 is the forward KL and with beta = 1
    the reverse KL. The hard term is the student's cross entropy at temperature 1. No T^2
    factor. A term whose probability is 0 is exactly 0 (never 0 · -inf); a -inf student
    logit where the teacher has mass gives +inf (forward KL); the jsd is finite for finite
    or -inf logits; a NaN logit makes its token's loss NaN.

    Args:
        student_logits: the student's logits, shape (..., V).
        teacher_logits: the teacher's logits, the student's shape.
        target: integer class ids of shape (...), in [0, V) or ``ignore_index``, or
            ``None`` (every token counts; ``hard_weight`` must then be 0).
        divergence: ``"jsd"``, ``"forward_kl"`` or ``"reverse_kl"`` (the KLs ignore
            ``beta``).
        beta: the jsd's weight of the teacher, in [0, 1].
        temperature: T, finite and > 0, dividing both models' logits.
        ignore_index: the target value of tokens to skip (loss 0, not counted).
        soft_weight: the divergence's weight, finite and >= 0.
        hard_weight: the hard term's weight, finite and >= 0; not both weights 0.
        reduction: ``"mean"`` (over the counted tokens; 0 over nothing), ``"sum"`` or
            ``"none"`` (per token).

    Returns:
        The reduced loss, or the per-token losses.

    Example:
        >>> import numpy as np
        >>> from crossentropy import distillation_loss
        >>> student = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
        >>> teacher = np.array([[1.0, 1.0, 1.0], [0.0, 3.0, 0.0]])
        >>> print(f"{float(distillation_loss(student, teacher, divergence='forward_kl')):.4f}")
        0.1644

    References:
        G. Hinton, O. Vinyals, J. Dean, "Distilling the Knowledge in a Neural Network",
        2015; R. Agarwal et al., "On-Policy Distillation of Language Models" (GKD, the
        generalized JSD), 2024; trl.GKDTrainer.generalized_jsd_loss.
    """
    t = distillation_loss_terms(
        student_logits,
        teacher_logits,
        target,
        divergence=divergence,
        beta=beta,
        temperature=temperature,
        ignore_index=ignore_index,
        soft_weight=soft_weight,
        hard_weight=hard_weight,
        reduction=reduction,
    )
    return t.reduced(reduction)


# ----------------------------------------------------------------------------------------
# elementwise losses: sigmoid and binary cross entropy


def _elementwise(
    name: str, x: Array, target_name: str, target: Array, xp: Any
) -> tuple[Array, Array, Any]:
    """First argument and target in the compute dtype, same shape."""
    _validate.floating(name, x, xp)
    _validate.same_shape(name, x, target_name, target)
    dtype = result_dtype(x, xp)
    x = to_compute(x, xp)
    return x, _as_float(target_name, target, x, xp), dtype


def _broadcast_weight(name: str, w: Array | None, x: Array, xp: Any) -> Array | None:
    """An optional weight that broadcasts to ``x``'s shape, in ``x``'s dtype."""
    if w is None:
        return None
    _validate.broadcastable("the input", x, name, w)
    w = _as_float(name, w, x, xp)
    if tuple(xp.broadcast_arrays(x, w)[1].shape) != tuple(x.shape):
        raise ValueError(
            f"{name}: expected a shape that broadcasts to the input's {tuple(x.shape)}; "
            f"got {tuple(w.shape)}"
        )
    return w


@dataclass(frozen=True)
class SigmoidTerms(Terms):
    """:func:`sigmoid_cross_entropy`'s terms: the labels ``y``, ``positive`` = p_w y (the
    positive term's weight), and the elementwise weight ``w`` or ``None``."""

    y: Array
    positive: Array
    w: Array | None


def sigmoid_cross_entropy_terms(
    logits: Array,
    labels: Array,
    *,
    pos_weight: Array | float | None,
    weight: Array | None,
    reduction: str,
) -> SigmoidTerms:
    _validate.reduction(reduction)
    names = ("logits", "labels", "pos_weight", "weight")
    xp, (logits, labels, pos_weight, weight) = namespace(
        logits, labels, pos_weight, weight, names=names, optional=names[2:]
    )
    x, y, dtype = _elementwise("logits", logits, "labels", labels, xp)
    pw = _broadcast_weight("pos_weight", pos_weight, x, xp)
    w = _broadcast_weight("weight", weight, x, xp)
    # -[pw y log s(x) + (1-y) log(1 - s(x))] = pw y softplus(-x) + (1-y) softplus(x)
    positive = y if pw is None else pw * y
    loss = times(positive, softplus(-x, xp), xp) + times(1.0 - y, softplus(x, xp), xp)
    if w is not None:
        loss = times(w, loss, xp)
    per_element = loss if w is None else xp.broadcast_to(loss, x.shape)
    count = _count(size(per_element), x, xp)
    return SigmoidTerms(xp, x, -1, dtype, per_element, count, y=y, positive=positive, w=w)


@quiet
def sigmoid_cross_entropy(
    logits: Array,
    labels: Array,
    *,
    pos_weight: Array | float | None = None,
    weight: Array | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Sigmoid (binary and multi-label) cross entropy on logits, elementwise.

    .. math::

        \ell = -w \,[\, p_w\, y \log \sigma(x) + (1 - y) \log(1 - \sigma(x)) \,]
             = w \,[\, p_w\, y \operatorname{softplus}(-x) + (1 - y) \operatorname{softplus}(x) \,]

    Each element is an independent yes/no question, so n-hot (multi-label) targets work as
    they are. At infinite logits the loss takes its limits: 0 for (+inf, 1) and (-inf, 0),
    +inf for (+inf, 0) and (-inf, 1).

    Args:
        logits: any shape.
        labels: targets in [0, 1], the shape of ``logits``.
        pos_weight: weight p_w of the positive term, broadcast along the last (class)
            axis, e.g. shape (C,); ``None`` for 1. Values > 1 raise recall.
        weight: elementwise weight broadcastable to the logits' shape.
        reduction: ``"mean"`` over all elements, ``"sum"`` or ``"none"``.

    Returns:
        The reduced loss, or the elementwise losses.

    Example:
        >>> import numpy as np
        >>> from crossentropy import sigmoid_cross_entropy
        >>> logits = np.array([[3.0, -1.0, 0.5], [-2.0, 2.0, -0.5]])
        >>> labels = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
        >>> print(np.round(sigmoid_cross_entropy(logits, labels, reduction="none"), 4))
        [[0.0486 0.3133 0.4741]
         [0.1269 0.1269 0.4741]]

    References:
        tf.nn.sigmoid_cross_entropy_with_logits; tf.nn.weighted_cross_entropy_with_logits;
        torch.nn.functional.binary_cross_entropy_with_logits.
    """
    t = sigmoid_cross_entropy_terms(
        logits, labels, pos_weight=pos_weight, weight=weight, reduction=reduction
    )
    return t.reduced(reduction)


LOG_CLAMP = -100.0
"""PyTorch's floor for each log in ``binary_cross_entropy`` when ``eps`` is ``None``."""


def _clamped_log(finite: Array, log: Any, v: Array, neutral: float, xp: Any) -> Array:
    """max(log(v), -100), where ``finite`` marks the entries whose log is finite. The others
    are fed ``neutral`` (whose log is 0) instead, so that autograd through the core never
    differentiates a log at its pole (0 * inf = NaN for p = 0 or p = 1)."""
    floor = xp.full_like(v, LOG_CLAMP)
    safe = xp.where(finite, v, xp.full_like(v, neutral))
    return xp.where(finite, xp.maximum(log(safe), floor), floor)


@dataclass(frozen=True)
class BinaryTerms(Terms):
    """:func:`binary_cross_entropy`'s terms (``x`` holds the probabilities): the labels
    ``y``, the elementwise weight ``w`` or ``None``, and ``eps``, the clipping margin or
    ``None`` for logs clamped at :data:`LOG_CLAMP`."""

    y: Array
    w: Array | None
    eps: float | None


def binary_cross_entropy_terms(
    probs: Array,
    labels: Array,
    *,
    eps: float | None,
    weight: Array | None,
    reduction: str,
) -> BinaryTerms:
    _validate.reduction(reduction)
    if eps is not None:
        eps = _validate.number_in("eps", eps, 0.0, 0.5, what="in [0, 0.5], or None")
    xp, (probs, labels, weight) = namespace(
        probs, labels, weight, names=("probs", "labels", "weight"), optional=("weight",)
    )
    p, y, dtype = _elementwise("probs", probs, "labels", labels, xp)
    _validate.probabilities("probs", p, xp, upper=True)
    _validate.probabilities("labels", y, xp, upper=True)
    w = _broadcast_weight("weight", weight, p, xp)
    if eps is None:
        # each log clamped at -100: finite for p = 0 or 1, and exact elsewhere
        log_p = _clamped_log(p > 0, xp.log, p, 1.0, xp)
        log_q = _clamped_log(p < 1, xp.log1p, -p, 0.0, xp)
    else:
        clipped = xp.clip(p, eps, 1.0 - eps)
        log_p, log_q = xp.log(clipped), xp.log1p(-clipped)
    loss = -(times(y, log_p, xp) + times(1.0 - y, log_q, xp))
    if w is not None:
        loss = xp.broadcast_to(times(w, loss, xp), p.shape)
    count = _count(size(loss), p, xp)
    return BinaryTerms(xp, p, -1, dtype, loss, count, y=y, w=w, eps=eps)


@quiet
def binary_cross_entropy(
    probs: Array,
    labels: Array,
    *,
    eps: float | None = None,
    weight: Array | None = None,
    reduction: str = "mean",
) -> Array:
    r"""Binary cross entropy on probabilities, elementwise.

    .. math::

        \ell = -w \,[\, y \log p + (1 - y) \log(1 - p) \,]

    Probabilities of exactly 0 or 1 make a log infinite. ``eps=None`` clamps each log at
    -100, as PyTorch does; a float ``eps`` clips p to [eps, 1 - eps] first, as
    scikit-learn's ``log_loss`` does. From logits, prefer :func:`sigmoid_cross_entropy`,
    which needs neither.

    Args:
        probs: predicted probabilities in [0, 1], any shape.
        labels: targets in [0, 1], the shape of ``probs``.
        eps: ``None`` or the clipping margin in [0, 0.5].
        weight: elementwise weight broadcastable to the shape of ``probs``.
        reduction: ``"mean"`` over all elements, ``"sum"`` or ``"none"``.

    Returns:
        The reduced loss, or the elementwise losses.

    Example:
        >>> import numpy as np
        >>> from crossentropy import binary_cross_entropy
        >>> probs = np.array([0.9, 0.2, 0.0])
        >>> labels = np.array([1.0, 0.0, 1.0])
        >>> print(np.round(binary_cross_entropy(probs, labels, reduction="none"), 4))
        [  0.1054   0.2231 100.    ]
        >>> print(np.round(binary_cross_entropy(probs, labels, eps=1e-15, reduction="none"), 4))
        [ 0.1054  0.2231 34.5388]

    References:
        torch.nn.functional.binary_cross_entropy; sklearn.metrics.log_loss.
    """
    t = binary_cross_entropy_terms(probs, labels, eps=eps, weight=weight, reduction=reduction)
    return t.reduced(reduction)


# ----------------------------------------------------------------------------------------
# regression losses, for comparison


class RegressionLoss(Protocol):
    """A regression loss as a function of the difference d = input - target: its value per
    element and its derivative d(value)/dd, written side by side in each implementation."""

    def value(self, d: Array, xp: Any) -> Array: ...

    def derivative(self, d: Array, xp: Any) -> Array: ...


@dataclass(frozen=True)
class _Mse:
    """(x - t)^2; derivative 2 (x - t)."""

    def value(self, d: Array, xp: Any) -> Array:
        return d * d

    def derivative(self, d: Array, xp: Any) -> Array:
        return 2.0 * d


@dataclass(frozen=True)
class _L1:
    """|x - t|; (sub)derivative sign(x - t), 0 at x = t."""

    def value(self, d: Array, xp: Any) -> Array:
        return xp.abs(d)

    def derivative(self, d: Array, xp: Any) -> Array:
        return xp.sign(d)


@dataclass(frozen=True)
class _SmoothL1:
    """0.5 d^2 / beta inside |d| < beta, |d| - 0.5 beta outside (L1 for beta = 0);
    derivative d / beta inside, sign(d) outside."""

    beta: float

    def value(self, d: Array, xp: Any) -> Array:
        k, a = self.beta, xp.abs(d)
        return xp.where(a < k, 0.5 * d * d * (1.0 / k if k > 0 else 0.0), a - 0.5 * k)

    def derivative(self, d: Array, xp: Any) -> Array:
        k = self.beta
        return xp.where(xp.abs(d) < k, d / (k if k > 0 else 1.0), xp.sign(d))


@dataclass(frozen=True)
class _Huber:
    """0.5 d^2 inside |d| < delta, delta (|d| - 0.5 delta) outside (delta times smooth L1
    with beta = delta); derivative d inside, delta sign(d) outside."""

    delta: float

    def value(self, d: Array, xp: Any) -> Array:
        k, a = self.delta, xp.abs(d)
        return xp.where(a < k, 0.5 * d * d, (a - 0.5 * k) * k)

    def derivative(self, d: Array, xp: Any) -> Array:
        k = self.delta
        return xp.where(xp.abs(d) < k, d, k * xp.sign(d))


@dataclass(frozen=True)
class RegressionTerms(Terms):
    """A regression loss's terms: the difference ``d`` = input - target and the ``loss``
    whose derivative the gradient takes."""

    d: Array
    loss: RegressionLoss


def _regression_terms(
    loss: RegressionLoss, input: Array, target: Array, reduction: str
) -> RegressionTerms:
    _validate.reduction(reduction)
    xp, (input, target) = namespace(input, target, names=("input", "target"))
    x, t, dtype = _elementwise("input", input, "target", target, xp)
    d = x - t
    per_element = loss.value(d, xp)
    count = _count(size(per_element), x, xp)
    return RegressionTerms(xp, x, -1, dtype, per_element, count, d=d, loss=loss)


def _parameter(name: str, value: object, *, zero_ok: bool) -> float:
    low = 0.0 if zero_ok else float.fromhex("0x1p-1074")
    what = ">= 0" if zero_ok else "> 0"
    return _validate.number_in(name, value, low, float("inf"), what=what)


def mse_terms(input: Array, target: Array, *, reduction: str) -> RegressionTerms:
    return _regression_terms(_Mse(), input, target, reduction)


def l1_terms(input: Array, target: Array, *, reduction: str) -> RegressionTerms:
    return _regression_terms(_L1(), input, target, reduction)


def smooth_l1_terms(input: Array, target: Array, *, beta: float, reduction: str) -> RegressionTerms:
    loss = _SmoothL1(_parameter("beta", beta, zero_ok=True))
    return _regression_terms(loss, input, target, reduction)


def huber_terms(input: Array, target: Array, *, delta: float, reduction: str) -> RegressionTerms:
    loss = _Huber(_parameter("delta", delta, zero_ok=False))
    return _regression_terms(loss, input, target, reduction)


@quiet
def mse(input: Array, target: Array, *, reduction: str = "mean") -> Array:
    r"""Mean squared error (squared L2), elementwise.

    .. math::

        \ell = (x - t)^2

    Args:
        input: predictions, any shape.
        target: targets, the shape of ``input``.
        reduction: ``"mean"`` over all elements, ``"sum"`` or ``"none"``.

    Returns:
        The reduced loss, or the elementwise losses.

    Example:
        >>> import numpy as np
        >>> from crossentropy import mse
        >>> print(f"{float(mse(np.array([0.3, 0.3, 0.4]), np.array([0.0, 0.0, 1.0]))):.2f}")
        0.18

    References:
        torch.nn.functional.mse_loss.
    """
    t = mse_terms(input, target, reduction=reduction)
    return t.reduced(reduction)


@quiet
def l1(input: Array, target: Array, *, reduction: str = "mean") -> Array:
    r"""Absolute error (L1), elementwise.

    .. math::

        \ell = |x - t|

    Args:
        input: predictions, any shape.
        target: targets, the shape of ``input``.
        reduction: ``"mean"`` over all elements, ``"sum"`` or ``"none"``.

    Returns:
        The reduced loss, or the elementwise losses.

    Example:
        >>> import numpy as np
        >>> from crossentropy import l1
        >>> print(f"{float(l1(np.array([0.5, 3.0]), np.array([0.0, 1.0]))):.2f}")
        1.25

    References:
        torch.nn.functional.l1_loss.
    """
    t = l1_terms(input, target, reduction=reduction)
    return t.reduced(reduction)


@quiet
def smooth_l1(input: Array, target: Array, *, beta: float = 1.0, reduction: str = "mean") -> Array:
    r"""Smooth L1: quadratic near zero, linear beyond ``beta``.

    .. math::

        \ell = \begin{cases} 0.5\, d^2 / \beta & |d| < \beta \\
                             |d| - 0.5\, \beta & \text{otherwise} \end{cases},
        \qquad d = x - t

    ``beta=0`` is L1.

    Args:
        input: predictions, any shape.
        target: targets, the shape of ``input``.
        beta: the width of the quadratic zone, >= 0.
        reduction: ``"mean"`` over all elements, ``"sum"`` or ``"none"``.

    Returns:
        The reduced loss, or the elementwise losses.

    Example:
        >>> import numpy as np
        >>> from crossentropy import smooth_l1
        >>> print(np.round(smooth_l1(np.array([0.5, 3.0]), np.zeros(2), reduction="none"), 4))
        [0.125 2.5  ]

    References:
        R. Girshick, "Fast R-CNN", 2015; torch.nn.functional.smooth_l1_loss.
    """
    t = smooth_l1_terms(input, target, beta=beta, reduction=reduction)
    return t.reduced(reduction)


@quiet
def huber(input: Array, target: Array, *, delta: float = 1.0, reduction: str = "mean") -> Array:
    r"""Huber loss: quadratic near zero, linear with slope ``delta`` beyond it.

    .. math::

        \ell = \begin{cases} 0.5\, d^2 & |d| < \delta \\
                             \delta (|d| - 0.5\, \delta) & \text{otherwise} \end{cases},
        \qquad d = x - t

    ``huber(x, t, delta=k) == k * smooth_l1(x, t, beta=k)``.

    Args:
        input: predictions, any shape.
        target: targets, the shape of ``input``.
        delta: the threshold, > 0.
        reduction: ``"mean"`` over all elements, ``"sum"`` or ``"none"``.

    Returns:
        The reduced loss, or the elementwise losses.

    Example:
        >>> import numpy as np
        >>> from crossentropy import huber
        >>> losses = huber(np.array([0.5, 3.0]), np.zeros(2), delta=2.0, reduction="none")
        >>> print(np.round(losses, 4))
        [0.125 4.   ]

    References:
        P. J. Huber, "Robust Estimation of a Location Parameter", 1964;
        torch.nn.functional.huber_loss.
    """
    t = huber_terms(input, target, delta=delta, reduction=reduction)
    return t.reduced(reduction)
