"""The one choice of implementation that every loss of :mod:`crossentropy.torch` takes.

``impl=`` names a path, the same name everywhere (``cross_entropy``,
``linear_cross_entropy``, the modules, the transformers integration):

- ``"fused"``: the C kernel on CPU (:mod:`crossentropy.torch._kernel`): loss and gradient
  in one sweep; for linear cross entropy, the vocabulary engine's token chunks with it
  (:mod:`crossentropy.torch.vocabulary`);
- ``"triton"``: the Triton kernels (:mod:`crossentropy.triton`), on CUDA tensors (or on
  CPU under ``TRITON_INTERPRET=1``);
- ``"torch"``: the readable reference, torch operations through the array-API core
  (for linear cross entropy the logits materialised first);
- ``"auto"``: the fastest path that takes the call (:func:`choose`).

``"chunked"``, the earlier name of linear cross entropy's C path, is still accepted for it
with a ``DeprecationWarning``.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Literal

import torch

from . import _kernel

__all__ = ["IMPLS", "Impl", "choose", "impl", "triton_available", "triton_module"]

Impl = Literal["auto", "fused", "triton", "torch"]
"""The accepted values of ``impl=``."""

IMPLS: tuple[Impl, ...] = ("auto", "torch", "fused", "triton")

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


def choose(requested: Impl, device: torch.device, *, triton_takes: bool, fused_takes: bool) -> Impl:
    """The path that runs: ``requested`` itself unless it is ``"auto"``; then Triton when
    the call is one its kernels take (``triton_takes``) on a CUDA device with Triton
    installed, the fused kernel when the call is one it takes (``fused_takes``) on CPU and
    it can be built here, else torch."""
    if requested != "auto":
        return requested
    if triton_takes and triton_available(device):
        return "triton"
    if fused_takes and device.type == "cpu" and _kernel.fused_available():
        return "fused"
    return "torch"
