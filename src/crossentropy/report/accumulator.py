"""The report as running sums: fed chunk by chunk, merged across workers.

:class:`ReportAccumulator` is fed the predictions and labels chunk by chunk (``update``) and
keeps only running sums, so its memory is bounded by the number of classes, the number of bins,
the bootstrap replicates and the worst rows kept, never by the number of rows (two documented
exceptions: token files keep two numbers per sequence, and quantile bins keep one entry per
distinct confidence, at most :data:`~crossentropy.report.calibration.MAX_DISTINCT`).
``result()`` turns the sums into a :class:`~crossentropy.report.result.Report`:

- the mean cross entropy, in nats and in bits, and the perplexity exp(mean nats);
- the accuracy (multi-label: exact-match accuracy, and the per-element accuracy) and the top-k
  accuracy (the label among the k highest scores; ties go to the lower class index, as argmax
  does, where scikit-learn's ``top_k_accuracy_score`` prefers the higher one);
- per class: its count, its mean cross entropy, its accuracy and its one-vs-rest ECE;
- the Brier score: for single-label rows the sum over classes of the squared error
  (p_ic - y_ic)^2, averaged over rows (scikit-learn's multiclass ``brier_score_loss`` with
  ``scale_by_half=False``); for multi-label rows the mean over elements of (p_ij - y_ij)^2
  (the mean of the per-label binary Brier scores);
- calibration over ``bins`` confidence bins, equal-width (``binning="uniform"``) or equal-mass
  (``"quantile"``, ties never split): ECE = sum_b (n_b / n) |accuracy_b - confidence_b|, RMSCE
  (the root of the same mean of squares) and MCE (the largest gap); the confidence of a
  single-label row is its largest probability and it is right when its argmax is the label; a
  multi-label element's confidence is max(p, 1 - p) and it is right when (p > 1/2) equals its
  label. The classwise ECE is the mean over classes of the ECE of each class's one-vs-rest
  column (its probability against the indicator of the class; multi-label: each label's
  probability against the label), over uniform bins, computed for at most
  :data:`CLASSWISE_CLASSES` classes (a vocabulary is not a set of classes one calibrates);
- the ``worst`` rows with the largest loss (row index and loss), kept in a bounded heap; ties
  go to the earlier row, so the result does not depend on the chunking;
- token files (``sequences`` given): the quantiles over sequences of each sequence's
  perplexity, exp(mean cross entropy of its scored tokens);
- ``bootstrap=B``: percentile intervals at ``level`` from a Poisson bootstrap over rows (over
  sequences for token files), see :mod:`crossentropy.report.bootstrap`.

Rows whose label is ``ignore_index`` are skipped and counted. The options are one checked
value, :class:`ReportOptions`; :func:`token_layout` is the shape rule of token arrays.

**Merging.** Two accumulators of disjoint rows merge (:meth:`ReportAccumulator.merge`) into the
accumulator of all of them: every count, bin, worst row, sequence and bootstrap weight is the
one a single pass gives (rows are numbered globally from ``first_row``, so the worst rows and
the bootstrap's per-row weights do not depend on where a chunk starts), and every sum is the
same sum of the same terms, added in another order (so equal to float64 rounding: relative
differences of order 1e-16 per term).

The per-row quantities come from :func:`crossentropy.report.rows.score_rows` (the fused C
kernel for logits when torch is installed, float64 NumPy otherwise); for probabilities the
loss is -log p_y with p_y clipped to [EPS, 1 - EPS] (scikit-learn's ``log_loss`` rule), and
multi-label rows use ``sigmoid_cross_entropy`` / ``binary_cross_entropy`` (same eps). The loss
of a multi-label row is the mean of its per-label losses, so the mean cross entropy is the mean
over all elements.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

import crossentropy as ce

from .bootstrap import MAX_REPLICATES, Bootstrap
from .calibration import (
    MAX_BINS,
    ClasswiseBins,
    ConfidenceBins,
    ConfidenceValues,
    uniform_edges,
)
from .checks import (
    EPS,
    BadValue,
    FloatArray,
    IntArray,
    check_integer,
    check_labels,
    check_predictions,
)
from .result import ClassStats, Report, SequenceStats, WorstRow
from .rows import refuses_non_finite, score_rows

__all__ = [
    "BINNINGS",
    "CLASSWISE_CLASSES",
    "CLASSWISE_PIECE",
    "ECE_BINS",
    "SEQUENCE_QUANTILES",
    "ReportAccumulator",
    "ReportOptions",
    "compute_report",
    "token_layout",
]

ECE_BINS = 15
"""The default number of confidence bins."""

CLASSWISE_CLASSES = 1024
"""The most classes for which the classwise ECE is computed (it costs a pass over every
probability, and C x bins sums)."""

CLASSWISE_PIECE = 1 << 18
"""How many entries of a chunk the classwise sums take at a time (a few MiB of float64)."""

BINNINGS = ("uniform", "quantile")
"""The binnings of the calibration: equal-width bins, or equal-mass bins (ties never split)."""

SEQUENCE_QUANTILES = {"min": 0.0, "5%": 0.05, "25%": 0.25, "50%": 0.5, "75%": 0.75,
                      "95%": 0.95, "max": 1.0}  # fmt: skip
"""The quantiles of the per-sequence perplexity a token report gives."""

_SEED_LIMIT = 1 << 63


def _mean(total: float, count: float) -> float | None:
    return total / count if count > 0 else None


def _checked_edges(edges: npt.ArrayLike) -> FloatArray:
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size < 2 or not np.all(np.isfinite(e)):
        raise ValueError(f"edges: expected at least 2 finite bin edges in a 1-D array; got {e!r}")
    if e[0] != 0.0 or e[-1] > 1.0 or np.any(np.diff(e) <= 0):
        raise ValueError(
            "edges: expected increasing edges from 0 to at most 1 "
            f"(as quantile_edges() gives); got {e.tolist()[:6]}..."
        )
    return e


def _edge_values(edges: npt.ArrayLike | None) -> tuple[float, ...] | None:
    """``edges`` checked (:func:`_checked_edges`), as the tuple :class:`ReportOptions` holds."""
    return None if edges is None else tuple(_checked_edges(edges).tolist())


@dataclass(frozen=True)
class ReportOptions:
    """The options of a report, checked once: one frozen value that compares, hashes and
    pickles (Dask ships it to the workers).

    :class:`ReportAccumulator` (:meth:`ReportAccumulator.from_options`), :func:`compute_report`
    and :func:`~crossentropy.report.on_dask.dask_report` take these options; the checks that
    need the number of classes C (``top_k`` at most C) and the edges a bootstrap over quantile
    bins needs are the accumulator's.

    Attributes:
        logits: the predictions are logits (softmax / sigmoid applied here) rather than
            probabilities. Log-probabilities are logits (their log-sum-exp is 0).
        multilabel: one independent binary label per class (sigmoid / binary cross entropy).
        normalize: divide each row of probabilities by its sum (single-label probabilities).
        worst: how many of the worst-scored rows to keep.
        bins: the number of confidence bins, 1 to ``MAX_BINS``.
        binning: ``"uniform"`` (equal width) or ``"quantile"`` (equal mass, ties never split).
        top_k: also give the top-k accuracy (single-label), k >= 1 (and at most C).
        ignore_index: a class id whose rows are skipped (single-label integer labels).
        bootstrap: the number of Poisson bootstrap replicates (0: no intervals).
        seed: the bootstrap's seed, 0 <= seed < 2**63.
        level: the intervals' confidence level, in (0, 1).
        edges: fixed bin edges (``quantile_edges()`` of a first pass), with
            ``binning="quantile"`` only; held as a tuple of floats (an array is accepted).

    Raises:
        TypeError, ValueError: an option of the wrong type or out of range, or options that
            do not go together, named.

    Example:
        >>> options = ReportOptions(logits=True, bins=10)
        >>> options.bins, options.binning, options == ReportOptions(logits=True, bins=10)
        (10, 'uniform', True)
        >>> ReportOptions(level=1.0)
        Traceback (most recent call last):
        ...
        ValueError: level: expected a confidence level in (0, 1); got 1.0
    """

    logits: bool = False
    multilabel: bool = False
    normalize: bool = False
    worst: int = 10
    bins: int = ECE_BINS
    binning: str = "uniform"
    top_k: int | None = None
    ignore_index: int | None = None
    bootstrap: int = 0
    seed: int = 0
    level: float = 0.95
    edges: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        def keep(name: str, value: object) -> None:
            object.__setattr__(self, name, value)  # frozen: set once, here

        if self.normalize and (self.logits or self.multilabel):
            raise ValueError(
                "normalize: applies to single-label probabilities, not to logits or multilabel"
            )
        multilabel = bool(self.multilabel)
        keep("logits", bool(self.logits))
        keep("multilabel", multilabel)
        keep("normalize", bool(self.normalize))
        keep("worst", check_integer("worst", self.worst, 0))
        keep("bins", check_integer("bins", self.bins, 1, MAX_BINS))
        if self.binning not in BINNINGS:
            raise ValueError(
                f"binning: expected one of {', '.join(BINNINGS)}; got {self.binning!r}"
            )
        if self.top_k is not None:
            if multilabel:
                raise ValueError("top_k: applies to single-label rows, not to multilabel ones")
            keep("top_k", check_integer("top_k", self.top_k, 1))
        if self.ignore_index is not None:
            if multilabel:
                raise ValueError(
                    "ignore_index: applies to single-label class ids, not to multilabel rows"
                )
            keep(
                "ignore_index",
                check_integer("ignore_index", self.ignore_index, -(1 << 62), 1 << 62),
            )
        keep("bootstrap", check_integer("bootstrap", self.bootstrap, 0, MAX_REPLICATES))
        keep("seed", check_integer("seed", self.seed, 0, _SEED_LIMIT - 1))
        level = float(self.level)
        if not 0.0 < level < 1.0:
            raise ValueError(f"level: expected a confidence level in (0, 1); got {level}")
        keep("level", level)
        keep("edges", _edge_values(self.edges))
        if self.binning == "uniform" and self.edges is not None:
            raise ValueError("edges: fixed edges go with binning='quantile' (a second pass)")


def token_layout(
    predictions_shape: tuple[int, ...], labels_shape: tuple[int, ...], *, multilabel: bool
) -> int | None:
    """T, the tokens per sequence, when the predictions are token arrays; None otherwise.

    Token predictions (S, T, V) are single-label and need labels of shape (S, T): they are
    then S * T rows of V classes, row s * T + t being token t of sequence s. Predictions of
    any other number of dimensions are rows, for the caller to check.

    Raises:
        ValueError: token predictions with ``multilabel``, or with labels of another shape.

    Example:
        >>> token_layout((4, 16, 32000), (4, 16), multilabel=False)
        16
        >>> print(token_layout((100, 10), (100,), multilabel=False))
        None
    """
    if len(predictions_shape) != 3:
        return None
    if multilabel:
        raise ValueError("multilabel: token arrays (S, T, V) are single-label")
    if tuple(labels_shape) != tuple(predictions_shape[:2]):
        raise ValueError(
            f"labels: token predictions of shape {tuple(predictions_shape)} need labels of "
            f"shape {tuple(predictions_shape[:2])}; got {tuple(labels_shape)}"
        )
    return int(predictions_shape[1])


class _Sequences:
    """Per-sequence sums of scored tokens: sorted sequence ids, loss sums and token counts.

    What is added waits in a list and is folded into the sorted arrays once it outgrows them
    (or at least ``_PENDING`` entries wait): each entry is sorted a bounded number of times,
    so a file of many sequences costs O(n log n) in all, not a re-sort of every sequence per
    chunk, and the list never holds more than the arrays do (or ``_PENDING`` entries)."""

    _PENDING = 1 << 16

    def __init__(self) -> None:
        self._ids: IntArray = np.zeros(0, dtype=np.int64)
        self._loss: FloatArray = np.zeros(0)
        self._count: IntArray = np.zeros(0, dtype=np.int64)
        self._pending: list[tuple[IntArray, FloatArray, IntArray]] = []
        self._waiting = 0

    def add(self, ids: IntArray, loss: FloatArray, count: IntArray) -> None:
        """Add ``loss`` and ``count`` to the sums of the sequences ``ids`` (repeats add up)."""
        self._pending.append((ids, loss, count))
        self._waiting += ids.size
        if self._waiting > max(self._ids.size, self._PENDING):
            self.sums()

    def sums(self) -> tuple[IntArray, FloatArray, IntArray]:
        """The sorted sequence ids and their loss sums and token counts, all added folded in."""
        if self._pending:
            ids, loss, count = zip(*self._pending, strict=True)
            unique, inverse = np.unique(np.concatenate([self._ids, *ids]), return_inverse=True)
            self._loss = np.bincount(
                inverse, weights=np.concatenate([self._loss, *loss]), minlength=unique.size
            ).astype(np.float64)
            self._count = np.bincount(
                inverse, weights=np.concatenate([self._count, *count]), minlength=unique.size
            ).astype(np.int64)
            self._ids = unique
            self._pending, self._waiting = [], 0
        return self._ids, self._loss, self._count

    def stats(self) -> SequenceStats:
        _, loss, count = self.sums()
        scored = count > 0
        perplexity = np.exp(loss[scored] / count[scored])
        quantiles = (
            {k: float(np.quantile(perplexity, q)) for k, q in SEQUENCE_QUANTILES.items()}
            if perplexity.size
            else {}
        )
        return SequenceStats(sequences=int(scored.sum()), perplexity_quantiles=quantiles)


class ReportAccumulator:
    """Running sums of a loss report, fed chunk by chunk, mergeable.

    The keyword options (``logits``, ``multilabel``, ``worst``, ``bins``, ``binning``,
    ``top_k``, ``ignore_index``, ``bootstrap``, ``seed``, ``level``, ``edges``,
    ``normalize``) are those of :class:`ReportOptions`, which holds and checks them (kept as
    ``self.options``); besides, ``top_k`` is at most C, and quantile binning with a bootstrap
    needs the ``edges`` of a first pass (its ``quantile_edges()``), as every confidence must
    fall in a known bin.

    Args:
        num_classes: C, the number of prediction columns (the vocabulary for token files).
        first_row: the global index of the first row fed (where this part starts in the data).

    Example:
        >>> import numpy as np
        >>> acc = ReportAccumulator(3, logits=False, multilabel=False)
        >>> acc.update(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]), np.array([0, 2]))
        >>> r = acc.result()
        >>> print(f"{r.cross_entropy_nats:.4f} {r.accuracy:.2f} {r.worst[0].row}")
        1.3296 0.50 1
    """

    def __init__(
        self,
        num_classes: int,
        *,
        logits: bool = False,
        multilabel: bool = False,
        worst: int = 10,
        bins: int = ECE_BINS,
        binning: str = "uniform",
        top_k: int | None = None,
        ignore_index: int | None = None,
        bootstrap: int = 0,
        seed: int = 0,
        level: float = 0.95,
        edges: npt.ArrayLike | None = None,
        first_row: int = 0,
        normalize: bool = False,
    ) -> None:
        options = ReportOptions(
            logits=logits,
            multilabel=multilabel,
            normalize=normalize,
            worst=worst,
            bins=bins,
            binning=binning,
            top_k=top_k,
            ignore_index=ignore_index,
            bootstrap=bootstrap,
            seed=seed,
            level=level,
            edges=_edge_values(edges),
        )
        self._start(num_classes, options, first_row)

    @classmethod
    def from_options(
        cls, num_classes: int, options: ReportOptions, *, first_row: int = 0
    ) -> ReportAccumulator:
        """The accumulator of ``num_classes`` columns with ``options`` (checked against C).

        Example:
            >>> acc = ReportAccumulator.from_options(3, ReportOptions(logits=True, bins=10))
            >>> acc.options == ReportAccumulator(3, logits=True, bins=10).options
            True
        """
        if not isinstance(options, ReportOptions):
            raise TypeError(f"options: expected a ReportOptions; got {type(options).__name__}")
        acc = cls.__new__(cls)
        acc._start(num_classes, options, first_row)
        return acc

    def _start(self, num_classes: int, options: ReportOptions, first_row: int) -> None:
        """The empty sums; the checks of ``options`` that need C or are the accumulator's."""
        c = check_integer("num_classes", num_classes, 1)
        if c < 2 and not options.multilabel:
            raise ValueError(
                f"num_classes: expected at least 2 classes (1 with multilabel); got {c}"
            )
        if options.top_k is not None:
            check_integer("top_k", options.top_k, 1, c)
        fixed = None if options.edges is None else np.array(options.edges)
        if options.binning == "uniform":
            fixed = uniform_edges(options.bins)
        elif fixed is None and options.bootstrap:
            raise ValueError(
                "edges: quantile bins with a bootstrap need the edges of a first pass "
                "(quantile_edges() of an accumulator without bootstrap)"
            )
        self.num_classes = c
        self.options = options
        self.first_row = check_integer("first_row", first_row, 0)
        self.next_row = self.first_row

        self.rows = 0
        self.ignored = 0
        self.elements = 0
        self.loss_sum = 0.0
        self.correct = 0
        self.top_k_correct = 0
        self.element_correct = 0
        self.brier_sum = 0.0
        self.class_count = np.zeros(c, dtype=np.int64)
        self.class_loss = np.zeros(c)
        self.class_correct = np.zeros(c)
        self.confidence: ConfidenceBins | ConfidenceValues = (
            ConfidenceValues() if fixed is None else ConfidenceBins(fixed)
        )
        self.classwise = ClasswiseBins(c, options.bins) if c <= CLASSWISE_CLASSES else None
        self.resampled = (
            Bootstrap(options.bootstrap, options.seed, fixed)
            if options.bootstrap and fixed is not None  # (quantile bins without edges: refused)
            else None
        )
        self.sequences: _Sequences | None = None
        self._heap: list[tuple[float, int]] = []  # (loss, -row): the root is the one to drop

    # ---- one chunk ----------------------------------------------------------------------

    def update(
        self,
        predictions: npt.ArrayLike,
        labels: npt.ArrayLike,
        *,
        sequences: npt.ArrayLike | None = None,
    ) -> None:
        """Add a chunk: predictions (n, C), labels as :func:`check_labels` accepts them, and
        for token files the global sequence index of each row.

        Rows whose label is ``ignore_index`` are dropped first (their predictions are neither
        checked nor scored: padding may hold anything); the others are checked with
        :func:`check_predictions` (dividing each row by its sum with ``normalize``) and
        :func:`check_labels`. Rows are numbered from ``first_row`` on, in the order they are
        fed. A chunk that raises leaves the accumulator as it was.

        Raises:
            BadValue: at the first bad entry, with its row in the chunk (ignored rows counted)
                and ``argument`` "predictions" or "labels".
            ValueError: for shapes that do not fit.
        """
        x = np.asarray(predictions)
        y = np.asarray(labels)
        if x.ndim != 2 or x.shape[1] != self.num_classes:
            raise ValueError(
                f"predictions: expected (rows, {self.num_classes}) values; got shape {x.shape}"
            )
        n = x.shape[0]
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(
                f"predictions and labels: {n} prediction rows but labels of shape {y.shape}"
            )
        seq = None
        if sequences is not None:
            seq = np.asarray(sequences)
            if seq.shape != (n,) or seq.dtype.kind not in "iu" or (n and seq.min() < 0):
                raise ValueError(
                    f"sequences: expected {n} non-negative integer sequence indices; got "
                    f"shape {seq.shape} of {seq.dtype}"
                )
            seq = seq.astype(np.int64, copy=False)
        row_index = np.arange(self.next_row, self.next_row + n, dtype=np.int64)
        kept = np.arange(n)
        if self.options.ignore_index is not None:
            keep = self._kept(y)
            if not keep.all():
                kept = np.flatnonzero(keep)
                x, y, row_index = x[kept], y[kept], row_index[kept]
                seq = None if seq is None else seq[kept]
        # float32/float16 logits are checked by the row kernel as it scores them (one pass
        # over the chunk instead of two); on its error, the check below names the entry
        deferred = not self.options.multilabel and refuses_non_finite(x, logits=self.options.logits)
        if not deferred:
            x = self._checked(x, kept)
        try:
            ids, rows = check_labels(y, self.num_classes, multilabel=self.options.multilabel)
        except BadValue as exc:
            exc.row, exc.argument = int(kept[exc.row]), "labels"
            raise
        # nothing is counted before the chunk is scored: a chunk that raises leaves no trace
        units = row_index if seq is None else seq
        if kept.size == 0:
            pass  # every row ignored
        elif self.options.multilabel:
            assert rows is not None
            row_loss = self._update_multilabel(x, rows, units)
        else:
            assert ids is not None
            try:
                row_loss = self._update_single(x, ids, units)
            except ValueError:
                if deferred:  # scoring refused a non-finite row before adding anything
                    self._checked(x, kept)
                raise
        self.next_row += n
        self.ignored += n - kept.size
        n = kept.size
        if n == 0:
            return
        self._keep_worst(row_loss, row_index)
        if seq is not None:
            if self.sequences is None:
                self.sequences = _Sequences()
            self.sequences.add(seq, row_loss, np.ones(seq.size, dtype=np.int64))
        self.rows += n

    def _checked(self, x: npt.NDArray[Any], kept: IntArray) -> FloatArray:
        """:func:`check_predictions` of the kept rows ``x``; a bad entry named by its row in
        the chunk (``kept`` maps the rows of ``x`` to the chunk's)."""
        try:
            return check_predictions(
                x,
                logits=self.options.logits,
                multilabel=self.options.multilabel,
                normalize=self.options.normalize,
            )
        except BadValue as exc:
            exc.row, exc.argument = int(kept[exc.row]), "predictions"
            raise

    def _kept(self, y: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
        """The rows whose label is not ``ignore_index`` (integer class-id labels only)."""
        column = y if y.ndim == 1 else (y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else None)
        if column is None:
            raise ValueError(
                "ignore_index: applies to integer class-id labels (a column), not to one-hot rows"
            )
        return np.asarray(column != self.options.ignore_index)

    def _update_single(self, x: FloatArray, ids: IntArray, units: IntArray) -> FloatArray:
        c = self.num_classes
        s = score_rows(x, ids, logits=self.options.logits)
        loss = s.loss
        right = (s.predicted == ids).astype(np.float64)
        brier = s.sum_squares - 2.0 * s.p_true + 1.0

        self.elements += ids.size * c
        self.loss_sum += float(np.sum(loss))
        self.correct += int(right.sum())
        if self.options.top_k is not None:
            self.top_k_correct += int(np.count_nonzero(s.rank < self.options.top_k))
        self.brier_sum += float(np.sum(brier))
        self.class_count += np.bincount(ids, minlength=c)
        self.class_loss += np.bincount(ids, weights=loss, minlength=c)
        self.class_correct += np.bincount(ids, weights=right, minlength=c)
        self.confidence.add(s.confidence, right)
        if self.classwise is not None:
            # in pieces of CLASSWISE_PIECE entries: the probabilities and the indicators are
            # float64 arrays of the piece's size, not of the chunk's
            step = max(1, CLASSWISE_PIECE // c)
            for a in range(0, ids.size, step):
                z = np.asarray(x[a : a + step], dtype=np.float64)
                p = np.asarray(ce.softmax(z)) if self.options.logits else z
                onehot = np.zeros(p.shape)
                onehot[np.arange(p.shape[0]), ids[a : a + step]] = 1.0
                self.classwise.add(p, onehot)
        if self.resampled is not None:
            self.resampled.add(units, loss, right, brier, s.confidence, right)
        return loss

    def _update_multilabel(self, x: FloatArray, y: FloatArray, units: IntArray) -> FloatArray:
        x = np.asarray(x, dtype=np.float64)
        if self.options.logits:
            loss = ce.sigmoid_cross_entropy(x, y, reduction="none")
            p = np.asarray(ce.sigmoid(x))
        else:
            p = x
            loss = ce.binary_cross_entropy(p, y, eps=EPS, reduction="none")
        loss = np.asarray(loss, dtype=np.float64)
        right = (p > 0.5) == (y == 1)
        squared = (p - y) ** 2
        self.elements += y.size
        self.loss_sum += float(np.sum(loss))
        exact = np.all(right, axis=1)
        self.correct += int(exact.sum())
        self.element_correct += int(right.sum())
        self.brier_sum += float(np.sum(squared))
        self.class_count += (y == 1).sum(axis=0).astype(np.int64)
        self.class_loss += loss.sum(axis=0)
        self.class_correct += right.sum(axis=0)
        confidence = np.maximum(p, 1.0 - p).reshape(-1)
        right_flat = right.reshape(-1).astype(np.float64)
        self.confidence.add(confidence, right_flat)
        if self.classwise is not None:
            self.classwise.add(p, y)
        row_loss: FloatArray = loss.mean(axis=1)
        if self.resampled is not None:
            self.resampled.add(
                units,
                row_loss,
                exact.astype(np.float64),
                squared.mean(axis=1),
                confidence,
                right_flat,
                item_units=np.repeat(units, self.num_classes),
            )
        return row_loss

    def _keep_worst(self, loss: FloatArray, row_index: IntArray) -> None:
        k = self.options.worst
        if k == 0:
            return
        heap = self._heap
        if len(loss) > k:
            # every row that can make the top k of this chunk, ties included
            threshold = np.partition(loss, len(loss) - k)[len(loss) - k]
            candidates = np.flatnonzero(loss >= threshold)
        else:
            candidates = np.arange(len(loss))
        if len(heap) == k:
            candidates = candidates[loss[candidates] >= heap[0][0]]
        for i in candidates:
            self._push((float(loss[i]), -int(row_index[i])))

    def _push(self, item: tuple[float, int]) -> None:
        heap = self._heap
        if len(heap) < self.options.worst:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)

    # ---- merging ------------------------------------------------------------------------

    def _made_with(self) -> dict[str, object]:
        """What two accumulators that merge share: C and each option, by name."""
        options = {f.name: getattr(self.options, f.name) for f in fields(self.options)}
        return {"num_classes": self.num_classes, **options}

    def merge(self, other: ReportAccumulator) -> None:
        """Add the rows of ``other`` (fed rows disjoint from this one's: its own
        ``first_row``): this accumulator becomes the one of all their rows.

        Raises:
            ValueError: when the two were made with different options (named).
        """
        if not isinstance(other, ReportAccumulator):
            raise TypeError(f"other: expected a ReportAccumulator; got {type(other).__name__}")
        if (other.num_classes, other.options) != (self.num_classes, self.options):
            mine, theirs = self._made_with(), other._made_with()
            name = next(name for name in mine if mine[name] != theirs[name])
            raise ValueError(
                f"other: made with {name}={theirs[name]!r}, this one with {name}={mine[name]!r}; "
                "only reports of the same options merge"
            )
        self.first_row = min(self.first_row, other.first_row)
        self.next_row = max(self.next_row, other.next_row)
        for name in (
            "rows",
            "ignored",
            "elements",
            "loss_sum",
            "correct",
            "top_k_correct",
            "element_correct",
            "brier_sum",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.class_count = self.class_count + other.class_count
        self.class_loss = self.class_loss + other.class_loss
        self.class_correct = self.class_correct + other.class_correct
        self.confidence.merge(other.confidence)  # type: ignore[arg-type]
        if self.classwise is not None and other.classwise is not None:
            self.classwise.merge(other.classwise)
        if self.resampled is not None and other.resampled is not None:
            self.resampled.merge(other.resampled)
        if other.sequences is not None:
            if self.sequences is None:
                self.sequences = _Sequences()
            self.sequences.add(*other.sequences.sums())
        for item in other._heap:
            self._push(item)

    # ---- the result ---------------------------------------------------------------------

    def quantile_edges(self) -> FloatArray:
        """The edges of the equal-mass bins of the rows fed so far: with them, a second pass
        (``edges=``) puts every confidence in the same bin, which a bootstrap needs.

        Raises:
            ValueError: when the binning is not quantile, or the edges are already fixed.
        """
        if not isinstance(self.confidence, ConfidenceValues):
            binning = self.options.binning
            raise ValueError(
                "quantile_edges: the accumulator has fixed edges (binning "
                f"{binning!r}{', edges given' if binning == 'quantile' else ''})"
            )
        if self.rows == 0:
            raise ValueError("quantile_edges: no rows yet")
        return self.confidence.edges(self.options.bins)

    def result(self) -> Report:
        """The report of every row fed so far.

        Raises:
            ValueError: when no rows were fed (or every row was ignored).
        """
        if self.rows == 0:
            ignored = f" ({self.ignored} rows ignored)" if self.ignored else ""
            raise ValueError(f"no rows: the report needs at least one prediction{ignored}")
        n = self.rows
        if self.options.multilabel:
            count = self.elements
            per_class_denominator = np.full(self.num_classes, float(n))
        else:
            count = n
            per_class_denominator = self.class_count.astype(np.float64)
        nats = self.loss_sum / count
        classwise = None if self.classwise is None else self.classwise.errors()
        classes = [
            ClassStats(
                index=j,
                count=int(self.class_count[j]),
                cross_entropy=_mean(float(self.class_loss[j]), per_class_denominator[j]),
                accuracy=_mean(float(self.class_correct[j]), per_class_denominator[j]),
                ece=None if classwise is None else float(classwise[j]),
            )
            for j in range(self.num_classes)
        ]
        binned = (
            self.confidence.binned(self.options.bins)
            if isinstance(self.confidence, ConfidenceValues)
            else self.confidence
        )
        ece, rmsce, mce = binned.errors()
        worst = [WorstRow(-neg, loss) for loss, neg in sorted(self._heap, reverse=True)]
        return Report(
            rows=n,
            num_classes=self.num_classes,
            multilabel=self.options.multilabel,
            logits=self.options.logits,
            cross_entropy_nats=nats,
            cross_entropy_bits=nats / math.log(2.0),
            perplexity=math.exp(nats) if nats < 709.0 else math.inf,
            accuracy=self.correct / n,
            element_accuracy=self.element_correct / self.elements
            if self.options.multilabel
            else None,
            brier=self.brier_sum / count,
            ece=float(ece),
            classes=classes,
            calibration=binned.bins(),
            worst=worst,
            rmsce=float(rmsce),
            mce=float(mce),
            classwise_ece=None if classwise is None else float(np.mean(classwise)),
            binning=self.options.binning,
            bins=self.options.bins,
            top_k=self.options.top_k,
            top_k_accuracy=None if self.options.top_k is None else self.top_k_correct / n,
            ignored=self.ignored,
            sequences=None if self.sequences is None else self.sequences.stats(),
            uncertainty=None
            if self.resampled is None
            else self.resampled.uncertainty(self.options.level),
        )


def compute_report(
    predictions: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    logits: bool = False,
    multilabel: bool = False,
    normalize: bool = False,
    worst: int = 10,
    chunk_rows: int | None = None,
    bins: int = ECE_BINS,
    binning: str = "uniform",
    top_k: int | None = None,
    ignore_index: int | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    level: float = 0.95,
) -> Report:
    """The report of whole arrays, fed to a :class:`ReportAccumulator` in ``chunk_rows`` rows.

    ``predictions`` (n, C) with labels (n,) or (n, C); or a token file's (S, T, V) with labels
    (S, T): its S x T tokens are the rows, row s * T + t in sequence s (:func:`token_layout`).
    The options are those of :class:`ReportOptions`, checked before anything is read. Quantile
    bins with a bootstrap take two passes (the first finds the edges).

    Example:
        >>> import numpy as np
        >>> r = compute_report(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([0, 0]), logits=True)
        >>> print(f"{r.cross_entropy_nats:.4f} {r.accuracy}")
        0.7201 0.5
    """
    options = ReportOptions(
        logits=logits,
        multilabel=multilabel,
        normalize=normalize,
        worst=worst,
        bins=bins,
        binning=binning,
        top_k=top_k,
        ignore_index=ignore_index,
        bootstrap=bootstrap,
        seed=seed,
        level=level,
    )
    x = np.asarray(predictions)
    y = np.asarray(labels)
    per_sequence = token_layout(x.shape, y.shape, multilabel=options.multilabel)
    if per_sequence is not None:
        x = x.reshape(-1, x.shape[2])
        y = y.reshape(-1)
    elif x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"predictions: expected (n, C) or (S, T, V); got shape {x.shape}")
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"predictions and labels: {x.shape[0]} prediction rows but labels of shape {y.shape}"
        )
    step = max(1, chunk_rows or x.shape[0] or 1)

    def run(options: ReportOptions) -> ReportAccumulator:
        accumulator = ReportAccumulator.from_options(x.shape[1], options)
        for start in range(0, x.shape[0], step):
            chunk = x[start : start + step]
            rows = np.arange(start, start + chunk.shape[0])
            accumulator.update(
                chunk,
                y[start : start + step],
                sequences=None if per_sequence is None else rows // per_sequence,
            )
        return accumulator

    if options.binning == "quantile" and options.bootstrap:
        edges = run(replace(options, bootstrap=0)).quantile_edges()
        options = replace(options, edges=tuple(edges.tolist()))
    return run(options).result()
