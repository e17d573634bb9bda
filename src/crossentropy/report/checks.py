"""The checks of one chunk of predictions and labels, before anything is computed from it.

:func:`check_predictions` and :func:`check_labels` raise :class:`BadValue` with the row and
column of the first bad entry, for the caller to name its place in a file.
"""

from __future__ import annotations

import numbers

import numpy as np
import numpy.typing as npt

__all__ = [
    "EPS",
    "LOGIT_LIMIT",
    "SUM_TOLERANCE",
    "BadValue",
    "FloatArray",
    "IntArray",
    "check_integer",
    "check_labels",
    "check_predictions",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

EPS = float(np.finfo(np.float64).eps)
"""Probabilities are clipped to [EPS, 1 - EPS] before their log is taken (scikit-learn's rule)."""

LOGIT_LIMIT = 1e150
"""The largest magnitude of a logit read: a loss is then at most ~2e150, so no sum of the
report's losses can overflow float64 (that would take 1e158 of them) and every number it gives
is finite where the exact one is. No model produces logits anywhere near it."""

SUM_TOLERANCE = 1e-6
"""How far from 1 the sum of a row of probabilities may be (float32 files round)."""


_KEPT_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
"""Logits of these dtypes are checked and scored as they are (the row kernel reads them);
everything else becomes float64."""


class BadValue(ValueError):
    """An entry of the input that the report cannot use: where it is (``row``, ``column``, and
    ``argument``: ``"predictions"`` or ``"labels"``), what is wrong, a hint."""

    def __init__(
        self,
        message: str,
        row: int,
        column: int | None = None,
        hint: str = "",
        argument: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.row = row
        self.column = column
        self.hint = hint
        self.argument = argument

    def __reduce__(self) -> tuple[object, ...]:  # pickles (to travel between processes)
        return (type(self), (self.message, self.row, self.column, self.hint, self.argument))


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def check_integer(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in [low, high] (``high`` None: no upper limit), a bool refused:
    else a TypeError or ValueError naming ``name``, what was given and what is accepted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer; got {type(value).__name__} {value!r}")
    number = int(value)
    if number < low or (high is not None and number > high):
        accepted = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name}: expected an integer {accepted}; got {number}")
    return number


def _first(mask: npt.NDArray[np.bool_]) -> tuple[int, int | None]:
    """The (row, column) of the first True entry of a 1-D or 2-D mask."""
    flat = int(np.argmax(mask.reshape(-1)))
    if mask.ndim == 1:
        return flat, None
    row, col = divmod(flat, int(mask.shape[1]))
    return row, col


def _check_finite(x: FloatArray) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = _first(bad)
        value = x[row] if col is None else x[row, col]
        raise BadValue("NaN" if np.isnan(value) else f"infinite value {value}", row, col)


def check_predictions(
    predictions: npt.ArrayLike, *, logits: bool, multilabel: bool, normalize: bool = False
) -> FloatArray:
    """Validate one chunk of predictions, shape (n, C); return it as float64 (float32 and
    float16 logits as they are: a float32 logit is at most ~3.4e38, far within the limit).

    Every entry must be finite, and a logit at most :data:`LOGIT_LIMIT` in magnitude.
    Probabilities (``logits=False``) must lie in [0, 1] and, for single-label rows, sum to 1
    within :data:`SUM_TOLERANCE`; ``normalize=True`` divides each row by its sum instead (the
    entries must then be non-negative with a positive sum).

    Raises:
        BadValue: at the first entry (or row) that breaks a rule.
    """
    x = np.asarray(predictions)
    if not (logits and x.dtype in _KEPT_DTYPES):
        x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"predictions: expected a 2-D array (rows, classes); got shape {x.shape}")
    _check_finite(x)
    if logits:
        if x.dtype in _KEPT_DTYPES:  # finite float32 / float16 values are far within the limit
            return x
        beyond = np.abs(x) > LOGIT_LIMIT
        if beyond.any():
            row, col = _first(beyond)
            raise BadValue(
                f"logit {x[row, col]:g} is beyond ±{LOGIT_LIMIT:g}",
                row,
                col,
                hint="no model gives such logits: a corrupt file?",
            )
        return x
    if multilabel:
        bad = (x < 0) | (x > 1)
        if bad.any():
            row, col = _first(bad)
            raise BadValue(
                f"probability {x[row, col]:g} outside [0, 1]",
                row,
                col,
                hint="pass --logits if these are logits",
            )
        return x
    negative = x < 0
    if negative.any():
        row, col = _first(negative)
        raise BadValue(
            f"probability {x[row, col]:g} is negative",
            row,
            col,
            hint="pass --logits if these are logits",
        )
    if normalize:
        # x / sum(x), with each row first divided by its largest entry so that its sum is
        # in [1, C] (a row of 1e308s would sum to inf, one of denormals lose its digits)
        largest = x.max(axis=1, initial=0.0)
        zero = ~(largest > 0)
        if zero.any():
            row = int(np.argmax(zero))
            raise BadValue("row sums to 0 and cannot be normalised", row)
        scaled = x / largest[:, None]
        normalised: FloatArray = scaled / scaled.sum(axis=1)[:, None]
        return normalised
    with np.errstate(over="ignore"):  # a row of huge numbers sums to inf: refused below
        sums = x.sum(axis=1)
    above = x > 1
    off = np.abs(sums - 1.0) > SUM_TOLERANCE
    bad_row = off | above.any(axis=1)
    if bad_row.any():
        row = int(np.argmax(bad_row))
        if above[row].any():
            col = int(np.argmax(above[row]))
            raise BadValue(
                f"probability {x[row, col]:g} outside [0, 1]",
                row,
                col,
                hint="pass --normalize to rescale each row to sum to 1, or --logits for logits",
            )
        raise BadValue(
            f"probabilities sum to {sums[row]:.9g}, not 1",
            row,
            hint="pass --normalize to rescale each row to sum to 1, or --logits for logits",
        )
    return x


def check_labels(
    labels: npt.ArrayLike, num_classes: int, *, multilabel: bool
) -> tuple[IntArray | None, FloatArray | None]:
    """Validate one chunk of labels against ``num_classes``; return ``(ids, rows)``.

    Single-label: integer class ids, shape (n,) or (n, 1), in [0, C) (``rows`` is None), or
    one-hot rows, shape (n, C), each with a single 1 (``ids`` is their argmax and ``rows`` the
    rows). Multi-label: n-hot rows of 0s and 1s, shape (n, C) (``ids`` is None); with C = 1 a
    single column of 0/1 labels is the binary case.

    Raises:
        BadValue: at the first bad entry.
        ValueError: when the shape does not fit ``num_classes``.
    """
    y = np.asarray(labels)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"labels: expected a column or rows of labels; got shape {y.shape}")
    yf = y.astype(np.float64, copy=False)
    _check_finite(yf)
    columns = y.shape[1]
    if multilabel:
        if columns != num_classes:
            raise ValueError(
                f"labels have {columns} column(s) but the predictions have {num_classes} "
                f"classes (--multilabel needs n-hot label rows, one column per class)"
            )
        bad = (yf != 0) & (yf != 1)
        if bad.any():
            row, col = _first(bad)
            raise BadValue(f"label {yf[row, col]:g} is not 0 or 1", row, col)
        return None, yf
    if columns == 1:
        v = yf[:, 0]
        bad = (v != np.floor(v)) | (v < 0) | (v >= num_classes)
        if bad.any():
            row = int(np.argmax(bad))
            raise BadValue(
                f"label {v[row]:g} is not a class id in [0, {num_classes})",
                row,
                0,
                hint="the class count comes from the number of prediction columns",
            )
        return v.astype(np.int64), None
    if columns != num_classes:
        raise ValueError(
            f"labels have {columns} columns but the predictions have {num_classes} classes"
        )
    bad = (yf != 0) & (yf != 1)
    if bad.any():
        row, col = _first(bad)
        raise BadValue(
            f"label {yf[row, col]:g} is not 0 or 1 in a one-hot row",
            row,
            col,
            hint="pass --multilabel for n-hot rows",
        )
    ones = yf.sum(axis=1)
    wrong = ones != 1
    if wrong.any():
        row = int(np.argmax(wrong))
        raise BadValue(
            f"one-hot row has {int(ones[row])} ones, not 1",
            row,
            hint="pass --multilabel for n-hot rows",
        )
    return np.argmax(yf, axis=1).astype(np.int64), yf
