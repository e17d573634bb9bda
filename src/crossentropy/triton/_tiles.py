# mypy: disable-error-code="untyped-decorator,no-untyped-def,no-any-return"
"""What the Triton kernels share: the per-tile math as ``@triton.jit`` helpers, and the
host-side checks (is the kernel interpreted, may it run on this tensor's device) and
values (the kernels' float scalars on the device, the reduction's scale).

The tile helpers work on (rows, columns) float tiles in the compute dtype:

- :func:`softcap` and :func:`softcap_slope`: z = c tanh(x / c) and dz/dx = 1 - tanh^2, from
  one exponential, accurate near 0 (a series) and at large |x| (no 1 - 1 cancellation);
- :func:`online_update`: one step of the streaming log-sum-exp over column blocks, with the
  running sum of a_j (z_j - m) kept relative to the running max m.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from .. import losses

__all__ = [
    "check_device",
    "check_first_order",
    "check_inplace",
    "check_same_device",
    "check_tensors",
    "compute_dtype",
    "device_scale",
    "interpreted",
    "kernel_parameters",
    "next_power_of_2",
]


@triton.jit
def _tanh_and_slope(u):
    """tanh(u) and 1 - tanh(u)^2 for a float tile u.

    With t = exp(-2|u|) in (0, 1]: tanh|u| = (1 - t) / (1 + t), and 1 - tanh^2 = 4t / (1 + t)^2
    (no cancellation at large |u|). Below |u| = 1/8, 1 - t cancels, so tanh comes from its
    Taylor series to u^9 instead (the next term is below 1e-12 relative there).
    """
    a = tl.abs(u)
    t = tl.exp(-2.0 * a)
    big = (1.0 - t) / (1.0 + t)
    u2 = u * u
    small = a * (1.0 + u2 * (-1.0 / 3 + u2 * (2.0 / 15 + u2 * (-17.0 / 315 + u2 * (62.0 / 2835)))))
    magnitude = tl.where(a < 0.125, small, big)
    tanh = tl.where(u < 0, -magnitude, magnitude)
    slope = 4.0 * t / ((1.0 + t) * (1.0 + t))
    return tanh, slope


@triton.jit
def softcap(x, cap, HAS_CAP: tl.constexpr):
    """z = cap tanh(x / cap), or x itself without a cap."""
    if HAS_CAP:
        tanh, _ = _tanh_and_slope(x / cap)
        return cap * tanh
    return x


@triton.jit
def softcap_slope(x, cap, HAS_CAP: tl.constexpr):
    """dz/dx = 1 - tanh(x / cap)^2 (1 without a cap)."""
    if HAS_CAP:
        _, slope = _tanh_and_slope(x / cap)
        return slope
    return tl.full(x.shape, 1.0, x.dtype)


@triton.jit
def online_update(m, s, t, mass, z, a, inside):
    """Fold one (rows, columns) tile z into the streaming log-sum-exp of each row.

    State per row: m the running max, s = sum_j exp(z_j - m), t = sum_j a_j (z_j - m) and
    mass = sum_j a_j over the label masses a_j seen so far (the smoothing or soft-label part
    of the loss). When the max grows from m to m', s is rescaled by exp(m - m') and t shifted
    by -(m' - m) mass. Columns outside the tile (``inside`` False) count as z = -inf, a = 0.
    Rows whose logits are all -inf keep m = -inf and s = 0 (their log-sum-exp is -inf).
    Returns the new (m, s, t, mass).
    """
    z = tl.where(inside, z, -float("inf"))
    a = tl.where(inside, a, 0.0)
    new_m = tl.maximum(m, tl.max(z, axis=1))
    shift = tl.where(new_m == -float("inf"), 0.0, new_m)
    s = s * tl.exp(m - shift) + tl.sum(tl.exp(z - shift[:, None]), axis=1)
    # 0 * (-inf) is 0 here: a zero mass on a -inf logit adds nothing (0 log 0 = 0)
    term = tl.where(a == 0, 0.0, a * (z - shift[:, None]))
    grown = tl.where(m == -float("inf"), 0.0, shift - m)
    t = tl.where(mass == 0, 0.0, t - grown * mass) + tl.sum(term, axis=1)
    return new_m, s, t, mass + tl.sum(a, axis=1)


@triton.jit
def row_setup(target_ptr, weight_ptr, params_ptr, rows, row_ok, classes, ignore_index,
               SOFT: tl.constexpr, HAS_WEIGHT: tl.constexpr, SMOOTH: tl.constexpr,
               COMPUTE: tl.constexpr):  # fmt: skip
    """Per row: the target (0 where none), whether the row contributes (``live``), whether
    its class index is out of range (``bad``), (1-eps) w_y and the z-loss weight v."""
    eps = tl.load(params_ptr + 0)
    if SOFT:
        y = tl.zeros(rows.shape, tl.int64)
        live = row_ok
        bad = rows < 0
        coef_y = tl.zeros(rows.shape, COMPUTE)
        v = tl.full(rows.shape, 1.0, COMPUTE)
    else:
        y = tl.load(target_ptr + rows, mask=row_ok, other=ignore_index).to(tl.int64)
        counted = row_ok & (y != ignore_index)
        valid = (y >= 0) & (y < classes)
        bad = counted & (valid == 0)
        # y indexes the logits and the class weights only where it is a class: a bad row
        # reads neither (with no classes at all there is no column 0 to fall back on)
        y = tl.where(counted & valid, y, 0)
        if HAS_WEIGHT:
            w_y = tl.load(weight_ptr + y, mask=counted & valid, other=0.0).to(COMPUTE)
        else:
            w_y = tl.where(counted & valid, 1.0, 0.0).to(COMPUTE)
        # without smoothing a zero-weight target adds nothing: skip its row entirely; a bad
        # row stays live, so that its loss and gradient are NaN
        live = (counted if SMOOTH else counted & (w_y != 0)) | bad
        coef_y = (1.0 - eps) * w_y
        v = w_y
    return y, live, bad, coef_y, v


@triton.jit
def merge(m, s, t, mass, m_i, s_i, t_i, mass_i):
    """Fold one partial state (m_i, s_i, t_i, mass_i) of the same rows, over other columns,
    into (m, s, t, mass): the same rescaling as :func:`online_update`, for two states."""
    new_m = tl.maximum(m, m_i)
    shift = tl.where(new_m == -float("inf"), 0.0, new_m)
    old = tl.where(m == -float("inf"), 0.0, m)
    other = tl.where(m_i == -float("inf"), 0.0, m_i)
    s = s * tl.exp(m - shift) + s_i * tl.exp(m_i - shift)
    t = tl.where(mass == 0, t, t - mass * (shift - old))
    t += tl.where(mass_i == 0, t_i, t_i - mass_i * (shift - other))
    return new_m, s, t, mass + mass_i


@triton.jit
def finish(m, s, t, mass, z_y, coef_y, v, live, bad, params_ptr, HAS_Z: tl.constexpr):
    """Each row's loss, lse and r (the gradient's softmax coefficient) from its streamed
    state and its target's logit z_y:

        loss = mass log s - t + (1-eps) w_y (lse - z_y) + zl v lse^2
        r    = mass + (1-eps) w_y + 2 zl v lse

    where mass log s - t = sum_j a_j (lse - z_j). Rows that do not contribute get zeros, a
    class index out of range NaN."""
    shift = tl.where(m == -float("inf"), 0.0, m)
    log_s = tl.log(s)
    lse = shift + log_s
    loss = tl.where(mass == 0, 0.0, mass * log_s - t)
    loss += tl.where(coef_y == 0, 0.0, coef_y * (log_s - (z_y - shift)))
    r = mass + coef_y
    if HAS_Z:
        zl = tl.load(params_ptr + 1)
        loss += tl.where(v == 0, 0.0, zl * v * lse * lse)
        r += 2.0 * zl * v * lse
    nan = float("nan")
    loss = tl.where(bad, nan, tl.where(live, loss, 0.0))
    return loss, tl.where(live, lse, 0.0), tl.where(bad, nan, tl.where(live, r, 0.0))


# ----------------------------------------------------------------------------------------
# host side


def interpreted(kernel: Any) -> bool:
    """Whether a ``@triton.jit`` kernel was built for Triton's interpreter (``TRITON_INTERPRET=1``
    when its module was imported): it then runs on CPU tensors, one program at a time."""
    return type(kernel).__name__ == "InterpretedFunction"


def check_device(name: str, tensor: torch.Tensor, kernel: Any) -> None:
    """The kernels run on CUDA tensors, or on CPU tensors under the interpreter."""
    if tensor.device.type == "cuda":
        if interpreted(kernel):
            raise ValueError(
                f"{name}: impl='triton' was imported with TRITON_INTERPRET=1 and runs on CPU "
                f"tensors only; got a tensor on {tensor.device}"
            )
        return
    if tensor.device.type == "cpu" and interpreted(kernel):
        return
    hint = (
        " (CPU tensors run under Triton's interpreter: set TRITON_INTERPRET=1 before "
        "crossentropy.triton is first imported)"
        if tensor.device.type == "cpu"
        else ""
    )
    raise ValueError(
        f"{name}: impl='triton' runs on CUDA tensors; got a tensor on {tensor.device}{hint}"
    )


def check_tensors(**named: Any) -> None:
    """Each named argument is a tensor of real numbers (``None`` for an optional one that
    is not given); a class weight that requires grad is refused, as the kernels give it no
    gradient (``torch.nn.functional.cross_entropy`` would)."""
    for name, value in named.items():
        if value is None and name == "weight":
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor; got {type(value).__name__}")
        if value.is_complex():
            raise TypeError(f"{name}: expected real numbers; got dtype {value.dtype}")
    weight = named.get("weight")
    if isinstance(weight, torch.Tensor) and weight.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            "weight: the Triton kernels give the class weights no gradient; got a weight "
            "that requires grad (pass weight.detach(), or use impl='torch' to train it)"
        )


def check_first_order(function: str) -> None:
    """Called in a backward: autograd runs it with grad mode on only for
    ``create_graph=True`` (a double backward, a gradient penalty). The kernels' gradient is
    not itself differentiable, so that is refused rather than returned without a graph
    (whose own gradient would then be silently missing)."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"crossentropy.triton.{function}: the Triton kernels give no second derivative; "
            f"a backward with create_graph=True (double backward, gradient penalty) needs "
            f"impl='torch'"
        )


def check_same_device(name: str, tensor: torch.Tensor | None, device: torch.device) -> None:
    if tensor is not None and tensor.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}; got one on {tensor.device}")


def check_inplace(name: str, tensor: torch.Tensor) -> None:
    """``inplace_backward`` writes the gradient over ``tensor``: refused where PyTorch
    refuses an in-place write (a leaf that requires grad, or a view of one: the
    parameter would be overwritten and its ``.grad`` share its memory) and where rows
    share memory (an expanded or overlapping view: each row's gradient would overwrite
    the others')."""
    base = tensor._base if tensor._base is not None else tensor
    if tensor.requires_grad and base.is_leaf and base.requires_grad:
        what = "a leaf tensor" if base is tensor else "a view of a leaf tensor"
        raise ValueError(
            f"inplace_backward: would overwrite {name}, {what} that requires grad (a "
            f"parameter); pass a computed tensor, or inplace_backward=False"
        )
    rows, columns = tensor.shape
    if tensor.stride(1) != 1 or (rows > 1 and tensor.stride(0) < columns):
        raise ValueError(
            f"inplace_backward: needs {name} whose rows are contiguous and do not overlap "
            f"(strides (>= {columns}, 1)); got strides {tensor.stride()}"
        )


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32, float16 and bfloat16 are computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


# ----------------------------------------------------------------------------------------
# host-side values the kernels of both losses take

_PARAMETERS: dict[tuple[Any, ...], Tensor] = {}


def kernel_parameters(
    values: tuple[float, ...], dtype: torch.dtype, device: torch.device
) -> Tensor:
    """The kernels' float scalars as a device tensor in the compute dtype (a Python float
    argument would reach the kernel as float32). Kept per value, so that a step captured in
    a CUDA graph finds it already on the device (no copy from the host inside the capture)."""
    if torch.compiler.is_compiling():
        return torch.tensor(values, dtype=dtype, device=device)
    key = (values, dtype, device)
    cached = _PARAMETERS.get(key)
    if cached is None:
        if len(_PARAMETERS) > 256:
            _PARAMETERS.clear()
        cached = _PARAMETERS[key] = torch.tensor(values, dtype=dtype, device=device)
    return cached


def device_scale(
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    soft: bool,
    dtype: torch.dtype,
) -> Tensor:
    """d(reduced loss)/d(row loss) as a device scalar: 1 / (summed weight of the counted
    targets) for a mean of class indices, 1 / rows for a mean of probability rows, 0 for a
    mean over nothing, 1 for a sum or none. Computed on the device: no host sync."""
    device = target.device
    if reduction != "mean":
        return torch.ones((), dtype=dtype, device=device)
    if soft:
        rows = target.shape[0]
        return torch.full((), 1.0 / rows if rows else 0.0, dtype=dtype, device=device)
    counted = target != ignore_index
    if weight is None:
        count = counted.sum(dtype=dtype)
    elif weight.shape[0] == 0:  # no classes: every counted target is out of range (NaN)
        count = torch.zeros((), dtype=dtype, device=device)
    else:
        index = torch.where(counted, target, 0).clamp(0, weight.shape[0] - 1)
        count = torch.where(counted, weight.to(dtype)[index], 0.0).sum()
    scale: Tensor = losses.mean_scale(count, torch)
    return scale
