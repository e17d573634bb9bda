"""What the topics of ``crossentropy explain`` share: the example's classes and numbers.

Every number is computed in float64 by the library's public functions and kept as a Python
float (:func:`as_f64` in, :func:`as_float` / :func:`as_floats` out), so that a section's
dataclass prints and serialises as it is.

The names of the example's classes are marked for translation (:data:`CLASSES`): a topic
shows them through :func:`class_names`, which translates them into the current language
(:mod:`crossentropy.i18n`), as it numbers a user's classes (``class 0``, ``类别 0``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from crossentropy.i18n import gettext as _
from crossentropy.i18n import mark as N_

__all__ = [
    "CLASSES",
    "EXAMPLE_Q",
    "SOFT_P",
    "as_f64",
    "as_float",
    "as_floats",
    "class_names",
    "numbered",
]

CLASSES = (N_("cat"), N_("dog"), N_("pig"))
"""The classes of the running example (the true one is a cat, the model says 0.7), in
English: :func:`class_names` translates them."""

EXAMPLE_Q = (0.7, 0.2, 0.1)
"""The running example's prediction q over :data:`CLASSES`."""

SOFT_P = (0.8, 0.1, 0.1)
"""A soft label over :data:`CLASSES` (H(p) > 0), beside the one-hot truth."""


def as_f64(values: Sequence[float] | Sequence[Sequence[float]]) -> np.ndarray[Any, Any]:
    """``values`` as a float64 NumPy array: every example is computed in float64."""
    return np.asarray(values, dtype=np.float64)


def as_float(value: Any) -> float:
    """A 0-d array (what the library returns for one number) as a Python float."""
    return float(np.asarray(value))


def as_floats(values: Any) -> tuple[float, ...]:
    """An array's entries, flattened, as a tuple of Python floats."""
    return tuple(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))


def numbered(prefix: str, n: int) -> tuple[str, ...]:
    """``prefix`` numbered from 0, as it is (a symbol: ``x0``, ``x1``, ...); names in words
    are numbered by :func:`class_names`, which translates them."""
    return tuple(f"{prefix}{i}" for i in range(n))


def class_names(n: int, user: bool) -> tuple[str, ...]:
    """The example's classes, or ``class 0`` ... ``class n-1`` for ``user`` numbers, in the
    current language."""
    if user:
        return tuple(_("class {index}").format(index=i) for i in range(n))
    return tuple(_(c) for c in CLASSES)
