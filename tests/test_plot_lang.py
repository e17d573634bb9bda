"""The figures in English, Chinese and Russian (``lang=``, ``crossentropy plot --lang``).

Each figure is drawn in Chinese and in Russian with every warning an error, so that a glyph
missing from the fonts (matplotlib's "Glyph ... missing from font(s)" UserWarning) fails the
test; its text is in the language asked for (CJK characters, Cyrillic letters); and the data
lines, the ticks, the limits and every number in the text are the same as in English. Without
a font that has the Chinese glyphs, a Chinese figure is an error that says what to install
(simulated by emptying matplotlib's font list); where the machine has no such font, the tests
that draw Chinese skip, saying so.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
pytest.importorskip("matplotlib")

import matplotlib
from matplotlib import font_manager
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from typer.testing import CliRunner

from crossentropy import viz
from crossentropy.cli.app import app

WIDE = {"COLUMNS": "120", "NO_COLOR": "1"}
CJK = re.compile(r"[\u4e00-\u9fff]")
CYRILLIC = re.compile(r"[\u0400-\u04ff]")
SCRIPT = {"zh": CJK, "ru": CYRILLIC}
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _cjk_font_installed() -> bool:
    try:
        viz.make_figure("information", lang="zh")
    except viz.MissingFontError:
        return False
    return True


needs_cjk = pytest.mark.skipif(
    not _cjk_font_installed(),
    reason="no font with the Chinese glyphs (Debian: apt-get install fonts-noto-cjk)",
)


def drawn(name: str, lang: str) -> Figure:
    """The figure ``name`` in ``lang``, built and drawn with every warning an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = viz.make_figure(name, lang=lang)
        fig.canvas.draw()
    return fig


def texts(fig: Figure) -> Iterator[tuple[str, str]]:
    """(where, text) of each piece of text the figure shows, in a fixed order."""
    yield "suptitle", fig.get_suptitle()
    for i, ax in enumerate(fig.axes):
        yield f"{i}.title", ax.get_title()
        yield f"{i}.xlabel", ax.get_xlabel()
        yield f"{i}.ylabel", ax.get_ylabel()
        legend = ax.get_legend()
        for j, entry in enumerate(legend.get_texts() if legend is not None else []):
            yield f"{i}.legend.{j}", entry.get_text()
        for j, note in enumerate(ax.texts):
            yield f"{i}.text.{j}", note.get_text()


def numbers(text: str) -> list[str]:
    return sorted(NUMBER.findall(text))


def data(fig: Figure) -> dict[str, tuple[Any, Any]]:
    """The plotted data of every line, by gid (the gids are the same in every language)."""
    return {
        str(line.get_gid()): (np.asarray(line.get_xdata()), np.asarray(line.get_ydata()))
        for ax in fig.axes
        for line in ax.get_lines()
        if line.get_gid()
    }


def ticks(fig: Figure) -> list[Any]:
    found: list[Any] = []
    for ax in fig.axes:
        found += [list(ax.get_xticks()), list(ax.get_yticks()), ax.get_xlim(), ax.get_ylim()]
        found += [[t.get_text() for t in ax.get_xticklabels()]]
        found += [[t.get_text() for t in ax.get_yticklabels()]]
    return found


@pytest.fixture(scope="module")
def english() -> dict[str, Figure]:
    return {name: drawn(name, "en") for name in viz.FIGURES}


# ------------------------------------------------------------------------------------------
# Drawn in each language: every glyph there, the text translated, the numbers unchanged
# ------------------------------------------------------------------------------------------


def test_the_glyph_check_fails_on_a_missing_glyph() -> None:
    """The check the tests below rely on: Chinese in a font without it is an error."""
    fig = Figure()
    FigureCanvasAgg(fig)
    fig.suptitle("交叉熵", family="DejaVu Sans")
    with warnings.catch_warnings(), pytest.raises(UserWarning, match="missing from font"):
        warnings.simplefilter("error")
        fig.canvas.draw()


@pytest.mark.parametrize(
    "lang", [pytest.param("zh", marks=needs_cjk), pytest.param("ru")], ids=["zh", "ru"]
)
@pytest.mark.parametrize("name", list(viz.FIGURES))
def test_figure_in_language(english: dict[str, Figure], name: str, lang: str) -> None:
    fig = drawn(name, lang)
    script = SCRIPT[lang]
    en = dict(texts(english[name]))
    got = dict(texts(fig))
    assert got.keys() == en.keys()
    for where, text in got.items():
        assert numbers(text) == numbers(en[where]), (where, text, en[where])
        if where.endswith(("title", "label")) or ".text." in where:
            # every title, axis label and note has words: all are translated
            assert not en[where] or script.search(text), (where, text)
        assert not CJK.search(en[where]) and not CYRILLIC.search(en[where])
    legends = [text for where, text in got.items() if ".legend." in where]
    assert any(script.search(text) for text in legends) or name == "softmax-temperature"
    for where, text in got.items():
        if ".legend." in where and not script.search(text):
            assert text == en[where]  # a formula alone, the same in every language
    expected = data(english[name])
    lines = data(fig)
    assert lines.keys() == expected.keys()
    for gid, (x, y) in expected.items():
        np.testing.assert_array_equal(lines[gid][0], x)
        np.testing.assert_array_equal(lines[gid][1], y)
    assert ticks(fig) == ticks(english[name])


def test_russian_plural_forms() -> None:
    """The information figure's "p = 1/8: 3 bits" takes the Russian form of each number."""
    notes = [t.get_text() for t in viz.information_figure(lang="ru").axes[0].texts]
    assert "p = 1/8: 3 бита" in notes and "p = 1/2: 1 бит" in notes
    fair = viz.binary_entropy_figure(lang="ru").axes[0].texts[0].get_text()
    assert fair.startswith("честная монета: H = 1 бит,")


@needs_cjk
def test_chinese_font_follows_the_default_and_settings_are_restored() -> None:
    before = dict(matplotlib.rcParams)
    fig = drawn("information", "zh")
    assert dict(matplotlib.rcParams) == before
    family = fig.axes[0].title.get_fontfamily()
    assert family[:-1] == list(before["font.family"])  # Latin and symbols keep their font
    assert family[-1] in viz.CJK_FONTS
    assert viz.information_figure().axes[0].title.get_fontfamily() == before["font.family"]


# ------------------------------------------------------------------------------------------
# Choosing the language
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [*viz.FIGURES.values(), viz.make_figure])
def test_bad_language(build: Any) -> None:
    args = ("information",) if build is viz.make_figure else ()
    for bad in ("fr", "ZH", "", "zh_CN"):
        with pytest.raises(ValueError, match=r"^lang: expected one of en, zh, ru; got "):
            build(*args, lang=bad)


def test_default_is_english_and_none_is_the_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LC_ALL", "ru_RU.UTF-8")
    assert viz.information_figure().axes[0].get_title().startswith("Information content")
    assert viz.information_figure(lang=None).axes[0].get_title().startswith("Количество")
    assert viz.make_figure("information", lang=None).axes[0].get_xlabel() == (
        "вероятность p события"
    )


# ------------------------------------------------------------------------------------------
# No font with the Chinese glyphs
# ------------------------------------------------------------------------------------------


@pytest.fixture
def no_cjk_font(monkeypatch: pytest.MonkeyPatch) -> None:
    """matplotlib knows no font, and the system has none to add."""
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [])
    monkeypatch.setattr(font_manager, "findSystemFonts", lambda *args, **kw: [])


@pytest.mark.usefixtures("no_cjk_font")
def test_missing_chinese_font_is_an_error_naming_the_fix() -> None:
    with pytest.raises(viz.MissingFontError, match=r"^lang='zh': .*fonts-noto-cjk"):
        viz.make_figure("information", lang="zh")
    assert isinstance(viz.MissingFontError("x"), ValueError)
    assert CYRILLIC.search(viz.make_figure("information", lang="ru").axes[0].get_title())


@needs_cjk
def test_font_installed_after_matplotlib_cached_its_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CJK font missing from matplotlib's (cached) font list is found on the system."""
    files = {f.fname for f in font_manager.fontManager.ttflist if f.name in viz.CJK_FONTS}
    without = [f for f in font_manager.fontManager.ttflist if f.fname not in files]
    monkeypatch.setattr(font_manager.fontManager, "ttflist", without)
    fig = drawn("binary-entropy", "zh")
    assert fig.axes[0].title.get_fontfamily()[-1] in viz.CJK_FONTS


# ------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------


def invoke(*args: str, **env: str) -> Any:
    return CliRunner().invoke(app, ["plot", *args], env={**WIDE, **env})


@needs_cjk
def test_cli_lang_zh_png(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = invoke("information", "--lang", "zh", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(tmp_path / "information.png")]
    assert (tmp_path / "information.png").stat().st_size > 10_000


def _svg_comments(path: Path) -> str:
    # matplotlib writes each text of an SVG (drawn as paths) as an XML comment beside it
    return " ".join(re.findall(r"<!-- (.*?) -->", path.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    ("args", "env", "script"),
    [
        (["--lang", "ru"], {"LC_ALL": "zh_CN.UTF-8"}, CYRILLIC),  # --lang before the locale
        ([], {"LC_ALL": "ru_RU.UTF-8"}, CYRILLIC),
        ([], {"LC_ALL": "C", "LANG": "ru_RU.UTF-8"}, None),  # LC_ALL=C: English
        (["--lang", "en"], {"LC_ALL": "ru_RU.UTF-8"}, None),
    ],
)
def test_cli_language_from_option_or_locale(
    tmp_path: Path, args: list[str], env: dict[str, str], script: re.Pattern[str] | None
) -> None:
    result = invoke("binary-entropy", "-f", "svg", "--out", str(tmp_path), *args, **env)
    assert result.exit_code == 0, result.output
    text = _svg_comments(tmp_path / "binary-entropy.svg")
    if script is None:
        assert "Binary entropy" in text and not CYRILLIC.search(text)
    else:
        assert script.search(text) and "Binary entropy" not in text


def _one_line_exit_2(result: Any) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return str(lines[0])


@pytest.mark.parametrize("bad", ["fr", "ZH", "", "zh_CN"])
def test_cli_bad_lang(tmp_path: Path, bad: str) -> None:
    line = _one_line_exit_2(invoke("information", "--lang", bad, "--out", str(tmp_path)))
    assert "'--lang'" in line and "expected one of en, zh, ru" in line and repr(bad) in line
    assert not any(tmp_path.iterdir())


@pytest.mark.usefixtures("no_cjk_font")
def test_cli_lang_zh_without_font(tmp_path: Path) -> None:
    line = _one_line_exit_2(invoke("information", "--lang", "zh", "--out", str(tmp_path)))
    assert "'--lang'" in line and "fonts-noto-cjk" in line
    assert not any(tmp_path.iterdir())
