"""causal_lm_token_log_probs against the unpatched transformers models' own logits.

Offline: tiny randomly initialised models built from configs (no downloads), as in
test_integration_transformers.py. The reference is the shifted log-softmax of the model's
float32 logits, gathered at the next token, and the entropy from it, in float64; gradients
of a PPO/GRPO-style objective with an entropy term are compared with those through the
model's logits.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from crossentropy.integrations.transformers import causal_lm_token_log_probs  # noqa: E402

VOCAB = 256
SMALL = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}
# (config class, model class, extra config): no scale, a logit scale (times), a divisor
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 0.5}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"logits_scaling": 0.5}),
}


def _model(family: str, **extra: Any) -> Any:
    config_name, model_name, family_extra = FAMILIES[family]
    if not hasattr(transformers, model_name):
        pytest.skip(f"this transformers has no {model_name}")
    config = getattr(transformers, config_name)(**SMALL, **family_extra, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, model_name)(config).eval()
    with torch.no_grad():  # larger logits than an untrained model's, so the softmax is peaked
        model.get_output_embeddings().weight.mul_(30.0)
    return model


def _batch(batch: int = 3, seq: int = 12) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, VOCAB, (batch, seq), generator=g)
    labels = input_ids.clone()
    labels[0, :4] = -100  # a prompt that is not trained on
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, seq - 3 :] = 0  # right padding
    attention_mask[2, :2] = 0  # left padding
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _trained(batch: dict[str, Any]) -> Any:
    """(batch, seq_len - 1): position t predicts token t + 1, with both unpadded."""
    mask = batch["attention_mask"].bool()
    return (batch["labels"][:, 1:] != -100) & mask[:, 1:] & mask[:, :-1]


def _reference(
    model: Any, batch: dict[str, Any], temperature: float, dtype: Any
) -> tuple[Any, Any]:
    """log p(next token) and the entropy from the model's own logits, 0 where not trained."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert logits.dtype == torch.float32
    log_p = torch.log_softmax(logits[:, :-1].to(dtype) / temperature, dim=-1)
    keep = _trained(batch)
    target = batch["labels"][:, 1:].clamp(min=0)
    log_probs = log_p.gather(-1, target[..., None])[..., 0]
    entropy = -(log_p.exp() * log_p).sum(-1)
    zero = torch.zeros((), dtype=dtype)
    return torch.where(keep, log_probs, zero), torch.where(keep, entropy, zero)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_equal_to_the_models_own_logits(family: str, temperature: float) -> None:
    model = _model(family)
    batch = _batch()
    with torch.no_grad():
        expected_log_probs, expected_entropy = _reference(model, batch, temperature, torch.float64)
        # the output layer is never called: a hook on it would raise
        head = model.get_output_embeddings()
        handle = head.register_forward_pre_hook(lambda *_: pytest.fail("lm_head was called"))
        try:
            log_probs, entropy = causal_lm_token_log_probs(
                model,
                batch["input_ids"],
                batch["attention_mask"],
                labels=batch["labels"],
                temperature=temperature,
                return_entropy=True,
            )
        finally:
            handle.remove()
    assert log_probs.shape == entropy.shape == (3, 11)
    assert log_probs.dtype == entropy.dtype == torch.float32
    # the test means something: a peaked softmax, log-probs far from -log V and each other
    assert expected_entropy.max() < 0.8 * torch.log(torch.tensor(VOCAB)).item()
    torch.testing.assert_close(log_probs.double(), expected_log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy.double(), expected_entropy, rtol=1e-5, atol=1e-5)
    # padding (right and left) and -100 labels give exactly 0
    ignored = ~_trained(batch)
    # labels[0, 1:4]; targets 9..11 of row 1; targets 1 and 2 of row 2 (context padded)
    assert ignored.sum() == 3 + 3 + 2
    assert (log_probs[ignored] == 0).all() and (entropy[ignored] == 0).all()


@pytest.mark.parametrize("family", ["llama", "cohere"])
def test_gradients_equal_those_through_the_models_logits(family: str) -> None:
    reference = _model(family)
    ours = copy.deepcopy(reference)
    batch = _batch()
    g = torch.Generator().manual_seed(2)
    weights = torch.randn(3, 11, generator=g)

    expected_log_probs, expected_entropy = _reference(reference, batch, 0.8, torch.float32)
    ((weights * expected_log_probs).sum() + expected_entropy.sum()).backward()
    log_probs, entropy = causal_lm_token_log_probs(
        ours,
        batch["input_ids"],
        batch["attention_mask"],
        labels=batch["labels"],
        temperature=0.8,
        return_entropy=True,
    )
    ((weights * log_probs).sum() + entropy.sum()).backward()

    mine = dict(ours.named_parameters())
    checked = 0
    for name, p in reference.named_parameters():
        if not any(key in name for key in ("lm_head", "embed_tokens", "norm.", "q_proj")):
            continue
        q = mine[name]
        assert p.grad is not None and q.grad is not None, name
        scale = p.grad.abs().max().item()
        assert scale > 0, name
        error = (p.grad - q.grad).abs().max().item()
        assert error <= 1e-5 * scale, (name, error, scale)
        checked += 1
    assert checked >= 3


def test_labels_default_to_input_ids_and_without_entropy() -> None:
    model = _model("llama")
    batch = _batch()
    batch["labels"] = batch["input_ids"]
    unmasked = {**batch, "attention_mask": torch.ones_like(batch["input_ids"])}
    with torch.no_grad():
        expected, _ = _reference(model, unmasked, 1.0, torch.float64)
        log_probs = causal_lm_token_log_probs(model, batch["input_ids"])
    assert isinstance(log_probs, torch.Tensor)
    torch.testing.assert_close(log_probs.double(), expected, rtol=1e-5, atol=1e-5)
    assert (log_probs != 0).all()


def test_soft_capped_logits_are_refused_naming_the_config_field() -> None:
    if not hasattr(transformers, "Gemma2ForCausalLM"):
        pytest.skip("this transformers has no Gemma2ForCausalLM")
    config = transformers.Gemma2Config(**SMALL, final_logit_softcapping=30.0)
    model = transformers.Gemma2ForCausalLM(config)
    with pytest.raises(ValueError, match="final_logit_softcapping=30"):
        causal_lm_token_log_probs(model, torch.zeros(1, 4, dtype=torch.int64))


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"input_ids": torch.zeros(1, 4)}, TypeError, "input_ids: expected a tensor of integer"),
        ({"input_ids": torch.zeros(4, dtype=torch.int64)}, ValueError, r"input_ids: .*\(4,\)"),
        ({"labels": torch.zeros(1, 5, dtype=torch.int64)}, ValueError, r"labels: .*\(1, 5\)"),
        ({"attention_mask": torch.ones(1, 4)}, TypeError, "attention_mask: .*float32"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"labels": torch.full((1, 4), VOCAB)}, ValueError, str(VOCAB)),
    ],
)
def test_bad_arguments(arguments: dict[str, Any], error: type, match: str) -> None:
    model = _model("llama")
    arguments = {"input_ids": torch.zeros(1, 4, dtype=torch.int64), **arguments}
    with pytest.raises(error, match=match):
        causal_lm_token_log_probs(model, **arguments)


def test_a_model_without_a_base_is_refused() -> None:
    with pytest.raises(TypeError, match="model: a str"):
        causal_lm_token_log_probs("gpt2", torch.zeros(1, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="no base model"):
        causal_lm_token_log_probs(torch.nn.Linear(4, 4), torch.zeros(1, 4, dtype=torch.int64))


def test_a_bfloat16_model_gives_float32_log_probs() -> None:
    model = _model("llama").to(torch.bfloat16)
    batch = _batch()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits.double()[:, :-1]
        expected = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None])
        log_probs = causal_lm_token_log_probs(model, batch["input_ids"])
    assert isinstance(log_probs, torch.Tensor) and log_probs.dtype == torch.float32
    # the same bfloat16 logits (equal to float32 error here); 1e-2 is under the rounding of
    # log-probs of up to -17 to bfloat16 (2**-8 relative): the result is not rounded to it
    assert expected.abs().max() > 8
    torch.testing.assert_close(log_probs.double(), expected[..., 0], rtol=0, atol=1e-2)
