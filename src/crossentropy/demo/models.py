"""The demo's models: softmax (or logistic) regression and a small MLP, in PyTorch.

Both output logits: C of them for C classes, one for a binary task. The initial weights come
from PyTorch's default initialisation drawn under a seeded, private random generator state
(:func:`torch.random.fork_rng`), so :func:`make_model` with the same arguments returns the
same weights every time and leaves the caller's global random state untouched. Every loss of
a run starts from a copy of one such model.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HIDDEN", "MODELS", "make_model"]

#: The models, by command-line name.
MODELS = ("linear", "mlp")

#: Hidden units of the MLP.
HIDDEN = 64


def make_model(name: str, n_features: int, n_outputs: int, *, seed: int) -> nn.Module:
    """A freshly initialised model, the same for the same arguments.

    Args:
        name: ``"linear"`` (one affine layer: multinomial logistic regression, or logistic
            regression for one output) or ``"mlp"`` (affine, ReLU, affine with
            :data:`HIDDEN` hidden units).
        n_features: input features F.
        n_outputs: logits per example (C, or 1 for a binary task).
        seed: the seed of the initial weights.

    Example:
        >>> a = make_model("mlp", 64, 10, seed=0)
        >>> b = make_model("mlp", 64, 10, seed=0)
        >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        True
        >>> a(torch.zeros(3, 64)).shape
        torch.Size([3, 10])
    """
    if name not in MODELS:
        raise ValueError(f"model: expected one of {', '.join(MODELS)}; got {name!r}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "linear":
            return nn.Linear(n_features, n_outputs)
        return nn.Sequential(nn.Linear(n_features, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_outputs))
