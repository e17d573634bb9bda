"""The demo's figure: validation accuracy, validation cross entropy and the output gradient
per epoch, every loss on the same axes.

Built with matplotlib's object API (no pyplot state), in the palette of
:mod:`crossentropy.viz`. Every data line carries a ``gid`` ``"<metric>:<loss>"`` (for
example ``"val_accuracy:mse"``), so the plotted numbers can be read back.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from crossentropy.viz import PALETTE

from .objectives import LOSS_TITLES
from .summary import TARGET_ACCURACY
from .train import DemoConfig, EpochRecord

__all__ = ["PANELS", "training_curves_figure"]

#: The panels, left to right: (metric, title, y label, log scale).
PANELS = (
    ("val_accuracy", "Validation accuracy", "accuracy", False),
    ("val_cross_entropy", "Validation cross entropy (lower is better)", "nats", True),
    (
        "output_grad_norm",
        "Gradient at the output, mean per example",
        "‖∂loss/∂logits‖",
        True,
    ),
)

_COLORS = {"ce": PALETTE["blue"], "mse": PALETTE["vermillion"], "ce-smooth": PALETTE["green"]}
_DASHES = {"ce": "-", "mse": "--", "ce-smooth": "-."}


def _style(ax: Axes, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=13.0)
    ax.set_xlabel("epoch", fontsize=11.5)
    ax.set_ylabel(ylabel, fontsize=11.5)
    ax.tick_params(labelsize=10.5)
    ax.grid(True, alpha=0.3, linewidth=0.8)
    ax.spines[["top", "right"]].set_visible(False)


def training_curves_figure(history: Sequence[EpochRecord], config: DemoConfig) -> Figure:
    """Three panels of per-epoch curves, one line per loss (epoch 0: the initial model).

    Example:
        >>> from crossentropy.demo.train import EpochRecord, DemoConfig
        >>> h = [EpochRecord(e, "ce", 1.0, 0.5, 1.0, 0.5 + 0.1 * e, 1.0, 0.5) for e in (0, 1, 2)]
        >>> fig = training_curves_figure(h, DemoConfig(losses=("ce",)))
        >>> [line.get_ydata().tolist() for line in fig.axes[0].get_lines()
        ...  if line.get_gid() == "val_accuracy:ce"]
        [[0.5, 0.6, 0.7]]
    """
    fig = Figure(figsize=(15.0, 4.8), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(
        f"{config.dataset}, {config.model} model, SGD lr {config.lr:g}, batch "
        f"{config.batch_size}, seed {config.seed}: the same initial weights and batches "
        "for every loss",
        fontsize=13.5,
        fontweight="bold",
    )
    axes = fig.subplots(1, len(PANELS))
    for ax, (metric, title, ylabel, log) in zip(axes, PANELS, strict=True):
        for loss in config.losses:
            mine = sorted((r for r in history if r.loss == loss), key=lambda r: r.epoch)
            epochs = [r.epoch for r in mine]
            values = [float(getattr(r, metric)) for r in mine]
            (line,) = ax.plot(
                epochs,
                values,
                color=_COLORS[loss],
                linestyle=_DASHES[loss],
                linewidth=2.2,
                marker="o" if len(epochs) <= 12 else None,
                markersize=4,
            )
            line.set_gid(f"{metric}:{loss}")
            line.set_label(LOSS_TITLES[loss])
        if metric == "val_accuracy":
            ax.axhline(TARGET_ACCURACY, color="0.45", linewidth=1.0, linestyle=":")
            ax.text(
                0.99,
                TARGET_ACCURACY,
                f" {TARGET_ACCURACY:.0%}",
                transform=ax.get_yaxis_transform(),
                ha="right",
                va="bottom",
                fontsize=10,
                color="0.35",
            )
            ax.set_ylim(0.0, 1.0)
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
        _style(ax, title, ylabel)
        ax.legend(fontsize=10, framealpha=0.92)
    return fig
