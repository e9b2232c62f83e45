"""Outcome measures, evaluated in SQL for every patient at once, as of a moment T.

For each agreement (`reporting.agreements`) and measure, one statement gives every patient
of the agreement's population one status, with the day it was decided:

- `met` / `not_met`: the rule's verdict. An event rule (`no_event`) is not met as soon as a
  qualifying event in the window is known, and met once the window has closed without one;
  an observation rule is decided once the window has closed, from the value it picks;
- `not_yet`: the window has not closed and nothing decided it yet;
- `missing_data`: the window closed without the observation the rule needs;
- `lost_to_follow_up` / `deceased`: the patient left follow-up (lost, withdrawn) or died
  before the window closed (never met; a qualifying event known before stays `not_met`).

"As of T" means as the record stood then, from the history tables: the patient's facts
(state, center, therapy, Medicaid ID, infusion date, status) from `PatientHistory`; values
through `ObservationRevision` (the version recorded by T and not yet replaced); claim lines
loaded by T and not superseded by then; what arrived later is left out. Days are UTC days:
the window of a patient infused on day D runs from D + from_month months (included) to
D + to_month months (excluded); an event's day is its claim line's first day of service or
the day a confirmed report says it happened; `decided_on` is the later of the deciding
event's day (or the window's end) and the day the deciding data arrived.

Aggregates (`outcome_cube`) are counts by state, center, infusion quarter and status,
computed by the database; `reporting.outcome_report` suppresses them for pages and exports.
`patient_outcome` is one patient's result with the evidence that decided it."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Date,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    null,
    or_,
    select,
    true,
    type_coerce,
    union_all,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from coordination.followup.health_events import REPORT_MEASURES
from coordination.followup.models import ReportKind, Visit, VisitEvent
from core.db import UTCDateTime
from core.models import (
    RESULT_STATUSES,
    Observation,
    ObservationRevision,
    PatientHistory,
    PatientStatus,
    State,
    Therapy,
)
from reporting.agreements import (
    Agreement,
    EventKind,
    Measure,
    NoEventRule,
    ObservationRule,
    Pick,
)
from reporting.models import ClaimLine, ClaimType
from reporting.sqlfunc import (
    add_months,
    add_months_to,
    day_start,
    later_day,
    month_of,
    utc_day,
    year_of,
)


class Status(enum.StrEnum):
    MET = "met"
    NOT_MET = "not_met"
    NOT_YET = "not_yet"
    MISSING_DATA = "missing_data"
    LOST_TO_FOLLOW_UP = "lost_to_follow_up"
    DECEASED = "deceased"


# The order of the columns of every table and export.
STATUSES: tuple[Status, ...] = tuple(Status)
# A patient whose record says one of these has left follow-up; since when is the first
# version of the record in that run of statuses.
EXIT_STATUSES = (PatientStatus.LOST_TO_FOLLOW_UP, PatientStatus.WITHDRAWN, PatientStatus.DECEASED)
_RESULT_STATUS_VALUES = tuple(status.value for status in RESULT_STATUSES)


@dataclass(frozen=True)
class EventSource:
    """Where the events of a kind come from: claim lines with these flags (all must hold),
    and the confirmed patient reports of these kinds."""

    claim_flags: tuple[str, ...]
    reports: tuple[ReportKind, ...]


# What each event kind of an agreement's rule counts. A claim line's flags are worked out
# when the claims file is loaded (`reporting.claims`); a patient's report counts once a
# coordinator confirmed it (it then is an Observation with the report's code).
EVENT_SOURCES: dict[EventKind, EventSource] = {
    EventKind.VOC_INPATIENT_STAY: EventSource(("is_vaso_occlusive", "is_inpatient_stay"), ()),
    EventKind.VOC_ANY: EventSource(("is_vaso_occlusive",), (ReportKind.PAIN_CRISIS,)),
    EventKind.INPATIENT_STAY: EventSource(("is_inpatient_stay",), (ReportKind.HOSPITAL_STAY,)),
    EventKind.ED_VISIT: EventSource(("is_ed_visit",), (ReportKind.EMERGENCY_VISIT,)),
}


@dataclass(frozen=True)
class AsOf:
    """The moment a report looks from, and its UTC day (windows close on days)."""

    at: datetime

    @property
    def day(self) -> date:
        return self.at.astimezone(UTC).date()

    @classmethod
    def end_of(cls, day: date) -> AsOf:
        """As of the end of `day` (UTC): everything recorded that day included."""
        return cls(datetime.combine(day + timedelta(days=1), time(0), tzinfo=UTC))


@dataclass(frozen=True)
class Population:
    """An agreement's population in ids: its therapy, its states (None: all)."""

    therapy_id: int | None
    state_ids: frozenset[int] | None


def population_of(session: Session, agreement: Agreement) -> Population:
    """The ids of the agreement's therapy and states (a therapy or state the database does
    not know yet has nobody in it)."""
    therapy_id = session.scalar(select(Therapy.id).where(Therapy.code == agreement.therapy))
    state_ids: frozenset[int] | None = None
    if agreement.states != "all":
        state_ids = frozenset(
            session.scalars(select(State.id).where(State.code.in_(agreement.states)))
        )
    return Population(therapy_id=therapy_id, state_ids=state_ids)


# --- the statement ---------------------------------------------------------------------------


def _facts(
    agreement: Agreement,
    population: Population,
    *,
    at: ColumnElement[datetime],
    day: ColumnElement[date],
    name: str,
    patient_ids: Sequence[int] | None,
) -> Any:
    """The population as of `at` (a CTE): each patient's record facts in the version that
    held then, and since when they left follow-up (None: still followed)."""
    current = PatientHistory.__table__.alias(f"cur_{name}")
    later = PatientHistory.__table__.alias(f"later_{name}")
    exits = [status.value for status in EXIT_STATUSES]
    last_followed = PatientHistory.__table__.alias(f"followed_{name}")
    left = PatientHistory.__table__.alias(f"left_{name}")
    followed_until = (
        select(func.max(last_followed.c.version_id))
        .where(
            last_followed.c.patient_id == current.c.patient_id,
            last_followed.c.version_id <= current.c.version_id,
            last_followed.c.status.not_in(exits),
        )
        .correlate(current)
        .scalar_subquery()
    )
    # The first version of the run of "left" statuses the record is in.
    left_since = (
        select(func.min(left.c.valid_from))
        .where(
            left.c.patient_id == current.c.patient_id,
            left.c.version_id <= current.c.version_id,
            left.c.version_id > func.coalesce(followed_until, 0),
        )
        .correlate(current)
        .scalar_subquery()
    )
    newer = (
        select(later.c.id)
        .where(
            later.c.patient_id == current.c.patient_id,
            later.c.version_id > current.c.version_id,
            later.c.valid_from <= at,
        )
        .exists()
    )
    query = select(
        current.c.patient_id,
        current.c.state_id,
        current.c.center_id,
        current.c.therapy_id,
        current.c.medicaid_id,
        current.c.infusion_date,
        current.c.status,
        year_of(current.c.infusion_date).label("cohort_year"),
        _quarter(current.c.infusion_date).label("cohort_quarter"),
        utc_day(case((current.c.status.in_(exits), left_since), else_=null())).label("left_on"),
    ).where(
        current.c.therapy_id == population.therapy_id
        if population.therapy_id is not None
        else false(),
        current.c.valid_from <= at,
        current.c.infusion_date.is_not(None),
        current.c.infusion_date >= agreement.infusions.from_,
        current.c.infusion_date <= day,
    )
    if agreement.infusions.until is not None:
        query = query.where(current.c.infusion_date <= agreement.infusions.until)
    if population.state_ids is not None:
        query = query.where(current.c.state_id.in_(population.state_ids or {-1}))
    if patient_ids is not None:
        query = query.where(current.c.patient_id.in_(patient_ids))
    # Last: the only condition that reads other rows.
    query = query.where(~newer)
    return _materialized(query, f"facts_{name}")


def _with_windows(facts: Any, measures: Sequence[Measure], *, name: str) -> Any:
    """The population with, for every month the measures' windows start or end at, the day
    that many months after the infusion (`month_6`, `month_18`, ...): worked out once per
    infusion day, as patients share infusion days."""
    months = sorted(
        {measure.window.from_month for measure in measures}
        | {measure.window.to_month for measure in measures}
    )
    days = _materialized(select(facts.c.infusion_date).distinct(), f"infusion_days_{name}")
    windows = _materialized(
        select(
            days.c.infusion_date,
            *(add_months(days.c.infusion_date, month).label(f"month_{month}") for month in months),
        ),
        f"windows_{name}",
    )
    return _materialized(
        select(facts, *(windows.c[f"month_{month}"] for month in months)).join(
            windows, windows.c.infusion_date == facts.c.infusion_date
        ),
        f"population_{name}",
    )


def _quarter(day: ColumnElement[date]) -> ColumnElement[int]:
    return (month_of(day) + 2) // 3


def _observation_versions(
    patients: Any,
    *,
    at: ColumnElement[datetime],
    code_system: str,
    codes: Sequence[str],
    unit: str | None,
    name: str,
) -> Any:
    """Every observation version of the patients in `patients` (a CTE with patient_id,
    window_start, window_end) with one of `codes`, as it stood at `at`, that is a result
    (final, amended, corrected) taken in the patient's window: (patient_id, observation_id,
    effective_at, value, recorded_at). The current version when it was recorded by then,
    else the replaced version that held then."""
    current = Observation.__table__.alias(f"o_{name}")
    recorded = func.coalesce(current.c.updated_at, current.c.created_at)
    patient_and_code, *terms = _current_version_terms(
        current,
        patient_id=patients.c.patient_id,
        window_start=patients.c.window_start,
        window_end=patients.c.window_end,
        at=at,
        code_system=code_system,
        codes=codes,
    )
    now_version = (
        select(
            patients.c.patient_id,
            current.c.id.label("observation_id"),
            current.c.effective_at,
            current.c.value_quantity.label("value"),
            recorded.label("recorded_at"),
        )
        .join(current, patient_and_code)
        .where(*terms)
    )
    if unit is not None:
        now_version = now_version.where(
            current.c.value_unit == unit, current.c.value_quantity.is_not(None)
        )
    old_version = _replaced_versions(
        patients, at=at, code_system=code_system, codes=codes, unit=unit, name=name
    )
    return union_all(now_version, old_version).subquery(f"versions_{name}")


def _replaced_versions(
    patients: Any,
    *,
    at: ColumnElement[datetime],
    code_system: str,
    codes: Sequence[str],
    unit: str | None,
    name: str,
) -> Select[Any]:
    """The versions of `_observation_versions` that a correction replaced after `at` (the
    version that held then): few, found from the replacements after that moment."""
    opens, closes = day_start(patients.c.window_start), day_start(patients.c.window_end)
    revision = ObservationRevision.__table__.alias(f"r_{name}")
    owner = Observation.__table__.alias(f"ro_{name}")
    old_version = (
        select(
            patients.c.patient_id,
            revision.c.observation_id,
            revision.c.effective_at,
            revision.c.value_quantity.label("value"),
            revision.c.recorded_at,
        )
        .select_from(revision)
        .join(owner, owner.c.id == revision.c.observation_id)
        .join(patients, patients.c.patient_id == owner.c.patient_id)
        .where(
            revision.c.replaced_at > at,
            revision.c.recorded_at <= at,
            owner.c.code_system == code_system,
            owner.c.code.in_(codes),
            revision.c.status.in_(_RESULT_STATUS_VALUES),
            revision.c.effective_at >= opens,
            revision.c.effective_at < closes,
        )
    )
    if unit is not None:
        old_version = old_version.where(
            revision.c.value_unit == unit, revision.c.value_quantity.is_not(None)
        )
    return old_version


def _claim_events(
    patients: Any, *, at: ColumnElement[datetime], flags: Sequence[str]
) -> Select[Any]:
    lines = ClaimLine.__table__
    in_window, *terms = _claim_terms(
        patient_id=patients.c.patient_id,
        window_start=patients.c.window_start,
        window_end=patients.c.window_end,
        at=at,
        flags=flags,
    )
    return (
        select(
            patients.c.patient_id,
            lines.c.service_begin.label("event_day"),
            utc_day(lines.c.loaded_at).label("known_day"),
        )
        .join(lines, in_window)
        .where(*terms)
    )


def _current_version_terms(
    current: Any,
    *,
    patient_id: ColumnElement[int],
    window_start: ColumnElement[date],
    window_end: ColumnElement[date],
    at: ColumnElement[datetime],
    code_system: str,
    codes: Sequence[str],
) -> list[ColumnElement[bool]]:
    """The conditions an observation row (`current`, an alias of the table) meets when its
    current version counts for the patient: first the patient and code (what the index
    leads with), then a result recorded by `at` and taken in the window."""
    recorded = func.coalesce(current.c.updated_at, current.c.created_at)
    return [
        and_(
            current.c.patient_id == patient_id,
            current.c.code == codes[0] if len(codes) == 1 else current.c.code.in_(codes),
        ),
        current.c.code_system == code_system,
        current.c.status.in_(_RESULT_STATUS_VALUES),
        recorded <= at,
        current.c.effective_at >= day_start(window_start),
        current.c.effective_at < day_start(window_end),
    ]


def _claim_terms(
    *,
    patient_id: ColumnElement[int],
    window_start: ColumnElement[date],
    window_end: ColumnElement[date],
    at: ColumnElement[datetime],
    flags: Sequence[str],
) -> list[ColumnElement[bool]]:
    """The conditions a claim line meets when it is a qualifying event of the patient's
    window known at `at`: first the patient and the window (what the index leads with)."""
    lines = ClaimLine.__table__
    return [
        and_(
            lines.c.patient_id == patient_id,
            lines.c.service_begin >= window_start,
            lines.c.service_begin < window_end,
        ),
        lines.c.loaded_at <= at,
        or_(lines.c.superseded_at.is_(None), lines.c.superseded_at > at),
        *(lines.c[flag] == true() for flag in flags),
    ]


def measure_results(
    agreement: Agreement,
    measure: Measure,
    population: Population,
    *,
    as_of: AsOf,
    name: str = "m",
    patient_ids: Sequence[int] | None = None,
) -> Any:
    """The statement (a subquery) giving every patient of the population as of `as_of`
    one row: patient_id, state_id, center_id, therapy_id, medicaid_id, infusion_date,
    cohort_year, cohort_quarter, window_start, window_end, status, decided_year,
    decided_quarter, decided_on, value (the observation rule's picked value),
    observation_id (its observation). `name` keeps the statement's parts apart when
    several are combined in one query."""
    at = literal(as_of.at, UTCDateTime())
    day = literal(as_of.day, Date())
    facts = _facts(agreement, population, at=at, day=day, name=name, patient_ids=patient_ids)
    patients = _with_windows(facts, [measure], name=name)
    return _measure_rows(measure, patients, at=at, day=day, name=name)


def agreement_results(
    agreement: Agreement,
    population: Population,
    *,
    as_of: AsOf,
    name: str = "a",
    patient_ids: Sequence[int] | None = None,
) -> Any:
    """Every measure of the agreement in one statement (the population worked out once):
    the rows of `measure_results` with a `measure_key` column first."""
    at = literal(as_of.at, UTCDateTime())
    day = literal(as_of.day, Date())
    facts = _facts(agreement, population, at=at, day=day, name=name, patient_ids=patient_ids)
    patients = _with_windows(facts, agreement.measures, name=name)
    parts = []
    for index, measure in enumerate(agreement.measures):
        rows = _measure_rows(measure, patients, at=at, day=day, name=f"{name}{index}")
        parts.append(select(literal(measure.key).label("measure_key"), *rows.c))
    return union_all(*parts).subquery(f"results_{name}")


def _materialized(query: Select[Any], name: str) -> Any:
    """A CTE both databases compute once and keep: SQLite then joins it through an index
    it builds on the fly (a plain subquery would be scanned once per outer row)."""
    return query.cte(name).prefix_with("MATERIALIZED")


def _measure_rows(
    measure: Measure,
    population: Any,
    *,
    at: ColumnElement[datetime],
    day: ColumnElement[date],
    name: str,
) -> Any:
    """One measure's verdicts over `population` (with its windows): each patient, with what the
    rule found for them (the day the first qualifying event became known, or the picked
    observation), grouped first and joined by patient."""
    patients = _measure_patients(measure, population, name=name)
    found = _found(measure, patients, at=at, name=name)
    row = patients.c
    verdict = _verdict(
        measure.rule,
        found,
        window_end=row.window_end,
        left_on=row.left_on,
        record_status=row.status,
        day=day,
    )
    return (
        select(
            row.patient_id,
            row.state_id,
            row.center_id,
            row.cohort_year,
            row.cohort_quarter,
            verdict.status.label("status"),
            row.therapy_id,
            row.medicaid_id,
            row.infusion_date,
            row.window_start,
            row.window_end,
            type_coerce(verdict.decided_on, Date()).label("decided_on"),
            type_coerce(verdict.value, Observation.__table__.c.value_quantity.type).label("value"),
            type_coerce(verdict.observation_id, Integer()).label("observation_id"),
        )
        .select_from(patients)
        .outerjoin(found, found.c.patient_id == row.patient_id)
        .subquery(f"results_{name}")
    )


def _measure_patients(measure: Measure, population: Any, *, name: str) -> Any:
    """The population with the measure's window as `window_start` and `window_end`."""
    window = measure.window
    columns = population.c
    return select(
        *(column for column in columns if not column.name.startswith("month_")),
        columns[f"month_{window.from_month}"].label("window_start"),
        columns[f"month_{window.to_month}"].label("window_end"),
    ).subquery(f"patients_{name}")


def _found(measure: Measure, patients: Any, *, at: ColumnElement[datetime], name: str) -> Any:
    """What the rule found for each patient of `patients` (with their window) who has
    something (a CTE by patient_id): the day the first qualifying event became known
    (`found_on`), or the picked observation (`value`, `recorded_on`, `observation_id`)."""
    rule = measure.rule
    if isinstance(rule, NoEventRule):
        source = EVENT_SOURCES[rule.event]
        branches: list[Select[Any]] = []
        if source.claim_flags:
            claims = _claim_events(patients, at=at, flags=source.claim_flags).subquery(
                f"claims_{name}"
            )
            branches.append(
                select(
                    claims.c.patient_id,
                    later_day(claims.c.event_day, claims.c.known_day).label("found_on"),
                )
            )
        if source.reports:
            codes = [REPORT_MEASURES[kind].code for kind in source.reports]
            system = REPORT_MEASURES[source.reports[0]].code_system
            reported = _observation_versions(
                patients, at=at, code_system=system, codes=codes, unit=None, name=f"ev_{name}"
            )
            branches.append(
                select(
                    reported.c.patient_id,
                    later_day(
                        utc_day(reported.c.effective_at), utc_day(reported.c.recorded_at)
                    ).label("found_on"),
                )
            )
        events = (branches[0] if len(branches) == 1 else union_all(*branches)).subquery(
            f"events_{name}"
        )
        # The first event to become known decides.
        found = _materialized(
            select(events.c.patient_id, func.min(events.c.found_on).label("found_on")).group_by(
                events.c.patient_id
            ),
            f"found_{name}",
        )
    else:
        assert isinstance(rule, ObservationRule)
        versions = _observation_versions(
            patients,
            at=at,
            code_system=rule.code_system,
            codes=[rule.code_value],
            unit=rule.unit,
            name=f"obs_{name}",
        )
        order = {
            Pick.LAST: (versions.c.effective_at.desc(), versions.c.observation_id.desc()),
            Pick.FIRST: (versions.c.effective_at.asc(), versions.c.observation_id.asc()),
            Pick.MAX: (versions.c.value.desc(), versions.c.effective_at.desc()),
            Pick.MIN: (versions.c.value.asc(), versions.c.effective_at.desc()),
        }[rule.pick]
        ranked = select(
            versions.c.patient_id,
            versions.c.value,
            utc_day(versions.c.recorded_at).label("recorded_on"),
            versions.c.observation_id,
            func.row_number()
            .over(partition_by=versions.c.patient_id, order_by=order)
            .label("rank"),
        ).subquery(f"ranked_{name}")
        found = _materialized(
            select(
                ranked.c.patient_id, ranked.c.value, ranked.c.recorded_on, ranked.c.observation_id
            ).where(ranked.c.rank == 1),
            f"found_{name}",
        )
    return found


def _left_early(
    *,
    window_end: ColumnElement[date],
    left_on: ColumnElement[date],
    record_status: ColumnElement[Any],
) -> tuple[ColumnElement[bool], ColumnElement[str]]:
    """Whether the patient left follow-up before the window closed, and the status that
    then is theirs (deceased, or lost to follow-up)."""
    left_status = case(
        (
            type_coerce(record_status, String()) == PatientStatus.DECEASED.value,
            Status.DECEASED.value,
        ),
        else_=Status.LOST_TO_FOLLOW_UP.value,
    )
    return and_(left_on.is_not(None), left_on < window_end), left_status


def _event_status(
    hit: ColumnElement[bool],
    *,
    window_end: ColumnElement[date],
    left_on: ColumnElement[date],
    record_status: ColumnElement[Any],
    day: ColumnElement[date],
) -> ColumnElement[str]:
    """An event rule's status: not met once a qualifying event is known (`hit`), else
    left follow-up before the window closed, met once it closed, else not yet."""
    left_early, left_status = _left_early(
        window_end=window_end, left_on=left_on, record_status=record_status
    )
    return case(
        (hit, Status.NOT_MET.value),
        (left_early, left_status),
        (day >= window_end, Status.MET.value),
        else_=Status.NOT_YET.value,
    )


def _event_first_known(
    measure: Measure, patients: Any, *, at: ColumnElement[datetime], name: str
) -> list[ColumnElement[date]]:
    """The day the first qualifying event of the event rule's window became known at `at`
    (None: none is), for the row of `patients` (the population with its windows) it is
    evaluated on, one expression per source: the conditions of `_found`, asked per patient
    through the indexes by patient instead of gathering every event and grouping them."""
    rule = measure.rule
    assert isinstance(rule, NoEventRule)
    source = EVENT_SOURCES[rule.event]
    row = patients.c
    window_start = row[f"month_{measure.window.from_month}"]
    window_end = row[f"month_{measure.window.to_month}"]
    firsts: list[ColumnElement[date]] = []
    if source.claim_flags:
        lines = ClaimLine.__table__
        terms = _claim_terms(
            patient_id=row.patient_id,
            window_start=window_start,
            window_end=window_end,
            at=at,
            flags=source.claim_flags,
        )
        known_on = later_day(lines.c.service_begin, utc_day(lines.c.loaded_at))
        firsts.append(select(func.min(known_on)).where(*terms).scalar_subquery())
    if source.reports:
        codes = [REPORT_MEASURES[kind].code for kind in source.reports]
        system = REPORT_MEASURES[source.reports[0]].code_system
        current = Observation.__table__.alias(f"o_ev_{name}")
        terms = _current_version_terms(
            current,
            patient_id=row.patient_id,
            window_start=window_start,
            window_end=window_end,
            at=at,
            code_system=system,
            codes=codes,
        )
        recorded = func.coalesce(current.c.updated_at, current.c.created_at)
        known_on = later_day(utc_day(current.c.effective_at), utc_day(recorded))
        firsts.append(select(func.min(known_on)).where(*terms).scalar_subquery())
        # The versions replaced since are few: gathered and grouped once, not asked per
        # patient.
        replaced = _replaced_versions(
            _measure_patients(measure, patients, name=name),
            at=at,
            code_system=system,
            codes=codes,
            unit=None,
            name=f"ev_{name}",
        ).subquery(f"replaced_{name}")
        first_replaced = _materialized(
            select(
                replaced.c.patient_id,
                func.min(
                    later_day(utc_day(replaced.c.effective_at), utc_day(replaced.c.recorded_at))
                ).label("found_on"),
            ).group_by(replaced.c.patient_id),
            f"first_replaced_{name}",
        )
        firsts.append(
            select(first_replaced.c.found_on)
            .where(first_replaced.c.patient_id == row.patient_id)
            .scalar_subquery()
        )
    return firsts


def _earliest(days: Sequence[ColumnElement[date]]) -> ColumnElement[date]:
    """The earliest of nullable days (None when all are): NULL-safe on both databases
    (SQLite's two-argument min() is NULL when either is)."""
    first = days[0]
    for other in days[1:]:
        first = case(
            (first.is_(None), other),
            (other.is_(None), first),
            (other < first, other),
            else_=first,
        )
    return first


@dataclass(frozen=True)
class _Verdict:
    status: ColumnElement[Any]
    decided_on: ColumnElement[Any]
    value: ColumnElement[Any]
    observation_id: ColumnElement[Any]


def _verdict(
    rule: NoEventRule | ObservationRule,
    found: Any,
    *,
    window_end: ColumnElement[date],
    left_on: ColumnElement[date],
    record_status: ColumnElement[Any],
    day: ColumnElement[date],
) -> _Verdict:
    """A patient's status and the day it was decided, from their window's end, since when
    they left follow-up, their record's status and what the rule found (see the module's
    docstring for the order of the verdicts)."""
    left_early, left_status = _left_early(
        window_end=window_end, left_on=left_on, record_status=record_status
    )
    closed = day >= window_end
    if isinstance(rule, NoEventRule):
        return _event_verdict(
            found.c.found_on,
            window_end=window_end,
            left_on=left_on,
            record_status=record_status,
            day=day,
        )
    picked = found.c
    threshold = literal(rule.value, picked.value.type)
    meets = {
        ">=": picked.value >= threshold,
        ">": picked.value > threshold,
        "<=": picked.value <= threshold,
        "<": picked.value < threshold,
    }[rule.comparator.value]
    status = case(
        (left_early, left_status),
        (~closed, Status.NOT_YET.value),
        (picked.value.is_(None), Status.MISSING_DATA.value),
        (meets, Status.MET.value),
        else_=Status.NOT_MET.value,
    )
    decided_on = case(
        (left_early, left_on),
        (~closed, null()),
        (picked.value.is_(None), window_end),
        else_=later_day(window_end, picked.recorded_on),
    )
    value = case((and_(closed, ~left_early), picked.value), else_=null())
    observation_id = case((and_(closed, ~left_early), picked.observation_id), else_=null())
    return _Verdict(
        status=status, decided_on=decided_on, value=value, observation_id=observation_id
    )


def _event_verdict(
    found_on: ColumnElement[date],
    *,
    window_end: ColumnElement[date],
    left_on: ColumnElement[date],
    record_status: ColumnElement[Any],
    day: ColumnElement[date],
) -> _Verdict:
    """An event rule's status and the day it was decided, from the day its first
    qualifying event became known (`found_on`, None: none is)."""
    left_early, _ = _left_early(window_end=window_end, left_on=left_on, record_status=record_status)
    hit = found_on.is_not(None)
    status = _event_status(
        hit, window_end=window_end, left_on=left_on, record_status=record_status, day=day
    )
    decided_on = case(
        (hit, found_on),
        (left_early, left_on),
        (day >= window_end, window_end),
        else_=null(),
    )
    # Typed nulls: PostgreSQL reads a bare NULL as text.
    return _Verdict(
        status=status,
        decided_on=decided_on,
        value=cast(null(), Observation.__table__.c.value_quantity.type),
        observation_id=cast(null(), Integer()),
    )


# --- aggregates ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CubeCell:
    """How many patients of one state, center and infusion quarter had one status, decided
    in one calendar quarter (None: not decided yet, or a snapshot that did not keep it)."""

    state_id: int
    center_id: int
    cohort_year: int
    cohort_quarter: int
    status: Status
    count: int
    decided_year: int | None = None
    decided_quarter: int | None = None

    @property
    def cohort(self) -> str:
        return f"{self.cohort_year}-Q{self.cohort_quarter}"

    @property
    def decided(self) -> str | None:
        """The quarter the result was decided in ("2026-Q2"), or None."""
        if self.decided_year is None or self.decided_quarter is None:
            return None
        return f"{self.decided_year}-Q{self.decided_quarter}"


@dataclass(frozen=True)
class MeasureCube:
    measure_key: str
    cells: tuple[CubeCell, ...]


@dataclass(frozen=True)
class OutcomeCube:
    """Every measure of an agreement as of a moment, counted by state, center, infusion
    quarter, status and the quarter the result was decided in: what dashboards filter and
    group, and snapshots keep."""

    agreement_key: str
    agreement_version: int
    as_of: datetime
    measures: tuple[MeasureCube, ...] = field(default_factory=tuple)
    # Whether the cells say the quarter each result was decided in (snapshots taken before
    # they did cannot be filtered by period).
    has_decided: bool = True

    def measure(self, key: str) -> MeasureCube | None:
        return next((cube for cube in self.measures if cube.measure_key == key), None)


def _cube_statement(agreement: Agreement, population: Population, *, as_of: AsOf) -> Any:
    """The counts of `outcome_cube`: (measure_key, state_id, center_id, cohort_year,
    cohort_quarter, status, decided_year, decided_quarter, patients), in that order.

    Each patient is read once with every measure's status and decided quarter side by side
    and counted by those (one grouping of the population, not one per measure); each
    measure's counts are then the sums over that much smaller table. An event rule asks,
    per patient through the indexes, only for the day its first event became known."""
    at = literal(as_of.at, UTCDateTime())
    day = literal(as_of.day, Date())
    facts = _facts(agreement, population, at=at, day=day, name="a", patient_ids=None)
    windowed = _with_windows(facts, agreement.measures, name="a")
    # The first-known days are correlated subqueries: computed once per patient here (a
    # materialized CTE), then read as plain columns by the verdicts that use them twice.
    firsts: list[ColumnElement[Any]] = []
    for index, measure in enumerate(agreement.measures):
        if isinstance(measure.rule, NoEventRule):
            days = _event_first_known(measure, windowed, at=at, name=f"a{index}")
            firsts += [first.label(f"first_{index}_{n}") for n, first in enumerate(days)]
    patients = _materialized(select(*windowed.c, *firsts), "patients_a")
    row = patients.c
    verdicts: list[ColumnElement[Any]] = []
    joined: Any = patients
    for index, measure in enumerate(agreement.measures):
        name = f"a{index}"
        window_end = row[f"month_{measure.window.to_month}"]
        if isinstance(measure.rule, NoEventRule):
            sources = [column for column in row if column.name.startswith(f"first_{index}_")]
            verdict = _event_verdict(
                _earliest(sources),
                window_end=window_end,
                left_on=row.left_on,
                record_status=row.status,
                day=day,
            )
        else:
            found = _found(
                measure, _measure_patients(measure, patients, name=name), at=at, name=name
            )
            joined = joined.outerjoin(found, found.c.patient_id == row.patient_id)
            verdict = _verdict(
                measure.rule,
                found,
                window_end=window_end,
                left_on=row.left_on,
                record_status=row.status,
                day=day,
            )
        decided = type_coerce(verdict.decided_on, Date())
        verdicts += [
            verdict.status.label(f"status_{index}"),
            year_of(decided).label(f"decided_year_{index}"),
            _quarter(decided).label(f"decided_quarter_{index}"),
        ]
    places = (row.state_id, row.center_id, row.cohort_year, row.cohort_quarter)
    counted = _materialized(
        select(*places, *verdicts, func.count().label("patients"))
        .select_from(joined)
        .group_by(*places, *verdicts),
        "counted_a",
    )
    keys = (
        counted.c.state_id,
        counted.c.center_id,
        counted.c.cohort_year,
        counted.c.cohort_quarter,
    )
    parts = []
    for index, measure in enumerate(agreement.measures):
        own = (
            counted.c[f"status_{index}"],
            counted.c[f"decided_year_{index}"],
            counted.c[f"decided_quarter_{index}"],
        )
        parts.append(
            select(
                literal(measure.key).label("measure_key"),
                *keys,
                own[0].label("status"),
                own[1].label("decided_year"),
                own[2].label("decided_quarter"),
                type_coerce(func.sum(counted.c.patients), Integer()).label("patients"),
            ).group_by(*keys, *own)
        )
    cube = union_all(*parts).subquery("cube_a")
    return select(cube).order_by(
        cube.c.measure_key,
        cube.c.state_id,
        cube.c.center_id,
        cube.c.cohort_year,
        cube.c.cohort_quarter,
        cube.c.status,
        cube.c.decided_year,
        cube.c.decided_quarter,
    )


def outcome_cube(session: Session, *, agreement: Agreement, as_of: AsOf) -> OutcomeCube:
    """Every measure of `agreement` as of `as_of`, counted by the database in one
    statement (see `OutcomeCube`)."""
    population = population_of(session, agreement)
    rows = session.execute(_cube_statement(agreement, population, as_of=as_of))
    cells: dict[str, list[CubeCell]] = {measure.key: [] for measure in agreement.measures}
    for measure_key, state_id, center_id, year, quarter, status, d_year, d_quarter, count in rows:
        cells[measure_key].append(
            CubeCell(
                state_id=state_id,
                center_id=center_id,
                cohort_year=int(year),
                cohort_quarter=int(quarter),
                status=Status(status),
                count=int(count),
                decided_year=int(d_year) if d_year is not None else None,
                decided_quarter=int(d_quarter) if d_quarter is not None else None,
            )
        )
    return OutcomeCube(
        agreement_key=agreement.key,
        agreement_version=agreement.version,
        as_of=as_of.at,
        measures=tuple(MeasureCube(key, tuple(found)) for key, found in cells.items()),
    )


# --- patients behind a figure ----------------------------------------------------------------


@dataclass(frozen=True)
class PatientResult:
    patient_id: int
    state_id: int
    center_id: int
    medicaid_id: str
    infusion_date: date
    window_start: date
    window_end: date
    status: Status
    decided_on: date | None
    value: Decimal | None
    observation_id: int | None  # the observation rule's deciding observation

    @property
    def cohort(self) -> str:
        return f"{self.infusion_date.year}-Q{(self.infusion_date.month - 1) // 3 + 1}"


@dataclass(frozen=True)
class ResultFilter:
    """Which patients' results to list: any of these left None means all."""

    status: Status | None = None
    state_ids: frozenset[int] | None = None
    center_id: int | None = None
    cohort_year: int | None = None
    cohort_quarter: int | None = None
    # Results decided from this day to that one, both included (a dashboard's period).
    decided_from: date | None = None
    decided_until: date | None = None


def _result(row: Any) -> PatientResult:
    return PatientResult(
        patient_id=row.patient_id,
        state_id=row.state_id,
        center_id=row.center_id,
        medicaid_id=row.medicaid_id,
        infusion_date=row.infusion_date,
        window_start=row.window_start,
        window_end=row.window_end,
        status=Status(row.status),
        decided_on=row.decided_on,
        value=Decimal(row.value) if row.value is not None else None,
        observation_id=row.observation_id,
    )


def patient_results(
    session: Session,
    *,
    agreement: Agreement,
    measure: Measure,
    as_of: AsOf,
    which: ResultFilter,
    patient_ids: Sequence[int] | None = None,
    limit: int | None = None,
) -> list[PatientResult]:
    """The results of the patients a figure counts (by Medicaid ID order), only among
    `patient_ids` when given (the caller passes those the viewer may see)."""
    population = population_of(session, agreement)
    results = measure_results(agreement, measure, population, as_of=as_of, patient_ids=patient_ids)
    query = select(results)
    if which.status is not None:
        query = query.where(results.c.status == which.status.value)
    if which.state_ids is not None:
        query = query.where(results.c.state_id.in_(which.state_ids or {-1}))
    if which.center_id is not None:
        query = query.where(results.c.center_id == which.center_id)
    if which.cohort_year is not None:
        query = query.where(results.c.cohort_year == which.cohort_year)
    if which.cohort_quarter is not None:
        query = query.where(results.c.cohort_quarter == which.cohort_quarter)
    if which.decided_from is not None:
        query = query.where(results.c.decided_on >= which.decided_from)
    if which.decided_until is not None:
        query = query.where(results.c.decided_on <= which.decided_until)
    query = query.order_by(results.c.medicaid_id, results.c.patient_id)
    if limit is not None:
        query = query.limit(limit)
    return [_result(row) for row in session.execute(query)]


# --- one patient and the evidence ------------------------------------------------------------


@dataclass(frozen=True)
class ObservationEvidence:
    observation_id: int
    version_id: int
    display: str
    effective_on: date
    value: str
    status: str
    recorded_at: datetime
    deciding: bool
    replaced_later: bool  # this version was corrected after the moment looked from


@dataclass(frozen=True)
class ClaimEvidence:
    claim_line_id: int
    claim_id: str
    line_number: int
    claim_type: ClaimType
    service_begin: date
    service_end: date
    diagnoses: tuple[str, ...]
    is_vaso_occlusive: bool
    is_inpatient_stay: bool
    is_ed_visit: bool
    loaded_at: datetime
    # Replaced (an adjustment or a corrected file) by the moment looked from: listed, but
    # it counts for nothing.
    superseded: bool
    counts: bool  # a qualifying event of the measure's rule


@dataclass(frozen=True)
class VisitEvidence:
    visit_id: int
    visit_key: str
    window_start: date
    window_end: date
    status: str  # as of the moment looked from
    completed_on: date | None


@dataclass(frozen=True)
class PatientOutcome:
    """One patient's result for one measure as of a moment, and what decided it."""

    result: PatientResult | None  # None: not in the agreement's population then
    observations: tuple[ObservationEvidence, ...] = ()
    claims: tuple[ClaimEvidence, ...] = ()
    visits: tuple[VisitEvidence, ...] = ()
    left_on: date | None = None


def patient_outcome(
    session: Session, *, agreement: Agreement, measure: Measure, patient_id: int, as_of: AsOf
) -> PatientOutcome:
    """The result of one patient (the same statement as every patient's) and its evidence:
    the observations and confirmed reports the rule reads in the window as they stood then
    (the deciding one marked), the claim lines of the window loaded by then (superseded
    ones marked), and the visits whose window meets the measure's, with their status then."""
    results = patient_results(
        session,
        agreement=agreement,
        measure=measure,
        as_of=as_of,
        which=ResultFilter(),
        patient_ids=[patient_id],
    )
    if not results:
        return PatientOutcome(result=None)
    result = results[0]
    observations = _observation_evidence(session, measure=measure, result=result, as_of=as_of)
    claims = _claim_evidence(session, measure=measure, result=result, as_of=as_of)
    visits = _visit_evidence(session, result=result, as_of=as_of)
    left_on = None
    if result.status in (Status.LOST_TO_FOLLOW_UP, Status.DECEASED):
        left_on = result.decided_on
    return PatientOutcome(
        result=result,
        observations=observations,
        claims=claims,
        visits=visits,
        left_on=left_on,
    )


def _rule_codes(measure: Measure) -> tuple[str, list[str]] | None:
    rule = measure.rule
    if isinstance(rule, ObservationRule):
        return rule.code_system, [rule.code_value]
    reports = EVENT_SOURCES[rule.event].reports
    if not reports:
        return None
    return REPORT_MEASURES[reports[0]].code_system, [REPORT_MEASURES[k].code for k in reports]


def _in_window(day: date, result: PatientResult) -> bool:
    return result.window_start <= day < result.window_end


def _observation_evidence(
    session: Session, *, measure: Measure, result: PatientResult, as_of: AsOf
) -> tuple[ObservationEvidence, ...]:
    codes = _rule_codes(measure)
    if codes is None:
        return ()
    system, code_values = codes
    rows = session.scalars(
        select(Observation).where(
            Observation.patient_id == result.patient_id,
            Observation.code_system == system,
            Observation.code.in_(code_values),
        )
    ).all()
    revisions: dict[int, list[ObservationRevision]] = {}
    if rows:
        for revision in session.scalars(
            select(ObservationRevision).where(
                ObservationRevision.observation_id.in_([row.id for row in rows])
            )
        ):
            revisions.setdefault(revision.observation_id, []).append(revision)
    rule = measure.rule
    found: list[ObservationEvidence] = []
    for row in rows:
        # The version that held at the moment looked from: the current one if recorded
        # by then, else the replaced one recorded by then and replaced after.
        version: Any = row if row.last_updated <= as_of.at else None
        if version is None:
            version = next(
                (
                    revision
                    for revision in revisions.get(row.id, [])
                    if revision.recorded_at <= as_of.at < revision.replaced_at
                ),
                None,
            )
        if version is None:
            continue
        status = str(getattr(version.status, "value", version.status))
        effective_on = version.effective_at.astimezone(UTC).date()
        if status not in _RESULT_STATUS_VALUES or not _in_window(effective_on, result):
            continue
        if isinstance(rule, ObservationRule) and (
            version.value_unit != rule.unit or version.value_quantity is None
        ):
            continue
        value = (
            f"{Decimal(version.value_quantity).normalize():f} {version.value_unit or ''}".strip()
            if version.value_quantity is not None
            else (version.value_text or "")
        )
        recorded_at = version.last_updated if version is row else version.recorded_at
        deciding = (
            row.id == result.observation_id
            if isinstance(rule, ObservationRule)
            else result.status is Status.NOT_MET
        )
        found.append(
            ObservationEvidence(
                observation_id=row.id,
                version_id=version.version_id,
                display=row.display,
                effective_on=effective_on,
                value=value,
                status=status,
                recorded_at=recorded_at,
                deciding=deciding,
                replaced_later=version is not row,
            )
        )
    found.sort(key=lambda item: (item.effective_on, item.observation_id))
    return tuple(found)


def _claim_evidence(
    session: Session, *, measure: Measure, result: PatientResult, as_of: AsOf
) -> tuple[ClaimEvidence, ...]:
    rule = measure.rule
    flags = EVENT_SOURCES[rule.event].claim_flags if isinstance(rule, NoEventRule) else ()
    lines = session.scalars(
        select(ClaimLine)
        .where(
            ClaimLine.patient_id == result.patient_id,
            ClaimLine.service_begin >= result.window_start,
            ClaimLine.service_begin < result.window_end,
            ClaimLine.loaded_at <= as_of.at,
        )
        .order_by(ClaimLine.service_begin, ClaimLine.claim_id, ClaimLine.line_number, ClaimLine.id)
    ).all()
    found = []
    for line in lines:
        superseded = line.superseded_at is not None and line.superseded_at <= as_of.at
        counts = bool(flags) and not superseded and all(getattr(line, flag) for flag in flags)
        found.append(
            ClaimEvidence(
                claim_line_id=line.id,
                claim_id=line.claim_id,
                line_number=line.line_number,
                claim_type=line.claim_type,
                service_begin=line.service_begin,
                service_end=line.service_end,
                diagnoses=tuple(line.diagnoses or ()),
                is_vaso_occlusive=line.is_vaso_occlusive,
                is_inpatient_stay=line.is_inpatient_stay,
                is_ed_visit=line.is_ed_visit,
                loaded_at=line.loaded_at,
                superseded=superseded,
                counts=counts,
            )
        )
    return tuple(found)


def _visit_evidence(
    session: Session, *, result: PatientResult, as_of: AsOf
) -> tuple[VisitEvidence, ...]:
    visits = session.scalars(
        select(Visit)
        .where(
            Visit.patient_id == result.patient_id,
            Visit.created_at <= as_of.at,
            Visit.window_end >= result.window_start,
            Visit.window_start < result.window_end,
        )
        .order_by(Visit.window_start, Visit.id)
    ).all()
    if not visits:
        return ()
    last_event = (
        select(
            VisitEvent.visit_id,
            VisitEvent.to_status,
            func.row_number()
            .over(
                partition_by=VisitEvent.visit_id,
                order_by=(VisitEvent.at.desc(), VisitEvent.id.desc()),
            )
            .label("rank"),
        )
        .where(VisitEvent.visit_id.in_([visit.id for visit in visits]), VisitEvent.at <= as_of.at)
        .subquery()
    )
    status_then = dict(
        session.execute(
            select(last_event.c.visit_id, last_event.c.to_status).where(last_event.c.rank == 1)
        ).all()
    )
    found = []
    for visit in visits:
        status = status_then.get(visit.id, "due")
        found.append(
            VisitEvidence(
                visit_id=visit.id,
                visit_key=visit.visit_key,
                window_start=visit.window_start,
                window_end=visit.window_end,
                status=status,
                completed_on=visit.completed_on if status == "completed" else None,
            )
        )
    return tuple(found)


def window_of(infusion_date: date, measure: Measure) -> tuple[date, date]:
    """The measure's window for an infusion on `infusion_date` (start included, end
    excluded): the same days the SQL computes."""
    return (
        add_months_to(infusion_date, measure.window.from_month),
        add_months_to(infusion_date, measure.window.to_month),
    )


__all__ = [
    "EVENT_SOURCES",
    "STATUSES",
    "AsOf",
    "CubeCell",
    "MeasureCube",
    "OutcomeCube",
    "PatientOutcome",
    "PatientResult",
    "Population",
    "ResultFilter",
    "Status",
    "agreement_results",
    "measure_results",
    "outcome_cube",
    "patient_outcome",
    "patient_results",
    "population_of",
    "window_of",
]
