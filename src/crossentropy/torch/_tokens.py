r"""The log-probability of a target and the entropy of a softmax, per row, from slices.

The shared math of :func:`crossentropy.torch.token_log_probs` (logits swept a block of rows
at a time) and of the vocabulary engine's token head (logits computed a slice of the
vocabulary at a time, never whole): each slice of a row gives four numbers, slices merge,
and the merged numbers give the outputs and, with a second look at each slice, its
gradient.

Per row of logits z over V classes, a temperature T > 0, u = z / T, p = softmax(u) and the
target y:

.. math::

    \log p_y = u_y - \operatorname{lse}, \qquad
    \operatorname{lse} = \log \sum_k e^{u_k}, \qquad
    H = -\sum_k p_k \log p_k

A slice of the row (any set of its columns) gives its *statistics*:

.. math::

    m = \max_k u_k, \qquad s = \sum_k e^{u_k - m}, \qquad
    t = \sum_k e^{u_k - m} (u_k - m) \le 0

and u_y where the target falls in the slice (0 where it does not). Two slices merge with
M = max(m1, m2):

.. math::

    s = s_1 e^{m_1 - M} + s_2 e^{m_2 - M}, \qquad
    t = e^{m_1 - M} (t_1 + s_1 (m_1 - M)) + e^{m_2 - M} (t_2 + s_2 (m_2 - M))

since e^{u - M} (u - M) = e^{m - M} e^{u - m} ((u - m) + (m - M)). With the whole row's
statistics, lse = m + log s, log p_k = (u_k - m) - log s, and

.. math::

    H = -\sum_k p_k \log p_k = -\sum_k \frac{e^{u_k - m}}{s} ((u_k - m) - \log s)
      = \log s - \frac{t}{s}

where both terms are >= 0 (s >= 1: the maximum adds e^0 = 1; t <= 0), so that H is never
negative in floating point either, and a one-hot softmax (every other e^{u_k - m}
underflowing to 0) gives s = 1, t = 0 and H = 0 exactly.

The gradient, for incoming gradients g on log p_y and h on H (per row):

.. math::

    \frac{\partial \log p_y}{\partial z_k} = \frac{[k = y] - p_k}{T}, \qquad
    \frac{\partial H}{\partial z_k} = -\frac{p_k (\log p_k + H)}{T}

    \frac{\partial (g \log p_y + h H)}{\partial z_k}
      = \frac{g [k = y] - p_k (g + h H) - h\, p_k \log p_k}{T}

(dH/du_k = -sum_j (log p_j + 1) dp_j/du_k with dp_j/du_k = p_j ([j = k] - p_k), and
sum_j p_j (log p_j + 1) = 1 - H). A class whose p_k is 0 (u_k = -inf, or underflowed) has
p_k log p_k = 0 and adds nothing, never 0 * -inf = NaN: log p is floored at
``_LOG_FLOOR`` (where e^x is 0 in float32 and float64) before it multiplies anything.

Non-finite logits follow the library's cross-entropy conventions
(:func:`crossentropy._array.shift_and_log_sum`: a row whose maximum is not finite is
shifted by 0, log p = u - log sum e^u):

- a +inf logit: lse = +inf, so log p_y = -inf for a target beside it and NaN for a target
  at a +inf logit (inf - inf); H is NaN (p is inf / inf there). The gradient of log p_y is
  finite beside the +inf logits (g [k = y] / T at the target, 0 elsewhere) and NaN at them;
  with h != 0 the row's gradient is NaN (its entropy is);
- every logit -inf: log p_y and H are NaN (no distribution), and so is their gradient;
- a NaN logit: NaN outputs and gradient in its row;
- a -inf logit in a row with a finite maximum is a class of probability 0: log p_y = -inf
  if it is the target (gradient g [k = y] / T there, finite), and it adds exactly 0 to H
  and to H's gradient.
- a row whose g and h are both 0 has gradient exactly 0, whatever its logits.

Statistics and gradients are computed in float32 for float16/bfloat16 logits, in the
logits' dtype for float32 and float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .native import compute_dtype

__all__ = [
    "TokenStatistics",
    "logit_gradient",
    "token_outputs",
    "token_statistics",
]

# log p is floored here before it multiplies anything: e^x is exactly 0 below it in float32
# and float64, and so is p log p, while p times the floor cannot overflow
_LOG_FLOOR = -1.0e4


@dataclass(frozen=True)
class TokenStatistics:
    """The statistics of slices of rows of logits (all (rows,), in the compute dtype):
    ``peak`` m = max u (+inf, -inf or NaN where the slice's maximum is; -inf for an empty
    slice), ``mass`` s = sum e^(u - m) (taken with the shift 0 where m is not finite),
    ``spread`` t = sum e^(u - m) (u - m) (<= 0), ``target`` u_y where the target falls in
    the slice, else 0."""

    peak: Tensor
    mass: Tensor
    spread: Tensor
    target: Tensor

    def merge(self, other: TokenStatistics) -> TokenStatistics:
        """The statistics of the union of two disjoint slices of the same rows."""
        top = torch.maximum(self.peak, other.peak)  # NaN if either is NaN
        mass = self.mass.new_zeros(self.mass.shape)
        spread = self.spread.new_zeros(self.spread.shape)
        for part in (self, other):
            # m - M, 0 where they are equal (both -inf or both +inf included)
            gap = torch.where(part.peak == top, 0.0, part.peak - top)
            scale = torch.exp(gap)
            mass = mass + part.mass * scale
            # a slice whose weight e^(m - M) is 0 (all -inf, or underflowed) adds nothing,
            # never 0 * -inf; a NaN weight stays NaN
            spread = spread + torch.where(scale == 0, 0.0, scale * (part.spread + part.mass * gap))
        return TokenStatistics(top, mass, spread, self.target + other.target)


def _local_target(target: Tensor, start: int, width: int) -> tuple[Tensor, Tensor]:
    """(rows, 1) column of each row's target inside the slice [start, start + width) (0
    where it is not there) and the (rows,) mask of the rows whose target is there."""
    local = target - start
    here = (local >= 0) & (local < width)
    return torch.where(here, local, 0).unsqueeze(1), here


def _scaled(z: Tensor, temperature: float) -> Tensor:
    """u = z / T in the compute dtype, a new tensor (the same operations, so the same
    values, in :func:`token_statistics` and :func:`logit_gradient`)."""
    dtype = compute_dtype(z.dtype)
    u = z.to(dtype, copy=True)
    if temperature != 1.0:
        u.div_(temperature)
    return u


def token_statistics(
    z: Tensor, target: Tensor, temperature: float, start: int = 0
) -> TokenStatistics:
    """The statistics of the columns [start, start + width) of each row.

    Args:
        z: (rows, width) logits of those columns, any floating dtype (not written to).
        target: (rows,) int64 class ids in the whole vocabulary; a value outside the
            slice (another slice's class, or -1 for none) means "not here".
        temperature: T > 0 (checked by the caller).
        start: the class id of the slice's first column.

    Returns:
        The slice's :class:`TokenStatistics`, in float32 for float16/bfloat16/float32
        logits, float64 for float64.
    """
    rows, width = z.shape
    dtype = compute_dtype(z.dtype)
    if width == 0:
        zero = z.new_zeros(rows, dtype=dtype)
        return TokenStatistics(torch.full_like(zero, -torch.inf), zero, zero.clone(), zero)
    u = _scaled(z, temperature)
    column, here = _local_target(target, start, width)
    picked = torch.where(here, u.gather(1, column).squeeze(1), 0.0)
    peak = u.amax(dim=1)  # NaN where the row holds one
    shift = torch.where(torch.isfinite(peak), peak, 0.0)
    d = u.sub_(shift.unsqueeze(1)).clamp_(min=_LOG_FLOOR)  # NaN stays NaN
    e = torch.exp(d)
    mass = e.sum(dim=1)
    spread = e.mul_(d).sum(dim=1)
    return TokenStatistics(peak, mass, spread, picked)


def token_outputs(stats: TokenStatistics) -> tuple[Tensor, Tensor]:
    """(log p_y, H) per row from the whole row's statistics: (u_y - m) - log s and
    log s - t / s (the module's docstring). A row whose target is in no slice gets
    -m - log s as its log-probability: callers mask the rows they ignore."""
    log_mass = torch.log(stats.mass)
    log_prob = (stats.target - stats.peak) - log_mass
    entropy = log_mass - stats.spread / stats.mass
    return log_prob, entropy


def _times(coefficient: Tensor, value: Tensor) -> Tensor:
    """coefficient * value, 0 where the coefficient is 0 (whatever the value)."""
    return torch.where(coefficient == 0, 0.0, coefficient * value)


def logit_gradient(
    z: Tensor,
    target: Tensor,
    stats: TokenStatistics,
    temperature: float,
    grad_log_prob: Tensor,
    grad_entropy: Tensor,
    start: int = 0,
) -> Tensor:
    """d/dz of sum_i g_i log p_iy + h_i H_i over the columns [start, start + width).

    Args:
        z: (rows, width) logits of the slice. In the compute dtype (float32, float64) it is
            overwritten with the gradient and returned (pass a scratch buffer, or a copy);
            float16/bfloat16 logits are read and a new float32 tensor returned.
        target: (rows,) int64 class ids in the whole vocabulary (outside the slice: not
            here).
        stats: the WHOLE row's statistics (every slice merged).
        temperature: T > 0.
        grad_log_prob: g, (rows,) (any floating dtype).
        grad_entropy: h, (rows,).
        start: the class id of the slice's first column.

    Returns:
        The (rows, width) gradient in the compute dtype; rows whose g and h are both 0 are
        exactly 0.
    """
    rows, width = z.shape
    dtype = compute_dtype(z.dtype)
    if z.dtype == dtype:
        log_p = z if temperature == 1.0 else z.div_(temperature)
    else:
        log_p = _scaled(z, temperature)
    if rows == 0 or width == 0:
        return log_p
    g = grad_log_prob.to(dtype)
    h = grad_entropy.to(dtype)
    log_mass = torch.log(stats.mass)
    entropy = log_mass - stats.spread / stats.mass
    # log p_k = (u_k - m) - log s, floored so that p_k log p_k is 0 where p_k is
    log_p.sub_(stats.peak.unsqueeze(1)).sub_(log_mass.unsqueeze(1)).clamp_(min=_LOG_FLOOR)
    p = torch.exp(log_p)
    # dz_k = p_k (a + b log p_k) + [k = y] g / T, a = -(g + h H) / T, b = -h / T
    a = -(g + _times(h, entropy)) / temperature
    b = -h / temperature
    grad = log_p.mul_(b.unsqueeze(1)).add_(a.unsqueeze(1)).mul_(p)
    column, here = _local_target(target, start, width)
    grad.scatter_add_(1, column, torch.where(here, g / temperature, 0.0).unsqueeze(1))
    dead = ((g == 0) & (h == 0)).nonzero().squeeze(1)
    if dead.numel() > 0:
        grad.index_fill_(0, dead, 0.0)
    return grad
