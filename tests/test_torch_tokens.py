"""Per-token log-probabilities and softmax entropy: the slice statistics of
crossentropy.torch._tokens and the public token_log_probs / softmax_entropy, against the
unfused float64 computation written here with plain torch (log_softmax, softmax)."""

from __future__ import annotations

import itertools
import math

import pytest

torch = pytest.importorskip("torch")

from crossentropy.torch import _tokens  # noqa: E402


def reference(
    z: torch.Tensor, target: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_y, H) per row of (rows, V) logits at float64, from whole rows."""
    u = z.double() / temperature
    log_p = torch.log_softmax(u, dim=1)
    p = torch.softmax(u, dim=1)
    picked = log_p.gather(1, target.clamp(0, max(z.shape[1] - 1, 0)).unsqueeze(1)).squeeze(1)
    entropy = -(p * torch.where(p > 0, log_p, 0.0)).sum(dim=1)
    return picked, entropy


def random_logits(rows: int, width: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, width, generator=generator, dtype=torch.float64) * scale


def split_statistics(
    z: torch.Tensor, target: torch.Tensor, temperature: float, cuts: list[int]
) -> _tokens.TokenStatistics:
    """The statistics of the row merged from the slices between ``cuts``."""
    edges = [0, *cuts, z.shape[1]]
    merged = None
    for start, stop in itertools.pairwise(edges):
        part = _tokens.token_statistics(z[:, start:stop], target, temperature, start)
        merged = part if merged is None else merged.merge(part)
    assert merged is not None
    return merged


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.5])
@pytest.mark.parametrize("seed", range(4))
def test_statistics_merged_over_random_slices_equal_the_whole_row(
    seed: int, temperature: float
) -> None:
    generator = torch.Generator().manual_seed(100 + seed)
    rows, width = 6, 37
    z = random_logits(rows, width, seed)
    target = torch.randint(0, width, (rows,), generator=generator)
    count = int(torch.randint(1, 6, (), generator=generator))
    cuts = sorted(set(torch.randint(0, width + 1, (count,), generator=generator).tolist()))
    whole = _tokens.token_statistics(z, target, temperature)
    merged = split_statistics(z, target, temperature, cuts)
    expected = reference(z, target, temperature)
    for stats in (whole, merged):
        log_prob, entropy = _tokens.token_outputs(stats)
        torch.testing.assert_close(log_prob, expected[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(entropy, expected[1], rtol=1e-12, atol=1e-12)
    # merging in the other order gives the same numbers
    edges = [0, *cuts, width]
    parts = [
        _tokens.token_statistics(z[:, a:b], target, temperature, a)
        for a, b in itertools.pairwise(edges)
    ]
    backwards = parts[-1]
    for part in reversed(parts[:-1]):
        backwards = backwards.merge(part)
    torch.testing.assert_close(
        _tokens.token_outputs(backwards)[1], expected[1], rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_statistics_are_float32_for_narrow_logits(dtype: torch.dtype) -> None:
    z = random_logits(5, 20, 7).to(dtype)
    target = torch.arange(5)
    stats = split_statistics(z, target, 1.3, [6, 13])
    assert {t.dtype for t in (stats.peak, stats.mass, stats.spread, stats.target)} == {
        torch.float32
    }
    log_prob, entropy = _tokens.token_outputs(stats)
    expected = reference(z.double(), target, 1.3)  # the same rounded inputs
    torch.testing.assert_close(log_prob.double(), expected[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy.double(), expected[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("seed", range(3))
def test_slice_gradients_equal_autograd_of_the_whole_row(seed: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(200 + seed)
    rows, width = 7, 29
    z = random_logits(rows, width, seed)
    z[0, 3] = -math.inf  # a class of probability 0, not the target
    target = torch.randint(0, width, (rows,), generator=generator)
    target[0] = 4
    g = torch.randn(rows, generator=generator, dtype=torch.float64)
    h = torch.randn(rows, generator=generator, dtype=torch.float64)
    g[1], h[1] = 0.0, 0.0  # a row that receives nothing
    h[2] = 0.0
    leaf = z.clone().requires_grad_()
    log_prob, entropy = reference(leaf, target, temperature)
    ((g * log_prob).sum() + (h * entropy).sum()).backward()
    expected = leaf.grad
    assert expected is not None

    cuts = [5, 11, 20]
    stats = split_statistics(z, target, temperature, cuts)
    edges = [0, *cuts, width]
    pieces = [
        _tokens.logit_gradient(z[:, a:b].clone(), target, stats, temperature, g, h, a)
        for a, b in itertools.pairwise(edges)
    ]
    got = torch.cat(pieces, dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(got[1], torch.zeros(width, dtype=torch.float64))
    assert got[0, 3] == 0.0


def test_gradient_writes_over_a_scratch_buffer_and_not_over_narrow_logits() -> None:
    z = random_logits(3, 8, 1)
    target = torch.tensor([0, 5, 7])
    stats = _tokens.token_statistics(z, target, 1.0)
    ones = torch.ones(3, dtype=torch.float64)
    scratch = z.clone()
    out = _tokens.logit_gradient(scratch, target, stats, 1.0, ones, ones)
    assert out.data_ptr() == scratch.data_ptr()
    narrow = z.to(torch.bfloat16)
    kept = narrow.clone()
    stats = _tokens.token_statistics(narrow, target, 1.0)
    out = _tokens.logit_gradient(narrow, target, stats, 1.0, ones, ones)
    assert out.dtype == torch.float32
    assert torch.equal(narrow, kept)


def test_one_hot_and_huge_gaps_have_entropy_exactly_zero() -> None:
    inf = math.inf
    z = torch.tensor(
        [
            [-inf, 2.0, -inf, -inf],
            [0.0, 1e4, -1e4, 5.0],
            [3e38, -3e38, 0.0, 1.0],
        ]
    )
    for dtype in (torch.float32, torch.float64):
        stats = split_statistics(z.to(dtype), torch.tensor([1, 1, 0]), 1.0, [2])
        log_prob, entropy = _tokens.token_outputs(stats)
        assert torch.equal(entropy, torch.zeros(3, dtype=dtype))
        assert torch.equal(log_prob, torch.zeros(3, dtype=dtype))


def test_non_finite_rows_follow_the_cross_entropy_conventions() -> None:
    inf, nan = math.inf, math.nan
    z = torch.tensor(
        [
            [1.0, inf, 0.0, -inf],  # +inf: target beside it
            [1.0, inf, 0.0, -inf],  # +inf: target at it
            [-inf, -inf, -inf, -inf],  # no distribution
            [0.0, nan, 1.0, 2.0],  # NaN
            [0.0, -inf, 1.0, 2.0],  # target of probability 0
        ],
        dtype=torch.float64,
    )
    target = torch.tensor([0, 1, 2, 0, 1])
    for cuts in ([], [1], [2], [1, 3]):
        log_prob, entropy = _tokens.token_outputs(split_statistics(z, target, 1.0, cuts))
        assert log_prob[0] == -inf and math.isnan(log_prob[1]) and math.isnan(log_prob[2])
        assert math.isnan(log_prob[3]) and log_prob[4] == -inf
        assert torch.isnan(entropy[:4]).all()
        torch.testing.assert_close(entropy[4:], reference(z[4:], target[4:], 1.0)[1])
    stats = split_statistics(z, target, 1.0, [2])
    g = torch.ones(5, dtype=torch.float64)
    zero = torch.zeros(5, dtype=torch.float64)
    grad = torch.cat(
        [
            _tokens.logit_gradient(z[:, :2].clone(), target, stats, 1.0, g, zero, 0),
            _tokens.logit_gradient(z[:, 2:].clone(), target, stats, 1.0, g, zero, 2),
        ],
        dim=1,
    )
    # beside +inf: the target's 1, 0 elsewhere, NaN at the +inf logit
    assert grad[0, 0] == 1.0 and grad[0, 2] == 0.0 and grad[0, 3] == 0.0
    assert math.isnan(grad[0, 1])
    assert torch.isnan(grad[2]).all() and torch.isnan(grad[3]).all()
    # a target of probability 0: d log p_y / dz = [k = y] - p, finite
    leaf = z[4:].clone().requires_grad_()
    reference(leaf, target[4:], 1.0)[0].sum().backward()
    assert leaf.grad is not None
    torch.testing.assert_close(grad[4], leaf.grad[0])
    # with an incoming gradient on the entropy, the +inf row's gradient is NaN
    stats = _tokens.token_statistics(z, target, 1.0)
    with_h = _tokens.logit_gradient(z.clone(), target, stats, 1.0, g, g)
    assert torch.isnan(with_h[0]).all()
    # rows that receive nothing are 0 whatever their logits
    nothing = _tokens.logit_gradient(z.clone(), target, stats, 1.0, zero, zero)
    assert torch.equal(nothing, torch.zeros_like(z))


# ---------------------------------------------------------------------------------------
# token_log_probs and softmax_entropy

from unittest import mock  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from crossentropy.torch import native, softmax_entropy, token_log_probs  # noqa: E402

DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def unfused(
    x: torch.Tensor, target: torch.Tensor, temperature: float, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p_y, H) of (..., V) logits at float64, 0 at ignored positions, under autograd."""
    classes = x.shape[-1]
    flat = x.reshape(-1, classes).double()
    ids = target.reshape(-1)
    ignored = ids == ignore_index
    log_prob, entropy = reference(flat, torch.where(ignored, 0, ids), temperature)
    log_prob = torch.where(ignored, 0.0, log_prob)
    entropy = torch.where(ignored, 0.0, entropy)
    return log_prob.reshape(target.shape), entropy.reshape(target.shape)


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    """float64: 1e-7; float32 (and half inputs, computed in float32): 1e-5 relative."""
    if dtype == torch.float64:
        return {"rtol": 1e-7, "atol": 1e-9}
    return {"rtol": 1e-5, "atol": 1e-5}


@settings(max_examples=150)
@given(st.data())
def test_token_log_probs_equal_the_unfused_float64_computation(data: st.DataObject) -> None:
    lead = tuple(data.draw(st.lists(st.integers(1, 4), max_size=2), label="leading shape"))
    classes = data.draw(st.integers(1, 9), label="V")
    temperature = data.draw(st.sampled_from([1.0, 0.5, 2.5, 0.05]), label="temperature")
    ignore_index = data.draw(st.sampled_from([-100, 0, 2]), label="ignore_index")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    block = data.draw(st.sampled_from([1, 7, 16, native.BLOCK_ELEMENTS]), label="block")
    impl = data.draw(st.sampled_from(["auto", "auto", "torch"]), label="impl")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    scale = data.draw(st.sampled_from([1.0, 5.0, 30.0]), label="scale")
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(*lead, classes, generator=generator, dtype=torch.float64) * scale).to(dtype)
    choices = torch.tensor([*range(classes), ignore_index])
    target = choices[torch.randint(0, classes + 1, lead, generator=generator)]
    out = torch.float64 if dtype == torch.float64 else torch.float32
    g = torch.randn(lead, generator=generator, dtype=torch.float64).to(out)
    h = torch.randn(lead, generator=generator, dtype=torch.float64).to(out)

    leaf = x.clone().requires_grad_()
    with mock.patch.object(native, "BLOCK_ELEMENTS", block):
        log_prob, entropy = token_log_probs(
            leaf,
            target,
            temperature=temperature,
            ignore_index=ignore_index,
            return_entropy=True,
            impl=impl,
        )
        assert log_prob.shape == target.shape and entropy.shape == target.shape
        assert log_prob.dtype == out and entropy.dtype == out
        ((g * log_prob).sum() + (h * entropy).sum()).backward()
    assert leaf.grad is not None and leaf.grad.dtype == dtype

    # the float64 computation on the same (rounded) inputs
    exact = x.double().requires_grad_()
    want_log_prob, want_entropy = unfused(exact, target, temperature, ignore_index)
    ((g.double() * want_log_prob).sum() + (h.double() * want_entropy).sum()).backward()
    assert exact.grad is not None
    tol = tolerances(dtype)
    torch.testing.assert_close(log_prob.double(), want_log_prob, **tol)
    torch.testing.assert_close(entropy.double(), want_entropy, **tol)
    want_grad = exact.grad
    if dtype.itemsize < 4:  # the float32 gradient rounded once to the logits' dtype
        eps = torch.finfo(dtype).eps
        atol = max(eps * float(want_grad.abs().max()), tol["atol"])
        torch.testing.assert_close(leaf.grad.double(), want_grad, rtol=eps, atol=atol)
    else:
        torch.testing.assert_close(leaf.grad.double(), want_grad, **tol)
    assert bool((entropy >= 0).all())
    ignored = target == ignore_index
    assert bool((log_prob[ignored] == 0).all()) and bool((entropy[ignored] == 0).all())
    assert bool((leaf.grad[ignored] == 0).all())
    # without the entropy: the same log-probabilities
    plain = token_log_probs(
        x, target, temperature=temperature, ignore_index=ignore_index, impl=impl
    )
    assert torch.equal(plain, log_prob.detach())


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_float32_at_vocabulary_scale_within_1e5_of_float64(temperature: float) -> None:
    """Sums over 32000 classes in float32 stay within 1e-5 relative of float64."""
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(8, 32000, generator=generator) * 4
    target = torch.randint(0, 32000, (8,), generator=generator)
    g, h = torch.randn(2, 8, generator=generator)
    leaf = x.clone().requires_grad_()
    log_prob, entropy = token_log_probs(leaf, target, temperature=temperature, return_entropy=True)
    ((g * log_prob).sum() + (h * entropy).sum()).backward()
    exact = x.double().requires_grad_()
    want_log_prob, want_entropy = unfused(exact, target, temperature, -100)
    ((g.double() * want_log_prob).sum() + (h.double() * want_entropy).sum()).backward()
    assert leaf.grad is not None and exact.grad is not None
    torch.testing.assert_close(log_prob.double(), want_log_prob, rtol=1e-5, atol=0.0)
    torch.testing.assert_close(entropy.double(), want_entropy, rtol=1e-5, atol=0.0)
    scale = float(exact.grad.abs().max())
    torch.testing.assert_close(leaf.grad.double(), exact.grad, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_hot_softmax_has_entropy_exactly_zero(dtype: torch.dtype) -> None:
    inf = math.inf
    big = float(torch.finfo(dtype).max)
    x = torch.tensor(
        [
            [-inf, -inf, 3.0, -inf, -inf],  # one finite logit
            [0.0, 1e4, -1e4, 5.0, 1.0],  # a huge gap
            [big, -big, 0.0, 1.0, -inf],  # the widest gap
        ],
        dtype=dtype,
    )
    leaf = x.clone().requires_grad_()
    log_prob, entropy = token_log_probs(leaf, torch.tensor([2, 1, 0]), return_entropy=True)
    assert torch.equal(entropy, torch.zeros_like(entropy))
    assert torch.equal(log_prob, torch.zeros_like(log_prob))
    (log_prob.sum() + entropy.sum()).backward()
    assert leaf.grad is not None and torch.equal(leaf.grad, torch.zeros_like(x))
    assert torch.equal(softmax_entropy(x), torch.zeros_like(entropy))


def test_entropy_is_never_negative() -> None:
    generator = torch.Generator().manual_seed(5)
    for scale in (1e-6, 1.0, 1e2, 1e5):
        x = torch.randn(64, 33, generator=generator) * scale
        x[::3, 0] += 40.0  # nearly one-hot rows
        entropy = softmax_entropy(x)
        assert bool((entropy >= 0).all())
        want = reference(x.double(), torch.zeros(64, dtype=torch.int64), 1.0)[1]
        torch.testing.assert_close(entropy.double(), want, rtol=1e-5, atol=1e-5)


def test_non_finite_rows_as_decided_on_both_paths() -> None:
    inf, nan = math.inf, math.nan
    x = torch.tensor(
        [
            [1.0, inf, 0.0, -inf],  # +inf beside the target: -inf, entropy NaN
            [1.0, inf, 0.0, -inf],  # target at +inf: NaN
            [-inf, -inf, -inf, -inf],  # no distribution: NaN
            [0.0, nan, 1.0, 2.0],  # NaN
            [0.0, -inf, 1.0, 2.0],  # target of probability 0: -inf, entropy finite
            [nan, inf, -inf, 0.0],  # ignored: 0, whatever the logits
            [-inf, -inf, -inf, -inf],  # ignored
        ],
        dtype=torch.float64,
    )
    target = torch.tensor([0, 1, 2, 0, 1, -100, -100])
    results = {}
    for impl in ("auto", "torch"):
        leaf = x.clone().requires_grad_()
        log_prob, entropy = token_log_probs(leaf, target, return_entropy=True, impl=impl)
        log_prob.sum().backward()  # the log-probabilities alone
        results[impl] = (log_prob.detach(), entropy.detach(), leaf.grad)
        assert log_prob[0] == -inf and log_prob[4] == -inf
        assert torch.isnan(log_prob[1:4]).all() and torch.isnan(entropy[:4]).all()
        assert bool(entropy[4] > 0) and torch.equal(log_prob[5:], torch.zeros(2))
        assert torch.equal(entropy[5:], torch.zeros(2, dtype=torch.float64))
        assert leaf.grad is not None and torch.equal(leaf.grad[5:], torch.zeros(2, 4))
        # beside +inf: the target's 1, 0 elsewhere, NaN at the +inf logit
        assert leaf.grad[0, 0] == 1.0 and leaf.grad[0, 2] == 0.0 and leaf.grad[0, 3] == 0.0
        assert math.isnan(leaf.grad[0, 1]) and torch.isnan(leaf.grad[2:4]).all()
    for a, b in zip(results["auto"], results["torch"], strict=True):
        torch.testing.assert_close(a, b, equal_nan=True)
    # an entropy gradient through a NaN entropy is NaN; rows it does not reach stay clean
    leaf = x.clone().requires_grad_()
    _, entropy = token_log_probs(leaf, target, return_entropy=True)
    entropy[4:].sum().backward()
    assert leaf.grad is not None and torch.equal(leaf.grad[:4], torch.zeros(4, 4))
    assert torch.isfinite(leaf.grad[4]).all() and torch.equal(leaf.grad[5:], torch.zeros(2, 4))


def test_create_graph_gives_the_reference_second_derivative() -> None:
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    target = torch.tensor([0, 5, -100, 2, 3])
    g = torch.randn(5, generator=generator, dtype=torch.float64)
    h = torch.randn(5, generator=generator, dtype=torch.float64)
    v = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    second = {}
    for impl in ("auto", "torch"):
        leaf = x.clone().requires_grad_()
        log_prob, entropy = token_log_probs(
            leaf, target, temperature=0.8, return_entropy=True, impl=impl
        )
        loss = (g * log_prob).sum() + (h * entropy).sum()
        (grad,) = torch.autograd.grad(loss, leaf, create_graph=True)
        ((grad * v).sum()).backward()
        second[impl] = leaf.grad
    torch.testing.assert_close(second["auto"], second["torch"], rtol=1e-10, atol=1e-12)
    assert second["auto"] is not None and bool(second["auto"].abs().max() > 0)

    def both(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = token_log_probs(z, target, temperature=0.8, return_entropy=True)
        assert isinstance(out, tuple)
        return out

    assert torch.autograd.gradgradcheck(both, (x.clone().requires_grad_(),))


def test_torch_func_grad_runs_the_reference() -> None:
    x = torch.randn(3, 4, dtype=torch.float64)
    target = torch.tensor([1, 0, 3])

    def total(z: torch.Tensor) -> torch.Tensor:
        return softmax_entropy(z).sum() + token_log_probs(z, target).sum()

    leaf = x.clone().requires_grad_()
    total(leaf).backward()
    torch.testing.assert_close(torch.func.grad(total)(x), leaf.grad)


@pytest.mark.parametrize("dim", [0, 1, -3])
def test_softmax_entropy_along_any_dim(dim: int) -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, 5, 3, generator=generator, dtype=torch.float64)
    h = torch.randn(torch.Size(s for i, s in enumerate(x.shape) if i != dim % 3), dtype=x.dtype)
    leaf = x.clone().requires_grad_()
    entropy = softmax_entropy(leaf, dim, temperature=1.7)
    (entropy * h).sum().backward()
    exact = x.clone().requires_grad_()
    p = torch.softmax(exact / 1.7, dim=dim)
    want = -(p * torch.log_softmax(exact / 1.7, dim=dim)).sum(dim=dim)
    (want * h).sum().backward()
    torch.testing.assert_close(entropy, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(leaf.grad, exact.grad, rtol=1e-10, atol=1e-12)


def test_empty_inputs() -> None:
    x = torch.zeros(0, 7, requires_grad=True)
    log_prob, entropy = token_log_probs(x, torch.zeros(0, dtype=torch.int64), return_entropy=True)
    assert log_prob.shape == (0,) and entropy.shape == (0,)
    (log_prob.sum() + entropy.sum()).backward()
    assert x.grad is not None and x.grad.shape == (0, 7)
    # no classes: every target must be ignored, and gives 0
    for impl in ("auto", "torch"):
        nothing = token_log_probs(torch.zeros(3, 0), torch.full((3,), -100), impl=impl)
        assert torch.equal(nothing, torch.zeros(3))


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda x, y: token_log_probs(x, y, temperature=0.0), ValueError, "temperature"),
        (lambda x, y: token_log_probs(x, y, temperature=-1.0), ValueError, "temperature"),
        (lambda x, y: token_log_probs(x, y, temperature=math.inf), ValueError, "temperature"),
        (lambda x, y: token_log_probs(x, y, temperature=math.nan), ValueError, "temperature"),
        (lambda x, y: token_log_probs(x, y, temperature="1"), TypeError, "temperature"),
        (lambda x, y: token_log_probs(x, y, ignore_index=1.5), TypeError, "ignore_index"),
        (lambda x, y: token_log_probs(x, y, return_entropy=1), TypeError, "return_entropy"),
        (lambda x, y: token_log_probs(x, y, impl="native"), ValueError, "impl: token_log_probs"),
        (lambda x, y: token_log_probs(x, y, impl="fast"), ValueError, "impl: expected"),
        (lambda x, y: token_log_probs(x, y.double()), TypeError, "target: expected integer"),
        (lambda x, y: token_log_probs(x, y[:2]), ValueError, "target: expected shape (3,)"),
        (lambda x, y: token_log_probs(x, y + 4), ValueError, "target: expected class indices"),
        (lambda x, y: token_log_probs(x, y - 1), ValueError, "got -1 at position (0,)"),
        (lambda x, y: token_log_probs(x, y.to("meta")), ValueError, "target: expected a tensor"),
        (lambda x, y: token_log_probs(x, y.tolist()), TypeError, "target: expected a torch"),
        (lambda x, y: token_log_probs(x.long(), y), ValueError, "logits: expected a floating"),
        (lambda x, y: token_log_probs(x[0, 0], y), ValueError, "logits: expected a floating"),
        (lambda x, y: softmax_entropy(x, 2), ValueError, "dim: expected an axis"),
        (lambda x, y: softmax_entropy(x, dim=1.0), ValueError, "dim: expected an axis"),
        (lambda x, y: softmax_entropy(x[:, :0]), ValueError, "at least one class"),
        (lambda x, y: softmax_entropy(x, temperature=0), ValueError, "temperature"),
    ],
)
def test_bad_arguments_are_refused_by_name(call, error, words) -> None:  # type: ignore[no-untyped-def]
    x = torch.zeros(3, 4)
    y = torch.tensor([0, 1, 2])
    with pytest.raises(error, match=re_escape(words)):
        call(x, y)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)
