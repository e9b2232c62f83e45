"""What every inbound mapping needs: the context of a write (who, for which center, how
references resolve), reading FHIR's small types (references, codings, dates), and turning
a service's FieldErrors into an OperationOutcome that names the FHIR element.

Mappings read resources as JSON (dicts) that already passed structural validation (the R4B
models, `fhir_adapter.validation`): parsing them once is the expensive part of an import."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import orjson
from sqlalchemy.orm import Session

from coordination.followup.protocol import ProtocolLibrary
from core.audit.service import Actor
from core.clock import Clock
from core.errors import FieldErrors
from core.models import Patient
from fhir_adapter.errors import FhirError, Issue

JSON = dict[str, Any]


@dataclass(frozen=True)
class Caller:
    """Who writes: the center a client acts for, and the actor the audit log records.
    (`fhir_adapter.bearer.FhirCaller` has these; tests may build one directly.)"""

    center_id: int
    state_id: int
    actor: Actor


@dataclass
class WriteContext:
    """One write (a single interaction, or one Bundle): the session, the clock, the caller,
    the protocols, and how references in the resources resolve (`resolve`: a reference as
    written -> (type, local id), or None when it names nothing the caller may see)."""

    session: Session
    clock: Clock
    caller: Caller
    library: ProtocolLibrary
    resolve: Callable[[str], tuple[str, int] | None]
    # Hints a Bundle gives a Patient it creates: its infusion Procedure's therapy and date.
    infusion_hints: dict[str, tuple[int | None, date | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Written:
    """What a create or update did: the local row, its version, when it changed, whether
    it was created and whether anything changed at all; `warnings` for the client."""

    resource_type: str
    local_id: int
    version_id: str
    last_updated: datetime
    created: bool
    changed: bool
    warnings: tuple[Issue, ...] = ()

    @property
    def location(self) -> str:
        return f"{self.resource_type}/{self.local_id}/_history/{self.version_id}"


def content_hash(resource: Mapping[str, Any]) -> str:
    """A digest of what a resource says, without what the server assigns (id, meta) or
    the narrative: the same content sent twice has the same digest."""
    kept = {key: value for key, value in resource.items() if key not in ("id", "meta", "text")}
    return hashlib.sha256(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)).hexdigest()


def unprocessable(diagnostics: str, *expression: str, code: str = "business-rule") -> FhirError:
    """A 422: the resource is well formed but breaks one of the platform's rules."""
    return FhirError.single(422, code, diagnostics, expression=tuple(expression))


@contextmanager
def field_errors_as(resource_type: str, fields: Mapping[str, str]) -> Iterator[None]:
    """Turn a service's FieldErrors into a 422 OperationOutcome, each problem naming the
    FHIR element it came from (`fields`: service field -> FHIRPath)."""
    try:
        yield
    except FieldErrors as problem:
        issues = [
            Issue(
                code="business-rule" if name not in ("unit", "value") else "value",
                diagnostics=str(message),
                expression=(fields.get(name, resource_type),),
            )
            for name, message in problem.errors.items()
        ]
        raise FhirError(status=422, issues=issues) from None


def reference_of(element: Any) -> str | None:
    """The `reference` of a Reference element, if any."""
    if isinstance(element, dict):
        reference = element.get("reference")
        return reference if isinstance(reference, str) else None
    return None


def patient_of(
    context: WriteContext, element: Any, *, expression: str, required: bool = True
) -> Patient | None:
    """The patient a Reference names, which must be one of the caller's center's; a
    reference to anyone else reads as unknown (nothing tells who else is enrolled)."""
    reference = reference_of(element)
    if reference is None:
        if required:
            raise unprocessable("The resource must name its patient.", expression)
        return None
    resolved = context.resolve(reference)
    if resolved is None or resolved[0] != "Patient":
        raise unprocessable(f"{reference} is not a patient known here.", expression)
    patient = context.session.get(Patient, resolved[1])
    if patient is None or patient.center_id != context.caller.center_id:
        raise unprocessable(f"{reference} is not a patient known here.", expression)
    return patient


def codings(concept: Any) -> list[tuple[str, str, str | None]]:
    """(system, code, display) of each coding of a CodeableConcept."""
    if not isinstance(concept, dict):
        return []
    found = []
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("code"):
            found.append((coding.get("system") or "", str(coding["code"]), coding.get("display")))
    return found


def concept_text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    for _system, _code, display in codings(concept):
        if display:
            return str(display)
    text = concept.get("text")
    return str(text) if text else None


def parse_day(text: Any) -> date | None:
    """A FHIR date or dateTime's calendar day as written (partial dates: None)."""
    if not isinstance(text, str) or len(text) < 10:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def parse_instant(text: Any, *, zone: Any = UTC) -> datetime | None:
    """A FHIR dateTime as an aware instant; a date alone is noon in `zone` (so its day stays
    the same in every US zone), a time without zone is taken in `zone`."""
    if not isinstance(text, str):
        return None
    if len(text) == 10:
        day = parse_day(text)
        return datetime.combine(day, time(12), tzinfo=zone).astimezone(UTC) if day else None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def effective_of(resource: JSON, *, zone: Any = UTC) -> datetime | None:
    """When an Observation (or the like) holds: effectiveDateTime, effectiveInstant, or the
    start of effectivePeriod."""
    for key in ("effectiveDateTime", "effectiveInstant", "issued"):
        if key in resource:
            found = parse_instant(resource[key], zone=zone)
            if found is not None:
                return found
    period = resource.get("effectivePeriod")
    if isinstance(period, dict):
        return parse_instant(period.get("start") or period.get("end"), zone=zone)
    return None


def identifiers(resource: JSON) -> list[tuple[str, str]]:
    """(system, value) of each identifier that has both."""
    found = []
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") and identifier.get("value"):
            found.append((str(identifier["system"]), str(identifier["value"])))
    return found


def integer_version(version: int) -> str:
    return str(version)


def timestamp_version(moment: datetime) -> str:
    """A version id for records that have no counter: the microsecond of their last change."""
    return str(int(moment.timestamp() * 1_000_000))
