"""Automatic answers to texts speak the language of the number's owner: Spanish for a
Spanish-speaking patient (or caregiver), English otherwise; a Spanish keyword from an unknown
number is answered in Spanish. Every answer fits in two SMS segments and names nobody."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from coordination.followup.models import MoveRequest, Visit, VisitStatus
from coordination.texting.consent import consent_history
from coordination.texting.gateway import ConsoleGateway
from coordination.texting.inbound import (
    CONFIRMED_REPLY,
    HELP_REPLY,
    HELP_REPLY_NO_PHONE,
    MOVE_REPLY,
    PERSON_WILL_CALL,
    PERSON_WILL_READ,
    REPLIES,
    START_REPLY,
    Reply,
)
from coordination.texting.models import ConsentAction
from coordination.texting.replies import normalize_for_matching, sms_segments
from coordination.texting.words import FORBIDDEN_WORDS, format_day
from core.clock import FrozenClock
from core.db import transaction
from core.models import Caregiver, Language
from core.phones import display_phone
from core.reference import PROGRAM_NAME_MAX
from portal.app import create_app
from tests.conftest import CAREGIVER_CO, Database, make_settings, user_by_login
from tests.integration.texting.test_sms_webhooks import (
    AUTH_TOKEN,
    _book_next,
    inbound,
    maya,
    subscribed_phone,
)


@pytest.fixture
def client(db: Database, clock: FrozenClock) -> Iterator[TestClient]:
    """The app with the Twilio backend configured, so that webhooks are checked and signed."""
    settings = make_settings(
        db.url,
        sms_backend="twilio",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token=AUTH_TOKEN,
        twilio_from_number="+12025550100",
    )
    app = create_app(
        settings, clock=clock, factory=db.factory, gateway=ConsoleGateway(), run_scheduler=False
    )
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as test_client:
        yield test_client


def answer_of(twiml: str) -> str:
    """The text of a TwiML answer ("" when it answers nothing)."""
    if "<Message>" not in twiml:
        return ""
    return html.unescape(twiml.split("<Message>", 1)[1].split("</Message>", 1)[0])


def spanish_maya(db: Database, clock: FrozenClock) -> str:
    """Maya, subscribed, with Spanish as her preferred language; returns her number."""
    phone = subscribed_phone(db, clock)
    with transaction(db.factory) as session:
        maya(session).preferred_language = Language.ES
    return phone


def program_and_phone(db: Database) -> tuple[str, str]:
    with db.factory() as session:
        state = maya(session).state
        return state.program_name, display_phone(state.program_phone)


# --- each answer, in Spanish, through the webhook ---------------------------------------


@pytest.mark.parametrize("body", ["AYUDA", "help"])
def test_help_is_answered_in_the_owners_spanish(
    client: TestClient, db: Database, clock: FrozenClock, body: str
) -> None:
    phone = spanish_maya(db, clock)
    program, program_phone = program_and_phone(db)
    answer = answer_of(inbound(client, phone, body))
    assert answer == HELP_REPLY.text("es", program=program, phone=program_phone)
    assert f"para ayuda llame al {program_phone}" in answer
    assert "Pueden aplicarse tarifas de mensajes y datos" in answer
    assert "Responda PARAR" in answer
    with db.factory() as session:
        assert consent_history(session, phone=phone)[-1].action is ConsentAction.HELP


def test_start_is_answered_and_recorded_in_spanish(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = spanish_maya(db, clock)
    program, _ = program_and_phone(db)
    assert answer_of(inbound(client, phone, "PARAR")) == ""  # the opt-out itself is silent
    answer = answer_of(inbound(client, phone, "START"))
    assert answer == START_REPLY.text("es", program=program)
    assert "volvera a recibir recordatorios" in answer
    with db.factory() as session:
        last = consent_history(session, phone=phone)[-1]
        assert last.action is ConsentAction.OPT_IN
        assert last.wording == answer  # what they were told is what is on record


def test_c_confirms_with_the_date_written_in_spanish(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = spanish_maya(db, clock)
    _book_next(db, clock)  # the day after tomorrow, 9:30 in Baltimore
    day = format_day(clock.now().date() + timedelta(days=2), "es")
    answer = answer_of(inbound(client, phone, "C"))
    assert answer == f"Gracias. Su cita del {day} a las 9:30 esta confirmada."
    assert day == "dom 29 nov"
    with db.factory() as session:
        confirmed = session.scalars(
            select(Visit).where(Visit.status == VisitStatus.CONFIRMED)
        ).all()
        assert len(confirmed) == 1


def test_c_with_nothing_booked_promises_a_call_in_spanish(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = spanish_maya(db, clock)
    assert answer_of(inbound(client, phone, "1")) == PERSON_WILL_CALL.text("es")
    assert "le llamara" in PERSON_WILL_CALL.text("es")


def test_r_asks_for_a_new_date_in_spanish(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = spanish_maya(db, clock)
    _book_next(db, clock)
    answer = answer_of(inbound(client, phone, "R"))
    assert answer == "Gracias. El equipo de atencion le llamara para buscar otra fecha."
    assert answer == MOVE_REPLY.text("es")
    with db.factory() as session:
        assert len(session.scalars(select(MoveRequest)).all()) == 1


def test_anything_else_is_answered_in_spanish(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = spanish_maya(db, clock)
    answer = answer_of(inbound(client, phone, "¿Puedo ir con mi mamá?"))
    assert answer == "Gracias. Una persona del equipo de atencion leera su mensaje."
    assert answer == PERSON_WILL_READ.text("es")


# --- who decides the language ------------------------------------------------------------


def test_an_english_speaker_is_answered_in_english_even_in_spanish(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = subscribed_phone(db, clock)  # Maya, English
    program, program_phone = program_and_phone(db)
    _book_next(db, clock)
    assert answer_of(inbound(client, phone, "AYUDA")) == HELP_REPLY.text(
        "en", program=program, phone=program_phone
    )
    assert answer_of(inbound(client, phone, "si")) == (
        "Thank you. Your appointment on Sun Nov 29 at 9:30 AM is confirmed."
    )
    assert answer_of(inbound(client, phone, "hola")) == PERSON_WILL_READ.text("en")


def test_the_patients_language_comes_before_a_caregiver_sharing_the_number(
    client: TestClient, db: Database, clock: FrozenClock
) -> None:
    phone = subscribed_phone(db, clock)  # Maya, English
    with transaction(db.factory) as session:
        rosa = session.get(Caregiver, user_by_login(session, CAREGIVER_CO).caregiver_id)
        assert rosa is not None and rosa.preferred_language is Language.ES
        rosa_phone = rosa.mobile_phone
        assert rosa_phone
    # Rosa's own number: she speaks Spanish.
    assert "para ayuda llame al" in answer_of(inbound(client, rosa_phone, "HELP"))
    with transaction(db.factory) as session:
        rosa = session.get(Caregiver, user_by_login(session, CAREGIVER_CO).caregiver_id)
        assert rosa is not None
        rosa.mobile_phone = phone  # now she shares Maya's phone
    assert "for help call" in answer_of(inbound(client, phone, "HELP"))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("AYUDA", HELP_REPLY_NO_PHONE.text("es", program="CGT Access follow-up")),
        ("ayuda por favor", HELP_REPLY_NO_PHONE.text("es", program="CGT Access follow-up")),
        ("HELP", HELP_REPLY_NO_PHONE.text("en", program="CGT Access follow-up")),
        ("Hola, tengo una pregunta", PERSON_WILL_READ.text("es")),
        ("Hi, a question", PERSON_WILL_READ.text("en")),
    ],
)
def test_an_unknown_number_is_answered_in_the_language_of_its_words(
    client: TestClient, body: str, expected: str
) -> None:
    assert answer_of(inbound(client, "+12025550199", body)) == expected


# --- the answers themselves --------------------------------------------------------------

LONGEST_PROGRAM = "P" * PROGRAM_NAME_MAX
LONGEST_WHEN = {"en": "Wed Sep 30 at 12:30 PM", "es": "mié 30 sep a las 12:30"}
PRIVATE = ["Maya", "Johnson", "Casgevy", "Lyfgenia", "Harborview"]


@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("reply", REPLIES, ids=lambda reply: reply.en[:24])
def test_every_answer_fits_two_segments_and_names_nothing_private(
    reply: Reply, language: str
) -> None:
    text = reply.text(
        language, program=LONGEST_PROGRAM, phone="(410) 555-0100", when=LONGEST_WHEN[language]
    )
    info = sms_segments(text)
    assert info.encoding == "GSM-7", text  # accents GSM-7 lacks are folded
    assert info.segments <= 2, (info, text)
    folded = normalize_for_matching(text)
    for word in [*FORBIDDEN_WORDS, *PRIVATE]:
        whole_word = rf"(?<!\w){re.escape(normalize_for_matching(word))}(?!\w)"
        assert not re.search(whole_word, folded), word
    assert "{" not in text and "}" not in text


def test_every_answer_exists_in_both_languages() -> None:
    assert len(REPLIES) == 7
    assert CONFIRMED_REPLY in REPLIES
    for reply in REPLIES:
        assert reply.en.strip() and reply.es.strip()
        assert reply.en != reply.es
        # The same blanks are filled in either language.
        assert sorted(part.split("}")[0] for part in reply.en.split("{")[1:]) == sorted(
            part.split("}")[0] for part in reply.es.split("{")[1:]
        )
