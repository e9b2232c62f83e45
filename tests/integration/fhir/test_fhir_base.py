"""The FHIR base at /fhir as a treatment center's system meets it: the CapabilityStatement,
JSON only, every failure an OperationOutcome with its status (never HTML, never a bare 500),
and $validate, which answers for every public example and stores nothing."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import fastapi.routing
import httpx
import hypothesis
import pytest
from fastapi import FastAPI, Query
from fastapi.testclient import TestClient
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from starlette.routing import Match

from core.clock import FrozenClock
from core.models import Observation, Patient
from fhir_adapter import http as fhir_http
from fhir_adapter.capability import Route
from fhir_adapter.errors import FhirError
from fhir_adapter.schema import resource_types
from fhir_adapter.supported import CAPABILITIES
from fhir_adapter.validation import validate_resource
from tests.conftest import Database
from tests.support.fhir_examples import all_examples, example
from tests.support.fhir_strategies import JSON_VALUES, broken_bundles, broken_examples
from tests.support.smart import CenterSystem, register

FHIR_JSON = {"Content-Type": "application/fhir+json"}
FHIR_CONTENT_TYPE = "application/fhir+json; charset=utf-8"
HEMOGLOBIN = "Observation/uscore-lab-cbc-hemoglobin.json"


@pytest.fixture(scope="module")
def center() -> CenterSystem:
    """One RSA key for the module's tests (making one takes a while; each test's database
    registers it afresh)."""
    return CenterSystem.generate("RS384")


@pytest.fixture
def client(
    app: FastAPI, db: Database, clock: FrozenClock, center: CenterSystem
) -> Iterator[TestClient]:
    """A treatment center's system with a token for every type: `$validate` and the other
    routes a center calls need one (metadata does not)."""
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as http:
        register(db, clock, center=center, scopes="system/*.cruds")
        token = center.token(http, clock, scope="system/*.cruds")
        http.headers["Authorization"] = f"Bearer {token}"
        yield http


def outcome_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response's OperationOutcome, after checking what every FHIR answer must be."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == FHIR_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    OperationOutcome.model_validate(body)
    return body


def errors_by_expression(outcome: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        expression: issue
        for issue in outcome["issue"]
        if issue["severity"] in ("error", "fatal")
        for expression in issue.get("expression", [])
    }


def validate(client: TestClient, resource: Any, resource_type: str | None = None) -> httpx.Response:
    kind = resource_type or resource["resourceType"]
    response: httpx.Response = client.post(
        f"/fhir/{kind}/$validate", content=json.dumps(resource), headers=FHIR_JSON
    )
    return response


# --- the CapabilityStatement -------------------------------------------------------------------


def test_metadata_is_a_valid_r4_capability_statement(client: TestClient) -> None:
    response = client.get("/fhir/metadata")

    assert response.status_code == 200
    assert response.headers["content-type"] == FHIR_CONTENT_TYPE
    body = response.json()
    statement = CapabilityStatement.model_validate(body)
    assert validate_resource(body).errors == ()
    assert (statement.fhirVersion, statement.kind, statement.format) == (
        "4.0.1",
        "instance",
        ["json"],
    )
    assert statement.implementation is not None
    assert statement.implementation.url == "http://testserver/fhir"
    assert body["date"] == "2026-11-27T15:00:00+00:00"  # the application's clock


def test_metadata_names_the_smart_token_endpoint(client: TestClient) -> None:
    security = client.get("/fhir/metadata").json()["rest"][0]["security"]

    assert security["service"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
        "code": "SMART-on-FHIR",
        "display": "SMART-on-FHIR",
    }
    (oauth,) = security["extension"]
    assert oauth["url"] == "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    assert oauth["extension"] == [{"url": "token", "valueUri": "http://testserver/auth/token"}]


# What a client would send for each capability the statement lists (R4 http.html, Bulk Data).
_REQUESTS = {
    "read": ("GET", "/fhir/{type}/1"),
    "vread": ("GET", "/fhir/{type}/1/_history/1"),
    "update": ("PUT", "/fhir/{type}/1"),
    "patch": ("PATCH", "/fhir/{type}/1"),
    "delete": ("DELETE", "/fhir/{type}/1"),
    "history-instance": ("GET", "/fhir/{type}/1/_history"),
    "history-type": ("GET", "/fhir/{type}/_history"),
    "create": ("POST", "/fhir/{type}"),
    "search-type": ("GET", "/fhir/{type}"),
    "validate": ("POST", "/fhir/{type}/$validate"),
    "everything": ("GET", "/fhir/{type}/1/$everything"),
    # Bulk Data's two resource-level exports, told apart by their definitions.
    "patient-export": ("GET", "/fhir/{type}/$export"),
    "group-export": ("GET", "/fhir/{type}/1/$export"),
}
_BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
_SYSTEM_REQUESTS = {
    "transaction": ("POST", "/fhir"),
    "batch": ("POST", "/fhir"),
    "export": ("GET", "/fhir/$export"),
}


def test_everything_the_statement_lists_is_routed(client: TestClient, app: FastAPI) -> None:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    requests = []
    for entry in rest.get("resource", []):
        listed = [item["code"] for item in entry.get("interaction", [])]
        listed += [
            item["definition"].removeprefix(_BULK)
            if item["definition"].startswith(_BULK)
            else item["name"]
            for item in entry.get("operation", [])
        ]
        listed += [
            name
            for flag, name in (("conditionalCreate", "create"), ("conditionalUpdate", "update"))
            if entry.get(flag)
        ]
        for code in listed:
            method, path = _REQUESTS[code]
            requests.append(Route(method, path.format(type=entry["type"]), code))
    for code in [item["code"] for item in rest.get("interaction", [])] + [
        item["name"] for item in rest.get("operation", [])
    ]:
        method, path = _SYSTEM_REQUESTS[code]
        requests.append(Route(method, path, code))

    assert ("POST", "/fhir/Patient/$validate") in {(r.method, r.path) for r in requests}
    assert [request for request in requests if not _fully_matched(app, request)] == []


def test_what_is_planned_but_not_served_is_not_listed(client: TestClient) -> None:
    rest = client.get("/fhir/metadata").json()["rest"][0]
    listed = {
        f"{entry['type']} {item['code']}"
        for entry in rest.get("resource", [])
        for item in entry.get("interaction", [])
    }

    assert listed.isdisjoint(CAPABILITIES.planned_not_served())


def _scope(method: str, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }


def _fully_matched(app: FastAPI, route: Route) -> bool:
    return any(
        candidate.matches(_scope(route.method, route.path))[0] is Match.FULL
        for candidate in app.router.routes
    )


def test_every_served_capability_has_its_route(app: FastAPI) -> None:
    served = CAPABILITIES.served_routes()

    assert served, "at least $validate is served"
    missing = [route for route in served if not _fully_matched(app, route)]
    assert missing == []
    assert not _fully_matched(app, Route("GET", "/fhir/Patient/$validate", "not served"))


def _fhir_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every route under /fhir, included routers flattened."""
    found: list[tuple[str, str]] = []
    for context in fastapi.routing.iter_route_contexts(app.routes):
        if context.path is not None and context.path.startswith("/fhir"):
            found.extend((method, context.path) for method in context.methods or ())
    return found


def test_every_fhir_route_is_a_served_capability(app: FastAPI) -> None:
    served = CAPABILITIES.served_routes()
    routes = _fhir_routes(app)
    assert ("POST", "/fhir/{resource_type}/$validate") in routes  # the walker sees them

    undeclared = []
    for method, template in routes:
        pattern = re.compile(re.sub(r"\\\{[\w:]+\\\}", "[^/]+", re.escape(template)))
        # metadata and SMART's discovery document are no FHIR capabilities of their own, nor
        # are the status and file URLs of $export's async pattern (served with $export).
        discovery = template in (
            "/fhir/metadata",
            "/fhir/.well-known/smart-configuration",
            "/fhir/$export-status/{job_id}",
            "/fhir/$export-file/{job_id}/{file_name}",
        )
        if not discovery and not any(
            route.method == method and pattern.fullmatch(route.path) for route in served
        ):
            undeclared.append(f"{method} {template}")
    assert undeclared == []


# --- JSON only ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "accept"),
    [
        ("", None),
        ("", "application/fhir+json"),
        ("", "application/json"),
        ("", "application/fhir+json; fhirVersion=4.0"),
        ("", "*/*"),
        ("", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),  # a browser
        ("", "application/fhir+xml;q=0.9, application/fhir+json;q=0.5"),
        ("?_format=json", None),
        ("?_format=application/json", None),
        ("?_format=application/fhir%2Bjson", None),
        ("?_format=json", "application/fhir+xml"),  # _format wins over Accept
    ],
)
def test_json_is_served_when_asked_for(client: TestClient, query: str, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}

    response = client.get(f"/fhir/metadata{query}", headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == FHIR_CONTENT_TYPE
    assert response.json()["resourceType"] == "CapabilityStatement"


@pytest.mark.parametrize(
    ("query", "accept"),
    [
        ("?_format=xml", None),
        ("?_format=application/fhir%2Bxml", None),
        ("?_format=ttl", None),
        ("?_format=text/turtle", None),
        ("?_format=html", None),
        ("?_format=xml", "application/fhir+json"),  # _format wins over Accept
        ("", "application/fhir+xml"),
        ("", "application/xml"),
        ("", "text/turtle"),
        ("", "text/html"),
        ("", "application/fhir+json; fhirVersion=5.0"),
        ("", "application/fhir+json;q=0"),
    ],
)
def test_anything_but_json_is_406_in_json(
    client: TestClient, query: str, accept: str | None
) -> None:
    headers = {"Accept": accept} if accept else {}

    outcome = outcome_of(client.get(f"/fhir/metadata{query}", headers=headers), 406)

    assert outcome["issue"][0]["code"] == "not-supported"
    assert "JSON only" in outcome["issue"][0]["diagnostics"]


def test_pretty_printing_on_request(client: TestClient) -> None:
    compact = client.get("/fhir/metadata").text
    pretty = client.get("/fhir/metadata?_pretty=true").text

    assert "\n" not in compact
    assert pretty.startswith('{\n  "resourceType": "CapabilityStatement"')
    assert json.loads(pretty) == json.loads(compact)


# --- request bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/fhir+xml",
        "application/x-www-form-urlencoded",
        "application/fhir+json; charset=latin-1",
        "application/fhir+json; fhirVersion=5.0",
    ],
)
def test_a_body_that_is_not_fhir_json_is_415(client: TestClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}

    response = client.post(
        "/fhir/Patient/$validate", content=b'{"resourceType": "Patient"}', headers=headers
    )

    outcome = outcome_of(response, 415)
    assert outcome["issue"][0]["code"] == "not-supported"


def test_plain_application_json_is_accepted(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient/$validate",
        content=b'{"resourceType": "Patient"}',
        headers={"Content-Type": "application/json"},
    )

    assert outcome_of(response, 200)["issue"][0]["severity"] == "information"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"resourceType": "Patient",\n "gender": }', "line 2, column 12"),
        (b'{"resourceType": "Patient"', "line 1, column 27"),
        (b'{"resourceType": "Patient", "multipleBirthInteger": NaN}', "line 1, column"),
        (b"\xff\xfe{}", "line 1, column 1"),
    ],
)
def test_a_body_that_is_not_json_is_400_with_where(
    client: TestClient, body: bytes, where: str
) -> None:
    outcome = outcome_of(
        client.post("/fhir/Patient/$validate", content=body, headers=FHIR_JSON), 400
    )

    assert outcome["issue"][0]["code"] == "structure"
    assert where in outcome["issue"][0]["diagnostics"]


def test_an_empty_body_is_400(client: TestClient) -> None:
    outcome = outcome_of(
        client.post("/fhir/Patient/$validate", content=b"", headers=FHIR_JSON), 400
    )

    assert outcome["issue"][0]["code"] == "required"


def test_a_body_over_the_limit_is_413_declared_or_streamed(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fhir_http, "MAX_BODY_BYTES", 1000)
    big = json.dumps(
        {
            "resourceType": "Patient",
            "id": "x",
            "text": {"status": "generated", "div": "<div>" + "x" * 2000 + "</div>"},
        }
    ).encode()

    declared = client.post("/fhir/Patient/$validate", content=big, headers=FHIR_JSON)
    streamed = client.post(
        "/fhir/Patient/$validate", content=iter([big[:600], big[600:]]), headers=FHIR_JSON
    )

    assert "content-length" not in {key.lower() for key in streamed.request.headers}
    for response in (declared, streamed):
        assert outcome_of(response, 413)["issue"][0]["code"] == "too-long"


def test_a_compressed_body_is_415(client: TestClient) -> None:
    response = client.post(
        "/fhir/Patient/$validate",
        content=b"\x1f\x8b...",
        headers={**FHIR_JSON, "Content-Encoding": "gzip"},
    )

    outcome_of(response, 415)


# --- every failure is an OperationOutcome --------------------------------------------------------


def test_an_unknown_route_under_fhir_is_404(client: TestClient) -> None:
    outcome = outcome_of(client.get("/fhir/Patient/123/nothing-here"), 404)

    assert outcome["issue"][0]["code"] == "not-found"
    assert "/fhir/metadata" in outcome["issue"][0]["diagnostics"]


def test_an_unknown_resource_type_is_404_naming_it(client: TestClient) -> None:
    outcome = outcome_of(client.get("/fhir/Visit/1"), 404)

    assert "'Visit' is not an R4 resource type" in outcome["issue"][0]["diagnostics"]


def test_a_method_a_route_does_not_take_is_405(client: TestClient) -> None:
    response = client.delete("/fhir/metadata")

    outcome = outcome_of(response, 405)
    assert outcome["issue"][0]["code"] == "not-supported"
    assert response.headers["allow"] == "GET"


def test_pages_outside_fhir_keep_their_html_error_pages(client: TestClient) -> None:
    response = client.get("/no-such-page")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


@pytest.fixture
def trouble(app: FastAPI) -> FastAPI:
    """The application with routes under /fhir that fail in each way a handler can."""

    def refuse(status: int) -> None:
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else {}
        raise FhirError.single(status, "processing", f"refused with {status}", headers=headers)

    def crash() -> None:
        raise RuntimeError("patient Jane Doe, MRN 123: the disk is full")

    def typed(count: int = Query(...)) -> dict[str, int]:
        return {"count": count}

    app.add_api_route("/fhir/_test/refuse/{status}", refuse)
    app.add_api_route("/fhir/_test/crash", crash)
    app.add_api_route("/fhir/_test/typed", typed)
    return app


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 422])
def test_a_refusal_keeps_its_status_and_headers(trouble: FastAPI, status: int) -> None:
    with TestClient(trouble, raise_server_exceptions=False) as client:
        response = client.get(f"/fhir/_test/refuse/{status}")

    outcome = outcome_of(response, status)
    assert outcome["issue"][0]["diagnostics"] == f"refused with {status}"
    if status == 401:
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_a_crash_is_a_500_outcome_with_the_details_only_in_the_log(
    trouble: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="cgt_access.fhir")
    with TestClient(trouble, raise_server_exceptions=False) as client:
        response = client.get("/fhir/_test/crash")

    outcome = outcome_of(response, 500)
    issue = outcome["issue"][0]
    assert (issue["severity"], issue["code"]) == ("fatal", "exception")
    assert "Jane Doe" not in response.text and "disk" not in response.text
    incident = issue["diagnostics"].split("incident ")[1].split()[0]
    (record,) = [record for record in caplog.records if incident in record.getMessage()]
    assert record.exc_info is not None and "disk is full" in str(record.exc_info[1])


def test_a_malformed_query_is_400(trouble: FastAPI) -> None:
    with TestClient(trouble, raise_server_exceptions=False) as client:
        outcome = outcome_of(client.get("/fhir/_test/typed?count=many"), 400)

    assert "count" in outcome["issue"][0]["diagnostics"]


# --- $validate ------------------------------------------------------------------------------------


def test_every_public_example_passes_validate(client: TestClient) -> None:
    failures = {}
    for candidate in all_examples():
        outcome = outcome_of(validate(client, candidate.resource), 200)
        errors = [issue for issue in outcome["issue"] if issue["severity"] in ("error", "fatal")]
        if errors:
            failures[candidate.name] = errors
    assert failures == {}
    assert len(all_examples()) == 203


def test_validate_takes_the_resource_in_parameters(client: TestClient) -> None:
    observation = example(HEMOGLOBIN)
    observation["status"] = "bogus"
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": observation},
            {"name": "mode", "valueCode": "create"},
        ],
    }

    outcome = outcome_of(validate(client, parameters, "Observation"), 200)

    assert errors_by_expression(outcome)["Observation.status"]["code"] == "code-invalid"
    # At /Parameters/$validate, a Parameters that carries another type is itself the subject
    # (its nested Observation is still checked, at its own path).
    nested = errors_by_expression(outcome_of(validate(client, parameters), 200))
    assert list(nested) == ["Parameters.parameter[0].resource.status"]


def test_validate_for_an_update_needs_the_id(client: TestClient) -> None:
    patient = example("Patient/core-patient-example.json")
    del patient["id"]

    response = client.post(
        "/fhir/Patient/$validate?mode=update", content=json.dumps(patient), headers=FHIR_JSON
    )

    assert errors_by_expression(outcome_of(response, 200))["Patient.id"]["code"] == "required"


def test_validate_says_a_profile_was_not_checked(client: TestClient) -> None:
    profile = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"
    response = client.post(
        f"/fhir/Patient/$validate?profile={profile}",
        content=json.dumps(example("Patient/uscore-patient-example.json")),
        headers=FHIR_JSON,
    )

    (issue,) = outcome_of(response, 200)["issue"]
    assert issue["severity"] == "warning" and profile in issue["diagnostics"]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/fhir/Patient/$validate", example(HEMOGLOBIN), 400),  # another type
        ("/fhir/Patient/$validate", [1, 2], 400),  # not a resource
        ("/fhir/Patient/$validate", {"resourceType": "Parameters", "parameter": []}, 400),
        ("/fhir/Visit/$validate", {"resourceType": "Visit"}, 404),  # not an R4 type
        ("/fhir/Patient/$validate?mode=delete", example("Patient/core-patient-example.json"), 400),
    ],
)
def test_validate_refuses_what_is_not_a_resource_of_its_type(
    client: TestClient, path: str, body: Any, status: int
) -> None:
    outcome_of(client.post(path, content=json.dumps(body), headers=FHIR_JSON), status)


@pytest.mark.parametrize(
    ("name", "change", "expression"),
    [
        (
            "Observation/core-vitals-body-temperature.json",
            {"status": "bogus"},
            "Observation.status",
        ),
        ("Patient/core-patient-example.json", {"gender": "x"}, "Patient.gender"),
        ("Patient/core-patient-example.json", {"birthDate": "2020-13-45"}, "Patient.birthDate"),
        (
            "Patient/core-patient-example.json",
            {"favouriteColour": "blue"},
            "Patient.favouriteColour",
        ),
        (
            HEMOGLOBIN,
            {"valueQuantity": {"value": "17", "unit": "g/dL"}},
            "Observation.valueQuantity.value",
        ),
    ],
)
def test_validate_names_the_faulty_element(
    client: TestClient, name: str, change: dict[str, Any], expression: str
) -> None:
    resource = {**example(name), **change}

    outcome = outcome_of(validate(client, resource), 200)

    assert expression in errors_by_expression(outcome)


def test_validate_of_a_transaction_names_the_entry(client: TestClient) -> None:
    bundle = example("Bundle/synthea-transaction-clemente-kreiger.json")
    bundle["entry"][0]["request"]["method"] = "FETCH"
    bundle["entry"][4]["resource"]["subject"]["reference"] = (
        "urn:uuid:00000000-0000-4000-8000-000000000000"
    )

    errors = errors_by_expression(outcome_of(validate(client, bundle), 200))

    assert errors["Bundle.entry[0].request.method"]["code"] == "code-invalid"
    assert errors["Bundle.entry[4].resource.subject.reference"]["code"] == "not-found"


# --- broken input of any shape: an OperationOutcome, never a 500, nothing stored ---------------


def _stored(db: Database) -> tuple[int, int]:
    with db.factory() as session:
        return (
            session.scalar(select(func.count()).select_from(Patient)) or 0,
            session.scalar(select(func.count()).select_from(Observation)) or 0,
        )


@pytest.fixture
def nothing_stored(db: Database) -> Iterator[None]:
    before = _stored(db)
    yield
    assert _stored(db) == before


def _answers_like_the_library(client: TestClient, resource: Any, resource_type: str) -> None:
    response = validate(client, resource, resource_type)
    if response.status_code == 200:
        outcome = outcome_of(response, 200)
        library = validate_resource(resource, expected_type=resource_type)
        assert outcome["issue"] == library.outcome()["issue"]
    else:
        outcome_of(response, 400)


FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(resource=broken_examples())
@hypothesis.example(resource={"resourceType": "transaction", "id": "example", "status": "booked"})
def test_broken_resources_get_an_outcome(
    client: TestClient, nothing_stored: None, resource: dict[str, Any]
) -> None:
    # A broken resourceType is sent to Patient's $validate: in the URL it would only meet
    # the 404 for an unknown type (tested on its own above).
    resource_type = resource.get("resourceType")
    if not (isinstance(resource_type, str) and resource_type in resource_types()):
        resource_type = "Patient"
    _answers_like_the_library(client, resource, resource_type)


@FUZZ
@given(bundle=broken_bundles())
def test_broken_bundles_get_an_outcome(
    client: TestClient, nothing_stored: None, bundle: dict[str, Any]
) -> None:
    _answers_like_the_library(client, bundle, "Bundle")


@FUZZ
@given(
    body=st.binary(max_size=200) | JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    resource_type=st.sampled_from(["Patient", "Bundle", "Observation", "Nope", "patient"]),
    content_type=st.sampled_from(["application/fhir+json", "application/json", "text/plain"]),
)
def test_any_bytes_get_an_outcome(
    client: TestClient, nothing_stored: None, body: bytes, resource_type: str, content_type: str
) -> None:
    response = client.post(
        f"/fhir/{resource_type}/$validate", content=body, headers={"Content-Type": content_type}
    )

    assert response.status_code in (200, 400, 404, 415)
    outcome_of(response, response.status_code)
