"""What staff see of education: one patient's readings (and their caregivers' own), and a
state's reach — how many patients and caregivers completed each module, month by month.

Reach counts a reader once per module, in the month (the state's calendar) they first
completed it in that state: a reader who completes a new version later is not counted again,
so a module's total is the number of different people who completed it. Every figure goes
through `reporting.suppression` (counts from 1 to 10 are "<11", and nothing hidden can be
worked out from the totals) before it reaches a page or an export: the raw counts never
leave this file."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.clock import Clock, local_today
from core.identity.models import User
from core.models import Patient, State
from education.assignments import ReaderChoice, readers_of_patient
from education.content import Module, ModuleLibrary
from education.models import ModuleAssignment, ModuleCompletion, ModuleProgress
from education.offer import ReadingStatus, reading_status
from reporting.suppression import SuppressedTable, suppress_table

# --- one patient ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AssignmentView:
    due_on: date | None
    assigned_at: datetime
    assigned_by: str | None
    texted: bool


@dataclass(frozen=True)
class CompletionView:
    version: int
    score: int
    questions: int
    completed_at: datetime
    current: bool  # of a version the reader need not read again


@dataclass(frozen=True)
class ModuleReading:
    key: str
    title: str
    status: ReadingStatus
    assignment: AssignmentView | None  # the latest
    section: int | None  # where the reader resumes (1-based), while reading
    sections: int | None  # None: a module no longer shipped
    all_sections_read: bool  # the knowledge check comes next
    updated_at: datetime | None  # of the progress
    completions: tuple[CompletionView, ...]  # newest first
    overdue: bool


@dataclass(frozen=True)
class ReaderEducation:
    reader: ReaderChoice
    readings: tuple[ModuleReading, ...]


_RANK = {
    ReadingStatus.IN_PROGRESS: 0,
    ReadingStatus.NOT_STARTED: 1,
    ReadingStatus.NEEDS_NEW_READ: 2,
    ReadingStatus.COMPLETED: 3,
}


def _reading(
    key: str,
    module: Module | None,
    language: str,
    assignment: AssignmentView | None,
    progress: ModuleProgress | None,
    completions: list[ModuleCompletion],
    today: date,
) -> ModuleReading:
    significant = module.significant_since if module is not None else 0
    views = tuple(
        CompletionView(
            version=done.module_version,
            score=done.score,
            questions=done.questions,
            completed_at=done.completed_at,
            current=done.module_version >= significant,
        )
        for done in sorted(completions, key=lambda d: d.completed_at, reverse=True)
    )
    latest = max(completions, key=lambda d: (d.module_version, d.completed_at), default=None)
    if module is not None:
        status = reading_status(module, progress, latest)
    else:  # a module no longer shipped: only what was completed counts
        status = ReadingStatus.COMPLETED if latest is not None else ReadingStatus.NOT_STARTED
    reading_now = status is ReadingStatus.IN_PROGRESS
    section: int | None = None
    all_read = False
    ids = module.section_ids if module is not None else ()
    if reading_now and progress is not None and ids:
        done = {s for s in (progress.sections_done or []) if s in ids}
        all_read = len(done) == len(ids)
        if progress.current_section in ids:
            section = ids.index(progress.current_section) + 1
        else:
            section = min(len(done) + 1, len(ids))
    overdue = (
        assignment is not None
        and assignment.due_on is not None
        and assignment.due_on < today
        and status is not ReadingStatus.COMPLETED
    )
    return ModuleReading(
        key=key,
        title=module.text(language).title if module is not None else key,
        status=status,
        assignment=assignment,
        section=section,
        sections=len(ids) if module is not None else None,
        all_sections_read=all_read,
        updated_at=progress.updated_at if progress is not None else None,
        completions=views,
        overdue=overdue,
    )


def patient_education(
    session: Session,
    *,
    clock: Clock,
    patient: Patient,
    library: ModuleLibrary,
    language: str,
    readers: Sequence[ReaderChoice] | None = None,
) -> list[ReaderEducation]:
    """For the patient and each linked caregiver with a login: what they were assigned
    (about this patient), what they are reading and what they completed (their own)."""
    if readers is None:
        readers = readers_of_patient(session, patient=patient)
    user_ids = [choice.user.id for choice in readers]
    if not user_ids:
        return []
    assignments: dict[tuple[int, str], AssignmentView] = {}
    assigner = select(User.display_name).where(User.id == ModuleAssignment.assigned_by_user_id)
    for row, name in session.execute(
        select(ModuleAssignment, assigner.scalar_subquery())
        .where(
            ModuleAssignment.user_id.in_(user_ids),
            ModuleAssignment.patient_id == patient.id,
        )
        .order_by(ModuleAssignment.assigned_at, ModuleAssignment.id)
    ):
        assignments[row.user_id, row.module_key] = AssignmentView(
            due_on=row.due_on,
            assigned_at=row.assigned_at,
            assigned_by=name,
            texted=row.message_id is not None,
        )
    progress = {
        (row.user_id, row.module_key): row
        for row in session.scalars(
            select(ModuleProgress).where(ModuleProgress.user_id.in_(user_ids))
        )
    }
    completions: dict[tuple[int, str], list[ModuleCompletion]] = {}
    for done in session.scalars(
        select(ModuleCompletion).where(ModuleCompletion.user_id.in_(user_ids))
    ):
        completions.setdefault((done.user_id, done.module_key), []).append(done)
    state = session.get(State, patient.state_id)
    assert state is not None
    today = local_today(clock, state.time_zone)
    result = []
    for choice in readers:
        uid = choice.user.id
        keys = {key for (user_id, key) in (*assignments, *progress, *completions) if user_id == uid}
        readings = [
            _reading(
                key,
                library.get(key),
                language,
                assignments.get((uid, key)),
                progress.get((uid, key)),
                completions.get((uid, key), []),
                today,
            )
            for key in keys
        ]
        readings.sort(key=lambda r: (_RANK[r.status], r.title.casefold()))
        result.append(ReaderEducation(reader=choice, readings=tuple(readings)))
    return result


# --- a state's reach ---------------------------------------------------------------------


READER_KINDS = ("patient", "caregiver")


@dataclass(frozen=True)
class ReachModule:
    key: str
    title: str


@dataclass(frozen=True)
class ReachTable:
    """One kind of reader: modules (rows) by months (columns), suppressed."""

    readers: str  # patient | caregiver
    modules: tuple[ReachModule, ...]
    table: SuppressedTable

    @property
    def withheld(self) -> bool:
        """Not published at all: a line of it would reveal its counts whatever is hidden
        (ten or more ones and a total under 11, see `reporting.suppression`)."""
        return self.table.unprotected_lines > 0


@dataclass(frozen=True)
class StateReach:
    state: State
    year: int
    years: tuple[int, ...]  # the years there is something to show, newest first
    months: tuple[date, ...]  # the first day of each month shown
    tables: tuple[ReachTable, ...]  # patients, then caregivers


def _first_completions(session: Session, *, state: State) -> list[tuple[str, str, date]]:
    """(module key, reader kind, local month) of each reader's first completion of each
    module in the state."""
    zone = ZoneInfo(state.time_zone)
    first = func.min(ModuleCompletion.completed_at)
    rows = session.execute(
        select(ModuleCompletion.module_key, ModuleCompletion.reader_role, first)
        .where(ModuleCompletion.state_id == state.id)
        .group_by(
            ModuleCompletion.user_id, ModuleCompletion.module_key, ModuleCompletion.reader_role
        )
    )
    found = []
    for key, role, at in rows:  # min() keeps the column's type: an aware UTC instant
        local = at.astimezone(zone)
        found.append((key, role, date(local.year, local.month, 1)))
    return found


def _modules_for(
    readers: str, library: ModuleLibrary, language: str, keys_seen: set[str]
) -> tuple[ReachModule, ...]:
    shown = [
        ReachModule(m.key, m.text(language).title)
        for m in library
        if (m.for_patients() if readers == "patient" else m.for_caregivers()) or m.key in keys_seen
    ]
    # Completions of a module no longer shipped stay counted, under its key.
    shown += [ReachModule(key, key) for key in sorted(keys_seen - set(library.modules))]
    return tuple(shown)


def state_reach(
    session: Session,
    *,
    clock: Clock,
    state: State,
    year: int | None,
    library: ModuleLibrary,
    language: str,
) -> StateReach:
    """The state's reach in `year` (the current year when None or out of range)."""
    today = local_today(clock, state.time_zone)
    found = _first_completions(session, state=state)
    years = tuple(
        sorted({month.year for _k, _r, month in found if month.year <= today.year} | {today.year})
    )[::-1]
    chosen = year if year in years else today.year
    last_month = today.month if chosen == today.year else 12
    months = tuple(date(chosen, m, 1) for m in range(1, last_month + 1))
    tables = []
    for readers in READER_KINDS:
        counts = Counter(
            (key, month) for key, role, month in found if role == readers and month.year == chosen
        )
        modules = _modules_for(readers, library, language, {key for key, _m in counts})
        grid = [[counts.get((m.key, month), 0) for month in months] for m in modules]
        tables.append(ReachTable(readers=readers, modules=modules, table=suppress_table(grid)))
    return StateReach(state=state, year=chosen, years=years, months=months, tables=tuple(tables))


CSV_HEADER = ("state", "year", "readers", "module", "title", "month", "completed")
TOTAL = "total"


def reach_csv(reach: StateReach) -> str:
    """The figures as published on the page (suppressed), one per line: each module and
    month, each module's total (month "total"), each month's total (module "total") and
    the grand total. A withheld table has no lines."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    code, year = reach.state.code, reach.year
    months = [f"{month:%Y-%m}" for month in reach.months]
    for table in reach.tables:
        if table.withheld:
            continue
        kind = table.readers
        suppressed = table.table
        for module, cells, total in zip(
            table.modules, suppressed.cells, suppressed.row_totals, strict=True
        ):
            for month, cell in zip(months, cells, strict=True):
                writer.writerow((code, year, kind, module.key, module.title, month, cell.text))
            writer.writerow((code, year, kind, module.key, module.title, TOTAL, total.text))
        for month, cell in zip(months, suppressed.column_totals, strict=True):
            writer.writerow((code, year, kind, TOTAL, "", month, cell.text))
        writer.writerow((code, year, kind, TOTAL, "", TOTAL, suppressed.grand_total.text))
    return out.getvalue()
