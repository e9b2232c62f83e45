"""The whole loop with the real `twilio` client and the loopback double of Twilio's API:
plan reminders, dispatch them, the delivered callback, a reply C that confirms, and a STOP
that silences the number for everyone who shares it. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import time, timedelta
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from twilio.request_validator import RequestValidator

from coordination.followup.models import Visit, VisitStatus
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import (
    book_appointment,
    next_visit,
    sync_schedule,
    visits_for_patient,
)
from coordination.texting.consent import consent_history, opt_in
from coordination.texting.dispatcher import DispatchReport, dispatch_due
from coordination.texting.models import (
    ConsentAction,
    ConsentHow,
    DeliveryEvent,
    MessageStatus,
    OutboundMessage,
)
from coordination.texting.planning import plan_reminders
from coordination.texting.twilio_gateway import TwilioGateway
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.models import Caregiver, CaregiverLink, Patient
from portal.app import create_app
from tests.conftest import CAREGIVER_MD, COORDINATOR_MD, PATIENT_MD, Database, user_by_login
from tests.doubles.twilio_api import TwilioApiDouble
from tests.support.sms import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM,
    PUBLIC_BASE_URL,
    bodies_at,
    twilio_settings,
)

DAY = timedelta(days=1)


@pytest.fixture
def double(clock: FrozenClock) -> Iterator[TwilioApiDouble]:
    # The double stamps messages with the test's clock, as Twilio would with the real one.
    with TwilioApiDouble(ACCOUNT_SID, AUTH_TOKEN, lifetime=60, clock=clock.now) as running:
        yield running


@pytest.fixture
def gateway(db: Database, double: TwilioApiDouble) -> TwilioGateway:
    return TwilioGateway(twilio_settings(db.url, double.url), timeout=5.0)


@pytest.fixture
def client(db: Database, clock: FrozenClock, gateway: TwilioGateway) -> Iterator[TestClient]:
    app = create_app(
        twilio_settings(db.url, gateway.http_client.api_base),
        clock=clock,
        factory=db.factory,
        gateway=gateway,
        run_scheduler=False,
    )
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as test_client:
        yield test_client


@dataclass(frozen=True)
class World:
    maya_id: int
    maya_phone: str
    denise_phone: str
    visit_id: int  # Maya's booked visit
    nephew_id: int | None  # the other patient Denise gets reminders for (shared phone only)


def _coordinator(session: Session) -> Actor:
    user = user_by_login(session, COORDINATOR_MD)
    return Actor(user_id=user.id, label="coordinator", role="coordinator")


def _book(session: Session, clock: FrozenClock, patient: Patient, days: int) -> Visit:
    actor = _coordinator(session)
    sync_schedule(session, clock=clock, actor=actor, library=shipped_protocols(), patient=patient)
    visit = next_visit(visits_for_patient(session, patient_id=patient.id))
    assert visit is not None
    book_appointment(
        session,
        clock=clock,
        actor=actor,
        visit=visit,
        patient=patient,
        day=clock.now().date() + timedelta(days=days),
        at=time(9, 30),
        location="Harbor clinic",
        # An appointment in `days` days, wherever the next visit's window is.
        reason="an appointment soon",
        outside_window_confirmed=True,
    )
    return visit


def _world(db: Database, clock: FrozenClock, *, shared: bool) -> World:
    """Maya has an appointment the day after tomorrow; her mother Denise gets her reminders.

    Shared: Denise uses Maya's phone, and also gets the reminders of another patient she
    cares for (booked five days ahead): one number, the texts of two people."""
    with transaction(db.factory) as session:
        maya = session.get(Patient, user_by_login(session, PATIENT_MD).patient_id)
        denise = session.get(Caregiver, user_by_login(session, CAREGIVER_MD).caregiver_id)
        assert maya is not None and maya.mobile_phone and denise is not None
        visit = _book(session, clock, maya, days=2)
        nephew_id = None
        if shared:
            denise.mobile_phone = maya.mobile_phone
            link = session.scalars(
                select(CaregiverLink).where(
                    CaregiverLink.caregiver_id == denise.id, CaregiverLink.patient_id != maya.id
                )
            ).first()
            assert link is not None
            link.can_receive_reminders = True
            nephew = session.get(Patient, link.patient_id)
            assert nephew is not None
            _book(session, clock, nephew, days=5)
            nephew_id = nephew.id
        assert denise.mobile_phone
        for number in {maya.mobile_phone, denise.mobile_phone}:
            opt_in(
                session,
                clock=clock,
                phone=number,
                how=ConsentHow.PORTAL,
                by_user_id=None,
                wording="I agree to receive visit reminders by text.",
            )
        return World(maya.id, maya.mobile_phone, denise.mobile_phone, visit.id, nephew_id)


def _rows(db: Database) -> list[OutboundMessage]:
    with db.factory() as session:
        return list(session.scalars(select(OutboundMessage).order_by(OutboundMessage.id)))


def _dispatch(db: Database, gateway: TwilioGateway, clock: FrozenClock) -> DispatchReport:
    report = DispatchReport()
    dispatch_due(db.factory, gateway=gateway, clock=clock, report=report)
    return report


def _signed_post(client: TestClient, url: str, params: dict[str, str]) -> str:
    signature = RequestValidator(AUTH_TOKEN).compute_signature(url, params)
    response: httpx.Response = client.post(
        urlsplit(url).path, data=params, headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 200, response.text
    return response.text


def _reply(client: TestClient, phone: str, body: str, sid: str) -> str:
    params = {
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": phone,
        "To": FROM,
        "Body": body,
        "NumMedia": "0",
    }
    return _signed_post(client, PUBLIC_BASE_URL + "/sms/inbound", params)


@pytest.mark.parametrize("shared", [False, True], ids=["own-phones", "shared-phone"])
def test_plan_send_deliver_confirm_and_stop(
    db: Database,
    clock: FrozenClock,
    double: TwilioApiDouble,
    gateway: TwilioGateway,
    client: TestClient,
    shared: bool,
) -> None:
    world = _world(db, clock, shared=shared)
    with transaction(db.factory) as session:
        plan_reminders(session, clock=clock)

    # -- dispatch: what is due now reaches Twilio, once, from our number, with a callback
    report = _dispatch(db, gateway, clock)
    due_now = [row for row in _rows(db) if row.send_after <= clock.now()]
    # The appointment is in two days: the 3-day reminder, late, goes now; to Maya, and to
    # Denise unless she shares Maya's phone (one text per number).
    assert {(row.to_phone, row.caregiver_id is not None) for row in due_now} == (
        {(world.maya_phone, False)}
        if shared
        else {(world.maya_phone, False), (world.denise_phone, True)}
    )
    assert report.sent == len(due_now)
    assert bodies_at(double) == {(row.to_phone, row.body): 1 for row in due_now}
    for message in double.messages:
        assert message.from_ == FROM
        assert message.status_callback == PUBLIC_BASE_URL + "/sms/status"
    for row in due_now:
        assert row.status is MessageStatus.SENT and row.attempts == 1
        assert row.provider == "twilio"
        assert row.provider_message_id in {message.sid for message in double.messages}
    # A second tick sends nothing more.
    assert _dispatch(db, gateway, clock).sent == 0
    assert len(double.messages) == len(due_now)

    # -- Twilio's signed callback says delivered
    for row in due_now:
        assert row.provider_message_id is not None
        url, params = double.status_callback_params(row.provider_message_id, "delivered")
        assert _signed_post(client, url, params).endswith("<Response/>")
    with db.factory() as session:
        for row in due_now:
            stored = session.get(OutboundMessage, row.id)
            assert stored is not None and stored.status is MessageStatus.DELIVERED
        events = session.scalars(select(DeliveryEvent)).all()
        assert sorted(e.message_sid for e in events) == sorted(
            str(row.provider_message_id) for row in due_now
        )

    # -- Maya answers C: the appointment is confirmed
    answer = _reply(client, world.maya_phone, "C", "SM" + "c" * 32)
    assert "is confirmed" in answer and "9:30 AM" in answer
    with db.factory() as session:
        visit = session.get(Visit, world.visit_id)
        assert visit is not None and visit.status is VisitStatus.CONFIRMED

    # -- STOP from Maya's phone: nothing more to that number, whoever the text is for
    assert _reply(client, world.maya_phone, "STOP", "SM" + "5" * 32).endswith("<Response/>")
    with db.factory() as session:
        last = consent_history(session, phone=world.maya_phone)[-1]
        assert (last.action, last.how) == (ConsentAction.OPT_OUT, ConsentHow.SMS_KEYWORD)
    at_stop = len(double.messages)
    for _day in range(3):
        clock.advance(DAY)
        _dispatch(db, gateway, clock)

    rows = _rows(db)
    to_maya = [row for row in rows if row.to_phone == world.maya_phone]
    later = [row for row in to_maya if row.send_after > due_now[0].send_after]
    assert later, "reminders were planned after the first one"
    for row in later:
        # Dropped with the reason, or (over the caps) never meant to go.
        assert row.status is MessageStatus.DROPPED
        assert row.drop_reason is not None
    assert any(row.drop_reason == "the number opted out (STOP)" for row in later)
    if shared:
        # Denise's reminders about the other patient she cares for went to that number too.
        for_nephew = [row for row in to_maya if row.patient_id == world.nephew_id]
        assert for_nephew and all(row.caregiver_id is not None for row in for_nephew)
        assert any(row.drop_reason == "the number opted out (STOP)" for row in for_nephew)
        assert len(double.messages) == at_stop == 1
    else:
        # Denise's own phone did not say STOP: her one-day reminder still went, once.
        [to_denise] = [
            message for message in double.messages[at_stop:] if message.to == world.denise_phone
        ]
        assert "person you care for" in to_denise.body
        assert len(double.messages) == at_stop + 1
    assert all(message.to != world.maya_phone for message in double.messages[at_stop:])
    # Every message Twilio holds is one outbox row's, and each row went at most once.
    went = [row for row in rows if row.provider_message_id is not None]
    assert sorted(str(row.provider_message_id) for row in went) == sorted(
        message.sid for message in double.messages
    )
    assert {message.sid: (message.to, message.body) for message in double.messages} == {
        str(row.provider_message_id): (row.to_phone, row.body) for row in went
    }
