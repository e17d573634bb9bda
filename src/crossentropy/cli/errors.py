"""The one error of the command line: a bad input, told in one line.

Every command raises :class:`CliError` for a bad input (a value out of range, a file that
cannot be read, an output that cannot be written, a missing extra), and
:mod:`crossentropy.cli.app` alone prints it, as one line on stderr, and exits with status 2:

.. code-block:: text

    crossentropy explain: error: Invalid value for '--p': NaN is not allowed; give finite
    numbers (see 'crossentropy explain --help')
    crossentropy compute: error: data.csv: line 2: not UTF-8 text

An error that names the option (or argument) it came through reads as the command-line
parser's own errors do (``Invalid value for '--p': ...``, with a pointer to ``--help``); one
about a file or the run itself is the message alone.

It is a :class:`ValueError`, as the library's own errors for a bad value are, so that code
calling a command's helpers (:func:`crossentropy.cli.explain.parse_vector`, say) catches it
as one.
"""

from __future__ import annotations

__all__ = ["EXIT_STATUS", "CliError"]

EXIT_STATUS = 2
"""The exit status of a command that stopped on a :class:`CliError` (that of a usage error)."""


class CliError(ValueError):
    """A bad input to a command: ``message``, and the option(s) it came through, if any.

    ``options`` are the spellings of one option (``"--base", "-b"``) or the metavar of an
    argument (``"[TOPIC]"``); none for an error about a file or the run as a whole.

    >>> str(CliError("NaN is not allowed; give finite numbers", "--p"))
    'NaN is not allowed; give finite numbers'
    """

    def __init__(self, message: str, *options: str) -> None:
        super().__init__(message)
        self.message = message
        self.options = options
        # the command that refused the input (``crossentropy explain``), filled in by the
        # application on the way out
        self.command: str | None = None
