"""Vocabulary-parallel distillation losses over 2 and 4 gloo processes.

As in tests/test_torch_distributed_tokens.py: one ``torch.multiprocessing`` spawn per world
size runs every case; each rank holds an uneven slice of the classes (one rank a single
class) of both models, computes the loss (a random incoming gradient for
``reduction="none"``) and compares it and its slice of the student's gradient with a
single-process float64 computation written here (log_softmax of the whole logits, the
divergences by their definition, autograd): 1e-7 in float64, 1e-5 relative in float32
(against float64 on the same values). The teacher is never differentiated. Then one bad
argument of each kind, on one rank or all, must raise the same error on every rank. Each
rank writes what it saw to a JSON file; the tests below read them.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from crossentropy.torch.distributed import (
    vocab_parallel_distillation_loss,
    vocab_parallel_linear_distillation_loss,
)
from test_torch_distributed import DEADLINE_S, SLICES, bounds, compare, free_port

VOCABULARY, ROWS, HIDDEN = 23, 11, 6  # the slices of test_torch_distributed.SLICES
GROUP_TIMEOUT_S = 60

TOLERANCE = {torch.float64: (1e-7, 1e-12), torch.float32: (1e-5, 1e-6)}

# name: (divergence, beta, temperature, soft_weight, hard_weight, reduction, target,
#        ignore_index, dtype, bias, chunk_size); target False: target=None
CASES = {
    "jsd": ("jsd", 0.5, 1.0, 1.0, 0.0, "mean", True, -100, torch.float64, True, 4),
    "jsd beta 0 (forward kl), hot": (
        "jsd",
        0.0,
        2.5,
        0.5,
        0.5,
        "sum",
        True,
        -100,
        torch.float64,
        False,
        None,
    ),
    "jsd beta 1 (reverse kl), cold": (
        "jsd",
        1.0,
        0.7,
        1.0,
        0.3,
        "none",
        True,
        5,
        torch.float64,
        True,
        3,
    ),
    "jsd beta 0.2, hard only": (
        "jsd",
        0.2,
        1.3,
        0.0,
        1.0,
        "mean",
        True,
        -100,
        torch.float64,
        False,
        5,
    ),
    "forward_kl": ("forward_kl", 0.5, 0.7, 0.8, 0.2, "none", True, -100, torch.float64, True, None),
    "reverse_kl": ("reverse_kl", 0.9, 1.5, 1.0, 0.5, "mean", True, 5, torch.float64, False, 4),
    "no target": ("jsd", 0.7, 1.0, 2.0, 0.0, "mean", False, -100, torch.float64, True, 4),
    "no target, reverse_kl sum": (
        "reverse_kl",
        0.5,
        1.0,
        1.0,
        0.0,
        "sum",
        False,
        -100,
        torch.float64,
        False,
        2,
    ),
    "float32": ("jsd", 0.3, 0.7, 0.5, 0.5, "mean", True, -100, torch.float32, True, 4),
}


# --------------------------------------------------------------------------- data


def make_case(seed: int, ignore_index: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, VOCABULARY, (ROWS,), generator=g)
    target[::4] = ignore_index
    student = 3 * torch.randn(ROWS, VOCABULARY, generator=g, dtype=torch.float64)
    teacher = 3 * torch.randn(ROWS, VOCABULARY, generator=g, dtype=torch.float64)
    student[1, :] = -2.0  # a uniform row
    teacher[2, 7] = 60.0  # a (nearly) one-hot teacher
    student[3, 12] = 50.0  # a (nearly) one-hot student
    teacher[5] = student[5]  # equal distributions: D = 0
    return {
        "student": student,
        "teacher": teacher,
        "target": target,
        "student_hidden": torch.randn(ROWS, HIDDEN, generator=g, dtype=torch.float64),
        "teacher_hidden": torch.randn(ROWS, HIDDEN + 2, generator=g, dtype=torch.float64),
        "student_weight": torch.randn(VOCABULARY, HIDDEN, generator=g, dtype=torch.float64),
        "teacher_weight": torch.randn(VOCABULARY, HIDDEN + 2, generator=g, dtype=torch.float64),
        "student_bias": torch.randn(VOCABULARY, generator=g, dtype=torch.float64),
        "teacher_bias": torch.randn(VOCABULARY, generator=g, dtype=torch.float64),
        "upstream": torch.randn(ROWS, generator=g, dtype=torch.float64),
    }


# --------------------------------------------------------------------------- the reference


def reference_loss(
    zs: torch.Tensor, zt: torch.Tensor, target: torch.Tensor | None, case: tuple[Any, ...]
) -> torch.Tensor:
    """The loss by its definition, in float64 on whole rows."""
    divergence, beta, temperature, soft, hard, reduction, _, ignore = case[:8]
    log_ps = torch.log_softmax(zs / temperature, -1)
    log_pt = torch.log_softmax(zt / temperature, -1)
    ps, pt = log_ps.exp(), log_pt.exp()
    forward = (pt * (log_pt - log_ps)).sum(-1)  # KL(p_t || p_s)
    reverse = (ps * (log_ps - log_pt)).sum(-1)  # KL(p_s || p_t)
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0):
        d = forward
    elif divergence == "reverse_kl" or (divergence == "jsd" and beta == 1):
        d = reverse
    else:
        log_m = torch.log(beta * pt + (1 - beta) * ps)
        d = beta * (pt * (log_pt - log_m)).sum(-1) + (1 - beta) * (ps * (log_ps - log_m)).sum(-1)
    loss = soft * d
    if target is None:
        live = torch.ones(zs.shape[0], dtype=torch.bool)
    else:
        live = target != ignore
        y = torch.where(live, target, 0)
        ce = torch.logsumexp(zs, -1) - zs.gather(1, y[:, None])[:, 0]
        loss = loss + hard * ce
    loss = torch.where(live, loss, 0.0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    count = int(live.sum())
    return loss.sum() / count if count else loss.sum() * 0


def pull(loss: torch.Tensor, upstream: torch.Tensor, reduction: str) -> None:
    (loss * upstream).sum().backward() if reduction == "none" else loss.backward()


def options(case: tuple[Any, ...]) -> dict[str, Any]:
    divergence, beta, temperature, soft, hard, reduction, _, ignore = case[:8]
    return {
        "divergence": divergence,
        "beta": beta,
        "temperature": temperature,
        "soft_weight": soft,
        "hard_weight": hard,
        "reduction": reduction,
        "ignore_index": ignore,
    }


def check(
    problems: dict[str, str | None], name: str, ours: Any, reference: Any, dtype: torch.dtype
) -> None:
    rtol, atol = TOLERANCE[dtype]
    if ours is None or reference is None:
        problems[name] = f"a gradient is missing: {ours is None}, {reference is None}"
        return
    problems[name] = compare(ours.detach().double(), reference.detach().double(), rtol, atol)


def check_common(
    problems: dict[str, str | None],
    loss: torch.Tensor,
    reference: torch.Tensor,
    grad: torch.Tensor | None,
    live: torch.Tensor,
    case: tuple[Any, ...],
) -> None:
    """The loss, its dtype, and the ignored rows' (exactly 0, with a zero gradient)."""
    dtype, reduction = case[8], case[5]
    check(problems, "loss", loss, reference, dtype)
    problems["loss dtype"] = None if loss.dtype == dtype else str(loss.dtype)
    bad = []
    if reduction == "none" and bool((loss[~live] != 0).any()):
        bad.append("loss")
    if grad is not None and bool((grad[~live] != 0).any()):
        bad.append("gradient")
    problems["ignored rows are 0"] = f"nonzero {bad}" if bad else None


# --------------------------------------------------------------------------- rank side


def logits_case(world: int, rank: int, seed: int, case: tuple[Any, ...]) -> dict[str, Any]:
    reduction, has_target, ignore, dtype = case[5], case[6], case[7], case[8]
    data = make_case(seed, ignore)
    target = data["target"] if has_target else None
    start, stop = bounds(world, rank)
    student = data["student"][:, start:stop].to(dtype).clone().requires_grad_()
    # a teacher that requires a gradient is read, never differentiated
    teacher = data["teacher"][:, start:stop].to(dtype).clone().requires_grad_(seed % 2 == 0)
    loss = vocab_parallel_distillation_loss(student, teacher, target, **options(case))
    pull(loss, data["upstream"], reduction)
    # the reference: float64 on the same (rounded) values
    whole = data["student"].to(dtype).double().requires_grad_()
    reference = reference_loss(whole, data["teacher"].to(dtype).double(), target, case)
    pull(reference, data["upstream"], reduction)
    problems: dict[str, str | None] = {}
    live = torch.ones(ROWS, dtype=torch.bool) if target is None else target != ignore
    check_common(problems, loss, reference, student.grad, live, case)
    check(problems, "grad", student.grad, whole.grad[:, start:stop], dtype)
    problems["teacher grad"] = None if teacher.grad is None else "the teacher got a gradient"
    return {"problems": problems, "loss": loss.detach().reshape(-1).tolist()}


def linear_case(world: int, rank: int, seed: int, case: tuple[Any, ...]) -> dict[str, Any]:
    reduction, has_target, ignore, dtype, bias, chunk = case[5:]
    data = make_case(seed, ignore)
    target = data["target"] if has_target else None
    start, stop = bounds(world, rank)

    def leaf(x: torch.Tensor, grad: bool = True) -> torch.Tensor:
        return x.to(dtype).clone().requires_grad_(grad)

    hs, ws = leaf(data["student_hidden"]), leaf(data["student_weight"][start:stop])
    bs = leaf(data["student_bias"][start:stop]) if bias else None
    ht, wt = leaf(data["teacher_hidden"], False), leaf(data["teacher_weight"][start:stop])
    bt = leaf(data["teacher_bias"][start:stop], False) if bias else None
    loss = vocab_parallel_linear_distillation_loss(
        hs, ws, ht, wt, target, student_bias=bs, teacher_bias=bt, chunk_size=chunk, **options(case)
    )
    pull(loss, data["upstream"], reduction)

    def exact(x: torch.Tensor, grad: bool = True) -> torch.Tensor:
        return x.to(dtype).double().requires_grad_(grad)

    hs64, ws64 = exact(data["student_hidden"]), exact(data["student_weight"])
    bs64 = exact(data["student_bias"]) if bias else None
    teacher = torch.nn.functional.linear(
        exact(data["teacher_hidden"], False),
        exact(data["teacher_weight"], False),
        exact(data["teacher_bias"], False) if bias else None,
    )
    student = torch.nn.functional.linear(hs64, ws64, bs64)
    reference = reference_loss(student, teacher, target, case)
    pull(reference, data["upstream"], reduction)
    problems: dict[str, str | None] = {}
    live = torch.ones(ROWS, dtype=torch.bool) if target is None else target != ignore
    check_common(problems, loss, reference, None, live, case)
    check(problems, "grad input", hs.grad, hs64.grad, dtype)
    assert ws64.grad is not None
    check(problems, "grad weight", ws.grad, ws64.grad[start:stop], dtype)
    if bs is not None and bs64 is not None and bs64.grad is not None:
        check(problems, "grad bias", bs.grad, bs64.grad[start:stop], dtype)
    untouched = [x.grad is not None for x in (ht, wt, bt) if x is not None]
    problems["teacher grad"] = "the teacher got a gradient" if any(untouched) else None
    return {"problems": problems, "loss": loss.detach().reshape(-1).tolist()}


def reversed_case(world: int, rank: int) -> dict[str, Any]:
    """Slices placed by vocab_start_index in reverse rank order, both versions."""
    case = ("jsd", 0.4, 1.2, 1.0, 0.5, "mean", True, -100, torch.float64)
    data = make_case(17, -100)
    sizes = SLICES[world]
    first = sum(sizes[rank + 1 :])
    cut = slice(first, first + sizes[rank])
    student = data["student"][:, cut].clone().requires_grad_()
    loss = vocab_parallel_distillation_loss(
        student, data["teacher"][:, cut], data["target"], vocab_start_index=first, **options(case)
    )
    loss.backward()
    whole = data["student"].clone().requires_grad_()
    reference = reference_loss(whole, data["teacher"], data["target"], case)
    reference.backward()
    w = data["student_weight"][cut].clone().requires_grad_()
    linear = vocab_parallel_linear_distillation_loss(
        data["student_hidden"],
        w,
        data["teacher_hidden"],
        data["teacher_weight"][cut],
        data["target"],
        vocab_start_index=first,
        chunk_size=3,
        **options(case),
    )
    linear.backward()
    w64 = data["student_weight"].clone().requires_grad_()
    zs = data["student_hidden"] @ w64.T
    linear_reference = reference_loss(
        zs, data["teacher_hidden"] @ data["teacher_weight"].T, data["target"], case
    )
    linear_reference.backward()
    assert whole.grad is not None and w64.grad is not None
    problems = {
        "loss": compare(loss.detach(), reference.detach(), 1e-7, 1e-12),
        "grad": compare(student.grad, whole.grad[:, cut], 1e-7, 1e-12),
        "linear loss": compare(linear.detach(), linear_reference.detach(), 1e-7, 1e-12),
        "linear grad weight": compare(w.grad, w64.grad[cut], 1e-7, 1e-12),
    }
    # every target ignored: a mean over nothing is 0, with a zero gradient
    nothing = torch.full((ROWS,), -100)
    empty = data["student"][:, cut].clone().requires_grad_()
    zero = vocab_parallel_distillation_loss(
        empty, data["teacher"][:, cut], nothing, hard_weight=1.0
    )
    zero.backward()
    assert empty.grad is not None
    problems["all ignored"] = None if zero.item() == 0 and not empty.grad.any() else "not 0"
    return {"problems": problems, "loss": [loss.item(), linear.item()]}


def bad_arguments(world: int, rank: int) -> dict[str, Any]:
    """One bad argument of each kind (on every rank, or on the last only); every rank
    records what it raised."""
    data = make_case(0, -100)
    start, stop = bounds(world, rank)
    zs, zt = data["student"][:, start:stop], data["teacher"][:, start:stop]
    target = data["target"]
    hs, ws = data["student_hidden"], data["student_weight"][start:stop]
    ht, wt = data["teacher_hidden"], data["teacher_weight"][start:stop]
    last = rank == world - 1

    def logits(**kwargs: Any) -> Any:
        return vocab_parallel_distillation_loss(zs, zt, target, **kwargs)

    def linear(**kwargs: Any) -> Any:
        return vocab_parallel_linear_distillation_loss(hs, ws, ht, wt, target, **kwargs)

    cases = {
        "divergences differ": lambda: logits(divergence="reverse_kl" if last else "jsd"),
        "betas differ": lambda: logits(beta=0.25 if last else 0.5),
        "temperatures differ": lambda: logits(temperature=2.0 if last else 1.0),
        "weights differ": lambda: logits(hard_weight=0.5 if last else 0.0),
        "reductions differ": lambda: logits(reduction="sum" if last else "mean"),
        "unknown divergence": lambda: logits(divergence="kl" if last else "jsd"),
        "temperature": lambda: logits(temperature=0.0 if last else 1.0),
        "target on one rank": lambda: vocab_parallel_distillation_loss(
            zs, zt, None if last else target
        ),
        "hard weight without target": lambda: vocab_parallel_distillation_loss(
            zs, zt, None, hard_weight=0.5
        ),
        "teacher shape": lambda: vocab_parallel_distillation_loss(
            zs, zt[:, :-1] if last and zt.shape[1] > 1 else zt[:1] if last else zt, target
        ),
        "target out of range": lambda: vocab_parallel_distillation_loss(
            zs, zt, torch.where(target == 0, VOCABULARY, target)
        ),
        "overlapping slices": lambda: logits(vocab_start_index=0),
        "linear teacher slice": lambda: vocab_parallel_linear_distillation_loss(
            hs, ws, ht, wt[:-1] if last and wt.shape[0] > 1 else wt[:, :-1] if last else wt, target
        ),
        "bias on one rank": lambda: linear(
            student_bias=data["student_bias"][start:stop] if last else None
        ),
        "chunk_size": lambda: linear(chunk_size=0 if last else None),
    }
    seen = {}
    for name, run in cases.items():
        try:
            run()
            seen[name] = {"type": None, "message": None}
        except (TypeError, ValueError) as error:
            seen[name] = {"type": type(error).__name__, "message": str(error)}
    # the group still works afterwards
    after = logits(reduction="none")
    case = ("jsd", 0.5, 1.0, 1.0, 0.0, "none", True, -100, torch.float64)
    ok = compare(after, reference_loss(data["student"], data["teacher"], target, case), 1e-7, 1e-12)
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
        results["reversed slices"] = reversed_case(world, rank)
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
    return world, run_world(world, tmp_path_factory.mktemp(f"distill{world}"))


NUMERIC = [
    *(f"{kind} {name}" for kind in ("logits", "linear") for name in CASES),
    "reversed slices",
]


@pytest.mark.parametrize("case", NUMERIC)
def test_matches_single_process(ranks: Any, case: str) -> None:
    world, results = ranks
    for rank, result in enumerate(results):
        assert "crash" not in result, result.get("crash")
        problems = {k: v for k, v in result[case]["problems"].items() if v is not None}
        assert not problems, f"rank {rank} of {world}: {problems}"
        assert result[case]["problems"], "nothing was compared"
    # every rank returns the same loss, to the bit
    losses = {json.dumps(r[case]["loss"]) for r in results}
    assert len(losses) == 1, losses
    assert all(math.isfinite(x) for x in results[0][case]["loss"])


EXPECTED = {
    "divergences differ": "the ranks disagree on divergence",
    "betas differ": "the ranks disagree on beta",
    "temperatures differ": "the ranks disagree on temperature",
    "weights differ": "the ranks disagree on hard_weight",
    "reductions differ": "the ranks disagree on reduction",
    "unknown divergence": "divergence: expected one of",
    "temperature": "temperature: expected",
    "target on one rank": "the ranks disagree on target (given",
    "hard weight without target": "hard_weight: a hard-label cross-entropy term",
    "teacher shape": "teacher_logits_shard: expected",
    "target out of range": "labels: expected class indices in [0, 23)",
    "overlapping slices": "vocab_start_index: expected slices that tile [0, V)",
    "linear teacher slice": "teacher_weight_shard: expected",
    "bias on one rank": "the ranks disagree on student_bias",
    "chunk_size": "chunk_size",
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
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"group: vocab_parallel_distillation_loss needs"):
        vocab_parallel_distillation_loss(z, z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"group: vocab_parallel_linear_distillation_loss needs"):
        vocab_parallel_linear_distillation_loss(z, torch.zeros(4, 3), z, torch.zeros(4, 3))
