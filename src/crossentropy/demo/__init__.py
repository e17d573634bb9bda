"""The training story: cross entropy against MSE on real data (``crossentropy demo``).

Softmax regression or a small MLP learns scikit-learn's bundled digits (or, with one sigmoid
output, the breast-cancer set) once per loss, every time from the same initial weights with
the same optimizer, learning rate and batches, reproducibly bit for bit. The run logs every
epoch (CSV; TensorBoard and Weights & Biases offline on request), checkpoints atomically so
an interrupted run resumes to the same numbers, and ends with a summary, figures and a
self-contained HTML report.

Needs PyTorch, scikit-learn and matplotlib: ``pip install crossentropy[demo]``.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as out:
    ...     result = run_demo(DemoConfig(epochs=2), Path(out))
    ...     sorted(p.name for p in Path(out).iterdir())
    ['checkpoint.pt', 'curves.png', 'curves.svg', 'metrics.csv', 'report.html', 'summary.json']
    >>> [(row.loss, row.epochs) for row in result.rows]
    [('ce', 2), ('mse', 2)]
"""

from __future__ import annotations

try:
    import matplotlib  # noqa: F401
    import sklearn  # noqa: F401
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by the CLI test with a fake import
    raise ImportError(
        f"crossentropy.demo needs {exc.name}, which is not installed: "
        "pip install crossentropy[demo]",
        name=exc.name,
    ) from exc

from .checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from .data import DATASETS, Dataset, load_dataset
from .html_report import REPORT_NAME, render_report
from .loggers import CSV_NAME, LOGGERS, METRICS
from .models import MODELS, make_model
from .objectives import LABEL_SMOOTHING, LOSS_TITLES, LOSSES, objective
from .run import DemoResult, prepare_out, resume_settings, run_demo
from .summary import TARGET_ACCURACY, SummaryRow, story, summarize
from .train import FIELDS, DemoConfig, EpochRecord, Trainer, deterministic

__all__ = [
    "CHECKPOINT_NAME",
    "CSV_NAME",
    "DATASETS",
    "FIELDS",
    "LABEL_SMOOTHING",
    "LOGGERS",
    "LOSSES",
    "LOSS_TITLES",
    "METRICS",
    "MODELS",
    "REPORT_NAME",
    "TARGET_ACCURACY",
    "Dataset",
    "DemoConfig",
    "DemoResult",
    "EpochRecord",
    "SummaryRow",
    "Trainer",
    "deterministic",
    "load_checkpoint",
    "load_dataset",
    "make_model",
    "objective",
    "prepare_out",
    "render_report",
    "resume_settings",
    "run_demo",
    "save_checkpoint",
    "story",
    "summarize",
]
