"""Figures of cross entropy and the losses around it (matplotlib, the ``plot`` extra).

Each function returns a :class:`matplotlib.figure.Figure` built with the object API (no
pyplot state); :func:`save_figure` writes one as PNG or SVG. ``crossentropy plot`` draws them
from the command line. Each takes ``lang`` (``"en"``, the default; ``"zh"``, ``"ru"``; None for
the locale's language): the language of its text, the numbers the same in all three.

Importing this package needs matplotlib: ``pip install crossentropy[plot]``.
"""

from __future__ import annotations

try:
    import matplotlib  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by the CLI test with a fake import
    raise ImportError(
        "crossentropy.viz needs matplotlib: pip install crossentropy[plot]", name=exc.name
    ) from exc

from .figures import (
    CJK_FONTS,
    FIGURES,
    PALETTE,
    MissingFontError,
    binary_entropy_figure,
    ce_vs_mse_logit_figure,
    ce_vs_mse_probability_figure,
    information_figure,
    make_figure,
    regression_losses_figure,
    save_figure,
    softmax_temperature_figure,
)

__all__ = [
    "CJK_FONTS",
    "FIGURES",
    "PALETTE",
    "MissingFontError",
    "binary_entropy_figure",
    "ce_vs_mse_logit_figure",
    "ce_vs_mse_probability_figure",
    "information_figure",
    "make_figure",
    "regression_losses_figure",
    "save_figure",
    "softmax_temperature_figure",
]
