"""A fuzz of the fused kernel's ctypes boundary, against the float64 reference.

:func:`check` runs one case, through ``fused_cross_entropy`` (the checks and the kernel)
and through the kernel's launcher directly (``_kernel.launch``, where only the kernel's own
bounds test stands between a hostile target and memory), and compares every number with
:func:`crossentropy.gradients.sparse_softmax_cross_entropy` in float64. A case draws the
logits' dtype, shape, row stride, the gradient's destination (none, a buffer, the logits
themselves), the labels' integer dtype and values (with its extremes), ``ignore_index``
(inside or outside that dtype), class weights, smoothing, z-loss, soft cap and reduction.

``tests/test_kernel_safety.py`` drives it twice: with hypothesis in-process, and as a
script (``python tests/kernel_boundary_fuzz.py SEED CASES``) in a Python whose kernel was
built with AddressSanitizer and UBSan, where any access outside a buffer aborts the run.
"""

from __future__ import annotations

import sys

import numpy as np
import torch

from crossentropy import gradients
from crossentropy.torch import _kernel
from crossentropy.torch._fused import fused_cross_entropy

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
LABEL_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-4, torch.bfloat16: 2e-2, torch.float16: 4e-3}
"""Relative to the largest reference value (the gradient and loss are rounded once to the
logits' dtype; float32 keeps the kernel's exponential, about 2 ulp)."""


def hostile_values(label_dtype: torch.dtype, classes: int) -> list[int]:
    """Labels that are not classes: the dtype's extremes and the values next to [0, C)."""
    info = torch.iinfo(label_dtype)
    values = [info.min, info.max, -1, classes, classes + 1]
    return [v for v in values if info.min <= v <= info.max and not 0 <= v < classes]


def check(
    *,
    dtype: torch.dtype,
    rows: int,
    classes: int,
    pad: int,
    label_dtype: torch.dtype,
    ignore_index: int,
    bad: int | None,
    weighted: bool,
    eps: float,
    z_loss: float,
    softcap: float | None,
    reduction: str,
    grad_mode: str,
    seed: int,
) -> None:
    """One case. ``bad``: a label value to plant (an extreme of ``label_dtype`` or next to
    [0, C)), or ``None``; ``grad_mode``: ``"none"``, ``"buffer"`` or ``"inplace"``."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(rows, classes + pad, dtype=torch.float64, generator=generator) * 4
    info = torch.iinfo(label_dtype)
    target = torch.randint(0, min(classes, info.max + 1), (rows,), generator=generator)
    if info.min <= ignore_index <= info.max:
        target[torch.rand(rows, generator=generator) < 0.2] = ignore_index
    position = int(torch.randint(0, rows, (), generator=generator)) if rows else 0
    if bad is not None and rows:
        target[position] = bad
    target = target.to(label_dtype)
    weight = None
    if weighted:
        weight = torch.rand(classes, dtype=torch.float64, generator=generator) + 0.1
        weight[torch.rand(classes, generator=generator) < 0.2] = 0.0
    options = {
        "weight": weight,
        "ignore_index": ignore_index,
        "label_smoothing": eps,
        "z_loss": z_loss,
        "softcap": softcap,
        "reduction": reduction,
    }
    wanted = target.to(torch.int64)
    refused = bool(((wanted < 0) | (wanted >= classes)).logical_and(wanted != ignore_index).any())
    if refused:
        _expect_refusal(base.to(dtype)[:, :classes], target, options)
        _expect_kernel_refusal(base.to(dtype)[:, :classes], wanted, options, classes)
        return
    leaf = base.to(dtype, copy=True).requires_grad_(grad_mode != "none")
    logits = (leaf * 1 if grad_mode == "inplace" else leaf)[:, :classes]
    loss = fused_cross_entropy(logits, target, inplace_backward=grad_mode == "inplace", **options)
    x = base.to(dtype)[:, :classes].double().numpy()
    labels = wanted.numpy()
    w = None if weight is None else weight.numpy()
    ref_loss, ref_grad = gradients.sparse_softmax_cross_entropy(
        x, labels, **{**options, "weight": w}
    )
    _close("loss", loss.detach().double().numpy(), ref_loss, dtype)
    if grad_mode != "none":
        (loss.sum() if reduction == "none" else loss).backward()
        assert leaf.grad is not None
        grad = leaf.grad.double()
        _close("grad", grad[:, :classes].numpy(), ref_grad, dtype)
        assert not grad[:, classes:].any(), "the padding of a row got a gradient"
    else:
        _check_lse(base.to(dtype)[:, :classes], wanted, ignore_index, softcap)


def _close(name: str, got: np.ndarray, want: np.ndarray, dtype: torch.dtype) -> None:
    scale = max(1.0, float(np.max(np.abs(want)))) if np.size(want) else 1.0
    np.testing.assert_allclose(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * scale)
    assert np.isfinite(got).all(), f"{name}: not finite"


def _check_lse(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, softcap: float | None
) -> None:
    """The loss-only launch with a logsumexp buffer (as the vocabulary-parallel loss uses
    it): each counted row's logsumexp of the (capped) logits, 0 for an ignored row."""
    rows, classes = logits.shape
    lse = torch.full((rows,), np.nan, dtype=torch.float64)
    cap = 0.0 if softcap is None else softcap
    _kernel.launch(
        logits,
        None,
        target,
        None,
        ignore_index=ignore_index,
        eps=0.0,
        z_loss=0.0,
        cap=cap,
        weight_sum=float(classes),
        scale=1.0,
        lse=lse,
    )
    z = logits.double()
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    want = torch.where(target != ignore_index, torch.logsumexp(z, dim=1), 0.0)
    _close("lse", lse.numpy(), want.numpy(), logits.dtype)


def _expect_refusal(logits: torch.Tensor, target: torch.Tensor, options: dict) -> None:
    """Labels outside [0, C) and not ignore_index: a ValueError naming the labels."""
    try:
        fused_cross_entropy(logits, target, **options)
    except ValueError as error:
        assert str(error).startswith("labels: expected class indices"), error
    else:
        raise AssertionError(f"labels {target.tolist()} were accepted")


def _expect_kernel_refusal(
    logits: torch.Tensor, target: torch.Tensor, options: dict, classes: int
) -> None:
    """The same labels handed to the kernel's launcher, past every Python check: the kernel
    stops at the first bad row, and the error names its value and position."""
    ignore = options["ignore_index"]
    bad = ((target < 0) | (target >= classes)) & (target != ignore)
    first = int(torch.nonzero(bad)[0, 0])
    weight = options["weight"]
    try:
        _kernel.launch(
            logits,
            torch.empty(logits.shape, dtype=logits.dtype),
            target,
            weight,
            ignore_index=ignore,
            eps=options["label_smoothing"],
            z_loss=options["z_loss"],
            cap=0.0 if options["softcap"] is None else options["softcap"],
            weight_sum=float(classes) if weight is None else float(weight.sum()),
            scale=1.0,
        )
    except ValueError as error:
        expected = f"got {int(target[first])} at position ({first},)"
        assert str(error).startswith("target:") and expected in str(error), error
    else:
        raise AssertionError(f"the kernel accepted target {target.tolist()}")


def draw(rng: np.random.Generator) -> dict:
    """A random case for :func:`check`."""
    label_dtype = LABEL_DTYPES[rng.integers(len(LABEL_DTYPES))]
    classes = int(rng.integers(1, 300)) if rng.random() < 0.8 else int(rng.integers(300, 2100))
    info = torch.iinfo(label_dtype)
    # ignore_index inside and outside the labels' dtype (int64 holds them all: the kernel's)
    ignore_choices = [-100, -1, 0, classes - 1, classes, info.min - 1, info.max + 1, 255, 156]
    ignore_choices = [v for v in ignore_choices if -(2**63) <= v < 2**63]
    hostile = hostile_values(label_dtype, classes)
    return {
        "dtype": DTYPES[rng.integers(len(DTYPES))],
        "rows": int(rng.integers(0, 160)),  # past 64 rows the launcher splits over threads
        "classes": classes,
        "pad": int(rng.choice([0, 0, 1, 7, 16])),
        "label_dtype": label_dtype,
        "ignore_index": int(rng.choice(ignore_choices)),
        "bad": int(rng.choice(hostile)) if hostile and rng.random() < 0.3 else None,
        "weighted": bool(rng.random() < 0.5),
        "eps": float(rng.choice([0.0, 0.0, 0.1, 1.0])),
        "z_loss": float(rng.choice([0.0, 0.0, 1e-3])),
        "softcap": rng.choice([None, None, 2.5, 30.0]),
        "reduction": str(rng.choice(["mean", "sum", "none"])),
        "grad_mode": str(rng.choice(["none", "buffer", "inplace"])),
        "seed": int(rng.integers(2**31)),
    }


def main(seed: int, cases: int) -> None:
    rng = np.random.default_rng(seed)
    for k in range(cases):
        case = draw(rng)
        try:
            check(**case)
        except Exception:
            print(f"kernel_boundary_fuzz: case {k} failed: {case}", file=sys.stderr)
            raise
    print(f"kernel_boundary_fuzz: {cases} cases passed")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
