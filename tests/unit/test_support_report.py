"""The questionnaires and travel support tables (reporting/patient_support_report.py) over
random counts: no count from 1 to 10 is shown or exported, no hidden count can be worked out
from its line (the attacker of test_suppression.py), and the spend is shown exactly where
its count of arranged requests is; with large counts everything is shown, spend included."""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import UTC, date, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reporting.patient_support import Count, Months
from reporting.patient_support_report import (
    ARRANGED_COLUMN,
    COLUMNS,
    TABLES,
    SupportTable,
    support_report,
    table_csv,
)
from tests.unit.test_suppression import lines_of, revealed_in

AS_OF = datetime(2026, 11, 27, 15, tzinfo=UTC)
MONTHS = Months(date(2026, 1, 1), date(2026, 3, 1))
CODES = {1: "MD", 2: "CO", 3: "GA"}
SMALL = {str(n) for n in range(1, 11)}


def _counts(key: str) -> st.SearchStrategy[list[Count]]:
    one = st.builds(
        Count,
        state_id=st.sampled_from(sorted(CODES)),
        month=st.sampled_from(MONTHS.month_keys()),
        column=st.sampled_from(COLUMNS[key]),
        count=st.integers(1, 30),
        cents=st.integers(0, 500_000),
    )
    return st.lists(one, max_size=12)


def _grid(table: SupportTable, counts: list[Count]) -> list[list[int]]:
    found: Counter[tuple[int, str, str]] = Counter()
    for count in counts:
        found[count.state_id, count.month, count.column] += count.count
    if table.rows:
        return [[found[s, m, c] for c in table.columns] for s, m in table.rows]
    return [[sum(n for (_s, _m, c), n in found.items() if c == col) for col in table.columns]]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    questionnaires=_counts("questionnaires"),
    requests=_counts("requests"),
    visits=_counts("visits"),
)
def test_no_published_count_is_small_nor_can_be_worked_out(
    questionnaires: list[Count], requests: list[Count], visits: list[Count]
) -> None:
    drawn = {"questionnaires": questionnaires, "requests": requests, "visits": visits}
    report = support_report(
        as_of=AS_OF,
        months=MONTHS,
        questionnaires=questionnaires,
        requests=requests,
        visits=visits,
        state_codes=CODES,
    )
    for key in TABLES:
        table = report.tables[key]
        exported = list(csv.DictReader(io.StringIO(table_csv(report, key, CODES))))
        if table.withheld:
            assert exported == []
            continue
        assert table.figures is not None
        for line in lines_of(_grid(table, drawn[key]), table.figures):
            for value, figure in line:
                assert not (1 <= value <= 10) or figure.text == "<11", (key, line)
                assert figure.hidden or figure.text == str(value), (key, line)
            assert revealed_in(line) == [], (key, line)
        for row in exported:
            if row["column"] != "spend_dollars":
                assert row["value"] not in SMALL, (key, row)
        if key == "requests":
            for cells, spend in zip(table.figures.cells, table.row_spend, strict=False):
                assert spend.hidden == cells[ARRANGED_COLUMN].hidden
            assert table.total_spend is not None
            arranged_total = table.figures.column_totals[ARRANGED_COLUMN]
            assert table.total_spend.hidden == arranged_total.hidden


def test_large_counts_are_shown_with_their_spend() -> None:
    requests = [
        Count(1, "2026-01", "arranged", 20, 123_456),
        Count(1, "2026-01", "declined", 15),
        Count(1, "2026-02", "arranged", 12, 50_000),
        Count(1, "2026-02", "requested", 11),
    ]
    report = support_report(
        as_of=AS_OF,
        months=MONTHS,
        questionnaires=[],
        requests=requests,
        visits=[],
        state_codes=CODES,
    )
    table = report.tables["requests"]
    assert table.figures is not None
    assert table.rows == ((1, "2026-01"), (1, "2026-02"), (1, "2026-03"))
    assert [f.text for f in table.figures.cells[0]] == ["0", "0", "20", "15"]
    assert [s.dollars for s in table.row_spend] == ["1234.56", "500.00", "0.00"]
    assert table.total_spend is not None and table.total_spend.dollars == "1734.56"
    assert table.figures.grand_total.text == "58"
    exported = table_csv(report, "requests", CODES)
    assert "MD,2026-01,spend_dollars,1234.56" in exported
    assert "total,total,spend_dollars,1734.56" in exported
    # A table with nothing to count is its totals, all 0.
    assert report.tables["visits"].rows == ()
    assert report.tables["visits"].empty
