"""The few SQL expressions reports need that SQLite and PostgreSQL write differently: a day
some months after another (clamped to the month's end, as PostgreSQL does), and the UTC day
of an instant. Reports compare days, never instants with days: a PostgreSQL session would
otherwise read a day in its own time zone."""

from __future__ import annotations

import calendar
from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, Integer, case
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from core.db import UTCDateTime


def add_months_to(day: date, months: int) -> date:
    """`day` plus `months` calendar months; the 31st of January plus one month is the last
    day of February (the SQL below does the same on both databases)."""
    total = day.year * 12 + day.month - 1 + months
    year, month = divmod(total, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


class add_months(FunctionElement[date]):  # noqa: N801 (an SQL function's name)
    """`add_months(day, n)`: the day `n` months after `day` (n a Python int)."""

    type = Date()
    inherit_cache = False
    name = "add_months"

    def __init__(self, day: ColumnElement[Any], months: int) -> None:
        if not isinstance(months, int) or isinstance(months, bool):
            raise TypeError("months is an int")
        self.months = months
        super().__init__(day)


@compiles(add_months, "sqlite")
def _add_months_sqlite(element: add_months, compiler: SQLCompiler, **kw: Any) -> str:
    day = compiler.process(next(iter(element.clauses)), **kw)
    step = f"'{element.months:+d} months'"
    # Days up to the 28th exist in every month (the quick way); SQLite rolls 31 January
    # + 1 month over into March: then step back to the month's last day.
    return (
        f"(CASE WHEN substr({day}, 9, 2) <= '28' THEN date({day}, {step}) "
        f"WHEN strftime('%d', date({day}, {step})) = substr({day}, 9, 2) "
        f"THEN date({day}, {step}) "
        f"ELSE date({day}, {step}, 'start of month', '-1 day') END)"
    )


@compiles(add_months, "postgresql")
def _add_months_postgresql(element: add_months, compiler: SQLCompiler, **kw: Any) -> str:
    day = compiler.process(next(iter(element.clauses)), **kw)
    return f"CAST({day} + make_interval(months => {element.months:d}) AS DATE)"


class utc_day(FunctionElement[date]):  # noqa: N801 (an SQL function's name)
    """The UTC calendar day of an instant (a UTCDateTime column)."""

    type = Date()
    inherit_cache = True
    name = "utc_day"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    # Instants are stored as UTC text ("2026-07-15 13:45:00.000000").
    return f"date({compiler.process(element.clauses, **kw)})"


@compiles(utc_day, "postgresql")
def _utc_day_postgresql(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(({compiler.process(element.clauses, **kw)}) AT TIME ZONE 'UTC' AS DATE)"


def later_day(first: ColumnElement[date], second: ColumnElement[date]) -> ColumnElement[date]:
    """The later of two days (both non-null)."""
    return case((first >= second, first), else_=second)


class day_start(FunctionElement[datetime]):  # noqa: N801 (an SQL function's name)
    """The instant a UTC day begins, to compare an instant column with a day so that an
    index on the instant still serves (`taken >= day_start(window_start)`)."""

    type = UTCDateTime()
    inherit_cache = True
    name = "day_start"


@compiles(day_start, "sqlite")
def _day_start_sqlite(element: day_start, compiler: SQLCompiler, **kw: Any) -> str:
    # "2026-07-15" sorts before every instant of that day stored as UTC text
    # ("2026-07-15 00:00:00.000000"), and after every instant of the day before.
    return str(compiler.process(element.clauses, **kw))


@compiles(day_start, "postgresql")
def _day_start_postgresql(element: day_start, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(CAST({compiler.process(element.clauses, **kw)} AS TIMESTAMP) AT TIME ZONE 'UTC')"


class year_of(FunctionElement[int]):  # noqa: N801 (an SQL function's name)
    """The calendar year of a day."""

    type = Integer()
    inherit_cache = True
    name = "year_of"


class month_of(FunctionElement[int]):  # noqa: N801 (an SQL function's name)
    """The month (1-12) of a day."""

    type = Integer()
    inherit_cache = True
    name = "month_of"


@compiles(year_of, "sqlite")
def _year_of_sqlite(element: year_of, compiler: SQLCompiler, **kw: Any) -> str:
    # Days are stored as "2026-07-15": cutting is much cheaper than strftime().
    return f"CAST(substr({compiler.process(element.clauses, **kw)}, 1, 4) AS INTEGER)"


@compiles(month_of, "sqlite")
def _month_of_sqlite(element: month_of, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(substr({compiler.process(element.clauses, **kw)}, 6, 2) AS INTEGER)"


@compiles(year_of, "postgresql")
def _year_of_postgresql(element: year_of, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(EXTRACT(YEAR FROM {compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(month_of, "postgresql")
def _month_of_postgresql(element: month_of, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(EXTRACT(MONTH FROM {compiler.process(element.clauses, **kw)}) AS INTEGER)"
