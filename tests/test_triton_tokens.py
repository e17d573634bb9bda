"""The Triton per-token log-probability and entropy kernels, run by Triton's interpreter on
CPU tensors (TRITON_INTERPRET=1, set in the root conftest.py), against float64 torch
(log_softmax gathered, -sum p log p, their gradients under autograd) and against the torch
operations path (``impl="auto"`` on CPU) on hostile rows."""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("triton")

import crossentropy.torch as ct
import crossentropy.triton
from crossentropy.torch import dispatch
from crossentropy.triton import (
    interpreted,
    row_gradient,
    row_log_probs,
    row_statistics,
    token_kernels,
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy, in masked lanes

TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 2e-5, torch.float16: 2e-5}
# the gradient is rounded once to the logits' dtype
GRAD_TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 2e-5,
    torch.bfloat16: 1e-2,
    torch.float16: 2e-3,
}


def test_kernels_run_under_the_interpreter():
    assert os.environ["TRITON_INTERPRET"] == "1"
    assert interpreted(token_kernels._forward_kernel)


def reference(logits, target, ignored, temperature):
    """(log p_y, H) in float64 under autograd, ignored rows 0."""
    u = logits.double() / temperature
    log_p = torch.log_softmax(u, dim=1)
    picked = log_p.gather(1, target.clamp(min=0).unsqueeze(1)).squeeze(1)
    p = log_p.exp()
    entropy = -(p * torch.where(p > 0, log_p, 0.0)).sum(1)
    return torch.where(ignored, 0.0, picked), torch.where(ignored, 0.0, entropy)


def assert_near(ours, expected, rtol, name):
    scale = expected.abs().max().clamp_min(1.0) if expected.numel() else 1.0
    error = (ours.double() - expected.double()).abs().max() if ours.numel() else 0.0
    assert error <= rtol * scale, (
        f"{name}: error {float(error):.3g} > {rtol:g} x {float(scale):.3g}"
    )


@pytest.fixture(params=[None, 16], ids=["one-tile", "tiles-of-16"])
def tile(request, monkeypatch):
    """The default tile (one tile up to 4096 classes), or tiles of 16 columns: several
    tiles with a ragged last one, through the online merge."""
    if request.param is not None:
        monkeypatch.setattr(token_kernels, "MAX_BLOCK_CLASSES", request.param)
    return request.param


SHAPES = [(0, 5), (1, 1), (1, 7), (3, 16), (5, 40), (7, 33)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_forward_and_gradient_match_float64(dtype, shape, tile):
    rows, classes = shape
    gen = torch.Generator().manual_seed(rows * 100 + classes)
    logits = (torch.randn(rows, classes, generator=gen, dtype=torch.float64) * 4).to(dtype)
    target = torch.randint(0, classes, (rows,), generator=gen)
    ignored = torch.zeros(rows, dtype=torch.bool)
    ignored[1::3] = True
    target = torch.where(ignored, -1, target)
    g = torch.randn(rows, generator=gen, dtype=torch.float64)
    h = torch.randn(rows, generator=gen, dtype=torch.float64)
    for temperature in (1.0, 0.7, 3.0):
        x = logits.clone().requires_grad_()
        log_prob, entropy = row_log_probs(x, target, ignored, temperature)
        expected_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        assert log_prob.dtype == entropy.dtype == expected_dtype
        (log_prob.double() * g + entropy.double() * h).sum().backward()
        xr = logits.double().clone().requires_grad_()
        lr, hr = reference(xr, target, ignored, temperature)
        (lr * g + hr * h).sum().backward()
        tol = TOLERANCE[dtype]
        assert_near(log_prob, lr.detach(), tol, "log_prob")
        assert_near(entropy, hr.detach(), tol, "entropy")
        assert (entropy >= 0).all()
        assert x.grad.dtype == dtype
        assert_near(x.grad, xr.grad, GRAD_TOLERANCE[dtype], "gradient")
        assert (x.grad[ignored] == 0).all()


def test_public_entry_points_take_impl_triton(tile):
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 20, generator=gen)
    target = torch.randint(0, 20, (2, 3), generator=gen)
    target[0, 1] = -100
    x = logits.clone().requires_grad_()
    log_prob, entropy = ct.token_log_probs(
        x, target, temperature=0.5, return_entropy=True, impl="triton"
    )
    (log_prob.sum() + 0.3 * entropy.sum()).backward()
    xr = logits.clone().requires_grad_()
    lr, hr = ct.token_log_probs(xr, target, temperature=0.5, return_entropy=True, impl="torch")
    (lr.sum() + 0.3 * hr.sum()).backward()
    assert log_prob.shape == (2, 3) and log_prob[0, 1] == 0 and entropy[0, 1] == 0
    assert_near(log_prob, lr, 1e-5, "log_prob")
    assert_near(entropy, hr, 1e-5, "entropy")
    assert_near(x.grad, xr.grad, 1e-5, "gradient")
    assert (x.grad[0, 1] == 0).all()
    # out-of-range targets are refused at the public boundary, before any launch
    with pytest.raises(ValueError, match="target"):
        ct.token_log_probs(logits, torch.full((2, 3), 20), impl="triton")


def test_create_graph_runs_the_differentiable_reference():
    logits = torch.randn(3, 9, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([1, 4, -100])
    lp, h = ct.token_log_probs(logits, target, return_entropy=True, impl="triton")
    (grad,) = torch.autograd.grad(lp.sum() + h.sum(), logits, create_graph=True)
    lr, hr = ct.token_log_probs(logits, target, return_entropy=True, impl="torch")
    (expected,) = torch.autograd.grad(lr.sum() + hr.sum(), logits, create_graph=True)
    assert_near(grad, expected, 1e-12, "gradient")
    (second,) = torch.autograd.grad(grad.square().sum(), logits)
    (second_expected,) = torch.autograd.grad(expected.square().sum(), logits)
    assert_near(second, second_expected, 1e-10, "second derivative")


def hostile():
    inf, nan = torch.inf, torch.nan
    rows = [
        [1.0, inf, 0.0, -2.0, 0.5],  # +inf beside the target
        [inf, 1.0, 0.0, -inf, 0.5],  # target at +inf, and a -inf
        [1.0, -inf, 0.0, -2.0, 0.5],  # -inf target in a finite row
        [-inf, -inf, -inf, -inf, -inf],  # no distribution
        [1.0, 2.0, nan, -2.0, 0.5],  # NaN beside the target
        [1e30, -1e30, 0.0, 1e30, -1e30],
        [-1e30, 1e30, 0.0, 5.0, -1.0],
        [0.0, 2000.0, 0.0, 0.0, 0.0],  # one-hot softmax: H = 0 exactly
        [3.0, 1.0, -inf, 2.0, -inf],
    ]
    logits = torch.tensor(rows, dtype=torch.float64)
    target = torch.tensor([2, 0, 1, 0, 1, 1, 2, 3, 3])
    return logits, target


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_hostile_rows_agree_with_the_torch_operations_path(dtype, temperature, tile):
    logits, target = hostile()
    logits = logits.to(dtype)
    gen = torch.Generator().manual_seed(3)
    for g_zero in (False, True):  # h only, then g and h
        g = (
            torch.zeros(9, dtype=torch.float64)
            if g_zero
            else torch.randn(9, generator=gen, dtype=torch.float64)
        )
        h = torch.randn(9, generator=gen, dtype=torch.float64)
        outs = []
        for impl in ("triton", "auto"):
            x = logits.clone().requires_grad_()
            lp, ent = ct.token_log_probs(
                x, target, temperature=temperature, return_entropy=True, impl=impl
            )
            (lp.double() * g + ent.double() * h).sum().backward()
            outs.append((lp.detach(), ent.detach(), x.grad))
        for ours, theirs, name in zip(
            outs[0], outs[1], ("log_prob", "entropy", "gradient"), strict=True
        ):
            assert torch.equal(ours.isnan(), theirs.isnan()), name
            assert torch.equal(ours.isinf() & (ours > 0), theirs.isinf() & (theirs > 0)), name
            assert torch.equal(ours.isinf() & (ours < 0), theirs.isinf() & (theirs < 0)), name
            finite = ours.isfinite()
            rtol = 1e-2 if name == "gradient" and dtype == torch.bfloat16 else 1e-5
            assert torch.allclose(
                ours[finite].double(), theirs[finite].double(), rtol=rtol, atol=rtol
            ), name
        entropy = outs[0][1]
        assert entropy[7] == 0  # one-hot
        assert (entropy[entropy.isfinite()] >= 0).all()
    # rows whose g and h are both 0 have exactly 0 gradient, whatever their logits
    x = logits.clone().requires_grad_()
    lp, ent = ct.token_log_probs(
        x, target, temperature=temperature, return_entropy=True, impl="triton"
    )
    (lp.double() * 0).sum().add((ent.double() * 0).sum()).backward()
    assert (x.grad == 0).all()


def test_row_functions_as_the_token_head_uses_them(tile):
    """Statistics, then the gradient written over the logits (the engine's chunk): the same
    numbers as the torch operations' row math."""
    from crossentropy.torch.heads import TokenHead

    gen = torch.Generator().manual_seed(5)
    z = torch.randn(6, 37, generator=gen, dtype=torch.float64) * 3
    target = torch.randint(0, 37, (6,), generator=gen)
    target[2] = -100
    g = torch.randn(6, generator=gen, dtype=torch.float64)
    h = torch.randn(6, generator=gen, dtype=torch.float64)
    outputs = {}
    for name in ("torch", "triton"):
        lp = torch.zeros(6, dtype=torch.float64)
        ent = torch.zeros(6, dtype=torch.float64)
        head = TokenHead(
            target, temperature=1.5, log_prob=lp, entropy=ent, keep=True,
            grad_log_prob=g, grad_entropy=h,
        )  # fmt: skip
        chunk = z.clone()
        if name == "torch":
            head.rows(chunk, slice(0, 6), True)
        else:
            ids = torch.where(target == -100, -1, target)
            stats = row_statistics(chunk, ids, 1.5)
            live = target != -100
            row_gradient(
                chunk, ids, stats, 1.5, torch.where(live, g, 0), torch.where(live, h, 0), out=chunk
            )
        outputs[name] = (head.kept if name == "torch" else stats, chunk)
    (kept, expected), (stats, ours) = outputs["torch"], outputs["triton"]
    for ours_field, field in zip(stats[:3], ("peak", "mass", "spread"), strict=True):
        assert_near(ours_field, getattr(kept, field), 1e-12, field)
    assert_near(stats[3][target != -100], kept.target[target != -100], 1e-12, "target")
    assert_near(ours, expected, 1e-12, "gradient")
    assert (ours[2] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_token_head_cuda_branch_on_the_interpreter(dtype, monkeypatch):
    """linear_token_log_probs with the head's Triton branch taken (Triton "available" for
    these CPU tensors, as it is for CUDA ones) against the torch operations."""
    gen = torch.Generator().manual_seed(7)
    hidden = torch.randn(9, 8, generator=gen).to(dtype)
    weight = torch.randn(21, 8, generator=gen).to(dtype)
    target = torch.randint(0, 21, (9,), generator=gen)
    target[4] = -100
    results = []
    calls: list[int] = []
    original = token_kernels.row_statistics
    monkeypatch.setattr(
        crossentropy.triton, "row_statistics", lambda *a: calls.append(1) or original(*a)
    )
    for available in (False, True):
        if available:
            monkeypatch.setattr(dispatch, "triton_available", lambda device: True)
        calls.clear()
        x = hidden.clone().requires_grad_()
        w = weight.clone().requires_grad_()
        lp, ent = ct.linear_token_log_probs(
            x, w, target, temperature=0.8, return_entropy=True, chunk_size=4
        )
        (lp.sum() + 0.5 * ent.sum()).backward()
        results.append((lp.detach(), ent.detach(), x.grad, w.grad, len(calls)))
    plain, kernels = results
    assert plain[4] == 0 and kernels[4] > 0  # the branch ran, on every chunk
    rtol = 1e-5 if dtype == torch.float32 else 2e-2
    for ours, theirs, name in zip(
        kernels[:4], plain[:4], ("log_prob", "entropy", "dx", "dw"), strict=True
    ):
        assert_near(ours, theirs, rtol, name)


def test_arguments_are_checked_before_a_launch():
    z = torch.randn(3, 5)
    ids = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="logits"):
        row_statistics(torch.randn(5), ids, 1.0)
    with pytest.raises(TypeError, match="logits"):
        row_statistics(z.to(torch.int32), ids, 1.0)
    with pytest.raises(ValueError, match="target"):
        row_statistics(z, ids[:2], 1.0)
    with pytest.raises(TypeError, match="target"):
        row_statistics(z, ids.to(torch.int32), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        row_statistics(z, ids, 0.0)
    stats = row_statistics(z, ids, 1.0)
    ones = torch.ones(3)
    with pytest.raises(ValueError, match="out"):
        row_gradient(z, ids, stats, 1.0, ones, ones, out=torch.empty(3, 4))
    with pytest.raises(ValueError, match="out"):
        row_gradient(z, ids, stats, 1.0, ones, ones, out=torch.empty(5, 3).t())
    with pytest.raises(ValueError, match="grad_entropy"):
        row_gradient(z, ids, stats, 1.0, ones, ones[:2])
    # a target outside [0, V) is "no target": never read, the row's statistics unchanged
    far = row_statistics(z, torch.tensor([0, 1_000_000, -7]), 1.0)
    assert far[3][1] == 0 and far[3][2] == 0
    assert torch.equal(far[1], stats[1])
