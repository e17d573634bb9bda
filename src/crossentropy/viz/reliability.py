"""The reliability diagram of a loss report (``crossentropy compute --figure``, ``--format html``).

Built with matplotlib's object API (:class:`matplotlib.figure.Figure` on the Agg canvas, never
pyplot), as the figures of :mod:`crossentropy.viz.figures` are. Two panels share the
confidence axis:

- top: for each non-empty confidence bin (lower, upper], a bar from 0 to the bin's accuracy
  (its fraction of right predictions) spanning the bin, a point at (mean confidence,
  accuracy), and the diagonal accuracy = confidence of a perfectly calibrated model; the gap
  between a point and the diagonal is the bin's calibration error, and the ECE is their mean
  weighted by the bins' counts;
- bottom: the number of predictions in each bin.

The title gives the ECE (and its bootstrap interval when the report has one) and the binning.
Artists carry a ``gid`` naming what they show (``"accuracy"``, ``"confidence"``,
``"diagonal"``, ``"count"``) so that tests and scripts can read the drawn numbers back.
"""

from __future__ import annotations

import io
import re

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crossentropy.report import Report

from .figures import PALETTE

__all__ = ["reliability_figure", "reliability_svg"]


def _title(report: Report) -> str:
    ece = f"ECE {report.ece:.4f}"
    if report.uncertainty is not None:
        iv = report.uncertainty.ece
        ece += f" [{iv.low:.4f}, {iv.high:.4f}] ({report.uncertainty.level:.0%})"
    return f"Reliability: {ece}, {report.bins} {report.binning} bins"


def reliability_figure(report: Report) -> Figure:
    """The reliability diagram of ``report``: accuracy against confidence per bin, and the
    bins' counts below.

    Example:
        >>> from crossentropy.report import CalibrationBin, Report
        >>> r = Report(rows=4, num_classes=2, multilabel=False, logits=False,
        ...     cross_entropy_nats=0.5, cross_entropy_bits=0.72, perplexity=1.65,
        ...     accuracy=0.75, element_accuracy=None, brier=0.1, ece=0.05, classes=[],
        ...     calibration=[CalibrationBin(0.5, 1.0, 4, 0.8, 0.75)], worst=[], bins=1)
        >>> fig = reliability_figure(r)
        >>> [float(p.get_height()) for p in fig.axes[0].patches if p.get_gid() == "accuracy"]
        [0.75]
    """
    fig = Figure(figsize=(6.4, 6.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(
        2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]}, squeeze=True
    )
    shown = [b for b in report.calibration if b.count and b.accuracy is not None]
    lefts = [b.lower for b in shown]
    widths = [b.upper - b.lower for b in shown]
    top.bar(
        lefts,
        [b.accuracy for b in shown],
        width=widths,
        align="edge",
        color=PALETTE["sky"],
        edgecolor=PALETTE["blue"],
        linewidth=0.6,
        label="accuracy",
        gid="accuracy",
    )
    (diagonal,) = top.plot(
        [0, 1], [0, 1], linestyle="--", color=PALETTE["black"], linewidth=1, label="calibrated"
    )
    diagonal.set_gid("diagonal")
    (points,) = top.plot(
        [b.confidence for b in shown],
        [b.accuracy for b in shown],
        "o",
        color=PALETTE["vermillion"],
        markersize=4,
        label="mean confidence",
    )
    points.set_gid("confidence")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=9)
    top.grid(True, alpha=0.3)
    top.set_title(_title(report), fontsize=11)
    bottom.bar(
        lefts,
        [b.count for b in shown],
        width=widths,
        align="edge",
        color=PALETTE["orange"],
        edgecolor=PALETTE["black"],
        linewidth=0.4,
        gid="count",
    )
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("count")
    bottom.grid(True, alpha=0.3)
    return fig


_SVG_START = re.compile(r"<svg\b")
_NAMESPACE = re.compile(r'\s+xmlns(?::\w+)?="[^"]*"')


def reliability_svg(report: Report) -> str:
    """The diagram as an ``<svg>`` element to inline in an HTML page.

    The XML prolog, the DOCTYPE, the metadata and the namespace declarations (whose values
    are addresses) are left out: an HTML parser puts an inline ``<svg>`` in the SVG namespace
    by itself, so the page names no address.
    """
    fig = reliability_figure(report)
    buffer = io.StringIO()
    keys = ("Creator", "Date", "Format", "Type")
    with matplotlib.rc_context({"svg.hashsalt": "crossentropy"}):
        fig.savefig(buffer, format="svg", metadata=dict.fromkeys(keys), facecolor="white")
    text = buffer.getvalue()
    start = _SVG_START.search(text)
    if start is None:  # pragma: no cover - matplotlib always writes one
        raise RuntimeError("matplotlib wrote no <svg> element")
    head_end = text.index(">", start.start())
    head = _NAMESPACE.sub("", text[start.start() : head_end])
    return head + text[head_end:]
