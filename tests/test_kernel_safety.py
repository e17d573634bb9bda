"""The fused kernel never touches memory outside its buffers, whatever it is given.

- Class indices in a narrow integer dtype are checked as the integers they are (an
  ``ignore_index`` outside the dtype never wraps into it), on every path.
- The C kernel tests each row's target itself and stops with an error at the first one
  outside [0, C); the launcher checks every buffer it hands to C.
- Proof: the kernel built with AddressSanitizer and UBSan runs a seeded C fuzz of its
  boundary (tests/kernel_fuzz.c, with and without AVX-512), and, in a Python with the
  sanitizer runtime preloaded, the fused tests and the ctypes-boundary fuzz
  (tests/kernel_boundary_fuzz.py); the same fuzz runs here under hypothesis against the
  float64 reference.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import crossentropy
import kernel_boundary_fuzz as fuzz
from crossentropy.torch import _kernel, _tokens, cross_entropy, linear_cross_entropy

pytestmark = pytest.mark.skipif(
    not _kernel.fused_available(), reason="no C compiler: the fused kernel cannot be built"
)

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "crossentropy" / "torch" / "_cross_entropy.c"
SANITIZE = [
    "-fsanitize=address,undefined,float-cast-overflow",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
    "-g",
]
KERNEL_PATHS = {"avx512": ("-march=native",), "generic": ("-march=x86-64-v2",)}
"""Builds of the kernel: the machine's own (the AVX-512 rows where it has them) and one
without AVX-512, where every dtype and option takes the generic kernel."""


def _compiler() -> str:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    return compiler


# ------------------------------------------------------------------ narrow label dtypes


def test_uint8_label_with_ignore_index_outside_uint8_is_refused() -> None:
    """255 as uint8 with ignore_index=-1 and 2 classes: -1 does not wrap to 255; the
    label is out of range (it read x[255] and returned -999.3)."""
    x = torch.full((300,), -1000.0)
    x[:2] = torch.tensor([1.0, 2.0])
    target = torch.tensor([255], dtype=torch.uint8)
    for impl in ("fused", "torch"):
        with pytest.raises(ValueError, match=r"^target: .*\[0, 2\).*got 255 at position"):
            cross_entropy(x[:2].view(1, 2), target, ignore_index=-1, impl=impl)
    with pytest.raises((IndexError, RuntimeError)):  # torch refuses it too
        F.cross_entropy(x[:2].view(1, 2), target, ignore_index=-1)


def test_int8_label_with_ignore_index_outside_int8_is_refused() -> None:
    """-100 as int8 with ignore_index=156 (156 wraps to -100 in int8): read before the row."""
    logits = torch.randn(4, 3)[2:].reshape(1, 6)[:, :3]
    for impl in ("fused", "torch"):
        with pytest.raises(ValueError, match=r"got -100 at position \(0,\)"):
            cross_entropy(
                logits, torch.tensor([-100], dtype=torch.int8), ignore_index=156, impl=impl
            )


def test_int32_extreme_label_is_refused_not_a_segfault() -> None:
    """int32 2**31-1 with ignore_index=-2**31-1, with and without a gradient (it was a
    SIGSEGV, and wrote past the row)."""
    target = torch.tensor([2**31 - 1, 0], dtype=torch.int32)
    for requires_grad in (False, True):
        logits = torch.randn(2, 3, requires_grad=requires_grad)
        with pytest.raises(ValueError, match=r"got 2147483647 at position \(0,\)"):
            cross_entropy(logits, target, ignore_index=-(2**31) - 1, impl="fused")


def test_linear_cross_entropy_uint8_label_is_refused() -> None:
    """linear_cross_entropy with a uint8 255 label and 2 classes (returned -4.6e19)."""
    h, w = torch.randn(1, 4), torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"got 255 at position \(0,\)"):
        linear_cross_entropy(h, w, torch.tensor([255], dtype=torch.uint8), ignore_index=-1)


@pytest.mark.parametrize("impl", ["fused", "torch"])
def test_uint8_labels_past_255_classes_equal_torch(impl: str) -> None:
    """uint8 labels (torch takes them) with 300 classes and ignore_index=-1, outside uint8:
    nothing is ignored, no class id wraps onto another; torch's own answer."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 300, dtype=torch.float64, generator=generator, requires_grad=True)
    target = torch.tensor([255, 0, 17, 254, 255, 3], dtype=torch.uint8)
    ours = cross_entropy(logits, target, ignore_index=-1, impl=impl)
    theirs = F.cross_entropy(logits, target, ignore_index=-1)
    (g_ours,) = torch.autograd.grad(ours, logits)
    (g_theirs,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    ("dtype", "value", "ignore_index", "classes"),
    [
        (np.uint8, 255, -1, 300),  # accepted: 255 is a class
        (np.uint8, 255, -1, 2),  # refused: -1 is no uint8
        (np.int8, -100, 156, 3),  # refused: 156 is no int8
        (np.int8, 127, -100, 200),  # accepted
        (np.uint64, 2**64 - 1, -1, 3),  # refused: 2**64 - 1 is not -1
        (np.uint64, 2, -1, 3),  # accepted
        (np.int64, -(2**63), 2**63, 3),  # refused: ignore_index outside int64 (named)
    ],
)
def test_numpy_core_labels_of_any_integer_dtype(
    dtype: type, value: int, ignore_index: int, classes: int
) -> None:
    """The array-API core on NumPy: the same answer as int64 labels, or a refusal."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, classes))
    labels = np.array([value, 1, 0], dtype=dtype)
    if 0 <= value < classes:
        got = crossentropy.sparse_softmax_cross_entropy(
            logits, labels, ignore_index=ignore_index, reduction="none"
        )
        want = crossentropy.sparse_softmax_cross_entropy(
            logits, labels.astype(np.int64), reduction="none"
        )
        np.testing.assert_allclose(got, want, rtol=1e-14)
        reference = F.cross_entropy(
            torch.from_numpy(logits), torch.from_numpy(labels.astype(np.int64)), reduction="none"
        )
        np.testing.assert_allclose(got, reference.numpy(), rtol=1e-12)
    else:
        if -(2**63) <= ignore_index < 2**63:
            expected = rf"^labels: .*got {value} at position \(0,\)"
        else:
            expected = rf"^ignore_index: .*got {ignore_index}$"
        with pytest.raises(ValueError, match=expected):
            crossentropy.sparse_softmax_cross_entropy(logits, labels, ignore_index=ignore_index)


@pytest.mark.parametrize("impl", ["torch", "fused"])
def test_torch_wide_unsigned_labels(impl: str) -> None:
    """uint16/32/64 tensors (torch has no order comparisons for them, nor does its
    cross_entropy take them) are compared as int64: the int64 labels' answer, and a value
    past int64 is refused naming the labels, never NotImplementedError or a wrapped -1."""
    logits = torch.randn(3, 4, dtype=torch.float64)
    want = F.cross_entropy(logits, torch.tensor([1, 3, 0]), ignore_index=-1)
    for dtype in (torch.uint16, torch.uint32, torch.uint64):
        got = cross_entropy(
            logits, torch.tensor([1, 3, 0], dtype=dtype), ignore_index=-1, impl=impl
        )
        torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    huge = torch.tensor([2**64 - 1, 0, 0], dtype=torch.uint64)
    with pytest.raises(ValueError, match=r"^(labels|target): .*18446744073709551615 at position"):
        cross_entropy(logits, huge, ignore_index=-1, impl=impl)


def test_vocab_parallel_narrow_labels() -> None:
    """The vocabulary-parallel loss on one gloo rank: int8 labels with an ignore_index
    outside int8 give torch's answer; uint8 255 outside the vocabulary is refused."""
    import torch.distributed as dist

    from crossentropy.torch.distributed import vocab_parallel_cross_entropy

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        logits = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
        target = torch.tensor([4, 0, 1, 2], dtype=torch.int8)
        ours = vocab_parallel_cross_entropy(logits, target, ignore_index=156)
        theirs = F.cross_entropy(logits, target.long(), ignore_index=156)
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
        with pytest.raises(ValueError, match=r"got 255 at position \(0,\)"):
            vocab_parallel_cross_entropy(
                logits, torch.tensor([255, 0, 1, 2], dtype=torch.uint8), ignore_index=-1
            )
        # 2**64 - 1 became -1 in int64, equal to ignore_index=-1: the row was skipped
        with pytest.raises(TypeError, match=r"^labels: .*uint64"):
            vocab_parallel_cross_entropy(
                logits, torch.tensor([2**64 - 1, 0, 1, 2], dtype=torch.uint64), ignore_index=-1
            )
    finally:
        dist.destroy_process_group()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy, in the NaN row
@pytest.mark.parametrize("dtype", [torch.int8, torch.uint8, torch.uint64])
def test_triton_narrow_labels(dtype: torch.dtype) -> None:
    """The Triton kernels (under the interpreter) compare class indices in int64: int8
    -100 with ignore_index=156 and uint8 255 with ignore_index=-1 are no class (a NaN
    loss, the kernels' documented answer, as they never synchronise to check), never
    ignored; uint64, which int64 cannot hold (2**64 - 1 would be -1), is refused."""
    triton = pytest.importorskip("crossentropy.triton")
    value, ignore_index = {torch.int8: (-100, 156), torch.uint8: (255, -1)}.get(
        dtype, (2**64 - 1, -1)
    )
    logits, target = torch.randn(2, 3), torch.tensor([value, 1], dtype=dtype)
    if dtype == torch.uint64:
        for call in (
            lambda: triton.cross_entropy(logits, target, ignore_index=ignore_index),
            lambda: triton.linear_cross_entropy(
                torch.randn(2, 4), torch.randn(3, 4), target, ignore_index=ignore_index
            ),
        ):
            with pytest.raises(TypeError, match=r"^target: .*uint64"):
                call()
        return
    loss = triton.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    assert torch.isnan(loss[0])
    torch.testing.assert_close(loss[1], F.cross_entropy(logits[1:], target[1:].long())[()])


# ---------------------------------------------------------------- the kernel's own check

HOSTILE = [-1, 5, 6, 2**31 - 1, 2**63 - 1, -(2**63), -101]


@pytest.mark.parametrize("dtype", fuzz.DTYPES)
@pytest.mark.parametrize("options", [{}, {"eps": 0.1}, {"cap": 2.0}, {"z_loss": 1e-3}])
@pytest.mark.parametrize("with_grad", [False, True])
def test_kernel_refuses_targets_outside_the_row(
    dtype: torch.dtype, options: dict, with_grad: bool
) -> None:
    """Past every Python check, straight to the launcher: each hostile target stops the
    kernel at its row (the AVX-512 rows without eps and cap, the generic kernel with
    them), over several threads' blocks, and the error names the first one."""
    rows, classes = 300, 5
    logits = torch.randn(rows, classes).to(dtype)
    arguments = {"eps": 0.0, "z_loss": 0.0, "cap": 0.0, **options}
    for value in HOSTILE:
        target = torch.randint(0, classes, (rows,))
        target[::11] = -100
        target[250] = value
        target[133] = value
        grad = torch.empty_like(logits) if with_grad else None
        with pytest.raises(ValueError) as raised:
            _kernel.launch(
                logits,
                grad,
                target,
                None,
                ignore_index=-100,
                weight_sum=float(classes),
                scale=1.0,
                **arguments,
            )
        assert str(raised.value) == (
            f"target: expected class indices in [0, {classes}) or ignore_index=-100; "
            f"got {value} at position (133,)"
        )


def _launch(**changes: object) -> None:
    rows, classes = 4, 5
    arguments: dict = {
        "logits": torch.randn(rows, classes),
        "grad": torch.empty(rows, classes),
        "target": torch.tensor([0, 1, 2, 3]),
        "weight": None,
        "ignore_index": -100,
        "eps": 0.0,
        "z_loss": 0.0,
        "cap": 0.0,
        "weight_sum": float(classes),
        "scale": 1.0,
        "lse": None,
        **changes,
    }
    logits, grad, target, weight = (
        arguments.pop(k) for k in ("logits", "grad", "target", "weight")
    )
    _kernel.launch(logits, grad, target, weight, **arguments)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"logits": torch.randn(4, 10)[:, ::2]}, ValueError, r"^logits: expected contiguous rows"),
        ({"logits": torch.randn(20)}, ValueError, r"^logits: expected a 2-D"),
        ({"logits": torch.randn(4, 5, dtype=torch.float16)}, TypeError, r"^grad: .*float16"),
        ({"grad": torch.empty(4, 6)}, ValueError, r"^grad: expected the logits' shape"),
        ({"grad": torch.empty(5, 4).t()}, ValueError, r"^grad: expected contiguous rows"),
        ({"grad": torch.empty(1, 5).expand(4, 5)}, ValueError, r"^grad: .*do not overlap"),
        ({"grad": torch.empty(4, 5, dtype=torch.int32)}, TypeError, r"^grad: expected float"),
        ({"target": torch.tensor([0, 1, 2])}, ValueError, r"^target: expected shape \(4,\)"),
        ({"target": torch.zeros(4)}, TypeError, r"^target: expected integer"),
        ({"target": torch.zeros(4, dtype=torch.uint64)}, TypeError, r"^target: .*uint64"),
        ({"weight": torch.ones(4)}, ValueError, r"^weight: expected shape \(5,\)"),
        ({"lse": torch.empty(3, dtype=torch.float64)}, ValueError, r"^lse: expected"),
        ({"lse": torch.empty(4)}, ValueError, r"^lse: expected .*float64"),
        ({"lse": torch.empty(8, dtype=torch.float64)[::2]}, ValueError, r"^lse: expected"),
        ({"ignore_index": 2**63}, ValueError, r"^ignore_index: expected an integer in"),
        ({"ignore_index": 1.5}, TypeError, r"^ignore_index: expected an integer"),
        ({"eps": 1.5}, ValueError, r"^eps: "),
        ({"cap": float("inf")}, ValueError, r"^cap: "),
        ({"z_loss": float("nan")}, ValueError, r"^z_loss: "),
    ],
)
def test_launch_checks_every_buffer(changes: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _launch(**changes)


def test_grad_over_another_view_of_the_logits_is_refused() -> None:
    """A gradient buffer that overlaps the logits without being them would be read after
    it was written."""
    storage = torch.randn(5, 5)
    with pytest.raises(ValueError, match=r"^grad: expected the logits themselves"):
        _launch(logits=storage[:4], grad=storage[1:])


def test_launch_accepts_narrow_targets_exactly() -> None:
    """int8/int16/int32/uint8 targets are widened exactly (the kernel takes int64)."""
    logits = torch.randn(3, 300, dtype=torch.float64)
    want = _kernel.launch(
        logits, None, torch.tensor([255, 3, -1]), None, ignore_index=-1, eps=0.0, z_loss=0.0,
        cap=0.0, weight_sum=300.0, scale=1.0,
    )  # fmt: skip
    for dtype in (torch.int16, torch.int32):
        got = _kernel.launch(
            logits, None, torch.tensor([255, 3, -1], dtype=dtype), None, ignore_index=-1,
            eps=0.0, z_loss=0.0, cap=0.0, weight_sum=300.0, scale=1.0,
        )  # fmt: skip
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    reference = F.cross_entropy(logits[:2], torch.tensor([255, 3]), reduction="none")
    torch.testing.assert_close(want[:2], reference, rtol=1e-12, atol=1e-14)
    assert want[2] == 0


# ------------------------------------------------------------------------------ fuzzing


@settings(max_examples=150, deadline=None)
@given(
    dtype=st.sampled_from(fuzz.DTYPES),
    rows=st.integers(0, 140),
    classes=st.one_of(st.integers(1, 40), st.integers(41, 600)),
    pad=st.sampled_from([0, 1, 16]),
    label_dtype=st.sampled_from(fuzz.LABEL_DTYPES),
    ignore_index=st.sampled_from([-100, -1, 0, 3, 156, 255, 2**31, -(2**31) - 1]),
    bad=st.one_of(st.none(), st.integers(0, 4)),
    weighted=st.booleans(),
    eps=st.sampled_from([0.0, 0.0, 0.1, 1.0]),
    z_loss=st.sampled_from([0.0, 1e-3]),
    softcap=st.sampled_from([None, None, 2.5]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    grad_mode=st.sampled_from(["none", "buffer", "inplace"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_against_the_float64_reference(bad: int | None, **case: object) -> None:
    """Random cases (shapes, strides, dtypes, label dtypes and their extremes, options)
    through the fused path and the launcher: the reference's numbers, or a refusal that
    names the first bad label (``bad`` picks a hostile value for the label dtype)."""
    hostile = fuzz.hostile_values(case["label_dtype"], case["classes"])  # type: ignore[arg-type]
    value = None if bad is None or not hostile else hostile[bad % len(hostile)]
    fuzz.check(bad=value, **case)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", sorted(KERNEL_PATHS))
def test_c_fuzz_under_address_and_undefined_sanitizers(path: str, tmp_path: Path) -> None:
    """tests/kernel_fuzz.c with the kernel under ASan + UBSan: exact-size buffers (heap red
    zones, PROT_NONE guard pages), hostile targets, every dtype and option."""
    binary = tmp_path / "kernel_fuzz"
    command = [
        _compiler(), "-O2", *KERNEL_PATHS[path], "-fopenmp-simd", *SANITIZE,
        str(ROOT / "tests" / "kernel_fuzz.c"), str(SOURCE), "-lm", "-o", str(binary),
    ]  # fmt: skip
    built = subprocess.run(command, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0"}
    result = subprocess.run(
        [str(binary), "12345", "4000"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "kernel_fuzz: 4000 cases" in result.stdout
    bad, ignored = (int(w) for w in result.stdout.split("(")[1].split()[::6][:2])
    assert bad > 100 and ignored > 100, result.stdout  # both kinds of row were exercised


def _sanitized_python(extra_flags: str = "") -> dict[str, str]:
    """The environment of a Python that builds and loads the kernel under ASan + UBSan."""
    # the ASan runtime first; libstdc++ beside it, or ASan finds no __cxa_throw to wrap (the
    # Python binary does not link it) and aborts at torch's first C++ exception
    libraries = [
        subprocess.run(
            [_compiler(), f"-print-file-name={name}"], capture_output=True, text=True, check=False
        ).stdout.strip()
        for name in ("libasan.so", "libstdc++.so")
    ]
    if not all(os.path.isabs(p) and os.path.exists(p) for p in libraries):
        pytest.skip(f"no AddressSanitizer runtime for {_compiler()}: {libraries}")
    preload = " ".join(p for p in (*libraries, os.environ.get("LD_PRELOAD", "")) if p)
    src = str(Path(crossentropy.__file__).resolve().parents[1])
    return {
        **os.environ,
        "LD_PRELOAD": preload,
        "ASAN_OPTIONS": "detect_leaks=0",
        "UBSAN_OPTIONS": "print_stacktrace=1",
        _kernel.EXTRA_CFLAGS: " ".join([*SANITIZE, extra_flags]),
        "PYTHONPATH": os.pathsep.join([src, str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
    }


def _python(code_or_args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *code_or_args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


OVERRUN = """
import torch
from crossentropy.torch import _kernel
kernel = _kernel.load().ce_forward_f32
x = torch.randn(10)  # 10 floats, read as one row of 20 classes
target, loss = torch.zeros(1, dtype=torch.int64), torch.empty(1, dtype=torch.float64)
scratch = torch.empty(40)
kernel(x.data_ptr(), 20, None, 0, target.data_ptr(), None, 1, 20, -100, 0.1, 0.0, 0.0, 20.0, 1.0,
       loss.data_ptr(), None, scratch.data_ptr())
print("not caught")
"""


def test_fused_tests_and_boundary_fuzz_under_sanitizers() -> None:
    """In a Python with the sanitizer runtime preloaded: the sanitized kernel catches a
    deliberate overrun of a torch tensor (so the build is live and sees torch's memory),
    then the fused kernel's tests and the ctypes-boundary fuzz run clean through it."""
    env = _sanitized_python()
    control = _python(["-c", OVERRUN], env)
    assert control.returncode != 0 and "heap-buffer-overflow" in control.stderr, (
        control.stdout + control.stderr[-3000:]
    )
    tests = _python(
        ["-m", "pytest", "tests/test_torch_fused.py", "-x", "-p", "no:cacheprovider"], env
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout, tests.stdout[-2000:]
    fuzzed = _python([str(ROOT / "tests" / "kernel_boundary_fuzz.py"), "7", "150"], env)
    assert fuzzed.returncode == 0, fuzzed.stderr[-4000:]
    assert "150 cases passed" in fuzzed.stdout


def test_boundary_fuzz_without_avx512_under_sanitizers() -> None:
    """The same fuzz with the kernel built without AVX-512: the generic kernel for every
    dtype and option, under ASan + UBSan."""
    env = _sanitized_python("-march=x86-64-v2")
    fuzzed = _python([str(ROOT / "tests" / "kernel_boundary_fuzz.py"), "8", "100"], env)
    assert fuzzed.returncode == 0, fuzzed.stderr[-4000:]
    assert "100 cases passed" in fuzzed.stdout


# ------------------------------------------------------------------ the token kernels


def _token_launch(gradient: bool = False, **changes: object) -> None:
    rows, width = 4, 5
    z = torch.randn(rows, width)
    stats = _tokens.token_statistics(z, torch.tensor([0, 1, 2, 3]), 1.0)
    arguments: dict = {
        "z": z,
        "target": torch.tensor([0, 1, 2, 3]),
        "temperature": 1.0,
        "start": 0,
        **changes,
    }
    if not gradient:
        _kernel.token_statistics(**arguments)
        return
    arguments = {
        "stats": stats,
        "grad_log_prob": torch.ones(rows),
        "grad_entropy": torch.ones(rows),
        "out": None,
        **arguments,
    }
    _kernel.token_gradient(**arguments)


@pytest.mark.parametrize("gradient", [False, True])
@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"z": torch.randn(4, 10)[:, ::2]}, ValueError, r"^z: expected contiguous rows"),
        ({"z": torch.randn(20)}, ValueError, r"^z: expected a 2-D"),
        ({"z": torch.randn(4, 5).to("meta")}, ValueError, r"^z: expected a 2-D .* CPU"),
        ({"z": torch.zeros(4, 5, dtype=torch.int32)}, TypeError, r"^z: expected float"),
        ({"target": torch.tensor([0, 1, 2])}, ValueError, r"^target: expected shape \(4,\)"),
        ({"target": torch.zeros(4)}, TypeError, r"^target: expected integer"),
        ({"target": torch.zeros(4, dtype=torch.uint64)}, TypeError, r"^target: .*int64"),
        ({"target": [0, 1, 2, 3]}, ValueError, r"^target: expected shape"),
        ({"temperature": 0.0}, ValueError, r"^temperature: "),
        ({"temperature": -1.0}, ValueError, r"^temperature: "),
        ({"temperature": float("nan")}, ValueError, r"^temperature: "),
        ({"temperature": float("inf")}, ValueError, r"^temperature: "),
        ({"temperature": "1"}, TypeError, r"^temperature: "),
        ({"start": -1}, ValueError, r"^start: "),
        ({"start": 2**62}, ValueError, r"^start: "),
        ({"start": True}, ValueError, r"^start: "),
        ({"start": 1.0}, ValueError, r"^start: "),
    ],
)
def test_token_launch_checks_every_buffer(
    gradient: bool, changes: dict, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        _token_launch(gradient, **changes)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"z": torch.randn(1, 5).expand(4, 5)}, ValueError, r"^z: .*do not overlap"),
        ({"out": torch.empty(4, 6)}, ValueError, r"^out: expected the logits' shape"),
        ({"out": torch.empty(5, 4).t()}, ValueError, r"^out: expected contiguous rows"),
        ({"out": torch.empty(1, 5).expand(4, 5)}, ValueError, r"^out: .*do not overlap"),
        ({"out": torch.empty(4, 5, dtype=torch.float64)}, TypeError, r"^out: expected .*float32"),
        ({"grad_log_prob": torch.ones(3)}, ValueError, r"^grad_log_prob: expected shape \(4,\)"),
        ({"grad_entropy": torch.ones(4, 1)}, ValueError, r"^grad_entropy: expected shape"),
        ({"grad_entropy": torch.ones(4, dtype=torch.complex64)}, TypeError, r"^grad_entropy: "),
        ({"stats": (1, 2, 3, 4)}, TypeError, r"^stats: expected TokenStatistics"),
        (
            {"stats": _tokens.TokenStatistics(*(torch.zeros(3) for _ in range(4)))},
            ValueError,
            r"^stats.peak: expected shape \(4,\)",
        ),
    ],
)
def test_token_gradient_checks_its_output_and_row_values(
    changes: dict, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        _token_launch(True, **changes)


def test_token_gradient_into_another_view_of_the_logits_is_refused() -> None:
    storage = torch.randn(5, 5)
    with pytest.raises(ValueError, match=r"^out: expected the logits themselves"):
        _token_launch(True, z=storage[:4], out=storage[1:])


@pytest.mark.parametrize("dtype", fuzz.DTYPES)
def test_token_targets_outside_the_slice_are_not_here(dtype: torch.dtype) -> None:
    """Target ids at the int64 extremes, negative, at the width, or before ``start``: no
    target term (u_y = 0, no g / T in the gradient), never an index; the others exact."""
    z = torch.randn(8, 33, dtype=torch.float64).to(dtype)
    start = 100
    y = torch.tensor([-(2**63), 2**63 - 1, -1, 99, 133, 2**62, 100, 132])
    stats = _kernel.token_statistics(z, y, 0.7, start=start)
    want = _tokens.token_statistics(z, y, 0.7, start=start)
    assert (stats.target[:6] == 0).all()
    torch.testing.assert_close(stats.target, want.target, rtol=0, atol=0)
    g, h = torch.ones(8, dtype=stats.peak.dtype), torch.zeros(8, dtype=stats.peak.dtype)
    grad = _kernel.token_gradient(z.clone(), y, want, 0.7, g, h, start=start)
    reference = _tokens.logit_gradient(z, y, want, 0.7, g, h, start=start)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(
        grad.to(reference.dtype), reference, rtol=2 * eps, atol=1e-6 if eps < 1e-10 else 2e-3
    )
    # the rows without their target here sum to -1/T * sum p = -1/T, the others to 0
    sums = grad.double().sum(1)
    torch.testing.assert_close(sums[:6], torch.full((6,), -1 / 0.7, dtype=torch.float64),
                               rtol=0, atol=0.05)  # fmt: skip
    torch.testing.assert_close(sums[6:], torch.zeros(2, dtype=torch.float64), rtol=0, atol=0.05)


TOKEN_OVERRUN = """
import torch
from crossentropy.torch import _kernel
kernel = _kernel.load().token_stats_f32
z = torch.randn(10)  # 10 floats, read as one row of 20 classes
target = torch.zeros(1, dtype=torch.int64)
out = [torch.empty(1) for _ in range(4)]
kernel(z.data_ptr(), 20, target.data_ptr(), 0, 1, 20, 1.0, *(o.data_ptr() for o in out))
print("not caught")
"""


@pytest.mark.parametrize("flags", ["", "-march=x86-64-v2"])
def test_token_kernel_tests_under_sanitizers(flags: str) -> None:
    """In a Python with the sanitizer runtime preloaded, the kernel built with ASan + UBSan
    (with the machine's instruction sets, and without AVX-512): a deliberate overrun by
    the token statistics kernel is caught (the build is live), then the token kernels'
    tests and the hostile bounds above run clean."""
    env = _sanitized_python(flags)
    control = _python(["-c", TOKEN_OVERRUN], env)
    assert control.returncode != 0 and "heap-buffer-overflow" in control.stderr, (
        control.stdout + control.stderr[-3000:]
    )
    tests = _python(
        [
            "-m", "pytest", "tests/test_torch_tokens_kernel.py", "tests/test_kernel_safety.py",
            "-k", "token", "-x", "-p", "no:cacheprovider", "--deselect",
            "tests/test_kernel_safety.py::test_token_kernel_tests_under_sanitizers",
        ],
        env,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout, tests.stdout[-2000:]


# ------------------------------------------------------------------ the distillation kernel


def _distill_launch(**changes: object) -> None:
    from crossentropy.torch import _distill

    rows, width = 4, 5
    arguments: dict = {
        "student": torch.randn(rows, width),
        "teacher": torch.randn(rows, width),
        "target": torch.tensor([0, 1, 2, 3]),
        "live": torch.ones(rows, dtype=torch.bool),
        "d": _distill.check_distillation("jsd", 0.5, 1.0, 1.0, 0.5),
        "row_scale": torch.ones(rows),
        "out": None,
        **changes,
    }
    _kernel.distill_rows(**arguments)


def _options(**changes: object) -> object:
    import dataclasses

    from crossentropy.torch import _distill

    return dataclasses.replace(_distill.check_distillation("jsd", 0.5, 1.0, 1.0, 0.5), **changes)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"student": torch.randn(4, 10)[:, ::2]}, ValueError, r"^student: expected contiguous"),
        ({"student": torch.randn(20)}, ValueError, r"^student: expected a 2-D"),
        ({"student": torch.randn(4, 5).to("meta")}, ValueError, r"^student: .* CPU"),
        ({"student": torch.zeros(4, 5, dtype=torch.int32)}, TypeError, r"^student: expected float"),
        ({"teacher": torch.randn(4, 10)[:, ::2]}, ValueError, r"^teacher: expected contiguous"),
        ({"teacher": torch.randn(4, 6)}, ValueError, r"^teacher: expected the student's shape"),
        ({"teacher": torch.randn(20)}, ValueError, r"^teacher: expected a 2-D"),
        ({"teacher": torch.randn(4, 5, dtype=torch.float64)}, TypeError, r"^teacher: .*dtype"),
        ({"teacher": torch.zeros(4, 5, dtype=torch.int64)}, TypeError, r"^teacher: expected float"),
        ({"teacher": [[0.0] * 5] * 4}, TypeError, r"^teacher: expected a torch.Tensor"),
        ({"target": torch.tensor([0, 1, 2])}, ValueError, r"^target: expected shape \(4,\)"),
        ({"target": torch.zeros(4)}, TypeError, r"^target: expected integer"),
        ({"target": torch.zeros(4, dtype=torch.uint64)}, TypeError, r"^target: .*int64"),
        ({"target": [0, 1, 2, 3]}, ValueError, r"^target: expected shape"),
        ({"live": torch.ones(3, dtype=torch.bool)}, ValueError, r"^live: expected shape \(4,\)"),
        ({"live": torch.ones(4)}, TypeError, r"^live: expected a bool tensor"),
        ({"row_scale": torch.ones(3)}, ValueError, r"^row_scale: expected shape \(4,\)"),
        ({"row_scale": torch.ones(4, dtype=torch.complex64)}, TypeError, r"^row_scale: "),
        ({"out": torch.empty(4, 6)}, ValueError, r"^out: expected the student's shape"),
        ({"out": torch.empty(5, 4).t()}, ValueError, r"^out: expected contiguous rows"),
        ({"out": torch.empty(1, 5).expand(4, 5)}, ValueError, r"^out: .*do not overlap"),
        ({"out": torch.empty(4, 5, dtype=torch.float64)}, TypeError, r"^out: expected .*float32"),
        ({"out": torch.empty(4, 5), "row_scale": None}, ValueError, r"^out: .*without row_scale"),
        ({"d": ("jsd", 0.5)}, TypeError, r"^d: expected a Distillation"),
        ({"d": _options(divergence="kl")}, ValueError, r"^d.divergence: "),
        ({"d": _options(beta=0.0)}, ValueError, r"^d.beta: .*\(0, 1\)"),
        ({"d": _options(beta=1.0)}, ValueError, r"^d.beta: .*\(0, 1\)"),
        ({"d": _options(beta=float("nan"))}, ValueError, r"^d.beta: "),
        ({"d": _options(divergence="forward_kl", beta=1.5)}, ValueError, r"^d.beta: "),
        ({"d": _options(temperature=0.0)}, ValueError, r"^d.temperature: "),
        ({"d": _options(temperature=-1.0)}, ValueError, r"^d.temperature: "),
        ({"d": _options(temperature=float("inf"))}, ValueError, r"^d.temperature: "),
        ({"d": _options(temperature="1")}, TypeError, r"^d.temperature: "),
        ({"d": _options(soft_weight=float("nan"))}, ValueError, r"^d.soft_weight: "),
        ({"d": _options(hard_weight=float("inf"))}, ValueError, r"^d.hard_weight: "),
    ],
)
def test_distill_launch_checks_every_buffer(changes: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _distill_launch(**changes)


def test_distill_gradient_into_another_view_of_the_inputs_is_refused() -> None:
    storage = torch.randn(5, 5)
    with pytest.raises(ValueError, match=r"^out: expected the student itself"):
        _distill_launch(student=storage[:4], out=storage[1:])
    with pytest.raises(ValueError, match=r"^out: expected a buffer apart from the teacher"):
        _distill_launch(teacher=storage[:4], out=storage[1:])
    with pytest.raises(ValueError, match=r"^out: .*do not overlap"):  # in place, rows overlapping
        student = torch.randn(1, 5).expand(4, 5)
        _distill_launch(student=student, out=student)


def test_distill_teacher_of_a_narrower_dtype_is_cast_exactly() -> None:
    from crossentropy.torch import _distill

    torch.manual_seed(3)
    student, teacher = torch.randn(3, 7), torch.randn(3, 7).bfloat16()
    y, live = torch.tensor([0, 6, 3]), torch.ones(3, dtype=torch.bool)
    d = _distill.check_distillation("forward_kl", 0.0, 1.0, 1.0, 0.0)
    cast = _kernel.distill_rows(student, teacher, y, live, d, torch.ones(3))
    same = _kernel.distill_rows(student, teacher.float(), y, live, d, torch.ones(3))
    assert torch.equal(cast[0], same[0]) and cast[1] is not None and same[1] is not None
    assert torch.equal(cast[1], same[1])


DISTILL_OVERRUN = """
import torch
from crossentropy.torch import _kernel
kernel = _kernel.load().distill_rows_f32
zs, zt = torch.randn(10), torch.randn(20)  # the student's 10 floats read as a row of 20
target, live = torch.zeros(1, dtype=torch.int64), torch.ones(1, dtype=torch.bool)
loss, scratch = torch.empty(1), torch.empty(3 * 20)
kernel(zs.data_ptr(), 20, zt.data_ptr(), 20, None, 0, target.data_ptr(), live.data_ptr(), None,
       1, 20, 2, 0.5, 1.0, 1.0, 0.5, loss.data_ptr(), scratch.data_ptr(), scratch.numel())
print("not caught")
"""


@pytest.mark.parametrize("flags", ["", "-march=x86-64-v2"])
def test_distill_kernel_tests_under_sanitizers(flags: str) -> None:
    """In a Python with the sanitizer runtime preloaded, the kernel built with ASan + UBSan
    (with the machine's instruction sets, and without AVX-512): a deliberate overrun by the
    distillation kernel is caught (the build is live), then its tests (the hostile rows,
    targets outside the row, in-place and strided rows) run clean."""
    env = _sanitized_python(flags)
    control = _python(["-c", DISTILL_OVERRUN], env)
    assert control.returncode != 0 and "heap-buffer-overflow" in control.stderr, (
        control.stdout + control.stderr[-3000:]
    )
    tests = _python(
        [
            "-m", "pytest", "tests/test_torch_distillation_kernel.py",
            "tests/test_kernel_safety.py",
            "-k", "distill and not sanitizers", "-x", "-p", "no:cacheprovider",
            "--hypothesis-seed=0",
        ],
        env,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout, tests.stdout[-2000:]


# ------------------------------------------------------------------ the report's row scores


SCORE_OVERRUN = """
import torch
from crossentropy.torch import _kernel
kernel = _kernel.load().score_rows_f32
z = torch.randn(10)  # 10 floats, read as one row of 20 classes
target = torch.zeros(1, dtype=torch.int64)
out = [torch.empty(1, dtype=torch.float64) for _ in range(4)]
out += [torch.empty(1, dtype=torch.int64) for _ in range(2)]
kernel(z.data_ptr(), 20, target.data_ptr(), 1, 20, *(o.data_ptr() for o in out))
print("not caught")
"""


@pytest.mark.parametrize("flags", ["", "-march=x86-64-v2"])
def test_score_kernel_tests_under_sanitizers(flags: str) -> None:
    """In a Python with the sanitizer runtime preloaded, the kernel built with ASan + UBSan
    (with the machine's instruction sets, the AVX-512 rows where it has them, and without
    AVX-512, the generic rows): a deliberate overrun by the score kernel is caught (the
    build is live), then the row-score tests run clean through it: labels outside the row
    (the int64 extremes, -1, C) given to the kernel directly, odd row strides over buffers
    of exactly the rows' span, rows that coincide, values that are not finite, every
    dtype, C from 1 to 70000 (every AVX-512 tail length)."""
    env = _sanitized_python(flags)
    control = _python(["-c", SCORE_OVERRUN], env)
    # a 64-byte load across the buffer's end is an "unknown-crash" to ASan, a scalar one a
    # "heap-buffer-overflow": either way, caught in the score kernel
    caught = ("heap-buffer-overflow", "unknown-crash")
    assert control.returncode != 0 and any(c in control.stderr for c in caught), (
        control.stdout + control.stderr[-3000:]
    )
    assert " in score_rows_" in control.stderr, control.stderr[-3000:]
    tests = _python(
        ["-m", "pytest", "tests/test_report_rows.py", "-x", "-p", "no:cacheprovider"], env
    )
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout, tests.stdout[-2000:]
