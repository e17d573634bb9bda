r"""Linear + cross entropy for large vocabularies, without the (tokens x vocabulary) logits.

A language model's loss is ``cross_entropy(hidden @ W.T + b, targets)``; the logits and
their gradient are the largest tensors in training. Here the tokens are taken in chunks:

.. code-block:: text

    for each chunk of c tokens h (c, D):
        z  = h @ W.T + b                      (c, V), one reusable buffer
        G  = d loss / d z, written over z     the fused kernel: loss, logsumexp and gradient
        dh = G @ W                            (c, D), into the input's gradient
        dW += G.T @ h,  db += sum_rows G      float32 accumulators

so the peak beyond the inputs and their gradients is one chunk of logits. For a mean or a
sum the gradients are complete after the forward (the incoming gradient is a scalar, applied
in the backward); for ``reduction="none"`` the forward computes only the losses and the
backward sweeps again with each token's incoming gradient as a row factor of G, which is
correct for any incoming gradient. The three matrix products are those of the unfused
computation; nothing is recomputed for a mean or a sum.

Derivation: with z = h W^T + b and G = d loss / d z (the softmax cross-entropy gradient,
:func:`crossentropy.gradients.sparse_softmax_cross_entropy`), the chain rule gives
d loss / d h = G W, d loss / d W = G^T h and d loss / d b = sum over tokens of G.

float16/bfloat16: the logits and input-gradient products run in the input dtype; the
log-sum-exp is computed in float32 by the kernel; the weight and bias gradients are
accumulated in float32 across chunks and rounded once at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat
import torch
from torch import Tensor

from .. import _validate
from .._array import wide_labels
from . import _fused, conventions
from . import functional as _functional
from ._slices import RowTerms

IMPLS = ("auto", "chunked", "torch", "triton")
"""The accepted values of ``linear_cross_entropy(..., impl=)``."""

CHUNK_BYTES = 512 * 2**20
"""The most memory one chunk of logits may take when ``chunk_size`` is ``None``."""


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


def _blocked_rows(
    h: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    options: dict[str, Any],
    *,
    block: int,
    scale: float,
    row_factor: Tensor | None,
    grads: tuple[Tensor | None, Tensor | None, Tensor | None],
    losses: Tensor,
    lse_out: Tensor | None,
) -> None:
    """One token chunk with the vocabulary in blocks: the rows never exist whole.

    Pass 1 runs an online log-sum-exp over the blocks (running max m and sum s, rescaled by
    exp(m_old - m_new) when the max grows) and gathers z_y and sum_j w_j z_j; pass 2
    recomputes each block's logits and forms its gradient given the row's logsumexp, with
    the fused kernel's formula (:class:`._slices.RowTerms`), times dz/dx under a soft-cap.
    One more matrix product than the token-chunked sweep (the logits are computed twice),
    the price of never holding a whole row.
    """
    compute = torch.promote_types(h.dtype, torch.float32)
    vocabulary = linear_weight.shape[0]
    eps, cap = options["label_smoothing"], options["softcap"]
    terms = RowTerms.of(
        target,
        weight,
        ignore_index=options["ignore_index"],
        classes=vocabulary,
        label_smoothing=eps,
        z_loss=options["z_loss"],
        dtype=compute,
    )

    def logits(start: int, stop: int) -> Tensor:
        z = h @ linear_weight[start:stop].t()
        if linear_bias is not None:
            z = z + linear_bias[start:stop]
        z = z.to(compute)
        return z if cap is None else cap * torch.tanh(z / cap)

    m = torch.full((len(target),), -torch.inf, dtype=compute)
    s = torch.zeros(len(target), dtype=compute)
    z_y = torch.zeros(len(target), dtype=compute)
    weighted_sum = torch.zeros(len(target), dtype=compute)
    for start in range(0, vocabulary, block):
        stop = min(start + block, vocabulary)
        z = logits(start, stop)
        new_m = torch.maximum(m, z.max(1).values)
        shift = torch.where(torch.isfinite(new_m), new_m, 0.0)
        s = s * torch.exp(torch.where(torch.isfinite(m), m, shift) - shift)
        s = s + torch.exp(z - shift[:, None]).sum(1)
        m = new_m
        inside, picked = terms.target_logit(z, start)
        z_y = torch.where(inside, picked, z_y)
        if eps > 0:
            weighted_sum = weighted_sum + terms.weighted_sum(z, start)
    shift = torch.where(torch.isfinite(m), m, 0.0)
    lse = shift + torch.log(s)
    losses.copy_(terms.loss(lse, z_y, weighted_sum))
    if lse_out is not None:
        lse_out.copy_(torch.where(terms.live, lse, 0.0))
    grad_input, grad_weight, grad_bias = grads
    if grad_input is None and grad_weight is None and grad_bias is None:
        return
    factor = torch.full_like(lse, scale)
    if row_factor is not None:
        factor = factor * row_factor.to(compute)
    dh = torch.zeros(h.shape, dtype=compute) if grad_input is not None else None
    for start in range(0, vocabulary, block):
        stop = min(start + block, vocabulary)
        z = logits(start, stop)
        g = terms.gradient(z, lse, factor, start=start, out=z if cap is None else None)
        if cap is not None:
            g = g * (1 - (z / cap) ** 2)
        if dh is not None:
            dh += g @ linear_weight[start:stop].to(compute)
        if grad_weight is not None:
            grad_weight[start:stop] += g.t() @ h.to(compute)
        if grad_bias is not None:
            grad_bias[start:stop] += g.sum(0)
    if grad_input is not None and dh is not None:
        grad_input.copy_(dh)


def _step(
    logits: Tensor,
    target: Tensor,
    grad: bool,
    weight: Tensor | None,
    options: dict[str, Any],
    scale: float,
    losses: Tensor,
    lse: Tensor | None,
) -> None:
    """The chunk's cross entropy: per-token losses (and logsumexp) into ``losses``/``lse``,
    and, with ``grad``, the gradient d(reduced loss)/d logits written over ``logits``."""
    row_losses = _fused._launch(
        logits,
        logits if grad else None,
        target,
        weight,
        ignore_index=options["ignore_index"],
        eps=options["label_smoothing"],
        z_loss=options["z_loss"],
        cap=0.0 if options["softcap"] is None else options["softcap"],
        weight_sum=options["weight_sum"],
        scale=scale,
        lse=lse,
    )
    losses.copy_(row_losses)


def _onednn_linear_works() -> bool:
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
        _onednn_linear = _onednn_linear_works()
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


Step = Callable[[Tensor, slice, bool], None]
"""``step(z, rows, grad)``: the cross entropy of the chunk ``rows`` of tokens from its logits
``z``; with ``grad``, writes d(reduced loss)/dz over ``z``."""


def gradient_buffers(
    input: Tensor, linear_weight: Tensor, wants: tuple[bool, bool, bool]
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The wanted gradients of input, weight and bias (the last two accumulated over the
    chunks in float32 at least), from the fused paths' cache: a fresh 1 GB weight gradient
    costs 0.36 s of page faults here, 2% of a (2048, 2048, 128256) step (see
    ``_fused._BufferCache``). A reused buffer holds stale numbers: the bias gradient is
    zeroed here, the input and weight ones are written by :func:`chunks` (its first chunk
    writes dW) before they are read."""
    want_input, want_weight, want_bias = wants
    accumulate = torch.promote_types(input.dtype, torch.float32)
    device = input.device
    take = _fused._cache.take
    return (
        take(tuple(input.shape), input.dtype, device, "linear_grad_input") if want_input else None,
        take(tuple(linear_weight.shape), accumulate, device, "linear_grad_weight")
        if want_weight
        else None,
        take((linear_weight.shape[0],), accumulate, device, "linear_grad_bias").zero_()
        if want_bias
        else None,
    )


def chunks(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    grads: tuple[Tensor | None, Tensor | None, Tensor | None],
    *,
    chunk: int,
    row_factor: Tensor | None,
    step: Step,
) -> None:
    """The token-chunked sweep: each chunk's logits into one reused buffer, ``step`` turns
    them into their gradient, times ``row_factor``, which is multiplied out into ``grads``
    (from :func:`gradient_buffers`; ``None`` where not wanted)."""
    tokens = input.shape[0]
    grad_input, grad_weight, grad_bias = grads
    any_grad = any(g is not None for g in grads)
    if tokens == 0 and grad_weight is not None:
        grad_weight.zero_()  # no chunk writes it
    # one reused buffer for the chunks' logits, or a fresh oneDNN output per chunk
    buffer = (
        None
        if _through_onednn(input, linear_weight)
        else _fused._cache.take(
            (min(chunk, tokens), linear_weight.shape[0]), input.dtype, input.device, "linear_logits"
        )
    )
    for start in range(0, tokens, chunk):
        stop = min(start + chunk, tokens)
        h = input[start:stop]
        z = chunk_logits(
            h, linear_weight, linear_bias, None if buffer is None else buffer[: stop - start]
        )
        step(z, slice(start, stop), any_grad)
        if any_grad:
            _multiply_out(
                z,
                h,
                None if row_factor is None else row_factor[start:stop],
                linear_weight,
                (None if grad_input is None else grad_input[start:stop], grad_weight, grad_bias),
                first=start == 0,
            )
        del z  # no reference left: the next chunk's logits take its place, not its side


def _multiply_out(
    g: Tensor,
    h: Tensor,
    row_factor: Tensor | None,
    linear_weight: Tensor,
    grads: tuple[Tensor | None, Tensor | None, Tensor | None],
    *,
    first: bool,
) -> None:
    """One chunk's gradient G of the logits (times ``row_factor``, in place) into
    dh = G W, dW (+)= G^T h and db += sum_rows G. The first chunk writes dW (no zero-filled
    start), the others add to it; half precision: each chunk's product is computed and
    added in float32."""
    grad_input, grad_weight, grad_bias = grads
    if row_factor is not None:
        g.mul_(row_factor[:, None].to(g.dtype))
    if grad_input is not None:
        torch.mm(g, linear_weight, out=grad_input)
    if grad_weight is not None:
        accumulate = grad_weight.dtype
        g_t, h_acc = (
            (g.t(), h)
            if g.dtype == accumulate
            else (
                g.t().to(accumulate),
                h.to(accumulate),
            )
        )
        if first:
            torch.mm(g_t, h_acc, out=grad_weight)
        else:
            grad_weight.addmm_(g_t, h_acc)
    if grad_bias is not None:
        grad_bias.add_(g.sum(0, dtype=grad_bias.dtype))


def _sweep(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    options: dict[str, Any],
    *,
    scale: float,
    row_factor: Tensor | None,
    wants: tuple[bool, bool, bool],
    lse: Tensor | None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """One pass over the token chunks: per-token losses (float64) and the wanted gradients
    of input, weight and bias (the last two in float32 at least), each token's gradient
    times ``scale`` and its ``row_factor``."""
    tokens, _ = input.shape
    vocabulary = linear_weight.shape[0]
    chunk = options["chunk_size"]
    losses = torch.empty(tokens, dtype=torch.float64)
    grads = gradient_buffers(input, linear_weight, wants)
    grad_input, grad_weight, grad_bias = grads
    block = vocabulary_block(min(chunk, tokens), vocabulary, input.element_size())
    if block is not None:  # even one chunk's rows are too wide: split the vocabulary too
        if grad_weight is not None:
            grad_weight.zero_()  # accumulated block by block
        for start in range(0, tokens, chunk):
            stop = min(start + chunk, tokens)
            _blocked_rows(
                input[start:stop],
                linear_weight,
                linear_bias,
                target[start:stop],
                weight,
                options,
                block=block,
                scale=scale,
                row_factor=None if row_factor is None else row_factor[start:stop],
                grads=(
                    None if grad_input is None else grad_input[start:stop],
                    grad_weight,
                    grad_bias,
                ),
                losses=losses[start:stop],
                lse_out=None if lse is None else lse[start:stop],
            )
        return losses, grad_input, grad_weight, grad_bias

    def step(z: Tensor, rows: slice, grad: bool) -> None:
        _step(
            z,
            target[rows],
            grad,
            weight,
            options,
            scale,
            losses[rows],
            None if lse is None else lse[rows],
        )

    chunks(input, linear_weight, linear_bias, grads, chunk=chunk, row_factor=row_factor, step=step)
    return losses, grad_input, grad_weight, grad_bias


def _scale(target: Tensor, weight: Tensor | None, ignore_index: int, reduction: str) -> float:
    """d(reduced loss)/d(token loss): 1/(summed weight of counted targets) for a mean (0 for a
    mean over nothing), 1 otherwise."""
    if reduction != "mean":
        return 1.0
    counted = target != ignore_index
    if weight is None:
        count = float(counted.sum())
    else:
        picked = weight.double()[torch.where(counted, target, 0)]
        count = float(torch.where(counted, picked, 0.0).sum())
    return 1.0 / count if count != 0 else 0.0


class _LinearCrossEntropy(torch.autograd.Function):
    """Chunked linear + cross entropy; see the module docstring for the sweep.

    ``forward`` returns ``(loss, lse, scale, grad_input, grad_weight, grad_bias)``: for a
    mean or a sum the gradients are computed with the loss and handed to the backward as
    outputs (``setup_context`` form, so that ``torch.func`` can transform it); the caller
    keeps the first two. The backward has three cases:

    - grad mode on (``create_graph=True``, or a ``torch.func`` transform): the gradients
      as torch operations on the saved inputs (:func:`differentiable_gradients`), which
      autograd differentiates again;
    - a mean or a sum, the first time: the forward's gradients times the incoming scalar,
      handed out (autograd may keep them as ``.grad``, so they are not used again);
    - ``reduction="none"``, or a later backward of a retained graph: one more sweep.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        input: Tensor,
        linear_weight: Tensor,
        linear_bias: Tensor | None,
        target: Tensor,
        weight: Tensor | None,
        options: dict[str, Any],
        wants: tuple[bool, bool, bool],
    ) -> tuple[Tensor | None, ...]:
        vocabulary = linear_weight.shape[0]
        ignore_index = options["ignore_index"]
        # widened to int64 exactly (a value past int64 is refused, never wrapped), checked,
        # and made contiguous, as the kernel reads it
        xp = array_api_compat.array_namespace(target)
        target = wide_labels(target, xp)
        _validate.integer_labels(target, vocabulary, ignore_index, xp)
        target = target.contiguous()
        reduction = options["reduction"]
        scale = _scale(target, weight, ignore_index, reduction)
        options = {
            **options,
            "weight_sum": float(vocabulary) if weight is None else float(weight.double().sum()),
        }
        lse = torch.empty(input.shape[0], dtype=torch.float64)
        now = wants if reduction != "none" else (False, False, False)
        losses, *grads = _sweep(
            input,
            linear_weight,
            linear_bias,
            target,
            weight,
            options,
            scale=scale,
            row_factor=None,
            wants=now,
            lse=lse,
        )
        loss_dtype = options["loss_dtype"]
        loss = (
            losses.to(loss_dtype) if reduction == "none" else (losses.sum() * scale).to(loss_dtype)
        )
        return loss, lse.float(), torch.tensor(scale, dtype=torch.float64), *grads

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        input, linear_weight, linear_bias, target, weight, options, _ = inputs
        _, lse, scale, *grads = output
        ctx.save_for_backward(input, linear_weight, linear_bias, target, weight, scale)
        ctx.save_for_forward(input, linear_weight, linear_bias, target, weight, scale)
        ctx.options = options
        ctx.grads = grads if any(g is not None for g in grads) else None
        ctx.mark_non_differentiable(lse, scale, *(g for g in grads if g is not None))
        ctx.set_materialize_grads(False)  # no zero-filled gradients for those outputs

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor | None, *_: Any) -> tuple[Any, ...]:  # type: ignore[override]
        nothing = (None,) * 4
        input, linear_weight, linear_bias, target, weight, scale = ctx.saved_tensors
        if grad_loss is None:
            return None, None, None, *nothing
        options = ctx.options
        dtypes = (
            input.dtype,
            linear_weight.dtype,
            None if linear_bias is None else linear_bias.dtype,
        )
        reduced = options["reduction"] != "none"
        grad_mode = torch.is_grad_enabled()
        if reduced and not grad_mode and ctx.grads is not None:
            grads, ctx.grads = ctx.grads, None  # handed out once
            return *finish_gradients(grads, dtypes, grad_loss), *nothing
        needs = tuple(ctx.needs_input_grad[:3])
        target = target.to(torch.int64).contiguous()
        with torch.autocast(input.device.type, enabled=False):
            if grad_mode:
                factor = grad_loss * scale if reduced else grad_loss
                grads = differentiable_gradients(
                    input, linear_weight, linear_bias, target, weight, options, factor, needs
                )
                return *grads, *nothing
            options = {
                **options,
                "weight_sum": float(linear_weight.shape[0])
                if weight is None
                else float(weight.double().sum()),
            }
            _losses, *again = _sweep(
                input,
                linear_weight,
                linear_bias,
                target,
                weight,
                options,
                scale=float(scale) if reduced else 1.0,
                row_factor=None if reduced else grad_loss.double(),
                wants=needs,
                lse=None,
            )
            return *finish_gradients(again, dtypes, grad_loss if reduced else None), *nothing

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> tuple[Any, ...]:
        """Forward-mode AD (``torch.func.jvp``, ``jacfwd``, ``hessian``): the loss's
        tangent sum_ij G_ij dx_ij, with dx = dh W^T + h dW^T + db and G = d loss_i / dx_ij
        (:func:`logit_gradient`)."""
        input, linear_weight, linear_bias, target, weight, scale = ctx.saved_tensors
        tangent_input, tangent_weight, tangent_bias = tangents[:3]
        options = ctx.options
        reduced = options["reduction"] != "none"
        g, h, w = logit_gradient(
            input,
            linear_weight,
            linear_bias,
            target.to(torch.int64),
            weight,
            options,
            scale if reduced else torch.ones((), dtype=scale.dtype),
        )
        dx = torch.zeros_like(g)
        if tangent_input is not None:
            dx = dx + tangent_input.to(g.dtype) @ w.t()
        if tangent_weight is not None:
            dx = dx + h @ tangent_weight.to(g.dtype).t()
        if tangent_bias is not None:
            dx = dx + tangent_bias.to(g.dtype)
        rows = (g * dx).sum(1)
        loss = (rows.sum() if reduced else rows).to(options["loss_dtype"])
        return loss, None, None, None, None, None

    @staticmethod
    def vmap(
        info: Any,
        in_dims: tuple[int | None, ...],
        input: Tensor,
        linear_weight: Tensor,
        linear_bias: Tensor | None,
        target: Tensor,
        weight: Tensor | None,
        options: dict[str, Any],
        wants: tuple[bool, bool, bool],
    ) -> tuple[tuple[Tensor | None, ...], tuple[int | None, ...]]:
        """``torch.func.vmap``: each sample through the chunked sweep in turn (exact)."""
        tensors = (input, linear_weight, linear_bias, target, weight)

        def sample(i: int) -> tuple[Tensor | None, ...]:
            picked = (
                x if x is None or dim is None else x.select(dim, i)
                for x, dim in zip(tensors, in_dims[:5], strict=True)
            )
            forward: Callable[..., tuple[Tensor | None, ...]] = _LinearCrossEntropy.forward
            return forward(*picked, options, wants)

        samples = [sample(i) for i in range(info.batch_size)]
        stacked = tuple(
            None if parts[0] is None else torch.stack(parts)  # type: ignore[arg-type]
            for parts in zip(*samples, strict=True)
        )
        return stacked, tuple(None if s is None else 0 for s in stacked)


def logit_gradient(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    options: dict[str, Any],
    factor: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""d loss / dx for the logits x = h W^T + b of whole rows, as torch operations, each
    token's times ``factor`` (a scalar or one per token): G = d loss / dz by
    :meth:`RowTerms.differentiable_gradient`, times dz/dx = 1 - (z/c)^2 under a soft-cap
    z = c tanh(x / c). Returns ``(G, h, W)``, the last two in the compute dtype.

    For the backward under grad mode (``create_graph=True``, ``torch.func``) and forward-mode
    AD: autograd records these operations, so a gradient penalty or a double backward
    differentiates them again. The logits exist whole here, as in the unfused computation."""
    compute = torch.promote_types(input.dtype, torch.float32)
    terms = RowTerms.of(
        target,
        weight,
        ignore_index=options["ignore_index"],
        classes=linear_weight.shape[0],
        label_smoothing=options["label_smoothing"],
        z_loss=options["z_loss"],
        dtype=compute,
    )
    h, w = input.to(compute), linear_weight.to(compute)
    x = torch.nn.functional.linear(h, w, None if linear_bias is None else linear_bias.to(compute))
    cap = options["softcap"]
    # rows without a loss are zeros before any math: no inf - inf in them to differentiate
    x = torch.where(terms.live[:, None], x, 0.0)
    z = x if cap is None else cap * torch.tanh(x / cap)
    lse = torch.logsumexp(z, 1)
    rows = factor.to(compute).expand(input.shape[0])
    g = terms.differentiable_gradient(z, lse, rows, start=0)
    if cap is not None:
        g = g * (1 - (z / cap) ** 2)
    return g, h, w


def differentiable_gradients(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    options: dict[str, Any],
    factor: Tensor,
    needs: tuple[bool, ...],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The gradients of input, weight and bias as torch operations: with G from
    :func:`logit_gradient`, dh = G W, dW = G^T h, db = sum_rows G."""
    g, h, w = logit_gradient(input, linear_weight, linear_bias, target, weight, options, factor)
    return (
        (g @ w).to(input.dtype) if needs[0] else None,
        (g.t() @ h).to(linear_weight.dtype) if needs[1] else None,
        g.sum(0).to(linear_bias.dtype) if needs[2] and linear_bias is not None else None,
    )


def finish_gradients(
    grads: Sequence[Tensor | None],
    dtypes: tuple[torch.dtype, torch.dtype, torch.dtype | None],
    factor: Tensor | None = None,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
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


def _check_shapes(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    weight: Tensor | None = None,
) -> bool:
    """Validates the tensors' types, shapes, dtypes and devices; returns whether ``target``
    holds class probabilities."""
    if not isinstance(input, Tensor) or input.ndim < 1 or not input.is_floating_point():
        raise TypeError(f"input: expected a floating tensor (..., D); got {input!r:.60}")
    if not isinstance(linear_weight, Tensor) or linear_weight.ndim != 2:
        shape = tuple(linear_weight.shape) if isinstance(linear_weight, Tensor) else None
        raise ValueError(f"linear_weight: expected a 2-D tensor (V, D); got shape {shape}")
    if linear_weight.shape[1] != input.shape[-1]:
        raise ValueError(
            f"linear_weight: expected (V, {input.shape[-1]}) to match the input's last "
            f"dimension; got {tuple(linear_weight.shape)}"
        )
    if linear_weight.shape[0] < 1:
        raise ValueError(
            f"linear_weight: expected at least one row (class); got {tuple(linear_weight.shape)}"
        )
    if linear_weight.dtype != input.dtype:
        raise TypeError(
            f"linear_weight: expected the input's dtype {input.dtype}; got {linear_weight.dtype}"
        )
    vocabulary = linear_weight.shape[0]
    if linear_bias is not None:
        if not isinstance(linear_bias, Tensor) or tuple(linear_bias.shape) != (vocabulary,):
            shape = tuple(linear_bias.shape) if isinstance(linear_bias, Tensor) else linear_bias
            raise ValueError(f"linear_bias: expected shape ({vocabulary},) or None; got {shape!r}")
        if linear_bias.dtype != input.dtype:
            raise TypeError(
                f"linear_bias: expected the input's dtype {input.dtype}; got {linear_bias.dtype}"
            )
    if not isinstance(target, Tensor):
        raise TypeError(f"target: expected a tensor; got {type(target).__name__}")
    if weight is not None:
        if not isinstance(weight, Tensor) or not weight.is_floating_point():
            shown = weight.dtype if isinstance(weight, Tensor) else type(weight).__name__
            raise TypeError(f"weight: expected a floating tensor (V,) or None; got {shown}")
        _validate.class_weight(weight, vocabulary)
    named = (("linear_weight", linear_weight), ("linear_bias", linear_bias))
    for name, tensor in (*named, ("target", target), ("weight", weight)):
        if tensor is not None and tensor.device != input.device:
            raise ValueError(
                f"{name}: expected the input's device {input.device}; got {tensor.device}"
            )
    leading = tuple(input.shape[:-1])
    if tuple(target.shape) == (*leading, vocabulary) and target.is_floating_point():
        return True
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"target: expected integer class indices of shape {leading} or probabilities of "
            f"shape {(*leading, vocabulary)}; got dtype {target.dtype} of shape "
            f"{tuple(target.shape)}"
        )
    if tuple(target.shape) != leading:
        raise ValueError(
            f"target: expected class indices of shape {leading} (the input's shape without "
            f"its last dimension) or probabilities of shape {(*leading, vocabulary)}; got "
            f"{tuple(target.shape)}"
        )
    return False


def linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
    impl: str = "auto",
    return_lse: bool = False,
    skip_small_gradients: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Cross entropy of ``input @ linear_weight.T + linear_bias`` without holding the logits.

    .. math::

        z = h W^\top + b, \qquad \ell = \operatorname{cross\_entropy}(z, y)

    The same result and gradients as
    ``cross_entropy(linear(input, linear_weight, linear_bias), target, ...)`` (classes on the
    last axis), computed in chunks of tokens so that only one chunk of logits exists at a
    time. A drop-in for ``torch.nn.functional.linear_cross_entropy`` (same leading
    arguments), with the extras of :func:`crossentropy.torch.cross_entropy`.

    Args:
        input: hidden states (..., D).
        linear_weight: the output layer's weight (V, D), the input's dtype.
        target: class indices of shape (...) (or ``ignore_index``), or class probabilities
            of shape (..., V) (then only with ``impl="torch"`` or ``"auto"``).
        linear_bias: (V,) or ``None``.
        weight: per-class weights (V,) or ``None``.
        reduction: ``"mean"`` (over the summed weight of counted targets), ``"sum"`` or
            ``"none"`` (per token, shape (...)).
        ignore_index: the target value that marks a token to skip.
        label_smoothing: epsilon in [0, 1].
        z_loss: coefficient of logsumexp(z)^2, >= 0.
        softcap: c > 0 to use c tanh(z / c) as the logits, or ``None``.
        chunk_size: tokens per chunk; ``None`` picks one from the shapes (equal chunks, at
            least 5, each chunk's logits at most 512 MiB: :func:`default_chunk_size`).
        impl: ``"chunked"`` (this path), ``"triton"`` (the Triton kernels of
            :mod:`crossentropy.triton.linear_cross_entropy_kernels`, logits only as on-chip tiles;
            CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``; ``chunk_size`` does
            not apply), ``"torch"`` (the unfused reference: the logits materialised, then
            :func:`crossentropy.torch.cross_entropy` with impl="torch"), or ``"auto"``:
            triton for class-index targets on CUDA when Triton is installed, chunked for
            class-index targets on CPU when the fused kernel is available, torch otherwise.
        return_lse: also return each token's logsumexp of the (capped) logits, float32 of
            shape (...), 0 for ignored tokens.
        skip_small_gradients: ``impl="triton"`` only: skip the backward's tiles whose
            gradient is below the dtype's resolution (an approximation; ``False``, the
            default, is exact).

    Autograd conventions (the chunked path): a backward with ``create_graph=True`` (a
    gradient penalty, a double backward) and ``torch.func`` (``grad``, ``jacrev``,
    ``jvp``, ``jacfwd``, ``hessian``) compute the gradients with torch operations on whole
    rows of logits, which autograd differentiates again, so their memory is the unfused
    computation's; ``vmap`` runs each sample through the chunked sweep in turn. A graph
    kept with ``retain_graph=True`` can be backpropagated again (each later backward of a
    mean or a sum sweeps again). Class ``weight`` that requires a gradient is refused, as in
    ``torch.nn.functional.cross_entropy``. Under ``torch.autocast`` the product runs in the
    autocast dtype and the loss in float32, as ``cross_entropy(linear(...))`` does there.
    Meta tensors give the shapes.

    Returns:
        The loss, or ``(loss, lse)`` with ``return_lse=True``.

    Example:
        >>> import torch
        >>> from crossentropy.torch import linear_cross_entropy
        >>> g = torch.Generator().manual_seed(0)
        >>> h = torch.randn(6, 4, generator=g, dtype=torch.float64)
        >>> W = torch.randn(10, 4, generator=g, dtype=torch.float64)
        >>> y = torch.tensor([1, 2, 3, -100, 9, 0])
        >>> ours = linear_cross_entropy(h, W, y, chunk_size=4)
        >>> unfused = torch.nn.functional.cross_entropy(h @ W.T, y)
        >>> print(f"{ours.item():.6f} {unfused.item():.6f}")
        3.771035 3.771035
    """
    _validate.reduction(reduction)
    if not isinstance(impl, str) or impl not in IMPLS:
        raise ValueError(f"impl: expected one of {', '.join(map(repr, IMPLS))}; got {impl!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size: expected a positive integer or None; got {chunk_size!r}")
    ignore_index = _validate.ignore_index(ignore_index)
    for name, flag in (("return_lse", return_lse), ("skip_small_gradients", skip_small_gradients)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected True or False; got {flag!r}")
    probabilities = _check_shapes(input, linear_weight, target, linear_bias, weight)
    chosen = impl
    if impl == "auto":
        cpu = input.device.type == "cpu"
        if not probabilities and _functional.triton_available(input.device):
            chosen = "triton"
        elif cpu and not probabilities and _fused.fused_available():
            chosen = "chunked"
        else:
            chosen = "torch"
    if skip_small_gradients and chosen != "triton":
        raise ValueError(
            f"skip_small_gradients: True needs impl='triton' (the Triton kernels); got "
            f"impl={impl!r}, which runs {chosen!r}"
        )
    if probabilities and chosen in ("triton", "chunked"):
        raise ValueError(
            f"impl={chosen!r}: takes class-index targets; probability targets (shape "
            f"{tuple(target.shape)}) use impl='torch' or impl='auto'"
        )
    if chosen == "chunked" and input.device.type not in ("cpu", "meta"):
        raise ValueError(f"impl='chunked': runs on CPU tensors; got device {input.device}")
    eps = _validate.label_smoothing(label_smoothing)
    z_coef = _validate.z_loss(z_loss)
    cap = _validate.softcap(softcap)
    for name, value in (("z_loss", z_coef), ("softcap", cap)):
        if value is not None and math.isinf(value):  # inf * 0 in the formulas: NaN
            raise ValueError(f"{name}: expected a finite number; got {value!r}")
    if (
        weight is not None
        and weight.requires_grad
        and torch.is_grad_enabled()
        and not probabilities
    ):
        raise ValueError(
            "weight: the class weights require a gradient, but the loss over class-index "
            "targets is not differentiable with respect to them (as in "
            "torch.nn.functional.cross_entropy); pass weight.detach()"
        )
    options = {
        "reduction": reduction,
        "ignore_index": ignore_index,
        "label_smoothing": eps,
        "z_loss": z_coef,
        "softcap": cap,
        "chunk_size": chunk_size,
    }
    low = conventions.autocast_dtype(input)
    if low is None:
        return _dispatch(
            chosen,
            input,
            linear_weight,
            target,
            linear_bias,
            weight,
            options,
            return_lse,
            skip_small_gradients,
            probabilities,
            loss_dtype=input.dtype,
        )

    # autocast: the product in the lower precision (F.linear is on autocast's lower-precision
    # list), the loss in float32 (cross_entropy is on its float32 list), as
    # F.cross_entropy(F.linear(input, W, b), target) does under autocast
    def cast(x: Tensor) -> Tensor:
        return x if x.dtype == torch.float64 else x.to(low)

    with torch.autocast(input.device.type, enabled=False):
        return _dispatch(
            chosen,
            cast(input),
            cast(linear_weight),
            target,
            None if linear_bias is None else cast(linear_bias),
            weight,
            options,
            return_lse,
            skip_small_gradients,
            probabilities,
            loss_dtype=torch.promote_types(input.dtype, torch.float32),
        )


def _dispatch(
    chosen: str,
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    weight: Tensor | None,
    options: dict[str, Any],
    return_lse: bool,
    skip_small_gradients: bool,
    probabilities: bool,
    *,
    loss_dtype: torch.dtype,
) -> Tensor | tuple[Tensor, Tensor]:
    """Runs the chosen implementation on validated arguments; the loss in ``loss_dtype``."""
    reduction = options["reduction"]
    leading = tuple(input.shape[:-1])
    if input.device.type == "meta":  # no values: torch's own operations give the shapes
        return _meta(
            input,
            linear_weight,
            target,
            linear_bias,
            weight,
            options,
            return_lse,
            probabilities,
            loss_dtype,
        )
    if chosen == "triton":
        out = _functional.triton_module().linear_cross_entropy(
            input.reshape(-1, input.shape[-1]),
            linear_weight,
            target.reshape(-1),
            linear_bias=linear_bias,
            weight=weight,
            reduction=reduction,
            ignore_index=options["ignore_index"],
            label_smoothing=options["label_smoothing"],
            z_loss=options["z_loss"],
            softcap=options["softcap"],
            return_lse=True,
            skip_small_gradients=skip_small_gradients,
        )
        loss, lse = out
        loss = loss.to(loss_dtype)
        if reduction == "none":
            loss = loss.reshape(leading)
        return (loss, lse.reshape(leading)) if return_lse else loss
    if chosen == "torch":
        return _unfused(
            input,
            linear_weight,
            target,
            linear_bias,
            weight,
            reduction,
            options["ignore_index"],
            options["label_smoothing"],
            options["z_loss"],
            options["softcap"],
            return_lse,
            probabilities,
            loss_dtype,
        )
    vocabulary, hidden = linear_weight.shape
    tokens = math.prod(leading)
    flat_input = input.reshape(tokens, hidden)
    if flat_input.stride(-1) != 1:
        flat_input = flat_input.contiguous()
    flat_target = target.reshape(-1)  # checked, then made int64, in the forward
    options = {
        **options,
        "loss_dtype": loss_dtype,
        "chunk_size": options["chunk_size"]
        or default_chunk_size(tokens, vocabulary, flat_input.element_size()),
    }
    grad_on = torch.is_grad_enabled()
    wants = (
        grad_on and input.requires_grad,
        grad_on and linear_weight.requires_grad,
        grad_on and linear_bias is not None and linear_bias.requires_grad,
    )
    loss, lse, *_ = _LinearCrossEntropy.apply(  # type: ignore[no-untyped-call]
        flat_input,
        linear_weight.contiguous(),
        linear_bias,
        flat_target,
        weight,
        options,
        wants,
    )
    if reduction == "none":
        loss = loss.reshape(leading)
    if return_lse:
        return loss, lse.reshape(leading)
    result: Tensor = loss
    return result


def _meta(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    weight: Tensor | None,
    options: dict[str, Any],
    return_lse: bool,
    probabilities: bool,
    loss_dtype: torch.dtype,
) -> Tensor | tuple[Tensor, Tensor]:
    """Meta tensors (shape inference, tracing): the shapes, dtypes and autograd graph of
    the unfused computation from torch's own operations (the soft-cap and z-loss change no
    shape), and no check of the target's values, which do not exist."""
    vocabulary = linear_weight.shape[0]
    logits = torch.nn.functional.linear(input, linear_weight, linear_bias).to(loss_dtype)
    flat = logits.reshape(-1, vocabulary)
    loss = torch.nn.functional.cross_entropy(
        flat,
        target.reshape(-1, vocabulary) if probabilities else target.reshape(-1),
        weight=None if weight is None else weight.to(loss_dtype),
        reduction=options["reduction"],
        ignore_index=options["ignore_index"],
        label_smoothing=options["label_smoothing"],
    )
    leading = tuple(input.shape[:-1])
    if options["reduction"] == "none":
        loss = loss.reshape(leading)
    if not return_lse:
        return loss
    return loss, torch.empty(leading, dtype=torch.float32, device=input.device)


def _unfused(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    weight: Tensor | None,
    reduction: str,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    return_lse: bool,
    probabilities: bool,
    loss_dtype: torch.dtype,
) -> Tensor | tuple[Tensor, Tensor]:
    """The reference: materialise the logits, then the core's cross entropy under autograd
    (on the logits cast to ``loss_dtype``: float32 under autocast)."""
    vocabulary = linear_weight.shape[0]
    logits = torch.nn.functional.linear(input, linear_weight, linear_bias)
    flat = logits.reshape(-1, vocabulary).to(loss_dtype)
    flat_target = target.reshape(-1, vocabulary) if probabilities else target.reshape(-1)
    loss = _functional.cross_entropy(
        flat,
        flat_target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        impl="torch",
    )
    if reduction == "none":
        loss = loss.reshape(target.shape[:-1] if probabilities else target.shape)
    if not return_lse:
        return loss
    with torch.no_grad():
        capped = flat.float() if softcap is None else softcap * torch.tanh(flat.float() / softcap)
        lse = torch.logsumexp(capped, dim=-1)
        if not probabilities:
            lse = torch.where(flat_target != ignore_index, lse, 0.0)
    return loss, lse.reshape(input.shape[:-1])


class LinearCrossEntropyLoss(torch.nn.Module):
    """:func:`linear_cross_entropy` as a module: options in the constructor, and
    ``forward(input, linear_weight, target, linear_bias=None)``."""

    def __init__(
        self,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        z_loss: float = 0.0,
        softcap: float | None = None,
        chunk_size: int | None = None,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.weight: Tensor | None
        self.ignore_index = ignore_index
        self.reduction = _validate.reduction(reduction)
        self.label_smoothing = label_smoothing
        self.z_loss = z_loss
        self.softcap = softcap
        self.chunk_size = chunk_size
        self.impl = impl

    def forward(
        self,
        input: Tensor,
        linear_weight: Tensor,
        target: Tensor,
        linear_bias: Tensor | None = None,
    ) -> Tensor:
        result = linear_cross_entropy(
            input,
            linear_weight,
            target,
            linear_bias=linear_bias,
            weight=self.weight,
            reduction=self.reduction,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            z_loss=self.z_loss,
            softcap=self.softcap,
            chunk_size=self.chunk_size,
            impl=self.impl,
        )
        assert isinstance(result, Tensor)  # internal: return_lse is False here
        return result
