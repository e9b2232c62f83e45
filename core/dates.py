"""Reading a calendar day as a person typed it in a form.

Each form says in its own words what is wrong (and some refuse a day for reasons of their
own: in the past, too far ahead), so these only tell "nothing typed", a day, or "not a day"."""

from __future__ import annotations

from datetime import date

# No day this platform records falls outside these years (birth dates included); refusing
# the rest keeps date arithmetic (a day later, a zone's offset) from overflowing at 9999.
FIRST_YEAR = 1900
LAST_YEAR = 2199


def parse_day(text: str) -> date | None:
    """The day typed (YYYY-MM-DD; spaces around it are ignored), or None when nothing was
    typed. Raises ValueError when something was typed that is not a real day (a wrong
    format, a day the calendar does not have, such as 2026-02-30, or a year outside
    FIRST_YEAR..LAST_YEAR)."""
    text = text.strip()
    if not text:
        return None
    day = date.fromisoformat(text)
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise ValueError(f"year {day.year} is outside {FIRST_YEAR}-{LAST_YEAR}")
    return day


def parse_day_or_none(text: str) -> date | None:
    """Like `parse_day`, but None also for what is not a real day: for forms that tell an
    empty field from a wrong one themselves, or ignore both (a filter left as it was)."""
    try:
        return parse_day(text)
    except ValueError:
        return None
