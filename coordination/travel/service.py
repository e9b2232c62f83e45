"""Coordinators' work on travel requests: approve, decline with a reason the patient reads,
record what was booked (kind, provider or summary, dates, cost within the state's limits),
mark the request arranged, cancel a booking (kept with its cost), and clear the "to
review" flag once a moved or cancelled visit's travel is checked. Every change goes to
the request's history and the audit log.

Which coordinator may see a request is the portal's check (`may_access_patient`: the
patient's state, and center); these functions take the request already found."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import Visit
from coordination.travel.history import record_travel_event
from coordination.travel.models import (
    OPEN_TRAVEL_STATUSES,
    TravelArrangement,
    TravelEvent,
    TravelKind,
    TravelPolicy,
    TravelRequest,
    TravelStatus,
)
from coordination.travel.policy import MAX_AMOUNT_CENTS, dollars, parse_cents
from core.audit.service import Actor
from core.clock import Clock
from core.dates import parse_day
from core.errors import FieldErrors
from core.identity.models import User
from core.ids import parse_int
from core.text import N_

REASON_MAX = 500
SUMMARY_MAX = 200
MAX_MILES = 5_000


class TravelStepRefused(ValueError):
    """The change is not possible from the request's status; says why, for people."""


@dataclass(frozen=True)
class RequestDetail:
    """One request with what its page shows."""

    request: TravelRequest
    visit: Visit
    policy: TravelPolicy
    arrangements: list[TravelArrangement]
    events: list[TravelEvent]

    @property
    def standing(self) -> list[TravelArrangement]:
        """The bookings not cancelled."""
        return [a for a in self.arrangements if not a.is_cancelled]

    @property
    def total_cents(self) -> int:
        """What the bookings standing cost."""
        return sum(a.cost_cents for a in self.arrangements if not a.is_cancelled)

    @property
    def cancelled_cents(self) -> int:
        """What the cancelled bookings had cost (kept: refunds are the payer's business)."""
        return sum(a.cost_cents for a in self.arrangements if a.is_cancelled)


def request_detail(session: Session, *, patient_id: int, request_id: int) -> RequestDetail | None:
    """The patient's request `request_id` with its visit, policy, arrangements and history;
    None when the patient has no such request."""
    request = session.get(TravelRequest, request_id)
    if request is None or request.patient_id != patient_id:
        return None
    visit = session.get(Visit, request.visit_id)
    policy = session.get(TravelPolicy, request.policy_id)
    assert visit is not None and policy is not None
    arrangements = list(
        session.scalars(
            select(TravelArrangement)
            .where(TravelArrangement.request_id == request.id)
            .order_by(TravelArrangement.starts_on, TravelArrangement.id)
        )
    )
    events = list(
        session.scalars(
            select(TravelEvent)
            .where(TravelEvent.request_id == request.id)
            .order_by(TravelEvent.at, TravelEvent.id)
        )
    )
    return RequestDetail(request, visit, policy, arrangements, events)


def requests_of_visit(session: Session, *, patient_id: int, visit_id: int) -> list[RequestDetail]:
    """Every request made for the patient's visit, newest first, each with its detail (as
    `request_detail` gives it), in a few queries whatever their number."""
    requests = list(
        session.scalars(
            select(TravelRequest)
            .where(TravelRequest.visit_id == visit_id, TravelRequest.patient_id == patient_id)
            .order_by(TravelRequest.created_at.desc(), TravelRequest.id.desc())
        )
    )
    if not requests:
        return []
    ids = [request.id for request in requests]
    arrangements: dict[int, list[TravelArrangement]] = {request_id: [] for request_id in ids}
    for booked in session.scalars(
        select(TravelArrangement)
        .where(TravelArrangement.request_id.in_(ids))
        .order_by(TravelArrangement.starts_on, TravelArrangement.id)
    ):
        arrangements[booked.request_id].append(booked)
    events: dict[int, list[TravelEvent]] = {request_id: [] for request_id in ids}
    for event in session.scalars(
        select(TravelEvent)
        .where(TravelEvent.request_id.in_(ids))
        .order_by(TravelEvent.at, TravelEvent.id)
    ):
        events[event.request_id].append(event)
    visit = session.get(Visit, visit_id)
    assert visit is not None
    details = []
    for request in requests:
        policy = session.get(TravelPolicy, request.policy_id)  # few: read once each
        assert policy is not None
        details.append(
            RequestDetail(request, visit, policy, arrangements[request.id], events[request.id])
        )
    return details


def names_in(session: Session, *, details: list[RequestDetail]) -> dict[int, str]:
    """The names of the people the requests' history names (asked, decided, cancelled), by
    user id, read in one query."""
    user_ids = {
        user_id
        for detail in details
        for user_id in (
            detail.request.requested_by_user_id,
            *(event.actor_user_id for event in detail.events),
            *(booked.cancelled_by_user_id for booked in detail.arrangements),
        )
        if user_id is not None
    }
    if not user_ids:
        return {}
    return {
        user.id: user.display_name
        for user in session.scalars(select(User).where(User.id.in_(user_ids)))
    }


def _decide(request: TravelRequest, *, clock: Clock, actor: Actor) -> None:
    now = clock.now()
    request.decided_at = now
    request.decided_by_user_id = actor.user_id
    request.updated_at = now


def approve_request(
    session: Session, *, clock: Clock, actor: Actor, request: TravelRequest
) -> None:
    """Agree to a request; what is booked comes next (`add_arrangement`)."""
    if request.status is not TravelStatus.REQUESTED:
        raise TravelStepRefused(N_("Only a request nobody decided yet can be approved."))
    request.status = TravelStatus.APPROVED
    _decide(request, clock=clock, actor=actor)
    record_travel_event(session, clock=clock, actor=actor, request=request, action="approved")
    session.flush()


def decline_request(
    session: Session, *, clock: Clock, actor: Actor, request: TravelRequest, reason: str
) -> None:
    """Refuse a request (also one arranged whose visit was cancelled); the patient reads
    the reason, so it is required."""
    reason = " ".join(reason.split())
    if request.status is TravelStatus.DECLINED:
        raise TravelStepRefused(N_("This request is already declined."))
    if not reason:
        raise FieldErrors({"reason": N_("Say why: the patient reads it.")})
    if len(reason) > REASON_MAX:
        raise FieldErrors(
            {"reason": N_("Keep it to %(most)d characters at most.", most=REASON_MAX)}
        )
    request.status = TravelStatus.DECLINED
    request.decline_reason = reason
    request.review_needed_at = None
    _decide(request, clock=clock, actor=actor)
    record_travel_event(session, clock=clock, actor=actor, request=request, action="declined")
    session.flush()


@dataclass(frozen=True)
class ArrangementInput:
    """What was booked, as typed in the coordinator's form (the cost in dollars)."""

    kind: str
    summary: str
    starts_on: str
    ends_on: str
    cost: str = ""
    miles: str = ""


def _cost_limit(
    errors: dict[str, str],
    *,
    kind: TravelKind,
    policy: TravelPolicy,
    request: TravelRequest,
    start: date,
    end: date,
    miles: int | None,
    cost: int | None,
) -> int | None:
    """The cost to record, checked against the policy's rates and caps (None on error)."""
    if kind is TravelKind.MILEAGE:
        if miles is None:
            errors["miles"] = N_("Enter the miles driven, from 1 to %(most)d.", most=MAX_MILES)
            return None
        return miles * policy.mileage_rate_cents  # the state's rate decides, not a guess
    if cost is None:
        errors["cost"] = N_("Enter the cost in dollars, like 125.50.")
        return None
    if kind is TravelKind.LODGING:
        nights = (end - start).days
        if not 1 <= nights <= policy.max_lodging_nights:
            errors["ends_on"] = N_(
                "Lodging is paid for 1 to %(most)d nights per visit.",
                most=policy.max_lodging_nights,
            )
            return None
        limit = nights * policy.lodging_night_cap_cents
        if cost > limit:
            errors["cost"] = N_(
                "Over the state's limit: at most $%(most)s for %(nights)d nights.",
                most=dollars(limit),
                nights=nights,
            )
            return None
    if kind is TravelKind.MEALS:
        days = (end - start).days + 1
        limit = days * request.travellers * policy.meal_per_diem_cents
        if cost > limit:
            errors["cost"] = N_(
                "Over the state's limit: at most $%(most)s (the per-diem for %(days)d days "
                "and %(people)d people).",
                most=dollars(limit),
                days=days,
                people=request.travellers,
            )
            return None
    return cost


def add_arrangement(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    request: TravelRequest,
    data: ArrangementInput,
) -> TravelArrangement:
    """Record one thing booked for the request: a kind it asked for and the state funds,
    its provider or summary, its dates, its cost (mileage: the miles, at the state's rate)."""
    if request.status is TravelStatus.DECLINED:
        raise TravelStepRefused(N_("This request is declined: nothing can be booked for it."))
    policy = session.get(TravelPolicy, request.policy_id)
    assert policy is not None
    errors: dict[str, str] = {}
    try:
        kind: TravelKind | None = TravelKind(data.kind)
    except ValueError:
        kind = None
    if kind is None or not request.asked_for(kind):
        errors["kind"] = N_("Choose one of the kinds of support asked for.")
    elif not policy.funds(kind):
        errors["kind"] = N_("The state's policy for this visit does not fund this kind.")
    summary = " ".join(data.summary.split())
    if not summary:
        errors["summary"] = N_("Say what was booked: the provider, a reference, a time.")
    elif len(summary) > SUMMARY_MAX:
        errors["summary"] = N_("Keep it to %(most)d characters at most.", most=SUMMARY_MAX)
    days: list[date | None] = []
    for name, typed in (("starts_on", data.starts_on), ("ends_on", data.ends_on)):
        try:
            day = parse_day(typed)
        except ValueError:
            day = None
        if day is None:
            errors[name] = N_("Enter a date, like 2027-03-14.")
        days.append(day)
    start, end = days
    if start is not None and end is not None and end < start:
        errors["ends_on"] = N_("The last day cannot be before the first day.")
    miles = parse_int(data.miles.strip(), low=1, high=MAX_MILES) if data.miles.strip() else None
    if data.miles.strip() and miles is None:
        errors["miles"] = N_("Enter the miles driven, from 1 to %(most)d.", most=MAX_MILES)
    cost = parse_cents(data.cost, high=MAX_AMOUNT_CENTS) if data.cost.strip() else None
    if data.cost.strip() and cost is None:
        errors["cost"] = N_("Enter the cost in dollars, like 125.50.")
    cents: int | None = None
    if not errors and kind is not None and start is not None and end is not None:
        cents = _cost_limit(
            errors,
            kind=kind,
            policy=policy,
            request=request,
            start=start,
            end=end,
            miles=miles,
            cost=cost,
        )
    if errors:
        raise FieldErrors(errors)
    assert kind is not None and start is not None and end is not None and cents is not None
    arrangement = TravelArrangement(
        request_id=request.id,
        kind=kind,
        summary=summary,
        starts_on=start,
        ends_on=end,
        miles=miles if kind is TravelKind.MILEAGE else None,
        cost_cents=cents,
        created_at=clock.now(),
        created_by_user_id=actor.user_id,
    )
    session.add(arrangement)
    request.updated_at = clock.now()
    session.flush()
    record_travel_event(
        session,
        clock=clock,
        actor=actor,
        request=request,
        action="booked",
        detail={"kind": kind.value, "cost_cents": cents},
    )
    return arrangement


def mark_arranged(session: Session, *, clock: Clock, actor: Actor, request: TravelRequest) -> None:
    """Everything is booked: the patient now sees the arrangements beside the visit (and
    the reminder says, in one sentence, that travel is arranged)."""
    if request.status not in OPEN_TRAVEL_STATUSES:
        raise TravelStepRefused(N_("Only a request asked or approved can be marked arranged."))
    booked = session.scalar(
        select(TravelArrangement.id)
        .where(
            TravelArrangement.request_id == request.id,
            TravelArrangement.cancelled_at.is_(None),
        )
        .limit(1)
    )
    if booked is None:
        raise TravelStepRefused(N_("Record what was booked first."))
    if request.decided_at is None:
        _decide(request, clock=clock, actor=actor)
    request.status = TravelStatus.ARRANGED
    request.updated_at = clock.now()
    record_travel_event(session, clock=clock, actor=actor, request=request, action="arranged")
    session.flush()


def mark_reviewed(session: Session, *, clock: Clock, actor: Actor, request: TravelRequest) -> None:
    """The coordinator checked the travel of a moved visit: the flag is cleared (declining
    is the other way out, for a visit cancelled)."""
    if request.review_needed_at is None:
        raise TravelStepRefused(N_("Nothing on this request is waiting for review."))
    request.review_needed_at = None
    request.updated_at = clock.now()
    for arrangement in session.scalars(
        select(TravelArrangement).where(TravelArrangement.request_id == request.id)
    ):
        arrangement.review_needed_at = None
    record_travel_event(session, clock=clock, actor=actor, request=request, action="reviewed")
    session.flush()


def cancel_arrangement(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    request: TravelRequest,
    arrangement_id: int,
) -> TravelArrangement:
    """Record that a booking was cancelled (its visit cancelled or moved). The booking stays
    with its cost, marked cancelled; the patient no longer sees it. When the last booking
    standing of an arranged request goes, the request is back to approved: nothing is
    booked, so the reminder no longer says travel is arranged."""
    arrangement = session.get(TravelArrangement, arrangement_id)
    if arrangement is None or arrangement.request_id != request.id:
        raise TravelStepRefused(N_("This booking is not part of this request."))
    if arrangement.is_cancelled:
        raise TravelStepRefused(N_("This booking is already cancelled."))
    now = clock.now()
    arrangement.cancelled_at = now
    arrangement.cancelled_by_user_id = actor.user_id
    arrangement.review_needed_at = None  # this one is dealt with
    request.updated_at = now
    session.flush()
    standing = session.scalar(
        select(TravelArrangement.id)
        .where(
            TravelArrangement.request_id == request.id,
            TravelArrangement.cancelled_at.is_(None),
        )
        .limit(1)
    )
    if standing is None and request.status is TravelStatus.ARRANGED:
        request.status = TravelStatus.APPROVED
    record_travel_event(
        session,
        clock=clock,
        actor=actor,
        request=request,
        action="booking_cancelled",
        detail={
            "arrangement": arrangement.id,
            "kind": arrangement.kind.value,
            "cost_cents": arrangement.cost_cents,
        },
    )
    session.flush()
    return arrangement
