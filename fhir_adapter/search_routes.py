"""Searching the FHIR API: `GET /fhir/[type]?...`, `POST /fhir/[type]/_search` (the same
parameters form-encoded, so that identifiers stay out of URLs and logs) and
`GET /fhir/Patient/[id]/$everything`. Thin: each reads the request, checks the token's
scopes, runs `search` / `everything`, writes the searchset Bundle, and audits one
`fhir.search` event per patient whose data the page returns (the parameters' names, never
their values)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import Table, insert
from sqlalchemy.orm import Session
from starlette.convertors import Convertor, register_url_convertor

from coordination.followup.protocol import shipped_protocols
from core.audit.models import AuditEvent, AuditOutcome
from core.clock import Clock
from core.web import ClockDep, SessionDep, request_context
from fhir_adapter.bearer import FhirCaller, FhirCallerDep, patient_for_caller, scope_denied
from fhir_adapter.capability import Interaction as Capability
from fhir_adapter.errors import FhirError, Issue
from fhir_adapter.everything import (
    EVERYTHING_TYPES,
    everything_from_cursor,
    everything_page,
    everything_payload,
    everything_snapshot,
    left_out,
    parse_everything,
)
from fhir_adapter.http import FormatDep, fhir_base_url
from fhir_adapter.resources import JSON, instant
from fhir_adapter.schema import resource_types
from fhir_adapter.scopes import Interaction
from fhir_adapter.search import (
    CURSOR,
    INCLUDED_TYPE,
    Page,
    Position,
    SearchRequest,
    conditions,
    counted,
    cursor_payload,
    fetch_page,
    from_cursor,
    ignored_issues,
    include,
    parse_search,
    patient_of,
    prefers_strict,
    revinclude_source,
    take_snapshot,
)
from fhir_adapter.search_cursor import open_cursor, seal
from fhir_adapter.search_types import (
    REVINCLUDES,
    SEARCH_TYPES,
    SEARCHABLE,
    Render,
    unknown_type,
)
from fhir_adapter.supported import CAPABILITIES


class ResourceTypeConvertor(Convertor[str]):
    """A resource type in a path (`Patient`): so that `/fhir/$export` and other operations
    on the base never reach the search route, whatever order routers are included in."""

    regex = "[A-Z][A-Za-z]{0,63}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("fhir_type", ResourceTypeConvertor())

router = APIRouter()

# A form-encoded search body larger than this is no search.
_MAX_FORM_BYTES = 64 * 1024
_FORM = "application/x-www-form-urlencoded"
_TRANSPORT = frozenset({"_format", "_pretty"})


async def form_parameters(request: Request) -> list[tuple[str, str]]:
    """The parameters of `POST [type]/_search`: the URL's, then the form body's (R4: both
    count). 415 unless the body is form-encoded; 413 above 64 KB."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            raise FhirError.single(413, "too-long", "A search body is at most 64 KB")
    pairs = list(request.query_params.multi_items())
    if not body.strip():
        return pairs
    if kind != _FORM:
        raise FhirError.single(
            415,
            "not-supported",
            f"POST _search takes its parameters as {_FORM} (or in the URL)",
        )
    try:
        text = body.decode("utf-8")
        pairs += parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise FhirError.single(
            400, "invalid", "The search form is not valid UTF-8 form data"
        ) from None
    return pairs


FormParameters = Annotated[list[tuple[str, str]], Depends(form_parameters)]


def _base(request: Request) -> str:
    return fhir_base_url(request_context(request).settings.public_base_url)


def _secret(request: Request) -> str:
    return request_context(request).settings.secret


def _checked_type(resource_type: str) -> None:
    if resource_type not in resource_types():
        raise FhirError.single(
            404, "not-supported", f"'{resource_type[:64]}' is not an R4 resource type"
        )
    if resource_type not in SEARCH_TYPES:
        raise unknown_type(resource_type)


def _only_cursor(pairs: Sequence[tuple[str, str]]) -> str | None:
    """The cursor of a paging link; 400 when other search parameters come with it (the
    link carries its search: send it as given)."""
    cursors = [value for key, value in pairs if key == CURSOR]
    if not cursors:
        return None
    others = sorted({key for key, _ in pairs if key != CURSOR and key not in _TRANSPORT})
    if len(cursors) > 1 or others:
        raise FhirError.single(
            400,
            "invalid",
            "_cursor: a paging link carries its search; follow it as given, without other "
            "parameters"
            + (f" (found {', '.join(name[:40] for name in others[:5])})" if others else ""),
        )
    return cursors[0]


@router.get("/{resource_type:fhir_type}", name="fhir_search")
def search_get(
    resource_type: str,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    caller: FhirCallerDep,
    fmt: FormatDep,
) -> Response:
    """Search a type of the caller's center (`GET [base]/[type]?...`)."""
    pairs = list(request.query_params.multi_items())
    return fmt.respond(_search(resource_type, pairs, request, session, clock, caller))


@router.post("/{resource_type:fhir_type}/_search", name="fhir_search_post")
def search_post(
    resource_type: str,
    request: Request,
    pairs: FormParameters,
    session: SessionDep,
    clock: ClockDep,
    caller: FhirCallerDep,
    fmt: FormatDep,
) -> Response:
    """Search with the parameters in a form body (`POST [base]/[type]/_search`)."""
    return fmt.respond(_search(resource_type, pairs, request, session, clock, caller))


def _search(
    resource_type: str,
    pairs: list[tuple[str, str]],
    request: Request,
    session: Session,
    clock: Clock,
    caller: FhirCaller,
) -> JSON:
    _checked_type(resource_type)
    if not caller.allows(resource_type, Interaction.SEARCH):
        raise scope_denied(caller, resource_type, Interaction.SEARCH)
    spec = SEARCH_TYPES[resource_type]
    secret, bound = _secret(request), f"search:{caller.center_id}:{resource_type}"
    cursor = _only_cursor(pairs)
    position: Position | None = None
    if cursor is not None:
        search, snapshot, position = from_cursor(
            spec, open_cursor(cursor, secret=secret, bound_to=bound)
        )
        where = conditions(search, session, caller)
    else:
        search = parse_search(spec, pairs, strict=prefers_strict(request.headers.get("prefer")))
        where = conditions(search, session, caller)
    _check_include_scopes(caller, search)
    if cursor is None:
        snapshot = take_snapshot(session, clock=clock, request=search)
    page = fetch_page(
        session,
        caller=caller,
        request=search,
        where=where,
        snapshot=snapshot,
        position=position,
    )
    if cursor is None:
        snapshot = counted(
            session, caller=caller, request=search, where=where, snapshot=snapshot, first_page=page
        )
    render = Render(session, shipped_protocols())
    matches = spec.render(render, page.rows)
    included = include(session, caller=caller, render=render, request=search, rows=page.rows)
    patient_ids = {patient_of(spec, row) for row in page.rows} | included.patient_ids
    record_search(
        session,
        clock=clock,
        caller=caller,
        target=resource_type,
        patient_ids=patient_ids,
        parameters=search.parameter_names,
    )
    base = _base(request)

    def link(at: Position | None) -> str:
        payload = cursor_payload(search, snapshot, at)
        return f"{base}/{resource_type}?{CURSOR}={seal(payload, secret=secret, bound_to=bound)}"

    links = _links(page, position, link)
    warnings = [
        *ignored_issues(search.ignored, resource_type=resource_type),
        *included.warnings,
    ]
    return searchset(
        base=base,
        now=clock.now(),
        total=snapshot.total,
        links=links,
        matches=matches,
        included=included.resources,
        warnings=warnings,
    )


def _check_include_scopes(caller: FhirCaller, search: SearchRequest) -> None:
    """An `_include` reads the patients (read scope); a `_revinclude` searches its type."""
    if search.includes and not caller.allows(INCLUDED_TYPE, Interaction.READ):
        raise scope_denied(caller, INCLUDED_TYPE, Interaction.READ)
    for revinclude in search.revincludes:
        source = revinclude_source(revinclude).name
        if not caller.allows(source, Interaction.SEARCH):
            raise scope_denied(caller, source, Interaction.SEARCH)


def _links(page: Page, position: Position | None, link: Any) -> list[tuple[str, str]]:
    links = [("self", link(position))]
    if position is not None:
        links.append(("first", link(None)))
    if page.has_previous and page.first is not None:
        links.append(("previous", link(Position(page.first.key, page.first.id, before=True))))
    if page.has_next and page.last is not None:
        links.append(("next", link(page.last)))
    return links


# --- $everything --------------------------------------------------------------------------


@router.get("/Patient/{patient_id:int}/$everything", name="fhir_patient_everything")
def patient_everything(
    patient_id: int,
    request: Request,
    session: SessionDep,
    clock: ClockDep,
    caller: FhirCallerDep,
    fmt: FormatDep,
) -> Response:
    """The patient and everything about them this server serves, in pages
    (`_since`, `_type`, `_count`)."""
    if not caller.allows("Patient", Interaction.READ):
        raise scope_denied(caller, "Patient", Interaction.READ)
    patient = (
        patient_for_caller(session, caller=caller, patient_id=patient_id)
        if 0 < patient_id < 2**31
        else None
    )
    if patient is None:
        raise FhirError.single(404, "not-found", f"Patient/{patient_id} is not known here.")
    pairs = list(request.query_params.multi_items())
    secret, bound = _secret(request), f"everything:{caller.center_id}:{patient_id}"
    cursor = _only_cursor(pairs)
    warning: Issue | None = None
    if cursor is not None:
        asked, snapshot, position = everything_from_cursor(
            patient_id, open_cursor(cursor, secret=secret, bound_to=bound)
        )
    else:
        asked = parse_everything(
            patient_id, pairs, strict=prefers_strict(request.headers.get("prefer"))
        )
        allowed = [
            name
            for name in EVERYTHING_TYPES
            if name == "Patient" or caller.allows(name, Interaction.SEARCH)
        ]
        if asked.asked_types:
            for name in asked.types:
                if name not in allowed:
                    raise scope_denied(caller, name, Interaction.SEARCH)
        asked, warning = left_out(asked, allowed)
        snapshot = everything_snapshot(session, caller=caller, request=asked)
        position = None
    render = Render(session, shipped_protocols())
    page = everything_page(
        session,
        caller=caller,
        render=render,
        request=asked,
        snapshot=snapshot,
        position=position,
    )
    record_search(
        session,
        clock=clock,
        caller=caller,
        target=f"Patient/{patient_id}/$everything",
        patient_ids={patient_id} if page.resources else set(),
        parameters=asked.parameter_names,
    )
    base = _base(request)

    def link(at: tuple[int, int] | None) -> str:
        sealed = seal(everything_payload(asked, snapshot, at), secret=secret, bound_to=bound)
        return f"{base}/Patient/{patient_id}/$everything?{CURSOR}={sealed}"

    links = [("self", link(position))]
    if page.next_position is not None:
        links.append(("next", link(page.next_position)))
    warnings = ignored_issues(asked.ignored, resource_type="Patient/$everything")
    if warning is not None:
        warnings.append(warning)
    return fmt.respond(
        searchset(
            base=base,
            now=clock.now(),
            total=snapshot.total,
            links=links,
            matches=page.resources,
            included=[],
            warnings=warnings,
        )
    )


# --- the Bundle and the audit ----------------------------------------------------------------


def searchset(
    *,
    base: str,
    now: datetime,
    total: int | None,
    links: Sequence[tuple[str, str]],
    matches: Sequence[JSON],
    included: Sequence[JSON],
    warnings: Sequence[Issue],
) -> JSON:
    """A searchset Bundle: the matches, what the includes added, and an OperationOutcome
    (search mode `outcome`) when something was ignored or cut short."""
    entries: list[JSON] = [_entry(base, resource, "match") for resource in matches]
    entries += [_entry(base, resource, "include") for resource in included]
    if warnings:
        outcome_id = str(uuid.uuid4())
        entries.append(
            {
                "fullUrl": f"urn:uuid:{outcome_id}",
                "resource": {
                    "resourceType": "OperationOutcome",
                    "id": outcome_id,
                    "issue": [issue.as_json() for issue in warnings],
                },
                "search": {"mode": "outcome"},
            }
        )
    bundle: JSON = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(now)},
        "type": "searchset",
    }
    if total is not None:
        bundle["total"] = total
    bundle["link"] = [{"relation": relation, "url": url} for relation, url in links]
    if entries:
        bundle["entry"] = entries
    return bundle


def _entry(base: str, resource: JSON, mode: str) -> JSON:
    return {
        "fullUrl": f"{base}/{resource['resourceType']}/{resource['id']}",
        "resource": resource,
        "search": {"mode": mode},
    }


def record_search(
    session: Session,
    *,
    clock: Clock,
    caller: FhirCaller,
    target: str,
    patient_ids: Iterable[int],
    parameters: Sequence[str],
) -> None:
    """One `fhir.search` event per patient whose data the answer holds (one without a
    patient when it holds none), by the client, in one insert. The detail names the
    parameters used, never their values (they may be PHI)."""
    actor = caller.actor
    table = AuditEvent.__table__
    assert isinstance(table, Table)
    common: dict[str, Any] = {
        "at": clock.now(),
        "actor_user_id": None,
        "actor_label": actor.label[:254],
        "actor_role": actor.role,
        "action": f"fhir.{Interaction.SEARCH.action}",
        "outcome": AuditOutcome.SUCCESS,
        "target": target[:120],
        "ip": actor.ip,
        "user_agent": (actor.user_agent or "")[:200] or None,
        "detail": {"parameters": list(parameters)} if parameters else None,
        "client_id": actor.client_id,
    }
    rows = [{**common, "patient_id": patient_id} for patient_id in sorted(set(patient_ids))]
    session.execute(insert(table), rows or [{**common, "patient_id": None}])


for _name in SEARCHABLE:
    CAPABILITIES.serve(
        _name,
        Capability.SEARCH_TYPE,
        search_params=list(SEARCH_TYPES[_name].params),
        includes=SEARCH_TYPES[_name].includes,
        revincludes=REVINCLUDES if _name == "Patient" else (),
    )
CAPABILITIES.serve_operation("everything", "Patient")
