"""linear_cross_entropy under autograd's and torch's conventions: double backward (a
gradient penalty), repeated backward of a retained graph, class weights that require a
gradient, autocast, torch.func transforms, meta tensors, and hostile arguments; each
against the unfused computation in torch (or a float64 formula where torch has no such
option) under the same conditions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

import crossentropy.torch as ct
from crossentropy.torch import LinearCrossEntropyLoss, linear_cross_entropy

pytestmark = pytest.mark.skipif(
    not ct.fused_available(), reason="no C compiler: the fused kernel cannot be built"
)

TOKENS, HIDDEN, VOCABULARY = 9, 5, 7


def make(seed=0, *, dtype=torch.float64, bias=True, class_weight=True, tokens=TOKENS):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, HIDDEN, generator=g, dtype=dtype).requires_grad_()
    w = torch.randn(VOCABULARY, HIDDEN, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(VOCABULARY, generator=g, dtype=dtype).requires_grad_() if bias else None
    t = torch.randint(0, VOCABULARY, (tokens,), generator=g)
    t[::4] = -100
    cw = torch.rand(VOCABULARY, generator=g, dtype=dtype) + 0.2 if class_weight else None
    up = torch.rand(tokens, generator=g, dtype=dtype) + 0.5
    return h, w, b, t, cw, up


def reference(
    h,
    w,
    b,
    t,
    *,
    weight=None,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    ignore_index=-100,
):
    """The unfused loss in torch operations (float64): torch's cross entropy of the
    (soft-capped) logits plus the z-loss w_y * logsumexp^2, reduced over the summed weight
    of the counted targets for a mean."""
    z = F.linear(h, w, b)
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    rows = F.cross_entropy(
        z,
        t,
        weight=weight,
        reduction="none",
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )
    counted = t != ignore_index
    safe = torch.where(counted, t, 0)
    ones = torch.ones_like(rows)
    w_y = torch.where(counted, ones if weight is None else weight[safe], 0.0)
    if z_loss:
        rows = rows + z_loss * w_y * torch.logsumexp(z, -1) ** 2
    if reduction == "none":
        return rows
    return rows.sum() / w_y.sum() if reduction == "mean" else rows.sum()


def penalty_gradients(loss_fn, params, up, reduction):
    """d/d params of the gradient penalty sum_p ||d loss / d p||^2 (double backward)."""
    loss = loss_fn(*params)
    if reduction == "none":
        loss = (loss * up).sum()
    present = [p for p in params if p is not None]
    grads = torch.autograd.grad(loss, present, create_graph=True)
    penalty = sum((g * g).sum() for g in grads)
    return grads, torch.autograd.grad(penalty, present)


OPTIONS = [
    {},
    {"label_smoothing": 0.1},
    {"z_loss": 0.05},
    {"softcap": 2.5},
    {"label_smoothing": 0.2, "z_loss": 0.01, "softcap": 3.0, "ignore_index": 3},
]


@pytest.mark.parametrize(
    ("reduction", "options", "bias", "weighted"),
    [
        (r, o, b, cw)
        for (r, o), (b, cw) in itertools.product(
            itertools.product(["mean", "sum", "none"], OPTIONS), [(True, True), (False, False)]
        )
    ],
)
def test_gradient_penalty_equals_the_unfused_double_backward(reduction, options, bias, weighted):
    h, w, b, t, cw, up = make(1, bias=bias, class_weight=weighted)
    t = torch.where(t == -100, options.get("ignore_index", -100), t)
    kwargs = {"weight": cw, "reduction": reduction, **options}
    params = (h, w, b)
    ours = penalty_gradients(
        lambda h, w, b: linear_cross_entropy(
            h, w, t, linear_bias=b, impl="fused", chunk_size=4, **kwargs
        ),
        params,
        up,
        reduction,
    )
    theirs = penalty_gradients(
        lambda h, w, b: reference(h, w, b, t, **kwargs), params, up, reduction
    )
    for mine, truth in zip([*ours[0], *ours[1]], [*theirs[0], *theirs[1]], strict=True):
        torch.testing.assert_close(mine, truth, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradgradcheck(reduction):
    h, w, b, t, cw, _ = make(2, tokens=5)

    def f(h, w, b):
        return linear_cross_entropy(
            h,
            w,
            t,
            linear_bias=b,
            weight=cw,
            reduction=reduction,
            label_smoothing=0.1,
            z_loss=0.02,
            softcap=4.0,
            impl="fused",
            chunk_size=2,
        )

    assert torch.autograd.gradcheck(f, (h, w, b))
    assert torch.autograd.gradgradcheck(f, (h, w, b))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_repeated_backward_of_a_retained_graph_accumulates(reduction):
    h, w, b, t, cw, up = make(3)
    up = up if reduction == "none" else torch.ones((), dtype=up.dtype)
    # an incoming gradient of exactly 1: the saved gradients are handed out as they are
    factors = (1.0, 1.0, 1.0, 2.0, 1.0)
    loss = linear_cross_entropy(
        h, w, t, linear_bias=b, weight=cw, reduction=reduction, impl="fused", chunk_size=4
    )
    for factor in factors:
        loss.backward(up * factor, retain_graph=True)
    ours = [p.grad.clone() for p in (h, w, b)]
    for p in (h, w, b):
        p.grad = None
    ref = reference(h, w, b, t, weight=cw, reduction=reduction)
    ref.backward(up * sum(factors))
    for mine, truth in zip(ours, [p.grad for p in (h, w, b)], strict=True):
        torch.testing.assert_close(mine, truth, rtol=1e-10, atol=1e-13)


def test_class_weight_that_requires_grad_is_refused_as_torch_does():
    h, w, _, t, cw, _ = make(4)
    cw.requires_grad_()
    with pytest.raises(RuntimeError):  # torch's own answer
        F.cross_entropy(F.linear(h, w), t, weight=cw)
    for impl in ("fused", "torch", "auto"):
        with pytest.raises(ValueError, match="weight: the class weights require a gradient"):
            linear_cross_entropy(h, w, t, weight=cw, impl=impl)
    with torch.no_grad():  # nothing to differentiate: the value
        ours = linear_cross_entropy(h, w, t, weight=cw, impl="fused")
        torch.testing.assert_close(ours, F.cross_entropy(F.linear(h, w), t, weight=cw))


@pytest.mark.parametrize("impl", ["fused", "auto", "torch"])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_autocast_follows_torchs_policy(impl, reduction):
    """Under autocast torch runs the product in bfloat16 and cross entropy in float32."""
    g = torch.Generator().manual_seed(5)
    h = (2 * torch.randn(40, 64, generator=g)).requires_grad_()
    w = torch.randn(50, 64, generator=g).requires_grad_()
    b = torch.randn(50, generator=g).requires_grad_()
    t = torch.randint(0, 50, (40,), generator=g)

    def run(function):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = function()
        loss.sum().backward()
        grads = [p.grad.clone() for p in (h, w, b)]
        for p in (h, w, b):
            p.grad = None
        return loss.detach(), grads

    ours, ours_grads = run(
        lambda: linear_cross_entropy(h, w, t, linear_bias=b, reduction=reduction, impl=impl)
    )
    theirs, their_grads = run(lambda: F.cross_entropy(F.linear(h, w, b), t, reduction=reduction))
    exact = F.cross_entropy(F.linear(h, w, b), t, reduction=reduction).detach()
    assert ours.dtype == theirs.dtype == torch.float32
    # the bfloat16 product moves the loss by |theirs - exact|; ours moves with it
    assert (ours - theirs).abs().max() <= 0.1 * (theirs - exact).abs().max()
    for mine, truth in zip(ours_grads, their_grads, strict=True):
        assert mine.dtype == truth.dtype == torch.float32
        assert (mine - truth).abs().max() <= 2e-2 * truth.abs().max()


def test_torch_func_transforms_equal_the_unfused():
    h, w, b, t, cw, _ = make(6)
    h, w, b = h.detach(), w.detach(), b.detach()
    kwargs = {"weight": cw, "label_smoothing": 0.1, "z_loss": 0.01, "softcap": 3.0}

    def ours(reduction):
        return lambda h, w: linear_cross_entropy(
            h, w, t, linear_bias=b, reduction=reduction, impl="fused", chunk_size=4, **kwargs
        )

    def theirs(reduction):
        return lambda h, w: reference(h, w, b, t, reduction=reduction, **kwargs)

    for transform in (
        lambda f: torch.func.grad(f("mean"), argnums=(0, 1))(h, w),
        lambda f: torch.func.jacrev(f("none"), argnums=(0, 1))(h, w),
        lambda f: torch.func.jacrev(torch.func.grad(f("sum")))(h, w),  # a Hessian block
        lambda f: torch.func.jvp(f("none"), (h, w), (torch.ones_like(h), w / 3)),
        lambda f: torch.func.jacfwd(f("mean"), argnums=(0, 1))(h, w),
        lambda f: (torch.func.hessian(f("mean"))(h, w),),
    ):
        for mine, truth in zip(transform(ours), transform(theirs), strict=True):
            torch.testing.assert_close(mine, truth, rtol=1e-9, atol=1e-12)


def test_torch_func_vmap_and_per_sample_gradients():
    g = torch.Generator().manual_seed(7)
    hs = torch.randn(3, TOKENS, HIDDEN, generator=g, dtype=torch.float64)
    ts = torch.randint(0, VOCABULARY, (3, TOKENS), generator=g)
    ts[1, ::2] = -100
    _, w, b, _, cw, _ = make(7)
    w, b = w.detach(), b.detach()

    def ours(h, t, w):
        return linear_cross_entropy(
            h, w, t, linear_bias=b, weight=cw, label_smoothing=0.1, impl="fused", chunk_size=4
        )

    def theirs(h, t, w):
        return reference(h, w, b, t, weight=cw, label_smoothing=0.1)

    for transform in (
        lambda f: torch.func.vmap(f, in_dims=(0, 0, None))(hs, ts, w),
        lambda f: torch.func.vmap(torch.func.grad(f, argnums=2), in_dims=(0, 0, None))(hs, ts, w),
        lambda f: torch.func.vmap(f, in_dims=(0, None, None))(hs, ts[0], w),
    ):
        torch.testing.assert_close(transform(ours), transform(theirs), rtol=1e-9, atol=1e-12)
    # per-sample class weights too
    weights = torch.rand(3, VOCABULARY, generator=g, dtype=torch.float64) + 0.1

    def ours_weighted(h, weight):
        return linear_cross_entropy(h, w, ts[0], weight=weight, label_smoothing=0.1, impl="fused")

    def theirs_weighted(h, weight):
        return reference(h, w, None, ts[0], weight=weight, label_smoothing=0.1)

    torch.testing.assert_close(
        torch.func.vmap(torch.func.grad(ours_weighted))(hs, weights),
        torch.func.vmap(torch.func.grad(theirs_weighted))(hs, weights),
        rtol=1e-9,
        atol=1e-12,
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("impl", ["fused", "auto", "torch"])
def test_meta_tensors_give_the_shapes(reduction, impl):
    h = torch.empty(2, 3, HIDDEN, device="meta", requires_grad=True)
    w = torch.empty(VOCABULARY, HIDDEN, device="meta", requires_grad=True)
    t = torch.empty(2, 3, dtype=torch.int64, device="meta")
    loss, lse = linear_cross_entropy(
        h, w, t, reduction=reduction, impl=impl, z_loss=0.1, softcap=2.0, return_lse=True
    )
    expected = F.cross_entropy(F.linear(h, w).transpose(1, 2), t, reduction=reduction)
    assert loss.shape == expected.shape and loss.dtype == expected.dtype
    assert loss.device.type == lse.device.type == "meta"
    assert lse.shape == (2, 3) and lse.dtype == torch.float32
    loss.sum().backward()
    assert h.grad.shape == h.shape and w.grad.shape == w.shape


# --------------------------------------------------------------------------- hostile


def _bad(**overrides):
    h, w, b, t, cw, _ = make(8)
    args = {"input": h, "linear_weight": w, "target": t, "linear_bias": b, "weight": cw}
    args.update(overrides)
    return lambda: linear_cross_entropy(
        args.pop("input"), args.pop("linear_weight"), args.pop("target"), **args
    )


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: _bad(ignore_index=1.5)(),
            TypeError,
            r"ignore_index: expected an integer; got 1\.5",
        ),
        (lambda: _bad(ignore_index=True)(), TypeError, "ignore_index"),
        (lambda: _bad(ignore_index=2**70)(), ValueError, "ignore_index: expected an integer in"),
        (lambda: _bad(return_lse=1)(), TypeError, "return_lse: expected True or False"),
        (lambda: _bad(skip_small_gradients=0)(), TypeError, "skip_small_gradients"),
        (lambda: _bad(chunk_size=True)(), ValueError, "chunk_size"),
        (lambda: _bad(chunk_size=-3)(), ValueError, "chunk_size"),
        (lambda: _bad(chunk_size=2.0)(), ValueError, "chunk_size"),
        (lambda: _bad(label_smoothing=math.nan)(), ValueError, "label_smoothing"),
        (lambda: _bad(z_loss=-1.0)(), ValueError, "z_loss"),
        (lambda: _bad(softcap=0.0)(), ValueError, "softcap"),
        (lambda: _bad(softcap=math.nan)(), ValueError, "softcap"),
        (lambda: _bad(reduction="avg")(), ValueError, "reduction"),
        (lambda: _bad(target=[0, 1])(), TypeError, "target: expected a tensor"),
        (lambda: _bad(target=torch.zeros(TOKENS))(), TypeError, "target: expected integer"),
        (
            lambda: _bad(weight=torch.ones(3, dtype=torch.float64))(),
            ValueError,
            r"weight: .*\(7,\)",
        ),
        (lambda: _bad(weight=[1.0] * VOCABULARY)(), TypeError, "weight: expected a floating"),
        (lambda: _bad(weight=torch.ones(VOCABULARY, dtype=torch.int64))(), TypeError, "weight"),
        (
            lambda: _bad(linear_bias=torch.zeros(VOCABULARY))(),
            TypeError,
            "linear_bias: expected the input's dtype",
        ),
        (
            lambda: _bad(linear_bias=torch.zeros(1, VOCABULARY, dtype=torch.float64))(),
            ValueError,
            "linear_bias",
        ),
        (lambda: _bad(linear_bias=[0.0] * VOCABULARY)(), ValueError, "linear_bias"),
        (
            lambda: _bad(linear_weight=torch.zeros(0, HIDDEN, dtype=torch.float64))(),
            ValueError,
            "at least one row",
        ),
        (lambda: _bad(input=torch.zeros(TOKENS, HIDDEN, dtype=torch.int64))(), TypeError, "input"),
        (lambda: _bad(input=torch.zeros((), dtype=torch.float64))(), TypeError, "input"),
        (
            lambda: _bad(
                linear_weight=torch.zeros(VOCABULARY, HIDDEN, dtype=torch.float64, device="meta")
            )(),
            ValueError,
            "linear_weight: expected the input's device cpu; got meta",
        ),
        (
            lambda: _bad(target=torch.zeros(TOKENS, dtype=torch.int64, device="meta"))(),
            ValueError,
            "target: expected the input's device",
        ),
        (
            lambda: _bad(target=torch.full((TOKENS,), VOCABULARY))(),
            ValueError,
            r"labels: expected class indices in \[0, 7\)",
        ),
    ],
)
def test_hostile_arguments_raise_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_module_refuses_a_bad_ignore_index():
    h, w, _, t, _, _ = make(9)
    with pytest.raises(TypeError, match="ignore_index"):
        LinearCrossEntropyLoss(ignore_index=2.5)(h, w, t)


@pytest.mark.parametrize("impl", ["fused", "torch"])
@pytest.mark.parametrize("name", ["softcap", "z_loss"])
def test_infinite_softcap_or_z_loss_is_refused(impl, name):
    h, w, _b, t, _cw, _ = make(10)
    with pytest.raises(ValueError, match=name):
        linear_cross_entropy(h, w, t, impl=impl, **{name: math.inf})


def _grads_of(loss, params):
    return torch.autograd.grad(loss, [p for p in params if p is not None], retain_graph=True)


@pytest.mark.parametrize(
    "case",
    [
        "expanded input",
        "strided input",
        "strided weight",
        "strided bias",
        "strided target",
        "huge chunk",
        "no tokens",
        "no hidden features",
        "nan input",
        "inf input",
        "leading dims",
    ],
)
def test_odd_tensors_give_torchs_answer(case):
    h, w, b, t, cw, _ = make(11)
    h0, w0, b0, t0 = h, w, b, t
    if case == "expanded input":
        h0 = h[:1].expand(TOKENS, HIDDEN)
    elif case == "strided input":
        h0 = torch.cat([h, h], 1)[:, ::2]
    elif case == "strided weight":
        w0 = w.t().contiguous().t()
    elif case == "strided bias":
        b0 = torch.stack([b, b], 1)[:, 0]
    elif case == "strided target":
        t0 = torch.stack([t, t], 1)[:, 1]
    elif case == "no tokens":
        h0, t0 = h[:0], t[:0]
    elif case == "no hidden features":
        h0, w0 = h[:, :0], w[:, :0]
    elif case in ("nan input", "inf input"):
        h0 = h.clone()
        h0[2, 1] = math.nan if case == "nan input" else math.inf
    elif case == "leading dims":
        h0, t0 = h[:8].reshape(2, 4, HIDDEN), t[:8].reshape(2, 4)
    chunk = 10**12 if case == "huge chunk" else 3
    for reduction in ("sum", "none"):  # a mean over no tokens is 0 here, NaN in torch
        ours = linear_cross_entropy(
            h0,
            w0,
            t0,
            linear_bias=b0,
            weight=cw,
            reduction=reduction,
            chunk_size=chunk,
            impl="fused",
        )
        logits = F.linear(h0, w0, b0)
        theirs = F.cross_entropy(
            logits.reshape(-1, VOCABULARY), t0.reshape(-1), weight=cw, reduction=reduction
        ).reshape(ours.shape)
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12, equal_nan=True)
        upstream = torch.linspace(0.5, 1.5, ours.numel(), dtype=ours.dtype).reshape(ours.shape)
        # an infinite hidden state: the row's loss is NaN in both; the fused kernel's
        # gradient of that row is 0 (not NaN) at the -inf logits, so dW and db differ there
        params = (h,) if case == "inf input" else (h, w, b)
        mine = _grads_of((ours * upstream).sum(), params)
        truth = _grads_of((theirs * upstream).sum(), params)
        for a, e in zip(mine, truth, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12, equal_nan=True)
