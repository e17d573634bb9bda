"""linear_cross_entropy against the unfused F.cross_entropy(F.linear(...)), forward and
gradient, over generated argument combinations."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import crossentropy.torch as ct
from crossentropy.torch import LinearCrossEntropyLoss, engine, linear_cross_entropy
from crossentropy.torch.engine import default_chunk_size

pytestmark = pytest.mark.skipif(
    not ct.fused_available(), reason="no C compiler: the fused kernel cannot be built"
)

TOKENS, HIDDEN, VOCABULARY = 37, 8, 23


def problem(dtype, *, bias=False, class_weight=False, seed=0, leading=(TOKENS,)):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(*leading, HIDDEN, generator=g, dtype=dtype).requires_grad_()
    w = torch.randn(VOCABULARY, HIDDEN, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(VOCABULARY, generator=g, dtype=dtype).requires_grad_() if bias else None
    t = torch.randint(0, VOCABULARY, leading, generator=g)
    t.view(-1)[::6] = -100
    cw = torch.rand(VOCABULARY, generator=g, dtype=dtype) + 0.1 if class_weight else None
    upstream = torch.rand(leading, generator=g, dtype=dtype)
    return h, w, b, t, cw, upstream


def loss_and_grads(function, h, w, b, upstream, reduction):
    loss = function()
    (loss * upstream).sum().backward() if reduction == "none" else loss.backward()
    params = [h, w] + ([b] if b is not None else [])
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return loss.detach(), grads


def assert_near(ours, reference, dtype):
    """float64: 1e-7 relative per element; float32: 1e-5 relative to the tensor's scale."""
    if dtype == torch.float64:
        torch.testing.assert_close(ours, reference, rtol=1e-7, atol=1e-12)
    else:
        scale = reference.abs().max().clamp_min(1e-30)
        assert (ours - reference).abs().max() <= 1e-5 * scale


@pytest.mark.parametrize(
    ("dtype", "bias", "class_weight", "reduction", "label_smoothing", "chunk_size"),
    list(
        itertools.product(
            [torch.float64, torch.float32],
            [False, True],
            [False, True],
            ["mean", "sum", "none"],
            [0.0, 0.1],
            [None, 1, 5, 64],
        )
    ),
)
def test_equals_unfused(dtype, bias, class_weight, reduction, label_smoothing, chunk_size):
    h, w, b, t, cw, up = problem(dtype, bias=bias, class_weight=class_weight)
    options = {"weight": cw, "reduction": reduction, "label_smoothing": label_smoothing}
    ours, ours_grads = loss_and_grads(
        lambda: linear_cross_entropy(
            h, w, t, linear_bias=b, chunk_size=chunk_size, impl="fused", **options
        ),
        h,
        w,
        b,
        up,
        reduction,
    )
    reference, reference_grads = loss_and_grads(
        lambda: F.cross_entropy(F.linear(h, w, b), t, **options), h, w, b, up, reduction
    )
    assert_near(ours, reference, dtype)
    for mine, theirs in zip(ours_grads, reference_grads, strict=True):
        assert_near(mine, theirs, dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "extras", [{"z_loss": 1e-2}, {"softcap": 3.0}, {"z_loss": 0.1, "softcap": 2.0}]
)
def test_z_loss_and_softcap_equal_the_unfused_core(reduction, extras):
    """torch has neither: the reference is the unfused path through the core (impl='torch')."""
    h, w, b, t, cw, up = problem(torch.float64, bias=True, class_weight=True, seed=1)
    kwargs = {"linear_bias": b, "weight": cw, "reduction": reduction, **extras}
    ours, ours_grads = loss_and_grads(
        lambda: linear_cross_entropy(h, w, t, chunk_size=7, impl="fused", **kwargs),
        h,
        w,
        b,
        up,
        reduction,
    )
    ref, ref_grads = loss_and_grads(
        lambda: linear_cross_entropy(h, w, t, impl="torch", **kwargs), h, w, b, up, reduction
    )
    assert_near(ours, ref, torch.float64)
    for mine, theirs in zip(ours_grads, ref_grads, strict=True):
        assert_near(mine, theirs, torch.float64)


def test_leading_dimensions_and_return_lse():
    h, w, b, t, _, _ = problem(torch.float64, bias=True, leading=(3, 5), seed=2)
    loss, lse = linear_cross_entropy(h, w, t, linear_bias=b, reduction="none", return_lse=True)
    logits = F.linear(h, w, b)
    torch.testing.assert_close(
        loss, F.cross_entropy(logits.transpose(1, 2), t, reduction="none"), rtol=1e-12, atol=0
    )
    expected = torch.where(t != -100, torch.logsumexp(logits, -1), 0.0).float()
    torch.testing.assert_close(lse, expected)
    assert lse.shape == (3, 5) and lse.dtype == torch.float32
    _, lse_ref = linear_cross_entropy(h, w, t, linear_bias=b, impl="torch", return_lse=True)
    torch.testing.assert_close(lse, lse_ref)


def test_matches_torchs_own_linear_cross_entropy():
    h, w, b, t, cw, _ = problem(torch.float64, bias=True, class_weight=True, seed=3)
    ours = linear_cross_entropy(h, w, t, linear_bias=b, weight=cw, label_smoothing=0.05)
    theirs = F.linear_cross_entropy(
        h,
        w,
        t,
        linear_bias=b,
        weight=cw,
        label_smoothing=0.05,
        options=torch.nn.LinearCrossEntropyOptions(),
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=0)


@pytest.mark.parametrize("partial_rows", [4096, 7])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_accumulates_in_float32(monkeypatch, dtype, partial_rows):
    """``partial_rows``: each chunk's half-precision partial product of the weight's
    gradient taken whole, or in slices of 7 rows (the last one ragged)."""
    monkeypatch.setattr(engine, "PARTIAL_ROWS", partial_rows)
    g = torch.Generator().manual_seed(4)
    h64 = torch.randn(300, 16, generator=g, dtype=torch.float64) / 4
    w64 = torch.randn(50, 16, generator=g, dtype=torch.float64) / 4
    t = torch.randint(0, 50, (300,), generator=g)
    h = h64.to(dtype).requires_grad_()
    w = w64.to(dtype).requires_grad_()
    loss = linear_cross_entropy(h, w, t, chunk_size=8)  # 38 chunks to accumulate over
    loss.backward()
    assert loss.dtype == dtype and h.grad.dtype == dtype and w.grad.dtype == dtype
    # the truth on the same rounded inputs, in float64
    hx = h.detach().double().requires_grad_()
    wx = w.detach().double().requires_grad_()
    truth = F.cross_entropy(hx @ wx.T, t)
    truth.backward()
    resolution = torch.finfo(dtype).eps
    assert abs(loss.double() - truth) <= 2 * resolution * truth
    # dW summed over 300 tokens: float32 accumulation keeps it to a few units of the
    # half type's resolution (a half-precision running sum over 38 chunks would not)
    error = (w.grad.double() - wx.grad).abs().max() / wx.grad.abs().max()
    assert error <= 4 * resolution


def test_probability_targets_take_the_unfused_path():
    h, w, b, _, _, _ = problem(torch.float64, bias=True, seed=5)
    probs = torch.softmax(torch.randn(TOKENS, VOCABULARY, dtype=torch.float64), -1)
    ours = linear_cross_entropy(h, w, probs, linear_bias=b, label_smoothing=0.1)
    theirs = F.cross_entropy(F.linear(h, w, b), probs, label_smoothing=0.1)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="impl='fused': takes class-index targets"):
        linear_cross_entropy(h, w, probs, impl="fused")


def test_mean_over_nothing_is_zero_with_zero_gradients():
    h, w, _, _, _, _ = problem(torch.float64, seed=6)
    t = torch.full((TOKENS,), -100)
    loss = linear_cross_entropy(h, w, t)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(h.grad == 0) and torch.all(w.grad == 0)


def test_no_grad_and_frozen_weight():
    h, w, _, t, _, _ = problem(torch.float64, seed=7)
    expected = F.cross_entropy(h @ w.T, t)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, t), expected.detach())
    frozen = w.detach()
    loss = linear_cross_entropy(h, frozen, t)
    loss.backward()
    reference = h.detach().clone().requires_grad_()
    F.cross_entropy(reference @ frozen.T, t).backward()
    torch.testing.assert_close(h.grad, reference.grad, rtol=1e-10, atol=1e-15)


def test_retain_graph_and_scaled_incoming_gradient():
    h, w, _, t, _, _ = problem(torch.float64, seed=8)
    loss = linear_cross_entropy(h, w, t, chunk_size=4)
    (3.0 * loss).backward(retain_graph=True)
    first = (h.grad.clone(), w.grad.clone())
    loss.backward()
    reference_h = h.detach().clone().requires_grad_()
    reference_w = w.detach().clone().requires_grad_()
    F.cross_entropy(reference_h @ reference_w.T, t).backward()
    torch.testing.assert_close(first[0], 3 * reference_h.grad, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(first[1], 3 * reference_w.grad, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(h.grad, 4 * reference_h.grad, rtol=1e-10, atol=1e-15)


def test_module_equals_function():
    h, w, b, t, cw, _ = problem(torch.float64, bias=True, class_weight=True, seed=9)
    module = LinearCrossEntropyLoss(weight=cw, label_smoothing=0.1, z_loss=1e-3, chunk_size=5)
    expected = linear_cross_entropy(
        h, w, t, linear_bias=b, weight=cw, label_smoothing=0.1, z_loss=1e-3
    )
    torch.testing.assert_close(module(h, w, t, b), expected, rtol=1e-12, atol=0)
    assert "weight" in dict(module.named_buffers())


def test_default_chunk_size():
    assert default_chunk_size(4096, 32000, 4) == 820  # 5 chunks: 820 * 4 + 816 = 4096
    assert default_chunk_size(2048, 128256, 4) == 410  # 410 * 4 + 408: no ragged tail
    assert default_chunk_size(16384, 256000, 4) == 512  # 32 chunks of at most 512 MiB
    assert 512 * 256000 * 4 <= 512 * 2**20
    assert default_chunk_size(5, 10, 4) == 5  # never more than the tokens
    assert default_chunk_size(100000, 10**7, 4) == 13  # 512 MiB holds 13 rows of 40 MB
    assert default_chunk_size(100000, 10**9, 4) == 8  # at least 8 tokens
    for tokens, vocabulary in [(37, 23), (1000, 50000), (4097, 32000), (123457, 151936)]:
        chunk = default_chunk_size(tokens, vocabulary, 4)
        chunks = -(-tokens // chunk)
        last = tokens - (chunks - 1) * chunk
        assert chunk * vocabulary * 4 <= 512 * 2**20 or chunk == 8
        assert chunks >= min(5, -(-tokens // 8))
        assert last >= chunk - chunks  # equal chunks: the last is short by the rounding


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda h, w, t: linear_cross_entropy(h, w.T, t), ValueError, r"linear_weight: expected"),
        (lambda h, w, t: linear_cross_entropy(h, w, t[:-1]), ValueError, "target: expected"),
        (lambda h, w, t: linear_cross_entropy(h, w.float(), t), TypeError, "dtype"),
        (lambda h, w, t: linear_cross_entropy(h, w, t, impl="fast"), ValueError, "impl"),
        (lambda h, w, t: linear_cross_entropy(h, w, t, chunk_size=0), ValueError, "chunk_size"),
        (
            lambda h, w, t: linear_cross_entropy(h, w, t.clamp(max=30) + 5),
            ValueError,
            r"labels: expected class indices in \[0, 23\)",
        ),
        (
            lambda h, w, t: linear_cross_entropy(h, w, t, linear_bias=torch.zeros(3)),
            ValueError,
            "linear_bias",
        ),
    ],
)
def test_bad_input(call, error, match):
    h, w, _, t, _, _ = problem(torch.float64, seed=10)
    with pytest.raises(error, match=match):
        call(h, w, t)


@pytest.mark.parametrize(
    ("reduction", "extras", "bias", "class_weight"),
    [
        ("mean", {}, False, False),
        ("sum", {"label_smoothing": 0.1}, True, True),
        ("none", {"z_loss": 1e-2, "softcap": 3.0}, True, False),
        ("mean", {"label_smoothing": 0.2, "z_loss": 0.1, "softcap": 2.0}, False, True),
    ],
)
def test_vocabulary_blocks_when_a_chunk_is_too_wide(
    monkeypatch, reduction, extras, bias, class_weight
):
    """With a budget smaller than one chunk's rows the vocabulary is split into blocks (an
    online logsumexp, the logits computed twice): same loss, logsumexp and gradients."""
    from crossentropy.torch import engine as engine_module

    h, w, b, t, cw, up = problem(torch.float64, bias=bias, class_weight=class_weight, seed=11)
    kwargs = {"linear_bias": b, "weight": cw, "reduction": reduction, **extras}
    ref, ref_grads = loss_and_grads(
        lambda: linear_cross_entropy(h, w, t, impl="torch", **kwargs), h, w, b, up, reduction
    )
    _, ref_lse = linear_cross_entropy(h, w, t, impl="torch", return_lse=True, **kwargs)
    monkeypatch.setattr(engine_module, "CHUNK_BYTES", 5 * 8 * 5)  # 5 tokens x 5 classes
    assert engine_module.vocabulary_block(5, VOCABULARY, 8) == 5
    ours, ours_grads = loss_and_grads(
        lambda: linear_cross_entropy(h, w, t, chunk_size=5, impl="fused", **kwargs),
        h,
        w,
        b,
        up,
        reduction,
    )
    _, lse = linear_cross_entropy(h, w, t, chunk_size=5, impl="fused", return_lse=True, **kwargs)
    assert_near(ours, ref, torch.float64)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-6, atol=1e-6)  # both float32
    for mine, theirs in zip(ours_grads, ref_grads, strict=True):
        assert_near(mine, theirs, torch.float64)


def _reference_grads(h, w, t, reduction="mean"):
    reference_h = h.detach().clone().requires_grad_()
    reference_w = w.detach().clone().requires_grad_()
    loss = F.cross_entropy(reference_h @ reference_w.T, t, reduction=reduction)
    (loss.sum() if reduction == "none" else loss).backward()
    return reference_h.grad, reference_w.grad


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_reused_buffers_hold_no_stale_numbers(reduction):
    """The chunk and gradient buffers are reused once free; poison them in between."""
    from crossentropy.torch import _kernel

    h, w, _, t, _, _ = problem(torch.float64, seed=11)
    ct.release_cached_buffers()
    pointers = []
    for _ in range(2):
        loss = linear_cross_entropy(h, w, t, reduction=reduction, chunk_size=8)
        (loss.sum() if reduction == "none" else loss).backward()
        pointers.append(w.grad.untyped_storage().data_ptr())
        expected_h, expected_w = _reference_grads(h, w, t, reduction)
        torch.testing.assert_close(h.grad, expected_h, rtol=1e-10, atol=1e-15)
        torch.testing.assert_close(w.grad, expected_w, rtol=1e-10, atol=1e-15)
        h.grad = w.grad = None
        for slot in ("linear_logits", "linear_grad_input", "linear_grad_weight"):
            assert _kernel.buffers.held(slot)
        for storage in _kernel.buffers._storages.values():
            torch.empty(0, dtype=torch.uint8).set_(storage).fill_(0xFF)  # NaN in floats
    assert pointers[0] == pointers[1]  # the weight gradient's buffer was reused


def test_a_held_gradient_is_never_overwritten():
    h, w, _, t, _, _ = problem(torch.float64, seed=12)
    expected_h, expected_w = _reference_grads(h, w, t)
    linear_cross_entropy(h, w, t, chunk_size=8).backward()
    first = w.grad  # the user keeps the first step's gradient
    w.grad = None
    linear_cross_entropy(h, w, t, chunk_size=8).backward()
    assert w.grad.untyped_storage().data_ptr() != first.untyped_storage().data_ptr()
    torch.testing.assert_close(first, expected_w, rtol=1e-10, atol=1e-15)
    linear_cross_entropy(h, w, t, chunk_size=8).backward()  # accumulates into w.grad
    torch.testing.assert_close(w.grad, 2 * expected_w, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(h.grad, 3 * expected_h, rtol=1e-10, atol=1e-15)
    torch.testing.assert_close(first, expected_w, rtol=1e-10, atol=1e-15)


def test_float32_chunks_through_onednn_equal_the_mm_path(monkeypatch):
    """float32 chunk logits come from oneDNN where PyTorch has it (faster than MKL for a
    few hundred tokens); the results equal the torch.mm path's to float32 rounding."""
    from crossentropy.torch import engine as engine_module

    h, w, b, t, cw, _ = problem(torch.float32, bias=True, class_weight=True, seed=13)
    if not engine_module.onednn_linear_works():
        pytest.skip("this PyTorch build has no oneDNN linear")
    assert engine_module._through_onednn(h, w)
    fresh = engine_module.chunk_logits(h.detach(), w.detach(), b.detach(), None)
    torch.testing.assert_close(fresh, F.linear(h, w, b).detach(), rtol=1e-5, atol=1e-5)

    def run():
        return loss_and_grads(
            lambda: linear_cross_entropy(h, w, t, linear_bias=b, weight=cw, chunk_size=8),
            h,
            w,
            b,
            None,
            "mean",
        )

    loss, grads = run()
    monkeypatch.setattr(engine_module, "_onednn_linear", False)  # torch.mm into the buffer
    assert not engine_module._through_onednn(h, w)
    loss_mm, grads_mm = run()
    torch.testing.assert_close(loss, loss_mm, rtol=1e-6, atol=0)
    for ours, theirs in zip(grads, grads_mm, strict=True):
        assert (ours - theirs).abs().max() <= 1e-5 * theirs.abs().max()


def test_chunked_is_the_earlier_name_of_fused():
    """``impl="chunked"`` (the C path's earlier name here) runs the same path, with a
    DeprecationWarning; the other losses never had it."""
    h, w, b, t, _, _ = problem(torch.float64, bias=True, class_weight=False, seed=3)
    fused = linear_cross_entropy(h, w, t, linear_bias=b, impl="fused", chunk_size=3)
    with pytest.warns(DeprecationWarning, match="impl='chunked' is now called impl='fused'"):
        chunked = linear_cross_entropy(h, w, t, linear_bias=b, impl="chunked", chunk_size=3)
    assert torch.equal(fused, chunked)
    with pytest.raises(ValueError, match="impl: expected one of"):
        ct.cross_entropy(h @ w.T, t, impl="chunked")
