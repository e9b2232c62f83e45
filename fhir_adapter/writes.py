"""Writing resources: create, update by id, conditional create and update by identifier,
each through the mapping of its type, and each idempotent.

What makes a resent resource change nothing:
- an identifier the center gave it before (or, for a Patient, the Medicaid ID or MRN) finds
  the record, which is then updated instead of duplicated;
- a resource without identifiers whose content (references resolved, without id and meta)
  the center already sent is the record it became before;
- an update whose content is the one last accepted changes nothing (no new version)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select

from core.models import CaregiverLink, Condition, Observation, Patient
from fhir_adapter.errors import FhirError, Issue
from fhir_adapter.mapping import clinical, patients
from fhir_adapter.mapping.common import (
    JSON,
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
    """How one resource type is written: create (-> local id), update (-> changed), load
    one of the caller's records by local id (None: unknown or another center's), its
    version and last change, and whether to find it by identifier in the record itself."""

    resource_type: str
    create: Callable[[WriteContext, JSON, str | None], tuple[int, list[Issue]]]
    update: Callable[[WriteContext, Any, JSON, str | None], tuple[bool, list[Issue]]]
    load: Callable[[WriteContext, int], Any | None]
    version: Callable[[Any], tuple[str, datetime]]
    find: Callable[[WriteContext, str, str], int | None] | None = None


def _patient_create(
    context: WriteContext, resource: JSON, full_url: str | None
) -> tuple[int, list[Issue]]:
    patient, warnings = patients.create_patient(context, resource, full_url=full_url)
    return patient.id, warnings


def _patient_update(
    context: WriteContext, patient: Patient, resource: JSON, full_url: str | None
) -> tuple[bool, list[Issue]]:
    return patients.update_patient(context, patient, resource, full_url=full_url)


def _patient_load(context: WriteContext, local_id: int) -> Patient | None:
    patient = context.session.get(Patient, local_id)
    return (
        patient if patient is not None and patient.center_id == context.caller.center_id else None
    )


def _patient_find(context: WriteContext, system: str, value: str) -> int | None:
    found = patients.find_by_identifier(context, system, value)
    return found.id if found is not None else None


def _infusion_handler(resource_type: str) -> Handler:
    def create(context: WriteContext, resource: JSON, _url: str | None) -> tuple[int, list[Issue]]:
        local_id, _changed = clinical.write_infusion(context, resource, resource_type)
        return local_id, []

    def update(
        context: WriteContext, patient: Patient, resource: JSON, _url: str | None
    ) -> tuple[bool, list[Issue]]:
        _local_id, changed = clinical.write_infusion(
            context, resource, resource_type, current=patient
        )
        return changed, []

    return Handler(
        resource_type=resource_type,
        create=create,
        update=update,
        load=clinical.load_infusion,
        version=lambda patient: (integer_version(patient.version_id), patient.updated_at),
    )


def _plain(
    create: Callable[[WriteContext, JSON], tuple[int, list[Issue]]],
    update: Callable[[WriteContext, Any, JSON], tuple[bool, list[Issue]]],
) -> tuple[
    Callable[[WriteContext, JSON, str | None], tuple[int, list[Issue]]],
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
            _patient_create,
            _patient_update,
            _patient_load,
            lambda patient: (integer_version(patient.version_id), patient.updated_at),
            find=_patient_find,
        ),
        Handler(
            "RelatedPerson",
            related_create,
            related_update,
            clinical.load_related_person,
            lambda link: (timestamp_version(link.updated_at), link.updated_at),
        ),
        _infusion_handler("Procedure"),
        _infusion_handler("MedicationAdministration"),
        Handler(
            "Observation",
            observation_create,
            observation_update,
            clinical.load_observation,
            lambda observation: (
                integer_version(observation.version_id),
                observation.last_updated,
            ),
        ),
        Handler(
            "Encounter",
            encounter_create,
            encounter_update,
            clinical.load_completed_visit,
            lambda visit: (timestamp_version(visit.updated_at), visit.updated_at),
        ),
        Handler(
            "Condition",
            condition_create,
            condition_update,
            clinical.load_condition,
            lambda condition: (integer_version(condition.version_id), condition.updated_at),
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


# --- finding what a center sent before ------------------------------------------------------


def parse_identifier_query(query: str, resource_type: str) -> tuple[str, str]:
    """`identifier=system|value` (the one search a conditional create or update takes here);
    400 otherwise."""
    from urllib.parse import parse_qsl

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


def find_by_identifier(
    context: WriteContext, handler: Handler, system: str, value: str
) -> int | None:
    """The caller's record of this type with this identifier (None when there is none)."""
    if handler.find is not None:
        found = handler.find(context, system, value)
        if found is not None:
            return found
    local_id = context.session.scalar(
        select(ResourceIdentifier.local_id).where(
            ResourceIdentifier.center_id == context.caller.center_id,
            ResourceIdentifier.resource_type == handler.resource_type,
            ResourceIdentifier.system == system,
            ResourceIdentifier.value == value,
        )
    )
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
    for local_id in context.session.scalars(
        select(ResourceKey.local_id).where(
            ResourceKey.center_id == context.caller.center_id,
            ResourceKey.resource_type == handler.resource_type,
            ResourceKey.content_hash == digest,
        )
    ):
        if handler.load(context, local_id) is not None:
            return local_id
    return None


def _remember(
    context: WriteContext, handler: Handler, local_id: int, resource: JSON, digest: str
) -> None:
    """Keep the record's key (its content's digest) and the identifiers the center gave it."""
    session, now = context.session, context.clock.now()
    key = session.scalar(
        select(ResourceKey).where(
            ResourceKey.resource_type == handler.resource_type, ResourceKey.local_id == local_id
        )
    )
    if key is None:
        session.add(
            ResourceKey(
                center_id=context.caller.center_id,
                resource_type=handler.resource_type,
                local_id=local_id,
                content_hash=digest,
                created_at=now,
                updated_at=now,
            )
        )
    else:
        key.content_hash, key.updated_at = digest, now
    given = {(system[:200], value[:200]) for system, value in identifiers(resource)}
    session.execute(
        delete(ResourceIdentifier).where(
            ResourceIdentifier.resource_type == handler.resource_type,
            ResourceIdentifier.local_id == local_id,
        )
    )
    for system, value in sorted(given):
        taken = session.scalar(
            select(ResourceIdentifier.local_id).where(
                ResourceIdentifier.center_id == context.caller.center_id,
                ResourceIdentifier.resource_type == handler.resource_type,
                ResourceIdentifier.system == system,
                ResourceIdentifier.value == value,
            )
        )
        if taken is not None and taken != local_id:
            raise FhirError.single(
                409,
                "duplicate",
                f"Another {handler.resource_type} of this center has the identifier "
                f"{system}|{value}.",
                expression=(f"{handler.resource_type}.identifier",),
            )
        session.add(
            ResourceIdentifier(
                center_id=context.caller.center_id,
                resource_type=handler.resource_type,
                system=system,
                value=value,
                local_id=local_id,
            )
        )
    session.flush()


def _written(
    handler: Handler,
    row: Any,
    local_id: int,
    *,
    created: bool,
    changed: bool,
    warnings: list[Issue],
) -> Written:
    version, last_updated = handler.version(row)
    return Written(
        resource_type=handler.resource_type,
        local_id=local_id,
        version_id=version,
        last_updated=last_updated,
        created=created,
        changed=changed,
        warnings=tuple(warnings),
    )


def _stored_hash(context: WriteContext, handler: Handler, local_id: int) -> str | None:
    return context.session.scalar(
        select(ResourceKey.content_hash).where(
            ResourceKey.resource_type == handler.resource_type, ResourceKey.local_id == local_id
        )
    )


# --- the interactions ---------------------------------------------------------------------


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
    if if_none_exist:
        system, value = parse_identifier_query(if_none_exist, handler.resource_type)
        existing = find_by_identifier(context, handler, system, value)
        if existing is not None:
            row = handler.load(context, existing)
            return _written(handler, row, existing, created=False, changed=False, warnings=[])
    digest = content_hash(resource)
    existing = _by_identifiers(context, handler, resource)
    if existing is not None:
        return _update_row(context, handler, existing, resource, digest, full_url=full_url)
    same = _by_content(context, handler, digest)
    if same is not None:
        row = handler.load(context, same)
        return _written(handler, row, same, created=False, changed=False, warnings=[])
    local_id, warnings = handler.create(context, resource, full_url)
    row = handler.load(context, local_id)
    _remember(context, handler, local_id, resource, digest)
    return _written(handler, row, local_id, created=True, changed=True, warnings=warnings)


def _update_row(
    context: WriteContext,
    handler: Handler,
    local_id: int,
    resource: JSON,
    digest: str,
    *,
    if_match: str | None = None,
    full_url: str | None = None,
) -> Written:
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
        return _written(handler, row, local_id, created=False, changed=False, warnings=[])
    changed, warnings = handler.update(context, row, resource, full_url)
    context.session.flush()
    context.session.refresh(row)
    _remember(context, handler, local_id, resource, digest)
    return _written(handler, row, local_id, created=False, changed=changed, warnings=warnings)


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
    return _update_row(
        context, handler, local_id, resource, content_hash(resource), if_match=if_match
    )


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
    return _update_row(
        context, handler, existing, resource, content_hash(resource), if_match=if_match
    )
