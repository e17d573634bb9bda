"""A whole demo run: train, log, checkpoint each epoch, then the figures and the report.

A run directory holds:

- ``metrics.csv``: every epoch of every loss (:mod:`crossentropy.demo.loggers`);
- ``checkpoint.pt``: the state after the last completed epoch, written atomically
  (:mod:`crossentropy.demo.checkpoint`), from which :func:`run_demo` with ``resume=True``
  continues to the same final numbers as a run never interrupted;
- ``curves.png`` and ``curves.svg``: the figure (:mod:`crossentropy.demo.figures`);
- ``report.html``: the self-contained report (:mod:`crossentropy.demo.html_report`);
- ``summary.json``: the settings and the summary rows;
- ``tensorboard/`` and ``wandb/`` when those loggers are on.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crossentropy.viz import save_figure

from .checkpoint import CHECKPOINT_NAME, FORMAT, load_checkpoint, save_checkpoint
from .data import Dataset
from .figures import training_curves_figure
from .html_report import REPORT_NAME, write_report
from .loggers import CSV_NAME, LOGGERS, Logger, WandbLogger, open_loggers
from .summary import SummaryRow, summarize
from .train import DemoConfig, EpochRecord, Trainer, deterministic

__all__ = [
    "FIGURE_NAME",
    "SUMMARY_NAME",
    "DemoResult",
    "prepare_out",
    "resume_settings",
    "run_demo",
]

#: The figure's file name without suffix (``curves.png``, ``curves.svg``).
FIGURE_NAME = "curves"

#: The summary's file name.
SUMMARY_NAME = "summary.json"


@dataclass(frozen=True)
class DemoResult:
    """What a finished run produced."""

    out: Path
    config: DemoConfig
    history: list[EpochRecord]
    rows: list[SummaryRow]
    csv: Path
    report: Path | None
    figures: tuple[Path, ...]


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def prepare_out(out: Path) -> Path:
    """Create the run directory ``out`` if needed and check that files can be written in it.

    Raises:
        ValueError: ``out`` is not a directory, cannot be created, or is not writable.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ValueError(f"out: cannot write to {str(out)!r}: {_why(exc)}") from None
    return out


def resume_settings(out: Path) -> tuple[DemoConfig, list[str], int]:
    """The settings, loggers and last completed epoch of the run saved in ``out``.

    Raises:
        ValueError: ``out`` holds no readable demo checkpoint.
    """
    state = load_checkpoint(out / CHECKPOINT_NAME)
    return DemoConfig.from_dict(state["config"]), list(state["loggers"]), int(state["epoch"])


def _save(out: Path, trainer: Trainer, loggers: Sequence[str], wandb_id: str | None) -> None:
    state: dict[str, Any] = trainer.state_dict()
    state.update(format=FORMAT, loggers=list(loggers), wandb_id=wandb_id)
    save_checkpoint(out / CHECKPOINT_NAME, state)


def run_demo(
    config: DemoConfig,
    out: Path,
    *,
    loggers: Sequence[str] | None = None,
    resume: bool = False,
    data: Dataset | None = None,
    report: bool = True,
    on_step: Callable[[str], None] | None = None,
    on_epoch: Callable[[int, list[EpochRecord]], None] | None = None,
) -> DemoResult:
    """Train every loss of ``config``, writing the run directory ``out`` as it goes.

    Args:
        config: the settings; with ``resume``, those saved in ``out`` (only ``epochs`` may
            differ, to train longer).
        out: the run directory (see the module docstring); it must exist.
        loggers: optional loggers, from :data:`~crossentropy.demo.loggers.LOGGERS`; None:
            none for a new run, those saved in the checkpoint for a resumed one.
        resume: continue from ``out``'s checkpoint rather than start afresh.
        data: ``config.dataset`` already loaded (loaded here when not given).
        report: write the figures, the report and ``summary.json`` at the end (False: only
            train, log and checkpoint).
        on_step: called with the loss's name after every optimizer step.
        on_epoch: called with the epoch and its records once they are logged and
            checkpointed (epoch 0 included).

    An exception (``KeyboardInterrupt`` included) propagates once the loggers are closed;
    the checkpoint then holds the last completed epoch.
    """
    for name in loggers or ():
        if name not in LOGGERS:
            raise ValueError(f"logger: expected one of {', '.join(LOGGERS)}; got {name!r}")
    with deterministic():
        trainer = Trainer(config, data)
        wandb_id: str | None = None
        if resume:
            state = load_checkpoint(out / CHECKPOINT_NAME)
            trainer.load_state_dict(state)
            wandb_id = state.get("wandb_id")
            if loggers is None:
                loggers = list(state["loggers"])
        loggers = list(loggers or ())
        if trainer.epoch > config.epochs:
            raise ValueError(
                f"epochs: the run in {str(out)!r} has already trained {trainer.epoch} epochs; "
                f"got {config.epochs}"
            )
        active = loggers if trainer.epoch < config.epochs else ()
        opened: list[Logger] = open_loggers(
            active,
            out,
            config,
            trainer.history,
            first_epoch=trainer.epoch + 1,
            wandb_id=wandb_id,
        )
        for logger in opened:
            if isinstance(logger, WandbLogger):
                wandb_id = logger.run_id

        def done(records: list[EpochRecord]) -> None:
            for logger in opened:
                logger.log(trainer.epoch, records)
            _save(out, trainer, loggers, wandb_id)
            if on_epoch is not None:
                on_epoch(trainer.epoch, records)

        try:
            if trainer.epoch < 0:
                done(trainer.start())
            while trainer.epoch < config.epochs:
                done(trainer.train_epoch(on_step))
        finally:
            for logger in opened:
                logger.close()
    return _finish(out, trainer, report)


def _finish(out: Path, trainer: Trainer, report: bool) -> DemoResult:
    config, history = trainer.config, trainer.history
    rows = summarize(history, config.losses)
    if not report:
        return DemoResult(out, config, list(history), rows, out / CSV_NAME, None, ())
    fig = training_curves_figure(history, config)
    # save_figure writes the same bytes for the same figure (the SVG's ids from a fixed salt)
    figures = tuple(
        save_figure(fig, out / f"{FIGURE_NAME}.{fmt}", format=fmt) for fmt in ("png", "svg")
    )
    page = write_report(out / REPORT_NAME, config, rows, history, figures[0].read_bytes())
    summary = {"config": config.to_dict(), "summary": [asdict(row) for row in rows]}
    tmp = out / (SUMMARY_NAME + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / SUMMARY_NAME)
    return DemoResult(
        out=out,
        config=config,
        history=list(history),
        rows=rows,
        csv=out / CSV_NAME,
        report=page,
        figures=figures,
    )
