"""What this FHIR server supports: the plan of issue 11 (every resource type, interaction,
search parameter and operation the platform will offer) and `CAPABILITIES`, the application's
registry, which the handlers tell what they serve (`capability.py` explains the two steps).
"""

from __future__ import annotations

from fhir_adapter.capability import (
    CapabilityRegistry,
    Interaction,
    Operation,
    OperationLevel,
    SearchParam,
    SearchParamType,
    SystemInteraction,
)

_SPEC = "http://hl7.org/fhir/SearchParameter/"
_OPERATIONS = "http://hl7.org/fhir/OperationDefinition/"
_BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"

_LAST_UPDATED = SearchParam(
    "_lastUpdated",
    SearchParamType.DATE,
    f"{_SPEC}Resource-lastUpdated",
    "When it last changed (prefixes eq ne lt gt le ge sa eb); also a _sort key "
    "(_sort=_lastUpdated, -_lastUpdated)",
)
_ID = SearchParam(
    "_id",
    SearchParamType.TOKEN,
    f"{_SPEC}Resource-id",
    "The resource's id. Results come in id order unless _sort says otherwise; pages are "
    "keyset pages (_count, at most 1000) and the first page's total holds for the next ones",
)
# Every `_include` served names the patient; `_revinclude` on Patient searches bring what
# points at them.
_REVINCLUDES = [
    "Observation:patient",
    "Condition:patient",
    "RelatedPerson:patient",
    "Procedure:patient",
    "Encounter:patient",
    "Appointment:patient",
    "CarePlan:patient",
    "QuestionnaireResponse:patient",
    "Observation:subject",
]


def _patient_param(definition: str = "clinical-patient") -> SearchParam:
    return SearchParam(
        "patient",
        SearchParamType.REFERENCE,
        f"{_SPEC}{definition}",
        "The patient (id, Patient/id or the full URL); chained to the patient's own "
        "parameters too (patient.identifier=system|value, patient.name, patient.birthdate)",
    )


def _searched(*params: SearchParam) -> list[SearchParam]:
    """`_id` and `_lastUpdated`, which every searched type takes, and its own parameters."""
    return [_ID, _LAST_UPDATED, *params]


def _plan(registry: CapabilityRegistry) -> None:
    r = Interaction
    registry.plan_resource(
        "Patient",
        [r.READ, r.SEARCH_TYPE, r.CREATE, r.UPDATE, r.CONDITIONAL_CREATE, r.CONDITIONAL_UPDATE],
        search_params=_searched(
            SearchParam(
                "identifier",
                SearchParamType.TOKEN,
                f"{_SPEC}Patient-identifier",
                "Medicaid ID, MRN or an identifier the center gave (system|value or value)",
            ),
            SearchParam(
                "name",
                SearchParamType.STRING,
                f"{_SPEC}Patient-name",
                "Family or given name starts with (any case; :exact, :contains)",
            ),
            SearchParam("birthdate", SearchParamType.DATE, f"{_SPEC}individual-birthdate"),
        ),
        revincludes=_REVINCLUDES,
        documentation="Patients in long-term follow-up at the client's treatment center.",
    )
    registry.plan_resource(
        "Observation",
        [r.READ, r.SEARCH_TYPE, r.CREATE, r.UPDATE, r.CONDITIONAL_CREATE, r.CONDITIONAL_UPDATE],
        search_params=_searched(
            _patient_param(),
            SearchParam(
                "subject",
                SearchParamType.REFERENCE,
                f"{_SPEC}Observation-subject",
                "The patient (subject:Patient too; chained like patient)",
            ),
            SearchParam(
                "code",
                SearchParamType.TOKEN,
                f"{_SPEC}clinical-code",
                "system|code, code or system| (comma: any of them)",
            ),
            SearchParam(
                "date",
                SearchParamType.DATE,
                f"{_SPEC}clinical-date",
                "The effective time; also a _sort key (_sort=date, -date)",
            ),
            SearchParam("status", SearchParamType.TOKEN, f"{_SPEC}Observation-status"),
        ),
        includes=["Observation:patient", "Observation:subject"],
        documentation=(
            "Follow-up outcomes: hemoglobin (LOINC 718-7, g/dL), fetal hemoglobin (LOINC "
            "4576-5, %), and counts of vaso-occlusive events, hospital stays and transfusions."
        ),
    )
    writes = [r.CREATE, r.UPDATE, r.CONDITIONAL_CREATE, r.CONDITIONAL_UPDATE]
    registry.plan_resource(
        "RelatedPerson",
        [*writes, r.READ, r.SEARCH_TYPE],
        search_params=_searched(_patient_param("RelatedPerson-patient")),
        includes=["RelatedPerson:patient"],
        documentation="Caregivers of the center's patients.",
    )
    registry.plan_resource(
        "MedicationAdministration",
        writes,
        documentation="The infusion as a medication given (instead of a Procedure).",
    )
    registry.plan_resource(
        "Procedure",
        [*writes, r.READ, r.SEARCH_TYPE],
        search_params=_searched(_patient_param()),
        includes=["Procedure:patient"],
        documentation=(
            "The gene-therapy infusion, which anchors the follow-up schedule (one per "
            "patient; its id is the patient's)."
        ),
    )
    registry.plan_resource(
        "Encounter",
        [*writes, r.READ, r.SEARCH_TYPE],
        search_params=_searched(
            _patient_param(),
            SearchParam("date", SearchParamType.DATE, f"{_SPEC}clinical-date", "The visit's day"),
        ),
        includes=["Encounter:patient"],
        documentation="A finished encounter completes the follow-up visit whose window holds it.",
    )
    registry.plan_resource(
        "Condition",
        [*writes, r.READ, r.SEARCH_TYPE],
        search_params=_searched(
            _patient_param(),
            SearchParam("code", SearchParamType.TOKEN, f"{_SPEC}clinical-code"),
        ),
        includes=["Condition:patient"],
        documentation="Coded diagnoses (sickle cell disease: ICD-10-CM D57.*).",
    )
    registry.plan_resource(
        "Appointment",
        [r.READ, r.SEARCH_TYPE],
        search_params=_searched(
            _patient_param("Appointment-patient"),
            SearchParam(
                "date",
                SearchParamType.DATE,
                f"{_SPEC}Appointment-date",
                "The booked start, or the visit's window while it is not booked",
            ),
            SearchParam(
                "status",
                SearchParamType.TOKEN,
                f"{_SPEC}Appointment-status",
                "proposed, booked, fulfilled, noshow, cancelled",
            ),
        ),
        includes=["Appointment:patient"],
        documentation="Follow-up visits as the platform schedules them.",
    )
    registry.plan_resource(
        "CarePlan",
        [r.READ, r.SEARCH_TYPE],
        search_params=_searched(_patient_param()),
        includes=["CarePlan:patient"],
        documentation="The 15-year follow-up protocol's schedule of a patient.",
    )
    registry.plan_resource(
        "QuestionnaireResponse",
        [r.READ, r.SEARCH_TYPE],
        search_params=_searched(
            _patient_param("QuestionnaireResponse-patient"),
            SearchParam(
                "subject",
                SearchParamType.REFERENCE,
                f"{_SPEC}QuestionnaireResponse-subject",
                "The patient (subject:Patient too)",
            ),
            SearchParam(
                "questionnaire",
                SearchParamType.REFERENCE,
                f"{_SPEC}QuestionnaireResponse-questionnaire",
                "The questionnaire's canonical url, or url|version",
            ),
            SearchParam(
                "authored",
                SearchParamType.DATE,
                f"{_SPEC}QuestionnaireResponse-authored",
                "When it was submitted; also a _sort key (_sort=authored, -authored)",
            ),
            SearchParam(
                "status",
                SearchParamType.TOKEN,
                f"{_SPEC}QuestionnaireResponse-status",
                "completed (drafts are not served)",
            ),
        ),
        includes=["QuestionnaireResponse:patient"],
        documentation=(
            "Patient-reported outcome questionnaires the patient (or a caregiver for them) "
            "submitted; the score, where the questionnaire defines one, is an Observation."
        ),
    )
    registry.plan_resource("Group", [r.READ], documentation="A center's patients, for $export.")
    registry.plan_system(SystemInteraction.TRANSACTION, SystemInteraction.BATCH)
    registry.plan_operation(
        Operation(
            "validate",
            f"{_OPERATIONS}Resource-validate",
            OperationLevel.TYPE,
            documentation="Checks a resource as create/update would, without storing it.",
        )
    )
    registry.plan_operation(
        Operation(
            "everything",
            f"{_OPERATIONS}Patient-everything",
            OperationLevel.INSTANCE,
            "Patient",
            method="GET",
            documentation=(
                "The patient and everything about them this server serves, paged "
                "(_since, _type, _count)."
            ),
        )
    )
    export = (
        "Bulk Data export (async: Prefer: respond-async, then poll Content-Location): the "
        "client's center's patients and what is about them, as NDJSON; _type, _since."
    )
    registry.plan_operation(
        Operation(
            "export", f"{_BULK}export", OperationLevel.SYSTEM, method="GET", documentation=export
        )
    )
    registry.plan_operation(
        Operation(
            "export",
            f"{_BULK}patient-export",
            OperationLevel.TYPE,
            "Patient",
            method="GET",
            documentation=export,
        )
    )
    registry.plan_operation(
        Operation(
            "export",
            f"{_BULK}group-export",
            OperationLevel.INSTANCE,
            "Group",
            method="GET",
            documentation=export + " The client's center is Group/[center id].",
        )
    )


def seeded_registry() -> CapabilityRegistry:
    """A registry holding issue 11's plan, nothing served yet (tests build their own)."""
    registry = CapabilityRegistry()
    _plan(registry)
    return registry


CAPABILITIES = seeded_registry()
"""The application's registry: handlers call `CAPABILITIES.serve(...)` next to their routes."""
