"""The demo shows texts alive: `make demo`'s seed gives its people consent and plans their
reminders so that the console page shows texts leaving at the dispatcher's first round,
and a visitor can answer as the patient (C, R, STOP, HELP) and see the platform react."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import MoveRequest, RequestStatus, Visit, VisitStatus
from coordination.followup.schedule import next_visit, visits_for_patient
from coordination.texting.consent import consent_history, consent_status, opt_in_wording
from coordination.texting.dispatcher import DispatchReport, dispatch_due
from coordination.texting.gateway import ConsoleGateway
from coordination.texting.models import (
    ConsentAction,
    ConsentHow,
    ConsentStatus,
    InboundMessage,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
)
from core.clock import FrozenClock
from core.models import Patient, State
from core.phones import display_phone
from portal.app import create_app
from portal.dev.demo import seed_demo
from tests.conftest import COORDINATOR_MD, Database, csrf_token, make_settings, user_by_login

HTMX = {"HX-Request": "true"}
EASTERN = ZoneInfo("America/New_York")
FIRST_TICK = timedelta(seconds=15)  # the dispatcher's interval: its first round


@pytest.fixture
def demo(empty_db: Database, clock: FrozenClock) -> Database:
    """The database as `make demo` seeds it, at the suite's instant (10:00 in Baltimore)."""
    assert seed_demo(make_settings(empty_db.url, demo_mode=True), clock=clock)
    return empty_db


def _app(db: Database, clock: FrozenClock, *, demo_mode: bool = True) -> FastAPI:
    return create_app(
        make_settings(db.url, demo_mode=demo_mode),
        clock=clock,
        factory=db.factory,
        gateway=ConsoleGateway(),
        run_scheduler=False,
    )


@pytest.fixture
def visitor(demo: Database, clock: FrozenClock) -> Iterator[TestClient]:
    with TestClient(_app(demo, clock), raise_server_exceptions=False, follow_redirects=False) as c:
        yield c


def _tick(db: Database, clock: FrozenClock) -> DispatchReport:
    report = DispatchReport()
    dispatch_due(db.factory, gateway=ConsoleGateway(), clock=clock, report=report)
    return report


def _patient(session: Session, given_name: str) -> Patient:
    patient = session.scalar(select(Patient).where(Patient.given_name == given_name))
    assert patient is not None and patient.mobile_phone is not None
    return patient


def _rows(session: Session, **where: object) -> list[OutboundMessage]:
    query = select(OutboundMessage).order_by(OutboundMessage.id)
    for name, value in where.items():
        query = query.where(getattr(OutboundMessage, name) == value)
    return list(session.scalars(query))


def _section(html: str, heading: str) -> str:
    """The part of the page under an <h2> heading (up to the next one)."""
    start = html.index(f"<h2>{heading}</h2>")
    end = html.find("<h2>", start + 4)
    return html[start : end if end != -1 else len(html)]


def _due_now(session: Session, now: datetime) -> list[OutboundMessage]:
    return [
        m
        for m in _rows(session, status=MessageStatus.QUEUED)
        if m.send_after <= now and m.purpose in (MessagePurpose.REMINDER, MessagePurpose.ONE_OFF)
    ]


# --- the seed ------------------------------------------------------------------------------


def test_the_seeded_people_agreed_to_texts_as_a_coordinator_recorded_it(demo: Database) -> None:
    with demo.factory() as session:
        maya, lucia = _patient(session, "Maya"), _patient(session, "Lucía")
        kiara, layla = _patient(session, "Kiara"), _patient(session, "Layla")
        coordinator = user_by_login(session, COORDINATOR_MD)
        [agreed] = consent_history(session, phone=maya.mobile_phone or "")
        assert agreed.action is ConsentAction.OPT_IN
        assert agreed.how is ConsentHow.COORDINATOR
        assert agreed.by_user_id == coordinator.id
        assert agreed.wording == opt_in_wording(language="en", program="Maryland Care Connect")
        # Each person agreed to the wording in their own language.
        [spanish] = consent_history(session, phone=lucia.mobile_phone or "")
        assert spanish.wording == opt_in_wording(language="es", program="Maryland Care Connect")

        # Kiara never agreed: nothing is planned for her number. Layla texted STOP.
        assert consent_status(session, phone=kiara.mobile_phone or "") is None
        assert _rows(session, to_phone=kiara.mobile_phone) == []
        assert consent_status(session, phone=layla.mobile_phone or "") is ConsentStatus.OPTED_OUT
        stop = consent_history(session, phone=layla.mobile_phone or "")[-1]
        assert (stop.action, stop.how) == (ConsentAction.OPT_OUT, ConsentHow.SMS_KEYWORD)
        assert _rows(session, to_phone=layla.mobile_phone) == []


def test_the_console_page_shows_texts_leaving_at_the_dispatchers_first_round(
    demo: Database, visitor: TestClient, clock: FrozenClock
) -> None:
    with demo.factory() as session:
        due = _due_now(session, clock.now() + FIRST_TICK)
        later = [m for m in _rows(session, status=MessageStatus.QUEUED) if m not in due]
    assert due, "nothing is due at the start: the demo would show no text in its first minute"
    assert later, "no reminder is planned for later in the 30 days"

    before = visitor.get("/demo/messages")
    assert before.status_code == 200
    assert f"No text sent yet: {len(due)} are due" in before.text
    assert due[0].body in _section(before.text, "Texts waiting")

    clock.advance(FIRST_TICK)
    report = _tick(demo, clock)
    assert report.sent == len(due)

    for headers in ({}, HTMX):
        page = visitor.get("/demo/messages", headers=headers)
        assert page.status_code == 200
        assert ("<html" in page.text) is not bool(headers)
        sent = _section(page.text, "Texts sent")
        for message in due:
            assert display_phone(message.to_phone) in sent
            assert message.body in sent
        assert "Reminder: " in sent
        assert later[-1].body in _section(page.text, "Texts waiting")


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    "started",
    [
        datetime(2026, 11, 27, 8, 0, tzinfo=UTC),  # 3:00 in Baltimore, 1:00 in Denver
        datetime(2026, 3, 8, 8, 30, tzinfo=UTC),  # the night the clocks go forward
        datetime(2027, 7, 4, 3, 0, tzinfo=UTC),  # 23:00 in Baltimore, 21:00 in Denver
    ],
)
def test_at_night_colorados_texts_still_leave_and_marylands_wait(
    empty_db: Database, started: datetime
) -> None:
    clock = FrozenClock(started)
    assert seed_demo(make_settings(empty_db.url, demo_mode=True), clock=clock)
    clock.advance(FIRST_TICK)
    report = _tick(empty_db, clock)

    with empty_db.factory() as session:
        hours = {
            s.code: (s.texts_from_hour, s.texts_until_hour) for s in session.scalars(select(State))
        }
        sent = _rows(session, status=MessageStatus.SENT)
        maryland = [
            m for m in _rows(session, status=MessageStatus.QUEUED) if m.to_phone.startswith("+1410")
        ]
    assert hours == {"MD": (8, 21), "CO": (0, 24)}
    assert report.sent == len(sent) >= 1
    assert all(m.to_phone.startswith("+1303") for m in sent), "Maryland is asleep"
    # Maryland's texts wait for the morning there (8:00-21:00, Baltimore's time).
    assert maryland
    assert all(8 <= m.send_after.astimezone(EASTERN).hour < 21 for m in maryland)
    assert min(m.send_after for m in maryland) - clock.now() < timedelta(hours=12)


# --- answering as the patient ----------------------------------------------------------------


def _number_with_booked_appointment(session: Session) -> tuple[Patient, Visit]:
    """A demo patient with texts whose next visit is booked and not confirmed yet."""
    texted = {m.to_phone for m in _rows(session, purpose=MessagePurpose.REMINDER)}
    for patient in session.scalars(select(Patient).order_by(Patient.id)):
        visit = next_visit(visits_for_patient(session, patient_id=patient.id))
        if (
            patient.mobile_phone in texted
            and visit is not None
            and visit.status is VisitStatus.SCHEDULED
        ):
            return patient, visit
    raise AssertionError("no demo patient has a booked appointment to confirm")


def test_answering_c_confirms_the_next_appointment(
    demo: Database, visitor: TestClient, clock: FrozenClock
) -> None:
    with demo.factory() as session:
        patient, visit = _number_with_booked_appointment(session)
    phone = patient.mobile_phone or ""
    token = csrf_token(visitor, "/demo/messages")
    page = visitor.get("/demo/messages").text
    assert f'<option value="{phone}"' in page

    sent = visitor.post(
        "/demo/messages/answer", data={"csrf_token": token, "phone": phone, "keyword": "C"}
    )
    assert sent.status_code == 303
    assert re.fullmatch(r"/demo/messages\?answered=\d+#answer", sent.headers["location"])

    shown = visitor.get(sent.headers["location"])
    assert shown.status_code == 200
    answer = shown.text[shown.text.index('id="answer"') : shown.text.index("</section>")]
    assert f"{display_phone(phone)} texted “C”" in answer
    assert "Thank you. Your appointment on " in answer
    assert "is confirmed: the patient's schedule and the coordinator's pages show it" in answer
    with demo.factory() as session:
        confirmed = session.get(Visit, visit.id)
        assert confirmed is not None and confirmed.status is VisitStatus.CONFIRMED
        reply = session.scalar(select(InboundMessage).where(InboundMessage.from_phone == phone))
        assert reply is not None and reply.message_sid.startswith("SMdemo")
        assert reply.intent == "confirm"
    received = _section(shown.text, "Texts received")
    assert display_phone(phone) in received and "Confirms the appointment" in received

    # Another browser (without the answer's cookie) does not see this answer.
    with TestClient(visitor.app, follow_redirects=False) as other:
        assert "texted “C”" not in other.get(sent.headers["location"]).text


def test_answering_r_puts_a_move_request_on_the_worklist(
    demo: Database, visitor: TestClient
) -> None:
    with demo.factory() as session:
        andre = _patient(session, "Andre")  # has a portal account: his request has an author
        visit = next_visit(visits_for_patient(session, patient_id=andre.id))
        assert visit is not None
        open_before = set(
            session.scalars(select(MoveRequest.id).where(MoveRequest.status == RequestStatus.OPEN))
        )
    token = csrf_token(visitor, "/demo/messages")

    answered = visitor.post(
        "/demo/messages/answer",
        data={"csrf_token": token, "phone": andre.mobile_phone, "keyword": "R"},
        headers=HTMX,
    )
    assert answered.status_code == 200
    assert "<html" not in answered.text
    assert answered.text.lstrip().startswith('<section id="answer"')
    assert answered.headers["HX-Trigger"] == "demo-answered"
    assert "Thank you. The care team will call you to find a new date." in answered.text
    assert "A request to move the visit is on the coordinator's worklist" in answered.text
    with demo.factory() as session:
        new = session.scalars(
            select(MoveRequest).where(
                MoveRequest.status == RequestStatus.OPEN, MoveRequest.id.not_in(open_before)
            )
        ).all()
    assert [(m.patient_id, m.visit_id) for m in new] == [(andre.id, visit.id)]


def test_stop_opts_the_number_out_and_its_due_reminder_is_then_dropped(
    demo: Database, visitor: TestClient, clock: FrozenClock
) -> None:
    with demo.factory() as session:
        due = _due_now(session, clock.now() + FIRST_TICK)[0]
        waiting = len(
            [m for m in _rows(session, status=MessageStatus.QUEUED) if m.to_phone == due.to_phone]
        )
    token = csrf_token(visitor, "/demo/messages")

    answered = visitor.post(
        "/demo/messages/answer",
        data={"csrf_token": token, "phone": due.to_phone, "keyword": "STOP"},
        headers=HTMX,
    )
    assert answered.status_code == 200
    assert "No answer from the platform: Twilio and the phone company confirm an opt-out" in (
        answered.text
    )
    assert f"Texts already waiting for it: {waiting}." in answered.text

    clock.advance(FIRST_TICK)
    report = _tick(demo, clock)
    with demo.factory() as session:
        assert consent_status(session, phone=due.to_phone) is ConsentStatus.OPTED_OUT
        dropped = session.get(OutboundMessage, due.id)
        assert dropped is not None and dropped.status is MessageStatus.DROPPED
        assert dropped.drop_reason == "the number opted out (STOP)"
    assert report.dropped >= 1
    not_sent = _section(visitor.get("/demo/messages").text, "Not sent")
    assert dropped.body in not_sent and "the number opted out (STOP)" in not_sent

    # HELP still answers an opted-out number, with the program's phone; START subscribes again.
    helped = visitor.post(
        "/demo/messages/answer",
        data={"csrf_token": token, "phone": due.to_phone, "keyword": "HELP"},
        headers=HTMX,
    )
    assert "for help call (" in helped.text and "Reply STOP to opt out." in helped.text
    started = visitor.post(
        "/demo/messages/answer",
        data={"csrf_token": token, "phone": due.to_phone, "keyword": "START"},
        headers=HTMX,
    )
    assert "The number is opted in again" in started.text
    with demo.factory() as session:
        assert consent_status(session, phone=due.to_phone) is ConsentStatus.OPTED_IN


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_answer_form_refuses_a_number_of_no_demo_text_an_empty_text_and_no_token(
    demo: Database, visitor: TestClient
) -> None:
    with demo.factory() as session:
        maya = _patient(session, "Maya")
        kiara = _patient(session, "Kiara")  # never agreed: the demo texts her no reminder
    token = csrf_token(visitor, "/demo/messages")
    for headers in ({}, HTMX):
        unknown = visitor.post(
            "/demo/messages/answer",
            data={"csrf_token": token, "phone": kiara.mobile_phone, "keyword": "C"},
            headers=headers,
        )
        assert unknown.status_code == 400
        assert "Choose one of the demo numbers." in unknown.text
        empty = visitor.post(
            "/demo/messages/answer",
            data={"csrf_token": token, "phone": maya.mobile_phone, "keyword": "", "text": " "},
            headers=headers,
        )
        assert empty.status_code == 400
        assert "Type a text, or use one of the buttons." in empty.text
    no_token = visitor.post(
        "/demo/messages/answer", data={"phone": maya.mobile_phone, "keyword": "STOP"}
    )
    assert no_token.status_code == 403
    with demo.factory() as session:
        # Nothing was acted on: the only text received is the seed's STOP of three weeks ago.
        assert [m.body for m in session.scalars(select(InboundMessage))] == ["Stop"]
        assert consent_status(session, phone=maya.mobile_phone or "") is ConsentStatus.OPTED_IN


def test_the_demo_pages_do_not_exist_outside_demo_mode(demo: Database, clock: FrozenClock) -> None:
    with demo.factory() as session:
        phone = _patient(session, "Andre").mobile_phone
    with (
        TestClient(_app(demo, clock), follow_redirects=False) as demo_browser,
        TestClient(_app(demo, clock, demo_mode=False), follow_redirects=False) as client,
    ):
        token = csrf_token(demo_browser, "/demo/messages")
        client.cookies.update(demo_browser.cookies)
        assert client.get("/demo/messages").status_code == 404
        assert client.get("/demo/messages", headers=HTMX).status_code == 404
        for data in ({"csrf_token": token, "phone": phone, "keyword": "STOP"}, {"phone": phone}):
            assert client.post("/demo/messages/answer", data=data).status_code == 404
    with demo.factory() as session:
        assert consent_status(session, phone=phone or "") is ConsentStatus.OPTED_IN
