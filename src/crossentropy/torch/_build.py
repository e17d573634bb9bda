"""Compiling the C kernel: the flags, the builds a wheel ships, the compiler, the build.

Two kinds of build, from the one source ``_cross_entropy.c``:

- at first use (a source install, or a CPU no shipped build runs on): ``-march=native``,
  cached per machine by :mod:`._kernel`;
- in a wheel, at build time (``hatch_build.py`` at the repository root): one library per
  instruction-set level, ``_prebuilt/<name>.so`` beside this file. On x86-64: ``avx512``
  (``-march=x86-64-v4``), ``avx2`` (``x86-64-v3``) and ``portable`` (``x86-64``, SSE2);
  the loader asks the portable one for the CPU's level (``ce_cpu_level``) and loads the
  best build the CPU runs. Elsewhere (aarch64: NEON is part of the baseline, and ``-O3``
  vectorises the kernel's loops with it) one ``portable`` build for the compiler's
  default target.

This module imports nothing from the package (nor torch), so that the build hook loads it
by its path and builds exactly as a first use would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = [
    "CFLAGS",
    "LEVELS",
    "PREBUILT_DIR",
    "SOURCE",
    "build",
    "find_compiler",
    "prebuilt_flags",
]

SOURCE = Path(__file__).with_name("_cross_entropy.c")
CFLAGS = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC"]
"""Flags of every build; the target (``-march``) is added per build."""
PREBUILT_DIR = "_prebuilt"
"""The folder, beside this file, of the libraries a wheel ships (absent in a source tree)."""
LEVELS = {"avx512": 4, "avx2": 3, "portable": 0}
"""Each shipped build and the x86-64 level ``ce_cpu_level`` must report for it to run,
best first (the portable build runs on every CPU of its architecture)."""
_X86_TARGETS = {"avx512": "x86-64-v4", "avx2": "x86-64-v3", "portable": "x86-64"}


def prebuilt_flags(machine: str) -> dict[str, list[str]]:
    """The builds a wheel for ``machine`` (``platform.machine()``) ships, name -> flags."""
    if machine.lower() in ("x86_64", "amd64"):
        return {name: [*CFLAGS, f"-march={arch}"] for name, arch in _X86_TARGETS.items()}
    return {"portable": list(CFLAGS)}


def find_compiler() -> str | None:
    """The C compiler: ``$CC``, else ``cc`` or ``gcc`` on PATH; None when there is none."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def build(compiler: str, flags: list[str], target: Path) -> None:
    """Compile the kernel into the shared library ``target``, atomically: it is written
    under a temporary name and renamed, so a concurrent builder never sees half a file.
    Raises ``RuntimeError`` with the compiler's message when it fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        command = [compiler, *flags, "-o", str(built), str(SOURCE), "-lm"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as error:
            raise RuntimeError(f"running the C compiler {compiler!r} failed: {error}") from None
        if result.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed: {result.stderr.strip()}")
        os.replace(built, target)
