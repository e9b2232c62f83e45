"""The outbox: planning messages inside the caller's transaction, and dispatching them
after it committed."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordination.gateway import GatewayError, SmsGateway
from coordination.models import (
    ConsentStatus,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
    SmsConsent,
)
from core.clock import Clock
from core.db import transaction
from core.phones import mask_phone

log = logging.getLogger("cgt_access.outbox")

MAX_ATTEMPTS = 5
# A row left in SENDING this long (a crash between send and record) is examined again.
IN_DOUBT_AFTER = timedelta(minutes=10)
_sqlite_dispatch_lock = threading.Lock()


def enqueue_message(
    session: Session,
    *,
    clock: Clock,
    to_phone: str,
    body: str,
    purpose: MessagePurpose,
    patient_id: int | None = None,
    user_id: int | None = None,
    send_after: datetime | None = None,
) -> OutboundMessage:
    """Plan one text. It leaves only after the caller's transaction commits."""
    now = clock.now()
    message = OutboundMessage(
        to_phone=to_phone,
        body=body,
        purpose=purpose,
        patient_id=patient_id,
        user_id=user_id,
        status=MessageStatus.QUEUED,
        created_at=now,
        send_after=send_after or now,
        attempts=0,
    )
    session.add(message)
    session.flush()
    return message


def _claim(session: Session, *, now: datetime, limit: int) -> list[OutboundMessage]:
    query = (
        select(OutboundMessage)
        .where(
            OutboundMessage.status == MessageStatus.QUEUED,
            OutboundMessage.send_after <= now,
        )
        .order_by(OutboundMessage.send_after, OutboundMessage.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Several workers may dispatch at once: each takes rows nobody else holds.
        query = query.with_for_update(skip_locked=True)
    rows = list(session.scalars(query))
    # A number that texted STOP gets nothing more, whatever was planned before.
    opted_out = set(
        session.scalars(
            select(SmsConsent.phone).where(
                SmsConsent.phone.in_({message.to_phone for message in rows}),
                SmsConsent.status == ConsentStatus.OPTED_OUT,
            )
        )
    )
    claimed = []
    for message in rows:
        if message.to_phone in opted_out:
            message.status = MessageStatus.FAILED
            message.last_error = "not sent: the number opted out (STOP)"
            continue
        message.status = MessageStatus.SENDING
        message.claimed_at = now
        message.attempts += 1
        claimed.append(message)
    session.flush()
    return claimed


def dispatch_due(
    factory: sessionmaker[Session], *, gateway: SmsGateway, clock: Clock, limit: int = 100
) -> int:
    """Send the messages whose time has come; returns how many the gateway accepted.

    Claiming commits before sending, so a second dispatcher never sends the same row, and
    each result is recorded in its own transaction right after the send.
    """
    is_sqlite = factory.kw["bind"].dialect.name == "sqlite"
    if is_sqlite and not _sqlite_dispatch_lock.acquire(blocking=False):
        return 0  # SQLite runs a single dispatcher at a time
    try:
        with transaction(factory) as session:
            claimed = [
                (m.id, m.to_phone, m.body) for m in _claim(session, now=clock.now(), limit=limit)
            ]
        sent = 0
        for message_id, to_phone, body in claimed:
            try:
                result = gateway.send(to=to_phone, body=body, reference=f"outbox:{message_id}")
            except GatewayError as error:
                _record_failure(factory, clock=clock, message_id=message_id, error=error)
                continue
            with transaction(factory) as session:
                message = session.get(OutboundMessage, message_id)
                assert message is not None
                message.status = MessageStatus.SENT
                message.sent_at = clock.now()
                message.provider = gateway.name
                message.provider_message_id = result.provider_message_id
                message.last_error = None
            sent += 1
        return sent
    finally:
        if is_sqlite:
            _sqlite_dispatch_lock.release()


def _record_failure(
    factory: sessionmaker[Session], *, clock: Clock, message_id: int, error: GatewayError
) -> None:
    with transaction(factory) as session:
        message = session.get(OutboundMessage, message_id)
        assert message is not None
        message.last_error = f"{error.code or 'error'}: {error}"[:300]
        if error.permanent or message.attempts >= MAX_ATTEMPTS:
            message.status = MessageStatus.FAILED
            log.warning(
                "message %s to %s failed for good: %s",
                message_id,
                mask_phone(message.to_phone),
                error.code,
            )
        else:
            message.status = MessageStatus.QUEUED
            # Exponential backoff: 30 s, 1 min, 2 min, 4 min...
            message.send_after = clock.now() + timedelta(seconds=30 * 2 ** (message.attempts - 1))


def recent_messages(
    session: Session, *, provider: str | None = None, limit: int = 50
) -> list[OutboundMessage]:
    """The newest messages (the console page in demo mode lists what the console 'sent')."""
    query = select(OutboundMessage).order_by(OutboundMessage.id.desc()).limit(limit)
    if provider is not None:
        query = query.where(OutboundMessage.provider == provider)
    return list(session.scalars(query))


def messages_for_patient(
    session: Session, *, patient_id: int, limit: int = 50
) -> list[OutboundMessage]:
    """The texts sent to a patient (and their caregivers about them), newest first."""
    return list(
        session.scalars(
            select(OutboundMessage)
            .where(OutboundMessage.patient_id == patient_id)
            .order_by(OutboundMessage.created_at.desc(), OutboundMessage.id.desc())
            .limit(limit)
        )
    )
