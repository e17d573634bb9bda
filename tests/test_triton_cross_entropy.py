"""The Triton cross-entropy kernels, run by Triton's interpreter on CPU tensors
(TRITON_INTERPRET=1, set in the root conftest.py), against the float64 references: the
library's core under autograd (``impl="torch"``), ``torch.nn.functional.cross_entropy``
where it has the arguments, and the kernels' own readable reference."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as TF

import crossentropy
import crossentropy.torch as ct
from crossentropy.triton import cross_entropy, interpreted
from crossentropy.triton.cross_entropy_kernels import _forward_kernel, reference

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy, in masked lanes

ROWS, CLASSES = 37, 23  # 23 classes in blocks of 16: a ragged last block


def test_kernels_run_under_the_interpreter():
    assert os.environ["TRITON_INTERPRET"] == "1" and interpreted(_forward_kernel)


def problem(dtype, *, soft=False, weighted=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(ROWS, CLASSES, generator=g, dtype=torch.float64) * 3).to(dtype)
    if soft:
        target = torch.softmax(torch.randn(ROWS, CLASSES, generator=g, dtype=torch.float64), 1)
        target = target.to(dtype)
    else:
        target = torch.randint(0, CLASSES, (ROWS,), generator=g)
        target[::5] = -100
    weight = None
    if weighted:
        weight = (torch.rand(CLASSES, generator=g, dtype=torch.float64) + 0.1).to(dtype)
        weight[3] = 0.0  # a zero-weight class: rows targeting it contribute nothing
        if not soft:
            target[1] = 3
    return logits, target, weight


def run(function, logits, reduction, upstream=None):
    x = logits.detach().clone().requires_grad_()
    loss = function(x)
    if reduction == "none":
        (loss * upstream.to(loss.dtype)).sum().backward()
    else:
        loss.backward()
    return loss.detach(), x.grad


def assert_near(ours, expected, rtol):
    """Max abs difference within rtol of the reference's largest magnitude."""
    scale = expected.abs().max().clamp_min(1e-30)
    error = (ours.double() - expected.double()).abs().max()
    assert error <= rtol * scale, f"error {float(error):.3g} > {rtol:g} x {float(scale):.3g}"


COMBINATIONS = list(
    itertools.product(
        [False, True],  # soft (probability) targets
        [False, True],  # class weights
        ["mean", "sum", "none"],
        [0.0, 0.1],  # label smoothing
        [0.0, 1e-2],  # z-loss
        [None, 3.0],  # soft cap
    )
)


@pytest.mark.parametrize(
    ("soft", "weighted", "reduction", "smoothing", "z_loss", "cap"), COMBINATIONS
)
def test_float32_equals_float64_reference(soft, weighted, reduction, smoothing, z_loss, cap):
    logits, target, weight = problem(torch.float32, soft=soft, weighted=weighted)
    upstream = torch.rand(ROWS, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    options = {"label_smoothing": smoothing, "z_loss": z_loss, "softcap": cap}
    options |= {"reduction": reduction}
    w64 = None if weight is None else weight.double()
    ours, grad = run(
        lambda x: cross_entropy(x, target, weight=weight, block_classes=16, **options),
        logits,
        reduction,
        upstream,
    )
    expected, expected_grad = run(
        lambda x: ct.cross_entropy(
            x, target.double() if soft else target, weight=w64, impl="torch", **options
        ),
        logits.double(),
        reduction,
        upstream,
    )
    assert ours.dtype == torch.float32 and grad.dtype == torch.float32
    assert_near(ours, expected, 1e-5)
    assert_near(grad, expected_grad, 1e-5)
    if z_loss == 0 and cap is None:  # torch has these arguments: a third opinion
        torch_loss, torch_grad = run(
            lambda x: TF.cross_entropy(
                x,
                target.double() if soft else target,
                weight=w64,
                reduction=reduction,
                label_smoothing=smoothing,
            ),
            logits.double(),
            reduction,
            upstream,
        )
        if not (reduction == "mean" and not soft and weighted):  # same but for 0/0 rows
            assert_near(ours, torch_loss, 1e-5)
        assert_near(grad, torch_grad, 1e-5)


@pytest.mark.parametrize("soft", [False, True])
def test_float64_equals_the_readable_reference(soft):
    logits, target, weight = problem(torch.float64, soft=soft, weighted=True, seed=1)
    options = {"label_smoothing": 0.2, "z_loss": 0.05, "softcap": 2.5}
    loss, grad = run(
        lambda x: cross_entropy(x, target, weight=weight, reduction="sum", **options),
        logits,
        "sum",
    )
    rows, rows_grad = reference(logits, target, weight=weight, **options)
    # the kernels' tanh (series below 1/8, else from one exponential) is good to ~1e-12
    torch.testing.assert_close(loss, rows.sum(), rtol=1e-11, atol=0)
    torch.testing.assert_close(grad, rows_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("classes", [5000, 4096, 1])
def test_default_blocks_with_wide_and_degenerate_rows(classes):
    """Default tiling: 5000 classes stream in two 4096-wide slices (the second ragged);
    4096 in exactly one; a single class has loss 0 and gradient 0."""
    g = torch.Generator().manual_seed(classes)
    logits = torch.randn(6, classes, generator=g) * 4
    target = torch.randint(0, classes, (6,), generator=g)
    loss, grad = run(lambda x: cross_entropy(x, target, label_smoothing=0.1), logits, "mean")
    expected, expected_grad = run(
        lambda x: TF.cross_entropy(x, target, label_smoothing=0.1), logits.double(), "mean"
    )
    assert_near(loss, expected, 1e-5)
    assert_near(grad, expected_grad, 1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("soft", [False, True])
def test_half_precision_is_computed_in_float32(dtype, soft):
    """Against float64 on the same rounded inputs: the loss and each gradient entry are
    rounded once from float32 to the dtype (half an ulp of themselves, plus float32 noise)."""
    logits, target, weight = problem(dtype, soft=soft, weighted=True, seed=2)
    options = {"label_smoothing": 0.1, "z_loss": 1e-3}
    loss, grad = run(lambda x: cross_entropy(x, target, weight=weight, **options), logits, "mean")
    assert loss.dtype == dtype and grad.dtype == dtype
    w64 = weight.double()
    t64 = target.double() if soft else target
    expected, expected_grad = run(
        lambda x: ct.cross_entropy(x, t64, weight=w64, impl="torch", **options),
        logits.double(),
        "mean",
    )
    resolution = torch.finfo(dtype).eps
    assert abs(float(loss) - float(expected)) <= resolution * abs(float(expected))
    subnormal = torch.finfo(dtype).tiny * resolution  # the spacing below the normal range
    tolerance = resolution * expected_grad.abs() + subnormal + 1e-6 * expected_grad.abs().max()
    assert torch.all((grad.double() - expected_grad).abs() <= tolerance)


def test_inplace_backward_writes_the_gradient_into_the_logits():
    logits, target, _ = problem(torch.float32, seed=3)
    x = logits.clone().requires_grad_()
    y = x * 1.0  # the logits buffer the loss may overwrite
    loss = cross_entropy(y, target, label_smoothing=0.1, inplace_backward=True)
    grad_y = torch.autograd.grad(loss, y)[0]
    assert grad_y.data_ptr() == y.data_ptr()  # the buffer itself
    _, expected = run(lambda z: TF.cross_entropy(z, target, label_smoothing=0.1), logits, "mean")
    torch.testing.assert_close(grad_y, expected, rtol=1e-5, atol=1e-7)


def test_edge_cases():
    # every target ignored, and zero total weight: a mean over nothing is 0, gradient 0
    logits = torch.randn(5, 7)
    for target, weight in [
        (torch.full((5,), -100), None),
        (torch.zeros(5, dtype=torch.int64), torch.tensor([0.0, 1, 1, 1, 1, 1, 1])),
    ]:
        loss, grad = run(
            lambda x, t=target, w=weight: cross_entropy(x, t, weight=w), logits, "mean"
        )
        assert loss.item() == 0.0 and torch.all(grad == 0)
    # an empty batch
    loss, grad = run(
        lambda x: cross_entropy(x, torch.zeros(0, dtype=torch.int64)), torch.zeros(0, 7), "mean"
    )
    assert loss.item() == 0.0 and grad.shape == (0, 7)
    # -inf logits off the target: finite loss, zero gradient there; on the target: +inf
    x = torch.tensor([[0.0, -math.inf, 1.0], [2.0, 0.0, -math.inf]])
    loss, grad = run(
        lambda z: cross_entropy(z, torch.tensor([0, 1]), reduction="none"), x, "none", torch.ones(2)
    )
    expected = TF.cross_entropy(x.double(), torch.tensor([0, 1]), reduction="none")
    torch.testing.assert_close(loss.double(), expected, rtol=1e-6, atol=0)
    assert grad[0, 1] == 0 and grad[1, 2] == 0
    inf_loss = cross_entropy(x, torch.tensor([1, 2]), reduction="none")
    assert torch.all(inf_loss == math.inf)
    # equal logits far from 0 (shift invariance): log C to float32 precision
    flat = cross_entropy(torch.full((3, 4), 1e6), torch.tensor([0, 1, 3]))
    assert abs(flat.item() - math.log(4)) <= 2 * torch.finfo(torch.float32).eps * math.log(4)


def test_a_class_index_out_of_range_gives_nan_not_a_host_check():
    """No value check on the host (it would synchronise): the row's loss is NaN instead."""
    loss = cross_entropy(torch.randn(3, 4), torch.tensor([0, 4, -1]), reduction="none")
    assert loss[0].isfinite() and loss[1].isnan() and loss[2].isnan()


def test_no_host_synchronisation(monkeypatch):
    """Neither the wrappers nor the launchers read a tensor's value on the host: every way
    of doing so raises when called from crossentropy's own code (Triton's interpreter,
    which reads the tensors to run the kernel on the CPU, is not crossentropy's code)."""

    def forbid(name):
        original = getattr(torch.Tensor, name)

        def guarded(self, *args, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("crossentropy."):
                raise AssertionError(f"host synchronisation: Tensor.{name} from {caller}")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, guarded)

    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        forbid(name)
    logits, target, weight = problem(torch.float32, weighted=True, seed=4)
    x = logits.clone().requires_grad_()
    cross_entropy(x, target, weight=weight, label_smoothing=0.1, z_loss=1e-3).backward()
    x2 = logits.clone().requires_grad_()
    ct.cross_entropy(x2, target, impl="triton").backward()
    assert x.grad is not None and x2.grad is not None


def test_torch_compile_fullgraph_keeps_the_kernels_whole():
    logits, target, weight = problem(torch.float32, weighted=True, seed=5)

    def step(x):
        return ct.cross_entropy(x * 2, target, weight=weight, softcap=5.0, impl="triton")

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss, grad = run(compiled, logits, "mean")
    expected, expected_grad = run(step, logits, "mean")
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("shape", [(4, 7, 3, 2), (7,)], ids=["NCd1d2", "C"])
def test_functional_impl_triton_takes_every_layout(shape, soft):
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(shape, generator=g, dtype=torch.float64)
    axis = 1 if len(shape) > 1 else 0
    if soft:
        target = torch.softmax(torch.randn(shape, generator=g, dtype=torch.float64), axis)
    else:
        target = torch.randint(0, 7, shape[:axis] + shape[axis + 1 :], generator=g)
    for reduction in ("none", "mean"):
        up = torch.rand(shape[:axis] + shape[axis + 1 :], generator=g, dtype=torch.float64)
        ours, grad = run(
            lambda x, r=reduction: ct.cross_entropy(
                x, target, reduction=r, label_smoothing=0.1, impl="triton"
            ),
            logits,
            reduction,
            up,
        )
        expected, expected_grad = run(
            lambda x, r=reduction: TF.cross_entropy(x, target, reduction=r, label_smoothing=0.1),
            logits,
            reduction,
            up,
        )
        torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_auto_keeps_cpu_tensors_off_triton(monkeypatch):
    def refuse():
        raise AssertionError("impl='auto' chose Triton for CPU tensors")

    monkeypatch.setattr(ct.dispatch, "triton_module", refuse)
    logits, target, _ = problem(torch.float32)
    expected = TF.cross_entropy(logits, target)
    torch.testing.assert_close(ct.cross_entropy(logits, target), expected)
    assert not ct.dispatch.triton_available(logits.device)


def test_missing_triton_names_the_extra(monkeypatch):
    for name in [
        m for m in sys.modules if m == "triton" or m.startswith(("triton.", "crossentropy.triton"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "triton", None)
    monkeypatch.delattr(crossentropy, "triton")
    with pytest.raises(ImportError, match=r"pip install crossentropy\[triton\]"):
        ct.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), impl="triton")
    with pytest.raises(ImportError, match=r"pip install crossentropy\[triton\]"):
        ct.linear_cross_entropy(
            torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 1]), impl="triton"
        )


def test_cpu_tensors_without_the_interpreter_are_refused():
    """A fresh process without TRITON_INTERPRET: the kernels are compiled ones, and CPU
    tensors get a ValueError that says what to do."""
    script = textwrap.dedent(
        """
        import torch
        import crossentropy.torch as ct
        for call in (
            lambda: ct.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), impl="triton"),
            lambda: ct.linear_cross_entropy(
                torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 1]), impl="triton"
            ),
        ):
            try:
                call()
            except ValueError as error:
                print(error)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    src = str(Path(__file__).parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout + out.stderr
    assert lines[0].startswith("input: impl='triton' runs on CUDA tensors; got a tensor on cpu")
    assert lines[1].startswith("input: impl='triton' runs on CUDA tensors; got a tensor on cpu")
    assert all("TRITON_INTERPRET=1" in line for line in lines)


def test_bad_arguments_name_themselves():
    x, t = torch.randn(3, 4), torch.tensor([0, 1, 2])
    with pytest.raises(TypeError, match="logits: expected float32"):
        cross_entropy(x.int(), t)
    with pytest.raises(ValueError, match="labels: expected shape"):
        cross_entropy(x, t[:2])
    with pytest.raises(TypeError, match="target: expected integer class indices"):
        cross_entropy(x, t.float())
    with pytest.raises(ValueError, match="ignore_index: not supported with probability"):
        cross_entropy(x, torch.full((3, 4), 0.25), ignore_index=0)
    with pytest.raises(ValueError, match="weight: expected one weight per class"):
        cross_entropy(x, t, weight=torch.ones(3))
    with pytest.raises(ValueError, match="block_classes: expected a power of two"):
        cross_entropy(x, t, block_classes=24)
    with pytest.raises(ValueError, match="label_smoothing"):
        cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="inplace_backward: needs logits whose rows"):
        cross_entropy(torch.randn(4, 3).t(), t, inplace_backward=True)
