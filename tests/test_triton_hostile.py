"""The Triton kernels (under Triton's interpreter, TRITON_INTERPRET=1 from the root
conftest.py) attacked as a hostile caller would: targets outside the classes and outside
their dtype, buffers surrounded by poison, in-place writes where PyTorch refuses them, a
class weight or a second derivative the kernels cannot give, empty class axes, wrong
argument types. Each ends with the exact answer (torch.nn.functional in float64) or a clear
error; a kernel never reads or writes outside its buffers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF

from crossentropy.triton import cross_entropy, linear_cross_entropy

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy, in masked lanes

NAN = float("nan")
I64 = torch.iinfo(torch.int64)


def poisoned(values: torch.Tensor, pad: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``values`` copied into the middle of a NaN-filled buffer (``pad`` rows above and
    below, ``pad`` columns either side, so the rows are not contiguous with each other);
    returns (buffer, view). A read outside the view makes a NaN, a write outside it
    changes the buffer's NaN border."""
    rows, columns = values.shape if values.ndim == 2 else (1, values.shape[0])
    buffer = torch.full((rows + 2 * pad, columns + 2 * pad), NAN, dtype=values.dtype)
    view = buffer[pad : pad + rows, pad : pad + columns]
    view.copy_(values.reshape(rows, columns))
    return buffer, view if values.ndim == 2 else view[0]


def border_is_untouched(buffer: torch.Tensor, pad: int = 3) -> bool:
    inner = torch.zeros_like(buffer, dtype=torch.bool)
    inner[pad:-pad, pad:-pad] = True
    return bool(buffer[~inner].isnan().all())


# (targets, ignore_index): class indices outside [0, C), dtype extremes, and narrow dtypes
# whose values equal the ignore_index only when wrapped
BAD_TARGETS = [
    (torch.tensor([0, 37, 36, -100, -1]), -100),
    (torch.tensor([0, I64.max, 36, -100, I64.min]), -100),
    (torch.tensor([0, 255, 36, 1, 128], dtype=torch.uint8), -1),
    (torch.tensor([0, -100, 36, 1, 127], dtype=torch.int8), 156),
    (torch.tensor([0, 2**31 - 1, 36, -(2**31), 5], dtype=torch.int32), -(2**31) - 1),
]


@pytest.mark.parametrize(("target", "ignore_index"), BAD_TARGETS)
def test_cross_entropy_never_reads_or_writes_outside_its_buffers(target, ignore_index):
    classes = 37  # blocks of 16: a ragged last block
    g = torch.Generator().manual_seed(0)
    values = torch.randn(5, classes, generator=g, dtype=torch.float64)
    weights = torch.rand(classes, generator=g, dtype=torch.float64) + 0.5
    w_buffer, weight = poisoned(weights)
    leaf = torch.full((11, classes + 6), NAN, dtype=torch.float64)
    leaf[3:8, 3:-3] = values
    leaf.requires_grad_()
    computed = leaf * 1.0  # the logits are a computed tensor: inplace_backward may use it
    logits = computed[3:8, 3:-3]
    options = {"weight": weight, "ignore_index": ignore_index, "block_classes": 16}

    losses = cross_entropy(logits, target, reduction="none", inplace_backward=True, **options)
    losses.sum().backward()

    wide = target.to(torch.int64)
    ok = (wide >= 0) & (wide < classes)
    bad = ~ok & (wide != ignore_index)
    assert bad.any()
    expected = torch.zeros(5, dtype=torch.float64)
    x = values.clone().requires_grad_()
    per_row = TF.cross_entropy(x[ok], wide[ok], weight=weights, reduction="none")
    per_row.sum().backward()
    expected[ok] = per_row.detach()
    assert losses[bad].isnan().all()
    torch.testing.assert_close(losses[~bad], expected[~bad], rtol=1e-12, atol=1e-14)
    grad = leaf.grad[3:8, 3:-3]
    assert grad[bad].isnan().all()
    torch.testing.assert_close(grad[~bad], x.grad[~bad], rtol=1e-12, atol=1e-14)
    assert border_is_untouched(computed.detach())
    assert border_is_untouched(w_buffer)
    assert torch.equal(w_buffer[3, 3:-3], weights)


@pytest.mark.parametrize(("target", "ignore_index"), BAD_TARGETS[:3])
def test_linear_cross_entropy_never_reads_or_writes_outside_its_buffers(target, ignore_index):
    vocabulary, hidden = 37, 20
    g = torch.Generator().manual_seed(1)
    h = torch.randn(5, hidden, generator=g, dtype=torch.float64)
    w = torch.randn(vocabulary, hidden, generator=g, dtype=torch.float64)
    b = torch.randn(vocabulary, generator=g, dtype=torch.float64)
    weights = torch.rand(vocabulary, generator=g, dtype=torch.float64) + 0.5
    buffers, views = zip(*(poisoned(t) for t in (h, w, b, weights)), strict=True)
    wide = target.to(torch.int64)
    ok = (wide >= 0) & (wide < vocabulary)
    bad = ~ok & (wide != ignore_index)

    losses = linear_cross_entropy(
        views[0], views[1], target, linear_bias=views[2], weight=views[3],
        ignore_index=ignore_index, reduction="none",
    )  # fmt: skip
    expected = TF.cross_entropy(h[ok] @ w.T + b, wide[ok], weight=weights, reduction="none")
    assert losses[bad].isnan().all()
    torch.testing.assert_close(losses[ok], expected, rtol=1e-12, atol=1e-14)
    assert (losses[~ok & ~bad] == 0).all()

    # the gradient of the rows that have one (bad rows' NaN would spread over dW)
    hh, ww, bb = (v.clone().requires_grad_() for v in views[:3])
    kept = torch.where(bad, ignore_index, wide)
    loss = linear_cross_entropy(hh, ww, kept, linear_bias=bb, weight=views[3],
                                ignore_index=ignore_index, reduction="sum")  # fmt: skip
    loss.backward()
    h2, w2, b2 = (t.clone().requires_grad_() for t in (h, w, b))
    TF.cross_entropy(h2[ok] @ w2.T + b2, wide[ok], weight=weights, reduction="sum").backward()
    torch.testing.assert_close(hh.grad[ok], h2.grad[ok], rtol=1e-10, atol=1e-12)
    assert (hh.grad[~ok] == 0).all()
    torch.testing.assert_close(ww.grad, w2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(bb.grad, b2.grad, rtol=1e-10, atol=1e-12)
    assert all(border_is_untouched(buffer) for buffer in buffers)


def test_no_classes_reads_nothing():
    # before: a counted target with zero classes read x[row, 0] past the logits (and a
    # class weight past the weights): a segfault under the interpreter
    logits = torch.zeros(2, 0, dtype=torch.float64)
    target = torch.tensor([0, -100])
    losses = cross_entropy(logits, target, reduction="none")
    assert losses[0].isnan() and losses[1] == 0
    assert cross_entropy(logits, target, weight=torch.zeros(0, dtype=torch.float64)).isnan()
    assert cross_entropy(logits, torch.tensor([-100, -100]), label_smoothing=0.5) == 0


def test_linear_no_classes():
    # before: ZeroDivisionError (eps / V, then the vocabulary split of a zero vocabulary)
    h = torch.randn(3, 4, dtype=torch.float64)
    w = torch.zeros(0, 4, dtype=torch.float64)
    losses = linear_cross_entropy(h, w, torch.tensor([0, -100, -100]), reduction="none")
    assert losses[0].isnan() and (losses[1:] == 0).all()
    ignored = torch.full((3,), -100)
    assert linear_cross_entropy(h, w, ignored, label_smoothing=0.1) == 0


# ------------------------------------------------------------------ refused, not wrong


def test_inplace_backward_refuses_a_leaf_and_views_of_it():
    # before: the gradient was written over the parameter, and x.grad shared its memory
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"^inplace_backward: would overwrite logits, a leaf"):
        cross_entropy(x, target, inplace_backward=True)
    with pytest.raises(ValueError, match=r"^inplace_backward: .* a view of a leaf"):
        cross_entropy(x[:, :4], target, inplace_backward=True)


def test_inplace_backward_refuses_rows_that_share_memory():
    # before: an expanded view's rows all wrote their gradient to one row (off by 7.07)
    row = torch.randn(1, 5, dtype=torch.float64, requires_grad=True) * 1.0
    target = torch.tensor([0, 1, 2])
    for logits in (row.expand(3, 5), row.new_zeros(9).as_strided((3, 5), (2, 1))):
        with pytest.raises(ValueError, match=r"^inplace_backward: .* do not overlap"):
            cross_entropy(logits, target, inplace_backward=True)


def test_class_weight_that_requires_grad_is_refused():
    # before: its gradient was silently None
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(5, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"^weight: the Triton kernels give the class weights"):
        cross_entropy(x, target, weight=weight)
    w = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^weight: the Triton kernels give the class weights"):
        linear_cross_entropy(x[:, :4], w, target, weight=weight)
    with torch.no_grad():  # no graph, nothing dropped
        expected = TF.cross_entropy(x, target, weight=weight)
        torch.testing.assert_close(cross_entropy(x, target, weight=weight), expected)


def test_second_derivative_is_refused_not_dropped():
    # before: autograd.grad(create_graph=True) returned a gradient without a graph, so a
    # gradient penalty added to the loss was silently missing from the step
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 2])
    for loss in (cross_entropy(x, target), linear_cross_entropy(x, w, target)):
        with pytest.raises(RuntimeError, match=r"no second derivative.*create_graph=True"):
            torch.autograd.grad(loss, x, create_graph=True)


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("ignore_index", 1.5, TypeError),  # before: int(1.5) = 1, class 1 silently ignored
        ("ignore_index", True, TypeError),
        ("ignore_index", 2**63, ValueError),  # before: a RuntimeError from torch.library
        ("weight", [1.0] * 5, TypeError),  # before: AttributeError
        ("weight", torch.ones(5, dtype=torch.complex128), TypeError),  # before: KeyError
        ("weight", torch.ones(5, dtype=torch.float64, device="meta"), ValueError),
        ("block_classes", 2**40, ValueError),  # before: the interpreter's InterpreterError
    ],
)
def test_cross_entropy_refuses_bad_arguments(option, value, error):
    x = torch.randn(3, 5, dtype=torch.float64)
    with pytest.raises(error, match=rf"^{option}: expected"):
        cross_entropy(x, torch.tensor([0, 1, 2]), **{option: value})


@pytest.mark.parametrize("target", [None, [0, 1, 2], torch.tensor([0, 1, 2], device="meta")])
def test_target_must_be_a_tensor_on_the_logits_device(target):
    # before: AttributeError for None and lists; a meta target gave a meta loss
    x = torch.randn(3, 5, dtype=torch.float64)
    w = torch.randn(6, 5, dtype=torch.float64)
    for call in (lambda: cross_entropy(x, target), lambda: linear_cross_entropy(x, w, target)):
        with pytest.raises((TypeError, ValueError), match=r"^target: expected a tensor"):
            call()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("splits", True),
        ("block_sizes", "abc"),
        ("block_sizes", (16, 2**20, 16)),
        ("linear_bias", [0.0] * 6),
        ("ignore_index", 0.5),
    ],
)
def test_linear_cross_entropy_refuses_bad_arguments(option, value):
    x = torch.randn(3, 5, dtype=torch.float64)
    w = torch.randn(6, 5, dtype=torch.float64)
    with pytest.raises((TypeError, ValueError), match=rf"^{option}: expected"):
        linear_cross_entropy(x, w, torch.tensor([0, 1, 2]), **{option: value})
