r"""Cross entropy of rows whose logits are seen one slice of the vocabulary at a time.

Two paths never hold a whole row of logits: ``linear_cross_entropy`` when even one chunk of
tokens is too wide (it walks the vocabulary in blocks) and the vocabulary-parallel loss
(each rank holds a slice). Both reduce a row to three statistics, each a sum over slices,

.. math::

    L = \operatorname{logsumexp}_j z_j, \qquad z_y, \qquad S_w = \sum_j w_j z_j

(the logsumexp combined with a running or all-reduced maximum, the target logit taken from
the slice that holds it, ``S_w`` only with label smoothing), and then need, per slice, the
gradient given ``L``. That math, the fused kernel's (``_cross_entropy.c``; derivation:
:func:`crossentropy.gradients.sparse_softmax_cross_entropy`), is written here once:

.. math::

    \ell &= (1-\varepsilon) w_y (L - z_y) + \tfrac{\varepsilon}{V} (W L - S_w)
            + \lambda_z w_y L^2 \\
    \partial \ell / \partial z_j &= r\, e^{z_j - L} - \tfrac{\varepsilon}{V} w_j
            - (1-\varepsilon) w_y [j = y],
    \qquad r = (1-\varepsilon) w_y + \tfrac{\varepsilon}{V} W + 2 \lambda_z w_y L

with :math:`W = \sum_j w_j` over the whole vocabulary (V when unweighted). The gradient of a
slice needs only ``L`` and the slice's own logits: no other slice's.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor


@dataclasses.dataclass(frozen=True)
class RowTerms:
    """What the loss of each row needs besides its logits, in the compute dtype."""

    target: Tensor  # (rows,) int64 global class ids; ignored rows hold 0
    counted: Tensor  # (rows,) bool: the target is not ignore_index
    w_y: Tensor  # (rows,) the weight of each row's target, 0 where ignored
    live: Tensor  # (rows,) bool: rows with a loss and a gradient
    weight: Tensor | None  # (V,) class weights, or None
    classes: int  # V, the whole vocabulary
    weight_total: float | Tensor  # sum of the class weights (V when unweighted), 0-d
    label_smoothing: float
    z_loss: float

    @classmethod
    def of(
        cls,
        target: Tensor,
        weight: Tensor | None,
        *,
        ignore_index: int,
        classes: int,
        label_smoothing: float,
        z_loss: float,
        dtype: torch.dtype,
    ) -> RowTerms:
        counted = target != ignore_index
        safe = torch.where(counted, target, 0)
        weights = None if weight is None else weight.to(dtype)
        w_y = (
            torch.ones(len(target), dtype=dtype, device=target.device)
            if weights is None
            else weights[safe]
        )
        w_y = torch.where(counted, w_y, 0.0)
        # with smoothing a zero-weight target still has the smoothing term
        live = counted if label_smoothing > 0 else counted & (w_y != 0)
        # a 0-d tensor, not a float: no .item(), so that vmap can batch the class weights
        total = float(classes) if weight is None else weight.double().sum().to(dtype)
        return cls(safe, counted, w_y, live, weights, classes, total, label_smoothing, z_loss)

    def rows(self, rows: slice) -> RowTerms:
        """The terms of a block of rows."""
        return dataclasses.replace(
            self,
            target=self.target[rows],
            counted=self.counted[rows],
            w_y=self.w_y[rows],
            live=self.live[rows],
        )

    def _class_weights(self, start: int, stop: int) -> Tensor:
        if self.weight is not None:
            return self.weight[start:stop]
        return torch.ones(stop - start, dtype=self.w_y.dtype, device=self.w_y.device)

    def target_logit(self, z: Tensor, start: int) -> tuple[Tensor, Tensor]:
        """For the columns [start, start + width) in ``z`` (rows, width): which rows' targets
        fall in them, and z_y there (a value of no meaning elsewhere)."""
        width = z.shape[1]
        inside = (self.target >= start) & (self.target < start + width)
        local = (self.target - start).clamp(0, width - 1)
        return inside, z.gather(1, local[:, None])[:, 0].to(self.w_y.dtype)

    def weighted_sum(self, z: Tensor, start: int) -> Tensor:
        """sum_j w_j z_j over the columns [start, start + width) in ``z``."""
        if self.weight is None:
            return z.sum(1, dtype=self.w_y.dtype)
        w = self._class_weights(start, start + z.shape[1])
        return torch.mv(z, w.to(z.dtype)).to(self.w_y.dtype)

    def loss(self, lse: Tensor, target_logit: Tensor, weighted_sum: Tensor | None) -> Tensor:
        """Each row's loss from its statistics (0 for rows without one)."""
        eps, zl = self.label_smoothing, self.z_loss
        loss = (1 - eps) * self.w_y * (lse - target_logit)
        if eps > 0 and weighted_sum is not None:
            loss = loss + (eps / self.classes) * (self.weight_total * lse - weighted_sum)
        if zl > 0:
            loss = loss + zl * self.w_y * lse * lse
        return torch.where(self.live, loss, 0.0)

    def gradient(
        self, z: Tensor, lse: Tensor, factor: Tensor, *, start: int, out: Tensor | None = None
    ) -> Tensor:
        """d loss / d z for the columns [start, start + width) in ``z``, each row times its
        ``factor`` (the reduction's scale, an incoming gradient), written into ``out`` (which
        may be ``z`` itself) or a new tensor; rows without a loss get exactly 0."""
        eps = self.label_smoothing
        r = (1 - eps) * self.w_y + (eps / self.classes) * self.weight_total
        if self.z_loss > 0:
            r = r + 2 * self.z_loss * self.w_y * lse
        live = torch.where(self.live, factor.to(r.dtype), 0.0)
        out = torch.sub(z, lse[:, None], out=out) if out is not None else z - lse[:, None]
        out.exp_().mul_((r * live)[:, None])
        if eps > 0:
            w = self._class_weights(start, start + z.shape[1])
            out.addr_(live.to(out.dtype), w.to(out.dtype), alpha=-eps / self.classes)
        inside = (self.target >= start) & (self.target < start + z.shape[1]) & self.live
        rows = torch.nonzero(inside)[:, 0]
        hit = -((1 - eps) * self.w_y * live)[rows]
        out.index_put_((rows, self.target[rows] - start), hit.to(out.dtype), accumulate=True)
        out.index_fill_(0, torch.nonzero(~self.live)[:, 0], 0.0)
        return out

    def differentiable_gradient(
        self, z: Tensor, lse: Tensor, factor: Tensor, *, start: int
    ) -> Tensor:
        """:meth:`gradient` written with out-of-place torch operations only, for a backward
        that runs with grad mode on (``create_graph=True``, ``torch.func``): autograd then
        differentiates this formula for the second derivative (the softmax Jacobian, through
        ``z`` and ``lse``), and functorch can batch it (no data-dependent indexing)."""
        eps = self.label_smoothing
        width = z.shape[1]
        r = (1 - eps) * self.w_y + (eps / self.classes) * self.weight_total
        if self.z_loss > 0:
            r = r + 2 * self.z_loss * self.w_y * lse
        g = torch.exp(z - lse[:, None]) * r[:, None]
        if eps > 0:
            g = g - (eps / self.classes) * self._class_weights(start, start + width)[None, :]
        columns = torch.arange(start, start + width, device=z.device)
        hit = (columns[None, :] == self.target[:, None]) & self.counted[:, None]
        g = g - torch.where(hit, ((1 - eps) * self.w_y)[:, None], 0.0)
        return torch.where(self.live[:, None], g * factor[:, None], 0.0)
