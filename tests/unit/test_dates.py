"""A day as typed in a form: nothing typed, a real day, or not a day (each form then says
what is wrong in its own words)."""

from __future__ import annotations

from datetime import date

import pytest

from core.dates import parse_day, parse_day_or_none


@pytest.mark.parametrize("typed", ["", " ", "   ", "\t\n", "\u00a0"])
def test_nothing_typed_is_none(typed: str) -> None:
    assert parse_day(typed) is None
    assert parse_day_or_none(typed) is None


@pytest.mark.parametrize(
    ("typed", "day"),
    [
        ("2026-02-14", date(2026, 2, 14)),
        ("  2026-02-14  ", date(2026, 2, 14)),
        ("\t2026-02-14\n", date(2026, 2, 14)),
        ("2024-02-29", date(2024, 2, 29)),  # a leap day
        ("1900-01-01", date(1900, 1, 1)),
        ("2199-12-31", date(2199, 12, 31)),
    ],
)
def test_a_real_day_is_read(typed: str, day: date) -> None:
    assert parse_day(typed) == day
    assert parse_day_or_none(typed) == day


@pytest.mark.parametrize(
    "typed",
    [
        "2026-02-30",  # a day the calendar does not have
        "2025-02-29",  # not a leap year
        "2026-13-01",
        "2026-00-10",
        "0000-01-01",
        "0001-01-01",  # years no record has: date arithmetic would overflow at the ends
        "1899-12-31",
        "2200-01-01",
        "9999-12-31",
        "someday",
        "2026-2-3",  # the form asks for YYYY-MM-DD
        "14/02/2026",
        "02/14/2026",
        "2026-02-14T09:30",  # a time is not a day
        "2026-02-14 09:30",
        "2026 - 02 - 14",
        "+2026-02-14",
        "٢٠٢٦-٠٢-١٤",  # digits of another script
    ],
)
def test_what_is_not_a_day_raises_or_is_none(typed: str) -> None:
    with pytest.raises(ValueError):
        parse_day(typed)
    assert parse_day_or_none(typed) is None


def test_other_iso_forms_are_read_as_before() -> None:
    # date.fromisoformat (Python 3.11) also reads the basic and week forms; every form read
    # them before these were shared, and still does.
    assert parse_day("20260214") == date(2026, 2, 14)
    assert parse_day("2026-W07-6") == date(2026, 2, 14)
