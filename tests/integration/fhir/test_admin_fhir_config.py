"""What admins configure so a center's FHIR data maps: a state's Medicaid identifier system,
a center's record-number system, the codes that name each therapy. Every page as a whole
page and as the htmx block it targets; refusals next to the field, with what was typed kept;
every change audited; nobody but admins."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import select

from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.models import State, Therapy, TherapyCode, TreatmentCenter
from core.reference import set_medicaid_system
from core.therapy_codes import HCPCS, NDC, PLATFORM_SYSTEM, RXNORM
from tests.conftest import ADMIN, COORDINATOR_MD, Browser, Database, plain
from tests.integration.record.test_patients import audit_events, read_form, single_values

HARBORVIEW = "Harborview Medical Center"
FRONT_RANGE = "Front Range Medical Center"


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _errors(page: str) -> dict[str, str]:
    """The message shown next to each field, by field name."""
    return {
        name: plain(message)
        for name, message in re.findall(
            r'<p class="error-text" id="f-(\w+)-error">(.*?)</p>', page, re.S
        )
    }


def _block(response: httpx.Response, *, htmx: bool, starts: str) -> str:
    """The answer in the right shape: the whole page, or only the block htmx targets."""
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


def _state(db: Database, code: str) -> State:
    with db.factory() as session:
        state = session.scalar(select(State).where(State.code == code))
        assert state is not None
        session.expunge(state)
        return state


def _center(db: Database, name: str) -> TreatmentCenter:
    with db.factory() as session:
        center = session.scalar(select(TreatmentCenter).where(TreatmentCenter.name == name))
        assert center is not None
        session.expunge(center)
        return center


# --- a state's Medicaid identifier system ------------------------------------------------


def test_an_admin_sets_a_states_medicaid_system_checked_and_audited(
    db: Database, browsers: Callable[[str], Browser], htmx: bool, clock: FrozenClock
) -> None:
    admin = browsers(ADMIN)
    maryland, colorado = _state(db, "MD"), _state(db, "CO")
    url = f"/admin/states/{maryland.id}"
    page = admin.get(url, htmx=htmx)
    assert page.status_code == 200
    text = plain(_block(page, htmx=htmx, starts='<div id="state">'))
    # Nothing configured: the default is in force, and the page says which it is.
    assert "https://cgt-access.org/fhir/sid/medicaid/md the platform's default" in text
    assert single_values(read_form(page.text, url + "/medicaid-system")) == {
        "csrf_token": admin.token,
        "medicaid_id_system": "",
    }

    with transaction(db.factory) as session:
        state = session.get(State, colorado.id)
        assert state is not None
        set_medicaid_system(
            session,
            clock=clock,
            actor=Actor.system("test-setup"),
            state=state,
            system="https://medicaid.colorado.example/fhir/sid/member-id",
        )

    refused = {
        "ftp://medicaid.maryland.example/id": "http:// or https://",
        "medicaid-md": "http:// or https://",
        "https://medicaid.maryland.example/member id": "no spaces",
        "https://medicaid.maryland.example/id?state=md": "Leave out the ? and #",
        "urn:oid:2.16.840.1.x": "numbers joined by dots",
        "urn:uuid:NOT-A-UUID": "A UUID is written in lower case",
        "https://cgt-access.org/fhir/sid/medicaid/co": "platform's own",
        "https://medicaid.colorado.example/fhir/sid/member-id": "Colorado already uses",
        "https://example.org/" + "x" * 200: "200 characters",
    }
    for typed, words in refused.items():
        response = admin.post(url + "/medicaid-system", {"medicaid_id_system": typed}, htmx=htmx)
        assert response.status_code == 400, typed
        block = _block(response, htmx=htmx, starts='<section class="card" id="medicaid-system"')
        errors = _errors(block)
        assert list(errors) == ["medicaid_id_system"], (typed, errors)
        assert words in errors["medicaid_id_system"], (typed, errors)
        # What was typed stays in the field, to correct it.
        kept = single_values(read_form(block, url + "/medicaid-system"))
        assert kept["medicaid_id_system"] == typed
    assert _state(db, "MD").medicaid_id_system is None

    chosen = "urn:oid:2.16.840.1.113883.19.5.24"
    saved = admin.post(url + "/medicaid-system", {"medicaid_id_system": f"  {chosen} "}, htmx=htmx)
    assert _redirected_to(saved, htmx=htmx) == url
    assert _state(db, "MD").medicaid_id_system == chosen
    shown = plain(admin.get(url).text)
    assert f"In use {chosen} What centers send" in shown

    # Typing the default, or nothing, goes back to the default.
    for typed in ("https://cgt-access.org/fhir/sid/medicaid/md", ""):
        admin.post(url + "/medicaid-system", {"medicaid_id_system": chosen})
        again = admin.post(url + "/medicaid-system", {"medicaid_id_system": typed}, htmx=htmx)
        assert _redirected_to(again, htmx=htmx) == url
        assert _state(db, "MD").medicaid_id_system is None

    events = [
        event
        for event in audit_events(db, "admin.state.medicaid_system")
        if event.target == f"state:{maryland.id}"
    ]
    assert [event.detail for event in events][:2] == [
        {"from": "https://cgt-access.org/fhir/sid/medicaid/md", "to": chosen},
        {"from": chosen, "to": "https://cgt-access.org/fhir/sid/medicaid/md"},
    ]
    assert {event.actor_label for event in events} == {ADMIN}


def test_a_medicaid_system_may_not_be_a_centers_record_number_system(
    db: Database, browsers: Callable[[str], Browser]
) -> None:
    admin = browsers(ADMIN)
    harbor, maryland = _center(db, HARBORVIEW), _state(db, "MD")
    mrn = "https://harborview.example/fhir/sid/mrn"
    saved = admin.post(f"/admin/centers/{harbor.id}/mrn-system", {"mrn_system": mrn})
    assert saved.status_code == 303
    refused = admin.post(
        f"/admin/states/{maryland.id}/medicaid-system", {"medicaid_id_system": mrn}
    )
    assert refused.status_code == 400
    assert "record numbers" in _errors(refused.text)["medicaid_id_system"]


# --- a center's record-number system ------------------------------------------------------


def test_an_admin_sets_a_centers_record_number_system(
    db: Database, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    admin = browsers(ADMIN)
    harbor = _center(db, HARBORVIEW)
    url = f"/admin/centers/{harbor.id}"
    page = admin.get(url, htmx=htmx)
    assert page.status_code == 200
    text = plain(_block(page, htmx=htmx, starts='<div id="center">'))
    assert f"https://cgt-access.org/fhir/sid/mrn/center-{harbor.id} the platform's default" in text

    refused = {
        "mailto:records@harborview.example": "http:// or https://",
        "https://cgt-access.org/fhir/sid/medicaid/co": "platform's own",
    }
    for typed, words in refused.items():
        response = admin.post(url + "/mrn-system", {"mrn_system": typed}, htmx=htmx)
        assert response.status_code == 400, typed
        block = _block(response, htmx=htmx, starts='<section class="card" id="mrn-system"')
        assert words in _errors(block)["mrn_system"], typed
        assert single_values(read_form(block, url + "/mrn-system"))["mrn_system"] == typed

    # A state's configured Medicaid system names Medicaid IDs, never record numbers.
    medicaid = "urn:oid:2.16.840.1.113883.19.5.24"
    admin.post(f"/admin/states/{harbor.state_id}/medicaid-system", {"medicaid_id_system": medicaid})
    clash = admin.post(url + "/mrn-system", {"mrn_system": medicaid}, htmx=htmx)
    assert clash.status_code == 400
    assert "Medicaid IDs" in _errors(clash.text)["mrn_system"]

    mrn = "https://harborview.example/fhir/sid/mrn"
    saved = admin.post(url + "/mrn-system", {"mrn_system": mrn}, htmx=htmx)
    assert _redirected_to(saved, htmx=htmx) == url
    assert _center(db, HARBORVIEW).mrn_system == mrn
    assert f"In use {mrn} " in plain(admin.get(url).text)
    # Two centers of one health system may share their record numbers' system.
    front_range = _center(db, FRONT_RANGE)
    shared = admin.post(f"/admin/centers/{front_range.id}/mrn-system", {"mrn_system": mrn})
    assert shared.status_code == 303
    events = audit_events(db, "admin.center.mrn_system")
    assert [(event.target, event.detail) for event in events] == [
        (
            f"center:{harbor.id}",
            {"from": f"https://cgt-access.org/fhir/sid/mrn/center-{harbor.id}", "to": mrn},
        ),
        (
            f"center:{front_range.id}",
            {"from": f"https://cgt-access.org/fhir/sid/mrn/center-{front_range.id}", "to": mrn},
        ),
    ]


# --- therapies and their codes ------------------------------------------------------------


def _therapy_id(db: Database, code: str) -> int:
    with db.factory() as session:
        found = session.scalar(select(Therapy.id).where(Therapy.code == code))
    assert found is not None
    return found


def _codes(db: Database) -> list[tuple[str, str, str, str | None]]:
    with db.factory() as session:
        rows = session.execute(
            select(Therapy.code, TherapyCode.system, TherapyCode.code, TherapyCode.display)
            .join(Therapy, Therapy.id == TherapyCode.therapy_id)
            .order_by(TherapyCode.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def test_an_admin_adds_and_removes_the_codes_that_name_a_therapy(
    db: Database, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    admin = browsers(ADMIN)
    page = admin.get("/admin/therapies", htmx=htmx)
    assert page.status_code == 200
    text = plain(_block(page, htmx=htmx, starts='<div id="therapies">'))
    if not htmx:
        assert 'href="/admin/therapies" aria-current="page"' in page.text  # in the navigation
    # The platform's own codes are listed, always accepted; the known systems suggested.
    assert f"The platform's own {PLATFORM_SYSTEM} casgevy Casgevy Always accepted" in text
    assert f"The platform's own {PLATFORM_SYSTEM} lyfgenia Lyfgenia Always accepted" in text
    for uri in (HCPCS, NDC, RXNORM):
        assert f'<option value="{uri}">' in page.text

    casgevy, lyfgenia = _therapy_id(db, "casgevy"), _therapy_id(db, "lyfgenia")
    good = {
        "therapy_id": str(casgevy),
        "system": HCPCS,
        "code": "j3392",
        "display": "Injection, exagamglogene autotemcel, per treatment",
    }
    refused_cases: list[tuple[dict[str, str], str, str]] = [
        ({"therapy_id": ""}, "therapy_id", "Choose the therapy"),
        ({"therapy_id": "999999"}, "therapy_id", "Choose the therapy"),
        ({"system": ""}, "system", "Enter the code system's address"),
        ({"system": "HCPCS"}, "system", "http:// or https://"),
        ({"system": PLATFORM_SYSTEM}, "system", "always accepted"),
        ({"code": ""}, "code", "Enter the code"),
        ({"code": "J339"}, "code", "a letter and four digits"),
        ({"system": NDC, "code": "1234-56"}, "code", "10 or 11 digits"),
        ({"system": RXNORM, "code": "RX12"}, "code", "is a number"),
        ({"system": "https://codes.example.org/cgt", "code": "a\tb"}, "code", "tabs"),
        ({"display": "x" * 201}, "display", "200 characters"),
    ]
    for change, field, words in refused_cases:
        response = admin.post("/admin/therapies/codes", {**good, **change}, htmx=htmx)
        assert response.status_code == 400, change
        block = _block(response, htmx=htmx, starts='<div id="therapies">')
        errors = _errors(block)
        assert list(errors) == [field], (change, errors)
        assert words in errors[field], (change, errors)
        kept = single_values(read_form(block, "/admin/therapies/codes"))
        assert kept["code"] == {**good, **change}["code"].strip() or field == "code"
    assert _codes(db) == []

    added = admin.post("/admin/therapies/codes", good, htmx=htmx)
    assert _redirected_to(added, htmx=htmx) == "/admin/therapies"
    assert _codes(db) == [("casgevy", HCPCS, "J3392", good["display"])]
    shown = plain(admin.get("/admin/therapies").text)
    assert f"HCPCS Level II {HCPCS} J3392 {good['display']}" in shown

    # One code names one therapy: not Lyfgenia too, and not twice for Casgevy.
    for therapy, words in ((lyfgenia, "This code names Casgevy"), (casgevy, "Casgevy has this")):
        taken = admin.post(
            "/admin/therapies/codes", {**good, "therapy_id": str(therapy)}, htmx=htmx
        )
        assert taken.status_code == 400
        assert words in _errors(taken.text)["code"]
    other = admin.post(
        "/admin/therapies/codes",
        {"therapy_id": str(lyfgenia), "system": HCPCS, "code": "J3394", "display": ""},
        htmx=htmx,
    )
    assert _redirected_to(other, htmx=htmx) == "/admin/therapies"
    assert _codes(db)[1] == ("lyfgenia", HCPCS, "J3394", None)

    with db.factory() as session:
        code_id = session.scalar(select(TherapyCode.id).where(TherapyCode.code == "J3392"))
    removed = admin.post("/admin/therapies/codes/remove", {"code_id": str(code_id)}, htmx=htmx)
    assert _redirected_to(removed, htmx=htmx) == "/admin/therapies"
    assert [row[2] for row in _codes(db)] == ["J3394"]
    gone = admin.post("/admin/therapies/codes/remove", {"code_id": str(code_id)}, htmx=htmx)
    assert gone.status_code == 400
    assert "not configured (any more)" in plain(
        _block(gone, htmx=htmx, starts='<div id="therapies">')
    )

    added_events = audit_events(db, "admin.therapy_code.add")
    assert [(event.target, event.detail) for event in added_events] == [
        (f"therapy:{casgevy}", {"system": HCPCS, "code": "J3392"}),
        (f"therapy:{lyfgenia}", {"system": HCPCS, "code": "J3394"}),
    ]
    assert [event.detail for event in audit_events(db, "admin.therapy_code.remove")] == [
        {"system": HCPCS, "code": "J3392"}
    ]


def test_the_therapies_page_speaks_spanish(
    db: Database, browsers: Callable[[str], Browser]
) -> None:
    admin = browsers(ADMIN)
    admin.client.post("/language", data={"csrf_token": admin.token, "lang": "es", "next": "/"})
    page = plain(admin.get("/admin/therapies").text)
    assert "Siempre aceptado" in page
    refused = admin.post("/admin/therapies/codes", {"therapy_id": "", "system": "", "code": ""})
    assert "Elija la terapia" in _errors(refused.text)["therapy_id"]


def test_only_admins_configure_what_fhir_data_maps_to(
    db: Database, browsers: Callable[[str], Browser]
) -> None:
    coordinator = browsers(COORDINATOR_MD)
    maryland, harbor = _state(db, "MD"), _center(db, HARBORVIEW)
    assert coordinator.get("/admin/therapies").status_code == 403
    attempts = [
        ("/admin/therapies/codes", {"therapy_id": "1", "system": HCPCS, "code": "J3392"}),
        ("/admin/therapies/codes/remove", {"code_id": "1"}),
        (f"/admin/states/{maryland.id}/medicaid-system", {"medicaid_id_system": "urn:oid:1.2"}),
        (f"/admin/centers/{harbor.id}/mrn-system", {"mrn_system": "urn:oid:1.2"}),
    ]
    for url, data in attempts:
        assert coordinator.post(url, data).status_code == 403, url
    assert _codes(db) == []
    assert _state(db, "MD").medicaid_id_system is None
    assert _center(db, HARBORVIEW).mrn_system is None
