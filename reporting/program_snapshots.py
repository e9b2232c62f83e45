"""Snapshots of the program figures, kept in `ReportSnapshot` (report "program"): the whole
cube of counts (`reporting.program`) as of a moment, so that the dashboard reads last
night's figures instead of counting 100,000 patients' visits on every page, and a figure
sent out can be shown again exactly (and checked: computing the cube again as of the
snapshot's moment gives the same counts, whatever arrived since).

The reports' nightly job (`reporting.jobs.nightly_snapshots`, under its job lease) takes
one a day with the outcome snapshots; `take_program_snapshot` takes one by hand, also as of
a past moment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.clock import Clock
from reporting.models import ReportSnapshot
from reporting.program import Cell, ProgramCube, program_cube

REPORT = "program"
NIGHTLY = "nightly"
BY_HAND = "by_hand"


def _figures(cube: ProgramCube) -> dict[str, Any]:
    return {"cells": [cell.as_list() for cell in cube.cells]}


def take_program_snapshot(
    session: Session,
    *,
    clock: Clock,
    as_of: datetime | None,
    computed_by: str,
    kind: str = BY_HAND,
) -> ReportSnapshot:
    """Count the program figures as of `as_of` (None: now) and keep them."""
    now = clock.now()
    cube = program_cube(session, as_of=as_of, now=now)
    snapshot = ReportSnapshot(
        report=REPORT,
        parameters={"kind": kind},
        definition_hash=None,
        as_of=cube.as_of,
        computed_at=now,
        computed_by=computed_by[:254],
        figures=_figures(cube),
    )
    session.add(snapshot)
    session.flush()
    return snapshot


def take_nightly_program_snapshot(session: Session, *, clock: Clock) -> ReportSnapshot | None:
    """Tonight's snapshot, as of now; None when it was already taken today."""
    today = clock.now().astimezone(UTC).date()
    start = datetime.combine(today, time(0), tzinfo=UTC)
    taken = session.scalar(
        select(func.count())
        .select_from(ReportSnapshot)
        .where(
            ReportSnapshot.report == REPORT,
            ReportSnapshot.computed_by == NIGHTLY,
            ReportSnapshot.computed_at >= start,
            ReportSnapshot.computed_at < start + timedelta(days=1),
        )
    )
    if taken:
        return None
    return take_program_snapshot(
        session, clock=clock, as_of=None, computed_by=NIGHTLY, kind=NIGHTLY
    )


def latest_program_snapshot(session: Session) -> ReportSnapshot | None:
    return session.scalar(
        select(ReportSnapshot)
        .where(ReportSnapshot.report == REPORT)
        .order_by(ReportSnapshot.as_of.desc(), ReportSnapshot.id.desc())
        .limit(1)
    )


def program_snapshot_at(session: Session, *, as_of: datetime) -> ReportSnapshot | None:
    """The newest snapshot taken exactly as of `as_of`, if any."""
    return session.scalar(
        select(ReportSnapshot)
        .where(ReportSnapshot.report == REPORT, ReportSnapshot.as_of == as_of)
        .order_by(ReportSnapshot.id.desc())
        .limit(1)
    )


def cube_of(snapshot: ReportSnapshot) -> ProgramCube:
    """The counts a snapshot keeps."""
    cells = tuple(Cell.from_list(values) for values in snapshot.figures["cells"])
    return ProgramCube(as_of=snapshot.as_of, cells=cells)


@dataclass(frozen=True)
class Reproduction:
    snapshot: ReportSnapshot
    same: bool


def reproduce_program_snapshot(
    session: Session, *, clock: Clock, snapshot: ReportSnapshot
) -> Reproduction:
    """Count again as of the snapshot's moment and compare with what it keeps."""
    again = program_cube(session, as_of=snapshot.as_of, now=clock.now())
    same = _figures(again)["cells"] == snapshot.figures["cells"]
    return Reproduction(snapshot=snapshot, same=same)
