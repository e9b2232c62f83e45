"""Reading the values of FHIR search parameters (R4 search.html): dates with their prefixes
and implicit ranges, tokens (`system|code`), references (`Patient/123`), strings, and the
escaping rules that let a value hold `,` `|` `$` or `\\`.

Everything here is pure: a value either parses or raises `BadValue`, which the search turns
into a 400 OperationOutcome naming the parameter (never echoing more than a short piece of
the value)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

from core.ids import parse_id

# The comparators of ordered parameters (R4 search.html#prefix). `ap` (approximately) is
# not served: how near is near is a question this server would answer arbitrarily.
DATE_PREFIXES = ("eq", "ne", "lt", "gt", "le", "ge", "sa", "eb")
_UNSERVED_PREFIXES = ("ap",)
_DATE = re.compile(
    r"(?P<year>[0-9]{4})"
    r"(?:-(?P<month>[0-9]{2})"
    r"(?:-(?P<day>[0-9]{2})"
    r"(?:T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?P<fraction>\.[0-9]{1,9})?)?"
    r"(?P<zone>Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?"
)
_QUOTE_LIMIT = 40


def quoted(value: str) -> str:
    """A value as an error message may show it: short, on one line."""
    text = value.replace("\n", " ").replace("\r", " ")
    return repr(text if len(text) <= _QUOTE_LIMIT else text[:_QUOTE_LIMIT] + "...")


class BadValue(ValueError):
    """A value its parameter cannot take: `code` is the OperationOutcome issue type
    (`invalid`, or `not-supported` for what FHIR defines but this server does not do)."""

    def __init__(self, problem: str, code: str = "invalid") -> None:
        super().__init__(problem)
        self.problem = problem
        self.code = code


# --- escaping -------------------------------------------------------------------------


def split_escaped(value: str, separator: str) -> list[str]:
    """`value` split at each unescaped `separator`, the escapes kept (`a\\,b` is one part):
    split the alternatives at `,` first, then a token at `|`, then `unescape` each piece."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


_ESCAPE = re.compile(r"\\([,|$\\])")


def unescape(value: str) -> str:
    """A value with its escapes (`\\,` `\\|` `\\$` `\\\\`) undone."""
    return _ESCAPE.sub(r"\1", value)


def or_values(value: str) -> list[str]:
    """The alternatives of one parameter occurrence (`code=a,b` is a or b), still escaped."""
    return split_escaped(value, ",")


# --- dates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DateValue:
    """A date parameter's value: its prefix and the range its precision implies,
    `[low, high)` in UTC (`2026` is all of 2026; `2026-03-14T10:00Z` is that minute)."""

    prefix: str
    low: datetime
    high: datetime


def parse_date(value: str) -> DateValue:
    """`[prefix]YYYY[-MM[-DD[Thh:mm[:ss[.fff]][zone]]]]`; a value without a zone is in UTC
    (the server's zone). 400 for anything else: a bad prefix, a 13th month, a 40th day."""
    prefix = "eq"
    text = value.strip()
    if len(text) >= 2 and text[:2].isalpha():
        prefix, text = text[:2], text[2:]
        if prefix in _UNSERVED_PREFIXES:
            raise BadValue("the prefix 'ap' is not supported; use ge and le", "not-supported")
        if prefix not in DATE_PREFIXES:
            raise BadValue(
                f"{quoted(prefix)} is not a prefix (use one of {', '.join(DATE_PREFIXES)})"
            )
    match = _DATE.fullmatch(text)
    if match is None:
        raise BadValue(f"{quoted(text)} is not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or a time)")
    try:
        low, high = _range(match)
    except (ValueError, OverflowError):
        raise BadValue(f"{quoted(text)} is not a date that exists") from None
    return DateValue(prefix, low, high)


def _range(match: re.Match[str]) -> tuple[datetime, datetime]:
    parts = match.groupdict()
    year = int(parts["year"])
    if parts["month"] is None:
        return _utc(year, 1, 1), _utc(year + 1, 1, 1)
    month = int(parts["month"])
    if parts["day"] is None:
        low = _utc(year, month, 1)
        return low, _utc(year + month // 12, month % 12 + 1, 1)
    day = date(year, month, int(parts["day"]))
    if parts["hour"] is None:
        low = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return low, low + timedelta(days=1)
    zone = _zone(parts["zone"])
    hour, minute = int(parts["hour"]), int(parts["minute"])
    if parts["second"] is None:
        low = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        return low.astimezone(UTC), (low + timedelta(minutes=1)).astimezone(UTC)
    second = int(parts["second"])
    fraction = parts["fraction"]
    if fraction is None:
        low = datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=zone)
        return low.astimezone(UTC), (low + timedelta(seconds=1)).astimezone(UTC)
    digits = fraction[1:]
    micro = int(digits[:6].ljust(6, "0"))
    low = datetime(day.year, day.month, day.day, hour, minute, second, micro, tzinfo=zone)
    step = timedelta(microseconds=10 ** max(0, 6 - len(digits)))
    return low.astimezone(UTC), (low + step).astimezone(UTC)


def _utc(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


def _zone(text: str | None) -> timezone:
    if text is None or text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError("no such offset")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


# --- tokens, references, ids ------------------------------------------------------------


@dataclass(frozen=True)
class TokenValue:
    """`system|code`: `system` None when the value had no `|` (any system), "" for `|code`
    (no system); `code` None for `system|` (any code of the system)."""

    system: str | None
    code: str | None


def parse_token(value: str) -> TokenValue:
    """A token value; 400 when it is empty (`|` alone, or nothing)."""
    parts = [unescape(part) for part in split_escaped(value, "|")]
    if len(parts) == 1:
        code = parts[0]
        if not code:
            raise BadValue("an empty value matches nothing; leave the parameter out")
        return TokenValue(None, code)
    if len(parts) > 2:
        raise BadValue("a token is system|code (escape a '|' in a code as '\\|')")
    system, code = parts
    if not system and not code:
        raise BadValue("give a system, a code or both (system|code)")
    return TokenValue(system, code or None)


def parse_reference(value: str, *, target: str = "Patient") -> int | None:
    """The local id a reference parameter names (`123`, `Patient/123`, or the full URL on
    any base): None when it names something this server cannot hold (another type, an id
    that is not one of ours), which matches nothing; 400 when it is empty."""
    text = unescape(value).strip()
    if not text:
        raise BadValue("an empty reference matches nothing; leave the parameter out")
    if "/_history/" in text:
        text = text.split("/_history/", 1)[0]
    pieces = text.rstrip("/").split("/")
    if len(pieces) >= 2:
        if pieces[-2] != target:
            return None
        return parse_id(pieces[-1])
    return parse_id(pieces[0])


def parse_local_id(value: str) -> int | None:
    """An `_id` value: one of our ids, or None (matches nothing)."""
    return parse_id(value.strip())


def parse_instant(value: str) -> datetime:
    """An instant parameter such as `_since` (its earliest moment: `2026-03` is March 1st)."""
    if value.strip()[:2].isalpha():
        raise BadValue("takes an instant, without a prefix")
    return parse_date(value).low
