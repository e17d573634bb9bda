r"""Row heads of the vocabulary engine (:mod:`crossentropy.torch.engine`).

A head turns a piece of a chunk's logits into per-row outputs and the gradient of the loss
with respect to those logits. :class:`CrossEntropyHead` is softmax cross entropy with
class-index targets (class weights, ``ignore_index``, label smoothing, z-loss, soft-cap),
the per-row math of :mod:`crossentropy.torch._slices` in its two halves:

.. code-block:: text

    statistics of a slice [a, b) of a row:  L_ab = logsumexp, z_y (if y in it), S_w
    combined over blocks (running max)    and over ranks (all-reduce MAX, then SUM)
    loss of the row from (L, z_y, S_w);   gradient of the slice from L and its own logits

:class:`TokenHead` is each token's log-probability of its target and the entropy of its
softmax at a temperature (the math of :mod:`crossentropy.torch._tokens`), with a gradient
for any incoming gradients on both outputs at once.

:class:`DistillationHead` is a divergence between the student's softmax (the sweep's
logits) and a teacher's (logits the head computes itself from the teacher's hidden
states, chunk by chunk), plus a hard-label cross entropy: the three phases of
:mod:`crossentropy.torch._distill` (log-sum-exps, divergence sums, gradient) over whole
rows, with an all-reduce of each phase's sums between them in the vocabulary-parallel
version.

Single process over whole rows, the fused C kernel (:mod:`crossentropy.torch._kernel`)
does both halves in one sweep of each row; everywhere else (vocabulary blocks, the
vocabulary-parallel losses, GPUs) the halves run as torch operations, with the kernel
giving each slice's logsumexp on CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor

from . import _distill, _kernel, dispatch, engine
from ._slices import RowTerms
from ._tokens import TokenStatistics, logit_gradient, token_outputs, token_statistics

__all__ = [
    "Combine",
    "CombineLogSumExps",
    "CombineSums",
    "CrossEntropyHead",
    "DistillationHead",
    "RowStatistics",
    "TokenCombine",
    "TokenHead",
    "combine_logsumexp",
]


def combine_logsumexp(parts: Tensor, peak: Tensor) -> Tensor:
    """log sum_k exp(parts_k) from a stack of logsumexps ``parts`` (k, rows) and their
    maximum ``peak`` (rows,): peak + log sum_k exp(parts_k - peak), with a non-finite peak
    taken as 0 (all -inf: -inf; any +inf: +inf, never inf - inf)."""
    shift = torch.where(torch.isfinite(peak), peak, 0.0)
    return shift + torch.log(torch.exp(parts - shift).sum(0))


@dataclasses.dataclass(frozen=True)
class RowStatistics:
    """What the cross entropy of each row needs from a slice of its logits: the slice's
    logsumexp, the target logit if the target falls in it (else 0), and sum_j w_j z_j
    over it (with label smoothing). Each is combined over slices: a logsumexp of
    logsumexps, and sums."""

    lse: Tensor
    target_logit: Tensor
    weighted_sum: Tensor | None

    def merge(self, other: RowStatistics) -> RowStatistics:
        """The statistics of the union of two disjoint slices."""
        both = torch.stack([self.lse, other.lse])
        weighted = (
            None
            if self.weighted_sum is None or other.weighted_sum is None
            else self.weighted_sum + other.weighted_sum
        )
        return RowStatistics(
            combine_logsumexp(both, both.max(0).values),
            self.target_logit + other.target_logit,
            weighted,
        )


Combine = Callable[[RowStatistics], RowStatistics]
"""Turns the statistics of this process's slice of each row into the whole row's (the
vocabulary-parallel losses all-reduce them over the ranks)."""


class CrossEntropyHead:
    """Softmax cross entropy as a row head: per-token losses (float64) into ``losses``,
    logsumexps into ``lse`` (0 for rows without a loss), and d(reduced loss)/dz.

    Args:
        terms: the per-row terms of every token of the sweep (:class:`RowTerms`).
        scale: d(reduced loss)/d(row loss) (a mean's 1/count), folded into the gradient.
        softcap: c > 0 to use c tanh(x / c) as the logits, or ``None``.
        ignore_index: the target value of tokens without a loss (for the fused kernel).
        losses, lse: outputs of (tokens,), or ``None`` when not wanted (a backward).
        start: the first class of this process's slice of the vocabulary (the
            vocabulary-parallel losses), 0 for the whole vocabulary.
        combine: turns this slice's statistics into the whole rows' (an all-reduce), or
            ``None`` when this process sees whole rows.
        known_lse: each token's logsumexp over the whole vocabulary from an earlier
            forward: the gradient then needs no statistics (no communication).
        weight_sum: the sum of the class weights in float64 for the fused kernel (by
            default the terms' own, in their dtype).
    """

    def __init__(
        self,
        terms: RowTerms,
        *,
        scale: float,
        softcap: float | None = None,
        ignore_index: int = -100,
        losses: Tensor | None = None,
        lse: Tensor | None = None,
        start: int = 0,
        combine: Combine | None = None,
        known_lse: Tensor | None = None,
        weight_sum: float | None = None,
    ) -> None:
        self.terms = terms
        self.scale = scale
        self.softcap = softcap
        self.ignore_index = ignore_index
        self.losses = losses
        self.lse = lse
        self.start = start
        self.combine = combine
        self.known_lse = known_lse
        self.weight_sum = float(terms.weight_total) if weight_sum is None else weight_sum
        self._rows = slice(0, 0)
        self._chunk = terms
        self._seen: RowStatistics | None = None
        self._row_lse: Tensor | None = None

    # ------------------------------------------------------------------ whole rows

    def _fused(self, z: Tensor) -> bool:
        """Whether the C kernel takes these whole rows: one process, the whole vocabulary
        (the kernel reads the row's target by its class id), CPU, a kernel dtype, and the
        outputs of a forward (lse in float64, as the kernel writes it)."""
        return (
            self.combine is None
            and self.start == 0
            and self.known_lse is None
            and z.device.type == "cpu"
            and z.dtype in _kernel.KERNELS
            and (self.lse is None or self.lse.dtype == torch.float64)
        )

    def rows(self, z: Tensor, rows: slice, grad: bool) -> None:
        if not self._fused(z):
            self.begin(rows)
            if self.known_lse is None:
                self.absorb(z, 0)
            self.finish()
            if grad:
                self.block_gradient(z, 0, out=z)
            return
        terms = self.terms
        row_losses = _kernel.launch(
            z,
            z if grad else None,
            # ignored rows hold 0 in terms.target: the kernel reads the raw ids
            torch.where(terms.counted[rows], terms.target[rows], self.ignore_index),
            terms.weight,
            ignore_index=self.ignore_index,
            eps=terms.label_smoothing,
            z_loss=terms.z_loss,
            cap=0.0 if self.softcap is None else self.softcap,
            weight_sum=self.weight_sum,
            scale=self.scale,
            lse=None if self.lse is None else self.lse[rows],
        )
        if self.losses is not None:
            self.losses[rows] = row_losses

    # ------------------------------------------------------------------ blocks

    def _capped(self, x: Tensor) -> Tensor:
        cap = self.softcap
        return x if cap is None else cap * torch.tanh(x / cap)

    def _slice_lse(self, z: Tensor) -> Tensor:
        """logsumexp of each row of the slice ``z`` (any value for rows without a loss):
        the C kernel on CPU (its lse output, with every row's target taken as class 0 and
        ignored rows skipped), torch elsewhere."""
        dtype = self._chunk.w_y.dtype
        if z.device.type == "cpu" and z.dtype in _kernel.KERNELS and _kernel.fused_available():
            lse = torch.empty(z.shape[0], dtype=torch.float64)
            any_class = torch.where(self._chunk.counted, 0, -1)  # -1: the kernel skips the row
            _kernel.launch(
                z if z.stride(1) == 1 else z.contiguous(),
                None,
                any_class,
                None,
                ignore_index=-1,
                eps=0.0,
                z_loss=0.0,
                cap=0.0,
                weight_sum=float(z.shape[1]),
                scale=1.0,
                lse=lse,
            )
            return lse.to(dtype)
        return torch.logsumexp(z.to(dtype), dim=1)

    def begin(self, rows: slice) -> None:
        self._rows = rows
        self._chunk = self.terms.rows(rows)
        self._seen = None
        self._row_lse = None if self.known_lse is None else self.known_lse[rows]

    def absorb(self, z: Tensor, start: int) -> None:
        """The block of columns [start, start + width) of this process's slice."""
        terms = self._chunk
        start = self.start + start  # the class id of the block's first column
        z = self._capped(z)
        inside, picked = terms.target_logit(z, start)
        part = RowStatistics(
            self._slice_lse(z),
            torch.where(inside, picked, 0.0),
            terms.weighted_sum(z, start) if terms.label_smoothing > 0 else None,
        )
        self._seen = part if self._seen is None else self._seen.merge(part)

    def finish(self) -> None:
        if self._row_lse is not None:  # the gradient from a forward's logsumexp
            return
        seen = self._seen
        if seen is None:
            raise RuntimeError("CrossEntropyHead.finish: no block was absorbed")
        if self.combine is not None:
            seen = self.combine(seen)
        terms = self._chunk
        self._row_lse = seen.lse
        if self.losses is not None:
            self.losses[self._rows] = terms.loss(seen.lse, seen.target_logit, seen.weighted_sum)
        if self.lse is not None:
            self.lse[self._rows] = torch.where(terms.live, seen.lse, 0.0)

    def block_gradient(self, z: Tensor, start: int, out: Tensor | None = None) -> Tensor:
        """d(reduced loss)/dx for the block of raw logits x = ``z``, the columns
        [start, start + width) of this process's slice (dz/dx = 1 - (z/c)^2 under a
        soft-cap z = c tanh(x/c)); into ``out`` (may be ``z``) when given."""
        lse = self._row_lse
        if lse is None:
            raise RuntimeError("CrossEntropyHead.block_gradient: finish() first")
        terms = self._chunk
        capped = self._capped(z)
        factor = torch.full_like(lse, self.scale)
        target = out if self.softcap is None else None
        g = terms.gradient(capped, lse, factor, start=self.start + start, out=target)
        if self.softcap is not None:
            g = g * (1 - (capped / self.softcap) ** 2)
            if out is not None:
                out.copy_(g)
                return out
        return g


TokenCombine = Callable[[TokenStatistics], TokenStatistics]
"""Turns the token statistics of this process's slice of each row into the whole row's
(the vocabulary-parallel versions all-reduce them over the ranks)."""


def _token_rows(stats: TokenStatistics, rows: slice) -> TokenStatistics:
    """The statistics of the tokens ``rows`` of a sweep's."""
    return TokenStatistics(
        stats.peak[rows], stats.mass[rows], stats.spread[rows], stats.target[rows]
    )


class TokenHead:
    r"""Per-token log p(target) and softmax entropy H at temperature T as a row head.

    The forward (``log_prob``/``entropy`` given) writes, per token, log p_y and H of
    p = softmax(z / T) over the whole row, 0 for ignored tokens, and keeps each row's
    statistics in ``kept`` (so that a backward needs no pass over the logits for them).
    The backward (``grad_log_prob``/``grad_entropy`` given) writes over each chunk's
    logits d/dz of sum_i g_i log p_iy + h_i H_i:

    .. code-block:: text

        dz_k = ( g [k = y] - p_k ( g + h (u_k - lse + H) ) ) / T,    u = z / T

    (:func:`crossentropy.torch._tokens.logit_gradient`); the incoming gradients of an
    ignored token are taken as 0, so its gradient is exactly 0. The statistics of a row
    (max, sum of exp, spread, target logit: :class:`TokenStatistics`) combine over
    vocabulary blocks and, through ``combine``, over ranks.

    Args:
        target: (tokens,) int64 class ids of every token of the sweep (or ``ignore_index``).
        temperature: T > 0.
        ignore_index: the target value of tokens without outputs.
        log_prob, entropy: outputs of (tokens,) (the statistics' dtype: float32, or
            float64 for float64 logits), or ``None`` when not wanted (a backward).
        keep: keep every token's statistics in :attr:`kept` (a forward whose backward
            follows).
        known: every token's statistics from an earlier forward: the gradient then needs
            none (no pass over the logits for them, no communication).
        grad_log_prob, grad_entropy: (tokens,) incoming gradients g and h (a backward),
            or ``None`` for 0.
        start: the first class of this process's slice of the vocabulary, 0 for the whole.
        combine: turns this slice's statistics into the whole rows' (an all-reduce), or
            ``None`` when this process sees whole rows.
    """

    def __init__(
        self,
        target: Tensor,
        *,
        temperature: float,
        ignore_index: int = -100,
        log_prob: Tensor | None = None,
        entropy: Tensor | None = None,
        keep: bool = False,
        known: TokenStatistics | None = None,
        grad_log_prob: Tensor | None = None,
        grad_entropy: Tensor | None = None,
        start: int = 0,
        combine: TokenCombine | None = None,
    ) -> None:
        self.live = target != ignore_index
        # an ignored token's target falls in no slice of the vocabulary
        self.target = torch.where(self.live, target, -1)
        self.temperature = temperature
        self.log_prob = log_prob
        self.entropy = entropy
        self.keep = keep
        self.kept: TokenStatistics | None = None
        self.known = known
        self.start = start
        self.combine = combine
        self.grad_log_prob = self._incoming(grad_log_prob)
        self.grad_entropy = self._incoming(grad_entropy)
        self._rows = slice(0, 0)
        self._seen: TokenStatistics | None = None
        self._stats: TokenStatistics | None = None

    def _incoming(self, grad: Tensor | None) -> Tensor | None:
        """An incoming gradient with an ignored token's taken as 0."""
        return None if grad is None else torch.where(self.live, grad, 0)

    # ------------------------------------------------------------------ whole rows

    def rows(self, z: Tensor, rows: slice, grad: bool) -> None:
        """Whole rows of this process's slice: the block methods over one block, the
        gradient written over ``z`` (by the kernels in place, in z's own dtype)."""
        self.begin(rows)
        self.absorb(z, 0)
        self.finish()
        if grad:
            gradient = self.block_gradient(z, 0)
            if gradient.data_ptr() != z.data_ptr():
                z.copy_(gradient)

    # ------------------------------------------------------------------ blocks

    def begin(self, rows: slice) -> None:
        self._rows = rows
        self._seen = None
        self._stats = None if self.known is None else _token_rows(self.known, rows)

    def absorb(self, z: Tensor, start: int) -> None:
        """The block of columns [start, start + width) of this process's slice (nothing to
        take in when the statistics are known from a forward)."""
        if self._stats is not None:
            return
        target, first = self.target[self._rows], self.start + start
        path = _token_path(z)
        if path == "c":
            part = _kernel.token_statistics(z, target, self.temperature, start=first)
        elif path == "triton":  # the block's own columns: a target outside them is none
            kernels = dispatch.triton_module()
            part = TokenStatistics(*kernels.row_statistics(z, target - first, self.temperature))
        else:
            part = token_statistics(z, target, self.temperature, start=first)
        self._seen = part if self._seen is None else self._seen.merge(part)

    def finish(self) -> None:
        if self._stats is not None:  # the gradient from a forward's statistics
            return
        seen = self._seen
        if seen is None:
            raise RuntimeError("TokenHead.finish: no block was absorbed")
        if self.combine is not None:
            seen = self.combine(seen)
        self._stats = seen
        rows = self._rows
        if self.keep:
            self._keep(seen, rows)
        if self.log_prob is None and self.entropy is None:
            return
        log_prob, entropy = token_outputs(seen)
        live = self.live[rows]
        if self.log_prob is not None:
            self.log_prob[rows] = torch.where(live, log_prob, 0.0)
        if self.entropy is not None:
            self.entropy[rows] = torch.where(live, entropy, 0.0)

    def _keep(self, stats: TokenStatistics, rows: slice) -> None:
        """Store a chunk's statistics in :attr:`kept`, allocated on the first chunk."""
        if self.kept is None:
            tokens = self.target.shape[0]

            def empty(like: Tensor) -> Tensor:
                return torch.zeros(tokens, dtype=like.dtype, device=like.device)

            self.kept = TokenStatistics(
                empty(stats.peak), empty(stats.mass), empty(stats.spread), empty(stats.target)
            )
        kept = self.kept
        for mine, part in (
            (kept.peak, stats.peak),
            (kept.mass, stats.mass),
            (kept.spread, stats.spread),
            (kept.target, stats.target),
        ):
            mine[rows] = part

    def block_gradient(self, z: Tensor, start: int) -> Tensor:
        """d/dz of sum_i g_i log p_iy + h_i H_i for the block of logits ``z``, the columns
        [start, start + width) of this process's slice (may be written over ``z``)."""
        stats = self._stats
        if stats is None:
            raise RuntimeError("TokenHead.block_gradient: finish() first")
        g, h = self._incoming_rows(stats.peak)
        target, first = self.target[self._rows], self.start + start
        path = _token_path(z)
        if path == "c":  # over z, in its own dtype
            return _kernel.token_gradient(z, target, stats, self.temperature, g, h, start=first)
        if path == "triton":
            fields = (stats.peak, stats.mass, stats.spread, stats.target)
            kernels = dispatch.triton_module()
            return kernels.row_gradient(  # type: ignore[no-any-return]
                z, target - first, fields, self.temperature, g, h, out=z
            )
        return logit_gradient(z, target, stats, self.temperature, g, h, start=first)

    def _incoming_rows(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """(g, h) of the current rows in the statistics' dtype (``like``'s), 0 where not
        given."""
        rows = self._rows
        zeros = torch.zeros_like(like)
        g = zeros if self.grad_log_prob is None else self.grad_log_prob[rows].to(zeros.dtype)
        h = zeros if self.grad_entropy is None else self.grad_entropy[rows].to(zeros.dtype)
        return g, h


def _token_path(z: Tensor) -> str:
    """Who does the token head's row work over the logits ``z``: ``"triton"`` (the Triton
    kernels, where Triton runs on z's device: CUDA), ``"c"`` (the C kernels: CPU rows of
    consecutive classes, of a dtype they take, the kernel loadable here) or ``"torch"``
    (the row math of :mod:`crossentropy.torch._tokens` as torch operations)."""
    if dispatch.triton_available(z.device):
        return "triton"
    if (
        z.device.type == "cpu"
        and z.dtype in _kernel.KERNELS
        and (z.shape[1] <= 1 or z.stride(1) == 1)
        and (z.shape[0] <= 1 or z.stride(0) >= z.shape[1])
        and _kernel.fused_available()
    ):
        return "c"
    return "torch"


CombineLogSumExps = Callable[[_distill.LogSumExps], _distill.LogSumExps]
"""Turns the log-sum-exps (phase 1) of this process's slice of each row into the whole
row's (the vocabulary-parallel version all-reduces them over the ranks)."""

CombineSums = Callable[[_distill.DivergenceSums], _distill.DivergenceSums]
"""Turns the divergence sums (phase 2) of this process's slice of each row into the whole
row's."""


class DistillationHead:
    r"""Knowledge distillation as a row head: per token, ``soft_weight`` times a divergence
    between p_s = softmax(z_s / T) and p_t = softmax(z_t / T) plus ``hard_weight`` times the
    cross entropy of the student's logits z_s at temperature 1 (the math, its derivation
    and its numerics: :mod:`crossentropy.torch._distill`); writes the per-token losses into
    ``losses`` and d(sum_i scale_i loss_i)/dz_s over the student's logits.

    The engine hands the head the student's logits z_s of a chunk of tokens; the head
    computes the teacher's, z_t = h_t W_t^T + b_t for the same tokens, into a reusable
    buffer of its own (the cache slot ``"distill_teacher_logits"``), so that neither
    model's (tokens x vocabulary) logits ever exist. The teacher is never differentiated.

    Whole rows only: the divergence needs each row's three phases in turn (log-sum-exps,
    then sums given them, then the gradient given both), and a row in vocabulary blocks
    would need the teacher's logits of each block computed three times. The caller picks
    chunks whose rows fit the engine's budget (:func:`crossentropy.torch.linear_distillation_loss`
    does), so :meth:`begin` / :meth:`absorb` / :meth:`block_gradient` raise. Over whole
    rows of one process on CPU the three phases run in one call
    (:func:`crossentropy.torch._distill.distill_rows`), each row staying in cache;
    with the hooks (ranks that each hold a slice of the vocabulary) they run one by one,
    each phase's sums combined before the next.

    Args:
        teacher_input: the teacher's hidden states (tokens, D_t) of every token of the sweep.
        teacher_weight: the teacher's output layer (V, D_t) (this process's slice of it).
        teacher_bias: (V,) or ``None``.
        options: the loss (:class:`crossentropy.torch._distill.Distillation`).
        target: (tokens,) int64 class ids, or ``None`` (no hard term); rows not ``live``
            may hold anything.
        live: (tokens,) bool, the tokens with a loss (the others give 0, gradient 0).
        scale: d(reduced loss)/d(row loss): a number (a mean's 1/count, a sum's 1) or one
            per token (tokens,) (the incoming gradient of ``reduction="none"``); rows not
            ``live`` get 0.
        losses: (tokens,) output of the per-token losses, or ``None`` (a backward).
        start: the class id of this process's first vocabulary column (0 for the whole).
        combine_lse, combine_sums: turn this slice's phase 1 / phase 2 sums into the
            whole rows' (all-reduces), or ``None`` when this process sees whole rows.
    """

    def __init__(
        self,
        teacher_input: Tensor,
        teacher_weight: Tensor,
        teacher_bias: Tensor | None,
        options: _distill.Distillation,
        target: Tensor | None,
        live: Tensor,
        *,
        scale: float | Tensor = 1.0,
        losses: Tensor | None = None,
        start: int = 0,
        combine_lse: CombineLogSumExps | None = None,
        combine_sums: CombineSums | None = None,
    ) -> None:
        self.teacher_input = teacher_input
        self.teacher_weight = teacher_weight
        self.teacher_bias = teacher_bias
        self.options = options
        self.live = live
        # a row without a loss, or without a target, has its target in no slice
        self.target = (
            torch.full(live.shape, -1, dtype=torch.int64, device=live.device)
            if target is None
            else torch.where(live, target, -1)
        )
        if isinstance(scale, Tensor):
            self.scale = torch.where(live, scale, 0)
        else:
            number = torch.tensor(float(scale), dtype=torch.float64, device=live.device)
            self.scale = torch.where(live, number, 0.0)
        self.losses = losses
        self.start = start
        self.combine_lse = combine_lse
        self.combine_sums = combine_sums

    def _teacher_logits(self, rows: slice) -> Tensor:
        """The teacher's logits of the tokens ``rows``, into this head's buffer."""
        h = self.teacher_input[rows]
        width = self.teacher_weight.shape[0]
        buffer = _kernel.buffers.take(
            (h.shape[0], width), h.dtype, h.device, "distill_teacher_logits"
        )
        return engine.chunk_logits(h, self.teacher_weight, self.teacher_bias, buffer)

    def rows(self, z: Tensor, rows: slice, grad: bool) -> None:
        """The chunk ``rows`` from the student's whole-row logits ``z`` (c, V); with
        ``grad``, d(sum_i scale_i loss_i)/dz written over ``z``."""
        teacher = self._teacher_logits(rows)
        target, live, d = self.target[rows], self.live[rows], self.options
        scale = self.scale[rows] if grad else None
        if self.combine_lse is None and self.combine_sums is None and self.start == 0:
            row_losses, gradient = _distill.distill_rows(
                z, teacher, target, live, d, row_scale=scale, out=z if grad else None
            )
        else:
            lse = _distill.log_sum_exps(z, teacher, target, d, start=self.start)
            if self.combine_lse is not None:
                lse = self.combine_lse(lse)
            sums = _distill.divergence_sums(z, teacher, lse, d)
            if self.combine_sums is not None:
                sums = self.combine_sums(sums)
            row_losses = _distill.row_losses(lse, sums, live, d)
            gradient = None
            if scale is not None:
                gradient = _distill.student_gradient(
                    z, teacher, target, lse, sums, d, scale, start=self.start, out=z
                )
        if self.losses is not None:
            self.losses[rows] = row_losses.to(self.losses.dtype)
        if gradient is not None and gradient.data_ptr() != z.data_ptr():
            z.copy_(gradient)
        del teacher

    # ------------------------------------------------------------------ blocks

    def _whole_rows_only(self, what: str) -> RuntimeError:
        return RuntimeError(
            f"DistillationHead.{what}: the distillation head takes whole rows (each row's "
            f"three phases in turn, the teacher's logits computed once per chunk); pick a "
            f"chunk size whose rows fit engine.CHUNK_BYTES (linear_distillation_loss does)"
        )

    def begin(self, rows: slice) -> None:
        raise self._whole_rows_only("begin")

    def absorb(self, z: Tensor, start: int) -> None:
        raise self._whole_rows_only("absorb")

    def finish(self) -> None:
        raise self._whole_rows_only("finish")

    def block_gradient(self, z: Tensor, start: int) -> Tensor:
        raise self._whole_rows_only("block_gradient")
