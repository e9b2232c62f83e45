"""Small-cell suppression (reporting/suppression.py): counts from 1 to 10 are never shown as
numbers, zeros stay 0, and no suppressed count can be worked out from what its row or
column shows, including through totals. The attacker here is written independently of the
module: it knows the shown numbers, that "<11" is 1..10 and that "*" is at least 11, and
asks whether a hidden entry could take any other value."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reporting.suppression import (
    HIDDEN_TEXT,
    Figure,
    Mark,
    SuppressedTable,
    suppress_count,
    suppress_line,
    suppress_table,
)

SMALL = "<11"
INF = 10**9  # "at least 11" has no upper bound; this stands for one


# --- an attacker reading one line ------------------------------------------------------


def _known(figure: Figure, value: int) -> tuple[int, int]:
    """What a reader knows of an entry: exact when shown, else what its mark says."""
    if figure.mark is Mark.SHOWN:
        assert figure.text == str(value), "a shown number must be the true count"
        return value, value
    if figure.mark is Mark.SMALL:
        assert figure.text == SMALL
        return 1, 10
    assert figure.text == HIDDEN_TEXT
    return 11, INF


def _could_be_otherwise(
    entries: list[tuple[int, int, int]], total_index: int, hidden_index: int
) -> bool:
    """entries: (true value, low, high), the line's cells and its total at `total_index`.
    Can the hidden entry take a value other than its true one, with every entry in its
    bounds and the cells still adding up to the total?"""
    value = entries[hidden_index][0]
    for other in (value - 1, value + 1):
        low, high = entries[hidden_index][1], entries[hidden_index][2]
        if not low <= other <= high:
            continue
        # cells - total must stay 0: the rest must make up what the changed entry moved.
        sign = -1 if hidden_index == total_index else 1
        need = -sign * other
        lowest = highest = 0
        for index, (_v, lo, hi) in enumerate(entries):
            if index == hidden_index:
                continue
            if index == total_index:
                lowest, highest = lowest - hi, highest - lo
            else:
                lowest, highest = lowest + lo, highest + hi
        if lowest <= need <= highest:
            return True
    return False


def lines_of(
    counts: Sequence[Sequence[int]], table: SuppressedTable
) -> list[list[tuple[int, Figure]]]:
    """Every line as [(value, figure) of its cells..., (value, figure) of its total]."""
    rows = len(counts)
    columns = len(counts[0]) if rows else 0
    row_sums = [sum(row) for row in counts]
    column_sums = [sum(counts[r][c] for r in range(rows)) for c in range(columns)]
    lines = []
    for r in range(rows):
        lines.append(
            [(counts[r][c], table.cells[r][c]) for c in range(columns)]
            + [(row_sums[r], table.row_totals[r])]
        )
    for c in range(columns):
        lines.append(
            [(counts[r][c], table.cells[r][c]) for r in range(rows)]
            + [(column_sums[c], table.column_totals[c])]
        )
    grand = (sum(row_sums), table.grand_total)
    lines.append([(column_sums[c], table.column_totals[c]) for c in range(columns)] + [grand])
    lines.append([(row_sums[r], table.row_totals[r]) for r in range(rows)] + [grand])
    return lines


def revealed_in(line: list[tuple[int, Figure]]) -> list[int]:
    """The positions of hidden entries this line gives away."""
    entries = [(value, *_known(figure, value)) for value, figure in line]
    total_index = len(line) - 1
    return [
        index
        for index, (_value, figure) in enumerate(line)
        if figure.hidden and not _could_be_otherwise(entries, total_index, index)
    ]


def inherently_exposed(line: list[tuple[int, Figure]]) -> bool:
    """Ten or more cells under 11 whose total is under 11: they can only be ones, whatever
    is hidden (the limit the module documents)."""
    *cells, (total, _figure) = line
    nonzero = [value for value, _f in cells if value > 0]
    return 0 < total < 11 and len(nonzero) >= 10


def check_table(counts: list[list[int]]) -> SuppressedTable:
    """Every property a published table must have; returns the table for more checks."""
    table = suppress_table(counts)
    lines = lines_of(counts, table)
    for line in lines:
        for value, figure in line:
            if value == 0:
                assert figure.text == "0", "a zero stays 0"
            elif value < 11:
                assert figure.text == SMALL, f"{value} published as {figure.text}"
            else:
                assert figure.text in (str(value), HIDDEN_TEXT)
        # From "shown cells and shown totals" alone: a line never hides exactly one entry.
        assert sum(1 for _v, figure in line if figure.hidden) != 1, line
        if not inherently_exposed(line):
            assert revealed_in(line) == [], f"line {line} gives away {revealed_in(line)}"
    assert table.unprotected_lines == sum(1 for line in lines if inherently_exposed(line))
    return table


def texts(table: SuppressedTable) -> list[list[str]]:
    return [[figure.text for figure in row] for row in table.cells]


# --- single counts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "shown"), [(0, "0"), (1, SMALL), (5, SMALL), (10, SMALL), (11, "11"), (250, "250")]
)
def test_a_lone_count_is_shown_unless_it_is_from_1_to_10(count: int, shown: str) -> None:
    figure = suppress_count(count)
    assert figure.text == shown == str(figure)
    assert figure.number == (None if shown == SMALL else count)


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None])
def test_a_count_is_a_non_negative_integer(bad: object) -> None:
    with pytest.raises(ValueError):
        suppress_count(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        suppress_table([[12, bad]])  # type: ignore[list-item]


def test_rows_must_have_the_same_length() -> None:
    with pytest.raises(ValueError):
        suppress_table([[12, 13], [14]])


def test_a_figure_never_holds_the_hidden_count() -> None:
    table = suppress_table([[3, 40], [50, 60]])
    hidden = [figure for row in table.cells for figure in row if figure.hidden]
    assert hidden
    for figure in hidden:
        assert figure.number is None
        assert set(vars(figure)) == {"mark", "text"}


# --- tables --------------------------------------------------------------------------------


def test_a_table_without_small_counts_is_shown_whole() -> None:
    table = check_table([[12, 0, 40], [0, 0, 11]])
    assert texts(table) == [["12", "0", "40"], ["0", "0", "11"]]
    assert [f.text for f in table.row_totals] == ["52", "11"]
    assert [f.text for f in table.column_totals] == ["12", "0", "51"]
    assert table.grand_total.text == "63"


def test_an_empty_table_and_a_table_of_zeros() -> None:
    empty = suppress_table([])
    assert empty.cells == () and empty.grand_total.text == "0"
    zeros = check_table([[0, 0], [0, 0]])
    assert texts(zeros) == [["0", "0"], ["0", "0"]]
    assert zeros.grand_total.text == "0"


def test_one_small_cell_takes_the_next_smallest_of_its_row_and_column_with_it() -> None:
    #         Jan Feb Mar
    counts = [
        [3, 20, 30],
        [25, 40, 50],
        [35, 45, 55],
    ]
    table = check_table(counts)
    # 3 is small; its row's next-smallest is 20 and its column's is 25. Then 20's column
    # and 25's row hide one more each (40 is the smallest of both): a 2x2 block that no
    # row or column can solve.
    assert texts(table) == [
        [SMALL, "*", "30"],
        ["*", "*", "50"],
        ["35", "45", "55"],
    ]
    # Every total stays: none of them can reveal the 3.
    assert [f.text for f in table.row_totals] == ["53", "115", "135"]
    assert [f.text for f in table.column_totals] == ["63", "105", "135"]
    assert table.grand_total.text == "303"


def test_a_total_that_would_give_the_small_cell_away_is_hidden() -> None:
    # The row's only other count is 0: no cell can hide the 4, so the total must go —
    # but the row total is 4 itself, so it is "<11" already and reveals nothing exact.
    table = check_table([[4, 0], [30, 40]])
    assert table.cells[0][0].text == SMALL
    assert table.row_totals[0].text == SMALL
    # Its column hides 30 as well, or the column total would give the 4 away.
    assert table.cells[1][0].text == HIDDEN_TEXT


def test_a_small_and_an_eleven_adding_up_to_twelve_are_not_enough() -> None:
    # "<11" + "*" = 12 could only be 1 + 11: the total goes too.
    table = check_table([[1, 11]])
    assert [f.text for f in table.cells[0]] == [SMALL, HIDDEN_TEXT]
    assert table.row_totals[0].hidden
    assert table.grand_total.hidden


def test_a_small_column_total_is_protected_from_the_grand_total() -> None:
    # Column totals 5, 30, 40 and a grand total 75: the 5 is hidden, so is the next
    # smallest column total (30), and with it a cell of that column.
    counts = [[2, 12, 20], [3, 18, 20]]
    table = check_table(counts)
    assert table.column_totals[0].text == SMALL
    assert table.column_totals[1].text == HIDDEN_TEXT
    assert any(table.cells[r][1].hidden for r in range(2))


def test_ten_ones_with_a_total_of_ten_cannot_be_protected_and_are_counted() -> None:
    table = check_table([[1] * 10, [20] * 10])
    assert table.unprotected_lines == 1
    assert all(figure.text == SMALL for figure in table.cells[0])
    nine = check_table([[1] * 9, [20] * 9])
    assert nine.unprotected_lines == 0


def test_a_bigger_threshold() -> None:
    table = suppress_table([[15, 40], [30, 50]], threshold=21)
    assert table.cells[0][0].text == "<21"
    assert table.cells[1][1].text == "50" or table.cells[1][1].hidden
    with pytest.raises(ValueError):
        suppress_table([[1]], threshold=1)


# --- any table -----------------------------------------------------------------------------

counts_strategy = st.one_of(st.integers(0, 12), st.integers(0, 40), st.just(0), st.just(1))


@st.composite
def tables(draw: st.DrawFn, max_side: int = 7) -> list[list[int]]:
    rows = draw(st.integers(1, max_side))
    columns = draw(st.integers(1, max_side))
    return [[draw(counts_strategy) for _ in range(columns)] for _ in range(rows)]


@settings(max_examples=400, deadline=None)
@given(tables())
@example([[1, 11]])
@example([[1, 0], [0, 0]])
@example([[10, 1], [1, 10]])
@example([[1, 1], [11, 11]])
@example([[5, 6, 0], [0, 11, 12], [30, 0, 1]])
def test_no_suppressed_count_can_be_worked_out_from_its_row_or_column(
    counts: list[list[int]],
) -> None:
    check_table(counts)


@settings(max_examples=60, deadline=None)
@given(tables(max_side=12))
def test_wide_tables_keep_the_same_promise(counts: list[list[int]]) -> None:
    check_table(counts)


@settings(max_examples=200, deadline=None)
@given(tables(max_side=5))
def test_suppression_is_deterministic_and_only_hides(counts: list[list[int]]) -> None:
    first, second = suppress_table(counts), suppress_table(counts)
    assert first == second
    # Nothing but small counts and their protection is hidden: a table whose counts are
    # all 0 or at least 11 is published whole.
    if all(value == 0 or value >= 11 for row in counts for value in row):
        assert not any(figure.hidden for row in first.cells for figure in row)
        assert not first.grand_total.hidden


# --- one line of its own -------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(counts_strategy, st.booleans()), min_size=1, max_size=8),
    st.sampled_from([None, Mark.SHOWN, Mark.COMPLEMENT]),
)
@example([(9, False), (32, False)], Mark.SHOWN)
def test_a_line_of_its_own_gives_no_hidden_count_away(
    drawn: list[tuple[int, bool]], total_mark: Mark | None
) -> None:
    counts = [count for count, _hide in drawn]
    # Only non-zero counts can be asked hidden; a fixed total mark must suit its count.
    hidden = [hide and count > 0 for count, hide in drawn]
    total = sum(counts)
    if total_mark is not None and (
        0 < total < 11 or (total_mark is Mark.COMPLEMENT and total == 0)
    ):
        total_mark = Mark.SMALL if 0 < total < 11 else None
    line = suppress_line(counts, hidden=hidden, total_mark=total_mark)
    entries = [*zip(counts, line.entries, strict=True), (total, line.total)]
    for (value, figure), must_hide in zip(entries, [*hidden, False], strict=True):
        assert not (1 <= value <= 10) or figure.text == SMALL
        assert not must_hide or figure.hidden
    if total_mark is not None:
        assert line.total.mark is total_mark
    if not line.unprotected:
        assert revealed_in(entries) == [], entries
    else:
        assert revealed_in(entries) != []
