"""Checks of user input: each raises ``ValueError``/``TypeError`` naming the argument, what
was given and what is accepted. Never ``assert``."""

from __future__ import annotations

import math
import numbers
import operator
import sys
from typing import Any

import array_api_compat
import numpy as np

from ._array import Array, size

REDUCTIONS = ("mean", "sum", "none")


def reduction(value: object, accepted: tuple[str, ...] = REDUCTIONS) -> str:
    if not isinstance(value, str) or value not in accepted:
        names = ", ".join(repr(r) for r in accepted)
        raise ValueError(f"reduction: expected one of {names}; got {value!r}")
    return value


def base(value: object) -> float | None:
    """``None`` (nats) or a positive real number other than 1; returns log(base)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"base: expected None or a positive number; got {value!r}")
    if not value > 0 or value == 1 or not math.isfinite(value):
        raise ValueError(
            f"base: expected None (nats) or a positive finite number other than 1 "
            f"(2 for bits); got {value!r}"
        )
    return math.log(value)


def number_in(name: str, value: object, low: float, high: float, *, what: str) -> float:
    """A real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}: expected a number {what}; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name}: expected a number {what}; got {value!r}")
    return float(value)


def label_smoothing(value: object) -> float:
    """The label-smoothing epsilon, in [0, 1]."""
    return number_in("label_smoothing", value, 0.0, 1.0, what="in [0, 1]")


def z_loss(value: object) -> float:
    """The z-loss coefficient, finite and >= 0 (an infinite one makes every loss inf or,
    times a zero logsumexp, NaN)."""
    return number_in("z_loss", value, 0.0, sys.float_info.max, what="finite and >= 0")


def temperature(value: object) -> float:
    """A softmax temperature T, finite and > 0 (the logits are divided by it)."""
    return number_in("temperature", value, math.ulp(0.0), sys.float_info.max, what="finite and > 0")


def softcap(value: object) -> float | None:
    """The soft cap c, finite and > 0, or None for no cap (c = inf would give
    inf · tanh(x / inf) = inf · 0 = NaN; its limit is no cap, which None says)."""
    if value is None:
        return None
    return number_in(
        "softcap", value, math.ulp(0.0), sys.float_info.max, what="finite and > 0, or None"
    )


def integer(name: str, value: object) -> int:
    """A Python int from an integer of any kind (``int``, a NumPy integer scalar: anything
    with ``__index__``), never a bool or a float."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer; got {value!r}")
    return operator.index(value)


def ignore_index(value: object) -> int:
    """An integer in int64's range (labels are compared in int64; PyTorch's
    ``ignore_index`` is an int64 too)."""
    value = integer("ignore_index", value)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"ignore_index: expected an integer in [-2**63, 2**63); got {value}")
    return value


def flag(name: str, value: object) -> bool:
    """A boolean option: True or False, nothing else."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False; got {value!r}")
    return value


def readable(x: Array) -> Array | None:
    """The array whose values a check can read: ``x`` itself; for a torch tensor under
    ``torch.func`` transforms the ordinary tensor beneath them (under ``vmap``, the values
    of every batch element); ``None`` for a tensor without values (on the meta device, or
    a fake tensor of ``torch.compile``/``torch.export``), whose values cannot be checked."""
    import array_api_compat

    if not array_api_compat.is_torch_array(x):
        return x
    import torch

    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(x):
        x = functorch.get_unwrapped(x)
    if x.device.type == "meta" or torch._subclasses.fake_tensor.is_fake(x):
        return None
    return x


def axis(name: str, value: object, ndim: int) -> int:
    """A valid axis of an ``ndim``-dimensional array, normalised to be non-negative."""
    value = integer("axis", value)
    if not -ndim <= value < ndim:
        raise ValueError(
            f"axis: expected an axis of {name} with {ndim} dimension(s), "
            f"in [{-ndim}, {ndim}); got {value}"
        )
    return value % ndim


def at_least_1d(name: str, x: Array) -> None:
    if x.ndim == 0:
        raise ValueError(
            f"{name}: expected an array with a class axis (at least 1-D); got a scalar"
        )


def same_shape(name_a: str, a: Array, name_b: str, b: Array) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{name_b}: expected the shape of {name_a} {tuple(a.shape)}; got {tuple(b.shape)}"
        )


def broadcastable(name_a: str, a: Array, name_b: str, b: Array) -> None:
    try:
        np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
    except ValueError:
        raise ValueError(
            f"{name_b}: expected a shape that broadcasts with {name_a} {tuple(a.shape)}; "
            f"got {tuple(b.shape)}"
        ) from None


def floating(name: str, x: Array, xp: Any) -> None:
    if xp.isdtype(x.dtype, "complex floating"):
        raise TypeError(f"{name}: expected real numbers; got dtype {x.dtype}")


def _first(mask: Array, x: Array, xp: Any) -> tuple[object, tuple[int, ...]]:
    """The value of ``x`` and its position at the first True of ``mask``."""
    flat = xp.reshape(mask, (-1,))
    index = int(xp.nonzero(flat)[0][0])
    position = tuple(int(i) for i in np.unravel_index(index, tuple(mask.shape)))
    value = xp.reshape(x, (-1,))[index]
    number = float(value) if xp.isdtype(x.dtype, "real floating") else int(value)
    return number, position


def _extremes(p: Array, xp: Any) -> tuple[Array, Array]:
    """The minimum and maximum of ``p`` (NaN if it holds one): one sweep for a torch
    tensor (``aminmax``), two elsewhere."""
    if array_api_compat.is_torch_array(p):
        low, high = p.aminmax()
        return low, high
    return xp.min(p), xp.max(p)


def probabilities(name: str, p: Array, xp: Any, *, upper: bool = False) -> None:
    """Finite values >= 0 (or in [0, 1] with ``upper``); NaN and inf are rejected too."""
    values = readable(p)
    if size(p) == 0 or values is None:
        return
    p = values
    # the extremes decide (a NaN fails both comparisons); the mask only for the message
    low, high = _extremes(p, xp)
    if bool(low >= 0) and bool(high <= 1 if upper else high < math.inf):
        return
    bad = ~((p >= 0) & (p < math.inf)) if not upper else ~((p >= 0) & (p <= 1))
    if bool(xp.any(bad)):
        value, position = _first(bad, p, xp)
        accepted = "probabilities in [0, 1]" if upper else "finite non-negative probabilities"
        raise ValueError(f"{name}: expected {accepted}; got {value} at position {position}")


def integer_labels(
    labels: Array, num_classes: int, ignore_index: int | None, xp: Any, *, name: str = "labels"
) -> None:
    """Integer dtype, values in [0, num_classes) or equal to ``ignore_index``.

    The bounds are compared as the integers they are, whatever the labels' dtype: a bound
    outside the dtype's range is never converted to it (where it would wrap: -1 as uint8
    is 255), it is decided from the range instead (no uint8 label equals -1, every one is
    below 300)."""
    if not xp.isdtype(labels.dtype, "integral"):
        raise TypeError(
            f"{name}: expected integer class indices; got dtype {labels.dtype} "
            f"(for probabilities or one-hot rows use softmax_cross_entropy)"
        )
    if size(labels) == 0:
        return
    if (values := readable(labels)) is None:
        return  # a meta or fake tensor: shapes only, no values to check
    labels = values
    info = xp.iinfo(labels.dtype)
    if info.min < 0 or num_classes <= info.max:
        try:
            low, high = _extremes(labels, xp)
        except NotImplementedError:
            pass  # no order comparisons for this dtype: refused below
        else:
            if int(low) >= 0 and int(high) < num_classes:
                return  # one sweep decides the common case; the masks only for the rest
    bad = None  # no bound the dtype can cross: nothing is out of range
    try:
        if info.min < 0:
            bad = labels < 0
        if num_classes <= info.max:
            high = labels >= num_classes
            bad = high if bad is None else bad | high
        if bad is not None and ignore_index is not None and info.min <= ignore_index <= info.max:
            bad = bad & (labels != ignore_index)
        found = bad is not None and bool(xp.any(bad))
    except NotImplementedError:
        # PyTorch has no order comparisons for uint16, uint32 and uint64
        raise TypeError(
            f"{name}: expected class indices of a dtype this array library can compare "
            f"(int64, or uint8 as torch.nn.functional.cross_entropy takes); "
            f"got dtype {labels.dtype}"
        ) from None
    if found:
        value, position = _first(bad, labels, xp)
        also = f" or ignore_index={ignore_index}" if ignore_index is not None else ""
        raise ValueError(
            f"{name}: expected class indices in [0, {num_classes}){also}; "
            f"got {value} at position {position}"
        )


def ignored(labels: Array, ignore_index: int | None, xp: Any) -> Array:
    """The mask of labels equal to ``ignore_index`` (all False for ``None``), compared
    exactly: an ``ignore_index`` outside the labels' dtype matches none of them."""
    info = xp.iinfo(labels.dtype)
    if ignore_index is None or not info.min <= ignore_index <= info.max:
        return xp.zeros(labels.shape, dtype=xp.bool, device=array_api_compat.device(labels))
    mask: Array = labels == ignore_index
    return mask


def holds_in_int64(labels: Any) -> bool:
    """Whether a torch tensor holds integers that int64 represents exactly: any integer
    dtype but uint64 (and not bool). The kernels read class indices as int64."""
    import torch

    return not (
        labels.is_floating_point()
        or labels.is_complex()
        or labels.dtype in (torch.bool, torch.uint64)
    )


def class_weight(weight: Array, num_classes: int) -> None:
    if tuple(weight.shape) != (num_classes,):
        raise ValueError(
            f"weight: expected one weight per class, shape ({num_classes},); "
            f"got {tuple(weight.shape)}"
        )


def label_shape(logits_shape: tuple[int, ...], class_axis: int, labels: Array) -> None:
    """Integer labels have the shape of the logits without the class axis."""
    expected = tuple(d for i, d in enumerate(logits_shape) if i != class_axis)
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"labels: expected shape {expected} (the logits' shape {tuple(logits_shape)} "
            f"without the class axis {class_axis}); got {tuple(labels.shape)}"
        )


def chunk_size(value: object) -> int | None:
    """Tokens per chunk of the vocabulary-scale losses: a positive integer, or ``None``
    (picked from the shapes)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"chunk_size: expected a positive integer or None; got {value!r}")
    return value


DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def distillation(
    divergence: object,
    beta: object,
    temperature_: object,
    soft_weight: object,
    hard_weight: object,
    *,
    has_target: bool = True,
) -> tuple[str, float, float, float, float]:
    """The settings of a distillation loss, checked: ``(divergence, beta, temperature,
    soft_weight, hard_weight)`` with the convention of the generalized JSD applied
    (``"jsd"`` with beta 0 is ``"forward_kl"`` and beta 1 ``"reverse_kl"``; those two
    ignore ``beta``, returned as 0.0 and 1.0, what the convention gives them)."""
    if not isinstance(divergence, str) or divergence not in DIVERGENCES:
        names = ", ".join(map(repr, DIVERGENCES))
        raise ValueError(f"divergence: expected one of {names}; got {divergence!r}")
    b = number_in("beta", beta, 0.0, 1.0, what="in [0, 1] (0: forward KL, 1: reverse KL)")
    t = temperature(temperature_)
    soft = number_in("soft_weight", soft_weight, 0.0, sys.float_info.max, what="finite and >= 0")
    hard = number_in("hard_weight", hard_weight, 0.0, sys.float_info.max, what="finite and >= 0")
    if soft == 0 and hard == 0:
        raise ValueError(
            "soft_weight, hard_weight: expected at least one of them > 0 (the loss would be "
            f"0 whatever the logits); got soft_weight={soft_weight!r} and "
            f"hard_weight={hard_weight!r}"
        )
    if hard > 0 and not has_target:
        raise ValueError(
            f"hard_weight: a hard-label cross-entropy term (hard_weight > 0) needs a target; "
            f"got hard_weight={hard_weight!r} and target=None"
        )
    if divergence == "jsd" and b in (0.0, 1.0):
        divergence = "forward_kl" if b == 0.0 else "reverse_kl"
    if divergence == "forward_kl":
        b = 0.0
    elif divergence == "reverse_kl":
        b = 1.0
    return divergence, b, t, soft, hard
