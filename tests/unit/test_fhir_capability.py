"""The capability registry (what metadata publishes comes from what handlers serve) and the
HTTP helpers of the FHIR API (JSON writing, ETag, Last-Modified, Location)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from fhir_adapter.capability import CapabilityRegistry, Interaction, SystemInteraction
from fhir_adapter.http import (
    FhirResponse,
    dumps,
    etag,
    http_date,
    version_from_etag,
    version_headers,
)
from fhir_adapter.supported import CAPABILITIES, seeded_registry
from fhir_adapter.validation import validate_resource

WHEN = datetime(2026, 11, 27, 15, 0, tzinfo=UTC)


def statement(registry: CapabilityRegistry) -> dict[str, Any]:
    body = registry.statement(public_base_url="https://followup.example.org/", date=WHEN)
    CapabilityStatement.model_validate(body)
    assert validate_resource(body).errors == ()
    return body


def resources(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["type"]: entry for entry in body["rest"][0].get("resource", [])}


def test_a_plan_without_handlers_publishes_no_resource() -> None:
    body = statement(seeded_registry())

    rest = body["rest"][0]
    assert "resource" not in rest and "interaction" not in rest
    assert body["implementation"]["url"] == "https://followup.example.org/fhir"
    assert rest["security"]["extension"][0]["extension"][0]["valueUri"] == (
        "https://followup.example.org/auth/token"
    )


def test_what_a_handler_serves_is_published_and_nothing_else() -> None:
    registry = seeded_registry()
    registry.serve(
        "Patient",
        Interaction.READ,
        Interaction.SEARCH_TYPE,
        Interaction.CONDITIONAL_CREATE,
        search_params=["identifier", "birthdate"],
    )
    registry.serve_system(SystemInteraction.TRANSACTION)

    body = statement(registry)

    patient = resources(body)["Patient"]
    assert [item["code"] for item in patient["interaction"]] == ["read", "search-type"]
    assert patient["conditionalCreate"] is True and "conditionalUpdate" not in patient
    assert [(param["name"], param["type"]) for param in patient["searchParam"]] == [
        ("identifier", "token"),
        ("birthdate", "date"),
    ]
    assert patient["searchParam"][1]["definition"] == (
        "http://hl7.org/fhir/SearchParameter/individual-birthdate"
    )
    assert set(resources(body)) == {"Patient"}
    assert body["rest"][0]["interaction"] == [{"code": "transaction"}]
    assert "Patient read" not in registry.planned_not_served()
    assert "Patient update" in registry.planned_not_served()
    assert "system batch" in registry.planned_not_served()


def test_a_type_level_operation_is_listed_on_every_planned_type() -> None:
    registry = seeded_registry()
    registry.serve_operation("validate")
    registry.serve_operation("export", "Group")
    registry.serve_operation("export")

    body = statement(registry)

    listed = resources(body)
    assert set(listed) == {
        "Patient", "Observation", "RelatedPerson", "Procedure", "Encounter", "Condition",
        "Appointment", "CarePlan", "Group", "MedicationAdministration", "QuestionnaireResponse",
    }  # fmt: skip
    assert [op["name"] for op in listed["Group"]["operation"]] == ["export", "validate"]
    assert listed["Group"]["operation"][0]["definition"] == (
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
    )
    assert [op["name"] for op in listed["Patient"]["operation"]] == ["validate"]
    assert [
        (operation["name"], operation["definition"]) for operation in body["rest"][0]["operation"]
    ] == [("export", "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export")]
    routes = {(route.method, route.path) for route in registry.served_routes()}
    assert ("POST", "/fhir/Patient/$validate") in routes
    assert ("GET", "/fhir/Group/12345/$export") in routes
    assert ("GET", "/fhir/$export") in routes


def test_the_whole_plan_served_is_a_valid_statement() -> None:
    registry = seeded_registry()
    for missing in registry.planned_not_served():
        subject, _, what = missing.partition(" ")
        if subject == "system":
            registry.serve_system(SystemInteraction(what))
        elif subject.startswith("$"):
            where = what.removeprefix("on ")
            registry.serve_operation(
                subject[1:], None if where in ("system", "every type") else where
            )
        else:
            registry.serve(subject, Interaction(what))

    body = statement(registry)

    assert registry.planned_not_served() == []
    assert len(resources(body)) == 11
    assert {item["code"] for item in body["rest"][0]["interaction"]} == {"transaction", "batch"}


@pytest.mark.parametrize(
    "serve",
    [
        lambda registry: registry.serve("Medication", Interaction.READ),
        lambda registry: registry.serve("Appointment", Interaction.CREATE),
        lambda registry: registry.serve(
            "Patient", Interaction.SEARCH_TYPE, search_params=["phone"]
        ),
        lambda registry: registry.serve_operation("everything", "Group"),
        lambda registry: registry.serve_system(SystemInteraction.HISTORY_SYSTEM),
    ],
)
def test_serving_what_is_not_planned_fails_at_import(serve: Any) -> None:
    with pytest.raises(ValueError, match="plan"):
        serve(seeded_registry())


def test_the_application_registry_serves_validate() -> None:
    import fhir_adapter.routes  # noqa: F401  (the handlers declare what they serve on import)

    assert ("POST", "/fhir/Observation/$validate") in {
        (route.method, route.path) for route in CAPABILITIES.served_routes()
    }


# --- HTTP helpers ---------------------------------------------------------------------------------


def test_json_keeps_a_decimal_as_written() -> None:
    written = dumps({"valueQuantity": {"value": Decimal("12.50"), "code": "g/dL"}})

    assert written == b'{"valueQuantity":{"value":12.50,"code":"g/dL"}}'
    with pytest.raises(TypeError):
        dumps({"value": Decimal("NaN")})


def test_a_fhir_response_is_fhir_json() -> None:
    response = FhirResponse({"resourceType": "Patient", "id": "1"}, 201, {"ETag": etag(1)})

    assert response.status_code == 201
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    assert json.loads(bytes(response.body)) == {"resourceType": "Patient", "id": "1"}
    assert FhirResponse(b'{"already":"serialised"}').body == b'{"already":"serialised"}'


@pytest.mark.parametrize(
    ("header", "version"),
    [
        ('W/"3"', "3"),
        ('"3"', "3"),
        (' W/"abc-1" ', "abc-1"),
        ("3", None),
        ('W/""', None),
        ('W/"a"b"', None),
    ],
)
def test_if_match_gives_the_version(header: str, version: str | None) -> None:
    assert version_from_etag(header) == version


def test_version_headers() -> None:
    baltimore = timezone(timedelta(hours=-5))

    headers = version_headers(
        base="https://followup.example.org/fhir",
        resource_type="Patient",
        resource_id="123",
        version_id=2,
        last_updated=datetime(2026, 11, 27, 10, 0, tzinfo=baltimore),
    )

    assert headers == {
        "Location": "https://followup.example.org/fhir/Patient/123/_history/2",
        "ETag": 'W/"2"',
        "Last-Modified": "Fri, 27 Nov 2026 15:00:00 GMT",
    }
    with pytest.raises(ValueError):
        http_date(datetime(2026, 11, 27, 15, 0))  # a naive time has no zone
