"""Health events reported between visits: a patient or caregiver sends one, a coordinator
confirms it (it becomes a patient-sourced Observation) or dismisses it. Page tests run as a
plain browser request and as an htmx swap; every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordination.followup.health_events import (
    AlreadyReviewed,
    reports_for_patient,
    review_report,
    submit_report,
)
from coordination.followup.models import PatientReport, ReportKind, ReportStatus
from coordination.followup.outcomes import LTFU_SYSTEM
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.errors import FieldErrors
from core.models import Observation, ObservationSource, Patient
from tests.conftest import (
    CAREGIVER_CO,
    CAREGIVER_MD,
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_CO,
    PATIENT_MD,
    T0,
    Database,
    user_by_login,
)

HTMX = {"HX-Request": "true"}
TODAY = date(2026, 11, 27)  # T0 in Baltimore and Denver


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    """Run a page test as a plain browser request and as an htmx partial request."""
    return bool(request.param)


def _headers(htmx: bool) -> dict[str, str]:
    return HTMX if htmx else {}


# --- helpers ---------------------------------------------------------------------------


def _patient(session: Session, given_name: str) -> Patient:
    patient = session.scalar(select(Patient).where(Patient.given_name == given_name))
    assert patient is not None
    return patient


def _patient_id(db: Database, given_name: str) -> int:
    with db.factory() as session:
        return _patient(session, given_name).id


def _actor(session: Session, login: str) -> Actor:
    user = user_by_login(session, login)
    return Actor(user_id=user.id, label=login, role=user.role.value)


def _reports(db: Database, patient_id: int) -> list[PatientReport]:
    with db.factory() as session:
        return reports_for_patient(session, patient_id=patient_id)


def _events(db: Database, action: str) -> list[AuditEvent]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def _observation_count(db: Database) -> int:
    with db.factory() as session:
        return session.scalar(select(func.count(Observation.id))) or 0


def _new_report(
    db: Database,
    clock: FrozenClock,
    *,
    given_name: str = "Maya",
    login: str = PATIENT_MD,
    kind: ReportKind = ReportKind.PAIN_CRISIS,
    occurred_on: date = TODAY - timedelta(days=2),
    details: str | None = "Back pain, stayed home.",
) -> tuple[int, int]:
    """A NEW report made through the service; returns (patient id, report id)."""
    with db.factory() as session:
        patient = _patient(session, given_name)
        report = submit_report(
            session,
            clock=clock,
            actor=_actor(session, login),
            patient=patient,
            kind=kind.value,
            occurred_on=occurred_on,
            details=details,
        )
        session.commit()
        return patient.id, report.id


def _fragment(response: httpx.Response, *, htmx: bool, starts_with: str) -> str:
    """Check the page answered in the right shape: only the block for htmx, else all."""
    if htmx:
        assert "<html" not in response.text, "an htmx request got the whole page"
        assert response.text.lstrip().startswith(starts_with), response.text[:200]
    else:
        assert "<html" in response.text
        assert starts_with in response.text
    return response.text


def _report_form(patient_id: int, token: str, **values: str) -> dict[str, str]:
    form = {"csrf_token": token, "kind": "", "occurred_on": "", "details": ""}
    form.update(values)
    return form


# --- sending a report ------------------------------------------------------------------


def test_patient_reports_a_pain_crisis(
    db: Database, client: TestClient, login_as: Callable[[str], str], htmx: bool
) -> None:
    maya = _patient_id(db, "Maya")
    before = len(_reports(db, maya))
    token = login_as(PATIENT_MD)

    page = client.get(f"/care/{maya}/report", headers=_headers(htmx))
    assert page.status_code == 200
    html = _fragment(page, htmx=htmx, starts_with='<section class="card narrow" id="report-card">')
    assert 'name="csrf_token"' in html
    assert 'type="radio" name="kind" value="pain_crisis"' in html
    assert 'type="date"' in html
    assert 'max="2026-11-27"' in html and 'min="2025-11-27"' in html
    if not htmx:  # the safety reminder is on the page, above the form
        assert "In an emergency, call 911 now." in html
        assert "not watched around the clock" in html

    sent = client.post(
        f"/care/{maya}/report",
        data=_report_form(
            maya, token, kind="pain_crisis", occurred_on="2026-11-25", details="  Pain in my legs. "
        ),
        headers=_headers(htmx),
    )
    reports = _reports(db, maya)
    assert len(reports) == before + 1
    report = reports[0]
    assert report.kind is ReportKind.PAIN_CRISIS
    assert report.occurred_on == date(2026, 11, 25)
    assert report.details == "Pain in my legs."
    assert report.status is ReportStatus.NEW
    assert report.reported_at == T0
    with db.factory() as session:
        assert report.reported_by_user_id == user_by_login(session, PATIENT_MD).id

    if htmx:  # the form's card becomes the thank-you card
        assert sent.status_code == 200
        thanks = _fragment(sent, htmx=True, starts_with='<section class="card narrow"')
    else:  # post, redirect, get: a reload does not send it twice
        assert sent.status_code == 303
        assert sent.headers["location"] == f"/care/{maya}/report?sent={report.id}"
        thanks = client.get(sent.headers["location"]).text
        assert "<html" in thanks
    assert "Thank you, it is sent" in thanks
    assert "Your care team will look at it." in thanks
    assert "A pain crisis" in thanks and "Pain in my legs." in thanks

    events = [event for event in _events(db, "report.submit") if event.patient_id == maya]
    assert len(events) == 1
    assert events[0].actor_label == PATIENT_MD
    assert events[0].actor_role == "patient"
    assert events[0].target == f"report:{report.id}"
    assert events[0].detail is None  # no health details in the audit log


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        (
            {"kind": "pain_crisis", "occurred_on": "2026-11-28"},
            "occurred_on",
            "The day cannot be in the future.",
        ),
        (
            {"kind": "hospital_stay", "occurred_on": "2026-11-20", "details": "x" * 600},
            "details",
            "Use at most 500 characters; this text has 600.",
        ),
        (
            {"kind": "pain_crisis", "occurred_on": "2025-11-26"},
            "occurred_on",
            "Choose a day in the last 12 months.",
        ),
        ({"kind": "", "occurred_on": "2026-11-20"}, "kind", "Choose what happened."),
        ({"kind": "surgery", "occurred_on": "2026-11-20"}, "kind", "Choose what happened."),
        ({"kind": "pain_crisis", "occurred_on": "yesterday"}, "occurred_on", "Enter the day"),
    ],
    ids=["future", "600-characters", "over-a-year", "no-kind", "unknown-kind", "not-a-date"],
)
def test_a_wrong_report_is_refused_with_a_clear_message(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    htmx: bool,
    values: dict[str, str],
    field: str,
    message: str,
) -> None:
    maya = _patient_id(db, "Maya")
    before = len(_reports(db, maya))
    token = login_as(PATIENT_MD)

    response = client.post(
        f"/care/{maya}/report", data=_report_form(maya, token, **values), headers=_headers(htmx)
    )
    assert response.status_code == 400
    html = _fragment(
        response, htmx=htmx, starts_with='<section class="card narrow" id="report-card"'
    )
    assert message in html
    assert f'<a href="#f-{field}">' in html  # the summary links to the field
    assert f'id="f-{field}-error"' in html
    if values.get("details"):
        assert values["details"] in html  # what was typed is kept
    assert len(_reports(db, maya)) == before
    assert not [event for event in _events(db, "report.submit") if event.patient_id == maya]


def test_the_year_back_is_counted_in_days_and_leap_days(db: Database, clock: FrozenClock) -> None:
    with db.factory() as session:
        maya = _patient(session, "Maya")
        actor = _actor(session, PATIENT_MD)
        report = submit_report(
            session,
            clock=clock,
            actor=actor,
            patient=maya,
            kind="emergency_visit",
            occurred_on=date(2025, 11, 27),  # exactly one year back: allowed
            details="",
        )
        assert report.details is None
        clock.set(datetime(2028, 2, 29, 15, 0, tzinfo=UTC))
        submit_report(
            session,
            clock=clock,
            actor=actor,
            patient=maya,
            kind="emergency_visit",
            occurred_on=date(2027, 2, 28),
            details=None,
        )
        with pytest.raises(FieldErrors) as refused:
            submit_report(
                session,
                clock=clock,
                actor=actor,
                patient=maya,
                kind="emergency_visit",
                occurred_on=date(2027, 2, 27),
                details=None,
            )
        assert set(refused.value.errors) == {"occurred_on"}


def test_today_is_the_patients_day_not_utcs(db: Database, clock: FrozenClock) -> None:
    # 02:00 UTC on the 28th is still the evening of the 27th in Baltimore.
    clock.set(datetime(2026, 11, 28, 2, 0, tzinfo=UTC))
    with db.factory() as session:
        maya = _patient(session, "Maya")
        assert maya.time_zone == "America/New_York"
        with pytest.raises(FieldErrors) as refused:
            submit_report(
                session,
                clock=clock,
                actor=_actor(session, PATIENT_MD),
                patient=maya,
                kind="pain_crisis",
                occurred_on=date(2026, 11, 28),
                details=None,
            )
        assert refused.value.errors == {"occurred_on": "The day cannot be in the future."}


# --- who may report --------------------------------------------------------------------


def test_a_caregiver_with_the_right_reports_for_the_patient(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    maya = _patient_id(db, "Maya")
    token = login_as(CAREGIVER_MD)

    page = client.get(f"/care/{maya}/report")
    assert page.status_code == 200
    assert "What happened to Maya?" in page.text
    sent = client.post(
        f"/care/{maya}/report",
        data=_report_form(maya, token, kind="hospital_stay", occurred_on="2026-11-21"),
    )
    assert sent.status_code == 303
    thanks = client.get(sent.headers["location"])
    assert "Maya's care team will look at it." in thanks.text
    report = _reports(db, maya)[0]
    with db.factory() as session:
        assert report.reported_by_user_id == user_by_login(session, CAREGIVER_MD).id
    assert report.kind is ReportKind.HOSPITAL_STAY
    assert report.details is None

    client.post("/logout", data={"csrf_token": token})
    login_as(COORDINATOR_MD)
    review = client.get(f"/patients/{maya}/reports/{report.id}")
    assert review.status_code == 200
    assert "Denise Johnson, caregiver (mother)" in review.text
    assert "Hospital stay" in review.text


@pytest.mark.parametrize(
    ("login", "given_name"),
    [
        (CAREGIVER_CO, "Andre"),
        (CAREGIVER_MD, "Imani"),
        (CAREGIVER_MD, "Andre"),
        (PATIENT_MD, "Andre"),
    ],
    ids=[
        "rosa-for-andre-no-right",
        "denise-for-imani-schedule-only",
        "unlinked",
        "another-patient",
    ],
)
def test_without_the_report_events_right_the_form_is_not_found(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    login: str,
    given_name: str,
) -> None:
    target = _patient_id(db, given_name)
    before = len(_reports(db, target))
    token = login_as(login)

    assert client.get(f"/care/{target}/report").status_code == 404
    refused = client.post(
        f"/care/{target}/report",
        data=_report_form(target, token, kind="pain_crisis", occurred_on="2026-11-20"),
    )
    assert refused.status_code == 404
    assert len(_reports(db, target)) == before


def test_staff_cannot_send_a_patients_report(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    maya = _patient_id(db, "Maya")
    login_as(COORDINATOR_MD)
    assert client.get(f"/care/{maya}/report").status_code == 403


# --- the coordinator's review ----------------------------------------------------------


def _review_form(token: str, decision: str, **values: str) -> dict[str, str]:
    return {"csrf_token": token, "decision": decision, **values}


def test_coordinator_confirms_with_a_corrected_date(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    maya, report_id = _new_report(db, clock, occurred_on=date(2026, 11, 25))
    before = _observation_count(db)
    token = login_as(COORDINATOR_MD)

    page = client.get(f"/patients/{maya}/reports/{report_id}", headers=_headers(htmx))
    assert page.status_code == 200
    html = _fragment(page, htmx=htmx, starts_with='<div id="review">')
    assert "Maya Johnson, the patient" in html
    assert "Pain crisis" in html and "Back pain, stayed home." in html
    assert "November 25, 2026" in html
    assert 'value="2026-11-25"' in html  # the form starts from what was reported
    reads = [event for event in _events(db, "patient.read") if event.target == "report_review"]
    assert [event.patient_id for event in reads] == [maya]

    done = client.post(
        f"/patients/{maya}/reports/{report_id}",
        data=_review_form(
            token,
            "confirm",
            kind="pain_crisis",
            occurred_on="2026-11-24",
            details="Back pain, stayed home.",
            note="Date corrected on the phone.",
        ),
        headers=_headers(htmx),
    )
    if htmx:
        assert done.status_code == 200
        shown = _fragment(done, htmx=True, starts_with='<div id="review">')
    else:
        assert done.status_code == 303
        assert done.headers["location"] == f"/patients/{maya}/reports/{report_id}?done=confirmed"
        shown = client.get(done.headers["location"]).text
    assert "The report is confirmed and added to the record." in shown
    assert "November 24, 2026" in shown
    assert 'name="decision"' not in shown  # no more forms: it is reviewed

    assert _observation_count(db) == before + 1
    with db.factory() as session:
        report = session.get(PatientReport, report_id)
        assert report is not None
        assert report.status is ReportStatus.CONFIRMED
        assert report.occurred_on == date(2026, 11, 24)
        assert report.review_note == "Date corrected on the phone."
        assert report.reviewed_by_user_id == user_by_login(session, COORDINATOR_MD).id
        assert report.reviewed_at is not None
        observation = session.get(Observation, report.observation_id)
        assert observation is not None
        assert observation.patient_id == maya
        assert observation.source is ObservationSource.PATIENT
        assert observation.code_system == LTFU_SYSTEM
        assert observation.code == "pain-crisis"
        assert observation.display
        assert observation.value_text == "Back pain, stayed home."
        assert observation.effective_at == datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
        assert observation.recorded_by_user_id == user_by_login(session, PATIENT_MD).id

    (event,) = [e for e in _events(db, "report.review") if e.target == f"report:{report_id}"]
    assert event.patient_id == maya
    assert event.actor_label == COORDINATOR_MD
    assert event.detail == {"decision": "confirm", "corrected": ["occurred_on"]}


@pytest.mark.parametrize(
    ("kind", "code"),
    [("emergency_visit", "emergency-visit"), ("hospital_stay", "hospital-stay")],
)
def test_each_kind_has_its_code(db: Database, clock: FrozenClock, kind: str, code: str) -> None:
    _maya, report_id = _new_report(db, clock, details=None)
    with db.factory() as session:
        report = session.get(PatientReport, report_id)
        assert report is not None
        observation = review_report(
            session,
            clock=clock,
            actor=_actor(session, COORDINATOR_MD),
            report=report,
            decision="confirm",
            kind=kind,  # corrected: it was an emergency visit or a stay, not a pain crisis
            occurred_on=report.occurred_on,
            details=None,
        )
        assert observation is not None
        assert (observation.code_system, observation.code) == (LTFU_SYSTEM, code)
        assert observation.value_text is None
        assert report.kind is ReportKind(kind)


def test_a_wrong_correction_changes_nothing(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya, report_id = _new_report(db, clock)
    before = _observation_count(db)
    token = login_as(COORDINATOR_MD)
    refused = client.post(
        f"/patients/{maya}/reports/{report_id}",
        data=_review_form(
            token, "confirm", kind="pain_crisis", occurred_on="2026-12-01", details="y" * 501
        ),
    )
    assert refused.status_code == 400
    assert "The day cannot be in the future." in refused.text
    assert "Use at most 500 characters; this text has 501." in refused.text
    assert 'value="2026-12-01"' in refused.text  # what was typed is kept
    assert _observation_count(db) == before
    with db.factory() as session:
        report = session.get(PatientReport, report_id)
        assert report is not None
        assert report.status is ReportStatus.NEW
        assert report.occurred_on == TODAY - timedelta(days=2)


def test_dismissing_needs_a_reason(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    maya, report_id = _new_report(db, clock)
    before = _observation_count(db)
    token = login_as(COORDINATOR_MD)

    refused = client.post(
        f"/patients/{maya}/reports/{report_id}",
        data=_review_form(token, "dismiss", reason="   "),
        headers=_headers(htmx),
    )
    assert refused.status_code == 400
    html = _fragment(refused, htmx=htmx, starts_with='<div id="review">')
    assert "Say why the report is dismissed." in html
    assert 'id="f-reason-error"' in html
    assert 'value="pain_crisis" selected' in html  # the confirm form still shows the report
    with db.factory() as session:
        report = session.get(PatientReport, report_id)
        assert report is not None and report.status is ReportStatus.NEW

    done = client.post(
        f"/patients/{maya}/reports/{report_id}",
        data=_review_form(token, "dismiss", reason="Sent twice."),
        headers=_headers(htmx),
    )
    assert done.status_code == (200 if htmx else 303)
    shown = done.text if htmx else client.get(done.headers["location"]).text
    assert "The report is dismissed." in shown
    assert "Sent twice." in shown
    assert _observation_count(db) == before
    with db.factory() as session:
        report = session.get(PatientReport, report_id)
        assert report is not None
        assert report.status is ReportStatus.DISMISSED
        assert report.review_note == "Sent twice."
        assert report.observation_id is None
    (event,) = [e for e in _events(db, "report.review") if e.target == f"report:{report_id}"]
    assert event.detail == {"decision": "dismiss"}


def test_an_unknown_decision_is_refused(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya, report_id = _new_report(db, clock)
    token = login_as(COORDINATOR_MD)
    refused = client.post(
        f"/patients/{maya}/reports/{report_id}", data={"csrf_token": token, "decision": "maybe"}
    )
    assert refused.status_code == 400
    assert "Choose to confirm or dismiss the report." in refused.text


def test_a_report_is_reviewed_once(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya, report_id = _new_report(db, clock)
    before = _observation_count(db)
    token = login_as(COORDINATOR_MD)
    url = f"/patients/{maya}/reports/{report_id}"
    confirm = _review_form(token, "confirm", kind="pain_crisis", occurred_on="2026-11-25")

    assert client.post(url, data=confirm).status_code == 303
    again = client.post(url, data=confirm)
    assert again.status_code == 409
    assert "This report was already reviewed; it cannot be reviewed again." in again.text
    dismiss = client.post(url, data=_review_form(token, "dismiss", reason="Oops"))
    assert dismiss.status_code == 409
    assert _observation_count(db) == before + 1
    with db.factory() as session:
        report = session.get(PatientReport, report_id)
        assert report is not None
        assert report.status is ReportStatus.CONFIRMED
        assert report.review_note is None
    assert len([e for e in _events(db, "report.review") if e.target == f"report:{report_id}"]) == 1


def test_two_coordinators_at_once_make_one_observation(db: Database, clock: FrozenClock) -> None:
    """Both read the report while it was new; the second write finds it taken."""
    _maya, report_id = _new_report(db, clock)
    before = _observation_count(db)
    with db.factory() as first, db.factory() as second:
        mine = first.get(PatientReport, report_id)
        theirs = second.get(PatientReport, report_id)
        assert mine is not None and theirs is not None
        status_read = theirs.status
        assert status_read is ReportStatus.NEW
        review_report(
            first,
            clock=clock,
            actor=_actor(first, COORDINATOR_MD),
            report=mine,
            decision="dismiss",
            note="Duplicate.",
        )
        first.commit()
        with pytest.raises(AlreadyReviewed):
            review_report(
                second,
                clock=clock,
                actor=_actor(second, COORDINATOR_MD),
                report=theirs,
                decision="confirm",
                kind="pain_crisis",
                occurred_on=theirs.occurred_on,
                details=None,
            )
        assert theirs.status is ReportStatus.DISMISSED  # refreshed for the page
        second.commit()
    assert _observation_count(db) == before


def test_out_of_scope_reports_are_not_found(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya, report_id = _new_report(db, clock)
    andre, andre_report = _new_report(db, clock, given_name="Andre", login=PATIENT_CO)
    token = login_as(COORDINATOR_CO)
    url = f"/patients/{maya}/reports/{report_id}"
    confirm = _review_form(token, "confirm", kind="pain_crisis", occurred_on="2026-11-25")

    # Another state's coordinator: as if it did not exist.
    assert client.get(url).status_code == 404
    assert client.post(url, data=confirm).status_code == 404
    # A report of another patient, under a patient the coordinator may see.
    mixed = f"/patients/{andre}/reports/{report_id}"
    assert client.get(mixed).status_code == 404
    assert client.post(mixed, data=confirm).status_code == 404
    assert client.get(f"/patients/{andre}/reports/999999").status_code == 404
    assert client.get(f"/patients/{andre}/reports/{andre_report}").status_code == 200
    with db.factory() as session:
        report = session.get(PatientReport, report_id)
        assert report is not None and report.status is ReportStatus.NEW


def test_patients_and_caregivers_cannot_review(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya, report_id = _new_report(db, clock)
    token = login_as(CAREGIVER_MD)
    url = f"/patients/{maya}/reports/{report_id}"
    assert client.get(url).status_code == 403
    dismissed = client.post(url, data=_review_form(token, "dismiss", reason="Not needed"))
    assert dismissed.status_code == 403


def test_review_page_links_are_local_and_name_free(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya, report_id = _new_report(db, clock)
    login_as(COORDINATOR_MD)
    page = client.get(f"/patients/{maya}/reports/{report_id}")
    urls = re.findall(r'\b(?:href|action|hx-post)="([^"]*)"', page.text)
    assert f"/patients/{maya}/reports/{report_id}" in urls
    assert f"/patients/{maya}" in urls and "/worklist" in urls
    assert not [url for url in urls if "Maya" in url or "Johnson" in url]
