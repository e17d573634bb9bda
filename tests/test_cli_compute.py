"""Tests of ``crossentropy compute`` and of :mod:`crossentropy.report`.

The numbers are checked against scikit-learn (``log_loss``, ``brier_score_loss``,
``accuracy_score``, ``hamming_loss``), the library's own loss functions and independent float64
NumPy computations, on generated data saved as CSV, NPY and NPZ. Streaming with tiny chunks
gives the one-shot numbers, a ~100 MB CSV is processed in bounded memory, and the readers are
fuzzed with malformed files.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, brier_score_loss, hamming_loss, log_loss
from typer.testing import CliRunner

import crossentropy as ce
from crossentropy.cli.app import app
from crossentropy.report import ECE_BINS, compute_report

ENV = {"COLUMNS": "120", "NO_COLOR": "1"}
N, C = 257, 5


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["compute", *args], env=ENV)


def run_json(*args: str) -> dict[str, Any]:
    result = invoke(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def assert_bad(result: Any, *fragments: str) -> str:
    """Exit 2, nothing on stdout, one line on stderr without a traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crossentropy compute: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return str(lines[0])


def save(path: Path, array: np.ndarray, key: str = "arr") -> str:
    """Save ``array`` as CSV (exact round trip), NPY or NPZ by the extension of ``path``."""
    if path.suffix == ".csv":
        fmt = "%d" if array.dtype.kind in "iu" else "%.17g"
        np.savetxt(path, array.reshape(array.shape[0], -1), delimiter=",", fmt=fmt)
    elif path.suffix == ".npy":
        np.save(path, array)
    else:
        np.savez_compressed(path, **{key: array})
    return str(path)


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_ece(confidence: np.ndarray, right: np.ndarray, bins: int = ECE_BINS) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (confidence > lo) & (confidence <= hi)
        if lo == 0.0:
            inside |= confidence == 0.0
        if inside.any():
            total += inside.mean() * abs(right[inside].mean() - confidence[inside].mean())
    return float(total)


def worst_rows(loss: np.ndarray, k: int = 10) -> list[int]:
    return [int(i) for i in np.lexsort((np.arange(len(loss)), -loss))[:k]]


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    z = rng.normal(size=(N, C)) * 2.5
    y = rng.integers(0, C, size=N)
    y[:C] = np.arange(C)  # every class present
    zm = rng.normal(size=(N, C)) * 2.0
    ym = (rng.random((N, C)) < 0.4).astype(np.int64)
    return {"z": z, "p": np_softmax(z), "y": y, "zm": zm, "pm": 1 / (1 + np.exp(-zm)), "ym": ym}


# ------------------------------------------------------------------------------------------
# agreement with scikit-learn and the library
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "npy", "npz"])
@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
@pytest.mark.parametrize("onehot", [False, True], ids=["ids", "onehot"])
def test_multiclass_agrees(
    tmp_path: Path, data: dict[str, np.ndarray], fmt: str, logits: bool, onehot: bool
) -> None:
    z, p, y = data["z"], data["p"], data["y"]
    x = z if logits else p
    labels = np.eye(C, dtype=np.int64)[y] if onehot else y
    pred_file = save(tmp_path / f"pred.{fmt}", x)
    label_file = save(tmp_path / f"labels.{fmt}", labels)
    args = [pred_file, label_file, *(["--logits"] if logits else [])]
    r = run_json(*args)

    loss = -np.log(p[np.arange(N), y])
    assert r["rows"] == N and r["num_classes"] == C
    np.testing.assert_allclose(r["cross_entropy_nats"], log_loss(y, p, labels=range(C)), rtol=1e-12)
    np.testing.assert_allclose(
        r["cross_entropy_nats"], float(ce.sparse_softmax_cross_entropy(z, y)), rtol=1e-12
    )
    np.testing.assert_allclose(r["cross_entropy_bits"], loss.mean() / np.log(2), rtol=1e-12)
    np.testing.assert_allclose(r["perplexity"], np.exp(loss.mean()), rtol=1e-12)
    assert r["accuracy"] == accuracy_score(y, p.argmax(axis=1))
    np.testing.assert_allclose(
        r["brier"], brier_score_loss(y, p, labels=range(C), scale_by_half=False), rtol=1e-12
    )
    np.testing.assert_allclose(
        r["ece"], np_ece(p.max(axis=1), (p.argmax(axis=1) == y).astype(float)), rtol=1e-12
    )
    for k, cls in enumerate(r["classes"]):
        mine = y == k
        assert cls["count"] == int(mine.sum())
        np.testing.assert_allclose(cls["cross_entropy"], loss[mine].mean(), rtol=1e-12)
        np.testing.assert_allclose(cls["accuracy"], (p[mine].argmax(axis=1) == k).mean())
    assert [w["row"] for w in r["worst"]] == worst_rows(loss)
    np.testing.assert_allclose([w["loss"] for w in r["worst"]], np.sort(loss)[::-1][:10])
    assert sum(b["count"] for b in r["calibration"]) == N


@pytest.mark.parametrize("fmt", ["csv", "npy", "npz"])
@pytest.mark.parametrize("logits", [False, True], ids=["probs", "logits"])
def test_multilabel_agrees(
    tmp_path: Path, data: dict[str, np.ndarray], fmt: str, logits: bool
) -> None:
    zm, pm, ym = data["zm"], data["pm"], data["ym"]
    pred_file = save(tmp_path / f"pred.{fmt}", zm if logits else pm)
    label_file = save(tmp_path / f"labels.{fmt}", ym)
    r = run_json(pred_file, label_file, "--multilabel", *(["--logits"] if logits else []))

    per_label = [log_loss(ym[:, j], pm[:, j], labels=[0, 1]) for j in range(C)]
    np.testing.assert_allclose(r["cross_entropy_nats"], np.mean(per_label), rtol=1e-10)
    np.testing.assert_allclose(
        r["cross_entropy_nats"], float(ce.sigmoid_cross_entropy(zm, ym.astype(float))), rtol=1e-10
    )
    np.testing.assert_allclose(
        r["cross_entropy_nats"], float(ce.binary_cross_entropy(pm, ym.astype(float))), rtol=1e-10
    )
    brier = np.mean([brier_score_loss(ym[:, j], pm[:, j]) for j in range(C)])
    np.testing.assert_allclose(r["brier"], brier, rtol=1e-10)
    assert r["accuracy"] == accuracy_score(ym, (pm > 0.5).astype(int))
    np.testing.assert_allclose(r["element_accuracy"], 1 - hamming_loss(ym, (pm > 0.5).astype(int)))
    right = ((pm > 0.5) == (ym == 1)).astype(float)
    np.testing.assert_allclose(r["ece"], np_ece(np.maximum(pm, 1 - pm).ravel(), right.ravel()))
    elem = -(ym * np.log(pm) + (1 - ym) * np.log1p(-pm))
    for j, cls in enumerate(r["classes"]):
        assert cls["count"] == int(ym[:, j].sum())
        np.testing.assert_allclose(cls["cross_entropy"], per_label[j], rtol=1e-10)
    assert [w["row"] for w in r["worst"]] == worst_rows(elem.mean(axis=1))


def test_binary_single_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    p = rng.random(100)
    y = (rng.random(100) < p).astype(np.int64)
    r = run_json(save(tmp_path / "p.npy", p), save(tmp_path / "y.csv", y), "--multilabel")
    np.testing.assert_allclose(r["cross_entropy_nats"], log_loss(y, p), rtol=1e-12)
    np.testing.assert_allclose(r["brier"], brier_score_loss(y, p), rtol=1e-12)
    assert r["accuracy"] == accuracy_score(y, p > 0.5)


def test_normalize(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    scaled = data["p"] * np.linspace(0.5, 3.0, N)[:, None]
    pred = save(tmp_path / "p.csv", scaled)
    labels = save(tmp_path / "y.csv", data["y"])
    assert_bad(invoke(pred, labels), "--normalize", "line 1")
    r = run_json(pred, labels, "--normalize")
    np.testing.assert_allclose(r["cross_entropy_nats"], log_loss(data["y"], data["p"]), rtol=1e-12)


def test_text_output(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    pred = save(tmp_path / "z.npy", data["z"])
    labels = save(tmp_path / "y.npy", data["y"])
    result = invoke(pred, labels, "--logits")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    for word in ("cross entropy", "perplexity", "Brier", "ECE", "Per class", "Worst 10 rows"):
        assert word in result.stdout
    nats = float(ce.sparse_softmax_cross_entropy(data["z"], data["y"]))
    assert f"{nats:.6g}" in result.stdout


def test_npz_members_and_header(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    both = tmp_path / "both.npz"
    np.savez(both, logits=data["z"], labels=data["y"], other=np.zeros(3))
    r1 = run_json(str(both), str(both), "--logits")
    r2 = run_json(f"{both}:logits", f"{both}:labels", "--logits")
    assert r1 == {**r2, "predictions": str(both), "labels": str(both)}
    csv = tmp_path / "y.csv"
    csv.write_text("label\n" + "\n".join(str(v) for v in data["y"]) + "\n\n")
    r3 = run_json(f"{both}:logits", str(csv), "--logits")
    assert r3["cross_entropy_nats"] == r2["cross_entropy_nats"]
    assert_bad(invoke(f"{both}:nope", str(csv)), "nope")
    three = tmp_path / "three.npz"
    np.savez(three, a=data["z"], b=data["z"])
    assert_bad(invoke(str(three), str(csv)), "NAME")


# ------------------------------------------------------------------------------------------
# streaming
# ------------------------------------------------------------------------------------------


def _close(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for u, v in zip(a, b, strict=True):
            _close(u, v)
    elif isinstance(a, float):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    else:
        assert a == b


@pytest.mark.parametrize("fmt", ["csv", "npy", "npz"])
@pytest.mark.parametrize("multilabel", [False, True], ids=["multiclass", "multilabel"])
def test_streaming_matches_one_shot(
    tmp_path: Path, data: dict[str, np.ndarray], fmt: str, multilabel: bool
) -> None:
    z, y = (data["zm"], data["ym"]) if multilabel else (data["z"], data["y"])
    # ties across chunk borders: the worst rows must not depend on the chunking
    z = np.vstack([z, z[:20]])
    y = np.concatenate([y, y[:20]])
    pred = save(tmp_path / f"z.{fmt}", z)
    labels = save(tmp_path / f"y.{fmt}", y)
    flags = ["--logits", *(["--multilabel"] if multilabel else [])]
    whole = run_json(pred, labels, *flags)
    for chunk in ("1", "3", "64"):
        _close(run_json(pred, labels, *flags, "--chunk-size", chunk, "--worst", "10"), whole)
    for rows in (None, 1, 5):
        report = compute_report(z, y, logits=True, multilabel=multilabel, chunk_rows=rows)
        _close(report.cross_entropy_nats, whole["cross_entropy_nats"])
        _close(report.ece, whole["ece"])
        assert [(w.row, w.loss) for w in report.worst] == [
            (w["row"], w["loss"]) for w in whole["worst"]
        ]


def test_bounded_memory(tmp_path: Path) -> None:
    """~100 MB of CSV: the peak RSS grows by far less than the file."""
    script = textwrap.dedent(
        f"""
        import contextlib, io, sys
        import numpy as np
        rng = np.random.default_rng(0)
        z = rng.normal(size=(20000, 8))
        block = "\\n".join(",".join(f"{{v:.8f}}" for v in row) for row in z) + "\\n"
        labels = "\\n".join(str(v) for v in rng.integers(0, 8, 20000)) + "\\n"
        target = 100 << 20
        reps = target // len(block) + 1
        with open({str(tmp_path / "z.csv")!r}, "w") as f:
            for _ in range(reps):
                f.write(block)
        with open({str(tmp_path / "y.csv")!r}, "w") as f:
            for _ in range(reps):
                f.write(labels)
        del block, labels, z
        from crossentropy.cli.app import app

        def hwm():
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024

        with open({str(tmp_path / "w.csv")!r}, "w") as f:
            f.write("1,2\\n3,4\\n")
        with open({str(tmp_path / "wy.csv")!r}, "w") as f:
            f.write("0\\n1\\n")
        try:  # warm up: imports and first calls, so that only the data's memory is measured
            with contextlib.redirect_stdout(io.StringIO()):
                app(["compute", {str(tmp_path / "w.csv")!r}, {str(tmp_path / "wy.csv")!r},
                     "--logits", "--format", "json"], prog_name="crossentropy")
        except SystemExit:
            pass
        before = hwm()
        try:
            app(["compute", {str(tmp_path / "z.csv")!r}, {str(tmp_path / "y.csv")!r},
                 "--logits", "--format", "json"], prog_name="crossentropy")
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print("RESULT", before, hwm(), reps * 20000, file=sys.stderr)
        """
    )
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc")
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    before, after, rows = (int(v) for v in proc.stderr.split("RESULT")[1].split())
    size = (tmp_path / "z.csv").stat().st_size
    assert size > 90 << 20
    assert json.loads(proc.stdout)["rows"] == rows
    assert after - before < size // 4, (after - before, size)


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------


def test_bad_input_messages(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    p, y = data["p"][:6], data["y"][:6]
    pred = save(tmp_path / "p.csv", p)
    labels = save(tmp_path / "y.csv", y)
    assert_bad(invoke(str(tmp_path / "missing.csv"), labels), "missing.csv", "no such file")
    assert_bad(invoke(pred, str(tmp_path / "nope.npy")), "nope.npy")

    lines = Path(pred).read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([*lines[:3], "0.1,0.2,x,0.3,0.4", *lines[4:]]) + "\n")
    assert_bad(invoke(str(bad), labels), "bad.csv", "line 4, column 3", "'x'")
    bad.write_text("\n".join([*lines[:2], "0.1,0.2", *lines[3:]]) + "\n")
    assert_bad(invoke(str(bad), labels), "bad.csv", "line 3", "2 column(s), expected 5")
    bad.write_text("\n".join([*lines[:1], "0.1,0.2,,0.3,0.4", *lines[2:]]) + "\n")
    assert_bad(invoke(str(bad), labels), "line 2, column 3", "empty")
    bad.write_text("\n".join([*lines[:4], "0.1,0.2,nan,0.3,0.4", *lines[5:]]) + "\n")
    assert_bad(invoke(str(bad), labels), "line 5, column 3", "NaN")
    bad.write_text("\n".join([*lines[:4], "0.1,0.2,1.5,0.3,0.4", *lines[5:]]) + "\n")
    assert_bad(invoke(str(bad), labels), "line 5, column 3", "outside [0, 1]", "--normalize")
    bad.write_text("\n".join([*lines[:4], "0.1,0.2,-0.1,0.3,0.4", *lines[5:]]) + "\n")
    assert_bad(invoke(str(bad), labels), "line 5, column 3", "negative")

    assert_bad(invoke(pred, save(tmp_path / "short.csv", y[:4])), "fewer rows")
    assert_bad(invoke(pred, save(tmp_path / "long.csv", data["y"][:8])), "more rows")
    assert_bad(invoke(pred, save(tmp_path / "big.csv", np.full(6, C))), "line 1", "[0, 5)")
    assert_bad(invoke(pred, save(tmp_path / "frac.csv", y + 0.5)), "is not a class id")
    assert_bad(invoke(pred, save(tmp_path / "oh.npy", np.eye(C + 1)[y])), "6 columns", "5 classes")
    twohot = np.eye(C)[y]
    twohot[2, (y[2] + 1) % C] = 1
    assert_bad(invoke(pred, save(tmp_path / "two.npy", twohot)), "row 2", "--multilabel")
    nan_npy = data["z"][:6].copy()
    nan_npy[3, 1] = np.nan
    assert_bad(invoke(save(tmp_path / "n.npy", nan_npy), labels, "--logits"), "row 3, column 2")
    assert_bad(invoke(save(tmp_path / "one.npy", p[:, 0]), labels), "--multilabel")
    (tmp_path / "e.csv").write_text("\n\n")
    assert_bad(invoke(str(tmp_path / "e.csv"), labels), "no rows")
    assert_bad(invoke(save(tmp_path / "s.npy", np.array(["a"] * 6)), labels), "dtype")
    assert_bad(invoke(pred, labels, "--logits", "--normalize"), "--normalize")
    (tmp_path / "trunc.npy").write_bytes(Path(save(tmp_path / "t.npy", p)).read_bytes()[:-9])
    assert_bad(invoke(str(tmp_path / "trunc.npy"), labels), "trunc.npy")


# ------------------------------------------------------------------------------------------
# fuzzing the readers
# ------------------------------------------------------------------------------------------

GOOD = "0.2,0.3,0.5\n0.1,0.1,0.8\n0.6,0.2,0.2\n"
TOKENS = ["0.2", "0.5", "1", "0", "-1", "nan", "inf", "x", "", " ", "1e400", "0x1", '"0.3"', "1_0"]


def _check_outcome(result: Any) -> None:
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stdout == ""
    else:
        json.loads(result.stdout)


@st.composite
def mangled_csv(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "rows", "truncate", "empty"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "empty":
        return draw(st.sampled_from([b"", b"\n", b"\n\n  \n", b"a,b,c\n"]))
    if kind == "truncate":
        return GOOD.encode()[: draw(st.integers(0, len(GOOD)))]
    rows = draw(
        st.lists(
            st.lists(st.sampled_from(TOKENS), min_size=0, max_size=5).map(",".join),
            min_size=0,
            max_size=5,
        )
    )
    return ("\n".join(rows) + draw(st.sampled_from(["", "\n", "\r\n"]))).encode()


@settings(max_examples=120)
@given(content=mangled_csv(), labels_first=st.booleans())
def test_fuzz_csv(
    tmp_path_factory: pytest.TempPathFactory, content: bytes, labels_first: bool
) -> None:
    d = tmp_path_factory.mktemp("fuzz")
    good_pred = d / "good.csv"
    good_pred.write_text(GOOD)
    good_labels = d / "labels.csv"
    good_labels.write_text("2\n2\n0\n")
    bad = d / "bad.csv"
    bad.write_bytes(content)
    args = [str(good_pred), str(bad)] if labels_first else [str(bad), str(good_labels)]
    _check_outcome(invoke(*args, "--format", "json"))
    _check_outcome(invoke(*args, "--format", "json", "--logits", "--multilabel"))


@settings(max_examples=60)
@given(
    cut=st.integers(0, 400),
    flip=st.integers(0, 400),
    value=st.integers(0, 255),
    suffix=st.sampled_from([".npy", ".npz"]),
)
def test_fuzz_binary(
    tmp_path_factory: pytest.TempPathFactory, cut: int, flip: int, value: int, suffix: str
) -> None:
    d = tmp_path_factory.mktemp("fuzzb")
    rng = np.random.default_rng(0)
    p = np_softmax(rng.normal(size=(4, 3)))
    path = d / f"p{suffix}"
    if suffix == ".npy":
        np.save(path, p)
    else:
        np.savez(path, p=p)
    raw = bytearray(path.read_bytes())
    if flip < len(raw):
        raw[flip] = value
    path.write_bytes(bytes(raw[: max(cut, 0)] if cut < len(raw) else raw))
    labels = d / "y.csv"
    labels.write_text("0\n1\n2\n0\n")
    _check_outcome(invoke(str(path), str(labels), "--format", "json"))
    _check_outcome(invoke(str(path), str(labels), "--format", "json", "--logits"))


# ------------------------------------------------------------------------------------------
# the report's options: top-k, calibration, bootstrap, ignore index, figure, JSON and HTML
# ------------------------------------------------------------------------------------------


def torch_calibration(p: np.ndarray, y: np.ndarray, bins: int, norm: str) -> float:
    """torchmetrics' calibration error of the top label, in float64 (its ``_ce_compute`` on
    float64 confidences; the public class casts them to float32)."""
    import torch
    from torchmetrics.functional.classification.calibration_error import _ce_compute

    confidence = torch.from_numpy(p.max(axis=1))
    right = torch.from_numpy((p.argmax(axis=1) == y).astype(np.float64))
    return float(_ce_compute(confidence, right, bins, norm=norm))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, data: dict[str, np.ndarray]) -> dict[str, str]:
    root = tmp_path_factory.mktemp("options")
    return {
        "p": save(root / "p.npy", data["p"]),
        "z": save(root / "z.npy", data["z"]),
        "y": save(root / "y.npy", data["y"]),
        "pm": save(root / "pm.npy", data["pm"]),
        "ym": save(root / "ym.npy", data["ym"]),
        "y_csv": save(root / "y.csv", data["y"]),
    }


@pytest.mark.parametrize("k", [1, 2, 4])
def test_top_k(files: dict[str, str], data: dict[str, np.ndarray], k: int) -> None:
    from sklearn.metrics import top_k_accuracy_score

    r = run_json(files["p"], files["y"], "--top-k", str(k))
    assert r["top_k"] == k
    expected = top_k_accuracy_score(data["y"], data["p"], k=k, labels=range(C))
    np.testing.assert_allclose(r["top_k_accuracy"], expected, rtol=1e-12)
    assert_bad(invoke(files["p"], files["y"], "--top-k", str(C)), "--top-k", f"has {C}")
    assert_bad(invoke(files["p"], files["y"], "--top-k", "0"), "--top-k")


@pytest.mark.parametrize("bins", [1, 7, 15, 40])
def test_calibration_matches_torchmetrics(
    files: dict[str, str], data: dict[str, np.ndarray], bins: int
) -> None:
    import torch
    from torchmetrics.classification import MulticlassCalibrationError

    p, y = data["p"], data["y"]
    r = run_json(files["p"], files["y"], "--bins", str(bins))
    assert r["bins"] == bins and r["binning"] == "uniform"
    assert len(r["calibration"]) == bins
    for key, norm in (("ece", "l1"), ("rmsce", "l2"), ("mce", "max")):
        np.testing.assert_allclose(r[key], torch_calibration(p, y, bins, norm), rtol=1e-12)
        metric = MulticlassCalibrationError(num_classes=C, n_bins=bins, norm=norm)
        public = float(metric(torch.from_numpy(p), torch.from_numpy(y)))
        np.testing.assert_allclose(r[key], public, rtol=1e-5)  # float32 inside torchmetrics
    # classwise: the mean over classes of each one-vs-rest column's binned calibration error
    edges = np.linspace(0.0, 1.0, bins + 1)
    per_class = []
    for k in range(C):
        col, hit = p[:, k], (y == k).astype(float)
        total = 0.0
        for b in range(bins):
            inside = (col > edges[b]) & (col <= edges[b + 1])
            if b == 0:
                inside |= col == 0
            if inside.any():
                total += inside.mean() * abs(hit[inside].mean() - col[inside].mean())
        per_class.append(total)
    np.testing.assert_allclose(r["classwise_ece"], np.mean(per_class), rtol=1e-10)
    np.testing.assert_allclose([c["ece"] for c in r["classes"]], per_class, rtol=1e-10)


def test_quantile_bins(files: dict[str, str], data: dict[str, np.ndarray]) -> None:
    r = run_json(files["p"], files["y"], "--binning", "quantile", "--bins", "8")
    assert r["binning"] == "quantile"
    counts = [b["count"] for b in r["calibration"]]
    assert sum(counts) == N
    # equal mass: distinct random confidences fill each bin with N / 8 rows, give or take one
    assert max(counts) - min(counts) <= 2, counts
    confidence = data["p"].max(axis=1)
    right = data["p"].argmax(axis=1) == data["y"]
    ece = 0.0
    for b in r["calibration"]:
        inside = (confidence > b["lower"]) & (confidence <= b["upper"])
        if b["lower"] == r["calibration"][0]["lower"]:
            inside |= confidence == b["lower"]
        assert inside.sum() == b["count"]
        ece += inside.mean() * abs(right[inside].mean() - confidence[inside].mean())
    np.testing.assert_allclose(r["ece"], ece, rtol=1e-12)


def test_bootstrap(files: dict[str, str]) -> None:
    args = [files["p"], files["y"], "--bootstrap", "200"]
    a = run_json(*args, "--seed", "3")
    b = run_json(*args, "--seed", "3")
    c = run_json(*args, "--seed", "4")
    assert a == b  # reproducible for a seed
    u, v = a["uncertainty"], c["uncertainty"]
    assert (u["replicates"], u["seed"], u["level"]) == (200, 3, 0.95)
    assert u["cross_entropy"] != v["cross_entropy"]  # another seed, other resamples
    for key, metric in (("cross_entropy", "cross_entropy_nats"), ("accuracy", "accuracy")):
        assert u[key]["low"] < a[metric] < u[key]["high"]
    wide = run_json(*args, "--seed", "3", "--ci", "0.99")["uncertainty"]["cross_entropy"]
    assert wide["low"] <= u["cross_entropy"]["low"] and wide["high"] >= u["cross_entropy"]["high"]
    text = invoke(*args, "--seed", "3")
    assert text.exit_code == 0, text.output
    iv = a["uncertainty"]["cross_entropy"]
    assert f"[{iv['low']:.4g}, {iv['high']:.4g}]" in text.stdout
    assert "200 replicates" in text.stdout
    assert run_json(files["p"], files["y"])["uncertainty"] is None


def test_quantile_bootstrap_two_passes(files: dict[str, str], tmp_path: Path) -> None:
    """Quantile edges from a first pass, then the bootstrap over them: the bins are those of
    the one-pass quantile report; standard input cannot be read twice."""
    one = run_json(files["p"], files["y"], "--binning", "quantile", "--bins", "6")
    two = run_json(
        files["p"], files["y"], "--binning", "quantile", "--bins", "6", "--bootstrap", "50"
    )
    _close(two["calibration"], one["calibration"])  # the same edges (sums in another order)
    _close(two["ece"], one["ece"])
    assert two["uncertainty"]["replicates"] == 50
    data = Path(files["p"]).read_bytes()
    result = CliRunner().invoke(
        app,
        ["compute", "-", files["y"], "--binning", "quantile", "--bootstrap", "5"],
        input=data,
        env=ENV,
    )
    assert_bad(result, "reads the input twice", "standard input")
    # one pass reads standard input
    result = CliRunner().invoke(
        app, ["compute", "-", files["y"], "--bootstrap", "5", "--format", "json"], input=data
    )
    assert result.exit_code == 0, result.output


def test_ignore_index(tmp_path: Path, data: dict[str, np.ndarray]) -> None:
    z, y = data["z"], data["y"].copy()
    drop = np.zeros(N, dtype=bool)
    drop[::7] = True
    y[drop] = 3  # a class id, ignored
    y_ignored = y.copy()
    y_ignored[drop] = -1
    full = run_json(
        save(tmp_path / "z.npy", z),
        save(tmp_path / "y.csv", y_ignored),
        "--logits",
        "--ignore-index",
        "-1",
        "--top-k",
        "2",
    )
    kept = run_json(
        save(tmp_path / "zk.npy", z[~drop]),
        save(tmp_path / "yk.csv", y[~drop]),
        "--logits",
        "--top-k",
        "2",
    )
    assert full["ignored"] == int(drop.sum()) and kept["ignored"] == 0
    assert full["rows"] == kept["rows"] == int((~drop).sum())
    for key in (
        "cross_entropy_nats",
        "accuracy",
        "brier",
        "ece",
        "rmsce",
        "mce",
        "classwise_ece",
        "top_k_accuracy",
        "calibration",
        "classes",
    ):
        _close(full[key], kept[key])
    # an ignored label that is also a class id: the rows of class 3 are skipped
    r3 = run_json(
        str(tmp_path / "z.npy"),
        save(tmp_path / "y3.csv", data["y"]),
        "--logits",
        "--ignore-index",
        "3",
    )
    assert r3["ignored"] == int((data["y"] == 3).sum())
    assert r3["classes"][3]["count"] == 0
    onehot = save(tmp_path / "oh.npy", np.eye(C, dtype=np.int64)[data["y"]])
    assert_bad(
        invoke(str(tmp_path / "z.npy"), onehot, "--logits", "--ignore-index", "-1"),
        "--ignore-index",
        "one-hot",
    )
    assert_bad(
        invoke(str(tmp_path / "z.npy"), onehot, "--multilabel", "--ignore-index", "0"),
        "--ignore-index",
        "--multilabel",
    )


def test_figure(tmp_path: Path, files: dict[str, str]) -> None:
    from xml.etree import ElementTree

    from PIL import Image

    from crossentropy.report import compute_report
    from crossentropy.viz.reliability import reliability_figure

    png, svg = tmp_path / "r.png", tmp_path / "r.svg"
    r = run_json(files["p"], files["y"], "--figure", str(png), "--bootstrap", "20")
    with Image.open(png) as image:
        image.verify()
        assert image.format == "PNG"
    run_json(files["p"], files["y"], "--figure", str(svg))
    root = ElementTree.parse(svg).getroot()
    assert root.tag.endswith("svg")
    # the bars are the report's bins
    report = compute_report(np.load(files["p"]), np.load(files["y"]), bootstrap=20)
    fig = reliability_figure(report)
    top, bottom = fig.axes
    heights = [p.get_height() for p in top.patches if p.get_gid() == "accuracy"]
    counts = [p.get_height() for p in bottom.patches if p.get_gid() == "count"]
    shown = [b for b in r["calibration"] if b["count"]]
    np.testing.assert_allclose(heights, [b["accuracy"] for b in shown], rtol=1e-12)
    assert counts == [b["count"] for b in shown]
    assert f"{r['ece']:.4f}" in top.get_title() and "[" in top.get_title()
    assert_bad(
        invoke(files["p"], files["y"], "--figure", str(tmp_path / "r.pdf")),
        "--figure",
        ".png or .svg",
    )
    assert_bad(
        invoke(files["p"], files["y"], "--figure", str(tmp_path / "no" / "r.png")),
        "--figure",
        "no such directory",
    )


def test_figure_without_matplotlib(files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for module in [m for m in sys.modules if m.startswith("crossentropy.viz")]:
        monkeypatch.delitem(sys.modules, module)
    assert_bad(
        invoke(files["p"], files["y"], "--figure", "x.png"), "--figure", "crossentropy[plot]"
    )
    page = invoke(files["p"], files["y"], "--format", "html")
    assert page.exit_code == 0, page.output
    assert "needs matplotlib" in page.stdout


def test_json_every_field(files: dict[str, str]) -> None:
    from dataclasses import fields

    from crossentropy.report import Report

    r = run_json(files["p"], files["y"], "--top-k", "2", "--bootstrap", "10")
    for f in fields(Report):
        assert f.name in r
    for key in ("predictions", "labels", "brier_definition"):  # the keys of before
        assert key in r
    assert r["uncertainty"]["ece"]["low"] <= r["uncertainty"]["ece"]["high"]


def test_html(files: dict[str, str], data: dict[str, np.ndarray], tmp_path: Path) -> None:
    import re
    from html.parser import HTMLParser

    class Tables(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tables = 0
            self.svg = 0
            self.cells: list[str] = []
            self.in_cell = False

        def handle_starttag(self, tag: str, attrs: Any) -> None:
            self.tables += tag == "table"
            self.svg += tag == "svg"
            self.in_cell = tag == "td"

        def handle_endtag(self, tag: str) -> None:
            self.in_cell = False if tag == "td" else self.in_cell

        def handle_data(self, text: str) -> None:
            if self.in_cell:
                self.cells.append(text)

    weird = tmp_path / "<b>&p.npy"
    save(weird, data["p"])
    result = invoke(str(weird), files["y"], "--format", "html", "--bootstrap", "20")
    assert result.exit_code == 0, result.output
    page = result.stdout
    parser = Tables()
    parser.feed(page)
    assert parser.tables >= 4  # summary, calibration, per class, worst rows
    assert parser.svg == 1
    assert not re.search(r"https?://", page)
    assert "<link" not in page and "<script" not in page and "src=" not in page
    assert "<b>&p.npy" not in page and "&lt;b&gt;&amp;p.npy" in page
    r = run_json(str(weird), files["y"], "--bootstrap", "20")
    iv = r["uncertainty"]["cross_entropy"]
    from crossentropy.cli.report_html import format_interval
    from crossentropy.report import Interval

    shown = format_interval(r["cross_entropy_nats"], Interval(iv["low"], iv["high"]))
    assert shown in parser.cells


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--bins", "0"], ["--bins"]),
        (["--bins", "10001"], ["--bins"]),
        (["--binning", "log"], ["--binning"]),
        (["--bootstrap", "-1"], ["--bootstrap"]),
        (["--bootstrap", "100001"], ["--bootstrap"]),
        (["--seed", "-1"], ["--seed"]),
        (["--seed", str(1 << 63)], ["--seed"]),
        (["--ci", "1"], ["--ci", "(0, 1)"]),
        (["--ci", "0"], ["--ci"]),
        (["--ci", "nan"], ["--ci"]),
        (["--ignore-index", "x"], ["--ignore-index"]),
        (["--format", "pdf"], ["--format"]),
        (["--top-k", "2", "--multilabel"], ["--top-k", "--multilabel"]),
    ],
)
def test_bad_options(files: dict[str, str], args: list[str], fragments: list[str]) -> None:
    assert_bad(invoke(files["p"], files["y"], *args), *fragments)


def test_dask_refuses_stdin(files: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app, ["compute", "-", files["y"], "--dask", "tcp://127.0.0.1:1"], input=b"", env=ENV
    )
    assert_bad(result, "--dask", "standard input")
