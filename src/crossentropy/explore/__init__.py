"""An interactive page to play with logits (``crossentropy explore``).

:func:`build_page` returns one self-contained HTML document (inline CSS and JavaScript, formulas
in MathML, no network): sliders for 2 to 6 logits, the true class or soft labels, a
temperature; softmax probabilities, cross entropy in nats and bits, MSE, and the gradient of
each loss with respect to every logit; a sigmoid view for binary and multi-label problems;
the loss curves of one logit with the current point marked; a regression view (a residual,
L1, L2, smooth L1 and Huber with their derivatives). In English, Chinese or Russian, with a
switch on the page. :func:`write_page` writes it,
:func:`make_server` serves it on localhost.

Nothing here needs an optional dependency: the page is plain text, the server is
:mod:`http.server`.
"""

from __future__ import annotations

from .page import (
    DEFAULT_BETA,
    DEFAULT_DELTA,
    DEFAULT_LOGITS,
    DEFAULT_RESIDUAL,
    LOGIT_LIMIT,
    MAX_BETA,
    MAX_CLASSES,
    MAX_TEMPERATURE,
    MIN_CLASSES,
    MIN_DELTA,
    MIN_TEMPERATURE,
    RESIDUAL_LIMIT,
    VIEWS,
    build_page,
    messages,
    write_page,
)
from .server import PageServer, make_server

__all__ = [
    "DEFAULT_BETA",
    "DEFAULT_DELTA",
    "DEFAULT_LOGITS",
    "DEFAULT_RESIDUAL",
    "LOGIT_LIMIT",
    "MAX_BETA",
    "MAX_CLASSES",
    "MAX_TEMPERATURE",
    "MIN_CLASSES",
    "MIN_DELTA",
    "MIN_TEMPERATURE",
    "RESIDUAL_LIMIT",
    "VIEWS",
    "PageServer",
    "build_page",
    "make_server",
    "messages",
    "write_page",
]
