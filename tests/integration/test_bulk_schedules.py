"""Bulk schedule generation gives the same schedules as one-by-one enrolment."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from coordination.followup.bulk import generate_schedules
from coordination.followup.models import FollowUpPlan, Visit, VisitEvent
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import sync_schedule
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.models import Patient
from tests.conftest import Database


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
