"""The program dashboard's tables (reporting/program_report.py) over random cubes: no count
from 1 to 10 is shown, no hidden count can be worked out from its line (the attacker of
test_suppression.py), and the totals two tables share read the same in both."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordination.followup.protocol import shipped_protocols
from reporting.program import (
    ADHERENCE,
    NOT_INFUSED,
    REVIEWS,
    TEXT_OUTCOMES,
    Adherence,
    Cell,
    Figure,
    ProgramCube,
    Selection,
)
from reporting.program_report import (
    CONTACTED,
    NOT_CONTACTED,
    REPORT_KINDS,
    RETENTION_STATUSES,
    Table,
    program_report,
    visit_order,
)
from reporting.suppression import Figure as Shown
from tests.unit.test_suppression import lines_of, revealed_in

PROTOCOLS = shipped_protocols()
VISITS = sorted(visit_order(PROTOCOLS))[:6]
AS_OF = datetime(2026, 11, 27, 15, tzinfo=UTC)
COHORTS = ["2025-Q1", "2025-Q3", "2026-Q2", ""]
PERIODS = ["2025-Q4", "2026-Q1", "2026-Q3"]


def _cell(
    figure: Figure, row: str, column: str, *, period: str | None = None
) -> st.SearchStrategy[Cell]:
    return st.builds(
        Cell,
        figure=st.just(figure),
        state_id=st.sampled_from([1, 2]),
        center_id=st.sampled_from([1, 2, 3]),
        therapy_id=st.sampled_from([1, 2]),
        cohort=st.sampled_from(COHORTS),
        period=st.just(period) if period is not None else st.sampled_from(PERIODS),
        row=st.just(row),
        column=st.just(column),
        # Weighted towards the small counts suppression is about.
        count=st.one_of(st.integers(1, 12), st.integers(1, 60)),
    )


def _cells() -> st.SearchStrategy[Cell]:
    adherence = st.sampled_from(VISITS).flatmap(
        lambda visit: st.sampled_from([a.value for a in ADHERENCE]).flatmap(
            lambda outcome: _cell(Figure.ADHERENCE, visit, outcome)
        )
    )
    retention = st.sampled_from(RETENTION_STATUSES).flatmap(
        lambda status: _cell(Figure.RETENTION, status, "", period="")
    )
    texts = st.sampled_from([o.value for o in TEXT_OUTCOMES]).flatmap(
        lambda outcome: _cell(Figure.TEXTS, "", outcome)
    )
    reports = st.sampled_from(REPORT_KINDS).flatmap(
        lambda kind: st.sampled_from([r.value for r in REVIEWS]).flatmap(
            lambda review: _cell(Figure.REPORTS, kind, review)
        )
    )
    return st.one_of(adherence, retention, texts, reports)


def with_contacts(cells: list[Cell]) -> list[Cell]:
    """The cells with the contact figure of their missed visits: the same visits, some
    contacted (after 3, 12 or 40 days), the rest not yet (as the database counts them)."""
    contacts = []
    for cell in cells:
        if cell.figure is Figure.ADHERENCE and cell.column == Adherence.MISSED.value:
            contacted = cell.count * 2 // 3
            days = ("3", "12", "40")[cell.count % 3]
            for row, count in ((days, contacted), ("", cell.count - contacted)):
                if count:
                    contacts.append(replace(cell, figure=Figure.CONTACT, row=row, column="",
                                            count=count))  # fmt: skip
    return cells + contacts


def true_counts(cells: list[Cell], selection: Selection) -> dict[str, Counter[tuple[str, str]]]:
    """What each table counts, by (row, column), counted again here from the cells."""
    order = visit_order(PROTOCOLS)
    found: dict[str, Counter[tuple[str, str]]] = {
        key: Counter() for key in ("adherence_by_visit", "contact", "retention", "texts", "reports")
    }
    for cell in cells:
        if not selection.keeps(cell):
            continue
        match cell.figure:
            case Figure.ADHERENCE:
                found["adherence_by_visit"][cell.row, cell.column] += cell.count
            case Figure.CONTACT:
                column = CONTACTED if cell.row else NOT_CONTACTED
                found["contact"]["missed", column] += cell.count
            case Figure.RETENTION:
                found["retention"][cell.cohort[:4] or NOT_INFUSED, cell.row] += cell.count
            case Figure.TEXTS:  # all time: by the year of the event
                found["texts"][cell.period[:4], cell.column] += cell.count
            case Figure.REPORTS:
                found["reports"][cell.row, cell.column] += cell.count
    by_year: Counter[tuple[str, str]] = Counter()
    for (row, column), count in found["adherence_by_visit"].items():
        by_year[str(order.get(row, (0, 0))[1] or "?"), column] += count
    found["adherence_by_year"] = by_year
    return found


def published_lines(
    table: Table, counts: Counter[tuple[str, str]]
) -> list[list[tuple[int, Shown]]]:
    """Every line a reader sees of a table, with the true counts."""
    assert table.figures is not None
    if table.rows:
        grid = [[counts[row, column] for column in table.columns] for row in table.rows]
    else:  # the totals alone
        grid = [
            [sum(n for (_r, c), n in counts.items() if c == column) for column in table.columns]
        ]
    return lines_of(grid, table.figures)


SELECTIONS = [Selection(), Selection(state_ids=frozenset({1})), Selection(center_id=2)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=st.lists(_cells(), max_size=40))
def test_no_published_count_is_from_1_to_10_nor_can_be_worked_out(drawn: list[Cell]) -> None:
    cells = with_contacts(drawn)
    cube = ProgramCube(as_of=AS_OF, cells=tuple(cells))
    for selection in SELECTIONS:
        report = program_report(cube, selection=selection, protocols=PROTOCOLS)
        counts = true_counts(cells, selection)
        for key, table_counts in counts.items():
            table = report.tables[key]
            if table.withheld:
                continue
            for line in published_lines(table, table_counts):
                for value, figure in line:
                    assert not (1 <= value <= 10) or figure.text == "<11", (key, line)
                    assert figure.hidden or figure.text == str(value), (key, line)
                assert revealed_in(line) == [], (key, selection, line)
        # Totals two tables publish read the same in both.
        by_visit, by_year = report.tables["adherence_by_visit"], report.tables["adherence_by_year"]
        if by_visit.figures is not None and by_year.figures is not None:
            assert [f.text for f in by_visit.figures.column_totals] == [
                f.text for f in by_year.figures.column_totals
            ]
            assert by_visit.figures.grand_total.text == by_year.figures.grand_total.text
            contact = report.tables["contact"]
            missed = by_visit.figures.column_totals[
                [a.value for a in ADHERENCE].index(Adherence.MISSED.value)
            ]
            if contact.figures is not None:
                assert contact.figures.grand_total.text == missed.text
