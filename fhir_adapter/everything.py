"""`Patient/[id]/$everything` (R4 patient-operation-everything): the patient and everything
about them this server serves, in pages.

The resources come type by type (the Patient, its Procedure, Conditions, RelatedPersons,
Observations, Appointments, Encounters, the CarePlan), each type by id; a page continues where
the one before stopped (a type and an id: keyset paging across the types). As for searches,
the first page takes a snapshot (each table's highest id, and the total) that later pages
read again, and the state travels in the encrypted `_cursor`. `_since` keeps what changed at
or after an instant, `_type` names the types wanted, `_count` sizes the pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from fhir_adapter.bearer import FhirCaller
from fhir_adapter.errors import FhirError, Issue
from fhir_adapter.resources import JSON
from fhir_adapter.search import (
    CURSOR,
    DEFAULT_COUNT,
    bad_parameter,
    parse_count,
    refuse_nul,
    refuse_unknown,
    scoped,
)
from fhir_adapter.search_types import SEARCH_TYPES, Render, SearchType
from fhir_adapter.search_values import BadValue, parse_instant, quoted

# In the order a page serves them: the patient first, then what is about them.
EVERYTHING_TYPES = (
    "Patient",
    "Procedure",
    "Condition",
    "RelatedPerson",
    "Observation",
    "Appointment",
    "Encounter",
    "CarePlan",
    "QuestionnaireResponse",
)
_TRANSPORT = frozenset({"_format", "_pretty"})
_VERSION = 1


@dataclass(frozen=True)
class EverythingRequest:
    """`$everything` as asked: the types (all the caller may see by default), `_since`,
    `_count`, and what was ignored."""

    patient_id: int
    types: tuple[str, ...]
    since: datetime | None = None
    count: int = DEFAULT_COUNT
    ignored: tuple[str, ...] = ()
    accepted: tuple[tuple[str, str], ...] = ()
    asked_types: bool = False

    @property
    def parameter_names(self) -> list[str]:
        return sorted({name for name, _ in self.accepted})


def parse_everything(
    patient_id: int, pairs: Sequence[tuple[str, str]], *, strict: bool
) -> EverythingRequest:
    """The `$everything` that `pairs` ask for (types not yet narrowed to the caller's scope)."""
    refuse_nul(pairs)
    types: list[str] = []
    since: datetime | None = None
    count = DEFAULT_COUNT
    ignored: list[str] = []
    accepted: list[tuple[str, str]] = []
    for key, value in pairs:
        if key in _TRANSPORT or key == CURSOR:
            continue
        if key == "_type":
            for name in (part.strip() for part in value.split(",")):
                if name not in EVERYTHING_TYPES:
                    raise bad_parameter(
                        "_type",
                        f"{quoted(name)} is not served by $everything (served: "
                        + ", ".join(EVERYTHING_TYPES)
                        + ")",
                        "not-supported",
                    )
                types.append(name)
        elif key == "_since":
            try:
                since = parse_instant(value)
            except BadValue as bad:
                raise bad_parameter("_since", bad.problem, bad.code) from None
        elif key == "_count":
            count = parse_count(value)
        else:
            ignored.append(key.partition(":")[0])
            continue
        accepted.append((key, value))
    refuse_unknown(ignored, resource_type="Patient/$everything", strict=strict)
    wanted = tuple(name for name in EVERYTHING_TYPES if name in types) or EVERYTHING_TYPES
    return EverythingRequest(
        patient_id=patient_id,
        types=wanted,
        since=since,
        count=count,
        ignored=tuple(sorted(set(ignored))),
        accepted=tuple(accepted),
        asked_types=bool(types),
    )


@dataclass(frozen=True)
class EverythingSnapshot:
    """Each type's highest id when the first page was served, and the total then."""

    high_ids: dict[str, int]
    total: int


@dataclass
class EverythingPage:
    """A page: the resources, the patients they are about, and where the next one starts
    (None: this is the last)."""

    resources: list[JSON] = field(default_factory=list)
    next_position: tuple[int, int] | None = None


def _query(spec: SearchType, request: EverythingRequest, caller: FhirCaller, high_id: int) -> Any:
    query = scoped(spec, select(spec.entity), caller).where(
        spec.patient_id == request.patient_id, spec.id <= high_id
    )
    if request.since is not None:
        query = query.where(spec.last_updated >= request.since)
    return query


def _count_of(
    session: Session, spec: SearchType, request: EverythingRequest, caller: FhirCaller, high: int
) -> int:
    condition: list[ColumnElement[bool]] = [
        spec.patient_id == request.patient_id,
        spec.id <= high,
    ]
    if request.since is not None:
        condition.append(spec.last_updated >= request.since)
    counted = scoped(spec, select(func.count(spec.id)), caller).where(*condition)
    return session.scalar(counted) or 0


def everything_snapshot(
    session: Session, *, caller: FhirCaller, request: EverythingRequest
) -> EverythingSnapshot:
    """The snapshot of a first page: the highest ids now, and how many resources in all."""
    high_ids: dict[str, int] = {}
    total = 0
    for name in request.types:
        spec = SEARCH_TYPES[name]
        high_ids[name] = session.scalar(select(func.max(spec.id))) or 0
        total += _count_of(session, spec, request, caller, high_ids[name])
    return EverythingSnapshot(high_ids=high_ids, total=total)


def everything_page(
    session: Session,
    *,
    caller: FhirCaller,
    render: Render,
    request: EverythingRequest,
    snapshot: EverythingSnapshot,
    position: tuple[int, int] | None,
) -> EverythingPage:
    """The page that starts at `position` (the index of a type in `request.types` and the
    last id served of it; None: the beginning)."""
    page = EverythingPage()
    if request.count == 0:
        return page
    room = request.count
    start_type, start_id = position or (0, 0)
    for index in range(start_type, len(request.types)):
        name = request.types[index]
        spec = SEARCH_TYPES[name]
        after = start_id if index == start_type else 0
        rows = list(
            session.scalars(
                _query(spec, request, caller, snapshot.high_ids.get(name, 0))
                .where(spec.id > after)
                .order_by(spec.id)
                .limit(room + 1)
                .options(*spec.options)
            ).unique()
        )
        taken = rows[:room]
        page.resources += spec.render(render, taken)
        if len(rows) > room:
            page.next_position = (index, getattr(taken[-1], spec.id.key) if taken else after)
            return page
        room -= len(taken)
    return page


def left_out(
    request: EverythingRequest, allowed: Sequence[str]
) -> tuple[EverythingRequest, Issue | None]:
    """The request narrowed to the types the token may search, and the warning that says
    which were left out (a `_type` naming one is refused by the route before this)."""
    kept = tuple(name for name in request.types if name in allowed)
    dropped = [name for name in request.types if name not in allowed]
    if not dropped:
        return request, None
    issue = Issue(
        code="suppressed",
        diagnostics="Left out because the access token does not allow searching them: "
        + ", ".join(dropped),
        severity="warning",
    )
    return replace(request, types=kept), issue


def everything_payload(
    request: EverythingRequest, snapshot: EverythingSnapshot, position: tuple[int, int] | None
) -> dict[str, Any]:
    """What an `$everything` paging link carries."""
    return {
        "v": _VERSION,
        "q": [list(pair) for pair in request.accepted],
        "i": list(request.ignored),
        "ty": list(request.types),
        "hw": snapshot.high_ids,
        "tot": snapshot.total,
        "p": list(position) if position is not None else None,
    }


def everything_from_cursor(
    patient_id: int, payload: dict[str, Any]
) -> tuple[EverythingRequest, EverythingSnapshot, tuple[int, int] | None]:
    """The request, snapshot and position an authenticated cursor carries."""
    try:
        if payload.get("v") != _VERSION:
            raise ValueError("another version")
        pairs = [(str(key), str(value)) for key, value in payload["q"]]
        request = parse_everything(patient_id, pairs, strict=False)
        types = tuple(str(name) for name in payload["ty"])
        if any(name not in EVERYTHING_TYPES for name in types):
            raise ValueError("unknown type")
        request = replace(request, types=types, ignored=tuple(str(name) for name in payload["i"]))
        snapshot = EverythingSnapshot(
            high_ids={str(name): int(high) for name, high in payload["hw"].items()},
            total=int(payload["tot"]),
        )
        raw = payload["p"]
        position = (int(raw[0]), int(raw[1])) if raw is not None else None
    except (KeyError, TypeError, ValueError, AttributeError):
        raise FhirError.single(
            400, "invalid", "_cursor: this paging link is not valid; run $everything again"
        ) from None
    return request, snapshot, position
