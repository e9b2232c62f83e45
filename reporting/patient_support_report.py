"""The *Questionnaires and travel support* report's tables: the counts of
`reporting.patient_support` laid out by state and month and suppressed
(`reporting.suppression`, as the program figures do) before they leave this module; a page
or a CSV only gets `Figure`s.

Three tables, rows (state, month) by columns, with their totals:

- questionnaires: due, by completed or not (the row's total is "due");
- requests: travel support requests, by waiting, approved (not booked yet), arranged,
  declined (the row's total is "requests"), with the spend of the arranged ones beside;
- visits: visits with support arranged, by attended, not attended, not yet.

As in `reporting.program_report`, the totals by column are decided first as their own line
with the grand total, then the rows around them; rows no hiding can protect are withheld
(the totals stand), totals no hiding can protect withhold the whole table.

The spend is money, not a count, but it belongs to the arranged requests it adds up: it is
shown exactly where the count of arranged requests is shown (a row's beside its cell, the
total beside the column's total). The counts' complementary suppression never leaves one
hidden cell alone in a line, so the spend of a small group cannot be worked out from the
total spend either."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.protocol import ProtocolLibrary
from coordination.travel.models import TravelStatus
from core.clock import Clock
from core.models import State
from reporting.patient_support import (
    REQUEST_STATUSES,
    Answered,
    Attended,
    Count,
    Months,
    questionnaire_counts,
    request_counts,
    supported_visit_counts,
)
from reporting.program_report import Table
from reporting.suppression import HIDDEN_TEXT, Mark, SuppressedTable, suppress_table

TABLES: tuple[str, ...] = ("questionnaires", "requests", "visits")
COLUMNS: dict[str, tuple[str, ...]] = {
    "questionnaires": (Answered.COMPLETED.value, Answered.NOT_COMPLETED.value),
    "requests": tuple(status.value for status in REQUEST_STATUSES),
    "visits": tuple(value.value for value in Attended),
}
ARRANGED_COLUMN = COLUMNS["requests"].index(TravelStatus.ARRANGED.value)


@dataclass(frozen=True)
class Spend:
    """What the arranged requests of a row (or all of them) cost; None when not shown
    (its count of arranged requests is hidden)."""

    cents: int | None

    @property
    def hidden(self) -> bool:
        return self.cents is None

    @property
    def dollars(self) -> str:
        """ "1234.50", or "*" when hidden (as in the CSV)."""
        return HIDDEN_TEXT if self.cents is None else f"{self.cents // 100}.{self.cents % 100:02d}"


@dataclass(frozen=True)
class SupportTable:
    """One suppressed table. `rows` are (state id, month "2026-03") pairs; `spend` only
    for requests: one per row, and the total."""

    key: str
    rows: tuple[tuple[int, str], ...]
    columns: tuple[str, ...]
    figures: SuppressedTable | None  # None: withheld whole
    rows_withheld: bool = False
    row_spend: tuple[Spend, ...] = ()
    total_spend: Spend | None = None

    @property
    def withheld(self) -> bool:
        return self.figures is None

    @property
    def empty(self) -> bool:
        return self.figures is not None and self.figures.grand_total.text == "0"

    def as_table(self, row_labels: dict[tuple[int, str], str]) -> Table:
        """The program figures' `Table` (for the shared chart), rows by their labels,
        without the rows of nothing (a month with no count has no bar to draw)."""
        assert self.figures is not None
        kept = [i for i, total in enumerate(self.figures.row_totals) if total.text != "0"]
        figures = replace(
            self.figures,
            cells=tuple(self.figures.cells[i] for i in kept),
            row_totals=tuple(self.figures.row_totals[i] for i in kept),
        )
        return Table(
            self.key,
            tuple(row_labels[self.rows[i]] for i in kept),
            self.columns,
            figures,
            self.rows_withheld,
        )


@dataclass(frozen=True)
class SupportReport:
    as_of: datetime
    months: Months
    tables: dict[str, SupportTable]


def _suppressed(grid: list[list[int]], columns: int) -> tuple[SuppressedTable | None, bool]:
    """The table suppressed around its totals; (None, False) when the totals cannot be
    protected, (the totals alone, True) when the rows cannot."""
    totals = [sum(row[index] for row in grid) for index in range(columns)]
    margins = suppress_table([totals])
    if margins.unprotected_lines:
        return None, False
    column_marks = [figure.mark for figure in margins.cells[0]]
    grand = margins.grand_total.mark
    if not grid:
        return suppress_table([[0] * columns]), False
    figures = suppress_table(grid, fixed_column_totals=column_marks, fixed_grand_total=grand)
    if figures.unprotected_lines:
        alone = suppress_table(
            [totals],
            fixed_column_totals=column_marks,
            fixed_grand_total=grand,
            fixed_row_totals=[grand],
        )
        return alone, True
    return figures, False


def _table(
    key: str, counts: Sequence[Count], state_order: dict[int, str], months: Months
) -> SupportTable:
    columns = COLUMNS[key]
    by_cell: Counter[tuple[int, str, str]] = Counter()
    cents: Counter[tuple[int, str]] = Counter()
    for count in counts:
        by_cell[count.state_id, count.month, count.column] += count.count
        cents[count.state_id, count.month] += count.cents
    # Every month of the period for each state with anything to count.
    states = sorted({state for state, _m, _c in by_cell}, key=lambda s: (state_order.get(s, ""), s))
    rows = [(state, month) for state in states for month in months.month_keys()]
    grid = [[by_cell[state, month, column] for column in columns] for state, month in rows]
    figures, rows_withheld = _suppressed(grid, len(columns))
    if figures is None:
        return SupportTable(key, (), columns, None)
    shown_rows = () if rows_withheld else tuple(rows)
    row_spend: tuple[Spend, ...] = ()
    total_spend = None
    if key == "requests":
        row_spend = tuple(
            Spend(cents[row] if cells[ARRANGED_COLUMN].mark is Mark.SHOWN else None)
            for row, cells in zip(shown_rows, figures.cells, strict=False)
        )
        shown = figures.column_totals[ARRANGED_COLUMN].mark is Mark.SHOWN
        total_spend = Spend(sum(cents.values()) if shown else None)
    return SupportTable(key, shown_rows, columns, figures, rows_withheld, row_spend, total_spend)


def support_report(
    *,
    as_of: datetime,
    months: Months,
    questionnaires: Sequence[Count],
    requests: Sequence[Count],
    visits: Sequence[Count],
    state_codes: dict[int, str],
) -> SupportReport:
    """Every table of the report, suppressed. `state_codes`: the states' codes (the rows'
    order)."""
    tables = {
        "questionnaires": _table("questionnaires", questionnaires, state_codes, months),
        "requests": _table("requests", requests, state_codes, months),
        "visits": _table("visits", visits, state_codes, months),
    }
    return SupportReport(as_of=as_of, months=months, tables=tables)


def load_support_report(
    session: Session,
    *,
    clock: Clock,
    library: ProtocolLibrary,
    months: Months,
    state_ids: frozenset[int] | None,
) -> tuple[SupportReport, dict[int, str]]:
    """The report for the months and states (None: every state), counted now, with the
    codes of the states (for the rows' labels and the CSV)."""
    codes = {
        state.id: state.code
        for state in session.scalars(select(State).order_by(State.code))
        if state_ids is None or state.id in state_ids
    }
    report = support_report(
        as_of=clock.now(),
        months=months,
        questionnaires=questionnaire_counts(
            session, library=library, months=months, state_ids=state_ids
        ),
        requests=request_counts(session, months=months, state_ids=state_ids),
        visits=supported_visit_counts(session, months=months, state_ids=state_ids),
        state_codes=codes,
    )
    return report, codes


CSV_HEADER = ("as_of", "table", "state", "month", "column", "value")
TOTAL = "total"
SPEND = "spend_dollars"


def table_csv(report: SupportReport, key: str, state_codes: dict[int, str]) -> str:
    """One table as published on the page (suppressed), one figure per line: each cell,
    each row's total (column "total"), each column's total (state and month "total") and
    the grand total; for requests, the spend in dollars ("*" when hidden) as the column
    "spend_dollars". A withheld table has no lines; withheld rows leave only the totals."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    table = report.tables[key]
    figures = table.figures
    if figures is None:
        return out.getvalue()
    as_of = report.as_of.isoformat()
    for index, (state, month) in enumerate(table.rows):
        code = state_codes.get(state, str(state))
        for column, cell in zip(table.columns, figures.cells[index], strict=True):
            writer.writerow((as_of, key, code, month, column, cell.text))
        writer.writerow((as_of, key, code, month, TOTAL, figures.row_totals[index].text))
        if table.row_spend:
            writer.writerow((as_of, key, code, month, SPEND, table.row_spend[index].dollars))
    for column, cell in zip(table.columns, figures.column_totals, strict=True):
        writer.writerow((as_of, key, TOTAL, TOTAL, column, cell.text))
    writer.writerow((as_of, key, TOTAL, TOTAL, TOTAL, figures.grand_total.text))
    if table.total_spend is not None:
        writer.writerow((as_of, key, TOTAL, TOTAL, SPEND, table.total_spend.dollars))
    return out.getvalue()
