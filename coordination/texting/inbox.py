"""The care team's inbox: the texts a person must read (a message for the care team, or a
C or R the platform could not act on and answered "a person from the care team will
call you"), one item per patient a text may be about (`inbound._file_for_care_team`).

A coordinator sees an item only for a patient in their scope, and the item's page names
only that patient: a number shared by patients of two states shows each state's
coordinators their own patient, never the other. They mark it handled (who, when, an
optional note; audited), or answer it by text: a free reply, to the number that wrote
only, through the rules of texts sent by hand (`by_hand.send_reply`: consent, texting
hours, the caps, and the words' checks). Handling closes the items of the same text for
the patients in the coordinator's scope; another state's item stays for its own team."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.texting.by_hand import ManualOutcome, send_reply, texting_refusal
from coordination.texting.consent import consent_of
from coordination.texting.models import (
    ConsentStatus,
    InboundMessage,
    InboxItem,
    OutboundMessage,
)
from coordination.texting.rules import Recipient, TextingHours
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.identity.access import scope_patients
from core.identity.models import User
from core.models import Caregiver, CaregiverLink, Patient
from core.text import N_

NOTE_MAX = 500
REPLY_MAX = 1000  # far more than two segments: the length check says by how much


class InboxError(ValueError):
    """A coordinator's action on an inbox item is refused; the message (a msgid) says why."""


class ReplyWordsError(InboxError):
    """The reply's words may not go as typed (`by_hand.reply_problem`)."""


@dataclass(frozen=True)
class Sender:
    """Who the number that wrote is on the patient's record (never anyone else's)."""

    name: str
    caregiver_id: int | None  # None: the patient
    relationship: str | None
    language: str
    zone: str

    @property
    def is_patient(self) -> bool:
        return self.caregiver_id is None


@dataclass(frozen=True)
class InboxItemView:
    """One item as its page shows it."""

    item: InboxItem
    message: InboundMessage
    senders: tuple[Sender, ...]  # on this patient's record; empty: no longer on it
    consent: ConsentStatus | None
    handled_by: str | None
    reply: OutboundMessage | None
    refusal: str | None  # why a reply could not go now (msgid), None when it could

    @property
    def handled(self) -> bool:
        return self.item.handled_at is not None

    @property
    def can_reply(self) -> bool:
        return not self.handled and bool(self.senders)


def item_of(session: Session, *, item_id: int, patient_id: int) -> InboxItem | None:
    """The item, if it is this patient's (another patient's item is as good as missing)."""
    item = session.get(InboxItem, item_id)
    return item if item is not None and item.patient_id == patient_id else None


def senders_of(session: Session, *, patient: Patient, phone: str) -> list[Sender]:
    """Who has `phone` on the patient's record: the patient, then linked caregivers (by id).
    One query."""
    found = []
    if patient.mobile_phone == phone:
        found.append(
            Sender(
                name=f"{patient.given_name} {patient.family_name}",
                caregiver_id=None,
                relationship=None,
                language=patient.preferred_language.value,
                zone=patient.time_zone,
            )
        )
    for link, caregiver in session.execute(
        select(CaregiverLink, Caregiver)
        .join(Caregiver, Caregiver.id == CaregiverLink.caregiver_id)
        .where(CaregiverLink.patient_id == patient.id, Caregiver.mobile_phone == phone)
        .order_by(Caregiver.id)
    ):
        found.append(
            Sender(
                name=caregiver.full_name,
                caregiver_id=caregiver.id,
                relationship=link.relationship_label,
                language=caregiver.preferred_language.value,
                zone=caregiver.time_zone,
            )
        )
    return found


def _recipient(phone: str, sender: Sender) -> Recipient:
    """The reply goes to the number that wrote, in its first holder's language and zone."""
    return Recipient(phone, sender.language, sender.zone, sender.caregiver_id)


def item_view(
    session: Session, *, clock: Clock, item: InboxItem, patient: Patient
) -> InboxItemView:
    """What the item's page shows: the text, who wrote it (on this patient's record), the
    number's consent, whether a reply could go now, and how it was handled."""
    message = session.get(InboundMessage, item.inbound_message_id)
    assert message is not None
    senders = senders_of(session, patient=patient, phone=message.from_phone)
    consent = consent_of(session, phone=message.from_phone)
    handler = session.get(User, item.handled_by_user_id) if item.handled_by_user_id else None
    reply = session.get(OutboundMessage, item.reply_message_id) if item.reply_message_id else None
    refusal = None
    if item.handled_at is None and senders:
        refusal = texting_refusal(
            session,
            clock=clock,
            recipient=_recipient(message.from_phone, senders[0]),
            hours=TextingHours.of(patient.state),
        )
    return InboxItemView(
        item=item,
        message=message,
        senders=tuple(senders),
        consent=consent.status if consent is not None else None,
        handled_by=(handler.display_name or handler.login) if handler is not None else None,
        reply=reply,
        refusal=refusal,
    )


def mark_handled(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    user: User,
    item: InboxItem,
    note: str = "",
    reply_message_id: int | None = None,
) -> list[InboxItem]:
    """A coordinator has dealt with the text: its items for the patients in `user`'s scope
    are handled (who, when, the optional note, the reply sent), each audited. Items of
    the same text for patients outside the scope stay for their own coordinators.
    InboxError when it is handled already or the note is too long."""
    note = note.strip()
    if len(note) > NOTE_MAX:
        raise InboxError(N_("Use at most 500 characters."))
    if item.handled_at is not None:
        raise InboxError(N_("This message is already handled."))
    in_scope = scope_patients(select(Patient.id), user)
    items = list(
        session.scalars(
            select(InboxItem)
            .where(
                InboxItem.inbound_message_id == item.inbound_message_id,
                InboxItem.handled_at.is_(None),
                InboxItem.patient_id.in_(in_scope.scalar_subquery()),
            )
            .order_by(InboxItem.id)
        )
    )
    now = clock.now()
    for handled in items:
        handled.handled_at = now
        handled.handled_by_user_id = actor.user_id
        handled.handled_note = note or None
        handled.reply_message_id = reply_message_id
        record_event(
            session,
            clock=clock,
            actor=actor,
            action="inbox.handled",
            patient_id=handled.patient_id,
            target=f"inbox:{handled.id}",
            detail={"note": bool(note), "replied": reply_message_id is not None},
        )
    session.flush()
    return items


def reply_to_item(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    user: User,
    item: InboxItem,
    patient: Patient,
    text: str,
    note: str = "",
) -> ManualOutcome:
    """Answer the text by text, to the number that wrote only, as a coordinator's reply
    (`by_hand.send_reply`: consent, texting hours, caps, the words' checks); once it is
    queued the item is handled (with the note). A refused reply changes nothing and says
    why (the outcome's reason). InboxError (a msgid) when the item is handled or the number
    is no longer on the patient's record; ReplyWordsError when the words may not go."""
    if item.handled_at is not None:
        raise InboxError(N_("This message is already handled."))
    if len(note.strip()) > NOTE_MAX:
        raise InboxError(N_("Use at most 500 characters."))
    message = session.get(InboundMessage, item.inbound_message_id)
    assert message is not None
    senders = senders_of(session, patient=patient, phone=message.from_phone)
    if not senders:
        raise InboxError(
            N_("This number is no longer on the patient's record: a reply cannot go to it.")
        )
    try:
        outcome = send_reply(
            session,
            clock=clock,
            actor=actor,
            patient=patient,
            recipient=_recipient(message.from_phone, senders[0]),
            text=text,
            names=[part for sender in senders for part in sender.name.split()],
        )
    except ValueError as problem:
        raise ReplyWordsError(problem.args[0]) from problem
    if outcome.queued:
        mark_handled(
            session,
            clock=clock,
            actor=actor,
            user=user,
            item=item,
            note=note,
            reply_message_id=outcome.message_id,
        )
    return outcome


@dataclass(frozen=True)
class HandledEntry:
    """An item of the patient's that a coordinator handled, for the timeline."""

    item_id: int
    at: datetime
    by: str | None
    note: str | None
    body: str  # the text that was handled
    reply: str | None  # the words of the reply sent, if any


def handled_for_patient(session: Session, *, patient_id: int, limit: int) -> list[HandledEntry]:
    """The patient's handled items, newest first (one query)."""
    rows = session.execute(
        select(InboxItem, InboundMessage.body, User, OutboundMessage.body)
        .join(InboundMessage, InboundMessage.id == InboxItem.inbound_message_id)
        .outerjoin(User, User.id == InboxItem.handled_by_user_id)
        .outerjoin(OutboundMessage, OutboundMessage.id == InboxItem.reply_message_id)
        .where(InboxItem.patient_id == patient_id, InboxItem.handled_at.is_not(None))
        .order_by(InboxItem.handled_at.desc(), InboxItem.id.desc())
        .limit(limit)
    )
    entries = []
    for item, body, user, reply in rows:
        assert item.handled_at is not None
        entries.append(
            HandledEntry(
                item_id=item.id,
                at=item.handled_at,
                by=(user.display_name or user.login) if user is not None else None,
                note=item.handled_note,
                body=body,
                reply=reply,
            )
        )
    return entries
