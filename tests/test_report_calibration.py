"""Calibration bins and errors (crossentropy.report.calibration) against torchmetrics, netcal,
scikit-learn and plain float64 loops written from the definitions."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from netcal.metrics import ECE, MCE
from sklearn.calibration import calibration_curve
from torchmetrics.classification import BinaryCalibrationError, MulticlassCalibrationError

from crossentropy.report.calibration import (
    CLASSWISE_LIMIT,
    MAX_BINS,
    ClasswiseBins,
    ConfidenceBins,
    ConfidenceValues,
    bin_index,
    calibration_errors,
    uniform_edges,
)

TOL = 1e-12
NORMS = ("l1", "l2", "max")


# --------------------------------------------------------------------------------------------
# Data and references
# --------------------------------------------------------------------------------------------


def softmax_data(n: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Float64 probabilities (n, c) of random logits, and labels drawn from them (so the model
    is roughly calibrated, but not exactly)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2.0
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(c, p=row) for row in np.clip(p * 0.9 + 0.1 / c, 0, 1)])
    return p, labels


def off_edges(values: np.ndarray, bins: int, margin: float = 1e-9) -> None:
    """Where the conventions differ (a value exactly on an edge) the peers are not comparable:
    check that no value is near an edge k / B, so that a test cannot pass by luck there."""
    distance = np.abs(values[:, None] - np.arange(bins + 1)[None, :] / bins).min()
    assert distance > margin


def loop_bins(confidence: np.ndarray, correct: np.ndarray, edges: np.ndarray) -> tuple:
    """Per-bin sums by the definition: bin b holds (e_b, e_{b+1}], <= e_0 in bin 0, > e_B in the
    last; one value at a time."""
    size = len(edges) - 1
    count, conf, corr = np.zeros(size), np.zeros(size), np.zeros(size)
    for c, r in zip(confidence, correct, strict=True):
        b = 0
        for j in range(size):
            if edges[j] < c <= edges[j + 1]:
                b = j
                break
        else:
            b = 0 if c <= edges[0] else size - 1
        count[b] += 1
        conf[b] += c
        corr[b] += r
    return count, conf, corr


def loop_errors(count: np.ndarray, conf: np.ndarray, corr: np.ndarray) -> tuple:
    """(ECE, RMSCE, MCE) of one set of bins, by the definition, bin by bin."""
    n = float(sum(count))
    ece = sq = 0.0
    mce = -1.0
    for nb, cb, rb in zip(count, conf, corr, strict=True):
        if nb > 0:
            gap = abs(rb / nb - cb / nb)
            ece += nb / n * gap
            sq += nb / n * gap * gap
            mce = max(mce, gap)
    return ece, np.sqrt(sq), mce


def top_label(p: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return p.max(axis=1), (p.argmax(axis=1) == labels).astype(np.float64)


# --------------------------------------------------------------------------------------------
# Edges, bin index, errors
# --------------------------------------------------------------------------------------------


def test_uniform_edges_and_bin_index_by_definition() -> None:
    edges = uniform_edges(7)
    np.testing.assert_array_equal(edges, np.linspace(0, 1, 8))
    rng = np.random.default_rng(0)
    # random values, the edges themselves (upper bin end), 0 and 1
    c = np.concatenate([rng.random(200), edges, [0.0, 1.0]])
    got = bin_index(c, edges)
    count, _, _ = loop_bins(c, np.zeros_like(c), edges)
    np.testing.assert_array_equal(np.bincount(got, minlength=7), count)
    # a value on an edge k/B is the upper end of bin k - 1 (torchmetrics: start of bin k)
    np.testing.assert_array_equal(bin_index(edges[1:], edges), np.arange(7))
    # arbitrary non-decreasing edges; values beyond the last edge clip to the last bin
    odd = np.array([0.1, 0.1, 0.3, 0.8])
    values = np.array([0.0, 0.1, 0.2, 0.3, 0.5, 0.8, 0.9, 1.0])
    np.testing.assert_array_equal(bin_index(values, odd), [0, 0, 1, 1, 2, 2, 2, 2])


def test_calibration_errors_match_a_loop_with_weights_and_leading_axes() -> None:
    rng = np.random.default_rng(1)
    count = rng.poisson(1.0, size=(3, 4, 6)).astype(np.float64) * rng.random((3, 4, 6))
    count[0, 0] = 0.0  # a replicate with nothing in it
    count[1, 1, :3] = 0.0  # empty bins
    conf = count * rng.random(count.shape)
    corr = count * rng.random(count.shape)
    ece, rmsce, mce = calibration_errors(count, conf, corr)
    assert ece.shape == rmsce.shape == mce.shape == (3, 4)
    assert ece.dtype == np.float64
    for i, j in itertools.product(range(3), range(4)):
        if (i, j) == (0, 0):
            assert np.isnan(ece[i, j]) and np.isnan(rmsce[i, j]) and np.isnan(mce[i, j])
            continue
        want = loop_errors(count[i, j], conf[i, j], corr[i, j])
        np.testing.assert_allclose([ece[i, j], rmsce[i, j], mce[i, j]], want, rtol=TOL, atol=TOL)
    one = calibration_errors(count[1, 1], conf[1, 1], corr[1, 1])
    assert all(x.shape == () for x in one)
    np.testing.assert_allclose(one, [ece[1, 1], rmsce[1, 1], mce[1, 1]], rtol=TOL, atol=0)


# --------------------------------------------------------------------------------------------
# Peers: torchmetrics, netcal
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bins", [1, 10, 15])
def test_binary_matches_torchmetrics_in_float64(bins: int) -> None:
    rng = np.random.default_rng(bins)
    p = rng.random(3000) ** 2
    y = (rng.random(3000) < np.clip(p + 0.1, 0, 1)).astype(np.float64)
    off_edges(p, bins)
    ours = ConfidenceBins(uniform_edges(bins))
    ours.add(p, y)
    for norm, mine in zip(NORMS, ours.errors(), strict=True):
        metric = BinaryCalibrationError(n_bins=bins, norm=norm)
        metric.update(torch.from_numpy(p), torch.from_numpy(y).long())
        theirs = metric.compute()
        assert theirs.dtype == torch.float64  # the binary path keeps float64
        assert mine == pytest.approx(float(theirs), rel=TOL, abs=TOL)


@pytest.mark.parametrize(("bins", "classes"), [(15, 10), (7, 3)])
def test_top_label_matches_torchmetrics(bins: int, classes: int) -> None:
    p, labels = softmax_data(2000, classes, seed=bins)
    conf, correct = top_label(p, labels)
    off_edges(conf, bins, margin=1e-6)  # float32 rounding must not cross an edge
    ours = ConfidenceBins(uniform_edges(bins))
    ours.add(conf, correct)
    for norm, mine in zip(NORMS, ours.errors(), strict=True):
        # float64 top-label numbers: the binary metric fed (confidence, correct)
        binary = BinaryCalibrationError(n_bins=bins, norm=norm)
        binary.update(torch.from_numpy(conf), torch.from_numpy(correct).long())
        assert mine == pytest.approx(float(binary.compute()), rel=TOL, abs=TOL)
        # the multiclass metric casts the confidences to float32 (confidences.float() in
        # _multiclass_calibration_error_update) and sums in float32: agreement to ~1e-6
        multi = MulticlassCalibrationError(num_classes=classes, n_bins=bins, norm=norm)
        multi.update(torch.from_numpy(p), torch.from_numpy(labels))
        theirs = multi.compute()
        assert theirs.dtype == torch.float32
        assert mine == pytest.approx(float(theirs), abs=2e-6)


def test_torchmetrics_difference_on_edges_is_as_documented() -> None:
    # 0.5 is an edge of 2 bins: here in bin 0 (0, 0.5], in torchmetrics in bin 1 [0.5, 1)
    conf = np.array([0.5, 0.5, 0.9, 0.9])
    correct = np.array([1.0, 1.0, 1.0, 0.0])
    ours = ConfidenceBins(uniform_edges(2))
    ours.add(conf, correct)
    np.testing.assert_array_equal(ours.count, [2, 2])
    metric = BinaryCalibrationError(n_bins=2, norm="l1")
    metric.update(torch.from_numpy(conf), torch.from_numpy(correct).long())
    # torchmetrics: one bin {0.5, 0.5, 0.9, 0.9}: |0.75 - 0.7| = 0.05; here 0.5*0.5 + 0.5*0.4
    assert float(metric.compute()) == pytest.approx(0.05, abs=TOL)
    assert ours.errors()[0] == pytest.approx(0.45, abs=TOL)


@pytest.mark.parametrize("bins", [5, 15])
def test_matches_netcal(bins: int) -> None:
    p, labels = softmax_data(1500, 4, seed=10 + bins)
    assert len(np.unique(labels)) > 2  # netcal treats <= 2 distinct labels as binary
    conf, correct = top_label(p, labels)
    off_edges(conf, bins)
    ours = ConfidenceBins(uniform_edges(bins))
    ours.add(conf, correct)
    ece, _, mce = ours.errors()
    assert ece == pytest.approx(ECE(bins=bins).measure(p, labels), rel=TOL, abs=TOL)
    assert mce == pytest.approx(MCE(bins=bins).measure(p, labels), rel=TOL, abs=TOL)
    # binary: netcal's confidence is the given probability of class 1, as here
    y = (labels == 0).astype(np.int64)
    off_edges(p[:, 0], bins)
    binary = ConfidenceBins(uniform_edges(bins))
    binary.add(p[:, 0], y.astype(np.float64))
    assert binary.errors()[0] == pytest.approx(ECE(bins=bins).measure(p[:, 0], y), rel=TOL, abs=TOL)
    assert binary.errors()[2] == pytest.approx(MCE(bins=bins).measure(p[:, 0], y), rel=TOL, abs=TOL)


def test_confidence_bins_merge_and_bins_list() -> None:
    p, labels = softmax_data(900, 5, seed=3)
    conf, correct = top_label(p, labels)
    edges = uniform_edges(10)
    whole = ConfidenceBins(edges)
    whole.add(conf, correct)
    parts = [ConfidenceBins(edges) for _ in range(3)]
    for part, chunk in zip(parts, np.array_split(np.arange(900), 3), strict=True):
        part.add(conf[chunk], correct[chunk])
    parts[2].merge(parts[0])
    parts[2].merge(parts[1])
    np.testing.assert_array_equal(parts[2].count, whole.count)
    np.testing.assert_allclose(parts[2].confidence_sum, whole.confidence_sum, rtol=TOL)
    np.testing.assert_allclose(parts[2].correct_sum, whole.correct_sum, rtol=TOL)
    count, csum, rsum = loop_bins(conf, correct, edges)
    listed = whole.bins()
    assert len(listed) == 10
    for b, row in enumerate(listed):
        assert (row.lower, row.upper, row.count) == (edges[b], edges[b + 1], count[b])
        if count[b]:
            assert row.confidence == pytest.approx(csum[b] / count[b], rel=TOL)
            assert row.accuracy == pytest.approx(rsum[b] / count[b], rel=TOL)
        else:
            assert row.confidence is None and row.accuracy is None
    empty = ConfidenceBins(edges)
    assert all(np.isnan(x) for x in empty.errors())


# --------------------------------------------------------------------------------------------
# Quantile bins
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bins", "per_bin"), [(5, 40), (10, 37), (1, 13)])
def test_quantile_bins_match_sklearn_on_distinct_values(bins: int, per_bin: int) -> None:
    rng = np.random.default_rng(bins)
    n = bins * per_bin
    p = rng.random(n)
    y = (rng.random(n) < p).astype(np.float64)
    y[:2] = [0.0, 1.0]  # both labels present (sklearn's pos_label rule)
    values = ConfidenceValues()
    for chunk in np.array_split(np.arange(n), 4):
        values.add(p[chunk], y[chunk])
    binned = values.binned(bins)
    np.testing.assert_array_equal(binned.count, np.full(bins, per_bin))
    prob_true, prob_pred = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    np.testing.assert_allclose(binned.confidence_sum / binned.count, prob_pred, rtol=TOL)
    np.testing.assert_allclose(binned.correct_sum / binned.count, prob_true, rtol=TOL, atol=TOL)


tie_data = st.tuples(
    st.integers(1, 400),  # rows
    st.integers(1, 40),  # distinct levels to draw from (few: many ties)
    st.integers(1, 25),  # bins
    st.integers(0, 2**32 - 1),  # seed
)


def tied(rows: int, levels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    grid = np.sort(rng.random(levels))
    # skewed draws: some tie groups span several quantiles
    conf = grid[np.minimum(rng.geometric(0.3, size=rows) - 1, levels - 1)]
    return conf, (rng.random(rows) < conf).astype(np.float64)


@given(tie_data)
def test_quantile_bins_never_split_ties(data: tuple[int, int, int, int]) -> None:
    rows, levels, bins, seed = data
    conf, correct = tied(rows, levels, seed)
    values = ConfidenceValues()
    values.add(conf, correct)
    edges = values.edges(bins)
    assert edges[0] == 0.0 and (np.diff(edges) > 0).all() and len(edges) - 1 <= bins
    assert edges[-1] == conf.max()
    index = bin_index(conf, edges)
    for level in np.unique(conf):  # one bin per tie group
        assert len(np.unique(index[conf == level])) == 1
    _, tie_size = np.unique(conf, return_counts=True)
    count = np.bincount(index, minlength=len(edges) - 1)
    assert (count > 0).all()  # empty bins dropped
    assert (np.abs(count - rows / bins) < tie_size.max()).all()
    np.testing.assert_array_equal(edges, mid_rank_edges(conf, bins))


def mid_rank_edges(conf: np.ndarray, bins: int) -> list[float]:
    """The edges by the definition, in exact fractions: each distinct value (group) to the bin
    min(B - 1, floor(B * (rows before it + its count / 2) / n)); 0, then each bin's largest."""
    n = len(conf)
    before = 0
    last: dict[int, float] = {}
    for value in sorted(set(conf.tolist())):
        size = int((conf == value).sum())
        last[min(bins - 1, int(Fraction(bins) * (before + Fraction(size, 2)) / n))] = value
        before += size
    return [0.0] + [last[b] for b in sorted(last)]


@given(tie_data, st.sampled_from([3, 40, 1 << 20]))
def test_second_pass_with_the_edges_reproduces_the_quantile_bins(
    data: tuple[int, int, int, int], max_distinct: int
) -> None:
    rows, levels, bins, seed = data
    conf, correct = tied(rows, levels, seed)
    # continuous values too, and a small store: groups of several values (shift > 0)
    rng = np.random.default_rng(seed + 1)
    conf = np.concatenate([conf, rng.random(rows)])
    correct = np.concatenate([correct, (rng.random(rows) < 0.5).astype(np.float64)])
    values = ConfidenceValues(max_distinct=max_distinct)
    values.add(conf, correct)
    assert values.shift == smallest_shift(conf, max_distinct)
    assert len(values.keys) <= max_distinct
    binned = values.binned(bins)
    second = ConfidenceBins(values.edges(bins))
    second.add(conf, correct)
    np.testing.assert_array_equal(second.edges, binned.edges)
    np.testing.assert_array_equal(second.count, binned.count)
    np.testing.assert_allclose(second.confidence_sum, binned.confidence_sum, rtol=TOL)
    np.testing.assert_allclose(second.correct_sum, binned.correct_sum, rtol=TOL)
    assert binned.count.sum() == 2 * rows


def smallest_shift(conf: np.ndarray, max_distinct: int) -> int:
    """The smallest s at which the values' bit patterns >> s number at most max_distinct."""
    bits = (conf + 0.0).view(np.int64)
    return next(s for s in range(64) if len(np.unique(bits >> s)) <= max_distinct)


@given(
    st.lists(st.integers(0, 300), min_size=0, max_size=5),
    st.integers(0, 2**32 - 1),
    st.sampled_from([2, 7, 50, 1 << 20]),
    st.booleans(),
)
def test_merge_in_any_split_and_order_equals_one_pass(
    cuts: list[int], seed: int, max_distinct: int, tree: bool
) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    conf = np.where(rng.random(n) < 0.3, np.round(rng.random(n), 2), rng.random(n))
    conf[:3] = [0.0, -0.0, 1.0]  # -0.0 is 0.0
    correct = (rng.random(n) < conf).astype(np.float64)
    whole = ConfidenceValues(max_distinct=max_distinct)
    whole.add(conf, correct)
    assert whole.shift == smallest_shift(conf, max_distinct)
    parts = []
    for chunk in np.split(rng.permutation(n), sorted(cuts)):
        part = ConfidenceValues(max_distinct=max_distinct)
        for piece in np.array_split(chunk, 2):  # chunked adds within a part
            part.add(conf[piece], correct[piece])
        parts.append(part)
    order = [parts[i] for i in rng.permutation(len(parts))]
    while len(order) > 1:
        if tree:  # pairwise, the odd one carried to the next round
            merged = []
            for a, b in zip(order[0:-1:2], order[1::2], strict=True):
                a.merge(b)
                merged.append(a)
            order = merged + order[len(merged) * 2 :]
        else:  # into the first, last to first
            last = order.pop()
            order[0].merge(last)
    result = order[0]
    assert result.shift == whole.shift
    np.testing.assert_array_equal(result.keys, whole.keys)
    np.testing.assert_array_equal(result.count, whole.count)
    np.testing.assert_array_equal(result.maximum, whole.maximum)
    np.testing.assert_allclose(result.confidence_sum, whole.confidence_sum, rtol=TOL)
    np.testing.assert_allclose(result.correct_sum, whole.correct_sum, rtol=TOL)
    # keys are the bit patterns at the final shift, each group's maximum its largest value
    bits = (conf + 0.0).view(np.int64) >> whole.shift
    np.testing.assert_array_equal(whole.keys, np.unique(bits))
    for key, top in zip(whole.keys, whole.maximum, strict=True):
        assert top == conf[bits == key].max()


def test_quantile_bins_with_nothing_added_and_one_value() -> None:
    values = ConfidenceValues()
    np.testing.assert_array_equal(values.edges(4), uniform_edges(4))
    assert values.binned(4).count.sum() == 0
    values.add(np.full(10, 0.7), np.ones(10))
    np.testing.assert_array_equal(values.edges(4), [0.0, 0.7])  # one tie group: one bin
    ece, rmsce, mce = values.binned(4).errors()
    np.testing.assert_allclose([ece, rmsce, mce], 0.3, rtol=0, atol=TOL)


# --------------------------------------------------------------------------------------------
# Classwise
# --------------------------------------------------------------------------------------------


def test_classwise_matches_a_loop_over_classes() -> None:
    p, labels = softmax_data(800, 6, seed=5)
    targets = np.eye(6)[labels]
    bins = 8
    cw = ClasswiseBins(6, bins)
    for chunk in np.array_split(np.arange(800), 3):
        cw.add(p[chunk], targets[chunk])
    other = ClasswiseBins(6, bins)
    other.add(p[:100], targets[:100])
    got = cw.errors()
    edges = uniform_edges(bins)
    for j in range(6):
        count, psum, tsum = loop_bins(p[:, j], targets[:, j], edges)
        want = sum(
            abs(tsum[b] / count[b] - psum[b] / count[b]) * count[b] / 800
            for b in range(bins)
            if count[b]
        )
        assert got[j] == pytest.approx(want, rel=TOL, abs=TOL)
        np.testing.assert_array_equal(cw.count[j], count)
    # one column is a binary problem: torchmetrics' binary ECE of it
    metric = BinaryCalibrationError(n_bins=bins, norm="l1")
    off_edges(p[:, 2], bins)
    metric.update(torch.from_numpy(p[:, 2]), torch.from_numpy(targets[:, 2]).long())
    assert got[2] == pytest.approx(float(metric.compute()), rel=TOL, abs=TOL)
    cw.merge(other)
    np.testing.assert_array_equal(cw.count[:, :].sum(axis=1), np.full(6, 900))
    assert np.isnan(ClasswiseBins(3, 4).errors()).all()


# --------------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: uniform_edges(0), "bins"),
        (lambda: uniform_edges(MAX_BINS + 1), "bins"),
        (lambda: ConfidenceValues().edges(0), "bins"),
        (lambda: ClasswiseBins(3, 0), "bins"),
        (lambda: ClasswiseBins(0, 3), "num_classes"),
        (lambda: ClasswiseBins(CLASSWISE_LIMIT, 2), "num_classes"),
        (lambda: ConfidenceValues(max_distinct=0), "max_distinct"),
        (lambda: bin_index(np.array([0.5, np.nan]), uniform_edges(2)), "confidence"),
        (lambda: bin_index(np.array([0.5]), np.array([0.5, 0.2])), "edges"),
        (lambda: bin_index(np.array([0.5]), np.array([0.5])), "edges"),
        (lambda: ConfidenceBins(np.array([0.0, 1.5])), "edges"),
        (lambda: ConfidenceBins(uniform_edges(2)).add(np.array([1.2]), np.ones(1)), "confidence"),
        (lambda: ConfidenceBins(uniform_edges(2)).add(np.ones(2), np.ones(3)), "correct"),
        (lambda: ConfidenceBins(uniform_edges(2)).add(np.ones(2), np.full(2, np.nan)), "correct"),
        (lambda: ConfidenceBins(uniform_edges(2)).add(np.ones((2, 2)), np.ones(2)), "confidence"),
        (lambda: ConfidenceValues().add(np.array([np.nan]), np.ones(1)), "confidence"),
        (lambda: ConfidenceValues().add(np.array([-0.1]), np.ones(1)), "confidence"),
        (lambda: ConfidenceBins(uniform_edges(2)).merge(ConfidenceBins(uniform_edges(3))), "other"),
        (lambda: ConfidenceValues().merge(ConfidenceValues(max_distinct=5)), "other"),
        (lambda: ClasswiseBins(2, 3).merge(ClasswiseBins(2, 4)), "other"),
        (lambda: ClasswiseBins(2, 3).add(np.ones((2, 3)) / 3, np.zeros((2, 3))), "probabilities"),
        (lambda: ClasswiseBins(2, 3).add(np.ones(2) / 2, np.zeros(2)), "probabilities"),
        (lambda: ClasswiseBins(2, 3).add(np.ones((2, 2)) / 2, np.zeros((3, 2))), "targets"),
        (lambda: calibration_errors([1, 2], [0.5], [1, 1]), "confidence_sum"),
        (lambda: calibration_errors([1, -2], [0.5, 0.5], [1, 1]), "count"),
        (lambda: calibration_errors([1, 2], [0.5, 0.5], [1, np.nan]), "correct_sum"),
        (lambda: calibration_errors(3.0, 0.5, 1.0), "count"),
    ],
)
def test_bad_arguments_name_the_argument(call: object, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()  # type: ignore[operator]


@pytest.mark.parametrize("bad", [2.0, "3", True, None])
def test_bins_of_the_wrong_type(bad: object) -> None:
    with pytest.raises(TypeError, match="bins"):
        uniform_edges(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="other"):
        ConfidenceBins(uniform_edges(2)).merge(ConfidenceValues())  # type: ignore[arg-type]
