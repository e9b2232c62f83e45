"""Bulk schedule generation gives the same schedules as one-by-one enrolment."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from coordination.followup.bulk import generate_schedules
from coordination.followup.models import FollowUpPlan, Visit, VisitEvent
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import sync_schedule
from coordination.records import enrol_patient, enrol_patients
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.models import (
    Patient,
    PatientHistory,
    PatientStatus,
    State,
    Therapy,
    TreatmentCenter,
)
from core.service import PatientData
from tests.conftest import Database
from tests.support.smart import HARBORVIEW
from tests.support.statements import statements_on


def _schedules(db: Database) -> dict[int, list[tuple[str, str, str, str, str]]]:
    with db.factory() as session:
        rows: dict[int, list[tuple[str, str, str, str, str]]] = {}
        for visit in session.scalars(select(Visit).order_by(Visit.patient_id, Visit.sequence)):
            rows.setdefault(visit.patient_id, []).append(
                (
                    visit.visit_key,
                    visit.window_start.isoformat(),
                    visit.target_date.isoformat(),
                    visit.window_end.isoformat(),
                    visit.status.value,
                )
            )
        return rows


def test_bulk_and_one_by_one_make_the_same_schedules(db: Database, clock: FrozenClock) -> None:
    library = shipped_protocols()
    with transaction(db.factory) as session:
        created = generate_schedules(session, clock=clock, library=library, patient_ids=None)
    bulk = _schedules(db)
    assert created == sum(len(visits) for visits in bulk.values()) > 0

    # The same world, enrolled one patient at a time (undo the bulk run first).
    with transaction(db.factory) as session:
        session.execute(delete(VisitEvent))
        session.execute(delete(Visit))
        session.execute(delete(FollowUpPlan))
        for patient in session.scalars(select(Patient)):
            sync_schedule(
                session, clock=clock, actor=Actor.system("t"), library=library, patient=patient
            )
    assert _schedules(db) == bulk


def test_bulk_skips_patients_with_a_plan_and_records_history_once(
    db: Database, clock: FrozenClock
) -> None:
    library = shipped_protocols()
    with transaction(db.factory) as session:
        first = session.scalars(select(Patient).order_by(Patient.id)).first()
        assert first is not None
        sync_schedule(session, clock=clock, actor=Actor.system("t"), library=library, patient=first)
    with transaction(db.factory) as session:
        generate_schedules(session, clock=clock, library=library, patient_ids=None)
    with transaction(db.factory) as session:
        again = generate_schedules(session, clock=clock, library=library, patient_ids=None)
    assert again == 0
    with db.factory() as session:
        duplicated = session.execute(
            select(VisitEvent.visit_id, func.count())
            .where(VisitEvent.action == "miss")
            .group_by(VisitEvent.visit_id)
            .having(func.count() > 1)
        ).all()
        assert duplicated == []
        per_patient = session.execute(
            select(Visit.patient_id, Visit.visit_key, func.count())
            .group_by(Visit.patient_id, Visit.visit_key)
            .having(func.count() > 1)
        ).all()
        assert per_patient == []


def _people(db: Database, clock: FrozenClock) -> list[PatientData]:
    """Patients as different as schedules get: infused long ago (most windows closed before
    follow-up begins here), recently, in the future, not yet; either therapy; withdrawn."""
    with db.factory() as session:
        harbor = session.scalar(select(TreatmentCenter).where(TreatmentCenter.name == HARBORVIEW))
        therapies = {therapy.code: therapy.id for therapy in session.scalars(select(Therapy))}
    assert harbor is not None
    today = clock.now().date()
    people = []
    for number, (days, therapy, status) in enumerate(
        [
            (4 * 365, "casgevy", PatientStatus.ACTIVE),
            (40, "casgevy", PatientStatus.ACTIVE),
            (700, "lyfgenia", PatientStatus.ACTIVE),
            (-20, "lyfgenia", PatientStatus.ACTIVE),
            (None, "casgevy", PatientStatus.ENROLLED),
            (300, "casgevy", PatientStatus.WITHDRAWN),
        ]
    ):
        people.append(
            PatientData(
                given_name="Same",
                family_name=f"Schedule {number}",
                birth_date=date(2008, 1, 1 + number),
                medicaid_id=f"MDS{number:07d}",
                state_id=harbor.state_id,
                center_id=harbor.id,
                therapy_id=therapies[therapy],
                infusion_date=today - timedelta(days=days) if days is not None else None,
                status=status,
            )
        )
    return people


def _schedule_of(session: Session, patient_id: int) -> tuple[Any, ...]:
    """A patient's plan, visits and their history, without ids."""
    plan = session.scalar(select(FollowUpPlan).where(FollowUpPlan.patient_id == patient_id))
    visits = session.scalars(
        select(Visit).where(Visit.patient_id == patient_id).order_by(Visit.sequence)
    ).all()
    return (
        plan and (plan.therapy_code, plan.protocol_version, plan.anchor_date, plan.created_at),
        [
            (
                visit.visit_key,
                visit.protocol_version,
                visit.sequence,
                visit.target_date,
                visit.window_start,
                visit.window_end,
                visit.status,
                visit.missed_acknowledged_at,
                visit.created_at,
                sorted(
                    (
                        event.at,
                        event.actor_user_id,
                        event.actor_label,
                        event.action,
                        event.from_status,
                        event.to_status,
                        event.reason,
                        str(event.detail),
                    )
                    for event in session.scalars(
                        select(VisitEvent).where(VisitEvent.visit_id == visit.id)
                    )
                ),
            )
            for visit in visits
        ],
    )


def test_patients_enrolled_together_get_the_schedules_enrolling_each_makes(
    db: Database, clock: FrozenClock
) -> None:
    """`enrol_patients` (a center's transaction: the schedules set-based) and `enrol_patient`
    (a form: `sync_schedule` for each) make exactly the same schedules and history."""
    library = shipped_protocols()
    actor = Actor.fhir_client("harborview-epic")
    people = _people(db, clock)
    with transaction(db.factory) as session:
        together = [
            patient.id
            for patient in enrol_patients(
                session,
                clock=clock,
                actor=actor,
                library=library,
                items=people,
                allowed_state_ids=None,
            )
        ]
    with transaction(db.factory) as session:
        one_by_one = [
            enrol_patient(
                session,
                clock=clock,
                actor=actor,
                library=library,
                data=dataclasses.replace(person, medicaid_id=f"MDT{index:07d}"),
                allowed_state_ids=None,
            ).patient.id
            for index, person in enumerate(people)
        ]

    with db.factory() as session:
        made_together = [_schedule_of(session, patient_id) for patient_id in together]
        made_one_by_one = [_schedule_of(session, patient_id) for patient_id in one_by_one]
    assert made_together == made_one_by_one
    visits = [visits for _plan, visits in made_together]
    assert all(visits[:4]) and visits[4:] == [[], []]  # no date / withdrawn: none
    assert any(event[3] == "miss" for visit in visits[0] for event in visit[9])


def test_patients_enrolled_together_take_as_many_statements_for_six_as_for_two(
    db: Database, clock: FrozenClock
) -> None:
    """A center's transaction enrols its new patients in a fixed number of statements (their
    records, their history, the audit, the schedules: each one statement for all), not in
    one or more a patient; and each gets the first version of its history."""
    library = shipped_protocols()
    actor = Actor.fhir_client("harborview-epic")
    people = _people(db, clock)
    counts = []
    enrolled: list[int] = []
    for prefix, size in (("MDA", 2), ("MDB", 6)):
        # Alike but for their names and numbers (rows with other empty columns are
        # written in another statement: a few more, however many patients).
        batch = [
            dataclasses.replace(
                people[index % 2],
                family_name=f"{prefix} {index}",
                medicaid_id=f"{prefix}{index:07d}",
            )
            for index in range(size)
        ]
        with transaction(db.factory) as session:
            # What every enrolment reads once per transaction (held: the session's map is weak).
            places = [*session.scalars(select(Therapy)), *session.scalars(select(TreatmentCenter))]
            places += [session.get(State, person.state_id) for person in batch]
            with statements_on(db.engine) as seen:
                enrolled += [
                    patient.id
                    for patient in enrol_patients(
                        session,
                        clock=clock,
                        actor=actor,
                        library=library,
                        items=batch,
                        allowed_state_ids=None,
                    )
                ]
            counts.append(len(seen))
    assert counts[0] == counts[1] < 12, counts
    with db.factory() as session:
        history = session.execute(
            select(PatientHistory.patient_id, PatientHistory.version_id, PatientHistory.valid_from)
            .where(PatientHistory.patient_id.in_(enrolled))
            .order_by(PatientHistory.patient_id)
        ).all()
        assert history == [(patient_id, 1, clock.now()) for patient_id in enrolled]
        assert [
            patient.medicaid_id
            for patient in session.scalars(
                select(Patient).where(Patient.id.in_(enrolled)).order_by(Patient.id)
            )
        ] == [f"MDA{index:07d}" for index in range(2)] + [f"MDB{index:07d}" for index in range(6)]
