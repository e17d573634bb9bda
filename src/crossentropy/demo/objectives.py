r"""The losses the demo trains with, by command-line name, all from :mod:`crossentropy.torch`.

Each objective is the mean over the batch of a per-example loss :math:`\ell_i(z_i, y_i)` of
the example's logits :math:`z_i`, so the gradient of the batch objective with respect to the
logits, times the batch size, is each example's own output gradient
:math:`\partial \ell_i / \partial z_i` (what the demo reports as the gradient at the output).

With C classes, :math:`p = \operatorname{softmax}(z)` and one-hot :math:`y`:

- ``ce``: cross entropy :math:`-\log p_y`, gradient :math:`p - y`: it is large exactly when
  the model is wrong, however confident.
- ``mse``: the squared error of the probabilities summed over the classes,
  :math:`\sum_c (p_c - y_c)^2` (the Brier score; torch's ``mse_loss`` with ``"sum"`` divided
  by the batch size, so that it is not shrunk by a further 1/C), gradient
  :math:`J^\top 2(p - y)` with the softmax Jacobian :math:`J = \operatorname{diag}(p) - pp^\top`:
  every component carries a factor :math:`p_c`, so it vanishes when the softmax saturates,
  wrong or right.
- ``ce-smooth``: cross entropy against the smoothed target
  :math:`(1 - \varepsilon) y + \varepsilon / C` with :math:`\varepsilon =` :data:`LABEL_SMOOTHING`,
  gradient :math:`p - (1 - \varepsilon) y - \varepsilon / C`.

A binary task has one logit :math:`z` and :math:`\sigma = \operatorname{sigmoid}(z)`: ``ce``
is :math:`-y \log \sigma - (1 - y) \log(1 - \sigma)` (``binary_cross_entropy_with_logits``),
gradient :math:`\sigma - y`; ``mse`` is :math:`(\sigma - y)^2`, gradient
:math:`2(\sigma - y)\,\sigma(1 - \sigma)`; ``ce-smooth`` is binary cross entropy against
:math:`(1 - \varepsilon) y + \varepsilon / 2`.
"""

from __future__ import annotations

import torch
from torch import Tensor

import crossentropy.torch as ctorch

__all__ = [
    "LABEL_SMOOTHING",
    "LOSSES",
    "LOSS_TITLES",
    "cross_entropy_of",
    "objective",
    "predictions",
]

#: The losses, by command-line name.
LOSSES = ("ce", "mse", "ce-smooth")

#: The smoothing of ``ce-smooth``.
LABEL_SMOOTHING = 0.1

#: What each loss is, in words (for tables, legends and the report).
LOSS_TITLES = {
    "ce": "cross entropy",
    "mse": "MSE on the probabilities",
    "ce-smooth": f"cross entropy, label smoothing {LABEL_SMOOTHING}",
}


def objective(name: str, logits: Tensor, target: Tensor, *, binary: bool) -> Tensor:
    """The batch mean of the loss ``name`` (see the module docstring for the formulas).

    Args:
        name: ``"ce"``, ``"mse"`` or ``"ce-smooth"``.
        logits: (N, C) logits, or (N, 1) for a binary task.
        target: (N,) int64 class indices (0 or 1 for a binary task).
        binary: whether the task is binary (sigmoid) rather than C-class (softmax).

    Example:
        >>> z = torch.tensor([[2.0, 0.0, -1.0]])
        >>> y = torch.tensor([0])
        >>> round(float(objective("ce", z, y, binary=False)), 4)   # -log softmax(z)_0
        0.1698
        >>> round(float(objective("mse", z, y, binary=False)), 4)  # sum (p - y)^2
        0.0392
    """
    if name not in LOSSES:
        raise ValueError(f"loss: expected one of {', '.join(LOSSES)}; got {name!r}")
    if binary:
        z = logits.reshape(-1)
        y = target.to(z.dtype)
        if name == "ce":
            return ctorch.binary_cross_entropy_with_logits(z, y)
        if name == "ce-smooth":
            smoothed = (1.0 - LABEL_SMOOTHING) * y + LABEL_SMOOTHING / 2.0
            return ctorch.binary_cross_entropy_with_logits(z, smoothed)
        return ctorch.mse_loss(torch.sigmoid(z), y)
    if name == "ce":
        return ctorch.cross_entropy(logits, target)
    if name == "ce-smooth":
        return ctorch.cross_entropy(logits, target, label_smoothing=LABEL_SMOOTHING)
    one_hot = torch.nn.functional.one_hot(target, logits.shape[-1]).to(logits.dtype)
    squared = ctorch.mse_loss(torch.softmax(logits, dim=-1), one_hot, reduction="sum")
    return squared / logits.shape[0]


def cross_entropy_of(logits: Tensor, target: Tensor, *, binary: bool) -> Tensor:
    """The mean cross entropy of the predictions: the yardstick every loss is measured by.

    Example:
        >>> z = torch.tensor([[0.0], [0.0]])
        >>> round(float(cross_entropy_of(z, torch.tensor([0, 1]), binary=True)), 4)  # ln 2
        0.6931
    """
    return objective("ce", logits, target, binary=binary)


def predictions(logits: Tensor, *, binary: bool) -> Tensor:
    """The predicted class of each row: the arg-max logit, or logit > 0 for a binary task.

    Example:
        >>> predictions(torch.tensor([[0.3], [-0.2]]), binary=True).tolist()
        [1, 0]
    """
    if binary:
        return (logits.reshape(-1) > 0).to(torch.int64)
    return logits.argmax(dim=-1)
