r"""TensorFlow's ``tf.nn`` cross-entropy functions, computed by our core.

The four functions keep TensorFlow's names, argument names and argument order, and return
what TensorFlow returns: one loss per element (sigmoid forms) or per example (softmax forms),
never a reduced scalar. Each one is a thin translation onto :mod:`crossentropy.losses` with
``reduction="none"``, so arrays from NumPy, PyTorch, JAX or array-api-strict go in and the
same kind of array comes out.

What is the same as TensorFlow:

- the formulas, the shapes of inputs and outputs, the argument names;
- ``labels`` and ``logits`` must both be given and (sigmoid forms) have the same shape;
- integer labels outside ``[0, num_classes)`` raise ``ValueError`` (TensorFlow raises on CPU
  and returns NaN on GPU). There is no ``ignore_index`` in TensorFlow, so ``-100`` is an
  out-of-range label here like any other, not a label to skip.

What is different, on purpose:

- ``name`` is accepted and ignored: there is no graph to name an operation in.
- At infinite logits TensorFlow's formula ``max(x, 0) - x z + log(1 + exp(-|x|))`` gives
  ``inf - inf = nan``; we return the limit (0 when the label agrees with the sign of the
  logit, ``+inf`` when it disagrees), as the core decides.
- Soft labels that do not sum to one get the true gradient (TensorFlow's documentation says
  its gradient is then incorrect).
- Inputs are not required to share one float dtype, and integer logits are converted to the
  default float dtype rather than rejected; float16/bfloat16 are computed in float32.
"""

from __future__ import annotations

from typing import Any

from .. import _validate
from .._array import Array, namespace, wide_labels
from ..losses import sigmoid_cross_entropy, softmax_cross_entropy, sparse_softmax_cross_entropy

__all__ = [
    "sigmoid_cross_entropy_with_logits",
    "softmax_cross_entropy_with_logits",
    "sparse_softmax_cross_entropy_with_logits",
    "weighted_cross_entropy_with_logits",
]


def _required(function: str, labels: object, logits: object) -> None:
    """TensorFlow requires both ``labels`` and ``logits``; name the one that is missing."""
    missing = [name for name, value in (("labels", labels), ("logits", logits)) if value is None]
    if missing:
        raise ValueError(
            f"{function}: {' and '.join(missing)} must be given (an array); got None. "
            f"Both labels= and logits= are required."
        )


def _same_shape(labels: Any, logits: Any) -> tuple[Any, Any]:
    """Arrays in one namespace, with shapes checked to be equal (TensorFlow does not
    broadcast ``labels`` against ``logits``)."""
    _, (logits, labels) = namespace(logits, labels, names=("logits", "labels"))
    _validate.same_shape("logits", logits, "labels", labels)
    return labels, logits


def sigmoid_cross_entropy_with_logits(
    labels: Array | None = None, logits: Array | None = None, name: str | None = None
) -> Array:
    r"""Elementwise sigmoid cross entropy, as ``tf.nn.sigmoid_cross_entropy_with_logits``.

    For independent (not mutually exclusive) binary predictions, e.g. multi-label
    classification. With :math:`x` the logits and :math:`z` the labels, each element is

    .. math::

        \ell(x, z) = -z \log \sigma(x) - (1 - z) \log(1 - \sigma(x))
                   = \max(x, 0) - x z + \log\left(1 + e^{-|x|}\right)

    Args:
        labels: targets in [0, 1] (hard 0/1 or soft), the same shape as ``logits``.
        logits: unnormalised log-odds, any shape ``(d_0, ..., d_{r-1})``.
        name: accepted for compatibility with TensorFlow and ignored.

    Returns:
        The elementwise loss, the shape of ``logits`` (floating dtype of ``logits``).

    Raises:
        ValueError: ``labels`` or ``logits`` is None, or their shapes differ.

    Example:
        >>> import numpy as np
        >>> from crossentropy.compat import tf
        >>> loss = tf.sigmoid_cross_entropy_with_logits(
        ...     labels=np.array([0.0, 1.0, 1.0]), logits=np.array([-1.0, 0.0, 2.0]))
        >>> print(loss.shape, [f"{v:.4f}" for v in loss])
        (3,) ['0.3133', '0.6931', '0.1269']

    References:
        TensorFlow, ``tf.nn.sigmoid_cross_entropy_with_logits`` (tensorflow/python/ops/nn_impl.py).
    """
    del name  # no graph to name an operation in
    _required("sigmoid_cross_entropy_with_logits", labels, logits)
    labels, logits = _same_shape(labels, logits)
    return sigmoid_cross_entropy(logits, labels, reduction="none")


def weighted_cross_entropy_with_logits(
    labels: Array, logits: Array, pos_weight: Array | float, name: str | None = None
) -> Array:
    r"""Sigmoid cross entropy with the positive term scaled, as
    ``tf.nn.weighted_cross_entropy_with_logits``.

    ``pos_weight`` :math:`q > 1` raises recall, :math:`q < 1` raises precision. With
    :math:`x` the logits and :math:`z` the labels, each element is

    .. math::

        \ell(x, z) = -q z \log \sigma(x) - (1 - z) \log(1 - \sigma(x))
                   = (1 - z) x + \bigl(1 + (q - 1) z\bigr) \log\left(1 + e^{-x}\right)

    computed without overflow for any finite :math:`x`.

    Args:
        labels: targets in [0, 1], the same shape as ``logits``.
        logits: unnormalised log-odds, any shape ``(..., C)``.
        pos_weight: the coefficient of the positive term: a number, or an array that
            broadcasts along the last axis of ``logits`` (one weight per class, ``(C,)``).
        name: accepted for compatibility with TensorFlow and ignored.

    Returns:
        The elementwise loss, the shape of ``logits``.

    Raises:
        ValueError: ``labels``, ``logits`` or ``pos_weight`` is None, or the shapes of
            ``labels`` and ``logits`` differ.

    Example:
        >>> import numpy as np
        >>> from crossentropy.compat import tf
        >>> loss = tf.weighted_cross_entropy_with_logits(
        ...     labels=np.array([0.0, 1.0, 1.0]), logits=np.array([-1.0, 0.0, 2.0]),
        ...     pos_weight=3.0)
        >>> print([f"{v:.4f}" for v in loss])
        ['0.3133', '2.0794', '0.3808']

    References:
        TensorFlow, ``tf.nn.weighted_cross_entropy_with_logits`` (tensorflow/python/ops/nn_impl.py).
    """
    del name
    _required("weighted_cross_entropy_with_logits", labels, logits)
    if pos_weight is None:
        raise ValueError(
            "weighted_cross_entropy_with_logits: pos_weight must be given (a number or an "
            "array of one weight per class); got None"
        )
    labels, logits = _same_shape(labels, logits)
    return sigmoid_cross_entropy(logits, labels, pos_weight=pos_weight, reduction="none")


def softmax_cross_entropy_with_logits(
    labels: Array, logits: Array, axis: int = -1, name: str | None = None
) -> Array:
    r"""Softmax cross entropy against a distribution over classes, as
    ``tf.nn.softmax_cross_entropy_with_logits``.

    For mutually exclusive classes with soft or one-hot labels. With :math:`x` the logits
    and :math:`y` the labels along the class axis, each example's loss is

    .. math::

        \ell(x, y) = -\sum_c y_c \log \operatorname{softmax}(x)_c
                   = \sum_c y_c \Bigl(\operatorname{logsumexp}(x) - x_c\Bigr)

    Args:
        labels: a probability distribution along ``axis`` for each example, the same shape
            as ``logits``.
        logits: unnormalised log-probabilities, e.g. ``(N, C)`` or ``(d_0, ..., C)``.
        axis: the class axis (default the last).
        name: accepted for compatibility with TensorFlow and ignored.

    Returns:
        One loss per example: the shape of ``labels`` without ``axis``.

    Raises:
        ValueError: ``labels`` or ``logits`` is None, their shapes differ, or ``axis`` is
            not an axis of ``logits``.

    Example:
        >>> import numpy as np
        >>> from crossentropy.compat import tf
        >>> loss = tf.softmax_cross_entropy_with_logits(
        ...     labels=np.array([[1.0, 0.0, 0.0], [0.0, 0.8, 0.2]]),
        ...     logits=np.array([[4.0, 2.0, 1.0], [0.0, 5.0, 1.0]]))
        >>> print(loss.shape, [f"{v:.6f}" for v in loss])
        (2,) ['0.169846', '0.824745']

    References:
        TensorFlow, ``tf.nn.softmax_cross_entropy_with_logits`` (tensorflow/python/ops/nn_ops.py).
    """
    del name
    _required("softmax_cross_entropy_with_logits", labels, logits)
    labels, logits = _same_shape(labels, logits)
    return softmax_cross_entropy(logits, labels, axis=axis, reduction="none")


def sparse_softmax_cross_entropy_with_logits(
    labels: Array, logits: Array, name: str | None = None
) -> Array:
    r"""Softmax cross entropy against integer class labels, as
    ``tf.nn.sparse_softmax_cross_entropy_with_logits``.

    For mutually exclusive classes, one true class per example (class axis last): each
    example's loss is :func:`crossentropy.sparse_softmax_cross_entropy`'s without class
    weights, label smoothing, z-loss or soft cap, that is -log softmax(x)_y.

    Args:
        labels: integer class indices in ``[0, num_classes)``, shape ``(d_0, ..., d_{r-1})``.
        logits: unnormalised log-probabilities, shape ``(d_0, ..., d_{r-1}, num_classes)``.
        name: accepted for compatibility with TensorFlow and ignored.

    Returns:
        One loss per example, the shape of ``labels``.

    Raises:
        TypeError: ``labels`` are not integers.
        ValueError: ``labels`` or ``logits`` is None, ``logits`` is a scalar, the shape of
            ``labels`` is not that of ``logits`` without its last axis, or a label is outside
            ``[0, num_classes)`` (the first bad value and its position are named). Negative
            labels such as ``-100`` are errors too: TensorFlow has no ``ignore_index``.

    Example:
        >>> import numpy as np
        >>> from crossentropy.compat import tf
        >>> loss = tf.sparse_softmax_cross_entropy_with_logits(
        ...     labels=np.array([0, 3, 1]),
        ...     logits=np.array([[2.0, -5.0, 0.5, -0.1],
        ...                      [0.0, 0.0, 1.9, 1.4],
        ...                      [-10.0, 10.0, -10.0, -10.0]]))
        >>> print(loss.shape, [f"{v:.4f}" for v in loss])
        (3,) ['0.2975', '1.1448', '0.0000']

    References:
        TensorFlow, ``tf.nn.sparse_softmax_cross_entropy_with_logits``
        (tensorflow/python/ops/nn_ops.py).
    """
    del name
    _required("sparse_softmax_cross_entropy_with_logits", labels, logits)
    xp, (logits, labels) = namespace(logits, labels, names=("logits", "labels"))
    _validate.at_least_1d("logits", logits)
    # TensorFlow has no ignore_index: every label must be a class. Checking the range here,
    # before the core sees the labels, makes -100 (the core's default ignore_index) an error
    # like any other out-of-range value; after this check no label can equal the
    # ignore_index passed below, so nothing is skipped.
    _validate.label_shape(tuple(logits.shape), logits.ndim - 1, labels)
    labels = wide_labels(labels, xp)  # compared with the class count exactly, in any dtype
    _validate.integer_labels(labels, int(logits.shape[-1]), None, xp)
    return sparse_softmax_cross_entropy(logits, labels, axis=-1, ignore_index=-1, reduction="none")
