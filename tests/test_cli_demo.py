"""Tests of ``crossentropy demo``, run as its user runs it.

A short run prints the summary table (its numbers read back against the run's own
``summary.json``) and where the report is; each bad option or ``--out`` is one line on stderr
with exit status 2 and creates nothing; a missing extra names the extra to install; a real
SIGINT to a running ``crossentropy demo`` leaves complete logs and checkpoint, exits 130 with
the command that resumes it, and resuming ends with the same numbers as a run never
interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from typer.testing import CliRunner

from crossentropy.cli.app import app
from crossentropy.demo import CHECKPOINT_NAME, load_checkpoint

WIDE = {"COLUMNS": "120", "NO_COLOR": "1", "TTY_COMPATIBLE": None, "FORCE_COLOR": None}
SRC = str(Path(__file__).resolve().parents[1] / "src")


def invoke(*args: str, **env: str | None) -> Any:
    return CliRunner().invoke(app, ["demo", *args], env={**WIDE, **env})


def one_line_error(result: Any) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return str(lines[0])


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = invoke("--epochs", "2", "--out", str(out), "--losses", "ce,mse,ce-smooth")
    return out, result


def test_run_prints_the_summary_and_the_report(short_run: tuple[Path, Any]) -> None:
    out, result = short_run
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # not a terminal: no progress bars
    lines = result.stdout.splitlines()
    assert lines[-1] == f"report: {out / 'report.html'}"
    assert lines[-2] == f"metrics: {out / 'metrics.csv'}"
    assert (out / "report.html").is_file() and (out / "curves.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    for row in summary["summary"]:
        (printed,) = [line.split() for line in lines if line.split()[:1] == [row["loss"]]]
        reached = row["epochs_to_target"]
        assert printed[1:] == [
            f"{row['val_accuracy']:.2%}",
            f"{row['val_loss']:.4f}",
            f"{row['val_cross_entropy']:.4f}",
            str(reached) if reached is not None else "never",
            f"{row['first_epoch_grad_norm']:.4f}",
        ]
    assert any(line.startswith("Epochs to 90% validation accuracy") for line in lines)


def test_progress_bars_on_a_terminal_and_quiet(tmp_path: Path) -> None:
    shown = invoke("--epochs", "1", "--out", str(tmp_path / "a"), TTY_COMPATIBLE="1")
    assert shown.exit_code == 0, shown.output
    for text in ("cross entropy", "MSE on the probabilities", "epoch 1/1", "val acc"):
        assert text in shown.stderr, shown.stderr
    quiet = invoke("--epochs", "1", "--out", str(tmp_path / "b"), "-q", TTY_COMPATIBLE="1")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    # the same numbers either way
    a, b = (tmp_path / name / "metrics.csv" for name in "ab")
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "mnist"], "--dataset: expected one of digits, breast-cancer; got 'mnist'"),
        (["--model", "cnn"], "--model: expected one of linear, mlp; got 'cnn'"),
        (["--losses", "ce,hinge"], "--losses: expected names from ce, mse, ce-smooth"),
        (["--logger", "neptune"], "--logger: expected one of tensorboard, wandb; got 'neptune'"),
        (["--epochs", "0"], "--epochs: expected an integer in [1, 100000]; got 0"),
        (["--epochs", "ten"], "Invalid value for '--epochs'"),
        (["--lr", "0"], "--lr: expected a number in (0, 1e+06]; got 0.0"),
        (["--lr", "-0.5"], "--lr: expected a number in (0, 1e+06]; got -0.5"),
        (["--lr", "nan"], "--lr: expected a number in (0, 1e+06]; got nan"),
        (["--batch-size", "0"], "--batch-size: expected an integer in [1, 1048576]; got 0"),
        (["--frobnicate"], "No such option: --frobnicate"),
    ],
)
def test_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "never"
    line = one_line_error(invoke(*args, "--out", str(out)))
    assert line.startswith("crossentropy demo: error: ") and message in line, line
    assert not out.exists()


def test_bad_out(tmp_path: Path, short_run: tuple[Path, Any]) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a directory")
    line = one_line_error(invoke("--out", str(a_file / "run")))  # its parent is a file
    assert f"--out: cannot write to '{a_file / 'run'}'" in line
    line = one_line_error(invoke("--out", str(a_file)))
    assert f"--out: '{a_file}' exists and is not a directory" in line
    done, _ = short_run
    line = one_line_error(invoke("--out", str(done)))
    assert f"already holds a demo run; continue it with --resume {done}" in line
    assert a_file.read_text() == "not a directory"


def test_bad_resume(tmp_path: Path, short_run: tuple[Path, Any]) -> None:
    line = one_line_error(invoke("--resume", str(tmp_path)))
    assert f"--resume '{tmp_path}': checkpoint: no file" in line
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"garbage")
    assert "is not a demo checkpoint" in one_line_error(invoke("--resume", str(tmp_path)))
    done, _ = short_run
    line = one_line_error(invoke("--resume", str(done), "--lr", "0.1", "--seed", "3"))
    assert "--resume continues with the run's saved settings; drop --lr, --seed" in line
    line = one_line_error(invoke("--resume", str(done), "--epochs", "1"))
    assert "has already trained 2 epochs; got 1" in line
    line = one_line_error(invoke("--resume", str(done), "--epochs", "99999999999999999999999"))
    assert line.startswith("crossentropy demo: error: --epochs: expected an integer in [1, "), line


def test_missing_wandb_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    line = one_line_error(invoke("--out", str(tmp_path / "run"), "--logger", "wandb"))
    assert "--logger wandb needs wandb, which is not installed" in line
    assert "pip install crossentropy[wandb]" in line


def test_missing_demo_extra_names_it(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['sklearn'] = None\n"
        "from crossentropy.cli import main\n"
        f"sys.argv = ['crossentropy', 'demo', '--out', {str(tmp_path / 'run')!r}]\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "crossentropy demo: error: the demo needs sklearn, which is not installed: "
        "pip install crossentropy[demo]"
    )


def test_ctrl_c_then_resume(tmp_path: Path) -> None:
    """A real SIGINT to a running ``crossentropy demo``, then ``--resume``."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": SRC, "COLUMNS": "120"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossentropy.cli", "demo", "--out", str(out), "--epochs", "500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:  # safe to read while it is rewritten: replaced atomically
                if load_checkpoint(out / CHECKPOINT_NAME)["epoch"] >= 1:
                    break
            except ValueError:  # not written yet
                pass
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    done = load_checkpoint(out / CHECKPOINT_NAME)["epoch"]
    assert 1 <= done < 500
    assert stderr.splitlines() == [
        f"crossentropy demo: interrupted; epoch {done} of 500 is saved in {out}; "
        f"continue with: crossentropy demo --resume {out}"
    ]
    text = (out / "metrics.csv").read_text()
    assert text.endswith("\n")
    epochs = [int(line.split(",")[0]) for line in text.splitlines()[1:]]
    assert all(len(line.split(",")) == 8 for line in text.splitlines())
    assert epochs[: 2 * (done + 1)] == [e for e in range(done + 1) for _ in (0, 1)]
    assert not (out / "report.html").exists()
    # resume to one epoch past the checkpoint, and compare with a run never interrupted
    resumed = invoke("--resume", str(out), "--epochs", str(done + 1), "-q")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.splitlines()[-1] == f"report: {out / 'report.html'}"
    straight = invoke("--out", str(tmp_path / "straight"), "--epochs", str(done + 1), "-q")
    assert straight.exit_code == 0, straight.output
    for name in ("metrics.csv", "summary.json", "report.html"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
