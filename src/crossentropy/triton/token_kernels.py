# mypy: disable-error-code="untyped-decorator,no-untyped-def,no-any-return"
r"""Per-token log-probabilities and softmax entropy of (rows, V) logits as two Triton kernels.

The row math is :mod:`crossentropy.torch._tokens` (its docstring has the derivation and the
decided answers for ±inf/NaN logits); these kernels compute the same numbers tile by tile:

- the forward streams each row once in tiles of the vocabulary: each tile gives the
  statistics of its columns (m = max u, s = sum e^(u - m), t = sum e^(u - m)(u - m),
  u = z / T), merged into the running ones with ``TokenStatistics.merge``'s formula; the
  target's u_y is read directly. It stores the four numbers per row and, as
  ``token_outputs`` does, log p_y = (u_y - m) - log s and H = log s - t / s;
- the backward streams the row again and writes ``logit_gradient``'s
  dz = p' (c_1 + c_2 w) + [k = y] g / T (w = u - m floored at ``_LOG_FLOOR``, p' = e^w)
  in the logits' dtype, into a new buffer or over a scratch chunk; rows whose g and h are
  both 0 are written as exact zeros without being read.

float16/bfloat16 logits are computed in float32, float64 in float64; the statistics and the
outputs are float32 (float64 for float64). A target outside [0, V) (-1 for none) means "no
target in this row": it is never read (the callers check the ids at their public boundary
and mask the rows they ignore).
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _validate
from ..torch import tokens as torch_tokens
from ._tiles import (
    check_device,
    check_same_device,
    compute_dtype,
    kernel_parameters,
    next_power_of_2,
)

__all__ = [
    "MAX_BLOCK_CLASSES",
    "TILE_ELEMENTS",
    "Statistics",
    "TritonTokenLogProbs",
    "row_gradient",
    "row_log_probs",
    "row_statistics",
]

MAX_BLOCK_CLASSES = 4096
"""Columns of a tile: a row block streams its rows in slices of at most this many logits."""

TILE_ELEMENTS = 4096
"""Rows x columns of a tile: small vocabularies take several rows per program."""

# the floor of u - m in the gradient (crossentropy.torch._tokens: e^x is 0 below it in
# float32 and float64, and a finite coefficient times it stays finite)
_LOG_FLOOR: tl.constexpr = tl.constexpr(-1.0e4)


# ----------------------------------------------------------------------------------------
# the kernels


@triton.jit
def _tile_statistics(u, inside):
    """(m, s, t) of the columns ``inside`` of a (rows, columns) tile of u, as
    ``token_statistics`` computes them: m is NaN where a row holds a NaN; the shift is m
    where it is finite, else 0; a term e^d d whose e^d is 0 adds 0 (the floored sum) unless
    the row's maximum is +inf or NaN."""
    u = tl.where(inside, u, -float("inf"))
    nan = tl.sum((u != u).to(tl.int32), axis=1) > 0
    peak = tl.max(tl.where(u != u, -float("inf"), u), axis=1)
    peak = tl.where(nan, float("nan"), peak)
    finite = (peak == peak) & (tl.abs(peak) < float("inf"))
    shift = tl.where(finite, peak, 0.0)
    d = u - shift[:, None]
    e = tl.exp(d)
    mass = tl.sum(e, axis=1)
    fixable = (peak < float("inf"))[:, None]
    term = tl.where((inside == 0) | ((e == 0) & fixable), 0.0, e * d)
    return peak, mass, tl.sum(term, axis=1)


@triton.jit
def _merge(m, s, t, m_i, s_i, t_i):
    """The statistics of two disjoint slices of the same rows merged:
    ``TokenStatistics.merge`` (M = max(m1, m2), NaN if either is NaN)."""
    nan = (m != m) | (m_i != m_i)
    top = tl.where(nan, float("nan"), tl.where(m > m_i, m, m_i))
    gap = tl.where(m == top, 0.0, m - top)
    gap_i = tl.where(m_i == top, 0.0, m_i - top)
    scale = tl.exp(gap)
    scale_i = tl.exp(gap_i)
    mass = s * scale + s_i * scale_i
    spread = tl.where(scale == 0, 0.0, scale * (t + s * gap))
    spread += tl.where(scale_i == 0, 0.0, scale_i * (t_i + s_i * gap_i))
    return top, mass, spread


@triton.jit
def _forward_kernel(z_ptr, z_stride, target_ptr, params_ptr, peak_ptr, mass_ptr, spread_ptr,
                    picked_ptr, log_prob_ptr, entropy_ptr, n_rows, classes, COMPUTE: tl.constexpr,
                    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr):  # fmt: skip
    """The statistics of BLOCK_N whole rows, streaming each row once in BLOCK_V slices."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    temperature = tl.load(params_ptr + 0)
    m = tl.full((BLOCK_N,), -float("inf"), COMPUTE)
    s = tl.zeros((BLOCK_N,), COMPUTE)
    t = tl.zeros((BLOCK_N,), COMPUTE)
    for start in range(0, classes, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        inside = row_ok[:, None] & (cols < classes)[None, :]
        z = tl.load(z_ptr + rows64[:, None] * z_stride + cols[None, :], mask=inside, other=0.0)
        m_i, s_i, t_i = _tile_statistics(z.to(COMPUTE) / temperature, inside)
        m, s, t = _merge(m, s, t, m_i, s_i, t_i)
    y = tl.load(target_ptr + rows, mask=row_ok, other=-1)
    here = row_ok & (y >= 0) & (y < classes)
    z_y = tl.load(z_ptr + rows64 * z_stride + tl.where(here, y, 0), mask=here, other=0.0)
    picked = tl.where(here, z_y.to(COMPUTE) / temperature, 0.0)
    tl.store(peak_ptr + rows, m, mask=row_ok)
    tl.store(mass_ptr + rows, s, mask=row_ok)
    tl.store(spread_ptr + rows, t, mask=row_ok)
    tl.store(picked_ptr + rows, picked, mask=row_ok)
    log_s = tl.log(s)
    tl.store(log_prob_ptr + rows, (picked - m) - log_s, mask=row_ok)
    tl.store(entropy_ptr + rows, log_s - t / s, mask=row_ok)


@triton.jit
def _backward_kernel(z_ptr, z_stride, target_ptr, params_ptr, peak_ptr, mass_ptr, spread_ptr,
                     g_ptr, h_ptr, grad_ptr, grad_stride, n_rows, classes, COMPUTE: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr):  # fmt: skip
    """d/dz of sum g log p_y + h H for BLOCK_N rows from their statistics, written once."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    temperature = tl.load(params_ptr + 0)
    m = tl.load(peak_ptr + rows, mask=row_ok, other=0.0)
    s = tl.load(mass_ptr + rows, mask=row_ok, other=1.0)
    t = tl.load(spread_ptr + rows, mask=row_ok, other=0.0)
    g = tl.load(g_ptr + rows, mask=row_ok, other=0.0).to(COMPUTE)
    h = tl.load(h_ptr + rows, mask=row_ok, other=0.0).to(COMPUTE)
    live = row_ok & ((g != 0) | (h != 0))
    scale = s * temperature
    c1 = -(g - tl.where(h == 0, 0.0, h * (t / s))) / scale  # h H - h log s = -h t / s
    c2 = -h / scale
    y = tl.load(target_ptr + rows, mask=row_ok, other=-1)
    y = tl.where((y >= 0) & (y < classes), y, -1)
    bump = g / temperature
    for start in range(0, classes, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        col_ok = (cols < classes)[None, :]
        z = tl.load(z_ptr + rows64[:, None] * z_stride + cols[None, :],
                    mask=live[:, None] & col_ok, other=0.0)  # fmt: skip
        w = z.to(COMPUTE) / temperature - m[:, None]  # the raw maximum: -inf beside +inf
        w = tl.where(w < _LOG_FLOOR, _LOG_FLOOR, w)  # a NaN stays NaN
        grad = (c1[:, None] + c2[:, None] * w) * tl.exp(w)
        grad += tl.where(cols[None, :] == y[:, None], bump[:, None], 0.0)
        grad = tl.where(live[:, None], grad, 0.0)
        tl.store(grad_ptr + rows64[:, None] * grad_stride + cols[None, :],
                 grad.to(grad_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok)  # fmt: skip


# ----------------------------------------------------------------------------------------
# launchers, with the checks every launch needs


def _tiles(rows: int, classes: int) -> tuple[int, int]:
    block_v = max(16, min(next_power_of_2(classes), MAX_BLOCK_CLASSES))
    block_n = max(1, min(next_power_of_2(rows), TILE_ELEMENTS // block_v))
    return block_n, block_v


Statistics = tuple[Tensor, Tensor, Tensor, Tensor]
"""Per row (m, s, t, u_y): the fields of ``crossentropy.torch``'s ``TokenStatistics``."""

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check_logits(name: str, logits: object) -> Tensor:
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"{name}: expected a 2-D (rows, V) tensor; got {shape}")
    if logits.dtype not in _DTYPES:
        raise TypeError(
            f"{name}: expected float32, float64, float16 or bfloat16; got {logits.dtype}"
        )
    check_device(name, logits, _forward_kernel)
    return logits if logits.stride(1) == 1 else logits.contiguous()


def _check_row(name: str, value: object, rows: int, device: torch.device, dtype: Any) -> Tensor:
    """A (rows,) tensor on ``device``: of ``dtype`` (a dtype), or floating (``None``)."""
    if not isinstance(value, Tensor) or tuple(value.shape) != (rows,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name}: expected a tensor of shape ({rows},); got {shape}")
    if (value.dtype != dtype) if dtype is not None else not value.is_floating_point():
        raise TypeError(f"{name}: expected dtype {dtype or 'floating'}; got {value.dtype}")
    check_same_device(name, value, device)
    return value.contiguous()


def _parameters(logits: Tensor, temperature: float) -> Tensor:
    t = _validate.temperature(temperature)
    return kernel_parameters((t,), compute_dtype(logits.dtype), logits.device)


def row_statistics(logits: Tensor, target: Tensor, temperature: float) -> Statistics:
    """The statistics of whole rows of logits, the fields of ``TokenStatistics``:
    (m, s, t, u_y) per row (u_y 0 where there is no target).

    Args:
        logits: (rows, V) float32/float64/float16/bfloat16 on a CUDA device (or the CPU
            under Triton's interpreter); the classes contiguous (else copied).
        target: (rows,) int64 class ids; a value outside [0, V) (-1) means no target.
        temperature: T, finite and > 0.

    Returns:
        The rows' statistics, float32 (float64 for float64 logits).
    """
    peak, mass, spread, picked, _, _ = _forward(logits, target, temperature)
    return peak, mass, spread, picked


def _forward(
    logits: Tensor, target: Tensor, temperature: float
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The statistics, then log p_y and H (a row without a target: -m - log s)."""
    z = _check_logits("logits", logits)
    rows, classes = z.shape
    target = _check_row("target", target, rows, z.device, torch.int64)
    params = _parameters(z, temperature)
    out = [torch.empty(rows, dtype=params.dtype, device=z.device) for _ in range(6)]
    if rows:
        block_n, block_v = _tiles(rows, classes)
        compute = tl.float64 if params.dtype == torch.float64 else tl.float32
        _forward_kernel[(triton.cdiv(rows, block_n),)](
            z, z.stride(0), target, params, *out, rows, classes,
            COMPUTE=compute, BLOCK_N=block_n, BLOCK_V=block_v,
        )  # fmt: skip
    return out[0], out[1], out[2], out[3], out[4], out[5]


def row_gradient(
    logits: Tensor,
    target: Tensor,
    stats: Statistics,
    temperature: float,
    grad_log_prob: Tensor,
    grad_entropy: Tensor,
    *,
    out: Tensor | None = None,
) -> Tensor:
    """d/dz of sum_i g_i log p_iy + h_i H_i over whole rows, in the logits' dtype.

    Args:
        logits, target, temperature: as :func:`row_statistics`.
        stats: the rows' statistics (:func:`row_statistics`; u_y is not read).
        grad_log_prob, grad_entropy: g and h, (rows,) floating; rows where both are 0
            get exact zeros.
        out: (rows, V) of the logits' dtype, rows contiguous and not overlapping, to write
            the gradient into; may be ``logits`` itself (each tile is read before it is
            written). By default a new tensor.

    Returns:
        The gradient (``out`` when given).
    """
    z = _check_logits("logits", logits)
    rows, classes = z.shape
    device = z.device
    target = _check_row("target", target, rows, device, torch.int64)
    dtype = compute_dtype(z.dtype)
    fields = [
        _check_row(f"stats[{index}]", field, rows, device, dtype)
        for index, field in enumerate(stats[:3])
    ]
    g = _check_row("grad_log_prob", grad_log_prob, rows, device, None)
    h = _check_row("grad_entropy", grad_entropy, rows, device, None)
    if out is None:
        out = torch.empty(z.shape, dtype=z.dtype, device=device)
    elif (
        not isinstance(out, Tensor)
        or out.shape != z.shape
        or out.dtype != z.dtype
        or out.device != device
        or out.stride(1) != 1
        or (rows > 1 and out.stride(0) < classes)
    ):
        raise ValueError(
            f"out: expected a ({rows}, {classes}) {z.dtype} tensor on {device} whose rows "
            f"are contiguous and do not overlap"
        )
    elif out.data_ptr() == logits.data_ptr() and z.data_ptr() != logits.data_ptr():
        raise ValueError("out: is the logits, whose classes are not contiguous")
    params = _parameters(z, temperature)
    if rows and classes:
        block_n, block_v = _tiles(rows, classes)
        compute = tl.float64 if dtype == torch.float64 else tl.float32
        _backward_kernel[(triton.cdiv(rows, block_n),)](
            z, z.stride(0), target, params, *fields, g, h, out, out.stride(0), rows, classes,
            COMPUTE=compute, BLOCK_N=block_n, BLOCK_V=block_v,
        )  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------
# autograd


class TritonTokenLogProbs(torch.autograd.Function):
    """(log p_y, H) per row of (rows, V) logits on the kernels, and their gradient.
    ``target`` is int64, -1 where there is none; ``ignored`` rows give 0 and a zero
    gradient. A backward with ``create_graph=True`` runs the torch reference's gradient
    (differentiable), as :func:`crossentropy.torch.token_log_probs` does."""

    @staticmethod
    def forward(
        logits: Tensor, target: Tensor, ignored: Tensor, temperature: float
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        peak, mass, spread, _, log_prob, entropy = _forward(logits, target, temperature)
        log_prob = torch.where(ignored, 0.0, log_prob)
        entropy = torch.where(ignored, 0.0, entropy)
        return log_prob, entropy, peak, mass, spread

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        logits, target, ignored, temperature = inputs
        ctx.save_for_backward(logits, target, ignored, *output[2:])
        ctx.temperature = temperature
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_log_prob: Tensor | None, grad_entropy: Tensor | None, *_: Any
    ) -> tuple[Tensor | None, None, None, None]:
        logits, target, ignored, peak, mass, spread = ctx.saved_tensors
        temperature: float = ctx.temperature
        if grad_log_prob is None and grad_entropy is None:
            return None, None, None, None
        if torch.is_grad_enabled():
            return _differentiable(
                logits, target, ignored, temperature, grad_log_prob, grad_entropy
            )
        zero = torch.zeros_like(peak)
        g = zero if grad_log_prob is None else torch.where(ignored, 0.0, grad_log_prob)
        h = zero if grad_entropy is None else torch.where(ignored, 0.0, grad_entropy)
        stats = (peak, mass, spread, zero)
        grad = row_gradient(logits, target, stats, temperature, g.to(peak.dtype), h.to(peak.dtype))
        return grad, None, None, None


def _differentiable(
    logits: Tensor,
    target: Tensor,
    ignored: Tensor,
    temperature: float,
    grad_log_prob: Tensor | None,
    grad_entropy: Tensor | None,
) -> tuple[Tensor, None, None, None]:
    """The gradient as torch operations (``impl="torch"``), differentiable: a backward
    with ``create_graph=True``. A row without a target (-1, not ignored) is given class 0,
    whose log-probability then has no incoming gradient."""
    with torch.enable_grad():
        ids = torch.where(ignored, -1, target.clamp(min=0))
        log_prob, entropy = torch_tokens.token_log_probs(
            logits, ids, temperature=temperature, ignore_index=-1, return_entropy=True,
            impl="torch",
        )  # fmt: skip
        pairs = [
            (out, grad)
            for out, grad in ((log_prob, grad_log_prob), (entropy, grad_entropy))
            if grad is not None
        ]
        (grad,) = torch.autograd.grad(
            [out for out, _ in pairs], logits, [g for _, g in pairs], create_graph=True
        )
    return grad.to(logits.dtype), None, None, None


def row_log_probs(
    logits: Tensor, target: Tensor, ignored: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """(log p_y, H) of (rows, V) logits on the kernels, differentiable in ``logits``.

    Args:
        logits: (rows, V) float32/float64/float16/bfloat16 on a CUDA device (or the CPU
            under Triton's interpreter).
        target: (rows,) int64 class ids in [0, V), or -1 for none (the callers check them:
            :func:`crossentropy.torch.token_log_probs`).
        ignored: (rows,) bool: these rows give 0 and a zero gradient.
        temperature: T, finite and > 0.

    Returns:
        (log p_y, H), each (rows,) float32 (float64 for float64 logits).
    """
    z = _check_logits("logits", logits)
    rows = z.shape[0]
    target = _check_row("target", target, rows, z.device, torch.int64)
    ignored = _check_row("ignored", ignored, rows, z.device, torch.bool)
    outputs = TritonTokenLogProbs.apply(z, target, ignored, _validate.temperature(temperature))  # type: ignore[no-untyped-call]
    return outputs[0], outputs[1]
