"""benchmarks/bench_triton_gpu.py without a GPU: it refuses in one line (exit 2), and its
accounting (device peaks, bytes, flops, shares, the targets) is checked by hand."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_triton_gpu.py"
spec = importlib.util.spec_from_file_location("bench_triton_gpu", SCRIPT)
bench = importlib.util.module_from_spec(spec)
sys.modules["bench_triton_gpu"] = bench  # dataclasses look their module up there
spec.loader.exec_module(bench)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the machine without a GPU")
def test_without_cuda_one_line_and_exit_2(tmp_path):
    out = tmp_path / "never.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "bench_triton_gpu: needs a CUDA GPU (torch.cuda.is_available() is False here); "
        "nothing was measured"
    ]
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "bandwidth", "flops"),
    [
        ("NVIDIA H100 80GB HBM3", 3.35e12, 989e12),
        ("NVIDIA H100 PCIe", 2.0e12, 756e12),
        ("NVIDIA H100 NVL", 3.9e12, 835e12),
        ("NVIDIA H200", 4.8e12, 989e12),
        ("NVIDIA A100-SXM4-80GB", 2.039e12, 312e12),
        ("NVIDIA A100-SXM4-40GB", 1.555e12, 312e12),
    ],
)
def test_device_peaks_from_the_table(name, bandwidth, flops):
    assert bench.device_peaks(name)[:2] == (bandwidth, flops)


def test_device_peaks_overrides_and_unknown_devices():
    assert bench.device_peaks("NVIDIA GeForce RTX 4090") == (
        None,
        None,
        "no entry for 'NVIDIA GeForce RTX 4090' in the table",
    )
    bw, flops, source = bench.device_peaks("NVIDIA H200", bandwidth=4000.0)
    assert (bw, flops) == (4.0e12, 989e12) and source.startswith("command line")
    assert bench.device_peaks("Mystery", tflops=100.0)[:2] == (None, 100e12)


def test_accounting():
    assert bench.cross_entropy_bytes(8192, 32000, 2) == {
        "floor": 2 * 8192 * 32000 * 2,
        "ours": 3 * 8192 * 32000 * 2,
    }
    assert bench.linear_flops(8192, 2304, 256000) == {
        "floor": 6 * 8192 * 2304 * 256000,
        "ours": 8 * 8192 * 2304 * 256000,
    }
    # 1 GB in 1 ms is 1000 GB/s, 1/3.35 of an H100's peak; 1e12 flop in 1 s is 1 TFLOP/s
    got = bench.shares(1e-3, bytes_moved=1e9, peak_bandwidth=3.35e12)
    assert got["GB_per_s"] == pytest.approx(1000.0)
    assert got["bandwidth_share"] == pytest.approx(1 / 3.35)
    got = bench.shares(1.0, flops=1e12, peak_flops=None)
    assert got == {"TFLOP_per_s": pytest.approx(1.0), "flops_share": None}


def test_verdicts():
    ce = {
        "kind": "cross_entropy",
        "rows": [{"variant": "ours", "ms": 1.0, "ours_bandwidth_share": 0.81}],
    }
    assert bench.verdicts(ce) == {"bandwidth_at_least_80pct": True}
    ce["rows"][0]["ours_bandwidth_share"] = 0.5
    assert bench.verdicts(ce) == {"bandwidth_at_least_80pct": False}
    linear = {
        "kind": "linear_cross_entropy",
        "rows": [
            {"variant": "floor", "ms": 10.0},
            {"variant": "ours", "ms": 13.4, "peak_over_gradients": 1.02},
        ],
    }
    assert bench.verdicts(linear) == {
        "within_1.25x_of_floor": False,
        "peak_within_5pct_of_gradients": True,
    }
    assert (
        bench.verdicts({"kind": "cross_entropy", "rows": [{"variant": "ours", "ms": None}]}) == {}
    )
