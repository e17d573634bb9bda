"""Tests of ``crossentropy explain`` and the command line around it.

The numbers the command prints are checked against independent float64 NumPy computations,
both in the section data structures and in the rendered text.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from crossentropy.cli import explain as ex
from crossentropy.cli.app import app

WIDE = {"COLUMNS": "120", "NO_COLOR": "1"}
TOL = {"rtol": 1e-12, "atol": 1e-12}

CLASSES = ["cat", "dog", "pig"]
TRUE = ["pig", "dog", "cat"]
MODEL_1 = np.array([[0.3, 0.3, 0.4], [0.3, 0.4, 0.3], [0.1, 0.2, 0.7]])
MODEL_2 = np.array([[0.1, 0.2, 0.7], [0.1, 0.7, 0.2], [0.3, 0.4, 0.3]])


# ------------------------------------------------------------------------------------------
# Independent float64 NumPy references
# ------------------------------------------------------------------------------------------


def np_entropy(p: np.ndarray, log: object = np.log) -> float:
    p = np.asarray(p, dtype=np.float64)
    nz = p > 0
    return float(-np.sum(p[nz] * log(p[nz])))  # type: ignore[operator]


def np_cross_entropy(p: np.ndarray, q: np.ndarray, log: object = np.log) -> float:
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    nz = p > 0
    return float(-np.sum(p[nz] * log(q[nz])))  # type: ignore[operator]


def np_kl(p: np.ndarray, q: np.ndarray, log: object = np.log) -> float:
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    nz = p > 0
    return float(np.sum(p[nz] * (log(p[nz]) - log(q[nz]))))  # type: ignore[operator]


def np_model_scores(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.array([CLASSES.index(c) for c in TRUE])
    y = np.eye(3)[labels]
    ce = -np.log(q[np.arange(3), labels])
    se = np.sum((q - y) ** 2, axis=1)
    return ce, se


def fmt(x: float) -> str:
    return f"{x + 0.0:.3f}"  # + 0.0: -0.0 prints as 0.000


def numbers(line: str) -> list[str]:
    """The decimal numbers of one output line, in order."""
    return re.findall(r"-?\d+\.\d+(?:e[-+]\d+)?", line)


def line_starting(text: str, start: str, nth: int = 0) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip().startswith(start)]
    assert len(lines) > nth, f"no line {nth} starting with {start!r} in:\n{text}"
    return lines[nth]


# ------------------------------------------------------------------------------------------
# Running the command
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def output() -> str:
    result = CliRunner().invoke(app, ["explain"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout


def test_all_sections_in_order(output: str) -> None:
    positions = [output.index(f"\n{i}. ") for i in range(1, 7)]
    assert positions == sorted(positions)
    assert "Traceback" not in output


def test_information_numbers(output: str) -> None:
    for label, p in [("likely event", 0.9), ("unlikely event", 0.01)]:
        row = numbers(line_starting(output, label))
        assert row[-2:] == [fmt(-np.log(p)), fmt(-np.log2(p))]
    assert fmt(-np.log(0.01)) == "4.605" and fmt(-np.log2(0.01)) == "6.644"


def test_entropy_is_one_and_a_half_bits(output: str) -> None:
    p = np.array([0.5, 0.25, 0.25])
    total = numbers(line_starting(output, "H(p) = sum"))
    assert total == [fmt(np_entropy(p)), fmt(np_entropy(p, np.log2))]
    assert total[-1] == "1.500"
    assert "1.500 bits" in output
    for outcome, pi in zip(["sun", "clouds", "rain"], p, strict=True):
        row = numbers(line_starting(output, outcome))
        # p, then -ln p, -p ln p, -log2 p, -p log2 p
        assert row[-4:] == [
            fmt(-np.log(pi)),
            fmt(-pi * np.log(pi)),
            fmt(-np.log2(pi)),
            fmt(-pi * np.log2(pi)),
        ]


def test_decomposition_rows(output: str) -> None:
    q = np.array([0.7, 0.2, 0.1])
    for p_text, p in [("[1, 0, 0]", [1.0, 0.0, 0.0]), ("[0.8, 0.1, 0.1]", [0.8, 0.1, 0.1])]:
        for unit, log in [("nats", np.log), ("bits", np.log2)]:
            lines = [
                ln for ln in output.splitlines() if ln.startswith(p_text) and f" {unit} " in ln
            ]
            assert len(lines) == 1, output
            h, kl, hq = np_entropy(p, log), np_kl(p, q, log), np_cross_entropy(p, q, log)
            assert numbers(lines[0])[-4:] == [fmt(h), fmt(kl), fmt(h + kl), fmt(hq)]
    # one-hot p: H(p) = 0 and H(p, q) = KL(p||q) = -ln 0.7
    assert fmt(-np.log(0.7)) == "0.357"
    assert "-0.000" not in output


def test_model_comparison_averages(output: str) -> None:
    ce1, se1 = np_model_scores(MODEL_1)
    ce2, se2 = np_model_scores(MODEL_2)
    assert [fmt(ce1.mean()), fmt(ce2.mean()), fmt(se1.mean()), fmt(se2.mean())] == [
        "1.378",
        "0.639",
        "0.807",
        "0.340",
    ]
    assert numbers(line_starting(output, "average", 0)) == [fmt(ce1.mean()), fmt(se1.mean())]
    assert numbers(line_starting(output, "average", 1)) == [fmt(ce2.mean()), fmt(se2.mean())]
    assert numbers(line_starting(output, "cross entropy (nats)")) == ["1.378", "0.639"]
    assert numbers(line_starting(output, "MSE ")) == ["0.807", "0.340"]
    assert "Both losses rank model 2 better" in " ".join(output.split())


def test_multilabel_and_gradient_in_output(output: str) -> None:
    assert "an image tagged {outdoor, dog}" in output
    assert "true class: dog" in output
    # notes wrap at the terminal's width: compare them with whitespace collapsed
    assert "agrees with the finite difference to" in " ".join(output.split())


# ------------------------------------------------------------------------------------------
# The section data structures against NumPy, to rounding
# ------------------------------------------------------------------------------------------


DEFAULT = ex.ExplainOptions()


def test_compute_information() -> None:
    s = ex.compute_information(DEFAULT)
    assert [u.name for u in s.units] == ["nats", "bits"]
    for e in s.events:
        np.testing.assert_allclose(e.information, [-np.log(e.p), -np.log2(e.p)], **TOL)
    np.testing.assert_allclose(s.ratio, np.log(0.01) / np.log(0.9), **TOL)


def test_compute_entropy() -> None:
    s = ex.compute_entropy(DEFAULT)
    p = np.array([t.p for t in s.terms])
    np.testing.assert_allclose(s.entropy, [np_entropy(p), np_entropy(p, np.log2)], **TOL)
    np.testing.assert_allclose(s.entropy[1], 1.5, **TOL)
    np.testing.assert_allclose(s.max_entropy, [np.log(3), np.log2(3)], **TOL)
    for t in s.terms:
        np.testing.assert_allclose(t.term, [-t.p * np.log(t.p), -t.p * np.log2(t.p)], **TOL)


def test_compute_divergence() -> None:
    s = ex.compute_divergence(DEFAULT)
    q = np.array(s.q)
    np.testing.assert_allclose([t.cross_entropy for t in s.terms], [-np.log(0.7), 0, 0], **TOL)
    np.testing.assert_allclose([t.kl for t in s.terms], [-np.log(0.7), 0, 0], **TOL)
    assert len(s.decompositions) == 4
    for d in s.decompositions:
        log = np.log if d.unit.base is None else np.log2
        np.testing.assert_allclose(d.entropy, np_entropy(np.array(d.p), log), **TOL)
        np.testing.assert_allclose(d.kl, np_kl(np.array(d.p), q, log), **TOL)
        np.testing.assert_allclose(d.cross_entropy, np_cross_entropy(np.array(d.p), q, log), **TOL)
        np.testing.assert_allclose(d.entropy_plus_kl, d.cross_entropy, **TOL)


def test_compute_model_comparison() -> None:
    s = ex.compute_model_comparison(DEFAULT)
    for model, q in zip(s.models, [MODEL_1, MODEL_2], strict=True):
        ce, se = np_model_scores(q)
        np.testing.assert_allclose([x.cross_entropy for x in model.samples], ce, **TOL)
        np.testing.assert_allclose([x.mse for x in model.samples], se, **TOL)
        np.testing.assert_allclose(model.mean_cross_entropy, ce.mean(), **TOL)
        np.testing.assert_allclose(model.mean_mse, se.mean(), **TOL)
    for miss in s.misses:
        np.testing.assert_allclose(miss.cross_entropy, -np.log(miss.p_true), **TOL)
        np.testing.assert_allclose(miss.mse, 2 * (1 - miss.p_true) ** 2, **TOL)


def test_compute_multilabel() -> None:
    s = ex.compute_multilabel(DEFAULT)
    x = np.array([t.logit for t in s.tags])
    y = np.array([t.label for t in s.tags])
    sig = 1 / (1 + np.exp(-x))
    loss = -(y * np.log(sig) + (1 - y) * np.log(1 - sig))
    np.testing.assert_allclose([t.prob for t in s.tags], sig, **TOL)
    np.testing.assert_allclose([t.loss for t in s.tags], loss, **TOL)
    np.testing.assert_allclose(s.total, loss.sum(), **TOL)
    np.testing.assert_allclose(s.mean, loss.mean(), **TOL)


def test_compute_gradient() -> None:
    s = ex.compute_gradient(DEFAULT)
    x = np.array([c.logit for c in s.components])
    p = np.exp(x - x.max()) / np.sum(np.exp(x - x.max()))
    y = np.eye(x.size)[CLASSES.index(s.label)]
    np.testing.assert_allclose([c.prob for c in s.components], p, **TOL)
    np.testing.assert_allclose([c.gradient for c in s.components], p - y, **TOL)
    np.testing.assert_allclose([c.p_minus_y for c in s.components], p - y, **TOL)
    np.testing.assert_allclose(s.loss, -np.log(p[CLASSES.index(s.label)]), **TOL)
    assert s.max_abs_error < 1e-8
    np.testing.assert_allclose([c.finite_difference for c in s.components], p - y, atol=1e-8)


# ------------------------------------------------------------------------------------------
# Options, help, version, errors
# ------------------------------------------------------------------------------------------


def test_base_two_shows_bits_only() -> None:
    result = CliRunner().invoke(app, ["explain", "--base", "2"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "I(x) in bits" in result.stdout and "I(x) in nats" not in result.stdout
    assert numbers(line_starting(result.stdout, "H(p) = sum")) == ["1.500"]


def test_base_e_shows_nats_only() -> None:
    result = CliRunner().invoke(app, ["explain", "-b", "e"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "I(x) in nats" in result.stdout and "I(x) in bits" not in result.stdout


@pytest.mark.parametrize("text", ["0", "1", "-2", "nan", "inf", "two"])
def test_parse_base_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        ex.parse_base(text)


def test_help_and_version() -> None:
    runner = CliRunner()
    for args in (["--help"], ["explain", "--help"], []):
        result = runner.invoke(app, args, env=WIDE)
        assert result.exit_code == 0, result.output
        assert "Usage" in result.stdout
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"crossentropy \d+\.\d+\.\d+\S*\n", result.stdout)


@pytest.mark.parametrize(
    "args",
    [
        ["explain", "--nope"],
        ["explain", "--base", "1"],
        ["explain", "--base", "banana"],
        ["explain", "--base"],
        ["explain", "extra"],
        ["no-such-command"],
    ],
)
def test_bad_options_one_line_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(app, args, env=WIDE)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crossentropy") and "error:" in lines[0]
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------
# The installed console script, as a real subprocess
# ------------------------------------------------------------------------------------------


def _script() -> Path:
    script = Path(sys.executable).parent / "crossentropy"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    return script


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **WIDE}
    return subprocess.run(
        [str(_script()), *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_console_script_explain() -> None:
    proc = _run("explain")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    ce1, se1 = np_model_scores(MODEL_1)
    ce2, se2 = np_model_scores(MODEL_2)
    for value in (ce1.mean(), ce2.mean(), se1.mean(), se2.mean()):
        assert fmt(value) in proc.stdout
    assert numbers(line_starting(proc.stdout, "cross entropy (nats)")) == ["1.378", "0.639"]
    assert numbers(line_starting(proc.stdout, "MSE ")) == ["0.807", "0.340"]
    assert numbers(line_starting(proc.stdout, "H(p) = sum"))[-1] == "1.500"


def test_console_script_bad_option() -> None:
    proc = _run("explain", "--bogus")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "--bogus" in proc.stderr


def test_console_script_version() -> None:
    proc = _run("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith("crossentropy ")
