"""What impl="auto" runs where the fused kernel cannot be had: impl="native", torch's own
fused operations with the library's numerics, against the reference (impl="torch", the
core under autograd) and torch's own cross_entropy, forward and gradient."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as TF

from crossentropy.torch import _kernel, dispatch, linear_cross_entropy, native
from crossentropy.torch import functional as F

INF = math.inf
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
REDUCTIONS = ["mean", "sum", "none"]
OPTIONS = [
    {},
    {"weight": True},
    {"ignore": True},
    {"label_smoothing": 0.1},
    {"z_loss": 1e-2},
    {"softcap": 3.0},
    {"weight": True, "ignore": True, "label_smoothing": 0.2, "z_loss": 0.1, "softcap": 2.0},
]


@pytest.fixture
def no_kernel(monkeypatch):
    """The fused kernel made unavailable, as on a machine without a C compiler; the
    warning it gives is checked on its own (in a fresh process)."""
    monkeypatch.setattr(_kernel, "fused_available", lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dispatch.KernelUnavailableWarning)
        yield


def _graph(loss):
    """The names of the autograd nodes behind ``loss``."""
    names, todo = set(), [loss.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and type(node).__name__ not in names:
            names.add(type(node).__name__)
            todo.extend(next_node for next_node, _ in node.next_functions)
    return names


def _case(shape, dtype, options, seed=0):
    g = torch.Generator().manual_seed(seed)
    classes = shape[1] if len(shape) > 1 else shape[0]
    x = (3 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    t = torch.randint(0, classes, target_shape, generator=g)
    kwargs = {k: v for k, v in options.items() if k not in ("weight", "ignore")}
    if options.get("weight"):
        w = torch.rand(classes, generator=g, dtype=torch.float64) + 0.1
        w[1] = 0.0  # a zero-weight class
        kwargs["weight"] = w.to(dtype)
    if options.get("ignore") and t.ndim > 0:
        t.view(-1)[::3] = -100
    return x, t, kwargs


def _loss_and_grad(x, t, reduction, impl, **kwargs):
    x = x.detach().clone().requires_grad_()
    loss = F.cross_entropy(x, t, reduction=reduction, impl=impl, **kwargs)
    loss.sum().backward()
    return loss.detach(), x.grad


def _tolerance(dtype):
    eps = torch.finfo(dtype).eps
    return {"rtol": 4 * eps, "atol": 4 * eps} if dtype != torch.float64 else {}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_native_equals_the_reference(dtype, reduction, options):
    x, t, kwargs = _case((7, 11), dtype, options)
    loss, grad = _loss_and_grad(x, t, reduction, "native", **kwargs)
    want_loss, want_grad = _loss_and_grad(x, t, reduction, "torch", **kwargs)
    assert loss.dtype == want_loss.dtype == dtype and grad.dtype == dtype
    torch.testing.assert_close(loss, want_loss, **_tolerance(dtype))
    torch.testing.assert_close(grad, want_grad, **_tolerance(dtype))


@pytest.mark.parametrize("shape", [(4, 5, 3), (2, 6, 2, 3), (6,), (0, 4)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_native_takes_torch_shapes_and_equals_torch(shape, reduction):
    """(N, C, d1..dK), (C,) and empty inputs, against torch's own function (float64)."""
    for options in ({}, {"weight": True, "ignore": True, "label_smoothing": 0.1}):
        x, t, kwargs = _case(shape, torch.float64, options)
        if shape[0] == 0 and reduction == "mean":
            continue  # torch: 0 / 0 (the decided answer is tested below)
        loss, grad = _loss_and_grad(x, t, reduction, "native", **kwargs)
        want_loss, want_grad = _loss_and_grad(x, t, reduction, "torch", **kwargs)  # the reference
        x2 = x.detach().clone().requires_grad_()
        torchs = TF.cross_entropy(x2, t, reduction=reduction, **kwargs)
        torchs.sum().backward()
        torch.testing.assert_close(loss, torchs.detach())
        torch.testing.assert_close(grad, x2.grad)
        torch.testing.assert_close(loss, want_loss)
        torch.testing.assert_close(grad, want_grad)


@pytest.mark.parametrize(
    ("x", "t", "kwargs"),
    [
        (torch.zeros(0, 5), torch.zeros(0, dtype=torch.int64), {}),
        (torch.randn(3, 5), torch.full((3,), -100), {}),
        (torch.randn(3, 5), torch.full((3,), -100), {"label_smoothing": 0.1, "z_loss": 0.1}),
        (torch.randn(2, 3), torch.tensor([0, 0]), {"weight": torch.tensor([0.0, 1.0, 2.0])}),
        # every target ignored, in rows of -inf logits: no NaN in the gradient either
        (torch.full((2, 3), -INF), torch.full((2,), -100), {}),
    ],
    ids=["empty", "all-ignored", "all-ignored-options", "zero-weight", "ignored-neg-inf"],
)
def test_mean_over_nothing_is_zero_with_zero_gradient(x, t, kwargs):
    loss, grad = _loss_and_grad(x, t, "mean", "native", **kwargs)
    assert loss.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(x))


ROWS = {
    "plus-inf-beside-target": ([0.0, INF, 1.0], 0),
    "plus-inf-at-target": ([0.0, INF, 1.0], 1),
    "all-neg-inf": ([-INF, -INF, -INF], 0),
    "neg-inf-at-target": ([0.0, -INF, 1.0], 1),
    "neg-inf-beside-target": ([0.0, -INF, 1.0], 0),
    "nan": ([0.0, math.nan, 1.0], 0),
    "ignored-all-neg-inf": ([-INF, -INF, -INF], -100),
    "zero-weight-target-neg-inf": ([-INF, 1.0, 2.0], 0),
    "plus-inf-zero-weight-target": ([INF, 1.0, 2.0], 0),
}
EDGE_OPTIONS = [
    {},
    {"label_smoothing": 0.1},
    {"z_loss": 1e-3},
    {"weight": True},
    {"weight": True, "label_smoothing": 0.2, "z_loss": 0.1},
    {"softcap": 3.0},
]


@pytest.mark.parametrize("row", ROWS, ids=str)
@pytest.mark.parametrize("options", EDGE_OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_infinite_and_nan_logits_as_the_reference_decides(row, options, reduction):
    """+inf, -inf and NaN logits: the reference's answers (where torch gives NaN for a
    finite or infinite one), NaN in the same places, in the loss and the gradient."""
    values, target = ROWS[row]
    x = torch.tensor([values, [0.5, 0.2, 0.1]])
    t = torch.tensor([target, 1])
    kwargs = dict(options)
    if kwargs.pop("weight", False):
        kwargs["weight"] = torch.tensor([0.0, 1.0, 2.0])
    loss, grad = _loss_and_grad(x, t, reduction, "native", **kwargs)
    want_loss, want_grad = _loss_and_grad(x, t, reduction, "torch", **kwargs)
    torch.testing.assert_close(loss, want_loss, equal_nan=True)
    torch.testing.assert_close(grad, want_grad, equal_nan=True)


def test_decided_cases_where_torch_gives_nan():
    """Three answers of the library that torch's own function does not give."""
    x = torch.tensor([[0.0, INF, 1.0], [0.5, 0.2, 0.1]])
    loss, grad = _loss_and_grad(x, torch.tensor([0, 1]), "none", "native")
    assert loss[0].item() == INF and grad[0, 0].item() == -1.0 and grad[0, 2].item() == 0.0
    assert math.isnan(TF.cross_entropy(x, torch.tensor([0, 1]), reduction="none")[0].item())
    ignored = torch.full((2, 3), -INF, requires_grad=True)
    TF.cross_entropy(ignored, torch.full((2,), -100), reduction="sum").backward()
    assert torch.isnan(ignored.grad).all()  # torch
    _, grad = _loss_and_grad(ignored, torch.full((2,), -100), "sum", "native")
    assert torch.equal(grad, torch.zeros(2, 3))


def test_second_backward_and_double_backward_equal_torch():
    x0, t, kwargs = _case((5, 7), torch.float64, {"weight": True, "label_smoothing": 0.1})
    x = x0.clone().requires_grad_()
    loss = F.cross_entropy(x, t, impl="native", **kwargs)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * first)
    x = x0.clone().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(x, t, impl="native", **kwargs), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), x)
    y = x0.clone().requires_grad_()
    (h,) = torch.autograd.grad(TF.cross_entropy(y, t, **kwargs), y, create_graph=True)
    (hh,) = torch.autograd.grad(h.square().sum(), y)
    torch.testing.assert_close(g, h)
    torch.testing.assert_close(gg, hh)


def test_auto_runs_native_without_the_kernel(no_kernel):
    x, t, kwargs = _case((6, 9), torch.float32, {"weight": True, "ignore": True})
    x.requires_grad_()
    assert dispatch.choose("auto", x.device, triton_takes=True, fused_takes=True) == "native"
    loss = F.cross_entropy(x, t, **kwargs)
    assert "NativeCrossEntropyBackward" in _graph(loss)
    torch.testing.assert_close(loss, F.cross_entropy(x, t, impl="torch", **kwargs))
    # probability targets: native too (the test of their own is below)
    probs = torch.softmax(torch.randn(6, 9), dim=1)
    assert "NativeProbabilityCrossEntropyBackward" in _graph(F.cross_entropy(x, probs))


@pytest.mark.skipif(not _kernel.fused_available(), reason="no C compiler: no fused kernel")
def test_auto_runs_the_fused_kernel_with_it():
    assert dispatch.choose("auto", torch.device("cpu"), triton_takes=True, fused_takes=True) == (
        "fused"
    )
    x = torch.randn(4, 5, requires_grad=True)
    loss = F.cross_entropy(x, torch.tensor([0, 1, 2, 3]))
    assert "FusedCrossEntropyBackward" in _graph(loss)


def test_linear_auto_without_the_kernel_runs_native(no_kernel):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, 2, 3, -100, 9, 0])
    loss = linear_cross_entropy(h, w, y)
    assert "NativeCrossEntropyBackward" in _graph(loss)
    loss.backward()
    h2, w2 = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    want = TF.cross_entropy(h2 @ w2.T, y)
    want.backward()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(h.grad, h2.grad)
    torch.testing.assert_close(w.grad, w2.grad)


def test_native_refuses_what_it_cannot_do():
    x, t = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="target: impl='native' has no gradient"):
        F.cross_entropy(x, torch.softmax(x, 1).requires_grad_(), impl="native")
    with pytest.raises(ValueError, match="ignore_index: not supported with probability"):
        F.cross_entropy(x, torch.softmax(x, 1), ignore_index=0, impl="native")
    with pytest.raises(TypeError, match="must be floating point"):
        F.cross_entropy(x, torch.ones(3, 4, dtype=torch.int64), impl="native")
    with pytest.raises(ValueError, match="weight: impl='native' has no gradient"):
        F.cross_entropy(x, t, weight=torch.ones(4, requires_grad=True), impl="native")
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 4\)"):
        F.cross_entropy(x, torch.tensor([0, 1, 4]), impl="native")


def test_the_warning_is_given_once_with_the_reason_and_the_fix(tmp_path):
    """A real failed build (a flag the compiler refuses, an empty cache), in a fresh process:
    one warning for two calls, naming the compiler's error and the fix."""
    script = textwrap.dedent(
        """
        import warnings, torch
        from crossentropy.torch import functional as F
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                x = torch.randn(4, 5, requires_grad=True)
                F.cross_entropy(x, torch.tensor([0, 1, 2, 3])).backward()
        for w in caught:
            print(w.category.__name__, "|", w.message)
        """
    )
    env = {
        **os.environ,
        "CROSSENTROPY_CACHE": str(tmp_path),
        "CROSSENTROPY_KERNEL_CFLAGS": "-fno-such-flag-for-this-test",
    }
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    lines = [line for line in out.splitlines() if line.startswith("KernelUnavailableWarning")]
    assert len(lines) == 1, out
    assert "no-such-flag-for-this-test" in lines[0] or "no C compiler" in lines[0], lines[0]
    assert "install a C compiler" in lines[0] and "prebuilt wheel" in lines[0]


# ----------------------------------------------------------------------------------------
# probability targets


PROBABILITY_OPTIONS = [
    {},
    {"weight": True},
    {"label_smoothing": 0.1},
    {"label_smoothing": 1.0},
    {"z_loss": 1e-2},
    {"softcap": 3.0},
    {"weight": True, "label_smoothing": 0.2, "z_loss": 0.1, "softcap": 2.0},
]


def _probabilities(shape, dtype, options, seed=0):
    """Logits and probability targets (with some exact zeros) of ``shape``, class axis 1."""
    x, _, kwargs = _case(shape, dtype, options, seed)
    g = torch.Generator().manual_seed(seed + 1)
    axis = 1 if len(shape) > 1 else 0
    q = torch.softmax(2 * torch.randn(shape, generator=g, dtype=torch.float64), dim=axis)
    q[torch.rand(shape, generator=g) < 0.3] = 0.0
    return x, q.to(dtype), kwargs


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", PROBABILITY_OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_native_probabilities_equal_the_reference(dtype, reduction, options):
    x, q, kwargs = _probabilities((7, 11), dtype, options)
    loss, grad = _loss_and_grad(x, q, reduction, "native", **kwargs)
    want_loss, want_grad = _loss_and_grad(x, q, reduction, "torch", **kwargs)
    assert loss.dtype == want_loss.dtype == dtype and grad.dtype == dtype
    torch.testing.assert_close(loss, want_loss, **_tolerance(dtype))
    torch.testing.assert_close(grad, want_grad, **_tolerance(dtype))


@pytest.mark.parametrize("shape", [(4, 5, 3), (2, 6, 2, 3), (6,), (0, 4), (5, 7)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_native_probabilities_take_torch_shapes_and_equal_torch(shape, reduction):
    """(N, C, d1..dK), (C,) and empty inputs, against torch's own function (float64) where
    it answers (a mean over no rows is NaN there, 0 here) and against the reference."""
    for options in ({}, {"weight": True, "label_smoothing": 0.1}):
        x, q, kwargs = _probabilities(shape, torch.float64, options)
        loss, grad = _loss_and_grad(x, q, reduction, "native", **kwargs)
        want_loss, want_grad = _loss_and_grad(x, q, reduction, "torch", **kwargs)
        torch.testing.assert_close(loss, want_loss)
        torch.testing.assert_close(grad, want_grad)
        if shape[0] == 0 and reduction == "mean":
            assert loss.item() == 0.0
            continue
        x2 = x.detach().clone().requires_grad_()
        torchs = TF.cross_entropy(x2, q, reduction=reduction, **kwargs)
        torchs.sum().backward()
        torch.testing.assert_close(loss, torchs.detach())
        torch.testing.assert_close(grad, x2.grad)


PROBABILITY_ROWS = {
    "zero-at-neg-inf": ([0.0, -INF, 1.0], [0.5, 0.0, 0.5]),
    "mass-at-neg-inf": ([0.0, -INF, 1.0], [0.2, 0.3, 0.5]),
    "zero-row-at-neg-inf": ([0.0, -INF, 1.0], [0.0, 0.0, 0.0]),
    "plus-inf": ([0.0, INF, 1.0], [0.2, 0.3, 0.5]),
    "plus-inf-zero-there": ([0.0, INF, 1.0], [0.5, 0.0, 0.5]),
    "all-neg-inf": ([-INF, -INF, -INF], [0.2, 0.3, 0.5]),
    "nan": ([0.0, math.nan, 1.0], [0.2, 0.3, 0.5]),
    "zero-weight-class-neg-inf": ([-INF, 1.0, 2.0], [0.3, 0.3, 0.4]),
}


@pytest.mark.parametrize("row", PROBABILITY_ROWS, ids=str)
@pytest.mark.parametrize("options", EDGE_OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_probabilities_at_infinite_and_nan_logits_as_the_reference_decides(row, options, reduction):
    values, probabilities = PROBABILITY_ROWS[row]
    x = torch.tensor([values, [0.5, 0.2, 0.1]])
    q = torch.tensor([probabilities, [0.1, 0.6, 0.3]])
    kwargs = dict(options)
    if kwargs.pop("weight", False):
        kwargs["weight"] = torch.tensor([0.0, 1.0, 2.0])
    loss, grad = _loss_and_grad(x, q, reduction, "native", **kwargs)
    want_loss, want_grad = _loss_and_grad(x, q, reduction, "torch", **kwargs)
    torch.testing.assert_close(loss, want_loss, equal_nan=True)
    torch.testing.assert_close(grad, want_grad, equal_nan=True)


def test_zero_probability_at_a_neg_inf_logit_adds_nothing():
    """0 * -inf = 0: the class is as if absent (torch: NaN), in the loss and the gradient."""
    x = torch.tensor([[0.3, -INF, 1.0, -0.5], [-INF, 0.2, -INF, 0.1]], dtype=torch.float64)
    q = torch.tensor([[0.5, 0.0, 0.25, 0.25], [0.0, 0.4, 0.0, 0.6]], dtype=torch.float64)
    loss, grad = _loss_and_grad(x, q, "none", "native", label_smoothing=0.0)
    assert torch.isnan(TF.cross_entropy(x, q, reduction="none")).all()
    for i in range(2):
        kept = torch.isfinite(x[i])
        y = x[i, kept].clone().requires_grad_()
        want = TF.cross_entropy(y, q[i, kept])  # the finite classes alone
        want.backward()
        torch.testing.assert_close(loss[i], want.detach())
        torch.testing.assert_close(grad[i, kept], y.grad)
        assert torch.equal(grad[i, ~kept], torch.zeros(int((~kept).sum()), dtype=x.dtype))


def test_probabilities_second_backward_and_double_backward_equal_torch():
    x0, q, kwargs = _probabilities((5, 7), torch.float64, {"weight": True, "label_smoothing": 0.1})
    x = x0.clone().requires_grad_()
    loss = F.cross_entropy(x, q, impl="native", **kwargs)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * first)
    x = x0.clone().requires_grad_()
    (g,) = torch.autograd.grad(F.cross_entropy(x, q, impl="native", **kwargs), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), x)
    y = x0.clone().requires_grad_()
    (h,) = torch.autograd.grad(TF.cross_entropy(y, q, **kwargs), y, create_graph=True)
    (hh,) = torch.autograd.grad(h.square().sum(), y)
    torch.testing.assert_close(g, h)
    torch.testing.assert_close(gg, hh)


@pytest.mark.parametrize("kernel", [True, False], ids=["with-kernel", "without-kernel"])
def test_auto_runs_native_for_probability_targets(kernel, monkeypatch):
    """With or without the fused kernel (which does not take probability targets); the
    reference where native has no answer: a target or class weights that require grad,
    torch.func transforms."""
    monkeypatch.setattr(_kernel, "fused_available", lambda: kernel)
    x, q, kwargs = _probabilities((6, 9), torch.float32, {"weight": True, "z_loss": 1e-3})
    x.requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the kernel would not take the call
        loss = F.cross_entropy(x, q, **kwargs)
    assert "NativeProbabilityCrossEntropyBackward" in _graph(loss)
    torch.testing.assert_close(loss, F.cross_entropy(x, q, impl="torch", **kwargs))

    teacher = torch.softmax(torch.randn(6, 9), dim=1).requires_grad_()  # no exact zeros
    loss = F.cross_entropy(x, teacher, **kwargs)
    assert "NativeProbabilityCrossEntropyBackward" not in _graph(loss)
    (dq,) = torch.autograd.grad(loss, teacher)
    t = teacher.detach().clone().requires_grad_()
    # the z-loss adds no gradient with respect to the target
    (want,) = torch.autograd.grad(TF.cross_entropy(x.detach(), t, weight=kwargs["weight"]), t)
    torch.testing.assert_close(dq, want)

    w = kwargs["weight"].clone().requires_grad_()
    loss = F.cross_entropy(x, q, weight=w, z_loss=1e-3)
    assert "NativeProbabilityCrossEntropyBackward" not in _graph(loss)

    def f(logits):
        return F.cross_entropy(logits, q, **kwargs)

    got = torch.func.grad(f)(x.detach())
    (want_x,) = torch.autograd.grad(F.cross_entropy(x, q, impl="torch", **kwargs), x)
    torch.testing.assert_close(got, want_x)


def test_probability_check_messages_equal_the_reference():
    x = torch.randn(3, 4)
    q = torch.softmax(torch.randn(3, 4), dim=1)
    q[1, 2] = -0.5
    messages = []
    for impl in ("native", "torch"):
        with pytest.raises(ValueError) as caught:
            F.cross_entropy(x, q, impl=impl)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith("target: expected finite non-negative probabilities")


# ----------------------------------------------------------- a block of rows at a time


def _hostile_rows(dtype, seed=3):
    """(10, 3) logits with the hostile rows of ``ROWS`` between ordinary ones, so that
    with two rows a block they fall in different blocks, first, middle and last."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    t = torch.randint(0, 3, (10,), generator=g)
    picks = [
        "plus-inf-beside-target",
        "nan",
        "ignored-all-neg-inf",
        "all-neg-inf",
        "plus-inf-at-target",
    ]
    for row, name in zip((0, 3, 4, 7, 9), picks, strict=True):
        values, target = ROWS[name]
        x[row] = torch.tensor(values, dtype=torch.float64)
        t[row] = target
    return x.to(dtype), t


@pytest.fixture
def two_rows_a_block(monkeypatch):
    """Blocks of two rows at three classes (one row at eleven): every test shape sweeps
    several blocks, the last one short."""
    monkeypatch.setattr(native, "BLOCK_ELEMENTS", 6)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", EDGE_OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_blocks_of_rows_with_hostile_rows_equal_the_reference(
    two_rows_a_block, dtype, reduction, options
):
    """Non-finite rows in different blocks (found, fixed and zeroed by their global index),
    in every dtype: the half-precision logits are read block by block, never copied."""
    x, t = _hostile_rows(dtype)
    kwargs = dict(options)
    if kwargs.pop("weight", False):
        kwargs["weight"] = torch.tensor([0.0, 1.0, 2.0], dtype=dtype)
    loss, grad = _loss_and_grad(x, t, reduction, "native", **kwargs)
    want_loss, want_grad = _loss_and_grad(x, t, reduction, "torch", **kwargs)
    assert loss.dtype == dtype and grad.dtype == dtype
    torch.testing.assert_close(loss, want_loss, equal_nan=True, **_tolerance(dtype))
    torch.testing.assert_close(grad, want_grad, equal_nan=True, **_tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", PROBABILITY_OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_blocks_of_rows_with_probability_targets_equal_the_reference(
    two_rows_a_block, dtype, reduction, options
):
    x, q, kwargs = _probabilities((9, 3), dtype, options)
    for row, name in zip((0, 4, 8), ("zero-at-neg-inf", "plus-inf", "nan"), strict=True):
        values, probabilities = PROBABILITY_ROWS[name]
        x[row] = torch.tensor(values, dtype=dtype)
        q[row] = torch.tensor(probabilities, dtype=dtype)
    if "weight" in kwargs:
        kwargs["weight"] = torch.tensor([0.5, 0.0, 2.0], dtype=dtype)
    loss, grad = _loss_and_grad(x, q, reduction, "native", **kwargs)
    want_loss, want_grad = _loss_and_grad(x, q, reduction, "torch", **kwargs)
    assert loss.dtype == dtype and grad.dtype == dtype
    torch.testing.assert_close(loss, want_loss, equal_nan=True, **_tolerance(dtype))
    torch.testing.assert_close(grad, want_grad, equal_nan=True, **_tolerance(dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_is_computed_in_float32_over_many_blocks(dtype):
    """Shapes of several real blocks (2 MiB of float32 each): the loss and gradient of
    half-precision logits equal float64 torch on the same (rounded) logits, to float32
    accuracy before the final rounding, with a target weight, smoothing and ignored rows."""
    g = torch.Generator().manual_seed(5)
    rows, classes = 70, 20000  # 26 rows a block: three blocks, the last short
    x = (4 * torch.randn(rows, classes, generator=g)).to(dtype)
    t = torch.randint(0, classes, (rows,), generator=g)
    t[::7] = -100
    w = torch.rand(classes, generator=g, dtype=torch.float64) + 0.5
    kwargs = {"weight": w.to(dtype), "label_smoothing": 0.05}
    loss, grad = _loss_and_grad(x, t, "mean", "native", **kwargs)
    x64 = x.double().requires_grad_()
    TF.cross_entropy(x64, t, weight=w.to(dtype).double(), label_smoothing=0.05).backward()
    want = TF.cross_entropy(x64.detach(), t, weight=w.to(dtype).double(), label_smoothing=0.05)
    # the loss is rounded to the half dtype once, at the end
    assert loss.item() == want.to(dtype).item()
    # within one half-precision step of float64's gradient, or float32's absolute error
    # (cancellation in A p_k - (eps / C) w_k at the smallest entries, as torch's float32),
    # or the spacing of float16's subnormals (below 6.1e-5)
    info = torch.finfo(dtype)
    scale = x64.grad.abs().max().item()
    atol = max(4 * torch.finfo(torch.float32).eps * scale, info.smallest_normal * info.eps)
    torch.testing.assert_close(grad.double(), x64.grad, rtol=info.eps, atol=atol)
    assert not torch.equal(grad.double(), x64.grad)  # rounded to the half dtype, not exact


_HALF_MEMORY_SCRIPT = textwrap.dedent(
    """
    import gc, json, re, sys
    import torch
    import torch.nn.functional as TF
    from crossentropy.torch import functional as F

    def status(key):
        with open("/proc/self/status") as f:
            return int(re.search(rf"^{key}:\\s+(\\d+)", f.read(), re.M).group(1))

    x0 = torch.randn(1024, 32000).to(torch.bfloat16)
    t = torch.randint(0, 32000, (1024,))
    steps = {
        "native": lambda x: F.cross_entropy(x, t, impl="native"),
        "torch": lambda x: TF.cross_entropy(x, t),
    }
    result = {}
    for name in sys.argv[1:]:
        for _ in range(2):  # the second step is measured
            x = x0.clone().requires_grad_()
            gc.collect()
            before = status("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            steps[name](x).backward()
            peak = status("VmHWM")
            del x
        result[name] = peak - before
    print(json.dumps(result))
    """
)


def test_half_precision_peak_memory_is_below_torchs():
    """bfloat16 logits (1024, 32000), 62.5 MiB: a forward and backward of impl='native'
    holds the gradient and blocks of a few MiB (no float32 copy of the logits, no saved
    softmax), below torch's own function, which saves its log-softmax for the backward.
    Peak RSS in a fresh subprocess, blocks over 64 KiB served by mmap."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    run = subprocess.run(
        [sys.executable, "-c", _HALF_MEMORY_SCRIPT, "native", "torch"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    peaks = json.loads(run.stdout.strip().splitlines()[-1])
    logits_kib = 1024 * 32000 * 2 // 1024
    assert peaks["native"] < 1.3 * logits_kib, peaks  # the gradient and a few blocks
    assert peaks["native"] < peaks["torch"], peaks
