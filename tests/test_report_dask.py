"""The Dask report: the same numbers as compute_report, on a cluster of worker processes.

One LocalCluster of two single-threaded worker processes for the whole module (it is slow to
start), so every accumulator is pickled between processes on its way to the client.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

from crossentropy.cli.app import app  # noqa: E402
from crossentropy.report import BadValue, ReportAccumulator, compute_report  # noqa: E402
from crossentropy.report.on_dask import dask_report, report_files  # noqa: E402


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    ) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    """The default client: dask_report runs on the cluster."""
    with distributed.Client(cluster) as c:
        yield c


# --------------------------------------------------------------------------------------------
# Data and comparison
# --------------------------------------------------------------------------------------------


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _single(n: int = 140, c: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(scale=2.0, size=(n, c)), rng.integers(0, c, n)


def _tokens(s: int = 12, t: int = 9, v: int = 6, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=2.0, size=(s, t, v))
    y = rng.integers(0, v, (s, t))
    lengths = rng.integers(1, t + 1, s)
    y[np.arange(t)[None, :] >= lengths[:, None]] = -100  # padding at the end of each sequence
    return x, y


def _same(a: Any, b: Any, path: str = "report") -> None:
    """Counts, flags and bins exactly; floats to 1e-12 relative."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), path
        for f in dataclasses.fields(a):
            _same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b, strict=True)):
            _same(u, v, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert isinstance(b, float), path
        assert math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-14) or a == b, (path, a, b)
    else:
        assert a == b, (path, a, b)


def _chunked(x: np.ndarray, rows: tuple[int, ...], inner: int | None = None) -> Any:
    chunks = (rows, *(inner or s for s in x.shape[1:]))
    return da.from_array(x, chunks=chunks)


UNEVEN = (7, 100, 33)

# --------------------------------------------------------------------------------------------
# dask_report == compute_report
# --------------------------------------------------------------------------------------------

CASES = {
    "logits": {"logits": True},
    "logits-top2-worst5": {"logits": True, "top_k": 2, "worst": 5},
    "quantile": {"logits": True, "binning": "quantile", "bins": 7},
    "bootstrap": {"logits": True, "bootstrap": 20, "seed": 3},
    "quantile-bootstrap": {"logits": True, "binning": "quantile", "bins": 6, "bootstrap": 16},
    "probabilities": {"logits": False},
}


@pytest.mark.parametrize("name", CASES)
def test_single_label_matches_compute_report(client: Any, name: str) -> None:
    options = CASES[name]
    x, y = _single()
    if not options["logits"]:
        x = _softmax(x)
    expected = compute_report(x, y, **options)
    got = dask_report(_chunked(x, UNEVEN), da.from_array(y, chunks=50), **options)
    _same(got, expected)
    if options.get("bootstrap"):
        assert got.uncertainty is not None


def test_normalize_matches_compute_report(client: Any) -> None:
    x, y = _single(seed=3)
    scores = _softmax(x) * np.linspace(0.5, 4.0, len(y))[:, None]  # rows not summing to 1
    expected = compute_report(scores, y, normalize=True, bins=8)
    got = dask_report(_chunked(scores, UNEVEN), da.from_array(y), normalize=True, bins=8)
    _same(got, expected)
    # every row is off: the first one of whichever block fails first
    # (a row of a later block has an entry above 1: that message names its column)
    with pytest.raises(
        BadValue, match=r"^row (0|7|107)(: probabilities sum to|, column \d+: probability)"
    ):
        dask_report(_chunked(scores, UNEVEN), da.from_array(y))


def test_one_hot_labels_and_split_columns(client: Any) -> None:
    x, ids = _single(seed=5)
    onehot = np.eye(x.shape[1])[ids]
    expected = compute_report(x, onehot, logits=True)
    # columns split in two chunks: rechunked to whole rows
    got = dask_report(
        _chunked(x, UNEVEN, inner=3), _chunked(onehot, (70, 70), inner=2), logits=True
    )
    _same(got, expected)


@pytest.mark.parametrize("logits", [True, False])
def test_multilabel_matches_compute_report(client: Any, logits: bool) -> None:
    rng = np.random.default_rng(7)
    z = rng.normal(size=(140, 4))
    x = z if logits else 1.0 / (1.0 + np.exp(-z))
    y = (rng.random((140, 4)) < 0.4).astype(np.int64)
    expected = compute_report(x, y, logits=logits, multilabel=True, bins=10)
    got = dask_report(
        _chunked(x, UNEVEN), _chunked(y, (140,)), logits=logits, multilabel=True, bins=10
    )
    _same(got, expected)


@pytest.mark.parametrize(
    ("options", "chunks"),
    [
        ({"logits": True, "ignore_index": -100}, ((5, 2, 5), 9, 6)),
        ({"logits": True, "ignore_index": -100, "bootstrap": 12, "top_k": 3}, ((1, 4, 7), 9, 6)),
        # tokens and vocabulary split: rechunked to whole sequences
        ({"logits": True, "ignore_index": -100, "worst": 30}, ((5, 2, 5), (4, 5), (3, 3))),
    ],
)
def test_tokens_match_compute_report(
    client: Any, options: dict[str, Any], chunks: tuple[Any, ...]
) -> None:
    x, y = _tokens()
    expected = compute_report(x, y, **options)
    got = dask_report(da.from_array(x, chunks=chunks), da.from_array(y, chunks=(6, 9)), **options)
    _same(got, expected)
    assert got.ignored == int((y == -100).sum()) > 0


@pytest.mark.parametrize("rows", [(140,), (35, 35, 35, 35), (1, 2, 3, 134), UNEVEN])
def test_chunking_does_not_change_the_report(client: Any, rows: tuple[int, ...]) -> None:
    x, y = _single(seed=11)
    reference = dask_report(_chunked(x, UNEVEN), da.from_array(y), logits=True, worst=7)
    got = dask_report(_chunked(x, rows), da.from_array(y, chunks=20), logits=True, worst=7)
    _same(got, reference)


def test_worst_rows_carry_global_indices(client: Any) -> None:
    x, y = _single(seed=13)
    # the float64 formula: -log softmax(x)[y]
    z = x - x.max(axis=1, keepdims=True)
    loss = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]
    order = np.argsort(-loss, kind="stable")[:4]
    got = dask_report(_chunked(x, UNEVEN), da.from_array(y, chunks=UNEVEN), logits=True, worst=4)
    assert [w.row for w in got.worst] == order.tolist()
    assert max(order) >= 7  # the worst rows are not all in the first block
    for w, i in zip(got.worst, order, strict=True):
        assert math.isclose(w.loss, loss[i], rel_tol=1e-12)
    assert math.isclose(got.cross_entropy_nats, loss.mean(), rel_tol=1e-12)


def test_split_every_does_not_change_the_report(client: Any) -> None:
    x, y = _single(seed=17)
    rows = (10,) * 14
    a = dask_report(_chunked(x, rows), da.from_array(y), logits=True, split_every=2)
    b = dask_report(_chunked(x, rows), da.from_array(y), logits=True, split_every=14)
    _same(a, b)


def test_accumulator_pickles() -> None:
    """What travels between workers: an accumulator, with its first_row, bins and bootstrap."""
    x, y = _single(seed=19)
    acc = ReportAccumulator(
        5, logits=True, bins=6, top_k=2, bootstrap=8, seed=1, first_row=1000, worst=3
    )
    acc.update(x, y)
    copy = pickle.loads(pickle.dumps(acc))
    _same(copy.result(), acc.result())
    assert copy.result().worst[0].row >= 1000


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "column", "what"),
    [(3, 2, "predictions"), (120, 4, "predictions"), (107, None, "labels")],
)
def test_bad_value_names_the_global_row(client: Any, row: int, column: Any, what: str) -> None:
    x, y = _single()
    if what == "predictions":
        x[row, column] = np.nan
    else:
        y[row] = 9  # not a class id of 5 classes
    with pytest.raises(ValueError, match=rf"^row {row}\b") as info:
        dask_report(_chunked(x, UNEVEN), da.from_array(y, chunks=UNEVEN), logits=True)
    assert isinstance(info.value, BadValue)
    assert info.value.row == row
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_bad_token_names_sequence_and_token(client: Any) -> None:
    x, y = _tokens()
    x[7, 4, 1] = np.inf
    y[7, 4] = 2  # a scored token (a padded one might not be checked)
    with pytest.raises(ValueError, match=r"^row 67 \(sequence 7, token 4\), column 1: infinite"):
        dask_report(
            da.from_array(x, chunks=(5, 9, 6)), da.from_array(y), logits=True, ignore_index=-100
        )


def test_every_row_ignored(client: Any) -> None:
    x, _ = _single(n=30)
    with pytest.raises(ValueError, match=r"^no rows: .*\(30 rows ignored\)") as info:
        dask_report(
            _chunked(x, (10, 20)), da.from_array(np.full(30, -100)), logits=True, ignore_index=-100
        )
    assert info.value.__suppress_context__


@pytest.mark.parametrize(
    ("x", "y", "kind", "message"),
    [
        (np.zeros((4, 3)), np.zeros(5, dtype=int), ValueError, "labels: expected 4 rows"),
        (np.zeros((4, 3)), np.zeros((4, 2)), ValueError, "labels: expected 1 or 3 columns"),
        (np.zeros(4), np.zeros(4), ValueError, "predictions: expected"),
        (np.zeros((2, 3, 4)), np.zeros((2, 4)), ValueError, r"labels: token predictions"),
        (np.zeros((0, 3)), np.zeros(0), ValueError, "predictions: no rows"),
        (np.array([["a", "b"]]), np.zeros(1), TypeError, "predictions: expected floats"),
        (np.zeros((1, 2)), np.array(["x"]), TypeError, "labels: expected integers"),
    ],
)
def test_bad_shapes_and_dtypes(x: Any, y: Any, kind: type, message: str) -> None:
    with pytest.raises(kind, match=message):
        dask_report(da.from_array(x), da.from_array(y))


def test_bad_options() -> None:
    x, y = da.from_array(np.eye(3)), da.from_array(np.arange(3))
    with pytest.raises(ValueError, match="split_every"):
        dask_report(x, y, split_every=1)
    with pytest.raises(TypeError, match="logits"):
        dask_report(x, y, logits="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="worst"):
        dask_report(x, y, worst=-1)
    with pytest.raises(ValueError, match="multilabel"):
        dask_report(da.zeros((2, 3, 4)), da.zeros((2, 3), dtype=int), multilabel=True)


def test_missing_dask_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask", None)
    with pytest.raises(ImportError, match=r"pip install 'crossentropy\[dask\]'"):
        dask_report(np.eye(2), np.arange(2))
    with pytest.raises(ImportError, match=r"crossentropy\[dask\]"):
        report_files("local", "*.npy", "*.npy")
    monkeypatch.delitem(sys.modules, "dask")
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"distributed: pip install 'crossentropy\[dask\]'"):
        report_files("local", "*.npy", "*.npy")


# --------------------------------------------------------------------------------------------
# report_files
# --------------------------------------------------------------------------------------------


def _shards(
    root: Path, x: np.ndarray, y: np.ndarray, sizes: list[int], name: str = "shard"
) -> tuple[str, str]:
    (root / "p").mkdir()
    (root / "l").mkdir()
    start = 0
    for i, n in enumerate(sizes):
        np.save(root / "p" / f"{name}-{i:03d}.npy", x[start : start + n])
        np.save(root / "l" / f"{name}-{i:03d}.npy", y[start : start + n])
        start += n
    assert start == len(x)
    return str(root / "p" / "*.npy"), str(root / "l" / "*.npy")


SIZES = [30, 0, 45, 25, 40]


def test_files_match_compute_report(cluster: Any, tmp_path: Path) -> None:
    x, y = _single()
    pred, lab = _shards(tmp_path, x, y, SIZES)
    options = {"logits": True, "top_k": 2, "bootstrap": 10, "binning": "quantile", "bins": 5}
    with dask.config.set({"array.chunk-size": "1KiB"}):  # several blocks per file
        got = report_files(cluster.scheduler_address, pred, lab, **options)
    _same(got, compute_report(x, y, **options))


def test_token_files_match_compute_report(cluster: Any, tmp_path: Path) -> None:
    x, y = _tokens(s=14)
    pred, lab = _shards(tmp_path, x.astype(np.float32), y.astype(np.int32), [4, 6, 4])
    got = report_files(cluster.scheduler_address, pred, lab, logits=True, ignore_index=-100)
    _same(got, compute_report(x.astype(np.float32), y, logits=True, ignore_index=-100))


def test_command_on_the_cluster_gives_the_local_report(cluster: Any, tmp_path: Path) -> None:
    """`crossentropy compute --dask ADDRESS 'p/*.npy' 'l/*.npy'`, as a user runs it, gives
    the report `compute` gives on the concatenated files."""
    x, y = _tokens(s=10)
    pred, lab = _shards(tmp_path, x.astype(np.float32), y.astype(np.int64), [3, 3, 4])
    whole_x, whole_y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(whole_x, x.astype(np.float32))
    np.save(whole_y, y.astype(np.int64))
    common = ["--logits", "--top-k", "3", "--bootstrap", "20", "--seed", "4", "--format", "json"]
    runner = CliRunner()
    on_dask = runner.invoke(
        app, ["compute", "--dask", cluster.scheduler_address, pred, lab, *common]
    )
    assert on_dask.exit_code == 0, on_dask.output
    local = runner.invoke(app, ["compute", str(whole_x), str(whole_y), *common])
    assert local.exit_code == 0, local.output
    a, b = json.loads(on_dask.stdout), json.loads(local.stdout)
    assert a["rows"] == b["rows"] and a["ignored"] == b["ignored"] > 0
    assert [w["row"] for w in a["worst"]] == [w["row"] for w in b["worst"]]
    for key in ("cross_entropy_nats", "accuracy", "top_k_accuracy", "brier", "ece", "rmsce"):
        assert a[key] == pytest.approx(b[key], rel=1e-12), key
    assert a["uncertainty"]["ece"]["low"] == pytest.approx(
        b["uncertainty"]["ece"]["low"], rel=1e-12
    )
    assert a["sequences"]["perplexity_quantiles"] == pytest.approx(
        b["sequences"]["perplexity_quantiles"], rel=1e-12
    )


def test_files_on_a_local_cluster(tmp_path: Path) -> None:
    x, y = _single(n=60, seed=23)
    pred, lab = _shards(tmp_path, _softmax(x), y, [20, 40])
    _same(report_files("local", pred, lab), compute_report(_softmax(x), y))


def test_nan_in_shard_3_names_the_global_row_and_the_file(cluster: Any, tmp_path: Path) -> None:
    x, y = _single()
    x[30 + 45 + 11, 2] = np.nan  # row 11 of shard 3 (shard 1 is empty)
    pred, lab = _shards(tmp_path, x, y, SIZES)
    with pytest.raises(ValueError, match=r"^row 86, row 11 of .*shard-003\.npy, column 2: NaN"):
        report_files(cluster.scheduler_address, pred, lab, logits=True)


def test_file_errors(cluster: Any, tmp_path: Path) -> None:
    x, y = _single(n=20)
    pred, lab = _shards(tmp_path, x, y, [10, 10])
    address = cluster.scheduler_address
    with pytest.raises(ValueError, match="predictions_pattern: no file matches"):
        report_files(address, str(tmp_path / "none-*.npy"), lab)
    with pytest.raises(ValueError, match="labels_pattern: no file matches"):
        report_files(address, pred, str(tmp_path / "l" / "*.npz"))
    np.save(tmp_path / "l" / "shard-002.npy", y[:3])
    with pytest.raises(ValueError, match=r"matches 2 file.* but labels_pattern 3"):
        report_files(address, pred, lab)
    (tmp_path / "l" / "shard-002.npy").unlink()
    np.save(tmp_path / "l" / "shard-001.npy", y[:9])
    with pytest.raises(ValueError, match=r"shard-001\.npy has shape \(9,\) but its predictions"):
        report_files(address, pred, lab)
    np.save(tmp_path / "l" / "shard-001.npy", np.eye(5)[y[:10]])
    with pytest.raises(ValueError, match=r"labels_pattern: .* has shape \(10, 5\) but"):
        report_files(address, pred, lab)
    (tmp_path / "l" / "shard-001.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="is not a readable NPY file"):
        report_files(address, pred, lab)


def test_unreachable_scheduler(tmp_path: Path) -> None:
    x, y = _single(n=10)
    pred, lab = _shards(tmp_path, x, y, [10])
    with pytest.raises(ConnectionError, match=r"cannot connect to 'tcp://127\.0\.0\.1:1'"):
        report_files("tcp://127.0.0.1:1", pred, lab, timeout=1)
    with pytest.raises(TypeError, match="scheduler: expected an address"):
        report_files("", pred, lab)


def test_bad_label_after_ignored_rows_names_its_row(client: Any) -> None:
    x, y = _single()
    y[100:106] = -100
    y[106] = 9  # not a class id, after ignored rows of the same block (rows 7 to 106)
    with pytest.raises(BadValue, match=r"^row 106, column 0: label 9"):
        dask_report(
            _chunked(x, UNEVEN), da.from_array(y, chunks=UNEVEN), logits=True, ignore_index=-100
        )
