"""Run under torchrun on every host (tests/test_multihost.py): the vocabulary-parallel losses
of crossentropy.torch.distributed against the single-process ones, across hosts.

Every rank builds the same float64 tensors (fixed seeds), computes each loss on its slice
of the vocabulary (uneven slices: V = 37 over 2 or 3 ranks), backpropagates, and compares
the loss and every gradient with the single-process function on the whole tensors,
computed locally: the loss equal on every rank, each rank's weight/logits gradient its
slice of the whole one, the replicated inputs' gradients the whole ones. One JSON line a
check on stdout; exit status 1 on any mismatch.

    torchrun ... tests/multihost_losses.py [--vocabulary 37]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

import crossentropy.torch as ct
from crossentropy.torch import distributed as cd

TOLERANCE = 1e-10
Tensor = torch.Tensor


def slices(vocabulary: int, world: int) -> list[tuple[int, int]]:
    """Uneven [start, stop) per rank: rank r holds the r-th slice from the END (so explicit
    ``vocab_start_index`` values are not rank order), sizes as even as possible."""
    base, extra = divmod(vocabulary, world)
    sizes = [base + (r < extra) for r in range(world)]
    bounds, position = [], 0
    for size in sizes:
        bounds.append((position, position + size))
        position += size
    return bounds[::-1]


def leaf(x: Tensor) -> Tensor:
    return x.detach().clone().requires_grad_(True)


def difference(ours: Tensor | None, reference: Tensor | None) -> float:
    """Largest absolute difference relative to the reference's scale (max(1, |ref|))."""
    if ours is None and reference is None:
        return 0.0
    if ours is None or reference is None:
        return float("inf")
    if ours.shape != reference.shape:
        return float("inf")
    scale = max(1.0, float(reference.abs().max()))
    return float((ours - reference).abs().max()) / scale


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocabulary", type=int, default=37)
    parser.add_argument("--rows", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=8)
    options = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    V, N, D = options.vocabulary, options.rows, options.hidden
    start, stop = slices(V, world)[rank]
    torch.set_default_dtype(torch.float64)
    g = torch.Generator().manual_seed(1234)  # the same tensors on every rank
    logits = torch.randn(N, V, generator=g) * 3
    teacher = torch.randn(N, V, generator=g) * 2
    target = torch.randint(0, V, (N,), generator=g)
    target[1] = -100  # one ignored row
    class_weight = torch.rand(V, generator=g) + 0.5
    hidden = torch.randn(N, D, generator=g)
    teacher_hidden = torch.randn(N, D, generator=g)
    weight = torch.randn(V, D, generator=g) * D**-0.5
    bias = torch.randn(V, generator=g) * 0.1
    teacher_weight = torch.randn(V, D, generator=g) * D**-0.5
    teacher_bias = torch.randn(V, generator=g) * 0.1
    advantage = torch.randn(N, generator=g)
    upstream = torch.randn(N, generator=g)
    # explicit vocab_start_index (this layout is not rank order) in some checks, None in others
    # (then the slices are taken in rank order: contiguous sizes, so a different split)
    sizes = [b - a for a, b in slices(V, world)]
    in_order = (sum(sizes[:rank]), sum(sizes[: rank + 1]))
    failures = 0

    def check(
        name: str,
        run: Callable[[dict[str, Tensor]], Any],
        reference: Callable[[dict[str, Tensor]], Any],
        inputs: dict[str, Tensor],
        sliced: set[str],
        bounds: tuple[int, int],
    ) -> None:
        """``run`` on this rank's slices of the ``sliced`` inputs (slicing the last axis of
        logits, the first of weights), ``reference`` on the whole; loss and gradients."""
        nonlocal failures
        a, b = bounds
        whole = {k: leaf(v) for k, v in inputs.items()}
        mine = {}
        for k, v in inputs.items():
            if k in sliced:
                part = v[..., a:b] if k.endswith("logits") else v[a:b]
                mine[k] = leaf(part)
            else:
                mine[k] = leaf(v)
        ours = run(mine)
        expected = reference(whole)
        torch.autograd.backward([ours, expected])
        errors = {"loss": difference(ours.detach(), expected.detach())}
        for k in inputs:
            want = whole[k].grad
            if want is not None and k in sliced:
                want = want[..., a:b] if k.endswith("logits") else want[a:b]
            errors[f"grad {k}"] = difference(mine[k].grad, want)
        # the loss is the same on every rank: gather and compare too
        values = [torch.zeros(()) for _ in range(world)]
        dist.all_gather(values, ours.detach().reshape(()))
        errors["loss across ranks"] = max(difference(v, values[0]) for v in values)
        worst = max(errors.values())
        ok = worst <= TOLERANCE
        failures += not ok
        line = {
            "check": name,
            "rank": rank,
            "world": world,
            "slice": [a, b],
            "vocabulary": V,
            "loss": float(ours.detach()),
            "reference": float(expected.detach()),
            "worst": worst,
            "errors": errors,
            "ok": ok,
        }
        print(json.dumps(line), flush=True)

    explicit = (start, stop)

    check(
        "vocab_parallel_cross_entropy",
        lambda t: cd.vocab_parallel_cross_entropy(
            t["logits"], target, vocab_start_index=start, weight=class_weight,
            label_smoothing=0.1, z_loss=1e-3,
        ),
        lambda t: ct.cross_entropy(
            t["logits"], target, weight=class_weight, label_smoothing=0.1, z_loss=1e-3
        ),
        {"logits": logits}, {"logits"}, explicit,
    )  # fmt: skip
    check(
        "vocab_parallel_cross_entropy none (rank order)",
        lambda t: (
            cd.vocab_parallel_cross_entropy(t["logits"], target, reduction="none") * upstream
        ).sum(),
        lambda t: (ct.cross_entropy(t["logits"], target, reduction="none") * upstream).sum(),
        {"logits": logits}, {"logits"}, in_order,
    )  # fmt: skip
    check(
        "vocab_parallel_linear_cross_entropy",
        lambda t: cd.vocab_parallel_linear_cross_entropy(
            t["input"], t["weight"], target, vocab_start_index=start, linear_bias=t["bias"],
            z_loss=1e-3, label_smoothing=0.05, chunk_size=4,
        ),
        lambda t: ct.linear_cross_entropy(
            t["input"], t["weight"], target, linear_bias=t["bias"], z_loss=1e-3,
            label_smoothing=0.05,
        ),
        {"input": hidden, "weight": weight, "bias": bias}, {"weight", "bias"}, explicit,
    )  # fmt: skip

    def tokens(log_probs_and_entropy: Any) -> Tensor:
        log_probs, entropy = log_probs_and_entropy
        return torch.sum(advantage * log_probs) + 0.3 * torch.sum(entropy)

    check(
        "vocab_parallel_token_log_probs",
        lambda t: tokens(cd.vocab_parallel_token_log_probs(
            t["logits"], target, vocab_start_index=start, temperature=0.7,
            return_entropy=True,
        )),
        lambda t: tokens(
            ct.token_log_probs(t["logits"], target, temperature=0.7, return_entropy=True)
        ),
        {"logits": logits}, {"logits"}, explicit,
    )  # fmt: skip
    check(
        "vocab_parallel_linear_token_log_probs",
        lambda t: tokens(cd.vocab_parallel_linear_token_log_probs(
            t["input"], t["weight"], target, linear_bias=t["bias"], temperature=1.3,
            return_entropy=True, chunk_size=4,
        )),
        lambda t: tokens(ct.linear_token_log_probs(
            t["input"], t["weight"], target, linear_bias=t["bias"], temperature=1.3,
            return_entropy=True,
        )),
        {"input": hidden, "weight": weight, "bias": bias}, {"weight", "bias"}, in_order,
    )  # fmt: skip

    def distillation(t: dict[str, Tensor], divergence: str, beta: float) -> Tensor:
        return cd.vocab_parallel_distillation_loss(
            t["student_logits"], t["teacher_logits"].detach(), target,
            vocab_start_index=start, divergence=divergence, beta=beta, temperature=1.5,
            hard_weight=0.5,
        )  # fmt: skip

    def distillation_reference(t: dict[str, Tensor], divergence: str, beta: float) -> Tensor:
        return ct.distillation_loss(
            t["student_logits"], t["teacher_logits"].detach(), target, divergence=divergence,
            beta=beta, temperature=1.5, hard_weight=0.5,
        )  # fmt: skip

    for divergence, beta in (("jsd", 0.3), ("forward_kl", 0.0)):
        check(
            f"vocab_parallel_distillation_loss {divergence}",
            functools.partial(distillation, divergence=divergence, beta=beta),
            functools.partial(distillation_reference, divergence=divergence, beta=beta),
            {"student_logits": logits, "teacher_logits": teacher},
            {"student_logits", "teacher_logits"}, explicit,
        )  # fmt: skip
    check(
        "vocab_parallel_linear_distillation_loss reverse_kl",
        lambda t: cd.vocab_parallel_linear_distillation_loss(
            t["input"], t["weight"], teacher_hidden, t["teacher_weight"].detach(), target,
            student_bias=t["bias"], teacher_bias=teacher_bias[in_order[0]:in_order[1]],
            divergence="reverse_kl", beta=1.0, temperature=0.8, hard_weight=0.25,
            chunk_size=4,
        ),
        lambda t: ct.linear_distillation_loss(
            t["input"], t["weight"], teacher_hidden, t["teacher_weight"].detach(), target,
            student_bias=t["bias"], teacher_bias=teacher_bias, divergence="reverse_kl",
            beta=1.0, temperature=0.8, hard_weight=0.25,
        ),
        {"input": hidden, "weight": weight, "bias": bias, "teacher_weight": teacher_weight},
        {"weight", "bias", "teacher_weight"}, in_order,
    )  # fmt: skip
    summary = {"rank": rank, "world": world, "failures": failures}
    print(json.dumps({"summary": summary}), flush=True)
    dist.destroy_process_group()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
