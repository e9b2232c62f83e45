"""English and Spanish, through Babel catalogs read at start (no compiled files to forget).

The current language lives in a context variable set once per request, so templates,
messages and dates all speak it."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime
from functools import cache
from pathlib import Path

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from core.models import Language

TRANSLATIONS_DIR = Path(__file__).parent / "translations"
DEFAULT_LANGUAGE = Language.EN
LANGUAGE_NAMES = {Language.EN: "English", Language.ES: "Español"}

_current: ContextVar[Language] = ContextVar("language", default=DEFAULT_LANGUAGE)


@cache
def catalog(language: Language) -> NullTranslations:
    """The translations for `language`, compiled in memory from its .po file."""
    po_path = TRANSLATIONS_DIR / language.value / "LC_MESSAGES" / "messages.po"
    if language is DEFAULT_LANGUAGE or not po_path.exists():
        return NullTranslations()
    with po_path.open("rb") as po_file:
        parsed = read_po(po_file, locale=language.value)
    buffer = io.BytesIO()
    write_mo(buffer, parsed)
    buffer.seek(0)
    return Translations(buffer)


def set_language(language: Language) -> None:
    _current.set(language)


def current_language() -> Language:
    return _current.get()


@contextmanager
def speaking(language: Language) -> Iterator[None]:
    """Speak `language` inside the block (a letter printed for someone else), then the
    reader's language again."""
    token = _current.set(language)
    try:
        yield
    finally:
        _current.reset(token)


def gettext(message: str) -> str:
    return catalog(_current.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return catalog(_current.get()).ngettext(singular, plural, n)


_ = gettext


def translate(message: object) -> str:
    """A service's message in the reader's language (filling in its values, if any)."""
    from core.text import Text

    if isinstance(message, Text):
        return gettext(message.msgid) % message.params
    return gettext(str(message))


def translate_errors(errors: dict[str, str]) -> dict[str, str]:
    """A form's error messages (from FieldErrors) in the reader's language."""
    return {name: translate(message) for name, message in errors.items()}


def parse_language(value: str | None) -> Language | None:
    if not value:
        return None
    try:
        return Language(value.strip().lower()[:2])
    except ValueError:
        return None


def negotiate(accept_language: str | None) -> Language:
    """The best of our languages for an Accept-Language header."""
    if not accept_language:
        return DEFAULT_LANGUAGE
    ranked: list[tuple[float, str]] = []
    for part in accept_language.split(","):
        pieces = part.strip().split(";q=")
        try:
            weight = float(pieces[1]) if len(pieces) > 1 else 1.0
        except ValueError:
            weight = 0.0
        ranked.append((weight, pieces[0].strip()))
    for _weight, tag in sorted(ranked, key=lambda item: -item[0]):
        language = parse_language(tag)
        if language is not None:
            return language
    return DEFAULT_LANGUAGE


def format_day(value: date | None, style: str = "long") -> str:
    if value is None:
        return ""
    return format_date(value, format=style, locale=Locale.parse(_current.get().value))


def format_instant(value: datetime | None, zone: str, style: str = "medium") -> str:
    """An instant shown in the reader's time zone, e.g. a coordinator's or a patient's."""
    if value is None:
        return ""
    from zoneinfo import ZoneInfo

    return format_datetime(
        value, format=style, tzinfo=ZoneInfo(zone), locale=Locale.parse(_current.get().value)
    )
