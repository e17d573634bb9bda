"""An interactive page to play with logits (``crossentropy explore``).

:func:`build_page` returns one self-contained HTML document (inline CSS and JavaScript, formulas
in MathML, no network): sliders for 2 to 6 logits, the true class or soft labels, a
temperature; softmax probabilities, cross entropy in nats and bits, MSE, and the gradient of
each loss with respect to every logit; a sigmoid view for binary and multi-label problems;
the loss curves of one logit with the current point marked. :func:`write_page` writes it,
:func:`make_server` serves it on localhost.

Nothing here needs an optional dependency: the page is plain text, the server is
:mod:`http.server`.
"""

from __future__ import annotations

from .page import (
    DEFAULT_LOGITS,
    LOGIT_LIMIT,
    MAX_CLASSES,
    MAX_TEMPERATURE,
    MIN_CLASSES,
    MIN_TEMPERATURE,
    VIEWS,
    build_page,
    write_page,
)
from .server import PageServer, make_server

__all__ = [
    "DEFAULT_LOGITS",
    "LOGIT_LIMIT",
    "MAX_CLASSES",
    "MAX_TEMPERATURE",
    "MIN_CLASSES",
    "MIN_TEMPERATURE",
    "VIEWS",
    "PageServer",
    "build_page",
    "make_server",
    "write_page",
]
