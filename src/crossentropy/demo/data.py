"""The demo's data: scikit-learn's bundled digits and breast-cancer sets, split and standardised.

Both sets ship inside scikit-learn (no download). The train/validation split is fixed: a
stratified split with a constant seed (:data:`SPLIT_SEED`), the same for every run and every
``--seed``, so that runs differ only in what the seed is for (initial weights, batch order).
Features are standardised with the mean and standard deviation of the *training* rows only
(a constant feature, such as a digit pixel that is always blank, gets a deviation of 1), so
nothing about the validation rows leaks into training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["DATASETS", "SPLIT_SEED", "VALIDATION_FRACTION", "Dataset", "load_dataset"]

#: The data sets, by command-line name.
DATASETS = ("digits", "breast-cancer")

#: The seed of the fixed train/validation split.
SPLIT_SEED = 0

#: The share of the rows held out for validation.
VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class Dataset:
    """A standardised, split data set.

    Attributes:
        name: the command-line name (``"digits"`` or ``"breast-cancer"``).
        x_train, x_val: float32 features, shape (N, F), standardised with the training rows'
            mean and deviation.
        y_train, y_val: int64 class indices, shape (N,).
        n_classes: the number of classes (2 for breast-cancer, which the models treat as
            binary: one logit and a sigmoid).
        mean, scale: the float64 statistics of the training rows used to standardise.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    n_classes: int
    mean: np.ndarray[Any, np.dtype[np.float64]]
    scale: np.ndarray[Any, np.dtype[np.float64]]

    @property
    def n_features(self) -> int:
        """The number of input features F."""
        return int(self.x_train.shape[1])

    @property
    def binary(self) -> bool:
        """Whether the task is binary (one logit, sigmoid outputs)."""
        return self.n_classes == 2


def _raw(name: str) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.datasets import load_breast_cancer, load_digits

    if name == "digits":
        x, y = load_digits(return_X_y=True)
    elif name == "breast-cancer":
        x, y = load_breast_cancer(return_X_y=True)
    else:
        raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}; got {name!r}")
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)


def load_dataset(name: str) -> Dataset:
    """Load a bundled data set, split it (fixed, stratified) and standardise it.

    Args:
        name: ``"digits"`` (1797 8x8 images, 10 classes) or ``"breast-cancer"`` (569 rows of
            30 features, 2 classes).

    Returns:
        A :class:`Dataset` with 80% of the rows for training and 20% for validation.

    Example:
        >>> data = load_dataset("digits")
        >>> data.x_train.shape, data.x_val.shape, data.n_classes
        (torch.Size([1437, 64]), torch.Size([360, 64]), 10)
        >>> round(float(data.x_train.mean()), 6), data.binary
        (0.0, False)
    """
    from sklearn.model_selection import train_test_split

    x, y = _raw(name)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=VALIDATION_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    mean = x_train.mean(axis=0)
    scale = x_train.std(axis=0)
    scale[scale == 0.0] = 1.0

    def features(rows: np.ndarray[Any, Any]) -> Tensor:
        return torch.from_numpy(((rows - mean) / scale).astype(np.float32))

    return Dataset(
        name=name,
        x_train=features(x_train),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train)),
        x_val=features(x_val),
        y_val=torch.from_numpy(np.ascontiguousarray(y_val)),
        n_classes=int(y.max()) + 1,
        mean=mean,
        scale=scale,
    )
