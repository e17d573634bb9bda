"""examples/vocab_parallel_train.py on one host: its checkpoints and resuming from them.

A run of one rank (plain python, env:// rendezvous on loopback) is quick; one torchrun run
with two ranks resumes a one-rank checkpoint (the slices re-cut from the whole weight).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "vocab_parallel_train.py"
TINY = ["--vocabulary", "96", "--hidden", "8", "--batch", "4", "--length", "8"]
RUN_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(args: list[str], *, ranks: int = 1) -> subprocess.CompletedProcess[str]:
    """The example with ``args`` (after TINY): one rank directly, or torchrun on loopback."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    if ranks == 1:
        env.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
        command = [sys.executable, str(SCRIPT)]
    else:
        torchrun = Path(sys.executable).parent / "torchrun"
        command = [
            *(
                [str(torchrun)]
                if torchrun.exists()
                else [sys.executable, "-m", "torch.distributed.run"]
            ),
            "--standalone",
            f"--nproc_per_node={ranks}",
            str(SCRIPT),
        ]
    return subprocess.run(
        [*command, *TINY, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_S,
        start_new_session=True,
    )


def held_out(done: subprocess.CompletedProcess[str]) -> float:
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.findall(r"held-out loss (\d+\.\d+)", done.stdout)
    assert found, done.stdout
    return float(found[-1])


def test_a_resumed_run_ends_with_the_uninterrupted_loss(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.pt"
    whole = run(["--steps", "8"])
    first = run(["--steps", "5", "--checkpoint", str(checkpoint), "--checkpoint-every", "2"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert "checkpoint: step 3 written" in first.stdout
    assert not (tmp_path / "run.pt.tmp").exists()  # written beside, then renamed over
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["step"] == 3 and saved["world"] == 1
    assert saved["vocabulary"] == 96 and saved["hidden"] == 8
    assert saved["head"].shape == (96, 8)
    moments = saved["optimizer"]["state"][len(saved["optimizer"]["param_groups"][0]["params"]) - 1]
    assert moments["exp_avg"].shape == moments["exp_avg_sq"].shape == (96, 8)

    resumed = run(["--steps", "8", "--checkpoint", str(checkpoint), "--checkpoint-every", "2"])
    assert "resumed from" in resumed.stdout and "at step 4" in resumed.stdout
    # the same ranks, the same arithmetic: the same loss to the last printed digit
    assert held_out(resumed) == held_out(whole)

    # two ranks resume the one-rank checkpoint: each takes its slice of the whole weight
    two = run(["--steps", "8", "--checkpoint", str(checkpoint)], ranks=2)
    assert "resumed from" in two.stdout, two.stdout
    assert held_out(two) == pytest.approx(held_out(whole), abs=1e-5)


def test_a_checkpoint_of_another_shape_is_refused(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.pt"
    done = run(["--steps", "2", "--checkpoint", str(checkpoint), "--checkpoint-every", "2"])
    assert done.returncode == 0, done.stderr[-3000:]
    other = run(["--steps", "4", "--checkpoint", str(checkpoint), "--hidden", "16"])
    assert other.returncode != 0
    assert "was made with --hidden 8, this run has --hidden 16" in other.stderr, other.stderr
