"""The one choice of implementation that every loss of :mod:`crossentropy.torch` takes.

``impl=`` names a path, the same name everywhere (``cross_entropy``,
``linear_cross_entropy``, the modules, the transformers integration):

- ``"fused"``: the C kernel on CPU (:mod:`crossentropy.torch._kernel`): loss and gradient
  in one sweep; for linear cross entropy, the vocabulary engine's token chunks with it
  (:mod:`crossentropy.torch.engine`);
- ``"triton"``: the Triton kernels (:mod:`crossentropy.triton`), on CUDA tensors (or on
  CPU under ``TRITON_INTERPRET=1``);
- ``"native"``: torch's own fused operations (``log_softmax``, ``gather``) with the
  library's numerics around them and the backward written out
  (:mod:`crossentropy.torch.native`), on any device: for class-index targets faster than
  ``torch.nn.functional.cross_entropy`` from about (1024, 8000) up (2.2x at (4096, 32000)
  float32, 1.5x in bfloat16, about 1.4x in float16, computed in float32 a block of rows
  at a time; below, its argument checks, about 0.3 ms a call, dominate); for
  ``cross_entropy`` probability targets (2.2x at (4096, 32000) float32, 1.3x in bfloat16;
  up to 1.5x slower below about 64 MiB of logits) (for linear cross entropy the logits
  materialised first);
- ``"torch"``: the readable reference, torch operations through the array-API core under
  autograd (for linear cross entropy the logits materialised first). It stays what it is,
  the reference every other path is tested against, and is not what ``"auto"`` falls back
  to for a call ``"native"`` takes: it is several times slower than torch's own function;
- ``"auto"``: the fastest path that takes the call (:func:`choose`): the Triton kernels on
  CUDA, the fused kernel on CPU; where that kernel cannot be had (no C compiler and no
  prebuilt kernel; Triton not installed), ``"native"``, after one warning per process
  (:class:`KernelUnavailableWarning`) that names the reason and the fix; ``"native"``
  also for the probability targets of ``cross_entropy`` on CPU (which the fused kernel
  does not take); ``"torch"`` for what no faster path takes (``torch.func`` transforms,
  class weights or probability targets that require grad).

``"native"`` is a name of its own rather than only what ``"auto"`` runs, so that it can be
asked for (and benchmarked) on a machine that has the kernel, and so that naming it never
fails over to anything else.

``"chunked"``, the earlier name of linear cross entropy's C path, is still accepted for it
with a ``DeprecationWarning``.
"""

from __future__ import annotations

import sys
import warnings
from types import ModuleType
from typing import Literal

import torch

from . import _kernel

__all__ = [
    "IMPLS",
    "Impl",
    "KernelUnavailableWarning",
    "choose",
    "impl",
    "triton_available",
    "triton_module",
]

Impl = Literal["auto", "fused", "triton", "native", "torch"]
"""The accepted values of ``impl=``."""

IMPLS: tuple[Impl, ...] = ("auto", "torch", "fused", "triton", "native")


class KernelUnavailableWarning(UserWarning):
    """``impl="auto"`` runs torch's fused operations (``"native"``) because this library's
    kernel cannot be had here; given once per process, with the reason and the fix."""


_RENAMED = {"chunked": "fused"}


def impl(value: object, *, renamed: bool = False) -> Impl:
    """``value`` checked as an :data:`Impl`; with ``renamed``, ``"chunked"`` is read as
    ``"fused"`` (with a ``DeprecationWarning``), the name linear cross entropy's C path had."""
    if renamed and isinstance(value, str) and value in _RENAMED:
        new = _RENAMED[value]
        warnings.warn(
            f"impl={value!r} is now called impl={new!r} (the same path: the C kernel over "
            f"chunks of tokens); {value!r} will be removed",
            DeprecationWarning,
            stacklevel=3,
        )
        value = new
    for name in IMPLS:
        if value == name and isinstance(value, str):
            return name
    raise ValueError(f"impl: expected one of {', '.join(map(repr, IMPLS))}; got {value!r}")


def triton_module() -> ModuleType:
    """``crossentropy.triton`` (the Triton kernels); an ImportError naming the extra to
    install when Triton is not installed."""
    from .. import triton as kernels

    return kernels


_TRITON_INSTALLED: list[bool] = []


def triton_available(device: torch.device) -> bool:
    """Whether ``impl="auto"`` picks the Triton kernels: a CUDA tensor and Triton installed
    (looked up once per process)."""
    if device.type != "cuda":
        return False
    if not _TRITON_INSTALLED:
        try:
            triton_module()
        except ImportError:
            _TRITON_INSTALLED.append(False)
        else:
            _TRITON_INSTALLED.append(True)
    return _TRITON_INSTALLED[0]


_WARNED: list[bool] = []


def _warn_unavailable(kernel: str, reason: str, fix: str) -> None:
    """The one warning per process that ``"auto"`` runs ``"native"`` for want of a kernel."""
    if _WARNED:
        return
    _WARNED.append(True)
    warnings.warn(
        f"crossentropy: the {kernel} is unavailable ({reason}); impl='auto' runs torch's "
        f"own fused operations instead (impl='native': at least as fast as "
        f"torch.nn.functional.cross_entropy, slower than the kernel). For the kernel, {fix}",
        KernelUnavailableWarning,
        stacklevel=_caller_level(),
    )


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside this library: the user's call."""
    level, frame = 2, sys._getframe(2)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        "crossentropy."
    ):
        level, frame = level + 1, frame.f_back
    return level


def _fused_unavailable_reason() -> str:
    try:
        _kernel.load()
    except RuntimeError as error:
        return str(error)
    return "it failed to load"


def choose(
    requested: Impl,
    device: torch.device,
    *,
    triton_takes: bool,
    fused_takes: bool,
    native_takes: bool | None = None,
) -> Impl:
    """The path that runs: ``requested`` itself unless it is ``"auto"``; then Triton when
    the call is one its kernels take (``triton_takes``) on a CUDA device with Triton
    installed, the fused kernel when the call is one it takes (``fused_takes``) on CPU and
    it can be had here; else ``"native"`` for the calls it takes (``native_takes``, by
    default the fused kernel's: class-index targets, no transform, no weight that requires
    grad; probability targets too for ``cross_entropy``), after one warning per process
    where the kernel would have taken the call but cannot be had; else torch (the
    reference)."""
    if requested != "auto":
        return requested
    if triton_takes and triton_available(device):
        return "triton"
    if fused_takes and device.type == "cpu":
        if _kernel.fused_available():
            return "fused"
        _warn_unavailable(
            "fused C kernel",
            _fused_unavailable_reason(),
            "install a C compiler (gcc or clang on PATH, or set CC), or the prebuilt wheel "
            "for your platform",
        )
        return "native"
    if fused_takes and device.type == "cuda":
        _warn_unavailable("Triton kernel", "Triton is not installed", "pip install triton")
        return "native"
    if fused_takes if native_takes is None else native_takes:
        return "native"
    return "torch"
