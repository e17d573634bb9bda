# mypy: disable-error-code="untyped-decorator,no-untyped-def,no-any-return"
r"""Cross entropy over a (rows, classes) logits matrix as two Triton kernels.

For each row x (C logits) with z = c tanh(x / c) (``softcap=c``; z = x without), class
weights w, smoothing eps and z-loss coefficient zl, the label masses are

.. code-block:: text

    class index y:      a_j = (eps/C) w_j,                 plus (1-eps) w_y on the target
    probabilities q:    a_j = w_j ((1-eps) q_j + eps/C)

and with lse = logsumexp(z), p = softmax(z), A = sum_j a_j (A includes (1-eps) w_y):

.. code-block:: text

    loss  = sum_j a_j (lse - z_j) + zl v lse^2          v = w_y (class index) or 1
    dloss/dz_j = r p_j - a_j,   r = A + 2 zl v lse      (sum_j p_j = 1)
    dloss/dx_j = dloss/dz_j (1 - (z_j / c)^2)           (soft cap)

The forward kernel streams each row once (an online log-sum-exp over column blocks,
:func:`._tiles.online_update`) and stores the row's loss, lse and r; it writes nothing
logits-sized. The backward kernel streams the row again and writes the gradient times the
incoming gradient and the reduction's scale, into a new buffer or into the logits
themselves (``inplace_backward=True``): two reads and one write of each logit in all, and
the softmax is never stored. Each step of a training loop pays the same; under no_grad the
loss costs one read.

float16/bfloat16 logits are computed in float32 (float64 in float64), and the gradient is
rounded once to the logits' dtype.

No host synchronisation: the mean's denominator (the summed weight of the counted targets)
stays a device tensor that the backward reads, and nothing branches on tensor values, so a
step can be captured in a CUDA graph, and the kernels are ``torch.library`` custom ops that
``torch.compile(fullgraph=True)`` keeps whole (tested on CPU under the interpreter). For the
same reason class indices are not range-checked on the host: a target outside [0, C) other
than ``ignore_index`` gives a NaN loss for its row (and NaN gradients), never a memory
access outside the row.

:func:`reference` is the same computation in plain PyTorch, the readable form of the
kernels; the tests hold both to the library's float64 core.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _validate
from ._tiles import (
    check_device,
    check_first_order,
    check_inplace,
    check_same_device,
    check_tensors,
    compute_dtype,
    device_scale,
    finish,
    kernel_parameters,
    next_power_of_2,
    online_update,
    row_setup,
)
from ._tiles import softcap as _softcap
from ._tiles import softcap_slope as _softcap_slope

__all__ = [
    "MAX_BLOCK_CLASSES",
    "MAX_BLOCK_CLASSES_ALLOWED",
    "TILE_ELEMENTS",
    "TritonCrossEntropy",
    "cross_entropy",
    "reference",
]

MAX_BLOCK_CLASSES = 4096
"""Columns of a tile: one row block streams its row in slices of at most this many logits."""

MAX_BLOCK_CLASSES_ALLOWED = 65536
"""The largest ``block_classes`` a caller may ask for (a tile's index range is int32)."""

TILE_ELEMENTS = 4096
"""Rows x columns of a tile: small vocabularies take several rows per program."""


# ----------------------------------------------------------------------------------------
# the kernels


@triton.jit
def _masses(labels_ptr, labels_stride, weight_ptr, params_ptr, rows64, cols, col_ok, inside,
            SOFT: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr,
            COMPUTE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr):  # fmt: skip
    """The label masses a_j of a tile (see the module docstring); the target's own
    (1-eps) w_y of a class index is handled apart."""
    eps = tl.load(params_ptr + 0)
    smooth = tl.load(params_ptr + 3)
    if SOFT:
        q = tl.load(labels_ptr + rows64[:, None] * labels_stride + cols[None, :], mask=inside,
                    other=0.0).to(COMPUTE)  # fmt: skip
        a = (1.0 - eps) * q + smooth
    elif SMOOTH:
        a = tl.full((BLOCK_N, BLOCK_V), 1.0, COMPUTE) * smooth
    else:
        a = tl.zeros((BLOCK_N, BLOCK_V), COMPUTE)
    if HAS_WEIGHT and (SOFT or SMOOTH):
        w = tl.load(weight_ptr + cols, mask=col_ok, other=0.0).to(COMPUTE)
        a = a * w[None, :]
    return tl.where(inside, a, 0.0)


@triton.jit
def _forward_kernel(x_ptr, x_stride, target_ptr, labels_stride, weight_ptr, params_ptr,
                    loss_ptr, lse_ptr, coef_ptr, n_rows, classes, ignore_index,
                    SOFT: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr,
                    HAS_CAP: tl.constexpr, HAS_Z: tl.constexpr, COMPUTE: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr):  # fmt: skip
    """Loss, lse and r of BLOCK_N rows, streaming each row once in BLOCK_V slices."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    cap = tl.load(params_ptr + 2)
    y, live, bad, coef_y, v = row_setup(
        target_ptr, weight_ptr, params_ptr, rows, row_ok, classes, ignore_index,
        SOFT, HAS_WEIGHT, SMOOTH, COMPUTE,
    )  # fmt: skip
    m = tl.full((BLOCK_N,), -float("inf"), COMPUTE)
    s = tl.zeros((BLOCK_N,), COMPUTE)
    t = tl.zeros((BLOCK_N,), COMPUTE)
    mass = tl.zeros((BLOCK_N,), COMPUTE)
    for start in range(0, classes, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        col_ok = cols < classes
        inside = live[:, None] & col_ok[None, :]
        x = tl.load(x_ptr + rows64[:, None] * x_stride + cols[None, :], mask=inside, other=0.0)
        z = _softcap(x.to(COMPUTE), cap, HAS_CAP)
        a = _masses(
            target_ptr, labels_stride, weight_ptr, params_ptr, rows64, cols, col_ok, inside,
            SOFT, HAS_WEIGHT, SMOOTH, COMPUTE, BLOCK_N, BLOCK_V,
        )  # fmt: skip
        m, s, t, mass = online_update(m, s, t, mass, z, a, inside)
    z_y = tl.zeros((BLOCK_N,), COMPUTE)
    if not SOFT:  # the target's logit, read directly
        x_y = tl.load(x_ptr + rows64 * x_stride + y, mask=live & (bad == 0), other=0.0)
        z_y = _softcap(x_y.to(COMPUTE), cap, HAS_CAP)
    loss, lse, r = finish(m, s, t, mass, z_y, coef_y, v, live, bad, params_ptr, HAS_Z)
    tl.store(loss_ptr + rows, loss, mask=row_ok)
    tl.store(lse_ptr + rows, lse, mask=row_ok)
    tl.store(coef_ptr + rows, r, mask=row_ok)


@triton.jit
def _backward_kernel(x_ptr, x_stride, target_ptr, labels_stride, weight_ptr, params_ptr,
                     lse_ptr, coef_ptr, factor_ptr, factor_stride, grad_ptr, grad_stride,
                     n_rows, classes, ignore_index,
                     SOFT: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr,
                     HAS_CAP: tl.constexpr, COMPUTE: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr):  # fmt: skip
    """grad = factor (r p - a - (1-eps) w_y onehot) dz/dx for BLOCK_N rows, written once;
    rows that do not contribute get exact zeros (and are not read)."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    cap = tl.load(params_ptr + 2)
    y, live, _, coef_y, _ = row_setup(
        target_ptr, weight_ptr, params_ptr, rows, row_ok, classes, ignore_index,
        SOFT, HAS_WEIGHT, SMOOTH, COMPUTE,
    )  # fmt: skip
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    r = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)
    factor = tl.load(factor_ptr + rows64 * factor_stride, mask=row_ok, other=0.0).to(COMPUTE)
    for start in range(0, classes, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        col_ok = cols < classes
        inside = live[:, None] & col_ok[None, :]
        x = tl.load(x_ptr + rows64[:, None] * x_stride + cols[None, :], mask=inside, other=0.0)
        x = x.to(COMPUTE)
        z = _softcap(x, cap, HAS_CAP)
        a = _masses(
            target_ptr, labels_stride, weight_ptr, params_ptr, rows64, cols, col_ok, inside,
            SOFT, HAS_WEIGHT, SMOOTH, COMPUTE, BLOCK_N, BLOCK_V,
        )  # fmt: skip
        g = r[:, None] * tl.exp(z - lse[:, None]) - a
        if not SOFT:
            g -= tl.where(cols[None, :] == y[:, None], coef_y[:, None], 0.0)
        g = g * factor[:, None]
        if HAS_CAP:
            g = g * _softcap_slope(x, cap, HAS_CAP)
        g = tl.where(inside, g, 0.0)
        tl.store(
            grad_ptr + rows64[:, None] * grad_stride + cols[None, :],
            g.to(grad_ptr.dtype.element_ty),
            mask=row_ok[:, None] & col_ok[None, :],
        )


# ----------------------------------------------------------------------------------------
# launchers, as torch.library custom ops (opaque to torch.compile, which keeps them whole)


def _tiles(rows: int, classes: int, block_classes: int | None) -> tuple[int, int]:
    block_v = block_classes or min(next_power_of_2(classes), MAX_BLOCK_CLASSES)
    block_n = max(1, min(next_power_of_2(rows), TILE_ELEMENTS // block_v))
    return block_n, block_v


def _flags(target: Tensor, weight: Tensor | None, params: Tensor, flags: list[bool]) -> Any:
    soft, smooth, has_cap, has_z = flags
    return {
        "SOFT": soft,
        "HAS_WEIGHT": weight is not None,
        "SMOOTH": smooth,
        "HAS_CAP": has_cap,
        "HAS_Z": has_z,
        "COMPUTE": tl.float64 if params.dtype == torch.float64 else tl.float32,
    }


@torch.library.custom_op("crossentropy::triton_cross_entropy_forward", mutates_args=())
def _forward_op(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    params: Tensor,
    ignore_index: int,
    flags: list[bool],
    block_classes: int,
) -> tuple[Tensor, Tensor, Tensor]:
    rows, classes = logits.shape
    out = [torch.empty(rows, dtype=params.dtype, device=logits.device) for _ in range(3)]
    block_n, block_v = _tiles(rows, classes, block_classes or None)
    constants = _flags(target, weight, params, flags)
    if rows:
        _forward_kernel[(triton.cdiv(rows, block_n),)](
            logits, logits.stride(0), target, target.stride(0), weight, params,
            *out, rows, classes, ignore_index,
            **constants, BLOCK_N=block_n, BLOCK_V=block_v,
        )  # fmt: skip
    return out[0], out[1], out[2]


@_forward_op.register_fake
def _(logits, target, weight, params, ignore_index, flags, block_classes):  # type: ignore[no-untyped-def]
    rows = logits.shape[0]
    return tuple(logits.new_empty(rows, dtype=params.dtype) for _ in range(3))


def _launch_backward(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    params: Tensor,
    lse: Tensor,
    coef: Tensor,
    factor: Tensor,
    ignore_index: int,
    flags: list[bool],
    block_classes: int,
    grad: Tensor,
) -> None:
    rows, classes = logits.shape
    if rows == 0:
        return
    block_n, block_v = _tiles(rows, classes, block_classes or None)
    constants = _flags(target, weight, params, flags)
    del constants["HAS_Z"]  # r already holds the z-loss
    _backward_kernel[(triton.cdiv(rows, block_n),)](
        logits, logits.stride(0), target, target.stride(0), weight, params,
        lse, coef, factor, 0 if factor.numel() == 1 else 1, grad, grad.stride(0),
        rows, classes, ignore_index,
        **constants, BLOCK_N=block_n, BLOCK_V=block_v,
    )  # fmt: skip


@torch.library.custom_op("crossentropy::triton_cross_entropy_backward", mutates_args=())
def _backward_op(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    params: Tensor,
    lse: Tensor,
    coef: Tensor,
    factor: Tensor,
    ignore_index: int,
    flags: list[bool],
    block_classes: int,
) -> Tensor:
    grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
    _launch_backward(
        logits, target, weight, params, lse, coef, factor, ignore_index, flags, block_classes,
        grad,
    )  # fmt: skip
    return grad


@_backward_op.register_fake
def _(logits, target, weight, params, lse, coef, factor, ignore_index, flags, block_classes):  # type: ignore[no-untyped-def]
    return torch.empty_like(logits)


@torch.library.custom_op(
    "crossentropy::triton_cross_entropy_backward_inplace", mutates_args=("logits",)
)
def _backward_inplace_op(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    params: Tensor,
    lse: Tensor,
    coef: Tensor,
    factor: Tensor,
    ignore_index: int,
    flags: list[bool],
    block_classes: int,
) -> None:
    # each tile is fully read before its gradient is written over it, by the same program
    _launch_backward(
        logits, target, weight, params, lse, coef, factor, ignore_index, flags, block_classes,
        logits,
    )  # fmt: skip


@_backward_inplace_op.register_fake
def _(logits, target, weight, params, lse, coef, factor, ignore_index, flags, block_classes):  # type: ignore[no-untyped-def]
    return None


# ----------------------------------------------------------------------------------------
# autograd


class TritonCrossEntropy(torch.autograd.Function):
    """Forward kernel for the loss (and each row's lse and r); backward kernel for the
    gradient, scaled by the incoming gradient. See the module docstring for the math."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None,
        params: Tensor,
        ignore_index: int,
        flags: list[bool],
        reduction: str,
        inplace_backward: bool,
        block_classes: int,
    ) -> Tensor:
        losses, lse, coef = _forward_op(
            logits, target, weight, params, ignore_index, flags, block_classes
        )
        scale = device_scale(target, weight, ignore_index, reduction, flags[0], params.dtype)
        ctx.save_for_backward(logits, target, weight, params, lse, coef, scale)
        ctx.options = (ignore_index, flags, reduction, inplace_backward, block_classes)
        if reduction == "none":
            return losses.to(logits.dtype)
        return (losses.sum() * scale).to(logits.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        check_first_order("cross_entropy")
        logits, target, weight, params, lse, coef, scale = ctx.saved_tensors
        ignore_index, flags, _, inplace, block_classes = ctx.options
        factor = (grad_output.to(params.dtype) * scale).reshape(-1)
        arguments = (logits, target, weight, params, lse, coef, factor, ignore_index, flags)
        if inplace:
            _backward_inplace_op(*arguments, block_classes)
            grad = logits
        else:
            grad = _backward_op(*arguments, block_classes)
        return grad, *([None] * 8)


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
    inplace_backward: bool = False,
    block_classes: int | None = None,
) -> Tensor:
    r"""Softmax cross entropy of (rows, classes) logits on the Triton kernels.

    The loss and gradient of :func:`crossentropy.torch.cross_entropy` (whose
    ``impl="triton"`` calls this after flattening (N, C, d1, ..., dK) inputs): class indices
    or class probabilities, class weights, ``ignore_index``, label smoothing, z-loss and
    soft-capping, a mean over nothing is 0.

    Args:
        logits: (M, C) float32, float64, float16 or bfloat16, on a CUDA device (or on the
            CPU when Triton's interpreter is on); the rows need not be contiguous with each
            other, the classes must be.
        target: (M,) integer class indices in [0, C) or ``ignore_index``; or (M, C)
            floating-point class probabilities.
        weight: (C,) class weights, or ``None``.
        ignore_index: class-index targets equal to it add zero loss and zero gradient.
        label_smoothing: epsilon in [0, 1].
        z_loss: the coefficient of logsumexp(z)^2 (weighted by w_y for class indices), >= 0.
        softcap: c > 0 to use c tanh(x / c) as the logits, or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        inplace_backward: the backward writes the gradient over ``logits`` (which must not
            be needed afterwards; one backward only) instead of into a new buffer.
        block_classes: columns per tile (a power of two); ``None`` picks one.

    Returns:
        The loss, a scalar or (M,), in the logits' dtype; differentiable in ``logits``.

    Example (CUDA tensors; these CPU ones run because the test suite sets
    ``TRITON_INTERPRET=1``):
        >>> import torch
        >>> from crossentropy.triton import cross_entropy
        >>> logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], requires_grad=True)
        >>> loss = cross_entropy(logits, torch.tensor([0, 1]))
        >>> loss.backward()
        >>> print(f"{loss.item():.4f}", logits.grad.round(decimals=4).tolist())
        0.3185 [[-0.1705, 0.1212, 0.0493], [0.0543, -0.0988, 0.0445]]
    """
    _validate.reduction(reduction)
    eps = _validate.label_smoothing(label_smoothing)
    z_coef = _validate.z_loss(z_loss)
    cap = _validate.softcap(softcap)
    ignore_index = _validate.ignore_index(ignore_index)
    check_tensors(target=target, weight=weight)
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"logits: expected a 2-D (rows, classes) tensor; got {shape}")
    if logits.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(
            f"logits: expected float32, float64, float16 or bfloat16; got {logits.dtype}"
        )
    if not isinstance(inplace_backward, bool):
        raise TypeError(f"inplace_backward: expected True or False; got {inplace_backward!r}")
    check_device("logits", logits, _forward_kernel)
    check_same_device("target", target, logits.device)
    check_same_device("weight", weight, logits.device)
    rows, classes = logits.shape
    soft = target.shape == logits.shape and target.is_floating_point()
    if soft:
        if ignore_index >= 0:
            raise ValueError(
                f"ignore_index: not supported with probability targets; expected a negative "
                f"value such as the default -100; got {ignore_index}"
            )
    else:
        _validate.label_shape((rows, classes), 1, target)
        # the kernels compare class indices in int64, which holds every integer dtype but uint64
        if not _validate.holds_in_int64(target):
            raise TypeError(
                f"target: expected integer class indices (int64, or a narrower integer dtype) "
                f"of shape ({rows},) or probabilities of shape ({rows}, {classes}); "
                f"got dtype {target.dtype}"
            )
    if weight is not None:
        _validate.class_weight(weight, classes)
    if block_classes is not None and (
        not isinstance(block_classes, int)
        or isinstance(block_classes, bool)
        or not 16 <= block_classes <= MAX_BLOCK_CLASSES_ALLOWED
        or block_classes & (block_classes - 1)
    ):
        raise ValueError(
            f"block_classes: expected a power of two in [16, {MAX_BLOCK_CLASSES_ALLOWED}], "
            f"or None; got {block_classes!r}"
        )
    if inplace_backward:
        check_inplace("logits", logits)
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    if soft and target.stride(1) != 1:
        target = target.contiguous()
    compute = compute_dtype(logits.dtype)
    # the scalars travel as a device tensor in the compute dtype (a float argument would be
    # rounded to float32): eps, z_loss, cap, eps / C
    values = [eps, z_coef, 1.0 if cap is None else cap, eps / classes if classes else 0.0]
    params = kernel_parameters(tuple(values), compute, logits.device)
    flags = [soft, eps > 0, cap is not None, z_coef > 0]
    result: Tensor = TritonCrossEntropy.apply(  # type: ignore[no-untyped-call]
        logits,
        target if soft else target.to(torch.int64),
        None if weight is None else weight.contiguous(),
        params,
        int(ignore_index),
        flags,
        reduction,
        inplace_backward,
        block_classes or 0,
    )
    return result


# ----------------------------------------------------------------------------------------
# the readable reference: the kernels' computation in plain PyTorch


def reference(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> tuple[Tensor, Tensor]:
    """Per-row losses and their gradient d(row loss)/d(logits), as the kernels compute them,
    in whole rows and the logits' dtype (float64 for a check). Class indices or
    probabilities; no reduction."""
    rows, classes = logits.shape
    x = logits
    z = x if softcap is None else softcap * torch.tanh(x / softcap)
    w = torch.ones(classes, dtype=x.dtype) if weight is None else weight.to(x.dtype)
    eps = label_smoothing
    if target.shape == logits.shape:  # probabilities: a_j = w_j ((1-eps) q_j + eps/C)
        a = w * ((1 - eps) * target.to(x.dtype) + eps / classes)
        v = torch.ones(rows, dtype=x.dtype)
        live = torch.ones(rows, dtype=torch.bool)
    else:  # class index: a_j = (eps/C) w_j + (1-eps) w_y [j = y]
        counted = target != ignore_index
        y = torch.where(counted, target, 0)
        v = torch.where(counted, w[y], 0.0)
        live = counted if eps > 0 else counted & (v != 0)
        a = (eps / classes) * w.expand(rows, classes).clone()
        a[torch.arange(rows), y] += (1 - eps) * v
    lse = torch.logsumexp(z, dim=1)
    log_p = z - lse[:, None]
    loss = -(torch.where(a == 0, 0.0, a * log_p)).sum(1) + z_loss * v * lse * lse
    r = a.sum(1) + 2 * z_loss * v * lse
    grad = r[:, None] * torch.softmax(z, dim=1) - a
    if softcap is not None:
        grad = grad * (1 - (z / softcap) ** 2)
    return torch.where(live, loss, 0.0), torch.where(live[:, None], grad, 0.0)
