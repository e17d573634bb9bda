# mypy: disable-error-code="untyped-decorator,no-untyped-def,no-any-return"
r"""Distillation between a student's and a teacher's (rows, V) logits as Triton kernels.

The row math is :mod:`crossentropy.torch._distill` (its docstring has the derivation, the
divergences and their gradients, and the decided answers for ±inf/NaN logits); these
kernels compute the same numbers over whole rows, streamed in tiles of the vocabulary,
in three phases:

1. the log-sum-exps: of u = z_s / T, of v = z_t / T and, with a hard-label term at
   T != 1, of z_s itself, each online over the tiles (per tile its maximum and its sum of
   exponentials, merged into the running ones); and the target's logit z_s[y], read
   directly. Each is kept as the library keeps a log-sum-exp
   (:func:`crossentropy._array.shift_and_log_sum`): a shift (the maximum where it is
   finite, else 0) and log sum e^(x - shift), never added, so that log p = (x - shift) -
   log sum is exact however large the logits (the torch operations subtract the merged
   L = shift + log sum, one number, as slices of a row need: at logits of magnitude X the
   two differ by about X times the dtype's epsilon);
2. D (the divergence) and R, the gradient's sum_j p_s,j a_j (D itself for reverse KL,
   (1 - beta) KL(p_s || M) for JSD, 0 for forward KL): sums over
   a second stream of the row, each term p log(p / q) exactly 0 where its p is 0;
3. the gradient of sum_i c_i loss_i for per-row scales c_i (the incoming gradient, the
   reduction's scale), per tile from the row's numbers, written once in the student's
   dtype into a new buffer or over the student's logits; rows whose c_i is 0 (or that do
   not count) are written as exact zeros without being read.

:func:`distill_rows` runs the three phases in one launch (the row block stays in cache
between them: what the engine's head does with a chunk); :func:`distillation_statistics`
phases 1 and 2 and :func:`distillation_gradient` phase 3 from their numbers (what autograd
does, :class:`TritonDistillation`).

Everything is computed in float32, in float64 where either model's logits are float64
(the two may differ in dtype); the per-row losses and numbers are in that dtype, the
gradient in the student's. A target outside [0, V) (-1 for none) is never read: its logit counts as
0 (the callers check the ids at their public boundary and give such rows no hard term).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _validate
from ..torch import distillation as torch_distillation
from ._tiles import (
    check_device,
    check_same_device,
    compute_dtype,
    kernel_parameters,
    next_power_of_2,
)

__all__ = [
    "DIVERGENCES",
    "MAX_BLOCK_CLASSES",
    "STATISTICS",
    "TILE_ELEMENTS",
    "Settings",
    "TritonDistillation",
    "distill_rows",
    "distillation_gradient",
    "distillation_losses",
    "distillation_statistics",
]

MAX_BLOCK_CLASSES = 2048
"""Columns of a tile: a row block streams both models' rows in slices of this many logits."""

TILE_ELEMENTS = 2048
"""Rows x columns of a tile: small vocabularies take several rows per program."""

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
"""The divergences, in the order of the kernels' ``DIVERGENCE`` constant."""

STATISTICS = (
    "student_shift",
    "student_log_sum",
    "teacher_shift",
    "teacher_log_sum",
    "hard_shift",
    "hard_log_sum",
    "divergence",
    "row_term",
)
"""The rows of the (8, rows) statistics: the three log-sum-exps as (shift, log sum), of
u = z_s / T, v = z_t / T and z_s (the hard term's; the student's at T = 1 or without a hard
term), then D and R."""


class Settings(Protocol):
    """What the row functions read of ``crossentropy.torch``'s ``Distillation`` (the
    settings checked at the public boundary; they are checked again here)."""

    @property
    def divergence(self) -> str: ...
    @property
    def beta(self) -> float: ...
    @property
    def temperature(self) -> float: ...
    @property
    def soft_weight(self) -> float: ...
    @property
    def hard_weight(self) -> float: ...


# ----------------------------------------------------------------------------------------
# the per-tile math


@triton.jit
def _tile_log_sum_exp(x, inside):
    """(m, s) of the columns ``inside`` of a (rows, columns) tile: m the maximum (NaN where
    a row holds a NaN, -inf for none), s = sum e^(x - shift), shift = m where it is finite,
    else 0 (s = inf beside a +inf, 0 for a row of -inf)."""
    x = tl.where(inside, x, -float("inf"))
    nan = tl.sum((x != x).to(tl.int32), axis=1) > 0
    peak = tl.max(tl.where(x != x, -float("inf"), x), axis=1)
    peak = tl.where(nan, float("nan"), peak)
    shift = tl.where(tl.abs(peak) < float("inf"), peak, 0.0)
    return peak, tl.sum(tl.exp(x - shift[:, None]), axis=1)


@triton.jit
def _merge_log_sum_exp(m, s, m_i, s_i):
    """Two (m, s) of disjoint columns of the same rows merged: M = max(m, m_i) (NaN if
    either is), s e^(m - M) + s_i e^(m_i - M) with a gap of 0 where m equals M (both -inf,
    both +inf)."""
    nan = (m != m) | (m_i != m_i)
    top = tl.where(nan, float("nan"), tl.where(m > m_i, m, m_i))
    scale = tl.exp(tl.where(m == top, 0.0, m - top))
    scale_i = tl.exp(tl.where(m_i == top, 0.0, m_i - top))
    return top, s * scale + s_i * scale_i


@triton.jit
def _shift_and_log_sum(m, s):
    """(shift, log sum) of a merged (m, s): log p = (x - shift) - log sum."""
    return tl.where(tl.abs(m) < float("inf"), m, 0.0), tl.log(s)


@triton.jit
def _log_mixture(log_ps, log_pt, log_beta, log_rest):
    """log M = log(beta p_t + (1 - beta) p_s) = logaddexp(log beta + log p_t,
    log(1 - beta) + log p_s); -inf where both are 0."""
    a = log_beta + log_pt
    b = log_rest + log_ps
    top = tl.maximum(a, b)
    mixed = top + tl.log(1.0 + tl.exp(-tl.abs(a - b)))
    return tl.where(top == -float("inf"), -float("inf"), mixed)


@triton.jit
def _divergence_terms(log_ps, log_pt, beta, log_beta, log_rest, DIVERGENCE: tl.constexpr):
    """Per entry, the terms of D and of R: p log(p / q), exactly 0 where p is 0."""
    ps = tl.exp(log_ps)
    if DIVERGENCE == 0:  # KL(p_t || p_s)
        pt = tl.exp(log_pt)
        d = tl.where(pt == 0, 0.0, pt * (log_pt - log_ps))
        r = tl.zeros(d.shape, d.dtype)
    elif DIVERGENCE == 1:  # KL(p_s || p_t)
        d = tl.where(ps == 0, 0.0, ps * (log_ps - log_pt))
        r = d
    else:
        pt = tl.exp(log_pt)
        log_m = _log_mixture(log_ps, log_pt, log_beta, log_rest)
        student = tl.where(ps == 0, 0.0, ps * (log_ps - log_m))
        teacher = tl.where(pt == 0, 0.0, pt * (log_pt - log_m))
        d = beta * teacher + (1.0 - beta) * student
        r = (1.0 - beta) * student
    return d, r


@triton.jit
def _gradient_tile(zs, zt, hot, shift_s, log_s, shift_t, log_t, shift_1, log_1, row_term,
                   a, b, temperature, beta, log_beta, log_rest, DIVERGENCE: tl.constexpr,
                   SOFT: tl.constexpr, HARD: tl.constexpr):  # fmt: skip
    """d(c loss)/dz_s of a tile: a dD/du / T + b (softmax(z_s) - [k = y]), with
    a = c soft_weight / T and b = c hard_weight per row (a term whose weight is 0 adds
    exactly 0); dD/du = p_s - p_t (forward KL), p_s (log p_s - log p_t - R) (reverse KL,
    R = D), p_s ((1 - beta)(log p_s - log M) - R) (JSD), 0 where p_s is 0 (but for
    forward KL)."""
    grad = tl.zeros(zs.shape, zs.dtype)
    if SOFT:
        log_ps = (zs / temperature - shift_s[:, None]) - log_s[:, None]
        log_pt = (zt / temperature - shift_t[:, None]) - log_t[:, None]
        ps = tl.exp(log_ps)
        if DIVERGENCE == 0:
            slope = ps - tl.exp(log_pt)
        elif DIVERGENCE == 1:
            slope = tl.where(ps == 0, 0.0, ps * ((log_ps - log_pt) - row_term[:, None]))
        else:
            log_m = _log_mixture(log_ps, log_pt, log_beta, log_rest)
            own = (1.0 - beta) * (log_ps - log_m)
            slope = tl.where(ps == 0, 0.0, ps * (own - row_term[:, None]))
        grad = tl.where(a[:, None] == 0, 0.0, a[:, None] * slope)
    if HARD:
        p1 = tl.exp((zs - shift_1[:, None]) - log_1[:, None])
        step = p1 - tl.where(hot, 1.0, 0.0)
        grad += tl.where(b[:, None] == 0, 0.0, b[:, None] * step)
    return grad


# ----------------------------------------------------------------------------------------
# the kernels


@triton.jit
def _write_gradient(s_ptr, s_stride, t_ptr, t_stride, grad_ptr, grad_stride, rows64, row_ok, on,
                    y, shift_s, log_s, shift_t, log_t, shift_1, log_1, row_term, a, b,
                    temperature, beta, log_beta, log_rest, classes, DIVERGENCE: tl.constexpr,
                    SOFT: tl.constexpr, HARD: tl.constexpr, COMPUTE: tl.constexpr,
                    BLOCK_V: tl.constexpr):  # fmt: skip
    """Phase 3: stream the rows once more and write their gradient (0 where not ``on``)."""
    for start in range(0, classes, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        col_ok = (cols < classes)[None, :]
        read = on[:, None] & col_ok
        zs = tl.load(s_ptr + rows64[:, None] * s_stride + cols[None, :], mask=read, other=0.0)
        zs = zs.to(COMPUTE)
        if SOFT:
            zt = tl.load(t_ptr + rows64[:, None] * t_stride + cols[None, :], mask=read,
                         other=0.0).to(COMPUTE)  # fmt: skip
        else:
            zt = zs
        hot = cols[None, :] == y[:, None]
        grad = _gradient_tile(
            zs, zt, hot, shift_s, log_s, shift_t, log_t, shift_1,
            log_1, row_term, a, b, temperature, beta, log_beta, log_rest, DIVERGENCE,
            SOFT, HARD,
        )  # fmt: skip
        grad = tl.where(on[:, None], grad, 0.0)
        tl.store(grad_ptr + rows64[:, None] * grad_stride + cols[None, :],
                 grad.to(grad_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok)  # fmt: skip


@triton.jit
def _rows_kernel(s_ptr, s_stride, t_ptr, t_stride, target_ptr, live_ptr, scale_ptr, params_ptr,
                 stats_ptr, loss_ptr, grad_ptr, grad_stride, n_rows, classes,
                 DIVERGENCE: tl.constexpr, SOFT: tl.constexpr, HARD: tl.constexpr,
                 HARD_LSE: tl.constexpr, GRAD: tl.constexpr, COMPUTE: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr):  # fmt: skip
    """Phases 1 and 2 for BLOCK_N whole rows (their statistics and losses), then with GRAD
    phase 3 (their gradient times the per-row scales)."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    temperature = tl.load(params_ptr + 0)
    beta = tl.load(params_ptr + 1)
    soft = tl.load(params_ptr + 2)
    hard = tl.load(params_ptr + 3)
    log_beta = tl.load(params_ptr + 4)
    log_rest = tl.load(params_ptr + 5)
    live = (tl.load(live_ptr + rows, mask=row_ok, other=0) != 0) & row_ok
    # phase 1: the log-sum-exps (rows that do not count are not read)
    ms = tl.full((BLOCK_N,), -float("inf"), COMPUTE)
    ss = tl.zeros((BLOCK_N,), COMPUTE)
    mt = tl.full((BLOCK_N,), -float("inf"), COMPUTE)
    st = tl.zeros((BLOCK_N,), COMPUTE)
    m1 = tl.full((BLOCK_N,), -float("inf"), COMPUTE)
    s1 = tl.zeros((BLOCK_N,), COMPUTE)
    for start in range(0, classes, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        inside = live[:, None] & (cols < classes)[None, :]
        zs = tl.load(s_ptr + rows64[:, None] * s_stride + cols[None, :], mask=inside, other=0.0)
        zs = zs.to(COMPUTE)
        m_i, s_i = _tile_log_sum_exp(zs / temperature, inside)
        ms, ss = _merge_log_sum_exp(ms, ss, m_i, s_i)
        if SOFT:
            zt = tl.load(t_ptr + rows64[:, None] * t_stride + cols[None, :], mask=inside,
                         other=0.0)  # fmt: skip
            m_i, s_i = _tile_log_sum_exp(zt.to(COMPUTE) / temperature, inside)
            mt, st = _merge_log_sum_exp(mt, st, m_i, s_i)
        if HARD_LSE:
            m_i, s_i = _tile_log_sum_exp(zs, inside)
            m1, s1 = _merge_log_sum_exp(m1, s1, m_i, s_i)
    shift_s, log_s = _shift_and_log_sum(ms, ss)
    shift_t, log_t = _shift_and_log_sum(mt, st)
    if HARD_LSE:
        shift_1, log_1 = _shift_and_log_sum(m1, s1)
    else:
        shift_1, log_1 = shift_s, log_s
    y = tl.load(target_ptr + rows, mask=row_ok, other=-1)
    here = live & (y >= 0) & (y < classes)
    y = tl.where(here, y, -1)
    picked = tl.zeros((BLOCK_N,), COMPUTE)
    if HARD:  # the target's logit, read only where it is a column of the row
        z_y = tl.load(s_ptr + rows64 * s_stride + tl.where(here, y, 0), mask=here, other=0.0)
        picked = tl.where(here, z_y.to(COMPUTE), 0.0)
    # phase 2: D and R
    div = tl.zeros((BLOCK_N,), COMPUTE)
    row_term = tl.zeros((BLOCK_N,), COMPUTE)
    if SOFT:
        for start in range(0, classes, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            inside = live[:, None] & (cols < classes)[None, :]
            offsets = rows64[:, None] * s_stride + cols[None, :]
            zs = tl.load(s_ptr + offsets, mask=inside, other=0.0).to(COMPUTE)
            zt = tl.load(t_ptr + rows64[:, None] * t_stride + cols[None, :], mask=inside,
                         other=0.0).to(COMPUTE)  # fmt: skip
            log_ps = (zs / temperature - shift_s[:, None]) - log_s[:, None]
            log_pt = (zt / temperature - shift_t[:, None]) - log_t[:, None]
            d_i, r_i = _divergence_terms(log_ps, log_pt, beta, log_beta, log_rest, DIVERGENCE)
            div += tl.sum(tl.where(inside, d_i, 0.0), axis=1)
            row_term += tl.sum(tl.where(inside, r_i, 0.0), axis=1)
    loss = tl.zeros((BLOCK_N,), COMPUTE)
    if SOFT:
        loss += tl.where(soft == 0, 0.0, soft * div)
    if HARD:
        loss += tl.where(hard == 0, 0.0, hard * (log_1 - (picked - shift_1)))
    tl.store(loss_ptr + rows, tl.where(live, loss, 0.0), mask=row_ok)
    tl.store(stats_ptr + 0 * n_rows + rows, shift_s, mask=row_ok)
    tl.store(stats_ptr + 1 * n_rows + rows, log_s, mask=row_ok)
    tl.store(stats_ptr + 2 * n_rows + rows, shift_t, mask=row_ok)
    tl.store(stats_ptr + 3 * n_rows + rows, log_t, mask=row_ok)
    tl.store(stats_ptr + 4 * n_rows + rows, shift_1, mask=row_ok)
    tl.store(stats_ptr + 5 * n_rows + rows, log_1, mask=row_ok)
    tl.store(stats_ptr + 6 * n_rows + rows, div, mask=row_ok)
    tl.store(stats_ptr + 7 * n_rows + rows, row_term, mask=row_ok)
    if GRAD:  # phase 3
        c = tl.load(scale_ptr + rows, mask=row_ok, other=0.0).to(COMPUTE)
        on = live & (c != 0)
        _write_gradient(
            s_ptr, s_stride, t_ptr, t_stride, grad_ptr, grad_stride, rows64, row_ok, on, y,
            shift_s, log_s, shift_t, log_t, shift_1, log_1, row_term,
            c * soft / temperature, c * hard, temperature, beta, log_beta, log_rest, classes,
            DIVERGENCE, SOFT, HARD, COMPUTE, BLOCK_V,
        )  # fmt: skip


@triton.jit
def _gradient_kernel(s_ptr, s_stride, t_ptr, t_stride, target_ptr, live_ptr, scale_ptr,
                     params_ptr, stats_ptr, grad_ptr, grad_stride, n_rows, classes,
                     DIVERGENCE: tl.constexpr, SOFT: tl.constexpr, HARD: tl.constexpr,
                     COMPUTE: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_V: tl.constexpr):  # fmt: skip
    """Phase 3 alone, from the rows' statistics."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    temperature = tl.load(params_ptr + 0)
    beta = tl.load(params_ptr + 1)
    soft = tl.load(params_ptr + 2)
    hard = tl.load(params_ptr + 3)
    log_beta = tl.load(params_ptr + 4)
    log_rest = tl.load(params_ptr + 5)
    live = (tl.load(live_ptr + rows, mask=row_ok, other=0) != 0) & row_ok
    c = tl.load(scale_ptr + rows, mask=row_ok, other=0.0).to(COMPUTE)
    on = live & (c != 0)
    shift_s = tl.load(stats_ptr + 0 * n_rows + rows, mask=row_ok, other=0.0)
    log_s = tl.load(stats_ptr + 1 * n_rows + rows, mask=row_ok, other=0.0)
    shift_t = tl.load(stats_ptr + 2 * n_rows + rows, mask=row_ok, other=0.0)
    log_t = tl.load(stats_ptr + 3 * n_rows + rows, mask=row_ok, other=0.0)
    shift_1 = tl.load(stats_ptr + 4 * n_rows + rows, mask=row_ok, other=0.0)
    log_1 = tl.load(stats_ptr + 5 * n_rows + rows, mask=row_ok, other=0.0)
    row_term = tl.load(stats_ptr + 7 * n_rows + rows, mask=row_ok, other=0.0)
    y = tl.load(target_ptr + rows, mask=row_ok, other=-1)
    y = tl.where(live & (y >= 0) & (y < classes), y, -1)
    _write_gradient(
        s_ptr, s_stride, t_ptr, t_stride, grad_ptr, grad_stride, rows64, row_ok, on, y,
        shift_s, log_s, shift_t, log_t, shift_1, log_1, row_term,
        c * soft / temperature, c * hard, temperature, beta, log_beta, log_rest, classes,
        DIVERGENCE, SOFT, HARD, COMPUTE, BLOCK_V,
    )  # fmt: skip


# ----------------------------------------------------------------------------------------
# launchers, with the checks every launch needs

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _compute_dtype(student: Tensor, teacher: Tensor) -> torch.dtype:
    """float64 where either model's logits are float64, else float32."""
    return compute_dtype(torch.promote_types(student.dtype, teacher.dtype))


def _tiles(rows: int, classes: int) -> tuple[int, int]:
    block_v = max(16, min(next_power_of_2(classes), MAX_BLOCK_CLASSES))
    block_n = max(1, min(next_power_of_2(rows), TILE_ELEMENTS // block_v))
    return block_n, block_v


def _check_logits(name: str, logits: object) -> Tensor:
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"{name}: expected a 2-D (rows, V) tensor; got {shape}")
    if logits.dtype not in _DTYPES:
        raise TypeError(
            f"{name}: expected float32, float64, float16 or bfloat16; got {logits.dtype}"
        )
    check_device(name, logits, _rows_kernel)
    return logits if logits.stride(1) == 1 else logits.contiguous()


def _check_pair(student: object, teacher: object) -> tuple[Tensor, Tensor]:
    zs = _check_logits("student", student)
    zt = _check_logits("teacher", teacher)
    if zt.shape != zs.shape:
        raise ValueError(
            f"teacher: expected the student's shape {tuple(zs.shape)} (the same rows and "
            f"vocabulary); got {tuple(zt.shape)}"
        )
    check_same_device("teacher", zt, zs.device)
    return zs, zt


def _check_row(name: str, value: object, rows: int, device: torch.device, dtype: Any) -> Tensor:
    """A (rows,) tensor on ``device``: of ``dtype`` (a dtype), or floating (``None``)."""
    if not isinstance(value, Tensor) or tuple(value.shape) != (rows,):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"{name}: expected a tensor of shape ({rows},); got {shape}")
    if (value.dtype != dtype) if dtype is not None else not value.is_floating_point():
        raise TypeError(f"{name}: expected dtype {dtype or 'floating'}; got {value.dtype}")
    check_same_device(name, value, device)
    return value.contiguous()


def _check_out(out: object, student: Tensor, given: Tensor, teacher: Tensor) -> Tensor:
    """A (rows, V) tensor of the student's dtype on its device, rows contiguous and not
    overlapping; the student's logits themselves (each tile is read before it is written),
    never the teacher's."""
    rows, classes = student.shape
    if (
        not isinstance(out, Tensor)
        or out.shape != student.shape
        or out.dtype != student.dtype
        or out.device != student.device
        or out.stride(1) != 1
        or (rows > 1 and out.stride(0) < classes)
    ):
        raise ValueError(
            f"out: expected a ({rows}, {classes}) {student.dtype} tensor on "
            f"{student.device} whose rows are contiguous and do not overlap"
        )
    if (
        out.numel()
        and out.data_ptr() == given.data_ptr()
        and student.data_ptr() != given.data_ptr()
    ):
        raise ValueError("out: is the student's logits, whose classes are not contiguous")
    if out.numel() and out.data_ptr() == teacher.data_ptr():
        raise ValueError("out: is the teacher's logits, which the gradient reads")
    return out


def _settings(d: Settings) -> tuple[int, float, float, float, float]:
    """(divergence index, beta, T, soft weight, hard weight), checked; JSD at beta = 0 is
    forward KL and at beta = 1 reverse KL (the convention of the public functions)."""
    divergence = getattr(d, "divergence", None)
    if divergence not in DIVERGENCES:
        raise ValueError(f"d.divergence: expected one of {DIVERGENCES}; got {divergence!r}")
    beta = _validate.number_in("d.beta", getattr(d, "beta", None), 0.0, 1.0, what="in [0, 1]")
    temperature = _validate.temperature(getattr(d, "temperature", None))
    weights = [
        _validate.number_in(
            f"d.{name}", getattr(d, name, None), -math.inf, math.inf, what="(finite)"
        )
        for name in ("soft_weight", "hard_weight")
    ]
    for name, weight in zip(("soft_weight", "hard_weight"), weights, strict=True):
        if not math.isfinite(weight):
            raise ValueError(f"d.{name}: expected a finite number; got {weight!r}")
    index = DIVERGENCES.index(divergence)
    if index == 2 and beta == 0.0:
        index = 0
    elif index == 2 and beta == 1.0:
        index = 1
    return index, beta, temperature, weights[0], weights[1]


def _parameters(d: Settings, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, int]:
    index, beta, temperature, soft, hard = _settings(d)
    log_beta = math.log(beta) if beta > 0 else -math.inf
    log_rest = math.log1p(-beta) if beta < 1 else -math.inf
    values = (temperature, beta, soft, hard, log_beta, log_rest)
    return kernel_parameters(values, dtype, device), index


def _launch(
    zs: Tensor,
    zt: Tensor,
    target: Tensor,
    live: Tensor,
    d: Settings,
    row_scale: Tensor | None,
    out: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Phases 1 and 2 (and 3 into ``out`` where ``row_scale`` is given) over checked rows:
    (losses, statistics)."""
    rows, classes = zs.shape
    dtype = _compute_dtype(zs, zt)
    params, index = _parameters(d, dtype, zs.device)
    losses = torch.empty(rows, dtype=dtype, device=zs.device)
    stats = torch.empty((len(STATISTICS), rows), dtype=dtype, device=zs.device)
    if rows:
        _, _, temperature, soft, hard = _settings(d)
        block_n, block_v = _tiles(rows, classes)
        grad = out if out is not None else zs
        _rows_kernel[(triton.cdiv(rows, block_n),)](
            zs, zs.stride(0), zt, zt.stride(0), target, live.view(torch.uint8),
            row_scale if row_scale is not None else losses, params, stats, losses, grad,
            grad.stride(0), rows, classes,
            DIVERGENCE=index, SOFT=soft != 0, HARD=hard != 0,
            HARD_LSE=hard != 0 and temperature != 1.0, GRAD=row_scale is not None,
            COMPUTE=tl.float64 if dtype == torch.float64 else tl.float32,
            BLOCK_N=block_n, BLOCK_V=block_v,
        )  # fmt: skip
    return losses, stats


def _check_rows(
    student: object, teacher: object, target: object, live: object
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    zs, zt = _check_pair(student, teacher)
    rows = zs.shape[0]
    target = _check_row("target", target, rows, zs.device, torch.int64)
    live = _check_row("live", live, rows, zs.device, torch.bool)
    return zs, zt, target, live


def distillation_statistics(
    student: Tensor, teacher: Tensor, target: Tensor, live: Tensor, d: Settings
) -> tuple[Tensor, Tensor]:
    """Phases 1 and 2 over whole rows: each row's loss and its statistics.

    Args:
        student, teacher: (rows, V) logits, float32/float64/float16/bfloat16 (each its
            own), on a CUDA device (or the CPU under Triton's interpreter); the classes
            contiguous (else copied).
        target: (rows,) int64 class ids; a value outside [0, V) (-1) is never read and
            its logit counts as 0 in the hard term.
        live: (rows,) bool: the rows that count; the others give 0 and are not read.
        d: the settings (``Distillation``: divergence, beta, temperature, soft_weight,
            hard_weight), checked again here.

    Returns:
        (losses, stats): (rows,) soft_weight D + hard_weight CE, and the (8, rows)
        statistics (:data:`STATISTICS`), float32 (float64 where either model's logits
        are float64).
    """
    zs, zt, target, live = _check_rows(student, teacher, target, live)
    return _launch(zs, zt, target, live, d, None, None)


def distillation_gradient(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    live: Tensor,
    stats: Tensor,
    d: Settings,
    row_scale: Tensor,
    *,
    out: Tensor | None = None,
) -> Tensor:
    """Phase 3 over whole rows: d(sum_i c_i loss_i)/d student, in the student's dtype.

    Args:
        student, teacher, target, live, d: as :func:`distillation_statistics`.
        stats: the rows' statistics from :func:`distillation_statistics`.
        row_scale: c, (rows,) floating; rows whose c is 0, and rows not ``live``, get
            exact zeros without being read.
        out: (rows, V) of the student's dtype, rows contiguous and not overlapping, to
            write into; may be ``student`` itself. By default a new tensor.

    Returns:
        The gradient (``out`` when given).
    """
    zs, zt, target, live = _check_rows(student, teacher, target, live)
    rows, classes = zs.shape
    dtype = _compute_dtype(zs, zt)
    if (
        not isinstance(stats, Tensor)
        or tuple(stats.shape) != (len(STATISTICS), rows)
        or stats.dtype != dtype
    ):
        shape = tuple(stats.shape) if isinstance(stats, Tensor) else type(stats).__name__
        raise ValueError(
            f"stats: expected the ({len(STATISTICS)}, {rows}) {dtype} statistics of "
            f"distillation_statistics; got {shape}"
        )
    check_same_device("stats", stats, zs.device)
    stats = stats.contiguous()
    scale = _check_row("row_scale", row_scale, rows, zs.device, None)
    if out is None:
        out = torch.empty(zs.shape, dtype=zs.dtype, device=zs.device)
    out = _check_out(out, zs, student, zt)
    params, index = _parameters(d, dtype, zs.device)
    if rows and classes:
        _, _, _, soft, hard = _settings(d)
        block_n, block_v = _tiles(rows, classes)
        _gradient_kernel[(triton.cdiv(rows, block_n),)](
            zs, zs.stride(0), zt, zt.stride(0), target, live.view(torch.uint8), scale, params,
            stats, out, out.stride(0), rows, classes,
            DIVERGENCE=index, SOFT=soft != 0, HARD=hard != 0,
            COMPUTE=tl.float64 if dtype == torch.float64 else tl.float32,
            BLOCK_N=block_n, BLOCK_V=block_v,
        )  # fmt: skip
    return out


def distill_rows(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    live: Tensor,
    d: Settings,
    row_scale: Tensor | None = None,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The three phases over whole rows in one launch: each row's loss and, with
    ``row_scale``, d(sum_i c_i loss_i)/d student (the arguments of
    :func:`distillation_statistics` and :func:`distillation_gradient`; ``out`` may be
    ``student`` itself: the engine's chunk, its gradient written in place).

    Returns:
        (losses, gradient or ``None`` without ``row_scale``).
    """
    zs, zt, target, live = _check_rows(student, teacher, target, live)
    if row_scale is None:
        if out is not None:
            raise ValueError("out: is written only with a row_scale; got no row_scale")
        losses, _ = _launch(zs, zt, target, live, d, None, None)
        return losses, None
    scale = _check_row("row_scale", row_scale, zs.shape[0], zs.device, None)
    if out is None:
        out = torch.empty(zs.shape, dtype=zs.dtype, device=zs.device)
    out = _check_out(out, zs, student, zt)
    losses, _ = _launch(zs, zt, target, live, d, scale, out)
    return losses, out


# ----------------------------------------------------------------------------------------
# autograd


class TritonDistillation(torch.autograd.Function):
    """Per-row distillation losses of (rows, V) student and teacher logits on the kernels,
    and their gradient with respect to the student (the teacher gets none). ``target`` is
    int64 (-1 where there is none), ``live`` the rows that count (others 0, zero
    gradient); ``d`` the settings. A backward with ``create_graph=True`` runs the torch
    reference's gradient (differentiable), as
    :func:`crossentropy.torch.distillation_loss` does."""

    @staticmethod
    def forward(
        student: Tensor, teacher: Tensor, target: Tensor, live: Tensor, d: Settings
    ) -> tuple[Tensor, Tensor]:
        return _launch(student, teacher, target, live, d, None, None)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
        student, teacher, target, live, d = inputs
        ctx.save_for_backward(student, teacher, target, live, output[1])
        ctx.mark_non_differentiable(output[1])
        ctx.d = d
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_losses: Tensor | None, _: Any
    ) -> tuple[Tensor | None, None, None, None, None]:
        if grad_losses is None or not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        student, teacher, target, live, stats = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _differentiable(student, teacher, target, live, ctx.d, grad_losses)
        scale = grad_losses.to(stats.dtype).contiguous()
        grad = distillation_gradient(student, teacher, target, live, stats, ctx.d, scale)
        return grad, None, None, None, None


def _differentiable(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    live: Tensor,
    d: Settings,
    grad_losses: Tensor,
) -> tuple[Tensor, None, None, None, None]:
    """The gradient as torch operations (``impl="torch"``), differentiable: a backward with
    ``create_graph=True``. A live row without a target (-1: no hard term) is given class
    0, whose hard term then has weight 0."""
    with torch.enable_grad():
        ids = torch.where(live, target.clamp(min=0), -1)
        losses = torch_distillation.distillation_loss(
            student, teacher, ids, divergence=d.divergence, beta=d.beta,
            temperature=d.temperature, ignore_index=-1, soft_weight=d.soft_weight,
            hard_weight=d.hard_weight, reduction="none", impl="torch",
        )  # fmt: skip
        (grad,) = torch.autograd.grad(losses, student, grad_losses, create_graph=True)
    return grad.to(student.dtype), None, None, None, None


def distillation_losses(
    student: Tensor, teacher: Tensor, target: Tensor, live: Tensor, d: Settings
) -> Tensor:
    """Per-row losses soft_weight D + hard_weight CE of (rows, V) logits on the kernels,
    differentiable in ``student`` (never in ``teacher``); rows not ``live`` give 0 and a
    zero gradient.

    Args:
        student, teacher, target, live, d: as :func:`distillation_statistics` (the
            callers check the targets of the live rows against [0, V) where the hard
            weight is not 0: :func:`crossentropy.torch.distillation_loss`).

    Returns:
        (rows,) float32 losses (float64 where either model's logits are float64).
    """
    zs, zt, target, live = _check_rows(student, teacher, target, live)
    _settings(d)
    losses, _ = TritonDistillation.apply(zs, zt.detach(), target, live, d)  # type: ignore[no-untyped-call]
    return losses
