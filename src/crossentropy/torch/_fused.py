"""The fused cross-entropy path: loss and gradient in one sweep, softmax never stored.

The C kernel (:mod:`._kernel`) writes the gradient of the reduced loss straight into one
logits-sized buffer during the forward (or into the logits themselves with
``inplace_backward=True``); the backward only scales that buffer by the incoming gradient,
and returns it unchanged when that gradient is 1.

The readable reference is :func:`crossentropy.gradients.sparse_softmax_cross_entropy`; the
tests hold the kernel to it, forward and gradient.

The gradient is differentiable again: a backward with ``create_graph=True`` (a gradient
penalty, ``torch.func.grad``) recomputes it with torch operations on the saved logits, so
the second derivative is autograd's. ``torch.func.grad`` and ``jacrev`` run the kernel;
``vmap`` cannot (the kernel reads memory, not batched tensors) and is refused by name.
Meta tensors give the result's shape without running anything.

Under ``torch.compile`` the fused path works, with graph breaks: Dynamo cannot trace the
label check (it reads values, ``Tensor.item``) nor the ``ctypes`` call, so those run
eagerly between compiled graphs, with the same results as eager mode (tested).
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import torch

from .. import _validate, gradients
from .._array import wide_labels
from . import _kernel, conventions
from ._kernel import fused_available, release_cached_buffers

__all__ = ["FusedCrossEntropy", "fused_available", "fused_cross_entropy", "release_cached_buffers"]


class FusedCrossEntropy(torch.autograd.Function):
    """Loss in the forward, gradient already computed; the backward only rescales it.

    ``forward`` returns the loss and the gradient buffer (empty when no gradient is
    wanted; never differentiable); ``setup_context`` keeps the buffer, and the logits too
    when a gradient is wanted without ``inplace_backward``, for a differentiable or a
    repeated backward.

    First derivative: the kernel's buffer times the incoming gradient, handed out once; a
    later backward of a retained graph computes it again from the logits (autograd may
    have kept the first one as ``.grad`` and added into it). Second derivative
    (``create_graph=True``, ``torch.func.grad``): the backward then runs with grad mode on
    and recomputes the same gradient with differentiable torch operations,
    :func:`crossentropy.gradients.sparse_softmax_cross_entropy` on the saved logits, whose
    derivative autograd takes (the softmax Jacobian diag(p) - p p^T, through the soft cap).
    """

    @staticmethod
    def forward(
        logits: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        ignore_index: int,
        label_smoothing: float,
        z_loss: float,
        softcap: float | None,
        reduction: str,
        inplace_backward: bool,
        want_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = logits.shape[0]
        no_grad = logits.new_empty(0)
        if not conventions.has_values(logits):
            # meta or fake tensors (shape inference, tracing): shapes only
            shape = (rows,) if reduction == "none" else ()
            return logits.new_empty(shape), torch.empty_like(logits) if want_grad else no_grad
        if not want_grad:
            grad = None  # no_grad, or logits that need no gradient: the loss alone
        elif inplace_backward:
            grad = logits
            torch.autograd.graph.increment_version(logits)
        else:
            grad = _kernel.buffers.take(tuple(logits.shape), logits.dtype, logits.device)
        options = (ignore_index, label_smoothing, z_loss, softcap, reduction)
        row_losses, scale = _sweep(logits, grad, target, weight, options)
        loss = row_losses if reduction == "none" else row_losses.sum() * scale
        # the buffer is returned for setup_context to save (the logits are the buffer
        # with inplace_backward, and are saved as the input they are)
        return loss.to(logits.dtype), no_grad if grad is None or inplace_backward else grad

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        logits, target, weight, *options, inplace, want_grad = inputs
        _, buffer = output
        ctx.mark_non_differentiable(buffer)
        # no zeros of the buffer's size for its (never used) incoming gradient
        ctx.set_materialize_grads(False)
        # with inplace_backward the logits hold the gradient now; otherwise they are kept
        # (a reference, not a copy) for a differentiable or a repeated backward
        ctx.save_for_backward(logits if inplace or want_grad else None, target, weight)
        # the kernel's gradient, handed out once: autograd may keep it as .grad and add
        # the next backward's gradient into it (not saved for backward, whose version
        # check would then refuse every later backward of a retained graph)
        ctx.buffer = None if inplace else buffer
        ctx.options = options
        ctx.inplace = inplace
        ctx.used = False

    @staticmethod
    def vmap(info: Any, in_dims: Any, *args: Any) -> Any:
        raise ValueError(
            "impl='fused' cannot run under torch.func.vmap (nor jacfwd, hessian, which vmap "
            "it): the kernel reads memory, not batched tensors; use impl='auto' or "
            "impl='torch'"
        )

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Any:
        raise ValueError(
            "impl='fused' has no forward-mode derivative (torch.func.jvp, jacfwd, hessian, "
            "torch.autograd.forward_ad); use impl='auto' or impl='torch'"
        )

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor | None, _: Any) -> tuple[Any, ...]:  # type: ignore[override]
        logits, target, weight = ctx.saved_tensors
        reduction = ctx.options[-1]
        none = (None,) * 9
        if grad_output is None:
            return None, *none
        if ctx.inplace and ctx.used:
            raise RuntimeError(
                "inplace_backward=True: the gradient was written into the logits buffer and "
                "already handed out; a second backward (retain_graph=True) needs "
                "inplace_backward=False"
            )
        factor = grad_output.unsqueeze(-1) if reduction == "none" else grad_output
        if torch.is_grad_enabled():
            # create_graph=True: a gradient that is itself differentiable
            if ctx.inplace:
                raise RuntimeError(
                    "inplace_backward=True: a differentiable gradient (create_graph=True, "
                    "torch.func.grad, a double backward) needs the logits, which the "
                    "gradient has overwritten; use inplace_backward=False"
                )
            differentiable = _torch_gradient(logits, target, weight, ctx.options)
            return differentiable * factor.to(differentiable.dtype), *none
        if ctx.inplace:
            grad = logits.detach()  # the kernel wrote the gradient over the logits
            ctx.used = True
        elif ctx.buffer is not None:
            grad, ctx.buffer = ctx.buffer, None  # handed out once
        else:
            # a later backward of a retained graph: the first one's gradient may be .grad
            # by now, so the kernel computes the same gradient again from the saved logits
            grad = torch.empty_like(logits)
            _sweep(logits.detach(), grad, target, weight, ctx.options)
        factor = factor.to(torch.float32 if grad.dtype != torch.float64 else grad.dtype)
        plain_factor = not conventions.batched(factor) and conventions.has_values(factor)
        if reduction != "none" and plain_factor and bool(factor == 1):
            return grad, *none
        if ctx.inplace and plain_factor:
            return grad.mul_(factor), *none
        return (grad * factor).to(grad.dtype), *none


def _sweep(
    logits: torch.Tensor,
    grad: torch.Tensor | None,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    options: Any,
) -> tuple[torch.Tensor, float]:
    """The kernel over every row: the per-row losses (float64) and the reduction's scale
    d(reduced)/d(row loss), with the gradient of the reduced loss written into ``grad``
    (unless ``None``)."""
    ignore_index, eps, z_coef, cap, reduction = options
    target = target.to(torch.int64).contiguous()
    scale = conventions.mean_scale(target, weight, ignore_index, reduction)
    weight_sum = conventions.class_weight_sum(weight, logits.shape[1])
    row_losses = _kernel.launch(
        logits,
        grad,
        target,
        weight,
        ignore_index=ignore_index,
        eps=eps,
        z_loss=z_coef,
        cap=0.0 if cap is None else cap,
        weight_sum=weight_sum,
        scale=scale,
    )
    return row_losses, scale


def _torch_gradient(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, options: Any
) -> torch.Tensor:
    """The kernel's gradient as torch operations on the logits (differentiable when grad
    mode is on): :func:`crossentropy.gradients.sparse_softmax_cross_entropy`."""
    ignore_index, eps, z_coef, cap, reduction = options
    _, gradient = gradients.sparse_softmax_cross_entropy(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=eps,
        z_loss=z_coef,
        softcap=cap,
        reduction=reduction,
    )
    result: torch.Tensor = gradient
    return result


def fused_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
    inplace_backward: bool = False,
) -> torch.Tensor:
    r"""Softmax cross entropy with class-index targets, fused forward and backward.

    Same loss, gradient and conventions as
    :func:`crossentropy.sparse_softmax_cross_entropy` (a mean over nothing is 0; ignored
    rows have exactly zero gradient), computed in one sweep that writes the gradient while
    the loss is computed and never stores the softmax.

    Args:
        logits: (M, C) float32, float64, float16 or bfloat16 CPU tensor; rows contiguous.
        target: (M,) integer class ids in [0, C), or ``ignore_index``.
        weight: (C,) floating-point class weights, or ``None``; not differentiated
            (refused if it requires grad, as ``torch.nn.functional`` refuses it).
        ignore_index: the target value that marks a row to skip.
        label_smoothing: epsilon in [0, 1].
        z_loss: the coefficient of logsumexp(z)^2, >= 0.
        softcap: c > 0, finite, to use c tanh(x / c) as the logits, or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        inplace_backward: write the gradient into ``logits`` itself (the logits are
            destroyed; only when nothing else needs them, and one backward only, not
            differentiable twice). Refused for a leaf that requires grad or a view of
            one, and for logits whose rows share memory.

    Returns:
        The loss: a scalar, or (M,) for ``reduction="none"``; differentiable in ``logits``.

    Example:
        >>> import torch
        >>> from crossentropy.torch._fused import fused_cross_entropy
        >>> logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], requires_grad=True)
        >>> loss = fused_cross_entropy(logits, torch.tensor([0, 1]))
        >>> loss.backward()
        >>> print(f"{loss.item():.4f}", logits.grad.round(decimals=4).tolist())
        0.3185 [[-0.1705, 0.1212, 0.0493], [0.0543, -0.0988, 0.0445]]
    """
    _validate.reduction(reduction)
    eps = _validate.label_smoothing(label_smoothing)
    z_coef = _validate.z_loss(z_loss)
    cap = _validate.softcap(softcap)
    ignore_index = _validate.ignore_index(ignore_index)
    inplace_backward = _validate.flag("inplace_backward", inplace_backward)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
        raise ValueError(f"logits: expected a 2-D (rows, classes) tensor; got {shape}")
    if logits.dtype not in _kernel.KERNELS:
        raise TypeError(
            f"logits: expected float32, float64, float16 or bfloat16; got {logits.dtype}"
        )
    if logits.device.type not in ("cpu", "meta"):
        raise ValueError(
            f"logits: impl='fused' runs on CPU tensors; got device {logits.device} "
            f"(use impl='torch' there)"
        )
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target: expected a torch.Tensor; got {type(target).__name__}")
    classes = logits.shape[1]
    _validate.label_shape(tuple(logits.shape), 1, target)
    want_grad = torch.is_grad_enabled() and logits.requires_grad
    for name, tensor in (("logits", logits), ("target", target), ("weight", weight)):
        if tensor is not None and conventions.batched(tensor):
            raise ValueError(
                f"{name}: impl='fused' cannot run under torch.func.vmap (the kernel reads "
                f"memory, not batched tensors); use impl='auto' or impl='torch', which "
                f"vmap batches"
            )
        if tensor is not None and tensor.device != logits.device:
            raise ValueError(
                f"{name}: expected a tensor on the logits' device {logits.device}; "
                f"got {tensor.device}"
            )
    xp = array_api_compat.array_namespace(target)
    target = wide_labels(target, xp)  # compared as int64, whatever the labels' dtype
    _validate.integer_labels(target, classes, ignore_index, xp)
    if weight is not None:
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
            what = weight.dtype if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise TypeError(f"weight: expected a floating-point tensor; got {what}")
        _validate.class_weight(weight, classes)
        if weight.requires_grad and torch.is_grad_enabled():
            raise ValueError(
                "weight: impl='fused' has no gradient with respect to the class weights, and "
                "this weight requires grad; pass weight.detach(), or use impl='torch' (or "
                "impl='auto'), which differentiates the weights too"
            )
    if logits.stride(1) != 1:
        if inplace_backward:
            raise ValueError(
                "inplace_backward: needs logits whose rows are contiguous; got strides "
                f"{logits.stride()}"
            )
        logits = logits.contiguous()
    if inplace_backward and want_grad:
        conventions.check_writable("logits", logits, "inplace_backward=True")
    result = FusedCrossEntropy.apply(  # type: ignore[no-untyped-call]
        logits,
        target,
        weight,
        ignore_index,
        eps,
        z_coef,
        cap,
        reduction,
        inplace_backward,
        want_grad,
    )
    loss: torch.Tensor = result[0]
    return loss
