"""Smoke test of benchmarks/bench_vocab_parallel.py: ``--quick`` on 1 and 2 gloo ranks.

The bytes the benchmark counts (by wrapping the collectives) are held to what the
algorithm sends: one descriptor all-gather, then an all-reduce of N and one of 2N float32
values (ours); the (N, V/world) float32 slice (the gathering baseline); the linear variants
add the (N, D) float32 input gradient. The losses must agree with the baseline's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from crossentropy.torch.distributed import FIELDS

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_vocab_parallel.py"
TOKENS, VOCABULARY, HIDDEN = 256, 1000, 64  # the script's --quick configuration
DESCRIPTOR = (len(FIELDS) + 1) * 8  # float64 entries, and the failure flag


def test_quick_benchmark_counts_bytes_and_memory(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads(out.read_text())
    assert report["config"]["tokens"] == TOKENS
    assert report["config"]["vocabulary"] == VOCABULARY
    rows = {(r["world"], r["variant"]): r for r in report["rows"]}
    assert set(rows) == {
        (w, v) for w in (1, 2) for v in ("ours", "gather", "ours_linear", "gather_linear")
    }
    logits_bytes = TOKENS * VOCABULARY * 4
    for (world, variant), row in rows.items():
        assert row["losses_equal_on_all_ranks"], row
        assert row["seconds"] > 0 and row["peak_reset"], row
        payload = row["payload_bytes_per_rank"]
        slice_bytes = TOKENS * (VOCABULARY // world) * 4
        dh = TOKENS * HIDDEN * 4
        expected = {
            "ours": DESCRIPTOR + 3 * TOKENS * 4,
            "gather": slice_bytes,
            "ours_linear": DESCRIPTOR + 3 * TOKENS * 4 + dh,
            "gather_linear": slice_bytes + dh,
        }[variant]
        assert payload == [expected] * world, (world, variant, payload, expected)
        if world == 1:
            assert row["wire_bytes_per_rank"] == [0.0]
        if variant.startswith("gather"):  # the whole logits and their gradient, at least
            assert row["peak_over_inputs_bytes_max"] >= 1.5 * logits_bytes, row
        else:
            assert row["rel_loss_diff_vs_gather"] < 1e-5, row
    for variant in ("ours", "ours_linear"):
        two = rows[(2, variant)]
        assert two["wire_x_gather"] < 0.2, two
        assert two["peak_x_gather"] < 0.75, two
