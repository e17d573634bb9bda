"""crossentropy.integrations: the library's losses plugged into other libraries.

- :mod:`crossentropy.integrations.transformers`: Hugging Face ``transformers`` causal language
  models compute their training loss with :func:`crossentropy.torch.linear_cross_entropy`,
  without the (tokens x vocabulary) logits (``pip install transformers``).

Each integration is imported on its own (``from crossentropy.integrations.transformers
import ...``), so that importing this package needs none of the libraries it integrates with.
"""

__all__: list[str] = []
