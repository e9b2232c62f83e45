"""Admin pages: states, treatment centers, staff accounts (set-password links, deactivation,
second-factor reset) and the read-only audit log."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import UTC, datetime

import pyotp
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.audit.models import AuditEvent, AuditOutcome
from core.audit.service import Actor, record_event
from core.clock import FrozenClock
from core.identity.models import Invitation
from core.models import Patient, State, TreatmentCenter
from portal.dev.demo import DEMO_PASSWORD
from tests.conftest import (
    ADMIN,
    CAREGIVER_MD,
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_MD,
    STAFF_TOTP_SECRET,
    Database,
    csrf_token,
    log_in,
    user_by_login,
)
from tests.integration.identity.test_permissions import api_routes
from tests.integration.record.test_patients import HTMX, audit_events, read_form, single_values


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    """Run a page test as a plain browser request and as an htmx partial request."""
    return bool(request.param)


def _error_fields(page: str) -> list[str]:
    return re.findall(r'id="f-(\w+)-error"', page)


def _state_id(session: Session, code: str) -> int:
    state_id = session.scalar(select(State.id).where(State.code == code))
    assert state_id is not None
    return state_id


def _new_browser(app: FastAPI) -> TestClient:
    return TestClient(app, raise_server_exceptions=False, follow_redirects=False)


# --- states and centers ----------------------------------------------------------------


def test_states_are_added_and_edited_with_checked_values(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    token = login_as(ADMIN)
    oregon = {
        "csrf_token": token,
        "code": "or",
        "name": "Oregon",
        "time_zone": "America/Los_Angeles",
        "program_name": "Oregon Care Connect",
        "program_phone": "(503) 555-0100",
    }
    for field, bad in {
        "time_zone": "Mars/Olympus_Mons",
        "program_phone": "12",
        "code": "MD",  # taken
    }.items():
        refused = client.post("/admin/states", data={**oregon, field: bad})
        assert refused.status_code == 400, field
        assert _error_fields(refused.text) == [field]
        kept = single_values(read_form(refused.text, "/admin/states"))
        assert kept[field] == bad
        assert kept["name"] == "Oregon"
        assert kept["program_name"] == "Oregon Care Connect"
    with db.factory() as session:
        assert session.scalar(select(State).where(State.code == "OR")) is None

    added = client.post("/admin/states", data=oregon)
    assert added.status_code == 303
    assert added.headers["location"] == "/admin/states"
    listing = client.get("/admin/states").text
    assert "Oregon Care Connect" in listing
    assert "(503) 555-0100" in listing
    with db.factory() as session:
        state_id = _state_id(session, "OR")

    edit_url = f"/admin/states/{state_id}"
    form = single_values(read_form(client.get(edit_url).text, edit_url))
    assert form["code"] == "OR"
    assert form["time_zone"] == "America/Los_Angeles"
    refused = client.post(edit_url, data={**form, "csrf_token": token, "time_zone": "Nowhere"})
    assert refused.status_code == 400
    assert _error_fields(refused.text) == ["time_zone"]
    saved = client.post(
        edit_url, data={**form, "csrf_token": token, "program_name": "Oregon Health Link"}
    )
    assert saved.status_code == 303
    listing = client.get("/admin/states").text
    assert "Oregon Health Link" in listing
    assert "Oregon Care Connect" not in listing
    with db.factory() as session:
        state = session.get(State, state_id)
        assert state is not None
        assert state.time_zone == "America/Los_Angeles"  # the refused edit changed nothing
    saves = audit_events(db, "admin.state.save")
    assert [event.target for event in saves] == [f"state:{state_id}"] * 2
    assert {event.actor_label for event in saves} == {ADMIN}


def test_centers_are_added_with_checked_values(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    with db.factory() as session:
        maryland = _state_id(session, "MD")
    token = login_as(ADMIN)
    center = {
        "csrf_token": token,
        "name": "Potomac Gene Therapy Center",
        "city": "Bethesda",
        "state_id": str(maryland),
        "phone": "(410) 555-0123",
    }
    for field, bad in {"name": "", "phone": "12", "state_id": ""}.items():
        refused = client.post("/admin/centers", data={**center, field: bad})
        assert refused.status_code == 400, field
        assert _error_fields(refused.text) == [field]
        assert single_values(read_form(refused.text, "/admin/centers"))["city"] == "Bethesda"

    added = client.post("/admin/centers", data=center)
    assert added.status_code == 303
    assert added.headers["location"] == "/admin/centers"
    assert "Potomac Gene Therapy Center" in client.get("/admin/centers").text
    with db.factory() as session:
        created = session.scalar(
            select(TreatmentCenter).where(TreatmentCenter.name == "Potomac Gene Therapy Center")
        )
        assert created is not None
        assert (created.state_id, created.phone, created.is_active) == (
            maryland,
            "+14105550123",
            True,
        )
    assert [event.target for event in audit_events(db, "admin.center.save")] == [
        f"center:{created.id}"
    ]


# --- staff accounts --------------------------------------------------------------------

_LINK = re.compile(r"http://testserver/invite/([A-Za-z0-9_-]+)")


def test_new_coordinator_sets_a_password_by_link_then_must_enrol_totp(
    db: Database,
    app: FastAPI,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
) -> None:
    with db.factory() as session:
        maryland = _state_id(session, "MD")
    token = login_as(ADMIN)
    assert client.get("/admin/users/new").status_code == 200
    account = {
        "csrf_token": token,
        "login": "Riley.Chen@health.example.org",
        "display_name": "Riley Chen",
        "role": "coordinator",
        "state_ids": [],
        "center_id": "",
    }
    refused = client.post("/admin/users/new", data=account)
    assert refused.status_code == 400
    assert _error_fields(refused.text) == ["state_ids"]
    assert single_values(read_form(refused.text, "/admin/users/new"))["display_name"] == (
        "Riley Chen"
    )

    created = client.post("/admin/users/new", data={**account, "state_ids": [str(maryland)]})
    assert created.status_code == 200
    found = _LINK.search(created.text)
    assert found, "the set-password link is not shown"
    invite_token = found.group(1)
    assert "shown only once" in created.text
    with db.factory() as session:
        riley = user_by_login(session, "riley.chen@health.example.org")
        assert riley.state_ids == {maryland}
        assert riley.password_hash is None
        riley_id = riley.id
    # Shown once: the account pages never show the link again.
    for url in (f"/admin/users/{riley_id}", "/admin/users"):
        page = client.get(url)
        assert page.status_code == 200
        assert invite_token not in page.text
    assert "Invitation not accepted yet" in client.get(f"/admin/users/{riley_id}").text

    with _new_browser(app) as newcomer:
        invite_url = f"/invite/{invite_token}"
        page = newcomer.get(invite_url)
        assert page.status_code == 200
        assert "Welcome, Riley Chen" in page.text
        csrf = csrf_token(newcomer, invite_url)
        password = "tidepools at low noon"
        accepted = newcomer.post(
            invite_url,
            data={
                "csrf_token": csrf,
                "login": "riley.chen@health.example.org",
                "password": password,
                "password_again": password,
            },
        )
        assert accepted.status_code == 303, accepted.text
        assert accepted.headers["location"] == "/login?welcome=1"
        assert newcomer.get(invite_url).status_code == 410  # the link works once

        logged_in = newcomer.post(
            "/login",
            data={
                "login": "riley.chen@health.example.org",
                "password": password,
                "csrf_token": csrf,
            },
        )
        assert logged_in.status_code == 303
        assert logged_in.headers["location"].startswith("/account/mfa")
        csrf = csrf_token(newcomer, "/account/mfa")  # the login session's token from now on
        blocked = newcomer.get("/patients")
        assert blocked.status_code == 303
        assert blocked.headers["location"] == "/account/mfa"

        setup = newcomer.get("/account/mfa")
        assert setup.status_code == 200
        secret_match = re.search(r'id="totp-secret">\s*([A-Z2-7]+)\s*<', setup.text)
        assert secret_match, "no authenticator key on the set-up page"
        secret = secret_match.group(1)
        wrong = newcomer.post("/account/mfa", data={"csrf_token": csrf, "code": "000000"})
        assert wrong.status_code == 400
        code = pyotp.TOTP(secret).at(clock.now())
        enrolled = newcomer.post("/account/mfa", data={"csrf_token": csrf, "code": code})
        assert enrolled.status_code == 303
        assert enrolled.headers["location"] == "/worklist"
        patients = newcomer.get("/patients")
        assert patients.status_code == 200
        assert "Johnson, Maya" in patients.text

    for action in ("admin.user.save", "invitation.issue", "invitation.accept"):
        assert [event.target for event in audit_events(db, action)] == [f"user:{riley_id}"]
    assert [event.actor_user_id for event in audit_events(db, "account.mfa_enabled")] == [riley_id]


def _user_action(client: TestClient, token: str, user_id: int, action: str) -> None:
    response = client.post(
        f"/admin/users/{user_id}/action", data={"csrf_token": token, "action": action}
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"/admin/users/{user_id}"


def _password_login(browser: TestClient, login: str) -> str:
    token = csrf_token(browser)
    response = browser.post(
        "/login", data={"login": login, "password": DEMO_PASSWORD, "csrf_token": token}
    )
    return f"{response.status_code} {response.headers.get('location', '')}"


def test_deactivating_a_user_ends_their_sessions_at_once(
    db: Database,
    app: FastAPI,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
) -> None:
    with db.factory() as session:
        coordinator_id = user_by_login(session, COORDINATOR_MD).id
        admin_id = user_by_login(session, ADMIN).id
    token = login_as(ADMIN)
    with _new_browser(app) as coordinator:
        log_in(coordinator, COORDINATOR_MD, clock)
        assert coordinator.get("/patients").status_code == 200

        _user_action(client, token, coordinator_id, "deactivate")
        assert "Deactivated" in client.get(f"/admin/users/{coordinator_id}").text

        after = coordinator.get("/patients")
        assert after.status_code == 303
        assert after.headers["location"].startswith("/login")
        assert _password_login(coordinator, COORDINATOR_MD).startswith("400")

    refused = client.post(
        f"/admin/users/{admin_id}/action", data={"csrf_token": token, "action": "deactivate"}
    )
    assert refused.status_code == 400  # nobody locks themselves out
    assert [event.target for event in audit_events(db, "admin.user.deactivate")] == [
        f"user:{coordinator_id}"
    ]


def test_resetting_the_second_factor_makes_the_user_enrol_again(
    db: Database,
    app: FastAPI,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
) -> None:
    with db.factory() as session:
        coordinator_id = user_by_login(session, COORDINATOR_CO).id
    token = login_as(ADMIN)
    with _new_browser(app) as coordinator:
        log_in(coordinator, COORDINATOR_CO, clock)
        assert coordinator.get("/patients").status_code == 200
        assert "Reset the second step" in client.get(f"/admin/users/{coordinator_id}").text

        _user_action(client, token, coordinator_id, "reset_mfa")
        account_page = client.get(f"/admin/users/{coordinator_id}").text
        assert "Reset the second step" not in account_page  # nothing left to reset

        after = coordinator.get("/patients")
        assert after.status_code == 303
        assert after.headers["location"].startswith("/login")
        assert _password_login(coordinator, COORDINATOR_CO) == "303 /account/mfa"
        setup = coordinator.get("/account/mfa")
        assert setup.status_code == 200
        secret = re.search(r'id="totp-secret">\s*([A-Z2-7]+)\s*<', setup.text)
        assert secret is not None
        assert secret.group(1) != STAFF_TOTP_SECRET
    assert [event.target for event in audit_events(db, "admin.user.mfa_reset")] == [
        f"user:{coordinator_id}"
    ]


def test_an_admin_cannot_make_a_set_password_link_for_a_patient_or_caregiver(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    with db.factory() as session:
        maya, denise = user_by_login(session, PATIENT_MD), user_by_login(session, CAREGIVER_MD)
        maya_id, maya_patient = maya.id, maya.patient_id
        denise_id = denise.id
        assert denise.caregiver is not None
        denise_patients = sorted(link.patient_id for link in denise.caregiver.links)
        assert maya_patient in denise_patients
    token = login_as(ADMIN)
    for account_id in (maya_id, denise_id):
        assert "Make a new set-password link" not in client.get(f"/admin/users/{account_id}").text
        refused = client.post(
            f"/admin/users/{account_id}/action",
            data={"csrf_token": token, "action": "set_password_link"},
        )
        assert refused.status_code == 400
        assert "Patient and caregiver accounts are managed from their record." in refused.text
        assert "/invite/" not in refused.text

    with db.factory() as session:
        assert session.scalars(select(Invitation)).all() == []
    assert audit_events(db, "invitation.issue") == []
    refusals = audit_events(db, "admin.user.set_password_link")
    assert [(event.outcome, event.target, event.patient_id) for event in refusals] == [
        (AuditOutcome.DENIED, f"user:{maya_id}", maya_patient),
        *[(AuditOutcome.DENIED, f"user:{denise_id}", patient) for patient in denise_patients],
    ]
    assert {event.actor_label for event in refusals} == {ADMIN}


# --- the audit log ---------------------------------------------------------------------


def _add_events(db: Database) -> int:
    """A few recognisable events (targets ev:...), at known days; returns Maya's id."""
    with db.factory() as session:
        maya = session.scalar(select(Patient.id).where(Patient.given_name == "Maya"))
        assert maya is not None

        def add(
            label: str,
            action: str,
            target: str,
            at: datetime,
            outcome: AuditOutcome = AuditOutcome.SUCCESS,
            patient_id: int | None = None,
        ) -> None:
            record_event(
                session,
                clock=FrozenClock(at),
                actor=Actor(user_id=None, label=label, role=None, ip="203.0.113.7"),
                action=action,
                outcome=outcome,
                patient_id=patient_id,
                target=target,
            )

        add("auditor.one@example.org", "test.alpha", "ev:alpha", _utc(2026, 10, 1))
        add(
            "auditor.two@example.org",
            "test.beta",
            "ev:beta",
            _utc(2026, 10, 15),
            AuditOutcome.FAILURE,
            maya,
        )
        add(
            "auditor.one@example.org",
            "other.gamma",
            "ev:gamma",
            _utc(2026, 11, 1),
            AuditOutcome.DENIED,
            maya,
        )
        for number in range(60):
            add(
                "bulk.robot@example.org",
                "bulk.row",
                f"ev:bulk-{number:02d}",
                _utc(2026, 9, 1, minute=number),
            )
        session.commit()
    return maya


def _utc(year: int, month: int, day: int, *, minute: int = 0) -> datetime:
    return datetime(year, month, day, 15, minute, tzinfo=UTC)


def _audit_results(client: TestClient, url: str, *, htmx: bool) -> str:
    response = client.get(url, headers=HTMX if htmx else {})
    assert response.status_code == 200, url
    if htmx:
        assert "<html" not in response.text
        assert response.text.lstrip().startswith('<div id="results">')
        assert "<form" not in response.text  # the filters stay as they are on the page
    else:
        assert "<html" in response.text
        assert 'action="/admin/audit"' in response.text
    page = str(response.text)
    return page[page.index('<div id="results">') :]


def _targets(results: str) -> list[str]:
    return re.findall(r"<td>(ev:[\w-]+)</td>", results)


def test_audit_log_filters(
    db: Database, client: TestClient, login_as: Callable[[str], str], htmx: bool
) -> None:
    maya = _add_events(db)
    login_as(ADMIN)

    def shown(query: str) -> set[str]:
        return set(_targets(_audit_results(client, f"/admin/audit?{query}", htmx=htmx)))

    assert shown("actor=auditor.one") == {"ev:alpha", "ev:gamma"}
    assert shown("actor=AUDITOR.TWO") == {"ev:beta"}
    assert shown("action=test.") == {"ev:alpha", "ev:beta"}
    assert shown(f"patient={maya}") == {"ev:beta", "ev:gamma"}
    assert shown("outcome=failure") == {"ev:beta"}
    assert shown("outcome=denied") == {"ev:gamma"}
    assert shown("since=2026-10-10&until=2026-10-31") == {"ev:beta"}
    assert shown("since=2026-10-15&until=2026-10-15") == {"ev:beta"}  # whole days
    assert shown("actor=auditor&action=test.&outcome=success") == {"ev:alpha"}
    assert shown("action=nothing.like.this") == set()
    # A day at the calendar's end (a day later would overflow) is a filter left as it was.
    assert shown("outcome=failure&until=9999-12-31") == {"ev:beta"}

    whole = client.get("/admin/audit?actor=auditor.one&outcome=denied")
    form = single_values(read_form(whole.text, "/admin/audit"))
    assert (form["actor"], form["outcome"]) == ("auditor.one", "denied")


def test_audit_log_paginates_keeping_the_filters(
    db: Database, client: TestClient, login_as: Callable[[str], str], htmx: bool
) -> None:
    _add_events(db)
    login_as(ADMIN)
    first = _audit_results(client, "/admin/audit?action=bulk.", htmx=htmx)
    assert "60 events found." in first
    assert "Page 1 of 2" in first
    newest_first = [f"ev:bulk-{number:02d}" for number in range(59, -1, -1)]
    assert _targets(first) == newest_first[:50]

    next_link = re.search(r'href="([^"]*page=2[^"]*)"', first)
    assert next_link, "no link to the next page"
    url = html.unescape(next_link.group(1))
    assert "action=bulk." in url
    second = _audit_results(client, url, htmx=htmx)
    assert "Page 2 of 2" in second
    assert _targets(second) == newest_first[50:]


def test_audit_log_cannot_be_changed_or_deleted(
    db: Database, app: FastAPI, client: TestClient, login_as: Callable[[str], str]
) -> None:
    audit_routes = [route for route in api_routes(app) if route.path.startswith("/admin/audit")]
    assert audit_routes, "the audit page is not among the routes"
    writers = [route for route in audit_routes if route.methods - {"GET", "HEAD"}]
    assert not writers, f"routes that could change the audit log: {writers}"

    _add_events(db)
    token = login_as(ADMIN)
    with db.factory() as session:
        first = session.scalar(select(AuditEvent).order_by(AuditEvent.id).limit(1))
        assert first is not None
        first_id, first_action = first.id, first.action
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for url in ("/admin/audit", f"/admin/audit/{first_id}"):
            response = client.request(
                method, url, headers={"X-CSRF-Token": token}, data={"csrf_token": token}
            )
            assert response.status_code in (404, 405), f"{method} {url}: {response.status_code}"

    # Below the application, the database refuses too.
    for statement in (
        update(AuditEvent).where(AuditEvent.id == first_id).values(action="tampered"),
        delete(AuditEvent).where(AuditEvent.id == first_id),
    ):
        with db.factory() as session, pytest.raises(DBAPIError):
            session.execute(statement)
            session.flush()
    with db.factory() as session:
        kept = session.get(AuditEvent, first_id)
        assert kept is not None
        assert kept.action == first_action
        assert (session.scalar(select(func.count(AuditEvent.id))) or 0) >= 63
        tampered = text("SELECT count(*) FROM audit_events WHERE action = 'tampered'")
        assert session.scalar(tampered) == 0
