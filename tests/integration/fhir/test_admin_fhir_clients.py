"""Admin pages for the treatment centers' FHIR clients: registering one (keys pasted or at a
URL, permissions ticked), changing its permissions, disabling it, rotating its keys; the
audit log filtered by client. Every page as a whole page and as an htmx block."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from joserfc.jwk import RSAKey
from sqlalchemy import func, select

from core.clock import FrozenClock
from fhir_adapter.models import FhirAccessToken, FhirClient
from tests.conftest import ADMIN, ANALYST, COORDINATOR_MD, Browser, Database, plain
from tests.integration.record.test_patients import audit_events, read_form, single_values
from tests.support.smart import FRONT_RANGE, HARBORVIEW, CenterSystem, center_id, register


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture(scope="module")
def center() -> CenterSystem:
    return CenterSystem.generate("ES384")


@pytest.fixture
def machine(app: FastAPI) -> Iterator[TestClient]:
    """The center's system, asking the token endpoint."""
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client


def _errors(page: str) -> dict[str, str]:
    """The message shown next to each field, by field name."""
    return {
        name: plain(message)
        for name, message in re.findall(
            r'<p class="error-text" id="f-(\w+)-error">(.*?)</p>', page, re.S
        )
    }


def _block(response: httpx.Response, *, htmx: bool, starts: str) -> str:
    """Check the page answered in the right shape (whole page, or only the block htmx
    targets) and return the text."""
    if htmx:
        assert "<html" not in response.text, "an htmx request got the whole page"
        assert response.text.lstrip().startswith(starts), response.text[:200]
    else:
        assert "<html" in response.text
    return str(response.text)


def _redirected_to(response: httpx.Response, *, htmx: bool) -> str:
    if htmx:
        assert response.status_code == 204, response.text
        return str(response.headers["HX-Redirect"])
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def _token_rows(db: Database) -> int:
    with db.factory() as session:
        return session.scalar(select(func.count(FhirAccessToken.id))) or 0


def test_an_admin_registers_a_client_with_its_public_keys(
    db: Database,
    browsers: Callable[[str], Browser],
    htmx: bool,
    center: CenterSystem,
    machine: TestClient,
    clock: FrozenClock,
) -> None:
    admin = browsers(ADMIN)
    whole = admin.get("/admin/fhir-clients")
    assert whole.status_code == 200
    assert 'href="/admin/fhir-clients"' in whole.text  # in the admin's navigation
    assert "http://testserver/auth/token" in plain(whole.text)
    assert "No FHIR clients match." in plain(whole.text)

    harbor = str(center_id(db, HARBORVIEW))
    good: dict[str, Any] = {
        "name": "Harborview Epic interface",
        "center_id": harbor,
        "client_id": center.client_id,
        "jwks_url": "",
        "jwks": json.dumps(center.public_jwks()),
        "scopes": ["system/Patient.r", "system/Patient.s", "system/Observation.c"],
    }
    private = json.dumps({"keys": [center.key.as_dict(private=True)]})
    refused_cases: list[tuple[dict[str, Any], str, str]] = [
        ({"jwks": private}, "jwks", "contains private key material"),
        ({"jwks": "{not json"}, "jwks", "not valid JSON"),
        ({"jwks": "", "jwks_url": "http://127.0.0.1:9/jwks.json"}, "jwks_url", "https://"),
        ({"jwks_url": "https://keys.example.org/jwks.json"}, "jwks_url", "not both"),
        ({"jwks": ""}, "jwks_url", "Give the address"),
        ({"scopes": []}, "scopes", "at least one permission"),
        ({"scopes": ["patient/Patient.r"]}, "scopes", "from the list"),
        ({"center_id": ""}, "center_id", "Choose the treatment center"),
        ({"client_id": "a b"}, "client_id", "Use 3 to 64"),
        ({"name": ""}, "name", "Enter a name"),
    ]
    for change, field, words in refused_cases:
        refused = admin.post("/admin/fhir-clients", {**good, **change}, htmx=htmx)
        assert refused.status_code == 400, change
        page = _block(refused, htmx=htmx, starts='<section class="card" id="register"')
        errors = _errors(page)
        assert list(errors) == [field], (change, errors)
        assert words in errors[field], (change, errors)
        if not htmx:  # what was typed stays in the form
            kept = read_form(page, "/admin/fhir-clients")
            assert single_values(kept)["name"] == good["name"] or field == "name"
            assert kept.get("scopes", []) == [
                s for s in change.get("scopes", good["scopes"]) if s.startswith("system/")
            ]
    with db.factory() as session:
        assert session.scalar(select(func.count(FhirClient.id))) == 0

    created = admin.post("/admin/fhir-clients", good, htmx=htmx)
    target = _redirected_to(created, htmx=htmx)
    assert re.fullmatch(r"/admin/fhir-clients/\d+", target)
    shown = admin.get(target, htmx=htmx)
    assert shown.status_code == 200
    text = plain(_block(shown, htmx=htmx, starts='<div id="client">'))
    assert center.client_id in text
    assert "Harborview Medical Center (MD)" in text
    assert center.kid in text  # the pasted key, by its id
    ticked = read_form(shown.text, target)["scopes"]
    assert sorted(ticked) == ["system/Observation.c", "system/Patient.r", "system/Patient.s"]

    again = admin.post("/admin/fhir-clients", good, htmx=htmx)
    assert again.status_code == 400
    assert "Another client has this client id." in _errors(again.text)["client_id"]

    listing = admin.get("/admin/fhir-clients?status=active", htmx=htmx)
    assert center.client_id in _block(listing, htmx=htmx, starts='<div id="clients">')
    disabled_only = admin.get("/admin/fhir-clients?status=disabled", htmx=htmx)
    assert center.client_id not in disabled_only.text

    # The registered keys work at the token endpoint, for what was ticked.
    response = center.request_token(
        machine, center.assertion(clock.now()), scope="system/Patient.rs system/Observation.rs"
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Patient.rs"

    registered = audit_events(db, "admin.fhir_client.register")
    assert [(e.client_id, e.actor_label, e.target) for e in registered] == [
        (center.client_id, ADMIN, f"fhir_client:{center.client_id}")
    ]


def test_a_blank_client_id_is_made_and_a_jwks_url_registered(
    db: Database, browsers: Callable[[str], Browser]
) -> None:
    admin = browsers(ADMIN)
    created = admin.post(
        "/admin/fhir-clients",
        {
            "name": "Front Range bulk export",
            "center_id": str(center_id(db, FRONT_RANGE)),
            "jwks_url": "https://fhir.frontrange.example/.well-known/jwks.json",
            "scopes": ["system/*.r", "system/*.s"],
        },
    )
    target = _redirected_to(created, htmx=False)
    with db.factory() as session:
        client = session.scalars(select(FhirClient)).one()
        assert re.fullmatch(r"center-[0-9a-f]{16}", client.client_id)
        assert client.scopes == "system/*.rs"
        assert client.current_key_set is not None
        assert client.current_key_set.jwks is None  # fetched at the first token request
    text = plain(admin.get(target).text)
    assert "https://fhir.frontrange.example/.well-known/jwks.json" in text
    assert "not yet" in text


def test_permissions_disabling_and_key_rotation(
    db: Database,
    browsers: Callable[[str], Browser],
    htmx: bool,
    center: CenterSystem,
    machine: TestClient,
    clock: FrozenClock,
) -> None:
    client_pk = register(db, clock, center=center, scopes="system/Patient.rs")
    url = f"/admin/fhir-clients/{client_pk}"
    admin = browsers(ADMIN)
    assert center.token(machine, clock)
    assert _token_rows(db) == 1

    refused = admin.post(url, {"name": "Renamed", "scopes": []}, htmx=htmx)
    assert refused.status_code == 400
    page = _block(refused, htmx=htmx, starts='<section class="card" id="details"')
    assert "at least one permission" in _errors(page)["scopes"]

    saved = admin.post(url, {"name": "Renamed", "scopes": ["system/Patient.r"]}, htmx=htmx)
    assert _redirected_to(saved, htmx=htmx) == url
    assert _token_rows(db) == 0  # changed permissions revoke the live token
    assert "Renamed" in plain(admin.get(url).text)
    assert read_form(admin.get(url).text, url)["scopes"] == ["system/Patient.r"]

    disabled = admin.post(f"{url}/action", {"action": "disable"}, htmx=htmx)
    assert _redirected_to(disabled, htmx=htmx) == url
    page_text = plain(admin.get(url).text)
    assert "Disabled" in page_text and "Enable client" in page_text
    refused_token = center.request_token(machine, center.assertion(clock.now()))
    assert refused_token.json()["error_description"] == "this client is disabled"
    admin.post(f"{url}/action", {"action": "enable"}, htmx=htmx)
    assert "Disable client" in plain(admin.get(url).text)
    unknown = admin.post(f"{url}/action", {"action": "explode"}, htmx=htmx)
    assert unknown.status_code == 400

    # Replacing the keys: refused input comes back in the keys block, next to its field.
    bad = admin.post(
        f"{url}/keys", {"jwks": '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'}, htmx=htmx
    )
    assert bad.status_code == 400
    page = _block(bad, htmx=htmx, starts='<section class="card" id="keys"')
    assert "private key material" in _errors(page)["jwks"]

    rolled = CenterSystem.generate("RS384")
    rolled.client_id = center.client_id
    replaced = admin.post(
        f"{url}/keys", {"jwks": json.dumps(rolled.public_jwks()), "grace_hours": "24"}, htmx=htmx
    )
    assert _redirected_to(replaced, htmx=htmx) == url
    page_text = plain(admin.get(url).text)
    assert rolled.kid in page_text
    assert "Stop the replaced keys now" in page_text
    with db.factory() as session:
        client = session.get(FhirClient, client_pk)
        assert client is not None
        assert len(client.key_sets) == 2
    assert center.token(machine, clock, scope="system/Patient.r")  # within the grace period
    assert rolled.token(machine, clock, scope="system/Patient.r")

    ended = admin.post(f"{url}/action", {"action": "end_grace"}, htmx=htmx)
    assert _redirected_to(ended, htmx=htmx) == url
    assert "Stop the replaced keys now" not in plain(admin.get(url).text)
    assert _token_rows(db) == 0
    assert center.request_token(machine, center.assertion(clock.now())).status_code == 401

    actions = [
        "admin.fhir_client.update",
        "admin.fhir_client.disable",
        "admin.fhir_client.enable",
        "admin.fhir_client.rotate_keys",
        "admin.fhir_client.end_grace",
    ]
    for action in actions:
        assert [e.client_id for e in audit_events(db, action)] == [center.client_id], action


def test_only_admins_manage_fhir_clients(
    db: Database, browsers: Callable[[str], Browser], client: TestClient, clock: FrozenClock
) -> None:
    center = CenterSystem.generate("ES384")
    client_pk = register(db, clock, center=center)
    paths = ["/admin/fhir-clients", f"/admin/fhir-clients/{client_pk}"]
    for login in (COORDINATOR_MD, ANALYST):
        browser = browsers(login)
        for path in paths:
            assert browser.get(path).status_code == 403, (login, path)
        posted = browser.post(f"/admin/fhir-clients/{client_pk}/action", {"action": "disable"})
        assert posted.status_code == 403
        assert 'href="/admin/fhir-clients"' not in browser.get("/home").text
    anonymous = client.get(paths[0])
    assert anonymous.status_code == 303
    assert anonymous.headers["location"].startswith("/login")
    with db.factory() as session:
        registered = session.get(FhirClient, client_pk)
        assert registered is not None and registered.is_enabled


def _results(response: httpx.Response, *, htmx: bool) -> str:
    page = _block(response, htmx=htmx, starts='<div id="results">')
    return page[page.index('<div id="results">') :]


def test_the_audit_log_filters_by_fhir_client(
    db: Database,
    browsers: Callable[[str], Browser],
    htmx: bool,
    machine: TestClient,
    clock: FrozenClock,
) -> None:
    first, second = CenterSystem.generate("ES384"), CenterSystem.generate("ES384")
    register(db, clock, center=first, center_name=HARBORVIEW)
    register(db, clock, center=second, center_name=FRONT_RANGE)
    assert first.token(machine, clock)
    assert second.token(machine, clock)
    assert second.request_token(machine, "not-a-jwt-but-from-second").status_code == 401

    admin = browsers(ADMIN)
    whole = admin.get("/admin/audit")
    options = dict(re.findall(r'<option value="([\w.~-]+)"[^>]*>([^<]*)</option>', whole.text))
    assert first.client_id in options and second.client_id in options

    shown = _results(admin.get(f"/admin/audit?client={first.client_id}", htmx=htmx), htmx=htmx)
    rows = re.findall(r"<tr>(.*?)</tr>", shown, re.S)[1:]  # skip the header row
    assert len(rows) == 2, shown
    texts = [plain(row) for row in rows]
    assert any("fhir.token" in t and f"{first.client_id} (FHIR client)" in t for t in texts)
    assert any("admin.fhir_client.register" in t and ADMIN in t for t in texts)
    assert second.client_id not in shown
    if not htmx:
        kept = single_values(read_form(whole.text, "/admin/audit"))
        assert kept["client"] == ""
        chosen = admin.get(f"/admin/audit?client={first.client_id}")
        assert single_values(read_form(chosen.text, "/admin/audit"))["client"] == first.client_id
    nobody = _results(admin.get("/admin/audit?client=no-such-client", htmx=htmx), htmx=htmx)
    assert "No events match these filters." in plain(nobody)


def test_the_pages_speak_spanish(db: Database, browsers: Callable[[str], Browser]) -> None:
    admin = browsers(ADMIN)
    switched = admin.post("/language", {"lang": "es", "next": "/admin/fhir-clients"})
    assert switched.status_code == 303
    page = admin.get("/admin/fhir-clients")
    assert '<html lang="es">' in page.text
    assert "Registrar un cliente" in plain(page.text)
    with warnings.catch_warnings():  # joserfc warns about a short key: that is the point
        warnings.simplefilter("ignore")
        small = RSAKey.generate_key(1024, parameters={"kid": "small-key"}, private=False)
    short = {"keys": [small.as_dict(private=False)]}
    refused = admin.post(
        "/admin/fhir-clients",
        {
            "name": "Sistema",
            "center_id": str(center_id(db, HARBORVIEW)),
            "jwks": json.dumps(short),
            "scopes": ["system/Patient.r"],
        },
    )
    assert refused.status_code == 400
    # A message with a value from fhir_adapter, translated with its value filled in.
    assert _errors(refused.text)["jwks"] == "La clave RSA small-key tiene menos de 2048 bits."
