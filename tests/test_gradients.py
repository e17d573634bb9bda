"""crossentropy.gradients: (loss, d reduced loss / d first argument) for every loss.

Checked against hand-derived float64 gradients (tests/reference.py), against the loss
functions themselves, and against torch autograd in float64.
"""

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
    make_int_labels,
    make_logits,
    make_soft_labels,
    make_weight,
    n_classes,
)
from crossentropy import gradients as G

LOSS_NAMES = [
    "softmax_cross_entropy",
    "sparse_softmax_cross_entropy",
    "sigmoid_cross_entropy",
    "binary_cross_entropy",
    "nll_loss",
    "mse",
    "l1",
    "smooth_l1",
    "huber",
]


def test_gradients_module_has_every_loss():
    for name in LOSS_NAMES:
        assert callable(getattr(G, name)), name
        assert callable(getattr(ce, name)), name


def _check(name, args, kw, shape):
    loss, grad = getattr(G, name)(*args, **kw)
    assert np.asarray(grad).shape == tuple(shape)
    assert_close64(loss, ref.LOSSES[name](*args, **kw))
    assert_close64(loss, getattr(ce, name)(*args, **kw))
    assert_close64(grad, ref.GRADIENTS[name](*args, **kw))
    return loss, grad


def _t(x, grad=False):
    t = torch.as_tensor(np.array(x, order="C"))
    return t.requires_grad_(True) if grad else t


def _torch_grad(fn, x_np, axis, target, **kw):
    """Gradient of torch fn(...).sum() w.r.t. x, in our (class axis = axis) layout.

    Unbatched inputs are given to torch as a batch of one: torch's own unbatched path
    fails in backward ("size mismatch (got input: [5], target: [1])")."""
    if x_np.ndim == 1:
        xt = _t(x_np[None], grad=True)
        fn(xt, target[None], **kw).sum().backward()
        return xt.grad.numpy()[0]
    xt = _t(np.moveaxis(x_np, axis, 1), grad=True)
    fn(xt, target, **kw).sum().backward()
    return np.moveaxis(xt.grad.numpy(), 1, axis)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("opts", ["plain", "weight", "smooth", "weight+smooth", "unnormalised"])
def test_softmax_cross_entropy_grad(rng, shape, axis, reduction, opts):
    c = n_classes(shape, axis)
    x = make_logits(rng, shape)
    y = make_soft_labels(rng, shape, axis)
    kw = {"axis": axis, "reduction": reduction}
    if "weight" in opts:
        kw["weight"] = make_weight(rng, c)
    if "smooth" in opts:
        kw["label_smoothing"] = 0.2
    if opts == "unnormalised":
        y = y * rng.uniform(0.2, 3.0, size=y.shape)
    _, grad = _check("softmax_cross_entropy", (x, y), kw, shape)
    tkw = {"reduction": reduction, "label_smoothing": kw.get("label_smoothing", 0.0)}
    if "weight" in kw:
        tkw["weight"] = _t(kw["weight"])
    yt = _t(np.moveaxis(y, axis, 1) if y.ndim > 1 else y)
    assert_close64(grad, _torch_grad(F.cross_entropy, x, axis, yt, **tkw))


SPARSE_OPTS = {
    "plain": {},
    "weight": {"weight": True},
    "ignore": {"ignore": True},
    "smooth": {"label_smoothing": 0.25},
    "z": {"z_loss": 0.05},
    "cap": {"softcap": 2.0},
    "all": {"weight": True, "ignore": True, "label_smoothing": 0.1, "z_loss": 1e-2, "softcap": 3.0},
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("opts", list(SPARSE_OPTS), ids=list(SPARSE_OPTS))
def test_sparse_softmax_cross_entropy_grad(rng, shape, axis, reduction, opts):
    c = n_classes(shape, axis)
    x = make_logits(rng, shape)
    labels = make_int_labels(rng, shape, axis)
    kw = dict(SPARSE_OPTS[opts])
    if kw.pop("weight", False):
        kw["weight"] = make_weight(rng, c)
    if kw.pop("ignore", False):
        labels.reshape(-1)[:: max(1, labels.size // 2)] = -100
    kw.update(axis=axis, reduction=reduction)
    _, grad = _check("sparse_softmax_cross_entropy", (x, labels), kw, shape)
    if "z_loss" in kw or "softcap" in kw:
        return
    if reduction == "mean" and np.all(labels == -100):
        return  # torch: NaN; the contract: 0 and zero gradient (checked vs reference)
    tkw = {"reduction": reduction, "label_smoothing": kw.get("label_smoothing", 0.0)}
    if "weight" in kw:
        tkw["weight"] = _t(kw["weight"])
    assert_close64(grad, _torch_grad(F.cross_entropy, x, axis, _t(labels), **tkw))


def test_sparse_ignored_rows_get_exact_zero_gradient(rng):
    x = make_logits(rng, (6, 4))
    labels = np.array([1, -100, 3, -100, 0, 2])
    for reduction in REDUCTIONS:
        _, g = G.sparse_softmax_cross_entropy(x, labels, label_smoothing=0.1, reduction=reduction)
        g = np.asarray(g)
        assert np.all(g[[1, 3]] == 0.0)
        assert np.all(np.abs(g[[0, 2, 4, 5]]).sum(axis=-1) > 0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(5,), (4, 5), (2, 3, 5)])
@pytest.mark.parametrize("opts", ["plain", "pos_weight", "weight", "both"])
def test_sigmoid_cross_entropy_grad(rng, shape, reduction, opts):
    x = make_logits(rng, shape)
    y = rng.random(shape)
    kw = {"reduction": reduction}
    if opts in ("pos_weight", "both"):
        kw["pos_weight"] = make_weight(rng, shape[-1]) * 3
    if opts in ("weight", "both"):
        kw["weight"] = rng.uniform(0, 2, size=shape)
    _, grad = _check("sigmoid_cross_entropy", (x, y), kw, shape)
    xt = _t(x, grad=True)
    tkw = {k: _t(v) for k, v in kw.items() if k != "reduction"}
    F.binary_cross_entropy_with_logits(xt, _t(y), reduction=reduction, **tkw).sum().backward()
    assert_close64(grad, xt.grad.numpy())


def test_sigmoid_grad_is_sigmoid_minus_label(rng):
    x = make_logits(rng, (3, 4))
    y = rng.random((3, 4))
    _, g = G.sigmoid_cross_entropy(x, y, reduction="sum")
    assert_close64(g, ref.sigmoid(x) - y)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("opts", ["clamp", "clamp+weight", "eps"])
def test_binary_cross_entropy_grad(rng, reduction, opts):
    shape = (4, 5)
    p = rng.uniform(0.05, 0.95, size=shape)
    y = rng.random(shape)
    kw = {"reduction": reduction}
    if "weight" in opts:
        kw["weight"] = rng.uniform(0.5, 2, size=shape)
    if opts == "eps":
        kw["eps"] = 0.1
        p[0, :2] = [0.01, 0.99]  # clipped: zero gradient there
    _, grad = _check("binary_cross_entropy", (p, y), kw, shape)
    if opts == "eps":
        assert np.all(np.asarray(grad)[0, :2] == 0.0)
        return
    pt = _t(p, grad=True)
    tkw = {"weight": _t(kw["weight"])} if "weight" in kw else {}
    F.binary_cross_entropy(pt, _t(y), reduction=reduction, **tkw).sum().backward()
    # torch divides by max(p(1-p), 1e-12): same as ours for p in [0.05, 0.95]
    assert_close64(grad, pt.grad.numpy())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("opts", ["plain", "weight", "weight+ignore"])
def test_nll_loss_grad(rng, shape, axis, reduction, opts):
    c = n_classes(shape, axis)
    lp = ref.log_softmax(make_logits(rng, shape), axis=axis)
    labels = make_int_labels(rng, shape, axis)
    kw = {"axis": axis, "reduction": reduction}
    if "weight" in opts:
        kw["weight"] = make_weight(rng, c)
    if "ignore" in opts:
        labels.reshape(-1)[:: max(1, labels.size // 2)] = -100
    _, grad = _check("nll_loss", (lp, labels), kw, shape)
    if reduction == "mean" and np.all(labels == -100):
        return
    tkw = {"reduction": reduction}
    if "weight" in kw:
        tkw["weight"] = _t(kw["weight"])
    assert_close64(grad, _torch_grad(F.nll_loss, lp, axis, _t(labels), **tkw))


REGRESSION = [
    ("mse", {}, F.mse_loss),
    ("l1", {}, F.l1_loss),
    (
        "smooth_l1",
        {"beta": 0.7},
        lambda a, b, reduction, beta: F.smooth_l1_loss(a, b, reduction=reduction, beta=beta),
    ),
    (
        "huber",
        {"delta": 1.3},
        lambda a, b, reduction, delta: F.huber_loss(a, b, reduction=reduction, delta=delta),
    ),
]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(("name", "kw", "torch_fn"), REGRESSION, ids=[r[0] for r in REGRESSION])
def test_regression_grads(rng, name, kw, torch_fn, reduction):
    shape = (3, 7)
    a = rng.normal(size=shape) * 2
    b = rng.normal(size=shape) * 2
    _, grad = _check(name, (a, b), {**kw, "reduction": reduction}, shape)
    at = _t(a, grad=True)
    torch_fn(at, _t(b), reduction=reduction, **kw).sum().backward()
    assert_close64(grad, at.grad.numpy())


def test_none_gradient_is_gradient_of_sum(rng):
    x = make_logits(rng, (5, 4))
    t = make_int_labels(rng, (5, 4), -1)
    w = make_weight(rng, 4)
    loss_none, g_none = G.sparse_softmax_cross_entropy(x, t, weight=w, reduction="none")
    loss_sum, g_sum = G.sparse_softmax_cross_entropy(x, t, weight=w, reduction="sum")
    assert np.asarray(loss_none).shape == (5,)
    assert_close64(np.asarray(loss_none).sum(), np.asarray(loss_sum))
    assert_close64(g_none, np.asarray(g_sum))


def test_float32_gradients_stay_float32(rng):
    x = make_logits(rng, (6, 5)).astype(np.float32)
    t = make_int_labels(rng, (6, 5), -1)
    loss, g = G.sparse_softmax_cross_entropy(x, t)
    assert np.asarray(g).dtype == np.float32
    assert np.asarray(loss).dtype == np.float32
    np.testing.assert_allclose(
        np.asarray(g), ref.grad_sparse_softmax_cross_entropy(x, t), rtol=1e-5, atol=1e-7
    )
