r"""The losses of :mod:`torch.nn.functional`, with the same names, signatures and results.

``import crossentropy.torch.functional as F`` in place of ``import torch.nn.functional as F``:
every function here takes the arguments of its PyTorch namesake, in the same order with the
same defaults (the legacy ``size_average``/``reduce`` included), and returns what PyTorch
returns, with gradients through autograd. The math is the library's core
(:mod:`crossentropy.losses`) run on torch tensors; :func:`cross_entropy` can also run the
fused kernel (``impl="fused"``) or the Triton kernels (``impl="triton"``) and takes the extra
keyword-only arguments ``z_loss``, ``softcap``, ``inplace_backward`` and ``impl``.

Where PyTorch returns NaN for a finite answer, the core's answer is returned instead:

- a mean over nothing (an empty batch, every target ignored, zero total weight) is 0 with a
  zero gradient, where PyTorch divides 0 by 0;
- a ``-inf`` logit with zero label mass (probability targets) contributes 0, where PyTorch
  computes ``0 * -inf``;
- ``binary_cross_entropy_with_logits`` at infinite logits takes its limits: 0 for
  (+inf, 1) and (-inf, 0), +inf for (-inf, 1) and (+inf, 0);
- ``kl_div`` gives 0 where the target is exactly 0 whatever the input (``-inf`` included),
  and a ``"batchmean"``/``"mean"`` over an empty input is 0; any other target goes through
  PyTorch's formula (a negative target gives a NaN loss and the gradient ``-target``, a NaN
  target NaN);
- ``mse_loss``/``l1_loss`` with ``weight`` and ``reduction="mean"`` divide by the summed
  weight, and give 0 when that sum is 0.

``binary_cross_entropy`` takes its forward from the core and its derivative from PyTorch's
formula, (p - y) / max(p (1 - p), 1e-12), which stays finite at p = 0 or 1 where autograd
through the clamped logs would give NaN.

PyTorch's conventions hold for every loss here: under ``torch.autocast`` each is an fp32 op
(float16/bfloat16 arguments computed in float32, a float32 result), as PyTorch's losses are
(:mod:`crossentropy.torch.conventions`); each works under ``torch.func.grad``, ``jacrev`` and
``vmap``, and twice differentiable (``create_graph=True``); meta tensors give the result's
shape. ``cross_entropy(impl="auto")`` takes the core's path where the fused kernel has no
answer: under ``torch.func`` transforms and forward-mode AD, and for class weights that
require grad (whose gradient it computes, where PyTorch refuses them). ``impl="fused"``
runs under ``grad``/``jacrev`` and refuses ``vmap``, forward mode (``jvp``, ``jacfwd``,
``hessian``) and weights that require grad, each with an error.

Other differences, on purpose: bad input raises ``ValueError``/``TypeError`` naming the
argument (PyTorch raises ``RuntimeError``/``IndexError`` for some), and class-index targets
may have any integer dtype (PyTorch requires int64 or uint8).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, ParamSpec

import numpy as np
import torch
from torch import Tensor

from .. import _validate
from .. import losses as _losses
from . import _fused, conventions, dispatch, native

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "mse_loss",
    "nll_loss",
    "smooth_l1_loss",
]


# ----------------------------------------------------------------------------------------
# argument handling shared by every loss


_CORE_NAMES = (
    ("labels", "target"),
    ("logits", "input"),
    ("log_probs", "input"),
    ("probs", "input"),
)

_P = ParamSpec("_P")


def _torch_names(function: Callable[_P, Tensor]) -> Callable[_P, Tensor]:
    """Errors raised by the core name its arguments (``logits``, ``labels``); re-raise them
    with the names of PyTorch's arguments (``input``, ``target``)."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Tensor:
        try:
            return function(*args, **kwargs)
        except (ValueError, TypeError) as error:
            message = str(error)
            for core, ours in _CORE_NAMES:
                if message.startswith(core + ":"):
                    raise type(error)(ours + message[len(core) :]) from error
            raise

    return wrapper


def _reduction(
    size_average: bool | None,
    reduce: bool | None,
    reduction: str,
    accepted: tuple[str, ...] = _validate.REDUCTIONS,
) -> str:
    """The reduction in force: the legacy flags if either is given, else ``reduction``."""
    if size_average is not None or reduce is not None:
        return conventions.legacy_reduction(size_average, reduce)
    if reduction == "elementwise_mean":  # PyTorch's deprecated spelling of "mean"
        warnings.warn(
            "reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
            UserWarning,
            stacklevel=3,
        )
        return "mean"
    return _validate.reduction(reduction, accepted)


def _tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor; got {type(value).__name__}")
    return value


def _optional_tensor(name: str, value: object) -> Tensor | None:
    return None if value is None else _tensor(name, value)


def _class_inputs(input: Tensor, target: Tensor, weight: Tensor | None) -> None:
    """Floating-point scores, and a target and weight on the input's device, as torch
    requires of cross_entropy and nll_loss."""
    if not input.is_floating_point():
        raise TypeError(f"input: expected floating-point scores; got dtype {input.dtype}")
    for name, tensor in (("target", target), ("weight", weight)):
        if tensor is not None and tensor.device != input.device:
            raise ValueError(
                f"{name}: expected a tensor on the input's device {input.device}; "
                f"got {tensor.device}"
            )


def _class_weight(value: object) -> Tensor | None:
    """Per-class weights: a floating-point tensor, as torch requires, or None."""
    weight = _optional_tensor("weight", value)
    if weight is not None and not weight.is_floating_point():
        raise TypeError(f"weight: expected floating-point class weights; got dtype {weight.dtype}")
    return weight


def _broadcast(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """PyTorch's regression losses broadcast ``target`` against ``input``, with a warning."""
    if input.shape == target.shape:
        return input, target
    warnings.warn(
        f"Using a target size ({target.size()}) that is different to the input size "
        f"({input.size()}). This will likely lead to incorrect results due to broadcasting. "
        f"Please ensure they have the same size.",
        UserWarning,
        stacklevel=3,
    )
    try:
        shape = np.broadcast_shapes(tuple(input.shape), tuple(target.shape))
    except ValueError:
        raise ValueError(
            f"target: expected a shape that broadcasts with the input's "
            f"{tuple(input.shape)}; got {tuple(target.shape)}"
        ) from None
    return input.expand(shape), target.expand(shape)


def _same_size_weight(weight: Tensor | None, input: Tensor) -> Tensor | None:
    if weight is not None and weight.shape != input.shape:
        raise ValueError(
            f"weight: expected the input's shape {tuple(input.shape)} (one weight per "
            f"element); got {tuple(weight.shape)}"
        )
    return weight


def _class_axis(name: str, input: Tensor) -> int:
    """PyTorch's class axis: 1 for (N, C, d1, ..., dK), 0 for an unbatched (C,) input."""
    if input.ndim == 0:
        raise ValueError(
            f"{name}: expected a tensor with a class axis, shape (C,), (N, C) or "
            f"(N, C, d1, ..., dK); got a 0-dimensional tensor"
        )
    return 1 if input.ndim >= 2 else 0


def _mean(per_example: Tensor, count: Tensor | float) -> Tensor:
    """sum / count, and 0 (with a zero gradient) when count is 0
    (:func:`crossentropy.losses.safe_mean`)."""
    total = per_example.sum()
    count = torch.as_tensor(count, dtype=total.dtype, device=total.device)
    mean: Tensor = _losses.safe_mean(total, count, torch)
    return mean


# ----------------------------------------------------------------------------------------
# cross entropy and negative log likelihood


def _choose_impl(
    impl: object, input: Tensor, target: Tensor, weight: Tensor | None, probabilities: bool
) -> dispatch.Impl:
    """The path of :func:`cross_entropy`. The fused kernel takes class-index targets, the
    native path probability targets too; neither has an answer or a rule under torch.func
    transforms and forward-mode AD (the kernel reads memory; neither has a vmap or jvp
    rule), nor a gradient for class weights or probability targets that require grad
    (autograd through the core's formula has): ``"auto"`` takes the exact torch path
    there."""
    requested = dispatch.impl(impl)
    if requested != "auto":
        return requested  # nothing to look at (torch.compile traces no check it needs not)
    tensors = (input, target) if weight is None else (input, target, weight)
    grad = torch.is_grad_enabled()
    native_takes = not (
        any(conventions.transformed(t) for t in tensors)
        or (weight is not None and weight.requires_grad and grad)
        or (probabilities and target.requires_grad and grad)
    )
    return dispatch.choose(
        requested,
        input.device,
        triton_takes=True,
        fused_takes=native_takes and not probabilities,
        native_takes=native_takes,
    )


def _as_rows(x: Tensor, num_classes: int) -> Tensor:
    """(N, C, d1, ..., dK) or (C,) as (M, C) rows, the class axis last, for the kernels."""
    if x.ndim == 1:
        return x.reshape(1, num_classes)
    return x if x.ndim == 2 else x.movedim(1, -1).reshape(-1, num_classes)


def _softcapped(input: Tensor, softcap: float | None) -> Tensor:
    cap = _validate.softcap(softcap)
    return input if cap is None else cap * torch.tanh(input / cap)


def _cross_entropy_probabilities(
    input: Tensor,
    target: Tensor,
    axis: int,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
) -> Tensor:
    """Probability targets: the core's softmax_cross_entropy, plus optional z-loss."""
    conventions.probability_target(input, target, ignore_index)
    z_coef = _validate.z_loss(z_loss)
    logits = _softcapped(input, softcap)
    if z_coef == 0:
        result: Tensor = _losses.softmax_cross_entropy(
            logits,
            target,
            axis=axis,
            weight=weight,
            label_smoothing=label_smoothing,
            reduction=reduction,
        )
        return result
    per_example: Tensor = _losses.softmax_cross_entropy(
        logits,
        target,
        axis=axis,
        weight=weight,
        label_smoothing=label_smoothing,
        reduction="none",
    )
    lse = torch.logsumexp(logits.float() if logits.itemsize < 4 else logits, dim=axis)
    per_example = per_example + (z_coef * lse * lse).to(per_example.dtype)
    if reduction == "none":
        return per_example
    if reduction == "sum":
        return per_example.sum()
    return _mean(per_example, per_example.numel())


def _cross_entropy_native_probabilities(
    input: Tensor,
    target: Tensor,
    axis: int,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
) -> Tensor:
    """Probability targets on torch's fused operations (``native.native_cross_entropy``):
    (N, C, d1..dK) and (C,) inputs and targets become (M, C) rows."""
    conventions.probability_target(input, target, ignore_index)
    num_classes = int(input.shape[axis])
    loss: Tensor = native.native_cross_entropy(
        _as_rows(input, num_classes),
        _as_rows(target, num_classes),
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        reduction=reduction,
    )
    if reduction != "none":
        return loss
    return loss.reshape(input.shape[:axis] + input.shape[axis + 1 :])


def _cross_entropy_rows(
    kernel: Callable[..., Tensor],
    input: Tensor,
    target: Tensor,
    axis: int,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    inplace_backward: bool,
) -> Tensor:
    """Class-index targets on the fused kernel (``_fused.fused_cross_entropy``) or torch's
    fused operations (``native.native_cross_entropy``): (N, C, d1..dK) and (C,) become
    (M, C) rows."""
    _validate.label_shape(tuple(input.shape), axis, target)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"target: expected integer class indices; got dtype {target.dtype} "
            f"(probability targets have the input's shape)"
        )
    num_classes = int(input.shape[axis])
    logits = _as_rows(input, num_classes)
    options = {"inplace_backward": inplace_backward} if inplace_backward else {}
    loss: Tensor = kernel(
        logits,
        target.reshape(-1),
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        reduction=reduction,
        **options,
    )
    return loss.reshape(target.shape) if reduction == "none" else loss


def _cross_entropy_triton(
    input: Tensor,
    target: Tensor,
    axis: int,
    probabilities: bool,
    options: dict[str, Any],
) -> Tensor:
    """The Triton kernels: (N, C, d1..dK) and (C,) inputs (and probability targets) become
    (M, C) rows, class-index targets (M,)."""
    kernels = dispatch.triton_module()
    num_classes = int(input.shape[axis])
    if not probabilities:
        _validate.label_shape(tuple(input.shape), axis, target)

    flat_target = _as_rows(target, num_classes) if probabilities else target.reshape(-1)
    loss: Tensor = kernels.cross_entropy(_as_rows(input, num_classes), flat_target, **options)
    if options["reduction"] != "none":
        return loss
    shape = target.shape[:axis] + target.shape[axis + 1 :] if probabilities else target.shape
    return loss.reshape(shape)


@_torch_names
@conventions.float32_under_autocast
def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    z_loss: float = 0.0,
    softcap: float | None = None,
    inplace_backward: bool = False,
    impl: dispatch.Impl = "auto",
) -> Tensor:
    r"""Cross entropy between logits and class indices or class probabilities.

    ``torch.nn.functional.cross_entropy`` with the same arguments and results, plus z-loss,
    logit soft-capping and a fused kernel. With :math:`z = c \tanh(x / c)` (``softcap=c``;
    :math:`z = x` without it), :math:`\log p = \operatorname{log\_softmax}(z)` over the class
    axis and class-index targets :math:`y_i`,

    .. math::

        \ell_i = (1 - \varepsilon)\, w_{y_i} (-\log p_{i y_i})
               + \frac{\varepsilon}{C} \sum_c w_c (-\log p_{ic})
               + \lambda_z\, w_{y_i} \operatorname{logsumexp}(z_i)^2

    and ``reduction="mean"`` divides the sum by :math:`\sum_i w_{y_i}` over the targets that
    are not ``ignore_index``. With probability targets :math:`q` (a target of the input's
    shape) the loss is :math:`-\sum_c w_c q'_c \log p_c` with
    :math:`q' = (1 - \varepsilon) q + \varepsilon / C`, plus
    :math:`\lambda_z \operatorname{logsumexp}(z)^2`, and the mean is over examples.

    Args:
        input: logits, shape (C,), (N, C) or (N, C, d1, ..., dK): classes on axis 1
            (axis 0 when unbatched).
        target: class indices in [0, C) (or ``ignore_index``) of shape (), (N) or
            (N, d1, ..., dK); or class probabilities of the input's shape.
        weight: per-class weights, shape (C,), or ``None``.
        size_average: deprecated; see ``reduction``.
        ignore_index: class-index targets equal to it add zero loss and zero gradient.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (one loss per example).
        label_smoothing: epsilon in [0, 1].
        z_loss: lambda_z >= 0, the weight of the log-partition penalty (PaLM); 0 turns it off.
        softcap: c > 0 (finite) to soft-cap the logits to (-c, c) first (Gemma 2), or
            ``None`` for no cap.
        inplace_backward: let the fused kernel write the gradient into ``input``'s storage,
            for callers that do not need the logits after the loss. Needs the fused path
            (or Triton's, whose backward writes it): an error with ``impl="torch"`` or
            ``"native"``; ignored when ``impl="auto"`` picks ``"torch"`` or ``"native"``.
            Refused, as PyTorch refuses in-place writes, for a leaf that requires grad (a
            parameter) or a view of one, and for an input whose elements share memory (an
            ``expand``-ed view); one backward only, and not differentiable twice.
        impl: ``"fused"`` (the fused forward+backward kernel; class-index targets only),
            ``"triton"`` (the Triton kernels of :mod:`crossentropy.triton`: CUDA tensors,
            or CPU tensors under ``TRITON_INTERPRET=1``), ``"native"`` (torch's fused
            operations with the library's numerics; class indices or probabilities that
            need no gradient), ``"torch"`` (the core's math under autograd: the readable
            reference), or ``"auto"``: ``"triton"`` for CUDA tensors when Triton is
            installed, ``"fused"`` for class-index targets on CPU when the kernel is
            available, ``"native"`` for them where no kernel is (with one warning) and
            for probability targets, else ``"torch"`` (under ``torch.func`` transforms,
            for weights or probability targets that require grad;
            :func:`crossentropy.torch.dispatch.choose`).

    Returns:
        A scalar, or with ``reduction="none"`` the per-example losses of the target's shape
        (class indices) or the input's shape without the class axis (probabilities).

    Example:
        >>> import torch
        >>> from crossentropy.torch import functional as F
        >>> logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
        >>> target = torch.tensor([0, 1])
        >>> print(f"{F.cross_entropy(logits, target, impl='torch').item():.4f}")
        0.3185
        >>> print(f"{F.cross_entropy(logits, target, z_loss=1e-4, impl='torch').item():.4f}")
        0.3192
    """
    input = _tensor("input", input)
    target = _tensor("target", target)
    weight = _class_weight(weight)
    reduction = _reduction(size_average, reduce, reduction)
    ignore_index = _validate.ignore_index(ignore_index)
    label_smoothing = _validate.label_smoothing(label_smoothing)
    z_loss = _validate.z_loss(z_loss)
    softcap = _validate.softcap(softcap)
    inplace_backward = _validate.flag("inplace_backward", inplace_backward)
    _class_inputs(input, target, weight)
    axis = _class_axis("input", input)
    probabilities = input.shape == target.shape
    chosen = _choose_impl(impl, input, target, weight, probabilities)
    if chosen == "triton":
        options = {
            "weight": weight,
            "ignore_index": ignore_index,
            "label_smoothing": label_smoothing,
            "z_loss": z_loss,
            "softcap": softcap,
            "reduction": reduction,
            "inplace_backward": inplace_backward,
        }
        return _cross_entropy_triton(input, target, axis, probabilities, options)
    if inplace_backward and chosen == "native" and impl == "native":
        raise ValueError(
            "inplace_backward: True needs the fused kernel (impl='fused' or 'auto'); "
            "impl='native' keeps the logits and cannot write the gradient into them"
        )
    if chosen == "native" and probabilities:
        return _cross_entropy_native_probabilities(
            input, target, axis, weight, ignore_index, reduction, label_smoothing, z_loss, softcap
        )
    if chosen in ("fused", "native"):
        if probabilities:
            raise ValueError(
                f"impl={chosen!r}: takes class-index targets (shape "
                f"{tuple(input.shape[:axis]) + tuple(input.shape[axis + 1 :])}); got a target "
                f"of the input's shape {tuple(target.shape)} (class probabilities). "
                f"Use impl='native', impl='torch' or impl='auto' for probability targets"
            )
        fused = chosen == "fused"
        return _cross_entropy_rows(
            _fused.fused_cross_entropy if fused else native.native_cross_entropy,
            input,
            target,
            axis,
            weight,
            ignore_index,
            reduction,
            label_smoothing,
            z_loss,
            softcap,
            inplace_backward and fused,
        )
    if inplace_backward and impl == "torch":
        raise ValueError(
            "inplace_backward: True needs the fused kernel (impl='fused' or 'auto'); "
            "impl='torch' keeps the logits and cannot write the gradient into them"
        )
    if probabilities:
        return _cross_entropy_probabilities(
            input,
            target,
            axis,
            weight,
            ignore_index,
            reduction,
            label_smoothing,
            z_loss,
            softcap,
        )
    result: Tensor = _losses.sparse_softmax_cross_entropy(
        input,
        target,
        axis=axis,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        reduction=reduction,
    )
    return result


@_torch_names
@conventions.float32_under_autocast
def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Negative log likelihood of class indices under log-probabilities.

    ``torch.nn.functional.nll_loss`` with the same arguments and results:

    .. math::

        \ell_i = -w_{y_i} \log p_{i y_i}

    and ``reduction="mean"`` divides the sum by :math:`\sum_i w_{y_i}` over the targets that
    are not ``ignore_index`` (0 when there are none).

    Args:
        input: log-probabilities, shape (C,), (N, C) or (N, C, d1, ..., dK).
        target: class indices in [0, C) or ``ignore_index``, shape (), (N) or (N, d1..dK).
        weight: per-class weights, shape (C,), or ``None``.
        size_average: deprecated; see ``reduction``.
        ignore_index: targets equal to it add zero loss and zero gradient.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or the per-example losses of the target's shape.

    Example:
        >>> import torch
        >>> from crossentropy.torch import functional as F
        >>> log_probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]).log()
        >>> print(f"{F.nll_loss(log_probs, torch.tensor([0, 1])).item():.4f}")
        0.2899
    """
    input = _tensor("input", input)
    target = _tensor("target", target)
    weight = _class_weight(weight)
    reduction = _reduction(size_average, reduce, reduction)
    ignore_index = _validate.ignore_index(ignore_index)
    _class_inputs(input, target, weight)
    result: Tensor = _losses.nll_loss(
        input,
        target,
        axis=_class_axis("input", input),
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
    )
    return result


# ----------------------------------------------------------------------------------------
# binary cross entropy

_BCE_EPSILON = 1e-12
"""PyTorch's floor for p (1 - p) in the derivative of ``binary_cross_entropy``."""


class _BinaryCrossEntropy(torch.autograd.Function):
    """Elementwise binary cross entropy: the core's forward, PyTorch's backward.

    Autograd through the clamped logs would give 0 * inf = NaN at p = 0 or 1 (the clamp
    passes no gradient, and d log p / dp = 1/p is infinite). PyTorch's derivative is finite
    there; it is written out here, beside the forward:

        d loss / d p = w (p - y) / max(p (1 - p), 1e-12)
        d loss / d y = w (log(1 - p) - log p)
    """

    generate_vmap_rule = True  # the forward and backward are torch operations only

    @staticmethod
    def forward(input: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
        loss: Tensor = _losses.binary_cross_entropy(
            input, target, eps=None, weight=weight, reduction="none"
        )
        return loss

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def partials(input: Tensor, target: Tensor, weight: Tensor | None) -> tuple[Tensor, Tensor]:
        """d loss / d p and d loss / d y, elementwise, in float32 at least."""
        p = input.float() if input.itemsize < 4 else input
        y = target.to(p.dtype)
        w = 1.0 if weight is None else weight.to(p.dtype)
        d_input = w * (p - y) / torch.clamp_min(p * (1 - p), _BCE_EPSILON)
        d_target = w * (torch.log1p(-p) - torch.log(p))
        return d_input, d_target

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # type: ignore[override]
        input, target, weight = ctx.saved_tensors
        d_input, d_target = _BinaryCrossEntropy.partials(input, target, weight)
        scale = grad.to(d_input.dtype)
        grad_input = grad_target = None
        if ctx.needs_input_grad[0]:
            grad_input = (scale * d_input).to(input.dtype)
        if ctx.needs_input_grad[1]:
            grad_target = (scale * d_target).to(target.dtype)
        return grad_input, grad_target, None

    @staticmethod
    def jvp(ctx: Any, input_t: Tensor | None, target_t: Tensor | None, _: Any) -> Tensor:
        """Forward mode: the same partials times the tangents (the weight is a constant)."""
        input, target, weight = ctx.saved_tensors
        d_input, d_target = _BinaryCrossEntropy.partials(input, target, weight)
        tangent = torch.zeros_like(d_input)
        if input_t is not None:
            tangent = tangent + d_input * input_t.to(d_input.dtype)
        if target_t is not None:
            tangent = tangent + d_target * target_t.to(d_target.dtype)
        return tangent.to(input.dtype)


@_torch_names
@conventions.float32_under_autocast
def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Binary cross entropy between probabilities and targets, elementwise.

    ``torch.nn.functional.binary_cross_entropy`` with the same arguments and results, each
    log clamped at -100 as PyTorch does:

    .. math::

        \ell = -w \,[\, y \max(\log p, -100) + (1 - y) \max(\log(1 - p), -100) \,]

    Args:
        input: probabilities in [0, 1], any shape.
        target: targets in [0, 1], the input's shape.
        weight: weights broadcastable to the input's shape, or ``None``.
        size_average: deprecated; see ``reduction``.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"`` over all elements, ``"sum"`` or ``"none"``.

    Returns:
        A scalar, or the elementwise losses.

    Example:
        >>> import torch
        >>> from crossentropy.torch import functional as F
        >>> probs, target = torch.tensor([0.9, 0.2, 0.6]), torch.tensor([1.0, 0.0, 0.0])
        >>> print(F.binary_cross_entropy(probs, target, reduction="none"))
        tensor([0.1054, 0.2231, 0.9163])
    """
    input = _tensor("input", input)
    target = _tensor("target", target)
    weight = _optional_tensor("weight", weight)
    reduction = _reduction(size_average, reduce, reduction)
    if not input.is_floating_point():
        raise TypeError(f"input: expected floating-point probabilities; got dtype {input.dtype}")
    if weight is not None and weight.requires_grad:
        raise ValueError(
            "weight: expected a tensor that does not require grad; the derivative for "
            "'weight' is not implemented (as in PyTorch)"
        )
    per_element: Tensor = _BinaryCrossEntropy.apply(input, target, weight)  # type: ignore[no-untyped-call]
    if reduction == "none":
        return per_element
    if reduction == "sum":
        return per_element.sum()
    return _mean(per_element, per_element.numel())


@_torch_names
@conventions.float32_under_autocast
def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    r"""Binary cross entropy on logits (sigmoid cross entropy), elementwise.

    ``torch.nn.functional.binary_cross_entropy_with_logits`` with the same arguments and
    results, computed stably as

    .. math::

        \ell = w \,[\, p_w\, y \operatorname{softplus}(-x) + (1 - y) \operatorname{softplus}(x) \,]

    At infinite logits the loss takes its limits (0 for (+inf, 1) and (-inf, 0), +inf for
    (-inf, 1) and (+inf, 0)) where PyTorch gives NaN for three of the four.

    Args:
        input: logits, any shape.
        target: targets in [0, 1], the input's shape.
        weight: weights broadcastable to the input's shape, or ``None``.
        size_average: deprecated; see ``reduction``.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"`` over all elements, ``"sum"`` or ``"none"``.
        pos_weight: weight of the positive term, broadcast along the last (class) axis,
            e.g. shape (C,), or ``None``.

    Returns:
        A scalar, or the elementwise losses.

    Example:
        >>> import torch
        >>> from crossentropy.torch import functional as F
        >>> logits, target = torch.tensor([3.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 1.0])
        >>> print(F.binary_cross_entropy_with_logits(logits, target, reduction="none"))
        tensor([0.0486, 0.3133, 0.4741])
        >>> pos_weight = torch.tensor([2.0, 2.0, 2.0])
        >>> print(F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight))
        tensor(0.4529)
    """
    input = _tensor("input", input)
    target = _tensor("target", target)
    weight = _optional_tensor("weight", weight)
    pos_weight = _optional_tensor("pos_weight", pos_weight)
    reduction = _reduction(size_average, reduce, reduction)
    result: Tensor = _losses.sigmoid_cross_entropy(
        input, target, pos_weight=pos_weight, weight=weight, reduction=reduction
    )
    return result


# ----------------------------------------------------------------------------------------
# Kullback-Leibler divergence


@_torch_names
@conventions.float32_under_autocast
def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    r"""Pointwise Kullback-Leibler divergence of a target from log-probabilities.

    ``torch.nn.functional.kl_div`` with the same arguments and results. ``input`` holds
    :math:`\log q` and ``target`` holds :math:`p` (or :math:`\log p` with
    ``log_target=True``); each element is

    .. math::

        \ell = p \,(\log p - \log q), \qquad 0 \text{ where } p = 0

    ``reduction="batchmean"`` divides the sum by the batch size ``input.size(0)``, which is
    the KL divergence :math:`D_{KL}(p \,\|\, q)` averaged over the batch; ``"mean"``, kept for
    compatibility, divides by the number of elements (batch times support), as PyTorch does,
    and warns about it.

    Args:
        input: log-probabilities :math:`\log q`, any shape.
        target: probabilities :math:`p` (or :math:`\log p`), broadcastable with ``input``.
        size_average: deprecated; see ``reduction``.
        reduce: deprecated; see ``reduction``.
        reduction: ``"batchmean"``, ``"mean"``, ``"sum"`` or ``"none"``.
        log_target: whether ``target`` holds log-probabilities.

    Returns:
        A scalar, or the elementwise terms.

    Example:
        >>> import torch
        >>> from crossentropy.torch import functional as F
        >>> log_q = torch.tensor([[0.25, 0.75], [0.5, 0.5]]).log()
        >>> p = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
        >>> print(f"{F.kl_div(log_q, p, reduction='batchmean').item():.4f}")
        0.4185
    """
    input = _tensor("input", input)
    target = _tensor("target", target)
    if not isinstance(log_target, bool):
        raise TypeError(f"log_target: expected True or False; got {log_target!r}")
    legacy = size_average is not None or reduce is not None
    reduction = _reduction(
        size_average, reduce, reduction, accepted=("mean", "batchmean", "sum", "none")
    )
    if reduction == "mean" and not legacy:
        warnings.warn(
            "kl_div: reduction='mean' divides the total by the number of elements (batch "
            "size times support size), as torch.nn.functional.kl_div does; "
            "reduction='batchmean' divides by the batch size only and is the KL divergence.",
            UserWarning,
            stacklevel=2,
        )
    if log_target:
        # p (log p - log q) with p = exp(target); a target of -inf (p = 0) contributes 0
        zero = target == -math.inf
        safe = torch.where(zero, torch.zeros_like(target), target)
        terms = torch.exp(safe) * (safe - torch.where(zero, torch.zeros_like(input), input))
        pointwise = torch.where(zero, torch.zeros_like(terms), terms)
    else:
        # p (log p - log q); only an exact p = 0 is replaced (by 1 inside the formula, then
        # by the decided 0 log 0 = 0), so that neither the loss nor the gradients meet
        # 0 * inf there. Every other p goes through the formula as PyTorch's does: p < 0
        # gives a NaN loss with d/d(log q) = -p, a NaN p gives NaN loss and gradients.
        zero = target == 0
        safe = torch.where(zero, torch.ones_like(target), target)
        terms = safe * (torch.log(safe) - torch.where(zero, torch.zeros_like(input), input))
        pointwise = torch.where(zero, torch.zeros_like(terms), terms)
    if reduction == "none":
        return pointwise
    if reduction == "sum":
        return pointwise.sum()
    if reduction == "batchmean":
        if input.ndim == 0:
            return pointwise.sum()
        return _mean(pointwise, int(input.shape[0]))
    return _mean(pointwise, pointwise.numel())


# ----------------------------------------------------------------------------------------
# regression losses


def _weighted(
    per_element: Tensor, weight: Tensor | None, reduction: str, mean_over_weight: bool
) -> Tensor:
    """Apply an elementwise ``weight`` and reduce, as PyTorch's weighted regression losses do.

    ``mean_over_weight``: the mean divides by the summed weight (``mse_loss``, ``l1_loss``)
    rather than by the number of elements (``huber_loss``).
    """
    loss = per_element if weight is None else per_element * weight
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if weight is not None and mean_over_weight:
        return _mean(loss, weight.sum())
    return _mean(loss, loss.numel())


def _regression(
    loss: Callable[..., Tensor],
    input: object,
    target: object,
    reduction: str,
    weight: object,
    divide_by_weight: bool,
    **parameter: float,
) -> Tensor:
    """A core regression loss with torch's argument handling: tensors checked, the target
    broadcast against the input as torch does, and an optional elementwise weight."""
    input = _tensor("input", input)
    target = _tensor("target", target)
    w = _same_size_weight(_optional_tensor("weight", weight), input)
    x, t = _broadcast(input, target)
    if w is None:
        result: Tensor = loss(x, t, reduction=reduction, **parameter)
        return result
    return _weighted(loss(x, t, reduction="none", **parameter), w, reduction, divide_by_weight)


@_torch_names
@conventions.float32_under_autocast
def mse_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    r"""Mean squared error, elementwise, optionally weighted.

    ``torch.nn.functional.mse_loss`` with the same arguments and results:

    .. math::

        \ell = w\,(x - t)^2

    With ``weight`` and ``reduction="mean"`` the sum is divided by the summed weight.

    Args:
        input: predictions, any shape.
        target: targets, broadcast against ``input`` (with a warning) if shapes differ.
        size_average: deprecated; see ``reduction``.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        weight: elementwise weights of the input's shape, or ``None``.

    Returns:
        A scalar, or the elementwise losses.

    Example:
        >>> import torch
        >>> from crossentropy.torch import functional as F
        >>> print(F.mse_loss(torch.tensor([0.3, 0.3, 0.4]), torch.tensor([0.0, 0.0, 1.0])))
        tensor(0.1800)
    """
    reduction = _reduction(size_average, reduce, reduction)
    return _regression(_losses.mse, input, target, reduction, weight, True)


@_torch_names
@conventions.float32_under_autocast
def l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    r"""Absolute error, elementwise, optionally weighted.

    ``torch.nn.functional.l1_loss`` with the same arguments and results:

    .. math::

        \ell = w\,|x - t|

    With ``weight`` and ``reduction="mean"`` the sum is divided by the summed weight.

    Args:
        input: predictions, any shape.
        target: targets, broadcast against ``input`` (with a warning) if shapes differ.
        size_average: deprecated; see ``reduction``.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        weight: elementwise weights of the input's shape, or ``None``.

    Returns:
        A scalar, or the elementwise losses.

    Example:
        >>> import torch
        >>> from crossentropy.torch import functional as F
        >>> print(F.l1_loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 1.0])))
        tensor(1.2500)
    """
    reduction = _reduction(size_average, reduce, reduction)
    return _regression(_losses.l1, input, target, reduction, weight, True)


@_torch_names
@conventions.float32_under_autocast
def smooth_l1_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    r"""Smooth L1: quadratic below ``beta``, linear beyond, elementwise.

    ``torch.nn.functional.smooth_l1_loss`` with the same arguments and results:

    .. math::

        \ell = \begin{cases} 0.5\, d^2 / \beta & |d| < \beta \\
                             |d| - 0.5\, \beta & \text{otherwise} \end{cases},
        \qquad d = x - t

    Args:
        input: predictions, any shape.
        target: targets, broadcast against ``input`` (with a warning) if shapes differ.
        size_average: deprecated; see ``reduction``.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        beta: the width of the quadratic zone, >= 0 (0 is L1).

    Returns:
        A scalar, or the elementwise losses.

    Example:
        >>> import torch
        >>> from crossentropy.torch import functional as F
        >>> print(F.smooth_l1_loss(torch.tensor([0.5, 3.0]), torch.zeros(2), reduction="none"))
        tensor([0.1250, 2.5000])
    """
    reduction = _reduction(size_average, reduce, reduction)
    return _regression(_losses.smooth_l1, input, target, reduction, None, True, beta=beta)


@_torch_names
@conventions.float32_under_autocast
def huber_loss(
    input: Tensor,
    target: Tensor,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: Tensor | None = None,
) -> Tensor:
    r"""Huber loss: quadratic below ``delta``, linear with slope ``delta`` beyond.

    ``torch.nn.functional.huber_loss`` with the same arguments and results:

    .. math::

        \ell = w \begin{cases} 0.5\, d^2 & |d| < \delta \\
                               \delta (|d| - 0.5\, \delta) & \text{otherwise} \end{cases},
        \qquad d = x - t

    With ``weight`` and ``reduction="mean"`` the weighted losses are averaged over the
    elements (not divided by the summed weight), as PyTorch does.

    Args:
        input: predictions, any shape.
        target: targets, broadcast against ``input`` (with a warning) if shapes differ.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        delta: the threshold, > 0.
        weight: elementwise weights of the input's shape, or ``None``.

    Returns:
        A scalar, or the elementwise losses.

    Example:
        >>> import torch
        >>> from crossentropy.torch import functional as F
        >>> x = torch.tensor([0.5, 3.0])
        >>> print(F.huber_loss(x, torch.zeros(2), delta=2.0, reduction="none"))
        tensor([0.1250, 4.0000])
    """
    reduction = _reduction(None, None, reduction)
    return _regression(_losses.huber, input, target, reduction, weight, False, delta=delta)
