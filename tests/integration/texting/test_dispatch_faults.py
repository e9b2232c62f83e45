"""The dispatcher against a Twilio that fails: server errors and rate limits retried later
with jittered, capped backoff; timeouts and cut connections never resent blindly (the
provider's log is asked first); permanent refusals flag or opt out the number; messages
that cannot go end FAILED on the worklist. The real `twilio` client and the loopback double
of Twilio's API, on SQLite and PostgreSQL; the clock moves, nothing sleeps but the double."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from coordination.texting.consent import consent_history, opt_in
from coordination.texting.dispatcher import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    CONCURRENCY,
    IN_DOUBT_AFTER,
    MAX_ATTEMPTS,
    MAX_BATCHES,
    DispatchReport,
    backoff,
    dispatch_due,
)
from coordination.texting.models import (
    ConsentAction,
    ConsentHow,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
    SmsConsent,
)
from coordination.texting.twilio_gateway import TwilioGateway
from coordination.worklist.buckets import Bucket, WorklistCriteria, worklist_page
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.models import Patient
from tests.conftest import COORDINATOR_MD, PATIENT_MD, Database, user_by_login
from tests.doubles.twilio_api import Fault, TwilioApiDouble
from tests.support.sms import ACCOUNT_SID, AUTH_TOKEN, bodies_at, phone, twilio_settings

DAY = timedelta(days=1)
PAST_IN_DOUBT = IN_DOUBT_AFTER + timedelta(seconds=1)


@pytest.fixture
def double(clock: FrozenClock) -> Iterator[TwilioApiDouble]:
    with TwilioApiDouble(ACCOUNT_SID, AUTH_TOKEN, lifetime=60, clock=clock.now) as running:
        yield running


GatewayFactory = Callable[..., TwilioGateway]


@pytest.fixture
def gateway_for(db: Database, double: TwilioApiDouble) -> GatewayFactory:
    def make(*, timeout: float = 5.0, api_base: str | None = None) -> TwilioGateway:
        return TwilioGateway(twilio_settings(db.url, api_base or double.url), timeout=timeout)

    return make


@pytest.fixture
def gateway(gateway_for: GatewayFactory) -> TwilioGateway:
    return gateway_for()


@dataclass(frozen=True)
class Maya:
    id: int
    phone: str


@pytest.fixture
def maya(db: Database, clock: FrozenClock) -> Maya:
    """Maya, who agreed to texts."""
    with transaction(db.factory) as session:
        patient = session.get(Patient, user_by_login(session, PATIENT_MD).patient_id)
        assert patient is not None and patient.mobile_phone
        opt_in(
            session,
            clock=clock,
            phone=patient.mobile_phone,
            how=ConsentHow.PORTAL,
            by_user_id=None,
            wording="I agree to receive visit reminders by text.",
        )
        return Maya(patient.id, patient.mobile_phone)


def _remind(db: Database, clock: FrozenClock, maya: Maya, *, at: datetime | None = None) -> int:
    """A reminder to Maya (a coordinator's "send reminder now"), due at `at`."""
    when = at or clock.now()
    with transaction(db.factory) as session:
        message = OutboundMessage(
            to_phone=maya.phone,
            body=f"Maryland Care Connect: a reminder of your follow-up visit ({when:%b %d}).",
            purpose=MessagePurpose.REMINDER,
            patient_id=maya.id,
            rule="manual",
            status=MessageStatus.QUEUED,
            created_at=clock.now(),
            send_after=when,
            attempts=0,
        )
        session.add(message)
        session.flush()
        return message.id


def _invite(db: Database, clock: FrozenClock, index: int) -> int:
    """An invitation text (asked for by the person: no consent or caps apply)."""
    with transaction(db.factory) as session:
        message = OutboundMessage(
            to_phone=phone(index),
            body=f"Your CGT Access invitation {index}: open the link we emailed you.",
            purpose=MessagePurpose.INVITATION,
            status=MessageStatus.QUEUED,
            created_at=clock.now(),
            send_after=clock.now(),
            attempts=0,
        )
        session.add(message)
        session.flush()
        return message.id


def _row(db: Database, message_id: int) -> OutboundMessage:
    with db.factory() as session:
        row = session.get(OutboundMessage, message_id)
        assert row is not None
        return row


def _dispatch(
    db: Database,
    gateway: TwilioGateway,
    clock: FrozenClock,
    *,
    in_doubt_after: timedelta = IN_DOUBT_AFTER,
    concurrency: int = CONCURRENCY,
    max_batches: int = MAX_BATCHES,
) -> DispatchReport:
    report = DispatchReport()
    dispatch_due(
        db.factory,
        gateway=gateway,
        clock=clock,
        report=report,
        in_doubt_after=in_doubt_after,
        concurrency=concurrency,
        max_batches=max_batches,
    )
    return report


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the double never got there"
        time.sleep(0.02)


def _sent_once(db: Database, double: TwilioApiDouble, message_id: int) -> None:
    """The row was sent, and Twilio holds exactly one message for it: this one."""
    row = _row(db, message_id)
    assert row.status is MessageStatus.SENT
    [message] = [m for m in double.messages if (m.to, m.body) == (row.to_phone, row.body)]
    assert message.sid == row.provider_message_id


# --- transient errors: retried later ---------------------------------------------------


def test_a_server_error_is_retried_later_with_backoff(
    db: Database, clock: FrozenClock, double: TwilioApiDouble, gateway: TwilioGateway, maya: Maya
) -> None:
    message_id = _remind(db, clock, maya)
    double.fail_next(1)

    report = _dispatch(db, gateway, clock)
    assert (report.sent, report.retrying) == (0, 1)
    row = _row(db, message_id)
    assert row.status is MessageStatus.QUEUED and row.attempts == 1
    assert BACKOFF_BASE / 2 <= row.send_after - clock.now() <= BACKOFF_BASE
    assert row.last_error is not None
    assert "5xx" in row.last_error and f"attempt 1 of {MAX_ATTEMPTS}, retrying" in row.last_error

    # Not before its time.
    assert _dispatch(db, gateway, clock).sent == 0
    assert double.request_count == 1
    clock.set(row.send_after)
    assert _dispatch(db, gateway, clock).sent == 1
    _sent_once(db, double, message_id)
    assert _row(db, message_id).attempts == 2
    assert len(double.messages) == 1


def test_rate_limiting_is_retried_no_sooner_than_retry_after(
    db: Database, clock: FrozenClock, double: TwilioApiDouble, gateway: TwilioGateway, maya: Maya
) -> None:
    message_id = _remind(db, clock, maya)
    double.rate_limit_next(retry_after=600)

    _dispatch(db, gateway, clock)
    row = _row(db, message_id)
    assert row.status is MessageStatus.QUEUED
    assert row.send_after - clock.now() == timedelta(seconds=600)  # longer than the backoff
    assert row.last_error is not None and "429" in row.last_error

    clock.set(row.send_after - timedelta(seconds=1))
    assert _dispatch(db, gateway, clock).sent == 0
    clock.set(row.send_after)
    assert _dispatch(db, gateway, clock).sent == 1
    _sent_once(db, double, message_id)
    assert double.request_count == 2


def test_an_unreachable_provider_is_retried_later(
    db: Database,
    clock: FrozenClock,
    double: TwilioApiDouble,
    gateway_for: GatewayFactory,
    maya: Maya,
) -> None:
    """Nothing listens: the request never left, so a plain retry is safe."""
    message_id = _remind(db, clock, maya)
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    dead = f"http://127.0.0.1:{server.server_address[1]}"
    server.server_close()

    report = _dispatch(db, gateway_for(api_base=dead, timeout=1.0), clock)
    assert (report.retrying, report.in_doubt) == (1, 0)
    row = _row(db, message_id)
    assert row.status is MessageStatus.QUEUED and row.send_after > clock.now()
    assert row.last_error is not None and row.last_error.startswith("network: Cannot reach")

    clock.set(row.send_after)
    assert _dispatch(db, gateway_for(), clock).sent == 1
    _sent_once(db, double, message_id)


def test_after_the_last_attempt_the_message_fails_and_the_patient_is_unreachable(
    db: Database, clock: FrozenClock, double: TwilioApiDouble, gateway: TwilioGateway, maya: Maya
) -> None:
    message_id = _remind(db, clock, maya)
    double.fail_next(MAX_ATTEMPTS)

    def unreachable() -> set[int]:
        with db.factory() as session:
            coordinator = user_by_login(session, COORDINATOR_MD)
            page = worklist_page(
                session,
                clock=clock,
                user=coordinator,
                criteria=WorklistCriteria(bucket=Bucket.UNREACHABLE),
                language="en",
                actor=Actor.system("test"),
            )
            return {row.patient_id for row in page.rows}

    assert maya.id not in unreachable()
    waits = []
    for _attempt in range(MAX_ATTEMPTS):
        _dispatch(db, gateway, clock)
        row = _row(db, message_id)
        if row.status is MessageStatus.FAILED:
            break
        waits.append(row.send_after - clock.now())
        clock.set(row.send_after)
    row = _row(db, message_id)
    assert row.status is MessageStatus.FAILED and row.attempts == MAX_ATTEMPTS
    assert row.last_error is not None and "Twilio server error 500" in row.last_error
    assert len(waits) == MAX_ATTEMPTS - 1
    assert waits[-1] > waits[0]  # exponential, jitter or not
    assert double.messages == [] and double.request_count == MAX_ATTEMPTS
    assert maya.id in unreachable()

    # Failed for good: never tried again.
    clock.advance(DAY)
    _dispatch(db, gateway, clock)
    assert double.request_count == MAX_ATTEMPTS


def test_backoff_has_jitter_and_a_cap(
    db: Database, clock: FrozenClock, double: TwilioApiDouble, gateway: TwilioGateway
) -> None:
    first, second = _invite(db, clock, 1), _invite(db, clock, 2)
    double.fail_next(2)
    assert _dispatch(db, gateway, clock).retrying == 2
    # Two texts that failed together do not come back together.
    waits = [_row(db, mid).send_after - clock.now() for mid in (first, second)]
    assert waits[0] != waits[1]
    assert all(BACKOFF_BASE / 2 <= wait <= BACKOFF_BASE for wait in waits)

    rng = random.Random(4)
    late = [backoff(attempt, retry_after=None, rng=rng) for attempt in (12, 20, 40) * 5]
    assert all(BACKOFF_CAP / 2 <= wait <= BACKOFF_CAP for wait in late)
    assert len(set(late)) == len(late)
    # The provider's Retry-After wins, even past the cap.
    assert backoff(40, retry_after=7200, rng=rng) == timedelta(hours=2)


# --- the outcome unknown: never resent blindly -------------------------------------------


@pytest.mark.parametrize(
    ("fault", "taken"),
    [
        ("timeout", True),  # Twilio took it after the client gave up
        ("timeout", False),  # Twilio never carried it out
        ("cut", True),  # Twilio took it, and the connection broke before the answer
        ("cut", False),  # the connection broke before Twilio carried it out
    ],
)
def test_a_send_with_an_unknown_outcome_is_settled_against_twilios_log(
    db: Database,
    clock: FrozenClock,
    double: TwilioApiDouble,
    gateway_for: GatewayFactory,
    maya: Maya,
    fault: str,
    taken: bool,
) -> None:
    message_id = _remind(db, clock, maya)
    gateway = gateway_for(timeout=0.5)
    if fault == "timeout":
        double.add_faults(Fault(delay=2.0) if taken else Fault(delay=1.0, status=500))
    else:
        double.cut_next(carried_out=taken)

    report = _dispatch(db, gateway, clock)
    assert (report.sent, report.retrying, report.in_doubt) == (0, 0, 1)
    row = _row(db, message_id)
    # In doubt: neither queued again nor failed.
    assert row.status is MessageStatus.SENDING and row.attempts == 1
    assert row.last_error is not None and "outcome unknown" in row.last_error
    assert row.last_error.startswith(f"{'timeout' if fault == 'timeout' else 'network'}:")
    if taken:
        _wait_for(lambda: len(double.messages) == 1)
    else:
        time.sleep(0.6 if fault == "timeout" else 0.0)  # the double gives up on it

    # No blind retry, however often the dispatcher runs before the doubt can be settled.
    for _ in range(2):
        assert _dispatch(db, gateway, clock).sent == 0
        clock.advance(IN_DOUBT_AFTER / 3)
    assert double.request_count == 1

    clock.advance(PAST_IN_DOUBT)
    report = _dispatch(db, gateway, clock)
    if taken:
        assert (report.reconciled, report.sent) == (1, 0)
        assert _row(db, message_id).attempts == 1
    else:
        assert (report.requeued, report.sent) == (1, 1)
        assert _row(db, message_id).attempts == 2
    _sent_once(db, double, message_id)
    assert len(double.messages) == 1


def test_a_slow_twilio_never_holds_a_claim_until_it_could_be_settled(
    db: Database, clock: FrozenClock, double: TwilioApiDouble, gateway: TwilioGateway
) -> None:
    """Sends start only early in the claim's life: what a slow batch could not start goes
    back to the queue untouched, not left to look like a crash."""
    ids = [_invite(db, clock, index) for index in range(6)]
    double.latency = 0.3
    # in_doubt_after 2.4 s: sends may start within 0.6 s of the claim, one at a time.
    report = _dispatch(
        db, gateway, clock, in_doubt_after=timedelta(seconds=2.4), concurrency=1, max_batches=1
    )
    assert report.sent >= 1 and report.released >= 2
    assert report.sent + report.released == len(ids)
    released = [_row(db, mid) for mid in ids if _row(db, mid).status is MessageStatus.QUEUED]
    assert len(released) == report.released
    assert all(row.attempts == 0 and row.send_after <= clock.now() for row in released)

    double.latency = 0.0
    assert _dispatch(db, gateway, clock).sent == report.released
    for message_id in ids:
        _sent_once(db, double, message_id)
        assert _row(db, message_id).attempts == 1


# --- permanent refusals: never retried, the number flagged or opted out ----------------


@pytest.mark.parametrize("code", [21211, 21614])
def test_a_number_twilio_refuses_for_good_is_flagged(
    db: Database,
    clock: FrozenClock,
    double: TwilioApiDouble,
    gateway: TwilioGateway,
    maya: Maya,
    code: int,
) -> None:
    message_id = _remind(db, clock, maya)
    later_id = _remind(db, clock, maya, at=clock.now() + DAY)
    double.reject_next(code)

    report = _dispatch(db, gateway, clock)
    assert (report.failed, report.retrying) == (1, 0)
    row = _row(db, message_id)
    assert row.status is MessageStatus.FAILED and row.attempts == 1
    assert row.last_error == f"{code}: Twilio error {code}"
    with db.factory() as session:
        consent = session.scalar(select(SmsConsent).where(SmsConsent.phone == maya.phone))
        assert consent is not None
        assert (consent.problem_code, consent.problem_at) == (str(code), clock.now())

    clock.advance(DAY)
    assert _dispatch(db, gateway, clock).dropped == 1
    later = _row(db, later_id)
    assert later.status is MessageStatus.DROPPED
    assert later.drop_reason == f"the number is flagged ({code})"
    assert _row(db, message_id).attempts == 1  # the refused one was not tried again
    assert double.request_count == 1 and double.messages == []


def test_twilio_21610_opts_the_number_out(
    db: Database, clock: FrozenClock, double: TwilioApiDouble, gateway: TwilioGateway, maya: Maya
) -> None:
    message_id = _remind(db, clock, maya)
    later_id = _remind(db, clock, maya, at=clock.now() + DAY)
    double.opt_out(maya.phone)  # the recipient texted STOP to Twilio itself

    _dispatch(db, gateway, clock)
    row = _row(db, message_id)
    assert row.status is MessageStatus.FAILED and row.attempts == 1
    with db.factory() as session:
        last = consent_history(session, phone=maya.phone)[-1]
        assert (last.action, last.how) == (ConsentAction.OPT_OUT, ConsentHow.PROVIDER_21610)

    clock.advance(DAY)
    _dispatch(db, gateway, clock)
    later = _row(db, later_id)
    assert (later.status, later.drop_reason) == (
        MessageStatus.DROPPED,
        "the number opted out (STOP)",
    )
    assert double.request_count == 1 and bodies_at(double) == {}


def test_two_identical_texts_in_doubt_each_take_their_own_message_from_the_log(
    db: Database, clock: FrozenClock, double: TwilioApiDouble, gateway: TwilioGateway
) -> None:
    # A crash after Twilio took two texts with the same words to the same number (two
    # invitations), before either result was recorded.
    ids = []
    for _ in range(2):
        with transaction(db.factory) as session:
            message = OutboundMessage(
                to_phone=phone(7),
                body="Your CGT Access invitation: open the link we emailed you.",
                purpose=MessagePurpose.INVITATION,
                status=MessageStatus.SENDING,
                created_at=clock.now(),
                send_after=clock.now(),
                claimed_at=clock.now(),
                attempts=1,
            )
            session.add(message)
            session.flush()
            ids.append(message.id)
        gateway.send(to=phone(7), body=message.body, reference=f"outbox:{message.id}")
    assert len(double.messages) == 2

    clock.advance(PAST_IN_DOUBT)
    report = _dispatch(db, gateway, clock)

    assert (report.reconciled, report.requeued, report.sent) == (2, 0, 0)
    rows = [_row(db, message_id) for message_id in ids]
    assert {row.status for row in rows} == {MessageStatus.SENT}
    assert {row.provider_message_id for row in rows} == {m.sid for m in double.messages}
    assert len(double.messages) == 2  # nobody got a third text
