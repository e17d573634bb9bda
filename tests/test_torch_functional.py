"""crossentropy.torch.functional against torch.nn.functional itself.

Results and gradients are compared over generated combinations of every argument: float64 to
a relative 1e-7, float32 to torch.testing.assert_close's own defaults. The cases where torch
returns NaN for a finite answer are excluded from those and tested apart: our finite answer,
and torch's NaN. impl="fused" cases skip while the fused kernel is missing.
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import math
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import pytest

torch = pytest.importorskip("torch")
TF = torch.nn.functional

import crossentropy.torch as ct  # noqa: E402
from crossentropy.torch import functional as F  # noqa: E402

Tensor = torch.Tensor
F64, F32 = torch.float64, torch.float32
DTYPES = {"f64": F64, "f32": F32}
REDUCTIONS = ("none", "mean", "sum")

# logits shapes: unbatched (C,), (N, C), and K-dimensional (N, C, d1), (N, C, d1, d2)
SHAPES = {"C": (5,), "NC": (4, 5), "NCd1": (3, 5, 4), "NCd1d2": (2, 5, 3, 2)}

NAMES = (
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
)


# ----------------------------------------------------------------------------------------
# the fused kernel: tests of impl="fused" skip only while it is missing


def _fused_reason() -> str | None:
    if importlib.util.find_spec("crossentropy.torch._fused") is None:
        return "crossentropy.torch._fused is missing (the fused kernel has not landed)"
    from crossentropy.torch import _fused

    if not _fused.fused_available():
        return "crossentropy.torch._fused.fused_available() is False (no C compiler?)"
    return None


FUSED_REASON = _fused_reason()


def _skip_unless_impl(impl: str) -> None:
    if impl == "fused" and FUSED_REASON is not None:
        pytest.skip(FUSED_REASON)


# ----------------------------------------------------------------------------------------
# helpers


def tolerances(dtype: Any) -> dict[str, float]:
    """float64: relative 1e-7 (atol only for values at rounding level of 0); float32 and
    below: torch.testing.assert_close's defaults for the dtype."""
    return {"rtol": 1e-7, "atol": 1e-12} if dtype == F64 else {}


def forward_backward(
    fn: Callable[..., Tensor], args: Sequence[Any], kwargs: dict[str, Any], wrt: Sequence[int]
) -> tuple[Tensor, list[Tensor]]:
    """fn(*args, **kwargs) and the gradients of <out, g> w.r.t. args[i] for i in wrt, with a
    fixed non-uniform upstream gradient g (so reduction="none" checks every element)."""
    leaves = [
        a.detach().clone().requires_grad_(True) if i in wrt else a for i, a in enumerate(args)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fn(*leaves, **kwargs)
    upstream = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad(out, [leaves[i] for i in wrt], grad_outputs=upstream)
    return out.detach(), list(grads)


def assert_matches_torch(
    name: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    *,
    wrt: Sequence[int] = (0,),
    ours: dict[str, Any] | None = None,
) -> None:
    """Our function ``name`` and torch's give the same value and gradients (``ours``: extra
    keyword arguments for ours only, such as impl)."""
    dtype = args[0].dtype
    mine, my_grads = forward_backward(getattr(F, name), args, {**kwargs, **(ours or {})}, wrt)
    theirs, their_grads = forward_backward(getattr(TF, name), args, kwargs, wrt)
    assert torch.isfinite(theirs).all(), "a NaN case belongs in the NaN tests"
    torch.testing.assert_close(mine, theirs, **tolerances(dtype))
    for a, b in zip(my_grads, their_grads, strict=True):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(a, b, **tolerances(dtype))


def generator(*key: object) -> Any:
    """A torch generator seeded from ``key``, the same in every process (unlike hash())."""
    return torch.Generator().manual_seed(zlib.crc32(repr(key).encode()))


def randn(shape: Sequence[int], dtype: Any, g: Any, scale: float = 2.0) -> Tensor:
    return (scale * torch.randn(tuple(shape), generator=g, dtype=F64)).to(dtype)


def class_shape(shape: Sequence[int]) -> tuple[int, tuple[int, ...]]:
    """(C, the shape of class-index targets) for logits of ``shape``."""
    if len(shape) == 1:
        return shape[0], ()
    return shape[1], (shape[0], *shape[2:])


def index_target(shape: Sequence[int], ignore: str, g: Any) -> tuple[Tensor, int]:
    """Class indices for logits of ``shape`` and the ignore_index in force.

    ignore: "default" (ignore_index=-100, nothing ignored), "ignored" (the first target is
    -100), "custom" (ignore_index=2; the first target is 2). Batched targets keep their last
    target counted so that a mean never has an empty denominator.
    """
    num_classes, tshape = class_shape(shape)
    target = torch.randint(0, num_classes, tshape, generator=g)
    flat = target.view(-1)
    ignore_index = -100
    if ignore == "ignored":
        flat[0] = -100
    elif ignore == "custom":
        ignore_index = 2
        flat[0] = 2
        if flat.numel() > 1:
            flat[-1] = 0
    return target, ignore_index


def probability_target(shape: Sequence[int], dtype: Any, g: Any) -> Tensor:
    axis = 1 if len(shape) > 1 else 0
    return torch.softmax(randn(shape, F64, g), dim=axis).to(dtype)


def class_weight(num_classes: int, dtype: Any, g: Any) -> Tensor:
    return (0.5 + 1.5 * torch.rand(num_classes, generator=g, dtype=F64)).to(dtype)


# ----------------------------------------------------------------------------------------
# signatures


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_torchs(name: str) -> None:
    mine = list(inspect.signature(getattr(F, name)).parameters.values())
    theirs = list(inspect.signature(getattr(TF, name)).parameters.values())
    assert [(p.name, p.kind, p.default) for p in mine[: len(theirs)]] == [
        (p.name, p.kind, p.default) for p in theirs
    ]
    extras = [(p.name, p.kind, p.default) for p in mine[len(theirs) :]]
    if name == "cross_entropy":
        keyword = inspect.Parameter.KEYWORD_ONLY
        assert extras == [
            ("z_loss", keyword, 0.0),
            ("softcap", keyword, None),
            ("inplace_backward", keyword, False),
            ("impl", keyword, "auto"),
        ]
    else:
        assert extras == []


def test_exports() -> None:
    for name in NAMES:
        assert name in ct.__all__
        assert getattr(ct, name) is getattr(F, name)
    assert set(F.__all__) == set(NAMES)


def test_import_without_torch_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import crossentropy\n"
        "assert crossentropy.softmax_cross_entropy is not None\n"
        "try:\n"
        "    import crossentropy.torch\n"
        "except ImportError as e:\n"
        "    print('MESSAGE', e)\n"
        "else:\n"
        "    print('IMPORTED')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "MESSAGE" in done.stdout
    assert "pip install crossentropy[torch]" in done.stdout


# ----------------------------------------------------------------------------------------
# cross_entropy: generated combinations


def _ce_index_cases() -> list[Any]:
    cases = []
    for shape, weighted, ignore, smoothing, reduction, dtype, impl in itertools.product(
        SHAPES, (False, True), ("default", "ignored", "custom"), (0.0, 0.1), REDUCTIONS,
        DTYPES, ("torch", "fused"),
    ):  # fmt: skip
        if shape == "C" and ignore != "default" and reduction == "mean":
            continue  # the only target ignored: torch's mean is NaN (see the NaN tests)
        cases.append((shape, weighted, ignore, smoothing, reduction, dtype, impl))
    return cases


@pytest.mark.parametrize(
    ("shape", "weighted", "ignore", "smoothing", "reduction", "dtype", "impl"), _ce_index_cases()
)
def test_cross_entropy_index_targets(
    shape: str,
    weighted: bool,
    ignore: str,
    smoothing: float,
    reduction: str,
    dtype: str,
    impl: str,
) -> None:
    _skip_unless_impl(impl)
    g = generator("ce", shape, weighted, ignore, smoothing, reduction, dtype)
    logits = randn(SHAPES[shape], DTYPES[dtype], g)
    target, ignore_index = index_target(SHAPES[shape], ignore, g)
    num_classes, _ = class_shape(SHAPES[shape])
    weight = class_weight(num_classes, DTYPES[dtype], g) if weighted else None
    kwargs = {
        "weight": weight,
        "ignore_index": ignore_index,
        "reduction": reduction,
        "label_smoothing": smoothing,
    }
    assert_matches_torch("cross_entropy", (logits, target), kwargs, ours={"impl": impl})


@pytest.mark.parametrize(
    ("shape", "weighted", "smoothing", "reduction", "dtype"),
    list(itertools.product(SHAPES, (False, True), (0.0, 0.1), REDUCTIONS, DTYPES)),
)
def test_cross_entropy_probability_targets(
    shape: str, weighted: bool, smoothing: float, reduction: str, dtype: str
) -> None:
    """Probability targets, with gradients w.r.t. both the logits and the target."""
    g = generator("ce-prob", shape, weighted, smoothing, reduction, dtype)
    logits = randn(SHAPES[shape], DTYPES[dtype], g)
    target = probability_target(SHAPES[shape], DTYPES[dtype], g)
    num_classes, _ = class_shape(SHAPES[shape])
    weight = class_weight(num_classes, DTYPES[dtype], g) if weighted else None
    kwargs = {"weight": weight, "reduction": reduction, "label_smoothing": smoothing}
    for impl in ("torch", "auto"):
        assert_matches_torch(
            "cross_entropy", (logits, target), kwargs, wrt=(0, 1), ours={"impl": impl}
        )


def _z_softcap_reference(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float | None,
    reduction: str,
) -> Tensor:
    """Soft-capping and z-loss written on torch's own cross_entropy."""
    axis = 1 if logits.ndim > 1 else 0
    z = logits if softcap is None else softcap * torch.tanh(logits / softcap)
    per = TF.cross_entropy(
        z,
        target,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        reduction="none",
    )
    lse = torch.logsumexp(z, dim=axis)
    if target.shape == logits.shape:  # probabilities: z-loss per example, mean over examples
        per = per + z_loss * lse**2
        count = torch.tensor(float(per.numel()), dtype=per.dtype)
    else:
        counted = target != ignore_index
        safe = torch.where(counted, target, 0)
        w_target = torch.ones_like(per) if weight is None else weight[safe]
        w_target = torch.where(counted, w_target, 0.0)
        per = per + z_loss * w_target * lse**2
        count = w_target.sum()
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.sum() / count


@pytest.mark.parametrize(
    ("shape", "weighted", "ignore", "z_loss", "softcap", "reduction", "impl"),
    [
        case
        for case in itertools.product(
            SHAPES, (False, True), ("default", "custom"), (0.0, 1e-2), (None, 3.0),
            ("none", "mean"), ("torch", "fused"),
        )
        # the only target ignored: a mean over nothing (test_mean_over_nothing_is_zero)
        if not (case[0] == "C" and case[2] == "custom" and case[5] == "mean")
    ],
)  # fmt: skip
def test_cross_entropy_z_loss_and_softcap(
    shape: str,
    weighted: bool,
    ignore: str,
    z_loss: float,
    softcap: float | None,
    reduction: str,
    impl: str,
) -> None:
    _skip_unless_impl(impl)
    g = generator("ce-z", shape, weighted, ignore, z_loss, softcap, reduction)
    logits = randn(SHAPES[shape], F64, g, scale=4.0)
    target, ignore_index = index_target(SHAPES[shape], ignore, g)
    num_classes, _ = class_shape(SHAPES[shape])
    weight = class_weight(num_classes, F64, g) if weighted else None
    kwargs = {
        "weight": weight,
        "ignore_index": ignore_index,
        "label_smoothing": 0.1,
        "z_loss": z_loss,
        "softcap": softcap,
        "reduction": reduction,
    }
    mine, my_grads = forward_backward(
        F.cross_entropy, (logits, target), {**kwargs, "impl": impl}, (0,)
    )
    theirs, their_grads = forward_backward(_z_softcap_reference, (logits, target), kwargs, (0,))
    torch.testing.assert_close(mine, theirs, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(my_grads[0], their_grads[0], rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize(
    ("shape", "z_loss", "softcap", "reduction"),
    list(itertools.product(SHAPES, (0.0, 1e-2), (None, 3.0), REDUCTIONS)),
)
def test_cross_entropy_probability_targets_z_loss_and_softcap(
    shape: str, z_loss: float, softcap: float | None, reduction: str
) -> None:
    g = generator("ce-prob-z", shape, z_loss, softcap, reduction)
    logits = randn(SHAPES[shape], F64, g, scale=4.0)
    target = probability_target(SHAPES[shape], F64, g)
    kwargs = {
        "weight": None,
        "ignore_index": -100,
        "label_smoothing": 0.0,
        "z_loss": z_loss,
        "softcap": softcap,
        "reduction": reduction,
    }
    mine, my_grads = forward_backward(F.cross_entropy, (logits, target), kwargs, (0, 1))
    theirs, their_grads = forward_backward(_z_softcap_reference, (logits, target), kwargs, (0, 1))
    torch.testing.assert_close(mine, theirs, rtol=1e-7, atol=1e-12)
    for a, b in zip(my_grads, their_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("impl", ["torch", "fused", "auto"])
def test_cross_entropy_impls_agree_on_a_larger_batch(impl: str) -> None:
    _skip_unless_impl(impl)
    g = generator("ce-large", impl)
    logits = randn((64, 37), F32, g)
    target = torch.randint(0, 37, (64,), generator=g)
    target[::7] = -100
    kwargs = {"label_smoothing": 0.05, "weight": class_weight(37, F32, g)}
    assert_matches_torch("cross_entropy", (logits, target), kwargs, ours={"impl": impl})


# ----------------------------------------------------------------------------------------
# nll_loss


@pytest.mark.parametrize(
    ("shape", "weighted", "ignore", "reduction", "dtype"),
    [
        case
        for case in itertools.product(
            SHAPES, (False, True), ("default", "ignored", "custom"), REDUCTIONS, DTYPES
        )
        if not (case[0] == "C" and case[2] != "default" and case[3] == "mean")
    ],
)
def test_nll_loss(shape: str, weighted: bool, ignore: str, reduction: str, dtype: str) -> None:
    g = generator("nll", shape, weighted, ignore, reduction, dtype)
    axis = 1 if len(SHAPES[shape]) > 1 else 0
    log_probs = torch.log_softmax(randn(SHAPES[shape], F64, g), dim=axis).to(DTYPES[dtype])
    target, ignore_index = index_target(SHAPES[shape], ignore, g)
    num_classes, _ = class_shape(SHAPES[shape])
    weight = class_weight(num_classes, DTYPES[dtype], g) if weighted else None
    kwargs = {"weight": weight, "ignore_index": ignore_index, "reduction": reduction}
    assert_matches_torch("nll_loss", (log_probs, target), kwargs)


# ----------------------------------------------------------------------------------------
# binary cross entropy, on probabilities and on logits

ELEMENTWISE_SHAPES = {"N": (6,), "NC": (4, 3), "NCd": (2, 3, 4)}


@pytest.mark.parametrize(
    ("shape", "weight_kind", "hard", "reduction", "dtype"),
    list(
        itertools.product(
            ELEMENTWISE_SHAPES, ("none", "full", "last"), (False, True), REDUCTIONS, DTYPES
        )
    ),
)
def test_binary_cross_entropy(
    shape: str, weight_kind: str, hard: bool, reduction: str, dtype: str
) -> None:
    g = generator("bce", shape, weight_kind, hard, reduction, dtype)
    dims = ELEMENTWISE_SHAPES[shape]
    probs = (0.02 + 0.96 * torch.rand(dims, generator=g, dtype=F64)).to(DTYPES[dtype])
    target = torch.rand(dims, generator=g, dtype=F64)
    target = (target > 0.5).to(F64) if hard else target
    weight = {
        "none": None,
        "full": torch.rand(dims, generator=g, dtype=F64),
        "last": torch.rand(dims[-1:], generator=g, dtype=F64),
    }[weight_kind]
    weight = None if weight is None else weight.to(DTYPES[dtype])
    kwargs = {"weight": weight, "reduction": reduction}
    wrt = (0, 1) if not hard else (0,)
    assert_matches_torch("binary_cross_entropy", (probs, target.to(DTYPES[dtype])), kwargs, wrt=wrt)


@pytest.mark.parametrize(
    ("reduction", "dtype", "weighted"), list(itertools.product(REDUCTIONS, DTYPES, (False, True)))
)
def test_binary_cross_entropy_at_zero_and_one(reduction: str, dtype: str, weighted: bool) -> None:
    """p of exactly 0 or 1: the loss clamped at 100 and torch's finite derivative
    (p - y) / max(p (1 - p), 1e-12), not the NaN of autograd through the clamped log."""
    d = DTYPES[dtype]
    p = torch.tensor([0.0, 1.0, 0.0, 1.0, 1e-20, 0.3, 1.0 - 2**-20], dtype=d)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.4, 0.5], dtype=d)
    w = torch.linspace(0.5, 2.0, 7, dtype=d) if weighted else None
    mine, my_grads = forward_backward(
        F.binary_cross_entropy, (p, y), {"weight": w, "reduction": reduction}, (0, 1)
    )
    theirs, their_grads = forward_backward(
        TF.binary_cross_entropy, (p, y), {"weight": w, "reduction": reduction}, (0, 1)
    )
    torch.testing.assert_close(mine, theirs, **tolerances(d))
    assert torch.isfinite(my_grads[0]).all()
    torch.testing.assert_close(my_grads[0], their_grads[0], **tolerances(d))
    # d/dy = w (log(1 - p) - log p) is infinite at p = 0 or 1 in torch and here
    torch.testing.assert_close(my_grads[1], their_grads[1], **tolerances(d))


@pytest.mark.parametrize(
    ("shape", "weight_kind", "pos_weight_kind", "reduction", "dtype"),
    list(
        itertools.product(
            ELEMENTWISE_SHAPES, ("none", "full", "last"), ("none", "class", "one"),
            REDUCTIONS, DTYPES,
        )
    ),
)  # fmt: skip
def test_binary_cross_entropy_with_logits(
    shape: str, weight_kind: str, pos_weight_kind: str, reduction: str, dtype: str
) -> None:
    g = generator("bcel", shape, weight_kind, pos_weight_kind, reduction, dtype)
    dims = ELEMENTWISE_SHAPES[shape]
    d = DTYPES[dtype]
    logits = randn(dims, d, g, scale=3.0)
    target = torch.rand(dims, generator=g, dtype=F64).to(d)
    weight = {
        "none": None,
        "full": torch.rand(dims, generator=g, dtype=F64).to(d),
        "last": torch.rand(dims[-1:], generator=g, dtype=F64).to(d),
    }[weight_kind]
    pos_weight = {
        "none": None,
        "class": (0.5 + 2 * torch.rand(dims[-1:], generator=g, dtype=F64)).to(d),
        "one": torch.tensor([3.0], dtype=d),
    }[pos_weight_kind]
    kwargs = {"weight": weight, "reduction": reduction, "pos_weight": pos_weight}
    assert_matches_torch("binary_cross_entropy_with_logits", (logits, target), kwargs, wrt=(0, 1))


# ----------------------------------------------------------------------------------------
# kl_div


@pytest.mark.parametrize(
    ("shape", "log_target", "zeros", "reduction", "dtype"),
    [
        case
        for case in itertools.product(
            ELEMENTWISE_SHAPES, (False, True), (False, True),
            ("none", "mean", "sum", "batchmean"), DTYPES,
        )
        if not (case[1] and case[2])  # log_target with -inf targets: torch's NaN case
    ],
)  # fmt: skip
def test_kl_div(shape: str, log_target: bool, zeros: bool, reduction: str, dtype: str) -> None:
    g = generator("kl", shape, log_target, zeros, reduction, dtype)
    dims = ELEMENTWISE_SHAPES[shape]
    d = DTYPES[dtype]
    log_q = torch.log_softmax(randn(dims, F64, g), dim=-1).to(d)
    p = torch.softmax(randn(dims, F64, g), dim=-1)
    if zeros:
        p.view(-1)[::3] = 0.0
    target = (p.log() if log_target else p).to(d)
    kwargs = {"reduction": reduction, "log_target": log_target}
    # torch's derivative w.r.t. a zero target is -inf; compare target gradients elsewhere
    wrt = (0,) if zeros else (0, 1)
    assert_matches_torch("kl_div", (log_q, target), kwargs, wrt=wrt)


def test_kl_div_mean_warns_and_batchmean_is_the_divergence() -> None:
    log_q = torch.log(torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=F64))
    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=F64)
    with pytest.warns(UserWarning, match="batchmean"):
        mean = F.kl_div(log_q, p, reduction="mean")
    batchmean = F.kl_div(log_q, p, reduction="batchmean")
    expected = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75) + math.log(2.0)) / 2
    assert batchmean.item() == pytest.approx(expected, rel=1e-12)
    assert mean.item() == pytest.approx(expected / 2, rel=1e-12)


# ----------------------------------------------------------------------------------------
# regression losses


@pytest.mark.parametrize(
    ("name", "shape", "weighted", "reduction", "dtype"),
    list(
        itertools.product(
            ("mse_loss", "l1_loss"), ELEMENTWISE_SHAPES, (False, True), REDUCTIONS, DTYPES
        )
    ),
)
def test_mse_and_l1(name: str, shape: str, weighted: bool, reduction: str, dtype: str) -> None:
    g = generator(name, shape, weighted, reduction, dtype)
    dims = ELEMENTWISE_SHAPES[shape]
    d = DTYPES[dtype]
    x, t = randn(dims, d, g), randn(dims, d, g)
    weight = torch.rand(dims, generator=g, dtype=F64).to(d) if weighted else None
    assert_matches_torch(name, (x, t), {"reduction": reduction, "weight": weight}, wrt=(0, 1))


@pytest.mark.parametrize(
    ("shape", "beta", "reduction", "dtype"),
    list(itertools.product(ELEMENTWISE_SHAPES, (0.0, 0.5, 1.0, 2.5), REDUCTIONS, DTYPES)),
)
def test_smooth_l1_loss(shape: str, beta: float, reduction: str, dtype: str) -> None:
    g = generator("smooth_l1", shape, beta, reduction, dtype)
    dims = ELEMENTWISE_SHAPES[shape]
    x, t = randn(dims, DTYPES[dtype], g), randn(dims, DTYPES[dtype], g)
    kwargs = {"reduction": reduction, "beta": beta}
    assert_matches_torch("smooth_l1_loss", (x, t), kwargs, wrt=(0, 1))


@pytest.mark.parametrize(
    ("shape", "delta", "weighted", "reduction", "dtype"),
    list(itertools.product(ELEMENTWISE_SHAPES, (0.5, 1.0, 2.5), (False, True), REDUCTIONS, DTYPES)),
)
def test_huber_loss(shape: str, delta: float, weighted: bool, reduction: str, dtype: str) -> None:
    g = generator("huber", shape, delta, weighted, reduction, dtype)
    dims = ELEMENTWISE_SHAPES[shape]
    d = DTYPES[dtype]
    x, t = randn(dims, d, g), randn(dims, d, g)
    weight = torch.rand(dims, generator=g, dtype=F64).to(d) if weighted else None
    kwargs = {"reduction": reduction, "delta": delta, "weight": weight}
    assert_matches_torch("huber_loss", (x, t), kwargs, wrt=(0, 1))


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss"])
def test_regression_target_broadcasts_with_torchs_warning(name: str) -> None:
    g = generator("broadcast", name)
    x, t = randn((4, 3), F64, g), randn((3,), F64, g)
    with pytest.warns(UserWarning, match="different to the input size"):
        getattr(F, name)(x, t)
    assert_matches_torch(name, (x, t), {"reduction": "none"}, wrt=(0, 1))


# ----------------------------------------------------------------------------------------
# legacy size_average / reduce

LEGACY = [
    (s, r) for s, r in itertools.product((None, True, False), repeat=2) if (s, r) != (None, None)
]


def _legacy_args(name: str) -> tuple[Tensor, ...]:
    g = generator("legacy", name)
    if name in ("cross_entropy", "nll_loss"):
        logits = randn((4, 5, 2), F64, g)
        x = logits if name == "cross_entropy" else torch.log_softmax(logits, dim=1)
        target = torch.randint(0, 5, (4, 2), generator=g)
        target[0, 0] = -100
        return x, target
    if name == "binary_cross_entropy":
        return torch.rand(4, 3, generator=g, dtype=F64) * 0.9 + 0.05, torch.rand(
            4, 3, generator=g, dtype=F64
        )
    if name == "kl_div":
        return torch.log_softmax(randn((4, 3), F64, g), -1), torch.softmax(
            randn((4, 3), F64, g), -1
        )
    return randn((4, 3), F64, g), torch.rand(4, 3, generator=g, dtype=F64)


@pytest.mark.parametrize(
    ("name", "size_average", "reduce"),
    [(n, s, r) for n in NAMES if n != "huber_loss" for s, r in LEGACY],
)
def test_legacy_size_average_and_reduce(
    name: str, size_average: bool | None, reduce: bool | None
) -> None:
    """The legacy flags override ``reduction`` by torch's rule, with torch's warning."""
    args = _legacy_args(name)
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        getattr(F, name)(*args, size_average=size_average, reduce=reduce, reduction="none")
    kwargs = {"size_average": size_average, "reduce": reduce, "reduction": "none"}
    assert_matches_torch(name, args, kwargs, wrt=(0,))
    expected = "none" if reduce is False else ("sum" if size_average is False else "mean")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        legacy = getattr(F, name)(*args, size_average=size_average, reduce=reduce)
        plain = getattr(F, name)(*args, reduction=expected)
    torch.testing.assert_close(legacy, plain, rtol=0, atol=0)


def test_elementwise_mean_is_torchs_deprecated_mean() -> None:
    x, t = randn((4, 3), F64, generator("em")), torch.zeros(4, 3, dtype=F64)
    with pytest.warns(UserWarning, match="elementwise_mean"):
        value = F.mse_loss(x, t, reduction="elementwise_mean")
    torch.testing.assert_close(value, (x * x).mean())


# ----------------------------------------------------------------------------------------
# where torch returns NaN for a finite answer: ours is finite, torch's is NaN


def _torch_quiet(fn: Callable[..., Tensor], *args: Any, **kwargs: Any) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


MEAN_OVER_NOTHING = {
    "all ignored": (torch.zeros(3, 4, dtype=F64), torch.full((3,), -100), None),
    "unbatched ignored": (torch.zeros(4, dtype=F64), torch.tensor(-100), None),
    "K-dim all ignored": (torch.zeros(2, 4, 3, dtype=F64), torch.full((2, 3), -100), None),
    "empty batch": (torch.zeros(0, 4, dtype=F64), torch.zeros(0, dtype=torch.int64), None),
    "zero total weight": (
        torch.zeros(3, 4, dtype=F64),
        torch.tensor([0, 1, 1]),
        torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=F64),
    ),
}


@pytest.mark.parametrize(
    ("name", "impl"), [("cross_entropy", "torch"), ("cross_entropy", "fused"), ("nll_loss", None)]
)
@pytest.mark.parametrize("case", list(MEAN_OVER_NOTHING))
def test_mean_over_nothing_is_zero(case: str, name: str, impl: str | None) -> None:
    if impl is not None:
        _skip_unless_impl(impl)
    base, target, weight = MEAN_OVER_NOTHING[case]
    x = (base + torch.arange(base.numel(), dtype=F64).reshape(base.shape) / 7).requires_grad_()
    ours = {"impl": impl} if impl is not None else {}
    loss = getattr(F, name)(x, target, weight=weight, **ours)
    (grad,) = torch.autograd.grad(loss, x)
    assert loss.item() == 0.0
    assert torch.equal(grad, torch.zeros_like(x))
    assert math.isnan(_torch_quiet(getattr(TF, name), x, target, weight=weight).item())


def test_minus_inf_logit_with_zero_label_mass() -> None:
    """Probability targets: a -inf logit whose class has probability 0 contributes 0."""
    logits = torch.tensor([[2.0, -math.inf, 0.5], [0.1, 0.2, 0.3]], dtype=F64)
    target = torch.tensor([[0.7, 0.0, 0.3], [0.2, 0.5, 0.3]], dtype=F64)
    x = logits.clone().requires_grad_()
    loss = F.cross_entropy(x, target)
    (grad,) = torch.autograd.grad(loss, x)
    # the same examples without the impossible class, on torch itself
    first = TF.cross_entropy(logits[:1, [0, 2]], target[:1, [0, 2]], reduction="sum")
    second = TF.cross_entropy(logits[1:], target[1:], reduction="sum")
    torch.testing.assert_close(loss, (first + second) / 2, rtol=1e-12, atol=0)
    assert torch.isfinite(grad).all()
    assert grad[0, 1].item() == 0.0
    assert math.isnan(TF.cross_entropy(logits, target).item())


@pytest.mark.parametrize("pos_weight", [None, 2.0])
def test_bce_with_logits_at_infinity(pos_weight: float | None) -> None:
    inf = math.inf
    x = torch.tensor([inf, -inf, inf, -inf], dtype=F64, requires_grad=True)
    y = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=F64)
    pw = None if pos_weight is None else torch.tensor([pos_weight], dtype=F64)
    loss = F.binary_cross_entropy_with_logits(x, y, reduction="none", pos_weight=pw)
    assert loss.tolist() == [0.0, 0.0, inf, inf]
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert grad.tolist() == [0.0, 0.0, 1.0, -(pos_weight or 1.0)]  # sigmoid(x) - y, scaled
    theirs = TF.binary_cross_entropy_with_logits(x, y, reduction="none", pos_weight=pw)
    assert torch.isnan(theirs[[0, 1, 3]]).all()


def test_kl_div_zero_target_at_minus_inf_input() -> None:
    log_q = torch.tensor([[-math.inf, 0.0]], dtype=F64, requires_grad=True)
    p = torch.tensor([[0.0, 1.0]], dtype=F64)
    loss = F.kl_div(log_q, p, reduction="batchmean")
    (grad,) = torch.autograd.grad(loss, log_q)
    assert loss.item() == 0.0
    assert grad.tolist() == [[0.0, -1.0]]
    assert math.isnan(TF.kl_div(log_q, p, reduction="batchmean").item())


def test_kl_div_log_target_minus_inf() -> None:
    log_q = torch.tensor([[-math.inf, 0.0]], dtype=F64)
    log_p = torch.tensor([[-math.inf, 0.0]], dtype=F64)
    assert F.kl_div(log_q, log_p, reduction="sum", log_target=True).item() == 0.0
    assert math.isnan(TF.kl_div(log_q, log_p, reduction="sum", log_target=True).item())


def test_kl_div_batchmean_of_empty_batch() -> None:
    empty = torch.zeros(0, 3, dtype=F64)
    assert F.kl_div(empty, empty, reduction="batchmean").item() == 0.0
    assert math.isnan(TF.kl_div(empty, empty, reduction="batchmean").item())


@pytest.mark.parametrize("name", ["mse_loss", "l1_loss"])
def test_weighted_mean_with_zero_total_weight(name: str) -> None:
    x = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    t = torch.zeros(2, dtype=F64)
    w = torch.zeros(2, dtype=F64)
    loss = getattr(F, name)(x, t, weight=w)
    (grad,) = torch.autograd.grad(loss, x)
    assert loss.item() == 0.0
    assert grad.tolist() == [0.0, 0.0]
    assert math.isnan(getattr(TF, name)(x, t, weight=w).item())


# ----------------------------------------------------------------------------------------
# errors: the argument named, the value given, what is accepted


def test_impl_must_be_known() -> None:
    x, t = torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(
        ValueError,
        match=r"impl: expected one of 'auto', 'torch', 'fused', 'triton', 'native'; got 'cuda'",
    ):
        F.cross_entropy(x, t, impl="cuda")


@pytest.mark.parametrize("impl", ["fused"])
def test_fused_rejects_probability_targets(impl: str) -> None:
    x, p = torch.zeros(2, 3), torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"impl='fused'.*class-index targets.*impl='torch'"):
        F.cross_entropy(x, p, impl=impl)


def test_auto_uses_torch_for_probability_targets() -> None:
    x, p = torch.zeros(2, 3), torch.full((2, 3), 1 / 3)
    torch.testing.assert_close(F.cross_entropy(x, p), TF.cross_entropy(x, p))


def test_inplace_backward_needs_the_fused_path() -> None:
    x, t = torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"inplace_backward.*impl='torch'"):
        F.cross_entropy(x, t, inplace_backward=True, impl="torch")


def test_probability_targets_reject_non_negative_ignore_index() -> None:
    x, p = torch.zeros(2, 3), torch.full((2, 3), 1 / 3)
    with pytest.raises(ValueError, match=r"ignore_index: .*probability targets.*got 2"):
        F.cross_entropy(x, p, ignore_index=2)
    torch.testing.assert_close(F.cross_entropy(x, p, ignore_index=-1), TF.cross_entropy(x, p))


def test_probability_targets_must_be_floating() -> None:
    x, p = torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match=r"target: .*floating point; got dtype torch.int64"):
        F.cross_entropy(x, p, impl="torch")


@pytest.mark.parametrize("impl", ["torch", "fused"])
def test_out_of_range_target_names_value_and_position(impl: str) -> None:
    _skip_unless_impl(impl)
    x, t = torch.zeros(3, 4), torch.tensor([0, 7, 1])
    with pytest.raises(ValueError, match=r"^target: .*\[0, 4\).*got 7 at position \(1,\)"):
        F.cross_entropy(x, t, impl=impl)


@pytest.mark.parametrize("impl", ["torch", "fused"])
def test_target_of_wrong_shape_names_target(impl: str) -> None:
    _skip_unless_impl(impl)
    x, t = torch.zeros(3, 4, 2), torch.zeros(3, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"^target: expected shape \(3, 2\).*got \(3, 4\)"):
        F.cross_entropy(x, t, impl=impl)


def test_float_index_target_names_target() -> None:
    with pytest.raises(TypeError, match=r"^target: expected integer class indices"):
        F.nll_loss(torch.zeros(3, 4), torch.zeros(3))


@pytest.mark.parametrize("name", NAMES)
def test_unknown_reduction(name: str) -> None:
    x = torch.full((2, 3), 0.5)
    t = torch.zeros(2, dtype=torch.int64) if name in ("cross_entropy", "nll_loss") else x
    accepted = "'mean', 'batchmean', 'sum', 'none'" if name == "kl_div" else "'mean', 'sum', 'none'"
    with pytest.raises(ValueError, match=f"reduction: expected one of {accepted}; got 'avg'"):
        getattr(F, name)(x, t, reduction="avg")


@pytest.mark.parametrize("name", NAMES)
def test_inputs_must_be_tensors(name: str) -> None:
    with pytest.raises(TypeError, match=r"input: expected a torch.Tensor; got list"):
        getattr(F, name)([0.5, 0.5], torch.tensor([0.5, 0.5]))


def test_scalar_logits_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"input: expected a tensor with a class axis"):
        F.cross_entropy(torch.tensor(1.0), torch.tensor(0))


def test_weight_of_wrong_size_for_regression() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(
        ValueError, match=r"weight: expected the input's shape \(2, 3\).*got \(3,\)"
    ):
        F.mse_loss(x, x, weight=torch.ones(3))


# ----------------------------------------------------------------------------------------
# autograd: retain_graph and torch.compile


@pytest.mark.parametrize("impl", ["torch", "fused"])
def test_retain_graph_gives_the_same_gradient_twice(impl: str) -> None:
    _skip_unless_impl(impl)
    g = generator("retain", impl)
    x = randn((6, 5), F64, g).requires_grad_()
    t = torch.randint(0, 5, (6,), generator=g)
    loss = F.cross_entropy(x, t, label_smoothing=0.1, impl=impl)
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x, retain_graph=True)
    (reference,) = torch.autograd.grad(TF.cross_entropy(x, t, label_smoothing=0.1), x)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, reference, rtol=1e-7, atol=1e-12)
    loss.backward(retain_graph=True)
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * reference, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_torch_compile_matches_eager(backend: str) -> None:
    """impl="torch" under torch.compile: no crash, the eager values and gradients. The
    core's label check (a data-dependent ``bool``) is a graph break, allowed."""
    import torch._dynamo

    torch._dynamo.reset()

    def loss_fn(x: Tensor, t: Tensor, w: Tensor) -> Tensor:
        return F.cross_entropy(x, t, weight=w, label_smoothing=0.1, z_loss=1e-3, impl="torch")

    compiled = torch.compile(loss_fn, backend=backend)
    g = generator("compile")
    x = randn((8, 6), F32, g)
    t = torch.randint(0, 6, (8,), generator=g)
    t[0] = -100
    w = class_weight(6, F32, g)
    eager, eager_grads = forward_backward(loss_fn, (x, t, w), {}, (0,))
    got, got_grads = forward_backward(compiled, (x, t, w), {}, (0,))
    torch.testing.assert_close(got, eager)
    torch.testing.assert_close(got_grads[0], eager_grads[0])
    reference = TF.cross_entropy(x, t, weight=w, label_smoothing=0.1)
    assert abs(got.item() - reference.item()) > 0  # the z-loss term is really there


@pytest.mark.parametrize(
    ("shape", "reduction", "dtype", "impl"),
    list(
        itertools.product(
            ("NC", "NCd1"), ("none", "mean"), (torch.bfloat16, torch.float16), ("torch", "fused")
        )
    ),
)
def test_cross_entropy_half_precision(shape: str, reduction: str, dtype: Any, impl: str) -> None:
    """float16/bfloat16: computed in float32 and rounded once. Values and gradients within
    torch's own tolerances for the dtype of the float64 answer; values no further from it
    than torch's half-precision ones."""
    _skip_unless_impl(impl)
    g = generator("ce-half", shape, reduction, str(dtype))
    logits = randn(SHAPES[shape], dtype, g)
    target, _ = index_target(SHAPES[shape], "ignored", g)
    kwargs = {"reduction": reduction}
    mine, my_grads = forward_backward(
        F.cross_entropy, (logits, target), {**kwargs, "impl": impl}, (0,)
    )
    theirs, _ = forward_backward(TF.cross_entropy, (logits, target), kwargs, (0,))
    exact, exact_grads = forward_backward(TF.cross_entropy, (logits.double(), target), kwargs, (0,))
    assert mine.dtype == dtype and my_grads[0].dtype == dtype
    torch.testing.assert_close(mine, exact.to(dtype))
    # torch's own half-precision loss can be further off than its tolerance (bfloat16:
    # 0.0532 for 0.0507); ours is never further from the float64 answer than torch's
    assert (mine.double() - exact).abs().max() <= (theirs.double() - exact).abs().max()
    torch.testing.assert_close(my_grads[0], exact_grads[0].to(dtype))


@pytest.mark.parametrize("name", ["cross_entropy", "nll_loss"])
def test_negative_total_class_weight_divides_like_torch(name: str) -> None:
    x = torch.log_softmax(randn((3, 4), F64, generator("negative-weight", name)), dim=1)
    t = torch.tensor([0, 1, 2])
    w = torch.tensor([-1.0, -2.0, -3.0, 1.0], dtype=F64)
    ours = {"impl": "torch"} if name == "cross_entropy" else {}
    mine = getattr(F, name)(x, t, weight=w, **ours)
    torch.testing.assert_close(mine, getattr(TF, name)(x, t, weight=w), rtol=1e-7, atol=1e-12)


def _ignored_minus_inf_row(impl: str) -> tuple[Tensor, Tensor]:
    inf = math.inf
    x = torch.tensor([[2.0, -inf, 0.5], [-inf, -inf, -inf]], dtype=F64, requires_grad=True)
    target = torch.tensor([0, -100])
    loss = F.cross_entropy(x, target, impl=impl)
    (grad,) = torch.autograd.grad(loss, x)
    return loss, grad


@pytest.mark.parametrize(
    "impl",
    [
        "torch",
        "fused",
    ],
)
def test_ignored_row_of_minus_inf_has_zero_gradient(impl: str) -> None:
    _skip_unless_impl(impl)
    loss, grad = _ignored_minus_inf_row(impl)
    expected = TF.cross_entropy(torch.tensor([[2.0, 0.5]], dtype=F64), torch.tensor([0]))
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=0)
    assert torch.equal(grad[1], torch.zeros(3, dtype=F64))
