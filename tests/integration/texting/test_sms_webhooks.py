"""Twilio's webhooks: signatures checked, replays ignored, malformed posts answered 400,
replies acted on (STOP, START, HELP, C, R, anything else) and delivery callbacks recorded."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import time, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from coordination.followup.models import MoveRequest, RequestStatus, Visit, VisitEvent, VisitStatus
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import (
    book_appointment,
    next_visit,
    sync_schedule,
    visits_for_patient,
)
from coordination.texting.consent import consent_history, may_text, opt_in
from coordination.texting.models import (
    ConsentAction,
    ConsentHow,
    DeliveryEvent,
    InboundMessage,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
    SmsConsent,
    SmsConsentEvent,
)
from coordination.texting.outbox import enqueue_message
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.identity.models import User
from core.models import Caregiver, Patient
from core.phones import display_phone
from portal.app import create_app
from tests.conftest import (
    CAREGIVER_MD,
    COORDINATOR_MD,
    PATIENT_MD,
    Database,
    app_for_test,
    make_settings,
    user_by_login,
)

AUTH_TOKEN = "t" * 32
BASE = "http://testserver"
_sids = itertools.count(1)


def new_sid(prefix: str = "SM") -> str:
    return f"{prefix}{next(_sids):032x}"


@pytest.fixture
def client(db: Database, clock: FrozenClock) -> Iterator[TestClient]:
    settings = make_settings(
        db.url,
        sms_backend="twilio",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number="+12025550100",
    )
    with (
        app_for_test(settings, clock=clock, factory=db.factory) as app,
        TestClient(app, raise_server_exceptions=False, follow_redirects=False) as test_client,
    ):
        yield test_client


def post(client: TestClient, path: str, params: dict[str, str], *, token: str = AUTH_TOKEN) -> str:
    """POST signed like Twilio; returns the TwiML answer (asserting 200)."""
    response = signed_post(client, path, params, token=token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    return response.text


def signed_post(
    client: TestClient, path: str, params: dict[str, str], *, token: str = AUTH_TOKEN
) -> httpx.Response:
    signature = RequestValidator(token).compute_signature(BASE + path, params)
    response: httpx.Response = client.post(
        path, data=params, headers={"X-Twilio-Signature": signature}
    )
    return response


def inbound(client: TestClient, phone: str, body: str, sid: str | None = None) -> str:
    params = {
        "MessageSid": sid or new_sid(),
        "AccountSid": "AC" + "0" * 32,
        "From": phone,
        "To": "+12025550100",
        "Body": body,
        "NumMedia": "0",
    }
    return post(client, "/sms/inbound", params)


def maya(session: Session) -> Patient:
    user = user_by_login(session, PATIENT_MD)
    patient = session.get(Patient, user.patient_id)
    assert patient is not None and patient.mobile_phone
    return patient


def subscribed_phone(db: Database, clock: FrozenClock) -> str:
    with transaction(db.factory) as session:
        phone = maya(session).mobile_phone
        assert phone
        opt_in(
            session,
            clock=clock,
            phone=phone,
            how=ConsentHow.PORTAL,
            by_user_id=user_by_login(session, PATIENT_MD).id,
            wording="I agree to receive visit reminders by text.",
        )
    return phone


def count(session: Session, model: type[object]) -> int:
    return session.scalar(select(func.count()).select_from(model)) or 0


# --- signatures, replays, malformed posts -----------------------------------------------


@pytest.mark.parametrize("path", ["/sms/inbound", "/sms/status"])
def test_a_forged_or_missing_signature_is_refused(
    client: TestClient, db: Database, path: str
) -> None:
    params = {"MessageSid": new_sid(), "From": "+14105550110", "Body": "STOP"}
    params |= {"MessageStatus": "delivered"}
    assert signed_post(client, path, params, token="f" * 32).status_code == 403
    assert client.post(path, data=params).status_code == 403
    good = RequestValidator(AUTH_TOKEN).compute_signature(BASE + path, params)
    tampered = {**params, "Body": "hello"}
    response = client.post(path, data=tampered, headers={"X-Twilio-Signature": good})
    assert response.status_code == 403
    with db.factory() as session:
        assert count(session, InboundMessage) == 0
        assert count(session, DeliveryEvent) == 0


def test_without_an_auth_token_every_webhook_is_refused(db: Database, clock: FrozenClock) -> None:
    app = create_app(make_settings(db.url), clock=clock, factory=db.factory, run_scheduler=False)
    params = {"MessageSid": new_sid(), "From": "+14105550110", "Body": "C"}
    with TestClient(app, raise_server_exceptions=False) as console:
        assert signed_post(console, "/sms/inbound", params).status_code == 403


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/sms/inbound", {"From": "+14105550110", "Body": "C"}),
        ("/sms/inbound", {"MessageSid": "SM1", "Body": "C"}),
        ("/sms/inbound", {}),
        ("/sms/status", {"MessageSid": "SM1"}),
        ("/sms/status", {"MessageStatus": "delivered"}),
    ],
)
def test_a_malformed_post_is_answered_400(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    response = signed_post(client, path, params)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")


NOT_PHONE_NUMBERS = ["hello", "STOP", "+1 (202) 555-0123 ext", "+1٢٠٢5550123", "+12²", "+", "1202"]


def consent_rows_about(session: Session, phone: str) -> int:
    """Consent rows and history events stored for `phone`."""
    rows = select(func.count()).select_from(SmsConsent).where(SmsConsent.phone == phone)
    events = select(func.count()).select_from(SmsConsentEvent)
    return (session.scalar(rows) or 0) + (
        session.scalar(events.where(SmsConsentEvent.phone == phone)) or 0
    )


@pytest.mark.parametrize("sender", NOT_PHONE_NUMBERS)
def test_a_signed_inbound_text_from_something_not_a_phone_number_is_refused_and_stores_nothing(
    client: TestClient, db: Database, sender: str
) -> None:
    """Twilio writes senders in E.164; anything else (a forged or broken post that still
    carries a good signature) must not opt a made-up "number" out, nor be kept."""
    params = {"MessageSid": new_sid(), "From": sender, "To": "+12025550100", "Body": "STOP"}
    response = signed_post(client, "/sms/inbound", params)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/plain")
    assert "From is not a phone number" in response.text
    with db.factory() as session:
        assert count(session, InboundMessage) == 0
        assert consent_rows_about(session, sender) == 0


def test_a_delivery_callback_opting_out_something_not_a_phone_number_is_refused(
    client: TestClient, db: Database
) -> None:
    params = {"MessageSid": new_sid(), "MessageStatus": "failed", "ErrorCode": "21610"}
    response = signed_post(client, "/sms/status", params | {"To": "not-a-number"})
    assert response.status_code == 400
    assert "To is not a phone number" in response.text
    with db.factory() as session:
        assert count(session, DeliveryEvent) == 0
        assert consent_rows_about(session, "not-a-number") == 0


def test_a_replayed_inbound_message_changes_nothing(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = subscribed_phone(db, clock)
    sid = new_sid()
    assert "person from the care team will read" in inbound(client, phone, "Hi there", sid)
    with db.factory() as session:
        before = (count(session, InboundMessage), len(consent_history(session, phone=phone)))
    assert inbound(client, phone, "Hi there", sid).endswith("<Response/>")
    assert inbound(client, phone, "STOP", sid).endswith("<Response/>")
    with db.factory() as session:
        after = (count(session, InboundMessage), len(consent_history(session, phone=phone)))
        assert after == before
        assert may_text(session, phone=phone)


# --- consent keywords -------------------------------------------------------------------


@pytest.mark.parametrize("body", ["STOP", "  stop. ", "Unsubscribe!", "please stop texting me"])
def test_stop_opts_the_number_out_for_everyone_sharing_it(
    client: TestClient, db: Database, clock: FrozenClock, body: str
) -> None:
    phone = subscribed_phone(db, clock)
    with transaction(db.factory) as session:
        denise = user_by_login(session, CAREGIVER_MD)
        caregiver = session.get(Caregiver, denise.caregiver_id)
        assert caregiver is not None
        caregiver.mobile_phone = phone  # mother and daughter share the phone
    sid = new_sid()
    assert inbound(client, phone, body, sid).endswith("<Response/>")  # Twilio confirms STOP
    with db.factory() as session:
        assert not may_text(session, phone=phone)
        last = consent_history(session, phone=phone)[-1]
        assert (last.action, last.how) == (ConsentAction.OPT_OUT, ConsentHow.SMS_KEYWORD)
        assert last.inbound_message_sid == sid
        stored = session.scalar(select(InboundMessage).where(InboundMessage.message_sid == sid))
        assert stored is not None and stored.intent == "stop"
    # From now on nothing is answered but START / HELP, and C confirms nothing.
    assert inbound(client, phone, "C").endswith("<Response/>")
    with db.factory() as session:
        assert not may_text(session, phone=phone)


@pytest.mark.parametrize("body", ["START", "unstop", "Yes"])
def test_start_subscribes_the_number_again(
    client: TestClient, db: Database, clock: FrozenClock, body: str
) -> None:
    phone = subscribed_phone(db, clock)
    inbound(client, phone, "STOP")
    answer = inbound(client, phone, body)
    assert "reminders again" in answer and "STOP" in answer
    with db.factory() as session:
        assert may_text(session, phone=phone)
        last = consent_history(session, phone=phone)[-1]
        assert (last.action, last.how) == (ConsentAction.OPT_IN, ConsentHow.SMS_KEYWORD)
        assert last.wording and "reminders again" in last.wording


def test_help_names_the_program_and_its_phone_and_nothing_private(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = subscribed_phone(db, clock)
    answer = inbound(client, phone, "HELP")
    with db.factory() as session:
        patient = maya(session)
        state = patient.state
        private = [
            patient.given_name,
            patient.family_name,
            patient.therapy.brand_name,
            patient.therapy.generic_name,
            patient.center.name,
        ]
        assert state.program_name in answer
        assert display_phone(state.program_phone) in answer
        assert consent_history(session, phone=phone)[-1].action is ConsentAction.HELP
    assert "Msg &amp; data rates may apply" in answer
    assert "Reply STOP to opt out" in answer
    for word in [*private, "sickle", "gene", "hemoglobin", "Hb"]:
        assert word.lower() not in answer.lower()


def test_help_from_an_unknown_number_uses_the_platform_program(client: TestClient) -> None:
    answer = inbound(client, "+12025550199", "help")
    assert "CGT Access follow-up" in answer and "Reply STOP to opt out" in answer


# --- replies about visits --------------------------------------------------------------


def _book_next(db: Database, clock: FrozenClock) -> None:
    """Give Maya's next open visit an appointment the day after tomorrow."""
    with transaction(db.factory) as session:
        patient = maya(session)
        coordinator = user_by_login(session, COORDINATOR_MD)
        actor = Actor(user_id=coordinator.id, label="coordinator", role="coordinator")
        sync_schedule(
            session, clock=clock, actor=actor, library=shipped_protocols(), patient=patient
        )
        visit = next_visit(visits_for_patient(session, patient_id=patient.id))
        assert visit is not None
        book_appointment(
            session,
            clock=clock,
            actor=actor,
            visit=visit,
            patient=patient,
            day=clock.now().date() + timedelta(days=2),
            at=time(9, 30),
            location="Harbor clinic",
            # An appointment in two days, wherever the next visit's window is.
            reason="an appointment in two days",
            outside_window_confirmed=True,
        )


def test_c_confirms_the_next_booked_visit(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = subscribed_phone(db, clock)
    _book_next(db, clock)
    with db.factory() as session:
        patient_id = maya(session).id
        booked = [
            visit
            for visit in visits_for_patient(session, patient_id=patient_id)
            if visit.status in (VisitStatus.SCHEDULED, VisitStatus.RESCHEDULED)
            and visit.appointment_at is not None
            and visit.appointment_at > clock.now()
        ]
        target = min(booked, key=lambda visit: visit.appointment_at or clock.now()).id
    answer = inbound(client, phone, "C")
    assert "is confirmed" in answer and "9:30 AM" in answer
    with db.factory() as session:
        visit = session.get(Visit, target)
        assert visit is not None and visit.status is VisitStatus.CONFIRMED
        assert visit.confirmed_at == clock.now()
        stored = session.scalars(select(InboundMessage)).one()
        assert (stored.intent, stored.patient_id) == ("confirm", patient_id)


def test_c_with_nothing_booked_promises_a_call(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = subscribed_phone(db, clock)
    with transaction(db.factory) as session:
        for visit in visits_for_patient(session, patient_id=maya(session).id):
            if visit.status in (VisitStatus.SCHEDULED, VisitStatus.RESCHEDULED):
                visit.status = VisitStatus.DUE
    assert "will call you" in inbound(client, phone, "1")


def test_r_asks_the_care_team_to_move_the_next_visit(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = subscribed_phone(db, clock)
    _book_next(db, clock)
    answer = inbound(client, phone, "R")
    assert "care team will call" in answer
    with db.factory() as session:
        patient = maya(session)
        visit = next_visit(visits_for_patient(session, patient_id=patient.id))
        assert visit is not None
        request = session.scalars(select(MoveRequest)).one()
        assert (request.visit_id, request.status) == (visit.id, RequestStatus.OPEN)
        assert request.requested_by_user_id == user_by_login(session, PATIENT_MD).id


def test_c_again_for_a_confirmed_appointment_answers_it_is_confirmed(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = subscribed_phone(db, clock)
    _book_next(db, clock)
    assert "is confirmed" in inbound(client, phone, "C")
    # The second reminder says "reply C" again: the answer is the same, nothing changes.
    assert "is confirmed" in inbound(client, phone, "C")
    with db.factory() as session:
        confirmations = session.scalars(
            select(VisitEvent).where(VisitEvent.action == "confirm")
        ).all()
        assert len(confirmations) == 1


def test_r_from_a_patient_without_a_portal_account_reaches_the_worklist(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    with transaction(db.factory) as session:
        with_account = select(User.patient_id).where(User.patient_id.is_not(None))
        patient = session.scalars(
            select(Patient)
            .where(Patient.id.not_in(with_account), Patient.mobile_phone.is_not(None))
            .order_by(Patient.id)
        ).first()
        assert patient is not None and patient.mobile_phone
        phone = patient.mobile_phone
        opt_in(
            session,
            clock=clock,
            phone=phone,
            how=ConsentHow.COORDINATOR,
            by_user_id=user_by_login(session, COORDINATOR_MD).id,
            wording="I agree to receive visit reminders by text.",
        )
        coordinator = user_by_login(session, COORDINATOR_MD)
        sync_schedule(
            session,
            clock=clock,
            actor=Actor(user_id=coordinator.id, label="coordinator", role="coordinator"),
            library=shipped_protocols(),
            patient=patient,
        )
        patient_id, spanish = patient.id, patient.preferred_language.value == "es"
    answer = inbound(client, phone, "R")
    assert ("le llamara" if spanish else "care team will call") in answer
    with db.factory() as session:
        request = session.scalars(
            select(MoveRequest).where(MoveRequest.patient_id == patient_id)
        ).one()
        assert request.status is RequestStatus.OPEN
        assert request.requested_by_user_id is None
        assert request.note == "Asked by text message."


def test_anything_else_is_stored_with_an_automatic_answer(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = subscribed_phone(db, clock)
    answer = inbound(client, phone, "Can my mom come with me <3 & sit in?")
    assert "person from the care team will read" in answer
    with db.factory() as session:
        stored = session.scalars(select(InboundMessage)).one()
        assert stored.body == "Can my mom come with me <3 & sit in?"
        assert (stored.intent, stored.patient_id) == ("other", maya(session).id)
        assert stored.from_phone == phone


# --- delivery callbacks ----------------------------------------------------------------


def _sent_message(db: Database, clock: FrozenClock, phone: str) -> tuple[int, str]:
    sid = new_sid()
    with transaction(db.factory) as session:
        message = enqueue_message(
            session, clock=clock, to_phone=phone, body="Reminder", purpose=MessagePurpose.REMINDER
        )
        message.status = MessageStatus.SENT
        message.provider = "twilio"
        message.provider_message_id = sid
        return message.id, sid


def status_callback(client: TestClient, sid: str, status: str, code: str | None = None) -> None:
    params = {"MessageSid": sid, "MessageStatus": status, "To": "+14105550110"}
    if code is not None:
        params["ErrorCode"] = code
    assert post(client, "/sms/status", params).endswith("<Response/>")


def test_undelivered_marks_the_message_failed_and_a_replay_changes_nothing(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = subscribed_phone(db, clock)
    message_id, sid = _sent_message(db, clock, phone)
    status_callback(client, sid, "sent")
    with db.factory() as session:
        message = session.get(OutboundMessage, message_id)
        assert message is not None and message.status is MessageStatus.SENT
    status_callback(client, sid, "undelivered", "30003")
    clock.advance(timedelta(minutes=5))
    status_callback(client, sid, "undelivered", "30003")
    with db.factory() as session:
        message = session.get(OutboundMessage, message_id)
        assert message is not None
        assert (message.status, message.last_error) == (MessageStatus.FAILED, "twilio 30003")
        events = session.scalars(select(DeliveryEvent).order_by(DeliveryEvent.id)).all()
        assert [(e.status, e.error_code) for e in events] == [
            ("sent", None),
            ("undelivered", "30003"),
        ]
        assert may_text(session, phone=phone)


def test_error_21610_opts_the_number_out(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = subscribed_phone(db, clock)
    message_id, sid = _sent_message(db, clock, phone)
    status_callback(client, sid, "failed", "21610")
    with db.factory() as session:
        assert not may_text(session, phone=phone)
        last = consent_history(session, phone=phone)[-1]
        assert (last.action, last.how) == (ConsentAction.OPT_OUT, ConsentHow.PROVIDER_21610)
        message = session.get(OutboundMessage, message_id)
        assert message is not None and message.status is MessageStatus.FAILED
