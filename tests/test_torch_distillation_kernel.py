"""The C distillation kernel (_kernel.distill_rows; impl="fused" of distillation_loss, what
impl="auto" runs on CPU) against a float64 computation written here (log_softmax and the
divergences by their definition, autograd for the gradient), over generated widths, rows,
dtypes, temperatures, beta, divergences, weights, ignored rows, strided/sliced rows and
random per-row gradient scales; the hostile rows (±inf, all -inf, NaN, ±1e30, teacher mass
where the student is -inf) against the decided numbers and the torch-ops row math."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossentropy.torch import _distill, _kernel, distillation_loss

pytestmark = pytest.mark.skipif(
    not _kernel.fused_available(), reason="no C compiler: the kernel cannot be built"
)

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def divergence64(lps, lpt, divergence, beta):
    """D per row by the definitions, in float64: terms of probability 0 are 0."""
    ps, pt = lps.exp(), lpt.exp()

    def kl(p, lp, lq):  # KL(p || q) = sum p (log p - log q), 0 where p = 0
        return torch.where(p > 0, p * (lp - lq), 0.0).sum(1)

    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0):
        return kl(pt, lpt, lps)
    if divergence == "reverse_kl" or (divergence == "jsd" and beta == 1):
        return kl(ps, lps, lpt)
    lm = torch.log(beta * pt + (1 - beta) * ps)
    return beta * kl(pt, lpt, lm) + (1 - beta) * kl(ps, lps, lm)


def reference64(zs, zt, y, live, divergence, beta, temperature, soft, hard, scale):
    """Per-row losses and d(sum scale_i loss_i)/dz_s in float64 on the given (rounded)
    logits, independent of the library."""
    x = zs.detach().double().requires_grad_(True)
    lps = torch.log_softmax(x / temperature, dim=1)
    lpt = torch.log_softmax(zt.double() / temperature, dim=1)
    loss = soft * divergence64(lps, lpt, divergence, beta)
    if hard:
        picked = x.gather(1, torch.where(live, y, 0).unsqueeze(1)).squeeze(1)
        loss = loss + hard * (torch.logsumexp(x, dim=1) - picked)
    loss = torch.where(live, loss, 0.0)
    (grad,) = torch.autograd.grad((scale * loss).sum(), x) if x.numel() else (x,)
    return loss.detach(), grad


def layout(base: torch.Tensor, width: int, how: str) -> torch.Tensor:
    if how == "row-strided":
        return base[:, :width]
    if how == "sliced":
        return base[:, base.shape[1] - width :]
    if how == "transposed":  # classes not consecutive (distillation_loss copies them)
        return base[:, :width].t().contiguous().t()
    return base[:, :width].contiguous()


def compute_eps(dtype):
    return torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps


@settings(max_examples=150, deadline=None)
@given(
    rows=st.sampled_from([0, 1, 7]),
    width=st.sampled_from([1, 15, 16, 17, 33, 1000]),
    dtype=st.sampled_from(DTYPES),
    temperature=st.sampled_from([0.05, 1.0, 4.0]),
    divergence=st.sampled_from(DIVERGENCES),
    beta=st.sampled_from([0.0, 0.5, 1.0, 0.1]),
    weights=st.sampled_from([(1.0, 0.0), (0.5, 0.5), (0.0, 1.0), (2.0, 0.3)]),
    how=st.sampled_from(["contiguous", "row-strided", "sliced"]),
    in_place=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_kernel_equals_the_float64_computation(
    rows, width, dtype, temperature, divergence, beta, weights, how, in_place, seed
) -> None:
    torch.manual_seed(seed)
    soft, hard = weights
    zs = layout((torch.randn(rows, width + 5, dtype=torch.float64) * 3).to(dtype), width, how)
    zt = layout((torch.randn(rows, width + 3, dtype=torch.float64) * 3).to(dtype), width, how)
    y = torch.randint(0, width, (rows,))
    live = torch.rand(rows) < 0.8
    scale = torch.randn(rows, dtype=torch.float64)
    if rows > 2:
        scale[2] = 0.0
    d = _distill.check_distillation(divergence, beta, temperature, soft, hard)
    want_loss, want_grad = reference64(zs, zt, y, live, divergence, beta, temperature, soft,
                                       hard, scale)  # fmt: skip
    student = zs.clone() if in_place else zs
    out = student if in_place else None
    loss, grad = _kernel.distill_rows(student, zt, y, live, d, row_scale=scale, out=out)
    assert grad is not None and grad.dtype == dtype and grad.shape == zs.shape
    if in_place:
        assert grad.data_ptr() == student.data_ptr()
    eps = compute_eps(dtype)
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    # the compute dtype's error on u = z / T and on the log-sum-exps, times the weights
    u = max(zs.double().abs().amax().item() if zs.numel() else 0.0, 1.0) / temperature
    size = (1 + u + math.log(width)) * (soft + hard + 1)
    torch.testing.assert_close(loss.double(), want_loss, rtol=0, atol=64 * eps * size)
    # the gradient: the compute dtype's error, plus one rounding of its own dtype
    bound = 16 * eps * size * scale.abs().unsqueeze(1) / temperature
    bound = bound + torch.finfo(dtype).eps * want_grad.abs()
    if dtype == torch.float16:
        bound = bound + 2.0**-24  # float16's subnormal step
    error = (grad.double() - want_grad).abs()
    assert (error <= bound).all(), (error - bound).max()
    if rows > 2:
        assert (grad[2] == 0).all()
    assert (grad[~live] == 0).all() and (loss[~live] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_only_and_targets_outside_the_row(dtype) -> None:
    """Without row_scale no gradient is written; a target outside [0, V) (int64 extremes,
    negative, V) has no target term: CE = L_1 there, never an index."""
    torch.manual_seed(0)
    zs = torch.randn(6, 17, dtype=torch.float64).to(dtype)
    zt = torch.randn(6, 17, dtype=torch.float64).to(dtype)
    before = zs.clone()
    y = torch.tensor([-(2**63), 2**63 - 1, -1, 17, 2**62, 16])
    live = torch.ones(6, dtype=torch.bool)
    d = _distill.check_distillation("jsd", 0.5, 1.5, 0.0, 1.0)
    loss, grad = _kernel.distill_rows(zs, zt, y, live, d)
    assert grad is None and torch.equal(zs, before)
    want = torch.logsumexp(zs.double(), 1)
    want[5] -= zs[5, 16].double()
    torch.testing.assert_close(loss.double(), want, rtol=0, atol=64 * compute_eps(dtype) * 4)


def hostile_rows(width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(student, teacher) float64 rows with ±inf, all -inf, NaN and ±1e30 logits, and the
    teacher's mass where the student is -inf."""
    generator = torch.Generator().manual_seed(5)
    zs = torch.randn(12, width, dtype=torch.float64, generator=generator) * 2
    zt = torch.randn(12, width, dtype=torch.float64, generator=generator) * 2
    zs[0, 3] = -math.inf  # teacher mass where the student has none
    zt[0, 3] = zt[0].amax() + 1
    zs[1, ::2] = -math.inf
    zt[1, 1::2] = -math.inf  # disjoint supports
    zs[2] = -math.inf  # no student distribution
    zt[3, 5] = math.nan
    zs[4, 6] = math.nan
    zs[5, 2] = 1e30  # one-hot student
    zt[5, 2] = 1e30
    zs[6, 1], zt[6, 7] = -1e30, 1e30
    zs[7, 4] = math.inf
    # the teacher's largest logit where the student's is +inf: its p_t there is far from
    # underflowing (the kernel's exponential flushes below e^-87.3 what torch's keeps as a
    # subnormal, and a p_t of 0 would mask the NaN term there)
    zt[7, 4] = zt[7].amax() + 1
    zt[8, 4] = math.inf
    zt[9, ::3] = -math.inf  # student mass where the teacher has none
    zs[10] = 0.0
    zt[11] = -1e30
    return zs, zt


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("temperature", [0.05, 1.0, 4.0])
def test_hostile_rows_equal_the_torch_ops_row_math(dtype, divergence, temperature) -> None:
    """The kernel and _distill.distill_rows (torch operations) agree on the hostile rows,
    NaN and ±inf in the same places, and give the decided numbers: nothing NaN from finite
    logits, +inf forward KL where the teacher has mass and the student none, JSD finite
    for finite or -inf logits, NaN for a NaN logit."""
    zs64, zt64 = hostile_rows(24)
    zs, zt = zs64.to(dtype), zt64.to(dtype)
    y = torch.arange(12) % 24
    live = torch.ones(12, dtype=torch.bool)
    scale = torch.linspace(0.5, 2.0, 12, dtype=torch.float64)
    d = _distill.check_distillation(divergence, 0.3, temperature, 1.0, 0.5)
    loss, grad = _kernel.distill_rows(zs, zt, y, live, d, row_scale=scale)
    ops_loss, ops_grad = _distill.distill_rows(zs, zt, y, live, d, row_scale=scale)
    assert grad is not None and ops_grad is not None
    eps = compute_eps(dtype)
    # row 11, a teacher of logits all -1e30: log p = v - L_t from torch's L_t loses log V
    # (1e30 / T absorbs it), the kernel's (v - shift) - log s does not: the kernel against
    # the float64 computation there (in float16, -1e30 is -inf: no distribution, NaN)
    rows = list(range(12 if dtype == torch.float16 else 11))
    if dtype != torch.float16:
        want, want_grad = reference64(zs[11:], zt[11:], y[11:], live[11:], divergence, 0.3,
                                      temperature, 1.0, 0.5, scale[11:])  # fmt: skip
        torch.testing.assert_close(loss[11:].double(), want, rtol=1e-5, atol=0)
        torch.testing.assert_close(grad[11:].double(), want_grad,
                                   rtol=4 * torch.finfo(dtype).eps,
                                   atol=256 * eps / temperature)  # fmt: skip
    torch.testing.assert_close(loss[rows], ops_loss[rows].to(loss.dtype), rtol=1e-4,
                               atol=256 * eps / temperature, equal_nan=True)  # fmt: skip
    # reverse KL, row 6: each gradient is the difference of two numbers of magnitude
    # 1e30 / T in float32, rounding all that is left of it in either computation
    keep = [i for i in rows if not (divergence == "reverse_kl" and i == 6)]
    torch.testing.assert_close(
        grad[keep].double(),
        ops_grad[keep].to(dtype).double(),
        rtol=4 * torch.finfo(dtype).eps,
        atol=256 * eps / temperature,
        equal_nan=True,
    )
    finite = torch.isfinite(zs64).all(1) & torch.isfinite(zt64).all(1)
    if dtype == torch.float16:  # 1e30 is +inf in float16
        finite &= (zs64.abs() < 6e4).all(1) & (zt64.abs() < 6e4).all(1)
    assert torch.isfinite(loss[finite]).all() and torch.isfinite(grad[finite]).all()
    assert loss[3].isnan() and loss[4].isnan()
    if divergence == "forward_kl":
        assert loss[0] == math.inf and loss[1] == math.inf
    if divergence == "jsd":  # finite or -inf logits, the student's row not all -inf
        assert torch.isfinite(loss[[0, 1, 9]]).all() and torch.isfinite(grad[[0, 1, 9]]).all()
        assert (grad[0, 3] == 0) and (grad[1, ::2] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_distillation_loss_fused_equals_the_float64_computation(dtype, divergence) -> None:
    """distillation_loss(impl="fused") forward and backward, with ignore_index and a mean,
    against the float64 computation, and impl="auto" on CPU takes the same numbers."""
    torch.manual_seed(1)
    zs = (torch.randn(9, 40, dtype=torch.float64) * 2).to(dtype)
    zt = (torch.randn(9, 40, dtype=torch.float64) * 2).to(dtype)
    y = torch.randint(0, 40, (9,))
    y[[1, 4]] = -100
    live = y != -100
    options = {"divergence": divergence, "beta": 0.25, "temperature": 2.0}
    weights = {"soft_weight": 0.7, "hard_weight": 0.4}
    x = zs.clone().requires_grad_(True)
    loss = distillation_loss(x, zt, y, impl="fused", **options, **weights)
    loss.backward()
    count = live.sum()
    want, want_grad = reference64(zs, zt, y, live, divergence, 0.25, 2.0, 0.7, 0.4,
                                  torch.full((9,), 1.0 / count, dtype=torch.float64))  # fmt: skip
    eps = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(loss.double(), want.sum() / count, rtol=eps, atol=eps)
    assert x.grad is not None and x.grad.dtype == dtype
    torch.testing.assert_close(x.grad.double(), want_grad, rtol=eps, atol=eps / 10)
    auto = distillation_loss(zs, zt, y, **options, **weights)
    assert auto.item() == loss.item()


def test_fused_takes_a_narrower_teacher_and_refuses_a_wider_one() -> None:
    """A bfloat16 teacher of a float32 student runs in the kernel (cast exactly); a float64
    teacher of a float32 student is refused by impl="fused" by name, and impl="auto" then
    runs the torch operations in float64, as the reference does."""
    torch.manual_seed(2)
    zs, zt = torch.randn(5, 30), torch.randn(5, 30)
    narrow = distillation_loss(zs, zt.bfloat16(), impl="fused")
    assert narrow.item() == distillation_loss(zs, zt.bfloat16().float(), impl="fused").item()
    with pytest.raises(ValueError, match=r"^impl='fused': the C distillation kernel cannot run"):
        distillation_loss(zs, zt.double(), impl="fused")
    wide = distillation_loss(zs, zt.double())
    assert wide.dtype == torch.float64
    torch.testing.assert_close(wide, distillation_loss(zs, zt.double(), impl="torch"))


def test_kernel_refuses_a_scratch_it_cannot_use() -> None:
    """The kernel checks its scratch (3 V values per thread) before it reads or writes
    anything: NULL, or too small, returns -1 and leaves the outputs and the scratch as they
    were; the size it needs gives the launcher's numbers."""
    kernel = _kernel.load().distill_rows_f32
    torch.manual_seed(4)
    zs, zt = torch.randn(2, 20), torch.randn(2, 20)
    target, live = torch.tensor([3, 19]), torch.ones(2, dtype=torch.bool)
    scale = torch.tensor([1.0, 0.5])
    loss, out, scratch = torch.full((2,), 7.0), torch.full((2, 20), 7.0), torch.full((60,), 7.0)

    def call(pointer: int | None, size: int) -> int:
        return int(kernel(zs.data_ptr(), 20, zt.data_ptr(), 20, out.data_ptr(), 20,
                          target.data_ptr(), live.data_ptr(), scale.data_ptr(), 2, 20, 2, 0.5,
                          1.0, 1.0, 0.5, loss.data_ptr(), pointer, size))  # fmt: skip

    for pointer, size in ((scratch.data_ptr(), 59), (None, 60), (scratch.data_ptr(), -1)):
        assert call(pointer, size) == -1
        assert (loss == 7).all() and (out == 7).all() and (scratch == 7).all()
    assert call(scratch.data_ptr(), 60) == 2
    d = _distill.check_distillation("jsd", 0.5, 1.0, 1.0, 0.5)
    want_loss, want_grad = _kernel.distill_rows(zs, zt, target, live, d, row_scale=scale)
    assert torch.equal(loss, want_loss) and torch.equal(out, want_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_rows_of_an_infinite_maximum_equal_the_torch_ops(dtype, divergence, temperature) -> None:
    """A row whose maximum is +inf is not shifted by it, so the exponentials of its large
    finite logits overflow (e^100): the kernel's probabilities there are still those of
    the torch operations (0 beside the +inf, NaN at it), not inf / inf."""
    inf = math.inf
    zs = torch.tensor([[inf, 100.0, 0.0, -3.0], [1.0, 2.0, 0.5, 0.0], [inf, 95.0, inf, 1.0]])
    zt = torch.tensor([[1.0, 2.0, 0.5, 0.0], [inf, 100.0, 0.0, -3.0], [90.0, inf, 0.0, 1.0]])
    zs, zt = zs.to(dtype), zt.to(dtype)
    y, live = torch.tensor([1, 2, 3]), torch.ones(3, dtype=torch.bool)
    scale = torch.tensor([1.0, 0.5, 2.0])
    for hard in (0.0, 0.5):
        d = _distill.check_distillation(divergence, 0.3, temperature, 1.0, hard)
        loss, grad = _kernel.distill_rows(zs, zt, y, live, d, row_scale=scale)
        ops_loss, ops_grad = _distill.distill_rows(zs, zt, y, live, d, row_scale=scale)
        assert grad is not None and ops_grad is not None
        torch.testing.assert_close(loss, ops_loss.to(loss.dtype), equal_nan=True)
        torch.testing.assert_close(grad, ops_grad.to(dtype), equal_nan=True)
