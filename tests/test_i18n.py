"""The languages: how one is chosen, and the catalogues each surface is translated from.

For every domain (explain, explore, plot) and language (zh, ru): every message the code marks
is translated (no empty or fuzzy entry, none missing), no translation drops or invents a
``{placeholder}`` or a ``%`` field (the numbers are the same in every language), and the
shipped ``.mo`` is what Babel compiles from the ``.po`` (``make translations`` was run).
"""

from __future__ import annotations

import io
import re
import string
from pathlib import Path

import pytest

from crossentropy import i18n

babel = pytest.importorskip("babel", reason="Babel extracts and compiles the catalogues")
from babel.messages import extract, mofile, pofile  # noqa: E402
from babel.messages.frontend import parse_mapping_cfg  # noqa: E402

SOURCE = Path(i18n.__file__).parent
TRANSLATED = [lang for lang in i18n.LANGUAGES if lang != "en"]


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"LANG": "zh_CN.UTF-8"}, "zh"),
        ({"LANG": "ru_RU.UTF-8"}, "ru"),
        ({"LANG": "en_US.UTF-8"}, "en"),
        ({"LANG": "de_DE.UTF-8"}, "en"),  # no catalogue: English
        ({"LANG": "C"}, "en"),
        ({"LANG": "C.UTF-8"}, "en"),
        ({"LANG": "POSIX"}, "en"),
        ({}, "en"),
        ({"LC_ALL": "ru_RU.UTF-8", "LANG": "zh_CN.UTF-8"}, "ru"),  # LC_ALL first
        ({"LC_MESSAGES": "zh_TW.UTF-8", "LANG": "ru_RU"}, "zh"),
        ({"LC_ALL": "", "LANG": "zh_CN"}, "zh"),  # empty is unset
        ({"LANG": "sr_RS@latin"}, "en"),
    ],
)
def test_language_from_the_environment(environ, expected):
    assert i18n.language_from_environment(environ) == expected


def test_check_language_names_what_is_accepted(monkeypatch):
    assert i18n.check_language("zh") == "zh"
    monkeypatch.setenv("LC_ALL", "ru_RU.UTF-8")
    assert i18n.check_language(None) == "ru"
    for bad in ("fr", "ZH", "", "zh_CN", 1):
        with pytest.raises(ValueError, match=r"^lang: expected one of en, zh, ru; got "):
            i18n.check_language(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^--lang: "):
        i18n.check_language("xx", "--lang")
    with pytest.raises(ValueError, match=r"^domain: expected one of explain, explore, plot"):
        i18n.translations("zh", "nowhere")


def test_language_blocks_nest_and_restore():
    assert i18n.current_language() == "en"
    with i18n.language("zh", "explain"):
        assert i18n.current_language() == "zh"
        with i18n.language("ru", "plot"):
            assert i18n.current_language() == "ru"
        assert i18n.current_language() == "zh"
    assert i18n.current_language() == "en"
    assert i18n.mark("x") == "x"


def _extracted(domain: str) -> dict[str, tuple[str, ...]]:
    """The messages the code marks in ``domain`` (as ``make translations`` extracts them):
    msgid -> its forms (one, or singular and plural)."""
    method_map, options_map = parse_mapping_cfg(
        io.StringIO((SOURCE / "locale" / f"{domain}.cfg").read_text())
    )
    keywords = {**extract.DEFAULT_KEYWORDS, "N_": None}
    found = {}
    for _, _, message, _, _ in extract.extract_from_dir(
        str(SOURCE), method_map, options_map, keywords=keywords
    ):
        forms = message if isinstance(message, tuple) else (message,)
        found[forms[0]] = forms
    return found


def _catalogue(lang: str, domain: str):
    path = SOURCE / "locale" / lang / "LC_MESSAGES" / f"{domain}.po"
    assert path.exists(), f"no catalogue {path}: run `make translations` and translate it"
    with path.open("rb") as f:
        return pofile.read_po(f, locale=lang, domain=domain)


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa%]")


def _fields(text: str) -> list[str]:
    """The ``{...}`` fields (name and format) and ``%`` conversions of a message, sorted."""
    names = [
        f"{{{name}{':' + spec if spec else ''}{'!' + conv if conv else ''}}}"
        for _, name, spec, conv in string.Formatter().parse(text)
        if name is not None
    ]
    return sorted(names + _PERCENT.findall(text))


@pytest.mark.parametrize("lang", TRANSLATED)
@pytest.mark.parametrize("domain", i18n.DOMAINS)
def test_every_message_is_translated_with_the_same_fields(domain, lang):
    wanted = _extracted(domain)
    assert wanted, f"no message marked for translation in the {domain!r} domain"
    catalogue = _catalogue(lang, domain)
    assert not catalogue.fuzzy, f"{lang}/{domain}.po: the header is still marked fuzzy"
    entries = {m.id if isinstance(m.id, str) else m.id[0]: m for m in catalogue if m.id}
    missing = sorted(set(wanted) - set(entries))
    assert not missing, f"{lang}/{domain}.po lacks {missing[:5]} (run `make translations`)"
    for msgid in wanted:
        entry = entries[msgid]
        strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        assert all(strings) and not entry.fuzzy, f"{lang}/{domain}: untranslated {msgid!r}"
        for text in strings:
            assert _fields(text) == _fields(msgid), (lang, domain, msgid, text)


@pytest.mark.parametrize("lang", TRANSLATED)
@pytest.mark.parametrize("domain", i18n.DOMAINS)
def test_the_shipped_mo_is_compiled_from_the_po(domain, lang):
    catalogue = _catalogue(lang, domain)
    compiled = io.BytesIO()
    mofile.write_mo(compiled, catalogue)
    shipped = SOURCE / "locale" / lang / "LC_MESSAGES" / f"{domain}.mo"
    assert shipped.exists() and shipped.read_bytes() == compiled.getvalue(), (
        f"{shipped} is not the compiled {lang}/{domain}.po: run `make translations`"
    )
    # and gettext reads it
    with i18n.language(lang, domain):
        some = next(m for m in catalogue if m.id and isinstance(m.id, str))
        assert i18n.gettext(some.id) == some.string
