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
