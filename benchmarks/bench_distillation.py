#!/usr/bin/env python
"""Knowledge distillation (generalized JSD + hard-label cross entropy), forward + backward, on CPU.

Linear (hidden states): for each configuration ((N, D, V) = (4096, 1024, 32000) and (2048,
2048, 128256), float32 and bfloat16) it times, in ONE process on the same data (student
hidden states h_s (N, D) and weight W_s (V, D), leaves requiring grad; teacher h_t (N, D)
and W_t (V, D), no grad; targets y (N,)), the forward and the backward of the mean over
tokens of ``0.5 * JSD_beta=0.5(p_t, p_s) + 0.5 * CE(z_s, y)`` (temperature 1) for:

- ``floor``            the four matrix products alone: the student's logits, the teacher's
                       logits, dh = G @ W_s and dW = G.T @ h_s, G of the logits' shape
                       preallocated, every result into preallocated outputs (torch.mm out=)
- ``unfused``          both models' logits, log_softmax in float32, the JSD by kl_div and the
                       cross entropy, under autograd (eager)
- ``unfused_compiled`` the same function under torch.compile (compiled in the warm-up)
- ``ours``             crossentropy.torch.linear_distillation_loss(..., divergence="jsd",
                       beta=0.5, soft_weight=0.5, hard_weight=0.5) (impl="auto")
- ``liger``            Liger-Kernel's LigerFusedLinearJSDLoss(weight_hard_loss=0.5,
                       weight_soft_loss=0.5, beta=0.5) (its defaults otherwise: compiled,
                       chunk_size=1024); the same loss (its normalisation: both terms over
                       the count of counted tokens, our reduction="mean")

Logits: at (N, V) = (4096, 32000), float32 and bfloat16, crossentropy.torch.distillation_loss
on given logits (student's requiring grad) against the unfused torch computation, eager and
under torch.compile (no peak memory measured for these).

The variants run round-robin (one warm-up round, then every timed round runs each variant
once), so that a drift of the machine affects them alike; times are medians. Peak memory
beyond the inputs and their gradients is measured in a fresh subprocess (see
benchmarks/_harness.py): the peak RSS of one run over the inputs, minus the bytes of the
gradients the run leaves (h_s.grad and W_s.grad; the floor: its dh and dW).

Usage::

    .venv/bin/python benchmarks/bench_distillation.py          # full run (long)
    .venv/bin/python benchmarks/bench_distillation.py --quick  # smoke test, small shapes
    .venv/bin/python benchmarks/bench_distillation.py --only "bfloat16 (4096"  # one shape

The table is printed and saved as JSON (default benchmarks/results/distillation.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib.util
import json
import math
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
DEFAULT_OUT = HERE / "results" / "distillation.json"

VARIANTS = ("floor", "unfused", "unfused_compiled", "ours", "liger")
LABELS = {
    "floor": "floor: h_s@W_s.T, h_t@W_t.T, G@W_s, G.T@h_s",
    "unfused": "both logits, log_softmax, JSD + CE (eager)",
    "unfused_compiled": "the same under torch.compile",
    "ours": "crossentropy linear_distillation_loss",
    "liger": "Liger-Kernel LigerFusedLinearJSDLoss",
}
LOGIT_VARIANTS = ("unfused", "unfused_compiled", "ours")
LOGIT_LABELS = {
    "unfused": "log_softmax, JSD + CE on the logits (eager)",
    "unfused_compiled": "the same under torch.compile",
    "ours": "crossentropy distillation_loss",
}
BETA = 0.5
TEMPERATURE = 1.0
SOFT_WEIGHT = HARD_WEIGHT = 0.5

# The targets, for ``ours``.
PEAK_X_UNFUSED = 1 / 8
TIME_X_FLOOR = 1.15
TIME_X_LIGER = 0.7

CHECK_ROWS = 256  # the rows of the input and weight gradients compared with the unfused

MEMORY_METHOD = (
    "peak RSS over the inputs minus the gradients the run leaves, in a fresh subprocess "
    "(--quick: one per configuration, else one per variant): h_s, W_s, h_t, W_t, y "
    "allocated (the floor: and its G), one warm-up run (compiling, for the compiled "
    "variants), what it left freed (and the fused paths' cached buffers released), VmRSS "
    "read, peak reset via /proc/self/clear_refs <- '5', one measured run, VmHWM read; then "
    "the bytes of h_s.grad and W_s.grad (the floor: its dh and dW) subtracted; "
    "MALLOC_MMAP_THRESHOLD_=65536 so freed blocks return to the system"
)


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    tokens: int  # N
    hidden: int  # D (student's and teacher's)
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
FULL_LOGIT_CONFIGS = _configs(((4096, 0, 32000),))
QUICK_LOGIT_CONFIGS = _configs(((256, 0, 1000),))


# --------------------------------------------------------------------------- the variants


def liger_unavailable() -> str | None:
    """Why Liger-Kernel's LigerFusedLinearJSDLoss cannot run here, or None."""
    if importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed here"
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss  # noqa: F401
    except Exception as exc:  # an import error of its own dependencies
        return f"liger_kernel.chunked_loss does not import: {type(exc).__name__}: {exc}"
    return None


def make_data(cfg: Config) -> tuple[Any, ...]:
    """h_s (N, D), W_s (V, D) (leaves requiring grad), h_t (N, D), W_t (V, D) (the weights
    scaled so the logits are of order 1) and y (N,): the same for a configuration."""
    import torch

    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, cfg.dtype)
    scale = cfg.hidden**-0.5
    hs = torch.randn(cfg.tokens, cfg.hidden, generator=g).to(dtype).requires_grad_(True)
    ws = (torch.randn(cfg.vocabulary, cfg.hidden, generator=g) * scale).to(dtype)
    ws.requires_grad_(True)
    ht = torch.randn(cfg.tokens, cfg.hidden, generator=g).to(dtype)
    wt = (torch.randn(cfg.vocabulary, cfg.hidden, generator=g) * 2 * scale).to(dtype)
    y = torch.randint(0, cfg.vocabulary, (cfg.tokens,), generator=g)
    return hs, ws, ht, wt, y


def unfused_on_logits(zs: Any, zt: Any, y: Any) -> Any:
    """The unfused loss on both models' logits: log_softmax in float32, the generalized JSD
    by kl_div (KL(p || M) = kl_div(log M, log p)) and the cross entropy at temperature 1,
    the mean over the tokens."""
    import torch
    import torch.nn.functional as F

    log_ps = torch.log_softmax(zs.float() / TEMPERATURE, dim=-1)
    log_pt = torch.log_softmax(zt.float() / TEMPERATURE, dim=-1)
    log_m = torch.logsumexp(
        torch.stack([log_ps + math.log(1 - BETA), log_pt + math.log(BETA)]), dim=0
    )
    teacher_kl = F.kl_div(log_m, log_pt, reduction="none", log_target=True).sum(-1)
    student_kl = F.kl_div(log_m, log_ps, reduction="none", log_target=True).sum(-1)
    jsd = BETA * teacher_kl + (1 - BETA) * student_kl
    ce = F.cross_entropy(zs.float(), y, reduction="none")
    return (SOFT_WEIGHT * jsd + HARD_WEIGHT * ce).mean()


def unfused_loss(hs: Any, ws: Any, ht: Any, wt: Any, y: Any) -> Any:
    """Both models' logits materialised (the teacher's without a graph), then the loss."""
    import torch

    zs = hs @ ws.T
    with torch.no_grad():
        zt = ht @ wt.T
    return unfused_on_logits(zs, zt, y)


def _ours(hs: Any, ws: Any, ht: Any, wt: Any, y: Any) -> Any:
    from crossentropy.torch import linear_distillation_loss

    return linear_distillation_loss(
        hs,
        ws,
        ht,
        wt,
        y,
        divergence="jsd",
        beta=BETA,
        temperature=TEMPERATURE,
        soft_weight=SOFT_WEIGHT,
        hard_weight=HARD_WEIGHT,
    )


def _liger() -> Callable[..., Any]:
    from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

    module = LigerFusedLinearJSDLoss(
        weight_hard_loss=HARD_WEIGHT,
        weight_soft_loss=SOFT_WEIGHT,
        beta=BETA,
        temperature=TEMPERATURE,
    )
    return lambda hs, ws, ht, wt, y: module(hs, ws, ht, wt, y)


@dataclasses.dataclass
class Variant:
    prepared: Prepared
    gradients: Callable[[], list[Any]]  # the gradient tensors a run left (memory)
    outputs: Callable[[], tuple[Any, ...]]  # (loss, dh rows, dW rows) or ()


def prepare(
    name: str, hs: Any, ws: Any, ht: Any, wt: Any, y: Any, *, memory: bool = False
) -> Variant:
    """One variant on the data; ``memory=True``: the floor allocates its results."""
    import torch

    if name == "floor":
        hd, wd = hs.detach(), ws.detach()
        g = torch.randn(hs.shape[0], ws.shape[0], generator=torch.Generator().manual_seed(2))
        grad_logits = g.to(hs.dtype)
        if memory:
            held: list[Any] = []

            def alloc() -> None:
                held.clear()
                torch.mm(hd, wd.t())  # the student's logits, freed
                torch.mm(ht, wt.t())  # the teacher's
                held.extend([torch.mm(grad_logits, wd), torch.mm(grad_logits.t(), hd)])

            return Variant(Prepared(step=alloc, prep=held.clear), lambda: list(held), tuple)
        student = torch.empty(hs.shape[0], ws.shape[0], dtype=hs.dtype)
        teacher = torch.empty_like(student)
        grad_h, grad_w = torch.empty_like(hd), torch.empty_like(wd)

        def products() -> None:
            torch.mm(hd, wd.t(), out=student)
            torch.mm(ht, wt.t(), out=teacher)
            torch.mm(grad_logits, wd, out=grad_h)
            torch.mm(grad_logits.t(), hd, out=grad_w)

        return Variant(Prepared(step=products), lambda: [grad_h, grad_w], tuple)

    if name == "unfused":
        function: Callable[..., Any] = unfused_loss
    elif name == "unfused_compiled":
        function = torch.compile(unfused_loss)
    elif name == "ours":
        function = _ours
    else:
        why = liger_unavailable()
        if why is not None:
            raise ImportError(why)
        function = _liger()
    kept: list[Any] = []

    def run() -> None:
        loss = function(hs, ws, ht, wt, y)
        loss.backward()
        kept[:] = [loss.detach()]

    def clear() -> None:
        hs.grad = ws.grad = None
        kept.clear()

    def outputs() -> tuple[Any, ...]:
        rows = slice(0, CHECK_ROWS)
        return (*kept, hs.grad[rows].float().clone(), ws.grad[rows].float().clone())

    def left() -> list[Any]:
        return [g for g in (hs.grad, ws.grad) if g is not None]

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

GUESS_X_LOGITS = {
    "floor": 3.0,
    "unfused": 10.0,
    "unfused_compiled": 6.0,
    "ours": 0.5,
    "liger": 2.0,
}


def _diffs(row: dict[str, Any], mine: tuple[Any, ...], theirs: tuple[Any, ...]) -> None:
    for key, a, b in zip(("loss", "grad_h", "grad_W"), mine, theirs, strict=True):
        scale = float(b.float().abs().max()) or 1.0
        row[f"rel_{key}_diff_vs_unfused"] = float((a.float() - b.float()).abs().max()) / scale


def _timed(row: dict[str, Any], times: list[float], others: float | None) -> None:
    row.update(
        available=True,
        seconds=statistics.median(times),
        seconds_min=min(times),
        seconds_all=times,
        other_processes_cpu=others,
    )


def run_config(cfg: Config, probed: dict[str, Any]) -> dict[str, Any]:
    import torch

    print(f"\n== {cfg.name}: logits {cfg.logits_bytes / 2**20:.0f} MiB (each model)", flush=True)
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
            "peak_error": m.get("error"),
        }
    data = make_data(cfg)
    resident = cfg.logits_bytes * 3 + cfg.grads_bytes  # the floor's G, logits and outputs
    variants: dict[str, Variant] = {}
    for name in VARIANTS:
        if name == "liger" and liger_why is not None:
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
        _timed(row, r.times, r.others)
        if name != "floor" and ref_out and r.grad:
            _diffs(row, r.grad, ref_out)
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
        "targets": evaluate_targets(rows),
    }


def add_ratios(cfg: Config, rows: dict[str, dict[str, Any]]) -> None:
    floor = rows["floor"]["seconds"]
    unfused = rows["unfused"]["seconds"]
    liger = rows["liger"]["seconds"]
    unfused_peak = rows["unfused"]["peak_extra_bytes"]
    for row in rows.values():
        s, peak = row["seconds"], row["peak_extra_bytes"]
        row["time_over_floor"] = s / floor if s and floor else None
        row["time_over_liger"] = s / liger if s and liger else None
        row["speedup_vs_unfused"] = unfused / s if s and unfused else None
        row["peak_extra_x_logits"] = peak / cfg.logits_bytes if peak is not None else None
        row["peak_extra_x_unfused"] = (
            peak / unfused_peak if peak is not None and unfused_peak else None
        )


def evaluate_targets(rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    ours = rows["ours"]
    liger_peak = rows["liger"]["peak_extra_bytes"]
    peak = ours["peak_extra_bytes"]
    out = []
    for target, value, bound in (
        (
            f"peak extra <= 1/{1 / PEAK_X_UNFUSED:g} of unfused's",
            ours.get("peak_extra_x_unfused"),
            PEAK_X_UNFUSED,
        ),
        (f"time <= {TIME_X_FLOOR:g} x floor", ours.get("time_over_floor"), TIME_X_FLOOR),
        (f"time <= {TIME_X_LIGER:g} x Liger's", ours.get("time_over_liger"), TIME_X_LIGER),
        (
            "peak extra <= Liger's",
            peak / liger_peak if peak is not None and liger_peak else None,
            1.0,
        ),
    ):
        if not ours["available"]:
            value = None
        met = value <= bound if value is not None else None
        out.append(
            {"variant": "ours", "target": target, "value": value, "bound": bound, "met": met}
        )
    return out


# --------------------------------------------------------------------------- the logits version


def run_logit_config(cfg: Config) -> dict[str, Any]:
    """distillation_loss on given logits against the unfused computation, eager and
    compiled: forward + backward, the student's logits requiring grad."""
    import torch

    from crossentropy.torch import distillation_loss

    print(f"\n== logits {cfg.name}: {cfg.logits_bytes / 2**20:.0f} MiB each", flush=True)
    g = torch.Generator().manual_seed(1)
    dtype = getattr(torch, cfg.dtype)
    zs = torch.randn(cfg.tokens, cfg.vocabulary, generator=g).to(dtype).requires_grad_(True)
    zt = (2 * torch.randn(cfg.tokens, cfg.vocabulary, generator=g)).to(dtype)
    y = torch.randint(0, cfg.vocabulary, (cfg.tokens,), generator=g)

    def ours(zs: Any, zt: Any, y: Any) -> Any:
        return distillation_loss(
            zs,
            zt,
            y,
            divergence="jsd",
            beta=BETA,
            temperature=TEMPERATURE,
            soft_weight=SOFT_WEIGHT,
            hard_weight=HARD_WEIGHT,
        )

    functions: dict[str, Callable[..., Any]] = {
        "unfused": unfused_on_logits,
        "unfused_compiled": torch.compile(unfused_on_logits),
        "ours": ours,
    }
    kept: dict[str, Any] = {}
    prepared = {}
    for name, function in functions.items():

        def run(function: Callable[..., Any] = function, name: str = name) -> None:
            loss = function(zs, zt, y)
            loss.backward()
            kept[name] = loss.detach()

        def clear() -> None:
            zs.grad = None

        prepared[name] = Prepared(step=run, prep=clear)

    def capture(name: str, p: Prepared, result: Any) -> Any:
        return (kept[name], zs.grad[:CHECK_ROWS].float().clone())

    print("   timing (round-robin) ...", flush=True)
    measured = time_interleaved(prepared, cfg.warmup, cfg.reps, after_last=capture)
    rows: dict[str, dict[str, Any]] = {}
    reference = measured["unfused"].grad
    for name in LOGIT_VARIANTS:
        r = measured[name]
        row: dict[str, Any] = {
            "variant": name,
            "label": LOGIT_LABELS[name],
            "available": False,
            "reason": r.error,
            "seconds": None,
        }
        if r.error is None and r.times:
            _timed(row, r.times, r.others)
            if reference and r.grad:
                for key, a, b in zip(("loss", "grad_logits"), r.grad, reference, strict=True):
                    scale = float(b.float().abs().max()) or 1.0
                    row[f"rel_{key}_diff_vs_unfused"] = (
                        float((a.float() - b.float()).abs().max()) / scale
                    )
            print(f"   {name:<17} {row['seconds']:10.4f} s", flush=True)
        rows[name] = row
    unfused = rows["unfused"]["seconds"]
    for row in rows.values():
        s = row["seconds"]
        row["speedup_vs_unfused"] = unfused / s if s and unfused else None
    release_caches()
    return {
        "name": cfg.name,
        "shape": [cfg.tokens, cfg.vocabulary],
        "dtype": cfg.dtype,
        "logits_bytes": cfg.logits_bytes,
        "warmup": cfg.warmup,
        "reps": cfg.reps,
        "rows": list(rows.values()),
    }


# --------------------------------------------------------------------------- report

COLUMNS = (
    Column("variant", 44, left=True),
    Column("median s", 9, "9.4f"),
    Column("/ floor", 8, "8.2f"),
    Column("/ liger", 8, "8.2f"),
    Column("x faster", 8, "8.2f"),
    Column("peak MiB", 9, "9.1f"),
    Column("x unfused", 9, "9.3f"),
)

LOGIT_COLUMNS = (
    Column("variant", 44, left=True),
    Column("median s", 9, "9.4f"),
    Column("x faster", 8, "8.2f"),
)


def _notes(r: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    notes = [] if r["available"] else [r["reason"] or "unavailable"]
    if r.get(f"rel_{keys[0]}_diff_vs_unfused") is not None:
        notes.append(
            "rel diff vs unfused: "
            + ", ".join(f"{k} {r[f'rel_{k}_diff_vs_unfused']:.1e}" for k in keys)
        )
    if (r.get("other_processes_cpu") or 0) > NOISY:
        notes.append(f"NOISY: other processes used {r['other_processes_cpu']:.0%} of the CPU")
    if r.get("peak_error"):
        notes.append(f"memory: {r['peak_error']}")
    return notes


def render(config: dict[str, Any]) -> str:
    lines = [f"{config['name']}  logits {config['logits_bytes'] / 2**20:.0f} MiB each"]
    body = []
    for r in config["rows"]:
        peak = r["peak_extra_bytes"]
        cells = (
            r["label"],
            r["seconds"],
            r["time_over_floor"],
            r["time_over_liger"],
            r["speedup_vs_unfused"],
            None if peak is None else peak / 2**20,
            r["peak_extra_x_unfused"],
        )
        body.append((cells, "; ".join(_notes(r, ("loss", "grad_h", "grad_W")))))
    lines += table(COLUMNS, body, pad_missing=True)
    lines.append("targets:")
    for t in config["targets"]:
        lines.append(
            f"  [{verdict(t['met'])}] {t['variant']:<5} {t['target']:<36} {fmt(t['value'], '.3f')}"
        )
    return "\n".join(lines)


def render_logits(config: dict[str, Any]) -> str:
    lines = [f"logits {config['name']}  {config['logits_bytes'] / 2**20:.0f} MiB each"]
    body = [
        (
            (r["label"], r["seconds"], r["speedup_vs_unfused"]),
            "; ".join(_notes(r, ("loss", "grad_logits"))),
        )
        for r in config["rows"]
    ]
    lines += table(LOGIT_COLUMNS, body, pad_missing=True)
    return "\n".join(lines)


def _chosen(configs: tuple[Config, ...], only: list[str]) -> tuple[Config, ...]:
    """The configurations whose name contains one of ``only`` (all of them without it)."""
    return tuple(c for c in configs if not only or any(part in c.name for part in only))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, a smoke test")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file to write")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="SUBSTRING",
        help="keep only the configurations whose name contains SUBSTRING (repeatable: any "
        'of them), e.g. --only "bfloat16 (4096"; the logits-only ones are named alike',
    )
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        emit_result(_worker(json.loads(args._worker)))
        return 0

    import torch

    configs = _chosen(QUICK_CONFIGS if args.quick else FULL_CONFIGS, args.only)
    logit_configs = _chosen(QUICK_LOGIT_CONFIGS if args.quick else FULL_LOGIT_CONFIGS, args.only)
    if not configs and not logit_configs:
        parser.error(f"--only {args.only}: no configuration's name contains any of them")
    load_before = os.getloadavg()
    started = time.time()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    liger_why = liger_unavailable()
    here = [v for v in VARIANTS if v != "liger" or liger_why is None]
    print("measuring peak memory in subprocesses ...", flush=True)
    probed = measure_memory([(cfg, here) for cfg in configs], isolate=not args.quick)
    results = [run_config(cfg, probed) for cfg in configs]
    logit_results = [run_logit_config(cfg) for cfg in logit_configs]
    print(f"\nPeak memory beyond the inputs and their gradients: {MEMORY_METHOD}.\n")
    for config in results:
        print(render(config))
        print()
    for config in logit_results:
        print(render_logits(config))
        print()
    report = {
        "benchmark": "knowledge distillation from hidden states (generalized JSD, beta 0.5, "
        "+ hard-label cross entropy, weights 0.5 and 0.5, mean over tokens), forward + "
        "backward; and the same loss on given logits",
        "command": command_line(),
        "quick": args.quick,
        "only": args.only,
        "date_utc": utc(started),
        "wall_seconds": time.time() - started,
        "machine": machine_info(torch.get_num_threads(), load_before),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
        "loss": {
            "divergence": "jsd",
            "beta": BETA,
            "temperature": TEMPERATURE,
            "soft_weight": SOFT_WEIGHT,
            "hard_weight": HARD_WEIGHT,
        },
        "timing": "median of time.perf_counter over round-robin repetitions after a warm-up "
        "round, one process, the same data",
        "floor": "torch.mm(h_s, W_s.T), torch.mm(h_t, W_t.T), torch.mm(G, W_s), "
        "torch.mm(G.T, h_s) into preallocated outputs, G (N, V) preallocated",
        "liger": liger_why
        or "LigerFusedLinearJSDLoss(weight_hard_loss=0.5, weight_soft_loss=0.5, beta=0.5), "
        "its defaults otherwise (compiled=True, chunk_size=1024)",
        "memory_method": MEMORY_METHOD,
        "targets": {
            "peak_extra_x_unfused": PEAK_X_UNFUSED,
            "time_x_floor": TIME_X_FLOOR,
            "time_x_liger": TIME_X_LIGER,
            "peak_x_liger": 1.0,
        },
        "configs": results,
        "logit_configs": logit_results,
    }
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
