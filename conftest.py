"""pytest's set-up for the whole repository (tests/, the doctests in src/ and README.md).

Triton's interpreter runs the Triton kernels (crossentropy.triton) on CPU tensors, which is
how they are tested without a GPU. Triton reads TRITON_INTERPRET when a kernel is defined,
that is when crossentropy.triton is first imported, so it is set here, before any test
module or doctest can import it.

No locale language is set for the tests (LC_ALL, LC_MESSAGES, LANG), module-scoped fixtures
and subprocesses included: the commands speak English whatever this machine's locale, and a
test that wants another language asks for it (``--lang``, or the variable itself).
"""

import os

os.environ["TRITON_INTERPRET"] = "1"
for _variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
    os.environ.pop(_variable, None)
