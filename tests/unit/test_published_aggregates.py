"""Every other aggregate an analyst sees or exports, over random counts: the rebate
statement's published counts (page and CSV) and a state's education reach (page and CSV).
No count from 1 to 10 is shown, and no hidden count can be worked out from the line it is
published in (the attacker of test_suppression.py). The outcome dashboards, their CSV and
summary MeasureReports are checked the same way in
tests/integration/reporting/test_outcomes.py, the program figures in
test_program_report.py."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.clock import FrozenClock
from core.models import State
from education.content import shipped_modules
from reporting import education_reach
from reporting.agreements import shipped_agreements
from reporting.outcomes import AsOf
from reporting.rebates import (
    MeasureCounts,
    Quarter,
    StatementCounts,
    published_statement,
    published_statement_csv,
)
from reporting.suppression import Figure
from tests.unit.test_suppression import lines_of, revealed_in

SMALL = "<11"
# Weighted towards the small counts suppression is about, zeros included.
counts = st.one_of(st.just(0), st.integers(1, 12), st.integers(0, 40))


def _no_small_number(texts: list[str]) -> None:
    assert not [text for text in texts if text.isdigit() and 1 <= int(text) <= 10], texts


# --- rebate statements: what those without the per-patient basis see ------------------------


def _statement(grid: list[tuple[int, int, int]]) -> StatementCounts:
    agreement = shipped_agreements().get("lyfgenia-2025")
    assert agreement is not None
    return StatementCounts(
        agreement=agreement,
        state_id=1,
        quarter=Quarter(2026, 2),
        as_of=AsOf(datetime(2026, 7, 1, tzinfo=UTC)),
        provisional=False,
        measures=tuple(
            MeasureCounts(
                measure=measure,
                unit_amount=agreement.rebate_amount(measure),
                owed=owed,
                added=added,
                withdrawn=withdrawn,
            )
            for measure, (owed, added, withdrawn) in zip(agreement.measures, grid, strict=True)
        ),
    )


@settings(max_examples=400, deadline=None)
@given(grid=st.lists(st.tuples(counts, counts, counts), min_size=3, max_size=3))
def test_a_published_statement_shows_no_small_count_nor_one_that_can_be_worked_out(
    grid: list[tuple[int, int, int]],
) -> None:
    statement = _statement(grid)
    published = published_statement(statement)
    exported = published_statement_csv(published, state_code="MD", note="illustrative")
    rows = list(csv.DictReader(line for line in exported.splitlines() if line[:1] != "#"))
    if published.withheld:
        assert rows == []
        return
    # What the page and the CSV show: each measure's counts by kind of line, and the
    # totals by kind (no total by measure).
    for kind in range(3):
        line: list[tuple[int, Figure]] = [
            (counts_of[kind], row.figures[kind])
            for counts_of, row in zip(grid, published.rows, strict=True)
        ]
        line.append((sum(counts_of[kind] for counts_of in grid), published.totals[kind]))
        for value, figure in line:
            assert not (1 <= value <= 10) or figure.text == SMALL, line
            assert figure.hidden or figure.text == str(value), line
        assert revealed_in(line) == [], line
    # An amount is a count times the rebate: given only where its count is shown, and the
    # statement's total only when every count is.
    for published_row in published.rows:
        for figure, amount in zip(published_row.figures, published_row.amounts, strict=True):
            assert (amount is None) is figure.hidden
    every_shown = all(not f.hidden for shown in published.rows for f in shown.figures)
    assert (published.amount is not None) is every_shown
    if every_shown:
        assert published.amount == statement.amount
    _no_small_number([row["patients"] for row in rows])
    for row in rows:
        if row["patients"] in (SMALL, "*"):
            assert row["amount"] in ("", row["patients"])
    total = next(row for row in rows if row["line"] == "total")
    assert total["amount"] == (f"{statement.amount:.2f}" if every_shown else "*")


# --- education reach ------------------------------------------------------------------------

MODULES = shipped_modules()
MODULE_KEYS = [*sorted(MODULES.modules)[:5], "retired-module"]
completions = st.lists(
    st.tuples(
        st.sampled_from(MODULE_KEYS),
        st.sampled_from(["patient", "caregiver"]),
        st.integers(1, 11),  # the month of 2026 (the page's "today" is in November)
        st.integers(1, 14),  # how many readers that month
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=completions)
def test_education_reach_shows_no_small_count_nor_one_that_can_be_worked_out(
    drawn: list[tuple[str, str, int, int]],
) -> None:
    found = [
        (key, role, date(2026, month, 1))
        for key, role, month, readers in drawn
        for _reader in range(readers)
    ]

    def first_completions(_session: Any, *, state: State) -> list[tuple[str, str, date]]:
        return found

    maryland = State(id=1, code="MD", name="Maryland", time_zone="America/New_York")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(education_reach, "_first_completions", first_completions)
        reach = education_reach.state_reach(
            None,  # type: ignore[arg-type]  # the completions are given above
            clock=FrozenClock(datetime(2026, 11, 27, 15, tzinfo=UTC)),
            state=maryland,
            year=2026,
            library=MODULES,
            language="en",
        )
    exported = list(csv.DictReader(io.StringIO(education_reach.reach_csv(reach))))
    for table in reach.tables:
        shown = [row for row in exported if row["readers"] == table.readers]
        if table.withheld:
            assert shown == []
            continue
        # The true counts, counted again here: modules (rows) by month (columns).
        true = [
            [
                sum(1 for k, r, m in found if k == module.key and r == table.readers and m == month)
                for month in reach.months
            ]
            for module in table.modules
        ]
        for line in lines_of(true, table.table):
            for value, figure in line:
                assert not (1 <= value <= 10) or figure.text == SMALL, line
                assert figure.hidden or figure.text == str(value), line
            assert revealed_in(line) == [], line
        _no_small_number([row["completed"] for row in shown])
        assert len(shown) == (len(table.modules) + 1) * (len(reach.months) + 1)
