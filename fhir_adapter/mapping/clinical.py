"""The clinical resources a center sends besides Patient, each through today's services:

- RelatedPerson -> a caregiver linked to the patient (`core.caregivers.add_caregiver`); the
  proxy rights stay with the patient and staff (a new caregiver may see the schedule and
  learning modules, as the form's default).
- Procedure / MedicationAdministration (the infusion) -> the therapy (by its configured
  code) and the infusion date on the record; the schedule follows
  (`coordination.records.change_record`, as the edit form).
- Observation -> `coordination.followup.observations` (units, plausible ranges; a result
  of an outcome measure in a visit's window completes the visit).
- Encounter (finished) -> completes the visit whose window holds its date.
- Condition -> a coded fact on the record (`core.conditions`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from coordination.followup.models import Visit, VisitStatus
from coordination.followup.observations import (
    ObservationErrors,
    ObservationFacts,
    is_known_code,
    record_observations,
    update_observation,
)
from coordination.followup.schedule import VisitTransitionError, complete_visit_on
from core.caregivers import CaregiverInput, add_caregiver, update_caregiver
from core.conditions import ConditionData, record_condition, update_condition
from core.models import (
    CaregiverLink,
    Condition,
    Language,
    Observation,
    ObservationStatus,
    Patient,
)
from fhir_adapter.errors import FhirError, Issue
from fhir_adapter.mapping.common import (
    EARLIEST_YEAR,
    JSON,
    LATEST_YEAR,
    Refused,
    WriteContext,
    codings,
    concept_text,
    effective_of,
    field_errors_as,
    parse_day,
    parse_instant,
    patient_of,
    refusal_of,
    unprocessable,
)
from fhir_adapter.mapping.patients import set_infusion, therapy_by_code

# --- RelatedPerson ------------------------------------------------------------------------

# v3 RoleCode relationships, in the words the coordinator's form uses.
_RELATIONSHIPS = {
    "MTH": "mother",
    "FTH": "father",
    "PRN": "parent",
    "GRMTH": "grandmother",
    "GRFTH": "grandfather",
    "GRPRN": "grandparent",
    "AUNT": "aunt",
    "UNCLE": "uncle",
    "SIS": "sister",
    "BRO": "brother",
    "SIB": "sibling",
    "SPS": "spouse",
    "WIFE": "spouse",
    "HUSB": "spouse",
    "DOMPART": "partner",
    "SIGOTHR": "partner",
    "FRND": "friend",
    "GUARD": "guardian",
    "STPMTH": "stepmother",
    "STPFTH": "stepfather",
    "CHILD": "child",
    "DAU": "daughter",
    "SON": "son",
    "NIECE": "niece",
    "NEPHEW": "nephew",
    "COUSN": "cousin",
    "FAMMEMB": "family member",
}
CAREGIVER_FIELDS = {
    "given_name": "RelatedPerson.name.given",
    "family_name": "RelatedPerson.name.family",
    "relationship": "RelatedPerson.relationship",
    "mobile_phone": "RelatedPerson.telecom",
    "preferred_language": "RelatedPerson.communication",
}


def _caregiver_input(resource: JSON) -> CaregiverInput:
    names = [name for name in resource.get("name") or [] if isinstance(name, dict)]
    name = next((n for n in names if n.get("use") == "official"), None) or (
        names[0] if names else {}
    )
    relationship = ""
    for concept in resource.get("relationship") or []:
        for _system, code, display in codings(concept):
            relationship = _RELATIONSHIPS.get(code.upper(), "") or (display or "")
            if relationship:
                break
        relationship = relationship or (concept_text(concept) or "")
        if relationship:
            break
    phone = ""
    for point in resource.get("telecom") or []:
        mobile = isinstance(point, dict) and (
            point.get("system") == "sms"
            or (point.get("system") == "phone" and point.get("use") == "mobile")
        )
        if mobile and point.get("value"):
            phone = str(point["value"])
            break
    language = Language.EN.value
    for item in resource.get("communication") or []:
        if isinstance(item, dict) and any(
            code.lower().startswith("es") for _s, code, _d in codings(item.get("language"))
        ):
            language = Language.ES.value
    return CaregiverInput(
        given_name=" ".join(str(part) for part in (name.get("given") or [])[:2]),
        family_name=str(name.get("family") or ""),
        relationship=(relationship or "family member")[:40],
        mobile_phone=phone,
        preferred_language=language,
    )


def create_related_person(
    context: WriteContext, resource: JSON
) -> tuple[CaregiverLink, list[Issue]]:
    patient = patient_of(context, resource.get("patient"), expression="RelatedPerson.patient")
    assert patient is not None
    with field_errors_as("RelatedPerson", CAREGIVER_FIELDS):
        link = add_caregiver(
            context.session,
            clock=context.clock,
            actor=context.caller.actor,
            patient=patient,
            data=_caregiver_input(resource),
        )
    context.keep(link)
    return link, []


def update_related_person(
    context: WriteContext, link: CaregiverLink, resource: JSON
) -> tuple[bool, list[Issue]]:
    patient = patient_of(context, resource.get("patient"), expression="RelatedPerson.patient")
    assert patient is not None
    if patient.id != link.patient_id:
        raise unprocessable(
            "A RelatedPerson cannot move to another patient.", "RelatedPerson.patient"
        )
    with field_errors_as("RelatedPerson", CAREGIVER_FIELDS):
        changed = update_caregiver(
            context.session,
            clock=context.clock,
            actor=context.caller.actor,
            link=link,
            data=_caregiver_input(resource),
        )
    return bool(changed), []


def load_related_person(context: WriteContext, local_id: int) -> CaregiverLink | None:
    link = context.get(CaregiverLink, local_id)
    if link is None or context.patient(link.patient_id) is None:
        return None
    return link


# --- the infusion: Procedure and MedicationAdministration ----------------------------------

# Statuses that say the infusion took place / was recorded in error.
_DONE = {"completed"}
_IN_ERROR = {"entered-in-error"}


def infusion_facts(
    context: WriteContext, resource: JSON, resource_type: str
) -> tuple[int, date | None, bool]:
    """(therapy id, infusion day or None, entered in error) of an infusion resource."""
    concept_key = "code" if resource_type == "Procedure" else "medicationCodeableConcept"
    therapy = None
    for system, code, _display in codings(resource.get(concept_key)):
        therapy = therapy_by_code(context, system, code)
        if therapy is not None:
            break
    if therapy is None:
        raise unprocessable(
            "The code does not name a therapy the platform follows (configure its NDC, "
            "RxNorm or HCPCS code on the therapy).",
            f"{resource_type}.{concept_key}",
        )
    status = resource.get("status")
    if resource_type == "Procedure":
        moment = resource.get("performedDateTime") or (resource.get("performedPeriod") or {}).get(
            "start"
        )
        where = "Procedure.performed"
    else:
        moment = resource.get("effectiveDateTime") or (resource.get("effectivePeriod") or {}).get(
            "start"
        )
        where = "MedicationAdministration.effective"
    day = parse_day(moment) if status in _DONE else None
    if status in _DONE and day is None:
        raise unprocessable("A completed infusion needs the day it was given.", where)
    return therapy.id, day, status in _IN_ERROR


def write_infusion(
    context: WriteContext, resource: JSON, resource_type: str, *, current: Patient | None = None
) -> tuple[Patient, bool]:
    """Put the infusion on the patient's record; the resource's local id is the patient's
    (one infusion per patient). Returns (the patient, changed)."""
    subject_key = "subject"
    patient = patient_of(context, resource.get(subject_key), expression=f"{resource_type}.subject")
    assert patient is not None
    if current is not None and current.id != patient.id:
        raise unprocessable(
            "An infusion cannot move to another patient.", f"{resource_type}.subject"
        )
    therapy_id, day, in_error = infusion_facts(context, resource, resource_type)
    changed = set_infusion(
        context, patient, therapy_id=therapy_id, infusion_date=day, clear=in_error
    )
    return patient, changed


def load_infusion(context: WriteContext, local_id: int) -> Patient | None:
    return context.patient(local_id)


# --- Observation ---------------------------------------------------------------------------

_STATUSES = {status.value: status for status in ObservationStatus}


def _decimal(value: Any, expression: str) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise unprocessable("This is not a number.", expression) from None
    if not number.is_finite():
        raise unprocessable("This is not a number.", expression)
    return number


def observation_facts(resource: JSON, patient: Patient) -> ObservationFacts:
    """What an Observation resource says, in the platform's terms."""
    zone = ZoneInfo(patient.time_zone)
    found = codings(resource.get("code"))
    if not found:
        raise unprocessable("The Observation needs a coded `code`.", "Observation.code")
    # The first coding the platform checks wins; else the first coding.
    system, code, display = next(
        (item for item in found if is_known_code(item[0], item[1])), found[0]
    )
    effective = effective_of(resource, zone=zone)
    if effective is None:
        raise unprocessable(
            "The Observation needs when it holds (effectiveDateTime), in the years "
            f"{EARLIEST_YEAR} to {LATEST_YEAR}.",
            "Observation.effective",
        )
    status = _STATUSES.get(str(resource.get("status")))
    if status is None:
        raise unprocessable("Unknown status.", "Observation.status", code="code-invalid")
    extra: dict[str, Any] = {}
    for key in ("category", "component", "dataAbsentReason", "interpretation", "hasMember"):
        if key in resource:
            extra[key] = resource[key]
    value: Decimal | bool | str | None = None
    unit: str | None = None
    unit_system: str | None = None
    value_code_system: str | None = None
    value_code: str | None = None
    if "valueQuantity" in resource:
        quantity = resource["valueQuantity"]
        value = _decimal(quantity.get("value"), "Observation.valueQuantity.value")
        unit = quantity.get("code") or quantity.get("unit")
        unit_system = quantity.get("system")
        if quantity.get("comparator"):
            extra["comparator"] = quantity["comparator"]
    elif "valueInteger" in resource:
        value = Decimal(int(resource["valueInteger"]))
        unit = {"voe-count": "{events}", "hospitalization-count": "{stays}"}.get(code)
        unit = unit or ("{transfusions}" if code == "transfusion-count" else None)
        unit_system = "http://unitsofmeasure.org" if unit else None
    elif "valueBoolean" in resource:
        value = bool(resource["valueBoolean"])
    elif "valueString" in resource:
        value = str(resource["valueString"])
    elif "valueCodeableConcept" in resource:
        coded = codings(resource["valueCodeableConcept"])
        if coded:
            value_code_system, value_code, coded_display = coded[0]
            value = coded_display or concept_text(resource["valueCodeableConcept"])
        else:
            value = concept_text(resource["valueCodeableConcept"])
    elif any(key.startswith("value") for key in resource):
        kind = next(key for key in resource if key.startswith("value"))
        raise unprocessable(
            f"{kind} is not kept here: send valueQuantity, valueInteger, valueBoolean, "
            "valueString or valueCodeableConcept.",
            f"Observation.{kind}",
            code="not-supported",
        )
    return ObservationFacts(
        code_system=system,
        code=code,
        display=display or concept_text(resource.get("code")) or code,
        effective_at=effective,
        status=status,
        value=value,
        unit=unit,
        unit_system=unit_system,
        value_code_system=value_code_system,
        value_code=value_code,
        extra=extra,
    )


OBSERVATION_FIELDS = {
    "value": "Observation.value",
    "unit": "Observation.valueQuantity.code",
    "code": "Observation.code",
    "status": "Observation.status",
}


@dataclass(frozen=True)
class NewObservation:
    """An observation just kept, as its Written needs it (without reading it back)."""

    id: int
    patient_id: int
    version_id: int
    last_updated: datetime


def create_observation(context: WriteContext, resource: JSON) -> tuple[NewObservation, list[Issue]]:
    return create_observations(context, [(resource, None)])[0]


def create_observations(
    context: WriteContext, items: list[tuple[JSON, str | None]]
) -> list[tuple[NewObservation, list[Issue]]]:
    """Keep Observations (a transaction's, together: `record_observations`). Raises Refused
    naming the first that cannot be kept (a single one: its FhirError)."""
    resources = [resource for resource, _full_url in items]
    facts = []
    for index, resource in enumerate(resources):
        try:
            patient = patient_of(context, resource.get("subject"), expression="Observation.subject")
            assert patient is not None
            facts.append((patient, observation_facts(resource, patient)))
        except FhirError as error:
            if len(resources) == 1:
                raise
            raise Refused(index, error) from None
    try:
        kept = record_observations(
            context.session, clock=context.clock, actor=context.caller.actor, items=facts
        )
    except ObservationErrors as problem:
        refusal = refusal_of(problem, "Observation", OBSERVATION_FIELDS)
        if len(resources) == 1:
            raise refusal from None
        raise Refused(problem.index, refusal) from None
    now = context.clock.now()
    return [
        (NewObservation(observation_id, patient.id, 1, now), [])
        for observation_id, (patient, _facts) in zip(kept, facts, strict=True)
    ]


def update_observation_resource(
    context: WriteContext, observation: Observation, resource: JSON
) -> tuple[bool, list[Issue]]:
    patient = patient_of(context, resource.get("subject"), expression="Observation.subject")
    assert patient is not None
    if patient.id != observation.patient_id:
        raise unprocessable("An Observation cannot move to another patient.", "Observation.subject")
    facts = observation_facts(resource, patient)
    with field_errors_as("Observation", OBSERVATION_FIELDS):
        changed = update_observation(
            context.session,
            clock=context.clock,
            actor=context.caller.actor,
            observation=observation,
            facts=facts,
            reason=f"updated by {context.caller.actor.label}",
        )
    return changed, []


def load_observation(context: WriteContext, local_id: int) -> Observation | None:
    observation = context.get(Observation, local_id)
    if observation is None or context.patient(observation.patient_id) is None:
        return None
    return observation


# --- Encounter -----------------------------------------------------------------------------


def create_encounter(context: WriteContext, resource: JSON) -> tuple[Visit, list[Issue]]:
    """A finished Encounter completes the visit whose window holds its day; the resource's
    local id is the visit's."""
    patient = patient_of(context, resource.get("subject"), expression="Encounter.subject")
    assert patient is not None
    if resource.get("status") != "finished":
        raise unprocessable(
            "Only a finished Encounter is kept here (it completes a follow-up visit).",
            "Encounter.status",
        )
    period = resource.get("period") or {}
    zone = ZoneInfo(patient.time_zone)
    moment = parse_instant(period.get("start") or period.get("end"), zone=zone)
    if moment is None:
        raise unprocessable(
            f"The Encounter needs its day (period.start), in the years {EARLIEST_YEAR} to "
            f"{LATEST_YEAR}.",
            "Encounter.period",
        )
    day = moment.astimezone(zone).date()
    try:
        visit = complete_visit_on(
            context.session,
            clock=context.clock,
            actor=context.caller.actor,
            patient=patient,
            day=day,
        )
    except VisitTransitionError as problem:
        raise unprocessable(str(problem.args[0]), "Encounter.period") from None
    context.keep(visit)
    return visit, []


def update_encounter(
    context: WriteContext, visit: Visit, resource: JSON
) -> tuple[bool, list[Issue]]:
    found, _warnings = create_encounter(context, resource)
    if found.id != visit.id:
        raise unprocessable(
            "This Encounter's day is in another visit's window.", "Encounter.period"
        )
    return False, []


def load_visit(context: WriteContext, local_id: int) -> Visit | None:
    visit = context.get(Visit, local_id)
    if visit is None or context.patient(visit.patient_id) is None:
        return None
    return visit


def load_completed_visit(context: WriteContext, local_id: int) -> Visit | None:
    visit = load_visit(context, local_id)
    return visit if visit is not None and visit.status is VisitStatus.COMPLETED else None


# --- Condition -----------------------------------------------------------------------------


def _condition_data(resource: JSON) -> ConditionData:
    found = codings(resource.get("code"))
    if not found:
        raise unprocessable("The Condition needs a coded `code`.", "Condition.code")
    system, code, display = found[0]
    clinical = codings(resource.get("clinicalStatus"))
    verification = codings(resource.get("verificationStatus"))
    onset = resource.get("onsetDateTime") or (resource.get("onsetPeriod") or {}).get("start")
    return ConditionData(
        code_system=system,
        code=code,
        display=display or concept_text(resource.get("code")),
        clinical_status=clinical[0][1] if clinical else None,
        verification_status=verification[0][1] if verification else None,
        onset_date=parse_day(onset),
        recorded_date=parse_day(resource.get("recordedDate")),
    )


CONDITION_FIELDS = {
    "code": "Condition.code",
    "code_system": "Condition.code",
    "clinical_status": "Condition.clinicalStatus",
    "verification_status": "Condition.verificationStatus",
}


def create_condition(context: WriteContext, resource: JSON) -> tuple[Condition, list[Issue]]:
    patient = patient_of(context, resource.get("subject"), expression="Condition.subject")
    assert patient is not None
    with field_errors_as("Condition", CONDITION_FIELDS):
        condition = record_condition(
            context.session,
            clock=context.clock,
            actor=context.caller.actor,
            patient=patient,
            data=_condition_data(resource),
        )
    context.keep(condition)
    return condition, []


def update_condition_resource(
    context: WriteContext, condition: Condition, resource: JSON
) -> tuple[bool, list[Issue]]:
    patient = patient_of(context, resource.get("subject"), expression="Condition.subject")
    assert patient is not None
    if patient.id != condition.patient_id:
        raise unprocessable("A Condition cannot move to another patient.", "Condition.subject")
    with field_errors_as("Condition", CONDITION_FIELDS):
        changed = update_condition(
            context.session,
            clock=context.clock,
            actor=context.caller.actor,
            condition=condition,
            data=_condition_data(resource),
        )
    return bool(changed), []


def load_condition(context: WriteContext, local_id: int) -> Condition | None:
    condition = context.get(Condition, local_id)
    if condition is None or context.patient(condition.patient_id) is None:
        return None
    return condition
