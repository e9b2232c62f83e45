"""The platform's records as FHIR R4 resources (plain JSON dicts, written by orjson): what
reads, searches, `$everything` and bulk export serve. One function per resource type; each
reads attributes by column name, so it takes an ORM object or a row of a Core select alike
(bulk export streams rows without building objects).

- Patient: the record (Medicaid ID and MRN as identifiers with the configured systems, name,
  birth date, mobile, language, deceased, the therapy as an extension).
- Observation, Condition: as kept; corrected values carry their status and version.
- RelatedPerson: a caregiver link (relationship as v3 RoleCode where known).
- Procedure: the infusion (its id is the patient's: one infusion per patient).
- Appointment: a follow-up visit (proposed with its window while unbooked; booked, fulfilled,
  noshow, cancelled), Encounter: a completed visit, CarePlan: the 15-year protocol schedule.
- Group: a center's patients (for `Group/[id]/$export`).

What is served is valid R4: the tests put every resource these functions make through the
same validation as inbound data."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from core.models import SID_BASE, Language, PatientStatus
from core.therapy_codes import PLATFORM_SYSTEM as PLATFORM_THERAPY_SYSTEM

JSON = dict[str, Any]

ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
UCUM = "http://unitsofmeasure.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
V3_ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
V3_ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
BCP47 = "urn:ietf:bcp:47"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
THERAPY_EXTENSION = "https://cgt-access.org/fhir/StructureDefinition/therapy"
THERAPY_SYSTEM = PLATFORM_THERAPY_SYSTEM
VISIT_SYSTEM = "https://cgt-access.org/fhir/CodeSystem/follow-up-visit"
LOINC = "http://loinc.org"
VITAL_SIGNS = frozenset(
    {"8867-4", "9279-1", "8310-5", "29463-7", "8302-2", "39156-5", "2708-6", "59408-5", "85354-9"}
)
# The appointment's length when the platform knows only its start (FHIR needs an end).
APPOINTMENT_MINUTES = 60
FOLLOW_UP_YEARS = 15


def instant(moment: datetime) -> str:
    """A FHIR instant/dateTime in UTC with seconds: `2026-11-27T15:00:00Z`."""
    if moment.tzinfo is not UTC:  # the database's instants are UTC already
        moment = moment.astimezone(UTC)
    # isoformat, not strftime: a bulk export writes two of these per Observation.
    return moment.isoformat(timespec="seconds")[:19] + "Z"


def meta(version_id: str | int, last_updated: datetime) -> JSON:
    return {"versionId": str(version_id), "lastUpdated": instant(last_updated)}


def timestamp_version(moment: datetime) -> str:
    """A version id for records that have no counter: the microsecond of their last change."""
    return str(int(moment.timestamp() * 1_000_000))


def patient_reference(patient_id: int) -> JSON:
    return {"reference": f"Patient/{patient_id}"}


def _number(value: Decimal) -> Decimal:
    # 12.5000 (the column's scale) is written 12.5; FHIR decimals keep what is significant.
    normalized = value.normalize()
    return normalized.quantize(Decimal(1)) if normalized == normalized.to_integral() else normalized


# --- Patient -----------------------------------------------------------------------------


def patient_resource(patient: Any, *, state: Any, center: Any, therapy: Any) -> JSON:
    """A patient's record as a FHIR Patient."""
    identifiers: list[JSON] = [
        {
            "use": "official",
            "type": {
                "coding": [{"system": V2_0203, "code": "MA", "display": "Patient Medicaid number"}]
            },
            "system": state.medicaid_system,
            "value": patient.medicaid_id,
        }
    ]
    if patient.center_mrn:
        identifiers.append(
            {
                "use": "usual",
                "type": {"coding": [{"system": V2_0203, "code": "MR"}]},
                "system": center.record_number_system,
                "value": patient.center_mrn,
            }
        )
    resource: JSON = {
        "resourceType": "Patient",
        "id": str(patient.id),
        "meta": meta(patient.version_id, patient.updated_at),
        "extension": [
            {
                "url": THERAPY_EXTENSION,
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": THERAPY_SYSTEM,
                            "code": therapy.code,
                            "display": therapy.brand_name,
                        }
                    ]
                },
            }
        ],
        "identifier": identifiers,
        "active": patient.status not in (PatientStatus.WITHDRAWN, PatientStatus.DECEASED),
        "name": [
            {
                "use": "official",
                "family": patient.family_name,
                "given": patient.given_name.split(),
            }
        ],
        "birthDate": patient.birth_date.isoformat(),
        "communication": [
            {
                "language": {
                    "coding": [
                        {
                            "system": BCP47,
                            "code": patient.preferred_language.value,
                            "display": "Spanish"
                            if patient.preferred_language is Language.ES
                            else "English",
                        }
                    ]
                },
                "preferred": True,
            }
        ],
        "managingOrganization": {"display": center.name},
    }
    if patient.mobile_phone:
        resource["telecom"] = [{"system": "phone", "value": patient.mobile_phone, "use": "mobile"}]
    if patient.status is PatientStatus.DECEASED:
        resource["deceasedBoolean"] = True
    return resource


# --- Observation -------------------------------------------------------------------------


def _category_code(code_system: str, code: str) -> str:
    if code_system != LOINC:
        return "survey"
    return "vital-signs" if code in VITAL_SIGNS else "laboratory"


def _category(code_system: str, code: str) -> list[JSON]:
    return [{"coding": [{"system": CATEGORY, "code": _category_code(code_system, code)}]}]


def observation_resource(observation: Any) -> JSON:
    """A kept observation as a FHIR Observation (its status and version as corrected).

    Bulk export makes a million of these in a run: each attribute is read once (a Core
    row's attribute costs more than a local's), nothing is looked up twice."""
    extra: dict[str, Any] = observation.extra or {}
    code_system = observation.code_system
    code = observation.code
    display = observation.display
    status = observation.status
    resource: JSON = {
        "resourceType": "Observation",
        "id": str(observation.id),
        "meta": {
            "versionId": str(observation.version_id),
            "lastUpdated": instant(observation.updated_at or observation.created_at),
        },
        "status": str(status),  # a StrEnum's str is its value (and a str's is itself)
        "category": extra.get("category") or _category(code_system, code),
        "code": {
            "coding": [{"system": code_system, "code": code, "display": display}],
            "text": display,
        },
        "subject": {"reference": f"Patient/{observation.patient_id}"},
        "effectiveDateTime": instant(observation.effective_at),
    }
    value_quantity = observation.value_quantity
    if value_quantity is not None:
        quantity: JSON = {"value": _number(value_quantity)}
        unit = observation.value_unit
        if unit:
            quantity["unit"] = unit
            quantity["system"] = UCUM
            quantity["code"] = unit
        if extra and extra.get("comparator"):
            quantity["comparator"] = extra["comparator"]
        resource["valueQuantity"] = quantity
    else:
        value_code = observation.value_code
        value_text = observation.value_text
        if value_code is not None:
            coding: JSON = {"system": observation.value_code_system, "code": value_code}
            if value_text:
                coding["display"] = value_text
            resource["valueCodeableConcept"] = {"coding": [coding]}
        else:
            value_boolean = observation.value_boolean
            if value_boolean is not None:
                resource["valueBoolean"] = value_boolean
            elif value_text is not None:
                resource["valueString"] = value_text
    if extra:
        for key in ("component", "dataAbsentReason", "interpretation", "hasMember"):
            if key in extra:
                resource[key] = extra[key]
    return resource


# --- Condition ---------------------------------------------------------------------------


def condition_resource(condition: Any) -> JSON:
    resource: JSON = {
        "resourceType": "Condition",
        "id": str(condition.id),
        "meta": meta(condition.version_id, condition.updated_at),
        "code": {
            "coding": [
                {
                    "system": condition.code_system,
                    "code": condition.code,
                    **({"display": condition.display} if condition.display else {}),
                }
            ]
        },
        "subject": patient_reference(condition.patient_id),
    }
    if condition.clinical_status:
        resource["clinicalStatus"] = {
            "coding": [{"system": CLINICAL, "code": condition.clinical_status}]
        }
    if condition.verification_status:
        resource["verificationStatus"] = {
            "coding": [{"system": VERIFICATION, "code": condition.verification_status}]
        }
    if condition.onset_date:
        resource["onsetDateTime"] = condition.onset_date.isoformat()
    if condition.recorded_date:
        resource["recordedDate"] = condition.recorded_date.isoformat()
    return resource


# --- RelatedPerson -----------------------------------------------------------------------

# The platform's relationships as HL7 v3 RoleCode (those without one go as text only).
_ROLE_CODES = {
    "mother": "MTH",
    "father": "FTH",
    "parent": "PRN",
    "stepmother": "STPMTH",
    "stepfather": "STPFTH",
    "grandmother": "GRMTH",
    "grandfather": "GRFTH",
    "aunt": "AUNT",
    "uncle": "UNCLE",
    "sister": "SIS",
    "brother": "BRO",
    "partner": "SIGOTHR",
    "guardian": "GUARD",
    "friend": "FRND",
}


def related_person_resource(link: Any, caregiver: Any) -> JSON:
    """A caregiver of a patient as a RelatedPerson (its id is the caregiver link's)."""
    label = str(link.relationship_label)
    code = _ROLE_CODES.get(label.strip().lower())
    relationship: JSON = {"text": label}
    if code:
        relationship["coding"] = [{"system": V3_ROLE, "code": code}]
    resource: JSON = {
        "resourceType": "RelatedPerson",
        "id": str(link.id),
        "meta": meta(timestamp_version(link.updated_at), link.updated_at),
        "patient": patient_reference(link.patient_id),
        "relationship": [relationship],
        "name": [{"family": caregiver.family_name, "given": caregiver.given_name.split()}],
        "communication": [
            {
                "language": {
                    "coding": [{"system": BCP47, "code": caregiver.preferred_language.value}]
                },
                "preferred": True,
            }
        ],
    }
    if caregiver.mobile_phone:
        resource["telecom"] = [
            {"system": "phone", "value": caregiver.mobile_phone, "use": "mobile"}
        ]
    return resource


# --- the infusion ------------------------------------------------------------------------


def procedure_resource(patient: Any, *, therapy: Any, codes: list[tuple[str, str]]) -> JSON:
    """The infusion on a patient's record as a Procedure (id: the patient's)."""
    coding = [{"system": THERAPY_SYSTEM, "code": therapy.code, "display": therapy.brand_name}]
    coding += [{"system": system, "code": code} for system, code in codes]
    resource: JSON = {
        "resourceType": "Procedure",
        "id": str(patient.id),
        "meta": meta(patient.version_id, patient.updated_at),
        "status": "completed" if patient.infusion_date else "preparation",
        "code": {"coding": coding, "text": f"{therapy.brand_name} ({therapy.generic_name})"},
        "subject": patient_reference(patient.id),
    }
    if patient.infusion_date:
        resource["performedDateTime"] = patient.infusion_date.isoformat()
    return resource


# --- the schedule: Appointment, Encounter, CarePlan --------------------------------------

_APPOINTMENT_STATUS = {
    "due": "proposed",
    "scheduled": "booked",
    "rescheduled": "booked",
    "confirmed": "booked",
    "completed": "fulfilled",
    "missed": "noshow",
    "cancelled": "cancelled",
}


def _day_start(day: date) -> str:
    return datetime.combine(day, time(0), tzinfo=UTC).strftime("%Y-%m-%d")


def appointment_resource(visit: Any, *, label: str) -> JSON:
    """A follow-up visit as an Appointment: its window as `requestedPeriod`, its booking as
    `start`/`end` (an hour), its status in FHIR's words."""
    status = getattr(visit.status, "value", visit.status)
    resource: JSON = {
        "resourceType": "Appointment",
        "id": str(visit.id),
        "meta": meta(timestamp_version(visit.updated_at), visit.updated_at),
        "status": _APPOINTMENT_STATUS[status],
        "serviceType": [
            {"coding": [{"system": VISIT_SYSTEM, "code": visit.visit_key}], "text": label}
        ],
        "description": label,
        "requestedPeriod": [
            {"start": _day_start(visit.window_start), "end": _day_start(visit.window_end)}
        ],
        "participant": [
            {
                "actor": patient_reference(visit.patient_id),
                "required": "required",
                "status": "accepted" if status in ("confirmed", "completed") else "needs-action",
            }
        ],
    }
    if visit.appointment_at is not None and status not in ("due",):
        start = visit.appointment_at
        resource["start"] = instant(start)
        resource["end"] = instant(start + timedelta(minutes=APPOINTMENT_MINUTES))
        resource["minutesDuration"] = APPOINTMENT_MINUTES
    elif status in ("scheduled", "rescheduled", "confirmed", "fulfilled", "noshow"):
        # Booked-like without a time (a visit completed or missed unbooked): FHIR wants
        # start and end; the window stands for them.
        resource["start"] = f"{visit.window_start.isoformat()}T00:00:00Z"
        resource["end"] = f"{visit.window_end.isoformat()}T23:59:59Z"
    if visit.location:
        resource["comment"] = visit.location
    if status == "cancelled":
        resource["cancelationReason"] = {"text": "cancelled"}
    return resource


def encounter_resource(visit: Any, *, label: str) -> JSON:
    """A completed follow-up visit as a finished Encounter."""
    day = visit.completed_on or visit.target_date
    return {
        "resourceType": "Encounter",
        "id": str(visit.id),
        "meta": meta(timestamp_version(visit.updated_at), visit.updated_at),
        "status": "finished",
        "class": {"system": V3_ACT, "code": "AMB", "display": "ambulatory"},
        "type": [{"coding": [{"system": VISIT_SYSTEM, "code": visit.visit_key}], "text": label}],
        "subject": patient_reference(visit.patient_id),
        "appointment": [{"reference": f"Appointment/{visit.id}"}],
        "period": {"start": day.isoformat(), "end": day.isoformat()},
    }


def care_plan_resource(plan: Any, *, patient: Any, title: str, visits: list[Any]) -> JSON:
    """A patient's follow-up schedule as a CarePlan: its protocol, 15 years from the
    infusion, each visit an activity (the Appointment, and the Encounter once done)."""
    ended = patient.status in (PatientStatus.WITHDRAWN, PatientStatus.DECEASED)
    end = plan.anchor_date.replace(year=plan.anchor_date.year + FOLLOW_UP_YEARS)
    activities = []
    for visit in visits:
        status = getattr(visit.status, "value", visit.status)
        activity: JSON = {"reference": {"reference": f"Appointment/{visit.id}"}}
        if status == "completed":
            activity["outcomeReference"] = [{"reference": f"Encounter/{visit.id}"}]
        activities.append(activity)
    resource: JSON = {
        "resourceType": "CarePlan",
        "id": str(plan.id),
        "meta": meta(timestamp_version(plan.updated_at), plan.updated_at),
        "identifier": [
            {
                "system": f"{SID_BASE}/protocol",
                "value": f"{plan.therapy_code}-v{plan.protocol_version}",
            }
        ],
        "status": "revoked" if ended else "active",
        "intent": "plan",
        "title": title,
        "subject": patient_reference(plan.patient_id),
        "period": {"start": plan.anchor_date.isoformat(), "end": end.isoformat()},
    }
    if activities:
        resource["activity"] = activities
    return resource


# --- Group -------------------------------------------------------------------------------


def group_resource(center: Any, patient_ids: list[int], *, last_updated: datetime) -> JSON:
    """A center's patients as a Group (what `Group/[id]/$export` exports)."""
    resource: JSON = {
        "resourceType": "Group",
        "id": str(center.id),
        "meta": meta(timestamp_version(last_updated), last_updated),
        "type": "person",
        "actual": True,
        "name": f"Patients followed at {center.name}",
        "quantity": len(patient_ids),
    }
    if patient_ids:
        resource["member"] = [{"entity": patient_reference(id_)} for id_ in patient_ids]
    return resource
