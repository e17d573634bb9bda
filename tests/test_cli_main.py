"""The command as a user runs it: ``python -m crossentropy``, the version, the help."""

from __future__ import annotations

import math
import os
import re
import shutil
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


# ---------------------------------------------------------------------------------------
# help: what each parameter takes, not its Python type

_TYPE_PLACEHOLDER = re.compile(
    r"<(bool|str|int|float|path|list\[|[a-z]+(\|[a-z]+)+)|\b(INTEGER|TEXT|FLOAT|BOOLEAN)\b"
)


@pytest.mark.parametrize(
    ("command", "metavars"),
    [
        ((), []),
        (("compute",), [r"PREDICTIONS", r"LABELS", r"--format\s+FORMAT", r"--worst\s+N\b"]),
        (("plot",), [r"FIGURE", r"--out\s+-o\s+DIR", r"--format\s+-f\s+FORMAT"]),
        (("explain",), [r"TOPIC", r"--logits\s+X\b", r"--base\s+-b\s+BASE"]),
        (("demo",), [r"--epochs\s+N\b", r"--out\s+-o\s+DIR"]),
        (("explore",), [r"--logits\s+X,\.\.\.", r"--view\s+VIEW", r"--port\s+PORT"]),
    ],
)
def test_help_shows_metavars_not_types(command: tuple[str, ...], metavars: list[str]) -> None:
    proc = _module(*command, "--help", COLUMNS="200")
    assert proc.returncode == 0, proc.stderr
    assert "--help" in proc.stdout
    found = _TYPE_PLACEHOLDER.search(proc.stdout)
    assert found is None, f"a type where a metavar belongs: {found and found.group(0)!r}"
    for metavar in metavars:
        assert re.search(metavar, proc.stdout), f"{metavar!r} not in\n{proc.stdout}"
    # a flag takes no value: nothing between its name and its help
    assert re.search(r"--help\s+-h\s+Show this message", proc.stdout)


# ---------------------------------------------------------------------------------------
# explain written to a pipe: numbers whole, whatever COLUMNS says


def _row(text: str, first: str) -> list[str]:
    rows = [line.split() for line in text.splitlines() if line.split()[:1] == [first]]
    assert len(rows) == 1, f"{first!r}: {len(rows)} rows in\n{text}"
    return rows[0][1:]


def test_explain_to_a_pipe_does_not_wrap_numbers() -> None:
    proc = _module("explain", "entropy", COLUMNS="30", NO_COLOR="1")
    assert proc.returncode == 0, proc.stderr
    for name, p in (("sun", 0.5), ("clouds", 0.25), ("rain", 0.25)):
        ln, log2 = -math.log(p), -math.log2(p)
        assert _row(proc.stdout, name) == [
            f"{p:g}",
            f"{ln:.3f}",
            f"{p * ln:.3f}",
            f"{log2:.3f}",
            f"{p * log2:.3f}",
        ]
    entropy_nats = sum(-p * math.log(p) for p in (0.5, 0.25, 0.25))
    assert f"H(p) = {entropy_nats:.3f} nats, 1.500 bits." in proc.stdout  # a note, one line


def test_explain_to_a_pipe_keeps_long_numbers_whole() -> None:
    logits = [123456.123456789, 2.5, -1e5]
    proc = _module("explain", "softmax", "--logits", ",".join(map(repr, logits)), COLUMNS="30")
    assert proc.returncode == 0, proc.stderr
    top = max(logits)
    lse = top + math.log(sum(math.exp(x - top) for x in logits))
    lines = [line.split() for line in proc.stdout.splitlines() if line.startswith("class 1 ")]
    assert len(lines) == 1, proc.stdout
    assert lines[0][2:5] == ["2.5", f"{2.5 - top:.0f}", f"{2.5 - lse:.4f}"]


# ---------------------------------------------------------------------------------------
# make explain: the package alone, not the development extras


def test_make_explain_installs_the_package_alone() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -n: print the commands without running them; -B: as if nothing were built yet
    # run as a top-level make even under `make test` (no "Entering directory" lines)
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "explain"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    installs = [line for line in proc.stdout.splitlines() if "pip install" in line]
    assert any(line.rstrip().endswith("pip install --quiet -e .") for line in installs), installs
    for line in proc.stdout.splitlines():
        assert "torch" not in line and "[dev]" not in line, line
    assert proc.stdout.splitlines()[-1].endswith("/bin/crossentropy explain")
