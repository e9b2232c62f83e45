"""Who a phone number belongs to (coordination/contacts.py): one rule for the replies the
platform acts on and for the names the demo's texts page shows. A patient's own number wins
over a caregiver's; a caregiver's number is about the patients whose schedule they may see
or whose reminders they get."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import MoveRequest, Visit, VisitStatus
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import (
    book_appointment,
    next_visit,
    sync_schedule,
    visits_for_patient,
)
from coordination.texting.consent import opt_in
from coordination.texting.contacts import owners_of_number, owners_of_numbers
from coordination.texting.inbound import handle_inbound
from coordination.texting.models import ConsentHow, InboundMessage, InboxItem
from core.audit.service import Actor
from core.clock import FrozenClock
from core.db import transaction
from core.models import Caregiver, CaregiverLink, Language, Patient
from portal.dev.demo import seed_demo
from portal.dev.demo_sms import Effect, Person, answer_as_patient, demo_numbers, people_by_phone
from tests.conftest import (
    CAREGIVER_CO,
    CAREGIVER_MD,
    COORDINATOR_MD,
    Database,
    make_settings,
    user_by_login,
)
from tests.support.statements import statements_on

UNKNOWN = "+12025550199"
TANYA = "+14105550190"  # a new caregiver's number
_sids = iter(range(1, 10_000))


def _patient(session: Session, given_name: str) -> Patient:
    patient = session.scalar(select(Patient).where(Patient.given_name == given_name))
    assert patient is not None and patient.mobile_phone is not None
    return patient


def _caregiver(session: Session, login: str) -> Caregiver:
    caregiver = session.get(Caregiver, user_by_login(session, login).caregiver_id)
    assert caregiver is not None and caregiver.mobile_phone is not None
    return caregiver


def _add_tanya(db: Database, clock: FrozenClock, **rights: bool) -> None:
    """Tanya, Maya's sister, with her own phone and a link to Maya with `rights`."""
    with transaction(db.factory) as session:
        tanya = Caregiver(
            given_name="Tanya",
            family_name="Johnson",
            mobile_phone=TANYA,
            preferred_language=Language.ES,
            time_zone="America/New_York",
            created_at=clock.now(),
        )
        session.add(tanya)
        session.flush()
        session.add(
            CaregiverLink(
                caregiver_id=tanya.id,
                patient_id=_patient(session, "Maya").id,
                relationship_label="sister",
                created_at=clock.now(),
                updated_at=clock.now(),
                **rights,
            )
        )


def _text(db: Database, clock: FrozenClock, phone: str, body: str) -> InboundMessage:
    """`phone` texts `body` to the program; the stored message."""
    sid = f"SM{next(_sids):032x}"
    with transaction(db.factory) as session:
        handle_inbound(
            session,
            clock=clock,
            message_sid=sid,
            from_phone=phone,
            to_phone="+12025550100",
            body=body,
        )
    with db.factory() as session:
        stored = session.scalar(select(InboundMessage).where(InboundMessage.message_sid == sid))
        assert stored is not None
        return stored


def test_a_patients_own_number_is_about_that_patient(db: Database, clock: FrozenClock) -> None:
    with db.factory() as session:
        maya = _patient(session, "Maya")
        phone = maya.mobile_phone or ""
        owners = owners_of_number(session, phone=phone)
        assert [p.id for p in owners.patients] == [maya.id]
        assert [p.id for p in owners.candidates] == [maya.id]
        assert owners.caregivers == () and owners.language() == "en"
        assert people_by_phone(session, {phone}) == {phone: Person("Maya Johnson")}
    # Her text is filed under her, for her coordinator to read.
    assert _text(db, clock, phone, "Hi, see you soon").patient_id == maya.id


def test_a_caregivers_number_is_about_the_patients_whose_schedule_they_see(
    db: Database, clock: FrozenClock
) -> None:
    with db.factory() as session:
        denise = _caregiver(session, CAREGIVER_MD)
        phone = denise.mobile_phone or ""
        owners = owners_of_number(session, phone=phone)
        helped = sorted(link.patient_id for link in denise.links)
        assert len(helped) == 2  # Maya (every right) and another patient (the schedule only)
        assert [c.id for c in owners.caregivers] == [denise.id]
        assert [p.id for p in owners.candidates] == helped
        # The page names her with the patient of her oldest link: Maya.
        assert people_by_phone(session, {phone}) == {
            phone: Person("Denise Johnson", "Maya Johnson")
        }
    # Two patients: her text is not filed under either, the care team sorts it out.
    assert _text(db, clock, phone, "Hi").patient_id is None


def test_many_numbers_at_once_take_as_many_queries_as_one(db: Database) -> None:
    with db.factory() as session:
        maya, andre = _patient(session, "Maya"), _patient(session, "Andre")
        denise, rosa = _caregiver(session, CAREGIVER_MD), _caregiver(session, CAREGIVER_CO)
        phones = [
            maya.mobile_phone or "",
            andre.mobile_phone or "",
            denise.mobile_phone or "",
            rosa.mobile_phone or "",
            UNKNOWN,
        ]
        session.expunge_all()  # nothing comes from the identity map
        with statements_on(db.engine) as one:
            single = owners_of_number(session, phone=denise.mobile_phone or "")
        session.expunge_all()
        with statements_on(db.engine) as many:
            found = owners_of_numbers(session, phones=phones)
            people = people_by_phone(session, set(phones))
        assert len(one) == 3
        assert len(many) == 2 * len(one)  # the owners, then the names: three queries each
        assert set(found) == set(phones)
        assert [p.id for p in found[denise.mobile_phone or ""].candidates] == [
            p.id for p in single.candidates
        ]
        assert [p.id for p in found[maya.mobile_phone or ""].candidates] == [maya.id]
        assert [p.id for p in found[rosa.mobile_phone or ""].candidates] == [andre.id]
        unknown = found[UNKNOWN]
        assert unknown.candidates == () and unknown.language() is None
        assert people == {
            maya.mobile_phone: Person("Maya Johnson"),
            andre.mobile_phone: Person("Andre Williams"),
            denise.mobile_phone: Person("Denise Johnson", "Maya Johnson"),
            rosa.mobile_phone: Person("Rosa García", "Andre Williams"),
        }
    assert owners_of_numbers(session, phones=[]) == {}


def test_a_number_shared_by_a_patient_and_a_caregiver_is_the_patients(
    db: Database, clock: FrozenClock
) -> None:
    with transaction(db.factory) as session:
        maya = _patient(session, "Maya")
        rosa = _caregiver(session, CAREGIVER_CO)  # Spanish-speaking, helps Andre
        rosa.mobile_phone = maya.mobile_phone  # Maya texts from her caregiver's phone
        phone, maya_id, rosa_id = maya.mobile_phone or "", maya.id, rosa.id
    with db.factory() as session:
        owners = owners_of_number(session, phone=phone)
        assert [c.id for c in owners.caregivers] == [rosa_id]
        assert [p.id for p in owners.linked] == [_patient(session, "Andre").id]
        # Maya's own number wins: a reply is about her, in her language, under her name.
        assert [p.id for p in owners.candidates] == [maya_id]
        assert owners.language() == "en"
        assert people_by_phone(session, {phone}) == {phone: Person("Maya Johnson")}
    assert _text(db, clock, phone, "Hi").patient_id == maya_id


@pytest.mark.parametrize(
    ("rights", "acts"),
    [
        ({"can_view_schedule": False, "can_receive_reminders": False}, False),
        ({"can_view_schedule": True, "can_receive_reminders": False}, True),
        ({"can_view_schedule": False, "can_receive_reminders": True}, True),
    ],
)
def test_a_caregiver_acts_for_a_patient_only_with_a_schedule_or_reminder_right(
    db: Database, clock: FrozenClock, rights: dict[str, bool], acts: bool
) -> None:
    _add_tanya(db, clock, can_view_education=True, **rights)
    with db.factory() as session:
        maya_id = _patient(session, "Maya").id
        owners = owners_of_number(session, phone=TANYA)
        assert [p.id for p in owners.candidates] == ([maya_id] if acts else [])
        assert owners.language() == "es"  # hers, whatever her rights
        # The page names who she is to Maya, whatever her rights.
        assert people_by_phone(session, {TANYA}) == {TANYA: Person("Tanya Johnson", "Maya Johnson")}
    assert _text(db, clock, TANYA, "Hola").patient_id == (maya_id if acts else None)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    ("may_see_schedule", "may_manage_visits"), [(False, False), (True, False), (True, True)]
)
def test_the_demo_answer_shows_what_a_caregivers_c_really_does(
    db: Database, clock: FrozenClock, may_see_schedule: bool, may_manage_visits: bool
) -> None:
    """ "Answer as the patient" from a caregiver's number: her C confirms Maya's appointment
    only when her link lets her see Maya's schedule and confirm her visits (the right the
    portal asks for), and the page says so either way."""
    _add_tanya(
        db,
        clock,
        can_view_schedule=may_see_schedule,
        can_receive_reminders=False,
        can_manage_visits=may_manage_visits,
    )
    with transaction(db.factory) as session:
        maya = _patient(session, "Maya")
        coordinator = user_by_login(session, COORDINATOR_MD)
        actor = Actor(user_id=coordinator.id, label="coordinator", role="coordinator")
        sync_schedule(session, clock=clock, actor=actor, library=shipped_protocols(), patient=maya)
        visit = next_visit(visits_for_patient(session, patient_id=maya.id))
        assert visit is not None
        book_appointment(
            session,
            clock=clock,
            actor=actor,
            visit=visit,
            patient=maya,
            day=clock.now().date() + timedelta(days=2),
            at=time(9, 30),
            location="Harbor clinic",
            # An appointment in two days, wherever the next visit's window is.
            reason="an appointment in two days",
            outside_window_confirmed=True,
        )
        opt_in(
            session,
            clock=clock,
            phone=TANYA,
            how=ConsentHow.COORDINATOR,
            by_user_id=coordinator.id,
            wording="Tanya agrees to visit reminders by text.",
        )
        visit_id = visit.id
    with transaction(db.factory) as session:
        answer = answer_as_patient(
            session,
            clock=clock,
            phone=TANYA,
            body="C",
            texting_number="+12025550100",
            program_name="Maryland Care Connect",
        )
    with db.factory() as session:
        confirmed = session.get(Visit, visit_id)
        assert confirmed is not None
        if may_manage_visits:
            assert confirmed.status is VisitStatus.CONFIRMED
            assert [e.kind for e in answer.effects] == ["confirmed"]
            assert answer.reply.startswith("Gracias. Su cita del ")
        else:
            assert confirmed.status is VisitStatus.SCHEDULED
            assert answer.effects == (Effect("not_confirmed"),)
            assert answer.reply == "Gracias. Una persona del equipo de atencion le llamara."


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_demos_numbers_take_a_fixed_number_of_queries(
    empty_db: Database, clock: FrozenClock
) -> None:
    assert seed_demo(make_settings(empty_db.url, demo_mode=True), clock=clock)
    with empty_db.factory() as session:
        with statements_on(empty_db.engine) as statements:
            numbers = demo_numbers(session)
        # The outbox, the numbers' people (three), their patients, their visits.
        assert len(statements) == 6 < len(numbers)
        andre = _patient(session, "Andre")
        [his] = [number for number in numbers if number.phone == andre.mobile_phone]
        assert his.person == Person("Andre Williams") and his.got_text is False
        expected = next_visit(visits_for_patient(session, patient_id=andre.id))
        assert expected is not None and his.next_visit is expected
        assert his.zone == andre.time_zone == "America/Denver"


@pytest.mark.parametrize("may_manage_visits", [False, True])
def test_a_caregivers_r_asks_to_move_a_visit_only_with_the_right_to_manage_visits(
    db: Database, clock: FrozenClock, may_manage_visits: bool
) -> None:
    """Tanya sees Maya's schedule and gets her reminders; her "R" asks to move Maya's next
    visit only when her link also lets her confirm or move visits, as the portal requires.
    Without it nothing is asked, and the text waits in the care team's inbox."""
    _add_tanya(
        db,
        clock,
        can_view_schedule=True,
        can_receive_reminders=True,
        can_manage_visits=may_manage_visits,
    )
    with transaction(db.factory) as session:
        maya = _patient(session, "Maya")
        coordinator = user_by_login(session, COORDINATOR_MD)
        actor = Actor(user_id=coordinator.id, label="coordinator", role="coordinator")
        sync_schedule(session, clock=clock, actor=actor, library=shipped_protocols(), patient=maya)
        opt_in(
            session,
            clock=clock,
            phone=TANYA,
            how=ConsentHow.COORDINATOR,
            by_user_id=coordinator.id,
            wording="Tanya agrees to visit reminders by text.",
        )
        maya_id = maya.id
    stored = _text(db, clock, TANYA, "R")
    with db.factory() as session:
        asked = session.scalars(select(MoveRequest).where(MoveRequest.patient_id == maya_id)).all()
        filed = session.scalars(
            select(InboxItem).where(InboxItem.inbound_message_id == stored.id)
        ).all()
    assert stored.patient_id == maya_id
    if may_manage_visits:
        assert len(asked) == 1 and (stored.handled_note or "").startswith("move request ")
        assert filed == []
    else:
        assert asked == []
        assert stored.handled_note == "move not requested: the caregiver may not ask to move visits"
        assert [item.patient_id for item in filed] == [maya_id]
