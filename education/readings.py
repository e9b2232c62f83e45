"""What staff see of one patient's education: their readings (and their caregivers' own),
what they were assigned, where they are in each module and what they completed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.clock import Clock, local_today
from core.identity.models import User
from core.models import Patient, State
from education.assignments import ReaderChoice, readers_of_patient
from education.content import Module, ModuleLibrary
from education.models import ModuleAssignment, ModuleCompletion, ModuleProgress
from education.offer import ReadingStatus, reading_status


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
