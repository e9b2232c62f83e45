"""The demo's text messages: consent and reminders seeded so that the console gateway's page
(/demo/messages) shows texts leaving within the first minute of `make demo`; what that page
lists; and its form to answer as the patient.

The demo runs on the real clock. Maryland keeps the default texting hours (8:00-21:00 where
the person lives), so at night its texts wait, as they would for real. Colorado's hours are
set to all day in the demo, so that some texts leave whatever the hour; the page says so.
Everything else is the real thing: consent, the caps, planning, the check before sending,
and replies handled by the same function as Twilio's inbound webhook."""

from __future__ import annotations

import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordination.followup.models import MoveRequest, RequestStatus, Visit, VisitStatus
from coordination.followup.schedule import next_visit
from coordination.texting.by_hand import send_one_off
from coordination.texting.consent import consent_status, opt_in, opt_in_wording
from coordination.texting.contacts import PhoneOwners, owners_of_number, owners_of_numbers
from coordination.texting.inbound import handle_inbound
from coordination.texting.models import (
    ConsentHow,
    ConsentStatus,
    InboundMessage,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
)
from coordination.texting.planning import PlanReport, plan_reminders
from coordination.texting.replies import ReplyIntent
from coordination.texting.rules import FOLLOWED
from core.audit.service import Actor
from core.clock import Clock, FrozenClock
from core.identity.models import Role, User
from core.models import Caregiver, CaregiverLink, Patient, State

# The number the demo's texts come from, and that its people answer (fictional).
DEMO_TEXTING_NUMBER = "+12025550100"
# Demo patients (by their place in the demo list, portal/demo.py) with a story:
NEVER_AGREED = 10  # Kiara: never agreed to texts, so none are planned for her
OPTED_OUT = 23  # Layla: texted STOP three weeks ago
CALLED_TWICE = 21  # Jasmine: the coordinator called twice (the outreach note), then texted
ALL_DAY_STATE = "CO"
CONSOLE_ROWS = 50
# Keyword buttons of the answer form: what each sends.
KEYWORDS = ("C", "R", "STOP", "HELP", "START")


# --- seeding -----------------------------------------------------------------------------


def seed_demo_sms(session: Session, *, clock: Clock, users: dict[str, User]) -> PlanReport:
    """Consent for the demo people's numbers (recorded by their coordinator, in their
    language), one number that opted out, a coordinator's one-off text, and the reminders of
    the next 30 days planned now: those whose moment passed go at once (within texting hours)."""
    now = clock.now()
    states = {state.id: state for state in session.scalars(select(State))}
    for state in states.values():
        if state.code == ALL_DAY_STATE:
            # Demo only: texts may leave at any hour here, so the demo shows some at night.
            state.texts_from_hour, state.texts_until_hour = 0, 24
    coordinators = {
        state_id: user
        for user in users.values()
        if user.role is Role.COORDINATOR
        for state_id in user.state_ids
    }
    patients = list(session.scalars(select(Patient).order_by(Patient.id)))
    for index, patient in enumerate(patients):
        if index == NEVER_AGREED or patient.status not in FOLLOWED or not patient.mobile_phone:
            continue
        opt_in(
            session,
            clock=FrozenClock(now - timedelta(days=40 + index)),
            phone=patient.mobile_phone,
            how=ConsentHow.COORDINATOR,
            by_user_id=coordinators[patient.state_id].id,
            wording=opt_in_wording(
                language=patient.preferred_language.value,
                program=states[patient.state_id].program_name,
            ),
        )
    helpers = session.execute(
        select(Caregiver, Patient)
        .join(CaregiverLink, CaregiverLink.caregiver_id == Caregiver.id)
        .join(Patient, Patient.id == CaregiverLink.patient_id)
        .where(CaregiverLink.can_receive_reminders.is_(True))
        .order_by(Caregiver.id)
    )
    for caregiver, patient in helpers:
        if caregiver.mobile_phone:
            opt_in(
                session,
                clock=FrozenClock(now - timedelta(days=35)),
                phone=caregiver.mobile_phone,
                how=ConsentHow.COORDINATOR,
                by_user_id=coordinators[patient.state_id].id,
                wording=opt_in_wording(
                    language=caregiver.preferred_language.value,
                    program=states[patient.state_id].program_name,
                ),
            )
    stopped = patients[OPTED_OUT]
    if stopped.mobile_phone:
        handle_inbound(
            session,
            clock=FrozenClock(now - timedelta(days=21)),
            message_sid=_demo_sid(),
            from_phone=stopped.mobile_phone,
            to_phone=DEMO_TEXTING_NUMBER,
            body="Stop",
        )
    called = patients[CALLED_TWICE]
    coordinator = coordinators[called.state_id]
    send_one_off(
        session,
        clock=clock,
        actor=Actor(user_id=coordinator.id, label=coordinator.login or "", role="coordinator"),
        patient=called,
        template_key="tried_to_call",
    )
    return plan_reminders(session, clock=clock)


def _demo_sid() -> str:
    """A MessageSid for a text typed on the demo page (Twilio's are SM + 32 hex digits)."""
    return "SMdemo" + secrets.token_hex(14)


# --- what the console page lists ---------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """Who a demo number belongs to (a caregiver also names the patient they help)."""

    name: str
    patient_name: str | None = None

    @property
    def is_caregiver(self) -> bool:
        return self.patient_name is not None


@dataclass(frozen=True)
class ConsoleText:
    message: OutboundMessage
    person: Person | None


@dataclass(frozen=True)
class ConsoleReply:
    message: InboundMessage
    person: Person | None


@dataclass(frozen=True)
class Console:
    """The outbox as the console page shows it."""

    sent: list[ConsoleText]  # handed to the (console) gateway, or tried: newest first
    waiting: list[ConsoleText]  # queued: soonest first
    not_sent: list[ConsoleText]  # dropped on purpose: newest first
    replies: list[ConsoleReply]  # texts received: newest first
    due_now: int  # queued and due: the dispatcher's next tick takes them


def _person(owners: PhoneOwners) -> Person | None:
    """How the page names a number: its own patient, else the caregiver of its oldest link
    (`coordination.texting.contacts`' rule)."""
    if owners.patients:
        return Person(owners.patients[0].full_name)
    link = owners.first_link
    if link is not None:
        return Person(link.caregiver.full_name, link.patient.full_name)
    return None


def people_by_phone(session: Session, phones: set[str]) -> dict[str, Person]:
    """The demo person of each number (a patient's own number wins over a caregiver's)."""
    return {
        phone: person
        for phone, owners in owners_of_numbers(session, phones=phones).items()
        if (person := _person(owners)) is not None
    }


def console(session: Session, *, now: datetime, limit: int = CONSOLE_ROWS) -> Console:
    """What the demo sent, is about to send, did not send, and received."""
    left = (
        MessageStatus.SENDING,
        MessageStatus.SENT,
        MessageStatus.DELIVERED,
        MessageStatus.FAILED,
    )
    sent = list(
        session.scalars(
            select(OutboundMessage)
            .where(OutboundMessage.status.in_(left))
            .order_by(
                func.coalesce(
                    OutboundMessage.sent_at, OutboundMessage.claimed_at, OutboundMessage.created_at
                ).desc(),
                OutboundMessage.id.desc(),
            )
            .limit(limit)
        )
    )
    waiting = list(
        session.scalars(
            select(OutboundMessage)
            .where(OutboundMessage.status == MessageStatus.QUEUED)
            .order_by(OutboundMessage.send_after, OutboundMessage.id)
            .limit(limit)
        )
    )
    not_sent = list(
        session.scalars(
            select(OutboundMessage)
            .where(OutboundMessage.status == MessageStatus.DROPPED)
            .order_by(OutboundMessage.id.desc())
            .limit(limit)
        )
    )
    replies = list(
        session.scalars(
            select(InboundMessage)
            .order_by(InboundMessage.received_at.desc(), InboundMessage.id.desc())
            .limit(limit)
        )
    )
    due_now = (
        session.scalar(
            select(func.count())
            .select_from(OutboundMessage)
            .where(
                OutboundMessage.status == MessageStatus.QUEUED, OutboundMessage.send_after <= now
            )
        )
        or 0
    )
    phones = {m.to_phone for m in sent + waiting + not_sent} | {r.from_phone for r in replies}
    people = people_by_phone(session, phones)
    return Console(
        sent=[ConsoleText(m, people.get(m.to_phone)) for m in sent],
        waiting=[ConsoleText(m, people.get(m.to_phone)) for m in waiting],
        not_sent=[ConsoleText(m, people.get(m.to_phone)) for m in not_sent],
        replies=[ConsoleReply(r, people.get(r.from_phone)) for r in replies],
        due_now=due_now,
    )


@dataclass(frozen=True)
class DemoNumber:
    """A number a visitor may answer from, with what its patient has next."""

    phone: str
    person: Person | None
    got_text: bool
    next_visit: Visit | None
    zone: str


def demo_numbers(session: Session) -> list[DemoNumber]:
    """The numbers the demo texted or is about to text (visit reminders and one-off texts),
    those that already got one first."""
    rows = session.execute(
        select(OutboundMessage.to_phone, OutboundMessage.status, OutboundMessage.patient_id)
        .where(OutboundMessage.purpose.in_((MessagePurpose.REMINDER, MessagePurpose.ONE_OFF)))
        .order_by(OutboundMessage.id)
    )
    got: dict[str, bool] = {}
    patient_of: dict[str, int | None] = {}
    for phone, status, patient_id in rows:
        got[phone] = got.get(phone, False) or status in (
            MessageStatus.SENT,
            MessageStatus.DELIVERED,
        )
        patient_of.setdefault(phone, patient_id)
    people = people_by_phone(session, set(got))
    patient_ids = {patient_id for patient_id in patient_of.values() if patient_id is not None}
    patients = {
        patient.id: patient
        for patient in session.scalars(select(Patient).where(Patient.id.in_(patient_ids)))
    }
    visits: dict[int, list[Visit]] = defaultdict(list)
    for visit in session.scalars(
        select(Visit)
        .where(Visit.patient_id.in_(patient_ids))
        .order_by(Visit.patient_id, Visit.target_date, Visit.id)
    ):
        visits[visit.patient_id].append(visit)
    numbers = []
    for phone, texted in got.items():
        patient_id = patient_of[phone]
        patient = patients.get(patient_id) if patient_id is not None else None
        numbers.append(
            DemoNumber(
                phone=phone,
                person=people.get(phone),
                got_text=texted,
                next_visit=next_visit(visits[patient.id]) if patient else None,
                zone=patient.time_zone if patient else "UTC",
            )
        )
    numbers.sort(key=lambda n: (not n.got_text, n.person.name if n.person else n.phone))
    return numbers


# --- answering as the patient ----------------------------------------------------------------


@dataclass(frozen=True)
class Effect:
    """One thing the platform did about a reply (the page words it)."""

    kind: str
    count: int = 0
    at: str | None = None  # a confirmed appointment (ISO instant)
    zone: str | None = None

    @property
    def instant(self) -> datetime | None:
        return datetime.fromisoformat(self.at) if self.at else None


@dataclass(frozen=True)
class DemoAnswer:
    """A text typed on the demo page, the platform's automatic answer and what it did."""

    inbound_id: int
    phone: str
    body: str
    intent: str
    reply: str
    effects: tuple[Effect, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.inbound_id,
            "phone": self.phone,
            "body": self.body,
            "intent": self.intent,
            "reply": self.reply,
            "effects": [[e.kind, e.count, e.at, e.zone] for e in self.effects],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DemoAnswer:
        return cls(
            inbound_id=int(data["id"]),
            phone=str(data["phone"]),
            body=str(data["body"]),
            intent=str(data["intent"]),
            reply=str(data["reply"]),
            effects=tuple(Effect(str(k), int(c), a, z) for k, c, a, z in data["effects"]),
        )


@dataclass(frozen=True)
class _Snapshot:
    consent: ConsentStatus | None
    visits: dict[int, tuple[VisitStatus, datetime | None, str]]
    move_requests: frozenset[int]
    waiting: int


def _patients_of(session: Session, phone: str) -> tuple[Patient, ...]:
    """The patients a text from `phone` is about, by the rule inbound replies use (a
    caregiver's number: only patients whose link gives a schedule or reminder right); what
    changes among their visits is what the text did."""
    return owners_of_number(session, phone=phone).candidates


def _snapshot(session: Session, phone: str) -> _Snapshot:
    patients = _patients_of(session, phone)
    ids = [p.id for p in patients]
    zones = {p.id: p.time_zone for p in patients}
    visits = {
        v.id: (v.status, v.appointment_at, v.appointment_zone or zones[v.patient_id])
        for v in session.scalars(select(Visit).where(Visit.patient_id.in_(ids)))
    }
    requests = frozenset(
        session.scalars(
            select(MoveRequest.id).where(
                MoveRequest.patient_id.in_(ids), MoveRequest.status == RequestStatus.OPEN
            )
        )
    )
    waiting = (
        session.scalar(
            select(func.count())
            .select_from(OutboundMessage)
            .where(
                OutboundMessage.to_phone == phone,
                OutboundMessage.status == MessageStatus.QUEUED,
                OutboundMessage.purpose.in_((MessagePurpose.REMINDER, MessagePurpose.ONE_OFF)),
            )
        )
        or 0
    )
    return _Snapshot(consent_status(session, phone=phone), visits, requests, waiting)


def _effects(before: _Snapshot, after: _Snapshot, intent: str) -> tuple[Effect, ...]:
    found: list[Effect] = []
    if before.consent is not after.consent:
        if after.consent is ConsentStatus.OPTED_OUT:
            found.append(Effect("opted_out", count=after.waiting))
        elif after.consent is ConsentStatus.OPTED_IN:
            found.append(Effect("opted_in"))
    for visit_id, (status, at, zone) in sorted(after.visits.items()):
        was = before.visits.get(visit_id)
        if status is VisitStatus.CONFIRMED and (was is None or was[0] is not status):
            found.append(Effect("confirmed", at=at.isoformat() if at else None, zone=zone))
    if after.move_requests - before.move_requests:
        found.append(Effect("move_requested"))
    if found:
        return tuple(found)
    if intent == ReplyIntent.HELP.value:
        return (Effect("help"),)
    if intent in (ReplyIntent.STOP.value, ReplyIntent.START.value):
        return (Effect("unchanged"),)
    if after.consent is ConsentStatus.OPTED_OUT:
        return (Effect("ignored_opted_out"),)
    if intent == ReplyIntent.CONFIRM.value:
        return (Effect("not_confirmed"),)
    if intent == ReplyIntent.RESCHEDULE.value:
        return (Effect("not_moved"),)
    return (Effect("stored"),)


def answer_as_patient(
    session: Session,
    *,
    clock: Clock,
    phone: str,
    body: str,
    texting_number: str,
    program_name: str,
) -> DemoAnswer:
    """Act on `body` as if `phone` had texted it: the same function as Twilio's inbound
    webhook (without its signature: nothing came from Twilio). Returns the automatic
    answer, which Twilio would deliver from the webhook's TwiML, and what changed."""
    before = _snapshot(session, phone)
    sid = _demo_sid()
    reply = handle_inbound(
        session,
        clock=clock,
        message_sid=sid,
        from_phone=phone,
        to_phone=texting_number,
        body=body,
        default_program_name=program_name,
    )
    record = session.scalar(select(InboundMessage).where(InboundMessage.message_sid == sid))
    assert record is not None
    after = _snapshot(session, phone)
    return DemoAnswer(
        inbound_id=record.id,
        phone=phone,
        body=body,
        intent=record.intent,
        reply=reply,
        effects=_effects(before, after, record.intent),
    )
