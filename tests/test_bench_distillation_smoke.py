"""Smoke test of benchmarks/bench_distillation.py: ``--quick`` reports every variant, with
ours matching the unfused computation (loss and gradients) and the targets rated, and the
logits version against the unfused computation."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_distillation.py"
VARIANTS = ("floor", "unfused", "unfused_compiled", "ours", "liger")


def _assert_timed(row: dict[str, Any]) -> None:
    assert row["available"] is True, row
    assert row["seconds"] > 0 and all(s > 0 for s in row["seconds_all"])
    assert row["peak_extra_bytes"] is not None and row["peak_extra_bytes"] >= 0, row
    assert row["gradients_bytes"] > 0, row


def test_quick_distillation_benchmark_reports_every_variant(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "targets:" in proc.stdout
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["liger"]
    assert [c["dtype"] for c in report["configs"]] == ["float32", "bfloat16"]
    liger_here = importlib.util.find_spec("liger_kernel") is not None
    for config in report["configs"]:
        rows = {r["variant"]: r for r in config["rows"]}
        assert set(rows) == set(VARIANTS)
        names = ("floor", "unfused", "ours", "liger") if liger_here else ("floor", "unfused", "ours")
        for name in names:
            _assert_timed(rows[name])
        if not liger_here:
            assert rows["liger"]["available"] is False and rows["liger"]["reason"]
        assert rows["floor"]["time_over_floor"] == 1.0
        assert rows["unfused"]["peak_extra_x_unfused"] == 1.0
        # the unfused computation holds at least both models' logits
        assert rows["unfused"]["peak_extra_bytes"] >= 1.5 * config["logits_bytes"]
        # a fast wrong answer is no result: ours (and Liger's) match the unfused
        tolerance = {"float32": 1e-5, "bfloat16": 5e-2}[config["dtype"]]
        for name in ("ours", "liger") if liger_here else ("ours",):
            for key in ("loss", "grad_h", "grad_W"):
                assert rows[name][f"rel_{key}_diff_vs_unfused"] <= tolerance, (name, key)
        ours = rows["ours"]
        assert ours["time_over_floor"] > 0 and ours["peak_extra_x_unfused"] is not None
        assert [t["variant"] for t in config["targets"]] == ["ours"] * 4
        for check in config["targets"][:2]:
            assert check["met"] in (True, False) and check["value"] is not None
    assert [c["dtype"] for c in report["logit_configs"]] == ["float32", "bfloat16"]
    for config in report["logit_configs"]:
        rows = {r["variant"]: r for r in config["rows"]}
        assert set(rows) == {"unfused", "unfused_compiled", "ours"}
        assert rows["ours"]["available"] is True and rows["ours"]["seconds"] > 0
        tolerance = {"float32": 1e-5, "bfloat16": 5e-2}[config["dtype"]]
        for key in ("loss", "grad_logits"):
            assert rows["ours"][f"rel_{key}_diff_vs_unfused"] <= tolerance, key
