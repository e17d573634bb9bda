"""Smoke test of benchmarks/bench_report.py: ``--quick`` runs every variant on a tiny token
file, every variant's cross entropy equals a float64 NumPy computation on the same file (and
ours), and the JSON holds the fields the table is made of."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchmetrics")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_report.py"
SCORED = ("ours_library", "torch", "torchmetrics")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def _float64_cross_entropy(logits: Path, labels: Path) -> tuple[float, int]:
    """Mean -log softmax(x)[y] over the tokens whose label is not -100, in float64."""
    x = np.load(logits).astype(np.float64)
    y = np.load(labels)
    keep = y != -100
    rows, target = x[keep], y[keep]
    m = rows.max(axis=1)
    log_z = m + np.log(np.exp(rows - m[:, None]).sum(axis=1))
    loss = log_z - rows[np.arange(len(target)), target]
    return float(loss.mean()), int(keep.sum())


def _timed(row: dict[str, Any]) -> None:
    assert "error" not in row, row
    assert row["seconds"] > 0 and row["process_seconds"] >= row["seconds"] * 0.5, row
    assert row["gb_per_s"] > 0 and row["bytes"] > 0, row
    assert row["peak_rss_bytes"] > 0 and row["peak_rss_mib"] > 0, row
    assert row["peak_rss_over_file"] > 0, row
    assert 0.0 <= row["resident_before"] <= 1.0, row


def test_quick_report_benchmark_runs_every_variant_and_agrees(tmp_path: Path) -> None:
    data, out = tmp_path / "data", tmp_path / "report.json"
    proc = _run("--dir", str(data), "--keep", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "all variants agree" in proc.stdout
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["shape"] == [4, 64, 1000]
    assert report["file_bytes"] == 4 * 64 * 1000 * 4 + 4 * 64 * 8
    assert report["machine"]["cpu_count"] and report["command"]
    assert report["agreement"]["ok"] is True and report["agreement"]["tolerance"] == 1e-5

    # the file: labels (S, T) with the last ~10% of each sequence -100
    labels = np.load(data / "labels.npy")
    assert labels.shape == (4, 64) and labels.dtype == np.int64
    assert (labels[:, -6:] == -100).all() and (labels[:, :-6] >= 0).all()
    assert np.load(data / "logits.npy", mmap_mode="r").dtype == np.float32

    rows = [r for r in report["rows"] if not r.get("reference_only")]
    seen = {(r["variant"], r.get("cache")) for r in rows if "error" not in r}
    expected = {("floor_read", "cold"), ("floor_read", "warm"), ("ours_library", "cold")}
    expected |= {("ours_library", "warm"), ("torch", "warm"), ("torchmetrics", "warm")}
    assert expected <= seen, seen
    cli = [r for r in rows if r["variant"] == "ours"]
    assert cli, "no row for the command"
    if any("error" in r for r in cli):  # the command without token files: said so
        assert all("stands in" in r["error"] for r in cli)
        assert all(r["stand_in_for_cli"] for r in rows if r["variant"] == "ours_library")
    else:
        assert {r["cache"] for r in cli} == {"cold", "warm"}

    reference, tokens = _float64_cross_entropy(data / "logits.npy", data / "labels.npy")
    for row in rows:
        if "error" in row:
            continue
        _timed(row)
        if row["variant"] == "floor_read":
            assert row["gbps_over_floor"] == 1.0
            assert row["bytes"] == (data / "logits.npy").stat().st_size  # header included
            continue
        assert row["variant"] in (*SCORED, "ours"), row
        assert row["prefix"] is False if "prefix" in row else True
        assert row["tokens"] == tokens, row
        assert row["cross_entropy_nats"] == pytest.approx(reference, rel=1e-5), row
        assert row["perplexity"] == pytest.approx(np.exp(reference), rel=1e-5), row
    for check in report["agreement"]["checks"]:
        assert check["ok"] and check["relative_difference"] <= 1e-5, check
    assert {c["variant"] for c in report["agreement"]["checks"]} >= {"torch", "torchmetrics"}


def test_quick_report_benchmark_checks_peer_prefixes_and_removes_its_files(tmp_path: Path) -> None:
    """Peers out of time after their first chunk (one sequence) cover a prefix; their numbers
    are checked against compute_report on that prefix; the token file is removed at the end."""
    data, out = tmp_path / "data", tmp_path / "report.json"
    one_sequence = str(64 * 1000 * 4)
    proc = _run(
        "--dir", str(data), "--no-cold", "--peer-seconds", "1e-9",
        "--peer-chunk-bytes", one_sequence, "--out", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert data.is_dir() and not any(data.iterdir())
    report = json.loads(out.read_text())
    assert all(r.get("cache") != "cold" for r in report["rows"])
    peers = [r for r in report["rows"] if r["variant"] in ("torch", "torchmetrics")]
    assert len(peers) == 2
    for row in peers:
        assert row["prefix"] is True and row["sequences"] == 1, row
        assert row["bytes"] == 64 * 1000 * 4 and row["tokens"] == 58, row
        assert "prefix: 1 sequences" in proc.stdout
    refs = [r for r in report["rows"] if r.get("reference_only")]
    assert [(r["variant"], r["sequences"], r["tokens"]) for r in refs] == [("ours_library", 1, 58)]
    checks = {c["variant"]: c for c in report["agreement"]["checks"]}
    for name in ("torch", "torchmetrics"):
        assert checks[name]["sequences"] == 1 and checks[name]["ok"], checks
        assert checks[name]["relative_difference"] <= 1e-5
