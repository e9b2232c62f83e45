"""The program dashboard's tables: the counts of `reporting.program` added up for a selection
and suppressed (`reporting.suppression`) before they leave this module; a page, a CSV or a
MeasureReport only gets `Figure`s.

Tables (rows x columns, with their totals):

- adherence by visit, and by year since infusion (visits due, i.e. whose window closed,
  by outcome); the two share their totals by outcome and their grand total;
- retention: patients by infusion year (or not infused yet) and status;
- reminder texts by period and outcome; answers by period and kind; opt-outs by period
  and how; patients' reports by kind and review;
- contact: the visits missed, contacted since or not yet; their total is the adherence
  tables' "missed" total.

Figures two tables publish (the totals shared above) are marked once and passed as fixed
(`suppress_table`'s `fixed_*`), so that no table shows what another hides. In each table
the totals by column are decided first, as their own line with the grand total; then the
rows around them. Rows no hiding can protect are withheld (the totals stand, the page says
so); totals no hiding can protect withhold the whole table. The median and 90th
percentile of the days to the next contact are given only from 11 contacts on.

Comparing two different selections (a state against all of them, one period against
another) can narrow a hidden count, as with any cell suppression of overlapping tables."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from coordination.followup.models import ReportKind
from coordination.followup.protocol import ProtocolLibrary
from coordination.texting.models import ConsentHow
from core.models import PatientStatus
from reporting.program import (
    ADHERENCE,
    ANSWERS,
    NOT_INFUSED,
    REVIEWS,
    TEXT_OUTCOMES,
    Adherence,
    Cell,
    Figure,
    ProgramCube,
    Selection,
)
from reporting.suppression import THRESHOLD, Mark, SuppressedTable, suppress_table

RETENTION_STATUSES: tuple[str, ...] = (
    PatientStatus.ACTIVE.value,
    PatientStatus.ENROLLED.value,
    PatientStatus.LOST_TO_FOLLOW_UP.value,
    PatientStatus.WITHDRAWN.value,
    PatientStatus.DECEASED.value,
)
OPT_OUT_HOWS: tuple[str, ...] = (
    ConsentHow.SMS_KEYWORD.value,
    ConsentHow.PORTAL.value,
    ConsentHow.COORDINATOR.value,
    ConsentHow.PROVIDER_21610.value,
)
REPORT_KINDS: tuple[str, ...] = tuple(kind.value for kind in ReportKind)
CONTACTED, NOT_CONTACTED = "contacted", "not_contacted"

# The tables, in the order of the page and the exports.
TABLES: tuple[str, ...] = (
    "adherence_by_visit",
    "adherence_by_year",
    "contact",
    "retention",
    "texts",
    "answers",
    "opt_outs",
    "reports",
)


@dataclass(frozen=True)
class Table:
    """One suppressed table: row and column keys (labels are the page's), its figures."""

    key: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    figures: SuppressedTable | None  # None: withheld whole
    rows_withheld: bool = False  # the rows could not be protected; the totals stand

    @property
    def withheld(self) -> bool:
        return self.figures is None

    @property
    def empty(self) -> bool:
        return self.figures is not None and self.figures.grand_total.text == "0"


@dataclass(frozen=True)
class ContactDays:
    """Days from a missed visit's window closing to the next contact, over the visits
    contacted: None when fewer than 11 were (not given)."""

    median: int | None
    p90: int | None


@dataclass(frozen=True)
class ProgramReport:
    as_of: datetime
    selection: Selection
    tables: dict[str, Table]
    contact_days: ContactDays
    from_snapshot: bool = False

    def table(self, key: str) -> Table:
        return self.tables[key]


def visit_order(protocols: ProtocolLibrary) -> dict[str, tuple[int, int]]:
    """Each protocol visit key with (days after infusion, year since infusion): the order
    of the rows, and the year a visit counts in (day 1 to 365 is year 1, and so on)."""
    found: dict[str, tuple[int, int]] = {}
    for versions in protocols.versions.values():
        for protocol in versions.values():
            for visit in protocol.visits:
                if visit.key not in found:
                    year = max(1, math.ceil(visit.offset_days / 365.25))
                    found[visit.key] = (visit.offset_days, year)
    return found


def _sum(cells: Iterable[Cell], key: str) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for cell in cells:
        match key:
            case "row":
                row = cell.row
            case "period":
                row = cell.period
            case _:  # "year": the calendar year of the event
                row = cell.period[:4]
        counts[row, cell.column] += cell.count
    return counts


def _grid(
    counts: Counter[tuple[str, str]], rows: Sequence[str], columns: Sequence[str]
) -> list[list[int]]:
    return [[counts.get((row, column), 0) for column in columns] for row in rows]


@dataclass(frozen=True)
class _Margins:
    columns: tuple[Mark, ...]
    grand: Mark


def _margins(grid: list[list[int]], columns: int, *, grand: Mark | None = None) -> _Margins | None:
    """The marks of the totals by column and the grand total, decided as their own line;
    None when that line cannot be protected."""
    totals = [sum(row[index] for row in grid) for index in range(columns)]
    line = suppress_table([totals], fixed_grand_total=grand)
    if line.unprotected_lines:
        return None
    return _Margins(tuple(figure.mark for figure in line.cells[0]), line.grand_total.mark)


def _table(
    key: str,
    counts: Counter[tuple[str, str]],
    rows: Sequence[str],
    columns: Sequence[str],
    *,
    margins: _Margins | None = None,
    grand: Mark | None = None,
) -> tuple[Table, _Margins | None]:
    """A table suppressed around its totals (decided here, or given as `margins`). A table
    with no rows is its totals, all 0."""
    if not rows:
        zeros = suppress_table([[0] * len(columns)])
        return Table(key, (), tuple(columns), zeros), _Margins(
            tuple(figure.mark for figure in zeros.column_totals), zeros.grand_total.mark
        )
    grid = _grid(counts, rows, columns)
    chosen = margins or _margins(grid, len(columns), grand=grand)
    if chosen is None:
        return Table(key, tuple(rows), tuple(columns), None), None
    figures = suppress_table(
        grid, fixed_column_totals=chosen.columns, fixed_grand_total=chosen.grand
    )
    if figures.unprotected_lines:
        # The totals alone (they were protected as their own line).
        totals = suppress_table(
            [[sum(row[index] for row in grid) for index in range(len(columns))]],
            fixed_column_totals=chosen.columns,
            fixed_grand_total=chosen.grand,
            fixed_row_totals=[chosen.grand],
        )
        return Table(key, (), tuple(columns), totals, rows_withheld=True), chosen
    return Table(key, tuple(rows), tuple(columns), figures), chosen


def _percentile(days: Counter[int], share: float) -> int:
    """The nearest-rank percentile of a distribution of whole days."""
    total = sum(days.values())
    rank = max(1, math.ceil(share * total))
    seen = 0
    for value in sorted(days):
        seen += days[value]
        if seen >= rank:
            return value
    raise ValueError("empty distribution")


def _periods(cells: Sequence[Cell], selection: Selection) -> tuple[str, list[str]]:
    """How the tables by time are broken down: by year over all time, else by quarter."""
    by = "year" if selection.period.key == "all" else "period"
    found = sorted({cell.period[:4] if by == "year" else cell.period for cell in cells})
    return by, found


def program_report(
    cube: ProgramCube,
    *,
    selection: Selection,
    protocols: ProtocolLibrary,
    from_snapshot: bool = False,
) -> ProgramReport:
    """Every table of the dashboard for the selection, suppressed."""
    kept = [cell for cell in cube.cells if selection.keeps(cell)]
    of: dict[Figure, list[Cell]] = {figure: [] for figure in Figure}
    for cell in kept:
        of[cell.figure].append(cell)
    tables: dict[str, Table] = {}
    adherence_columns = tuple(outcome.value for outcome in ADHERENCE)

    # Adherence, by visit then by year: the same visits, the same totals.
    order = visit_order(protocols)
    by_visit = _sum(of[Figure.ADHERENCE], "row")
    visit_keys = sorted(
        {row for row, _column in by_visit}, key=lambda key: (order.get(key, (10**6, 0)), key)
    )
    tables["adherence_by_visit"], margins = _table(
        "adherence_by_visit", by_visit, visit_keys, adherence_columns
    )
    by_year: Counter[tuple[str, str]] = Counter()
    for (row, column), count in by_visit.items():
        by_year[str(order.get(row, (0, 0))[1] or "?"), column] += count
    years = sorted({row for row, _column in by_year}, key=lambda key: (len(key), key))
    tables["adherence_by_year"], _ = _table(
        "adherence_by_year", by_year, years, adherence_columns, margins=margins
    )

    # Contact after a missed visit: its total is adherence's "missed" total.
    days: Counter[int] = Counter()
    contact: Counter[tuple[str, str]] = Counter()
    for cell in of[Figure.CONTACT]:
        if cell.row:
            days[int(cell.row)] += cell.count
            contact["missed", CONTACTED] += cell.count
        else:
            contact["missed", NOT_CONTACTED] += cell.count
    missed_mark = None
    if margins is not None:
        missed_mark = margins.columns[adherence_columns.index(Adherence.MISSED.value)]
    tables["contact"], _ = _table(
        "contact", contact, ["missed"], (CONTACTED, NOT_CONTACTED), grand=missed_mark
    )
    contacted = sum(days.values())
    contact_days = (
        ContactDays(_percentile(days, 0.5), _percentile(days, 0.9))
        if contacted >= THRESHOLD
        else ContactDays(None, None)
    )

    # Retention cells keep the status as their row: re-key by (infusion year, status).
    by_cohort: Counter[tuple[str, str]] = Counter()
    for cell in of[Figure.RETENTION]:
        by_cohort[cell.cohort[:4] or NOT_INFUSED, cell.row] += cell.count
    cohort_rows = sorted(
        {row for row, _status in by_cohort}, key=lambda key: (key == NOT_INFUSED, key)
    )
    tables["retention"], _ = _table("retention", by_cohort, cohort_rows, RETENTION_STATUSES)

    for key, figure, columns in (
        ("texts", Figure.TEXTS, tuple(outcome.value for outcome in TEXT_OUTCOMES)),
        ("answers", Figure.ANSWERS, tuple(answer.value for answer in ANSWERS)),
        ("opt_outs", Figure.OPT_OUTS, OPT_OUT_HOWS),
    ):
        by, periods = _periods(of[figure], selection)
        tables[key], _ = _table(key, _sum(of[figure], by), periods, columns)

    reports = _sum(of[Figure.REPORTS], "row")
    tables["reports"], _ = _table(
        "reports", reports, REPORT_KINDS, tuple(review.value for review in REVIEWS)
    )
    return ProgramReport(
        as_of=cube.as_of,
        selection=selection,
        tables=tables,
        contact_days=contact_days,
        from_snapshot=from_snapshot,
    )


CSV_HEADER = ("as_of", "table", "row", "column", "value")
TOTAL = "total"


def table_csv(report: ProgramReport, key: str) -> str:
    """One table as published on the page (suppressed), one figure per line: each cell,
    each row's total (column "total"), each column's total (row "total") and the grand
    total. A withheld table has no lines; withheld rows leave only the totals."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    table = report.tables[key]
    figures = table.figures
    if figures is None:
        return out.getvalue()
    as_of = report.as_of.isoformat()
    if table.rows and not table.rows_withheld:
        for row, cells, total in zip(table.rows, figures.cells, figures.row_totals, strict=True):
            for column, cell in zip(table.columns, cells, strict=True):
                writer.writerow((as_of, key, row, column, cell.text))
            writer.writerow((as_of, key, row, TOTAL, total.text))
    for column, cell in zip(table.columns, figures.column_totals, strict=True):
        writer.writerow((as_of, key, TOTAL, column, cell.text))
    writer.writerow((as_of, key, TOTAL, TOTAL, figures.grand_total.text))
    if key == "contact":
        days = report.contact_days
        for name, value in (("median_days", days.median), ("p90_days", days.p90)):
            writer.writerow((as_of, key, "missed", name, "" if value is None else str(value)))
    return out.getvalue()
