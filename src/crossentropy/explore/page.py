"""The explore page: one self-contained HTML file to play with logits.

:func:`build_page` fills the template (``explore.html``) with its stylesheet
(``explore.css``), its script (``explore.js``) and the starting values, all inline: the page
loads no font, script, stylesheet or image from anywhere, so it works from a file, offline.
The script computes every number it shows with the library's own formulas, written once more
in JavaScript (float64, the stable log-softmax ``(z - m) - log sum exp(z - m)`` and
softplus forms of :mod:`crossentropy._array`):

- softmax view: ``p = softmax(x / T)``, cross entropy ``-sum y log p`` in nats and bits
  (:func:`crossentropy.softmax_cross_entropy`), MSE on the probabilities summed over the
  classes (``crossentropy.mse(p, y, reduction="sum")``, the Brier score), and the gradient of
  each with respect to every logit ``x`` (the temperature's 1/T included);
- sigmoid view: ``sigmoid(x / T)`` per class, binary cross entropy per class and its sum
  (:func:`crossentropy.sigmoid_cross_entropy`), the squared error on the sigmoid, gradients;
- the loss curves of one logit with the current point and its tangent.

Every displayed number is an ``<output>`` with a stable id and its full-precision value in
``data-value`` (``p-0``, ``ce-nats``, ``grad-mse-2``, ``bce-sum``, ...), so tests and scripts
can read the page back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from .. import __version__

__all__ = [
    "DEFAULT_LOGITS",
    "LOGIT_LIMIT",
    "MAX_CLASSES",
    "MAX_TEMPERATURE",
    "MIN_CLASSES",
    "MIN_TEMPERATURE",
    "VIEWS",
    "build_page",
    "write_page",
]

#: The logits the page starts with when none are given.
DEFAULT_LOGITS = (2.0, 1.0, 0.1)
#: How many logits (classes) the page offers.
MIN_CLASSES, MAX_CLASSES = 2, 6
#: The sliders run over [-LOGIT_LIMIT, LOGIT_LIMIT].
LOGIT_LIMIT = 10.0
#: The temperature's range.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.1, 10.0
#: The views: softmax with one true class or soft labels, sigmoid per class.
VIEWS = ("softmax", "binary")


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _logits(logits: Sequence[float]) -> list[float]:
    try:
        values = [float(v) for v in logits]
    except (TypeError, ValueError):
        raise TypeError(f"logits: expected a sequence of numbers; got {logits!r}") from None
    if not MIN_CLASSES <= len(values) <= MAX_CLASSES:
        raise ValueError(
            f"logits: expected {MIN_CLASSES} to {MAX_CLASSES} values (one per class); "
            f"got {len(values)}"
        )
    for i, v in enumerate(values):
        if not math.isfinite(v) or abs(v) > LOGIT_LIMIT:
            raise ValueError(
                f"logits: expected finite numbers in [{-LOGIT_LIMIT:g}, {LOGIT_LIMIT:g}] (the "
                f"sliders' range); got {v:g} at position {i}"
            )
    return values


def _label(label: int, num_classes: int) -> int:
    if isinstance(label, bool) or not isinstance(label, int):
        raise TypeError(f"label: expected a class index (an integer); got {label!r}")
    if not 0 <= label < num_classes:
        raise ValueError(
            f"label: expected a class index in [0, {num_classes}) for {num_classes} logits; "
            f"got {label}"
        )
    return label


def _temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        raise TypeError(f"temperature: expected a number; got {temperature!r}")
    t = float(temperature)
    if not MIN_TEMPERATURE <= t <= MAX_TEMPERATURE:
        raise ValueError(
            f"temperature: expected a number in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]; "
            f"got {temperature!r}"
        )
    return t


def _view(view: str) -> str:
    if view not in VIEWS:
        raise ValueError(f"view: expected one of {', '.join(VIEWS)}; got {view!r}")
    return view


def build_page(
    logits: Sequence[float] = DEFAULT_LOGITS,
    *,
    label: int = 0,
    temperature: float = 1.0,
    view: str = "softmax",
) -> str:
    """The explore page as one HTML document, everything inline.

    Args:
        logits: the starting logits, 2 to 6 finite numbers in [-10, 10].
        label: the starting true class, an index into ``logits``.
        temperature: the starting temperature, in [0.1, 10].
        view: the view shown first, ``"softmax"`` or ``"binary"``.

    Returns:
        The HTML text.

    Raises:
        ValueError, TypeError: a value out of its range, naming the argument.

    Example:
        >>> page = build_page([1.5, -0.5], label=1, temperature=2.0)
        >>> page.startswith("<!DOCTYPE html>"), "://" in page
        (True, False)
        >>> build_page([1.0])
        Traceback (most recent call last):
        ...
        ValueError: logits: expected 2 to 6 values (one per class); got 1
    """
    values = _logits(logits)
    config = {
        "logits": values,
        "label": _label(label, len(values)),
        "temperature": _temperature(temperature),
        "view": _view(view),
        "limits": {
            "logit": LOGIT_LIMIT,
            "minClasses": MIN_CLASSES,
            "maxClasses": MAX_CLASSES,
            "minTemperature": MIN_TEMPERATURE,
            "maxTemperature": MAX_TEMPERATURE,
        },
    }
    # inside <script>, "</" would end the element: JSON's \u003c escape keeps it text
    config_json = json.dumps(config).replace("<", "\\u003c")
    parts = {
        "@@STYLE@@": _asset("explore.css").strip(),
        "@@SCRIPT@@": _asset("explore.js").strip(),
        "@@CONFIG@@": config_json,
        "@@VERSION@@": __version__,
    }
    page = _asset("explore.html")
    for marker, text in parts.items():
        page = page.replace(marker, text)
    return page


def write_page(
    path: str | Path,
    logits: Sequence[float] = DEFAULT_LOGITS,
    *,
    label: int = 0,
    temperature: float = 1.0,
    view: str = "softmax",
) -> Path:
    """Write :func:`build_page`'s HTML to ``path`` (UTF-8) and return the path.

    The other arguments are :func:`build_page`'s. The parent directory must exist.

    Example:
        >>> import tempfile, pathlib
        >>> out = write_page(pathlib.Path(tempfile.mkdtemp()) / "explore.html", [2.0, 1.0])
        >>> out.read_text(encoding="utf-8").count("<script")
        2
    """
    page = build_page(logits, label=label, temperature=temperature, view=view)
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out
