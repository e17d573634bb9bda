"""pytest's set-up for the whole repository (tests/, the doctests in src/ and README.md).

Triton's interpreter runs the Triton kernels (crossentropy.triton) on CPU tensors, which is
how they are tested without a GPU. Triton reads TRITON_INTERPRET when a kernel is defined,
that is when crossentropy.triton is first imported, so it is set here, before any test
module or doctest can import it.
"""

import os

os.environ["TRITON_INTERPRET"] = "1"
