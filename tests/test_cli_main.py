"""The command as a user runs it: ``python -m crossentropy``, the version, the help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import crossentropy

ROOT = Path(__file__).resolve().parents[1]


def _module(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m crossentropy ARGS`` of this interpreter, on the source tree under test,
    its standard output a pipe."""
    src = str(ROOT / "src")
    path = os.environ.get("PYTHONPATH")
    environ = {
        **os.environ,
        "PYTHONPATH": f"{src}{os.pathsep}{path}" if path else src,
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "crossentropy", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def test_python_dash_m_runs_the_command() -> None:
    proc = _module("explain", "entropy", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert '"entropy"' in proc.stdout
    proc = _module("--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: crossentropy" in proc.stdout
    proc = _module("explain", "--base", "1")
    assert proc.returncode == 2
    assert proc.stderr.startswith("crossentropy explain: error:")


def test_version_is_set_in_one_place() -> None:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert "version" in project["project"]["dynamic"]
    source = ROOT / project["tool"]["hatch"]["version"]["path"]
    assert source.resolve() == Path(crossentropy.__file__).resolve()
    proc = _module("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"crossentropy {crossentropy.__version__}\n"
