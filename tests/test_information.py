"""Information-theory functions and stable primitives vs the float64 reference and SciPy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sps
import scipy.stats as sst

import crossentropy as ce
import reference as ref
from conftest import BASES, SHAPE_IDS, SHAPES, assert_close64, make_soft_labels


def _logb(base):
    return 1.0 if base is None else math.log(base)


# ------------------------------------------------------------------------- information


@pytest.mark.parametrize("base", BASES)
def test_information_vs_reference(rng, base):
    p = rng.random((4, 6))
    p[0, 0] = 1.0
    p[1, 2] = 0.0  # -log 0 = +inf
    got = ce.information(p, base=base)
    assert_close64(got, ref.information(p, base=base))
    assert np.isposinf(np.asarray(got)[1, 2])
    assert np.asarray(got)[0, 0] == 0.0


def test_information_known_values():
    assert_close64(ce.information(0.5, base=2), np.asarray(1.0))
    assert_close64(ce.information([0.1, 0.01], base=10), np.array([1.0, 2.0]))
    assert_close64(ce.information(np.exp(-3.0)), np.asarray(3.0))


# ----------------------------------------------------------------------------- entropy


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
def test_entropy_vs_reference_and_scipy(rng, shape, axis, base):
    p = make_soft_labels(rng, shape, axis)
    got = ce.entropy(p, axis=axis, base=base)
    assert_close64(got, ref.entropy(p, axis=axis, base=base))
    assert_close64(got, sst.entropy(p, axis=axis, base=base))
    assert_close64(got, sps.entr(p).sum(axis=axis) / _logb(base))


def test_entropy_not_normalised(rng):
    # The contract: no normalisation of p.
    p = rng.random(7) * 3.0
    assert_close64(ce.entropy(p), -(p * np.log(p)).sum())


def test_entropy_zero_log_zero():
    assert_close64(ce.entropy([0.5, 0.0, 0.5], base=2), np.asarray(1.0))
    assert_close64(ce.entropy([1.0, 0.0, 0.0]), np.asarray(0.0))
    assert_close64(ce.entropy(np.full(8, 1 / 8), base=2), np.asarray(3.0))


@pytest.mark.parametrize("base", BASES)
def test_binary_entropy_vs_reference_and_scipy(rng, base):
    p = rng.random((3, 5))
    p[0, :3] = [0.0, 1.0, 0.5]
    got = ce.binary_entropy(p, base=base)
    assert_close64(got, ref.binary_entropy(p, base=base))
    assert_close64(got, (sps.entr(p) + sps.entr(1 - p)) / _logb(base))
    g = np.asarray(got)
    assert g[0, 0] == 0.0 and g[0, 1] == 0.0


def test_binary_entropy_half_is_one_bit():
    assert_close64(ce.binary_entropy(0.5, base=2), np.asarray(1.0))


# -------------------------------------------------------------------------------- KL


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
def test_kl_divergence_vs_reference_and_scipy(rng, shape, axis, base):
    p = make_soft_labels(rng, shape, axis)
    q = make_soft_labels(rng, shape, axis)
    got = ce.kl_divergence(p, q, axis=axis, base=base)
    assert_close64(got, ref.kl_divergence(p, q, axis=axis, base=base))
    assert_close64(got, sps.rel_entr(p, q).sum(axis=axis) / _logb(base))
    assert_close64(got, sst.entropy(p, q, axis=axis, base=base))


def test_kl_divergence_zero_and_infinite_terms():
    # p = 0 terms contribute 0, even where q = 0
    assert_close64(ce.kl_divergence([0.5, 0.5, 0.0], [0.5, 0.5, 0.0]), np.asarray(0.0))
    assert_close64(
        ce.kl_divergence([0.0, 1.0], [0.5, 0.5], base=2),
        np.asarray(1.0),
    )
    # p > 0 with q = 0 -> +inf
    got = np.asarray(ce.kl_divergence([0.5, 0.5], [1.0, 0.0]))
    assert np.isposinf(got)


def test_kl_divergence_of_equal_is_zero(rng):
    p = make_soft_labels(rng, (6, 9), -1)
    assert_close64(ce.kl_divergence(p, p), np.zeros(6))


# ----------------------------------------------------------------------- cross entropy


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
def test_cross_entropy_vs_reference(rng, shape, axis, base):
    p = make_soft_labels(rng, shape, axis)
    q = make_soft_labels(rng, shape, axis)
    got = ce.cross_entropy(p, q, axis=axis, base=base)
    assert_close64(got, ref.cross_entropy(p, q, axis=axis, base=base))
    # scipy: H(p, q) = H(p) + KL(p || q)
    expected = sst.entropy(p, axis=axis, base=base) + sst.entropy(p, q, axis=axis, base=base)
    assert_close64(got, expected)
    # the library's own identity
    identity = np.asarray(ce.entropy(p, axis=axis, base=base)) + np.asarray(
        ce.kl_divergence(p, q, axis=axis, base=base)
    )
    assert_close64(got, identity)


def test_cross_entropy_zero_and_infinite_terms():
    assert_close64(ce.cross_entropy([1.0, 0.0], [1.0, 0.0]), np.asarray(0.0))
    assert_close64(ce.cross_entropy([0.0, 1.0], [0.5, 0.5], base=2), np.asarray(1.0))
    assert np.isposinf(np.asarray(ce.cross_entropy([0.5, 0.5], [1.0, 0.0])))


def test_cross_entropy_of_self_is_entropy(rng):
    p = make_soft_labels(rng, (5, 4), -1)
    assert_close64(ce.cross_entropy(p, p, base=2), ref.entropy(p, base=2))


def test_information_accepts_lists_and_int_arrays():
    assert_close64(ce.entropy([0.25, 0.25, 0.25, 0.25], base=2), np.asarray(2.0))
    out = ce.entropy(np.array([1, 0, 0]))  # integers -> default float
    assert np.asarray(out).dtype == np.float64
    assert float(np.asarray(out)) == 0.0


def test_information_float32_stays_float32(rng):
    p = make_soft_labels(rng, (3, 4), -1).astype(np.float32)
    out = np.asarray(ce.entropy(p))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref.entropy(p), rtol=1e-6)
    out = np.asarray(ce.kl_divergence(p, p[::-1]))
    assert out.dtype == np.float32


# ------------------------------------------------------------------------- primitives


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
def test_logsumexp_vs_scipy(rng, shape, axis, keepdims):
    x = rng.normal(size=shape) * 10
    got = ce.logsumexp(x, axis=axis, keepdims=keepdims)
    assert_close64(got, sps.logsumexp(x, axis=axis, keepdims=keepdims))
    assert_close64(got, ref.logsumexp(x, axis=axis, keepdims=keepdims))


def test_logsumexp_large_and_infinite():
    assert_close64(ce.logsumexp([1000.0, 1000.0]), np.asarray(1000.0 + math.log(2)))
    assert_close64(ce.logsumexp([-1000.0, -1000.0]), np.asarray(-1000.0 + math.log(2)))
    assert_close64(ce.logsumexp([0.0, -np.inf]), np.asarray(0.0))
    assert np.isneginf(np.asarray(ce.logsumexp([-np.inf, -np.inf])))


@pytest.mark.parametrize(("shape", "axis"), SHAPES, ids=SHAPE_IDS)
def test_softmax_and_log_softmax_vs_scipy(rng, shape, axis):
    x = rng.normal(size=shape) * 10
    assert_close64(ce.softmax(x, axis=axis), sps.softmax(x, axis=axis))
    assert_close64(ce.log_softmax(x, axis=axis), sps.log_softmax(x, axis=axis))
    assert_close64(ce.log_softmax(x, axis=axis), ref.log_softmax(x, axis=axis))
    assert_close64(ce.softmax(x, axis=axis), ref.softmax(x, axis=axis))


def test_softmax_extreme_logits():
    x = np.array([1e4, -1e4, 0.0, -np.inf])
    assert_close64(ce.softmax(x), np.array([1.0, 0.0, 0.0, 0.0]))
    assert_close64(ce.log_softmax(x), np.array([0.0, -2e4, -1e4, -np.inf]))


def test_sigmoid_and_log_sigmoid_vs_scipy(rng):
    x = np.concatenate([rng.normal(size=50) * 20, [-800.0, -50.0, 0.0, 50.0, 800.0]])
    assert_close64(ce.sigmoid(x), sps.expit(x))
    assert_close64(ce.log_sigmoid(x), sps.log_expit(x))
    assert_close64(ce.sigmoid(x), ref.sigmoid(x))
    assert_close64(ce.log_sigmoid(x), ref.log_sigmoid(x))


def test_sigmoid_at_infinity():
    x = np.array([-np.inf, np.inf])
    assert_close64(ce.sigmoid(x), np.array([0.0, 1.0]))
    got = np.asarray(ce.log_sigmoid(x))
    assert np.isneginf(got[0]) and got[1] == 0.0
