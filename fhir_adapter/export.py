"""Bulk Data export (FHIR Bulk Data Access IG 2.0.0): the kick-off's parameters, the job
row, the status a client polls, the manifest, the files and cancelling. The work itself is
the worker's (`export_jobs.py`), reading through `export_streams.py`.

A treatment center's client exports its own center's patients and what is about them, by
every level: `[base]/$export` (the system, as this client sees it), `[base]/Patient/$export`
and `[base]/Group/[center id]/$export` (the center's Group) name the same patients. A job is
its client's alone: another client, of the same center or not, gets 404 for its status and
its files.
"""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from core.audit.service import record_event
from core.clock import Clock
from core.db import after_commit
from fhir_adapter.bearer import FhirCaller, scope_denied
from fhir_adapter.errors import FhirError, Issue
from fhir_adapter.export_streams import EXPORT_TYPES
from fhir_adapter.models import ExportJob, ExportStatus
from fhir_adapter.resources import instant
from fhir_adapter.scopes import Interaction

NDJSON = "application/fhir+ndjson"
# `_outputFormat` values that mean NDJSON (the IG's full type and its two short forms).
OUTPUT_FORMATS = frozenset({NDJSON, "application/ndjson", "ndjson"})
LEVELS = ("system", "patient", "group")
# Kick-off parameters of the IG this server does not implement: refused (400) unless the
# client sends `Prefer: handling=lenient`, then ignored.
UNSUPPORTED_PARAMETERS = frozenset(
    {
        "_elements",
        "_typeFilter",
        "_until",
        "patient",
        "includeAssociatedData",
        "organizeOutputBy",
        "allowPartialManifests",
    }
)
# Parameters every FHIR request may carry (read by content negotiation).
_GENERAL_PARAMETERS = frozenset({"_format", "_pretty"})
# A client may have this many exports waiting or running at once (then 429).
MAX_ACTIVE_PER_CLIENT = 3
# What a client polling a job that is not done is told to wait, in seconds.
RETRY_AFTER_SECONDS = 5
_ACTIVE = (ExportStatus.QUEUED, ExportStatus.RUNNING)
_INSTANT = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$", re.ASCII
)
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$", re.ASCII)
_FILE_NAME = re.compile(r"^[A-Za-z]{1,40}-\d{1,6}\.ndjson$", re.ASCII)


@dataclass(frozen=True)
class ExportRequest:
    """A kick-off, read and checked: what to export for whom."""

    level: str
    types: tuple[str, ...]
    since: datetime | None
    output_format: str
    request_url: str


def _refuse(diagnostics: str, *, code: str = "invalid", status: int = 400) -> FhirError:
    return FhirError.single(status, code, diagnostics)


def prefer_tokens(prefer: str | None) -> set[str]:
    """The preferences of a `Prefer` header (`respond-async, handling=lenient`), lowercase."""
    tokens: set[str] = set()
    for part in (prefer or "").replace(";", ",").split(","):
        token = "".join(part.split()).lower()
        if token:
            tokens.add(token)
    return tokens


def _since(values: list[str]) -> datetime | None:
    if not values:
        return None
    if len(values) > 1:
        raise _refuse("_since may be given once")
    text = values[0].strip()
    # An unencoded "+02:00" in a query string arrives as " 02:00".
    if re.fullmatch(r".*T.* \d{2}:\d{2}", text, re.ASCII):
        text = text[:-6] + "+" + text[-5:]
    if not _INSTANT.match(text):
        raise _refuse(
            f"_since={text[:40]} is not a FHIR instant: give a date, a time and a zone, "
            "e.g. 2026-11-27T15:00:00Z"
        )
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _refuse(f"_since={text[:40]} is not a real instant") from None


def _types(values: list[str], *, caller: FhirCaller, lenient: bool) -> tuple[str, ...]:
    """The types to export: those named in `_type` (repeated or comma-separated), or every
    type this server exports that the client may read."""
    named = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not named:
        readable = tuple(name for name in EXPORT_TYPES if may_export(caller, name))
        if not readable:
            raise scope_denied(caller, "Patient", Interaction.READ)
        return readable
    wanted: set[str] = set()
    for name in named:
        if name in EXPORT_TYPES:
            wanted.add(name)
        elif not lenient:
            raise _refuse(
                f"_type {name[:64]} is not exported here. This server exports "
                + ", ".join(EXPORT_TYPES),
                code="not-supported",
            )
    if not wanted:
        raise _refuse(
            "None of the types in _type is exported here. This server exports "
            + ", ".join(EXPORT_TYPES),
            code="not-supported",
        )
    for name in EXPORT_TYPES:
        if name in wanted and not may_export(caller, name):
            missing = Interaction.READ if not caller.allows(name, Interaction.READ) else None
            raise scope_denied(caller, name, missing or Interaction.SEARCH)
    return tuple(name for name in EXPORT_TYPES if name in wanted)


def may_export(caller: FhirCaller, resource_type: str) -> bool:
    """Exporting is reading and searching in bulk: the client needs `system/Type.rs` (or
    `system/*.rs`) for each type it exports."""
    return caller.allows(resource_type, Interaction.READ) and caller.allows(
        resource_type, Interaction.SEARCH
    )


def read_kickoff(
    *,
    level: str,
    query: Sequence[tuple[str, str]],
    prefer: str | None,
    caller: FhirCaller,
    request_url: str,
) -> ExportRequest:
    """Check a kick-off as the IG asks: `Prefer: respond-async` (400 without it), a known
    `_outputFormat`, `_type` of exported types the client may read (400 for others, 403
    without the scope), `_since` an instant; parameters of the IG this server does not
    implement are refused unless `Prefer: handling=lenient`."""
    assert level in LEVELS
    preferences = prefer_tokens(prefer)
    if "respond-async" not in preferences:
        raise _refuse(
            "A bulk export runs asynchronously: send the header Prefer: respond-async",
            code="required",
        )
    lenient = "handling=lenient" in preferences
    values: dict[str, list[str]] = {}
    for name, value in query:
        values.setdefault(name, []).append(value)
    for name in values:
        if name in ("_type", "_since", "_outputFormat") or name in _GENERAL_PARAMETERS:
            continue
        if not lenient:
            what = "is not supported" if name in UNSUPPORTED_PARAMETERS else "is not known"
            raise _refuse(
                f"The parameter {name[:40]} {what} by this server's $export (send Prefer: "
                "handling=lenient to have it ignored)",
                code="not-supported",
            )
    formats = values.get("_outputFormat", [])
    output_format = formats[0].strip() if formats else NDJSON
    if len(formats) > 1 or output_format not in OUTPUT_FORMATS:
        raise _refuse(
            f"_outputFormat={output_format[:60]} is not supported: this server writes NDJSON "
            "(application/fhir+ndjson)",
            code="not-supported",
        )
    return ExportRequest(
        level=level,
        types=_types(values.get("_type", []), caller=caller, lenient=lenient),
        since=_since(values.get("_since", [])),
        output_format=NDJSON,
        request_url=request_url,
    )


def start_export(
    session: Session, *, clock: Clock, caller: FhirCaller, request: ExportRequest
) -> ExportJob:
    """Queue an export for the caller's center (a worker runs it) and audit the kick-off.
    429 when the client already has MAX_ACTIVE_PER_CLIENT exports waiting or running."""
    active = session.scalar(
        select(func.count())
        .select_from(ExportJob)
        .where(ExportJob.client_pk == caller.client_pk, ExportJob.status.in_(_ACTIVE))
    )
    if (active or 0) >= MAX_ACTIVE_PER_CLIENT:
        raise FhirError.single(
            429,
            "throttled",
            f"This client has {active} exports waiting or running; wait for one to finish "
            "(or cancel one with DELETE on its status URL)",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS * 12)},
        )
    now = clock.now()
    job = ExportJob(
        job_id=secrets.token_urlsafe(24),
        client_pk=caller.client_pk,
        center_id=caller.center_id,
        level=request.level,
        request_url=request.request_url,
        types=list(request.types),
        since=request.since,
        output_format=request.output_format,
        status=ExportStatus.QUEUED,
        progress="queued",
        requested_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=caller.actor,
        action="fhir.export",
        target=f"$export/{job.job_id}",
        detail={
            "level": request.level,
            "types": list(request.types),
            "since": instant(request.since) if request.since else None,
        },
    )
    return job


def job_for_caller(
    session: Session, *, clock: Clock, caller: FhirCaller, job_id: str
) -> ExportJob | None:
    """The caller's own job of that id, unless it was cancelled or its files expired: None
    for anything else (another client's job reads as unknown)."""
    if not _JOB_ID.match(job_id):
        return None
    job = session.scalar(
        select(ExportJob).where(ExportJob.job_id == job_id, ExportJob.client_pk == caller.client_pk)
    )
    if job is None or job.status in (ExportStatus.CANCELLED, ExportStatus.EXPIRED):
        return None
    if job.status is ExportStatus.COMPLETE and _expired(job, clock.now()):
        return None  # the cleanup will delete the files; they are gone for the client now
    return job


def _expired(job: ExportJob, now: datetime) -> bool:
    return job.expires_at is not None and job.expires_at <= now


def job_folder(export_dir: Path, job_id: str) -> Path:
    """Where a job's files are written."""
    assert _JOB_ID.match(job_id)
    return export_dir / job_id


def manifest(job: ExportJob, *, base: str) -> dict[str, Any]:
    """The complete job's manifest (IG "Complete Status"): every file with its type, URL and
    number of resources; `error` is empty (a job that fails writes no files)."""
    assert job.transaction_time is not None
    return {
        "transactionTime": instant_ms(job.transaction_time),
        "request": job.request_url,
        "requiresAccessToken": True,
        "output": [
            {
                "type": output["type"],
                "url": f"{base}/$export-file/{job.job_id}/{output['file']}",
                "count": output["count"],
            }
            for output in job.outputs or []
        ],
        "error": [],
    }


def instant_ms(moment: datetime) -> str:
    """A FHIR instant with milliseconds (transactionTime is the next `_since`: keep it exact
    enough that nothing changed in the same second is skipped)."""
    return instant(moment).removesuffix("Z") + f".{moment.microsecond // 1000:03d}Z"


def progress_text(job: ExportJob) -> str:
    """X-Progress while a job is not done."""
    return job.progress or job.status.value


def failure(job: ExportJob) -> FhirError:
    """The 500 (with its OperationOutcome) that a failed job's status answers."""
    return FhirError(
        status=500,
        issues=[
            Issue(
                code="exception",
                severity="fatal",
                diagnostics=job.error or "The export failed on the server.",
            )
        ],
    )


def export_file(
    job: ExportJob, *, export_dir: Path, file_name: str
) -> tuple[Path, dict[str, Any]] | None:
    """The path and manifest entry of one of a complete job's files, or None."""
    if job.status is not ExportStatus.COMPLETE or not _FILE_NAME.match(file_name):
        return None
    for output in job.outputs or []:
        if output["file"] == file_name:
            path = job_folder(export_dir, job.job_id) / file_name
            return (path, output) if path.is_file() else None
    return None


def record_download(
    session: Session, *, clock: Clock, caller: FhirCaller, job: ExportJob, output: dict[str, Any]
) -> None:
    """Audit one file fetched: which job and file, how many resources (no PHI)."""
    record_event(
        session,
        clock=clock,
        actor=caller.actor,
        action="fhir.export.download",
        target=f"$export/{job.job_id}/{output['file']}"[:120],
        detail={"type": output["type"], "count": output["count"]},
    )


def cancel_export(
    session: Session, *, clock: Clock, caller: FhirCaller, job: ExportJob, export_dir: Path
) -> None:
    """DELETE on the status URL: the job is cancelled (a worker running it stops at its next
    chunk and removes what it wrote) and the files of a finished job are deleted once the
    cancel is committed. Its status and files answer 404 from then on."""
    now = clock.now()
    session.execute(
        update(ExportJob)
        .where(ExportJob.id == job.id, ExportJob.status.not_in(_GONE))
        .values(status=ExportStatus.CANCELLED, progress=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    record_event(
        session,
        clock=clock,
        actor=caller.actor,
        action="fhir.export.cancel",
        target=f"$export/{job.job_id}",
        detail={"was": job.status.value},
    )
    if job.status is not ExportStatus.RUNNING:  # the worker cleans up after itself
        folder = job_folder(export_dir, job.job_id)
        after_commit(session, lambda: shutil.rmtree(folder, ignore_errors=True))


_GONE = (ExportStatus.CANCELLED, ExportStatus.EXPIRED)
