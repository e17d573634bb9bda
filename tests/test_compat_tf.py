"""crossentropy.compat.tf against TensorFlow's documented definitions.

TensorFlow is not installed: the references below are independent float64 NumPy
transcriptions of the formulas in TensorFlow's documentation of ``tf.nn``:

- sigmoid:  max(x, 0) - x z + log(1 + exp(-|x|))
- weighted: (1 - z) x + (1 + (q - 1) z) (log(1 + exp(-|x|)) + max(-x, 0))
- softmax:  -sum_c y_c (x_c - logsumexp(x))
- sparse:   logsumexp(x) - x_y

plus the two worked examples printed in TensorFlow's documentation.
"""

from __future__ import annotations

import numpy as np
import pytest

from crossentropy.compat import tf

RTOL = 1e-12
ATOL = 1e-12


# --- independent float64 references of TensorFlow's documented formulas ------------------


def ref_sigmoid(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    return np.maximum(x, 0.0) - x * z + np.log1p(np.exp(-np.abs(x)))


def ref_weighted(x: np.ndarray, z: np.ndarray, q: float | np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    log_weight = 1.0 + (q - 1.0) * z
    return (1.0 - z) * x + log_weight * (np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0.0))


def ref_logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def ref_softmax_xent(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    lse = np.expand_dims(ref_logsumexp(x, axis), axis)
    return -np.sum(y * (x - lse), axis=axis)


def ref_sparse_xent(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    picked = np.take_along_axis(x, np.asarray(labels)[..., None], axis=-1)[..., 0]
    return ref_logsumexp(x, -1) - picked


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _soft_labels(rng: np.random.Generator, shape: tuple[int, ...], axis: int) -> np.ndarray:
    y = rng.random(shape)
    return y / y.sum(axis=axis, keepdims=True)


SHAPES = [(5,), (4, 3), (2, 3, 7), (1, 1)]


# --- the documented TensorFlow examples ---------------------------------------------------


def test_softmax_matches_tensorflow_documented_example() -> None:
    # tf.nn.softmax_cross_entropy_with_logits docs print [0.16984604, 0.82474494] (float32)
    logits = np.array([[4.0, 2.0, 1.0], [0.0, 5.0, 1.0]])
    labels = np.array([[1.0, 0.0, 0.0], [0.0, 0.8, 0.2]])
    loss = tf.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    np.testing.assert_allclose(loss, [0.16984604, 0.82474494], rtol=1e-6)


def test_sparse_matches_tensorflow_documented_example() -> None:
    # tf.nn.sparse_softmax_cross_entropy_with_logits docs print [0.29750752, 1.1448325, 0.]
    logits = np.array(
        [[2.0, -5.0, 0.5, -0.1], [0.0, 0.0, 1.9, 1.4], [-100.0, 100.0, -100.0, -100.0]]
    )
    labels = np.array([0, 3, 1])
    loss = tf.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    np.testing.assert_allclose(loss, [0.29750752, 1.1448325, 0.0], rtol=1e-6, atol=1e-12)


# --- sigmoid_cross_entropy_with_logits ----------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_sigmoid_matches_tf_formula(shape: tuple[int, ...]) -> None:
    rng = _rng(1)
    x = rng.normal(scale=4.0, size=shape)
    z = rng.random(shape)  # soft labels too
    loss = tf.sigmoid_cross_entropy_with_logits(labels=z, logits=x)
    assert loss.shape == shape
    np.testing.assert_allclose(loss, ref_sigmoid(x, z), rtol=RTOL, atol=ATOL)


def test_sigmoid_hard_labels_and_extreme_logits_are_exact() -> None:
    x = np.array([1e4, -1e4, 1e4, -1e4, 40.0, -40.0, 0.0])
    z = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    loss = tf.sigmoid_cross_entropy_with_logits(labels=z, logits=x)
    assert np.all(np.isfinite(loss))
    np.testing.assert_allclose(loss, ref_sigmoid(x, z), rtol=RTOL, atol=ATOL)
    assert loss[0] == 0.0 and loss[1] == 0.0
    assert loss[2] == 1e4 and loss[3] == 1e4


def test_sigmoid_infinite_logits_give_the_limit_not_nan() -> None:
    # TensorFlow's formula gives inf - inf = nan for (+inf, 1); the core returns the limit.
    x = np.array([np.inf, -np.inf, np.inf, -np.inf])
    z = np.array([1.0, 0.0, 0.0, 1.0])
    with np.errstate(invalid="ignore"):
        assert np.isnan(ref_sigmoid(x, z)[0])
    loss = tf.sigmoid_cross_entropy_with_logits(labels=z, logits=x)
    np.testing.assert_array_equal(loss, [0.0, 0.0, np.inf, np.inf])


def test_sigmoid_accepts_positional_labels_first() -> None:
    x = np.array([[0.3, -1.2], [2.0, 0.0]])
    z = np.array([[1.0, 0.0], [0.5, 1.0]])
    np.testing.assert_allclose(
        tf.sigmoid_cross_entropy_with_logits(z, x), ref_sigmoid(x, z), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("missing", ["labels", "logits", "both"])
def test_sigmoid_requires_labels_and_logits(missing: str) -> None:
    x = np.zeros(3)
    kwargs = {"labels": x, "logits": x}
    if missing == "both":
        kwargs = {}
    else:
        del kwargs[missing]
    with pytest.raises(ValueError, match="labels" if missing != "logits" else "logits"):
        tf.sigmoid_cross_entropy_with_logits(**kwargs)


def test_sigmoid_missing_names_the_missing_argument() -> None:
    with pytest.raises(ValueError, match=r"logits must be given"):
        tf.sigmoid_cross_entropy_with_logits(labels=np.zeros(2))
    with pytest.raises(ValueError, match=r"labels must be given"):
        tf.sigmoid_cross_entropy_with_logits(logits=np.zeros(2))


@pytest.mark.parametrize(
    ("labels_shape", "logits_shape"), [((3,), (4,)), ((2, 1), (2, 3)), ((3,), (1, 3))]
)
def test_sigmoid_shapes_must_match_exactly(
    labels_shape: tuple[int, ...], logits_shape: tuple[int, ...]
) -> None:
    # TensorFlow requires the same shape; broadcastable shapes are rejected too
    with pytest.raises(ValueError, match=r"shape"):
        tf.sigmoid_cross_entropy_with_logits(
            labels=np.zeros(labels_shape), logits=np.zeros(logits_shape)
        )


def test_sigmoid_empty_input() -> None:
    loss = tf.sigmoid_cross_entropy_with_logits(labels=np.zeros((0, 3)), logits=np.zeros((0, 3)))
    assert loss.shape == (0, 3)


# --- weighted_cross_entropy_with_logits ---------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("q", [0.25, 1.0, 3.0])
def test_weighted_matches_tf_formula(shape: tuple[int, ...], q: float) -> None:
    rng = _rng(2)
    x = rng.normal(scale=4.0, size=shape)
    z = rng.random(shape)
    loss = tf.weighted_cross_entropy_with_logits(labels=z, logits=x, pos_weight=q)
    assert loss.shape == shape
    np.testing.assert_allclose(loss, ref_weighted(x, z, q), rtol=RTOL, atol=ATOL)


def test_weighted_per_class_pos_weight_broadcasts_along_last_axis() -> None:
    rng = _rng(3)
    x = rng.normal(scale=3.0, size=(6, 4))
    z = (rng.random((6, 4)) > 0.5).astype(np.float64)
    q = np.array([0.5, 1.0, 2.0, 10.0])
    loss = tf.weighted_cross_entropy_with_logits(labels=z, logits=x, pos_weight=q)
    assert loss.shape == (6, 4)
    np.testing.assert_allclose(loss, ref_weighted(x, z, q), rtol=RTOL, atol=ATOL)


def test_weighted_with_unit_weight_is_sigmoid() -> None:
    rng = _rng(4)
    x = rng.normal(size=(3, 5))
    z = rng.random((3, 5))
    np.testing.assert_allclose(
        tf.weighted_cross_entropy_with_logits(z, x, 1.0),
        tf.sigmoid_cross_entropy_with_logits(z, x),
        rtol=RTOL,
        atol=ATOL,
    )


def test_weighted_extreme_logits_finite() -> None:
    x = np.array([1e4, -1e4, 1e4, -1e4])
    z = np.array([1.0, 0.0, 0.0, 1.0])
    loss = tf.weighted_cross_entropy_with_logits(labels=z, logits=x, pos_weight=2.0)
    np.testing.assert_allclose(loss, [0.0, 0.0, 1e4, 2e4], rtol=RTOL, atol=ATOL)


def test_weighted_errors() -> None:
    with pytest.raises(ValueError, match=r"labels must be given"):
        tf.weighted_cross_entropy_with_logits(None, np.zeros(2), 1.0)
    with pytest.raises(ValueError, match=r"pos_weight"):
        tf.weighted_cross_entropy_with_logits(np.zeros(2), np.zeros(2), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"shape"):
        tf.weighted_cross_entropy_with_logits(np.zeros(2), np.zeros(3), 1.0)


# --- softmax_cross_entropy_with_logits ----------------------------------------------------


@pytest.mark.parametrize("shape", [(5,), (4, 3), (2, 3, 7), (3, 1)])
def test_softmax_matches_tf_formula_per_example(shape: tuple[int, ...]) -> None:
    rng = _rng(5)
    x = rng.normal(scale=3.0, size=shape)
    y = _soft_labels(rng, shape, -1)
    loss = tf.softmax_cross_entropy_with_logits(labels=y, logits=x)
    assert loss.shape == shape[:-1]
    np.testing.assert_allclose(loss, ref_softmax_xent(x, y), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("axis", [0, 1, -2, 2, -1])
def test_softmax_axis_selects_the_class_axis(axis: int) -> None:
    rng = _rng(6)
    shape = (3, 4, 5)
    x = rng.normal(size=shape)
    y = _soft_labels(rng, shape, axis)
    loss = tf.softmax_cross_entropy_with_logits(labels=y, logits=x, axis=axis)
    expected_shape = tuple(d for i, d in enumerate(shape) if i != axis % 3)
    assert loss.shape == expected_shape
    np.testing.assert_allclose(loss, ref_softmax_xent(x, y, axis), rtol=RTOL, atol=ATOL)


def test_softmax_shift_invariant_and_exact_for_large_logits() -> None:
    x = np.array([[1e4, -1e4, 0.0], [1e4, 1e4, 1e4]])
    y = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    loss = tf.softmax_cross_entropy_with_logits(labels=y, logits=x)
    np.testing.assert_allclose(loss, [0.0, np.log(3.0)], rtol=RTOL, atol=ATOL)


def test_softmax_positional_order_is_labels_then_logits() -> None:
    x = np.array([[4.0, 2.0, 1.0]])
    y = np.array([[0.0, 0.0, 1.0]])
    np.testing.assert_allclose(
        tf.softmax_cross_entropy_with_logits(y, x), ref_softmax_xent(x, y), rtol=RTOL
    )


def test_softmax_errors() -> None:
    with pytest.raises(ValueError, match=r"logits must be given"):
        tf.softmax_cross_entropy_with_logits(np.zeros((2, 3)), None)
    with pytest.raises(ValueError, match=r"shape"):
        tf.softmax_cross_entropy_with_logits(labels=np.zeros((2, 3)), logits=np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"axis"):
        tf.softmax_cross_entropy_with_logits(
            labels=np.zeros((2, 3)), logits=np.zeros((2, 3)), axis=2
        )


# --- sparse_softmax_cross_entropy_with_logits ---------------------------------------------


@pytest.mark.parametrize("shape", [(5,), (4, 3), (2, 3, 7), (6, 1)])
def test_sparse_matches_tf_formula_per_example(shape: tuple[int, ...]) -> None:
    rng = _rng(7)
    x = rng.normal(scale=3.0, size=shape)
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    loss = tf.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=x)
    assert loss.shape == shape[:-1]
    np.testing.assert_allclose(loss, ref_sparse_xent(x, labels), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8])
def test_sparse_accepts_integer_dtypes(dtype: type) -> None:
    x = np.array([[0.5, 1.5, -0.5], [2.0, 0.0, 1.0]])
    labels = np.array([2, 0], dtype=dtype)
    loss = tf.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=x)
    np.testing.assert_allclose(loss, ref_sparse_xent(x, labels), rtol=RTOL, atol=ATOL)


def test_sparse_equals_softmax_with_one_hot_labels() -> None:
    rng = _rng(8)
    x = rng.normal(size=(5, 4))
    labels = rng.integers(0, 4, size=5)
    one_hot = np.eye(4)[labels]
    np.testing.assert_allclose(
        tf.sparse_softmax_cross_entropy_with_logits(labels, x),
        tf.softmax_cross_entropy_with_logits(one_hot, x),
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("bad", [-100, -1, 3, 7])
def test_sparse_rejects_out_of_range_labels_including_minus_100(bad: int) -> None:
    # TensorFlow has no ignore_index: -100 is an invalid class like any other
    x = np.zeros((3, 3))
    labels = np.array([0, bad, 1])
    with pytest.raises(ValueError, match=rf"labels.*\[0, 3\).*got {bad} at position \(1,\)"):
        tf.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=x)


def test_sparse_all_minus_100_is_an_error_not_zero() -> None:
    with pytest.raises(ValueError, match=r"-100"):
        tf.sparse_softmax_cross_entropy_with_logits(
            labels=np.full((2, 2), -100), logits=np.zeros((2, 2, 5))
        )


def test_sparse_float_labels_are_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"labels"):
        tf.sparse_softmax_cross_entropy_with_logits(
            labels=np.array([0.0, 1.0]), logits=np.zeros((2, 3))
        )


@pytest.mark.parametrize(
    ("labels_shape", "logits_shape"), [((3,), (4, 5)), ((2, 3), (2, 5)), ((), (2, 5))]
)
def test_sparse_label_shape_must_be_logits_without_last_axis(
    labels_shape: tuple[int, ...], logits_shape: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match=r"labels"):
        tf.sparse_softmax_cross_entropy_with_logits(
            labels=np.zeros(labels_shape, dtype=np.int64), logits=np.zeros(logits_shape)
        )


def test_sparse_scalar_logits_rejected() -> None:
    with pytest.raises(ValueError, match=r"logits"):
        tf.sparse_softmax_cross_entropy_with_logits(labels=np.array(0), logits=np.array(1.0))


def test_sparse_missing_argument() -> None:
    with pytest.raises(ValueError, match=r"labels must be given"):
        tf.sparse_softmax_cross_entropy_with_logits(None, np.zeros((2, 3)))


def test_sparse_empty_batch() -> None:
    loss = tf.sparse_softmax_cross_entropy_with_logits(
        labels=np.zeros((0,), dtype=np.int64), logits=np.zeros((0, 4))
    )
    assert loss.shape == (0,)


# --- name is accepted and ignored; other array libraries -----------------------------------


def test_name_is_accepted_and_ignored() -> None:
    rng = _rng(9)
    x = rng.normal(size=(3, 4))
    z = rng.random((3, 4))
    y = _soft_labels(rng, (3, 4), -1)
    labels = np.array([0, 3, 2])
    pairs = [
        (
            tf.sigmoid_cross_entropy_with_logits(labels=z, logits=x),
            tf.sigmoid_cross_entropy_with_logits(labels=z, logits=x, name="bce"),
        ),
        (
            tf.weighted_cross_entropy_with_logits(z, x, 2.0),
            tf.weighted_cross_entropy_with_logits(z, x, 2.0, name="weighted"),
        ),
        (
            tf.softmax_cross_entropy_with_logits(y, x),
            tf.softmax_cross_entropy_with_logits(y, x, name="xent"),
        ),
        (
            tf.sparse_softmax_cross_entropy_with_logits(labels, x),
            tf.sparse_softmax_cross_entropy_with_logits(labels, x, name="sparse_xent"),
        ),
    ]
    for plain, named in pairs:
        np.testing.assert_array_equal(plain, named)


def test_lists_are_accepted() -> None:
    loss = tf.sparse_softmax_cross_entropy_with_logits(labels=[1], logits=[[0.0, 0.0]])
    np.testing.assert_allclose(loss, [np.log(2.0)], rtol=RTOL)


def test_torch_in_torch_out() -> None:
    torch = pytest.importorskip("torch")
    rng = _rng(10)
    x = rng.normal(size=(4, 3))
    z = rng.random((4, 3))
    y = _soft_labels(rng, (4, 3), -1)
    labels = np.array([0, 2, 1, 1])
    tx, tz, ty = (torch.tensor(a, dtype=torch.float32) for a in (x, z, y))
    tl = torch.tensor(labels)
    results = [
        (tf.sigmoid_cross_entropy_with_logits(tz, tx), ref_sigmoid(x, z)),
        (tf.weighted_cross_entropy_with_logits(tz, tx, 2.0), ref_weighted(x, z, 2.0)),
        (tf.softmax_cross_entropy_with_logits(ty, tx), ref_softmax_xent(x, y)),
        (tf.sparse_softmax_cross_entropy_with_logits(tl, tx), ref_sparse_xent(x, labels)),
    ]
    for got, expected in results:
        assert isinstance(got, torch.Tensor)
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"-100"):
        tf.sparse_softmax_cross_entropy_with_logits(torch.tensor([0, -100, 1, 1]), tx)


def test_float32_numpy_keeps_dtype() -> None:
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    y = np.array([[0.0, 0.0, 1.0]], dtype=np.float32)
    loss = tf.softmax_cross_entropy_with_logits(labels=y, logits=x)
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss, ref_softmax_xent(x, y), rtol=1e-6)
