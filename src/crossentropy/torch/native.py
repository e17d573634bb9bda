r"""Cross entropy of class indices on torch's own fused operations, with the library's numerics.

What ``impl="native"`` runs, and what ``impl="auto"`` runs where no kernel of this library
can be had (no C compiler for the fused kernel on CPU, no Triton on CUDA): torch's
``log_softmax`` (one vectorised sweep over the logits), a ``gather`` of the targets'
log-probabilities, and a backward written out beside the forward, so that it costs what
``torch.nn.functional.cross_entropy`` costs or less, with the answers of the readable
reference (:func:`crossentropy.sparse_softmax_cross_entropy`, ``impl="torch"``).

The math, per row i of logits x with target y (w the class weights, all ones without
them; W = sum_c w_c; eps the label smoothing; lambda the z-loss; C classes):

.. math::

    \log p = \operatorname{log\_softmax}(x), \qquad
    \operatorname{lse} = \operatorname{logsumexp}(x)

    \ell_i = (1 - \varepsilon) w_y (-\log p_y) + \frac{\varepsilon}{C} \sum_c w_c (-\log p_c)
             + \lambda w_y \operatorname{lse}^2

    \frac{\partial \ell_i}{\partial x_k} = A_i\, p_k - (1 - \varepsilon) w_y [k = y]
             - \frac{\varepsilon}{C} w_k, \qquad
    A_i = (1 - \varepsilon) w_y + \frac{\varepsilon}{C} W + 2 \lambda w_y \operatorname{lse}

since d(-log p_c)/dx_k = p_k - [k = c] and d lse/dx_k = p_k. The forward keeps
p = exp(log p) (computed in place over log p: the one logits-sized buffer it allocates),
and the first backward turns it into the gradient in place: p A s - the target's term -
the smoothing's term, s the incoming gradient times the reduction's scale.

The library's decisions, where torch's own function answers otherwise:

- A mean over nothing (no rows, every target ignored, zero total weight) is 0 with a zero
  gradient (torch: 0 / 0 = NaN): the mean is the sum times
  :func:`crossentropy.losses.mean_scale` of the summed target weights.
- A row that cannot contribute (ignored; of zero target weight without smoothing) has loss
  0 and gradient exactly 0, whatever its logits (torch: NaN in the gradient of an ignored
  row of -inf logits): its losses are dropped with ``where`` and its rows of p zeroed.
- A coefficient that is 0 gives 0 against an infinite log-probability
  (:func:`crossentropy.losses.times`; torch: 0 * inf = NaN): a zero-weight class with a
  -inf logit adds nothing to the smoothing sum, a zero-weight target nothing to the loss.
- A row whose maximum is not finite (a +inf logit, every logit -inf, a NaN) gets the
  reference's log-probabilities, (x - shift) - log sum exp(x - shift) with the shift 0
  where the maximum is not finite (:func:`crossentropy._array.shift_and_log_sum`): -inf
  beside a +inf logit and NaN at it, so a target beside a +inf logit has loss +inf and a
  finite gradient there (torch: NaN everywhere). torch's ``log_softmax`` gives such a row
  NaN at its target, which is how these rows are found (no extra sweep over the logits).
- float16/bfloat16 logits are computed in float32 and the loss returned in their dtype,
  as the reference does.

A second backward of a retained graph recomputes p from the saved logits (the first one
has turned it into the gradient); a differentiable backward (``create_graph=True``) takes
the reference's gradient as torch operations,
:func:`crossentropy.gradients.sparse_softmax_cross_entropy`, whose derivative autograd
takes. The soft cap c tanh(x / c) is applied before, under autograd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import array_api_compat
import torch
from torch import Tensor

from .. import _validate, gradients, losses
from .._array import shift_and_log_sum, wide_labels
from . import conventions

__all__ = ["NativeCrossEntropy", "native_cross_entropy"]


@dataclass
class _Rows:
    """The forward's per-row pieces: the losses, and what the backward needs. ``p`` is
    None until computed and after the first backward has turned it into the gradient."""

    losses: Tensor  # (M,) per-row losses, 0 on rows that do not contribute
    p: Tensor | None  # (M, C) softmax, rows that do not contribute zeroed
    a: Tensor  # (M,) A_i of the derivation, 0 on rows that do not contribute
    target_coefficient: Tensor  # (M,) (1 - eps) w_y, 0 on rows that do not contribute
    smooth_coefficient: Tensor  # (M,) eps / C on contributing rows, else 0
    safe_target: Tensor  # (M, 1) the target, 0 on ignored rows
    count: Tensor  # the summed target weight: the mean's denominator


def _rows(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    options: tuple[int, float, float, str],
    keep_p: bool,
) -> _Rows:
    """The per-row losses of (M, C) logits ``x`` (float32/float64) and int64 ``target``,
    and with ``keep_p`` the softmax for the backward."""
    ignore_index, eps, z, _ = options
    rows, classes = x.shape
    counted = target != ignore_index
    safe_target = torch.where(counted, target, 0).unsqueeze(1)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    if weight is None:
        w_y = counted.to(x.dtype)
        total_weight = float(classes)
    else:
        w = weight.to(x.dtype)
        w_y = torch.where(counted, w[safe_target.squeeze(1)], zero)
        total_weight = float(weight.double().sum())
    live = counted if eps > 0 else counted & (w_y != 0)
    count = w_y.sum()
    smooth = eps / classes if classes > 0 else 0.0
    if rows == 0 or classes == 0 or not bool(live.any()):
        nothing = torch.zeros(rows, dtype=x.dtype, device=x.device)
        p = torch.zeros_like(x) if keep_p else None
        return _Rows(nothing, p, nothing, nothing, nothing, safe_target, count)

    log_p = torch.log_softmax(x, dim=1)
    picked = log_p.gather(1, safe_target).squeeze(1)
    # rows whose maximum is not finite: torch's log_softmax gives them NaN everywhere;
    # they get the reference's log-probabilities (and logsumexp) instead
    bad = (live & torch.isnan(picked)).nonzero().squeeze(1)
    lse = None
    if z > 0:
        top, at = x.max(dim=1, keepdim=True)
        # log p at the maximum is exactly -log sum exp(x - max): lse = max + log sum
        lse = (top - log_p.gather(1, at)).squeeze(1)
    if bad.numel() > 0:
        shift, log_sum = shift_and_log_sum(x[bad], 1, array_api_compat.array_namespace(x))
        log_p[bad] = (x[bad] - shift) - log_sum
        picked = log_p.gather(1, safe_target).squeeze(1)
        if lse is not None:
            lse[bad] = (shift + log_sum).squeeze(1)

    target_coefficient = torch.where(live, (1.0 - eps) * w_y, zero)
    row_losses = losses.times(target_coefficient, -picked, torch)
    if eps > 0:
        row_losses = row_losses + smooth * _smoothing_sum(log_p, weight, bad)
    a = target_coefficient + smooth * total_weight
    if lse is not None:
        z_weight = torch.where(live, z * w_y, zero)
        row_losses = row_losses + losses.times(z_weight, lse * lse, torch)
        # a plain product: 0 * inf = NaN on a zero-weight row beside a +inf logit, as the
        # reference's autograd and the fused kernel give there
        a = a + 2.0 * z_weight * lse
    row_losses = torch.where(live, row_losses, zero)
    a = torch.where(live, a, zero)
    smooth_coefficient = torch.where(live, torch.full_like(a, smooth), zero)

    p = None
    if keep_p:
        p = log_p.exp_()  # log p is not needed again: the softmax, in its buffer
        dead = (~live).nonzero().squeeze(1)
        if dead.numel() > 0:
            p.index_fill_(0, dead, 0.0)
    return _Rows(row_losses, p, a, target_coefficient, smooth_coefficient, safe_target, count)


def _smoothing_sum(log_p: Tensor, weight: Tensor | None, bad: Tensor) -> Tensor:
    """sum_c w_c (-log p_c) per row, a zero weight giving 0 against an infinite log p
    (:func:`crossentropy.losses.times`); a matrix-vector product over the classes of
    non-zero weight, and the elementwise formula on the rows that were not finite."""
    if weight is None:
        return -log_p.sum(dim=1)
    w = weight.to(log_p.dtype)
    used = (w != 0).nonzero().squeeze(1)
    every = used.numel() == w.numel()
    total = -(log_p @ w) if every else -(log_p.index_select(1, used) @ w[used])
    if bad.numel() > 0:
        total[bad] = -losses.times(w, log_p[bad], torch).sum(dim=1)
    return total


def _gradient(rows: _Rows, p: Tensor | None, factor: Tensor) -> Tensor:
    """d(loss)/dx = A p s - (1 - eps) w_y s at the target - (eps / C) w s, over ``p``'s
    buffer; ``factor`` is s per row (M,) or one number ()."""
    if p is None:
        raise RuntimeError("native cross entropy: the softmax was not kept for a backward")
    s = factor.to(p.dtype)
    grad = p.mul_((rows.a * s).unsqueeze(1))
    grad.scatter_add_(1, rows.safe_target, (-(rows.target_coefficient * s)).unsqueeze(1))
    return grad


class NativeCrossEntropy(torch.autograd.Function):
    """The loss of (M, C) logits in the forward, its gradient written out in the backward
    (the derivation is the module's docstring). Takes float32/float64 logits, int64
    targets checked in [0, C) or ``ignore_index``, and class weights that need no gradient.
    """

    @staticmethod
    def forward(
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None,
        ignore_index: int,
        label_smoothing: float,
        z_loss: float,
        reduction: str,
        want_grad: bool,
    ) -> tuple[Tensor, Any]:
        if not conventions.has_values(logits):
            shape = (logits.shape[0],) if reduction == "none" else ()
            return logits.new_empty(shape), None
        options = (ignore_index, label_smoothing, z_loss, reduction)
        rows = _rows(logits, target, weight, options, want_grad)
        if reduction == "none":
            loss = rows.losses
        elif reduction == "sum":
            loss = rows.losses.sum()
        else:
            loss = rows.losses.sum() * losses.mean_scale(rows.count, torch)
        return loss, rows

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        logits, target, weight, *options, _ = inputs
        ctx.save_for_backward(logits, target, weight)
        ctx.rows = output[1]
        ctx.options = options
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor | None, _: Any) -> tuple[Any, ...]:  # type: ignore[override]
        logits, target, weight = ctx.saved_tensors
        ignore_index, eps, z, reduction = options = tuple(ctx.options)
        none = (None,) * 7
        rows: _Rows | None = ctx.rows
        if grad_output is None or rows is None:
            return None, *none
        if reduction == "mean":
            factor = grad_output * losses.mean_scale(rows.count, torch)
        else:
            factor = grad_output
        if torch.is_grad_enabled():
            # create_graph=True: the reference's gradient, differentiable
            _, reference = gradients.sparse_softmax_cross_entropy(
                logits,
                target,
                weight=weight,
                ignore_index=ignore_index,
                label_smoothing=eps,
                z_loss=z,
                reduction=reduction,
            )
            scale = grad_output.unsqueeze(-1) if reduction == "none" else grad_output
            return reference * scale.to(reference.dtype), *none
        p, rows.p = rows.p, None  # handed out once, as the gradient
        if p is None:  # a later backward of a retained graph: p again from the logits
            p = _rows(logits.detach(), target, weight, options, True).p
        grad = _gradient(rows, p, factor)
        if eps > 0:
            s = rows.smooth_coefficient * factor.to(grad.dtype)
            if weight is None:
                grad.sub_(s.unsqueeze(1))
            else:
                grad.addr_(s, weight.to(grad.dtype), alpha=-1.0)
        return grad, *none


def native_cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Softmax cross entropy of class indices on torch's fused operations.

    The loss and gradient of :func:`crossentropy.sparse_softmax_cross_entropy` (the
    module's docstring gives the derivation and the decided edge cases), as fast as
    ``torch.nn.functional.cross_entropy`` or faster.

    Args:
        logits: (M, C) floating-point tensor, on any device.
        target: (M,) integer class ids in [0, C), or ``ignore_index``.
        weight: (C,) floating-point class weights, or ``None``; not differentiated
            (refused if it requires grad: ``impl="torch"`` differentiates them).
        ignore_index: the target value that marks a row to skip.
        label_smoothing: epsilon in [0, 1].
        z_loss: the coefficient of logsumexp(z)^2, >= 0.
        softcap: c > 0, finite, to use c tanh(x / c) as the logits, or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss in the logits' dtype: a scalar, or (M,) for ``reduction="none"``.

    Example:
        >>> import torch
        >>> from crossentropy.torch.native import native_cross_entropy
        >>> logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], requires_grad=True)
        >>> loss = native_cross_entropy(logits, torch.tensor([0, 1]))
        >>> loss.backward()
        >>> print(f"{loss.item():.4f}", logits.grad.round(decimals=4).tolist())
        0.3185 [[-0.1705, 0.1212, 0.0493], [0.0543, -0.0988, 0.0445]]
    """
    _validate.reduction(reduction)
    eps = _validate.label_smoothing(label_smoothing)
    z_coef = _validate.z_loss(z_loss)
    cap = _validate.softcap(softcap)
    ignore_index = _validate.ignore_index(ignore_index)
    if not isinstance(logits, Tensor) or logits.ndim != 2 or not logits.is_floating_point():
        what = (logits.dtype, tuple(logits.shape)) if isinstance(logits, Tensor) else logits
        raise ValueError(
            f"logits: expected a 2-D floating-point (rows, classes) tensor; got {what}"
        )
    if not isinstance(target, Tensor):
        raise TypeError(f"target: expected a torch.Tensor; got {type(target).__name__}")
    _validate.label_shape(tuple(logits.shape), 1, target)
    xp = array_api_compat.array_namespace(target)
    target = wide_labels(target, xp)
    _validate.integer_labels(target, int(logits.shape[1]), ignore_index, xp)
    if weight is not None:
        _validate.class_weight(weight, int(logits.shape[1]))
        if weight.requires_grad and torch.is_grad_enabled():
            raise ValueError(
                "weight: impl='native' has no gradient with respect to the class weights, "
                "and this weight requires grad; pass weight.detach(), or use impl='torch' "
                "(or impl='auto'), which differentiates the weights too"
            )
    dtype = logits.dtype
    x = logits.float() if logits.itemsize < 4 else logits
    if cap is not None:
        x = cap * torch.tanh(x / cap)
    want_grad = torch.is_grad_enabled() and x.requires_grad
    loss, _ = NativeCrossEntropy.apply(  # type: ignore[no-untyped-call]
        x, target, weight, ignore_index, eps, z_coef, reduction, want_grad
    )
    result: Tensor = loss.to(dtype)
    return result
