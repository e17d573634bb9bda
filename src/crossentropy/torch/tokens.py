r"""Per-token log-probabilities and softmax entropy from logits, exact, never logits-sized.

What reinforcement learning on language models takes for every generated token: the
policy's log-probability of the sampled token (the ratios of PPO, GRPO, RLOO) and the
entropy of its next-token distribution (an entropy bonus, monitoring collapse), with a
temperature T:

.. math::

    \log p_{iy} = \log \operatorname{softmax}(z_i / T)_{y_i}, \qquad
    H_i = -\sum_v p_{iv} \log p_{iv}, \qquad p_i = \operatorname{softmax}(z_i / T)

``impl="auto"`` sweeps the rows a block at a time (:func:`crossentropy.torch.native.row_blocks`,
about ``BLOCK_ELEMENTS`` logits each): the forward keeps per row four numbers, the
statistics of :mod:`crossentropy.torch._tokens` (max, sum of exponentials, the sum that
gives the entropy, the target's logit); the backward recomputes each block's softmax from
the logits and those numbers and writes the gradient for both incoming gradients at once,

.. math::

    \frac{\partial (g \log p_y + h H)}{\partial z_k}
      = \frac{g [k = y] - p_k (g + h H) - h\, p_k \log p_k}{T}

(the derivation, and the decided answers for ±inf and NaN logits, are
:mod:`crossentropy.torch._tokens`' docstring). Nothing logits-sized is kept between the
two passes but the logits themselves; float16/bfloat16 logits are computed in float32 a
block at a time, their outputs are float32 (log-probabilities feed ratios: they are never
rounded to half precision), their gradient is rounded to their dtype once.

``impl="fused"`` (what ``"auto"`` runs on CPU where the kernel loads) does the same row
work in C (:func:`crossentropy.torch._kernel.token_statistics` and ``token_gradient``):
each row's statistics in one sweep of memory, its gradient in one more, written straight
in the logits' dtype.

``impl="torch"`` is the readable reference: the whole rows' log-softmax (with the library's
shift, :func:`crossentropy._array.shift_and_log_sum`) and -sum p log p under autograd. It
is also what a differentiable backward (``create_graph=True``) and ``torch.func``
transforms run.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import torch
from torch import Tensor

from .. import _validate
from .._array import shift_and_log_sum, wide_labels
from . import _kernel, conventions, dispatch
from ._tokens import TokenStatistics, logit_gradient, token_outputs, token_statistics
from .native import compute_dtype, row_blocks

__all__ = ["softmax_entropy", "token_log_probs"]

# the values of impl= these functions take
_IMPLS = ("auto", "torch", "fused", "triton")


def _impl(value: object, function: str) -> str:
    """``impl`` checked: a name of :data:`crossentropy.torch.dispatch.IMPLS` that this
    function has a path for."""
    name = dispatch.impl(value)
    if name not in _IMPLS:
        accepted = ", ".join(map(repr, _IMPLS))
        raise ValueError(
            f"impl: {function} takes {accepted} (no {name!r} path is written for it); got {value!r}"
        )
    return name


def _check_logits(logits: object) -> Tensor:
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits: expected a torch.Tensor; got {type(logits).__name__}")
    if not logits.is_floating_point() or logits.ndim == 0:
        raise ValueError(
            f"logits: expected a floating-point tensor with a class axis (at least 1-D); "
            f"got dtype {logits.dtype} and shape {tuple(logits.shape)}"
        )
    return logits


def _check_target(target: object, logits: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Integer class ids of the logits' leading shape, on their device, in [0, V) or
    ``ignore_index``; returned flat as int64, -1 where ignored, with the flat mask of the
    ignored positions."""
    if not isinstance(target, Tensor):
        raise TypeError(f"target: expected a torch.Tensor; got {type(target).__name__}")
    expected = tuple(logits.shape[:-1])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target: expected shape {expected} (the logits' shape {tuple(logits.shape)} "
            f"without the class axis, the last); got {tuple(target.shape)}"
        )
    if target.device != logits.device:
        raise ValueError(
            f"target: expected a tensor on the logits' device {logits.device}; "
            f"got one on {target.device}"
        )
    xp = array_api_compat.array_namespace(target)
    _validate.integer_labels(target, int(logits.shape[-1]), ignore_index, xp, name="target")
    wide: Tensor = wide_labels(target, xp, name="target")
    ignored: Tensor = _validate.ignored(target, ignore_index, xp).reshape(-1)
    return torch.where(ignored, -1, wide.reshape(-1)), ignored


class _TokenLogProbs(torch.autograd.Function):
    """(log p_y, H) per row of (rows, V) logits and their gradient written out
    (:mod:`crossentropy.torch._tokens`): by the C kernel (``fused``) or as torch operations
    a block of rows at a time. ``target`` is int64, -1 where there is none; ``ignored``
    rows give 0 and a zero gradient."""

    @staticmethod
    def forward(
        logits: Tensor, target: Tensor, ignored: Tensor, temperature: float, fused: bool
    ) -> tuple[Tensor, Tensor, TokenStatistics]:
        if fused:  # the kernel splits the rows over threads itself
            stats = _kernel.token_statistics(logits, target, temperature)
        else:
            stats = _swept_statistics(logits, target, temperature)
        log_prob, entropy = token_outputs(stats)
        log_prob = torch.where(ignored, 0.0, log_prob)
        entropy = torch.where(ignored, 0.0, entropy)
        return log_prob, entropy, stats

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        logits, target, ignored, temperature, fused = inputs
        ctx.save_for_backward(logits, target, ignored)
        ctx.stats = output[2]
        ctx.temperature = temperature
        ctx.fused = fused
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_log_prob: Tensor | None, grad_entropy: Tensor | None, _: Any
    ) -> tuple[Tensor | None, None, None, None, None]:
        logits, target, ignored = ctx.saved_tensors
        temperature: float = ctx.temperature
        if grad_log_prob is None and grad_entropy is None:
            return None, None, None, None, None
        if torch.is_grad_enabled():
            # create_graph=True: the reference's gradient as torch operations, differentiable
            with torch.enable_grad():
                log_prob, entropy = _reference(logits, target, ignored, temperature)
                pairs = [
                    (out, grad)
                    for out, grad in ((log_prob, grad_log_prob), (entropy, grad_entropy))
                    if grad is not None
                ]
                (grad,) = torch.autograd.grad(
                    [out for out, _ in pairs], logits, [g for _, g in pairs], create_graph=True
                )
            return grad.to(logits.dtype), None, None, None, None
        grad = _gradient(
            logits, target, ignored, ctx.stats, temperature, grad_log_prob, grad_entropy, ctx.fused
        )
        return grad, None, None, None, None


def _swept_statistics(logits: Tensor, target: Tensor, temperature: float) -> TokenStatistics:
    """The whole rows' statistics as torch operations, a block of rows at a time."""
    rows, classes = logits.shape
    parts = [
        token_statistics(logits[start:stop], target[start:stop], temperature)
        for start, stop in row_blocks(rows, classes)
    ]
    if not parts:
        return token_statistics(logits, target, temperature)
    return TokenStatistics(
        *(torch.cat([getattr(part, name) for part in parts]) for name in _FIELDS)
    )


_FIELDS = ("peak", "mass", "spread", "target")


def _gradient(
    logits: Tensor,
    target: Tensor,
    ignored: Tensor,
    stats: TokenStatistics,
    temperature: float,
    grad_log_prob: Tensor | None,
    grad_entropy: Tensor | None,
    fused: bool,
) -> Tensor:
    """d(sum g log p_y + h H)/d logits in the logits' dtype: by the C kernel in one pass
    (``fused``), or a block of rows at a time as torch operations."""
    rows, classes = logits.shape
    dtype = compute_dtype(logits.dtype)
    zero = logits.new_zeros(rows, dtype=dtype)
    g = zero if grad_log_prob is None else torch.where(ignored, 0.0, grad_log_prob.to(dtype))
    h = zero if grad_entropy is None else torch.where(ignored, 0.0, grad_entropy.to(dtype))
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
    if fused:
        return _kernel.token_gradient(logits, target, stats, temperature, g, h, out=grad)
    blocks = row_blocks(rows, classes)
    # float32/float64: written straight into the gradient; half: through a float32 buffer
    buffer = None
    if logits.dtype != dtype and blocks:
        buffer = logits.new_empty((blocks[0][1], classes), dtype=dtype)
    for start, stop in blocks:
        block = slice(start, stop)
        part = TokenStatistics(*(getattr(stats, name)[block] for name in _FIELDS))
        into = grad[block] if buffer is None else buffer[: stop - start]
        logit_gradient(
            logits[block], target[block], part, temperature, g[block], h[block], out=into
        )
        if buffer is not None:
            grad[block].copy_(into)
    return grad


def _reference(
    logits: Tensor, target: Tensor, ignored: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """``impl="torch"``: (log p_y, H) of (rows, V) logits as torch operations under
    autograd, in the compute dtype: log p = (u - shift) - log sum e^(u - shift) with the
    library's shift (0 where the row's maximum is not finite), H = -sum p log p with
    p log p = 0 where p = 0. Ignored rows are computed on zeros and give 0."""
    classes = logits.shape[1]
    dtype = compute_dtype(logits.dtype)
    if classes == 0:  # every row ignored (no class id exists)
        nothing = logits.sum(dim=1, dtype=dtype) * 0.0
        return nothing, nothing
    u = torch.where(ignored.unsqueeze(1), 0.0, logits.to(dtype) / temperature)
    shift, log_sum = shift_and_log_sum(u, 1, array_api_compat.array_namespace(u))
    log_p = (u - shift) - log_sum
    picked = log_p.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1)
    p = torch.exp(log_p)
    entropy = -(p * torch.where(p > 0, log_p, 0.0)).sum(dim=1)
    return torch.where(ignored, 0.0, picked), torch.where(ignored, 0.0, entropy)


def _fused_takes(x: Tensor) -> bool:
    """Whether the C kernel runs over these (rows, V) logits: a CPU tensor of a dtype it
    takes, the kernel loadable here."""
    return x.device.type == "cpu" and x.dtype in _kernel.KERNELS and _kernel.fused_available()


def _run(
    x: Tensor, target: Tensor, ignored: Tensor, temperature: float, impl: str
) -> tuple[Tensor, Tensor]:
    """(log p_y, H) of (rows, V) logits by the path ``impl`` names (``"auto"``: the
    Triton kernels on CUDA, the C kernel on CPU where it loads, else the block sweep; the
    reference under ``torch.func`` transforms)."""
    if impl == "torch" or conventions.transformed(x):
        return _reference(x, target, ignored, temperature)
    if impl == "triton" or (impl == "auto" and dispatch.triton_available(x.device)):
        kernels = dispatch.triton_module()  # the Triton kernels (CUDA)
        return kernels.row_log_probs(x, target, ignored, temperature)  # type: ignore[no-any-return]
    fused = impl == "fused"
    if fused and not _fused_takes(x):
        reason = _kernel.unavailable_reason() or (
            f"it takes float32, float64, float16 or bfloat16 CPU logits; got "
            f"{x.dtype} on {x.device.type}"
        )
        raise ValueError(f"impl='fused': the C token kernel cannot run here: {reason}")
    if impl == "auto":
        fused = _fused_takes(x)
    if fused and x.shape[1] > 1 and x.stride(1) != 1:
        x = x.contiguous()  # the kernel reads rows of consecutive classes
    log_prob, entropy, _ = _TokenLogProbs.apply(x, target, ignored, temperature, fused)  # type: ignore[no-untyped-call]
    return log_prob, entropy


def token_log_probs(
    logits: Tensor,
    target: Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
    impl: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    r"""The log-probability of each target token, and the entropy of each softmax.

    .. math::

        \log p_{iy} = \log \operatorname{softmax}(z_i / T)_{y_i}, \qquad
        H_i = -\sum_v p_{iv} \log p_{iv}

    in nats. Both are differentiable with respect to the logits, for incoming gradients on
    each at once (``(advantage * log_probs).sum() + beta * entropy.sum()``); the gradient
    of the entropy is -p (log p + H) / T. ±inf and NaN logits: as for cross entropy (a
    target beside a +inf logit has log-probability -inf; the module
    :mod:`crossentropy.torch._tokens` lists every case); the entropy of a one-hot softmax
    is exactly 0, and no entropy is negative.

    Args:
        logits: (..., V) floating-point logits, any leading dimensions ((N, V) and (V,)
            included), on any device.
        target: integer class ids of the leading shape (...), in [0, V) or
            ``ignore_index``, on the logits' device.
        temperature: T, finite and > 0; the logits are divided by it.
        ignore_index: the target value of positions to skip: their log-probability and
            entropy are 0, with a zero gradient.
        return_entropy: also return the entropy.
        impl: ``"auto"`` (the Triton kernels for CUDA tensors where Triton is installed;
            ``"fused"`` on CPU where the C kernel loads; else the logits swept a block of
            rows at a time as torch operations, the backward written out), ``"fused"``
            (the C kernel over CPU rows: the statistics in one sweep of each row, the
            gradient in one more), ``"triton"`` (:func:`crossentropy.triton.row_log_probs`)
            or ``"torch"`` (the readable reference under autograd).

    Returns:
        The log-probabilities shaped like ``target``, float32 for float32/bfloat16/float16
        logits, float64 for float64; with ``return_entropy``, ``(log_probs, entropy)``.

    Example:
        >>> import torch
        >>> from crossentropy.torch import token_log_probs
        >>> logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
        >>> log_probs, entropy = token_log_probs(
        ...     logits, torch.tensor([0, -100]), return_entropy=True
        ... )
        >>> print(log_probs.round(decimals=4).tolist(), entropy.round(decimals=4).tolist())
        [-0.417, 0.0] [0.8467, 0.0]
    """
    t = _validate.temperature(temperature)
    ignore_index = _validate.ignore_index(ignore_index)
    entropy_too = _validate.flag("return_entropy", return_entropy)
    chosen = _impl(impl, "token_log_probs")
    logits = _check_logits(logits)
    ids, ignored = _check_target(target, logits, ignore_index)
    classes = logits.shape[-1]
    log_prob, entropy = _run(logits.reshape(ids.shape[0], classes), ids, ignored, t, chosen)
    shape = tuple(logits.shape[:-1])
    if entropy_too:
        return log_prob.reshape(shape), entropy.reshape(shape)
    return log_prob.reshape(shape)


def softmax_entropy(logits: Tensor, dim: int = -1, *, temperature: float = 1.0) -> Tensor:
    r"""The entropy of the softmax of the logits along ``dim``, in nats.

    .. math::

        H = -\sum_v p_v \log p_v, \qquad p = \operatorname{softmax}(z / T)

    computed as :func:`token_log_probs` computes its entropy (a block of rows at a time,
    the gradient -p (log p + H) / T written out); never negative, exactly 0 for a one-hot
    softmax; NaN for a row with a +inf or NaN logit, or every logit -inf.

    Args:
        logits: floating-point logits with at least one class along ``dim``.
        dim: the class axis.
        temperature: T, finite and > 0.

    Returns:
        The entropy, the logits' shape without ``dim``: float32 for
        float32/bfloat16/float16 logits, float64 for float64.

    Example:
        >>> import torch
        >>> from crossentropy.torch import softmax_entropy
        >>> print(softmax_entropy(torch.zeros(2, 4)).tolist())  # log 4
        [1.3862943649291992, 1.3862943649291992]
    """
    t = _validate.temperature(temperature)
    logits = _check_logits(logits)
    if isinstance(dim, bool) or not isinstance(dim, int) or not -logits.ndim <= dim < logits.ndim:
        raise ValueError(
            f"dim: expected an axis of the logits of shape {tuple(logits.shape)}, an integer "
            f"in [{-logits.ndim}, {logits.ndim}); got {dim!r}"
        )
    moved = logits.movedim(dim, -1)
    classes = moved.shape[-1]
    if classes == 0:
        raise ValueError(
            f"logits: expected at least one class along dim={dim} (the softmax of nothing "
            f"is no distribution); got shape {tuple(logits.shape)}"
        )
    x = moved.reshape(-1, classes)
    none = torch.full((x.shape[0],), -1, dtype=torch.int64, device=x.device)
    kept = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    _, entropy = _run(x, none, kept, t, "auto")
    return entropy.reshape(tuple(moved.shape[:-1]))
