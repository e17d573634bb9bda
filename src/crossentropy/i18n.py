"""The languages the lessons, the explore page and the figures speak: English, Chinese, Russian.

Text is translated with Python's :mod:`gettext` from catalogues compiled by Babel: one
*domain* per surface (``explain``, ``explore``, ``plot``), each a ``.po`` file per language
under ``crossentropy/locale/<lang>/LC_MESSAGES/`` with its compiled ``.mo`` beside it
(``make translations`` extracts the messages, updates the ``.po`` files and compiles them;
the tests check that every message is translated and every ``.mo`` is up to date). English is
the source language: its text is the message itself, with no catalogue.

Code marks its text for translation with :func:`gettext` (imported as ``_``): the message is
looked up when the call runs, in the language of the innermost :func:`language` block around
it, so that the same process can lay out a topic in English and then in Chinese. Text that is
built before the language is known (a module-level table of labels) is marked with
:func:`mark` (imported as ``N_``), which Babel extracts but which translates nothing, and
passed through ``_`` where it is shown. Numbers and formulas are never translated: only the
words around them.

>>> with language("ru", "explain"):
...     gettext("no such message") == "no such message"
True
>>> language_from_environment({"LANG": "zh_CN.UTF-8"}), language_from_environment({})
('zh', 'en')
"""

from __future__ import annotations

import gettext as _gettext
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from pathlib import Path

__all__ = [
    "DOMAINS",
    "LANGUAGES",
    "LOCALE_DIR",
    "check_language",
    "current_language",
    "gettext",
    "language",
    "language_from_environment",
    "mark",
    "ngettext",
    "translations",
]

LANGUAGES: tuple[str, ...] = ("en", "zh", "ru")
"""The languages there are catalogues for; ``en`` is the source language."""

DOMAINS: tuple[str, ...] = ("explain", "explore", "plot")
"""One catalogue per surface: the ``explain`` lessons, the ``explore`` page, the figures."""

LOCALE_DIR = Path(__file__).parent / "locale"
"""Where the catalogues are: ``<lang>/LC_MESSAGES/<domain>.po`` and ``.mo``."""

# the environment variables that name the language of messages, in POSIX's order: the first
# one set (and not empty) decides
_LOCALE_VARIABLES = ("LC_ALL", "LC_MESSAGES", "LANG")


def language_from_environment(environ: Mapping[str, str] | None = None) -> str:
    """The language the locale names (``LC_ALL``, then ``LC_MESSAGES``, then ``LANG``, as
    POSIX orders them): ``zh_CN.UTF-8`` is ``zh``, ``ru_RU`` is ``ru``; English for ``C``,
    ``POSIX``, an unset locale or a language there is no catalogue for."""
    environ = os.environ if environ is None else environ
    for variable in _LOCALE_VARIABLES:
        value = environ.get(variable, "")
        if value:
            code = value.split(".")[0].split("@")[0].split("_")[0].split("-")[0].lower()
            return code if code in LANGUAGES else "en"
    return "en"


def check_language(value: str | None, name: str = "lang") -> str:
    """``value`` if it is one of :data:`LANGUAGES`, the environment's language for None;
    anything else is a ``ValueError`` naming ``name``, what was given and what is accepted."""
    if value is None:
        return language_from_environment()
    if not isinstance(value, str) or value not in LANGUAGES:
        raise ValueError(f"{name}: expected one of {', '.join(LANGUAGES)}; got {value!r}")
    return value


@cache
def translations(lang: str, domain: str) -> _gettext.NullTranslations:
    """The compiled catalogue of ``domain`` in ``lang`` (English: none, the messages as they
    are). A language or domain that is not known is a ``ValueError``; a catalogue that is
    missing from the installed package is one too, rather than English in its place."""
    check_language(lang)
    if domain not in DOMAINS:
        raise ValueError(f"domain: expected one of {', '.join(DOMAINS)}; got {domain!r}")
    if lang == "en":
        return _gettext.NullTranslations()
    try:
        return _gettext.translation(domain, localedir=LOCALE_DIR, languages=[lang])
    except OSError:
        raise ValueError(
            f"lang: no {lang!r} catalogue for {domain!r} in {LOCALE_DIR} "
            f"(a broken install: reinstall the package, or run `make translations`)"
        ) from None


_ACTIVE: ContextVar[tuple[str, _gettext.NullTranslations]] = ContextVar(
    "crossentropy_language", default=("en", _gettext.NullTranslations())
)


@contextmanager
def language(lang: str, domain: str) -> Iterator[str]:
    """Within the block, :func:`gettext` translates into ``lang`` from ``domain``'s
    catalogue; yields ``lang``. Blocks nest; each thread and task has its own."""
    token = _ACTIVE.set((lang, translations(lang, domain)))
    try:
        yield lang
    finally:
        _ACTIVE.reset(token)


def current_language() -> str:
    """The language of the innermost :func:`language` block (``en`` outside any)."""
    return _ACTIVE.get()[0]


def gettext(message: str) -> str:
    """``message`` in the current language (itself in English, or where a catalogue has no
    translation for it)."""
    return _ACTIVE.get()[1].gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form of ``singular``/``plural`` for ``n`` in the current language (Russian has
    three)."""
    return _ACTIVE.get()[1].ngettext(singular, plural, n)


def mark(message: str) -> str:
    """``message`` itself: marks text for extraction that is translated later, where it is
    shown (with :func:`gettext`)."""
    return message
