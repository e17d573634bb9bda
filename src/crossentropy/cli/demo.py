"""``crossentropy demo``: train with cross entropy and with MSE on real data, side by side.

The training itself is :mod:`crossentropy.demo` (PyTorch, scikit-learn and matplotlib: the
``demo`` extra), imported only when the command runs, so the rest of the command line works
without them. This module is the part a person sees: the options, a progress bar per loss
(on a terminal; ``--quiet`` turns it off), the summary table, and the path of the report.

Every bad input (an unknown data set, model, loss or logger, ``--epochs`` below 1, an
``--lr`` that is not a positive number, an ``--out`` that cannot be written, a ``--resume``
directory without a checkpoint, a missing extra) is one line on stderr and exit status 2.
Ctrl-C stops the run after closing its logs (the checkpoint of the last completed epoch is
whole, being written atomically), prints how to resume it, and exits with status 130.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from crossentropy.cli.errors import CliError

if TYPE_CHECKING:
    from crossentropy.demo import DemoConfig, EpochRecord, SummaryRow

__all__ = ["DEFAULT_RUNS", "INTERRUPTED", "demo"]

#: Where runs go without ``--out``: ``runs/demo-<timestamp>`` under the current directory.
DEFAULT_RUNS = Path("runs")

#: The exit status after Ctrl-C (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130

_PREFIX = "crossentropy demo"


def _option_error(exc: ValueError) -> CliError:
    """A library ValueError ("lr: expected ...") as the option's error ("--lr: expected ...")."""
    text = str(exc)
    name, sep, rest = text.partition(":")
    if sep and name.isidentifier():
        text = f"--{name.replace('_', '-')}:{rest}"
    return CliError(text)


def _library() -> ModuleType:
    try:
        return importlib.import_module("crossentropy.demo")
    except ImportError as exc:
        missing = exc.name.split(".")[0] if exc.name else "a package"
        if missing == "crossentropy":
            raise
        raise CliError(
            f"the demo needs {missing}, which is not installed: pip install crossentropy[demo]"
        ) from None


def _default_out() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = DEFAULT_RUNS / f"demo-{stamp}"
    n = 2
    while out.exists():
        out = DEFAULT_RUNS / f"demo-{stamp}-{n}"
        n += 1
    return out


def _split(values: list[str] | None) -> list[str]:
    """``--losses ce,mse --losses ce-smooth`` -> ['ce', 'mse', 'ce-smooth']."""
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]


@contextmanager
def _progress(
    config: DemoConfig, batches: int, done_epochs: int, show: bool
) -> Iterator[tuple[Any, Any]]:
    """A bar per loss; yields (on_step, on_epoch) callbacks that advance them."""
    from crossentropy.demo import LOSS_TITLES

    console = Console(stderr=True)
    width = max(len(LOSS_TITLES[loss]) for loss in config.losses)
    with Progress(
        TextColumn(f"{{task.description:<{width}}}"),
        BarColumn(),
        TextColumn("epoch {task.fields[epoch]}/" + str(config.epochs)),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not (show and console.is_terminal),
    ) as progress:
        tasks = {
            loss: progress.add_task(
                LOSS_TITLES[loss],
                total=config.epochs * batches,
                completed=done_epochs * batches,
                epoch=done_epochs,
                stats="",
            )
            for loss in config.losses
        }

        def on_step(loss: str) -> None:
            progress.advance(tasks[loss])

        def on_epoch(epoch: int, records: list[EpochRecord]) -> None:
            for record in records:
                progress.update(
                    tasks[record.loss],
                    completed=epoch * batches,
                    epoch=epoch,
                    stats=(f"val acc {record.val_accuracy:6.2%}  val loss {record.val_loss:.4f}"),
                )

        yield on_step, on_epoch


def _interrupted(lib: ModuleType, directory: Path, config: DemoConfig) -> None:
    try:
        epoch = int(lib.load_checkpoint(directory / lib.CHECKPOINT_NAME)["epoch"])
    except ValueError:
        sys.stderr.write(f"{_PREFIX}: interrupted before the first checkpoint; nothing to resume\n")
        return
    sys.stderr.write(
        f"{_PREFIX}: interrupted; epoch {epoch} of {config.epochs} is saved in {directory}; "
        f"continue with: crossentropy demo --resume {directory}\n"
    )


def _summary_table(rows: list[SummaryRow], config: DemoConfig) -> Table:
    from crossentropy.demo import TARGET_ACCURACY

    table = Table(
        title=(
            f"{config.dataset}, {config.model} model, {config.epochs} "
            f"epoch{'' if config.epochs == 1 else 's'} of SGD "
            f"(lr {config.lr:g}, batch {config.batch_size}, seed {config.seed})"
        ),
        box=box.SIMPLE_HEAVY,
    )
    table.add_column("loss", no_wrap=True)
    table.add_column("val accuracy", justify="right")
    table.add_column("val loss", justify="right")
    table.add_column("val cross entropy", justify="right")
    table.add_column(f"epochs to {TARGET_ACCURACY:.0%}", justify="right")
    table.add_column("output gradient, epoch 1", justify="right")
    for row in rows:
        table.add_row(
            row.loss,
            f"{row.val_accuracy:.2%}",
            f"{row.val_loss:.4f}",
            f"{row.val_cross_entropy:.4f}",
            str(row.epochs_to_target) if row.epochs_to_target is not None else "never",
            f"{row.first_epoch_grad_norm:.4f}",
        )
    return table


def demo(
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            metavar="NAME",
            help="digits (10 classes, softmax; the default) or breast-cancer (2, sigmoid).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            metavar="NAME",
            help="linear (softmax regression) or mlp (one hidden layer; the default).",
        ),
    ] = None,
    losses: Annotated[
        list[str] | None,
        typer.Option(
            "--losses",
            metavar="LOSS[,LOSS...]",
            help="Losses to compare, from ce, mse, ce-smooth (label smoothing 0.1). "
            "Default: ce,mse.",
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            metavar="N",
            help="Epochs to train, 1 to 100000 (default 30); with --resume, the total.",
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option("--lr", metavar="LR", help="SGD learning rate, in (0, 1e6] (default 0.05)."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", metavar="N", help="Rows per step (default 32).")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", metavar="N", help="Seed of the initial weights and batch order (default 0)."
        ),
    ] = None,
    logger: Annotated[
        list[str] | None,
        typer.Option(
            "--logger",
            metavar="NAME",
            help="Also log to tensorboard or wandb (offline); repeat or comma-separate. "
            "metrics.csv is always written.",
        ),
    ] = None,
    out_text: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            metavar="DIR",
            help="Run directory (default runs/demo-<timestamp>).",
            show_default=False,
        ),
    ] = None,
    resume_text: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="DIR",
            help="Continue the interrupted run in DIR with its saved settings.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Train with cross entropy and with MSE on real data, and report which learns faster."""
    for name, value in (("--out", out_text), ("--resume", resume_text)):
        if value is not None and not value.strip():
            raise CliError(f"{name}: expected a directory; got {value!r}")
    out = None if out_text is None else Path(out_text)
    resume = None if resume_text is None else Path(resume_text)
    lib = _library()
    loggers = _split(logger)
    if logger is not None and not loggers:
        raise CliError(
            f"--logger: expected one of {', '.join(lib.LOGGERS)}; got {','.join(logger)!r}"
        )
    for name in loggers:
        if name not in lib.LOGGERS:
            raise CliError(f"--logger: expected one of {', '.join(lib.LOGGERS)}; got {name!r}")
    if resume is not None:
        given = {
            "--dataset": dataset,
            "--model": model,
            "--losses": losses,
            "--lr": lr,
            "--batch-size": batch_size,
            "--seed": seed,
            "--logger": logger,
            "--out": out,
        }
        clash = [name for name, value in given.items() if value is not None]
        if clash:
            raise CliError(
                f"--resume continues with the run's saved settings; drop {', '.join(clash)} "
                "(only --epochs may change)"
            )
        try:
            saved, loggers, done = lib.resume_settings(resume)
        except ValueError as exc:
            raise CliError(f"--resume {str(resume)!r}: {exc}") from None
        try:
            config = lib.DemoConfig.from_dict(
                {**saved.to_dict(), "epochs": saved.epochs if epochs is None else epochs}
            )
        except ValueError as exc:  # --epochs out of range (the saved settings were checked)
            raise _option_error(exc) from None
        directory = resume
    else:
        chosen: dict[str, Any] = {
            "dataset": dataset,
            "model": model,
            "losses": tuple(_split(losses)) if losses is not None else None,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
        }
        try:
            config = lib.DemoConfig(**{k: v for k, v in chosen.items() if v is not None})
        except ValueError as exc:
            raise _option_error(exc) from None
        directory = out if out is not None else _default_out()
        if (directory / lib.CHECKPOINT_NAME).exists():
            raise CliError(
                f"--out {str(directory)!r} already holds a demo run; continue it with "
                f"--resume {directory} or choose another --out"
            )
        try:
            lib.prepare_out(directory)
        except ValueError as exc:
            raise _option_error(exc) from None
        done = -1
    if done > config.epochs:
        raise CliError(
            f"--epochs: the run in {str(directory)!r} has already trained {done} epochs; "
            f"got {config.epochs}"
        )

    data = lib.load_dataset(config.dataset)
    batches = -(-data.x_train.shape[0] // config.batch_size)
    try:
        with _progress(config, batches, max(done, 0), not quiet) as (on_step, on_epoch):
            result = lib.run_demo(
                config,
                directory,
                loggers=loggers,
                resume=resume is not None,
                data=data,
                on_step=on_step,
                on_epoch=on_epoch,
            )
    except KeyboardInterrupt:
        _interrupted(lib, directory, config)
        raise typer.Exit(INTERRUPTED) from None
    except ImportError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write the run in {str(directory)!r}: {exc}") from None

    console = Console()
    if not console.is_terminal:  # a file or a pipe: wide enough for the table on one line
        console = Console(width=max(console.width, 110))
    console.print(_summary_table(result.rows, config))
    for row in result.rows:
        typer.echo(f"  {row.loss}: {row.title}")
    sentence = lib.story(result.rows)
    if sentence:
        typer.echo(sentence)
    typer.echo(f"metrics: {result.csv}")
    typer.echo(f"report: {result.report}")
