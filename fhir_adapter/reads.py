"""Reading one resource by id, for the caller's center only: a record of another center, or
of nobody, reads the same (404), so a client learns nothing of other centers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordination.followup.models import FollowUpPlan, Visit, VisitStatus
from coordination.followup.protocol import ProtocolLibrary
from core.models import (
    CaregiverLink,
    Condition,
    Observation,
    Patient,
    State,
    Therapy,
    TherapyCode,
    TreatmentCenter,
)
from fhir_adapter import questionnaire_responses, resources
from fhir_adapter.resources import JSON

Reader = Callable[[Session, int, int, ProtocolLibrary], JSON | None]


def _own_patient(session: Session, center_id: int, patient_id: int) -> Patient | None:
    patient = session.get(Patient, patient_id)
    return patient if patient is not None and patient.center_id == center_id else None


def patient_json(session: Session, patient: Patient) -> JSON:
    state = session.get(State, patient.state_id)
    center = session.get(TreatmentCenter, patient.center_id)
    therapy = session.get(Therapy, patient.therapy_id)
    return resources.patient_resource(patient, state=state, center=center, therapy=therapy)


def therapy_codes(session: Session, therapy_id: int) -> list[tuple[str, str]]:
    return [
        (system, code)
        for system, code in session.execute(
            select(TherapyCode.system, TherapyCode.code)
            .where(TherapyCode.therapy_id == therapy_id)
            .order_by(TherapyCode.id)
        )
    ]


def procedure_json(session: Session, patient: Patient) -> JSON:
    therapy = session.get(Therapy, patient.therapy_id)
    return resources.procedure_resource(
        patient, therapy=therapy, codes=therapy_codes(session, patient.therapy_id)
    )


def visit_label(
    library: ProtocolLibrary, patient: Patient, visit: Visit, language: str = "en"
) -> str:
    therapy_code = patient.therapy.code
    found = library.visit_of(therapy_code, visit.protocol_version, visit.visit_key)
    return found.label.text(language) if found is not None else visit.visit_key


def care_plan_json(
    session: Session, plan: FollowUpPlan, patient: Patient, library: ProtocolLibrary
) -> JSON:
    protocol = library.version_or_current(plan.therapy_code, plan.protocol_version)
    title = protocol.title.text("en") if protocol is not None else "Long-term follow-up"
    visits = list(
        session.scalars(
            select(Visit)
            .where(Visit.patient_id == patient.id)
            .order_by(Visit.target_date, Visit.id)
        )
    )
    return resources.care_plan_resource(plan, patient=patient, title=title, visits=visits)


def _patient(session: Session, center_id: int, local_id: int, _lib: ProtocolLibrary) -> JSON | None:
    patient = _own_patient(session, center_id, local_id)
    return patient_json(session, patient) if patient is not None else None


def _procedure(
    session: Session, center_id: int, local_id: int, _lib: ProtocolLibrary
) -> JSON | None:
    patient = _own_patient(session, center_id, local_id)
    return procedure_json(session, patient) if patient is not None else None


def _observation(
    session: Session, center_id: int, local_id: int, _lib: ProtocolLibrary
) -> JSON | None:
    observation = session.get(Observation, local_id)
    if observation is None or _own_patient(session, center_id, observation.patient_id) is None:
        return None
    return resources.observation_resource(observation)


def _condition(
    session: Session, center_id: int, local_id: int, _lib: ProtocolLibrary
) -> JSON | None:
    condition = session.get(Condition, local_id)
    if condition is None or _own_patient(session, center_id, condition.patient_id) is None:
        return None
    return resources.condition_resource(condition)


def _related_person(
    session: Session, center_id: int, local_id: int, _lib: ProtocolLibrary
) -> JSON | None:
    link = session.get(CaregiverLink, local_id)
    if link is None or _own_patient(session, center_id, link.patient_id) is None:
        return None
    return resources.related_person_resource(link, link.caregiver)


def _visit(session: Session, center_id: int, local_id: int) -> tuple[Visit, Patient] | None:
    visit = session.get(Visit, local_id)
    if visit is None:
        return None
    patient = _own_patient(session, center_id, visit.patient_id)
    return (visit, patient) if patient is not None else None


def _appointment(
    session: Session, center_id: int, local_id: int, library: ProtocolLibrary
) -> JSON | None:
    found = _visit(session, center_id, local_id)
    if found is None:
        return None
    visit, patient = found
    return resources.appointment_resource(visit, label=visit_label(library, patient, visit))


def _encounter(
    session: Session, center_id: int, local_id: int, library: ProtocolLibrary
) -> JSON | None:
    found = _visit(session, center_id, local_id)
    if found is None or found[0].status is not VisitStatus.COMPLETED:
        return None
    visit, patient = found
    return resources.encounter_resource(visit, label=visit_label(library, patient, visit))


def _care_plan(
    session: Session, center_id: int, local_id: int, library: ProtocolLibrary
) -> JSON | None:
    plan = session.get(FollowUpPlan, local_id)
    if plan is None:
        return None
    patient = _own_patient(session, center_id, plan.patient_id)
    return care_plan_json(session, plan, patient, library) if patient is not None else None


def _group(session: Session, center_id: int, local_id: int, _lib: ProtocolLibrary) -> JSON | None:
    if local_id != center_id:
        return None
    center = session.get(TreatmentCenter, center_id)
    assert center is not None
    ids = list(
        session.scalars(
            select(Patient.id).where(Patient.center_id == center_id).order_by(Patient.id)
        )
    )
    last = session.scalar(
        select(func.max(Patient.updated_at)).where(Patient.center_id == center_id)
    )
    return resources.group_resource(center, ids, last_updated=last or center.created_at)


READERS: dict[str, Reader] = {
    "Patient": _patient,
    "Procedure": _procedure,
    "Observation": _observation,
    "Condition": _condition,
    "RelatedPerson": _related_person,
    "Appointment": _appointment,
    "Encounter": _encounter,
    "CarePlan": _care_plan,
    "QuestionnaireResponse": questionnaire_responses.read,
    "Group": _group,
}
READABLE_TYPES = tuple(READERS)


def read_resource(
    session: Session,
    *,
    center_id: int,
    resource_type: str,
    local_id: int,
    library: ProtocolLibrary,
) -> JSON | None:
    """The resource, if it is the center's; None for anything else."""
    reader = READERS.get(resource_type)
    return reader(session, center_id, local_id, library) if reader is not None else None


def patient_id_of_resource(resource: JSON) -> int | None:
    """The patient a served resource is about (for the audit log)."""
    if resource["resourceType"] == "Patient":
        return int(resource["id"])
    for key in ("subject", "patient"):
        reference = (resource.get(key) or {}).get("reference", "")
        if reference.startswith("Patient/"):
            return int(reference.split("/")[1])
    participants: list[Any] = resource.get("participant") or []
    for participant in participants:
        reference = (participant.get("actor") or {}).get("reference", "")
        if reference.startswith("Patient/"):
            return int(reference.split("/")[1])
    return None
