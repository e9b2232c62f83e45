"""Who follows which patient day to day: assigning patients to a coordinator from the
worklist (and taking the assignment away). Both are audited with the patients' ids."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from coordination.worklist.models import CareAssignment
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.identity.access import scope_patients
from core.identity.models import Role, User, UserStateScope
from core.models import Patient
from core.text import N_

# One bulk action may name at most this many patients (four full worklist pages and more).
MAX_PATIENTS = 500


class AssignmentError(ValueError):
    """The assignment is refused; the message (a msgid) says why, for people."""


def assignable_coordinators(session: Session, *, user: User) -> list[User]:
    """Active coordinators who share at least one state with `user` (the "assign to"
    menu). For a coordinator tied to a center, only those of the same center or of none."""
    if not user.state_ids:
        return []
    query = (
        select(User)
        .where(
            User.role == Role.COORDINATOR,
            User.is_active.is_(True),
            User.id.in_(
                select(UserStateScope.user_id).where(UserStateScope.state_id.in_(user.state_ids))
            ),
        )
        .order_by(User.display_name, User.id)
    )
    if user.center_id is not None:
        query = query.where((User.center_id.is_(None)) | (User.center_id == user.center_id))
    return list(session.scalars(query))


def _acting_coordinator(session: Session, actor: Actor) -> User:
    user = session.get(User, actor.user_id) if actor.user_id is not None else None
    if user is None or user.role is not Role.COORDINATOR:
        raise AssignmentError(N_("Only a care coordinator can assign patients."))
    return user


def _patients_in_scope(
    session: Session, *, user: User, patient_ids: Iterable[int]
) -> list[Patient]:
    """The patients named, all of them in `user`'s scope, or AssignmentError (which does
    not say which one is not: out of scope and nonexistent look the same)."""
    ids = sorted(set(patient_ids))
    if not ids:
        raise AssignmentError(N_("Choose at least one patient."))
    if len(ids) > MAX_PATIENTS:
        raise AssignmentError(N_("Choose at most 500 patients at a time."))
    patients = list(
        session.scalars(
            scope_patients(select(Patient), user).where(Patient.id.in_(ids)).order_by(Patient.id)
        )
    )
    if len(patients) != len(ids):
        raise AssignmentError(N_("Some of the chosen patients are not on your worklist."))
    return patients


def _covers(coordinator: User, patient: Patient) -> bool:
    return patient.state_id in coordinator.state_ids and (
        coordinator.center_id is None or coordinator.center_id == patient.center_id
    )


def assign_patients(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient_ids: Iterable[int],
    coordinator_user_id: int,
) -> int:
    """Make `coordinator_user_id` the coordinator of each patient (an upsert: a patient
    has one). Every patient must be in the acting coordinator's scope, and the chosen
    coordinator must work for each patient's state (and center, if they have one);
    otherwise nothing changes and AssignmentError says why. Returns how many patients
    changed hands; one audit event "worklist.assign" lists the patients' ids."""
    user = _acting_coordinator(session, actor)
    patients = _patients_in_scope(session, user=user, patient_ids=patient_ids)
    coordinator = session.get(User, coordinator_user_id)
    if (
        coordinator is None
        or coordinator.role is not Role.COORDINATOR
        or not coordinator.is_active
        or not coordinator.state_ids & user.state_ids
    ):
        raise AssignmentError(N_("Choose a coordinator from the list."))
    if not all(_covers(coordinator, patient) for patient in patients):
        raise AssignmentError(
            N_("This coordinator does not work for the state or center of every chosen patient.")
        )
    ids = [patient.id for patient in patients]
    # (Not dict(result): a Result has keys(), which dict() would take for a mapping's.)
    current = dict(
        session.execute(
            select(CareAssignment.patient_id, CareAssignment.coordinator_user_id).where(
                CareAssignment.patient_id.in_(ids)
            )
        ).all()
    )
    changing = [patient_id for patient_id in ids if current.get(patient_id) != coordinator.id]
    if changing:
        now = clock.now()
        values = [
            {
                "patient_id": patient_id,
                "coordinator_user_id": coordinator.id,
                "assigned_at": now,
                "assigned_by_user_id": user.id,
            }
            for patient_id in changing
        ]
        # An upsert, so that two coordinators assigning at once cannot collide.
        insert: Any = (
            postgresql_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        )
        statement = insert(CareAssignment).values(values)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[CareAssignment.patient_id],
                set_={
                    "coordinator_user_id": statement.excluded.coordinator_user_id,
                    "assigned_at": statement.excluded.assigned_at,
                    "assigned_by_user_id": statement.excluded.assigned_by_user_id,
                },
            )
        )
        # Objects of these rows already in the session would be stale after the upsert.
        for assignment in list(session.identity_map.values()):
            if isinstance(assignment, CareAssignment) and assignment.patient_id in changing:
                session.expire(assignment)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="worklist.assign",
        target=f"user:{coordinator.id}",
        detail={"patient_ids": ids, "changed": len(changing)},
    )
    return len(changing)


def unassign(session: Session, *, clock: Clock, actor: Actor, patient_ids: Iterable[int]) -> int:
    """Remove the assigned coordinator of each patient (all in the acting coordinator's
    scope, or AssignmentError and nothing changes). Returns how many had one; one audit
    event "worklist.unassign" lists the patients' ids."""
    user = _acting_coordinator(session, actor)
    ids = [
        patient.id for patient in _patients_in_scope(session, user=user, patient_ids=patient_ids)
    ]
    removed = session.execute(
        delete(CareAssignment)
        .where(CareAssignment.patient_id.in_(ids))
        .execution_options(synchronize_session="fetch")
    )
    count = int(getattr(removed, "rowcount", 0) or 0)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="worklist.unassign",
        detail={"patient_ids": ids, "changed": count},
    )
    return count
