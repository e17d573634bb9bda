"""The report of ``crossentropy compute`` as one self-contained HTML page (``--format html``).

The page needs nothing outside itself: the style sheet is inline, the reliability diagram an
inline ``<svg>`` (from :func:`crossentropy.viz.reliability.reliability_svg`; without
matplotlib, a note says how to get it), and no address is linked. Every string that comes
from the data or the command line (file names, the title) goes through
:func:`html.escape`. The rows shown are those of the text report, from the same functions
(:func:`summary_rows`, :func:`class_rows`, :func:`calibration_rows`, :func:`sequence_rows`),
so that the two formats cannot drift apart.

Example:
    >>> from crossentropy.report import CalibrationBin, ClassStats, Report
    >>> r = Report(rows=2, num_classes=2, multilabel=False, logits=False,
    ...     cross_entropy_nats=0.5, cross_entropy_bits=0.72, perplexity=1.65, accuracy=1.0,
    ...     element_accuracy=None, brier=0.1, ece=0.2,
    ...     classes=[ClassStats(0, 1, 0.5, 1.0), ClassStats(1, 1, 0.5, 1.0)],
    ...     calibration=[CalibrationBin(0.5, 1.0, 2, 0.8, 1.0)], worst=[])
    >>> page = render_html(r, title="a <b> report")
    >>> "a &lt;b&gt; report" in page and page.count("<table") == 3
    True
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

from crossentropy.report import Interval, Report

__all__ = [
    "MAX_CLASS_ROWS",
    "calibration_rows",
    "class_rows",
    "format_interval",
    "format_number",
    "render_html",
    "sequence_rows",
    "summary_rows",
]

MAX_CLASS_ROWS = 30
"""A report of more classes shows the 20 of highest cross entropy (text and HTML)."""

_SHOWN_CLASSES = 20

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; }
th { text-align: left; background: #f4f4f4; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
td.m { color: #666; }
caption { caption-side: bottom; color: #666; font-size: 0.9em; text-align: left; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
"""


def format_number(value: float | None, digits: int = 6) -> str:
    """A number for a table: ``-`` for None, ``inf`` for an infinity, else ``digits``
    significant digits (scientific notation below 1e-4).

    >>> format_number(0.41234567), format_number(None), format_number(2e-6)
    ('0.412346', '-', '2.000e-06')
    """
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}" if abs(value) >= 1e-4 or value == 0 else f"{value:.3e}"


def format_interval(value: float | None, interval: Interval | None, digits: int = 4) -> str:
    """``0.4123 [0.4011, 0.424]``: a value and its bootstrap interval, when there is one.

    >>> from crossentropy.report import Interval
    >>> format_interval(0.41234, Interval(0.40111, 0.42399))
    '0.4123 [0.4011, 0.424]'
    """
    if interval is None:
        return format_number(value)
    return (
        f"{format_number(value, digits)} "
        f"[{format_number(interval.low, digits)}, {format_number(interval.high, digits)}]"
    )


def summary_rows(report: Report) -> list[tuple[str, str, str]]:
    """(metric, value, meaning) rows of the summary, the bootstrap interval beside each
    metric that has one."""
    u = report.uncertainty

    def iv(name: str) -> Interval | None:
        return None if u is None else getattr(u, name)

    kind = "multi-label (sigmoid)" if report.multilabel else "single-label (softmax)"
    source = "logits" if report.logits else "probabilities"
    per = "per label" if report.multilabel else "per row"
    rows = [
        ("rows", str(report.rows), f"{kind}, from {source}"),
        ("classes", str(report.num_classes), ""),
    ]
    if report.ignored:
        rows.append(("ignored", str(report.ignored), "rows whose label is the ignore index"))
    rows += [
        (
            "cross entropy",
            format_interval(report.cross_entropy_nats, iv("cross_entropy")),
            f"nats, mean {per}",
        ),
        ("cross entropy", format_number(report.cross_entropy_bits), f"bits, mean {per}"),
        (
            "perplexity",
            format_interval(report.perplexity, iv("perplexity")),
            "exp(cross entropy in nats)",
        ),
    ]
    if report.multilabel:
        rows += [
            ("accuracy", format_interval(report.accuracy, iv("accuracy")), "rows all right"),
            ("label accuracy", format_number(report.element_accuracy), "labels right (p > 0.5)"),
            ("Brier score", format_interval(report.brier, iv("brier")), "mean (p - y)^2/label"),
        ]
    else:
        rows.append(
            ("accuracy", format_interval(report.accuracy, iv("accuracy")), "argmax = label")
        )
        if report.top_k is not None:
            rows.append(
                (
                    f"top-{report.top_k} accuracy",
                    format_number(report.top_k_accuracy),
                    f"label among the {report.top_k} most probable classes",
                )
            )
        rows.append(
            ("Brier score", format_interval(report.brier, iv("brier")), "sum over classes (p-y)^2")
        )
    bins = f"{report.bins} {report.binning} bins"
    rows += [
        ("ECE", format_interval(report.ece, iv("ece")), f"expected calibration error, {bins}"),
        ("RMSCE", format_number(report.rmsce), "root mean square calibration error"),
        ("MCE", format_number(report.mce), "maximum calibration error (largest bin gap)"),
    ]
    if report.classwise_ece is not None:
        rows.append(
            (
                "classwise ECE",
                format_number(report.classwise_ece),
                "mean over classes of the one-vs-rest ECE",
            )
        )
    if u is not None:
        rows.append(
            (
                "intervals",
                f"{u.level:.0%}",
                f"percentile bootstrap, {u.replicates} replicates, seed {u.seed}",
            )
        )
    return rows


def class_rows(report: Report) -> tuple[list[str], list[list[str]], str | None]:
    """The per-class table: (header, rows, caption); the 20 classes of highest cross
    entropy when there are more than :data:`MAX_CLASS_ROWS`."""
    header = ["class", "positives" if report.multilabel else "count", "cross entropy (nats)"]
    header.append("accuracy")
    with_ece = any(c.ece is not None for c in report.classes)
    if with_ece:
        header.append("ECE")
    shown = report.classes
    caption = None
    if len(shown) > MAX_CLASS_ROWS:
        shown = sorted(
            (c for c in shown if c.cross_entropy is not None),
            key=lambda c: -(c.cross_entropy or 0.0),
        )[:_SHOWN_CLASSES]
        caption = f"the {_SHOWN_CLASSES} classes of highest cross entropy of {report.num_classes}"
    rows = []
    for c in shown:
        row = [str(c.index), str(c.count), format_number(c.cross_entropy)]
        row.append(format_number(c.accuracy))
        if with_ece:
            row.append(format_number(c.ece))
        rows.append(row)
    return header, rows, caption


def calibration_rows(report: Report) -> tuple[list[str], list[list[str]]]:
    """The non-empty confidence bins: (header, rows)."""
    header = ["bin", "count", "confidence", "accuracy", "gap"]
    rows = [
        [
            f"({b.lower:.3f}, {b.upper:.3f}]",
            str(b.count),
            format_number(b.confidence, 4),
            format_number(b.accuracy, 4),
            format_number(abs(b.accuracy - b.confidence), 4),
        ]
        for b in report.calibration
        if b.count and b.confidence is not None and b.accuracy is not None
    ]
    return header, rows


def sequence_rows(report: Report) -> list[tuple[str, str]]:
    """Token files: the number of sequences and the quantiles of per-sequence perplexity."""
    if report.sequences is None:
        return []
    rows = [("sequences", str(report.sequences.sequences))]
    rows += [
        (f"perplexity {name}", format_number(value))
        for name, value in report.sequences.perplexity_quantiles.items()
    ]
    return rows


def _cell_class(column: int, last: int, meaning: bool) -> str:
    """The style of a cell: ``k`` a name, ``m`` the prose of ``meaning``, ``n`` a number."""
    if column == 0:
        return "k"
    return "m" if meaning and column == last else "n"


def _table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    caption: str | None = None,
    *,
    meaning: bool = False,
) -> str:
    """A table, every string escaped; ``meaning``: the last column is prose, not a number."""
    e = html.escape
    parts = ["<table>"]
    if caption:
        parts.append(f"<caption>{e(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead>")
    parts.append("<tbody>")
    for row in rows:
        last = len(row) - 1
        cells = [
            f'<td class="{_cell_class(j, last, meaning)}">{e(v)}</td>' for j, v in enumerate(row)
        ]
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</tbody></table>")
    return "\n".join(parts)


def render_html(report: Report, *, title: str, figure_svg: str | None = None) -> str:
    """The report as one self-contained HTML page.

    Args:
        report: the numbers.
        title: the page's title and heading (escaped here).
        figure_svg: an inline ``<svg>`` element (the reliability diagram), trusted as it is;
            None writes a note that the diagram needs matplotlib.
    """
    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    body.append(_table(["metric", "value", "meaning"], summary_rows(report), meaning=True))
    sequences = sequence_rows(report)
    if sequences:
        body.append("<h2>Per sequence</h2>")
        body.append(_table(["", "value"], sequences, "perplexity of each sequence's tokens"))
    body.append("<h2>Calibration (confidence bins)</h2>")
    header, rows = calibration_rows(report)
    body.append(_table(header, rows))
    body.append("<h2>Reliability diagram</h2>")
    if figure_svg is not None:
        body.append(f"<figure>{figure_svg}</figure>")
    else:
        body.append(
            "<p>(The reliability diagram needs matplotlib: pip install crossentropy[plot].)</p>"
        )
    body.append("<h2>Per class</h2>")
    header, rows, caption = class_rows(report)
    body.append(_table(header, rows, caption))
    if report.worst:
        body.append(f"<h2>Worst {len(report.worst)} rows</h2>")
        body.append(
            _table(
                ["row", "loss (nats)"],
                [[str(w.row), format_number(w.loss)] for w in report.worst],
            )
        )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
