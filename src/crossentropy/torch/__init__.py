"""crossentropy.torch: what a PyTorch user imports instead of ``torch.nn.functional``.

The losses of ``torch.nn.functional`` and ``torch.nn`` with PyTorch's names, signatures and
results (:mod:`crossentropy.torch.functional`, :mod:`crossentropy.torch.modules`), computed by
the library's core under autograd or, for ``cross_entropy``, by a fused kernel.

:mod:`crossentropy.torch.distributed` (imported on its own) holds the vocabulary-parallel
losses over ``torch.distributed``: ``vocab_parallel_cross_entropy`` and
``vocab_parallel_linear_cross_entropy``.

Needs PyTorch: ``pip install crossentropy[torch]``.
"""

try:
    import torch as _torch  # noqa: F401
except ImportError as _error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "crossentropy.torch needs PyTorch, which is not installed; "
        "install it with: pip install crossentropy[torch]"
    ) from _error

from . import functional
from ._kernel import fused_available, release_cached_buffers
from .dispatch import Impl
from .distillation import distillation_loss
from .functional import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    huber_loss,
    kl_div,
    l1_loss,
    mse_loss,
    nll_loss,
    smooth_l1_loss,
)
from .linear import LinearCrossEntropyLoss, linear_cross_entropy
from .linear_distillation import linear_distillation_loss
from .linear_tokens import linear_token_log_probs
from .modules import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    DistillationLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from .scoring import score_rows
from .tokens import softmax_entropy, token_log_probs

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "DistillationLoss",
    "HuberLoss",
    "Impl",
    "KLDivLoss",
    "L1Loss",
    "LinearCrossEntropyLoss",
    "MSELoss",
    "NLLLoss",
    "SmoothL1Loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "distillation_loss",
    "functional",
    "fused_available",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "linear_cross_entropy",
    "linear_distillation_loss",
    "linear_token_log_probs",
    "mse_loss",
    "nll_loss",
    "release_cached_buffers",
    "score_rows",
    "smooth_l1_loss",
    "softmax_entropy",
    "token_log_probs",
]
