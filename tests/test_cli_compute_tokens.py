"""Tests of ``crossentropy compute`` on language-model token files.

Predictions (S, T, V) of logits with labels (S, T), -100 padding: the numbers are checked
against torchmetrics' ``Perplexity(ignore_index=-100)`` and float64 NumPy (per-token cross
entropy, per-sequence perplexity and its quantiles); NPY memory-mapped, NPZ and a pipe give
the same report; a large NPY file is read with a bounded resident set.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from crossentropy.cli.app import app
from crossentropy.cli.compute import MappedArraySource

ENV = {"COLUMNS": "120", "NO_COLOR": "1"}
S, T, V = 9, 23, 11


def invoke(*args: str, input: bytes | None = None) -> Any:
    return CliRunner().invoke(app, ["compute", *args], env=ENV, input=input)


def run_json(*args: str, input: bytes | None = None) -> dict[str, Any]:
    result = invoke(*args, "--format", "json", input=input)
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def assert_bad(result: Any, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and result.stdout == "", result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def tokens() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    z = (rng.normal(size=(S, T, V)) * 2.0).astype(np.float32)
    y = rng.integers(0, V, size=(S, T))
    lengths = rng.integers(1, T + 1, size=S)
    lengths[0] = T
    for s, n in enumerate(lengths):
        y[s, n:] = -100
    y[3, 2] = -100  # a hole inside a sequence
    return {"z": z, "y": y}


def token_loss(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per-token loss (S, T) in float64, mask of the scored tokens)."""
    x = z.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    logp = x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
    scored = y != -100
    loss = -np.take_along_axis(logp, np.where(scored, y, 0)[..., None], axis=-1)[..., 0]
    return loss, scored


@pytest.fixture(scope="module")
def paths(
    tmp_path_factory: pytest.TempPathFactory, tokens: dict[str, np.ndarray]
) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tokens")
    np.save(root / "z.npy", tokens["z"])
    np.save(root / "y.npy", tokens["y"])
    np.savez_compressed(root / "both.npz", logits=tokens["z"], labels=tokens["y"])
    return {
        "z": str(root / "z.npy"),
        "y": str(root / "y.npy"),
        "npz": str(root / "both.npz"),
        "root": str(root),
    }


def test_perplexity_matches_torchmetrics(
    paths: dict[str, str], tokens: dict[str, np.ndarray]
) -> None:
    import torch
    from torchmetrics.text import Perplexity

    r = run_json(paths["z"], paths["y"], "--logits")
    z, y = tokens["z"], tokens["y"]
    loss, scored = token_loss(z, y)
    assert r["rows"] == int(scored.sum()) and r["ignored"] == int((~scored).sum())
    # torchmetrics in float64 on the float32 logits of the file
    metric = Perplexity(ignore_index=-100)
    expected = float(metric(torch.from_numpy(z.astype(np.float64)), torch.from_numpy(y)))
    np.testing.assert_allclose(r["perplexity"], expected, rtol=1e-6)
    np.testing.assert_allclose(r["cross_entropy_nats"], loss[scored].mean(), rtol=1e-6)
    right = z.argmax(axis=-1) == y
    assert r["accuracy"] == right[scored].mean()


def _quantile(name: str) -> float:
    """The quantile a key of ``perplexity_quantiles`` names: p10, p50, median, min, max..."""
    if name in ("min", "max", "median"):
        return {"min": 0.0, "max": 1.0, "median": 0.5}[name]
    match = re.fullmatch(r"[pq]?(\d+(?:\.\d+)?)%?", name)
    assert match, name
    return float(match.group(1)) / 100


def test_sequence_quantiles(paths: dict[str, str], tokens: dict[str, np.ndarray]) -> None:
    r = run_json(paths["z"], paths["y"], "--logits", "--chunk-size", "5")
    loss, scored = token_loss(tokens["z"], tokens["y"])
    per_sequence = np.exp((loss * scored).sum(axis=1) / scored.sum(axis=1))
    stats = r["sequences"]
    assert stats["sequences"] == S
    assert stats["perplexity_quantiles"]
    for name, value in stats["perplexity_quantiles"].items():
        np.testing.assert_allclose(value, np.quantile(per_sequence, _quantile(name)), rtol=1e-6)


def test_npz_pipe_and_mmap_agree(paths: dict[str, str], tokens: dict[str, np.ndarray]) -> None:
    a = run_json(paths["z"], paths["y"], "--logits")
    b = run_json(f"{paths['npz']}:logits", f"{paths['npz']}:labels", "--logits")
    c = run_json("-", paths["y"], "--logits", input=Path(paths["z"]).read_bytes())
    for other in (b, c):
        assert {**other, "predictions": "", "labels": ""} == {
            **a,
            "predictions": "",
            "labels": "",
        }
    text = invoke(paths["z"], paths["y"], "--logits")
    assert text.exit_code == 0, text.output
    assert "Per sequence" in text.stdout and "ignored" in text.stdout


def test_ignored_tokens_are_removed_rows(
    paths: dict[str, str], tokens: dict[str, np.ndarray]
) -> None:
    """The report of a token file is the one of its scored tokens as rows."""
    z, y = tokens["z"], tokens["y"]
    scored = y != -100
    root = Path(paths["root"])
    np.save(root / "rows_z.npy", z[scored])
    np.save(root / "rows_y.npy", y[scored])
    a = run_json(paths["z"], paths["y"], "--logits", "--top-k", "3")
    b = run_json(str(root / "rows_z.npy"), str(root / "rows_y.npy"), "--logits", "--top-k", "3")
    for key in ("cross_entropy_nats", "perplexity", "accuracy", "top_k_accuracy", "brier", "ece"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12)
    assert a["calibration"] == b["calibration"]
    # padding is neither checked nor scored: NaN there (a fully masked row) changes nothing
    np.save(root / "nan_z.npy", np.where(scored[..., None], z, np.float32(np.nan)))
    d = run_json(str(root / "nan_z.npy"), paths["y"], "--logits", "--top-k", "3")
    assert {**d, "predictions": ""} == {**a, "predictions": ""}
    # a NaN in a scored token is named
    bad = z.copy()
    bad[0, 4, 2] = np.nan  # sequence 0 is whole
    np.save(root / "bad_z.npy", bad)
    assert_bad(invoke(str(root / "bad_z.npy"), paths["y"], "--logits"), "row 4, column 3")
    # every token ignored
    np.save(root / "pad.npy", np.full((S, T), -100))
    assert_bad(invoke(paths["z"], str(root / "pad.npy"), "--logits"), "no rows", "ignored")
    # another ignore index: -100 is then a label like any other (and out of range)
    y2 = np.where(scored, y, 0)
    y2[~scored] = V + 5
    np.save(root / "y2.npy", y2)
    c = run_json(paths["z"], str(root / "y2.npy"), "--logits", "--ignore-index", str(V + 5))
    np.testing.assert_allclose(c["cross_entropy_nats"], a["cross_entropy_nats"], rtol=1e-12)
    assert_bad(invoke(paths["z"], str(root / "y2.npy"), "--logits"), "y2.npy")


def test_token_shapes_refused(paths: dict[str, str], tokens: dict[str, np.ndarray]) -> None:
    root = Path(paths["root"])
    np.save(root / "wrong.npy", tokens["y"][:, :-1])
    assert_bad(
        invoke(paths["z"], str(root / "wrong.npy"), "--logits"),
        f"({S}, {T - 1})",
        f"({S}, {T}, {V})",
    )
    np.save(root / "flat.npy", tokens["y"].ravel())
    assert_bad(invoke(paths["z"], str(root / "flat.npy"), "--logits"), f"({S * T},)")
    np.savetxt(root / "y.csv", tokens["y"], fmt="%d", delimiter=",")
    assert_bad(invoke(paths["z"], str(root / "y.csv"), "--logits"), "not CSV")
    assert_bad(invoke(paths["z"], paths["y"], "--logits", "--multilabel"), "--multilabel")
    np.save(root / "four.npy", np.zeros((2, 2, 2, 2)))
    assert_bad(invoke(str(root / "four.npy"), paths["y"]), "3-D")


def test_mapped_source_releases_pages(tmp_path: Path) -> None:
    """The map of an NPY file reads the same rows with or without the page release."""
    x = np.arange(5000 * 7, dtype=np.float32).reshape(50, 100, 7)
    np.save(tmp_path / "x.npy", x)
    size = (tmp_path / "x.npy").stat().st_size
    for release in (True, False):
        source = MappedArraySource(tmp_path / "x.npy", "x.npy", size)
        source.release = release
        got = []
        while (block := source.read(333)) is not None:
            got.append(block[0])
        source.close()
        np.testing.assert_array_equal(np.concatenate(got), x.reshape(-1, 7))
        assert got[0].dtype == np.float32


def test_bounded_memory_mmap(tmp_path: Path) -> None:
    """A ~96 MB NPY token file: the peak RSS grows by far less than the file (the pages read
    are given back), and by about the file without the release."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc")
    script = textwrap.dedent(
        f"""
        import contextlib, io, sys
        import numpy as np
        from crossentropy.cli.app import app
        from crossentropy.cli.compute import MappedArraySource
        MappedArraySource.release = sys.argv[1] == "1"
        S, T, V = 64, 512, 768
        z = np.lib.format.open_memmap({str(tmp_path / "z.npy")!r}, mode="w+",
                                      dtype=np.float32, shape=(S, T, V))
        rng = np.random.default_rng(0)
        for s in range(S):
            z[s] = rng.standard_normal((T, V), dtype=np.float32)
        z.flush()
        del z
        y = rng.integers(0, V, size=(S, T))
        y[:, -7:] = -100
        np.save({str(tmp_path / "y.npy")!r}, y)
        # the warm-up reads a few chunks of the same width: the buffers of one chunk are
        # then allocated already, and only what grows with the file is measured
        np.save({str(tmp_path / "wz.npy")!r}, np.zeros((4, T, V), np.float32))
        np.save({str(tmp_path / "wy.npy")!r}, np.zeros((4, T), np.int64))

        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

        try:  # warm up: imports, first calls, the buffers of a chunk
            with contextlib.redirect_stdout(io.StringIO()):
                app(["compute", {str(tmp_path / "wz.npy")!r}, {str(tmp_path / "wy.npy")!r},
                     "--logits", "--format", "json"], prog_name="crossentropy")
        except SystemExit:
            pass
        before = hwm()
        try:
            app(["compute", {str(tmp_path / "z.npy")!r}, {str(tmp_path / "y.npy")!r},
                 "--logits", "--format", "json"], prog_name="crossentropy")
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print("RESULT", before, hwm(), file=sys.stderr)
        """
    )
    grown = {}
    for release in ("1", "0"):
        proc = subprocess.run(
            [sys.executable, "-c", script, release], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr
        before, after = (int(v) for v in proc.stderr.split("RESULT")[1].split())
        assert json.loads(proc.stdout)["rows"] == 64 * (512 - 7)
        grown[release] = after - before
    size = (tmp_path / "z.npy").stat().st_size
    assert grown["1"] < size // 4, (grown, size)
    assert grown["0"] > size // 2, (grown, size)  # the release is what bounds it
