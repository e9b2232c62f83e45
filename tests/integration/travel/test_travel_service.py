"""Travel support through its services (issue 13, item 5): a request's whole life, a
decline with its reason, the state's limits and what it does not fund, the policy version in
force on the visit's day, a moved or cancelled visit flagging its travel, and the reminder
that says only that travel is arranged. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import date, time, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import Visit
from coordination.followup.protocol import ReminderKind
from coordination.followup.schedule import book_appointment, cancel_visit
from coordination.texting.rules import Recipient, reminder_body
from coordination.travel.models import TravelEvent, TravelPolicy, TravelRequest, TravelStatus
from coordination.travel.policy import PolicyInput, add_policy, policy_history, policy_on
from coordination.travel.requests import (
    TravelAsk,
    arranged_visit_ids,
    ask_for_travel,
    travel_for_visits,
)
from coordination.travel.service import (
    ArrangementInput,
    TravelStepRefused,
    add_arrangement,
    approve_request,
    decline_request,
    mark_arranged,
    mark_reviewed,
    request_detail,
)
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from core.errors import FieldErrors
from core.models import Patient, State
from tests.conftest import COORDINATOR_MD, PATIENT_CO, PATIENT_MD, Database, user_by_login
from tests.integration.followup.test_schedule_portal import (
    book,
    open_visit_ids,
    patient_id_of,
    plan,
)

# The test world's clock is 2026-11-27; Maryland's policy changes on 2026-12-27 (+30 days).
SOON = date(2026, 12, 10)
AFTER_CHANGE = date(2027, 1, 5)


def booked_visit(db: Database, clock: FrozenClock, login: str, day: date = SOON) -> int:
    patient_id = patient_id_of(db, login)
    plan(db, clock, patient_id)
    visit_id = open_visit_ids(db, patient_id)[0]
    book(db, clock, visit_id, day, time(10, 0))
    return visit_id


def actor_of(session: Session, login: str) -> Actor:
    user = user_by_login(session, login)
    return Actor(user_id=user.id, label=login, role=user.role.value)


def ask(
    session: Session,
    clock: FrozenClock,
    visit_id: int,
    *,
    login: str = PATIENT_MD,
    kinds: tuple[str, ...] = ("flight", "lodging", "meals"),
    depart: date = SOON - timedelta(days=1),
    back: date = SOON,
    travellers: str = "2",
) -> TravelRequest:
    visit = session.get(Visit, visit_id)
    assert visit is not None
    patient = session.get(Patient, visit.patient_id)
    assert patient is not None
    return ask_for_travel(
        session,
        clock=clock,
        actor=actor_of(session, login),
        patient=patient,
        visit=visit,
        ask=TravelAsk(
            kinds=list(kinds),
            depart_on=depart.isoformat(),
            return_on=back.isoformat(),
            travellers=travellers,
            needs="  A ground-floor   room, please. ",
        ),
    )


def refusal(
    session: Session, clock: FrozenClock, visit_id: int, **changes: object
) -> dict[str, str]:
    with pytest.raises(FieldErrors) as problem:
        ask(session, clock, visit_id, **changes)  # type: ignore[arg-type]
    return problem.value.errors


def test_a_request_through_its_whole_life(db: Database, clock: FrozenClock) -> None:
    visit_id = booked_visit(db, clock, PATIENT_MD)
    with db.factory() as session:
        request = ask(session, clock, visit_id)
        assert request.status is TravelStatus.REQUESTED
        assert request.needs == "A ground-floor room, please."
        assert request.kinds == ["flight", "lodging", "meals"]
        # Asked, not arranged: the patient sees the request, no arrangement yet.
        assert travel_for_visits(session, visit_ids=[visit_id])[visit_id].arrangements == []
        staff = actor_of(session, COORDINATOR_MD)
        approve_request(session, clock=clock, actor=staff, request=request)
        for kind, summary, start, cost in (
            ("flight", "Southwest WN 1234 and back", SOON - timedelta(days=1), "412.80"),
            ("lodging", "Hope Lodge, 1 night", SOON - timedelta(days=1), "$120"),
            ("meals", "Per-diem for two", SOON - timedelta(days=1), "240"),
        ):
            add_arrangement(
                session,
                clock=clock,
                actor=staff,
                request=request,
                data=ArrangementInput(
                    kind=kind,
                    summary=summary,
                    starts_on=start.isoformat(),
                    ends_on=SOON.isoformat(),
                    cost=cost,
                ),
            )
        # Nothing shows to the patient until the coordinator says it is all arranged.
        assert arranged_visit_ids(session, visit_ids={visit_id}) == set()
        mark_arranged(session, clock=clock, actor=staff, request=request)
        session.commit()
    with db.factory() as session:
        travel = travel_for_visits(session, visit_ids=[visit_id])[visit_id]
        assert travel.request.status is TravelStatus.ARRANGED
        assert [(a.kind.value, a.cost_cents) for a in travel.arrangements] == [
            ("flight", 41280),
            ("lodging", 12000),
            ("meals", 24000),
        ]
        assert arranged_visit_ids(session, visit_ids={visit_id}) == {visit_id}
        detail = request_detail(
            session, patient_id=travel.request.patient_id, request_id=travel.request.id
        )
        assert detail is not None and detail.total_cents == 41280 + 12000 + 24000
        assert [event.action for event in detail.events] == [
            "requested",
            "approved",
            "booked",
            "booked",
            "booked",
            "arranged",
        ]
        assert {event.actor_label for event in detail.events[1:]} == {COORDINATOR_MD}
        audited = session.scalars(
            select(AuditEvent.action).where(
                AuditEvent.target == f"travel_request:{travel.request.id}"
            )
        ).all()
        assert sorted(set(audited)) == [
            "travel.approved",
            "travel.arranged",
            "travel.booked",
            "travel.requested",
        ]


def test_the_reminder_says_only_that_travel_is_arranged(db: Database, clock: FrozenClock) -> None:
    visit_id = booked_visit(db, clock, PATIENT_MD)
    with db.factory() as session:
        visit = session.get(Visit, visit_id)
        patient = session.get(Patient, patient_id_of(db, PATIENT_MD))
        assert visit is not None and patient is not None
        for language, sentence in (
            ("en", "Your travel is arranged; details in the portal."),
            ("es", "Su viaje esta organizado; los detalles estan en el portal."),
        ):
            recipient = Recipient(
                phone="+14105550111", language=language, zone=patient.time_zone, caregiver_id=None
            )
            plain = reminder_body(
                ReminderKind.APPOINTMENT, visit, recipient, patient.state, patient.time_zone
            )
            arranged = reminder_body(
                ReminderKind.APPOINTMENT,
                visit,
                recipient,
                patient.state,
                patient.time_zone,
                travel_arranged=True,
            )
            assert sentence not in plain
            assert arranged == f"{plain} {sentence}"
            # Never the details: no provider, no lodging, no flight.
            for word in ("Southwest", "Lodge", "flight", "vuelo", "hotel"):
                assert word not in arranged


def test_a_decline_carries_its_reason_to_the_patient(db: Database, clock: FrozenClock) -> None:
    visit_id = booked_visit(db, clock, PATIENT_MD)
    with db.factory() as session:
        request = ask(session, clock, visit_id)
        staff = actor_of(session, COORDINATOR_MD)
        with pytest.raises(FieldErrors) as problem:
            decline_request(session, clock=clock, actor=staff, request=request, reason="  ")
        assert problem.value.errors == {"reason": "Say why: the patient reads it."}
        decline_request(
            session,
            clock=clock,
            actor=staff,
            request=request,
            reason="The clinic is 12 miles away: please use the free shuttle.",
        )
        session.commit()
    with db.factory() as session:
        travel = travel_for_visits(session, visit_ids=[visit_id])[visit_id]
        assert travel.request.status is TravelStatus.DECLINED
        assert (
            travel.request.decline_reason
            == "The clinic is 12 miles away: please use the free shuttle."
        )
        assert travel.arrangements == []
        with pytest.raises(TravelStepRefused):
            approve_request(
                session,
                clock=clock,
                actor=actor_of(session, COORDINATOR_MD),
                request=travel.request,
            )
        # Declined, the patient may ask again (for something else).
        again = ask(
            session, clock, visit_id, kinds=("meals",), depart=SOON, back=SOON, travellers="1"
        )
        assert again.status is TravelStatus.REQUESTED


def test_limits_are_enforced_and_said(db: Database, clock: FrozenClock) -> None:
    visit_id = booked_visit(db, clock, PATIENT_MD)
    with db.factory() as session:
        # Maryland: 3 nights at most, 2 people at most, meals for 4 days at most.
        assert refusal(session, clock, visit_id, depart=SOON - timedelta(days=4), back=SOON) == {
            "return_on": "Your state's program pays at most 3 nights of lodging per visit; "
            "these dates make 4."
        }
        assert refusal(session, clock, visit_id, travellers="3") == {
            "travellers": "Your state's program pays travel for at most 2 people, the patient "
            "included."
        }
        assert refusal(session, clock, visit_id, kinds=("lodging",), depart=SOON, back=SOON) == {
            "return_on": "Lodging needs at least one night: come back on a later day than you "
            "leave."
        }
        assert refusal(
            session, clock, visit_id, depart=SOON + timedelta(days=1), back=SOON + timedelta(days=2)
        ) == {"depart_on": "The trip must include the appointment's day, 2026-12-10."}
        assert refusal(session, clock, visit_id, kinds=()) == {
            "kinds": "Choose at least one kind of support."
        }
        request = ask(session, clock, visit_id)
        staff = actor_of(session, COORDINATOR_MD)
        # A cost over the state's caps is refused with the cap: $150 a night, $60 a day each.
        with pytest.raises(FieldErrors) as problem:
            add_arrangement(
                session,
                clock=clock,
                actor=staff,
                request=request,
                data=ArrangementInput(
                    kind="lodging",
                    summary="Harbor Hotel",
                    starts_on=(SOON - timedelta(days=1)).isoformat(),
                    ends_on=SOON.isoformat(),
                    cost="150.01",
                ),
            )
        assert problem.value.errors == {
            "cost": "Over the state's limit: at most $150.00 for 1 nights."
        }
        with pytest.raises(FieldErrors) as problem:
            add_arrangement(
                session,
                clock=clock,
                actor=staff,
                request=request,
                data=ArrangementInput(
                    kind="mileage",
                    summary="Own car",
                    starts_on=SOON.isoformat(),
                    ends_on=SOON.isoformat(),
                    miles="40",
                ),
            )
        assert problem.value.errors == {"kind": "Choose one of the kinds of support asked for."}


def test_a_state_that_does_not_fund_a_kind_refuses_it(db: Database, clock: FrozenClock) -> None:
    visit_id = booked_visit(db, clock, PATIENT_CO)
    with db.factory() as session:
        # Colorado funds no flights, and (no escort) pays for the patient only... (it does
        # fund an escort under its current version: two people).
        assert refusal(session, clock, visit_id, login=PATIENT_CO, kinds=("flight", "meals")) == {
            "kinds": "Your state's program does not pay for flights."
        }
        assert refusal(
            session, clock, visit_id, login=PATIENT_CO, kinds=("childcare",), depart=SOON, back=SOON
        ) == {"kinds": "Your state's program does not pay for childcare."}
        request = ask(
            session,
            clock,
            visit_id,
            login=PATIENT_CO,
            kinds=("mileage", "meals"),
            depart=SOON,
            back=SOON,
            travellers="1",
        )
        add_arrangement(
            session,
            clock=clock,
            actor=actor_of(session, "coordinator.co@demo.cgt-access.test"),
            request=request,
            data=ArrangementInput(
                kind="mileage",
                summary="Own car, round trip",
                starts_on=SOON.isoformat(),
                ends_on=SOON.isoformat(),
                miles="120",
                cost="1.00",  # the state's rate decides, not what is typed
            ),
        )
        detail = request_detail(session, patient_id=request.patient_id, request_id=request.id)
        assert detail is not None and detail.total_cents == 120 * 65


def test_the_policy_in_force_on_the_visit_day_applies(db: Database, clock: FrozenClock) -> None:
    early = booked_visit(db, clock, PATIENT_MD, day=SOON)
    with db.factory() as session:
        maryland = session.scalar(select(State).where(State.code == "MD"))
        assert maryland is not None
        history = policy_history(session, clock=clock, state=maryland)
        # Newest first: next month's version (upcoming), then today's (in force).
        assert [(v.row.mileage_rate_cents, v.in_force, v.upcoming) for v in history] == [
            (70, False, True),
            (67, True, False),
        ]
        request = ask(
            session, clock, early, kinds=("mileage",), depart=SOON, back=SOON, travellers="1"
        )
        assert request.policy_id == history[1].row.id
        # An admin adds a version from 2027-01-01 that funds no flights nor lodging.
        admin = actor_of(session, "admin@demo.cgt-access.test")
        newer = add_policy(
            session,
            clock=clock,
            actor=admin,
            data=PolicyInput(
                state_id=str(maryland.id),
                effective_from="2027-01-01",
                kinds=["mileage", "ride", "meals"],
                mileage_rate="0.72",
                meal_per_diem="55",
            ),
        )
        assert newer.max_travellers == 1  # no escort funded: the patient only
        assert newer.max_lodging_nights == 0
        assert policy_on(session, state_id=maryland.id, day=date(2026, 12, 31)) is not None
        assert policy_on(session, state_id=maryland.id, day=date(2027, 1, 1)) == newer
        # The past is not rewritten.
        with pytest.raises(FieldErrors) as problem:
            add_policy(
                session,
                clock=clock,
                actor=admin,
                data=PolicyInput(
                    state_id=str(maryland.id), effective_from="2026-11-01", kinds=["ride"]
                ),
            )
        assert "effective_from" in problem.value.errors
        with pytest.raises(FieldErrors) as problem:
            add_policy(
                session,
                clock=clock,
                actor=admin,
                data=PolicyInput(
                    state_id=str(maryland.id),
                    effective_from="2027-02-01",
                    kinds=["mileage"],
                    mileage_rate="abc",
                ),
            )
        assert problem.value.errors == {
            "mileage_rate": "Enter an amount in dollars, like 0.67 or 150, at most 10.00."
        }
        session.commit()
    # A visit after 2027-01-01 is judged by the newer version: no flights there.
    with db.factory() as session:
        patient_id = patient_id_of(db, PATIENT_MD)
        later = open_visit_ids(db, patient_id)[1]
        visit = session.get(Visit, later)
        patient = session.get(Patient, patient_id)
        assert visit is not None and patient is not None
        book_appointment(
            session,
            clock=clock,
            actor=Actor.system("test"),
            visit=visit,
            patient=patient,
            day=AFTER_CHANGE,
            at=time(9, 0),
            location="Clinic",
            reason="test",
            outside_window_confirmed=True,
        )
        errors = refusal(
            session,
            clock,
            later,
            depart=AFTER_CHANGE,
            back=AFTER_CHANGE,
            kinds=("flight",),
            travellers="1",
        )
        assert errors == {"kinds": "Your state's program does not pay for flights."}
        request = ask(
            session,
            clock,
            later,
            depart=AFTER_CHANGE,
            back=AFTER_CHANGE,
            kinds=("mileage",),
            travellers="1",
        )
        policy = session.get(TravelPolicy, request.policy_id)
        assert policy is not None and policy.mileage_rate_cents == 72


@pytest.mark.parametrize("change", ["move", "cancel"])
def test_a_moved_or_cancelled_visit_flags_its_arrangements(
    db: Database, clock: FrozenClock, change: str
) -> None:
    visit_id = booked_visit(db, clock, PATIENT_MD)
    with db.factory() as session:
        request = ask(
            session, clock, visit_id, kinds=("meals",), depart=SOON, back=SOON, travellers="1"
        )
        staff = actor_of(session, COORDINATOR_MD)
        add_arrangement(
            session,
            clock=clock,
            actor=staff,
            request=request,
            data=ArrangementInput(
                kind="meals",
                summary="Per-diem",
                starts_on=SOON.isoformat(),
                ends_on=SOON.isoformat(),
                cost="60",
            ),
        )
        mark_arranged(session, clock=clock, actor=staff, request=request)
        session.commit()
    with db.factory() as session:
        visit = session.get(Visit, visit_id)
        assert visit is not None
        patient = session.get(Patient, visit.patient_id)
        assert patient is not None
        if change == "move":
            book_appointment(
                session,
                clock=clock,
                actor=Actor.system("test"),
                visit=visit,
                patient=patient,
                day=SOON + timedelta(days=2),
                at=time(11, 0),
                location="Clinic",
                reason="test",
                outside_window_confirmed=True,
            )
        else:
            cancel_visit(
                session,
                clock=clock,
                actor=Actor.system("test"),
                visit=visit,
                reason="The clinic closed.",
            )
        session.commit()
    with db.factory() as session:
        travel = travel_for_visits(session, visit_ids=[visit_id])[visit_id]
        assert travel.to_review
        assert travel.request.review_reason == ("moved" if change == "move" else "cancelled")
        assert all(a.review_needed_at is not None for a in travel.arrangements)
        # Waiting for review, the reminder no longer says travel is arranged.
        assert arranged_visit_ids(session, visit_ids={visit_id}) == set()
        events = session.scalars(
            select(TravelEvent.action).where(TravelEvent.request_id == travel.request.id)
        ).all()
        assert events[-1] == "flagged"
        mark_reviewed(
            session, clock=clock, actor=actor_of(session, COORDINATOR_MD), request=travel.request
        )
        assert not travel.to_review
        assert all(a.review_needed_at is None for a in travel.arrangements)
