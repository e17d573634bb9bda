"""The demo's HTML report: one self-contained file a person can open.

Everything is inside the file: the styles in a ``<style>`` element, the figure as a
``data:image/png;base64`` URI; it loads nothing from the network (no scripts, fonts or
stylesheets from elsewhere), so it opens the same offline, attached to an e-mail or years
later.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from .objectives import LOSS_TITLES
from .summary import TARGET_ACCURACY, SummaryRow, story
from .train import FIELDS, DemoConfig, EpochRecord

__all__ = ["REPORT_NAME", "render_report", "write_report"]

#: The report's file name inside a run directory.
REPORT_NAME = "report.html"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.8em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #888; }
img { max-width: 100%; height: auto; }
.story { font-size: 1.1em; background: #f4f7fb; border-left: 4px solid #0072B2;
         padding: 0.6em 1em; }
code { background: #f2f2f2; padding: 0 0.25em; }
details { margin-top: 1em; }
table.settings td { text-align: left; }
"""

_WHY = (
    "With softmax (or sigmoid) outputs, the gradient of cross entropy at the logits is "
    "<code>p − y</code>: as large as the error, however confident the model. The gradient "
    "of MSE on the probabilities passes through the softmax Jacobian, "
    "<code>(diag(p) − pp<sup>T</sup>) · 2(p − y)</code>, whose every entry carries a factor "
    "p: it is small wherever the output saturates, wrong or right, and near the start, when "
    "every p is about 1/C. Smaller gradients are smaller SGD steps, so MSE learns slower; "
    "and its landscape is not convex even for a linear model, where cross entropy's is."
)


def _f(value: float, digits: int = 4) -> str:
    return f"{value:.{digits}f}"


def _summary_table(rows: Sequence[SummaryRow]) -> str:
    head = (
        "<tr><th>loss</th><th>val accuracy</th><th>val loss (own)</th>"
        "<th>val cross entropy</th>"
        f"<th>epochs to {TARGET_ACCURACY:.0%} val accuracy</th>"
        "<th>output gradient, epoch 1</th></tr>"
    )
    body = "".join(
        "<tr>"
        f"<td>{html.escape(row.title)} (<code>{html.escape(row.loss)}</code>)</td>"
        f"<td>{row.val_accuracy:.2%}</td><td>{_f(row.val_loss)}</td>"
        f"<td>{_f(row.val_cross_entropy)}</td>"
        f"<td>{row.epochs_to_target if row.epochs_to_target is not None else 'never'}</td>"
        f"<td>{_f(row.first_epoch_grad_norm)}</td>"
        "</tr>"
        for row in rows
    )
    return f"<table><thead>{head}</thead><tbody>{body}</tbody></table>"


def _history_table(history: Sequence[EpochRecord]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in FIELDS)
    body = "".join(
        "<tr>"
        f"<td>{r.epoch}</td><td>{html.escape(r.loss)}</td>"
        + "".join(f"<td>{_f(getattr(r, name), 5)}</td>" for name in FIELDS[2:])
        + "</tr>"
        for r in history
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_report(
    config: DemoConfig,
    rows: Sequence[SummaryRow],
    history: Sequence[EpochRecord],
    figure_png: bytes,
) -> str:
    """The report as an HTML string.

    Example:
        >>> from crossentropy.demo.summary import summarize
        >>> h = [EpochRecord(e, "ce", 1.0, 0.5, 1.0, 0.95, 1.0, 0.5) for e in (0, 1)]
        >>> page = render_report(DemoConfig(losses=("ce",)), summarize(h, ["ce"]), h, b"PNG")
        >>> page.startswith("<!DOCTYPE html>"), "http" in page, "data:image/png;base64,UE5H" in page
        (True, False, True)
    """
    settings = "".join(
        f"<tr><td>{html.escape(key)}</td><td>{html.escape(str(value))}</td></tr>"
        for key, value in (
            ("data set", config.dataset),
            ("model", config.model),
            ("losses", ", ".join(f"{loss} ({LOSS_TITLES[loss]})" for loss in config.losses)),
            ("epochs", config.epochs),
            ("optimizer", f"SGD, learning rate {config.lr:g}, no momentum"),
            ("batch size", config.batch_size),
            ("seed", config.seed),
        )
    )
    sentence = story(rows)
    told = f'<p class="story">{html.escape(sentence)}</p>' if sentence else ""
    image = base64.b64encode(figure_png).decode("ascii")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>crossentropy demo: cross entropy vs MSE on {html.escape(config.dataset)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Cross entropy vs MSE: a training run on {html.escape(config.dataset)}</h1>
<p>Every loss trained the same {html.escape(config.model)} model from the same initial
weights, with the same optimizer, learning rate and batches in the same order.</p>
{told}
<h2>Summary</h2>
{_summary_table(rows)}
<p>Validation loss (own): each run's value of the loss it trained with; validation cross
entropy: every run measured by the same yardstick. Output gradient: the mean over the first
epoch's training examples of the norm of the loss's gradient at the logits.</p>
<h2>Curves</h2>
<img alt="validation accuracy, validation cross entropy and output gradient per epoch"
 src="data:image/png;base64,{image}">
<h2>Why</h2>
<p>{_WHY}</p>
<h2>Settings</h2>
<table class="settings"><tbody>{settings}</tbody></table>
<details><summary>Every epoch</summary>
{_history_table(history)}
</details>
</body>
</html>
"""


def write_report(
    path: Path,
    config: DemoConfig,
    rows: Sequence[SummaryRow],
    history: Sequence[EpochRecord],
    figure_png: bytes,
) -> Path:
    """Write :func:`render_report`'s page to ``path``."""
    path.write_text(render_report(config, rows, history, figure_png), encoding="utf-8")
    return path
