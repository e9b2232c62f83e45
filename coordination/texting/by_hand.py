"""Texts a coordinator sends by hand: "send reminder now" (for one patient or a page of
them), the approved one-off messages, and a free reply to a text from the inbox, within
consent, texting hours and the caps, with the reason when refused."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from coordination.followup.models import OPEN_VISIT_STATUSES, Visit, VisitStatus
from coordination.followup.protocol import ReminderKind
from coordination.texting.consent import consents_of
from coordination.texting.models import (
    ConsentStatus,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
    SmsConsent,
)
from coordination.texting.replies import MAX_TEMPLATE_SEGMENTS, forbidden_in, sms_segments
from coordination.texting.rules import (
    BOOKED,
    MANUAL_RULE,
    Recipient,
    TextingHours,
    cap_problem,
    program_values,
    recipients_of,
    reminder_body,
    reminder_links_of,
    texts_so_far,
)
from coordination.texting.words import (
    FORBIDDEN_WORDS,
    ONE_OFF,
    Template,
    fit_for_sms,
    render,
)
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.models import Patient, State
from core.text import N_


@dataclass(frozen=True)
class ManualOutcome:
    """What became of a text a coordinator asked for, for one number."""

    phone: str
    is_caregiver: bool
    queued: bool
    reason: str | None  # msgid with params, when refused
    message_id: int | None = None  # the outbox row, when queued one at a time (a reply)


def texting_refusal(
    session: Session, *, clock: Clock, recipient: Recipient, hours: TextingHours
) -> str | None:
    """Why a text asked for by hand (a coordinator's one-off, "send reminder now", a module
    link) may not go to `recipient` now, in words for the coordinator; None when it may:
    consent, a flagged number, the state's texting hours and the caps."""
    now = clock.now()
    numbers = _Numbers.read(session, phones=[recipient.phone], now=now)
    return numbers.refusal(recipient, hours=hours, now=now)


@dataclass(frozen=True)
class _Numbers:
    """What the rules read of the numbers asked for (each number's consent and the texts
    it already got), read at once for them all."""

    consents: dict[str, SmsConsent]
    sent: defaultdict[str, list[datetime]]

    @classmethod
    def read(cls, session: Session, *, phones: Collection[str], now: datetime) -> _Numbers:
        consents = consents_of(session, phones=phones)
        # Queued texts count: one due now leaves within the minute.
        sent = texts_so_far(session, phones=phones, now=now, queued_count=True)
        return cls(consents, sent)

    def refusal(self, recipient: Recipient, *, hours: TextingHours, now: datetime) -> str | None:
        """`texting_refusal`, on what was read."""
        consent = self.consents.get(recipient.phone)
        if consent is None:
            return N_("This number never agreed to get texts. Record consent first.")
        if consent.status is ConsentStatus.OPTED_OUT:
            return N_("This number opted out of texts (STOP). It cannot be texted.")
        if consent.problem_code:
            return N_(
                "Texts to this number failed for good (error %(code)s). Check the number.",
                code=consent.problem_code,
            )
        if not hours.allows(now, recipient.zone):
            return N_(
                "It is outside texting hours (%(hours)s) where this person lives. Try later.",
                hours=hours.describe(),
            )
        problem = cap_problem(self.sent[recipient.phone], now, recipient.zone)
        if problem == "cap: already one text that day":
            return N_("This number already got a text today (at most one a day).")
        if problem is not None:
            return N_("This number already got three texts this week (at most three a week).")
        return None

    def queued(self, phone: str, now: datetime) -> None:
        """A text to `phone` was just queued: the next one asked for counts it."""
        bisect.insort(self.sent[phone], now)


def _send_by_hand(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    asked: Sequence[tuple[Patient, Visit | None]],
    one_off: Template | None,
) -> list[list[ManualOutcome]]:
    """Queue the text (`one_off`, else a reminder of the paired visit) to each patient's
    numbers that may get it, in order, and audit each patient: the outcomes of each
    patient, in the order asked. Reads what it needs in a few queries for them all."""
    if not asked:
        return []
    now = clock.now()
    patient_ids = [patient.id for patient, _visit in asked]
    state_ids = {patient.state_id for patient, _visit in asked}
    states = {
        state.id: state for state in session.scalars(select(State).where(State.id.in_(state_ids)))
    }
    links = reminder_links_of(session, patient_ids)
    recipients = {
        patient.id: recipients_of(patient, links.get(patient.id, [])) for patient, _visit in asked
    }
    numbers = _Numbers.read(
        session,
        phones={recipient.phone for found in recipients.values() for recipient in found},
        now=now,
    )
    rows: list[dict[str, object]] = []
    results: list[list[ManualOutcome]] = []
    for patient, visit in asked:
        state = states[patient.state_id]
        hours = TextingHours.of(state)
        outcomes: list[ManualOutcome] = []
        for recipient in recipients[patient.id]:
            refusal = numbers.refusal(recipient, hours=hours, now=now)
            if refusal is not None:
                outcomes.append(
                    ManualOutcome(recipient.phone, recipient.is_caregiver, False, refusal)
                )
                continue
            if one_off is not None:
                body = render(one_off, recipient.language, **program_values(state))
                purpose, rule = MessagePurpose.ONE_OFF, one_off.key
            else:
                assert visit is not None
                kind = _manual_kind(visit)
                body = reminder_body(kind, visit, recipient, state, patient.time_zone)
                purpose, rule = MessagePurpose.REMINDER, MANUAL_RULE
            rows.append(
                {
                    "to_phone": recipient.phone,
                    "body": body,
                    "purpose": purpose,
                    "patient_id": patient.id,
                    "caregiver_id": recipient.caregiver_id,
                    "visit_id": visit.id if visit is not None else None,
                    "rule": rule,
                    "language": recipient.language,
                    "status": MessageStatus.QUEUED,
                    "created_at": now,
                    "send_after": now,
                    "attempts": 0,
                    "requested_by_user_id": actor.user_id,
                }
            )
            # A number shared with a patient further on (a caregiver of two) got its text.
            numbers.queued(recipient.phone, now)
            outcomes.append(ManualOutcome(recipient.phone, recipient.is_caregiver, True, None))
        results.append(outcomes)
    if rows:
        # One statement for them all: objects would be inserted one by one on SQLite, and
        # so would rows whose None columns differ (a caregiver's or not) without render_nulls.
        session.execute(insert(OutboundMessage).execution_options(render_nulls=True), rows)
    for (patient, _visit), outcomes in zip(asked, results, strict=True):
        record_event(
            session,
            clock=clock,
            actor=actor,
            action="sms.one_off" if one_off is not None else "sms.remind_now",
            patient_id=patient.id,
            target=f"patient:{patient.id}",
            detail={
                "queued": sum(o.queued for o in outcomes),
                "refused": sum(not o.queued for o in outcomes),
            },
        )
    return results


def _manual_kind(visit: Visit) -> ReminderKind:
    if visit.status in BOOKED and visit.appointment_at is not None:
        return ReminderKind.APPOINTMENT
    if visit.status is VisitStatus.MISSED:
        return ReminderKind.OVERDUE
    return ReminderKind.WINDOW_OPENS


def reminder_visits(
    session: Session, *, clock: Clock, patient_ids: Collection[int]
) -> dict[int, Visit]:
    """The visit a "send reminder now" is about, for each patient who has one: the next
    open one, else the latest missed one nobody followed up."""
    now = clock.now()
    by_patient: dict[int, list[Visit]] = defaultdict(list)
    if patient_ids:
        for visit in session.scalars(
            select(Visit)
            .where(
                Visit.patient_id.in_(patient_ids),
                Visit.status.in_((*OPEN_VISIT_STATUSES, VisitStatus.MISSED)),
            )
            .order_by(Visit.target_date, Visit.id)
        ):
            by_patient[visit.patient_id].append(visit)
    found: dict[int, Visit] = {}
    for patient_id, visits in by_patient.items():
        upcoming = [
            v
            for v in visits
            if v.status in OPEN_VISIT_STATUSES
            and (v.appointment_at is None or v.appointment_at > now)
        ]
        missed = [
            v for v in visits if v.status is VisitStatus.MISSED and v.missed_acknowledged_at is None
        ]
        if upcoming:
            found[patient_id] = upcoming[0]
        elif missed:
            found[patient_id] = missed[-1]
    return found


def send_reminders_now(
    session: Session, *, clock: Clock, actor: Actor, patients: Sequence[Patient]
) -> dict[int, list[ManualOutcome]]:
    """`send_reminder_now` for each of `patients`, in order (a number shared by two gets
    the first one's reminder only, as the caps say), reading what it needs in a few
    queries whatever their number: the outcomes by patient id (an empty list, and
    nothing audited, for a patient with no visit to remind of)."""
    visits = reminder_visits(session, clock=clock, patient_ids=[p.id for p in patients])
    asked = [(patient, visits[patient.id]) for patient in patients if patient.id in visits]
    outcomes = _send_by_hand(session, clock=clock, actor=actor, asked=asked, one_off=None)
    by_patient: dict[int, list[ManualOutcome]] = {patient.id: [] for patient in patients}
    for (patient, _visit), found in zip(asked, outcomes, strict=True):
        by_patient[patient.id] = found
    return by_patient


def send_reminder_now(
    session: Session, *, clock: Clock, actor: Actor, patient: Patient
) -> list[ManualOutcome]:
    """Queue a reminder about the patient's next visit to the patient and caregivers who
    get reminders, each within consent, texting hours and the caps. Nothing is queued
    when there is no visit to remind of (an empty list)."""
    return send_reminders_now(session, clock=clock, actor=actor, patients=[patient])[patient.id]


def send_one_off(
    session: Session, *, clock: Clock, actor: Actor, patient: Patient, template_key: str
) -> list[ManualOutcome]:
    """Queue an approved one-off text (ONE_OFF[template_key]) to the patient and caregivers
    who get reminders, within consent, texting hours and the caps. KeyError for a
    template that is not approved."""
    template = ONE_OFF[template_key]
    [outcomes] = _send_by_hand(
        session, clock=clock, actor=actor, asked=[(patient, None)], one_off=template
    )
    return outcomes


# --- a coordinator's free reply to a text ------------------------------------------------------

# What every reply ends with, in the recipient's language: how to stop.
REPLY_ENDING = {"en": "Reply STOP to opt out.", "es": "Responda PARAR para salir."}
# The room two segments give (GSM-7 septets, or UCS-2 code units when a character needs it).
_TWO_SEGMENTS = {"GSM-7": 2 * 153, "UCS-2": 2 * 67}


def reply_body(text: str, *, language: str, program: str) -> str:
    """The text a coordinator's reply goes as: the program's name, the words typed (spaces
    and lines folded into single spaces), how to stop; folded for GSM-7."""
    words = " ".join(text.split())
    ending = REPLY_ENDING["es" if language == "es" else "en"]
    return fit_for_sms(f"{program}: {words} {ending}")


def reply_problem(text: str, *, language: str, program: str, names: Collection[str]) -> str | None:
    """Why a coordinator's reply may not go as typed (a msgid with params), None when it
    may: empty; a diagnosis, therapy, result or a person's name in it (a text never
    carries them: a shared phone's lock screen shows it); longer than two segments once
    the program's name and how to stop are added."""
    if not text.strip():
        return N_("Write the reply.")
    found = forbidden_in(text, [*FORBIDDEN_WORDS, *names])
    if found:
        return N_(
            "A text may not carry a diagnosis, a therapy, a result or a name (%(word)s). "
            "Say it by phone instead.",
            word=found[0],
        )
    info = sms_segments(reply_body(text, language=language, program=program))
    if info.segments > MAX_TEMPLATE_SEGMENTS:
        over = info.characters - _TWO_SEGMENTS[info.encoding]
        if info.encoding == "UCS-2":
            return N_(
                "The reply is too long for two text messages by %(over)d characters, with "
                "the program's name and how to stop. An emoji or a special character leaves "
                "less room: take it out or shorten the reply.",
                over=over,
            )
        return N_(
            "The reply is too long for two text messages by %(over)d characters, with the "
            "program's name and how to stop. Shorten it.",
            over=over,
        )
    return None


def send_reply(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    recipient: Recipient,
    text: str,
    names: Collection[str] = (),
) -> ManualOutcome:
    """Queue a coordinator's reply to the one number that wrote (`recipient`), within
    consent (only to a number that opted in), texting hours and the caps, with the reason
    when refused; audited. ValueError (a msgid) when the words may not go
    (`reply_problem`, with the patient's names and `names`, those of the number's people)."""
    state = patient.state
    program = state.program_name
    problem = reply_problem(
        text,
        language=recipient.language,
        program=program,
        names=[patient.given_name, patient.family_name, *names],
    )
    if problem is not None:
        raise ValueError(problem)
    now = clock.now()
    refusal = texting_refusal(
        session, clock=clock, recipient=recipient, hours=TextingHours.of(state)
    )
    message_id: int | None = None
    if refusal is None:
        message = OutboundMessage(
            to_phone=recipient.phone,
            body=reply_body(text, language=recipient.language, program=program),
            purpose=MessagePurpose.REPLY,
            patient_id=patient.id,
            caregiver_id=recipient.caregiver_id,
            language=recipient.language,
            status=MessageStatus.QUEUED,
            created_at=now,
            send_after=now,
            attempts=0,
            requested_by_user_id=actor.user_id,
        )
        session.add(message)
        session.flush()
        message_id = message.id
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="sms.reply",
        patient_id=patient.id,
        target=f"patient:{patient.id}",
        detail={"queued": int(refusal is None), "refused": int(refusal is not None)},
    )
    return ManualOutcome(
        recipient.phone, recipient.is_caregiver, refusal is None, refusal, message_id
    )
