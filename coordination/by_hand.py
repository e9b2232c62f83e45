"""Texts a coordinator sends by hand: "send reminder now" and the approved one-off
messages, within consent, texting hours and the caps, with the reason when refused."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.consent import consent_of
from coordination.models import (
    LEFT_STATUSES,
    OPEN_VISIT_STATUSES,
    ConsentStatus,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
    Visit,
    VisitStatus,
)
from coordination.protocol import ReminderKind
from coordination.reminder_texts import (
    ONE_OFF,
    Template,
    render,
)
from coordination.schedule import visits_for_patient
from coordination.texting import (
    BOOKED,
    CAPPED_PURPOSES,
    MANUAL_RULE,
    Recipient,
    TextingHours,
    cap_problem,
    program_values,
    recipients_of,
    reminder_body,
    reminder_links_of,
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


def texting_refusal(
    session: Session, *, clock: Clock, recipient: Recipient, hours: TextingHours
) -> str | None:
    """Why a text asked for by hand (a coordinator's one-off, "send reminder now", a module
    link) may not go to `recipient` now, in words for the coordinator; None when it may:
    consent, a flagged number, the state's texting hours and the caps."""
    now = clock.now()
    consent = consent_of(session, phone=recipient.phone)
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
    sent = sorted(
        moment
        for sent_at, claimed, send_after in session.execute(
            select(
                OutboundMessage.sent_at, OutboundMessage.claimed_at, OutboundMessage.send_after
            ).where(
                OutboundMessage.to_phone == recipient.phone,
                OutboundMessage.purpose.in_(CAPPED_PURPOSES),
                OutboundMessage.status.in_((MessageStatus.QUEUED, *LEFT_STATUSES)),
                OutboundMessage.send_after >= now - timedelta(days=8),
                OutboundMessage.send_after <= now,
            )
        )
        if (moment := sent_at or claimed or send_after) is not None
    )
    problem = cap_problem(sent, now, recipient.zone)
    if problem == "cap: already one text that day":
        return N_("This number already got a text today (at most one a day).")
    if problem is not None:
        return N_("This number already got three texts this week (at most three a week).")
    return None


def _send_by_hand(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    one_off: Template | None,
    visit: Visit | None,
) -> list[ManualOutcome]:
    state = session.get(State, patient.state_id)
    assert state is not None
    hours = TextingHours.of(state)
    links = reminder_links_of(session, [patient.id]).get(patient.id, [])
    outcomes: list[ManualOutcome] = []
    for recipient in recipients_of(patient, links):
        refusal = texting_refusal(session, clock=clock, recipient=recipient, hours=hours)
        if refusal is not None:
            outcomes.append(ManualOutcome(recipient.phone, recipient.is_caregiver, False, refusal))
            continue
        values = program_values(state)
        if one_off is not None:
            body = render(one_off, recipient.language, **values)
            purpose, rule = MessagePurpose.ONE_OFF, one_off.key
        else:
            assert visit is not None
            kind = _manual_kind(visit)
            body = reminder_body(kind, visit, recipient, state, patient.time_zone)
            purpose, rule = MessagePurpose.REMINDER, MANUAL_RULE
        session.add(
            OutboundMessage(
                to_phone=recipient.phone,
                body=body,
                purpose=purpose,
                patient_id=patient.id,
                caregiver_id=recipient.caregiver_id,
                visit_id=visit.id if visit is not None else None,
                rule=rule,
                language=recipient.language,
                status=MessageStatus.QUEUED,
                created_at=clock.now(),
                send_after=clock.now(),
                attempts=0,
                requested_by_user_id=actor.user_id,
            )
        )
        outcomes.append(ManualOutcome(recipient.phone, recipient.is_caregiver, True, None))
    session.flush()
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
    return outcomes


def _manual_kind(visit: Visit) -> ReminderKind:
    if visit.status in BOOKED and visit.appointment_at is not None:
        return ReminderKind.APPOINTMENT
    if visit.status is VisitStatus.MISSED:
        return ReminderKind.OVERDUE
    return ReminderKind.WINDOW_OPENS


def reminder_visit(session: Session, *, clock: Clock, patient: Patient) -> Visit | None:
    """The visit a "send reminder now" is about: the next open one, else the latest missed
    one nobody followed up."""
    visits = visits_for_patient(session, patient_id=patient.id)
    upcoming = [
        v
        for v in visits
        if v.status in OPEN_VISIT_STATUSES
        and (v.appointment_at is None or v.appointment_at > clock.now())
    ]
    if upcoming:
        return upcoming[0]
    missed = [
        v for v in visits if v.status is VisitStatus.MISSED and v.missed_acknowledged_at is None
    ]
    return missed[-1] if missed else None


def send_reminder_now(
    session: Session, *, clock: Clock, actor: Actor, patient: Patient
) -> list[ManualOutcome]:
    """Queue a reminder about the patient's next visit to the patient and caregivers who
    get reminders, each within consent, texting hours and the caps. Nothing is queued
    when there is no visit to remind of (an empty list)."""
    visit = reminder_visit(session, clock=clock, patient=patient)
    if visit is None:
        return []
    return _send_by_hand(
        session, clock=clock, actor=actor, patient=patient, one_off=None, visit=visit
    )


def send_one_off(
    session: Session, *, clock: Clock, actor: Actor, patient: Patient, template_key: str
) -> list[ManualOutcome]:
    """Queue an approved one-off text (ONE_OFF[template_key]) to the patient and caregivers
    who get reminders, within consent, texting hours and the caps. KeyError for a
    template that is not approved."""
    template = ONE_OFF[template_key]
    return _send_by_hand(
        session, clock=clock, actor=actor, patient=patient, one_off=template, visit=None
    )
