"""Writing resources: create, update by id, conditional create and update by identifier,
each through the mapping of its type, and each idempotent.

What makes a resent resource change nothing:
- an identifier the center gave it before (or, for a Patient, the Medicaid ID or MRN) finds
  the record, which is then updated instead of duplicated;
- a resource without identifiers whose content (references resolved, without id and meta)
  the center already sent is the record it became before;
- an update whose content is the one last accepted changes nothing (no new version).

A Bundle asks the database once per group of entries, not once per entry: `prefetch` looks up
every identifier and content digest of a group at once (`Lookups` in the context keeps the
answers and each write keeps them true), `preload` reads the records they name, and a
group of new Observations is kept together (`create_rows`). A single create or update goes
through the very same functions, as a group of one."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl

from sqlalchemy import delete, select, update

from coordination.followup.models import Visit
from core.models import CaregiverLink, Condition, Observation, Patient
from fhir_adapter.errors import FhirError, Issue
from fhir_adapter.mapping import clinical, patients
from fhir_adapter.mapping.common import (
    JSON,
    Refused,
    WriteContext,
    Written,
    content_hash,
    identifiers,
    integer_version,
    timestamp_version,
)
from fhir_adapter.models import ResourceIdentifier, ResourceKey


@dataclass(frozen=True)
class Handler:
    """How one resource type is written: create (-> the local row), update (-> changed),
    load one of the caller's records by local id (None: unknown or another center's), its
    version and last change, the patient it concerns, and whether to find it by identifier
    in the record itself. `model` is the table of its rows; `shared`: several resources may
    become the same row (every infusion Procedure of a patient is the patient's record, every
    Encounter in a visit's window that visit); `create_many` keeps several at once."""

    resource_type: str
    model: type[Any]
    create: Callable[[WriteContext, JSON, str | None], tuple[Any, list[Issue]]]
    update: Callable[[WriteContext, Any, JSON, str | None], tuple[bool, list[Issue]]]
    load: Callable[[WriteContext, int], Any | None]
    version: Callable[[Any], tuple[str, datetime]]
    patient_id: Callable[[Any], int]
    find: Callable[[WriteContext, str, str], int | None] | None = None
    create_many: (
        Callable[[WriteContext, list[tuple[JSON, str | None]]], list[tuple[Any, list[Issue]]]]
        | None
    ) = None
    shared: bool = False


def _patient_create(
    context: WriteContext, resource: JSON, full_url: str | None
) -> tuple[Patient, list[Issue]]:
    return patients.create_patient(context, resource, full_url=full_url)


def _patient_update(
    context: WriteContext, patient: Patient, resource: JSON, full_url: str | None
) -> tuple[bool, list[Issue]]:
    return patients.update_patient(context, patient, resource, full_url=full_url)


def _patient_load(context: WriteContext, local_id: int) -> Patient | None:
    return context.patient(local_id)


def _patient_find(context: WriteContext, system: str, value: str) -> int | None:
    found = patients.find_by_identifier(context, system, value)
    return found.id if found is not None else None


def _infusion_handler(resource_type: str) -> Handler:
    def create(
        context: WriteContext, resource: JSON, _url: str | None
    ) -> tuple[Patient, list[Issue]]:
        patient, _changed = clinical.write_infusion(context, resource, resource_type)
        return patient, []

    def update(
        context: WriteContext, patient: Patient, resource: JSON, _url: str | None
    ) -> tuple[bool, list[Issue]]:
        _patient, changed = clinical.write_infusion(
            context, resource, resource_type, current=patient
        )
        return changed, []

    return Handler(
        resource_type=resource_type,
        model=Patient,
        create=create,
        update=update,
        load=clinical.load_infusion,
        version=lambda patient: (integer_version(patient.version_id), patient.updated_at),
        patient_id=lambda patient: int(patient.id),
        shared=True,
    )


def _plain(
    create: Callable[[WriteContext, JSON], tuple[Any, list[Issue]]],
    update: Callable[[WriteContext, Any, JSON], tuple[bool, list[Issue]]],
) -> tuple[
    Callable[[WriteContext, JSON, str | None], tuple[Any, list[Issue]]],
    Callable[[WriteContext, Any, JSON, str | None], tuple[bool, list[Issue]]],
]:
    return (
        lambda context, resource, _url: create(context, resource),
        lambda context, row, resource, _url: update(context, row, resource),
    )


def _handlers() -> dict[str, Handler]:
    related_create, related_update = _plain(
        clinical.create_related_person, clinical.update_related_person
    )
    observation_create, observation_update = _plain(
        clinical.create_observation, clinical.update_observation_resource
    )
    encounter_create, encounter_update = _plain(
        clinical.create_encounter, clinical.update_encounter
    )
    condition_create, condition_update = _plain(
        clinical.create_condition, clinical.update_condition_resource
    )
    found = [
        Handler(
            "Patient",
            Patient,
            _patient_create,
            _patient_update,
            _patient_load,
            lambda patient: (integer_version(patient.version_id), patient.updated_at),
            lambda patient: int(patient.id),
            find=_patient_find,
            create_many=patients.create_patients,
        ),
        Handler(
            "RelatedPerson",
            CaregiverLink,
            related_create,
            related_update,
            clinical.load_related_person,
            lambda link: (timestamp_version(link.updated_at), link.updated_at),
            lambda link: int(link.patient_id),
        ),
        _infusion_handler("Procedure"),
        _infusion_handler("MedicationAdministration"),
        Handler(
            "Observation",
            Observation,
            observation_create,
            observation_update,
            clinical.load_observation,
            lambda observation: (
                integer_version(observation.version_id),
                observation.last_updated,
            ),
            lambda observation: int(observation.patient_id),
            create_many=clinical.create_observations,
        ),
        Handler(
            "Encounter",
            Visit,
            encounter_create,
            encounter_update,
            clinical.load_completed_visit,
            lambda visit: (timestamp_version(visit.updated_at), visit.updated_at),
            lambda visit: int(visit.patient_id),
            shared=True,
        ),
        Handler(
            "Condition",
            Condition,
            condition_create,
            condition_update,
            clinical.load_condition,
            lambda condition: (integer_version(condition.version_id), condition.updated_at),
            lambda condition: int(condition.patient_id),
        ),
    ]
    return {handler.resource_type: handler for handler in found}


HANDLERS = _handlers()
WRITABLE_TYPES = tuple(HANDLERS)
# The record each type's local id names (for readers of `fhir_resource_keys`).
LOCAL_TABLES = {
    "Patient": Patient,
    "RelatedPerson": CaregiverLink,
    "Observation": Observation,
    "Condition": Condition,
}
_CHUNK = 500  # values per IN (...) list
IDENTIFIER_MAX = 200  # the longest identifier system and value kept
# The types whose local row is the patient's own (besides Patient).
_PATIENT_ROW_TYPES = ("Procedure", "MedicationAdministration")


def handler_for(resource_type: str) -> Handler:
    """The type's handler; an OperationOutcome naming what the adapter accepts otherwise."""
    handler = HANDLERS.get(resource_type)
    if handler is None:
        raise FhirError.single(
            422 if resource_type else 400,
            "not-supported",
            f"{resource_type or 'This resource'} is not accepted here. The adapter accepts "
            + ", ".join(WRITABLE_TYPES)
            + ".",
            expression=(resource_type or "resourceType",),
        )
    return handler


def _chunks(values: Iterable[Any]) -> Iterator[list[Any]]:
    listed = sorted(values)
    for start in range(0, len(listed), _CHUNK):
        yield listed[start : start + _CHUNK]


# --- finding what a center sent before ------------------------------------------------------


def parse_identifier_query(query: str, resource_type: str) -> tuple[str, str]:
    """`identifier=system|value` (the one search a conditional create or update takes here);
    400 otherwise."""
    pairs = parse_qsl(query, keep_blank_values=True)
    if len(pairs) != 1 or pairs[0][0] != "identifier" or "|" not in pairs[0][1]:
        raise FhirError.single(
            400,
            "not-supported",
            f"Conditional writes of {resource_type} take one search here: identifier=system|value.",
        )
    system, value = pairs[0][1].split("|", 1)
    if not system or not value:
        raise FhirError.single(400, "invalid", "Give both the identifier's system and value.")
    return system, value


def preload(context: WriteContext, handler: Handler, local_ids: Iterable[int]) -> None:
    """Read the records of these ids, and their patients, in a query each (for `load`)."""
    model = handler.model
    missing = {local_id for local_id in local_ids if (model, local_id) not in context.rows}
    rows: list[Any] = []
    for chunk in _chunks(missing):
        rows.extend(context.session.scalars(select(model).where(model.id.in_(chunk))))
    for row in rows:
        context.keep(row)
    if model is not Patient:
        patient_ids = {handler.patient_id(row) for row in rows}
        missing = {local_id for local_id in patient_ids if (Patient, local_id) not in context.rows}
        for chunk in _chunks(missing):
            for patient in context.session.scalars(select(Patient).where(Patient.id.in_(chunk))):
                context.keep(patient)


def prefetch(
    context: WriteContext,
    handler: Handler,
    *,
    pairs: Iterable[tuple[str, str]],
    digests: Iterable[str],
) -> None:
    """Look up at once what a group of resources of one type may match: the records the
    center gave these identifiers (system, value), the records last sent with these content
    digests, and the digests of the records found; then read those records (`preload`).
    `find_by_identifier`, `_by_content` and `_stored_hash` answer from what this leaves in
    `context.lookups`, and each write keeps it true (`_remember`)."""
    session, lookups = context.session, context.lookups
    kind, center_id = handler.resource_type, context.caller.center_id
    context.store_keys()
    pairs = set(pairs)
    digests = set(digests)
    if kind == "Patient":
        patients.prefetch_identifiers(context, pairs)
    asked = {pair for pair in pairs if (kind, *pair) not in lookups.owners}
    for chunk in _chunks({value for _system, value in asked}):
        for system, value, local_id in session.execute(
            select(
                ResourceIdentifier.system, ResourceIdentifier.value, ResourceIdentifier.local_id
            ).where(
                ResourceIdentifier.center_id == center_id,
                ResourceIdentifier.resource_type == kind,
                ResourceIdentifier.value.in_(chunk),
            )
        ):
            if (system, value) in asked:
                lookups.set_owner((kind, system, value), local_id)
    for system, value in asked:
        if (kind, system, value) not in lookups.owners:
            lookups.set_owner((kind, system, value), None)
    wanted = {digest for digest in digests if (kind, digest) not in lookups.digests}
    for digest in wanted:
        lookups.digests[(kind, digest)] = []
    for chunk in _chunks(wanted):
        for digest, local_id in session.execute(
            select(ResourceKey.content_hash, ResourceKey.local_id).where(
                ResourceKey.center_id == center_id,
                ResourceKey.resource_type == kind,
                ResourceKey.content_hash.in_(chunk),
            )
        ):
            lookups.digests[(kind, digest)].append(local_id)
            lookups.hashes[(kind, local_id)] = digest
    found: set[int] = set()
    for owner_kind, system, value in {(kind, *pair) for pair in pairs}:
        owner = lookups.owners.get((owner_kind, system, value))
        if owner is not None:
            found.add(owner)
        if kind == "Patient":
            patient = patients.known_patient(context, system, value)
            if patient is not None:
                found.add(patient)
    for digest in set(digests):
        found.update(lookups.digests.get((kind, digest), ()))
    unhashed = {local_id for local_id in found if (kind, local_id) not in lookups.hashes}
    for local_id in unhashed:
        lookups.hashes[(kind, local_id)] = None
    for chunk in _chunks(unhashed):
        for local_id, digest in session.execute(
            select(ResourceKey.local_id, ResourceKey.content_hash).where(
                ResourceKey.resource_type == kind, ResourceKey.local_id.in_(chunk)
            )
        ):
            lookups.hashes[(kind, local_id)] = digest
    preload(context, handler, found)


def match_keys(
    context: WriteContext, handler: Handler, pairs: Iterable[tuple[str, str]]
) -> set[str]:
    """What resources with these identifiers are found by (`system|value`; a Patient's
    Medicaid ID and MRN as the record keeps them): two resources sharing a key may be the
    same record."""
    keys = set()
    for system, value in pairs:
        keys.add(f"{system}|{value}")
        if handler.resource_type == "Patient":
            keys.add(f"{system}|{patients.own_value(context, system, value)}")
    return keys


def find_by_identifier(
    context: WriteContext, handler: Handler, system: str, value: str
) -> int | None:
    """The caller's record of this type with this identifier (None when there is none)."""
    if handler.find is not None:
        found = handler.find(context, system, value)
        if found is not None:
            return found
    key = (handler.resource_type, system, value)
    if key in context.lookups.owners:
        local_id = context.lookups.owners[key]
    else:
        context.store_keys()
        local_id = context.session.scalar(
            select(ResourceIdentifier.local_id).where(
                ResourceIdentifier.center_id == context.caller.center_id,
                ResourceIdentifier.resource_type == handler.resource_type,
                ResourceIdentifier.system == system,
                ResourceIdentifier.value == value,
            )
        )
        context.lookups.set_owner(key, local_id)
    if local_id is not None and handler.load(context, local_id) is not None:
        return local_id
    return None


def _by_identifiers(context: WriteContext, handler: Handler, resource: JSON) -> int | None:
    for system, value in identifiers(resource):
        found = find_by_identifier(context, handler, system, value)
        if found is not None:
            return found
    return None


def _by_content(context: WriteContext, handler: Handler, digest: str) -> int | None:
    key = (handler.resource_type, digest)
    if key not in context.lookups.digests:
        context.store_keys()
        context.lookups.digests[key] = list(
            context.session.scalars(
                select(ResourceKey.local_id).where(
                    ResourceKey.center_id == context.caller.center_id,
                    ResourceKey.resource_type == handler.resource_type,
                    ResourceKey.content_hash == digest,
                )
            )
        )
    for local_id in context.lookups.digests[key]:
        if handler.load(context, local_id) is not None:
            return local_id
    return None


def _stored_hash(context: WriteContext, handler: Handler, local_id: int) -> str | None:
    key = (handler.resource_type, local_id)
    if key not in context.lookups.hashes:
        context.store_keys()
        context.lookups.hashes[key] = context.session.scalar(
            select(ResourceKey.content_hash).where(
                ResourceKey.resource_type == handler.resource_type,
                ResourceKey.local_id == local_id,
            )
        )
    return context.lookups.hashes[key]


def _remember(
    context: WriteContext, handler: Handler, row: Any, resource: JSON, digest: str, *, new: bool
) -> None:
    """Keep the record's key (its content's digest) and the identifiers the center gave it.
    `new`: the row was just made, so it has neither yet (unless the type's rows are shared)."""
    session, now, lookups = context.session, context.clock.now(), context.lookups
    kind, local_id = handler.resource_type, int(row.id)
    fresh = (new and not handler.shared) or (kind, local_id) in lookups.fresh
    lookups.fresh.discard((kind, local_id))
    if new and kind == "Patient":
        # The infusion resources of a patient are the patient's row: none is known yet.
        lookups.fresh.update((other, local_id) for other in _PATIENT_ROW_TYPES)
    previous = None if fresh else _stored_hash(context, handler, local_id)
    if previous is None:
        lookups.new_keys.append(
            {
                "center_id": context.caller.center_id,
                "resource_type": kind,
                "local_id": local_id,
                "content_hash": digest,
                "created_at": now,
                "updated_at": now,
            }
        )
    else:
        context.store_keys()
        session.execute(
            update(ResourceKey)
            .where(ResourceKey.resource_type == kind, ResourceKey.local_id == local_id)
            .values(content_hash=digest, updated_at=now)
        )
        if local_id in lookups.digests.get((kind, previous), ()):
            lookups.digests[(kind, previous)].remove(local_id)
    lookups.hashes[(kind, local_id)] = digest
    if (kind, digest) in lookups.digests:
        lookups.digests[(kind, digest)].append(local_id)
    given = set(identifiers(resource))
    for system, value in given:
        if len(system) > IDENTIFIER_MAX or len(value) > IDENTIFIER_MAX:
            raise FhirError.single(
                422,
                "too-long",
                f"An identifier's system and value have at most {IDENTIFIER_MAX} characters here.",
                expression=(f"{kind}.identifier",),
            )
    if not fresh:
        context.store_keys()
        session.execute(
            delete(ResourceIdentifier).where(
                ResourceIdentifier.resource_type == kind, ResourceIdentifier.local_id == local_id
            )
        )
        lookups.release(kind, local_id)
    for system, value in sorted(given):
        key = (kind, system, value)
        if key in lookups.owners:
            taken = lookups.owners[key]
        else:
            context.store_keys()
            taken = session.scalar(
                select(ResourceIdentifier.local_id).where(
                    ResourceIdentifier.center_id == context.caller.center_id,
                    ResourceIdentifier.resource_type == kind,
                    ResourceIdentifier.system == system,
                    ResourceIdentifier.value == value,
                )
            )
        if taken is not None and taken != local_id:
            raise FhirError.single(
                409,
                "duplicate",
                f"Another {kind} of this center has the identifier {system}|{value}.",
                expression=(f"{kind}.identifier",),
            )
        lookups.new_identifiers.append(
            {
                "center_id": context.caller.center_id,
                "resource_type": kind,
                "system": system,
                "value": value,
                "local_id": local_id,
            }
        )
        lookups.set_owner(key, local_id)


def _written(
    handler: Handler, row: Any, *, created: bool, changed: bool, warnings: list[Issue]
) -> Written:
    version, last_updated = handler.version(row)
    return Written(
        resource_type=handler.resource_type,
        local_id=int(row.id),
        version_id=version,
        last_updated=last_updated,
        created=created,
        changed=changed,
        warnings=tuple(warnings),
        patient_id=handler.patient_id(row),
    )


def _unchanged(context: WriteContext, handler: Handler, local_id: int) -> Written:
    row = handler.load(context, local_id)
    assert row is not None  # found by the caller's own lookups
    return _written(handler, row, created=False, changed=False, warnings=[])


# --- the interactions ---------------------------------------------------------------------

_Interaction = TypeVar("_Interaction", bound=Callable[..., Written])


def _storing(interaction: _Interaction) -> _Interaction:
    """An interaction that stores the keys and identifiers it gave records before it
    returns, unless a transaction stores them for a whole group (`WriteContext.batched`)."""

    @functools.wraps(interaction)
    def storing(context: WriteContext, *args: Any, **kwargs: Any) -> Written:
        written = interaction(context, *args, **kwargs)
        if not context.batched:
            context.store_keys()
        return written

    return cast("_Interaction", storing)


def plan_create(
    context: WriteContext,
    handler: Handler,
    resource: JSON,
    digest: str,
    *,
    if_none_exist: str | None = None,
) -> Written | int | None:
    """What creating `resource` comes to, before anything is written: a Written when the
    center sent it before and nothing changes (`If-None-Exist` matched, or the same
    content), the local id of the record its identifier names (to update), or None (it is
    new: `create_rows`)."""
    if if_none_exist:
        system, value = parse_identifier_query(if_none_exist, handler.resource_type)
        existing = find_by_identifier(context, handler, system, value)
        if existing is not None:
            return _unchanged(context, handler, existing)
    existing = _by_identifiers(context, handler, resource)
    if existing is not None:
        return existing
    same = _by_content(context, handler, digest)
    if same is not None:
        return _unchanged(context, handler, same)
    return None


def create_rows(
    context: WriteContext, handler: Handler, items: list[tuple[JSON, str, str | None]]
) -> list[Written]:
    """Create the records of new resources (resource, digest, fullUrl), all of one type:
    together when the type keeps many at once, else one by one. The refusal of a single one
    raises its FhirError; of one of several, `Refused` with its index."""
    if handler.create_many is not None and len(items) > 1:
        made = handler.create_many(context, [(resource, url) for resource, _digest, url in items])
    else:
        made = []
        for index, (resource, _digest, url) in enumerate(items):
            with _refused_as(index, len(items)):
                made.append(handler.create(context, resource, url))
    written = []
    for index, ((resource, digest, _url), (row, warnings)) in enumerate(
        zip(items, made, strict=True)
    ):
        with _refused_as(index, len(items)):
            _remember(context, handler, row, resource, digest, new=True)
        written.append(_written(handler, row, created=True, changed=True, warnings=warnings))
    return written


@contextmanager
def _refused_as(index: int, count: int) -> Iterator[None]:
    """A FhirError about item `index` of `count`: as is for one, `Refused` for several."""
    try:
        yield
    except FhirError as error:
        if count == 1:
            raise
        raise Refused(index, error) from None


@_storing
def create_resource(
    context: WriteContext,
    resource: JSON,
    *,
    if_none_exist: str | None = None,
    full_url: str | None = None,
) -> Written:
    """FHIR create (and conditional create with `If-None-Exist: identifier=system|value`).
    A resource the center sent before (same identifier, or same content) is not created
    again: an identifier match is an update, a content match changes nothing."""
    handler = handler_for(str(resource.get("resourceType") or ""))
    digest = content_hash(resource)
    planned = plan_create(context, handler, resource, digest, if_none_exist=if_none_exist)
    if isinstance(planned, Written):
        return planned
    if planned is not None:
        return update_row(context, handler, planned, resource, digest, full_url=full_url)
    return create_rows(context, handler, [(resource, digest, full_url)])[0]


def update_row(
    context: WriteContext,
    handler: Handler,
    local_id: int,
    resource: JSON,
    digest: str,
    *,
    if_match: str | None = None,
    full_url: str | None = None,
) -> Written:
    """Update the caller's record `local_id` to what `resource` says (nothing changes when
    its content is the one last accepted); 404 for anyone else's, 412 when `if_match`
    names another version."""
    row = handler.load(context, local_id)
    if row is None:
        raise FhirError.single(
            404, "not-found", f"{handler.resource_type}/{local_id} is not known here."
        )
    if if_match is not None:
        current, _when = handler.version(row)
        wanted = if_match.strip().removeprefix("W/").strip('"')
        if wanted != current:
            raise FhirError.single(
                412,
                "conflict",
                f"{handler.resource_type}/{local_id} is at version {current}, not {wanted}: "
                "read it again before changing it.",
            )
    if _stored_hash(context, handler, local_id) == digest:
        return _written(handler, row, created=False, changed=False, warnings=[])
    changed, warnings = handler.update(context, row, resource, full_url)
    _remember(context, handler, row, resource, digest, new=False)
    return _written(handler, row, created=False, changed=changed, warnings=warnings)


@_storing
def update_resource(
    context: WriteContext,
    resource_type: str,
    local_id: int,
    resource: JSON,
    *,
    if_match: str | None = None,
) -> Written:
    """FHIR update by id (`PUT [type]/[id]`): only an existing record of the caller's center
    (no update-as-create); `If-Match` must name the current version (412 otherwise)."""
    handler = handler_for(resource_type)
    if resource.get("resourceType") != resource_type:
        raise FhirError.single(
            400, "invalid", f"The body must be a {resource_type}.", expression=("resourceType",)
        )
    if "id" in resource and str(resource["id"]) != str(local_id):
        raise FhirError.single(
            400,
            "invalid",
            f"The body's id ({resource['id']}) is not the id in the URL ({local_id}).",
            expression=(f"{resource_type}.id",),
        )
    return update_row(
        context, handler, local_id, resource, content_hash(resource), if_match=if_match
    )


@_storing
def conditional_update(
    context: WriteContext,
    resource_type: str,
    query: str,
    resource: JSON,
    *,
    if_match: str | None = None,
) -> Written:
    """FHIR conditional update (`PUT [type]?identifier=system|value`): the caller's record
    with that identifier is updated, or created when there is none."""
    handler = handler_for(resource_type)
    system, value = parse_identifier_query(query, resource_type)
    if (system, value) not in set(identifiers(resource)):
        raise FhirError.single(
            400,
            "invalid",
            "The resource must carry the identifier it is updated by.",
            expression=(f"{resource_type}.identifier",),
        )
    existing = find_by_identifier(context, handler, system, value)
    if existing is None:
        return create_resource(context, resource)
    return update_row(
        context, handler, existing, resource, content_hash(resource), if_match=if_match
    )
