"""Tables of travel support: each state's policy versions, the requests for a visit, what
was booked for them, and their history.

Money is in integer cents. Nothing here is ever deleted: a policy version is replaced by a
newer one (the old one stays, for the requests judged under it), a request is declined or
arranged, an arrangement flagged to review when its visit moves."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime
from core.models import enum_column


class TravelKind(enum.StrEnum):
    """What a state may fund, in the order the pages list them."""

    MILEAGE = "mileage"  # driving one's own car, paid per mile
    RIDE = "ride"  # a taxi, a ride service or a bus ticket booked for the patient
    FLIGHT = "flight"
    LODGING = "lodging"  # nights near the treatment center
    MEALS = "meals"  # a per-diem per person and day away
    CHILDCARE = "childcare"  # for the children left at home
    ESCORT = "escort"  # a parent or companion travelling with the patient


TRANSPORT_KINDS = (TravelKind.MILEAGE, TravelKind.RIDE, TravelKind.FLIGHT)


class TravelStatus(enum.StrEnum):
    REQUESTED = "requested"  # asked, nobody decided yet
    APPROVED = "approved"  # a coordinator agreed; nothing booked yet
    DECLINED = "declined"  # refused, with a reason the patient reads
    ARRANGED = "arranged"  # booked: the patient sees what and when


OPEN_TRAVEL_STATUSES = (TravelStatus.REQUESTED, TravelStatus.APPROVED)


class TravelPolicy(Base):
    """One version of a state's travel policy, in force from `effective_from` until the next
    version's first day. Versions are never changed: the version in force on a visit's day
    is the one that judges its requests."""

    __tablename__ = "travel_policies"
    __table_args__ = (Index("ix_travel_policies_state_from", "state_id", "effective_from"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    state_id: Mapped[int] = mapped_column(ForeignKey("states.id"))
    effective_from: Mapped[date] = mapped_column(Date)
    # The TravelKind values the state funds under this version.
    funded_kinds: Mapped[list[str]] = mapped_column(JSON)
    mileage_rate_cents: Mapped[int] = mapped_column(Integer)  # per mile driven
    max_lodging_nights: Mapped[int] = mapped_column(Integer)  # per visit
    lodging_night_cap_cents: Mapped[int] = mapped_column(Integer)  # per night
    meal_per_diem_cents: Mapped[int] = mapped_column(Integer)  # per person and day away
    max_travellers: Mapped[int] = mapped_column(Integer)  # the patient and escorts
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    def funds(self, kind: TravelKind) -> bool:
        return kind.value in self.funded_kinds


class TravelRequest(Base):
    """A patient's or caregiver's request for support to reach one booked visit."""

    __tablename__ = "travel_requests"
    __table_args__ = (
        # The worklist bucket and the state/month figures read by status and creation.
        Index("ix_travel_requests_status_created", "status", "created_at"),
        Index("ix_travel_requests_state_created", "state_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    visit_id: Mapped[int] = mapped_column(ForeignKey("visits.id"), index=True)
    # The patient's state when asked (the program that pays), for per-state figures.
    state_id: Mapped[int] = mapped_column(ForeignKey("states.id"))
    policy_id: Mapped[int] = mapped_column(ForeignKey("travel_policies.id"))
    requested_by_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kinds: Mapped[list[str]] = mapped_column(JSON)
    depart_on: Mapped[date] = mapped_column(Date)
    return_on: Mapped[date] = mapped_column(Date)
    travellers: Mapped[int] = mapped_column(Integer)
    needs: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[TravelStatus] = mapped_column(enum_column(TravelStatus, 16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decline_reason: Mapped[str | None] = mapped_column(String(500))
    # Set when the visit moved or was cancelled after the request: a coordinator reviews.
    review_needed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    review_reason: Mapped[str | None] = mapped_column(String(16))  # "moved" or "cancelled"
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    @property
    def nights(self) -> int:
        return (self.return_on - self.depart_on).days

    def asked_for(self, kind: TravelKind) -> bool:
        return kind.value in self.kinds


class TravelArrangement(Base):
    """What a coordinator booked for a request: its kind, provider or summary, dates, cost."""

    __tablename__ = "travel_arrangements"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("travel_requests.id"), index=True)
    kind: Mapped[TravelKind] = mapped_column(enum_column(TravelKind, 16))
    summary: Mapped[str] = mapped_column(String(200))
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date] = mapped_column(Date)
    miles: Mapped[int | None] = mapped_column(Integer)  # mileage only
    cost_cents: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    # Its visit moved or was cancelled after it was booked: to review.
    review_needed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class TravelEvent(Base):
    """The history of a request: every change, who made it and when."""

    __tablename__ = "travel_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("travel_requests.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    actor_label: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
