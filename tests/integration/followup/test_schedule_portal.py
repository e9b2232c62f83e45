"""The patient's schedule in the portal: next visit first with its window in words, confirm,
ask to move, caregivers within their rights, `.ics` files (parsed with icalendar), private
calendar feeds, and the home page's next-visit card. Pages run as a whole and as htmx blocks;
every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from babel.dates import format_date
from fastapi import FastAPI
from fastapi.testclient import TestClient
from icalendar import Calendar, Event
from sqlalchemy import select

from coordination.followup.models import (
    OPEN_VISIT_STATUSES,
    CalendarFeed,
    MoveRequest,
    RequestStatus,
    Visit,
    VisitEvent,
    VisitStatus,
)
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import (
    book_appointment,
    complete_visit,
    mark_missed_visits,
    outside_window,
    sync_schedule,
)
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.models import CaregiverLink, Patient
from tests.conftest import (
    CAREGIVER_CO,
    CAREGIVER_MD,
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_CO,
    PATIENT_MD,
    Database,
    user_by_login,
)

HTMX = {"HX-Request": "true"}
SETUP = Actor.system("test-setup")
# Words that must never reach a calendar entry's title or text.
HEALTH_WORDS = ("casgevy", "lyfgenia", "sickle", "gene", "therapy", "hemoglobin")
# The tests' PUBLIC_BASE_URL is http://testserver (https:// in production).
_FEED_URL = re.compile(r'value="http://testserver/calendar/([A-Za-z0-9_-]{40,})\.ics"')


@pytest.fixture(params=[False, True], ids=["page", "htmx"])
def htmx(request: pytest.FixtureRequest) -> bool:
    """Run a page test as a plain browser request and as an htmx partial request."""
    return bool(request.param)


# --- setting up schedules ---------------------------------------------------------------


def patient_id_of(db: Database, login: str) -> int:
    with db.factory() as session:
        patient_id = user_by_login(session, login).patient_id
    assert patient_id is not None
    return patient_id


def patient_id_named(db: Database, given_name: str) -> int:
    with db.factory() as session:
        patient_id = session.scalar(select(Patient.id).where(Patient.given_name == given_name))
    assert patient_id is not None
    return patient_id


def plan(db: Database, clock: FrozenClock, *patient_ids: int) -> None:
    """Give these patients their follow-up schedule (the test world has none)."""
    with db.factory() as session:
        for patient_id in patient_ids:
            patient = session.get(Patient, patient_id)
            assert patient is not None
            sync_schedule(
                session, clock=clock, actor=SETUP, library=shipped_protocols(), patient=patient
            )
        mark_missed_visits(session, clock=clock)  # windows already closed: missed
        session.commit()


def open_visit_ids(db: Database, patient_id: int) -> list[int]:
    with db.factory() as session:
        return list(
            session.scalars(
                select(Visit.id)
                .where(Visit.patient_id == patient_id, Visit.status.in_(OPEN_VISIT_STATUSES))
                .order_by(Visit.target_date)
            )
        )


def visit(db: Database, visit_id: int) -> Visit:
    with db.factory() as session:
        found = session.get(Visit, visit_id)
        assert found is not None
        session.expunge(found)
        return found


def book(
    db: Database, clock: FrozenClock, visit_id: int, day: date, at: time, place: str = "Clinic B"
) -> None:
    with db.factory() as session:
        found = session.get(Visit, visit_id)
        assert found is not None
        patient = session.get(Patient, found.patient_id)
        assert patient is not None
        book_appointment(
            session,
            clock=clock,
            actor=SETUP,
            visit=found,
            patient=patient,
            day=day,
            at=at,
            location=place,
            # The day each test needs, wherever the visit's window is.
            reason="the day the test needs" if outside_window(found, day) else None,
            outside_window_confirmed=True,
        )
        session.commit()


def long_day(value: date, language: str = "en") -> str:
    return format_date(value, format="long", locale=language)


def label_of(found: Visit, therapy: str, language: str = "en") -> str:
    protocol = shipped_protocols().current(therapy)
    assert protocol is not None
    protocol_visit = protocol.visit(found.visit_key)
    assert protocol_visit is not None
    return protocol_visit.label.text(language)


def therapy_of(db: Database, patient_id: int) -> str:
    with db.factory() as session:
        patient = session.get(Patient, patient_id)
        assert patient is not None
        return patient.therapy.code


def parse_ics(response: httpx.Response) -> Calendar:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/calendar")
    return Calendar.from_ical(response.content)


def only_event(calendar: Calendar) -> Event:
    events = list(calendar.walk("VEVENT"))
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, Event)
    return event


def assert_discreet(event: Event) -> None:
    for field in ("SUMMARY", "DESCRIPTION"):
        text = str(event.get(field, "")).lower()
        leaked = [word for word in HEALTH_WORDS if word in text]
        assert not leaked, f"{field} names {leaked}: {text!r}"


# --- the schedule page ------------------------------------------------------------------


def test_patient_sees_own_schedule_next_visit_first(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya = patient_id_of(db, PATIENT_MD)
    plan(db, clock, maya)
    visits = [visit(db, visit_id) for visit_id in open_visit_ids(db, maya)]
    first, second = visits[0], visits[1]
    therapy = therapy_of(db, maya)
    login_as(PATIENT_MD)

    response = client.get("/schedule")
    assert response.status_code == 303
    assert response.headers["location"] == f"/care/{maya}/schedule"
    page = client.get(f"/care/{maya}/schedule")
    assert page.status_code == 200
    text = page.text
    window = f"between {long_day(first.window_start)} and {long_day(first.window_end)}"
    assert window in text
    assert "No appointment is booked yet" in text
    # The next visit comes first, then the later ones in order, then the past.
    next_at = text.index(label_of(first, therapy))
    assert next_at < text.index("Later visits") < text.index(label_of(second, therapy))
    assert text.index(label_of(second, therapy)) < text.index("Past visits")
    assert f'href="/care/{maya}/visits/{first.id}.ics"' in text
    # A patient gets the subscription card; nothing of the therapy is on the page.
    assert "Calendar subscription" in text
    assert "Lyfgenia" not in text and "Casgevy" not in text


def test_schedule_page_whole_or_htmx_block(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    maya = patient_id_of(db, PATIENT_MD)
    plan(db, clock, maya)
    login_as(PATIENT_MD)
    response = client.get(f"/care/{maya}/schedule", headers=HTMX if htmx else {})
    assert response.status_code == 200
    if htmx:
        assert "<html" not in response.text
        assert response.text.lstrip().startswith('<div id="schedule">')
    else:
        assert "<html" in response.text and 'id="schedule"' in response.text
    assert 'id="next-visit"' in response.text


def test_spanish_reader_gets_spanish_dates_and_labels(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    andre = patient_id_of(db, PATIENT_CO)
    plan(db, clock, andre)
    first = visit(db, open_visit_ids(db, andre)[0])
    login_as(CAREGIVER_CO)  # Rosa reads Spanish and helps only Andre

    response = client.get("/schedule")
    assert response.status_code == 303
    assert response.headers["location"] == f"/care/{andre}/schedule"
    text = client.get(f"/care/{andre}/schedule").text
    assert label_of(first, therapy_of(db, andre), "es") in text
    assert long_day(first.window_start, "es") in text
    assert long_day(first.window_end, "es") in text
    assert " de diciembre de 2026" in text
    assert label_of(first, therapy_of(db, andre), "en") not in text


def test_staff_may_look_in_scope_only(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya = patient_id_of(db, PATIENT_MD)
    plan(db, clock, maya)
    login_as(COORDINATOR_MD)
    page = client.get(f"/care/{maya}/schedule")
    assert page.status_code == 200
    assert "Calendar subscription" not in page.text  # feeds are for patients and caregivers
    assert client.get("/schedule").headers["location"] == "/worklist"
    refused = client.post(f"/care/{maya}/calendar-feed", data={"csrf_token": _token(client)})
    assert refused.status_code == 400
    with db.factory() as session:
        assert session.scalar(select(CalendarFeed.id)) is None

    client.cookies.clear()
    login_as(COORDINATOR_CO)
    assert client.get(f"/care/{maya}/schedule").status_code == 404


def _token(client: TestClient) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/account").text)
    assert match
    return match.group(1)


# --- confirming ---------------------------------------------------------------------------


def test_confirm_records_who_confirmed(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    andre = patient_id_of(db, PATIENT_CO)
    plan(db, clock, andre)
    visit_id = open_visit_ids(db, andre)[0]
    book(db, clock, visit_id, date(2026, 12, 10), time(10, 30))
    token = login_as(PATIENT_CO)

    page = client.get(f"/care/{andre}/schedule").text
    assert "Confirm this appointment" in page
    assert "Thursday, December 10, 2026 at 10:30" in page
    response = client.post(
        f"/care/{andre}/visits/{visit_id}/confirm",
        data={"csrf_token": token, "view": "schedule"},
        headers=HTMX if htmx else {},
    )
    if htmx:
        assert response.status_code == 200
        assert response.text.lstrip().startswith('<section class="card" id="next-visit"')
        assert "the appointment is confirmed" in response.text
        assert "Confirm this appointment" not in response.text
    else:
        assert response.status_code == 303
        assert response.headers["location"] == f"/care/{andre}/schedule?done=confirmed"
        after = client.get(response.headers["location"]).text
        assert "the appointment is confirmed" in after

    confirmed = visit(db, visit_id)
    assert confirmed.status is VisitStatus.CONFIRMED
    assert confirmed.confirmed_at == clock.now()
    with db.factory() as session:
        event = session.scalar(
            select(VisitEvent).where(
                VisitEvent.visit_id == visit_id, VisitEvent.action == "confirm"
            )
        )
        assert event is not None
        assert event.actor_user_id == user_by_login(session, PATIENT_CO).id
        assert event.actor_label == PATIENT_CO
        assert (event.from_status, event.to_status) == ("scheduled", "confirmed")


def test_confirm_is_refused_for_a_visit_without_appointment(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    maya = patient_id_of(db, PATIENT_MD)
    plan(db, clock, maya)
    visit_id = open_visit_ids(db, maya)[0]
    token = login_as(PATIENT_MD)
    assert "Confirm this appointment" not in client.get(f"/care/{maya}/schedule").text

    response = client.post(
        f"/care/{maya}/visits/{visit_id}/confirm",
        data={"csrf_token": token},
        headers=HTMX if htmx else {},
    )
    message = "Only a booked appointment can be confirmed; this visit has none."
    # htmx swaps only 2xx answers: the refusal comes back in the card itself.
    assert response.status_code == (200 if htmx else 400)
    assert message in response.text
    assert ("<html" in response.text) is not htmx
    assert visit(db, visit_id).status is VisitStatus.DUE


def test_visits_of_another_patient_are_not_found(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya, andre = patient_id_of(db, PATIENT_MD), patient_id_of(db, PATIENT_CO)
    plan(db, clock, maya, andre)
    andres_visit = open_visit_ids(db, andre)[0]
    token = login_as(PATIENT_MD)
    assert client.get(f"/care/{maya}/visits/{andres_visit}.ics").status_code == 404
    assert client.get(f"/care/{maya}/visits/999999.ics").status_code == 404
    for action in ("confirm", "move"):
        response = client.post(
            f"/care/{maya}/visits/{andres_visit}/{action}", data={"csrf_token": token}
        )
        assert response.status_code == 404
    assert client.get(f"/care/{andre}/schedule").status_code == 404


# --- asking to move a visit ---------------------------------------------------------------


def test_move_request_lands_open_and_a_second_replaces_the_first(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    andre = patient_id_of(db, PATIENT_CO)
    plan(db, clock, andre)
    visit_id = open_visit_ids(db, andre)[0]
    token = login_as(PATIENT_CO)
    headers = HTMX if htmx else {}

    first = client.post(
        f"/care/{andre}/visits/{visit_id}/move",
        data={"csrf_token": token, "preferred_date": "2026-12-18", "note": "Exams that week."},
        headers=headers,
    )
    if htmx:
        assert first.status_code == 200
        assert first.text.lstrip().startswith('<section class="card" id="next-visit"')
        assert "Your request is sent" in first.text
    else:
        assert first.status_code == 303
        assert first.headers["location"] == f"/care/{andre}/schedule?done=move_requested"
        assert "Your request is sent" in client.get(first.headers["location"]).text
    second = client.post(
        f"/care/{andre}/visits/{visit_id}/move",
        data={"csrf_token": token, "preferred_date": "", "note": "Any Friday."},
        headers=headers,
    )
    assert second.status_code == (200 if htmx else 303)

    with db.factory() as session:
        requests = list(
            session.scalars(
                select(MoveRequest).where(MoveRequest.visit_id == visit_id).order_by(MoveRequest.id)
            )
        )
        andre_user = user_by_login(session, PATIENT_CO)
    assert [request.status for request in requests] == [RequestStatus.DONE, RequestStatus.OPEN]
    assert requests[0].preferred_date == date(2026, 12, 18)
    assert requests[1].note == "Any Friday." and requests[1].preferred_date is None
    assert requests[1].requested_by_user_id == andre_user.id
    assert "A request to move this visit was sent" in client.get(f"/care/{andre}/schedule").text


def test_move_request_with_a_past_date_is_refused(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    andre = patient_id_of(db, PATIENT_CO)
    plan(db, clock, andre)
    visit_id = open_visit_ids(db, andre)[0]
    token = login_as(PATIENT_CO)
    for value, message in (
        ("2026-01-02", "Choose a date from today on."),
        ("next week", "Enter a date like 2027-03-14."),
    ):
        response = client.post(
            f"/care/{andre}/visits/{visit_id}/move",
            data={"csrf_token": token, "preferred_date": value, "note": "x"},
            headers=HTMX if htmx else {},
        )
        assert response.status_code == (200 if htmx else 400)
        assert message in response.text
        assert f'value="{value}"' in response.text  # what was typed stays in the form
    with db.factory() as session:
        assert (
            session.scalar(select(MoveRequest.id).where(MoveRequest.visit_id == visit_id)) is None
        )


# --- caregivers ---------------------------------------------------------------------------


def test_caregiver_with_the_right_sees_and_confirms(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya, imani = patient_id_of(db, PATIENT_MD), patient_id_named(db, "Imani")
    plan(db, clock, maya, imani)
    visit_id = open_visit_ids(db, imani)[0]
    book(db, clock, visit_id, date(2026, 12, 2), time(14, 0))
    with db.factory() as session:
        past = session.scalar(
            select(Visit).where(Visit.patient_id == imani).order_by(Visit.target_date).limit(1)
        )
        assert past is not None and past.status is VisitStatus.MISSED
        complete_visit(session, clock=clock, actor=SETUP, visit=past, completed_on=past.target_date)
        # Denise (Imani's aunt) sees Imani's schedule; confirming takes the right to act on it.
        link = session.scalar(select(CaregiverLink).where(CaregiverLink.patient_id == imani))
        assert link is not None
        link.can_manage_visits = True
        session.commit()
    token = login_as(CAREGIVER_MD)  # Denise: Maya's mother, Imani's aunt

    chooser = client.get("/schedule")
    assert chooser.status_code == 200
    assert f'href="/care/{maya}/schedule"' in chooser.text
    assert f'href="/care/{imani}/schedule"' in chooser.text
    page = client.get(f"/care/{imani}/schedule")
    assert page.status_code == 200
    assert "Visits of Imani" in page.text
    assert "Past visits" in page.text and "Done" in page.text
    response = client.post(f"/care/{imani}/visits/{visit_id}/confirm", data={"csrf_token": token})
    assert response.status_code == 303
    assert visit(db, visit_id).status is VisitStatus.CONFIRMED
    with db.factory() as session:
        event = session.scalar(
            select(VisitEvent).where(
                VisitEvent.visit_id == visit_id, VisitEvent.action == "confirm"
            )
        )
        assert event is not None
        assert event.actor_user_id == user_by_login(session, CAREGIVER_MD).id


def test_caregiver_without_the_right_gets_not_found(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    lucia = patient_id_named(db, "Lucía")
    plan(db, clock, lucia)
    with db.factory() as session:
        denise = user_by_login(session, CAREGIVER_MD)
        session.add(
            CaregiverLink(
                caregiver_id=denise.caregiver_id,
                patient_id=lucia,
                relationship_label="neighbour",
                can_view_schedule=False,
                can_receive_reminders=False,
                can_view_education=True,
                can_report_events=False,
                created_at=clock.now(),
                updated_at=clock.now(),
            )
        )
        session.commit()
    visit_id = open_visit_ids(db, lucia)[0]
    book(db, clock, visit_id, date(2026, 12, 20), time(9, 0))
    token = login_as(CAREGIVER_MD)

    assert client.get(f"/care/{lucia}/schedule").status_code == 404
    assert client.get(f"/care/{lucia}/visits/{visit_id}.ics").status_code == 404
    for path in (
        f"/care/{lucia}/visits/{visit_id}/confirm",
        f"/care/{lucia}/visits/{visit_id}/move",
        f"/care/{lucia}/calendar-feed",
    ):
        assert client.post(path, data={"csrf_token": token}).status_code == 404
    assert f"/care/{lucia}/schedule" not in client.get("/schedule").text
    home = client.get("/home").text
    assert f'id="visit-card-{lucia}"' not in home
    assert visit(db, visit_id).status is VisitStatus.SCHEDULED


# --- .ics files -------------------------------------------------------------------------


def test_ics_of_a_booked_visit(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    andre = patient_id_of(db, PATIENT_CO)
    plan(db, clock, andre)
    visit_id = open_visit_ids(db, andre)[0]
    book(db, clock, visit_id, date(2026, 12, 10), time(10, 30), place="Clinic B, 2nd floor")
    login_as(PATIENT_CO)

    response = client.get(f"/care/{andre}/visits/{visit_id}.ics")
    assert response.headers["content-disposition"] == 'attachment; filename="visit.ics"'
    assert "no-store" in response.headers["cache-control"]
    calendar = parse_ics(response)
    event = only_event(calendar)
    start = event.decoded("DTSTART")
    assert isinstance(start, datetime)
    assert (start.date(), start.time()) == (date(2026, 12, 10), time(10, 30))
    assert event["DTSTART"].params["TZID"] == "America/Denver"
    assert [tz.tz_name for tz in calendar.timezones] == ["America/Denver"]
    assert start.astimezone(UTC) == datetime(2026, 12, 10, 17, 30, tzinfo=UTC)
    assert str(event["SUMMARY"]) == "Follow-up visit – Colorado Care Connect"
    assert str(event["UID"]) == f"visit-{visit_id}@testserver"
    assert str(event["LOCATION"]) == "Clinic B, 2nd floor"
    assert event.decoded("DTSTAMP") == clock.now()
    assert "(303) 555-0100" in str(event["DESCRIPTION"])
    alarms = list(event.walk("VALARM"))
    assert len(alarms) == 1 and alarms[0].decoded("TRIGGER") == timedelta(days=-1)
    assert_discreet(event)


def test_ics_keeps_nine_oclock_on_the_daylight_saving_day(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya = patient_id_of(db, PATIENT_MD)
    plan(db, clock, maya)
    visit_id = open_visit_ids(db, maya)[2]
    # Clocks spring forward in New York at 2:00 on Sunday 2027-03-14.
    book(db, clock, visit_id, date(2027, 3, 14), time(9, 0))
    login_as(PATIENT_MD)

    response = client.get(f"/care/{maya}/visits/{visit_id}.ics")
    assert b"DTSTART;TZID=America/New_York:20270314T090000" in response.content
    event = only_event(parse_ics(response))
    start = event.decoded("DTSTART")
    assert start.tzinfo is not None and start.time() == time(9, 0)
    assert start.astimezone(UTC) == datetime(2027, 3, 14, 13, 0, tzinfo=UTC)  # EDT, UTC-4
    assert event.decoded("DTEND").astimezone(ZoneInfo("America/New_York")).time() == time(10, 0)
    assert_discreet(event)


def test_ics_of_a_visit_without_appointment_is_all_day(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya = patient_id_of(db, PATIENT_MD)
    plan(db, clock, maya)
    first = visit(db, open_visit_ids(db, maya)[0])
    login_as(PATIENT_MD)
    event = only_event(parse_ics(client.get(f"/care/{maya}/visits/{first.id}.ics")))
    assert event.decoded("DTSTART") == first.target_date
    assert event.decoded("DTEND") == first.target_date + timedelta(days=1)
    description = str(event["DESCRIPTION"])
    assert long_day(first.window_start) in description
    assert long_day(first.window_end) in description
    assert not list(event.walk("VALARM"))
    assert_discreet(event)


# --- calendar subscriptions ------------------------------------------------------------


def _create_feed(client: TestClient, token: str, patient_id: int, *, htmx: bool = False) -> str:
    response = client.post(
        f"/care/{patient_id}/calendar-feed",
        data={"csrf_token": token},
        headers=HTMX if htmx else {},
    )
    assert response.status_code == 200, response.text
    match = _FEED_URL.search(response.text)
    assert match, "the secret URL is shown after creating the feed"
    assert f"webcal://testserver/calendar/{match.group(1)}.ics" in response.text
    return match.group(1)


def test_feed_create_fetch_revoke(
    db: Database,
    app: FastAPI,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    maya = patient_id_of(db, PATIENT_MD)
    plan(db, clock, maya)
    open_count = len(open_visit_ids(db, maya))
    token = login_as(PATIENT_MD)
    caplog.set_level(logging.INFO, logger="cgt_access.access")

    secret = _create_feed(client, token, maya, htmx=htmx)
    with db.factory() as session:
        feed = session.scalar(select(CalendarFeed))
        assert feed is not None and feed.revoked_at is None
        assert feed.token_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in feed.token_hash
    # The link is shown once; the page afterwards says a subscription exists.
    page = client.get(f"/care/{maya}/schedule").text
    assert secret not in page and "Subscription started on" in page

    with TestClient(app, raise_server_exceptions=False) as calendar_app:  # no login, no cookie
        fetched = calendar_app.get(f"/calendar/{secret}.ics")
        assert fetched.headers["cache-control"] == "no-store"
        calendar = parse_ics(fetched)
        events = list(calendar.walk("VEVENT"))
        assert len(events) == open_count
        for event in events:
            assert isinstance(event, Event)
            assert_discreet(event)
        assert str(calendar["X-WR-CALNAME"]) == "Follow-up visits – Maryland Care Connect"
        assert b"REFRESH-INTERVAL;VALUE=DURATION:PT6H" in fetched.content
        assert b"X-PUBLISHED-TTL:PT6H" in fetched.content
        with db.factory() as session:
            assert session.scalar(select(CalendarFeed.last_fetched_at)) == clock.now()

        # A new link replaces the old one.
        newer = _create_feed(client, token, maya)
        assert calendar_app.get(f"/calendar/{secret}.ics").status_code == 404
        assert calendar_app.get(f"/calendar/{newer}.ics").status_code == 200

        revoked = client.post(
            f"/care/{maya}/calendar-feed/revoke",
            data={"csrf_token": token},
            headers=HTMX if htmx else {},
        )
        if htmx:
            assert revoked.status_code == 200
            assert revoked.text.lstrip().startswith('<section class="card" id="calendar-feed"')
            assert "The calendar subscription is stopped" in revoked.text
        else:
            assert revoked.status_code == 303
            assert "done=feed_revoked" in revoked.headers["location"]
        gone = calendar_app.get(f"/calendar/{newer}.ics")
        assert gone.status_code == 404
        assert gone.headers["content-type"].startswith("text/plain")
        assert gone.headers["cache-control"] == "no-store"
        assert calendar_app.get("/calendar/not-a-token.ics").status_code == 404

    with db.factory() as session:
        feeds = list(session.scalars(select(CalendarFeed)))
        audit = list(session.scalars(select(AuditEvent)))
    assert len(feeds) == 2 and all(feed.revoked_at is not None for feed in feeds)
    assert {"calendar_feed.create", "calendar_feed.revoke"} <= {row.action for row in audit}
    for row in audit:
        assert secret not in f"{row.target} {row.detail}"
        assert newer not in f"{row.target} {row.detail}"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/calendar/…" in logged
    assert secret not in logged and newer not in logged


def test_feed_stops_when_the_right_is_removed_or_the_account_deactivated(
    db: Database,
    app: FastAPI,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
) -> None:
    maya, imani = patient_id_of(db, PATIENT_MD), patient_id_named(db, "Imani")
    plan(db, clock, maya, imani)
    with db.factory() as session:  # Imani's day-30 visit was missed, then recorded late
        late = session.scalar(
            select(Visit).where(Visit.patient_id == imani, Visit.status == VisitStatus.MISSED)
        )
        assert late is not None
        complete_visit(session, clock=clock, actor=SETUP, visit=late, completed_on=late.target_date)
        session.commit()
        late_id = late.id
    token = login_as(CAREGIVER_MD)
    for_imani = _create_feed(client, token, imani)
    for_maya = _create_feed(client, token, maya)
    with TestClient(app, raise_server_exceptions=False) as calendar_app:
        calendar = parse_ics(calendar_app.get(f"/calendar/{for_imani}.ics"))
        assert str(calendar["X-WR-CALNAME"]) == (
            "Follow-up visits of Imani – Maryland Care Connect"
        )
        uids = {str(event["UID"]) for event in calendar.walk("VEVENT")}
        expected = {f"visit-{vid}@testserver" for vid in [*open_visit_ids(db, imani), late_id]}
        assert uids == expected  # the open visits and the one completed this year
        assert calendar_app.get(f"/calendar/{for_maya}.ics").status_code == 200

        with db.factory() as session:
            denise = user_by_login(session, CAREGIVER_MD)
            link = session.scalar(
                select(CaregiverLink).where(
                    CaregiverLink.caregiver_id == denise.caregiver_id,
                    CaregiverLink.patient_id == imani,
                )
            )
            assert link is not None
            link.can_view_schedule = False
            session.commit()
        assert calendar_app.get(f"/calendar/{for_imani}.ics").status_code == 404
        assert calendar_app.get(f"/calendar/{for_maya}.ics").status_code == 200
        with db.factory() as session:
            link = session.get(CaregiverLink, link.id)
            assert link is not None
            link.can_view_schedule = True  # given back: the old URL stays dead
            session.commit()
        assert calendar_app.get(f"/calendar/{for_imani}.ics").status_code == 404

        with db.factory() as session:
            user_by_login(session, CAREGIVER_MD).is_active = False
            session.commit()
        assert calendar_app.get(f"/calendar/{for_maya}.ics").status_code == 404


# --- the home page ------------------------------------------------------------------------


def test_home_shows_the_next_visit_and_confirms_it(
    db: Database,
    client: TestClient,
    login_as: Callable[[str], str],
    clock: FrozenClock,
    htmx: bool,
) -> None:
    andre = patient_id_of(db, PATIENT_CO)
    plan(db, clock, andre)
    first = visit(db, open_visit_ids(db, andre)[0])
    book(db, clock, first.id, date(2026, 12, 10), time(10, 30))
    token = login_as(PATIENT_CO)

    home = client.get("/home").text
    assert f'id="visit-card-{andre}"' in home
    assert label_of(first, therapy_of(db, andre)) in home
    assert f"between {long_day(first.window_start)} and {long_day(first.window_end)}" in home
    assert "Confirm this appointment" in home
    assert f'href="/care/{andre}/schedule"' in home
    assert f'href="/care/{andre}/report"' in home  # a patient may always report

    response = client.post(
        f"/care/{andre}/visits/{first.id}/confirm",
        data={"csrf_token": token, "view": "home"},
        headers=HTMX if htmx else {},
    )
    if htmx:
        assert response.status_code == 200
        assert response.text.lstrip().startswith(f'<div class="card" id="visit-card-{andre}"')
        assert "the appointment is confirmed" in response.text
    else:
        assert response.status_code == 303
        assert response.headers["location"] == "/home?done=confirmed"
        assert "the appointment is confirmed" in client.get(response.headers["location"]).text
    assert visit(db, first.id).status is VisitStatus.CONFIRMED


def test_home_of_a_caregiver_follows_each_links_rights(
    db: Database, client: TestClient, login_as: Callable[[str], str], clock: FrozenClock
) -> None:
    maya, imani = patient_id_of(db, PATIENT_MD), patient_id_named(db, "Imani")
    plan(db, clock, maya, imani)
    login_as(CAREGIVER_MD)
    home = client.get("/home").text
    assert f'id="visit-card-{maya}"' in home and f'id="visit-card-{imani}"' in home
    assert f'href="/care/{maya}/report"' in home  # Maya's link allows reporting events
    assert f'href="/care/{imani}/report"' not in home  # Imani's link does not
