"""The reminder texts of a visit whose questionnaire waits for its answers add a nudge, in
the recipient's language, never the questionnaire's name; to a caregiver only when they may
answer for the patient; not once it is answered. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import Visit
from coordination.followup.schedule import book_appointment, confirm_visit, mark_missed_visits
from coordination.questionnaires.models import Questionnaire, QuestionnaireResponse
from coordination.texting.consent import opt_in
from coordination.texting.models import ConsentHow, MessagePurpose, MessageStatus, OutboundMessage
from coordination.texting.planning import plan_reminders
from coordination.texting.send_check import check_before_sending
from core.clock import FrozenClock, local_today
from core.models import CaregiverLink, Language, Patient
from tests.factories import SYSTEM, Factory

NUDGE_EN = "Please also answer the questionnaire in the portal."
NUDGE_ES = "Por favor, responda también el cuestionario en el portal."


def _day_100_patient(
    session: Session, clock: FrozenClock, *, language: Language = Language.EN
) -> tuple[Patient, Visit]:
    """A patient 100 days after infusion, the day-100 visit booked in two days, texts on."""
    make = Factory(session, clock)
    today = local_today(clock, "America/New_York")
    patient = make.patient(infusion_date=today - timedelta(days=100), preferred_language=language)
    patient.mobile_phone = f"+1410555{patient.id % 9000 + 1000:04d}"
    visit = session.scalar(
        select(Visit).where(Visit.patient_id == patient.id, Visit.visit_key == "day-100")
    )
    assert visit is not None
    book_appointment(
        session,
        clock=clock,
        actor=SYSTEM,
        visit=visit,
        patient=patient,
        day=today + timedelta(days=2),
        at=time(10, 0),
        location="Clinic",
    )
    _texts_on(session, clock, patient.mobile_phone)
    return patient, visit


def _texts_on(session: Session, clock: FrozenClock, phone: str) -> None:
    opt_in(
        session,
        clock=clock,
        phone=phone,
        how=ConsentHow.COORDINATOR,
        by_user_id=None,
        wording="Texts about your follow-up visits. Reply STOP to opt out.",
    )


def _reminders(session: Session, visit: Visit) -> dict[str, str]:
    """The planned reminders of the visit: phone -> body (the nearest one per phone)."""
    rows = session.scalars(
        select(OutboundMessage)
        .where(
            OutboundMessage.visit_id == visit.id,
            OutboundMessage.purpose == MessagePurpose.REMINDER,
        )
        .order_by(OutboundMessage.send_after)
    )
    found: dict[str, str] = {}
    for row in rows:
        found.setdefault(row.to_phone, row.body)
    return found


def _answer(session: Session, clock: FrozenClock, patient: Patient, visit: Visit) -> None:
    """The visit's questionnaire answered (a completed response, as sending stores it)."""
    questionnaire = session.scalar(select(Questionnaire).limit(1))
    assert questionnaire is not None
    now = clock.now()
    session.add(
        QuestionnaireResponse(
            patient_id=patient.id,
            questionnaire_id=questionnaire.id,
            visit_id=visit.id,
            status="completed",
            answers={},
            saved_pages=[],
            started_at=now,
            updated_at=now,
            authored_at=now,
        )
    )
    session.flush()


def _titles(session: Session) -> list[str]:
    return list(session.scalars(select(Questionnaire.title)))


def test_the_appointment_reminder_nudges_and_never_names_the_questionnaire(
    session: Session, clock: FrozenClock
) -> None:
    patient, visit = _day_100_patient(session, clock)
    plan_reminders(session, clock=clock)
    body = _reminders(session, visit)[patient.mobile_phone or ""]
    assert body.endswith(NUDGE_EN), body
    for title in _titles(session):
        assert title.lower() not in body.lower()
    assert "living" not in body.lower() and "pain" not in body.lower()


def test_in_spanish_for_a_spanish_speaker(session: Session, clock: FrozenClock) -> None:
    patient, visit = _day_100_patient(session, clock, language=Language.ES)
    plan_reminders(session, clock=clock)
    body = _reminders(session, visit)[patient.mobile_phone or ""]
    assert body.endswith(NUDGE_ES), body
    assert NUDGE_EN not in body


def test_no_nudge_once_answered(session: Session, clock: FrozenClock) -> None:
    patient, visit = _day_100_patient(session, clock)
    _answer(session, clock, patient, visit)
    plan_reminders(session, clock=clock)
    body = _reminders(session, visit)[patient.mobile_phone or ""]
    assert "questionnaire" not in body.lower() and "cuestionario" not in body.lower(), body


def test_a_caregiver_is_nudged_only_with_the_right_to_answer(
    session: Session, clock: FrozenClock
) -> None:
    patient, visit = _day_100_patient(session, clock)
    make = Factory(session, clock)
    with_right = make.caregiver(
        patient, receive_reminders=True, view_schedule=True, answer_questionnaires=True
    )
    without = make.caregiver(patient, receive_reminders=True, view_schedule=True)
    phones = {}
    for link in (with_right, without):
        session.refresh(link)
        assert isinstance(link, CaregiverLink)
        phones[link.id] = link.caregiver.mobile_phone or ""
        _texts_on(session, clock, phones[link.id])
    plan_reminders(session, clock=clock)
    bodies = _reminders(session, visit)
    assert bodies[phones[with_right.id]].endswith(NUDGE_EN)
    assert "questionnaire" not in bodies[phones[without.id]].lower()


def test_the_nudge_is_kept_when_the_text_is_reworded_on_sending(
    session: Session, clock: FrozenClock
) -> None:
    patient, visit = _day_100_patient(session, clock)
    plan_reminders(session, clock=clock)
    # The appointment is confirmed before the reminder leaves: its words change (no
    # longer asking to confirm), the nudge stays.
    confirm_visit(session, clock=clock, actor=SYSTEM, visit=visit)
    message = session.scalar(
        select(OutboundMessage)
        .where(
            OutboundMessage.visit_id == visit.id,
            OutboundMessage.to_phone == patient.mobile_phone,
        )
        .order_by(OutboundMessage.send_after)
        .limit(1)
    )
    assert message is not None
    clock.set(message.send_after)
    session.flush()
    verdicts = check_before_sending(session, clock=clock, messages=[message])
    assert verdicts[message.id].send, verdicts
    assert "is confirmed" in message.body and message.body.endswith(NUDGE_EN), message.body


def _first_text_to(session: Session, visit: Visit, phone: str | None) -> OutboundMessage:
    message = session.scalar(
        select(OutboundMessage)
        .where(OutboundMessage.visit_id == visit.id, OutboundMessage.to_phone == phone)
        .order_by(OutboundMessage.send_after)
        .limit(1)
    )
    assert message is not None
    return message


def test_a_reminder_answered_for_since_planning_leaves_without_the_nudge(
    session: Session, clock: FrozenClock
) -> None:
    patient, visit = _day_100_patient(session, clock)
    plan_reminders(session, clock=clock)
    message = _first_text_to(session, visit, patient.mobile_phone)
    assert message.body.endswith(NUDGE_EN)
    _answer(session, clock, patient, visit)  # in the portal, before the text leaves
    clock.set(message.send_after)

    verdicts = check_before_sending(session, clock=clock, messages=[message])

    assert verdicts[message.id].send, verdicts
    assert "questionnaire" not in message.body.lower(), message.body
    assert message.body.endswith("Reply STOP to opt out.") or "appointment" in message.body


def test_an_overdue_notice_answered_for_since_planning_leaves_without_the_nudge(
    session: Session, clock: FrozenClock
) -> None:
    """The day-100 window closed yesterday without a visit: the notice nudges (the
    questionnaire may still be answered), until the questionnaire is answered."""
    make = Factory(session, clock)
    today = local_today(clock, "America/New_York")
    patient = make.patient(infusion_date=today - timedelta(days=100))
    patient.mobile_phone = f"+1410555{patient.id % 9000 + 1000:04d}"
    visit = session.scalar(
        select(Visit).where(Visit.patient_id == patient.id, Visit.visit_key == "day-100")
    )
    assert visit is not None
    clock.advance(timedelta(days=15))
    mark_missed_visits(session, clock=clock)
    _texts_on(session, clock, patient.mobile_phone)
    plan_reminders(session, clock=clock)
    message = _first_text_to(session, visit, patient.mobile_phone)
    assert message.rule == "overdue:overdue" and message.body.endswith(NUDGE_EN), message.body
    planned = message.body
    _answer(session, clock, patient, visit)
    clock.set(message.send_after)

    verdicts = check_before_sending(session, clock=clock, messages=[message])

    assert verdicts[message.id].send, verdicts
    assert message.body == planned.removesuffix(f" {NUDGE_EN}"), message.body


def test_a_caregiver_whose_right_to_answer_was_withdrawn_is_not_nudged(
    session: Session, clock: FrozenClock
) -> None:
    patient, visit = _day_100_patient(session, clock)
    link = Factory(session, clock).caregiver(
        patient, receive_reminders=True, view_schedule=True, answer_questionnaires=True
    )
    session.refresh(link)
    phone = link.caregiver.mobile_phone
    _texts_on(session, clock, phone or "")
    plan_reminders(session, clock=clock)
    message = _first_text_to(session, visit, phone)
    assert message.body.endswith(NUDGE_EN)
    link.can_answer_questionnaires = False
    session.flush()
    clock.set(message.send_after)

    verdicts = check_before_sending(session, clock=clock, messages=[message])

    assert verdicts[message.id].send, verdicts
    assert "questionnaire" not in message.body.lower(), message.body


def test_a_coordinators_own_text_ending_with_those_words_leaves_whole(
    session: Session, clock: FrozenClock
) -> None:
    """Only reminders carry the nudge: a coordinator's one-off text about the visit that
    ends with the same sentence is not cut, the questionnaire answered or not."""
    patient, visit = _day_100_patient(session, clock)
    _answer(session, clock, patient, visit)
    words = f"Maryland Care Connect: see you on Friday. {NUDGE_EN}"
    message = OutboundMessage(
        to_phone=patient.mobile_phone or "",
        body=words,
        purpose=MessagePurpose.ONE_OFF,
        patient_id=patient.id,
        visit_id=visit.id,
        status=MessageStatus.QUEUED,
        language="en",
        created_at=clock.now(),
        send_after=clock.now(),
        attempts=0,
    )
    session.add(message)
    session.flush()
    clock.set(clock.now().replace(hour=15))  # texting hours in Baltimore

    verdicts = check_before_sending(session, clock=clock, messages=[message])

    assert verdicts[message.id].send, verdicts
    assert message.body == words
