"""Numbers from requests: ASCII digits within bounds, or nothing (never a 500 later)."""

from __future__ import annotations

import pytest

from core.ids import MAX_ID, parse_id, parse_int


@pytest.mark.parametrize("text", ["1", "42", "0042", str(MAX_ID)])
def test_an_id_in_ascii_digits_within_range_is_read(text: str) -> None:
    assert parse_id(text) == int(text)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "0",
        "-1",
        "+7",
        " 7",
        "7 ",
        "7\n",
        "1_0",
        "²",  # isdigit() says yes, int() says no
        "٣",  # a digit int() reads as 3
        "𝟙",
        "1e3",
        str(MAX_ID + 1),
        "99999999999999999999",
        "\x00",
        "%",
    ],
)
def test_anything_else_is_no_id(text: str | None) -> None:
    assert parse_id(text) is None


def test_small_numbers_keep_their_bounds() -> None:
    assert parse_int("0", low=0, high=24) == 0
    assert parse_int("24", low=0, high=24) == 24
    assert parse_int("25", low=0, high=24) is None
    assert parse_int("²", low=0, high=24) is None
