"""The same call on NumPy, array-api-strict, PyTorch and JAX arrays: same numbers, same kind.

NumPy, array-api-strict and torch run in float64 and must agree to rounding; JAX runs in
float32 (its default, x64 left off) and is compared at float32 tolerance.  With torch,
autograd through the core must reproduce crossentropy.gradients.
"""

from __future__ import annotations

import array_api_strict as xps
import numpy as np
import pytest
import torch

import crossentropy as ce
import reference as ref
from conftest import assert_close64, to_numpy
from crossentropy import gradients as G

try:
    import jax
    import jax.numpy as jnp
except Exception:  # pragma: no cover - jax is a dev extra
    jax = None
    jnp = None

RNG = np.random.default_rng(7)
N, C = 5, 4
LOGITS = RNG.normal(size=(N, C)) * 2
SOFT = ref.softmax(RNG.normal(size=(N, C)))
INTS = np.array([0, 3, -100, 1, 2])
W = RNG.uniform(0.5, 2.0, size=C)
PROBS = RNG.uniform(0.05, 0.95, size=(N, C))
BIN = (RNG.random((N, C)) < 0.5).astype(np.float64)
K3 = RNG.normal(size=(2, C, 3))  # (N, C, d1), class axis 1
K3_INTS = np.array([[0, 1, 3], [2, -100, 1]])

# (name, positional args, keyword args); arrays are converted per backend.
LOSS_CASES = [
    ("softmax_cross_entropy", (LOGITS, SOFT), {}),
    ("softmax_cross_entropy", (LOGITS, SOFT), {"weight": W, "label_smoothing": 0.1}),
    ("softmax_cross_entropy", (K3, ref.softmax(K3, axis=1)), {"axis": 1}),
    ("sparse_softmax_cross_entropy", (LOGITS, INTS), {}),
    (
        "sparse_softmax_cross_entropy",
        (LOGITS, INTS),
        {"weight": W, "label_smoothing": 0.2, "z_loss": 1e-2, "softcap": 3.0},
    ),
    ("sparse_softmax_cross_entropy", (K3, K3_INTS), {"axis": 1, "weight": W}),
    ("sigmoid_cross_entropy", (LOGITS, BIN), {}),
    ("sigmoid_cross_entropy", (LOGITS, SOFT), {"pos_weight": W, "weight": W}),
    ("binary_cross_entropy", (PROBS, BIN), {}),
    ("binary_cross_entropy", (PROBS, SOFT), {"eps": 1e-3, "weight": W}),
    ("nll_loss", (ref.log_softmax(LOGITS), INTS), {"weight": W}),
    ("nll_loss", (ref.log_softmax(K3, axis=1), K3_INTS), {"axis": 1}),
    ("mse", (LOGITS, SOFT), {}),
    ("l1", (LOGITS, SOFT), {}),
    ("smooth_l1", (LOGITS, SOFT), {"beta": 0.5}),
    ("huber", (LOGITS, SOFT), {"delta": 0.7}),
]
CASE_IDS = [f"{i}-{c[0]}" for i, c in enumerate(LOSS_CASES)]

INFO_CASES = [
    ("information", (PROBS,), {"base": 2}),
    ("entropy", (SOFT,), {}),
    ("entropy", (ref.softmax(K3, axis=1),), {"axis": 1, "base": 10}),
    ("binary_entropy", (PROBS,), {"base": 2}),
    ("kl_divergence", (SOFT, ref.softmax(LOGITS)), {}),
    ("cross_entropy", (SOFT, ref.softmax(LOGITS)), {"base": 2}),
    ("logsumexp", (LOGITS,), {}),
    ("logsumexp", (K3,), {"axis": 1, "keepdims": True}),
    ("softmax", (LOGITS,), {}),
    ("log_softmax", (K3,), {"axis": 1}),
    ("sigmoid", (LOGITS,), {}),
    ("log_sigmoid", (LOGITS,), {}),
]
INFO_IDS = [f"{i}-{c[0]}" for i, c in enumerate(INFO_CASES)]


# ------------------------------------------------------------------ backend plumbing


class Backend:
    def __init__(self, name, to_float, to_int, is_native, rtol, atol):
        self.name = name
        self.to_float = to_float
        self.to_int = to_int
        self.is_native = is_native
        self.rtol = rtol
        self.atol = atol

    def convert(self, v):
        if isinstance(v, np.ndarray):
            return self.to_int(v) if v.dtype.kind in "iu" else self.to_float(v)
        return v


def _strict_native(out):
    return type(out).__module__.startswith("array_api_strict")


def _make_backends():
    backends = [
        Backend(
            "array_api_strict",
            lambda a: xps.asarray(a, dtype=xps.float64),
            lambda a: xps.asarray(a, dtype=xps.int64),
            _strict_native,
            1e-10,
            1e-12,
        ),
        Backend(
            "torch",
            lambda a: torch.as_tensor(np.array(a, dtype=np.float64)),
            lambda a: torch.as_tensor(np.array(a, dtype=np.int64)),
            lambda out: isinstance(out, torch.Tensor),
            1e-10,
            1e-12,
        ),
    ]
    if jax is not None:
        backends.append(
            Backend(
                "jax",
                lambda a: jnp.asarray(np.asarray(a, dtype=np.float32)),
                lambda a: jnp.asarray(np.asarray(a, dtype=np.int32)),
                lambda out: isinstance(out, jax.Array),
                # float32 inputs; the reference is float64 of the same (rounded) inputs
                2e-5,
                2e-6,
            )
        )
    return backends


BACKENDS = _make_backends()
BACKEND_IDS = [b.name for b in BACKENDS]
TORCH = BACKENDS[1]


def _numpy_native(out):
    return isinstance(out, (np.ndarray, np.generic))


def _expected_dtype_ok(backend, out):
    d = str(out.dtype)
    return d.endswith("float32") if backend.name == "jax" else d.endswith("float64")


def _run(backend, fn, args, kw):
    return fn(*[backend.convert(a) for a in args], **{k: backend.convert(v) for k, v in kw.items()})


# ------------------------------------------------------------------------- values


@pytest.mark.parametrize("backend", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize(("name", "args", "kw"), LOSS_CASES, ids=CASE_IDS)
def test_loss_same_numbers_and_type(backend, name, args, kw, reduction):
    kw = {**kw, "reduction": reduction}
    expected = getattr(ce, name)(*args, **kw)
    assert _numpy_native(expected)
    assert_close64(expected, ref.LOSSES[name](*args, **kw))
    out = _run(backend, getattr(ce, name), args, kw)
    assert backend.is_native(out), f"{backend.name}: got {type(out)}"
    assert _expected_dtype_ok(backend, out), out.dtype
    assert_close64(out, np.asarray(expected), rtol=backend.rtol, atol=backend.atol)


@pytest.mark.parametrize("backend", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize(("name", "args", "kw"), LOSS_CASES, ids=CASE_IDS)
def test_gradient_same_numbers_and_type(backend, name, args, kw):
    expected_loss, expected_grad = getattr(G, name)(*args, **kw)
    assert _numpy_native(expected_grad)
    loss, grad = _run(backend, getattr(G, name), args, kw)
    assert backend.is_native(loss) and backend.is_native(grad), backend.name
    assert _expected_dtype_ok(backend, grad), grad.dtype
    assert_close64(loss, np.asarray(expected_loss), rtol=backend.rtol, atol=backend.atol)
    assert_close64(grad, np.asarray(expected_grad), rtol=backend.rtol, atol=backend.atol)


@pytest.mark.parametrize("backend", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize(("name", "args", "kw"), INFO_CASES, ids=INFO_IDS)
def test_information_and_primitives_same_numbers_and_type(backend, name, args, kw):
    expected = getattr(ce, name)(*args, **kw)
    assert _numpy_native(expected)
    assert_close64(expected, getattr(ref, name)(*args, **kw))
    out = _run(backend, getattr(ce, name), args, kw)
    assert backend.is_native(out), f"{backend.name}: got {type(out)}"
    assert _expected_dtype_ok(backend, out), out.dtype
    assert_close64(out, np.asarray(expected), rtol=backend.rtol, atol=backend.atol)


# ----------------------------------------------------------------- torch autograd


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(("name", "args", "kw"), LOSS_CASES, ids=CASE_IDS)
def test_torch_autograd_through_core_matches_gradients(name, args, kw, reduction):
    kw = {**kw, "reduction": reduction}
    x = torch.as_tensor(np.array(args[0], dtype=np.float64)).requires_grad_(True)
    rest = [TORCH.convert(a) for a in args[1:]]
    tkw = {k: TORCH.convert(v) for k, v in kw.items()}
    out = getattr(ce, name)(x, *rest, **tkw)
    out.sum().backward()
    _, expected = getattr(G, name)(*args, **kw)
    assert x.grad is not None
    assert_close64(x.grad, np.asarray(expected))


def test_torch_autograd_zero_gradient_for_ignored_neg_inf_rows():
    x = torch.tensor([[0.0, 1.0, 2.0], [-np.inf, -np.inf, 0.0]], dtype=torch.float64)
    x.requires_grad_(True)
    loss = ce.sparse_softmax_cross_entropy(x, torch.tensor([2, -100]))
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(torch.isfinite(x.grad))
    assert torch.all(x.grad[1] == 0)
    _, g = G.sparse_softmax_cross_entropy(x.detach().numpy(), np.array([2, -100]))
    assert_close64(x.grad, np.asarray(g))


# ------------------------------------------------------------ default dtypes, lists


def test_integer_inputs_become_default_float():
    a = ce.mse(torch.tensor([1, 2]), torch.tensor([0, 0]))
    assert a.dtype == torch.get_default_dtype()
    assert float(a) == 2.5
    b = ce.mse(np.array([1, 2]), np.array([0, 0]))
    assert np.asarray(b).dtype == np.float64 and float(b) == 2.5
    c = ce.entropy(xps.asarray([1, 0]))
    assert _strict_native(c) and float(to_numpy(c)) == 0.0
    d = ce.sigmoid_cross_entropy(torch.tensor([0, 0]), torch.tensor([1, 0]), reduction="sum")
    assert d.dtype.is_floating_point
    np.testing.assert_allclose(float(d), 2 * np.log(2.0), rtol=1e-6)


def test_python_lists_and_scalars():
    out = ce.sparse_softmax_cross_entropy([[0.0, 0.0], [1.0, 1.0]], [0, 1])
    assert _numpy_native(out)
    np.testing.assert_allclose(float(out), np.log(2.0), rtol=1e-12)
    assert _numpy_native(ce.information(0.25, base=2))
    assert float(ce.information(0.25, base=2)) == 2.0
    out = ce.binary_cross_entropy((0.5, 0.5), (1.0, 0.0))
    np.testing.assert_allclose(float(out), np.log(2.0), rtol=1e-12)


def test_float32_torch_and_strict_stay_float32():
    x = LOGITS.astype(np.float32)
    out = ce.sparse_softmax_cross_entropy(torch.as_tensor(x), torch.as_tensor(INTS))
    assert out.dtype == torch.float32
    out = ce.sparse_softmax_cross_entropy(
        xps.asarray(x, dtype=xps.float32), xps.asarray(INTS, dtype=xps.int64)
    )
    assert out.dtype == xps.float32
    np.testing.assert_allclose(to_numpy(out), ref.sparse_softmax_cross_entropy(x, INTS), rtol=1e-5)


# ----------------------------------------------- edge cases on the other backends
# (name, args, kw): -inf logits with zero label mass, infinite sigmoid logits, all ignored,
# zero total weight, empty batch.  Each must give the NumPy answer with finite gradients.

EDGE_CASES = [
    (
        "softmax_cross_entropy",
        (
            np.array([[0.0, -np.inf, 1.0], [2.0, 0.5, -np.inf]]),
            np.array([[0.3, 0, 0.7], [0, 1.0, 0]]),
        ),
        {},
    ),
    (
        "sparse_softmax_cross_entropy",
        (np.array([[0.0, -np.inf, 1.0], [-np.inf, -np.inf, 0.0]]), np.array([2, -100])),
        {},
    ),
    (
        "sparse_softmax_cross_entropy",
        (np.array([[-np.inf, 1.0, 2.0], [0.5, 1.0, 3.0]]), np.array([0, 2])),
        {"weight": np.array([0.0, 1.0, 2.0])},
    ),
    (
        "sparse_softmax_cross_entropy",
        (np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 3.0]]), np.array([-100, -100])),
        {"label_smoothing": 0.1},
    ),
    (
        "sparse_softmax_cross_entropy",
        (np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 3.0]]), np.array([0, 0])),
        {"weight": np.array([0.0, 1.0, 2.0])},
    ),
    (
        "sparse_softmax_cross_entropy",
        (np.array([[0.0, -np.inf, 1.0], [2.0, 0.5, 0.0]]), np.array([0, 1])),
        {"label_smoothing": 0.1},
    ),
    ("sparse_softmax_cross_entropy", (np.zeros((0, 3)), np.zeros((0,), dtype=np.int64)), {}),
    ("nll_loss", (np.zeros((0, 3)), np.zeros((0,), dtype=np.int64)), {}),
    ("softmax_cross_entropy", (np.zeros((0, 3)), np.zeros((0, 3))), {}),
    (
        "sigmoid_cross_entropy",
        (np.array([np.inf, -np.inf, np.inf, -np.inf]), np.array([1.0, 0.0, 0.0, 1.0])),
        {},
    ),
    ("sigmoid_cross_entropy", (np.zeros((0, 3)), np.zeros((0, 3))), {}),
    ("mse", (np.zeros((0, 3)), np.zeros((0, 3))), {}),
]
EDGE_IDS = [f"{i}-{c[0]}" for i, c in enumerate(EDGE_CASES)]


def _same_with_infs(got, expected, rtol, atol):
    g = to_numpy(got).astype(np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert g.shape == e.shape
    np.testing.assert_array_equal(np.isposinf(g), np.isposinf(e))
    assert not np.any(np.isnan(g)), g
    fin = np.isfinite(e)
    np.testing.assert_allclose(g[fin], e[fin], rtol=rtol, atol=atol)


@pytest.mark.parametrize("backend", BACKENDS, ids=BACKEND_IDS)
@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize(("name", "args", "kw"), EDGE_CASES, ids=EDGE_IDS)
def test_edge_cases_same_on_every_backend(backend, name, args, kw, reduction):
    kw = {**kw, "reduction": reduction}
    expected_loss, expected_grad = getattr(G, name)(*args, **kw)
    assert np.all(np.isfinite(np.asarray(expected_grad)))
    loss, grad = _run(backend, getattr(G, name), args, kw)
    _same_with_infs(loss, expected_loss, backend.rtol, backend.atol)
    _same_with_infs(grad, expected_grad, backend.rtol, backend.atol)
    out = _run(backend, getattr(ce, name), args, kw)
    _same_with_infs(out, expected_loss, backend.rtol, backend.atol)


@pytest.mark.parametrize(("name", "args", "kw"), EDGE_CASES, ids=EDGE_IDS)
def test_torch_autograd_edge_cases_match_gradients(name, args, kw):
    x = torch.as_tensor(np.array(args[0], dtype=np.float64)).requires_grad_(True)
    rest = [TORCH.convert(a) for a in args[1:]]
    out = getattr(ce, name)(x, *rest, **{k: TORCH.convert(v) for k, v in kw.items()})
    out.sum().backward()
    _, expected = getattr(G, name)(*args, **kw)
    assert x.grad is not None
    assert not torch.isnan(x.grad).any(), x.grad
    assert_close64(x.grad, np.asarray(expected))
