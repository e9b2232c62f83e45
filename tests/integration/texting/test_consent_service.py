"""The consent services behind the consent boxes, called directly: what a box shows, what a
coordinator's tick records, and a person starting or stopping texts to their own number."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.texting.consent import (
    CONSENT_FIELD,
    OPT_IN_WORDING,
    ConsentTick,
    TextingContact,
    agree_to_own_texts,
    check_coordinator_tick,
    consent_box,
    consent_history,
    contact_of,
    may_text,
    opt_in,
    own_texts,
    record_coordinator_tick,
    stop_texts,
    tick_kept,
)
from coordination.texting.models import ConsentAction, ConsentHow, ConsentStatus
from core.clock import FrozenClock
from core.models import Patient, State
from tests.conftest import CAREGIVER_CO, COORDINATOR_MD, PATIENT_MD, user_by_login

DEFAULT_PROGRAM = "CGT Access follow-up"
NEW_PHONE = "+14105550177"


def _maryland(session: Session) -> State:
    state = session.scalar(select(State).where(State.code == "MD"))
    assert state is not None
    return state


def _maya(session: Session) -> Patient:
    patient = user_by_login(session, PATIENT_MD).patient
    assert patient is not None and patient.mobile_phone
    return patient


def _history(session: Session, phone: str) -> list[tuple[ConsentAction, ConsentHow, int | None]]:
    return [(e.action, e.how, e.by_user_id) for e in consent_history(session, phone=phone)]


def _contact(session: Session, login: str) -> TextingContact:
    contact = contact_of(session, user=user_by_login(session, login), default_program="-")
    assert contact is not None and contact.phone
    return contact


# --- the box on a coordinator's form ---------------------------------------------------


def test_the_box_shows_the_states_wording_in_each_language_and_the_typed_number(
    session: Session, clock: FrozenClock
) -> None:
    maryland, maya = _maryland(session), _maya(session)
    opt_in(
        session,
        clock=clock,
        phone=NEW_PHONE,
        how=ConsentHow.PORTAL,
        by_user_id=None,
        wording="I agree.",
    )
    box = consent_box(
        session,
        default_program=DEFAULT_PROGRAM,
        state_id=maryland.id,
        phone_typed="(410) 555-0177",
        phone_on_file=maya.mobile_phone,
        zone="Not/AZone",
    )
    assert box.wordings == {
        code: OPT_IN_WORDING[code].format(program=maryland.program_name) for code in ("en", "es")
    }
    assert box.wording_for("es") == box.wordings["es"]
    assert box.wording_for("fr") == box.wordings["en"], "English unless Spanish"
    # The number as typed, not the one on file; dates in the state's zone (not a zone typed).
    assert box.number is not None and box.number.phone == NEW_PHONE and box.number.agreed
    assert box.zone == maryland.time_zone

    # A typed number that is not one: the box speaks of the number on file.
    kept = consent_box(
        session,
        default_program=DEFAULT_PROGRAM,
        state_id=maryland.id,
        phone_typed="not a number",
        phone_on_file=maya.mobile_phone,
        zone="America/Chicago",
    )
    assert kept.number is not None and kept.number.phone == maya.mobile_phone
    assert kept.number.status is None
    assert kept.zone == "America/Chicago"

    # Before a state is chosen: the default program, no number, dates in UTC.
    blank = consent_box(session, default_program=DEFAULT_PROGRAM, state_id=None)
    assert blank.wordings["en"] == OPT_IN_WORDING["en"].format(program=DEFAULT_PROGRAM)
    assert (blank.number, blank.zone) == (None, "UTC")


def test_a_coordinators_tick_records_the_wording_read_and_a_refused_tick_records_nothing(
    session: Session, clock: FrozenClock
) -> None:
    box = consent_box(session, default_program=DEFAULT_PROGRAM, state_id=_maryland(session).id)
    coordinator_id = user_by_login(session, COORDINATOR_MD).id
    spanish = ConsentTick(agreed=True, shown=box.wordings["es"])

    # Read in English but recorded for a Spanish speaker: refused, and ticked again after.
    wrong = ConsentTick(agreed=True, shown=box.wordings["en"])
    errors = check_coordinator_tick(
        box, tick=wrong, preferred_language="es", phone_typed="(410) 555-0177"
    )
    assert list(errors) == [CONSENT_FIELD]
    assert not tick_kept(wrong, errors=errors)
    no_number = check_coordinator_tick(box, tick=spanish, preferred_language="es", phone_typed=" ")
    assert list(no_number) == [CONSENT_FIELD]
    # Another field's problem keeps a good tick; an unticked box has nothing to check.
    assert tick_kept(spanish, errors={"birth_date": "Enter a date."})
    unticked = ConsentTick()
    assert check_coordinator_tick(box, tick=unticked, preferred_language="es", phone_typed="") == {}
    assert not tick_kept(unticked, errors={})

    assert (
        record_coordinator_tick(
            session,
            clock=clock,
            box=box,
            tick=unticked,
            preferred_language="es",
            phone=NEW_PHONE,
            by_user_id=coordinator_id,
        )
        is None
    )
    assert _history(session, NEW_PHONE) == []

    assert not check_coordinator_tick(
        box, tick=spanish, preferred_language="es", phone_typed="(410) 555-0177"
    )
    event = record_coordinator_tick(
        session,
        clock=clock,
        box=box,
        tick=spanish,
        preferred_language="es",
        phone=NEW_PHONE,
        by_user_id=coordinator_id,
    )
    assert event is not None and event.wording == box.wordings["es"]
    assert _history(session, NEW_PHONE) == [
        (ConsentAction.OPT_IN, ConsentHow.COORDINATOR, coordinator_id)
    ]
    # Ticked again on a later edit: the number keeps its first agreement.
    clock.advance(timedelta(days=1))
    again = record_coordinator_tick(
        session,
        clock=clock,
        box=box,
        tick=spanish,
        preferred_language="es",
        phone=NEW_PHONE,
        by_user_id=coordinator_id,
    )
    assert again is None
    assert len(_history(session, NEW_PHONE)) == 1


# --- a person's own number ---------------------------------------------------------------


def test_own_texts_are_read_in_the_pages_language_and_staff_have_none(session: Session) -> None:
    maya = _maya(session)
    texts = own_texts(
        session,
        user=user_by_login(session, PATIENT_MD),
        language="es",
        default_program=DEFAULT_PROGRAM,
    )
    assert texts is not None
    assert (texts.phone, texts.language, texts.zone) == (maya.mobile_phone, "es", maya.time_zone)
    assert texts.wording == OPT_IN_WORDING["es"].format(program=_maryland(session).program_name)
    assert texts.number is not None and texts.number.status is None
    staff = user_by_login(session, COORDINATOR_MD)
    assert own_texts(session, user=staff, language="en", default_program=DEFAULT_PROGRAM) is None


def test_agreeing_to_own_texts_needs_the_tick_and_the_wording_shown(
    session: Session, clock: FrozenClock
) -> None:
    rosa_id = user_by_login(session, CAREGIVER_CO).id
    contact = _contact(session, CAREGIVER_CO)
    phone = contact.phone
    assert phone
    wording = OPT_IN_WORDING["es"].format(program=contact.program)

    def agree(tick: ConsentTick) -> dict[str, str] | None:
        return agree_to_own_texts(
            session, clock=clock, contact=contact, tick=tick, language="es", by_user_id=rosa_id
        )

    assert agree(ConsentTick(agreed=False, shown=wording)) == {
        CONSENT_FIELD: "Tick the box to agree to text messages."
    }
    stale = OPT_IN_WORDING["es"].format(program="Another program")
    refused = agree(ConsentTick(agreed=True, shown=stale))
    assert refused is not None and "The wording changed" in refused[CONSENT_FIELD]
    assert _history(session, phone) == []
    assert not may_text(session, phone=phone)

    assert agree(ConsentTick(agreed=True, shown=wording)) is None
    assert may_text(session, phone=phone)
    [event] = consent_history(session, phone=phone)
    assert (event.how, event.by_user_id, event.wording) == (ConsentHow.PORTAL, rosa_id, wording)

    # Without a number there is nothing to agree for.
    no_number = TextingContact(phone=None, language="es", program=contact.program, time_zone="UTC")
    missing = agree_to_own_texts(
        session,
        clock=clock,
        contact=no_number,
        tick=ConsentTick(agreed=True, shown=wording),
        language="es",
        by_user_id=rosa_id,
    )
    assert missing == {CONSENT_FIELD: "Enter the mobile number the texts should go to."}


def test_a_stopped_number_stays_stopped_once_and_the_person_may_start_again(
    session: Session, clock: FrozenClock
) -> None:
    maya_id = user_by_login(session, PATIENT_MD).id
    contact = _contact(session, PATIENT_MD)
    phone = contact.phone
    assert phone
    wording = OPT_IN_WORDING["en"].format(program=contact.program)
    agreed = agree_to_own_texts(
        session,
        clock=clock,
        contact=contact,
        tick=ConsentTick(agreed=True, shown=wording),
        language="en",
        by_user_id=maya_id,
    )
    assert agreed is None

    clock.advance(timedelta(hours=1))
    first = stop_texts(session, clock=clock, phone=phone, how=ConsentHow.PORTAL, by_user_id=maya_id)
    assert first is not None and not may_text(session, phone=phone)
    clock.advance(timedelta(hours=1))
    twice = stop_texts(session, clock=clock, phone=phone, how=ConsentHow.PORTAL, by_user_id=maya_id)
    assert twice is None, "asking twice keeps the first stop"
    assert _history(session, phone) == [
        (ConsentAction.OPT_IN, ConsentHow.PORTAL, maya_id),
        (ConsentAction.OPT_OUT, ConsentHow.PORTAL, maya_id),
    ]
    assert consent_history(session, phone=phone)[-1].at == first.at

    # Their own explicit tick starts texts again after a stop.
    again = agree_to_own_texts(
        session,
        clock=clock,
        contact=contact,
        tick=ConsentTick(agreed=True, shown=wording),
        language="en",
        by_user_id=maya_id,
    )
    assert again is None and may_text(session, phone=phone)


def test_stopping_a_number_that_never_agreed_records_the_stop(
    session: Session, clock: FrozenClock
) -> None:
    event = stop_texts(session, clock=clock, phone=NEW_PHONE, how=ConsentHow.SMS_KEYWORD)
    assert event is not None and event.by_user_id is None
    consent = consent_box(
        session, default_program=DEFAULT_PROGRAM, state_id=None, phone_on_file=NEW_PHONE
    ).number
    assert consent is not None and consent.status is ConsentStatus.OPTED_OUT
