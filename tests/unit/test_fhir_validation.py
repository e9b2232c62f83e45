"""Validation of FHIR resources as a treatment center sends them (fhir_adapter.validation):
every public example passes; each kind of fault is an error that names its element; broken
input of any shape gives issues, never an exception."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_adapter.errors import FhirError, Issue
from fhir_adapter.references import LocalReference
from fhir_adapter.rules import ResourceAt
from fhir_adapter.schema import resource_model, resource_types, type_spec
from fhir_adapter.structure import MAX_ISSUES
from fhir_adapter.validation import (
    DEFAULT_RULES,
    ValidationResult,
    parse_resource,
    validate_resource,
)
from tests.support.fhir_examples import Example, all_examples, example, example_files
from tests.support.fhir_strategies import JSON_KEYS, JSON_VALUES, broken_bundles, broken_examples

# The only warnings the public examples may draw, and why they are right:
ALLOWED_WARNINGS = (
    # Synthea's bulk NDJSON points at Practitioners, Locations and Organizations by
    # conditional reference, which FHIR resolves only inside a transaction.
    "Conditional references are resolved only inside a transaction or batch",
    # A Synthea transaction entry taken out of its Bundle points at the others by urn:uuid.
    "can only be resolved inside a Bundle",
)

HEMOGLOBIN = "Observation/uscore-lab-cbc-hemoglobin.json"
SYNTHEA = "Bundle/synthea-transaction-clemente-kreiger.json"


def errors_at(result: ValidationResult) -> dict[str, Issue]:
    """The error issues by their expression."""
    return {issue.expression[0]: issue for issue in result.errors if issue.expression}


def test_the_fixture_holds_every_shared_example() -> None:
    # The README's count: 60 files (3 of them NDJSON), 203 resources counting every Bundle
    # entry and NDJSON line.
    assert len(example_files()) + 3 == 60
    assert len(all_examples()) == 203


@pytest.mark.parametrize("example", all_examples(), ids=lambda example: example.name)
def test_every_public_example_is_valid(example: Example) -> None:
    result = validate_resource(example.copy())

    assert result.errors == (), [issue.as_json() for issue in result.errors]
    assert result.status == 200
    assert result.model is not None
    assert result.model.get_resource_type() == example.resource_type
    for warning in result.warnings:
        assert any(allowed in warning.diagnostics for allowed in ALLOWED_WARNINGS), warning


def test_a_valid_result_carries_the_model_and_an_all_ok_outcome() -> None:
    result = validate_resource(example("Patient/core-patient-example.json"))

    assert isinstance(result.model, Patient)
    assert result.model.birthDate is not None and result.model.birthDate.isoformat() == "1974-12-25"
    outcome = OperationOutcome.model_validate(result.outcome())
    assert [issue.severity for issue in outcome.issue] == ["information"]


# --- each kind of fault, and where it is ------------------------------------------------------


def _set(resource: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Set `a.b[0].c` in a resource (creating nothing: the path must exist but its last key)."""
    parts = [int(part) if part.isdigit() else part for part in re.findall(r"[^.\[\]]+", path)]
    target: Any = resource
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value
    return resource


MUTATIONS = [
    # (example, path to change, new value, expected expression, issue code)
    (
        "Observation/core-vitals-body-temperature.json",
        "status",
        "bogus",
        "Observation.status",
        "code-invalid",
    ),
    ("Patient/core-patient-example.json", "gender", "x", "Patient.gender", "code-invalid"),
    ("Patient/core-patient-example.json", "birthDate", "2020-13-45", "Patient.birthDate", "value"),
    ("Patient/core-patient-example.json", "birthDate", "2021-02-30", "Patient.birthDate", "value"),
    ("Patient/core-patient-example.json", "birthDate", 19741225, "Patient.birthDate", "structure"),
    ("Patient/core-patient-example.json", "active", "true", "Patient.active", "structure"),
    ("Patient/core-patient-example.json", "active", 1, "Patient.active", "structure"),
    ("Patient/core-patient-example.json", "gender", None, "Patient.gender", "structure"),
    ("Patient/core-patient-example.json", "name", [], "Patient.name", "structure"),
    (
        "Patient/core-patient-example.json",
        "name",
        {"family": "Chalmers"},
        "Patient.name",
        "structure",
    ),
    (
        "Patient/core-patient-example.json",
        "name[0].family",
        3,
        "Patient.name[0].family",
        "structure",
    ),
    (
        "Patient/core-patient-example.json",
        "name[0].family",
        "  ",
        "Patient.name[0].family",
        "value",
    ),
    (
        "Patient/core-patient-example.json",
        "telecom[1].system",
        "pigeon",
        "Patient.telecom[1].system",
        "code-invalid",
    ),
    (
        "Patient/core-patient-example.json",
        "telecom[1].use",
        "weekend",
        "Patient.telecom[1].use",
        "code-invalid",
    ),
    (
        "Patient/core-patient-example.json",
        "maritalStatus",
        {},
        "Patient.maritalStatus",
        "structure",
    ),
    (
        "Patient/core-patient-example.json",
        "favouriteColour",
        "blue",
        "Patient.favouriteColour",
        "structure",
    ),
    ("Patient/core-patient-example.json", "id", "has spaces", "Patient.id", "value"),
    (HEMOGLOBIN, "valueQuantity.value", "17", "Observation.valueQuantity.value", "structure"),
    (HEMOGLOBIN, "valueQuantity.value", "abc", "Observation.valueQuantity.value", "structure"),
    (
        HEMOGLOBIN,
        "valueQuantity.comparator",
        "~",
        "Observation.valueQuantity.comparator",
        "code-invalid",
    ),
    (HEMOGLOBIN, "valueString", "17 g/dL", "Observation.valueString", "structure"),
    (
        "Observation/core-vitals-blood-pressure.json",
        "component[0].valueQuantity.value",
        "107",
        "Observation.component[0].valueQuantity.value",
        "structure",
    ),
    (
        "Encounter/core-encounter-example.json",
        "status",
        "finished-ish",
        "Encounter.status",
        "code-invalid",
    ),
    (
        "Encounter/core-encounter-example.json",
        "subject.reference",
        "Practitioner/f201",
        "Encounter.subject.reference",
        "invalid",
    ),
    ("Procedure/core-procedure-example.json", "status", "done", "Procedure.status", "code-invalid"),
    (
        "Condition/uscore-condition-duodenal-ulcer-resolved.json",
        "clinicalStatus.coding[0].code",
        "cured",
        "Condition.clinicalStatus.coding[0].code",
        "code-invalid",
    ),
    (
        "Condition/uscore-condition-duodenal-ulcer-resolved.json",
        "verificationStatus.coding[0].system",
        "http://example.org",
        "Condition.verificationStatus.coding",
        "code-invalid",
    ),
    (
        "Appointment/core-appointment-example.json",
        "status",
        "maybe",
        "Appointment.status",
        "code-invalid",
    ),
    (
        "RelatedPerson/core-relatedperson-peter.json",
        "gender",
        "M",
        "RelatedPerson.gender",
        "code-invalid",
    ),
    (
        "Encounter/core-encounter-home-contained.json",
        "location[0].location.reference",
        "#nowhere",
        "Encounter.location[0].location.reference",
        "not-found",
    ),
    (
        "Bundle/core-bundle-transaction.json",
        "entry[0].request.method",
        "FETCH",
        "Bundle.entry[0].request.method",
        "code-invalid",
    ),
    ("Bundle/core-bundle-transaction.json", "type", "shipment", "Bundle.type", "code-invalid"),
    (
        SYNTHEA,
        "entry[4].resource.subject.reference",
        "urn:uuid:00000000-0000-4000-8000-000000000000",
        "Bundle.entry[4].resource.subject.reference",
        "not-found",
    ),
    (
        SYNTHEA,
        "entry[4].resource.status",
        "bogus",
        "Bundle.entry[4].resource.status",
        "code-invalid",
    ),
    (
        SYNTHEA,
        "entry[4].resource.valueQuantity.value",
        "168.8",
        "Bundle.entry[4].resource.valueQuantity.value",
        "structure",
    ),
    (
        SYNTHEA,
        "entry[3].resource.resourceType",
        "Visit",
        "Bundle.entry[3].resource.resourceType",
        "not-supported",
    ),
    (
        SYNTHEA,
        "entry[4].request.url",
        "Patient",
        "Bundle.entry[4].resource.resourceType",
        "invalid",
    ),
    (
        SYNTHEA,
        "entry[5].fullUrl",
        "urn:uuid:d78af07c-9cb9-4f31-9b11-c45a28f2eec8",
        "Bundle.entry[5].fullUrl",
        "invariant",
    ),
    (SYNTHEA, "entry[5].fullUrl", "urn:uuid:not-a-uuid", "Bundle.entry[5].fullUrl", "value"),
]


@pytest.mark.parametrize(
    ("name", "path", "value", "expression", "code"),
    MUTATIONS,
    ids=[f"{m[0].split('/')[1]}:{m[1]}={m[2]!r}" for m in MUTATIONS],
)
def test_a_fault_is_an_error_at_its_element(
    name: str, path: str, value: Any, expression: str, code: str
) -> None:
    result = validate_resource(_set(example(name), path, value))

    assert result.status == 400
    assert result.model is None
    found = errors_at(result)
    assert expression in found, [issue.as_json() for issue in result.issues]
    assert found[expression].code == code


@pytest.mark.parametrize(
    ("name", "element", "expression"),
    [
        ("Observation/core-vitals-body-temperature.json", "code", "Observation.code"),
        ("Observation/core-vitals-body-temperature.json", "status", "Observation.status"),
        ("Patient/core-patient-example.json", "resourceType", None),
        ("Bundle/core-bundle-transaction.json", "type", "Bundle.type"),
        (SYNTHEA, "entry[2].request", "Bundle.entry[2]"),
        (SYNTHEA, "entry[2].request.method", "Bundle.entry[2].request.method"),
    ],
)
def test_a_missing_required_element_is_named(
    name: str, element: str, expression: str | None
) -> None:
    resource = example(name)
    parent_path, _, key = element.rpartition(".")
    parent = resource if not parent_path else _get(resource, parent_path)
    if key.endswith("]"):
        key, index = key[:-1].split("[")
        del parent[key][int(index)]
    else:
        del parent[key]

    result = validate_resource(resource)

    assert result.status == 400
    if expression is None:
        assert [issue.code for issue in result.errors] == ["required"]
    else:
        assert errors_at(result)[expression].code == "required"


def _get(resource: dict[str, Any], path: str) -> Any:
    target: Any = resource
    for part in re.findall(r"[^.\[\]]+", path):
        target = target[int(part)] if part.isdigit() else target[part]
    return target


def test_two_values_of_one_choice_are_an_error() -> None:
    observation = example(HEMOGLOBIN)
    observation["valueString"] = "17 g/dL"

    result = validate_resource(observation)

    assert result.status == 400
    assert "Only one of value[x]" in errors_at(result)["Observation.valueString"].diagnostics
    # The model's own, vaguer report of the same fault is not repeated.
    assert len(result.errors) == 1


def test_a_primitive_with_only_extensions_satisfies_its_cardinality() -> None:
    observation = example("Observation/core-vitals-body-temperature.json")
    del observation["status"]
    observation["_status"] = {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
                "valueCode": "unknown",
            }
        ]
    }

    assert validate_resource(observation).errors == ()


def test_an_unknown_resource_type_inside_a_bundle_is_an_issue_not_a_crash() -> None:
    # fhir.resources raises a KeyError (not a validation error) on this shape.
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Nope"}}, {"resource": {"resourceType": 5}}],
    }

    result = validate_resource(bundle)

    assert result.status == 400
    assert errors_at(result)["Bundle.entry[0].resource.resourceType"].code == "not-supported"
    assert errors_at(result)["Bundle.entry[1].resource.resourceType"].code == "structure"


def test_a_shape_that_crashes_the_model_is_reported_by_the_walk_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # fhir.resources raises a TypeError (not a validation error) on a list where a url goes.
    caplog.set_level(logging.ERROR, logger="cgt_access.fhir")

    result = validate_resource({"resourceType": "Patient", "photo": [{"url": ["x"]}]})

    assert [(issue.expression, issue.code) for issue in result.issues] == [
        (("Patient.photo[0].url",), "structure")
    ]
    assert caplog.records == []  # expected, so not logged as a fault of ours


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ([], "structure"),
        ("Patient", "structure"),
        ({"gender": "male"}, "required"),
        ({"resourceType": "Citation"}, "not-supported"),  # R4B and R5, not R4
        ({"resourceType": "MedicinalProduct"}, "not-supported"),  # R4, but not in R4B
        ({"resourceType": "DomainResource"}, "not-supported"),
    ],
)
def test_what_is_not_an_r4_resource_is_refused_before_anything_else(data: Any, code: str) -> None:
    result = validate_resource(data)

    assert (result.status, [issue.code for issue in result.issues]) == (400, [code])


def test_the_type_the_url_names_is_the_type_accepted() -> None:
    result = validate_resource(example(HEMOGLOBIN), expected_type="Patient")

    assert result.status == 400
    assert "Expected a Patient" in result.errors[0].diagnostics


def test_nesting_deeper_than_any_resource_is_refused_without_recursing() -> None:
    extension: dict[str, Any] = {"url": "http://example.org/x", "valueString": "deep"}
    for _ in range(5000):
        extension = {"url": "http://example.org/x", "extension": [extension]}

    result = validate_resource({"resourceType": "Patient", "extension": [extension]})

    assert result.status == 400
    assert [issue.code for issue in result.errors] == ["too-costly"]


def test_the_outcome_does_not_echo_a_huge_input() -> None:
    huge = "x" * 100_000
    patient = {"resourceType": "Patient", huge: 1, "gender": huge}
    patient["managingOrganization"] = {"reference": f"urn:uuid:{huge}"}

    result = validate_resource(patient)

    assert len(result.errors) == 2 and len(result.warnings) == 1
    assert all(len(json.dumps(issue.as_json())) < 600 for issue in result.issues)


def test_a_flood_of_errors_is_cut_short() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {"resourceType": "Patient", "gender": "x"}}] * 1000,
    }

    result = validate_resource(bundle)

    assert result.status == 400
    assert len(result.errors) == MAX_ISSUES + 1
    assert result.errors[-1].code == "too-costly"


# --- Bundles ----------------------------------------------------------------------------------


def _transaction(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


PATIENT_URN = "urn:uuid:3f2b9c1e-5c1a-4f5e-9a7e-2d4b6c8e0f11"


def _patient_entry() -> dict[str, Any]:
    return {
        "fullUrl": PATIENT_URN,
        "resource": {"resourceType": "Patient", "gender": "female"},
        "request": {"method": "POST", "url": "Patient"},
    }


def _hemoglobin_entry(subject: str) -> dict[str, Any]:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "subject": {"reference": subject},
        "valueQuantity": {
            "value": 13.2,
            "unit": "g/dL",
            "system": "http://unitsofmeasure.org",
            "code": "g/dL",
        },
    }
    return {"resource": observation, "request": {"method": "POST", "url": "Observation"}}


def test_a_transaction_reference_to_an_entry_resolves() -> None:
    result = validate_resource(_transaction(_patient_entry(), _hemoglobin_entry(PATIENT_URN)))

    assert result.issues == ()


def test_a_dangling_urn_in_a_transaction_is_an_error() -> None:
    dangling = "urn:uuid:99999999-9999-4999-8999-999999999999"

    result = validate_resource(_transaction(_patient_entry(), _hemoglobin_entry(dangling)))

    issue = errors_at(result)["Bundle.entry[1].resource.subject.reference"]
    assert (result.status, issue.code) == (400, "not-found")
    assert dangling in issue.diagnostics


def test_a_reference_to_an_entry_of_the_wrong_type_is_an_error() -> None:
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": PATIENT_URN},
    }
    organization = {
        "fullUrl": PATIENT_URN,
        "resource": {"resourceType": "Organization", "name": "Not a patient"},
        "request": {"method": "POST", "url": "Organization"},
    }
    result = validate_resource(
        _transaction(
            organization, {"resource": encounter, "request": {"method": "POST", "url": "Encounter"}}
        )
    )

    issue = errors_at(result)["Bundle.entry[1].resource.subject.reference"]
    assert "Organization is not allowed here" in issue.diagnostics
    assert "Group or Patient" in issue.diagnostics


def test_entries_of_a_batch_cannot_point_at_each_other() -> None:
    bundle = _transaction(_patient_entry(), _hemoglobin_entry(PATIENT_URN))
    bundle["type"] = "batch"

    result = validate_resource(bundle)

    assert "batch" in errors_at(result)["Bundle.entry[1].resource.subject.reference"].diagnostics


@pytest.mark.parametrize(
    ("change", "expression", "diagnostics"),
    [
        ({"total": 2}, "Bundle.total", "bdl-1"),
        ({"entry[0].search": {"mode": "match"}}, "Bundle.entry[0].search", "bdl-2"),
        ({"entry[0].response": {"status": "201"}}, "Bundle.entry[0].response", "bdl-4"),
        (
            {"entry[0].fullUrl": "http://example.org/fhir/Patient/1/_history/2"},
            "Bundle.entry[0].fullUrl",
            "bdl-8",
        ),
        (
            {"entry[1].request": {"method": "GET", "url": "Observation/1"}},
            "Bundle.entry[1].resource",
            "GET entry carries no resource",
        ),
        (
            {
                "entry[0].request": {"method": "PUT", "url": "Patient/123"},
                "entry[0].resource.id": "456",
            },
            "Bundle.entry[0].resource.id",
            "must be 123",
        ),
    ],
)
def test_bundle_invariants(change: dict[str, Any], expression: str, diagnostics: str) -> None:
    bundle = _transaction(_patient_entry(), _hemoglobin_entry(PATIENT_URN))
    for path, value in change.items():
        _set(bundle, path, value)

    result = validate_resource(bundle)

    assert diagnostics in errors_at(result)[expression].diagnostics


# --- references outside the request: the caller's resolver ------------------------------------


def test_references_outside_the_request_go_to_the_resolver_all_at_once() -> None:
    asked: list[frozenset[LocalReference]] = []

    def resolve(references: frozenset[LocalReference]) -> set[LocalReference]:
        asked.append(references)
        return {LocalReference("Patient", "ours")}

    bundle = _transaction(
        _hemoglobin_entry("Patient/ours"),
        _hemoglobin_entry("Patient/theirs"),
        _hemoglobin_entry("http://testserver/fhir/Patient/theirs"),
        _hemoglobin_entry("https://elsewhere.example/fhir/Patient/1"),
    )

    result = validate_resource(bundle, resolve=resolve, local_base="http://testserver/fhir")

    assert asked == [
        frozenset({LocalReference("Patient", "ours"), LocalReference("Patient", "theirs")})
    ]
    assert result.status == 422  # valid FHIR, refused by this server's rules
    assert sorted(errors_at(result)) == [
        "Bundle.entry[1].resource.subject.reference",
        "Bundle.entry[2].resource.subject.reference",
    ]
    assert all(issue.code == "not-found" for issue in result.errors)


def test_without_a_resolver_references_outside_the_request_are_not_judged() -> None:
    assert validate_resource(_transaction(_hemoglobin_entry("Patient/unknown"))).issues == ()


def test_a_relative_reference_to_a_put_entry_resolves_in_the_bundle() -> None:
    put = {
        "resource": {"resourceType": "Patient", "id": "p1", "gender": "male"},
        "request": {"method": "PUT", "url": "Patient/p1"},
    }

    def nothing_is_ours(references: frozenset[LocalReference]) -> set[LocalReference]:
        return set()

    result = validate_resource(
        _transaction(put, _hemoglobin_entry("Patient/p1")), resolve=nothing_is_ours
    )

    assert result.issues == ()


def test_a_malformed_reference_is_an_error() -> None:
    result = validate_resource(_transaction(_hemoglobin_entry("the patient upstairs")))

    assert errors_at(result)["Bundle.entry[0].resource.subject.reference"].code == "invalid"


# --- units and the rules hook -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "expression"),
    [
        (
            {"value": 170, "unit": "g/L", "system": "http://unitsofmeasure.org", "code": "g/L"},
            "Observation.valueQuantity.code",
        ),
        ({"value": 17, "unit": "g/dL"}, "Observation.valueQuantity.system"),
        (
            {"value": 17, "system": "http://example.org/units", "code": "g/dL"},
            "Observation.valueQuantity.system",
        ),
    ],
)
def test_hemoglobin_must_be_in_ucum_g_per_dl(quantity: dict[str, Any], expression: str) -> None:
    observation = example(HEMOGLOBIN)
    observation["valueQuantity"] = quantity

    result = validate_resource(observation)

    assert result.status == 422
    assert errors_at(result)[expression].code == "business-rule"


def test_fetal_hemoglobin_is_a_percentage() -> None:
    observation = example(HEMOGLOBIN)
    observation["code"] = {"coding": [{"system": "http://loinc.org", "code": "4576-5"}]}
    observation["valueQuantity"] = {
        "value": 22.5,
        "unit": "%",
        "system": "http://unitsofmeasure.org",
        "code": "%",
    }
    assert validate_resource(observation).ok

    observation["valueQuantity"]["code"] = "g/dL"
    assert (
        "4576-5"
        in errors_at(validate_resource(observation))["Observation.valueQuantity.code"].diagnostics
    )

    del observation["valueQuantity"]
    observation["valueString"] = "22.5%"
    assert validate_resource(observation).status == 422


def test_a_measure_without_a_value_is_not_a_unit_error() -> None:
    observation = example(HEMOGLOBIN)
    del observation["valueQuantity"]
    observation["dataAbsentReason"] = {"text": "Sample clotted"}

    assert validate_resource(observation).ok


def test_rules_see_each_resource_where_it_sits_and_skip_broken_ones() -> None:
    seen: list[tuple[str, str, str | None]] = []

    def no_unknown_gender(resource: ResourceAt) -> Iterator[Issue]:
        seen.append((resource.expression, resource.resource_type, resource.full_url))
        if resource.data.get("gender") == "unknown":
            yield resource.issue("business-rule", "A center knows its patient's gender", "gender")

    broken = _patient_entry()
    broken["resource"]["birthDate"] = "yesterday"
    broken["fullUrl"] = "urn:uuid:3f2b9c1e-5c1a-4f5e-9a7e-2d4b6c8e0f12"
    unknown = _patient_entry()
    unknown["resource"]["gender"] = "unknown"

    result = validate_resource(
        _transaction(broken, unknown), rules={"Patient": [no_unknown_gender]}
    )

    assert seen == [("Bundle.entry[1].resource", "Patient", PATIENT_URN)]
    assert errors_at(result)["Bundle.entry[1].resource.gender"].code == "business-rule"
    assert result.status == 400  # the broken entry is a content error; content errors win


def test_the_platform_rules_are_the_default() -> None:
    assert set(DEFAULT_RULES) == {"Observation"}
    observation = example(HEMOGLOBIN)
    observation["valueQuantity"]["code"] = "mmol/L"

    assert validate_resource(observation, rules={}).ok


def test_parse_resource_gives_the_typed_model_or_refuses() -> None:
    observation = parse_resource(example(HEMOGLOBIN), Observation)
    assert observation.valueQuantity is not None and observation.valueQuantity.code == "g/dL"

    with pytest.raises(FhirError) as refused:
        parse_resource(example(HEMOGLOBIN), Patient)
    assert refused.value.status == 400

    wrong_unit = example(HEMOGLOBIN)
    wrong_unit["valueQuantity"]["code"] = "g/L"
    with pytest.raises(FhirError) as refused:
        parse_resource(wrong_unit, Observation)
    assert refused.value.status == 422
    assert refused.value.issues[0].expression == ("Observation.valueQuantity.code",)


# --- the schema and broken input of any shape --------------------------------------------------


def test_every_r4_resource_type_compiles_to_a_walkable_schema() -> None:
    seen: set[str] = set()
    pending = [type_spec(model) for name in resource_types() if (model := resource_model(name))]
    while pending:
        spec = pending.pop()
        if spec.name in seen:
            continue
        seen.add(spec.name)
        for element in spec.elements.values():
            if element.model is not None:
                pending.append(element.type_spec)
    assert {"Patient", "Observation", "Bundle", "Quantity", "Reference", "Extension"} <= seen
    assert len(resource_types()) > 120


def _check_never_raises(data: Any) -> None:
    result = validate_resource(data, resolve=lambda references: set())
    assert result.status in (200, 400, 422)
    if result.status != 200:
        assert result.errors and result.model is None
    OperationOutcome.model_validate(result.outcome())


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    data=JSON_VALUES
    | st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=6).map(
        lambda value: {"resourceType": "Patient", **value}
    )
)
def test_any_json_gives_issues_never_an_exception(data: Any) -> None:
    _check_never_raises(data)


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(resource=broken_examples())
def test_broken_examples_give_issues_never_an_exception(resource: dict[str, Any]) -> None:
    _check_never_raises(resource)


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(bundle=broken_bundles())
def test_broken_bundles_give_issues_never_an_exception(bundle: dict[str, Any]) -> None:
    _check_never_raises(bundle)


def _without_model(bundle: dict[str, Any]) -> None:
    """A Bundle judged without building its model (as a transaction is) draws exactly the
    issues and status of the full parse."""
    full = validate_resource(bundle)
    light = validate_resource(bundle, keep_model=False)
    assert (light.status, light.issues) == (full.status, full.issues)


@settings(
    max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(bundle=broken_bundles())
def test_a_bundle_judged_without_its_model_draws_the_same_issues(bundle: dict[str, Any]) -> None:
    _without_model(bundle)


@pytest.mark.parametrize(
    "entry",
    [
        {"fullUrl": 7},
        {"fullUrl": True},
        {"fullUrl": "urn:uuid:1", "request": {"method": "POST"}},
        {"fullUrl": "urn:uuid:1", "request": {"method": "POST", "url": 3}},
        {"fullUrl": "urn:uuid:1", "request": {"method": "POST", "url": "Patient"}, "x": 1},
        {"request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:2", "request": {"method": "POST", "url": "Patient"}},
    ],
)
def test_an_entry_envelope_is_judged_alike_without_the_model(entry: dict[str, Any]) -> None:
    patient = {"resourceType": "Patient", "gender": "female"}
    good = {
        "fullUrl": "urn:uuid:1",
        "resource": patient,
        "request": {"method": "POST", "url": "Patient"},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [good, {**entry, "resource": patient}, good],
    }
    _without_model(bundle)
    _without_model(example(SYNTHEA))
