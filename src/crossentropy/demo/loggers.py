"""Where a demo run's metrics go: a CSV file always, TensorBoard and Weights & Biases on request.

Every logger takes the records of one epoch at a time (:meth:`Logger.log`), writes them
through at once (a run stopped by Ctrl-C keeps every epoch it logged), and is closed at the
end of the run or of its interruption.

- :class:`CsvLogger`: ``metrics.csv``, one row per (epoch, loss) with the columns of
  :data:`~crossentropy.demo.train.FIELDS`; floats are written with ``repr`` (the shortest
  text that reads back to the same float), so two identical runs write identical bytes. A
  resumed run rewrites it from the checkpoint's history first.
- :class:`TensorBoardLogger`: event files in ``tensorboard/`` through
  ``torch.utils.tensorboard`` (the ``tensorboard`` package, extra ``demo``); one scalar per
  metric and loss, tagged ``"<metric>/<loss>"``, at step = epoch. A resumed run purges the
  events after its checkpoint.
- :class:`WandbLogger`: a Weights & Biases run in offline mode (no network, nothing leaves
  the machine) under ``wandb/``; the same keys and steps. ``wandb sync`` uploads it later if
  wanted. Needs ``wandb`` (extra ``wandb``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any, Protocol

from .train import FIELDS, DemoConfig, EpochRecord

__all__ = [
    "CSV_NAME",
    "LOGGERS",
    "METRICS",
    "CsvLogger",
    "Logger",
    "TensorBoardLogger",
    "WandbLogger",
    "open_loggers",
]

#: The optional loggers, by ``--logger`` name (the CSV file is always written).
LOGGERS = ("tensorboard", "wandb")

#: The CSV file's name inside a run directory.
CSV_NAME = "metrics.csv"

#: The numeric columns, logged to TensorBoard and W&B as ``"<metric>/<loss>"``.
METRICS = tuple(name for name in FIELDS if name not in ("epoch", "loss"))


class Logger(Protocol):
    """What every logger does."""

    def log(self, epoch: int, records: Sequence[EpochRecord]) -> None:
        """Write the records of ``epoch`` (one per loss), through to the file."""

    def close(self) -> None:
        """Flush and release everything."""


def _cell(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


class CsvLogger:
    """``metrics.csv``: the header and ``history``, then each epoch's rows as they come."""

    def __init__(self, path: Path, history: Sequence[EpochRecord] = ()) -> None:
        self.path = path
        # open for the whole run, closed by close(): not a with-block
        self._file: IO[str] = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow(FIELDS)
        self._write(history)

    def _write(self, records: Sequence[EpochRecord]) -> None:
        for record in records:
            self._writer.writerow([_cell(value) for value in asdict(record).values()])
        self._file.flush()

    def log(self, epoch: int, records: Sequence[EpochRecord]) -> None:
        self._write(records)

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()


def _missing(package: str, extra: str, option: str) -> ImportError:
    return ImportError(
        f"--logger {option} needs {package}, which is not installed: "
        f"pip install crossentropy[{extra}]"
    )


class TensorBoardLogger:
    """TensorBoard event files in ``log_dir``; ``first_epoch`` > 0 purges later old events."""

    def __init__(self, log_dir: Path, first_epoch: int = 0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise _missing("tensorboard", "demo", "tensorboard") from exc
        self._writer = SummaryWriter(
            log_dir=str(log_dir), purge_step=first_epoch if first_epoch > 0 else None
        )

    def log(self, epoch: int, records: Sequence[EpochRecord]) -> None:
        for record in records:
            for metric in METRICS:
                self._writer.add_scalar(
                    f"{metric}/{record.loss}", getattr(record, metric), global_step=epoch
                )
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class WandbLogger:
    """A Weights & Biases run in offline mode under ``directory/wandb``.

    ``run_id`` names the run; a resumed demo passes the id it saved, so that ``wandb sync``
    continues the same run. The logger owns wandb in its process: :meth:`close` tears wandb
    down, so that the offline run is complete on disk when it returns.
    """

    def __init__(self, directory: Path, config: DemoConfig, run_id: str | None = None) -> None:
        try:
            import wandb
        except ImportError as exc:
            raise _missing("wandb", "wandb", "wandb") from exc
        settings = wandb.Settings(
            mode="offline",
            silent=True,
            console="off",
            disable_git=True,
            disable_code=True,
            save_code=False,
            x_disable_stats=True,
            x_disable_meta=True,
            x_disable_machine_info=True,
            x_save_requirements=False,
        )
        self._run: Any = wandb.init(
            project="crossentropy-demo",
            dir=str(directory),
            id=run_id,
            resume="allow" if run_id is not None else None,
            config=config.to_dict(),
            settings=settings,
        )
        self.run_id: str = str(self._run.id)

    def log(self, epoch: int, records: Sequence[EpochRecord]) -> None:
        values = {
            f"{metric}/{record.loss}": getattr(record, metric)
            for record in records
            for metric in METRICS
        }
        self._run.log(values, step=epoch)

    def close(self) -> None:
        import wandb

        self._run.finish()
        # finish() returns before wandb's service has written the run's file through;
        # teardown() waits for it (and stops the service; a later init starts another)
        wandb.teardown()


def open_loggers(
    names: Sequence[str],
    out: Path,
    config: DemoConfig,
    history: Sequence[EpochRecord] = (),
    *,
    first_epoch: int = 0,
    wandb_id: str | None = None,
) -> list[Logger]:
    """The CSV logger and the named optional ones, ready for epoch ``first_epoch``.

    Raises:
        ValueError: an unknown logger name.
        ImportError: a logger's package is missing (the message names the extra).
    """
    for name in names:
        if name not in LOGGERS:
            raise ValueError(f"logger: expected one of {', '.join(LOGGERS)}; got {name!r}")
    loggers: list[Logger] = [CsvLogger(out / CSV_NAME, history)]
    try:
        if "tensorboard" in names:
            loggers.append(TensorBoardLogger(out / "tensorboard", first_epoch))
        if "wandb" in names:
            loggers.append(WandbLogger(out, config, wandb_id))
    except BaseException:
        for logger in loggers:
            logger.close()
        raise
    return loggers
