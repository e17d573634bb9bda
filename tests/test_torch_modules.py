"""crossentropy.torch's nn.Modules against torch.nn's: constructors, attributes, buffers,
state_dict, and results equal to our functional losses and to torch's modules."""

from __future__ import annotations

import inspect
import itertools
import warnings
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import crossentropy.torch as ct  # noqa: E402
from crossentropy.torch import functional as F  # noqa: E402

F64 = torch.float64
MODULES = (
    "CrossEntropyLoss",
    "NLLLoss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "KLDivLoss",
    "MSELoss",
    "L1Loss",
    "SmoothL1Loss",
    "HuberLoss",
)
FUNCTIONAL = {
    "CrossEntropyLoss": "cross_entropy",
    "NLLLoss": "nll_loss",
    "BCELoss": "binary_cross_entropy",
    "BCEWithLogitsLoss": "binary_cross_entropy_with_logits",
    "KLDivLoss": "kl_div",
    "MSELoss": "mse_loss",
    "L1Loss": "l1_loss",
    "SmoothL1Loss": "smooth_l1_loss",
    "HuberLoss": "huber_loss",
}
ATTRIBUTES = ("reduction", "ignore_index", "label_smoothing", "log_target", "beta", "delta")


def _inputs(name: str, seed: int = 0) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    if name in ("CrossEntropyLoss", "NLLLoss"):
        x = torch.randn(4, 5, 3, generator=g, dtype=F64)
        if name == "NLLLoss":
            x = torch.log_softmax(x, dim=1)
        target = torch.randint(0, 5, (4, 3), generator=g)
        target[0, 0] = -100
        return x, target
    if name == "BCELoss":
        return 0.05 + 0.9 * torch.rand(4, 5, generator=g, dtype=F64), torch.rand(
            4, 5, generator=g, dtype=F64
        )
    if name == "KLDivLoss":
        return torch.log_softmax(torch.randn(4, 5, generator=g, dtype=F64), -1), torch.softmax(
            torch.randn(4, 5, generator=g, dtype=F64), -1
        )
    return torch.randn(4, 5, generator=g, dtype=F64), torch.rand(4, 5, generator=g, dtype=F64)


@pytest.mark.parametrize("name", MODULES)
def test_constructor_signature_is_torchs(name: str) -> None:
    mine = list(inspect.signature(getattr(ct, name)).parameters.values())
    theirs = list(inspect.signature(getattr(torch.nn, name)).parameters.values())
    assert [(p.name, p.kind, p.default) for p in mine[: len(theirs)]] == [
        (p.name, p.kind, p.default) for p in theirs
    ]
    extras = [(p.name, p.kind, p.default) for p in mine[len(theirs) :]]
    keyword = inspect.Parameter.KEYWORD_ONLY
    expected = (
        [
            ("z_loss", keyword, 0.0),
            ("softcap", keyword, None),
            ("inplace_backward", keyword, False),
            ("impl", keyword, "auto"),
        ]
        if name == "CrossEntropyLoss"
        else []
    )
    assert extras == expected


@pytest.mark.parametrize("name", MODULES)
def test_is_an_nn_module_exported(name: str) -> None:
    cls = getattr(ct, name)
    assert issubclass(cls, torch.nn.Module)
    assert name in ct.__all__


def _constructions(name: str) -> list[dict[str, Any]]:
    """Constructor keyword sets for ``name``, generated from its torch signature."""
    params = inspect.signature(getattr(torch.nn, name)).parameters
    options: dict[str, list[Any]] = {
        "weight": [None, torch.tensor([1.0, 2.0, 0.5, 1.5, 1.0], dtype=F64)],
        "pos_weight": [None, torch.tensor([2.0, 1.0, 0.5, 3.0, 1.0], dtype=F64)],
        "reduction": ["mean", "sum", "none"],
        "ignore_index": [-100, 1],
        "label_smoothing": [0.0, 0.2],
        "log_target": [False, True],
        "beta": [1.0, 0.3],
        "delta": [1.0, 0.3],
    }
    names = [p for p in params if p in options]
    return [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*(options[n] for n in names))
    ]


CASES = [(name, kwargs) for name in MODULES for kwargs in _constructions(name)]


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_module_matches_torch_module_and_functional(name: str, kwargs: dict[str, Any]) -> None:
    """Attributes, buffers and state_dict like torch's module; forward equal to torch's
    module and to our functional loss with the same arguments."""
    ours = getattr(ct, name)(**kwargs)
    theirs = getattr(torch.nn, name)(**kwargs)
    for attribute in ATTRIBUTES:
        assert getattr(ours, attribute, "absent") == getattr(theirs, attribute, "absent")
    assert list(ours._buffers) == list(theirs._buffers)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)

    x, target = _inputs(name)
    if kwargs.get("ignore_index", -100) != -100:
        target = torch.where(target == -100, kwargs["ignore_index"], target)
    if name == "KLDivLoss" and kwargs["log_target"]:
        target = target.log()
    xa = x.clone().requires_grad_()
    xb = x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mine = ours(xa, target)
        reference = theirs(xb, target)
        functional_kwargs = {k: v for k, v in kwargs.items()}
        direct = getattr(F, FUNCTIONAL[name])(x, target, **functional_kwargs)
    torch.testing.assert_close(mine, reference, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(mine.detach(), direct, rtol=0, atol=0)
    upstream = torch.linspace(0.5, 1.5, mine.numel(), dtype=F64).reshape(mine.shape)
    (ga,) = torch.autograd.grad(mine, xa, upstream)
    (gb,) = torch.autograd.grad(reference, xb, upstream)
    torch.testing.assert_close(ga, gb, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("name", [n for n in MODULES if n != "HuberLoss"])
@pytest.mark.parametrize(
    ("size_average", "reduce"),
    [(s, r) for s, r in itertools.product((None, True, False), repeat=2) if (s, r) != (None, None)],
)
def test_legacy_constructor_flags(
    name: str, size_average: bool | None, reduce: bool | None
) -> None:
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        ours = getattr(ct, name)(size_average=size_average, reduce=reduce, reduction="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = getattr(torch.nn, name)(size_average=size_average, reduce=reduce, reduction="none")
    assert ours.reduction == theirs.reduction
    x, target = _inputs(name, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(ours(x, target), theirs(x, target), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("name", ["CrossEntropyLoss", "NLLLoss", "BCELoss", "BCEWithLogitsLoss"])
def test_torch_state_dict_loads_into_ours(name: str) -> None:
    """A checkpoint of torch's module loads into ours (strict) and back."""
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5, 1.0], dtype=F64)
    kwargs: dict[str, Any] = {"weight": weight}
    if name == "BCEWithLogitsLoss":
        kwargs["pos_weight"] = 2 * weight
    theirs = getattr(torch.nn, name)(**kwargs)
    ours = getattr(ct, name)(**{k: torch.zeros_like(v) for k, v in kwargs.items()})
    ours.load_state_dict(theirs.state_dict(), strict=True)
    for key, value in kwargs.items():
        assert torch.equal(getattr(ours, key), value)
    fresh = getattr(torch.nn, name)(**{k: torch.zeros_like(v) for k, v in kwargs.items()})
    fresh.load_state_dict(ours.state_dict(), strict=True)
    assert torch.equal(fresh.weight, weight)


def test_buffers_follow_dtype_conversion() -> None:
    loss = ct.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 3.0]))
    assert loss.weight is not None and loss.weight.dtype == torch.float32
    loss.double()
    assert loss.weight.dtype == torch.float64
    x = torch.randn(4, 3, dtype=F64)
    t = torch.tensor([0, 1, 2, 1])
    expected = torch.nn.functional.cross_entropy(x, t, weight=loss.weight)
    torch.testing.assert_close(loss(x, t), expected, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("impl", ["torch", "fused", "auto"])
def test_cross_entropy_loss_extras_reach_the_functional(impl: str) -> None:
    if impl == "fused":
        from test_torch_functional import FUSED_REASON

        if FUSED_REASON is not None:
            pytest.skip(FUSED_REASON)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, generator=g, dtype=F64)
    t = torch.randint(0, 4, (6,), generator=g)
    extras = {"z_loss": 1e-2, "softcap": 2.0, "impl": impl}
    module = ct.CrossEntropyLoss(label_smoothing=0.1, **extras)
    assert (module.z_loss, module.softcap, module.impl) == (1e-2, 2.0, impl)
    assert module.inplace_backward is False
    expected = F.cross_entropy(x, t, label_smoothing=0.1, z_loss=1e-2, softcap=2.0, impl="torch")
    torch.testing.assert_close(module(x, t), expected, rtol=1e-7, atol=1e-12)
    plain = torch.nn.functional.cross_entropy(x, t, label_smoothing=0.1)
    assert not torch.allclose(module(x, t), plain)  # z-loss and softcap change the loss


def test_cross_entropy_loss_rejects_an_unknown_impl() -> None:
    with pytest.raises(ValueError, match="impl: expected one of"):
        ct.CrossEntropyLoss(impl="cuda")  # at construction
    module = ct.CrossEntropyLoss()
    module.impl = "cuda"
    with pytest.raises(ValueError, match="impl: expected one of"):
        module(torch.zeros(2, 3), torch.zeros(2, dtype=torch.int64))  # and at forward


def test_huber_delta_must_be_a_number() -> None:
    with pytest.raises(TypeError, match="delta: expected a number"):
        ct.HuberLoss(delta="1.0")  # type: ignore[arg-type]
