"""The public API attacked as a hostile user would: every argument given the wrong kind of
thing, values at the edges of their dtype, options at their limits. Each case ends with the
exact answer (checked against torch.nn.functional in float64 or the definition) or a
ValueError/TypeError that names the argument; never another exception or a silent number."""

from __future__ import annotations

import warnings

import array_api_strict as xps
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import crossentropy as ce
from crossentropy import gradients as G
from crossentropy.compat import tf

X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
P = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
T = np.array([0, 2])
V = np.array([0.3, 0.6])

# (function, arguments with the attacked one marked by None, name of each argument)
REQUIRED = [
    (ce.information, (P,), ("p",)),
    (ce.entropy, (P,), ("p",)),
    (ce.binary_entropy, (V,), ("p",)),
    (ce.kl_divergence, (P, P), ("p", "q")),
    (ce.cross_entropy, (P, P), ("p", "q")),
    (ce.logsumexp, (X,), ("x",)),
    (ce.softmax, (X,), ("x",)),
    (ce.log_softmax, (X,), ("x",)),
    (ce.sigmoid, (X,), ("x",)),
    (ce.log_sigmoid, (X,), ("x",)),
    (ce.softmax_cross_entropy, (X, P), ("logits", "labels")),
    (ce.sparse_softmax_cross_entropy, (X, T), ("logits", "labels")),
    (ce.sigmoid_cross_entropy, (V, V), ("logits", "labels")),
    (ce.binary_cross_entropy, (V, V), ("probs", "labels")),
    (ce.nll_loss, (X, T), ("log_probs", "labels")),
    (ce.mse, (V, V), ("input", "target")),
    (ce.l1, (V, V), ("input", "target")),
    (ce.smooth_l1, (V, V), ("input", "target")),
    (ce.huber, (V, V), ("input", "target")),
    (G.softmax_cross_entropy, (X, P), ("logits", "labels")),
    (G.sparse_softmax_cross_entropy, (X, T), ("logits", "labels")),
    (G.sigmoid_cross_entropy, (V, V), ("logits", "labels")),
    (G.binary_cross_entropy, (V, V), ("probs", "labels")),
    (G.nll_loss, (X, T), ("log_probs", "labels")),
    (G.mse, (V, V), ("input", "target")),
    (G.huber, (V, V), ("input", "target")),
]
CASES = [
    (f"{f.__module__.split('.')[-1]}.{f.__name__}-{names[i]}", f, args, i, names[i])
    for f, args, names in REQUIRED
    for i in range(len(args))
]
NOT_ARRAYS = {
    "None": None,
    "dict": {"a": 1.0},
    "str": "0.5",
    "set": {0.5},
    "strings": ["a", "b", "c"],
    "ragged": [[0.5], [0.25, 0.25]],
    "object-array": np.array([0.5, None, 0.5], dtype=object),
    "dates": np.array(["2024-01-01"], dtype="datetime64[D]"),
}


@pytest.mark.parametrize("kind", list(NOT_ARRAYS))
@pytest.mark.parametrize(("function", "args", "position", "name"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_not_an_array_of_numbers_is_a_type_error_naming_the_argument(
    function, args, position, name, kind
):
    # before: None gave AttributeError ('NoneType' object has no attribute 'dtype'), an
    # object array a silent NaN (or a number), a ragged list NumPy's own message
    args = list(args)
    args[position] = NOT_ARRAYS[kind]
    with pytest.raises(TypeError, match=rf"^{name}: expected an array"):
        function(*args)


@pytest.mark.parametrize("function", [ce.logsumexp, ce.softmax, ce.log_softmax, ce.sigmoid,
                                      ce.log_sigmoid])  # fmt: skip
def test_primitives_refuse_complex_input(function):
    # before: NumPy's ComplexWarning and the imaginary part silently dropped
    with pytest.raises(TypeError, match=r"^x: expected real numbers; got dtype complex"):
        function(np.array([1.0 + 1.0j, 2.0]))


@pytest.mark.parametrize("function", [ce.logsumexp, ce.softmax, ce.log_softmax])
def test_reductions_over_classes_check_their_axis(function):
    # before: IndexError for logsumexp(0.5) and axis=-3, NumPy's AxisError for axis=5,
    # and softmax(0.5) answered 1.0 over an axis that does not exist
    with pytest.raises(ValueError, match=r"^x: expected an array with a class axis"):
        function(0.5)
    for axis in (2, -3, 5):
        with pytest.raises(ValueError, match=rf"^axis: expected an axis of x .* got {axis}$"):
            function(X, axis=axis)
    for axis in (None, 1.0, True):
        with pytest.raises(TypeError, match=r"^axis: expected an integer"):
            function(X, axis=axis)


def test_logsumexp_keepdims_must_be_a_bool():
    with pytest.raises(TypeError, match=r"^keepdims: expected True or False; got 'yes'"):
        ce.logsumexp(X, keepdims="yes")


@pytest.mark.parametrize("module", ["numpy", "torch", "strict"])
def test_softmax_over_zero_classes_is_empty(module):
    # before: NumPy's "zero-size array to reduction operation maximum which has no identity"
    x = {"numpy": np.zeros((2, 0)), "torch": torch.zeros(2, 0, dtype=torch.float64),
         "strict": xps.zeros((2, 0))}[module]  # fmt: skip
    expected = torch.softmax(torch.zeros(2, 0, dtype=torch.float64), dim=-1)
    for function in (ce.softmax, ce.log_softmax):
        out = function(x)
        assert tuple(out.shape) == tuple(expected.shape) == (2, 0)


@pytest.mark.parametrize("module", [ce, G], ids=["losses", "gradients"])
def test_label_smoothing_with_zero_classes(module):
    # before: ZeroDivisionError (eps / C with C = 0). With no classes every label must be
    # ignored: the sum over no terms is 0, and so is the mean over nothing
    x = np.zeros((2, 0))
    sparse = module.sparse_softmax_cross_entropy(x, np.array([-100, -100]), label_smoothing=0.1)
    soft = module.softmax_cross_entropy(x, np.zeros((2, 0)), label_smoothing=0.1)
    for out in (sparse, soft):
        loss = out[0] if module is G else out
        assert float(loss) == 0.0
        if module is G:
            assert out[1].shape == (2, 0)


# ------------------------------------------------------------ integer labels of any dtype


def _torch_losses(x: np.ndarray, y: np.ndarray, **options) -> np.ndarray:
    return F.cross_entropy(
        torch.tensor(x), torch.tensor(y.astype(np.int64)), reduction="none", **options
    ).numpy()


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "uint16", "int32", "uint32"])
def test_narrow_labels_with_more_classes_than_their_dtype_holds(dtype):
    # before (int8/uint8, 300 classes): the one-hot was built with arange(300) in the
    # labels' dtype, which wraps, so label 5 also picked class 261: 6.7 off, silently
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 300))
    y = np.array([5, 100, 127, 0])
    expected = _torch_losses(x, y)
    got = ce.sparse_softmax_cross_entropy(x, y.astype(dtype), reduction="none")
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    loss, grad = G.nll_loss(x, y.astype(dtype), reduction="sum")
    np.testing.assert_allclose(loss, -x[np.arange(4), y].sum(), rtol=1e-12)
    assert np.count_nonzero(grad) == 4


@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.int16, torch.int32])
def test_torch_narrow_labels_are_compared_exactly(dtype):
    # before: torch compares in the labels' dtype, so ignore_index=300 matched int8 label
    # 44 (300 wraps to 44) and the row was silently skipped (loss 0); with 300 classes,
    # label 100 was "out of range" of a wrapped class count
    x = torch.tensor(np.random.default_rng(2).normal(size=(2, 300)))
    y = torch.tensor([44, 100]).to(dtype)
    expected = F.cross_entropy(x, y.long(), reduction="none")
    got = ce.sparse_softmax_cross_entropy(x, y, ignore_index=300, reduction="none")
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("module", ["numpy", "torch", "jax", "strict"])
def test_label_equal_to_a_wrapped_ignore_index_is_out_of_range(module):
    # uint8 255 is not ignore_index=-1 (before: torch and JAX wrapped -1 to 255 and skipped
    # the row, loss 0; array-api-strict raised OverflowError)
    x = np.array([[1.0, 2.0, 3.0]])
    y = np.array([255], dtype=np.uint8)
    if module == "torch":
        x, y = torch.tensor(x), torch.tensor(y)
    elif module == "jax":
        jnp = pytest.importorskip("jax.numpy")
        x, y = jnp.asarray(x), jnp.asarray(y)
    elif module == "strict":
        x, y = xps.asarray(x), xps.asarray(y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"^labels: expected class indices .* got 255"):
            ce.sparse_softmax_cross_entropy(x, y, ignore_index=-1)


def test_strict_narrow_labels_with_ignore_index_outside_their_dtype():
    # before: array-api-strict's OverflowError ("Python int scalars must be within the
    # bounds of the dtype"); an ignore_index that no int8 can equal skips nothing
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.5, 0.0]])
    y = np.array([2, 0], dtype=np.int8)
    got = ce.sparse_softmax_cross_entropy(
        xps.asarray(x), xps.asarray(y), ignore_index=300, reduction="none"
    )
    np.testing.assert_allclose(np.asarray(got), _torch_losses(x, y), rtol=1e-12)
    got = tf.sparse_softmax_cross_entropy_with_logits(xps.asarray(y), xps.asarray(x))
    np.testing.assert_allclose(np.asarray(got), _torch_losses(x, y), rtol=1e-12)


def test_tf_sparse_narrow_labels_with_many_classes():
    # before: array-api-strict OverflowError comparing uint8 labels with 300 classes
    x = np.random.default_rng(3).normal(size=(2, 300))
    y = np.array([5, 200], dtype=np.uint8)
    got = tf.sparse_softmax_cross_entropy_with_logits(xps.asarray(y), xps.asarray(x))
    np.testing.assert_allclose(np.asarray(got), _torch_losses(x, y), rtol=1e-12)


def test_torch_uint64_labels():
    # before: NotImplementedError "ge_cpu" not implemented for 'UInt64'
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.5, 0.0]], dtype=torch.float64)
    y = torch.tensor([2, 0], dtype=torch.uint64)
    got = ce.sparse_softmax_cross_entropy(x, y, reduction="none")
    torch.testing.assert_close(got, F.cross_entropy(x, y.long(), reduction="none"))


def test_uint64_label_beyond_int64_is_named():
    y = np.array([0, 2**64 - 100], dtype=np.uint64)  # would be -100 in int64
    with pytest.raises(
        ValueError, match=r"^labels: .* got 18446744073709551516 at position \(1,\)"
    ):
        ce.sparse_softmax_cross_entropy(X, y)


@pytest.mark.parametrize("module", ["numpy", "torch", "jax", "strict"])
@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**70])
def test_ignore_index_beyond_int64(module, value):
    # before: OverflowError from torch, JAX and array-api-strict ("int too big to convert")
    x, y = X, T
    if module == "torch":
        x, y = torch.tensor(x), torch.tensor(y)
    elif module == "jax":
        jnp = pytest.importorskip("jax.numpy")
        x, y = jnp.asarray(x), jnp.asarray(y)
    elif module == "strict":
        x, y = xps.asarray(x), xps.asarray(y)
    for function in (ce.sparse_softmax_cross_entropy, ce.nll_loss):
        with pytest.raises(ValueError, match=rf"^ignore_index: expected an integer .* {value}$"):
            function(x, y, ignore_index=value)


def test_ignored_row_is_not_read_even_when_its_label_is_a_class():
    # ignore_index=1 is also a class: the ignored row's entry at class 1 is NaN, and the
    # ignored row must add nothing (torch.nn.functional.nll_loss gives the same)
    x = np.array([[0.5, np.nan, 0.1], [-0.2, -1.5, -0.7]])
    y = np.array([1, 0])
    expected = F.nll_loss(torch.tensor(x), torch.tensor(y), ignore_index=1).item()
    loss, grad = G.nll_loss(x, y, ignore_index=1)
    assert float(loss) == expected == 0.2
    np.testing.assert_array_equal(grad, [[0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])


# ------------------------------------------------------------------------- NaN and infinities


@pytest.mark.parametrize(
    "options", [{"pos_weight": 0.0}, {"weight": np.zeros(1)}], ids=["pos_weight=0", "weight=0"]
)
def test_nan_logit_is_not_hidden_by_a_zero_coefficient(options):
    # before: a NaN logit with label 1 and pos_weight 0 (or weight 0) gave loss 0: the NaN
    # was multiplied by the zero coefficient and selected away like 0 * inf
    x, y = np.array([np.nan]), np.array([1.0])
    torch_options = {k: torch.tensor(np.atleast_1d(v)) for k, v in options.items()}
    expected = F.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(y), **torch_options)
    assert torch.isnan(expected)
    assert np.isnan(ce.sigmoid_cross_entropy(x, y, **options))
    assert np.isnan(G.sigmoid_cross_entropy(x, y, **options)[0])


def test_nan_log_probability_with_zero_class_weight_is_not_hidden():
    x = np.array([[np.nan, -1.0]])
    weight = torch.tensor([0.0, 1.0], dtype=torch.float64)
    expected = F.nll_loss(torch.tensor(x), torch.tensor([0]), weight=weight, reduction="sum")
    assert torch.isnan(expected)
    assert np.isnan(ce.nll_loss(x, np.array([0]), weight=np.array([0.0, 1.0]), reduction="sum"))


def test_information_refuses_probabilities_above_one():
    # before: information(2.0) = -0.69 and information(inf) = -inf, silently
    for p in (2.0, np.inf, 1.0 + 1e-15):
        with pytest.raises(ValueError, match=r"^p: expected probabilities in \[0, 1\]"):
            ce.information(np.array([0.5, p]))


@pytest.mark.parametrize("name", ["p", "q"])
@pytest.mark.parametrize("function", [ce.kl_divergence, ce.cross_entropy, ce.entropy])
def test_infinite_probability_mass_is_refused(function, name):
    # before: kl_divergence([inf, .5], [inf, .5]) = nan and cross_entropy(.., [inf, .5]) = -inf
    if function is ce.entropy and name == "q":
        pytest.skip("entropy has no q")
    bad = np.array([np.inf, 0.5])
    args = (bad,) if function is ce.entropy else ((bad, V) if name == "p" else (V, bad))
    with pytest.raises(ValueError, match=rf"^{name}: expected finite non-negative .* got inf"):
        function(*args)


def test_infinite_soft_label_is_refused():
    with pytest.raises(ValueError, match=r"^labels: expected finite non-negative .* got inf"):
        ce.softmax_cross_entropy(X, np.array([[np.inf, 0.0, 0.0], [0.0, 1.0, 0.0]]))


@pytest.mark.parametrize("array", [np.asarray, torch.as_tensor], ids=["numpy", "torch"])
@pytest.mark.parametrize("bad", [np.nan, -1e-300, -np.inf, np.inf])
def test_soft_labels_out_of_range_are_refused_and_negative_zero_is_not(array, bad):
    """Every value outside [0, inf) is named (a NaN too, which no comparison catches);
    -0.0 is a probability of 0."""
    labels = array(np.array([[0.2, 0.8, 0.0], [0.0, bad, 1.0]]))
    with pytest.raises(ValueError, match=r"^labels: expected finite non-negative .* \(1, 1\)"):
        ce.softmax_cross_entropy(array(X), labels)
    zero = array(np.array([[-0.0, 1.0, 0.0], [0.0, 0.5, 0.5]]))
    assert np.isfinite(float(ce.softmax_cross_entropy(array(X), zero)))


# ------------------------------------------------------------------ options at their limits


@pytest.mark.parametrize("option", ["softcap", "z_loss"])
@pytest.mark.parametrize(
    "function",
    [ce.sparse_softmax_cross_entropy, G.sparse_softmax_cross_entropy],
    ids=["losses", "gradients"],
)
def test_infinite_softcap_and_z_loss_are_refused(function, option):
    # before: softcap=inf gave NaN (inf * tanh(x / inf) = inf * 0) and z_loss=inf an
    # infinite loss (NaN where logsumexp is 0)
    with pytest.raises(ValueError, match=rf"^{option}: expected a number finite and"):
        function(X, T, **{option: float("inf")})


def test_torch_cross_entropy_refuses_infinite_softcap():
    from crossentropy.torch import cross_entropy

    with pytest.raises(ValueError, match=r"^softcap: expected a number finite and > 0"):
        cross_entropy(torch.tensor(X), torch.tensor(T), softcap=float("inf"))
