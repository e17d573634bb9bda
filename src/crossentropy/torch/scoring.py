"""Per-row scores of logits with their labels: what a report of a classifier sums.

For a row of logits z (C classes) and its label y, with m = max_j z_j and
s = sum_j exp(z_j - m) (so logsumexp z = m + log s and p_j = exp(z_j - m) / s):

- ``loss`` = -log p_y = log s - (z_y - m), in nats (never (m + log s) - z_y, which would
  lose the digits of a small loss under a large m);
- ``predicted`` = argmax_j z_j, the first of tied maxima (as ``torch.argmax``);
- ``confidence`` = p of the predicted class = exp(m - logsumexp z) = 1 / s;
- ``p_true`` = p_y = exp(-loss);
- ``sum_squares`` = sum_j p_j^2 = sum_j exp(z_j - m)^2 / s^2 (the row's Brier term is
  sum_squares - 2 p_true + 1);
- ``rank`` = #{j: z_j > z_y} + #{j < y: z_j = z_y}: the label is among the top k iff
  rank < k (ties go to the lower index, as argmax's do, so rank 0 iff predicted == y).

On CPU, where the C kernel is available (:func:`crossentropy.torch.fused_available`), one
call of ``score_rows_*`` in ``_cross_entropy.c`` reads each row twice (the second time from
cache) on two threads: float64 logits are computed in float64 throughout; float32, bfloat16
and float16 rows take a float exponential (about 1 ulp) summed in float64 (the losses agree
with a float64 computation on the same values to ~1e-7 relative or better, see
tests/test_report_rows.py). Elsewhere (another device, no compiler) the same numbers are
computed by torch operations in float64 on blocks of rows.

Example:
    >>> import torch
    >>> from crossentropy.torch.scoring import score_rows
    >>> scores = score_rows(torch.tensor([[2.0, 1.0, 2.0], [0.0, 0.0, 3.0]]), torch.tensor([2, 2]))
    >>> scores.predicted.tolist(), scores.rank.tolist()
    ([0, 2], [1, 0])
    >>> round(float(scores.loss[1]), 6)
    0.094923
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import _kernel

__all__ = ["BLOCK_ELEMENTS", "RowScoreTensors", "score_rows"]

BLOCK_ELEMENTS = 1 << 20
"""Logits per block of rows on the torch path (its float64 temporaries are a few of these)."""

_FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


class RowScoreTensors(NamedTuple):
    """Per-row scores of n rows, 1-D tensors of length n on the logits' device: float64
    ``loss``, ``confidence``, ``p_true``, ``sum_squares``; int64 ``predicted``, ``rank``
    (definitions in :mod:`crossentropy.torch.scoring`)."""

    loss: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor
    p_true: torch.Tensor
    sum_squares: torch.Tensor
    rank: torch.Tensor


def _check(logits: object, target: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The arguments checked: 2-D floating logits and one integer label in [0, C) per row,
    on the logits' device (the labels as int64)."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits: expected a torch.Tensor; got {type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(f"logits: expected a 2-D (rows, classes) tensor; got shape "
                         f"{tuple(logits.shape)}")  # fmt: skip
    if logits.dtype not in _FLOATS:
        raise TypeError(
            f"logits: expected float32, float64, bfloat16 or float16; got {logits.dtype}"
        )
    if logits.device.type == "meta":
        raise ValueError("logits: expected a tensor with values (CPU, CUDA, ...); got one on meta")
    rows, classes = logits.shape
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target: expected a torch.Tensor; got {type(target).__name__}")
    if tuple(target.shape) != (rows,):
        raise ValueError(
            f"target: expected shape ({rows},), one class id per row; got {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target: expected integer class ids; got {target.dtype}")
    if target.dtype == torch.uint64 and rows:  # ids of 2**63 and more would wrap in int64
        wrapped = target.view(torch.int64) < 0
        if bool(wrapped.any()):
            first = int(torch.nonzero(wrapped)[0, 0])
            raise ValueError(
                f"target: expected class ids in [0, {classes}); got an id of 2**63 or more "
                f"at position ({first},)"
            )
    if rows and classes == 0:
        raise ValueError("logits: expected at least one class; got shape "
                         f"{tuple(logits.shape)}")  # fmt: skip
    ids = target.to(device=logits.device, dtype=torch.int64)
    if rows:
        outside = (ids < 0) | (ids >= classes)
        if bool(outside.any()):
            first = int(torch.nonzero(outside)[0, 0])
            raise ValueError(
                f"target: expected class ids in [0, {classes}); got {int(ids[first])} at "
                f"position ({first},)"
            )
    return logits, ids


def _refuse_not_finite(bad: torch.Tensor) -> None:
    """Raise naming the first row flagged ``bad`` (a row holding NaN or +-inf)."""
    if bool(bad.any()):
        first = int(torch.nonzero(bad)[0, 0])
        raise ValueError(f"logits: expected finite values; got NaN or inf in row {first}")


def _kernel_parts(z: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(m, log s, z_y, sum p^2, argmax, rank) by the C kernel (rows contiguous: a copy of
    rows that are not)."""
    if z.numel() == 0:  # an empty tensor may have any strides
        z = torch.empty(z.shape, dtype=z.dtype)
    elif z.shape[1] > 1 and z.stride(1) != 1:
        z = z.contiguous()
    return _kernel.score_rows(z, ids)


def _torch_parts(z: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The same numbers by torch operations in float64, on blocks of rows (a few
    :data:`BLOCK_ELEMENTS` float64 temporaries at a time)."""
    rows, classes = z.shape
    parts: list[list[torch.Tensor]] = [[] for _ in range(6)]
    step = max(1, BLOCK_ELEMENTS // max(1, classes))
    columns = torch.arange(classes, device=z.device)
    for a in range(0, rows, step):
        x = z[a : a + step].to(torch.float64)
        y = ids[a : a + step]
        peak, argmax = x.max(dim=1)  # the first of tied maxima
        e = torch.exp(x - peak[:, None])
        at_top = x == peak[:, None]  # s = k + t: k maxima, t the sum of the other e's
        k = at_top.sum(dim=1).to(torch.float64)
        t = e.masked_fill(at_top, 0.0).sum(dim=1)
        s = k + t
        picked = x.gather(1, y[:, None])[:, 0]
        above = (x > picked[:, None]).sum(dim=1)
        tied = ((x == picked[:, None]) & (columns[None, :] < y[:, None])).sum(dim=1)
        bad = ~torch.isfinite(x).all(dim=1)
        for part, value in zip(
            parts,
            (
                peak,
                torch.log(k) + torch.log1p(t / k),
                picked,
                (e * e).sum(dim=1) / (s * s),
                argmax,
                above + tied,
            ),
            strict=True,
        ):
            part.append(value.masked_fill(bad, -1 if value.dtype == torch.int64 else torch.nan))
    empty = [torch.empty(0, dtype=torch.float64, device=z.device)] * 4
    empty += [torch.empty(0, dtype=torch.int64, device=z.device)] * 2
    return tuple(torch.cat(part) if part else none for part, none in zip(parts, empty, strict=True))


def score_rows(logits: torch.Tensor, target: torch.Tensor) -> RowScoreTensors:
    """The per-row scores of ``logits`` (n, C) (float32, float64, bfloat16 or float16, every
    value finite) with the labels ``target`` (n,) (integers in [0, C)); see
    :mod:`crossentropy.torch.scoring` for the definitions and the two paths.

    Raises:
        TypeError: ``logits`` or ``target`` is not a tensor, or of a dtype not accepted.
        ValueError: a shape that does not match, a label outside [0, C), a value that is
            not finite (the row named).
    """
    z, ids = _check(logits, target)
    use_kernel = z.device.type == "cpu" and _kernel.fused_available()
    peak, log_sum, picked, squares, argmax, rank = (
        _kernel_parts(z, ids) if use_kernel else _torch_parts(z, ids)
    )
    _refuse_not_finite(torch.isnan(peak))
    loss = log_sum - (picked - peak)
    return RowScoreTensors(
        loss=loss,
        predicted=argmax,
        confidence=torch.exp(-log_sum),
        p_true=torch.exp(-loss),
        sum_squares=squares,
        rank=rank,
    )
