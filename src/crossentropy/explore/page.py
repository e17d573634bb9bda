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
- the loss curves of one logit with the current point and its tangent;
- regression view: a residual ``r`` = prediction - target and the four regression losses of
  :mod:`crossentropy.losses` at it, L1 ``|r|``, L2 ``r^2`` (:func:`crossentropy.mse`), smooth
  L1 (``beta``) and Huber (``delta``), with their derivatives in ``r``, drawn as curves with
  the current residual marked.

Every displayed number is an ``<output>`` with a stable id and its full-precision value in
``data-value`` (``p-0``, ``ce-nats``, ``grad-mse-2``, ``bce-sum``, ``reg-huber``,
``reg-grad-l1``, ...), so tests and scripts can read the page back.

The page speaks English, Chinese and Russian, and switches between them in place (the
numbers stay where they are). Its words are messages of the ``explore`` gettext domain: the
script marks its own with ``_("...")``, this module the page's static text (``_TEXT``, put
into the elements marked ``data-text``/``data-label`` of the template); :func:`build_page`
renders the static text in the language asked for and embeds every message's translation
into each language, from the compiled catalogues, as JSON for the switch. Numbers and
formulas are the same in every language: they are never part of a message, only
``{fields}`` of one.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from .. import __version__
from ..i18n import LANGUAGES, check_language, language
from ..i18n import gettext as _
from ..i18n import mark as N_

__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_DELTA",
    "DEFAULT_LOGITS",
    "DEFAULT_RESIDUAL",
    "LOGIT_LIMIT",
    "MAX_BETA",
    "MAX_CLASSES",
    "MAX_TEMPERATURE",
    "MIN_CLASSES",
    "MIN_DELTA",
    "MIN_TEMPERATURE",
    "RESIDUAL_LIMIT",
    "VIEWS",
    "build_page",
    "messages",
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
#: The views: softmax with one true class or soft labels, sigmoid per class, regression.
VIEWS = ("softmax", "binary", "regression")
#: The regression view's residual slider runs over [-RESIDUAL_LIMIT, RESIDUAL_LIMIT]; it
#: starts at DEFAULT_RESIDUAL, with smooth L1's beta at DEFAULT_BETA (the library's default)
#: and Huber's delta at DEFAULT_DELTA (not 1, where Huber is smooth L1 and the two curves
#: would be one).
RESIDUAL_LIMIT = 4.0
DEFAULT_RESIDUAL = 1.5
DEFAULT_BETA, DEFAULT_DELTA = 1.0, 2.0
#: beta runs over [0, MAX_BETA] (0 is L1), delta over [MIN_DELTA, MAX_BETA] (it must be > 0).
MAX_BETA = 3.0
MIN_DELTA = 0.01

# The HTML of the {fields} in the page's static text: formulas, code and the places where
# the script writes a number. The same in every language (a translation moves a field, never
# changes it).
_MARKUP = {
    "command": "crossentropy explore",
    "library": "<code>crossentropy</code>",
    "losses": "<code>crossentropy.losses</code>",
    "gradients": "<code>crossentropy.gradients</code>",
    "mse_vs_ce": "<code>crossentropy explain mse-vs-ce</code>",
    "T": "<i>T</i>",
    "x": "<i>x</i>",
    "r": "<i>r</i>",
    "beta": "<i>&#x3B2;</i>",
    "delta": "<i>&#x3B4;</i>",
    "z_is_x_over_T": "<i>z</i> = <i>x</i> / <i>T</i>",
    "T_now": '<i>T</i> = <span id="temperature-shown"></span>',
    "one_over_T": "1/<i>T</i>",
    "bits": "<math><mi>CE</mi><mo>/</mo><mi>ln</mi><mn>2</mn></math>",
    "p_minus_y": "<i>p</i> &#x2212; <i>y</i>",
    "s_minus_y": "<i>s</i> &#x2212; <i>y</i>",
    "s_one_minus_s": "<i>s</i>(1 &#x2212; <i>s</i>)",
    "x_k": '<i>x</i><sub class="curve-k"></sub>',
    "r_is_x_minus_t": "<i>r</i> = <i>x</i> &#x2212; <i>t</i>",
    "plus_minus_one": "&#xB1;1",
    "one": "1",
    "zero": "0",
    "minus_one": "&#x2212;1",
}

# The page's static text: key -> message. An element of the template marked
# data-text="key" gets the message (its {fields} from _MARKUP) as its content, one marked
# data-label="key" gets it as its aria-label; the script does the same when the language
# changes.
_TEXT = {
    "page-title": N_("{command}: play with logits and residuals"),
    "heading": N_("Play with logits and residuals"),
    "lede": N_(
        "Drag the logits, pick the label and a temperature, and watch the probabilities, the "
        "losses and their gradients move; in the regression view, drag a residual instead. "
        "Every number is computed in this page, in double precision, by the same formulas as "
        "the Python library {library} ({losses} and {gradients}); nothing is fetched from the "
        "network."
    ),
    "languages": N_("language"),
    "views": N_("view"),
    "view-softmax": N_("Softmax: one true class or soft labels"),
    "view-binary": N_("Sigmoid: binary and multi-label"),
    "view-regression": N_("Regression: L1, L2, smooth L1, Huber"),
    "settings": N_("settings"),
    "classes": N_("classes"),
    "temperature": N_("temperature {T}"),
    "temperature-log": N_("temperature (log scale)"),
    "temperature-value": N_("temperature"),
    "labels": N_("labels"),
    "one-true-class": N_("one true class"),
    "soft-labels": N_("soft labels"),
    "curves-against": N_("curves against"),
    "residual": N_("residual {r}"),
    "residual-value": N_("residual"),
    "beta": N_("smooth L1: {beta}"),
    "beta-value": N_("smooth L1 beta"),
    "delta": N_("Huber: {delta}"),
    "delta-value": N_("Huber delta"),
    "numbers": N_("numbers"),
    "ce-nats": N_("cross entropy (nats)"),
    "ce-bits": N_("cross entropy (bits)"),
    "mse": N_("MSE on the probabilities"),
    "bce-sum": N_("binary cross entropy, sum (nats)"),
    "bce-bits": N_("the same in bits"),
    "se-sum": N_("squared error, sum"),
    "temperature-note": N_(
        "The temperature divides the logits, {z_is_x_over_T} (now {T_now}); the gradients are "
        "with respect to the logits {x} you drag, so each carries a factor {one_over_T}."
    ),
    "soft-note": N_("Soft label weights are normalised to sum to one."),
    "binary-note": N_(
        "Each class is its own yes/no question: tick the classes that are present (any "
        "number of them)."
    ),
    "regression-note": N_(
        "The residual is the prediction minus the target, {r_is_x_minus_t}; every derivative "
        "is with respect to the prediction {x}, which is the derivative in {r}."
    ),
    "formulas": N_("formulas"),
    "softmax-heading": N_("Softmax and its losses"),
    "in-bits": N_(
        "in bits: {bits}. MSE on the probabilities (the Brier score, as in {mse_vs_ce}):"
    ),
    "gradients-intro": N_("Gradients with respect to each logit:"),
    "softmax-formula-note": N_(
        "With one true class the cross-entropy gradient is {p_minus_y}: it stays large while "
        "the model is confidently wrong. The MSE gradient is multiplied by the softmax "
        "Jacobian and fades out exactly there."
    ),
    "sigmoid-heading": N_("Sigmoid per class and its losses"),
    "sigmoid-formula-note": N_(
        "The binary cross entropy's gradient is {s_minus_y}; the squared error's carries the "
        "factor {s_one_minus_s} of a saturated sigmoid, near zero when the model is "
        "confidently wrong."
    ),
    "regression-heading": N_("Regression losses and their derivatives"),
    "regression-formula-note": N_(
        "L1's derivative stays {plus_minus_one} however small the residual, so a fixed "
        "learning rate keeps overshooting late in training. L2's grows with the residual, so "
        "outliers and the large errors of early training take large, unstable steps. Smooth "
        "L1 is quadratic near zero and linear far out: its derivative shrinks near the "
        "minimum and is bounded by {one}. Huber is smooth L1 with {beta} = {delta}, scaled "
        "by {delta}: its derivative is bounded by {delta}."
    ),
    "curves": N_("loss curves"),
    "curves-note": N_(
        "The curves vary one logit, {x_k}, with every other setting held where it is; the "
        "circle is the current point and the dashed line its tangent, whose slope is the "
        "gradient in the table. Cross entropy is convex in each logit: it bends upwards "
        "everywhere. The squared error on a softmax or sigmoid is not: shaded where it bends "
        "downwards."
    ),
    "regression-curves-note": N_(
        "The curves vary the residual {r}; the circles mark the current residual on each loss "
        "(left) and on its derivative (right). L1 has no derivative at zero: its slope jumps "
        "from {minus_one} to {one} there, and the library takes {zero} at zero itself."
    ),
}

# A message in the script: _("..."), one string literal in double quotes (what Babel's
# javascript extractor extracts from the same calls; a test checks the two agree).
_SCRIPT_MESSAGE = re.compile(r'(?<![\w$.])_\("((?:[^"\\\n]|\\.)*)"\)')


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


def messages() -> tuple[str, ...]:
    """Every message of the page, in the order found: the static text's, then the script's.

    Example:
        >>> "Play with logits and residuals" in messages()
        True
    """
    found = dict.fromkeys(_TEXT.values())
    for literal in _SCRIPT_MESSAGE.findall(_asset("explore.js")):
        found[json.loads(f'"{literal}"')] = None
    return tuple(found)


@cache
def _catalogues() -> dict[str, dict[str, str]]:
    """Each language's translation of every message the page has (English: none, the
    messages are English), from the compiled catalogues: what the language switch reads."""
    wanted = messages()
    catalogues: dict[str, dict[str, str]] = {}
    for lang in LANGUAGES:
        with language(lang, "explore"):
            catalogues[lang] = {} if lang == "en" else {m: _(m) for m in wanted}
    return catalogues


def _html(message: str) -> str:
    """A message in the current language as HTML: its text escaped, its {fields} filled
    with their markup (the script's ``fill`` does the same)."""
    return re.sub(r"\{(\w+)\}", lambda m: _MARKUP[m.group(1)], html.escape(_(message), quote=False))


def _render(template: str) -> str:
    """The template with its static text in the current language: the content of each
    element marked ``data-text="key"`` (empty in the template), the ``aria-label`` of each
    marked ``data-label="key"``."""
    page = re.sub(
        r'data-text="([\w-]+)">', lambda m: m.group(0) + _html(_TEXT[m.group(1)]), template
    )
    return re.sub(
        r'data-label="([\w-]+)"',
        lambda m: f'{m.group(0)} aria-label="{html.escape(_(_TEXT[m.group(1)]))}"',
        page,
    )


def build_page(
    logits: Sequence[float] = DEFAULT_LOGITS,
    *,
    label: int = 0,
    temperature: float = 1.0,
    view: str = "softmax",
    lang: str = "en",
) -> str:
    """The explore page as one HTML document, everything inline.

    Args:
        logits: the starting logits, 2 to 6 finite numbers in [-10, 10].
        label: the starting true class, an index into ``logits``.
        temperature: the starting temperature, in [0.1, 10].
        view: the view shown first, ``"softmax"``, ``"binary"`` or ``"regression"``.
        lang: the language the page opens in, ``"en"``, ``"zh"`` or ``"ru"`` (its switch
            offers the others).

    Returns:
        The HTML text.

    Raises:
        ValueError, TypeError: a value out of its range, naming the argument.

    Example:
        >>> page = build_page([1.5, -0.5], label=1, temperature=2.0)
        >>> page.startswith("<!DOCTYPE html>"), "://" in page
        (True, False)
        >>> '<h1 data-text="heading">玩转 logits 与残差</h1>' in build_page(lang="zh")
        True
        >>> build_page([1.0])
        Traceback (most recent call last):
        ...
        ValueError: logits: expected 2 to 6 values (one per class); got 1
    """
    values = _logits(logits)
    lang = check_language(lang, "lang")
    first_view = _view(view)
    config = {
        "logits": values,
        "label": _label(label, len(values)),
        "temperature": _temperature(temperature),
        "view": first_view,
        "regression": {"residual": DEFAULT_RESIDUAL, "beta": DEFAULT_BETA, "delta": DEFAULT_DELTA},
        "limits": {
            "logit": LOGIT_LIMIT,
            "minClasses": MIN_CLASSES,
            "maxClasses": MAX_CLASSES,
            "minTemperature": MIN_TEMPERATURE,
            "maxTemperature": MAX_TEMPERATURE,
            "residual": RESIDUAL_LIMIT,
            "maxBeta": MAX_BETA,
            "minDelta": MIN_DELTA,
        },
        "lang": lang,
        "text": _TEXT,
        "markup": _MARKUP,
        "catalogues": _catalogues(),
    }
    # inside <script>, "</" would end the element: JSON's \u003c escape keeps it text
    config_json = json.dumps(config, ensure_ascii=False).replace("<", "\\u003c")
    with language(lang, "explore"):
        page = _render(_asset("explore.html"))
    parts = {
        "@@LANG@@": lang,
        "@@VIEW@@": first_view,
        "@@STYLE@@": _asset("explore.css").strip(),
        "@@SCRIPT@@": _asset("explore.js").strip(),
        "@@CONFIG@@": config_json,
        "@@VERSION@@": __version__,
    }
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
    lang: str = "en",
) -> Path:
    """Write :func:`build_page`'s HTML to ``path`` (UTF-8) and return the path.

    The other arguments are :func:`build_page`'s. The parent directory must exist.

    Example:
        >>> import tempfile, pathlib
        >>> out = write_page(pathlib.Path(tempfile.mkdtemp()) / "explore.html", [2.0, 1.0])
        >>> out.read_text(encoding="utf-8").count("<script")
        2
    """
    page = build_page(logits, label=label, temperature=temperature, view=view, lang=lang)
    out = Path(path)
    out.write_text(page, encoding="utf-8")
    return out
