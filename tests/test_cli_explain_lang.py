"""``crossentropy explain --lang``: the lessons in English, Chinese and Russian.

Every topic of the table (:data:`crossentropy.cli.explain.TOPICS`, so that a topic added
later is covered too) and ``all``, in each language:

- the JSON is the same document in every language: the same structure, every number equal,
  only the words differ (and ``"lang"`` says which);
- the words are translated: a Chinese title and note hold CJK characters, Russian ones
  Cyrillic, and no run of English words is left in them;
- the Markdown tables print every number as the English ones do, and the text format,
  written to a pipe, keeps each table row on one line (CJK characters are two columns wide);
- the language comes from ``--lang``, else from the locale (``LC_ALL``, ``LANG``); a bad
  ``--lang`` is one line on stderr and exit status 2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from crossentropy.cli import explain as ex
from crossentropy.cli.app import app

TOPICS = [t.name for t in ex.TOPICS]
LANGS = ("en", "zh", "ru")
TRANSLATED = ("zh", "ru")
# no locale of its own: the language is what --lang (or a test's env) says
NEUTRAL = {"COLUMNS": "120", "NO_COLOR": "1", "LC_ALL": None, "LC_MESSAGES": None, "LANG": None}
SCRIPT = {"zh": re.compile(r"[\u4e00-\u9fff]"), "ru": re.compile(r"[\u0400-\u04ff]")}
# three English words in a row (symbols such as "log softmax(x)" are two at most)
ENGLISH = re.compile(r"\b[A-Za-z]{2,}[,:]? [A-Za-z]{2,}[,:]? [A-Za-z]{2,}\b")
# user numbers, so that the labels the topics number (class 0, event 0, ...) are shown too
USER = {
    "information": ["--p", "0.5,0.01"],
    "entropy": ["--p", "0.2,0.3,0.5", "--base", "3"],
    "kl": ["--p", "0.5,0.5", "--q", "0.9,0.1"],
    "cross-entropy": ["--q", "0.6,0.3,0.1", "--base", "10"],
    "softmax": ["--logits", "1,2,3"],
    "multilabel": ["--logits", "1,-1", "--labels", "1,0"],
    "mse-vs-ce": ["--probs", "0.7,0.3;0.4,0.6", "--labels", "0,1"],
    "gradients": ["--logits", "1,2,3", "--label", "2"],
    "likelihood": ["--labels", "1,0,1", "--probs", "0.8,0.3,0.6"],
    "regression": ["--residuals", "-2,0.5,3", "--beta", "0.5"],
}


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Any:
    return CliRunner().invoke(app, ["explain", *args], env={**NEUTRAL, **(env or {})})


def run_json(*args: str) -> dict[str, Any]:
    result = invoke(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def docs_of(payload: dict[str, Any]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = payload.get("topics", [payload])
    return docs


def same_but_words(en: Any, other: Any, where: str = "$") -> None:
    """``other`` is ``en`` with only its words changed: the same keys, lengths and types,
    every number equal, the non-finite numbers (the strings "inf", "-inf", "nan") too."""
    assert type(other) is type(en), (where, en, other)
    if isinstance(en, dict):
        assert list(other) == list(en), where
        for key in en:
            if key != "lang":
                same_but_words(en[key], other[key], f"{where}.{key}")
    elif isinstance(en, list):
        assert len(other) == len(en), where
        for i, (a, b) in enumerate(zip(en, other, strict=True)):
            same_but_words(a, b, f"{where}[{i}]")
    elif isinstance(en, str):
        if en in ("inf", "-inf", "nan") or where.endswith(".topic"):
            assert other == en, where
    else:  # a number, a bool or null: equal, exactly
        assert other == en, (where, en, other)


def numbers_in(payload: Any) -> int:
    if isinstance(payload, dict):
        return sum(numbers_in(v) for v in payload.values())
    if isinstance(payload, list):
        return sum(numbers_in(v) for v in payload)
    return int(isinstance(payload, int | float) and not isinstance(payload, bool))


# ------------------------------------------------------------------------------------------
# The same numbers in every language, the words translated
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [[t] for t in [*TOPICS, "all"]] + [[t, *USER[t]] for t in USER if t in TOPICS]
)
def test_json_numbers_are_the_same_in_every_language(args: list[str]) -> None:
    en = run_json(*args, "--lang", "en")
    assert en["lang"] == "en" and numbers_in(en) > 10
    for lang in TRANSLATED:
        other = run_json(*args, "--lang", lang)
        assert other["lang"] == lang
        same_but_words(en, other)
        for doc_en, doc in zip(docs_of(en), docs_of(other), strict=True):
            # the words are translated: the title and every note, in the language's script,
            # with no English sentence left in them
            assert doc["title"] != doc_en["title"] and SCRIPT[lang].search(doc["title"]), doc
            for note in doc["notes"]:
                assert SCRIPT[lang].search(note) and not ENGLISH.search(note), (lang, note)
            words = [doc["title"], *doc["formulas"]]
            words += [t["title"] or "" for t in doc["tables"]]
            words += [c for t in doc["tables"] for c in t["columns"]]
            words += [c for t in doc["tables"] for r in t["rows"] for c in r if isinstance(c, str)]
            left = [w for w in words if ENGLISH.search(w)]
            assert not left, (lang, doc["topic"], left)


def test_user_labels_are_translated_too() -> None:
    doc = run_json("gradients", "--logits", "1,2,3", "--label", "2", "--lang", "zh")
    assert [row[0] for row in doc["tables"][-1]["rows"]] == ["类别 0", "类别 1", "类别 2"]
    assert doc["data"]["label"] == "类别 2"
    doc = run_json("information", "--p", "0.5,0.01", "--lang", "ru", "--base", "2")
    assert doc["tables"][0]["columns"] == ["событие", "p(x)", "1/p(x)", "I(x), бит"]
    assert [row[0] for row in doc["tables"][0]["rows"]] == ["событие 0", "событие 1"]


def test_russian_plural_forms() -> None:
    # "с 1 исходом", "с 2 исходами", "с 5 исходами": the form follows n (ngettext)
    for p, form in (
        ("1", "с 1 исходом"),
        ("0.5,0.5", "с 2 исходами"),
        ("0.2," * 4 + "0.2", "с 5 исходами"),
    ):
        (note,) = run_json("entropy", "--p", p, "--lang", "ru")["notes"]
        assert form in note, note


# ------------------------------------------------------------------------------------------
# Markdown and text in each language
# ------------------------------------------------------------------------------------------

MD_ROW = re.compile(r"^\|.*\|$")
NUMBER = re.compile(r"-?(\d+(\.\d*)?([eE][-+]?\d+)?|inf|nan)")


def markdown_tables(text: str) -> list[list[list[str]]]:
    tables: list[list[list[str]]] = []
    block: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if MD_ROW.match(line):
            inner = line.strip()[1:-1]
            block.append([c.strip().strip("*") for c in re.split(r"(?<!\\)\|", inner)])
        elif block:
            tables.append(block)
            block = []
    return tables


@pytest.mark.parametrize("topic", [*TOPICS, "all"])
def test_markdown_prints_the_same_numbers(topic: str) -> None:
    outputs = {}
    for lang in LANGS:
        result = invoke(topic, "--format", "markdown", "--lang", lang)
        assert result.exit_code == 0 and result.stderr == "", result.output
        outputs[lang] = result.stdout
    en = markdown_tables(outputs["en"])
    assert en
    for lang in TRANSLATED:
        assert SCRIPT[lang].search(outputs[lang])
        tables = markdown_tables(outputs[lang])
        assert [len(t) for t in tables] == [len(t) for t in en]
        for table_en, table in zip(en, tables, strict=True):
            for row_en, row in zip(table_en[2:], table[2:], strict=True):
                assert len(row) == len(row_en)
                for a, b in zip(row_en, row, strict=True):
                    if NUMBER.fullmatch(a):  # a number prints the same, digit for digit
                        assert b == a, (lang, row_en, row)


def rows_on_one_line(text: str, markdown: str) -> None:
    """Every row of every table (its cells, as Markdown has them) is on one line of
    ``text``, in order: no cell was folded or wrapped."""
    lines = text.splitlines()
    checked = 0
    for table in markdown_tables(markdown):
        for row in table[2:]:
            cells = [c.replace("\\|", "|") for c in row if c]
            pattern = re.compile(r"\s+".join(re.escape(c) for c in cells))
            assert any(pattern.search(line) for line in lines), cells
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("topic", [*TOPICS, "all"])
def test_text_renders_tables_whole(topic: str, lang: str) -> None:
    # a narrow COLUMNS: written to a pipe (not a terminal), the tables must not fold
    result = invoke(topic, "--lang", lang, env={"COLUMNS": "30"})
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert "Traceback" not in result.stdout
    if lang != "en":
        assert SCRIPT[lang].search(result.stdout)
    markdown = invoke(topic, "--format", "markdown", "--lang", lang).stdout
    rows_on_one_line(result.stdout, markdown)


def test_text_through_a_real_pipe_in_chinese() -> None:
    src = str(Path(ex.__file__).resolve().parents[3])
    env = {k: v for k, v in os.environ.items() if k not in ("LC_ALL", "LC_MESSAGES")}
    env.update({"PYTHONPATH": src, "LANG": "zh_CN.UTF-8", "COLUMNS": "30", "NO_COLOR": "1"})
    env["PYTHONIOENCODING"] = "utf-8"  # whether or not the machine has the zh_CN locale
    proc = subprocess.run(
        [sys.executable, "-m", "crossentropy", "explain", "all"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "交叉熵" in proc.stdout and "信息量" in proc.stdout
    markdown = invoke("all", "--format", "markdown", "--lang", "zh").stdout
    rows_on_one_line(proc.stdout, markdown)


def test_render_all_takes_a_language() -> None:
    out = StringIO()
    ex.render_all(Console(file=out, width=100), ex.ExplainOptions(), "ru")
    assert out.getvalue().startswith("Перекрёстная энтропия шаг за шагом")
    out = StringIO()
    ex.render_all(Console(file=out, width=100), ex.ExplainOptions())
    assert out.getvalue().startswith("Cross entropy, step by step")
    with pytest.raises(ValueError, match="expected one of en, zh, ru"):
        ex.render_all(Console(file=StringIO()), ex.ExplainOptions(), "fr")


# ------------------------------------------------------------------------------------------
# The language: --lang, else the locale; a bad one refused
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LANG": "zh_CN.UTF-8"}, "zh"),
        ({"LANG": "ru_RU.UTF-8"}, "ru"),
        ({"LC_ALL": "ru_RU.UTF-8", "LANG": "zh_CN.UTF-8"}, "ru"),
        ({"LANG": "de_DE.UTF-8"}, "en"),
        ({"LANG": "C.UTF-8"}, "en"),
        ({}, "en"),
    ],
)
def test_the_language_comes_from_the_locale(env: dict[str, str], expected: str) -> None:
    result = invoke("kl", "--format", "json", env=dict(env))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["lang"] == expected
    assert doc["title"] == run_json("kl", "--lang", expected)["title"]
    # --lang wins over the locale
    result = invoke("kl", "--format", "json", "--lang", "en", env=dict(env))
    assert json.loads(result.stdout)["lang"] == "en"


@pytest.mark.parametrize("bad", ["fr", "ZH", "zh_CN", ""])
def test_a_bad_lang_is_one_line(bad: str) -> None:
    result = invoke("entropy", "--lang", bad)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Invalid value for '--lang'" in result.stderr
    assert f"got {bad!r}" in result.stderr and "en, zh, ru" in result.stderr
