"""The outbox: a text leaves only after the commit, exactly once, and failures are kept."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from coordination.texting.consent import opt_out
from coordination.texting.dispatcher import MAX_ATTEMPTS, dispatch_due
from coordination.texting.gateway import ConsoleGateway, GatewayError, SendResult
from coordination.texting.models import (
    ConsentHow,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
)
from coordination.texting.outbox import enqueue_message
from core.clock import FrozenClock
from core.db import transaction
from tests.conftest import Database


@dataclass
class FlakyGateway:
    """A provider that refuses the first `failures` sends (transient or permanent)."""

    failures: int
    permanent: bool = False
    name: str = "flaky"
    sent: list[str] = field(default_factory=list)

    def send(self, *, to: str, body: str, reference: str) -> SendResult:
        if self.failures > 0:
            self.failures -= 1
            raise GatewayError("provider said no", permanent=self.permanent, code="30001")
        self.sent.append(to)
        return SendResult(provider_message_id=f"SM{len(self.sent):032d}")

    def find_sent(self, *, to: str, body: str, since: datetime) -> list[str]:
        return []


def _queue(db: Database, clock: FrozenClock, *, delay: timedelta = timedelta(0)) -> int:
    with transaction(db.factory) as session:
        message = enqueue_message(
            session,
            clock=clock,
            to_phone="+12025550123",
            body="Hello from the program",
            purpose=MessagePurpose.INVITATION,
            send_after=clock.now() + delay,
        )
        return message.id


def _row(db: Database, message_id: int) -> OutboundMessage:
    with db.factory() as session:
        row = session.get(OutboundMessage, message_id)
        assert row is not None
        return row


def test_a_rolled_back_transaction_sends_nothing(db: Database, clock: FrozenClock) -> None:
    with pytest.raises(RuntimeError), transaction(db.factory) as session:
        enqueue_message(
            session,
            clock=clock,
            to_phone="+12025550123",
            body="never",
            purpose=MessagePurpose.INVITATION,
        )
        raise RuntimeError("the request failed")
    gateway = FlakyGateway(failures=0)
    assert dispatch_due(db.factory, gateway=gateway, clock=clock) == 0
    assert gateway.sent == []


def test_due_messages_are_sent_once_and_recorded(db: Database, clock: FrozenClock) -> None:
    now_id = _queue(db, clock)
    later_id = _queue(db, clock, delay=timedelta(hours=1))
    gateway = FlakyGateway(failures=0)

    assert dispatch_due(db.factory, gateway=gateway, clock=clock) == 1
    assert dispatch_due(db.factory, gateway=gateway, clock=clock) == 0  # nothing sent twice
    sent = _row(db, now_id)
    assert sent.status is MessageStatus.SENT
    assert sent.provider == "flaky" and sent.provider_message_id
    assert sent.attempts == 1
    assert _row(db, later_id).status is MessageStatus.QUEUED

    clock.advance(timedelta(hours=1))
    assert dispatch_due(db.factory, gateway=gateway, clock=clock) == 1
    assert gateway.sent == ["+12025550123", "+12025550123"]


def test_transient_failures_back_off_then_give_up(db: Database, clock: FrozenClock) -> None:
    message_id = _queue(db, clock)
    gateway = FlakyGateway(failures=MAX_ATTEMPTS)
    waits = []
    for _attempt in range(MAX_ATTEMPTS):
        assert dispatch_due(db.factory, gateway=gateway, clock=clock) == 0
        row = _row(db, message_id)
        if row.status is MessageStatus.FAILED:
            break
        assert row.status is MessageStatus.QUEUED
        waits.append(row.send_after - clock.now())
        # Not retried before its time.
        assert dispatch_due(db.factory, gateway=gateway, clock=clock) == 0
        clock.set(row.send_after)
    row = _row(db, message_id)
    assert row.status is MessageStatus.FAILED
    assert row.attempts == MAX_ATTEMPTS
    assert row.last_error is not None and "30001" in row.last_error
    assert waits == sorted(waits) and waits[0] < waits[-1]  # exponential backoff


def test_permanent_failure_is_not_retried(db: Database, clock: FrozenClock) -> None:
    message_id = _queue(db, clock)
    gateway = FlakyGateway(failures=1, permanent=True)
    dispatch_due(db.factory, gateway=gateway, clock=clock)
    clock.advance(timedelta(days=1))
    dispatch_due(db.factory, gateway=gateway, clock=clock)
    row = _row(db, message_id)
    assert row.status is MessageStatus.FAILED and row.attempts == 1
    assert gateway.sent == []


def test_console_gateway_logs_a_masked_number_and_no_body(
    db: Database, clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    _queue(db, clock)
    with caplog.at_level(logging.INFO, logger="cgt_access.sms"):
        assert dispatch_due(db.factory, gateway=ConsoleGateway(), clock=clock) == 1
    text = caplog.text
    assert "console SMS" in text
    assert "+12025550123" not in text and "5550123" not in text
    assert "Hello from the program" not in text
    with db.factory() as session:
        stored = session.scalars(select(OutboundMessage)).one()
        assert stored.body == "Hello from the program"  # the outbox keeps the message


def test_a_number_that_opted_out_gets_nothing_more(db: Database, clock: FrozenClock) -> None:
    message_id = _queue(db, clock)
    with transaction(db.factory) as session:
        opt_out(session, clock=clock, phone="+12025550123", how=ConsentHow.SMS_KEYWORD)
    gateway = FlakyGateway(failures=0)
    assert dispatch_due(db.factory, gateway=gateway, clock=clock) == 0
    assert gateway.sent == []
    row = _row(db, message_id)
    assert row.status is MessageStatus.DROPPED
    assert row.drop_reason is not None and "opted out" in row.drop_reason
