"""The outbox: planning a message inside the caller's transaction (the dispatcher sends it
after the commit), and reading what was sent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.texting.models import MessagePurpose, MessageStatus, OutboundMessage
from core.clock import Clock


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
