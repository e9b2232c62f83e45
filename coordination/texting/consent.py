"""SMS consent, per phone number: who may be texted, and the history of every change.

Consent belongs to the number, not to a person: a patient and a parent sharing one phone
opt in and out together. A number without any record may not be texted."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.texting.consent_scope import (
    SHARED_NUMBER_REFUSAL,
    numbers_used_outside,
    visible_recorders,
)
from coordination.texting.models import (
    ConsentAction,
    ConsentHow,
    ConsentStatus,
    SmsConsent,
    SmsConsentEvent,
)
from core.clock import Clock
from core.identity.models import User
from core.models import Caregiver, CaregiverLink, Language, Patient, State
from core.phones import InvalidPhoneNumber, normalize_phone
from core.text import N_


def consent_of(session: Session, *, phone: str) -> SmsConsent | None:
    """The number's consent record (status and provider flag), or None when it has none."""
    return session.scalar(select(SmsConsent).where(SmsConsent.phone == phone))


def consents_of(session: Session, *, phones: Collection[str]) -> dict[str, SmsConsent]:
    """`consent_of` for many numbers in one query: the numbers that have a record."""
    if not phones:
        return {}
    return {
        consent.phone: consent
        for consent in session.scalars(select(SmsConsent).where(SmsConsent.phone.in_(phones)))
    }


def _set_status(session: Session, *, clock: Clock, phone: str, status: ConsentStatus) -> SmsConsent:
    consent = consent_of(session, phone=phone)
    if consent is None:
        consent = SmsConsent(phone=phone, status=status, updated_at=clock.now())
        session.add(consent)
    elif consent.status is not status:
        consent.status = status
        consent.updated_at = clock.now()
    return consent


def opt_in(
    session: Session,
    *,
    clock: Clock,
    phone: str,
    how: ConsentHow,
    by_user_id: int | None,
    wording: str,
    inbound_sid: str | None = None,
) -> SmsConsentEvent:
    """Record that texts to `phone` are wanted: how, by whom, and the wording shown."""
    if not wording.strip():
        raise ValueError("an opt-in records the wording the person agreed to")
    _set_status(session, clock=clock, phone=phone, status=ConsentStatus.OPTED_IN)
    event = SmsConsentEvent(
        phone=phone,
        at=clock.now(),
        action=ConsentAction.OPT_IN,
        how=how,
        by_user_id=by_user_id,
        wording=wording,
        inbound_message_sid=inbound_sid,
    )
    session.add(event)
    session.flush()
    return event


def opt_out(
    session: Session,
    *,
    clock: Clock,
    phone: str,
    how: ConsentHow,
    inbound_sid: str | None = None,
    by_user_id: int | None = None,
) -> SmsConsentEvent:
    """Stop every text to `phone`, for everyone who shares the number, at once."""
    _set_status(session, clock=clock, phone=phone, status=ConsentStatus.OPTED_OUT)
    event = SmsConsentEvent(
        phone=phone,
        at=clock.now(),
        action=ConsentAction.OPT_OUT,
        how=how,
        by_user_id=by_user_id,
        inbound_message_sid=inbound_sid,
    )
    session.add(event)
    session.flush()
    return event


def record_help(
    session: Session, *, clock: Clock, phone: str, inbound_sid: str | None
) -> SmsConsentEvent:
    """Keep in the history that the number asked for HELP (consent does not change)."""
    event = SmsConsentEvent(
        phone=phone,
        at=clock.now(),
        action=ConsentAction.HELP,
        how=ConsentHow.SMS_KEYWORD,
        inbound_message_sid=inbound_sid,
    )
    session.add(event)
    session.flush()
    return event


def consent_status(session: Session, *, phone: str) -> ConsentStatus | None:
    """The number's consent, or None when it never opted in or out."""
    return session.scalar(select(SmsConsent.status).where(SmsConsent.phone == phone))


def may_text(session: Session, *, phone: str) -> bool:
    """True only when the number opted in (and did not opt out since)."""
    return consent_status(session, phone=phone) is ConsentStatus.OPTED_IN


def consent_history(session: Session, *, phone: str) -> list[SmsConsentEvent]:
    """Every consent event of the number, oldest first."""
    return list(
        session.scalars(
            select(SmsConsentEvent)
            .where(SmsConsentEvent.phone == phone)
            .order_by(SmsConsentEvent.at, SmsConsentEvent.id)
        )
    )


def flag_number(session: Session, *, clock: Clock, phone: str, code: str) -> None:
    """Mark a number the provider refused for good (invalid, not a mobile): nothing more is
    sent to it until a coordinator clears the flag. A number with no consent record has
    nothing to flag (nothing is planned for it anyway)."""
    consent = consent_of(session, phone=phone)
    if consent is not None:
        consent.problem_code = code
        consent.problem_at = clock.now()
        session.flush()


def clear_flag(session: Session, *, phone: str) -> None:
    """A coordinator checked the number: texts may go to it again."""
    consent = consent_of(session, phone=phone)
    if consent is not None:
        consent.problem_code = None
        consent.problem_at = None
        session.flush()


# --- agreeing on a form: the wording shown, and the tick --------------------------------

# What a person agrees to, word for word, in the language they read or hear it in. It is
# shown next to every consent box (read aloud by a coordinator, or read in the portal) and
# stored with the opt-in, so that what was agreed to can be shown later.
OPT_IN_WORDING: dict[str, str] = {
    "en": (
        "{program} sends visit reminders by text message to this number: up to 1 text a day "
        "and 3 a week. Msg & data rates may apply. Reply HELP for help, STOP to opt out."
    ),
    "es": (
        "{program} envía recordatorios de visitas por mensaje de texto a este número: hasta "
        "1 mensaje al día y 3 a la semana. Pueden aplicarse tarifas de mensajes y datos. "
        "Responda AYUDA para obtener ayuda, PARAR para no recibir más."
    ),
}
CONSENT_FIELD = "sms_consent"


def opt_in_wording(*, language: str, program: str) -> str:
    """The opt-in wording in `language` (English unless "es"), naming the program."""
    return OPT_IN_WORDING["es" if language == "es" else "en"].format(program=program)


def program_of_state(session: Session, *, state_id: int | None, default: str) -> str:
    """The name a state's program goes by in texts (`default` when no state is known)."""
    if state_id is None:
        return default
    name = session.scalar(select(State.program_name).where(State.id == state_id))
    return name or default


def _same_words(one: str, other: str) -> bool:
    return " ".join(one.split()) == " ".join(other.split())


@dataclass(frozen=True)
class ConsentTick:
    """A consent box on a form: ticked or not, and the wording the page showed beside it
    (sent back with the form, so a wording that changed meanwhile is never recorded)."""

    agreed: bool = False
    shown: str = ""


def check_tick(tick: ConsentTick, *, wording: str, phone_given: bool) -> dict[str, str]:
    """Problems with a ticked box, by field (empty when fine or not ticked): a tick needs a
    number, and the wording recorded must be the one the person heard."""
    if not tick.agreed:
        return {}
    if not phone_given:
        return {CONSENT_FIELD: N_("Enter the mobile number the texts should go to.")}
    if not _same_words(tick.shown, wording):
        return {
            CONSENT_FIELD: N_(
                "The wording changed with the state or the language. Read the wording now "
                "shown, then tick the box again."
            )
        }
    return {}


def record_tick(
    session: Session,
    *,
    clock: Clock,
    tick: ConsentTick,
    phone: str | None,
    how: ConsentHow,
    by_user_id: int | None,
    wording: str,
) -> SmsConsentEvent | None:
    """Opt `phone` in when the box was ticked (call `check_tick` first). An unticked box
    records nothing: it never opts a number out, nor back in. A number that already gets
    texts keeps its first agreement."""
    if not tick.agreed or not phone or may_text(session, phone=phone):
        return None
    return opt_in(
        session, clock=clock, phone=phone, how=how, by_user_id=by_user_id, wording=wording
    )


@dataclass(frozen=True)
class NumberConsent:
    """What a page says about a number: may it be texted, since when, and how it came to be."""

    phone: str
    status: ConsentStatus | None
    changed_at: datetime | None  # None too when the change is not the reader's to see
    how: ConsentHow | None
    problem_code: str | None
    # Someone outside the reading coordinator's scope uses the number (`consent_scope`).
    used_outside: bool = False

    @property
    def agreed(self) -> bool:
        """Opted in (texts may still be held back by a flagged number)."""
        return self.status is ConsentStatus.OPTED_IN

    @property
    def gets_texts(self) -> bool:
        return self.agreed and self.problem_code is None

    @property
    def opted_out(self) -> bool:
        return self.status is ConsentStatus.OPTED_OUT


def number_consent(session: Session, *, phone: str, viewer: User | None = None) -> NumberConsent:
    """The number's consent with the event that set it (the latest opt-in or opt-out).

    For a coordinator `viewer`: whether someone outside their scope uses the number, and the
    event only when it is theirs to see (`consent_scope`); without a viewer (the person's
    own number, on their account page), everything."""
    consent = consent_of(session, phone=phone)
    last = session.scalar(
        select(SmsConsentEvent)
        .where(
            SmsConsentEvent.phone == phone,
            SmsConsentEvent.action.in_([ConsentAction.OPT_IN, ConsentAction.OPT_OUT]),
        )
        .order_by(SmsConsentEvent.at.desc(), SmsConsentEvent.id.desc())
        .limit(1)
    )
    used_outside = False
    if viewer is not None:
        used_outside = bool(numbers_used_outside(session, user=viewer, phones=[phone]))
        recorder = session.get(User, last.by_user_id) if last and last.by_user_id else None
        if recorder is not None and not visible_recorders(
            session, viewer=viewer, recorders=[recorder]
        ):
            last = None
    return NumberConsent(
        phone=phone,
        status=consent.status if consent is not None else None,
        changed_at=last.at if last is not None else None,
        how=last.how if last is not None else None,
        problem_code=consent.problem_code if consent is not None else None,
        used_outside=used_outside,
    )


@dataclass(frozen=True)
class TextingContact:
    """The number a logged-in patient or caregiver gets texts at, and their program."""

    phone: str | None
    language: str
    program: str
    time_zone: str


def contact_of(session: Session, *, user: User, default_program: str) -> TextingContact | None:
    """The patient's or caregiver's own number (None for staff, who get no texts)."""
    person: Patient | Caregiver | None = user.patient or user.caregiver
    if person is None:
        return None
    if isinstance(person, Patient):
        state_id: int | None = person.state_id
    else:  # a caregiver's texts name the program of the (first) patient they help
        state_id = session.scalar(
            select(Patient.state_id)
            .join(CaregiverLink, CaregiverLink.patient_id == Patient.id)
            .where(CaregiverLink.caregiver_id == person.id)
            .order_by(CaregiverLink.id)
            .limit(1)
        )
    return TextingContact(
        phone=person.mobile_phone,
        language=person.preferred_language.value,
        program=program_of_state(session, state_id=state_id, default=default_program),
        time_zone=person.time_zone,
    )


# --- the consent box of a coordinator's form -------------------------------------------


def consent_language(preferred_language: str) -> Language:
    """The language the wording is read in: Spanish for a Spanish speaker, else English."""
    return Language.ES if preferred_language == Language.ES else Language.EN


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class ConsentBox:
    """What the consent box of a coordinator's form shows: the opt-in wording in each
    language (naming the state's program), what the number said so far (None without a
    number) and the zone its dates are shown in."""

    wordings: Mapping[str, str]
    number: NumberConsent | None
    zone: str

    def wording_for(self, preferred_language: str) -> str:
        """The wording read to a person who prefers `preferred_language`."""
        return self.wordings[consent_language(preferred_language).value]


def consent_box(
    session: Session,
    *,
    default_program: str,
    state_id: int | None,
    phone_typed: str = "",
    phone_on_file: str | None = None,
    zone: str = "",
    viewer: User | None = None,
) -> ConsentBox:
    """The consent box for a person of state `state_id` (`default_program` until a state is
    chosen): what the number as typed says, else the number on file, with dates in `zone`
    when it is a time zone, else in the state's (UTC without a state). A coordinator's form
    passes the coordinator as `viewer`: the box then says only what is theirs to see, and a
    tick is refused for a number someone outside their scope uses (`consent_scope`)."""
    program = program_of_state(session, state_id=state_id, default=default_program)
    if not _is_zone(zone):  # as typed on a form: maybe not a zone at all
        state = session.get(State, state_id) if state_id is not None else None
        zone = state.time_zone if state is not None else "UTC"
    phone = phone_on_file
    if phone_typed.strip():
        with suppress(InvalidPhoneNumber):  # the form shows the number's own error
            phone = normalize_phone(phone_typed)
    return ConsentBox(
        wordings={
            language.value: opt_in_wording(language=language.value, program=program)
            for language in Language
        },
        number=number_consent(session, phone=phone, viewer=viewer) if phone else None,
        zone=zone,
    )


def check_coordinator_tick(
    box: ConsentBox, *, tick: ConsentTick, preferred_language: str, phone_typed: str
) -> dict[str, str]:
    """Problems with the tick on a coordinator's form, by field (empty when fine or not
    ticked), to refuse together with the form's own: a tick needs a number, the wording
    the page showed in the person's language must still be the one it shows now, and the
    number may not be one that someone outside the coordinator's scope uses."""
    return check_tick(
        tick,
        wording=box.wording_for(preferred_language),
        phone_given=bool(phone_typed.strip()),
    ) or shared_number_problem(box.number, tick=tick)


def shared_number_problem(number: NumberConsent | None, *, tick: ConsentTick) -> dict[str, str]:
    """The refusal of a tick that would opt in a number someone outside the coordinator's
    scope uses (a number that gets texts already keeps its agreement: nothing to refuse)."""
    if tick.agreed and number is not None and number.used_outside and not number.agreed:
        return {CONSENT_FIELD: SHARED_NUMBER_REFUSAL}
    return {}


def tick_kept(tick: ConsentTick, *, errors: Mapping[str, str]) -> bool:
    """Whether a refused form comes back with its box ticked: only when the tick itself was
    fine (a refused tick is given again, after the wording is read again)."""
    return tick.agreed and CONSENT_FIELD not in errors


def record_coordinator_tick(
    session: Session,
    *,
    clock: Clock,
    box: ConsentBox,
    tick: ConsentTick,
    preferred_language: str,
    phone: str | None,
    by_user_id: int,
) -> SmsConsentEvent | None:
    """Once the form is saved, opt the saved `phone` in when the box was ticked, with the
    wording the coordinator read (call `check_coordinator_tick` first). An unticked box
    changes nothing; a number that already gets texts keeps its first agreement."""
    return record_tick(
        session,
        clock=clock,
        tick=tick,
        phone=phone,
        how=ConsentHow.COORDINATOR,
        by_user_id=by_user_id,
        wording=box.wording_for(preferred_language),
    )


@dataclass(frozen=True)
class CoordinatorConsent:
    """The consent box of a coordinator's form as sent: what it showed and whether it was
    ticked. The enrolment and record use cases check it with the form's other fields and
    record it once the record is saved."""

    box: ConsentBox
    tick: ConsentTick

    def problems(self, *, preferred_language: str, phone_typed: str) -> dict[str, str]:
        """`check_coordinator_tick` for this box."""
        return check_coordinator_tick(
            self.box,
            tick=self.tick,
            preferred_language=preferred_language,
            phone_typed=phone_typed,
        )


# --- a person's own number, on their account page --------------------------------------


@dataclass(frozen=True)
class OwnTexts:
    """The texts a patient or caregiver gets at their own number: the number (None when
    none is on file), what it said so far, the wording to agree to in `language`, and the
    zone dates are shown in."""

    phone: str | None
    number: NumberConsent | None
    wording: str
    language: str
    zone: str


def own_texts(
    session: Session, *, user: User, language: str, default_program: str
) -> OwnTexts | None:
    """The texts of the user's own number, read in `language` (None for staff, who get no
    texts)."""
    contact = contact_of(session, user=user, default_program=default_program)
    if contact is None:
        return None
    return OwnTexts(
        phone=contact.phone,
        number=number_consent(session, phone=contact.phone) if contact.phone else None,
        wording=opt_in_wording(language=language, program=contact.program),
        language=language,
        zone=contact.time_zone,
    )


def agree_to_own_texts(
    session: Session,
    *,
    clock: Clock,
    contact: TextingContact,
    tick: ConsentTick,
    language: str,
    by_user_id: int,
) -> dict[str, str] | None:
    """The person agrees, in the portal, to texts at their own number with the wording shown
    to them in `language`. Returns the problems by field (nothing is recorded), or None once
    agreed. This also starts texts again after a STOP: it is the person's own explicit act."""
    wording = opt_in_wording(language=language, program=contact.program)
    errors = check_tick(tick, wording=wording, phone_given=bool(contact.phone))
    if not tick.agreed:
        errors = {CONSENT_FIELD: N_("Tick the box to agree to text messages.")}
    if errors:
        return errors
    record_tick(
        session,
        clock=clock,
        tick=tick,
        phone=contact.phone,
        how=ConsentHow.PORTAL,
        by_user_id=by_user_id,
        wording=wording,
    )
    return None


def stop_texts(
    session: Session,
    *,
    clock: Clock,
    phone: str,
    how: ConsentHow,
    by_user_id: int | None = None,
) -> SmsConsentEvent | None:
    """Stop texts to `phone` (for everyone who shares it), unless it is opted out already:
    asking again records nothing, so the history keeps when and how it first stopped.
    Returns the opt-out recorded, or None."""
    if consent_status(session, phone=phone) is ConsentStatus.OPTED_OUT:
        return None
    return opt_out(session, clock=clock, phone=phone, how=how, by_user_id=by_user_id)
