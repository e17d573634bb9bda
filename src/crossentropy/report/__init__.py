"""Loss reports for a set of predictions, computed as a stream.

The report of ``crossentropy compute``: cross entropy (nats, bits), perplexity, accuracy,
top-k accuracy, Brier, per-class numbers, calibration (ECE, RMSCE, MCE over uniform or
equal-mass bins, classwise ECE), bootstrap intervals, per-sequence perplexity for token
files. Everything is a mergeable running sum: :class:`ReportAccumulator` is fed chunk by chunk
and two accumulators merge into the one of their rows together, which is how
:func:`dask_report` runs it over a cluster.

Modules: ``checks`` (what an input must be), ``rows`` (the per-row quantities),
``calibration`` (bins), ``bootstrap`` (intervals), ``accumulator`` (the running report),
``result`` (the numbers as dataclasses).
"""

from __future__ import annotations

from .accumulator import ECE_BINS, ReportAccumulator, ReportOptions, compute_report
from .checks import (
    EPS,
    LOGIT_LIMIT,
    SUM_TOLERANCE,
    BadValue,
    FloatArray,
    IntArray,
    check_labels,
    check_predictions,
)
from .on_dask import dask_report, report_files
from .result import (
    CalibrationBin,
    ClassStats,
    Interval,
    Report,
    SequenceStats,
    Uncertainty,
    WorstRow,
)

__all__ = [
    "ECE_BINS",
    "EPS",
    "LOGIT_LIMIT",
    "SUM_TOLERANCE",
    "BadValue",
    "CalibrationBin",
    "ClassStats",
    "FloatArray",
    "IntArray",
    "Interval",
    "Report",
    "ReportAccumulator",
    "ReportOptions",
    "SequenceStats",
    "Uncertainty",
    "WorstRow",
    "check_labels",
    "check_predictions",
    "compute_report",
    "dask_report",
    "report_files",
]
