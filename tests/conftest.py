"""Shared fixtures and helpers for the core test suite.

The helpers are plain functions (``from conftest import ...``) so that parametrised tests
and hypothesis tests can use them outside fixtures.
"""

from __future__ import annotations

import numpy as np
import pytest

try:  # hypothesis is a dev dependency; keep the suite fast and deterministic on 2 cores
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "crossentropy",
        max_examples=30,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    settings.load_profile("crossentropy")
except ImportError:  # pragma: no cover
    pass


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "multihost: several hosts on this machine (network namespaces, torchrun); needs root",
    )


# float64 tolerance of the suite: the library and the reference differ only by rounding.
RTOL64 = 1e-10
ATOL64 = 1e-12

REDUCTIONS = ("none", "sum", "mean")
BASES = (None, 2, 10)

# (logits shape, class axis): unbatched, batched, K-dimensional with classes last, and
# PyTorch's (N, C, d1) layout with axis=1.
SHAPES = (
    ((5,), -1),
    ((4, 5), -1),
    ((3, 2, 4, 5), -1),
    ((3, 5, 4), 1),
)
SHAPE_IDS = ("C", "NC", "Nd1d2C", "NCd1-axis1")


def to_numpy(x: object) -> np.ndarray:
    """Any supported array (NumPy, torch, JAX, array-api-strict, scalar) to a NumPy array."""
    mod = type(x).__module__
    if mod.startswith("torch"):
        t = x.detach().cpu()  # type: ignore[attr-defined]
        import torch

        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.numpy()
    if mod.startswith("array_api_strict"):
        import array_api_strict as xps

        # go through a host copy; strict arrays support the buffer protocol via __dlpack__
        return np.from_dlpack(xps.asarray(x, copy=True))
    return np.asarray(x)


def assert_close64(got: object, expected: object, rtol: float = RTOL64, atol: float = ATOL64):
    g = to_numpy(got)
    e = np.asarray(expected)
    assert g.shape == e.shape, f"shape {g.shape} != expected {e.shape}"
    np.testing.assert_allclose(g.astype(np.float64), e, rtol=rtol, atol=atol)


def n_classes(shape: tuple[int, ...], axis: int) -> int:
    return shape[axis]


def lead_shape(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    ax = axis % len(shape)
    return shape[:ax] + shape[ax + 1 :]


def make_logits(rng: np.random.Generator, shape, scale: float = 3.0) -> np.ndarray:
    return rng.normal(size=shape) * scale


def make_soft_labels(rng: np.random.Generator, shape, axis: int) -> np.ndarray:
    """Random probability vectors along ``axis`` (rows sum to 1)."""
    y = rng.random(shape) + 1e-3
    return y / y.sum(axis=axis, keepdims=True)


def make_int_labels(rng: np.random.Generator, shape, axis: int) -> np.ndarray:
    c = n_classes(shape, axis)
    return rng.integers(0, c, size=lead_shape(shape, axis)).astype(np.int64)


def make_weight(rng: np.random.Generator, c: int) -> np.ndarray:
    return rng.uniform(0.25, 2.0, size=c)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240607)
