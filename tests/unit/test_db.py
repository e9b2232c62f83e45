"""The database layer keeps health information out of error messages and logs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Column, MetaData, Table, insert, text
from sqlalchemy.exc import IntegrityError, StatementError

from core.db import UTCDateTime, make_engine


def test_sql_errors_do_not_carry_the_values() -> None:
    engine = make_engine("sqlite://")
    with engine.connect() as connection:
        connection.execute(text("create table people (name text unique)"))
        connection.execute(text("insert into people values (:name)"), {"name": "Maya Johnson"})
        with pytest.raises(IntegrityError) as caught:
            connection.execute(text("insert into people values (:name)"), {"name": "Maya Johnson"})
    assert "Maya" not in str(caught.value)


def test_instants_are_stored_in_utc_and_naive_ones_refused() -> None:
    column = UTCDateTime()
    dialect = make_engine("sqlite://").dialect
    eastern = datetime(2026, 3, 8, 9, 30, tzinfo=timezone(timedelta(hours=-4)))
    stored = column.process_bind_param(eastern, dialect)
    assert stored is not None and stored.utcoffset() == timedelta(0)
    assert stored.hour == 13
    with pytest.raises(ValueError, match="naive"):
        column.process_bind_param(datetime(2026, 3, 8, 9, 30), dialect)
    restored = column.process_result_value(datetime(2026, 3, 8, 13, 30), dialect)
    assert restored is not None and restored.tzinfo is not None


def test_many_rows_binding_the_same_instant_store_each_row_its_own() -> None:
    engine = make_engine("sqlite://")
    now = datetime(2026, 3, 8, 9, 30, tzinfo=timezone(timedelta(hours=-4)))
    later = now + timedelta(minutes=1)
    table = Table("moments", MetaData(), Column("at", UTCDateTime()))
    with engine.begin() as connection:
        table.create(connection)
        connection.execute(insert(table), [{"at": now}, {"at": now}, {"at": later}, {"at": now}])
        stored = connection.execute(text("select at from moments")).scalars().all()
        with pytest.raises(StatementError, match="naive"):
            connection.execute(insert(table), [{"at": now}, {"at": datetime(2026, 3, 8)}])
    assert stored == [
        "2026-03-08 13:30:00.000000",
        "2026-03-08 13:30:00.000000",
        "2026-03-08 13:31:00.000000",
        "2026-03-08 13:30:00.000000",
    ]
