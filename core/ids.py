"""Reading numbers that come from outside: record ids in paths, queries and forms, and small
counts and choices (an hour, a year, an answer's index).

`str.isdigit()` is not a check before `int()`: it accepts "²" (which `int()` refuses) and
"٣" (which `int()` reads as 3), and `int()` alone accepts " 7", "+7" and "1_000". A number
too large for the database's integer overflows SQLite. Everything a browser sends as a
number is read here instead: ASCII digits only, within bounds, or None (a route then
answers with a clear error, never a 500)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path, Query
from pydantic import BeforeValidator

# The largest id a database integer column holds everywhere we run (PostgreSQL's integer).
MAX_ID = 2**31 - 1
# At most ten ASCII digits: anything longer is out of range before it is read.
_DIGITS = re.compile(r"[0-9]{1,10}")


def parse_int(text: str | None, *, low: int, high: int) -> int | None:
    """`text` as an integer when it is written in ASCII digits only (no sign, no spaces,
    no other script's digits) and lies within `low`..`high`; None otherwise."""
    if text is None or _DIGITS.fullmatch(text) is None:
        return None
    value = int(text)
    return value if low <= value <= high else None


def parse_id(text: str | None) -> int | None:
    """`text` as a record id (1..2**31-1, ASCII digits only); None when it cannot be one."""
    return parse_int(text, low=1, high=MAX_ID)


def _ascii_digits(value: object) -> object:
    """Before pydantic reads a path or query value as an int: only ASCII digits pass."""
    if isinstance(value, str) and _DIGITS.fullmatch(value) is None:
        raise ValueError("an id is written in digits 0-9")
    return value


# A record id in a route's path, e.g. `user_id: PathId`: anything else answers 400.
PathId = Annotated[int, BeforeValidator(_ascii_digits), Path(ge=1, le=MAX_ID)]
# An optional record id in the query string (`?sent=12`).
QueryId = Annotated[int | None, BeforeValidator(_ascii_digits), Query(ge=1, le=MAX_ID)]
