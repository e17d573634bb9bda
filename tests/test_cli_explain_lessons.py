"""``crossentropy explain`` likelihood, regression, binary-gradient and pitfalls.

Every number is checked against float64 formulas written here (and the library's public
functions where the lesson says it uses them), every derivative against central finite
differences of those formulas; user numbers go through the command line in each format, and
bad ones come back as one line naming the option, exit status 2.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import crossentropy as ce
from crossentropy.cli import explain as ex
from crossentropy.cli.app import app

WIDE = {"COLUMNS": "160", "NO_COLOR": "1"}
TOL = {"rtol": 1e-12, "atol": 1e-12}
LESSONS = ["likelihood", "regression", "binary-gradient", "pitfalls"]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["explain", *args], env=WIDE)


def run_json(*args: str) -> dict[str, Any]:
    result = invoke(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def table(doc: dict[str, Any], title_part: str) -> dict[str, Any]:
    for t in doc["tables"]:
        if title_part in (t["title"] or ""):
            return t  # type: ignore[no-any-return]
    raise AssertionError(f"no table titled {title_part!r}: {[t['title'] for t in doc['tables']]}")


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def central(f: Any, x: float, h: float = 1e-6) -> float:
    return float((f(x + h) - f(x - h)) / (2 * h))


def num(value: Any) -> float:
    """A JSON number, with the strings JSON uses for the non-finite ones."""
    return float(value)


# ------------------------------------------------------------------------------------------
# likelihood
# ------------------------------------------------------------------------------------------


def bernoulli_checks(data: dict[str, Any], y: np.ndarray, p: np.ndarray) -> None:
    lik = p**y * (1 - p) ** (1 - y)
    ex_ = data["examples"]
    assert [e["label"] for e in ex_] == y.tolist() and [e["prob"] for e in ex_] == p.tolist()
    np.testing.assert_allclose([e["likelihood"] for e in ex_], lik, **TOL)
    np.testing.assert_allclose([e["log_likelihood"] for e in ex_], np.log(lik), **TOL)
    np.testing.assert_allclose(data["likelihood"], np.prod(lik), **TOL)
    np.testing.assert_allclose(data["log_likelihood"], np.log(np.prod(lik)), **TOL)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(data["mean_negative_log_likelihood"], bce.mean(), **TOL)
    np.testing.assert_allclose(data["binary_cross_entropy"], bce.mean(), **TOL)
    np.testing.assert_allclose(data["binary_cross_entropy_sum"], bce.sum(), **TOL)
    np.testing.assert_allclose([e["loss"] for e in ex_], bce, **TOL)
    # and the library says the same
    np.testing.assert_allclose(data["binary_cross_entropy"], ce.binary_cross_entropy(p, y), **TOL)


def test_likelihood_defaults_are_the_issues_numbers() -> None:
    doc = run_json("likelihood")
    data = doc["data"]
    y, p = np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.9, 0.2, 0.7, 0.6])
    bernoulli_checks(data, y, p)
    np.testing.assert_allclose([e["likelihood"] for e in data["examples"]], [0.9, 0.8, 0.7, 0.6])
    assert round(data["likelihood"], 10) == 0.3024
    assert f"{data['binary_cross_entropy']:.4f}" == "0.2990"
    rows = table(doc, "Bernoulli")["rows"]
    assert rows[-1][-2:] == pytest.approx([0.2990, 0.2990], abs=5e-5)
    assert "0.9 · 0.8 · 0.7 · 0.6 = 0.3024" in doc["notes"][0]


def test_likelihood_categorical_is_softmax_cross_entropy_and_perplexity() -> None:
    data = run_json("likelihood")["data"]
    z = np.array([c["logits"] for c in data["categorical"]])
    t = np.array([c["label"] for c in data["categorical"]])
    q = softmax(z)
    q_y = q[np.arange(t.size), t]
    np.testing.assert_allclose([c["probs"] for c in data["categorical"]], q, **TOL)
    np.testing.assert_allclose([c["likelihood"] for c in data["categorical"]], q_y, **TOL)
    np.testing.assert_allclose([c["loss"] for c in data["categorical"]], -np.log(q_y), **TOL)
    np.testing.assert_allclose(data["categorical_likelihood"], np.prod(q_y), **TOL)
    np.testing.assert_allclose(data["categorical_log_likelihood"], np.log(q_y).sum(), **TOL)
    mean = -np.log(q_y).mean()
    np.testing.assert_allclose(data["categorical_mean_negative_log_likelihood"], mean, **TOL)
    np.testing.assert_allclose(data["softmax_cross_entropy"], mean, **TOL)
    np.testing.assert_allclose(
        data["softmax_cross_entropy"], ce.sparse_softmax_cross_entropy(z, t), **TOL
    )
    np.testing.assert_allclose(data["perplexity"], np.exp(mean), **TOL)
    np.testing.assert_allclose(data["perplexity"], np.prod(q_y) ** (-1 / t.size), **TOL)
    np.testing.assert_allclose(data["likelihood_per_example"], 1 / np.exp(mean), **TOL)


USER_Y, USER_P = "1,0,0,1,1", "0.55,0.1,0.45,0.99,0.3"


def test_likelihood_user_data_json() -> None:
    data = run_json("likelihood", "--labels", USER_Y, "--probs", USER_P)["data"]
    y = np.array([float(v) for v in USER_Y.split(",")])
    p = np.array([float(v) for v in USER_P.split(",")])
    bernoulli_checks(data, y, p)


def test_likelihood_user_data_text_and_markdown() -> None:
    y = np.array([float(v) for v in USER_Y.split(",")])
    p = np.array([float(v) for v in USER_P.split(",")])
    bce = f"{float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))):.4f}"
    lik = p**y * (1 - p) ** (1 - y)
    for fmt in ("text", "markdown"):
        result = invoke("likelihood", "--labels", USER_Y, "--probs", USER_P, "--format", fmt)
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        mean_line = next(ln for ln in result.stdout.splitlines() if "-mean" in ln)
        assert re.findall(r"\d+\.\d+", mean_line)[:2] == [bce, bce], mean_line
        assert f"= {np.prod(lik):.4g};" in result.stdout
    md = invoke("likelihood", "--labels", USER_Y, "--probs", USER_P, "--format", "markdown")
    assert "| 5 | 1 | 0.3 | 0.3000 |" in md.stdout


def test_likelihood_a_certain_wrong_prediction_is_inf_not_a_crash() -> None:
    doc = run_json("likelihood", "--labels", "1,0", "--probs", "0,0.5")
    data = doc["data"]
    assert data["likelihood"] == 0.0
    assert data["examples"][0]["likelihood"] == 0.0
    assert data["examples"][0]["log_likelihood"] == "-inf"
    assert data["log_likelihood"] == "-inf"
    assert data["mean_negative_log_likelihood"] == "inf"
    # the library clamps each log at -100, as PyTorch does, and the lesson shows it as such
    np.testing.assert_allclose(data["binary_cross_entropy"], (100 + np.log(2)) / 2, **TOL)
    np.testing.assert_allclose(
        data["binary_cross_entropy"],
        ce.binary_cross_entropy(np.array([0.0, 0.5]), np.array([1.0, 0.0])),
        **TOL,
    )
    assert "clamps each log at -100" in doc["notes"][0]
    text = invoke("likelihood", "--labels", "1,0", "--probs", "0,0.5")
    assert text.exit_code == 0 and "-inf" in text.stdout


# ------------------------------------------------------------------------------------------
# regression
# ------------------------------------------------------------------------------------------


def regression_formulas(r: float, k: float) -> dict[str, float]:
    a = abs(r)
    return {
        "l1": a,
        "l2": r * r,
        "smooth_l1": 0.5 * r * r / k if a < k else a - 0.5 * k,
        "huber": 0.5 * r * r if a < k else k * (a - 0.5 * k),
    }


def regression_checks(data: dict[str, Any], residuals: list[float], beta: float) -> None:
    assert data["beta"] == beta
    points = data["points"]
    assert [pt["residual"] for pt in points] == residuals
    r = np.array(residuals)
    for name, lib in (("l1", ce.l1), ("l2", ce.mse)):
        np.testing.assert_allclose(
            [pt[name] for pt in points], lib(r, np.zeros_like(r), reduction="none"), **TOL
        )
    np.testing.assert_allclose(
        [pt["smooth_l1"] for pt in points],
        ce.smooth_l1(r, np.zeros_like(r), beta=beta, reduction="none"),
        **TOL,
    )
    for pt in points:
        want = regression_formulas(pt["residual"], beta)
        for name, value in want.items():
            np.testing.assert_allclose(pt[name], value, **TOL)
            # the derivative against central differences of the formula, away from the kinks
            x = pt["residual"]
            h = 1e-7 * max(1.0, abs(x)) * min(1.0, beta)
            kinks = [0.0] if name == "l1" else [] if name == "l2" else [-beta, beta]
            if all(abs(x - c) > 2 * h for c in kinks):
                fd = central(lambda v, n=name: regression_formulas(v, beta)[n], x, h)
                np.testing.assert_allclose(pt[f"{name}_grad"], fd, rtol=1e-5, atol=1e-6)
        # at the kinks: the one-sided limits the library's definition picks
        assert pt["l1_grad"] == np.sign(x)
        assert pt["l2_grad"] == 2 * x  # the library's MSE is r², so 2r
        assert abs(pt["smooth_l1_grad"]) <= 1.0 and abs(pt["huber_grad"]) <= beta
        np.testing.assert_allclose(pt["huber_grad"], beta * pt["smooth_l1_grad"], **TOL)
    checks = {c["loss"]: c for c in data["checks"]}
    assert list(checks) == ["l1", "mse", "smooth_l1", "huber"]
    for c in checks.values():
        assert c["max_error"] < 1e-4
    assert checks["mse"]["max_abs_grad"] == 2 * max(abs(v) for v in residuals)


def test_regression_defaults() -> None:
    doc = run_json("regression")
    regression_checks(doc["data"], [-3.0, -1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 3.0], beta=1.0)
    # the table shows the section's numbers
    rows = doc["tables"][0]["rows"]
    assert rows[0] == [-3.0, 3.0, -1.0, 9.0, -6.0, 2.5, -1.0, 2.5, -1.0]
    assert "-6.0000 at r = -3" in " ".join(doc["notes"])


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_regression_user_residuals_and_beta(fmt: str) -> None:
    args = ["regression", "--residuals", "-2,0.05,0.3,0.5,4", "--beta", "0.5"]
    result = invoke(*args, "--format", fmt)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    if fmt == "json":
        regression_checks(json.loads(result.stdout)["data"], [-2.0, 0.05, 0.3, 0.5, 4.0], 0.5)
    else:
        # r = 0.3 inside β = 0.5: smooth L1 0.5·0.09/0.5 = 0.09, derivative 0.6; Huber 0.045, 0.3
        line = next(ln for ln in result.stdout.splitlines() if re.match(r"^\|? ?0\.3 ", ln))
        assert re.findall(r"-?\d+\.\d{4}", line) == [
            "0.3000", "1.0000", "0.0900", "0.6000", "0.0900", "0.6000", "0.0450", "0.3000"
        ], line  # fmt: skip
        assert "β = δ = 0.5" in result.stdout


# ------------------------------------------------------------------------------------------
# binary-gradient
# ------------------------------------------------------------------------------------------


def test_binary_gradient_chain_rule_and_finite_differences() -> None:
    doc = run_json("binary-gradient")
    d = doc["data"]
    x, w, b, y = np.array(d["x"]), np.array(d["w"]), d["b"], d["y"]
    assert (d["x"], d["w"], y) == ([1.0, 2.0], [0.5, -0.3], 1.0)

    def loss(w_: np.ndarray, b_: float) -> float:
        p = sigmoid(float(x @ w_ + b_))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    z = float(x @ w + b)
    p = sigmoid(z)
    np.testing.assert_allclose(d["z"], z, **TOL)
    np.testing.assert_allclose(d["prob"], p, **TOL)
    np.testing.assert_allclose([d["loss"], d["loss_from_logit"]], loss(w, b), **TOL)
    np.testing.assert_allclose(d["dloss_dprob"], -(y / p) + (1 - y) / (1 - p), **TOL)
    np.testing.assert_allclose(d["dprob_dz"], p * (1 - p), **TOL)
    np.testing.assert_allclose(d["dprob_dz"], central(sigmoid, z), rtol=1e-8)
    np.testing.assert_allclose([d["dloss_dz"], d["dloss_dz_library"]], p - y, **TOL)
    assert [q["name"] for q in d["parameters"]] == ["w_1", "w_2", "b"]
    dz = [*x.tolist(), 1.0]
    for j, q in enumerate(d["parameters"]):
        assert q["dz_dparam"] == dz[j]
        np.testing.assert_allclose([q["chain"], q["closed_form"]], (p - y) * dz[j], **TOL)
        e = np.eye(len(w) + 1)[j]
        fd = central(lambda t, e=e: loss(w + t * e[:-1], b + t * e[-1]), 0.0)
        np.testing.assert_allclose(q["finite_difference"], fd, rtol=1e-7)
        np.testing.assert_allclose(q["chain"], fd, rtol=1e-7)
    assert d["max_abs_error"] < 1e-8
    rows = table(doc, "parameter by parameter")["rows"]
    np.testing.assert_allclose([r[3] for r in rows], (p - y) * np.array(dz), **TOL)
    assert "gradients" in doc["notes"][-1]  # the pointer to the softmax case


# ------------------------------------------------------------------------------------------
# pitfalls
# ------------------------------------------------------------------------------------------


def double_loss(x: np.ndarray, y: int) -> float:
    return float(-np.log(softmax(softmax(x))[y]))


def test_pitfall_double_softmax() -> None:
    data = run_json("pitfalls")["data"]
    for d in data["double_softmax"]:
        x, y = np.array(d["logits"]), d["label"]
        p = softmax(x)
        np.testing.assert_allclose(d["loss"], -np.log(p[y]), **TOL)
        np.testing.assert_allclose(d["grad"], p - np.eye(x.size)[y], **TOL)
        np.testing.assert_allclose(d["double_loss"], double_loss(x, y), **TOL)
        fd = [
            central(lambda t, e=e, x=x, y=y: double_loss(x + t * e, y), 0.0) for e in np.eye(x.size)
        ]
        np.testing.assert_allclose(d["double_grad"], fd, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(d["double_grad_fd"], fd, rtol=1e-6, atol=1e-9)
    # the confident mistake: the right gradient is a full step, the double one almost nothing
    mistake = data["double_softmax"][1]
    assert mistake["grad"][0] < -0.99 and abs(mistake["double_grad"][0]) < 0.01
    for f in data["floors"]:
        c = f["classes"]
        np.testing.assert_allclose(f["floor"], np.log(math.e + c - 1) - 1, **TOL)
        np.testing.assert_allclose(f["uniform"], np.log(c), **TOL)
        # the floor is the double loss of a perfectly sure model: it never goes below it
        assert f["floor"] == pytest.approx(double_loss(np.array([60.0] + [0.0] * (c - 1)), 0))


def test_pitfall_probabilities_into_with_logits() -> None:
    data = run_json("pitfalls")["data"]
    for m in data["logits_misuse"]:
        p, y = m["prob"], m["label"]
        s = sigmoid(p)
        np.testing.assert_allclose(m["read_as"], s, **TOL)
        np.testing.assert_allclose(
            m["with_logits"], -(y * math.log(s) + (1 - y) * math.log(1 - s)), **TOL
        )
        right = -(y * math.log(p) if y else (1 - y) * math.log(1 - p))
        np.testing.assert_allclose(m["loss"], right, **TOL)
        np.testing.assert_allclose(m["with_logits_grad"], s - y, **TOL)
    np.testing.assert_allclose(
        data["with_logits_floor"], [math.log1p(math.exp(-1)), math.log(2)], **TOL
    )


def test_pitfall_cross_entropy_is_not_bounded_by_one() -> None:
    data = run_json("pitfalls")["data"]
    q = np.array([u["q"] for u in data["unbounded"]])
    np.testing.assert_allclose([u["nats"] for u in data["unbounded"]], -np.log(q), **TOL)
    np.testing.assert_allclose([u["bits"] for u in data["unbounded"]], -np.log2(q), **TOL)
    hundredth = next(u for u in data["unbounded"] if u["q"] == 0.01)
    assert f"{hundredth['nats']:.1f}" == "4.6"


def test_pitfall_binary_is_two_logit_softmax() -> None:
    data = run_json("pitfalls")["data"]
    for t in data["two_logits"]:
        z, y = t["z"], t["label"]
        want = -(y * math.log(sigmoid(z)) + (1 - y) * math.log(1 - sigmoid(z)))
        np.testing.assert_allclose([t["binary"], t["softmax"]], want, rtol=1e-12)
        np.testing.assert_allclose([t["binary_grad"], t["softmax_grad"]], sigmoid(z) - y, **TOL)
        fd = central(lambda v, y=y: -np.log(softmax(np.array([v, 0.0]))[0 if y else 1]), z)
        np.testing.assert_allclose(t["softmax_grad"], fd, rtol=1e-7)
    assert data["two_logits_max_abs_difference"] < 1e-12


def test_pitfall_eps_clipping() -> None:
    doc = run_json("pitfalls")
    data = doc["data"]
    eps = data["eps"]
    assert eps == 1e-7
    np.testing.assert_allclose(data["cap"], -math.log(eps), **TOL)
    rows = {c["prob"]: c for c in data["clipping"]}
    tiny = rows[1e-9]
    assert f"{tiny['clipped']:.3f}" == "16.118" and f"{tiny['true']:.3f}" == "20.723"
    np.testing.assert_allclose(tiny["clipped"], -math.log(eps), **TOL)
    np.testing.assert_allclose(tiny["true"], -math.log(1e-9), **TOL)
    assert tiny["clipped_grad"] == 0.0
    np.testing.assert_allclose(tiny["true_grad"], -1e9, **TOL)
    # the clipped loss is flat below eps: its finite difference is 0 too
    clipped = lambda v: -math.log(min(max(v, eps), 1 - eps))  # noqa: E731
    assert central(clipped, 1e-9, 1e-10) == 0.0
    inside = rows[1e-3]
    np.testing.assert_allclose([inside["clipped"], inside["true"]], -math.log(1e-3), **TOL)
    np.testing.assert_allclose([inside["clipped_grad"], inside["true_grad"]], -1e3, **TOL)
    zero = rows[0.0]
    assert (zero["true"], zero["true_grad"]) == ("inf", "-inf")
    np.testing.assert_allclose(zero["clipped"], -math.log(eps), **TOL)
    assert "16.118 instead of 20.723" in doc["notes"][-1]


# ------------------------------------------------------------------------------------------
# every format, all, and the table
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
@pytest.mark.parametrize("topic", LESSONS)
def test_every_lesson_in_every_format(topic: str, fmt: str) -> None:
    result = invoke(topic, "--format", fmt)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    doc = ex.find_topic(topic).doc(ex.ExplainOptions())
    if fmt == "json":
        data = json.loads(result.stdout)
        assert (data["topic"], data["title"]) == (topic, doc.title)
        assert data["formulas"] and data["tables"] and data["notes"] and data["data"]
    elif fmt == "markdown":
        assert result.stdout.startswith(f"## {doc.title}\n\n```text\n")
    else:
        assert doc.title in result.stdout


def test_all_ends_with_the_lessons_in_order() -> None:
    names = [t.name for t in ex.TOPICS]
    assert names[-4:] == LESSONS
    docs = run_json("all")["topics"]
    assert [d["topic"] for d in docs][-4:] == LESSONS


def test_in_all_probs_and_labels_are_mse_vs_ce_s() -> None:
    """Inside all, --probs rows and --labels class indices belong to mse-vs-ce; likelihood
    shows its own example there."""
    docs = {
        d["topic"]: d
        for d in run_json("all", "--probs", "0.7,0.3;0.4,0.6", "--labels", "0,1")["topics"]
    }
    assert docs["likelihood"]["data"]["likelihood"] == pytest.approx(0.3024, abs=1e-12)
    assert docs["mse-vs-ce"]["data"]["models"][0]["name"] == "your model"


def test_sections_directly() -> None:
    from crossentropy.cli.explain.topics.regression import compute_regression

    s = compute_regression(ex.ExplainOptions(), (2.0,), beta=4.0)
    assert (s.points[0].smooth_l1, s.points[0].huber_grad) == (0.5, 2.0)


# ------------------------------------------------------------------------------------------
# bad input: one line, exit 2, naming the option
# ------------------------------------------------------------------------------------------

MANY = ",".join(["0.5"] * 101)
BAD = [
    (["likelihood", "--labels", "1,0", "--probs", "0.5"], "--labels", "2 labels for 1"),
    (["likelihood", "--labels", "1", "--probs", "0.5,0.5"], "--labels", "1 labels for 2"),
    (["likelihood", "--labels", "1,2", "--probs", "0.5,0.5"], "--labels", "0 or 1"),
    (["likelihood", "--labels", "0.5", "--probs", "0.5"], "--labels", "0 or 1"),
    (["likelihood", "--labels", "1,0", "--probs", "1.5,0.5"], "--probs", "[0, 1]"),
    (["likelihood", "--labels", "1,0", "--probs", "-0.1,0.5"], "--probs", "[0, 1]"),
    (["likelihood", "--labels", "1", "--probs", "0.5;0.5"], "--probs", "one row"),
    (["likelihood", "--labels", "1,0"], "--labels", "needs --probs"),
    (["likelihood", "--probs", "0.5"], "--probs", "needs --labels"),
    (["likelihood", "--labels", "1", "--probs", "nan"], "--probs", "NaN"),
    (["likelihood", "--labels", MANY, "--probs", "0.5"], "--labels", "at most 100"),
    (["likelihood", "--beta", "1"], "--beta", "does not use --beta"),
    (["regression", "--beta", "0"], "--beta", "not a valid beta"),
    (["regression", "--beta", "-1"], "--beta", "not a valid beta"),
    (["regression", "--beta", "nan"], "--beta", "not a valid beta"),
    (["regression", "--beta", "inf"], "--beta", "not a valid beta"),
    (["regression", "--beta", "1e-9"], "--beta", "not a valid beta"),
    (["regression", "--beta", "x"], "--beta", "not a number"),
    (["regression", "--beta", ""], "--beta", "not a number"),
    (["regression", "--residuals", MANY], "--residuals", "at most 100"),
    (["regression", "--residuals", "1,nan"], "--residuals", "NaN"),
    (["regression", "--residuals", "1,,2"], "--residuals", "not a list"),
    (["regression", "--residuals", "1e7"], "--residuals", "expected residuals in"),
    (["regression", "--labels", "1"], "--labels", "does not use --labels"),
    (["binary-gradient", "--beta", "1"], "--beta", "it takes no options"),
    (["pitfalls", "--p", "1"], "--p", "it takes no options"),
    (["gradients", "--residuals", "1"], "--residuals", "does not use --residuals"),
]


@pytest.mark.parametrize(
    ("args", "option", "message"), BAD, ids=[" ".join(a)[:60] for a, *_ in BAD]
)
def test_bad_input_one_line_exit_2(args: list[str], option: str, message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crossentropy explain: error:"), lines[0]
    assert f"'{option}'" in lines[0] and message in lines[0], lines[0]
    assert "Traceback" not in result.output
