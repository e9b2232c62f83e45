"""SMS text rules: replies are read the way a patient means them (an opt-out is never
missed), segments are counted the way carriers bill them, and reminder templates never carry
a diagnosis or therapy and always say how to stop."""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from coordination.texting.replies import (
    ReplyIntent,
    SegmentInfo,
    check_template,
    classify_reply,
    sms_segments,
)

STOP_KEYWORDS = ["STOP", "STOPALL", "UNSUBSCRIBE", "END", "QUIT", "CANCEL", "REVOKE", "OPTOUT"]
SPANISH_STOP_KEYWORDS = ["PARAR"]
START_KEYWORDS = ["START", "UNSTOP"]
HELP_KEYWORDS = ["HELP", "INFO", "AYUDA"]
CONFIRM_KEYWORDS = ["C", "1", "YES", "Y", "SI", "SÍ", "CONFIRM", "CONFIRMO"]
RESCHEDULE_KEYWORDS = ["R", "2", "RESCHEDULE", "CAMBIAR", "MOVE"]

# Every keyword with the intent it carries from a subscribed number.
KEYWORDS: list[tuple[str, ReplyIntent]] = [
    *((k, ReplyIntent.STOP) for k in STOP_KEYWORDS + SPANISH_STOP_KEYWORDS),
    *((k, ReplyIntent.START) for k in START_KEYWORDS),
    *((k, ReplyIntent.HELP) for k in HELP_KEYWORDS),
    *((k, ReplyIntent.CONFIRM) for k in CONFIRM_KEYWORDS),
    *((k, ReplyIntent.RESCHEDULE) for k in RESCHEDULE_KEYWORDS),
]


def _variants(keyword: str) -> list[str]:
    return [
        keyword,
        keyword.lower(),
        keyword.capitalize(),
        f"  {keyword.lower()}  ",
        f"{keyword}.",
        f" {keyword.lower()}!! ",
        f"¡{keyword.capitalize()}!",
        f"{keyword} 🙏",
        f'"{keyword.lower()}"',
        f"\t{keyword}?\n",
        f"***{keyword}***",
    ]


@pytest.mark.parametrize(
    ("body", "intent"),
    [(variant, intent) for keyword, intent in KEYWORDS for variant in _variants(keyword)],
)
def test_every_keyword_in_any_case_and_punctuation(body: str, intent: ReplyIntent) -> None:
    assert classify_reply(body, opted_out=False) == intent


@pytest.mark.parametrize("body", [" stop!! ", "Stop.", "STOP 🙏", "ＳＴＯＰ", "opt-out", "Opt Out"])
def test_the_examples_of_the_issue_stop(body: str) -> None:
    assert classify_reply(body, opted_out=False) == ReplyIntent.STOP


@pytest.mark.parametrize("keyword", STOP_KEYWORDS + SPANISH_STOP_KEYWORDS + HELP_KEYWORDS)
def test_stop_and_help_mean_the_same_whether_or_not_opted_out(keyword: str) -> None:
    assert classify_reply(keyword, opted_out=True) == classify_reply(keyword, opted_out=False)


@pytest.mark.parametrize("keyword", START_KEYWORDS)
def test_start_resubscribes_from_an_opted_out_number(keyword: str) -> None:
    assert classify_reply(keyword, opted_out=True) == ReplyIntent.START


@pytest.mark.parametrize("body", ["YES", "yes", " Yes! ", "YES 🙏", "yes please"])
def test_yes_is_start_only_when_opted_out(body: str) -> None:
    assert classify_reply(body, opted_out=True) == ReplyIntent.START
    assert classify_reply(body, opted_out=False) == ReplyIntent.CONFIRM


@pytest.mark.parametrize("body", ["C", "1", "SÍ", "confirmo"])
def test_an_opted_out_number_confirms_nothing(body: str) -> None:
    assert classify_reply(body, opted_out=True) == ReplyIntent.OTHER


@pytest.mark.parametrize(
    "body",
    [
        "please stop texting me",
        "Please stop texting me.",
        "stop please",
        "Please STOP sending these",
        "STOP!!! no more",
        "take me off the list",
        "Stop it!",
        "STOP STOP STOP",
        "I want to unsubscribe",
        "unsubscribe me",
        "don't text me anymore",
        "Dont text me",
        "do not send me any more messages",
        "no more texts",
        "No more messages please!!",
        "no more",
        "I don't want these texts",
        "I no longer want text messages",
        "quit texting me",
        "remove me from your list",
        "leave me alone",
        "stop sending me reminders",
        "These messages, please stop",
        "no me manden más mensajes",
        "No me manden mas mensajes!",
        "ya no quiero mensajes",
        "Ya no quiero recibir mensajes, gracias",
        "parar",
        "Parar por favor",
        "PARAR mensajes",
        "dejen de mandarme mensajes",
        "deja de escribirme",
        "no más mensajes",
        "basta de mensajes",
        "cancelar los mensajes",
    ],
)
def test_a_plain_sentence_asking_to_stop_texting_is_stop(body: str) -> None:
    assert classify_reply(body, opted_out=False) == ReplyIntent.STOP


@pytest.mark.parametrize(
    "body",
    [
        "I can't stop the pain",
        "I cannot stop the pain",
        "don't stop the reminders, they help",
        "I don't want to miss the reminder",
        "I didn't get the text",
        "I'll stop by tomorrow after your text",
        "Cancel my appointment",
        "no more pain since the last visit",
        "I need help with my ride",
        "yes but I can't come on Friday",
        "Para mi mamá",
        "no",
        "",
        "   ",
        "🙏",
        "hello",
    ],
)
def test_other_senses_and_free_text_are_other(body: str) -> None:
    assert classify_reply(body, opted_out=False) == ReplyIntent.OTHER


_AROUND = st.text(alphabet=" \t\n" + string.punctuation + "¡¿…🙏😀", max_size=6)


@st.composite
def _random_case(draw: st.DrawFn, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(ch.upper() if up else ch.lower() for ch, up in zip(word, flips, strict=True))


@st.composite
def _decorated_keyword(draw: st.DrawFn) -> tuple[str, ReplyIntent]:
    keyword, intent = draw(st.sampled_from(KEYWORDS))
    body = draw(_AROUND) + draw(_random_case(keyword)) + draw(_AROUND)
    return body, intent


@given(_decorated_keyword())
@example(("  sToP!! ", ReplyIntent.STOP))
@example(("¿sÍ?", ReplyIntent.CONFIRM))
def test_any_keyword_wrapped_in_spaces_and_punctuation_keeps_its_intent(
    case: tuple[str, ReplyIntent],
) -> None:
    body, intent = case
    assert classify_reply(body, opted_out=False) == intent
    if intent != ReplyIntent.CONFIRM:
        assert classify_reply(body, opted_out=True) == intent


@given(_AROUND, st.sampled_from(["yes", "YES", "Yes", "yEs"]), _AROUND)
def test_a_decorated_yes_depends_on_the_consent_state(before: str, yes: str, after: str) -> None:
    body = before + yes + after
    assert classify_reply(body, opted_out=True) == ReplyIntent.START
    assert classify_reply(body, opted_out=False) == ReplyIntent.CONFIRM


# --- Segments ---------------------------------------------------------------------------


def test_gsm7_fits_160_in_one_segment_and_splits_at_161() -> None:
    assert sms_segments("a" * 160) == SegmentInfo("GSM-7", 160, 1)
    assert sms_segments("a" * 161) == SegmentInfo("GSM-7", 161, 2)
    assert sms_segments("a" * 306) == SegmentInfo("GSM-7", 306, 2)
    assert sms_segments("a" * 307) == SegmentInfo("GSM-7", 307, 3)


def test_ucs2_fits_70_in_one_segment_and_splits_at_71() -> None:
    assert sms_segments("á" * 70) == SegmentInfo("UCS-2", 70, 1)
    assert sms_segments("á" * 71) == SegmentInfo("UCS-2", 71, 2)
    assert sms_segments("á" * 134) == SegmentInfo("UCS-2", 134, 2)
    assert sms_segments("á" * 135) == SegmentInfo("UCS-2", 135, 3)


@pytest.mark.parametrize("char", list("€[]{}~^|\\"))
def test_extension_characters_count_double(char: str) -> None:
    assert sms_segments(char) == SegmentInfo("GSM-7", 2, 1)
    assert sms_segments("a" * 158 + char) == SegmentInfo("GSM-7", 160, 1)
    assert sms_segments("a" * 159 + char) == SegmentInfo("GSM-7", 161, 2)


def test_an_escape_pair_is_never_split_across_segments() -> None:
    # 152 septets then "€": the pair moves whole to the second segment.
    assert sms_segments("a" * 152 + "€" + "a" * 151).segments == 2
    assert sms_segments("a" * 152 + "€" + "a" * 152) == SegmentInfo("GSM-7", 306, 3)


def test_the_gsm_basic_set_stays_gsm7() -> None:
    text = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./09:;<=>?¡AZÄÖÑÜ§¿azäöñüà\n\r"
    assert sms_segments(text).encoding == "GSM-7"
    assert sms_segments(text).characters == len(text)


@pytest.mark.parametrize("char", ["á", "í", "ó", "ú", "ç", "`"])
def test_characters_outside_gsm7_force_ucs2(char: str) -> None:
    assert sms_segments("Hola " + char).encoding == "UCS-2"


def test_an_emoji_forces_ucs2_and_counts_two_units() -> None:
    assert sms_segments("🙏") == SegmentInfo("UCS-2", 2, 1)
    assert sms_segments("a" * 68 + "🙏") == SegmentInfo("UCS-2", 70, 1)
    assert sms_segments("a" * 69 + "🙏") == SegmentInfo("UCS-2", 71, 2)


def test_a_surrogate_pair_is_never_split_across_segments() -> None:
    # 66 units then an emoji: the pair moves whole to the second segment, so 134 units
    # (which would fit 2 x 67) take 3 segments.
    assert sms_segments("a" * 66 + "🙏" + "a" * 65).segments == 2
    assert sms_segments("a" * 66 + "🙏" + "a" * 66) == SegmentInfo("UCS-2", 134, 3)


# --- Templates --------------------------------------------------------------------------

FORBIDDEN = [
    "sickle",
    "drepanocítica",
    "gene therapy",
    "terapia génica",
    "Casgevy",
    "Lyfgenia",
    "hemoglobin",
    "hemoglobina",
    "diagnosis",
    "diagnóstico",
]
GOOD_EN = (
    "{program}: your follow-up visit is on {date}. Reply C to confirm, R to move it, STOP to end."
)
GOOD_ES = (
    "{program}: su visita es el {date}. Responda C para confirmar, R para cambiarla, "
    "PARAR para salir."
)


@pytest.mark.parametrize("template", [GOOD_EN, GOOD_ES])
def test_a_good_template_has_no_problem(template: str) -> None:
    assert check_template(template, forbidden=FORBIDDEN) == []


@pytest.mark.parametrize(
    ("inserted", "word"),
    [
        ("SICKLE cell", "sickle"),
        ("Drepanocitica", "drepanocítica"),
        ("gene   therapy", "gene therapy"),
        ("Terapia Genica", "terapia génica"),
        ("casgevy", "Casgevy"),
        ("LYFGENIA", "Lyfgenia"),
        ("Hemoglobin", "hemoglobin"),
        ("hemoglobina", "hemoglobina"),
        ("diagnosis", "diagnosis"),
        ("DIAGNÓSTICO", "diagnóstico"),
    ],
)
def test_forbidden_words_are_caught_ignoring_case_and_accents(inserted: str, word: str) -> None:
    problems = check_template(f"{inserted}. " + GOOD_EN, forbidden=FORBIDDEN)
    assert len(problems) == 1
    assert repr(word) in problems[0]


def test_forbidden_words_match_whole_words_only() -> None:
    assert check_template("Sicklebury clinic. " + GOOD_EN, forbidden=FORBIDDEN) == []


def test_more_than_two_segments_is_too_long() -> None:
    problems = check_template(GOOD_EN + " x" * 150, forbidden=FORBIDDEN)
    assert len(problems) == 1
    assert "too long" in problems[0]


def test_length_counts_the_filled_program_name() -> None:
    # One accented letter in the name turns the whole message UCS-2 (67 units a segment).
    long_name = "Programa de Seguimiento a Largo Plazo de Maryland, Línea de Atención"
    assert check_template(GOOD_ES, forbidden=[], fill={"program": "CGT"}) == []
    problems = check_template(GOOD_ES, forbidden=[], fill={"program": long_name})
    assert [p for p in problems if "too long" in p]


def test_a_missing_opt_out_instruction_is_caught() -> None:
    problems = check_template("{program}: your visit is on {date}.", forbidden=FORBIDDEN)
    assert len(problems) == 1
    assert "opt-out" in problems[0]


def test_a_missing_program_placeholder_is_caught() -> None:
    problems = check_template(GOOD_EN.replace("{program}", "CGT"), forbidden=FORBIDDEN)
    assert len(problems) == 1
    assert "{program}" in problems[0]


def test_every_problem_is_reported_at_once() -> None:
    problems = check_template("Your Casgevy diagnosis visit" + " x" * 200, forbidden=FORBIDDEN)
    assert len(problems) == 5
