"""Mobile numbers: stored in E.164, refused with a message a person understands, and masked
so that logs never carry more than the last two digits."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.phones import InvalidPhoneNumber, display_phone, mask_phone, normalize_phone


@pytest.mark.parametrize(
    "typed",
    [
        "(202) 555-0123",
        "202-555-0123",
        "202.555.0123",
        "2025550123",
        "  202 555 0123  ",
        "+1 202 555 0123",
        "+12025550123",
        "1 (202) 555-0123",
    ],
)
def test_us_numbers_in_any_common_form_become_e164(typed: str) -> None:
    assert normalize_phone(typed) == "+12025550123"


def test_a_foreign_mobile_keeps_its_country_code() -> None:
    assert normalize_phone("+44 7911 123456") == "+447911123456"


def test_another_default_region_reads_national_numbers_there() -> None:
    assert normalize_phone("07911 123456", region="GB") == "+447911123456"


@pytest.mark.parametrize("typed", ["", "   "])
def test_an_empty_number_asks_for_one(typed: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match="Enter a mobile phone number"):
        normalize_phone(typed)


@pytest.mark.parametrize("typed", ["hello", "call me", "+"])
def test_text_that_is_no_number_shows_the_expected_form(typed: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        normalize_phone(typed)
    assert "This is not a phone number" in str(caught.value)
    assert "(202) 555-0123" in str(caught.value)


@pytest.mark.parametrize("typed", ["202-555-01", "12", "+1 202 555 01234", "(000) 555-0123"])
def test_numbers_that_cannot_exist_say_to_check_the_digits(typed: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        normalize_phone(typed)
    assert "does not exist" in str(caught.value)
    assert "area code" in str(caught.value)


@pytest.mark.parametrize(
    "typed",
    [
        "+44 20 7946 0018",  # a London landline
        "+1 800 555 0199",  # toll-free
    ],
)
def test_numbers_that_cannot_get_texts_are_refused(typed: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        normalize_phone(typed)
    assert str(caught.value) == "This is not a mobile number; text messages need a mobile phone."


def test_a_landline_is_accepted_when_mobiles_are_not_required() -> None:
    assert normalize_phone("+44 20 7946 0018", mobile_only=False) == "+442079460018"


def test_the_refusal_is_a_value_error_for_form_handling() -> None:
    assert issubclass(InvalidPhoneNumber, ValueError)


def test_display_uses_the_national_format() -> None:
    assert display_phone("+12025550123") == "(202) 555-0123"
    assert display_phone("not a number") == "not a number"


def test_masking_a_us_number() -> None:
    assert mask_phone("+12025550123") == "+1********23"


@pytest.mark.parametrize("missing", [None, ""])
def test_masking_nothing_gives_a_dash(missing: str | None) -> None:
    assert mask_phone(missing) == "-"


e164_numbers = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)


@given(e164_numbers)
@example("+12025550123")
@example("+2901234")
@example("+999999999999999")
def test_a_masked_number_shows_the_country_digit_and_the_last_two_only(e164: str) -> None:
    masked = mask_phone(e164)
    assert len(masked) == len(e164)
    assert masked[:2] == e164[:2]
    assert masked[-2:] == e164[-2:]
    assert set(masked[2:-2]) == {"*"}
    # Beyond the first digit of the country code, at most two digits are visible.
    assert sum(ch.isdigit() for ch in masked[2:]) <= 2


@given(st.text(alphabet="+0123456789", max_size=4))
def test_very_short_values_are_hidden_entirely(value: str) -> None:
    masked = mask_phone(value)
    assert not any(ch.isdigit() for ch in masked)


@given(st.from_regex(r"[2-9][0-9]{2}[2-9][0-9]{6}", fullmatch=True))
def test_every_valid_normalized_number_masks_to_at_most_the_last_two_digits(
    national: str,
) -> None:
    try:
        e164 = normalize_phone(national)
    except InvalidPhoneNumber:
        return
    masked = mask_phone(e164)
    assert e164[2:-2] not in masked
    assert sum(ch.isdigit() for ch in masked[2:]) <= 2
