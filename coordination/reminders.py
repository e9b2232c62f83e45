"""Visit reminders: planned into the outbox on a rolling horizon, checked again right
before they leave, and sent by hand by coordinators, always within consent, the state's
texting hours and the caps (one text a day and three a week per phone number).

The outbox row is the truth. Its `dedupe_key` (visit, rule, number, and what it was
planned on: the appointment, the window's first day) makes planning idempotent; its
`planned_on` lets the dispatcher see that a visit moved since. Send times are computed in the
recipient's own zone, so that 10:00 stays 10:00 across daylight-saving changes."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from operator import itemgetter
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Insert, Select, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from coordination.models import (
    LEFT_STATUSES,
    OPEN_VISIT_STATUSES,
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
from coordination.reminder_texts import (
    ONE_OFF,
    REMINDERS,
    Template,
    format_day,
    format_time,
    render,
)
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.models import Caregiver, CaregiverLink, Language, Patient, PatientStatus, State
from core.phones import display_phone
from core.text import N_


class VisitFacts(Protocol):
    """What planning reads of a visit (an ORM Visit, or a plain row of its columns)."""

    @property
    def id(self) -> int: ...
    @property
    def patient_id(self) -> int: ...
    @property
    def visit_key(self) -> str: ...
    @property
    def status(self) -> VisitStatus: ...
    @property
    def window_start(self) -> date: ...
    @property
    def window_end(self) -> date: ...
    @property
    def appointment_at(self) -> datetime | None: ...
    @property
    def appointment_zone(self) -> str | None: ...
    @property
    def missed_acknowledged_at(self) -> datetime | None: ...


class PersonFacts(Protocol):
    """What planning reads of a patient or a caregiver."""

    @property
    def id(self) -> int: ...
    @property
    def mobile_phone(self) -> str | None: ...
    @property
    def preferred_language(self) -> Language: ...
    @property
    def time_zone(self) -> str: ...


class PatientFacts(PersonFacts, Protocol):
    @property
    def state_id(self) -> int: ...


class LinkFacts(Protocol):
    @property
    def can_receive_reminders(self) -> bool: ...


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

HORIZON_DAYS = 30
# Reminders go out at this local hour (moved into the state's texting hours if outside).
SEND_HOUR = 10
MAX_PER_DAY = 1
MAX_PER_WEEK = 3
# Texts further than this from a candidate cannot share a week with it (a day to spare for
# the zones' offsets).
_CAP_REACH = timedelta(days=8)
# An overdue notice still makes sense this many days after the window closed.
OVERDUE_NOTICE_DAYS = 7
# An appointment reminder is pointless this close to the appointment.
APPOINTMENT_CUTOFF = timedelta(hours=2)
FOLLOWED = (PatientStatus.ENROLLED, PatientStatus.ACTIVE)
BOOKED = (VisitStatus.SCHEDULED, VisitStatus.RESCHEDULED, VisitStatus.CONFIRMED)
# Purposes bound by consent, texting hours and the caps (invitations and reset codes are
# asked for by the person, at that moment).
CAPPED_PURPOSES = (MessagePurpose.REMINDER, MessagePurpose.ONE_OFF)
MANUAL_RULE = "manual"
_KIND_RANK = {ReminderKind.OVERDUE: 0, ReminderKind.APPOINTMENT: 1, ReminderKind.WINDOW_OPENS: 2}


# --- texting hours -----------------------------------------------------------------------


@dataclass(frozen=True)
class TextingHours:
    """The local hours texts may arrive (from inclusive, until exclusive)."""

    from_hour: int = 8
    until_hour: int = 21

    @classmethod
    def of(cls, state: State | None) -> TextingHours:
        if state is None:
            return cls()
        return cls(from_hour=state.texts_from_hour, until_hour=state.texts_until_hour)

    def allows(self, moment: datetime, zone: str) -> bool:
        local = moment.astimezone(ZoneInfo(zone))
        return self.from_hour <= local.hour < self.until_hour

    def next_allowed(self, moment: datetime, zone: str) -> datetime:
        """`moment` if texts may arrive then, else the next start of texting hours."""
        if self.allows(moment, zone):
            return moment
        local = moment.astimezone(ZoneInfo(zone))
        day = local.date() if local.hour < self.from_hour else local.date() + timedelta(days=1)
        return self.at(day, zone, self.from_hour)

    def at(self, day: date, zone: str, hour: int) -> datetime:
        """`hour`:00 on `day` in `zone` (kept inside texting hours), in UTC."""
        return _local_hour(day, zone, min(max(hour, self.from_hour), self.until_hour - 1))

    def describe(self) -> str:
        return f"{self.from_hour}:00-{self.until_hour}:00"


@lru_cache(maxsize=65536)
def _local_hour(day: date, zone: str, hour: int) -> datetime:
    # Planning asks this for the same few days and zones thousands of times.
    return datetime.combine(day, time(hour), tzinfo=ZoneInfo(zone)).astimezone(UTC)


# --- caps --------------------------------------------------------------------------------


def cap_problem(sent: Sequence[datetime], candidate: datetime, zone: str) -> str | None:
    """Why one more text at `candidate` would break the caps, given the (sorted) times of
    the number's other texts; None when it may go.

    Both caps count days of the recipient's calendar: one text a day, and three in any
    seven consecutive days (so that a clock change never makes the eighth day count)."""
    if not sent:
        return None
    tz = ZoneInfo(zone)
    day = candidate.astimezone(tz).date()
    near = sent[
        bisect.bisect_left(sent, candidate - _CAP_REACH) : bisect.bisect_right(
            sent, candidate + _CAP_REACH
        )
    ]
    days = [moment.astimezone(tz).date() for moment in near]
    if days.count(day) >= MAX_PER_DAY:
        return "cap: already one text that day"
    if len(days) < MAX_PER_WEEK:
        return None
    for back in range(7):
        first = day - timedelta(days=back)
        last = first + timedelta(days=6)
        if sum(1 for other in days if first <= other <= last) >= MAX_PER_WEEK:
            return "cap: already three texts that week"
    return None


# --- who gets a patient's texts --------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """A phone that gets a patient's reminders, in whose language and zone."""

    phone: str
    language: str
    zone: str
    caregiver_id: int | None  # None: the patient's own number

    @property
    def is_caregiver(self) -> bool:
        return self.caregiver_id is not None


def recipients_of(
    patient: PersonFacts, links: Iterable[tuple[LinkFacts, PersonFacts]]
) -> list[Recipient]:
    """The patient's own number, then caregivers who may receive reminders; a number shared
    by several gets one text (the patient's, in the patient's language)."""
    found: dict[str, Recipient] = {}
    if patient.mobile_phone:
        found[patient.mobile_phone] = Recipient(
            patient.mobile_phone, patient.preferred_language.value, patient.time_zone, None
        )
    for link, caregiver in sorted(links, key=lambda pair: pair[1].id):
        if link.can_receive_reminders and caregiver.mobile_phone:
            found.setdefault(
                caregiver.mobile_phone,
                Recipient(
                    caregiver.mobile_phone,
                    caregiver.preferred_language.value,
                    caregiver.time_zone,
                    caregiver.id,
                ),
            )
    return list(found.values())


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


def _links_by_patient(
    session: Session, patient_ids: Sequence[int]
) -> dict[int, list[tuple[CaregiverLink, Caregiver]]]:
    links: dict[int, list[tuple[CaregiverLink, Caregiver]]] = defaultdict(list)
    for start in range(0, len(patient_ids), 900):
        rows = session.execute(
            select(CaregiverLink, Caregiver)
            .join(Caregiver, Caregiver.id == CaregiverLink.caregiver_id)
            .where(
                CaregiverLink.patient_id.in_(patient_ids[start : start + 900]),
                CaregiverLink.can_receive_reminders.is_(True),
            )
        )
        for link, caregiver in rows:
            links[link.patient_id].append((link, caregiver))
    return links


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


# --- what a reminder is planned on ----------------------------------------------------------


def rule_label(kind: ReminderKind, key: str) -> str:
    """The outbox's `rule`: the kind and the protocol's key ("appointment:appt-1d")."""
    return f"{kind.value}:{key}"


def rule_kind(rule: str | None) -> ReminderKind | None:
    if not rule or ":" not in rule:
        return None
    try:
        return ReminderKind(rule.split(":", 1)[0])
    except ValueError:
        return None


def _instant_label(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def planned_on(kind: ReminderKind, visit: VisitFacts) -> str | None:
    """What a reminder of `kind` rests on, as text; None when the visit does not fit it."""
    if kind is ReminderKind.WINDOW_OPENS:
        return visit.window_start.isoformat() if visit.status is VisitStatus.DUE else None
    if kind is ReminderKind.APPOINTMENT:
        if visit.status in BOOKED and visit.appointment_at is not None:
            return _instant_label(visit.appointment_at)
        return None
    if visit.status is VisitStatus.MISSED and visit.missed_acknowledged_at is None:
        return visit.window_end.isoformat()
    return None


def _appointment_day(visit: VisitFacts, patient_zone: str) -> date:
    assert visit.appointment_at is not None
    return visit.appointment_at.astimezone(ZoneInfo(visit.appointment_zone or patient_zone)).date()


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
        day = _appointment_day(visit, patient_zone) - timedelta(days=rule.days_before)
    else:
        day = visit.window_end + timedelta(days=1)
    return hours.at(day, recipient.zone, SEND_HOUR)


def _still_useful(kind: ReminderKind, visit: VisitFacts, at: datetime, zone: str) -> bool:
    """Would a reminder of `kind` sent at `at` still help?"""
    local_day = at.astimezone(ZoneInfo(zone)).date()
    if kind is ReminderKind.WINDOW_OPENS:
        return local_day < visit.window_start
    if kind is ReminderKind.APPOINTMENT:
        assert visit.appointment_at is not None
        return at < visit.appointment_at - APPOINTMENT_CUTOFF
    return local_day <= visit.window_end + timedelta(days=OVERDUE_NOTICE_DAYS)


@lru_cache(maxsize=256)
def _program_phone(phone: str) -> str:
    return display_phone(phone)


def _body(
    kind: ReminderKind, visit: VisitFacts, recipient: Recipient, state: State, patient_zone: str
) -> str:
    template = REMINDERS[kind, recipient.is_caregiver]
    language = recipient.language
    values = {"program": state.program_name, "phone": _program_phone(state.program_phone)}
    if kind is ReminderKind.WINDOW_OPENS:
        values |= {
            "start": format_day(visit.window_start, language),
            "end": format_day(visit.window_end, language),
        }
    elif kind is ReminderKind.APPOINTMENT:
        assert visit.appointment_at is not None
        local = visit.appointment_at.astimezone(ZoneInfo(visit.appointment_zone or patient_zone))
        values |= {
            "date": format_day(local.date(), language),
            "time": format_time(local, language),
        }
    return render(template, language, **values)


# --- planning ------------------------------------------------------------------------------


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
            if send_at > end or not _still_useful(kind, visit, send_at, recipient.zone):
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
        if visit is not None and _visit_verdict(kind, planned, visit) is None:
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
                if not _still_useful(c.kind, c.visit, later, c.recipient.zone):
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
                "body": _body(c.kind, c.visit, c.recipient, state, c.patient.time_zone),
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


# --- the check right before sending ---------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What the dispatcher does with a due message: send it, drop it, or wait."""

    send: bool
    drop_reason: str | None = None
    defer_until: datetime | None = None
    note: str | None = None

    @classmethod
    def ok(cls) -> Verdict:
        return cls(send=True)

    @classmethod
    def drop(cls, reason: str) -> Verdict:
        return cls(send=False, drop_reason=reason)

    @classmethod
    def wait(cls, until: datetime, note: str) -> Verdict:
        return cls(send=False, defer_until=until, note=note)


_VISIT_GONE = {
    VisitStatus.COMPLETED: "the visit was completed",
    VisitStatus.CANCELLED: "the visit was cancelled",
    VisitStatus.MISSED: "the visit was missed",
}


def _visit_verdict(kind: ReminderKind, planned: str | None, visit: Visit) -> str | None:
    """Why a reminder planned on the visit (as `planned`, its `planned_on`) no longer fits
    it; None when it does."""
    anchor = planned_on(kind, visit)
    if anchor == planned:
        return None
    if kind is ReminderKind.OVERDUE:
        if visit.status is VisitStatus.MISSED:
            return "a coordinator already followed up"
        return _VISIT_GONE.get(visit.status, "the visit was booked again")
    if visit.status in _VISIT_GONE:
        return _VISIT_GONE[visit.status]
    if kind is ReminderKind.WINDOW_OPENS:
        return "an appointment was booked" if visit.status in BOOKED else "the visit moved"
    return "the appointment moved" if visit.status in BOOKED else "the appointment was cancelled"


def check_before_sending(
    session: Session, *, clock: Clock, messages: Sequence[OutboundMessage]
) -> dict[int, Verdict]:
    """Look at due messages again, right before they leave: consent, the patient, the
    visit (completed, cancelled, moved), a caregiver's right, texting hours and the caps.

    Loads what it needs in a few queries whatever the number of messages."""
    now = clock.now()
    verdicts: dict[int, Verdict] = {}
    if not messages:
        return verdicts
    phones = {m.to_phone for m in messages}
    consents = {
        c.phone: c for c in session.scalars(select(SmsConsent).where(SmsConsent.phone.in_(phones)))
    }
    capped = [m for m in messages if m.purpose in CAPPED_PURPOSES]
    patient_ids = {m.patient_id for m in capped if m.patient_id is not None}
    patients = {
        p.id: p for p in session.scalars(select(Patient).where(Patient.id.in_(patient_ids)))
    }
    states = {s.id: s for s in session.scalars(select(State))} if capped else {}
    visit_ids = {m.visit_id for m in capped if m.visit_id is not None}
    visits = {v.id: v for v in session.scalars(select(Visit).where(Visit.id.in_(visit_ids)))}
    caregiver_ids = {m.caregiver_id for m in capped if m.caregiver_id is not None}
    reminder_links = {
        (link.caregiver_id, link.patient_id): (link, caregiver)
        for link, caregiver in session.execute(
            select(CaregiverLink, Caregiver)
            .join(Caregiver, Caregiver.id == CaregiverLink.caregiver_id)
            .where(CaregiverLink.caregiver_id.in_(caregiver_ids))
        )
    }
    sent: dict[str, list[datetime]] = defaultdict(list)
    capped_phones = {m.to_phone for m in capped}
    if capped_phones:
        rows = session.execute(
            select(
                OutboundMessage.to_phone, OutboundMessage.sent_at, OutboundMessage.claimed_at
            ).where(
                OutboundMessage.to_phone.in_(capped_phones),
                OutboundMessage.purpose.in_(CAPPED_PURPOSES),
                OutboundMessage.status.in_(LEFT_STATUSES),
                OutboundMessage.send_after >= now - timedelta(days=8),
                OutboundMessage.send_after <= now,
            )
        )
        for phone, sent_at, claimed_at in rows:
            moment = sent_at or claimed_at
            if moment is not None:
                sent[phone].append(moment)
    for times in sent.values():
        times.sort()

    for message in sorted(messages, key=lambda m: (m.send_after, m.id)):
        consent = consents.get(message.to_phone)
        if consent is not None and consent.status is ConsentStatus.OPTED_OUT:
            verdicts[message.id] = Verdict.drop("the number opted out (STOP)")
            continue
        if message.purpose not in CAPPED_PURPOSES:
            verdicts[message.id] = Verdict.ok()
            continue
        if consent is None:
            verdicts[message.id] = Verdict.drop("the number never opted in to texts")
            continue
        if consent.problem_code:
            verdicts[message.id] = Verdict.drop(f"the number is flagged ({consent.problem_code})")
            continue
        patient = patients.get(message.patient_id or -1)
        if patient is None or patient.status not in FOLLOWED:
            verdicts[message.id] = Verdict.drop("the patient is no longer followed")
            continue
        zone = patient.time_zone
        if message.caregiver_id is not None:
            pair = reminder_links.get((message.caregiver_id, patient.id))
            if pair is None or not pair[0].can_receive_reminders:
                verdicts[message.id] = Verdict.drop("the caregiver no longer gets reminders")
                continue
            if pair[1].mobile_phone != message.to_phone:
                verdicts[message.id] = Verdict.drop("the caregiver's number changed")
                continue
            zone = pair[1].time_zone
        elif patient.mobile_phone != message.to_phone:
            verdicts[message.id] = Verdict.drop("the patient's number changed")
            continue
        kind = rule_kind(message.rule)
        if kind is not None and message.visit_id is not None:
            visit = visits.get(message.visit_id)
            reason = (
                "the visit is gone"
                if visit is None
                else _visit_verdict(kind, message.planned_on, visit)
            )
            if reason is None and visit is not None and not _still_useful(kind, visit, now, zone):
                reason = "too late to help"
            if reason is not None:
                verdicts[message.id] = Verdict.drop(reason)
                continue
        hours = TextingHours.of(states.get(patient.state_id))
        if not hours.allows(now, zone):
            verdicts[message.id] = Verdict.wait(
                hours.next_allowed(now, zone), f"waiting for texting hours ({hours.describe()})"
            )
            continue
        times = sent[message.to_phone]
        problem = cap_problem(times, now, zone)
        if problem is not None:
            tomorrow = now.astimezone(ZoneInfo(zone)).date() + timedelta(days=1)
            verdicts[message.id] = Verdict.wait(hours.at(tomorrow, zone, SEND_HOUR), problem)
            continue
        bisect.insort(times, now)
        verdicts[message.id] = Verdict.ok()
    return verdicts


# --- coordinators sending by hand -----------------------------------------------------------


@dataclass(frozen=True)
class ManualOutcome:
    """What became of a text a coordinator asked for, for one number."""

    phone: str
    is_caregiver: bool
    queued: bool
    reason: str | None  # msgid with params, when refused


def texting_refusal(
    session: Session, *, clock: Clock, recipient: Recipient, hours: TextingHours
) -> str | None:
    """Why a text asked for by hand (a coordinator's one-off, "send reminder now", a module
    link) may not go to `recipient` now, in words for the coordinator; None when it may:
    consent, a flagged number, the state's texting hours and the caps."""
    now = clock.now()
    consent = session.scalar(select(SmsConsent).where(SmsConsent.phone == recipient.phone))
    if consent is None:
        return N_("This number never agreed to get texts. Record consent first.")
    if consent.status is ConsentStatus.OPTED_OUT:
        return N_("This number opted out of texts (STOP). It cannot be texted.")
    if consent.problem_code:
        return N_(
            "Texts to this number failed for good (error %(code)s). Check the number.",
            code=consent.problem_code,
        )
    if not hours.allows(now, recipient.zone):
        return N_(
            "It is outside texting hours (%(hours)s) where this person lives. Try later.",
            hours=hours.describe(),
        )
    sent = sorted(
        moment
        for sent_at, claimed, send_after in session.execute(
            select(
                OutboundMessage.sent_at, OutboundMessage.claimed_at, OutboundMessage.send_after
            ).where(
                OutboundMessage.to_phone == recipient.phone,
                OutboundMessage.purpose.in_(CAPPED_PURPOSES),
                OutboundMessage.status.in_((MessageStatus.QUEUED, *LEFT_STATUSES)),
                OutboundMessage.send_after >= now - timedelta(days=8),
                OutboundMessage.send_after <= now,
            )
        )
        if (moment := sent_at or claimed or send_after) is not None
    )
    problem = cap_problem(sent, now, recipient.zone)
    if problem == "cap: already one text that day":
        return N_("This number already got a text today (at most one a day).")
    if problem is not None:
        return N_("This number already got three texts this week (at most three a week).")
    return None


def _send_by_hand(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    one_off: Template | None,
    visit: Visit | None,
) -> list[ManualOutcome]:
    state = session.get(State, patient.state_id)
    assert state is not None
    hours = TextingHours.of(state)
    links = _links_by_patient(session, [patient.id]).get(patient.id, [])
    outcomes: list[ManualOutcome] = []
    for recipient in recipients_of(patient, links):
        refusal = texting_refusal(session, clock=clock, recipient=recipient, hours=hours)
        if refusal is not None:
            outcomes.append(ManualOutcome(recipient.phone, recipient.is_caregiver, False, refusal))
            continue
        values = {"program": state.program_name, "phone": display_phone(state.program_phone)}
        if one_off is not None:
            body = render(one_off, recipient.language, **values)
            purpose, rule = MessagePurpose.ONE_OFF, one_off.key
        else:
            assert visit is not None
            kind = _manual_kind(visit)
            body = _body(kind, visit, recipient, state, patient.time_zone)
            purpose, rule = MessagePurpose.REMINDER, MANUAL_RULE
        session.add(
            OutboundMessage(
                to_phone=recipient.phone,
                body=body,
                purpose=purpose,
                patient_id=patient.id,
                caregiver_id=recipient.caregiver_id,
                visit_id=visit.id if visit is not None else None,
                rule=rule,
                language=recipient.language,
                status=MessageStatus.QUEUED,
                created_at=clock.now(),
                send_after=clock.now(),
                attempts=0,
                requested_by_user_id=actor.user_id,
            )
        )
        outcomes.append(ManualOutcome(recipient.phone, recipient.is_caregiver, True, None))
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="sms.one_off" if one_off is not None else "sms.remind_now",
        patient_id=patient.id,
        target=f"patient:{patient.id}",
        detail={
            "queued": sum(o.queued for o in outcomes),
            "refused": sum(not o.queued for o in outcomes),
        },
    )
    return outcomes


def _manual_kind(visit: Visit) -> ReminderKind:
    if visit.status in BOOKED and visit.appointment_at is not None:
        return ReminderKind.APPOINTMENT
    if visit.status is VisitStatus.MISSED:
        return ReminderKind.OVERDUE
    return ReminderKind.WINDOW_OPENS


def reminder_visit(session: Session, *, clock: Clock, patient: Patient) -> Visit | None:
    """The visit a "send reminder now" is about: the next open one, else the latest missed
    one nobody followed up."""
    visits = list(
        session.scalars(
            select(Visit).where(Visit.patient_id == patient.id).order_by(Visit.target_date)
        )
    )
    upcoming = [
        v
        for v in visits
        if v.status in OPEN_VISIT_STATUSES
        and (v.appointment_at is None or v.appointment_at > clock.now())
    ]
    if upcoming:
        return upcoming[0]
    missed = [
        v for v in visits if v.status is VisitStatus.MISSED and v.missed_acknowledged_at is None
    ]
    return missed[-1] if missed else None


def send_reminder_now(
    session: Session, *, clock: Clock, actor: Actor, patient: Patient
) -> list[ManualOutcome]:
    """Queue a reminder about the patient's next visit to the patient and caregivers who
    get reminders, each within consent, texting hours and the caps. Nothing is queued
    when there is no visit to remind of (an empty list)."""
    visit = reminder_visit(session, clock=clock, patient=patient)
    if visit is None:
        return []
    return _send_by_hand(
        session, clock=clock, actor=actor, patient=patient, one_off=None, visit=visit
    )


def send_one_off(
    session: Session, *, clock: Clock, actor: Actor, patient: Patient, template_key: str
) -> list[ManualOutcome]:
    """Queue an approved one-off text (ONE_OFF[template_key]) to the patient and caregivers
    who get reminders, within consent, texting hours and the caps. KeyError for a
    template that is not approved."""
    template = ONE_OFF[template_key]
    return _send_by_hand(
        session, clock=clock, actor=actor, patient=patient, one_off=template, visit=None
    )
