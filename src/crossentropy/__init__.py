"""crossentropy: cross entropy and the information theory behind it.

Information theory (:mod:`crossentropy.information`), the stable primitives, every loss of
the cross-entropy family (:mod:`crossentropy.losses`) and their analytic gradients
(:mod:`crossentropy.gradients`), written once over the Python array API so that the same
call works on NumPy, PyTorch, JAX and array-api-strict arrays.
"""

from . import gradients
from ._array import log_sigmoid, log_softmax, logsumexp, sigmoid, softmax
from .information import binary_entropy, cross_entropy, entropy, information, kl_divergence
from .losses import (
    binary_cross_entropy,
    distillation_loss,
    huber,
    l1,
    mse,
    nll_loss,
    sigmoid_cross_entropy,
    smooth_l1,
    softmax_cross_entropy,
    sparse_softmax_cross_entropy,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "binary_cross_entropy",
    "binary_entropy",
    "cross_entropy",
    "distillation_loss",
    "entropy",
    "gradients",
    "huber",
    "information",
    "kl_divergence",
    "l1",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "mse",
    "nll_loss",
    "sigmoid",
    "sigmoid_cross_entropy",
    "smooth_l1",
    "softmax",
    "softmax_cross_entropy",
    "sparse_softmax_cross_entropy",
]
