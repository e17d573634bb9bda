"""The fused C kernel against the float64 reference of the core, forward and gradient."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossentropy import gradients
from crossentropy.torch import _kernel
from crossentropy.torch._fused import fused_cross_entropy, release_cached_buffers

pytestmark = pytest.mark.skipif(
    not _kernel.fused_available(), reason="no C compiler: the fused kernel cannot be built"
)

OPTIONS = [
    {},
    {"label_smoothing": 0.1},
    {"z_loss": 1e-2},
    {"softcap": 3.0},
    {"label_smoothing": 0.2, "z_loss": 0.1, "softcap": 2.0},
]


def reference(logits, target, weight=None, **options):
    """float64 loss and gradient from the core (the readable reference)."""
    w = None if weight is None else weight.double().numpy()
    return gradients.sparse_softmax_cross_entropy(
        logits.double().numpy(), target.numpy(), weight=w, **options
    )


def run(logits, target, **options):
    x = logits.detach().clone().requires_grad_()
    loss = fused_cross_entropy(x, target, **options)
    (loss.sum() if options.get("reduction") == "none" else loss).backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize(
    ("options", "weighted", "reduction"),
    list(itertools.product(OPTIONS, [False, True], ["mean", "sum", "none"])),
)
def test_float64_equals_reference(options, weighted, reduction):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(97, 13, dtype=torch.float64, generator=generator) * 4
    target = torch.randint(0, 13, (97,), generator=generator)
    target[::7] = -100
    weight = torch.rand(13, dtype=torch.float64, generator=generator) + 0.1 if weighted else None
    loss, grad = run(logits, target, weight=weight, reduction=reduction, **options)
    ref_loss, ref_grad = reference(logits, target, weight, reduction=reduction, **options)
    np.testing.assert_allclose(loss.numpy(), ref_loss, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("classes", [1, 7, 16, 33, 1000])
def test_float32_error_within_torchs_own(classes):
    """The kernel's float32 error against the float64 truth is no worse than twice torch's
    own float32 error on the same data (plus a few ulps of the value)."""
    generator = torch.Generator().manual_seed(classes)
    logits64 = torch.randn(64, classes, dtype=torch.float64, generator=generator) * 5
    target = torch.randint(0, classes, (64,), generator=generator)
    truth_loss, truth_grad = reference(logits64, target)
    loss, grad = run(logits64.float(), target)
    x = logits64.float().requires_grad_()
    torch_loss = F.cross_entropy(x, target)
    torch_loss.backward()
    ulp = float(np.finfo(np.float32).eps)
    ours = abs(float(loss) - truth_loss)
    theirs = abs(float(torch_loss.detach()) - truth_loss)
    assert ours <= 2 * theirs + 4 * ulp * abs(truth_loss)
    ours_g = np.abs(grad.double().numpy() - truth_grad).max()
    theirs_g = np.abs(x.grad.double().numpy() - truth_grad).max()
    assert ours_g <= 2 * theirs_g + 4 * ulp * np.abs(truth_grad).max()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_computes_in_float32(dtype):
    generator = torch.Generator().manual_seed(3)
    logits = (torch.randn(40, 50, generator=generator) * 3).to(dtype)
    target = torch.randint(0, 50, (40,), generator=generator)
    loss, grad = run(logits, target)
    assert loss.dtype == dtype and grad.dtype == dtype
    # the truth on the same (rounded) half inputs
    ref_loss, ref_grad = reference(logits, target)
    resolution = float(torch.finfo(dtype).eps)
    assert abs(float(loss) - ref_loss) <= resolution * abs(ref_loss)
    # each gradient entry is rounded once from its float32 value: half an ulp of itself
    tolerance = resolution * np.abs(ref_grad) + 1e-7
    assert np.all(np.abs(grad.double().numpy() - ref_grad) <= tolerance)


def test_matches_torch_on_large_vocabulary_float32():
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(8, 32000, generator=generator) * 2
    target = torch.randint(0, 32000, (8,), generator=generator)
    loss, grad = run(logits, target)
    x = logits.clone().requires_grad_()
    expected = F.cross_entropy(x, target)
    expected.backward()
    torch.testing.assert_close(loss, expected.detach())
    torch.testing.assert_close(grad, x.grad)


def test_numerical_edge_cases():
    logits = torch.tensor(
        [[0.0, -torch.inf, 1.0], [-torch.inf, -torch.inf, -torch.inf], [1e4, -1e4, 0.0]],
        dtype=torch.float64,
    )
    target = torch.tensor([0, -100, 1])
    loss, grad = run(logits, target, reduction="none")
    ref_loss, ref_grad = reference(logits, target, reduction="none")
    np.testing.assert_array_equal(loss.numpy(), ref_loss)
    assert loss[2].item() == 2e4
    assert torch.all(grad[1] == 0) and grad[0, 1].item() == 0.0
    np.testing.assert_allclose(grad.numpy(), ref_grad, atol=1e-15)
    # the target's logit at -inf: infinite loss
    inf_loss, _ = run(logits[:1], torch.tensor([1]))
    assert inf_loss.item() == float("inf")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_shift_invariance(dtype):
    offset = {torch.float32: 1e6, torch.float16: 4096.0, torch.bfloat16: 256.0}[dtype]
    logits = torch.full((3, 4), offset, dtype=dtype)
    loss, _ = run(logits, torch.tensor([0, 1, 3]))
    eps = float(torch.finfo(dtype).eps)
    assert abs(float(loss) - np.log(4)) <= 2 * eps * np.log(4)


def test_mean_over_nothing_is_zero_with_zero_gradient():
    logits = torch.randn(5, 3)
    loss, grad = run(logits, torch.full((5,), -100))
    assert loss.item() == 0.0 and torch.all(grad == 0)
    loss, grad = run(logits, torch.zeros(5, dtype=torch.int64), weight=torch.tensor([0.0, 1, 1]))
    assert loss.item() == 0.0 and torch.all(grad == 0)
    loss, grad = run(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0 and grad.shape == (0, 3)


def test_incoming_gradient_scales_and_none_reduction_uses_each_rows():
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 4, dtype=torch.float64, generator=generator)
    target = torch.randint(0, 4, (6,), generator=generator)
    upstream = torch.rand(6, dtype=torch.float64, generator=generator)
    x = logits.clone().requires_grad_()
    (fused_cross_entropy(x, target, reduction="none") * upstream).sum().backward()
    _, per_row = reference(logits, target, reduction="none")
    np.testing.assert_allclose(x.grad.numpy(), per_row * upstream.numpy()[:, None], rtol=1e-12)
    x = logits.clone().requires_grad_()
    (3.0 * fused_cross_entropy(x, target)).backward()
    _, mean_grad = reference(logits, target)
    np.testing.assert_allclose(x.grad.numpy(), 3.0 * mean_grad, rtol=1e-12)


def test_retain_graph_gives_the_same_gradient_twice():
    logits = torch.randn(4, 5, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3])
    x = logits.clone().requires_grad_()
    loss = fused_cross_entropy(x, target)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * first)
    _, expected = reference(logits, target)
    np.testing.assert_allclose(first.numpy(), expected, rtol=1e-12)


def test_inplace_backward_overwrites_the_logits_with_the_gradient():
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(20, 9, dtype=torch.float64, generator=generator)
    target = torch.randint(0, 9, (20,), generator=generator)
    for options in OPTIONS:
        # a non-leaf, as model outputs are (a leaf that requires grad is refused)
        buffer = logits * torch.ones((), dtype=torch.float64, requires_grad=True)
        pointer = buffer.data_ptr()
        loss = fused_cross_entropy(buffer, target, inplace_backward=True, **options)
        (grad,) = torch.autograd.grad(loss, buffer)
        ref_loss, ref_grad = reference(logits, target, **options)
        np.testing.assert_allclose(float(loss.detach()), ref_loss, rtol=1e-12)
        np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-10, atol=1e-15)
        assert grad.data_ptr() == pointer  # no second buffer


def test_inplace_backward_refuses_a_second_backward():
    x = torch.randn(3, 4, requires_grad=True) * 1.0
    loss = fused_cross_entropy(x, torch.tensor([0, 1, 2]), inplace_backward=True)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="inplace_backward"):
        loss.backward()


def test_inplace_backward_is_caught_when_autograd_still_needs_the_logits():
    h = torch.randn(3, 4, requires_grad=True)
    logits = torch.tanh(h)  # tanh's backward needs its output: overwriting it is an error
    loss = fused_cross_entropy(logits, torch.tensor([0, 1, 2]), inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_cached_buffer_is_never_reused_while_held():
    release_cached_buffers()
    target = torch.tensor([0, 1, 2, 3])
    logits = torch.randn(4, 6, dtype=torch.float64)
    _, expected = reference(logits, target)
    x = logits.clone().requires_grad_()
    fused_cross_entropy(x, target).backward()
    fused_cross_entropy(x, target).backward()  # .grad still holds the first buffer
    np.testing.assert_allclose(x.grad.numpy(), 2 * expected, rtol=1e-12)
    kept = x.grad
    x.grad = None
    fused_cross_entropy(x, target).backward()
    assert x.grad.data_ptr() != kept.data_ptr()  # ``kept`` still references the old one
    np.testing.assert_allclose(kept.numpy(), 2 * expected, rtol=1e-12)
    released = x.grad.data_ptr()
    x.grad = None
    fused_cross_entropy(x, target).backward()
    assert x.grad.data_ptr() == released  # nobody held it: reused, no new allocation
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)


def test_non_contiguous_rows_and_many_threads():
    logits = torch.randn(9, 300, dtype=torch.float64).t()  # (300, 9), column-major
    target = torch.randint(0, 9, (300,))
    loss, grad = run(logits, target)
    ref_loss, ref_grad = reference(logits, target)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-12)
    np.testing.assert_allclose(grad.numpy(), ref_grad, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: fused_cross_entropy(torch.randn(2, 3, 4), torch.zeros(2)), ValueError, "2-D"),
        (
            lambda: fused_cross_entropy(torch.randn(2, 3), torch.tensor([0, 3])),
            ValueError,
            r"got 3 at position \(1,\)",
        ),
        (lambda: fused_cross_entropy(torch.randn(2, 3), torch.zeros(2)), TypeError, "integer"),
        (
            lambda: fused_cross_entropy(torch.randint(0, 3, (2, 3)), torch.zeros(2).long()),
            TypeError,
            "float32",
        ),
        (
            lambda: fused_cross_entropy(torch.randn(2, 3), torch.zeros(2).long(), reduction="x"),
            ValueError,
            "reduction",
        ),
        (
            lambda: fused_cross_entropy(
                torch.randn(2, 3), torch.zeros(2).long(), weight=torch.ones(4)
            ),
            ValueError,
            r"weight: expected one weight per class, shape \(3,\)",
        ),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_loss_only_without_gradient_writes_no_buffer():
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(30, 11, dtype=torch.float64, generator=generator)
    target = torch.randint(0, 11, (30,), generator=generator)
    expected, _ = reference(logits, target)
    release_cached_buffers()
    x = logits.clone().requires_grad_()
    with torch.no_grad():
        loss = fused_cross_entropy(x, target)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-12)
    assert not _kernel.buffers.held()  # no gradient buffer was taken
    loss = fused_cross_entropy(logits, target)  # logits that need no gradient
    assert not loss.requires_grad and not _kernel.buffers.held()
    np.testing.assert_allclose(float(loss), expected, rtol=1e-12)


def test_negative_total_weight_is_divided_by_like_torch():
    logits = torch.randn(3, 4, dtype=torch.float64)
    target = torch.tensor([0, 1, 2])
    weight = torch.tensor([-1.0, -2.0, -3.0, 1.0], dtype=torch.float64)
    loss, grad = run(logits, target, weight=weight)
    x = logits.clone().requires_grad_()
    expected = F.cross_entropy(x, target, weight=weight)
    expected.backward()
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, x.grad, rtol=1e-12, atol=1e-14)
