"""Writing to the FHIR API: transaction and batch Bundles (`POST /fhir`), create
(`POST /fhir/[type]`, with `If-None-Exist`), update (`PUT /fhir/[type]/[id]`, with `If-Match`)
and conditional update (`PUT /fhir/[type]?identifier=system|value`). Thin: each reads the
request, checks the token's scope, calls `writes` / `transactions`, audits with the client,
answers with the resource's location, version and last change."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from coordination.followup.protocol import shipped_protocols
from core.batch import collector_paused
from core.web import ClockDep, SessionDep, request_context
from fhir_adapter.bearer import (
    FhirCaller,
    FhirCallerDep,
    record_fhir_event,
    record_fhir_events,
    scope_denied,
)
from fhir_adapter.capability import Interaction as Capability
from fhir_adapter.capability import SystemInteraction
from fhir_adapter.errors import FhirError
from fhir_adapter.http import FormatDep, JsonBody, fhir_base_url, version_headers
from fhir_adapter.mapping.common import WriteContext, Written, refuse_control_characters
from fhir_adapter.scopes import Interaction
from fhir_adapter.supported import CAPABILITIES
from fhir_adapter.transactions import BoundContext, process_bundle, write_context
from fhir_adapter.validation import validate_resource
from fhir_adapter.writes import (
    WRITABLE_TYPES,
    conditional_update,
    create_resource,
    handler_for,
    update_resource,
)

router = APIRouter()


def _base(request: Request) -> str:
    return fhir_base_url(request_context(request).settings.public_base_url)


def _context(session: SessionDep, clock: ClockDep, caller: FhirCaller) -> BoundContext:
    return write_context(session, clock=clock, caller=caller, library=shipped_protocols())


def _checked(body: Any, resource_type: str, request: Request, context: BoundContext) -> None:
    """The resource as create or update checks it: structure, bindings, references (to the
    client's own records only, or to types the platform does not keep), units; refused
    with every issue."""

    def resolve(asked: frozenset[Any]) -> list[Any]:
        return [ref for ref in asked if context.references.may_point_at(ref)]

    result = validate_resource(
        body, expected_type=resource_type, resolve=resolve, local_base=_base(request)
    )
    result.raise_if_invalid()
    refuse_control_characters(body, resource_type)


def _answer(request: Request, fmt: FormatDep, written: Written, body: dict[str, Any]) -> Response:
    headers = version_headers(
        base=_base(request),
        resource_type=written.resource_type,
        resource_id=str(written.local_id),
        version_id=written.version_id,
        last_updated=written.last_updated,
    )
    prefer = request.headers.get("prefer", "")
    if "return=minimal" in prefer:
        content: dict[str, Any] | bytes = b""
    elif "return=OperationOutcome" in prefer or written.warnings:
        content = {
            "resourceType": "OperationOutcome",
            "issue": [issue.as_json() for issue in written.warnings]
            or [{"severity": "information", "code": "informational", "diagnostics": "All OK"}],
        }
    else:
        content = {
            **body,
            "id": str(written.local_id),
            "meta": {
                "versionId": written.version_id,
                "lastUpdated": written.last_updated.isoformat(),
            },
        }
    return fmt.respond(content, 201 if written.created else 200, headers)


def _audit(
    context: WriteContext, caller: FhirCaller, written: Written, interaction: Interaction
) -> None:
    record_fhir_event(
        context.session,
        clock=context.clock,
        caller=caller,
        interaction=interaction,
        resource_type=written.resource_type,
        resource_id=str(written.local_id),
        patient_id=written.patient_id,
    )


def _require(caller: FhirCaller, resource_type: str, interaction: Interaction) -> None:
    handler_for(resource_type)
    if not caller.allows(resource_type, interaction):
        raise scope_denied(caller, resource_type, interaction)


def post_bundle(
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    caller: FhirCallerDep,
    fmt: FormatDep,
    body: JsonBody,
) -> Response:
    """A transaction (all or nothing) or batch Bundle (`POST [base]`: added to the base
    router by `fhir_adapter.routes`, since a path cannot be empty here)."""
    with collector_paused():
        result = process_bundle(
            session,
            clock=clock,
            caller=caller,
            library=shipped_protocols(),
            bundle=body,
            base=_base(request),
        )
    record_fhir_events(
        session,
        clock=clock,
        caller=caller,
        written=(
            (
                Interaction.CREATE if written.created else Interaction.UPDATE,
                written.resource_type,
                str(written.local_id),
                written.patient_id,
            )
            for written in result.written
        ),
    )
    return fmt.respond(result.response)


@router.post("/{resource_type}", name="fhir_create")
def create(
    resource_type: str,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    caller: FhirCallerDep,
    fmt: FormatDep,
    body: JsonBody,
) -> Response:
    """Create (or, with `If-None-Exist: identifier=system|value`, create unless it exists).
    A resource the center sent before is not duplicated (see `writes`)."""
    _require(caller, resource_type, Interaction.CREATE)
    context = _context(session, clock, caller)
    _checked(body, resource_type, request, context)
    written = create_resource(
        context, body, if_none_exist=request.headers.get("if-none-exist") or None
    )
    _audit(context, caller, written, Interaction.CREATE)
    return _answer(request, fmt, written, body)


@router.put("/{resource_type}", name="fhir_conditional_update")
def conditional_put(
    resource_type: str,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    caller: FhirCallerDep,
    fmt: FormatDep,
    body: JsonBody,
) -> Response:
    """Conditional update by identifier: updates the center's record with that identifier,
    creates it when there is none."""
    _require(caller, resource_type, Interaction.UPDATE)
    query = "&".join(
        f"{key}={value}" for key, value in request.query_params.multi_items() if key[0] != "_"
    )
    if not query:
        raise FhirError.single(
            400, "invalid", f"PUT {resource_type} needs an id or ?identifier=system|value."
        )
    context = _context(session, clock, caller)
    _checked(body, resource_type, request, context)
    written = conditional_update(
        context, resource_type, query, body, if_match=request.headers.get("if-match")
    )
    _audit(context, caller, written, Interaction.UPDATE)
    return _answer(request, fmt, written, body)


@router.put("/{resource_type}/{resource_id:int}", name="fhir_update")
def update(
    resource_type: str,
    resource_id: int,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    caller: FhirCallerDep,
    fmt: FormatDep,
    body: JsonBody,
) -> Response:
    """Update by id (no update-as-create); `If-Match: W/"n"` must name the current version."""
    _require(caller, resource_type, Interaction.UPDATE)
    if not 0 < resource_id < 2**31:  # larger ids overflow the database's integers
        raise FhirError.single(404, "not-found", f"{resource_type}/{resource_id} is not known.")
    context = _context(session, clock, caller)
    _checked(body, resource_type, request, context)
    written = update_resource(
        context,
        resource_type,
        resource_id,
        body,
        if_match=request.headers.get("if-match"),
    )
    _audit(context, caller, written, Interaction.UPDATE)
    return _answer(request, fmt, written, body)


for _type in WRITABLE_TYPES:
    CAPABILITIES.serve(
        _type,
        Capability.CREATE,
        Capability.UPDATE,
        Capability.CONDITIONAL_CREATE,
        Capability.CONDITIONAL_UPDATE,
    )
CAPABILITIES.serve_system(SystemInteraction.TRANSACTION, SystemInteraction.BATCH)
