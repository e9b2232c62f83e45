"""The Spanish catalog covers every message in the code, and Spanish readers get it.

The extraction below reads babel.cfg itself, so it finds exactly what `make translations`
finds: the Python keywords (`_`, `gettext`, `ngettext`, `N_`) and the Jinja2 templates."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_keywords, parse_mapping_cfg
from babel.messages.pofile import read_po
from fastapi.testclient import TestClient

from core.clock import FrozenClock
from portal.dev.demo import DEMO_PASSWORD
from tests.conftest import CAREGIVER_CO, COORDINATOR_MD, log_in

ROOT = Path(__file__).resolve().parents[2]
BABEL_CFG = ROOT / "babel.cfg"
SPANISH_PO = ROOT / "portal" / "translations" / "es" / "LC_MESSAGES" / "messages.po"
# What `pybabel extract --ignore-dirs` skips. Babel's default would also skip every folder
# whose name starts with "_", and with it portal/templates/portal/_partials.
IGNORED_DIRS = re.compile(r"^(\..*|__pycache__|node_modules)$")
# printf-style conversions as Python's `%` operator reads them ("%%" is a literal percent).
PLACEHOLDER = re.compile(r"%(?:\((\w+)\))?[#0 +-]*(?:\d+|\*)?(?:\.\d+)?[diouxXeEfFgGcrsa%]")

# The translation tests need the app, not a particular database: SQLite is enough.
ON_SQLITE = pytest.mark.parametrize("backend", ["sqlite"])

MsgId = str | tuple[str, ...]


def _keep_dir(path: str) -> bool:
    return IGNORED_DIRS.match(Path(path).name) is None


def extracted_messages() -> dict[MsgId, list[str]]:
    """Every msgid in the code (singular, or (singular, plural)), with where it is."""
    with BABEL_CFG.open(encoding="utf-8") as config:
        method_map, options_map = parse_mapping_cfg(config, str(BABEL_CFG))  # type: ignore[no-untyped-call]
    keywords = {**DEFAULT_KEYWORDS, **parse_keywords(["N_"])}
    found: dict[MsgId, list[str]] = {}
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(ROOT),
        method_map,
        options_map,
        keywords=keywords,
        directory_filter=_keep_dir,
    ):
        msgid: MsgId = tuple(message) if isinstance(message, (list, tuple)) else message
        if msgid:
            found.setdefault(msgid, []).append(f"{filename}:{lineno}")
    return found


def spanish_catalog() -> Catalog:
    with SPANISH_PO.open("rb") as po_file:
        return read_po(po_file, locale="es")


def _key(message: Message) -> MsgId:
    return tuple(message.id) if isinstance(message.id, (list, tuple)) else message.id


def _forms(value: str | tuple[str, ...] | list[str] | None) -> list[str]:
    """The singular and plural forms of a msgid or msgstr ("" when there is none)."""
    if value is None:
        return [""]
    return [value] if isinstance(value, str) else list(value)


def _placeholders(text: str) -> list[str]:
    return sorted(match.group(0) for match in PLACEHOLDER.finditer(text) if match.group(0) != "%%")


@pytest.fixture(scope="module")
def extracted() -> dict[MsgId, list[str]]:
    return extracted_messages()


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return spanish_catalog()


def test_extraction_finds_python_and_template_messages(
    extracted: dict[MsgId, list[str]],
) -> None:
    """A guard for the test itself: each kind of source is really read."""
    where = {location.split(":")[0] for locations in extracted.values() for location in locations}
    assert "portal/templates/portal/login.html" in where
    assert "portal/templates/portal/_partials/forms.html" in where
    assert "core/identity/passwords.py" in where  # N_() in core
    assert "portal/routes/auth.py" in where  # _() and i18n.ngettext() in routes
    assert ("%(num)d patient", "%(num)d patients") in extracted  # ngettext in a template
    assert "Use at least 10 characters." in extracted


def test_catalog_header_keeps_two_plural_forms(catalog: Catalog) -> None:
    assert catalog.num_plurals == 2
    assert catalog.plural_expr == "(n != 1)"


def test_every_message_has_a_spanish_translation(
    extracted: dict[MsgId, list[str]], catalog: Catalog
) -> None:
    translated = {
        _key(message): message
        for message in catalog
        if message.id and not message.fuzzy and all(_forms(message.string))
    }
    missing = sorted(
        f"{msgid!r} ({', '.join(locations[:2])})"
        for msgid, locations in extracted.items()
        if msgid not in translated
    )
    assert not missing, (
        f"{len(missing)} message(s) have no Spanish translation (run `make translations`, "
        "then translate them in portal/translations/es/LC_MESSAGES/messages.po):\n"
        + "\n".join(missing)
    )


def test_no_fuzzy_translations(catalog: Catalog) -> None:
    fuzzy = [str(message.id) for message in catalog if message.id and message.fuzzy]
    assert not fuzzy, "fuzzy entries are not used at run time; review them:\n" + "\n".join(fuzzy)


def test_translations_keep_the_placeholders(catalog: Catalog) -> None:
    problems: list[str] = []
    for message in catalog:
        if not message.id:
            continue
        ids = _forms(message.id)
        strings = _forms(message.string)
        expected = _placeholders(ids[-1])  # the plural (or only) msgid names them all
        values = {name: 1 for text in ids for name in re.findall(r"%\((\w+)\)", text)}
        for index, text in enumerate(strings):
            if not text:
                continue
            if _placeholders(text) != expected:
                problems.append(
                    f"{ids[0]!r} [{index}]: {_placeholders(text)} instead of {expected}"
                )
                continue
            try:
                _formatted = text % values
            except (ValueError, TypeError, KeyError) as error:
                problems.append(f"{ids[0]!r} [{index}]: cannot be formatted ({error})")
    assert not problems, "placeholders differ:\n" + "\n".join(problems)


# --- through the app -----------------------------------------------------------------


@ON_SQLITE
def test_login_page_in_spanish_from_the_language_cookie(client: TestClient) -> None:
    client.cookies.set("cgt_lang", "es")
    response = client.get("/login")
    assert response.status_code == 200
    assert '<html lang="es">' in response.text
    assert "Iniciar sesión" in response.text
    assert "¿Olvidó su contraseña?" in response.text
    assert "Forgot your password?" not in response.text


@ON_SQLITE
def test_login_page_in_spanish_from_the_browser_language(client: TestClient) -> None:
    response = client.get("/login", headers={"Accept-Language": "es-US,es;q=0.9,en;q=0.5"})
    assert '<html lang="es">' in response.text
    assert "Nombre de usuario o correo electrónico" in response.text


@ON_SQLITE
def test_weak_password_message_in_spanish(
    client: TestClient, login_as: Callable[[str], str]
) -> None:
    """Rosa (a caregiver whose account is in Spanish) picks a password that is too short:
    WeakPassword's message from core comes back translated."""
    token = login_as(CAREGIVER_CO)
    response = client.post(
        "/account/password",
        data={
            "current": DEMO_PASSWORD,
            "password": "corta",
            "password_again": "corta",
            "csrf_token": token,
        },
    )
    assert response.status_code == 400
    assert "Use por lo menos 10 caracteres." in response.text
    assert "Use at least 10 characters." not in response.text


@ON_SQLITE
def test_bad_phone_in_enrolment_form_in_spanish(client: TestClient, clock: FrozenClock) -> None:
    """A coordinator who switched to Spanish gets InvalidPhoneNumber's message in Spanish."""
    token = log_in(client, COORDINATOR_MD, clock)
    switched = client.post(
        "/language", data={"lang": "es", "next": "/patients/new", "csrf_token": token}
    )
    assert switched.status_code == 303
    form = client.get("/patients/new")
    assert '<html lang="es">' in form.text
    response = client.post(
        "/patients/new",
        data={
            "given_name": "Ana",
            "family_name": "Prueba",
            "birth_date": "2008-05-01",
            "medicaid_id": "MD-000123",
            "preferred_language": "es",
            "mobile_phone": "202 555 01",
            "status": "enrolled",
            "csrf_token": token,
        },
    )
    assert response.status_code == 400
    assert "Este número de teléfono no existe." in response.text
    assert "This phone number does not exist." not in response.text
    assert "Elija un estado." in response.text  # a FieldErrors message from core/service.py
