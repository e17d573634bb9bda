#!/usr/bin/env python
"""Cross entropy forward + backward on CPU: crossentropy's fused path against PyTorch.

For each configuration (float32 logits (4096, 32000), float32
(8192, 128256), bfloat16 (4096, 32000)) it times, in ONE process on the same data, the
forward and backward of the mean loss over integer targets for:

- ``eager``          torch.nn.functional.cross_entropy
- ``compiled``       torch.compile(torch.nn.functional.cross_entropy) (compile time reported
                     apart, with a cold inductor cache, and excluded from the timing)
- ``fused``          crossentropy.torch.cross_entropy(..., impl="fused")
- ``fused_inplace``  the same with inplace_backward=True (a fresh copy of the logits before
                     each repetition, the copy excluded from the time)
- ``fallback``       what impl="auto" runs where the fused kernel cannot be had (no C
                     compiler, no prebuilt kernel): impl="native", torch's own fused
                     operations with the library's numerics; target: at least as fast as
                     eager
- ``floor``          buf.copy_(logits) into a preallocated buffer: one read of the logits and
                     one write of a logits-sized result, the least a fused forward+backward
                     must move through memory

and, on the first configuration's data, the NumPy core
(crossentropy.gradients.sparse_softmax_cross_entropy) against a scipy.special.log_softmax
loss + gradient. Times are medians of several repetitions after warm-up (time.perf_counter,
torch's default thread count).

Peak memory beyond the inputs is measured, not estimated: each variant runs in a fresh
subprocess (with --quick: one subprocess per configuration) that allocates the inputs, runs
the variant once as a warm-up, frees its outputs, reads VmRSS, resets the peak RSS
(writing "5" to /proc/self/clear_refs), runs the variant once more and reads VmHWM. The
difference is the peak of resident memory the variant added on top of its inputs, its
output gradient included. glibc's malloc is told to serve every block over 64 KiB with
mmap (MALLOC_MMAP_THRESHOLD_), so that memory freed by the warm-up goes back to the
system and cannot hide the measured run's allocations.

Usage::

    .venv/bin/python benchmarks/bench_cross_entropy.py            # full run, a few minutes
    .venv/bin/python benchmarks/bench_cross_entropy.py --quick    # smoke test, small shapes

The table is printed and saved as JSON (default benchmarks/results/cross_entropy.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
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
    loss_value,
    probe_peak,
    reset_peak_rss,
    run_workers,
    table,
    time_with_retries,
    utc,
    verdict,
    write_json,
)
from _harness import machine as machine_info

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "cross_entropy.json"

TORCH_VARIANTS = (
    "floor",
    "eager",
    "compiled",
    "fused",
    "fused_inplace",
    "fused_fresh",
    "fallback",
)
NUMPY_VARIANTS = ("numpy_core", "scipy_log_softmax")
FUSED_VARIANTS = ("fused", "fused_inplace", "fused_fresh")
TARGET_VARIANTS = ("fused", "fused_inplace")  # the rows the targets are checked on

LABELS = {
    "floor": "memory floor: buf.copy_(logits)",
    "eager": "torch F.cross_entropy (eager)",
    "compiled": "torch.compile(F.cross_entropy)",
    "fused": 'crossentropy impl="fused"',
    "fused_inplace": 'crossentropy impl="fused", inplace_backward',
    "fused_fresh": 'crossentropy impl="fused", no buffer reuse',
    "fallback": 'auto, no kernel (fallback: impl="native")',
    "numpy_core": "crossentropy.gradients (NumPy core)",
    "scipy_log_softmax": "scipy.special.log_softmax loss+grad",
}

# The targets, for the fused variants.
SPEEDUP_VS_EAGER = 3.0
MAX_OVER_FLOOR = 1.5
# "at most one logits-sized buffer (the gradient)" + small: small is 1% of the logits.
FUSED_PEAK_X_LOGITS = 1.01
INPLACE_PEAK_X_LOGITS = 0.01
# The target of the fallback (impl="auto" without the kernel): never slower than torch.
FALLBACK_VS_EAGER = 1.0

MEMORY_METHOD = (
    "peak RSS increase over the inputs, measured in a fresh subprocess per variant "
    "(--quick: per configuration): inputs allocated, one warm-up run, outputs freed "
    "(and the gradient buffer the fused path keeps between steps released), "
    "VmRSS read, peak reset via /proc/self/clear_refs <- '5', one measured run, VmHWM read; "
    "MALLOC_MMAP_THRESHOLD_=65536 so freed blocks return to the system; the gradient the "
    "run leaves in .grad is counted"
)


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    rows: int
    cols: int
    dtype: str  # "float32" | "bfloat16"
    stated_targets: bool  # the configuration the targets are stated for
    numpy: bool  # also time the NumPy core against scipy on this data
    warmup: int
    reps: int
    numpy_reps: int = 3

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else 4

    @property
    def logits_bytes(self) -> int:
        return self.rows * self.cols * self.itemsize


FULL_CONFIGS = (
    Config("float32 (4096, 32000)", 4096, 32000, "float32", True, True, warmup=2, reps=9),
    Config("float32 (8192, 128256)", 8192, 128256, "float32", False, False, warmup=1, reps=3),
    Config("bfloat16 (4096, 32000)", 4096, 32000, "bfloat16", False, False, warmup=2, reps=9),
)
QUICK_CONFIGS = (
    Config("float32 (256, 2000)", 256, 2000, "float32", True, True, warmup=1, reps=5),
    Config("float32 (512, 4000)", 512, 4000, "float32", False, False, warmup=1, reps=3),
    Config("bfloat16 (256, 2000)", 256, 2000, "bfloat16", False, False, warmup=1, reps=5),
)


# --------------------------------------------------------------------------- the variants


def load_fused() -> tuple[Callable[..., Any] | None, str]:
    """The fused entry point as ``fn(logits, target, inplace) -> loss``, or None and why."""
    try:
        from crossentropy.torch._fused import fused_cross_entropy
    except ImportError as exc:
        return None, f"crossentropy.torch._fused does not import ({exc})"
    try:
        from crossentropy.torch._fused import fused_available
    except ImportError:
        pass
    else:
        try:
            ok = fused_available()
        except Exception as exc:
            return None, f"fused_available() raised {type(exc).__name__}: {exc}"
        if not ok:
            return None, "fused_available() is False (the C kernel cannot be built here)"
    try:
        from crossentropy.torch import cross_entropy
    except ImportError:

        def direct(x: Any, t: Any, inplace: bool) -> Any:
            return fused_cross_entropy(x, t, inplace_backward=inplace)

        return direct, "crossentropy.torch._fused.fused_cross_entropy"

    def public(x: Any, t: Any, inplace: bool) -> Any:
        return cross_entropy(x, t, impl="fused", inplace_backward=inplace)

    return public, 'crossentropy.torch.cross_entropy(impl="fused")'


def _release_fused_cache() -> None:
    """Free the gradient buffer the fused path keeps between steps, if it keeps one.

    The memory probe calls this before its measured run: a buffer kept from the warm-up
    would be counted in the baseline and hide the gradient the measured run produces.
    """
    try:
        from crossentropy.torch._fused import release_cached_buffers
    except ImportError:
        return
    release_cached_buffers()


def make_data(cfg: Config) -> tuple[Any, Any]:
    """The logits (a leaf requiring grad) and targets, the same for a given config."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.rows, cfg.cols, generator=g)
    if cfg.dtype == "bfloat16":
        x = x.to(torch.bfloat16)
    t = torch.randint(0, cfg.cols, (cfg.rows,), generator=g)
    return x.requires_grad_(True), t


def prepare(
    name: str,
    x: Any,
    t: Any,
    fused: Callable[..., Any] | None,
    entry: str,
    *,
    memory: bool = False,
) -> Prepared:
    """Set up one variant on logits ``x`` (a leaf requiring grad) and targets ``t``.

    ``memory=True`` is the memory probe's form: the floor allocates its output, and the
    in-place variant works on ``x`` itself (the input), not on a copy.
    """
    import torch
    import torch.nn.functional as F

    def clear() -> None:
        x.grad = None

    def x_grad() -> Any:
        return x.grad

    if name == "floor":
        data = x.detach()
        if memory:
            return Prepared(step=data.clone)
        buf = torch.empty_like(data)

        def copy() -> Any:
            return buf.copy_(data)

        return Prepared(step=copy)

    if name == "eager":

        def eager() -> Any:
            loss = F.cross_entropy(x, t)
            loss.backward()
            return loss.detach()

        return Prepared(step=eager, prep=clear, grad=x_grad)

    if name == "compiled":
        torch._dynamo.reset()
        compiled = torch.compile(F.cross_entropy, dynamic=False)

        def run_compiled() -> Any:
            loss = compiled(x, t)
            loss.backward()
            return loss.detach()

        start = time.perf_counter()
        run_compiled()  # compiles the forward, and the backward on its first call
        seconds = time.perf_counter() - start
        clear()
        return Prepared(step=run_compiled, prep=clear, grad=x_grad, compile_seconds=seconds)

    if name == "fallback":
        from crossentropy.torch import cross_entropy

        def run_fallback() -> Any:
            loss = cross_entropy(x, t, impl="native")
            loss.backward()
            return loss.detach()

        return Prepared(
            step=run_fallback,
            prep=clear,
            grad=x_grad,
            entry='crossentropy.torch.cross_entropy(impl="native")',
        )

    if name in FUSED_VARIANTS:
        if fused is None:
            raise ImportError(entry)
        if name in ("fused", "fused_fresh"):

            def run_fused() -> Any:
                loss = fused(x, t, False)
                loss.backward()
                return loss.detach()

            def clear_all() -> None:
                x.grad = None
                _release_fused_cache()  # the next gradient is a fresh allocation

            prep = clear if name == "fused" else clear_all
            return Prepared(step=run_fused, prep=prep, grad=x_grad, entry=entry)

        # inplace_backward refuses a leaf that requires grad (it would overwrite a
        # parameter): the loss takes a non-leaf working copy, the model output it stands
        # for, made untimed before each run; its gradient is the copy itself
        state: dict[str, Any] = {}
        g = torch.Generator().manual_seed(1)
        source = x.detach()

        def refill() -> None:
            state.clear()
            if memory:
                with torch.no_grad():
                    x.normal_(generator=g)
            state["work"] = source * torch.ones((), requires_grad=True)

        def run_inplace() -> Any:
            work = state["work"]
            loss = fused(work, t, True)
            (state["grad"],) = torch.autograd.grad(loss, work)
            return loss.detach()

        def work_grad() -> Any:
            return state.get("grad")

        return Prepared(step=run_inplace, prep=refill, grad=work_grad, entry=entry)

    if name in NUMPY_VARIANTS:
        import numpy as np

        xn = x.detach().float().numpy()
        tn = t.numpy()
        if name == "numpy_core":
            from crossentropy import gradients

            def core() -> Any:
                return gradients.sparse_softmax_cross_entropy(xn, tn)

            return Prepared(step=core, entry="crossentropy.gradients.sparse_softmax_cross_entropy")

        from scipy.special import log_softmax

        rows = np.arange(xn.shape[0])

        def scipy_loss_grad() -> Any:
            logp = log_softmax(xn, axis=1)
            loss = -logp[rows, tn].mean()
            grad = np.exp(logp)
            grad[rows, tn] -= 1.0
            grad /= xn.shape[0]
            return loss, grad

        return Prepared(step=scipy_loss_grad, entry="scipy.special.log_softmax")

    raise ValueError(f"unknown variant {name!r}")


# --------------------------------------------------------------------------- memory worker


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure the peak memory of the given variants on one configuration (subprocess)."""
    cfg = Config(**spec["config"])
    fused, entry = load_fused()
    x, t = make_data(cfg)
    can_reset = reset_peak_rss()
    out: dict[str, Any] = {}
    for name in spec["variants"]:
        try:
            if not can_reset and out:
                raise OSError("peak RSS cannot be reset here; one variant per process")
            p = prepare(name, x, t, fused, entry, memory=True)
            peak, result = probe_peak(p, can_reset=can_reset, before_run=_release_fused_cache)
            del result, p
            x.grad = None
            gc.collect()
            out[name] = {"peak_extra_bytes": peak, "reset": can_reset}
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def measure_memory(
    cfg: Config, variants: list[str], *, isolate: bool, inductor_dir: str
) -> dict[str, Any]:
    """Run memory workers; one subprocess per variant when ``isolate``."""
    groups = [[v] for v in variants] if isolate else [list(variants)]
    specs = [(g, {"config": dataclasses.asdict(cfg), "variants": g}) for g in groups]
    return run_workers(Path(__file__), specs, env={"TORCHINDUCTOR_CACHE_DIR": inductor_dir})


# Peak-memory guesses (in logits) for the fit check when a probe gave no number.
GUESS_X_LOGITS = {
    "floor": 1.0,
    "eager": 3.0,
    "compiled": 3.0,
    "fused": 1.0,
    "fused_inplace": 0.1,
    "fused_fresh": 1.0,
    "fallback": 2.0,
}


def fits(cfg: Config, name: str, mem: dict[str, Any]) -> tuple[bool, str]:
    """Whether the variant's measured (or guessed) peak fits in the memory available now."""
    if mem.get("killed"):
        return False, "does not fit in memory (its memory probe was killed)"
    extra = mem.get("peak_extra_bytes")
    if extra is None:
        extra = GUESS_X_LOGITS.get(name, 3.0) * cfg.logits_bytes
    if name == "fused_inplace":
        extra += cfg.logits_bytes  # the working copy the timed runs overwrite
    if name in NUMPY_VARIANTS:
        extra += cfg.rows * cfg.cols * 4  # the float32 NumPy view/copy
    return fits_in_memory(extra)


def run_config(
    cfg: Config,
    *,
    compile_enabled: bool,
    fused: Callable[..., Any] | None,
    entry: str,
    isolate: bool,
    inductor_root: str,
    retries: int,
) -> dict[str, Any]:
    import torch

    variants = list(TORCH_VARIANTS) + (list(NUMPY_VARIANTS) if cfg.numpy else [])
    skipped: dict[str, str] = {}
    if not compile_enabled:
        skipped["compiled"] = "skipped: --quick without --compile"
    if fused is None:
        for v in FUSED_VARIANTS:
            skipped[v] = f"unavailable: {entry}"

    print(f"\n== {cfg.name}: logits {cfg.logits_bytes / 2**20:.0f} MiB", flush=True)
    print("   measuring peak memory in subprocesses ...", flush=True)
    mem_dir = tempfile.mkdtemp(dir=inductor_root)
    probed = [v for v in variants if v not in skipped and v != "fused_fresh"]
    mem = measure_memory(cfg, probed, isolate=isolate, inductor_dir=mem_dir)
    if "fused" in mem:  # the probe releases the kept buffer: the same measurement
        mem["fused_fresh"] = mem["fused"]

    print("   timing ...", flush=True)
    # a fresh inductor cache for each configuration: the compile time reported is a cold one
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(dir=inductor_root)
    x, t = make_data(cfg)
    rows: dict[str, dict[str, Any]] = {}
    ref_grad = None
    ref_loss = None
    for name in variants:
        row: dict[str, Any] = {
            "variant": name,
            "label": LABELS[name],
            "available": False,
            "reason": skipped.get(name),
            "seconds": None,
        }
        m = mem.get(name, {})
        row["peak_extra_bytes"] = m.get("peak_extra_bytes")
        row["peak_extra_x_logits"] = (
            m["peak_extra_bytes"] / cfg.logits_bytes if "peak_extra_bytes" in m else None
        )
        row["peak_error"] = m.get("error")
        rows[name] = row
        if name in skipped:
            continue
        ok, why = fits(cfg, name, m)
        if not ok:
            row["reason"] = why
            continue
        try:
            p = prepare(name, x, t, fused, entry)
            reps = cfg.numpy_reps if name in NUMPY_VARIANTS else cfg.reps
            warmup = 1 if name in NUMPY_VARIANTS else cfg.warmup
            # re-timed after a quiet moment if other processes took CPU meanwhile
            times, result, others, attempts = time_with_retries(p, warmup, reps, retries)
        except Exception as exc:
            row["reason"] = f"failed: {type(exc).__name__}: {exc}"
            x.grad = None
            _release_fused_cache()
            continue
        row.update(
            available=True,
            reason=None,
            seconds=statistics.median(times),
            seconds_min=min(times),
            seconds_all=times,
            compile_seconds=p.compile_seconds,
            entry=p.entry,
            loss=loss_value(result),
            other_processes_cpu=others,
            attempts=attempts,
        )
        if name not in ("floor", *NUMPY_VARIANTS):
            grad = p.grad()
            if grad is not None:
                head = grad.detach()[:256].float()
                if name == "eager":
                    ref_grad, ref_loss = head.clone(), row["loss"]
                elif ref_grad is not None:
                    row["abs_loss_diff_vs_eager"] = abs(row["loss"] - ref_loss)
                    row["max_abs_grad_diff_vs_eager"] = float((head - ref_grad).abs().max())
        del p, result
        x.grad = None
        _release_fused_cache()  # the buffer kept for reuse would count against the next row
        gc.collect()
        print(f"   {name:<18} {row['seconds'] * 1e3:10.2f} ms", flush=True)
    del x, t
    gc.collect()
    torch._dynamo.reset()

    add_ratios(rows)
    targets = evaluate_targets(cfg, rows)
    return {
        "name": cfg.name,
        "shape": [cfg.rows, cfg.cols],
        "dtype": cfg.dtype,
        "logits_bytes": cfg.logits_bytes,
        "stated_targets": cfg.stated_targets,
        "warmup": cfg.warmup,
        "reps": cfg.reps,
        "memory_probe": "one subprocess per variant" if isolate else "one subprocess per config",
        "rows": list(rows.values()),
        "targets": targets,
    }


def add_ratios(rows: dict[str, dict[str, Any]]) -> None:
    def sec(name: str) -> float | None:
        r = rows.get(name)
        return r["seconds"] if r and r["available"] else None

    eager, compiled, floor, scipy_s = (
        sec("eager"),
        sec("compiled"),
        sec("floor"),
        sec("scipy_log_softmax"),
    )
    for row in rows.values():
        s = row["seconds"] if row["available"] else None
        row["speedup_vs_eager"] = eager / s if s and eager else None
        row["speedup_vs_compiled"] = compiled / s if s and compiled else None
        row["time_over_floor"] = s / floor if s and floor else None
        if row["variant"] in NUMPY_VARIANTS:
            row["speedup_vs_eager"] = row["speedup_vs_compiled"] = None
            row["speedup_vs_scipy"] = scipy_s / s if s and scipy_s else None


def evaluate_targets(cfg: Config, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []

    def check(variant: str, target: str, value: float | None, met: bool | None) -> None:
        out.append({"variant": variant, "target": target, "value": value, "met": met})

    for v in TARGET_VARIANTS:
        r = rows[v]
        ok = r["available"]
        s = r["speedup_vs_eager"]
        met = s >= SPEEDUP_VS_EAGER if s else None
        check(v, f"speedup vs eager >= {SPEEDUP_VS_EAGER:g}x", s, met)
        s = r["speedup_vs_compiled"]
        check(v, "faster than torch.compile", s, s > 1.0 if s else None)
        f = r["time_over_floor"]
        check(v, f"time / floor <= {MAX_OVER_FLOOR:g}", f, f <= MAX_OVER_FLOOR if f else None)
        peak = r["peak_extra_x_logits"] if ok else None
        if v == "fused":
            check(
                v,
                f"peak extra <= {FUSED_PEAK_X_LOGITS:g} x logits (the gradient + 1%)",
                peak,
                peak <= FUSED_PEAK_X_LOGITS if peak is not None else None,
            )
        else:
            check(
                v,
                f"peak extra < {INPLACE_PEAK_X_LOGITS:.0%} of the logits",
                peak,
                peak < INPLACE_PEAK_X_LOGITS if peak is not None else None,
            )
    s = rows["fallback"]["speedup_vs_eager"]
    met = s >= FALLBACK_VS_EAGER if s else None
    check("fallback", f"fallback >= {FALLBACK_VS_EAGER:g}x torch eager", s, met)
    return out


# --------------------------------------------------------------------------- report


COLUMNS = (
    Column("variant", 45, left=True),
    Column("median ms", 10, "10.2f"),
    Column("min ms", 9, "9.2f"),
    Column("x eager", 8, "7.2f", "x"),
    Column("x compl", 8, "7.2f", "x"),
    Column("/ floor", 8, "8.2f"),
    Column("peak MiB", 9, "9.1f"),
    Column("x logits", 9, "9.3f"),
    Column("loss", 10, "10.6f"),
)


def render(config: dict[str, Any]) -> str:
    rows = []
    for r in config["rows"]:
        ms = r["seconds"] * 1e3 if r["available"] else None
        mn = r["seconds_min"] * 1e3 if r["available"] else None
        notes = []
        if not r["available"]:
            notes.append(r["reason"] or "unavailable")
        if r.get("compile_seconds") is not None:
            notes.append(f"compile {r['compile_seconds']:.1f} s, cold cache (excluded)")
        if r.get("speedup_vs_scipy") is not None and r["variant"] == "numpy_core":
            notes.append(f"{r['speedup_vs_scipy']:.2f}x vs scipy")
        if r.get("max_abs_grad_diff_vs_eager") is not None:
            notes.append(
                f"|dloss| {r['abs_loss_diff_vs_eager']:.1e} |dgrad| "
                f"{r['max_abs_grad_diff_vs_eager']:.1e} vs eager"
            )
        if (r.get("attempts") or 1) > 1:
            notes.append(f"least disturbed of {r['attempts']} attempts")
        if (r.get("other_processes_cpu") or 0) > NOISY:
            notes.append(f"NOISY: other processes used {r['other_processes_cpu']:.0%} of the CPU")
        if r.get("peak_error"):
            notes.append(f"memory: {r['peak_error']}")
        peak = r["peak_extra_bytes"]
        cells = (
            r["label"],
            ms,
            mn,
            r["speedup_vs_eager"],
            r["speedup_vs_compiled"],
            r["time_over_floor"],
            None if peak is None else peak / 2**20,
            r["peak_extra_x_logits"],
            r.get("loss"),
        )
        rows.append((cells, "; ".join(notes)))
    lines = [
        f"{config['name']}  logits {config['logits_bytes'] / 2**20:.0f} MiB, "
        f"median of {config['reps']} after {config['warmup']} warm-up "
        f"(NumPy rows: {FULL_CONFIGS[0].numpy_reps}), memory: {config['memory_probe']}",
        *table(COLUMNS, rows),
    ]
    scope = "targets" if config["stated_targets"] else "targets (informative)"
    lines.append(f"{scope}:")
    for c in config["targets"]:
        value = fmt(c["value"], ".3f")
        lines.append(f"  [{verdict(c['met'])}] {c['variant']:<14} {c['target']:<48} {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, a smoke test")
    parser.add_argument(
        "--compile", action="store_true", help="with --quick, time torch.compile too"
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        help="re-time a variant up to this many times when other processes took more than "
        f"{NOISY * 100:.0f}%% of the CPU during its runs (default 1; 0 with --quick)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file to write")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.retries is None:
        args.retries = 0 if args.quick else 1
    if args._worker:
        emit_result(_worker(json.loads(args._worker)))
        return 0

    inductor_root = tempfile.mkdtemp(prefix="bench-ce-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(dir=inductor_root)  # cold cache

    import numpy
    import scipy
    import torch

    configs = QUICK_CONFIGS if args.quick else FULL_CONFIGS
    compile_enabled = args.compile or not args.quick
    fused, entry = load_fused()
    load_before = os.getloadavg()
    started = time.time()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs; fused: {entry if fused else 'UNAVAILABLE - ' + entry}",
        flush=True,
    )
    results = []
    try:
        for cfg in configs:
            results.append(
                run_config(
                    cfg,
                    compile_enabled=compile_enabled,
                    fused=fused,
                    entry=entry,
                    isolate=not args.quick,
                    inductor_root=inductor_root,
                    retries=args.retries,
                )
            )
    finally:
        shutil.rmtree(inductor_root, ignore_errors=True)

    print()
    print(f"Peak memory: {MEMORY_METHOD}.")
    print("x eager / x compl: speedup (their median / this median); / floor: this / floor.\n")
    for config in results:
        print(render(config))
        print()

    report = {
        "benchmark": "cross entropy forward+backward of the mean loss, integer targets",
        "command": command_line(),
        "quick": args.quick,
        "date_utc": utc(started),
        "wall_seconds": time.time() - started,
        "machine": machine_info(torch.get_num_threads(), load_before),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
        },
        "fused_entry": entry if fused else None,
        "fused_unavailable_reason": None if fused else entry,
        "timing": "median of time.perf_counter over repetitions after warm-up, one process",
        "memory_method": MEMORY_METHOD,
        "targets": {
            "speedup_vs_eager": SPEEDUP_VS_EAGER,
            "faster_than_compiled": True,
            "max_time_over_floor": MAX_OVER_FLOOR,
            "fused_peak_x_logits": FUSED_PEAK_X_LOGITS,
            "inplace_peak_x_logits": INPLACE_PEAK_X_LOGITS,
        },
        "configs": results,
    }
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
