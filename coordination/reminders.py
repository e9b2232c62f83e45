"""Visit reminders planned into the outbox on a rolling horizon (30 days, not 15 years).

The outbox row is the truth. Its `dedupe_key` (visit, rule, number, and what it was
planned on: the appointment, the window's first day) makes planning idempotent; its
`planned_on` lets the dispatcher see that a visit moved since (`coordination.send_check`)."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Insert, Select, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from coordination.models import (
    LEFT_STATUSES,
    ConsentStatus,
    FollowUpPlan,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
    SmsConsent,
    Visit,
    VisitStatus,
)
from coordination.protocol import ProtocolLibrary, ReminderKind, ReminderRule, shipped_protocols
from coordination.texting import (
    BOOKED,
    CAPPED_PURPOSES,
    FOLLOWED,
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
    rule_kind,
    rule_label,
    stale_reason,
    still_useful,
)
from core.clock import Clock
from core.models import Caregiver, CaregiverLink, Patient, State

# --- planning ------------------------------------------------------------------------------

HORIZON_DAYS = 30
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


def _textable(session: Session, phones: Iterable[str]) -> set[str]:
    """The numbers that opted in and carry no provider flag."""
    wanted = list(set(phones))
    found: set[str] = set()
    for start in range(0, len(wanted), 900):
        found.update(
            session.scalars(
                select(SmsConsent.phone).where(
                    SmsConsent.phone.in_(wanted[start : start + 900]),
                    SmsConsent.status == ConsentStatus.OPTED_IN,
                    SmsConsent.problem_code.is_(None),
                )
            )
        )
    return found


def _reminder_links(
    session: Session, patient_ids: Sequence[int]
) -> dict[int, list[tuple[LinkFacts, PersonFacts]]]:
    """Caregivers who get each patient's reminders, as plain rows (for planning)."""
    links: dict[int, list[tuple[LinkFacts, PersonFacts]]] = defaultdict(list)
    for start in range(0, len(patient_ids), 900):
        rows = session.execute(
            select(
                CaregiverLink.patient_id,
                CaregiverLink.can_receive_reminders,
                Caregiver.id,
                Caregiver.mobile_phone,
                Caregiver.preferred_language,
                Caregiver.time_zone,
            )
            .join(Caregiver, Caregiver.id == CaregiverLink.caregiver_id)
            .where(
                CaregiverLink.patient_id.in_(patient_ids[start : start + 900]),
                CaregiverLink.can_receive_reminders.is_(True),
            )
        )
        for row in rows:
            links[row.patient_id].append((cast(LinkFacts, row), cast(PersonFacts, row)))
    return links


def _nominal(
    rule: ReminderRule,
    visit: VisitFacts,
    recipient: Recipient,
    hours: TextingHours,
    patient_zone: str,
) -> datetime:
    """When the rule would send, ignoring that the moment may have passed."""
    if rule.kind is ReminderKind.WINDOW_OPENS:
        day = visit.window_start - timedelta(days=rule.days_before)
    elif rule.kind is ReminderKind.APPOINTMENT:
        day = appointment_day(visit, patient_zone) - timedelta(days=rule.days_before)
    else:
        day = visit.window_end + timedelta(days=1)
    return hours.at(day, recipient.zone, SEND_HOUR)


@dataclass
class PlanReport:
    """What a planning run did."""

    planned: int = 0  # new rows waiting to be sent
    capped: int = 0  # new rows recorded as dropped because of the caps
    considered_visits: int = 0


@dataclass
class _Candidate:
    send_at: datetime
    kind: ReminderKind
    rule: ReminderRule
    visit: VisitFacts
    patient: PatientFacts
    recipient: Recipient
    key: str
    planned_on: str


def _visits_in_horizon(
    session: Session, *, today: date, now: datetime, end: datetime, patient_ids: Sequence[int]
) -> Select[*tuple[Any, ...]]:
    lead = timedelta(days=61)  # the longest days_before a rule may have, and a day
    horizon_day = end.date()
    upcoming = Visit.status == VisitStatus.DUE
    query = select(*_VISIT_COLUMNS).where(
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
    if patient_ids:
        query = query.where(Visit.patient_id.in_(patient_ids))
    return query


def plan_reminders(
    session: Session,
    *,
    clock: Clock,
    horizon_days: int = HORIZON_DAYS,
    library: ProtocolLibrary | None = None,
    patient_ids: Sequence[int] = (),
) -> PlanReport:
    """Plan the reminders due within the horizon into the outbox (all patients, or
    `patient_ids`). Idempotent: a reminder already planned (whatever became of it) is
    never planned again. Reminders whose moment passed unseen (a visit booked two days
    ahead) go at the next texting hour if they still help, the latest rule only."""
    library = library or shipped_protocols()
    now = clock.now()
    end = now + timedelta(days=horizon_days)
    today = now.date()
    report = PlanReport()
    # Plain rows, not ORM objects: planning reads tens of thousands and changes none.
    visits = cast(
        list[VisitFacts],
        list(
            session.execute(
                _visits_in_horizon(session, today=today, now=now, end=end, patient_ids=patient_ids)
            )
        ),
    )
    report.considered_visits = len(visits)
    if not visits:
        return report
    by_patient: dict[int, list[VisitFacts]] = defaultdict(list)
    for visit in visits:
        by_patient[visit.patient_id].append(visit)
    ids = sorted(by_patient)
    patients: dict[int, PatientFacts] = {}
    plans: dict[int, tuple[str, int]] = {}
    for start in range(0, len(ids), 900):
        chunk = ids[start : start + 900]
        rows = session.execute(
            select(*_PATIENT_COLUMNS).where(Patient.id.in_(chunk), Patient.status.in_(FOLLOWED))
        )
        patients.update((row.id, cast(PatientFacts, row)) for row in rows)
        plans.update(
            (pid, (code, version))
            for pid, code, version in session.execute(
                select(
                    FollowUpPlan.patient_id,
                    FollowUpPlan.therapy_code,
                    FollowUpPlan.protocol_version,
                ).where(FollowUpPlan.patient_id.in_(chunk))
            )
        )
    states = {state.id: state for state in session.scalars(select(State))}
    links = _reminder_links(session, list(patients))
    recipients = {
        pid: recipients_of(patient, links.get(pid, ())) for pid, patient in patients.items()
    }
    textable = _textable(session, (r.phone for rs in recipients.values() for r in rs))

    candidates: list[_Candidate] = []
    for pid, patient in patients.items():
        plan = plans.get(pid)
        protocol = library.get(*plan) if plan else None
        if protocol is None:
            continue
        state = states[patient.state_id]
        hours = TextingHours.of(state)
        for recipient in recipients[pid]:
            if recipient.phone not in textable:
                continue
            for visit in by_patient[pid]:
                candidates.extend(
                    _visit_candidates(
                        visit=visit,
                        patient=patient,
                        recipient=recipient,
                        rules=protocol.reminder_rules(visit.visit_key),
                        hours=hours,
                        now=now,
                        end=end,
                    )
                )
    if not candidates:
        return report
    _insert_within_caps(session, clock=clock, candidates=candidates, states=states, report=report)
    return report


def _visit_candidates(
    *,
    visit: VisitFacts,
    patient: PatientFacts,
    recipient: Recipient,
    rules: Sequence[ReminderRule],
    hours: TextingHours,
    now: datetime,
    end: datetime,
) -> list[_Candidate]:
    found: list[_Candidate] = []
    anchors: dict[ReminderKind, str | None] = {}
    by_kind: dict[ReminderKind, list[tuple[datetime, ReminderRule]]] = defaultdict(list)
    for rule in rules:
        if rule.kind not in anchors:
            anchors[rule.kind] = planned_on(rule.kind, visit)
        if anchors[rule.kind] is not None:
            by_kind[rule.kind].append(
                (_nominal(rule, visit, recipient, hours, patient.time_zone), rule)
            )
    for kind, timed in by_kind.items():
        anchor = anchors[kind]
        assert anchor is not None
        timed.sort(key=lambda pair: pair[0])
        passed = [pair for pair in timed if pair[0] <= now]
        # Of the rules whose moment passed unseen, only the latest may still go, now.
        chosen = [pair for pair in timed if pair[0] > now]
        if passed:
            chosen.insert(0, (hours.next_allowed(now, recipient.zone), passed[-1][1]))
        for send_at, rule in chosen:
            if send_at > end or not still_useful(kind, visit, send_at, recipient.zone):
                continue
            # What it rests on is part of the key: a moved appointment or window gets its
            # own reminders (the old ones are dropped before sending).
            key = f"v{visit.id}:{rule.key}:{recipient.phone}:{anchor}"
            found.append(_Candidate(send_at, kind, rule, visit, patient, recipient, key, anchor))
    return found


def _taken_times(
    session: Session, *, phones: Sequence[str], lo: datetime, hi: datetime
) -> dict[str, list[datetime]]:
    """The (sorted) times of the texts each number has between `lo` and `hi`: planned or
    gone, leaving out queued reminders that the check before sending will drop (planned on
    an appointment that moved since, a visit completed...), so that they do not crowd out
    the reminders planned in their place."""
    taken: dict[str, list[datetime]] = defaultdict(list)
    stale_check: list[tuple[str, datetime, ReminderKind, int, str | None]] = []
    for start in range(0, len(phones), 900):
        around = session.execute(
            select(
                OutboundMessage.to_phone,
                OutboundMessage.send_after,
                OutboundMessage.sent_at,
                OutboundMessage.status,
                OutboundMessage.rule,
                OutboundMessage.visit_id,
                OutboundMessage.planned_on,
            ).where(
                OutboundMessage.to_phone.in_(phones[start : start + 900]),
                OutboundMessage.purpose.in_(CAPPED_PURPOSES),
                OutboundMessage.status.in_((MessageStatus.QUEUED, *LEFT_STATUSES)),
                OutboundMessage.send_after >= lo,
                OutboundMessage.send_after <= hi,
            )
        )
        for phone, send_after, sent_at, status, rule, visit_id, planned in around:
            kind = rule_kind(rule)
            if status is MessageStatus.QUEUED and kind is not None and visit_id is not None:
                stale_check.append((phone, send_after, kind, visit_id, planned))
            else:
                taken[phone].append(sent_at or send_after)
    visit_ids = sorted({visit_id for _, _, _, visit_id, _ in stale_check})
    visits: dict[int, Visit] = {}
    for start in range(0, len(visit_ids), 900):
        visits.update(
            (v.id, v)
            for v in session.scalars(
                select(Visit).where(Visit.id.in_(visit_ids[start : start + 900]))
            )
        )
    for phone, send_after, kind, visit_id, planned in stale_check:
        visit = visits.get(visit_id)
        if visit is not None and stale_reason(kind, planned, visit) is None:
            taken[phone].append(send_after)
    for times in taken.values():
        times.sort()
    return taken


def _insert_within_caps(
    session: Session,
    *,
    clock: Clock,
    candidates: list[_Candidate],
    states: dict[int, State],
    report: PlanReport,
) -> None:
    now = clock.now()
    # The keys already planned for these visits (by the visit index: a few rows per visit).
    existing: set[str] = set()
    visit_ids = sorted({c.visit.id for c in candidates})
    for start in range(0, len(visit_ids), 900):
        existing.update(
            k
            for k in session.scalars(
                select(OutboundMessage.dedupe_key).where(
                    OutboundMessage.visit_id.in_(visit_ids[start : start + 900]),
                    OutboundMessage.dedupe_key.is_not(None),
                )
            )
            if k is not None
        )
    fresh = [c for c in candidates if c.key not in existing]
    if not fresh:
        return
    # What each number already has around the new ones: planned or gone, not dropped.
    lo = min(c.send_at for c in fresh) - timedelta(days=7)
    hi = max(c.send_at for c in fresh) + timedelta(days=7)
    phones = list({c.recipient.phone for c in fresh})
    taken = _taken_times(session, phones=phones, lo=lo, hi=hi)
    fresh.sort(key=lambda c: (c.send_at, _KIND_RANK[c.kind]))
    rows: list[dict[str, object]] = []
    for c in fresh:
        times = taken[c.recipient.phone]
        problem = cap_problem(times, c.send_at, c.recipient.zone)
        if problem and c.kind is ReminderKind.WINDOW_OPENS:
            # A "time to book" notice can wait a day or two; appointments and overdue
            # notices cannot.
            hours = TextingHours.of(states[c.patient.state_id])
            for days in range(1, 7):
                later = c.send_at + timedelta(days=days)
                later = hours.at(
                    later.astimezone(ZoneInfo(c.recipient.zone)).date(), c.recipient.zone, SEND_HOUR
                )
                if not still_useful(c.kind, c.visit, later, c.recipient.zone):
                    break
                if cap_problem(times, later, c.recipient.zone) is None:
                    c.send_at, problem = later, None
                    break
        if problem is None:
            bisect.insort(times, c.send_at)
            report.planned += 1
        else:
            report.capped += 1
        state = states[c.patient.state_id]
        rows.append(
            {
                "to_phone": c.recipient.phone,
                "body": reminder_body(c.kind, c.visit, c.recipient, state, c.patient.time_zone),
                "purpose": MessagePurpose.REMINDER,
                "patient_id": c.patient.id,
                "caregiver_id": c.recipient.caregiver_id,
                "visit_id": c.visit.id,
                "rule": rule_label(c.kind, c.rule.key),
                "planned_on": c.planned_on,
                "dedupe_key": c.key,
                "language": c.recipient.language,
                "status": MessageStatus.QUEUED if problem is None else MessageStatus.DROPPED,
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
    for row in rows:  # the table's own values, so that every row has the same shape
        row["purpose"] = MessagePurpose.REMINDER.value
        row["status"] = row["status"].value  # type: ignore[attr-defined]
    # A concurrent planner (another worker without the lock) cannot make a second row.
    statement = insert(table).on_conflict_do_nothing(index_elements=["dedupe_key"])
    _insert_many(session.connection(), statement, table, rows)
    session.flush()


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
    for name in names:  # column by column: a few converters, called in tight loops
        process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            for row in rows:
                row[name] = process(row[name])
    pick = itemgetter(*names)
    connection.exec_driver_sql(str(compiled), [pick(row) for row in rows])
