"""Tables of follow-up: plans and visits with their history, the observations recorded at a
visit, patients' requests and reports between visits, outreach notes, calendar feeds."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime
from core.models import enum_column


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
