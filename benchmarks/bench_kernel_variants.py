"""The fused kernel's builds side by side: each instruction-set level a wheel ships, and the
path that runs without any kernel, against torch eager.

A wheel carries one build of the C kernel per x86-64 level (``-march=x86-64-v4``: AVX-512,
``x86-64-v3``: AVX2, ``x86-64``: the portable C path; see ``crossentropy.torch._build``)
and loads the best one the CPU runs. This benchmark builds each of them from source (the
same flags, through ``CROSSENTROPY_KERNEL_CFLAGS``, into a temporary cache), and times
forward + backward of the mean loss over float32 (N, V) logits with each, one fresh
subprocess per build, round-robin over the builds; the last subprocess times torch eager
``F.cross_entropy`` and ``impl="native"`` (what ``impl="auto"`` runs where no kernel can be
had) on the same data. Each subprocess reports the min and median of its repetitions.

Writes ``benchmarks/results/kernel_variants.json``; ``--quick`` for small shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness

DEFAULT_OUT = Path(__file__).with_name("results") / "kernel_variants.json"

_TIMER = """
import json, sys, time, torch
import torch.nn.functional as F
from crossentropy.torch import cross_entropy
rows, classes, reps, impls = {rows}, {classes}, {reps}, {impls!r}
g = torch.Generator().manual_seed(0)
x = torch.randn(rows, classes, generator=g).requires_grad_()
t = torch.randint(0, classes, (rows,), generator=g)
steps = {{
    "fused": lambda: cross_entropy(x, t, impl="fused"),
    "native": lambda: cross_entropy(x, t, impl="native"),
    "eager": lambda: F.cross_entropy(x, t),
}}
out = {{}}
for name in impls:
    step = steps[name]
    for _ in range(2):
        x.grad = None
        step().backward()
    times = []
    for _ in range(reps):
        x.grad = None
        start = time.perf_counter()
        step().backward()
        times.append(time.perf_counter() - start)
    out[name] = times
    x.grad = None
    loss = step()
    loss.backward()
    out["check " + name] = [loss.item(), x.grad.double().abs().sum().item()]
print("RESULT " + json.dumps(out))
"""


def _flags() -> dict[str, str]:
    """Each shipped build's ``-march``, by name (the portable build alone off x86-64)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from crossentropy.torch import _build

    found = {}
    for name, flags in _build.prebuilt_flags(platform.machine()).items():
        march = [f for f in flags if f.startswith("-march=")]
        found[name] = march[-1] if march else "-march=native"
    return found


def _run(code: str, env: dict[str, str]) -> dict[str, list[float]]:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"a timing subprocess failed:\n{done.stderr[-3000:]}")
    line = next(s for s in done.stdout.splitlines() if s.startswith("RESULT "))
    result: dict[str, list[float]] = json.loads(line[len("RESULT ") :])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, a smoke test")
    parser.add_argument("--rounds", type=int, default=None, help="round-robin rounds")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON file to write")
    args = parser.parse_args(argv)
    rows, classes = (256, 2000) if args.quick else (4096, 32000)
    reps = 3 if args.quick else 10
    rounds = args.rounds or (1 if args.quick else 2)
    variants = _flags()
    began = time.perf_counter()
    loadavg_before = os.getloadavg()
    times: dict[str, list[float]] = {}
    checks: dict[str, list[float]] = {}  # variant -> [loss, sum |gradient|]
    with tempfile.TemporaryDirectory() as cache:
        base = {**os.environ, "CROSSENTROPY_CACHE": cache}
        src = str(Path(__file__).resolve().parents[1] / "src")
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [src, base.get("PYTHONPATH")]))
        jobs: list[tuple[str, dict[str, str], list[str]]] = [
            (name, {**base, "CROSSENTROPY_KERNEL_CFLAGS": march}, ["fused"])
            for name, march in variants.items()
        ]
        jobs.append(("no kernel", base, ["eager", "native"]))
        for _ in range(rounds):
            for name, env, impls in jobs:
                code = _TIMER.format(rows=rows, classes=classes, reps=reps, impls=impls)
                for impl, seconds in _run(code, env).items():
                    if impl.startswith("check "):
                        label = impl[len("check ") :]
                        checks[f"{name}: {label}" if label == "fused" else label] = seconds
                        continue
                    key = f"{name}: {impl}" if impl == "fused" else impl
                    times.setdefault(key, []).extend(seconds)
    eager = min(times["eager"])
    best = min(times[f"{next(iter(variants))}: fused"])
    table = []
    print(f"float32 ({rows}, {classes}), forward + backward, min / median of {len(times['eager'])}")
    print(
        f"{'variant':34s} {'min ms':>9s} {'median ms':>10s} {'x eager':>8s} {'/ best':>7s}"
        f" {'|dloss| vs eager':>17s}"
    )
    for key, seconds in times.items():
        row = {
            "variant": key,
            "seconds_min": min(seconds),
            "seconds_median": statistics.median(seconds),
            "seconds_all": seconds,
            "speedup_vs_eager": eager / min(seconds),
            "time_over_best_build": min(seconds) / best,
            "loss": checks[key][0],
            "gradient_abs_sum": checks[key][1],
            "loss_diff_vs_eager": abs(checks[key][0] - checks["eager"][0]),
            "gradient_abs_sum_diff_vs_eager": abs(checks[key][1] - checks["eager"][1]),
        }
        table.append(row)
        print(
            f"{key:34s} {row['seconds_min'] * 1e3:9.2f} {row['seconds_median'] * 1e3:10.2f} "
            f"{row['speedup_vs_eager']:7.2f}x {row['time_over_best_build']:7.2f}"
            f" {row['loss_diff_vs_eager']:17.1e}"
        )
    native = min(times["native"])
    target = {
        "target": "no kernel (impl='native', what auto runs) >= 1.0x torch eager",
        "value": eager / native,
        "passed": eager / native >= 1.0,
    }
    print(f"  [{'PASS' if target['passed'] else 'FAIL'}] {target['target']}: {target['value']:.3f}")
    report = {
        "benchmark": "the fused kernel's builds (one per instruction-set level) and no kernel",
        "command": _harness.command_line(),
        "quick": args.quick,
        "date_utc": _harness.utc(time.time()),
        "wall_seconds": time.perf_counter() - began,
        "machine": _harness.machine(_torch_threads(), loadavg_before),
        "shape": [rows, classes],
        "dtype": "float32",
        "builds": variants,
        "rows": table,
        "stated_targets": [target],
    }
    _harness.write_json(args.out, report)
    return 0


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


if __name__ == "__main__":
    raise SystemExit(main())
