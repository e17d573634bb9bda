"""crossentropy.torch at the edges: double backward, in-place writes, weights that require
grad, NaN and negative KL targets, autocast, torch.func transforms, meta tensors and hostile
arguments. Each case is held to PyTorch's own answer (torch.nn.functional, gradgradcheck,
finite differences) or to a clear error that names the argument."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as TF

import crossentropy.torch as ct
import crossentropy.torch.functional as F
from crossentropy.torch import conventions

pytestmark = pytest.mark.skipif(
    not ct.fused_available(), reason="no C compiler: the fused kernel cannot be built"
)

LOSSES = (
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
)


def problem(name: str, dtype: torch.dtype = torch.float64, device: str = "cpu") -> tuple:
    """(input, target, options) for one loss, the same for ours and torch's."""
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    x = torch.randn(4, 5, generator=g, dtype=dtype)
    q = torch.rand(4, 5, generator=g, dtype=dtype)
    y = torch.tensor([0, 2, 4, 1])
    inputs = {
        "cross_entropy": (x, y, {}),
        "nll_loss": (x.log_softmax(-1), y, {}),
        "binary_cross_entropy": (torch.sigmoid(x), q, {}),
        "binary_cross_entropy_with_logits": (x, q, {}),
        "kl_div": (x.log_softmax(-1), q.softmax(-1), {"reduction": "batchmean"}),
        "mse_loss": (x, q, {}),
        "l1_loss": (x, q, {}),
        "smooth_l1_loss": (x, q, {}),
        "huber_loss": (x, q, {}),
    }
    a, b, options = inputs[name]
    return a.to(device), b.to(device), options


# ----------------------------------------------------------------------------------------
# double backward through the fused cross entropy

DOUBLE_OPTIONS = [
    {},
    {"weight": "w"},
    {"ignore_index": 1},
    {"label_smoothing": 0.2, "weight": "w"},
    {"z_loss": 0.1},
    {"softcap": 2.0},
    {"softcap": 1.5, "z_loss": 0.05, "label_smoothing": 0.1, "ignore_index": 2, "weight": "w"},
]


def _options(options: dict[str, Any], classes: int) -> dict[str, Any]:
    if options.get("weight") == "w":
        weight = torch.linspace(0.5, 2.0, classes, dtype=torch.float64)
        return {**options, "weight": weight}
    return options


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", DOUBLE_OPTIONS, ids=str)
def test_fused_gradgradcheck(options: dict[str, Any], reduction: str) -> None:
    """The second derivative of the fused loss is the true one (finite differences of the
    first, float64), every option and reduction."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    target = torch.tensor([0, 2, 1])
    kw = _options(options, 4)

    def loss(z: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(z, target, reduction=reduction, impl="fused", **kw)

    assert torch.autograd.gradgradcheck(loss, (x,))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", DOUBLE_OPTIONS, ids=str)
def test_fused_gradient_penalty_matches_torch(options: dict[str, Any], reduction: str) -> None:
    """A gradient penalty ||d loss / d x||^2 differentiated again: the fused path gives
    torch.nn.functional's double backward (our torch path where torch has no z-loss or
    soft cap)."""
    g = torch.Generator().manual_seed(2)
    logits = 3 * torch.randn(5, 6, dtype=torch.float64, generator=g)
    target = torch.tensor([0, 2, 1, 5, 2])
    kw = _options(options, 6)

    def reference(x: torch.Tensor) -> torch.Tensor:
        if "z_loss" in kw or "softcap" in kw:
            return F.cross_entropy(x, target, reduction=reduction, impl="torch", **kw)
        return TF.cross_entropy(x, target, reduction=reduction, **kw)

    results = []
    for loss_fn in (
        reference,
        lambda x: F.cross_entropy(x, target, reduction=reduction, impl="fused", **kw),
    ):
        x = logits.clone().requires_grad_()
        loss = loss_fn(x).sum()
        (grad,) = torch.autograd.grad(loss, x, create_graph=True)
        (penalty_grad,) = torch.autograd.grad((grad * grad).sum(), x)
        results.append((grad.detach(), penalty_grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_fused_double_backward_of_k_dimensional_input(reduction: str) -> None:
    """(N, C, d) logits (moved to rows inside): gradgradcheck, and torch's penalty."""
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 4, 3, dtype=torch.float64, generator=g)
    target = torch.tensor([[0, 1, 3], [2, -100, 1]])
    x = logits.clone().requires_grad_()
    assert torch.autograd.gradgradcheck(
        lambda z: F.cross_entropy(z, target, reduction=reduction, impl="fused"), (x,)
    )
    penalties = []
    for loss_fn in (TF.cross_entropy, functools.partial(F.cross_entropy, impl="fused")):
        x = logits.clone().requires_grad_()
        loss = loss_fn(x, target, reduction=reduction, label_smoothing=0.1).sum()
        (grad,) = torch.autograd.grad(loss, x, create_graph=True)
        penalties.append(torch.autograd.grad(grad.pow(2).sum(), x)[0])
    torch.testing.assert_close(penalties[1], penalties[0], rtol=1e-10, atol=1e-12)


def test_fused_double_backward_through_a_model() -> None:
    """The penalty reaches the parameters below the logits (the case that failed with
    "element 0 of tensors does not require grad")."""
    g = torch.Generator().manual_seed(3)
    h = torch.randn(6, 3, dtype=torch.float64, generator=g)
    w0 = torch.randn(3, 4, dtype=torch.float64, generator=g)
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    grads = []
    for impl in ("torch", "fused"):
        w = w0.clone().requires_grad_()
        loss = F.cross_entropy(h @ w, target, impl=impl)
        (gw,) = torch.autograd.grad(loss, w, create_graph=True)
        gw.pow(2).sum().backward()
        grads.append(w.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)


def test_inplace_backward_refuses_create_graph() -> None:
    x = torch.randn(3, 4, requires_grad=True) * 1.0
    loss = F.cross_entropy(x, torch.tensor([0, 1, 2]), impl="fused", inplace_backward=True)
    with pytest.raises(RuntimeError, match="inplace_backward=True: a differentiable gradient"):
        torch.autograd.grad(loss, x, create_graph=True)


# ----------------------------------------------------------------------------------------
# in-place backward: refused where torch refuses in-place writes


def test_inplace_backward_refuses_an_expanded_view() -> None:
    row = torch.randn(1, 5, requires_grad=True)
    expanded = (row * 1.0).expand(4, 5)  # four rows on one row of memory
    with pytest.raises(ValueError, match=r"input: inplace_backward=True .* share memory"):
        F.cross_entropy(expanded, torch.tensor([0, 1, 2, 3]), inplace_backward=True)


def test_inplace_backward_refuses_overlapping_rows() -> None:
    base = torch.randn(20, requires_grad=True) * 1.0
    rows = base.as_strided((4, 5), (2, 1))  # row i starts 2 elements after row i - 1
    with pytest.raises(ValueError, match="share memory"):
        F.cross_entropy(rows, torch.tensor([0, 1, 2, 3]), inplace_backward=True)


@pytest.mark.parametrize("view", [False, True])
def test_inplace_backward_refuses_a_leaf_that_requires_grad(view: bool) -> None:
    parameter = torch.randn(4, 5, requires_grad=True)
    before = parameter.detach().clone()
    logits = parameter[:, :] if view else parameter
    with pytest.raises(ValueError, match=r"input: inplace_backward=True .* leaf that requires"):
        F.cross_entropy(logits, torch.tensor([0, 1, 2, 3]), inplace_backward=True)
    assert torch.equal(parameter.detach(), before)  # untouched


def test_inplace_backward_accepts_a_strided_non_overlapping_view() -> None:
    """Rows with a gap between them (a column slice) do not overlap: accepted, exact."""
    wide = torch.randn(4, 8, dtype=torch.float64) * torch.ones((), requires_grad=True)
    logits = wide[:, :5]
    target = torch.tensor([0, 1, 2, 3])
    expected = torch.autograd.grad(TF.cross_entropy(logits, target), wide)[0][:, :5].clone()
    loss = F.cross_entropy(logits, target, inplace_backward=True, impl="fused")
    (grad,) = torch.autograd.grad(loss, wide)
    torch.testing.assert_close(grad[:, :5], expected, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------------------
# class weights that require grad


def test_fused_refuses_a_weight_that_requires_grad() -> None:
    weight = torch.rand(5, requires_grad=True)
    with pytest.raises(ValueError, match="weight: impl='fused' has no gradient"):
        F.cross_entropy(torch.randn(3, 5), torch.tensor([0, 1, 2]), weight=weight, impl="fused")


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_auto_differentiates_the_class_weights(reduction: str, label_smoothing: float) -> None:
    """impl='auto' takes the exact path for a weight that requires grad: the gradient in
    the weights (and logits) passes gradcheck, the mean's denominator sum_i w_{y_i}
    included."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = (torch.rand(4, dtype=torch.float64, generator=g) + 0.5).requires_grad_()
    target = torch.tensor([0, 1, 3, -100, 3, 2])

    def loss(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            x, target, weight=w, reduction=reduction, label_smoothing=label_smoothing
        )

    assert torch.autograd.gradcheck(loss, (x, w))


# ----------------------------------------------------------------------------------------
# kl_div: NaN and negative targets as torch, only p = 0 decided


@pytest.mark.parametrize("shape", [(10, 10), ()], ids=["matrix", "scalar"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "batchmean", "none"])
@pytest.mark.parametrize("log_target", [False, True])
def test_kl_div_matches_torch_on_its_module_inputs(
    log_target: bool, reduction: str, shape: tuple[int, ...]
) -> None:
    """torch's own KLDivLoss ModuleInfo inputs: log of values in [-9, 9] (NaN for the
    negative ones) for input and, without log_target, target; loss and both gradients."""
    g = torch.Generator().manual_seed(5 + len(shape))
    a = torch.rand(shape, dtype=torch.float64, generator=g) * 18 - 9
    b = torch.rand(shape, dtype=torch.float64, generator=g) * 18 - 9
    results = []
    for kl_div in (TF.kl_div, F.kl_div):
        x = a.log().requires_grad_()
        t = (b if log_target else b.log()).requires_grad_()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = kl_div(x, t, reduction=reduction, log_target=log_target)
        results.append((loss.detach(), *torch.autograd.grad(loss.sum(), (x, t))))
    for ours, torchs in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(ours, torchs, equal_nan=True, rtol=1e-12, atol=1e-14)


def test_kl_div_negative_target_gradient_is_minus_target() -> None:
    x = torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([-0.3, 0.0, math.nan], dtype=torch.float64)
    loss = F.kl_div(x, t, reduction="sum")
    loss.backward()
    assert math.isnan(loss.item())
    assert x.grad[0].item() == 0.3  # -target
    assert x.grad[1].item() == 0.0  # p = 0: the decided 0 log 0 = 0
    assert math.isnan(x.grad[2].item())


# ----------------------------------------------------------------------------------------
# autocast: every loss is an fp32 op, as in torch


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("name", LOSSES)
def test_autocast_matches_torch(name: str, dtype: torch.dtype) -> None:
    a, b, options = problem(name, dtype)
    out = {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for module in (TF, F):
            out[module] = getattr(module, name)(a, b, **options)
    assert out[F].dtype == out[TF].dtype == torch.float32
    torch.testing.assert_close(out[F], out[TF], rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("impl", ["fused", "torch"])
def test_autocast_cross_entropy_gradient_dtype_is_the_inputs(impl: str) -> None:
    x = torch.randn(4, 5, dtype=torch.bfloat16, requires_grad=True)
    target = torch.tensor([0, 1, 2, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(x, target, impl=impl)
        expected = TF.cross_entropy(x, target)
    assert loss.dtype == torch.float32
    (grad,) = torch.autograd.grad(loss, x)
    (expected_grad,) = torch.autograd.grad(expected, x)
    assert grad.dtype == expected_grad.dtype == torch.bfloat16
    torch.testing.assert_close(grad, expected_grad)


# ----------------------------------------------------------------------------------------
# torch.func transforms: every loss as torch.nn.functional


def _transform(kind: str, loss: Callable[..., torch.Tensor], a: torch.Tensor, b: torch.Tensor):
    if kind == "grad":
        return torch.func.grad(lambda u: loss(u, b))(a)
    if kind == "jacrev":
        return torch.func.jacrev(lambda u: loss(u, b, reduction="none"))(a)
    if kind == "vmap":
        return torch.func.vmap(lambda u: loss(u, b))(torch.stack([a, 0.5 * a]))
    if kind == "vmap_both":  # the targets batched too
        batch_b = torch.stack([b, b.flip(0)])
        return torch.func.vmap(loss)(torch.stack([a, 0.5 * a]), batch_b)
    if kind == "jvp":
        return torch.func.jvp(lambda u: loss(u, b), (a,), (torch.ones_like(a),))
    if kind == "hessian":
        return torch.func.hessian(lambda u: loss(u, b))(a)
    # per-example gradients, the use torch.func documents: vmap over grad
    return torch.func.vmap(torch.func.grad(lambda u, v: loss(u[None], v[None])))(a, b)


TRANSFORMS = ["grad", "jacrev", "vmap", "vmap_both", "vmap_grad", "jvp", "hessian"]


@pytest.mark.parametrize("kind", TRANSFORMS)
@pytest.mark.parametrize("name", LOSSES)
def test_torch_func_transforms_match_torch(name: str, kind: str) -> None:
    a, b, options = problem(name)
    if kind == "jacrev":
        options = {k: v for k, v in options.items() if k != "reduction"}

    def ours(u: torch.Tensor, v: torch.Tensor, **kw: Any) -> torch.Tensor:
        return getattr(F, name)(u, v, **{**options, **kw})

    def torchs(u: torch.Tensor, v: torch.Tensor, **kw: Any) -> torch.Tensor:
        return getattr(TF, name)(u, v, **{**options, **kw})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kl_div's batchmean of one row
        expected = _transform(kind, torchs, a, b)
        got = _transform(kind, ours, a, b)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["grad", "jacrev"])
def test_fused_runs_under_grad_transforms(kind: str) -> None:
    a, b, _ = problem("cross_entropy")

    def ours(u: torch.Tensor, v: torch.Tensor, **kw: Any) -> torch.Tensor:
        return F.cross_entropy(u, v, impl="fused", label_smoothing=0.1, **kw)

    def torchs(u: torch.Tensor, v: torch.Tensor, **kw: Any) -> torch.Tensor:
        return TF.cross_entropy(u, v, label_smoothing=0.1, **kw)

    expected = _transform(kind, torchs, a, b)
    torch.testing.assert_close(_transform(kind, ours, a, b), expected, rtol=1e-10, atol=1e-12)


def test_fused_refuses_vmap_by_name() -> None:
    a, b, _ = problem("cross_entropy")
    with pytest.raises(ValueError, match=r"impl='fused' cannot run under torch.func.vmap"):
        torch.func.vmap(lambda u: F.cross_entropy(u, b, impl="fused"))(torch.stack([a, a]))


@pytest.mark.parametrize("kind", ["jvp", "hessian"])
def test_fused_refuses_forward_mode_by_name(kind: str) -> None:
    a, b, _ = problem("cross_entropy")
    with pytest.raises(ValueError, match=r"impl='fused' has no forward-mode derivative"):
        _transform(kind, lambda u, v, **kw: F.cross_entropy(u, v, impl="fused", **kw), a, b)


def test_vmap_over_something_else_keeps_the_fused_path() -> None:
    """vmap over a scale, the logits not batched: the fused kernel runs as usual."""
    a, b, _ = problem("cross_entropy")
    scales = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    got = torch.func.vmap(lambda s: s * F.cross_entropy(a, b, impl="fused"))(scales)
    torch.testing.assert_close(got, scales * TF.cross_entropy(a, b), rtol=1e-12, atol=0)


def test_out_of_range_target_under_vmap_is_an_error() -> None:
    a, b, _ = problem("cross_entropy")
    bad = torch.stack([b, torch.tensor([0, 1, 7, 2])])
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 5\)"):
        torch.func.vmap(F.cross_entropy)(torch.stack([a, a]), bad)


# ----------------------------------------------------------------------------------------
# meta tensors: shapes, as torch gives them


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name", LOSSES)
def test_meta_tensors_give_torchs_shape(name: str, reduction: str) -> None:
    a, b, options = problem(name, device="meta")
    options = {**options, "reduction": reduction}
    got = getattr(F, name)(a, b, **options)
    expected = getattr(TF, name)(a, b, **options)
    assert got.device.type == "meta"
    assert (got.shape, got.dtype) == (expected.shape, expected.dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_meta_tensors_on_the_fused_path(reduction: str) -> None:
    x = torch.empty(6, 7, device="meta", requires_grad=True)
    target = torch.empty(6, dtype=torch.int64, device="meta")
    loss = F.cross_entropy(x, target, impl="fused", reduction=reduction)
    assert loss.shape == ((6,) if reduction == "none" else ())
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert grad.shape == x.shape and grad.device.type == "meta"


# ----------------------------------------------------------------------------------------
# hostile arguments: torch's answer or an error naming the argument

X, Y = torch.randn(3, 5), torch.tensor([0, 1, 4])
P, Q = torch.rand(3, 5), torch.rand(3, 5)

HOSTILE = [
    ("cross_entropy", {"ignore_index": 1.5}, TypeError, "ignore_index"),
    ("cross_entropy", {"ignore_index": True}, TypeError, "ignore_index"),
    ("cross_entropy", {"ignore_index": "x"}, TypeError, "ignore_index"),
    ("cross_entropy", {"softcap": math.inf}, ValueError, "softcap"),
    ("cross_entropy", {"softcap": math.nan}, ValueError, "softcap"),
    ("cross_entropy", {"softcap": -1.0}, ValueError, "softcap"),
    ("cross_entropy", {"softcap": 0}, ValueError, "softcap"),
    ("cross_entropy", {"softcap": "2"}, TypeError, "softcap"),
    ("cross_entropy", {"softcap": True}, TypeError, "softcap"),
    ("cross_entropy", {"label_smoothing": math.nan}, ValueError, "label_smoothing"),
    ("cross_entropy", {"label_smoothing": 1.5}, ValueError, "label_smoothing"),
    ("cross_entropy", {"label_smoothing": True}, TypeError, "label_smoothing"),
    ("cross_entropy", {"z_loss": math.inf}, ValueError, "z_loss"),
    ("cross_entropy", {"z_loss": math.nan}, ValueError, "z_loss"),
    ("cross_entropy", {"z_loss": -0.1}, ValueError, "z_loss"),
    ("cross_entropy", {"inplace_backward": 1}, TypeError, "inplace_backward"),
    ("cross_entropy", {"impl": "cuda"}, ValueError, "impl"),
    ("cross_entropy", {"impl": None}, ValueError, "impl"),
    ("cross_entropy", {"reduction": None}, ValueError, "reduction"),
    ("cross_entropy", {"reduction": "avg"}, ValueError, "reduction"),
    ("cross_entropy", {"weight": [1.0] * 5}, TypeError, "weight"),
    ("cross_entropy", {"weight": torch.ones(4)}, ValueError, "weight"),
    ("cross_entropy", {"weight": torch.ones(5, dtype=torch.int64)}, TypeError, "weight"),
    ("cross_entropy", {"ignore_index": 2**70}, ValueError, "ignore_index"),
    ("cross_entropy", {"weight": torch.ones(5, device="meta")}, ValueError, "weight"),
    ("nll_loss", {"ignore_index": 2.0}, TypeError, "ignore_index"),
    ("nll_loss", {"weight": torch.ones(5, device="meta")}, ValueError, "weight"),
    ("nll_loss", {"weight": torch.ones(2)}, ValueError, "weight"),
    ("kl_div", {"log_target": 1}, TypeError, "log_target"),
    ("kl_div", {"reduction": "max"}, ValueError, "reduction"),
    ("smooth_l1_loss", {"beta": -1.0}, ValueError, "beta"),
    ("smooth_l1_loss", {"beta": math.nan}, ValueError, "beta"),
    ("smooth_l1_loss", {"beta": "1"}, TypeError, "beta"),
    ("huber_loss", {"delta": 0.0}, ValueError, "delta"),
    ("huber_loss", {"delta": math.nan}, ValueError, "delta"),
    ("huber_loss", {"delta": True}, TypeError, "delta"),
    ("binary_cross_entropy_with_logits", {"pos_weight": [2.0]}, TypeError, "pos_weight"),
    ("binary_cross_entropy", {"weight": "w"}, TypeError, "weight"),
    ("mse_loss", {"weight": 2.0}, TypeError, "weight"),
]


@pytest.mark.parametrize(("name", "kwargs", "error", "argument"), HOSTILE, ids=str)
def test_hostile_arguments_name_the_argument(
    name: str, kwargs: dict[str, Any], error: type, argument: str
) -> None:
    a, b = {"cross_entropy": (X, Y), "nll_loss": (X, Y), "binary_cross_entropy": (P, Q)}.get(
        name, (X, Q)
    )
    for impl in ("fused", "torch") if name == "cross_entropy" and "impl" not in kwargs else ("",):
        extra = {"impl": impl} if impl else {}
        with pytest.raises(error, match=f"^{argument}: "):
            getattr(F, name)(a, b, **kwargs, **extra)


@pytest.mark.parametrize("impl", ["fused", "torch", "auto"])
def test_hostile_tensors_name_the_argument(impl: str) -> None:
    with pytest.raises(TypeError, match=r"^input: expected floating-point"):
        F.cross_entropy(torch.ones(3, 5, dtype=torch.int64), Y, impl=impl)
    with pytest.raises(ValueError, match=r"^target: expected a tensor on the input's device"):
        F.cross_entropy(X, Y.to("meta"), impl=impl)


def test_nll_loss_hostile_tensors_name_the_argument() -> None:
    with pytest.raises(TypeError, match=r"^input: expected floating-point"):
        F.nll_loss(torch.ones(3, 5, dtype=torch.int64), Y)
    with pytest.raises(ValueError, match=r"^target: expected a tensor on the input's device"):
        F.nll_loss(X, Y.to("meta"))


MODULE_HOSTILE = [
    ("CrossEntropyLoss", {"ignore_index": 1.5}, TypeError, "ignore_index"),
    ("CrossEntropyLoss", {"label_smoothing": -0.1}, ValueError, "label_smoothing"),
    ("CrossEntropyLoss", {"softcap": math.inf}, ValueError, "softcap"),
    ("CrossEntropyLoss", {"z_loss": math.nan}, ValueError, "z_loss"),
    ("CrossEntropyLoss", {"impl": "gpu"}, ValueError, "impl"),
    ("CrossEntropyLoss", {"inplace_backward": "yes"}, TypeError, "inplace_backward"),
    ("CrossEntropyLoss", {"reduction": "avg"}, ValueError, "reduction"),
    ("CrossEntropyLoss", {"weight": [1.0, 2.0]}, TypeError, "weight"),
    ("NLLLoss", {"ignore_index": None}, TypeError, "ignore_index"),
    ("BCEWithLogitsLoss", {"pos_weight": 2.0}, TypeError, "pos_weight"),
    ("KLDivLoss", {"log_target": None}, TypeError, "log_target"),
    ("KLDivLoss", {"reduction": "elementwise"}, ValueError, "reduction"),
    ("SmoothL1Loss", {"beta": -2.0}, ValueError, "beta"),
    ("HuberLoss", {"delta": -1.0}, ValueError, "delta"),
    ("MSELoss", {"reduction": 0}, ValueError, "reduction"),
]


@pytest.mark.parametrize(("name", "kwargs", "error", "argument"), MODULE_HOSTILE, ids=str)
def test_module_constructors_check_their_arguments(
    name: str, kwargs: dict[str, Any], error: type, argument: str
) -> None:
    with pytest.raises(error, match=f"^{argument}: "):
        getattr(ct, name)(**kwargs)


def test_check_writable_accepts_what_torch_writes_into() -> None:
    conventions.check_writable("x", torch.randn(3, 4) * 1, "test")
    conventions.check_writable("x", torch.randn(4, 8)[:, :5], "test")
    with pytest.raises(ValueError, match="share memory"):
        conventions.check_writable("x", torch.randn(3, 1).expand(3, 4), "test")


def test_fused_under_torch_compile_is_eager_exact() -> None:
    """torch.compile traces the fused path with fake tensors: the compiled step must still
    run the kernel (never the shape-only branch meant for meta tensors)."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(8, 6, dtype=torch.float64, generator=g)
    target = torch.randint(0, 6, (8,), generator=g)

    def step(x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(2 * x, target, impl="fused", label_smoothing=0.1)

    results = []
    compiled = torch.compile(step, backend="aot_eager")
    for fn in (step, compiled):
        x = logits.clone().requires_grad_()
        loss = fn(x)
        loss.backward()
        results.append((loss.detach(), x.grad))
    assert torch.equal(results[1][0], results[0][0])
    assert torch.equal(results[1][1], results[0][1])
    # the label check still reads the values (it is never skipped as if they were fake)
    target[3] = 6
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 6\)"):
        compiled(logits)


def test_fused_backward_allocates_nothing_of_the_logits_size() -> None:
    """The first-order backward hands out the kernel's buffer: no operation in it makes a
    logits-sized tensor (a zero gradient materialised for the buffer output once cost
    more than the whole sweep)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Sizes(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            inputs = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
            for value in out if isinstance(out, tuple | list) else (out,):
                # new memory only: views and aliases of an argument (detach) are free
                if (
                    isinstance(value, torch.Tensor)
                    and value.untyped_storage().data_ptr() not in inputs
                ):
                    self.largest = max(self.largest, value.numel())
            return out

    x = torch.randn(64, 50, requires_grad=True)
    loss = F.cross_entropy(x, torch.randint(0, 50, (64,)), impl="fused")
    with Sizes() as sizes:
        loss.backward()
    assert sizes.largest < x.numel()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothed", [False, True], ids=["plain", "all-options"])
def test_fused_repeated_backward_of_a_retained_graph_accumulates(
    reduction: str, smoothed: bool
) -> None:
    """backward(retain_graph=True) four times adds the gradient four times, as torch does:
    the kernel's gradient is handed out once (autograd keeps it as .grad and adds into it),
    later backwards compute it again. Before, the third backward failed ("modified by an
    inplace operation") because .grad was the saved buffer."""
    torch.manual_seed(0)
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 5, 2, -100, 3])
    options: dict[str, Any] = {}
    if smoothed:
        options = {
            "label_smoothing": 0.1,
            "z_loss": 1e-3,
            "softcap": 3.0,
            "weight": torch.rand(6, dtype=torch.float64),
        }
    rows = torch.arange(1.0, 6.0, dtype=torch.float64)

    def total(loss: torch.Tensor) -> torch.Tensor:
        return (loss * rows).sum() if reduction == "none" else loss * 1.0

    loss = total(F.cross_entropy(x, y, reduction=reduction, impl="fused", **options))
    for _ in range(4):
        loss.backward(retain_graph=True)
    reference = x.detach().clone().requires_grad_(True)
    total(F.cross_entropy(reference, y, reduction=reduction, impl="torch", **options)).backward()
    assert reference.grad is not None and x.grad is not None
    torch.testing.assert_close(x.grad, 4 * reference.grad, rtol=1e-12, atol=1e-14)


def test_ignore_index_and_axis_take_numpy_integers() -> None:
    """A NumPy integer scalar is an integer (``operator.index``): the same answer as the
    Python int on every path; a NumPy bool is not one, as a Python bool is not."""
    import numpy as np

    import crossentropy
    from crossentropy.torch import linear_cross_entropy

    torch.manual_seed(0)
    logits = torch.randn(4, 5, dtype=torch.float64)
    target = torch.tensor([0, 4, 2, 1])
    want = TF.cross_entropy(logits, target, ignore_index=2)
    for impl in ("fused", "torch"):
        got = F.cross_entropy(logits, target, ignore_index=np.int64(2), impl=impl)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    h, w = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(
        linear_cross_entropy(h, w, target, ignore_index=np.int32(2)),
        TF.cross_entropy(h @ w.T, target, ignore_index=2),
        rtol=1e-12,
        atol=0,
    )
    core = crossentropy.sparse_softmax_cross_entropy(
        logits.numpy(), target.numpy(), axis=np.int8(-1), ignore_index=np.uint8(2)
    )
    np.testing.assert_allclose(core, want.item(), rtol=1e-12)
    with pytest.raises(TypeError, match=r"^ignore_index: expected an integer"):
        F.cross_entropy(logits, target, ignore_index=np.bool_(True))
