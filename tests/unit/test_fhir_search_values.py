"""Reading search values as FHIR writes them (dates and the range their precision means,
tokens, references, escapes), and the paging cursor: opaque, and opened only by the server
that sealed it for the same center and search."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_adapter.errors import FhirError
from fhir_adapter.search_cursor import open_cursor, seal
from fhir_adapter.search_values import (
    BadValue,
    TokenValue,
    or_values,
    parse_date,
    parse_reference,
    parse_token,
    split_escaped,
    unescape,
)


def _utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "prefix", "low", "high"),
    [
        ("2026", "eq", _utc(2026, 1, 1), _utc(2027, 1, 1)),
        ("2026-12", "eq", _utc(2026, 12, 1), _utc(2027, 1, 1)),
        ("ge2026-02", "ge", _utc(2026, 2, 1), _utc(2026, 3, 1)),
        ("lt2024-02-29", "lt", _utc(2024, 2, 29), _utc(2024, 3, 1)),
        ("2026-03-14T10:00Z", "eq", _utc(2026, 3, 14, 10), _utc(2026, 3, 14, 10, 1)),
        ("2026-03-14T10:00", "eq", _utc(2026, 3, 14, 10), _utc(2026, 3, 14, 10, 1)),
        ("2026-03-14T10:00:05Z", "eq", _utc(2026, 3, 14, 10, 0, 5), _utc(2026, 3, 14, 10, 0, 6)),
        (
            "2026-03-14T10:00:05.5Z",
            "eq",
            _utc(2026, 3, 14, 10, 0, 5, 500000),
            _utc(2026, 3, 14, 10, 0, 5, 600000),
        ),
        ("sa2026-03-14T06:00-04:00", "sa", _utc(2026, 3, 14, 10), _utc(2026, 3, 14, 10, 1)),
        ("2026-03-14T23:30+14:00", "eq", _utc(2026, 3, 14, 9, 30), _utc(2026, 3, 14, 9, 31)),
    ],
)
def test_a_date_is_the_range_its_precision_means(
    value: str, prefix: str, low: datetime, high: datetime
) -> None:
    parsed = parse_date(value)
    assert (parsed.prefix, parsed.low, parsed.high) == (prefix, low, high)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("2026-13-40", "not a date that exists"),
        ("2023-02-29", "not a date that exists"),
        ("2026-03-14T24:00Z", "not a date that exists"),
        ("2026-03-14T10:00+15:00", "not a date that exists"),
        ("xx2026", "not a prefix"),
        ("ap2026", "'ap'"),
        ("26", "not a FHIR date"),
        ("2026-3-4", "not a FHIR date"),
        ("", "not a FHIR date"),
        ("2026-03-14 10:00", "not a FHIR date"),
    ],
)
def test_a_date_that_is_not_one_is_refused(value: str, says: str) -> None:
    with pytest.raises(BadValue) as refused:
        parse_date(value)
    assert says in refused.value.problem


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)))
def test_any_instant_written_with_its_zone_is_that_instant(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    zone = timezone(timedelta(hours=-5))
    written = moment.replace(tzinfo=UTC).astimezone(zone).isoformat()
    parsed = parse_date(written)
    assert parsed.low == moment.replace(tzinfo=UTC)
    assert parsed.high - parsed.low == timedelta(seconds=1)


def test_tokens() -> None:
    assert parse_token("718-7") == TokenValue(None, "718-7")
    assert parse_token("http://loinc.org|718-7") == TokenValue("http://loinc.org", "718-7")
    assert parse_token("|718-7") == TokenValue("", "718-7")
    assert parse_token("http://loinc.org|") == TokenValue("http://loinc.org", None)
    assert parse_token(r"urn:x|a\|b") == TokenValue("urn:x", "a|b")
    for bad in ("", "|", "a|b|c"):
        with pytest.raises(BadValue):
            parse_token(bad)


def test_escapes_keep_a_comma_inside_a_value() -> None:
    assert or_values(r"a\,b,c") == [r"a\,b", "c"]
    assert [unescape(part) for part in or_values(r"a\,b,c\\,d")] == ["a,b", "c\\", "d"]
    assert split_escaped(r"sys|co\|de", "|") == ["sys", r"co\|de"]
    assert unescape(r"\$\|\,\\") == "$|,\\"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("123", 123),
        ("Patient/123", 123),
        ("https://elsewhere.example/fhir/Patient/123", 123),
        ("Patient/123/_history/4", 123),
        ("Group/123", None),
        ("abc", None),
        ("Patient/99999999999", None),
        ("0", None),
        ("٣", None),
    ],
)
def test_references(value: str, expected: int | None) -> None:
    assert parse_reference(value) == expected


SECRET = "a-secret-long-enough-for-the-cursor-key-0123456789"


def test_a_cursor_opens_only_for_its_center_and_search() -> None:
    payload = {"q": [["name", "Rivera"]], "p": [0, "2026-03-14T10:00:00+00:00", 17]}
    cursor = seal(payload, secret=SECRET, bound_to="search:1:Patient")

    assert "Rivera" not in cursor and "2026" not in cursor
    assert cursor.replace("-", "").replace("_", "").isalnum()  # URL-safe as it is
    assert open_cursor(cursor, secret=SECRET, bound_to="search:1:Patient") == payload
    for bound, secret in (
        ("search:2:Patient", SECRET),
        ("search:1:Observation", SECRET),
        ("search:1:Patient", SECRET + "x"),
    ):
        with pytest.raises(FhirError) as refused:
            open_cursor(cursor, secret=secret, bound_to=bound)
        assert refused.value.status == 400
    tampered = cursor[:-2] + ("AA" if not cursor.endswith("AA") else "BB")
    for bad in (tampered, "", "%%%", "A" * 10_000, cursor[:20]):
        with pytest.raises(FhirError):
            open_cursor(bad, secret=SECRET, bound_to="search:1:Patient")


def test_two_cursors_of_the_same_page_differ() -> None:
    """A fresh nonce each time: equal pages do not give equal links to compare."""
    first = seal({"p": None}, secret=SECRET, bound_to="b")
    assert first != seal({"p": None}, secret=SECRET, bound_to="b")
