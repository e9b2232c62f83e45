"""Transaction and batch Bundles (`POST /fhir`).

A transaction is all or nothing: every entry is checked (structure, bindings, references,
scopes) before anything is written, entries are written in the order their references need
(Patients first; a new Patient gets the therapy and infusion date of its Procedure in the
same Bundle, so its schedule is made once), each reference to an entry (`urn:uuid:`, a
relative `Type/id` fullUrl) is rewritten to the record it became, and the first refusal
rolls everything back, answering with the entry's path in `issue.expression`.

A batch writes each entry on its own (a savepoint each): one refused entry answers with its
OperationOutcome in its `response` and the others stand. Batch entries cannot refer to one
another (FHIR's rule); they may refer to the client's own records.

Resending the same Bundle changes nothing (see `writes`): the references are rewritten to
the records before the content is compared, so new `urn:uuid`s in a resend do not matter."""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy.orm import Session

from coordination.followup.protocol import ProtocolLibrary
from coordination.records import schedule_new_patients
from core.clock import Clock
from core.ids import parse_id
from fhir_adapter.bearer import FhirCaller, scope_denied
from fhir_adapter.errors import FhirError, Issue
from fhir_adapter.mapping.clinical import infusion_facts
from fhir_adapter.mapping.common import (
    JSON,
    Caller,
    Refused,
    WriteContext,
    Written,
    content_hash,
    control_character_issues,
    identifiers,
    reference_of,
)
from fhir_adapter.references import LocalReference
from fhir_adapter.scopes import Interaction
from fhir_adapter.validation import validate_resource
from fhir_adapter.writes import (
    HANDLERS,
    Handler,
    conditional_update,
    create_resource,
    create_rows,
    find_by_identifier,
    handler_for,
    match_keys,
    parse_identifier_query,
    plan_create,
    prefetch,
    update_resource,
    update_row,
)

# The order entries are written in: what others refer to comes first.
WRITE_ORDER = (
    "Patient",
    "RelatedPerson",
    "Procedure",
    "MedicationAdministration",
    "Condition",
    "Encounter",
    "Observation",
)
_RELATIVE = re.compile(r"^(?:.*/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})$")


@dataclass
class _Entry:
    index: int
    method: str
    url: str
    resource: JSON
    full_url: str | None
    if_none_exist: str | None
    if_match: str | None
    written: Written | None = None
    refused: FhirError | None = None
    _sites: list[Site] | None = None

    @property
    def sites(self) -> list[Site]:
        """Its resource's references, with where they are (found once)."""
        if self._sites is None:
            self._sites = reference_sites(self.resource)
        return self._sites

    @property
    def resource_type(self) -> str:
        return str(self.resource.get("resourceType") or "")

    @property
    def path(self) -> str:
        return f"Bundle.entry[{self.index}]"


@dataclass
class References:
    """How references of this Bundle resolve: entries' fullUrls to the records they became,
    the client's own records by `Type/id`, conditional references by identifier."""

    session: Session
    caller: Caller
    written: dict[str, tuple[str, int]] = field(default_factory=dict)
    context: WriteContext | None = None

    def resolve(self, reference: str) -> tuple[str, int] | None:
        if reference in self.written:
            return self.written[reference]
        if "?" in reference:
            return self._conditional(reference)
        match = _RELATIVE.match(reference)
        local_id = parse_id(match["id"]) if match is not None else None
        if match is None or local_id is None:
            return None
        resource_type = match["type"]
        handler = HANDLERS.get(resource_type)
        if handler is not None:
            # A record of a type the platform keeps: the client's own, or unknown.
            assert self.context is not None
            if handler.load(self.context, local_id) is None:
                return None
        return resource_type, local_id

    def may_point_at(self, reference: LocalReference) -> bool:
        """Whether a resource may refer to `reference` (a relative reference that the request
        does not hold): to the client's own record of a type the platform keeps, and to any
        resource of a type it does not keep (a Practitioner, an Organization, a Location),
        which it neither holds nor follows. Another center's record reads as unknown."""
        if reference.resource_type not in HANDLERS:
            return True
        return self.resolve(f"{reference.resource_type}/{reference.id}") is not None

    def _conditional(self, reference: str) -> tuple[str, int] | None:
        resource_type, _, query = reference.partition("?")
        handler = HANDLERS.get(resource_type)
        if handler is None or self.context is None:
            return None
        try:
            system, value = parse_identifier_query(query, resource_type)
        except FhirError:
            return None
        found = find_by_identifier(self.context, handler, system, value)
        return (resource_type, found) if found is not None else None


class BoundContext(WriteContext):
    """A WriteContext with the references it resolves through (a Bundle's written entries)."""

    references: References


def write_context(
    session: Session, *, clock: Clock, caller: FhirCaller, library: ProtocolLibrary
) -> BoundContext:
    """The context of one write by `caller`: references resolve to the entries a Bundle
    wrote, the caller's own records by `Type/id`, or by identifier (`Type?identifier=`)."""
    references = References(
        session=session, caller=Caller(caller.center_id, caller.state_id, caller.actor)
    )
    context = BoundContext(
        session=session,
        clock=clock,
        caller=references.caller,
        library=library,
        resolve=references.resolve,
    )
    context.references = references
    references.context = context
    return context


Site = tuple[tuple[str | int, ...], str]
"""Where a resource holds a `reference` string (the keys and indexes down to the object
that holds it), and the string."""


def reference_sites(resource: JSON) -> list[Site]:
    """Every `reference` string of a resource, with where it is: found in one pass, so that
    rewriting them and asking what an entry refers to need not go over the resource again."""
    found: list[Site] = []

    def visit(value: Any, path: tuple[str | int, ...]) -> None:
        if isinstance(value, dict):
            reference = value.get("reference")
            if isinstance(reference, str):
                found.append((path, reference))
            for key, item in value.items():
                if isinstance(item, dict | list):
                    visit(item, (*path, key))
        else:
            for index, item in enumerate(value):
                if isinstance(item, dict | list):
                    visit(item, (*path, index))

    visit(resource, ())
    return found


def _rewrite(resource: JSON, sites: list[Site], written: dict[str, tuple[str, int]]) -> JSON:
    """The resource with every reference to a written entry replaced by `Type/id` (new
    objects only on the way to what changed: the rest is shared with the request's)."""
    result: Any = resource
    copied: set[int] = set()  # the objects already copied, by id
    for path, reference in sites:
        if reference not in written:
            continue
        resource_type, local_id = written[reference]
        if id(result) not in copied:
            result = dict(result)
            copied.add(id(result))
        holder = result
        for step in path:
            item = holder[step]
            if id(item) not in copied:
                item = dict(item) if isinstance(item, dict) else list(item)
                copied.add(id(item))
                holder[step] = item
            holder = item
        holder["reference"] = f"{resource_type}/{local_id}"
    return cast("JSON", result)


def _entries(bundle: JSON) -> list[_Entry]:
    entries = []
    for index, raw in enumerate(bundle.get("entry") or []):
        request = raw.get("request") or {}
        entries.append(
            _Entry(
                index=index,
                method=str(request.get("method") or ""),
                url=str(request.get("url") or ""),
                resource=raw.get("resource") or {},
                full_url=raw.get("fullUrl"),
                if_none_exist=request.get("ifNoneExist"),
                if_match=request.get("ifMatch"),
            )
        )
    return entries


def _interaction(entry: _Entry) -> Interaction:
    return Interaction.CREATE if entry.method == "POST" else Interaction.UPDATE


def _check_requests(entries: Iterable[_Entry], caller: FhirCaller) -> None:
    """Refuse, before anything is written, what this server does not do in a Bundle and
    what the token does not allow."""
    for entry in entries:
        if entry.method not in ("POST", "PUT"):
            raise FhirError.single(
                422 if entry.method in ("GET", "DELETE", "PATCH", "HEAD") else 400,
                "not-supported",
                f"{entry.method or 'An entry without a method'} is not done in a Bundle here: "
                "entries create (POST) or update (PUT).",
                expression=(f"{entry.path}.request.method",),
            )
        handler_for(entry.resource_type)  # an OperationOutcome naming what is accepted
        if not caller.allows(entry.resource_type, _interaction(entry)):
            raise scope_denied(caller, entry.resource_type, _interaction(entry))


def _infusion_hints(context: WriteContext, entries: list[_Entry]) -> None:
    """A new Patient's therapy and infusion date, from its Procedure in the same Bundle."""
    for entry in entries:
        if entry.resource_type not in ("Procedure", "MedicationAdministration"):
            continue
        reference = reference_of(entry.resource.get("subject"))
        if reference is None or not reference.startswith("urn:"):
            continue
        try:
            therapy_id, day, in_error = infusion_facts(context, entry.resource, entry.resource_type)
        except FhirError as error:
            # Its own reason (an unknown therapy code), at its own path: the Patient it
            # would have given a therapy to would only say it has none.
            raise _at_entry(error, entry) from None
        if not in_error:
            context.infusion_hints[reference] = (therapy_id, day)


def _write(context: WriteContext, entry: _Entry, resource: JSON) -> Written:
    """Carry out one entry (its references already rewritten)."""
    resource_type = entry.resource_type
    if entry.method == "POST":
        return create_resource(
            context, resource, if_none_exist=entry.if_none_exist, full_url=entry.full_url
        )
    target, _, query = entry.url.partition("?")
    if query:
        return conditional_update(context, resource_type, query, resource, if_match=entry.if_match)
    match = _RELATIVE.match(target)
    if match is None or match["type"] != resource_type or parse_id(match["id"]) is None:
        raise FhirError.single(
            400,
            "invalid",
            f"A PUT entry's url is {resource_type}/[id] or {resource_type}?identifier=...",
            expression=("request.url",),
        )
    local_id = int(match["id"])
    if not 0 < local_id < 2**31:  # larger ids overflow the databases' integers
        raise FhirError.single(
            404, "not-found", f"{resource_type}/{match['id']} is not known here."
        )
    return update_resource(context, resource_type, local_id, resource, if_match=entry.if_match)


def _at_entry(error: FhirError, entry: _Entry) -> FhirError:
    """The error with each expression pointed at the entry (`Bundle.entry[3].resource...`)."""
    prefix = f"{entry.path}.resource"
    issues = []
    for issue in error.issues:
        expressions = tuple(
            expression
            if expression.startswith("Bundle.")
            else (
                f"{entry.path}.{expression}"
                if expression.startswith("request.")
                else prefix + expression.removeprefix(entry.resource_type)
            )
            for expression in (issue.expression or (entry.resource_type,))
        )
        issues.append(
            Issue(
                code=issue.code,
                diagnostics=issue.diagnostics,
                severity=issue.severity,
                expression=expressions,
            )
        )
    return FhirError(status=error.status, issues=issues, headers=error.headers)


@dataclass(frozen=True)
class BundleResult:
    """What a Bundle did: the response Bundle, and the records written (for the audit)."""

    response: JSON
    written: list[Written]


def _response_entry(entry: _Entry, base: str) -> JSON:
    if entry.refused is not None:
        return {
            "response": {
                "status": str(entry.refused.status),
                "outcome": entry.refused.outcome(),
            }
        }
    written = entry.written
    assert written is not None
    response: JSON = {
        "status": "201 Created" if written.created else "200 OK",
        "location": f"{written.resource_type}/{written.local_id}/_history/{written.version_id}",
        "etag": f'W/"{written.version_id}"',
        "lastModified": written.last_updated.isoformat(),
    }
    if written.warnings:
        response["outcome"] = {
            "resourceType": "OperationOutcome",
            "issue": [issue.as_json() for issue in written.warnings],
        }
    return {"fullUrl": f"{base}/{written.resource_type}/{written.local_id}", "response": response}


def process_bundle(
    session: Session,
    *,
    clock: Clock,
    caller: FhirCaller,
    library: ProtocolLibrary,
    bundle: Any,
    base: str,
) -> BundleResult:
    """Carry out a transaction or batch Bundle (see the module's docstring). Raises
    FhirError for a transaction that cannot be carried out whole."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError.single(400, "invalid", "POST to the base takes a Bundle.")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirError.single(
            400,
            "not-supported",
            "POST to the base takes a Bundle of type transaction or batch.",
            expression=("Bundle.type",),
        )
    context = write_context(session, clock=clock, caller=caller, library=library)
    references = context.references
    result = validate_resource(
        bundle,
        expected_type="Bundle",
        resolve=_owned_resolver(references),
        local_base=base,
        keep_model=False,  # the writes read the JSON
    )
    # A batch's entries are judged one by one below; its envelope must be sound.
    if not result.ok and (kind == "transaction" or _envelope_errors(result.errors)):
        raise FhirError(status=result.status, issues=list(result.issues))
    unreadable = control_character_issues(bundle, "Bundle")
    if unreadable and (kind == "transaction" or _envelope_errors(unreadable)):
        raise FhirError(status=400, issues=unreadable)
    errors = result.errors + tuple(unreadable)
    # The parsed models are not needed for the writes: let them go now (tens of thousands
    # of objects for a large Bundle, which every garbage collection would walk through).
    del result
    entries = _entries(bundle)
    if kind == "transaction":
        _check_requests(entries, caller)
        _infusion_hints(context, entries)
        context.new_patients = []
        context.batched = True
        for resource_type, group in itertools.groupby(
            sorted(entries, key=_write_rank), key=lambda entry: entry.resource_type
        ):
            _write_group(context, HANDLERS[resource_type], list(group), references.written)
            context.store_keys()
            if resource_type == "Patient":
                _schedule_new_patients(context)
        _schedule_new_patients(context)
    else:
        bad = _entry_errors(errors)
        for entry in sorted(entries, key=_write_rank):
            if entry.index in bad:
                entry.refused = FhirError(status=400, issues=bad[entry.index])
                continue
            try:
                _check_requests([entry], caller)
                with session.begin_nested():
                    entry.written = _write(context, entry, entry.resource)
            except FhirError as error:
                entry.refused = _at_entry(error, entry)
                # What the entry's savepoint made is gone: so is what the context knew of it.
                context.forget()
    response = {
        "resourceType": "Bundle",
        "type": f"{kind}-response",
        "entry": [_response_entry(entry, base) for entry in entries],
    }
    return BundleResult(
        response=response,
        written=[entry.written for entry in entries if entry.written is not None],
    )


def _schedule_new_patients(context: WriteContext) -> None:
    """The schedules of the patients the transaction enrolled, made together."""
    if context.new_patients:
        schedule_new_patients(
            context.session,
            clock=context.clock,
            actor=context.caller.actor,
            library=context.library,
            patients=context.new_patients,
        )
    context.new_patients = None  # a patient enrolled later (none is) gets its own at once


def _requested_pairs(entry: _Entry) -> set[tuple[str, str]]:
    """The identifiers an entry may be found by: its own, and its conditional request's."""
    pairs = set(identifiers(entry.resource))
    query = entry.url.partition("?")[2]
    for condition in (entry.if_none_exist, query if entry.method == "PUT" else None):
        if condition:
            # A malformed condition is refused with its own path when the entry is written.
            with contextlib.suppress(FhirError):
                pairs.add(parse_identifier_query(condition, entry.resource_type))
    return pairs


def _write_group(
    context: WriteContext,
    handler: Handler,
    group: list[_Entry],
    written: dict[str, tuple[str, int]],
) -> None:
    """Write a transaction's entries of one type, in order, as if one by one: what they may
    match is looked up for all of them at once, and new records of a type kept together
    (Observations) are made together, each group of them before any entry that refers to
    one, shares an identifier or content with one, or updates."""
    prepared = []
    for entry in group:
        resource = _rewrite(entry.resource, entry.sites, written)
        prepared.append((entry, resource, content_hash(resource)))  # each digested once
    prefetch(
        context,
        handler,
        pairs={pair for entry in group for pair in _requested_pairs(entry)},
        digests={digest for _entry, _resource, digest in prepared},
    )
    pending: list[tuple[_Entry, JSON, str]] = []
    waiting: set[str] = set()  # what the pending entries are known by

    def make_pending() -> None:
        try:
            made = create_rows(
                context,
                handler,
                [(resource, digest, entry.full_url) for entry, resource, digest in pending],
            )
        except Refused as refused:
            raise _at_entry(refused.error, pending[refused.index][0]) from None
        except FhirError as error:
            raise _at_entry(error, pending[0][0]) from None
        for (entry, _resource, _digest), result in zip(pending, made, strict=True):
            _written_entry(entry, result, written)
        pending.clear()
        waiting.clear()

    in_group = {entry.full_url for entry in group if entry.full_url}
    for entry, resource, digest in prepared:
        inner = (
            in_group.intersection(reference for _path, reference in entry.sites)
            if in_group
            else set()
        )
        if inner:
            # It refers to entries of its own type: to the records they became (made first).
            if pending and inner & waiting:
                make_pending()
            resource = _rewrite(entry.resource, entry.sites, written)
            digest = content_hash(resource)
        known_by = {digest} | match_keys(context, handler, _requested_pairs(entry))
        if pending and (entry.method != "POST" or known_by & waiting):
            make_pending()
        try:
            if entry.method == "POST" and handler.create_many is not None:
                planned = plan_create(
                    context, handler, resource, digest, if_none_exist=entry.if_none_exist
                )
                if planned is None:
                    pending.append((entry, resource, digest))
                    waiting.update(known_by)
                    if entry.full_url:
                        waiting.add(entry.full_url)
                    continue
                result = (
                    planned
                    if isinstance(planned, Written)
                    else update_row(context, handler, planned, resource, digest)
                )
            else:
                result = _write(context, entry, resource)
        except FhirError as error:
            raise _at_entry(error, entry) from None
        _written_entry(entry, result, written)
    if pending:
        make_pending()


def _written_entry(entry: _Entry, result: Written, written: dict[str, tuple[str, int]]) -> None:
    entry.written = result
    if entry.full_url:
        written[entry.full_url] = (result.resource_type, result.local_id)


def _write_rank(entry: _Entry) -> tuple[int, int]:
    try:
        rank = WRITE_ORDER.index(entry.resource_type)
    except ValueError:
        rank = len(WRITE_ORDER)
    return rank, entry.index


def _owned_resolver(
    references: References,
) -> Callable[[frozenset[LocalReference]], list[LocalReference]]:
    def resolve(asked: frozenset[LocalReference]) -> list[LocalReference]:
        return [reference for reference in asked if references.may_point_at(reference)]

    return resolve


_ENTRY = re.compile(r"^Bundle\.entry\[(\d+)\]")


def _entry_errors(issues: Iterable[Issue]) -> dict[int, list[Issue]]:
    found: dict[int, list[Issue]] = {}
    for issue in issues:
        for expression in issue.expression:
            match = _ENTRY.match(expression)
            if match:
                found.setdefault(int(match[1]), []).append(issue)
                break
    return found


def _envelope_errors(issues: Iterable[Issue]) -> bool:
    """Errors about the Bundle itself, not one of its entries."""
    return any(
        not any(_ENTRY.match(expression) for expression in issue.expression) for issue in issues
    )
