r"""The figures of ``crossentropy plot``: one function per figure, each returning a Figure.

Every figure is built with matplotlib's object API (:class:`matplotlib.figure.Figure` and the
Agg canvas), never :mod:`matplotlib.pyplot`: nothing touches global state, so the functions
are safe to call from a library, a test or a thread. Every curve is computed by the library's
own functions (:func:`crossentropy.information`, :func:`crossentropy.binary_entropy`,
:func:`crossentropy.softmax`, :mod:`crossentropy.gradients`, ...); the figures only draw them.

Each data line carries a ``gid`` (``line.get_gid()``) naming what it shows, for example
``"ce-grad"``, so tests and scripts can read the plotted numbers back.

:data:`FIGURES` maps each figure's command-line name to its function, in the order
``crossentropy plot all`` draws them.

Every figure speaks English, Chinese or Russian: ``lang="en"`` (the default, so that a call
draws the same figure wherever it runs), ``"zh"``, ``"ru"``, or None for the language of the
locale (``LC_ALL``, ``LC_MESSAGES``, ``LANG``), as ``crossentropy plot`` does without
``--lang``. Titles, axis labels, legend entries and notes come from the ``plot`` gettext
catalogue (:mod:`crossentropy.i18n`); the numbers, the data, the ticks and the formulas are the
same in every language. Cyrillic is in matplotlib's default font (DejaVu Sans); Chinese needs a
font with the CJK glyphs, found through matplotlib's font manager (the first of
:data:`CJK_FONTS` that is installed: Debian's ``fonts-noto-cjk`` gives Noto Sans CJK SC) and
put after the default family, so that Latin text and symbols keep their look and only the
characters the default font lacks come from it. A figure in Chinese without such a font is a
:class:`MissingFontError` that says what to install, never a figure of empty boxes. The font
is chosen inside :func:`matplotlib.rc_context` while the figure is built (its texts keep it):
matplotlib's global settings are left as they were.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol

import matplotlib
import numpy as np
from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import crossentropy as ce
from crossentropy import gradients, i18n
from crossentropy.i18n import gettext as _
from crossentropy.i18n import ngettext

__all__ = [
    "CJK_FONTS",
    "FIGURES",
    "PALETTE",
    "SATURATION",
    "SOFTMAX_LOGITS",
    "SOFTMAX_TEMPERATURES",
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

#: The Okabe-Ito palette: distinguishable with every common form of colour blindness.
PALETTE: Mapping[str, str] = MappingProxyType(
    {
        "blue": "#0072B2",
        "vermillion": "#D55E00",
        "green": "#009E73",
        "purple": "#CC79A7",
        "orange": "#E69F00",
        "sky": "#56B4E9",
        "black": "#000000",
    }
)
_CYCLE = ("blue", "vermillion", "green", "purple", "orange", "sky", "black")
_DASHES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (8, 2)))

#: The fixed logits of the softmax-temperature figure, and the temperatures it shows.
SOFTMAX_LOGITS = (2.0, 1.0, 0.5, 0.0, -1.0)
SOFTMAX_TEMPERATURES = (0.25, 0.5, 1.0, 2.0, 5.0)

_TITLE = 14.0
_SUPTITLE = 15.0
_LABEL = 12.0
_TICK = 11.0
_LEGEND = 10.5
_NOTE = 10.5
_WIDTH = 2.4
_DPI = 150

_Loc = Literal["best", "upper right", "upper left", "upper center", "lower right", "lower center"]

_CE = PALETTE["blue"]
_MSE = PALETTE["vermillion"]
_SHADE_SATURATED = "#999999"
_SHADE_CONCAVE = PALETTE["orange"]


#: Fonts with the Chinese glyphs, in the order a Chinese figure looks for them: Noto Sans CJK
#: and Source Han Sans (one design; the Simplified Chinese forms first), then the CJK fonts
#: of other Linux distributions, of macOS and of Windows.
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "Source Han Sans CN",
    "Noto Sans CJK TC",
    "Noto Sans CJK JP",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "PingFang SC",
    "Heiti SC",
    "Microsoft YaHei",
    "SimHei",
)


class MissingFontError(ValueError):
    """A figure in Chinese, and no font with the Chinese glyphs that matplotlib can find."""


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _add_system_fonts() -> None:
    """Tell matplotlib's font manager about the system's fonts it does not know: its font list
    is cached on disk when matplotlib first runs, so a font installed after that is missing
    from it until the cache is rebuilt."""
    known = {entry.fname for entry in font_manager.fontManager.ttflist}
    for path in font_manager.findSystemFonts():
        if path not in known:
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):  # a file FreeType cannot read
                continue


def _cjk_font() -> str:
    """The first of :data:`CJK_FONTS` that matplotlib can find, asking the system once more
    when none is in matplotlib's font list."""
    for attempt in range(2):
        known = {entry.name for entry in font_manager.fontManager.ttflist}
        for name in CJK_FONTS:
            if name in known:
                return name
        if attempt == 0:
            _add_system_fonts()
    raise MissingFontError(
        "lang='zh': no font with Chinese glyphs is installed for matplotlib "
        f"(looked for {', '.join(CJK_FONTS)}); install one, e.g. `apt-get install "
        "fonts-noto-cjk` on Debian or Ubuntu, or draw the figure in another language"
    )


@contextmanager
def _speaking(lang: str | None) -> Iterator[str]:
    """Build a figure in ``lang``: ``_()`` translates from the ``plot`` catalogue, and for
    Chinese a CJK font follows matplotlib's default family (a glyph the first font lacks is
    taken from the next)."""
    lang = i18n.check_language(lang, "lang")
    families = list(matplotlib.rcParams["font.family"])
    if lang == "zh":
        families.append(_cjk_font())
    with i18n.language(lang, "plot"), matplotlib.rc_context({"font.family": families}):
        yield lang


def _new_figure(width: float, height: float, title: str | None = None) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if title is not None:
        fig.suptitle(title, fontsize=_SUPTITLE, fontweight="bold")
    return fig


def _style(ax: Axes, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=_TITLE)
    ax.set_xlabel(xlabel, fontsize=_LABEL)
    ax.set_ylabel(ylabel, fontsize=_LABEL)
    ax.tick_params(labelsize=_TICK)
    ax.grid(True, alpha=0.3, linewidth=0.8)
    ax.spines[["top", "right"]].set_visible(False)


def _legend(ax: Axes, loc: _Loc = "best") -> None:
    ax.legend(fontsize=_LEGEND, loc=loc, framealpha=0.92)


def _line(ax: Axes, x: Any, y: Any, gid: str, label: str, color: str, **kw: Any) -> None:
    (line,) = ax.plot(
        np.asarray(x), np.asarray(y), color=color, linewidth=kw.pop("linewidth", _WIDTH), **kw
    )
    line.set_label(label)
    line.set_gid(gid)


def _runs(mask: np.ndarray[Any, Any]) -> Iterator[tuple[int, int]]:
    """(first, last) indices of each run of True in a 1-D boolean mask."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        yield int(start), int(stop) - 1


def _shade(ax: Axes, x: np.ndarray[Any, Any], mask: np.ndarray[Any, Any], color: str) -> None:
    for first, last in _runs(mask):
        ax.axvspan(float(x[first]), float(x[last]), color=color, alpha=0.18, linewidth=0)


def _note(ax: Axes, text: str, xy: tuple[float, float], xytext: tuple[float, float]) -> None:
    """An annotation with an arrow; ``xytext`` in axes fraction, ``xy`` in data units."""
    ax.annotate(
        text,
        xy=xy,
        xytext=xytext,
        textcoords="axes fraction",
        fontsize=_NOTE,
        ha="left",
        va="center",
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.6", "alpha": 0.95},
        arrowprops={"arrowstyle": "->", "color": "0.25", "linewidth": 1.2},
    )


def _text(ax: Axes, text: str, xy: tuple[float, float], **kw: Any) -> None:
    """A boxed note at ``xy`` in axes fraction."""
    ax.text(
        *xy,
        text,
        transform=ax.transAxes,
        fontsize=_NOTE,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.6", "alpha": 0.95},
        **kw,
    )


def _second_derivative(y: np.ndarray[Any, Any], x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    result: np.ndarray[Any, Any] = np.gradient(np.gradient(y, x), x)
    return result


# --------------------------------------------------------------------------------------------
# The figures
# --------------------------------------------------------------------------------------------


def information_figure(*, lang: str | None = "en") -> Figure:
    """Information content -log p of an event of probability p, in bits and in nats.

    ``lang``: the language of the text (see :func:`make_figure`).

    Example:
        >>> fig = information_figure()
        >>> sorted(line.get_gid() for line in fig.axes[0].get_lines() if line.get_gid())
        ['bits', 'nats']
    """
    with _speaking(lang):
        p = np.linspace(0.004, 1.0, 500)
        bits = ce.information(p, base=2)
        nats = ce.information(p)
        fig = _new_figure(8.0, 5.0)
        ax = fig.add_subplot()
        _line(ax, p, bits, "bits", _("bits:  {formula}").format(formula="−log₂ p"), _CE)
        nats_label = _("nats:  {formula}").format(formula="−ln p")
        _line(ax, p, nats, "nats", nats_label, _MSE, linestyle="--")
        marks = np.array([1 / 8, 1 / 4, 1 / 2, 1.0])
        ax.plot(marks, ce.information(marks, base=2), "o", color=_CE, markersize=7)
        for q in marks[:3]:
            bits_q = float(ce.information(q, base=2))
            n = round(bits_q)
            ax.annotate(
                ngettext("{event}: {n} bit", "{event}: {n} bits", n).format(
                    event=f"p = 1/{round(1 / q)}", n=n
                ),
                xy=(q, bits_q),
                xytext=(10, 6),
                textcoords="offset points",
                fontsize=_NOTE,
                color=_CE,
            )
        _note(
            ax,
            _("a certain event ({condition})\ncarries no information").format(condition="p = 1"),
            (1.0, 0.0),
            (0.62, 0.32),
        )
        _text(
            ax,
            _("1 bit = ln 2 ≈ {nats:.3f} nats\nrare events are surprising").format(
                nats=math.log(2.0)
            ),
            (0.40, 0.78),
        )
        ax.set_xlim(0.0, 1.02)
        ax.set_ylim(0.0, 8.2)
        _style(
            ax,
            _("Information content: the rarer the event, the more it tells"),
            _("probability p of the event"),
            _("information {formula}  (bits or nats)").format(formula="−log p"),
        )
        _legend(ax, "upper right")
    return fig


def binary_entropy_figure(*, lang: str | None = "en") -> Figure:
    """Binary entropy H(p) = -p log p - (1-p) log(1-p), in bits and in nats.

    ``lang``: the language of the text (see :func:`make_figure`).

    Example:
        >>> fig = binary_entropy_figure()
        >>> sorted(line.get_gid() for line in fig.axes[0].get_lines() if line.get_gid())
        ['bits', 'nats']
    """
    with _speaking(lang):
        p = np.linspace(0.0, 1.0, 501)
        bits = ce.binary_entropy(p, base=2)
        nats = ce.binary_entropy(p)
        fig = _new_figure(8.0, 5.0)
        ax = fig.add_subplot()
        _line(ax, p, bits, "bits", _("bits:  {formula}").format(formula="H₂(p)"), _CE)
        nats_label = _("nats:  {formula}").format(formula="Hₑ(p)")
        _line(ax, p, nats, "nats", nats_label, _MSE, linestyle="--")
        top = float(ce.binary_entropy(0.5, base=2))
        ax.plot([0.5], [top], "o", color=_CE, markersize=7)
        n = round(top)
        fair = ngettext(
            "a fair coin: H = {n} bit,\nthe most uncertain",
            "a fair coin: H = {n} bits,\nthe most uncertain",
            n,
        ).format(n=n)
        _note(ax, fair, (0.5, top), (0.60, 0.93))
        certain = _("a certain outcome: {value}\n({convention})").format(
            value="H = 0", convention="0 · log 0 = 0"
        )
        _note(ax, certain, (0.0, 0.0), (0.06, 0.20))
        ax.set_xlim(-0.01, 1.01)
        ax.set_ylim(0.0, 1.12)
        _style(
            ax,
            _("Binary entropy: {formula}").format(formula="H(p) = −p log p − (1 − p) log(1 − p)"),
            _("probability p of heads"),
            _("entropy {formula}  (bits or nats)").format(formula="H(p)"),
        )
        _legend(ax, "lower center")
    return fig


def ce_vs_mse_probability_figure(*, lang: str | None = "en") -> Figure:
    r"""Cross entropy and squared error as functions of the true-class probability q.

    With the label 1 and the prediction q: cross entropy -log q (gradient -1/q) against the
    squared error (1 - q)^2 (gradient 2 (q - 1)), both from :mod:`crossentropy.gradients`.
    ``lang``: the language of the text (see :func:`make_figure`).

    Example:
        >>> fig = ce_vs_mse_probability_figure()
        >>> [sorted(g for g in (ln.get_gid() for ln in ax.get_lines()) if g) for ax in fig.axes]
        [['ce', 'mse'], ['ce-grad', 'mse-grad']]
    """
    with _speaking(lang):
        q = np.linspace(0.01, 1.0, 500)
        ones = np.ones_like(q)
        ce_loss, ce_grad = gradients.binary_cross_entropy(q, ones, reduction="none")
        mse_loss, mse_grad = gradients.mse(q, ones, reduction="none")
        fig = _new_figure(13.0, 5.2, _("Cross entropy vs MSE on the probability of the true class"))
        left, right = fig.subplots(1, 2)
        q_label = _("probability q given to the true class")

        _line(left, q, ce_loss, "ce", _("cross entropy  {formula}").format(formula="−ln q"), _CE)
        mse_label = _("MSE  {formula}").format(formula="(1 − q)²")
        _line(left, q, mse_loss, "mse", mse_label, _MSE, linestyle="--")
        wrong = _("confidently wrong:\n{limits}").format(limits="CE → ∞, MSE ≤ 1")
        _note(left, wrong, (0.03, 3.5), (0.22, 0.78))
        left.set_ylim(0.0, 4.6)
        left.set_xlim(0.0, 1.01)
        _style(left, _("Loss"), q_label, _("loss  (nats)"))
        _legend(left, "upper right")

        ce_grad_label = _("cross entropy:  {formula}").format(formula="−1/q")
        _line(right, q, ce_grad, "ce-grad", ce_grad_label, _CE)
        mse_grad_label = _("MSE:  {formula}").format(formula="2(q − 1)")
        _line(right, q, mse_grad, "mse-grad", mse_grad_label, _MSE, linestyle="--")
        right.axhline(0.0, color="0.3", linewidth=0.9)
        _note(
            right,
            _("CE pushes hardest where\nthe model is most wrong"),
            (0.12, -1 / 0.12),
            (0.25, 0.22),
        )
        _note(
            right,
            _("MSE's push is at most {bound},\nhowever wrong the model").format(bound=2),
            (0.05, 2 * (0.05 - 1)),
            (0.38, 0.55),
        )
        right.set_ylim(-10.5, 0.6)
        right.set_xlim(0.0, 1.01)
        _style(right, _("Gradient"), q_label, _("d loss / d {x}").format(x="q"))
        _legend(right, "lower right")
    return fig


def _sigmoid_curves(z: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Loss and d loss / d z for a sigmoid output with label 1, z the logit."""
    ones = np.ones_like(z)
    ce_loss, ce_grad = gradients.sigmoid_cross_entropy(z, ones, reduction="none")
    p = np.asarray(ce.sigmoid(z))
    mse_loss, d_mse_dp = gradients.mse(p, ones, reduction="none")
    # chain rule through the sigmoid: dp/dz = p (1 - p)
    mse_grad = d_mse_dp * p * (1.0 - p)
    return {"p": p, "ce": ce_loss, "ce-grad": ce_grad, "mse": mse_loss, "mse-grad": mse_grad}


def _softmax_curves(z: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    """Loss and d loss / d z for softmax over logits (z, 0, 0), label 0, z the true logit."""
    logits = np.stack([z, np.zeros_like(z), np.zeros_like(z)], axis=-1)
    labels = np.zeros(z.shape, dtype=np.int64)
    ce_loss, ce_grad = gradients.sparse_softmax_cross_entropy(logits, labels, reduction="none")
    p = np.asarray(ce.softmax(logits))
    onehot = np.zeros_like(p)
    onehot[:, 0] = 1.0
    per_class, d_mse_dp = gradients.mse(p, onehot, reduction="none")
    # squared error summed over the classes; chain rule through the softmax Jacobian
    # dp_j/dz_0 = p_j (delta_j0 - p_0), so d/dz_0 = p_0 (g_0 - sum_j g_j p_j)
    mse_loss = per_class.sum(axis=-1)
    mse_grad = p[:, 0] * (d_mse_dp[:, 0] - (d_mse_dp * p).sum(axis=-1))
    return {
        "p": p[:, 0],
        "ce": ce_loss,
        "ce-grad": ce_grad[:, 0],
        "mse": mse_loss,
        "mse-grad": mse_grad,
    }


#: |d MSE / d z| below this while the true class has p < 0.5 is drawn as "saturated".
SATURATION = 0.05


def ce_vs_mse_logit_figure(*, lang: str | None = "en") -> Figure:
    r"""Cross entropy and squared error as functions of the logit, through sigmoid and softmax.

    Top row: one sigmoid output, label 1, logit z. Bottom row: a softmax over the logits
    (z, 0, 0), label 0. Shaded grey: the model is wrong (p < 0.5) yet the MSE gradient is
    below :data:`SATURATION`: MSE barely learns there, cross entropy's gradient stays near -1.
    Shaded orange: MSE's loss is concave in z (negative second derivative): its landscape is not
    convex, while cross entropy's is convex everywhere. ``lang``: the language of the text
    (see :func:`make_figure`).

    Example:
        >>> fig = ce_vs_mse_logit_figure()
        >>> len(fig.axes)
        4
    """
    with _speaking(lang):
        z = np.linspace(-8.0, 8.0, 641)
        fig = _new_figure(
            13.0, 9.6, _("Cross entropy vs MSE on the logit: saturation and convexity")
        )
        axes = fig.subplots(2, 2)
        rows = (
            (
                "sigmoid",
                "σ(z)",
                _sigmoid_curves(z),
                _("logit z  (label {label}, {p})").format(label=1, p="p = σ(z)"),
            ),
            (
                "softmax",
                "softmax",
                _softmax_curves(z),
                _("true-class logit z  (logits {logits})").format(logits="(z, 0, 0)"),
            ),
        )
        for (name, short, c, xlabel), (loss_ax, grad_ax) in zip(rows, axes, strict=True):
            saturated = (c["p"] < 0.5) & (np.abs(c["mse-grad"]) < SATURATION)
            concave = _second_derivative(c["mse"], z) < -1e-6

            _shade(loss_ax, z, concave, _SHADE_CONCAVE)
            _line(loss_ax, z, c["ce"], f"{name}-ce", _("cross entropy"), _CE)
            _line(loss_ax, z, c["mse"], f"{name}-mse", _("MSE"), _MSE, linestyle="--")
            top = 2.0 if name == "sigmoid" else 2.6
            loss_ax.set_ylim(-0.05, top)
            loss_ax.set_xlim(float(z[0]), float(z[-1]))
            first, last = next(_runs(concave))
            mid = 0.5 * (float(z[first]) + float(z[last]))
            _text(
                loss_ax,
                _(
                    "orange: MSE is concave here —\nits landscape is not convex\n"
                    "(CE is convex everywhere)"
                ),
                (0.05, 0.06),
            )
            _note(
                loss_ax,
                _("MSE flattens out:\na plateau, however wrong"),
                (mid - 1.5, float(np.interp(mid - 1.5, z, c["mse"]))),
                (0.24, 0.45),
            )
            _style(
                loss_ax,
                _("Loss through {function}").format(function=short),
                xlabel,
                _("loss  (nats for CE)"),
            )
            _legend(loss_ax, "upper right")

            _shade(grad_ax, z, saturated, _SHADE_SATURATED)
            ce_grad_label = _("cross entropy:  {formula}").format(formula="p − 1")
            _line(grad_ax, z, c["ce-grad"], f"{name}-ce-grad", ce_grad_label, _CE)
            _line(
                grad_ax,
                z,
                c["mse-grad"],
                f"{name}-mse-grad",
                _("MSE (chain rule)"),
                _MSE,
                linestyle="--",
            )
            grad_ax.axhline(0.0, color="0.3", linewidth=0.9)
            grad_ax.set_ylim(-1.15, 0.25)
            grad_ax.set_xlim(float(z[0]), float(z[-1]))
            edge = float(z[saturated][-1])
            _note(
                grad_ax,
                _(
                    "grey: wrong but saturated —\nMSE gradient {mse}, learns slowly;\n"
                    "CE gradient {ce}"
                ).format(mse="≈ 0", ce="≈ −1"),
                (edge - 1.0, float(np.interp(edge - 1.0, z, c["mse-grad"]))),
                (0.05, 0.45),
            )
            _style(
                grad_ax,
                _("Gradient through {function}").format(function=short),
                xlabel,
                _("d loss / d {x}").format(x="z"),
            )
            _legend(grad_ax, "lower right")
    return fig


def regression_losses_figure(*, lang: str | None = "en") -> Figure:
    """L1, L2 (squared error), smooth L1 and Huber losses of a residual, with derivatives.

    ``lang``: the language of the text (see :func:`make_figure`).

    Example:
        >>> fig = regression_losses_figure()
        >>> sorted(g for g in (ln.get_gid() for ln in fig.axes[1].get_lines()) if g)
        ['huber-grad', 'l1-grad', 'l2-grad', 'smooth-l1-grad']
    """
    with _speaking(lang):
        d = np.linspace(-3.0, 3.0, 601)
        zero = np.zeros_like(d)
        l2, l2_grad = gradients.mse(d, zero, reduction="none")
        l1, l1_grad = gradients.l1(d, zero, reduction="none")
        sl1, sl1_grad = gradients.smooth_l1(d, zero, beta=1.0, reduction="none")
        hub, hub_grad = gradients.huber(d, zero, delta=2.0, reduction="none")
        smooth = _("smooth L1  ({parameter})").format(parameter="β = 1")
        smooth_grad = _("smooth L1:  {formula}").format(formula="clip(d / β, ±1)")
        huber = _("Huber  ({parameter})").format(parameter="δ = 2")
        huber_grad = _("Huber:  {formula}").format(formula="clip(d, ±δ)")
        curves = (
            ("l2", "L2  d²", "L2:  2d", l2, l2_grad),
            ("l1", "L1  |d|", "L1:  sign(d)", l1, l1_grad),
            ("smooth-l1", smooth, smooth_grad, sl1, sl1_grad),
            ("huber", huber, huber_grad, hub, hub_grad),
        )
        fig = _new_figure(13.0, 5.2, _("Regression losses of a residual d = prediction − target"))
        left, right = fig.subplots(1, 2)
        for i, (gid, label, grad_label, loss, grad) in enumerate(curves):
            color, dashes = PALETTE[_CYCLE[i]], _DASHES[i]
            _line(left, d, loss, gid, label, color, linestyle=dashes)
            _line(right, d, grad, f"{gid}-grad", grad_label, color, linestyle=dashes)
        left.set_ylim(-0.05, 4.6)
        _style(
            left,
            _("Loss: quadratic near {x}, linear tails").format(x=0),
            _("residual d"),
            _("loss"),
        )
        _legend(left, "upper center")

        right.axhline(0.0, color="0.3", linewidth=0.9)
        right.set_ylim(-3.3, 3.3)
        _text(
            right,
            _(
                "L2's gradient grows with the error;\nL1's is {sign} (a jump at {x});\n"
                "smooth L1 and Huber: linear,\nthen capped at {beta} and {delta}"
            ).format(sign="±1", x=0, beta=1, delta="δ"),
            (0.03, 0.70),
        )
        _style(right, _("Derivative"), _("residual d"), _("d loss / d {x}").format(x="d"))
        _legend(right, "lower right")
    return fig


def softmax_temperature_figure(*, lang: str | None = "en") -> Figure:
    """softmax(x / T) of fixed logits under several temperatures T.

    ``lang``: the language of the text (see :func:`make_figure`).

    Example:
        >>> fig = softmax_temperature_figure()
        >>> [line.get_gid() for line in fig.axes[0].get_lines() if line.get_gid()]
        ['T=0.25', 'T=0.5', 'T=1', 'T=2', 'T=5']
    """
    with _speaking(lang):
        logits = np.asarray(SOFTMAX_LOGITS)
        classes = np.arange(logits.shape[0])
        fig = _new_figure(
            13.0, 5.2, _("Softmax with temperature: {formula}").format(formula="softmax(x / T)")
        )
        left, right = fig.subplots(1, 2)
        for i, t in enumerate(SOFTMAX_TEMPERATURES):
            probs = ce.softmax(logits / t)
            _line(
                left,
                classes,
                probs,
                f"T={t:g}",
                f"T = {t:g}",
                PALETTE[_CYCLE[i]],
                linestyle=_DASHES[i],
                marker="osD^v"[i],
                markersize=7,
            )
        uniform = 1.0 / logits.shape[0]
        left.axhline(uniform, color="0.4", linewidth=1.0, linestyle=":")
        left.text(
            4.0,
            uniform + 0.015,
            _("uniform {p}").format(p=f"1/{logits.shape[0]}"),
            fontsize=_NOTE,
            ha="right",
            color="0.3",
        )
        left.set_xticks(classes, [f"{c}\nx = {v:g}" for c, v in zip(classes, logits, strict=True)])
        left.set_ylim(0.0, 1.0)
        n = len(SOFTMAX_TEMPERATURES)
        _style(
            left,
            ngettext(
                "Probabilities at {n} temperature", "Probabilities at {n} temperatures", n
            ).format(n=n),
            _("class (and its logit x)"),
            _("probability"),
        )
        _legend(left, "upper right")

        temperatures = np.geomspace(0.05, 50.0, 400)
        table = np.asarray(ce.softmax(logits[None, :] / temperatures[:, None]))
        for c in classes:
            _line(
                right,
                temperatures,
                table[:, c],
                f"class-{c}",
                _("class {c}  ({logit})").format(c=c, logit=f"x = {logits[c]:g}"),
                PALETTE[_CYCLE[int(c)]],
                linestyle=_DASHES[int(c)],
            )
        right.set_xscale("log")
        right.axhline(uniform, color="0.4", linewidth=1.0, linestyle=":")
        right.axvline(1.0, color="0.4", linewidth=1.0, linestyle=":")
        _text(right, _("{limit}: one-hot\n(the argmax)").format(limit="T → 0"), (0.03, 0.55))
        _note(right, _("{limit}: uniform").format(limit="T → ∞"), (30.0, uniform), (0.70, 0.36))
        right.set_ylim(0.0, 1.0)
        _style(
            right,
            _("Each class's probability as T varies"),
            _("temperature T  (log scale)"),
            _("probability"),
        )
        _legend(right, "upper right")
    return fig


class _Build(Protocol):
    def __call__(self, *, lang: str | None = "en") -> Figure: ...


FIGURES: Mapping[str, _Build] = MappingProxyType(
    {
        "information": information_figure,
        "binary-entropy": binary_entropy_figure,
        "ce-vs-mse-probability": ce_vs_mse_probability_figure,
        "ce-vs-mse-logit": ce_vs_mse_logit_figure,
        "regression-losses": regression_losses_figure,
        "softmax-temperature": softmax_temperature_figure,
    }
)


def make_figure(name: str, *, lang: str | None = "en") -> Figure:
    """The figure called ``name`` (a key of :data:`FIGURES`), its text in ``lang``.

    ``lang`` is ``"en"`` (the default), ``"zh"`` or ``"ru"``, or None for the locale's
    language (``LC_ALL``, ``LC_MESSAGES``, ``LANG``; English when it names none of these).

    Raises:
        ValueError: ``name`` is not a figure, or ``lang`` is not a language; the message lists
            the valid ones.
        MissingFontError: ``lang`` is ``"zh"`` and matplotlib finds no font with the Chinese
            glyphs (one of :data:`CJK_FONTS`); the message says what to install.
    """
    try:
        build = FIGURES[name]
    except KeyError:
        raise ValueError(
            f"figure: unknown figure {name!r}; expected one of {', '.join(FIGURES)}"
        ) from None
    return build(lang=lang)


def save_figure(fig: Figure, path: str | Path, *, format: str = "png") -> Path:
    """Write ``fig`` to ``path`` as ``"png"`` or ``"svg"``; returns the path.

    A PNG is rendered by Agg and stored with an adaptive 256-colour palette (line art loses
    nothing visible and the file is about a third of the size); neither format carries a
    timestamp, and an SVG's element ids come from a fixed salt (``svg.hashsalt``, random by
    default, unless one is set), so the same figure writes the same bytes.
    """
    if format not in ("png", "svg"):
        raise ValueError(f"format: expected 'png' or 'svg'; got {format!r}")
    path = Path(path)
    if format == "svg":
        salt = matplotlib.rcParams["svg.hashsalt"] or "crossentropy"
        with matplotlib.rc_context({"svg.hashsalt": salt}):
            fig.savefig(path, format="svg", metadata={"Date": None}, facecolor="white")
        return path
    from PIL import Image  # a dependency of matplotlib

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    palette.save(path, format="PNG", optimize=True)
    return path
