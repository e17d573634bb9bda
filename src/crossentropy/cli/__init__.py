"""The ``crossentropy`` command line: ``crossentropy explain``, ``crossentropy --help``."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``crossentropy`` console script."""
    from crossentropy.cli.app import app

    app(prog_name="crossentropy")
