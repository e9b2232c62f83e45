"""Reading the FHIR API: `GET /fhir/[type]/[id]` for every type the platform serves, the
caller's center's records only (anything else reads as 404), with `ETag` and
`Last-Modified`, audited with the client and the patient."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from coordination.followup.protocol import shipped_protocols
from core.web import ClockDep, SessionDep
from fhir_adapter.bearer import FhirCallerDep, record_fhir_event, scope_denied
from fhir_adapter.capability import Interaction as Capability
from fhir_adapter.errors import FhirError
from fhir_adapter.http import FormatDep, etag, http_date
from fhir_adapter.reads import READABLE_TYPES, patient_id_of_resource, read_resource
from fhir_adapter.schema import resource_types
from fhir_adapter.scopes import Interaction
from fhir_adapter.supported import CAPABILITIES

router = APIRouter()


def _not_found(resource_type: str, resource_id: int) -> FhirError:
    return FhirError.single(404, "not-found", f"{resource_type}/{resource_id} is not known here.")


@router.get("/{resource_type}/{resource_id:int}", name="fhir_read")
def read(
    resource_type: str,
    resource_id: int,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    caller: FhirCallerDep,
    fmt: FormatDep,
) -> Response:
    """Read one resource of the caller's center."""
    if resource_type not in resource_types():
        raise FhirError.single(
            404, "not-supported", f"'{resource_type[:64]}' is not an R4 resource type"
        )
    if resource_type not in READABLE_TYPES:
        raise FhirError.single(
            404,
            "not-supported",
            f"{resource_type} is not served here. This server serves "
            + ", ".join(READABLE_TYPES)
            + ".",
        )
    if not caller.allows(resource_type, Interaction.READ):
        raise scope_denied(caller, resource_type, Interaction.READ)
    if not 0 < resource_id < 2**31:  # larger ids overflow the database's integers
        raise _not_found(resource_type, resource_id)
    resource = read_resource(
        session,
        center_id=caller.center_id,
        resource_type=resource_type,
        local_id=resource_id,
        library=shipped_protocols(),
    )
    if resource is None:
        raise _not_found(resource_type, resource_id)
    record_fhir_event(
        session,
        clock=clock,
        caller=caller,
        interaction=Interaction.READ,
        resource_type=resource_type,
        resource_id=str(resource_id),
        patient_id=patient_id_of_resource(resource),
    )
    version = resource["meta"]["versionId"]
    wanted = request.headers.get("if-none-match")
    headers = {"ETag": etag(version)}
    if wanted is not None and wanted.strip() in (etag(version), f'"{version}"'):
        return Response(status_code=304, headers=headers)
    headers["Last-Modified"] = http_date(
        datetime.fromisoformat(resource["meta"]["lastUpdated"].replace("Z", "+00:00"))
    )
    return fmt.respond(resource, 200, headers)


for _type in READABLE_TYPES:
    CAPABILITIES.serve(_type, Capability.READ)
