"""Smoke test of benchmarks/bench_linear_cross_entropy.py: ``--quick`` reports every variant.

The row of ``crossentropy.torch.linear_cross_entropy`` is checked for what it is: timed,
with a loss and gradients matching the unfused reference, when it imports here, and
recorded as unavailable (with the reason) when it does not.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_linear_cross_entropy.py"
VARIANTS = ("floor", "floor_onednn", "unfused", "torch_chunked", "ours")
TARGETS = 4


def _ours_here() -> bool:
    try:
        from crossentropy.torch import linear_cross_entropy  # noqa: F401
    except ImportError:
        return False
    return True


def _torch_chunked_here() -> bool:
    return hasattr(torch.nn.functional, "linear_cross_entropy") and hasattr(
        torch.nn, "LinearCrossEntropyOptions"
    )


def _assert_timed(row: dict[str, Any]) -> None:
    assert row["available"] is True, row
    assert row["seconds"] > 0
    assert row["seconds_all"] and all(s > 0 for s in row["seconds_all"])
    assert row["peak_extra_bytes"] is not None and row["peak_extra_bytes"] >= 0, row
    assert row["gradients_bytes"] > 0, row


def test_quick_linear_benchmark_reports_every_variant(tmp_path: Path) -> None:
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
    ours_here = _ours_here()
    tol = {"float32": 1e-4, "bfloat16": 5e-2}

    assert [c["dtype"] for c in report["configs"]] == ["float32", "float32", "bfloat16"]
    assert [c["stated_targets"] for c in report["configs"]] == [True, True, False]
    for config in report["configs"]:
        rows = {r["variant"]: r for r in config["rows"]}
        assert set(rows) == set(VARIANTS)
        for name in ("floor", "unfused"):
            _assert_timed(rows[name])
        # the floor's gradients are its results; beyond them it holds about the logits
        floor = rows["floor"]
        assert floor["gradients_bytes"] == config["gradients_bytes"]
        assert floor["peak_extra_bytes"] >= 0.5 * config["logits_bytes"], floor
        # the unfused reference holds at least the logits and their gradient
        assert rows["unfused"]["peak_extra_bytes"] >= 1.5 * config["logits_bytes"]
        assert rows["unfused"]["peak_extra_x_unfused"] == 1.0
        # the ratios are over the faster floor (torch.mm, or the logits by oneDNN as ours)
        floors = [rows[n] for n in ("floor", "floor_onednn") if rows[n]["available"]]
        assert min(r["time_over_floor"] for r in floors) == 1.0
        if config["dtype"] == "bfloat16":
            assert not rows["floor_onednn"]["available"]  # ours uses oneDNN for float32 only
        loss = rows["unfused"]["loss"]

        if _torch_chunked_here():
            chunked = rows["torch_chunked"]
            _assert_timed(chunked)
            assert math.isclose(chunked["loss"], loss, rel_tol=tol[config["dtype"]])
        else:
            assert rows["torch_chunked"]["available"] is False

        ours = rows["ours"]
        if ours_here:
            _assert_timed(ours)
            # a fast wrong answer is no result: loss and gradients match the unfused ones
            assert math.isclose(ours["loss"], loss, rel_tol=tol[config["dtype"]])
            for key in ("rel_loss_diff_vs_unfused", "rel_grad_h_diff_vs_unfused"):
                assert ours[key] <= 10 * tol[config["dtype"]], (key, ours)
            assert ours["rel_grad_W_diff_vs_unfused"] <= 10 * tol[config["dtype"]], ours
            assert ours["time_over_floor"] > 0 and ours["peak_extra_x_unfused"] is not None
        else:
            assert ours["available"] is False and "unavailable" in ours["reason"]

        assert len(config["targets"]) == TARGETS
        for check in config["targets"]:
            assert check["variant"] == "ours"
            assert check["met"] in (True, False, None)
            if not ours_here:
                assert check["met"] is None

    if ours_here:
        assert report["ours_entry"] and report["ours_unavailable_reason"] is None
    else:
        assert report["ours_entry"] is None and report["ours_unavailable_reason"]
