"""crossentropy.triton: the losses as fused Triton kernels, for CUDA tensors.

- :func:`cross_entropy`: softmax cross entropy over (rows, classes) logits, the loss in one
  streaming pass, the gradient in another, never storing the softmax
  (:mod:`crossentropy.triton.cross_entropy_kernels`);
- :func:`linear_cross_entropy`: cross entropy of ``input @ weight.T``, the logits computed
  tile by tile on chip and never written to memory
  (:mod:`crossentropy.triton.linear_cross_entropy_kernels`);
- :func:`row_log_probs` (with :func:`row_statistics`, :func:`row_gradient`): per-token
  log-probabilities and softmax entropy of whole rows, one streaming pass each way
  (:mod:`crossentropy.triton.token_kernels`);
- :func:`distillation_losses` (with :func:`distill_rows`, :func:`distillation_statistics`,
  :func:`distillation_gradient`): the distillation divergences (forward/reverse KL, JSD)
  between a student's and a teacher's whole rows of logits, with the hard-label cross
  entropy, streamed in tiles (:mod:`crossentropy.triton.distillation_kernels`).

:func:`crossentropy.torch.cross_entropy` and :func:`crossentropy.torch.linear_cross_entropy`
(and :func:`crossentropy.torch.token_log_probs`) select them with ``impl="triton"``, and
with ``impl="auto"`` for CUDA tensors. Under Triton's interpreter (``TRITON_INTERPRET=1``
set before this package is first imported) the same kernels run on CPU tensors, slowly:
that is how they are tested without a GPU.

Needs Triton: ``pip install crossentropy[triton]`` (PyTorch's CUDA wheels bring it along).
"""

try:
    import triton as _triton  # noqa: F401
except ImportError as _error:
    raise ImportError(
        "crossentropy.triton needs Triton, which is not installed; install it with: "
        "pip install crossentropy[triton]"
    ) from _error

from ._tiles import interpreted
from .cross_entropy_kernels import cross_entropy
from .distillation_kernels import (
    distill_rows,
    distillation_gradient,
    distillation_losses,
    distillation_statistics,
)
from .linear_cross_entropy_kernels import linear_cross_entropy
from .token_kernels import row_gradient, row_log_probs, row_statistics

__all__ = [
    "cross_entropy",
    "distill_rows",
    "distillation_gradient",
    "distillation_losses",
    "distillation_statistics",
    "interpreted",
    "linear_cross_entropy",
    "row_gradient",
    "row_log_probs",
    "row_statistics",
]
