"""The outcomes dashboard's figures: an agreement's measures as of a moment, for the states a
viewer may see, filtered (state, center, infusion cohort, and period: the quarter or year
results were decided in) and broken down (by state, center, infusion year or quarter),
every count suppressed (`reporting.suppression`) before
it leaves this module: the raw counts stay here, a page or an export only gets `Figure`s.

Figures that several tables publish are marked once, so that no table hides what another
shows:

- the patients of a selection and of each group (the population, the same for every
  measure of the agreement; with a period, each measure's patients decided in it):
  shown, or "<11" from 1 to 10, never hidden further (anyone can count them from a table
  whose cells are all shown);
- a measure's counts by status over the selection (the totals of its table whatever the
  breakdown): suppressed once as their own line, with the selection's patients as total;
- then each breakdown's cells, around those fixed totals. A breakdown no hiding can protect
  (with its totals fixed) is withheld, and the page says so; the totals by status still
  stand. Where even those cannot be protected, the measure's figures are withheld.

What it does not protect against: comparing two different selections (say all states
against one state) can narrow a hidden count, as with any cell suppression of overlapping
tables; the filters offered keep to whole groups of the breakdowns shown."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import State, TreatmentCenter
from reporting.agreements import Agreement, Measure
from reporting.outcomes import STATUSES, CubeCell, OutcomeCube, Status
from reporting.program import Period
from reporting.suppression import (
    HIDDEN_TEXT,
    Figure,
    Mark,
    suppress_count,
    suppress_line,
    suppress_table,
)

GROUPINGS = ("state", "center", "cohort_year", "cohort_quarter")
HIDDEN = Figure(Mark.COMPLEMENT, HIDDEN_TEXT)
ILLUSTRATIVE_NOTE = (
    "ILLUSTRATIVE: the shipped agreements are made up for the demonstration; "
    "real outcomes-based agreement terms are confidential."
)


@dataclass(frozen=True)
class Labels:
    """Names of the ids a cube holds: states (code, name) and centers."""

    states: dict[int, tuple[str, str]]
    centers: dict[int, str]


def labels_for(session: Session) -> Labels:
    """The names of every state and center (both small tables)."""
    states = {
        state_id: (code, name)
        for state_id, code, name in session.execute(select(State.id, State.code, State.name))
    }
    centers = {
        center_id: f"{name} ({states.get(state_id, ('?', ''))[0]})"
        for center_id, name, state_id in session.execute(
            select(TreatmentCenter.id, TreatmentCenter.name, TreatmentCenter.state_id)
        )
    }
    return Labels(states=states, centers=centers)


def cohorts_of(cube: OutcomeCube) -> list[str]:
    """The infusion years and quarters the cube holds, newest first ("2026", "2026-Q3", ...)."""
    return _years_and_quarters(
        {
            (cell.cohort_year, cell.cohort_quarter)
            for measure in cube.measures
            for cell in measure.cells
        }
    )


def periods_of(cube: OutcomeCube) -> list[str]:
    """The years and quarters results of the cube were decided in, newest first."""
    return _years_and_quarters(
        {
            (cell.decided_year, cell.decided_quarter)
            for measure in cube.measures
            for cell in measure.cells
            if cell.decided_year is not None and cell.decided_quarter is not None
        }
    )


def _years_and_quarters(quarters: set[tuple[int, int]]) -> list[str]:
    found: list[str] = []
    for year in sorted({year for year, _q in quarters}, reverse=True):
        found.append(str(year))
        found += [
            f"{year}-Q{q}" for q in sorted({q for y, q in quarters if y == year}, reverse=True)
        ]
    return found


@dataclass(frozen=True)
class Selection:
    """Which patients the figures count: the viewer's states (None: all) and the filters.
    A period keeps the results decided in it (the quarter a rebate is owed in): results
    not decided yet are in no period."""

    state_ids: frozenset[int] | None = None
    state_id: int | None = None
    center_id: int | None = None
    cohort: str | None = None  # "2025" (infusion year) or "2025-Q2" (quarter)
    period: Period | None = None  # None or "all": whenever decided, or not yet

    def keeps(self, cell: CubeCell) -> bool:
        if self.state_ids is not None and cell.state_id not in self.state_ids:
            return False
        if self.state_id is not None and cell.state_id != self.state_id:
            return False
        if self.center_id is not None and cell.center_id != self.center_id:
            return False
        if self.period is not None and self.period.key != "all":
            decided = cell.decided
            if decided is None or not self.period.holds(decided):
                return False
        return self.cohort is None or self.cohort in (str(cell.cohort_year), cell.cohort)

    @property
    def period_key(self) -> str:
        return self.period.key if self.period is not None else "all"


@dataclass(frozen=True)
class GroupRow:
    key: str  # what a filter takes: a state or center id, "2025", "2025-Q2"
    label: str
    cells: tuple[Figure, ...]  # one per status, in STATUSES' order
    patients: Figure
    # The patients whose result is decided (every status but "not yet"), as a MeasureReport
    # gives them; None where the breakdown of those cannot be protected.
    decided: Figure | None = None


@dataclass(frozen=True)
class MeasureView:
    measure: Measure
    patients: Figure  # the selection's patients
    totals: tuple[Figure, ...]  # by status, in STATUSES' order
    rows: tuple[GroupRow, ...]
    totals_withheld: bool = False  # nothing of the measure can be shown for this selection
    breakdown_withheld: bool = False  # the breakdown cannot be protected; totals stand
    decided: Figure = HIDDEN  # the selection's decided patients

    def total_of(self, status: Status) -> Figure:
        return self.totals[STATUSES.index(status)]


@dataclass(frozen=True)
class OutcomeReport:
    agreement: Agreement
    as_of: datetime
    selection: Selection
    by: str
    measures: tuple[MeasureView, ...]

    def measure(self, key: str) -> MeasureView | None:
        return next((view for view in self.measures if view.measure.key == key), None)


def _group_key(cell: CubeCell, by: str) -> str:
    match by:
        case "state":
            return str(cell.state_id)
        case "center":
            return str(cell.center_id)
        case "cohort_year":
            return str(cell.cohort_year)
        case _:
            return cell.cohort


def _group_label(key: str, by: str, labels: Labels) -> str:
    if by == "state":
        code, name = labels.states.get(int(key), ("?", key))
        return f"{name} ({code})"
    if by == "center":
        return labels.centers.get(int(key), key)
    return key


def _sort_key(key: str, by: str, labels: Labels) -> tuple[str, str]:
    return (_group_label(key, by, labels) if by in ("state", "center") else key, key)


def measure_view(
    measure: Measure, cells: Iterable[CubeCell], *, by: str, labels: Labels
) -> MeasureView:
    """One measure's suppressed figures from the cube's cells of the selection."""
    counts: dict[str, Counter[Status]] = {}
    for cell in cells:
        counts.setdefault(_group_key(cell, by), Counter())[cell.status] += cell.count
    keys = sorted(counts, key=lambda key: _sort_key(key, by, labels))
    grid = [[counts[key][status] for status in STATUSES] for key in keys]
    totals = [sum(row[index] for row in grid) for index in range(len(STATUSES))]
    everyone = sum(totals)
    everyone_mark = suppress_count(everyone).mark
    margins = suppress_table(
        [totals], fixed_row_totals=[everyone_mark], fixed_grand_total=everyone_mark
    )
    patients = suppress_count(everyone)
    if margins.unprotected_lines:
        hidden = tuple(HIDDEN for _status in STATUSES)
        return MeasureView(measure, patients, hidden, (), totals_withheld=True)
    total_figures = margins.cells[0]
    decided_total = _decided_mark(totals, total_figures, patients)
    decided = HIDDEN if decided_total is Mark.COMPLEMENT else suppress_count(_decided_count(totals))
    if len(keys) <= 1:
        # One group: its row is the totals themselves.
        rows = tuple(
            GroupRow(key, _group_label(key, by, labels), total_figures, patients, decided)
            for key in keys
        )
        return MeasureView(measure, patients, total_figures, rows, decided=decided)
    group_patients = [suppress_count(sum(row)) for row in grid]
    table = suppress_table(
        grid,
        fixed_row_totals=[figure.mark for figure in group_patients],
        fixed_column_totals=[figure.mark for figure in total_figures],
        fixed_grand_total=everyone_mark,
    )
    if table.unprotected_lines:
        return MeasureView(
            measure, patients, total_figures, (), breakdown_withheld=True, decided=decided
        )
    # The decided patients of each group, beside the selection's: a line of its own in a
    # MeasureReport's stratifier. A group's is shown only where the page gives it away
    # anyway (its patients and its "not yet" shown); then it is hidden further where the
    # line would give away another group's.
    by_group = suppress_line(
        [_decided_count(row) for row in grid],
        hidden=[
            _decided_mark(row, cells, group) is Mark.COMPLEMENT
            for row, cells, group in zip(grid, table.cells, group_patients, strict=True)
        ],
        total_mark=decided_total,
    )
    group_decided: list[Figure | None] = list(by_group.entries)
    if by_group.unprotected:
        group_decided = [None] * len(keys)
    rows = tuple(
        GroupRow(
            key,
            _group_label(key, by, labels),
            table.cells[index],
            group_patients[index],
            group_decided[index],
        )
        for index, key in enumerate(keys)
    )
    return MeasureView(measure, patients, total_figures, rows, decided=decided)


def _decided_count(counts: list[int]) -> int:
    """The patients of a row of counts by status whose result is decided."""
    return sum(counts) - counts[STATUSES.index(Status.NOT_YET)]


def _decided_mark(counts: list[int], cells: tuple[Figure, ...], patients: Figure) -> Mark:
    """The mark the decided patients of a row of counts get: what the shown figures give
    away (the patients and "not yet" shown, or every decided status shown: their primary
    mark), else hidden ("<11" or "*")."""
    not_yet = STATUSES.index(Status.NOT_YET)
    decided = _decided_count(counts)
    known = (patients.mark is Mark.SHOWN and cells[not_yet].mark is Mark.SHOWN) or all(
        figure.mark is Mark.SHOWN for index, figure in enumerate(cells) if index != not_yet
    )
    primary = suppress_count(decided).mark
    if known or primary is not Mark.SHOWN:
        return primary
    return Mark.COMPLEMENT


def outcome_report(
    cube: OutcomeCube,
    *,
    agreement: Agreement,
    labels: Labels,
    selection: Selection,
    by: str,
) -> OutcomeReport:
    """The dashboard of one agreement: every measure's suppressed figures."""
    if by not in GROUPINGS:
        raise ValueError(f"group by one of {', '.join(GROUPINGS)}")
    views = []
    for measure in agreement.measures:
        found = cube.measure(measure.key)
        cells = [cell for cell in (found.cells if found else ()) if selection.keeps(cell)]
        views.append(measure_view(measure, cells, by=by, labels=labels))
    return OutcomeReport(
        agreement=agreement,
        as_of=cube.as_of,
        selection=selection,
        by=by,
        measures=tuple(views),
    )


CSV_HEADER = (
    "agreement",
    "version",
    "as_of",
    "period",
    "measure",
    "group_by",
    "group",
    "status",
    "patients",
)
TOTAL = "total"


def report_csv(report: OutcomeReport, *, translate: Callable[[str], str] = str) -> str:
    """The figures as published on the page (suppressed), one per line: each group's count
    by status and its patients (status "total"), the selection's counts by status (group
    "total") and its patients; `period` is the quarter or year the results were decided in
    ("all": whenever, or not yet). A withheld breakdown has no group lines; withheld
    figures have no lines at all. Illustrative terms are said on the first line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if report.agreement.illustrative:
        out.write(f"# {translate(ILLUSTRATIVE_NOTE)}\r\n")
    writer.writerow(CSV_HEADER)
    agreement = report.agreement
    start = (
        agreement.key,
        agreement.version,
        report.as_of.isoformat(),
        report.selection.period_key,
    )
    for view in report.measures:
        if view.totals_withheld:
            continue
        key = view.measure.key
        for row in view.rows:
            for status, figure in zip(STATUSES, row.cells, strict=True):
                writer.writerow((*start, key, report.by, row.label, status.value, figure.text))
            writer.writerow((*start, key, report.by, row.label, TOTAL, row.patients.text))
        for status, figure in zip(STATUSES, view.totals, strict=True):
            writer.writerow((*start, key, report.by, TOTAL, status.value, figure.text))
        writer.writerow((*start, key, report.by, TOTAL, TOTAL, view.patients.text))
    return out.getvalue()
