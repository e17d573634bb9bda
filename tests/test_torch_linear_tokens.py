"""linear_token_log_probs against the unfused float64 computation: log p(target) and the
softmax entropy of (h W^T + b) / T per token, and their gradients with respect to the
input, the weight and the bias for random incoming gradients on both outputs at once,
over generated shapes, temperatures, ignore_index, bias, dtype, chunk sizes and
vocabulary blocks; the ignored tokens; the autograd corners; bad arguments; peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossentropy.torch import engine, heads, linear_token_log_probs

DTYPES = (torch.float64, torch.float32, torch.bfloat16)


def reference64(h, w, b, y, temperature, ignore_index):
    """The float64 computation on the given (rounded) inputs, independent of the library:
    u = (h W^T + b) / T, lse = logsumexp u, log p_y = u_y - lse, H = lse - sum_k p_k u_k."""
    z = h.double() @ w.double().T
    if b is not None:
        z = z + b.double()
    u = z / temperature
    lse = torch.logsumexp(u, -1)
    live = y != ignore_index
    u_y = u.gather(-1, torch.where(live, y, 0).unsqueeze(-1)).squeeze(-1)
    p = torch.softmax(u, -1)
    entropy = lse - (p * u).sum(-1)
    return torch.where(live, u_y - lse, 0.0), torch.where(live, entropy, 0.0)


def blocked_budget(tokens, itemsize):
    """A CHUNK_BYTES under which a chunk of ``tokens`` or fewer rows of more than 3 columns
    is swept in vocabulary blocks (of 3 columns for a chunk of ``tokens``)."""
    return 3 * tokens * itemsize


def leaves(h, w, b, dtype=None):
    """Fresh leaves requiring grad (cast to ``dtype`` when given)."""
    out = []
    for x in (h, w, b):
        if x is None:
            out.append(None)
            continue
        x = x.detach() if dtype is None else x.detach().to(dtype)
        out.append(x.clone().requires_grad_(True))
    return out


def outputs_and_grads(function, h, w, b, a, c):
    """log p, H and d/d(h, W, b) of sum a log p + c H."""
    log_prob, entropy = function(h, w, b)
    loss = (a * log_prob.double()).sum() + (c * entropy.double()).sum()
    params = [x for x in (h, w, b) if x is not None]
    grads = torch.autograd.grad(loss, params)
    return [log_prob.detach(), entropy.detach(), *grads]


def assert_near(ours, reference, dtype, what, temperature=1.0):
    """float64: 1e-7 relative per element; float32: 1e-5 relative to the tensor's scale,
    and never below 1e-7 absolute (log p_y and H of a nearly one-hot row are -log s and
    log s - t / s with s = 1 + epsilon: float32 holds s to an ulp of 1, 6e-8, as does
    torch's own log_softmax); bfloat16: the logits themselves are rounded to bfloat16 (the
    products run in it), so within a few of its ulps (2^-8) of the tensor's scale, times
    1 / T below T = 1 (u = z / T carries the logits' rounding divided by T; the unfused
    bfloat16 computation is as far from the float64 one)."""
    ours, reference = ours.double(), reference.double()
    if dtype == torch.float64:
        torch.testing.assert_close(ours, reference, rtol=1e-7, atol=1e-12, msg=what)
        return
    rel = 1e-5 if dtype == torch.float32 else 3e-2 / min(temperature, 1.0)
    scale = float(reference.abs().max()) if reference.numel() else 0.0
    error = float((ours - reference).abs().max()) if reference.numel() else 0.0
    assert error <= rel * max(scale, 1.0 if dtype == torch.bfloat16 else 1e-2), (
        what,
        error,
        scale,
    )


def problem(tokens, hidden, vocabulary, *, bias, dtype, seed, ignore_index, leading=None):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=g, dtype=torch.float64)
    w = torch.randn(vocabulary, hidden, generator=g, dtype=torch.float64) * 1.5
    b = torch.randn(vocabulary, generator=g, dtype=torch.float64) if bias else None
    y = torch.randint(0, vocabulary, (tokens,), generator=g)
    y[torch.rand(tokens, generator=g) < 0.25] = ignore_index
    a = torch.randn(tokens, generator=g, dtype=torch.float64)
    c = torch.randn(tokens, generator=g, dtype=torch.float64)
    # the inputs rounded to the dtype once: both sides see the same numbers
    h, w = h.to(dtype), w.to(dtype)
    b = None if b is None else b.to(dtype)
    if leading is not None:
        h, y = h.reshape(*leading, hidden), y.reshape(leading)
        a, c = a.reshape(leading), c.reshape(leading)
    return h, w, b, y, a, c


@settings(max_examples=60, deadline=None)
@given(
    tokens=st.integers(1, 40),
    hidden=st.integers(1, 9),
    vocabulary=st.integers(1, 40),
    temperature=st.sampled_from([1.0, 0.3, 0.7, 2.5]),
    ignore_index=st.sampled_from([-100, 0, 2]),
    bias=st.booleans(),
    dtype=st.sampled_from(DTYPES),
    chunk=st.sampled_from(["default", "one", "small", "ragged", "all"]),
    blocks=st.booleans(),
    columns=st.booleans(),
    batched=st.booleans(),
    impl=st.sampled_from(["auto", "auto", "torch"]),
    seed=st.integers(0, 2**16),
)
def test_matches_the_unfused_float64_computation(
    tokens,
    hidden,
    vocabulary,
    temperature,
    ignore_index,
    bias,
    dtype,
    chunk,
    blocks,
    columns,
    batched,
    impl,
    seed,
):
    if batched and tokens % 2:
        tokens += 1
    leading = (2, tokens // 2) if batched else None
    h, w, b, y, a, c = problem(
        tokens,
        hidden,
        vocabulary,
        bias=bias,
        dtype=dtype,
        seed=seed,
        ignore_index=ignore_index,
        leading=leading,
    )
    chunk_size = {
        "default": None,
        "one": 1,
        "small": 3,
        "ragged": max(1, tokens // 2 + 1),  # two chunks, the last shorter
        "all": tokens,
    }[chunk]

    def ours(h, w, b):
        return linear_token_log_probs(
            h,
            w,
            y,
            linear_bias=b,
            temperature=temperature,
            ignore_index=ignore_index,
            return_entropy=True,
            chunk_size=chunk_size,
            impl=impl,
        )

    def unfused(h, w, b):
        return reference64(h, w, b, y, temperature, ignore_index)

    with pytest.MonkeyPatch.context() as patch:
        if blocks:  # a chunk's rows wider than the budget: the vocabulary in blocks
            patch.setattr(engine, "CHUNK_BYTES", blocked_budget(tokens, h.element_size()))
        if columns:  # every token at once over blocks of any width (engine.column_sweep)
            patch.setattr(engine, "MIN_COLUMNS", 1)
        mine = outputs_and_grads(ours, *leaves(h, w, b), a, c)
    theirs = outputs_and_grads(unfused, *leaves(h, w, b, torch.float64), a, c)
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    assert mine[0].dtype == mine[1].dtype == compute
    assert mine[0].shape == mine[1].shape == y.shape
    assert mine[2].dtype == dtype
    names = ("log_prob", "entropy", "grad_input", "grad_weight", "grad_bias")
    for name, x, ref in zip(names[: len(mine)], mine, theirs, strict=True):
        assert_near(x, ref, dtype, name, temperature)
    ignored = y == ignore_index
    assert bool((mine[0][ignored] == 0).all()) and bool((mine[1][ignored] == 0).all())
    assert bool((mine[2][ignored] == 0).all())  # an ignored token's input gets no gradient
    assert bool((mine[1] >= 0).all())  # entropy is never negative


def test_the_generated_test_reaches_the_blocked_sweep(monkeypatch):
    """With CHUNK_BYTES as the generated test sets it, the head takes each chunk's rows in
    vocabulary blocks (several ``absorb`` calls a chunk, the last block ragged), and the
    results are still the float64 computation's."""
    blocks = []
    absorb = heads.TokenHead.absorb

    def counting(self, z, start):
        blocks.append((start, z.shape[1]))
        absorb(self, z, start)

    monkeypatch.setattr(heads.TokenHead, "absorb", counting)
    monkeypatch.setattr(engine, "CHUNK_BYTES", blocked_budget(12, 8))
    h, w, b, y, a, c = problem(12, 3, 10, bias=True, dtype=torch.float64, seed=0, ignore_index=-1)
    mine = outputs_and_grads(
        lambda h, w, b: linear_token_log_probs(
            h, w, y, linear_bias=b, ignore_index=-1, return_entropy=True, chunk_size=5
        ),
        *leaves(h, w, b),
        a,
        c,
    )
    theirs = outputs_and_grads(
        lambda h, w, b: reference64(h, w, b, y, 1.0, -1), *leaves(h, w, b), a, c
    )
    # chunks of 5, 5, 2 tokens: blocks of 3 * 12 // 5 = 7 columns, 7 + 3 per chunk, in the
    # forward and again in the backward's first pass (the engine's)
    assert blocks == [(0, 7), (7, 3)] * 6
    for x, ref in zip(mine, theirs, strict=True):
        assert_near(x, ref, torch.float64, "blocked")


def test_the_column_sweep_takes_every_token_over_blocks(monkeypatch):
    """With the blocks allowed narrow, a chunk size below the tokens sweeps every token at
    once over blocks of ceil(chunk * V / N) columns, in the forward (statistics) and the
    backward (gradients), and gives the float64 computation's numbers."""
    seen = []
    absorb, block_gradient = heads.TokenHead.absorb, heads.TokenHead.block_gradient

    def counting_absorb(self, z, start):
        seen.append(("absorb", start, tuple(z.shape)))
        absorb(self, z, start)

    def counting_gradient(self, z, start):
        seen.append(("gradient", start, tuple(z.shape)))
        return block_gradient(self, z, start)

    monkeypatch.setattr(heads.TokenHead, "absorb", counting_absorb)
    monkeypatch.setattr(heads.TokenHead, "block_gradient", counting_gradient)
    monkeypatch.setattr(engine, "MIN_COLUMNS", 1)
    h, w, b, y, a, c = problem(12, 3, 10, bias=True, dtype=torch.float64, seed=3, ignore_index=-1)

    def ours(h, w, b):
        return linear_token_log_probs(
            h, w, y, linear_bias=b, ignore_index=-1, return_entropy=True, chunk_size=5
        )

    mine = outputs_and_grads(ours, *leaves(h, w, b), a, c)
    theirs = outputs_and_grads(
        lambda h, w, b: reference64(h, w, b, y, 1.0, -1), *leaves(h, w, b), a, c
    )
    # blocks of ceil(5 * 10 / 12) = 5 columns over all 12 tokens
    assert seen == [
        ("absorb", 0, (12, 5)),
        ("absorb", 5, (12, 5)),
        ("gradient", 0, (12, 5)),
        ("gradient", 5, (12, 5)),
    ]
    for x, ref in zip(mine, theirs, strict=True):
        assert_near(x, ref, torch.float64, "columns")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("narrow", [False, True])
def test_a_certain_row_has_exactly_zero_gradient(monkeypatch, dtype, narrow):
    """A vocabulary of one class (p = 1, log p = 0, H = 0 whatever the logit): the forward
    and the backward compute the same logits, so every gradient is exactly 0, in the column
    sweep (``narrow``: blocks of any width) and the chunked one."""
    if narrow:
        monkeypatch.setattr(engine, "MIN_COLUMNS", 1)
    h, w, b, y, a, c = problem(7, 5, 1, bias=True, dtype=dtype, seed=4, ignore_index=-100)
    y = torch.zeros_like(y)
    h, w, b = leaves(h, w, b)
    log_prob, entropy = linear_token_log_probs(
        h, w, y, linear_bias=b, return_entropy=True, chunk_size=3
    )
    assert bool((log_prob == 0).all()) and bool((entropy == 0).all())
    torch.autograd.backward([log_prob, entropy], [a.float(), c.float()])
    for x in (h, w, b):
        assert bool((x.grad == 0).all())


def test_ignored_tokens_change_nothing():
    h, w, b, y, a, c = problem(30, 6, 17, bias=True, dtype=torch.float64, seed=1, ignore_index=-100)
    y[:5] = -100

    def run(h):
        return outputs_and_grads(
            lambda h, w, b: linear_token_log_probs(
                h, w, y, linear_bias=b, return_entropy=True, chunk_size=7
            ),
            *leaves(h, w, b),
            a,
            c,
        )

    first = run(h)
    moved = h.clone()
    moved[:5] = 1e3 * torch.randn(5, 6, dtype=torch.float64)  # the ignored tokens' states
    second = run(moved)
    for x, z in zip(first, second, strict=True):
        assert x[5:].equal(z[5:]) if x.shape[0] == 30 else x.equal(z)
    assert bool((second[0][:5] == 0).all()) and bool((second[2][:5] == 0).all())
    everything = torch.full_like(y, -100)
    out = outputs_and_grads(
        lambda h, w, b: linear_token_log_probs(
            h, w, everything, linear_bias=b, return_entropy=True
        ),
        *leaves(h, w, b),
        a,
        c,
    )
    assert all(bool((x == 0).all()) for x in out)


def test_masked_vocabulary_classes_add_nothing():
    """Classes with a -inf bias (a masked vocabulary) have p = 0: they add nothing to the
    entropy and get zero gradient; the rest equal the softmax over the other classes."""
    h, w, b, y, a, c = problem(20, 5, 12, bias=True, dtype=torch.float64, seed=3, ignore_index=-1)
    masked = torch.zeros(12, dtype=torch.bool)
    masked[[0, 5, 11]] = True
    b = torch.where(masked, -torch.inf, b)
    y = torch.where(torch.isin(y, torch.tensor([0, 5, 11])), 3, y)
    keep = ~masked

    def ours(h, w, b):
        return linear_token_log_probs(
            h, w, y, linear_bias=b, ignore_index=-1, return_entropy=True, chunk_size=6
        )

    mine = outputs_and_grads(ours, *leaves(h, w, b), a, c)
    remap = torch.cumsum(keep, 0) - 1
    y_kept = torch.where(y == -1, -1, remap[y.clamp(min=0)])

    def unfused(h, w, b):
        return reference64(h, w[keep], b[keep], y_kept, 1.0, -1)

    theirs = outputs_and_grads(unfused, *leaves(h, w, b), a, c)
    for name, x, ref in zip(("log_prob", "entropy", "grad_input"), mine, theirs, strict=False):
        assert_near(x, ref, torch.float64, name)
    assert bool(mine[3][masked].eq(0).all()) and bool(mine[4][masked].eq(0).all())
    assert_near(mine[3][keep], theirs[3][keep], torch.float64, "grad_weight")
    assert_near(mine[4][keep], theirs[4][keep], torch.float64, "grad_bias")


def test_one_output_used_and_only_some_gradients_wanted():
    h, w, b, y, a, c = problem(25, 4, 9, bias=True, dtype=torch.float64, seed=2, ignore_index=-100)
    h_leaf, w_leaf, b_leaf = leaves(h, w, b)
    h_fixed = h.clone()  # no gradient wanted for the input
    ours = linear_token_log_probs(h_fixed, w_leaf, y, linear_bias=b_leaf, chunk_size=4)
    (grad_w,) = torch.autograd.grad((a * ours).sum(), [w_leaf])
    ref_lp, _ = reference64(h, w_leaf, b_leaf, y, 1.0, -100)
    (ref_w,) = torch.autograd.grad((a * ref_lp).sum(), [w_leaf])
    assert_near(grad_w, ref_w, torch.float64, "grad_weight from log_probs alone")

    _, entropy = linear_token_log_probs(
        h_leaf, w, y, linear_bias=None, return_entropy=True, temperature=1.7
    )
    (grad_h,) = torch.autograd.grad((c * entropy).sum(), [h_leaf])
    _, ref_entropy = reference64(h_leaf, w, None, y, 1.7, -100)
    (ref_h,) = torch.autograd.grad((c * ref_entropy).sum(), [h_leaf])
    assert_near(grad_h, ref_h, torch.float64, "grad_input from the entropy alone")


def test_finite_differences_and_double_backward():
    """gradcheck (finite differences) of both outputs, and gradgradcheck: the backward
    under create_graph=True is differentiable again."""
    g = torch.Generator().manual_seed(4)
    h = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 4, -100, 2, 1, 3])

    def both(h, w, b):
        return linear_token_log_probs(
            h, w, y, linear_bias=b, temperature=0.8, return_entropy=True, chunk_size=4
        )

    assert torch.autograd.gradcheck(both, (h, w, b))
    assert torch.autograd.gradgradcheck(both, (h, w, b))


def test_gradient_penalty_matches_the_reference():
    h, w, b, y, a, c = problem(12, 4, 7, bias=True, dtype=torch.float64, seed=5, ignore_index=-100)
    results = []
    for impl in ("auto", "torch"):
        hl, wl, bl = leaves(h, w, b)
        lp, ent = linear_token_log_probs(
            hl, wl, y, linear_bias=bl, return_entropy=True, impl=impl, chunk_size=5
        )
        grads = torch.autograd.grad((a * lp).sum() + (c * ent).sum(), [hl, wl], create_graph=True)
        penalty = sum((g * g).sum() for g in grads)
        results.append(torch.autograd.grad(penalty, [hl, wl, bl]))
    for mine, theirs in zip(*results, strict=True):
        assert_near(mine, theirs, torch.float64, "gradient of a gradient penalty")


def test_the_reference_path_is_the_reference():
    """impl="torch" equals the independent float64 formula, and returns log_probs alone
    without return_entropy."""
    h, w, _, y, _, _ = problem(9, 3, 6, bias=False, dtype=torch.float64, seed=6, ignore_index=-100)
    out = linear_token_log_probs(h, w, y, temperature=0.5, impl="torch")
    assert isinstance(out, torch.Tensor)
    assert_near(out, reference64(h, w, None, y, 0.5, -100)[0], torch.float64, "log_prob")


def test_autocast_runs_the_product_in_bfloat16():
    h, w, b, y, _, _ = problem(10, 4, 8, bias=True, dtype=torch.float32, seed=7, ignore_index=-100)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp, ent = linear_token_log_probs(h, w, y, linear_bias=b, return_entropy=True)
    assert lp.dtype == torch.float32
    ref_lp, ref_ent = reference64(h.bfloat16(), w.bfloat16(), b.bfloat16(), y, 1.0, -100)
    assert_near(lp, ref_lp, torch.bfloat16, "log_prob")
    assert_near(ent, ref_ent, torch.bfloat16, "entropy")


# --------------------------------------------------------------------------- bad input

H = torch.zeros(4, 3)
W = torch.zeros(5, 3)
Y = torch.tensor([0, 1, 4, -100])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"impl": "fused"}, ValueError, r"impl: expected one of 'auto', 'torch'.*got 'fused'"),
        ({"temperature": 0.0}, ValueError, r"temperature: expected a number finite and > 0"),
        ({"temperature": -1.0}, ValueError, r"temperature: .*got -1.0"),
        ({"temperature": float("inf")}, ValueError, r"temperature: .*got inf"),
        ({"temperature": float("nan")}, ValueError, r"temperature: .*got nan"),
        ({"temperature": "1"}, TypeError, r"temperature: expected a number"),
        ({"temperature": True}, TypeError, r"temperature: expected a number"),
        ({"chunk_size": 0}, ValueError, r"chunk_size: expected a positive integer or None"),
        ({"chunk_size": 2.0}, ValueError, r"chunk_size: .*got 2.0"),
        ({"ignore_index": 1.5}, TypeError, r"ignore_index: expected an integer"),
        ({"return_entropy": 1}, TypeError, r"return_entropy: expected True or False"),
        (
            {"target": torch.tensor([0, 1, 5, -100])},
            ValueError,
            r"target: expected class indices in \[0, 5\)",
        ),
        (
            {"target": torch.tensor([0, 1, -3, 2])},
            ValueError,
            r"target: .*got -3 at position \(2,\)",
        ),
        ({"target": torch.zeros(4)}, TypeError, r"target: expected integer class indices"),
        ({"target": torch.zeros(4, 5)}, TypeError, r"target: expected integer class indices"),
        (
            {"target": torch.zeros(3, dtype=torch.int64)},
            ValueError,
            r"target: expected class indices of shape \(4,\)",
        ),
        ({"target": [0, 1, 2, 3]}, TypeError, r"target: expected a tensor"),
        (
            {"input": torch.zeros(4, 3, dtype=torch.int64)},
            TypeError,
            r"input: expected a floating tensor",
        ),
        ({"linear_weight": torch.zeros(5, 2)}, ValueError, r"linear_weight: expected \(V, 3\)"),
        (
            {"linear_weight": torch.zeros(5, 3, dtype=torch.float64)},
            TypeError,
            r"linear_weight: expected the input's dtype",
        ),
        (
            {"linear_weight": torch.zeros(0, 3)},
            ValueError,
            r"linear_weight: expected at least one row",
        ),
        ({"linear_bias": torch.zeros(4)}, ValueError, r"linear_bias: expected shape \(5,\)"),
        (
            {"linear_bias": torch.zeros(5, dtype=torch.float64)},
            TypeError,
            r"linear_bias: expected the input's dtype",
        ),
        (
            {"target": torch.zeros(4, dtype=torch.int64, device="meta")},
            ValueError,
            r"target: expected the input's device cpu; got meta",
        ),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, error, match):
    arguments = {"input": H, "linear_weight": W, "target": Y, **kwargs}
    call = {k: v for k, v in arguments.items() if k not in ("input", "linear_weight", "target")}
    with pytest.raises(error, match=match):
        linear_token_log_probs(
            arguments["input"], arguments["linear_weight"], arguments["target"], **call
        )


def test_empty_input():
    h = torch.zeros(0, 3, requires_grad=True)
    w = torch.randn(5, 3, requires_grad=True)
    lp, ent = linear_token_log_probs(h, w, torch.zeros(0, dtype=torch.int64), return_entropy=True)
    assert lp.shape == ent.shape == (0,)
    (lp.sum() + ent.sum()).backward()
    assert h.grad.shape == (0, 3) and bool((w.grad == 0).all())


# --------------------------------------------------------------------------- peak memory

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import gc, json, re, sys
    import torch
    from crossentropy.torch import linear_token_log_probs, release_cached_buffers

    def status(key):
        with open("/proc/self/status") as f:
            return int(re.search(rf"^{key}:\\s+(\\d+)", f.read(), re.M).group(1))

    N, D, V = 2048, 32, 16000
    g = torch.Generator().manual_seed(0)
    h = torch.randn(N, D, generator=g).requires_grad_()
    w = (torch.randn(V, D, generator=g) / D**0.5).requires_grad_()
    y = torch.randint(0, V, (N,), generator=g)
    a, c = torch.randn(N, generator=g), torch.randn(N, generator=g)
    result = {}
    for impl in sys.argv[1:]:
        for step in range(2):  # a warm-up step, then the measured one
            h.grad = w.grad = None
            release_cached_buffers()
            gc.collect()
            before = status("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            lp, ent = linear_token_log_probs(h, w, y, return_entropy=True, impl=impl)
            ((a * lp).sum() + (c * ent).sum()).backward()
            peak = status("VmHWM")
            del lp, ent
        grads = (h.grad.numel() + w.grad.numel()) * 4
        result[impl] = {
            "peak_extra_kib": peak - before - grads // 1024,
            "grad_w_sum": float(w.grad.double().abs().sum()),
        }
    print(json.dumps(result))
    """
)


def test_peak_memory_is_at_most_an_eighth_of_the_unfused():
    """Peak RSS beyond the inputs and their gradients of a forward + backward at a shape
    where the logits dominate (2048 x 16000 float32 logits: 131 MB; inputs 2 MB), after a
    warm-up step, in a fresh subprocess (VmHWM reset through /proc/self/clear_refs; blocks
    over 64 KiB served by mmap so that freed memory leaves the process)."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    run = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, "auto", "torch"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    ours, unfused = result["auto"], result["torch"]
    print(result)
    assert ours["grad_w_sum"] == pytest.approx(unfused["grad_w_sum"], rel=1e-4)
    logits_kib = 2048 * 16000 * 4 // 1024
    assert unfused["peak_extra_kib"] > 2 * logits_kib  # the measurement sees the logits
    assert ours["peak_extra_kib"] <= unfused["peak_extra_kib"] / 8
