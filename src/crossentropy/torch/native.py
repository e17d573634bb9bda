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

Probability targets q (a target of the logits' shape, class probabilities), with the
smoothed and weighted mass a_c = w_c q'_c, q' = (1 - eps) q + eps / C, and the mean over
rows (:func:`crossentropy.softmax_cross_entropy`, plus the z-loss as ``impl="torch"``
adds it, unweighted):

.. math::

    \ell_i = -(1 - \varepsilon) \sum_c w_c q_c \log p_c
             - \frac{\varepsilon}{C} \sum_c w_c \log p_c + \lambda \operatorname{lse}^2

    \frac{\partial \ell_i}{\partial x_k} = B_i\, p_k - (1 - \varepsilon) w_k q_k
             - \frac{\varepsilon}{C} w_k, \qquad
    B_i = \sum_c a_c + 2 \lambda \operatorname{lse}
        = (1 - \varepsilon) \sum_c w_c q_c + \frac{\varepsilon}{C} W + 2 \lambda \operatorname{lse}

The forward allocates one logits-sized buffer: log p, then the products w_c q_c log p_c
over it (summed per row), then p for the backward (torch's softmax, written into it).
A coefficient that is 0 against a -inf log-probability (a zero probability at a -inf
logit) makes such a sum NaN where the library decides 0
(:func:`crossentropy.losses.times`); those rows, found by their NaN, are summed again
elementwise with ``times``: the reference's formula. A row still NaN after that (its
maximum not finite, a NaN logit) is NaN in the reference too, and its gradient is the
reference's, by autograd through the reference's formula on that row alone. B_i needs
sum_c w_c q_c, taken in the backward (a forward without one does not pay for it).

A second backward of a retained graph recomputes p from the saved logits (the first one
has turned it into the gradient); a differentiable backward (``create_graph=True``) takes
the reference's gradient as torch operations,
:func:`crossentropy.gradients.sparse_softmax_cross_entropy` (for probability targets,
autograd through the reference's formula), whose derivative autograd takes. The soft cap
c tanh(x / c) is applied before, under autograd.
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

__all__ = ["NativeCrossEntropy", "NativeProbabilityCrossEntropy", "native_cross_entropy"]


@dataclass
class _Rows:
    """The forward's per-row pieces: the losses, and what the backward needs. ``p`` is
    None until computed and after the first backward has turned it into the gradient."""

    losses: Tensor  # (M,) per-row losses, 0 on rows that do not contribute
    p: Tensor | None  # (M, C) softmax, 0 or finite on rows that do not contribute
    a: Tensor  # (M,) A_i of the derivation, 0 on rows that do not contribute
    target_coefficient: Tensor  # (M,) (1 - eps) w_y, 0 on rows that do not contribute
    smooth_coefficient: Tensor | None  # (M,) eps / C on contributing rows, else 0 (eps > 0)
    safe_target: Tensor  # (M, 1) the target, 0 on ignored rows
    scale: Tensor | None  # the mean's mean_scale of the summed target weight (a mean only)


def _rows(
    x: Tensor,
    target: Tensor,
    weight: Tensor | None,
    options: tuple[int, float, float, str],
    keep_p: bool,
) -> _Rows:
    """The per-row losses of (M, C) logits ``x`` (float32/float64) and int64 ``target``,
    and with ``keep_p`` the softmax for the backward.

    A row that does not contribute has w_y = 0 (ignored rows: w_y is 0 there), so that
    (1 - eps) w_y is already 0 on it; its A is 0 and its p finite (or zeroed where its
    log-softmax is NaN), so that its gradient A p s - ... is exactly 0 without a sweep
    over its row."""
    ignore_index, eps, z, reduction = options
    rows, classes = x.shape
    counted = target != ignore_index
    safe_target = torch.where(counted, target, 0).unsqueeze(1)
    if weight is None:
        w_y = counted.to(x.dtype)
        total_weight = float(classes)
        live = counted
    else:
        w = weight.to(x.dtype)
        w_y = torch.where(counted, w[safe_target.squeeze(1)], 0.0)
        total_weight = float(weight.double().sum())
        live = counted if eps > 0 else counted & (w_y != 0)
    scale = losses.mean_scale(w_y.sum(), torch) if reduction == "mean" else None
    smooth = eps / classes if classes > 0 else 0.0
    target_coefficient = w_y if eps == 0 else (1.0 - eps) * w_y  # 0 where not live
    smooth_coefficient = live.to(x.dtype) * smooth if eps > 0 else None
    if rows == 0 or classes == 0:
        nothing = torch.zeros(rows, dtype=x.dtype, device=x.device)
        p = torch.zeros_like(x) if keep_p else None
        return _Rows(nothing, p, nothing, nothing, smooth_coefficient, safe_target, scale)

    log_p = torch.log_softmax(x, dim=1)
    picked = log_p.gather(1, safe_target).squeeze(1)
    # rows whose maximum is not finite: torch's log_softmax gives them NaN everywhere;
    # those that contribute get the reference's log-probabilities (and logsumexp)
    # instead, those that do not a p of zeros
    not_finite = torch.isnan(picked).nonzero().squeeze(1)
    bad, dead = not_finite, not_finite
    if not_finite.numel() > 0:
        bad, dead = not_finite[live[not_finite]], not_finite[~live[not_finite]]
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

    # a coefficient of a contributing row can be 0 only with class weights or eps = 1
    exact = weight is not None or eps == 1
    row_losses = (
        losses.times(target_coefficient, -picked, torch) if exact else target_coefficient * -picked
    )
    if eps > 0:
        row_losses = row_losses + smooth * _smoothing_sum(log_p, weight, bad)
    a = target_coefficient if eps == 0 else target_coefficient + smooth * total_weight
    if lse is not None:
        z_weight = z * w_y if weight is None else torch.where(live, z * w_y, 0.0)
        square = lse * lse
        row_losses = row_losses + (
            losses.times(z_weight, square, torch) if exact else z_weight * square
        )
        # a plain product: 0 * inf = NaN on a zero-weight row beside a +inf logit, as the
        # reference's autograd and the fused kernel give there
        a = a + 2.0 * z_weight * lse
    row_losses = torch.where(live, row_losses, 0.0)
    if eps > 0 or lse is not None:
        a = torch.where(live, a, 0.0)

    p = None
    if keep_p:
        p = log_p.exp_()  # log p is not needed again: the softmax, in its buffer
        if dead.numel() > 0:
            p.index_fill_(0, dead, 0.0)
    return _Rows(row_losses, p, a, target_coefficient, smooth_coefficient, safe_target, scale)


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
        elif rows.scale is None:
            loss = rows.losses.sum()
        else:
            loss = rows.losses.sum() * rows.scale
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
        factor = grad_output if rows.scale is None else grad_output * rows.scale
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
        if rows.smooth_coefficient is not None:
            s = rows.smooth_coefficient * factor.to(grad.dtype)
            if weight is None:
                grad.sub_(s.unsqueeze(1))
            else:
                grad.addr_(s, weight.to(grad.dtype), alpha=-1.0)
        return grad, *none


@dataclass
class _ProbabilityRows:
    """The forward's per-row pieces for probability targets (as :class:`_Rows`)."""

    losses: Tensor  # (M,) per-row losses
    p: Tensor | None  # (M, C) softmax; rows of ``reference`` are overwritten in the backward
    lse: Tensor | None  # (M,) logsumexp with a z-loss, else None
    reference: Tensor  # indices of the rows whose gradient is the reference's


def _reference_losses(x: Tensor, q: Tensor, weight: Tensor | None, eps: float, z: float) -> Tensor:
    """The per-row losses of ``impl="torch"`` for probability targets: the core's
    softmax cross entropy, plus lambda logsumexp(x)^2."""
    rows: Tensor = losses.softmax_cross_entropy(
        x, q, axis=1, weight=weight, label_smoothing=eps, reduction="none"
    )
    if z > 0:
        lse = torch.logsumexp(x, dim=1)
        rows = rows + z * lse * lse
    return rows


def _reference_gradient(
    x: Tensor,
    q: Tensor,
    weight: Tensor | None,
    options: tuple[float, float],
    factor: Tensor,
    create_graph: bool,
) -> Tensor:
    """d(sum_i s_i loss_i)/dx by autograd through :func:`_reference_losses`; ``factor`` is
    s per row (M,) or one number (); with ``create_graph`` itself differentiable."""
    eps, z = options
    with torch.enable_grad():
        leaf = x if create_graph else x.detach().requires_grad_()
        rows = _reference_losses(leaf, q, weight, eps, z)
        s = factor.to(rows.dtype).expand_as(rows)
        (grad,) = torch.autograd.grad(rows, leaf, s, create_graph=create_graph)
    return grad


def _probability_rows(
    x: Tensor, q: Tensor, weight: Tensor | None, options: tuple[float, float], keep_p: bool
) -> _ProbabilityRows:
    """The per-row losses of (M, C) logits ``x`` (float32/float64) against probabilities
    ``q`` of ``x``'s dtype, and with ``keep_p`` the softmax for the backward."""
    eps, z = options
    rows, classes = x.shape
    if rows == 0 or classes == 0:  # nothing to sweep: the reference answers every row
        every = torch.arange(rows, device=x.device)
        found = _reference_losses(x, q, weight, eps, z)
        return _ProbabilityRows(found, torch.zeros_like(x) if keep_p else None, None, every)

    log_p = torch.log_softmax(x, dim=1)
    w = None if weight is None else weight.to(x.dtype)
    lse = None
    if z > 0:
        top, at = x.max(dim=1, keepdim=True)
        # log p at the maximum is exactly -log sum exp(x - max): lse = max + log sum
        lse = (top - log_p.gather(1, at)).squeeze(1)
    smoothing = None
    if eps > 0:
        smoothing = log_p.sum(dim=1) if w is None else log_p @ w
    if eps < 1:
        # -(1 - eps) sum_c w_c q_c log p_c, the products over log p's buffer (no new one)
        products = log_p.mul_(q) if w is None else log_p.mul_(q).mul_(w)
        row_losses = products.sum(dim=1).mul_(-(1.0 - eps))
    else:  # (1 - eps) = 0 times the sum, which may be infinite
        row_losses = x.new_zeros(rows)
    if smoothing is not None:
        row_losses.sub_(smoothing, alpha=eps / classes)
    fix = torch.isnan(row_losses).nonzero().squeeze(1)
    reference = fix
    if fix.numel() > 0:
        # 0 * -inf: the library's 0, elementwise on these rows; NaN stays where it is one
        mass = q[fix] if eps == 0 else (1.0 - eps) * q[fix] + eps / classes
        mass = mass if w is None else mass * w
        fixed = -losses.times(mass, torch.log_softmax(x[fix], dim=1), torch).sum(dim=1)
        row_losses[fix] = fixed
        reference = fix[torch.isnan(fixed)]
    if lse is not None:
        row_losses = row_losses + z * lse * lse
    # p for the backward, over log p's buffer again
    p = torch.softmax(x, dim=1, out=log_p) if keep_p else None
    return _ProbabilityRows(row_losses, p, lse, reference)


class NativeProbabilityCrossEntropy(torch.autograd.Function):
    """:class:`NativeCrossEntropy` for probability targets: (M, C) float32/float64 logits,
    (M, C) probabilities checked finite and non-negative that need no gradient, class
    weights that need no gradient; the derivation is the module's docstring."""

    @staticmethod
    def forward(
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None,
        label_smoothing: float,
        z_loss: float,
        reduction: str,
        want_grad: bool,
    ) -> tuple[Tensor, Any]:
        if not conventions.has_values(logits):
            shape = (logits.shape[0],) if reduction == "none" else ()
            return logits.new_empty(shape), None
        q = target.to(logits.dtype)
        rows = _probability_rows(logits, q, weight, (label_smoothing, z_loss), want_grad)
        if reduction == "none":
            loss = rows.losses
        elif reduction == "sum":
            loss = rows.losses.sum()
        else:
            count = torch.tensor(float(logits.shape[0]), dtype=logits.dtype)
            loss = rows.losses.sum() * losses.mean_scale(count, torch)
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
        eps, z, reduction = ctx.options
        none = (None,) * 6
        rows: _ProbabilityRows | None = ctx.rows
        if grad_output is None or rows is None:
            return None, *none
        q = target.to(logits.dtype)
        if reduction == "mean":
            count = torch.tensor(float(logits.shape[0]), dtype=logits.dtype)
            factor = grad_output * losses.mean_scale(count, torch)
        else:
            factor = grad_output
        if torch.is_grad_enabled():  # create_graph=True: the reference's, differentiable
            grad = _reference_gradient(logits, q, weight, (eps, z), factor, True)
            return grad, *none
        p, rows.p = rows.p, None  # handed out once, as the gradient
        if p is None:  # a later backward of a retained graph: p again from the logits
            p = torch.softmax(logits.detach(), dim=1)
        classes = logits.shape[1]
        s = factor.to(p.dtype)
        column = s.unsqueeze(1) if s.ndim else s
        w = None if weight is None else weight.to(p.dtype)
        # B = (1 - eps) sum_c w_c q_c + (eps / C) W + 2 lambda lse
        b = (q.sum(dim=1) if w is None else q @ w) * (1.0 - eps)
        if eps > 0:
            b = b + eps / classes * (float(classes) if w is None else w.sum())
        if rows.lse is not None:
            b = b + 2.0 * z * rows.lse
        grad = p.mul_((b * s).unsqueeze(1))
        if eps < 1:  # - (1 - eps) s w q (a logits-sized product only for w and s per row)
            coefficient = column * -(1.0 - eps)
            grad.addcmul_(q, coefficient if w is None else coefficient * w)
        if eps > 0:  # - (eps / C) s w
            if w is None:
                grad.sub_(column * (eps / classes))
            elif s.ndim:
                grad.addr_(s, w, alpha=-eps / classes)
            else:
                grad.sub_(w * (s * (eps / classes)))
        bad = rows.reference
        if bad.numel() > 0:
            s_bad = s[bad] if s.ndim else s
            grad[bad] = _reference_gradient(
                logits[bad].detach(), q[bad], weight, (eps, z), s_bad, False
            )
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
    r"""Softmax cross entropy of class indices or probabilities on torch's fused operations.

    The loss and gradient of :func:`crossentropy.sparse_softmax_cross_entropy` (class
    indices) or of :func:`crossentropy.softmax_cross_entropy` plus the z-loss (class
    probabilities, a target of the logits' shape; the mean is over rows) (the module's
    docstring gives the derivation and the decided edge cases), as fast as
    ``torch.nn.functional.cross_entropy`` or faster.

    Args:
        logits: (M, C) floating-point tensor, on any device.
        target: (M,) integer class ids in [0, C), or ``ignore_index``; or (M, C) class
            probabilities, finite and >= 0, not differentiated (refused if they require
            grad: ``impl="torch"`` differentiates them).
        weight: (C,) floating-point class weights, or ``None``; not differentiated
            (refused if it requires grad: ``impl="torch"`` differentiates them).
        ignore_index: the target value that marks a row to skip (negative with
            probability targets).
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
    xp = array_api_compat.array_namespace(target)
    probabilities = target.shape == logits.shape
    compute = torch.float32 if logits.itemsize < 4 else logits.dtype
    if probabilities:
        conventions.probability_target(logits, target, ignore_index)
        if target.requires_grad and torch.is_grad_enabled():
            raise ValueError(
                "target: impl='native' has no gradient with respect to probability targets, "
                "and this target requires grad; pass target.detach(), or use impl='torch' "
                "(or impl='auto'), which differentiates the targets too"
            )
        target = target.to(compute)  # compared as the reference compares them
        _validate.probabilities("labels", target, xp)
    else:
        _validate.label_shape(tuple(logits.shape), 1, target)
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
    x = logits.to(compute)
    if cap is not None:
        x = cap * torch.tanh(x / cap)
    want_grad = torch.is_grad_enabled() and x.requires_grad
    if probabilities:
        loss, _ = NativeProbabilityCrossEntropy.apply(  # type: ignore[no-untyped-call]
            x, target, weight, eps, z_coef, reduction, want_grad
        )
    else:
        loss, _ = NativeCrossEntropy.apply(  # type: ignore[no-untyped-call]
            x, target, weight, ignore_index, eps, z_coef, reduction, want_grad
        )
    result: Tensor = loss.to(dtype)
    return result
