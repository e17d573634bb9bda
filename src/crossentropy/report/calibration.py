"""Calibration: confidence bins and their errors, as mergeable sums.

Every object here is a set of running sums: fed chunk by chunk, two of them merge into the one
of their data together, and the errors are computed from the sums at the end.

Definitions
-----------
**Bins.** ``edges`` is a non-decreasing array e_0 <= e_1 <= ... <= e_B in [0, 1]; bin b holds
the confidences c with e_b < c <= e_{b+1}; a confidence <= e_0 goes to bin 0 and one > e_B to
bin B - 1 (:func:`bin_index`: ``searchsorted(edges, c, side="left") - 1``, clipped).
:func:`uniform_edges` gives ``linspace(0, 1, B + 1)``.

**Errors.** With n_b the count of bin b (a weight: the bootstrap's counts are not integers),
n = sum_b n_b, conf_b and acc_b the mean confidence and the mean correctness of bin b::

    ECE   = sum_b (n_b / n) |acc_b - conf_b|                  (l1)
    RMSCE = sqrt(sum_b (n_b / n) (acc_b - conf_b)^2)          (l2)
    MCE   = max over the non-empty bins (n_b > 0) of |acc_b - conf_b|   (max)

With n = 0 (nothing binned) all three are NaN. These are torchmetrics'
``CalibrationError(norm="l1" | "l2" | "max")`` (``debias=False``, its default) and netcal's
``ECE`` and ``MCE``, up to the differences below.

**Classwise ECE** (:class:`ClasswiseBins`): per class j, the ECE above of the one-vs-rest
column p[:, j] against the 0/1 target of class j, over uniform bins; the classwise ECE of a
report is the mean over the classes.

**Quantile (equal-mass) bins** (:class:`ConfidenceValues`): with the distinct confidences
(groups) sorted, group k of count c_k and C_k = c_1 + ... + c_k, n = C_K, group k goes to bin
``b(k) = min(B - 1, floor(B (C_{k-1} + c_k / 2) / n))``: the bin of the group's middle rank.
b(k) is non-decreasing in k, so bins are runs of whole groups: a tie is never split. A group
larger than n / B may span several quantiles; the bins it skips are empty and are dropped, so
fewer than B bins may come back. The edges are ``[0.0, u_1, ..., u_m]`` with u_j the largest
confidence of non-empty bin j; binning the same data with those edges (:class:`ConfidenceBins`)
gives exactly the bins of :meth:`ConfidenceValues.binned`, which is how a second pass with
fixed edges (the bootstrap's) reproduces the quantile bins.

Differences from the peer libraries
-----------------------------------
- torchmetrics bins with ``torch.bucketize(c, edges, right=True) - 1``: bin b holds
  [e_b, e_{b+1}), and a confidence of exactly 1.0 gets a bin B of its own. Here bin b holds
  (e_b, e_{b+1}] and 1.0 is in the last bin. The two agree unless a confidence is exactly an
  edge k / B (1.0 included: saturated float32 softmax outputs are).
- torchmetrics' ``MulticlassCalibrationError`` casts the top-label confidences to float32
  (``confidences.float()``) and bins and sums them in float32: it agrees with this module to
  float32 rounding (~1e-6) only. ``BinaryCalibrationError`` keeps float64, and its confidence is
  the given probability of class 1 (not max(p, 1 - p)).
- netcal clips confidences to [eps, 1 - eps] (eps of the dtype) before it bins them and
  averages the clipped values; its bins (``numpy.histogramdd``) are [e_b, e_{b+1}), the last
  one closed. It agrees with this module unless a confidence is an edge or within eps of 0
  or 1. netcal also treats any problem whose labels take at most 2 distinct values as binary.
- scikit-learn's ``calibration_curve(strategy="quantile")`` takes interpolated percentiles as
  edges and can split a tie; with distinct confidences and n divisible by B its bins are those
  of :class:`ConfidenceValues` (m = n / B sorted values each).

Memory
------
:class:`ConfidenceBins` holds 3 arrays of B entries. :class:`ConfidenceValues` holds 5 arrays
of at most ``max_distinct`` entries (40 MiB at :data:`MAX_DISTINCT`), plus the distinct values
of the chunk being added. :class:`ClasswiseBins` holds 3 arrays of C x B entries, at most
:data:`CLASSWISE_LIMIT` cells (48 MiB).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .checks import FloatArray, IntArray, check_integer
from .result import CalibrationBin

__all__ = [
    "CLASSWISE_LIMIT",
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

CLASSWISE_LIMIT = 1 << 21
"""The most (class, bin) cells of a :class:`ClasswiseBins`: 3 float64/int64 arrays of that
many entries, 48 MiB. 128,256 classes (Llama 3's vocabulary) x 15 bins fit; the accumulator
leaves the classwise ECE out (None) beyond."""


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _check_bins(bins: object) -> int:
    return check_integer("bins", bins, 1, MAX_BINS)


def _check_unit(values: npt.ArrayLike, name: str, ndim: int) -> FloatArray:
    """``values`` as a float64 array of ``ndim`` dimensions with every entry in [0, 1]."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D array; got shape {x.shape}")
    bad = ~((x >= 0.0) & (x <= 1.0))  # NaN compares False: caught here
    if bad.any():
        where = np.unravel_index(int(np.argmax(bad)), x.shape)
        place = ", ".join(str(int(i)) for i in where)
        raise ValueError(f"{name}: expected values in [0, 1]; got {x[where]!r} at [{place}]")
    # -0.0 + 0.0 is +0.0: the bit pattern of every entry is then that of a non-negative float
    return x + 0.0


def _check_pair(
    first: npt.ArrayLike, second: npt.ArrayLike, names: tuple[str, str], ndim: int
) -> tuple[FloatArray, FloatArray]:
    a = _check_unit(first, names[0], ndim)
    b = _check_unit(second, names[1], ndim)
    if a.shape != b.shape:
        raise ValueError(
            f"{names[1]}: expected the shape of {names[0]} {a.shape}; got shape {b.shape}"
        )
    return a, b


def _check_edges(edges: npt.ArrayLike) -> FloatArray:
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or not 2 <= e.size <= MAX_BINS + 1:
        raise ValueError(
            f"edges: expected a 1-D array of 2 to {MAX_BINS + 1} entries; got shape {e.shape}"
        )
    if not ((e >= 0.0) & (e <= 1.0)).all():
        raise ValueError(f"edges: expected values in [0, 1]; got {e.tolist()}")
    if (np.diff(e) < 0).any():
        raise ValueError(f"edges: expected a non-decreasing array; got {e.tolist()}")
    return e + 0.0


# --------------------------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------------------------


def uniform_edges(bins: int) -> FloatArray:
    """The edges 0, 1/B, ..., 1 of B equal-width bins: ``numpy.linspace(0, 1, B + 1)``.

    Example:
        >>> uniform_edges(4).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    b = _check_bins(bins)
    edges: FloatArray = np.linspace(0.0, 1.0, b + 1)
    return edges


def _bin_index(confidence: FloatArray, edges: FloatArray) -> IntArray:
    index = np.searchsorted(edges, confidence, side="left").astype(np.int64) - 1
    clipped: IntArray = np.clip(index, 0, edges.size - 2)
    return clipped


def bin_index(confidence: FloatArray, edges: FloatArray) -> IntArray:
    """The bin of each confidence: bin b holds (edges[b], edges[b + 1]]; 0 goes to bin 0.

    A confidence <= edges[0] goes to bin 0 and one > edges[-1] to the last bin. (torchmetrics
    puts a confidence exactly on an edge into the upper bin: [lower, upper).)

    Example:
        >>> bin_index(np.array([0.0, 0.25, 0.3, 1.0]), uniform_edges(4)).tolist()
        [0, 0, 1, 3]
    """
    e = _check_edges(edges)
    c = _check_unit(confidence, "confidence", np.ndim(confidence))
    return _bin_index(c, e)


def calibration_errors(
    count: npt.ArrayLike, confidence_sum: npt.ArrayLike, correct_sum: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(ECE, RMSCE, MCE) from per-bin sums over the last axis (leading axes: replicates).

    ECE = sum_b (n_b / n) |acc_b - conf_b|, RMSCE = sqrt(sum_b (n_b / n) (acc_b - conf_b)^2),
    MCE = max over non-empty bins of |acc_b - conf_b|; torchmetrics' CalibrationError with
    norm l1, l2, max. Counts may be weights (the bootstrap's). Where n = 0 the three are NaN.

    Returns:
        Three float64 arrays of the leading shape (0-d for 1-D sums).

    Example:
        >>> ece, rmsce, mce = calibration_errors([2, 2], [0.5, 1.6], [0, 2])
        >>> round(float(ece), 12), round(float(mce), 12)
        (0.225, 0.25)
    """
    n_b = np.asarray(count, dtype=np.float64)
    conf = np.asarray(confidence_sum, dtype=np.float64)
    corr = np.asarray(correct_sum, dtype=np.float64)
    if n_b.ndim < 1 or n_b.shape[-1] < 1:
        raise ValueError(f"count: expected an array with at least one bin; got shape {n_b.shape}")
    for name, array in (("confidence_sum", conf), ("correct_sum", corr)):
        if array.shape != n_b.shape:
            raise ValueError(f"{name}: expected the shape of count {n_b.shape}; got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: expected finite sums; got a NaN or infinite entry")
    if not (n_b >= 0).all() or not np.isfinite(n_b).all():
        raise ValueError("count: expected finite non-negative counts; got a negative or NaN one")
    n = n_b.sum(axis=-1)
    filled = n_b > 0
    safe = np.where(filled, n_b, 1.0)
    gap = np.where(filled, np.abs(corr / safe - conf / safe), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = n_b / n[..., None]
        ece = np.sum(share * gap, axis=-1)
        rmsce = np.sqrt(np.sum(share * gap * gap, axis=-1))
    mce = np.max(np.where(filled, gap, -np.inf), axis=-1)
    empty = ~(n > 0)
    ece, rmsce, mce = (np.where(empty, np.nan, x).astype(np.float64) for x in (ece, rmsce, mce))
    return ece, rmsce, mce


# --------------------------------------------------------------------------------------------
# Fixed bins
# --------------------------------------------------------------------------------------------


class ConfidenceBins:
    """Per-bin sums (count, confidence, correct) for fixed edges.

    Attributes:
        edges: the B + 1 edges (see :func:`bin_index`).
        count: (B,) int64 rows per bin.
        confidence_sum, correct_sum: (B,) float64 sums of the confidences and correctness.

    Example:
        >>> bins = ConfidenceBins(uniform_edges(2))
        >>> bins.add(np.array([0.25, 0.25, 0.75, 0.75]), np.array([0.0, 1.0, 1.0, 1.0]))
        >>> [round(x, 12) for x in bins.errors()]
        [0.25, 0.25, 0.25]
    """

    def __init__(self, edges: FloatArray) -> None:
        self.edges = _check_edges(edges)
        size = self.edges.size - 1
        self.count: IntArray = np.zeros(size, dtype=np.int64)
        self.confidence_sum: FloatArray = np.zeros(size)
        self.correct_sum: FloatArray = np.zeros(size)

    def add(self, confidence: FloatArray, correct: FloatArray) -> None:
        """Bin one chunk: ``confidence`` (n,) in [0, 1], ``correct`` (n,) in [0, 1] (0/1)."""
        c, r = _check_pair(confidence, correct, ("confidence", "correct"), 1)
        index = _bin_index(c, self.edges)
        size = self.count.size
        self.count += np.bincount(index, minlength=size)
        self.confidence_sum += np.bincount(index, weights=c, minlength=size)
        self.correct_sum += np.bincount(index, weights=r, minlength=size)

    def merge(self, other: ConfidenceBins) -> None:
        """Add the sums of ``other`` (same edges) into these."""
        if not isinstance(other, ConfidenceBins):
            raise TypeError(f"other: expected a ConfidenceBins; got {type(other).__name__}")
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("other: expected the same edges; got different ones")
        self.count += other.count
        self.confidence_sum += other.confidence_sum
        self.correct_sum += other.correct_sum

    def errors(self) -> tuple[float, float, float]:
        """(ECE, RMSCE, MCE) of the bins (NaN when empty); see :func:`calibration_errors`."""
        ece, rmsce, mce = calibration_errors(self.count, self.confidence_sum, self.correct_sum)
        return float(ece), float(rmsce), float(mce)

    def bins(self) -> list[CalibrationBin]:
        """One :class:`CalibrationBin` per bin, empty ones included (mean and accuracy None)."""
        out = []
        for b in range(self.count.size):
            n = int(self.count[b])
            out.append(
                CalibrationBin(
                    lower=float(self.edges[b]),
                    upper=float(self.edges[b + 1]),
                    count=n,
                    confidence=float(self.confidence_sum[b] / n) if n else None,
                    accuracy=float(self.correct_sum[b] / n) if n else None,
                )
            )
        return out


# --------------------------------------------------------------------------------------------
# Distinct confidences: quantile bins
# --------------------------------------------------------------------------------------------


def _reduce_sorted(
    keys: IntArray, count: IntArray, conf: FloatArray, corr: FloatArray, top: FloatArray
) -> tuple[IntArray, IntArray, FloatArray, FloatArray, FloatArray]:
    """Sum the runs of equal keys of a sorted ``keys`` (the maximum of ``top``)."""
    if keys.size == 0:
        return keys, count, conf, corr, top
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    return (
        keys[starts],
        np.add.reduceat(count, starts),
        np.add.reduceat(conf, starts),
        np.add.reduceat(corr, starts),
        np.maximum.reduceat(top, starts),
    )


class ConfidenceValues:
    """Exact sums per distinct confidence: the equal-mass (quantile) bins, ties never split.

    The store is five sorted arrays, one entry per group: ``keys`` (int64), ``count`` (int64),
    ``confidence_sum``, ``correct_sum`` and ``maximum`` (the group's largest confidence). The key
    of a confidence c in [0, 1] is its float64 bit pattern read as an int64 (monotone in c for
    c >= 0) shifted right by ``shift``. With ``shift = 0`` a group is one distinct value. When
    there are more than ``max_distinct`` groups, ``shift`` grows by 1 until they fit:
    neighbouring values merge into one group (a relative width of 2^(shift - 52)).

    The final shift does not depend on the chunking or the merge order: it is s* = the smallest
    s at which the keys b >> s of all the values seen (U) number at most ``max_distinct``.
    Proof: D_S(s), the number of distinct b >> s over a set S, is non-increasing in s and
    D_S(s) <= D_U(s) for S a subset of U. The shift grows past s only when the store, the
    values of some S at shift s, has D_S(s) > max_distinct, so D_U(s) > max_distinct and s < s*:
    the shift never exceeds s*. At the end the store holds U at a shift s <= s* and fits, so
    D_U(s) <= max_distinct, and s >= s* by the minimality of s*. Keys at shift s are b >> s
    whatever the path ((b >> s) >> d = b >> (s + d)), so the keys and counts are the same for
    any chunking and merge order; the float sums differ by rounding only.

    Args:
        max_distinct: the most groups kept (keyword; default :data:`MAX_DISTINCT`).

    Example:
        >>> values = ConfidenceValues()
        >>> values.add(np.array([0.9, 0.6, 0.6, 0.8]), np.array([1.0, 0.0, 1.0, 1.0]))
        >>> values.edges(2).tolist()
        [0.0, 0.6, 0.9]
    """

    def __init__(self, *, max_distinct: int = MAX_DISTINCT) -> None:
        self.max_distinct = check_integer("max_distinct", max_distinct, 1)
        self.shift = 0
        self.keys: IntArray = np.zeros(0, dtype=np.int64)
        self.count: IntArray = np.zeros(0, dtype=np.int64)
        self.confidence_sum: FloatArray = np.zeros(0)
        self.correct_sum: FloatArray = np.zeros(0)
        self.maximum: FloatArray = np.zeros(0)

    @property
    def total(self) -> int:
        """The number of confidences added."""
        return int(self.count.sum())

    def add(self, confidence: FloatArray, correct: FloatArray) -> None:
        """Add one chunk: ``confidence`` (n,) in [0, 1], ``correct`` (n,) in [0, 1] (0/1)."""
        c, r = _check_pair(confidence, correct, ("confidence", "correct"), 1)
        keys = c.view(np.int64) >> self.shift
        order = np.argsort(keys, kind="stable")
        groups = _reduce_sorted(
            keys[order], np.ones(c.size, dtype=np.int64), c[order], r[order], c[order]
        )
        self._absorb(*groups)
        self._compact()

    def merge(self, other: ConfidenceValues) -> None:
        """Add the groups of ``other`` (left unchanged) into these, at the larger shift."""
        if not isinstance(other, ConfidenceValues):
            raise TypeError(f"other: expected a ConfidenceValues; got {type(other).__name__}")
        if self.max_distinct != other.max_distinct:
            raise ValueError(
                f"other: expected max_distinct {self.max_distinct}; got {other.max_distinct}"
            )
        if other.shift > self.shift:
            self._rekey(other.shift)
        groups = (
            other.keys >> (self.shift - other.shift),
            other.count,
            other.confidence_sum,
            other.correct_sum,
            other.maximum,
        )
        self._absorb(*_reduce_sorted(*groups))
        self._compact()

    def _absorb(
        self, keys: IntArray, count: IntArray, conf: FloatArray, corr: FloatArray, top: FloatArray
    ) -> None:
        """Add sorted distinct groups (at this shift) into the store."""
        at = np.searchsorted(self.keys, keys)
        found = at < self.keys.size
        found[found] = self.keys[at[found]] == keys[found]
        old = at[found]  # distinct positions: fancy-index += is exact
        self.count[old] += count[found]
        self.confidence_sum[old] += conf[found]
        self.correct_sum[old] += corr[found]
        self.maximum[old] = np.maximum(self.maximum[old], top[found])
        new, place = ~found, at[~found]
        self.keys = np.insert(self.keys, place, keys[new])
        self.count = np.insert(self.count, place, count[new])
        self.confidence_sum = np.insert(self.confidence_sum, place, conf[new])
        self.correct_sum = np.insert(self.correct_sum, place, corr[new])
        self.maximum = np.insert(self.maximum, place, top[new])

    def _rekey(self, shift: int) -> None:
        """Move the store to a larger ``shift``, merging the groups whose keys meet."""
        groups = _reduce_sorted(
            self.keys >> (shift - self.shift),
            self.count,
            self.confidence_sum,
            self.correct_sum,
            self.maximum,
        )
        self.keys, self.count, self.confidence_sum, self.correct_sum, self.maximum = groups
        self.shift = shift

    def _compact(self) -> None:
        """Raise the shift to the smallest one at which the groups fit in ``max_distinct``."""
        if self.keys.size <= self.max_distinct:
            return
        step = 1
        while True:
            shifted = self.keys >> step
            if 1 + int(np.count_nonzero(shifted[1:] != shifted[:-1])) <= self.max_distinct:
                break
            step += 1
        self._rekey(self.shift + step)

    def _bin_of_group(self, bins: int) -> IntArray:
        """b(k) = min(B - 1, floor(B (C_{k-1} + c_k / 2) / n)), in integers."""
        before = np.cumsum(self.count) - self.count
        rank2 = 2 * before + self.count  # 2 (C_{k-1} + c_k / 2)
        b: IntArray = np.minimum((bins * rank2) // (2 * self.total), bins - 1)
        return b

    def edges(self, bins: int) -> FloatArray:
        """The edges of the equal-mass bins: 0.0 then the largest confidence of each non-empty
        bin (at most ``bins`` bins; empty ones dropped). With nothing added: uniform edges."""
        b = _check_bins(bins)
        if self.total == 0:
            return uniform_edges(b)
        group_bin = self._bin_of_group(b)
        last = np.flatnonzero(np.concatenate((group_bin[1:] != group_bin[:-1], [True])))
        edges: FloatArray = np.concatenate(([0.0], self.maximum[last]))
        return edges

    def binned(self, bins: int) -> ConfidenceBins:
        """The :class:`ConfidenceBins` of :meth:`edges` with the summed sums of their groups."""
        edges = self.edges(bins)
        out = ConfidenceBins(edges)
        if self.total == 0:
            return out
        group_bin = self._bin_of_group(_check_bins(bins))
        # the non-empty bins, renumbered 0, 1, ... in order (the dropped ones have no group)
        index = np.concatenate(([0], np.cumsum(group_bin[1:] != group_bin[:-1])))
        size = edges.size - 1
        out.count += np.bincount(index, weights=self.count, minlength=size).astype(np.int64)
        out.confidence_sum += np.bincount(index, weights=self.confidence_sum, minlength=size)
        out.correct_sum += np.bincount(index, weights=self.correct_sum, minlength=size)
        return out


# --------------------------------------------------------------------------------------------
# Classwise
# --------------------------------------------------------------------------------------------


class ClasswiseBins:
    """Per class, uniform-bin sums of its one-vs-rest column: the classwise ECE.

    Attributes:
        count: (C, B) int64 rows per class and bin of p[:, j].
        prob_sum, target_sum: (C, B) float64 sums of p[:, j] and of the 0/1 target of class j.

    Example:
        >>> cw = ClasswiseBins(2, 2)
        >>> cw.add(np.array([[0.8, 0.2], [0.4, 0.6]]), np.array([[1.0, 0.0], [1.0, 0.0]]))
        >>> [round(x, 12) for x in cw.errors().tolist()]
        [0.4, 0.4]
    """

    def __init__(self, num_classes: int, bins: int) -> None:
        self.num_classes = check_integer("num_classes", num_classes, 1)
        self.edges = uniform_edges(bins)
        size = self.edges.size - 1
        if self.num_classes * size > CLASSWISE_LIMIT:
            raise ValueError(
                f"num_classes: num_classes x bins must be at most {CLASSWISE_LIMIT}; got "
                f"{self.num_classes} x {size}"
            )
        self.count: IntArray = np.zeros((self.num_classes, size), dtype=np.int64)
        self.prob_sum: FloatArray = np.zeros((self.num_classes, size))
        self.target_sum: FloatArray = np.zeros((self.num_classes, size))

    def add(self, probabilities: FloatArray, targets: FloatArray) -> None:
        """Bin one chunk: ``probabilities`` (n, C) in [0, 1], ``targets`` (n, C) 0/1."""
        p, t = _check_pair(probabilities, targets, ("probabilities", "targets"), 2)
        if p.shape[1] != self.num_classes:
            raise ValueError(
                f"probabilities: expected {self.num_classes} columns; got shape {p.shape}"
            )
        size = self.edges.size - 1
        cells = self.num_classes * size
        flat = (_bin_index(p, self.edges) + size * np.arange(self.num_classes)).ravel()
        shape = self.count.shape
        self.count += np.bincount(flat, minlength=cells).reshape(shape)
        self.prob_sum += np.bincount(flat, weights=p.ravel(), minlength=cells).reshape(shape)
        self.target_sum += np.bincount(flat, weights=t.ravel(), minlength=cells).reshape(shape)

    def merge(self, other: ClasswiseBins) -> None:
        """Add the sums of ``other`` (same classes and bins) into these."""
        if not isinstance(other, ClasswiseBins):
            raise TypeError(f"other: expected a ClasswiseBins; got {type(other).__name__}")
        if other.count.shape != self.count.shape:
            raise ValueError(
                f"other: expected (classes, bins) {self.count.shape}; got {other.count.shape}"
            )
        self.count += other.count
        self.prob_sum += other.prob_sum
        self.target_sum += other.target_sum

    def errors(self) -> FloatArray:
        """(C,) the ECE of each class's column (NaN before any row); the report's classwise
        ECE is their mean."""
        ece, _, _ = calibration_errors(self.count, self.prob_sum, self.target_sum)
        return ece
