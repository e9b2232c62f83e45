"""Snapshots of the outcome figures: what each agreement's measures counted as of a moment,
kept with that moment (`as_of`), the agreement's version and the digest of the agreement
files, so that a figure sent to CMS can be shown again exactly, and checked: recomputing as
of the snapshot's moment must give the same figures whatever arrived since (the history
tables leave later data out).

A snapshot (`ReportSnapshot`, report `outcomes:<agreement key>`) holds the counts by state,
center, infusion quarter, status and quarter decided of every measure (older snapshots
without the quarter decided are read and reproduced as they were kept), and each
patient's decided result (status and day; `not_yet` is left out) that statements rest
on. The nightly job (`reporting.jobs.nightly_snapshots`) takes one per agreement a day;
`cgt-access reports snapshot` takes them by hand, also as of a past moment."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from threading import Lock
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.clock import Clock
from reporting.agreements import Agreement, AgreementLibrary
from reporting.models import ReportSnapshot
from reporting.outcomes import (
    AsOf,
    CubeCell,
    MeasureCube,
    OutcomeCube,
    Status,
    agreement_results,
    outcome_cube,
    population_of,
)

REPORT_PREFIX = "outcomes:"
NIGHTLY = "nightly"
BY_HAND = "by_hand"
# A dashboard without an as-of day reads the nightly snapshot while it is this fresh.
FRESH = timedelta(days=2)
_CACHED = 8
_cache_lock = Lock()
# By database and snapshot id (a process may serve several databases: tests do).
_cubes: OrderedDict[tuple[str, int], OutcomeCube] = OrderedDict()


def report_name(agreement_key: str) -> str:
    return f"{REPORT_PREFIX}{agreement_key}"


def _decided_results(session: Session, *, agreement: Agreement, as_of: AsOf) -> dict[str, Any]:
    """Each patient's decided result by measure: [patient_id, status, decided_on]."""
    results = agreement_results(agreement, population_of(session, agreement), as_of=as_of)
    rows = session.execute(
        select(results.c.measure_key, results.c.patient_id, results.c.status, results.c.decided_on)
        .where(results.c.status != Status.NOT_YET.value)
        .order_by(results.c.measure_key, results.c.patient_id)
    )
    found: dict[str, list[list[Any]]] = {measure.key: [] for measure in agreement.measures}
    for measure_key, patient_id, status, decided_on in rows:
        found[measure_key].append(
            [patient_id, status, decided_on.isoformat() if decided_on else None]
        )
    return found


def _cube_cells(cube: OutcomeCube, *, decided: bool = True) -> dict[str, list[list[Any]]]:
    """The cube as a snapshot keeps it: per measure, [state, center, infusion year,
    infusion quarter, status, count, decided year, decided quarter]; without the last two
    (`decided` False) as snapshots kept it before, the counts added up over them."""
    kept: dict[str, list[list[Any]]] = {}
    for measure in cube.measures:
        counts: dict[tuple[Any, ...], int] = {}
        for cell in measure.cells:
            key: tuple[Any, ...] = (
                cell.state_id,
                cell.center_id,
                cell.cohort_year,
                cell.cohort_quarter,
                cell.status.value,
            )
            if decided:
                key += (cell.decided_year, cell.decided_quarter)
            counts[key] = counts.get(key, 0) + cell.count
        kept[measure.measure_key] = [
            [*key[:5], count, *key[5:]]
            for key, count in sorted(counts.items(), key=lambda item: _order(item[0]))
        ]
    return kept


def _order(key: tuple[Any, ...]) -> tuple[Any, ...]:
    # None (not decided yet) sorts first, as the database's ORDER BY puts it on SQLite.
    return tuple((value is not None, value) for value in key)


def _figures(
    cube: OutcomeCube, patients: dict[str, Any], *, decided: bool = True
) -> dict[str, Any]:
    return {"cube": _cube_cells(cube, decided=decided), "patients": patients}


def take_snapshot(
    session: Session,
    *,
    clock: Clock,
    agreement: Agreement,
    library: AgreementLibrary,
    as_of: AsOf,
    computed_by: str,
    kind: str = BY_HAND,
) -> ReportSnapshot:
    """Compute and keep one agreement's figures as of `as_of`."""
    cube = outcome_cube(session, agreement=agreement, as_of=as_of)
    patients = _decided_results(session, agreement=agreement, as_of=as_of)
    snapshot = ReportSnapshot(
        report=report_name(agreement.key),
        parameters={"agreement": agreement.key, "version": agreement.version, "kind": kind},
        definition_hash=library.definition_hash,
        as_of=as_of.at,
        computed_at=clock.now(),
        computed_by=computed_by[:254],
        figures=_figures(cube, patients),
    )
    session.add(snapshot)
    session.flush()
    return snapshot


def take_snapshots(
    session: Session,
    *,
    clock: Clock,
    library: AgreementLibrary,
    as_of: AsOf,
    computed_by: str,
    kind: str = BY_HAND,
) -> list[ReportSnapshot]:
    """One snapshot per current agreement, all as of the same moment."""
    return [
        take_snapshot(
            session,
            clock=clock,
            agreement=agreement,
            library=library,
            as_of=as_of,
            computed_by=computed_by,
            kind=kind,
        )
        for agreement in library.current()
    ]


def take_nightly_snapshots(
    session: Session, *, clock: Clock, library: AgreementLibrary
) -> list[ReportSnapshot]:
    """The nightly snapshots, as of now; none when tonight's are already there (two
    workers whose schedules fire one after the other take them once)."""
    today = clock.now().astimezone(UTC).date()
    start = datetime.combine(today, time(0), tzinfo=UTC)
    taken = session.scalar(
        select(func.count())
        .select_from(ReportSnapshot)
        .where(
            ReportSnapshot.report.startswith(REPORT_PREFIX),
            ReportSnapshot.computed_at >= start,
            ReportSnapshot.computed_at < start + timedelta(days=1),
            ReportSnapshot.computed_by == NIGHTLY,
        )
    )
    if taken:
        return []
    return take_snapshots(
        session,
        clock=clock,
        library=library,
        as_of=AsOf(clock.now()),
        computed_by=NIGHTLY,
        kind=NIGHTLY,
    )


def cube_of(snapshot: ReportSnapshot) -> OutcomeCube:
    """The counts a snapshot keeps, as the dashboard reads them."""
    kept = snapshot.figures["cube"]
    measures = tuple(
        MeasureCube(
            measure_key=key,
            cells=tuple(
                CubeCell(
                    state_id=state_id,
                    center_id=center_id,
                    cohort_year=year,
                    cohort_quarter=quarter,
                    status=Status(status),
                    count=count,
                    decided_year=decided[0] if decided else None,
                    decided_quarter=decided[1] if decided else None,
                )
                for state_id, center_id, year, quarter, status, count, *decided in cells
            ),
        )
        for key, cells in kept.items()
    )
    parameters = snapshot.parameters
    return OutcomeCube(
        agreement_key=str(parameters["agreement"]),
        agreement_version=int(parameters["version"]),
        as_of=snapshot.as_of,
        measures=measures,
        has_decided=_keeps_decided(kept),
    )


def _keeps_decided(kept: dict[str, list[list[Any]]]) -> bool:
    """Whether a snapshot's cells say the quarter each result was decided in (those taken
    before the dashboards had a period do not)."""
    return all(len(cell) == 8 for cells in kept.values() for cell in cells)


@dataclass(frozen=True)
class Nightly:
    """The nightly snapshot a dashboard reads: its id and the moment its figures are of."""

    snapshot_id: int
    as_of: datetime


def fresh_nightly(session: Session, *, agreement: Agreement, now: datetime) -> Nightly | None:
    """The newest nightly snapshot of `agreement` (this version) when it is under two days
    old and keeps the quarter each result was decided in; else None (count live)."""
    row = session.execute(
        select(ReportSnapshot.id, ReportSnapshot.as_of, ReportSnapshot.parameters)
        .where(
            ReportSnapshot.report == report_name(agreement.key),
            ReportSnapshot.computed_by == NIGHTLY,
        )
        .order_by(ReportSnapshot.as_of.desc(), ReportSnapshot.id.desc())
        .limit(1)
    ).first()
    if row is None or now - row.as_of > FRESH:
        return None
    if int(row.parameters.get("version", 0)) != agreement.version:
        return None
    cube = nightly_cube(session, Nightly(row.id, row.as_of))
    return Nightly(row.id, row.as_of) if cube is not None and cube.has_decided else None


def nightly_cube(session: Session, nightly: Nightly) -> OutcomeCube | None:
    """A nightly snapshot's counts, read from the database once per process (snapshots
    never change; the patients' results they also keep are not read)."""
    key = (str(session.get_bind().engine.url), nightly.snapshot_id)
    with _cache_lock:
        found = _cubes.get(key)
        if found is not None:
            _cubes.move_to_end(key)
            return found
    snapshot = get_snapshot(session, snapshot_id=nightly.snapshot_id)
    if snapshot is None:
        return None
    cube = cube_of(snapshot)
    with _cache_lock:
        _cubes[key] = cube
        while len(_cubes) > _CACHED:
            _cubes.popitem(last=False)
    return cube


def list_snapshots(session: Session, *, limit: int = 60) -> list[ReportSnapshot]:
    """The newest outcome snapshots first."""
    return list(
        session.scalars(
            select(ReportSnapshot)
            .where(ReportSnapshot.report.startswith(REPORT_PREFIX))
            .order_by(ReportSnapshot.as_of.desc(), ReportSnapshot.id.desc())
            .limit(limit)
        )
    )


def get_snapshot(session: Session, *, snapshot_id: int) -> ReportSnapshot | None:
    snapshot = session.get(ReportSnapshot, snapshot_id)
    if snapshot is None or not snapshot.report.startswith(REPORT_PREFIX):
        return None
    return snapshot


@dataclass(frozen=True)
class Reproduction:
    """A snapshot computed again as of its moment, with today's data and terms."""

    snapshot: ReportSnapshot
    cube: OutcomeCube
    same: bool
    changed_measures: tuple[str, ...]  # whose counts or patients' results differ
    terms_changed: bool  # the agreement files differ from those of the snapshot
    agreement_missing: bool  # the agreement is no longer in the files


def reproduce(
    session: Session, *, snapshot: ReportSnapshot, library: AgreementLibrary
) -> Reproduction:
    """Compute the snapshot's figures again as of its `as_of` and compare them."""
    key = str(snapshot.parameters["agreement"])
    agreement = library.get(key)
    terms_changed = snapshot.definition_hash != library.definition_hash
    if agreement is None:
        empty = OutcomeCube(key, 0, snapshot.as_of)
        return Reproduction(snapshot, empty, False, (), terms_changed, True)
    as_of = AsOf(snapshot.as_of)
    cube = outcome_cube(session, agreement=agreement, as_of=as_of)
    kept = snapshot.figures
    again = _figures(
        cube,
        _decided_results(session, agreement=agreement, as_of=as_of),
        decided=_keeps_decided(kept["cube"]),
    )
    keys = sorted(set(kept["cube"]) | set(again["cube"]))
    changed = tuple(
        key
        for key in keys
        if not _same_cells(kept["cube"].get(key), again["cube"].get(key))
        or kept["patients"].get(key) != again["patients"].get(key)
    )
    return Reproduction(snapshot, cube, not changed, changed, terms_changed, False)


def _same_cells(kept: list[list[Any]] | None, again: list[list[Any]] | None) -> bool:
    """The same counts, in whatever order they were kept (older snapshots kept the
    database's order)."""
    if kept is None or again is None:
        return kept is again
    return sorted(map(tuple, kept), key=_order) == sorted(map(tuple, again), key=_order)


def snapshot_day(snapshot: ReportSnapshot) -> date:
    return snapshot.as_of.astimezone(UTC).date()
