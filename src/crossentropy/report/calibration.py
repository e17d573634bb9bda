"""Calibration: confidence bins and their errors, as mergeable sums.

(Skeleton: the API below is fixed; the bodies are being written.)
"""

from __future__ import annotations

import numpy.typing as npt

from .checks import FloatArray, IntArray
from .result import CalibrationBin

__all__ = [
    "MAX_BINS",
    "MAX_DISTINCT",
    "ClasswiseBins",
    "ConfidenceBins",
    "ConfidenceValues",
    "bin_index",
    "calibration_errors",
    "uniform_edges",
]

MAX_BINS = 10_000
"""The most confidence bins a report takes."""

MAX_DISTINCT = 1 << 20
"""The most distinct confidences kept exactly for quantile bins (beyond: merged neighbours)."""


def uniform_edges(bins: int) -> FloatArray:
    """The edges 0, 1/B, ..., 1 of B equal-width bins."""
    raise NotImplementedError


def bin_index(confidence: FloatArray, edges: FloatArray) -> IntArray:
    """The bin of each confidence: bin b holds (edges[b], edges[b + 1]]; 0 goes to bin 0."""
    raise NotImplementedError


def calibration_errors(
    count: npt.ArrayLike, confidence_sum: npt.ArrayLike, correct_sum: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(ECE, RMSCE, MCE) from per-bin sums over the last axis (leading axes: replicates).

    ECE = sum_b (n_b / n) |acc_b - conf_b|, RMSCE = sqrt(sum_b (n_b / n) (acc_b - conf_b)^2),
    MCE = max over non-empty bins of |acc_b - conf_b|; torchmetrics' CalibrationError with
    norm l1, l2, max. Counts may be weights (the bootstrap's)."""
    raise NotImplementedError


class ConfidenceBins:
    """Per-bin sums (count, confidence, correct) for fixed edges."""

    def __init__(self, edges: FloatArray) -> None:
        raise NotImplementedError

    def add(self, confidence: FloatArray, correct: FloatArray) -> None:
        raise NotImplementedError

    def merge(self, other: ConfidenceBins) -> None:
        raise NotImplementedError

    def errors(self) -> tuple[float, float, float]:
        raise NotImplementedError

    def bins(self) -> list[CalibrationBin]:
        raise NotImplementedError


class ConfidenceValues:
    """Exact sums per distinct confidence: the equal-mass (quantile) bins, ties never split."""

    def __init__(self) -> None:
        raise NotImplementedError

    def add(self, confidence: FloatArray, correct: FloatArray) -> None:
        raise NotImplementedError

    def merge(self, other: ConfidenceValues) -> None:
        raise NotImplementedError

    def edges(self, bins: int) -> FloatArray:
        raise NotImplementedError

    def binned(self, bins: int) -> ConfidenceBins:
        raise NotImplementedError


class ClasswiseBins:
    """Per class, uniform-bin sums of its one-vs-rest column: the classwise ECE."""

    def __init__(self, num_classes: int, bins: int) -> None:
        raise NotImplementedError

    def add(self, probabilities: FloatArray, targets: FloatArray) -> None:
        raise NotImplementedError

    def merge(self, other: ClasswiseBins) -> None:
        raise NotImplementedError

    def errors(self) -> FloatArray:
        raise NotImplementedError
