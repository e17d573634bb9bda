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

Several machines, CPU and gloo (one agent per machine; HEAD is the first machine's address,
ADDR each machine's own, IFACE its interface on that network)::

    # on the head (the machine that hosts the rendezvous store)
    GLOO_SOCKET_IFNAME=$IFACE torchrun --nnodes=2 --nproc_per_node=1 \\
        --rdzv_backend=c10d --rdzv_endpoint=$HEAD:29500 --rdzv_id=run1 \\
        --rdzv_conf=is_host=1 --local_addr=$ADDR examples/vocab_parallel_train.py
    # on every other machine: the same without --rdzv_conf=is_host=1
    GLOO_SOCKET_IFNAME=$IFACE torchrun --nnodes=2 --nproc_per_node=1 \\
        --rdzv_backend=c10d --rdzv_endpoint=$HEAD:29500 --rdzv_id=run1 \\
        --local_addr=$ADDR examples/vocab_parallel_train.py

``is_host=1``, ``--local_addr`` and ``GLOO_SOCKET_IFNAME`` matter where a machine's name
resolves to loopback (``127.0.1.1 myhost`` in /etc/hosts): torch would then neither know
that it hosts the store nor tell the others an address they can reach. With GPUs: NCCL,
``--backend nccl``, ``NCCL_SOCKET_IFNAME`` beside ``GLOO_SOCKET_IFNAME``, and
``--nproc_per_node`` the GPUs of a machine.

Faults end instead of hanging. ``--timeout SECONDS`` (default 60) bounds every collective:
a rank whose peer went silent (a cut link) raises after it, and the script then exits at
once (torch's own default is 30 minutes for gloo, too long to notice anything at a
terminal). A killed peer is seen within seconds ("Connection closed by peer"). A machine
that never joins ends the others' rendezvous after ``--rdzv_conf=join_timeout=S`` (600 s by
default). One caveat from the kernel: after a cut link torch's rendezvous keep-alive on the
non-head machines waits on a write to the head's store that only fails when TCP gives up
(about 15 minutes by default; ``sysctl -w net.ipv4.tcp_retries2=5``: about 6 to 13 s);
until then that agent also ignores SIGTERM.

Elastic restarts: ``--checkpoint PATH --checkpoint-every N`` makes rank 0 write every N steps
(atomically: ``PATH.tmp``, fsync, rename) the step, the replicated layers, the whole output
layer and the optimiser's state (the output layer's Adam moments gathered from every rank);
at start every rank resumes from PATH if it exists (PATH on storage every machine sees; a
different number of ranks may resume it). The data of a step depends only on the step, so a
resumed run ends with the loss of an uninterrupted one. With ``torchrun --max-restarts=K``
also set ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` for every agent: by default the restarted
workers share the first round's store and read the dead workers' addresses from it::

    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 GLOO_SOCKET_IFNAME=$IFACE torchrun --nnodes=2 \\
        --nproc_per_node=1 --max-restarts=3 --rdzv_backend=c10d --rdzv_endpoint=$HEAD:29500 \\
        --rdzv_id=run1 --local_addr=$ADDR [--rdzv_conf=is_host=1 on the head] \\
        examples/vocab_parallel_train.py --timeout 30 --checkpoint /shared/run1.pt
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import socket
import sys
import time
import traceback
from typing import Any

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
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds a collective may wait for the other ranks before every rank raises "
        "(torch's default for gloo is 30 minutes)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="resume from PATH if it exists; write it while training",
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=10, metavar="N", help="steps between checkpoints"
    )
    parser.add_argument(
        "--step-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="sleep after each step: time to try a fault by hand",
    )
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


def gather_rows(part: torch.Tensor, vocabulary: int) -> torch.Tensor:
    """The whole (vocabulary x ...) tensor from every rank's rows, on every rank.

    all_gather takes equal sizes: each slice is padded to the widest, then trimmed."""
    world = dist.get_world_size()
    sizes = [b - a for a, b in (vocabulary_slice(vocabulary, r, world) for r in range(world))]
    padded = part.new_zeros(max(sizes), *part.shape[1:])
    padded[: part.shape[0]] = part
    pieces = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[:size] for piece, size in zip(pieces, sizes, strict=True)])


def save_checkpoint(
    path: str,
    step: int,
    args: argparse.Namespace,
    body: torch.nn.Module,
    head: torch.nn.Parameter,
    optimizer: torch.optim.Optimizer,
) -> None:
    """Every rank gathers the head and its Adam moments; rank 0 writes them atomically.

    The file is written beside ``path`` (``path.tmp``), flushed and fsync'ed, then renamed
    over ``path``: a reader sees the old checkpoint or the new one, never a torn one."""
    head_index = len(optimizer.param_groups[0]["params"]) - 1  # the head is the last
    state = optimizer.state_dict()
    moments = state["state"][head_index]
    whole = {
        name: gather_rows(moments[name].detach().cpu(), args.vocabulary).clone()
        for name in ("exp_avg", "exp_avg_sq")
    }
    weight = gather_rows(head.detach().cpu(), args.vocabulary)
    if dist.get_rank() != 0:
        return
    state["state"][head_index] = {**moments, **whole}
    checkpoint = {
        "step": step,  # the last step done
        "vocabulary": args.vocabulary,
        "hidden": args.hidden,
        "world": dist.get_world_size(),
        "body": {k: v.detach().cpu() for k, v in body.state_dict().items()},
        "head": weight,  # every rank's rows, in rank order
        "optimizer": state,  # the head's moments whole, like the head
    }
    temporary = path + ".tmp"
    with open(temporary, "wb") as f:
        torch.save(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:  # the rename itself durable
        os.fsync(directory)
    finally:
        os.close(directory)
    print(f"checkpoint: step {step} written to {path}", flush=True)


def load_checkpoint(path: str | None, args: argparse.Namespace) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if there is one; every rank must see the same one."""
    rank = dist.get_rank()
    checkpoint = None
    if path is not None and os.path.exists(path):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        for field in ("vocabulary", "hidden"):
            if checkpoint[field] != getattr(args, field):
                raise SystemExit(
                    f"rank {rank}: the checkpoint {path} was made with --{field} "
                    f"{checkpoint[field]}, this run has --{field} {getattr(args, field)}; "
                    f"use the same {field} or another --checkpoint path"
                )
    # each rank reads the file itself: all must find the same step (-1: no checkpoint)
    step = torch.tensor([-1 if checkpoint is None else int(checkpoint["step"])])
    low, high = step.clone(), step.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if low.item() != high.item():
        raise SystemExit(
            f"rank {rank}: the ranks see different checkpoints at {path} (last steps "
            f"{low.item()} to {high.item()}, -1: no file; this rank {step.item()}): every "
            "node must see the same file (shared storage)"
        )
    return checkpoint


def main() -> None:
    args = parse()
    timeout = datetime.timedelta(seconds=args.timeout)
    dist.init_process_group(args.backend, timeout=timeout)
    rank, world = dist.get_rank(), dist.get_world_size()
    print(f"rank {rank}: pid {os.getpid()} on {socket.gethostname()}", flush=True)
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
    first = 0
    checkpoint = load_checkpoint(args.checkpoint, args)
    if checkpoint is not None:  # this rank's rows of the whole head and of its moments
        body.load_state_dict(checkpoint["body"])
        with torch.no_grad():
            head.copy_(checkpoint["head"][start:stop])
        state = checkpoint["optimizer"]
        moments = state["state"][len(state["param_groups"][0]["params"]) - 1]
        for name in ("exp_avg", "exp_avg_sq"):
            moments[name] = moments[name][start:stop].clone()
        optimizer.load_state_dict(state)
        first = int(checkpoint["step"]) + 1
        del checkpoint, state, moments
    if rank == 0:
        print(
            f"{world} rank(s), backend {args.backend}, vocabulary {args.vocabulary} "
            f"(rank 0 holds [{start}, {stop})), {args.batch}x{args.length} tokens a step; "
            f"log V = {math.log(args.vocabulary):.3f}, floor ~ {chain.entropy_rate():.3f} nats",
            flush=True,
        )
        if first:
            print(f"resumed from {args.checkpoint} at step {first}", flush=True)

    began = time.perf_counter()
    for step in range(first, args.steps):
        tokens = chain.sample(args.batch, args.length, seed=step).to(device)  # same on all
        hidden = body(tokens[:, :-1])  # (batch, length, hidden), replicated
        loss = vocab_parallel_linear_cross_entropy(hidden, head, tokens[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {loss.item():.4f}", flush=True)
        if args.checkpoint is not None and (step + 1) % args.checkpoint_every == 0:
            save_checkpoint(args.checkpoint, step, args, body, head, optimizer)
        if args.step_delay:
            time.sleep(args.step_delay)
    elapsed = time.perf_counter() - began

    # the check: the whole weight on every rank once, the single-process loss on it
    tokens = chain.sample(args.batch, args.length, seed=10**6).to(device)
    with torch.no_grad():
        hidden = body(tokens[:, :-1])
        ours = vocab_parallel_linear_cross_entropy(hidden, head, tokens[:, 1:])
        weight = gather_rows(head.detach(), args.vocabulary)
        flat = hidden.reshape(-1, args.hidden)
        if device.type == "cpu":
            single = linear_cross_entropy(flat, weight, tokens[:, 1:].reshape(-1))
        else:  # the chunked single-process path is CPU-only; the unfused one anywhere
            single = torch.nn.functional.cross_entropy(flat @ weight.T, tokens[:, 1:].reshape(-1))
    if rank == 0:
        print(
            f"held-out loss {ours.item():.6f} (single process on the gathered weight: "
            f"{single.item():.6f}); {args.steps - first} steps in {elapsed:.1f} s",
            flush=True,
        )
    if not math.isclose(ours.item(), single.item(), rel_tol=1e-5):
        raise SystemExit(f"rank {rank}: the vocabulary-parallel loss differs from the single one")
    dist.destroy_process_group()


def run() -> None:
    """main(), and on an error a prompt exit: the traceback, then ``os._exit(1)``.

    After a collective fails (a peer gone, a link cut, the timeout), an ordinary exit
    tears down the process group, whose gloo threads can wait for ever on a send to the
    lost peer: the rank would print its error and then hang instead of ending."""
    try:
        main()
    except SystemExit as error:
        if error.code in (None, 0):
            raise
        print(error.code, file=sys.stderr, flush=True)
        os._exit(1)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)


if __name__ == "__main__":
    run()
