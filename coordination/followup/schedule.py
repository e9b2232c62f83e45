"""Follow-up schedules: generating a patient's visits from their protocol, and every change
of a visit's life (book, confirm, move, complete, miss, cancel), each kept in its history.

Dates are calendar dates in the patient's time zone; appointments are instants stored in UTC
with the zone they were booked in, so 9:00 stays 9:00 across daylight-saving changes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from coordination.followup.models import (
    OPEN_VISIT_STATUSES,
    FollowUpPlan,
    Visit,
    VisitEvent,
    VisitStatus,
)
from coordination.followup.protocol import Protocol, ProtocolLibrary
from coordination.followup.requests import close_move_requests, close_visits_move_requests
from coordination.travel.review import CANCELLED, MOVED, flag_travel_for_review
from core.audit.service import Actor
from core.clock import Clock, local_today
from core.db import table_of
from core.models import Patient, PatientStatus
from core.text import N_


class VisitTransitionError(ValueError):
    """The change is not possible from the visit's current status; says why, for people."""


# (action, from status) -> to status. Anything else is refused.
TRANSITIONS: dict[tuple[str, VisitStatus], VisitStatus] = {
    ("book", VisitStatus.DUE): VisitStatus.SCHEDULED,
    ("book", VisitStatus.SCHEDULED): VisitStatus.RESCHEDULED,
    ("book", VisitStatus.RESCHEDULED): VisitStatus.RESCHEDULED,
    ("book", VisitStatus.CONFIRMED): VisitStatus.RESCHEDULED,
    ("confirm", VisitStatus.SCHEDULED): VisitStatus.CONFIRMED,
    ("confirm", VisitStatus.RESCHEDULED): VisitStatus.CONFIRMED,
    ("complete", VisitStatus.DUE): VisitStatus.COMPLETED,
    ("complete", VisitStatus.SCHEDULED): VisitStatus.COMPLETED,
    ("complete", VisitStatus.RESCHEDULED): VisitStatus.COMPLETED,
    ("complete", VisitStatus.CONFIRMED): VisitStatus.COMPLETED,
    # A visit that happened but was recorded late (or before enrolment) can still be entered.
    ("complete", VisitStatus.MISSED): VisitStatus.COMPLETED,
    ("miss", VisitStatus.DUE): VisitStatus.MISSED,
    ("miss", VisitStatus.SCHEDULED): VisitStatus.MISSED,
    ("miss", VisitStatus.RESCHEDULED): VisitStatus.MISSED,
    ("miss", VisitStatus.CONFIRMED): VisitStatus.MISSED,
    ("cancel", VisitStatus.DUE): VisitStatus.CANCELLED,
    ("cancel", VisitStatus.SCHEDULED): VisitStatus.CANCELLED,
    ("cancel", VisitStatus.RESCHEDULED): VisitStatus.CANCELLED,
    ("cancel", VisitStatus.CONFIRMED): VisitStatus.CANCELLED,
}

_REFUSALS = {
    "book": N_("An appointment can only be booked for a visit that is still to come."),
    "confirm": N_("Only a booked appointment can be confirmed; this visit has none."),
    "complete": N_("This visit is already completed or cancelled."),
    "miss": N_("Only an open visit can be marked missed."),
    "cancel": N_("Only a visit that is still to come can be cancelled."),
}


def allowed_actions(visit: Visit) -> set[str]:
    """What may be done to the visit from its status (book, confirm, complete, miss, cancel,
    acknowledge): the same rules the services below apply, for pages to offer."""
    actions = {action for action, status in TRANSITIONS if status is visit.status}
    if visit.status is VisitStatus.MISSED and visit.missed_acknowledged_at is None:
        actions.add("acknowledge")
    return actions


def _transition(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    visit: Visit,
    action: str,
    reason: str | None = None,
    detail: dict[str, Any] | None = None,
) -> VisitEvent:
    target = TRANSITIONS.get((action, visit.status))
    if target is None:
        raise VisitTransitionError(_REFUSALS[action])
    event = VisitEvent(
        visit_id=visit.id,
        at=clock.now(),
        actor_user_id=actor.user_id,
        actor_label=actor.label[:254],
        action=action,
        from_status=visit.status.value,
        to_status=target.value,
        reason=(reason or None) and reason.strip()[:500],
        detail=detail,
    )
    visit.status = target
    visit.updated_at = clock.now()
    session.add(event)
    # A booked appointment that moves or is cancelled sends its travel support back to a
    # coordinator (only booked visits have any: the others cost no query).
    if visit.appointment_at is not None and action in ("book", "cancel"):
        flag_travel_for_review(
            session,
            clock=clock,
            actor=actor,
            visit_id=visit.id,
            reason=MOVED if action == "book" else CANCELLED,
        )
    return event


# --- generating schedules ----------------------------------------------------------------


@dataclass
class ScheduleChange:
    created: int = 0
    moved: int = 0
    kept: int = 0
    cancelled: int = 0
    reopened: int = 0
    visits: list[Visit] = field(default_factory=list)


# Marks the cancellations sync_schedule makes by itself, so that it can undo them.
_AUTOMATIC = "automatic"


def _cancelled_automatically(session: Session, visits: Iterable[Visit]) -> set[int]:
    """The cancelled visits whose last cancellation was made by sync_schedule (infusion date
    removed, patient withdrawn or deceased, visit dropped by the protocol), not by a person."""
    ids = [visit.id for visit in visits if visit.status is VisitStatus.CANCELLED]
    if not ids:
        return set()
    last_cancel: dict[int, VisitEvent] = {}
    for event in session.scalars(
        select(VisitEvent)
        .where(VisitEvent.visit_id.in_(ids), VisitEvent.action == "cancel")
        .order_by(VisitEvent.id)
    ):
        last_cancel[event.visit_id] = event
    return {
        visit_id for visit_id, event in last_cancel.items() if (event.detail or {}).get(_AUTOMATIC)
    }


def _reopen(session: Session, *, clock: Clock, actor: Actor, visit: Visit) -> None:
    """Undo an automatic cancellation: the visit is due again, without an appointment."""
    session.add(
        VisitEvent(
            visit_id=visit.id,
            at=clock.now(),
            actor_user_id=actor.user_id,
            actor_label=actor.label[:254],
            action="reopen",
            from_status=visit.status.value,
            to_status=VisitStatus.DUE.value,
            reason=N_("the follow-up applies again"),
        )
    )
    visit.status = VisitStatus.DUE
    visit.appointment_at = None
    visit.appointment_zone = None
    visit.location = None
    visit.confirmed_at = None
    visit.updated_at = clock.now()


def _protocol_for(
    session: Session, *, library: ProtocolLibrary, patient: Patient, plan: FollowUpPlan | None
) -> Protocol | None:
    therapy = patient.therapy.code
    version = plan.protocol_version if plan is not None and plan.therapy_code == therapy else None
    return library.version_or_current(therapy, version)


def sync_schedule(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    library: ProtocolLibrary,
    patient: Patient,
    protocol: Protocol | None = None,
) -> ScheduleChange:
    """Make the patient's visits match their infusion date and protocol.

    Completed, missed and cancelled visits stay as they are; open visits move with the
    infusion date; missing ones are created; nothing is duplicated (one visit per key).
    Visits the protocol no longer has are cancelled with the reason. Without an infusion
    date, open visits are cancelled (the date was removed); so are they when the patient
    is withdrawn or deceased. Those automatic cancellations are undone, for the visits
    still to come, once the follow-up applies again (the date is set again, the patient
    is back, the protocol has the visit again); a person's cancellation is kept. Call it
    after enrolment and after any change of infusion date, therapy or status.
    """
    now = clock.now()
    plan = session.scalar(select(FollowUpPlan).where(FollowUpPlan.patient_id == patient.id))
    existing = {
        visit.visit_key: visit
        for visit in session.scalars(select(Visit).where(Visit.patient_id == patient.id))
    }
    change = ScheduleChange()
    closing = patient.status in (PatientStatus.WITHDRAWN, PatientStatus.DECEASED)
    if patient.infusion_date is None or closing:
        reason = (
            "infusion date removed"
            if patient.infusion_date is None
            else f"patient {patient.status}"
        )
        for visit in existing.values():
            if visit.status.is_open:
                _transition(
                    session,
                    clock=clock,
                    actor=actor,
                    visit=visit,
                    action="cancel",
                    reason=reason,
                    detail={_AUTOMATIC: True},
                )
                change.cancelled += 1
        session.flush()
        return change
    protocol = protocol or _protocol_for(session, library=library, patient=patient, plan=plan)
    if protocol is None:
        raise ValueError(f"no follow-up protocol for therapy {patient.therapy.code!r}")
    anchor = patient.infusion_date
    if plan is None:
        plan = FollowUpPlan(
            patient_id=patient.id,
            therapy_code=protocol.therapy,
            protocol_version=protocol.version,
            anchor_date=anchor,
            created_at=now,
            updated_at=now,
        )
        session.add(plan)
    elif (plan.therapy_code, plan.protocol_version, plan.anchor_date) != (
        protocol.therapy,
        protocol.version,
        anchor,
    ):
        plan.therapy_code, plan.protocol_version = protocol.therapy, protocol.version
        plan.anchor_date, plan.updated_at = anchor, now

    reopenable = _cancelled_automatically(session, existing.values())
    today = local_today(clock, patient.time_zone)
    # Visits whose window had closed before this schedule existed (a back-dated enrolment)
    # could never be kept here: they are recorded missed and already followed up, so they
    # neither come "next" nor fill the overdue bucket; a result that arrives later can
    # still complete them.
    closed_before: list[Visit] = []
    wanted = set()
    for sequence, protocol_visit in enumerate(protocol.visits, start=1):
        wanted.add(protocol_visit.key)
        opens, target, closes = protocol_visit.window(anchor)
        found = existing.get(protocol_visit.key)
        if found is None:
            visit = Visit(
                patient_id=patient.id,
                visit_key=protocol_visit.key,
                protocol_version=protocol.version,
                sequence=sequence,
                target_date=target,
                window_start=opens,
                window_end=closes,
                status=VisitStatus.DUE if closes >= today else VisitStatus.MISSED,
                missed_acknowledged_at=None if closes >= today else now,
                created_at=now,
                updated_at=now,
            )
            session.add(visit)
            if closes < today:
                closed_before.append(visit)
            change.created += 1
            change.visits.append(visit)
            continue
        visit = found
        if visit.id in reopenable and closes >= today:
            _reopen(session, clock=clock, actor=actor, visit=visit)
            change.reopened += 1
        if visit.status.is_final:
            change.kept += 1
        elif (visit.target_date, visit.window_start, visit.window_end, visit.sequence) != (
            target,
            opens,
            closes,
            sequence,
        ):
            session.add(
                VisitEvent(
                    visit_id=visit.id,
                    at=now,
                    actor_user_id=actor.user_id,
                    actor_label=actor.label[:254],
                    action="move_window",
                    from_status=visit.status.value,
                    to_status=visit.status.value,
                    reason=N_("infusion date or protocol changed"),
                    detail={"from": visit.target_date.isoformat(), "to": target.isoformat()},
                )
            )
            visit.target_date, visit.window_start, visit.window_end = target, opens, closes
            visit.sequence, visit.protocol_version, visit.updated_at = (
                sequence,
                protocol.version,
                now,
            )
            change.moved += 1
        else:
            visit.protocol_version = protocol.version
            change.kept += 1
        change.visits.append(visit)
    for key, visit in existing.items():
        if key not in wanted and visit.status.is_open:
            _transition(
                session,
                clock=clock,
                actor=actor,
                visit=visit,
                action="cancel",
                reason=f"not in protocol {protocol.therapy} v{protocol.version}",
                detail={_AUTOMATIC: True},
            )
            change.cancelled += 1
    session.flush()
    for visit in closed_before:
        session.add(
            VisitEvent(
                visit_id=visit.id,
                at=now,
                actor_user_id=actor.user_id,
                actor_label=actor.label[:254],
                action="miss",
                from_status=VisitStatus.DUE.value,
                to_status=VisitStatus.MISSED.value,
                reason=N_("the window had closed before follow-up began here"),
            )
        )
    session.flush()
    return change


# The fields of a patient's record whose change moves, creates or cancels visits.
SCHEDULE_FIELDS = frozenset({"infusion_date", "therapy_id", "status"})


def follow_record_change(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    library: ProtocolLibrary,
    patient: Patient,
    changed: Collection[str] | None,
) -> ScheduleChange | None:
    """React to an enrolment (`changed` None) or an edit of the patient's record (the names
    of the fields that changed): the record lives in `core`, which does not know schedules,
    so this room follows it. Returns None when nothing had to move, or when the therapy has
    no follow-up protocol (the record page says so)."""
    if changed is not None:
        if not SCHEDULE_FIELDS.intersection(changed):
            return None
        if "therapy_id" in changed:
            session.expire(patient, ["therapy"])  # the relationship follows the new id
    closing = patient.status in (PatientStatus.WITHDRAWN, PatientStatus.DECEASED)
    if (
        patient.infusion_date is not None
        and not closing
        and library.current(patient.therapy.code) is None
    ):
        return None
    return sync_schedule(session, clock=clock, actor=actor, library=library, patient=patient)


def migrate_protocol(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    library: ProtocolLibrary,
    therapy: str,
    to_version: int,
) -> int:
    """Move every patient on an older version of `therapy`'s protocol to `to_version`
    (the explicit step a new protocol version needs for existing patients). Returns how
    many patients moved."""
    protocol = library.get(therapy, to_version)
    if protocol is None:
        raise ValueError(f"there is no protocol {therapy} version {to_version}")
    plans = session.scalars(
        select(FollowUpPlan).where(
            FollowUpPlan.therapy_code == therapy, FollowUpPlan.protocol_version != to_version
        )
    ).all()
    moved = 0
    for plan in plans:
        patient = session.get(Patient, plan.patient_id)
        assert patient is not None
        sync_schedule(
            session, clock=clock, actor=actor, library=library, patient=patient, protocol=protocol
        )
        # Patients without an infusion date or whose follow-up ended keep their plan as it
        # is; they move when their follow-up starts again.
        moved += plan.protocol_version == to_version
    return moved


# --- the life of a visit ---------------------------------------------------------------


class AppointmentTimeError(ValueError):
    pass


class OutsideWindowError(ValueError):
    """The appointment's day is outside the visit's window: booking it there needs the
    coordinator's explicit confirmation and a reason (`needs_reason`: confirmed, but the
    reason is missing)."""

    def __init__(self, message: str, *, window_start: date, window_end: date, needs_reason: bool):
        super().__init__(message)
        self.window_start, self.window_end = window_start, window_end
        self.needs_reason = needs_reason


def outside_window(visit: Visit, day: date) -> bool:
    """Whether `day` (in the patient's zone) falls outside the visit's window."""
    return not visit.window_start <= day <= visit.window_end


def appointment_instant(day: date, clock_time: time, zone: str) -> datetime:
    """The instant of a local wall-clock time; refuses times that do not exist that day
    (the hour skipped when clocks spring forward)."""
    tz = ZoneInfo(zone)
    local = datetime.combine(day, clock_time, tzinfo=tz)
    round_trip = local.astimezone(ZoneInfo("UTC")).astimezone(tz)
    if round_trip.replace(tzinfo=None) != local.replace(tzinfo=None):
        raise AppointmentTimeError(
            N_("This time does not exist on that day because the clocks change. Pick another time.")
        )
    return local.astimezone(ZoneInfo("UTC"))


def book_appointment(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    visit: Visit,
    patient: Patient,
    day: date,
    at: time,
    location: str,
    reason: str | None = None,
    outside_window_confirmed: bool = False,
) -> VisitEvent:
    """Give the visit an appointment (or move it: the visit becomes 'rescheduled'); the
    visit's open move requests are answered by it.

    A day outside the visit's window is refused (OutsideWindowError) unless the coordinator
    confirmed it (`outside_window_confirmed`) and said why (`reason`): a visit outside its
    window may not count for the protocol, so it is never booked there by mistake. The
    history then records that it was booked outside the window, with the reason."""
    if ("book", visit.status) not in TRANSITIONS:
        raise VisitTransitionError(_REFUSALS["book"])
    instant = appointment_instant(day, at, patient.time_zone)
    if instant <= clock.now():
        raise AppointmentTimeError(N_("The appointment must be in the future."))
    outside = outside_window(visit, day)
    if outside and not (outside_window_confirmed and reason and reason.strip()):
        raise OutsideWindowError(
            N_("Say why the appointment is outside the visit's window.")
            if outside_window_confirmed
            else N_("This day is outside the visit's window."),
            window_start=visit.window_start,
            window_end=visit.window_end,
            needs_reason=outside_window_confirmed,
        )
    previous = visit.appointment_at.isoformat() if visit.appointment_at else None
    detail: dict[str, Any] = {"from": previous, "to": instant.isoformat()}
    if outside:
        detail["outside_window"] = True
    event = _transition(
        session,
        clock=clock,
        actor=actor,
        visit=visit,
        action="book",
        reason=reason,
        detail=detail,
    )
    visit.appointment_at = instant
    visit.appointment_zone = patient.time_zone
    visit.location = location.strip()[:200] or None
    visit.confirmed_at = None
    close_move_requests(session, clock=clock, actor=actor, visit=visit)
    return event


def confirm_visit(session: Session, *, clock: Clock, actor: Actor, visit: Visit) -> VisitEvent:
    """The patient, a caregiver or a coordinator confirms the booked appointment."""
    event = _transition(session, clock=clock, actor=actor, visit=visit, action="confirm")
    visit.confirmed_at = clock.now()
    session.flush()
    return event


def cancel_visit(
    session: Session, *, clock: Clock, actor: Actor, visit: Visit, reason: str
) -> VisitEvent:
    """Cancel a visit that will not happen; a reason is required."""
    if not reason.strip():
        raise VisitTransitionError(N_("Say why the visit is cancelled."))
    event = _transition(
        session, clock=clock, actor=actor, visit=visit, action="cancel", reason=reason
    )
    close_move_requests(session, clock=clock, actor=actor, visit=visit)
    return event


def complete_visit(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    visit: Visit,
    completed_on: date,
    close_requests: bool = True,
) -> VisitEvent:
    """Mark the visit as done on `completed_on` (outcomes are recorded alongside); its open
    move requests are answered by it (`close_requests=False`: the caller, who completes
    many visits, closes theirs together with `close_visits_move_requests`)."""
    event = _transition(
        session,
        clock=clock,
        actor=actor,
        visit=visit,
        action="complete",
        detail={"completed_on": completed_on.isoformat()},
    )
    visit.completed_on = completed_on
    if close_requests:
        close_move_requests(session, clock=clock, actor=actor, visit=visit)
    return event


def complete_visits(
    session: Session, *, clock: Clock, actor: Actor, completions: Collection[tuple[Visit, date]]
) -> None:
    """`complete_visit` for many visits at once (visit, the day it was done), each checked
    and recorded as it records one, their history rows in one INSERT and their open move
    requests closed together (the visits a center's results complete in one transaction).
    Raises VisitTransitionError, changing nothing, when one cannot be completed."""
    now = clock.now()
    events: list[dict[str, Any]] = []
    for visit, completed_on in completions:
        target = TRANSITIONS.get(("complete", visit.status))
        if target is None:
            raise VisitTransitionError(_REFUSALS["complete"])
        events.append(
            {
                "visit_id": visit.id,
                "at": now,
                "actor_user_id": actor.user_id,
                "actor_label": actor.label[:254],
                "action": "complete",
                "from_status": visit.status.value,
                "to_status": target.value,
                "reason": None,
                "detail": {"completed_on": completed_on.isoformat()},
            }
        )
    for (visit, completed_on), event in zip(completions, events, strict=True):
        visit.status = VisitStatus(event["to_status"])
        visit.updated_at = now
        visit.completed_on = completed_on
    if events:
        session.execute(insert(table_of(VisitEvent)), events)
    close_visits_move_requests(
        session, clock=clock, actor=actor, visits=[visit for visit, _day in completions]
    )


def visit_on(session: Session, *, patient_id: int, day: date) -> Visit | None:
    """The visit whose window holds `day` (a date in the patient's zone): the open or missed
    one first, else a completed one; None when no window holds it. Cancelled visits never
    count (windows do not overlap, so there is at most one of each)."""
    candidates = session.scalars(
        select(Visit).where(
            Visit.patient_id == patient_id,
            Visit.window_start <= day,
            Visit.window_end >= day,
            Visit.status != VisitStatus.CANCELLED,
        )
    ).all()
    return min(
        candidates,
        key=lambda visit: (visit.status is VisitStatus.COMPLETED, visit.target_date),
        default=None,
    )


def complete_visit_on(
    session: Session, *, clock: Clock, actor: Actor, patient: Patient, day: date
) -> Visit:
    """Record that the patient came on `day`: the visit whose window holds it is completed
    on that day (a visit already completed stays as it is). Raises VisitTransitionError
    when no visit's window holds the day."""
    visit = visit_on(session, patient_id=patient.id, day=day)
    if visit is None:
        raise VisitTransitionError(N_("No follow-up visit's window holds this date."))
    if visit.status is not VisitStatus.COMPLETED:
        complete_visit(session, clock=clock, actor=actor, visit=visit, completed_on=day)
        session.flush()
    return visit


def acknowledge_missed(session: Session, *, clock: Clock, actor: Actor, visit: Visit) -> None:
    """The coordinator has followed up a missed visit: it leaves the overdue bucket."""
    if visit.status is not VisitStatus.MISSED:
        raise VisitTransitionError(N_("Only a missed visit can be marked as followed up."))
    if visit.missed_acknowledged_at is not None:
        raise VisitTransitionError(N_("This missed visit is already followed up."))
    visit.missed_acknowledged_at = clock.now()
    session.add(
        VisitEvent(
            visit_id=visit.id,
            at=clock.now(),
            actor_user_id=actor.user_id,
            actor_label=actor.label[:254],
            action="acknowledge",
            from_status=visit.status.value,
            to_status=visit.status.value,
        )
    )
    session.flush()


def mark_missed_visits(session: Session, *, clock: Clock) -> int:
    """The nightly job: open visits whose window closed before today, in each patient's own
    time zone, become missed. Running it twice changes nothing the second time."""
    actor = Actor.system("missed-visits")
    zones = session.scalars(select(Patient.time_zone).distinct()).all()
    missed = 0
    for zone in zones:
        today = local_today(clock, zone)
        overdue = session.scalars(
            select(Visit)
            .join(Patient, Patient.id == Visit.patient_id)
            .where(
                Patient.time_zone == zone,
                Visit.status.in_(OPEN_VISIT_STATUSES),
                Visit.window_end < today,
            )
        ).all()
        for visit in overdue:
            _transition(
                session,
                clock=clock,
                actor=actor,
                visit=visit,
                action="miss",
                reason=N_("the window closed without a completed visit"),
            )
            missed += 1
    session.flush()
    return missed


def visits_for_patient(session: Session, *, patient_id: int) -> list[Visit]:
    """The patient's visits in date order."""
    return visits_for_patients(session, patient_ids=[patient_id])[patient_id]


def visits_for_patients(
    session: Session, *, patient_ids: Collection[int]
) -> dict[int, list[Visit]]:
    """The visits of several patients in one query, each patient's in date order; every
    patient asked for has an entry (empty when they have no visits)."""
    visits: dict[int, list[Visit]] = {patient_id: [] for patient_id in patient_ids}
    if visits:
        # The id breaks ties between visits of the same date, so the order is the same
        # whether one patient or several are read.
        for visit in session.scalars(
            select(Visit)
            .where(Visit.patient_id.in_(list(visits)))
            .order_by(Visit.target_date, Visit.id)
        ):
            visits[visit.patient_id].append(visit)
    return visits


def visit_history(session: Session, *, visit_ids: list[int]) -> dict[int, list[VisitEvent]]:
    """The events of several visits at once, oldest first."""
    events: dict[int, list[VisitEvent]] = defaultdict(list)
    if visit_ids:
        for event in session.scalars(
            select(VisitEvent)
            .where(VisitEvent.visit_id.in_(visit_ids))
            .order_by(VisitEvent.at, VisitEvent.id)
        ):
            events[event.visit_id].append(event)
    return events


def next_visit(visits: list[Visit]) -> Visit | None:
    """The first visit still to come (open), by date."""
    return next((visit for visit in visits if visit.status.is_open), None)
