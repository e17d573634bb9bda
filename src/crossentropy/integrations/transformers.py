"""Hugging Face ``transformers`` causal language models trained without their logits.

:func:`apply_linear_cross_entropy` makes a causal language model from ``transformers``
(``LlamaForCausalLM``, ``Gemma2ForCausalLM``, ``CohereForCausalLM``, ``MistralForCausalLM``, ...)
compute its training loss from its final hidden states with
:func:`crossentropy.torch.linear_cross_entropy`, which never holds the (tokens x vocabulary)
logits nor their gradient, the largest tensors of training at large vocabularies.
:func:`remove_linear_cross_entropy` undoes it.

:func:`causal_lm_token_log_probs` gives a causal LM's shifted per-token log-probabilities
(and entropies), as reinforcement learning needs them, from the same final hidden states
and output layer by :func:`crossentropy.torch.linear_token_log_probs`, without the logits
and without patching the model.

What the patched model computes, when it is given ``labels``:

.. math::

    \\ell = \\frac{1}{|T|} \\sum_{t \\in T}
        \\Bigl(\\log \\sum_{v} e^{z_{t,v}} - z_{t, y_{t+1}}\\Bigr), \\qquad
    z_t = c \\tanh\\Bigl(\\frac{s\\,(W h_t + b)}{c}\\Bigr)

the model's own causal language-modelling loss: position ``t`` predicts the label at ``t + 1``
(the labels are shifted inside, as ``transformers`` does; ``shift_labels=`` is honoured),
``T`` are the positions whose shifted label is not ``ignore_index`` (-100), ``h_t`` the final
hidden state, ``W``/``b`` the output embeddings (``lm_head``), ``s`` the model's logit
scale (``logit_scale``, as in Cohere; ``1 / logits_scaling``, as in Granite) and ``c`` its
final-logit soft-cap (``final_logit_softcapping``, as in Gemma 2), each where it has one.
With ``num_items_in_batch=`` (the gradient-accumulation normaliser that ``transformers``'
``Trainer`` passes) the sum is divided by it instead of ``|T|``; a mixture-of-experts
model's ``router_aux_loss_coef * aux_loss`` is added, as its own forward does.

How: the model's own forward runs unchanged, with ``labels=None``, while a forward pre-hook
on the output embeddings records the final hidden states it is given and passes it no
position (one position per sequence on the first call, to check that the model's logits are
``c tanh(s (W h + b) / c)`` of those hidden states; a model that post-processes its logits
in another way gets a ``RuntimeError`` rather than a wrong loss). The loss is then
``linear_cross_entropy`` of the recorded hidden states.

Differences from the unpatched model, all when ``labels`` are given:

- the output's ``logits`` is ``None`` (and absent from the tuple form, ``return_dict=False``);
  call the model without ``labels`` for logits, e.g. in generation or evaluation;
- a mean over no labelled position is 0, not NaN;
- half-precision models get a float32 loss, as before, but its value has been rounded to
  the model's dtype by ``linear_cross_entropy`` (which returns its input's dtype, as
  ``torch.nn.functional.cross_entropy`` does), so it can differ from the unpatched float32
  loss by that rounding (about 0.4% in bfloat16); the gradients are not affected;
- a float64 model gets a float64 loss (``transformers`` computes it in float32).

Under ``torch.autocast`` the output layer's product runs in the autocast dtype and the loss
in float32, as in the unpatched model; a gradient penalty (``create_graph=True``) through
the loss is differentiated as in the unpatched model.

Without ``labels`` the model's forward is called exactly as before. The patch lives on the
model instance (its ``forward`` attribute), survives ``copy.deepcopy``, changes neither the
forward's signature (which ``Trainer`` and ``generate`` inspect) nor the ``state_dict``.
For a PEFT model, apply it to the ``transformers`` model inside
(``peft_model.get_base_model()``).

Needs ``transformers`` (``pip install transformers``), imported on the first call.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import types
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

    from ..torch.dispatch import Impl

__all__ = [
    "apply_linear_cross_entropy",
    "causal_lm_token_log_probs",
    "remove_linear_cross_entropy",
]

_ModelT = TypeVar("_ModelT")

_ATTRIBUTE = "_crossentropy_linear_cross_entropy"


@dataclasses.dataclass
class _Patch:
    """What :func:`apply_linear_cross_entropy` stored on a model."""

    function: Callable[..., Any]  # the function bound as the model's ``forward``
    previous: Any  # the instance attribute ``forward`` it replaced, or None
    labels_position: int | None  # index of ``labels`` among the forward's positionals
    pass_return_dict: bool  # the forward accepts ``return_dict=``
    scale: float  # s: logits = s * (W h + b) before the soft-cap
    softcap: float | None  # c
    chunk_size: int | None
    impl: Impl
    verified: bool = False  # the first call with labels checked the model's logits


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "crossentropy.integrations.transformers needs Hugging Face transformers, which is "
            "not installed; install it with: pip install transformers"
        ) from error
    return transformers


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"a logit scale or soft-cap of {type(value).__name__} {value!r}: "
            "apply_linear_cross_entropy accepts a model whose logit scale and soft-cap are "
            "plain numbers"
        )
    return float(value)


def _logit_transform(model: Any) -> tuple[float, float | None]:
    """The model's ``(s, c)``: logits = c tanh(s (W h + b) / c)."""
    config = getattr(model, "config", None)
    text_config = config
    if config is not None and callable(getattr(config, "get_text_config", None)):
        text_config = config.get_text_config()

    def lookup(name: str) -> float | None:
        value = getattr(model, name, None)  # Cohere keeps ``self.logit_scale``
        if value is None:
            value = getattr(text_config, name, None)
        return _number(value)

    scale = 1.0
    logit_scale = lookup("logit_scale")  # Cohere: logits * logit_scale
    if logit_scale is not None:
        scale *= logit_scale
    logits_scaling = lookup("logits_scaling")  # Granite: logits / logits_scaling
    if logits_scaling is not None:
        scale /= logits_scaling
    softcap = lookup("final_logit_softcapping")  # Gemma 2: c tanh(logits / c)
    if softcap is not None and not softcap > 0:
        softcap = None  # transformers' ``if softcap`` style: 0 means off
    return scale, softcap


def _output_embeddings(model: Any, caller: str = "apply_linear_cross_entropy") -> Any:
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is None:
        raise ValueError(
            f"model: {type(model).__name__} has no output embeddings "
            "(get_output_embeddings() is missing or returned None); "
            f"{caller} accepts a causal language model whose logits are "
            "computed by an lm_head linear layer, such as LlamaForCausalLM"
        )
    return head


def _head_parameters(
    model: Any, caller: str = "apply_linear_cross_entropy"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    import torch

    head = _output_embeddings(model, caller)
    weight = getattr(head, "weight", None)
    bias = getattr(head, "bias", None)
    if not (
        isinstance(weight, torch.Tensor) and weight.ndim == 2 and weight.dtype.is_floating_point
    ):
        raise ValueError(
            f"model: the output embeddings of {type(model).__name__} "
            f"({type(head).__name__}) have no floating-point (vocabulary, hidden) weight; "
            f"{caller} accepts an lm_head that is a linear layer "
            "(quantized heads are not supported)"
        )
    if bias is not None and not (isinstance(bias, torch.Tensor) and bias.ndim == 1):
        raise ValueError(
            f"model: the output embeddings of {type(model).__name__} have a bias that is not "
            "a (vocabulary,) tensor"
        )
    return weight, bias


def apply_linear_cross_entropy(
    model: _ModelT, *, chunk_size: int | None = None, impl: Impl = "auto"
) -> _ModelT:
    """Make a ``transformers`` causal LM compute its loss without materializing the logits.

    After this call, ``model(..., labels=labels)`` returns the same loss as before (the
    model's shifted causal language-modelling cross entropy, with its logit scaling and
    soft-capping, ``ignore_index=-100``, ``num_items_in_batch``) computed by
    :func:`crossentropy.torch.linear_cross_entropy` from the final hidden states, in chunks,
    and ``logits=None``. Without ``labels`` the model behaves exactly as before. The module
    docstring lists the details and the differences.

    Args:
        model: a causal language model from ``transformers`` (``*ForCausalLM``): it has
            output embeddings (``get_output_embeddings()``, the ``lm_head`` linear layer), a
            ``labels`` argument and ``transformers``' causal LM loss. Patched in place.
        chunk_size: tokens per chunk, passed to ``linear_cross_entropy``; ``None`` lets it
            choose from the shapes and a memory budget.
        impl: the path of ``linear_cross_entropy``, one of
            :data:`crossentropy.torch.dispatch.IMPLS`: ``"auto"``, ``"fused"`` (the C kernel
            over chunks of tokens, on CPU; ``"chunked"``, its earlier name, is accepted with a
            ``DeprecationWarning``), ``"triton"`` (CUDA) or ``"torch"`` (the unfused reference).

    Returns:
        The same ``model`` object, patched. Applying twice replaces the first patch's
        options.

    Raises:
        ImportError: ``transformers`` is not installed.
        ValueError: the model has no linear output embeddings, no ``labels`` argument, or
            another loss than the causal LM one; or a bad ``chunk_size``/``impl``.

    Example:

    >>> import math
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from crossentropy.integrations.transformers import (
    ...     apply_linear_cross_entropy, remove_linear_cross_entropy)
    >>> _ = torch.manual_seed(0)
    >>> config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
    ...     num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4)
    >>> model = LlamaForCausalLM(config)
    >>> input_ids = torch.randint(0, 128, (2, 16))
    >>> reference = model(input_ids, labels=input_ids).loss
    >>> model = apply_linear_cross_entropy(model)
    >>> out = model(input_ids, labels=input_ids)
    >>> out.logits is None, torch.allclose(out.loss, reference)
    (True, True)
    >>> abs(out.loss.item() - math.log(128)) < 0.1  # an untrained model: about log V
    True
    >>> out.loss.backward()
    >>> model(input_ids).logits.shape  # no labels: the logits, as before
    torch.Size([2, 16, 128])
    >>> model = remove_linear_cross_entropy(model)
    """
    _import_transformers()
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"model: a {type(model).__name__}; apply_linear_cross_entropy accepts a "
            "transformers model (a torch.nn.Module), such as LlamaForCausalLM"
        )
    from .. import _validate
    from ..torch import dispatch

    impl = dispatch.impl(impl, renamed=True)
    chunk_size = _validate.chunk_size(chunk_size)
    _head_parameters(model)

    cls_forward = type(model).forward
    parameters = list(inspect.signature(cls_forward).parameters.values())[1:]  # no self
    names = [p.name for p in parameters]
    if "labels" not in names:
        raise ValueError(
            f"model: {type(model).__name__}.forward takes no labels; apply_linear_cross_entropy "
            "accepts a causal language model (a *ForCausalLM class)"
        )
    labels_parameter = parameters[names.index("labels")]
    labels_position = (
        names.index("labels")
        if labels_parameter.kind
        in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        else None
    )
    _check_loss_function(model)

    if _ATTRIBUTE in model.__dict__:
        remove_linear_cross_entropy(model)

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _patched_forward(self, args, kwargs)

    # keeps the model's signature (Trainer and generate inspect it) and its docstring
    functools.update_wrapper(forward, cls_forward)
    scale, softcap = _logit_transform(model)
    patch = _Patch(
        function=forward,
        previous=model.__dict__.get("forward"),
        labels_position=labels_position,
        pass_return_dict="return_dict" in names
        or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters),
        scale=scale,
        softcap=softcap,
        chunk_size=chunk_size,
        impl=impl,
    )
    object.__setattr__(model, _ATTRIBUTE, patch)
    # a bound method (not a closure over the model), so copy.deepcopy rebinds it to the copy
    object.__setattr__(model, "forward", types.MethodType(forward, model))
    return model


def remove_linear_cross_entropy(model: _ModelT) -> _ModelT:
    """Undo :func:`apply_linear_cross_entropy`: the model computes its logits and loss again.

    Args:
        model: a model patched by :func:`apply_linear_cross_entropy` (an unpatched model is
            returned unchanged).

    Returns:
        The same ``model`` object.

    Raises:
        RuntimeError: the model's ``forward`` was replaced again after the patch (by another
            wrapper), so removing ours would drop that one too.
    """
    state = getattr(model, "__dict__", {})
    patch = state.get(_ATTRIBUTE)
    if patch is None:
        return model
    current = state.get("forward")
    if getattr(current, "__func__", None) is not patch.function:
        raise RuntimeError(
            f"model: the forward of this {type(model).__name__} was replaced after "
            "apply_linear_cross_entropy; remove that wrapper first"
        )
    if patch.previous is None:
        del state["forward"]
    else:
        state["forward"] = patch.previous
    del state[_ATTRIBUTE]
    return model


def _check_loss_function(model: Any) -> None:
    try:
        from transformers.loss.loss_utils import ForCausalLMLoss
    except ImportError:  # pragma: no cover - older transformers: nothing to compare with
        return
    loss_function = getattr(type(model), "loss_function", None)
    if loss_function is None:
        return
    own = model.loss_function
    if own is not ForCausalLMLoss:
        raise ValueError(
            f"model: {type(model).__name__} computes its loss with "
            f"{getattr(own, '__name__', own)!s}, not transformers' causal language-modelling "
            "loss (ForCausalLMLoss); apply_linear_cross_entropy reproduces only that one"
        )


def _patched_forward(model: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    patch: _Patch = model.__dict__[_ATTRIBUTE]
    call: Callable[..., Any] = (
        patch.previous
        if patch.previous is not None
        else functools.partial(type(model).forward, model)
    )
    position = patch.labels_position
    if "labels" in kwargs:
        labels = kwargs["labels"]
    elif position is not None and len(args) > position:
        labels = args[position]
    else:
        labels = None
    if labels is None:
        return call(*args, **kwargs)

    import torch
    from transformers.utils.generic import ModelOutput

    for name, value in (("labels", labels), ("shift_labels", kwargs.get("shift_labels"))):
        if value is not None and not (
            isinstance(value, torch.Tensor)
            and not value.is_floating_point()
            and not value.is_complex()
            and value.dtype != torch.bool
        ):
            shown = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
            raise TypeError(f"{name}: expected a tensor of integer token ids; got {shown}")

    if "labels" in kwargs:
        kwargs = {**kwargs, "labels": None}
    else:
        assert position is not None
        args = (*args[:position], None, *args[position + 1 :])
    return_dict = kwargs.pop("return_dict", None)
    as_tuple = return_dict is False or (
        return_dict is None
        and getattr(getattr(model, "config", None), "return_dict", True) is False
    )
    if patch.pass_return_dict:
        kwargs["return_dict"] = True

    head = _output_embeddings(model)
    weight, bias = _head_parameters(model)
    keep = 0 if patch.verified else 1
    seen: list[torch.Tensor] = []

    def keep_no_position(module: Any, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        if not inputs or not isinstance(inputs[0], torch.Tensor) or inputs[0].ndim < 2:
            raise RuntimeError(
                f"{type(model).__name__}: the output embeddings were called without a "
                "(..., positions, hidden) tensor as their first argument; "
                "apply_linear_cross_entropy cannot patch this model"
            )
        hidden = inputs[0]
        seen.append(hidden)
        n = min(keep, hidden.shape[-2])
        return (hidden.narrow(-2, hidden.shape[-2] - n, n), *inputs[1:])

    handle = head.register_forward_pre_hook(keep_no_position)
    try:
        output = call(*args, **kwargs)
    finally:
        handle.remove()

    if len(seen) != 1:
        raise RuntimeError(
            f"{type(model).__name__}: its forward called the output embeddings {len(seen)} "
            "times, not once; apply_linear_cross_entropy cannot patch this model"
        )
    if not (
        isinstance(output, ModelOutput)
        and dataclasses.is_dataclass(output)
        and {"loss", "logits"} <= {field.name for field in dataclasses.fields(output)}
    ):
        raise RuntimeError(
            f"{type(model).__name__}: its forward returned a {type(output).__name__}, not a "
            "transformers ModelOutput with loss and logits fields; "
            "apply_linear_cross_entropy cannot patch this model"
        )
    hidden = seen[0]
    if not patch.verified and hidden.shape[-2] > 0:
        _verify_logits(model, patch, hidden, weight, bias, output.get("logits"))
        patch.verified = True

    loss = _causal_lm_loss(hidden, labels, weight, bias, patch, kwargs)
    aux_loss = output.get("aux_loss")
    coefficient = getattr(model, "router_aux_loss_coef", None)
    if aux_loss is not None and coefficient is not None:  # as MixtralForCausalLM does
        loss = loss + coefficient * aux_loss.to(loss.device)

    fields = {key: value for key, value in output.items() if key not in ("loss", "logits")}
    result = type(output)(loss=loss, **fields)
    return result.to_tuple() if as_tuple else result


def _transform(logits: torch.Tensor, scale: float, softcap: float | None) -> torch.Tensor:
    import torch

    if scale != 1.0:
        logits = logits * scale
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def _verify_logits(
    model: Any,
    patch: _Patch,
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    logits: Any,
) -> None:
    """Check the model's logits for the last position against c tanh(s (W h + b) / c)."""
    import torch

    last = hidden.narrow(-2, hidden.shape[-2] - 1, 1).detach()
    with torch.no_grad():
        expected = _transform(
            torch.nn.functional.linear(last.to(weight.device), weight, bias).float(),
            patch.scale,
            patch.softcap,
        )
    what = f"scale {patch.scale:g}" + (
        f", soft-cap {patch.softcap:g}" if patch.softcap is not None else ""
    )
    problem = None
    if not isinstance(logits, torch.Tensor):
        problem = f"it returned logits of type {type(logits).__name__}"
    elif tuple(logits.shape) != tuple(expected.shape):
        problem = (
            f"its logits for one position have shape {tuple(logits.shape)}, "
            f"not {tuple(expected.shape)}"
        )
    else:
        half = weight.dtype in (torch.float16, torch.bfloat16)
        tolerance = 3e-2 if half else 1e-4
        error = (logits.detach().float().to(expected.device) - expected).abs().max().item()
        bound = tolerance * (1.0 + expected.abs().max().item())
        if not error <= bound or math.isnan(error):
            problem = f"its logits differ by up to {error:.3g} (tolerance {bound:.3g})"
    if problem is not None:
        raise RuntimeError(
            f"{type(model).__name__}: apply_linear_cross_entropy expected the model's logits to "
            f"be lm_head(final hidden states) with {what}, but {problem}; the model "
            "post-processes its logits in a way this integration does not reproduce. "
            "Call remove_linear_cross_entropy(model) to use the model's own loss."
        )


def _causal_lm_loss(
    hidden: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    patch: _Patch,
    kwargs: dict[str, Any],
) -> torch.Tensor:
    """transformers' ForCausalLMLoss, on the hidden states, by linear_cross_entropy."""
    import torch

    from crossentropy.torch import linear_cross_entropy

    ignore_index = kwargs.get("ignore_index", -100)
    shift_labels = kwargs.get("shift_labels")
    if shift_labels is None:  # position t predicts the label at t + 1
        padded = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)
        shift_labels = padded[..., 1:]
    x = hidden.reshape(-1, hidden.shape[-1]).to(weight.device)
    target = shift_labels.reshape(-1).to(weight.device)
    if x.shape[0] != target.shape[0]:
        raise ValueError(
            f"labels: {target.shape[0]} shifted labels for {x.shape[0]} positions of final "
            f"hidden states (labels {tuple(labels.shape)}, hidden states "
            f"{tuple(hidden.shape)}); give one label per position the model keeps "
            "(logits_to_keep)"
        )
    if patch.scale != 1.0:  # s (W h + b) = W (s h) + s b
        x = x * patch.scale
        if bias is not None:
            bias = bias * patch.scale
    num_items_in_batch = kwargs.get("num_items_in_batch")
    loss = linear_cross_entropy(
        x,
        weight,
        target,
        linear_bias=bias,
        ignore_index=ignore_index,
        reduction="mean" if num_items_in_batch is None else "sum",
        softcap=patch.softcap,
        chunk_size=patch.chunk_size,
        impl=patch.impl,
    )
    assert isinstance(loss, torch.Tensor)
    if loss.dtype in (torch.float16, torch.bfloat16):
        loss = loss.float()  # transformers computes its loss in float32
    if num_items_in_batch is not None:
        if isinstance(num_items_in_batch, torch.Tensor):
            num_items_in_batch = num_items_in_batch.to(loss.device)
        loss = loss / num_items_in_batch
    return loss


def causal_lm_token_log_probs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    labels: torch.Tensor | None = None,
    temperature: float = 1.0,
    return_entropy: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    r"""Per-token log-probabilities (and entropies) of a causal LM, without its logits.

    Position ``t`` predicts token ``t + 1``: with ``h_t`` the model's final hidden states,
    ``W``/``b`` its output embeddings (``lm_head``) and ``s`` its logit scale (where it has
    one),

    .. math::

        p_t = \operatorname{softmax}\bigl(s (W h_t + b) / T\bigr), \qquad
        \text{log\_probs}_{t} = \log p_{t, y_{t+1}}, \qquad
        \text{entropy}_{t} = -\sum_v p_{tv} \log p_{tv}

    for ``t = 0 .. seq_len - 2``, so both outputs have shape ``(batch, seq_len - 1)``:
    ``log_probs[:, t]`` is the log-probability of ``labels[:, t + 1]`` (the shifted
    log-probabilities of PPO/GRPO trainers, e.g. TRL's, which take ``logits[:, :-1]``: the
    last ``n`` columns are those of the last ``n`` tokens, e.g. a completion's). The first
    token has no log-probability, the last position no target.

    The model's base (``model.base_model``, e.g. ``LlamaModel``) runs to give the final
    hidden states; the output layer is never called: the log-probabilities come from
    :func:`crossentropy.torch.linear_token_log_probs` with its weight (and bias), which
    holds one chunk of logits at a time, never the (tokens x vocabulary) logits. Both
    outputs are differentiable with respect to the model's parameters, for any incoming
    gradients on each (e.g. ``(advantages * log_probs).sum() + beta * entropy.sum()``).

    A position gives 0 for both outputs, with zero gradient, where its target is not
    trained on: ``labels[:, t + 1] == -100``, or ``attention_mask`` is 0 at ``t + 1`` (a
    padded target) or at ``t`` (a padded context, e.g. left padding before the first real
    token, which has no prediction, as the first token of a sequence has none).

    The model runs in the mode it is in (call ``model.eval()`` for no dropout), without a
    cache. A logit scale (``logit_scale`` as in Cohere, ``logits_scaling`` as in Granite) is
    applied exactly; a model whose logits are soft-capped (``final_logit_softcapping``, as
    in Gemma 2) is refused, as ``linear_token_log_probs`` computes the log-softmax of the
    linear logits only.

    Args:
        model: a causal language model from ``transformers`` (``*ForCausalLM``) whose
            logits are ``lm_head(base_model(...).last_hidden_state)``, times its logit scale.
        input_ids: (batch, seq_len) integer token ids.
        attention_mask: (batch, seq_len), 1 for tokens and 0 for padding, or ``None``.
        labels: (batch, seq_len) integer token ids whose shifted values are the targets, -100
            where not trained on; ``None``: ``input_ids``.
        temperature: T, finite and > 0: the log-probabilities of softmax(logits / T).
        return_entropy: also return each position's entropy of softmax(logits / T).

    Returns:
        ``log_probs`` of shape (batch, seq_len - 1), or ``(log_probs, entropy)`` with
        ``return_entropy=True``; float32 for float32, bfloat16 and float16 models (never
        rounded to half precision: they feed ratios), float64 for float64 ones, in nats.

    Raises:
        ImportError: ``transformers`` is not installed.
        TypeError: ``model`` is not a ``torch.nn.Module``, or ``input_ids``,
            ``attention_mask`` or ``labels`` are not integer (or boolean mask) tensors.
        ValueError: the model has no base model or linear output embeddings, soft-caps its
            logits; or the shapes, labels or temperature are not accepted.

    Example:

    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from crossentropy.integrations.transformers import causal_lm_token_log_probs
    >>> _ = torch.manual_seed(0)
    >>> config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
    ...     num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4)
    >>> model = LlamaForCausalLM(config).eval()
    >>> input_ids = torch.randint(0, 128, (2, 16))
    >>> log_probs, entropy = causal_lm_token_log_probs(model, input_ids, return_entropy=True)
    >>> log_probs.shape
    torch.Size([2, 15])
    >>> logits = model(input_ids).logits[:, :-1]
    >>> reference = logits.log_softmax(-1).gather(-1, input_ids[:, 1:, None])[..., 0]
    >>> torch.allclose(log_probs, reference, atol=1e-5)
    True
    """
    _import_transformers()
    import torch

    from .. import _validate
    from ..torch import linear_token_log_probs

    caller = "causal_lm_token_log_probs"
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"model: a {type(model).__name__}; {caller} accepts a transformers causal "
            "language model (a torch.nn.Module), such as LlamaForCausalLM"
        )
    temperature = _validate.temperature(temperature)
    return_entropy = _validate.flag("return_entropy", return_entropy)
    _token_ids("input_ids", input_ids)
    if input_ids.ndim != 2:
        raise ValueError(
            f"input_ids: expected shape (batch, seq_len); got {tuple(input_ids.shape)}"
        )
    if labels is None:
        labels = input_ids
    else:
        _token_ids("labels", labels)
        _same_shape("labels", labels, input_ids)
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.is_floating_point():
            shown = (
                attention_mask.dtype
                if isinstance(attention_mask, torch.Tensor)
                else type(attention_mask).__name__
            )
            raise TypeError(f"attention_mask: expected an integer or boolean tensor; got {shown}")
        _same_shape("attention_mask", attention_mask, input_ids)

    base = getattr(model, "base_model", None)
    if not isinstance(base, torch.nn.Module) or base is model:
        raise ValueError(
            f"model: {type(model).__name__} has no base model (base_model) apart from "
            f"itself; {caller} accepts a causal language model with one, such as "
            "LlamaForCausalLM (whose base_model is a LlamaModel)"
        )
    scale, softcap = _logit_transform(model)
    if softcap is not None:
        raise ValueError(
            f"model: {type(model).__name__} soft-caps its logits (config "
            f"final_logit_softcapping={softcap:g}); {caller} computes the log-softmax of "
            "the output layer's linear logits (times a logit scale) only"
        )
    weight, bias = _head_parameters(model, caller)

    arguments: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    accepted = inspect.signature(base.forward).parameters
    if "use_cache" in accepted or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()
    ):
        arguments["use_cache"] = False
    output = base(**arguments)
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None and isinstance(output, tuple) and output:
        hidden = output[0]
    if not isinstance(hidden, torch.Tensor) or tuple(hidden.shape[:2]) != tuple(input_ids.shape):
        raise RuntimeError(
            f"{type(model).__name__}: its base model returned no (batch, seq_len, hidden) "
            f"last_hidden_state for input_ids of shape {tuple(input_ids.shape)}; "
            f"{caller} cannot read this model's final hidden states"
        )

    # position t predicts token t + 1; a padded target or context is not trained on
    target = labels[:, 1:].to(torch.int64)
    if attention_mask is not None:
        padded = (attention_mask[:, 1:] == 0) | (attention_mask[:, :-1] == 0)
        target = target.masked_fill(padded.to(target.device), -100)
    x = hidden[:, :-1].to(weight.device)
    if scale != 1.0:  # s (W h + b) = W (s h) + s b
        x = x * scale
        if bias is not None:
            bias = bias * scale
    return linear_token_log_probs(
        x,
        weight,
        target.to(weight.device),
        linear_bias=bias,
        temperature=temperature,
        ignore_index=-100,
        return_entropy=return_entropy,
    )


def _token_ids(name: str, value: Any) -> None:
    import torch

    if not (
        isinstance(value, torch.Tensor)
        and not value.is_floating_point()
        and not value.is_complex()
        and value.dtype != torch.bool
    ):
        shown = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
        raise TypeError(f"{name}: expected a tensor of integer token ids; got {shown}")


def _same_shape(name: str, value: torch.Tensor, input_ids: torch.Tensor) -> None:
    if tuple(value.shape) != tuple(input_ids.shape):
        raise ValueError(
            f"{name}: expected the shape of input_ids {tuple(input_ids.shape)}; "
            f"got {tuple(value.shape)}"
        )
