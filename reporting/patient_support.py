"""Patient-reported outcomes and travel support, counted in SQL per state and month (the
*Questionnaires and travel support* report). Three sets of counts, each by the state and the
calendar month (UTC) they fall in:

- questionnaires due, completed or not: a questionnaire the protocol asks at a visit is due
  in the month the visit's window closes (visits cancelled, or made after their window
  closed by a back-dated enrolment, ask nothing, as on the patient's record); one asked
  before the infusion is due in the month the patient was enrolled, when that was before
  the infusion (or the patient is not infused yet). It is completed when a completed
  response to it exists for that visit (before the infusion: one started before it).
  Only questionnaires loaded in the portal count (one nobody can answer is not due);
- travel support requests, by the month they were made and by where they stand now:
  waiting for a decision, approved (not booked yet), arranged (booked), declined; and
  the spend, the sum of the arranged requests' booked costs, in cents;
- visits with support arranged (a request for the visit arranged), by the visit's month
  (the day it was completed, else its appointment's day, else its window's last day) and
  whether the patient came: attended (completed), not attended (missed or cancelled), or
  not yet.

The state is the patient's state today for questionnaires, and the state asked to pay (the
request's) for travel. Nothing here is suppressed: `reporting.patient_support_report` adds
the counts up and suppresses them before a page or an export sees them."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    String,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import Subquery
from sqlalchemy.sql.type_api import TypeEngine

from coordination.followup.models import Visit, VisitStatus
from coordination.followup.protocol import ProtocolLibrary
from coordination.questionnaires.models import (
    Questionnaire,
    QuestionnaireResponse,
    ResponseStatus,
)
from coordination.travel.models import TravelArrangement, TravelRequest, TravelStatus
from core.models import Patient, Therapy
from reporting.sqlfunc import day_start, month_of, utc_day, year_of


class Answered(enum.StrEnum):
    COMPLETED = "completed"
    NOT_COMPLETED = "not_completed"


class Attended(enum.StrEnum):
    ATTENDED = "attended"
    NOT_ATTENDED = "not_attended"  # missed or cancelled
    NOT_YET = "not_yet"


# The statuses of a request in the order of the tables.
REQUEST_STATUSES: tuple[TravelStatus, ...] = (
    TravelStatus.REQUESTED,
    TravelStatus.APPROVED,
    TravelStatus.ARRANGED,
    TravelStatus.DECLINED,
)


@dataclass(frozen=True)
class Months:
    """The months counted: from the first day of `first` to the last day of `last`."""

    first: date  # the first day of a month
    last: date  # the first day of a month, not before `first`

    @property
    def end(self) -> date:
        """The day after the last month."""
        return _next_month(self.last)

    def month_keys(self) -> list[str]:
        """Every month of the span, "2026-03", in order."""
        found, month = [], self.first
        while month <= self.last:
            found.append(month_key(month))
            month = _next_month(month)
        return found


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def month_key(day: date) -> str:
    return f"{day.year:04d}-{day.month:02d}"


@dataclass(frozen=True)
class Count:
    """One count: the state, the month ("2026-03"), the column, how many; `cents` only for
    travel requests (what the arranged ones cost)."""

    state_id: int
    month: str
    column: str
    count: int
    cents: int = 0


def _month_number(day: ColumnElement[Any] | InstrumentedAttribute[Any]) -> ColumnElement[int]:
    """yyyymm of a day, as one integer (the same on both databases)."""
    return year_of(day) * 100 + month_of(day)


def _key(number: int) -> str:
    return f"{number // 100:04d}-{number % 100:02d}"


def _states(
    state_ids: frozenset[int] | None, column_: ColumnElement[int] | InstrumentedAttribute[int]
) -> ColumnElement[bool]:
    if state_ids is None:
        return literal(True)
    return column_.in_(sorted(state_ids))


def _constant_rows(
    name: str, columns: Sequence[tuple[str, type[TypeEngine[Any]]]], rows: Sequence[Sequence[Any]]
) -> Subquery:
    """A small table of constants (SELECT ... UNION ALL SELECT ...): SQLite has no named
    VALUES list with column names."""
    selects = [
        select(
            *(
                literal(value, kind()).label(label)
                for value, (label, kind) in zip(row, columns, strict=True)
            )
        )
        for row in rows
    ]
    return union_all(*selects).subquery(name)


def questionnaire_counts(
    session: Session,
    *,
    library: ProtocolLibrary,
    months: Months,
    state_ids: frozenset[int] | None,
) -> list[Count]:
    """Questionnaires due in the months, completed or not, by state and month (one query:
    the protocols' visit/questionnaire pairs joined as a VALUES list)."""
    loaded = set(session.scalars(select(Questionnaire.url).distinct()))
    at_visits = sorted(
        (therapy, version, visit.key, url)
        for therapy, versions in library.versions.items()
        for version, protocol in versions.items()
        for visit in protocol.visits
        for url in visit.questionnaires
        if url in loaded
    )
    before = sorted(
        {
            (therapy, url)
            for therapy in library.versions
            if (protocol := library.version_or_current(therapy, None)) is not None
            and protocol.before_infusion is not None
            for url in protocol.before_infusion.questionnaires
            if url in loaded
        }
    )
    parts = []
    if at_visits:
        asked = _constant_rows(
            "asked_at_visits",
            (("therapy", String), ("version", Integer), ("visit_key", String), ("url", String)),
            at_visits,
        )
        done = exists().where(
            QuestionnaireResponse.visit_id == Visit.id,
            QuestionnaireResponse.status == ResponseStatus.COMPLETED,
            Questionnaire.id == QuestionnaireResponse.questionnaire_id,
            Questionnaire.url == asked.c.url,
        )
        parts.append(
            select(
                Patient.state_id.label("state_id"),
                _month_number(Visit.window_end).label("month"),
                case((done, 1), else_=0).label("done"),
            )
            .select_from(Visit)
            .join(Patient, Patient.id == Visit.patient_id)
            .join(Therapy, Therapy.id == Patient.therapy_id)
            .join(
                asked,
                and_(
                    asked.c.therapy == Therapy.code,
                    asked.c.version == Visit.protocol_version,
                    asked.c.visit_key == Visit.visit_key,
                ),
            )
            .where(
                Visit.status != VisitStatus.CANCELLED,
                func.date(Visit.created_at) <= Visit.window_end,
                Visit.window_end >= months.first,
                Visit.window_end < months.end,
                _states(state_ids, Patient.state_id),
            )
        )
    if before:
        first = _constant_rows("asked_before", (("therapy", String), ("url", String)), before)
        enrolled = utc_day(Patient.created_at)
        done_before = exists().where(
            QuestionnaireResponse.patient_id == Patient.id,
            QuestionnaireResponse.visit_id.is_(None),
            QuestionnaireResponse.status == ResponseStatus.COMPLETED,
            Questionnaire.id == QuestionnaireResponse.questionnaire_id,
            Questionnaire.url == first.c.url,
            or_(
                Patient.infusion_date.is_(None),
                QuestionnaireResponse.started_at < day_start(Patient.infusion_date),
            ),
        )
        parts.append(
            select(
                Patient.state_id.label("state_id"),
                _month_number(enrolled).label("month"),
                case((done_before, 1), else_=0).label("done"),
            )
            .select_from(Patient)
            .join(Therapy, Therapy.id == Patient.therapy_id)
            .join(first, first.c.therapy == Therapy.code)
            .where(
                or_(Patient.infusion_date.is_(None), enrolled < Patient.infusion_date),
                Patient.created_at >= day_start(literal(months.first)),
                Patient.created_at < day_start(literal(months.end)),
                _states(state_ids, Patient.state_id),
            )
        )
    if not parts:
        return []
    rows = union_all(*parts).subquery("due")
    found = session.execute(
        select(rows.c.state_id, rows.c.month, rows.c.done, func.count())
        .group_by(rows.c.state_id, rows.c.month, rows.c.done)
        .order_by(rows.c.state_id, rows.c.month, rows.c.done)
    )
    return [
        Count(
            state_id,
            _key(int(month)),
            (Answered.COMPLETED if done else Answered.NOT_COMPLETED).value,
            int(count),
        )
        for state_id, month, done, count in found
    ]


def request_counts(
    session: Session, *, months: Months, state_ids: frozenset[int] | None
) -> list[Count]:
    """Travel requests made in the months, by state, month and status, with the booked
    cost of the arranged ones."""
    cost = (
        select(
            TravelArrangement.request_id.label("request_id"),
            func.sum(TravelArrangement.cost_cents).label("cents"),
        )
        .group_by(TravelArrangement.request_id)
        .subquery("cost")
    )
    month = _month_number(utc_day(TravelRequest.created_at))
    spend = func.sum(
        case(
            (TravelRequest.status == TravelStatus.ARRANGED, func.coalesce(cost.c.cents, 0)),
            else_=0,
        )
    )
    found = session.execute(
        select(TravelRequest.state_id, month, TravelRequest.status, func.count(), spend)
        .outerjoin(cost, cost.c.request_id == TravelRequest.id)
        .where(
            TravelRequest.created_at >= day_start(literal(months.first)),
            TravelRequest.created_at < day_start(literal(months.end)),
            _states(state_ids, TravelRequest.state_id),
        )
        .group_by(TravelRequest.state_id, month, TravelRequest.status)
    )
    return [
        Count(state_id, _key(int(number)), TravelStatus(status).value, int(count), int(cents))
        for state_id, number, status, count, cents in found
    ]


def supported_visit_counts(
    session: Session, *, months: Months, state_ids: frozenset[int] | None
) -> list[Count]:
    """Visits with travel support arranged, by the paying state, the visit's month and
    whether the patient came (each visit once, however many requests it had)."""
    arranged = (
        select(
            TravelRequest.visit_id.label("visit_id"),
            func.min(TravelRequest.state_id).label("state_id"),
        )
        .where(TravelRequest.status == TravelStatus.ARRANGED)
        .group_by(TravelRequest.visit_id)
        .subquery("arranged")
    )
    day = func.coalesce(Visit.completed_on, utc_day(Visit.appointment_at), Visit.window_end)
    came = case(
        (Visit.status == VisitStatus.COMPLETED, Attended.ATTENDED.value),
        (
            Visit.status.in_((VisitStatus.MISSED, VisitStatus.CANCELLED)),
            Attended.NOT_ATTENDED.value,
        ),
        else_=Attended.NOT_YET.value,
    )
    visits = (
        select(
            arranged.c.state_id.label("state_id"),
            _month_number(day).label("month"),
            came.label("came"),
        )
        .select_from(arranged)
        .join(Visit, Visit.id == arranged.c.visit_id)
        .where(
            day >= months.first,
            day < months.end,
            _states(state_ids, arranged.c.state_id),
        )
        .subquery("supported")
    )
    found = session.execute(
        select(visits.c.state_id, visits.c.month, visits.c.came, func.count()).group_by(
            visits.c.state_id, visits.c.month, visits.c.came
        )
    )
    return [
        Count(state_id, _key(int(number)), str(came), int(count))
        for state_id, number, came, count in found
    ]


def months_back(today: date, count: int) -> Months:
    """The `count` months ending with today's."""
    last = date(today.year, today.month, 1)
    first = last
    for _ in range(count - 1):
        first = (first - timedelta(days=1)).replace(day=1)
    return Months(first, last)
