"""Array-API plumbing and the numerically stable primitives.

Everything above this module is written once against the Python array API: the namespace
``xp`` comes from :func:`array_api_compat.array_namespace`, so one function serves NumPy,
PyTorch, JAX and array-api-strict arrays. This module holds

- the namespace lookup (:func:`namespace`) that also accepts Python lists and scalars,
- the dtype policy: half-precision floats are computed in float32 and returned in their own
  dtype (:func:`compute_dtype`, :func:`to_compute`),
- the stable primitives ``logsumexp``, ``softmax``, ``log_softmax``, ``sigmoid`` and
  ``log_sigmoid``, which check their input, and the unchecked forms the losses build on
  (:func:`shift_and_log_sum`, :func:`core_log_softmax`, :func:`core_sigmoid`,
  :func:`softplus`: an array already in its compute dtype and its namespace ``xp``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import array_api_compat
import numpy as np

Array = Any
"""Any array the array API covers (NumPy, PyTorch, JAX, array-api-strict)."""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def quiet(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Silence NumPy's floating-point warnings inside a public function.

    log(0) = -inf, 1/0 = inf and the NaNs of branches that ``where`` discards are
    deliberate here: the answers are defined by the documented limits, not by warnings.
    """

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with np.errstate(all="ignore"):
            return function(*args, **kwargs)

    return wrapper


_NUMBERS = ("bool", "integral", "real floating", "complex floating")


def _as_array(name: str, x: Any) -> Any:
    """Lists, tuples and Python scalars become NumPy arrays; arrays pass through. Anything
    else (None, a string, a dict, a ragged list) is a TypeError naming the argument."""
    if isinstance(x, list | tuple | int | float | complex):
        try:
            return np.asarray(x)
        except (ValueError, TypeError) as error:
            raise TypeError(
                f"{name}: expected an array, a (nested, rectangular) list of numbers or a "
                f"number; got a {type(x).__name__} NumPy cannot turn into one array ({error})"
            ) from None
    if not array_api_compat.is_array_api_obj(x) or isinstance(x, str | bytes):
        raise TypeError(
            f"{name}: expected an array (NumPy, PyTorch, JAX or array-api-strict), a list "
            f"of numbers or a number; got {type(x).__name__}"
        )
    return x


def _check_numeric(name: str, x: Any, xp: Any) -> None:
    """Booleans, integers, real or complex floats; never strings, objects or dates."""
    try:
        numeric = bool(xp.isdtype(x.dtype, _NUMBERS))
    except (TypeError, ValueError):
        numeric = False
    if not numeric:
        raise TypeError(f"{name}: expected an array of numbers; got dtype {x.dtype}")


def namespace(
    *arrays: Any, names: tuple[str, ...] = (), optional: tuple[str, ...] = ()
) -> tuple[Any, list[Any]]:
    """The array namespace of ``arrays`` and the arrays themselves, all in that namespace.

    ``names`` names each argument (``"array"`` where not given), for the messages. ``None``
    is accepted for the arguments named in ``optional`` (and passed through as ``None``)
    and refused for the others. Non-array inputs (lists, scalars) are converted in the
    namespace of the first real array, or with NumPy when there is none, so
    ``entropy([0.5, 0.5])`` works. Arrays that are not of numbers are a TypeError.
    """
    labels = [names[i] if i < len(names) else "array" for i in range(len(arrays))]
    checked: list[Any] = []
    for name, a in zip(labels, arrays, strict=True):
        if a is None:
            if name not in optional:
                raise TypeError(
                    f"{name}: expected an array (NumPy, PyTorch, JAX or array-api-strict), "
                    f"a list of numbers or a number; got None"
                )
            checked.append(None)
        else:
            checked.append(_as_array(name, a))
    plain = (list, tuple, int, float, complex)
    real = [c for c, a in zip(checked, arrays, strict=True) if c is not None and c is a]
    real = [c for c in real if not isinstance(c, plain)]
    if real:
        try:
            xp = array_api_compat.array_namespace(*real)
        except TypeError as error:
            kinds = sorted({type(a).__module__ + "." + type(a).__qualname__ for a in real})
            raise TypeError(
                f"arrays: expected arrays of one library (NumPy, PyTorch, JAX or "
                f"array-api-strict); got {', '.join(kinds)}"
            ) from error
    else:
        xp = array_api_compat.array_namespace(np.asarray(0.0))
    device = array_api_compat.device(real[0]) if real else None
    out: list[Any] = []
    for name, c, a in zip(labels, checked, arrays, strict=True):
        if c is None:
            out.append(None)
            continue
        if not (c is a and any(c is r for r in real)):
            _check_numeric(name, c, array_api_compat.array_namespace(c))
            c = xp.asarray(c, device=device)
        _check_numeric(name, c, xp)
        out.append(c)
    return xp, out


def wide_labels(labels: Array, xp: Any, *, name: str = "labels") -> Array:
    """Integer class indices in the namespace's default integer dtype (int64; int32 in JAX
    without x64), so that every comparison with a class count or an ``ignore_index`` is
    exact: in a narrower dtype PyTorch and JAX wrap a Python integer outside its range
    (uint8 ``255 == -1``, int8 ``44 == 300``) and array-api-strict refuses it. Non-integer
    arrays are returned as they are (the label checks refuse them). An unsigned index too
    large for the wide dtype is a ValueError."""
    if not xp.isdtype(labels.dtype, "integral"):
        return labels
    if array_api_compat.is_torch_namespace(xp):
        wide = xp.int64  # PyTorch's integer default, whatever its settings
    else:
        wide = xp.asarray(0, device=array_api_compat.device(labels)).dtype
    if labels.dtype == wide:
        return labels
    out = xp.astype(labels, wide)
    if xp.iinfo(labels.dtype).max > xp.iinfo(wide).max and size(out) > 0:
        wrapped = xp.reshape(out < 0, (-1,))  # an unsigned index past the wide maximum
        if bool(xp.any(wrapped)):
            index = int(xp.nonzero(wrapped)[0][0])
            position = tuple(int(i) for i in np.unravel_index(index, tuple(labels.shape)))
            value = int(xp.reshape(out, (-1,))[index]) + 2 ** xp.iinfo(labels.dtype).bits
            raise ValueError(
                f"{name}: expected class indices at most {xp.iinfo(wide).max}; got {value} "
                f"at position {position}"
            )
    return out


def _is_floating(x: Array, xp: Any) -> bool:
    return bool(xp.isdtype(x.dtype, "real floating"))


def _default_float(xp: Any, like: Array | None = None) -> Any:
    """The namespace's default real floating dtype (float64 in NumPy, float32 in PyTorch)."""
    if like is not None:
        return xp.asarray(0.0, device=array_api_compat.device(like)).dtype
    return xp.asarray(0.0).dtype


def compute_dtype(x: Array, xp: Any) -> Any:
    """The dtype the math runs in: float32 for float16/bfloat16, the default float for
    integers and booleans, the input's own dtype otherwise."""
    if not _is_floating(x, xp):
        return _default_float(xp, x)
    if xp.finfo(x.dtype).bits < 32:
        return xp.float32
    return x.dtype


def to_compute(x: Array, xp: Any) -> Array:
    """``x`` in its compute dtype (see :func:`compute_dtype`)."""
    dtype = compute_dtype(x, xp)
    return x if x.dtype == dtype else xp.astype(x, dtype)


def result_dtype(x: Array, xp: Any) -> Any:
    """The dtype a result is returned in: the input's float dtype, else the default float."""
    return x.dtype if _is_floating(x, xp) else _default_float(xp, x)


def from_compute(y: Array, dtype: Any, xp: Any) -> Array:
    return y if y.dtype == dtype else xp.astype(y, dtype)


def size(x: Array) -> int:
    n = 1
    for d in x.shape:
        n *= int(d)
    return n


def move_axis_last(x: Array, axis: int, xp: Any) -> Array:
    """``x`` with ``axis`` moved to the end (a view where the library allows)."""
    if axis in (-1, x.ndim - 1):
        return x
    return xp.moveaxis(x, axis, -1)


def move_last_axis_to(x: Array, axis: int, xp: Any) -> Array:
    """The inverse of :func:`move_axis_last`."""
    if axis in (-1, x.ndim - 1):
        return x
    return xp.moveaxis(x, -1, axis)


def _real_input(x: Any, xp: Any) -> None:
    if xp.isdtype(x.dtype, "complex floating"):
        raise TypeError(f"x: expected real numbers; got dtype {x.dtype}")


def _class_axis(x: Array, axis: object) -> int:
    """``axis`` checked to be an axis of ``x`` (which must have one)."""
    from . import _validate  # here, not at the top: _validate imports this module

    _validate.at_least_1d("x", x)
    return _validate.axis("x", axis, x.ndim)


# --- the stable primitives --------------------------------------------------------------
#
# log sum_j exp(x_j) = m + log sum_j exp(x_j - m) with m = max_j x_j: every exponent is <= 0,
# so nothing overflows, and the largest term is exp(0) = 1, so the sum is >= 1 and its log
# loses nothing. A row whose max is -inf (all -inf) would give -inf - -inf = nan; the shift
# is taken as 0 there instead, which yields log(0) = -inf, the right answer; likewise a row
# containing +inf gets shift 0 and logsumexp +inf.


def _safe_max(x: Array, axis: int, xp: Any) -> Array:
    m = xp.max(x, axis=axis, keepdims=True)
    return xp.where(xp.isfinite(m), m, xp.zeros_like(m))


def shift_and_log_sum(x: Array, axis: int, xp: Any) -> tuple[Array, Array]:
    """m = max(x) and log sum exp(x - m) along ``axis``, both with keepdims.

    Kept apart rather than added: log-softmax is (x - m) - log_sum, which is exact for
    equal logits at any offset, while m + log_sum would first round to the spacing of m
    (0.0625 at 1e6 in float32) and lose the answer.
    """
    if x.shape[axis] == 0:
        shape = list(x.shape)
        shape[axis] = 1
        device = array_api_compat.device(x)
        zero = xp.zeros(tuple(shape), dtype=x.dtype, device=device)
        return zero, zero - xp.inf
    m = _safe_max(x, axis, xp)
    return m, xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True))


def _logsumexp(x: Array, axis: int, xp: Any) -> Array:
    """logsumexp with keepdims=True, in ``x``'s dtype (callers upcast first)."""
    m, log_sum = shift_and_log_sum(x, axis, xp)
    return m + log_sum


@quiet
def logsumexp(x: Array, *, axis: int = -1, keepdims: bool = False) -> Array:
    r"""The log of the sum of exponentials, computed without overflow.

    .. math::

        \operatorname{logsumexp}(x) = m + \log \sum_j e^{x_j - m}, \qquad m = \max_j x_j

    Args:
        x: array of any shape.
        axis: the axis to reduce.
        keepdims: keep the reduced axis with length 1.

    Returns:
        The reduction of ``x`` over ``axis``, in ``x``'s dtype (float16/bfloat16 are computed
        in float32).

    Example:
        >>> import numpy as np
        >>> from crossentropy import logsumexp
        >>> print(f"{float(logsumexp(np.array([1000.0, 1000.0]))):.6f}")
        1000.693147

    References:
        scipy.special.logsumexp.
    """
    if not isinstance(keepdims, bool):
        raise TypeError(f"keepdims: expected True or False; got {keepdims!r}")
    xp, (x,) = namespace(x, names=("x",))
    _real_input(x, xp)
    axis = _class_axis(x, axis)
    dtype = result_dtype(x, xp)
    out = _logsumexp(to_compute(x, xp), axis, xp)
    if not keepdims:
        out = xp.squeeze(out, axis=axis)
    return from_compute(out, dtype, xp)


def core_log_softmax(x: Array, axis: int, xp: Any) -> Array:
    """:func:`log_softmax` without the checks: ``x`` in its compute dtype."""
    m, log_sum = shift_and_log_sum(x, axis, xp)
    return (x - m) - log_sum


def _softmax(x: Array, axis: int, xp: Any) -> Array:
    if x.shape[axis] == 0:  # no classes: nothing to normalise (and no max to take)
        return x
    m = _safe_max(x, axis, xp)
    e = xp.exp(x - m)
    return e / xp.sum(e, axis=axis, keepdims=True)


@quiet
def log_softmax(x: Array, *, axis: int = -1) -> Array:
    r"""The logarithm of the softmax, stable for any finite logits.

    .. math::

        \log \operatorname{softmax}(x)_i = x_i - \operatorname{logsumexp}(x)

    Args:
        x: logits of any shape.
        axis: the class axis.

    Returns:
        Log-probabilities of the same shape and dtype. A ``-inf`` logit gives ``-inf``.

    Example:
        >>> import numpy as np
        >>> from crossentropy import log_softmax
        >>> print(np.round(log_softmax(np.array([2.0, 1.0, 0.1])), 4))
        [-0.417 -1.417 -2.317]
    """
    xp, (x,) = namespace(x, names=("x",))
    _real_input(x, xp)
    axis = _class_axis(x, axis)
    dtype = result_dtype(x, xp)
    return from_compute(core_log_softmax(to_compute(x, xp), axis, xp), dtype, xp)


@quiet
def softmax(x: Array, *, axis: int = -1) -> Array:
    r"""Softmax: exponentials normalised to sum to one along ``axis``.

    .. math::

        \operatorname{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}},
        \qquad m = \max_j x_j

    Args:
        x: logits of any shape.
        axis: the class axis.

    Returns:
        Probabilities of the same shape and dtype.

    Example:
        >>> import numpy as np
        >>> from crossentropy import softmax
        >>> print(np.round(softmax(np.array([2.0, 1.0, 0.1])), 4))
        [0.659  0.2424 0.0986]
    """
    xp, (x,) = namespace(x, names=("x",))
    _real_input(x, xp)
    axis = _class_axis(x, axis)
    dtype = result_dtype(x, xp)
    return from_compute(_softmax(to_compute(x, xp), axis, xp), dtype, xp)


# sigmoid(x) = 1 / (1 + e^-x) overflows e^-x for very negative x; the two-branch form
# e^x / (1 + e^x) for x < 0 only ever exponentiates a non-positive number.
# log sigmoid(x) = -softplus(-x) = min(x, 0) - log1p(e^-|x|), exact at both tails.


def core_sigmoid(x: Array, xp: Any) -> Array:
    """:func:`sigmoid` without the checks: ``x`` in its compute dtype."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def softplus(x: Array, xp: Any) -> Array:
    """log(1 + e^x) = max(x, 0) + log1p(e^-|x|); +inf at +inf, 0 at -inf."""
    return xp.maximum(x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))


@quiet
def sigmoid(x: Array) -> Array:
    r"""The logistic function, stable in both tails.

    .. math::

        \sigma(x) = \frac{1}{1 + e^{-x}}

    Args:
        x: array of any shape.

    Returns:
        Values in [0, 1], same shape and dtype.

    Example:
        >>> import numpy as np
        >>> from crossentropy import sigmoid
        >>> print(np.round(sigmoid(np.array([-800.0, 0.0, 2.0])), 4))
        [0.     0.5    0.8808]
    """
    xp, (x,) = namespace(x, names=("x",))
    _real_input(x, xp)
    dtype = result_dtype(x, xp)
    return from_compute(core_sigmoid(to_compute(x, xp), xp), dtype, xp)


@quiet
def log_sigmoid(x: Array) -> Array:
    r"""The log of the logistic function, exact in both tails.

    .. math::

        \log \sigma(x) = -\operatorname{softplus}(-x) = \min(x, 0) - \log(1 + e^{-|x|})

    Args:
        x: array of any shape.

    Returns:
        Values in (-inf, 0], same shape and dtype.

    Example:
        >>> import numpy as np
        >>> from crossentropy import log_sigmoid
        >>> print([round(float(v), 4) for v in log_sigmoid(np.array([-800.0, 0.0, 800.0]))])
        [-800.0, -0.6931, -0.0]
    """
    xp, (x,) = namespace(x, names=("x",))
    _real_input(x, xp)
    dtype = result_dtype(x, xp)
    return from_compute(-softplus(-to_compute(x, xp), xp), dtype, xp)
