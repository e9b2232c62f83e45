"""The text that tells of a moved appointment.

When a booked appointment moves to another day or time, the patient and the caregivers who
get reminders each get one text (per number that may be texted) with the new day and time,
in their language, asking to confirm it (or saying it is confirmed, if it is by the time it
leaves). It carries no name, place, diagnosis or therapy.

- It is planned from the visit's history: the latest "book" event that moved the
  appointment. The planner looks at the moves of the last days at every run, so that every
  front door that moves an appointment is covered; the visit page plans it at once for the
  visit it moved, to tell the coordinator whether a text will go.
- The move is part of each notice's key: planning twice never makes two, and a notice of
  an earlier move that has not left is dropped ("a later move superseded it") when the
  appointment moves again, so a patient moved twice in a row gets one text, with the
  latest time. The first booking sends nothing (a booking is not a change), and neither
  does a move that only changes the place.
- It counts toward the caps (one text a day, three in any seven days per number), like the
  urgent overdue notice: the caps are a promise of the opt-in wording, and a change is no
  reason to break it. It goes now, or at the next texting hour where the person lives;
  when a cap is full it waits for the first day with room while it still helps (until
  two hours before the appointment), else it is recorded as not sent, with the reason,
  and the coordinator calls. The reminders planned after it count it in turn: on the day
  it goes, the new appointment's reminder gives way.
- Right before it leaves it is checked like any appointment reminder (`send_check`):
  moved again, cancelled, consent, a caregiver's right, texting hours, the caps."""

from __future__ import annotations

import bisect
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from coordination.followup.models import Visit, VisitEvent
from coordination.followup.protocol import ReminderKind
from coordination.texting.consent import consents_of
from coordination.texting.models import (
    ConsentStatus,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
)
from coordination.texting.rules import (
    BOOKED,
    FOLLOWED,
    MOVED_RULE,
    SEND_HOUR,
    TextingHours,
    cap_problem,
    instant_label,
    recipients_of,
    reminder_body,
    reminder_links_of,
    taken_times,
    useful_on,
)
from core.clock import Clock
from core.models import Patient, State

# How far back the planner looks for moves (a planner that was down that long has missed
# nothing a text could still help with: the reminders of the new appointment follow).
CHANGE_LOOKBACK = timedelta(days=2)
# The longest a notice waits for room in the caps.
MAX_WAIT_DAYS = 6
SUPERSEDED = "a later move superseded it"
_MOVED_FROM = frozenset(status.value for status in BOOKED)


@dataclass
class NoticeReport:
    """What planning the change notices did."""

    planned: int = 0  # notices queued (now, or at the next texting hour or day with room)
    capped: int = 0  # notices recorded as not sent: the caps left no day before the visit
    superseded: int = 0  # queued notices of an earlier move, dropped


def _is_move(event: VisitEvent) -> bool:
    """A booking that moved a booked appointment to another instant (not the first
    booking, not a change of place only)."""
    detail = event.detail or {}
    before, after = detail.get("from"), detail.get("to")
    return (
        event.from_status in _MOVED_FROM
        and isinstance(before, str)
        and isinstance(after, str)
        and before != after
    )


def _key_prefix(visit_id: int, event_id: int) -> str:
    return f"v{visit_id}:moved:{event_id}:"


def _still_that_appointment(visit: Visit, event: VisitEvent) -> bool:
    """The visit is booked, at the time the move set (nothing changed it since)."""
    if visit.status not in BOOKED or visit.appointment_at is None:
        return False
    try:
        moved_to = datetime.fromisoformat(str((event.detail or {}).get("to")))
    except ValueError:
        return False
    return moved_to == visit.appointment_at


def plan_change_notices(
    session: Session, *, clock: Clock, visit_ids: Collection[int] | None = None
) -> NoticeReport:
    """Plan the texts that tell of the appointments moved lately (of `visit_ids` only, when
    given), to each number of the patient and of the caregivers who get reminders that
    may be texted; drop the queued notices of earlier moves. Idempotent. See the module."""
    now = clock.now()
    report = NoticeReport()
    query = select(VisitEvent).where(
        VisitEvent.action == "book", VisitEvent.at >= now - CHANGE_LOOKBACK
    )
    if visit_ids is not None:
        query = query.where(VisitEvent.visit_id.in_(list(visit_ids)))
    latest: dict[int, VisitEvent] = {}
    for event in session.scalars(query.order_by(VisitEvent.at, VisitEvent.id)):
        latest[event.visit_id] = event  # a later booking supersedes an earlier one
    moves = {visit_id: event for visit_id, event in latest.items() if _is_move(event)}
    if not moves:
        return report

    for old in session.scalars(
        select(OutboundMessage).where(
            OutboundMessage.visit_id.in_(list(moves)),
            OutboundMessage.rule == MOVED_RULE,
            OutboundMessage.status == MessageStatus.QUEUED,
        )
    ):
        assert old.visit_id is not None
        if not (old.dedupe_key or "").startswith(_key_prefix(old.visit_id, moves[old.visit_id].id)):
            old.status, old.drop_reason = MessageStatus.DROPPED, SUPERSEDED
            report.superseded += 1

    visits = [
        visit
        for visit in session.scalars(select(Visit).where(Visit.id.in_(list(moves))))
        if _still_that_appointment(visit, moves[visit.id])
    ]
    patients = {
        patient.id: patient
        for patient in session.scalars(
            select(Patient).where(
                Patient.id.in_({visit.patient_id for visit in visits}),
                Patient.status.in_(FOLLOWED),
            )
        )
    }
    visits = [visit for visit in visits if visit.patient_id in patients]
    if not visits:
        session.flush()
        return report
    states = {
        state.id: state
        for state in session.scalars(
            select(State).where(State.id.in_({p.state_id for p in patients.values()}))
        )
    }
    links = reminder_links_of(session, list(patients))
    recipients = {
        patient_id: recipients_of(patient, links.get(patient_id, []))
        for patient_id, patient in patients.items()
    }
    phones = {recipient.phone for found in recipients.values() for recipient in found}
    textable = {
        phone
        for phone, consent in consents_of(session, phones=phones).items()
        if consent.status is ConsentStatus.OPTED_IN and not consent.problem_code
    }
    planned = set(
        session.scalars(
            select(OutboundMessage.dedupe_key).where(
                OutboundMessage.visit_id.in_([visit.id for visit in visits]),
                OutboundMessage.rule == MOVED_RULE,
            )
        )
    )
    taken = taken_times(
        session,
        lo=now - timedelta(days=8),
        hi=now + timedelta(days=MAX_WAIT_DAYS + 8),
        phones=textable,
    )
    rows: list[dict[str, object]] = []
    for visit in visits:
        patient = patients[visit.patient_id]
        state = states[patient.state_id]
        hours = TextingHours.of(state)
        event = moves[visit.id]
        for recipient in recipients[patient.id]:
            key = f"{_key_prefix(visit.id, event.id)}{recipient.phone}"
            if recipient.phone not in textable or key in planned:
                continue
            send_at, problem = _when(
                visit, now=now, zone=recipient.zone, hours=hours, taken=taken[recipient.phone]
            )
            if send_at is None:
                continue  # too close to the appointment for a text to help
            if problem is None:
                bisect.insort(taken[recipient.phone], send_at)
                report.planned += 1
            else:
                report.capped += 1
            assert visit.appointment_at is not None
            rows.append(
                {
                    "to_phone": recipient.phone,
                    "body": reminder_body(
                        ReminderKind.APPOINTMENT,
                        visit,
                        recipient,
                        state,
                        patient.time_zone,
                        moved=True,
                    ),
                    "purpose": MessagePurpose.REMINDER.value,
                    "patient_id": patient.id,
                    "caregiver_id": recipient.caregiver_id,
                    "visit_id": visit.id,
                    "rule": MOVED_RULE,
                    "planned_on": instant_label(visit.appointment_at),
                    "dedupe_key": key,
                    "language": recipient.language,
                    "status": (
                        MessageStatus.QUEUED if problem is None else MessageStatus.DROPPED
                    ).value,
                    "drop_reason": problem,
                    "created_at": now,
                    "send_after": send_at,
                    "attempts": 0,
                }
            )
    if rows:
        table = OutboundMessage.__table__
        assert isinstance(table, Table)
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # A planner running at the same moment (another worker) cannot make a second row.
        session.execute(insert(table).on_conflict_do_nothing(index_elements=["dedupe_key"]), rows)
    session.flush()
    return report


def _when(
    visit: Visit, *, now: datetime, zone: str, hours: TextingHours, taken: list[datetime]
) -> tuple[datetime | None, str | None]:
    """When the notice goes (None: too late to help) and, if the caps leave no day before
    the appointment, why it cannot."""
    send_at = hours.next_allowed(now, zone)
    day = send_at.astimezone(ZoneInfo(zone)).date()
    if not useful_on(ReminderKind.APPOINTMENT, visit, send_at, day):
        return None, None
    problem = cap_problem(taken, send_at, zone, day=day)
    if problem is None:
        return send_at, None
    for wait in range(1, MAX_WAIT_DAYS + 1):
        later_day = day + timedelta(days=wait)
        later = hours.at(later_day, zone, SEND_HOUR)
        if not useful_on(ReminderKind.APPOINTMENT, visit, later, later_day):
            break
        if cap_problem(taken, later, zone, day=later_day) is None:
            return later, None
    return send_at, problem
