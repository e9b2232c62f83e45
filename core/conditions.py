"""Coded diagnoses kept on the record (a treatment center's Condition: sickle cell disease,
ICD-10-CM D57.*, and whatever else it sends): recorded and changed here, audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.service import Actor, record_event
from core.clock import Clock
from core.errors import FieldErrors
from core.models import Condition, ObservationSource, Patient
from core.text import N_

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
# FHIR's required bindings for Condition.clinicalStatus and verificationStatus.
CLINICAL_STATUSES = frozenset(
    {"active", "recurrence", "relapse", "inactive", "remission", "resolved"}
)
VERIFICATION_STATUSES = frozenset(
    {"unconfirmed", "provisional", "differential", "confirmed", "refuted", "entered-in-error"}
)


def is_sickle_cell_disease(system: str, code: str) -> bool:
    """ICD-10-CM D57.* except D57.3 (sickle-cell trait, which is not the disease)."""
    normalized = code.upper().replace(".", "")
    return system == ICD10CM and normalized.startswith("D57") and not normalized.startswith("D573")


@dataclass(frozen=True)
class ConditionData:
    code_system: str
    code: str
    display: str | None = None
    clinical_status: str | None = None
    verification_status: str | None = None
    onset_date: date | None = None
    recorded_date: date | None = None


def _check(data: ConditionData) -> None:
    errors: dict[str, str] = {}
    if not data.code_system.strip() or len(data.code_system) > 200:
        errors["code_system"] = N_("Give the code's system (a URI of at most 200 characters).")
    if not data.code.strip() or len(data.code) > 64:
        errors["code"] = N_("Give the condition's code (at most 64 characters).")
    if data.clinical_status is not None and data.clinical_status not in CLINICAL_STATUSES:
        errors["clinical_status"] = N_("This is not a clinical status FHIR knows.")
    if (
        data.verification_status is not None
        and data.verification_status not in VERIFICATION_STATUSES
    ):
        errors["verification_status"] = N_("This is not a verification status FHIR knows.")
    if errors:
        raise FieldErrors(errors)


def record_condition(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    data: ConditionData,
    source: ObservationSource = ObservationSource.CENTER,
) -> Condition:
    """Keep a coded condition on the patient's record (audited). Raises FieldErrors."""
    _check(data)
    now = clock.now()
    condition = Condition(
        patient_id=patient.id,
        code_system=data.code_system.strip(),
        code=data.code.strip(),
        display=(data.display or "")[:200] or None,
        clinical_status=data.clinical_status,
        verification_status=data.verification_status,
        onset_date=data.onset_date,
        recorded_date=data.recorded_date,
        source=source,
        version_id=1,
        created_at=now,
        updated_at=now,
    )
    session.add(condition)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="condition.create",
        patient_id=patient.id,
        target=f"condition:{condition.id}",
        detail={"code": condition.code},
    )
    return condition


def update_condition(
    session: Session, *, clock: Clock, actor: Actor, condition: Condition, data: ConditionData
) -> list[str]:
    """Change a kept condition; returns the changed field names (audited) and raises the
    version when anything changed. Raises FieldErrors."""
    _check(data)
    wanted = {
        "code_system": data.code_system.strip(),
        "code": data.code.strip(),
        "display": (data.display or "")[:200] or None,
        "clinical_status": data.clinical_status,
        "verification_status": data.verification_status,
        "onset_date": data.onset_date,
        "recorded_date": data.recorded_date,
    }
    changed = [name for name, value in wanted.items() if getattr(condition, name) != value]
    if not changed:
        return []
    for name in changed:
        setattr(condition, name, wanted[name])
    condition.version_id += 1
    condition.updated_at = clock.now()
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="condition.update",
        patient_id=condition.patient_id,
        target=f"condition:{condition.id}",
        detail={"fields": changed},
    )
    return changed


def conditions_of(session: Session, *, patient_id: int) -> list[Condition]:
    return list(
        session.scalars(
            select(Condition).where(Condition.patient_id == patient_id).order_by(Condition.id)
        )
    )
