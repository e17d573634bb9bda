"""Train a small next-token model whose output layer is split by vocabulary across ranks.

Every rank runs the same embedding and hidden layer on the same batch (replicated, same
seed), and holds only its rows ``W_k`` of the output layer's weight (V_k x D). The loss is
:func:`crossentropy.torch.distributed.vocab_parallel_linear_cross_entropy`: no rank ever
holds the (tokens x V) logits or gathers them. Because the loss all-reduces the hidden
states' gradient, the replicated layers get the same gradient on every rank and their
optimisers stay in step with no other communication; each rank updates its own ``W_k``.

The data is a random first-order Markov chain over the vocabulary (each token has a few
likely successors), so the loss falls from log V towards the chain's entropy, printed as
the floor. At the end the script gathers the weight slices once and checks the loss
against the single-process ``crossentropy.torch.linear_cross_entropy`` on the whole weight.

Run on one machine, CPU and gloo::

    torchrun --nproc_per_node=2 examples/vocab_parallel_train.py

Several machines with GPUs, NCCL (the same command on every node, NODE_RANK 0..N-1)::

    torchrun --nnodes=2 --node_rank=$NODE_RANK --nproc_per_node=8 \\
        --rdzv_backend=c10d --rdzv_endpoint=$HEAD_NODE:29500 \\
        examples/vocab_parallel_train.py --backend nccl
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
import torch.distributed as dist

from crossentropy.torch import linear_cross_entropy
from crossentropy.torch.distributed import vocab_parallel_linear_cross_entropy


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("gloo", "nccl"), default="gloo")
    parser.add_argument("--vocabulary", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--length", type=int, default=64, help="tokens per sequence")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--successors", type=int, default=4, help="likely next tokens")
    return parser.parse_args()


def vocabulary_slice(vocabulary: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of this rank's classes: as even as possible, in rank order."""
    base, extra = divmod(vocabulary, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


class MarkovChain:
    """Each token's successors: ``successors`` likely ones, the rest of the mass spread."""

    def __init__(self, vocabulary: int, successors: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.next = torch.randint(0, vocabulary, (vocabulary, successors), generator=g)
        self.vocabulary = vocabulary
        self.successors = successors
        self.stay = 0.9  # probability of a likely successor

    def entropy_rate(self) -> float:
        """Entropy of the next token given the current one (nats), ignoring the rare
        collisions between likely successors and the uniform rest."""
        likely = self.stay / self.successors
        rest = (1 - self.stay) / self.vocabulary
        return -(self.successors * likely * math.log(likely) + (1 - self.stay) * math.log(rest))

    def sample(self, batch: int, length: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        tokens = torch.empty(batch, length + 1, dtype=torch.int64)
        tokens[:, 0] = torch.randint(0, self.vocabulary, (batch,), generator=g)
        for t in range(length):
            pick = torch.randint(0, self.successors, (batch,), generator=g)
            likely = self.next[tokens[:, t], pick]
            anything = torch.randint(0, self.vocabulary, (batch,), generator=g)
            keep = torch.rand(batch, generator=g) < self.stay
            tokens[:, t + 1] = torch.where(keep, likely, anything)
        return tokens


def main() -> None:
    args = parse()
    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks_here))
    start, stop = vocabulary_slice(args.vocabulary, rank, world)

    torch.manual_seed(0)  # the replicated layers start the same on every rank
    body = torch.nn.Sequential(
        torch.nn.Embedding(args.vocabulary, args.hidden),
        torch.nn.Linear(args.hidden, args.hidden),
        torch.nn.GELU(),
    ).to(device)
    whole = torch.randn(args.vocabulary, args.hidden) * args.hidden**-0.5
    head = torch.nn.Parameter(whole[start:stop].clone().to(device))  # this rank's rows only
    del whole
    optimizer = torch.optim.Adam([*body.parameters(), head], lr=args.lr)
    chain = MarkovChain(args.vocabulary, args.successors)
    if rank == 0:
        print(
            f"{world} rank(s), backend {args.backend}, vocabulary {args.vocabulary} "
            f"(rank 0 holds [{start}, {stop})), {args.batch}x{args.length} tokens a step; "
            f"log V = {math.log(args.vocabulary):.3f}, floor ~ {chain.entropy_rate():.3f} nats"
        )

    began = time.perf_counter()
    for step in range(args.steps):
        tokens = chain.sample(args.batch, args.length, seed=step).to(device)  # same on all
        hidden = body(tokens[:, :-1])  # (batch, length, hidden), replicated
        loss = vocab_parallel_linear_cross_entropy(hidden, head, tokens[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {loss.item():.4f}")
    elapsed = time.perf_counter() - began

    # the check: the whole weight on every rank once, the single-process loss on it
    tokens = chain.sample(args.batch, args.length, seed=10**6).to(device)
    with torch.no_grad():
        hidden = body(tokens[:, :-1])
        ours = vocab_parallel_linear_cross_entropy(hidden, head, tokens[:, 1:])
        # all_gather takes equal sizes: each slice padded to the widest, then trimmed
        sizes = [
            b - a for a, b in (vocabulary_slice(args.vocabulary, r, world) for r in range(world))
        ]
        padded = torch.zeros(max(sizes), args.hidden, device=device)
        padded[: stop - start] = head.detach()
        pieces = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(pieces, padded)
        weight = torch.cat([piece[:size] for piece, size in zip(pieces, sizes, strict=True)])
        flat = hidden.reshape(-1, args.hidden)
        if device.type == "cpu":
            single = linear_cross_entropy(flat, weight, tokens[:, 1:].reshape(-1))
        else:  # the chunked single-process path is CPU-only; the unfused one anywhere
            single = torch.nn.functional.cross_entropy(flat @ weight.T, tokens[:, 1:].reshape(-1))
    if rank == 0:
        print(
            f"held-out loss {ours.item():.6f} (single process on the gathered weight: "
            f"{single.item():.6f}); {args.steps} steps in {elapsed:.1f} s"
        )
    if not math.isclose(ours.item(), single.item(), rel_tol=1e-5):
        raise SystemExit(f"rank {rank}: the vocabulary-parallel loss differs from the single one")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
