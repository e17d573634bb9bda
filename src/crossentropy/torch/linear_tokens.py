r"""Per-token log-probabilities and entropies from hidden states, without the logits.

Reinforcement learning on a language model needs, for every token i, the log-probability
of its sampled token y_i and the entropy of its next-token distribution, at a temperature T:

.. math::

    z_i = h_i W^\top + b, \qquad p_i = \operatorname{softmax}(z_i / T), \qquad
    \log p_{i y_i}, \qquad H_i = -\sum_v p_{iv} \log p_{iv}

:func:`linear_token_log_probs` computes them as the token row head
(:class:`crossentropy.torch.heads.TokenHead`) plus the vocabulary engine's sweep
(:func:`crossentropy.torch.engine.sweep`): the tokens in chunks, each chunk's logits in one
reusable buffer (the vocabulary in blocks too when even one chunk's rows are too wide), so
the (tokens x vocabulary) logits never exist. The forward keeps per token only its row
statistics (max, sum of exp, spread, target logit: three numbers and the target logit);
the backward sweeps again with both incoming gradients g (on log p_y) and h (on H) at once,
writes each chunk's d/dz over its logits

.. math::

    \frac{\partial}{\partial z_{ik}} = \frac{1}{T}\Big( g_i [k = y_i]
        - p_{ik} \big( g_i + h_i (\log p_{ik} + H_i) \big) \Big)

and multiplies it out into dh = G W, dW += G^T h and db += sum_rows G (only the gradients
autograd asks for). The peak beyond the inputs and their gradients is one chunk of logits
and the float32 weight-gradient accumulator.

float16/bfloat16: the logits and the input-gradient product run in the input dtype, the
statistics and outputs in float32 (log-probabilities feed ratios: never rounded to
bfloat16), the weight and bias gradients accumulated in float32 across chunks and rounded
once at the end.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import array_api_compat
import torch
from torch import Tensor

from .. import _validate
from .._array import wide_labels
from . import conventions, engine
from .heads import TokenHead
from .linear import check_shapes

__all__ = ["TokenImpl", "linear_token_log_probs"]

TokenImpl = Literal["auto", "torch"]
"""The accepted values of ``impl=`` of :func:`linear_token_log_probs`."""

_IMPLS: tuple[TokenImpl, ...] = ("auto", "torch")


class _LinearTokens(torch.autograd.Function):
    """The chunked sweep; see the module docstring. ``forward`` returns
    ``(log_prob, entropy)``; the backward sweeps again with both incoming gradients, or,
    under grad mode (``create_graph=True``), differentiates the unfused computation
    (:func:`_unfused`) on the saved inputs, which autograd can differentiate again."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        input: Tensor,
        linear_weight: Tensor,
        linear_bias: Tensor | None,
        target: Tensor,
        options: dict[str, Any],
    ) -> tuple[Tensor, Tensor]:
        tokens = input.shape[0]
        compute = torch.promote_types(input.dtype, torch.float32)
        log_prob = torch.empty(tokens, dtype=compute, device=input.device)
        entropy = torch.empty(tokens, dtype=compute, device=input.device)
        head = TokenHead(
            target,
            temperature=options["temperature"],
            ignore_index=options["ignore_index"],
            log_prob=log_prob,
            entropy=entropy,
            keep=True,
        )
        _sweep(input, linear_weight, linear_bias, head, options, (False, False, False))
        ctx.save_for_backward(input, linear_weight, linear_bias, target)
        ctx.kept = head.kept
        ctx.options = options
        ctx.set_materialize_grads(False)  # an output without a gradient gets None, not zeros
        return log_prob, entropy

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_log_prob: Tensor | None, grad_entropy: Tensor | None
    ) -> tuple[Any, ...]:
        input, linear_weight, linear_bias, target = ctx.saved_tensors
        needs = tuple(ctx.needs_input_grad[:3])
        if (grad_log_prob is None and grad_entropy is None) or not any(needs):
            return None, None, None, None, None
        options = ctx.options
        if torch.is_grad_enabled():
            grads = _differentiable_gradients(
                input,
                linear_weight,
                linear_bias,
                target,
                options,
                needs,
                grad_log_prob,
                grad_entropy,
            )
            return *grads, None, None
        head = TokenHead(
            target,
            temperature=options["temperature"],
            ignore_index=options["ignore_index"],
            known=ctx.kept,
            grad_log_prob=grad_log_prob,
            grad_entropy=grad_entropy,
        )
        grads = _sweep(input, linear_weight, linear_bias, head, options, needs)
        dtypes = (
            input.dtype,
            linear_weight.dtype,
            None if linear_bias is None else linear_bias.dtype,
        )
        return *engine.finish_gradients(grads, dtypes), None, None


def _sweep(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    head: TokenHead,
    options: dict[str, Any],
    wants: tuple[bool, ...],
) -> engine.Gradients:
    """The engine's sweep for the forward (``wants`` all False: the head absorbs the
    statistics) or the backward (the head knows them): every token at once over blocks of
    the vocabulary (:func:`crossentropy.torch.engine.column_sweep`: the weight's gradient
    one product per block, half-precision products) unless the tokens are so many that
    the blocks would be too narrow; then the tokens in chunks. The forward and its backward
    make the same choice, so both compute the same logits."""
    chunk = options["chunk_size"]
    block = engine.column_block(input.shape[0], linear_weight.shape[0], chunk)
    want = (wants[0], wants[1], wants[2])
    if block is None:
        return engine.sweep(input, linear_weight, linear_bias, head, chunk=chunk, wants=want)
    return engine.column_sweep(
        input, linear_weight, linear_bias, head, block=block, statistics=not any(want), wants=want
    )


def _differentiable_gradients(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    target: Tensor,
    options: dict[str, Any],
    needs: tuple[bool, ...],
    grad_log_prob: Tensor | None,
    grad_entropy: Tensor | None,
) -> engine.Gradients:
    """The gradients of input, weight and bias as the derivative of the unfused computation
    on the saved inputs, under grad mode: autograd records it, so a double backward or a
    gradient penalty differentiates it again. The logits exist whole here, as in the
    unfused computation."""
    tensors = (input, linear_weight, linear_bias)
    wanted = [x for x, need in zip(tensors, needs, strict=True) if need and x is not None]
    with torch.enable_grad():
        log_prob, entropy = _unfused(
            input,
            linear_weight,
            linear_bias,
            target,
            options["temperature"],
            options["ignore_index"],
        )
        pairs = [
            (out, grad)
            for out, grad in ((log_prob, grad_log_prob), (entropy, grad_entropy))
            if grad is not None
        ]
        found = torch.autograd.grad(
            [out for out, _ in pairs],
            wanted,
            [grad.to(out.dtype) for out, grad in pairs],
            create_graph=True,
            allow_unused=True,
        )
    given = iter(found)
    grads = [
        next(given) if need and x is not None else None
        for x, need in zip(tensors, needs, strict=True)
    ]
    grads = [
        torch.zeros_like(x) if grad is None and need and x is not None else grad
        for x, need, grad in zip(tensors, needs, grads, strict=True)
    ]
    return grads[0], grads[1], grads[2]


def _unfused(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    target: Tensor,
    temperature: float,
    ignore_index: int,
) -> tuple[Tensor, Tensor]:
    """The readable reference under autograd (``impl="torch"``): the logits materialised,
    ``log_softmax`` of them over T (in float32 at least), the target's entry gathered and
    the entropy -sum p log p from it, with a class of p = 0 adding 0 (its log p, -inf,
    replaced before the product, so that neither the value nor the gradient sees
    0 * -inf); ignored tokens 0 with zero gradient, whatever their logits."""
    compute = torch.promote_types(input.dtype, torch.float32)
    logits = torch.nn.functional.linear(input, linear_weight, linear_bias).to(compute)
    live = target != ignore_index
    # an ignored token's row is zeros before any math: nothing non-finite to differentiate
    log_p = torch.log_softmax(torch.where(live.unsqueeze(-1), logits / temperature, 0.0), dim=-1)
    picked = log_p.gather(-1, torch.where(live, target, 0).unsqueeze(-1)).squeeze(-1)
    p = log_p.exp()
    entropy = -(p * torch.where(p > 0, log_p, 0.0)).sum(-1)
    return torch.where(live, picked, 0.0), torch.where(live, entropy, 0.0)


def _check_target(target: Tensor, vocabulary: int, ignore_index: int) -> Tensor:
    """``target`` as int64 (exactly: a value past int64 is refused, never wrapped), each
    value a class of the vocabulary or ``ignore_index``; errors name ``target``."""
    xp = array_api_compat.array_namespace(target)
    target = wide_labels(target, xp, name="target")
    _validate.integer_labels(target, vocabulary, ignore_index, xp, name="target")
    return target.to(torch.int64)


def linear_token_log_probs(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
    chunk_size: int | None = None,
    impl: TokenImpl = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Each token's log p(target) (and the entropy of p) of
    ``softmax((input @ linear_weight.T + linear_bias) / temperature)``, without the logits.

    .. math::

        z = h W^\top + b, \quad p = \operatorname{softmax}(z / T), \quad
        \text{log\_probs}_i = \log p_{i, y_i}, \quad
        \text{entropy}_i = -\sum_v p_{iv} \log p_{iv}

    Both outputs are differentiable with respect to the input, the weight and the bias,
    for any incoming gradients on each at once (e.g. ``(adv * log_probs).sum() +
    beta * entropy.sum()``); the entropy's gradient with respect to the logits is
    -p (log p + H) / T.

    Args:
        input: hidden states (..., D), floating.
        linear_weight: the output layer's weight (V, D), the input's dtype.
        target: class indices of shape (...) (the input's without its last dimension),
            each in [0, V) or ``ignore_index``.
        linear_bias: (V,) or ``None``.
        temperature: T, finite and > 0.
        ignore_index: the target value of a token without outputs: its log-probability
            and entropy are 0, with zero gradient.
        return_entropy: also return each token's entropy.
        chunk_size: tokens per chunk; ``None`` picks one from the shapes
            (:func:`crossentropy.torch.engine.default_chunk_size`).
        impl: ``"auto"`` (the vocabulary engine: the logits one chunk at a time) or
            ``"torch"`` (the unfused readable reference: the logits materialised,
            ``log_softmax`` gathered and the entropy from it, under autograd).

    Returns:
        ``log_probs`` of shape (...), or ``(log_probs, entropy)`` with
        ``return_entropy=True``; float32 for float32, bfloat16 and float16 inputs, float64
        for float64, in nats.

    A backward with ``create_graph=True`` (a double backward, a gradient penalty)
    differentiates the unfused computation on the saved inputs, so its memory is the
    unfused computation's. Under ``torch.autocast`` the product runs in the autocast dtype.

    Example:
        >>> import torch
        >>> from crossentropy.torch import linear_token_log_probs
        >>> g = torch.Generator().manual_seed(0)
        >>> h = torch.randn(5, 4, generator=g, dtype=torch.float64)
        >>> W = torch.randn(10, 4, generator=g, dtype=torch.float64)
        >>> y = torch.tensor([1, 2, -100, 9, 0])
        >>> log_probs, entropy = linear_token_log_probs(h, W, y, return_entropy=True)
        >>> reference = torch.log_softmax(h @ W.T, -1)[torch.arange(5), y.clamp(min=0)]
        >>> print(torch.allclose(log_probs[y >= 0], reference[y >= 0]), log_probs[2].item())
        True 0.0
    """
    if impl not in _IMPLS:
        names = ", ".join(repr(name) for name in _IMPLS)
        raise ValueError(
            f"impl: expected one of {names} (the vocabulary engine, or the unfused "
            f"reference); got {impl!r}"
        )
    temperature = _validate.temperature(temperature)
    ignore_index = _validate.ignore_index(ignore_index)
    return_entropy = _validate.flag("return_entropy", return_entropy)
    chunk_size = _validate.chunk_size(chunk_size)
    if check_shapes(input, linear_weight, target, linear_bias):
        raise TypeError(
            f"target: expected integer class indices of shape {tuple(input.shape[:-1])}; "
            f"got dtype {target.dtype} of shape {tuple(target.shape)} (class probabilities "
            f"have no log-probability of a token)"
        )
    leading = tuple(input.shape[:-1])
    vocabulary, hidden = linear_weight.shape
    target = _check_target(target, vocabulary, ignore_index)
    low = conventions.autocast_dtype(input)
    if low is not None:  # the product in the autocast dtype, as F.linear runs there

        def cast(x: Tensor) -> Tensor:
            return x if x.dtype == torch.float64 else x.to(low)

        input, linear_weight = cast(input), cast(linear_weight)
        linear_bias = None if linear_bias is None else cast(linear_bias)
    with torch.autocast(input.device.type, enabled=False):
        if impl == "torch":
            log_prob, entropy = _unfused(
                input, linear_weight, linear_bias, target, temperature, ignore_index
            )
        else:
            tokens = math.prod(leading)
            flat = input.reshape(tokens, hidden)
            if flat.stride(-1) != 1:
                flat = flat.contiguous()
            options = {
                "temperature": temperature,
                "ignore_index": ignore_index,
                "chunk_size": chunk_size
                or engine.default_chunk_size(tokens, vocabulary, flat.element_size()),
            }
            log_prob, entropy = _LinearTokens.apply(  # type: ignore[no-untyped-call]
                flat,
                linear_weight.contiguous(),
                linear_bias,
                target.reshape(-1).contiguous(),
                options,
            )
            log_prob, entropy = log_prob.reshape(leading), entropy.reshape(leading)
    return (log_prob, entropy) if return_entropy else log_prob
