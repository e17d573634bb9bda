"""Smoke test of benchmarks/bench_kernel_variants.py: ``--quick`` builds each instruction-set
level a wheel ships, times it, and every build gives torch's loss."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from crossentropy.torch import _build, _kernel

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_kernel_variants.py"


@pytest.mark.skipif(_build.find_compiler() is None, reason="no C compiler to build the variants")
def test_quick_run_times_every_build_and_no_kernel(tmp_path: Path) -> None:
    out = tmp_path / "variants.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    builds = _build.prebuilt_flags(platform.machine())
    rows = {row["variant"]: row for row in report["rows"]}
    assert set(rows) == {*(f"{name}: fused" for name in builds), "eager", "native"}
    for row in rows.values():
        assert row["seconds_min"] > 0 and len(row["seconds_all"]) == 3
        # every build (and the fallback) computes torch's loss and gradient
        assert row["loss_diff_vs_eager"] < 1e-5 * abs(rows["eager"]["loss"]), row
        assert row["gradient_abs_sum_diff_vs_eager"] < 1e-4 * rows["eager"]["gradient_abs_sum"]
    (target,) = report["stated_targets"]
    assert target["passed"] == (target["value"] >= 1.0)
    assert _kernel.EXTRA_CFLAGS == "CROSSENTROPY_KERNEL_CFLAGS"  # what the script sets
