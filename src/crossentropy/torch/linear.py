r"""Linear + cross entropy for large vocabularies, without the (tokens x vocabulary) logits.

A language model's loss is ``cross_entropy(hidden @ W.T + b, targets)``; the logits and
their gradient are the largest tensors in training. :func:`linear_cross_entropy` is the
cross-entropy row head (:class:`crossentropy.torch.heads.CrossEntropyHead`, the fused C
kernel over whole rows) plus the vocabulary engine's sweep
(:func:`crossentropy.torch.engine.sweep`): the tokens in chunks, each chunk's logits in
one reusable buffer, the gradient written over them, then dh = G W, dW += G^T h and
db += sum_rows G, so the peak beyond the inputs and their gradients is one chunk of logits.

For a mean or a sum the gradients are complete after the forward (the incoming gradient is
a scalar, applied in the backward); for ``reduction="none"`` the forward computes only the
losses and the backward sweeps again with each token's incoming gradient as a row factor
of G, which is correct for any incoming gradient. The three matrix products are those of
the unfused computation; nothing is recomputed for a mean or a sum.

float16/bfloat16: the logits and input-gradient products run in the input dtype; the
log-sum-exp is computed in float32 by the kernel; the weight and bias gradients are
accumulated in float32 across chunks and rounded once at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import array_api_compat
import torch
from torch import Tensor

from .. import _validate
from .._array import wide_labels
from . import conventions, dispatch, engine
from . import functional as _functional
from ._slices import RowTerms
from .heads import CrossEntropyHead

__all__ = ["LinearCrossEntropyLoss", "check_shapes", "linear_cross_entropy", "logit_gradient"]


def _head(
    target: Tensor,
    weight: Tensor | None,
    options: dict[str, Any],
    vocabulary: int,
    compute: torch.dtype,
    *,
    scale: float,
    losses: Tensor | None = None,
    lse: Tensor | None = None,
) -> CrossEntropyHead:
    """The cross-entropy head over the whole vocabulary of ``weight``'s size, for the
    int64 ``target`` of every token of the sweep."""
    terms = RowTerms.of(
        target,
        weight,
        ignore_index=options["ignore_index"],
        classes=vocabulary,
        label_smoothing=options["label_smoothing"],
        z_loss=options["z_loss"],
        dtype=compute,
    )
    return CrossEntropyHead(
        terms,
        scale=scale,
        softcap=options["softcap"],
        ignore_index=options["ignore_index"],
        losses=losses,
        lse=lse,
        weight_sum=conventions.class_weight_sum(weight, vocabulary),
    )


class _LinearCrossEntropy(torch.autograd.Function):
    """Chunked linear + cross entropy; see the module docstring for the sweep.

    ``forward`` returns ``(loss, lse, scale, grad_input, grad_weight, grad_bias)``: for a
    mean or a sum the gradients are computed with the loss and handed to the backward as
    outputs (``setup_context`` form, so that ``torch.func`` can transform it); the caller
    keeps the first two. The backward has three cases:

    - grad mode on (``create_graph=True``, or a ``torch.func`` transform): the gradients
      as torch operations on the saved inputs (:func:`_differentiable_gradients`), which
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
        scale = conventions.mean_scale(target, weight, ignore_index, reduction)
        compute = torch.promote_types(input.dtype, torch.float32)
        losses = torch.empty(input.shape[0], dtype=torch.float64)
        lse = torch.empty(input.shape[0], dtype=torch.float64)
        now = wants if reduction != "none" else (False, False, False)
        head = _head(
            target, weight, options, vocabulary, compute, scale=scale, losses=losses, lse=lse
        )
        grads = engine.sweep(
            input, linear_weight, linear_bias, head, chunk=options["chunk_size"], wants=now
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
            return *engine.finish_gradients(grads, dtypes, grad_loss), *nothing
        needs = tuple(ctx.needs_input_grad[:3])
        target = target.to(torch.int64).contiguous()
        with torch.autocast(input.device.type, enabled=False):
            if grad_mode:
                factor = grad_loss * scale if reduced else grad_loss
                grads = _differentiable_gradients(
                    input, linear_weight, linear_bias, target, weight, options, factor, needs
                )
                return *grads, *nothing
            compute = torch.promote_types(input.dtype, torch.float32)
            vocabulary = linear_weight.shape[0]
            scale_now = float(scale) if reduced else 1.0
            head = _head(target, weight, options, vocabulary, compute, scale=scale_now)
            again = engine.sweep(
                input,
                linear_weight,
                linear_bias,
                head,
                chunk=options["chunk_size"],
                wants=needs,
                row_factor=None if reduced else grad_loss.double(),
            )
            return *engine.finish_gradients(again, dtypes, grad_loss if reduced else None), *nothing

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


def _differentiable_gradients(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    options: dict[str, Any],
    factor: Tensor,
    needs: tuple[bool, ...],
) -> engine.Gradients:
    """The gradients of input, weight and bias as torch operations: with G from
    :func:`logit_gradient`, dh = G W, dW = G^T h, db = sum_rows G."""
    g, h, w = logit_gradient(input, linear_weight, linear_bias, target, weight, options, factor)
    bias_dtype = () if linear_bias is None else (linear_bias.dtype,)
    dtypes = (input.dtype, linear_weight.dtype, *bias_dtype)
    return engine.differentiable_products(g, h, w, needs, dtypes)


def check_shapes(
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
    impl: dispatch.Impl = "auto",
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
            least 5, each chunk's logits at most 512 MiB:
            :func:`crossentropy.torch.engine.default_chunk_size`).
        impl: ``"fused"`` (this path: the C kernel over chunks of tokens; ``"chunked"``,
            its earlier name, is accepted with a ``DeprecationWarning``), ``"triton"`` (the
            Triton kernels of :mod:`crossentropy.triton.linear_cross_entropy_kernels`, logits
            only as on-chip tiles;
            CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``; ``chunk_size`` does
            not apply), ``"torch"`` (the unfused reference: the logits materialised, then
            :func:`crossentropy.torch.cross_entropy` with impl="torch"), ``"native"`` (the
            logits materialised, then torch's fused operations: impl="native" of
            :func:`crossentropy.torch.cross_entropy`), or ``"auto"``: triton for
            class-index targets on CUDA when Triton is installed, fused for class-index
            targets on CPU when the kernel is available, native for them where no kernel
            is (with one warning), torch otherwise
            (:func:`crossentropy.torch.dispatch.choose`).
        return_lse: also return each token's logsumexp of the (capped) logits, float32 of
            shape (...), 0 for ignored tokens.
        skip_small_gradients: ``impl="triton"`` only: skip the backward's tiles whose
            gradient is below the dtype's resolution (an approximation; ``False``, the
            default, is exact).

    Autograd conventions (the fused path): a backward with ``create_graph=True`` (a
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
    requested = dispatch.impl(impl, renamed=True)
    chunk_size = _validate.chunk_size(chunk_size)
    ignore_index = _validate.ignore_index(ignore_index)
    for name, flag in (("return_lse", return_lse), ("skip_small_gradients", skip_small_gradients)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected True or False; got {flag!r}")
    probabilities = check_shapes(input, linear_weight, target, linear_bias, weight)
    chosen = dispatch.choose(
        requested, input.device, triton_takes=not probabilities, fused_takes=not probabilities
    )
    if skip_small_gradients and chosen != "triton":
        raise ValueError(
            f"skip_small_gradients: True needs impl='triton' (the Triton kernels); got "
            f"impl={impl!r}, which runs {chosen!r}"
        )
    if probabilities and chosen in ("triton", "fused"):
        raise ValueError(
            f"impl={chosen!r}: takes class-index targets; probability targets (shape "
            f"{tuple(target.shape)}) use impl='torch' or impl='auto'"
        )
    if chosen == "fused" and input.device.type not in ("cpu", "meta"):
        raise ValueError(f"impl='fused': runs on CPU tensors; got device {input.device}")
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
        out = dispatch.triton_module().linear_cross_entropy(
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
    if chosen in ("torch", "native"):
        return _unfused(
            "native" if chosen == "native" else "torch",
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
        or engine.default_chunk_size(tokens, vocabulary, flat_input.element_size()),
    }
    wants = engine.wanted_gradients(input, linear_weight, linear_bias)
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
    impl: dispatch.Impl,
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
    """Materialise the logits (cast to ``loss_dtype``: float32 under autocast), then
    :func:`crossentropy.torch.cross_entropy` with ``impl``: ``"torch"``, the reference (the
    core under autograd), or ``"native"``, torch's fused operations (what ``"auto"`` runs
    when the kernel cannot be had)."""
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
        impl=impl,
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
        impl: dispatch.Impl = "auto",
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
