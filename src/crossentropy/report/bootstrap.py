"""Confidence intervals by a streaming Poisson bootstrap.

(Skeleton: the API below is fixed; the bodies are being written.)
"""

from __future__ import annotations

from .checks import FloatArray, IntArray
from .result import Uncertainty

__all__ = ["MAX_REPLICATES", "Bootstrap", "poisson_weights"]

MAX_REPLICATES = 100_000
"""The most bootstrap replicates a report takes."""


def poisson_weights(seed: int, units: IntArray, replicates: int) -> FloatArray:
    """(len(units), replicates) Poisson(1) counts, each a function of (seed, unit, replicate)
    alone, so that any chunking of the rows, in any order, on any machine, draws the same."""
    raise NotImplementedError


class Bootstrap:
    """Per-replicate weighted sums of the metrics, for fixed calibration edges."""

    def __init__(self, replicates: int, seed: int, edges: FloatArray) -> None:
        raise NotImplementedError

    def add_rows(
        self, units: IntArray, loss: FloatArray, correct: FloatArray, brier: FloatArray
    ) -> None:
        raise NotImplementedError

    def add_calibration(self, units: IntArray, confidence: FloatArray, correct: FloatArray) -> None:
        raise NotImplementedError

    def merge(self, other: Bootstrap) -> None:
        raise NotImplementedError

    def replicate_values(self) -> dict[str, FloatArray]:
        raise NotImplementedError

    def uncertainty(self, level: float) -> Uncertainty:
        raise NotImplementedError
