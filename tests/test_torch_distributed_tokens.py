"""Vocabulary-parallel per-token log-probabilities and entropy over 2 and 4 gloo processes.

As in tests/test_torch_distributed.py: one ``torch.multiprocessing`` spawn per world size
runs every case; each rank holds an uneven slice of the classes (one rank a single class),
computes log p_y and H with random incoming gradients on both, and compares the outputs
and its slice of the gradients with the single-process float64 computation
(``token_log_probs`` / ``linear_token_log_probs`` with ``impl="torch"``) on the whole
tensors: 1e-7 in float64, 1e-5 relative in float32 (against float64 on the same values).
Then one bad argument of each kind, on one rank or all, must raise the same error on
every rank. Each rank writes what it saw to a JSON file; the tests below read them.
"""

from __future__ import annotations

import datetime
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import crossentropy.torch as ct
from crossentropy.torch.distributed import (
    vocab_parallel_linear_token_log_probs,
    vocab_parallel_token_log_probs,
)
from test_torch_distributed import DEADLINE_S, bounds, compare, free_port

VOCABULARY, ROWS, HIDDEN = 23, 11, 6  # the slices of test_torch_distributed.SLICES
GROUP_TIMEOUT_S = 60

TOLERANCE = {torch.float64: (1e-7, 1e-12), torch.float32: (1e-5, 1e-6)}

# (temperature, ignore_index, dtype, bias, chunk_size, return_entropy)
CASES = {
    "plain": (1.0, -100, torch.float64, True, 4, True),
    "temperature": (0.7, -100, torch.float64, False, None, True),
    "hot, other ignore_index": (2.5, 5, torch.float64, True, 3, True),
    "log-probs only": (1.0, -100, torch.float64, True, 5, False),
    "float32": (0.7, -100, torch.float32, True, 4, True),
}


# --------------------------------------------------------------------------- data


def make_case(seed: int, ignore_index: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, VOCABULARY, (ROWS,), generator=g)
    target[::4] = ignore_index
    logits = 3 * torch.randn(ROWS, VOCABULARY, generator=g, dtype=torch.float64)
    logits[1, :] = -2.0  # a uniform row
    logits[2, 7] = 60.0  # a (nearly) one-hot row
    return {
        "logits": logits,
        "target": target,
        "hidden": torch.randn(ROWS, HIDDEN, generator=g, dtype=torch.float64),
        "weight": torch.randn(VOCABULARY, HIDDEN, generator=g, dtype=torch.float64),
        "bias": torch.randn(VOCABULARY, generator=g, dtype=torch.float64),
        "g": torch.randn(ROWS, generator=g, dtype=torch.float64),
        "h": torch.randn(ROWS, generator=g, dtype=torch.float64),
    }


def pull(outputs: Any, data: dict[str, torch.Tensor], entropy_too: bool) -> None:
    """Backpropagate sum g log p + h H (sum g log p without the entropy)."""
    if entropy_too:
        log_prob, entropy = outputs
        ((data["g"] * log_prob).sum() + (data["h"] * entropy).sum()).backward()
    else:
        (data["g"] * outputs).sum().backward()


def tolerances(dtype: torch.dtype) -> tuple[float, float]:
    return TOLERANCE[dtype]


def check(
    problems: dict[str, str | None], name: str, ours: Any, reference: Any, dtype: torch.dtype
) -> None:
    rtol, atol = tolerances(dtype)
    if ours is None or reference is None:
        problems[name] = f"a gradient is missing: {ours is None}, {reference is None}"
        return
    problems[name] = compare(ours.detach().double(), reference.detach().double(), rtol, atol)


def check_ignored(
    problems: dict[str, str | None], ours: list[torch.Tensor], ignored: torch.Tensor
) -> None:
    """Ignored rows: exactly 0, in every output and the row's gradient."""
    bad = [i for i, x in enumerate(ours) if bool((x[ignored] != 0).any())]
    problems["ignored rows are 0"] = f"nonzero in outputs/gradients {bad}" if bad else None


# --------------------------------------------------------------------------- rank side


def logits_case(world: int, rank: int, seed: int, case: tuple[Any, ...]) -> dict[str, Any]:
    temperature, ignore, dtype, _, _, entropy_too = case
    data = make_case(seed, ignore)
    start, stop = bounds(world, rank)
    options = {"temperature": temperature, "ignore_index": ignore, "return_entropy": entropy_too}
    shard = data["logits"][:, start:stop].to(dtype).clone().requires_grad_()
    ours = vocab_parallel_token_log_probs(shard, data["target"], **options)
    pull(ours, data, entropy_too)
    # the reference: float64 on the same (rounded) values
    whole = data["logits"].to(dtype).double().requires_grad_()
    reference = ct.token_log_probs(whole, data["target"], impl="torch", **options)
    pull(reference, data, entropy_too)
    pairs = zip(ours, reference, strict=True) if entropy_too else [(ours, reference)]
    problems: dict[str, str | None] = {}
    outputs = []
    for name, (mine, theirs) in zip(("log_prob", "entropy"), pairs, strict=False):
        expected = torch.float64 if dtype == torch.float64 else torch.float32
        problems[f"{name} dtype"] = None if mine.dtype == expected else str(mine.dtype)
        check(problems, name, mine, theirs, dtype)
        outputs.append(mine.detach())
    check(problems, "grad", shard.grad, whole.grad[:, start:stop], dtype)
    assert shard.grad is not None
    check_ignored(problems, [*outputs, shard.grad], data["target"] == ignore)
    return {"problems": problems, "outputs": [o.tolist() for o in outputs]}


def linear_case(world: int, rank: int, seed: int, case: tuple[Any, ...]) -> dict[str, Any]:
    temperature, ignore, dtype, bias, chunk, entropy_too = case
    data = make_case(seed, ignore)
    start, stop = bounds(world, rank)
    options = {"temperature": temperature, "ignore_index": ignore, "return_entropy": entropy_too}
    h = data["hidden"].to(dtype).clone().requires_grad_()
    w = data["weight"][start:stop].to(dtype).clone().requires_grad_()
    b = data["bias"][start:stop].to(dtype).clone().requires_grad_() if bias else None
    ours = vocab_parallel_linear_token_log_probs(
        h, w, data["target"], linear_bias=b, chunk_size=chunk, **options
    )
    pull(ours, data, entropy_too)
    h64 = data["hidden"].to(dtype).double().requires_grad_()
    w64 = data["weight"].to(dtype).double().requires_grad_()
    b64 = data["bias"].to(dtype).double().requires_grad_() if bias else None
    reference = ct.linear_token_log_probs(
        h64, w64, data["target"], linear_bias=b64, impl="torch", **options
    )
    pull(reference, data, entropy_too)
    pairs = zip(ours, reference, strict=True) if entropy_too else [(ours, reference)]
    problems: dict[str, str | None] = {}
    outputs = []
    for name, (mine, theirs) in zip(("log_prob", "entropy"), pairs, strict=False):
        check(problems, name, mine, theirs, dtype)
        outputs.append(mine.detach())
    check(problems, "grad input", h.grad, h64.grad, dtype)
    check(
        problems, "grad weight", w.grad, None if w64.grad is None else w64.grad[start:stop], dtype
    )
    if b is not None and b64 is not None:
        check(
            problems, "grad bias", b.grad, None if b64.grad is None else b64.grad[start:stop], dtype
        )
    check_ignored(problems, outputs, data["target"] == ignore)
    return {"problems": problems, "outputs": [o.tolist() for o in outputs]}


def bad_arguments(world: int, rank: int) -> dict[str, Any]:
    """One bad argument of each kind (on every rank, or on the last only); every rank
    records what it raised."""
    data = make_case(0, -100)
    start, stop = bounds(world, rank)
    shard = data["logits"][:, start:stop]
    target = data["target"]
    h, w = data["hidden"], data["weight"][start:stop]
    last = rank == world - 1

    def tokens(**kwargs: Any) -> Any:
        return vocab_parallel_token_log_probs(shard, target, **kwargs)

    def linear(**kwargs: Any) -> Any:
        return vocab_parallel_linear_token_log_probs(h, w, target, **kwargs)

    cases = {
        "temperature": lambda: tokens(temperature=0.0 if last else 1.0),
        "temperatures differ": lambda: tokens(temperature=2.0 if last else 1.0),
        "return_entropy": lambda: tokens(return_entropy="yes" if last else True),
        "ignore_index": lambda: tokens(ignore_index=1.5),
        "target dtype": lambda: vocab_parallel_token_log_probs(shard, target.double()),
        "target out of range": lambda: vocab_parallel_token_log_probs(
            shard, torch.where(target == 0, VOCABULARY, target)
        ),
        "logits dtype": lambda: vocab_parallel_token_log_probs(
            shard.to(torch.int64) if last else shard, target
        ),
        "overlapping slices": lambda: tokens(vocab_start_index=0),
        "chunk_size": lambda: linear(chunk_size=0 if last else None),
        "linear shapes": lambda: vocab_parallel_linear_token_log_probs(
            h, w[:, :-1] if last else w, target
        ),
        "bias on one rank": lambda: linear(linear_bias=data["bias"][start:stop] if last else None),
    }
    seen = {}
    for name, run in cases.items():
        try:
            run()
            seen[name] = {"type": None, "message": None}
        except (TypeError, ValueError) as error:
            seen[name] = {"type": type(error).__name__, "message": str(error)}
    # the group still works afterwards
    after = vocab_parallel_token_log_probs(shard, target)
    ok = compare(after, ct.token_log_probs(data["logits"], target, impl="torch"), 1e-7, 1e-12)
    return {"raised": seen, "after": ok}


def worker(rank: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=GROUP_TIMEOUT_S),
    )
    results: dict[str, Any] = {}
    try:
        for seed, (name, case) in enumerate(CASES.items()):
            results[f"logits {name}"] = logits_case(world, rank, seed, case)
            results[f"linear {name}"] = linear_case(world, rank, seed, case)
        results["bad arguments"] = bad_arguments(world, rank)
    except Exception:
        results["crash"] = traceback.format_exc()
        raise
    finally:
        Path(out, f"rank{rank}.json").write_text(json.dumps(results))
        dist.destroy_process_group()
    os._exit(0)  # as in test_torch_distributed.worker: no C++ static destructors


# --------------------------------------------------------------------------- parent side


def run_world(world: int, out: Path) -> list[dict[str, Any]]:
    context = mp.spawn(worker, args=(world, free_port(), str(out)), nprocs=world, join=False)
    deadline = time.monotonic() + DEADLINE_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"{world} ranks did not finish in {DEADLINE_S} s (a hang?)")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


@pytest.fixture(scope="module", params=[2, 4], ids=lambda w: f"{w}ranks")
def ranks(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    world = request.param
    return world, run_world(world, tmp_path_factory.mktemp(f"tokens{world}"))


NUMERIC = [f"{kind} {name}" for kind in ("logits", "linear") for name in CASES]


@pytest.mark.parametrize("case", NUMERIC)
def test_matches_single_process(ranks: Any, case: str) -> None:
    world, results = ranks
    for rank, result in enumerate(results):
        assert "crash" not in result, result.get("crash")
        problems = {k: v for k, v in result[case]["problems"].items() if v is not None}
        assert not problems, f"rank {rank} of {world}: {problems}"
        assert result[case]["problems"], "nothing was compared"
    # every rank returns the same outputs, to the bit
    outputs = {json.dumps(r[case]["outputs"]) for r in results}
    assert len(outputs) == 1, outputs


EXPECTED = {
    "temperature": "temperature: expected",
    "temperatures differ": "the ranks disagree on temperature",
    "return_entropy": "return_entropy: expected True or False; got 'yes'",
    "ignore_index": "ignore_index: expected an integer; got 1.5",
    "target dtype": "target: expected a tensor of integer class ids",
    "target out of range": "labels: expected class indices in [0, 23)",
    "logits dtype": "logits_shard: expected float32, float64, bfloat16 or float16",
    "overlapping slices": "vocab_start_index: expected slices that tile [0, V)",
    "chunk_size": "chunk_size",
    "linear shapes": "invalid arguments on 1 of",
    "bias on one rank": "the ranks disagree on linear_bias",
}


def test_bad_arguments_raise_the_same_error_on_every_rank(ranks: Any) -> None:
    _, results = ranks
    for result in results:
        assert "crash" not in result, result.get("crash")
        assert result["bad arguments"]["after"] is None, result["bad arguments"]["after"]
    for name, expected in EXPECTED.items():
        raised = [r["bad arguments"]["raised"][name] for r in results]
        assert raised[0]["type"] is not None, f"{name}: nothing raised"
        assert expected in raised[0]["message"], (name, raised[0])
        assert all(r == raised[0] for r in raised), (name, raised)


def test_needs_an_initialised_group() -> None:
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match=r"group: vocab_parallel_token_log_probs needs"):
        vocab_parallel_token_log_probs(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"group: vocab_parallel_linear_token_log_probs needs"):
        vocab_parallel_linear_token_log_probs(
            torch.zeros(2, 3), torch.zeros(4, 3), torch.tensor([0, 1])
        )
