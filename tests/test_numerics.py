"""The contract's "Numerical behaviour" list, one test (or a small family) per item."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import crossentropy as ce
import reference as ref
from conftest import REDUCTIONS, assert_close64, make_logits, to_numpy
from crossentropy import gradients as G

INF = np.inf


def _finfo_eps(dtype) -> float:
    if isinstance(dtype, torch.dtype):
        return float(torch.finfo(dtype).eps)
    return float(np.finfo(dtype).eps)


# ------------------------------------------------------------------- shift invariance
# "logits offset by 1e6 (f32), 4096 (f16), 256 (bf16), all equal -> log C within 2 eps".
# Reading: the answer is log C, a number of order 1, so "eps" is the dtype's unit roundoff
# scaled to that value, eps = finfo(dtype).eps * log C, and we require
#     |loss - log C| <= 2 * finfo(dtype).eps * log C,
# i.e. a relative error of at most 2 machine epsilons (a correct implementation subtracts
# the max first, gets exact zeros, and only rounds log C itself: <= 0.5 eps + the final
# cast).  An implementation that forms logsumexp(x) - x_y at magnitude 1e6 in float32
# loses everything (ulp(1e6) = 0.0625 in float32) and fails this by orders of magnitude.

SHIFT_CASES = [
    ("numpy", np.float32, 1e6),
    ("numpy", np.float16, 4096.0),
    ("torch", torch.float32, 1e6),
    ("torch", torch.float16, 4096.0),
    ("torch", torch.bfloat16, 256.0),
]


def _make(backend, values, dtype):
    if backend == "numpy":
        return np.asarray(values).astype(dtype)
    return torch.as_tensor(np.asarray(values, dtype=np.float64)).to(dtype)


def _labels(backend, values):
    if backend == "numpy":
        return np.asarray(values, dtype=np.int64)
    return torch.as_tensor(np.asarray(values, dtype=np.int64))


def _dtype_of(x):
    return x.dtype


@pytest.mark.parametrize("c", [10, 1000])
@pytest.mark.parametrize(("backend", "dtype", "offset"), SHIFT_CASES, ids=lambda v: str(v))
def test_shift_invariance_gives_log_c(backend, dtype, offset, c):
    n = 4
    x = _make(backend, np.full((n, c), offset), dtype)
    assert float(to_numpy(x).astype(np.float64)[0, 0]) == offset  # offset is exact in dtype
    labels = [0, 1, c - 1, c // 2]
    tol = 2 * _finfo_eps(dtype) * math.log(c)
    onehot = _make(backend, np.eye(c)[labels], dtype)
    for out in (
        ce.sparse_softmax_cross_entropy(x, _labels(backend, labels), reduction="none"),
        ce.softmax_cross_entropy(x, onehot, reduction="none"),
        ce.sparse_softmax_cross_entropy(x, _labels(backend, labels)),
    ):
        assert _dtype_of(out) == dtype
        got = to_numpy(out).astype(np.float64)
        err = np.max(np.abs(got - math.log(c)))
        assert err <= tol, f"|loss - log C| = {err:.3g} > 2 eps log C = {tol:.3g}; got {got}"


# ------------------------------------------------------------------- +-1e4 logits


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_of_1e4_are_exact_and_finite(dtype):
    x = np.array([[1e4, -1e4], [-1e4, 1e4]], dtype=dtype)
    t = np.array([0, 0])
    out = np.asarray(ce.sparse_softmax_cross_entropy(x, t, reduction="none"))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, np.array([0.0, 2e4], dtype=dtype))
    out = np.asarray(ce.softmax_cross_entropy(x, np.eye(2, dtype=dtype)[t], reduction="none"))
    np.testing.assert_array_equal(out, np.array([0.0, 2e4], dtype=dtype))
    np.testing.assert_array_equal(np.asarray(ce.logsumexp(x)), np.array([1e4, 1e4], dtype=dtype))
    np.testing.assert_array_equal(
        np.asarray(ce.log_softmax(x)), np.array([[0.0, -2e4], [-2e4, 0.0]], dtype=dtype)
    )

    _, g = G.sparse_softmax_cross_entropy(x, t, reduction="sum")
    np.testing.assert_array_equal(np.asarray(g), np.array([[0.0, 0.0], [-1.0, 1.0]]))

    xs = np.array([1e4, -1e4, 1e4, -1e4], dtype=dtype)
    ys = np.array([1.0, 0.0, 0.0, 1.0], dtype=dtype)
    out = np.asarray(ce.sigmoid_cross_entropy(xs, ys, reduction="none"))
    np.testing.assert_array_equal(out, np.array([0.0, 0.0, 1e4, 1e4], dtype=dtype))
    np.testing.assert_array_equal(
        np.asarray(ce.log_sigmoid(xs)), np.array([0.0, -1e4, 0.0, -1e4], dtype=dtype)
    )
    _, g = G.sigmoid_cross_entropy(xs, ys, reduction="sum")
    np.testing.assert_array_equal(np.asarray(g), np.array([0.0, 0.0, 1.0, -1.0]))


# --------------------------------------------------------------------- -inf logits


def test_neg_inf_logit_with_zero_label_mass_contributes_zero():
    x = np.array([[0.0, -INF, 1.0], [2.0, 0.5, -INF]])
    y = np.array([[0.3, 0.0, 0.7], [0.0, 1.0, 0.0]])
    t = np.array([2, 1])
    expected = ref.softmax_cross_entropy(x, y, reduction="none")
    assert np.all(np.isfinite(expected))
    assert_close64(ce.softmax_cross_entropy(x, y, reduction="none"), expected)
    assert_close64(
        ce.sparse_softmax_cross_entropy(x, t, reduction="none"),
        ref.sparse_softmax_cross_entropy(x, t, reduction="none"),
    )
    assert_close64(ce.nll_loss(ref.log_softmax(x), t), ref.nll_loss(ref.log_softmax(x), t))
    for fn, lab in ((G.softmax_cross_entropy, y), (G.sparse_softmax_cross_entropy, t)):
        loss, g = fn(x, lab)
        g = np.asarray(g)
        assert np.isfinite(np.asarray(loss))
        assert np.all(np.isfinite(g))
        assert g[0, 1] == 0.0 and g[1, 2] == 0.0  # softmax = 0 and label = 0 there


def test_neg_inf_logit_with_label_mass_is_pos_inf():
    x = np.array([[0.0, -INF, 1.0], [2.0, 0.5, 0.0]])
    # label on the -inf class
    assert np.isposinf(np.asarray(ce.sparse_softmax_cross_entropy(x, np.array([1, 0]))))
    assert np.isposinf(
        np.asarray(ce.softmax_cross_entropy(x, np.array([[0.5, 0.5, 0.0], [1.0, 0, 0]])))
    )
    # label smoothing spreads mass eps/C > 0 onto the -inf class
    out = np.asarray(
        ce.sparse_softmax_cross_entropy(x, np.array([0, 0]), label_smoothing=0.1, reduction="none")
    )
    assert np.isposinf(out[0]) and np.isfinite(out[1])
    y = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    out = np.asarray(ce.softmax_cross_entropy(x, y, label_smoothing=0.1, reduction="none"))
    assert np.isposinf(out[0]) and np.isfinite(out[1])


# ------------------------------------------------------------------ sigmoid at +-inf


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sigmoid_cross_entropy_at_infinite_logits(reduction):
    x = np.array([INF, -INF, INF, -INF])
    y = np.array([1.0, 0.0, 0.0, 1.0])
    loss, g = G.sigmoid_cross_entropy(x, y, reduction=reduction)
    out = np.asarray(ce.sigmoid_cross_entropy(x, y, reduction="none"))
    np.testing.assert_array_equal(out, np.array([0.0, 0.0, INF, INF]))
    if reduction == "none":
        np.testing.assert_array_equal(np.asarray(loss), out)
    else:
        assert np.isposinf(np.asarray(loss))
    g = np.asarray(g)
    scale = 0.25 if reduction == "mean" else 1.0
    np.testing.assert_array_equal(g, scale * np.array([0.0, 0.0, 1.0, -1.0]))
    # the finite pair alone is 0
    assert float(np.asarray(ce.sigmoid_cross_entropy(x[:2], y[:2], reduction=reduction)).sum()) == 0


# ----------------------------------------------------------------- mean over nothing


def _assert_zero_loss_and_grad(loss, grad, shape):
    loss = np.asarray(loss)
    grad = np.asarray(grad)
    assert loss.shape == () and loss == 0.0, f"loss {loss}"
    assert grad.shape == tuple(shape)
    assert np.all(grad == 0.0), f"grad {grad}"


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_ignored_is_zero_with_zero_gradient(reduction):
    x = np.array([[0.0, 1.0, -INF], [-INF, 3.0, 2.0], [1.0, 2.0, 3.0]])
    t = np.array([-100, -100, -100])
    for kw in ({}, {"label_smoothing": 0.2}, {"z_loss": 0.1}, {"weight": np.array([1, 2, 3.0])}):
        loss, g = G.sparse_softmax_cross_entropy(x, t, reduction=reduction, **kw)
        _assert_zero_loss_and_grad(loss, g, x.shape)
        assert np.asarray(ce.sparse_softmax_cross_entropy(x, t, reduction=reduction, **kw)) == 0
    loss, g = G.nll_loss(x, t, reduction=reduction)
    _assert_zero_loss_and_grad(loss, g, x.shape)
    none = np.asarray(ce.sparse_softmax_cross_entropy(x, t, reduction="none"))
    np.testing.assert_array_equal(none, np.zeros(3))


EMPTY_CASES = [
    ("softmax_cross_entropy", lambda: (np.zeros((0, 4)), np.zeros((0, 4)))),
    ("sparse_softmax_cross_entropy", lambda: (np.zeros((0, 4)), np.zeros((0,), dtype=np.int64))),
    ("nll_loss", lambda: (np.zeros((0, 4)), np.zeros((0,), dtype=np.int64))),
    ("sigmoid_cross_entropy", lambda: (np.zeros((0, 4)), np.zeros((0, 4)))),
    ("binary_cross_entropy", lambda: (np.zeros((0, 4)), np.zeros((0, 4)))),
    ("mse", lambda: (np.zeros((0, 4)), np.zeros((0, 4)))),
    ("l1", lambda: (np.zeros((0, 4)), np.zeros((0, 4)))),
    ("smooth_l1", lambda: (np.zeros((0, 4)), np.zeros((0, 4)))),
    ("huber", lambda: (np.zeros((0, 4)), np.zeros((0, 4)))),
]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(("name", "make"), EMPTY_CASES, ids=[c[0] for c in EMPTY_CASES])
def test_empty_batch_is_zero_with_zero_gradient(name, make, reduction):
    a, b = make()
    loss, g = getattr(G, name)(a, b, reduction=reduction)
    _assert_zero_loss_and_grad(loss, g, a.shape)
    assert np.asarray(getattr(ce, name)(a, b, reduction=reduction)) == 0.0
    none = np.asarray(getattr(ce, name)(a, b, reduction="none"))
    assert none.size == 0


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_zero_total_weight_is_zero_with_zero_gradient(smoothing):
    x = np.array([[0.0, 1.0, 2.0], [-INF, 1.0, 0.5]])
    t = np.array([0, 0])
    w = np.array([0.0, 1.0, 2.0])
    loss, g = G.sparse_softmax_cross_entropy(x, t, weight=w, label_smoothing=smoothing)
    _assert_zero_loss_and_grad(loss, g, x.shape)
    loss, g = G.nll_loss(x, t, weight=w)
    _assert_zero_loss_and_grad(loss, g, x.shape)


def test_ignored_and_zero_weight_entries_get_exact_zero_gradient():
    x = np.array([[-INF, 1.0, 2.0], [0.5, -INF, 1.0], [0.1, 0.2, 0.3], [-INF, -INF, 0.0]])
    w = np.array([0.0, 1.0, 2.0])
    # row 0: zero-weight class with a -inf logit; row 3: ignored with -inf logits
    t = np.array([0, 2, 1, -100])
    for reduction in REDUCTIONS:
        loss, g = G.sparse_softmax_cross_entropy(x, t, weight=w, reduction=reduction)
        g = np.asarray(g)
        assert np.all(np.isfinite(np.asarray(loss)))
        assert np.all(g[0] == 0.0) and np.all(g[3] == 0.0), g
        assert np.all(np.isfinite(g))
        assert_close64(
            g, ref.grad_sparse_softmax_cross_entropy(x, t, weight=w, reduction=reduction)
        )
        assert_close64(loss, ref.sparse_softmax_cross_entropy(x, t, weight=w, reduction=reduction))
        loss, g = G.nll_loss(x, t, weight=w, reduction=reduction)
        g = np.asarray(g)
        assert np.all(g[0] == 0.0) and np.all(g[3] == 0.0)
        assert np.all(np.isfinite(np.asarray(loss)))
    # dense labels: class 0 has weight 0 and label mass there, logit -inf
    y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    loss, g = G.softmax_cross_entropy(x[:3], y[:3], weight=w, reduction="sum")
    g = np.asarray(g)
    assert np.isfinite(np.asarray(loss)) and np.all(np.isfinite(g))
    assert np.all(g[0] == 0.0)
    # sigmoid: a zero-weight element with a -inf logit and label 1
    xs = np.array([-INF, 0.3])
    ys = np.array([1.0, 1.0])
    loss, g = G.sigmoid_cross_entropy(xs, ys, weight=np.array([0.0, 1.0]), reduction="sum")
    assert np.isfinite(np.asarray(loss))
    assert np.asarray(g)[0] == 0.0


# -------------------------------------------------------------- unnormalised labels


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_soft_labels_not_summing_to_one_get_true_derivative(rng, reduction):
    x = make_logits(rng, (5, 6))
    y = rng.random((5, 6)) * 2.0
    y[0] = 0.0  # sums to 0: zero loss, zero gradient
    loss, g = G.softmax_cross_entropy(x, y, reduction=reduction)
    sm = ref.softmax(x)
    expected = y.sum(axis=-1, keepdims=True) * sm - y
    if reduction == "mean":
        expected = expected / 5
    assert_close64(g, expected)
    assert np.all(np.asarray(g)[0] == 0.0)
    assert_close64(loss, ref.softmax_cross_entropy(x, y, reduction=reduction))


# ---------------------------------------------------------------- half precisions

HALF_CASES = [
    ("numpy", np.float16),
    ("torch", torch.float16),
    ("torch", torch.bfloat16),
]


def _to(backend, a, dtype):
    if backend == "numpy":
        return np.asarray(a).astype(dtype)
    return torch.as_tensor(np.asarray(a)).to(dtype)


def _f32(backend, a):
    if backend == "numpy":
        return a.astype(np.float32)
    return a.to(torch.float32)


@pytest.mark.parametrize(("backend", "dtype"), HALF_CASES, ids=lambda v: str(v))
def test_half_precision_in_same_dtype_out(rng, backend, dtype):
    eps = _finfo_eps(dtype)
    x = _to(backend, make_logits(rng, (6, 8)), dtype)
    y = _to(backend, ref.softmax(make_logits(rng, (6, 8))), dtype)
    t = np.array([0, 3, 7, 1, 2, 5])
    t = t if backend == "numpy" else torch.as_tensor(t)
    calls = [
        lambda a: ce.sparse_softmax_cross_entropy(a, t, reduction="none"),
        lambda a: ce.sparse_softmax_cross_entropy(a, t, label_smoothing=0.1, z_loss=1e-3),
        lambda a: ce.softmax_cross_entropy(a, _f32(backend, y) if a.dtype != dtype else y),
        lambda a: ce.sigmoid_cross_entropy(a, _f32(backend, y) if a.dtype != dtype else y),
        lambda a: ce.log_softmax(a),
        lambda a: ce.logsumexp(a),
        lambda a: ce.mse(a, _f32(backend, y) if a.dtype != dtype else y, reduction="none"),
        lambda a: G.sparse_softmax_cross_entropy(a, t)[1],
        lambda a: G.sparse_softmax_cross_entropy(a, t)[0],
    ]
    for k, call in enumerate(calls):
        out = call(x)
        assert out.dtype == dtype, f"call {k}: {out.dtype}"
        got = to_numpy(out).astype(np.float64)
        want = to_numpy(call(_f32(backend, x))).astype(np.float64)
        # computed in float32 then rounded once to the half type: <= 0.5 ulp, allow 1 eps
        np.testing.assert_allclose(got, want, rtol=eps, atol=eps * 1e-3, err_msg=f"call {k}")


def test_autograd_through_bce_is_finite_at_zero_and_one():
    """The clamped logs are never differentiated at their poles: autograd through the core
    equals the analytic gradient, finite at p = 0 and p = 1."""
    p = torch.tensor([0.0, 1.0, 0.3, 1e-50, 0.9], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    ce.binary_cross_entropy(p, y, reduction="sum").backward()
    _, expected = G.binary_cross_entropy(p.detach().numpy(), y.numpy(), reduction="sum")
    assert torch.all(torch.isfinite(p.grad))
    np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-12)
