"""Every loss vs the float64 reference, and vs torch.nn.functional in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
import reference as ref
from conftest import (
    REDUCTIONS,
    SHAPE_IDS,
    SHAPES,
    assert_close64,
    lead_shape,
    make_int_labels,
    make_logits,
    make_soft_labels,
    make_weight,
    n_classes,
)


def _t(x):
    return torch.as_tensor(np.array(x, order="C"))


def _torch_class_first(x: np.ndarray, axis: int) -> np.ndarray:
    """Move the class axis to where torch wants it (dim 1, or dim 0 for unbatched)."""
    if x.ndim == 1:
        return x
    return np.moveaxis(x, axis, 1)


def _torch_sparse(fn, x, labels, axis, reduction, **kw) -> np.ndarray:
    """torch fn on integer targets; unbatched inputs get a batch of one, because torch's
    unbatched path breaks with label smoothing ("output with shape [] doesn't match")."""
    if x.ndim == 1:
        out = fn(_t(x[None]), _t(np.asarray(labels)[None]), reduction=reduction, **kw)
        return out.numpy().reshape(()) if reduction == "none" else out.numpy()
    return fn(_t(np.moveaxis(x, axis, 1)), _t(labels), reduction=reduction, **kw).numpy()


def _torch_nan_mean(labels, reduction, ignore_index=-100) -> bool:
    """torch returns NaN for a mean over no counted target; the contract says 0 (tested
    against the reference above and in test_numerics), so skip the torch comparison."""
    return reduction == "mean" and bool(np.all(np.asarray(labels) == ignore_index))


def _check_shape_of_none(out, expected_shape):
    assert np.asarray(out).shape == tuple(expected_shape)


# --------------------------------------------------------------- softmax, dense labels


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize(
    "opts",
    [{}, {"weight": True}, {"label_smoothing": 0.2}, {"weight": True, "label_smoothing": 0.1}],
    ids=["plain", "weight", "smooth", "weight+smooth"],
)
def test_softmax_cross_entropy(rng, shape, axis, reduction, opts):
    c = n_classes(shape, axis)
    x = make_logits(rng, shape)
    y = make_soft_labels(rng, shape, axis)
    kw = dict(opts)
    if kw.pop("weight", False):
        kw["weight"] = make_weight(rng, c)
    got = ce.softmax_cross_entropy(x, y, axis=axis, reduction=reduction, **kw)
    expected = ref.softmax_cross_entropy(x, y, axis=axis, reduction=reduction, **kw)
    assert_close64(got, expected)
    if reduction == "none":
        _check_shape_of_none(got, lead_shape(shape, axis))

    tkw = {k: (_t(v) if k == "weight" else v) for k, v in kw.items()}
    tout = F.cross_entropy(
        _t(_torch_class_first(x, axis)),
        _t(_torch_class_first(y, axis)),
        reduction=reduction,
        **tkw,
    )
    assert_close64(got, tout.numpy())


def test_softmax_cross_entropy_one_hot_equals_sparse(rng):
    x = make_logits(rng, (6, 4))
    t = make_int_labels(rng, (6, 4), -1)
    y = np.eye(4)[t]
    assert_close64(ce.softmax_cross_entropy(x, y), ce.sparse_softmax_cross_entropy(x, t))


def test_softmax_cross_entropy_known_value():
    # uniform logits over 4 classes: -log(1/4) whatever the (normalised) label
    assert_close64(
        ce.softmax_cross_entropy(np.zeros((2, 4)), np.array([[1, 0, 0, 0], [0.5, 0.5, 0, 0.0]])),
        np.asarray(np.log(4.0)),
    )


# --------------------------------------------------------------- softmax, sparse labels

SPARSE_OPTS = [
    {},
    {"weight": True},
    {"ignore": True},
    {"ignore_index": 1},
    {"label_smoothing": 0.3},
    {"weight": True, "ignore": True, "label_smoothing": 0.15},
    {"z_loss": 1e-2},
    {"softcap": 2.5},
    {"weight": True, "ignore": True, "label_smoothing": 0.1, "z_loss": 1e-3, "softcap": 4.0},
]
SPARSE_IDS = [
    "plain",
    "weight",
    "ignore",
    "ignore_index=1",
    "smooth",
    "w+ign+sm",
    "z",
    "cap",
    "all",
]


def _sparse_kwargs(rng, shape, axis, opts):
    c = n_classes(shape, axis)
    labels = make_int_labels(rng, shape, axis)
    kw = dict(opts)
    if kw.pop("weight", False):
        kw["weight"] = make_weight(rng, c)
    if kw.pop("ignore", False):
        flat = labels.reshape(-1)
        flat[:: max(1, flat.size // 2)] = -100  # at least one ignored, never all (unless 1)
    return labels, kw


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("opts", SPARSE_OPTS, ids=SPARSE_IDS)
def test_sparse_softmax_cross_entropy(rng, shape, axis, reduction, opts):
    x = make_logits(rng, shape)
    labels, kw = _sparse_kwargs(rng, shape, axis, opts)
    got = ce.sparse_softmax_cross_entropy(x, labels, axis=axis, reduction=reduction, **kw)
    expected = ref.sparse_softmax_cross_entropy(x, labels, axis=axis, reduction=reduction, **kw)
    assert_close64(got, expected)
    if reduction == "none":
        _check_shape_of_none(got, lead_shape(shape, axis))

    if "z_loss" in kw or "softcap" in kw:
        return  # torch has no z-loss / softcap
    if _torch_nan_mean(labels, reduction, kw.get("ignore_index", -100)):
        return
    tkw = {k: (_t(v) if k == "weight" else v) for k, v in kw.items()}
    tout = _torch_sparse(F.cross_entropy, x, labels, axis, reduction, **tkw)
    assert_close64(got, tout)


def test_sparse_z_loss_and_softcap_by_hand():
    x = np.array([[2.0, -1.0, 0.5]])
    lse = np.log(np.exp(x).sum())
    expected = lse - 2.0 + 0.1 * lse**2
    assert_close64(
        ce.sparse_softmax_cross_entropy(x, np.array([0]), z_loss=0.1), np.asarray(expected)
    )
    xc = 1.5 * np.tanh(x / 1.5)
    expected = np.log(np.exp(xc).sum()) - xc[0, 2]
    assert_close64(
        ce.sparse_softmax_cross_entropy(x, np.array([2]), softcap=1.5), np.asarray(expected)
    )


def test_sparse_ignored_entries_are_zero_in_none(rng):
    x = make_logits(rng, (5, 3))
    labels = np.array([0, -100, 2, -100, 1])
    out = np.asarray(ce.sparse_softmax_cross_entropy(x, labels, reduction="none"))
    assert out[1] == 0.0 and out[3] == 0.0
    assert np.all(out[[0, 2, 4]] > 0)


def test_sparse_accepts_int32_and_lists():
    x = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
    expected = ref.sparse_softmax_cross_entropy(x, [2, 0])
    assert_close64(ce.sparse_softmax_cross_entropy(x, [2, 0]), expected)
    assert_close64(
        ce.sparse_softmax_cross_entropy(np.array(x), np.array([2, 0], dtype=np.int32)), expected
    )


# -------------------------------------------------------------------- sigmoid, BCE


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "axis"), SHAPES[:3], ids=SHAPE_IDS[:3])
@pytest.mark.parametrize("opts", ["plain", "pos_weight", "weight", "both", "weight_full"])
def test_sigmoid_cross_entropy(rng, shape, axis, reduction, opts):
    x = make_logits(rng, shape)
    y = (rng.random(shape) < 0.4).astype(np.float64)
    y.reshape(-1)[::3] = rng.random(y.reshape(-1)[::3].shape)  # some soft labels too
    c = shape[-1]
    kw = {}
    if opts in ("pos_weight", "both"):
        kw["pos_weight"] = make_weight(rng, c) * 2
    if opts in ("weight", "both"):
        kw["weight"] = make_weight(rng, c)
    if opts == "weight_full":
        kw["weight"] = rng.uniform(0, 2, size=shape)
    got = ce.sigmoid_cross_entropy(x, y, reduction=reduction, **kw)
    assert_close64(got, ref.sigmoid_cross_entropy(x, y, reduction=reduction, **kw))
    if reduction == "none":
        _check_shape_of_none(got, shape)
    tkw = {k: _t(v) for k, v in kw.items()}
    tout = F.binary_cross_entropy_with_logits(_t(x), _t(y), reduction=reduction, **tkw)
    assert_close64(got, tout.numpy())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_torch_clamp(rng, reduction, weighted):
    p = rng.random((6, 5))
    y = (rng.random((6, 5)) < 0.5).astype(np.float64)
    p[0, :4] = [0.0, 1.0, 0.0, 1.0]  # log 0 clamped at -100
    y[0, :4] = [1.0, 0.0, 0.0, 1.0]
    p[1, 0] = 1e-50  # log p = -115 -> clamped
    y[1, 0] = 1.0
    kw = {"weight": rng.uniform(0.5, 2, size=(5,))} if weighted else {}
    got = ce.binary_cross_entropy(p, y, reduction=reduction, **kw)
    assert_close64(got, ref.binary_cross_entropy(p, y, reduction=reduction, **kw))
    tkw = {k: _t(v) for k, v in kw.items()}
    tout = F.binary_cross_entropy(_t(p), _t(y), reduction=reduction, **tkw)
    assert_close64(got, tout.numpy())
    if reduction == "none":
        out = np.asarray(got)
        w = kw.get("weight", np.ones(5))
        assert_close64(out[0, :4], np.array([100.0, 100.0, 0.0, 0.0]) * w[:4])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [1e-7, 1e-3])
def test_binary_cross_entropy_eps_clipping(rng, reduction, eps):
    p = rng.random((4, 5))
    y = rng.random((4, 5))
    p[0, :3] = [0.0, 1.0, eps / 10]
    got = ce.binary_cross_entropy(p, y, eps=eps, reduction=reduction)
    assert_close64(got, ref.binary_cross_entropy(p, y, eps=eps, reduction=reduction))
    # same as clipping by hand, as scikit-learn's log_loss does
    pc = np.clip(p, eps, 1 - eps)
    by_hand = -(y * np.log(pc) + (1 - y) * np.log(1 - pc))
    assert_close64(ce.binary_cross_entropy(p, y, eps=eps, reduction="none"), by_hand)


def test_binary_cross_entropy_vs_sklearn_log_loss(rng):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    p = rng.random(20)
    y = (rng.random(20) < 0.5).astype(np.int64)
    assert_close64(
        ce.binary_cross_entropy(p, y.astype(np.float64)),
        np.asarray(sklearn_metrics.log_loss(y, p, labels=[0, 1])),
    )


# -------------------------------------------------------------------------------- NLL


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("opts", ["plain", "weight", "ignore", "weight+ignore", "ignore_index=0"])
def test_nll_loss(rng, shape, axis, reduction, opts):
    c = n_classes(shape, axis)
    lp = ref.log_softmax(make_logits(rng, shape), axis=axis)
    labels = make_int_labels(rng, shape, axis)
    kw = {}
    if "weight" in opts:
        kw["weight"] = make_weight(rng, c)
    if "ignore" in opts and opts != "ignore_index=0":
        labels.reshape(-1)[:: max(1, labels.size // 2)] = -100
    if opts == "ignore_index=0":
        kw["ignore_index"] = 0
    got = ce.nll_loss(lp, labels, axis=axis, reduction=reduction, **kw)
    assert_close64(got, ref.nll_loss(lp, labels, axis=axis, reduction=reduction, **kw))
    if reduction == "none":
        _check_shape_of_none(got, lead_shape(shape, axis))
    tkw = {k: (_t(v) if k == "weight" else v) for k, v in kw.items()}
    if _torch_nan_mean(labels, reduction, kw.get("ignore_index", -100)):
        return
    assert_close64(got, _torch_sparse(F.nll_loss, lp, labels, axis, reduction, **tkw))


def test_nll_of_log_softmax_is_sparse_cross_entropy(rng):
    x = make_logits(rng, (7, 5))
    t = make_int_labels(rng, (7, 5), -1)
    w = make_weight(rng, 5)
    assert_close64(
        ce.nll_loss(ce.log_softmax(x), t, weight=w),
        ce.sparse_softmax_cross_entropy(x, t, weight=w),
    )


# ------------------------------------------------------------------------- regression

REGRESSION = [
    ("mse", {}, lambda a, b, r: F.mse_loss(a, b, reduction=r)),
    ("l1", {}, lambda a, b, r: F.l1_loss(a, b, reduction=r)),
    ("smooth_l1", {}, lambda a, b, r: F.smooth_l1_loss(a, b, reduction=r)),
    ("smooth_l1", {"beta": 0.5}, lambda a, b, r: F.smooth_l1_loss(a, b, reduction=r, beta=0.5)),
    ("huber", {}, lambda a, b, r: F.huber_loss(a, b, reduction=r)),
    ("huber", {"delta": 2.0}, lambda a, b, r: F.huber_loss(a, b, reduction=r, delta=2.0)),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("name", "kw", "torch_fn"), REGRESSION, ids=lambda v: str(v))
@pytest.mark.parametrize("shape", [(7,), (4, 5), (2, 3, 4)])
def test_regression_losses(rng, name, kw, torch_fn, reduction, shape):
    a = rng.normal(size=shape) * 2
    b = rng.normal(size=shape) * 2
    got = getattr(ce, name)(a, b, reduction=reduction, **kw)
    assert_close64(got, ref.LOSSES[name](a, b, reduction=reduction, **kw))
    assert_close64(got, torch_fn(_t(a), _t(b), reduction).numpy())


def test_regression_known_values():
    a = np.array([0.0, 0.0, 0.0, 0.0])
    b = np.array([0.5, -0.5, 2.0, -3.0])
    assert_close64(ce.mse(a, b, reduction="sum"), np.asarray(0.25 + 0.25 + 4 + 9))
    assert_close64(ce.l1(a, b, reduction="sum"), np.asarray(6.0))
    assert_close64(ce.smooth_l1(a, b, reduction="none"), np.array([0.125, 0.125, 1.5, 2.5]))
    assert_close64(ce.huber(a, b, delta=1.0, reduction="none"), np.array([0.125, 0.125, 1.5, 2.5]))
    assert_close64(ce.huber(a, b, delta=2.0, reduction="none"), np.array([0.125, 0.125, 2.0, 4.0]))


# --------------------------------------------------------------------------- defaults


def test_default_reduction_is_mean_and_axis_is_last(rng):
    x = make_logits(rng, (4, 3))
    y = make_soft_labels(rng, (4, 3), -1)
    t = make_int_labels(rng, (4, 3), -1)
    assert_close64(ce.softmax_cross_entropy(x, y), ref.softmax_cross_entropy(x, y))
    assert_close64(ce.sparse_softmax_cross_entropy(x, t), ref.sparse_softmax_cross_entropy(x, t))
    p = ref.sigmoid(x)
    yb = (y > 0.3).astype(np.float64)
    assert_close64(ce.binary_cross_entropy(p, yb), ref.binary_cross_entropy(p, yb))
    assert_close64(ce.sigmoid_cross_entropy(x, yb), ref.sigmoid_cross_entropy(x, yb))
    assert_close64(ce.nll_loss(ref.log_softmax(x), t), ref.nll_loss(ref.log_softmax(x), t))


def test_float32_losses_stay_float32(rng):
    x = make_logits(rng, (8, 6)).astype(np.float32)
    t = make_int_labels(rng, (8, 6), -1)
    y = make_soft_labels(rng, (8, 6), -1).astype(np.float32)
    for out, expected in [
        (ce.sparse_softmax_cross_entropy(x, t), ref.sparse_softmax_cross_entropy(x, t)),
        (ce.softmax_cross_entropy(x, y), ref.softmax_cross_entropy(x, y)),
        (ce.sigmoid_cross_entropy(x, y), ref.sigmoid_cross_entropy(x, y)),
        (ce.mse(x, y), ref.mse(x, y)),
    ]:
        out = np.asarray(out)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_positive_axis_equals_negative_axis(rng):
    x = make_logits(rng, (2, 3, 5))
    t = make_int_labels(rng, (2, 3, 5), -1)
    y = make_soft_labels(rng, (2, 3, 5), -1)
    for reduction in REDUCTIONS:
        assert_close64(
            ce.sparse_softmax_cross_entropy(x, t, axis=2, reduction=reduction),
            np.asarray(ce.sparse_softmax_cross_entropy(x, t, axis=-1, reduction=reduction)),
        )
        assert_close64(
            ce.softmax_cross_entropy(x, y, axis=2, reduction=reduction),
            np.asarray(ce.softmax_cross_entropy(x, y, axis=-1, reduction=reduction)),
        )
    # class axis 0 of a (C, N) array
    assert_close64(
        ce.sparse_softmax_cross_entropy(x[0].T, t[0], axis=0, reduction="none"),
        ref.sparse_softmax_cross_entropy(x[0], t[0], reduction="none"),
    )


def test_unbatched_sparse_with_scalar_label():
    x = np.array([1.0, 2.0, 3.0])
    expected = ref.sparse_softmax_cross_entropy(x, np.array(2), reduction="none")
    assert expected.shape == ()
    assert_close64(ce.sparse_softmax_cross_entropy(x, 2, reduction="none"), expected)
    assert_close64(ce.sparse_softmax_cross_entropy(x, np.int64(2)), expected)
    assert_close64(ce.nll_loss(ref.log_softmax(x), 2), expected)
