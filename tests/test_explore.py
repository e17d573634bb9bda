"""Tests of :mod:`crossentropy.explore` and ``crossentropy explore`` without a browser.

The page is one self-contained file (no reference to anything outside it, well-formed
enough for an HTML parser, its starting values where the script reads them); the command
writes it, serves it on localhost (checked over HTTP in a subprocess, stopped with Ctrl-C),
opens the browser the environment names, and turns every bad input into one line on stderr
with exit status 2. The page's words come from the ``explore`` catalogues: the static text
is rendered in the language asked for (``--lang``, else the locale's), every message's
translation into each language is embedded for the page's switch, and nothing but the words
differs between the languages. The numbers the page shows are checked in a real browser in
tests/test_explore_browser.py.
"""

from __future__ import annotations

import html
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import crossentropy
from crossentropy import i18n
from crossentropy.cli.app import app
from crossentropy.explore import (
    DEFAULT_LOGITS,
    MAX_CLASSES,
    build_page,
    make_server,
    messages,
    server,
    write_page,
)

# LC_ALL=C: the page's language from the locale is English, whatever this machine's is
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "LC_ALL": "C.UTF-8"}
SRC = Path(crossentropy.__file__).resolve().parents[1]


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(app, ["explore", *args], env={**ENV, **(env or {})})


def assert_bad(result: Any, *fragments: str) -> str:
    """Exit 2, nothing on stdout, one line on stderr naming the problem, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line: str = lines[0]
    assert line.startswith("crossentropy explore: error:"), line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


class _Structure(HTMLParser):
    """Collects tags, ids, attributes and the script texts of a page."""

    VOID = frozenset(
        {"meta", "input", "br", "img", "link", "hr", "col", "wbr", "source", "area", "base"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.ids: list[str] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.mismatched: list[str] = []
        self.doctype = ""

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if a.get("id"):
            self.ids.append(str(a["id"]))
        if tag == "script":
            self.scripts.append((a, ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        else:
            self.mismatched.append(tag)

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] == "script" and self.scripts:
            attrs, text = self.scripts[-1]
            self.scripts[-1] = (attrs, text + data)


def parse(page: str) -> _Structure:
    s = _Structure()
    s.feed(page)
    s.close()
    return s


# ------------------------------------------------------------------------------------------
# the page
# ------------------------------------------------------------------------------------------


def test_page_is_self_contained() -> None:
    page = build_page()
    # no address of anything outside the page: no scheme, no protocol-relative URL
    assert re.search(r"[a-z]+://", page, re.IGNORECASE) is None
    assert "//cdn" not in page and 'src="//' not in page
    assert "@import" not in page and "url(" not in page and "@font-face" not in page
    s = parse(page)
    for tag, attrs in s.tags:
        assert "src" not in attrs, (tag, attrs)
        if tag == "link":  # only the empty icon, so that no browser asks for /favicon.ico
            assert attrs == {"rel": "icon", "href": "data:,"}, attrs
        elif "href" in attrs:
            assert str(attrs["href"]).startswith("#"), (tag, attrs)
        assert tag not in {"iframe", "img", "object", "embed", "base"}, tag
    # the JavaScript and CSS are inline, not loaded
    assert "fetch(" not in page and "XMLHttpRequest" not in page and "import(" not in page
    kinds = [a.get("type") for a, _ in s.scripts]
    assert kinds == ["application/json", None]


def test_page_structure() -> None:
    page = build_page()
    s = parse(page)
    assert s.doctype.lower() == "doctype html"
    assert s.mismatched == [] and s.stack == []
    assert len(s.ids) == len(set(s.ids)), "duplicate ids"
    for needed in (
        "view-softmax",
        "view-binary",
        "view-regression",
        "lang-en",
        "lang-zh",
        "lang-ru",
        "residual",
        "residual-value",
        "beta",
        "beta-value",
        "delta",
        "delta-value",
        "regression-rows",
        "classes",
        "temperature",
        "temperature-value",
        "label-mode-class",
        "label-mode-soft",
        "curve-logit",
        "class-rows",
        "ce-nats",
        "ce-bits",
        "mse",
        "bce-sum-total",
        "bce-bits",
        "se-sum-total",
        "curve-left",
        "curve-right",
        "explore-config",
    ):
        assert needed in s.ids, needed
    # the formulas are MathML, not images or a font loaded from elsewhere
    assert sum(1 for tag, _ in s.tags if tag == "math") >= 8
    assert "@@" not in page  # every placeholder filled
    assert f'content="crossentropy {crossentropy.__version__}"' in page


def config(page: str) -> dict[str, Any]:
    s = parse(page)
    (text,) = [t for a, t in s.scripts if a.get("type") == "application/json"]
    data: dict[str, Any] = json.loads(text)
    return data


def test_page_config() -> None:
    c = config(build_page([1.5, -0.25, 3.0, 0.0], label=2, temperature=0.5, view="binary"))
    assert c["logits"] == [1.5, -0.25, 3.0, 0.0]
    assert (c["label"], c["temperature"], c["view"]) == (2, 0.5, "binary")
    assert c["limits"]["minClasses"] == 2 and c["limits"]["maxClasses"] == 6
    assert config(build_page())["logits"] == list(DEFAULT_LOGITS)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"logits": [1.0]}, ValueError, "logits: expected 2 to 6 values"),
        ({"logits": [0.0] * 7}, ValueError, "got 7"),
        ({"logits": [0.0, float("nan")]}, ValueError, "at position 1"),
        ({"logits": [0.0, 10.5]}, ValueError, "in [-10, 10]"),
        ({"logits": "ab"}, TypeError, "logits: expected a sequence of numbers"),
        ({"logits": [1.0, 2.0], "label": 2}, ValueError, "label: expected a class index in [0, 2)"),
        ({"label": 1.0}, TypeError, "label: expected a class index"),
        ({"label": True}, TypeError, "label"),
        ({"temperature": 0.0}, ValueError, "temperature: expected a number in [0.1, 10]"),
        ({"temperature": 11}, ValueError, "temperature"),
        ({"temperature": "1"}, TypeError, "temperature"),
        ({"view": "tree"}, ValueError, "view: expected one of softmax, binary, regression"),
        ({"lang": "fr"}, ValueError, "lang: expected one of en, zh, ru; got 'fr'"),
        ({"lang": "zh_CN"}, ValueError, "lang: expected one of en, zh, ru"),
    ],
)
def test_build_page_rejects(kwargs: dict[str, Any], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error) as exc:
        build_page(**kwargs)
    assert fragment in str(exc.value)


def test_write_page(tmp_path: Path) -> None:
    path = write_page(tmp_path / "p.html", [0.5, 0.25], label=1, temperature=2.0)
    assert path.read_text(encoding="utf-8") == build_page([0.5, 0.25], label=1, temperature=2.0)


def test_assets_are_package_data() -> None:
    """The template, stylesheet and script ship inside the package (hatch puts every file
    of src/crossentropy in the wheel); build_page reads them from there."""
    here = Path(crossentropy.__file__).parent / "explore"
    for name in ("explore.html", "explore.css", "explore.js"):
        assert (here / name).is_file(), name
    page = build_page()
    assert (here / "explore.js").read_text(encoding="utf-8").strip() in page
    assert (here / "explore.css").read_text(encoding="utf-8").strip() in page


# ------------------------------------------------------------------------------------------
# the languages
# ------------------------------------------------------------------------------------------

CJK = re.compile(r"[\u4e00-\u9fff]")
CYRILLIC = re.compile(r"[\u0400-\u04ff]")


def test_page_in_each_language() -> None:
    """The static text is the catalogue's translation of each message, its fields filled
    with the same markup in every language; the config (the numbers, the embedded
    catalogues) is the same in every language but for the language."""
    pages = {lang: build_page([1.5, -0.25, 3.0], label=2, lang=lang) for lang in i18n.LANGUAGES}
    configs = {lang: config(page) for lang, page in pages.items()}
    template = (Path(crossentropy.__file__).parent / "explore" / "explore.html").read_text()
    keys = set(re.findall(r'data-(?:text|label)="([\w-]+)"', template))
    for lang, page in pages.items():
        assert f'<html lang="{lang}">' in page
        c = configs[lang]
        assert c["lang"] == lang and set(c["text"]) == keys
        catalogue = i18n.translations(lang, "explore")
        words = []
        for key, message in c["text"].items():
            translated = catalogue.gettext(message)
            words.append(translated)
            markup = c["markup"]
            filled = re.sub(
                r"\{(\w+)\}", lambda m, f=markup: f[m[1]], html.escape(translated, quote=False)
            )
            if f'data-text="{key}"' in template:
                assert f'data-text="{key}">{filled}</' in page, (lang, key)
            else:
                assert f'data-label="{key}" aria-label="{html.escape(translated)}"' in page
        assert bool(CJK.search(" ".join(words))) == (lang == "zh")
        assert bool(CYRILLIC.search(" ".join(words))) == (lang == "ru")
    assert '<h1 data-text="heading">Поиграйте с логитами и остатками</h1>' in pages["ru"]
    assert '<i>T</i> = <span id="temperature-shown"></span>）' in pages["zh"]
    for lang in ("zh", "ru"):
        assert {k: v for k, v in configs[lang].items() if k != "lang"} == {
            k: v for k, v in configs["en"].items() if k != "lang"
        }
    # the formulas are the same in every language
    maths = {lang: re.findall(r"<math.*?</math>", page, re.DOTALL) for lang, page in pages.items()}
    assert maths["zh"] == maths["ru"] == maths["en"] and len(maths["en"]) >= 12


def test_embedded_catalogues_are_the_compiled_ones() -> None:
    """Every message of the page, translated into each language from the shipped .mo: what
    the page's switch reads."""
    catalogues = config(build_page())["catalogues"]
    assert set(catalogues) == set(i18n.LANGUAGES) and catalogues["en"] == {}
    wanted = messages()
    assert len(wanted) >= 60
    for lang in ("zh", "ru"):
        compiled = i18n.translations(lang, "explore")
        assert set(catalogues[lang]) == set(wanted)
        for message in wanted:
            assert catalogues[lang][message] == compiled.gettext(message), message
        # all translated but a few terms kept as they are ("softmax {p}", "logit {x}")
        kept = [m for m in wanted if catalogues[lang][m] == m]
        assert len(kept) <= 3, kept
    assert catalogues["zh"]["cross entropy (nats)"] == "交叉熵（奈特）"
    assert catalogues["ru"]["cross entropy (nats)"] == "перекрёстная энтропия (наты)"


def test_messages_are_what_babel_extracts() -> None:
    """The page finds the script's messages as Babel's javascript extractor does (so that
    the messages embedded are exactly those the catalogues translate)."""
    pytest.importorskip("babel")
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_javascript, extract_python

    here = Path(crossentropy.__file__).parent / "explore"
    keywords = {**DEFAULT_KEYWORDS, "N_": None}
    found: set[str] = set()
    for name, extractor in (("explore.js", extract_javascript), ("page.py", extract_python)):
        with (here / name).open("rb") as f:
            # (None: a call on a variable, _(message), which Babel skips)
            found |= {m for _, _, m, _ in extractor(f, keywords, [], {}) if m is not None}
    assert found == set(messages())
    assert "Play with logits and residuals" in found and "their derivatives" in found


# ------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------


def test_cli_writes_the_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke()
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "explore.html"
    assert (tmp_path / "explore.html").read_text(encoding="utf-8") == build_page()

    out = tmp_path / "deep" / "er" / "page.html"
    args = ["--out", str(out), "--logits", "3, 1,-2,0.5", "--label", "2", "-t", "1.5"]
    result = invoke(*args, "--view", "binary")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    c = config(out.read_text(encoding="utf-8"))
    assert c["logits"] == [3.0, 1.0, -2.0, 0.5]
    assert (c["label"], c["temperature"], c["view"]) == (2, 1.5, "binary")

    # a directory: explore.html in it
    result = invoke("--out", str(tmp_path / "deep"), "--logits", "1,2")
    assert result.exit_code == 0, result.output
    assert config((tmp_path / "deep" / "explore.html").read_text(encoding="utf-8"))["logits"] == [
        1.0,
        2.0,
    ]


def test_cli_lang(tmp_path: Path) -> None:
    """--lang writes the page in that language; without it, the locale's language."""
    out = tmp_path / "p.html"
    for lang in i18n.LANGUAGES:
        result = invoke("--out", str(out), "--lang", lang, "--view", "regression")
        assert result.exit_code == 0, result.output
        page = out.read_text(encoding="utf-8")
        assert page == build_page(view="regression", lang=lang)
    for environ, lang in (
        ({"LC_ALL": "ru_RU.UTF-8"}, "ru"),
        ({"LC_ALL": "", "LANG": "zh_CN.UTF-8"}, "zh"),
        ({"LC_ALL": "de_DE.UTF-8"}, "en"),
    ):
        result = invoke("--out", str(out), env=environ)
        assert result.exit_code == 0, result.output
        assert config(out.read_text(encoding="utf-8"))["lang"] == lang


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--logits", "1"], ["'--logits'", "2 to 6 values", "got 1"]),
        (["--logits", ",".join(["1"] * (MAX_CLASSES + 1))], ["'--logits'", "got 7"]),
        (["--logits", "1,x"], ["'--logits'", "'x' is not a number"]),
        (["--logits", "1,,2"], ["'--logits'", "not a list of numbers"]),
        (["--logits", "1,inf"], ["'--logits'", "not finite"]),
        (["--logits", "1,-12"], ["'--logits'", "[-10, 10]", "-12"]),
        (["--label", "3"], ["'--label'", "[0, 3)"]),
        (["--label", "-1"], ["'--label'", "got -1"]),
        (["--label", "one"], ["'--label'"]),
        (["--temperature", "0.01"], ["'--temperature'", "[0.1, 10]"]),
        (["--temperature", "nan"], ["'--temperature'"]),
        (["--view", "tree"], ["'--view'", "tree"]),
        (["--lang", "fr"], ["'--lang'", "expected one of en, zh, ru", "'fr'"]),
        (["--lang", ""], ["'--lang'", "expected one of en, zh, ru"]),
        (["--port", "8000"], ["'--port'", "only applies with --serve"]),
        (["--no-open"], ["'--no-open'", "only applies with --serve"]),
        (["--serve", "--port", "70000"], ["'--port'", "65535"]),
        (["--serve", "--port", "-1"], ["'--port'"]),
        (["--bogus"], ["--bogus"]),
    ],
)
def test_cli_bad_input(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    out = tmp_path / "x.html"
    assert_bad(invoke("--out", str(out), *args), *fragments)
    assert not out.exists()


def test_cli_unwritable_out(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert_bad(invoke("--out", str(blocker / "x.html")), "'--out'", "cannot write", "file")
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert_bad(invoke("--out", str(locked / "x.html")), "'--out'", "Permission denied")


def test_cli_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = assert_bad(
            invoke("--out", str(tmp_path / "x.html"), "--serve", "--no-open", "--port", str(port)),
            "'--port'",
            f"127.0.0.1:{port}",
        )
    assert "in use" in line


def test_cli_serve_opens_the_browser_and_stops_on_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process: the URL goes to webbrowser.open, Ctrl-C ends serving with one line."""
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)

    def interrupted(self: server.PageServer, poll_interval: float = 0.5) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(server.PageServer, "serve_forever", interrupted)
    result = invoke("--out", str(tmp_path / "x.html"), "--serve")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == str(tmp_path / "x.html")
    url = re.fullmatch(r"serving (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)", lines[1])
    assert url is not None, lines
    assert opened == [url.group(1)]
    assert lines[2:] == [f"stopped serving {url.group(1)}"]
    assert result.stderr == ""


def test_server_answers_only_the_page() -> None:
    srv = make_server("<p>page</p>", name="mine.html")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        for path in ("", "index.html", "mine.html", "?x=1"):
            with urllib.request.urlopen(srv.url + path, timeout=10) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "text/html; charset=utf-8"
                assert r.read() == b"<p>page</p>"
        head = urllib.request.Request(srv.url, method="HEAD")
        with urllib.request.urlopen(head, timeout=10) as r:
            assert r.read() == b"" and r.headers["Content-Length"] == "11"
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(srv.url + "../etc/passwd", timeout=10)
        assert exc.value.code == 404
        assert srv.server_address[0] == "127.0.0.1"
    finally:
        srv.shutdown()
        srv.server_close()


# ------------------------------------------------------------------------------------------
# --serve for real: a subprocess, fetched over HTTP, stopped with Ctrl-C (SIGINT)
# ------------------------------------------------------------------------------------------


class Served:
    """``crossentropy explore --serve`` running in a subprocess, its stdout read line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crossentropy.cli", "explore", "--serve", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=full_env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        threading.Thread(
            target=lambda: [self.lines.put(line.rstrip("\n")) for line in stdout], daemon=True
        ).start()

    def line(self) -> str:
        try:
            return self.lines.get(timeout=60)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"no output; stderr: {self.proc.stderr.read()!r}") from None

    def url(self) -> str:
        self.path = Path(self.line())
        match = re.fullmatch(r"serving (http://127\.0\.0\.1:\d+/) \(Ctrl-C stops\)", self.line())
        assert match is not None
        return match.group(1)

    def stop(self) -> tuple[int, str, str]:
        """Ctrl-C: the exit status, the last stdout line and stderr."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        assert self.proc.stderr is not None
        return code, self.line(), self.proc.stderr.read()


def test_serve_subprocess(tmp_path: Path) -> None:
    served = Served("--no-open", "--out", str(tmp_path / "page.html"), "--logits", "1,2,3")
    try:
        url = served.url()
        assert served.path == tmp_path / "page.html"
        written = served.path.read_bytes()
        assert config(written.decode())["logits"] == [1.0, 2.0, 3.0]
        for address in (url, url + "page.html"):
            with urllib.request.urlopen(address, timeout=10) as r:
                assert r.read() == written
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url + "favicon.ico", timeout=10)
    finally:
        code, last, err = served.stop()
    assert code == 0
    assert last == f"stopped serving {url}"
    assert err == ""
    assert served.lines.empty()


def test_serve_opens_the_browser_named_by_BROWSER(tmp_path: Path) -> None:
    """Without --no-open the URL goes to the user's browser: here $BROWSER, a script that
    writes down what it was given."""
    record = tmp_path / "opened.txt"
    fake = tmp_path / "fake-browser"
    fake.write_text(f'#!/bin/sh\nprintf "%s" "$1" > "{record}"\n')
    fake.chmod(0o755)
    served = Served("--out", str(tmp_path / "p.html"), env={"BROWSER": str(fake)})
    try:
        url = served.url()
        deadline = time.monotonic() + 30
        while not (record.exists() and record.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert record.read_text() == url
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.read() == (tmp_path / "p.html").read_bytes()
    finally:
        code, last, err = served.stop()
    assert (code, last, err) == (0, f"stopped serving {url}", "")
