"""Every code block of README.md runs as written.

- ```python blocks: a block of ``>>>`` examples runs as a doctest (with the project's doctest
  options); any other block runs as a script, in a fresh namespace, so it must define its own
  inputs. A block that needs PyTorch is skipped without it, saying so.
- ```console blocks: each ``$ command`` line runs in bash, in one temporary directory per
  block, with ``crossentropy`` meaning ``python -m crossentropy`` of this interpreter; the
  lines up to the next ``$`` are its expected output, compared as a doctest compares (``...``
  matches anything, runs of whitespace are equal).
- ```sh blocks hold the install and ``make`` lines, which are not run here; a ```sh block
  with any other command fails this test, so that a new example gets a kind that runs.

Blocks of any other language, and blocks without one, fail the test too: every block is run
or named here. And every image of README.md has an absolute address, so that it renders
on the package index, where a relative one is broken.
"""

from __future__ import annotations

import doctest
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_NOT_RUN = ("pip install", "make ")  # what a ```sh block may hold: setup, not examples
# and the multi-machine commands, which tests/test_multihost.py checks are the ones its
# hosts run (one agent per network namespace)
_RUN_ON_HOSTS = ("TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 GLOO_SOCKET_IFNAME=",)
_DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    line: int  # where the block's first line of code is in README.md

    def __str__(self) -> str:
        return f"README.md:{self.line}:{self.language or 'no language'}"


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, in order."""
    return [
        Block(m.group(1), m.group(2), text.count("\n", 0, m.start(2)) + 1)
        for m in _FENCE.finditer(text)
    ]


def _of(language: str) -> list[Block]:
    return [b for b in blocks(README.read_text(encoding="utf-8")) if b.language == language]


def test_every_block_has_a_kind_that_runs() -> None:
    found = blocks(README.read_text(encoding="utf-8"))
    assert found, "README.md has no code block"
    for block in found:
        assert block.language in ("python", "console", "sh"), f"{block}: not run by any test"
        if block.language == "sh":
            joined = block.code.replace("\\\n", " ")  # continuation lines: one command
            commands = [
                line.split("#", 1)[0].strip() for line in joined.splitlines() if line.strip()
            ]
            for command in commands:
                if not command:  # a comment line
                    continue
                assert command.startswith(_NOT_RUN + _RUN_ON_HOSTS), (
                    f"{block}: {command!r} in a ```sh block is not run; write it as a "
                    "```console block ($ command, then its output)"
                )


def test_blocks_are_found() -> None:
    text = "a\n```python\nx = 1\n```\n\n```console\n$ crossentropy --version\n```\n"
    assert [(b.language, b.code, b.line) for b in blocks(text)] == [
        ("python", "x = 1\n", 3),
        ("console", "$ crossentropy --version\n", 7),
    ]


_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)|<img\b[^>]*\bsrc=[\"']([^\"']+)")


def images(text: str) -> list[str]:
    """The targets of a Markdown text's images (``![alt](target)``, ``<img src=...>``)."""
    return [m.group(1) or m.group(2) for m in _IMAGE.finditer(text)]


def test_images_render_on_the_package_index() -> None:
    # The package index shows README.md without the repository around it: a relative image
    # link there is a broken image. Figures belong in the docs, or at an absolute address.
    assert images('x ![a](docs/figures/a.png) <img alt="b" src="https://x.org/b.png">') == [
        "docs/figures/a.png",
        "https://x.org/b.png",
    ]
    for target in images(README.read_text(encoding="utf-8")):
        assert target.startswith("https://"), (
            f"README.md: image {target!r} is relative; it does not render on the package index"
        )


# ---------------------------------------------------------------------------------------
# python


@pytest.mark.parametrize("block", _of("python"), ids=str)
def test_python_block(block: Block) -> None:
    if re.search(r"^\s*(import torch|import crossentropy\.torch)", block.code, re.MULTILINE):
        pytest.importorskip("torch", reason=f"{block} needs PyTorch")
    if block.code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(block.code, {}, str(block), str(README), 0)
        runner = doctest.DocTestRunner(optionflags=_DOCTEST_FLAGS)
        runner.run(test, out=lambda _: None)
        result = runner.summarize(verbose=False)
        assert result.attempted > 0
        assert result.failed == 0, (
            f"{block}: {result.failed} example(s) failed (run pytest README.md)"
        )
    else:
        namespace: dict[str, object] = {"__name__": "__readme__"}
        exec(compile(block.code, str(block), "exec"), namespace)


# ---------------------------------------------------------------------------------------
# console


def _commands(code: str) -> list[tuple[str, str]]:
    """A console block as (command, expected output) pairs."""
    pairs: list[tuple[str, list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        else:
            assert pairs, f"output before the first command: {line!r}"
            pairs[-1][1].append(line)
    return [(command, "".join(f"{out}\n" for out in output)) for command, output in pairs]


@pytest.fixture
def shell_env(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``crossentropy`` runs ``python -m crossentropy`` of this
    interpreter (and so the source tree under test)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "crossentropy"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m crossentropy "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    src = str(ROOT / "src")
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": f"{src}{os.pathsep}{path}" if path else src,
        "COLUMNS": "100",
    }


@pytest.mark.parametrize("block", _of("console"), ids=str)
def test_console_block(block: Block, tmp_path: Path, shell_env: dict[str, str]) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    checker = doctest.OutputChecker()
    for command, want in _commands(block.code):
        if re.search(r"\bcrossentropy demo\b", command):
            pytest.importorskip("torch", reason=f"{block}: crossentropy demo needs PyTorch")
            pytest.importorskip("sklearn", reason=f"{block}: crossentropy demo needs scikit-learn")
        proc = subprocess.run(
            ["bash", "-c", command],
            cwd=workdir,
            env=shell_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, f"{block}: {command!r} failed:\n{proc.stderr}"
        assert checker.check_output(want, proc.stdout, _DOCTEST_FLAGS), (
            f"{block}: {command!r} printed\n{proc.stdout}\nexpected\n{want}"
        )
