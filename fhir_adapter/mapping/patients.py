"""Patient: a center's FHIR Patient becomes the platform's patient record through the same
use cases the enrolment and edit forms call (`coordination.records`).

- identifiers: the state's Medicaid ID (system: the state's configured Medicaid system) is
  required, and names the state; the center's MRN (its configured system, or any
  identifier typed `MR`) is kept. The state must be the center's.
- name (official, else the first), birthDate, `communication` (preferred, else first;
  Spanish or English), a mobile `telecom` (use mobile, or system sms), `deceased[x]`.
- therapy: from the infusion Procedure in the same Bundle, else the extension
  `THERAPY_EXTENSION` (a therapy code), else what the record already has.
Other elements (gender, address, contacts, extensions) are accepted and not kept; a mobile
number the platform cannot text (not a US mobile) is left out with a warning."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

from sqlalchemy import select

from coordination.records import change_record, enrol_patients
from core.models import (
    Language,
    Patient,
    PatientStatus,
    State,
    Therapy,
    TherapyCode,
)
from core.phones import InvalidPhoneNumber, normalize_phone
from core.service import PatientData, PatientErrors
from core.therapy_codes import PLATFORM_SYSTEM as PLATFORM_THERAPY_SYSTEM
from fhir_adapter.errors import FhirError, Issue
from fhir_adapter.mapping.common import (
    JSON,
    Refused,
    WriteContext,
    codings,
    field_errors_as,
    integer_version,
    parse_day,
    refusal_of,
    unprocessable,
)
from fhir_adapter.models import ResourceIdentifier

RESOURCE = "Patient"
THERAPY_EXTENSION = "https://cgt-access.org/fhir/StructureDefinition/therapy"
# The platform's own code system for therapies (their codes: casgevy, lyfgenia).
THERAPY_SYSTEM = PLATFORM_THERAPY_SYSTEM
MR_TYPE = ("http://terminology.hl7.org/CodeSystem/v2-0203", "MR")

# Where each field of the record comes from, for error messages.
FIELDS = {
    "given_name": "Patient.name.given",
    "family_name": "Patient.name.family",
    "birth_date": "Patient.birthDate",
    "medicaid_id": "Patient.identifier",
    "center_mrn": "Patient.identifier",
    "state_id": "Patient.identifier",
    "center_id": "Patient.managingOrganization",
    "therapy_id": f"Patient.extension('{THERAPY_EXTENSION}')",
    "preferred_language": "Patient.communication",
    "mobile_phone": "Patient.telecom",
    "infusion_date": "Procedure.performed",
    "time_zone": "Patient",
    "status": "Patient.deceased",
}


def therapy_by_code(context: WriteContext, system: str, code: str) -> Therapy | None:
    """The therapy a code names: the platform's own code, or a code admins configured (an
    NDC, RxNorm or HCPCS code). Read once per write."""
    key = (system, code)
    if key not in context.therapies:
        session = context.session
        if system == THERAPY_SYSTEM:
            therapy_id = session.scalar(select(Therapy.id).where(Therapy.code == code))
        else:
            therapy_id = session.scalar(
                select(TherapyCode.therapy_id).where(
                    TherapyCode.system == system, TherapyCode.code == code
                )
            )
        context.therapies[key] = therapy_id
    therapy_id = context.therapies[key]
    return context.get(Therapy, therapy_id) if therapy_id is not None else None


def _medicaid(context: WriteContext, resource: JSON) -> tuple[State, str]:
    state = context.state()
    wanted = state.medicaid_system
    for index, identifier in enumerate(resource.get("identifier") or []):
        if isinstance(identifier, dict) and identifier.get("system") == wanted:
            value = str(identifier.get("value") or "").strip()
            if value:
                return state, value
            raise unprocessable(
                "The Medicaid ID has no value.", f"Patient.identifier[{index}].value"
            )
    raise unprocessable(
        f"A Patient needs the Medicaid ID of {state.name}: an identifier with system {wanted}.",
        "Patient.identifier",
    )


def _mrn(context: WriteContext, resource: JSON) -> str | None:
    system = context.center().record_number_system
    typed: str | None = None
    for identifier in resource.get("identifier") or []:
        if not isinstance(identifier, dict) or not identifier.get("value"):
            continue
        if identifier.get("system") == system:
            return str(identifier["value"]).strip()
        if MR_TYPE in {(s, c) for s, c, _d in codings(identifier.get("type"))} and typed is None:
            typed = str(identifier["value"]).strip()
    return typed


def _name(resource: JSON) -> tuple[str, str]:
    names = [name for name in resource.get("name") or [] if isinstance(name, dict)]
    chosen = next((name for name in names if name.get("use") == "official"), None) or (
        names[0] if names else {}
    )
    given = " ".join(str(part) for part in (chosen.get("given") or [])[:2]).strip()
    return given, str(chosen.get("family") or "").strip()


def _language(resource: JSON) -> Language:
    entries = [item for item in resource.get("communication") or [] if isinstance(item, dict)]
    preferred = next((item for item in entries if item.get("preferred")), None) or (
        entries[0] if entries else None
    )
    if preferred is not None:
        for _system, code, _display in codings(preferred.get("language")):
            if code.lower().startswith("es"):
                return Language.ES
    return Language.EN


def _mobile(resource: JSON, warnings: list[Issue]) -> str | None:
    points = [
        (index, point)
        for index, point in enumerate(resource.get("telecom") or [])
        if isinstance(point, dict) and point.get("value")
    ]
    mobile = [
        (index, point)
        for index, point in points
        if point.get("system") == "sms"
        or (point.get("system") == "phone" and point.get("use") == "mobile")
    ]
    for index, point in mobile:
        try:
            return normalize_phone(str(point["value"]))
        except InvalidPhoneNumber:
            warnings.append(
                Issue(
                    code="value",
                    severity="warning",
                    diagnostics="This number cannot get texts (not a US mobile number); "
                    "the record has no mobile number.",
                    expression=(f"Patient.telecom[{index}]",),
                )
            )
    return None


def _therapy_from_extension(context: WriteContext, resource: JSON) -> int | None:
    for index, extension in enumerate(resource.get("extension") or []):
        if isinstance(extension, dict) and extension.get("url") == THERAPY_EXTENSION:
            for system, code, _display in codings(extension.get("valueCodeableConcept")):
                therapy = therapy_by_code(context, system, code)
                if therapy is not None:
                    return therapy.id
            raise unprocessable(
                "This therapy code is not one the platform knows.",
                f"Patient.extension[{index}].valueCodeableConcept",
            )
    return None


def _status(resource: JSON, current: PatientStatus | None, infusion: date | None) -> PatientStatus:
    if resource.get("deceasedBoolean") is True or "deceasedDateTime" in resource:
        return PatientStatus.DECEASED
    if current is not None and current is not PatientStatus.DECEASED:
        if current is PatientStatus.ENROLLED and infusion is not None:
            return PatientStatus.ACTIVE
        return current
    return PatientStatus.ACTIVE if infusion is not None else PatientStatus.ENROLLED


def patient_data(
    context: WriteContext,
    resource: JSON,
    *,
    current: Patient | None,
    full_url: str | None = None,
) -> tuple[PatientData, list[Issue]]:
    """The record a Patient resource asks for (merged with `current` for what FHIR does not
    carry: therapy, infusion date, status, zone), with warnings. Raises FhirError (422)."""
    warnings: list[Issue] = []
    state, medicaid = _medicaid(context, resource)
    given, family = _name(resource)
    birth = parse_day(resource.get("birthDate"))
    if birth is None:
        raise unprocessable("A Patient needs a full birth date.", "Patient.birthDate")
    hint_therapy, hint_infusion = context.infusion_hints.get(full_url or "", (None, None))
    therapy_id = (
        hint_therapy
        or _therapy_from_extension(context, resource)
        or (current.therapy_id if current is not None else None)
    )
    if therapy_id is None:
        raise unprocessable(
            "A new Patient needs its therapy: send the infusion Procedure in the same "
            f"transaction, or the extension {THERAPY_EXTENSION}.",
            FIELDS["therapy_id"],
        )
    infusion = hint_infusion or (current.infusion_date if current is not None else None)
    base = PatientData.of(current) if current is not None else None
    data = PatientData(
        given_name=given,
        family_name=family,
        birth_date=birth,
        medicaid_id=medicaid,
        center_mrn=_mrn(context, resource),
        state_id=state.id,
        center_id=context.caller.center_id,
        therapy_id=therapy_id,
        preferred_language=_language(resource),
        time_zone=base.time_zone if base is not None else None,
        mobile_phone=_mobile(resource, warnings),
        infusion_date=infusion,
        status=_status(resource, current.status if current else None, infusion),
    )
    return data, warnings


def create_patient(
    context: WriteContext, resource: JSON, *, full_url: str | None = None
) -> tuple[Patient, list[Issue]]:
    """Enrol the patient a Patient resource describes (with their schedule when the
    infusion date is known). Raises FhirError."""
    return create_patients(context, [(resource, full_url)])[0]


def create_patients(
    context: WriteContext, items: list[tuple[JSON, str | None]]
) -> list[tuple[Patient, list[Issue]]]:
    """Enrol the patients Patient resources (with their fullUrls) describe, together
    (`coordination.records.enrol_patients`). In a transaction their schedules are made once
    every Patient entry is written (`context.new_patients`). Raises Refused naming the first
    that cannot be enrolled (a single one: its FhirError)."""
    mapped = []
    for index, (resource, full_url) in enumerate(items):
        try:
            mapped.append(patient_data(context, resource, current=None, full_url=full_url))
        except FhirError as error:
            if len(items) == 1:
                raise
            raise Refused(index, error) from None
    try:
        enrolled = enrol_patients(
            context.session,
            clock=context.clock,
            actor=context.caller.actor,
            library=context.library,
            items=[data for data, _warnings in mapped],
            allowed_state_ids={context.caller.state_id},
            make_schedule=context.new_patients is None,
        )
    except PatientErrors as problem:
        refusal = refusal_of(problem, RESOURCE, FIELDS)
        if len(items) == 1:
            raise refusal from None
        raise Refused(problem.index, refusal) from None
    for patient in enrolled:
        if context.new_patients is not None:
            context.new_patients.append(patient)
        context.keep(patient)
        remember_identifiers(context, patient)
    return [
        (patient, warnings) for patient, (_data, warnings) in zip(enrolled, mapped, strict=True)
    ]


def update_patient(
    context: WriteContext, patient: Patient, resource: JSON, *, full_url: str | None = None
) -> tuple[bool, list[Issue]]:
    """Change the record to what the Patient resource says (what FHIR does not carry stays).
    Returns whether anything changed."""
    data, warnings = patient_data(context, resource, current=patient, full_url=full_url)
    with field_errors_as(RESOURCE, FIELDS):
        saved = change_record(
            context.session,
            clock=context.clock,
            actor=context.caller.actor,
            library=context.library,
            patient=patient,
            data=data,
            allowed_state_ids={context.caller.state_id},
        )
    remember_identifiers(context, patient)
    return bool(saved.changed), warnings


def set_infusion(
    context: WriteContext,
    patient: Patient,
    *,
    therapy_id: int | None,
    infusion_date: date | None,
    clear: bool = False,
) -> bool:
    """The infusion a Procedure reports: the therapy and its date on the record (the
    schedule follows, as when the edit form changes them). `clear` removes the date (a
    Procedure entered in error)."""
    data = PatientData.of(patient)
    changes: dict[str, Any] = {}
    if therapy_id is not None and therapy_id != patient.therapy_id:
        changes["therapy_id"] = therapy_id
    if clear:
        changes["infusion_date"] = None
    elif infusion_date is not None and infusion_date != patient.infusion_date:
        changes["infusion_date"] = infusion_date
        if patient.status is PatientStatus.ENROLLED:
            changes["status"] = PatientStatus.ACTIVE
    if not changes:
        return False
    with field_errors_as("Procedure", {"infusion_date": "Procedure.performed"}):
        saved = change_record(
            context.session,
            clock=context.clock,
            actor=context.caller.actor,
            library=context.library,
            patient=patient,
            data=dataclasses.replace(data, **changes),
            allowed_state_ids={context.caller.state_id},
        )
    return bool(saved.changed)


def patient_version(patient: Patient) -> str:
    return integer_version(patient.version_id)


def _own_column(context: WriteContext, system: str, value: str) -> tuple[Any, str] | None:
    """The record's column an identifier is kept in (the Medicaid ID, the MRN), with the
    value as the column keeps it; None for any other identifier."""
    if system == context.state().medicaid_system:
        return Patient.medicaid_id, value.strip().upper()
    if system == context.center().record_number_system:
        return Patient.center_mrn, value.strip()
    return None


def own_value(context: WriteContext, system: str, value: str) -> str:
    """An identifier's value as the record keeps it (the Medicaid ID in capitals...)."""
    own = _own_column(context, system, value)
    return own[1] if own is not None else value


def known_patient(context: WriteContext, system: str, value: str) -> int | None:
    """The patient `prefetch_identifiers` found by this Medicaid ID or MRN, if it did."""
    own = _own_column(context, system, value)
    return context.lookups.patients_by.get((system, own[1])) if own is not None else None


def find_by_identifier(context: WriteContext, system: str, value: str) -> Patient | None:
    """The caller's center's patient with this identifier: the state's Medicaid ID or the
    center's MRN (in the record's own columns), or another identifier the center gave it.
    The Medicaid ID and MRN are looked up as `prefetch_identifiers` left them when it did."""
    session = context.session
    center = context.center()
    own = _own_column(context, system, value)
    if own is not None:
        column, value = own
        key = (system, value)
        if key in context.lookups.patients_by:  # as prefetched: no query to build
            local_id = context.lookups.patients_by[key]
            return context.patient(local_id) if local_id is not None else None
        found = session.scalar(
            select(Patient).where(Patient.center_id == center.id, column == value)
        )
        if found is not None:
            context.keep(found)
        context.lookups.set_patient(key, found.id if found is not None else None)
        return found
    local_id = session.scalar(
        select(ResourceIdentifier.local_id).where(
            ResourceIdentifier.center_id == center.id,
            ResourceIdentifier.resource_type == RESOURCE,
            ResourceIdentifier.system == system,
            ResourceIdentifier.value == value,
        )
    )
    return context.patient(local_id) if local_id is not None else None


def prefetch_identifiers(context: WriteContext, pairs: Iterable[tuple[str, str]]) -> None:
    """Look up, in one query each, the center's patients with the Medicaid IDs and MRNs
    among `pairs` (system, value), for `find_by_identifier`."""
    center, state = context.center(), context.state()
    known = context.lookups.patients_by
    for system, column in (
        (state.medicaid_system, Patient.medicaid_id),
        (center.record_number_system, Patient.center_mrn),
    ):
        values = {
            own[1]
            for kind, value in pairs
            if kind == system and (own := _own_column(context, kind, value)) is not None
        }
        values -= {value for kind, value in known if kind == system}
        for chunk in _chunks(sorted(values)):
            for patient in context.session.scalars(
                select(Patient).where(Patient.center_id == center.id, column.in_(chunk))
            ):
                context.keep(patient)
                context.lookups.set_patient((system, getattr(patient, column.key)), patient.id)
        for value in values:
            if (system, value) not in known:
                context.lookups.set_patient((system, value), None)


def remember_identifiers(context: WriteContext, patient: Patient) -> None:
    """After a patient was enrolled or changed: what `find_by_identifier` finds by its
    Medicaid ID and MRN."""
    lookups = context.lookups
    lookups.release_patient(patient.id)
    lookups.set_patient((context.state().medicaid_system, patient.medicaid_id), patient.id)
    if patient.center_mrn:
        lookups.set_patient((context.center().record_number_system, patient.center_mrn), patient.id)


def _chunks(values: list[str], size: int = 500) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
