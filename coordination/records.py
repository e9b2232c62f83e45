"""Enrolling a patient and changing their record, each one use case: the record (in
`core`), the SMS consent a coordinator recorded on the same form, and the follow-up
schedule that follows the infusion date, therapy and status.

The portal's forms and a treatment center's FHIR data call these same functions, so a
patient enrolled either way gets the same checks, audit events and schedule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from sqlalchemy.orm import Session

from coordination.followup.bulk import generate_schedules
from coordination.followup.protocol import ProtocolLibrary
from coordination.followup.schedule import ScheduleChange, follow_record_change
from coordination.texting.consent import CoordinatorConsent, record_coordinator_tick
from core.audit.service import Actor
from core.clock import Clock
from core.models import Patient
from core.service import PatientData, enroll_patient, enroll_patients, update_patient


@dataclass(frozen=True)
class RecordSaved:
    """What a use case did: the patient, the fields that changed (every field for an
    enrolment) and what moved in the schedule (None when nothing had to)."""

    patient: Patient
    changed: tuple[str, ...]
    schedule: ScheduleChange | None


def _consent_problems(consent: CoordinatorConsent | None, data: PatientData) -> dict[str, str]:
    if consent is None:
        return {}
    return consent.problems(
        preferred_language=data.preferred_language.value, phone_typed=data.mobile_phone or ""
    )


def _record_consent(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    consent: CoordinatorConsent | None,
    patient: Patient,
) -> None:
    if consent is None or actor.user_id is None:
        return
    record_coordinator_tick(
        session,
        clock=clock,
        box=consent.box,
        tick=consent.tick,
        preferred_language=patient.preferred_language.value,
        phone=patient.mobile_phone,
        by_user_id=actor.user_id,
    )


def enrol_patient(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    library: ProtocolLibrary,
    data: PatientData,
    allowed_state_ids: set[int] | None,
    consent: CoordinatorConsent | None = None,
    other_errors: Mapping[str, str] = MappingProxyType({}),
    make_schedule: bool = True,
) -> RecordSaved:
    """Enrol a patient: the record (audited), the consent ticked on the form (if any), and
    the follow-up schedule of their therapy from the infusion date. Raises FieldErrors
    (with the consent box's and `other_errors` among them) and changes nothing then.

    `make_schedule=False` leaves the schedule to the caller, who enrols many patients at
    once and makes their schedules together with `schedule_new_patients` (the same
    schedules, set-based)."""
    errors = {**_consent_problems(consent, data), **other_errors}
    patient = enroll_patient(
        session,
        clock=clock,
        actor=actor,
        data=data,
        allowed_state_ids=allowed_state_ids,
        other_errors=errors,
    )
    _record_consent(session, clock=clock, actor=actor, consent=consent, patient=patient)
    schedule = (
        follow_record_change(
            session, clock=clock, actor=actor, library=library, patient=patient, changed=None
        )
        if make_schedule
        else None
    )
    return RecordSaved(
        patient=patient, changed=tuple(PatientData.__dataclass_fields__), schedule=schedule
    )


def enrol_patients(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    library: ProtocolLibrary,
    items: Sequence[PatientData],
    allowed_state_ids: set[int] | None,
    make_schedule: bool = True,
) -> list[Patient]:
    """Enrol many patients at once (a treatment center's transaction), each as
    `enrol_patient` enrols them (no consent box: that is the coordinator's form), their
    schedules made together (`schedule_new_patients`; `make_schedule=False` leaves them to
    the caller). Raises PatientErrors naming the first that cannot be enrolled."""
    patients = enroll_patients(
        session, clock=clock, actor=actor, items=items, allowed_state_ids=allowed_state_ids
    )
    if make_schedule:
        schedule_new_patients(session, clock=clock, actor=actor, library=library, patients=patients)
    return patients


def schedule_new_patients(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    library: ProtocolLibrary,
    patients: Sequence[Patient],
) -> int:
    """The follow-up schedules of patients just enrolled with `make_schedule=False`, made
    together (`coordination.followup.bulk.generate_schedules`): exactly what enrolling each
    would have made. Patients whose therapy has no protocol get none, as at enrolment.
    Returns the number of visits created."""
    followed = [
        patient.id for patient in patients if library.current(patient.therapy.code) is not None
    ]
    if not followed:
        return 0
    return generate_schedules(
        session, clock=clock, library=library, patient_ids=followed, actor=actor
    )


def change_record(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    library: ProtocolLibrary,
    patient: Patient,
    data: PatientData,
    allowed_state_ids: set[int] | None,
    consent: CoordinatorConsent | None = None,
    other_errors: Mapping[str, str] = MappingProxyType({}),
) -> RecordSaved:
    """Change a patient's record to `data` (the changed field names audited), record the
    consent ticked on the form, and move the schedule when the infusion date, therapy or
    status changed (open visits move; completed ones stay). Raises FieldErrors as
    `enrol_patient` does."""
    errors = {**_consent_problems(consent, data), **other_errors}
    changed = update_patient(
        session,
        clock=clock,
        actor=actor,
        patient=patient,
        data=data,
        allowed_state_ids=allowed_state_ids,
        other_errors=errors,
    )
    _record_consent(session, clock=clock, actor=actor, consent=consent, patient=patient)
    schedule = follow_record_change(
        session, clock=clock, actor=actor, library=library, patient=patient, changed=changed
    )
    return RecordSaved(patient=patient, changed=tuple(changed), schedule=schedule)
