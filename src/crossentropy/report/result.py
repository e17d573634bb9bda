"""The numbers of a report, as plain frozen dataclasses (what ``result()`` returns, what the
command prints and writes as JSON and HTML)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "CalibrationBin",
    "ClassStats",
    "Interval",
    "Report",
    "SequenceStats",
    "Uncertainty",
    "WorstRow",
]


@dataclass(frozen=True)
class ClassStats:
    """One class: its count (rows of that class; multi-label: positive labels), its mean
    cross entropy (nats; over those rows, or multi-label over every row's label), the accuracy
    on them (single-label: recall; multi-label: per-element accuracy) and, where classwise
    calibration is computed, the binned calibration error of its one-vs-rest column."""

    index: int
    count: int
    cross_entropy: float | None
    accuracy: float | None
    ece: float | None = None


@dataclass(frozen=True)
class CalibrationBin:
    """One confidence bin (lower, upper]: its count, mean confidence and accuracy."""

    lower: float
    upper: float
    count: int
    confidence: float | None
    accuracy: float | None


@dataclass(frozen=True)
class WorstRow:
    """A row (0-based index among the data rows) and its loss in nats."""

    row: int
    loss: float


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval [low, high] of one metric."""

    low: float
    high: float


@dataclass(frozen=True)
class Uncertainty:
    """Percentile intervals from a Poisson bootstrap of ``replicates`` resamples (of rows; of
    sequences for token files), at confidence ``level``, reproducible for ``seed``."""

    replicates: int
    seed: int
    level: float
    cross_entropy: Interval
    perplexity: Interval
    accuracy: Interval
    brier: Interval
    ece: Interval


@dataclass(frozen=True)
class SequenceStats:
    """Token files: how many sequences had a scored token, and the quantiles over sequences of
    each sequence's perplexity exp(mean cross entropy of its scored tokens)."""

    sequences: int
    perplexity_quantiles: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """Every number of a loss report (see :mod:`crossentropy.report` for the definitions)."""

    rows: int
    num_classes: int
    multilabel: bool
    logits: bool
    cross_entropy_nats: float
    cross_entropy_bits: float
    perplexity: float
    accuracy: float
    element_accuracy: float | None
    brier: float
    ece: float
    classes: list[ClassStats]
    calibration: list[CalibrationBin]
    worst: list[WorstRow]
    rmsce: float = 0.0
    mce: float = 0.0
    classwise_ece: float | None = None
    binning: str = "uniform"
    bins: int = 15
    top_k: int | None = None
    top_k_accuracy: float | None = None
    ignored: int = 0
    sequences: SequenceStats | None = None
    uncertainty: Uncertainty | None = None
