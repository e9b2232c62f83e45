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
    "_lastUpdated", SearchParamType.DATE, f"{_SPEC}Resource-lastUpdated", "When it last changed"
)


def _patient_param(definition: str = "clinical-patient") -> SearchParam:
    return SearchParam(
        "patient", SearchParamType.REFERENCE, f"{_SPEC}{definition}", "The patient (Patient/id)"
    )


def _plan(registry: CapabilityRegistry) -> None:
    r = Interaction
    registry.plan_resource(
        "Patient",
        [r.READ, r.SEARCH_TYPE, r.CREATE, r.UPDATE, r.CONDITIONAL_CREATE, r.CONDITIONAL_UPDATE],
        search_params=[
            SearchParam("identifier", SearchParamType.TOKEN, f"{_SPEC}Patient-identifier"),
            SearchParam("name", SearchParamType.STRING, f"{_SPEC}Patient-name"),
            SearchParam("birthdate", SearchParamType.DATE, f"{_SPEC}individual-birthdate"),
            _LAST_UPDATED,
        ],
        documentation="Patients in long-term follow-up at the client's treatment center.",
    )
    registry.plan_resource(
        "Observation",
        [r.READ, r.SEARCH_TYPE, r.CREATE, r.UPDATE, r.CONDITIONAL_CREATE, r.CONDITIONAL_UPDATE],
        search_params=[
            _patient_param(),
            SearchParam("code", SearchParamType.TOKEN, f"{_SPEC}clinical-code"),
            SearchParam("date", SearchParamType.DATE, f"{_SPEC}clinical-date"),
            _LAST_UPDATED,
        ],
        documentation=(
            "Follow-up outcomes: hemoglobin (LOINC 718-7, g/dL), fetal hemoglobin (LOINC "
            "4576-5, %), and counts of vaso-occlusive events, hospital stays and transfusions."
        ),
    )
    writes = [r.CREATE, r.UPDATE, r.CONDITIONAL_CREATE, r.CONDITIONAL_UPDATE]
    registry.plan_resource("RelatedPerson", [*writes, r.READ])
    registry.plan_resource(
        "MedicationAdministration",
        writes,
        documentation="The infusion as a medication given (instead of a Procedure).",
    )
    registry.plan_resource(
        "Procedure",
        [*writes, r.READ, r.SEARCH_TYPE],
        search_params=[_patient_param()],
        documentation="The gene-therapy infusion, which anchors the follow-up schedule.",
    )
    registry.plan_resource(
        "Encounter",
        [*writes, r.READ, r.SEARCH_TYPE],
        search_params=[_patient_param()],
        documentation="A finished encounter completes the follow-up visit whose window holds it.",
    )
    registry.plan_resource(
        "Condition",
        [*writes, r.READ, r.SEARCH_TYPE],
        search_params=[_patient_param()],
        documentation="Coded diagnoses (sickle cell disease: ICD-10-CM D57.*).",
    )
    registry.plan_resource(
        "Appointment",
        [r.READ, r.SEARCH_TYPE],
        search_params=[
            _patient_param("Appointment-patient"),
            SearchParam("date", SearchParamType.DATE, f"{_SPEC}Appointment-date"),
        ],
        documentation="Follow-up visits as the platform schedules them.",
    )
    registry.plan_resource("CarePlan", [r.READ, r.SEARCH_TYPE], search_params=[_patient_param()])
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
