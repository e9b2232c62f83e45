"""Coordinators assign a module to a patient or to a caregiver of theirs (the reader's own
login), with an optional due date, and may text them that there is something new to read.

The text goes through the outbox, bound by consent, the state's texting hours and the caps
like every text a coordinator sends (the dispatcher checks them again before it leaves). Its
words are an approved template and its link is the generic reading list (`/learn`): a
module's key or title ("fertility") in an SMS would tell whoever sees the phone something
about the reader's health."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.texting.by_hand import texting_refusal
from coordination.texting.models import MessagePurpose, MessageStatus, OutboundMessage
from coordination.texting.rules import FOLLOWED, Recipient, TextingHours
from coordination.texting.words import Template, render
from core.audit.service import Actor, record_event
from core.clock import Clock, local_today
from core.dates import parse_day
from core.errors import FieldErrors
from core.identity.models import Role, User
from core.ids import parse_id
from core.models import Caregiver, CaregiverLink, Patient, State
from core.text import N_
from education.content import ModuleLibrary, shipped_modules
from education.funding import MAX_YEAR
from education.models import ModuleAssignment
from education.offer import offered_modules_by_user

EDUCATION_RULE = "education"
LEARN_PATH = "/learn"

# The one text this file sends. It names no module: the link is the reader's list.
NEW_READING = Template(
    key=EDUCATION_RULE,
    title=N_("A new reading in the portal"),
    en="{program}: there is a new reading for you in your portal: {url} Reply STOP to opt out.",
    es="{program}: hay una nueva lectura para usted en su portal: {url} "
    "Responda PARAR para no recibir más.",
)


def learn_url(public_base_url: str) -> str:
    return public_base_url.rstrip("/") + LEARN_PATH


def reading_text(*, program: str, public_base_url: str, language: str) -> str:
    """The body of the text, in `language`."""
    return render(NEW_READING, language, program=program, url=learn_url(public_base_url))


# --- who may be assigned a reading -------------------------------------------------------------


@dataclass(frozen=True)
class ReaderChoice:
    """A login that reads for (or as) a patient: the patient's own, or a linked caregiver's."""

    user: User
    name: str
    relationship: str | None  # a caregiver's relationship to the patient
    caregiver: Caregiver | None
    link: CaregiverLink | None

    @property
    def is_caregiver(self) -> bool:
        return self.caregiver is not None

    @property
    def role(self) -> str:
        return "caregiver" if self.is_caregiver else "patient"


def readers_of_patient(session: Session, *, patient: Patient) -> list[ReaderChoice]:
    """The patient's own login, then each linked caregiver's, that has a portal account."""
    choices: list[ReaderChoice] = []
    own = session.scalar(
        select(User).where(
            User.patient_id == patient.id, User.role == Role.PATIENT, User.is_active.is_(True)
        )
    )
    if own is not None:
        choices.append(ReaderChoice(own, patient.full_name, None, None, None))
    rows = session.execute(
        select(User, Caregiver, CaregiverLink)
        .join(Caregiver, Caregiver.id == User.caregiver_id)
        .join(CaregiverLink, CaregiverLink.caregiver_id == Caregiver.id)
        .where(
            CaregiverLink.patient_id == patient.id,
            User.role == Role.CAREGIVER,
            User.is_active.is_(True),
        )
        .order_by(Caregiver.given_name, Caregiver.id)
    )
    for user, caregiver, link in rows:
        choices.append(
            ReaderChoice(user, caregiver.full_name, link.relationship_label, caregiver, link)
        )
    return choices


@dataclass(frozen=True)
class ModuleChoice:
    key: str
    title: str


def assignable_modules(
    session: Session,
    *,
    clock: Clock,
    patient: Patient,
    reader: ReaderChoice,
    language: str,
    library: ModuleLibrary | None = None,
) -> list[ModuleChoice]:
    """The modules this reader can read about this patient: those offered to them (fitting
    their audience and therapy, core or funded by their state today, or already begun) that
    fit the patient's therapy — a caregiver helping someone else on another therapy is not
    shown it here (nor is that other patient's therapy given away), by title."""
    return assignable_modules_by_reader(
        session,
        clock=clock,
        patient=patient,
        readers=[reader],
        language=language,
        library=library,
    )[reader.user.id]


def assignable_modules_by_reader(
    session: Session,
    *,
    clock: Clock,
    patient: Patient,
    readers: Sequence[ReaderChoice],
    language: str,
    library: ModuleLibrary | None = None,
) -> dict[int, list[ModuleChoice]]:
    """user id -> `assignable_modules` of each of the patient's readers, the offer worked
    out once for them all (the patient's page: a fixed number of queries, however many
    caregivers)."""
    offered = offered_modules_by_user(
        session,
        users=[choice.user for choice in readers],
        clock=clock,
        library=library,
        language=language,
    )
    therapy = patient.therapy.code
    return {
        user_id: sorted(
            (
                ModuleChoice(item.key, item.text.title)
                for item in items
                if item.module.for_therapy(therapy)
            ),
            key=lambda choice: choice.title.casefold(),
        )
        for user_id, items in offered.items()
    }


# --- the text ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextOutcome:
    queued: bool
    reason: str | None  # a msgid (maybe with values) saying why nothing was queued
    message: OutboundMessage | None = None


def _refusal(
    session: Session, *, clock: Clock, patient: Patient, reader: ReaderChoice, state: State
) -> str | None:
    """Why the reader may not be texted now (None: they may). The same rules, in the same
    words, as a coordinator's one-off text (coordination.texting.by_hand.texting_refusal)."""
    if patient.status not in FOLLOWED:
        return N_("The patient is no longer followed: no text is sent.")
    person = reader.caregiver
    phone = person.mobile_phone if person is not None else patient.mobile_phone
    zone = person.time_zone if person is not None else patient.time_zone
    if not phone:
        return N_("There is no mobile number for this person.")
    if reader.link is not None and not reader.link.can_receive_reminders:
        # The dispatcher drops a caregiver's text about a patient without this right.
        return N_("This caregiver does not get texts about this patient (the reminders right).")
    recipient = Recipient(
        phone=phone,
        language=(person or patient).preferred_language.value,
        zone=zone,
        caregiver_id=person.id if person is not None else None,
    )
    return texting_refusal(session, clock=clock, recipient=recipient, hours=TextingHours.of(state))


def text_reading_link(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    reader: ReaderChoice,
    public_base_url: str,
) -> TextOutcome:
    """Queue the "new reading" text to the reader, or say why it may not go."""
    state = session.get(State, patient.state_id)
    assert state is not None
    refusal = _refusal(session, clock=clock, patient=patient, reader=reader, state=state)
    if refusal is not None:
        return TextOutcome(queued=False, reason=refusal)
    person = reader.caregiver
    phone = person.mobile_phone if person is not None else patient.mobile_phone
    language = (
        person.preferred_language if person is not None else patient.preferred_language
    ).value
    assert phone is not None
    now = clock.now()
    message = OutboundMessage(
        to_phone=phone,
        body=reading_text(
            program=state.program_name, public_base_url=public_base_url, language=language
        ),
        purpose=MessagePurpose.ONE_OFF,
        patient_id=patient.id,
        caregiver_id=person.id if person is not None else None,
        rule=EDUCATION_RULE,
        language=language,
        status=MessageStatus.QUEUED,
        created_at=now,
        send_after=now,
        attempts=0,
        requested_by_user_id=actor.user_id,
    )
    session.add(message)
    session.flush()
    return TextOutcome(queued=True, reason=None, message=message)


# --- assigning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssignmentResult:
    assignment: ModuleAssignment
    reader: ReaderChoice
    text: TextOutcome | None  # None when no text was asked for


def _due_day(value: str, *, today: date) -> tuple[date | None, str | None]:
    try:
        day = parse_day(value)
    except ValueError:
        return None, N_("Enter a real date, like 2026-12-31, or leave it empty.")
    if day is None:
        return None, None
    if day < today:
        return None, N_("The due date cannot be in the past.")
    if day.year > MAX_YEAR:
        return None, N_("Enter a real date, like 2026-12-31, or leave it empty.")
    return day, None


def assign_module(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    reader_user_id: str,
    module_key: str,
    due_on: str,
    send_text: bool,
    public_base_url: str,
    language: str,
    library: ModuleLibrary | None = None,
    readers: Sequence[ReaderChoice] | None = None,
) -> AssignmentResult:
    """Assign a module to one of the patient's readers (values as typed in the form) and,
    when asked, text them the link. FieldErrors (keyed by the reader's user id, for the
    form of that reader) says what to fix; a text that may not go does not stop the
    assignment: the outcome says why it was not sent."""
    library = library or shipped_modules()
    if readers is None:
        readers = readers_of_patient(session, patient=patient)
    wanted = parse_id(reader_user_id)
    reader = next((choice for choice in readers if choice.user.id == wanted), None)
    if reader is None:
        raise FieldErrors({"reader": N_("Choose who should read it.")})
    errors: dict[str, str] = {}
    key = module_key.strip()
    choices = assignable_modules(
        session, clock=clock, patient=patient, reader=reader, language=language, library=library
    )
    if not key:
        errors["module_key"] = N_("Choose a module.")
    elif key not in {choice.key for choice in choices}:
        errors["module_key"] = N_("This module is not offered to this reader.")
    state = session.get(State, patient.state_id)
    assert state is not None
    due, problem = _due_day(due_on, today=local_today(clock, state.time_zone))
    if problem is not None:
        errors["due_on"] = problem
    if errors:
        raise FieldErrors(errors)
    assignment = ModuleAssignment(
        module_key=key,
        user_id=reader.user.id,
        patient_id=patient.id,
        due_on=due,
        assigned_at=clock.now(),
        assigned_by_user_id=actor.user_id,
    )
    session.add(assignment)
    session.flush()
    text: TextOutcome | None = None
    if send_text:
        text = text_reading_link(
            session,
            clock=clock,
            actor=actor,
            patient=patient,
            reader=reader,
            public_base_url=public_base_url,
        )
        if text.message is not None:
            assignment.message_id = text.message.id
            session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="education.assigned",
        patient_id=patient.id,
        target=f"module:{key}",
        detail={
            "reader": reader.role,
            "due": due is not None,
            "texted": bool(text and text.queued),
            "text_refused": bool(text and not text.queued),
        },
    )
    return AssignmentResult(assignment=assignment, reader=reader, text=text)
