"""Program figures: whether the follow-up program itself works, counted in SQL for every
patient at once, as of a moment T.

Seven figures, each a set of counts (`ProgramCube`), by the patient's state, center,
therapy and infusion cohort (quarter) as the record stood at T, and by the calendar quarter
(UTC) the counted thing happened in:

- adherence: visits whose window closed (window_end before T's day), by protocol visit and
  outcome: completed in the window (completed_on from window_start to window_end),
  completed outside it, missed, cancelled, or still open (nothing recorded yet); the
  quarter is the one the window closed in;
- retention: every patient of the record by status at T (active, enrolled, lost to
  follow-up, withdrawn, deceased); no quarter (a state at one moment);
- texts: reminder texts the dispatcher tried by T, by what came of them (delivered,
  failed, sent without a delivery report yet); the quarter they were tried in;
- answers: appointments confirmed by a text reply, in the portal (the patient or a
  caregiver) or by the care team, and requests to move a visit by text or in the portal;
- opt-outs: a number's consent withdrawn, by how (STOP by text, in the portal, recorded
  by a coordinator, refused by the carrier); counted for one patient behind the number
  (the patient whose number it is, else the first patient of the caregiver whose it is);
- reports: what patients and caregivers reported between visits, by kind and by the
  coordinator's review as of T (confirmed, dismissed, awaiting review);
- contact: each visit missed (as of T, window closed) with the days from its window's last
  day to the patient's next contact: an outreach note, a text sent by hand, a completed
  visit or a booked appointment, on a later day and by T ("" when none yet).

"As of T": the record's facts from `PatientHistory` (the version that held at T); a visit's
status from its history (`VisitEvent`: the last change by T, else the status before the
first change after T, else the visit's status; visits created after T are left out);
texts, replies, reports, consent events and notes from their own times. Windows are the
visits' current ones (a window moved after T by a changed infusion date is read where it
is now). When T is not before now, the current tables are read directly (the same
figures, faster). Phone numbers are today's (their history is not kept).

Nothing here is suppressed: `reporting.program_report` adds the counts up for a selection
and suppresses every one before it reaches a page or an export."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    Date,
    Integer,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from coordination.followup.models import (
    MoveRequest,
    OutreachNote,
    PatientReport,
    ReportStatus,
    Visit,
    VisitEvent,
    VisitStatus,
)
from coordination.texting.models import (
    ConsentAction,
    DeliveryEvent,
    MessagePurpose,
    OutboundMessage,
    SmsConsentEvent,
)
from core.identity.models import Role, User
from core.models import Caregiver, CaregiverLink, Patient, PatientHistory
from reporting.sqlfunc import day_start, month_of, utc_day, year_of

# The note the SMS path writes on a move request it makes ("R" texted back); see
# coordination.texting.inbound. A request without it was made in the portal.
SMS_MOVE_NOTE = "Asked by text message."
# The cohort of the patients not infused (yet).
NOT_INFUSED = "none"


class Figure(enum.StrEnum):
    ADHERENCE = "adherence"
    RETENTION = "retention"
    TEXTS = "texts"
    ANSWERS = "answers"
    OPT_OUTS = "opt_outs"
    REPORTS = "reports"
    CONTACT = "contact"


class Adherence(enum.StrEnum):
    IN_WINDOW = "in_window"
    OUTSIDE_WINDOW = "outside_window"
    MISSED = "missed"
    CANCELLED = "cancelled"
    OPEN = "open"  # the window closed and nothing is recorded yet


class TextOutcome(enum.StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    NO_REPORT = "no_report"  # sent; no delivery report (yet)


class Answer(enum.StrEnum):
    CONFIRMED_BY_TEXT = "confirmed_by_text"
    CONFIRMED_IN_PORTAL = "confirmed_in_portal"
    CONFIRMED_BY_STAFF = "confirmed_by_staff"
    MOVE_BY_TEXT = "move_by_text"
    MOVE_IN_PORTAL = "move_in_portal"


class Review(enum.StrEnum):
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"
    AWAITING = "awaiting"


ANSWERS: tuple[Answer, ...] = tuple(Answer)
ADHERENCE: tuple[Adherence, ...] = tuple(Adherence)
TEXT_OUTCOMES: tuple[TextOutcome, ...] = tuple(TextOutcome)
REVIEWS: tuple[Review, ...] = tuple(Review)


@dataclass(frozen=True)
class Period:
    """The days counted things happened in: a calendar year, a quarter, or all time."""

    key: str  # "all", "2026", "2026-Q2"
    start: date | None
    end: date | None  # the last day, included

    @classmethod
    def parse(cls, text: str | None) -> Period | None:
        """ "all", "2026" or "2026-Q2"; None for anything else."""
        words = (text or "all").strip()
        if words == "all":
            return cls("all", None, None)
        try:
            if len(words) == 4 and words.isdigit():
                year = int(words)
                return cls(words, date(year, 1, 1), date(year, 12, 31))
            if (
                len(words) == 7
                and words[4:6] == "-Q"
                and words[:4].isdigit()
                and words[6] in "1234"
            ):
                year, quarter = int(words[:4]), int(words[6])
                start = date(year, 3 * quarter - 2, 1)
                following = date(year + 1, 1, 1) if quarter == 4 else date(year, 3 * quarter + 1, 1)
                return cls(words, start, following - timedelta(days=1))
        except ValueError:
            return None
        return None

    def holds(self, quarter: str) -> bool:
        """True when the quarter ("2026-Q2") lies in the period."""
        if self.key == "all":
            return True
        return quarter == self.key or quarter[:4] == self.key


def quarter_of(day: date) -> str:
    return f"{day.year}-Q{(day.month + 2) // 3}"


@dataclass(frozen=True)
class Selection:
    """Which patients and which time the figures count. `state_ids`: the viewer's states
    (None: every state); the rest are the filters (None: no filter). `cohort` is an
    infusion year ("2025") or quarter ("2025-Q1"), or "none" (not infused)."""

    state_ids: frozenset[int] | None = None
    state_id: int | None = None
    therapy_id: int | None = None
    center_id: int | None = None
    cohort: str | None = None
    period: Period = Period("all", None, None)

    def keeps(self, cell: Cell) -> bool:
        """The same selection over a cube's cells (a snapshot's figures)."""
        if self.state_ids is not None and cell.state_id not in self.state_ids:
            return False
        if self.state_id is not None and cell.state_id != self.state_id:
            return False
        if self.therapy_id is not None and cell.therapy_id != self.therapy_id:
            return False
        if self.center_id is not None and cell.center_id != self.center_id:
            return False
        if self.cohort == NOT_INFUSED:
            if cell.cohort:
                return False
        elif self.cohort is not None and self.cohort not in (cell.cohort, cell.cohort[:4]):
            return False
        return not cell.period or self.period.holds(cell.period)


@dataclass(frozen=True)
class Cell:
    """One count of the cube: figure, the patient's state, center, therapy and infusion
    quarter ("" when not infused), the quarter of the event ("" for retention), the
    figure's own keys (`row`, `column`: e.g. visit key and outcome) and the count."""

    figure: Figure
    state_id: int
    center_id: int
    therapy_id: int
    cohort: str
    period: str
    row: str
    column: str
    count: int

    def as_list(self) -> list[Any]:
        return [
            self.figure.value,
            self.state_id,
            self.center_id,
            self.therapy_id,
            self.cohort,
            self.period,
            self.row,
            self.column,
            self.count,
        ]

    @classmethod
    def from_list(cls, values: list[Any]) -> Cell:
        figure, state, center, therapy, cohort, period, row, column, count = values
        return cls(Figure(figure), state, center, therapy, cohort, period, row, column, int(count))


@dataclass(frozen=True)
class ProgramCube:
    as_of: datetime
    cells: tuple[Cell, ...]


# --- SQL helpers -------------------------------------------------------------------------------


class days_between(FunctionElement[int]):  # noqa: N801 (an SQL function's name)
    """`later - earlier` in whole days (two Date expressions)."""

    type = Integer()
    inherit_cache = True
    name = "days_between"


@compiles(days_between, "sqlite")
def _days_between_sqlite(element: days_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"CAST(julianday({later}) - julianday({earlier}) AS INTEGER)"


@compiles(days_between, "postgresql")
def _days_between_postgresql(element: days_between, compiler: SQLCompiler, **kw: Any) -> str:
    later, earlier = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"(CAST({later} AS DATE) - CAST({earlier} AS DATE))"


def _quarter_label(day: ColumnElement[date]) -> ColumnElement[str]:
    """ "2026-Q2" of a day, in SQL (the same on both databases)."""
    return cast(year_of(day), String) + literal("-Q") + cast((month_of(day) + 2) // 3, String)


def _end_of(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC)


@dataclass(frozen=True)
class _Moment:
    at: datetime
    history: bool  # read the history tables (T before now)

    @property
    def day(self) -> date:
        return self.at.astimezone(UTC).date()


def _facts(moment: _Moment, selection: Selection) -> Any:
    """Every patient's record facts at T (a CTE): patient_id, state_id, center_id,
    therapy_id, infusion_date, status, cohort ("2025-Q1" or "")."""
    source: Any
    if moment.history:
        history = PatientHistory.__table__
        latest = (
            select(history.c.patient_id, func.max(history.c.version_id).label("version_id"))
            .where(history.c.valid_from <= moment.at)
            .group_by(history.c.patient_id)
            .subquery("latest_versions")
        )
        source = history.join(
            latest,
            and_(
                history.c.patient_id == latest.c.patient_id,
                history.c.version_id == latest.c.version_id,
            ),
        )
        columns = history.c
        patient_id = history.c.patient_id
    else:
        source = Patient.__table__
        columns = Patient.__table__.c
        patient_id = columns.id
    infusion = columns.infusion_date
    cohort = case((infusion.is_(None), literal("")), else_=_quarter_label(infusion))
    query = select(
        patient_id.label("patient_id"),
        columns.state_id,
        columns.center_id,
        columns.therapy_id,
        infusion.label("infusion_date"),
        columns.status,
        cohort.label("cohort"),
    ).select_from(source)
    if selection.state_ids is not None:
        query = query.where(columns.state_id.in_(selection.state_ids or {-1}))
    if selection.state_id is not None:
        query = query.where(columns.state_id == selection.state_id)
    if selection.therapy_id is not None:
        query = query.where(columns.therapy_id == selection.therapy_id)
    if selection.center_id is not None:
        query = query.where(columns.center_id == selection.center_id)
    if selection.cohort == NOT_INFUSED:
        query = query.where(infusion.is_(None))
    elif selection.cohort is not None:
        start, end = _cohort_days(selection.cohort)
        query = query.where(infusion >= start, infusion <= end)
    return query.cte("facts").prefix_with("MATERIALIZED")


def _cohort_days(cohort: str) -> tuple[date, date]:
    period = Period.parse(cohort)
    if period is None or period.start is None or period.end is None:
        # Not a cohort: nobody is in it.
        return date(1, 1, 2), date(1, 1, 1)
    return period.start, period.end


def _visit_states(moment: _Moment) -> Any:
    """Every visit created by T with its status and completion day at T (a CTE)."""
    visits = Visit.__table__
    if not moment.history:
        return (
            select(
                visits.c.id.label("visit_id"),
                visits.c.patient_id,
                visits.c.visit_key,
                visits.c.window_start,
                visits.c.window_end,
                visits.c.status,
                visits.c.completed_on,
            ).subquery("visit_states")  # a plain projection: SQLite reads the table itself
        )
    events = VisitEvent.__table__
    before = (
        select(events.c.visit_id, func.max(events.c.id).label("event_id"))
        .where(events.c.at <= moment.at)
        .group_by(events.c.visit_id)
        .cte("last_before")
        .prefix_with("MATERIALIZED")
    )
    after = (
        select(events.c.visit_id, func.min(events.c.id).label("event_id"))
        .where(events.c.at > moment.at)
        .group_by(events.c.visit_id)
        .cte("first_after")
        .prefix_with("MATERIALIZED")
    )
    last = events.alias("last_event")
    first = events.alias("first_event")
    status = func.coalesce(last.c.to_status, first.c.from_status, visits.c.status)
    return (
        select(
            visits.c.id.label("visit_id"),
            visits.c.patient_id,
            visits.c.visit_key,
            visits.c.window_start,
            visits.c.window_end,
            status.label("status"),
            case(
                (status == VisitStatus.COMPLETED.value, visits.c.completed_on), else_=null()
            ).label("completed_on"),
        )
        .select_from(visits)
        .outerjoin(before, before.c.visit_id == visits.c.id)
        .outerjoin(last, last.c.id == before.c.event_id)
        .outerjoin(after, after.c.visit_id == visits.c.id)
        .outerjoin(first, first.c.id == after.c.event_id)
        .where(visits.c.created_at <= moment.at)
        # Not materialized: SQLite then joins the visits to the facts through an index.
        .subquery("visit_states")
    )


def _in_period_days(column: ColumnElement[date], period: Period) -> list[ColumnElement[bool]]:
    conditions = []
    if period.start is not None:
        conditions.append(column >= period.start)
    if period.end is not None:
        conditions.append(column <= period.end)
    return conditions


def _in_period_instants(
    column: ColumnElement[datetime], period: Period
) -> list[ColumnElement[bool]]:
    conditions = []
    if period.start is not None:
        conditions.append(column >= day_start(literal(period.start, Date())))
    if period.end is not None:
        conditions.append(column < day_start(literal(period.end + timedelta(days=1), Date())))
    return conditions


_KEYS = ("state_id", "center_id", "therapy_id", "cohort")


def _events(
    facts: Any,
    figure: Figure,
    source: Any,
    *,
    period: ColumnElement[str] | None,
    row: ColumnElement[str],
    column: ColumnElement[str],
    where: Sequence[ColumnElement[bool]] = (),
    name: str | None = None,
) -> Any:
    """What one figure counts, one line per counted thing (a subquery): patient_id, the
    patient's keys (state_id, center_id, therapy_id, cohort), period, row_key, column_key.
    `program_cube` groups it by name (PostgreSQL would not group by expressions holding
    parameters); `figure_patients` reads its patients."""
    return (
        select(
            facts.c.patient_id,
            *(facts.c[name] for name in _KEYS),
            (period if period is not None else literal("")).label("period"),
            row.label("row_key"),
            column.label("column_key"),
        )
        .select_from(source)
        .where(*where)
        .subquery(name or f"{figure.value}_events")
    )


def _counted(figure: Figure, events: Any) -> Any:
    keys = [events.c[name] for name in (*_KEYS, "period", "row_key", "column_key")]
    return select(literal(figure.value).label("figure"), *keys, func.count().label("n")).group_by(
        *keys
    )


# --- the figures -----------------------------------------------------------------------------


def _adherence(facts: Any, visits: Any, moment: _Moment, period: Period) -> Any:
    outcome = case(
        (
            visits.c.status == VisitStatus.COMPLETED.value,
            case(
                (
                    and_(
                        visits.c.completed_on >= visits.c.window_start,
                        visits.c.completed_on <= visits.c.window_end,
                    ),
                    literal(Adherence.IN_WINDOW.value),
                ),
                else_=literal(Adherence.OUTSIDE_WINDOW.value),
            ),
        ),
        (visits.c.status == VisitStatus.MISSED.value, literal(Adherence.MISSED.value)),
        (visits.c.status == VisitStatus.CANCELLED.value, literal(Adherence.CANCELLED.value)),
        else_=literal(Adherence.OPEN.value),
    )
    source = visits.join(facts, facts.c.patient_id == visits.c.patient_id)
    return _events(
        facts,
        Figure.ADHERENCE,
        source,
        period=_quarter_label(visits.c.window_end),
        row=visits.c.visit_key,
        column=outcome,
        where=[visits.c.window_end < moment.day, *_in_period_days(visits.c.window_end, period)],
    )


def _retention(facts: Any) -> Any:
    return _events(
        facts, Figure.RETENTION, facts, period=None, row=facts.c.status, column=literal("")
    )


def _texts(facts: Any, moment: _Moment, period: Period) -> Any:
    messages = OutboundMessage.__table__
    deliveries = DeliveryEvent.__table__

    def reported(statuses: tuple[str, ...]) -> ColumnElement[bool]:
        return (
            select(deliveries.c.id)
            .where(
                deliveries.c.message_sid == messages.c.provider_message_id,
                deliveries.c.status.in_(statuses),
                deliveries.c.at <= moment.at,
            )
            .exists()
        )

    sent = and_(messages.c.sent_at.is_not(None), messages.c.sent_at <= moment.at)
    # Refused by the gateway: never sent, failed when the dispatcher tried it.
    refused = and_(
        messages.c.sent_at.is_(None),
        messages.c.status == "failed",
        messages.c.claimed_at <= moment.at,
    )
    tried_at = func.coalesce(messages.c.sent_at, messages.c.claimed_at)
    outcome = case(
        (refused, literal(TextOutcome.FAILED.value)),
        (reported(("delivered",)), literal(TextOutcome.DELIVERED.value)),
        (reported(("failed", "undelivered")), literal(TextOutcome.FAILED.value)),
        else_=literal(TextOutcome.NO_REPORT.value),
    )
    source = messages.join(facts, facts.c.patient_id == messages.c.patient_id)
    return _events(
        facts,
        Figure.TEXTS,
        source,
        period=_quarter_label(utc_day(tried_at)),
        row=literal(""),
        column=outcome,
        where=[
            messages.c.purpose == MessagePurpose.REMINDER.value,
            or_(sent, refused),
            *_in_period_instants(tried_at, period),
        ],
    )


def _answers(facts: Any, moment: _Moment, period: Period) -> Any:
    events = VisitEvent.__table__
    visits = Visit.__table__
    users = User.__table__
    confirmed = case(
        (events.c.actor_label.startswith("sms:"), literal(Answer.CONFIRMED_BY_TEXT.value)),
        (
            users.c.role.in_((Role.PATIENT.value, Role.CAREGIVER.value)),
            literal(Answer.CONFIRMED_IN_PORTAL.value),
        ),
        else_=literal(Answer.CONFIRMED_BY_STAFF.value),
    )
    confirmations = _events(
        facts,
        Figure.ANSWERS,
        events.join(visits, visits.c.id == events.c.visit_id)
        .join(facts, facts.c.patient_id == visits.c.patient_id)
        .outerjoin(users, users.c.id == events.c.actor_user_id),
        period=_quarter_label(utc_day(events.c.at)),
        row=literal(""),
        column=confirmed,
        where=[
            events.c.action == "confirm",
            events.c.at <= moment.at,
            *_in_period_instants(events.c.at, period),
        ],
        name="confirmations",
    )
    moves = MoveRequest.__table__
    moved = case(
        (moves.c.note == SMS_MOVE_NOTE, literal(Answer.MOVE_BY_TEXT.value)),
        else_=literal(Answer.MOVE_IN_PORTAL.value),
    )
    requests = _events(
        facts,
        Figure.ANSWERS,
        moves.join(facts, facts.c.patient_id == moves.c.patient_id),
        period=_quarter_label(utc_day(moves.c.created_at)),
        row=literal(""),
        column=moved,
        where=[moves.c.created_at <= moment.at, *_in_period_instants(moves.c.created_at, period)],
        name="move_requests",
    )
    # Each part joins its own tables to the facts (SQLite joins a union badly).
    return union_all(select(confirmations), select(requests)).subquery("answers_events")


def _opt_outs(facts: Any, moment: _Moment, period: Period) -> Any:
    consent = SmsConsentEvent.__table__
    patients = Patient.__table__
    caregivers = Caregiver.__table__
    links = CaregiverLink.__table__
    # One patient per number: the patient whose number it is, else the first patient of a
    # caregiver whose number it is (a number counts once, however many share it).
    own = select(
        patients.c.mobile_phone.label("phone"),
        patients.c.id.label("patient_id"),
        literal(0).label("rank"),
    ).where(patients.c.mobile_phone.is_not(None))
    helpers = (
        select(
            caregivers.c.mobile_phone.label("phone"),
            links.c.patient_id,
            literal(1).label("rank"),
        )
        .join(links, links.c.caregiver_id == caregivers.c.id)
        .where(caregivers.c.mobile_phone.is_not(None))
    )
    owners = union_all(own, helpers).cte("owners").prefix_with("MATERIALIZED")
    best_rank = (
        select(owners.c.phone, func.min(owners.c.rank).label("rank"))
        .group_by(owners.c.phone)
        .subquery("best_rank")
    )
    owner = (
        select(owners.c.phone, func.min(owners.c.patient_id).label("patient_id"))
        .join(
            best_rank,
            and_(best_rank.c.phone == owners.c.phone, best_rank.c.rank == owners.c.rank),
        )
        .group_by(owners.c.phone)
        .cte("owner")
        .prefix_with("MATERIALIZED")
    )
    source = consent.join(owner, owner.c.phone == consent.c.phone).join(
        facts, facts.c.patient_id == owner.c.patient_id
    )
    return _events(
        facts,
        Figure.OPT_OUTS,
        source,
        period=_quarter_label(utc_day(consent.c.at)),
        row=literal(""),
        column=consent.c.how,
        where=[
            consent.c.action == ConsentAction.OPT_OUT.value,
            consent.c.at <= moment.at,
            *_in_period_instants(consent.c.at, period),
        ],
    )


def _reports(facts: Any, moment: _Moment, period: Period) -> Any:
    reports = PatientReport.__table__
    reviewed = and_(reports.c.reviewed_at.is_not(None), reports.c.reviewed_at <= moment.at)
    review = case(
        (
            and_(reviewed, reports.c.status == ReportStatus.CONFIRMED.value),
            literal(Review.CONFIRMED.value),
        ),
        (
            and_(reviewed, reports.c.status == ReportStatus.DISMISSED.value),
            literal(Review.DISMISSED.value),
        ),
        else_=literal(Review.AWAITING.value),
    )
    source = reports.join(facts, facts.c.patient_id == reports.c.patient_id)
    return _events(
        facts,
        Figure.REPORTS,
        source,
        period=_quarter_label(utc_day(reports.c.reported_at)),
        row=reports.c.kind,
        column=review,
        where=[
            reports.c.reported_at <= moment.at,
            *_in_period_instants(reports.c.reported_at, period),
        ],
    )


def _contacts(moment: _Moment, visits: Any) -> Any:
    """Every contact with a patient by T: (patient_id, day)."""
    notes = OutreachNote.__table__
    messages = OutboundMessage.__table__
    events = VisitEvent.__table__
    all_visits = Visit.__table__
    outreach = select(notes.c.patient_id, utc_day(notes.c.at).label("day")).where(
        notes.c.at <= moment.at
    )
    by_hand = select(messages.c.patient_id, utc_day(messages.c.sent_at).label("day")).where(
        messages.c.requested_by_user_id.is_not(None),
        messages.c.patient_id.is_not(None),
        messages.c.sent_at.is_not(None),
        messages.c.sent_at <= moment.at,
    )
    completed = select(visits.c.patient_id, visits.c.completed_on.label("day")).where(
        visits.c.status == VisitStatus.COMPLETED.value, visits.c.completed_on.is_not(None)
    )
    booked = (
        select(all_visits.c.patient_id, utc_day(events.c.at).label("day"))
        .join(all_visits, all_visits.c.id == events.c.visit_id)
        .where(events.c.action == "book", events.c.at <= moment.at)
    )
    return (
        union_all(outreach, by_hand, completed, booked).cte("contacts").prefix_with("MATERIALIZED")
    )


def _contact(facts: Any, visits: Any, moment: _Moment, period: Period) -> Any:
    contacts = _contacts(moment, visits)
    missed = (
        select(visits.c.visit_id, visits.c.patient_id, visits.c.window_end)
        .where(
            visits.c.status == VisitStatus.MISSED.value,
            visits.c.window_end < moment.day,
            *_in_period_days(visits.c.window_end, period),
        )
        .subquery("missed")
    )
    first = (
        select(missed.c.visit_id, func.min(contacts.c.day).label("contact_day"))
        .join(
            contacts,
            and_(
                contacts.c.patient_id == missed.c.patient_id, contacts.c.day > missed.c.window_end
            ),
        )
        .group_by(missed.c.visit_id)
        .subquery("first_contact")
    )
    days = case(
        (first.c.contact_day.is_(None), literal("")),
        else_=cast(days_between(first.c.contact_day, missed.c.window_end), String),
    )
    source = missed.outerjoin(first, first.c.visit_id == missed.c.visit_id).join(
        facts, facts.c.patient_id == missed.c.patient_id
    )
    return _events(
        facts,
        Figure.CONTACT,
        source,
        period=_quarter_label(missed.c.window_end),
        row=days,
        column=literal(""),
    )


def _all_events(moment: _Moment, selection: Selection) -> dict[Figure, Any]:
    facts = _facts(moment, selection)
    visits = _visit_states(moment)
    period = selection.period
    return {
        Figure.ADHERENCE: _adherence(facts, visits, moment, period),
        Figure.RETENTION: _retention(facts),
        Figure.TEXTS: _texts(facts, moment, period),
        Figure.ANSWERS: _answers(facts, moment, period),
        Figure.OPT_OUTS: _opt_outs(facts, moment, period),
        Figure.REPORTS: _reports(facts, moment, period),
        Figure.CONTACT: _contact(facts, visits, moment, period),
    }


def _moment(as_of: datetime | None, now: datetime) -> _Moment:
    if as_of is None or as_of >= now:
        return _Moment(at=now, history=False)
    return _Moment(at=as_of, history=True)


def program_cube(
    session: Session,
    *,
    as_of: datetime | None,
    now: datetime,
    selection: Selection | None = None,
) -> ProgramCube:
    """Every program figure's counts as of `as_of` (None or not before `now`: now, from the
    current tables), for the patients and period of `selection` (None: everyone, all time,
    as the snapshots keep them)."""
    chosen = selection or Selection()
    moment = _moment(as_of, now)
    parts = [_counted(figure, events) for figure, events in _all_events(moment, chosen).items()]
    cells = []
    for part in parts:
        for row in session.execute(part):
            figure, state_id, center_id, therapy_id, cohort, quarter, row_key, column, n = row
            cells.append(
                Cell(
                    Figure(figure),
                    state_id,
                    center_id,
                    therapy_id,
                    cohort or "",
                    quarter or "",
                    str(row_key or ""),
                    str(column or ""),
                    int(n),
                )
            )
    cells.sort(key=lambda cell: cell.as_list())
    return ProgramCube(as_of=moment.at, cells=tuple(cells))


def end_of_day(day: date) -> datetime:
    """As of the end of `day` (UTC): everything recorded that day included."""
    return _end_of(day)


@dataclass(frozen=True)
class Behind:
    """The lines of a figure a drill-down asks for: which figure, and the row and column
    keys (None: any); `rows` several row keys (a year's visits); `contacted` for the
    contact figure (True: contacted since, False: not yet)."""

    figure: Figure
    rows: tuple[str, ...] | None = None
    column: str | None = None
    contacted: bool | None = None


def figure_patients(
    session: Session,
    *,
    as_of: datetime | None,
    now: datetime,
    selection: Selection,
    behind: Behind,
) -> list[int]:
    """The patients behind a figure of the selection as of `as_of` (None: now; their ids,
    in order). The caller narrows `selection` to the patients the viewer may see."""
    moment = _moment(as_of, now)
    events = _all_events(moment, selection)[behind.figure]
    query = select(events.c.patient_id).distinct().order_by(events.c.patient_id)
    if behind.rows is not None:
        query = query.where(events.c.row_key.in_(behind.rows))
    if behind.column is not None:
        query = query.where(events.c.column_key == behind.column)
    if behind.contacted is not None:
        query = query.where(
            events.c.row_key != literal("") if behind.contacted else events.c.row_key == literal("")
        )
    return list(session.scalars(query))
