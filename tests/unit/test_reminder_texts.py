"""The words of every text: each reminder, change notice and one-off template, in English
and Spanish, filled with the longest values it can get (a 40-character program name, the
longest day and time), fits in two GSM-7 segments, names the program and its phone, says
how to stop (and, for appointments, how to reply: C to confirm and R to change, or only R
once the appointment is confirmed) and carries no diagnosis, therapy or lab value."""

from __future__ import annotations

import re
import string
from datetime import date, datetime, time, timedelta

import pytest

from coordination.followup.protocol import ReminderKind, shipped_protocols
from coordination.texting.replies import check_template, sms_segments
from coordination.texting.words import (
    CONFIRMED_REMINDERS,
    FORBIDDEN_WORDS,
    MOVED_NOTICES,
    ONE_OFF,
    REMINDERS,
    Template,
    fit_for_sms,
    format_day,
    format_time,
    render,
)
from core.phones import display_phone
from core.reference import PROGRAM_NAME_MAX

LANGUAGES = ("en", "es")
# As long as a state may make it (see core.reference).
PROGRAM = "District of Columbia Care Access Program"
PROGRAM_PHONE = "+14105550100"
PHONE = display_phone(PROGRAM_PHONE)
DAYS = [date(2027, 1, 1) + timedelta(days=n) for n in range(365)]
MINUTES = [time(hour, minute) for hour in range(24) for minute in range(60)]


def _longest(values: list[str]) -> str:
    return max(values, key=lambda value: sms_segments(fit_for_sms(value)).characters)


def worst_values(language: str) -> dict[str, str]:
    """The longest value of every placeholder a template may hold."""
    day = _longest([format_day(d, language) for d in DAYS])
    clock = _longest([format_time(datetime.combine(DAYS[0], t), language) for t in MINUTES])
    return {
        "program": PROGRAM,
        "phone": PHONE,
        "start": day,
        "end": day,
        "date": day,
        "time": clock,
    }


def therapy_names() -> list[str]:
    """Brand and generic names of every therapy in the shipped reference data (each
    protocol's title reads "Brand (generic name) ...")."""
    names: set[str] = set()
    protocols = [p for versions in shipped_protocols().versions.values() for p in versions.values()]
    for protocol in protocols:
        match = re.match(r"^(\w+) \(([^)]+)\)", protocol.title.en)
        assert match, f"cannot read the therapy names in {protocol.title.en!r}"
        names.update(match.groups())
    # The short names the public sources use, and the manufacturers' shorthand.
    names.update({"exa-cel", "lovo-cel"})
    return sorted(names)


# What an appointment's text asks: to confirm or change it, only to change it (it is
# confirmed already), or nothing (not about an appointment).
ASKS_C_OR_R, ASKS_R, ASKS_NOTHING = "C or R", "R only", ""


def _who(caregiver: bool) -> str:
    return "caregiver" if caregiver else "patient"


# (name, template, what it asks)
TEMPLATES: list[tuple[str, Template, str]] = [
    *(
        (
            f"{kind.value}-{_who(care)}",
            t,
            ASKS_C_OR_R if kind is ReminderKind.APPOINTMENT else ASKS_NOTHING,
        )
        for (kind, care), t in REMINDERS.items()
    ),
    *(
        (f"appointment-confirmed-{_who(care)}", t, ASKS_R)
        for care, t in CONFIRMED_REMINDERS.items()
    ),
    *(
        (
            f"moved-{'confirmed-' if confirmed else ''}{_who(care)}",
            t,
            ASKS_R if confirmed else ASKS_C_OR_R,
        )
        for (care, confirmed), t in MOVED_NOTICES.items()
    ),
    *((f"one_off-{key}", t, ASKS_NOTHING) for key, t in ONE_OFF.items()),
]
CASES = [
    pytest.param(template, language, asks, id=f"{name}-{language}")
    for name, template, asks in TEMPLATES
    for language in LANGUAGES
]


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _filled(template: Template, language: str) -> str:
    values = worst_values(language)
    return render(
        template,
        language,
        **{name: values[name] for name in _placeholders(template.text(language))},
    )


def test_the_worst_case_values_are_the_longest_allowed() -> None:
    assert len(PROGRAM) == PROGRAM_NAME_MAX
    assert PHONE == "(410) 555-0100"
    assert worst_values("en")["date"] == "Sun Jan 10"  # every English day and month: 3 letters
    assert len(worst_values("en")["time"]) == len("12:30 PM")
    assert len(worst_values("es")["date"]) == len("dom 10 ene")
    assert len(worst_values("es")["time"]) == len("23:30")


def test_every_kind_has_a_patient_and_a_caregiver_text() -> None:
    assert set(REMINDERS) == {(kind, care) for kind in ReminderKind for care in (False, True)}
    assert all(key == template.key for key, template in ONE_OFF.items())


@pytest.mark.parametrize(("template", "language", "asks"), CASES)
def test_a_filled_text_fits_two_gsm7_segments(template: Template, language: str, asks: str) -> None:
    text = _filled(template, language)
    info = sms_segments(text)
    assert info.encoding == "GSM-7", text
    assert info.segments <= 2, (info, text)


@pytest.mark.parametrize(("template", "language", "asks"), CASES)
def test_a_template_passes_the_check_with_every_forbidden_word_and_therapy_name(
    template: Template, language: str, asks: str
) -> None:
    forbidden = [*FORBIDDEN_WORDS, *therapy_names()]
    problems = check_template(
        fit_for_sms(template.text(language)), forbidden=forbidden, fill=worst_values(language)
    )
    assert problems == []


@pytest.mark.parametrize(("template", "language", "asks"), CASES)
def test_a_text_names_the_program_and_its_phone_and_says_how_to_stop(
    template: Template, language: str, asks: str
) -> None:
    text = _filled(template, language)
    assert text.startswith(f"{PROGRAM}: ")
    assert PHONE in text
    stop = "STOP" if language == "en" else "PARAR"
    assert re.search(rf"\b{stop}\b", text), text


@pytest.mark.parametrize(("template", "language", "asks"), CASES)
def test_an_appointment_text_says_how_to_confirm_or_move_it(
    template: Template, language: str, asks: str
) -> None:
    text = _filled(template, language)
    asks_to_confirm = re.search(r"\bC\b.*\bR\b", text) is not None
    asks_to_change = re.search(r"\bR\b", text) is not None
    assert asks_to_confirm is (asks == ASKS_C_OR_R), text
    assert asks_to_change is (asks != ASKS_NOTHING), text


@pytest.mark.parametrize("caregiver", [False, True])
def test_a_confirmed_appointment_is_never_asked_to_be_confirmed_again(caregiver: bool) -> None:
    for template in (CONFIRMED_REMINDERS[caregiver], MOVED_NOTICES[caregiver, True]):
        english, spanish = _filled(template, "en"), _filled(template, "es")
        assert "is confirmed" in english and "confirm or" not in english
        assert "confirmada" in spanish and "C para confirmar" not in spanish
    assert "See you then!" in _filled(CONFIRMED_REMINDERS[caregiver], "en")


@pytest.mark.parametrize(("template", "language", "asks"), CASES)
def test_a_template_holds_only_the_values_it_needs_in_both_languages(
    template: Template, language: str, asks: str
) -> None:
    names = _placeholders(template.text(language))
    assert names == _placeholders(template.text("en"))  # the same values in both languages
    assert {"program", "phone"} <= names
    assert names <= {"program", "phone", "start", "end", "date", "time"}


def test_every_kind_of_moved_notice_and_confirmed_reminder_has_its_words() -> None:
    assert set(CONFIRMED_REMINDERS) == {False, True}
    assert set(MOVED_NOTICES) == {(care, done) for care in (False, True) for done in (False, True)}


def test_the_spanish_texts_are_spanish() -> None:
    for _name, template, _asks in TEMPLATES:
        assert template.es != template.en
        assert "PARAR" in template.es and "STOP" not in template.es


@pytest.mark.parametrize(
    "bad",
    [
        "{program}: your sickle cell follow-up visit is on {date}. Reply STOP to opt out.",
        "{program}: su visita de drepanocitosis es el {date}. Responda PARAR para salir.",
        "{program}: your Hb was 9.2 g/dL at your last visit. Reply STOP to opt out.",
        "{program}: your HbF is 32%. Call {phone}. Reply STOP to opt out.",
        "{program}: su hemoglobina fue 10.1. Responda PARAR para salir.",
        "{program}: your lab results are ready. Reply STOP to opt out.",
        "{program}: your gene therapy check-up is on {date}. Reply STOP to opt out.",
        "{program}: your Casgevy follow-up is on {date}. Reply STOP to opt out.",
    ],
)
def test_the_check_catches_a_diagnosis_a_therapy_or_a_lab_value(bad: str) -> None:
    problems = check_template(bad, forbidden=FORBIDDEN_WORDS)
    assert problems and all("forbidden" in problem for problem in problems), problems


@pytest.mark.parametrize("name", therapy_names())
def test_every_therapy_of_the_reference_data_is_a_forbidden_word(name: str) -> None:
    text = f"{{program}}: about your {name} follow-up. Reply STOP to opt out."
    assert check_template(text, forbidden=FORBIDDEN_WORDS), name


def test_the_check_catches_a_text_that_grows_past_two_segments() -> None:
    long = REMINDERS[ReminderKind.APPOINTMENT, True].en + " Bring your ID card and insurance." * 4
    problems = check_template(long, forbidden=FORBIDDEN_WORDS, fill=worst_values("en"))
    assert [problem for problem in problems if "too long" in problem]


def test_fit_for_sms_keeps_spanish_readable_in_gsm7() -> None:
    folded = fit_for_sms("¿Llámenos mañana? Próxima visita, sábado, después; Ú Í Á")
    assert folded == "¿Llamenos mañana? Proxima visita, sabado, después; U I A"
    assert sms_segments(folded).encoding == "GSM-7"


@pytest.mark.parametrize(
    ("day", "language", "text"),
    [
        (date(2026, 12, 1), "en", "Tue Dec 1"),
        (date(2026, 12, 1), "es", "mar 1 dic"),
        (date(2027, 3, 14), "en", "Sun Mar 14"),
        (date(2027, 3, 13), "es", "sáb 13 mar"),
        (date(2027, 11, 3), "es", "mié 3 nov"),
    ],
)
def test_days_are_written_as_people_write_them(day: date, language: str, text: str) -> None:
    assert format_day(day, language) == text


@pytest.mark.parametrize(
    ("at", "language", "text"),
    [
        (time(0, 5), "en", "12:05 AM"),
        (time(9, 30), "en", "9:30 AM"),
        (time(12, 0), "en", "12:00 PM"),
        (time(15, 30), "en", "3:30 PM"),
        (time(9, 30), "es", "9:30"),
        (time(15, 30), "es", "15:30"),
    ],
)
def test_times_are_written_as_people_write_them(at: time, language: str, text: str) -> None:
    assert format_time(datetime.combine(date(2027, 1, 4), at), language) == text
