"""The Triton linear + cross-entropy kernels under Triton's interpreter (TRITON_INTERPRET=1,
set in the root conftest.py), against the unfused float64 computation: torch's
``F.cross_entropy(F.linear(...))`` where it has the arguments, the library's core
(``impl="torch"``) for z-loss and soft-capping, and the kernels' readable reference."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as TF

import crossentropy.torch as ct
from crossentropy.triton import linear_cross_entropy
from crossentropy.triton.linear_cross_entropy_kernels import reference

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy, in masked lanes

# tiles of 16 under the interpreter: 21 tokens (2 blocks, the last ragged), 24 hidden
# (2 blocks, ragged), 23 classes (2 blocks, ragged; the forward's 2 splits of one each)
TOKENS, HIDDEN, VOCABULARY = 21, 24, 23


def problem(dtype, *, bias=False, class_weight=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(TOKENS, HIDDEN, generator=g, dtype=torch.float64).to(dtype)
    w = (torch.randn(VOCABULARY, HIDDEN, generator=g, dtype=torch.float64) / 2).to(dtype)
    b = torch.randn(VOCABULARY, generator=g, dtype=torch.float64).to(dtype) if bias else None
    t = torch.randint(0, VOCABULARY, (TOKENS,), generator=g)
    t[::6] = -100
    cw = None
    if class_weight:
        cw = (torch.rand(VOCABULARY, generator=g, dtype=torch.float64) + 0.1).to(dtype)
    upstream = torch.rand(TOKENS, generator=g, dtype=torch.float64)
    return h, w, b, t, cw, upstream


def loss_and_grads(function, params, reduction, upstream):
    leaves = [None if p is None else p.detach().clone().requires_grad_() for p in params]
    loss = function(*leaves)
    if reduction == "none":
        (loss * upstream.to(loss.dtype)).sum().backward()
    else:
        loss.backward()
    return loss.detach(), [None if p is None else p.grad for p in leaves]


def assert_near(ours, expected, rtol):
    scale = expected.abs().max().clamp_min(1e-30)
    error = (ours.double() - expected.double()).abs().max()
    assert error <= rtol * scale, f"error {float(error):.3g} > {rtol:g} x {float(scale):.3g}"


COMBINATIONS = list(
    itertools.product(
        [False, True],  # bias
        [False, True],  # class weights
        ["mean", "sum", "none"],
        [0.0, 0.1],  # label smoothing
        [{}, {"z_loss": 1e-2}, {"softcap": 3.0}, {"z_loss": 1e-2, "softcap": 3.0}],
    )
)


@pytest.mark.parametrize(("bias", "class_weight", "reduction", "smoothing", "extras"), COMBINATIONS)
def test_float32_equals_the_unfused_float64(bias, class_weight, reduction, smoothing, extras):
    h, w, b, t, cw, up = problem(torch.float32, bias=bias, class_weight=class_weight)
    options = {"reduction": reduction, "label_smoothing": smoothing}
    ours, grads = loss_and_grads(
        lambda h, w, b: linear_cross_entropy(
            h, w, t, linear_bias=b, weight=cw, **options, **extras
        ),
        (h, w, b),
        reduction,
        up,
    )
    cw64 = None if cw is None else cw.double()
    params64 = [None if p is None else p.double() for p in (h, w, b)]
    expected, expected_grads = loss_and_grads(
        lambda h, w, b: ct.linear_cross_entropy(
            h, w, t, linear_bias=b, weight=cw64, impl="torch", **options, **extras
        ),
        params64,
        reduction,
        up,
    )
    assert ours.dtype == torch.float32
    assert_near(ours, expected, 1e-5)
    for mine, theirs in zip(grads, expected_grads, strict=True):
        if theirs is None:
            assert mine is None
        else:
            assert mine.dtype == torch.float32
            assert_near(mine, theirs, 1e-5)
    if not extras:  # torch has these arguments: a third opinion
        torch_loss, torch_grads = loss_and_grads(
            lambda h, w, b: TF.cross_entropy(TF.linear(h, w, b), t, weight=cw64, **options),
            params64,
            reduction,
            up,
        )
        assert_near(ours, torch_loss, 1e-5)
        for mine, theirs in zip(grads, torch_grads, strict=True):
            if theirs is not None:
                assert_near(mine, theirs, 1e-5)


def test_float64_equals_the_readable_reference_for_any_tiling():
    h, w, b, t, cw, _ = problem(torch.float64, bias=True, class_weight=True, seed=1)
    options = {"weight": cw, "label_smoothing": 0.2, "z_loss": 0.05, "softcap": 2.5}
    rows, dh, dw, db = reference(h, w, t, linear_bias=b, **options)
    for blocks, splits in [(None, 1), ((32, 16, 16), 3), ((16, 32, 32), None)]:
        loss, grads = loss_and_grads(
            lambda h, w, b, bl=blocks, sp=splits: linear_cross_entropy(
                h, w, t, linear_bias=b, reduction="sum", block_sizes=bl, splits=sp, **options
            ),
            (h, w, b),
            "sum",
            None,
        )
        torch.testing.assert_close(loss, rows.sum(), rtol=1e-11, atol=0)
        for mine, theirs in zip(grads, (dh, dw, db), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_accumulates_in_float32(dtype):
    """Against float64 on the same rounded inputs. The products take the gradient tile
    rounded to the dtype (as tensor cores do), so the gradients are good to about one
    rounding of the dtype relative to their scale; the loss is rounded once."""
    h, w, b, t, cw, _ = problem(dtype, bias=True, class_weight=True, seed=2)
    options = {"weight": cw, "label_smoothing": 0.1}
    loss, grads = loss_and_grads(
        lambda h, w, b: linear_cross_entropy(h, w, t, linear_bias=b, **options),
        (h, w, b),
        "mean",
        None,
    )
    assert loss.dtype == dtype and all(g.dtype == dtype for g in grads)
    params64 = [p.double() for p in (h, w, b)]
    expected, expected_grads = loss_and_grads(
        lambda h, w, b: TF.cross_entropy(
            TF.linear(h, w, b), t, weight=cw.double(), label_smoothing=0.1
        ),
        params64,
        "mean",
        None,
    )
    resolution = torch.finfo(dtype).eps
    assert abs(float(loss) - float(expected)) <= resolution * abs(float(expected))
    for mine, theirs in zip(grads, expected_grads, strict=True):
        assert_near(mine, theirs, 2 * resolution)


def test_only_the_wanted_gradients():
    h, w, b, t, _, _ = problem(torch.float32, bias=True, seed=3)
    x = h.clone().requires_grad_()
    loss = linear_cross_entropy(x, w, t, linear_bias=b)  # weight and bias: constants
    loss.backward()
    expected = h.double().requires_grad_()
    TF.cross_entropy(TF.linear(expected, w.double(), b.double()), t).backward()
    assert_near(x.grad, expected.grad, 1e-5)
    with torch.no_grad():
        assert_near(linear_cross_entropy(h, w, t), TF.cross_entropy(h @ w.T, t), 1e-5)


def test_skipping_small_gradients_drops_only_the_tiles_below_resolution():
    """Vocabulary entries 16..31 get logits near -40 (softmax ~ 1e-17): with
    skip_small_gradients their tile is skipped, so their weight-gradient rows are exactly 0,
    while everything else equals the exact computation; off (the default) it is exact."""
    g = torch.Generator().manual_seed(4)
    h = torch.randn(TOKENS, HIDDEN, generator=g)
    h[:, 0] = 1.0
    w = torch.randn(40, HIDDEN, generator=g) * 0.1
    w[16:32] = 0.0
    w[16:32, 0] = -40.0  # a whole tile of 16 classes with tiny probabilities
    t = torch.randint(0, 16, (TOKENS,), generator=g)

    def grads(**options):
        x, v = h.clone().requires_grad_(), w.clone().requires_grad_()
        linear_cross_entropy(x, v, t, **options).backward()
        return x.grad, v.grad

    exact_dh, exact_dw = grads()
    skipped_dh, skipped_dw = grads(skip_small_gradients=True)
    x64, w64 = h.double().requires_grad_(), w.double().requires_grad_()
    TF.cross_entropy(x64 @ w64.T, t).backward()
    assert_near(exact_dw, w64.grad, 1e-5)
    assert_near(exact_dh, x64.grad, 1e-5)
    assert torch.all(exact_dw[16:32, 0] != 0)  # tiny but there
    assert torch.all(skipped_dw[16:32] == 0)  # skipped
    torch.testing.assert_close(skipped_dw[:16], exact_dw[:16], rtol=0, atol=1e-9)
    torch.testing.assert_close(skipped_dw[32:], exact_dw[32:], rtol=0, atol=1e-9)
    assert_near(skipped_dh, x64.grad, 1e-5)


def test_through_crossentropy_torch_with_leading_dimensions_and_lse():
    g = torch.Generator().manual_seed(5)
    h = torch.randn(3, 5, HIDDEN, generator=g, dtype=torch.float64)
    w = torch.randn(VOCABULARY, HIDDEN, generator=g, dtype=torch.float64)
    t = torch.randint(0, VOCABULARY, (3, 5), generator=g)
    t[0, 0] = -100
    loss, lse = ct.linear_cross_entropy(h, w, t, reduction="none", return_lse=True, impl="triton")
    logits = h @ w.T
    expected = TF.cross_entropy(logits.transpose(1, 2), t, reduction="none")
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(lse, torch.where(t != -100, logits.logsumexp(-1), 0.0).float())
    module = ct.LinearCrossEntropyLoss(impl="triton")
    torch.testing.assert_close(module(h, w, t), TF.cross_entropy(logits.transpose(1, 2), t))


def test_torch_compile_fullgraph():
    h, w, b, t, cw, _ = problem(torch.float32, bias=True, class_weight=True, seed=6)

    def step(h, w, b):
        return ct.linear_cross_entropy(
            h * 1.5, w, t, linear_bias=b, weight=cw, z_loss=1e-3, impl="triton"
        )

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss, grads = loss_and_grads(compiled, (h, w, b), "mean", None)
    expected, expected_grads = loss_and_grads(step, (h, w, b), "mean", None)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    for mine, theirs in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-8)


def test_bad_arguments_name_themselves():
    h, w, _, t, _, _ = problem(torch.float32)
    with pytest.raises(ValueError, match="impl='triton': takes class-index targets"):
        ct.linear_cross_entropy(
            h, w, torch.full((TOKENS, VOCABULARY), 1 / VOCABULARY), impl="triton"
        )
    with pytest.raises(ValueError, match="skip_small_gradients: True needs impl='triton'"):
        ct.linear_cross_entropy(h, w, t, impl="fused", skip_small_gradients=True)
    with pytest.raises(TypeError, match="linear_weight: expected the input's dtype"):
        linear_cross_entropy(h, w.double(), t)
    with pytest.raises(ValueError, match="block_sizes: expected three powers of two"):
        linear_cross_entropy(h, w, t, block_sizes=(16, 24, 16))
    with pytest.raises(ValueError, match="splits: expected a positive integer"):
        linear_cross_entropy(h, w, t, splits=0)
    with pytest.raises(ValueError, match="labels: expected shape"):
        linear_cross_entropy(h, w, t[:3])
    with pytest.raises(TypeError, match="skip_small_gradients: expected True or False"):
        linear_cross_entropy(h, w, t, skip_small_gradients=1)
