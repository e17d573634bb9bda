"""Tests of :mod:`crossentropy.demo`: the data, the losses, the training loop, the logs.

Every number is checked against an independent reference: scikit-learn's StandardScaler for
the standardisation, float64 NumPy formulas for the losses and their gradients at the
logits, a NumPy float64 re-implementation of SGD on softmax regression for the training
loop. Reproducibility and resumption are checked bit for bit (file bytes, exact tensors);
the TensorBoard and Weights & Biases logs are read back with TensorBoard's event reader and
with wandb's own protobuf records, and compared with the CSV.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

import torch
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.preprocessing import StandardScaler

import crossentropy.demo.run as demo_run
from crossentropy.demo import (
    CHECKPOINT_NAME,
    FIELDS,
    LABEL_SMOOTHING,
    METRICS,
    DemoConfig,
    EpochRecord,
    Trainer,
    deterministic,
    load_checkpoint,
    load_dataset,
    make_model,
    objective,
    prepare_out,
    run_demo,
    save_checkpoint,
    story,
    summarize,
)
from crossentropy.demo.train import batch_order

ALL_LOSSES = ("ce", "mse", "ce-smooth")


# ------------------------------------------------------------------------------------------
# Readers: the CSV, TensorBoard's event files, a wandb offline run
# ------------------------------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == FIELDS
    out = []
    for row in rows[1:]:
        assert len(row) == len(FIELDS), row
        values: dict[str, Any] = {"epoch": int(row[0]), "loss": row[1]}
        values.update({name: float(v) for name, v in zip(FIELDS[2:], row[2:], strict=True)})
        out.append(values)
    return out


def read_tensorboard(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {
        tag: [(event.step, event.value) for event in acc.Scalars(tag)]
        for tag in acc.Tags()["scalars"]
    }


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a ``.wandb`` file.

    The file is wandb's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0),
    then LevelDB-log framing in 32 KiB blocks (each chunk: CRC-32 of its type byte and data,
    length, type FULL/FIRST/MIDDLE/LAST); each record is a ``wandb_internal_pb2.Record``.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0)
    block, pos, parts, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block too short for a header: padding
            pos += block - pos % block
            continue
        checksum, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:  # zero padding at the end of a block
            pos += block - pos % block
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum
        pos += 7 + length
        parts = chunk if kind in (1, 2) else parts + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(parts)
            records.append(record)
    return records


def wandb_history(run_dir: Path) -> list[dict[str, Any]]:
    """Every history row logged in every offline run under ``run_dir/wandb``, oldest first."""
    rows = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "history":
                rows.append(
                    {
                        item.key or "/".join(item.nested_key): json.loads(item.value_json)
                        for item in record.history.item
                    }
                )
    return rows


def by_key(rows: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    return {(row["epoch"], row["loss"]): row for row in rows}


# ------------------------------------------------------------------------------------------
# NumPy references
# ------------------------------------------------------------------------------------------


def softmax64(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid64(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def loss_and_grad64(name: str, z: np.ndarray, y: np.ndarray, binary: bool):
    """Per-example losses and their gradients at the logits, float64, from the formulas."""
    if binary:
        s = sigmoid64(z[:, 0])
        t = y.astype(np.float64)
        if name == "ce-smooth":
            t = (1 - LABEL_SMOOTHING) * t + LABEL_SMOOTHING / 2
        if name == "mse":
            return (s - t) ** 2, (2 * (s - t) * s * (1 - s))[:, None]
        loss = -(t * np.log(s) + (1 - t) * np.log1p(-s))
        return loss, (s - t)[:, None]
    p = softmax64(z)
    onehot = np.eye(z.shape[1])[y]
    if name == "mse":
        g = 2 * (p - onehot)
        jac_g = p * g - p * (p * g).sum(axis=1, keepdims=True)  # (diag(p) - p p^T) g
        return ((p - onehot) ** 2).sum(axis=1), jac_g
    t = onehot if name == "ce" else (1 - LABEL_SMOOTHING) * onehot + LABEL_SMOOTHING / z.shape[1]
    return -(t * np.log(p)).sum(axis=1), p - t


# ------------------------------------------------------------------------------------------
# Data and losses
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "loader", "features", "classes"),
    [("digits", load_digits, 64, 10), ("breast-cancer", load_breast_cancer, 30, 2)],
)
def test_dataset_split_and_standardisation(
    name: str, loader: Callable[..., Any], features: int, classes: int
) -> None:
    data = load_dataset(name)
    x, y = loader(return_X_y=True)
    n_val = int(np.ceil(0.2 * len(y)))
    assert data.x_val.shape == (n_val, features) and data.x_train.shape[1] == features
    assert data.x_train.shape[0] + n_val == len(y) and data.n_classes == classes
    assert data.binary == (classes == 2)
    # stratified: each class's share of the validation rows is its share overall, +-1 row
    for c in range(classes):
        assert abs(int((data.y_val == c).sum()) - n_val * np.mean(y == c)) <= 1
    # the split is fixed; the same rows come back every time
    again = load_dataset(name)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_val, data.y_val)

    # find each row among the originals (undoing the standardisation, to float32 rounding)
    def originals(rows: Any) -> np.ndarray:
        from scipy.spatial import cKDTree

        raw = rows.double().numpy() * data.scale + data.mean
        _, nearest = cKDTree(x / data.scale).query(raw / data.scale)
        np.testing.assert_allclose(raw, x[nearest], rtol=1e-5, atol=1e-4)
        return x[nearest]

    train_raw, val_raw = originals(data.x_train), originals(data.x_val)
    # the two parts are a partition of the data set's rows
    together = np.concatenate([train_raw, val_raw])
    np.testing.assert_array_equal(together[np.lexsort(together.T)], x[np.lexsort(x.T)])
    # standardised with the training rows' statistics only (scikit-learn's scaler as oracle)
    scaler = StandardScaler().fit(train_raw)
    np.testing.assert_allclose(data.x_train.numpy(), scaler.transform(train_raw), atol=3e-6)
    np.testing.assert_allclose(data.x_val.numpy(), scaler.transform(val_raw), atol=3e-6)


@pytest.mark.parametrize("binary", [False, True], ids=["softmax", "sigmoid"])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_objective_and_its_gradient_at_the_logits(name: str, binary: bool) -> None:
    rng = np.random.default_rng(6)
    n, c = 7, 1 if binary else 5
    z = rng.normal(size=(n, c)) * 3
    y = rng.integers(0, 2 if binary else c, size=n)
    logits = torch.tensor(z, requires_grad=True)
    value = objective(name, logits, torch.tensor(y), binary=binary)
    (grad,) = torch.autograd.grad(value, logits)
    value = value.detach()
    want_loss, want_grad = loss_and_grad64(name, z, y, binary)
    np.testing.assert_allclose(float(value), want_loss.mean(), rtol=1e-12)
    # the batch objective is a mean: N times its gradient is each example's own gradient
    np.testing.assert_allclose(grad.numpy() * n, want_grad, rtol=1e-10, atol=1e-14)


def test_config_rejects_bad_values() -> None:
    for kwargs, message in [
        ({"dataset": "mnist"}, "dataset: expected one of digits, breast-cancer; got 'mnist'"),
        ({"model": "cnn"}, "model: expected one of linear, mlp; got 'cnn'"),
        ({"losses": ("ce", "hinge")}, "losses: expected names from ce, mse, ce-smooth"),
        ({"losses": ()}, "losses: expected at least one"),
        ({"losses": ("ce", "ce")}, "losses: expected each loss once"),
        ({"epochs": 0}, "epochs: expected an integer in [1, 100000]; got 0"),
        ({"lr": -0.1}, "lr: expected a number in (0, 1e+06]; got -0.1"),
        ({"lr": float("nan")}, "lr: expected a number in (0, 1e+06]; got nan"),
        ({"batch_size": 0}, "batch_size: expected an integer in [1, 1048576]"),
        ({"lr": 1e39}, "lr: expected a number in (0, 1e+06]; got 1e+39"),
        ({"seed": 2**64}, "seed: expected an integer in [0, 18446744073709551615]"),
        ({"epochs": 10**23}, "epochs: expected an integer in [1, 100000]"),
        ({"batch_size": 2**21}, "batch_size: expected an integer in [1, 1048576]"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            DemoConfig(**kwargs)


# ------------------------------------------------------------------------------------------
# Training: fairness and the numbers
# ------------------------------------------------------------------------------------------


def test_same_start_and_same_batches_for_every_loss() -> None:
    config = DemoConfig(losses=ALL_LOSSES, epochs=2, batch_size=256)
    trainer = Trainer(config)
    models = list(trainer.models.values())
    for model in models[1:]:
        for p, q in zip(model.parameters(), models[0].parameters(), strict=True):
            assert torch.equal(p, q) and p.data_ptr() != q.data_ptr()  # equal, separate copies
    seen: dict[str, list[Any]] = {loss: [] for loss in ALL_LOSSES}
    for loss, model in trainer.models.items():
        model.register_forward_pre_hook(
            lambda _m, args, loss=loss: seen[loss].append(args[0].clone())
        )
    with deterministic():
        start = trainer.start()
        trainer.train_epoch()
        trainer.train_epoch()
    # the initial models are one model: the same predictions
    assert len({(r.val_accuracy, r.val_cross_entropy, r.train_accuracy) for r in start}) == 1
    # every loss saw the same batches in the same order (start, 6 steps, 2 evaluations)...
    reference = seen["ce"]
    for loss in ALL_LOSSES[1:]:
        assert len(seen[loss]) == len(reference)
        assert all(torch.equal(a, b) for a, b in zip(seen[loss], reference, strict=True))
    # ...and each epoch's batches are a permutation of the training rows, drawn anew
    assert not torch.equal(batch_order(0, 1, 100), batch_order(0, 2, 100))
    assert not torch.equal(batch_order(0, 1, 100), batch_order(1, 1, 100))


@pytest.mark.parametrize("dataset", ["digits", "breast-cancer"])
def test_output_gradient_norms_against_the_formulas(dataset: str) -> None:
    # batch_size covers the training set: epoch 1 is one step at the initial weights, so its
    # mean output gradient (taken in the training step) equals epoch 0's (taken apart)
    config = DemoConfig(dataset=dataset, losses=ALL_LOSSES, epochs=1, batch_size=4096)
    trainer = Trainer(config)
    data = trainer.data
    with torch.no_grad():
        z = trainer.models["ce"](data.x_train).double().numpy()
    with deterministic():
        start = trainer.start()
        first = trainer.train_epoch()
    for r0, r1 in zip(start, first, strict=True):
        _, g = loss_and_grad64(r0.loss, z, data.y_train.numpy(), data.binary)
        want = np.linalg.norm(g, axis=1).mean()
        np.testing.assert_allclose(r0.output_grad_norm, want, rtol=2e-5)
        np.testing.assert_allclose(r1.output_grad_norm, want, rtol=2e-5)
    by_loss = {r.loss: r.output_grad_norm for r in start}
    assert by_loss["mse"] < 0.5 * by_loss["ce"]  # the vanishing gradient, at the start


def test_training_loop_matches_numpy_sgd() -> None:
    """One epoch of softmax regression, re-implemented in float64 NumPy from the formulas."""
    config = DemoConfig(model="linear", losses=("ce", "mse"), epochs=1, lr=0.3, batch_size=100)
    trainer = Trainer(config)
    data = trainer.data
    x, y = data.x_train.double().numpy(), data.y_train.numpy()
    w0 = trainer.models["ce"].weight.detach().double().numpy()
    b0 = trainer.models["ce"].bias.detach().double().numpy()
    with deterministic():
        trainer.start()
        records = trainer.train_epoch()
    order = batch_order(config.seed, 1, x.shape[0]).numpy()
    for record in records:
        w, b, norms = w0.copy(), b0.copy(), []
        for start in range(0, len(order), config.batch_size):
            rows = order[start : start + config.batch_size]
            z = x[rows] @ w.T + b
            _, g = loss_and_grad64(record.loss, z, y[rows], False)
            norms.append(np.linalg.norm(g, axis=1))
            w -= config.lr * g.T @ x[rows] / len(rows)
            b -= config.lr * g.mean(axis=0)
        model = trainer.models[record.loss]
        np.testing.assert_allclose(model.weight.detach().numpy(), w, atol=2e-5)
        np.testing.assert_allclose(model.bias.detach().numpy(), b, atol=2e-5)
        np.testing.assert_allclose(record.output_grad_norm, np.concatenate(norms).mean(), 1e-5)
        z_val = data.x_val.double().numpy() @ w.T + b
        loss, _ = loss_and_grad64(record.loss, z_val, data.y_val.numpy(), False)
        np.testing.assert_allclose(record.val_loss, loss.mean(), rtol=1e-5)
        accuracy = np.mean(z_val.argmax(axis=1) == data.y_val.numpy())
        assert abs(record.val_accuracy - accuracy) <= 1 / len(z_val)  # a near tie may flip


def test_deterministic_restores_settings() -> None:
    threads, enabled = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with deterministic(threads=1):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == enabled


def test_models_are_seeded_and_leave_the_global_generator_alone() -> None:
    state = torch.get_rng_state()
    a, b = make_model("linear", 4, 3, seed=1), make_model("linear", 4, 3, seed=1)
    c = make_model("linear", 4, 3, seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)


# ------------------------------------------------------------------------------------------
# A whole run: files, loggers, figure, report
# ------------------------------------------------------------------------------------------

SMALL = DemoConfig(losses=ALL_LOSSES, epochs=3)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = prepare_out(tmp_path_factory.mktemp("demo") / "run")
    return run_demo(SMALL, out, loggers=["tensorboard", "wandb"])


def test_run_writes_its_files(full_run: Any) -> None:
    out = full_run.out
    names = {p.name for p in out.iterdir()}
    assert {"metrics.csv", "checkpoint.pt", "curves.png", "curves.svg", "report.html"} <= names
    assert {"summary.json", "tensorboard", "wandb"} <= names
    assert not any(name.endswith(".tmp") for name in names)
    rows = read_csv(out / "metrics.csv")
    assert [(r["epoch"], r["loss"]) for r in rows] == [
        (e, loss) for e in range(4) for loss in ALL_LOSSES
    ]
    for row, record in zip(rows, full_run.history, strict=True):
        assert row == record.__dict__  # the CSV holds the exact floats (repr round-trips)
    state = load_checkpoint(out / CHECKPOINT_NAME)
    assert state["epoch"] == 3 and state["loggers"] == ["tensorboard", "wandb"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"] == SMALL.to_dict()
    assert [row["loss"] for row in summary["summary"]] == list(ALL_LOSSES)


def test_summary_from_the_csv(full_run: Any) -> None:
    rows = read_csv(full_run.out / "metrics.csv")
    for summary in full_run.rows:
        mine = [r for r in rows if r["loss"] == summary.loss]
        assert summary.val_accuracy == mine[-1]["val_accuracy"]
        assert summary.val_loss == mine[-1]["val_loss"]
        assert summary.val_cross_entropy == mine[-1]["val_cross_entropy"]
        assert summary.first_epoch_grad_norm == mine[1]["output_grad_norm"]
        reached = [r["epoch"] for r in mine if r["val_accuracy"] >= 0.9]
        assert summary.epochs_to_target == (reached[0] if reached else None)
    # the cross entropy run's own loss is the yardstick
    ce_row = next(r for r in full_run.rows if r.loss == "ce")
    assert ce_row.val_loss == ce_row.val_cross_entropy
    sentence = story(full_run.rows)
    assert sentence is not None and "cross entropy" in sentence and "MSE" in sentence


def test_tensorboard_log_reads_back(full_run: Any) -> None:
    scalars = read_tensorboard(full_run.out / "tensorboard")
    assert set(scalars) == {f"{m}/{loss}" for m in METRICS for loss in ALL_LOSSES}
    rows = by_key(read_csv(full_run.out / "metrics.csv"))
    for tag, events in scalars.items():
        metric, loss = tag.split("/")
        assert [step for step, _ in events] == [0, 1, 2, 3]
        for step, value in events:
            assert value == np.float32(rows[(step, loss)][metric])


def test_wandb_offline_run_reads_back(full_run: Any) -> None:
    runs = list(full_run.out.glob("wandb/offline-run-*"))
    assert len(runs) == 1
    history = wandb_history(full_run.out)
    assert [row["_step"] for row in history] == [0, 1, 2, 3]
    rows = by_key(read_csv(full_run.out / "metrics.csv"))
    for row in history:
        for metric in METRICS:
            for loss in ALL_LOSSES:
                assert row[f"{metric}/{loss}"] == rows[(row["_step"], loss)][metric]
    records = wandb_records(next(runs[0].glob("run-*.wandb")))
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["losses"] == {"value": list(ALL_LOSSES)} or config["losses"] == list(ALL_LOSSES)


def test_figure_draws_the_csv(full_run: Any) -> None:
    from crossentropy.demo.figures import PANELS, training_curves_figure

    fig = training_curves_figure(full_run.history, SMALL)
    rows = read_csv(full_run.out / "metrics.csv")
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}
    assert set(lines) == {f"{m}:{loss}" for m, *_ in PANELS for loss in ALL_LOSSES}
    for gid, line in lines.items():
        metric, loss = gid.split(":")
        mine = [r for r in rows if r["loss"] == loss]
        assert list(line.get_xdata()) == [r["epoch"] for r in mine]
        assert list(line.get_ydata()) == [r[metric] for r in mine]


def test_report_is_self_contained(full_run: Any) -> None:
    page = full_run.report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    lowered = page.lower()
    for remote in ("http:", "https:", "//cdn", "<script", "<link", "@import", "url("):
        assert remote not in lowered, remote
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    embedded = base64.b64decode(sources[0].split(",", 1)[1])
    assert embedded == (full_run.out / "curves.png").read_bytes()
    for row in full_run.rows:
        assert f"<td>{row.val_accuracy:.2%}</td>" in page
        assert f"<td>{row.first_epoch_grad_norm:.4f}</td>" in page


# ------------------------------------------------------------------------------------------
# Reproducibility, checkpoints, interruption and resumption
# ------------------------------------------------------------------------------------------

QUICK = DemoConfig(losses=("ce", "mse"), epochs=3, batch_size=64)


def quick_run(out: Path, **kwargs: Any) -> Any:
    return run_demo(QUICK, prepare_out(out), report=False, **kwargs)


def assert_same_run(a: Path, b: Path) -> None:
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    sa, sb = load_checkpoint(a / CHECKPOINT_NAME), load_checkpoint(b / CHECKPOINT_NAME)
    assert sa["epoch"] == sb["epoch"] and sa["history"] == sb["history"]
    for loss in sa["models"]:
        for name, tensor in sa["models"][loss].items():
            assert torch.equal(tensor, sb["models"][loss][name]), (loss, name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    quick_run(out)
    return out


def test_reproducible_bit_for_bit(full_run: Any, reference: Path, tmp_path: Path) -> None:
    quick_run(tmp_path / "again")
    assert_same_run(reference, tmp_path / "again")
    # the full run with its figure and report: the same bytes again
    again = run_demo(SMALL, prepare_out(tmp_path / "full"))
    for name in ("metrics.csv", "summary.json", "curves.svg", "curves.png", "report.html"):
        assert (again.out / name).read_bytes() == (full_run.out / name).read_bytes(), name


class Stop(KeyboardInterrupt):
    """A Ctrl-C raised from inside the run."""


def test_resume_after_ctrl_c_between_epochs(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"

    def stop(epoch: int, records: list[EpochRecord]) -> None:
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        quick_run(out, on_epoch=stop, loggers=["wandb"])
    assert load_checkpoint(out / CHECKPOINT_NAME)["epoch"] == 1
    assert [r["epoch"] for r in read_csv(out / "metrics.csv")] == [0, 0, 1, 1]
    assert [row["_step"] for row in wandb_history(out)] == [0, 1]  # closed on the way out
    run_demo(QUICK, out, resume=True, report=False)  # the saved loggers: wandb again
    assert_same_run(reference, out)
    # the resumed offline run continues the same run id from the next epoch
    files = sorted(out.glob("wandb/offline-run-*/run-*.wandb"))
    ids = [
        record.run.run_id
        for path in files
        for record in wandb_records(path)
        if record.WhichOneof("record_type") == "run"
    ]
    assert len(ids) == 2 and ids[0] == ids[1] == load_checkpoint(out / CHECKPOINT_NAME)["wandb_id"]
    history = wandb_history(out)
    assert [row["_step"] for row in history] == [0, 1, 2, 3]
    rows = by_key(read_csv(out / "metrics.csv"))
    for row in history:
        for loss in QUICK.losses:
            assert row[f"val_accuracy/{loss}"] == rows[(row["_step"], loss)]["val_accuracy"]
            assert row[f"train_loss/{loss}"] == rows[(row["_step"], loss)]["train_loss"]


def test_resume_after_ctrl_c_within_an_epoch(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    steps = []

    def stop(loss: str) -> None:
        steps.append(loss)
        if len(steps) == 2 * 23 + 23 + 10:  # epoch 2, within the mse run (23 steps a loss)
            raise Stop

    with pytest.raises(Stop):
        quick_run(out, on_step=stop)
    assert load_checkpoint(out / CHECKPOINT_NAME)["epoch"] == 1
    assert (out / "metrics.csv").read_text().endswith("\n")
    assert [r["epoch"] for r in read_csv(out / "metrics.csv")] == [0, 0, 1, 1]
    run_demo(QUICK, out, resume=True, report=False)
    assert_same_run(reference, out)


def test_resume_when_ctrl_c_hits_the_checkpoint(
    reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while epoch 2's checkpoint is written: the logs have epoch 2, the checkpoint
    keeps epoch 1 whole; resuming rewrites the CSV, purges TensorBoard's epoch 2 and
    repeats it, and ends as the uninterrupted run."""
    out = tmp_path / "run"
    real_save = demo_run.save_checkpoint

    def torn_save(path: Path, state: dict[str, Any]) -> Path:
        if state["epoch"] == 2:
            path.with_name(path.name + ".tmp").write_bytes(b"half a checkpoint")
            raise Stop
        return real_save(path, state)

    monkeypatch.setattr(demo_run, "save_checkpoint", torn_save)
    with pytest.raises(Stop):
        quick_run(out, loggers=["tensorboard"])
    monkeypatch.setattr(demo_run, "save_checkpoint", real_save)
    assert load_checkpoint(out / CHECKPOINT_NAME)["epoch"] == 1
    assert [r["epoch"] for r in read_csv(out / "metrics.csv")][-1] == 2
    run_demo(QUICK, out, resume=True, report=False)
    assert_same_run(reference, out)
    assert not (out / "checkpoint.pt.tmp").exists()
    scalars = read_tensorboard(out / "tensorboard")
    rows = by_key(read_csv(out / "metrics.csv"))
    for tag, events in scalars.items():
        metric, loss = tag.split("/")
        assert [step for step, _ in events] == [0, 1, 2, 3]
        assert [v for _, v in events] == [np.float32(rows[(s, loss)][metric]) for s in range(4)]


def test_resume_to_more_epochs_equals_a_longer_run(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    short = DemoConfig(**{**QUICK.to_dict(), "losses": QUICK.losses, "epochs": 2})
    run_demo(short, prepare_out(out), report=False)
    run_demo(QUICK, out, resume=True, report=False)  # 2 -> 3 epochs
    assert_same_run(reference, out)


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"format": 1, "epoch": 1, "x": torch.arange(3)})

    def torn(obj: object, handle: Any) -> None:
        handle.write(b"PK\x03\x04 torn")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"format": 1, "epoch": 2, "x": torch.arange(5)})
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["x"], torch.arange(3))
    with pytest.raises(ValueError, match="is not a demo checkpoint"):
        load_checkpoint(tmp_path / "c.pt.tmp")
    with pytest.raises(ValueError, match="no file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_resume_refuses_other_settings(reference: Path) -> None:
    other = DemoConfig(losses=("ce", "mse"), epochs=3, batch_size=64, lr=0.1)
    trainer = Trainer(other)
    with pytest.raises(ValueError, match=r"checkpoint: its lr is 0\.05, this run's is 0\.1"):
        trainer.load_state_dict(load_checkpoint(reference / CHECKPOINT_NAME))
    fewer = DemoConfig(losses=("ce", "mse"), epochs=2, batch_size=64)
    with pytest.raises(ValueError, match="already trained 3 epochs; got 2"):
        run_demo(fewer, reference, resume=True, report=False)


def test_summarize_needs_a_trained_epoch() -> None:
    record = EpochRecord(0, "ce", 1.0, 0.1, 1.0, 0.1, 1.0, 0.5)
    with pytest.raises(ValueError, match="at least one trained epoch of 'ce'"):
        summarize([record], ["ce"])
