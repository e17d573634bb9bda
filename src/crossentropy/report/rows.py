"""Per-row quantities of single-label rows: what every metric of the report is summed from.

(Skeleton: the API below is fixed; the bodies are being written.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .checks import FloatArray, IntArray

__all__ = ["RowScores", "score_rows", "score_rows_numpy"]


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


def score_rows_numpy(x: npt.NDArray[np.floating], ids: IntArray, *, logits: bool) -> RowScores:
    """The float64 NumPy computation of :class:`RowScores` (the reference, and the path
    without torch). ``x`` (n, C) checked predictions, ``ids`` (n,) checked class ids."""
    raise NotImplementedError


def score_rows(x: npt.NDArray[np.floating], ids: IntArray, *, logits: bool) -> RowScores:
    """:class:`RowScores` by the fastest path: for logits the fused C kernel
    (``crossentropy.torch.scoring``) when torch is installed, else :func:`score_rows_numpy`."""
    return score_rows_numpy(x, ids, logits=logits)
