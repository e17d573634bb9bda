r"""Knowledge distillation on logits: a student's softmax matched to a teacher's, exact.

Per token, with p_s = softmax(z_s / T) and p_t = softmax(z_t / T),

.. math::

    \ell = w_{soft} D(p_s, p_t) + w_{hard} \big(\operatorname{lse}(z_s) - z_{s,y}\big)

where D is the forward KL(p_t || p_s), the reverse KL(p_s || p_t) or the generalized
Jensen-Shannon divergence beta KL(p_t || M) + (1 - beta) KL(p_s || M), M = beta p_t +
(1 - beta) p_s (beta = 0 is the forward KL, beta = 1 the reverse KL: the convention of
TRL and Liger-Kernel). The derivation of the loss, of its gradient and the decided
numerics (p = 0 terms, ±inf and NaN logits) are :mod:`crossentropy.torch._distill`'s
docstring, written once for every path.

``impl="auto"`` sweeps the rows a block at a time (:func:`crossentropy.torch.native.row_blocks`,
about ``BLOCK_ELEMENTS`` logits of each model per block): the forward runs phases 1 and 2
of :mod:`crossentropy.torch._distill` and keeps per row four numbers (L_s, L_t, L_1 with a
hard weight, and R; D is the loss); the backward recomputes each block's softmaxes from
the logits and those numbers and writes the student's gradient (phase 3) for the incoming
gradient of every row. It *recomputes* rather than writing the gradient in the forward
(as the fused cross entropy does for ``"mean"``/``"sum"``): one more read of both logits
in the backward, but nothing logits-sized is held between the two passes beyond the inputs
themselves, and every reduction (``"none"`` with any incoming gradient included) takes the
same path. float16/bfloat16 logits are computed in float32 a block at a time; the loss is
returned in float32 for them (the compute dtype), the gradient in the student's dtype.

``impl="fused"`` (what ``"auto"`` runs on CPU where the kernel loads) does the same row
work in C (:func:`crossentropy.torch._kernel.distill_rows`): the three phases over each
pair of rows in one sweep of memory, the two rows staying in cache, the gradient written
once in the student's dtype. With ``"mean"``/``"sum"`` and a student that needs a gradient
the forward writes it at once (the reduction's row scale is known), and a backward whose
incoming gradient is that scale hands it out as it is; otherwise (``"none"``, another
incoming gradient, a repeated backward) the backward runs the kernel again with the
incoming gradient as the row scale.

``impl="torch"`` is the readable reference: whole rows' log-softmaxes (with the library's
shift, :func:`crossentropy._array.shift_and_log_sum`) and the divergence by its definition,
under autograd. It is differentiable twice, and it is what a differentiable backward
(``create_graph=True``) and ``torch.func`` transforms run.

The teacher is read, never differentiated: its tensor may require grad (a teacher being
trained elsewhere) and gets no gradient from this loss.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import torch
from torch import Tensor

from .. import _validate
from .._array import shift_and_log_sum, wide_labels
from . import _kernel, conventions, dispatch
from ._distill import (
    Distillation,
    DivergenceSums,
    LogSumExps,
    check_distillation,
    divergence_sums,
    log_sum_exps,
    row_losses,
    student_gradient,
)
from .native import compute_dtype, row_blocks

__all__ = ["distillation_loss"]

# the values of impl= this function takes; the paths are chosen in _run ("triton": the
# Triton kernels, is added there beside these)
_IMPLS = ("auto", "torch", "fused")


def _impl(value: object) -> str:
    """``impl`` checked: a name of :data:`crossentropy.torch.dispatch.IMPLS` that this
    function has a path for."""
    name = dispatch.impl(value)
    if name not in _IMPLS:
        accepted = ", ".join(map(repr, _IMPLS))
        raise ValueError(
            f"impl: distillation_loss takes {accepted} (no {name!r} path is written for it); "
            f"got {value!r}"
        )
    return name


def _check_logits(name: str, logits: object) -> Tensor:
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor; got {type(logits).__name__}")
    if not logits.is_floating_point() or logits.ndim == 0:
        raise ValueError(
            f"{name}: expected a floating-point tensor with a class axis (at least 1-D, the "
            f"last); got dtype {logits.dtype} and shape {tuple(logits.shape)}"
        )
    return logits


def _check_teacher(
    student: Tensor, teacher_logits: object, teacher_log_probs: object
) -> tuple[str, Tensor]:
    """The teacher's tensor (exactly one of the two given) and its argument's name,
    checked against the student's shape, vocabulary and device."""
    if (teacher_logits is None) == (teacher_log_probs is None):
        given = "both" if teacher_logits is not None else "neither"
        raise ValueError(
            f"teacher_logits, teacher_log_probs: expected exactly one of them (the teacher's "
            f"logits, or its log-probabilities saved offline); got {given}"
        )
    name = "teacher_logits" if teacher_logits is not None else "teacher_log_probs"
    teacher = _check_logits(
        name, teacher_logits if teacher_logits is not None else teacher_log_probs
    )
    if teacher.shape[-1] != student.shape[-1]:
        raise ValueError(
            f"{name}: expected the student's vocabulary size {student.shape[-1]} (the last "
            f"axis of student_logits, shape {tuple(student.shape)}); got {teacher.shape[-1]} "
            f"(shape {tuple(teacher.shape)}): teacher and student must share a vocabulary"
        )
    if tuple(teacher.shape) != tuple(student.shape):
        raise ValueError(
            f"{name}: expected the shape of student_logits {tuple(student.shape)} (one "
            f"teacher row per student token); got {tuple(teacher.shape)}"
        )
    if teacher.device != student.device:
        raise ValueError(
            f"{name}: expected a tensor on the student's device {student.device}; got one "
            f"on {teacher.device}"
        )
    return name, teacher


def _check_target(target: object, student: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Flat int64 class ids (-1 where ignored or where there is no target) and the flat
    mask of the counted tokens (every token for ``target=None``)."""
    rows = math.prod(student.shape[:-1])
    if target is None:
        none = torch.full((rows,), -1, dtype=torch.int64, device=student.device)
        return none, torch.ones(rows, dtype=torch.bool, device=student.device)
    if not isinstance(target, Tensor):
        raise TypeError(f"target: expected a torch.Tensor or None; got {type(target).__name__}")
    expected = tuple(student.shape[:-1])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target: expected shape {expected} (student_logits' shape "
            f"{tuple(student.shape)} without the class axis, the last); got "
            f"{tuple(target.shape)}"
        )
    if target.device != student.device:
        raise ValueError(
            f"target: expected a tensor on the student's device {student.device}; got one "
            f"on {target.device}"
        )
    xp = array_api_compat.array_namespace(target)
    _validate.integer_labels(target, int(student.shape[-1]), ignore_index, xp, name="target")
    wide: Tensor = wide_labels(target, xp, name="target")
    ignored: Tensor = _validate.ignored(target, ignore_index, xp).reshape(-1)
    return torch.where(ignored, -1, wide.reshape(-1)), ~ignored


def _cat_lse(parts: list[LogSumExps]) -> LogSumExps:
    hard_parts = [p.hard for p in parts if p.hard is not None]
    hard = torch.cat(hard_parts) if hard_parts else None
    return LogSumExps(
        torch.cat([p.student for p in parts]),
        torch.cat([p.teacher for p in parts]),
        hard,
        torch.cat([p.target_logit for p in parts]),
    )


class _Distill(torch.autograd.Function):
    """Per-token losses of (rows, V) student and teacher logits, a block of rows at a
    time, with the student's gradient written out (:mod:`crossentropy.torch._distill`).
    The teacher passed in is detached: no gradient is ever returned for it."""

    @staticmethod
    def forward(
        student: Tensor, teacher: Tensor, target: Tensor, live: Tensor, d: Distillation
    ) -> tuple[Tensor, LogSumExps, DivergenceSums]:
        rows, classes = student.shape
        blocks = row_blocks(rows, classes) or [(0, 0)]
        lses: list[LogSumExps] = []
        sums: list[DivergenceSums] = []
        for start, stop in blocks:
            s, t = student[start:stop], teacher[start:stop]
            lse = log_sum_exps(s, t, target[start:stop], d)
            lses.append(lse)
            sums.append(divergence_sums(s, t, lse, d))
        lse = _cat_lse(lses)
        total = DivergenceSums(
            torch.cat([p.divergence for p in sums]), torch.cat([p.row_term for p in sums])
        )
        return row_losses(lse, total, live, d), lse, total

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        student, teacher, target, live, d = inputs
        ctx.save_for_backward(student, teacher, target, live)
        ctx.lse = output[1]
        ctx.sums = output[2]
        ctx.d = d
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_losses: Tensor | None, _lse: Any, _sums: Any
    ) -> tuple[Tensor | None, None, None, None, None]:
        student, teacher, target, live = ctx.saved_tensors
        d: Distillation = ctx.d
        if grad_losses is None:
            return None, None, None, None, None
        if torch.is_grad_enabled():
            # create_graph=True: the reference's gradient as torch operations, differentiable
            with torch.enable_grad():
                losses = _reference(student, teacher, target, live, d)
                (grad,) = torch.autograd.grad(losses, student, grad_losses, create_graph=True)
            return grad.to(student.dtype), None, None, None, None
        lse: LogSumExps = ctx.lse
        sums: DivergenceSums = ctx.sums
        rows, classes = student.shape
        r = torch.where(live, grad_losses.to(lse.student.dtype), 0.0)
        grad = torch.empty_like(student, memory_format=torch.contiguous_format)
        for start, stop in row_blocks(rows, classes):
            student_gradient(
                student[start:stop],
                teacher[start:stop],
                target[start:stop],
                lse.rows(start, stop),
                sums.rows(start, stop),
                d,
                r[start:stop],
                out=grad[start:stop],
            )
        return grad, None, None, None, None


def _masked(mask: Tensor, x: Tensor) -> Tensor:
    """x where mask, else 0 (the other branch's value, ±inf included, never read)."""
    return torch.where(mask, x, 0.0)


def _reference(
    student: Tensor, teacher: Tensor, target: Tensor, live: Tensor, d: Distillation
) -> Tensor:
    """``impl="torch"``: per-token losses of (rows, V) logits by the definitions, as torch
    operations under autograd in the compute dtype (float64 where either model's logits
    are). Rows that do not count are computed on zeros and give 0; every term whose
    probability is 0 is selected away before it is multiplied, so that autograd meets no
    0 * inf either."""
    dtype = compute_dtype(torch.promote_types(student.dtype, teacher.dtype))
    keep = live.unsqueeze(1)
    z = _masked(keep, student.to(dtype))
    xp = array_api_compat.array_namespace(z)

    def log_softmax(x: Tensor) -> Tensor:
        shift, log_sum = shift_and_log_sum(x, 1, xp)
        out: Tensor = (x - shift) - log_sum
        return out

    log_ps = log_softmax(z / d.temperature)
    log_pt = log_softmax(_masked(keep, teacher.detach().to(dtype)) / d.temperature)
    ps, pt = torch.exp(log_ps), torch.exp(log_pt)
    has_s, has_t = ps != 0, pt != 0  # NaN counts as mass: a NaN row stays NaN

    def term(p: Tensor, has: Tensor, log_p: Tensor, log_q: Tensor) -> Tensor:
        # p (log p - log q) where p has mass, else 0; both logs masked too, so that the
        # product's derivative where p = 0 is 0 * 0, never 0 * inf
        return p * (_masked(has, log_p) - _masked(has, log_q))

    if d.divergence == "forward_kl":
        divergence = term(pt, has_t, log_pt, log_ps).sum(dim=1)
    elif d.divergence == "reverse_kl":
        divergence = term(ps, has_s, log_ps, log_pt).sum(dim=1)
    else:
        either = has_s | has_t
        # where either has mass, at most one of logaddexp's arguments is -inf (a
        # probability 0, whose derivative e^(-inf - log M) is 0); where neither has, both
        # are replaced by 0: never -inf - -inf, in the value or in its derivative
        log_m = torch.logaddexp(
            _masked(either, log_pt + math.log(d.beta)),
            _masked(either, log_ps + math.log1p(-d.beta)),
        )
        divergence = d.beta * term(pt, has_t, log_pt, log_m).sum(dim=1) + (1.0 - d.beta) * term(
            ps, has_s, log_ps, log_m
        ).sum(dim=1)
    loss = torch.zeros_like(divergence)
    if d.soft_weight != 0:
        loss = loss + d.soft_weight * divergence
    if d.hard_weight != 0 and z.shape[1] > 0:
        log_p1 = log_softmax(z)
        picked = log_p1.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1)
        loss = loss - d.hard_weight * picked
    return _masked(live, loss)


class _FusedDistill(torch.autograd.Function):
    """Per-token losses of (rows, V) CPU logits by the C kernel, and the student's
    gradient: computed in the forward for the row scale ``scale`` (the reduction's, on the
    rows that count) when it is not None, handed out once by a backward whose incoming
    gradient is that scale; otherwise computed by the kernel in the backward for the
    incoming gradient."""

    @staticmethod
    def forward(
        student: Tensor,
        teacher: Tensor,
        target: Tensor,
        live: Tensor,
        d: Distillation,
        scale: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        s, t = _kernel_pair(student, teacher)
        row_scale = None if scale is None else torch.where(live, scale, 0.0)
        losses, grad = _kernel.distill_rows(s, t, target, live, d, row_scale)
        return losses, s.new_empty(0) if grad is None else grad

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        student, teacher, target, live, d, scale = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(student, teacher, target, live)
        ctx.buffer = None if scale is None else output[1]  # handed out once
        ctx.scale = scale
        ctx.d = d
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_losses: Tensor | None, _: Any
    ) -> tuple[Tensor | None, None, None, None, None, None]:
        student, teacher, target, live = ctx.saved_tensors
        d: Distillation = ctx.d
        none = (None,) * 5
        if grad_losses is None:
            return None, *none
        if torch.is_grad_enabled():
            # create_graph=True: the reference's gradient as torch operations, differentiable
            with torch.enable_grad():
                losses = _reference(student, teacher, target, live, d)
                (grad,) = torch.autograd.grad(losses, student, grad_losses, create_graph=True)
            return grad.to(student.dtype), *none
        r = torch.where(live, grad_losses, 0.0)
        if ctx.buffer is not None:
            grad, ctx.buffer = ctx.buffer, None
            if bool((torch.where(live, r == ctx.scale, True)).all()):
                return grad.to(student.dtype), *none
        s, t = _kernel_pair(student, teacher)
        _, grad = _kernel.distill_rows(s, t, target, live, d, r)
        if grad is None:  # never: a row scale was given
            raise RuntimeError("the distillation kernel wrote no gradient for a row scale")
        return grad.to(student.dtype), *none


def _kernel_pair(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Student and teacher in one dtype the kernel takes (the wider of the two; the
    gradient is rounded to the student's dtype once from it), classes consecutive."""
    wide = torch.promote_types(student.dtype, teacher.dtype)
    pair = []
    for x in (student, teacher):
        x = x.detach().to(wide)
        pair.append(x.contiguous() if x.shape[1] > 1 and x.stride(1) != 1 else x)
    return pair[0], pair[1]


def _fused_takes(student: Tensor, teacher: Tensor) -> bool:
    """Whether the C kernel runs over these logits: CPU tensors of dtypes it takes, the
    kernel loadable here."""
    return (
        student.device.type == "cpu"
        and teacher.device.type == "cpu"
        and student.dtype in _kernel.KERNELS
        and teacher.dtype in _kernel.KERNELS
        and _kernel.fused_available()
    )


def _fused(
    student: Tensor, teacher: Tensor, target: Tensor, live: Tensor, d: Distillation, reduction: str
) -> Tensor:
    """``impl="fused"``: per-token losses by the C kernel, the gradient computed in the
    forward for ``"mean"``/``"sum"`` when the student needs one."""
    scale = None
    if reduction != "none" and torch.is_grad_enabled() and student.requires_grad:
        dtype = compute_dtype(torch.promote_types(student.dtype, teacher.dtype))
        one = torch.ones((), dtype=dtype)
        # the incoming gradient of each row that autograd will send for this reduction
        scale = one if reduction == "sum" else one / live.sum().to(dtype).clamp(min=1.0)
    losses, _ = _FusedDistill.apply(student, teacher, target, live, d, scale)  # type: ignore[no-untyped-call]
    return losses  # type: ignore[no-any-return]


def _run(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    live: Tensor,
    d: Distillation,
    impl: str,
    reduction: str = "none",
) -> Tensor:
    """Per-token losses of (rows, V) logits by the path ``impl`` names. ``"auto"``: the C
    kernel on CPU where it loads, else the block sweep (the Triton kernels on CUDA are
    chosen here when they are written); the reference under ``torch.func`` transforms.
    ``reduction`` tells the fused path the row scale of the gradient it may write in the
    forward. The teacher is detached here, once, for every path."""
    teacher = teacher.detach()
    if impl == "torch" or conventions.transformed(student) or conventions.transformed(teacher):
        return _reference(student, teacher, target, live, d)
    if impl == "fused" and not _fused_takes(student, teacher):
        reason = _kernel.unavailable_reason() or (
            f"it takes float32, float64, float16 or bfloat16 CPU logits; got "
            f"{student.dtype} and {teacher.dtype} on {student.device.type}"
        )
        raise ValueError(f"impl='fused': the C distillation kernel cannot run here: {reason}")
    if impl == "fused" or (impl == "auto" and _fused_takes(student, teacher)):
        return _fused(student, teacher, target, live, d, reduction)
    losses, _, _ = _Distill.apply(student, teacher, target, live, d)  # type: ignore[no-untyped-call]
    return losses  # type: ignore[no-any-return]


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None = None,
    target: Tensor | None = None,
    *,
    teacher_log_probs: Tensor | None = None,
    divergence: str = "jsd",
    beta: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int = -100,
    soft_weight: float = 1.0,
    hard_weight: float = 0.0,
    reduction: str = "mean",
    impl: str = "auto",
) -> Tensor:
    r"""The distillation loss of a student towards a teacher, per token, from their logits.

    .. math::

        \ell_i = w_{soft} D(p_{s,i}, p_{t,i})
          + w_{hard} (-\log \operatorname{softmax}(z_{s,i})_{y_i})

        p_s = \operatorname{softmax}(z_s / T), \qquad p_t = \operatorname{softmax}(z_t / T)

    with D (in nats) the forward KL(p_t || p_s) (``divergence="forward_kl"``), the reverse
    KL(p_s || p_t) (``"reverse_kl"``) or the generalized Jensen-Shannon divergence
    (``"jsd"``) beta KL(p_t || M) + (1 - beta) KL(p_s || M), M = beta p_t + (1 - beta) p_s,
    whose beta = 0 is the forward KL and beta = 1 the reverse KL (TRL's and Liger-Kernel's
    convention). No T^2 factor (multiply it in for Hinton's scaling). The derivation and
    the decided numerics are :mod:`crossentropy.torch._distill`'s docstring: a term whose
    probability is 0 is exactly 0; a -inf student logit where the teacher has mass gives
    +inf (forward KL); the jsd is finite for finite or -inf logits; a NaN logit makes its
    token's loss NaN.

    Gradients flow to the student's logits only: the teacher's tensor is read, never
    differentiated (one that requires grad is accepted and gets no gradient).

    Args:
        student_logits: (..., V) floating-point logits of the student, any leading
            dimensions ((N, V) and (V,) included).
        teacher_logits: (..., V) logits of the teacher, the student's shape, on its device.
        target: integer class ids of the leading shape (...) for the hard term and for
            ``ignore_index``, in [0, V) or ``ignore_index``; ``None``: every token counts
            (and ``hard_weight`` must be 0).
        teacher_log_probs: instead of ``teacher_logits`` (keyword-only): the teacher's
            log-probabilities (saved offline, say), taken as logits: p_t =
            softmax(teacher_log_probs / T), the distribution they are the log of at T = 1.
        divergence: ``"jsd"``, ``"forward_kl"`` or ``"reverse_kl"`` (the KLs ignore
            ``beta``).
        beta: the jsd's weight of the teacher, in [0, 1].
        temperature: T, finite and > 0; both models' logits are divided by it (not the
            hard term's).
        ignore_index: the target value of tokens to skip: loss 0, no gradient, not counted.
        soft_weight: the divergence's weight, finite and >= 0.
        hard_weight: the hard cross entropy's weight, finite and >= 0 (> 0 needs a
            target); not both weights 0.
        reduction: ``"mean"`` (over the counted tokens; 0 over nothing), ``"sum"`` or
            ``"none"`` (per token, the target's shape, 0 at ignored tokens).
        impl: ``"auto"`` (``"fused"`` on CPU where the C kernel loads; else the rows a block
            at a time as torch operations, the backward written out), ``"fused"`` (the C
            kernel over CPU rows: each pair of rows in one sweep, the gradient written
            once) or ``"torch"`` (the readable reference under autograd,
            differentiable twice).

    Returns:
        The loss: float32 for float32/bfloat16/float16 logits, float64 where either
        model's logits are float64.

    Example:
        >>> import torch
        >>> from crossentropy.torch import distillation_loss
        >>> student = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], dtype=torch.float64)
        >>> teacher = torch.tensor([[1.0, 1.0, 1.0], [0.0, 3.0, 0.0]], dtype=torch.float64)
        >>> loss = distillation_loss(student, teacher, divergence="forward_kl")
        >>> print(f"{loss.item():.4f}")
        0.1644
    """
    reduction = _validate.reduction(reduction)
    ignore_index = _validate.ignore_index(ignore_index)
    d = check_distillation(
        divergence, beta, temperature, soft_weight, hard_weight, has_target=target is not None
    )
    chosen = _impl(impl)
    student = _check_logits("student_logits", student_logits)
    _, teacher = _check_teacher(student, teacher_logits, teacher_log_probs)
    ids, live = _check_target(target, student, ignore_index)
    classes = student.shape[-1]
    rows = ids.shape[0]
    losses = _run(
        student.reshape(rows, classes),
        teacher.reshape(rows, classes),
        ids,
        live,
        d,
        chosen,
        reduction,
    )
    if reduction == "none":
        return losses.reshape(tuple(student.shape[:-1]))
    total = losses.sum()
    if reduction == "sum":
        return total
    count = live.sum().to(total.dtype)
    return total / count.clamp(min=1.0)  # a mean over nothing: 0 / 1
