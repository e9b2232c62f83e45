"""Coordinators' patient pages: the list, search, enrolment, editing, caregivers and their
proxy rights, invitations. List pages are checked as a whole page and as an htmx swap."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, timedelta
from html.parser import HTMLParser

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.texting.gateway import ConsoleGateway
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.models import (
    CaregiverLink,
    Patient,
    PatientStatus,
    ProxyRight,
    State,
    Therapy,
    TreatmentCenter,
)
from core.reference import CenterInput, save_center
from core.service import PatientData, enroll_patient
from portal.app import create_app
from tests.conftest import (
    CAREGIVER_MD,
    COORDINATOR_MD,
    T0,
    Database,
    log_in,
    make_settings,
    user_by_login,
)

HTMX = {"HX-Request": "true"}
PER_PAGE = 25
TEST_ACTOR = Actor.system("test-setup")


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    """Run a page test as a plain browser request and as an htmx partial request."""
    return bool(request.param)


# --- helpers ---------------------------------------------------------------------------


def _headers(htmx: bool) -> dict[str, str]:
    return HTMX if htmx else {}


def list_page(response: httpx.Response, *, htmx: bool) -> str:
    """Check the list answered in the right shape; return its results block."""
    assert response.status_code == 200, response.text
    if htmx:
        assert "<html" not in response.text, "an htmx request got the whole page"
        assert response.text.lstrip().startswith('<div id="results">')
    else:
        assert "<html" in response.text
        assert "<form" in response.text  # the filters come with the whole page
    start = response.text.index('<div id="results">')
    return response.text[start:]


def record_ids(results: str) -> list[int]:
    return [int(found) for found in re.findall(r'href="/patients/(\d+)"', results)]


_URL_ATTRIBUTES = re.compile(
    r'\b(?:href|src|action|formaction|hx-get|hx-post|hx-put|hx-delete|hx-push-url)="([^"]*)"'
)


def urls_in(response: httpx.Response) -> list[str]:
    """Every address the page links to or sends to, and any redirect target."""
    urls = _URL_ATTRIBUTES.findall(response.text)
    for header in ("location", "HX-Redirect", "HX-Push-Url", "HX-Location"):
        if header in response.headers:
            urls.append(response.headers[header])
    return urls


class _FormReader(HTMLParser):
    """The values a browser would submit for the form posting to `action`."""

    def __init__(self, action: str) -> None:
        super().__init__(convert_charrefs=True)
        self.action = action
        self.inside = False
        self.found = False
        self.select: str | None = None
        self.first_option: str | None = None
        self.fields: dict[str, list[str]] = {}

    def _add(self, name: str, value: str) -> None:
        self.fields.setdefault(name, []).append(value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and values.get("action") == self.action:
            self.inside = self.found = True
        if not self.inside:
            return
        name = values.get("name")
        if tag == "input" and name and not values.get("disabled"):
            kind = values.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in values:
                return
            if kind not in ("submit", "button"):
                self._add(name, values.get("value", "on" if kind == "checkbox" else ""))
        elif tag == "select" and name:
            self.select, self.first_option = name, None
        elif tag == "option" and self.select is not None:
            value = values.get("value", "")
            if self.first_option is None:
                self.first_option = value
            if "selected" in values:
                self._add(self.select, value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select" and self.select is not None:
            if self.select not in self.fields and self.first_option is not None:
                self._add(self.select, self.first_option)
            self.select = None


def read_form(html: str, action: str) -> dict[str, list[str]]:
    reader = _FormReader(action)
    reader.feed(html)
    assert reader.found, f"no form posting to {action}"
    return reader.fields


def single_values(fields: dict[str, list[str]]) -> dict[str, str]:
    return {name: values[-1] for name, values in fields.items()}


def audit_events(db: Database, action: str) -> list[AuditEvent]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def _patient(session: Session, given_name: str) -> Patient:
    patient = session.scalar(select(Patient).where(Patient.given_name == given_name))
    assert patient is not None
    return patient


def _maryland(session: Session) -> State:
    state = session.scalar(select(State).where(State.code == "MD"))
    assert state is not None
    return state


def _first_center(session: Session, state: State) -> TreatmentCenter:
    center = session.scalar(
        select(TreatmentCenter)
        .where(TreatmentCenter.state_id == state.id)
        .order_by(TreatmentCenter.id)
    )
    assert center is not None
    return center


def enroll(
    db: Database,
    clock: FrozenClock,
    *,
    family_name: str,
    count: int,
    center_id: int | None = None,
    statuses: list[PatientStatus] | None = None,
) -> list[int]:
    """Enroll `count` Maryland patients through the service (not the form)."""
    ids: list[int] = []
    with db.factory() as session:
        state = _maryland(session)
        center = center_id or _first_center(session, state).id
        therapy = session.scalar(select(Therapy).order_by(Therapy.id))
        assert therapy is not None
        for number in range(count):
            status = statuses[number] if statuses else PatientStatus.ACTIVE
            patient = enroll_patient(
                session,
                clock=clock,
                actor=TEST_ACTOR,
                data=PatientData(
                    given_name=f"Test{number:02d}",
                    family_name=family_name,
                    birth_date=date(2001, 4, 5),
                    medicaid_id=f"T{family_name[:4].upper()}{number:05d}",
                    state_id=state.id,
                    center_id=center,
                    therapy_id=therapy.id,
                    status=status,
                ),
                allowed_state_ids={state.id},
            )
            ids.append(patient.id)
        session.commit()
    return ids


def _maryland_ids(db: Database, status: PatientStatus | None = None) -> set[int]:
    with db.factory() as session:
        query = select(Patient.id).where(Patient.state_id == _maryland(session).id)
        if status is not None:
            query = query.where(Patient.status == status)
        return set(session.scalars(query))


# --- the list --------------------------------------------------------------------------


def test_patient_list_pages_by_25(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    # Zimmerman sorts after every seeded family name, so the added patients end the list.
    added = enroll(db, clock, family_name="Zimmerman", count=20)
    everyone = _maryland_ids(db)
    assert len(everyone) == 35
    token = login_as(COORDINATOR_MD)

    first = list_page(client.get("/patients", headers=_headers(htmx)), htmx=htmx)
    assert "35 patients" in first
    assert "Page 1 of 2" in first
    first_ids = record_ids(first)
    assert len(first_ids) == PER_PAGE

    by_address = list_page(client.get("/patients?page=2", headers=_headers(htmx)), htmx=htmx)
    by_form = list_page(
        client.post(
            "/patients/search",
            data={"csrf_token": token, "q": "", "page": "2"},
            headers=_headers(htmx),
        ),
        htmx=htmx,
    )
    for second in (by_address, by_form):
        assert "Page 2 of 2" in second
        second_ids = record_ids(second)
        assert len(second_ids) == 35 - PER_PAGE
        assert not set(first_ids) & set(second_ids)
        assert set(first_ids) | set(second_ids) == everyone
        assert set(second_ids) <= set(added)
    # The pager on page 1 offers the next page and, being a POST form, keeps filters out
    # of the address.
    assert 'name="page" value="2"' in first


def test_patient_list_filters_by_status_and_center(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    with db.factory() as session:
        center = save_center(
            session,
            clock=clock,
            actor=TEST_ACTOR,
            data=CenterInput(
                name="Chesapeake Children's", city="Annapolis", state_id=str(_maryland(session).id)
            ),
            center=None,
        )
        center_id = center.id
        session.commit()
    active, withdrawn = enroll(
        db,
        clock,
        family_name="Quarles",
        count=2,
        center_id=center_id,
        statuses=[PatientStatus.ACTIVE, PatientStatus.WITHDRAWN],
    )
    enrolled = _maryland_ids(db, PatientStatus.ENROLLED)
    assert enrolled  # the seeded world has a patient whose infusion is still planned
    token = login_as(COORDINATOR_MD)

    def shown(url: str) -> set[int]:
        return set(record_ids(list_page(client.get(url, headers=_headers(htmx)), htmx=htmx)))

    assert shown(f"/patients?center={center_id}") == {active, withdrawn}
    assert shown("/patients?status=withdrawn") == {withdrawn}
    assert shown("/patients?status=enrolled") == enrolled
    assert shown(f"/patients?center={center_id}&status=active") == {active}
    assert shown(f"/patients?center={center_id}&status=enrolled") == set()

    searched = client.post(
        "/patients/search",
        data={"csrf_token": token, "q": "", "center": str(center_id), "status": "withdrawn"},
        headers=_headers(htmx),
    )
    assert set(record_ids(list_page(searched, htmx=htmx))) == {withdrawn}
    if not htmx:  # the whole page shows the filters that are in force
        assert '<option value="withdrawn" selected>' in searched.text
        assert f'<option value="{center_id}" selected>' in searched.text


def test_search_by_name_or_medicaid_id_keeps_names_out_of_urls(
    db: Database, client: TestClient, login_as: Callable[[str], str], htmx: bool
) -> None:
    with db.factory() as session:
        imani = _patient(session, "Imani")
        names = {
            name.lower()
            for patient in session.scalars(select(Patient))
            for name in (patient.given_name, patient.family_name)
        }
    token = login_as(COORDINATOR_MD)
    queries = [
        "Imani",
        f"{imani.family_name.lower()} {imani.given_name.lower()}",
        imani.medicaid_id,
        imani.medicaid_id.lower(),
    ]
    for query in queries:
        response = client.post(
            "/patients/search", data={"csrf_token": token, "q": query}, headers=_headers(htmx)
        )
        results = list_page(response, htmx=htmx)
        assert record_ids(results) == [imani.id], query
        assert f"{imani.family_name}, {imani.given_name}" in results
        if not htmx:
            assert f'value="{query}"' in response.text  # the search box keeps the words
        for url in urls_in(response):
            lowered = url.lower()
            assert query.lower() not in lowered, f"the search words are in a URL: {url}"
            assert not [name for name in names if name in lowered], f"a name is in {url}"

    nobody = client.post(
        "/patients/search", data={"csrf_token": token, "q": "Andre"}, headers=_headers(htmx)
    )
    assert record_ids(list_page(nobody, htmx=htmx)) == []  # Andre lives in Colorado
    whole_list = client.get("/patients", headers=_headers(htmx))
    list_page(whole_list, htmx=htmx)
    for url in urls_in(whole_list):
        assert not [name for name in names if name in url.lower()], f"a name is in {url}"


# --- enrolment -------------------------------------------------------------------------


def _enrol_form(db: Database, token: str, **changes: str) -> dict[str, str]:
    with db.factory() as session:
        state = _maryland(session)
        center = _first_center(session, state)
        therapy = session.scalar(select(Therapy).order_by(Therapy.id))
        assert therapy is not None
        form = {
            "csrf_token": token,
            "given_name": "Keisha",
            "family_name": "Oduya",
            "birth_date": "2004-03-09",
            "medicaid_id": "MD77700001",
            "center_mrn": "MRN-77001",
            "state_id": str(state.id),
            "center_id": str(center.id),
            "therapy_id": str(therapy.id),
            "preferred_language": "en",
            "time_zone": "",
            "mobile_phone": "(410) 555-0177",
            "infusion_date": "",
            "status": "enrolled",
        }
    form.update(changes)
    return form


def _error_fields(html: str) -> list[str]:
    return re.findall(r'id="f-(\w+)-error"', html)


def test_enrol_form_refuses_bad_values_and_keeps_what_was_typed(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    with db.factory() as session:
        taken_medicaid_id = _patient(session, "Maya").medicaid_id
    token = login_as(COORDINATOR_MD)
    page = client.get("/patients/new")
    assert page.status_code == 200
    assert 'action="/patients/new"' in page.text
    tomorrow = (T0.date() + timedelta(days=1)).isoformat()
    cases = {
        "mobile_phone": "555-12",
        "birth_date": tomorrow,
        "medicaid_id": taken_medicaid_id,
    }
    for field, bad_value in cases.items():
        response = client.post("/patients/new", data=_enrol_form(db, token, **{field: bad_value}))
        assert response.status_code == 400, field
        assert "<html" in response.text
        assert _error_fields(response.text) == [field], f"{field}: {_error_fields(response.text)}"
        assert f'href="#f-{field}"' in response.text  # the summary points at the field
        assert re.search(rf'id="f-{field}"[^>]*aria-invalid="true"', response.text)
        kept = read_form(response.text, "/patients/new")
        assert single_values(kept)[field] == bad_value
        assert single_values(kept)["given_name"] == "Keisha"
        assert single_values(kept)["family_name"] == "Oduya"
        assert single_values(kept)["center_mrn"] == "MRN-77001"
    with db.factory() as session:
        assert session.scalar(select(Patient).where(Patient.family_name == "Oduya")) is None
    assert audit_events(db, "patient.create") == []


def test_enrolling_opens_the_new_record_and_is_audited(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    token = login_as(COORDINATOR_MD)
    response = client.post("/patients/new", data=_enrol_form(db, token))
    assert response.status_code == 303
    location = response.headers["location"]
    match = re.fullmatch(r"/patients/(\d+)\?done=enrolled", location)
    assert match, location
    patient_id = int(match.group(1))

    record = client.get(location)
    assert record.status_code == 200
    assert "Keisha Oduya" in record.text
    assert "The patient is enrolled." in record.text
    assert "MD77700001" in record.text
    created = audit_events(db, "patient.create")
    assert [event.patient_id for event in created] == [patient_id]
    assert created[0].actor_label == COORDINATOR_MD
    assert created[0].ip == "testclient"

    # From an htmx form the redirect comes as HX-Redirect, to the same kind of address.
    again = client.post(
        "/patients/new",
        data=_enrol_form(db, token, medicaid_id="MD77700002", center_mrn="", given_name="Kofi"),
        headers=HTMX,
    )
    assert again.status_code == 204
    assert re.fullmatch(r"/patients/\d+\?done=enrolled", again.headers["HX-Redirect"])


def test_editing_audits_the_changed_field_names_not_their_values(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    with db.factory() as session:
        imani = _patient(session, "Imani")
    token = login_as(COORDINATOR_MD)
    edit_url = f"/patients/{imani.id}/edit"
    page = client.get(edit_url)
    assert page.status_code == 200
    form = single_values(read_form(page.text, edit_url))
    assert form["given_name"] == "Imani"
    assert form["medicaid_id"] == imani.medicaid_id
    assert form["birth_date"] == imani.birth_date.isoformat()

    unchanged = client.post(edit_url, data={**form, "csrf_token": token})
    assert unchanged.status_code == 303
    assert audit_events(db, "patient.update") == []  # nothing changed, nothing to record

    form.update(family_name="Davis-Moreau", mobile_phone="(410) 555-0188", csrf_token=token)
    saved = client.post(edit_url, data=form)
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/patients/{imani.id}?done=saved"
    record = client.get(saved.headers["location"])
    assert "Imani Davis-Moreau" in record.text
    assert "(410) 555-0188" in record.text
    assert "The changes are saved." in record.text

    updates = audit_events(db, "patient.update")
    assert len(updates) == 1
    event = updates[0]
    assert event.patient_id == imani.id
    assert event.detail is not None
    assert sorted(event.detail["fields"]) == ["family_name", "mobile_phone"]
    written = f"{event.detail} {event.target} {event.actor_label}"
    for value in ("Moreau", "555-0188", "5550188", imani.family_name, "Imani"):
        assert value not in written, f"the audit row holds a value: {value}"

    blank = client.post(edit_url, data={**form, "given_name": "  "})
    assert blank.status_code == 400
    assert _error_fields(blank.text) == ["given_name"]
    assert single_values(read_form(blank.text, edit_url))["family_name"] == "Davis-Moreau"


# --- caregivers and proxy rights -------------------------------------------------------


def _rights_url(patient_id: int, link_id: int) -> str:
    return f"/patients/{patient_id}/caregivers/{link_id}/rights"


def test_adding_a_caregiver(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    with db.factory() as session:
        imani = _patient(session, "Imani")
    token = login_as(COORDINATOR_MD)
    new_url = f"/patients/{imani.id}/caregivers/new"
    page = client.get(new_url)
    assert page.status_code == 200
    assert read_form(page.text, new_url)["rights"] == ["view_schedule", "view_education"]

    typed = {
        "csrf_token": token,
        "given_name": "Tanya",
        "family_name": "Davis",
        "relationship": "sister",
        "mobile_phone": "555-12",
        "preferred_language": "en",
        "rights": ["view_schedule", "receive_reminders"],
    }
    refused = client.post(new_url, data=typed)
    assert refused.status_code == 400
    assert _error_fields(refused.text) == ["mobile_phone"]
    kept = read_form(refused.text, new_url)
    assert kept["given_name"] == ["Tanya"]
    assert kept["rights"] == ["view_schedule", "receive_reminders"]

    added = client.post(new_url, data={**typed, "mobile_phone": "(410) 555-0190"})
    assert added.status_code == 303
    assert added.headers["location"] == f"/patients/{imani.id}?done=caregiver_added"
    record = client.get(added.headers["location"])
    assert "The caregiver is added." in record.text
    assert "Tanya Davis (sister)" in record.text
    with db.factory() as session:
        link = session.scalar(
            select(CaregiverLink)
            .where(CaregiverLink.patient_id == imani.id)
            .order_by(CaregiverLink.id.desc())
        )
        assert link is not None
        link_id, caregiver_id = link.id, link.caregiver_id
    shown_rights = read_form(record.text, _rights_url(imani.id, link_id))["rights"]
    assert shown_rights == ["view_schedule", "receive_reminders"]
    granted = audit_events(db, "proxy.grant")
    assert [(event.patient_id, event.target) for event in granted] == [
        (imani.id, f"caregiver:{caregiver_id}")
    ]


def _person_section(html: str, patient_id: int) -> str:
    match = re.search(
        rf'<section[^>]*aria-labelledby="person-{patient_id}"[^>]*>(.*?)</section>',
        html,
        flags=re.DOTALL,
    )
    assert match, f"the home page has no section for patient {patient_id}"
    return match.group(1)


def test_proxy_rights_change_is_audited_and_shows_on_the_caregivers_home(
    db: Database,
    app: FastAPI,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
) -> None:
    with db.factory() as session:
        maya, imani = _patient(session, "Maya"), _patient(session, "Imani")
        denise = user_by_login(session, CAREGIVER_MD)
        link = session.scalar(
            select(CaregiverLink).where(
                CaregiverLink.patient_id == maya.id,
                CaregiverLink.caregiver_id == denise.caregiver_id,
            )
        )
        assert link is not None
        link_id, caregiver_id = link.id, link.caregiver_id
        assert link.rights() == set(ProxyRight)
    schedule = "Your next visits"
    token = login_as(COORDINATOR_MD)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as caregiver:
        log_in(caregiver, CAREGIVER_MD, clock)
        home = caregiver.get("/home").text
        assert schedule in _person_section(home, maya.id)
        assert schedule in _person_section(home, imani.id)

        rights_url = _rights_url(maya.id, link_id)
        form = read_form(client.get(f"/patients/{maya.id}").text, rights_url)
        all_rights = sorted(right.value for right in ProxyRight)
        assert sorted(form["rights"]) == all_rights
        without_schedule = [right for right in form["rights"] if right != "view_schedule"]
        response = client.post(rights_url, data={"csrf_token": token, "rights": without_schedule})
        assert response.status_code == 303
        assert response.headers["location"] == f"/patients/{maya.id}?done=rights_saved"

        changes = audit_events(db, "proxy.change")
        assert len(changes) == 1
        assert changes[0].patient_id == maya.id
        assert changes[0].target == f"caregiver:{caregiver_id}"
        assert changes[0].detail == {"before": all_rights, "after": sorted(without_schedule)}

        home = caregiver.get("/home").text
        maya_section = _person_section(home, maya.id)
        assert schedule not in maya_section
        assert "Learning" in maya_section  # the other rights still stand
        assert schedule in _person_section(home, imani.id)  # another patient's link is intact

        again = client.post(rights_url, data={"csrf_token": token, "rights": all_rights})
        assert again.status_code == 303
        assert len(audit_events(db, "proxy.change")) == 2
        assert schedule in _person_section(caregiver.get("/home").text, maya.id)


# --- invitations and the demo outbox ---------------------------------------------------


def test_sms_invitation_shows_on_the_demo_messages_page(db: Database, clock: FrozenClock) -> None:
    with db.factory() as session:
        imani = _patient(session, "Imani")
        assert imani.mobile_phone is not None
    demo = create_app(
        make_settings(db.url, demo_mode=True),
        clock=clock,
        factory=db.factory,
        gateway=ConsoleGateway(),
        run_scheduler=False,
    )
    with (
        TestClient(demo, raise_server_exceptions=False, follow_redirects=False) as staff,
        TestClient(demo, raise_server_exceptions=False, follow_redirects=False) as visitor,
    ):
        token = log_in(staff, COORDINATOR_MD, clock)
        sent = staff.post(
            f"/patients/{imani.id}/invitations", data={"csrf_token": token, "delivery": "sms"}
        )
        assert sent.status_code == 303
        assert sent.headers["location"] == f"/patients/{imani.id}?done=invited_sms"
        assert "The invitation was texted." in staff.get(sent.headers["location"]).text

        last_digits = imani.mobile_phone[-4:]
        page = visitor.get("/demo/messages")
        assert page.status_code == 200
        assert "<html" in page.text
        fragment = visitor.get("/demo/messages", headers=HTMX)
        assert fragment.status_code == 200
        assert "<html" not in fragment.text
        assert fragment.text.lstrip().startswith('<div id="messages">')
        links = []
        for html in (page.text, fragment.text):
            assert f"555-{last_digits}" in html
            assert "Invitation" in html
            found = re.search(r'href="http://testserver(/invite/[\w-]+)"', html)
            assert found, "the texted link is not on the page"
            links.append(found.group(1))
        assert links[0] == links[1]
        invitation = visitor.get(links[0])
        assert invitation.status_code == 200
        assert f"Welcome, {imani.given_name} {imani.family_name}" in invitation.text


def test_demo_messages_does_not_exist_outside_demo_mode(
    client: TestClient, login_as: Callable[[str], str]
) -> None:
    assert client.get("/demo/messages").status_code == 404
    login_as(COORDINATOR_MD)
    assert client.get("/demo/messages").status_code == 404
    assert client.get("/demo/messages", headers=HTMX).status_code == 404
