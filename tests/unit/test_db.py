"""The database layer keeps health information out of error messages and logs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

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
