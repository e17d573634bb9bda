r"""Knowledge distillation from hidden states, without either model's logits.

A student learns from a teacher by matching its next-token distribution to the teacher's:
per token, with z_s = h_s W_s^T + b_s, z_t = h_t W_t^T + b_t (the same vocabulary V; the
hidden sizes may differ), p_s = softmax(z_s / T), p_t = softmax(z_t / T),

.. math::

    \ell_i = w_\text{soft} \, D(p_t, p_s) + w_\text{hard} \, \text{CE}(z_s, y_i)

with D forward KL, reverse KL or the generalized Jensen-Shannon divergence (definitions,
conventions, derivation of the gradient and numerics: :mod:`crossentropy.torch._distill`).

:func:`linear_distillation_loss` is the distillation row head
(:class:`crossentropy.torch.heads.DistillationHead`) plus the vocabulary engine's sweep
(:func:`crossentropy.torch.engine.sweep`): the tokens in chunks; each chunk's student
logits in one reusable buffer and its teacher logits in another, the head's three phases
over each whole row (log-sum-exps, divergence sums, the gradient written over the
student's logits), then dh_s = G W_s, dW_s += G^T h_s and db_s += sum_rows G. Both
models' (tokens x vocabulary) logits never exist: the peak beyond the inputs and their
gradients is one chunk of each and the float32 weight-gradient accumulator. In
bfloat16/float16 the sweep keeps the student's logit gradient G whole instead
(:func:`crossentropy.torch.engine.kept_gradient_sweep`: G in the half dtype, dW_s one
product at the end): the logits' size in half precision, about what the float32
accumulator takes, without its pass over the weight's size at every chunk.

Whole rows always: the chunk size is capped so that one chunk's rows fit the engine's
budget (:data:`crossentropy.torch.engine.CHUNK_BYTES`, 512 MiB); a vocabulary so wide that
not even one row fits is an error (the head takes no vocabulary blocks: each row's three
phases need its logits three times, and computing the teacher's logits of each block three
times would cost more than the products the sweep exists to save).

As :func:`crossentropy.torch.linear_cross_entropy`: for a mean or a sum the gradients are
complete after the forward's one sweep (the scale, 1 / count, is known up front) and the
backward multiplies them by the incoming gradient; for ``reduction="none"`` the backward
sweeps again with each token's incoming gradient as its row's scale. Gradients go to the
student's input, weight and bias only; the teacher's tensors are read, never
differentiated (a teacher that requires grad is not an error; it gets no gradient).

float16/bfloat16: the logits and the input-gradient product run in the input dtype, the
row math in float32, the weight and bias gradients accumulated in float32 across chunks
and rounded once at the end.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import array_api_compat
import torch
from torch import Tensor

from .. import _validate
from .._array import wide_labels
from . import _distill, conventions, engine
from .distillation import distillation_loss
from .heads import DistillationHead

__all__ = ["DistillationImpl", "linear_distillation_loss", "whole_row_chunk"]

DistillationImpl = Literal["auto", "torch"]
"""The accepted values of ``impl=`` of :func:`linear_distillation_loss`."""

_IMPLS: tuple[DistillationImpl, ...] = ("auto", "torch")


def whole_row_chunk(chunk: int | None, tokens: int, vocabulary: int, itemsize: int) -> int:
    """Tokens per chunk of the distillation sweep: ``chunk`` (or, when ``None``,
    :func:`crossentropy.torch.engine.default_chunk_size`), capped so that one chunk of
    whole rows fits :data:`crossentropy.torch.engine.CHUNK_BYTES` (each of the student's
    and the teacher's buffers); a clear error when not even one row fits."""
    row = vocabulary * itemsize
    fits = engine.CHUNK_BYTES // row
    if fits < 1:
        raise ValueError(
            f"linear_distillation_loss: one row of logits ({vocabulary} classes x {itemsize} "
            f"bytes = {row} bytes) is wider than the engine's budget of {engine.CHUNK_BYTES} "
            f"bytes per chunk; the distillation head takes whole rows only"
        )
    picked = chunk or engine.default_chunk_size(tokens, vocabulary, itemsize)
    return max(1, min(picked, fits))


class _LinearDistillation(torch.autograd.Function):
    """The chunked sweep; see the module docstring. ``forward`` returns ``(loss, scale,
    grad_input, grad_weight, grad_bias)``: for a mean or a sum the student's gradients are
    computed with the loss and handed to the backward as outputs. (``torch.func``
    transforms never reach it: :func:`linear_distillation_loss` runs the unfused
    computation under them.) The backward:

    - grad mode on (``create_graph=True``): the derivative of
      the unfused computation (:func:`_unfused`) on the saved inputs, which autograd
      differentiates again;
    - a mean or a sum, the first time: the forward's gradients times the incoming scalar;
    - ``reduction="none"``, or a later backward of a retained graph: one more sweep.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        student_input: Tensor,
        student_weight: Tensor,
        student_bias: Tensor | None,
        teacher_input: Tensor,
        teacher_weight: Tensor,
        teacher_bias: Tensor | None,
        target: Tensor | None,
        live: Tensor,
        options: dict[str, Any],
        wants: tuple[bool, bool, bool],
    ) -> tuple[Tensor | None, ...]:
        reduction = options["reduction"]
        count = int(live.sum())
        scale = 1.0 / max(count, 1) if reduction == "mean" else 1.0
        losses = torch.zeros(student_input.shape[0], dtype=torch.float64)
        now = wants if reduction != "none" else (False, False, False)
        head = DistillationHead(
            teacher_input,
            teacher_weight,
            teacher_bias,
            options["distillation"],
            target,
            live,
            scale=scale,
            losses=losses,
        )
        grads = engine.kept_gradient_sweep(
            student_input,
            student_weight,
            student_bias,
            head,
            chunk=options["chunk_size"],
            wants=now,
        )
        loss_dtype = options["loss_dtype"]
        loss = (
            losses.to(loss_dtype) if reduction == "none" else (losses.sum() * scale).to(loss_dtype)
        )
        return loss, torch.tensor(scale, dtype=torch.float64), *grads

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        *tensors, options, _ = inputs
        _, scale, *grads = output
        ctx.save_for_backward(*tensors, scale)
        ctx.options = options
        ctx.grads = grads if any(g is not None for g in grads) else None
        ctx.mark_non_differentiable(scale, *(g for g in grads if g is not None))
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor | None, *_: Any) -> tuple[Any, ...]:  # type: ignore[override]
        nothing = (None,) * 7  # the teacher's three tensors, target, live, options, wants
        (
            student_input,
            student_weight,
            student_bias,
            teacher_input,
            teacher_weight,
            teacher_bias,
            target,
            live,
            scale,
        ) = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        if grad_loss is None or not any(needs):
            return None, None, None, *nothing
        options = ctx.options
        reduced = options["reduction"] != "none"
        dtypes = (
            student_input.dtype,
            student_weight.dtype,
            None if student_bias is None else student_bias.dtype,
        )
        if torch.is_grad_enabled():
            grads = _differentiable_gradients(
                (student_input, student_weight, student_bias),
                (teacher_input, teacher_weight, teacher_bias),
                target,
                options,
                needs,
                grad_loss,
            )
            return *grads, *nothing
        if reduced and ctx.grads is not None:
            grads, ctx.grads = ctx.grads, None  # handed out once
            return *engine.finish_gradients(grads, dtypes, grad_loss), *nothing
        row_scale = float(scale) if reduced else grad_loss.double().reshape(-1)
        head = DistillationHead(
            teacher_input,
            teacher_weight,
            teacher_bias,
            options["distillation"],
            target,
            live,
            scale=row_scale,
        )
        wants = (needs[0], needs[1], needs[2])
        with torch.autocast(student_input.device.type, enabled=False):
            again = engine.kept_gradient_sweep(
                student_input,
                student_weight,
                student_bias,
                head,
                chunk=options["chunk_size"],
                wants=wants,
            )
        factor = grad_loss if reduced else None
        return *engine.finish_gradients(again, dtypes, factor), *nothing


def _differentiable_gradients(
    student: tuple[Tensor, Tensor, Tensor | None],
    teacher: tuple[Tensor, Tensor, Tensor | None],
    target: Tensor | None,
    options: dict[str, Any],
    needs: tuple[bool, ...],
    grad_loss: Tensor,
) -> engine.Gradients:
    """The student's gradients as the derivative of the unfused computation on the saved
    inputs, under grad mode: autograd records it, so a double backward or a gradient
    penalty differentiates it again. Both models' logits exist whole here."""
    wanted = [x for x, need in zip(student, needs, strict=True) if need and x is not None]
    with torch.enable_grad():
        loss = _unfused(*student, *teacher, target, options)
        found = torch.autograd.grad(
            loss, wanted, grad_loss.to(loss.dtype), create_graph=True, allow_unused=True
        )
    given = iter(found)
    grads = [
        next(given) if need and x is not None else None
        for x, need in zip(student, needs, strict=True)
    ]
    grads = [
        torch.zeros_like(x) if grad is None and need and x is not None else grad
        for x, need, grad in zip(student, needs, grads, strict=True)
    ]
    return grads[0], grads[1], grads[2]


def _unfused(
    student_input: Tensor,
    student_weight: Tensor,
    student_bias: Tensor | None,
    teacher_input: Tensor,
    teacher_weight: Tensor,
    teacher_bias: Tensor | None,
    target: Tensor | None,
    options: dict[str, Any],
) -> Tensor:
    """The readable reference under autograd (``impl="torch"``): both models' logits
    materialised (the teacher's from detached tensors: never differentiated), then
    :func:`crossentropy.torch.distillation_loss` with ``impl="torch"``; flat tokens."""
    d: _distill.Distillation = options["distillation"]
    vocabulary = student_weight.shape[0]
    student = torch.nn.functional.linear(student_input, student_weight, student_bias)
    teacher = torch.nn.functional.linear(
        teacher_input.detach(),
        teacher_weight.detach(),
        None if teacher_bias is None else teacher_bias.detach(),
    )
    loss = distillation_loss(
        student.reshape(-1, vocabulary),
        teacher.reshape(-1, vocabulary),
        None if target is None else target.reshape(-1),
        divergence=d.divergence,
        beta=d.beta,
        temperature=d.temperature,
        ignore_index=options["ignore_index"],
        soft_weight=d.soft_weight,
        hard_weight=d.hard_weight,
        reduction=options["reduction"],
        impl="torch",
    )
    return loss.to(options["loss_dtype"])


def _check_linear(
    who: str, input: Tensor, weight: Tensor, bias: Tensor | None, like: Tensor | None
) -> None:
    """The types, shapes, dtypes and devices of one model's input, weight and bias
    (``who`` is ``"student"`` or ``"teacher"``); the teacher's against the student's
    input ``like``."""
    if not isinstance(input, Tensor) or input.ndim < 1 or not input.is_floating_point():
        raise TypeError(f"{who}_input: expected a floating tensor (..., D); got {input!r:.60}")
    if like is not None:
        if tuple(input.shape[:-1]) != tuple(like.shape[:-1]):
            raise ValueError(
                f"teacher_input: expected the student input's leading shape "
                f"{tuple(like.shape[:-1])} (one teacher token per student token) with any "
                f"last dimension; got {tuple(input.shape)}"
            )
        if input.dtype != like.dtype:
            raise TypeError(
                f"teacher_input: expected the student input's dtype {like.dtype}; got "
                f"{input.dtype} (cast the teacher's hidden states and weight)"
            )
        if input.device != like.device:
            raise ValueError(
                f"teacher_input: expected the student input's device {like.device}; got "
                f"{input.device}"
            )
    if not isinstance(weight, Tensor) or weight.ndim != 2:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"{who}_weight: expected a 2-D tensor (V, D); got {shape}")
    if weight.shape[1] != input.shape[-1]:
        raise ValueError(
            f"{who}_weight: expected (V, {input.shape[-1]}) to match {who}_input's last "
            f"dimension; got {tuple(weight.shape)}"
        )
    if weight.shape[0] < 1:
        raise ValueError(f"{who}_weight: expected at least one row (class); got (0, D)")
    vocabulary = weight.shape[0]
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (vocabulary,)):
        shape = tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
        raise ValueError(f"{who}_bias: expected shape ({vocabulary},) or None; got {shape}")
    for name, tensor in ((f"{who}_weight", weight), (f"{who}_bias", bias)):
        if tensor is None:
            continue
        if tensor.dtype != input.dtype:
            raise TypeError(
                f"{name}: expected {who}_input's dtype {input.dtype}; got {tensor.dtype}"
            )
        if tensor.device != input.device:
            raise ValueError(
                f"{name}: expected {who}_input's device {input.device}; got {tensor.device}"
            )


def _check_target(
    target: Tensor | None, leading: tuple[int, ...], vocabulary: int, ignore_index: int
) -> Tensor | None:
    """``target`` as int64 of shape ``leading`` (exactly: a value past int64 is refused,
    never wrapped), each value a class or ``ignore_index``; errors name ``target``."""
    if target is None:
        return None
    if not isinstance(target, Tensor):
        raise TypeError(f"target: expected a tensor or None; got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"target: expected integer class indices of shape {leading}; got dtype {target.dtype}"
        )
    if tuple(target.shape) != leading:
        raise ValueError(
            f"target: expected class indices of shape {leading} (the input's shape without "
            f"its last dimension); got {tuple(target.shape)}"
        )
    xp = array_api_compat.array_namespace(target)
    target = wide_labels(target, xp, name="target")
    _validate.integer_labels(target, vocabulary, ignore_index, xp, name="target")
    return target.to(torch.int64)


def linear_distillation_loss(
    student_input: Tensor,
    student_weight: Tensor,
    teacher_input: Tensor,
    teacher_weight: Tensor,
    target: Tensor | None = None,
    *,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    divergence: str = "jsd",
    beta: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int = -100,
    soft_weight: float = 1.0,
    hard_weight: float = 0.0,
    reduction: str = "mean",
    chunk_size: int | None = None,
    impl: DistillationImpl = "auto",
) -> Tensor:
    r"""The distillation loss of a student's output layer towards a teacher's, from both
    models' hidden states, without either model's logits.

    Per token, with z_s = h_s W_s^T + b_s, z_t = h_t W_t^T + b_t, p_s = softmax(z_s / T)
    and p_t = softmax(z_t / T):

    - ``divergence="forward_kl"``: KL(p_t || p_s); ``"reverse_kl"``: KL(p_s || p_t);
    - ``"jsd"``: with M = beta p_t + (1 - beta) p_s, beta KL(p_t || M) + (1 - beta)
      KL(p_s || M); ``beta=0`` is forward KL and ``beta=1`` reverse KL (the convention of
      TRL's generalized JSD and of Liger-Kernel);
    - loss = soft_weight * divergence + hard_weight * cross_entropy(z_s, target) (the
      student at temperature 1); no T^2 factor (multiply it in for Hinton's scaling).

    Args:
        student_input: the student's hidden states (..., D_s), floating.
        student_weight: the student's output layer (V, D_s), the input's dtype.
        teacher_input: the teacher's hidden states (..., D_t), the same leading shape and
            dtype as the student's (D_t may differ from D_s).
        teacher_weight: the teacher's output layer (V, D_t): the same vocabulary V.
        target: class indices (...) (each in [0, V) or ``ignore_index``), or ``None``: every
            token counts, and ``hard_weight`` must be 0.
        student_bias, teacher_bias: (V,) or ``None``.
        divergence: ``"jsd"``, ``"forward_kl"`` or ``"reverse_kl"``.
        beta: the JSD's weight of the teacher, in [0, 1].
        temperature: T, finite and > 0, of the divergence.
        ignore_index: the target value of a token without a loss (0, gradient 0, not counted).
        soft_weight, hard_weight: the weights of the divergence and the cross entropy.
        reduction: ``"mean"`` over the counted tokens (0 over none), ``"sum"`` or
            ``"none"`` (per token, shape (...)).
        chunk_size: tokens per chunk; ``None`` picks one from the shapes
            (:func:`crossentropy.torch.engine.default_chunk_size`); either is capped so
            that one chunk's whole rows fit the engine's budget (:func:`whole_row_chunk`).
        impl: ``"auto"`` (the vocabulary engine: one chunk of each model's logits at a
            time) or ``"torch"`` (the unfused readable reference: both models' logits
            materialised, then :func:`crossentropy.torch.distillation_loss` with
            impl="torch", under autograd).

    Gradients flow to ``student_input``, ``student_weight`` and ``student_bias`` only; the
    teacher is read, never differentiated. A backward with ``create_graph=True`` (a double
    backward, a gradient penalty) differentiates the unfused computation on the saved
    inputs, and under a ``torch.func`` transform (``grad``, ``vmap``, ``jvp``, ...) the
    unfused computation runs instead of the sweep; their memory is the unfused
    computation's.
    Under ``torch.autocast`` the products run in the autocast dtype and the loss is
    float32. The loss is float32 for float32/bfloat16/float16 inputs (as
    :func:`crossentropy.torch.distillation_loss`'s), float64 for float64.

    Example:
        >>> import torch
        >>> from crossentropy.torch import linear_distillation_loss
        >>> g = torch.Generator().manual_seed(0)
        >>> hs = torch.randn(6, 4, generator=g, dtype=torch.float64)
        >>> ws = torch.randn(10, 4, generator=g, dtype=torch.float64)
        >>> ht = torch.randn(6, 8, generator=g, dtype=torch.float64)
        >>> wt = torch.randn(10, 8, generator=g, dtype=torch.float64)
        >>> loss = linear_distillation_loss(hs, ws, ht, wt, divergence="forward_kl")
        >>> log_ps = torch.log_softmax(hs @ ws.T, -1)
        >>> log_pt = torch.log_softmax(ht @ wt.T, -1)
        >>> unfused = (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()
        >>> print(f"{loss.item():.6f} {unfused.item():.6f}")
        2.075872 2.075872
    """
    if impl not in _IMPLS:
        names = ", ".join(repr(name) for name in _IMPLS)
        raise ValueError(
            f"impl: expected one of {names} (the vocabulary engine, or the unfused "
            f"reference); got {impl!r}"
        )
    d = _distill.check_distillation(
        divergence, beta, temperature, soft_weight, hard_weight, has_target=target is not None
    )
    reduction = _validate.reduction(reduction)
    ignore_index = _validate.ignore_index(ignore_index)
    chunk_size = _validate.chunk_size(chunk_size)
    _check_linear("student", student_input, student_weight, student_bias, None)
    _check_linear("teacher", teacher_input, teacher_weight, teacher_bias, student_input)
    vocabulary = student_weight.shape[0]
    if teacher_weight.shape[0] != vocabulary:
        raise ValueError(
            f"teacher_weight: expected the student's vocabulary of {vocabulary} classes (the "
            f"same tokens); got {teacher_weight.shape[0]} (shape {tuple(teacher_weight.shape)})"
        )
    leading = tuple(student_input.shape[:-1])
    if target is not None and target.device != student_input.device:
        raise ValueError(
            f"target: expected the student input's device {student_input.device}; got "
            f"{target.device}"
        )
    target = _check_target(target, leading, vocabulary, ignore_index)
    # float32 for half precision (a loss is never rounded to bfloat16), as distillation_loss
    loss_dtype = torch.promote_types(student_input.dtype, torch.float32)
    low = conventions.autocast_dtype(student_input)
    if low is not None:  # the products in the autocast dtype, as F.linear runs there

        def cast(x: Tensor) -> Tensor:
            return x if x.dtype == torch.float64 else x.to(low)

        student_input, student_weight = cast(student_input), cast(student_weight)
        teacher_input, teacher_weight = cast(teacher_input), cast(teacher_weight)
        student_bias = None if student_bias is None else cast(student_bias)
        teacher_bias = None if teacher_bias is None else cast(teacher_bias)
    options: dict[str, Any] = {
        "distillation": d,
        "reduction": reduction,
        "ignore_index": ignore_index,
        "loss_dtype": loss_dtype,
    }
    student = (student_input, student_weight, student_bias)
    transformed = any(x is not None and conventions.transformed(x) for x in student)
    with torch.autocast(student_input.device.type, enabled=False):
        if impl == "torch" or transformed:
            loss = _unfused(
                student_input,
                student_weight,
                student_bias,
                teacher_input,
                teacher_weight,
                teacher_bias,
                target,
                options,
            )
            return loss.reshape(leading) if reduction == "none" else loss
        tokens = math.prod(leading)

        def flat(x: Tensor) -> Tensor:
            x = x.reshape(tokens, x.shape[-1])
            return x if x.stride(-1) == 1 else x.contiguous()

        flat_target = None if target is None else target.reshape(-1).contiguous()
        live = (
            torch.ones(tokens, dtype=torch.bool, device=student_input.device)
            if flat_target is None
            else flat_target != ignore_index
        )
        options["chunk_size"] = whole_row_chunk(
            chunk_size, tokens, vocabulary, student_input.element_size()
        )
        wants = engine.wanted_gradients(student_input, student_weight, student_bias)
        loss, *_ = _LinearDistillation.apply(  # type: ignore[no-untyped-call]
            flat(student_input),
            student_weight.contiguous(),
            student_bias,
            flat(teacher_input),
            teacher_weight.contiguous(),
            teacher_bias,
            flat_target,
            live,
            options,
            wants,
        )
    result: Tensor = loss.reshape(leading) if reduction == "none" else loss
    return result
