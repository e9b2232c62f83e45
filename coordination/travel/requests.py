"""Asking for travel support: a patient, or a caregiver with the right to act on visits,
asks for what the state funds to reach a booked visit, within the state's limits; and what
they read back (the request's status, a decline's reason, the confirmed arrangements).

Whether the person may act on the visit is the portal's check (`SCHEDULE_RESPOND`, the
caregiver's "manage visits" right); this module judges the request itself."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import Visit, VisitStatus
from coordination.travel.history import record_travel_event
from coordination.travel.models import (
    TravelArrangement,
    TravelKind,
    TravelPolicy,
    TravelRequest,
    TravelStatus,
)
from coordination.travel.policy import policy_on
from core.audit.service import Actor
from core.clock import Clock, local_today
from core.dates import parse_day
from core.errors import FieldErrors
from core.ids import parse_int
from core.models import Patient
from core.text import N_

NEEDS_MAX = 300
BOOKED = (VisitStatus.SCHEDULED, VisitStatus.RESCHEDULED, VisitStatus.CONFIRMED)

# One sentence per kind: the form says plainly which one the state does not pay for.
NOT_FUNDED = {
    TravelKind.MILEAGE: N_("Your state's program does not pay mileage for driving."),
    TravelKind.RIDE: N_("Your state's program does not pay for rides."),
    TravelKind.FLIGHT: N_("Your state's program does not pay for flights."),
    TravelKind.LODGING: N_("Your state's program does not pay for lodging."),
    TravelKind.MEALS: N_("Your state's program does not pay for meals."),
    TravelKind.CHILDCARE: N_("Your state's program does not pay for childcare."),
    TravelKind.ESCORT: N_("Your state's program does not pay for an escort."),
}


def appointment_day(visit: Visit, *, patient_zone: str) -> date | None:
    """The appointment's calendar day where it takes place, or None when none is booked."""
    if visit.appointment_at is None:
        return None
    zone = ZoneInfo(visit.appointment_zone or patient_zone)
    return visit.appointment_at.astimezone(zone).date()


def is_booked_ahead(visit: Visit, *, now: datetime) -> bool:
    """A visit one may ask travel support for: booked, and still to come."""
    return (
        visit.status in BOOKED and visit.appointment_at is not None and visit.appointment_at > now
    )


@dataclass(frozen=True)
class TravelAsk:
    """A request as typed in the form."""

    kinds: list[str]
    depart_on: str
    return_on: str
    travellers: str = "1"
    needs: str = ""


def _day(errors: dict[str, str], name: str, typed: str) -> date | None:
    try:
        day = parse_day(typed)
    except ValueError:
        errors[name] = N_("Enter a real date, like 2027-03-14.")
        return None
    if day is None:
        errors[name] = N_("Enter a date, like 2027-03-14.")
    return day


def _check_limits(
    errors: dict[str, str],
    *,
    policy: TravelPolicy,
    kinds: list[TravelKind],
    depart: date,
    back: date,
    travellers: int,
) -> None:
    """The state's limits, each refusal saying the limit."""
    refused = [kind for kind in kinds if not policy.funds(kind)]
    if refused:
        errors["kinds"] = NOT_FUNDED[refused[0]]
    if travellers > policy.max_travellers:
        errors["travellers"] = (
            N_("Your state's program pays travel for the patient only.")
            if policy.max_travellers == 1
            else N_(
                "Your state's program pays travel for at most %(most)d people, the patient "
                "included.",
                most=policy.max_travellers,
            )
        )
    nights = (back - depart).days
    if TravelKind.LODGING in kinds and policy.funds(TravelKind.LODGING):
        if nights < 1:
            errors["return_on"] = N_(
                "Lodging needs at least one night: come back on a later day than you leave."
            )
        elif nights > policy.max_lodging_nights:
            errors["return_on"] = N_(
                "Your state's program pays at most %(most)d nights of lodging per visit; "
                "these dates make %(nights)d.",
                most=policy.max_lodging_nights,
                nights=nights,
            )
    if TravelKind.MEALS in kinds and policy.funds(TravelKind.MEALS):
        most_days = policy.max_lodging_nights + 1
        if nights + 1 > most_days:
            errors.setdefault(
                "return_on",
                N_(
                    "Your state's program pays meals for at most %(most)d days per visit; "
                    "these dates make %(days)d.",
                    most=most_days,
                    days=nights + 1,
                ),
            )


def ask_for_travel(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    visit: Visit,
    ask: TravelAsk,
) -> TravelRequest:
    """Ask for support to reach `visit` (booked, to come) under the state's policy in force
    on the appointment's day. Refuses (FieldErrors) what the state does not fund and
    anything over its limits, saying the limit."""
    now = clock.now()
    if not is_booked_ahead(visit, now=now):
        raise FieldErrors({"": N_("Travel support can be asked only for a booked visit to come.")})
    day = appointment_day(visit, patient_zone=patient.time_zone)
    assert day is not None
    policy = policy_on(session, state_id=patient.state_id, day=day)
    if policy is None or not policy.funded_kinds:
        raise FieldErrors(
            {"": N_("Your state's program has no travel support for this visit's date.")}
        )
    taken = session.scalar(
        select(TravelRequest.id).where(
            TravelRequest.visit_id == visit.id, TravelRequest.status != TravelStatus.DECLINED
        )
    )
    if taken is not None:
        raise FieldErrors(
            {"": N_("You already asked for travel support for this visit: see it below.")}
        )
    errors: dict[str, str] = {}
    kinds: list[TravelKind] = []
    for value in ask.kinds:
        try:
            kind = TravelKind(value)
        except ValueError:
            errors["kinds"] = N_("Choose among the kinds of support listed.")
            break
        if kind not in kinds:
            kinds.append(kind)
    if not kinds and "kinds" not in errors:
        errors["kinds"] = N_("Choose at least one kind of support.")
    depart = _day(errors, "depart_on", ask.depart_on)
    back = _day(errors, "return_on", ask.return_on)
    travellers = parse_int(ask.travellers.strip() or "1", low=1, high=20)
    if travellers is None:
        errors["travellers"] = N_("Enter how many people travel, the patient included (1 or more).")
    needs = " ".join(ask.needs.split())
    if len(needs) > NEEDS_MAX:
        errors["needs"] = N_("Keep it to %(most)d characters at most.", most=NEEDS_MAX)
    if depart is not None and back is not None:
        if depart < local_today(clock, patient.time_zone):
            errors["depart_on"] = N_("The day you leave cannot be in the past.")
        elif back < depart:
            errors["return_on"] = N_("The day you come back cannot be before the day you leave.")
        elif not depart <= day <= back:
            errors["depart_on"] = N_(
                "The trip must include the appointment's day, %(day)s.", day=day.isoformat()
            )
        elif travellers is not None and kinds:
            _check_limits(
                errors,
                policy=policy,
                kinds=kinds,
                depart=depart,
                back=back,
                travellers=travellers,
            )
    if errors:
        raise FieldErrors(errors)
    assert depart is not None and back is not None and travellers is not None
    request = TravelRequest(
        patient_id=patient.id,
        visit_id=visit.id,
        state_id=patient.state_id,
        policy_id=policy.id,
        requested_by_user_id=actor.user_id,
        kinds=[kind.value for kind in sorted(kinds, key=list(TravelKind).index)],
        depart_on=depart,
        return_on=back,
        travellers=travellers,
        needs=needs or None,
        status=TravelStatus.REQUESTED,
        created_at=now,
        updated_at=now,
    )
    session.add(request)
    session.flush()
    record_travel_event(
        session,
        clock=clock,
        actor=actor,
        request=request,
        action="requested",
        detail={"kinds": request.kinds},
    )
    return request


# --- what patients and caregivers read ---------------------------------------------------


@dataclass
class VisitTravel:
    """A visit's travel request as its patient reads it (arrangements only once arranged)."""

    request: TravelRequest
    arrangements: list[TravelArrangement] = field(default_factory=list)

    @property
    def to_review(self) -> bool:
        return self.request.review_needed_at is not None


def travel_for_visits(session: Session, *, visit_ids: list[int]) -> dict[int, VisitTravel]:
    """Each visit's latest request (with its arrangements), in two queries."""
    if not visit_ids:
        return {}
    found: dict[int, VisitTravel] = {}
    for request in session.scalars(
        select(TravelRequest)
        .where(TravelRequest.visit_id.in_(visit_ids))
        .order_by(TravelRequest.created_at, TravelRequest.id)
    ):
        found[request.visit_id] = VisitTravel(request)
    by_request: dict[int, list[TravelArrangement]] = defaultdict(list)
    for arrangement in session.scalars(
        select(TravelArrangement)
        .where(TravelArrangement.request_id.in_([t.request.id for t in found.values()]))
        .order_by(TravelArrangement.starts_on, TravelArrangement.id)
    ):
        by_request[arrangement.request_id].append(arrangement)
    for travel in found.values():
        if travel.request.status is TravelStatus.ARRANGED:
            travel.arrangements = by_request[travel.request.id]
    return found


def arranged_visit_ids(session: Session, *, visit_ids: set[int]) -> set[int]:
    """The visits among `visit_ids` whose travel is arranged and not waiting for review
    (their reminder says so, in one sentence and no detail)."""
    if not visit_ids:
        return set()
    return set(
        session.scalars(
            select(TravelRequest.visit_id).where(
                TravelRequest.visit_id.in_(visit_ids),
                TravelRequest.status == TravelStatus.ARRANGED,
                TravelRequest.review_needed_at.is_(None),
            )
        )
    )


def arranged_visit_ids_ahead(session: Session, *, now: datetime) -> set[int]:
    """The visits booked after `now` whose travel is arranged and not waiting for review:
    few (a request per visit at most, for visits to come), read at once for planning."""
    return set(
        session.scalars(
            select(TravelRequest.visit_id)
            .join(Visit, Visit.id == TravelRequest.visit_id)
            .where(
                TravelRequest.status == TravelStatus.ARRANGED,
                TravelRequest.review_needed_at.is_(None),
                Visit.appointment_at > now,
            )
        )
    )
