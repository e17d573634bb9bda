"""Distillation on logits: the slice math of crossentropy.torch._distill and the public
distillation_loss / DistillationLoss, against the unfused float64 computation written here
with plain torch (log_softmax, the KLs by their definitions, autograd)."""

from __future__ import annotations

import itertools
import math
import re
from unittest import mock

import pytest

torch = pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from crossentropy.torch import (  # noqa: E402
    DistillationLoss,
    _distill,
    distillation_loss,
    native,
)

DIVERGENCES = [
    ("forward_kl", 0.5),
    ("reverse_kl", 0.5),
    ("jsd", 0.0),
    ("jsd", 0.3),
    ("jsd", 0.5),
    ("jsd", 1.0),
]
DTYPES = [torch.float64, torch.float32, torch.bfloat16]


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, p log(p / q) as 0 where p is 0 (differentiable there too)."""
    p = log_p.exp()
    has = p > 0
    return torch.where(has, p * (torch.where(has, log_p, 0.0) - log_q), 0.0).sum(-1)


def unfused(
    s: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor | None,
    *,
    divergence: str = "jsd",
    beta: float = 0.5,
    temperature: float = 1.0,
    ignore_index: int = -100,
    soft_weight: float = 1.0,
    hard_weight: float = 0.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """The loss of (..., V) logits at float64 from whole rows, by the definitions (the
    jsd's mixture formed from the probabilities)."""
    s, t = s.double(), t.double()
    log_ps = torch.log_softmax(s / temperature, -1)
    log_pt = torch.log_softmax(t / temperature, -1)
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0.0):
        d = kl(log_pt, log_ps)
    elif divergence == "reverse_kl" or (divergence == "jsd" and beta == 1.0):
        d = kl(log_ps, log_pt)
    else:
        m = beta * log_pt.exp() + (1 - beta) * log_ps.exp()
        # where m is 0 both p are (their terms are 0): log 1 there keeps autograd finite
        log_m = torch.log(torch.where(m > 0, m, 1.0))
        d = beta * kl(log_pt, log_m) + (1 - beta) * kl(log_ps, log_m)
    loss = soft_weight * d
    live = torch.ones(s.shape[:-1], dtype=torch.bool) if y is None else y != ignore_index
    if hard_weight:
        assert y is not None
        picked = torch.log_softmax(s, -1).gather(-1, torch.where(live, y, 0)[..., None])
        loss = loss - hard_weight * picked[..., 0]
    loss = torch.where(live, loss, 0.0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / live.sum().clamp(min=1)


def logits(shape: tuple[int, ...], seed: int, scale: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale


def settings_of(name: str, beta: float, **kwargs: float) -> _distill.Distillation:
    return _distill.check_distillation(
        name, beta, kwargs.get("temperature", 1.0), kwargs.get("soft", 1.0), kwargs.get("hard", 0.0)
    )


# --- the slice math ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "beta"), DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("seed", range(2))
def test_slices_merged_equal_whole_rows(
    name: str, beta: float, temperature: float, seed: int
) -> None:
    """Phases 1 and 2 over random slices merged, and phase 3 slice by slice, give the
    whole rows' loss and gradient, which equal the unfused computation's."""
    rows, width = 5, 23
    s, t = logits((rows, width), seed), logits((rows, width), seed + 50)
    generator = torch.Generator().manual_seed(seed)
    target = torch.randint(0, width, (rows,), generator=generator)
    live = torch.tensor([True, True, False, True, True])
    d = settings_of(name, beta, temperature=temperature, soft=0.6, hard=0.8)
    cuts = sorted(set(torch.randint(0, width + 1, (4,), generator=generator).tolist()))
    edges = [0, *cuts, width]
    pairs = list(itertools.pairwise(edges))
    lse = None
    for a, b in pairs:
        part = _distill.log_sum_exps(s[:, a:b], t[:, a:b], target, d, a)
        lse = part if lse is None else lse.merge(part)
    assert lse is not None
    sums = None
    for a, b in pairs:
        part2 = _distill.divergence_sums(s[:, a:b], t[:, a:b], lse, d)
        sums = part2 if sums is None else sums.merge(part2)
    assert sums is not None
    losses = _distill.row_losses(lse, sums, live, d)
    scale = torch.randn(rows, generator=generator, dtype=torch.float64) * live
    grad = torch.cat(
        [
            _distill.student_gradient(s[:, a:b], t[:, a:b], target, lse, sums, d, scale, a)
            for a, b in pairs
        ],
        dim=1,
    )
    whole_losses, whole_grad = _distill.distill_rows(s, t, target, live, d, scale)
    leaf = s.clone().requires_grad_()
    kwargs = dict(
        divergence=name,
        beta=beta,
        temperature=temperature,
        soft_weight=0.6,
        hard_weight=0.8,
        reduction="none",
    )
    want = unfused(leaf, t, torch.where(live, target, -100), **kwargs)  # type: ignore[arg-type]
    (want * scale).sum().backward()
    for got in (losses, whole_losses):
        torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)
    assert whole_grad is not None
    for got in (grad, whole_grad):
        torch.testing.assert_close(got, leaf.grad, rtol=1e-10, atol=1e-12)
    assert bool((grad[2] == 0).all())


def test_settings_apply_the_convention() -> None:
    assert settings_of("jsd", 0.0).divergence == "forward_kl"
    assert settings_of("jsd", 1.0) == _distill.Distillation("reverse_kl", 1.0, 1.0, 1.0, 0.0)
    assert settings_of("forward_kl", 0.7).beta == 0.0
    assert settings_of("jsd", 0.25).beta == 0.25


def test_slice_outputs_are_float32_for_narrow_logits() -> None:
    s = logits((3, 8), 0).to(torch.bfloat16)
    d = settings_of("jsd", 0.5, hard=1.0)
    lse = _distill.log_sum_exps(s, s.half(), torch.tensor([0, 1, -1]), d)
    assert lse.student.dtype == lse.teacher.dtype == torch.float32
    out = torch.empty(3, 8, dtype=torch.bfloat16)
    losses, grad = _distill.distill_rows(
        s, s, torch.tensor([0, 1, 2]), torch.ones(3, dtype=torch.bool), d, torch.ones(3), out
    )
    assert losses.dtype == torch.float32 and grad is out


# --- the public function ----------------------------------------------------------------


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    """float64: 1e-7; float32 (and half inputs, computed in float32): 1e-5 relative."""
    if dtype == torch.float64:
        return {"rtol": 1e-7, "atol": 1e-9}
    return {"rtol": 1e-5, "atol": 1e-5}


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_distillation_loss_equals_the_unfused_float64_computation(data: st.DataObject) -> None:
    lead = tuple(data.draw(st.lists(st.integers(0, 4), max_size=2), label="leading shape"))
    classes = data.draw(st.integers(1, 9), label="V")
    name = data.draw(st.sampled_from(["jsd", "jsd", "forward_kl", "reverse_kl"]), label="div")
    beta = data.draw(
        st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0.01, 0.99)), label="beta"
    )
    temperature = data.draw(st.sampled_from([1.0, 0.5, 2.5, 0.1]), label="temperature")
    with_target = data.draw(st.booleans(), label="target")
    soft, hard = data.draw(
        st.sampled_from([(1.0, 0.0), (0.5, 0.5), (0.0, 1.0), (2.0, 0.3)]), label="weights"
    )
    if not with_target:
        soft, hard = (soft or 1.0), 0.0
    ignore_index = data.draw(st.sampled_from([-100, 0, 2]), label="ignore_index")
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]), label="reduction")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    offline = data.draw(st.booleans(), label="teacher_log_probs")
    block = data.draw(st.sampled_from([1, 7, 16, native.BLOCK_ELEMENTS]), label="block")
    impl = data.draw(st.sampled_from(["auto", "auto", "torch"]), label="impl")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    scale = data.draw(st.sampled_from([1.0, 5.0, 30.0]), label="scale")

    generator = torch.Generator().manual_seed(seed)
    s = (torch.randn(*lead, classes, generator=generator, dtype=torch.float64) * scale).to(dtype)
    t = (torch.randn(*lead, classes, generator=generator, dtype=torch.float64) * scale).to(dtype)
    if offline:  # the teacher's log-probabilities, rounded to the dtype
        t = torch.log_softmax(t.double(), -1).to(dtype)
    target = None
    if with_target:
        choices = torch.tensor([*range(classes), ignore_index])
        target = choices[torch.randint(0, classes + 1, lead, generator=generator)]
    kwargs = dict(
        divergence=name,
        beta=beta,
        temperature=temperature,
        ignore_index=ignore_index,
        soft_weight=soft,
        hard_weight=hard,
        reduction=reduction,
    )
    out = torch.float64 if dtype == torch.float64 else torch.float32
    incoming = torch.randn(lead if reduction == "none" else (), generator=generator).to(out)

    leaf = s.clone().requires_grad_()
    teacher = t.clone().requires_grad_()
    teacher_kwargs = {"teacher_log_probs": teacher} if offline else {"teacher_logits": teacher}
    with mock.patch.object(native, "BLOCK_ELEMENTS", block):
        loss = distillation_loss(leaf, target=target, impl=impl, **teacher_kwargs, **kwargs)  # type: ignore[arg-type]
        assert loss.dtype == out
        assert loss.shape == (lead if reduction == "none" else ())
        (loss * incoming).sum().backward()
    assert leaf.grad is not None and leaf.grad.dtype == dtype
    assert teacher.grad is None  # the teacher is read, never differentiated

    exact = s.double().requires_grad_()
    want = unfused(exact, t, target, **kwargs)  # type: ignore[arg-type]
    (want * incoming.double()).sum().backward()
    assert exact.grad is not None
    tol = tolerances(dtype)
    torch.testing.assert_close(loss.detach().double(), want.detach(), **tol)
    if dtype.itemsize < 4:  # the float32 gradient rounded once to the logits' dtype
        eps = torch.finfo(dtype).eps
        largest = float(exact.grad.abs().max()) if exact.grad.numel() else 0.0
        atol = max(eps * largest, tol["atol"])
        torch.testing.assert_close(leaf.grad.double(), exact.grad, rtol=eps, atol=atol)
    else:
        torch.testing.assert_close(leaf.grad.double(), exact.grad, **tol)
    if target is not None:
        ignored = target == ignore_index
        assert bool((leaf.grad[ignored] == 0).all())
        if reduction == "none":
            assert bool((loss[ignored] == 0).all())


@pytest.mark.parametrize(("name", "beta"), DIVERGENCES)
@pytest.mark.parametrize("impl", ["torch", "auto"])
def test_gradcheck_and_gradgradcheck(name: str, beta: float, impl: str) -> None:
    s = logits((3, 5), 1, scale=1.5).requires_grad_()
    t = logits((3, 5), 2, scale=1.5)
    y = torch.tensor([1, -100, 4])
    for reduction in ("mean", "none"):

        def f(x: torch.Tensor, reduction: str = reduction) -> torch.Tensor:
            return distillation_loss(
                x,
                t,
                y,
                divergence=name,
                beta=beta,
                temperature=0.8,
                soft_weight=0.7,
                hard_weight=0.4,
                reduction=reduction,
                impl=impl,
            )

        assert torch.autograd.gradcheck(f, (s,))
        assert torch.autograd.gradgradcheck(f, (s,))


def test_create_graph_gives_the_reference_second_derivative() -> None:
    s = logits((4, 6), 3).requires_grad_()
    t = logits((4, 6), 4)
    grads = []
    for impl in ("auto", "torch"):
        loss = distillation_loss(s, t, impl=impl, temperature=1.5)
        (g,) = torch.autograd.grad(loss, s, create_graph=True)
        (gg,) = torch.autograd.grad((g * g).sum(), s)
        grads.append((g.detach(), gg))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-12)


def test_torch_func_grad_runs_the_reference() -> None:
    s, t = logits((3, 4), 5), logits((3, 4), 6)
    got = torch.func.grad(lambda x: distillation_loss(x, t, divergence="reverse_kl"))(s)
    leaf = s.clone().requires_grad_()
    unfused(leaf, t, None, divergence="reverse_kl").backward()
    torch.testing.assert_close(got, leaf.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["auto", "torch"])
def test_teacher_requiring_grad_gets_none(impl: str) -> None:
    s = logits((3, 4), 7).requires_grad_()
    t = logits((3, 4), 8).requires_grad_()
    for name, beta in DIVERGENCES:
        distillation_loss(s, t, divergence=name, beta=beta, impl=impl).backward()
    assert t.grad is None and s.grad is not None
    loss = distillation_loss(s, t, impl=impl)
    (none,) = torch.autograd.grad(loss, t, allow_unused=True)
    assert none is None


def test_module_equals_the_function() -> None:
    s, t = logits((2, 3, 5), 9), logits((2, 3, 5), 10)
    y = torch.tensor([[0, 1, -100], [4, 4, 2]])
    module = DistillationLoss("jsd", 0.2, 2.0, -100, 0.5, 0.5, "sum")
    want = distillation_loss(
        s, t, y, beta=0.2, temperature=2.0, soft_weight=0.5, hard_weight=0.5, reduction="sum"
    )
    assert torch.equal(module(s, t, y), want)
    assert torch.equal(module(s, target=y, teacher_log_probs=t), want)
    with pytest.raises(ValueError, match=re.escape("beta: expected a number in [0, 1]")):
        DistillationLoss(beta=2.0)


# --- hostile logits ---------------------------------------------------------------------


def test_hostile_logits_as_decided() -> None:
    inf, nan = math.inf, math.nan
    s = torch.tensor(
        [
            [1.0, 2.0, 3.0, 0.5],  # finite
            [1.0, -inf, 3.0, 0.5],  # -inf under teacher mass
            [1.0, 2.0, nan, 0.5],  # NaN
            [1e30, -1e30, 0.0, 5.0],  # huge, finite
            [1.0, -inf, 3.0, 0.5],  # -inf where the teacher is -inf too
            [inf, 2.0, 3.0, 0.5],  # +inf
        ],
        dtype=torch.float64,
    )
    t = torch.tensor(
        [
            [0.0, 1.0, 2.0, 3.0],
            [0.0, 1.0, 2.0, 3.0],
            [0.0, 1.0, 2.0, 3.0],
            [-1e30, 1e30, 3.0, 0.0],
            [0.0, -inf, 2.0, 3.0],
            [0.0, 1.0, 2.0, 3.0],
        ],
        dtype=torch.float64,
    )
    y = torch.tensor([0, 2, 1, 3, 0, 1])
    for dtype in (torch.float64, torch.float32):
        for name, beta in DIVERGENCES:
            per_path = []
            for impl in ("auto", "torch"):
                leaf = s.to(dtype).clone().requires_grad_()
                loss = distillation_loss(
                    leaf,
                    t.to(dtype),
                    y,
                    divergence=name,
                    beta=beta,
                    hard_weight=0.5,
                    reduction="none",
                    impl=impl,
                )
                loss.sum().backward()
                assert leaf.grad is not None
                per_path.append((loss.detach(), leaf.grad))
                finite = [0, 3, 4]  # finite or -inf logits with mass somewhere: finite
                if name == "forward_kl" or beta == 0.0:
                    assert loss[1] == inf  # -inf student logit under teacher mass
                    assert bool(torch.isfinite(leaf.grad[1]).all())
                else:
                    finite.append(1)
                assert bool(torch.isfinite(loss[finite]).all()), (name, beta, impl, loss)
                assert bool(torch.isfinite(leaf.grad[finite]).all()), (name, beta, impl)
                assert bool(torch.isnan(loss[2])) and bool(torch.isnan(leaf.grad[2]).all())
                assert not bool(torch.isfinite(loss[5]))  # a +inf logit: no finite answer
            (a, ga), (b, gb) = per_path
            torch.testing.assert_close(a, b, equal_nan=True, rtol=1e-5, atol=1e-5)
            rows = [0, 1, 2, 3, 4]
            torch.testing.assert_close(ga[rows], gb[rows], equal_nan=True, rtol=1e-5, atol=1e-5)
    # the finite rows agree with the unfused computation
    want = unfused(s[[0, 3]], t[[0, 3]], y[[0, 3]], hard_weight=0.5, reduction="none")
    got = distillation_loss(s[[0, 3]], t[[0, 3]], y[[0, 3]], hard_weight=0.5, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9)


def test_empty_and_fully_ignored() -> None:
    s = torch.zeros(0, 5, requires_grad=True)
    loss = distillation_loss(s, torch.zeros(0, 5))
    loss.backward()
    assert loss.item() == 0.0 and s.grad is not None and s.grad.shape == (0, 5)
    x = logits((3, 4), 1).requires_grad_()
    y = torch.full((3,), -100)
    loss = distillation_loss(x, logits((3, 4), 2), y, hard_weight=1.0)
    loss.backward()
    assert loss.item() == 0.0 and bool((x.grad == 0).all())
    single = distillation_loss(logits((4,), 3), logits((4,), 4), reduction="none")
    assert single.shape == ()


# --- bad arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda s, t, y: distillation_loss(s, t, y, divergence="kl"), ValueError,
         "divergence: expected one of 'forward_kl', 'reverse_kl', 'jsd'; got 'kl'"),
        (lambda s, t, y: distillation_loss(s, t, y, beta=1.5), ValueError,
         "beta: expected a number in [0, 1]"),
        (lambda s, t, y: distillation_loss(s, t, y, beta=-0.5), ValueError, "got -0.5"),
        (lambda s, t, y: distillation_loss(s, t, y, beta=math.nan), ValueError, "beta"),
        (lambda s, t, y: distillation_loss(s, t, y, beta=None), TypeError, "beta"),
        (lambda s, t, y: distillation_loss(s, t, y, temperature=0.0), ValueError,
         "temperature: expected a number finite and > 0; got 0.0"),
        (lambda s, t, y: distillation_loss(s, t, y, temperature=math.inf), ValueError,
         "temperature"),
        (lambda s, t, y: distillation_loss(s, t, y, soft_weight=-1.0), ValueError,
         "soft_weight: expected a number finite and >= 0; got -1.0"),
        (lambda s, t, y: distillation_loss(s, t, y, hard_weight=math.nan), ValueError,
         "hard_weight: expected a number finite and >= 0"),
        (lambda s, t, y: distillation_loss(s, t, y, soft_weight=0.0), ValueError,
         "soft_weight, hard_weight: expected at least one of them > 0"),
        (lambda s, t, y: distillation_loss(s, t, hard_weight=0.5), ValueError,
         "hard_weight: a hard-label cross-entropy term (hard_weight > 0) needs a target"),
        (lambda s, t, y: distillation_loss(s, t, y, reduction="batchmean"), ValueError,
         "reduction: expected one of 'mean', 'sum', 'none'; got 'batchmean'"),
        (lambda s, t, y: distillation_loss(s, t, y, ignore_index=1.0), TypeError,
         "ignore_index: expected an integer"),
        (lambda s, t, y: distillation_loss(s, t, y, impl="fused"), ValueError,
         "impl: distillation_loss takes 'auto', 'torch'"),
        (lambda s, t, y: distillation_loss(s, t, y, impl="fast"), ValueError,
         "impl: expected one of"),
        (lambda s, t, y: distillation_loss(s, t, y, teacher_log_probs=t), ValueError,
         "teacher_logits, teacher_log_probs: expected exactly one of them"),
        (lambda s, t, y: distillation_loss(s, None, y), ValueError, "got neither"),
        (lambda s, t, y: distillation_loss(s, t[:, :3], y), ValueError,
         "teacher_logits: expected the student's vocabulary size 4"),
        (lambda s, t, y: distillation_loss(s, teacher_log_probs=torch.cat([t, t], 1)),
         ValueError, "teacher_log_probs: expected the student's vocabulary size 4"),
        (lambda s, t, y: distillation_loss(s, t[:2], y), ValueError,
         "teacher_logits: expected the shape of student_logits (3, 4)"),
        (lambda s, t, y: distillation_loss(s, t.long(), y), ValueError,
         "teacher_logits: expected a floating-point tensor"),
        (lambda s, t, y: distillation_loss(s, t.tolist(), y), TypeError,
         "teacher_logits: expected a torch.Tensor"),
        (lambda s, t, y: distillation_loss(s, t.to("meta"), y), ValueError,
         "teacher_logits: expected a tensor on the student's device"),
        (lambda s, t, y: distillation_loss(s.long(), t, y), ValueError,
         "student_logits: expected a floating-point tensor"),
        (lambda s, t, y: distillation_loss(s[0, 0], t[0, 0], y), ValueError,
         "student_logits: expected a floating-point tensor with a class axis"),
        (lambda s, t, y: distillation_loss(s, t, y.double()), TypeError,
         "target: expected integer class indices"),
        (lambda s, t, y: distillation_loss(s, t, y[:2]), ValueError,
         "target: expected shape (3,)"),
        (lambda s, t, y: distillation_loss(s, t, y + 4), ValueError,
         "target: expected class indices in [0, 4) or ignore_index=-100; got 4"),
        (lambda s, t, y: distillation_loss(s, t, y.tolist()), TypeError,
         "target: expected a torch.Tensor or None"),
        (lambda s, t, y: distillation_loss(s, t, y.to("meta")), ValueError,
         "target: expected a tensor on the student's device"),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused_by_name(call, error, words) -> None:  # type: ignore[no-untyped-def]
    s = torch.zeros(3, 4)
    t = torch.zeros(3, 4)
    y = torch.tensor([0, 1, 2])
    with pytest.raises(error, match=re.escape(words)):
        call(s, t, y)
