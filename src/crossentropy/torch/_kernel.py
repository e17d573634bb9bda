"""The C cross-entropy kernel: built once per machine, loaded, and launched over rows.

The kernel is C (``_cross_entropy.c`` beside this file), a shared library called through
``ctypes``, which releases the GIL, so the rows are split over ``torch.get_num_threads()``
threads. :func:`load` takes the build a wheel ships for this CPU, else the one cached for
this machine, else compiles it once with the system's C compiler (see :mod:`._build`).
:func:`launch` is the one door to it: every buffer it hands to C is checked first (shape,
dtype, strides, overlap), and the kernel checks each row's target itself, so no pointer it
forms leaves its tensor whatever the caller passes.

One call of the kernel over a row of logits z computes the row's loss, its logsumexp and,
when asked, the gradient of the reduced loss written over the row (or into a separate
buffer): the row head of the whole-row cross entropy (see :mod:`.vocabulary`). The
readable reference is :func:`crossentropy.gradients.sparse_softmax_cross_entropy`.

:class:`BufferCache` keeps the large buffers of the fused paths from step to step.
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import math
import os
import platform
import shlex
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .. import _validate
from . import _build
from ._distill import Distillation
from ._tokens import TokenStatistics

__all__ = [
    "CFLAGS",
    "ELEMENTS_PER_WORKER",
    "EXTRA_CFLAGS",
    "KERNELS",
    "ROWS_PER_TASK",
    "SOURCE",
    "BufferCache",
    "buffers",
    "distill_rows",
    "fused_available",
    "launch",
    "load",
    "release_cached_buffers",
    "score_rows",
    "token_gradient",
    "token_statistics",
    "unavailable_reason",
]

SOURCE = _build.SOURCE
CFLAGS = [*_build.CFLAGS, "-march=native"]
"""The flags of a build at first use: the machine's own instruction sets."""
EXTRA_CFLAGS = "CROSSENTROPY_KERNEL_CFLAGS"
"""Environment variable of flags appended to ``CFLAGS`` (split as a shell would), for a
checked build: ``-fsanitize=address,undefined -fno-sanitize-recover=all`` (then run Python
with the sanitizer runtime in ``LD_PRELOAD``), or ``-march=x86-64-v2`` for the kernel
without AVX-512 (the last ``-march`` wins). Each set of flags is its own cached library;
with the variable set the kernel is always built from source, never the shipped build."""
ROWS_PER_TASK = 64
"""Rows a thread takes at a time: enough work per call to amortise the ctypes overhead."""
ELEMENTS_PER_WORKER = 1 << 19
"""Logits a second thread must have to sweep before it is used: handing rows to a thread
and waiting for it costs about what sweeping this many logits does (measured here: at
(256, 2000) one thread takes 165 us and two 197 us; at (1024, 2000) 647 us and 424 us)."""

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_build_error: str | None = None
_pool: ThreadPoolExecutor | None = None


def _cache_dir() -> Path:
    root = os.environ.get("CROSSENTROPY_CACHE") or os.environ.get("XDG_CACHE_HOME")
    base = Path(root) if root else Path.home() / ".cache"
    return base / "crossentropy" / "kernels"


def _cflags() -> list[str]:
    return [*CFLAGS, *shlex.split(os.environ.get(EXTRA_CFLAGS, ""))]


def _machine_key() -> str:
    """What the compiled library depends on: the source, the flags, the CPU."""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line for line in info if line.startswith("flags")), "")
    except OSError:
        cpu = platform.processor()
    text = SOURCE.read_text() + " ".join(_cflags()) + platform.machine() + cpu + sys.platform
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _shipped() -> ctypes.CDLL | None:
    """The best build shipped in the wheel that this CPU runs, or None (a source install,
    or a library this system cannot load)."""
    folder = SOURCE.with_name(_build.PREBUILT_DIR)
    portable = folder / "portable.so"
    if not portable.is_file():
        return None
    try:
        library = ctypes.CDLL(str(portable))
        library.ce_cpu_level.restype = ctypes.c_int64
        level = int(library.ce_cpu_level())
        for name, needs in _build.LEVELS.items():
            path = folder / f"{name}.so"
            if level >= needs and path.is_file():
                return ctypes.CDLL(str(path))
    except (OSError, AttributeError):
        return None
    return None


def _cached_or_compiled() -> ctypes.CDLL:
    """The build for this machine and these flags from the cache, compiled into it first
    if it is not there (which needs a C compiler, and says so once on stderr)."""
    target = _cache_dir() / f"cross_entropy-{_machine_key()}.so"
    if not target.exists():
        compiler = _build.find_compiler()
        if compiler is None:
            raise RuntimeError(
                f"this install ships no kernel for this CPU, none is cached in "
                f"{target.parent}, and no C compiler was found to build it: install gcc or "
                f"clang (or set CC), or install a crossentropy wheel built for this platform"
            )
        print(
            f"crossentropy: compiling the fused cross-entropy kernel once for this machine "
            f"(cached in {target.parent})",
            file=sys.stderr,
        )
        _build.build(compiler, _cflags(), target)
    return ctypes.CDLL(str(target))


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    for name, _ in KERNELS.values():
        kernel = getattr(library, name)
        kernel.argtypes = [p, i64, p, i64, p, p, i64, i64, i64, f64, f64, f64, f64, f64, p, p, p]
        kernel.restype = i64
    for stats, grad in _TOKEN_KERNELS.values():
        getattr(library, stats).argtypes = [p, i64, p, i64, i64, i64, f64, p, p, p, p]
        getattr(library, grad).argtypes = [p, i64, p, i64, p, i64, i64, i64, f64, p, p, p, p, p]
        getattr(library, stats).restype = getattr(library, grad).restype = i64
    for name in _DISTILL_KERNELS.values():
        kernel = getattr(library, name)
        kernel.argtypes = [p, i64, p, i64, p, i64, p, p, p, i64, i64, i64, f64, f64, f64, f64]
        kernel.argtypes += [p, p, i64]
        kernel.restype = i64
    for name in _SCORE_KERNELS.values():
        kernel = getattr(library, name)
        kernel.argtypes = [p, i64, p, i64, i64, p, p, p, p, p, p]
        kernel.restype = i64
    return library


def load() -> ctypes.CDLL:
    """The kernel's library, found once per process: the build shipped in the wheel (the
    best one this CPU runs), else the one cached for this machine, else compiled now into
    the cache. With ``CROSSENTROPY_KERNEL_CFLAGS`` set, always the cached or compiled
    build with those flags."""
    global _library, _build_error
    with _lock:
        if _library is None and _build_error is None:
            try:
                shipped = None if os.environ.get(EXTRA_CFLAGS) else _shipped()
                _library = _declare(shipped or _cached_or_compiled())
            except (RuntimeError, OSError, AttributeError) as error:
                _build_error = str(error)
        if _library is None:
            raise RuntimeError(
                f"impl='fused': the fused cross-entropy kernel is not available here "
                f"({_build_error}); impl='native' (torch's own operations, which "
                f"impl='auto' runs then) needs no kernel"
            )
        return _library


def fused_available() -> bool:
    """Whether the compiled kernel can be loaded on this machine: shipped, cached or
    built now."""
    return unavailable_reason() is None


def unavailable_reason() -> str | None:
    """Why the fused kernel cannot be had here, naming the fix; None when it loads."""
    try:
        load()
    except RuntimeError as error:
        return str(error)
    return None


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers != workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crossentropy")
        return _pool


class BufferCache:
    """Large buffers kept from step to step, one per named slot, each reused once nobody
    else holds it.

    A fresh logits-sized buffer costs more than the whole sweep on CPU: its pages are
    mapped and zeroed by the kernel on first touch (about 135 ms for 0.5 GB here, against
    40 ms for the sweep; 0.36 s for the 1 GB float32 weight gradient of a 128256 x 2048
    output layer). Like the caching allocator PyTorch uses on GPUs, the fused paths keep
    the last buffer of each slot (the fused gradient; linear cross entropy's chunk of
    logits and its weight, input and bias gradients) and reuse its storage when its only
    holder is this cache, that is once the autograd graph is freed and the optimiser has
    dropped ``.grad`` (``zero_grad(set_to_none=True)``, PyTorch's default). A buffer still
    referenced, by a ``.grad``, a view of it or a retained graph, is never reused: a fresh
    one is allocated and kept instead. The contents of a reused buffer are stale, so every
    caller overwrites what it takes. :func:`release_cached_buffers` frees them all.
    """

    def __init__(self) -> None:
        self._storages: dict[str, torch.UntypedStorage] = {}
        self._lock = threading.Lock()

    def take(
        self,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        slot: str = "gradient",
    ) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape``, on the slot's storage if free."""
        nbytes = math.prod(shape) * dtype.itemsize
        with self._lock:
            cached = self._storages.get(slot)
            if (
                cached is not None
                and cached.device == device
                and cached.nbytes() >= nbytes
                and _only_holder(cached)
            ):
                # empty strides: set_ lays the shape out contiguously
                view: torch.Tensor = torch.empty(0, dtype=dtype, device=device).set_(
                    cached, 0, shape, ()
                )
                return view
            fresh = torch.empty(shape, dtype=dtype, device=device)
            if _can_count:
                self._storages[slot] = fresh.untyped_storage()
            return fresh

    def held(self, slot: str = "gradient") -> bool:
        """Whether the cache keeps a buffer for ``slot``."""
        return slot in self._storages

    def release(self) -> None:
        with self._lock:
            self._storages.clear()


_can_count = hasattr(torch._C, "_storage_Use_Count")


def _only_holder(storage: torch.UntypedStorage) -> bool:
    return bool(torch._C._storage_Use_Count(storage._cdata) == 1)


buffers = BufferCache()


def release_cached_buffers() -> None:
    """Free the buffers the fused paths keep for reuse between steps (the fused gradient of
    ``cross_entropy``; the chunk and gradient buffers of ``linear_cross_entropy``)."""
    buffers.release()


KERNELS = {
    torch.float32: ("ce_forward_f32", torch.float32),
    torch.float64: ("ce_forward_f64", torch.float64),
    torch.bfloat16: ("ce_forward_bf16", torch.float32),
    torch.float16: ("ce_forward_f16", torch.float32),
}


def _rows_of(name: str, t: torch.Tensor, like: torch.Tensor) -> None:
    """``t`` is a (rows, C) CPU tensor of ``like``'s dtype whose rows are contiguous."""
    if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.device.type != "cpu":
        shown = (tuple(t.shape), t.device.type) if isinstance(t, torch.Tensor) else type(t)
        raise ValueError(f"{name}: expected a 2-D (rows, classes) CPU tensor; got {shown}")
    if t.dtype not in KERNELS or t.dtype != like.dtype:
        raise TypeError(
            f"{name}: expected float32, float64, float16 or bfloat16 (the logits' "
            f"{like.dtype}); got {t.dtype}"
        )
    if t.shape[1] > 1 and t.stride(1) != 1:
        raise ValueError(f"{name}: expected contiguous rows (stride 1); got strides {t.stride()}")


def _real(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}: expected a real number; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name}: expected a number in [{low}, {high}]; got {value!r}")
    return float(value)


def _kernel_arguments(
    logits: torch.Tensor,
    grad: torch.Tensor | None,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    lse: torch.Tensor | None,
    ignore_index: object,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every buffer the kernel indexes, checked so that no pointer it forms leaves its
    tensor: the target as contiguous int64 and the weights as contiguous compute-dtype
    values, the only copies (both small)."""
    _rows_of("logits", logits, logits)
    rows, classes = logits.shape
    if grad is not None:
        _rows_of("grad", grad, logits)
        if grad.shape != logits.shape:
            raise ValueError(
                f"grad: expected the logits' shape {tuple(logits.shape)}; got {tuple(grad.shape)}"
            )
        if rows > 1 and grad.stride(0) < classes:
            raise ValueError(
                f"grad: expected rows that do not overlap (row stride >= {classes}); "
                f"got strides {grad.stride()}"
            )
        shared = grad.untyped_storage().data_ptr() == logits.untyped_storage().data_ptr()
        if shared and (grad.data_ptr(), grad.stride()) != (logits.data_ptr(), logits.stride()):
            raise ValueError(
                "grad: expected the logits themselves or a buffer apart from them; got a "
                "different view of the logits' storage"
            )
    ignore_index = _validate.ignore_index(ignore_index)
    if not isinstance(target, torch.Tensor) or tuple(target.shape) != (rows,):
        shown = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target)
        raise ValueError(f"target: expected shape ({rows},), one class index per row; got {shown}")
    if not _validate.holds_in_int64(target):
        # uint64 is the one integer dtype that int64 cannot hold exactly
        raise TypeError(f"target: expected integer class indices (int64); got {target.dtype}")
    target = target.to(device="cpu", dtype=torch.int64).contiguous()
    if weight is not None:
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (classes,):
            shown = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight)
            raise ValueError(f"weight: expected shape ({classes},); got {shown}")
        weight = weight.to(device="cpu", dtype=KERNELS[logits.dtype][1]).contiguous()
    if lse is not None and (
        not isinstance(lse, torch.Tensor)
        or lse.dtype != torch.float64
        or lse.device.type != "cpu"
        or tuple(lse.shape) != (rows,)
        or (rows > 1 and lse.stride(0) != 1)
    ):
        given: object = type(lse)
        if isinstance(lse, torch.Tensor):
            given = (tuple(lse.shape), lse.dtype, lse.stride())
        raise ValueError(f"lse: expected a contiguous float64 CPU tensor of ({rows},); got {given}")
    return target, weight


def launch(
    logits: torch.Tensor,
    grad: torch.Tensor | None,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    *,
    ignore_index: int,
    eps: float,
    z_loss: float,
    cap: float,
    weight_sum: float,
    scale: float,
    lse: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the kernel over all rows; returns the per-row losses (float64). With ``grad``
    ``None`` only the losses are computed; a float64 ``lse`` of (rows,) receives each row's
    logsumexp (0 for skipped rows). A target that is neither a class in [0, C) nor
    ``ignore_index`` raises ``ValueError`` (the kernel checks each row itself)."""
    target, weight_ptr = _kernel_arguments(logits, grad, target, weight, lse, ignore_index)
    numbers = (
        _real("eps", eps, 0.0, 1.0),
        _real("z_loss", z_loss, 0.0, math.inf),
        _real("cap", cap, 0.0, sys.float_info.max),
        _real("weight_sum", weight_sum, -math.inf, math.inf),
        _real("scale", scale, -math.inf, math.inf),
    )
    name, compute_dtype = KERNELS[logits.dtype]
    kernel = getattr(load(), name)
    rows, classes = logits.shape
    losses = torch.empty(rows, dtype=torch.float64)
    enough = rows * classes // ELEMENTS_PER_WORKER
    workers = max(1, min(torch.get_num_threads(), -(-rows // ROWS_PER_TASK), enough))
    size = logits.element_size()

    def run(start: int, stop: int) -> int:
        """The kernel over rows [start, stop): the first bad row's index, or -1."""
        # each thread's scratch row (the exponentials, then the gradient, before they are
        # streamed out); the local name keeps it alive for the duration of the call
        scratch = torch.empty(2 * classes, dtype=compute_dtype)
        done = int(
            kernel(
                logits.data_ptr() + start * logits.stride(0) * size,
                logits.stride(0),
                None if grad is None else grad.data_ptr() + start * grad.stride(0) * size,
                0 if grad is None else grad.stride(0),
                target.data_ptr() + start * 8,
                None if weight_ptr is None else weight_ptr.data_ptr(),
                stop - start,
                classes,
                ignore_index,
                *numbers,
                losses.data_ptr() + start * 8,
                None if lse is None else lse.data_ptr() + start * 8,
                scratch.data_ptr(),
            )
        )
        return -1 if done == stop - start else start - done - 1

    if workers == 1 or rows == 0:
        bad = [run(0, rows)]
    else:
        bounds = [rows * k // workers for k in range(workers + 1)]
        futures = [_executor(workers).submit(run, a, b) for a, b in itertools.pairwise(bounds)]
        bad = [future.result() for future in futures]
    first = min((b for b in bad if b >= 0), default=-1)
    if first >= 0:
        raise ValueError(
            f"target: expected class indices in [0, {classes}) or ignore_index={ignore_index}; "
            f"got {int(target[first])} at position ({first},)"
        )
    return losses


# per storage dtype: the token statistics and token gradient kernels (compute dtypes as in
# KERNELS)
_TOKEN_KERNELS = {
    torch.float32: ("token_stats_f32", "token_grad_f32"),
    torch.float64: ("token_stats_f64", "token_grad_f64"),
    torch.bfloat16: ("token_stats_bf16", "token_grad_bf16"),
    torch.float16: ("token_stats_f16", "token_grad_f16"),
}


def _over_rows(rows: int, width: int, run: Callable[[int, int], None]) -> None:
    """``run(start, stop)`` over the rows split among threads as :func:`launch` splits them."""
    enough = rows * width // ELEMENTS_PER_WORKER
    workers = max(1, min(torch.get_num_threads(), -(-rows // ROWS_PER_TASK), enough))
    if workers == 1 or rows == 0:
        run(0, rows)
        return
    bounds = [rows * k // workers for k in range(workers + 1)]
    futures = [_executor(workers).submit(run, a, b) for a, b in itertools.pairwise(bounds)]
    for future in futures:
        future.result()


def _token_arguments(
    z: torch.Tensor, target: object, temperature: object, start: object
) -> tuple[torch.Tensor, float, int]:
    """The logits, the target (as contiguous int64 CPU values) and the numbers of a token
    kernel, checked: the kernel then forms no pointer outside them (a target outside the
    slice is "not here", never an index)."""
    _rows_of("z", z, z)
    rows = z.shape[0]
    if not isinstance(target, torch.Tensor) or tuple(target.shape) != (rows,):
        shown = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target)
        raise ValueError(f"target: expected shape ({rows},), one class id per row; got {shown}")
    if not _validate.holds_in_int64(target) or target.is_floating_point():
        raise TypeError(f"target: expected integer class ids (int64); got {target.dtype}")
    ids = target.to(device="cpu", dtype=torch.int64).contiguous()
    t = _real("temperature", temperature, math.ulp(0.0), sys.float_info.max)
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < 1 << 62:
        raise ValueError(f"start: expected an integer class id in [0, 2**62); got {start!r}")
    return ids, t, start


def _row_values(name: str, value: torch.Tensor, rows: int, dtype: torch.dtype) -> torch.Tensor:
    """A per-row tensor as contiguous (rows,) CPU values of ``dtype`` (a copy when needed)."""
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != (rows,):
        shown = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value)
        raise ValueError(f"{name}: expected shape ({rows},), one value per row; got {shown}")
    if value.is_complex():
        raise TypeError(f"{name}: expected real values; got {value.dtype}")
    return value.to(device="cpu", dtype=dtype).contiguous()


def token_statistics(
    z: torch.Tensor, target: torch.Tensor, temperature: float, start: int = 0
) -> TokenStatistics:
    """:func:`crossentropy.torch._tokens.token_statistics` by the C kernel: the statistics
    of the columns [start, start + width) of each row of the CPU logits ``z`` (rows
    contiguous, any row stride; not written to), ``target`` whole-vocabulary class ids
    (outside the slice: not here). Float32 statistics for float32/bfloat16/float16
    logits, float64 for float64."""
    ids, t, first = _token_arguments(z, target, temperature, start)
    rows, width = z.shape
    compute = KERNELS[z.dtype][1]
    peak, mass, spread, picked = (torch.empty(rows, dtype=compute) for _ in range(4))
    kernel = getattr(load(), _TOKEN_KERNELS[z.dtype][0])
    size, wide = z.element_size(), compute.itemsize

    def run(a: int, b: int) -> None:
        kernel(
            z.data_ptr() + a * z.stride(0) * size,
            z.stride(0),
            ids.data_ptr() + a * 8,
            first,
            b - a,
            width,
            t,
            *(out.data_ptr() + a * wide for out in (peak, mass, spread, picked)),
        )

    _over_rows(rows, width, run)
    return TokenStatistics(peak, mass, spread, picked)


def token_gradient(
    z: torch.Tensor,
    target: torch.Tensor,
    stats: TokenStatistics,
    temperature: float,
    grad_log_prob: torch.Tensor,
    grad_entropy: torch.Tensor,
    start: int = 0,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`crossentropy.torch._tokens.logit_gradient` by the C kernel, in the logits'
    own dtype: d/dz of sum_i g_i log p_iy + h_i H_i over the columns [start, start +
    width), written over ``z`` (``out=None``; each half-precision value rounded once) or
    into ``out`` (z's shape and dtype, rows contiguous, apart from z or z itself), which
    is returned. ``stats`` are the WHOLE rows' statistics."""
    ids, t, first = _token_arguments(z, target, temperature, start)
    rows, width = z.shape
    into = z if out is None else out
    _rows_of("out", into, z)
    if into.shape != z.shape:
        raise ValueError(
            f"out: expected the logits' shape {tuple(z.shape)}; got {tuple(into.shape)}"
        )
    if rows > 1 and into.stride(0) < width:
        raise ValueError(
            f"{'z' if out is None else 'out'}: expected rows that do not overlap to write the "
            f"gradient into (row stride >= {width}); got strides {into.stride()}"
        )
    shared = into.untyped_storage().data_ptr() == z.untyped_storage().data_ptr()
    if shared and z.numel() and (into.data_ptr(), into.stride()) != (z.data_ptr(), z.stride()):
        raise ValueError(
            "out: expected the logits themselves or a buffer apart from them; got a different "
            "view of the logits' storage"
        )
    compute = KERNELS[z.dtype][1]
    if not isinstance(stats, TokenStatistics):
        raise TypeError(f"stats: expected TokenStatistics; got {type(stats).__name__}")
    per_row = [
        _row_values(name, value, rows, compute)
        for name, value in (
            ("stats.peak", stats.peak),
            ("stats.mass", stats.mass),
            ("stats.spread", stats.spread),
            ("grad_log_prob", grad_log_prob),
            ("grad_entropy", grad_entropy),
        )
    ]
    kernel = getattr(load(), _TOKEN_KERNELS[z.dtype][1])
    size, wide = z.element_size(), compute.itemsize

    def run(a: int, b: int) -> None:
        kernel(
            z.data_ptr() + a * z.stride(0) * size,
            z.stride(0),
            into.data_ptr() + a * into.stride(0) * size,
            into.stride(0),
            ids.data_ptr() + a * 8,
            first,
            b - a,
            width,
            t,
            *(value.data_ptr() + a * wide for value in per_row),
        )

    _over_rows(rows, width, run)
    return into


# per storage dtype (student and teacher alike): the whole-row distillation kernel
_DISTILL_KERNELS = {
    torch.float32: "distill_rows_f32",
    torch.float64: "distill_rows_f64",
    torch.bfloat16: "distill_rows_bf16",
    torch.float16: "distill_rows_f16",
}
_DIVERGENCE_CODES = {"forward_kl": 0, "reverse_kl": 1, "jsd": 2}
_DISTILL_SCRATCH_ROWS = 3
"""Scratch rows of V values per thread that the distillation kernel needs (it checks)."""
# teacher dtypes that the student's dtype holds exactly (the launcher casts those)
_EXACT_IN = {
    torch.float32: (torch.bfloat16, torch.float16),
    torch.float64: (torch.float32, torch.bfloat16, torch.float16),
}


def _finite(name: str, value: object, low: float = -math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name}: expected a real number; got {value!r}")
    if not (math.isfinite(value) and value >= low):
        shown = "a finite number" if low == -math.inf else f"a finite number >= {low}"
        raise ValueError(f"{name}: expected {shown}; got {value!r}")
    return float(value)


def _distill_options(d: object) -> tuple[int, float, float, float, float]:
    """The kernel's numbers from a :class:`Distillation`, checked again here (the kernel
    takes logs of beta and 1 - beta for the jsd, and divides by the temperature)."""
    if not isinstance(d, Distillation):
        raise TypeError(f"d: expected a Distillation; got {type(d).__name__}")
    if d.divergence not in _DIVERGENCE_CODES:
        accepted = ", ".join(map(repr, _DIVERGENCE_CODES))
        raise ValueError(f"d.divergence: expected one of {accepted}; got {d.divergence!r}")
    beta = _finite("d.beta", d.beta, 0.0)
    if d.divergence == "jsd" and not 0.0 < beta < 1.0:
        raise ValueError(
            f"d.beta: expected a number in (0, 1) for the jsd (0 and 1 are the forward and "
            f"reverse KL); got {d.beta!r}"
        )
    if beta > 1.0:
        raise ValueError(f"d.beta: expected a number in [0, 1]; got {d.beta!r}")
    temperature = _finite("d.temperature", d.temperature, 0.0)
    if temperature == 0.0:
        raise ValueError(f"d.temperature: expected a finite number > 0; got {d.temperature!r}")
    return (
        _DIVERGENCE_CODES[d.divergence],
        beta,
        temperature,
        _finite("d.soft_weight", d.soft_weight),
        _finite("d.hard_weight", d.hard_weight),
    )


def _shares(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


def distill_rows(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    live: torch.Tensor,
    d: Distillation,
    row_scale: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`crossentropy.torch._distill.distill_rows` by the C kernel: the three phases
    over whole rows of the CPU student and teacher logits (rows contiguous, any row
    stride), each row read from memory once. Returns the per-row losses (float32; float64
    for float64 logits; 0 where ``live`` is False) and, with ``row_scale`` (rows,), the
    gradient d(sum_i row_scale_i loss_i)/d student in the student's dtype (each value
    rounded once; rows not live or of scale 0 exactly 0), written into ``out`` (the
    student's shape and dtype, rows that do not overlap: the student itself, or a buffer
    apart from both inputs) or a new tensor; without ``row_scale`` no gradient (None).

    ``target`` (rows,) integer class ids: outside [0, V) a row has no target term (never an
    index). The teacher has the student's dtype, or one that it holds exactly (cast here);
    a wider teacher is refused (cast the student up: the kernel computes in the wider
    dtype, and the gradient is rounded to the student's once)."""
    code, beta, temperature, soft, hard = _distill_options(d)
    _rows_of("student", student, student)
    rows, classes = student.shape
    if not isinstance(teacher, torch.Tensor):
        raise TypeError(f"teacher: expected a torch.Tensor; got {type(teacher).__name__}")
    if teacher.dtype != student.dtype and teacher.dtype in _EXACT_IN.get(student.dtype, ()):
        teacher = teacher.to(student.dtype)
    elif teacher.dtype != student.dtype and teacher.dtype in _DISTILL_KERNELS:
        raise TypeError(
            f"teacher: expected the student's dtype {student.dtype} or one it holds exactly; "
            f"got {teacher.dtype} (cast the student to {teacher.dtype} for this kernel)"
        )
    _rows_of("teacher", teacher, student)
    if teacher.shape != student.shape:
        raise ValueError(
            f"teacher: expected the student's shape {tuple(student.shape)}; "
            f"got {tuple(teacher.shape)}"
        )
    if not isinstance(target, torch.Tensor) or tuple(target.shape) != (rows,):
        shown = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target)
        raise ValueError(f"target: expected shape ({rows},), one class id per row; got {shown}")
    if not _validate.holds_in_int64(target) or target.is_floating_point():
        raise TypeError(f"target: expected integer class ids (int64); got {target.dtype}")
    ids = target.to(device="cpu", dtype=torch.int64).contiguous()
    if not isinstance(live, torch.Tensor) or tuple(live.shape) != (rows,):
        shown = tuple(live.shape) if isinstance(live, torch.Tensor) else type(live)
        raise ValueError(f"live: expected shape ({rows},), one flag per row; got {shown}")
    if live.dtype != torch.bool:
        raise TypeError(f"live: expected a bool tensor; got {live.dtype}")
    flags = live.to(device="cpu").contiguous()
    compute = KERNELS[student.dtype][1]
    scale = None if row_scale is None else _row_values("row_scale", row_scale, rows, compute)
    into = None
    if scale is not None:
        into = (
            torch.empty_like(student, memory_format=torch.contiguous_format) if out is None else out
        )
        _rows_of("out", into, student)
        if into.shape != student.shape:
            raise ValueError(
                f"out: expected the student's shape {tuple(student.shape)}; got {tuple(into.shape)}"
            )
        if rows > 1 and into.stride(0) < classes:
            raise ValueError(
                f"out: expected rows that do not overlap to write the gradient into (row "
                f"stride >= {classes}); got strides {into.stride()}"
            )
        same = (into.data_ptr(), into.stride()) == (student.data_ptr(), student.stride())
        if into.numel() and _shares(into, student) and not same:
            raise ValueError(
                "out: expected the student itself or a buffer apart from it; got a different "
                "view of the student's storage"
            )
        if into.numel() and _shares(into, teacher):
            raise ValueError(
                "out: expected a buffer apart from the teacher (the gradient is written while "
                "the teacher's rows are read); got a view of the teacher's storage"
            )
    elif out is not None:
        raise ValueError("out: a gradient buffer without row_scale (no gradient is computed)")
    losses = torch.empty(rows, dtype=compute)
    kernel = getattr(load(), _DISTILL_KERNELS[student.dtype])
    size, wide = student.element_size(), compute.itemsize

    def run(a: int, b: int) -> None:
        # this thread's three scratch rows of the compute dtype (the exponentials, log M),
        # their size passed for the kernel to check; the local name keeps them alive
        scratch = torch.empty(max(1, _DISTILL_SCRATCH_ROWS * classes), dtype=compute)
        done = kernel(
            student.data_ptr() + a * student.stride(0) * size,
            student.stride(0),
            teacher.data_ptr() + a * teacher.stride(0) * size,
            teacher.stride(0),
            None if into is None else into.data_ptr() + a * into.stride(0) * size,
            0 if into is None else into.stride(0),
            ids.data_ptr() + a * 8,
            flags.data_ptr() + a,
            None if scale is None else scale.data_ptr() + a * wide,
            b - a,
            classes,
            code,
            beta,
            temperature,
            soft,
            hard,
            losses.data_ptr() + a * wide,
            scratch.data_ptr(),
            scratch.numel(),
        )
        if done != b - a:
            raise RuntimeError(f"the distillation kernel refused its scratch ({done})")

    _over_rows(rows, 2 * classes, run)
    return losses, into


# per storage dtype: the per-row scores of a report
_SCORE_KERNELS = {
    torch.float32: "score_rows_f32",
    torch.float64: "score_rows_f64",
    torch.bfloat16: "score_rows_bf16",
    torch.float16: "score_rows_f16",
}


def score_rows(
    z: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-row scores of the CPU logits ``z`` (rows, C) (rows contiguous, any row
    stride; only read) with the labels ``target`` (rows,), by the ``score_rows_*`` kernel:
    ``(peak, log_sum, picked, squares, argmax, rank)``, float64 and int64 tensors of
    (rows,): m = max_j z_j, log sum_j exp(z_j - m), z_y, sum_j p_j^2, the first argmax and
    #{j: z_j > z_y} + #{j < y: z_j = z_y}. Float64 throughout for float64 logits; float32
    and half rows take a float exponential summed in float64 (see the kernel's comment).

    Every label must be an integer in [0, C) (``ValueError`` naming the first that is not;
    the kernel checks each row itself as well and forms no index outside it). A row holding
    a logit that is not finite (NaN, +-inf) gets NaN numbers and -1 for argmax and rank."""
    _rows_of("z", z, z)
    rows, classes = z.shape
    if not isinstance(target, torch.Tensor) or tuple(target.shape) != (rows,):
        shown = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target)
        raise ValueError(f"target: expected shape ({rows},), one class id per row; got {shown}")
    if not _validate.holds_in_int64(target) or target.is_floating_point() or target.is_complex():
        raise TypeError(f"target: expected integer class ids (int64); got {target.dtype}")
    if target.device.type != "cpu":
        raise ValueError(f"target: expected a CPU tensor; got one on {target.device}")
    ids = target.to(dtype=torch.int64).contiguous()
    if rows:
        outside = (ids < 0) | (ids >= classes)
        if bool(outside.any()):
            first = int(torch.nonzero(outside)[0, 0])
            raise ValueError(
                f"target: expected class ids in [0, {classes}); got {int(ids[first])} at "
                f"position ({first},)"
            )
    peak, log_sum, picked, squares = (torch.empty(rows, dtype=torch.float64) for _ in range(4))
    argmax, rank = torch.empty(rows, dtype=torch.int64), torch.empty(rows, dtype=torch.int64)
    outputs = (peak, log_sum, picked, squares, argmax, rank)
    kernel = getattr(load(), _SCORE_KERNELS[z.dtype])
    size = z.element_size()
    refused: list[int] = []

    def run(a: int, b: int) -> None:
        done = kernel(
            z.data_ptr() + a * z.stride(0) * size,
            z.stride(0),
            ids.data_ptr() + a * 8,
            b - a,
            classes,
            *(out.data_ptr() + a * 8 for out in outputs),
        )
        if done != b - a:
            refused.append(a - done - 1)

    _over_rows(rows, classes, run)
    if refused:  # the labels were checked above: only a label changed meanwhile lands here
        first = min(refused)
        raise ValueError(
            f"target: expected class ids in [0, {classes}); got {int(ids[first])} at "
            f"position ({first},)"
        )
    return outputs
