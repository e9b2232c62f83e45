"""What coordinators see and do about a patient's text messages: the consent of each number
(the patient's and their caregivers'), with its history; recording a consent given by
phone or on paper; clearing a number flagged by the provider; the texts sent and received
about the patient; reminders sent from the worklist.

Consent belongs to a number (see `consent.py`); here it is read per patient: one row per
number on the record, listing everyone on the record who has it."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from coordination.texting.by_hand import ManualOutcome, send_reminders_now
from coordination.texting.consent import clear_flag, consents_of, opt_in, opt_out
from coordination.texting.consent import opt_in_wording as consent_wording
from coordination.texting.consent_scope import (
    SHARED_NUMBER_REFUSAL,
    numbers_used_outside,
    visible_recorders,
)
from coordination.texting.models import (
    ConsentHow,
    ConsentStatus,
    MessageStatus,
    OutboundMessage,
    SmsConsentEvent,
)
from coordination.texting.rules import program_values
from coordination.texting.words import ONE_OFF, render
from coordination.worklist.timeline import PRIVATE_PURPOSES, replies_for_patient
from core.audit.service import Actor, record_event
from core.caregivers import caregiver_links
from core.clock import Clock
from core.identity.access import scope_patients
from core.identity.models import User
from core.models import Caregiver, CaregiverLink, Patient, State
from core.text import N_

# How many texts (sent and received together) the texts page shows.
CONVERSATION_LENGTH = 100
MAX_REMIND_PATIENTS = 500
_ARRIVED = (MessageStatus.SENT, MessageStatus.DELIVERED)


class TextsError(ValueError):
    """A coordinator's request about texts is refused; the message (a msgid) says why."""


class ConsentState(enum.StrEnum):
    """A number's consent as coordinators speak of it."""

    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"
    NEVER_ASKED = "never_asked"


def opt_in_wording(state: State, language: str) -> str:
    """The standard opt-in wording a coordinator reads out (or hands over on paper), in
    `language` (English unless Spanish), naming the state's program. The words are the
    ones every consent box shows (`consent.OPT_IN_WORDING`): one wording, wherever agreed."""
    return consent_wording(language=language, program=state.program_name)


# --- the numbers on a patient's record --------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """Someone on the patient's record who has a number."""

    name: str
    language: str
    caregiver_id: int | None  # None: the patient
    relationship: str | None = None
    gets_reminders: bool = True  # the patient always; a caregiver with the right

    @property
    def is_patient(self) -> bool:
        return self.caregiver_id is None


@dataclass(frozen=True)
class ConsentEventView:
    """One line of a number's consent history."""

    at: datetime
    action: str  # opt_in, opt_out, help
    how: str  # portal, coordinator, sms_keyword, provider_21610
    by: str | None  # the person who recorded it (a coordinator, the patient in the portal)
    wording: str | None


@dataclass(frozen=True)
class NumberView:
    """One number on the patient's record: who has it, its consent, flag and history."""

    phone: str
    holders: tuple[Holder, ...]
    status: ConsentState
    problem_code: str | None
    problem_at: datetime | None
    history: tuple[ConsentEventView, ...]
    wording: str  # the standard opt-in wording, in the language of the number's first holder
    # Someone outside the coordinator's scope uses the number: its consent is not theirs to
    # change, and changes recorded outside their scope are left out of `history`.
    used_outside: bool = False
    hidden_history: int = 0  # how many changes were left out

    @property
    def language(self) -> str:
        return self.holders[0].language

    @property
    def gets_texts(self) -> bool:
        """Would a text from a coordinator go to this number (someone gets reminders)?"""
        return any(holder.gets_reminders for holder in self.holders)


def _holders(patient: Patient, links: Iterable[CaregiverLink]) -> dict[str, list[Holder]]:
    found: dict[str, list[Holder]] = {}
    if patient.mobile_phone:
        found[patient.mobile_phone] = [
            Holder(
                name=f"{patient.given_name} {patient.family_name}",
                language=patient.preferred_language.value,
                caregiver_id=None,
            )
        ]
    for link in sorted(links, key=lambda item: item.caregiver_id):
        caregiver: Caregiver = link.caregiver
        if caregiver.mobile_phone:
            found.setdefault(caregiver.mobile_phone, []).append(
                Holder(
                    name=caregiver.full_name,
                    language=caregiver.preferred_language.value,
                    caregiver_id=caregiver.id,
                    relationship=link.relationship_label,
                    gets_reminders=link.can_receive_reminders,
                )
            )
    return found


def _who(user: User | None) -> str | None:
    return (user.display_name or user.login) if user is not None else None


def numbers_of_patient(
    session: Session, *, patient: Patient, viewer: User | None = None, with_history: bool = True
) -> list[NumberView]:
    """The patient's number, then each linked caregiver's (a shared number once), with
    consent and flag. For a coordinator `viewer`, also whether someone outside their scope
    uses each number and (unless `with_history` is False) the history, oldest first, as far
    as it is theirs to see (`consent_scope`); without a viewer, no history.
    A fixed number of queries whatever the history."""
    holders = _holders(patient, caregiver_links(session, patient_id=patient.id))
    if not holders:
        return []
    phones = list(holders)
    consents = consents_of(session, phones=phones)
    history: dict[str, list[ConsentEventView]] = {phone: [] for phone in phones}
    hidden: dict[str, int] = dict.fromkeys(phones, 0)
    used_outside: set[str] = set()
    if viewer is not None:
        used_outside = numbers_used_outside(session, user=viewer, phones=phones)
    if viewer is not None and with_history:
        recorder = aliased(User)
        rows: list[tuple[SmsConsentEvent, User | None]] = [
            (event, user)
            for event, user in session.execute(
                select(SmsConsentEvent, recorder)
                .outerjoin(recorder, recorder.id == SmsConsentEvent.by_user_id)
                .where(SmsConsentEvent.phone.in_(phones))
                .order_by(SmsConsentEvent.at, SmsConsentEvent.id)
            )
        ]
        shown = visible_recorders(
            session, viewer=viewer, recorders={user for _, user in rows if user is not None}
        )
        for event, user in rows:
            if user is not None and user.id not in shown:
                hidden[event.phone] += 1
                continue
            history[event.phone].append(
                ConsentEventView(
                    at=event.at,
                    action=event.action.value,
                    how=event.how.value,
                    by=_who(user),
                    wording=event.wording,
                )
            )
    views = []
    for phone, people in holders.items():
        consent = consents.get(phone)
        if consent is None:
            status = ConsentState.NEVER_ASKED
        elif consent.status is ConsentStatus.OPTED_IN:
            status = ConsentState.OPTED_IN
        else:
            status = ConsentState.OPTED_OUT
        views.append(
            NumberView(
                phone=phone,
                holders=tuple(people),
                status=status,
                problem_code=consent.problem_code if consent is not None else None,
                problem_at=consent.problem_at if consent is not None else None,
                history=tuple(history[phone]),
                wording=opt_in_wording(patient.state, people[0].language),
                used_outside=phone in used_outside,
                hidden_history=hidden[phone],
            )
        )
    return views


def _number_to_change(
    session: Session, *, patient: Patient, phone: str, viewer: User
) -> NumberView:
    """The number on the patient's record whose consent `viewer` is about to change;
    TextsError when it is not on the record, or someone outside the viewer's scope uses it
    (consent is per number: the change would change their texts too)."""
    for view in numbers_of_patient(session, patient=patient, viewer=viewer, with_history=False):
        if view.phone == phone.strip():
            if view.used_outside:
                raise TextsError(SHARED_NUMBER_REFUSAL)
            return view
    raise TextsError(N_("This number is not on the patient's record any more. Reload the page."))


def _holder_kind(view: NumberView) -> str:
    return "patient" if view.holders[0].is_patient else "caregiver"


def record_consent(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    phone: str,
    agreed: bool,
    viewer: User,
) -> SmsConsentEvent:
    """A coordinator (`viewer`) records the answer a person gave by phone or on paper:
    agreed to the standard opt-in wording (recorded with it, in their language) or asked to
    stop. TextsError when `phone` is not a number on the patient's record, or someone
    outside the coordinator's scope uses it."""
    view = _number_to_change(session, patient=patient, phone=phone, viewer=viewer)
    if agreed:
        event = opt_in(
            session,
            clock=clock,
            phone=view.phone,
            how=ConsentHow.COORDINATOR,
            by_user_id=actor.user_id,
            wording=view.wording,
        )
    else:
        event = opt_out(
            session,
            clock=clock,
            phone=view.phone,
            how=ConsentHow.COORDINATOR,
            by_user_id=actor.user_id,
        )
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="sms.consent",
        patient_id=patient.id,
        detail={"action": event.action.value, "holder": _holder_kind(view)},
    )
    return event


def clear_number_flag(
    session: Session, *, clock: Clock, actor: Actor, patient: Patient, phone: str, viewer: User
) -> None:
    """A coordinator (`viewer`) checked a number the provider refused for good: texts may
    go to it again. TextsError when the number is not on the record, carries no flag, or
    someone outside the coordinator's scope uses it."""
    view = _number_to_change(session, patient=patient, phone=phone, viewer=viewer)
    if view.problem_code is None:
        raise TextsError(N_("This number has no flag to clear."))
    clear_flag(session, phone=view.phone)
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="sms.clear_flag",
        patient_id=patient.id,
        detail={"code": view.problem_code, "holder": _holder_kind(view)},
    )


# --- the approved one-off texts -----------------------------------------------------------


@dataclass(frozen=True)
class OneOffChoice:
    key: str
    title: str  # msgid
    text: str  # as the patient would read it


def one_off_choices(patient: Patient) -> list[OneOffChoice]:
    """The approved one-off texts, each as it reads in the patient's language."""
    state = patient.state
    values = program_values(state)
    language = patient.preferred_language.value
    return [
        OneOffChoice(key=key, title=template.title, text=render(template, language, **values))
        for key, template in ONE_OFF.items()
    ]


# --- the texts sent and received ---------------------------------------------------------


@dataclass(frozen=True)
class TextView:
    """One text about the patient, sent (`outgoing`) or received."""

    at: datetime
    outgoing: bool
    ref_id: int
    phone: str  # the recipient of a sent text, the sender of a received one
    body: str | None  # None when private (an invitation link, a reset code)
    private: bool = False
    purpose: str | None = None
    rule: str | None = None
    status: str | None = None
    send_after: datetime | None = None
    sent_at: datetime | None = None
    error: str | None = None
    drop_reason: str | None = None
    requested_by: str | None = None
    intent: str | None = None
    handled_note: str | None = None


def texts_about_patient(
    session: Session, *, patient_id: int, limit: int = CONVERSATION_LENGTH
) -> list[TextView]:
    """The newest `limit` texts sent about the patient and received from their numbers,
    newest first. Two queries."""
    requester = aliased(User)
    sent = session.execute(
        select(OutboundMessage, requester)
        .outerjoin(requester, requester.id == OutboundMessage.requested_by_user_id)
        .where(OutboundMessage.patient_id == patient_id)
        .order_by(OutboundMessage.created_at.desc(), OutboundMessage.id.desc())
        .limit(limit)
    )
    views = []
    for message, user in sent:
        private = message.purpose in PRIVATE_PURPOSES
        views.append(
            TextView(
                at=message.created_at,
                outgoing=True,
                ref_id=message.id,
                phone=message.to_phone,
                body=None if private else message.body,
                private=private,
                purpose=message.purpose.value,
                rule=message.rule,
                status=message.status.value,
                send_after=message.send_after,
                sent_at=message.sent_at,
                # A sent text may keep the error of an earlier attempt: not worth showing.
                error=None if message.status in _ARRIVED else message.last_error,
                drop_reason=message.drop_reason,
                requested_by=_who(user),
            )
        )
    for reply in replies_for_patient(session, patient_id=patient_id, limit=limit):
        views.append(
            TextView(
                at=reply.received_at,
                outgoing=False,
                ref_id=reply.id,
                phone=reply.from_phone,
                body=reply.body,
                intent=reply.intent,
                handled_note=reply.handled_note,
            )
        )
    views.sort(key=lambda view: (view.at, view.outgoing is False, view.ref_id), reverse=True)
    return views[:limit]


# --- reminders from the worklist -------------------------------------------------------------


@dataclass(frozen=True)
class PatientReminder:
    """What "send reminder now" did for one patient (no outcomes: no visit to remind of)."""

    patient_id: int
    name: str
    outcomes: tuple[ManualOutcome, ...]

    @property
    def queued(self) -> int:
        return sum(1 for outcome in self.outcomes if outcome.queued)

    @property
    def refused(self) -> tuple[ManualOutcome, ...]:
        return tuple(outcome for outcome in self.outcomes if not outcome.queued)


def remind_patients(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    user: User,
    patient_ids: Sequence[int],
) -> list[PatientReminder]:
    """ "Send reminder now" for each chosen patient (all in `user`'s scope, or TextsError
    and nothing is queued), each within consent, texting hours and the caps."""
    ids = sorted(set(patient_ids))
    if not ids:
        raise TextsError(N_("Choose at least one patient."))
    if len(ids) > MAX_REMIND_PATIENTS:
        raise TextsError(N_("Choose at most 500 patients at a time."))
    patients = list(
        session.scalars(
            scope_patients(select(Patient), user).where(Patient.id.in_(ids)).order_by(Patient.id)
        )
    )
    if len(patients) != len(ids):
        # Out of scope and nonexistent look the same.
        raise TextsError(N_("Some of the chosen patients are not on your worklist."))
    # Read for the whole selection at once (a fixed number of queries), decided and
    # audited patient by patient.
    outcomes = send_reminders_now(session, clock=clock, actor=actor, patients=patients)
    return [
        PatientReminder(
            patient_id=patient.id,
            name=f"{patient.given_name} {patient.family_name}",
            outcomes=tuple(outcomes[patient.id]),
        )
        for patient in patients
    ]
