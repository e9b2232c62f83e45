"""The due questionnaires as the pages show them: on the patient's home ("Your questionnaire
for the Day 100 check-up is ready"), beside each visit on the schedule, and on the
coordinator's patient page (with those not loaded yet). The routes that show them live with
their pages; this module only shapes what they read from `coordination.questionnaires.due`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from coordination.followup.protocol import shipped_protocols
from coordination.questionnaires.due import (
    DueQuestionnaire,
    DueStatus,
    due_for_patients,
    due_questionnaires,
    open_to_answer,
)
from core.clock import Clock
from core.models import Patient
from core.text import N_
from portal import i18n

STATUS_WORDS = {
    DueStatus.NOT_STARTED: N_("To answer"),
    DueStatus.IN_PROGRESS: N_("Started"),
    DueStatus.DONE: N_("Answered"),
    DueStatus.OVERDUE: N_("Not answered in time"),
}
NOT_LOADED = N_("Not loaded yet")
BADGES = {
    DueStatus.NOT_STARTED: "badge-neutral",
    DueStatus.IN_PROGRESS: "badge-neutral",
    DueStatus.DONE: "badge-ok",
    DueStatus.OVERDUE: "badge-warn",
}


@dataclass(frozen=True)
class DueLine:
    """One due questionnaire in the reader's language, and whether they may answer it now."""

    item: DueQuestionnaire
    time_point: str
    title: str | None  # None: not loaded yet
    status_text: str
    badge: str
    can_answer: bool

    @property
    def visit_id(self) -> int | None:
        return self.item.visit.id if self.item.visit is not None else None


def due_lines(
    session: Session,
    *,
    clock: Clock,
    patient: Patient,
    may_answer: bool,
    include_future: bool = False,
    for_staff: bool = False,
) -> list[DueLine]:
    """The patient's due questionnaires for a page: for patients and caregivers only those
    loaded; for staff also those not loaded yet. `may_answer`: the reader may answer for
    the patient (the patient, or a caregiver with the right)."""
    due = due_questionnaires(
        session,
        clock=clock,
        library=shipped_protocols(),
        patient=patient,
        language=i18n.current_language(),
        include_future=include_future,
    )
    return _lines(due, clock=clock, patient=patient, may_answer=may_answer, for_staff=for_staff)


def ready_lines(
    session: Session, *, clock: Clock, people: list[tuple[Patient, bool]]
) -> dict[int, list[DueLine]]:
    """For the home page: each person's questionnaires the reader may answer now, by
    patient id (`people`: each patient, and whether the reader may answer for them).
    The same few queries for one person or six."""
    answering = [patient for patient, may_answer in people if may_answer]
    due = due_for_patients(
        session,
        clock=clock,
        library=shipped_protocols(),
        patients=answering,
        language=i18n.current_language(),
    )
    return {
        patient.id: [
            line
            for line in _lines(due[patient.id], clock=clock, patient=patient, may_answer=True)
            if line.can_answer
        ]
        for patient in answering
    }


def _lines(
    due: list[DueQuestionnaire],
    *,
    clock: Clock,
    patient: Patient,
    may_answer: bool,
    for_staff: bool = False,
) -> list[DueLine]:
    language = i18n.current_language().value
    answerable = {id(item) for item in open_to_answer(due, clock=clock, patient=patient)}
    lines = []
    for item in due:
        if not item.loaded and not for_staff:
            continue
        lines.append(
            DueLine(
                item=item,
                time_point=item.time_point.text(language),
                title=item.questionnaire.title if item.questionnaire is not None else None,
                status_text=i18n.gettext(STATUS_WORDS[item.status] if item.loaded else NOT_LOADED),
                badge=BADGES[item.status] if item.loaded else "badge-neutral",
                can_answer=may_answer and id(item) in answerable,
            )
        )
    return lines


def by_visit(lines: list[DueLine]) -> dict[int | None, list[DueLine]]:
    """The lines by visit id (None: before the infusion), for a page listing visits."""
    grouped: dict[int | None, list[DueLine]] = {}
    for line in lines:
        grouped.setdefault(line.visit_id, []).append(line)
    return grouped
