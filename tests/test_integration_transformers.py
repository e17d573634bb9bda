"""crossentropy.integrations.transformers against the unpatched transformers models.

Offline: tiny randomly initialised models built from configs (no downloads). The patched
model's loss and every parameter's gradient equal the unpatched model's (float32), and the
float64 loss computed from the unpatched model's own logits (transformers computes its loss
in float32, so in float64 the reference is taken from its logits); the peak memory of a
training step is measured in a fresh subprocess and is lower than the unpatched model's.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from crossentropy.integrations.transformers import (  # noqa: E402
    apply_linear_cross_entropy,
    remove_linear_cross_entropy,
)

F = torch.nn.functional
VOCAB = 512
SMALL = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}
# (config class, model class, extra config): the logit post-processing each family has
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    # a soft-cap small enough to bend the logits of an untrained model
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"final_logit_softcapping": 0.5}),
    "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 0.25}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"logits_scaling": 4.0}),
}


def _model(family: str, dtype: Any = None, **extra: Any) -> Any:
    config_name, model_name, family_extra = FAMILIES[family]
    if not hasattr(transformers, model_name):
        pytest.skip(f"this transformers has no {model_name}")
    config = getattr(transformers, config_name)(**SMALL, **family_extra, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config)
    if family == "gemma2":  # larger output weights, so that the soft-cap matters
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(20.0)
    if dtype is not None:
        model = model.to(dtype)
    return model


def _batch(batch: int = 2, seq: int = 24) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
    labels = input_ids.clone()
    labels[0, :5] = -100  # a prompt that is not trained on
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, seq - 4 :] = 0  # right padding, not trained on either
    labels[-1, seq - 4 :] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _pair(family: str, dtype: Any = None, **extra: Any) -> tuple[Any, Any]:
    reference = _model(family, dtype, **extra)
    return reference, apply_linear_cross_entropy(copy.deepcopy(reference))


def _reference_loss64(model: Any, batch: dict[str, Any]) -> Any:
    """The causal LM loss in float64 from the unpatched model's own logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.dtype == torch.float64
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=-100,
    )


def _assert_same_grads(reference: Any, patched: Any, rtol: float) -> float:
    """Every parameter's gradient equal, relative to that gradient's largest entry."""
    worst = 0.0
    ours = dict(patched.named_parameters())
    for name, p in reference.named_parameters():
        q = ours[name]
        assert p.grad is not None and q.grad is not None, name
        scale = p.grad.abs().max().item()
        error = (p.grad - q.grad).abs().max().item()
        assert error <= rtol * scale, (name, error, scale)
        worst = max(worst, error / scale if scale else error)
    return worst


@pytest.mark.parametrize("family", list(FAMILIES))
def test_float32_loss_and_gradients_equal_the_unpatched_model(family: str) -> None:
    reference, patched = _pair(family)
    batch = _batch()
    expected = reference(**batch)
    out = patched(**batch)
    assert out.logits is None
    assert expected.logits is not None
    torch.testing.assert_close(out.loss, expected.loss, rtol=1e-5, atol=0)
    expected.loss.backward()
    out.loss.backward()
    _assert_same_grads(reference, patched, rtol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_float64_loss_and_gradients_equal_the_unfused_loss_on_the_models_logits(
    family: str,
) -> None:
    reference, patched = _pair(family, torch.float64)
    batch = _batch()
    expected = _reference_loss64(reference, batch)
    out = patched(**batch)
    assert out.loss.dtype == torch.float64
    torch.testing.assert_close(out.loss, expected, rtol=1e-7, atol=0)
    expected.backward()
    out.loss.backward()
    _assert_same_grads(reference, patched, rtol=1e-7)


def test_bfloat16_loss_is_float32_and_gradients_match() -> None:
    """linear_cross_entropy returns its input's dtype: the loss value carries bfloat16
    rounding (relative 2**-8), the gradients do not."""
    reference, patched = _pair("llama", torch.bfloat16)
    batch = _batch(seq=64)
    expected = reference(**batch)
    out = patched(**batch)
    assert out.loss.dtype == expected.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, expected.loss, rtol=2**-8, atol=0)
    expected.loss.backward()
    out.loss.backward()
    _assert_same_grads(reference, patched, rtol=2e-2)


def test_the_soft_cap_matters_in_the_gemma2_test() -> None:
    """Without the soft-cap the loss would differ: the Gemma 2 test checks something."""
    model = _model("gemma2", torch.float64)
    batch = _batch()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.abs().max() > 0.4  # close to the cap 0.5
    model.config.final_logit_softcapping = None
    uncapped = _reference_loss64(model, batch)
    model.config.final_logit_softcapping = 0.5
    capped = _reference_loss64(model, batch)
    assert abs(uncapped.item() - capped.item()) > 1e-3


def test_logits_are_never_computed_for_all_positions() -> None:
    """The output embeddings see one position per sequence on the first call (the check of
    the model's logit post-processing), none afterwards."""
    model = apply_linear_cross_entropy(_model("llama"))
    shapes: list[tuple[int, ...]] = []
    head = model.get_output_embeddings()
    handle = head.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    try:
        batch = _batch()
        model(**batch).loss.backward()
        model(**batch).loss.backward()
        model(input_ids=batch["input_ids"])
    finally:
        handle.remove()
    assert shapes == [(2, 1, VOCAB), (2, 0, VOCAB), (2, 24, VOCAB)]


def test_without_labels_the_model_is_unchanged() -> None:
    reference, patched = _pair("llama")
    batch = _batch()
    del batch["labels"]
    expected = reference(**batch)
    out = patched(**batch)
    assert out.loss is None
    assert torch.equal(out.logits, expected.logits)
    assert inspect.signature(patched.forward) == inspect.signature(reference.forward)
    assert patched.state_dict().keys() == reference.state_dict().keys()
    ids = batch["input_ids"][:1, :4]
    generated = reference.generate(ids, max_new_tokens=3, do_sample=False)
    assert torch.equal(patched.generate(ids, max_new_tokens=3, do_sample=False), generated)


def test_num_items_in_batch_return_dict_and_positional_labels() -> None:
    reference, patched = _pair("llama")
    batch = _batch()
    items = torch.tensor(17)
    torch.testing.assert_close(
        patched(**batch, num_items_in_batch=items).loss,
        reference(**batch, num_items_in_batch=items).loss,
        rtol=1e-5,
        atol=0,
    )
    loss = reference(**batch).loss
    as_tuple = patched(**batch, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], loss, rtol=1e-5, atol=0)
    # LlamaForCausalLM.forward(input_ids, attention_mask, position_ids, past_key_values,
    # inputs_embeds, labels, ...)
    positional = patched(
        batch["input_ids"], batch["attention_mask"], None, None, None, batch["labels"]
    )
    torch.testing.assert_close(positional.loss, loss, rtol=1e-5, atol=0)


def test_shift_labels_and_all_ignored() -> None:
    reference, patched = _pair("llama")
    batch = _batch()
    shift = torch.roll(batch["labels"], -1, dims=1)
    shift[:, -1] = -100
    kwargs = {"input_ids": batch["input_ids"], "labels": batch["labels"], "shift_labels": shift}
    torch.testing.assert_close(patched(**kwargs).loss, reference(**kwargs).loss, rtol=1e-5, atol=0)
    nothing = torch.full_like(batch["labels"], -100)
    assert patched(input_ids=batch["input_ids"], labels=nothing).loss.item() == 0.0


def test_mixture_of_experts_aux_loss_is_added() -> None:
    if not hasattr(transformers, "MixtralForCausalLM"):
        pytest.skip("this transformers has no MixtralForCausalLM")
    config = transformers.MixtralConfig(
        **SMALL, num_local_experts=4, num_experts_per_tok=2, output_router_logits=True
    )
    torch.manual_seed(0)
    reference = transformers.MixtralForCausalLM(config)
    patched = apply_linear_cross_entropy(copy.deepcopy(reference))
    batch = _batch()
    expected = reference(**batch)
    out = patched(**batch)
    assert expected.aux_loss is not None
    torch.testing.assert_close(out.aux_loss, expected.aux_loss)
    torch.testing.assert_close(out.loss, expected.loss, rtol=1e-5, atol=0)


def test_remove_deepcopy_and_apply_twice() -> None:
    model = _model("llama")
    batch = _batch()
    reference = model(**batch).loss
    apply_linear_cross_entropy(model, chunk_size=7)
    assert apply_linear_cross_entropy(model, chunk_size=5) is model  # replaces the options
    clone = copy.deepcopy(model)
    assert clone.forward.__self__ is clone  # the copy runs its own parameters
    torch.testing.assert_close(clone(**batch).loss, reference, rtol=1e-5, atol=0)
    assert remove_linear_cross_entropy(model) is model
    assert "forward" not in model.__dict__
    out = model(**batch)
    assert out.logits is not None
    torch.testing.assert_close(out.loss, reference, rtol=0, atol=0)
    assert remove_linear_cross_entropy(model) is model  # unpatched: unchanged


def test_errors() -> None:
    model = _model("llama")
    with pytest.raises(ValueError, match="output embeddings"):
        apply_linear_cross_entropy(model.model)  # LlamaModel: no lm_head
    with pytest.raises(TypeError, match="model"):
        apply_linear_cross_entropy(object())
    with pytest.raises(
        ValueError, match="impl: expected one of 'auto', 'torch', 'fused', 'triton'"
    ):
        apply_linear_cross_entropy(model, impl="cuda")
    with pytest.raises(ValueError, match="chunk_size"):
        apply_linear_cross_entropy(model, chunk_size=0)
    batch = _batch()
    apply_linear_cross_entropy(model)
    with pytest.raises(ValueError, match="labels"):
        model(**batch, logits_to_keep=1)  # one position kept, a whole sequence of labels

    # logits post-processed in a way the integration does not know: an error, not a wrong loss
    other = apply_linear_cross_entropy(_model("llama"))
    other.get_output_embeddings().register_forward_hook(lambda m, i, o: o * 3.0)
    with pytest.raises(RuntimeError, match="post-processes its logits"):
        other(**batch)


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (lambda ids: ids.tolist(), "labels: expected a tensor of integer token ids; got list"),
        (
            lambda ids: ids.float(),
            "labels: expected a tensor of integer token ids; got torch.float32",
        ),
        (lambda ids: ids > 3, "labels: expected a tensor of integer token ids; got torch.bool"),
    ],
)
def test_labels_that_are_not_token_ids_are_refused(labels: Any, match: str) -> None:
    model = apply_linear_cross_entropy(_model("llama"))
    batch = _batch()
    with pytest.raises(TypeError, match=match):
        model(input_ids=batch["input_ids"], labels=labels(batch["labels"]))


def test_autocast_loss_follows_the_unpatched_model() -> None:
    """Under autocast the unpatched model's lm_head runs in bfloat16 and its loss in
    float32; the patched model's product is bfloat16 too, so it moves with it."""
    reference, patched = _pair("llama")
    batch = _batch(seq=64)
    exact = reference(**batch).loss.detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(**batch)
        out = patched(**batch)
    assert out.loss.dtype == expected.loss.dtype == torch.float32
    rounding = (expected.loss - exact).abs().item()
    assert rounding > 0
    assert (out.loss - expected.loss).abs().item() <= 0.1 * rounding
    expected.loss.backward()
    out.loss.backward()
    _assert_same_grads(reference, patched, rtol=2e-2)


def test_gradient_penalty_through_the_patched_model() -> None:
    """Double backward (float64, eager attention): the penalty on the gradients of the
    output layer and the final norm, differentiated for every parameter, equals the one
    through the unfused float64 loss on the model's own logits."""
    reference, patched = _pair("llama", torch.float64, attn_implementation="eager")
    batch = _batch()
    for model, loss in (
        (reference, _reference_loss64(reference, batch)),
        (patched, patched(**batch).loss),
    ):
        params = [model.get_output_embeddings().weight, model.model.norm.weight]
        grads = torch.autograd.grad(loss, params, create_graph=True)
        sum((g * g).sum() for g in grads).backward()
    _assert_same_grads(reference, patched, rtol=1e-7)


def test_missing_transformers_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="pip install transformers"):
        apply_linear_cross_entropy(torch.nn.Linear(2, 2))


# ------------------------------------------------------------------------ peak memory

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import gc, json, re, sys
    import torch, transformers
    from crossentropy.integrations.transformers import apply_linear_cross_entropy

    def status(key):
        with open("/proc/self/status") as f:
            return int(re.search(rf"^{key}:\\s+(\\d+)", f.read(), re.M).group(1))

    config = transformers.LlamaConfig(vocab_size=32000, hidden_size=64,
        intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2)
    ids = torch.randint(0, 32000, (2, 512), generator=torch.Generator().manual_seed(0))
    result = {}
    for name in sys.argv[1:]:
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(config)
        if name == "ours":
            apply_linear_cross_entropy(model)
        losses = []
        for step in range(2):  # a warm-up step, then the measured one
            model.zero_grad(set_to_none=False)
            gc.collect()
            before = status("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            peak = status("VmHWM")
            losses.append(out.loss.item())
            del out
        result[name] = {"peak_extra_kib": peak - before, "loss": losses[-1]}
        del model
        gc.collect()
    print(json.dumps(result))
    """
)


def test_peak_memory_is_lower_than_the_unpatched_model() -> None:
    """Peak RSS of a training step at a shape where the logits dominate (2 x 512 tokens,
    vocabulary 32000: 131 MB of float32 logits), each model after a warm-up step with its
    gradients allocated, in a fresh subprocess (VmHWM reset through /proc/self/clear_refs;
    blocks over 64 KiB served by mmap so freed memory leaves the process)."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    run = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, "ours", "unpatched"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    ours, unpatched = result["ours"], result["unpatched"]
    print(result)
    assert ours["loss"] == pytest.approx(unpatched["loss"], rel=1e-5)
    logits_kib = 2 * 512 * 32000 * 4 // 1024
    assert unpatched["peak_extra_kib"] > logits_kib  # the measurement sees the logits
    assert ours["peak_extra_kib"] < unpatched["peak_extra_kib"] / 2
    assert ours["peak_extra_kib"] < logits_kib / 2
