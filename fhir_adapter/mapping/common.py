"""What every inbound mapping needs: the context of a write (who, for which center, how
references resolve), reading FHIR's small types (references, codings, dates), and turning
a service's FieldErrors into an OperationOutcome that names the FHIR element.

Mappings read resources as JSON (dicts) that already passed structural validation (the R4B
models, `fhir_adapter.validation`): parsing them once is the expensive part of an import."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any, TypeVar, cast

import orjson
from sqlalchemy import insert
from sqlalchemy.orm import Session

from coordination.followup.protocol import ProtocolLibrary
from core.audit.service import Actor
from core.clock import Clock
from core.db import table_of
from core.errors import FieldErrors
from core.models import Patient, State, TreatmentCenter
from fhir_adapter.errors import FhirError, Issue
from fhir_adapter.models import ResourceIdentifier, ResourceKey
from fhir_adapter.schema import Segment, fhirpath

JSON = dict[str, Any]
_Row = TypeVar("_Row")


@dataclass(frozen=True)
class Caller:
    """Who writes: the center a client acts for, and the actor the audit log records.
    (`fhir_adapter.bearer.FhirCaller` has these; tests may build one directly.)"""

    center_id: int
    state_id: int
    actor: Actor


@dataclass
class Lookups:
    """What one write already knows of the center's records, so that a Bundle asks the
    database once per group of entries instead of once per entry (see `writes.prefetch`).
    A key present with None is known to match nothing.

    - `owners`: (type, system, value) -> the record the center gave that identifier;
    - `patients_by`: (system, value as stored) -> the center's patient with that Medicaid ID
      or record number (the identifiers a Patient is found by in its own columns);
    - `digests`: (type, content digest) -> the records last sent with that content;
    - `hashes`: (type, local id) -> the digest of the record's content as last accepted;
    - `fresh`: (type, local id) of rows made by this write that no resource has become yet
      (a new patient is no infusion Procedure yet): they have no key and no identifiers."""

    owners: dict[tuple[str, str, str], int | None] = field(default_factory=dict)
    patients_by: dict[tuple[str, str], int | None] = field(default_factory=dict)
    digests: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    hashes: dict[tuple[str, int], str | None] = field(default_factory=dict)
    fresh: set[tuple[str, int]] = field(default_factory=set)
    # Keys and identifiers to store (`WriteContext.store_keys`): one INSERT each per group.
    new_keys: list[dict[str, Any]] = field(default_factory=list)
    new_identifiers: list[dict[str, Any]] = field(default_factory=list)
    # The keys of `owners` and `patients_by` that name each record (to forget them at once).
    _owned: dict[tuple[str, int], set[tuple[str, str, str]]] = field(default_factory=dict)
    _patient_keys: dict[int, set[tuple[str, str]]] = field(default_factory=dict)

    def set_owner(self, key: tuple[str, str, str], local_id: int | None) -> None:
        """The record of type key[0] that the center gave identifier key[1:] (None: none)."""
        previous = self.owners.get(key)
        if previous is not None:
            self._owned.get((key[0], previous), set()).discard(key)
        self.owners[key] = local_id
        if local_id is not None:
            self._owned.setdefault((key[0], local_id), set()).add(key)

    def release(self, resource_type: str, local_id: int) -> None:
        """The record's identifiers are no longer known to be its own."""
        for key in self._owned.pop((resource_type, local_id), set()):
            self.owners[key] = None

    def set_patient(self, key: tuple[str, str], local_id: int | None) -> None:
        """The center's patient with this Medicaid ID or MRN (system, value) (None: none)."""
        previous = self.patients_by.get(key)
        if previous is not None:
            self._patient_keys.get(previous, set()).discard(key)
        self.patients_by[key] = local_id
        if local_id is not None:
            self._patient_keys.setdefault(local_id, set()).add(key)

    def release_patient(self, local_id: int) -> None:
        """The patient's Medicaid ID and MRN are no longer known to be theirs."""
        for key in self._patient_keys.pop(local_id, set()):
            self.patients_by[key] = None


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
    # Set by a transaction: the patients it enrols, whose schedules are made together once
    # every Patient entry is written (`coordination.records.schedule_new_patients`).
    new_patients: list[Patient] | None = None
    lookups: Lookups = field(default_factory=Lookups)
    # The rows this write read or wrote, held here because the session's identity map holds
    # them only weakly: a Bundle would otherwise read the same patient for each of its
    # results, and the caller's state and center for each entry.
    rows: dict[tuple[type[Any], int], Any] = field(default_factory=dict)
    # (system, code) -> the therapy it names (None: none), as read once.
    therapies: dict[tuple[str, str], int | None] = field(default_factory=dict)
    # Set by a transaction: keys and identifiers are stored once per group of entries, not
    # at the end of each write (`store_keys`).
    batched: bool = False

    def get(self, model: type[_Row], local_id: int) -> _Row | None:
        """The row by primary key, read once per write (None for an id no row can have)."""
        if not 0 < local_id < 2**31:  # larger ids overflow the databases' integers
            return None
        key = (model, local_id)
        found = self.rows.get(key)
        if found is None:
            found = self.session.get(model, local_id)
            if found is not None:
                self.rows[key] = found
        return cast("_Row | None", found)

    def keep(self, row: Any) -> None:
        """Hold a row this write read or made (see `rows`)."""
        self.rows[(type(row), row.id)] = row

    def store_keys(self) -> None:
        """Store the resource keys and identifiers the writes so far gave records (before
        anything reads those tables, and before the write ends)."""
        lookups = self.lookups
        if lookups.new_keys:
            self.session.execute(insert(table_of(ResourceKey)), lookups.new_keys)
            lookups.new_keys = []
        if lookups.new_identifiers:
            self.session.execute(insert(table_of(ResourceIdentifier)), lookups.new_identifiers)
            lookups.new_identifiers = []

    def forget(self) -> None:
        """Drop what this write knows (after a savepoint rolled back: rows made in it are
        gone, and so are the identifiers and digests they had)."""
        self.rows.clear()
        self.therapies.clear()
        self.lookups = Lookups()

    def state(self) -> State:
        """The caller's state."""
        state = self.get(State, self.caller.state_id)
        assert state is not None
        return state

    def center(self) -> TreatmentCenter:
        """The caller's center."""
        center = self.get(TreatmentCenter, self.caller.center_id)
        assert center is not None
        return center

    def patient(self, local_id: int) -> Patient | None:
        """The caller's center's patient with this id; None for anyone else's."""
        patient = self.get(Patient, local_id)
        return (
            patient if patient is not None and patient.center_id == self.caller.center_id else None
        )


class Refused(Exception):
    """One of several resources written together is refused: `index` says which."""

    def __init__(self, index: int, error: FhirError) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


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
    patient_id: int | None = None  # the patient the record concerns (for the audit log)

    @property
    def location(self) -> str:
        return f"{self.resource_type}/{self.local_id}/_history/{self.version_id}"


def content_hash(resource: Mapping[str, Any]) -> str:
    """A digest of what a resource says, without what the server assigns (id, meta) or
    the narrative: the same content sent twice has the same digest."""
    kept = {key: value for key, value in resource.items() if key not in ("id", "meta", "text")}
    return hashlib.sha256(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)).hexdigest()


# FHIR strings hold no control characters but tab, carriage return and line feed (R4
# datatypes, string); PostgreSQL cannot even store U+0000 in text or JSON.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
_MAX_LISTED = 10


# How JSON writes a control character: orjson escapes each one (\b, \f, \u0000...), so
# JSON without these escapes holds none. Another backslash before one (a string holding
# `\\b`) only sends the JSON to the walk below, which judges it.
_CONTROL_ESCAPE = re.compile(rb"\\(?:u00[01][0-9a-fA-F]|[bf])")


def _may_hold_control_characters(data: Any) -> bool:
    """False when no string of `data` can hold a control character: one search of its JSON,
    instead of a walk over every element (a transaction has hundreds of thousands)."""
    try:
        written = orjson.dumps(data)
    except TypeError:  # not plain JSON (a number beyond 64 bits...): let the walk judge it
        return True
    return _CONTROL_ESCAPE.search(written) is not None


def refuse_control_characters(data: Any, root: str) -> None:
    """A 400 naming the elements whose strings hold control characters, if any."""
    issues = control_character_issues(data, root)
    if issues:
        raise FhirError(status=400, issues=issues)


def control_character_issues(data: Any, root: str) -> list[Issue]:
    """An issue for each element (the first ten) whose string holds a control character."""
    if not _may_hold_control_characters(data):
        return []
    found: list[str] = []

    def visit(value: Any, path: tuple[Segment, ...]) -> None:
        if len(found) >= _MAX_LISTED:
            return
        if isinstance(value, str):
            if _CONTROL.search(value):
                found.append(fhirpath(path))
        elif isinstance(value, dict):
            for key, item in value.items():
                visit(item, (*path, str(key).removeprefix("_")))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                visit(item, (*path, index))

    visit(data, (root,))
    return [
        Issue(
            code="invalid",
            diagnostics="FHIR strings hold no control characters (U+0000 to U+001F) but "
            "tab, carriage return and line feed.",
            expression=(expression,),
        )
        for expression in found
    ]


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
        raise refusal_of(problem, resource_type, fields) from None


def refusal_of(problem: FieldErrors, resource_type: str, fields: Mapping[str, str]) -> FhirError:
    """A service's FieldErrors as a 422 OperationOutcome (see `field_errors_as`)."""
    issues = [
        Issue(
            code="business-rule" if name not in ("unit", "value") else "value",
            diagnostics=str(message),
            expression=(fields.get(name, resource_type),),
        )
        for name, message in problem.errors.items()
    ]
    return FhirError(status=422, issues=issues)


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
    patient = context.patient(resolved[1])
    if patient is None:
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


# The years an instant of a patient's care can fall in: FHIR writes years 0001 to 9999,
# whose extremes cannot even be moved to another time zone.
EARLIEST_YEAR, LATEST_YEAR = 1800, 2200


def parse_instant(text: Any, *, zone: Any = UTC) -> datetime | None:
    """A FHIR dateTime as an aware instant; a date alone is noon in `zone` (so its day stays
    the same in every US zone), a time without zone is taken in `zone`. None when it is not
    one, or falls outside the years EARLIEST_YEAR to LATEST_YEAR."""
    if not isinstance(text, str):
        return None
    try:
        if len(text) == 10:
            day = parse_day(text)
            if day is None:
                return None
            moment = datetime.combine(day, time(12), tzinfo=zone)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=zone)
        if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
            return None
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


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
