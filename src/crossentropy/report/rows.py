"""Per-row quantities of single-label rows: what every metric of the report is summed from.

Two computations of the same numbers: :func:`score_rows_numpy`, float64 NumPy (the
reference, and the path without torch), and :func:`score_rows`, which for logits hands the
rows to the fused C kernel of :mod:`crossentropy.torch.scoring` when torch is installed and
the kernel is available here (float32 and float16 rows as they are, no copy to float64),
else takes :func:`score_rows_numpy`.

For logits z with m = max_j z_j and s = sum_j exp(z_j - m) (a stable logsumexp: m + log s),
p_j = exp(z_j - m) / s and the loss is log s - (z_y - m), log s taken as
log k + log1p(t / k) (k the number of maxima, t the sum of the other e's) so that a small
loss keeps its digits. For probabilities p the loss is
-log clip(p_y, EPS, 1 - EPS) (scikit-learn's ``log_loss`` clips the same way); the other
numbers are taken from p as given.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .checks import EPS, FloatArray, IntArray

__all__ = ["RowScores", "refuses_non_finite", "score_rows", "score_rows_numpy"]


@dataclass(frozen=True)
class RowScores:
    """Per-row quantities of n single-label rows (float64 / int64 NumPy arrays of length n).

    - ``loss``: -log p_y in nats (probabilities: p_y clipped to [EPS, 1 - EPS] first);
    - ``predicted``: argmax_j p_j (the first of tied maxima);
    - ``confidence``: p of the predicted class;
    - ``p_true``: p_y;
    - ``sum_squares``: sum_j p_j^2, so that the row's Brier term is sum_squares - 2 p_true + 1;
    - ``rank``: #{j: s_j > s_y} + #{j < y: s_j = s_y} over the scores s (the logits, or the
      probabilities): the label is among the top k iff rank < k (ties go to the lower index,
      as argmax does, so top-1 accuracy is the accuracy).
    """

    loss: FloatArray
    predicted: IntArray
    confidence: FloatArray
    p_true: FloatArray
    sum_squares: FloatArray
    rank: IntArray


def _ranks(s: FloatArray, ids: IntArray) -> IntArray:
    """#{j: s_j > s_y} + #{j < y: s_j = s_y} of each row of the scores ``s``."""
    picked = np.take_along_axis(s, ids[:, None], axis=1)
    before = np.arange(s.shape[1])[None, :] < ids[:, None]
    above = np.count_nonzero(s > picked, axis=1)
    tied = np.count_nonzero((s == picked) & before, axis=1)
    rank: IntArray = (above + tied).astype(np.int64)
    return rank


def score_rows_numpy(x: npt.NDArray[np.floating], ids: IntArray, *, logits: bool) -> RowScores:
    """The float64 NumPy computation of :class:`RowScores` (the reference, and the path
    without torch). ``x`` (n, C) checked predictions, ``ids`` (n,) checked class ids.

    Example:
        >>> s = score_rows_numpy(np.array([[0.0, 0.0, 3.0]]), np.array([0]), logits=True)
        >>> s.predicted.tolist(), s.rank.tolist(), round(float(s.loss[0]), 6)
        ([2], [1], 3.094923)
        >>> p = score_rows_numpy(np.array([[0.25, 0.75]]), np.array([1]), logits=False)
        >>> round(float(p.loss[0]), 6), float(p.sum_squares[0])
        (0.287682, 0.625)
    """
    z = np.asarray(x, dtype=np.float64)
    y = np.asarray(ids, dtype=np.int64)
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ValueError(f"x, ids: expected shapes (n, C) and (n,); got {z.shape} and {y.shape}")
    if z.shape[0] == 0:
        none = np.empty(0, dtype=np.float64)
        index = np.empty(0, dtype=np.int64)
        return RowScores(none, index, none.copy(), none.copy(), none.copy(), index.copy())
    rows = np.arange(z.shape[0])
    predicted = np.argmax(z, axis=1).astype(np.int64)  # the first of tied maxima
    rank = _ranks(z, y)
    if logits:
        peak = z[rows, predicted]
        e = np.exp(z - peak[:, None])
        # s = k + t, k the maxima's count, t the others' sum: log s = log k + log1p(t / k)
        # keeps the digits of a small loss (t << 1), which log(1 + t) would round away
        at_top = z == peak[:, None]
        ties = np.count_nonzero(at_top, axis=1)
        rest = np.where(at_top, 0.0, e).sum(axis=1)
        s = ties + rest
        loss = (np.log(ties) + np.log1p(rest / ties)) - (z[rows, y] - peak)
        return RowScores(
            loss=loss,
            predicted=predicted,
            confidence=1.0 / s,
            p_true=np.exp(-loss),
            sum_squares=np.einsum("ij,ij->i", e, e) / (s * s),
            rank=rank,
        )
    p_true = z[rows, y]
    return RowScores(
        loss=-np.log(np.clip(p_true, EPS, 1.0 - EPS)),
        predicted=predicted,
        confidence=z[rows, predicted],
        p_true=p_true,
        sum_squares=np.einsum("ij,ij->i", z, z),
        rank=rank,
    )


_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))


def _score_logits_with_torch(x: npt.NDArray[np.floating], ids: IntArray) -> RowScores | None:
    """:class:`RowScores` of logits by :func:`crossentropy.torch.scoring.score_rows`, or
    None when torch is not installed or the C kernel is not available here."""
    try:
        import torch

        from ..torch import fused_available
        from ..torch.scoring import score_rows as score_tensors
    except ImportError:
        return None
    if not fused_available():
        return None
    if x.dtype not in _KERNEL_DTYPES:
        x = x.astype(np.float64)
    if not x.dtype.isnative or min(x.strides, default=0) < 0:
        x = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))
    with warnings.catch_warnings():
        # a read-only array (a memory-mapped file) is only read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        z = torch.from_numpy(x)
    labels = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))
    got = score_tensors(z, labels)
    return RowScores(
        loss=got.loss.numpy(),
        predicted=got.predicted.numpy(),
        confidence=got.confidence.numpy(),
        p_true=got.p_true.numpy(),
        sum_squares=got.sum_squares.numpy(),
        rank=got.rank.numpy(),
    )


def refuses_non_finite(x: npt.NDArray[Any], *, logits: bool) -> bool:
    """Whether :func:`score_rows` itself refuses a NaN or infinite entry of ``x`` (a
    ValueError): float32 and float16 logits, which the C kernel scores, checking every row as
    it reads it. A caller may then skip its own pass over ``x`` and check only on an error."""
    if not logits or x.ndim != 2 or x.dtype not in _UNCHECKED_DTYPES:
        return False
    try:
        from ..torch import fused_available
    except ImportError:
        return False
    return bool(fused_available())


_UNCHECKED_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


def score_rows(x: npt.NDArray[np.floating], ids: IntArray, *, logits: bool) -> RowScores:
    """:class:`RowScores` by the fastest path: for logits the fused C kernel
    (``crossentropy.torch.scoring``) when torch is installed, else :func:`score_rows_numpy`.

    The kernel reads float32, float16 and float64 rows as they are (other dtypes are cast
    to float64 first); its float32/float16 losses agree with the float64 computation on the
    same values to about 1e-7 relative (tests/test_report_rows.py). Probabilities always
    take :func:`score_rows_numpy`."""
    if logits:
        array = np.asarray(x)
        if array.ndim == 2:
            scored = _score_logits_with_torch(array, ids)
            if scored is not None:
                return scored
    return score_rows_numpy(x, ids, logits=logits)
