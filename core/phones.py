"""Mobile numbers: parsed and checked with `phonenumbers`, stored in E.164, masked in logs."""

from __future__ import annotations

import functools
import re

import phonenumbers

from core.text import N_


class InvalidPhoneNumber(ValueError):
    """The text is not a valid phone number; the message is safe to show to a person."""


def normalize_phone(text: str, *, region: str = "US", mobile_only: bool = True) -> str:
    """Return `text` as an E.164 number ("+12025550123") or raise InvalidPhoneNumber.

    `mobile_only` refuses numbers known to be landlines (texts cannot reach them)."""
    cleaned = text.strip()
    if not cleaned:
        raise InvalidPhoneNumber(N_("Enter a mobile phone number."))
    number, problem = _normalized(cleaned, region, mobile_only)
    if problem is not None:
        raise InvalidPhoneNumber(problem)
    assert number is not None
    return number


# phonenumbers takes about a millisecond a number, and one record's number is read several
# times (the mapping, the form's checks, the service's): each is worked out once.
@functools.lru_cache(maxsize=4096)
def _normalized(cleaned: str, region: str, mobile_only: bool) -> tuple[str | None, str | None]:
    """(the E.164 number, None) or (None, why it is refused)."""
    try:
        parsed = phonenumbers.parse(cleaned, region)
    except phonenumbers.NumberParseException:
        return None, N_(
            "This is not a phone number. Use a form like (202) 555-0123 or +1 202 555 0123."
        )
    if not phonenumbers.is_valid_number(parsed):
        return None, N_(
            "This phone number does not exist. Check the area code and the number of digits."
        )
    number_type = phonenumbers.number_type(parsed)
    if mobile_only and number_type not in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        return None, N_("This is not a mobile number; text messages need a mobile phone.")
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)), None


# E.164 as providers write it: "+", a country code, at most 15 ASCII digits in all.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def is_e164(text: str) -> bool:
    """True when `text` is a phone number written in E.164 ("+12025550123"), as Twilio
    writes senders and recipients. Only the form is checked, not whether the range exists:
    a real sender's STOP must never be refused because our number metadata is older."""
    return _E164.fullmatch(text) is not None


def mask_phone(e164: str | None) -> str:
    """A number safe for logs: the country code and the last two digits only."""
    if not e164:
        return "-"
    if len(e164) <= 4:
        return "*" * len(e164)
    return e164[:2] + "*" * (len(e164) - 4) + e164[-2:]


def display_phone(e164: str) -> str:
    """The national way of writing a number, for people."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL))
