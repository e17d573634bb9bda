"""linear_distillation_loss against the unfused float64 computation written here (both
models' logits, log_softmax, the KLs by their definition, torch.nn.functional.kl_div and
cross_entropy, autograd for the student's gradients) over generated divergences, beta,
temperatures, weights, ignore_index, reductions, biases, dtypes, chunk sizes and leading
shapes; the autograd corners (double backward, gradcheck, torch.func, retain_graph,
autocast, a teacher that requires grad); whole rows only; bad arguments; Liger-Kernel's
LigerFusedLinearJSDLoss on its own settings; peak memory."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from crossentropy.torch import engine, heads, linear_distillation_loss

DTYPES = (torch.float64, torch.float32, torch.bfloat16)


def kl(log_p, log_q):
    """KL(p || q) per row, by kl_div's definition (input log q, target log p)."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def reference64(
    hs,
    ws,
    bs,
    ht,
    wt,
    bt,
    y,
    *,
    divergence,
    beta,
    temperature,
    ignore_index,
    soft_weight,
    hard_weight,
    reduction,
):
    """The unfused float64 computation on the given (rounded) inputs, independent of the
    library; differentiable with respect to the student's tensors."""
    zs = hs.double() @ ws.double().T
    if bs is not None:
        zs = zs + bs.double()
    with torch.no_grad():
        zt = ht.double() @ wt.double().T
        if bt is not None:
            zt = zt + bt.double()
    log_ps = torch.log_softmax(zs / temperature, -1)
    log_pt = torch.log_softmax(zt / temperature, -1)
    if divergence == "jsd" and beta == 0:
        divergence = "forward_kl"
    if divergence == "jsd" and beta == 1:
        divergence = "reverse_kl"
    if divergence == "forward_kl":
        d = kl(log_pt, log_ps)
    elif divergence == "reverse_kl":
        d = kl(log_ps, log_pt)
    else:
        log_m = torch.logsumexp(
            torch.stack([log_pt + math.log(beta), log_ps + math.log(1 - beta)]), 0
        )
        d = beta * kl(log_pt, log_m) + (1 - beta) * kl(log_ps, log_m)
    if y is None:
        live = torch.ones(zs.shape[:-1], dtype=torch.bool)
        ce = torch.zeros_like(d)
    else:
        live = y != ignore_index
        safe = torch.where(live, y, 0)
        ce = F.cross_entropy(zs.reshape(-1, zs.shape[-1]), safe.reshape(-1), reduction="none")
        ce = ce.reshape(d.shape)
    per = torch.where(live, soft_weight * d + hard_weight * ce, 0.0)
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    return per.sum() / max(int(live.sum()), 1)


def leaves(*xs):
    return [None if x is None else x.detach().clone().requires_grad_(True) for x in xs]


def loss_and_grads(function, hs, ws, bs, incoming):
    """The loss and d(incoming . loss)/d(student input, weight, bias)."""
    hs, ws, bs = leaves(hs, ws, bs)
    loss = function(hs, ws, bs)
    total = (loss.double() * incoming).sum()
    params = [x for x in (hs, ws, bs) if x is not None]
    return [loss.detach(), *torch.autograd.grad(total, params)]


def rounding_bounds(
    hs,
    ws,
    bs,
    ht,
    wt,
    bt,
    y,
    incoming,
    *,
    temperature,
    ignore_index,
    soft_weight,
    hard_weight,
    reduction,
    **_,
):
    """How far float32 rounding alone may move the student's gradients, propagated from the
    logits' gradient by its magnitudes: G_k = p_k (log p_s,k - log p_t,k - D) / T and its
    JSD/forward-KL relatives are differences of terms of size A_k = p_s,k (|log p_s,k| +
    |log p_t,k| + |D| + 1) / T (plus the teacher's p_t,k / T), which cancel where p_s ~ p_t
    (a float32 gradient 1e-5 below them is rounding, in the unfused float32 computation
    too); the bounds are A's products with |W|, |h| and its column sums."""
    zs = hs.double() @ ws.double().T + (0 if bs is None else bs.double())
    zt = ht.double() @ wt.double().T + (0 if bt is None else bt.double())
    log_ps = torch.log_softmax(zs / temperature, -1)
    log_pt = torch.log_softmax(zt / temperature, -1)
    ps, pt = log_ps.exp(), log_pt.exp()
    d = (ps * (log_ps - log_pt)).sum(-1, keepdim=True).abs() + (pt * (log_pt - log_ps)).sum(
        -1, keepdim=True
    ).abs()
    size = soft_weight * (ps * (log_ps.abs() + log_pt.abs() + d + 1) + pt) / temperature
    size = size + hard_weight * (torch.softmax(zs, -1) + 1)
    live = torch.ones(zs.shape[:-1], dtype=torch.bool) if y is None else y != ignore_index
    scale = incoming.abs() if reduction == "none" else incoming.abs().expand(live.shape)
    if reduction == "mean":
        scale = scale / max(int(live.sum()), 1)
    size = size * torch.where(live, scale, 0.0).unsqueeze(-1)
    size = size.reshape(-1, size.shape[-1])
    h = hs.double().reshape(-1, hs.shape[-1]).abs()
    bounds = [size @ ws.double().abs(), size.T @ h, size.sum(0)]
    return [b.reshape(hs.shape) if i == 0 else b for i, b in enumerate(bounds)]


def assert_near(ours, reference, dtype, what, temperature=1.0, bound=None):
    """float64: 1e-7 relative per element; float32: 1e-5 relative to the tensor's scale
    (never below 1e-7 absolute), or within 64 float32 ulps of the ``bound`` of what
    rounding may move each entry (:func:`rounding_bounds`); bfloat16: the logits are
    rounded to bfloat16 (the products run in it), so a few of its ulps (2^-8) of the
    tensor's scale, times 1 / T below T = 1 (u = z / T carries the logits' rounding
    divided by T)."""
    ours, reference = ours.double(), reference.double()
    if dtype == torch.float64:
        torch.testing.assert_close(ours, reference, rtol=1e-7, atol=1e-12, msg=what)
        return
    rel = 1e-5 if dtype == torch.float32 else 4e-2 / min(temperature, 1.0)
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    floor = 1.0 if dtype == torch.bfloat16 else 1e-2
    allowed = torch.full_like(reference, rel * max(scale, floor))
    if bound is not None and dtype == torch.float32:
        allowed = torch.maximum(allowed, 64 * 2**-24 * bound.reshape(allowed.shape))
    error = (ours - reference).abs()
    assert bool((error <= allowed).all()), (what, float(error.max()), scale)


def problem(
    tokens,
    hidden_s,
    hidden_t,
    vocabulary,
    *,
    bias,
    dtype,
    seed,
    ignore_index,
    with_target=True,
    leading=None,
):
    g = torch.Generator().manual_seed(seed)
    # logits of order a few (the weights scaled by 1 / sqrt(D)), the teacher's sharper: at
    # much larger logits the float32 gradient of a KL loses digits to cancellation
    # (p_s (log p_s - log p_t - D) of terms ~ D / T), in the unfused float32 computation too
    hs = torch.randn(tokens, hidden_s, generator=g, dtype=torch.float64)
    ws = torch.randn(vocabulary, hidden_s, generator=g, dtype=torch.float64) * 2 / hidden_s**0.5
    ht = torch.randn(tokens, hidden_t, generator=g, dtype=torch.float64)
    wt = torch.randn(vocabulary, hidden_t, generator=g, dtype=torch.float64) * 3 / hidden_t**0.5
    bs = torch.randn(vocabulary, generator=g, dtype=torch.float64) if bias else None
    bt = torch.randn(vocabulary, generator=g, dtype=torch.float64) if bias else None
    y = torch.randint(0, vocabulary, (tokens,), generator=g)
    y[torch.rand(tokens, generator=g) < 0.25] = ignore_index
    if tokens > 1:  # at least one ignored token: a mean counts only the others
        y[1] = ignore_index
    incoming = torch.randn(tokens, generator=g, dtype=torch.float64)
    # rounded to the dtype once: both sides see the same numbers
    hs, ws, ht, wt = (x.to(dtype) for x in (hs, ws, ht, wt))
    bs = None if bs is None else bs.to(dtype)
    bt = None if bt is None else bt.to(dtype)
    if leading is not None:
        hs, ht = hs.reshape(*leading, hidden_s), ht.reshape(*leading, hidden_t)
        y, incoming = y.reshape(leading), incoming.reshape(leading)
    return hs, ws, bs, ht, wt, bt, (y if with_target else None), incoming


WEIGHTS = ((1.0, 0.0), (0.5, 0.5), (0.0, 1.0), (0.3, 2.0))


@settings(max_examples=50, deadline=None)
@given(
    tokens=st.integers(1, 24),
    hidden_s=st.integers(1, 7),
    hidden_t=st.integers(1, 7),
    vocabulary=st.integers(1, 40),
    divergence=st.sampled_from(["jsd", "forward_kl", "reverse_kl"]),
    beta=st.sampled_from([0.0, 1.0, 0.5, 0.1, 0.85]),
    temperature=st.sampled_from([1.0, 0.5, 2.5]),
    weights=st.sampled_from(WEIGHTS),
    with_target=st.booleans(),
    ignore_index=st.sampled_from([-100, 0]),
    bias=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    chunk=st.sampled_from(["default", "one", "small", "all"]),
    batched=st.booleans(),
    impl=st.sampled_from(["auto", "auto", "torch"]),
    seed=st.integers(0, 2**16),
)
def test_matches_the_unfused_float64_computation(
    tokens,
    hidden_s,
    hidden_t,
    vocabulary,
    divergence,
    beta,
    temperature,
    weights,
    with_target,
    ignore_index,
    bias,
    dtype,
    chunk,
    batched,
    impl,
    seed,
):
    """Each example under every reduction (a mean counts the tokens not ignored)."""
    for reduction in ("mean", "sum", "none"):
        check_against_float64(
            tokens,
            hidden_s,
            hidden_t,
            vocabulary,
            divergence,
            beta,
            temperature,
            weights,
            with_target,
            ignore_index,
            reduction,
            bias,
            dtype,
            chunk,
            batched,
            impl,
            seed,
        )


def check_against_float64(
    tokens,
    hidden_s,
    hidden_t,
    vocabulary,
    divergence,
    beta,
    temperature,
    weights,
    with_target,
    ignore_index,
    reduction,
    bias,
    dtype,
    chunk,
    batched,
    impl,
    seed,
):
    soft_weight, hard_weight = weights
    if not with_target:  # no cross entropy without a target; some divergence then
        soft_weight, hard_weight = soft_weight or 1.0, 0.0
    leading = (2, tokens) if batched else None
    hs, ws, bs, ht, wt, bt, y, incoming = problem(
        tokens * (2 if batched else 1),
        hidden_s,
        hidden_t,
        vocabulary,
        bias=bias,
        dtype=dtype,
        seed=seed,
        ignore_index=ignore_index,
        with_target=with_target,
        leading=leading,
    )
    chunk_size = {"default": None, "one": 1, "small": 3, "all": 10_000}[chunk]
    options = dict(
        divergence=divergence,
        beta=beta,
        temperature=temperature,
        ignore_index=ignore_index,
        soft_weight=soft_weight,
        hard_weight=hard_weight,
        reduction=reduction,
    )
    if reduction != "none":
        incoming = incoming.reshape(-1)[0]

    def ours(h, w, b):
        return linear_distillation_loss(
            h,
            w,
            ht,
            wt,
            y,
            student_bias=b,
            teacher_bias=bt,
            chunk_size=chunk_size,
            impl=impl,
            **options,
        )

    def theirs(h, w, b):
        return reference64(h, w, b, ht, wt, bt, y, **options)

    mine = loss_and_grads(ours, hs, ws, bs, incoming)
    reference = loss_and_grads(theirs, hs, ws, bs, incoming)
    assert len(mine) == len(reference) and mine[0].shape == reference[0].shape
    bounds = [None, *rounding_bounds(hs, ws, bs, ht, wt, bt, y, incoming, **options)]
    for what, a, b, bound in zip(
        ("loss", "grad_input", "grad_weight", "grad_bias"), mine, reference, bounds, strict=False
    ):
        # the gradients in the inputs' dtype, the loss float32 at least
        assert a.dtype == (torch.promote_types(dtype, torch.float32) if what == "loss" else dtype)
        assert_near(a, b, dtype, what, temperature, bound)


def test_the_teacher_is_read_never_differentiated():
    hs, ws, bs, ht, wt, bt, y, _ = problem(
        9, 4, 6, 11, bias=True, dtype=torch.float64, seed=1, ignore_index=-100
    )
    ht, wt, bt = leaves(ht, wt, bt)
    for impl in ("auto", "torch"):
        h, w, b = leaves(hs, ws, bs)
        loss = linear_distillation_loss(
            h, w, ht, wt, y, student_bias=b, teacher_bias=bt, hard_weight=0.5, impl=impl
        )
        loss.backward()
        assert ht.grad is None and wt.grad is None and bt.grad is None
        assert h.grad is not None and w.grad is not None and b.grad is not None


def test_gradcheck_and_double_backward_of_the_reference_and_of_the_engine():
    hs, ws, bs, ht, wt, bt, y, _ = problem(
        5, 3, 4, 6, bias=True, dtype=torch.float64, seed=2, ignore_index=-100
    )
    options = dict(divergence="jsd", beta=0.3, temperature=1.7, hard_weight=0.4)
    for impl in ("torch", "auto"):
        for reduction in ("mean", "none"):

            def f(h, w, b, impl=impl, reduction=reduction):
                return linear_distillation_loss(
                    h,
                    w,
                    ht,
                    wt,
                    y,
                    student_bias=b,
                    teacher_bias=bt,
                    reduction=reduction,
                    impl=impl,
                    chunk_size=2,
                    **options,
                )

            inputs = tuple(leaves(hs, ws, bs))
            assert torch.autograd.gradcheck(f, inputs)
            assert torch.autograd.gradgradcheck(f, inputs)


def test_torch_func_grad_and_retained_graph_match_autograd():
    hs, ws, _, ht, wt, _, y, _ = problem(
        7, 3, 5, 9, bias=False, dtype=torch.float64, seed=3, ignore_index=-100
    )

    def f(h, w):
        return linear_distillation_loss(h, w, ht, wt, y, hard_weight=1.0, chunk_size=3)

    def g(h, w):
        return reference64(
            h,
            w,
            None,
            ht,
            wt,
            None,
            y,
            divergence="jsd",
            beta=0.5,
            temperature=1.0,
            ignore_index=-100,
            soft_weight=1.0,
            hard_weight=1.0,
            reduction="mean",
        )

    h, w = leaves(hs, ws)
    expected = torch.autograd.grad(g(h, w), (h, w))
    found = torch.func.grad(f, argnums=(0, 1))(hs, ws)
    for a, b in zip(found, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)
    h, w = leaves(hs, ws)
    loss = f(h, w)
    first = torch.autograd.grad(3.0 * loss, (h, w), retain_graph=True)
    second = torch.autograd.grad(-2.0 * loss, (h, w))
    for a, b, e in zip(first, second, expected, strict=True):
        torch.testing.assert_close(a, 3.0 * e, rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(b, -2.0 * e, rtol=1e-7, atol=1e-12)


def test_autocast_runs_the_products_in_the_low_dtype_and_the_loss_in_float32():
    hs, ws, bs, ht, wt, bt, y, _ = problem(
        12, 8, 6, 20, bias=True, dtype=torch.float32, seed=4, ignore_index=-100
    )
    options = dict(student_bias=bs, teacher_bias=bt, hard_weight=0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_distillation_loss(hs, ws, ht, wt, y, **options)
        unfused = linear_distillation_loss(hs, ws, ht, wt, y, impl="torch", **options)
    assert ours.dtype == unfused.dtype == torch.float32
    low = [x.to(torch.bfloat16) for x in (hs, ws, ht, wt, bs, bt)]
    expected = reference64(
        *low[:2],
        low[4],
        low[2],
        low[3],
        low[5],
        y,
        divergence="jsd",
        beta=0.5,
        temperature=1.0,
        ignore_index=-100,
        soft_weight=1.0,
        hard_weight=0.5,
        reduction="mean",
    )
    # the same bfloat16-rounded operands; the logits rounded to bfloat16 on both paths
    assert abs(float(ours) - float(expected)) <= 4e-2 * max(1.0, abs(float(expected)))
    assert abs(float(ours) - float(unfused)) <= 4e-2 * max(1.0, abs(float(expected)))


def test_no_tokens_and_no_counted_tokens_give_zero():
    h = torch.zeros(0, 3, requires_grad=True)
    w = torch.randn(5, 3, requires_grad=True)
    loss = linear_distillation_loss(h, w, torch.zeros(0, 2), torch.randn(5, 2))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert h.grad.shape == (0, 3) and bool((w.grad == 0).all())
    hs, ws, _, ht, wt, _, _, _ = problem(
        4, 3, 3, 6, bias=False, dtype=torch.float64, seed=5, ignore_index=-100
    )
    h, w = leaves(hs, ws)
    loss = linear_distillation_loss(h, w, ht, wt, torch.full((4,), -100), hard_weight=1.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and bool((h.grad == 0).all()) and bool((w.grad == 0).all())


def test_whole_rows_only(monkeypatch):
    """Chunks are capped so that whole rows fit the engine's budget (the same numbers as
    one chunk of everything); a vocabulary wider than the budget is a clear error; the
    head refuses vocabulary blocks."""
    hs, ws, bs, ht, wt, bt, y, _ = problem(
        10, 3, 4, 16, bias=True, dtype=torch.float64, seed=6, ignore_index=-100
    )
    options = dict(student_bias=bs, teacher_bias=bt, hard_weight=0.5, reduction="sum")
    whole = linear_distillation_loss(hs, ws, ht, wt, y, **options)
    seen = []
    sweep = engine.sweep

    def spy(*args, **kwargs):
        seen.append(kwargs["chunk"])
        return sweep(*args, **kwargs)

    monkeypatch.setattr(engine, "sweep", spy)
    monkeypatch.setattr(engine, "CHUNK_BYTES", 3 * 16 * 8)  # three float64 rows
    capped = linear_distillation_loss(hs, ws, ht, wt, y, chunk_size=100, **options)
    assert seen == [3]
    torch.testing.assert_close(capped, whole, rtol=1e-12, atol=0)
    monkeypatch.setattr(engine, "CHUNK_BYTES", 16 * 8 - 1)
    with pytest.raises(ValueError, match="whole rows"):
        linear_distillation_loss(hs, ws, ht, wt, y, **options)
    head = heads.DistillationHead(ht, wt, bt, _options(), y, y != -100)
    for call in (
        lambda: head.begin(slice(0, 2)),
        lambda: head.absorb(hs, 0),
        lambda: head.finish(),
        lambda: head.block_gradient(hs, 0),
    ):
        with pytest.raises(RuntimeError, match="whole rows"):
            call()


def _options(**kw):
    from crossentropy.torch import _distill

    values = dict(divergence="jsd", beta=0.5, temperature=1.0, soft_weight=1.0, hard_weight=0.0)
    values.update(kw)
    return _distill.check_distillation(**values)


def test_the_phases_with_hooks_give_what_whole_rows_give():
    """The head's three phases one by one (identity hooks, as one rank of a
    vocabulary-parallel run would call them) equal its whole-row path."""
    hs, ws, bs, ht, wt, bt, y, _ = problem(
        6, 3, 4, 12, bias=True, dtype=torch.float32, seed=7, ignore_index=-100
    )
    d = _options(beta=0.3, temperature=0.7, hard_weight=0.6)
    live = y != -100
    z = hs @ ws.T + bs
    out = {}
    for hooked in (False, True):
        calls = []

        def note(x, calls=calls):
            calls.append(type(x).__name__)
            return x

        losses = torch.zeros(6, dtype=torch.float64)
        head = heads.DistillationHead(
            ht,
            wt,
            bt,
            d,
            y,
            live,
            scale=0.25,
            losses=losses,
            combine_lse=note if hooked else None,
            combine_sums=note if hooked else None,
        )
        g = z.clone()
        head.rows(g, slice(0, 6), True)
        out[hooked] = (losses, g)
        assert calls == (["LogSumExps", "DivergenceSums"] if hooked else [])
    torch.testing.assert_close(out[True][0], out[False][0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out[True][1], out[False][1], rtol=1e-6, atol=1e-7)
    assert bool((out[True][1][~live] == 0).all())


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(teacher_weight=torch.randn(7, 4)), ValueError, "vocabulary of 6"),
        (dict(teacher_weight=torch.randn(6, 5)), ValueError, "teacher_weight: expected"),
        (dict(teacher_input=torch.randn(3, 4)), ValueError, "leading shape"),
        (dict(teacher_input=torch.randn(5, 4, dtype=torch.float64)), TypeError, "dtype"),
        (dict(student_weight=torch.randn(6, 2)), ValueError, "student_weight"),
        (dict(student_bias=torch.randn(5)), ValueError, "student_bias"),
        (dict(teacher_bias=torch.randn(6, dtype=torch.float64)), TypeError, "teacher_bias"),
        (dict(target=None, hard_weight=0.5), ValueError, "hard_weight"),
        (dict(target=torch.tensor([0, 1, 2, 3, 6])), ValueError, "target"),
        (dict(target=torch.zeros(4, dtype=torch.int64)), ValueError, "target"),
        (dict(target=torch.zeros(5)), TypeError, "target"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(impl="fast"), ValueError, "impl"),
        (dict(reduction="max"), ValueError, "reduction"),
        (dict(divergence="kl"), ValueError, "divergence"),
        (dict(beta=1.5), ValueError, "beta"),
        (dict(temperature=0.0), ValueError, "temperature"),
    ],
)
def test_bad_arguments_are_named(change, error, match):
    arguments = dict(
        student_input=torch.randn(5, 3),
        student_weight=torch.randn(6, 3),
        teacher_input=torch.randn(5, 4),
        teacher_weight=torch.randn(6, 4),
        target=torch.tensor([0, 1, 2, 3, 5]),
    )
    arguments.update(change)
    with pytest.raises(error, match=match):
        linear_distillation_loss(**arguments)


# --------------------------------------------------------------------------- Liger-Kernel


@pytest.mark.parametrize(
    ("beta", "temperature", "weight_hard", "weight_soft", "ignore_index", "bias"),
    [
        (0.5, 1.0, 0.5, 0.5, -100, False),
        (0.0, 2.0, 0.3, 0.7, -100, True),
        (1.0, 0.5, 0.0, 1.0, 3, False),
        (0.2, 1.0, 1.0, 0.0, -100, True),
    ],
)
def test_equals_liger_fused_linear_jsd(
    beta, temperature, weight_hard, weight_soft, ignore_index, bias
):
    """Liger-Kernel's LigerFusedLinearJSDLoss (liger_kernel.chunked_loss) normalises both
    terms by the number of tokens whose label is not ignore_index (at least 1):
    loss = weight_hard_loss * sum CE(z_s, y) / n + weight_soft_loss * sum JSD / n, the CE
    of the student's logits at temperature 1, the JSD of softmax(z / T) with its
    jsd_beta (0: KL(p_t || p_s), 1: KL(p_s || p_t), else beta KL(p_t || M) + (1 - beta)
    KL(p_s || M), M = beta p_t + (1 - beta) p_s). That is our reduction="mean" with
    divergence="jsd", beta = jsd_beta, hard_weight = weight_hard_loss, soft_weight =
    weight_soft_loss, the same temperature and ignore_index. Gradients: the student's
    input, weight and bias."""
    chunked = pytest.importorskip(
        "liger_kernel.chunked_loss", reason="liger-kernel is not installed"
    )
    hs, ws, bs, ht, wt, bt, y, _ = problem(
        40, 16, 24, 50, bias=bias, dtype=torch.float32, seed=8, ignore_index=ignore_index
    )
    liger = chunked.LigerFusedLinearJSDLoss(
        weight_hard_loss=weight_hard,
        weight_soft_loss=weight_soft,
        beta=beta,
        ignore_index=ignore_index,
        temperature=temperature,
        compiled=False,
        chunk_size=16,
    )

    def theirs(h, w, b):
        return liger(h, w, ht, wt, y, b, bt)

    def ours(h, w, b):
        return linear_distillation_loss(
            h,
            w,
            ht,
            wt,
            y,
            student_bias=b,
            teacher_bias=bt,
            divergence="jsd",
            beta=beta,
            temperature=temperature,
            ignore_index=ignore_index,
            soft_weight=weight_soft,
            hard_weight=weight_hard,
        )

    incoming = torch.tensor(1.7, dtype=torch.float64)
    mine = loss_and_grads(ours, hs, ws, bs, incoming)
    reference = loss_and_grads(theirs, hs, ws, bs, incoming)
    for what, a, b in zip(
        ("loss", "grad_input", "grad_weight", "grad_bias"), mine, reference, strict=False
    ):
        scale = float(b.abs().max())
        assert float((a.double() - b.double()).abs().max()) <= 2e-5 * max(scale, 1e-2), what


# --------------------------------------------------------------------------- peak memory

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import gc, json, re, sys
    import torch
    from crossentropy.torch import linear_distillation_loss, release_cached_buffers

    def status(key):
        with open("/proc/self/status") as f:
            return int(re.search(rf"^{key}:\\s+(\\d+)", f.read(), re.M).group(1))

    N, D, V = 1024, 32, 16000
    g = torch.Generator().manual_seed(0)
    hs = torch.randn(N, D, generator=g).requires_grad_()
    ws = (torch.randn(V, D, generator=g) / D**0.5).requires_grad_()
    ht = torch.randn(N, 2 * D, generator=g)
    wt = torch.randn(V, 2 * D, generator=g) / (2 * D) ** 0.5
    y = torch.randint(0, V, (N,), generator=g)
    result = {}
    for impl in sys.argv[1:]:
        for step in range(2):  # a warm-up step, then the measured one
            hs.grad = ws.grad = None
            release_cached_buffers()
            gc.collect()
            before = status("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            loss = linear_distillation_loss(hs, ws, ht, wt, y, hard_weight=0.5,
                                            soft_weight=0.5, impl=impl)
            loss.backward()
            peak = status("VmHWM")
            del loss
        grads = (hs.grad.numel() + ws.grad.numel()) * 4
        result[impl] = {
            "peak_extra_kib": peak - before - grads // 1024,
            "grad_w_sum": float(ws.grad.double().abs().sum()),
        }
    print(json.dumps(result))
    """
)


def test_peak_memory_is_at_most_an_eighth_of_the_unfused():
    """Peak RSS beyond the inputs and their gradients of a forward + backward at a shape
    where the logits dominate (1024 x 16000 float32 logits of each model: 66 MB each;
    inputs 6 MB), after a warm-up step, in a fresh subprocess (VmHWM reset through
    /proc/self/clear_refs; blocks over 64 KiB served by mmap so that freed memory leaves
    the process)."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    run = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, "auto", "torch"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    ours, unfused = result["auto"], result["torch"]
    print(result)
    assert ours["grad_w_sum"] == pytest.approx(unfused["grad_w_sum"], rel=1e-4)
    logits_kib = 1024 * 16000 * 4 // 1024
    assert unfused["peak_extra_kib"] > 2 * logits_kib  # the measurement sees the logits
    assert ours["peak_extra_kib"] <= unfused["peak_extra_kib"] / 8


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_half_precision_keeps_the_logit_gradient_whole(monkeypatch, reduction):
    """bfloat16 over several chunks runs engine.kept_gradient_sweep (G kept whole in
    bfloat16, dW one product at the end), never the chunked sweep with its float32
    accumulator, and gives the float64 computation's loss and gradients within bfloat16's
    rounding of the logits."""
    swept = []
    plain = engine.sweep

    def counting(*args, **kwargs):
        swept.append(kwargs.get("wants"))
        return plain(*args, **kwargs)

    monkeypatch.setattr(engine, "sweep", counting)
    hs, ws, bs, ht, wt, bt, y, incoming = problem(
        37, 8, 12, 50, bias=True, dtype=torch.bfloat16, seed=11, ignore_index=-100
    )
    options = dict(
        divergence="jsd",
        beta=0.4,
        temperature=1.5,
        ignore_index=-100,
        soft_weight=0.7,
        hard_weight=0.3,
        reduction=reduction,
    )

    def ours(h, w, b):
        return linear_distillation_loss(
            h, w, ht, wt, y, student_bias=b, teacher_bias=bt, chunk_size=10, **options
        )

    mine = loss_and_grads(ours, hs, ws, bs, incoming if reduction == "none" else 1.0)
    reference = loss_and_grads(
        lambda h, w, b: reference64(h, w, b, ht, wt, bt, y, **options),
        hs,
        ws,
        bs,
        incoming if reduction == "none" else 1.0,
    )
    # the forward of "none" has no gradients to keep: the plain sweep, without any
    assert all(not any(wants) for wants in swept)
    names = ("loss", "grad_input", "grad_weight", "grad_bias")
    for what, a, b in zip(names, mine, reference, strict=True):
        assert_near(a, b, torch.bfloat16, what, 1.5)
