"""What the patient's record (staff) shows of travel support: each request with its visit,
status and bookings, and each step of its history for the timeline.

Both reads take a fixed number of queries whatever the patient's history. The timeline's
steps carry no cost and no free-text need: the record page shows them to whoever may open
the record; costs and needs stay on the request's own page."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordination.followup.models import Visit
from coordination.travel.models import (
    TravelArrangement,
    TravelEvent,
    TravelKind,
    TravelRequest,
)
from core.identity.models import User


@dataclass(frozen=True)
class RecordTravel:
    """One travel request as the record page lists it."""

    request: TravelRequest
    visit: Visit
    booked: int  # bookings standing
    cancelled: int  # bookings cancelled (their cost kept on the request's page)

    @property
    def to_review(self) -> bool:
        return self.request.review_needed_at is not None


def travel_for_record(session: Session, *, patient_id: int) -> list[RecordTravel]:
    """The patient's travel requests, newest first, with their visit and how many bookings
    stand or were cancelled. Two queries."""
    rows = session.execute(
        select(TravelRequest, Visit)
        .join(Visit, Visit.id == TravelRequest.visit_id)
        .where(TravelRequest.patient_id == patient_id)
        .order_by(TravelRequest.created_at.desc(), TravelRequest.id.desc())
    ).all()
    if not rows:
        return []
    counts: dict[tuple[int, bool], int] = {}
    for request_id, cancelled, count in session.execute(
        select(
            TravelArrangement.request_id,
            TravelArrangement.cancelled_at.is_not(None),
            func.count(),
        )
        .where(TravelArrangement.request_id.in_([request.id for request, _visit in rows]))
        .group_by(TravelArrangement.request_id, TravelArrangement.cancelled_at.is_not(None))
    ):
        counts[(request_id, bool(cancelled))] = count
    return [
        RecordTravel(
            request=request,
            visit=visit,
            booked=counts.get((request.id, False), 0),
            cancelled=counts.get((request.id, True), 0),
        )
        for request, visit in rows
    ]


@dataclass(frozen=True)
class TravelStep:
    """One step of a travel request for the timeline: what, who, when, which visit. Only
    kinds (what was asked or booked) and why a visit changed; never a cost or a need."""

    event_id: int
    at: datetime
    # TravelEvent.action: requested, approved, declined, booked, booking_cancelled,
    # arranged, flagged (the visit moved or was cancelled), reviewed.
    step: str
    actor: str
    system: bool  # no person: the platform did it (a visit moved by a sync, say)
    visit_id: int
    visit_key: str
    kinds: tuple[str, ...]
    visit_change: str | None  # flagged: "moved" or "cancelled"
    decline_reason: str | None  # declined: the reason the patient reads too


_KINDS = frozenset(kind.value for kind in TravelKind)


def _kinds(detail: dict[str, object]) -> tuple[str, ...]:
    """The kinds an event names (asked: several; booked or cancelled: one)."""
    kinds = detail.get("kinds")
    if isinstance(kinds, list):
        return tuple(kind for kind in kinds if isinstance(kind, str) and kind in _KINDS)
    kind = detail.get("kind")
    return (kind,) if isinstance(kind, str) and kind in _KINDS else ()


def travel_steps(session: Session, *, patient_id: int, limit: int) -> list[TravelStep]:
    """The newest `limit` steps of the patient's travel requests, newest first. One query."""
    rows = session.execute(
        select(TravelEvent, TravelRequest, Visit.visit_key, User)
        .join(TravelRequest, TravelRequest.id == TravelEvent.request_id)
        .join(Visit, Visit.id == TravelRequest.visit_id)
        .outerjoin(User, User.id == TravelEvent.actor_user_id)
        .where(TravelRequest.patient_id == patient_id)
        .order_by(TravelEvent.at.desc(), TravelEvent.id.desc())
        .limit(limit)
    ).all()
    steps = []
    for event, request, visit_key, user in rows:
        detail = event.detail or {}
        step = event.action
        visit_change = detail.get("visit")
        steps.append(
            TravelStep(
                event_id=event.id,
                at=event.at,
                step=step,
                actor=user.display_name if user is not None else event.actor_label,
                system=event.actor_user_id is None,
                visit_id=request.visit_id,
                visit_key=visit_key,
                kinds=_kinds(detail),
                visit_change=visit_change if isinstance(visit_change, str) else None,
                decline_reason=request.decline_reason if step == "declined" else None,
            )
        )
    return steps
