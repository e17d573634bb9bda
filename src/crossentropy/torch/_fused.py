"""The fused cross-entropy path: loss and gradient in one sweep, softmax never stored.

The kernel is C (``_cross_entropy.c`` beside this file), compiled once per machine with the
system's C compiler into a cached shared library and called through ``ctypes``, which
releases the GIL, so the rows are split over ``torch.get_num_threads()`` threads. The
forward writes the gradient of the reduced loss straight into one logits-sized buffer (or
into the logits themselves with ``inplace_backward=True``); the backward only scales that
buffer by the incoming gradient, and returns it unchanged when that gradient is 1.

The readable reference is :func:`crossentropy.gradients.sparse_softmax_cross_entropy`; the
tests hold the kernel to it, forward and gradient.

The gradient is differentiable again: a backward with ``create_graph=True`` (a gradient
penalty, ``torch.func.grad``) recomputes it with torch operations on the saved logits, so
the second derivative is autograd's. ``torch.func.grad`` and ``jacrev`` run the kernel;
``vmap`` cannot (the kernel reads memory, not batched tensors) and is refused by name.
Meta tensors give the result's shape without running anything.

Under ``torch.compile`` the fused path works, with graph breaks: Dynamo cannot trace the
label check (it reads values, ``Tensor.item``) nor the ``ctypes`` call, so those run
eagerly between compiled graphs, with the same results as eager mode (tested).
"""

from __future__ import annotations

import ctypes
import hashlib
import itertools
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import array_api_compat
import torch

from .. import _validate, gradients
from .._array import wide_labels
from . import conventions

SOURCE = Path(__file__).with_name("_cross_entropy.c")
CFLAGS = [
    "-O3",
    "-march=native",
    "-fopenmp-simd",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-shared",
    "-fPIC",
]
EXTRA_CFLAGS = "CROSSENTROPY_KERNEL_CFLAGS"
"""Environment variable of flags appended to ``CFLAGS`` (split as a shell would), for a
checked build: ``-fsanitize=address,undefined -fno-sanitize-recover=all`` (then run Python
with the sanitizer runtime in ``LD_PRELOAD``), or ``-march=x86-64-v2`` for the kernel
without AVX-512 (the last ``-march`` wins). Each set of flags is its own cached library."""
ROWS_PER_TASK = 64
"""Rows a thread takes at a time: enough work per call to amortise the ctypes overhead."""

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


def _compile() -> ctypes.CDLL:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    target = _cache_dir() / f"cross_entropy-{_machine_key()}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # compile to a temporary name and rename: concurrent builders never see half a file
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            built = Path(scratch) / target.name
            command = [compiler, *_cflags(), "-o", str(built), str(SOURCE), "-lm"]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"compiling {SOURCE.name} failed: {result.stderr.strip()}")
            os.replace(built, target)
    return _declare(ctypes.CDLL(str(target)))


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    p, i64, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    for name, _ in _KERNELS.values():
        kernel = getattr(library, name)
        kernel.argtypes = [p, i64, p, i64, p, p, i64, i64, i64, f64, f64, f64, f64, f64, p, p, p]
        kernel.restype = i64
    return library


def _load() -> ctypes.CDLL:
    global _library, _build_error
    with _lock:
        if _library is None and _build_error is None:
            try:
                _library = _compile()
            except (RuntimeError, OSError) as error:
                _build_error = str(error)
        if _library is None:
            raise RuntimeError(
                f"impl='fused': the fused cross-entropy kernel could not be built here "
                f"({_build_error}); use impl='torch' (or impl='auto', which falls back)"
            )
        return _library


def fused_available() -> bool:
    """Whether the compiled kernel can be built (or is cached) and loaded on this machine."""
    try:
        _load()
    except RuntimeError:
        return False
    return True


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None or _pool._max_workers != workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="crossentropy")
        return _pool


class _BufferCache:
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


_cache = _BufferCache()


def release_cached_buffers() -> None:
    """Free the buffers the fused paths keep for reuse between steps (the fused gradient of
    ``cross_entropy``; the chunk and gradient buffers of ``linear_cross_entropy``)."""
    _cache.release()


_KERNELS = {
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
    if t.dtype not in _KERNELS or t.dtype != like.dtype:
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
        weight = weight.to(device="cpu", dtype=_KERNELS[logits.dtype][1]).contiguous()
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


def _launch(
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
    name, compute_dtype = _KERNELS[logits.dtype]
    kernel = getattr(_load(), name)
    rows, classes = logits.shape
    losses = torch.empty(rows, dtype=torch.float64)
    workers = max(1, min(torch.get_num_threads(), -(-rows // ROWS_PER_TASK)))
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


class FusedCrossEntropy(torch.autograd.Function):
    """Loss in the forward, gradient already computed; the backward only rescales it.

    ``forward`` returns the loss and the gradient buffer (empty when no gradient is
    wanted; never differentiable); ``setup_context`` keeps the buffer, and the logits too
    when a gradient is wanted without ``inplace_backward``, for a differentiable or a
    repeated backward.

    First derivative: the kernel's buffer times the incoming gradient, handed out once; a
    later backward of a retained graph computes it again from the logits (autograd may
    have kept the first one as ``.grad`` and added into it). Second derivative
    (``create_graph=True``, ``torch.func.grad``): the backward then runs with grad mode on
    and recomputes the same gradient with differentiable torch operations,
    :func:`crossentropy.gradients.sparse_softmax_cross_entropy` on the saved logits, whose
    derivative autograd takes (the softmax Jacobian diag(p) - p p^T, through the soft cap).
    """

    @staticmethod
    def forward(
        logits: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        ignore_index: int,
        label_smoothing: float,
        z_loss: float,
        softcap: float | None,
        reduction: str,
        inplace_backward: bool,
        want_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = logits.shape[0]
        no_grad = logits.new_empty(0)
        if not conventions.has_values(logits):
            # meta or fake tensors (shape inference, tracing): shapes only
            shape = (rows,) if reduction == "none" else ()
            return logits.new_empty(shape), torch.empty_like(logits) if want_grad else no_grad
        if not want_grad:
            grad = None  # no_grad, or logits that need no gradient: the loss alone
        elif inplace_backward:
            grad = logits
            torch.autograd.graph.increment_version(logits)
        else:
            grad = _cache.take(tuple(logits.shape), logits.dtype, logits.device)
        options = (ignore_index, label_smoothing, z_loss, softcap, reduction)
        row_losses, scale = _sweep(logits, grad, target, weight, options)
        loss = row_losses if reduction == "none" else row_losses.sum() * scale
        # the buffer is returned for setup_context to save (the logits are the buffer
        # with inplace_backward, and are saved as the input they are)
        return loss.to(logits.dtype), no_grad if grad is None or inplace_backward else grad

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        logits, target, weight, *options, inplace, want_grad = inputs
        _, buffer = output
        ctx.mark_non_differentiable(buffer)
        # no zeros of the buffer's size for its (never used) incoming gradient
        ctx.set_materialize_grads(False)
        # with inplace_backward the logits hold the gradient now; otherwise they are kept
        # (a reference, not a copy) for a differentiable or a repeated backward
        ctx.save_for_backward(logits if inplace or want_grad else None, target, weight)
        # the kernel's gradient, handed out once: autograd may keep it as .grad and add
        # the next backward's gradient into it (not saved for backward, whose version
        # check would then refuse every later backward of a retained graph)
        ctx.buffer = None if inplace else buffer
        ctx.options = options
        ctx.inplace = inplace
        ctx.used = False

    @staticmethod
    def vmap(info: Any, in_dims: Any, *args: Any) -> Any:
        raise ValueError(
            "impl='fused' cannot run under torch.func.vmap (nor jacfwd, hessian, which vmap "
            "it): the kernel reads memory, not batched tensors; use impl='auto' or "
            "impl='torch'"
        )

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Any:
        raise ValueError(
            "impl='fused' has no forward-mode derivative (torch.func.jvp, jacfwd, hessian, "
            "torch.autograd.forward_ad); use impl='auto' or impl='torch'"
        )

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor | None, _: Any) -> tuple[Any, ...]:  # type: ignore[override]
        logits, target, weight = ctx.saved_tensors
        reduction = ctx.options[-1]
        none = (None,) * 9
        if grad_output is None:
            return None, *none
        if ctx.inplace and ctx.used:
            raise RuntimeError(
                "inplace_backward=True: the gradient was written into the logits buffer and "
                "already handed out; a second backward (retain_graph=True) needs "
                "inplace_backward=False"
            )
        factor = grad_output.unsqueeze(-1) if reduction == "none" else grad_output
        if torch.is_grad_enabled():
            # create_graph=True: a gradient that is itself differentiable
            if ctx.inplace:
                raise RuntimeError(
                    "inplace_backward=True: a differentiable gradient (create_graph=True, "
                    "torch.func.grad, a double backward) needs the logits, which the "
                    "gradient has overwritten; use inplace_backward=False"
                )
            differentiable = _torch_gradient(logits, target, weight, ctx.options)
            return differentiable * factor.to(differentiable.dtype), *none
        if ctx.inplace:
            grad = logits.detach()  # the kernel wrote the gradient over the logits
            ctx.used = True
        elif ctx.buffer is not None:
            grad, ctx.buffer = ctx.buffer, None  # handed out once
        else:
            # a later backward of a retained graph: the first one's gradient may be .grad
            # by now, so the kernel computes the same gradient again from the saved logits
            grad = torch.empty_like(logits)
            _sweep(logits.detach(), grad, target, weight, ctx.options)
        factor = factor.to(torch.float32 if grad.dtype != torch.float64 else grad.dtype)
        plain_factor = not conventions.batched(factor) and conventions.has_values(factor)
        if reduction != "none" and plain_factor and bool(factor == 1):
            return grad, *none
        if ctx.inplace and plain_factor:
            return grad.mul_(factor), *none
        return (grad * factor).to(grad.dtype), *none


def _sweep(
    logits: torch.Tensor,
    grad: torch.Tensor | None,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    options: Any,
) -> tuple[torch.Tensor, float]:
    """The kernel over every row: the per-row losses (float64) and the reduction's scale
    d(reduced)/d(row loss), with the gradient of the reduced loss written into ``grad``
    (unless ``None``)."""
    ignore_index, eps, z_coef, cap, reduction = options
    target = target.to(torch.int64).contiguous()
    counted = target != ignore_index
    if weight is None:
        count = float(counted.sum())
        weight_sum = float(logits.shape[1])
    else:
        picked = weight.double()[torch.where(counted, target, 0)]
        count = float(torch.where(counted, picked, 0.0).sum())
        weight_sum = float(weight.double().sum())
    # a mean over nothing is 0 with zero gradient
    scale = (1.0 / count if count != 0 else 0.0) if reduction == "mean" else 1.0
    row_losses = _launch(
        logits,
        grad,
        target,
        weight,
        ignore_index=ignore_index,
        eps=eps,
        z_loss=z_coef,
        cap=0.0 if cap is None else cap,
        weight_sum=weight_sum,
        scale=scale,
    )
    return row_losses, scale


def _torch_gradient(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, options: Any
) -> torch.Tensor:
    """The kernel's gradient as torch operations on the logits (differentiable when grad
    mode is on): :func:`crossentropy.gradients.sparse_softmax_cross_entropy`."""
    ignore_index, eps, z_coef, cap, reduction = options
    _, gradient = gradients.sparse_softmax_cross_entropy(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=eps,
        z_loss=z_coef,
        softcap=cap,
        reduction=reduction,
    )
    result: torch.Tensor = gradient
    return result


REDUCTIONS = ("mean", "sum", "none")


def fused_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    reduction: str = "mean",
    inplace_backward: bool = False,
) -> torch.Tensor:
    r"""Softmax cross entropy with class-index targets, fused forward and backward.

    Same loss, gradient and conventions as
    :func:`crossentropy.sparse_softmax_cross_entropy` (a mean over nothing is 0; ignored
    rows have exactly zero gradient), computed in one sweep that writes the gradient while
    the loss is computed and never stores the softmax.

    Args:
        logits: (M, C) float32, float64, float16 or bfloat16 CPU tensor; rows contiguous.
        target: (M,) integer class ids in [0, C), or ``ignore_index``.
        weight: (C,) floating-point class weights, or ``None``; not differentiated
            (refused if it requires grad, as ``torch.nn.functional`` refuses it).
        ignore_index: the target value that marks a row to skip.
        label_smoothing: epsilon in [0, 1].
        z_loss: the coefficient of logsumexp(z)^2, >= 0.
        softcap: c > 0, finite, to use c tanh(x / c) as the logits, or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        inplace_backward: write the gradient into ``logits`` itself (the logits are
            destroyed; only when nothing else needs them, and one backward only, not
            differentiable twice). Refused for a leaf that requires grad or a view of
            one, and for logits whose rows share memory.

    Returns:
        The loss: a scalar, or (M,) for ``reduction="none"``; differentiable in ``logits``.

    Example:
        >>> import torch
        >>> from crossentropy.torch._fused import fused_cross_entropy
        >>> logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], requires_grad=True)
        >>> loss = fused_cross_entropy(logits, torch.tensor([0, 1]))
        >>> loss.backward()
        >>> print(f"{loss.item():.4f}", logits.grad.round(decimals=4).tolist())
        0.3185 [[-0.1705, 0.1212, 0.0493], [0.0543, -0.0988, 0.0445]]
    """
    _validate.reduction(reduction)
    eps = _validate.label_smoothing(label_smoothing)
    z_coef = _validate.z_loss(z_loss)
    cap = _validate.softcap(softcap)
    ignore_index = _validate.ignore_index(ignore_index)
    inplace_backward = _validate.flag("inplace_backward", inplace_backward)
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
        raise ValueError(f"logits: expected a 2-D (rows, classes) tensor; got {shape}")
    if logits.dtype not in _KERNELS:
        raise TypeError(
            f"logits: expected float32, float64, float16 or bfloat16; got {logits.dtype}"
        )
    if logits.device.type not in ("cpu", "meta"):
        raise ValueError(
            f"logits: impl='fused' runs on CPU tensors; got device {logits.device} "
            f"(use impl='torch' there)"
        )
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target: expected a torch.Tensor; got {type(target).__name__}")
    classes = logits.shape[1]
    _validate.label_shape(tuple(logits.shape), 1, target)
    want_grad = torch.is_grad_enabled() and logits.requires_grad
    for name, tensor in (("logits", logits), ("target", target), ("weight", weight)):
        if tensor is not None and conventions.batched(tensor):
            raise ValueError(
                f"{name}: impl='fused' cannot run under torch.func.vmap (the kernel reads "
                f"memory, not batched tensors); use impl='auto' or impl='torch', which "
                f"vmap batches"
            )
        if tensor is not None and tensor.device != logits.device:
            raise ValueError(
                f"{name}: expected a tensor on the logits' device {logits.device}; "
                f"got {tensor.device}"
            )
    xp = array_api_compat.array_namespace(target)
    target = wide_labels(target, xp)  # compared as int64, whatever the labels' dtype
    _validate.integer_labels(target, classes, ignore_index, xp)
    if weight is not None:
        if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
            what = weight.dtype if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise TypeError(f"weight: expected a floating-point tensor; got {what}")
        _validate.class_weight(weight, classes)
        if weight.requires_grad and torch.is_grad_enabled():
            raise ValueError(
                "weight: impl='fused' has no gradient with respect to the class weights, and "
                "this weight requires grad; pass weight.detach(), or use impl='torch' (or "
                "impl='auto'), which differentiates the weights too"
            )
    if logits.stride(1) != 1:
        if inplace_backward:
            raise ValueError(
                "inplace_backward: needs logits whose rows are contiguous; got strides "
                f"{logits.stride()}"
            )
        logits = logits.contiguous()
    if inplace_backward and want_grad:
        conventions.check_writable("logits", logits, "inplace_backward=True")
    result = FusedCrossEntropy.apply(  # type: ignore[no-untyped-call]
        logits,
        target,
        weight,
        ignore_index,
        eps,
        z_coef,
        cap,
        reduction,
        inplace_backward,
        want_grad,
    )
    loss: torch.Tensor = result[0]
    return loss
