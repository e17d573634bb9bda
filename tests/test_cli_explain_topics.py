"""``crossentropy explain TOPIC``: every topic in every format, user numbers, and bad input.

JSON numbers are checked against independent float64 NumPy formulas written here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from crossentropy.cli import explain as ex
from crossentropy.cli.app import app

WIDE = {"COLUMNS": "120", "NO_COLOR": "1"}
TOL = {"rtol": 1e-12, "atol": 1e-12}
TOPICS = [
    "information",
    "entropy",
    "kl",
    "cross-entropy",
    "softmax",
    "multilabel",
    "mse-vs-ce",
    "gradients",
    "likelihood",
    "regression",
    "binary-gradient",
    "pitfalls",
]


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
    e = np.exp(x - x.max())
    return e / e.sum()


def xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    nz = x > 0
    out[nz] = x[nz] * np.log(y[nz])
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ------------------------------------------------------------------------------------------
# Every topic in every format
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", [*TOPICS, "all"])
def test_text(topic: str) -> None:
    result = invoke(topic)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert "Traceback" not in result.stdout
    assert len(result.stdout.splitlines()) > 8


MD_ROW = re.compile(r"^\|.*\|$")


def md_cells(line: str) -> list[str]:
    inner = line.strip()[1:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", inner)]


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every pipe table, checked: header, separator of the same width, rows of that width."""
    tables: list[list[list[str]]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if MD_ROW.match(lines[i]):
            block = []
            while i < len(lines) and MD_ROW.match(lines[i]):
                block.append(md_cells(lines[i]))
                i += 1
            header, sep, *rows = block
            assert len(sep) == len(header), block
            assert all(re.fullmatch(r":?-{3,}:?", c) for c in sep), sep
            assert rows, block
            for row in rows:
                assert len(row) == len(header), (header, row)
            tables.append(block)
        else:
            # a table never starts without a blank line before it (or the start)
            i += 1
    return tables


@pytest.mark.parametrize("topic", [*TOPICS, "all"])
def test_markdown(topic: str) -> None:
    result = invoke(topic, "--format", "markdown")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    text = result.stdout
    assert text.count("```") % 2 == 0 and "```text" in text
    assert re.search(r"^## ", text, re.M)
    lines = text.splitlines()
    for k, line in enumerate(lines):  # a table is preceded by a blank line
        if MD_ROW.match(line) and (k == 0 or not MD_ROW.match(lines[k - 1])):
            assert k > 0 and lines[k - 1] == "", lines[k - 1]
    tables = markdown_tables(text)
    assert tables
    # the JSON of the same topic has as many tables, with the same columns
    docs = run_json(topic)
    docs_list = docs["topics"] if topic == "all" else [docs]
    json_tables = [t for d in docs_list for t in d["tables"]]
    assert len(tables) == len(json_tables)
    for md, js in zip(tables, json_tables, strict=True):
        assert [c.replace("\\|", "|") for c in md[0]] == js["columns"]
        assert len(md) - 2 == len(js["rows"])


@pytest.mark.parametrize("topic", TOPICS)
def test_json_shape(topic: str) -> None:
    doc = run_json(topic)
    assert set(doc) == {"topic", "title", "formulas", "tables", "notes", "data", "lang"}
    assert doc["topic"] == topic and doc["lang"] == "en"
    assert doc["formulas"] and doc["tables"] and doc["notes"]
    for t in doc["tables"]:
        assert set(t) == {"title", "columns", "rows"}
        for row in t["rows"]:
            assert len(row) == len(t["columns"])
            for cell in row:
                assert cell is None or isinstance(cell, str | float | int)


def test_all_json_in_order() -> None:
    docs = run_json("all")
    assert [d["topic"] for d in docs["topics"]] == TOPICS
    default = run_json()
    assert default == docs


def test_text_all_is_the_default() -> None:
    assert invoke().stdout == invoke("all").stdout


# ------------------------------------------------------------------------------------------
# JSON numbers against NumPy, with default and user numbers
# ------------------------------------------------------------------------------------------


def test_information_user_p_base_2() -> None:
    doc = run_json("information", "--p", "0.5,0.25,0.125", "--base", "2")
    p = np.array([0.5, 0.25, 0.125])
    events = doc["data"]["events"]
    assert [e["p"] for e in events] == p.tolist()
    np.testing.assert_allclose([e["information"][0] for e in events], -np.log2(p), **TOL)
    np.testing.assert_allclose(doc["data"]["ratio"], 3.0, **TOL)
    rows = doc["tables"][0]["rows"]
    np.testing.assert_allclose([r[2] for r in rows], 1 / p, **TOL)
    np.testing.assert_allclose([r[3] for r in rows], [1, 2, 3], **TOL)
    assert doc["tables"][0]["columns"][-1] == "I(x) in bits"


def test_information_of_an_impossible_event_is_inf() -> None:
    doc = run_json("information", "--p", "1,0")
    assert doc["data"]["events"][1]["information"] == ["inf", "inf"]
    assert doc["data"]["ratio"] is None


def test_entropy_user_p() -> None:
    p = np.array([0.1, 0.2, 0.3, 0.4])
    doc = run_json("entropy", "--p", "0.1,0.2,0.3,0.4")
    h = -np.sum(p * np.log(p))
    np.testing.assert_allclose(doc["data"]["entropy"], [h, h / np.log(2)], **TOL)
    np.testing.assert_allclose(doc["data"]["max_entropy"], [np.log(4), 2.0], **TOL)
    terms = doc["data"]["terms"]
    np.testing.assert_allclose([t["term"][0] for t in terms], -p * np.log(p), **TOL)
    total = doc["tables"][0]["rows"][-1]
    assert total[0] == "H(p) = sum"
    np.testing.assert_allclose([total[3], total[5]], [h, h / np.log(2)], **TOL)


@pytest.mark.parametrize("base", ["e", "2", "10"])
def test_kl_user_numbers(base: str) -> None:
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])
    doc = run_json("kl", "--p", "0.5,0.5,0", "--q", "0.25,0.25,0.5", "--base", base)
    scale = {"e": 1.0, "2": np.log(2), "10": np.log(10)}[base]
    kl = float(np.sum(xlogy(p, p) - xlogy(p, q))) / scale
    data = doc["data"]
    assert data["p"] == p.tolist() and data["q"] == q.tolist()
    assert len(data["units"]) == 1
    np.testing.assert_allclose(data["kl"], [kl], **TOL)
    assert data["reverse_kl"] == ["inf"]  # q puts mass where p has none
    np.testing.assert_allclose(
        [t["kl"][0] for t in data["terms"]], (xlogy(p, p) - xlogy(p, q)) / scale, **TOL
    )
    summary = table(doc, "not symmetric")
    np.testing.assert_allclose(summary["rows"][0][1], kl, **TOL)


def test_kl_default_both_units() -> None:
    doc = run_json("kl")
    p, q = np.array(doc["data"]["p"]), np.array(doc["data"]["q"])
    kl = float(np.sum(p * np.log(p / q)))
    rkl = float(np.sum(q * np.log(q / p)))
    np.testing.assert_allclose(doc["data"]["kl"], [kl, kl / np.log(2)], **TOL)
    np.testing.assert_allclose(doc["data"]["reverse_kl"], [rkl, rkl / np.log(2)], **TOL)
    assert kl > 0 and rkl > 0 and not np.isclose(kl, rkl)


def test_cross_entropy_user_numbers() -> None:
    p, q = np.array([0.2, 0.8]), np.array([0.6, 0.4])
    doc = run_json("cross-entropy", "--p", "0.2,0.8", "--q", "0.6,0.4")
    h = -np.sum(p * np.log(p))
    hq = -np.sum(p * np.log(q))
    (d_nats, d_bits) = doc["data"]["decompositions"]  # the user's p only, nats and bits
    np.testing.assert_allclose(
        [d_nats["entropy"], d_nats["kl"], d_nats["cross_entropy"]], [h, hq - h, hq], **TOL
    )
    np.testing.assert_allclose(d_bits["cross_entropy"], hq / np.log(2), **TOL)
    terms = table(doc, "p = [0.2, 0.8]")
    np.testing.assert_allclose(terms["rows"][-1][3], hq, **TOL)
    decomposition = doc["tables"][1]
    for row in decomposition["rows"]:
        np.testing.assert_allclose(row[4], row[5], **TOL)  # H(p) + KL == H(p, q)


def test_softmax_user_logits() -> None:
    x = np.array([3.0, -1.0, 0.5, 0.5])
    doc = run_json("softmax", "--logits", "3,-1,0.5,0.5")
    data = doc["data"]
    p = softmax(x)
    lse = np.log(np.sum(np.exp(x)))
    np.testing.assert_allclose([c["prob"] for c in data["components"]], p, **TOL)
    np.testing.assert_allclose([c["log_prob"] for c in data["components"]], x - lse, **TOL)
    np.testing.assert_allclose([c["prob_of_shifted"] for c in data["components"]], p, **TOL)
    np.testing.assert_allclose(data["logsumexp"], lse, **TOL)
    np.testing.assert_allclose(data["prob_sum"], 1.0, **TOL)
    for row in data["temperatures"]:
        pt = softmax(x / row["temperature"])
        np.testing.assert_allclose(row["probs"], pt, **TOL)
        np.testing.assert_allclose(row["entropy"], -np.sum(pt * np.log(pt)), **TOL)
    assert [c["logit"] for c in data["components"]] == x.tolist()


def test_multilabel_user_numbers() -> None:
    x, y = np.array([1.5, -0.5, 4.0]), np.array([1.0, 0.0, 0.0])
    doc = run_json("multilabel", "--logits", "1.5,-0.5,4", "--labels", "1,0,0")
    s = sigmoid(x)
    loss = -(y * np.log(s) + (1 - y) * np.log(1 - s))
    tags = doc["data"]["tags"]
    np.testing.assert_allclose([t["prob"] for t in tags], s, **TOL)
    np.testing.assert_allclose([t["loss"] for t in tags], loss, **TOL)
    np.testing.assert_allclose(doc["data"]["total"], loss.sum(), **TOL)
    np.testing.assert_allclose(doc["data"]["mean"], loss.mean(), **TOL)
    np.testing.assert_allclose(doc["data"]["prob_sum"], s.sum(), **TOL)


def test_mse_vs_ce_user_numbers() -> None:
    q = np.array([[0.6, 0.4], [0.1, 0.9], [0.5, 0.5]])
    labels = np.array([0, 0, 1])
    doc = run_json("mse-vs-ce", "--probs", "0.6,0.4;0.1,0.9;0.5,0.5", "--labels", "0,0,1")
    (model,) = doc["data"]["models"]
    y = np.eye(2)[labels]
    ce = -np.log(q[np.arange(3), labels])
    se = np.sum((q - y) ** 2, axis=1)
    np.testing.assert_allclose([s["cross_entropy"] for s in model["samples"]], ce, **TOL)
    np.testing.assert_allclose([s["mse"] for s in model["samples"]], se, **TOL)
    np.testing.assert_allclose(model["mean_cross_entropy"], ce.mean(), **TOL)
    np.testing.assert_allclose(model["mean_mse"], se.mean(), **TOL)
    for row in doc["data"]["saturation"]:
        z = row["logit"]
        s = sigmoid(np.array(z))
        np.testing.assert_allclose(row["cross_entropy"], -np.log(s), **TOL)
        np.testing.assert_allclose(row["cross_entropy_grad"], s - 1, **TOL)
        np.testing.assert_allclose(row["mse"], (s - 1) ** 2, **TOL)
        np.testing.assert_allclose(row["mse_grad"], 2 * (s - 1) * s * (1 - s), **TOL)


def test_mse_vs_ce_default_saturation_story() -> None:
    doc = run_json("mse-vs-ce")
    sat = doc["data"]["saturation"]
    worst = min(sat, key=lambda r: r["logit"])
    assert abs(worst["cross_entropy_grad"]) > 100 * abs(worst["mse_grad"])


@pytest.mark.parametrize(
    ("logits", "label"),
    [("2,1,0.1", "0"), ("2,1,0.1", None), ("0.3,-2,5,1,0", "4"), ("10,-10", "1")],
)
def test_gradients_numbers(logits: str, label: str | None) -> None:
    args = ["gradients", "--logits", logits] + ([] if label is None else ["--label", label])
    doc = run_json(*args)
    data = doc["data"]
    x = np.array([float(v) for v in logits.split(",")])
    k = 1 if label is None else int(label)
    p = softmax(x)
    y = np.eye(x.size)[k]
    jac = np.diag(p) - np.outer(p, p)
    comps = data["components"]
    assert [c["logit"] for c in comps] == x.tolist()
    assert data["label_index"] == k
    np.testing.assert_allclose(data["loss"], -np.log(p[k]), **TOL)
    np.testing.assert_allclose(data["jacobian"], jac, **TOL)
    np.testing.assert_allclose(data["jacobian_fd"], jac, atol=1e-8)
    assert data["jacobian_max_abs_error"] < 1e-8
    np.testing.assert_allclose([c["prob"] for c in comps], p, **TOL)
    np.testing.assert_allclose([c["p_minus_y"] for c in comps], p - y, **TOL)
    np.testing.assert_allclose([c["gradient"] for c in comps], p - y, **TOL)
    np.testing.assert_allclose([c["chain"] for c in comps], p - y, **TOL)
    np.testing.assert_allclose([c["dloss_dprob"] for c in comps], -y / p, **TOL)
    np.testing.assert_allclose([c["finite_difference"] for c in comps], p - y, atol=1e-7)
    assert data["max_abs_error"] < 1e-7 and data["chain_max_abs_error"] < 1e-12
    np.testing.assert_allclose(data["gradient_sum"], 0.0, atol=1e-12)
    # the table carries the same numbers as the data
    main = table(doc, "true class")
    np.testing.assert_allclose([r[7] for r in main["rows"]], p - y, **TOL)
    np.testing.assert_allclose(
        [r[9] for r in main["rows"]],
        [abs(c["gradient"] - c["finite_difference"]) for c in comps],
        **TOL,
    )


def test_gradients_text_shows_both_jacobian_cases() -> None:
    result = invoke("gradients", "--logits", "2,1,0.1", "--label", "0")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "p_i (1 - p_i)   if i = j" in out and "-p_i p_j        if i ≠ j" in out
    assert "true class: class 0" in out
    p = softmax(np.array([2.0, 1.0, 0.1]))
    assert f"{p[0] * (1 - p[0]):.4f}" in out and f"{-p[0] * p[1]:.4f}" in out
    assert f"{p[0] - 1:.4f}" in out


def test_user_numbers_in_all() -> None:
    docs = {d["topic"]: d for d in run_json("all", "--logits", "1,2,3", "--label", "2")["topics"]}
    np.testing.assert_allclose(
        [c["prob"] for c in docs["softmax"]["data"]["components"]],
        softmax(np.array([1.0, 2.0, 3.0])),
        **TOL,
    )
    assert docs["gradients"]["data"]["label_index"] == 2
    assert docs["multilabel"]["data"]["tags"][0]["tag"] == "outdoor"  # default


def test_markdown_carries_user_numbers() -> None:
    result = invoke("entropy", "--p", "0.5,0.5", "--base", "2", "--format", "markdown")
    assert result.exit_code == 0, result.output
    rows = markdown_tables(result.stdout)[0]
    assert rows[-1] == ["**H(p) = sum**", "", "", "**1.000**"]


def test_library_sections_directly() -> None:
    o = ex.ExplainOptions(p=(0.5, 0.5))
    docs = ex.build_docs("entropy", o)
    assert docs[0].data.entropy == pytest.approx((np.log(2), 1.0), rel=1e-12)


# ------------------------------------------------------------------------------------------
# Bad input: one line on stderr, exit 2, no traceback
# ------------------------------------------------------------------------------------------


BAD = [
    (["nope"], "unknown topic 'nope'"),
    (["entropy", "--p", "1,x"], "'x' is not a number"),
    (["entropy", "--p", ""], "not a list of numbers"),
    (["entropy", "--p", "0.5,,0.5"], "not a list of numbers"),
    (["entropy", "--p", "nan,1"], "NaN"),
    (["gradients", "--logits", "1,inf"], "not finite"),
    (["entropy", "--p", "-0.5,1.5"], "entry 0 is negative"),
    (["entropy", "--p", "0.5,0.4"], "sums to 0.9, not 1"),
    (["kl", "--q", "0.5,0.6"], "'--q'"),
    (["kl", "--p", "0.5,0.5", "--q", "0.2,0.3,0.5"], "same length"),
    (["cross-entropy", "--p", "0.5,0.5"], "--q has 3 (the default)"),
    (["information", "--p", "1.5"], "must be in [0, 1]"),
    (["gradients", "--label", "3"], "out of range for 3 logits"),
    (["gradients", "--logits", "1,2", "--label", "-1"], "out of range for 2 logits"),
    (["gradients", "--label", "x"], "--label"),
    (["all", "--label", "5"], "out of range"),
    (["mse-vs-ce", "--probs", "0.5,0.5;0.2,0.3,0.5", "--labels", "0,1"], "different lengths"),
    (["mse-vs-ce", "--probs", "0.5,0.5;0.2,0.3", "--labels", "0,1"], "row 1"),
    (["mse-vs-ce", "--probs", "0.5,0.5", "--labels", "2"], "not a class index"),
    (["mse-vs-ce", "--probs", "0.5,0.5", "--labels", "0,1"], "2 labels for 1 rows"),
    (["mse-vs-ce", "--probs", "0.5,0.5"], "needs --labels"),
    (["multilabel", "--logits", "1,2", "--labels", "1"], "1 labels for 2 logits"),
    (["multilabel", "--logits", "1,2"], "needs --labels"),
    (["multilabel", "--logits", "1,2", "--labels", "1,2"], "must be in [0, 1]"),
    (["entropy", "--q", "0.5,0.5"], "does not use --q"),
    (["gradients", "--base", "2"], "does not use --base"),
    (["entropy", "--format", "xml"], "unknown format 'xml'"),
    (["entropy", "--base", "1"], "not a valid base"),
]


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_bad_input_one_line_exit_2(args: list[str], message: str, fmt: str) -> None:
    result = invoke(*args, "--format", fmt) if "--format" not in args else invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("crossentropy explain: error:")
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.output


def test_bad_distribution_names_the_option() -> None:
    result = invoke("kl", "--p", "0.5,0.5", "--q", "0.9,0.9")
    assert result.exit_code == 2
    assert "'--q'" in result.stderr and "sums to 1.8" in result.stderr


# ------------------------------------------------------------------------------------------
# The installed console script
# ------------------------------------------------------------------------------------------


def test_console_script_gradients_json() -> None:
    script = Path(sys.executable).parent / "crossentropy"
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    proc = subprocess.run(
        [str(script), "explain", "gradients", "--format", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, **WIDE},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    doc = json.loads(proc.stdout)
    assert doc["topic"] == "gradients"
    x = np.array([c["logit"] for c in doc["data"]["components"]])
    p = softmax(x)
    y = np.eye(x.size)[doc["data"]["label_index"]]
    np.testing.assert_allclose([c["gradient"] for c in doc["data"]["components"]], p - y, **TOL)
    np.testing.assert_allclose(doc["data"]["jacobian"], np.diag(p) - np.outer(p, p), **TOL)


# ------------------------------------------------------------------------------------------
# The table of topics: every topic module registered, reachable and rendered
# ------------------------------------------------------------------------------------------

TABLE = [t.name for t in ex.TOPICS]


def test_the_table_holds_every_topic_module_once() -> None:
    """A topic module without its line in TOPICS (or a line without its module) fails here."""
    import pkgutil

    from crossentropy.cli.explain import topics

    modules = sorted(f"{topics.__name__}.{m.name}" for m in pkgutil.iter_modules(topics.__path__))
    registered = [t.compute.__module__ for t in ex.TOPICS]
    assert sorted(registered) == modules
    assert [t.layout.__module__ for t in ex.TOPICS] == registered
    assert len(set(TABLE)) == len(TABLE)
    assert (*TABLE, "all") == ex.TOPIC_NAMES
    assert TABLE == TOPICS  # the order of `explain all`, as the tests above know it


def test_the_options_a_topic_reads_are_options_of_the_command() -> None:
    import typer.main

    command = typer.main.get_command(app).commands["explain"]  # type: ignore[attr-defined]
    accepted = {opt for param in command.params for opt in param.opts}
    for topic in ex.TOPICS:
        assert set(topic.options) <= accepted, (topic.name, set(topic.options) - accepted)


@pytest.mark.parametrize("fmt", ex.FORMATS)
@pytest.mark.parametrize("name", TABLE)
def test_every_topic_of_the_table_renders(name: str, fmt: str) -> None:
    doc = ex.find_topic(name).doc(ex.ExplainOptions())
    result = invoke(name, "--format", fmt)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    if fmt == "json":
        data = json.loads(result.stdout)
        assert (data["topic"], data["title"]) == (name, doc.title)
        assert data["tables"] and data["data"]
    elif fmt == "markdown":
        assert result.stdout.startswith(f"## {doc.title}\n\n```text\n"), result.stdout[:200]
        assert markdown_tables(result.stdout)
    else:
        assert result.stdout.splitlines()[1].startswith(f"{doc.title} ─"), result.stdout[:200]


def test_all_is_the_table_in_order() -> None:
    data = run_json("all")
    assert [d["topic"] for d in data["topics"]] == TABLE
