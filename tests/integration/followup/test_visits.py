"""The coordinator's side of follow-up: the schedule on the record (made at enrolment, moved
when the infusion date changes), the visit page and its actions (book, move, confirm, cancel,
follow up a missed visit, record outcomes), outreach notes and the patient's timeline.

Forms with an htmx variant are checked both ways: a plain post answers with the whole page
(or a redirect), an htmx post with the card it swaps (or HX-Redirect)."""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from coordination.followup.models import (
    MoveRequest,
    OutreachNote,
    PatientReport,
    ReportKind,
    ReportStatus,
    RequestStatus,
    Visit,
    VisitEvent,
    VisitObservation,
    VisitStatus,
)
from coordination.followup.notes import add_outreach_note
from coordination.followup.outcomes import record_outcomes
from coordination.followup.protocol import (
    Assessment,
    Label,
    Protocol,
    ProtocolVisit,
    shipped_protocols,
)
from coordination.followup.requests import request_move
from coordination.followup.schedule import OutsideWindowError, book_appointment, sync_schedule
from coordination.texting.consent import opt_in
from coordination.texting.models import ConsentHow, MessagePurpose, MessageStatus, OutboundMessage
from coordination.texting.outbox import enqueue_message
from coordination.texting.rules import MOVED_RULE
from coordination.worklist.timeline import TimelineKind, patient_timeline
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.errors import FieldErrors
from core.models import (
    Observation,
    ObservationSource,
    Patient,
    PatientStatus,
    State,
    Therapy,
    TreatmentCenter,
)
from core.service import PatientData, enroll_patient, patient_input_from
from tests.conftest import (
    CAREGIVER_MD,
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_MD,
    T0,
    Database,
    user_by_login,
)

HTMX = {"HX-Request": "true"}
LOINC = "http://loinc.org"


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    """Run a form test as a plain browser post and as an htmx post."""
    return bool(request.param)


# --- helpers ---------------------------------------------------------------------------


def _headers(htmx: bool) -> dict[str, str]:
    return HTMX if htmx else {}


def plain(html: str) -> str:
    """Babel puts a narrow no-break space before AM/PM; compare with ordinary spaces."""
    return html.replace("\u202f", " ")


def coordinator_actor(session: Session, login: str = COORDINATOR_MD) -> Actor:
    user = user_by_login(session, login)
    return Actor(user_id=user.id, label=login, role="coordinator")


def patient_named(session: Session, given_name: str) -> Patient:
    patient = session.scalar(select(Patient).where(Patient.given_name == given_name))
    assert patient is not None
    return patient


def build_schedule(db: Database, clock: FrozenClock, given_name: str) -> int:
    """Give a seeded patient their follow-up schedule (the base world has none)."""
    with transaction(db.factory) as session:
        patient = patient_named(session, given_name)
        sync_schedule(
            session,
            clock=clock,
            actor=coordinator_actor(session),
            library=shipped_protocols(),
            patient=patient,
        )
        return patient.id


def visit_id_of(db: Database, patient_id: int, key: str) -> int:
    with db.factory() as session:
        found = session.scalar(
            select(Visit.id).where(Visit.patient_id == patient_id, Visit.visit_key == key)
        )
        assert found is not None, key
        return found


def load_visit(db: Database, visit_id: int) -> Visit:
    with db.factory() as session:
        visit = session.get(Visit, visit_id)
        assert visit is not None
        return visit


def visit_url(patient_id: int, visit_id: int, action: str = "") -> str:
    url = f"/patients/{patient_id}/visits/{visit_id}"
    return f"{url}/{action}" if action else url


def redirect_target(response: httpx.Response, *, htmx: bool) -> str:
    """Where a successful form post sends the browser (303, or HX-Redirect for htmx)."""
    if htmx:
        assert response.status_code == 204, response.text
        return str(response.headers["HX-Redirect"])
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def card_or_page(response: httpx.Response, *, htmx: bool, card: str) -> str:
    """A refused form: htmx gets the card alone, a plain post the whole page with it."""
    assert response.status_code == 400, response.text
    if htmx:
        assert "<html" not in response.text, "an htmx post got the whole page"
        assert response.text.lstrip().startswith(f'<section class="card" id="{card}"')
    else:
        assert "<html" in response.text
        assert f'id="{card}"' in response.text
    return response.text


def events_of(db: Database, visit_id: int) -> list[VisitEvent]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(VisitEvent)
                .where(VisitEvent.visit_id == visit_id)
                .order_by(VisitEvent.at, VisitEvent.id)
            )
        )


def audit_events(db: Database, action: str) -> list[AuditEvent]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
            )
        )


def therapy_id(db: Database, code: str) -> int:
    with db.factory() as session:
        found = session.scalar(select(Therapy.id).where(Therapy.code == code))
        assert found is not None
        return found


def enrol_form(db: Database, token: str, **changes: str) -> dict[str, str]:
    with db.factory() as session:
        state = session.scalar(select(State).where(State.code == "MD"))
        assert state is not None
        center = session.scalar(
            select(TreatmentCenter)
            .where(TreatmentCenter.state_id == state.id)
            .order_by(TreatmentCenter.id)
        )
        assert center is not None
        form = {
            "csrf_token": token,
            "given_name": "Keisha",
            "family_name": "Oduya",
            "birth_date": "2004-03-09",
            "medicaid_id": "MD88800001",
            "center_mrn": "",
            "state_id": str(state.id),
            "center_id": str(center.id),
            "therapy_id": str(therapy_id(db, "casgevy")),
            "preferred_language": "en",
            "time_zone": "",
            "mobile_phone": "",
            "infusion_date": "",
            "status": "active",
        }
    form.update(changes)
    return form


def enrol_through_the_form(client: TestClient, db: Database, token: str, **changes: str) -> int:
    response = client.post("/patients/new", data=enrol_form(db, token, **changes))
    assert response.status_code == 303, response.text
    found = re.match(r"/patients/(\d+)\?done=enrolled$", response.headers["location"])
    assert found, response.headers["location"]
    return int(found.group(1))


def schedule_links(html: str, patient_id: int) -> list[int]:
    """The visit pages the record's schedule table links to, in order."""
    start = html.index('id="schedule-title"')
    end = html.index('id="note-title"')
    return [
        int(found)
        for found in re.findall(rf'href="/patients/{patient_id}/visits/(\d+)"', html[start:end])
    ]


# --- the schedule on the record --------------------------------------------------------


def test_enrolling_with_an_infusion_date_shows_the_schedule(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    token = login_as(COORDINATOR_MD)
    protocol = shipped_protocols().current("casgevy")
    assert protocol is not None

    patient_id = enrol_through_the_form(client, db, token, infusion_date="2026-11-20")
    record = client.get(f"/patients/{patient_id}?done=enrolled")
    assert record.status_code == 200
    assert "The patient is enrolled." in record.text
    links = schedule_links(record.text, patient_id)
    assert len(links) == len(protocol.visits)
    with db.factory() as session:
        visits = list(
            session.scalars(
                select(Visit).where(Visit.patient_id == patient_id).order_by(Visit.target_date)
            )
        )
    assert [visit.id for visit in visits] == links
    assert [visit.visit_key for visit in visits] == [visit.key for visit in protocol.visits]
    assert all(visit.status is VisitStatus.DUE for visit in visits)
    # Day 30 of an infusion on November 20: December 20, window December 13 to 27.
    assert (visits[0].target_date, visits[0].window_start, visits[0].window_end) == (
        date(2026, 12, 20),
        date(2026, 12, 13),
        date(2026, 12, 27),
    )
    assert protocol.visits[0].label.en in record.text
    assert "Dec 13, 2026 to Dec 27, 2026" in record.text
    assert "To book" in record.text  # the status badge of a visit without an appointment

    # Visit labels come from the protocol, in the reader's language.
    client.post("/language", data={"csrf_token": token, "lang": "es", "next": "/patients"})
    spanish = client.get(f"/patients/{patient_id}")
    assert protocol.visits[0].label.es in spanish.text
    assert protocol.visits[0].label.es in client.get(visit_url(patient_id, links[0])).text
    client.post("/language", data={"csrf_token": token, "lang": "en", "next": "/patients"})

    # Without an infusion date there is no schedule yet, and the record says why.
    later = enrol_through_the_form(client, db, token, medicaid_id="MD88800002")
    empty = client.get(f"/patients/{later}")
    assert schedule_links(empty.text, later) == []
    assert "The schedule starts from the infusion date." in empty.text


def test_changing_the_infusion_date_moves_open_visits_and_keeps_completed_ones(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    token = login_as(COORDINATOR_MD)
    # Infused a month before T0: day 30's window (November 17 to December 1) is open.
    patient_id = enrol_through_the_form(client, db, token, infusion_date="2026-10-25")
    day_30 = visit_id_of(db, patient_id, "day-30")
    day_100 = visit_id_of(db, patient_id, "day-100")
    before = {visit_id: load_visit(db, visit_id) for visit_id in (day_30, day_100)}
    assert all(visit.status is VisitStatus.DUE for visit in before.values())
    with db.factory() as session:
        count_before = session.scalar(
            select(func.count(Visit.id)).where(Visit.patient_id == patient_id)
        )

    # Day 30 happened and its outcomes are recorded through the visit page.
    done = client.post(
        visit_url(patient_id, day_30, "outcomes"),
        data={"csrf_token": token, "completed_on": "2026-11-26", "voe_count": "0"},
    )
    assert redirect_target(done, htmx=False).endswith("?done=completed")

    # The coordinator corrects the infusion date in the edit form.
    with db.factory() as session:
        patient = session.get(Patient, patient_id)
        assert patient is not None
        form: dict[str, Any] = asdict(patient_input_from(patient))
    form.pop("errors")
    form.update({"csrf_token": token, "infusion_date": "2026-11-08"})
    saved = client.post(f"/patients/{patient_id}/edit", data=form)
    assert saved.status_code == 303, saved.text

    kept, moved = load_visit(db, day_30), load_visit(db, day_100)
    assert kept.status is VisitStatus.COMPLETED
    assert (kept.target_date, kept.window_start, kept.window_end) == (
        before[day_30].target_date,
        before[day_30].window_start,
        before[day_30].window_end,
    )
    assert moved.status is VisitStatus.DUE
    assert moved.target_date == before[day_100].target_date + timedelta(days=14)
    assert moved.window_end == before[day_100].window_end + timedelta(days=14)
    with db.factory() as session:
        keys = list(session.scalars(select(Visit.visit_key).where(Visit.patient_id == patient_id)))
    assert len(keys) == count_before == len(set(keys))  # nothing duplicated
    assert [event.action for event in events_of(db, day_100)] == ["move_window"]
    assert [event.action for event in events_of(db, day_30)] == ["complete"]

    record = client.get(f"/patients/{patient_id}")
    assert "Window moved" in record.text
    assert "infusion date or protocol changed" in record.text


def test_changing_the_therapy_or_withdrawing_follows_the_new_protocol(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    token = login_as(COORDINATOR_MD)
    patient_id = enrol_through_the_form(client, db, token, infusion_date="2026-11-20")

    def edit(**changes: str) -> None:
        with db.factory() as session:
            patient = session.get(Patient, patient_id)
            assert patient is not None
            form: dict[str, Any] = asdict(patient_input_from(patient))
        form.pop("errors")
        form.update({"csrf_token": token, **changes})
        response = client.post(f"/patients/{patient_id}/edit", data=form)
        assert response.status_code == 303, response.text

    def statuses() -> dict[str, VisitStatus]:
        with db.factory() as session:
            return {
                visit.visit_key: visit.status
                for visit in session.scalars(select(Visit).where(Visit.patient_id == patient_id))
            }

    edit(therapy_id=str(therapy_id(db, "lyfgenia")))
    after = statuses()
    assert after["day-180"] is VisitStatus.CANCELLED  # Casgevy's, not in Lyfgenia's protocol
    assert after["month-6"] is VisitStatus.DUE  # Lyfgenia's, created at once
    edit(status="withdrawn")
    assert all(not status.is_open for status in statuses().values())
    record = client.get(f"/patients/{patient_id}")
    assert "To book" not in record.text
    assert "patient withdrawn" in record.text  # the timeline says why


# --- booking, moving, confirming, cancelling ----------------------------------------------


def test_booking_then_moving_an_appointment_keeps_its_history_and_closes_the_request(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    maya = build_schedule(db, clock, "Maya")
    visit_id = visit_id_of(db, maya, "day-30")  # January 9 to 23, 2027
    token = login_as(COORDINATOR_MD)

    page = client.get(visit_url(maya, visit_id))
    assert page.status_code == 200
    assert "Day 30 check-up" in page.text
    assert "Book an appointment" in page.text
    assert "Confirm on the patient's behalf" not in page.text  # nothing to confirm yet

    booked = client.post(
        visit_url(maya, visit_id, "appointment"),
        data={"csrf_token": token, "day": "2027-01-15", "time": "09:30", "location": "Harborview"},
        headers=_headers(htmx),
    )
    target = redirect_target(booked, htmx=htmx)
    assert target == f"{visit_url(maya, visit_id)}?done=scheduled"
    shown = client.get(target)
    assert "The appointment is booked." in shown.text
    assert "Friday, January 15, 2027, 9:30 AM EST" in plain(shown.text)
    visit = load_visit(db, visit_id)
    assert visit.status is VisitStatus.SCHEDULED
    assert visit.appointment_at == datetime(2027, 1, 15, 14, 30, tzinfo=UTC)
    assert visit.appointment_zone == "America/New_York"
    assert visit.location == "Harborview"

    # Maya asks to move it; the coordinator sees her preferred date on the visit page.
    with transaction(db.factory) as session:
        maya_user = user_by_login(session, PATIENT_MD)
        request_move(
            session,
            clock=clock,
            actor=Actor(user_id=maya_user.id, label=PATIENT_MD, role="patient"),
            visit=session.get(Visit, visit_id),  # type: ignore[arg-type]
            preferred_date=date(2027, 1, 20),
            note="I have an exam on the 15th.",
        )
    page = client.get(visit_url(maya, visit_id))
    assert "Preferred date: Wednesday, January 20, 2027" in page.text
    assert "I have an exam on the 15th." in page.text
    assert "Move the appointment" in page.text

    moved = client.post(
        visit_url(maya, visit_id, "appointment"),
        data={
            "csrf_token": token,
            "day": "2027-01-20",
            "time": "10:00",
            "location": "Harborview",
            "reason": "The patient asked",
        },
        headers=_headers(htmx),
    )
    # Nobody on Maya's record agreed to texts: the coordinator is told to call.
    target = redirect_target(moved, htmx=htmx)
    assert target == f"{visit_url(maya, visit_id)}?done=rescheduled_untexted"
    assert "no text can tell of it" in client.get(target).text
    visit = load_visit(db, visit_id)
    assert visit.status is VisitStatus.RESCHEDULED
    assert visit.appointment_at == datetime(2027, 1, 20, 15, 0, tzinfo=UTC)
    history = events_of(db, visit_id)
    assert [(e.action, e.from_status, e.to_status) for e in history] == [
        ("book", "due", "scheduled"),
        ("book", "scheduled", "rescheduled"),
    ]
    assert history[1].reason == "The patient asked"
    with db.factory() as session:
        requests = list(
            session.scalars(select(MoveRequest).where(MoveRequest.visit_id == visit_id))
        )
        coordinator_id = user_by_login(session, COORDINATOR_MD).id
    assert [(r.status, r.handled_by_user_id) for r in requests] == [
        (RequestStatus.DONE, coordinator_id)
    ]

    page = client.get(visit_url(maya, visit_id))
    assert "No open request." in page.text
    history_table = page.text[page.text.index('id="history-title"') :]
    assert "Appointment booked" in history_table
    assert "Appointment moved" in history_table
    assert "The patient asked" in history_table
    assert "Morgan Reyes" in history_table  # who: the coordinator, by name
    assert "Moved, to confirm" in page.text


def test_booking_outside_the_window_asks_to_confirm_and_records_why(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    maya = build_schedule(db, clock, "Maya")
    visit_id = visit_id_of(db, maya, "day-30")  # January 9 to 23, 2027
    token = login_as(COORDINATOR_MD)
    typed = {"csrf_token": token, "day": "2027-02-01", "time": "10:15", "location": "Harborview"}

    def book(**more: str) -> httpx.Response:
        response: httpx.Response = client.post(
            visit_url(maya, visit_id, "appointment"),
            data={**typed, **more},
            headers=_headers(htmx),
        )
        return response

    # The first submit books nothing: it warns, asks for a tick and a reason, keeps the values.
    warned = html.unescape(card_or_page(book(), htmx=htmx, card="appointment-card"))
    assert (
        "Feb 1, 2027 is outside the visit's window (Jan 9, 2027 to Jan 23, 2027). "
        "To book it anyway, tick the box and say why."
    ) in warned
    assert 'name="outside_window" value="yes"' in warned
    assert "Book it outside the visit's window anyway" in warned
    assert 'value="2027-02-01"' in warned and 'value="10:15"' in warned
    assert 'value="Harborview"' in warned
    assert "Why outside the window" in warned
    assert load_visit(db, visit_id).status is VisitStatus.DUE
    assert events_of(db, visit_id) == []

    # Ticked without a reason: still nothing booked.
    no_reason = html.unescape(
        card_or_page(book(outside_window="yes"), htmx=htmx, card="appointment-card")
    )
    assert "Say why the appointment is outside the visit's window." in no_reason
    assert 'name="outside_window" value="yes" checked' in no_reason
    assert events_of(db, visit_id) == []

    booked = book(outside_window="yes", reason="She is abroad all January")
    assert redirect_target(booked, htmx=htmx) == f"{visit_url(maya, visit_id)}?done=scheduled"
    visit = load_visit(db, visit_id)
    assert visit.status is VisitStatus.SCHEDULED
    assert visit.appointment_at == datetime(2027, 2, 1, 15, 15, tzinfo=UTC)
    [event] = events_of(db, visit_id)
    assert event.reason == "She is abroad all January"
    assert event.detail is not None and event.detail["outside_window"] is True
    history = client.get(visit_url(maya, visit_id)).text
    history = history[history.index('id="history-title"') :]
    assert "Outside the window" in history
    assert "She is abroad all January" in history

    # Moving it back inside the window asks nothing and is not marked.
    moved = client.post(
        visit_url(maya, visit_id, "appointment"),
        data={**typed, "day": "2027-01-20"},
        headers=_headers(htmx),
    )
    assert redirect_target(moved, htmx=htmx).endswith("?done=rescheduled_untexted")
    assert "outside_window" not in (events_of(db, visit_id)[-1].detail or {})


def test_moving_an_appointment_texts_the_new_time_and_tells_the_coordinator(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    maya = build_schedule(db, clock, "Maya")
    visit_id = visit_id_of(db, maya, "day-30")  # January 9 to 23, 2027
    with transaction(db.factory) as session:
        phone = patient_named(session, "Maya").mobile_phone
        assert phone is not None
        opt_in(
            session,
            clock=clock,
            phone=phone,
            how=ConsentHow.COORDINATOR,
            by_user_id=None,
            wording="Texts about your follow-up visits. Reply STOP to opt out.",
        )
    token = login_as(COORDINATOR_MD)

    def book(day: str, at: str) -> httpx.Response:
        response: httpx.Response = client.post(
            visit_url(maya, visit_id, "appointment"),
            data={"csrf_token": token, "day": day, "time": at, "location": "Harborview"},
            headers=_headers(htmx),
        )
        return response

    assert redirect_target(book("2027-01-15", "09:30"), htmx=htmx).endswith("?done=scheduled")
    target = redirect_target(book("2027-01-20", "10:00"), htmx=htmx)
    assert target == f"{visit_url(maya, visit_id)}?done=rescheduled_texted"
    assert "A text tells the patient" in html.unescape(client.get(target).text)
    with db.factory() as session:
        texts = list(
            session.scalars(select(OutboundMessage).where(OutboundMessage.patient_id == maya))
        )
    [notice] = texts  # the first booking sent nothing
    assert (notice.to_phone, notice.rule) == (phone, MOVED_RULE)
    # The route woke the dispatcher: it may have left already.
    assert notice.status in (MessageStatus.QUEUED, MessageStatus.SENT)
    assert "your follow-up visit has moved to Wed Jan 20 at 10:00 AM" in notice.body


def test_the_schedule_refuses_a_day_outside_the_window_unless_confirmed_with_a_reason(
    db: Database, clock: FrozenClock
) -> None:
    maya = build_schedule(db, clock, "Maya")
    visit_id = visit_id_of(db, maya, "day-30")  # January 9 to 23, 2027
    with db.factory() as session:
        visit, patient = session.get(Visit, visit_id), session.get(Patient, maya)
        assert visit is not None and patient is not None
        actor = coordinator_actor(session)

        def book(day: date, **more: Any) -> VisitEvent:
            return book_appointment(
                session,
                clock=clock,
                actor=actor,
                visit=visit,
                patient=patient,
                day=day,
                at=time(9, 0),
                location="Harborview",
                **more,
            )

        for day in (date(2027, 1, 8), date(2027, 1, 24)):
            with pytest.raises(OutsideWindowError) as refused:
                book(day)
            assert not refused.value.needs_reason
            with pytest.raises(OutsideWindowError) as refused:
                book(day, outside_window_confirmed=True, reason="  ")
            assert refused.value.needs_reason
        assert visit.status is VisitStatus.DUE
        # The window's own first and last days are inside it.
        assert book(date(2027, 1, 9)).detail == {
            "from": None,
            "to": "2027-01-09T14:00:00+00:00",
        }
        late = book(date(2027, 1, 24), outside_window_confirmed=True, reason="Exams")
        assert late.detail is not None and late.detail["outside_window"] is True
        assert late.reason == "Exams"


def test_confirming_and_cancelling_a_visit(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya = build_schedule(db, clock, "Maya")
    visit_id = visit_id_of(db, maya, "day-30")
    token = login_as(COORDINATOR_MD)
    client.post(
        visit_url(maya, visit_id, "appointment"),
        data={"csrf_token": token, "day": "2027-01-15", "time": "09:30", "location": "Harborview"},
    )
    assert "Confirm on the patient's behalf" in client.get(visit_url(maya, visit_id)).text

    confirmed = client.post(visit_url(maya, visit_id, "confirm"), data={"csrf_token": token})
    assert redirect_target(confirmed, htmx=False).endswith("?done=confirmed")
    visit = load_visit(db, visit_id)
    assert visit.status is VisitStatus.CONFIRMED
    assert visit.confirmed_at is not None

    refused = client.post(
        visit_url(maya, visit_id, "cancel"), data={"csrf_token": token, "cancel_reason": "  "}
    )
    assert refused.status_code == 400
    assert "Reason: Say why the visit is cancelled." in refused.text
    assert 'id="f-cancel_reason-error"' in refused.text
    assert load_visit(db, visit_id).status is VisitStatus.CONFIRMED

    cancelled = client.post(
        visit_url(maya, visit_id, "cancel"),
        data={"csrf_token": token, "cancel_reason": "Moved to another state"},
    )
    target = redirect_target(cancelled, htmx=False)
    assert target.endswith("?done=cancelled")
    assert load_visit(db, visit_id).status is VisitStatus.CANCELLED
    last = events_of(db, visit_id)[-1]
    assert (last.action, last.reason) == ("cancel", "Moved to another state")
    page = client.get(target)
    assert "The visit is cancelled." in page.text
    assert "Moved to another state" in page.text
    # A cancelled visit offers no action any more.
    assert 'id="appointment-card"' not in page.text
    assert 'id="outcome-card"' not in page.text
    assert 'id="actions-card"' not in page.text


def test_illegal_transitions_and_impossible_times_are_refused_with_a_clear_message(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    maya = build_schedule(db, clock, "Maya")
    visit_id = visit_id_of(db, maya, "day-30")
    token = login_as(COORDINATOR_MD)

    not_booked = client.post(visit_url(maya, visit_id, "confirm"), data={"csrf_token": token})
    assert not_booked.status_code == 400
    assert "Only a booked appointment can be confirmed; this visit has none." in not_booked.text
    not_missed = client.post(visit_url(maya, visit_id, "acknowledge"), data={"csrf_token": token})
    assert not_missed.status_code == 400
    assert "Only a missed visit can be marked as followed up." in not_missed.text

    def book(day: str, at: str) -> httpx.Response:
        response: httpx.Response = client.post(
            visit_url(maya, visit_id, "appointment"),
            data={"csrf_token": token, "day": day, "time": at, "location": "Harborview"},
            headers=_headers(htmx),
        )
        return response

    past = card_or_page(book("2026-11-01", "09:00"), htmx=htmx, card="appointment-card")
    assert "Time: The appointment must be in the future." in past
    # 2:30 at night does not exist in Baltimore on March 14, 2027 (clocks spring forward).
    gap = card_or_page(book("2027-03-14", "02:30"), htmx=htmx, card="appointment-card")
    assert "Time: This time does not exist on that day because the clocks change." in gap
    typo = card_or_page(book("15/01/2027", "9h30"), htmx=htmx, card="appointment-card")
    assert "Date: Enter the date as YYYY-MM-DD." in typo
    assert "Time: Enter the time as HH:MM" in typo
    assert 'value="15/01/2027"' in typo  # what was typed stays in the form
    # The calendar's last day would overflow in the zone's offset: refused, never a 500.
    far = card_or_page(book("9999-12-31", "23:00"), htmx=htmx, card="appointment-card")
    assert "Date: Enter the date as YYYY-MM-DD." in far
    assert load_visit(db, visit_id).status is VisitStatus.DUE
    assert events_of(db, visit_id) == []

    client.post(
        visit_url(maya, visit_id, "cancel"),
        data={"csrf_token": token, "cancel_reason": "Duplicate visit"},
    )
    closed = card_or_page(book("2027-01-15", "09:30"), htmx=htmx, card="appointment-card")
    assert "An appointment can only be booked for a visit that is still to come." in closed
    no_outcomes = card_or_page(
        client.post(
            visit_url(maya, visit_id, "outcomes"),
            data={"csrf_token": token, "completed_on": "2026-11-27"},
            headers=_headers(htmx),
        ),
        htmx=htmx,
        card="outcome-card",
    )
    assert "This visit is already completed or cancelled." in no_outcomes
    again = client.post(
        visit_url(maya, visit_id, "cancel"), data={"csrf_token": token, "cancel_reason": "Again"}
    )
    assert again.status_code == 400
    assert "Only a visit that is still to come can be cancelled." in again.text
    assert load_visit(db, visit_id).status is VisitStatus.CANCELLED


# --- outcomes ---------------------------------------------------------------------------


def test_the_outcome_form_refuses_implausible_values_and_stores_observations(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    # Imani (Lyfgenia, infused 104 days before T0): her day-100 window is open.
    imani = build_schedule(db, clock, "Imani")
    visit_id = visit_id_of(db, imani, "day-100")
    token = login_as(COORDINATOR_MD)

    page = client.get(visit_url(imani, visit_id))
    assert page.status_code == 200
    assert 'id="outcome-card"' in page.text
    for words in (
        "Hemoglobin (g/dL)",
        "From 3 to 25 g/dL.",
        "Fetal hemoglobin (%)",
        "From 0 to 100 %.",
        "Patient-reported questionnaire done",
        "Vaso-occlusive events since the last visit",
    ):
        assert words in page.text, words

    form = {
        "csrf_token": token,
        "completed_on": "2026-11-25",
        "hemoglobin": "40",
        "fetal_hemoglobin": "32.5",
        "voe_count": "0",
        "hospitalizations": "0",
        "transfusions": "0",
        "adverse_events": "",
        "pro_done": "on",
    }
    refused = card_or_page(
        client.post(visit_url(imani, visit_id, "outcomes"), data=form, headers=_headers(htmx)),
        htmx=htmx,
        card="outcome-card",
    )
    assert "Hemoglobin (g/dL): Enter a value from 3 to 25 g/dL." in refused
    assert 'id="f-hemoglobin-error"' in refused
    assert 'value="32.5"' in refused  # the other values stay as typed
    assert load_visit(db, visit_id).status is VisitStatus.DUE
    with db.factory() as session:
        assert session.scalar(select(func.count(Observation.id))) == 0

    bad_date = card_or_page(
        client.post(
            visit_url(imani, visit_id, "outcomes"),
            data={**form, "completed_on": "yesterday", "voe_count": "1.5"},
            headers=_headers(htmx),
        ),
        htmx=htmx,
        card="outcome-card",
    )
    # Every problem at once: the date, the range, the whole number.
    assert "Visit date: Enter the visit date as YYYY-MM-DD." in bad_date
    assert "Enter a value from 3 to 25 g/dL." in bad_date
    assert "Enter a whole number." in bad_date

    saved = client.post(
        visit_url(imani, visit_id, "outcomes"),
        data={**form, "hemoglobin": "11.4"},
        headers=_headers(htmx),
    )
    assert redirect_target(saved, htmx=htmx).endswith("?done=completed")
    visit = load_visit(db, visit_id)
    assert visit.status is VisitStatus.COMPLETED
    assert visit.completed_on == date(2026, 11, 25)
    with db.factory() as session:
        coordinator_id = user_by_login(session, COORDINATOR_MD).id
        linked = list(
            session.scalars(
                select(Observation)
                .join(VisitObservation, VisitObservation.observation_id == Observation.id)
                .where(VisitObservation.visit_id == visit_id)
            )
        )
        total = session.scalar(select(func.count(Observation.id)))
    by_code = {observation.code: observation for observation in linked}
    assert total == len(linked)  # every observation is linked to the visit
    hemoglobin, fetal = by_code["718-7"], by_code["4576-5"]
    assert (hemoglobin.code_system, hemoglobin.value_quantity, hemoglobin.value_unit) == (
        LOINC,
        Decimal("11.4"),
        "g/dL",
    )
    assert (fetal.code_system, fetal.value_quantity, fetal.value_unit) == (
        LOINC,
        Decimal("32.5"),
        "%",
    )
    for observation in (hemoglobin, fetal):
        assert observation.source is ObservationSource.COORDINATOR
        assert observation.recorded_by_user_id == coordinator_id
        assert observation.patient_id == imani
        assert observation.effective_at.date() == date(2026, 11, 25)
    assert by_code["pro-completed"].value_boolean is True

    done = client.get(f"{visit_url(imani, visit_id)}?done=completed")
    assert "The visit is completed and its outcomes are saved." in done.text
    assert "Outcomes recorded" in done.text
    assert "11.4" in done.text
    assert 'action="/patients/' + str(imani) + "/visits/" + str(visit_id) + '/outcomes"' not in (
        done.text
    )


def test_a_missed_visit_can_be_followed_up(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    from coordination.followup.schedule import mark_missed_visits

    # Imani's schedule made on her infusion day (104 days before T0), when every window was
    # open; by T0 day 30's window has closed weeks ago and the nightly job misses it.
    with db.factory() as session:
        infused = patient_named(session, "Imani").infusion_date
    assert infused == T0.date() - timedelta(days=104)
    imani = build_schedule(db, FrozenClock(datetime.combine(infused, time(15), UTC)), "Imani")
    visit_id = visit_id_of(db, imani, "day-30")
    assert load_visit(db, visit_id).status is VisitStatus.DUE
    with transaction(db.factory) as session:
        assert mark_missed_visits(session, clock=clock) >= 1
    missed = load_visit(db, visit_id)
    assert (missed.status, missed.missed_acknowledged_at) == (VisitStatus.MISSED, None)
    token = login_as(COORDINATOR_MD)
    page = client.get(visit_url(imani, visit_id))
    assert "Mark as followed up" in page.text
    assert 'id="outcome-card"' in page.text  # a visit recorded late can still be entered

    done = client.post(visit_url(imani, visit_id, "acknowledge"), data={"csrf_token": token})
    assert redirect_target(done, htmx=False).endswith("?done=acknowledged")
    assert load_visit(db, visit_id).missed_acknowledged_at is not None
    again = client.post(visit_url(imani, visit_id, "acknowledge"), data={"csrf_token": token})
    assert again.status_code == 400
    assert "This missed visit is already followed up." in again.text


# --- scope and audit ---------------------------------------------------------------------


def test_a_visit_is_seen_only_within_scope_and_the_read_is_audited(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya = build_schedule(db, clock, "Maya")
    andre = build_schedule(db, clock, "Andre")
    maya_visit = visit_id_of(db, maya, "day-30")
    andre_visit = visit_id_of(db, andre, "day-30")

    token = login_as(COORDINATOR_MD)
    assert client.get(visit_url(maya, maya_visit)).status_code == 200
    # Andre's visit through Maya's record, and a visit that does not exist: 404.
    assert client.get(visit_url(maya, andre_visit)).status_code == 404
    assert client.get(visit_url(maya, 999_999)).status_code == 404
    assert client.get(visit_url(andre, andre_visit)).status_code == 404
    wrong_patient = client.post(
        visit_url(maya, andre_visit, "cancel"),
        data={"csrf_token": token, "cancel_reason": "Not mine"},
    )
    assert wrong_patient.status_code == 404
    assert load_visit(db, andre_visit).status is VisitStatus.DUE

    reads = audit_events(db, "patient.read")
    assert [(event.patient_id, event.target) for event in reads] == [(maya, "visit")]
    with db.factory() as session:
        coordinator_id = user_by_login(session, COORDINATOR_MD).id
    assert reads[0].actor_user_id == coordinator_id

    client.post("/logout", data={"csrf_token": token})
    token = login_as(COORDINATOR_CO)
    assert client.get(visit_url(maya, maya_visit)).status_code == 404
    refused = client.post(visit_url(maya, maya_visit, "confirm"), data={"csrf_token": token})
    assert refused.status_code == 404
    assert client.get(visit_url(andre, andre_visit)).status_code == 200


# --- outreach notes and the timeline -------------------------------------------------------


def test_an_outreach_note_is_saved_and_shown_on_the_timeline(
    db: Database, client: TestClient, login_as: Callable[[str], str]
) -> None:
    with db.factory() as session:
        imani = patient_named(session, "Imani").id
    token = login_as(COORDINATOR_MD)

    refused = client.post(
        f"/patients/{imani}/notes",
        data={"csrf_token": token, "channel": "pigeon", "outcome": "other", "note": ""},
    )
    assert refused.status_code == 400
    assert "How: Choose how you reached out" in refused.text
    assert "Note: Say what happened." in refused.text
    with db.factory() as session:
        assert session.scalar(select(func.count(OutreachNote.id))) == 0

    saved = client.post(
        f"/patients/{imani}/notes",
        data={
            "csrf_token": token,
            "channel": "call",
            "outcome": "left_message",
            "note": "Left a voicemail about the day 100 visit.",
            "next_step": "Call again on Monday.",
        },
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/patients/{imani}?done=note_added"
    record = client.get(saved.headers["location"])
    assert "The outreach note is saved." in record.text
    timeline = record.text[record.text.index('id="timeline-title"') :]
    for words in (
        "Outreach: Phone call",
        "Left a message",
        "Left a voicemail about the day 100 visit.",
        "Call again on Monday.",
        "Morgan Reyes",
    ):
        assert words in timeline, words
    events = audit_events(db, "outreach.note")
    assert [(event.patient_id, event.detail) for event in events] == [
        (imani, {"channel": "call", "outcome": "left_message"})
    ]


def test_add_outreach_note_checks_its_fields(db: Database, clock: FrozenClock) -> None:
    with db.factory() as session:
        patient = patient_named(session, "Imani")
        actor = coordinator_actor(session)
        with pytest.raises(FieldErrors) as problem:
            add_outreach_note(
                session,
                clock=clock,
                actor=actor,
                patient=patient,
                channel="text",
                outcome="maybe",
                note="x" * 1001,
                next_step="y" * 301,
            )
        assert set(problem.value.errors) == {"outcome", "note", "next_step"}
        with pytest.raises(ValueError, match="author"):
            add_outreach_note(
                session,
                clock=clock,
                actor=Actor.system("test"),
                patient=patient,
                channel="call",
                outcome="reached",
                note="",
                next_step="",
            )
        note = add_outreach_note(
            session,
            clock=clock,
            actor=actor,
            patient=patient,
            channel="in_person",
            outcome="reached",
            note="  ",
            next_step="",
        )
        assert (note.note, note.next_step, note.at) == (None, None, T0)


def _lived_in_history(db: Database, clock: FrozenClock, given_name: str) -> tuple[int, str]:
    """A patient with one of everything on the timeline, a minute apart (oldest first):
    day 30 missed at enrolment (for Imani its window had closed) then its outcomes late,
    a booked day 100, a report, a move request, a note, two texts.
    Returns the patient id and the secret in the invitation text."""
    patient_id = build_schedule(db, clock, given_name)
    secret = "https://testserver/invite/SECRET-TOKEN-123"
    with transaction(db.factory) as session:
        patient = session.get(Patient, patient_id)
        assert patient is not None
        actor = coordinator_actor(session)
        visits = {
            visit.visit_key: visit
            for visit in session.scalars(select(Visit).where(Visit.patient_id == patient_id))
        }
        steps: list[Callable[[], Any]] = [
            lambda: record_outcomes(
                session,
                clock=clock,
                actor=actor,
                visit=visits["day-30"],
                assessments=(Assessment.HEMOGLOBIN, Assessment.SAFETY_SCREEN),
                completed_on=clock.now().date() - timedelta(days=60),
                values={"hemoglobin": Decimal("11.40"), "voe_count": Decimal(2)},
            ),
            lambda: book_appointment(
                session,
                clock=clock,
                actor=actor,
                visit=visits["day-100"],
                patient=patient,
                day=date(2026, 12, 2),
                at=time(14, 0),
                location="Harborview",
            ),
            lambda: session.add(
                PatientReport(
                    patient_id=patient_id,
                    kind=ReportKind.HOSPITAL_STAY,
                    occurred_on=date(2026, 11, 20),
                    details="Two nights for a pain crisis.",
                    reported_by_user_id=user_by_login(session, CAREGIVER_MD).id,
                    reported_at=clock.now(),
                    status=ReportStatus.NEW,
                )
            ),
            lambda: session.add(
                MoveRequest(
                    visit_id=visits["day-100"].id,
                    patient_id=patient_id,
                    requested_by_user_id=user_by_login(session, PATIENT_MD).id,
                    preferred_date=date(2026, 12, 4),
                    note="Friday is better.",
                    status=RequestStatus.OPEN,
                    created_at=clock.now(),
                )
            ),
            lambda: add_outreach_note(
                session,
                clock=clock,
                actor=actor,
                patient=patient,
                channel="text",
                outcome="reached",
                note="Confirmed the address.",
                next_step="",
            ),
            lambda: enqueue_message(
                session,
                clock=clock,
                to_phone="+14105550114",
                body="Reminder: your check-up is on December 2 at 2:00 PM.",
                purpose=MessagePurpose.REMINDER,
                patient_id=patient_id,
            ),
            lambda: enqueue_message(
                session,
                clock=clock,
                to_phone="+14105550114",
                body=f"Set up your account: {secret}",
                purpose=MessagePurpose.INVITATION,
                patient_id=patient_id,
            ),
        ]
        for step in steps:
            clock.advance(timedelta(minutes=1))
            step()
            session.flush()
    return patient_id, secret


def test_the_timeline_shows_visits_outcomes_reports_notes_and_messages_newest_first(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    imani, secret = _lived_in_history(db, clock, "Imani")
    with transaction(db.factory) as session:
        # On a running clock the outcomes of one visit are stored microseconds apart: they
        # still make one entry.
        later = session.scalar(
            select(Observation).where(
                Observation.code == "voe-count", Observation.patient_id == imani
            )
        )
        assert later is not None
        later.created_at += timedelta(microseconds=1500)
    with db.factory() as session:
        entries = patient_timeline(session, patient_id=imani, limit=50)
        short = patient_timeline(session, patient_id=imani, limit=3)
    kinds = [entry.kind for entry in entries]
    assert kinds == [
        TimelineKind.MESSAGE,
        TimelineKind.MESSAGE,
        TimelineKind.NOTE,
        TimelineKind.MOVE_REQUEST,
        TimelineKind.REPORT,
        TimelineKind.VISIT,  # day 100 booked
        TimelineKind.OUTCOME,  # day 30's outcomes, stored just after it was completed
        TimelineKind.VISIT,  # day 30 completed
        TimelineKind.VISIT,  # day 30 missed: its window had closed before the schedule existed
    ]
    assert [entry.at for entry in entries] == sorted((e.at for e in entries), reverse=True)
    assert short == entries[:3]
    invitation, reminder = entries[0], entries[1]
    assert invitation.private and invitation.text is None
    assert reminder.text == "Reminder: your check-up is on December 2 at 2:00 PM."
    outcome = entries[6]
    assert outcome.visit_key == "day-30"
    completed, missed = entries[7], entries[8]
    assert (completed.visit_key, completed.action) == ("day-30", "completed")
    assert (missed.visit_key, missed.action, missed.at) == ("day-30", "missed", T0)
    assert missed.reason == "the window had closed before follow-up began here"
    assert {value.code: value.shown for value in outcome.values} == {
        "718-7": "11.4",
        "voe-count": "2",
    }

    login_as(COORDINATOR_MD)
    record = client.get(f"/patients/{imani}")
    assert record.status_code == 200
    timeline = record.text[record.text.index('id="timeline-title"') :]
    for words in (
        "Text: Invitation",
        "Not shown: it holds a private link or code.",
        "Text: Reminder",
        "Reminder: your check-up is on December 2 at 2:00 PM.",
        "Outreach: Text message",
        "Confirmed the address.",
        "Asked to move a visit",
        "Preferred date: Dec 4, 2026",
        "Friday is better.",
        "Reported: Hospital stay",
        "Two nights for a pain crisis.",
        "Appointment booked",
        "Day 100 check-up",
        "Visit completed",
        "Visit missed",
        "the window had closed before follow-up began here",
        "Outcomes recorded",
        "Hemoglobin (g/dL): 11.4",
        "Vaso-occlusive events since the last visit: 2",
    ):
        assert words in timeline, words
    assert secret not in record.text
    assert "SECRET-TOKEN" not in record.text
    # The schedule shows the appointment in the patient's time, with its status.
    schedule = record.text[
        record.text.index('id="schedule-title"') : record.text.index('id="note-title"')
    ]
    assert "Wednesday, December 2, 2026, 2:00 PM EST" in plain(schedule)
    assert "Booked" in schedule
    assert "Completed" in schedule


# --- a fixed number of queries ---------------------------------------------------------


@contextmanager
def counting_statements(db: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def _protocol_of(therapy: str, visits: int) -> Protocol:
    """A protocol with `visits` visits a hundred days apart (windows never overlap)."""
    return Protocol(
        therapy=therapy,
        version=1,
        title=Label(en="Test protocol", es="Protocolo de prueba"),
        visits=tuple(
            ProtocolVisit(
                key=f"v{number:02d}",
                label=Label(en=f"Visit {number}", es=f"Visita {number}"),
                offset_days=30 + 100 * number,
                window_before_days=10,
                window_after_days=10,
                assessments=(Assessment.HEMOGLOBIN, Assessment.PRO_QUESTIONNAIRE),
            )
            for number in range(visits)
        ),
    )


def _patient_with_visits(db: Database, clock: FrozenClock, *, visits: int, number: int) -> int:
    """An MD patient whose past visits are completed with outcomes, the next one booked,
    with a note and a text: every kind of row the record page reads."""
    with transaction(db.factory) as session:
        state = session.scalar(select(State).where(State.code == "MD"))
        assert state is not None
        center = session.scalar(select(TreatmentCenter).where(TreatmentCenter.state_id == state.id))
        assert center is not None
        actor = coordinator_actor(session)
        patient = enroll_patient(
            session,
            clock=clock,
            actor=actor,
            data=PatientData(
                given_name=f"Count{number}",
                family_name="Queries",
                birth_date=date(2000, 1, 1),
                medicaid_id=f"MDQ{number:07d}",
                state_id=state.id,
                center_id=center.id,
                therapy_id=therapy_id(db, "casgevy"),
                infusion_date=T0.date() - timedelta(days=100 * visits // 2),
                status=PatientStatus.ACTIVE,
            ),
            allowed_state_ids={state.id},
        )
        change = sync_schedule(
            session,
            clock=clock,
            actor=actor,
            library=shipped_protocols(),
            patient=patient,
            protocol=_protocol_of("casgevy", visits),
        )
        today = clock.now().date()
        past = [visit for visit in change.visits if visit.window_end < today]
        for visit in past:
            record_outcomes(
                session,
                clock=clock,
                actor=actor,
                visit=visit,
                assessments=(Assessment.HEMOGLOBIN, Assessment.PRO_QUESTIONNAIRE),
                completed_on=visit.target_date,
                values={"hemoglobin": Decimal(11), "pro_done": True},
            )
        upcoming = next(visit for visit in change.visits if visit.window_end >= today)
        book_appointment(
            session,
            clock=clock,
            actor=actor,
            visit=upcoming,
            patient=patient,
            day=max(upcoming.window_start, today + timedelta(days=1)),
            at=time(10, 0),
            location="Harborview",
        )
        add_outreach_note(
            session,
            clock=clock,
            actor=actor,
            patient=patient,
            channel="call",
            outcome="reached",
            note="All good.",
            next_step="",
        )
        enqueue_message(
            session,
            clock=clock,
            to_phone="+14105550199",
            body="Reminder",
            purpose=MessagePurpose.REMINDER,
            patient_id=patient.id,
        )
        return patient.id


def test_the_record_page_reads_a_fixed_number_of_statements(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    few = _patient_with_visits(db, clock, visits=5, number=1)
    many = _patient_with_visits(db, clock, visits=30, number=2)
    with db.factory() as session:
        for patient_id, expected in ((few, 5), (many, 30)):
            count = session.scalar(
                select(func.count(Visit.id)).where(Visit.patient_id == patient_id)
            )
            assert count == expected
    login_as(COORDINATOR_MD)
    for patient_id in (few, many):  # warm up: the first request of a login writes more
        assert client.get(f"/patients/{patient_id}").status_code == 200

    counts = {}
    for patient_id in (few, many):
        with counting_statements(db) as statements:
            page = client.get(f"/patients/{patient_id}")
        assert page.status_code == 200
        assert len(schedule_links(page.text, patient_id)) == (5 if patient_id == few else 30)
        counts[patient_id] = len(statements)
    assert counts[few] == counts[many], counts
    assert counts[few] < 40, counts
