"""The C token kernels (impl="fused", what impl="auto" runs on CPU) against the float64
computation: log p(target) and the softmax entropy per row, and the gradient for random
incoming gradients on both, over generated shapes, dtypes, temperatures, ignore_index and
strided/sliced logits; the hostile rows (±inf, all -inf, NaN, ±1e30, one-hot) against the
torch-ops row math; the engine's token head over whole rows against impl="torch"."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossentropy.torch import _kernel, _tokens, heads, linear_token_log_probs, token_log_probs

pytestmark = pytest.mark.skipif(
    not _kernel.fused_available(), reason="no C compiler: the kernel cannot be built"
)

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
TEMPERATURES = (0.01, 0.7, 1.0, 3.0, 1e3)


def reference64(z, y, temperature, ignore_index, g, h):
    """log p_y, H and d(sum g log p_y + h H)/dz in float64 on the given (rounded) logits,
    by torch's log_softmax under autograd, independent of the library."""
    x = z.detach().double().requires_grad_(True)
    live = y != ignore_index
    log_p = torch.log_softmax(x / temperature, dim=1)
    picked = log_p.gather(1, torch.where(live, y, 0).unsqueeze(1)).squeeze(1)
    entropy = -(log_p.exp() * log_p).sum(1)
    log_prob = torch.where(live, picked, 0.0)
    entropy = torch.where(live, entropy, 0.0)
    (grad,) = torch.autograd.grad((g * log_prob + h * entropy).sum(), x) if x.numel() else (x,)
    return log_prob.detach(), entropy.detach(), grad


def kernel_path(z, y, temperature, ignore_index, g, h, impl="fused"):
    x = z.detach().clone().requires_grad_(True)
    log_prob, entropy = token_log_probs(
        x, y, temperature=temperature, ignore_index=ignore_index, return_entropy=True, impl=impl
    )
    (log_prob * g).sum().add((entropy * h).sum()).backward()
    return log_prob.detach(), entropy.detach(), x.grad


def compute_eps(dtype):
    return torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps


@settings(max_examples=120, deadline=None)
@given(
    rows=st.sampled_from([0, 1, 3, 17, 70]),
    width=st.sampled_from([1, 2, 15, 16, 17, 33, 255, 1000]),
    dtype=st.sampled_from(DTYPES),
    temperature=st.sampled_from(TEMPERATURES),
    ignore_index=st.sampled_from([-100, 0, 1]),
    layout=st.sampled_from(["contiguous", "row-strided", "sliced", "transposed"]),
    spread=st.sampled_from([0.5, 4.0, 30.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_kernel_equals_the_float64_computation(
    rows, width, dtype, temperature, ignore_index, layout, spread, seed
) -> None:
    torch.manual_seed(seed)
    base = (torch.randn(rows, width + 7, dtype=torch.float64) * spread).to(dtype)
    if layout == "row-strided":
        z = base[:, :width]
    elif layout == "sliced":
        z = base[:, 7:][::1]
    elif layout == "transposed":
        z = base[:, :width].t().contiguous().t()
    else:
        z = base[:, :width].contiguous()
    y = torch.randint(0, width, (rows,))
    if rows:
        y[0] = ignore_index if ignore_index < 0 else y[0]
    g, h = torch.randn(rows, dtype=torch.float64), torch.randn(rows, dtype=torch.float64)
    if rows > 2:
        g[2] = h[2] = 0.0
    want_lp, want_h, want_grad = reference64(z, y, temperature, ignore_index, g, h)
    got_lp, got_h, got_grad = kernel_path(z, y, temperature, ignore_index, g, h)
    eps = compute_eps(dtype)
    u = z.double() / temperature
    size = 1 + (u.abs().amax().item() if u.numel() else 0.0) + math.log(width)
    # the outputs within the compute dtype's error (float32 for half logits)
    out_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert got_lp.dtype == got_h.dtype == out_dtype
    torch.testing.assert_close(got_lp.double(), want_lp, rtol=0, atol=64 * eps * size)
    torch.testing.assert_close(got_h.double(), want_h, rtol=0, atol=64 * eps * size)
    assert (got_h >= 0).all()
    # the gradient: the compute dtype's error, plus one rounding of its own dtype
    assert got_grad.dtype == dtype
    row_scale = (g.abs() + h.abs() * (130 + math.log(width))) / temperature
    bound = 64 * eps * row_scale.unsqueeze(1) + torch.finfo(dtype).eps * want_grad.abs()
    if dtype == torch.float16:
        bound = bound + 2.0**-24  # float16's subnormal step
    error = (got_grad.double() - want_grad).abs()
    assert (error <= bound).all(), (error - bound).max()
    if rows > 2:  # g = h = 0: exactly 0
        assert (got_grad[2] == 0).all()
    if rows:
        assert (got_lp[y == ignore_index] == 0).all() and (got_grad[y == ignore_index] == 0).all()


def hostile_rows(width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows with +inf, -inf, all -inf, NaN, ±1e30 and one-hot softmaxes, with targets at
    and beside the extremes (float64: each dtype takes these values rounded)."""
    z = torch.randn(14, width, dtype=torch.float64)
    z[0, 3] = math.inf  # target beside a +inf
    z[1, 3] = math.inf  # target at it
    z[2, 5] = -math.inf  # a class of probability 0, not the target
    z[3, 5] = -math.inf  # the target at -inf
    z[4] = -math.inf  # no distribution
    z[5, 7] = math.nan
    z[6, 2] = 1e30  # one-hot
    z[7, 2] = -1e30
    z[8] = 0.0
    z[8, 4] = 1e4  # one-hot at every temperature used here
    z[9, ::2] = -math.inf
    z[10, 1], z[10, 2] = math.inf, -math.inf
    z[11] = -1e30
    z[12, 6] = 1e30
    z[12, 7] = -math.inf
    y = torch.tensor([0, 3, 0, 5, 1, 0, 2, 0, 4, 1, 0, 3, 6, 2])
    return z, y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", [0.01, 1.0, 3.0])
def test_hostile_rows_equal_the_torch_ops_row_math(dtype, temperature) -> None:
    """The decided numbers of crossentropy.torch._tokens: the kernel and the torch-ops
    statistics, outputs and gradient agree (NaN and ±inf in the same places), and a
    one-hot softmax has entropy exactly 0."""
    z64, y = hostile_rows(40)
    z = z64.to(dtype)
    stats = _kernel.token_statistics(z, y, temperature)
    ops = _tokens.token_statistics(z, y, temperature)
    eps = compute_eps(dtype)
    for name in ("peak", "mass", "target"):
        torch.testing.assert_close(
            getattr(stats, name), getattr(ops, name), rtol=16 * eps, atol=0, equal_nan=True
        )
    got = _tokens.token_outputs(stats)
    want = _tokens.token_outputs(ops)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=64 * eps, atol=64 * eps, equal_nan=True)
    entropy = got[1]
    assert entropy[8] == 0  # one-hot
    if dtype != torch.float16:  # where 1e30 is finite
        assert entropy[6] == 0 and entropy[12] == 0
    assert math.isnan(entropy[4]) and math.isnan(entropy[5]) and math.isnan(entropy[0])
    assert got[0][0] == -math.inf and math.isnan(got[0][1]) and got[0][3] == -math.inf
    g = torch.randn(14, dtype=stats.peak.dtype)
    h = torch.randn(14, dtype=stats.peak.dtype)
    h[0] = h[1] = h[3] = 0.0  # the finite log p_y gradients beside +inf / at -inf
    g[13] = h[13] = 0.0
    grad = _kernel.token_gradient(z.clone(), y, ops, temperature, g, h)
    assert grad.dtype == dtype
    reference = _tokens.logit_gradient(z, y, ops, temperature, g, h)
    torch.testing.assert_close(
        grad.to(reference.dtype),
        reference.to(dtype).to(reference.dtype),
        rtol=2 * torch.finfo(dtype).eps,
        atol=64 * eps / temperature,
        equal_nan=True,
    )
    assert torch.isfinite(grad[0]).sum() == 39 and torch.isfinite(grad[3]).all()
    assert (grad[13] == 0).all() and grad[4].isnan().all()


def test_impl_torch_agrees_on_hostile_rows() -> None:
    """The whole function (auto = the kernel on CPU) and the reference under autograd give
    the same outputs on the hostile rows."""
    z, y = hostile_rows(33)
    z = z.float()
    for temperature in (0.7, 1.0):
        fused = token_log_probs(z, y, temperature=temperature, return_entropy=True)
        torch_ = token_log_probs(z, y, temperature=temperature, return_entropy=True, impl="torch")
        for a, b in zip(fused, torch_, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("known", [False, True])
def test_token_head_rows_equal_the_block_methods(dtype, known) -> None:
    """TokenHead.rows on CPU (the kernels, gradient over z in its dtype) against the block
    methods (torch operations) on the hostile rows, with and without known statistics, a
    slice of the vocabulary (start) included."""
    z64, y = hostile_rows(24)
    z = z64.to(dtype)
    y = y + 10  # the slice holds classes [10, 34)
    y[7] = 2  # another slice's class: not here
    g, h = torch.randn(14), torch.randn(14)
    g[13] = h[13] = 0.0

    def head(**extra):
        return heads.TokenHead(
            y, temperature=0.7, ignore_index=-100, start=10, grad_log_prob=g, grad_entropy=h,
            log_prob=torch.zeros(14), entropy=torch.zeros(14), keep=True, **extra,
        )  # fmt: skip

    blocks = head()
    blocks.begin(slice(0, 14))
    blocks.absorb(z, 0)
    blocks.finish()
    want = blocks.block_gradient(z.clone(), 0)
    rows = head(known=blocks.kept) if known else head()
    got = z.clone()
    rows.rows(got, slice(0, 14), True)
    assert got.dtype == dtype
    if not known:
        for a, b in ((rows.log_prob, blocks.log_prob), (rows.entropy, blocks.entropy)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, equal_nan=True)
    torch.testing.assert_close(
        got.float(), want.to(dtype).float(), rtol=2 * torch.finfo(dtype).eps, atol=1e-4,
        equal_nan=True,
    )  # fmt: skip
    assert (got[13] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_linear_token_log_probs_through_the_engine_equal_impl_torch(dtype) -> None:
    torch.manual_seed(3)
    tokens, hidden, vocabulary = 37, 24, 301
    x = torch.randn(tokens, hidden).to(dtype)
    w = (torch.randn(vocabulary, hidden) / 3).to(dtype)
    y = torch.randint(0, vocabulary, (tokens,))
    y[4] = -100
    a, c = torch.randn(tokens), torch.randn(tokens)
    results = []
    for impl in ("auto", "torch"):
        xi, wi = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        log_prob, entropy = linear_token_log_probs(
            xi, wi, y, temperature=0.7, return_entropy=True, impl=impl
        )
        ((a * log_prob).sum() + (c * entropy).sum()).backward()
        results.append((log_prob.detach(), entropy.detach(), xi.grad, wi.grad))
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got.float(), want.float(), rtol=tol, atol=tol)


def test_fused_refuses_what_it_cannot_run() -> None:
    z = torch.randn(3, 4)
    y = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"^impl='fused': the C token kernel cannot run here"):
        token_log_probs(z.to("meta"), y.to("meta"), impl="fused")
