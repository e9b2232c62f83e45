"""Loading a parsed claims file: matching rows to patients, comparing them with the lines
already loaded (`plan`), and writing lines and supersessions with the driver's executemany."""

from __future__ import annotations

import enum
import hashlib
import io
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import IO, Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from core.audit.models import AuditOutcome
from core.audit.service import Actor, record_event
from core.batch import collector_paused
from core.clock import Clock
from core.models import Patient, PatientHistory, State
from core.text import N_
from reporting.claims.layout import (
    ADJUSTS,
    CLAIM,
    DIGEST,
    FILE_COLUMNS,
    INDICATOR,
    LINE_COLUMNS,
    MARK,
    MAX_PROBLEMS,
    MAX_UNMATCHED_LISTED,
    NUMBER,
    REPLACEMENT,
    UNMATCHED_NO_PATIENT,
    VOID,
    DriverValues,
    Line,
    Problem,
    Refused,
)
from reporting.claims.rows import Parsed, parse_file
from reporting.code_lists import ClaimCodes, shipped_code_lists
from reporting.models import ClaimFile, ClaimLine


class LoadOutcome(enum.StrEnum):
    LOADED = "loaded"
    ALREADY_LOADED = "already_loaded"  # these very bytes were loaded for the state before
    REFUSED = "refused"  # nothing loaded: see the problems


@dataclass
class ClaimLoad:
    """What came of a load. Counts add up: rows = loaded + unchanged + voids + unmatched."""

    outcome: LoadOutcome
    state: State
    filename: str
    file: ClaimFile | None = None  # the load (for ALREADY_LOADED: the earlier one)
    problems: list[Problem] = field(default_factory=list)  # the first MAX_PROBLEMS
    problem_count: int = 0
    rows: int = 0
    loaded: int = 0  # new lines
    replacing: int = 0  # ... of which replaced earlier lines (an adjustment, a correction)
    unchanged: int = 0  # rows already loaded as they are (or replaced since)
    voids: int = 0  # voids that took a claim's lines away
    superseded: int = 0  # earlier lines superseded by this load
    unmatched: int = 0  # rows without a patient of the state with that Medicaid ID
    unmatched_rows: list[dict[str, Any]] = field(default_factory=list)


# --- the service ----------------------------------------------------------------------------


def load_claims(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    state: State,
    filename: str,
    data: bytes | IO[bytes],
    allowed_state_ids: set[int] | None = None,
    codes: ClaimCodes | None = None,
) -> ClaimLoad:
    """Load one claims file for `state` (see the module's docstring), all or nothing.

    `allowed_state_ids`: the states the uploader holds (None: any, an admin or the system);
    a file for another state is refused whole. Flushes, never commits; audited as
    `claims.load` (counts only: no IDs, no names)."""
    codes = codes or shipped_code_lists()
    result = ClaimLoad(outcome=LoadOutcome.REFUSED, state=state, filename=clean_filename(filename))
    try:
        if allowed_state_ids is not None and state.id not in allowed_state_ids:
            raise Refused(
                [
                    Problem(
                        None,
                        N_(
                            "You may load claims only for your own states; %(state)s is not "
                            "one of them.",
                            state=state.code,
                        ),
                    )
                ]
            )
        stream = io.BytesIO(data) if isinstance(data, bytes) else data
        digest = _sha256(stream)
        earlier = session.scalar(
            select(ClaimFile).where(ClaimFile.state_id == state.id, ClaimFile.sha256 == digest)
        )
        if earlier is not None:
            result.outcome, result.file = LoadOutcome.ALREADY_LOADED, earlier
            _audit(session, clock=clock, actor=actor, result=result)
            return result
        with collector_paused():
            parsed = parse_file(
                stream,
                state=state,
                allowed_state_ids=allowed_state_ids,
                codes=codes,
                binds=DriverValues(session.get_bind().dialect),
                patients=_patients_by_medicaid_id(session, state_id=state.id),
            )
            _load(
                session,
                clock=clock,
                actor=actor,
                state=state,
                parsed=parsed,
                result=result,
                digest=digest,
            )
    except Refused as refused:
        result.outcome = LoadOutcome.REFUSED
        result.problems = refused.problems[:MAX_PROBLEMS]
        result.problem_count = refused.count
        _audit(session, clock=clock, actor=actor, result=result)
        return result
    result.outcome = LoadOutcome.LOADED
    _audit(session, clock=clock, actor=actor, result=result)
    return result


def clean_filename(name: str) -> str:
    """The name a load keeps: the file's own name without its folders, printable, at most
    200 characters (a browser may send a path, or anything at all)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(char for char in base if char.isprintable()).strip()
    return printable[:200] or "claims.csv"


def _sha256(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    start = stream.tell()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        digest.update(chunk)
    stream.seek(start)
    return digest.hexdigest()


def _audit(session: Session, *, clock: Clock, actor: Actor, result: ClaimLoad) -> None:
    detail: dict[str, Any] = {"outcome": result.outcome.value}
    if result.file is not None:
        detail["claim_file_id"] = result.file.id
    if result.outcome is LoadOutcome.REFUSED:
        detail["problems"] = result.problem_count
    elif result.outcome is LoadOutcome.LOADED:
        detail.update(
            rows=result.rows,
            loaded=result.loaded,
            replacing=result.replacing,
            unchanged=result.unchanged,
            voids=result.voids,
            superseded=result.superseded,
            unmatched=result.unmatched,
        )
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="claims.load",
        outcome=AuditOutcome.FAILURE
        if result.outcome is LoadOutcome.REFUSED
        else AuditOutcome.SUCCESS,
        target=f"state:{result.state.code}",
        detail=detail,
    )


# --- matching and loading -------------------------------------------------------------------


def _patients_by_medicaid_id(session: Session, *, state_id: int) -> dict[str, int]:
    """Each Medicaid ID of the state, to its patient: the IDs patients hold now, and those
    they held in this state before (a changed ID, a patient who moved away); a current ID
    wins over an old one, a later old one over an earlier one."""
    found: dict[str, int] = {}
    for medicaid_id, patient_id in session.execute(
        select(PatientHistory.medicaid_id, PatientHistory.patient_id)
        .where(PatientHistory.state_id == state_id)
        .order_by(PatientHistory.valid_from, PatientHistory.id)
    ):
        found[medicaid_id.upper()] = patient_id
    for medicaid_id, patient_id in session.execute(
        select(Patient.medicaid_id, Patient.id).where(Patient.state_id == state_id)
    ):
        found[medicaid_id.upper()] = patient_id
    return found


# A loaded line as the comparison needs it: id, claim number, adjusted claim, line, digest, live.
_Loaded = tuple[int, str, str | None, int, str, bool]
_CHUNK = 500


def _loaded_lines(session: Session, *, state_id: int, lines: list[Line]) -> list[_Loaded]:
    """The state's lines that these new lines need to be compared with: every line of
    their claim numbers, and the live adjustments of their claims. Read with the
    claim-number indexes, or in one pass over the state's lines when it holds few more
    lines than the file names claims."""
    columns = (
        ClaimLine.id,
        ClaimLine.claim_id,
        ClaimLine.adjusts_claim_id,
        ClaimLine.line_number,
        ClaimLine.content_hash,
        ClaimLine.superseded_at.is_(None),
    )
    if (
        not lines
        or session.scalar(select(ClaimLine.id).where(ClaimLine.state_id == state_id).limit(1))
        is None
    ):
        return []
    held = session.scalar(select(func.count()).where(ClaimLine.state_id == state_id)) or 0
    claims = {line[CLAIM] for line in lines}
    families = {line[ADJUSTS] or line[CLAIM] for line in lines}
    wanted = claims | families
    if held <= 2 * len(wanted):
        return [
            (row[0], row[1], row[2], row[3], row[4], bool(row[5]))
            for row in session.execute(select(*columns).where(ClaimLine.state_id == state_id))
            if row[1] in wanted or row[2] in families
        ]
    found: dict[int, _Loaded] = {}
    by_claim = select(*columns).where(
        ClaimLine.state_id == state_id, ClaimLine.claim_id.in_(bindparam("numbers", expanding=True))
    )
    by_family = select(*columns).where(
        ClaimLine.state_id == state_id,
        ClaimLine.adjusts_claim_id.in_(bindparam("numbers", expanding=True)),
        ClaimLine.superseded_at.is_(None),
    )
    for query, numbers in ((by_claim, sorted(wanted)), (by_family, sorted(families))):
        for start in range(0, len(numbers), _CHUNK):
            for row in session.execute(query, {"numbers": numbers[start : start + _CHUNK]}):
                found[row[0]] = (row[0], row[1], row[2], row[3], row[4], bool(row[5]))
    return list(found.values())


@dataclass
class _Plan:
    live: list[Line] = field(default_factory=list)  # new lines that stand
    gone: list[Line] = field(default_factory=list)  # ... replaced by a later one in the file
    supersede: set[int] = field(default_factory=set)  # ids of loaded lines
    replacing: int = 0
    unchanged: int = 0
    voids: int = 0

    @property
    def loaded(self) -> int:
        return len(self.live) + len(self.gone)


def plan_load(lines: list[Line], loaded: list[_Loaded]) -> _Plan:
    """What to insert and what to supersede (see the package's docstring, step 4)."""
    # The version (claim number, indicator) of each claim (its family: the original's
    # number) that stands: the last one to appear in the file. `others`: every version of
    # the claims that come in more than one (few).
    final: dict[str, tuple[str, str]] = {}
    others: dict[str, set[tuple[str, str]]] = {}
    for line in lines:
        own, indicator = line[CLAIM], line[INDICATOR]
        family = line[ADJUSTS] or own
        standing = final.get(family)
        if standing is None:
            final[family] = (own, indicator)
        elif standing[1] != indicator or standing[0] != own:
            seen = others.setdefault(family, {standing})
            if (own, indicator) not in seen:
                seen.add((own, indicator))
                final[family] = (own, indicator)
    plan = _Plan()
    if not loaded:
        _plan_new(plan, lines, final, others.keys())
    else:
        _plan_against(plan, lines, loaded, final)
    return plan


def _plan_new(
    plan: _Plan, lines: list[Line], final: dict[str, tuple[str, str]], several: Collection[str]
) -> None:
    """The plan when nothing loaded shares a claim with the file (a first load): every line
    is new; a void has nothing to take away."""
    live, gone = plan.live.append, plan.gone.append
    for line in lines:
        indicator = line[INDICATOR]
        if indicator == VOID:
            plan.unchanged += 1
            continue
        own = line[CLAIM]
        family = line[ADJUSTS] or own
        if family in several and final[family] != (own, indicator):
            gone(line)
        else:
            live(line)


def _plan_against(
    plan: _Plan, lines: list[Line], loaded: list[_Loaded], final: dict[str, tuple[str, str]]
) -> None:
    """The plan when lines of the file's claims are loaded already."""
    ever = {(claim, number, digest) for _id, claim, _adj, number, digest, _live in loaded}
    live_by_family: dict[str, list[_Loaded]] = {}
    for loaded_line in loaded:
        if loaded_line[5]:
            live_by_family.setdefault(loaded_line[2] or loaded_line[1], []).append(loaded_line)
    fresh: dict[str, list[Line]] = {}  # family -> new lines of its final version
    repeated: dict[str, set[tuple[str, int, str]]] = {}  # family -> lines of it already loaded
    for line in lines:
        own, indicator = line[CLAIM], line[INDICATOR]
        family = line[ADJUSTS] or own
        standing = final[family] == (own, indicator)
        if indicator != VOID and (own, line[NUMBER], line[DIGEST]) in ever:
            plan.unchanged += 1
            if standing:
                repeated.setdefault(family, set()).add((own, line[NUMBER], line[DIGEST]))
        elif not standing:
            if indicator == VOID:
                plan.unchanged += 1  # a void that a later version in the file overrides
            else:
                plan.gone.append(line)
        elif not live_by_family and indicator != VOID:
            plan.live.append(line)  # nothing loaded to compare with
        else:
            fresh.setdefault(family, []).append(line)
    for family, new_lines in fresh.items():
        live = live_by_family.get(family, [])
        indicator = new_lines[0][INDICATOR]
        if indicator == VOID:
            if live:
                plan.voids += len(new_lines)
                plan.supersede.update(loaded_line[0] for loaded_line in live)
            else:
                plan.unchanged += len(new_lines)
            continue
        if indicator == REPLACEMENT:
            keep = repeated.get(family, set())
            gone = [
                loaded_line
                for loaded_line in live
                if (loaded_line[1], loaded_line[3], loaded_line[4]) not in keep
            ]
            plan.supersede.update(loaded_line[0] for loaded_line in gone)
            plan.live.extend(new_lines)
            if gone:
                plan.replacing += len(new_lines)
            continue
        # Originals: a corrected line replaces the same line; an adjusted claim stays so.
        if any(loaded_line[2] is not None for loaded_line in live):
            plan.unchanged += len(new_lines)
            continue
        same_line = {
            loaded_line[3]: loaded_line[0] for loaded_line in live if loaded_line[1] == family
        }
        for line in new_lines:
            plan.live.append(line)
            replaced = same_line.get(line[NUMBER])
            if replaced is not None:
                plan.supersede.add(replaced)
                plan.replacing += 1


def _load(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    state: State,
    parsed: Parsed,
    result: ClaimLoad,
    digest: str,
) -> None:
    now = clock.now()
    plan = plan_load(parsed.lines, _loaded_lines(session, state_id=state.id, lines=parsed.lines))
    unmatched = parsed.unmatched
    claim_file = ClaimFile(
        state_id=state.id,
        filename=result.filename,
        sha256=digest,
        loaded_at=now,
        loaded_by_user_id=actor.user_id,
        loaded_by_label=actor.label[:254],
        rows_total=parsed.count,
        rows_loaded=plan.loaded,
        rows_replacing=plan.replacing,
        rows_unchanged=plan.unchanged + parsed.repeats,
        rows_unmatched=len(unmatched),
        rows_voids=plan.voids,
        lines_superseded=len(plan.supersede) + len(plan.gone),
        unmatched=[
            {"line": line, "reason": UNMATCHED_NO_PATIENT}
            for line in unmatched[:MAX_UNMATCHED_LISTED]
        ],
    )
    session.add(claim_file)
    session.flush()
    connection = session.connection()
    binds = DriverValues(connection.dialect)
    at = binds.instant(now)
    if plan.supersede:
        execute_many(
            connection,
            f"UPDATE claim_lines SET superseded_at = {MARK}, "  # noqa: S608 (constants only)
            f"superseded_by_file_id = {MARK} WHERE id = {MARK}",
            ((at, claim_file.id, line_id) for line_id in sorted(plan.supersede)),
        )
    with _roomy_page_cache(connection), _indexes_built_after(connection, adding=plan.loaded):
        for lines, superseded in ((plan.live, False), (plan.gone, True)):
            if lines:
                _insert_lines(
                    connection,
                    binds,
                    lines,
                    file_values=(
                        claim_file.id,
                        state.id,
                        at,
                        at if superseded else None,
                        claim_file.id if superseded else None,
                    ),
                )
    result.file = claim_file
    result.rows = parsed.count
    result.loaded = plan.loaded
    result.replacing = plan.replacing
    result.unchanged = plan.unchanged + parsed.repeats
    result.voids = plan.voids
    result.superseded = claim_file.lines_superseded
    result.unmatched = len(unmatched)
    result.unmatched_rows = list(claim_file.unmatched or [])
    # The lines were written behind the ORM's back: nothing of them is cached in the session.


def _sql_literal(value: int | str | None) -> str:
    """A value of ours (an id, a time the driver takes as text) written in a statement."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(int(value))
    return "'" + value.replace("'", "''") + "'"


def _insert_lines(
    connection: Connection,
    binds: DriverValues,
    lines: list[Line],
    *,
    file_values: tuple[Any, ...],
) -> None:
    """Write `lines`, each with `file_values` (`FILE_COLUMNS`): on PostgreSQL with COPY,
    on SQLite with the driver's executemany of statements of `ROWS_PER_INSERT` lines each,
    the file's values written once in the statement (no tuple built per line)."""
    columns = ", ".join((*FILE_COLUMNS, *LINE_COLUMNS))
    if connection.dialect.name == "postgresql":
        raw = connection.connection.driver_connection
        assert raw is not None
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY claim_lines ({columns}) FROM STDIN") as copy,
        ):
            write = copy.write_row
            for line in lines:
                write(file_values + line)
        return
    row = "({})".format(
        ", ".join(
            [
                *(_sql_literal(value) for value in file_values),
                *(binds.placeholder(column) for column in LINE_COLUMNS),
            ]
        ).replace(MARK, "?")
    )
    insert = f"INSERT INTO claim_lines ({columns}) VALUES "  # noqa: S608
    # Many lines per statement: SQLite runs one statement for ROWS_PER_INSERT lines, not
    # one per line (a fifth less time), within its limit of bound values.
    per, full = ROWS_PER_INSERT, len(lines) - len(lines) % ROWS_PER_INSERT
    flat, statement = chain.from_iterable, insert + ", ".join([row] * per)
    step = per * STATEMENTS_PER_BATCH  # the values of a batch at a time in memory
    for batch in range(0, full, step):
        connection.exec_driver_sql(
            statement,
            [
                tuple(flat(lines[start : start + per]))
                for start in range(batch, min(batch + step, full), per)
            ],
        )
    if full < len(lines):
        connection.exec_driver_sql(insert + row, lines[full:])


# Lines per INSERT on SQLite: as many as fit under the 999 bound values older SQLite takes
# (55 lines of 18 values; 55 measured faster than 40), and statements per executemany.
ROWS_PER_INSERT = 999 // len(LINE_COLUMNS)
STATEMENTS_PER_BATCH = 500


@contextmanager
def _indexes_built_after(connection: Connection, *, adding: int) -> Iterator[None]:
    """On SQLite, when a load adds at least as many lines as the table holds (a state's
    first extract, say), the table's secondary indexes are dropped for the duration and
    built again after: sorting every entry once costs a third of putting a million in,
    one by one, into five indexes. Within the load's transaction: a load that fails leaves
    them as they were, and no other connection ever sees the table without them. A load
    into a bigger table writes its indexes line by line (rebuilding them would read the
    whole table). PostgreSQL keeps its indexes (dropping one locks the table's readers out
    until the commit; COPY is fast with them)."""
    if connection.dialect.name != "sqlite" or adding == 0:
        yield
        return
    # The largest id bounds the lines held (read from the index's end, not a count).
    held = connection.exec_driver_sql("SELECT max(id) FROM claim_lines").scalar() or 0
    if held > adding:
        yield
        return
    indexes = list(
        connection.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' "
            "AND tbl_name = 'claim_lines' AND sql IS NOT NULL ORDER BY name"
        )
    )
    for name, _sql in indexes:
        connection.exec_driver_sql(f'DROP INDEX "{name}"')
    yield
    for _name, sql in indexes:
        connection.exec_driver_sql(sql)


# SQLite's page cache while a load writes its lines (KiB): the indexes of a big table are
# written in random order, and SQLite's default 2 MiB cache makes each insert read pages.
_LOAD_PAGE_CACHE_KIB = 65_536


@contextmanager
def _roomy_page_cache(connection: Connection) -> Iterator[None]:
    """A bigger page cache on SQLite for the duration (this connection only; PostgreSQL
    sizes its shared buffers itself)."""
    if connection.dialect.name != "sqlite":
        yield
        return
    before = connection.exec_driver_sql("PRAGMA cache_size").scalar()
    connection.exec_driver_sql(f"PRAGMA cache_size = -{_LOAD_PAGE_CACHE_KIB}")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size = {int(before or -2000)}")


BATCH = 20_000


def execute_many(connection: Connection, statement: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """The driver's executemany, in batches, with plain tuples already converted."""
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    sql = statement.replace(MARK, mark)
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            connection.exec_driver_sql(sql, batch)
            batch = []
    if batch:
        connection.exec_driver_sql(sql, batch)
