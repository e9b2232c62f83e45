"""Texts coming back: replies from patients and caregivers (Twilio's inbound webhook) and
delivery-status callbacks. Both are idempotent by Twilio's MessageSid: a replay changes
nothing.

Replies never carry a diagnosis, a therapy, a lab value or a name: only the program, its
phone number, and an appointment date."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coordination.followup.models import Visit, VisitStatus
from coordination.followup.requests import request_move
from coordination.followup.schedule import confirm_visit, next_visit, visits_for_patient
from coordination.texting.consent import consent_status, opt_in, opt_out, record_help
from coordination.texting.contacts import PhoneOwners, owners_of_number
from coordination.texting.models import (
    ConsentHow,
    ConsentStatus,
    DeliveryEvent,
    InboundMessage,
    InboxItem,
    MessageStatus,
    OutboundMessage,
)
from coordination.texting.replies import ReplyIntent, classify_reply, normalize_for_matching
from coordination.texting.rules import BOOKED
from coordination.texting.words import fit_for_sms, format_day, format_time
from core.audit.service import Actor
from core.clock import Clock
from core.identity.models import User
from core.models import Patient, State
from core.phones import display_phone, is_e164, mask_phone

DEFAULT_PROGRAM_NAME = "CGT Access follow-up"
OPT_OUT_ERROR = "21610"
FAILED_STATUSES = frozenset({"undelivered", "failed"})


class NotAPhoneNumber(ValueError):
    """A webhook named a sender or recipient that is not a phone number; `field` says which
    ("From", "To")."""

    def __init__(self, field: str) -> None:
        super().__init__(f"{field} is not a phone number")
        self.field = field


@dataclass(frozen=True)
class Reply:
    """An automatic answer in English and Spanish. Answers name the program and its phone,
    or an appointment's date: never a person, a diagnosis or a therapy."""

    en: str
    es: str

    def text(self, language: str, **values: str) -> str:
        """The answer in `language` (English unless "es"), filled, folded for GSM-7."""
        return fit_for_sms((self.es if language == "es" else self.en).format(**values))


START_REPLY = Reply(
    en="{program}: you will get visit reminders again. Msg & data rates may apply. "
    "Reply HELP for help, STOP to opt out.",
    es="{program}: volverá a recibir recordatorios de sus visitas. Pueden aplicarse tarifas "
    "de mensajes y datos. Responda AYUDA para ayuda, PARAR para no recibir más.",
)
HELP_REPLY = Reply(
    en="{program}: for help call {phone}. Msg & data rates may apply. Reply STOP to opt out.",
    es="{program}: para ayuda llame al {phone}. Pueden aplicarse tarifas de mensajes y datos. "
    "Responda PARAR para no recibir más.",
)
HELP_REPLY_NO_PHONE = Reply(
    en="{program}: for help call your care team. Msg & data rates may apply. "
    "Reply STOP to opt out.",
    es="{program}: para ayuda llame a su equipo de atención. Pueden aplicarse tarifas de "
    "mensajes y datos. Responda PARAR para no recibir más.",
)
CONFIRMED_REPLY = Reply(
    en="Thank you. Your appointment on {when} is confirmed.",
    es="Gracias. Su cita del {when} está confirmada.",
)
MOVE_REPLY = Reply(
    en="Thank you. The care team will call you to find a new date.",
    es="Gracias. El equipo de atención le llamará para buscar otra fecha.",
)
PERSON_WILL_CALL = Reply(
    en="Thank you. A person from the care team will call you.",
    es="Gracias. Una persona del equipo de atención le llamará.",
)
PERSON_WILL_READ = Reply(
    en="Thank you. A person from the care team will read your message.",
    es="Gracias. Una persona del equipo de atención leerá su mensaje.",
)
REPLIES = (
    START_REPLY,
    HELP_REPLY,
    HELP_REPLY_NO_PHONE,
    CONFIRMED_REPLY,
    MOVE_REPLY,
    PERSON_WILL_CALL,
    PERSON_WILL_READ,
)
# Words that show a text from a number we do not know is Spanish (accents already folded).
_WORD = re.compile(r"[^\W_]+")
_SPANISH_WORDS = frozenset(
    {"ayuda", "parar", "pare", "paren", "basta", "baja", "cancelar", "detener", "si"}
    | {"confirmo", "cambiar", "hola", "gracias", "favor", "porfa", "quiero", "necesito"}
    | {"mensajes", "mensaje", "cita", "ayudenme", "informacion"}
)


def _language(owners: PhoneOwners, body: str) -> str:
    """The language to answer in: the owner's; for a number we do not know, Spanish when
    the text has a Spanish word (AYUDA, PARAR, ...), else English."""
    known = owners.language()
    if known is not None:
        return known
    words = set(_WORD.findall(normalize_for_matching(body)))
    return "es" if words & _SPANISH_WORDS else "en"


def _insert_once(session: Session, row: InboundMessage | DeliveryEvent) -> bool:
    """Insert a row keyed by a MessageSid; False when a concurrent request inserted it first.

    On PostgreSQL a savepoint catches the unique violation without losing the transaction.
    SQLite has a single writer (the SELECT before this decides), and pysqlite would commit a
    savepoint that opens the transaction when it is released."""
    if session.get_bind().dialect.name == "sqlite":
        session.add(row)
        session.flush()
        return True
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        return False
    return True


def _program(session: Session, owners: PhoneOwners, default_name: str) -> tuple[str, str | None]:
    state_ids = owners.states()
    if state_ids:
        state = session.get(State, state_ids[0])
        if state is not None:
            return state.program_name, state.program_phone
    return default_name, None


def _next_booked(session: Session, *, clock: Clock, patient: Patient) -> Visit | None:
    now = clock.now()
    booked = [
        visit
        for visit in visits_for_patient(session, patient_id=patient.id)
        if visit.status in BOOKED and visit.appointment_at is not None
        if visit.appointment_at >= now
    ]
    booked.sort(key=lambda visit: visit.appointment_at or now)
    return booked[0] if booked else None


def _when(visit: Visit, patient: Patient, language: str) -> str:
    """The appointment's local day and time as people write them: "Sun Nov 29 at 9:30 AM" /
    "dom 29 nov a las 9:30"."""
    assert visit.appointment_at is not None
    zone = visit.appointment_zone or patient.time_zone
    local: datetime = visit.appointment_at.astimezone(ZoneInfo(zone))
    joiner = "a las" if language == "es" else "at"
    return f"{format_day(local.date(), language)} {joiner} {format_time(local, language)}"


def _sms_actor(session: Session, *, patient: Patient, phone: str, owners: PhoneOwners) -> Actor:
    """Who acted by texting from `phone` about `patient`: the login of the number's owner
    (the patient, or the caregiver whose number it is), else the number itself (masked)."""
    label = f"sms:{mask_phone(phone)}"
    user = None
    if patient.mobile_phone == phone:
        user = session.scalar(select(User).where(User.patient_id == patient.id))
    else:
        caregiver_ids = [caregiver.id for caregiver in owners.caregivers]
        if caregiver_ids:
            user = session.scalar(
                select(User).where(User.caregiver_id.in_(caregiver_ids)).order_by(User.id).limit(1)
            )
    if user is None:
        return Actor(user_id=None, label=label, role=None)
    return Actor(user_id=user.id, label=label, role=user.role.value)


def handle_inbound(
    session: Session,
    *,
    clock: Clock,
    message_sid: str,
    from_phone: str,
    to_phone: str,
    body: str,
    default_program_name: str = DEFAULT_PROGRAM_NAME,
) -> str:
    """Store and act on one inbound text; return the reply to send ("" for none), in the
    language of the number's owner (see `_language`). The patients a text acts on are the
    number's, by `coordination.texting.contacts`' rule.

    A MessageSid seen before returns "" and changes nothing. A sender that is not a phone
    number (E.164) raises NotAPhoneNumber before anything is stored: consent is kept per
    number, and a made-up "number" must neither opt out nor fill the inbox."""
    phone = from_phone.strip()
    if not is_e164(phone):
        raise NotAPhoneNumber("From")
    record = InboundMessage(
        message_sid=message_sid,
        from_phone=phone[:32],
        to_phone=to_phone.strip()[:32],
        body=body,
        received_at=clock.now(),
        intent=ReplyIntent.OTHER.value,
    )
    seen = select(InboundMessage.id).where(InboundMessage.message_sid == message_sid)
    if session.scalar(seen) is not None or not _insert_once(session, record):
        return ""  # a replay (or the same message twice at once)
    status = consent_status(session, phone=phone)
    intent = classify_reply(body, opted_out=status is ConsentStatus.OPTED_OUT)
    if status is not ConsentStatus.OPTED_IN and intent in (
        ReplyIntent.CONFIRM,
        ReplyIntent.RESCHEDULE,
    ):
        # Nothing is confirmed or moved by a number that is not subscribed.
        intent = ReplyIntent.OTHER
    record.intent = intent.value
    owners = owners_of_number(session, phone=phone)
    candidates = owners.candidates
    if len(candidates) == 1:
        record.patient_id = candidates[0].id

    answer = _act(
        session,
        clock=clock,
        intent=intent,
        phone=phone,
        sid=message_sid,
        owners=owners,
        status=status,
        default_program_name=default_program_name,
        record=record,
        language=_language(owners, body),
    )
    record.handled_note = answer.note[:300]
    session.flush()
    if answer.for_care_team:
        _file_for_care_team(session, record=record, owners=owners)
    return answer.reply


@dataclass(frozen=True)
class _Answer:
    """What the platform made of a text: the automatic reply ("" for none), the note for
    the coordinator, and whether a person of the care team must read it (it is a message
    for them, or the reply promised that a person will call)."""

    reply: str
    note: str
    for_care_team: bool = False


def _file_for_care_team(session: Session, *, record: InboundMessage, owners: PhoneOwners) -> None:
    """Put the text in the worklist's inbox: one item for the patient it was tied to, else
    one for each patient the number may be about (each patient's coordinators see theirs).
    A number nobody on a record has reaches no one's inbox: no coordinator may see it."""
    patient_ids = (
        [record.patient_id]
        if record.patient_id is not None
        else [patient.id for patient in owners.candidates]
    )
    for patient_id in patient_ids:
        session.add(
            InboxItem(
                inbound_message_id=record.id,
                patient_id=patient_id,
                received_at=record.received_at,
            )
        )
    session.flush()


def _act(
    session: Session,
    *,
    clock: Clock,
    intent: ReplyIntent,
    phone: str,
    sid: str,
    owners: PhoneOwners,
    status: ConsentStatus | None,
    default_program_name: str,
    record: InboundMessage,
    language: str,
) -> _Answer:
    """Do what the text asks; return the reply in `language` and the note for the
    coordinator, and whether a person must read it."""
    if intent is ReplyIntent.STOP:
        opt_out(session, clock=clock, phone=phone, how=ConsentHow.SMS_KEYWORD, inbound_sid=sid)
        return _Answer("", "opted out")  # the carrier / Twilio confirms STOP itself
    program, program_phone = _program(session, owners, default_program_name)
    if intent is ReplyIntent.START:
        reply = START_REPLY.text(language, program=program)
        opt_in(
            session,
            clock=clock,
            phone=phone,
            how=ConsentHow.SMS_KEYWORD,
            by_user_id=None,
            wording=reply,
            inbound_sid=sid,
        )
        return _Answer(reply, "opted in again")
    if intent is ReplyIntent.HELP:
        record_help(session, clock=clock, phone=phone, inbound_sid=sid)
        if program_phone:
            phone_text = display_phone(program_phone)
            return _Answer(HELP_REPLY.text(language, program=program, phone=phone_text), "help")
        return _Answer(HELP_REPLY_NO_PHONE.text(language, program=program), "help")
    if status is ConsentStatus.OPTED_OUT:
        # No answer goes to a number that opted out, but what it says is still for a person
        # to read (the care team can call).
        return _Answer("", "stored; the number is opted out, no answer sent", for_care_team=True)
    if intent is ReplyIntent.CONFIRM:
        return _confirm(
            session, clock=clock, phone=phone, owners=owners, record=record, language=language
        )
    if intent is ReplyIntent.RESCHEDULE:
        answer, note = _move(session, clock=clock, phone=phone, owners=owners, record=record)
        return _Answer(answer.text(language), note, for_care_team=answer is PERSON_WILL_CALL)
    return _Answer(PERSON_WILL_READ.text(language), "stored for the care team", for_care_team=True)


def _confirm(
    session: Session,
    *,
    clock: Clock,
    phone: str,
    owners: PhoneOwners,
    record: InboundMessage,
    language: str,
) -> _Answer:
    booked = [
        (patient, visit)
        for patient in owners.acting_for
        if (visit := _next_booked(session, clock=clock, patient=patient)) is not None
    ]
    if len(booked) != 1:
        if owners.candidates and not owners.acting_for:
            why = "the caregiver may not confirm visits"
        elif not booked:
            why = "no booked appointment"
        else:
            why = "several patients with appointments"
        # A person promised to call: the text goes to the care team's inbox.
        return _Answer(
            PERSON_WILL_CALL.text(language), f"confirm not done: {why}", for_care_team=True
        )
    patient, visit = booked[0]
    record.patient_id = patient.id
    if visit.status is not VisitStatus.CONFIRMED:
        actor = _sms_actor(session, patient=patient, phone=phone, owners=owners)
        confirm_visit(session, clock=clock, actor=actor, visit=visit)
    when = _when(visit, patient, language)
    return _Answer(CONFIRMED_REPLY.text(language, when=when), f"confirmed visit {visit.id}")


def _move(
    session: Session, *, clock: Clock, phone: str, owners: PhoneOwners, record: InboundMessage
) -> tuple[Reply, str]:
    acting_for = owners.acting_for
    if len(acting_for) != 1:
        if owners.candidates and not acting_for:
            why = "the caregiver may not ask to move visits"
        elif not acting_for:
            why = "unknown number"
        else:
            why = "several patients on this number"
        return PERSON_WILL_CALL, f"move not requested: {why}"
    patient = acting_for[0]
    visit = next_visit(visits_for_patient(session, patient_id=patient.id))
    if visit is None:
        return PERSON_WILL_CALL, "move not requested: no open visit"
    actor = _sms_actor(session, patient=patient, phone=phone, owners=owners)
    move = request_move(
        session,
        clock=clock,
        actor=actor,
        visit=visit,
        preferred_date=None,
        note="Asked by text message.",
    )
    return MOVE_REPLY, f"move request {move.id}"


def record_delivery(
    session: Session,
    *,
    clock: Clock,
    message_sid: str,
    status: str,
    error_code: str | None,
    to_phone: str | None = None,
) -> bool:
    """Record a delivery-status callback; returns False for a replay (nothing changed).

    Undelivered and failed mark the outbox row FAILED ("twilio <code>"); error 21610 (the
    number opted out with the carrier) also opts the number out. A `to_phone` that is given
    but not a phone number (E.164) raises NotAPhoneNumber before anything is stored."""
    if to_phone is not None and to_phone.strip() and not is_e164(to_phone.strip()):
        raise NotAPhoneNumber("To")
    status = status.strip().lower()
    code = (error_code or "").strip() or None
    seen = select(DeliveryEvent.id).where(
        DeliveryEvent.message_sid == message_sid, DeliveryEvent.status == status[:16]
    )
    event = DeliveryEvent(
        message_sid=message_sid, status=status[:16], error_code=code, at=clock.now()
    )
    if session.scalar(seen) is not None or not _insert_once(session, event):
        return False
    message = session.scalar(
        select(OutboundMessage).where(OutboundMessage.provider_message_id == message_sid)
    )
    if message is not None:
        _apply_status(message, status=status, code=code)
    phone = message.to_phone if message is not None else (to_phone or "").strip()
    if code == OPT_OUT_ERROR and phone:
        opt_out(session, clock=clock, phone=phone, how=ConsentHow.PROVIDER_21610)
    session.flush()
    return True


def _apply_status(message: OutboundMessage, *, status: str, code: str | None) -> None:
    """What a delivery status means for the outbox row (never going backwards)."""
    if status in FAILED_STATUSES and message.status is not MessageStatus.FAILED:
        message.status = MessageStatus.FAILED
        message.last_error = f"twilio {code or status}"[:300]
    elif status == "delivered" and message.status is MessageStatus.SENT:
        message.status = MessageStatus.DELIVERED


def apply_early_callbacks(session: Session, *, sids: list[str]) -> None:
    """Apply delivery callbacks that arrived before the dispatcher recorded the send (the
    provider can be faster than our own write)."""
    if not sids:
        return
    events = list(
        session.execute(
            select(DeliveryEvent.message_sid, DeliveryEvent.status, DeliveryEvent.error_code)
            .where(DeliveryEvent.message_sid.in_(sids))
            .order_by(DeliveryEvent.id)
        )
    )
    if not events:
        return
    messages = {
        m.provider_message_id: m
        for m in session.scalars(
            select(OutboundMessage).where(
                OutboundMessage.provider_message_id.in_({sid for sid, _, _ in events})
            )
        )
    }
    for sid, status, code in events:
        message = messages.get(sid)
        if message is not None:
            _apply_status(message, status=status, code=code)
    session.flush()
