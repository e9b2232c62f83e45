"""Finding patients: the staff's patient list and search (within what each user may see),
and one patient by id.

Plain keyword-only functions over a Session; they flush and never commit."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session, joinedload

from core.audit.service import Actor, record_event
from core.clock import Clock
from core.identity.access import scope_patients
from core.identity.models import User
from core.models import Patient, PatientStatus


@dataclass(frozen=True)
class PatientCriteria:
    text: str | None = None
    state_id: int | None = None
    center_id: int | None = None
    status: PatientStatus | None = None


def _search(query: Select[Patient], criteria: PatientCriteria) -> Select[Patient]:
    if criteria.text and criteria.text.strip():
        words = criteria.text.strip().lower().split()[:4]
        for word in words:
            pattern = f"%{word}%"
            query = query.where(
                or_(
                    func.lower(Patient.given_name).like(pattern),
                    func.lower(Patient.family_name).like(pattern),
                    func.lower(Patient.medicaid_id).like(pattern),
                    func.lower(Patient.center_mrn).like(pattern),
                )
            )
    if criteria.state_id is not None:
        query = query.where(Patient.state_id == criteria.state_id)
    if criteria.center_id is not None:
        query = query.where(Patient.center_id == criteria.center_id)
    if criteria.status is not None:
        query = query.where(Patient.status == criteria.status)
    return query


def list_patients(
    session: Session, *, user: User, criteria: PatientCriteria, page: int, per_page: int = 25
) -> tuple[list[Patient], int]:
    """The patients `user` may see that match `criteria`, one page, with the total count."""
    base = _search(scope_patients(select(Patient), user), criteria)
    total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = session.scalars(
        base.options(joinedload(Patient.state), joinedload(Patient.center))
        .order_by(Patient.family_name, Patient.given_name, Patient.id)
        .limit(per_page)
        .offset(max(page - 1, 0) * per_page)
    ).all()
    return list(rows), total


@dataclass(frozen=True)
class PatientPage:
    patients: list[Patient]
    total: int
    page: int
    pages: int


def patient_list_page(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    user: User,
    criteria: PatientCriteria,
    page: int,
    per_page: int = 25,
) -> PatientPage:
    """One page of the patient list for `user` (past the end, the last page: the list may
    have shrunk), audited with how many were shown and whether it was a search (never the
    search's words)."""
    patients, total = list_patients(
        session, user=user, criteria=criteria, page=page, per_page=per_page
    )
    pages = max(1, (total + per_page - 1) // per_page)
    if page > pages:
        page = pages
        patients, total = list_patients(
            session, user=user, criteria=criteria, page=page, per_page=per_page
        )
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="patient.list",
        detail={"page": page, "shown": len(patients), "searched": criteria.text is not None},
    )
    return PatientPage(patients=patients, total=total, page=page, pages=pages)


def get_patient(session: Session, *, patient_id: int) -> Patient | None:
    return session.get(Patient, patient_id)
