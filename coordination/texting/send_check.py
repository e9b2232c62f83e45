"""The check right before a text leaves: consent, the patient, the visit (completed,
cancelled, moved), a caregiver's right, texting hours and the caps. The dispatcher drops
what no longer fits, with the reason, and lets what must wait wait. An appointment's text
that goes leaves in the words its visit calls for then (confirmed or not)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import Visit
from coordination.followup.protocol import ProtocolLibrary, ReminderKind, shipped_protocols
from coordination.questionnaires.due import answers_waiting
from coordination.texting.consent import consents_of
from coordination.texting.models import ConsentStatus, MessagePurpose, OutboundMessage
from coordination.texting.rules import (
    CAPPED_PURPOSES,
    FOLLOWED,
    MOVED_RULE,
    NUDGED_KINDS,
    SEND_HOUR,
    Recipient,
    TextingHours,
    cap_problem,
    has_questionnaire_nudge,
    reminder_body,
    rule_kind,
    stale_reason,
    still_useful,
    texts_so_far,
    without_questionnaire_nudge,
)
from coordination.travel.requests import arranged_visit_ids
from core.clock import Clock
from core.models import Caregiver, CaregiverLink, Patient, State


@dataclass(frozen=True)
class Verdict:
    """What the dispatcher does with a due message: send it, drop it, or wait."""

    send: bool
    drop_reason: str | None = None
    defer_until: datetime | None = None
    note: str | None = None

    @classmethod
    def ok(cls) -> Verdict:
        return cls(send=True)

    @classmethod
    def drop(cls, reason: str) -> Verdict:
        return cls(send=False, drop_reason=reason)

    @classmethod
    def wait(cls, until: datetime, note: str) -> Verdict:
        return cls(send=False, defer_until=until, note=note)


def check_before_sending(
    session: Session,
    *,
    clock: Clock,
    messages: Sequence[OutboundMessage],
    library: ProtocolLibrary | None = None,
) -> dict[int, Verdict]:
    """Look at due messages again, right before they leave: consent, the patient, the
    visit (completed, cancelled, moved), a caregiver's right, texting hours and the caps.
    An appointment reminder (or change notice) that may go gets the words of its visit as
    it is now: its `body` is rewritten when the appointment was confirmed since planning.
    A text planned with the questionnaire nudge loses it when the questionnaire was answered
    since (or its recipient may no longer answer it).

    Loads what it needs in a few queries whatever the number of messages."""
    now = clock.now()
    verdicts: dict[int, Verdict] = {}
    if not messages:
        return verdicts
    phones = {m.to_phone for m in messages}
    consents = consents_of(session, phones=phones)
    capped = [m for m in messages if m.purpose in CAPPED_PURPOSES]
    patient_ids = {m.patient_id for m in capped if m.patient_id is not None}
    patients = {
        p.id: p for p in session.scalars(select(Patient).where(Patient.id.in_(patient_ids)))
    }
    states = {s.id: s for s in session.scalars(select(State))} if capped else {}
    visit_ids = {m.visit_id for m in capped if m.visit_id is not None}
    visits = {v.id: v for v in session.scalars(select(Visit).where(Visit.id.in_(visit_ids)))}
    # The visits whose travel is arranged: their appointment's text says so in one sentence.
    travel = arranged_visit_ids(session, visit_ids=visit_ids)
    nudges = _nudges_that_hold(
        session,
        messages=capped,
        visits=visits,
        patients=patients,
        library=library or shipped_protocols(),
    )
    caregiver_ids = {m.caregiver_id for m in capped if m.caregiver_id is not None}
    reminder_links = {
        (link.caregiver_id, link.patient_id): (link, caregiver)
        for link, caregiver in session.execute(
            select(CaregiverLink, Caregiver)
            .join(Caregiver, Caregiver.id == CaregiverLink.caregiver_id)
            .where(CaregiverLink.caregiver_id.in_(caregiver_ids))
        )
    }
    # Only the texts that left count: the queued ones are those being judged here (each
    # one let go joins the times below), and one not judged yet may be dropped or wait.
    sent = texts_so_far(session, phones={m.to_phone for m in capped}, now=now, queued_count=False)

    for message in sorted(messages, key=lambda m: (m.send_after, m.id)):
        consent = consents.get(message.to_phone)
        if consent is not None and consent.status is ConsentStatus.OPTED_OUT:
            verdicts[message.id] = Verdict.drop("the number opted out (STOP)")
            continue
        if message.purpose not in CAPPED_PURPOSES:
            verdicts[message.id] = Verdict.ok()
            continue
        if consent is None:
            verdicts[message.id] = Verdict.drop("the number never opted in to texts")
            continue
        if consent.problem_code:
            verdicts[message.id] = Verdict.drop(f"the number is flagged ({consent.problem_code})")
            continue
        patient = patients.get(message.patient_id or -1)
        # A coordinator's reply answers someone who wrote: it goes whatever the patient's
        # follow-up status or the caregiver's rights (consent, hours and caps still hold).
        reply = message.purpose is MessagePurpose.REPLY
        if patient is None or (patient.status not in FOLLOWED and not reply):
            verdicts[message.id] = Verdict.drop("the patient is no longer followed")
            continue
        zone = patient.time_zone
        if message.caregiver_id is not None:
            pair = reminder_links.get((message.caregiver_id, patient.id))
            if pair is None and reply:
                verdicts[message.id] = Verdict.drop("the caregiver is no longer linked")
                continue
            if pair is None or not (pair[0].can_receive_reminders or reply):
                verdicts[message.id] = Verdict.drop("the caregiver no longer gets reminders")
                continue
            if pair[1].mobile_phone != message.to_phone:
                verdicts[message.id] = Verdict.drop("the caregiver's number changed")
                continue
            zone = pair[1].time_zone
        elif patient.mobile_phone != message.to_phone:
            verdicts[message.id] = Verdict.drop("the patient's number changed")
            continue
        kind = rule_kind(message.rule)
        visit = visits.get(message.visit_id) if message.visit_id is not None else None
        if kind is not None and message.visit_id is not None:
            reason = (
                "the visit is gone"
                if visit is None
                else stale_reason(kind, message.planned_on, visit)
            )
            if reason is None and visit is not None and not still_useful(kind, visit, now, zone):
                reason = "too late to help"
            if reason is not None:
                verdicts[message.id] = Verdict.drop(reason)
                continue
        hours = TextingHours.of(states.get(patient.state_id))
        if not hours.allows(now, zone):
            verdicts[message.id] = Verdict.wait(
                hours.next_allowed(now, zone), f"waiting for texting hours ({hours.describe()})"
            )
            continue
        times = sent[message.to_phone]
        problem = cap_problem(times, now, zone)
        if problem is not None:
            tomorrow = now.astimezone(ZoneInfo(zone)).date() + timedelta(days=1)
            verdicts[message.id] = Verdict.wait(hours.at(tomorrow, zone, SEND_HOUR), problem)
            continue
        bisect.insort(times, now)
        if kind is ReminderKind.APPOINTMENT and visit is not None:
            state = states[patient.state_id]
            _reword(
                message,
                visit=visit,
                patient=patient,
                zone=zone,
                state=state,
                travel_arranged=visit.id in travel,
                questionnaire_waiting=message.id in nudges,
            )
        elif kind is ReminderKind.OVERDUE and message.id not in nudges:
            language = _language(message, patient)
            message.body = without_questionnaire_nudge(message.body, language)
        verdicts[message.id] = Verdict.ok()
    return verdicts


def _language(message: OutboundMessage, patient: Patient) -> str:
    """The language the text is written in (the patient's, for rows planned without one)."""
    return message.language or patient.preferred_language.value


def _nudges_that_hold(
    session: Session,
    *,
    messages: Sequence[OutboundMessage],
    visits: dict[int, Visit],
    patients: dict[int, Patient],
    library: ProtocolLibrary,
) -> set[int]:
    """The ids of the messages planned with the questionnaire nudge whose questionnaire
    still waits for their recipient's answers (as planning decides it; a few queries)."""
    # Only reminders carry the nudge (a coordinator's own words are never cut).
    nudged = [
        message
        for message in messages
        if rule_kind(message.rule) in NUDGED_KINDS
        and message.visit_id in visits
        and message.patient_id in patients
        and has_questionnaire_nudge(message.body, _language(message, patients[message.patient_id]))
    ]
    if not nudged:
        return set()
    visit_ids = {message.visit_id for message in nudged}
    waiting = answers_waiting(session, visit_ids=select(Visit.id).where(Visit.id.in_(visit_ids)))
    holding = set()
    for message in nudged:
        assert message.visit_id is not None and message.patient_id is not None
        visit = visits[message.visit_id]
        therapy = patients[message.patient_id].therapy.code  # few therapies: read once each
        definition = library.visit_of(therapy, visit.protocol_version, visit.visit_key)
        if (
            definition is not None
            and waiting.waiting(visit.id, definition.questionnaires)
            and waiting.may_answer(message.patient_id, message.caregiver_id)
        ):
            holding.add(message.id)
    return holding


def _reword(
    message: OutboundMessage,
    *,
    visit: Visit,
    patient: Patient,
    zone: str,
    state: State,
    travel_arranged: bool = False,
    questionnaire_waiting: bool = False,
) -> None:
    """An appointment's text leaves in the words its visit calls for now: a reminder or a
    change notice planned before the appointment was confirmed no longer asks to confirm
    it (and one planned while it was confirmed asks again if it was booked again at the
    same time). The row keeps the words that left: it stays the truth about the text."""
    recipient = Recipient(
        phone=message.to_phone,
        language=_language(message, patient),
        zone=zone,
        caregiver_id=message.caregiver_id,
    )
    words = reminder_body(
        ReminderKind.APPOINTMENT,
        visit,
        recipient,
        state,
        patient.time_zone,
        moved=message.rule == MOVED_RULE,
        travel_arranged=travel_arranged,
        questionnaire_waiting=questionnaire_waiting,
    )
    if words != message.body:
        message.body = words
