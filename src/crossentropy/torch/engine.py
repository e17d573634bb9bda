r"""The vocabulary engine: every loss over a vocabulary is a row head plus this one sweep.

A language model's losses are functions of the logits ``z = h W^T + b`` of every token over
the whole vocabulary, the largest tensors in training. The engine never holds them: it
takes the tokens in chunks and, when even one chunk's rows are too wide, the vocabulary in
blocks, and hands each piece of logits to a *row head* that knows the loss:

.. code-block:: text

    for each chunk of c tokens h (c, D):
        z  = h @ W.T + b                       (c, V), one reusable buffer
        head.rows(z)                           per-row outputs; G = d loss / d z over z
        dh = G @ W                             (c, D), into the input's gradient
        dW += G.T @ h,  db += sum_rows G       float32 accumulators

    a chunk too wide for CHUNK_BYTES: the vocabulary in blocks [a, b), twice
        head.begin(rows); head.absorb(z[:, a:b], a) for each block; head.finish()
        G = head.block_gradient(z[:, a:b], a); dh += G W[a:b]; dW[a:b] += G^T h; db[a:b] += ...

so the peak beyond the inputs and their gradients is one chunk of logits (one block of it
when blocked). The chain rule gives the products: with G = d loss / d z,
d loss / d h = G W, d loss / d W = G^T h and d loss / d b = sum over tokens of G; they are
the three matrix products of the unfused computation, nothing recomputed (the blocked
sweep computes the logits twice: the price of never holding a whole row).

A head (:class:`RowHead`) has two halves: the row statistics, which may be combined over
blocks or, in the vocabulary-parallel losses, all-reduced over ranks, and the gradient of
a piece of a row given those statistics. The cross-entropy head is
:class:`crossentropy.torch.heads.CrossEntropyHead`; :func:`crossentropy.torch.linear_cross_entropy`
and :func:`crossentropy.torch.distributed.vocab_parallel_linear_cross_entropy` are that head
plus a call to :func:`sweep`. A new loss over a vocabulary is a new head.

float16/bfloat16: the logits and input-gradient products run in the input dtype (the
blocked sweep in float32); the weight and bias gradients are accumulated in float32 across
chunks and rounded once at the end (:func:`finish_gradients`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from . import _kernel

__all__ = [
    "CHUNK_BYTES",
    "COLUMN_ALIGNMENT",
    "MIN_COLUMNS",
    "PARTIAL_ROWS",
    "Gradients",
    "RowHead",
    "chunk_logits",
    "column_block",
    "column_sweep",
    "default_chunk_size",
    "differentiable_products",
    "finish_gradients",
    "gradient_buffers",
    "kept_gradient_sweep",
    "onednn_linear_works",
    "sweep",
    "vocabulary_block",
    "wanted_gradients",
]

CHUNK_BYTES = 512 * 2**20
"""The most memory one chunk of logits may take when the chunk size is not given."""

Gradients = tuple[Tensor | None, Tensor | None, Tensor | None]
"""The gradients of the input, the weight and the bias (``None`` where not wanted)."""


class RowHead(Protocol):
    """What a loss over a vocabulary gives the engine: per-row outputs and the gradient of
    the loss with respect to a chunk's logits, written in place.

    Whole rows (:meth:`rows`) are the fast path (the fused C kernel on CPU). Rows too wide
    for one buffer arrive in vocabulary blocks: :meth:`begin`, :meth:`absorb` for each
    block (the head keeps combinable row statistics), :meth:`finish` (the row outputs,
    after any all-reduce of the statistics), then :meth:`block_gradient` for each block.
    Every gradient includes the head's reduction scale; the engine multiplies in the
    per-row factor of an incoming gradient."""

    def rows(self, z: Tensor, rows: slice, grad: bool) -> None:
        """The chunk ``rows`` of tokens from its whole-row logits ``z`` (c, V); with
        ``grad``, d(loss)/dz written over ``z``."""

    def begin(self, rows: slice) -> None:
        """Start the chunk ``rows`` of tokens, whose rows arrive in vocabulary blocks."""

    def absorb(self, z: Tensor, start: int) -> None:
        """Take in the statistics of the block of columns [start, start + width) of the
        chunk's logits ``z`` (c, width), float32 at least."""

    def finish(self) -> None:
        """Every block seen: the chunk's per-row outputs."""

    def block_gradient(self, z: Tensor, start: int) -> Tensor:
        """d(loss)/dz for the block [start, start + width) of the chunk's logits ``z``
        (may be written over ``z``)."""


# --------------------------------------------------------------------------- sizes


def default_chunk_size(tokens: int, vocabulary: int, itemsize: int) -> int:
    """Tokens per chunk: the tokens split into equal chunks (up to rounding), at least 5 of
    them and enough that one chunk's logits take at most 512 MiB (at least 8 tokens, at most
    all).

    Equal chunks, because every chunk costs the same fixed traffic however few tokens it
    has: it streams the weight twice (logits, input gradient) and reads and writes the
    float32 weight gradient once. So the time over the three matrix products alone falls
    like 1/chunk (measured on a 2-core CPU at (2048, 2048, 128256): 128 tokens 1.32x, 256
    1.18x, 512 1.06x) while the peak grows with it, and a ragged last chunk of a few tokens
    costs as much as a full one (408-token chunks left one of 8 tokens there). 5 chunks
    keep the peak near 1/10 of the unfused computation's, which holds the logits and their
    gradient (about twice the logits)."""
    row = max(vocabulary * itemsize, 1)
    cap_rows = max(8, CHUNK_BYTES // row)
    pieces = max(5, math.ceil(tokens * row / CHUNK_BYTES))
    chunk = min(-(-tokens // pieces), cap_rows)
    return max(1, min(tokens, max(8, chunk)))


def vocabulary_block(chunk: int, vocabulary: int, itemsize: int) -> int | None:
    """Vocabulary entries per block when a chunk of ``chunk`` tokens is too wide for the
    512 MiB budget (very large vocabularies), else ``None`` (whole rows)."""
    if chunk * vocabulary * itemsize <= CHUNK_BYTES:
        return None
    return max(1, CHUNK_BYTES // (chunk * itemsize))


def column_block(tokens: int, vocabulary: int, chunk: int) -> int | None:
    """Vocabulary entries per block of :func:`column_sweep` over ``tokens`` tokens: a block
    of every token's logits takes what one chunk of ``chunk`` tokens' whole rows does
    (``tokens x block ~ chunk x vocabulary``), so the backward's peak is the forward's.
    ``None`` when that block would be narrower than :data:`MIN_COLUMNS` (so many tokens
    that the products over blocks that narrow run slowly): sweep the tokens in chunks."""
    if tokens == 0:
        return None
    block = -(-chunk * vocabulary // tokens)
    if block >= COLUMN_ALIGNMENT:  # rows of whole cache lines: the products run faster
        block = -(-block // COLUMN_ALIGNMENT) * COLUMN_ALIGNMENT
    block = min(vocabulary, block)
    return block if block >= min(vocabulary, MIN_COLUMNS) else None


COLUMN_ALIGNMENT = 256
""":func:`column_block` rounds a block up to a multiple of this many entries: a product
into (4096, 6407) float32 logits runs 1.5x slower than into (4096, 6400) here (MKL,
rows not a multiple of a cache line)."""


MIN_COLUMNS = 1024
"""The narrowest vocabulary block :func:`column_block` gives."""


# --------------------------------------------------------------------------- logits


def onednn_linear_works() -> bool:
    """Whether oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``, the op PyTorch's
    compiler uses on CPU) is present and agrees with ``torch.mm`` on a small product."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():  # type: ignore[no-untyped-call]
        return False
    try:
        a = torch.arange(6, dtype=torch.float32).reshape(2, 3)
        b = torch.arange(12, dtype=torch.float32).reshape(4, 3) / 7
        return bool(torch.allclose(op(a, b, None, "none", [], ""), a @ b.t()))
    except (RuntimeError, TypeError):  # pragma: no cover - a build without it
        return False


_onednn_linear: bool | None = None


def _through_onednn(h: Tensor, linear_weight: Tensor) -> bool:
    """Whether :func:`chunk_logits` computes these chunks with oneDNN (float32 on CPU)."""
    global _onednn_linear
    if not (h.dtype == torch.float32 and h.device.type == "cpu" and linear_weight.is_contiguous()):
        return False
    if _onednn_linear is None:
        _onednn_linear = onednn_linear_works()
    return _onednn_linear


def chunk_logits(
    h: Tensor, linear_weight: Tensor, linear_bias: Tensor | None, out: Tensor | None
) -> Tensor:
    """``h @ linear_weight.T + linear_bias`` for one chunk of tokens, into ``out`` if given.

    float32 on CPU goes through oneDNN when it is there (``out=None``, see
    :func:`_through_onednn`): MKL's product (``torch.mm``) packs the transposed weight anew
    for each chunk, so with a few hundred tokens it runs about 1.2x slower per token than
    over all the tokens at once (measured at D = 2048, V = 128256, 410 tokens); oneDNN's
    takes 1.02x, page faults of its fresh output included."""
    if out is None:
        z: Tensor = torch.ops.mkldnn._linear_pointwise(
            h, linear_weight, linear_bias, "none", [], ""
        )
        return z
    if linear_bias is None:
        return torch.mm(h, linear_weight.t(), out=out)
    return torch.addmm(linear_bias, h, linear_weight.t(), out=out)


# --------------------------------------------------------------------------- gradients


def wanted_gradients(
    input: Tensor, linear_weight: Tensor, linear_bias: Tensor | None
) -> tuple[bool, bool, bool]:
    """Which of the input's, the weight's and the bias's gradients autograd will ask for."""
    on = torch.is_grad_enabled()
    return (
        on and input.requires_grad,
        on and linear_weight.requires_grad,
        on and linear_bias is not None and linear_bias.requires_grad,
    )


def gradient_buffers(
    input: Tensor, linear_weight: Tensor, wants: tuple[bool, bool, bool]
) -> Gradients:
    """The wanted gradients of input, weight and bias (the last two accumulated over the
    chunks in float32 at least), from the fused paths' cache: a fresh 1 GB weight gradient
    costs 0.36 s of page faults here, 2% of a (2048, 2048, 128256) step (see
    :class:`crossentropy.torch._kernel.BufferCache`). A reused buffer holds stale numbers:
    the bias gradient is zeroed here, the input and weight ones are written by
    :func:`sweep` before they are read."""
    want_input, want_weight, want_bias = wants
    accumulate = torch.promote_types(input.dtype, torch.float32)
    device = input.device
    take = _kernel.buffers.take
    return (
        take(tuple(input.shape), input.dtype, device, "linear_grad_input") if want_input else None,
        take(tuple(linear_weight.shape), accumulate, device, "linear_grad_weight")
        if want_weight
        else None,
        take((linear_weight.shape[0],), accumulate, device, "linear_grad_bias").zero_()
        if want_bias
        else None,
    )


def finish_gradients(
    grads: Sequence[Tensor | None],
    dtypes: tuple[torch.dtype, torch.dtype, torch.dtype | None],
    factor: Tensor | None = None,
) -> Gradients:
    """The gradients of input, weight and bias handed to autograd: times the incoming
    gradient of a reduced loss ``factor`` (a scalar; skipped when it is 1), the weight and
    bias ones cast from their float32 accumulators to the parameters' ``dtypes``."""
    grad_input, grad_weight, grad_bias = grads
    input_dtype, weight_dtype, bias_dtype = dtypes
    if factor is not None and not bool(factor == 1):
        scalar = factor.double()
        grad_input = None if grad_input is None else grad_input * scalar.to(input_dtype)
        grad_weight = None if grad_weight is None else grad_weight * float(scalar)
        grad_bias = None if grad_bias is None else grad_bias * float(scalar)
    return (
        grad_input,
        None if grad_weight is None else grad_weight.to(weight_dtype),
        None if grad_bias is None or bias_dtype is None else grad_bias.to(bias_dtype),
    )


def differentiable_products(
    g: Tensor, h: Tensor, w: Tensor, needs: Sequence[bool], dtypes: tuple[torch.dtype, ...]
) -> Gradients:
    """dh = G W, dW = G^T h and db = sum_rows G as torch operations (for a backward under
    grad mode, which autograd differentiates again), cast to ``dtypes`` (input, weight,
    bias); ``None`` where not needed."""
    return (
        (g @ w).to(dtypes[0]) if needs[0] else None,
        (g.t() @ h).to(dtypes[1]) if needs[1] else None,
        g.sum(0).to(dtypes[2]) if len(dtypes) > 2 and needs[2] else None,
    )


# --------------------------------------------------------------------------- the sweeps


def column_sweep(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    head: RowHead,
    *,
    block: int,
    statistics: bool,
    wants: tuple[bool, bool, bool],
    row_factor: Tensor | None = None,
) -> Gradients:
    r"""Every token at once, the vocabulary in blocks of ``block`` entries: the sweep of a
    loss whose incoming gradients arrive after its forward (a forward that keeps the row
    statistics, then a backward from them).

    .. code-block:: text

        head.begin(all tokens)
        statistics (a forward):  for each block [a, b):  head.absorb(h @ W[a:b].T + b[a:b], a)
        head.finish()                                  outputs; or the known statistics
        gradients (a backward):  for each block [a, b):
            z = h @ W[a:b].T + b[a:b]                  (N, b - a), one reusable buffer
            G = head.block_gradient(z, a)              over z, in the input's dtype
            dh (+)= G @ W[a:b]                         float32 across blocks
            dW[a:b] = G.T @ h,  db[a:b] = sum_rows G   each written once

    Each block of the weight's gradient is one product over all the tokens, written once:
    no float32 accumulator of the weight's size, and in bfloat16/float16 the products run
    on the CPU's half-precision units (oneDNN; AMX here) with float32 accumulation inside,
    rounded once as in the unfused computation (the token-chunked :func:`sweep` must add
    partial products across chunks in float32 instead, and so computes them in float32).
    What adds up across blocks is the input's gradient, (N, D), in float32 (each block's
    half-precision product rounded once before it is added). Both passes compute each
    block's logits by the same call on the same operands, so the backward sees bit for bit
    the logits whose statistics the forward kept (a one-hot row's gradient is exactly 0).

    Returns the wanted gradients of input, weight and bias (``None`` where not wanted), the
    first two in the input's dtype, the bias's in float32 at least
    (:func:`finish_gradients` casts them to the parameters'), each token's times its
    ``row_factor`` (N,) when given.
    """
    tokens, vocabulary = input.shape[0], linear_weight.shape[0]
    want_input, want_weight, want_bias = wants
    device, dtype = input.device, input.dtype
    accumulate = torch.promote_types(dtype, torch.float32)
    take = _kernel.buffers.take
    flat = take((tokens * min(block, vocabulary),), dtype, device, "linear_logits")
    blocks = [(start, min(start + block, vocabulary)) for start in range(0, vocabulary, block)]

    def logits(start: int, stop: int) -> Tensor:
        out = flat[: tokens * (stop - start)].view(tokens, stop - start)
        bias = None if linear_bias is None else linear_bias[start:stop]
        return chunk_logits(input, linear_weight[start:stop], bias, out)

    head.begin(slice(0, tokens))
    if statistics:
        for start, stop in blocks:
            head.absorb(logits(start, stop), start)
    head.finish()
    if not any(wants):
        return None, None, None
    grad_input = (
        take(tuple(input.shape), accumulate, device, "linear_grad_input") if want_input else None
    )
    grad_weight = (
        take(tuple(linear_weight.shape), dtype, device, "linear_grad_weight")
        if want_weight
        else None
    )
    grad_bias = take((vocabulary,), accumulate, device, "linear_grad_bias") if want_bias else None
    if grad_input is not None and not blocks:
        grad_input.zero_()
    for start, stop in blocks:
        weight = linear_weight[start:stop]
        z = logits(start, stop)
        g = head.block_gradient(z, start)
        if g.data_ptr() != z.data_ptr():
            z.copy_(g)
        if row_factor is not None:
            z.mul_(row_factor[:, None].to(dtype))
        if grad_input is not None:
            if grad_input.dtype != dtype:  # half: the block's product, added in float32
                partial = z @ weight
                if start == 0:
                    grad_input.copy_(partial)
                else:
                    grad_input.add_(partial)
            elif start == 0:
                torch.mm(z, weight, out=grad_input)
            else:
                grad_input.addmm_(z, weight)
        if grad_weight is not None:
            torch.mm(z.t(), input, out=grad_weight[start:stop])
        if grad_bias is not None:
            torch.sum(z, 0, dtype=accumulate, out=grad_bias[start:stop])
        del z, g
    return (None if grad_input is None else grad_input.to(dtype), grad_weight, grad_bias)


def sweep(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    head: RowHead,
    *,
    chunk: int,
    wants: tuple[bool, bool, bool],
    row_factor: Tensor | None = None,
) -> Gradients:
    """One pass over the tokens of ``input`` (N, D) in chunks of ``chunk``: ``head`` gets
    every chunk's logits and keeps its outputs; returns the wanted gradients of input,
    weight and bias (the last two float32 at least, from :func:`gradient_buffers`), each
    token's times its ``row_factor`` (N,) when given (an incoming gradient)."""
    tokens = input.shape[0]
    grads = gradient_buffers(input, linear_weight, wants)
    block = vocabulary_block(min(chunk, tokens), linear_weight.shape[0], input.element_size())
    if block is None:
        _whole_rows(input, linear_weight, linear_bias, head, grads, chunk, row_factor)
    else:  # even one chunk's rows are too wide: the vocabulary in blocks too
        _blocks(input, linear_weight, linear_bias, head, grads, chunk, block, row_factor)
    return grads


def kept_gradient_sweep(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    head: RowHead,
    *,
    chunk: int,
    wants: tuple[bool, bool, bool],
    row_factor: Tensor | None = None,
) -> Gradients:
    r""":func:`sweep` for half-precision inputs with the gradient of the logits kept whole:
    each chunk's logits are computed into its rows of one (N, V) buffer in the input's
    dtype, the head writes their gradient G over them, dh and db are finished chunk by
    chunk, and the weight's gradient is one product at the end,

    .. code-block:: text

        for each chunk:  G[rows] = head(h[rows] @ W.T + b);  dh[rows] = G[rows] @ W
        dW = G^T h                                      one bfloat16/float16 product

    on the CPU's half-precision units with float32 accumulation inside over every token,
    rounded once, as in the unfused computation. The token-chunked :func:`sweep` instead
    adds each chunk's partial dW to a float32 accumulator of the weight's size, a pass over
    2 x 4 bytes per weight entry each chunk (about 0.4 s a chunk at (2048, 2048, 128256)
    here, 2 s of a 14 s step). This sweep holds the (N, V) gradient in the input's dtype
    instead of that accumulator: for a loss whose unfused computation holds many logits-
    sized tensors (distillation: both models' logits, log-softmaxes and gradients, 24x
    the half-precision logits) it is both faster and at most as large.

    Whole rows only, and only half precision (anything else, or rows too wide for the
    budget, runs :func:`sweep`). Returns the wanted gradients of input, weight and bias
    (the weight's in the input's dtype, the bias's float32), each token's times its
    ``row_factor``."""
    tokens, vocabulary = input.shape[0], linear_weight.shape[0]
    wide = vocabulary_block(min(chunk, tokens), vocabulary, input.element_size()) is not None
    if input.dtype not in (torch.bfloat16, torch.float16) or wide or not wants[1]:
        return sweep(
            input, linear_weight, linear_bias, head, chunk=chunk, wants=wants, row_factor=row_factor
        )
    want_input, _, want_bias = wants
    dtype, device = input.dtype, input.device
    take = _kernel.buffers.take
    grad_input = (
        take(tuple(input.shape), dtype, device, "linear_grad_input") if want_input else None
    )
    grad_weight = take(tuple(linear_weight.shape), dtype, device, "linear_grad_weight")
    grad_bias = (
        take((vocabulary,), torch.float32, device, "linear_grad_bias").zero_()
        if want_bias
        else None
    )
    kept = take((tokens, vocabulary), dtype, device, "linear_logits")
    for start in range(0, tokens, chunk):
        stop = min(start + chunk, tokens)
        z = chunk_logits(input[start:stop], linear_weight, linear_bias, kept[start:stop])
        head.rows(z, slice(start, stop), True)
        if row_factor is not None:
            z.mul_(row_factor[start:stop, None].to(dtype))
        if grad_input is not None:
            torch.mm(z, linear_weight, out=grad_input[start:stop])
        if grad_bias is not None:
            grad_bias.add_(z.sum(0, dtype=torch.float32))
        del z
    torch.mm(kept.t(), input, out=grad_weight)
    del kept
    return grad_input, grad_weight, grad_bias


def _whole_rows(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    head: RowHead,
    grads: Gradients,
    chunk: int,
    row_factor: Tensor | None,
) -> None:
    """The token-chunked sweep: each chunk's logits into one reused buffer (or a fresh
    oneDNN output), turned into their gradient by the head, multiplied out into ``grads``."""
    tokens = input.shape[0]
    grad_input, grad_weight, grad_bias = grads
    any_grad = any(g is not None for g in grads)
    if tokens == 0 and grad_weight is not None:
        grad_weight.zero_()  # no chunk writes it
    buffer = (
        None
        if _through_onednn(input, linear_weight)
        else _kernel.buffers.take(
            (min(chunk, tokens), linear_weight.shape[0]), input.dtype, input.device, "linear_logits"
        )
    )
    for start in range(0, tokens, chunk):
        stop = min(start + chunk, tokens)
        h = input[start:stop]
        z = chunk_logits(
            h, linear_weight, linear_bias, None if buffer is None else buffer[: stop - start]
        )
        head.rows(z, slice(start, stop), any_grad)
        if any_grad:
            if row_factor is not None:
                z.mul_(row_factor[start:stop, None].to(z.dtype))
            _multiply_out(
                z,
                h,
                linear_weight,
                (None if grad_input is None else grad_input[start:stop], grad_weight, grad_bias),
                first=start == 0,
            )
        del z  # no reference left: the next chunk's logits take its place, not its side


def _multiply_out(
    g: Tensor, h: Tensor, linear_weight: Tensor, grads: Gradients, *, first: bool
) -> None:
    """One chunk's gradient G of the logits into dh = G W, dW (+)= G^T h and
    db += sum_rows G. The first chunk writes dW (no zero-filled start), the others add to
    it. Half precision: dW's float32 accumulator takes each chunk's product computed in
    the half dtype (on the CPU's half-precision units, float32 accumulation inside, each
    partial rounded once), :data:`PARTIAL_ROWS` rows of it at a time so that the partial
    product never takes the weight's size; a float32 product runs about 2x slower here
    (0.32 s against 0.15 s for an (820, 32000) x (820, 1024) product)."""
    grad_input, grad_weight, grad_bias = grads
    if grad_input is not None:
        torch.mm(g, linear_weight, out=grad_input)
    if grad_weight is not None and g.dtype == grad_weight.dtype:
        if first:
            torch.mm(g.t(), h, out=grad_weight)
        else:
            grad_weight.addmm_(g.t(), h)
    elif grad_weight is not None:
        vocabulary = g.shape[1]
        partial = _kernel.buffers.take(
            (min(PARTIAL_ROWS, vocabulary), h.shape[1]), g.dtype, g.device, "linear_partial"
        )
        for start in range(0, vocabulary, PARTIAL_ROWS):
            stop = min(start + PARTIAL_ROWS, vocabulary)
            part = torch.mm(g[:, start:stop].t(), h, out=partial[: stop - start])
            if first:
                grad_weight[start:stop].copy_(part)
            else:
                grad_weight[start:stop].add_(part)
    if grad_bias is not None:
        grad_bias.add_(g.sum(0, dtype=grad_bias.dtype))


PARTIAL_ROWS = 4096
"""Rows of the weight gradient's half-precision partial product taken at a time."""


def _blocks(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    head: RowHead,
    grads: Gradients,
    chunk: int,
    block: int,
    row_factor: Tensor | None,
) -> None:
    """The sweep with the vocabulary in blocks of ``block``: the rows never exist whole.
    Pass 1 gives the head every block's statistics, pass 2 recomputes each block's logits
    (float32 at least) for its gradient and multiplies it out."""
    tokens = input.shape[0]
    vocabulary = linear_weight.shape[0]
    compute = torch.promote_types(input.dtype, torch.float32)
    grad_input, grad_weight, grad_bias = grads
    any_grad = any(g is not None for g in grads)
    if grad_weight is not None:
        grad_weight.zero_()  # accumulated block by block
    for first in range(0, tokens, chunk):
        rows = slice(first, min(first + chunk, tokens))
        h = input[rows]

        def logits(start: int, stop: int, h: Tensor = h) -> Tensor:
            z = h @ linear_weight[start:stop].t()
            if linear_bias is not None:
                z = z + linear_bias[start:stop]
            return z.to(compute)

        head.begin(rows)
        for start in range(0, vocabulary, block):
            head.absorb(logits(start, min(start + block, vocabulary)), start)
        head.finish()
        if not any_grad:
            continue
        dh = (
            torch.zeros(h.shape, dtype=compute, device=h.device) if grad_input is not None else None
        )
        for start in range(0, vocabulary, block):
            stop = min(start + block, vocabulary)
            g = head.block_gradient(logits(start, stop), start)
            if row_factor is not None:
                g = g * row_factor[rows, None].to(compute)
            if dh is not None:
                dh += g @ linear_weight[start:stop].to(compute)
            if grad_weight is not None:
                grad_weight[start:stop] += g.t() @ h.to(compute)
            if grad_bias is not None:
                grad_bias[start:stop] += g.sum(0)
        if grad_input is not None and dh is not None:
            grad_input[rows].copy_(dh)
