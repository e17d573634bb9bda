r"""Analytic gradients of every loss: ``(loss, d loss / d first argument)``.

Each function has the name and arguments of the loss in :mod:`crossentropy.losses` and
returns the reduced loss together with its gradient with respect to the first argument
(the logits, probabilities, log-probabilities or predictions), in that argument's shape and
dtype. For ``reduction="none"`` the gradient is that of ``loss.sum()``: each element's
loss depends on its own row only, so this is every per-example gradient at once.

The forward pieces (log-probabilities, masks, weights, the mean's denominator) come from
the loss's own ``..._terms`` function in :mod:`crossentropy.losses`, as a typed
:class:`~crossentropy.losses.Terms`, so nothing is computed twice or written twice; only
the derivative is written here, next to its derivation. A regression loss's derivative is
written beside its value, in its :class:`~crossentropy.losses.RegressionLoss`.

The reduction enters as one factor: ``d mean / d l_i = 1 / count`` (0 for a mean over
nothing), ``d sum / d l_i = 1``.
"""

from __future__ import annotations

from typing import Any

from . import losses
from ._array import Array, core_sigmoid, from_compute, move_last_axis_to, quiet
from .losses import LOG_CLAMP, Terms, reduction_scale, times

__all__ = [
    "binary_cross_entropy",
    "distillation_loss",
    "huber",
    "l1",
    "mse",
    "nll_loss",
    "sigmoid_cross_entropy",
    "smooth_l1",
    "softmax_cross_entropy",
    "sparse_softmax_cross_entropy",
]


def _finish(t: Terms, grad: Array, reduction: str) -> tuple[Array, Array]:
    """The reduced loss and the gradient scaled by the reduction, in the caller's layout."""
    xp = t.xp
    grad = grad * reduction_scale(reduction, t.count, xp)
    grad = move_last_axis_to(grad, t.axis, xp)
    return t.reduced(reduction), from_compute(grad, t.dtype, xp)


def _zeros_where_not(mask: Array, grad: Array, xp: Any) -> Array:
    return xp.where(mask, grad, xp.zeros_like(grad))


@quiet
def softmax_cross_entropy(
    logits: Array,
    labels: Array,
    *,
    axis: int = -1,
    weight: Array | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> tuple[Array, Array]:
    r"""Softmax cross entropy with soft labels and its gradient with respect to the logits.

    Derivation. With a_c = w_c y'_c (the smoothed, weighted label mass) and
    log p_c = x_c - logsumexp(x):

    .. math::

        \ell = -\sum_c a_c (x_c - \operatorname{logsumexp}(x)), \qquad
        \frac{\partial \operatorname{logsumexp}(x)}{\partial x_j} = p_j

        \frac{\partial \ell}{\partial x_j} = -a_j + \Big(\sum_c a_c\Big) p_j

    For one-hot (or normalised, unweighted) labels sum_c a_c = 1 and this is p - y; labels
    that do not sum to one keep their true derivative sum(y) p - y.

    Args:
        As :func:`crossentropy.softmax_cross_entropy`.

    Returns:
        ``(loss, grad)``, ``grad`` of the shape of ``logits``.

    Example:
        >>> import numpy as np
        >>> from crossentropy import gradients
        >>> loss, grad = gradients.softmax_cross_entropy(
        ...     np.array([2.0, 1.0, 0.1]), np.array([1.0, 0.0, 0.0]))
        >>> print(f"{float(loss):.4f}", np.round(grad, 4))
        0.417 [-0.341   0.2424  0.0986]
    """
    t = losses.softmax_cross_entropy_terms(
        logits,
        labels,
        axis=axis,
        weight=weight,
        label_smoothing=label_smoothing,
        reduction=reduction,
    )
    xp = t.xp
    a = t.mass
    p = xp.exp(t.log_probs)
    grad = xp.sum(a, axis=-1, keepdims=True) * p - a
    return _finish(t, grad, reduction)


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
) -> tuple[Array, Array]:
    r"""Softmax cross entropy with integer labels and its gradient with respect to the logits.

    Derivation. Write z for the (soft-capped) logits, p = softmax(z), L = logsumexp(z),
    W = sum_c w_c, and use dL/dz_j = p_j. Each of the three terms of the loss (its formula
    is in :func:`crossentropy.sparse_softmax_cross_entropy`):

    .. math::

        \frac{\partial}{\partial z_j}\big[-w_y \log p_y\big] = w_y (p_j - \delta_{jy})

        \frac{\partial}{\partial z_j}\Big[-\sum_c w_c \log p_c\Big] = W p_j - w_j

        \frac{\partial}{\partial z_j}\big[w_y L^2\big] = 2 w_y L\, p_j

    so that

    .. math::

        \frac{\partial \ell}{\partial z_j} =
            \Big[(1-\varepsilon) w_y + \tfrac{\varepsilon}{C} W + 2 \lambda_z w_y L\Big] p_j
            - (1-\varepsilon) w_y \delta_{jy} - \tfrac{\varepsilon}{C} w_j

    and the soft cap z = c tanh(x / c) contributes dz/dx = 1 - tanh^2(x / c) = 1 - (z / c)^2.
    Ignored rows, and zero-weight rows without smoothing, are set to exactly zero.

    Args:
        As :func:`crossentropy.sparse_softmax_cross_entropy`.

    Returns:
        ``(loss, grad)``, ``grad`` of the shape of ``logits``.

    Example:
        >>> import numpy as np
        >>> from crossentropy import gradients
        >>> loss, grad = gradients.sparse_softmax_cross_entropy(
        ...     np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0]]), np.array([0, -100]))
        >>> print(f"{float(loss):.4f}")
        0.4170
        >>> print(np.round(grad, 4))
        [[-0.341   0.2424  0.0986]
         [ 0.      0.      0.    ]]
    """
    t = losses.sparse_softmax_cross_entropy_terms(
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
    xp = t.xp
    eps, smooth, w, w_y = t.eps, t.smooth, t.w, t.w_target
    p = xp.exp(t.log_probs)
    row = (1.0 - eps) * w_y
    if eps > 0:
        total = float(t.x.shape[-1]) if w is None else xp.sum(w)
        row = row + smooth * total
    if t.z_loss > 0:
        row = row + 2.0 * t.z_loss * w_y * t.lse
    onehot = xp.astype(t.onehot, p.dtype)
    grad = xp.expand_dims(row, axis=-1) * p - xp.expand_dims((1.0 - eps) * w_y, axis=-1) * onehot
    if eps > 0:
        grad = grad - smooth * (xp.ones_like(p) if w is None else w)
    grad = _zeros_where_not(xp.expand_dims(t.live, axis=-1), grad, xp)
    if t.cap is not None:
        squashed = t.z / t.cap
        grad = grad * (1.0 - squashed * squashed)
    return _finish(t, grad, reduction)


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
) -> tuple[Array, Array]:
    r"""The distillation loss and its gradient with respect to the student's logits.

    Derivation. With u = z_s / T, the softmax Jacobian dp_s,j/du_k = p_s,j ([j = k] - p_s,k)
    turns any per-class derivative a_j = dD/dp_s,j into

    .. math::

        \frac{\partial D}{\partial u_k} = p_{s,k} (a_k - R), \qquad R = \sum_j p_{s,j} a_j

    (a constant added to every a_j cancels). Forward KL: D = sum p_t log p_t - sum p_t u
    + logsumexp(u), so dD/du_k = p_s,k - p_t,k directly. Reverse KL: a_k = log p_s,k -
    log p_t,k (+1), so R = D. Jsd, with M = beta p_t + (1 - beta) p_s:

    .. math::

        \frac{\partial D}{\partial p_{s,j}}
          = -\beta \frac{p_{t,j} (1 - \beta)}{M_j}
            + (1 - \beta) \Big(\log \frac{p_{s,j}}{M_j} + 1 - \frac{p_{s,j} (1 - \beta)}{M_j}\Big)
          = (1 - \beta) \log \frac{p_{s,j}}{M_j} + (1 - \beta) \Big(1 - \frac{M_j}{M_j}\Big)

    so a_k = (1 - beta)(log p_s,k - log M_k) and R = (1 - beta) KL(p_s || M). The chain rule
    through u = z_s / T divides by T, and the hard term -log softmax(z_s)_y adds
    softmax(z_s)_k - [k = y]:

    .. math::

        \frac{\partial \ell}{\partial z_{s,k}} = \frac{w_{soft}}{T}
            \frac{\partial D}{\partial u_k} + w_{hard} (\operatorname{softmax}(z_s)_k - [k = y])

    p_s,k (a_k - R) is exactly 0 where p_s,k is 0. The teacher is not differentiated.
    Ignored rows are exactly zero.

    Args:
        As :func:`crossentropy.distillation_loss`.

    Returns:
        ``(loss, grad)``, ``grad`` of the shape of ``student_logits``.

    Example:
        >>> import numpy as np
        >>> from crossentropy import gradients
        >>> loss, grad = gradients.distillation_loss(
        ...     np.array([[2.0, 1.0, 0.1]]), np.array([[1.0, 1.0, 1.0]]),
        ...     divergence="forward_kl")
        >>> print(np.round(grad, 4))
        [[ 0.3257 -0.0909 -0.2348]]
    """
    t = losses.distillation_loss_terms(
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
    xp = t.xp
    grad = xp.zeros_like(t.x)
    if t.soft_weight > 0:
        if t.coefficient is None:  # forward KL
            du = t.ps - t.pt
        else:
            shifted = t.coefficient - xp.expand_dims(t.row_term, axis=-1)
            du = xp.where(t.ps == 0, xp.zeros_like(t.ps), t.ps * shifted)
        grad = grad + (t.soft_weight / t.temperature) * du
    if t.hard_log_probs is not None and t.onehot is not None:
        onehot = xp.astype(t.onehot, grad.dtype)
        grad = grad + t.hard_weight * (xp.exp(t.hard_log_probs) - onehot)
    grad = _zeros_where_not(xp.expand_dims(t.live, axis=-1), grad, xp)
    return _finish(t, grad, reduction)


@quiet
def nll_loss(
    log_probs: Array,
    labels: Array,
    *,
    axis: int = -1,
    weight: Array | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> tuple[Array, Array]:
    r"""Negative log likelihood and its gradient with respect to the log-probabilities.

    Derivation. The loss reads one entry of each row, so

    .. math::

        \frac{\partial \ell_i}{\partial \log p_{ij}} = -w_{y_i} \delta_{j y_i}

    and every other entry (and every ignored row) has gradient zero.

    Args:
        As :func:`crossentropy.nll_loss`.

    Returns:
        ``(loss, grad)``, ``grad`` of the shape of ``log_probs``.

    Example:
        >>> import numpy as np
        >>> from crossentropy import gradients
        >>> loss, grad = gradients.nll_loss(np.log(np.array([[0.7, 0.2, 0.1]])), np.array([0]))
        >>> print(np.round(grad, 4))
        [[-1.  0.  0.]]
    """
    t = losses.nll_loss_terms(
        log_probs, labels, axis=axis, weight=weight, ignore_index=ignore_index, reduction=reduction
    )
    xp = t.xp
    w_y = xp.expand_dims(t.w_target, axis=-1)
    grad = _zeros_where_not(t.onehot, -w_y * xp.ones_like(t.x), xp)
    return _finish(t, grad, reduction)


@quiet
def sigmoid_cross_entropy(
    logits: Array,
    labels: Array,
    *,
    pos_weight: Array | float | None = None,
    weight: Array | None = None,
    reduction: str = "mean",
) -> tuple[Array, Array]:
    r"""Sigmoid cross entropy and its gradient with respect to the logits.

    Derivation. With P = p_w y, d softplus(x)/dx = sigma(x) and
    d softplus(-x)/dx = sigma(x) - 1:

    .. math::

        \frac{\partial}{\partial x}\big[P \operatorname{softplus}(-x)
            + (1 - y) \operatorname{softplus}(x)\big]
        = \sigma(x) (P + 1 - y) - P

    which is sigma(x) - y when p_w = 1, finite even at x = ±inf; times the weight w.

    Args:
        As :func:`crossentropy.sigmoid_cross_entropy`.

    Returns:
        ``(loss, grad)``, ``grad`` of the shape of ``logits``.

    Example:
        >>> import numpy as np
        >>> from crossentropy import gradients
        >>> loss, grad = gradients.sigmoid_cross_entropy(
        ...     np.array([0.0, np.inf, -np.inf]), np.array([1.0, 0.0, 0.0]), reduction="sum")
        >>> print(float(loss), np.round(grad, 4))
        inf [-0.5  1.   0. ]
    """
    t = losses.sigmoid_cross_entropy_terms(
        logits, labels, pos_weight=pos_weight, weight=weight, reduction=reduction
    )
    xp = t.xp
    positive = t.positive
    grad = core_sigmoid(t.x, xp) * (positive + 1.0 - t.y) - positive
    if t.w is not None:
        grad = xp.broadcast_to(t.w * grad, t.x.shape)
    return _finish(t, grad, reduction)


@quiet
def binary_cross_entropy(
    probs: Array,
    labels: Array,
    *,
    eps: float | None = None,
    weight: Array | None = None,
    reduction: str = "mean",
) -> tuple[Array, Array]:
    r"""Binary cross entropy on probabilities and its gradient with respect to them.

    Derivation. d/dp [-y log p - (1-y) log(1-p)] = -y / p + (1 - y) / (1 - p)
    = (p - y) / (p (1 - p)). A clamped log (``eps=None``, log below -100) or a clipped
    probability (``eps`` given, p outside [eps, 1 - eps]) is constant there, so that term's
    derivative is 0: the gradient is the true derivative of the loss as computed, and finite
    at p = 0 and p = 1.

    Args:
        As :func:`crossentropy.binary_cross_entropy`.

    Returns:
        ``(loss, grad)``, ``grad`` of the shape of ``probs``.

    Example:
        >>> import numpy as np
        >>> from crossentropy import gradients
        >>> loss, grad = gradients.binary_cross_entropy(
        ...     np.array([0.9, 0.2]), np.array([1.0, 0.0]), reduction="sum")
        >>> print(np.round(grad, 4))
        [-1.1111  1.25  ]
    """
    t = losses.binary_cross_entropy_terms(
        probs, labels, eps=eps, weight=weight, reduction=reduction
    )
    xp = t.xp
    p, y, eps = t.x, t.y, t.eps
    zero, one = xp.zeros_like(p), xp.ones_like(p)
    if eps is None:
        live_p = xp.log(p) > LOG_CLAMP
        live_q = xp.log1p(-p) > LOG_CLAMP
        q = 1.0 - p
    else:
        inside = (p >= eps) & (p <= 1.0 - eps)
        p = xp.clip(p, eps, 1.0 - eps)
        q = 1.0 - p
        live_p = live_q = inside
    d_log_p = xp.where(live_p, one / xp.where(live_p, p, one), zero)
    d_log_q = xp.where(live_q, one / xp.where(live_q, q, one), zero)
    grad = -times(y, d_log_p, xp) + times(1.0 - y, d_log_q, xp)
    if t.w is not None:
        grad = xp.broadcast_to(t.w * grad, t.x.shape)
    return _finish(t, grad, reduction)


def _regression(t: losses.RegressionTerms, reduction: str) -> tuple[Array, Array]:
    """d loss / d input = d loss / d(input - target): the loss's own derivative."""
    return _finish(t, t.loss.derivative(t.d, t.xp), reduction)


@quiet
def mse(input: Array, target: Array, *, reduction: str = "mean") -> tuple[Array, Array]:
    r"""Squared error and its gradient: d/dx (x - t)^2 = 2 (x - t).

    Args:
        As :func:`crossentropy.mse`.

    Returns:
        ``(loss, grad)``, ``grad`` of the shape of ``input``.

    Example:
        >>> import numpy as np
        >>> from crossentropy import gradients
        >>> loss, grad = gradients.mse(np.array([0.3, 0.3, 0.4]), np.array([0.0, 0.0, 1.0]))
        >>> print(np.round(grad, 4))
        [ 0.2  0.2 -0.4]
    """
    return _regression(losses.mse_terms(input, target, reduction=reduction), reduction)


@quiet
def l1(input: Array, target: Array, *, reduction: str = "mean") -> tuple[Array, Array]:
    r"""Absolute error and its (sub)gradient: d/dx |x - t| = sign(x - t), 0 at x = t.

    Args:
        As :func:`crossentropy.l1`.

    Returns:
        ``(loss, grad)``, ``grad`` of the shape of ``input``.

    Example:
        >>> import numpy as np
        >>> from crossentropy import gradients
        >>> loss, grad = gradients.l1(np.array([0.5, -3.0]), np.array([0.0, 1.0]), reduction="sum")
        >>> print(np.round(grad, 4))
        [ 1. -1.]
    """
    return _regression(losses.l1_terms(input, target, reduction=reduction), reduction)


@quiet
def smooth_l1(
    input: Array, target: Array, *, beta: float = 1.0, reduction: str = "mean"
) -> tuple[Array, Array]:
    r"""Smooth L1 and its gradient: d / beta inside |d| < beta, sign(d) outside.

    Args:
        As :func:`crossentropy.smooth_l1`.

    Returns:
        ``(loss, grad)``, ``grad`` of the shape of ``input``.

    Example:
        >>> import numpy as np
        >>> from crossentropy import gradients
        >>> loss, grad = gradients.smooth_l1(np.array([0.5, 3.0]), np.zeros(2), reduction="sum")
        >>> print(np.round(grad, 4))
        [0.5 1. ]
    """
    t = losses.smooth_l1_terms(input, target, beta=beta, reduction=reduction)
    return _regression(t, reduction)


@quiet
def huber(
    input: Array, target: Array, *, delta: float = 1.0, reduction: str = "mean"
) -> tuple[Array, Array]:
    r"""Huber loss and its gradient: d inside |d| < delta, delta sign(d) outside.

    Args:
        As :func:`crossentropy.huber`.

    Returns:
        ``(loss, grad)``, ``grad`` of the shape of ``input``.

    Example:
        >>> import numpy as np
        >>> from crossentropy import gradients
        >>> loss, grad = gradients.huber(
        ...     np.array([0.5, 3.0]), np.zeros(2), delta=2.0, reduction="sum")
        >>> print(np.round(grad, 4))
        [0.5 2. ]
    """
    t = losses.huber_terms(input, target, delta=delta, reduction=reduction)
    return _regression(t, reduction)
