"""Loss reports for a set of predictions, computed as a stream.

:class:`ReportAccumulator` is fed the predictions and labels chunk by chunk (``update``) and
keeps only running sums, so its memory is bounded by the number of classes and the number of
worst rows kept, never by the number of rows. ``result()`` turns the sums into a
:class:`Report`:

- the mean cross entropy, in nats and in bits, and the perplexity exp(mean nats);
- the accuracy (multi-label: exact-match accuracy, and the per-element accuracy);
- per class: its count, its mean cross entropy and its accuracy;
- the Brier score: for single-label rows the sum over classes of the squared error
  (p_ic - y_ic)^2, averaged over rows (scikit-learn's multiclass ``brier_score_loss`` with
  ``scale_by_half=False``); for multi-label rows the mean over elements of (p_ij - y_ij)^2
  (the mean of the per-label binary Brier scores);
- the expected calibration error over :data:`ECE_BINS` equal-width bins of the confidence,
  sum_b (n_b / n) |accuracy_b - confidence_b|; the confidence of a single-label row is its
  largest probability and it is right when its argmax is the label; a multi-label element's
  confidence is max(p, 1 - p) and it is right when (p > 1/2) equals its label;
- the ``worst`` rows with the largest loss (row index and loss), kept in a bounded heap; ties
  go to the earlier row, so the result does not depend on the chunking.

The per-row losses come from the library's own functions: ``sparse_softmax_cross_entropy`` /
``softmax_cross_entropy`` for logits with integer / one-hot labels, ``nll_loss`` on the log of
the probabilities clipped to [eps, 1 - eps] (eps the float64 machine epsilon, as
scikit-learn's ``log_loss`` clips), ``sigmoid_cross_entropy`` and ``binary_cross_entropy``
(same eps) for multi-label logits and probabilities. The loss of a multi-label row is the mean
of its per-label losses, so the mean cross entropy is the mean over all elements.

The checks of :func:`check_predictions` and :func:`check_labels` raise :class:`BadValue` with
the row and column of the first bad entry, for the caller to name its place in a file.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

import numpy as np
import numpy.typing as npt

import crossentropy as ce

from .checks import EPS, FloatArray, IntArray, check_labels, check_predictions
from .result import CalibrationBin, ClassStats, Report, WorstRow

__all__ = ["ECE_BINS", "ReportAccumulator", "compute_report"]

ECE_BINS = 15
"""The default number of confidence bins."""

# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _mean(total: float, count: float) -> float | None:
    return total / count if count > 0 else None


class ReportAccumulator:
    """Running sums of a loss report, fed chunk by chunk.

    Args:
        num_classes: C, the number of prediction columns.
        logits: the predictions are logits (softmax / sigmoid applied here) rather than
            probabilities.
        multilabel: one independent binary label per class (sigmoid / binary cross entropy).
        worst: how many of the worst-scored rows to keep.

    Example:
        >>> import numpy as np
        >>> acc = ReportAccumulator(3, logits=False, multilabel=False)
        >>> acc.update(np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]), np.array([0, 2]))
        >>> r = acc.result()
        >>> print(f"{r.cross_entropy_nats:.4f} {r.accuracy:.2f} {r.worst[0].row}")
        1.3296 0.50 1
    """

    def __init__(
        self, num_classes: int, *, logits: bool, multilabel: bool, worst: int = 10
    ) -> None:
        if num_classes < 1 or (num_classes < 2 and not multilabel):
            raise ValueError(
                f"num_classes: expected at least 2 classes (1 with multilabel); got {num_classes}"
            )
        if worst < 0:
            raise ValueError(f"worst: expected a count >= 0; got {worst}")
        self.num_classes = num_classes
        self.logits = logits
        self.multilabel = multilabel
        self.worst = worst
        c = num_classes
        self.rows = 0
        self.elements = 0
        self.loss_sum = 0.0
        self.correct = 0
        self.element_correct = 0
        self.brier_sum = 0.0
        self.class_count = np.zeros(c, dtype=np.int64)
        self.class_loss = np.zeros(c)
        self.class_correct = np.zeros(c)
        self.bin_count = np.zeros(ECE_BINS, dtype=np.int64)
        self.bin_confidence = np.zeros(ECE_BINS)
        self.bin_correct = np.zeros(ECE_BINS)
        self._heap: list[tuple[float, int]] = []  # (loss, -row): the root is the one to drop

    # ---- one chunk ----------------------------------------------------------------------

    def update(self, predictions: npt.ArrayLike, labels: npt.ArrayLike) -> None:
        """Add a chunk: predictions (n, C), labels as :func:`check_labels` accepts them.

        The predictions are checked with :func:`check_predictions` (without normalising), so
        normalise rows before, as the ``--normalize`` option does.
        """
        x = check_predictions(predictions, logits=self.logits, multilabel=self.multilabel)
        if x.shape[1] != self.num_classes:
            raise ValueError(f"predictions: expected {self.num_classes} columns; got {x.shape[1]}")
        ids, rows = check_labels(labels, self.num_classes, multilabel=self.multilabel)
        n = x.shape[0]
        if (ids is not None and ids.shape[0] != n) or (rows is not None and rows.shape[0] != n):
            raise ValueError("predictions and labels: the chunks have different row counts")
        if n == 0:
            return
        if self.multilabel:
            assert rows is not None
            row_loss = self._update_multilabel(x, rows)
        else:
            assert ids is not None
            row_loss = self._update_multiclass(x, ids, rows)
        self._keep_worst(row_loss, self.rows)
        self.rows += n

    def _update_multiclass(self, x: FloatArray, ids: IntArray, onehot: FloatArray | None) -> Any:
        c = self.num_classes
        if self.logits:
            if onehot is None:
                loss = ce.sparse_softmax_cross_entropy(x, ids, reduction="none")
            else:
                loss = ce.softmax_cross_entropy(x, onehot, reduction="none")
            p = np.asarray(ce.softmax(x))
        else:
            p = x
            log_p = np.log(np.clip(p, EPS, 1.0 - EPS))
            loss = ce.nll_loss(log_p, ids, reduction="none")
        loss = np.asarray(loss, dtype=np.float64)
        n = x.shape[0]
        predicted = np.argmax(p, axis=1)
        right = (predicted == ids).astype(np.float64)
        p_true = p[np.arange(n), ids]
        squared = np.einsum("ij,ij->i", p, p) - 2.0 * p_true + 1.0
        confidence = p[np.arange(n), predicted]

        self.elements += n * c
        self.loss_sum += float(np.sum(loss))
        self.correct += int(right.sum())
        self.brier_sum += float(np.sum(squared))
        self.class_count += np.bincount(ids, minlength=c)
        self.class_loss += np.bincount(ids, weights=loss, minlength=c)
        self.class_correct += np.bincount(ids, weights=right, minlength=c)
        self._bin(confidence, right)
        return loss

    def _update_multilabel(self, x: FloatArray, y: FloatArray) -> Any:
        if self.logits:
            loss = ce.sigmoid_cross_entropy(x, y, reduction="none")
            p = np.asarray(ce.sigmoid(x))
        else:
            p = x
            loss = ce.binary_cross_entropy(p, y, eps=EPS, reduction="none")
        loss = np.asarray(loss, dtype=np.float64)
        predicted = p > 0.5
        right = predicted == (y == 1)
        self.elements += y.size
        self.loss_sum += float(np.sum(loss))
        self.correct += int(np.all(right, axis=1).sum())
        self.element_correct += int(right.sum())
        self.brier_sum += float(np.sum((p - y) ** 2))
        self.class_count += (y == 1).sum(axis=0).astype(np.int64)
        self.class_loss += loss.sum(axis=0)
        self.class_correct += right.sum(axis=0)
        confidence = np.maximum(p, 1.0 - p)
        self._bin(confidence.reshape(-1), right.reshape(-1).astype(np.float64))
        return loss.mean(axis=1)

    def _bin(self, confidence: FloatArray, right: FloatArray) -> None:
        # bin b holds (b/B, (b+1)/B]; a confidence of exactly 0 goes to the first bin
        b = np.clip(np.ceil(confidence * ECE_BINS).astype(np.int64) - 1, 0, ECE_BINS - 1)
        self.bin_count += np.bincount(b, minlength=ECE_BINS)
        self.bin_confidence += np.bincount(b, weights=confidence, minlength=ECE_BINS)
        self.bin_correct += np.bincount(b, weights=right, minlength=ECE_BINS)

    def _keep_worst(self, loss: FloatArray, offset: int) -> None:
        k = self.worst
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
            candidates = candidates[loss[candidates] > heap[0][0]]
        for i in candidates:
            item = (float(loss[i]), -(offset + int(i)))
            if len(heap) < k:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)

    # ---- the result ---------------------------------------------------------------------

    def result(self) -> Report:
        """The report of every row fed so far.

        Raises:
            ValueError: when no rows were fed.
        """
        if self.rows == 0:
            raise ValueError("no rows: the report needs at least one prediction")
        n = self.rows
        if self.multilabel:
            count = self.elements
            per_class_denominator = np.full(self.num_classes, float(n))
        else:
            count = n
            per_class_denominator = self.class_count.astype(np.float64)
        nats = self.loss_sum / count
        classes = [
            ClassStats(
                index=j,
                count=int(self.class_count[j]),
                cross_entropy=_mean(float(self.class_loss[j]), per_class_denominator[j]),
                accuracy=_mean(float(self.class_correct[j]), per_class_denominator[j]),
            )
            for j in range(self.num_classes)
        ]
        total = float(self.bin_count.sum())
        ece = 0.0
        bins = []
        for b in range(ECE_BINS):
            nb = int(self.bin_count[b])
            conf = _mean(float(self.bin_confidence[b]), nb)
            accuracy = _mean(float(self.bin_correct[b]), nb)
            if nb:
                assert conf is not None and accuracy is not None
                ece += nb / total * abs(accuracy - conf)
            bins.append(CalibrationBin(b / ECE_BINS, (b + 1) / ECE_BINS, nb, conf, accuracy))
        worst = [WorstRow(-neg, loss) for loss, neg in sorted(self._heap, reverse=True)]
        return Report(
            rows=n,
            num_classes=self.num_classes,
            multilabel=self.multilabel,
            logits=self.logits,
            cross_entropy_nats=nats,
            cross_entropy_bits=nats / math.log(2.0),
            perplexity=math.exp(nats) if nats < 709.0 else math.inf,
            accuracy=self.correct / n,
            element_accuracy=self.element_correct / self.elements if self.multilabel else None,
            brier=self.brier_sum / count,
            ece=ece,
            classes=classes,
            calibration=bins,
            worst=worst,
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
) -> Report:
    """The report of whole arrays, fed to a :class:`ReportAccumulator` in ``chunk_rows`` rows.

    Example:
        >>> import numpy as np
        >>> r = compute_report(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([0, 0]), logits=True)
        >>> print(f"{r.cross_entropy_nats:.4f} {r.accuracy}")
        0.7201 0.5
    """
    x = np.asarray(predictions)
    if x.ndim == 1:
        x = x[:, None]
    y = np.asarray(labels)
    if y.shape[0] != x.shape[0]:
        raise ValueError(
            f"predictions and labels: {x.shape[0]} prediction rows but {y.shape[0]} label rows"
        )
    acc = ReportAccumulator(x.shape[1], logits=logits, multilabel=multilabel, worst=worst)
    step = max(1, chunk_rows or x.shape[0] or 1)
    for start in range(0, x.shape[0], step):
        chunk = check_predictions(
            x[start : start + step], logits=logits, multilabel=multilabel, normalize=normalize
        )
        acc.update(chunk, y[start : start + step])
    return acc.result()
