"""PyTorch's conventions that every loss here follows: autocast, functorch, in-place writes.

Small checks shared by the losses of :mod:`crossentropy.torch` (functional, fused, linear,
distributed), so that each convention is written once:

- :func:`autocast_dtype`: the lower precision of an autocast region on a tensor's device,
  for the losses that run a matrix product in it (linear + cross entropy).
- :func:`float32_under_autocast`: the autocast policy of PyTorch's own losses. Under
  ``torch.autocast`` every loss of ``torch.nn.functional`` is an "fp32" op (PyTorch's CPU
  and CUDA autocast op lists): float16/bfloat16 arguments are cast to float32, the loss is
  computed with autocast off, and the result is float32 (float64 stays float64).
- :func:`batched`: whether a tensor is batched by ``torch.func.vmap`` at any level, where
  the fused kernels (which read raw memory) cannot run and value checks cannot branch.
- :func:`transformed`: whether a tensor is under any ``torch.func`` transform or carries a
  forward-mode tangent, where ``impl="auto"`` takes a path of torch operations.
- :func:`has_values`: whether a tensor has values to check (not meta, not a fake tensor
  of ``torch.compile``), where otherwise only shapes are known.
- :func:`probability_target`: the checks of a target of class probabilities (a
  floating-point tensor, no ``ignore_index`` that could name a class), whichever path
  computes the loss.
- :func:`legacy_reduction`: PyTorch's rule for the deprecated ``size_average`` and
  ``reduce`` flags.
- :func:`mean_scale`: d(reduced loss)/d(row loss) of class-index targets, where a mean
  over nothing (no rows, every target ignored, zero total weight) is 0 with zero gradient.
- :func:`check_writable`: the refusals of PyTorch for in-place writes (a leaf that requires
  grad, a view of one, a tensor whose elements overlap in memory), for paths that write a
  gradient into their input.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy
import torch
from torch import Tensor

from .. import _validate, losses

__all__ = [
    "autocast_dtype",
    "batched",
    "check_writable",
    "class_weight_sum",
    "float32_under_autocast",
    "has_values",
    "legacy_reduction",
    "mean_scale",
    "probability_target",
    "transformed",
]

_P = ParamSpec("_P")
_R = TypeVar("_R")

_LOWER_PRECISION = (torch.float16, torch.bfloat16)


def _autocast_device(args: tuple[object, ...], kwargs: dict[str, object]) -> str | None:
    """The device type of the first tensor argument if autocast is on for it, else None."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            device_type = value.device.type
            if not torch.amp.is_autocast_available(device_type):
                return None
            return device_type if torch.is_autocast_enabled(device_type) else None
    return None


def _to_float32(value: object) -> object:
    if isinstance(value, Tensor) and value.dtype in _LOWER_PRECISION:
        return value.float()
    return value


def autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The lower-precision dtype of an autocast region enabled on ``x``'s device, if any
    (where a matrix product runs in that dtype while a loss runs in float32)."""
    device_type = x.device.type
    if not torch.amp.is_autocast_available(device_type):
        return None
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def float32_under_autocast(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``function`` as an autocast "fp32" op, as PyTorch runs its losses.

    Outside autocast the call is unchanged. Inside ``torch.autocast(device_type)``, float16
    and bfloat16 tensor arguments become float32 and the function runs with autocast off
    for that device, so its result is float32 (or float64 for float64 arguments), as
    ``torch.nn.functional.cross_entropy`` and the other losses return under autocast.
    """

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        device_type = _autocast_device(args, kwargs)
        if device_type is None:
            return function(*args, **kwargs)
        cast_args = tuple(_to_float32(a) for a in args)
        cast_kwargs = {k: _to_float32(v) for k, v in kwargs.items()}
        with torch.autocast(device_type, enabled=False):
            return function(*cast_args, **cast_kwargs)  # type: ignore[arg-type]

    return wrapper


def batched(x: Tensor) -> bool:
    """Whether ``x`` is batched by ``torch.func.vmap`` at some level (possibly under
    ``grad``/``jacrev`` wrappers)."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(x):
        if functorch.is_batchedtensor(x):
            return True
        x = functorch.get_unwrapped(x)
    return False


def transformed(x: Tensor) -> bool:
    """Whether ``x`` is under a ``torch.func`` transform (``grad``, ``vmap``, ``jvp``,
    ``jacrev``, ``hessian``, ...) or carries a forward-mode tangent
    (``torch.autograd.forward_ad``): where a path that reads memory directly has no
    derivative rule of its own, and a path made of torch operations should be taken."""
    if torch._C._functorch.is_functorch_wrapped_tensor(x):
        return True
    unpacked = torch.autograd.forward_ad.unpack_dual(x)  # type: ignore[no-untyped-call]
    return unpacked.tangent is not None


def has_values(x: Tensor) -> bool:
    """Whether ``x`` holds numbers that can be read: not a meta tensor, not a fake tensor
    (the shape-only tensors that ``torch.compile`` and ``torch.export`` trace with); the
    values under functorch wrappers count (:func:`crossentropy._validate.readable`)."""
    return _validate.readable(x) is not None


def check_writable(name: str, x: Tensor, why: str) -> None:
    """Refuse to write into ``x`` where PyTorch refuses an in-place operation: a leaf that
    requires grad (a parameter: the write would change it, and its ``.grad`` would share
    its storage), a view of such a leaf, or a tensor with elements that share memory (an
    ``expand``-ed or overlapping view: one write would land on several elements)."""
    base = x._base if x._base is not None else x
    if x.requires_grad and (x.is_leaf or (base.is_leaf and base.requires_grad)):
        raise ValueError(
            f"{name}: {why} writes into this tensor, but it is a leaf that requires grad "
            f"(or a view of one), such as a parameter; pass a non-leaf tensor (the output "
            f"of an operation) or turn the in-place option off"
        )
    if _may_overlap(x):
        raise ValueError(
            f"{name}: {why} writes into this tensor, but its elements may share memory "
            f"(strides {x.stride()} for shape {tuple(x.shape)}, e.g. an expand()-ed view); "
            f"pass a tensor with its own memory (.contiguous()) or turn the in-place "
            f"option off"
        )


def _may_overlap(x: Tensor) -> bool:
    """False when the strides prove that no two elements share memory: ordered by stride,
    each dimension of size > 1 steps past the whole extent of the smaller ones."""
    extent = 1
    for stride, size in sorted((s, n) for s, n in zip(x.stride(), x.shape, strict=True) if n > 1):
        if stride < extent:
            return True
        extent = stride * size
    return False


def mean_scale(target: Tensor, weight: Tensor | None, ignore_index: int, reduction: str) -> float:
    """d(reduced loss)/d(row loss) for class-index ``target`` (int64): for a mean, 1 over the
    summed weight of the counted targets (their number without ``weight``), and 0 when that
    is 0: a mean over nothing is 0, with zero gradient (:func:`crossentropy.losses.mean_scale`,
    on the host in float64); 1 for a sum or ``"none"``."""
    if reduction != "mean":
        return 1.0
    counted = target != ignore_index
    if weight is None:
        count = float(counted.sum())
    else:
        picked = weight.double()[torch.where(counted, target, 0)]
        count = float(torch.where(counted, picked, 0.0).sum())
    # on the host, in NumPy's float64: a tensor made for one number costs more than the rule
    return float(losses.mean_scale(numpy.float64(count), numpy))


def class_weight_sum(weight: Tensor | None, classes: int) -> float:
    """The sum of the class weights (``classes`` without them), which label smoothing
    spreads its mass over."""
    return float(classes) if weight is None else float(weight.double().sum())


def probability_target(input: Tensor, target: Tensor, ignore_index: int) -> None:
    """A target of the input's shape holds class probabilities: it must be floating point,
    and ``ignore_index`` (which could name a class of a class-index target) must be
    negative, as its default -100 is."""
    if not target.is_floating_point():
        raise TypeError(
            f"target: a target of the input's shape {tuple(input.shape)} holds class "
            f"probabilities and must be floating point; got dtype {target.dtype} (class "
            f"indices have the input's shape without the class axis 1)"
        )
    if ignore_index >= 0:
        raise ValueError(
            f"ignore_index: not supported with probability targets (a target of the input's "
            f"shape); expected a negative value such as the default -100; got {ignore_index}"
        )


def legacy_reduction(size_average: bool | None, reduce: bool | None) -> str:
    """PyTorch's rule for the deprecated ``size_average`` and ``reduce`` flags.

    Either one given (not ``None``) overrides ``reduction``: a missing flag counts as True;
    both True is ``"mean"``, ``reduce`` alone True is ``"sum"``, ``reduce=False`` is
    ``"none"``. PyTorch warns that the flags are deprecated, and so do we.
    """
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if size_average and reduce:
        result = "mean"
    elif reduce:
        result = "sum"
    else:
        result = "none"
    warnings.warn(
        f"size_average and reduce args will be deprecated, please use "
        f"reduction='{result}' instead.",
        UserWarning,
        stacklevel=3,
    )
    return result
