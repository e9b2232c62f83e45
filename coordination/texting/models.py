"""Tables of texting: the message outbox (the truth about every text), SMS consent per
number with its history, inbound texts and delivery callbacks."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime
from core.models import enum_column


class MessageStatus(enum.StrEnum):
    QUEUED = "queued"  # waiting for its send time
    SENDING = "sending"  # claimed by a dispatcher; the outcome is not recorded yet
    SENT = "sent"  # the gateway accepted it
    DELIVERED = "delivered"  # the carrier confirmed delivery (status callback)
    FAILED = "failed"  # the gateway refused it or it was undelivered; last_error says why
    DROPPED = "dropped"  # not sent on purpose (visit done, consent revoked...); drop_reason


# Statuses of a text that left (or may have left): what the daily and weekly caps count.
LEFT_STATUSES = (MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.DELIVERED)


class MessagePurpose(enum.StrEnum):
    INVITATION = "invitation"
    PASSWORD_RESET = "password_reset"
    REMINDER = "reminder"
    ONE_OFF = "one_off"
    REPLY = "reply"  # a coordinator's answer to a text from the inbox


class OutboundMessage(Base):
    """One text to one phone. Planned here, sent by the dispatcher after the commit.

    A planned reminder carries its visit, rule and `dedupe_key` (visit, rule, recipient
    number, and what it was planned on: the appointment, or the window): planning twice
    never makes two rows, and a moved visit gets reminders of its own."""

    __tablename__ = "outbound_messages"
    __table_args__ = (
        # The dispatcher's claim: an index range, never a scan, however many rows wait.
        Index("ix_outbound_messages_status_send_after", "status", "send_after"),
        # The caps: what left for one number lately.
        Index("ix_outbound_messages_phone_send_after", "to_phone", "send_after"),
    )

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
    visit_id: Mapped[int | None] = mapped_column(ForeignKey("visits.id"), index=True)
    caregiver_id: Mapped[int | None] = mapped_column(ForeignKey("caregivers.id"))
    rule: Mapped[str | None] = mapped_column(String(32))
    # What the reminder was planned on (the appointment instant, the window's first day):
    # when it changed by the time of sending, the reminder is dropped.
    planned_on: Mapped[str | None] = mapped_column(String(40))
    dedupe_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    language: Mapped[str | None] = mapped_column(String(2))
    drop_reason: Mapped[str | None] = mapped_column(String(200))
    # Who asked for it, when a coordinator sent it by hand.
    requested_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class ConsentStatus(enum.StrEnum):
    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"


class ConsentAction(enum.StrEnum):
    OPT_IN = "opt_in"
    OPT_OUT = "opt_out"
    HELP = "help"


class ConsentHow(enum.StrEnum):
    PORTAL = "portal"  # the person ticked the box in the portal
    COORDINATOR = "coordinator"  # a coordinator recorded a spoken or written consent
    SMS_KEYWORD = "sms_keyword"  # STOP / START / HELP texted to us
    PROVIDER_21610 = "provider_21610"  # Twilio refused a send: the number opted out (carrier)


class SmsConsent(Base):
    """Whether a phone number may be texted. Consent is per number: it covers everyone who
    shares it (a patient and a parent on one phone)."""

    __tablename__ = "sms_consents"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(16), unique=True)
    status: Mapped[ConsentStatus] = mapped_column(enum_column(ConsentStatus, 16))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # A permanent provider error (21211 invalid, 21614 not a mobile) flags the number: no
    # text goes to it until a coordinator clears the flag or the number changes.
    problem_code: Mapped[str | None] = mapped_column(String(16))
    problem_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SmsConsentEvent(Base):
    """The history of a number's consent: when, how, by whom, and the wording shown."""

    __tablename__ = "sms_consent_events"
    __table_args__ = (Index("ix_sms_consent_events_phone_at", "phone", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    action: Mapped[ConsentAction] = mapped_column(enum_column(ConsentAction, 16))
    how: Mapped[ConsentHow] = mapped_column(enum_column(ConsentHow, 16))
    by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    wording: Mapped[str | None] = mapped_column(Text)
    inbound_message_sid: Mapped[str | None] = mapped_column(String(64))


class InboundMessage(Base):
    """A text received from a phone (Twilio's inbound webhook), and what we made of it."""

    __tablename__ = "inbound_messages"
    __table_args__ = (Index("ix_inbound_messages_from_received", "from_phone", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_sid: Mapped[str] = mapped_column(String(64), unique=True)
    from_phone: Mapped[str] = mapped_column(String(32))
    to_phone: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    intent: Mapped[str] = mapped_column(String(16))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    handled_note: Mapped[str | None] = mapped_column(String(300))


class InboxItem(Base):
    """A text that a person of the care team must read: a message for the care team, or a
    reply the platform could not act on and answered "a person from the care team will
    call you". One item per patient it may be about (a number shared by several patients
    makes one each, so that each patient's coordinators see their own and nothing of the
    others'), until a coordinator marks it handled (who, when, an optional note) or
    answers it by text (`reply_message_id`)."""

    __tablename__ = "inbox_items"
    __table_args__ = (
        UniqueConstraint("inbound_message_id", "patient_id"),
        # The worklist's bucket: the items nobody handled yet, newest first.
        Index("ix_inbox_items_handled_received", "handled_at", "received_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    inbound_message_id: Mapped[int] = mapped_column(ForeignKey("inbound_messages.id"))
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    # The text's arrival, kept here so that the bucket sorts without reading the texts.
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    handled_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    handled_note: Mapped[str | None] = mapped_column(String(500))
    reply_message_id: Mapped[int | None] = mapped_column(ForeignKey("outbound_messages.id"))


class DeliveryEvent(Base):
    """One delivery-status callback; unique per (message, status) so a replay changes nothing."""

    __tablename__ = "delivery_events"
    __table_args__ = (UniqueConstraint("message_sid", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_sid: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
