"""The FHIR API's base routes under `/fhir`: the CapabilityStatement and `$validate`.

`router` is what the application includes. Every FHIR route hangs under it and gets content
negotiation first (406 before any work). Routes for treatment centers go on `secured`, whose
`dependencies` is the one place where authentication applies to all of them; only
`GET /fhir/metadata` is public, as FHIR requires. Resource handlers include their routers into
`secured` here, operations (`/Patient/$validate`) before instances (`/Patient/{id}`), since
an id never starts with "$".
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from core.web import ClockDep, request_context
from fhir_adapter import export_routes, read_routes, search_routes, write_routes
from fhir_adapter.bearer import fhir_caller
from fhir_adapter.errors import FhirError, Issue, operation_outcome
from fhir_adapter.http import FhirResponse, FormatDep, JsonBody, fhir_base_url, negotiate
from fhir_adapter.schema import resource_types
from fhir_adapter.supported import CAPABILITIES
from fhir_adapter.validation import validate_resource

public = APIRouter()
# SMART backend services: the authentication dependency goes here, once, for every route a
# treatment center calls.
secured = APIRouter(dependencies=[Depends(fhir_caller)])

_VALIDATE_MODES = frozenset({"create", "update"})


@public.get("/metadata", name="fhir_metadata")
def metadata(request: Request, fmt: FormatDep, clock: ClockDep) -> Response:
    """The CapabilityStatement of what this server serves (public, no token needed)."""
    settings = request_context(request).settings
    return fmt.respond(
        CAPABILITIES.statement(public_base_url=settings.public_base_url, date=clock.now())
    )


CAPABILITIES.serve_operation("validate")


@secured.post("/{resource_type}/$validate", name="fhir_validate")
def validate(resource_type: str, request: Request, fmt: FormatDep, body: JsonBody) -> Response:
    """`$validate` (R4 Resource-validate): the resource is checked as create or update
    would check it, nothing is stored. The body is the resource itself or a Parameters with
    `resource` (and optionally `mode`, `profile`). Answers 200 with the OperationOutcome, valid
    or not (issues of severity error mean invalid); 400 when the body is not a resource of the
    type in the URL."""
    if resource_type not in resource_types():
        raise FhirError.single(
            404, "not-supported", f"'{resource_type[:64]}' is not an R4 resource type"
        )
    resource, mode, profile = _validate_arguments(resource_type, body, request)
    if mode is not None and mode not in _VALIDATE_MODES:
        raise FhirError.single(
            400,
            "not-supported",
            f"mode={mode[:20]} is not supported: use create or update (this server does not "
            "delete resources)",
        )
    if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
        found = resource.get("resourceType") if isinstance(resource, dict) else None
        raise FhirError.single(
            400,
            "invalid",
            f"The body must be a {resource_type} resource (or a Parameters carrying one), "
            f"not {found if isinstance(found, str) else 'this'}"[:200],
        )
    base = fhir_base_url(request_context(request).settings.public_base_url)
    result = validate_resource(resource, expected_type=resource_type, local_base=base)
    issues = list(result.issues)
    if mode == "update" and "id" not in resource:
        issues.append(
            Issue(
                code="required",
                diagnostics="An update carries the resource's id",
                expression=(f"{resource_type}.id",),
            )
        )
    if profile is not None and profile != _base_profile(resource_type):
        issues.append(
            Issue(
                code="not-supported",
                diagnostics=(
                    f"Profile {profile[:200]} was not checked: the resource was validated "
                    "against FHIR R4 and this server's rules"
                ),
                severity="warning",
            )
        )
    return fmt.respond(operation_outcome(issues))


def _validate_arguments(
    resource_type: str, body: Any, request: Request
) -> tuple[Any, str | None, str | None]:
    """The resource, mode and profile of a $validate call, from a Parameters body or the
    query string."""
    mode = request.query_params.get("mode")
    profile = request.query_params.get("profile")
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return body, mode, profile
    parameters = body.get("parameter")
    named: dict[str, dict[str, Any]] = {}
    for parameter in parameters if isinstance(parameters, list) else ():
        if isinstance(parameter, dict) and isinstance(parameter.get("name"), str):
            named.setdefault(parameter["name"], parameter)
    wrapped = named.get("resource", {}).get("resource")
    if resource_type == "Parameters" and not (
        isinstance(wrapped, dict) and wrapped.get("resourceType") == "Parameters"
    ):
        return body, mode, profile  # a Parameters resource to validate, not a wrapper
    if "resource" not in named:
        raise FhirError.single(
            400,
            "required",
            f"Put the {resource_type} to validate in a parameter named 'resource'",
            expression=("Parameters.parameter",),
        )
    mode_value = named.get("mode", {}).get("valueCode")
    profile_value = named.get("profile", {}).get("valueUri") or named.get("profile", {}).get(
        "valueCanonical"
    )
    return (
        wrapped,
        mode_value if isinstance(mode_value, str) else mode,
        profile_value if isinstance(profile_value, str) else profile,
    )


def _base_profile(resource_type: str) -> str:
    return f"http://hl7.org/fhir/StructureDefinition/{resource_type}"


# The resource handlers' routes hang on `secured` (before it is included below: FastAPI copies
# a router's routes when it is included). Bulk export first: `/$export` and `/Patient/$export`
# must not be taken for a type or an id by a route that matches any word there.
secured.include_router(export_routes.router)
secured.include_router(write_routes.router)
# Searches before reads: `GET /fhir/Patient/1/$everything` is no read (and `GET /fhir/[type]`
# never clashes with `GET /fhir/[type]/[id]`).
secured.include_router(search_routes.router)
secured.include_router(read_routes.router)

router = APIRouter(
    prefix="/fhir", dependencies=[Depends(negotiate)], default_response_class=FhirResponse
)
router.include_router(public)
router.include_router(secured)
router.add_api_route(
    "",
    write_routes.post_bundle,
    methods=["POST"],
    name="fhir_bundle",
    dependencies=[Depends(fhir_caller)],
)
