"""Smoke test of benchmarks/bench_cross_entropy.py: ``--quick`` reports every variant.

The fused rows are checked for what they are: timed when the fused kernel imports and can
be built here, and recorded as unavailable (with the reason) when it cannot.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("scipy")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_cross_entropy.py"
TORCH_ROWS = ("floor", "eager", "compiled", "fused", "fused_inplace", "fused_fresh")
FUSED_ROWS = ("fused", "fused_inplace", "fused_fresh")


def _fused_here() -> bool:
    try:
        from crossentropy.torch._fused import fused_available, fused_cross_entropy  # noqa: F401
    except ImportError:
        return False
    return bool(fused_available())


def _assert_timed(row: dict[str, Any]) -> None:
    assert row["available"] is True, row
    assert row["seconds"] > 0
    assert row["seconds_all"] and all(s > 0 for s in row["seconds_all"])
    assert row["peak_extra_bytes"] is not None and row["peak_extra_bytes"] >= 0, row


def test_quick_benchmark_reports_every_variant(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "PASS" in proc.stdout or "FAIL" in proc.stdout or "n/a" in proc.stdout
    report = json.loads(out.read_text())
    fused_here = _fused_here()

    assert [c["dtype"] for c in report["configs"]] == ["float32", "float32", "bfloat16"]
    for config in report["configs"]:
        rows = {r["variant"]: r for r in config["rows"]}
        assert set(TORCH_ROWS) <= set(rows)
        for name in ("floor", "eager"):
            _assert_timed(rows[name])
        # the floor's measured peak is its one logits-sized output
        assert rows["floor"]["peak_extra_bytes"] >= 0.9 * config["logits_bytes"]
        compiled = rows["compiled"]
        assert compiled["available"] is False and "--compile" in compiled["reason"]
        for name in FUSED_ROWS:
            row = rows[name]
            if fused_here:
                _assert_timed(row)
                # a fast wrong answer is no result: the loss matches eager's
                assert math.isclose(row["loss"], rows["eager"]["loss"], rel_tol=1e-2)
                assert row["speedup_vs_eager"] > 0 and row["time_over_floor"] > 0
            else:
                assert row["available"] is False and "unavailable" in row["reason"]
        # the fallback (auto without the kernel) needs no kernel: always timed, checked
        _assert_timed(rows["fallback"])
        assert math.isclose(rows["fallback"]["loss"], rows["eager"]["loss"], rel_tol=1e-4)
        assert {c["variant"] for c in config["targets"]} == {"fused", "fused_inplace", "fallback"}
        for check in config["targets"]:
            assert check["met"] in (True, False, None)
            if check["variant"] == "fallback":
                assert check["met"] in (True, False)
            elif not fused_here:
                assert check["met"] is None

    primary = report["configs"][0]
    assert primary["stated_targets"] is True
    rows = {r["variant"]: r for r in primary["rows"]}
    for name in ("numpy_core", "scipy_log_softmax"):
        _assert_timed(rows[name])
        assert math.isclose(rows[name]["loss"], rows["eager"]["loss"], rel_tol=1e-4)
    if fused_here:
        assert report["fused_entry"]
    else:
        assert report["fused_entry"] is None and report["fused_unavailable_reason"]
