#!/usr/bin/env python
"""Per-token log-probabilities and entropies from hidden states, forward + backward, on CPU.

For each configuration ((N, D, V) = (4096, 1024, 32000) and (2048, 2048, 128256), float32
and bfloat16) it times, in ONE process on the same data (hidden states h (N, D) and weight
W (V, D), leaves requiring grad, targets y (N,), random incoming gradients a and c (N,) on
the two outputs), the forward and the backward of ``(a * log_probs).sum() +
(c * entropy).sum()`` for:

- ``floor``            the matrix products alone: the logits twice (forward, and again in
                       the backward, as a sweep that never holds them recomputes them),
                       dh = G @ W and dW = G.T @ h, G of the logits' shape preallocated,
                       every result into preallocated outputs (torch.mm out=)
- ``unfused``          log_softmax(h @ W.T / T) in float32, the targets' entries gathered
                       and the entropy -sum p log p from it, under autograd (eager)
- ``unfused_compiled`` the same function under torch.compile (compiled in the warm-up)
- ``ours``             crossentropy.torch.linear_token_log_probs(h, W, y,
                       return_entropy=True) (impl="auto", chunk_size=None)
- ``liger``            Liger-Kernel's chunked losses, when one computes these quantities
                       on CPU (recorded as unavailable, with the reason, otherwise)

The variants run round-robin (one warm-up round, then every timed round runs each variant
once), so that a drift of the machine affects them alike; times are medians. Peak memory
beyond the inputs and their gradients is measured in a fresh subprocess (see
benchmarks/_harness.py): the peak RSS of one run over the inputs, minus the bytes of the
gradients the run leaves (h.grad and W.grad; the floor: its dh and dW).

Usage::

    .venv/bin/python benchmarks/bench_token_log_probs.py          # full run (long)
    .venv/bin/python benchmarks/bench_token_log_probs.py --quick  # smoke test, small shapes

The table is printed and saved as JSON (default benchmarks/results/token_log_probs.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import (
    NOISY,
    Column,
    Prepared,
    command_line,
    emit_result,
    fits_in_memory,
    fmt,
    probe_peak,
    reset_peak_rss,
    run_workers,
    table,
    time_interleaved,
    utc,
    verdict,
    write_json,
)
from _harness import machine as machine_info

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "token_log_probs.json"

VARIANTS = ("floor", "unfused", "unfused_compiled", "ours", "liger")
LABELS = {
    "floor": "floor: h@W.T twice, G@W, G.T@h",
    "unfused": "log_softmax(h@W.T/T) gathered + entropy",
    "unfused_compiled": "the same under torch.compile",
    "ours": "crossentropy linear_token_log_probs",
    "liger": "Liger-Kernel chunked loss",
}
TEMPERATURE = 1.0

# The targets, for ``ours``.
PEAK_X_UNFUSED = 1 / 8
TIME_X_FLOOR = {"float32": 1.15, "bfloat16": 1.25}

CHECK_ROWS = 256  # the rows of the input and weight gradients compared with the unfused

MEMORY_METHOD = (
    "peak RSS over the inputs minus the gradients the run leaves, in a fresh subprocess "
    "(--quick: one per configuration, else one per variant): h, W, y, a, c allocated (the "
    "floor: and its G), one warm-up run (compiling, for the compiled variant), what it left "
    "freed (and the fused paths' cached buffers released), VmRSS read, peak reset via "
    "/proc/self/clear_refs <- '5', one measured run, VmHWM read; then the bytes of h.grad "
    "and W.grad (the floor: its dh and dW) subtracted; MALLOC_MMAP_THRESHOLD_=65536 so "
    "freed blocks return to the system"
)


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    tokens: int  # N
    hidden: int  # D
    vocabulary: int  # V
    dtype: str  # "float32" | "bfloat16"
    warmup: int = 1
    reps: int = 3

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else 4

    @property
    def logits_bytes(self) -> int:
        return self.tokens * self.vocabulary * self.itemsize

    @property
    def grads_bytes(self) -> int:
        return (self.tokens + self.vocabulary) * self.hidden * self.itemsize


def _configs(shapes: tuple[tuple[int, int, int], ...], **kw: Any) -> tuple[Config, ...]:
    return tuple(
        Config(f"{dtype} ({n}, {d}, {v})", n, d, v, dtype, **kw)
        for n, d, v in shapes
        for dtype in ("float32", "bfloat16")
    )


FULL_CONFIGS = _configs(((4096, 1024, 32000), (2048, 2048, 128256)))
QUICK_CONFIGS = _configs(((256, 64, 1000),))


# --------------------------------------------------------------------------- the variants


def liger_unavailable() -> str:
    """Why Liger-Kernel's chunked losses are not a variant here: none of them is known to
    compute per-token log-probabilities and entropies (and it may not be installed)."""
    if importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed here (not installed for this benchmark)"
    return (
        "liger-kernel is installed, but this benchmark has no adapter for it: its chunked "
        "losses return reduced losses, not per-token log-probabilities and entropies"
    )


def make_data(cfg: Config) -> tuple[Any, ...]:
    """h (N, D), W (V, D) (leaves requiring grad, W scaled so the logits are of order 1),
    y (N,) and the incoming gradients a, c (N,) float32: the same for a configuration."""
    import torch

    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, cfg.dtype)
    h = torch.randn(cfg.tokens, cfg.hidden, generator=g).to(dtype).requires_grad_(True)
    w = torch.randn(cfg.vocabulary, cfg.hidden, generator=g) * cfg.hidden**-0.5
    w = w.to(dtype).requires_grad_(True)
    y = torch.randint(0, cfg.vocabulary, (cfg.tokens,), generator=g)
    a = torch.randn(cfg.tokens, generator=g)
    c = torch.randn(cfg.tokens, generator=g)
    return h, w, y, a, c


def unfused_outputs(h: Any, w: Any, y: Any) -> tuple[Any, Any]:
    """The unfused computation: the logits, log_softmax in float32, gathered; entropy."""
    import torch

    log_p = torch.log_softmax((h @ w.T).float() / TEMPERATURE, dim=-1)
    log_prob = log_p.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return log_prob, entropy


def _ours(h: Any, w: Any, y: Any) -> tuple[Any, Any]:
    from crossentropy.torch import linear_token_log_probs

    out = linear_token_log_probs(h, w, y, temperature=TEMPERATURE, return_entropy=True)
    assert isinstance(out, tuple)
    return out


@dataclasses.dataclass
class Variant:
    prepared: Prepared
    gradients: Callable[[], list[Any]]  # the gradient tensors a run left (memory)
    outputs: Callable[[], tuple[Any, ...]]  # (log_prob, entropy, dh rows, dW rows) or ()


def prepare(name: str, h: Any, w: Any, y: Any, a: Any, c: Any, *, memory: bool = False) -> Variant:
    """One variant on the data; ``memory=True``: the floor allocates its results."""
    import torch

    if name == "floor":
        hd, wd = h.detach(), w.detach()
        g = torch.randn(h.shape[0], w.shape[0], generator=torch.Generator().manual_seed(2))
        grad_logits = g.to(h.dtype)
        if memory:
            held: list[Any] = []

            def alloc() -> None:
                held.clear()
                torch.mm(hd, wd.t())  # the forward's logits, freed
                torch.mm(hd, wd.t())  # the backward's
                held.extend([torch.mm(grad_logits, wd), torch.mm(grad_logits.t(), hd)])

            return Variant(Prepared(step=alloc, prep=held.clear), lambda: list(held), tuple)
        logits = torch.empty(h.shape[0], w.shape[0], dtype=h.dtype)
        grad_h, grad_w = torch.empty_like(hd), torch.empty_like(wd)

        def products() -> None:
            torch.mm(hd, wd.t(), out=logits)
            torch.mm(hd, wd.t(), out=logits)
            torch.mm(grad_logits, wd, out=grad_h)
            torch.mm(grad_logits.t(), hd, out=grad_w)

        return Variant(Prepared(step=products), lambda: [grad_h, grad_w], tuple)

    if name == "unfused":
        function: Callable[..., tuple[Any, Any]] = unfused_outputs
    elif name == "unfused_compiled":
        function = torch.compile(unfused_outputs)
    elif name == "ours":
        function = _ours
    else:
        raise ImportError(liger_unavailable())
    kept: list[Any] = []

    def run() -> None:
        log_prob, entropy = function(h, w, y)
        ((a * log_prob).sum() + (c * entropy).sum()).backward()
        kept[:] = [log_prob.detach(), entropy.detach()]

    def clear() -> None:
        h.grad = w.grad = None
        kept.clear()

    def outputs() -> tuple[Any, ...]:
        rows = slice(0, CHECK_ROWS)
        return (*kept, h.grad[rows].float().clone(), w.grad[rows].float().clone())

    def left() -> list[Any]:
        return [g for g in (h.grad, w.grad) if g is not None]

    return Variant(Prepared(step=run, prep=clear), left, outputs)


def release_caches() -> None:
    from crossentropy.torch import release_cached_buffers

    release_cached_buffers()


# --------------------------------------------------------------------------- memory worker


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    can_reset = reset_peak_rss()
    out: dict[str, Any] = {}
    for job in spec["jobs"]:
        cfg = Config(**job["config"])
        data = make_data(cfg)
        for name in job["variants"]:
            key = f"{cfg.name}|{name}"
            try:
                v = prepare(name, *data, memory=True)
                peak, _ = probe_peak(v.prepared, can_reset=can_reset, before_run=release_caches)
                grads = sum(g.numel() * g.element_size() for g in v.gradients())
                out[key] = {
                    "peak_over_inputs_bytes": peak,
                    "gradients_bytes": grads,
                    "peak_extra_bytes": max(0, peak - grads),
                    "reset": can_reset,
                }
                v.prepared.prep()
                del v
            except Exception as exc:
                out[key] = {"error": f"{type(exc).__name__}: {exc}"}
            gc.collect()
        del data
        gc.collect()
    return out


def measure_memory(jobs: list[tuple[Config, list[str]]], *, isolate: bool) -> dict[str, Any]:
    pairs = [(cfg, v) for cfg, variants in jobs for v in variants]
    groups = [[pair] for pair in pairs] if isolate else [pairs]
    specs = []
    for group in groups:
        by_config: dict[str, dict[str, Any]] = {}
        for cfg, v in group:
            job = by_config.setdefault(
                cfg.name, {"config": dataclasses.asdict(cfg), "variants": []}
            )
            job["variants"].append(v)
        specs.append(([f"{c.name}|{v}" for c, v in group], {"jobs": list(by_config.values())}))
    return run_workers(Path(__file__), specs, timeout=1800)


# --------------------------------------------------------------------------- timing

GUESS_X_LOGITS = {"floor": 2.0, "unfused": 6.0, "unfused_compiled": 4.0, "ours": 0.5}


def run_config(cfg: Config, probed: dict[str, Any]) -> dict[str, Any]:
    import torch

    print(f"\n== {cfg.name}: logits {cfg.logits_bytes / 2**20:.0f} MiB", flush=True)
    liger_why = liger_unavailable()
    rows: dict[str, dict[str, Any]] = {}
    for name in VARIANTS:
        m = probed.get(f"{cfg.name}|{name}", {})
        rows[name] = {
            "variant": name,
            "label": LABELS[name],
            "available": False,
            "reason": liger_why if name == "liger" else None,
            "seconds": None,
            "peak_over_inputs_bytes": m.get("peak_over_inputs_bytes"),
            "gradients_bytes": m.get("gradients_bytes"),
            "peak_extra_bytes": m.get("peak_extra_bytes"),
            "peak_error": None if name == "liger" else m.get("error"),
        }
    data = make_data(cfg)
    resident = cfg.logits_bytes * 2 + cfg.grads_bytes  # the floor's G and outputs
    variants: dict[str, Variant] = {}
    for name in VARIANTS:
        if name == "liger":
            continue
        if probed.get(f"{cfg.name}|{name}", {}).get("killed"):
            rows[name]["reason"] = "does not fit in memory (its memory probe was killed)"
            continue
        extra = rows[name]["peak_over_inputs_bytes"]
        if extra is None:
            extra = GUESS_X_LOGITS[name] * cfg.logits_bytes + cfg.grads_bytes
        fit, why = fits_in_memory(extra + resident)
        if not fit:
            rows[name]["reason"] = why
            continue
        variants[name] = prepare(name, *data)

    def capture(name: str, p: Prepared, result: Any) -> Any:
        return variants[name].outputs()

    print("   timing (round-robin) ...", flush=True)
    prepared = {n: v.prepared for n, v in variants.items()}
    measured = time_interleaved(prepared, cfg.warmup, cfg.reps, after_last=capture)
    reference = measured.get("unfused")
    ref_out = reference.grad if reference is not None and reference.error is None else None
    for name, r in measured.items():
        row = rows[name]
        if r.error is not None or not r.times:
            row["reason"] = r.error or "no timed run"
            continue
        row.update(
            available=True,
            seconds=statistics.median(r.times),
            seconds_min=min(r.times),
            seconds_all=r.times,
            other_processes_cpu=r.others,
        )
        if name != "floor" and ref_out and r.grad:
            for key, mine, theirs in zip(
                ("log_prob", "entropy", "grad_h", "grad_W"), r.grad, ref_out, strict=True
            ):
                scale = float(theirs.abs().max()) or 1.0
                row[f"rel_{key}_diff_vs_unfused"] = float((mine - theirs).abs().max()) / scale
        print(f"   {name:<17} {row['seconds']:10.4f} s", flush=True)
    variants.clear()
    del prepared, measured, reference, ref_out, data
    gc.collect()
    release_caches()
    add_ratios(cfg, rows)
    return {
        "name": cfg.name,
        "shape": [cfg.tokens, cfg.hidden, cfg.vocabulary],
        "dtype": cfg.dtype,
        "logits_bytes": cfg.logits_bytes,
        "gradients_bytes": cfg.grads_bytes,
        "warmup": cfg.warmup,
        "reps": cfg.reps,
        "torch_threads": torch.get_num_threads(),
        "rows": list(rows.values()),
        "targets": evaluate_targets(cfg, rows),
    }


def add_ratios(cfg: Config, rows: dict[str, dict[str, Any]]) -> None:
    floor = rows["floor"]["seconds"]
    unfused = rows["unfused"]["seconds"]
    unfused_peak = rows["unfused"]["peak_extra_bytes"]
    for row in rows.values():
        s, peak = row["seconds"], row["peak_extra_bytes"]
        row["time_over_floor"] = s / floor if s and floor else None
        row["speedup_vs_unfused"] = unfused / s if s and unfused else None
        row["peak_extra_x_logits"] = peak / cfg.logits_bytes if peak is not None else None
        row["peak_extra_x_unfused"] = (
            peak / unfused_peak if peak is not None and unfused_peak else None
        )


def evaluate_targets(cfg: Config, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    ours = rows["ours"]
    out = []
    time_bound = TIME_X_FLOOR[cfg.dtype]
    for target, key, bound in (
        (
            f"peak extra <= 1/{1 / PEAK_X_UNFUSED:g} of unfused's",
            "peak_extra_x_unfused",
            PEAK_X_UNFUSED,
        ),
        (f"time <= {time_bound:g} x floor", "time_over_floor", time_bound),
    ):
        value = ours.get(key) if ours["available"] else None
        met = value <= bound if value is not None else None
        out.append(
            {"variant": "ours", "target": target, "value": value, "bound": bound, "met": met}
        )
    return out


# --------------------------------------------------------------------------- report

COLUMNS = (
    Column("variant", 42, left=True),
    Column("median s", 9, "9.4f"),
    Column("/ floor", 8, "8.2f"),
    Column("x faster", 8, "8.2f"),
    Column("peak MiB", 9, "9.1f"),
    Column("x unfused", 9, "9.3f"),
    Column("x logits", 9, "9.3f"),
)


def render(config: dict[str, Any]) -> str:
    lines = [f"{config['name']}  logits {config['logits_bytes'] / 2**20:.0f} MiB"]
    body = []
    for r in config["rows"]:
        notes = [] if r["available"] else [r["reason"] or "unavailable"]
        if r.get("rel_log_prob_diff_vs_unfused") is not None:
            notes.append(
                "rel diff vs unfused: "
                + ", ".join(
                    f"{k} {r[f'rel_{k}_diff_vs_unfused']:.1e}"
                    for k in ("log_prob", "entropy", "grad_h", "grad_W")
                )
            )
        if (r.get("other_processes_cpu") or 0) > NOISY:
            notes.append(f"NOISY: other processes used {r['other_processes_cpu']:.0%} of the CPU")
        if r.get("peak_error"):
            notes.append(f"memory: {r['peak_error']}")
        peak = r["peak_extra_bytes"]
        cells = (
            r["label"],
            r["seconds"],
            r["time_over_floor"],
            r["speedup_vs_unfused"],
            None if peak is None else peak / 2**20,
            r["peak_extra_x_unfused"],
            r["peak_extra_x_logits"],
        )
        body.append((cells, "; ".join(notes)))
    lines += table(COLUMNS, body, pad_missing=True)
    lines.append("targets:")
    for t in config["targets"]:
        lines.append(
            f"  [{verdict(t['met'])}] {t['variant']:<5} {t['target']:<36} {fmt(t['value'], '.3f')}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, a smoke test")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file to write")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        emit_result(_worker(json.loads(args._worker)))
        return 0

    import torch

    configs = QUICK_CONFIGS if args.quick else FULL_CONFIGS
    load_before = os.getloadavg()
    started = time.time()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    here = [v for v in VARIANTS if v != "liger"]
    print("measuring peak memory in subprocesses ...", flush=True)
    probed = measure_memory([(cfg, here) for cfg in configs], isolate=not args.quick)
    results = [run_config(cfg, probed) for cfg in configs]
    print(f"\nPeak memory beyond the inputs and their gradients: {MEMORY_METHOD}.\n")
    for config in results:
        print(render(config))
        print()
    liger_why = liger_unavailable()
    report = {
        "benchmark": "per-token log-probabilities and entropies from hidden states, forward "
        "+ backward with random incoming gradients on both outputs",
        "command": command_line(),
        "quick": args.quick,
        "date_utc": utc(started),
        "wall_seconds": time.time() - started,
        "machine": machine_info(torch.get_num_threads(), load_before),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "temperature": TEMPERATURE,
        "timing": "median of time.perf_counter over round-robin repetitions after a warm-up "
        "round, one process, the same data",
        "floor": "torch.mm(h, W.T) twice, torch.mm(G, W), torch.mm(G.T, h) into "
        "preallocated outputs, G (N, V) preallocated",
        "liger": liger_why,
        "memory_method": MEMORY_METHOD,
        "targets": {"peak_extra_x_unfused": PEAK_X_UNFUSED, "time_x_floor": TIME_X_FLOOR},
        "configs": results,
    }
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
