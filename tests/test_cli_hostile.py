"""Every command-line option attacked as a hostile user would, and the inputs of ``compute``
that once hung or used gigabytes: each ends with the right result, or one line on stderr that
names the option (or the file), exit status 2, no traceback, no hang, bounded memory.

The CLI runs in a subprocess where memory or a hang is the point (its peak RSS is measured
with ``getrusage(RUSAGE_CHILDREN)`` in a wrapper process, and an address-space limit keeps a
regression from eating the machine), and in Typer's ``CliRunner`` otherwise.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import log_loss
from typer.testing import CliRunner

from crossentropy.cli.app import app

ENV = {"COLUMNS": "120", "NO_COLOR": "1"}
SRC = str(Path(__file__).resolve().parents[1] / "src")

# Runs the CLI in a child under an address-space limit and prints the child's peak RSS (KiB)
# on the last line of stderr: getrusage(RUSAGE_CHILDREN) of this wrapper is that child's.
WRAPPER = """
import resource, subprocess, sys
limit = int(sys.argv[1])
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
proc = subprocess.run(sys.argv[2:], preexec_fn=cap, stdin=subprocess.DEVNULL,
                      capture_output=True, text=True, errors="replace")
sys.stdout.write(proc.stdout)
sys.stderr.write(proc.stderr)
sys.stderr.write(f"\\nPEAK {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n")
sys.exit(proc.returncode)
"""


def cli(
    *args: str, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "crossentropy.cli", *args],
        input=None if stdin is None else stdin.decode("latin-1"),
        capture_output=True,
        text=True,
        encoding="latin-1",
        env=env,
        timeout=timeout,
    )


def cli_peak(*args: str, limit: int = 2 << 30) -> tuple[int, str, str, int]:
    """(exit status, stdout, stderr without the PEAK line, peak RSS in bytes)."""
    env = {**os.environ, **ENV, "PYTHONPATH": SRC}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            WRAPPER,
            str(limit),
            sys.executable,
            "-m",
            "crossentropy.cli",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    err, _, peak = proc.stderr.rpartition("PEAK ")
    return proc.returncode, proc.stdout, err.strip(), int(peak) * 1024


def assert_one_line(code: int, stderr: str, *fragments: str, prefix: str = "crossentropy ") -> str:
    assert code == 2, (code, stderr)
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(prefix), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def expected_nats(p: np.ndarray, y: np.ndarray) -> float:
    return float(log_loss(y, p, labels=list(range(p.shape[1]))))


# ------------------------------------------------------------------------------------------
# compute: binary data and files without line breaks, in bounded memory
# ------------------------------------------------------------------------------------------

MEMORY_BOUND = 300 << 20


@pytest.mark.parametrize("kind", ["sparse-2GB", "no-line-breaks-200MB"])
def test_compute_binary_or_unbroken_file_is_refused_in_bounded_memory(
    tmp_path: Path, kind: str
) -> None:
    big = tmp_path / "big.csv"
    with open(big, "wb") as f:
        if kind == "sparse-2GB":
            f.truncate(2 << 30)  # NUL bytes, no disk used
        else:
            block = b"0.5" * (1 << 20)
            for _ in range(200 // 3):
                f.write(block)
    labels = tmp_path / "y.csv"
    labels.write_text("0\n")
    code, out, err, peak = cli_peak("compute", str(big), str(labels))
    line = assert_one_line(code, err, "big.csv", prefix="crossentropy compute: error: ")
    assert ("NUL" in line) if kind.startswith("sparse") else ("longer than" in line), line
    assert out == ""
    assert peak < MEMORY_BOUND, peak


def test_compute_dev_zero_and_a_late_nul_byte(tmp_path: Path) -> None:
    labels = tmp_path / "y.csv"
    labels.write_text("0\n1\n")
    code, _, err, peak = cli_peak("compute", "/dev/zero", str(labels))
    assert_one_line(code, err, "/dev/zero", "NUL", prefix="crossentropy compute: error: ")
    assert peak < MEMORY_BOUND, peak
    late = tmp_path / "late.csv"
    late.write_bytes(b"0.5,0.5\n0.2,\x000.8\n")
    result = CliRunner().invoke(app, ["compute", str(late), str(labels)], env=ENV)
    assert_one_line(result.exit_code, result.stderr, "line 2", "NUL")


# ------------------------------------------------------------------------------------------
# compute: FIFOs and standard input, opened once
# ------------------------------------------------------------------------------------------

P = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
Y = np.array([2, 1, 0])
CSV = "".join(",".join(f"{v:.17g}" for v in row) + "\n" for row in P)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("fmt", ["csv", "npy"])
def test_compute_reads_a_fifo(tmp_path: Path, fmt: str) -> None:
    fifo = tmp_path / "pred.fifo"
    os.mkfifo(fifo)
    labels = tmp_path / "y.csv"
    labels.write_text("".join(f"{v}\n" for v in Y))
    payload = CSV.encode() if fmt == "csv" else _npy_bytes(P)

    def write() -> None:
        with open(fifo, "wb") as f:  # blocks until the CLI opens the FIFO for reading
            for i in range(0, len(payload), 7):  # in small pieces, as a pipe delivers them
                f.write(payload[i : i + 7])
                f.flush()
                time.sleep(0.001)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        proc = cli("compute", str(fifo), str(labels), "--format", "json", timeout=60)
    finally:
        if writer.is_alive():  # the CLI never opened the FIFO: unblock the writer
            with open(fifo, "rb") as f:
                f.read()
        writer.join(10)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["rows"] == 3
    np.testing.assert_allclose(report["cross_entropy_nats"], expected_nats(P, Y), rtol=1e-12)


@pytest.mark.parametrize("which", ["predictions", "labels"])
def test_compute_reads_standard_input(tmp_path: Path, which: str) -> None:
    pred = tmp_path / "p.csv"
    pred.write_text(CSV)
    labels = tmp_path / "y.csv"
    labels.write_text("".join(f"{v}\n" for v in Y))
    if which == "predictions":
        proc = cli("compute", "-", str(labels), "--format", "json", stdin=CSV.encode())
    else:
        proc = cli("compute", str(pred), "-", "--format", "json", stdin=labels.read_bytes())
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["rows"] == 3
    np.testing.assert_allclose(report["cross_entropy_nats"], expected_nats(P, Y), rtol=1e-12)
    both = cli("compute", "-", "-", stdin=CSV.encode())
    assert_one_line(both.returncode, both.stderr, "standard input")
    npz = cli("compute", "-", str(labels), stdin=b"PK\x03\x04" + b"\x00" * 30)
    assert_one_line(npz.returncode, npz.stderr, "<stdin>")


# ------------------------------------------------------------------------------------------
# compute: what a CSV may look like
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "rows"),
    [
        ("quoted numbers, first row kept", '"0.2","0.3","0.5"\n"0.1","0.1","0.8"\n', 2),
        ("quoted header", '"p0","p1","p2"\n"0.2","0.3","0.5"\n0.1,0.1,0.8\n', 2),
        ("BOM and CRLF", "\ufeff0.2,0.3,0.5\r\n0.1,0.1,0.8\r\n", 2),
        ("BOM before a header", "\ufeffa,b,c\r\n0.2,0.3,0.5\r\n0.1,0.1,0.8\r\n", 2),
    ],
)
def test_compute_csv_shapes(tmp_path: Path, name: str, text: str, rows: int) -> None:
    pred = tmp_path / "p.csv"
    pred.write_bytes(text.encode("utf-8"))
    labels = tmp_path / "y.csv"
    labels.write_text("2\n2\n")
    result = CliRunner().invoke(
        app, ["compute", str(pred), str(labels), "--format", "json"], env=ENV
    )
    assert result.exit_code == 0, (name, result.output)
    report = json.loads(result.stdout)
    assert report["rows"] == rows
    p = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    np.testing.assert_allclose(
        report["cross_entropy_nats"], expected_nats(p, np.array([2, 2])), rtol=1e-12
    )


def test_compute_many_rows_of_short_labels_against_wide_predictions(tmp_path: Path) -> None:
    """Chunks of predictions and of labels end at different rows: still one row each."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 2000))
    y = rng.integers(0, 2000, size=300)
    np.save(tmp_path / "z.npy", z)
    np.savetxt(tmp_path / "y.csv", y, fmt="%d")
    from crossentropy.cli.compute import CHUNK_BYTES

    assert z[0].nbytes * 300 > 2 * CHUNK_BYTES  # several chunks of predictions
    result = CliRunner().invoke(
        app,
        [
            "compute",
            str(tmp_path / "z.npy"),
            str(tmp_path / "y.csv"),
            "--logits",
            "--format",
            "json",
        ],
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    shifted = z - z.max(axis=1, keepdims=True)
    nats = -(shifted[np.arange(300), y] - np.log(np.exp(shifted).sum(axis=1)))
    np.testing.assert_allclose(
        json.loads(result.stdout)["cross_entropy_nats"], nats.mean(), rtol=1e-12
    )


# ------------------------------------------------------------------------------------------
# every option of every command, attacked
# ------------------------------------------------------------------------------------------

HUGE = "99999999999999999999999"
MANY = ",".join(["1e-05"] * 100_000)  # a distribution of 100 000 entries
OVER = ",".join(["0.01"] * 101)


def _files(d: Path) -> dict[str, str]:
    """Hostile input files, made once per test in ``d``."""
    (d / "p.csv").write_text("0.2,0.3,0.5\n0.1,0.1,0.8\n")
    (d / "y.csv").write_text("2\n2\n")
    (d / "latin1.csv").write_bytes("0.2,0.3,0.5\nnumér,0.1,0.8\n".encode("latin-1"))
    (d / "mixed.csv").write_text("0.2,0.3,0.5\n0.1;0.1;0.8\n")
    (d / "tabs.csv").write_text("0.2,0.3,0.5\n0.1\t0.1\t0.8\n")
    (d / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (d / "wide.csv").write_text(",".join(["0"] * ((1 << 20) + 1)) + "\n")
    (d / "header-only.csv").write_text("a,b,c\n")
    (d / "unicode.csv").write_text("0.2,0.3,0.5\n½,0.1,0.8\n", encoding="utf-8")
    wide = np.lib.format.open_memmap(
        d / "wide.npy", mode="w+", dtype=np.uint8, shape=(1, (1 << 20) + 1)
    )
    del wide
    np.save(d / "empty-cols.npy", np.zeros((2, 0)))
    np.save(d / "3d.npy", np.zeros((2, 2, 2)))
    (d / "huge-logits.csv").write_text("1e308,-1e308\n-1e308,1e308\n")
    (d / "nhot.csv").write_text("0,1\n1,0\n")
    (d / "huge-probs.csv").write_text("1e308,1e308\n0.5,0.5\n")
    (d / "file").write_text("not a directory\n")
    (d / "dir").mkdir()
    return {k.name: str(k) for k in d.iterdir()}


def _cases() -> list[tuple[str, list[str], str]]:
    """(id, arguments with {name} for a file of _files, a fragment the error must hold)."""
    demo = [
        ("lr-1e39", ["--lr", "1e39"], "--lr"),
        ("lr-nan", ["--lr", "nan"], "--lr"),
        ("lr-inf", ["--lr", "inf"], "--lr"),
        ("lr-neg", ["--lr", "-1"], "--lr"),
        ("lr-zero", ["--lr", "0"], "--lr"),
        ("lr-empty", ["--lr", ""], "--lr"),
        ("epochs-zero", ["--epochs", "0"], "--epochs"),
        ("epochs-huge", ["--epochs", HUGE], "--epochs"),
        ("epochs-float", ["--epochs", "1.5"], "--epochs"),
        ("batch-zero", ["--batch-size", "0"], "--batch-size"),
        ("batch-huge", ["--batch-size", HUGE], "--batch-size"),
        ("seed-huge", ["--seed", HUGE], "--seed"),
        ("seed-2**64", ["--seed", str(2**64)], "--seed"),
        ("seed-neg", ["--seed", "-1"], "--seed"),
        ("dataset-empty", ["--dataset", ""], "--dataset"),
        ("model-unicode", ["--model", "mlp\u200b"], "--model"),
        ("losses-empty", ["--losses", ","], "--losses"),
        ("losses-twice", ["--losses", "ce,ce"], "--losses"),
        ("logger-empty", ["--logger", ""], "--logger"),
        ("out-empty", ["--out", ""], "--out"),
        ("out-dev-null", ["--out", "/dev/null"], "--out"),
        ("out-dev-full", ["--out", "/dev/full"], "--out"),
        ("out-a-file", ["--out", "{file}"], "--out"),
        ("out-under-a-file", ["--out", "{file}/run"], "--out"),
        ("resume-empty", ["--resume", ""], "--resume"),
        ("resume-missing", ["--resume", "{dir}/nope"], "--resume"),
        ("resume-dev-null", ["--resume", "/dev/null"], "--resume"),
        ("resume-no-checkpoint", ["--resume", "{dir}"], "--resume"),
    ]
    explain = [
        ("label-huge", ["gradients", "--label", HUGE], "--label"),
        ("label-neg", ["gradients", "--label", "-1"], "--label"),
        ("label-float", ["gradients", "--label", "0.5"], "--label"),
        ("p-empty", ["entropy", "--p", ""], "--p"),
        ("p-nan", ["entropy", "--p", "nan,1"], "--p"),
        ("p-unicode", ["entropy", "--p", "½,½"], "--p"),
        ("p-100000", ["entropy", "--p", MANY], "--p"),
        ("p-101", ["information", "--p", OVER], "--p"),
        ("q-inf", ["kl", "--p", "0.5,0.5", "--q", "inf,0"], "--q"),
        ("q-100000", ["cross-entropy", "--p", "0.5,0.5", "--q", MANY], "--q"),
        ("logits-1e7", ["softmax", "--logits", "1e7,0"], "--logits"),
        ("logits-1e308", ["gradients", "--logits", "1e308,-1e308", "--label", "1"], "--logits"),
        ("logits-100000", ["gradients", "--logits", MANY, "--label", "0"], "--logits"),
        ("logits-101", ["softmax", "--logits", OVER], "--logits"),
        ("multilabel-100000", ["multilabel", "--logits", "1,2", "--labels", MANY], "--labels"),
        (
            "probs-rows",
            ["mse-vs-ce", "--probs", ";".join(["0.5,0.5"] * 101), "--labels", "0"],
            "--probs",
        ),
        ("probs-100000", ["mse-vs-ce", "--probs", MANY, "--labels", "0"], "--probs"),
        ("probs-empty-rows", ["mse-vs-ce", "--probs", ";", "--labels", "0"], "--probs"),
        ("labels-huge", ["mse-vs-ce", "--probs", "0.5,0.5", "--labels", HUGE], "--labels"),
        ("base-empty", ["entropy", "--base", ""], "--base"),
        ("base-one", ["entropy", "--base", "1"], "--base"),
        ("base-nan", ["entropy", "--base", "nan"], "--base"),
        ("base-inf", ["entropy", "--base", "inf"], "--base"),
        ("base-neg", ["entropy", "--base", "-2"], "--base"),
        ("format-empty", ["-f", ""], "--format"),
        ("topic-empty", [""], "TOPIC"),
        ("topic-unicode", ["entropié"], "TOPIC"),
    ]
    explore = [
        ("logits-empty", ["--logits", ""], "--logits"),
        ("logits-nan", ["--logits", "nan,0"], "--logits"),
        ("logits-100000", ["--logits", MANY], "--logits"),
        ("logits-1e308", ["--logits", "1e308,0"], "--logits"),
        ("label-huge", ["--label", HUGE], "--label"),
        ("label-neg", ["--label", "-1"], "--label"),
        ("temperature-nan", ["-t", "nan"], "--temperature"),
        ("temperature-inf", ["-t", "inf"], "--temperature"),
        ("temperature-zero", ["-t", "0"], "--temperature"),
        ("temperature-empty", ["-t", ""], "--temperature"),
        ("view-bogus", ["--view", "3d"], "--view"),
        ("out-empty", ["-o", ""], "--out"),
        ("out-dev-full", ["-o", "/dev/full"], "--out"),
        ("out-under-a-file", ["-o", "{file}/x.html"], "--out"),
        ("port-huge", ["--serve", "--no-open", "--port", HUGE], "--port"),
        ("port-neg", ["--serve", "--no-open", "--port", "-1"], "--port"),
        ("port-without-serve", ["--port", "8000"], "--port"),
    ]
    plot = [
        ("out-empty", ["-o", "", "information"], "--out"),
        ("out-dev-null", ["-o", "/dev/null", "information"], "--out"),
        ("out-a-file", ["-o", "{file}", "information"], "--out"),
        ("out-under-a-file", ["-o", "{file}/figs", "information"], "--out"),
        ("figure-empty", ["-o", "{dir}", ""], "FIGURE"),
        ("figure-unicode", ["-o", "{dir}", "entropié"], "FIGURE"),
        ("format-pdf", ["-o", "{dir}", "-f", "pdf"], "--format"),
    ]
    compute = [
        ("worst-huge", ["{p.csv}", "{y.csv}", "--worst", HUGE], "--worst"),
        ("worst-neg", ["{p.csv}", "{y.csv}", "--worst", "-1"], "--worst"),
        ("chunk-zero", ["{p.csv}", "{y.csv}", "--chunk-size", "0"], "--chunk-size"),
        ("chunk-huge", ["{p.csv}", "{y.csv}", "--chunk-size", HUGE], "--chunk-size"),
        ("format-bogus", ["{p.csv}", "{y.csv}", "--format", "xml"], "--format"),
        ("empty-path", ["", "{y.csv}"], "''"),
        ("directory", ["{dir}", "{y.csv}"], "directory"),
        ("missing", ["{dir}/nope.csv", "{y.csv}"], "no such file"),
        ("dev-null", ["/dev/null", "{y.csv}"], "no rows"),
        ("dev-zero", ["/dev/zero", "{y.csv}"], "NUL"),
        ("labels-dev-zero", ["{p.csv}", "/dev/zero"], "NUL"),
        ("non-utf8", ["{latin1.csv}", "{y.csv}"], "line 2: not UTF-8"),
        ("mixed-delimiters", ["{mixed.csv}", "{y.csv}"], "line 2"),
        ("tabs-in-csv", ["{tabs.csv}", "{y.csv}"], "line 2"),
        ("binary", ["{binary.csv}", "{y.csv}"], "binary.csv"),
        ("unicode-field", ["{unicode.csv}", "{y.csv}"], "line 2, column 1"),
        ("header-only", ["{header-only.csv}", "{y.csv}"], "no rows"),
        ("too-many-columns-csv", ["{wide.csv}", "{y.csv}"], "columns"),
        ("too-many-columns-npy", ["{wide.npy}", "{y.csv}"], "columns"),
        ("no-columns-npy", ["{empty-cols.npy}", "{y.csv}"], "columns"),
        ("3d-npy", ["{3d.npy}", "{y.csv}"], "shape"),
        ("logits-1e308", ["{huge-logits.csv}", "{nhot.csv}", "--logits", "--multilabel"], "beyond"),
        ("probs-1e308", ["{huge-probs.csv}", "{nhot.csv}"], "outside [0, 1]"),
        ("member-of-a-csv", ["{p.csv}:x", "{y.csv}"], "npz"),
    ]
    out: list[tuple[str, list[str], str]] = []
    for command, cases in (
        ("demo", demo),
        ("explain", explain),
        ("explore", explore),
        ("plot", plot),
        ("compute", compute),
    ):
        out += [(f"{command}-{name}", [command, *args], fragment) for name, args, fragment in cases]
    return out


class Hang(Exception):
    pass


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return _files(tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize(
    ("args", "fragment"), [c[1:] for c in _cases()], ids=[c[0] for c in _cases()]
)
def test_hostile_option(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hostile_files: dict[str, str],
    args: list[str],
    fragment: str,
) -> None:
    import signal

    files = hostile_files
    monkeypatch.chdir(tmp_path)  # a case that wrongly succeeds writes here, not in the repo
    argv = []
    for arg in args:
        for name, path in files.items():
            arg = arg.replace("{" + name + "}", path)
        argv.append(arg)

    def hang(*_: Any) -> None:
        raise Hang(f"no answer in 60 s: {args}")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        result = CliRunner().invoke(app, argv, env=ENV)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    line = assert_one_line(result.exit_code, result.stderr, fragment, prefix="crossentropy")
    assert "error:" in line, line
    assert "Traceback" not in result.output
    assert result.stdout == ""
    if args[0] in ("demo", "explore", "plot"):  # nothing written on the way to the error
        assert os.listdir(tmp_path) == [], line
        assert sorted(os.listdir(Path(files["file"]).parent)) == sorted(
            Path(f).name for f in files.values()
        ), line


# ------------------------------------------------------------------------------------------
# explain: extreme but valid inputs give exact numbers, without warnings
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logits", "label"), [((800.0, 0.0), 1), ((0.0, 800.0, -800.0), 2), ((1e6, -1e6), 1)]
)
def test_explain_gradients_extreme_logits(logits: tuple[float, ...], label: int) -> None:
    import warnings

    import torch

    from crossentropy.cli.explain import ExplainOptions, compute_gradient

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = compute_gradient(ExplainOptions(), [f"c{i}" for i in range(len(logits))], logits, label)
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(x[None], torch.tensor([label]))
    (grad,) = torch.autograd.grad(loss, x)
    np.testing.assert_allclose(s.loss, loss.item(), rtol=1e-15)
    np.testing.assert_allclose([c.chain for c in s.components], grad.numpy(), atol=1e-15)
    np.testing.assert_allclose([c.gradient for c in s.components], grad.numpy(), atol=1e-15)
    assert math.isfinite(s.chain_max_abs_error) and s.chain_max_abs_error <= 1e-15
    # the loss is ~|x|: its finite difference keeps ulp(|x|) / 2h of its digits
    assert s.max_abs_error <= 1e-8 * max(1.0, max(abs(v) for v in logits))
    result = CliRunner().invoke(
        app,
        ["explain", "gradients", "--logits", ",".join(map(str, logits)), "--label", str(label)],
        env=ENV,
    )
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert "nan" not in result.stdout.lower()


def test_explain_takes_lists_up_to_the_limit() -> None:
    from crossentropy.cli.explain import MAX_VALUES

    n = MAX_VALUES
    result = CliRunner().invoke(
        app,
        ["explain", "entropy", "--p", ",".join([repr(1 / n)] * n), "-f", "json"],
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    assert f"{math.log(n):.3f}" in result.stdout  # H(uniform over n) = ln n


# ------------------------------------------------------------------------------------------
# demo: a learning rate that diverges is a result, told in words
# ------------------------------------------------------------------------------------------


def test_demo_story_of_a_diverged_run() -> None:
    from crossentropy.demo import SummaryRow, story

    ce = SummaryRow("ce", "cross entropy", 2, 0.1, math.nan, math.nan, None, math.nan)
    mse = SummaryRow("mse", "MSE", 2, 0.3, 1.4, 140.0, None, 0.05)
    sentence = story([ce, mse])
    assert sentence is not None
    assert "nan" not in sentence.lower() and "cross entropy diverged" in sentence, sentence
    assert "--lr" in sentence


def test_demo_largest_lr_runs(tmp_path: Path) -> None:
    from crossentropy.demo.train import MAX_LR

    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["demo", "--lr", repr(MAX_LR), "--epochs", "1", "--out", str(out)],
        env=ENV,
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "diverged" in result.stdout and "nanx" not in result.stdout, result.stdout


def test_compute_normalize_and_logits_at_the_extremes(tmp_path: Path) -> None:
    from crossentropy.report import LOGIT_LIMIT

    (tmp_path / "p.csv").write_text("1e308,1e308\n1e-320,3e-320\n2,6\n")
    (tmp_path / "y.csv").write_text("0\n1\n1\n")
    result = CliRunner().invoke(
        app,
        [
            "compute",
            str(tmp_path / "p.csv"),
            str(tmp_path / "y.csv"),
            "--normalize",
            "--format",
            "json",
        ],
        env=ENV,
    )
    assert result.exit_code == 0 and result.stderr == "", result.output
    # the rows normalised by hand: 1e-320 and 3e-320 are denormals, their ratio as stored
    small = np.array([1e-320, 3e-320])
    p_true = [0.5, small[1] / small.sum(), 0.75]
    expected = -np.mean(np.log(p_true))
    np.testing.assert_allclose(json.loads(result.stdout)["cross_entropy_nats"], expected, rtol=1e-3)
    (tmp_path / "z.csv").write_text(
        f"{LOGIT_LIMIT!r},{-LOGIT_LIMIT!r}\n{-LOGIT_LIMIT!r},{LOGIT_LIMIT!r}\n"
    )
    (tmp_path / "n.csv").write_text("0,1\n1,0\n")
    result = CliRunner().invoke(
        app,
        [
            "compute",
            str(tmp_path / "z.csv"),
            str(tmp_path / "n.csv"),
            "--logits",
            "--multilabel",
            "--format",
            "json",
        ],
        env=ENV,
    )
    assert result.exit_code == 0 and result.stderr == "", result.output
    # every label wrong by a logit of 1e150: each loss is 1e150 (softplus(1e150)), so is the mean
    np.testing.assert_allclose(
        json.loads(result.stdout)["cross_entropy_nats"], LOGIT_LIMIT, rtol=1e-15
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    "args",
    [
        ["explain", "entropy"],
        ["explain", "-f", "markdown"],
        ["compute", "{p}", "{y}", "--format", "json"],
        ["--help"],
    ],
    ids=["explain-text", "explain-markdown", "compute-json", "help"],
)
def test_output_to_a_full_disk(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "p.csv").write_text(CSV)
    (tmp_path / "y.csv").write_text("".join(f"{v}\n" for v in Y))
    argv = [
        a.replace("{p}", str(tmp_path / "p.csv")).replace("{y}", str(tmp_path / "y.csv"))
        for a in args
    ]
    env = {**os.environ, **ENV, "PYTHONPATH": SRC}
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "crossentropy.cli", *argv],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
        )
    assert_one_line(
        proc.returncode,
        proc.stderr,
        "cannot write the output",
        "No space left",
        prefix="crossentropy",
    )
