"""Small-cell suppression for published counts, after the CMS cell size suppression policy:
no count from 1 to 10 is published as a number, and no such count may be worked out from
what is published around it. Any report that shows counts uses this module.

What the reader sees
--------------------
- a count of 0 is shown as 0 (knowing that nobody did something is not a small cell);
- a count from 1 to 10 is shown as "<11" (the *primary* suppression);
- a count hidden only so that a small one cannot be worked out is shown as "*" (the
  *complementary* suppression); since zeros are never hidden and small counts are always
  "<11", a reader knows a "*" is at least 11, and the algorithm below assumes they do;
- every other count is shown as it is.

The algorithm (`suppress_table`)
--------------------------------
A table is rows x columns of counts with a total per row, a total per column and a grand
total. Each of these is a *line*: its entries add up to its total.

- every row: its cells, and the row's total;
- every column: its cells, and the column's total;
- the row of column totals, with the grand total as its total;
- the column of row totals, with the grand total as its total.

1. Every entry (cell or total) from 1 to 10 is marked "<11".
2. For each line, bound every hidden entry from what the line shows: a shown entry is
   exact, "<11" is 1..10, "*" is 11 or more, and the entries add up to the total. An
   entry is *exposed* when its bounds leave one value (the simplest case: a row whose
   total is shown and which hides exactly one cell; the subtler one: "<11" and "*" in a
   row totalling 12 can only be 1 and 11).
3. While a line exposes an entry, hide one more entry of that line as "*": the smallest
   non-zero cell it still shows (the "next-smallest" cell); when it shows none, its
   total.
4. A newly hidden entry sits in a second line (its column, or the totals), which may now
   expose it: repeat steps 2-3 over every line until a whole pass hides nothing. Each step
   hides one more entry of a finite table, so this ends.

Figures other tables publish too (`suppress_table`'s `fixed_*` marks)
-------------------------------------------------------------------
Two tables may share figures: the patients of a group are the row total of every measure's
table, and a measure's counts by status are the column totals of its table whatever the
rows are grouped by. A figure hidden in one table and shown in another is no longer hidden,
so a report decides such a figure's mark once and passes it as fixed: the algorithm keeps
it as given, hides only other entries, and counts a line it could protect only by changing
a fixed entry among `unprotected_lines`.

A figure derived from a table and published as a line of its own (a MeasureReport's
patients whose result is decided, by state, beside the whole selection's) goes through
`suppress_line`: entries the table's figures give away keep their primary mark, those
they do not are hidden, then the line hides more as a table's line would.

What it guarantees: in the result, no hidden entry can be worked out from the shown
entries and the marks of any one of its lines (the unit tests check it with random tables).
What it does not: solving several lines as one system can narrow a hidden count (as with
any complementary suppression by lines). One case cannot be protected at all: a line of
ten or more non-zero cells, all under 11, whose total is also under 11 — the cells can only
be ones. Hiding the total does not help (it is "<11" already), and hiding a zero would
break the "0 is shown" rule; `SuppressedTable.unprotected_lines` counts such lines so that
a report can say so or withhold the table.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "HIDDEN_TEXT",
    "THRESHOLD",
    "Figure",
    "Mark",
    "SuppressedLine",
    "SuppressedTable",
    "small_text",
    "suppress_count",
    "suppress_line",
    "suppress_table",
]

# Counts from 1 to THRESHOLD - 1 are small (CMS: 1 to 10).
THRESHOLD = 11
HIDDEN_TEXT = "*"


def small_text(threshold: int = THRESHOLD) -> str:
    return f"<{threshold}"


class Mark(enum.StrEnum):
    SHOWN = "shown"
    SMALL = "small"  # 1 .. threshold-1, shown as "<11"
    COMPLEMENT = "complement"  # hidden so that a small count cannot be worked out: "*"


@dataclass(frozen=True)
class Figure:
    """What may be published of one count. It holds no raw count, so a template or an
    export cannot print a suppressed value by mistake."""

    mark: Mark
    text: str  # "0", "25", "<11" or "*"

    @property
    def number(self) -> int | None:
        """The count when it is shown, else None."""
        return int(self.text) if self.mark is Mark.SHOWN else None

    @property
    def hidden(self) -> bool:
        return self.mark is not Mark.SHOWN

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class SuppressedTable:
    cells: tuple[tuple[Figure, ...], ...]  # [row][column]
    row_totals: tuple[Figure, ...]
    column_totals: tuple[Figure, ...]
    grand_total: Figure
    # Lines still exposing a small count after suppression (see the module's docstring).
    unprotected_lines: int = 0


def suppress_count(count: int, *, threshold: int = THRESHOLD) -> Figure:
    """A lone count, with no totals around it: only the primary rule applies."""
    _check_count(count)
    if 0 < count < threshold:
        return Figure(Mark.SMALL, small_text(threshold))
    return Figure(Mark.SHOWN, str(count))


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"a count is a non-negative integer, not {count!r}")


# --- one line -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SuppressedLine:
    entries: tuple[Figure, ...]
    total: Figure
    unprotected: bool = False  # some hidden entry can still be worked out


def suppress_line(
    counts: Sequence[int],
    *,
    hidden: Sequence[bool] | None = None,
    total_mark: Mark | None = None,
    threshold: int = THRESHOLD,
) -> SuppressedLine:
    """Suppress counts that add up to a total and are published as one line of their own,
    outside any table (say a figure derived from a table, by group, beside its total).
    `hidden`: entries that must not be shown whatever this line says (they would give away
    a count hidden elsewhere): marked "<11" or "*"; `total_mark`: the total's mark when it
    is decided elsewhere, kept as given (it must suit the count, as in `suppress_table`).
    Then, while the line gives a hidden entry away, the smallest non-zero entry it still
    shows is hidden ("*"), else its total; `unprotected` when neither is left."""
    for count in counts:
        _check_count(count)
    if hidden is not None and len(hidden) != len(counts):
        raise ValueError("one hidden flag per count")
    total = sum(counts)
    marks = [suppress_count(count, threshold=threshold).mark for count in counts]
    for index, must_hide in enumerate(hidden or ()):
        if must_hide and marks[index] is Mark.SHOWN:
            if counts[index] == 0:
                raise ValueError("a zero is never hidden")
            marks[index] = Mark.COMPLEMENT
    mark_of_total = suppress_count(total, threshold=threshold).mark
    if total_mark is not None:
        if not (
            total_mark is mark_of_total
            or (total_mark is Mark.COMPLEMENT and mark_of_total is Mark.SHOWN and total > 0)
        ):
            raise ValueError(f"a {total_mark.value} mark does not suit the count {total}")
        mark_of_total = total_mark
    unprotected = False
    while line_exposes(counts, marks, total, mark_of_total, threshold):
        shown = [i for i, m in enumerate(marks) if m is Mark.SHOWN and counts[i] > 0]
        if shown:
            marks[min(shown, key=lambda i: counts[i])] = Mark.COMPLEMENT
        elif mark_of_total is Mark.SHOWN and total_mark is None:
            mark_of_total = Mark.COMPLEMENT
        else:
            unprotected = True
            break

    def figure(count: int, mark: Mark) -> Figure:
        if mark is Mark.SHOWN:
            return Figure(Mark.SHOWN, str(count))
        if mark is Mark.SMALL:
            return Figure(Mark.SMALL, small_text(threshold))
        return Figure(Mark.COMPLEMENT, HIDDEN_TEXT)

    return SuppressedLine(
        entries=tuple(figure(c, m) for c, m in zip(counts, marks, strict=True)),
        total=figure(total, mark_of_total),
        unprotected=unprotected,
    )


# --- the table ----------------------------------------------------------------------------

# An entry of the table: ("cell", row, column), ("row", row), ("column", column), ("grand",).
_Entry = tuple[object, ...]
_GRAND: _Entry = ("grand",)


@dataclass(frozen=True)
class _Line:
    interior: tuple[_Entry, ...]
    total: _Entry


def _lines(rows: int, columns: int) -> list[_Line]:
    lines = [_Line(tuple(("cell", r, c) for c in range(columns)), ("row", r)) for r in range(rows)]
    lines += [
        _Line(tuple(("cell", r, c) for r in range(rows)), ("column", c)) for c in range(columns)
    ]
    lines.append(_Line(tuple(("column", c) for c in range(columns)), _GRAND))
    lines.append(_Line(tuple(("row", r) for r in range(rows)), _GRAND))
    return lines


def _bounds(value: int, mark: Mark, threshold: int) -> tuple[float, float]:
    """What a reader knows of an entry from its mark."""
    if mark is Mark.SHOWN:
        return value, value
    if mark is Mark.SMALL:
        return 1, threshold - 1
    return threshold, math.inf


def line_exposes(
    values: Sequence[int], marks: Sequence[Mark], total: int, total_mark: Mark, threshold: int
) -> bool:
    """True when some hidden entry of a line (cells `values` adding up to `total`) has
    only one possible value given the shown entries and the marks."""
    cells = [_bounds(v, m, threshold) for v, m in zip(values, marks, strict=True)]
    total_lo, total_hi = _bounds(total, total_mark, threshold)
    for i, mark in enumerate(marks):
        if mark is Mark.SHOWN:
            continue
        others_lo = sum(lo for j, (lo, _hi) in enumerate(cells) if j != i)
        others_hi = sum(hi for j, (_lo, hi) in enumerate(cells) if j != i)
        lo = max(cells[i][0], total_lo - others_hi)
        hi = min(cells[i][1], total_hi - others_lo)
        if lo >= hi:
            return True
    if total_mark is not Mark.SHOWN:
        lo = max(total_lo, sum(lo for lo, _hi in cells))
        hi = min(total_hi, sum(hi for _lo, hi in cells))
        if lo >= hi:
            return True
    return False


def suppress_table(
    counts: Sequence[Sequence[int]],
    *,
    threshold: int = THRESHOLD,
    fixed_row_totals: Sequence[Mark] | None = None,
    fixed_column_totals: Sequence[Mark] | None = None,
    fixed_grand_total: Mark | None = None,
) -> SuppressedTable:
    """Suppress a table of counts (rows of equal length) with its row, column and grand
    totals, as the module's docstring describes. `fixed_*`: the marks of totals decided
    elsewhere (figures other tables publish too), kept as given; a mark must suit its
    count (SHOWN and SMALL as the primary rule says, COMPLEMENT only on a count of at
    least the threshold)."""
    if threshold < 2:
        raise ValueError("the threshold is at least 2")
    rows = len(counts)
    columns = len(counts[0]) if rows else 0
    value: dict[_Entry, int] = {}
    for r, row in enumerate(counts):
        if len(row) != columns:
            raise ValueError("every row of the table has the same number of columns")
        for c, count in enumerate(row):
            _check_count(count)
            value["cell", r, c] = count
    for r in range(rows):
        value["row", r] = sum(counts[r])
    for c in range(columns):
        value["column", c] = sum(counts[r][c] for r in range(rows))
    value[_GRAND] = sum(value["row", r] for r in range(rows))

    mark = {
        entry: suppress_count(count, threshold=threshold).mark for entry, count in value.items()
    }
    fixed: set[_Entry] = set()
    given: list[tuple[_Entry, Mark]] = []
    if fixed_row_totals is not None:
        if len(fixed_row_totals) != rows:
            raise ValueError("one fixed mark per row")
        given += [(("row", r), m) for r, m in enumerate(fixed_row_totals)]
    if fixed_column_totals is not None:
        if len(fixed_column_totals) != columns:
            raise ValueError("one fixed mark per column")
        given += [(("column", c), m) for c, m in enumerate(fixed_column_totals)]
    if fixed_grand_total is not None:
        given.append((_GRAND, fixed_grand_total))
    for fixed_entry, given_mark in given:
        primary = mark[fixed_entry]
        suits = given_mark is primary or (
            given_mark is Mark.COMPLEMENT and primary is Mark.SHOWN and value[fixed_entry] > 0
        )
        if not suits:
            count = value[fixed_entry]
            raise ValueError(f"a {given_mark.value} mark does not suit the count {count}")
        mark[fixed_entry] = given_mark
        fixed.add(fixed_entry)
    lines = _lines(rows, columns)

    def exposes(line: _Line) -> bool:
        return line_exposes(
            [value[e] for e in line.interior],
            [mark[e] for e in line.interior],
            value[line.total],
            mark[line.total],
            threshold,
        )

    def next_to_hide(line: _Line) -> _Entry | None:
        shown = [
            e for e in line.interior if mark[e] is Mark.SHOWN and value[e] > 0 and e not in fixed
        ]
        if shown:
            # The smallest shown cell costs the least information; ties go to the first.
            return min(shown, key=lambda e: value[e])
        total_free = mark[line.total] is Mark.SHOWN and line.total not in fixed
        return line.total if total_free else None

    stuck: set[int] = set()
    changed = True
    while changed:
        changed = False
        for index, line in enumerate(lines):
            while exposes(line):
                entry = next_to_hide(line)
                if entry is None:
                    stuck.add(index)
                    break
                mark[entry] = Mark.COMPLEMENT
                changed = True

    unprotected = sum(1 for index in stuck if exposes(lines[index]))

    def figure(entry: _Entry) -> Figure:
        match mark[entry]:
            case Mark.SHOWN:
                return Figure(Mark.SHOWN, str(value[entry]))
            case Mark.SMALL:
                return Figure(Mark.SMALL, small_text(threshold))
            case _:
                return Figure(Mark.COMPLEMENT, HIDDEN_TEXT)

    return SuppressedTable(
        cells=tuple(tuple(figure(("cell", r, c)) for c in range(columns)) for r in range(rows)),
        row_totals=tuple(figure(("row", r)) for r in range(rows)),
        column_totals=tuple(figure(("column", c)) for c in range(columns)),
        grand_total=figure(_GRAND),
        unprotected_lines=unprotected,
    )
