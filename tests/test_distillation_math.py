"""The float64 distillation reference of the math layer (crossentropy.losses.distillation_loss
and crossentropy.gradients.distillation_loss) against an independent NumPy computation by
the definitions (M in probability space, KL as sum p log(p / q)), torch.nn.functional.kl_div
and central finite differences."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from crossentropy import distillation_loss, gradients, losses

DIVERGENCES = [
    ("forward_kl", 0.5),
    ("reverse_kl", 0.5),
    ("jsd", 0.0),
    ("jsd", 0.3),
    ("jsd", 0.5),
    ("jsd", 1.0),
]


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64, the max taken as 0 where it is not finite."""
    with np.errstate(all="ignore"):
        m = np.max(x, axis=-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        return (x - m) - np.log(np.sum(np.exp(x - m), axis=-1, keepdims=True))


def kl(log_p: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """KL(p || q) per row, p log(p / q) taken as 0 where p is 0."""
    with np.errstate(all="ignore"):
        p = np.exp(log_p)
        return np.where(p > 0, p * (log_p - log_q), 0.0).sum(axis=-1)


def divergence(s: np.ndarray, t: np.ndarray, name: str, beta: float, temp: float) -> np.ndarray:
    """D per row by the definitions; the jsd's mixture formed from the probabilities."""
    log_ps, log_pt = log_softmax(s / temp), log_softmax(t / temp)
    if name == "forward_kl" or (name == "jsd" and beta == 0.0):
        return kl(log_pt, log_ps)
    if name == "reverse_kl" or (name == "jsd" and beta == 1.0):
        return kl(log_ps, log_pt)
    with np.errstate(all="ignore"):
        log_m = np.log(beta * np.exp(log_pt) + (1.0 - beta) * np.exp(log_ps))
    return beta * kl(log_pt, log_m) + (1.0 - beta) * kl(log_ps, log_m)


def per_token(s, t, y, name, beta, temp, soft, hard, ignore_index=-100):  # type: ignore[no-untyped-def]
    """Per-token losses (0 at ignored tokens) and the mask of the counted ones."""
    d = divergence(s, t, name, beta, temp)
    loss = soft * d
    live = np.ones(s.shape[:-1], dtype=bool) if y is None else y != ignore_index
    if hard:
        safe = np.where(live, y, 0)
        ce = -np.take_along_axis(log_softmax(s), safe[..., None], axis=-1)[..., 0]
        loss = loss + hard * ce
    return np.where(live, loss, 0.0), live


def reduce(loss: np.ndarray, live: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.asarray(loss.sum())
    count = live.sum()
    return np.asarray(loss.sum() / count if count else 0.0)


def draw(seed: int, shape=(4, 6), scale=3.0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    s = rng.normal(size=shape) * scale
    t = rng.normal(size=shape) * scale
    y = rng.integers(0, shape[-1], size=shape[:-1])
    return s, t, y


@pytest.mark.parametrize(("name", "beta"), DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.5])
@pytest.mark.parametrize(("soft", "hard"), [(1.0, 0.0), (0.5, 0.7), (0.0, 1.0)])
def test_loss_equals_the_definitions(
    name: str, beta: float, temperature: float, soft: float, hard: float
) -> None:
    s, t, y = draw(7, (2, 3, 6))
    y[0, 1] = -100
    for reduction in ("mean", "sum", "none"):
        got = distillation_loss(
            s,
            t,
            y,
            divergence=name,
            beta=beta,
            temperature=temperature,
            soft_weight=soft,
            hard_weight=hard,
            reduction=reduction,
        )
        want, live = per_token(s, t, y, name, beta, temperature, soft, hard)
        np.testing.assert_allclose(got, reduce(want, live, reduction), rtol=1e-12, atol=1e-14)
        assert np.shape(got) == np.shape(reduce(want, live, reduction))


@pytest.mark.parametrize(("name", "beta"), DIVERGENCES)
def test_kls_equal_torch_kl_div(name: str, beta: float) -> None:
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    s, t, _ = draw(3, (5, 9))
    temperature = 1.7
    log_ps = torch.log_softmax(torch.from_numpy(s) / temperature, dim=-1)
    log_pt = torch.log_softmax(torch.from_numpy(t) / temperature, dim=-1)

    def kl_div(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:  # KL(p || q)
        return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)

    if name == "forward_kl" or beta == 0.0:
        want = kl_div(log_pt, log_ps)
    elif name == "reverse_kl" or beta == 1.0:
        want = kl_div(log_ps, log_pt)
    else:
        log_m = torch.log(beta * log_pt.exp() + (1 - beta) * log_ps.exp())
        want = beta * kl_div(log_pt, log_m) + (1 - beta) * kl_div(log_ps, log_m)
    got = distillation_loss(
        s, t, divergence=name, beta=beta, temperature=temperature, reduction="none"
    )
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-14)
    # the same call on torch tensors (the array API): the same numbers, a torch tensor
    on_torch = distillation_loss(
        torch.from_numpy(s),
        torch.from_numpy(t),
        divergence=name,
        beta=beta,
        temperature=temperature,
        reduction="none",
    )
    assert isinstance(on_torch, torch.Tensor)
    np.testing.assert_allclose(on_torch.numpy(), want.numpy(), rtol=1e-12, atol=1e-14)


def finite_differences(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:  # type: ignore[no-untyped-def]
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[index] += h
        down[index] -= h
        grad[index] = (f(up) - f(down)) / (2 * h)
    return grad


@pytest.mark.parametrize(("name", "beta"), DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 0.6, 2.0])
@pytest.mark.parametrize(("soft", "hard"), [(1.0, 0.0), (0.4, 0.9)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradient_equals_finite_differences(
    name: str, beta: float, temperature: float, soft: float, hard: float, reduction: str
) -> None:
    s, t, y = draw(11, (3, 5), scale=2.0)
    y[1] = 4
    y[2] = -1
    weights = np.random.default_rng(5).normal(size=3)
    settings = dict(
        divergence=name,
        beta=beta,
        temperature=temperature,
        soft_weight=soft,
        hard_weight=hard,
        ignore_index=-1,
        reduction=reduction,
    )

    def scalar(x: np.ndarray) -> float:
        value = np.asarray(distillation_loss(x, t, y, **settings))
        # "none": the gradient is that of the sum (gradients' convention); weigh the rows
        # here and the gradient's rows below, so that each row is checked on its own
        return float(np.sum(value * weights) if reduction == "none" else value)

    loss, grad = gradients.distillation_loss(s, t, y, **settings)
    np.testing.assert_allclose(loss, distillation_loss(s, t, y, **settings), rtol=0, atol=0)
    if reduction == "none":
        grad = grad * weights[:, None]
    np.testing.assert_allclose(grad, finite_differences(scalar, s), rtol=1e-6, atol=1e-8)
    assert np.all(grad[2] == 0)  # the ignored token


def test_teacher_zero_mass_terms_are_exactly_zero() -> None:
    """p_t = 0 (a -inf teacher logit): its forward-KL term is 0, never 0 * -inf; with the
    student at -inf there too, every divergence is the one over the other classes."""
    s, t, _ = draw(2, (2, 5))
    t[:, 1] = -math.inf
    got = distillation_loss(s, t, divergence="forward_kl", reduction="none")
    want = kl(log_softmax(t[:, [0, 2, 3, 4]]), log_softmax(s)[:, [0, 2, 3, 4]])
    np.testing.assert_allclose(got, want, rtol=1e-12)
    both = s.copy()
    both[:, 1] = -math.inf
    for name, beta in DIVERGENCES:
        got = distillation_loss(both, t, divergence=name, beta=beta, reduction="none")
        rest = [0, 2, 3, 4]
        want = divergence(both[:, rest], t[:, rest], name, beta, 1.0)
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        _, grad = gradients.distillation_loss(both, t, divergence=name, beta=beta)
        assert np.all(grad[:, 1] == 0) and np.all(np.isfinite(grad))


def test_student_minus_inf_under_teacher_mass() -> None:
    """Forward KL is +inf, as the math says (its gradient finite); the jsd stays finite,
    its gradient too; the reverse KL drops the class (p_s = 0 there)."""
    s, t, _ = draw(4, (2, 5))
    s[0, 2] = -math.inf
    forward = distillation_loss(s, t, divergence="forward_kl", reduction="none")
    assert forward[0] == math.inf and np.isfinite(forward[1])
    _, grad = gradients.distillation_loss(s, t, divergence="forward_kl", reduction="sum")
    assert np.all(np.isfinite(grad))
    for beta in (0.1, 0.5, 0.9):
        jsd = distillation_loss(s, t, divergence="jsd", beta=beta, reduction="none")
        assert np.all(np.isfinite(jsd))
        np.testing.assert_allclose(jsd, divergence(s, t, "jsd", beta, 1.0), rtol=1e-12)
        _, grad = gradients.distillation_loss(s, t, divergence="jsd", beta=beta)
        assert np.all(np.isfinite(grad)) and grad[0, 2] == 0
    reverse = distillation_loss(s, t, divergence="reverse_kl", reduction="none")
    np.testing.assert_allclose(reverse, divergence(s, t, "reverse_kl", 1.0, 1.0), rtol=1e-12)
    assert np.all(np.isfinite(reverse))


def test_nan_logit_makes_its_row_nan_only() -> None:
    s, t, y = draw(6, (3, 4))
    s[1, 0] = math.nan
    t[2, 3] = math.nan
    for name, beta in DIVERGENCES:
        got = distillation_loss(s, t, divergence=name, beta=beta, reduction="none")
        assert np.isfinite(got[0]) and np.isnan(got[1]) and np.isnan(got[2])
        _, grad = gradients.distillation_loss(s, t, divergence=name, beta=beta, reduction="sum")
        assert np.all(np.isfinite(grad[0])) and np.all(np.isnan(grad[1]))
    # an ignored NaN row is 0 and does not count
    y[1] = -100
    y[2] = -100
    loss = distillation_loss(s, t, y, hard_weight=1.0, reduction="mean")
    want, _ = per_token(s[:1], t[:1], y[:1], "jsd", 0.5, 1.0, 1.0, 1.0)
    np.testing.assert_allclose(loss, want.sum(), rtol=1e-12)


def test_finite_extreme_logits_give_finite_numbers() -> None:
    s = np.array([[1e30, -1e30, 0.0], [-1e30, 1e30, 5.0]])
    t = np.array([[-1e30, 1e30, 0.0], [3.0, 1e30, -1e30]])
    for name, beta in DIVERGENCES:
        loss, grad = gradients.distillation_loss(
            s, t, np.array([0, 1]), divergence=name, beta=beta, hard_weight=0.5
        )
        assert np.isfinite(loss) and np.all(np.isfinite(grad))


def test_mean_over_nothing_is_zero() -> None:
    s, t, y = draw(1, (3, 4))
    y[:] = -100
    loss, grad = gradients.distillation_loss(s, t, y, hard_weight=1.0)
    assert float(loss) == 0.0 and np.all(grad == 0)
    empty = np.zeros((0, 4))
    assert float(distillation_loss(empty, empty)) == 0.0


def test_v_equal_one_is_zero() -> None:
    s, t, y = np.array([[3.0], [-2.0]]), np.array([[1.0], [9.0]]), np.array([0, 0])
    for name, beta in DIVERGENCES:
        loss, grad = gradients.distillation_loss(
            s, t, y, divergence=name, beta=beta, hard_weight=1.0, reduction="none"
        )
        np.testing.assert_allclose(loss, 0.0, rtol=0, atol=1e-15)  # log M rounds at 1
        assert np.all(grad == 0)


def test_convention_at_beta_zero_and_one() -> None:
    s, t, _ = draw(9)
    for beta, name in ((0.0, "forward_kl"), (1.0, "reverse_kl")):
        jsd = distillation_loss(s, t, divergence="jsd", beta=beta)
        kl_value = distillation_loss(s, t, divergence=name, beta=0.25)  # beta ignored
        assert float(jsd) == float(kl_value) and float(jsd) > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"divergence": "kl"}, ValueError, "divergence: expected one of 'forward_kl'"),
        ({"divergence": None}, ValueError, "got None"),
        ({"beta": -0.1}, ValueError, "beta: expected a number in [0, 1]"),
        ({"beta": 1.5}, ValueError, "got 1.5"),
        ({"beta": math.nan}, ValueError, "beta"),
        ({"beta": "0.5"}, TypeError, "beta: expected a number"),
        ({"temperature": 0.0}, ValueError, "temperature: expected a number finite and > 0"),
        ({"temperature": math.inf}, ValueError, "temperature"),
        ({"soft_weight": -1.0}, ValueError, "soft_weight: expected a number finite and >= 0"),
        ({"hard_weight": math.inf}, ValueError, "hard_weight: expected a number finite"),
        ({"hard_weight": True}, TypeError, "hard_weight"),
        ({"soft_weight": 0.0}, ValueError, "expected at least one of them > 0"),
        ({"reduction": "batchmean"}, ValueError, "reduction: expected one of"),
        ({"ignore_index": 0.5}, TypeError, "ignore_index: expected an integer"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, error, words) -> None:  # type: ignore[no-untyped-def]
    s, t, y = draw(0)
    with pytest.raises(error, match=re.escape(words)):
        distillation_loss(s, t, y, **kwargs)
    with pytest.raises(error, match=re.escape(words)):
        gradients.distillation_loss(s, t, y, **kwargs)


def test_bad_inputs_are_refused_by_name() -> None:
    s, t, y = draw(0)
    with pytest.raises(ValueError, match=re.escape("hard_weight: a hard-label")):
        distillation_loss(s, t, hard_weight=0.5)
    with pytest.raises(ValueError, match=re.escape("vocabulary size 6")):
        distillation_loss(s, t[:, :5])
    with pytest.raises(ValueError, match=re.escape("teacher_logits: expected the shape")):
        distillation_loss(s, t[:3])
    with pytest.raises(ValueError, match=re.escape("target: expected class indices in [0, 6)")):
        distillation_loss(s, t, y + 6)
    with pytest.raises(ValueError, match=re.escape("target: expected shape (4,)")):
        distillation_loss(s, t, y[:2])
    with pytest.raises(TypeError, match=re.escape("target: expected integer")):
        distillation_loss(s, t, y.astype(float))
    with pytest.raises(TypeError, match=re.escape("teacher_logits: expected real numbers")):
        distillation_loss(s, t.astype(complex))


def test_terms_expose_the_convention() -> None:
    s, t, _ = draw(0)
    terms = losses.distillation_loss_terms(
        s,
        t,
        None,
        divergence="jsd",
        beta=1.0,
        temperature=1.0,
        ignore_index=-100,
        soft_weight=1.0,
        hard_weight=0.0,
        reduction="mean",
    )
    assert terms.divergence == "reverse_kl" and terms.beta == 1.0
