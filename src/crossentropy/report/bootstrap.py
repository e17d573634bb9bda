"""Confidence intervals by a streaming Poisson bootstrap.

**The Poisson bootstrap.** The ordinary bootstrap draws n resampling units with replacement:
unit i appears N_i times, (N_1, ..., N_n) ~ Multinomial(n; 1/n, ..., 1/n), and a replicate's
metric is the mean over the resample, sum_i N_i x_i / sum_i N_i. Each N_i is Binomial(n, 1/n),
which tends to Poisson(1) as n grows, and the counts become independent. The Poisson bootstrap
draws them that way: each unit gets, for each replicate b, an independent weight
w_ib ~ Poisson(1), and the replicate's metric is the weighted mean sum_i w_ib x_i / sum_i w_ib.
Nothing needs to know n in advance: one pass over the data, B running sums per quantity, and two
accumulators over disjoint units merge by adding their sums. This is what makes the intervals
streamable and computable on a cluster (Hanley & MacGibbon 2006; Chamandy et al. 2012).

**The resampling unit** is a row; for token files it is a sequence (tokens of a sequence are
not independent, so a sequence is resampled whole: every token of it gets its sequence's
weight). The caller passes each row's unit number.

**Counter-based weights.** A weight is a function of (seed, unit, replicate) alone
(:func:`poisson_weights`), never of a random generator's state, so the weights cannot depend on
how the rows are chunked, on the order the chunks arrive, on which worker reads them, or on the
machine. The draw is SplitMix64 (Steele, Lea & Flood 2014), vectorised in numpy uint64
arithmetic (multiplication wraps modulo 2^64, as the generator requires):

- ``key = mix(seed * G + G)`` with G = 0x9E3779B97F4A7C15 (the golden-ratio increment) and
  ``mix`` the SplitMix64 finaliser (two xor-shift-multiply rounds and a xor-shift);
- each unit's stream state ``s_u = mix(key ^ ((unit + 1) * G))``;
- replicate b's 64 bits are SplitMix64's (b + 1)-th output of that stream,
  ``mix(s_u + (b + 1) * G)``; their top 53 bits give a uniform u in [0, 1) (a multiple of
  2^-53);
- the weight is Poisson(1) by the inverse CDF: the smallest k with u < F(k), where F(k) =
  sum_{j <= k} e^-1 / j! (tabulated to k = 18, where F reaches 1 in float64).

Two streams overlap only if one state lies within B * G steps of another: chance about
U^2 B / 2^64 for U units, nil in practice.

**The metrics per replicate.** :class:`Bootstrap` keeps, per replicate, float64 sums of the
rows' weights and of the weighted loss, correct (0/1) and Brier score: cross entropy, accuracy
and Brier are the ratios to the weight sum. Calibration keeps, per replicate and per bin of the
*fixed* edges, the weight, the weighted confidence and the weighted correct sums; the ECE of a
replicate is sum_b (W_b / W) |acc_b - conf_b| over its bins of positive weight. The edges are
fixed for all replicates (uniform, or the quantile edges of a first pass): the interval is the
one of the ECE for those bins. A calibration item is a row (single-label: its top-label
confidence) or an element (multi-label: each label's probability), weighted by its row's unit.

**Intervals.** Percentile intervals: the (1 - level)/2 and (1 + level)/2 quantiles of the B
replicate values, by ``np.nanpercentile(..., method="linear")``. The perplexity interval is exp
of the cross-entropy interval (exp is increasing, so quantiles map onto quantiles). A replicate
whose total weight is 0 (every unit drew 0, chance e^-n for n units) has no metric: its value is
NaN and it is left out of the quantiles; with no value at all the interval is (NaN, NaN).

**Caveats for users.**

- The percentile bootstrap under-covers a little at small n (a few points below the nominal
  level with a few hundred units); it is a large-sample method.
- The ECE is biased upward: |acc_b - conf_b| is positive even for a perfectly calibrated model,
  from the noise of acc_b within a bin, and every replicate carries that bias (plus its own
  resampling noise). So the ECE interval of a calibrated model typically does **not** contain 0,
  and it is an interval for the binned ECE at this sample size, not for the true calibration
  error. Compare intervals of models on the same number of rows and bins, not with 0.

**Memory and time.** Rows are first summed per unit (tokens of one sequence collapse to one
row), then processed in sub-chunks whose (units, B) weight matrix stays under
:data:`WEIGHT_BYTES`; the sums are matrix products W.T @ values. The per-bin sums are one
product W.T @ S with S the (units, 3 x bins) matrix of each unit's per-bin count, confidence and
correct sums (for 15 bins, 20,000 rows and B = 1000 this took 0.49 s against 0.99 s for
gathering the weights per item and ``np.add.at``, 0.75 s for sorting by bin and
``np.add.reduceat``; and S does not grow with the items per unit); for many bins, where S would be
large, the sub-chunks shrink so that S also stays under :data:`WEIGHT_BYTES`. Drawing the
weights costs about a dozen numpy passes over the (units, B) matrix: about 20 ns a weight
(20,000 units x 1000 replicates in 0.4 s on one shared core), which dominates the cost.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import numpy.typing as npt

from .calibration import MAX_BINS, bin_index
from .checks import FloatArray, IntArray, check_integer
from .result import Interval, Uncertainty

__all__ = ["MAX_REPLICATES", "WEIGHT_BYTES", "Bootstrap", "poisson_weights"]

MAX_REPLICATES = 100_000
"""The most bootstrap replicates a report takes."""

WEIGHT_BYTES = 32 << 20
"""The most bytes of one sub-chunk's float64 weight matrix (and of its per-bin matrix)."""

_GAMMA = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB
_SEED_LIMIT = 1 << 63
_TWO_TO_MINUS_53 = 2.0**-53


def _poisson_cdf() -> FloatArray:
    """F(k) = P(Poisson(1) <= k) for k = 0, 1, ..., up to where F is 1 in float64 (k = 18).

    Summed exactly (math.fsum) and rounded once; the last entry is set to 1.0 so that every
    u < 1 finds its k."""
    cdf: list[float] = []
    k = 0
    while True:
        value = math.fsum(math.exp(-1.0) / math.factorial(j) for j in range(k + 1))
        if value >= 1.0 or 1.0 - value < _TWO_TO_MINUS_53 / 2:
            cdf.append(1.0)
            return np.asarray(cdf, dtype=np.float64)
        cdf.append(value)
        k += 1


_CDF = _poisson_cdf()


def _mix(z: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser, in place on a uint64 array (wrapping multiplication)."""
    with np.errstate(over="ignore"):
        t = z >> np.uint64(30)
        z ^= t
        z *= np.uint64(_MIX1)
        np.right_shift(z, np.uint64(27), out=t)
        z ^= t
        z *= np.uint64(_MIX2)
        np.right_shift(z, np.uint64(31), out=t)
        z ^= t
    return z


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _check_units(units: npt.ArrayLike) -> IntArray:
    array = np.asarray(units)
    if array.ndim != 1:
        raise ValueError(f"units: expected a 1-D array; got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"units: expected integers; got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.size and int(array.min()) < 0:
        raise ValueError(f"units: expected integers >= 0; got {int(array.min())}")
    return array


def _check_values(name: str, values: npt.ArrayLike, n: int) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), one value per unit; got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite values; got {array[~np.isfinite(array)][0]}")
    return array


def _check_edges(edges: npt.ArrayLike) -> FloatArray:
    array = np.array(edges, dtype=np.float64)
    if array.ndim != 1 or not 2 <= array.shape[0] <= MAX_BINS + 1:
        raise ValueError(
            f"edges: expected a 1-D array of 2 to {MAX_BINS + 1} bin edges; got shape {array.shape}"
        )
    if not np.isfinite(array).all() or not (np.diff(array) > 0).all():
        raise ValueError("edges: expected finite, strictly increasing bin edges")
    return array


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


def poisson_weights(seed: int, units: IntArray, replicates: int) -> FloatArray:
    """(len(units), replicates) Poisson(1) counts, each a function of (seed, unit, replicate)
    alone, so that any chunking of the rows, in any order, on any machine, draws the same.

    Args:
        seed: an integer in [0, 2**63).
        units: 1-D integers >= 0, the resampling unit of each row (repeats allowed).
        replicates: B, in [1, MAX_REPLICATES].

    Returns:
        float64 (len(units), B): row i, column b is the count of unit ``units[i]`` in
        replicate b (see the module docstring for the generator).

    Example:
        >>> w = poisson_weights(7, np.array([3, 0, 3]), 4)
        >>> w.shape, bool((w[0] == w[2]).all())
        ((3, 4), True)
        >>> bool((poisson_weights(7, np.array([0]), 4) == w[1]).all())
        True
    """
    seed = check_integer("seed", seed, 0, _SEED_LIMIT - 1)
    replicates = check_integer("replicates", replicates, 1, MAX_REPLICATES)
    array = _check_units(units)
    return _weights(seed, array, replicates)


def _weights(seed: int, units: IntArray, replicates: int) -> FloatArray:
    with np.errstate(over="ignore"):
        key = _mix(np.array([seed], dtype=np.uint64) * np.uint64(_GAMMA) + np.uint64(_GAMMA))
        state = (units.astype(np.uint64) + np.uint64(1)) * np.uint64(_GAMMA)
        state ^= key
        _mix(state)
        steps = (np.arange(1, replicates + 1, dtype=np.uint64)) * np.uint64(_GAMMA)
        z = state[:, None] + steps[None, :]
    _mix(z)
    z >>= np.uint64(11)
    uniform = z.astype(np.float64)
    uniform *= _TWO_TO_MINUS_53
    counts = np.searchsorted(_CDF, uniform.reshape(-1), side="right")
    return counts.astype(np.float64).reshape(units.shape[0], replicates)


def _per_unit(units: IntArray, columns: list[FloatArray]) -> tuple[IntArray, FloatArray]:
    """The distinct units and, per unit, the sum of each column: (unique units, (U, k))."""
    unique, inverse = np.unique(units, return_inverse=True)
    sums = np.empty((unique.shape[0], len(columns)), dtype=np.float64)
    for j, column in enumerate(columns):
        sums[:, j] = np.bincount(inverse, weights=column, minlength=unique.shape[0])
    return unique, sums


def _cell_sums(
    cell: IntArray, conf: FloatArray, hits: FloatArray, units: int, bins: int
) -> FloatArray:
    """S, (units, 3 bins): per unit (row) the per-bin count, confidence sum and correct sum of
    its items, in columns [0, bins), [bins, 2 bins), [2 bins, 3 bins); ``cell`` is each item's
    unit * bins + bin."""
    size = units * bins
    parts = (
        np.bincount(cell, minlength=size).astype(np.float64),
        np.bincount(cell, weights=conf, minlength=size),
        np.bincount(cell, weights=hits, minlength=size),
    )
    return np.concatenate([x.reshape(units, bins) for x in parts], axis=1)


# --------------------------------------------------------------------------------------------
# The bootstrap
# --------------------------------------------------------------------------------------------


class Bootstrap:
    """Per-replicate weighted sums of the metrics, for fixed calibration edges.

    Args:
        replicates: B, in [1, MAX_REPLICATES].
        seed: an integer in [0, 2**63); the same seed gives the same intervals.
        edges: the calibration bin edges (strictly increasing; bin b is (edges[b], edges[b+1]]).

    Example:
        >>> boot = Bootstrap(200, seed=1, edges=np.linspace(0.0, 1.0, 11))
        >>> units = np.arange(100)
        >>> correct = (units % 4 != 0).astype(float)
        >>> boot.add_rows(units, np.full(100, 0.5), correct, np.full(100, 0.2))
        >>> boot.add_calibration(units, np.full(100, 0.75), correct)
        >>> u = boot.uncertainty(0.9)
        >>> bool(u.accuracy.low < 0.75 < u.accuracy.high), u.cross_entropy.low
        (True, 0.5)
    """

    def __init__(self, replicates: int, seed: int, edges: FloatArray) -> None:
        self.replicates = check_integer("replicates", replicates, 1, MAX_REPLICATES)
        self.seed = check_integer("seed", seed, 0, _SEED_LIMIT - 1)
        self.edges = _check_edges(edges)
        bins = self.edges.shape[0] - 1
        b = self.replicates
        self.weight = np.zeros(b)
        self.loss = np.zeros(b)
        self.correct = np.zeros(b)
        self.brier = np.zeros(b)
        self.bin_weight = np.zeros((b, bins))
        self.bin_confidence = np.zeros((b, bins))
        self.bin_correct = np.zeros((b, bins))

    @property
    def bins(self) -> int:
        """The number of calibration bins."""
        return int(self.edges.shape[0] - 1)

    def _chunk(self, columns: int) -> int:
        """Units per sub-chunk: the (units, B) weights and the (units, columns) values both
        under WEIGHT_BYTES."""
        return max(1, WEIGHT_BYTES // (8 * max(self.replicates, columns)))

    def add_rows(
        self, units: IntArray, loss: FloatArray, correct: FloatArray, brier: FloatArray
    ) -> None:
        """Add rows: each row's unit and its loss (nats), correct (1/0) and Brier score.

        A replicate's cross entropy is then sum_i w_i loss_i / sum_i w_i over all rows added,
        w_i the weight of row i's unit; the same for accuracy and Brier.
        """
        array = _check_units(units)
        columns = self._row_columns(array.shape[0], loss, correct, brier)
        if array.shape[0]:
            unique, sums = _per_unit(array, columns)
            self._absorb(unique, sums, None)

    def add_calibration(self, units: IntArray, confidence: FloatArray, correct: FloatArray) -> None:
        """Add calibration items: each item's unit, confidence and correct (1/0).

        Single-label: one item per row (its top-label confidence); multi-label: one per
        element, each with its row's unit. Bin b of a replicate gets sum w_i, sum w_i conf_i
        and sum w_i correct_i over the items i in it.
        """
        array = _check_units(units)
        n = array.shape[0]
        conf = _check_values("confidence", confidence, n)
        hits = _check_values("correct", correct, n)
        if n:
            unique, inverse = np.unique(array, return_inverse=True)
            self._absorb(unique, None, (inverse, conf, hits))

    def add(
        self,
        units: IntArray,
        loss: FloatArray,
        correct: FloatArray,
        brier: FloatArray,
        confidence: FloatArray,
        right: FloatArray,
        item_units: IntArray | None = None,
    ) -> None:
        """:meth:`add_rows` and :meth:`add_calibration` at once, each unit's weights drawn
        once for both (the draw is most of the bootstrap's cost). The calibration items
        (``confidence``, ``right``) belong to ``item_units``, by default one per row
        (``units``); every item's unit must be one of the rows' units.
        """
        array = _check_units(units)
        columns = self._row_columns(array.shape[0], loss, correct, brier)
        items = array if item_units is None else _check_units(item_units)
        conf = _check_values("confidence", confidence, items.shape[0])
        hits = _check_values("right", right, items.shape[0])
        if not array.shape[0]:
            if items.shape[0]:
                raise ValueError("item_units: calibration items without rows")
            return
        unique, sums = _per_unit(array, columns)
        index = np.minimum(np.searchsorted(unique, items), unique.shape[0] - 1)
        if not np.array_equal(unique[index], items):
            raise ValueError("item_units: expected the units of the rows; got others")
        self._absorb(unique, sums, (index, conf, hits))

    @staticmethod
    def _row_columns(
        n: int, loss: FloatArray, correct: FloatArray, brier: FloatArray
    ) -> list[FloatArray]:
        return [
            np.ones(n),
            _check_values("loss", loss, n),
            _check_values("correct", correct, n),
            _check_values("brier", brier, n),
        ]

    def _absorb(
        self,
        unique: IntArray,
        rows: FloatArray | None,
        items: tuple[IntArray, FloatArray, FloatArray] | None,
    ) -> None:
        """Add per-unit sums: ``rows`` (U, 4) the row columns of each unit, ``items`` each
        calibration item's index into ``unique``, confidence and correct. In sub-chunks of
        units, each sub-chunk's (units, B) weights drawn once and multiplied into both."""
        bins = self.bins
        width = (0 if rows is None else 4) + (0 if items is None else 3 * bins)
        if items is not None:
            index, conf, hits = items
            order = np.argsort(index, kind="stable")
            index, conf, hits = index[order], conf[order], hits[order]
            cell = index * bins + bin_index(conf, self.edges)
        step = self._chunk(width)
        for start in range(0, unique.shape[0], step):
            stop = min(start + step, unique.shape[0])
            parts = [] if rows is None else [rows[start:stop]]
            if items is not None:
                lo, hi = np.searchsorted(index, [start, stop], side="left")
                parts.append(
                    _cell_sums(cell[lo:hi] - start * bins, conf[lo:hi], hits[lo:hi],
                               stop - start, bins)
                )  # fmt: skip
            w = _weights(self.seed, unique[start:stop], self.replicates)
            total = w.T @ np.concatenate(parts, axis=1)
            if rows is not None:
                self.weight += total[:, 0]
                self.loss += total[:, 1]
                self.correct += total[:, 2]
                self.brier += total[:, 3]
                total = total[:, 4:]
            if items is not None:
                self.bin_weight += total[:, :bins]
                self.bin_confidence += total[:, bins : 2 * bins]
                self.bin_correct += total[:, 2 * bins :]

    def merge(self, other: Bootstrap) -> None:
        """Add the sums of ``other`` (fed disjoint units, or the same rows split otherwise):
        it must have the same replicates, seed and edges."""
        if not isinstance(other, Bootstrap):
            raise TypeError(f"other: expected a Bootstrap; got {type(other).__name__}")
        if other.replicates != self.replicates:
            raise ValueError(
                f"other: replicates differ ({self.replicates} here, {other.replicates} there)"
            )
        if other.seed != self.seed:
            raise ValueError(f"other: seeds differ ({self.seed} here, {other.seed} there)")
        if other.edges.shape != self.edges.shape or not np.array_equal(other.edges, self.edges):
            raise ValueError("other: calibration edges differ")
        self.weight += other.weight
        self.loss += other.loss
        self.correct += other.correct
        self.brier += other.brier
        self.bin_weight += other.bin_weight
        self.bin_confidence += other.bin_confidence
        self.bin_correct += other.bin_correct

    def replicate_values(self) -> dict[str, FloatArray]:
        """The (B,) values of each metric per replicate: "cross_entropy", "accuracy", "brier",
        "ece"; NaN for a replicate of zero total weight (of rows; of calibration items for
        the ECE)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            values = {
                "cross_entropy": self.loss / self.weight,
                "accuracy": self.correct / self.weight,
                "brier": self.brier / self.weight,
            }
            total = self.bin_weight.sum(axis=1)
            filled = self.bin_weight > 0
            safe = np.where(filled, self.bin_weight, 1.0)
            gap = np.abs(self.bin_correct - self.bin_confidence) / safe
            # sum_b (W_b / W) |acc_b - conf_b| = sum_b |C_b - K_b| / W over filled bins.
            gap_sum = np.where(filled, gap * self.bin_weight, 0.0).sum(axis=1)
            values["ece"] = gap_sum / total
        for key in ("cross_entropy", "accuracy", "brier"):
            values[key][self.weight <= 0] = np.nan
        values["ece"][total <= 0] = np.nan
        return values

    def uncertainty(self, level: float) -> Uncertainty:
        """Percentile intervals at confidence ``level`` (in (0, 1)) of every metric.

        The interval is the (1 - level)/2 and (1 + level)/2 quantiles of the replicate values
        (``np.nanpercentile``, method "linear"; NaN replicates left out); perplexity is exp of
        the cross-entropy interval.
        """
        if isinstance(level, bool) or not isinstance(level, numbers.Real):
            raise TypeError(f"level: expected a number in (0, 1); got {level!r}")
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"level: expected a number in (0, 1), e.g. 0.95; got {level}")
        level = float(level)
        values = self.replicate_values()
        q = [50.0 * (1.0 - level), 50.0 * (1.0 + level)]
        intervals = {key: _percentiles(value, q) for key, value in values.items()}
        ce = intervals["cross_entropy"]
        return Uncertainty(
            replicates=self.replicates,
            seed=self.seed,
            level=level,
            cross_entropy=ce,
            perplexity=Interval(float(np.exp(ce.low)), float(np.exp(ce.high))),
            accuracy=intervals["accuracy"],
            brier=intervals["brier"],
            ece=intervals["ece"],
        )


def _percentiles(values: FloatArray, q: list[float]) -> Interval:
    if np.isnan(values).all():
        return Interval(math.nan, math.nan)
    low, high = np.nanpercentile(values, q, method="linear")
    return Interval(float(low), float(high))
