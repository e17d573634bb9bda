"""Tests of :class:`crossentropy.report.ReportAccumulator` and :func:`compute_report`: the
new metrics against scikit-learn, torchmetrics and float64 NumPy; merging (any split of the
rows, merged in any order, gives the one-pass report); ignored rows; token arrays with their
per-sequence perplexity; the bootstrap's two passes for quantile bins; bad options.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import pickle
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import brier_score_loss, log_loss, top_k_accuracy_score

from crossentropy.report import BadValue, Report, ReportAccumulator, compute_report

RNG = np.random.default_rng(20261126)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def classification(n: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, c)) * 2.0
    y = np.array([rng.choice(c, p=p) for p in softmax(z)])
    return z, y


def assert_same_report(a: Report, b: Report, rtol: float = 1e-12) -> None:
    """Counts, bins and rows exactly; every float to ``rtol`` relative."""

    def compare(x: Any, y: Any, where: str) -> None:
        if isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                compare(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, list):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                compare(u, v, f"{where}[{i}]")
        elif isinstance(x, float) and isinstance(y, float):
            if math.isnan(x):
                assert math.isnan(y), where
            else:
                assert y == pytest.approx(x, rel=rtol, abs=1e-300), where
        else:
            assert x == y, where

    compare(dataclasses.asdict(a), dataclasses.asdict(b), "report")


# ------------------------------------------------------------------------------------------
# metrics against peers
# ------------------------------------------------------------------------------------------


def test_single_label_metrics_match_sklearn_and_torchmetrics() -> None:
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.classification")
    n, c = 600, 7
    z, y = classification(n, c, seed=1)
    p = softmax(z)
    r = compute_report(z, y, logits=True, top_k=3, chunk_rows=97)
    assert r.cross_entropy_nats == pytest.approx(log_loss(y, p, labels=range(c)), rel=1e-12)
    assert r.top_k_accuracy == pytest.approx(
        top_k_accuracy_score(y, p, k=3, labels=range(c)), rel=1e-12
    )
    onehot = np.eye(c)[y]
    assert r.brier == pytest.approx(np.mean(np.sum((p - onehot) ** 2, axis=1)), rel=1e-12)
    # torchmetrics' multiclass metric rounds the confidences to float32 and sums in float32;
    # its binary metric on the top-label (confidence, right) pairs stays in float64
    pt, yt = torch.from_numpy(p), torch.from_numpy(y)
    confidence = torch.from_numpy(p.max(axis=1))
    right = torch.from_numpy((p.argmax(axis=1) == y).astype(np.int64))
    for norm, value in (("l1", r.ece), ("l2", r.rmsce), ("max", r.mce)):
        binary = tm.BinaryCalibrationError(n_bins=15, norm=norm)
        assert value == pytest.approx(float(binary(confidence, right)), rel=1e-12), norm
        multiclass = tm.MulticlassCalibrationError(num_classes=c, n_bins=15, norm=norm)
        assert value == pytest.approx(float(multiclass(pt, yt)), abs=2e-6), norm


def test_probabilities_and_logits_give_the_same_report() -> None:
    z, y = classification(300, 5, seed=2)
    a = compute_report(z, y, logits=True, top_k=2)
    b = compute_report(softmax(z), y, logits=False, top_k=2)
    assert b.cross_entropy_nats == pytest.approx(a.cross_entropy_nats, rel=1e-12)
    assert b.accuracy == a.accuracy and b.top_k_accuracy == a.top_k_accuracy
    assert b.brier == pytest.approx(a.brier, rel=1e-12)
    assert b.ece == pytest.approx(a.ece, rel=1e-12, abs=1e-15)


def test_binary_multilabel_brier_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    p = rng.uniform(size=(400, 1))
    y = (rng.uniform(size=(400, 1)) < p).astype(np.int64)
    r = compute_report(p, y, multilabel=True)
    assert r.brier == pytest.approx(brier_score_loss(y[:, 0], p[:, 0]), rel=1e-12)
    assert r.classwise_ece is not None


def test_classwise_ece_is_the_mean_of_one_vs_rest_binned_gaps() -> None:
    z, y = classification(500, 4, seed=4)
    p = softmax(z)
    r = compute_report(z, y, logits=True, bins=10)
    expected = []
    for j in range(4):
        col, hit = p[:, j], (y == j).astype(float)
        b = np.clip(np.ceil(col * 10).astype(int) - 1, 0, 9)
        gaps = [
            np.sum(b == k) / len(col) * abs(hit[b == k].mean() - col[b == k].mean())
            for k in range(10)
            if np.any(b == k)
        ]
        expected.append(sum(gaps))
    assert r.classwise_ece == pytest.approx(np.mean(expected), rel=1e-12)
    for j in range(4):
        assert r.classes[j].ece == pytest.approx(expected[j], rel=1e-12)


# ------------------------------------------------------------------------------------------
# merging
# ------------------------------------------------------------------------------------------


def _fed(z: np.ndarray, y: np.ndarray, start: int, stop: int, **options: Any) -> Any:
    acc = ReportAccumulator(z.shape[1], first_row=start, **options)
    if stop > start:
        acc.update(z[start:stop], y[start:stop])
    return acc


@settings(max_examples=25, deadline=None)
@given(
    cuts=st.lists(st.integers(0, 240), min_size=1, max_size=5),
    order=st.randoms(use_true_random=False),
    binning=st.sampled_from(["uniform", "quantile"]),
)
def test_merge_of_any_split_in_any_order_is_the_one_pass_report(
    cuts: list[int], order: Any, binning: str
) -> None:
    z, y = classification(240, 6, seed=5)
    options = {"logits": True, "worst": 7, "top_k": 2, "binning": binning, "bins": 8}
    whole = _fed(z, y, 0, 240, **options).result()
    bounds = sorted({0, 240, *cuts})
    parts = [_fed(z, y, a, b, **options) for a, b in itertools.pairwise(bounds)]
    order.shuffle(parts)
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    assert_same_report(whole, merged.result())


def test_merge_with_bootstrap_and_sequences_is_the_one_pass_report() -> None:
    rng = np.random.default_rng(6)
    s, t, v = 9, 11, 13
    z = rng.normal(size=(s, t, v)).astype(np.float32)
    y = rng.integers(0, v, size=(s, t))
    y[rng.uniform(size=(s, t)) < 0.2] = -100
    options = {"logits": True, "ignore_index": -100, "bootstrap": 50, "seed": 3}
    whole = compute_report(z, y, **options)
    flat_z, flat_y = z.reshape(-1, v), y.reshape(-1)
    parts = []
    for a, b in ((0, 20), (20, 21), (21, 70), (70, s * t)):
        acc = ReportAccumulator(v, first_row=a, **options)
        acc.update(flat_z[a:b], flat_y[a:b], sequences=np.arange(a, b) // t)
        parts.append(acc)
    merged = parts[3]
    for part in (parts[1], parts[0], parts[2]):
        merged.merge(part)
    assert_same_report(whole, merged.result())


def test_merge_refuses_different_options() -> None:
    a = ReportAccumulator(3, logits=True)
    with pytest.raises(ValueError, match="bins"):
        a.merge(ReportAccumulator(3, logits=True, bins=10))
    with pytest.raises(ValueError, match="num_classes"):
        a.merge(ReportAccumulator(4, logits=True))
    with pytest.raises(TypeError, match="other"):
        a.merge("report")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# ignored rows, token arrays
# ------------------------------------------------------------------------------------------


def test_ignored_rows_are_the_report_without_them() -> None:
    z, y = classification(200, 5, seed=7)
    y_ignored = y.copy()
    drop = RNG.uniform(size=200) < 0.3
    y_ignored[drop] = -100
    r = compute_report(z, y_ignored, logits=True, ignore_index=-100, chunk_rows=33)
    ref = compute_report(z[~drop], y[~drop], logits=True)
    assert r.ignored == int(drop.sum())
    assert r.rows == ref.rows
    assert r.cross_entropy_nats == pytest.approx(ref.cross_entropy_nats, rel=1e-12)
    assert r.ece == pytest.approx(ref.ece, rel=1e-12)
    kept_rows = np.flatnonzero(~drop)
    assert [w.row for w in r.worst] == [int(kept_rows[w.row]) for w in ref.worst]


def test_token_arrays_give_per_token_and_per_sequence_numbers() -> None:
    rng = np.random.default_rng(8)
    s, t, v = 6, 10, 50
    z = rng.normal(size=(s, t, v)) * 3
    y = rng.integers(0, v, size=(s, t))
    y[:, 7:] = -100
    y[4, :] = -100  # a sequence with no scored token
    r = compute_report(z, y, logits=True, ignore_index=-100, chunk_rows=7)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    mask = y != -100
    token_loss = -np.take_along_axis(log_p, np.where(mask, y, 0)[..., None], -1)[..., 0]
    assert r.rows == int(mask.sum()) and r.ignored == int((~mask).sum())
    assert r.cross_entropy_nats == pytest.approx(token_loss[mask].mean(), rel=1e-12)
    per_seq = np.array([np.exp(token_loss[i][mask[i]].mean()) for i in range(s) if mask[i].any()])
    assert r.sequences is not None and r.sequences.sequences == s - 1
    q = r.sequences.perplexity_quantiles
    assert q["50%"] == pytest.approx(np.median(per_seq), rel=1e-12)
    assert q["min"] == pytest.approx(per_seq.min(), rel=1e-12)
    assert q["95%"] == pytest.approx(np.quantile(per_seq, 0.95), rel=1e-12)
    assert r.classwise_ece is not None  # 50 classes: computed


def test_token_perplexity_matches_torchmetrics() -> None:
    torch = pytest.importorskip("torch")
    text = pytest.importorskip("torchmetrics.functional.text")
    rng = np.random.default_rng(9)
    z = rng.normal(size=(4, 12, 30))
    y = rng.integers(0, 30, size=(4, 12))
    y[0, 5:] = -100
    r = compute_report(z, y, logits=True, ignore_index=-100)
    # the functional form computes in the input's float64 (the Metric's state is float32)
    value = float(text.perplexity(torch.from_numpy(z), torch.from_numpy(y), ignore_index=-100))
    assert r.perplexity == pytest.approx(value, rel=1e-12)


# ------------------------------------------------------------------------------------------
# quantile bins and the bootstrap
# ------------------------------------------------------------------------------------------


def test_quantile_bins_with_bootstrap_take_two_passes_and_keep_the_bins() -> None:
    z, y = classification(400, 4, seed=10)
    plain = compute_report(z, y, logits=True, binning="quantile", bins=10)
    boot = compute_report(z, y, logits=True, binning="quantile", bins=10, bootstrap=40)
    assert [(b.lower, b.upper, b.count) for b in boot.calibration] == [
        (b.lower, b.upper, b.count) for b in plain.calibration
    ]
    for b, p in zip(boot.calibration, plain.calibration, strict=True):
        assert b.confidence == pytest.approx(p.confidence, rel=1e-12)
    assert boot.ece == pytest.approx(plain.ece, rel=1e-12)
    assert boot.uncertainty is not None and boot.uncertainty.replicates == 40
    assert boot.uncertainty.ece.low <= boot.uncertainty.ece.high
    counts = [b.count for b in plain.calibration]
    assert sum(counts) == 400 and max(counts) - min(counts) <= 1


def test_bootstrap_is_reproducible_and_changes_with_the_seed() -> None:
    z, y = classification(300, 3, seed=11)
    a = compute_report(z, y, logits=True, bootstrap=30, seed=1, chunk_rows=41)
    b = compute_report(z, y, logits=True, bootstrap=30, seed=1, chunk_rows=300)
    c = compute_report(z, y, logits=True, bootstrap=30, seed=2)
    assert a.uncertainty is not None and b.uncertainty is not None and c.uncertainty is not None
    assert a.uncertainty.cross_entropy.low == pytest.approx(
        b.uncertainty.cross_entropy.low, rel=1e-12
    )
    assert a.uncertainty.cross_entropy != c.uncertainty.cross_entropy
    low, high = a.uncertainty.cross_entropy.low, a.uncertainty.cross_entropy.high
    assert low < a.cross_entropy_nats < high
    assert a.uncertainty.perplexity.low == pytest.approx(math.exp(low), rel=1e-12)


# ------------------------------------------------------------------------------------------
# bad options
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"bins": 0}, "bins"),
        ({"binning": "equal"}, "binning"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 4}, "top_k"),
        ({"bootstrap": -1}, "bootstrap"),
        ({"seed": -1}, "seed"),
        ({"level": 1.0}, "level"),
        ({"level": 0.0}, "level"),
        ({"binning": "quantile", "bootstrap": 10}, "edges"),
        ({"edges": [0.0, 0.5, 1.0]}, "edges"),
        ({"binning": "quantile", "edges": [0.2, 0.5]}, "edges"),
        ({"first_row": -1}, "first_row"),
        ({"worst": -1}, "worst"),
    ],
)
def test_bad_options_name_the_argument(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        ReportAccumulator(3, logits=True, **options)


def test_bad_types_and_multilabel_only_options() -> None:
    with pytest.raises(TypeError, match="bins"):
        ReportAccumulator(3, bins=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="top_k"):
        ReportAccumulator(3, multilabel=True, top_k=1)
    with pytest.raises(ValueError, match="ignore_index"):
        ReportAccumulator(3, multilabel=True, ignore_index=-100)
    acc = ReportAccumulator(3, logits=True, ignore_index=-1)
    with pytest.raises(ValueError, match="ignore_index"):
        acc.update(np.zeros((2, 3)), np.eye(3)[:2])
    with pytest.raises(ValueError, match="sequences"):
        acc.update(np.zeros((2, 3)), np.array([0, 1]), sequences=np.array([0]))
    everything_ignored = ReportAccumulator(3, logits=True, ignore_index=-1)
    everything_ignored.update(np.zeros((2, 3)), np.array([-1, -1]))
    with pytest.raises(ValueError, match="2 rows ignored"):
        everything_ignored.result()


def test_token_array_label_shape_is_checked() -> None:
    with pytest.raises(ValueError, match=r"labels.*\(2, 3\)"):
        compute_report(np.zeros((2, 3, 4)), np.zeros((2, 4), dtype=int), logits=True)


def test_ignored_rows_are_not_checked_and_bad_entries_name_their_place() -> None:
    z, y = classification(50, 4, seed=12)
    y = y.copy()
    z[[3, 17]] = np.nan  # padding of ignored rows may hold anything
    y[[3, 17]] = -100
    r = compute_report(z, y, logits=True, ignore_index=-100)
    keep = y != -100
    assert r.cross_entropy_nats == pytest.approx(
        compute_report(z[keep], y[keep], logits=True).cross_entropy_nats, rel=1e-12
    )
    acc = ReportAccumulator(4, logits=True, ignore_index=-100)
    bad = z[:6].copy()
    bad[5, 2] = np.inf
    with pytest.raises(BadValue) as info:
        acc.update(bad, np.array([0, 1, -100, -100, 3, 1]))  # row 3: NaN, ignored
    assert (info.value.row, info.value.column, info.value.argument) == (5, 2, "predictions")
    with pytest.raises(BadValue) as info:
        acc.update(z[:3], np.array([-100, 9, 1]))
    assert (info.value.row, info.value.argument) == (1, "labels")
    assert acc.rows == 0 and acc.next_row == 0  # a chunk that raises leaves no trace
    unpickled = pickle.loads(pickle.dumps(info.value))
    assert (unpickled.row, unpickled.argument, str(unpickled)) == (1, "labels", str(info.value))


def test_many_sequences_over_many_chunks() -> None:
    """More sequences than the per-sequence sums keep waiting (they are folded in several
    times while the chunks come): the quantiles are those of NumPy over every sequence."""
    rng = np.random.default_rng(13)
    s, t, v = 70_000, 2, 3
    z = rng.normal(size=(s, t, v))
    y = rng.integers(0, v, size=(s, t))
    y[::5, 1] = -100
    r = compute_report(z, y, logits=True, ignore_index=-100, chunk_rows=4999)
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    mask = y != -100
    token_loss = -np.take_along_axis(log_p, np.where(mask, y, 0)[..., None], -1)[..., 0]
    per_seq = np.exp((token_loss * mask).sum(axis=1) / mask.sum(axis=1))
    assert r.sequences is not None and r.sequences.sequences == s
    for name, q in (("5%", 0.05), ("50%", 0.5), ("max", 1.0)):
        assert r.sequences.perplexity_quantiles[name] == pytest.approx(
            np.quantile(per_seq, q), rel=1e-12
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_half_and_single_logits_checked_by_the_kernel_name_the_entry(
    dtype: type, bad: float
) -> None:
    """float32/float16 logits are checked as the row kernel scores them (no separate pass):
    a non-finite entry is still named by its row (ignored rows counted) and column, and the
    accumulator is left as it was."""
    z, y = classification(40, 5, seed=14)
    z = z.astype(dtype)
    z[23, 4] = bad
    y[:3] = -100
    acc = ReportAccumulator(5, logits=True, ignore_index=-100)
    with pytest.raises(BadValue) as info:
        acc.update(z, y)
    assert (info.value.row, info.value.column, info.value.argument) == (23, 4, "predictions")
    assert acc.rows == 0 and acc.next_row == 0
    acc.update(z[:20], y[:20])
    assert acc.rows == 17
