"""Results a center's system sends together (`record_observations`): each completes the
visit whose window holds it, as one result alone would, in a fixed number of statements."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select

from coordination.followup.models import Visit, VisitEvent, VisitObservation, VisitStatus
from coordination.followup.observations import ObservationFacts, record_observations
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.models import Patient
from tests.conftest import Database
from tests.factories import building
from tests.support.statements import statements_on


def _hemoglobin(patient: Patient, visit: Visit) -> ObservationFacts:
    """A hemoglobin result on the visit's target day, at noon where the patient lives."""
    return ObservationFacts(
        code_system="http://loinc.org",
        code="718-7",
        display="Hemoglobin [Mass/volume] in Blood",
        effective_at=datetime.combine(
            visit.target_date, time(12), tzinfo=ZoneInfo(patient.time_zone)
        ),
        value=Decimal("11.5"),
        unit="g/dL",
    )


def test_results_sent_together_complete_their_visits_in_as_many_statements_for_three_as_one(
    db: Database, clock: FrozenClock
) -> None:
    actor = Actor.fhir_client("harborview-epic")
    with building(db.factory, clock) as make:
        patient_ids = [
            make.patient(infusion_date=clock.now().date() - timedelta(days=400)).id
            for _ in range(4)
        ]
    counts = []
    for group in (patient_ids[:1], patient_ids[1:]):
        with transaction(db.factory) as session:
            patients = list(session.scalars(select(Patient).where(Patient.id.in_(group))))
            first_visits = {
                visit.patient_id: visit
                for visit in session.scalars(
                    select(Visit).where(Visit.patient_id.in_(group), Visit.sequence == 1)
                )
            }
            items = [
                (patient, _hemoglobin(patient, first_visits[patient.id])) for patient in patients
            ]
            with statements_on(db.engine) as seen:
                kept = record_observations(session, clock=clock, actor=actor, items=items)
            counts.append(len(seen))
            assert len(kept) == len(group)
    assert counts[0] == counts[1], counts

    with db.factory() as session:
        for patient_id in patient_ids:
            visit = session.scalar(
                select(Visit).where(Visit.patient_id == patient_id, Visit.sequence == 1)
            )
            assert visit is not None
            assert visit.status is VisitStatus.COMPLETED
            assert visit.completed_on == visit.target_date
            history = session.execute(
                select(
                    VisitEvent.action,
                    VisitEvent.to_status,
                    VisitEvent.actor_label,
                    VisitEvent.detail,
                ).where(VisitEvent.visit_id == visit.id, VisitEvent.action == "complete")
            ).all()
            assert history == [
                (
                    "complete",
                    VisitStatus.COMPLETED.value,
                    actor.label,
                    {"completed_on": visit.target_date.isoformat()},
                )
            ]
            linked = session.scalar(
                select(VisitObservation.observation_id).where(VisitObservation.visit_id == visit.id)
            )
            assert linked is not None


def test_results_sent_together_are_audited_once_per_patient_naming_each_result(
    db: Database, clock: FrozenClock
) -> None:
    actor = Actor.fhir_client("harborview-epic")
    with building(db.factory, clock) as make:
        patient_ids = [
            make.patient(infusion_date=clock.now().date() - timedelta(days=400)).id
            for _ in range(2)
        ]
    with transaction(db.factory) as session:
        patients = {
            patient.id: patient
            for patient in session.scalars(select(Patient).where(Patient.id.in_(patient_ids)))
        }
        visits = {
            (visit.patient_id, visit.sequence): visit
            for visit in session.scalars(
                select(Visit).where(Visit.patient_id.in_(patient_ids), Visit.sequence <= 2)
            )
        }
        two, one = (patients[patient_id] for patient_id in patient_ids)
        items = [
            (two, _hemoglobin(two, visits[(two.id, 1)])),
            (one, _hemoglobin(one, visits[(one.id, 1)])),
            (two, _hemoglobin(two, visits[(two.id, 2)])),
        ]
        kept = record_observations(session, clock=clock, actor=actor, items=items)
    with db.factory() as session:
        events = {
            event.patient_id: event
            for event in session.scalars(
                select(AuditEvent).where(AuditEvent.action == "observation.create")
            )
        }
    assert set(events) == {two.id, one.id}  # one event per patient, not per result
    assert events[one.id].target == f"observation:{kept[1]}"
    assert events[one.id].detail == {"code": "718-7", "visit": visits[(one.id, 1)].id}
    assert events[two.id].target == f"observation:{kept[0]}, observation:{kept[2]}"
    assert events[two.id].detail == {
        "observations": [
            {"id": kept[0], "code": "718-7", "visit": visits[(two.id, 1)].id},
            {"id": kept[2], "code": "718-7", "visit": visits[(two.id, 2)].id},
        ]
    }
    assert {event.client_id for event in events.values()} == {actor.client_id}
