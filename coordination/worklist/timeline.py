"""One timeline of a patient's follow-up, newest first: what happened to their visits, the
outcomes recorded, what they reported, their requests to move a visit, the coordinators'
outreach notes, the texts sent to them, the texts received from their numbers, how the
care team handled those that waited for a person, and the steps of their travel requests.

Read with a fixed number of queries (one per source, whatever the number of rows), so the
record page costs the same for a patient with five visits and one with thirty. Every entry
is placed at the instant it entered the record (a visit completed today for last week shows
today, with the visit's date in it)."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, or_, select, union
from sqlalchemy.orm import Session, aliased

from coordination.followup.calendar import visit_label
from coordination.followup.models import (
    MoveRequest,
    OutreachNote,
    PatientReport,
    Visit,
    VisitEvent,
    VisitObservation,
)
from coordination.followup.protocol import ProtocolLibrary
from coordination.texting.inbox import handled_for_patient
from coordination.texting.models import InboundMessage, InboxItem, MessagePurpose
from coordination.texting.outbox import messages_for_patient
from coordination.travel.record import travel_steps
from core.identity.models import User
from core.models import Caregiver, CaregiverLink, Observation, ObservationRevision, Patient

# Texts that carry a secret (an invitation link, a reset code): the timeline says they
# were sent, never what they said, so that nobody but the recipient can use them.
PRIVATE_PURPOSES = frozenset({MessagePurpose.INVITATION, MessagePurpose.PASSWORD_RESET})

# How many observations to read per timeline entry asked for (a visit's outcomes are grouped
# into one entry; a visit records at most about eight measures).
_OBSERVATIONS_PER_ENTRY = 8


class TimelineKind(enum.StrEnum):
    VISIT = "visit"  # a change in a visit's life
    OUTCOME = "outcome"  # observations recorded (at a visit, or on their own)
    REPORT = "report"  # the patient or a caregiver reported an event
    MOVE_REQUEST = "move_request"  # the patient or a caregiver asked to move a visit
    NOTE = "note"  # a coordinator's outreach note
    MESSAGE = "message"  # a text sent to the patient or a caregiver
    REPLY = "reply"  # a text received from the patient's or a caregiver's number
    HANDLED = "handled"  # a coordinator handled a text of the inbox (or answered it)
    TRAVEL = "travel"  # a step of a travel support request (asked, approved, arranged...)


# Entries at the same instant are shown in this order (newest first means: the last of
# these on top), so that "completed" sits above the outcomes it came with.
# A reply sits below what it caused (a confirmed visit, a move request).
_RANK = {
    TimelineKind.MESSAGE: 0,
    TimelineKind.REPLY: 1,
    TimelineKind.MOVE_REQUEST: 2,
    TimelineKind.TRAVEL: 2,
    TimelineKind.REPORT: 3,
    TimelineKind.NOTE: 4,
    TimelineKind.OUTCOME: 5,
    TimelineKind.VISIT: 6,
    TimelineKind.HANDLED: 7,
}

# VisitEvent.action -> what the timeline and the visit history call it.
_EVENT_ACTIONS = {
    "confirm": "confirmed",
    "complete": "completed",
    "miss": "missed",
    "cancel": "cancelled",
    "move_window": "window_moved",
    "acknowledge": "acknowledged",
    "reopen": "reopened",
}


def event_action(event: VisitEvent) -> str:
    """What happened, as a word for people: booked, rescheduled (an appointment moved),
    confirmed, completed, missed, cancelled, window_moved, acknowledged, reopened."""
    if event.action == "book":
        return "booked" if event.from_status == "due" else "rescheduled"
    return _EVENT_ACTIONS.get(event.action, event.action)


@dataclass(frozen=True)
class ShownValue:
    """One observation, ready to show."""

    code_system: str
    code: str
    display: str
    quantity: Decimal | None
    unit: str | None
    boolean: bool | None
    text: str | None
    source: str
    status: str = "final"  # FHIR's Observation.status: corrected, entered-in-error...

    @property
    def shown(self) -> str | None:
        """The value as text (numbers without trailing zeros); None for a yes/no value."""
        if self.quantity is not None:
            return format(self.quantity.normalize(), "f")
        return self.text


@dataclass(frozen=True)
class TimelineEntry:
    """One line of the timeline. Which fields are set depends on `kind`:

    - visit: `action` (booked, rescheduled, confirmed, completed, missed, cancelled,
      window_moved, acknowledged), `reason`, `appointment_at` and `outside_window`
      (booked/rescheduled), `on` (completed: the visit's date; window_moved: the new
      target day);
    - outcome: `values`, `on` (the day they are effective), `visit_id` when recorded at a visit;
    - report: `action` (the kind of event), `on` (when it happened), `text`, `status`;
    - move_request: `on` (the preferred date), `text`, `status`;
    - note: `action` (the channel), `status` (the outcome), `text`, `next_step`;
    - message: `action` (the purpose), `status`, `text` (None when private), `error`,
      `reason` (why it was dropped), `to_phone`;
    - reply: `action` (the intent the platform read: stop, start, help, confirm,
      reschedule, other), `text` (the body), `reason` (what the platform did), `from_phone`,
      `status` ("waiting" while it waits in the inbox for a person, "handled" after) and
      `inbox_id` (the inbox item, for a link);
    - handled: `actor` (the coordinator), `reason` (their note), `text` (the text handled),
      `next_step` (the words of the reply sent, if any), `inbox_id`;
    - travel: `action` (the step: requested, approved, declined, booked, booking_cancelled,
      arranged, flagged, reviewed), `kinds` (asked or booked), `reason` (flagged: "moved" or
      "cancelled"; declined: the reason the patient reads). Never a cost or a need.
    """

    at: datetime
    kind: TimelineKind
    ref_id: int
    action: str = ""
    actor: str | None = None
    system: bool = False
    visit_id: int | None = None
    visit_key: str | None = None
    on: date | None = None
    appointment_at: datetime | None = None
    appointment_zone: str | None = None
    reason: str | None = None
    text: str | None = None
    next_step: str | None = None
    status: str | None = None
    private: bool = False
    to_phone: str | None = None
    from_phone: str | None = None
    error: str | None = None
    values: tuple[ShownValue, ...] = ()
    # booked/rescheduled: the coordinator confirmed a day outside the visit's window.
    outside_window: bool = False
    inbox_id: int | None = None
    kinds: tuple[str, ...] = ()

    def sort_key(self) -> tuple[datetime, int, int]:
        return (self.at, _RANK[self.kind], self.ref_id)


def _who(user: User | None, fallback: str | None = None) -> str | None:
    if user is not None:
        return user.display_name or user.login
    return fallback


def _parse_instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _parse_day(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _visit_entries(
    session: Session,
    *,
    patient_id: int | None = None,
    visit_id: int | None = None,
    limit: int | None = None,
    newest_first: bool = True,
) -> list[TimelineEntry]:
    query = (
        select(VisitEvent, Visit.visit_key, Visit.appointment_zone, User)
        .join(Visit, Visit.id == VisitEvent.visit_id)
        .outerjoin(User, User.id == VisitEvent.actor_user_id)
    )
    if patient_id is not None:
        query = query.where(Visit.patient_id == patient_id)
    if visit_id is not None:
        query = query.where(VisitEvent.visit_id == visit_id)
    if newest_first:
        query = query.order_by(VisitEvent.at.desc(), VisitEvent.id.desc())
    else:
        query = query.order_by(VisitEvent.at, VisitEvent.id)
    if limit is not None:
        query = query.limit(limit)
    entries = []
    for event, visit_key, zone, user in session.execute(query).all():
        action = event_action(event)
        detail = event.detail or {}
        on: date | None = None
        appointment: datetime | None = None
        if action in ("booked", "rescheduled"):
            appointment = _parse_instant(detail.get("to"))
        elif action == "completed":
            on = _parse_day(detail.get("completed_on"))
        elif action == "window_moved":
            on = _parse_day(detail.get("to"))
        entries.append(
            TimelineEntry(
                at=event.at,
                kind=TimelineKind.VISIT,
                ref_id=event.id,
                action=action,
                actor=_who(user, event.actor_label),
                system=event.actor_user_id is None,
                visit_id=event.visit_id,
                visit_key=visit_key,
                on=on,
                appointment_at=appointment,
                appointment_zone=zone,
                reason=event.reason,
                outside_window=bool(detail.get("outside_window")),
            )
        )
    return entries


def visit_history_entries(session: Session, *, visit_id: int) -> list[TimelineEntry]:
    """A visit's history, oldest first: what changed, who changed it (by name), when, why.
    One query."""
    return _visit_entries(session, visit_id=visit_id, newest_first=False)


def _value(observation: Observation) -> ShownValue:
    return ShownValue(
        code_system=observation.code_system,
        code=observation.code,
        display=observation.display,
        quantity=observation.value_quantity,
        unit=observation.value_unit,
        boolean=observation.value_boolean,
        text=observation.value_text,
        source=observation.source.value,
        status=observation.status.value,
    )


_ObservationRow = tuple[Observation, int | None, str | None, User | None]


def _outcome_entries(session: Session, *, patient_id: int, limit: int) -> list[TimelineEntry]:
    """Observations; those recorded together at one visit make one entry."""
    rows = session.execute(
        select(Observation, Visit.id, Visit.visit_key, User)
        .outerjoin(VisitObservation, VisitObservation.observation_id == Observation.id)
        .outerjoin(Visit, Visit.id == VisitObservation.visit_id)
        .outerjoin(User, User.id == Observation.recorded_by_user_id)
        .where(Observation.patient_id == patient_id)
        .order_by(Observation.created_at.desc(), Observation.id.desc())
        .limit(limit * _OBSERVATIONS_PER_ENTRY)
    ).all()
    groups: dict[tuple[Any, ...], list[_ObservationRow]] = {}
    for row in rows:
        observation, linked_visit = row[0], row[1]
        # A visit's outcomes are recorded together, by one person from one source.
        key: tuple[Any, ...] = (
            ("visit", linked_visit, observation.source, observation.recorded_by_user_id)
            if linked_visit is not None
            else ("alone", observation.id)
        )
        groups.setdefault(key, []).append((row[0], row[1], row[2], row[3]))
    entries = []
    for members in groups.values():
        first, visit_id, visit_key, user = members[0]
        observations = sorted((member[0] for member in members), key=lambda item: item.id)
        entries.append(
            TimelineEntry(
                at=max(observation.created_at for observation in observations),
                kind=TimelineKind.OUTCOME,
                ref_id=observations[-1].id,
                action=first.source.value,
                actor=_who(user),
                visit_id=visit_id,
                visit_key=visit_key,
                on=first.effective_at.date(),
                values=tuple(_value(observation) for observation in observations),
            )
        )
    return entries


def _report_entries(session: Session, *, patient_id: int, limit: int) -> list[TimelineEntry]:
    rows = session.execute(
        select(PatientReport, User)
        .outerjoin(User, User.id == PatientReport.reported_by_user_id)
        .where(PatientReport.patient_id == patient_id)
        .order_by(PatientReport.reported_at.desc(), PatientReport.id.desc())
        .limit(limit)
    ).all()
    return [
        TimelineEntry(
            at=report.reported_at,
            kind=TimelineKind.REPORT,
            ref_id=report.id,
            action=report.kind.value,
            actor=_who(user),
            on=report.occurred_on,
            text=report.details,
            reason=report.review_note,
            status=report.status.value,
        )
        for report, user in rows
    ]


def _move_request_entries(session: Session, *, patient_id: int, limit: int) -> list[TimelineEntry]:
    rows = session.execute(
        select(MoveRequest, Visit.visit_key, User)
        .join(Visit, Visit.id == MoveRequest.visit_id)
        .outerjoin(User, User.id == MoveRequest.requested_by_user_id)
        .where(MoveRequest.patient_id == patient_id)
        .order_by(MoveRequest.created_at.desc(), MoveRequest.id.desc())
        .limit(limit)
    ).all()
    return [
        TimelineEntry(
            at=request.created_at,
            kind=TimelineKind.MOVE_REQUEST,
            ref_id=request.id,
            action="requested",
            actor=_who(user),
            visit_id=request.visit_id,
            visit_key=visit_key,
            on=request.preferred_date,
            text=request.note,
            status=request.status.value,
        )
        for request, visit_key, user in rows
    ]


def _note_entries(session: Session, *, patient_id: int, limit: int) -> list[TimelineEntry]:
    author = aliased(User)
    rows = session.execute(
        select(OutreachNote, author)
        .outerjoin(author, author.id == OutreachNote.author_user_id)
        .where(OutreachNote.patient_id == patient_id)
        .order_by(OutreachNote.at.desc(), OutreachNote.id.desc())
        .limit(limit)
    ).all()
    return [
        TimelineEntry(
            at=note.at,
            kind=TimelineKind.NOTE,
            ref_id=note.id,
            action=note.channel.value,
            actor=_who(user),
            status=note.outcome.value,
            text=note.note,
            next_step=note.next_step,
        )
        for note, user in rows
    ]


def _message_entries(session: Session, *, patient_id: int, limit: int) -> list[TimelineEntry]:
    entries = []
    for message in messages_for_patient(session, patient_id=patient_id, limit=limit):
        private = message.purpose in PRIVATE_PURPOSES
        entries.append(
            TimelineEntry(
                at=message.created_at,
                kind=TimelineKind.MESSAGE,
                ref_id=message.id,
                action=message.purpose.value,
                status=message.status.value,
                text=None if private else message.body,
                private=private,
                to_phone=message.to_phone,
                error=message.last_error,
                reason=message.drop_reason,
            )
        )
    return entries


def replies_for_patient(
    session: Session, *, patient_id: int, limit: int = 50
) -> list[InboundMessage]:
    """Texts received about the patient, newest first: those the platform tied to the
    patient, and those from the patient's or a linked caregiver's number that it could not
    tie to one patient (a number shared by several). One query."""
    own = select(Patient.mobile_phone).where(
        Patient.id == patient_id, Patient.mobile_phone.is_not(None)
    )
    caregivers = (
        select(Caregiver.mobile_phone)
        .join(CaregiverLink, CaregiverLink.caregiver_id == Caregiver.id)
        .where(CaregiverLink.patient_id == patient_id, Caregiver.mobile_phone.is_not(None))
    )
    return list(
        session.scalars(
            select(InboundMessage)
            .where(
                or_(
                    InboundMessage.patient_id == patient_id,
                    and_(
                        InboundMessage.patient_id.is_(None),
                        InboundMessage.from_phone.in_(union(own, caregivers)),
                    ),
                )
            )
            .order_by(InboundMessage.received_at.desc(), InboundMessage.id.desc())
            .limit(limit)
        )
    )


def _reply_entries(session: Session, *, patient_id: int, limit: int) -> list[TimelineEntry]:
    replies = replies_for_patient(session, patient_id=patient_id, limit=limit)
    # This patient's inbox items of those texts (never another patient's).
    items = {
        message_id: (item_id, handled_at)
        for message_id, item_id, handled_at in session.execute(
            select(InboxItem.inbound_message_id, InboxItem.id, InboxItem.handled_at).where(
                InboxItem.patient_id == patient_id,
                InboxItem.inbound_message_id.in_([reply.id for reply in replies]),
            )
        )
    }
    entries = []
    for reply in replies:
        item_id, handled_at = items.get(reply.id, (None, None))
        status = None if item_id is None else ("handled" if handled_at else "waiting")
        entries.append(
            TimelineEntry(
                at=reply.received_at,
                kind=TimelineKind.REPLY,
                ref_id=reply.id,
                action=reply.intent,
                text=reply.body,
                reason=reply.handled_note,
                from_phone=reply.from_phone,
                status=status,
                inbox_id=item_id,
            )
        )
    return entries


def _handled_entries(session: Session, *, patient_id: int, limit: int) -> list[TimelineEntry]:
    return [
        TimelineEntry(
            at=handled.at,
            kind=TimelineKind.HANDLED,
            ref_id=handled.item_id,
            action="handled",
            actor=handled.by,
            reason=handled.note,
            text=handled.body,
            next_step=handled.reply,
            inbox_id=handled.item_id,
        )
        for handled in handled_for_patient(session, patient_id=patient_id, limit=limit)
    ]


def _travel_entries(session: Session, *, patient_id: int, limit: int) -> list[TimelineEntry]:
    return [
        TimelineEntry(
            at=step.at,
            kind=TimelineKind.TRAVEL,
            ref_id=step.event_id,
            action=step.step,
            actor=step.actor,
            system=step.system,
            visit_id=step.visit_id,
            visit_key=step.visit_key,
            kinds=step.kinds,
            reason=step.visit_change or step.decline_reason,
        )
        for step in travel_steps(session, patient_id=patient_id, limit=limit)
    ]


def patient_timeline(session: Session, *, patient_id: int, limit: int = 50) -> list[TimelineEntry]:
    """The newest `limit` entries of the patient's timeline, newest first.

    Ten queries whatever the patient's history (one per source, and the inbox items of
    the texts received); each source reads at most what could make the cut, then the
    sources are merged."""
    if limit <= 0:
        return []
    entries: list[TimelineEntry] = []
    for source in (
        _visit_entries,
        _outcome_entries,
        _report_entries,
        _move_request_entries,
        _note_entries,
        _message_entries,
        _reply_entries,
        _handled_entries,
        _travel_entries,
    ):
        entries.extend(source(session, patient_id=patient_id, limit=limit))
    entries.sort(key=TimelineEntry.sort_key, reverse=True)
    return entries[:limit]


@dataclass(frozen=True)
class EarlierValue:
    """What an observation said before a correction, who recorded it and who replaced it."""

    value: ShownValue
    recorded_at: datetime
    recorded_by: str | None
    replaced_at: datetime
    replaced_by: str
    reason: str


@dataclass(frozen=True)
class RecordedValue:
    """One value recorded at a visit as it stands, with its earlier versions (oldest
    first): a correction never hides what was first recorded."""

    observation_id: int
    value: ShownValue
    recorded_by: str | None
    last_updated: datetime
    earlier: tuple[EarlierValue, ...]

    @property
    def entered_in_error(self) -> bool:
        return self.value.status == "entered-in-error"


def observations_for_visit(session: Session, *, visit_id: int) -> list[RecordedValue]:
    """The outcomes recorded at one visit, in the order they were recorded, each with its
    corrections (a fixed number of queries)."""
    rows = session.execute(
        select(Observation, User)
        .join(VisitObservation, VisitObservation.observation_id == Observation.id)
        .outerjoin(User, User.id == Observation.recorded_by_user_id)
        .where(VisitObservation.visit_id == visit_id)
        .order_by(Observation.id)
    ).all()
    ids = [observation.id for observation, _user in rows]
    revisions = (
        session.scalars(
            select(ObservationRevision)
            .where(ObservationRevision.observation_id.in_(ids))
            .order_by(ObservationRevision.observation_id, ObservationRevision.version_id)
        ).all()
        if ids
        else []
    )
    people_ids = {revision.recorded_by_user_id for revision in revisions} - {None}
    people = (
        {user.id: user for user in session.scalars(select(User).where(User.id.in_(people_ids)))}
        if people_ids
        else {}
    )
    earlier: dict[int, list[EarlierValue]] = {id_: [] for id_ in ids}
    by_id = {observation.id: observation for observation, _user in rows}
    for revision in revisions:
        current = by_id[revision.observation_id]
        earlier[revision.observation_id].append(
            EarlierValue(
                value=ShownValue(
                    code_system=current.code_system,
                    code=current.code,
                    display=current.display,
                    quantity=revision.value_quantity,
                    unit=revision.value_unit,
                    boolean=revision.value_boolean,
                    text=revision.value_text,
                    source=current.source.value,
                    status=revision.status,
                ),
                recorded_at=revision.recorded_at,
                recorded_by=_who(people.get(revision.recorded_by_user_id or 0)),
                replaced_at=revision.replaced_at,
                replaced_by=revision.replaced_by_label,
                reason=revision.reason,
            )
        )
    return [
        RecordedValue(
            observation_id=observation.id,
            value=_value(observation),
            recorded_by=_who(user),
            last_updated=observation.last_updated,
            earlier=tuple(earlier[observation.id]),
        )
        for observation, user in rows
    ]


def visit_labels(
    library: ProtocolLibrary, *, therapy_code: str, visits: Iterable[Visit], language: str
) -> dict[int, str]:
    """Each visit's label from its protocol, in `language` (the key when the protocol no
    longer has it), by visit id."""
    return {
        visit.id: visit_label(visit, therapy_code=therapy_code, language=language, library=library)
        for visit in visits
    }
