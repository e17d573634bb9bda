r"""Cross entropy of class indices on torch's own fused operations, with the library's numerics.

What ``impl="native"`` runs, and what ``impl="auto"`` runs where no kernel of this library
can be had (no C compiler for the fused kernel on CPU, no Triton on CUDA): torch's
``log_softmax`` and a ``gather`` of the targets' log-probabilities in the forward, torch's
``softmax`` and a gradient written out beside it in the backward, so that it costs what
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

since d(-log p_c)/dx_k = p_k - [k = c] and d lse/dx_k = p_k.

Both passes sweep the rows a block at a time (``BLOCK_ELEMENTS`` logits, 2 MiB of
float32, so that each block stays in cache): the forward takes each block's log-softmax
into one reused buffer and keeps per row only the target's log-probability (and the
smoothing sum, the logsumexp); the backward recomputes each block's softmax p, written
straight into the gradient, and finishes it in place: p A s - the target's term - the
smoothing's term, s the incoming gradient times the reduction's scale. Nothing
logits-sized is kept between the two but the logits, and no standalone ``exp`` runs over
the logits: on CPU torch's softmax kernels cost a fraction of one.

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
  as the reference does; they are read as they are, each block converted inside torch's
  (log-)softmax (no float32 copy of the logits), and the gradient is rounded to their
  dtype once, from float32.

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

The forward takes each block's log p into the reused buffer, then the products
w_c q_c log p_c over it (summed per row); the backward each block's p, as for class
indices.
A coefficient that is 0 against a -inf log-probability (a zero probability at a -inf
logit) makes such a sum NaN where the library decides 0
(:func:`crossentropy.losses.times`); those rows, found by their NaN, are summed again
elementwise with ``times``: the reference's formula. A row still NaN after that (its
maximum not finite, a NaN logit) is NaN in the reference too, and its gradient is the
reference's, by autograd through the reference's formula on that row alone. B_i needs
sum_c w_c q_c, taken in the backward (a forward without one does not pay for it).

A second backward of a retained graph recomputes p like the first; a differentiable
backward (``create_graph=True``) takes the reference's gradient as torch operations,
:func:`crossentropy.gradients.sparse_softmax_cross_entropy` (for probability targets,
autograd through the reference's formula), whose derivative autograd takes. The soft cap
c tanh(x / c) is applied before, under autograd.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import array_api_compat
import torch
from torch import Tensor

from .. import _validate, gradients, losses
from .._array import shift_and_log_sum, wide_labels
from . import conventions

__all__ = [
    "BLOCK_ELEMENTS",
    "NativeCrossEntropy",
    "NativeProbabilityCrossEntropy",
    "compute_dtype",
    "native_cross_entropy",
    "row_blocks",
    "softmax_blocks",
]


# Rows are swept a block at a time, each block's log-softmax (forward) or softmax (backward)
# in a buffer of about 2 MiB of float32 that stays in cache: torch's softmax kernels are
# fast there, while a standalone ``exp_`` over a logits-sized buffer costs several of them.
BLOCK_ELEMENTS = 1 << 19


def row_blocks(rows: int, classes: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of about ``BLOCK_ELEMENTS`` logits each (one row at least)."""
    step = max(1, BLOCK_ELEMENTS // max(classes, 1))
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def softmax_blocks(x: Tensor, grad: Tensor) -> Iterator[tuple[int, int, Tensor]]:
    """Each block [start, stop) of the rows of ``x`` (M, C) with its softmax p in the compute
    dtype, for the caller to turn into the block's gradient in place: p is written straight
    into ``grad``'s rows when the dtypes agree, else into one reused buffer that is copied
    into them (rounded once) when the caller asks for the next block."""
    rows, classes = x.shape
    if rows == 0 or classes == 0:
        return
    dtype = compute_dtype(x.dtype)
    blocks = row_blocks(rows, classes)
    buffer = None if grad.dtype == dtype else x.new_empty((blocks[0][1], classes), dtype=dtype)
    for start, stop in blocks:
        p = grad[start:stop] if buffer is None else buffer[: stop - start]
        torch.softmax(x[start:stop], 1, dtype=dtype, out=p)
        yield start, stop, p
        if buffer is not None:
            grad[start:stop].copy_(p)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 logits are computed in float32, as the reference computes them."""
    return torch.float32 if dtype.itemsize < 4 else dtype


@dataclass
class _Rows:
    """The forward's per-row pieces, all (M,) in the compute dtype unless said: the losses,
    and the coefficients of the gradient, which the backward applies to the softmax it
    recomputes block by block from the saved logits."""

    losses: Tensor  # per-row losses, 0 on rows that do not contribute
    a: Tensor  # A_i of the derivation, 0 on rows that do not contribute
    target_coefficient: Tensor  # (1 - eps) w_y, 0 on rows that do not contribute
    smooth_coefficient: Tensor | None  # eps / C on contributing rows, else 0 (eps > 0)
    safe_target: Tensor  # (M, 1) int64: the target, 0 on ignored rows
    scale: Tensor | None  # the mean's mean_scale of the summed target weight (a mean only)
    bad: Tensor  # indices of contributing rows whose maximum is not finite
    dead: Tensor  # indices of the other rows whose log-softmax is NaN: gradient 0


def _reference_log_softmax(x: Tensor) -> tuple[Tensor, Tensor]:
    """The reference's log-probabilities and logsumexp of rows whose maximum may not be
    finite: (x - shift) - log sum exp(x - shift), the shift 0 where the maximum is not
    finite (:func:`crossentropy._array.shift_and_log_sum`)."""
    shift, log_sum = shift_and_log_sum(x, 1, array_api_compat.array_namespace(x))
    return (x - shift) - log_sum, (shift + log_sum).squeeze(1)


def _log_softmax_terms(
    x: Tensor, safe_target: Tensor, w: Tensor | None, smoothing: bool, z: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """log p at the target, sum_c w_c (-log p_c) (with ``smoothing``) and logsumexp (with
    ``z``) per row of ``x``, from torch's log_softmax of each block of rows in the compute
    dtype; a row whose maximum is not finite is NaN at its target.

    The smoothing sum is a matrix-vector product over the classes of non-zero weight (a
    zero weight against a -inf log-probability is 0, :func:`crossentropy.losses.times`)."""
    rows, classes = x.shape
    dtype = compute_dtype(x.dtype)
    picked = x.new_empty((rows, 1), dtype=dtype)
    total = x.new_empty(rows, dtype=dtype) if smoothing else None
    lse = x.new_empty((rows, 1), dtype=dtype) if z else None
    used = None
    if w is not None and smoothing and bool((w == 0).any()):
        used = (w != 0).nonzero().squeeze(1)
        w = w[used]
    blocks = row_blocks(rows, classes)
    buffer = x.new_empty((blocks[0][1], classes), dtype=dtype)
    for start, stop in blocks:
        log_p = torch.log_softmax(x[start:stop], 1, dtype=dtype, out=buffer[: stop - start])
        torch.gather(log_p, 1, safe_target[start:stop], out=picked[start:stop])
        if total is not None:
            if w is None:
                torch.sum(log_p, 1, out=total[start:stop])
            else:
                terms = log_p if used is None else log_p.index_select(1, used)
                torch.mv(terms, w, out=total[start:stop])
        if lse is not None:
            # log p at the maximum is exactly -log sum exp(x - max): lse = max + log sum
            top, at = x[start:stop].max(dim=1, keepdim=True)
            torch.sub(top, log_p.gather(1, at), out=lse[start:stop])
    return (
        picked.squeeze(1),
        None if total is None else total.neg_(),
        None if lse is None else lse.squeeze(1),
    )


def _rows(
    x: Tensor, target: Tensor, weight: Tensor | None, options: tuple[int, float, float, str]
) -> _Rows:
    """The per-row losses of (M, C) logits ``x`` (any floating dtype) and int64 ``target``,
    and the coefficients of their gradient.

    A row that does not contribute has w_y = 0 (ignored rows: w_y is 0 there), so that
    (1 - eps) w_y is already 0 on it, and its A is 0: its gradient A p s - ... is exactly 0
    wherever its softmax is finite, and set to 0 where it is not (``dead``)."""
    ignore_index, eps, z, reduction = options
    rows, classes = x.shape
    dtype = compute_dtype(x.dtype)
    counted = target != ignore_index
    safe_target = torch.where(counted, target, 0).unsqueeze(1)
    w = None if weight is None else weight.to(dtype)
    if w is None:
        w_y = counted.to(dtype)
        total_weight = float(classes)
        live = counted
    else:
        w_y = torch.where(counted, w[safe_target.squeeze(1)], 0.0)
        total_weight = float(weight.double().sum())  # type: ignore[union-attr]
        live = counted if eps > 0 else counted & (w_y != 0)
    scale = losses.mean_scale(w_y.sum(), torch) if reduction == "mean" else None
    smooth = eps / classes if classes > 0 else 0.0
    target_coefficient = w_y if eps == 0 else (1.0 - eps) * w_y  # 0 where not live
    smooth_coefficient = live.to(dtype) * smooth if eps > 0 else None
    nowhere = torch.zeros(0, dtype=torch.int64, device=x.device)
    if rows == 0 or classes == 0:
        nothing = x.new_zeros(rows, dtype=dtype)
        return _Rows(
            nothing, nothing, nothing, smooth_coefficient, safe_target, scale, nowhere, nowhere
        )

    picked, smoothing, lse = _log_softmax_terms(x, safe_target, w, eps > 0, z > 0)
    # rows whose maximum is not finite: torch's log_softmax gives them NaN everywhere;
    # those that contribute get the reference's log-probabilities (and logsumexp) instead
    not_finite = torch.isnan(picked).nonzero().squeeze(1)
    bad, dead = nowhere, nowhere
    if not_finite.numel() > 0:
        bad, dead = not_finite[live[not_finite]], not_finite[~live[not_finite]]
    if bad.numel() > 0:
        log_p, bad_lse = _reference_log_softmax(x[bad].to(dtype))
        picked[bad] = log_p.gather(1, safe_target[bad]).squeeze(1)
        if smoothing is not None:
            terms = -log_p if w is None else -losses.times(w, log_p, torch)
            smoothing[bad] = terms.sum(dim=1)
        if lse is not None:
            lse[bad] = bad_lse

    # a coefficient of a contributing row can be 0 only with class weights or eps = 1
    exact = weight is not None or eps == 1
    row_losses = (
        losses.times(target_coefficient, -picked, torch) if exact else target_coefficient * -picked
    )
    if smoothing is not None:
        row_losses = row_losses + smooth * smoothing
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
    return _Rows(
        row_losses, a, target_coefficient, smooth_coefficient, safe_target, scale, bad, dead
    )


def _gradient(x: Tensor, rows: _Rows, weight: Tensor | None, factor: Tensor) -> Tensor:
    """d(loss)/dx = A p s - (1 - eps) w_y s at the target - (eps / C) w s, in ``x``'s
    dtype; ``factor`` is s per row (M,) or one number (). p is torch's softmax of each block
    of rows, in the compute dtype, written straight into the gradient when the dtypes agree;
    the rows whose maximum is not finite take the reference's p, the dead ones 0."""
    rows_count, classes = x.shape
    dtype = compute_dtype(x.dtype)
    s = factor.to(dtype)
    a_s = (rows.a * s).unsqueeze(1)
    target_s = (-(rows.target_coefficient * s)).unsqueeze(1)
    smooth_s = None if rows.smooth_coefficient is None else rows.smooth_coefficient * s
    w = None if weight is None else weight.to(dtype)

    def finish(p: Tensor, at: slice | Tensor) -> Tensor:
        """The gradient of the rows ``at`` from their softmax ``p``, in place."""
        p.mul_(a_s[at]).scatter_add_(1, rows.safe_target[at], target_s[at])
        if smooth_s is not None:
            if w is None:
                p.sub_(smooth_s[at].unsqueeze(1))
            else:
                p.addr_(smooth_s[at], w, alpha=-1.0)
        return p

    grad = torch.empty((rows_count, classes), dtype=x.dtype, device=x.device)
    for start, stop, p in softmax_blocks(x, grad):
        finish(p, slice(start, stop))
    if rows.bad.numel() > 0:
        log_p, _ = _reference_log_softmax(x[rows.bad].to(dtype))
        grad[rows.bad] = finish(log_p.exp_(), rows.bad).to(grad.dtype)
    if rows.dead.numel() > 0:
        grad.index_fill_(0, rows.dead, 0.0)
    return grad


def _keep_for_backward(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
    """The ``setup_context`` of both Functions here: the logits, target and weight saved
    (the backward recomputes p from the logits), the forward's per-row pieces and the
    options kept, no zero gradient made for the pieces' unused output."""
    logits, target, weight, *options = inputs
    ctx.save_for_backward(logits, target, weight)
    ctx.rows = output[1]
    ctx.options = options
    ctx.set_materialize_grads(False)


class NativeCrossEntropy(torch.autograd.Function):
    """The loss of (M, C) logits in the forward, its gradient written out in the backward
    (the derivation is the module's docstring). Takes floating-point logits (float16 and
    bfloat16 computed in float32, the loss in float32), int64 targets checked in [0, C) or
    ``ignore_index``, and class weights that need no gradient. Keeps nothing logits-sized
    between the forward and the backward but the logits themselves."""

    @staticmethod
    def forward(
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None,
        ignore_index: int,
        label_smoothing: float,
        z_loss: float,
        reduction: str,
    ) -> tuple[Tensor, Any]:
        dtype = compute_dtype(logits.dtype)
        if not conventions.has_values(logits):
            shape = (logits.shape[0],) if reduction == "none" else ()
            return logits.new_empty(shape, dtype=dtype), None
        options = (ignore_index, label_smoothing, z_loss, reduction)
        rows = _rows(logits, target, weight, options)
        if reduction == "none":
            loss = rows.losses
        elif rows.scale is None:
            loss = rows.losses.sum()
        else:
            loss = rows.losses.sum() * rows.scale
        return loss, rows

    setup_context = staticmethod(_keep_for_backward)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor | None, _: Any) -> tuple[Any, ...]:  # type: ignore[override]
        logits, target, weight = ctx.saved_tensors
        ignore_index, eps, z, reduction = ctx.options
        none = (None,) * 6
        rows: _Rows | None = ctx.rows
        if grad_output is None or rows is None:
            return None, *none
        factor = grad_output if rows.scale is None else grad_output * rows.scale
        if torch.is_grad_enabled():
            # create_graph=True: the reference's gradient, differentiable
            _, reference = gradients.sparse_softmax_cross_entropy(
                logits.to(compute_dtype(logits.dtype)),
                target,
                weight=weight,
                ignore_index=ignore_index,
                label_smoothing=eps,
                z_loss=z,
                reduction=reduction,
            )
            scale = grad_output.unsqueeze(-1) if reduction == "none" else grad_output
            return (reference * scale.to(reference.dtype)).to(logits.dtype), *none
        return _gradient(logits, rows, weight, factor), *none


@dataclass
class _ProbabilityRows:
    """The forward's per-row pieces for probability targets (as :class:`_Rows`)."""

    losses: Tensor  # (M,) per-row losses
    lse: Tensor | None  # (M,) logsumexp with a z-loss, else None
    reference: Tensor  # indices of the rows whose gradient is the reference's


def _reference_losses(x: Tensor, q: Tensor, weight: Tensor | None, eps: float, z: float) -> Tensor:
    """The per-row losses of ``impl="torch"`` for probability targets: the core's
    softmax cross entropy, plus lambda logsumexp(x)^2, in the compute dtype."""
    x = x.to(compute_dtype(x.dtype))
    rows: Tensor = losses.softmax_cross_entropy(
        x, q.to(x.dtype), axis=1, weight=weight, label_smoothing=eps, reduction="none"
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
    """d(sum_i s_i loss_i)/dx by autograd through :func:`_reference_losses`, in ``x``'s
    dtype; ``factor`` is s per row (M,) or one number (); with ``create_graph`` itself
    differentiable."""
    eps, z = options
    with torch.enable_grad():
        leaf = x if create_graph else x.detach().requires_grad_()
        rows = _reference_losses(leaf, q, weight, eps, z)
        s = factor.to(rows.dtype).expand_as(rows)
        (grad,) = torch.autograd.grad(rows, leaf, s, create_graph=create_graph)
    return grad


def _probability_rows(
    x: Tensor, q: Tensor, weight: Tensor | None, options: tuple[float, float]
) -> _ProbabilityRows:
    """The per-row losses of (M, C) logits ``x`` (any floating dtype) against
    probabilities ``q`` (any floating dtype), a block of rows at a time in the compute
    dtype: log p in a reused buffer, then the products w_c q_c log p_c over it."""
    eps, z = options
    rows, classes = x.shape
    dtype = compute_dtype(x.dtype)
    if rows == 0 or classes == 0:  # nothing to sweep: the reference answers every row
        every = torch.arange(rows, device=x.device)
        return _ProbabilityRows(_reference_losses(x, q, weight, eps, z), None, every)

    w = None if weight is None else weight.to(dtype)
    lse = x.new_empty((rows, 1), dtype=dtype) if z > 0 else None
    smoothing = x.new_empty(rows, dtype=dtype) if eps > 0 else None
    products = x.new_zeros(rows, dtype=dtype)  # sum_c w_c q_c log p_c; stays 0 if eps = 1
    blocks = row_blocks(rows, classes)
    buffer = x.new_empty((blocks[0][1], classes), dtype=dtype)
    for start, stop in blocks:
        log_p = torch.log_softmax(x[start:stop], 1, dtype=dtype, out=buffer[: stop - start])
        if lse is not None:
            # log p at the maximum is exactly -log sum exp(x - max): lse = max + log sum
            top, at = x[start:stop].max(dim=1, keepdim=True)
            torch.sub(top, log_p.gather(1, at), out=lse[start:stop])
        if smoothing is not None:
            if w is None:
                torch.sum(log_p, 1, out=smoothing[start:stop])
            else:
                torch.mv(log_p, w, out=smoothing[start:stop])
        if eps < 1:  # (1 - eps) = 0 times the sum, which may be infinite, is left out
            log_p.mul_(q[start:stop])
            if w is not None:
                log_p.mul_(w)
            torch.sum(log_p, 1, out=products[start:stop])
    # -(1 - eps) sum_c w_c q_c log p_c - (eps / C) sum_c w_c log p_c
    row_losses = products.mul_(-(1.0 - eps))
    if smoothing is not None:
        row_losses.sub_(smoothing, alpha=eps / classes)
    fix = torch.isnan(row_losses).nonzero().squeeze(1)
    reference = fix
    if fix.numel() > 0:
        # 0 * -inf: the library's 0, elementwise on these rows; NaN stays where it is one
        q_fix = q[fix].to(dtype)
        mass = q_fix if eps == 0 else (1.0 - eps) * q_fix + eps / classes
        mass = mass if w is None else mass * w
        log_p_fix = torch.log_softmax(x[fix].to(dtype), dim=1)
        fixed = -losses.times(mass, log_p_fix, torch).sum(dim=1)
        row_losses[fix] = fixed
        reference = fix[torch.isnan(fixed)]
    if lse is None:
        return _ProbabilityRows(row_losses, None, reference)
    lse_rows = lse.squeeze(1)
    return _ProbabilityRows(row_losses + z * lse_rows * lse_rows, lse_rows, reference)


def _probability_gradient(
    x: Tensor,
    q: Tensor,
    rows: _ProbabilityRows,
    weight: Tensor | None,
    options: tuple[float, float],
    factor: Tensor,
) -> Tensor:
    """d(loss)/dx = B p s - (1 - eps) s w q - (eps / C) s w, in ``x``'s dtype, from torch's
    softmax of each block of rows in the compute dtype; the rows of ``rows.reference`` take
    the reference's gradient."""
    eps, z = options
    rows_count, classes = x.shape
    dtype = compute_dtype(x.dtype)
    s = factor.to(dtype)
    per_row = s.ndim > 0
    w = None if weight is None else weight.to(dtype)
    # B = (1 - eps) sum_c w_c q_c + (eps / C) W + 2 lambda lse, times s
    constant = eps / classes * (float(classes) if w is None else w.sum()) if eps > 0 else 0.0
    grad = torch.empty((rows_count, classes), dtype=x.dtype, device=x.device)
    for start, stop, p in softmax_blocks(x, grad):
        q_block = q[start:stop].to(dtype)
        s_block = s[start:stop] if per_row else s
        b = (q_block.sum(dim=1) if w is None else q_block @ w) * (1.0 - eps) + constant
        if rows.lse is not None:
            b = b + 2.0 * z * rows.lse[start:stop]
        p.mul_((b * s_block).unsqueeze(1))
        column = s_block.unsqueeze(1) if per_row else s_block
        if eps < 1:  # - (1 - eps) s w q
            coefficient = column * -(1.0 - eps)
            p.addcmul_(q_block, coefficient if w is None else coefficient * w)
        if eps > 0:  # - (eps / C) s w
            p.sub_(column * (eps / classes) if w is None else column * w * (eps / classes))
    bad = rows.reference
    if bad.numel() > 0:
        s_bad = s[bad] if per_row else s
        grad[bad] = _reference_gradient(x[bad].detach(), q[bad], weight, options, s_bad, False)
    return grad


class NativeProbabilityCrossEntropy(torch.autograd.Function):
    """:class:`NativeCrossEntropy` for probability targets: (M, C) floating-point logits
    (float16 and bfloat16 computed in float32, the loss in float32), (M, C) probabilities
    checked finite and non-negative that need no gradient, class weights that need no
    gradient; the derivation is the module's docstring."""

    @staticmethod
    def forward(
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None,
        label_smoothing: float,
        z_loss: float,
        reduction: str,
    ) -> tuple[Tensor, Any]:
        dtype = compute_dtype(logits.dtype)
        if not conventions.has_values(logits):
            shape = (logits.shape[0],) if reduction == "none" else ()
            return logits.new_empty(shape, dtype=dtype), None
        rows = _probability_rows(logits, target, weight, (label_smoothing, z_loss))
        if reduction == "none":
            loss = rows.losses
        elif reduction == "sum":
            loss = rows.losses.sum()
        else:
            count = torch.tensor(float(logits.shape[0]), dtype=dtype)
            loss = rows.losses.sum() * losses.mean_scale(count, torch)
        return loss, rows

    setup_context = staticmethod(_keep_for_backward)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor | None, _: Any) -> tuple[Any, ...]:  # type: ignore[override]
        logits, target, weight = ctx.saved_tensors
        eps, z, reduction = ctx.options
        none = (None,) * 5
        rows: _ProbabilityRows | None = ctx.rows
        if grad_output is None or rows is None:
            return None, *none
        if reduction == "mean":
            count = torch.tensor(float(logits.shape[0]), dtype=grad_output.dtype)
            factor = grad_output * losses.mean_scale(count, torch)
        else:
            factor = grad_output
        if torch.is_grad_enabled():  # create_graph=True: the reference's, differentiable
            grad = _reference_gradient(logits, target, weight, (eps, z), factor, True)
            return grad, *none
        return _probability_gradient(logits, target, rows, weight, (eps, z), factor), *none


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
    compute = compute_dtype(logits.dtype)
    if probabilities:
        conventions.probability_target(logits, target, ignore_index)
        if target.requires_grad and torch.is_grad_enabled():
            raise ValueError(
                "target: impl='native' has no gradient with respect to probability targets, "
                "and this target requires grad; pass target.detach(), or use impl='torch' "
                "(or impl='auto'), which differentiates the targets too"
            )
        if target.dtype.itemsize > compute.itemsize:
            # narrowed as the reference narrows them (1e39 is inf in float32); a narrower
            # target is taken as it is, converted a block of rows at a time
            target = target.to(compute)
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
    # half-precision logits are taken as they are (computed in float32 a block of rows at a
    # time); the soft cap is applied under autograd, in float32
    x = logits if cap is None else cap * torch.tanh(logits.to(compute) / cap)
    if probabilities:
        loss, _ = NativeProbabilityCrossEntropy.apply(  # type: ignore[no-untyped-call]
            x, target, weight, eps, z_coef, reduction
        )
    else:
        loss, _ = NativeCrossEntropy.apply(  # type: ignore[no-untyped-call]
            x, target, weight, ignore_index, eps, z_coef, reduction
        )
    result: Tensor = loss.to(dtype)
    return result
