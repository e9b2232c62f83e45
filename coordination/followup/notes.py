"""Outreach notes: a coordinator's record of each try to reach a patient (call, text, letter,
in person), what came of it and what happens next. They show on the patient's timeline."""

from __future__ import annotations

from sqlalchemy.orm import Session

from coordination.followup.models import OutreachChannel, OutreachNote, OutreachOutcome
from core.audit.service import Actor, record_event
from core.clock import Clock
from core.errors import FieldErrors
from core.models import Patient
from core.text import N_

NOTE_MAX = 1000
NEXT_STEP_MAX = 300


def add_outreach_note(
    session: Session,
    *,
    clock: Clock,
    actor: Actor,
    patient: Patient,
    channel: str,
    outcome: str,
    note: str,
    next_step: str,
) -> OutreachNote:
    """Record one outreach attempt (audited). `channel` and `outcome` are the codes of
    OutreachChannel and OutreachOutcome, as a form sends them.

    Raises FieldErrors naming each field to fix (an unknown channel or outcome, a text too
    long, an outcome of "other" without a note saying what happened); nothing is written then.
    """
    if actor.user_id is None:
        raise ValueError("an outreach note needs a person as its author")
    errors: dict[str, str] = {}
    chosen_channel: OutreachChannel | None = None
    chosen_outcome: OutreachOutcome | None = None
    try:
        chosen_channel = OutreachChannel(channel.strip())
    except ValueError:
        errors["channel"] = N_("Choose how you reached out: call, text, letter or in person.")
    try:
        chosen_outcome = OutreachOutcome(outcome.strip())
    except ValueError:
        errors["outcome"] = N_("Choose what came of it.")
    text, step = note.strip(), next_step.strip()
    if len(text) > NOTE_MAX:
        errors["note"] = N_("Use at most 1000 characters.")
    elif chosen_outcome is OutreachOutcome.OTHER and not text:
        errors["note"] = N_("Say what happened.")
    if len(step) > NEXT_STEP_MAX:
        errors["next_step"] = N_("Use at most 300 characters.")
    if errors:
        raise FieldErrors(errors)
    assert chosen_channel is not None and chosen_outcome is not None
    entry = OutreachNote(
        patient_id=patient.id,
        author_user_id=actor.user_id,
        at=clock.now(),
        channel=chosen_channel,
        outcome=chosen_outcome,
        note=text or None,
        next_step=step or None,
    )
    session.add(entry)
    session.flush()
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="outreach.note",
        patient_id=patient.id,
        target=f"outreach_note:{entry.id}",
        # Codes only; the note's words stay in the record, not in the audit log.
        detail={"channel": chosen_channel.value, "outcome": chosen_outcome.value},
    )
    return entry
