"""The texts that bring people in (the invitation link, the password-reset code), in English
and Spanish, filled with the longest values they can get, travel as GSM-7 in at most two
segments (README promises it: an accent outside GSM-7 would make a Spanish text UCS-2 and
three or four segments) and carry no diagnosis or therapy."""

from __future__ import annotations

import pytest

from coordination.texting.replies import check_template, sms_segments
from coordination.texting.words import FORBIDDEN_WORDS
from core.identity.passwords import new_token
from core.models import Language
from core.reference import PROGRAM_NAME_MAX
from portal.onboarding import INVITATION_SMS, RESET_SMS, invitation_text, reset_text
from tests.unit.test_reminder_texts import therapy_names

PROGRAM = "District of Columbia Care Access Program"
# A long public address (README: invitation texts stay two segments with one of up to 60
# characters).
BASE_URL = "https://follow-up.care-connect.health.district-program.gov.us"
LONGEST_VALIDITY = 60  # Settings.invitation_valid_days allows 1 to 60


def _invitation(language: Language) -> str:
    url = f"{BASE_URL}/invite/{new_token()}"
    return invitation_text(language, program=PROGRAM, days=LONGEST_VALIDITY, url=url)


def _reset(language: Language) -> str:
    return reset_text(language, program=PROGRAM, code="123456")


TEXTS = [
    pytest.param(make, language, id=f"{name}-{language.value}")
    for name, make in (("invitation", _invitation), ("reset", _reset))
    for language in Language
]


def test_the_worst_case_values_are_the_longest_allowed() -> None:
    assert len(PROGRAM) == PROGRAM_NAME_MAX
    assert len(BASE_URL) > 60


def test_every_language_has_both_texts() -> None:
    assert set(INVITATION_SMS) == set(RESET_SMS) == set(Language)


@pytest.mark.parametrize(("make", "language"), TEXTS)
def test_a_text_fits_two_gsm7_segments(make: object, language: Language) -> None:
    assert callable(make)
    text = make(language)
    info = sms_segments(text)
    assert info.encoding == "GSM-7", text
    assert info.segments <= 2, (info, text)


@pytest.mark.parametrize(("make", "language"), TEXTS)
def test_a_text_names_the_program_and_no_diagnosis_or_therapy(
    make: object, language: Language
) -> None:
    assert callable(make)
    text = make(language)
    assert text.startswith(f"{PROGRAM}: ")
    problems = check_template(
        text.replace(PROGRAM, "{program}"), forbidden=[*FORBIDDEN_WORDS, *therapy_names()]
    )
    # These texts answer what the person asked for (a link, a code): no STOP line.
    assert [problem for problem in problems if not problem.startswith("no opt-out")] == []


def test_the_spanish_texts_stay_readable() -> None:
    assert "contraseña" in _invitation(Language.ES)  # ñ is GSM-7: kept
    assert "dias" in _invitation(Language.ES)  # í is not: written plainly
    assert "codigo" in _reset(Language.ES)
