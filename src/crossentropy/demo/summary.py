"""The summary of a demo run: one row per loss, and the sentence that tells the story."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .objectives import LOSS_TITLES
from .train import EpochRecord

__all__ = ["TARGET_ACCURACY", "SummaryRow", "story", "summarize"]

#: The validation accuracy whose first epoch the summary reports.
TARGET_ACCURACY = 0.9


@dataclass(frozen=True)
class SummaryRow:
    """One loss's results.

    Attributes:
        loss: the loss's command-line name; ``title`` says it in words.
        epochs: the last epoch trained.
        val_accuracy, val_loss, val_cross_entropy: at the last epoch (``val_loss`` is the
            loss's own value, ``val_cross_entropy`` the common yardstick).
        epochs_to_target: the first epoch whose validation accuracy reached
            :data:`TARGET_ACCURACY`, or None if none did.
        first_epoch_grad_norm: the mean output gradient norm over the first epoch's steps.
    """

    loss: str
    title: str
    epochs: int
    val_accuracy: float
    val_loss: float
    val_cross_entropy: float
    epochs_to_target: int | None
    first_epoch_grad_norm: float


def summarize(history: Sequence[EpochRecord], losses: Sequence[str]) -> list[SummaryRow]:
    """One :class:`SummaryRow` per loss from a run's history (which must reach epoch 1).

    Example:
        >>> from crossentropy.demo.train import EpochRecord
        >>> rec = lambda e, acc: EpochRecord(e, "ce", 1.0, acc, 1.0, acc, 1.0, 0.5 * e)
        >>> row, = summarize([rec(0, 0.1), rec(1, 0.85), rec(2, 0.93), rec(3, 0.89)], ["ce"])
        >>> row.epochs_to_target, row.val_accuracy, row.first_epoch_grad_norm
        (2, 0.89, 0.5)
    """
    rows = []
    for loss in losses:
        mine = sorted((r for r in history if r.loss == loss), key=lambda r: r.epoch)
        if not mine or mine[-1].epoch < 1:
            raise ValueError(f"history: expected at least one trained epoch of {loss!r}")
        last = mine[-1]
        first = next(r for r in mine if r.epoch == 1)
        reached = [r.epoch for r in mine if r.val_accuracy >= TARGET_ACCURACY]
        rows.append(
            SummaryRow(
                loss=loss,
                title=LOSS_TITLES[loss],
                epochs=last.epoch,
                val_accuracy=last.val_accuracy,
                val_loss=last.val_loss,
                val_cross_entropy=last.val_cross_entropy,
                epochs_to_target=reached[0] if reached else None,
                first_epoch_grad_norm=first.output_grad_norm,
            )
        )
    return rows


def story(rows: Sequence[SummaryRow]) -> str | None:
    """The comparison of cross entropy and MSE in one sentence (None without both).

    Example:
        >>> a = SummaryRow("ce", "cross entropy", 30, 0.97, 0.1, 0.1, 4, 0.9)
        >>> b = SummaryRow("mse", "MSE", 30, 0.96, 0.05, 0.2, None, 0.2)
        >>> print(story([a, b]))
        Epochs to 90% validation accuracy: cross entropy 4, MSE never (in 30). In the first
        epoch the gradient at the output under MSE was 0.22x that of cross entropy.
    """
    by_loss = {row.loss: row for row in rows}
    if "ce" not in by_loss or "mse" not in by_loss:
        return None
    ce, mse = by_loss["ce"], by_loss["mse"]

    def reached(row: SummaryRow) -> str:
        if row.epochs_to_target is None:
            return f"never (in {row.epochs})"
        return str(row.epochs_to_target)

    reach = (
        f"Epochs to {TARGET_ACCURACY:.0%} validation accuracy: cross entropy {reached(ce)}, "
        f"MSE {reached(mse)}."
    )
    diverged = [
        name
        for name, row in (("cross entropy", ce), ("MSE", mse))
        if not (math.isfinite(row.val_loss) and math.isfinite(row.first_epoch_grad_norm))
    ]
    if diverged:
        return (
            f"{reach} Training with {' and '.join(diverged)} diverged (a loss or gradient "
            "that is not finite): a smaller --lr trains."
        )
    if ce.first_epoch_grad_norm == 0:
        return f"{reach} In the first epoch the gradient at the output under cross entropy was 0."
    ratio = mse.first_epoch_grad_norm / ce.first_epoch_grad_norm
    return (
        f"{reach} In the first epoch the gradient at the output under MSE was "
        f"{ratio:.2f}x that of cross entropy."
    )
