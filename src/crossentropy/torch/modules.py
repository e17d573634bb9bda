r"""The loss modules of :mod:`torch.nn`, with the same constructors, on our functional losses.

Each class takes the constructor arguments of its PyTorch namesake, in the same order with
the same defaults, keeps them as the same attributes (``reduction``, ``ignore_index``,
``label_smoothing``, ``beta``, ``delta``, ``log_target``) and registers ``weight`` (and
``pos_weight``) as buffers, so ``state_dict()``, ``.to()`` and ``.double()`` behave as they do
for ``torch.nn``. ``forward`` calls the function of the same loss in
:mod:`crossentropy.torch.functional`. :class:`CrossEntropyLoss` also takes the keyword-only
``z_loss``, ``softcap``, ``inplace_backward`` and ``impl`` of
:func:`crossentropy.torch.functional.cross_entropy`. :class:`DistillationLoss`, which has
no namesake in :mod:`torch.nn`, holds the settings of
:func:`crossentropy.torch.distillation_loss`.
"""

from __future__ import annotations

import math
from typing import ClassVar

from torch import Tensor, nn

from .. import _validate
from . import conventions, dispatch
from . import functional as F
from ._distill import check_distillation
from .distillation import distillation_loss

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "DistillationLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "MSELoss",
    "NLLLoss",
    "SmoothL1Loss",
]


def _tensor_or_none(name: str, value: object) -> Tensor | None:
    if value is not None and not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or None; got {type(value).__name__}")
    return value


class _Loss(nn.Module):
    """A loss with a ``reduction``, set from the legacy flags if either is given.

    Constructors check their arguments as the functions do, so that a bad one is named
    where it is given rather than at the first ``forward``.
    """

    reduction: str
    _reductions: ClassVar[tuple[str, ...]] = _validate.REDUCTIONS

    def __init__(
        self,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        if size_average is not None or reduce is not None:
            self.reduction = conventions.legacy_reduction(size_average, reduce)
        else:
            if reduction != "elementwise_mean":  # torch's deprecated "mean", warned in forward
                _validate.reduction(reduction, self._reductions)
            self.reduction = reduction


class _WeightedLoss(_Loss):
    """A loss with a per-class (or elementwise) ``weight`` buffer."""

    weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _tensor_or_none("weight", weight))


class CrossEntropyLoss(_WeightedLoss):
    r"""Cross entropy between logits and class indices or probabilities, as a module.

    ``torch.nn.CrossEntropyLoss`` with the same constructor, plus z-loss, soft-capping and
    the fused kernel: the loss of :func:`crossentropy.torch.functional.cross_entropy`
    (its formula is there).

    Args:
        weight: per-class weights, shape (C,), registered as the buffer ``weight``.
        size_average: deprecated; see ``reduction``.
        ignore_index: class-index targets equal to it are skipped.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        label_smoothing: epsilon in [0, 1].
        z_loss: lambda_z >= 0.
        softcap: c > 0 to soft-cap the logits, or ``None``.
        inplace_backward: let the fused kernel write the gradient into the logits.
        impl: ``"auto"``, ``"torch"``, ``"fused"`` or ``"triton"`` (as in :func:`cross_entropy`).

    Returns (``forward(input, target)``):
        The loss, as :func:`~crossentropy.torch.functional.cross_entropy` returns it.

    Example:
        >>> import torch
        >>> from crossentropy.torch import CrossEntropyLoss
        >>> loss = CrossEntropyLoss(label_smoothing=0.1, impl="torch")
        >>> logits = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]])
        >>> print(f"{loss(logits, torch.tensor([0, 1])).item():.4f}")
        0.4369
    """

    __constants__: ClassVar[list[str]] = ["ignore_index", "reduction", "label_smoothing"]
    ignore_index: int
    label_smoothing: float

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        z_loss: float = 0.0,
        softcap: float | None = None,
        inplace_backward: bool = False,
        impl: dispatch.Impl = "auto",
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        dispatch.impl(impl)
        self.ignore_index = _validate.ignore_index(ignore_index)
        self.label_smoothing = _validate.label_smoothing(label_smoothing)
        self.z_loss = _validate.z_loss(z_loss)
        self.softcap = _validate.softcap(softcap)
        self.inplace_backward = _validate.flag("inplace_backward", inplace_backward)
        self.impl = impl

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            z_loss=self.z_loss,
            softcap=self.softcap,
            inplace_backward=self.inplace_backward,
            impl=self.impl,
        )


class NLLLoss(_WeightedLoss):
    r"""Negative log likelihood of class indices, as a module (``torch.nn.NLLLoss``).

    .. math::

        \ell_i = -w_{y_i} \log p_{i y_i}

    Args:
        weight: per-class weights, shape (C,), registered as the buffer ``weight``.
        size_average: deprecated; see ``reduction``.
        ignore_index: targets equal to it are skipped.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns (``forward(input, target)``):
        The loss, as :func:`~crossentropy.torch.functional.nll_loss` returns it.

    Example:
        >>> import torch
        >>> from crossentropy.torch import NLLLoss
        >>> log_probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]).log()
        >>> print(f"{NLLLoss(reduction='sum')(log_probs, torch.tensor([0, 1])).item():.4f}")
        0.5798
    """

    __constants__: ClassVar[list[str]] = ["ignore_index", "reduction"]
    ignore_index: int

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = _validate.ignore_index(ignore_index)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


class BCELoss(_WeightedLoss):
    r"""Binary cross entropy on probabilities, as a module (``torch.nn.BCELoss``).

    .. math::

        \ell = -w \,[\, y \max(\log p, -100) + (1 - y) \max(\log(1 - p), -100) \,]

    Args:
        weight: elementwise weights broadcastable to the input, registered as a buffer.
        size_average: deprecated; see ``reduction``.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns (``forward(input, target)``):
        The loss, as :func:`~crossentropy.torch.functional.binary_cross_entropy` returns it.

    Example:
        >>> import torch
        >>> from crossentropy.torch import BCELoss
        >>> print(BCELoss()(torch.tensor([0.9, 0.2]), torch.tensor([1.0, 0.0])))
        tensor(0.1643)
    """

    __constants__: ClassVar[list[str]] = ["reduction"]

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    r"""Binary cross entropy on logits, as a module (``torch.nn.BCEWithLogitsLoss``).

    .. math::

        \ell = w \,[\, p_w\, y \operatorname{softplus}(-x) + (1 - y) \operatorname{softplus}(x) \,]

    Args:
        weight: elementwise weights broadcastable to the input, registered as a buffer.
        size_average: deprecated; see ``reduction``.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        pos_weight: weight of the positive term along the last axis, registered as a buffer.

    Returns (``forward(input, target)``):
        The loss, as :func:`~crossentropy.torch.functional.binary_cross_entropy_with_logits`
        returns it.

    Example:
        >>> import torch
        >>> from crossentropy.torch import BCEWithLogitsLoss
        >>> loss = BCEWithLogitsLoss(pos_weight=torch.tensor([2.0]))
        >>> print(loss(torch.tensor([[3.0], [-1.0]]), torch.tensor([[1.0], [0.0]])))
        tensor(0.2052)
    """

    weight: Tensor | None
    pos_weight: Tensor | None

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", _tensor_or_none("weight", weight))
        self.register_buffer("pos_weight", _tensor_or_none("pos_weight", pos_weight))

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(
            input,
            target,
            weight=self.weight,
            reduction=self.reduction,
            pos_weight=self.pos_weight,
        )


class KLDivLoss(_Loss):
    r"""Pointwise Kullback-Leibler divergence, as a module (``torch.nn.KLDivLoss``).

    .. math::

        \ell = p \,(\log p - \log q), \qquad 0 \text{ where } p = 0

    Args:
        size_average: deprecated; see ``reduction``.
        reduce: deprecated; see ``reduction``.
        reduction: ``"batchmean"`` (the KL divergence per example), ``"mean"`` (per
            element), ``"sum"`` or ``"none"``.
        log_target: whether the target holds log-probabilities.

    Returns (``forward(input, target)``):
        The loss, as :func:`~crossentropy.torch.functional.kl_div` returns it.

    Example:
        >>> import torch
        >>> from crossentropy.torch import KLDivLoss
        >>> log_q = torch.tensor([[0.25, 0.75]]).log()
        >>> print(KLDivLoss(reduction="batchmean")(log_q, torch.tensor([[0.5, 0.5]])))
        tensor(0.1438)
    """

    __constants__: ClassVar[list[str]] = ["reduction"]
    log_target: bool
    _reductions = ("mean", "batchmean", "sum", "none")

    def __init__(
        self,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
        log_target: bool = False,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.log_target = _validate.flag("log_target", log_target)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.kl_div(input, target, reduction=self.reduction, log_target=self.log_target)


class MSELoss(_Loss):
    r"""Mean squared error, as a module (``torch.nn.MSELoss``).

    .. math::

        \ell = (x - t)^2

    Args:
        size_average: deprecated; see ``reduction``.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns (``forward(input, target)``):
        The loss, as :func:`~crossentropy.torch.functional.mse_loss` returns it.

    Example:
        >>> import torch
        >>> from crossentropy.torch import MSELoss
        >>> print(MSELoss()(torch.tensor([0.3, 0.3, 0.4]), torch.tensor([0.0, 0.0, 1.0])))
        tensor(0.1800)
    """

    __constants__: ClassVar[list[str]] = ["reduction"]

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    r"""Absolute error, as a module (``torch.nn.L1Loss``).

    .. math::

        \ell = |x - t|

    Args:
        size_average: deprecated; see ``reduction``.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns (``forward(input, target)``):
        The loss, as :func:`~crossentropy.torch.functional.l1_loss` returns it.

    Example:
        >>> import torch
        >>> from crossentropy.torch import L1Loss
        >>> print(L1Loss()(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 1.0])))
        tensor(1.2500)
    """

    __constants__: ClassVar[list[str]] = ["reduction"]

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(_Loss):
    r"""Smooth L1, as a module (``torch.nn.SmoothL1Loss``).

    .. math::

        \ell = \begin{cases} 0.5\, d^2 / \beta & |d| < \beta \\
                             |d| - 0.5\, \beta & \text{otherwise} \end{cases}

    Args:
        size_average: deprecated; see ``reduction``.
        reduce: deprecated; see ``reduction``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        beta: the width of the quadratic zone, >= 0.

    Returns (``forward(input, target)``):
        The loss, as :func:`~crossentropy.torch.functional.smooth_l1_loss` returns it.

    Example:
        >>> import torch
        >>> from crossentropy.torch import SmoothL1Loss
        >>> print(SmoothL1Loss(beta=2.0)(torch.tensor([1.0, 3.0]), torch.zeros(2)))
        tensor(1.1250)
    """

    __constants__: ClassVar[list[str]] = ["reduction"]
    beta: float

    def __init__(
        self,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
        beta: float = 1.0,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.beta = _validate.number_in("beta", beta, 0.0, math.inf, what=">= 0")

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class HuberLoss(_Loss):
    r"""Huber loss, as a module (``torch.nn.HuberLoss``).

    .. math::

        \ell = \begin{cases} 0.5\, d^2 & |d| < \delta \\
                             \delta (|d| - 0.5\, \delta) & \text{otherwise} \end{cases}

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        delta: the threshold, > 0.

    Returns (``forward(input, target)``):
        The loss, as :func:`~crossentropy.torch.functional.huber_loss` returns it.

    Example:
        >>> import torch
        >>> from crossentropy.torch import HuberLoss
        >>> print(HuberLoss(delta=2.0)(torch.tensor([1.0, 3.0]), torch.zeros(2)))
        tensor(2.2500)
    """

    __constants__: ClassVar[list[str]] = ["reduction", "delta"]
    delta: float

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction=reduction)
        self.delta = _validate.number_in("delta", delta, math.ulp(0.0), math.inf, what="> 0")

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.huber_loss(input, target, reduction=self.reduction, delta=self.delta)


class DistillationLoss(nn.Module):
    r"""The distillation loss of a student towards a teacher, as a module: the loss of
    :func:`crossentropy.torch.distillation_loss` (its formula and conventions are there),
    with its settings fixed at construction and checked there.

    Args:
        divergence: ``"jsd"``, ``"forward_kl"`` or ``"reverse_kl"``.
        beta: the jsd's weight of the teacher, in [0, 1] (0: forward KL, 1: reverse KL).
        temperature: T, finite and > 0.
        ignore_index: the target value of tokens to skip.
        soft_weight: the divergence's weight, finite and >= 0.
        hard_weight: the hard cross entropy's weight, finite and >= 0 (> 0 needs a target
            in ``forward``).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        impl: as in :func:`~crossentropy.torch.distillation_loss`.

    Returns (``forward(student_logits, teacher_logits=None, target=None, *,
    teacher_log_probs=None)``):
        The loss, as :func:`~crossentropy.torch.distillation_loss` returns it.

    Example:
        >>> import torch
        >>> from crossentropy.torch import DistillationLoss
        >>> loss = DistillationLoss(divergence="forward_kl")
        >>> student = torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.3]], dtype=torch.float64)
        >>> teacher = torch.tensor([[1.0, 1.0, 1.0], [0.0, 3.0, 0.0]], dtype=torch.float64)
        >>> print(f"{loss(student, teacher).item():.4f}")
        0.1644
    """

    __constants__: ClassVar[list[str]] = [
        "divergence",
        "beta",
        "temperature",
        "ignore_index",
        "soft_weight",
        "hard_weight",
        "reduction",
    ]

    def __init__(
        self,
        divergence: str = "jsd",
        beta: float = 0.5,
        temperature: float = 1.0,
        ignore_index: int = -100,
        soft_weight: float = 1.0,
        hard_weight: float = 0.0,
        reduction: str = "mean",
        *,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        check_distillation(divergence, beta, temperature, soft_weight, hard_weight)
        self.divergence = divergence
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.ignore_index = _validate.ignore_index(ignore_index)
        self.soft_weight = float(soft_weight)
        self.hard_weight = float(hard_weight)
        self.reduction = _validate.reduction(reduction)
        dispatch.impl(impl)
        self.impl = impl

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor | None = None,
        target: Tensor | None = None,
        *,
        teacher_log_probs: Tensor | None = None,
    ) -> Tensor:
        return distillation_loss(
            student_logits,
            teacher_logits,
            target,
            teacher_log_probs=teacher_log_probs,
            divergence=self.divergence,
            beta=self.beta,
            temperature=self.temperature,
            ignore_index=self.ignore_index,
            soft_weight=self.soft_weight,
            hard_weight=self.hard_weight,
            reduction=self.reduction,
            impl=self.impl,
        )
