r"""Distillation of a student's softmax towards a teacher's, per row, from slices.

The shared math of :func:`crossentropy.torch.distillation_loss` (logits swept a block of
rows at a time), of the vocabulary engine's distillation head (logits computed a slice of
the vocabulary at a time) and of the vocabulary-parallel versions (slices on several
ranks): every sum over the vocabulary is split into slices whose partial results merge.
The fast paths (C kernel, Triton) run the same three phases over whole rows.

Per token, student logits z_s and teacher logits z_t over V classes, a temperature T > 0,

.. math::

    u = z_s / T, \quad v = z_t / T, \quad
    L_s = \operatorname{lse}(u), \quad L_t = \operatorname{lse}(v), \quad
    \log p_{s,k} = u_k - L_s, \quad \log p_{t,k} = v_k - L_t

and the divergence D (in nats), with the convention of TRL's generalized JSD and of
Liger-Kernel:

.. math::

    \text{forward KL: } D = \sum_k p_{t,k} (\log p_{t,k} - \log p_{s,k}), \qquad
    \text{reverse KL: } D = \sum_k p_{s,k} (\log p_{s,k} - \log p_{t,k})

    \text{jsd: } M = \beta p_t + (1 - \beta) p_s, \quad
    D = \beta \operatorname{KL}(p_t \| M) + (1 - \beta) \operatorname{KL}(p_s \| M)

with \log M_k = \operatorname{logaddexp}(\log \beta + \log p_{t,k}, \log (1 - \beta) +
\log p_{s,k}). The jsd formula tends to 0 as beta -> 0 or 1 (M becomes p_s or p_t); by the
convention ``divergence="jsd"`` with beta = 0 *is* the forward KL and beta = 1 the reverse
KL (:func:`check_distillation` substitutes them). The per-token loss is

.. math::

    \ell = w_{soft} D + w_{hard} (L_1 - z_{s,y}), \qquad L_1 = \operatorname{lse}(z_s)

(the cross entropy of the student at temperature 1 against the target y; no T^2 factor:
multiply it in for Hinton's scaling). Ignored tokens give 0 and no gradient.

**Gradient** (the student only; the teacher is read, never differentiated). With the
softmax Jacobian dp_{s,j}/du_k = p_{s,j} ([j = k] - p_{s,k}), for any per-class
coefficient a_j = dD/dp_{s,j} (up to a constant, which the Jacobian cancels),
dD/du_k = p_{s,k} (a_k - sum_j p_{s,j} a_j):

- forward KL: D = sum p_t log p_t - sum p_t u + L_s, so dD/du_k = p_{s,k} - p_{t,k};
- reverse KL: a_k = log p_{s,k} - log p_{t,k} (+1), R = sum p_s a = D:
  dD/du_k = p_{s,k} (a_k - D);
- jsd: dD/dp_{s,j} = beta (-p_{t,j} (1 - beta) / M_j) + (1 - beta) (log(p_{s,j} / M_j) + 1
  - p_{s,j} (1 - beta) / M_j) = (1 - beta) log(p_{s,j} / M_j) + (1 - beta) (1 - M_j / M_j),
  so a_k = (1 - beta)(log p_{s,k} - log M_k), R = sum_j p_{s,j} a_j = (1 - beta)
  KL(p_s || M): dD/du_k = p_{s,k} (a_k - R);

then dD/dz_s = dD/du / T, and the hard term gives softmax(z_s)_k - [k = y]. For a row
scale r (the incoming gradient times the reduction's factor, 0 on ignored rows):

.. math::

    \frac{\partial (r \ell)}{\partial z_{s,k}} = r \Big(\frac{w_{soft}}{T}
      \frac{\partial D}{\partial u_k} + w_{hard} (e^{z_{s,k} - L_1} - [k = y])\Big)

**Three phases** per row, each a sum over the vocabulary, so each merges over slices of
it (and over ranks):

1. :func:`log_sum_exps`: L_s, L_t, L_1 (only with w_hard != 0; L_s itself at T = 1) and
   the target's logit z_{s,y} where y falls in the slice (0 elsewhere); merged by
   logaddexp for the L's, by a sum for the target logit (:class:`LogSumExps`);
2. :func:`divergence_sums`: given the whole row's L's, the row's D and R (plain sums:
   :class:`DivergenceSums`; R is D for reverse KL, unused, 0, for forward KL);
3. :func:`student_gradient`: each slice's gradient, elementwise, from (L's, D, R).

:func:`row_losses` gives the per-token loss from the merged results;
:func:`distill_rows` runs the three phases over whole rows.

**Numerics** (decided here, tested in tests/test_torch_distillation.py and
tests/test_distillation_math.py):

- a term whose weight is 0 is exactly 0 and never 0 * -inf: p_t = 0 in the forward KL,
  p_s = 0 in the reverse KL and in the jsd's two sums and in the gradient (p_s (a - R) is
  0 where p_s is 0, whatever a); a p that underflows to 0 counts as 0;
- a -inf student logit where the teacher has mass gives D = +inf for the forward KL, as
  the math says (its gradient p_s - p_t stays finite); a -inf teacher logit where the
  student has mass gives +inf for the reverse KL (and a NaN gradient in that row:
  a - D = inf - inf; the loss is infinite there);
- the jsd is always finite for finite or -inf logits (rows with some finite logit in each
  model): log M >= log beta + log p_t and >= log(1 - beta) + log p_s, so each log-ratio
  is at most -log beta or -log(1 - beta); its gradient is finite too;
- nothing is NaN from finite inputs; a NaN logit (student or teacher) makes its row's
  loss and gradient NaN; a row whose logits are all -inf (in either model) has no
  distribution: NaN;
- +inf logits follow the library's cross-entropy conventions
  (:func:`crossentropy._array.shift_and_log_sum`): L = +inf, so log p = -inf beside the
  +inf logits (p = 0 there) and NaN at them (inf - inf); the divergence and its gradient
  are then NaN in the row (or +inf where only masked terms meet the NaN), and the hard
  term is +inf for a target beside a +inf logit, NaN at one;
- rows whose row scale is 0 have a gradient of exactly 0, whatever their logits.

log p = u - L is computed from the merged L (one number per row, as the slices require):
at logits of magnitude X it carries an absolute rounding error of about X times the
dtype's epsilon, as any computation from slices does.

All math runs in float32 for float16/bfloat16/float32 inputs, float64 where either
model's logits are float64 (student and teacher may differ in dtype).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .. import _validate
from .native import compute_dtype

__all__ = [
    "Distillation",
    "DivergenceSums",
    "LogSumExps",
    "check_distillation",
    "distill_rows",
    "divergence_sums",
    "log_sum_exps",
    "row_losses",
    "student_gradient",
]


@dataclass(frozen=True)
class Distillation:
    """The checked settings of a distillation loss. ``divergence`` is ``"forward_kl"``,
    ``"reverse_kl"`` or ``"jsd"`` with the convention applied (a jsd with beta 0 or 1 is
    the forward or reverse KL); ``beta`` is in (0, 1) for ``"jsd"``, 0.0 for forward KL and
    1.0 for reverse KL; ``temperature`` > 0; weights finite, >= 0, not both 0."""

    divergence: str
    beta: float
    temperature: float
    soft_weight: float
    hard_weight: float


def check_distillation(
    divergence: object,
    beta: object,
    temperature: object,
    soft_weight: object,
    hard_weight: object,
    *,
    has_target: bool = True,
) -> Distillation:
    """The arguments of a distillation loss checked (``ValueError``/``TypeError`` naming
    the argument, what was given and what is accepted): ``divergence`` one of
    ``"forward_kl"``, ``"reverse_kl"``, ``"jsd"``; ``beta`` in [0, 1]; ``temperature``
    finite and > 0; ``soft_weight`` and ``hard_weight`` finite and >= 0, not both 0;
    ``hard_weight > 0`` only with a target (``has_target``)."""
    name, b, t, soft, hard = _validate.distillation(
        divergence, beta, temperature, soft_weight, hard_weight, has_target=has_target
    )
    return Distillation(name, b, t, soft, hard)


@dataclass(frozen=True)
class LogSumExps:
    """Phase 1 of slices of rows, all (rows,) in the compute dtype: ``student`` L_s =
    lse(z_s / T), ``teacher`` L_t = lse(z_t / T), ``hard`` L_1 = lse(z_s) (``None`` when
    the hard weight is 0), ``target_logit`` z_{s,y} where the target falls in the slice,
    else 0. An empty slice has L = -inf."""

    student: Tensor
    teacher: Tensor
    hard: Tensor | None
    target_logit: Tensor

    def merge(self, other: LogSumExps) -> LogSumExps:
        """The union of two disjoint slices of the same rows (logaddexp, which keeps
        -inf + -inf = -inf, +inf with +inf = +inf and NaN)."""
        hard = None
        if self.hard is not None and other.hard is not None:
            hard = torch.logaddexp(self.hard, other.hard)
        return LogSumExps(
            torch.logaddexp(self.student, other.student),
            torch.logaddexp(self.teacher, other.teacher),
            hard,
            self.target_logit + other.target_logit,
        )

    def rows(self, start: int, stop: int) -> LogSumExps:
        """The rows [start, stop)."""
        hard = None if self.hard is None else self.hard[start:stop]
        return LogSumExps(
            self.student[start:stop], self.teacher[start:stop], hard, self.target_logit[start:stop]
        )


@dataclass(frozen=True)
class DivergenceSums:
    """Phase 2 of slices of rows, (rows,) in the compute dtype: ``divergence`` the slice's
    part of D, ``row_term`` its part of R (the gradient's sum_j p_{s,j} a_j: D itself for
    reverse KL, (1 - beta) KL(p_s || M) for jsd, 0 for forward KL)."""

    divergence: Tensor
    row_term: Tensor

    def merge(self, other: DivergenceSums) -> DivergenceSums:
        """The union of two disjoint slices of the same rows (sums)."""
        return DivergenceSums(self.divergence + other.divergence, self.row_term + other.row_term)

    def rows(self, start: int, stop: int) -> DivergenceSums:
        """The rows [start, stop)."""
        return DivergenceSums(self.divergence[start:stop], self.row_term[start:stop])


def _local_target(target: Tensor, start: int, width: int) -> tuple[Tensor, Tensor]:
    """(rows, 1) column of each row's target inside the slice [start, start + width) (0
    where it is not there) and the (rows,) mask of the rows whose target is there."""
    local = target - start
    here = (local >= 0) & (local < width)
    return torch.where(here, local, 0).unsqueeze(1), here


def _dtype(student: Tensor, teacher: Tensor) -> torch.dtype:
    """The compute dtype of a pair of logits: float64 if either is, else float32."""
    return compute_dtype(torch.promote_types(student.dtype, teacher.dtype))


def _scaled(z: Tensor, temperature: float, dtype: torch.dtype) -> Tensor:
    """z / T in ``dtype``, a new tensor (never ``z`` itself)."""
    wide = z.to(dtype, copy=True)
    return wide if temperature == 1.0 else wide.div_(temperature)


def _lse(x: Tensor) -> Tensor:
    """logsumexp over each row, -inf for an empty row (torch's shift: 0 where the row's
    maximum is not finite, as :func:`crossentropy._array.shift_and_log_sum`)."""
    if x.shape[1] == 0:
        return torch.full((x.shape[0],), -torch.inf, dtype=x.dtype, device=x.device)
    return torch.logsumexp(x, dim=1)


def log_sum_exps(
    student: Tensor, teacher: Tensor, target: Tensor, d: Distillation, start: int = 0
) -> LogSumExps:
    """Phase 1 over the columns [start, start + width) of each row.

    Args:
        student: (rows, width) student logits of those columns, any floating dtype.
        teacher: (rows, width) teacher logits of the same columns.
        target: (rows,) int64 class ids in the whole vocabulary; a value outside the slice
            (another slice's class, or -1 for none) means "not here".
        d: the settings.
        start: the class id of the slice's first column.
    """
    rows, width = student.shape
    dtype = _dtype(student, teacher)
    l_s = _lse(_scaled(student, d.temperature, dtype))
    l_t = _lse(_scaled(teacher, d.temperature, dtype))
    hard = None
    if d.hard_weight != 0:
        hard = l_s if d.temperature == 1.0 else _lse(student.to(dtype))
    if width == 0:
        picked = student.new_zeros(rows, dtype=dtype)
    else:
        column, here = _local_target(target, start, width)
        picked = torch.where(here, student.gather(1, column).squeeze(1).to(dtype), 0.0)
    return LogSumExps(l_s, l_t, hard, picked)


def _where_mass(p: Tensor, value: Tensor) -> Tensor:
    """p * value, exactly 0 where p is 0 (whatever the value: never 0 * -inf)."""
    return torch.where(p == 0, 0.0, p * value)


def _log_probs(
    student: Tensor, teacher: Tensor, lse: LogSumExps, d: Distillation
) -> tuple[Tensor, Tensor]:
    """(log p_s, log p_t) of a slice, u - L_s and v - L_t in the compute dtype."""
    dtype = lse.student.dtype
    log_ps = _scaled(student, d.temperature, dtype).sub_(lse.student.unsqueeze(1))
    log_pt = _scaled(teacher, d.temperature, dtype).sub_(lse.teacher.unsqueeze(1))
    return log_ps, log_pt


def _log_mixture(log_ps: Tensor, log_pt: Tensor, beta: float) -> Tensor:
    """log M = logaddexp(log beta + log p_t, log(1 - beta) + log p_s)."""
    return torch.logaddexp(log_pt + math.log(beta), log_ps + math.log1p(-beta))


def divergence_sums(
    student: Tensor, teacher: Tensor, lse: LogSumExps, d: Distillation
) -> DivergenceSums:
    """Phase 2 over a slice: its part of D and of R, given the WHOLE row's L's (every
    slice's :class:`LogSumExps` merged). ``student``/``teacher``: (rows, width) logits of
    the slice, any floating dtype."""
    log_ps, log_pt = _log_probs(student, teacher, lse, d)
    if d.divergence == "forward_kl":
        pt = torch.exp(log_pt)
        total = _where_mass(pt, log_pt - log_ps).sum(dim=1)
        return DivergenceSums(total, torch.zeros_like(total))
    ps = torch.exp(log_ps)
    if d.divergence == "reverse_kl":
        total = _where_mass(ps, log_ps - log_pt).sum(dim=1)
        return DivergenceSums(total, total)
    log_m = _log_mixture(log_ps, log_pt, d.beta)
    pt = torch.exp(log_pt)
    row_term = _where_mass(ps, (1.0 - d.beta) * (log_ps - log_m)).sum(dim=1)
    teacher_part = _where_mass(pt, log_pt - log_m).sum(dim=1)
    return DivergenceSums(d.beta * teacher_part + row_term, row_term)


def row_losses(lse: LogSumExps, sums: DivergenceSums, live: Tensor, d: Distillation) -> Tensor:
    """Per-token loss w_soft D + w_hard (L_1 - z_{s,y}) from the merged phases 1 and 2,
    exactly 0 where ``live`` (rows,) bool is False. A term whose weight is 0 is left out
    (never 0 * inf)."""
    loss = torch.zeros_like(sums.divergence)
    if d.soft_weight != 0:
        loss = loss + d.soft_weight * sums.divergence
    if d.hard_weight != 0:
        if lse.hard is None:
            raise ValueError("lse: hard_weight is not 0 but lse.hard is None")
        loss = loss + d.hard_weight * (lse.hard - lse.target_logit)
    return torch.where(live, loss, 0.0)


def student_gradient(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    lse: LogSumExps,
    sums: DivergenceSums,
    d: Distillation,
    row_scale: Tensor,
    start: int = 0,
    out: Tensor | None = None,
) -> Tensor:
    """Phase 3 over a slice: d(sum_i r_i loss_i)/dz_s over its columns (the module's
    docstring), given the whole row's :class:`LogSumExps` and :class:`DivergenceSums`.

    Args:
        student, teacher: (rows, width) logits of the slice, any floating dtype (read only).
        target: (rows,) int64 class ids in the whole vocabulary (outside the slice: not here).
        lse, sums: the whole rows' phases 1 and 2.
        d: the settings.
        row_scale: r, (rows,) any floating dtype; 0 on rows that do not count.
        start: the class id of the slice's first column.
        out: (rows, width) tensor of any floating dtype to write the gradient into.

    Returns:
        The (rows, width) gradient, in the compute dtype (or ``out``, the gradient
        rounded to its dtype); rows whose r is 0 are exactly 0.
    """
    rows, width = student.shape
    dtype = _dtype(student, teacher)
    r = row_scale.to(dtype)
    grad = student.new_zeros((rows, width), dtype=dtype)
    if rows > 0 and width > 0:
        ps = None
        if d.soft_weight != 0:
            log_ps, log_pt = _log_probs(student, teacher, lse, d)
            ps = torch.exp(log_ps)
            if d.divergence == "forward_kl":
                du = ps - torch.exp(log_pt)
            else:
                if d.divergence == "reverse_kl":
                    a = log_ps.sub_(log_pt)
                else:
                    a = log_ps.sub_(_log_mixture(log_ps, log_pt, d.beta)).mul_(1.0 - d.beta)
                du = _where_mass(ps, a.sub_(sums.row_term.unsqueeze(1)))
            grad = du.mul_((r * (d.soft_weight / d.temperature)).unsqueeze(1))
        if d.hard_weight != 0:
            if lse.hard is None:
                raise ValueError("lse: hard_weight is not 0 but lse.hard is None")
            if ps is not None and d.temperature == 1.0:
                q = ps
            else:
                q = torch.exp(student.to(dtype).sub(lse.hard.unsqueeze(1)))
            hard_r = r * d.hard_weight
            grad = grad.addcmul_(q, hard_r.unsqueeze(1))
            column, here = _local_target(target, start, width)
            grad.scatter_add_(1, column, torch.where(here, -hard_r, 0.0).unsqueeze(1))
        dead = (r == 0).nonzero().squeeze(1)
        if dead.numel() > 0:
            grad.index_fill_(0, dead, 0.0)
    if out is None:
        return grad
    return out.copy_(grad)


def distill_rows(
    student: Tensor,
    teacher: Tensor,
    target: Tensor,
    live: Tensor,
    d: Distillation,
    row_scale: Tensor | None = None,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The three phases over whole rows: (per-token losses (rows,), 0 where ``live`` is
    False; the gradient d(sum_i r_i loss_i)/dz_s, or ``None`` without ``row_scale``).

    Args:
        student, teacher: (rows, V) logits, any floating dtype.
        target: (rows,) int64 class ids (-1 for none; only read with a hard weight).
        live: (rows,) bool, the tokens that count.
        d: the settings.
        row_scale: r (rows,), or ``None`` for no gradient; rows not ``live`` get 0
            whatever r says.
        out: where to write the gradient ((rows, V), any floating dtype).
    """
    lse = log_sum_exps(student, teacher, target, d)
    sums = divergence_sums(student, teacher, lse, d)
    losses = row_losses(lse, sums, live, d)
    if row_scale is None:
        return losses, None
    r = torch.where(live, row_scale.to(losses.dtype), 0.0)
    return losses, student_gradient(student, teacher, target, lse, sums, d, r, out=out)
