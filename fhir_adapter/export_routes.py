"""Bulk Data export over HTTP (FHIR Bulk Data Access IG 2.0.0, the async pattern):

- kick-off: `GET [base]/$export`, `GET [base]/Patient/$export`, `GET [base]/Group/[id]/$export`
  with `Prefer: respond-async` → `202 Accepted`, `Content-Location: [base]/$export-status/[job]`;
- status: `GET [base]/$export-status/[job]` → `202` with `X-Progress` and `Retry-After` while
  it runs, `200` with the manifest when complete, `500` with an OperationOutcome if it failed;
- `DELETE [base]/$export-status/[job]` → `202`, the job cancelled and its files deleted;
- files: `GET [base]/$export-file/[job]/[file]` → the NDJSON, with the same client's token.

Each of a client's jobs is its own: anything else answers 404, as an unknown job does.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

from core.web import ClockDep, SessionDep, request_context
from fhir_adapter.bearer import FhirCaller, FhirCallerDep, scope_denied
from fhir_adapter.errors import FhirError, Issue, operation_outcome
from fhir_adapter.export import (
    NDJSON,
    RETRY_AFTER_SECONDS,
    cancel_export,
    export_file,
    failure,
    job_for_caller,
    manifest,
    may_export,
    progress_text,
    read_kickoff,
    record_download,
    start_export,
)
from fhir_adapter.http import FormatDep, fhir_base_url, http_date, serves_media_types
from fhir_adapter.models import ExportStatus
from fhir_adapter.scopes import Interaction
from fhir_adapter.supported import CAPABILITIES

router = APIRouter()


def _base(request: Request) -> str:
    return fhir_base_url(request_context(request).settings.public_base_url)


def _export_dir(request: Request) -> Path:
    return Path(request_context(request).settings.export_dir)


def _kick_off(
    level: str,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    caller: FhirCaller,
    fmt: FormatDep,
) -> Response:
    base = _base(request)
    query = request.url.query
    kickoff = read_kickoff(
        level=level,
        query=request.query_params.multi_items(),
        prefer=request.headers.get("prefer"),
        caller=caller,
        request_url=base + request.url.path.removeprefix("/fhir") + (f"?{query}" if query else ""),
    )
    job = start_export(session, clock=clock, caller=caller, request=kickoff)
    status_url = f"{base}/$export-status/{job.job_id}"
    return fmt.respond(
        operation_outcome(
            [
                Issue(
                    code="informational",
                    severity="information",
                    diagnostics=(
                        f"Export of {', '.join(kickoff.types)} queued: poll {status_url} "
                        "until it answers 200 with the manifest"
                    ),
                )
            ]
        ),
        202,
        {"Content-Location": status_url},
    )


@router.get("/$export", name="fhir_export")
def export_system(
    request: Request, session: SessionDep, clock: ClockDep, caller: FhirCallerDep, fmt: FormatDep
) -> Response:
    """Start an export of every patient the client may see (its center's) and what is about
    them."""
    return _kick_off("system", request, session, clock, caller, fmt)


@router.get("/Patient/$export", name="fhir_export_patients")
def export_patients(
    request: Request, session: SessionDep, clock: ClockDep, caller: FhirCallerDep, fmt: FormatDep
) -> Response:
    """Start an export of the client's center's patients and what is about them."""
    return _kick_off("patient", request, session, clock, caller, fmt)


@router.get("/Group/{group_id}/$export", name="fhir_export_group")
def export_group(
    group_id: str,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    caller: FhirCallerDep,
    fmt: FormatDep,
) -> Response:
    """Start an export of a Group's members: the client's center is `Group/[center id]`;
    any other Group is unknown to it."""
    if group_id != str(caller.center_id):
        raise FhirError.single(404, "not-found", f"Group/{group_id[:20]} is not known here.")
    return _kick_off("group", request, session, clock, caller, fmt)


def _unknown_job() -> FhirError:
    return FhirError.single(
        404,
        "not-found",
        "No such export: it is unknown, was cancelled, or its files expired.",
    )


@router.get("/$export-status/{job_id}", name="fhir_export_status")
def export_status(
    job_id: str, request: Request, session: SessionDep, clock: ClockDep, caller: FhirCallerDep
) -> Response:
    """Where an export stands: 202 while it runs, the manifest when complete, 500 if it
    failed."""
    job = job_for_caller(session, clock=clock, caller=caller, job_id=job_id)
    if job is None:
        raise _unknown_job()
    if job.status is ExportStatus.ERROR:
        raise failure(job)
    if job.status is not ExportStatus.COMPLETE:
        return Response(
            status_code=202,
            headers={"X-Progress": progress_text(job), "Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    assert job.expires_at is not None
    return Response(
        orjson.dumps(manifest(job, base=_base(request))),
        status_code=200,
        media_type="application/json",
        headers={"Expires": http_date(job.expires_at)},
    )


@router.delete("/$export-status/{job_id}", name="fhir_export_cancel")
def export_cancel(
    job_id: str,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    caller: FhirCallerDep,
    fmt: FormatDep,
) -> Response:
    """Cancel an export (or say its files are no longer needed): 202, and its status and
    files answer 404 from then on."""
    job = job_for_caller(session, clock=clock, caller=caller, job_id=job_id)
    if job is None:
        raise _unknown_job()
    cancel_export(session, clock=clock, caller=caller, job=job, export_dir=_export_dir(request))
    return fmt.respond(
        operation_outcome(
            [
                Issue(
                    code="informational",
                    severity="information",
                    diagnostics="The export was cancelled and its files deleted.",
                )
            ]
        ),
        202,
    )


@router.get("/$export-file/{job_id}/{file_name}", name="fhir_export_file")
@serves_media_types(NDJSON, "application/ndjson")
def export_file_download(
    job_id: str,
    file_name: str,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    caller: FhirCallerDep,
) -> Response:
    """One NDJSON file of a complete export, streamed from disk; audited."""
    job = job_for_caller(session, clock=clock, caller=caller, job_id=job_id)
    found = (
        export_file(job, export_dir=_export_dir(request), file_name=file_name)
        if job is not None
        else None
    )
    if job is None or found is None:
        raise FhirError.single(404, "not-found", "No such export file (or it expired).")
    path, output = found
    # The token that fetches must still allow what the export holds.
    if not may_export(caller, output["type"]):
        raise scope_denied(caller, output["type"], Interaction.READ)
    record_download(session, clock=clock, caller=caller, job=job, output=output)
    return FileResponse(path, media_type=NDJSON, filename=None)


CAPABILITIES.serve_operation("export")
CAPABILITIES.serve_operation("export", "Patient")
CAPABILITIES.serve_operation("export", "Group")
