"""Tables of care coordination. For now: the message outbox, the truth about every text."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime
from core.models import enum_column


class MessageStatus(enum.StrEnum):
    QUEUED = "queued"  # waiting for its send time
    SENDING = "sending"  # claimed by a dispatcher; the outcome is not recorded yet
    SENT = "sent"  # the gateway accepted it
    FAILED = "failed"  # the gateway refused it; last_error says why


class MessagePurpose(enum.StrEnum):
    INVITATION = "invitation"
    PASSWORD_RESET = "password_reset"
    REMINDER = "reminder"
    ONE_OFF = "one_off"


class OutboundMessage(Base):
    """One text to one phone. Planned here, sent by the dispatcher after the commit."""

    __tablename__ = "outbound_messages"
    __table_args__ = (Index("ix_outbound_messages_status_send_after", "status", "send_after"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    to_phone: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(Text)
    purpose: Mapped[MessagePurpose] = mapped_column(enum_column(MessagePurpose, 16))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    status: Mapped[MessageStatus] = mapped_column(enum_column(MessageStatus, 16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    send_after: Mapped[datetime] = mapped_column(UTCDateTime())
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    provider: Mapped[str | None] = mapped_column(String(16))
    provider_message_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(300))
