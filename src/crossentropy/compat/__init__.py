"""Drop-in equivalents of other libraries' cross-entropy functions, built on our core.

Each submodule mirrors one library's names, argument names and output shapes, so code
written against that library can switch by changing an import:

- :mod:`crossentropy.compat.tf`: TensorFlow's ``tf.nn`` cross-entropy functions
  (``sigmoid_cross_entropy_with_logits``, ``softmax_cross_entropy_with_logits``,
  ``sparse_softmax_cross_entropy_with_logits``, ``weighted_cross_entropy_with_logits``).

The math is the core's (:mod:`crossentropy.losses`); these functions only translate
arguments and choose ``reduction="none"``. The mapping of every name in PyTorch, TensorFlow,
optax, scikit-learn and SciPy to ours, with the differences, is in ``docs/api-mapping.md``.
"""

from . import tf

__all__ = ["tf"]
