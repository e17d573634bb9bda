r"""Vocabulary-parallel cross entropy over ``torch.distributed``: no rank holds whole logits.

When the output layer is split by vocabulary across ranks (tensor parallelism), rank k holds
the logits of the classes :math:`[s_k, s_k + V_k)` only. The loss of a row needs three
numbers, each a combination over the slices (derivation and the per-row math:
:mod:`crossentropy.torch._slices`), so the ranks exchange N values per row statistic,
never the logits:

.. code-block:: text

    L_k       = logsumexp of the rank's slice of each row           local (the fused kernel)
    M         = all_reduce(L_k, MAX)                                 N values
    S, z_y, Sw = all_reduce([exp(L_k - M),                           2N values (3N with
                             z_y if y is in the slice else 0,          label smoothing), one
                             sum_j w_j z_j over the slice], SUM)      collective
    L         = M + log S                                            the row's logsumexp

Every rank then computes the same per-row losses from (L, z_y, Sw), and the gradient of its
own slice from L alone, :math:`r e^{z_j - L} - \tfrac{\varepsilon}{V} w_j -
(1-\varepsilon) w_y [j = y]`: the backward needs no communication. The mean's denominator,
the summed weight of the counted targets, is the same on every rank because the targets
are global class ids, the same on every rank (checked).

The linear version takes the tokens in chunks as :func:`crossentropy.torch.linear_cross_entropy`
does: each chunk's local logits ``h W_k^T``, the two all-reduces above, the gradient written
over the logits, ``dW_k += G_k^T h`` (the rank's own rows of the weight gradient) and the
partial input gradient ``G_k W_k``; the input gradient is the sum of the partials over the
ranks, one all-reduce of (N, D) at the end.

The per-token log-probabilities and entropies (:func:`vocab_parallel_token_log_probs`,
:func:`vocab_parallel_linear_token_log_probs`) exchange the row statistics of
:mod:`crossentropy.torch._tokens` the same way: the slices' maxima all-reduced (MAX), then
their sums of exponentials and of e^(u - m)(u - m), rescaled to the global maximum, and the
target's logit, summed in one all-reduce of 3N values; each rank's gradient comes from
the forward's whole-row statistics, and the linear version's input gradient is summed
over the ranks once.

The distillation losses (:func:`vocab_parallel_distillation_loss`,
:func:`vocab_parallel_linear_distillation_loss`: both models split by vocabulary the same
way) exchange the three phases of :mod:`crossentropy.torch._distill` the same way: the
slices' log-sum-exps of both models (and the student's at temperature 1 for a hard
term) all-reduced MAX, then rescaled and summed with the target logit (SUM); given the
whole rows' log-sum-exps, the slices' divergence sums D and R summed (SUM); every rank
then has the same per-row losses, and its slice's gradient from (L's, D, R) needs no
communication.

Agreement before any of it: every call first all-gathers a small descriptor from each rank
(the number of rows, dtype, slice size and start, reduction, ``ignore_index``, smoothing,
z-loss, checksums of the target and the class weights, ...), and every rank checks the same
table, so ranks that disagree all raise the same ``ValueError`` instead of waiting in a
collective that never completes; an argument one rank rejects is reported on every rank.

Works with any backend that has all-reduce MAX/SUM and all-gather: gloo on CPU (the local
logsumexp then runs in the fused C kernel when it is available), NCCL on GPUs (torch
operations throughout; the collectives' tensors live on ``torch.cuda.current_device()``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import array_api_compat
import torch
import torch.distributed as dist
from torch import Tensor

from .. import _validate
from . import _kernel, conventions, engine
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
from ._slices import RowTerms
from ._tokens import TokenStatistics
from .heads import CrossEntropyHead, DistillationHead, RowStatistics, TokenCombine, TokenHead
from .linear import check_shapes
from .linear_distillation import whole_row_chunk

__all__ = [
    "DTYPES",
    "FIELDS",
    "FUNCTIONS",
    "vocab_parallel_cross_entropy",
    "vocab_parallel_distillation_loss",
    "vocab_parallel_linear_cross_entropy",
    "vocab_parallel_linear_distillation_loss",
    "vocab_parallel_linear_token_log_probs",
    "vocab_parallel_token_log_probs",
]

FUNCTIONS = (
    "vocab_parallel_cross_entropy",
    "vocab_parallel_linear_cross_entropy",
    "vocab_parallel_token_log_probs",
    "vocab_parallel_linear_token_log_probs",
    "vocab_parallel_distillation_loss",
    "vocab_parallel_linear_distillation_loss",
)
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_PRIME = 2**31 - 1


# --------------------------------------------------------------------------- the group


@dataclasses.dataclass(frozen=True)
class _Group:
    handle: Any  # the ProcessGroup, or None for the default group
    rank: int
    world: int
    device: torch.device  # where the agreement's small tensors go

    @classmethod
    def of(cls, group: Any, function: str) -> _Group:
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError(
                f"group: {function} needs an initialised torch.distributed process group; "
                "got none (call torch.distributed.init_process_group first)"
            )
        rank = dist.get_rank(group)
        if rank < 0:
            raise ValueError(f"group: expected a group this process belongs to; got {group!r}")
        nccl = "nccl" in str(dist.get_backend(group)).lower()
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        return cls(group, rank, dist.get_world_size(group), device)


# --------------------------------------------------------------------------- agreement


def _plain(value: float) -> str:
    return f"{value:g}"


@dataclasses.dataclass(frozen=True)
class _Field:
    """One entry of the descriptor every rank contributes; ``about`` names it in errors."""

    key: str
    about: str
    agree: bool = True  # every rank must give the same value
    show: Callable[[float], str] = _plain


FIELDS = (
    _Field("function", "the function called", show=lambda v: FUNCTIONS[int(v)]),
    _Field("rows", "target (its number of elements: rows/tokens)"),
    _Field("dtype", "the dtype of the logits (the input)", show=lambda v: str(DTYPES[int(v)])),
    _Field("hidden", "input (its last dimension, the hidden size)"),
    _Field("reduction", "reduction", show=lambda v: repr(_validate.REDUCTIONS[int(v)])),
    _Field("ignore_index", "ignore_index"),
    _Field("label_smoothing", "label_smoothing"),
    _Field("z_loss", "z_loss"),
    _Field("temperature", "temperature"),
    _Field(
        "divergence",
        "divergence (beta 0 taken as 'forward_kl', 1 as 'reverse_kl')",
        show=lambda v: repr(_validate.DIVERGENCES[int(v)]),
    ),
    _Field("beta", "beta"),
    _Field("soft_weight", "soft_weight"),
    _Field("hard_weight", "hard_weight"),
    _Field("target_given", "target (given: 1, None: 0)"),
    _Field(
        "teacher_dtype",
        "the dtype of the teacher's logits (its input)",
        show=lambda v: str(DTYPES[int(v)]),
    ),
    _Field("teacher_hidden", "teacher_input (its last dimension, the hidden size)"),
    _Field("student_bias", "student_bias (1 given, 0 None)"),
    _Field("teacher_bias", "teacher_bias (1 given, 0 None)"),
    _Field("target_sum", "target (its values: checksums)"),
    _Field("target_mix", "target (its values and their order: checksums)"),
    _Field("weight_size", "weight (its size; -1 for None)"),
    _Field("weight_sum", "weight (its values: checksums of the bits)"),
    _Field("weight_mix", "weight (its values and their order: checksums of the bits)"),
    _Field("bias", "linear_bias (1 given, 0 None)"),
    _Field("input_grad", "whether input requires a gradient (1 yes, 0 no)"),
    _Field("chunk_size", "chunk_size (0 for None)"),
    _Field("start", "vocab_start_index", agree=False),
    _Field("size", "the slice size", agree=False),
)


def _checksums(values: Tensor) -> tuple[float, float]:
    """Two checksums of an integer tensor, exact (integers mod p = 2^31 - 1, no overflow
    below 2^32 elements) and equal wherever the values are: sum_i v_i and sum_i v_i m_i
    mod p, with m_i = 48271 i mod p + 1 (so the order counts too)."""
    v = torch.remainder(values.reshape(-1).to(torch.int64), _PRIME)
    position = torch.arange(v.numel(), dtype=torch.int64, device=v.device)
    multiplier = torch.remainder(torch.remainder(position, _PRIME) * 48271, _PRIME) + 1
    mixed = torch.remainder(v * multiplier, _PRIME)
    return float(v.sum() % _PRIME), float(mixed.sum() % _PRIME)


_BITS = {8: torch.int64, 4: torch.int32, 2: torch.int16}


def _weight_fields(weight: object) -> dict[str, float]:
    if weight is None:
        return {"weight_size": -1.0}
    if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.ndim != 1:
        shown = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise TypeError(f"weight: expected a 1-D floating tensor (V,) or None; got {shown}")
    if weight.is_meta:
        raise ValueError("weight: expected class weights with values; got a meta tensor")
    if weight.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "weight: the class weights require a gradient, but the loss is not "
            "differentiable with respect to them (as in torch.nn.functional.cross_entropy); "
            "pass weight.detach()"
        )
    bits = weight.contiguous().view(_BITS[weight.element_size()])
    total, mixed = _checksums(bits)
    return {"weight_size": float(weight.numel()), "weight_sum": total, "weight_mix": mixed}


def _target_fields(target: object, shape: tuple[int, ...]) -> dict[str, float]:
    if not isinstance(target, Tensor) or target.is_floating_point() or target.is_complex():
        raise TypeError(
            f"target: expected a tensor of integer class ids; got {type(target).__name__}"
            + (f" of dtype {target.dtype}" if isinstance(target, Tensor) else "")
        )
    if tuple(target.shape) != shape:
        raise ValueError(
            f"target: expected shape {shape} (the logits' shape without the class axis); "
            f"got {tuple(target.shape)}"
        )
    if target.is_meta:
        raise ValueError("target: expected class ids with values; got a meta tensor")
    total, mixed = _checksums(target)
    return {"rows": float(target.numel()), "target_sum": total, "target_mix": mixed}


def _option_fields(
    reduction: object, ignore_index: object, label_smoothing: object, z_loss: object
) -> dict[str, float]:
    _validate.reduction(reduction)
    ignore_index = _validate.ignore_index(ignore_index)
    eps = _validate.label_smoothing(label_smoothing)
    zl = _validate.z_loss(z_loss)
    return {
        "reduction": float(_validate.REDUCTIONS.index(str(reduction))),
        "ignore_index": float(ignore_index),
        "label_smoothing": eps,
        "z_loss": zl,
    }


def _logits_fields(
    logits_shard: object, vocab_start_index: object, name: str = "logits_shard"
) -> dict[str, float]:
    """The checks of a ``logits_shard`` (..., V_k) (called ``name`` in the errors) and its
    descriptor's dtype, size and start."""
    if not isinstance(logits_shard, Tensor) or logits_shard.ndim < 1:
        raise ValueError(
            f"{name}: expected a tensor (..., V_k) with the classes last; got "
            f"{type(logits_shard).__name__}"
            + (" of 0 dimensions" if isinstance(logits_shard, Tensor) else "")
        )
    if logits_shard.dtype not in DTYPES:
        raise TypeError(
            f"{name}: expected float32, float64, bfloat16 or float16; got {logits_shard.dtype}"
        )
    if logits_shard.shape[-1] < 1:
        raise ValueError(
            f"{name}: expected at least one class in the slice; got shape "
            f"{tuple(logits_shard.shape)}"
        )
    return {
        "dtype": float(DTYPES.index(logits_shard.dtype)),
        "size": float(logits_shard.shape[-1]),
        "start": _start_field(vocab_start_index),
    }


def _linear_fields(
    input: Tensor,
    linear_weight_shard: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    vocab_start_index: object,
    chunk_size: int | None,
    no_probabilities: str,
) -> dict[str, float]:
    """The checks of the hidden-state functions' input, weight slice, bias and chunk size
    (class-index targets only: ``no_probabilities`` says why), and their descriptor's
    dtype, hidden size, slice size and start, bias, input gradient and chunk size."""
    probabilities = check_shapes(input, linear_weight_shard, target, linear_bias)
    if probabilities or input.dtype not in DTYPES:
        raise TypeError(
            f"target: expected integer class ids ({no_probabilities})"
            if probabilities
            else f"input: expected float32, float64, bfloat16 or float16; got {input.dtype}"
        )
    if linear_weight_shard.shape[0] < 1:
        raise ValueError(
            "linear_weight_shard: expected at least one row (class) in the slice; got "
            f"shape {tuple(linear_weight_shard.shape)}"
        )
    _validate.chunk_size(chunk_size)
    return {
        "dtype": float(DTYPES.index(input.dtype)),
        "hidden": float(input.shape[-1]),
        "size": float(linear_weight_shard.shape[0]),
        "start": _start_field(vocab_start_index),
        "bias": float(linear_bias is not None),
        "input_grad": float(torch.is_grad_enabled() and input.requires_grad),
        "chunk_size": float(chunk_size or 0),
    }


def _start_field(vocab_start_index: object) -> float:
    if vocab_start_index is None:
        return -1.0
    if (
        isinstance(vocab_start_index, bool)
        or not isinstance(vocab_start_index, int)
        or vocab_start_index < 0
    ):
        raise ValueError(
            f"vocab_start_index: expected a non-negative integer or None; got {vocab_start_index!r}"
        )
    return float(vocab_start_index)


def _agree(
    function: str, group: _Group, describe: Callable[[], dict[str, float]]
) -> list[dict[str, float]]:
    """All-gather every rank's descriptor; raise the same error on every rank when one
    rank's arguments are invalid or the ranks disagree; else every rank's descriptor."""
    failure: Exception | None = None
    try:
        fields = describe()
    except (TypeError, ValueError) as error:
        failure, fields = error, {}
    vector = torch.tensor(
        [float(failure is not None)] + [float(fields.get(f.key, 0.0)) for f in FIELDS],
        dtype=torch.float64,
        device=group.device,
    )
    gathered = [torch.empty_like(vector) for _ in range(group.world)]
    dist.all_gather(gathered, vector, group=group.handle)
    table = torch.stack(gathered).cpu().tolist()
    if any(row[0] for row in table):
        messages: list[Any] = [None] * group.world
        mine = None if failure is None else f"{type(failure).__name__}: {failure}"
        dist.all_gather_object(messages, mine, group=group.handle)
        failed = [(rank, text) for rank, text in enumerate(messages) if text is not None]
        kind = TypeError if all(t.startswith("TypeError") for _, t in failed) else ValueError
        reasons = "; ".join(f"rank {rank}: {text}" for rank, text in failed)
        raise kind(
            f"{function}: invalid arguments on {len(failed)} of {group.world} rank(s), "
            f"raised on every rank: {reasons}"
        ) from failure
    described = [dict(zip([f.key for f in FIELDS], row[1:], strict=True)) for row in table]
    for field in FIELDS:
        values = [d[field.key] for d in described]
        if field.agree and len(set(values)) > 1:
            shown = ", ".join(f"rank {r}: {field.show(v)}" for r, v in enumerate(values))
            # ranks that called different functions still raise the same message
            where = __name__ if field.key == "function" else function
            raise ValueError(
                f"{where}: the ranks disagree on {field.about} ({shown}); expected the "
                "same on every rank"
            )
    return described


@dataclasses.dataclass(frozen=True)
class _Shard:
    start: int  # the first class of this rank's slice
    size: int  # the classes in this rank's slice
    vocabulary: int  # V, all slices together
    widest: int  # the largest slice


def _shard(described: list[dict[str, float]], rank: int) -> _Shard:
    """This rank's slice: in rank order when no rank gives ``vocab_start_index``, else where
    each rank says, checked to tile [0, V) without gaps or overlaps."""
    starts = [int(d["start"]) for d in described]
    sizes = [int(d["size"]) for d in described]
    if all(s < 0 for s in starts):
        starts = [sum(sizes[:r]) for r in range(len(sizes))]
    position = 0
    for r in sorted(range(len(sizes)), key=lambda r: starts[r]):
        if starts[r] != position:
            shown = ", ".join(
                f"rank {r}: " + ("None" if s < 0 else f"[{s}, {s + n})")
                for r, (s, n) in enumerate(zip(starts, sizes, strict=True))
            )
            raise ValueError(
                "vocab_start_index: expected slices that tile [0, V) without gaps or "
                f"overlaps, given on every rank or on none; got {shown}"
            )
        position += sizes[r]
    return _Shard(starts[rank], sizes[rank], sum(sizes), max(sizes))


def _check_global(target: Tensor, weight: Tensor | None, vocabulary: int, ignore: int) -> None:
    """Checks that need the whole vocabulary's size; the same outcome on every rank."""
    _validate.integer_labels(target, vocabulary, ignore, array_api_compat.array_namespace(target))
    if weight is not None:
        _validate.class_weight(weight, vocabulary)


def _row_terms(
    target: Tensor,
    weight: Tensor | None,
    shard: _Shard,
    *,
    like: Tensor,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    reduction: str,
) -> tuple[RowTerms, float]:
    """The per-row terms on ``like``'s device in its compute dtype, after the checks that
    need the whole vocabulary, and d(reduced loss)/d(row loss) (the same on every rank: the
    targets and weights are)."""
    weight = None if weight is None else weight.to(like.device)
    # checked in the target's own dtype: uint64 would wrap in int64 (2**64 - 1 to -1)
    _check_global(target, weight, shard.vocabulary, ignore_index)
    flat_target = target.reshape(-1).to(device=like.device, dtype=torch.int64)
    terms = RowTerms.of(
        flat_target,
        weight,
        ignore_index=ignore_index,
        classes=shard.vocabulary,
        label_smoothing=float(label_smoothing),
        z_loss=float(z_loss),
        dtype=torch.promote_types(like.dtype, torch.float32),
    )
    return terms, conventions.mean_scale(flat_target, weight, ignore_index, reduction)


# --------------------------------------------------------------------------- the statistics


def _all_reduced(group: Any) -> Callable[[RowStatistics], RowStatistics]:
    """The whole rows' statistics from each rank's slice's: the logsumexp's maximum
    all-reduced (MAX), then the slices' exp(L_k - M), z_y and S_w summed in one all-reduce
    of 2N (3N) values; L = M + log S (:func:`crossentropy.torch.heads.combine_logsumexp`
    over the ranks)."""

    def combine(part: RowStatistics) -> RowStatistics:
        peak = part.lse.clone()
        dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
        shift = torch.where(torch.isfinite(peak), peak, 0.0)
        parts = [torch.exp(part.lse - shift), part.target_logit]
        if part.weighted_sum is not None:
            parts.append(part.weighted_sum)
        packed = torch.stack(parts)
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
        weighted = packed[2] if part.weighted_sum is not None else None
        return RowStatistics(shift + torch.log(packed[0]), packed[1], weighted)

    return combine


def _sum_over_ranks(grad: Tensor | None, group: Any) -> None:
    """All-reduce the partial input gradients (in float32 at least: half-precision partial
    sums would lose the digits the sum needs)."""
    if grad is None:
        return
    if grad.dtype in (torch.float32, torch.float64):
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=group)
        return
    wide = grad.float()
    dist.all_reduce(wide, op=dist.ReduceOp.SUM, group=group)
    grad.copy_(wide)


# --------------------------------------------------------------------------- logits


class _AllReduce(torch.autograd.Function):
    """A sum over the ranks written as an autograd operation, for the backward under grad
    mode (a double backward through the vocabulary-parallel losses). A tensor on every rank
    is either the same (replicated) or one rank's part; the sum turns parts into a
    replicated value (``forward=True``), and the cotangents of a replicated value used by
    each rank on its own part are summed back (``backward=True``), as in Megatron-LM's
    tensor-parallel regions. Every rank must run the backward."""

    @staticmethod
    def forward(x: Tensor, group: Any, forward: bool, backward: bool) -> Tensor:  # type: ignore[override]
        out = x.clone()
        if forward:
            dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.group, ctx.sum_backward = inputs[1], inputs[3]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        return _AllReduce.apply(grad, ctx.group, ctx.sum_backward, False), None, None, None  # type: ignore[no-untyped-call]


def _differentiable_lse(z: Tensor, shift: Tensor, group: Any) -> Tensor:
    """Each row's logsumexp over every rank's slice as torch operations: log of the
    all-reduced sum of exp(z - shift), plus ``shift`` (the forward's logsumexp, a constant:
    the shift cancels in the derivative). Each rank's uses of it are its own part, so the
    cotangents are summed over the ranks."""
    safe = torch.where(torch.isfinite(shift), shift, 0.0).detach()
    local = torch.exp(z - safe[:, None]).sum(1)
    return safe + torch.log(_AllReduce.apply(local, group, True, True))  # type: ignore[no-untyped-call]


class _VocabParallelCrossEntropy(torch.autograd.Function):
    """The loss in the forward with the slice's gradient; the backward rescales it (the
    first time; a later backward of a retained graph recomputes it from the forward's
    logsumexp), or, under grad mode, writes it as torch operations (with the all-reduce of
    the logsumexp) for autograd to differentiate again."""

    @staticmethod
    def forward(  # type: ignore[override]
        logits: Tensor,
        terms: RowTerms,
        start: int,
        group: Any,
        scale: float,
        reduction: str,
        want_grad: bool,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        z = logits.detach()
        rows = z.shape[0]
        row_losses = torch.empty(rows, dtype=torch.float64, device=z.device)
        lse = torch.empty(rows, dtype=terms.w_y.dtype, device=z.device)
        head = CrossEntropyHead(
            terms, scale=scale, losses=row_losses, lse=lse, start=start, combine=_all_reduced(group)
        )
        head.begin(slice(None))
        head.absorb(z, 0)
        head.finish()
        grad = None
        if want_grad:
            cpu = z.device.type == "cpu"
            grad = (
                _kernel.buffers.take(tuple(z.shape), z.dtype, z.device)
                if cpu
                else torch.empty_like(z)
            )
            head.block_gradient(z, 0, out=grad)
        if reduction == "none":
            return row_losses.to(logits.dtype), lse, grad
        return (row_losses.sum() * scale).to(logits.dtype), lse, grad

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        logits, ctx.terms, ctx.start, ctx.group, ctx.scale, ctx.reduction, _ = inputs
        _, lse, grad = output
        ctx.save_for_backward(logits, lse)
        ctx.grad = grad
        ctx.mark_non_differentiable(lse, *(() if grad is None else (grad,)))
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor | None, *_: Any) -> tuple[Any, ...]:  # type: ignore[override]
        nothing = (None,) * 6
        if grad_output is None:
            return None, *nothing
        logits, lse = ctx.saved_tensors
        terms: RowTerms = ctx.terms
        reduced = ctx.reduction != "none"
        factor = grad_output * ctx.scale if reduced else grad_output
        if torch.is_grad_enabled():  # create_graph=True: differentiable, collectives included
            z = torch.where(terms.live[:, None], logits.to(lse.dtype), 0.0)
            total = _differentiable_lse(z, lse, ctx.group)
            rows = factor.to(z.dtype).expand(z.shape[0])
            g = terms.differentiable_gradient(z, total, rows, start=ctx.start)
            return g.to(logits.dtype), *nothing
        grad = ctx.grad
        if grad is None:  # a later backward of a retained graph: from the forward's lse
            grad = torch.empty_like(logits)
            head = CrossEntropyHead(terms, scale=ctx.scale, start=ctx.start, known_lse=lse)
            head.begin(slice(None))
            head.finish()
            head.block_gradient(logits.detach(), 0, out=grad)
        if reduced and bool(grad_output == 1):
            ctx.grad = None  # handed out: autograd may keep it as .grad
            return grad, *nothing
        if reduced:
            return (grad * grad_output).to(grad.dtype), *nothing
        return (grad * grad_output[:, None]).to(grad.dtype), *nothing


def vocab_parallel_cross_entropy(
    logits_shard: Tensor,
    target: Tensor,
    *,
    group: Any = None,
    vocab_start_index: int | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
) -> Tensor:
    r"""Cross entropy of logits split by vocabulary across the ranks of a process group.

    The value and gradients of :func:`crossentropy.torch.cross_entropy` (its formula is
    there) on the logits concatenated over the ranks, computed from the slices (the
    per-row math in terms of :math:`L_i = \log \sum_k \sum_{c \in \text{slice}_k} e^{z_{ic}}`:
    :mod:`crossentropy.torch._slices`): per row, a logsumexp and the
    target logit are combined with two all-reduces of N values (3N with label smoothing),
    never an all-gather of logits. Every rank returns the same loss; the gradient of each
    rank's ``logits_shard`` is its slice of the whole gradient, and the backward needs no
    communication (with ``reduction="none"`` every rank must backpropagate the same
    incoming gradient, as it does when every rank computes the same thing from the loss).
    Call it on every rank of ``group`` with the same ``target`` and options; ranks that
    disagree, or an argument one rank rejects, raise the same error on every rank.

    A backward with ``create_graph=True`` writes the slice's gradient as torch operations
    with the logsumexp's all-reduce as an autograd operation, so a gradient penalty is
    differentiated across the ranks: each rank's gradient is its own part (the penalty
    of the whole gradient is the sum over the ranks of each rank's penalty of its part),
    and every rank must run that second backward. ``torch.func.grad`` works the same way;
    ``vmap`` and ``jacrev`` are refused by torch (no vmap rule: batched collectives would
    need every rank to agree on each batch). Under ``torch.autocast`` half-precision
    logits are taken in float32, as ``cross_entropy`` is there.

    Args:
        logits_shard: (..., V_k) this rank's classes, on the last axis: the logits of the
            classes [s_k, s_k + V_k) for each row. Slices may differ in size (each >= 1).
        target: (...) global class ids in [0, V) (or ``ignore_index``), the same on every
            rank.
        group: the process group (``None``: the default group).
        vocab_start_index: s_k; ``None`` (on every rank) takes the slices in rank order,
            the offsets found with one all-gather of the slice sizes.
        weight: (V,) per-class weights over the whole vocabulary, the same on every rank
            (each rank uses its slice), or ``None``.
        reduction: ``"mean"`` (over the summed weight of the counted targets), ``"sum"``
            or ``"none"`` (per row, shape (...)).
        ignore_index: the target value of rows to skip.
        label_smoothing: epsilon in [0, 1].
        z_loss: lambda_z >= 0, the weight of L^2 (PaLM's z-loss).

    Returns:
        The loss, the same on every rank: a scalar, or (...) for ``reduction="none"``.

    Example:
        One process as a group of one (``torchrun`` starts the real ones):

        >>> import torch, torch.distributed as dist
        >>> from crossentropy.torch.distributed import vocab_parallel_cross_entropy
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], requires_grad=True)
        >>> loss = vocab_parallel_cross_entropy(logits, torch.tensor([0, 1]))
        >>> loss.backward()
        >>> print(f"{loss.item():.4f}", logits.grad.round(decimals=4).tolist())
        0.3185 [[-0.1705, 0.1212, 0.0493], [0.0543, -0.0988, 0.0445]]
        >>> dist.destroy_process_group()
    """
    function = FUNCTIONS[0]
    group_ = _Group.of(group, function)
    if (
        isinstance(logits_shard, Tensor)
        and logits_shard.dtype in (torch.float16, torch.bfloat16)
        and conventions.autocast_dtype(logits_shard) is not None
    ):
        logits_shard = logits_shard.float()  # autocast runs cross entropy in float32

    def describe() -> dict[str, float]:
        return {
            "function": 0.0,
            **_logits_fields(logits_shard, vocab_start_index),
            **_target_fields(target, tuple(logits_shard.shape[:-1])),
            **_weight_fields(weight),
            **_option_fields(reduction, ignore_index, label_smoothing, z_loss),
        }

    if isinstance(logits_shard, Tensor) and logits_shard.is_meta:
        return _meta_loss(logits_shard.sum(-1), reduction)
    shard = _shard(_agree(function, group_, describe), group_.rank)
    logits = logits_shard.reshape(-1, shard.size)
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    terms, scale = _row_terms(
        target,
        weight,
        shard,
        like=logits,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        reduction=reduction,
    )
    loss, *_ = _VocabParallelCrossEntropy.apply(  # type: ignore[no-untyped-call]
        logits,
        terms,
        shard.start,
        group_.handle,
        scale,
        reduction,
        torch.is_grad_enabled() and logits.requires_grad,
    )
    result: Tensor = loss.reshape(target.shape) if reduction == "none" else loss
    return result


def _meta_loss(rows: Tensor, reduction: object, dtype: torch.dtype | None = None) -> Tensor:
    """Meta tensors (shape inference, tracing): no values to exchange between the ranks;
    the loss's shape, dtype and autograd graph (to the shard's gradient shapes) from each
    row's sum over the local slice."""
    _validate.reduction(reduction)
    loss = rows if reduction == "none" else rows.sum()
    return loss if dtype is None else loss.to(dtype)


# --------------------------------------------------------------------------- linear


@dataclasses.dataclass(frozen=True)
class _Plan:
    terms: RowTerms
    start: int
    group: Any
    chunk: int
    scale: float
    reduction: str
    loss_dtype: torch.dtype


class _VocabParallelLinearCrossEntropy(torch.autograd.Function):
    """The chunked sweep of ``linear_cross_entropy`` on this rank's rows of the weight,
    each chunk's row statistics all-reduced, the input gradient summed over the ranks.

    The backward, as in ``linear_cross_entropy``'s: under grad mode the gradients as torch
    operations with the collectives as autograd operations (:class:`_AllReduce`); for a
    mean or a sum the forward's gradients the first time; else (``reduction="none"``, a
    later backward of a retained graph) one more sweep with the forward's logsumexp."""

    @staticmethod
    def forward(  # type: ignore[override]
        input: Tensor,
        linear_weight: Tensor,
        linear_bias: Tensor | None,
        plan: _Plan,
        wants: tuple[bool, bool, bool],
    ) -> tuple[Tensor | None, ...]:
        tokens = input.shape[0]
        losses = torch.empty(tokens, dtype=torch.float64, device=input.device)
        lse = torch.empty(tokens, dtype=plan.terms.w_y.dtype, device=input.device)
        now = wants if plan.reduction != "none" else (False, False, False)
        head = CrossEntropyHead(
            plan.terms,
            scale=plan.scale,
            losses=losses,
            lse=lse,
            start=plan.start,
            combine=_all_reduced(plan.group),
        )
        grads = engine.sweep(input, linear_weight, linear_bias, head, chunk=plan.chunk, wants=now)
        _sum_over_ranks(grads[0], plan.group)
        if plan.reduction == "none":
            return losses.to(plan.loss_dtype), lse, *grads
        return (losses.sum() * plan.scale).to(plan.loss_dtype), lse, *grads

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        input, linear_weight, linear_bias, ctx.plan, _ = inputs
        _, lse, *grads = output
        ctx.save_for_backward(input, linear_weight, linear_bias, lse)
        ctx.grads = grads if any(g is not None for g in grads) else None
        ctx.mark_non_differentiable(lse, *(g for g in grads if g is not None))
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor | None, *_: Any) -> tuple[Any, ...]:  # type: ignore[override]
        if grad_loss is None:
            return (None,) * 5
        plan: _Plan = ctx.plan
        input, linear_weight, linear_bias, lse = ctx.saved_tensors
        dtypes = (
            input.dtype,
            linear_weight.dtype,
            None if linear_bias is None else linear_bias.dtype,
        )
        needs = tuple(ctx.needs_input_grad[:3])
        reduced = plan.reduction != "none"
        if torch.is_grad_enabled():
            factor = grad_loss * plan.scale if reduced else grad_loss
            grads = _differentiable_linear_gradients(
                input, linear_weight, linear_bias, lse, plan, factor, needs
            )
            return *grads, None, None
        if reduced and ctx.grads is not None:
            grads, ctx.grads = ctx.grads, None  # handed out once
            return *engine.finish_gradients(grads, dtypes, grad_loss), None, None
        # the forward's logsumexp: the slice's gradient needs no communication
        head = CrossEntropyHead(plan.terms, scale=1.0, start=plan.start, known_lse=lse)
        factor = (grad_loss.double() * plan.scale).expand(input.shape[0]) if reduced else grad_loss
        grads = engine.sweep(
            input,
            linear_weight,
            linear_bias,
            head,
            chunk=plan.chunk,
            wants=needs,
            row_factor=factor.to(lse.dtype),
        )
        _sum_over_ranks(grads[0], plan.group)
        return *engine.finish_gradients(grads, dtypes), None, None


def _differentiable_linear_gradients(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    lse: Tensor,
    plan: _Plan,
    factor: Tensor,
    needs: tuple[bool, ...],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The gradients of input, weight and bias as torch operations, collectives included:
    the input is replicated and used by each rank on its own rows of the weight (its
    cotangents summed over the ranks), the logsumexp all-reduced, and the partial input
    gradients G_k W_k summed into the replicated input gradient (its cotangent, the same on
    every rank, passed to each part as it is)."""
    compute = lse.dtype
    terms = plan.terms
    h = _AllReduce.apply(input.to(compute), plan.group, False, True)  # type: ignore[no-untyped-call]
    w = linear_weight.to(compute)
    b = None if linear_bias is None else linear_bias.to(compute)
    z = torch.where(terms.live[:, None], torch.nn.functional.linear(h, w, b), 0.0)
    total = _differentiable_lse(z, lse, plan.group)
    rows = factor.to(compute).expand(input.shape[0])
    g = terms.differentiable_gradient(z, total, rows, start=plan.start)
    # the partial input gradients summed in the compute dtype, then cast
    grad_input = _AllReduce.apply(g @ w, plan.group, True, False) if needs[0] else None  # type: ignore[no-untyped-call]
    bias_dtype = () if linear_bias is None else (linear_bias.dtype,)
    dtypes = (input.dtype, linear_weight.dtype, *bias_dtype)
    _, grad_weight, grad_bias = engine.differentiable_products(g, h, w, (False, *needs[1:]), dtypes)
    return None if grad_input is None else grad_input.to(input.dtype), grad_weight, grad_bias


def vocab_parallel_linear_cross_entropy(
    input: Tensor,
    linear_weight_shard: Tensor,
    target: Tensor,
    *,
    group: Any = None,
    vocab_start_index: int | None = None,
    linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    chunk_size: int | None = None,
) -> Tensor:
    r"""Cross entropy of ``input @ W.T (+ b)`` with the rows of ``W`` split across the ranks,
    chunked over the tokens: neither the logits nor a slice of them exists whole.

    .. math::

        z = h W^\top + b, \qquad \ell = \operatorname{cross\_entropy}(z, y),
        \qquad W = [W_0; W_1; \dots], \; z = [h W_0^\top, h W_1^\top, \dots]

    The value and gradients of :func:`crossentropy.torch.linear_cross_entropy` with the
    whole weight, computed on this rank's rows ``W_k`` (classes [s_k, s_k + V_k)): for each
    chunk of tokens the local logits, two all-reduces of the chunk's row statistics (as in
    :func:`vocab_parallel_cross_entropy`), the gradient written over the logits, the rank's
    own weight (and bias) gradient accumulated in float32, and its partial input gradient;
    the input gradient is all-reduced over the ranks once. Every rank returns the same loss
    and the same input gradient. ``input`` and ``target`` are the same on every rank (as
    after the all-gather of sequence parallelism, or simply replicated).

    With ``reduction="none"`` the backward sweeps again, with the forward's logsumexp and no
    row statistics exchanged, then all-reduces the input gradient: every rank must call it,
    with the same incoming gradient.

    Under ``create_graph=True`` the gradients are torch operations with the collectives as
    autograd operations (a double backward, gradient penalties; every rank must run it):
    the input and its gradient are replicated (counted once), each rank's weight and bias
    gradients are its own part (summed over the ranks), as in Megatron-LM's tensor
    parallelism. Under ``torch.autocast`` the product runs in the autocast dtype and the
    loss in float32.

    Args:
        input: (..., D) hidden states, the same on every rank.
        linear_weight_shard: (V_k, D) this rank's rows of the output layer's weight, the
            input's dtype.
        target: (...) global class ids in [0, V) or ``ignore_index``.
        group, vocab_start_index, weight, reduction, ignore_index, label_smoothing, z_loss:
            as in :func:`vocab_parallel_cross_entropy`.
        linear_bias: (V_k,) this rank's slice of the bias, or ``None`` (on every rank).
        chunk_size: tokens per chunk, the same on every rank; ``None`` picks one from the
            shapes as ``linear_cross_entropy`` does, for the widest slice.

    Returns:
        The loss, the same on every rank: a scalar, or (...) for ``reduction="none"``.

    Example:
        >>> import torch, torch.distributed as dist
        >>> from crossentropy.torch import linear_cross_entropy
        >>> from crossentropy.torch.distributed import vocab_parallel_linear_cross_entropy
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> g = torch.Generator().manual_seed(0)
        >>> h = torch.randn(6, 4, generator=g, dtype=torch.float64)
        >>> W = torch.randn(10, 4, generator=g, dtype=torch.float64)
        >>> y = torch.tensor([1, 2, 3, -100, 9, 0])
        >>> ours = vocab_parallel_linear_cross_entropy(h, W, y, chunk_size=4)
        >>> print(f"{ours.item():.6f} {linear_cross_entropy(h, W, y).item():.6f}")
        3.771035 3.771035
        >>> dist.destroy_process_group()
    """
    function = FUNCTIONS[1]
    group_ = _Group.of(group, function)
    # autocast: the product in its lower precision, the loss in float32, as
    # F.cross_entropy(F.linear(input, W, b), target) under autocast
    low = conventions.autocast_dtype(input) if isinstance(input, Tensor) else None
    loss_dtype = None
    if low is not None and input.dtype != torch.float64:
        loss_dtype = torch.float32
        input, linear_weight_shard = input.to(low), linear_weight_shard.to(low)
        linear_bias = None if linear_bias is None else linear_bias.to(low)

    def describe() -> dict[str, float]:
        return {
            "function": 1.0,
            **_linear_fields(
                input,
                linear_weight_shard,
                target,
                linear_bias,
                vocab_start_index,
                chunk_size,
                "probabilities are not supported here",
            ),
            **_target_fields(target, tuple(input.shape[:-1])),
            **_weight_fields(weight),
            **_option_fields(reduction, ignore_index, label_smoothing, z_loss),
        }

    if isinstance(input, Tensor) and input.is_meta:
        logits = torch.nn.functional.linear(input, linear_weight_shard, linear_bias)
        return _meta_loss(logits.sum(-1), reduction, loss_dtype)
    shard = _shard(_agree(function, group_, describe), group_.rank)
    flat_input = input.reshape(math.prod(input.shape[:-1]), input.shape[-1])
    if flat_input.stride(-1) != 1:
        flat_input = flat_input.contiguous()
    terms, scale = _row_terms(
        target,
        weight,
        shard,
        like=flat_input,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        reduction=reduction,
    )
    device = flat_input.device.type
    chunk = chunk_size or engine.default_chunk_size(
        flat_input.shape[0], shard.widest, flat_input.element_size()
    )
    plan = _Plan(
        terms, shard.start, group_.handle, chunk, scale, reduction, loss_dtype or input.dtype
    )
    wants = engine.wanted_gradients(input, linear_weight_shard, linear_bias)
    off = contextlib.nullcontext() if low is None else torch.autocast(device, enabled=False)
    with off:
        loss, *_ = _VocabParallelLinearCrossEntropy.apply(  # type: ignore[no-untyped-call]
            flat_input, linear_weight_shard.contiguous(), linear_bias, plan, wants
        )
    result: Tensor = loss.reshape(target.shape) if reduction == "none" else loss
    return result


# --------------------------------------------------------------------------- tokens


def _token_all_reduced(group: Any) -> TokenCombine:
    r"""The whole rows' token statistics from each rank's slice's
    (:class:`crossentropy.torch._tokens.TokenStatistics`), in two all-reduces of N and 3N
    values: the peak M = max_k m_k (MAX), then, each slice rescaled to M as in
    :meth:`TokenStatistics.merge <crossentropy.torch._tokens.TokenStatistics.merge>`,

    .. math::

        s = \sum_k s_k e^{m_k - M}, \qquad
        t = \sum_k e^{m_k - M} (t_k + s_k (m_k - M)), \qquad u_y = \sum_k u_{y,k}

    (SUM; only the rank whose slice holds y has a non-zero u_{y,k}). A slice whose weight
    e^{m_k - M} is 0 adds nothing to t (never 0 * -inf); a NaN anywhere in a row reaches
    every rank through the sum."""

    def combine(part: TokenStatistics) -> TokenStatistics:
        peak = part.peak.clone()
        dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
        gap = torch.where(part.peak == peak, 0.0, part.peak - peak)  # 0 for equal infinities
        scale = torch.exp(gap)
        spread = torch.where(scale == 0, 0.0, scale * (part.spread + part.mass * gap))
        packed = torch.stack([part.mass * scale, spread, part.target])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
        return TokenStatistics(peak, packed[0], packed[1], packed[2])

    return combine


def _token_fields(
    target: object,
    shape: tuple[int, ...],
    temperature: object,
    ignore_index: object,
    return_entropy: object,
) -> dict[str, float]:
    """The descriptor's entries of the token functions' target and options (checked)."""
    _validate.flag("return_entropy", return_entropy)
    return {
        **_target_fields(target, shape),
        "temperature": _validate.temperature(temperature),
        "ignore_index": float(_validate.ignore_index(ignore_index)),
    }


def _token_target(target: Tensor, shard: _Shard, ignore_index: int, device: torch.device) -> Tensor:
    """The flat int64 targets, after the checks that need the whole vocabulary's size."""
    _check_global(target, None, shard.vocabulary, ignore_index)
    return target.reshape(-1).to(device=device, dtype=torch.int64)


@dataclasses.dataclass(frozen=True)
class _TokenPlan:
    target: Tensor  # (rows,) int64 global class ids or ignore_index
    temperature: float
    ignore_index: int
    start: int
    group: Any
    chunk: int = 0  # tokens per chunk (the linear version)

    def head(self, **kwargs: Any) -> TokenHead:
        return TokenHead(
            self.target,
            temperature=self.temperature,
            ignore_index=self.ignore_index,
            start=self.start,
            **kwargs,
        )


def _token_outputs(rows: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    compute = torch.promote_types(dtype, torch.float32)
    return (
        torch.empty(rows, dtype=compute, device=device),
        torch.empty(rows, dtype=compute, device=device),
    )


class _VocabParallelTokens(torch.autograd.Function):
    """(log p_y, H) per row from the rank's slice, the row statistics all-reduced; the
    backward writes the slice's gradient from the forward's whole-row statistics, with no
    communication."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, plan: _TokenPlan) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        log_prob, entropy = _token_outputs(logits.shape[0], logits.dtype, logits.device)
        head = plan.head(
            log_prob=log_prob, entropy=entropy, keep=True, combine=_token_all_reduced(plan.group)
        )
        head.begin(slice(None))
        head.absorb(logits.detach(), 0)
        head.finish()
        ctx.save_for_backward(logits)
        ctx.plan, ctx.kept = plan, head.kept
        ctx.set_materialize_grads(False)  # an output without a gradient gets None
        return log_prob, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable  # type: ignore[misc]
    def backward(  # type: ignore[override]
        ctx: Any, grad_log_prob: Tensor | None, grad_entropy: Tensor | None
    ) -> tuple[Tensor | None, None]:
        (logits,) = ctx.saved_tensors
        if grad_log_prob is None and grad_entropy is None:
            return None, None
        plan: _TokenPlan = ctx.plan
        head = plan.head(known=ctx.kept, grad_log_prob=grad_log_prob, grad_entropy=grad_entropy)
        head.begin(slice(None))
        head.finish()
        # the gradient is written over float32/float64 logits: give it a copy
        z = logits.detach()
        z = z.clone() if z.dtype in (torch.float32, torch.float64) else z
        return head.block_gradient(z, 0).to(logits.dtype), None


def vocab_parallel_token_log_probs(
    logits_shard: Tensor,
    target: Tensor,
    *,
    group: Any = None,
    vocab_start_index: int | None = None,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Each row's log p(target) (and the entropy of p), p = softmax(z / T), with the
    logits split by vocabulary across the ranks of a process group.

    The values and gradients of :func:`crossentropy.torch.token_log_probs` on the logits
    concatenated over the ranks, from the slices: each rank's slice gives per row the
    statistics of :mod:`crossentropy.torch._tokens` (max, sum of exponentials, the sum that
    gives the entropy, the target's logit), combined over the ranks by an all-reduce MAX of
    N values and an all-reduce SUM of 3N (:func:`_token_all_reduced`), never an all-gather
    of logits. Every rank returns the same outputs; the gradient of each rank's
    ``logits_shard`` is its slice of the whole gradient, for any incoming gradients on
    both outputs at once, computed from the forward's whole-row statistics without
    communication. Ignored rows give 0 with zero gradient.

    Call it on every rank of ``group`` with the same ``target`` and options; ranks that
    disagree, or an argument one rank rejects, raise the same error on every rank. The
    backward is once-differentiable: its gradients are not
    differentiable again (a double backward raises).

    Args:
        logits_shard: (..., V_k) the logits of this rank's classes [s_k, s_k + V_k).
        target: (...) global class ids in [0, V) or ``ignore_index``, the same on every rank.
        group, vocab_start_index: as in :func:`vocab_parallel_cross_entropy`.
        temperature: T, finite and > 0.
        ignore_index: the target value of rows without outputs.
        return_entropy: also return each row's entropy.

    Returns:
        ``log_probs`` (...), or ``(log_probs, entropy)``; float32 for float32, bfloat16 and
        float16 logits, float64 for float64, the same on every rank.

    Example:
        >>> import torch, torch.distributed as dist
        >>> from crossentropy.torch import token_log_probs
        >>> from crossentropy.torch.distributed import vocab_parallel_token_log_probs
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> z = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], dtype=torch.float64)
        >>> y = torch.tensor([0, 1])
        >>> ours = vocab_parallel_token_log_probs(z, y, temperature=0.5, return_entropy=True)
        >>> whole = token_log_probs(z, y, temperature=0.5, return_entropy=True)
        >>> print(all(torch.allclose(a, b) for a, b in zip(ours, whole)))
        True
        >>> dist.destroy_process_group()
    """
    function = FUNCTIONS[2]
    group_ = _Group.of(group, function)

    def describe() -> dict[str, float]:
        return {
            "function": 2.0,
            **_logits_fields(logits_shard, vocab_start_index),
            **_token_fields(
                target, tuple(logits_shard.shape[:-1]), temperature, ignore_index, return_entropy
            ),
        }

    shard = _shard(_agree(function, group_, describe), group_.rank)
    logits = logits_shard.reshape(-1, shard.size)
    if logits.stride(1) != 1:
        logits = logits.contiguous()
    ignore = int(ignore_index)
    plan = _TokenPlan(
        _token_target(target, shard, ignore, logits.device),
        float(temperature),
        ignore,
        shard.start,
        group_.handle,
    )
    log_prob, entropy = _VocabParallelTokens.apply(logits, plan)  # type: ignore[no-untyped-call]
    log_prob, entropy = log_prob.reshape(target.shape), entropy.reshape(target.shape)
    return (log_prob, entropy) if return_entropy else log_prob


class _VocabParallelLinearTokens(torch.autograd.Function):
    """The chunked sweep of ``linear_token_log_probs`` on this rank's rows of the weight,
    each chunk's row statistics all-reduced; the backward sweeps again from the forward's
    statistics (no exchange for them) and all-reduces the input gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        input: Tensor,
        linear_weight: Tensor,
        linear_bias: Tensor | None,
        plan: _TokenPlan,
    ) -> tuple[Tensor, Tensor]:
        log_prob, entropy = _token_outputs(input.shape[0], input.dtype, input.device)
        head = plan.head(
            log_prob=log_prob, entropy=entropy, keep=True, combine=_token_all_reduced(plan.group)
        )
        engine.sweep(
            input, linear_weight, linear_bias, head, chunk=plan.chunk, wants=(False, False, False)
        )
        ctx.save_for_backward(input, linear_weight, linear_bias)
        ctx.plan, ctx.kept = plan, head.kept
        ctx.set_materialize_grads(False)
        return log_prob, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable  # type: ignore[misc]
    def backward(  # type: ignore[override]
        ctx: Any, grad_log_prob: Tensor | None, grad_entropy: Tensor | None
    ) -> tuple[Any, ...]:
        input, linear_weight, linear_bias = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        if grad_log_prob is None and grad_entropy is None:
            return None, None, None, None
        plan: _TokenPlan = ctx.plan
        head = plan.head(known=ctx.kept, grad_log_prob=grad_log_prob, grad_entropy=grad_entropy)
        grads = engine.sweep(input, linear_weight, linear_bias, head, chunk=plan.chunk, wants=needs)
        _sum_over_ranks(grads[0], plan.group)
        dtypes = (
            input.dtype,
            linear_weight.dtype,
            None if linear_bias is None else linear_bias.dtype,
        )
        return *engine.finish_gradients(grads, dtypes), None


def vocab_parallel_linear_token_log_probs(
    input: Tensor,
    linear_weight_shard: Tensor,
    target: Tensor,
    *,
    group: Any = None,
    vocab_start_index: int | None = None,
    linear_bias: Tensor | None = None,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
    chunk_size: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Each token's log p(target) (and the entropy of p) of
    ``softmax((input @ W.T + b) / T)`` with the rows of ``W`` split across the ranks,
    chunked over the tokens: neither the logits nor a slice of them exists whole.

    The values and gradients of :func:`crossentropy.torch.linear_token_log_probs` with the
    whole weight, computed on this rank's rows ``W_k`` (classes [s_k, s_k + V_k)): for each
    chunk of tokens the local logits, their row statistics all-reduced as in
    :func:`vocab_parallel_token_log_probs`; the backward sweeps the chunks again from the
    forward's statistics, writes each chunk's gradient over its logits, accumulates the
    rank's own weight (and bias) gradient in float32 and its partial input gradient
    ``G_k W_k``, and all-reduces the input gradient once (SUM). Every rank returns the same
    outputs and the same input gradient; every rank must run the backward, with the same
    incoming gradients. The backward is once-differentiable: its gradients are not
    differentiable again (a double backward raises).

    Args:
        input: (..., D) hidden states, the same on every rank.
        linear_weight_shard: (V_k, D) this rank's rows of the output layer's weight.
        target: (...) global class ids in [0, V) or ``ignore_index``.
        group, vocab_start_index: as in :func:`vocab_parallel_cross_entropy`.
        linear_bias: (V_k,) this rank's slice of the bias, or ``None`` (on every rank).
        temperature, ignore_index, return_entropy: as in
            :func:`vocab_parallel_token_log_probs`.
        chunk_size: tokens per chunk, the same on every rank; ``None`` picks one from the
            shapes, for the widest slice.

    Returns:
        ``log_probs`` (...), or ``(log_probs, entropy)``; float32 for float32, bfloat16 and
        float16 inputs, float64 for float64, the same on every rank.
    """
    function = FUNCTIONS[3]
    group_ = _Group.of(group, function)

    def describe() -> dict[str, float]:
        return {
            "function": 3.0,
            **_linear_fields(
                input,
                linear_weight_shard,
                target,
                linear_bias,
                vocab_start_index,
                chunk_size,
                "probabilities have no log-probability of a token",
            ),
            **_token_fields(
                target, tuple(input.shape[:-1]), temperature, ignore_index, return_entropy
            ),
        }

    shard = _shard(_agree(function, group_, describe), group_.rank)
    flat_input = input.reshape(math.prod(input.shape[:-1]), input.shape[-1])
    if flat_input.stride(-1) != 1:
        flat_input = flat_input.contiguous()
    ignore = int(ignore_index)
    chunk = chunk_size or engine.default_chunk_size(
        flat_input.shape[0], shard.widest, flat_input.element_size()
    )
    plan = _TokenPlan(
        _token_target(target, shard, ignore, flat_input.device),
        float(temperature),
        ignore,
        shard.start,
        group_.handle,
        chunk,
    )
    log_prob, entropy = _VocabParallelLinearTokens.apply(  # type: ignore[no-untyped-call]
        flat_input, linear_weight_shard.contiguous(), linear_bias, plan
    )
    log_prob, entropy = log_prob.reshape(target.shape), entropy.reshape(target.shape)
    return (log_prob, entropy) if return_entropy else log_prob


# --------------------------------------------------------------------------- distillation


def _all_reduce_logsumexps(lse: Tensor, sums: Tensor, group: Any) -> tuple[Tensor, Tensor]:
    """The whole rows' log-sum-exps (k, N) and plain sums (j, N) from each rank's slices',
    in two all-reduces: the peaks M (MAX of kN values), then exp(L_k - M) and the sums
    together (SUM of (k + j)N values); L = M + log S. An infinite peak shifts by 0 (a
    +inf reaches the sum as inf, a row of -inf stays -inf), and a NaN reaches every rank
    through the sum, as in :func:`_all_reduced`."""
    peak = lse.clone()
    dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
    shift = torch.where(torch.isfinite(peak), peak, 0.0)
    packed = torch.cat([torch.exp(lse - shift), sums.to(lse.dtype)])
    dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
    k = lse.shape[0]
    return shift + torch.log(packed[:k]), packed[k:]


def _log_sum_exps_all_reduced(group: Any) -> Callable[[LogSumExps], LogSumExps]:
    r"""Phase 1 over the ranks: the student's and the teacher's log-sum-exps at T (and the
    student's at 1 for the cross entropy) merged as logaddexp over the slices, the target
    logit summed (only the rank whose slice holds y has a non-zero one):
    :func:`_all_reduce_logsumexps`, one all-reduce of 2N (3N) values, one of 3N (4N)."""

    def combine(part: LogSumExps) -> LogSumExps:
        # at T = 1 the hard term's L_1 is L_s itself: merged once
        own = part.hard is not None and part.hard is not part.student
        lses = [part.student, part.teacher, *((part.hard,) if own else ())]
        merged, summed = _all_reduce_logsumexps(torch.stack(lses), part.target_logit[None], group)
        hard = merged[2] if own else None if part.hard is None else merged[0]
        return LogSumExps(merged[0], merged[1], hard, summed[0])

    return combine


def _divergence_sums_all_reduced(group: Any) -> Callable[[DivergenceSums], DivergenceSums]:
    """Phase 2 over the ranks: every per-row sum of :class:`DivergenceSums` (D and R, plain
    sums over the vocabulary) summed in one all-reduce."""

    def combine(part: DivergenceSums) -> DivergenceSums:
        names = [f.name for f in dataclasses.fields(part) if getattr(part, f.name) is not None]
        packed = torch.stack([getattr(part, name) for name in names])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=group)
        return dataclasses.replace(part, **dict(zip(names, packed, strict=True)))

    return combine


def _distillation(options: dict[str, Any], has_target: bool) -> Distillation:
    return check_distillation(
        options["divergence"],
        options["beta"],
        options["temperature"],
        options["soft_weight"],
        options["hard_weight"],
        has_target=has_target,
    )


def _distillation_fields(
    target: object,
    shape: tuple[int, ...],
    options: dict[str, Any],
) -> dict[str, float]:
    """The descriptor's entries of the distillation functions' target and options (checked
    as :func:`crossentropy.torch.distillation_loss` checks them)."""
    d = _distillation(options, target is not None)
    reduction = _validate.reduction(options["reduction"])
    ignore_index = _validate.ignore_index(options["ignore_index"])
    if target is None:
        given = {"rows": float(math.prod(shape)), "target_given": 0.0}
    else:
        given = {**_target_fields(target, shape), "target_given": 1.0}
    return {
        **given,
        "reduction": float(_validate.REDUCTIONS.index(reduction)),
        "ignore_index": float(ignore_index),
        "divergence": float(_validate.DIVERGENCES.index(d.divergence)),
        "beta": d.beta,
        "temperature": d.temperature,
        "soft_weight": d.soft_weight,
        "hard_weight": d.hard_weight,
    }


@dataclasses.dataclass(frozen=True)
class _DistillPlan:
    d: Distillation
    target: Tensor  # (rows,) int64: the target's global class id, -1 where none counts
    live: Tensor  # (rows,) bool: the rows counted (not ignored)
    scale: float  # d(reduced loss)/d(row loss)
    reduction: str
    start: int
    group: Any
    loss_dtype: torch.dtype
    chunk: int = 0  # tokens per chunk (the linear version)


def _distill_plan(
    target: Tensor | None,
    rows: int,
    shard: _Shard,
    options: dict[str, Any],
    group: Any,
    device: torch.device,
    loss_dtype: torch.dtype,
    chunk: int = 0,
) -> _DistillPlan:
    """The rows' targets (checked against the whole vocabulary) and the reduction's scale,
    the same on every rank (the targets are)."""
    ignore = int(options["ignore_index"])
    if target is None:
        live = torch.ones(rows, dtype=torch.bool, device=device)
        here = torch.full((rows,), -1, dtype=torch.int64, device=device)
    else:
        flat = _token_target(target, shard, ignore, device)
        live = flat != ignore
        here = torch.where(live, flat, -1)
    reduction = str(options["reduction"])
    # the count of the counted rows: live rows as targets 1, the others as ignored 0s
    scale = conventions.mean_scale(live.to(torch.int64), None, 0, reduction)
    d = _distillation(options, target is not None)
    return _DistillPlan(d, here, live, scale, reduction, shard.start, group, loss_dtype, chunk)


def _reduced(losses: Tensor, plan: _DistillPlan) -> Tensor:
    if plan.reduction == "none":
        return losses.to(plan.loss_dtype)
    return (losses.sum() * plan.scale).to(plan.loss_dtype)


def _row_scale(grad: Tensor, plan: _DistillPlan, like: Tensor) -> Tensor:
    """d(sum_i row_scale_i loss_i) per row from the incoming gradient: 0 on the rows not
    counted."""
    rows = grad.to(like.dtype) * plan.scale if plan.reduction != "none" else grad.to(like.dtype)
    return torch.where(plan.live, rows.expand(plan.live.shape[0]), 0.0)


class _VocabParallelDistillation(torch.autograd.Function):
    """The per-row loss from the rank's slices of both models, the log-sum-exps and then the
    divergence sums all-reduced; the backward writes the student slice's gradient from the
    forward's whole-row sums, with no communication."""

    @staticmethod
    def forward(ctx: Any, student: Tensor, teacher: Tensor, plan: _DistillPlan) -> Tensor:  # type: ignore[override]
        s, d = student.detach(), plan.d
        lse = _log_sum_exps_all_reduced(plan.group)(
            log_sum_exps(s, teacher, plan.target, d, start=plan.start)
        )
        sums = _divergence_sums_all_reduced(plan.group)(divergence_sums(s, teacher, lse, d))
        losses = row_losses(lse, sums, plan.live, d)
        ctx.save_for_backward(student, teacher)
        ctx.plan, ctx.lse, ctx.sums = plan, lse, sums
        ctx.set_materialize_grads(False)
        return _reduced(losses, plan)

    @staticmethod
    @torch.autograd.function.once_differentiable  # type: ignore[misc]
    def backward(ctx: Any, grad: Tensor | None) -> tuple[Tensor | None, None, None]:  # type: ignore[override]
        if grad is None:
            return None, None, None
        student, teacher = ctx.saved_tensors
        plan: _DistillPlan = ctx.plan
        row_scale = _row_scale(grad, plan, ctx.lse.student)
        g = student_gradient(
            student.detach(),
            teacher,
            plan.target,
            ctx.lse,
            ctx.sums,
            plan.d,
            row_scale,
            start=plan.start,
        )
        return g.to(student.dtype), None, None


def _rows_of(shard: Tensor, size: int) -> Tensor:
    rows = shard.reshape(-1, size)
    return rows if rows.stride(1) == 1 else rows.contiguous()


def vocab_parallel_distillation_loss(
    student_logits_shard: Tensor,
    teacher_logits_shard: Tensor,
    target: Tensor | None = None,
    *,
    group: Any = None,
    vocab_start_index: int | None = None,
    divergence: str = "jsd",
    beta: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int = -100,
    soft_weight: float = 1.0,
    hard_weight: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    r"""The distillation loss of :func:`crossentropy.torch.distillation_loss` with both
    models' logits split by vocabulary across the ranks of a process group, the same way.

    Per row (the math and its three phases: :mod:`crossentropy.torch._distill`), each
    phase a sum over the vocabulary, so each merges over the ranks as it merges over
    slices of a row:

    .. code-block:: text

        phase 1   L_s, L_t (and L_1 = logsumexp z_s with a hard weight), z_s[y]
                  all-reduce MAX of 2N (3N), then SUM of 3N (4N) values
        phase 2   D and R over the slice, given the whole rows' L's
                  all-reduce SUM of 2N values
        loss      soft_weight D + hard_weight (L_1 - z_s[y]), the same on every rank
        phase 3   the student slice's gradient from (L's, D, R): no communication

    No logits are gathered. Every rank returns the same loss; the gradient of each rank's
    ``student_logits_shard`` is its slice of the whole gradient; the teacher is read, never
    differentiated (a teacher that requires a gradient gets none). Call it on every rank of
    ``group`` with the same ``target`` and options; ranks that disagree, or an argument one
    rank rejects, raise the same error on every rank. The backward is
    once-differentiable (a double backward raises); with ``reduction="none"`` every rank
    must backpropagate the same incoming gradient.

    Args:
        student_logits_shard: (..., V_k) the student's logits of this rank's classes
            [s_k, s_k + V_k).
        teacher_logits_shard: (..., V_k) the teacher's logits of the same classes, the
            student's shape.
        target: (...) global class ids in [0, V) or ``ignore_index``, the same on every
            rank; ``None``: every row counts, and ``hard_weight`` must be 0.
        group, vocab_start_index: as in :func:`vocab_parallel_cross_entropy`.
        divergence, beta, temperature, ignore_index, soft_weight, hard_weight, reduction:
            as in :func:`crossentropy.torch.distillation_loss`.

    Returns:
        The loss, the same on every rank: a scalar, or (...) for ``reduction="none"``;
        float32 for float32/bfloat16/float16 logits, float64 where either model's are
        float64 (as :func:`crossentropy.torch.distillation_loss`).

    Example:
        >>> import torch, torch.distributed as dist
        >>> from crossentropy.torch import distillation_loss
        >>> from crossentropy.torch.distributed import vocab_parallel_distillation_loss
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> g = torch.Generator().manual_seed(0)
        >>> zs = torch.randn(4, 7, generator=g, dtype=torch.float64)
        >>> zt = torch.randn(4, 7, generator=g, dtype=torch.float64)
        >>> y = torch.tensor([1, -100, 6, 0])
        >>> ours = vocab_parallel_distillation_loss(zs, zt, y, hard_weight=0.5)
        >>> whole = distillation_loss(zs, zt, y, hard_weight=0.5)
        >>> print(torch.allclose(ours, whole))
        True
        >>> dist.destroy_process_group()
    """
    function = FUNCTIONS[4]
    group_ = _Group.of(group, function)
    options = {
        "divergence": divergence,
        "beta": beta,
        "temperature": temperature,
        "soft_weight": soft_weight,
        "hard_weight": hard_weight,
        "reduction": reduction,
        "ignore_index": ignore_index,
    }

    def describe() -> dict[str, float]:
        student = _logits_fields(student_logits_shard, vocab_start_index, "student_logits_shard")
        teacher = _logits_fields(teacher_logits_shard, vocab_start_index, "teacher_logits_shard")
        if teacher_logits_shard.shape != student_logits_shard.shape:
            raise ValueError(
                "teacher_logits_shard: expected the student's shape "
                f"{tuple(student_logits_shard.shape)} (the same rows and classes); got "
                f"{tuple(teacher_logits_shard.shape)}"
            )
        if teacher_logits_shard.device != student_logits_shard.device:
            raise ValueError(
                f"teacher_logits_shard: expected the student's device "
                f"{student_logits_shard.device}; got {teacher_logits_shard.device}"
            )
        return {
            "function": 4.0,
            **student,
            "teacher_dtype": teacher["dtype"],
            **_distillation_fields(target, tuple(student_logits_shard.shape[:-1]), options),
        }

    shard = _shard(_agree(function, group_, describe), group_.rank)
    # both models in one dtype (float64 where either is), as distillation_loss computes
    common = torch.promote_types(student_logits_shard.dtype, teacher_logits_shard.dtype)
    student = _rows_of(student_logits_shard.to(common), shard.size)
    teacher = _rows_of(teacher_logits_shard.detach().to(common), shard.size)
    plan = _distill_plan(
        target,
        student.shape[0],
        shard,
        options,
        group_.handle,
        student.device,
        torch.promote_types(common, torch.float32),
    )
    loss: Tensor = _VocabParallelDistillation.apply(student, teacher, plan)  # type: ignore[no-untyped-call]
    return loss.reshape(student_logits_shard.shape[:-1]) if plan.reduction == "none" else loss


def _model_fields(
    who: str, input: object, weight: object, bias: object, like: Tensor | None
) -> Tensor:
    """The checks of one model's ``{who}_input`` (..., D), ``{who}_weight_shard`` (V_k, D)
    and ``{who}_bias`` (V_k,) or None: types, shapes, dtypes, devices (the teacher's input
    against the student's ``like``: the same leading shape, dtype and device)."""
    name_w = f"{who}_weight_shard"
    if not isinstance(input, Tensor) or input.ndim < 1 or input.dtype not in DTYPES:
        shown = input.dtype if isinstance(input, Tensor) else type(input).__name__
        raise TypeError(
            f"{who}_input: expected a tensor (..., D) of float32, float64, bfloat16 or "
            f"float16; got {shown}"
        )
    if like is not None and (
        tuple(input.shape[:-1]) != tuple(like.shape[:-1])
        or input.dtype != like.dtype
        or input.device != like.device
    ):
        raise ValueError(
            f"{who}_input: expected the student input's leading shape "
            f"{tuple(like.shape[:-1])}, dtype {like.dtype} and device {like.device} (any "
            f"last dimension); got {tuple(input.shape)}, {input.dtype}, {input.device}"
        )
    if not isinstance(weight, Tensor) or weight.ndim != 2 or weight.shape[1] != input.shape[-1]:
        got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(
            f"{name_w}: expected a 2-D tensor (V_k, {input.shape[-1]}) ({who}_input's last "
            f"dimension); got {got}"
        )
    if weight.shape[0] < 1:
        raise ValueError(f"{name_w}: expected at least one row (class) in the slice; got (0, D)")
    if bias is not None and (not isinstance(bias, Tensor) or bias.shape != weight.shape[:1]):
        size = tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
        raise ValueError(f"{who}_bias: expected shape ({weight.shape[0]},) or None; got {size}")
    for name, tensor in ((name_w, weight), (f"{who}_bias", bias)):
        if isinstance(tensor, Tensor) and (
            tensor.dtype != input.dtype or tensor.device != input.device
        ):
            raise TypeError(
                f"{name}: expected {who}_input's dtype {input.dtype} and device "
                f"{input.device}; got {tensor.dtype}, {tensor.device}"
            )
    return input


def _linear_distillation_fields(
    student: tuple[object, object, object],
    teacher: tuple[object, object, object],
    vocab_start_index: object,
    chunk_size: object,
) -> dict[str, float]:
    """The checks of both models' tensors (the same slice of the vocabulary on this rank)
    and the descriptor's dtype, hidden sizes, slice size and start, biases, input gradient
    and chunk size."""
    input = _model_fields("student", *student, None)
    teacher_input = _model_fields("teacher", *teacher, input)
    weight, teacher_weight = student[1], teacher[1]
    assert isinstance(weight, Tensor) and isinstance(teacher_weight, Tensor)
    if teacher_weight.shape[0] != weight.shape[0]:
        raise ValueError(
            f"teacher_weight_shard: expected the student's slice of {weight.shape[0]} "
            f"classes (both models split the same way); got {tuple(teacher_weight.shape)}"
        )
    chunk = _validate.chunk_size(chunk_size)
    return {
        "dtype": float(DTYPES.index(input.dtype)),
        "hidden": float(input.shape[-1]),
        "teacher_hidden": float(teacher_input.shape[-1]),
        "size": float(weight.shape[0]),
        "start": _start_field(vocab_start_index),
        "student_bias": float(student[2] is not None),
        "teacher_bias": float(teacher[2] is not None),
        "input_grad": float(torch.is_grad_enabled() and input.requires_grad),
        "chunk_size": float(chunk or 0),
    }


def _recorded(combine: Callable[[Any], Any], kept: list[Any]) -> Callable[[Any], Any]:
    """``combine`` that also keeps each chunk's whole-row result, in the sweep's order."""

    def hook(part: Any) -> Any:
        whole = combine(part)
        kept.append(whole)
        return whole

    return hook


def _replayed(kept: list[Any]) -> Callable[[Any], Any]:
    """The hook of a later sweep over the same chunks: each chunk's whole-row result kept
    by :func:`_recorded`, in turn, with no communication."""
    chunks = iter(kept)

    def hook(part: Any) -> Any:
        return next(chunks)

    return hook


class _VocabParallelLinearDistillation(torch.autograd.Function):
    """The chunked sweep of ``linear_distillation_loss`` on this rank's rows of both
    weights (:class:`DistillationHead` with all-reducing combine hooks), the input gradient
    summed over the ranks. For a mean or a sum the gradients come with the forward's sweep
    and the backward scales them; else (``reduction="none"``, a later backward of a
    retained graph) the backward sweeps again, each chunk's whole-row sums replayed from
    the forward (no exchange for them), and all-reduces the input gradient."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        student_input: Tensor,
        student_weight: Tensor,
        student_bias: Tensor | None,
        teacher: tuple[Tensor, Tensor, Tensor | None],
        plan: _DistillPlan,
        wants: tuple[bool, bool, bool],
    ) -> Tensor:
        losses = torch.zeros(
            student_input.shape[0], dtype=torch.float64, device=student_input.device
        )
        kept_lse: list[LogSumExps] = []
        kept_sums: list[DivergenceSums] = []
        now = wants if plan.reduction != "none" else (False, False, False)
        head = DistillationHead(
            *teacher,
            plan.d,
            plan.target,
            plan.live,
            scale=plan.scale,
            losses=losses,
            start=plan.start,
            combine_lse=_recorded(_log_sum_exps_all_reduced(plan.group), kept_lse),
            combine_sums=_recorded(_divergence_sums_all_reduced(plan.group), kept_sums),
        )
        grads = engine.sweep(
            student_input, student_weight, student_bias, head, chunk=plan.chunk, wants=now
        )
        _sum_over_ranks(grads[0], plan.group)
        ctx.save_for_backward(student_input, student_weight, student_bias)
        ctx.teacher, ctx.plan, ctx.kept = teacher, plan, (kept_lse, kept_sums)
        ctx.grads = grads if any(g is not None for g in grads) else None
        ctx.set_materialize_grads(False)
        return _reduced(losses, plan)

    @staticmethod
    @torch.autograd.function.once_differentiable  # type: ignore[misc]
    def backward(ctx: Any, grad_loss: Tensor | None) -> tuple[Any, ...]:  # type: ignore[override]
        nothing = (None, None, None)
        if grad_loss is None:
            return None, None, None, *nothing
        input, weight, bias = ctx.saved_tensors
        plan: _DistillPlan = ctx.plan
        dtypes = (input.dtype, weight.dtype, None if bias is None else bias.dtype)
        reduced = plan.reduction != "none"
        if reduced and ctx.grads is not None:
            grads, ctx.grads = ctx.grads, None  # handed out once
            return *engine.finish_gradients(grads, dtypes, grad_loss), *nothing
        kept_lse, kept_sums = ctx.kept
        scale = plan.scale if reduced else grad_loss.reshape(-1)
        teacher_input, teacher_weight, teacher_bias = ctx.teacher
        head = DistillationHead(
            teacher_input,
            teacher_weight,
            teacher_bias,
            plan.d,
            plan.target,
            plan.live,
            scale=scale,
            start=plan.start,
            combine_lse=_replayed(kept_lse),
            combine_sums=_replayed(kept_sums),
        )
        needs = tuple(ctx.needs_input_grad[:3])
        grads = engine.sweep(input, weight, bias, head, chunk=plan.chunk, wants=needs)
        _sum_over_ranks(grads[0], plan.group)
        factor = grad_loss if reduced else None
        return *engine.finish_gradients(grads, dtypes, factor), *nothing


def vocab_parallel_linear_distillation_loss(
    student_input: Tensor,
    student_weight_shard: Tensor,
    teacher_input: Tensor,
    teacher_weight_shard: Tensor,
    target: Tensor | None = None,
    *,
    group: Any = None,
    vocab_start_index: int | None = None,
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
) -> Tensor:
    r"""The distillation loss of :func:`crossentropy.torch.linear_distillation_loss` with
    both models' output layers split by vocabulary across the ranks, the same way, chunked
    over the tokens: neither model's logits nor a slice of them exists whole.

    Each rank holds the rows [s_k, s_k + V_k) of both weights (and biases). The vocabulary
    engine sweeps the tokens in chunks; for each chunk the distillation head
    (:class:`crossentropy.torch.heads.DistillationHead`) computes both models' local
    logits and runs the three phases of :func:`vocab_parallel_distillation_loss` on them,
    the log-sum-exps and then the divergence sums all-reduced between the phases; the
    student's gradient is written over its logits, the rank's own weight (and bias)
    gradient accumulated in float32 and its partial input gradient ``G_k W_k``; the input
    gradient is all-reduced over the ranks once (SUM). Every rank returns the same loss and
    the same input gradient. Inputs and target are the same on every rank. The teacher is
    read, never differentiated.

    With ``reduction="none"`` the backward sweeps again, each chunk's whole-row sums taken
    from the forward (no exchange for them), then all-reduces the input gradient: every
    rank must call it, with the same incoming gradient. The backward is
    once-differentiable (a double backward raises).

    Args:
        student_input: (..., D_s) the student's hidden states, the same on every rank.
        student_weight_shard: (V_k, D_s) this rank's rows of the student's output layer,
            the input's dtype.
        teacher_input: (..., D_t) the teacher's hidden states: the student's leading shape
            and dtype (D_t may differ).
        teacher_weight_shard: (V_k, D_t) this rank's rows of the teacher's output layer:
            the same classes as the student's slice.
        target: (...) global class ids in [0, V) or ``ignore_index``, or ``None`` (every
            token counts; ``hard_weight`` must be 0).
        group, vocab_start_index: as in :func:`vocab_parallel_cross_entropy`.
        student_bias, teacher_bias: (V_k,) this rank's slices of the biases, or ``None``
            (on every rank).
        divergence, beta, temperature, ignore_index, soft_weight, hard_weight, reduction:
            as in :func:`crossentropy.torch.distillation_loss`.
        chunk_size: tokens per chunk, the same on every rank; ``None`` picks one from the
            shapes for the widest slice; either is capped so that a chunk of whole rows of
            the widest slice fits the engine's budget
            (:func:`crossentropy.torch.linear_distillation.whole_row_chunk`).

    Returns:
        The loss, float32 for float32/bfloat16/float16 inputs (float64 for float64), the
        same on every rank: a scalar, or (...)
        for ``reduction="none"``.

    Example:
        >>> import torch, torch.distributed as dist
        >>> from crossentropy.torch import linear_distillation_loss
        >>> from crossentropy.torch.distributed import vocab_parallel_linear_distillation_loss
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> g = torch.Generator().manual_seed(0)
        >>> hs = torch.randn(6, 4, generator=g, dtype=torch.float64)
        >>> ws = torch.randn(10, 4, generator=g, dtype=torch.float64)
        >>> ht = torch.randn(6, 8, generator=g, dtype=torch.float64)
        >>> wt = torch.randn(10, 8, generator=g, dtype=torch.float64)
        >>> options = {"divergence": "reverse_kl", "temperature": 2.0}
        >>> ours = vocab_parallel_linear_distillation_loss(hs, ws, ht, wt, chunk_size=4, **options)
        >>> whole = linear_distillation_loss(hs, ws, ht, wt, **options)
        >>> print(torch.allclose(ours, whole))
        True
        >>> dist.destroy_process_group()
    """
    function = FUNCTIONS[5]
    group_ = _Group.of(group, function)
    options = {
        "divergence": divergence,
        "beta": beta,
        "temperature": temperature,
        "soft_weight": soft_weight,
        "hard_weight": hard_weight,
        "reduction": reduction,
        "ignore_index": ignore_index,
    }
    student = (student_input, student_weight_shard, student_bias)
    teacher = (teacher_input, teacher_weight_shard, teacher_bias)

    def describe() -> dict[str, float]:
        return {
            "function": 5.0,
            **_linear_distillation_fields(student, teacher, vocab_start_index, chunk_size),
            **_distillation_fields(target, tuple(student_input.shape[:-1]), options),
        }

    shard = _shard(_agree(function, group_, describe), group_.rank)
    tokens = math.prod(student_input.shape[:-1])

    def flat(x: Tensor) -> Tensor:
        x = x.reshape(tokens, x.shape[-1])
        return x if x.stride(-1) == 1 else x.contiguous()

    flat_input = flat(student_input)
    chunk = whole_row_chunk(chunk_size, tokens, shard.widest, flat_input.element_size())
    plan = _distill_plan(
        target,
        tokens,
        shard,
        options,
        group_.handle,
        flat_input.device,
        torch.promote_types(student_input.dtype, torch.float32),  # as the single-process loss
        chunk,
    )
    detached = (
        flat(teacher_input.detach()),
        teacher_weight_shard.detach().contiguous(),
        None if teacher_bias is None else teacher_bias.detach(),
    )
    wants = engine.wanted_gradients(student_input, student_weight_shard, student_bias)
    loss: Tensor = _VocabParallelLinearDistillation.apply(  # type: ignore[no-untyped-call]
        flat_input, student_weight_shard.contiguous(), student_bias, detached, plan, wants
    )
    return loss.reshape(student_input.shape[:-1]) if plan.reduction == "none" else loss
