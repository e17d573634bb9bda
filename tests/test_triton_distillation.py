"""The Triton distillation kernels, run by Triton's interpreter on CPU tensors
(TRITON_INTERPRET=1, set in the root conftest.py), against a float64 torch reference written
here (log_softmax, the KLs by their definition, the gradient under autograd) and on hostile
rows against the decided numbers."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

pytest.importorskip("triton")

import crossentropy.torch as ct
import crossentropy.triton
from crossentropy.torch import dispatch
from crossentropy.triton import (
    distill_rows,
    distillation_gradient,
    distillation_kernels,
    distillation_losses,
    distillation_statistics,
    interpreted,
)

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy, in masked lanes

TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 2e-5, torch.float16: 2e-5}
# the gradient is rounded once to the student's dtype
GRAD_TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 2e-5,
    torch.bfloat16: 1e-2,
    torch.float16: 2e-3,
}


@dataclass(frozen=True)
class Settings:
    divergence: str = "jsd"
    beta: float = 0.5
    temperature: float = 1.0
    soft_weight: float = 1.0
    hard_weight: float = 0.0


# divergence, beta, temperature, soft weight, hard weight
CASES = [
    Settings("forward_kl", 0.5, 1.0, 1.0, 0.0),
    Settings("reverse_kl", 0.5, 0.7, 1.0, 0.5),
    Settings("jsd", 0.5, 2.0, 0.5, 0.5),
    Settings("jsd", 0.2, 1.0, 1.0, 0.3),
    Settings("jsd", 0.0, 1.5, 1.0, 0.0),
    Settings("jsd", 1.0, 0.5, 0.7, 0.0),
    Settings("jsd", 0.5, 3.0, 0.0, 1.0),
]


def test_kernels_run_under_the_interpreter():
    assert os.environ["TRITON_INTERPRET"] == "1"
    assert interpreted(distillation_kernels._rows_kernel)


def reference(student, teacher, target, live, d):
    """Per-row losses in float64 by the definitions (student differentiable)."""
    u = student.double() / d.temperature
    v = teacher.double() / d.temperature
    log_ps = torch.log_softmax(u, dim=1)
    log_pt = torch.log_softmax(v, dim=1)
    ps, pt = log_ps.exp(), log_pt.exp()

    def kl(p, log_p, log_q):  # sum p log(p / q), terms with p = 0 exactly 0
        return torch.where(p > 0, p * (log_p - log_q), 0.0).sum(1)

    beta = d.beta
    if d.divergence == "forward_kl" or (d.divergence == "jsd" and beta == 0):
        div = kl(pt, log_pt, log_ps)
    elif d.divergence == "reverse_kl" or (d.divergence == "jsd" and beta == 1):
        div = kl(ps, log_ps, log_pt)
    else:
        log_m = torch.log(beta * pt + (1 - beta) * ps)
        div = beta * kl(pt, log_pt, log_m) + (1 - beta) * kl(ps, log_ps, log_m)
    loss = d.soft_weight * div
    if d.hard_weight:
        ce = -torch.log_softmax(student.double(), dim=1).gather(1, target.clamp(min=0)[:, None])
        loss = loss + d.hard_weight * ce.squeeze(1)
    return torch.where(live, loss, 0.0)


def assert_near(ours, expected, rtol, name):
    scale = expected.abs().max().clamp_min(1.0) if expected.numel() else 1.0
    error = (ours.double() - expected.double()).abs().max() if ours.numel() else 0.0
    assert error <= rtol * scale, (
        f"{name}: error {float(error):.3g} > {rtol:g} x {float(scale):.3g}"
    )


@pytest.fixture(params=[None, 16], ids=["one-tile", "tiles-of-16"])
def tile(request, monkeypatch):
    """The default tile, or tiles of 16 columns: several tiles with a ragged last one,
    through the online merge."""
    if request.param is not None:
        monkeypatch.setattr(distillation_kernels, "MAX_BLOCK_CLASSES", request.param)
    return request.param


def problem(rows, classes, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    student = (torch.randn(rows, classes, generator=gen, dtype=torch.float64) * 3).to(dtype)
    teacher = (torch.randn(rows, classes, generator=gen, dtype=torch.float64) * 3).to(dtype)
    target = torch.randint(0, max(classes, 1), (rows,), generator=gen)
    live = torch.ones(rows, dtype=torch.bool)
    live[1::3] = False
    target = torch.where(live, target, -1)
    scale = torch.randn(rows, generator=gen, dtype=torch.float64)
    return student, teacher, target, live, scale


SHAPES = [(0, 5), (1, 1), (1, 7), (3, 16), (5, 40), (7, 33)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_forward_and_gradient_match_float64(dtype, shape, tile):
    rows, classes = shape
    student, teacher, target, live, scale = problem(rows, classes, dtype, rows * 100 + classes)
    first = (rows + classes) % len(CASES)
    for d in (CASES[first], CASES[(first + 3) % len(CASES)], CASES[(first + 5) % len(CASES)]):
        x = student.clone().requires_grad_()
        losses = distillation_losses(x, teacher, target, live, d)
        expected_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        assert losses.dtype == expected_dtype and losses.shape == (rows,)
        (losses.double() * scale).sum().backward()
        xr = student.double().clone().requires_grad_()
        lr = reference(xr, teacher, target, live, d)
        (lr * scale).sum().backward()
        assert_near(losses, lr.detach(), TOLERANCE[dtype], f"loss {d}")
        assert x.grad.dtype == dtype
        assert_near(x.grad, xr.grad, GRAD_TOLERANCE[dtype], f"gradient {d}")
        assert (x.grad[~live] == 0).all() and (losses[~live] == 0).all()


@pytest.mark.parametrize("d", CASES, ids=lambda d: f"{d.divergence}-{d.beta}-{d.hard_weight}")
def test_every_setting_on_ragged_tiles(d, tile):
    student, teacher, target, live, scale = problem(5, 37, torch.float64, 11)
    x = student.clone().requires_grad_()
    losses = distillation_losses(x, teacher, target, live, d)
    (losses * scale).sum().backward()
    xr = student.clone().requires_grad_()
    lr = reference(xr, teacher, target, live, d)
    (lr * scale).sum().backward()
    assert_near(losses, lr.detach(), 1e-12, "loss")
    assert_near(x.grad, xr.grad, 1e-12, "gradient")
    assert (losses[live] > 0).all()


def test_row_functions_in_one_launch_and_in_place(tile):
    """distill_rows (the three phases in one launch, the gradient written over the student)
    equals statistics then gradient, and the reference."""
    d = Settings("jsd", 0.3, 1.3, 0.6, 0.4)
    student, teacher, target, live, scale = problem(6, 45, torch.float32, 5)
    losses, stats = distillation_statistics(student, teacher, target, live, d)
    grad = distillation_gradient(student, teacher, target, live, stats, d, scale)
    chunk = student.clone()
    fused_losses, written = distill_rows(chunk, teacher, target, live, d, scale, out=chunk)
    assert written is chunk
    assert torch.equal(fused_losses, losses)
    assert torch.equal(chunk, grad)
    xr = student.double().clone().requires_grad_()
    lr = reference(xr, teacher, target, live, d)
    (lr * scale).sum().backward()
    assert_near(losses, lr.detach(), 2e-5, "loss")
    assert_near(grad, xr.grad, 2e-5, "gradient")
    # rows whose scale is 0 are exactly 0, whatever their logits
    zero = torch.where(torch.arange(6) % 2 == 0, 0.0, scale)
    hostile = student.clone()
    hostile[0] = torch.nan
    _, grad = distill_rows(hostile, teacher, target, live, d, zero)
    assert (grad[0] == 0).all() and (grad[2] == 0).all()
    only_losses, none = distill_rows(student, teacher, target, live, d)
    assert none is None and torch.equal(only_losses, losses)


def hostile():
    inf, nan = torch.inf, torch.nan
    rows = [
        # student, teacher
        ([0.0, -inf, 1.0, 2.0], [1.0, 0.5, 0.0, -1.0]),  # student -inf where the teacher has mass
        ([0.0, 1.0, 1.0, 2.0], [1.0, -inf, 0.0, -1.0]),  # teacher -inf where the student has mass
        ([-inf, -inf, 1.0, 2.0], [-inf, -inf, 0.0, -1.0]),  # both -inf on the same classes
        ([-inf, -inf, -inf, -inf], [1.0, 0.0, 0.0, 0.0]),  # no student distribution
        ([0.0, nan, 1.0, 2.0], [1.0, 0.5, 0.0, -1.0]),  # NaN student
        ([0.0, 1.0, 1.0, 2.0], [1.0, nan, 0.0, -1.0]),  # NaN teacher
        ([1e30, -1e30, 0.0, 1e30], [-1e30, 1e30, 0.0, 5.0]),  # huge, finite
        ([0.0, 2000.0, 0.0, 0.0], [0.0, 2000.0, 0.0, 0.0]),  # equal one-hot rows: D = 0
        ([inf, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]),  # +inf student
    ]
    student = torch.tensor([r[0] for r in rows], dtype=torch.float64)
    teacher = torch.tensor([r[1] for r in rows], dtype=torch.float64)
    return student, teacher


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hostile_rows_give_the_decided_numbers(dtype, tile):
    student, teacher = hostile()
    student, teacher = student.to(dtype), teacher.to(dtype)
    rows = student.shape[0]
    target = torch.full((rows,), 3)
    live = torch.ones(rows, dtype=torch.bool)
    scale = torch.ones(rows, dtype=torch.float64)
    out = {}
    for name, beta in (("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.1)):
        d = Settings(name, beta, 1.0, 1.0, 0.0)
        losses, grad = distill_rows(student, teacher, target, live, d, scale)
        out[name, beta] = losses, grad
    forward, backward = out["forward_kl", 0.5][0], out["reverse_kl", 0.5][0]
    assert forward[7] == 0 and backward[7] == 0
    assert forward[0] == torch.inf and forward[1].isfinite()  # the math: +inf
    assert backward[1] == torch.inf and backward[0].isfinite()
    for beta in (0.5, 0.1):
        losses, grad = out["jsd", beta]
        # JSD is finite (and its gradient) for finite or -inf logits, where a distribution is
        assert losses[[0, 1, 2, 7]].isfinite().all() and grad[[0, 1, 2, 7]].isfinite().all()
        assert (losses[[0, 1, 2]] > 0).all()
    for losses, grad in out.values():
        assert losses[2].isfinite() and grad[2].isfinite().all()
        # identical one-hot rows: D = 0 (JSD up to log M's rounding)
        assert losses[7].abs() <= 1e-6 and (grad[7].abs() <= 1e-6).all()
        assert losses[3].isnan() and losses[4].isnan() and losses[5].isnan()
        assert grad[4].isnan().any()
        assert not losses[6].isnan()  # huge finite logits: nothing NaN
        assert not grad[6].isnan().any()
    # -inf classes of both models add exactly nothing: row 2 equals its two finite classes
    d = Settings("jsd", 0.5, 1.0, 1.0, 0.0)
    two, _ = distill_rows(student[2:3, 2:], teacher[2:3, 2:], target[:1] * 0, live[:1], d)
    assert_near(out["jsd", 0.5][0][2:3], two, 1e-6, "-inf classes")
    # the huge row against float64 by definition (its log-softmax is exact)
    expected = reference(
        student[6:7].double(), teacher[6:7].double(), target[:1], live[:1], Settings()
    )
    assert_near(out["jsd", 0.5][0][6:7], expected, 1e-6, "huge row")


def test_arguments_are_checked_before_a_launch():
    d = Settings()
    z = torch.randn(3, 5)
    ids = torch.tensor([0, 1, 2])
    live = torch.ones(3, dtype=torch.bool)
    with pytest.raises(ValueError, match="student"):
        distillation_statistics(torch.randn(5), z, ids, live, d)
    with pytest.raises(TypeError, match="teacher"):
        distillation_statistics(z, z.to(torch.int32), ids, live, d)
    with pytest.raises(ValueError, match="teacher"):
        distillation_statistics(z, torch.randn(3, 6), ids, live, d)
    with pytest.raises(ValueError, match="target"):
        distillation_statistics(z, z, ids[:2], live, d)
    with pytest.raises(TypeError, match="target"):
        distillation_statistics(z, z, ids.to(torch.int32), live, d)
    with pytest.raises(TypeError, match="live"):
        distillation_statistics(z, z, ids, ids, d)
    for bad, match in (
        (Settings(divergence="kl"), "divergence"),
        (Settings(beta=1.5), "beta"),
        (Settings(temperature=0.0), "temperature"),
        (Settings(soft_weight=float("nan")), "soft_weight"),
        (Settings(hard_weight=float("inf")), "hard_weight"),
    ):
        with pytest.raises(ValueError, match=match):
            distillation_statistics(z, z, ids, live, bad)
    _, stats = distillation_statistics(z, z + 1, ids, live, d)
    ones = torch.ones(3)
    with pytest.raises(ValueError, match="stats"):
        distillation_gradient(z, z, ids, live, stats[:, :2], d, ones)
    with pytest.raises(ValueError, match="row_scale"):
        distillation_gradient(z, z, ids, live, stats, d, ones[:2])
    with pytest.raises(ValueError, match="out"):
        distillation_gradient(z, z, ids, live, stats, d, ones, out=torch.empty(3, 4))
    with pytest.raises(ValueError, match="out"):
        distillation_gradient(z, z, ids, live, stats, d, ones, out=torch.empty(5, 3).t())
    teacher = z + 1
    with pytest.raises(ValueError, match="out"):
        distill_rows(z, teacher, ids, live, d, ones, out=teacher)
    with pytest.raises(ValueError, match="out"):
        distill_rows(z, teacher, ids, live, d, out=z)
    # a target outside [0, V) is never read: its logit counts as 0
    hard = Settings(hard_weight=1.0, soft_weight=0.0)
    far, _ = distillation_statistics(z, teacher, torch.tensor([0, 1_000_000, -7]), live, hard)
    lse = torch.logsumexp(z.double(), dim=1)
    assert_near(far[1:], lse[1:], 1e-6, "no target")
    assert_near(far[:1], lse[:1] - z[0, 0].double(), 1e-6, "target")


def test_create_graph_runs_the_differentiable_reference():
    d = Settings("jsd", 0.3, 0.8, 0.6, 0.4)
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(3, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    teacher = torch.randn(3, 7, dtype=torch.float64, generator=gen)
    target = torch.tensor([1, 4, -1])
    live = torch.tensor([True, True, False])
    (grad,) = torch.autograd.grad(
        distillation_losses(x, teacher, target, live, d).sum(), x, create_graph=True
    )
    expected_losses = reference(x, teacher, target, live, d)
    (expected,) = torch.autograd.grad(expected_losses.sum(), x, create_graph=True)
    assert_near(grad, expected, 1e-12, "gradient")
    (second,) = torch.autograd.grad(grad.square().sum(), x)
    (second_expected,) = torch.autograd.grad(expected.square().sum(), x)
    assert_near(second, second_expected, 1e-10, "second derivative")


def test_public_distillation_loss_takes_impl_triton(tile):
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(2, 3, 20, generator=gen)
    teacher = torch.randn(2, 3, 20, generator=gen)
    target = torch.randint(0, 20, (2, 3), generator=gen)
    target[0, 1] = -100
    settings = dict(divergence="jsd", beta=0.3, temperature=0.8, soft_weight=0.7, hard_weight=0.4)
    for reduction in ("mean", "sum", "none"):
        results = []
        for impl in ("triton", "torch"):
            x = student.clone().requires_grad_()
            t = teacher.clone().requires_grad_()
            loss = ct.distillation_loss(x, t, target, reduction=reduction, impl=impl, **settings)
            (loss * torch.linspace(0.5, 1.5, loss.numel()).reshape(loss.shape)).sum().backward()
            assert t.grad is None  # the teacher is never differentiated
            results.append((loss.detach(), x.grad))
        (loss, grad), (expected, expected_grad) = results
        assert loss.shape == expected.shape
        assert_near(loss, expected, 1e-5, f"loss {reduction}")
        assert_near(grad, expected_grad, 1e-5, f"gradient {reduction}")
        assert (grad[0, 1] == 0).all()
    # the teacher's log-probabilities taken as its logits
    log_probs = torch.log_softmax(teacher, dim=-1)
    ours = ct.distillation_loss(
        student, teacher_log_probs=log_probs, divergence="reverse_kl", impl="triton"
    )
    theirs = ct.distillation_loss(
        student, teacher_log_probs=log_probs, divergence="reverse_kl", impl="torch"
    )
    assert_near(ours, theirs, 1e-5, "teacher_log_probs")


def test_auto_takes_the_kernels_where_triton_is_available(monkeypatch):
    """impl="auto" runs the kernels where dispatch.triton_available says so (CUDA tensors;
    here CPU tensors under the interpreter, Triton made "available" for them)."""
    calls: list[int] = []
    original = distillation_kernels.distillation_losses
    monkeypatch.setattr(
        crossentropy.triton, "distillation_losses", lambda *a: calls.append(1) or original(*a)
    )
    student, teacher, target, live, _ = problem(4, 9, torch.float32, 2)
    target = torch.where(live, target, -100)
    plain = ct.distillation_loss(student, teacher, target, hard_weight=0.5)
    assert not calls
    monkeypatch.setattr(dispatch, "triton_available", lambda device: True)
    ours = ct.distillation_loss(student, teacher, target, hard_weight=0.5)
    assert calls
    assert_near(ours, plain, 1e-5, "auto")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_hostile_rows_agree_with_the_torch_operations_path(dtype, temperature, tile):
    student, teacher = hostile()
    student, teacher = student.to(dtype), teacher.to(dtype)
    rows = student.shape[0]
    target = torch.tensor([2, 3, 3, 0, 1, 2, 1, 1, 2])
    target[7] = -100
    gen = torch.Generator().manual_seed(3)
    scale = torch.rand(rows, generator=gen, dtype=torch.float64) + 0.5
    for divergence, beta, hard in (
        ("forward_kl", 0.5, 0.0),
        ("reverse_kl", 0.5, 0.5),
        ("jsd", 0.5, 0.0),
        ("jsd", 0.2, 1.0),
    ):
        outs = []
        for impl in ("triton", "auto"):
            x = student.clone().requires_grad_()
            loss = ct.distillation_loss(
                x, teacher, target, divergence=divergence, beta=beta, temperature=temperature,
                hard_weight=hard, reduction="none", impl=impl,
            )  # fmt: skip
            (loss.double() * scale).sum().backward()
            outs.append((loss.detach(), x.grad))
        for ours, theirs, name in zip(outs[0], outs[1], ("loss", "gradient"), strict=True):
            # the huge row: the kernels' log p is exact, the torch operations' rounds
            # (the float64 reference decides it: test_hostile_rows_give_the_decided_numbers)
            ours, theirs = ours[[0, 1, 2, 3, 4, 5, 7, 8]], theirs[[0, 1, 2, 3, 4, 5, 7, 8]]
            what = f"{name} {divergence} {beta}"
            assert torch.equal(ours.isnan(), theirs.isnan()), what
            assert torch.equal(ours.isinf() & (ours > 0), theirs.isinf() & (theirs > 0)), what
            assert torch.equal(ours.isinf() & (ours < 0), theirs.isinf() & (theirs < 0)), what
            finite = ours.isfinite()
            rtol = 1e-2 if name == "gradient" and dtype == torch.bfloat16 else 1e-5
            assert torch.allclose(
                ours[finite].double(), theirs[finite].double(), rtol=rtol, atol=rtol
            ), what


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_distillation_head_cuda_branch_on_the_interpreter(dtype, monkeypatch):
    """linear_distillation_loss with the head's whole-row Triton branch taken (Triton
    "available" for these CPU tensors, as it is for CUDA ones) against the torch
    operations."""
    gen = torch.Generator().manual_seed(7)
    hidden = torch.randn(9, 8, generator=gen).to(dtype)
    weight = torch.randn(21, 8, generator=gen).to(dtype)
    teacher_hidden = torch.randn(9, 6, generator=gen).to(dtype)
    teacher_weight = torch.randn(21, 6, generator=gen).to(dtype)
    target = torch.randint(0, 21, (9,), generator=gen)
    target[4] = -100
    results = []
    calls: list[int] = []
    original = distillation_kernels.distill_rows
    monkeypatch.setattr(
        crossentropy.triton, "distill_rows", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    for available in (False, True):
        if available:
            monkeypatch.setattr(dispatch, "triton_available", lambda device: True)
        calls.clear()
        x = hidden.clone().requires_grad_()
        w = weight.clone().requires_grad_()
        loss = ct.linear_distillation_loss(
            x, w, teacher_hidden, teacher_weight, target, divergence="jsd", beta=0.3,
            temperature=0.8, soft_weight=0.6, hard_weight=0.4, chunk_size=4,
        )  # fmt: skip
        loss.backward()
        results.append((loss.detach(), x.grad, w.grad, len(calls)))
    plain, kernels = results
    assert plain[3] == 0 and kernels[3] >= 3  # the branch ran, on every chunk
    rtol = 1e-5 if dtype == torch.float32 else 2e-2
    for ours, theirs, name in zip(kernels[:3], plain[:3], ("loss", "dx", "dw"), strict=True):
        assert_near(ours, theirs, rtol, name)
