"""Visit reminders planned into the outbox on a rolling horizon (30 days, not 15 years).

The outbox row is the truth. Its `dedupe_key` (visit, rule, number, and what it was
planned on: the appointment, the window's first day) makes planning idempotent; its
`planned_on` lets the dispatcher see that a visit moved since
(`coordination.texting.send_check`)."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from operator import attrgetter, itemgetter
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Insert, Select, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from coordination.followup.models import FollowUpPlan, Visit, VisitStatus
from coordination.followup.protocol import Protocol as FollowUpProtocol
from coordination.followup.protocol import (
    ProtocolLibrary,
    ReminderKind,
    ReminderRule,
    shipped_protocols,
)
from coordination.questionnaires.due import AnswersWaiting, answers_waiting
from coordination.texting.changes import plan_change_notices
from coordination.texting.models import (
    ConsentStatus,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
    SmsConsent,
)
from coordination.texting.rules import (
    BOOKED,
    FOLLOWED,
    NUDGED_KINDS,
    OVERDUE_NOTICE_DAYS,
    SEND_HOUR,
    LinkFacts,
    PatientFacts,
    PersonFacts,
    Recipient,
    TextingHours,
    VisitFacts,
    appointment_day,
    cap_problem,
    planned_on,
    recipients_of,
    reminder_body,
    rule_label,
    taken_times,
    useful_on,
)
from coordination.travel.requests import arranged_visit_ids_ahead
from core.batch import collector_paused
from core.clock import Clock
from core.models import Caregiver, CaregiverLink, Patient, State

# --- planning ------------------------------------------------------------------------------

HORIZON_DAYS = 30
# When texts of the same moment compete for a number's caps, the more urgent go first.
_KIND_RANK = {ReminderKind.OVERDUE: 0, ReminderKind.APPOINTMENT: 1, ReminderKind.WINDOW_OPENS: 2}

_VISIT_COLUMNS = (
    Visit.id,
    Visit.patient_id,
    Visit.visit_key,
    Visit.status,
    Visit.window_start,
    Visit.window_end,
    Visit.appointment_at,
    Visit.appointment_zone,
    Visit.missed_acknowledged_at,
)
_PATIENT_COLUMNS = (
    Patient.id,
    Patient.state_id,
    Patient.mobile_phone,
    Patient.preferred_language,
    Patient.time_zone,
)


def _textable(session: Session) -> set[str]:
    """The numbers that opted in and carry no provider flag."""
    return set(
        session.scalars(
            select(SmsConsent.phone).where(
                SmsConsent.status == ConsentStatus.OPTED_IN, SmsConsent.problem_code.is_(None)
            )
        )
    )


def _reminder_links(session: Session) -> dict[int, list[tuple[LinkFacts, PersonFacts]]]:
    """Caregivers who get each patient's reminders, as plain rows."""
    links: dict[int, list[tuple[LinkFacts, PersonFacts]]] = defaultdict(list)
    query = (
        select(
            CaregiverLink.patient_id,
            CaregiverLink.can_receive_reminders,
            Caregiver.id,
            Caregiver.mobile_phone,
            Caregiver.preferred_language,
            Caregiver.time_zone,
        )
        .join(Caregiver, Caregiver.id == CaregiverLink.caregiver_id)
        .where(CaregiverLink.can_receive_reminders.is_(True))
    )
    for row in session.execute(query):
        links[row.patient_id].append((cast(LinkFacts, row), cast(PersonFacts, row)))
    return links


@dataclass
class PlanReport:
    """What a planning run did."""

    planned: int = 0  # new rows waiting to be sent
    capped: int = 0  # new rows recorded as dropped because of the caps
    considered_visits: int = 0
    notices: int = 0  # texts telling of a moved appointment, waiting to be sent


class _PatientRow(PatientFacts, Protocol):
    """A followed patient with their plan's protocol (one row of the planning query)."""

    @property
    def therapy_code(self) -> str: ...
    @property
    def protocol_version(self) -> int: ...


@dataclass(slots=True)
class _Candidate:
    send_at: datetime
    day: date  # send_at's day in the recipient's zone
    kind: ReminderKind
    rank: int  # the kind's urgency (_KIND_RANK)
    rule: ReminderRule
    visit: VisitFacts
    patient: PatientFacts
    recipient: Recipient
    key: str
    planned_on: str
    # A questionnaire of the visit waits for this recipient's answers: the text nudges.
    nudge: bool = False


def _visits_in_horizon(*, today: date, now: datetime, end: datetime) -> Select[*tuple[Any, ...]]:
    lead = timedelta(days=61)  # the longest days_before a rule may have, and a day
    horizon_day = end.date()
    upcoming = Visit.status == VisitStatus.DUE
    return select(*_VISIT_COLUMNS).where(
        (upcoming & (Visit.window_start > today) & (Visit.window_start <= horizon_day + lead))
        | (
            Visit.status.in_(BOOKED)
            & (Visit.appointment_at > now)
            & (Visit.appointment_at <= end + lead)
        )
        | (
            (Visit.status == VisitStatus.MISSED)
            & Visit.missed_acknowledged_at.is_(None)
            & (Visit.window_end >= today - timedelta(days=OVERDUE_NOTICE_DAYS + 1))
        )
    )


def plan_reminders(
    session: Session,
    *,
    clock: Clock,
    horizon_days: int = HORIZON_DAYS,
    library: ProtocolLibrary | None = None,
) -> PlanReport:
    """Plan the reminders due within the horizon into the outbox. Idempotent: a reminder
    already planned (whatever became of it) is never planned again. Reminders whose moment
    passed unseen (a visit booked two days ahead) go at the next texting hour if they still
    help, the latest rule only.

    The texts that tell of an appointment moved lately come first
    (`changes.plan_change_notices`): they are the more urgent, and the reminders planned
    after them count them in the caps."""
    with collector_paused():
        notices = plan_change_notices(session, clock=clock)
        report = _plan(
            session,
            clock=clock,
            horizon_days=horizon_days,
            library=library or shipped_protocols(),
        )
    report.notices = notices.planned
    report.capped += notices.capped
    return report


def _plan(
    session: Session,
    *,
    clock: Clock,
    horizon_days: int,
    library: ProtocolLibrary,
) -> PlanReport:
    now = clock.now()
    end = now + timedelta(days=horizon_days)
    report = PlanReport()
    # Plain rows, not ORM objects: planning reads tens of thousands and changes none.
    horizon = _visits_in_horizon(today=now.date(), now=now, end=end)
    visits = cast(list[VisitFacts], list(session.execute(horizon)))
    report.considered_visits = len(visits)
    if not visits:
        return report
    by_patient: dict[int, list[VisitFacts]] = defaultdict(list)
    for visit in visits:
        by_patient[visit.patient_id].append(visit)
    # Every followed patient, link and consent is read at once: cheaper than naming the
    # ten thousand that have a visit in the horizon (or subqueries that each read it again).
    query = (
        select(*_PATIENT_COLUMNS, FollowUpPlan.therapy_code, FollowUpPlan.protocol_version)
        .join(FollowUpPlan, FollowUpPlan.patient_id == Patient.id)
        .where(Patient.status.in_(FOLLOWED))
    )
    patients = [cast(_PatientRow, row) for row in session.execute(query) if row.id in by_patient]
    states = {state.id: state for state in session.scalars(select(State))}
    links = _reminder_links(session)
    recipients = {
        patient.id: recipients_of(patient, links.get(patient.id, ())) for patient in patients
    }
    textable = _textable(session)

    waiting = answers_waiting(session, visit_ids=horizon.with_only_columns(Visit.id))
    candidates: list[_Candidate] = []
    for patient in patients:
        protocol = library.version_or_current(patient.therapy_code, patient.protocol_version)
        if protocol is None:
            continue
        texted = [r for r in recipients[patient.id] if r.phone in textable]
        if not texted:
            continue
        hours = TextingHours.of(states[patient.state_id])
        for visit in by_patient[patient.id]:
            _add_candidates(
                candidates,
                visit=visit,
                patient=patient,
                recipients=texted,
                rules=protocol.reminder_rules(visit.visit_key),
                hours=hours,
                now=now,
                end=end,
            )
        _mark_nudges(candidates, patient=patient, protocol=protocol, waiting=waiting)
    if not candidates:
        return report
    _insert_within_caps(
        session,
        clock=clock,
        candidates=candidates,
        states=states,
        visit_ids=horizon.with_only_columns(Visit.id),
        report=report,
    )
    return report


def _mark_nudges(
    candidates: list[_Candidate],
    *,
    patient: _PatientRow,
    protocol: FollowUpProtocol,
    waiting: AnswersWaiting,
) -> None:
    """Mark the patient's new candidates whose text adds the questionnaire nudge."""
    for c in reversed(candidates):
        if c.patient is not patient:
            break
        if c.kind not in NUDGED_KINDS:
            continue
        definition = protocol.visit(c.visit.visit_key)
        c.nudge = (
            definition is not None
            and waiting.waiting(c.visit.id, definition.questionnaires)
            and waiting.may_answer(patient.id, c.recipient.caregiver_id)
        )


def _nominal_days(
    rules: Sequence[ReminderRule], visit: VisitFacts, patient_zone: str
) -> dict[ReminderKind, list[tuple[date, ReminderRule]]]:
    """The rules that fit the visit, by kind, with the local day each would send on
    (whoever receives it: the day is the visit's, the hour the recipient's), earliest
    first."""
    by_kind: dict[ReminderKind, list[tuple[date, ReminderRule]]] = defaultdict(list)
    appointment: date | None = None
    for rule in rules:
        if rule.kind is ReminderKind.WINDOW_OPENS:
            day = visit.window_start - timedelta(days=rule.days_before)
        elif rule.kind is ReminderKind.APPOINTMENT:
            appointment = appointment or appointment_day(visit, patient_zone)
            day = appointment - timedelta(days=rule.days_before)
        else:
            day = visit.window_end + timedelta(days=1)
        by_kind[rule.kind].append((day, rule))
    for timed in by_kind.values():
        timed.sort(key=itemgetter(0))
    return by_kind


def _add_candidates(
    found: list[_Candidate],
    *,
    visit: VisitFacts,
    patient: PatientFacts,
    recipients: Sequence[Recipient],
    rules: Sequence[ReminderRule],
    hours: TextingHours,
    now: datetime,
    end: datetime,
) -> None:
    """Append the reminders of one visit to each recipient."""
    anchors = {kind: planned_on(kind, visit) for kind in {rule.kind for rule in rules}}
    fitting = [rule for rule in rules if anchors[rule.kind] is not None]
    if not fitting:
        return
    for kind, timed in _nominal_days(fitting, visit, patient.time_zone).items():
        anchor = anchors[kind]
        assert anchor is not None
        rank = _KIND_RANK[kind]
        for recipient in recipients:
            zone = recipient.zone
            chosen = [(hours.at(day, zone, SEND_HOUR), day, rule) for day, rule in timed]
            passed = [moment for moment in chosen if moment[0] <= now]
            if passed:
                # Of the rules whose moment passed unseen, only the latest may still go, now.
                at = hours.next_allowed(now, zone)
                day = at.astimezone(ZoneInfo(zone)).date()
                chosen = [(at, day, passed[-1][2]), *chosen[len(passed) :]]
            for send_at, day, rule in chosen:
                if send_at > end or not useful_on(kind, visit, send_at, day):
                    continue
                # What it rests on is part of the key: a moved appointment or window gets
                # its own reminders (the old ones are dropped before sending).
                key = f"v{visit.id}:{rule.key}:{recipient.phone}:{anchor}"
                found.append(
                    _Candidate(
                        send_at, day, kind, rank, rule, visit, patient, recipient, key, anchor
                    )
                )


def _insert_within_caps(
    session: Session,
    *,
    clock: Clock,
    candidates: list[_Candidate],
    states: dict[int, State],
    visit_ids: Select[tuple[int]],
    report: PlanReport,
) -> None:
    now = clock.now()
    # The keys already planned for these visits (by the visit index: a few rows per visit).
    existing = set(
        session.scalars(
            select(OutboundMessage.dedupe_key).where(
                OutboundMessage.visit_id.in_(visit_ids),
                OutboundMessage.dedupe_key.is_not(None),
            )
        )
    )
    fresh = [c for c in candidates if c.key not in existing]
    if not fresh:
        return
    # What each number already has around the new ones: planned or gone, not dropped.
    lo = min(c.send_at for c in fresh) - timedelta(days=7)
    hi = max(c.send_at for c in fresh) + timedelta(days=7)
    taken = taken_times(session, lo=lo, hi=hi)
    fresh.sort(key=attrgetter("send_at", "rank"))
    bodies: dict[tuple[object, ...], str] = {}
    travel = arranged_visit_ids_ahead(session, now=now)
    rows: list[dict[str, object]] = []
    for c in fresh:
        zone = c.recipient.zone
        times = taken[c.recipient.phone]
        problem = cap_problem(times, c.send_at, zone, day=c.day)
        if problem and c.kind is ReminderKind.WINDOW_OPENS:
            # A "time to book" notice can wait a day or two; appointments and overdue
            # notices cannot.
            hours = TextingHours.of(states[c.patient.state_id])
            for days in range(1, 7):
                day = c.day + timedelta(days=days)
                later = hours.at(day, zone, SEND_HOUR)
                if not useful_on(c.kind, c.visit, later, day):
                    break
                if cap_problem(times, later, zone, day=day) is None:
                    c.send_at, c.day, problem = later, day, None
                    break
        if problem is None:
            bisect.insort(times, c.send_at)
            report.planned += 1
            status = MessageStatus.QUEUED
        else:
            report.capped += 1
            status = MessageStatus.DROPPED
        rows.append(
            {
                "to_phone": c.recipient.phone,
                "body": _body(bodies, c, states, travel),
                "purpose": MessagePurpose.REMINDER.value,
                "patient_id": c.patient.id,
                "caregiver_id": c.recipient.caregiver_id,
                "visit_id": c.visit.id,
                "rule": rule_label(c.kind, c.rule.key),
                "planned_on": c.planned_on,
                "dedupe_key": c.key,
                "language": c.recipient.language,
                "status": status.value,
                "drop_reason": problem,
                "created_at": now,
                "send_after": c.send_at,
                "attempts": 0,
            }
        )
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = OutboundMessage.__table__
    assert isinstance(table, Table)
    # A concurrent planner (another worker without the lock) cannot make a second row.
    statement = insert(table).on_conflict_do_nothing(index_elements=["dedupe_key"])
    _insert_many(session.connection(), statement, table, rows)
    session.flush()


def _body(
    bodies: dict[tuple[object, ...], str],
    c: _Candidate,
    states: dict[int, State],
    travel: set[int],
) -> str:
    """The reminder's words, made once per distinct text: the words depend on the kind,
    the recipient's role and language, the state, and the window's days or the
    appointment's local time, confirmation and arranged travel (`travel`, visit ids) (as
    `rules.reminder_body` uses them)."""
    visit = c.visit
    key: tuple[object, ...] = (
        c.rank,
        c.recipient.is_caregiver,
        c.recipient.language,
        c.patient.state_id,
        c.nudge,
    )
    if c.kind is ReminderKind.WINDOW_OPENS:
        key += (visit.window_start, visit.window_end)
    elif c.kind is ReminderKind.APPOINTMENT:
        # A confirmed appointment has words of its own (it is not asked to confirm again).
        key += (
            visit.appointment_at,
            visit.appointment_zone or c.patient.time_zone,
            visit.status is VisitStatus.CONFIRMED,
            visit.id in travel,
        )
    body = bodies.get(key)
    if body is None:
        state = states[c.patient.state_id]
        body = reminder_body(
            c.kind,
            visit,
            c.recipient,
            state,
            c.patient.time_zone,
            travel_arranged=c.kind is ReminderKind.APPOINTMENT and visit.id in travel,
            questionnaire_waiting=c.nudge,
        )
        bodies[key] = body
    return body


def _insert_many(
    connection: Connection, statement: Insert, table: Table, rows: list[dict[str, object]]
) -> None:
    """executemany on the driver, each value converted by its column's own type for this
    database (exactly what SQLAlchemy does), without SQLAlchemy's per-row bookkeeping: it
    was a third of the planning time."""
    dialect = connection.dialect
    compiled = statement.compile(dialect=dialect, column_keys=list(rows[0]))
    names = compiled.positiontup
    if names is None:  # a driver with named parameters: SQLAlchemy's own way
        for start in range(0, len(rows), 2000):
            connection.execute(statement, rows[start : start + 2000])
        return
    for name in names:  # column by column, each distinct value converted once
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            converted = {value: process(value) for value in {row[name] for row in rows}}
            for row in rows:
                row[name] = converted[row[name]]
    pick = itemgetter(*names)
    connection.exec_driver_sql(str(compiled), [pick(row) for row in rows])
