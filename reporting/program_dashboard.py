"""The program dashboard's use cases: its figures for a viewer's selection (from last night's
snapshot, or counted live), the patients behind a figure for staff who may see them, and
the choices its filters offer.

Where the figures come from:

- no "as of" day asked: the newest program snapshot when it is less than two days old
  (the nightly job keeps it so), else counted now;
- a past day asked: the snapshot taken as of that day's end when there is one, else
  counted from the history tables as of then; today or later: counted now.

A snapshot's counts are read once per process (snapshots never change), so a page costs
only adding up the selection's counts and suppressing them."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from threading import Lock

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.protocol import ProtocolLibrary
from core.clock import Clock
from core.identity.models import Role, User
from core.models import Patient
from reporting.models import ReportSnapshot
from reporting.program import (
    Behind,
    Figure,
    Period,
    ProgramCube,
    Selection,
    end_of_day,
    figure_patients,
    program_cube,
)
from reporting.program_report import (
    CONTACTED,
    ProgramReport,
    program_report,
    visit_order,
)
from reporting.program_snapshots import REPORT, cube_of, latest_program_snapshot

FRESH = timedelta(days=2)
FIRST_YEAR = 2023  # the first approvals (December 2023)
_cache_lock = Lock()
_cubes: OrderedDict[int, ProgramCube] = OrderedDict()
_CACHED = 3


def _snapshot_cube(session: Session, snapshot_id: int) -> ProgramCube | None:
    with _cache_lock:
        found = _cubes.get(snapshot_id)
        if found is not None:
            _cubes.move_to_end(snapshot_id)
            return found
    snapshot = session.get(ReportSnapshot, snapshot_id)
    if snapshot is None or snapshot.report != REPORT:
        return None
    cube = cube_of(snapshot)
    with _cache_lock:
        _cubes[snapshot_id] = cube
        while len(_cubes) > _CACHED:
            _cubes.popitem(last=False)
    return cube


def _snapshot_id(session: Session, *, as_of: datetime | None) -> tuple[int, datetime] | None:
    query = select(ReportSnapshot.id, ReportSnapshot.as_of).where(ReportSnapshot.report == REPORT)
    if as_of is not None:
        query = query.where(ReportSnapshot.as_of == as_of)
    row = session.execute(
        query.order_by(ReportSnapshot.as_of.desc(), ReportSnapshot.id.desc()).limit(1)
    ).first()
    return (row[0], row[1]) if row else None


def _source(
    session: Session, *, now: datetime, as_of_day: date | None
) -> tuple[ProgramCube | None, datetime | None]:
    """Where the dashboard's counts come from: a snapshot's cube (the one of `as_of_day`'s
    end, or a fresh one for now), or None and the moment to count live (None: now)."""
    wanted = end_of_day(as_of_day) if as_of_day is not None else None
    if wanted is not None and wanted >= now:
        return None, None
    found = _snapshot_id(session, as_of=wanted)
    if found is not None and (wanted is not None or now - found[1] <= FRESH):
        cube = _snapshot_cube(session, found[0])
        if cube is not None:
            return cube, wanted
    return None, wanted


def program_dashboard(
    session: Session,
    *,
    clock: Clock,
    selection: Selection,
    as_of_day: date | None,
    protocols: ProtocolLibrary,
) -> ProgramReport:
    """The dashboard's suppressed tables for the selection (see the module's docstring for
    where the counts come from)."""
    now = clock.now()
    snapshot, wanted = _source(session, now=now, as_of_day=as_of_day)
    if snapshot is not None:
        return program_report(
            snapshot, selection=selection, protocols=protocols, from_snapshot=True
        )
    cube = program_cube(session, as_of=wanted, now=now, selection=selection)
    return program_report(cube, selection=selection, protocols=protocols)


def dashboard_as_of(session: Session, *, clock: Clock, as_of_day: date | None) -> datetime:
    """The moment `program_dashboard` would count as of, without counting (the patients
    behind a figure are read as of the moment the figure was)."""
    now = clock.now()
    snapshot, wanted = _source(session, now=now, as_of_day=as_of_day)
    if snapshot is not None:
        return snapshot.as_of
    return wanted if wanted is not None else now


def forget_cached_snapshots() -> None:
    """Drop the counts read from snapshots (tests that delete them)."""
    with _cache_lock:
        _cubes.clear()


# --- the patients behind a figure ----------------------------------------------------------


class NoPatientAccess(Exception):
    """The viewer may not see patients (an analyst, an admin): drill-down is refused."""


def behind_of(
    table: str, row: str | None, column: str | None, *, protocols: ProtocolLibrary
) -> tuple[Behind, dict[str, str | None]] | None:
    """What a drill-down link names (a table's row and column) as a figure's lines, with
    what narrows the selection (`cohort`, `period`, `not_infused`); None when the link
    names nothing the dashboard shows."""
    narrow: dict[str, str | None] = {}
    match table:
        case "adherence_by_visit":
            return Behind(Figure.ADHERENCE, (row,) if row else None, column), narrow
        case "adherence_by_year":
            years = visit_order(protocols)
            keys = tuple(key for key, (_days, year) in years.items() if str(year) == row)
            return Behind(Figure.ADHERENCE, keys if row else None, column), narrow
        case "contact":
            contacted = None if column is None else column == CONTACTED
            return Behind(Figure.CONTACT, contacted=contacted), narrow
        case "retention":
            if row:
                narrow["cohort"] = row
            return Behind(Figure.RETENTION, (column,) if column else None), narrow
        case "texts" | "answers" | "opt_outs":
            figure = Figure(table)
            if row:
                narrow["period"] = row
            return Behind(figure, None, column), narrow
        case "reports":
            return Behind(Figure.REPORTS, (row,) if row else None, column), narrow
    return None


@dataclass(frozen=True)
class PatientsBehind:
    patients: tuple[Patient, ...]
    as_of: datetime


def patients_behind(
    session: Session,
    *,
    clock: Clock,
    viewer: User,
    selection: Selection,
    as_of: datetime,
    behind: Behind,
    narrow: dict[str, str | None],
) -> PatientsBehind:
    """The patients behind a figure that `viewer` may see: a coordinator's own (their
    states, and their center when they have one). Raises NoPatientAccess for anyone
    else. The caller audits the reading."""
    if viewer.role is not Role.COORDINATOR:
        raise NoPatientAccess()
    mine = frozenset(viewer.state_ids) & (selection.state_ids or frozenset(viewer.state_ids))
    chosen = replace(selection, state_ids=mine)
    if viewer.center_id is not None:
        if selection.center_id not in (None, viewer.center_id):
            return PatientsBehind((), as_of)
        chosen = replace(chosen, center_id=viewer.center_id)
    if narrow.get("cohort"):
        chosen = replace(chosen, cohort=narrow["cohort"])
    if narrow.get("period"):
        period = Period.parse(narrow["period"])
        if period is not None:
            chosen = replace(chosen, period=period)
    ids = figure_patients(session, as_of=as_of, now=clock.now(), selection=chosen, behind=behind)
    if not ids:
        return PatientsBehind((), as_of)
    query = select(Patient).where(Patient.id.in_(ids))
    patients = session.scalars(query.order_by(Patient.family_name, Patient.given_name, Patient.id))
    return PatientsBehind(tuple(patients), as_of)


# --- the filters' choices -----------------------------------------------------------------


def cohort_choices(today: date) -> list[str]:
    """Infusion years and quarters from the first approvals to now, newest first."""
    found: list[str] = []
    for year in range(today.year, FIRST_YEAR - 1, -1):
        found.append(str(year))
        last = (today.month + 2) // 3 if year == today.year else 4
        found += [f"{year}-Q{quarter}" for quarter in range(last, 0, -1)]
    return found


def period_choices(today: date) -> list[str]:
    return ["all", *cohort_choices(today)]


def latest_snapshot_at(session: Session) -> datetime | None:
    snapshot = latest_program_snapshot(session)
    return snapshot.as_of if snapshot is not None else None
