"""Searching one resource type (R4 search.html): reading the request, building the query in
the caller's center, and paging it by keyset.

- **The request**: `parse_search` reads the parameters (query string or form) into a
  `SearchRequest`. Parameters this server does not know are ignored and named in the
  answer, or refused with `Prefer: handling=strict`; a value a known parameter cannot take
  (a date like `2026-13-40`, a bad prefix, a modifier not served) is a 400 either way.
  Repeating a parameter is AND, commas within one are OR.
- **The center**: every query joins `patients` on the row's patient and keeps the caller's
  center only (`own_patients`), includes and cursors too.
- **Paging**: ordered by `(sort key, id)`; a page starts after (or, for `previous`, before)
  the last row of the one before, so page 100 costs what page 1 costs. The first page takes
  a snapshot: the table's highest id (and, sorted by `_lastUpdated`, the instant), and the
  total; later pages read the same snapshot, so the total stays put and rows created while
  a client pages do not shift pages (they are in the next search). The state travels in the
  opaque, encrypted `_cursor` of the links (`search_cursor.py`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from core.clock import Clock
from core.models import Patient
from fhir_adapter.bearer import FhirCaller, own_patients
from fhir_adapter.errors import FhirError, Issue
from fhir_adapter.resources import JSON
from fhir_adapter.search_types import REVINCLUDES, SEARCH_TYPES, Render, SearchType, Sql, Where
from fhir_adapter.search_values import BadValue, or_values, quoted

DEFAULT_COUNT = 50
MAX_COUNT = 1000
# Resources a `_revinclude` adds to one page at most (a page of 1,000 patients with 30
# observations each would otherwise be 31,000 resources); past it the page says so.
MAX_REVINCLUDED = 5000
# `_total`'s values: an estimate is served as the exact count.
_TOTALS = ("none", "estimate", "accurate")
# Read by content negotiation before the search sees the request.
_TRANSPORT = frozenset({"_format", "_pretty"})
CURSOR = "_cursor"
_MAX_PARAMETERS = 100


def bad_parameter(name: str, problem: str, code: str = "invalid") -> FhirError:
    """The 400 naming a parameter and what is wrong with its value."""
    return FhirError.single(400, code, f"{name[:64]}: {problem}")


def ignored_issues(
    names: Iterable[str], *, resource_type: str, severity: str = "warning"
) -> list[Issue]:
    """What the answer says of parameters this server does not know (names, no values)."""
    return [
        Issue(
            code="not-supported",
            diagnostics=f"The search parameter {name[:64]} is not supported on "
            f"{resource_type} and was ignored",
            severity=severity,
        )
        for name in sorted(set(names))
    ]


def refuse_unknown(names: Sequence[str], *, resource_type: str, strict: bool) -> None:
    """Under `Prefer: handling=strict`, parameters this server does not know are a 400."""
    if strict and names:
        raise FhirError(400, ignored_issues(names, resource_type=resource_type, severity="error"))


def prefers_strict(prefer: str | None) -> bool:
    """`Prefer: handling=strict` (R4 search.html#errors); lenient is the default."""
    for part in (prefer or "").replace(";", ",").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "handling" and value.strip().strip('"').lower() == "strict":
            return True
    return False


# --- the request ----------------------------------------------------------------------


@dataclass(frozen=True)
class Criterion:
    """One occurrence of a search parameter: `name[:modifier]=value` (alternatives by comma),
    or a chain through the patient: `patient.identifier=...` (`chain` the Patient parameter,
    `modifier` its modifier)."""

    name: str
    modifier: str | None
    value: str
    chain: str | None = None


@dataclass(frozen=True)
class SearchRequest:
    """A search as the client asked for it, read and checked."""

    spec: SearchType
    criteria: tuple[Criterion, ...]
    count: int = DEFAULT_COUNT
    sort: str = "_id"
    descending: bool = False
    total: bool = True
    includes: tuple[str, ...] = ()
    revincludes: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    # What the cursor carries to repeat the search: the accepted parameters as sent.
    accepted: tuple[tuple[str, str], ...] = ()

    @property
    def parameter_names(self) -> list[str]:
        """The names of the parameters used (for the audit log: never their values)."""
        return sorted(
            {
                f"{criterion.name}.{criterion.chain}" if criterion.chain else criterion.name
                for criterion in self.criteria
            }
        )


def refuse_nul(pairs: Sequence[tuple[str, str]]) -> None:
    """No search value holds a NUL character: nobody means one, and PostgreSQL cannot
    compare one (the search would end in a 500)."""
    if any("\x00" in key or "\x00" in value for key, value in pairs):
        raise FhirError.single(400, "invalid", "A search parameter holds a NUL character")


def parse_count(value: str) -> int:
    """`_count`: 0 (the total only) up to MAX_COUNT (more is served as MAX_COUNT)."""
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise bad_parameter("_count", f"{quoted(value)} is not a number of resources")
    return min(int(text), MAX_COUNT)


def parse_search(
    spec: SearchType, pairs: Sequence[tuple[str, str]], *, strict: bool
) -> SearchRequest:
    """The search that `pairs` (the query string's or form's, in order) ask for."""
    if len(pairs) > _MAX_PARAMETERS:
        raise FhirError.single(
            400, "too-costly", f"A search takes at most {_MAX_PARAMETERS} parameters"
        )
    refuse_nul(pairs)
    criteria: list[Criterion] = []
    ignored: list[str] = []
    accepted: list[tuple[str, str]] = []
    options: dict[str, Any] = {"includes": [], "revincludes": []}
    for key, value in pairs:
        if key in _TRANSPORT or key == CURSOR:
            continue
        head, dot, chain = key.partition(".")
        if dot:
            criterion = _chained(spec, head, chain, value)
            if criterion is not None:
                criteria.append(criterion)
                accepted.append((key, value))
            elif head.partition(":")[0] not in spec.params:
                ignored.append(head.partition(":")[0])
            continue
        name, colon, modifier = key.partition(":")
        if name.startswith("_") and name not in spec.params:
            if _result_parameter(spec, name, modifier if colon else None, value, options):
                accepted.append((key, value))
            else:
                ignored.append(name)
            continue
        param = spec.params.get(name)
        if param is None:
            ignored.append(name)
            continue
        if colon and modifier not in param.modifiers:
            raise bad_parameter(
                key,
                f"the modifier :{modifier[:20]} is not supported here",
                "not-supported",
            )
        if not value:
            continue  # FHIR: an empty parameter is as if it was not sent
        criteria.append(Criterion(name, modifier if colon else None, value))
        accepted.append((key, value))
    refuse_unknown(ignored, resource_type=spec.name, strict=strict)
    return SearchRequest(
        spec=spec,
        criteria=tuple(criteria),
        count=options.get("count", DEFAULT_COUNT),
        sort=options.get("sort", "_id"),
        descending=options.get("descending", False),
        total=options.get("total", True),
        includes=tuple(dict.fromkeys(options["includes"])),
        revincludes=tuple(dict.fromkeys(options["revincludes"])),
        ignored=tuple(sorted(set(ignored))),
        accepted=tuple(accepted),
    )


def _chained(spec: SearchType, head: str, chain: str, value: str) -> Criterion | None:
    """`patient.identifier=system|value` (or `subject:Patient.name=...`): the rows of the
    patients the chained Patient parameter finds. None when `head` is no parameter here (the
    caller ignores it); 400 for a chain this server does not follow."""
    name, colon, modifier = head.partition(":")
    param = spec.params.get(name)
    if param is None:
        return None
    patient_params = SEARCH_TYPES["Patient"].params
    chain_name, chain_colon, chain_modifier = chain.partition(":")
    if (
        param.kind != "reference"
        or (colon and modifier not in param.modifiers)
        or chain_name not in patient_params
        or (chain_colon and chain_modifier not in patient_params[chain_name].modifiers)
    ):
        raise bad_parameter(
            f"{head}.{chain}"[:64],
            "this chain is not supported (the patient's own parameters are: "
            + ", ".join(patient_params)
            + ")",
            "not-supported",
        )
    if not value:
        return None
    return Criterion(name, chain_modifier if chain_colon else None, value, chain=chain_name)


def _result_parameter(
    spec: SearchType, name: str, modifier: str | None, value: str, options: dict[str, Any]
) -> bool:
    """Read a parameter that shapes the answer into `options`; False when it is not one this
    server serves (the caller ignores or refuses it)."""
    if modifier is not None and name in ("_count", "_sort", "_total", "_summary"):
        raise bad_parameter(f"{name}:{modifier}", "takes no modifier", "not-supported")
    match name:
        case "_count":
            options["count"] = parse_count(value)
        case "_summary":
            if value == "count":
                options["count"] = 0
            elif value != "false":
                return False  # true, text, data: the whole resources are served instead
        case "_total":
            if value not in _TOTALS:
                raise bad_parameter("_total", f"is one of {', '.join(_TOTALS)}")
            options["total"] = value != "none"
        case "_sort":
            keys = [part.strip() for part in value.split(",") if part.strip()]
            if len(keys) != 1:
                raise bad_parameter("_sort", "sorts by one key here", "not-supported")
            descending = keys[0].startswith("-")
            key = keys[0].removeprefix("-")
            if key != "_id" and key not in spec.sorts:
                served = ", ".join(["_id", *spec.sorts])
                raise bad_parameter(
                    "_sort", f"{spec.name} sorts by {served} (- for descending)", "not-supported"
                )
            options["sort"], options["descending"] = key, descending
        case "_include" | "_revinclude":
            if modifier is not None:
                raise bad_parameter(
                    f"{name}:{modifier[:20]}", "iterate is not supported", "not-supported"
                )
            offered = spec.includes if name == "_include" else _revincludes(spec)
            for item in value.split(","):
                if item not in offered:
                    listed = ", ".join(offered) or "none"
                    raise bad_parameter(
                        name,
                        f"{quoted(item)} is not served on {spec.name} (served: {listed})",
                        "not-supported",
                    )
                options["includes" if name == "_include" else "revincludes"].append(item)
        case _:
            return False
    return True


def _revincludes(spec: SearchType) -> tuple[str, ...]:
    return REVINCLUDES if spec.name == "Patient" else ()


# Every `_include` served points at the patient (`Observation:patient`, ...).
INCLUDED_TYPE = "Patient"


def revinclude_source(revinclude: str) -> SearchType:
    """The type a `_revinclude` adds (`Observation:patient` adds Observations)."""
    return SEARCH_TYPES[revinclude.partition(":")[0]]


# --- the query ------------------------------------------------------------------------------


def scoped(spec: SearchType, query: Select[Any], caller: FhirCaller) -> Select[Any]:
    """`query` over `spec`'s rows, narrowed to the caller's center's patients (and to the
    rows that are resources of the type)."""
    if not spec.is_patient_table:
        query = query.join(Patient, Patient.id == spec.patient_id)
    query = own_patients(query, caller)
    return query.where(spec.only) if spec.only is not None else query


def conditions(
    request: SearchRequest, session: Session, caller: FhirCaller
) -> list[ColumnElement[bool]]:
    """The SQL of the request's criteria: AND over occurrences, OR over alternatives."""
    where = Where(session, caller)
    built: list[ColumnElement[bool]] = []
    for criterion in request.criteria:
        spec = SEARCH_TYPES["Patient"] if criterion.chain else request.spec
        param = spec.params[criterion.chain or criterion.name]
        try:
            alternatives = [
                param.condition(where, alternative, criterion.modifier)
                for alternative in or_values(criterion.value)
            ]
        except BadValue as bad:
            shown = f"{criterion.name}.{criterion.chain}" if criterion.chain else criterion.name
            raise bad_parameter(shown, bad.problem, bad.code) from None
        # A chain (`patient.identifier`) is a condition on the row's patient: every query
        # joins `patients` already (`scoped`).
        built.append(or_(*alternatives) if len(alternatives) > 1 else alternatives[0])
    return built


@dataclass(frozen=True)
class Snapshot:
    """What the first page saw, which every later page reads again: rows up to `high_id`
    (and, sorted by `_lastUpdated`, changed by `at`), `total` of them (None: not counted)."""

    high_id: int
    at: datetime
    total: int | None


@dataclass(frozen=True)
class Position:
    """Where a page starts: after (or `before`) the row with this sort key and id."""

    key: Any
    id: int
    before: bool = False


def _sort_key(request: SearchRequest) -> Sql:
    spec = request.spec
    return spec.id if request.sort == "_id" else spec.sorts[request.sort]


def _snapshot_bounds(request: SearchRequest, snapshot: Snapshot) -> list[ColumnElement[bool]]:
    bounds: list[ColumnElement[bool]] = [request.spec.id <= snapshot.high_id]
    if request.sort == "_lastUpdated":
        # An update moves a row to the end of this order: a row changed after the first
        # page would show twice; it is in the next incremental search instead.
        bounds.append(request.spec.last_updated <= snapshot.at)
    return bounds


def take_snapshot(session: Session, *, clock: Clock, request: SearchRequest) -> Snapshot:
    """The snapshot of a first page: the highest id now and the instant (the total is
    `counted` once the first page is read)."""
    high_id = session.scalar(select(func.max(request.spec.id))) or 0
    return Snapshot(high_id=high_id, at=clock.now(), total=None)


def counted(
    session: Session,
    *,
    caller: FhirCaller,
    request: SearchRequest,
    where: list[ColumnElement[bool]],
    snapshot: Snapshot,
    first_page: Page,
) -> Snapshot:
    """The snapshot with its total (unless `_total=none`): a first page that holds every
    match is the count itself; otherwise one count query."""
    if not request.total:
        return snapshot
    if request.count > 0 and not first_page.has_next:
        return replace(snapshot, total=len(first_page.rows))
    spec = request.spec
    query = scoped(spec, select(func.count(spec.id)), caller).where(
        *where, *_snapshot_bounds(request, snapshot)
    )
    return replace(snapshot, total=session.scalar(query) or 0)


def _after(key: Sql, id_: Sql, position: Position, descending: bool) -> ColumnElement[bool]:
    """Rows after `position` in the order (before it when walking backwards)."""
    forward = not descending if not position.before else descending
    if key is id_:
        return id_ > position.id if forward else id_ < position.id
    if forward:
        return or_(key > position.key, and_(key == position.key, id_ > position.id))
    return or_(key < position.key, and_(key == position.key, id_ < position.id))


@dataclass
class Page:
    """One page of a search: its rows in order, and whether there are more either side."""

    rows: list[Any]
    has_next: bool
    has_previous: bool
    first: Position | None = None
    last: Position | None = None


def fetch_page(
    session: Session,
    *,
    caller: FhirCaller,
    request: SearchRequest,
    where: list[ColumnElement[bool]],
    snapshot: Snapshot,
    position: Position | None,
) -> Page:
    """The page of `request.count` rows that starts at `position` (the first page: None)."""
    spec = request.spec
    if request.count == 0:
        return Page(rows=[], has_next=False, has_previous=False)
    key = _sort_key(request)
    backwards = position is not None and position.before
    descending = request.descending != backwards
    query = scoped(spec, select(spec.entity), caller).where(
        *where, *_snapshot_bounds(request, snapshot)
    )
    if position is not None:
        query = query.where(_after(key, spec.id, position, request.descending))
    by_id = request.sort == "_id"
    if descending:
        order = [spec.id.desc()] if by_id else [key.desc(), spec.id.desc()]
    else:
        order = [spec.id.asc()] if by_id else [key.asc(), spec.id.asc()]
    query = query.order_by(*order).limit(request.count + 1).options(*spec.options)
    rows = list(session.scalars(query).unique())
    more = len(rows) > request.count
    rows = rows[: request.count]
    if backwards:
        rows.reverse()
        has_next, has_previous = True, more
    else:
        has_next, has_previous = more, position is not None
    page = Page(rows=rows, has_next=has_next, has_previous=has_previous)
    if rows:
        page.first = _position_of(request, rows[0])
        page.last = _position_of(request, rows[-1])
    return page


def _position_of(request: SearchRequest, row: Any) -> Position:
    spec = request.spec
    row_id = getattr(row, spec.id.key)
    if request.sort == "_id":
        return Position(key=row_id, id=row_id)
    if request.sort == "_lastUpdated":
        key = getattr(row, "updated_at", None) or row.created_at
    else:  # Observation's date
        key = row.effective_at
    return Position(key=key, id=row_id)


# --- includes -------------------------------------------------------------------------


@dataclass
class Included:
    """What the includes add to a page, and the patients they are about."""

    resources: list[JSON] = field(default_factory=list)
    patient_ids: set[int] = field(default_factory=set)
    warnings: list[Issue] = field(default_factory=list)


def patient_of(spec: SearchType, row: Any) -> int:
    """The patient a row is about."""
    value: int = getattr(row, spec.patient_id.key)
    return value


def include(
    session: Session,
    *,
    caller: FhirCaller,
    render: Render,
    request: SearchRequest,
    rows: Sequence[Any],
) -> Included:
    """The `_include`d patients and `_revinclude`d resources of a page's rows, from the
    caller's center only (the rows are, so what they point at is)."""
    included = Included()
    spec = request.spec
    if request.includes and rows:
        ids = sorted({patient_of(spec, row) for row in rows})
        patients = list(
            session.scalars(
                own_patients(select(Patient).where(Patient.id.in_(ids)), caller).order_by(
                    Patient.id
                )
            )
        )
        included.resources += SEARCH_TYPES["Patient"].render(render, patients)
        included.patient_ids.update(patient.id for patient in patients)
    room = MAX_REVINCLUDED
    page_patients = sorted({patient_of(spec, row) for row in rows})
    for revinclude in request.revincludes:
        if not page_patients:
            break
        source = revinclude_source(revinclude)
        found = list(
            session.scalars(
                scoped(source, select(source.entity), caller)
                .where(source.patient_id.in_(page_patients))
                .order_by(source.id)
                .limit(room + 1)
                .options(*source.options)
            ).unique()
        )
        if len(found) > room:
            found = found[:room]
            included.warnings.append(
                Issue(
                    code="too-costly",
                    diagnostics=f"_revinclude added the first {MAX_REVINCLUDED} resources of "
                    "this page's patients only; ask for fewer patients per page (_count) or "
                    f"search {source.name}?patient=... for the rest",
                    severity="warning",
                )
            )
        included.resources += source.render(render, found)
        included.patient_ids.update(patient_of(source, row) for row in found)
        room -= len(found)
        if room <= 0:
            break
    return _without_duplicates(included)


def _without_duplicates(included: Included) -> Included:
    seen: set[tuple[str, str]] = set()
    unique = []
    for resource in included.resources:
        identity = (resource["resourceType"], resource["id"])
        if identity not in seen:
            seen.add(identity)
            unique.append(resource)
    included.resources = unique
    return included


# --- the cursor's content ------------------------------------------------------------------

_VERSION = 1


def cursor_payload(
    request: SearchRequest, snapshot: Snapshot, position: Position | None
) -> dict[str, Any]:
    """What a paging link carries (sealed by `search_cursor.seal`): the search as sent, its
    snapshot and where the page starts."""
    payload: dict[str, Any] = {
        "v": _VERSION,
        "q": [list(pair) for pair in request.accepted],
        "i": list(request.ignored),
        "hw": snapshot.high_id,
        "at": snapshot.at.isoformat(),
        "tot": snapshot.total,
        "p": None,
    }
    if position is not None:
        key = position.key.isoformat() if isinstance(position.key, datetime) else position.key
        payload["p"] = [1 if position.before else 0, key, position.id]
    return payload


def from_cursor(
    spec: SearchType, payload: dict[str, Any]
) -> tuple[SearchRequest, Snapshot, Position | None]:
    """The search, snapshot and position a cursor's payload carries (already authenticated:
    a payload that does not read is this server's fault, answered as a bad cursor)."""
    try:
        if payload.get("v") != _VERSION:
            raise ValueError("another version")
        pairs = [(str(key), str(value)) for key, value in payload["q"]]
        request = replace(
            parse_search(spec, pairs, strict=False),
            ignored=tuple(str(name) for name in payload["i"]),
        )
        snapshot = Snapshot(
            high_id=int(payload["hw"]),
            at=datetime.fromisoformat(payload["at"]),
            total=None if payload["tot"] is None else int(payload["tot"]),
        )
        position = None
        if payload["p"] is not None:
            before, key, id_ = payload["p"]
            if request.sort != "_id":
                key = datetime.fromisoformat(key)
            position = Position(key=key, id=int(id_), before=bool(before))
    except (KeyError, TypeError, ValueError):
        raise FhirError.single(
            400, "invalid", "_cursor: this paging link is not valid; run the search again"
        ) from None
    return request, snapshot, position
