"""The per-row scores of the report: crossentropy.report.rows (the float64 NumPy reference
and the fast path) and crossentropy.torch.scoring (the C kernel ``score_rows_*``, and the
torch float64 path) against independent references: a float64 formula written here,
scipy.special.logsumexp, scikit-learn's log_loss and top_k_accuracy_score; ties, extreme
logits, every dtype, shapes from 2 to 70000 classes and 0 to many rows; hostile inputs.

Tolerances (relative, against the float64 computation on the same values):
- float64 logits: 1e-13 (measured: loss 2e-15, confidence 3e-15, sum_squares 4e-14; the
  sums are taken in a different order).
- float32, bfloat16, float16 logits: 4e-7 for the loss, 2e-7 for the others (measured
  1.0e-7 and 3e-8): the kernel takes a float exponential (1-1.6 ulp, 6e-8 each) of the
  float difference z - m corrected by its rounding error, summed in float64, so the
  error of t = sum of the non-maximal e's, and so of log s, is about one float ulp
  relative; a small loss log1p(t) keeps it relative.
"""

from __future__ import annotations

import ctypes
import math
import sys
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.metrics import log_loss, top_k_accuracy_score

from crossentropy.report.checks import EPS
from crossentropy.report.rows import RowScores, score_rows, score_rows_numpy
from crossentropy.torch import _kernel, scoring

pytestmark = pytest.mark.skipif(
    not _kernel.fused_available(), reason="no C compiler: the kernel cannot be built"
)

FIELDS = ("loss", "confidence", "p_true", "sum_squares")
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
TOLERANCE = {torch.float64: (1e-13, 1e-13)}
"""(loss, the other floats): relative tolerance per dtype (float64 here, the others 4e-7,
2e-7: see the module's docstring)."""


def _tolerance(dtype: torch.dtype) -> tuple[float, float]:
    return TOLERANCE.get(dtype, (4e-7, 2e-7))


def reference(z: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The scores by their definitions in float64, written apart from the library: p by
    scipy's softmax, the loss as logsumexp - z_y (scipy), the rank by sorting."""
    z = z.astype(np.float64)
    n = len(y)
    lse = logsumexp(z, axis=1)
    p = softmax(z, axis=1)
    zy = z[np.arange(n), y]
    # rank: the position of y in a stable descending sort (ties keep the lower index first)
    order = np.argsort(-z, axis=1, kind="stable")
    rank = np.argmax(order == y[:, None], axis=1)
    return {
        "lse": lse,
        "loss": lse - zy,
        "predicted": np.argmax(z, axis=1),
        "confidence": np.exp(z.max(axis=1) - lse),
        "p_true": np.exp(zy - lse),
        "sum_squares": (p * p).sum(axis=1),
        "rank": rank,
    }


def _logits(kind: str, n: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.normal(size=(n, classes)) * 3
    if kind == "wide":  # +-1e4 spreads: almost every e underflows
        return rng.uniform(-1e4, 1e4, size=(n, classes))
    if kind == "confident":  # one class 25 above the others: losses ~ C e^-25
        z = rng.normal(size=(n, classes))
        z[np.arange(n), rng.integers(0, classes, n)] += 25
        return z
    if kind == "ties":  # small integers: many tied maxima and tied labels
        return rng.integers(-3, 3, size=(n, classes)).astype(np.float64)
    if kind == "near":  # all within 1e-3: p close to uniform
        return rng.normal(size=(n, classes)) * 1e-3
    if kind == "offset":  # around 5000: z - m must be formed exactly
        return 5e3 + rng.normal(size=(n, classes)) * 2
    raise AssertionError(kind)


KINDS = ("normal", "wide", "confident", "ties", "near", "offset")


def _labels(kind: str, z: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    n, classes = z.shape
    if kind == "confident":  # the label the confident class: the small losses
        return z.double().argmax(dim=1).numpy()
    return rng.integers(0, classes, n)


def assert_scores(got: RowScores, want: RowScores | dict, dtype: torch.dtype, what: str) -> None:
    """Equal argmax and rank; the floats within the dtype's tolerance."""

    def field(s: RowScores | dict, name: str) -> np.ndarray:
        return np.asarray(s[name] if isinstance(s, dict) else getattr(s, name))

    np.testing.assert_array_equal(got.predicted, field(want, "predicted"), err_msg=what)
    np.testing.assert_array_equal(got.rank, field(want, "rank"), err_msg=what)
    loss_rtol, rtol = _tolerance(dtype)
    # the float exponential is 0 below e^-87 (float64's are not): losses of 1e-38 differ
    atol: float | np.ndarray = 0.0 if dtype == torch.float64 else 1e-30
    if isinstance(want, dict):
        # the formula's lse - z_y and exp(m - lse) carry lse's rounding, 2e-16 |lse|
        atol = atol + 4 * np.finfo(np.float64).eps * (np.abs(want["lse"]) + 1)
    for name in FIELDS:
        a, b = getattr(got, name), field(want, name)
        bound = atol + (loss_rtol if name == "loss" else rtol) * np.abs(b)
        off = np.abs(a - b) > bound
        assert not off.any(), f"{what}: {name} {a[off][:3]} != {b[off][:3]} (bound {bound})"
    for name in ("loss", "confidence", "p_true", "sum_squares"):
        assert getattr(got, name).dtype == np.float64
    assert got.predicted.dtype == np.int64 and got.rank.dtype == np.int64


def _as_numpy(scores: scoring.RowScoreTensors) -> RowScores:
    return RowScores(*(t.numpy() for t in scores))


# ------------------------------------------------------------------ the kernel vs the reference


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_kernel_scores_equal_the_float64_reference(dtype: torch.dtype, kind: str) -> None:
    """scoring.score_rows (the C kernel) against score_rows_numpy and the scipy formula on
    the same values in float64, for C from 2 to 70000 and 0, 1 and many rows."""
    rng = np.random.default_rng(abs(hash((str(dtype), kind))) % 2**32)
    for n, classes in (
        (0, 5),
        (1, 2),
        (1, 70000),
        (33, 2),
        (40, 3),
        (37, 17),
        (20, 1000),
        (65, 33),
        (4, 70000),
    ):
        z = torch.from_numpy(_logits(kind, n, classes, rng)).to(dtype)
        y = _labels(kind, z, rng)
        got = _as_numpy(scoring.score_rows(z, torch.from_numpy(y)))
        z64 = z.double().numpy()
        what = f"{dtype} {kind} ({n}, {classes})"
        assert_scores(got, score_rows_numpy(z64, y, logits=True), dtype, what)
        if n:
            assert_scores(got, reference(z64, y), dtype, what + " vs scipy")


def test_kernel_path_is_taken_for_every_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests above test the C kernel: scoring.score_rows calls it on CPU."""
    calls: list[torch.dtype] = []
    launch = _kernel.score_rows

    def spy(z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        calls.append(z.dtype)
        return launch(z, target)

    monkeypatch.setattr(_kernel, "score_rows", spy)
    for dtype in DTYPES:
        scoring.score_rows(torch.randn(3, 5).to(dtype), torch.tensor([0, 1, 4]))
    assert calls == list(DTYPES)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_ties_follow_the_rules(dtype: torch.dtype) -> None:
    """Argmax: the first of tied maxima; rank: the tied classes before y count, those after
    it do not (so rank 0 iff y is the predicted class)."""
    z = torch.tensor(
        [
            [1.0, 3.0, 3.0, 0.0],
            [1.0, 3.0, 3.0, 0.0],
            [2.0, 2.0, 2.0, 2.0],
            [2.0, 2.0, 2.0, 2.0],
            [0.0, 1.0, 0.0, 1.0],
            [5.0, 5.0, 1.0, 5.0],
        ],
        dtype=dtype,
    )
    y = torch.tensor([1, 2, 0, 3, 2, 3])
    got = scoring.score_rows(z, y)
    assert got.predicted.tolist() == [1, 1, 0, 0, 1, 0]
    assert got.rank.tolist() == [0, 1, 0, 3, 3, 2]
    np.testing.assert_allclose(got.confidence[2:4].numpy(), 0.25, rtol=1e-15)
    np.testing.assert_allclose(got.sum_squares[2:4].numpy(), 0.25, rtol=1e-15)
    np.testing.assert_allclose(got.loss[2:4].numpy(), math.log(4), rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_logsumexp_equals_scipy(dtype: torch.dtype) -> None:
    """_kernel.score_rows' m + log s is scipy's logsumexp, m the maximum, z_y the label's
    logit, across the AVX-512 tail lengths (C % 16) and odd row strides."""
    rng = np.random.default_rng(5)
    for classes in (1, 2, 15, 16, 17, 31, 1023, 1025, 4099):
        storage = torch.from_numpy(rng.normal(size=(9, classes + 7)) * 4).to(dtype)
        z = storage[:, 3 : 3 + classes]  # row stride classes + 7, not 16-aligned
        y = torch.from_numpy(rng.integers(0, classes, 9))
        peak, log_sum, picked, squares, argmax, rank = _kernel.score_rows(z, y)
        z64 = z.double().numpy()
        rtol = 1e-14 if dtype == torch.float64 else 2e-7
        np.testing.assert_allclose(
            (peak + log_sum).numpy(), logsumexp(z64, axis=1), rtol=rtol, atol=rtol
        )
        np.testing.assert_array_equal(peak.numpy(), z64.max(axis=1))
        np.testing.assert_array_equal(picked.numpy(), z64[np.arange(9), y.numpy()])
        np.testing.assert_array_equal(argmax.numpy(), z64.argmax(axis=1))
        want = reference(z64, y.numpy())
        np.testing.assert_allclose(squares.numpy(), want["sum_squares"], rtol=2 * rtol)
        np.testing.assert_array_equal(rank.numpy(), want["rank"])


def test_small_losses_keep_their_digits() -> None:
    """A confident row's loss log1p(t) ~ t, t = sum_{j != y} e^(z_j - z_y), with z_y = 40:
    the relative error of a float64 loss of ~1e-17 stays ~1e-15 (log(1 + t) would be 0)."""
    z = torch.tensor([[0.0, 1.0, 40.0], [40.0, -3.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([2, 0])
    want = np.array([math.exp(-40) + math.exp(-39), math.exp(-43) + math.exp(-38)])
    want = np.log1p(want)
    for got in (
        scoring.score_rows(z, y).loss.numpy(),
        score_rows_numpy(z.numpy(), y.numpy(), logits=True).loss,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-14)
    got32 = scoring.score_rows(z.float(), y).loss.numpy()
    np.testing.assert_allclose(got32, want, rtol=4e-7)


# ------------------------------------------------------------------ peers: scikit-learn


def test_losses_and_top_k_equal_scikit_learn() -> None:
    """On float64 logits without ties: mean loss = log_loss of softmax(z) (sklearn), and
    mean(rank < k) = top_k_accuracy_score for k = 1, 2, 5; the probability path likewise,
    with p_y = 0 rows clipped as log_loss clips them."""
    rng = np.random.default_rng(11)
    n, classes = 300, 12
    z = rng.normal(size=(n, classes)) * 2
    y = rng.integers(0, classes, n)
    labels = list(range(classes))
    for scores in (score_rows(z, y, logits=True), score_rows_numpy(z, y, logits=True)):
        p = softmax(z, axis=1)
        assert math.isclose(scores.loss.mean(), log_loss(y, p, labels=labels), rel_tol=1e-12)
        for k in (1, 2, 5):
            hits = float(np.mean(scores.rank < k))
            assert hits == top_k_accuracy_score(y, z, k=k, labels=labels), k
        brier = ((p - np.eye(classes)[y]) ** 2).sum(axis=1)
        np.testing.assert_allclose(
            scores.sum_squares - 2 * scores.p_true + 1, brier, rtol=1e-12, atol=1e-15
        )
    p = softmax(z, axis=1)
    p[:5] = np.eye(classes)[(y[:5] + 1) % classes]  # p_y = 0: clipped to EPS
    p[5:8] = np.eye(classes)[y[5:8]]  # p_y = 1: clipped to 1 - EPS
    prob = score_rows(p, y, logits=False)
    assert math.isclose(prob.loss.mean(), log_loss(y, p, labels=labels), rel_tol=1e-12)
    np.testing.assert_allclose(prob.loss[:5], -math.log(EPS), rtol=1e-15)
    for k in (1, 3):
        # no ties among the probabilities of the rows past the first 8
        hits = float(np.mean(prob.rank[8:] < k))
        assert hits == top_k_accuracy_score(y[8:], p[8:], k=k, labels=labels)


def test_probability_scores_by_their_definitions() -> None:
    """Probabilities: predicted/confidence the first maximum, p_true, sum of squares, rank
    on the probabilities (ties to the lower index), loss -log clip(p_y)."""
    p = np.array([[0.2, 0.4, 0.4], [0.5, 0.25, 0.25], [0.0, 1.0, 0.0]])
    y = np.array([2, 2, 0])
    got = score_rows(p, y, logits=False)
    assert got.predicted.tolist() == [1, 0, 1] and got.rank.tolist() == [1, 2, 1]
    np.testing.assert_array_equal(got.confidence, [0.4, 0.5, 1.0])
    np.testing.assert_array_equal(got.p_true, [0.4, 0.25, 0.0])
    np.testing.assert_allclose(got.sum_squares, [0.36, 0.375, 1.0], rtol=1e-15)
    np.testing.assert_allclose(
        got.loss, [-math.log(0.4), -math.log(0.25), -math.log(EPS)], rtol=1e-15
    )


# ------------------------------------------------------------------ rows.score_rows' paths


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_rows_fast_path_equals_the_numpy_reference(dtype: type) -> None:
    """rows.score_rows on a NumPy array of each dtype (passed to the kernel as it is) equals
    score_rows_numpy on its float64 values; a read-only memory map is read without a
    warning and without a copy; sliced columns and reversed rows are handled."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(50, 300)) * 3).astype(dtype)
    y = rng.integers(0, 300, 50)
    torch_dtype = torch.from_numpy(x).dtype
    assert_scores(
        score_rows(x, y, logits=True),
        score_rows_numpy(x.astype(np.float64), y, logits=True),
        torch_dtype,
        "plain",
    )
    readonly = x.copy()
    readonly.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = score_rows(readonly, y, logits=True)
    assert_scores(got, score_rows_numpy(x, y, logits=True), torch_dtype, "read-only")
    for view in (x[:, 10:200], x[::-1], x[::2, ::3]):
        labels = y[: view.shape[0]] % view.shape[1]
        want = score_rows_numpy(view.astype(np.float64), labels, logits=True)
        assert_scores(score_rows(view, labels, logits=True), want, torch_dtype, "view")


def test_rows_without_torch_take_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without torch (its import fails) rows.score_rows is score_rows_numpy, exactly."""
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "crossentropy.torch.scoring", raising=False)
    monkeypatch.setitem(sys.modules, "crossentropy.torch.scoring", None)
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(7, 9)).astype(np.float32), rng.integers(0, 9, 7)
    got, want = score_rows(x, y, logits=True), score_rows_numpy(x, y, logits=True)
    for name in (*FIELDS, "predicted", "rank"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name))


def test_torch_path_without_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel is not available, scoring.score_rows computes the same numbers by
    torch operations in float64 (blocks of rows smaller than the input here)."""
    monkeypatch.setattr(_kernel, "fused_available", lambda: False)
    monkeypatch.setattr(scoring, "BLOCK_ELEMENTS", 1000)
    rng = np.random.default_rng(6)
    for kind in KINDS:
        z = torch.from_numpy(_logits(kind, 30, 97, rng))
        y = _labels(kind, z, rng)
        got = _as_numpy(scoring.score_rows(z, torch.from_numpy(y)))
        assert_scores(got, reference(z.numpy(), y), torch.float64, kind)
        want = score_rows_numpy(z.numpy(), y, logits=True)
        assert_scores(got, want, torch.float64, kind + " (numpy)")
    empty = scoring.score_rows(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))
    assert [t.shape for t in empty] == [(0,)] * 6
    with pytest.raises(ValueError, match=r"^logits: expected finite values; got .* row 1"):
        scoring.score_rows(torch.tensor([[0.0, 1.0], [math.inf, 0.0]]), torch.tensor([0, 1]))


# ------------------------------------------------------------------ hostile inputs


def _call(function: Callable[..., object], **changes: object) -> object:
    arguments: dict = {"logits": torch.randn(4, 5), "target": torch.tensor([0, 1, 2, 4])}
    arguments.update(changes)
    return function(*arguments.values())


@pytest.mark.parametrize(
    "function", [scoring.score_rows, _kernel.score_rows], ids=["public", "kernel"]
)
@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        (
            {"target": torch.tensor([0, 1, 5, 4])},
            ValueError,
            r"^target: .*\[0, 5\); got 5 at position \(2,\)",
        ),
        (
            {"target": torch.tensor([0, -1, 2, 4])},
            ValueError,
            r"^target: .*got -1 at position \(1,\)",
        ),
        (
            {"target": torch.tensor([2**62, 0, 0, 0])},
            ValueError,
            r"^target: .*got 4611686018427387904",
        ),
        ({"target": torch.tensor([-(2**63), 0, 0, 0])}, ValueError, r"^target: .*\[0, 5\)"),
        (
            {"target": torch.tensor([255, 0, 1, 2], dtype=torch.uint8)},
            ValueError,
            r"^target: .*got 255",
        ),
        ({"target": torch.zeros(4)}, TypeError, r"^target: expected integer"),
        ({"target": torch.zeros(4, dtype=torch.bool)}, TypeError, r"^target: expected integer"),
        ({"target": torch.tensor([0, 1, 2])}, ValueError, r"^target: expected shape \(4,\)"),
        ({"target": torch.zeros(4, 1, dtype=torch.int64)}, ValueError, r"^target: expected shape"),
        ({"logits": torch.randn(20)}, ValueError, r"^(logits|z): expected a 2-D"),
        (
            {"logits": torch.zeros(4, 5, dtype=torch.int32)},
            TypeError,
            r"^(logits|z): expected float",
        ),
        (
            {"logits": torch.zeros(4, 5, dtype=torch.complex64)},
            TypeError,
            r"^(logits|z): expected float",
        ),
        (
            {"logits": torch.zeros(4, 0)},
            ValueError,
            r"^(logits: expected at least one class|target: .*\[0, 0\))",
        ),
    ],
)
def test_score_rows_refuses_hostile_arguments(
    function: Callable[..., object], changes: dict, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        _call(function, **changes)


def test_public_score_rows_refuses_what_the_kernel_never_sees() -> None:
    with pytest.raises(TypeError, match=r"^logits: expected a torch.Tensor; got list"):
        scoring.score_rows([[0.0, 1.0]], torch.tensor([0]))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^target: expected a torch.Tensor; got list"):
        scoring.score_rows(torch.zeros(1, 2), [0])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^logits: expected a tensor with values .*meta"):
        scoring.score_rows(torch.zeros(2, 3, device="meta"), torch.tensor([0, 1]))
    big = torch.tensor([2**64 - 1, 0], dtype=torch.uint64)
    with pytest.raises(ValueError, match=r"^target: .*\[0, 3\)"):
        scoring.score_rows(torch.zeros(2, 3), big)
    for bad in (math.nan, math.inf, -math.inf):
        z = torch.zeros(3, 40)
        z[2, 33] = bad
        with pytest.raises(
            ValueError, match=r"^logits: expected finite values; got NaN or inf in row 2"
        ):
            scoring.score_rows(z, torch.tensor([0, 1, 2]))


def test_kernel_launcher_refuses_rows_that_are_not_contiguous() -> None:
    """The launcher refuses a column stride; the public function copies such rows."""
    z = torch.randn(6, 10, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    with pytest.raises(ValueError, match=r"^z: expected contiguous rows"):
        _kernel.score_rows(z[:, ::2], y)
    got = _as_numpy(scoring.score_rows(z[:, ::2], y))
    assert_scores(
        got, score_rows_numpy(z[:, ::2].numpy(), y.numpy(), logits=True), torch.float64, "strided"
    )
    transposed = _as_numpy(scoring.score_rows(z.t()[:5].t(), y))  # a column-major (6, 5)
    assert_scores(
        transposed,
        score_rows_numpy(z[:, :5].numpy(), y.numpy(), logits=True),
        torch.float64,
        "transposed",
    )


def test_kernel_rows_that_coincide_are_only_read() -> None:
    """Row stride 0 (an expanded row): every row scored as that row, nothing written."""
    row = torch.randn(1, 37)
    z = row.expand(5, 37)
    y = torch.tensor([0, 36, 3, 3, 10])
    got = _as_numpy(scoring.score_rows(z, y))
    assert_scores(
        got, score_rows_numpy(z.double().numpy(), y.numpy(), logits=True), torch.float32, "expanded"
    )


def _raw_kernel(dtype: torch.dtype) -> ctypes._CFuncPtr:
    names = {
        torch.float32: "f32",
        torch.float64: "f64",
        torch.bfloat16: "bf16",
        torch.float16: "f16",
    }
    return getattr(_kernel.load(), f"score_rows_{names[dtype]}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_itself_flags_labels_outside_the_row(dtype: torch.dtype) -> None:
    """The C kernel called directly (no Python check) with labels outside [0, C) (the int64
    extremes, -1, C) and an odd row stride: it returns -(first bad row + 1), writes every
    row, gives the bad rows z_y = NaN and rank -1, and the good rows their numbers. Under
    ASan (test_kernel_safety.py) this shows no index outside the row is formed."""
    classes, stride, rows_ = 19, 23, 8
    # exactly the elements the rows span: a read past the last row's end leaves the buffer
    storage = torch.randn((rows_ - 1) * stride + classes, dtype=torch.float64).to(dtype)
    z = storage.as_strided((rows_, classes), (stride, 1))
    y = torch.tensor([3, -1, 19, -(2**63), 2**63 - 1, 18, 2**40, 0])
    outputs = [torch.full((rows_,), -7.0, dtype=torch.float64) for _ in range(4)]
    outputs += [torch.full((rows_,), -7, dtype=torch.int64) for _ in range(2)]
    done = _raw_kernel(dtype)(
        z.data_ptr(), stride, y.data_ptr(), rows_, classes, *(o.data_ptr() for o in outputs)
    )
    assert done == -2
    peak, log_sum, picked, squares, argmax, rank = outputs
    good = torch.tensor([0, 5, 7])
    bad = torch.tensor([1, 2, 3, 4, 6])
    assert torch.isnan(picked[bad]).all() and (rank[bad] == -1).all()
    z64 = z.double()
    torch.testing.assert_close(peak, z64.max(dim=1).values, rtol=0, atol=0)
    torch.testing.assert_close(argmax, z64.argmax(dim=1), rtol=0, atol=0)
    rtol = 1e-14 if dtype == torch.float64 else 2e-7
    torch.testing.assert_close(peak + log_sum, torch.logsumexp(z64, dim=1), rtol=rtol, atol=rtol)
    torch.testing.assert_close(squares, (torch.softmax(z64, 1) ** 2).sum(1), rtol=rtol * 2, atol=0)
    torch.testing.assert_close(picked[good], z64[good, y[good]], rtol=0, atol=0)
    # bfloat16 and float16 round randn to few digits: ties happen, and an earlier tied class
    # counts as above (the kernel's rule, as argmax's)
    label = z64[good, y[good]][:, None]
    earlier = torch.arange(classes)[None, :] < y[good][:, None]
    want_rank = ((z64[good] > label) | ((z64[good] == label) & earlier)).sum(1)
    torch.testing.assert_close(rank[good], want_rank, rtol=0, atol=0)
    # every label in range: rows returned
    y_ok = torch.tensor([3, 1, 18, 0, 4, 18, 2, 0])
    assert (
        _raw_kernel(dtype)(
            z.data_ptr(), stride, y_ok.data_ptr(), rows_, classes, *(o.data_ptr() for o in outputs)
        )
        == rows_
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_rows_with_values_that_are_not_finite(dtype: torch.dtype) -> None:
    """NaN, +-inf, all -inf, float32's largest values of both signs (z - m overflows to
    -inf): no crash, the non-finite rows flagged (NaN, -1), the finite row exact."""
    big = torch.finfo(dtype).max
    z = torch.tensor(
        [
            [0.0, math.nan, 1.0],
            [0.0, math.inf, 1.0],
            [-math.inf] * 3,
            [0.0, -math.inf, 1.0],
            [-big, big, 0.0],
        ],
        dtype=torch.float64,
    ).to(dtype)
    peak, log_sum, picked, squares, argmax, rank = _kernel.score_rows(
        z, torch.tensor([0, 2, 1, 2, 1])
    )
    assert torch.isnan(peak[:4]).all() and torch.isnan(picked[:4]).all()
    assert (argmax[:4] == -1).all() and (rank[:4] == -1).all()
    assert picked[4] == float(big)
    assert peak[4] == float(big) and log_sum[4] == 0.0 and argmax[4] == 1 and rank[4] == 0
    assert squares[4] == 1.0
