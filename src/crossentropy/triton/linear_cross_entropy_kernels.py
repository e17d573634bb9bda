# mypy: disable-error-code="untyped-decorator,no-untyped-def,no-any-return"
r"""Linear + cross entropy as Triton kernels: the logits exist only as on-chip tiles.

With z = h W^T + b (h: (N, D) tokens, W: (V, D)), the loss of
:mod:`crossentropy.triton.cross_entropy_kernels` (class indices, weights, ``ignore_index``,
smoothing, z-loss, soft cap), and G = d loss / d z (its gradient, formed tile by tile):

.. code-block:: text

    forward   for each (token block, vocabulary split):       grid N/BN x splits
                  for each vocabulary block in the split:
                      z_tile = h_blk @ W_blk^T + b_blk         (BN x BV, on chip, K-loop over D)
                      online log-sum-exp of z_tile             (m, s, t, mass)
              per token block: merge the splits' states        -> loss, lse, r per token
    backward  for each (token block, vocabulary block):        grid N/BN x V/BV
                  z_tile recomputed, G_tile = factor (r p - a - (1-eps) w_y onehot) dz/dx
                  dh[blk]  += G_tile @ W_blk                   (float32 atomics)
                  dW[blk]  += G_tile^T @ h_blk                 (float32 atomics)
                  db[blk]  += column sums of G_tile

Derivation: d loss / d h = G W, d loss / d W = G^T h, d loss / d b = sum over tokens of G,
with G as in :mod:`crossentropy.triton.cross_entropy_kernels` (r = A + 2 zl v lse).

Costs: the forward is one matrix product's flops (2 N V D), the backward three (the tile
recomputed, then dh and dW), so four in all against the three of an unfused computation
(4/3 of the floor before any overhead): the price of never storing a logit. Memory beyond
the inputs and their gradients: per token lse, r and loss, and the split states, plus
float32 accumulators for dh and dW when the input is float16/bfloat16 (the gradients are
accumulated in float32 over the vocabulary and token blocks and rounded once).

``skip_small_gradients=True`` (off by default: exact) skips, in the backward, every tile
whose gradient entries (of each token's own loss, before the reduction's scale) are all
below the dtype's resolution (``torch.finfo(dtype).eps / 32``: 2^-12 in bfloat16, 2^-15
in float16, 2^-28 in float32): their two matrix products and atomics are not done. With a
large vocabulary most tiles of a trained model's softmax are such tiles. It is an
approximation: the skipped entries are dropped from dh, dW and db (label smoothing's
uniform -eps/C part included, when it is that small).

No host synchronisation (device-side scalars, no value checks; a class index out of range
gives its token a NaN loss): usable under CUDA graphs and ``torch.compile(fullgraph=True)``
(the kernels are ``torch.library`` custom ops).

:func:`reference` is the same computation in plain PyTorch, the readable form.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import _validate
from ._tiles import (
    check_device,
    check_first_order,
    check_same_device,
    check_tensors,
    compute_dtype,
    device_scale,
    finish,
    interpreted,
    kernel_parameters,
    merge,
    online_update,
    row_setup,
)
from ._tiles import softcap as _softcap
from ._tiles import softcap_slope as _softcap_slope

__all__ = [
    "BLOCKS_GPU",
    "BLOCKS_INTERPRETER",
    "TritonLinearCrossEntropy",
    "linear_cross_entropy",
    "reference",
]

BLOCKS_GPU = (64, 128, 64)
"""(tokens, vocabulary, hidden) of a tile on a GPU."""

BLOCKS_INTERPRETER = (16, 16, 16)
"""The same under the interpreter: the smallest tiles ``tl.dot`` takes, so that the tests'
small shapes cover several blocks, ragged ones included."""


@triton.jit
def _logits_tile(h_ptr, h_stride, w_ptr, w_stride, b_ptr, params_ptr, rows64, row_ok, cols,
                 col_ok, hidden, HAS_BIAS: tl.constexpr, HAS_CAP: tl.constexpr,
                 COMPUTE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                 BLOCK_N: tl.constexpr,
                 BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """x = h[rows] @ W[cols]^T + b[cols] accumulated in COMPUTE over D, and z = softcap(x)."""
    acc = tl.zeros((BLOCK_N, BLOCK_V), COMPUTE)
    cols64 = cols.to(tl.int64)
    for k in range(0, hidden, BLOCK_D):
        kk = k + tl.arange(0, BLOCK_D)
        k_ok = kk < hidden
        h = tl.load(h_ptr + rows64[:, None] * h_stride + kk[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)  # fmt: skip
        w = tl.load(w_ptr + cols64[:, None] * w_stride + kk[None, :],
                    mask=col_ok[:, None] & k_ok[None, :], other=0.0)  # fmt: skip
        if UPCAST:
            h = h.to(COMPUTE)
            w = w.to(COMPUTE)
        acc = tl.dot(h, tl.trans(w), acc, input_precision=PRECISION, out_dtype=COMPUTE)
    if HAS_BIAS:
        acc += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(COMPUTE)[None, :]
    return acc, _softcap(acc, tl.load(params_ptr + 2), HAS_CAP)


@triton.jit
def _smoothing(weight_ptr, params_ptr, cols, col_ok, inside, HAS_WEIGHT: tl.constexpr,
               SMOOTH: tl.constexpr, COMPUTE: tl.constexpr, BLOCK_N: tl.constexpr,
               BLOCK_V: tl.constexpr):  # fmt: skip
    """The label masses a_j = (eps/C) w_j of a tile (0 without smoothing)."""
    if SMOOTH:
        a = tl.full((BLOCK_N, BLOCK_V), 1.0, COMPUTE) * tl.load(params_ptr + 3)
        if HAS_WEIGHT:
            a = a * tl.load(weight_ptr + cols, mask=col_ok, other=0.0).to(COMPUTE)[None, :]
    else:
        a = tl.zeros((BLOCK_N, BLOCK_V), COMPUTE)
    return tl.where(inside, a, 0.0)


@triton.jit
def _forward_kernel(h_ptr, h_stride, w_ptr, w_stride, b_ptr, target_ptr, weight_ptr,
                    params_ptr, state_ptr, n_rows, vocabulary, hidden, per_split, ignore_index,
                    HAS_BIAS: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr,
                    HAS_CAP: tl.constexpr, COMPUTE: tl.constexpr, PRECISION: tl.constexpr,
                    UPCAST: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
                    BLOCK_D: tl.constexpr):  # fmt: skip
    """The streamed state (m, s, t, mass, z_y) of a token block over one vocabulary split,
    into state[5, splits, N]."""
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    y, live, _, _, _ = row_setup(
        target_ptr, weight_ptr, params_ptr, rows, row_ok, vocabulary, ignore_index,
        False, HAS_WEIGHT, SMOOTH, COMPUTE,
    )  # fmt: skip
    m = tl.full((BLOCK_N,), -float("inf"), COMPUTE)
    s = tl.zeros((BLOCK_N,), COMPUTE)
    t = tl.zeros((BLOCK_N,), COMPUTE)
    mass = tl.zeros((BLOCK_N,), COMPUTE)
    z_y = tl.zeros((BLOCK_N,), COMPUTE)
    first = split * per_split
    last = tl.minimum(first + per_split, vocabulary)
    for start in range(first, last, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        col_ok = cols < last
        _, z = _logits_tile(
            h_ptr, h_stride, w_ptr, w_stride, b_ptr, params_ptr, rows64, row_ok, cols, col_ok,
            hidden, HAS_BIAS, HAS_CAP, COMPUTE, PRECISION, UPCAST, BLOCK_N, BLOCK_V, BLOCK_D,
        )  # fmt: skip
        inside = live[:, None] & col_ok[None, :]
        a = _smoothing(weight_ptr, params_ptr, cols, col_ok, inside, HAS_WEIGHT, SMOOTH,
                       COMPUTE, BLOCK_N, BLOCK_V)  # fmt: skip
        m, s, t, mass = online_update(m, s, t, mass, z, a, inside)
        z_y += tl.sum(tl.where(inside & (cols[None, :] == y[:, None]), z, 0.0), axis=1)
    base = state_ptr + split * n_rows + rows64
    step = n_splits * n_rows
    tl.store(base, m, mask=row_ok)
    tl.store(base + step, s, mask=row_ok)
    tl.store(base + 2 * step, t, mask=row_ok)
    tl.store(base + 3 * step, mass, mask=row_ok)
    tl.store(base + 4 * step, z_y, mask=row_ok)


@triton.jit
def _merge_kernel(state_ptr, target_ptr, weight_ptr, params_ptr, loss_ptr, lse_ptr, coef_ptr,
                  n_rows, n_splits, vocabulary, ignore_index, HAS_WEIGHT: tl.constexpr,
                  SMOOTH: tl.constexpr, HAS_Z: tl.constexpr, COMPUTE: tl.constexpr,
                  BLOCK_N: tl.constexpr):  # fmt: skip
    """Each token's loss, lse and r from the states of its vocabulary splits."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    _, live, bad, coef_y, v = row_setup(
        target_ptr, weight_ptr, params_ptr, rows, row_ok, vocabulary, ignore_index,
        False, HAS_WEIGHT, SMOOTH, COMPUTE,
    )  # fmt: skip
    m = tl.full((BLOCK_N,), -float("inf"), COMPUTE)
    s = tl.zeros((BLOCK_N,), COMPUTE)
    t = tl.zeros((BLOCK_N,), COMPUTE)
    mass = tl.zeros((BLOCK_N,), COMPUTE)
    z_y = tl.zeros((BLOCK_N,), COMPUTE)
    step = n_splits * n_rows
    for split in range(0, n_splits):
        base = state_ptr + split * n_rows + rows64
        m_i = tl.load(base, mask=row_ok, other=-float("inf"))
        s_i = tl.load(base + step, mask=row_ok, other=0.0)
        t_i = tl.load(base + 2 * step, mask=row_ok, other=0.0)
        mass_i = tl.load(base + 3 * step, mask=row_ok, other=0.0)
        z_y += tl.load(base + 4 * step, mask=row_ok, other=0.0)
        m, s, t, mass = merge(m, s, t, mass, m_i, s_i, t_i, mass_i)
    loss, lse, r = finish(m, s, t, mass, z_y, coef_y, v, live, bad, params_ptr, HAS_Z)
    tl.store(loss_ptr + rows, loss, mask=row_ok)
    tl.store(lse_ptr + rows, lse, mask=row_ok)
    tl.store(coef_ptr + rows, r, mask=row_ok)


@triton.jit
def _backward_kernel(h_ptr, h_stride, w_ptr, w_stride, b_ptr, target_ptr, weight_ptr,
                     params_ptr, lse_ptr, coef_ptr, factor_ptr, factor_stride,
                     dh_ptr, dw_ptr, db_ptr, n_rows, vocabulary, hidden, ignore_index,
                     HAS_BIAS: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr,
                     HAS_CAP: tl.constexpr, WANT_INPUT: tl.constexpr,
                     WANT_WEIGHT: tl.constexpr, WANT_BIAS: tl.constexpr, SKIP: tl.constexpr,
                     COMPUTE: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
                     GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr,
                     BLOCK_D: tl.constexpr):  # fmt: skip
    """One (token block, vocabulary block) tile: G recomputed, then its share of dh, dW, db
    added with float32 (float64) atomics."""
    # consecutive programs take GROUP token blocks along one vocabulary block, then the
    # next: the W and h slices they share stay in L2
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(n_rows, BLOCK_N)
    v_blocks = tl.cdiv(vocabulary, BLOCK_V)
    per_group = GROUP * v_blocks
    first_n = (pid // per_group) * GROUP
    group_size = tl.minimum(n_blocks - first_n, GROUP)
    pid_n = first_n + (pid % per_group) % group_size
    pid_v = (pid % per_group) // group_size
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    rows64 = rows.to(tl.int64)
    cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    col_ok = cols < vocabulary
    cols64 = cols.to(tl.int64)
    y, live, _, coef_y, _ = row_setup(
        target_ptr, weight_ptr, params_ptr, rows, row_ok, vocabulary, ignore_index,
        False, HAS_WEIGHT, SMOOTH, COMPUTE,
    )  # fmt: skip
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    r = tl.load(coef_ptr + rows, mask=row_ok, other=0.0)
    factor = tl.load(factor_ptr + rows64 * factor_stride, mask=row_ok, other=0.0).to(COMPUTE)
    x, z = _logits_tile(
        h_ptr, h_stride, w_ptr, w_stride, b_ptr, params_ptr, rows64, row_ok, cols, col_ok,
        hidden, HAS_BIAS, HAS_CAP, COMPUTE, PRECISION, UPCAST, BLOCK_N, BLOCK_V, BLOCK_D,
    )  # fmt: skip
    inside = live[:, None] & col_ok[None, :]
    a = _smoothing(weight_ptr, params_ptr, cols, col_ok, inside, HAS_WEIGHT, SMOOTH, COMPUTE,
                   BLOCK_N, BLOCK_V)  # fmt: skip
    g = r[:, None] * tl.exp(z - lse[:, None]) - a
    g -= tl.where(cols[None, :] == y[:, None], coef_y[:, None], 0.0)
    if HAS_CAP:
        g = g * _softcap_slope(x, tl.load(params_ptr + 2), HAS_CAP)
    g = tl.where(inside, g, 0.0)
    keep = True
    if SKIP:  # every entry of each token's own gradient below the dtype's resolution
        keep = tl.max(tl.max(tl.abs(g), axis=1), axis=0) >= tl.load(params_ptr + 4)
    if keep:
        g = g * factor[:, None]
        if WANT_BIAS:
            tl.atomic_add(db_ptr + cols, tl.sum(g, axis=0), mask=col_ok)
        # the products take G in the input's dtype (tensor cores), accumulate in COMPUTE
        g_in = g.to(h_ptr.dtype.element_ty)
        if UPCAST:
            g_in = g_in.to(COMPUTE)
        for k in range(0, hidden, BLOCK_D):
            kk = k + tl.arange(0, BLOCK_D)
            k_ok = kk < hidden
            if WANT_INPUT:
                w = tl.load(w_ptr + cols64[:, None] * w_stride + kk[None, :],
                            mask=col_ok[:, None] & k_ok[None, :], other=0.0)  # fmt: skip
                if UPCAST:
                    w = w.to(COMPUTE)
                dh = tl.dot(g_in, w, input_precision=PRECISION, out_dtype=COMPUTE)
                tl.atomic_add(dh_ptr + rows64[:, None] * hidden + kk[None, :], dh,
                              mask=row_ok[:, None] & k_ok[None, :])  # fmt: skip
            if WANT_WEIGHT:
                h = tl.load(h_ptr + rows64[:, None] * h_stride + kk[None, :],
                            mask=row_ok[:, None] & k_ok[None, :], other=0.0)  # fmt: skip
                if UPCAST:
                    h = h.to(COMPUTE)
                dw = tl.dot(tl.trans(g_in), h, input_precision=PRECISION, out_dtype=COMPUTE)
                tl.atomic_add(dw_ptr + cols64[:, None] * hidden + kk[None, :], dw,
                              mask=col_ok[:, None] & k_ok[None, :])  # fmt: skip


# ----------------------------------------------------------------------------------------
# launchers, as torch.library custom ops


def _blocks(input: Tensor, blocks: list[int]) -> tuple[int, int, int]:
    if blocks:
        return blocks[0], blocks[1], blocks[2]
    return BLOCKS_INTERPRETER if input.device.type == "cpu" else BLOCKS_GPU


def _constants(input: Tensor, weight: Tensor | None, flags: list[bool]) -> dict[str, Any]:
    has_bias, smooth, has_cap = flags[:3]
    double = input.dtype == torch.float64
    # Triton's interpreter multiplies bfloat16 tiles wrongly (NumPy has no bfloat16): there
    # the operands, already rounded to bfloat16, are multiplied in float32 instead
    upcast = input.dtype == torch.bfloat16 and interpreted(_forward_kernel)
    return {
        "HAS_BIAS": has_bias,
        "HAS_WEIGHT": weight is not None,
        "SMOOTH": smooth,
        "HAS_CAP": has_cap,
        "COMPUTE": tl.float64 if double else tl.float32,
        # float32 products in full precision (as torch's matmul by default), not TF32
        "PRECISION": "ieee" if upcast or input.dtype in (torch.float32, torch.float64) else "tf32",
        "UPCAST": upcast,
    }


def _default_splits(input: Tensor, token_blocks: int, vocabulary_blocks: int) -> int:
    """Vocabulary splits of the forward: enough programs for two waves over the GPU's
    multiprocessors (2 under the interpreter, so that the merge is exercised)."""
    if input.device.type != "cuda":
        return min(2, vocabulary_blocks)
    processors = torch.cuda.get_device_properties(input.device).multi_processor_count
    return max(1, min(vocabulary_blocks, -(-2 * processors // max(token_blocks, 1))))


@torch.library.custom_op("crossentropy::triton_linear_cross_entropy_forward", mutates_args=())
def _forward_op(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    params: Tensor,
    ignore_index: int,
    flags: list[bool],
    blocks: list[int],
    splits: int,
) -> tuple[Tensor, Tensor, Tensor]:
    rows, hidden = input.shape
    vocabulary = linear_weight.shape[0]
    block_n, block_v, block_d = _blocks(input, blocks)
    out = [torch.empty(rows, dtype=params.dtype, device=input.device) for _ in range(3)]
    if rows == 0:
        return out[0], out[1], out[2]
    token_blocks = triton.cdiv(rows, block_n)
    vocabulary_blocks = triton.cdiv(vocabulary, block_v)
    constants = _constants(input, weight, flags)
    if vocabulary_blocks == 0:  # no classes: no split to stream (every lse is -inf)
        state = torch.empty(5, 0, rows, dtype=params.dtype, device=input.device)
        splits = 0
    else:
        splits = splits or _default_splits(input, token_blocks, vocabulary_blocks)
        splits = max(1, min(splits, vocabulary_blocks))
        per_split = triton.cdiv(vocabulary_blocks, splits) * block_v
        splits = triton.cdiv(vocabulary, per_split)
        state = torch.empty(5, splits, rows, dtype=params.dtype, device=input.device)
        _forward_kernel[(token_blocks, splits)](
            input, input.stride(0), linear_weight, linear_weight.stride(0), linear_bias, target,
            weight, params, state, rows, vocabulary, hidden, per_split, ignore_index,
            **constants, BLOCK_N=block_n, BLOCK_V=block_v, BLOCK_D=block_d,
            **({} if interpreted(_forward_kernel) else {"num_warps": 8}),
        )  # fmt: skip
    merge_rows = 128
    _merge_kernel[(triton.cdiv(rows, merge_rows),)](
        state, target, weight, params, *out, rows, splits, vocabulary, ignore_index,
        HAS_WEIGHT=weight is not None, SMOOTH=flags[1], HAS_Z=flags[3],
        COMPUTE=constants["COMPUTE"], BLOCK_N=merge_rows,
    )  # fmt: skip
    return out[0], out[1], out[2]


@_forward_op.register_fake
def _(input, linear_weight, linear_bias, target, weight, params, *options):  # type: ignore[no-untyped-def]
    return tuple(input.new_empty(input.shape[0], dtype=params.dtype) for _ in range(3))


@torch.library.custom_op("crossentropy::triton_linear_cross_entropy_backward", mutates_args=())
def _backward_op(
    input: Tensor,
    linear_weight: Tensor,
    linear_bias: Tensor | None,
    target: Tensor,
    weight: Tensor | None,
    params: Tensor,
    lse: Tensor,
    coef: Tensor,
    factor: Tensor,
    ignore_index: int,
    flags: list[bool],
    wants: list[bool],
    blocks: list[int],
) -> tuple[Tensor, Tensor, Tensor]:
    """dh, dW, db in the compute dtype (empty where not wanted)."""
    rows, hidden = input.shape
    vocabulary = linear_weight.shape[0]
    want_input, want_weight, want_bias = wants
    accumulate = params.dtype
    device = input.device

    def zeros(shape: tuple[int, ...], wanted: bool) -> Tensor:
        return torch.zeros(shape if wanted else (0,), dtype=accumulate, device=device)

    dh = zeros((rows, hidden), want_input)
    dw = zeros((vocabulary, hidden), want_weight)
    db = zeros((vocabulary,), want_bias)
    if rows == 0 or vocabulary == 0 or not any(wants):
        return dh, dw, db
    block_n, block_v, block_d = _blocks(input, blocks)
    grid = (triton.cdiv(rows, block_n) * triton.cdiv(vocabulary, block_v),)
    _backward_kernel[grid](
        input, input.stride(0), linear_weight, linear_weight.stride(0), linear_bias, target,
        weight, params, lse, coef, factor, 0 if factor.numel() == 1 else 1, dh, dw, db,
        rows, vocabulary, hidden, ignore_index,
        **_constants(input, weight, flags), WANT_INPUT=want_input, WANT_WEIGHT=want_weight,
        WANT_BIAS=want_bias, SKIP=flags[4], GROUP=8,
        BLOCK_N=block_n, BLOCK_V=block_v, BLOCK_D=block_d,
        **({} if interpreted(_backward_kernel) else {"num_warps": 8}),
    )  # fmt: skip
    return dh, dw, db


@_backward_op.register_fake
def _(input, linear_weight, linear_bias, target, weight, params, *options):  # type: ignore[no-untyped-def]
    wants = options[5]
    rows, hidden = input.shape
    vocabulary = linear_weight.shape[0]

    def empty(shape: tuple[int, ...], wanted: bool) -> Tensor:
        return input.new_empty(shape if wanted else (0,), dtype=params.dtype)

    return (
        empty((rows, hidden), wants[0]),
        empty((vocabulary, hidden), wants[1]),
        empty((vocabulary,), wants[2]),
    )


class TritonLinearCrossEntropy(torch.autograd.Function):
    """Forward kernels for the loss (and each token's lse and r); the backward kernel
    recomputes the logit tiles and accumulates the gradients, scaled by the incoming
    gradient (any incoming gradient: ``reduction="none"`` included)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        input: Tensor,
        linear_weight: Tensor,
        linear_bias: Tensor | None,
        target: Tensor,
        weight: Tensor | None,
        params: Tensor,
        ignore_index: int,
        flags: list[bool],
        reduction: str,
        blocks: list[int],
        splits: int,
    ) -> tuple[Tensor, Tensor]:
        losses, lse, coef = _forward_op(
            input, linear_weight, linear_bias, target, weight, params, ignore_index, flags,
            blocks, splits,
        )  # fmt: skip
        scale = device_scale(target, weight, ignore_index, reduction, False, params.dtype)
        ctx.save_for_backward(input, linear_weight, linear_bias, target, weight, params, lse,
                              coef, scale)  # fmt: skip
        ctx.options = (ignore_index, flags, blocks)
        ctx.mark_non_differentiable(lse)
        if reduction == "none":
            loss = losses.to(input.dtype)
        else:
            loss = (losses.sum() * scale).to(input.dtype)
        return loss, lse.float()

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, _grad_lse: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        check_first_order("linear_cross_entropy")
        input, linear_weight, linear_bias, target, weight, params, lse, coef, scale = (
            ctx.saved_tensors
        )
        ignore_index, flags, blocks = ctx.options
        wants = [bool(ctx.needs_input_grad[i]) for i in range(3)]
        factor = (grad_loss.to(params.dtype) * scale).reshape(-1)
        dh, dw, db = _backward_op(
            input, linear_weight, linear_bias, target, weight, params, lse, coef, factor,
            ignore_index, flags, wants, blocks,
        )  # fmt: skip
        return (
            dh.to(input.dtype) if wants[0] else None,
            dw.to(linear_weight.dtype) if wants[1] else None,
            db.to(linear_bias.dtype) if wants[2] else None,
            *([None] * 8),
        )


def linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    return_lse: bool = False,
    skip_small_gradients: bool = False,
    block_sizes: tuple[int, int, int] | None = None,
    splits: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Cross entropy of ``input @ linear_weight.T + linear_bias`` on the Triton kernels,
    the logits never written to memory.

    The loss and gradients of ``cross_entropy(linear(input, linear_weight, linear_bias),
    target, ...)`` with class-index targets; :func:`crossentropy.torch.linear_cross_entropy`
    with ``impl="triton"`` calls this after flattening the leading dimensions.

    Args:
        input: (N, D) float32, float64, float16 or bfloat16 on a CUDA device (CPU under the
            interpreter).
        linear_weight: (V, D), the input's dtype.
        target: (N,) class indices in [0, V) or ``ignore_index``.
        linear_bias: (V,) or ``None``.
        weight: (V,) class weights, or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        ignore_index: the target value that marks a token to skip.
        label_smoothing: epsilon in [0, 1].
        z_loss: coefficient of logsumexp(z)^2, >= 0.
        softcap: c > 0 to use c tanh(z / c) as the logits, or ``None``.
        return_lse: also return each token's logsumexp (float32, 0 for skipped tokens).
        skip_small_gradients: skip the backward's tiles whose gradient is below the
            dtype's resolution (see the module docstring); ``False`` is exact.
        block_sizes: (tokens, vocabulary, hidden) of a tile, powers of two >= 16; ``None``
            picks them.
        splits: vocabulary splits of the forward; ``None`` picks them.

    Returns:
        The loss, or ``(loss, lse)`` with ``return_lse=True``.

    Example (CUDA tensors; these CPU ones run because the test suite sets
    ``TRITON_INTERPRET=1``):
        >>> import torch
        >>> from crossentropy.triton import linear_cross_entropy
        >>> g = torch.Generator().manual_seed(0)
        >>> h = torch.randn(6, 4, generator=g, dtype=torch.float64)
        >>> W = torch.randn(10, 4, generator=g, dtype=torch.float64)
        >>> y = torch.tensor([1, 2, 3, -100, 9, 0])
        >>> ours = linear_cross_entropy(h, W, y)
        >>> unfused = torch.nn.functional.cross_entropy(h @ W.T, y)
        >>> print(f"{ours.item():.6f} {unfused.item():.6f}")
        3.771035 3.771035
    """
    _validate.reduction(reduction)
    eps = _validate.label_smoothing(label_smoothing)
    z_coef = _validate.z_loss(z_loss)
    cap = _validate.softcap(softcap)
    ignore_index = _validate.ignore_index(ignore_index)
    check_tensors(target=target, weight=weight)
    if linear_bias is not None:
        check_tensors(linear_bias=linear_bias)
    for name, value in (("return_lse", return_lse), ("skip_small_gradients", skip_small_gradients)):
        if not isinstance(value, bool):
            raise TypeError(f"{name}: expected True or False; got {value!r}")
    if not isinstance(input, Tensor) or input.ndim != 2:
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        raise ValueError(f"input: expected a 2-D (tokens, hidden) tensor; got {shape}")
    if input.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"input: expected float32, float64, float16 or bfloat16; got {input.dtype}")
    if (
        not isinstance(linear_weight, Tensor)
        or linear_weight.ndim != 2
        or (linear_weight.shape[1] != input.shape[1])
    ):
        shape = tuple(linear_weight.shape) if isinstance(linear_weight, Tensor) else None
        raise ValueError(f"linear_weight: expected (V, {input.shape[1]}); got {shape}")
    if linear_weight.dtype != input.dtype:
        raise TypeError(
            f"linear_weight: expected the input's dtype {input.dtype}; got {linear_weight.dtype}"
        )
    vocabulary = linear_weight.shape[0]
    if linear_bias is not None and tuple(linear_bias.shape) != (vocabulary,):
        raise ValueError(
            f"linear_bias: expected shape ({vocabulary},); got {tuple(linear_bias.shape)}"
        )
    check_device("input", input, _forward_kernel)
    others = {"linear_weight": linear_weight, "linear_bias": linear_bias, "target": target}
    for name, tensor in {**others, "weight": weight}.items():
        check_same_device(name, tensor, input.device)
    _validate.label_shape((input.shape[0], vocabulary), 1, target)
    # the kernels compare class indices in int64, which holds every integer dtype but uint64
    if not _validate.holds_in_int64(target):
        raise TypeError(
            f"target: expected integer class indices (int64, or a narrower integer dtype); "
            f"got dtype {target.dtype}"
        )
    if weight is not None:
        _validate.class_weight(weight, vocabulary)
    if block_sizes is not None and (
        not isinstance(block_sizes, tuple | list)
        or len(block_sizes) != 3
        or any(
            not isinstance(b, int) or isinstance(b, bool) or not 16 <= b <= 1024 or b & (b - 1)
            for b in block_sizes
        )
    ):
        raise ValueError(
            f"block_sizes: expected three powers of two in [16, 1024], or None; got {block_sizes!r}"
        )
    if splits is not None and (
        not isinstance(splits, int) or isinstance(splits, bool) or splits < 1
    ):
        raise ValueError(f"splits: expected a positive integer, or None; got {splits!r}")
    compute = compute_dtype(input.dtype)
    resolution = torch.finfo(input.dtype).eps / 32
    smooth = eps / vocabulary if vocabulary else 0.0  # eps/C; no classes, nothing to smooth
    values = (eps, z_coef, 1.0 if cap is None else cap, smooth, resolution)
    params = kernel_parameters(values, compute, input.device)
    flags = [linear_bias is not None, eps > 0, cap is not None, z_coef > 0, skip_small_gradients]
    loss, lse = TritonLinearCrossEntropy.apply(  # type: ignore[no-untyped-call]
        input if input.stride(1) == 1 else input.contiguous(),
        linear_weight if linear_weight.stride(1) == 1 else linear_weight.contiguous(),
        None if linear_bias is None else linear_bias.contiguous(),
        target.to(torch.int64),
        None if weight is None else weight.contiguous(),
        params,
        int(ignore_index),
        flags,
        reduction,
        list(block_sizes or ()),
        splits or 0,
    )
    if return_lse:
        return loss, lse
    result: Tensor = loss
    return result


def reference(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    **options: Any,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Per-token losses and the gradients of their sum (dh, dW, db), as the kernels compute
    them but with whole logits: z = h W^T + b, G from
    :func:`crossentropy.triton.cross_entropy_kernels.reference`, dh = G W, dW = G^T h and
    db = sum G."""
    from .cross_entropy_kernels import reference as cross_entropy_reference

    x = input @ linear_weight.T
    if linear_bias is not None:
        x = x + linear_bias
    losses, g = cross_entropy_reference(x, target, **options)
    return losses, g @ linear_weight, g.T @ input, None if linear_bias is None else g.sum(0)
