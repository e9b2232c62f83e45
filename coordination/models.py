"""Tables of care coordination: the message outbox (the truth about every text), follow-up
plans and visits with their history, patients' requests and reports, outreach notes."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
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


# --- follow-up schedules -------------------------------------------------------------


class VisitStatus(enum.StrEnum):
    DUE = "due"  # planned from the protocol, no appointment yet
    SCHEDULED = "scheduled"  # an appointment time and place
    RESCHEDULED = "rescheduled"  # the appointment moved; to be confirmed again
    CONFIRMED = "confirmed"  # the patient, a caregiver or a coordinator confirmed it
    COMPLETED = "completed"  # it happened; outcomes recorded
    MISSED = "missed"  # the window closed without it (set by the nightly job)
    CANCELLED = "cancelled"  # will not happen (reason recorded)

    @property
    def is_open(self) -> bool:
        return self in OPEN_VISIT_STATUSES

    @property
    def is_final(self) -> bool:
        return self in (VisitStatus.COMPLETED, VisitStatus.MISSED, VisitStatus.CANCELLED)


OPEN_VISIT_STATUSES = (
    VisitStatus.DUE,
    VisitStatus.SCHEDULED,
    VisitStatus.RESCHEDULED,
    VisitStatus.CONFIRMED,
)


class FollowUpPlan(Base):
    """Which protocol version a patient follows, and the infusion date it is anchored on."""

    __tablename__ = "follow_up_plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), unique=True)
    therapy_code: Mapped[str] = mapped_column(String(32))
    protocol_version: Mapped[int] = mapped_column(Integer)
    anchor_date: Mapped[date] = mapped_column(Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Visit(Base):
    """One follow-up visit of one patient: its window, appointment and status."""

    __tablename__ = "visits"
    __table_args__ = (
        UniqueConstraint("patient_id", "visit_key"),
        # Shaped by the worklist's bucket counts (measured on 10,000 patients).
        Index(
            "ix_visits_status_window_end",
            "status",
            "window_end",
            "patient_id",
            "missed_acknowledged_at",
        ),
        Index("ix_visits_status_window_start", "status", "window_start"),
        Index("ix_visits_status_appointment", "status", "appointment_at"),
        Index("ix_visits_status_target", "status", "target_date", "patient_id"),
        Index("ix_visits_patient_status_target", "patient_id", "status", "target_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    visit_key: Mapped[str] = mapped_column(String(32))
    protocol_version: Mapped[int] = mapped_column(Integer)
    sequence: Mapped[int] = mapped_column(Integer)
    # Calendar dates in the patient's time zone.
    target_date: Mapped[date] = mapped_column(Date)
    window_start: Mapped[date] = mapped_column(Date)
    window_end: Mapped[date] = mapped_column(Date)
    status: Mapped[VisitStatus] = mapped_column(enum_column(VisitStatus, 16))
    appointment_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The zone the appointment was booked in: its wall-clock time stays right across DST.
    appointment_zone: Mapped[str | None] = mapped_column(String(64))
    location: Mapped[str | None] = mapped_column(String(200))
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_on: Mapped[date | None] = mapped_column(Date)
    missed_acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class VisitEvent(Base):
    """The history of a visit: every change, who made it, when and why."""

    __tablename__ = "visit_events"
    __table_args__ = (Index("ix_visit_events_action_at", "action", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor_label: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(500))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class VisitObservation(Base):
    """Which observations (in core) were recorded at which visit."""

    __tablename__ = "visit_observations"

    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id"), primary_key=True)
    observation_id: Mapped[int] = mapped_column(ForeignKey("observations.id"), primary_key=True)


class RequestStatus(enum.StrEnum):
    OPEN = "open"
    DONE = "done"


class MoveRequest(Base):
    """A patient's or caregiver's request to move a visit; it lands on the worklist."""

    __tablename__ = "move_requests"
    __table_args__ = (Index("ix_move_requests_status_created", "status", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    # None when asked by a text from a number whose owner has no portal account.
    requested_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    preferred_date: Mapped[date | None] = mapped_column(Date)
    note: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[RequestStatus] = mapped_column(enum_column(RequestStatus, 8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    handled_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class ReportKind(enum.StrEnum):
    PAIN_CRISIS = "pain_crisis"
    EMERGENCY_VISIT = "emergency_visit"
    HOSPITAL_STAY = "hospital_stay"


class ReportStatus(enum.StrEnum):
    NEW = "new"
    CONFIRMED = "confirmed"  # became an Observation (possibly corrected first)
    DISMISSED = "dismissed"  # not a real event (duplicate, mistake), reason kept


class PatientReport(Base):
    """Something a patient or caregiver reported between visits."""

    __tablename__ = "patient_reports"
    __table_args__ = (Index("ix_patient_reports_status_reported", "status", "reported_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    kind: Mapped[ReportKind] = mapped_column(enum_column(ReportKind, 16))
    occurred_on: Mapped[date] = mapped_column(Date)
    details: Mapped[str | None] = mapped_column(String(500))
    reported_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[ReportStatus] = mapped_column(enum_column(ReportStatus, 16))
    reviewed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    review_note: Mapped[str | None] = mapped_column(String(500))
    observation_id: Mapped[int | None] = mapped_column(ForeignKey("observations.id"))
    # What was first sent, when a coordinator corrected the report before confirming it.
    as_reported: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class OutreachChannel(enum.StrEnum):
    CALL = "call"
    TEXT = "text"
    LETTER = "letter"
    IN_PERSON = "in_person"


class OutreachOutcome(enum.StrEnum):
    REACHED = "reached"
    LEFT_MESSAGE = "left_message"
    NO_ANSWER = "no_answer"
    WRONG_NUMBER = "wrong_number"
    OTHER = "other"


class OutreachNote(Base):
    """A coordinator's record of trying to reach a patient."""

    __tablename__ = "outreach_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    author_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    channel: Mapped[OutreachChannel] = mapped_column(enum_column(OutreachChannel, 16))
    outcome: Mapped[OutreachOutcome] = mapped_column(enum_column(OutreachOutcome, 16))
    note: Mapped[str | None] = mapped_column(String(1000))
    next_step: Mapped[str | None] = mapped_column(String(300))


class CareAssignment(Base):
    """The coordinator who follows a patient day to day (set from the worklist)."""

    __tablename__ = "care_assignments"

    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), primary_key=True)
    coordinator_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    assigned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    assigned_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))


class CalendarFeed(Base):
    """A private calendar subscription: a secret URL a phone calendar follows (revocable)."""

    __tablename__ = "calendar_feeds"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_fetched_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class JobLock(Base):
    """A lease so that only one worker runs a scheduled job at a time, across processes."""

    __tablename__ = "job_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime())
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


# --- SMS consent, inbound texts and delivery callbacks -----------------------------------


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


class DeliveryEvent(Base):
    """One delivery-status callback; unique per (message, status) so a replay changes nothing."""

    __tablename__ = "delivery_events"
    __table_args__ = (UniqueConstraint("message_sid", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    message_sid: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
