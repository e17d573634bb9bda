"""Bad input raises ValueError/TypeError naming the argument and what was given."""

from __future__ import annotations

import re

import numpy as np
import pytest

import crossentropy as ce
from crossentropy import gradients as G

X = np.zeros((4, 3))
Y = np.full((4, 3), 1 / 3)
T = np.array([0, 1, 2, 0])
BAD = (ValueError, TypeError)


def _message(excinfo) -> str:
    return str(excinfo.value)


def _has_number(msg: str, number: int) -> bool:
    return re.search(rf"(?<![\d.]){re.escape(str(number))}(?![\d.])", msg) is not None


# ------------------------------------------------------------------ labels out of range


@pytest.mark.parametrize("module", [ce, G], ids=["losses", "gradients"])
@pytest.mark.parametrize("name", ["sparse_softmax_cross_entropy", "nll_loss"])
def test_label_out_of_range_names_first_bad_value_and_position(module, name):
    x = np.zeros((10, 4))
    # first bad label: 9 at position 6 (later ones, -5 and 17, are bad too)
    labels = np.array([0, 1, 2, 3, 0, -100, 9, 2, -5, 17])
    with pytest.raises(ValueError, match="labels") as excinfo:
        getattr(module, name)(x, labels)
    msg = _message(excinfo)
    assert _has_number(msg, 9), msg
    assert _has_number(msg, 6), msg


@pytest.mark.parametrize("name", ["sparse_softmax_cross_entropy", "nll_loss"])
def test_negative_label_other_than_ignore_index(name):
    labels = np.array([0, 2, -1, 1])
    with pytest.raises(ValueError, match="labels") as excinfo:
        getattr(ce, name)(X, labels)
    msg = _message(excinfo)
    assert "-1" in msg and _has_number(msg, 2), msg
    # -100 is the default ignore_index, but not when another ignore_index is chosen
    with pytest.raises(ValueError, match="labels") as excinfo:
        getattr(ce, name)(X, np.array([0, -100, 1, 1]), ignore_index=1)
    assert "-100" in _message(excinfo)


def test_label_equal_to_num_classes_is_out_of_range():
    with pytest.raises(ValueError, match="labels") as excinfo:
        ce.sparse_softmax_cross_entropy(X, np.array([0, 1, 3, 0]))
    msg = _message(excinfo)
    assert _has_number(msg, 3) and _has_number(msg, 2), msg


# ---------------------------------------------------------------------- shapes


def test_dense_label_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(4, 5\)") as excinfo:
        ce.softmax_cross_entropy(X, np.full((4, 5), 0.2))
    assert re.search("labels|logits", _message(excinfo))


def test_sparse_label_shape_mismatch():
    with pytest.raises(ValueError, match=r"\(5,\)") as excinfo:
        ce.sparse_softmax_cross_entropy(X, np.array([0, 1, 2, 0, 1]))
    assert re.search("labels", _message(excinfo))
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        ce.sparse_softmax_cross_entropy(X, np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="labels"):
        ce.nll_loss(X, np.array([0, 1]))


@pytest.mark.parametrize(
    "call",
    [
        lambda: ce.sigmoid_cross_entropy(X, np.zeros((4, 2))),
        lambda: ce.binary_cross_entropy(np.full((4, 3), 0.5), np.zeros((3, 4))),
        lambda: ce.mse(X, np.zeros((3, 4))),
        lambda: ce.huber(X, np.zeros((4, 2))),
        lambda: ce.kl_divergence(np.full(3, 1 / 3), np.full(4, 1 / 4)),
        lambda: ce.cross_entropy(np.full(3, 1 / 3), np.full(4, 1 / 4)),
    ],
    ids=["sigmoid", "bce", "mse", "huber", "kl", "cross_entropy"],
)
def test_other_shape_mismatches(call):
    with pytest.raises(ValueError) as excinfo:
        call()
    msg = _message(excinfo)
    assert re.search(r"\(\d+(, \d+)*,?\)", msg), f"no shape in message: {msg}"


def test_weight_shape_mismatch():
    with pytest.raises(ValueError, match="weight") as excinfo:
        ce.sparse_softmax_cross_entropy(X, T, weight=np.ones(5))
    assert re.search(r"\(5,\)", _message(excinfo))
    with pytest.raises(ValueError, match="weight"):
        ce.softmax_cross_entropy(X, Y, weight=np.ones(2))
    with pytest.raises(ValueError, match="weight"):
        ce.nll_loss(X, T, weight=np.ones((3, 3)))


# ----------------------------------------------------------- scalar hyper-parameters


@pytest.mark.parametrize("value", [-0.1, 1.5])
@pytest.mark.parametrize("module", [ce, G], ids=["losses", "gradients"])
def test_label_smoothing_outside_unit_interval(module, value):
    with pytest.raises(ValueError, match="label_smoothing") as excinfo:
        module.sparse_softmax_cross_entropy(X, T, label_smoothing=value)
    assert str(value) in _message(excinfo)
    with pytest.raises(ValueError, match="label_smoothing") as excinfo:
        module.softmax_cross_entropy(X, Y, label_smoothing=value)
    assert str(value) in _message(excinfo)


def test_label_smoothing_endpoints_are_accepted():
    ce.sparse_softmax_cross_entropy(X, T, label_smoothing=0.0)
    out = np.asarray(ce.sparse_softmax_cross_entropy(X, T, label_smoothing=1.0))
    np.testing.assert_allclose(out, np.log(3.0), rtol=1e-12)


@pytest.mark.parametrize("base", [0, -2.0])
@pytest.mark.parametrize(
    "fn",
    [
        lambda b: ce.information(0.5, base=b),
        lambda b: ce.entropy([0.5, 0.5], base=b),
        lambda b: ce.binary_entropy(0.3, base=b),
        lambda b: ce.kl_divergence([0.5, 0.5], [0.2, 0.8], base=b),
        lambda b: ce.cross_entropy([0.5, 0.5], [0.2, 0.8], base=b),
    ],
    ids=["information", "entropy", "binary_entropy", "kl", "cross_entropy"],
)
def test_non_positive_base(fn, base):
    with pytest.raises(ValueError, match="base") as excinfo:
        fn(base)
    assert str(base) in _message(excinfo)


def test_base_one_is_rejected():
    # the contract: "any positive base != 1"; log(1) = 0 would divide by zero
    with pytest.raises(ValueError, match="base"):
        ce.entropy([0.5, 0.5], base=1)


@pytest.mark.parametrize(
    ("call", "argname"),
    [
        (lambda: ce.entropy(np.array([-0.1, 1.1])), "p"),
        (lambda: ce.information(np.array([0.5, -0.25])), "p"),
        (lambda: ce.binary_entropy(np.array([0.5, -0.25])), "p"),
        (lambda: ce.kl_divergence(np.array([-0.1, 1.1]), np.array([0.5, 0.5])), "p"),
        (lambda: ce.kl_divergence(np.array([0.5, 0.5]), np.array([-0.25, 1.25])), "q"),
        (lambda: ce.cross_entropy(np.array([0.5, 0.5]), np.array([-0.25, 1.25])), "q"),
        (lambda: ce.binary_cross_entropy(np.array([0.5, -0.25]), np.array([1.0, 0.0])), "probs"),
    ],
    ids=["entropy", "information", "binary_entropy", "kl-p", "kl-q", "ce-q", "bce"],
)
def test_negative_probabilities(call, argname):
    with pytest.raises(ValueError) as excinfo:
        call()
    msg = _message(excinfo)
    assert re.search(rf"\b{argname}\b", msg), msg
    assert re.search(r"-0\.1|-0\.25", msg), msg


@pytest.mark.parametrize("module", [ce, G], ids=["losses", "gradients"])
@pytest.mark.parametrize("name", ["sparse_softmax_cross_entropy", "nll_loss"])
def test_float_labels_where_integers_are_required(module, name):
    with pytest.raises(BAD, match="labels") as excinfo:
        getattr(module, name)(X, np.array([0.0, 1.0, 2.0, 0.0]))
    assert re.search("float|int", _message(excinfo)), _message(excinfo)


LOSS_CALLS = {
    "softmax_cross_entropy": (X, Y),
    "sparse_softmax_cross_entropy": (X, T),
    "sigmoid_cross_entropy": (X, np.zeros((4, 3))),
    "binary_cross_entropy": (np.full((4, 3), 0.5), np.zeros((4, 3))),
    "nll_loss": (X, T),
    "mse": (X, Y),
    "l1": (X, Y),
    "smooth_l1": (X, Y),
    "huber": (X, Y),
}


@pytest.mark.parametrize("module", [ce, G], ids=["losses", "gradients"])
@pytest.mark.parametrize("name", list(LOSS_CALLS))
def test_unknown_reduction(module, name):
    with pytest.raises(ValueError, match="reduction") as excinfo:
        getattr(module, name)(*LOSS_CALLS[name], reduction="avg")
    msg = _message(excinfo)
    assert "avg" in msg
    assert "mean" in msg  # says what is accepted


@pytest.mark.parametrize("softcap", [0.0, -1.0])
@pytest.mark.parametrize("module", [ce, G], ids=["losses", "gradients"])
def test_non_positive_softcap(module, softcap):
    with pytest.raises(ValueError, match="softcap") as excinfo:
        module.sparse_softmax_cross_entropy(X, T, softcap=softcap)
    assert str(softcap) in _message(excinfo)


def test_keyword_only_arguments():
    with pytest.raises(TypeError):
        ce.sparse_softmax_cross_entropy(X, T, -1)  # axis is keyword-only
    with pytest.raises(TypeError):
        ce.entropy([0.5, 0.5], -1)
    with pytest.raises(TypeError):
        ce.mse(X, Y, "sum")


# ------------------------------------------------- the same checks on other backends


def _backend_arrays(kind):
    if kind == "torch":
        import torch

        return (
            lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64)),
            lambda a: torch.as_tensor(np.asarray(a, dtype=np.int64)),
        )
    import array_api_strict as xps

    return (
        lambda a: xps.asarray(np.asarray(a, dtype=np.float64)),
        lambda a: xps.asarray(np.asarray(a, dtype=np.int64)),
    )


@pytest.mark.parametrize("kind", ["torch", "array_api_strict"])
def test_label_range_is_checked_on_other_backends(kind):
    fl, it = _backend_arrays(kind)
    with pytest.raises(ValueError, match="labels") as excinfo:
        ce.sparse_softmax_cross_entropy(
            fl(np.zeros((10, 4))), it([0, 1, 2, 3, 0, -100, 9, 2, 1, 1])
        )
    msg = _message(excinfo)
    assert _has_number(msg, 9) and _has_number(msg, 6), msg
    with pytest.raises(ValueError, match="labels"):
        ce.nll_loss(fl(np.zeros((3, 4))), it([0, 4, 1]))


@pytest.mark.parametrize("kind", ["torch", "array_api_strict"])
def test_negative_probabilities_and_float_labels_on_other_backends(kind):
    fl, _ = _backend_arrays(kind)
    with pytest.raises(ValueError, match=r"\bp\b"):
        ce.entropy(fl([0.5, -0.25, 0.75]))
    with pytest.raises(BAD, match="labels"):
        ce.sparse_softmax_cross_entropy(fl(np.zeros((2, 3))), fl([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        ce.softmax_cross_entropy(fl(np.zeros((2, 3))), fl(np.zeros((2, 4))))
