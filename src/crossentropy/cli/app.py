"""The ``crossentropy`` command-line application (Typer).

Errors print one line on stderr and exit with status 2, never a traceback or a multi-line
panel; :class:`_OneLineErrors` is the one place that prints them, for every command:

- a bad input that a command refuses, a :class:`~crossentropy.cli.errors.CliError`:
  ``crossentropy <command>: error: <message>``, the message prefixed with ``Invalid value
  for '<option>':`` (and followed by a pointer to ``--help``) when it names an option;
- a usage error of the parser (an unknown option, a value that is not an integer):
  the same shape, in the parser's words;
- an output that cannot be written (a full disk, a closed pipe):
  ``crossentropy: error: cannot write the output: <reason>``.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from crossentropy.cli.compute import compute
from crossentropy.cli.demo import demo
from crossentropy.cli.errors import EXIT_STATUS, CliError
from crossentropy.cli.explain import explain
from crossentropy.cli.explore import explore
from crossentropy.cli.plot import plot

try:  # typer >= 0.2x vendors click as typer._click
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import (  # type: ignore[no-redef, assignment]
        ClickException,
        UsageError,
    )

__all__ = ["PROG", "app", "version"]

PROG = "crossentropy"
"""The name of the program, as its messages and help say it."""


def version() -> str:
    """The version of the package: ``crossentropy.__version__``, the one place it is set (the
    build reads it from there into the package's metadata)."""
    import crossentropy

    return crossentropy.__version__


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _refusal(command: str, exc: CliError) -> str:
    """How ``command`` tells that it refused an input: the line after ``error:``."""
    if not exc.options:
        return exc.message
    named = " / ".join(f"'{option}'" for option in exc.options)
    return f"Invalid value for {named}: {exc.message} (see '{command} --help')"


def _metavars_only(params: list[Any]) -> list[Any]:
    """Help that shows what each parameter takes (its metavar: ``FILE``, ``N``, ``X``), not
    its Python type: a flag takes nothing (Typer >= 0.2x writes ``<bool>`` for one, unless it
    has a metavar), and an argument's metavar is already its name in the help, so its type
    column (``<str>``, ``<list[str]>``) is dropped."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
        elif (
            param.param_type_name == "argument"
            and param.metavar is not None
            and hasattr(param, "display_type_rich")
        ):
            param.display_type_rich = _no_type
    return params


def _no_type(ctx: Any) -> None:
    return None


class _Command(TyperCommand):
    """A Typer command whose help shows metavars, not types (:func:`_metavars_only`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _metavars_only(super().get_params(ctx))


class _OneLineErrors(TyperGroup):
    """A Typer group whose errors are one line on stderr, with exit status 2, and whose help
    shows metavars, not types (:func:`_metavars_only`)."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _metavars_only(super().get_params(ctx))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:  # name the command that refused the input, for main
            if exc.command is None and ctx.invoked_subcommand is not None:
                exc.command = f"{ctx.command_path} {ctx.invoked_subcommand}"
            raise

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except CliError as exc:
            where = exc.command or prog_name or PROG
            sys.stderr.write(f"{where}: error: {_one_line(_refusal(where, exc))}\n")
            sys.exit(EXIT_STATUS)
        except UsageError as exc:
            ctx = exc.ctx
            where = ctx.command_path if ctx is not None else (prog_name or PROG)
            hint = f" (see '{where} --help')" if ctx is not None else ""
            sys.stderr.write(f"{where}: error: {_one_line(exc.format_message())}{hint}\n")
            sys.exit(exc.exit_code)
        except ClickException as exc:
            sys.stderr.write(f"{prog_name or PROG}: error: {_one_line(exc.format_message())}\n")
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.stderr.write("Aborted.\n")
            sys.exit(1)
        except OSError as exc:
            if exc.errno not in _OUTPUT_ERRORS:
                raise
            _drop_stdout()
            reason = exc.strerror or type(exc).__name__
            sys.stderr.write(f"{prog_name or PROG}: error: cannot write the output: {reason}\n")
            sys.exit(2)
        try:
            sys.stdout.flush()
        except OSError as exc:  # the last buffered output did not fit either
            _drop_stdout()
            reason = exc.strerror or type(exc).__name__
            sys.stderr.write(f"{prog_name or PROG}: error: cannot write the output: {reason}\n")
            sys.exit(2)
        sys.exit(rv if isinstance(rv, int) else 0)


# A full disk (/dev/full), a closed pipe, a device error, a quota or a file-size limit: a
# failure to write the output, told in one line rather than a traceback.
_OUTPUT_ERRORS = {errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EDQUOT, errno.EFBIG}


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush at exit cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        pass


app = typer.Typer(
    name=PROG,
    cls=_OneLineErrors,
    help="Cross entropy and the information theory behind it: exact, explained, and fast.",
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {version()}")
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Cross entropy and the information theory behind it: exact, explained, and fast."""
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


app.command("explain", cls=_Command)(explain)
app.command("compute", cls=_Command)(compute)
app.command("plot", cls=_Command)(plot)
app.command("demo", cls=_Command)(demo)
app.command("explore", cls=_Command)(explore)
