#!/usr/bin/env python
"""Vocabulary-parallel cross entropy on 1, 2 and 4 gloo ranks: per-rank peak memory and
bytes communicated per step, against gathering the logits.

For each world size the script spawns that many processes on this
machine (torch.multiprocessing, gloo over localhost, each rank with cores / world threads)
and runs, on the same data, one forward + backward of the mean loss per step for:

- ``ours``           crossentropy.torch.distributed.vocab_parallel_cross_entropy on the
                     rank's (N, V/world) slice of the logits
- ``gather``         the baseline: all_gather the slices, torch.cat into (N, V), the
                     single-process crossentropy.torch.cross_entropy (the fused kernel) on
                     the whole logits, the rank's slice of the gradient kept
- ``ours_linear``    vocab_parallel_linear_cross_entropy(h, W_k, t): hidden states h (N, D)
                     replicated, the rank's rows W_k (V/world, D); gradients of h and W_k
- ``gather_linear``  the baseline: local logits h W_k^T, all_gather, cat, cross_entropy on
                     (N, V), then dW_k = G_k^T h and the partial dh = G_k W_k, all-reduced

Bytes communicated are counted, not estimated from a formula: the script wraps
torch.distributed.all_reduce / all_gather in every rank and adds up the bytes of the
tensors handed to them during one step. ``payload`` is what a rank contributes (an
all-reduce's tensor, an all-gather's input); ``wire`` is what a rank sends with the ring
algorithms (all-reduce 2 (w-1)/w x payload, all-gather (w-1) x payload; 0 on one rank).

Peak memory is measured per rank, not estimated: VmRSS read after a warm-up step whose
results were freed (and the fused kernel's cached buffer released), the peak RSS reset
(writing "5" to /proc/self/clear_refs), one step, VmHWM read. The difference is everything
the step allocated at its peak over its inputs (the logits slice or h and W_k), the
gradients it returns included; glibc's malloc is told to serve every block over 64 KiB with
mmap (MALLOC_MMAP_THRESHOLD_) so freed memory returns to the system. Times (medians of a
few steps, the slowest rank's) are reported but are not the point: all ranks share this
machine's cores.

Usage::

    .venv/bin/python benchmarks/bench_vocab_parallel.py           # full run, a few minutes
    .venv/bin/python benchmarks/bench_vocab_parallel.py --quick   # smoke test, small

The table is printed and saved as JSON (default benchmarks/results/vocab_parallel.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import (
    MALLOC_ENV,
    Column,
    command_line,
    proc_status_kib,
    reset_peak_rss,
    table,
    utc,
    write_json,
)
from _harness import machine as machine_info

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "vocab_parallel.json"

VARIANTS = ("ours", "gather", "ours_linear", "gather_linear")
BASELINE = {"ours": "gather", "ours_linear": "gather_linear"}
LABELS = {
    "ours": "vocab_parallel_cross_entropy",
    "gather": "all_gather logits + cross_entropy",
    "ours_linear": "vocab_parallel_linear_cross_entropy",
    "gather_linear": "linear, all_gather logits + CE",
}

MEMORY_METHOD = (
    "per rank: one warm-up step, its results freed and the fused kernel's cached buffer "
    "released, VmRSS read, peak reset via /proc/self/clear_refs <- '5', one step (forward + "
    "backward), VmHWM read; the difference is the step's peak over its inputs, the "
    "gradients it returns included; MALLOC_MMAP_THRESHOLD_=65536 so freed blocks return "
    "to the system"
)
BYTES_METHOD = (
    "counted: torch.distributed.all_reduce and all_gather are wrapped in every rank and the "
    "bytes of the tensors handed to them during one step are added up; payload = the "
    "tensors a rank contributes, wire = what it sends with ring algorithms (all-reduce "
    "2(w-1)/w x payload, all-gather (w-1) x payload)"
)


@dataclasses.dataclass(frozen=True)
class Config:
    tokens: int  # N
    vocabulary: int  # V, divisible by every world size
    hidden: int  # D, for the linear variants
    reps: int

    @property
    def logits_bytes(self) -> int:
        return self.tokens * self.vocabulary * 4


FULL = Config(tokens=2048, vocabulary=32000, hidden=1024, reps=3)
QUICK = Config(tokens=256, vocabulary=1000, hidden=64, reps=2)
FULL_WORLDS = (1, 2, 4)
QUICK_WORLDS = (1, 2)


# --------------------------------------------------------------------------- rank side


class Traffic:
    """Wraps the collectives of torch.distributed and counts the bytes handed to them."""

    def __init__(self, world: int) -> None:
        import torch.distributed as dist

        self.world = world
        self.payload = 0
        self.wire = 0.0
        self.calls = 0
        reduce, gather = dist.all_reduce, dist.all_gather

        def all_reduce(tensor: Any, *args: Any, **kwargs: Any) -> Any:
            self._count(tensor, 2 * (world - 1) / world)
            return reduce(tensor, *args, **kwargs)

        def all_gather(tensors: Any, tensor: Any, *args: Any, **kwargs: Any) -> Any:
            self._count(tensor, world - 1)
            return gather(tensors, tensor, *args, **kwargs)

        dist.all_reduce = all_reduce
        dist.all_gather = all_gather

    def _count(self, tensor: Any, wire_factor: float) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        self.payload += nbytes
        self.wire += wire_factor * nbytes
        self.calls += 1

    def reset(self) -> None:
        self.payload, self.wire, self.calls = 0, 0.0, 0


def make_step(name: str, cfg: Config, rank: int, world: int) -> tuple[Callable[[], Any], Any]:
    """The variant's step on this rank's data, and the state it keeps (for ``clear``)."""
    import torch
    import torch.distributed as dist

    import crossentropy.torch as ct
    from crossentropy.torch.distributed import (
        vocab_parallel_cross_entropy,
        vocab_parallel_linear_cross_entropy,
    )

    width = cfg.vocabulary // world
    start, stop = rank * width, (rank + 1) * width
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, cfg.vocabulary, (cfg.tokens,), generator=g)
    state: dict[str, Any] = {}
    if name in ("ours", "gather"):
        rows = []  # the rank's slice of the (N, V) logits, generated a block of rows at a time
        for first in range(0, cfg.tokens, 256):
            block = torch.randn(min(256, cfg.tokens - first), cfg.vocabulary, generator=g)
            rows.append(block[:, start:stop].clone())
        shard = torch.cat(rows).requires_grad_()
        del rows
        state["leaves"] = [shard]
        if name == "ours":

            def step() -> Any:
                loss = vocab_parallel_cross_entropy(shard, target)
                loss.backward()
                return loss.detach()

            return step, state

        def gather_step() -> Any:
            pieces = [torch.empty_like(shard) for _ in range(world)]
            dist.all_gather(pieces, shard.detach())
            whole = torch.cat(pieces, dim=1).requires_grad_()
            del pieces
            loss = ct.cross_entropy(whole, target)
            loss.backward()
            assert whole.grad is not None
            shard.grad = whole.grad[:, start:stop].clone()
            return loss.detach()

        return gather_step, state

    h = torch.randn(cfg.tokens, cfg.hidden, generator=g).requires_grad_()
    w_all = torch.randn(cfg.vocabulary, cfg.hidden, generator=g) * cfg.hidden**-0.5
    w = w_all[start:stop].clone().requires_grad_()
    del w_all
    state["leaves"] = [h, w]
    if name == "ours_linear":

        def linear_step() -> Any:
            loss = vocab_parallel_linear_cross_entropy(h, w, target)
            loss.backward()
            return loss.detach()

        return linear_step, state

    def gather_linear_step() -> Any:
        hd, wd = h.detach(), w.detach()
        local = hd @ wd.T
        pieces = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(pieces, local)
        del local
        whole = torch.cat(pieces, dim=1).requires_grad_()
        del pieces
        loss = ct.cross_entropy(whole, target)
        loss.backward()
        assert whole.grad is not None
        grad_k = whole.grad[:, start:stop]
        w.grad = grad_k.T @ hd
        grad_h = grad_k @ wd
        dist.all_reduce(grad_h)
        h.grad = grad_h
        return loss.detach()

    return gather_linear_step, state


def clear(state: dict[str, Any]) -> None:
    for leaf in state["leaves"]:
        leaf.grad = None


def rank_main(rank: int, world: int, port: int, spec: dict[str, Any], out: str) -> None:
    import torch
    import torch.distributed as dist

    from crossentropy.torch import release_cached_buffers

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=600),
    )
    traffic = Traffic(world)
    cfg = Config(**spec["config"])
    can_reset = reset_peak_rss()
    results: dict[str, Any] = {}
    for name in spec["variants"]:
        step, state = make_step(name, cfg, rank, world)
        loss = step()  # warm-up (the kernel compiled and loaded, thread pools started)
        clear(state)
        times = []
        for _ in range(cfg.reps):
            dist.barrier()
            traffic.reset()
            began = time.perf_counter()
            loss = step()
            times.append(time.perf_counter() - began)
            clear(state)
        counted = (traffic.payload, traffic.wire, traffic.calls)
        del loss
        release_cached_buffers()
        gc.collect()
        dist.barrier()
        before = proc_status_kib("VmRSS")
        if can_reset:
            reset_peak_rss()
        loss = step()
        peak = proc_status_kib("VmHWM")
        results[name] = {
            "loss": float(loss),
            "seconds_all": times,
            "payload_bytes": counted[0],
            "wire_bytes": counted[1],
            "collectives": counted[2],
            "peak_over_inputs_bytes": max(0, peak - before) * 1024,
            "peak_reset": can_reset,
        }
        clear(state)
        del step, state, loss
        release_cached_buffers()
        gc.collect()
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


# --------------------------------------------------------------------------- parent side


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_world(world: int, cfg: Config) -> list[dict[str, Any]]:
    import torch.multiprocessing as mp

    os.environ.update(MALLOC_ENV)  # the ranks inherit it
    spec = {"config": dataclasses.asdict(cfg), "variants": list(VARIANTS)}
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(rank_main, args=(world, free_port(), spec, out), nprocs=world, join=True)
        return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(world)]


def summarise(world: int, ranks: list[dict[str, Any]], cfg: Config) -> list[dict[str, Any]]:
    rows = []
    for name in VARIANTS:
        per_rank = [r[name] for r in ranks]
        slowest = [max(times) for times in zip(*(p["seconds_all"] for p in per_rank), strict=True)]
        peaks = [p["peak_over_inputs_bytes"] for p in per_rank]
        rows.append(
            {
                "world": world,
                "variant": name,
                "label": LABELS[name],
                "loss": per_rank[0]["loss"],
                "losses_equal_on_all_ranks": len({p["loss"] for p in per_rank}) == 1,
                "seconds": statistics.median(slowest),
                "seconds_all": slowest,
                "peak_over_inputs_bytes_per_rank": peaks,
                "peak_over_inputs_bytes_max": max(peaks),
                "peak_x_logits": max(peaks) / cfg.logits_bytes,
                "payload_bytes_per_rank": [p["payload_bytes"] for p in per_rank],
                "wire_bytes_per_rank": [p["wire_bytes"] for p in per_rank],
                "collectives_per_step": per_rank[0]["collectives"],
                "peak_reset": all(p["peak_reset"] for p in per_rank),
            }
        )
    by = {r["variant"]: r for r in rows}
    for ours, base in BASELINE.items():
        o, b = by[ours], by[base]
        o["rel_loss_diff_vs_gather"] = abs(o["loss"] - b["loss"]) / abs(b["loss"])
        o["peak_x_gather"] = o["peak_over_inputs_bytes_max"] / max(
            b["peak_over_inputs_bytes_max"], 1
        )
        o["payload_x_gather"] = (
            max(o["payload_bytes_per_rank"]) / max(b["payload_bytes_per_rank"])
            if world > 1
            else None
        )
        o["wire_x_gather"] = (
            max(o["wire_bytes_per_rank"]) / max(b["wire_bytes_per_rank"]) if world > 1 else None
        )
        o["time_x_gather"] = o["seconds"] / b["seconds"]
    return rows


COLUMNS = (
    Column("ranks", 5, "5d"),
    Column("variant", 36, left=True),
    Column("median s", 8, "8.3f"),
    Column("peak/rank MiB", 13, "13.1f"),
    Column("x gather", 8, "8.3f"),
    Column("sent/rank KiB", 13, "13.1f"),
    Column("x gather", 8, "8.4f"),
    Column("calls", 5, "5d"),
)


def render(rows: list[dict[str, Any]]) -> str:
    cells = []
    for r in rows:
        cells.append(
            (
                [
                    r["world"],
                    r["label"],
                    r["seconds"],
                    r["peak_over_inputs_bytes_max"] / 2**20,
                    r.get("peak_x_gather"),
                    max(r["wire_bytes_per_rank"]) / 1024,
                    r.get("wire_x_gather"),
                    r["collectives_per_step"],
                ],
                "" if r["losses_equal_on_all_ranks"] else "LOSSES DIFFER ACROSS RANKS",
            )
        )
    return "\n".join(table(COLUMNS, cells, pad_missing=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, 1 and 2 ranks")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file to write")
    args = parser.parse_args(argv)

    import torch

    cfg = QUICK if args.quick else FULL
    worlds = QUICK_WORLDS if args.quick else FULL_WORLDS
    load_before = os.getloadavg()
    started = time.time()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs; (N, V) = ({cfg.tokens}, "
        f"{cfg.vocabulary}), D = {cfg.hidden}, float32, mean loss, forward + backward",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for world in worlds:
        print(f"{world} rank(s) ...", flush=True)
        rows.extend(summarise(world, run_world(world, cfg), cfg))
    print()
    print(f"peak/rank: the largest rank's peak over its inputs ({MEMORY_METHOD}).")
    print(f"sent/rank: {BYTES_METHOD}; x gather: ours / the gathering baseline's.\n")
    print(render(rows))
    report = {
        "benchmark": "vocabulary-parallel cross entropy against gathering the logits",
        "command": command_line(),
        "quick": args.quick,
        "date_utc": utc(started),
        "wall_seconds": time.time() - started,
        "machine": machine_info(torch.get_num_threads(), load_before),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "backend": "gloo over localhost, one process per rank on this machine",
        "config": dataclasses.asdict(cfg) | {"dtype": "float32", "logits_bytes": cfg.logits_bytes},
        "memory_method": MEMORY_METHOD,
        "bytes_method": BYTES_METHOD,
        "timing": "median over steps of the slowest rank's time; all ranks share the CPUs",
        "rows": rows,
    }
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
