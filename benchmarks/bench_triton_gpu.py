"""GPU benchmark of the Triton kernels: cross entropy and linear + cross entropy,
forward + backward of the mean loss in bfloat16, against the peers that are installed.

Cross entropy at (N, V) in {8192, 32768} x {32000, 128256, 256000}:

- ``torch_eager``      torch.nn.functional.cross_entropy(logits, t)
- ``torch_compile``    torch.compile(torch.nn.functional.cross_entropy)
- ``liger``            Liger-Kernel's cross entropy (when installed)
- ``ours``             crossentropy.torch.cross_entropy(logits, t, impl="triton")
- ``ours_inplace``     the same with inplace_backward=True (the gradient over the logits)

Linear + cross entropy at (N, D, V) = (8192, 2304, 256000) and (16384, 4096, 128256):

- ``floor``            the three matrix products alone (logits, grad of input, grad of
                       weight), the yardstick measured in the same run
- ``torch_eager``      F.cross_entropy(h @ W.T, t)
- ``torch_compile``    torch.compile of the same
- ``torch_chunked``    torch.nn.functional.linear_cross_entropy(..., options=
                       LinearCrossEntropyOptions()) (when this torch has it)
- ``liger``            Liger-Kernel's fused linear cross entropy (when installed)
- ``cce``              cut-cross-entropy's linear_cross_entropy (when installed)
- ``ours``             crossentropy.torch.linear_cross_entropy(h, W, t, impl="triton")
- ``ours_skip``        the same with skip_small_gradients=True

Times are medians over repetitions of CUDA-event-timed steps after warm-up; peak memory is
torch.cuda.max_memory_allocated over one step, beyond the inputs (and, for linear, beyond
the inputs and their gradients). Cross entropy reports the bandwidth it achieves over the
minimum traffic (one read of the logits, one write of the gradient: 2 N V bytes x 2 in
bfloat16) and over our kernels' own traffic (two reads and one write), as shares of the
device's peak HBM bandwidth; linear cross entropy reports TFLOP/s over the three products'
flops (3 x 2 N D V) and the time over the measured floor. Device peaks come from a table
by device name (H100, H200, A100) or from --peak-bandwidth/--peak-tflops.

Targets: cross entropy at 80% of the peak bandwidth; linear cross entropy
within 1.25x of the floor, with a peak within 5% of the gradients themselves.

    python benchmarks/bench_triton_gpu.py            # writes benchmarks/results/triton_gpu.json
    python benchmarks/bench_triton_gpu.py --quick    # small shapes, a smoke run

Needs a CUDA GPU: without one it says so in one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "triton_gpu.json"

CROSS_ENTROPY_SHAPES = [(n, v) for n in (8192, 32768) for v in (32000, 128256, 256000)]
LINEAR_SHAPES = [(8192, 2304, 256000), (16384, 4096, 128256)]
QUICK_CROSS_ENTROPY_SHAPES = [(1024, 32000)]
QUICK_LINEAR_SHAPES = [(1024, 512, 32000)]

# Peak HBM bandwidth (bytes/s) and dense bfloat16 tensor-core throughput (flop/s, without
# sparsity) from the vendor's data sheets, matched against torch.cuda.get_device_name()
# in this order (the first key found in the name wins).
DEVICE_PEAKS: list[tuple[str, float, float]] = [
    ("H200", 4.8e12, 989e12),
    ("H100 NVL", 3.9e12, 835e12),
    ("H100 PCIe", 2.0e12, 756e12),
    ("H100", 3.35e12, 989e12),  # SXM5 (HBM3), "NVIDIA H100 80GB HBM3"
    ("A100-SXM4-80GB", 2.039e12, 312e12),
    ("A100 80GB PCIe", 1.935e12, 312e12),
    ("A100", 1.555e12, 312e12),  # 40 GB, SXM4 or PCIe
]

TARGET_BANDWIDTH_SHARE = 0.80
TARGET_FLOOR_RATIO = 1.25
TARGET_MEMORY_OVER_GRADIENTS = 1.05


# ----------------------------------------------------------------------------------------
# accounting: pure functions, tested without a GPU


def device_peaks(
    name: str, bandwidth: float | None = None, tflops: float | None = None
) -> tuple[float | None, float | None, str]:
    """(peak bytes/s, peak flop/s, where they came from) for a device name; an override
    (``bandwidth`` in GB/s, ``tflops`` in TFLOP/s) wins over the table."""
    table_bandwidth = table_flops = None
    source = f"no entry for {name!r} in the table"
    for key, bytes_per_s, flops in DEVICE_PEAKS:
        if key.lower() in name.lower():
            table_bandwidth, table_flops = bytes_per_s, flops
            source = f"table entry {key!r}"
            break
    if bandwidth is not None or tflops is not None:
        source = "command line" + ("" if table_bandwidth is None else f" over {source}")
    peak_bandwidth = bandwidth * 1e9 if bandwidth is not None else table_bandwidth
    peak_flops = tflops * 1e12 if tflops is not None else table_flops
    return peak_bandwidth, peak_flops, source


def cross_entropy_bytes(rows: int, classes: int, itemsize: int) -> dict[str, int]:
    """Bytes of a cross-entropy step over (rows, classes) logits: the floor (one read of the
    logits, one write of the gradient) and our kernels' (two reads and one write); the
    labels and per-row values are left out (under 0.1% at these shapes)."""
    logits = rows * classes * itemsize
    return {"floor": 2 * logits, "ours": 3 * logits}


def linear_flops(tokens: int, hidden: int, vocabulary: int) -> dict[str, int]:
    """Flops of a linear + cross-entropy step: the floor is three matrix products of
    2 N D V each (logits, grad of input, grad of weight); ours recomputes the logits in the
    backward, four."""
    product = 2 * tokens * hidden * vocabulary
    return {"floor": 3 * product, "ours": 4 * product}


def shares(
    seconds: float,
    *,
    bytes_moved: float | None = None,
    flops: float | None = None,
    peak_bandwidth: float | None = None,
    peak_flops: float | None = None,
) -> dict[str, float | None]:
    """Achieved GB/s and TFLOP/s and their shares of the device's peaks (None when a peak
    or an amount is unknown)."""
    out: dict[str, float | None] = {}
    if bytes_moved is not None:
        rate = bytes_moved / seconds
        out["GB_per_s"] = rate / 1e9
        out["bandwidth_share"] = None if peak_bandwidth is None else rate / peak_bandwidth
    if flops is not None:
        rate = flops / seconds
        out["TFLOP_per_s"] = rate / 1e12
        out["flops_share"] = None if peak_flops is None else rate / peak_flops
    return out


def verdicts(result: dict[str, Any]) -> dict[str, bool | None]:
    """The targets checked on one shape's rows of ``ours`` (None: not measured)."""
    rows = {row["variant"]: row for row in result["rows"] if row.get("ms") is not None}
    ours = rows.get("ours")
    if ours is None:
        return {}
    if result["kind"] == "cross_entropy":
        share = ours.get("ours_bandwidth_share")
        return {
            "bandwidth_at_least_80pct": None if share is None else share >= TARGET_BANDWIDTH_SHARE
        }
    floor = rows.get("floor")
    ratio = None if floor is None else ours["ms"] / floor["ms"]
    memory = ours.get("peak_over_gradients")
    return {
        "within_1.25x_of_floor": None if ratio is None else ratio <= TARGET_FLOOR_RATIO,
        "peak_within_5pct_of_gradients": None
        if memory is None
        else memory <= TARGET_MEMORY_OVER_GRADIENTS,
    }


# ----------------------------------------------------------------------------------------
# measurement (CUDA only)


@dataclass
class Row:
    variant: str
    ms: float | None = None
    peak_extra_mib: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _time_ms(step: Callable[[], None], warmup: int, repeat: int) -> float:
    import torch

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def _peak_extra(step: Callable[[], None]) -> float:
    """Peak allocated during one step beyond what was allocated before it, in bytes."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return float(torch.cuda.max_memory_allocated() - before)


def _measure(name: str, step: Callable[[], None] | None, note: str, args: Any) -> Row:
    import torch

    if step is None:
        return Row(name, note=note)
    try:
        ms = _time_ms(step, args.warmup, args.repeat)
        peak = _peak_extra(step)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return Row(name, note="out of memory")
    except Exception as error:  # a peer that fails here is reported, not fatal
        return Row(name, note=f"failed: {type(error).__name__}: {str(error)[:200]}")
    torch.cuda.empty_cache()
    return Row(name, ms=ms, peak_extra_mib=peak / 2**20, note=note)


def _liger(kind: str) -> tuple[Callable[..., Any] | None, str]:
    try:
        from liger_kernel.transformers import functional as liger
    except ImportError:
        return None, "Liger-Kernel not installed"
    function = getattr(liger, f"liger_{kind}", None)
    return function, "" if function else f"liger_kernel has no liger_{kind}"


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, tuple) else value


def bench_cross_entropy(
    rows: int, classes: int, args: Any, peaks: tuple[Any, ...]
) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    import crossentropy.torch as ct

    device = torch.device("cuda")
    g = torch.Generator(device=device).manual_seed(0)
    base = torch.randn(rows, classes, device=device, dtype=torch.bfloat16, generator=g)
    target = torch.randint(0, classes, (rows,), device=device, generator=g)
    logits = base.clone().requires_grad_()

    def step_of(loss_fn: Callable[[torch.Tensor], torch.Tensor], inplace: bool = False):
        def step() -> None:
            x = base.clone().requires_grad_() if inplace else logits
            loss_fn(x).backward()
            logits.grad = None

        return step

    compiled = torch.compile(F.cross_entropy)
    liger, liger_note = _liger("cross_entropy")
    variants: list[tuple[str, Any, str]] = [
        ("torch_eager", step_of(lambda x: F.cross_entropy(x, target)), ""),
        ("torch_compile", step_of(lambda x: compiled(x, target)), ""),
        ("liger", liger and step_of(lambda x: _first(liger(x, target))), liger_note),
        ("ours", step_of(lambda x: ct.cross_entropy(x, target, impl="triton")), ""),
        (
            "ours_inplace",
            step_of(
                lambda x: ct.cross_entropy(x, target, impl="triton", inplace_backward=True),
                inplace=True,
            ),
            "times include a fresh copy of the logits per step (the buffer overwritten)",
        ),
    ]
    traffic = cross_entropy_bytes(rows, classes, 2)
    result_rows = []
    for name, step, note in variants:
        row = _measure(name, step, note, args)
        if row.ms is not None:
            floor = shares(row.ms / 1e3, bytes_moved=traffic["floor"], peak_bandwidth=peaks[0])
            row.extra = {"floor_GB_per_s": floor["GB_per_s"]}
            row.extra["floor_bandwidth_share"] = floor["bandwidth_share"]
            if name == "ours":
                own = shares(row.ms / 1e3, bytes_moved=traffic["ours"], peak_bandwidth=peaks[0])
                row.extra["ours_GB_per_s"] = own["GB_per_s"]
                row.extra["ours_bandwidth_share"] = own["bandwidth_share"]
            row.extra["peak_over_logits"] = row.peak_extra_mib * 2**20 / (rows * classes * 2)
        result_rows.append(row)
    return {"kind": "cross_entropy", "shape": [rows, classes], "rows": _flatten(result_rows)}


def bench_linear(
    tokens: int, hidden: int, vocabulary: int, args: Any, peaks: tuple[Any, ...]
) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    import crossentropy.torch as ct

    device = torch.device("cuda")
    dtype = torch.bfloat16
    g = torch.Generator(device=device).manual_seed(0)
    h = (torch.randn(tokens, hidden, device=device, dtype=dtype, generator=g)).requires_grad_()
    w = torch.randn(vocabulary, hidden, device=device, dtype=dtype, generator=g) / hidden**0.5
    w.requires_grad_()
    t = torch.randint(0, vocabulary, (tokens,), device=device, generator=g)
    gradient_bytes = (h.numel() + w.numel()) * 2

    def step_of(loss_fn: Callable[[], torch.Tensor]):
        def step() -> None:
            loss_fn().backward()
            h.grad = w.grad = None

        return step

    def floor_step() -> None:  # the three products, the logits standing in for their gradient
        z = h.detach() @ w.detach().T
        z @ w.detach()
        z.T @ h.detach()

    def eager() -> torch.Tensor:
        return F.cross_entropy(h @ w.T, t)

    compiled = torch.compile(eager)
    liger, liger_note = _liger("fused_linear_cross_entropy")
    try:
        from cut_cross_entropy import linear_cross_entropy as cce

        cce_note = ""
    except ImportError:
        cce, cce_note = None, "cut-cross-entropy not installed"
    chunked_note = ""
    options = getattr(torch.nn, "LinearCrossEntropyOptions", None)
    if not hasattr(F, "linear_cross_entropy") or options is None:
        chunked_note = "this torch has no chunked linear_cross_entropy"
    variants: list[tuple[str, Any, str]] = [
        ("floor", floor_step, "3 matrix products, logits-sized intermediate"),
        ("torch_eager", step_of(eager), ""),
        ("torch_compile", step_of(compiled), ""),
        (
            "torch_chunked",
            None
            if chunked_note
            else step_of(lambda: F.linear_cross_entropy(h, w, t, options=options())),
            chunked_note,
        ),
        ("liger", liger and step_of(lambda: _first(liger(h, w, t))), liger_note),
        ("cce", cce and step_of(lambda: cce(h, w, t)), cce_note),
        ("ours", step_of(lambda: ct.linear_cross_entropy(h, w, t, impl="triton")), ""),
        (
            "ours_skip",
            step_of(
                lambda: ct.linear_cross_entropy(h, w, t, impl="triton", skip_small_gradients=True)
            ),
            "approximate: skips tiles whose gradient is below bfloat16's resolution",
        ),
    ]
    flops = linear_flops(tokens, hidden, vocabulary)
    result_rows = []
    floor_ms = None
    for name, step, note in variants:
        row = _measure(name, step, note, args)
        if row.ms is not None:
            if name == "floor":
                floor_ms = row.ms
            rate = shares(row.ms / 1e3, flops=flops["floor"], peak_flops=peaks[1])
            row.extra = {
                "floor_TFLOP_per_s": rate["TFLOP_per_s"],
                "flops_share": rate["flops_share"],
            }
            row.extra["over_floor"] = None if floor_ms is None else row.ms / floor_ms
            if name != "floor":  # the peak beyond the inputs, over the gradients' size
                row.extra["peak_over_gradients"] = row.peak_extra_mib * 2**20 / gradient_bytes
        result_rows.append(row)
    return {
        "kind": "linear_cross_entropy",
        "shape": [tokens, hidden, vocabulary],
        "rows": _flatten(result_rows),
    }


def _flatten(rows: list[Row]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        item = asdict(row)
        item.update(item.pop("extra"))
        out.append(item)
    return out


def _print(result: dict[str, Any]) -> None:
    print(f"\n{result['kind']} {tuple(result['shape'])} bfloat16, forward + backward")
    for row in result["rows"]:
        if row["ms"] is None:
            print(f"  {row['variant']:<14} -- {row['note']}")
            continue
        numbers = [f"{row['ms']:9.3f} ms", f"peak +{row['peak_extra_mib']:9.1f} MiB"]
        for key in ("floor_bandwidth_share", "ours_bandwidth_share", "flops_share"):
            if row.get(key) is not None:
                numbers.append(f"{key} {100 * row[key]:5.1f}%")
        if row.get("over_floor") is not None:
            numbers.append(f"/ floor {row['over_floor']:.2f}")
        if row.get("peak_over_gradients") is not None:
            numbers.append(f"peak / gradients {row['peak_over_gradients']:.2f}")
        print(f"  {row['variant']:<14} " + "  ".join(numbers))
    print(f"  targets: {result['verdicts']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes: a smoke run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--peak-bandwidth", type=float, help="device peak in GB/s")
    parser.add_argument("--peak-tflops", type=float, help="device bfloat16 peak in TFLOP/s")
    parser.add_argument("--only", choices=("cross_entropy", "linear"), default=None)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(
            "bench_triton_gpu: needs a CUDA GPU (torch.cuda.is_available() is False here); "
            "nothing was measured",
            file=sys.stderr,
        )
        return 2
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print(
            "bench_triton_gpu: unset TRITON_INTERPRET (the interpreter runs on the CPU)",
            file=sys.stderr,
        )
        return 2
    name = torch.cuda.get_device_name()
    peaks = device_peaks(name, args.peak_bandwidth, args.peak_tflops)
    results = []
    if args.only in (None, "cross_entropy"):
        for rows, classes in QUICK_CROSS_ENTROPY_SHAPES if args.quick else CROSS_ENTROPY_SHAPES:
            results.append(bench_cross_entropy(rows, classes, args, peaks))
            results[-1]["verdicts"] = verdicts(results[-1])
            _print(results[-1])
    if args.only in (None, "linear"):
        for shape in QUICK_LINEAR_SHAPES if args.quick else LINEAR_SHAPES:
            results.append(bench_linear(*shape, args, peaks))
            results[-1]["verdicts"] = verdicts(results[-1])
            _print(results[-1])
    report = {
        "device": name,
        "peak_bandwidth_bytes_per_s": peaks[0],
        "peak_bf16_flops": peaks[1],
        "peaks_from": peaks[2],
        "torch": torch.__version__,
        "python": platform.python_version(),
        "quick": args.quick,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
