"""Travel support on the patient's record and after a cancelled visit (issue 13, item 5):
the staff record lists the requests and the timeline shows each step with who and when
(never a cost or a need); a cancelled visit tells the patient plainly, and the coordinator
records its bookings cancelled, their cost kept. Services on SQLite and PostgreSQL; pages
as plain and htmx requests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordination.followup.models import Visit
from coordination.followup.schedule import cancel_visit
from coordination.travel.models import TravelRequest, TravelStatus
from coordination.travel.record import travel_for_record
from coordination.travel.requests import arranged_visit_ids, travel_for_visits
from coordination.travel.service import (
    ArrangementInput,
    TravelStepRefused,
    add_arrangement,
    approve_request,
    cancel_arrangement,
    mark_arranged,
    request_detail,
)
from coordination.worklist.timeline import TimelineKind, patient_timeline
from core.audit.models import AuditEvent
from core.audit.service import Actor
from core.clock import FrozenClock
from tests.conftest import (
    CAREGIVER_CO,
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_CO,
    PATIENT_MD,
    Browser,
    Database,
    plain,
)
from tests.integration.followup.test_schedule_portal import patient_id_of
from tests.integration.travel.test_travel_pages import ASK, BOTH_WAYS, DAY, booked, requests_of
from tests.integration.travel.test_travel_service import SOON, actor_of, ask, booked_visit


def arranged_request(session: Session, clock: FrozenClock, visit_id: int) -> TravelRequest:
    """Maya's request for a flight and a night of lodging, approved, booked and arranged."""
    request = ask(session, clock, visit_id, kinds=("flight", "lodging"))
    staff = actor_of(session, COORDINATOR_MD)
    approve_request(session, clock=clock, actor=staff, request=request)
    for kind, summary, cost in (
        ("flight", "Southwest WN 1234", "412.80"),
        ("lodging", "Hope Lodge", "120"),
    ):
        add_arrangement(
            session,
            clock=clock,
            actor=staff,
            request=request,
            data=ArrangementInput(
                kind=kind,
                summary=summary,
                starts_on=(SOON - timedelta(days=1)).isoformat(),
                ends_on=SOON.isoformat(),
                cost=cost,
            ),
        )
    mark_arranged(session, clock=clock, actor=staff, request=request)
    return request


def status_of(request: TravelRequest) -> TravelStatus:
    return request.status  # read afresh (a plain attribute read would stay narrowed for mypy)


def cancel(session: Session, clock: FrozenClock, visit_id: int) -> None:
    visit = session.get(Visit, visit_id)
    assert visit is not None
    cancel_visit(
        session, clock=clock, actor=Actor.system("test"), visit=visit, reason="Clinic closed."
    )


def test_cancelled_bookings_keep_their_cost_and_leave_the_patient_nothing_booked(
    db: Database, clock: FrozenClock
) -> None:
    visit_id = booked_visit(db, clock, PATIENT_MD)
    with db.factory() as session:
        request = arranged_request(session, clock, visit_id)
        cancel(session, clock, visit_id)
        session.commit()
    with db.factory() as session:
        travel = travel_for_visits(session, visit_ids=[visit_id])[visit_id]
        # The patient reads that the visit was cancelled, not only that it "changed".
        assert travel.visit_cancelled
        request = travel.request
        flight, lodging = travel.arrangements
        staff = actor_of(session, COORDINATOR_MD)
        clock.advance(timedelta(minutes=5))
        cancel_arrangement(
            session, clock=clock, actor=staff, request=request, arrangement_id=flight.id
        )
        # One booking still stands: the request is still arranged.
        assert status_of(request) is TravelStatus.ARRANGED
        with pytest.raises(TravelStepRefused, match="already cancelled"):
            cancel_arrangement(
                session, clock=clock, actor=staff, request=request, arrangement_id=flight.id
            )
        with pytest.raises(TravelStepRefused, match="not part of this request"):
            cancel_arrangement(
                session, clock=clock, actor=staff, request=request, arrangement_id=999_999
            )
        cancel_arrangement(
            session, clock=clock, actor=staff, request=request, arrangement_id=lodging.id
        )
        # Nothing booked any more: back to approved, so no reminder says travel is arranged.
        assert status_of(request) is TravelStatus.APPROVED
        with pytest.raises(TravelStepRefused, match="Record what was booked first"):
            mark_arranged(session, clock=clock, actor=staff, request=request)
        session.commit()
    with db.factory() as session:
        travel = travel_for_visits(session, visit_ids=[visit_id])[visit_id]
        assert travel.arrangements == []
        assert travel.cancelled_bookings == 2
        assert arranged_visit_ids(session, visit_ids={visit_id}) == set()
        detail = request_detail(
            session, patient_id=travel.request.patient_id, request_id=travel.request.id
        )
        assert detail is not None
        # The cost history stays: both bookings, their costs, who cancelled them and when.
        assert [(a.kind.value, a.cost_cents) for a in detail.arrangements] == [
            ("flight", 41280),
            ("lodging", 12000),
        ]
        assert detail.total_cents == 0 and detail.cancelled_cents == 41280 + 12000
        assert all(a.cancelled_at == clock.now() for a in detail.arrangements)
        assert all(a.review_needed_at is None for a in detail.arrangements)
        staff_id = actor_of(session, COORDINATOR_MD).user_id
        assert {a.cancelled_by_user_id for a in detail.arrangements} == {staff_id}
        assert [e.action for e in detail.events][-2:] == ["booking_cancelled"] * 2
        audited = session.scalars(
            select(AuditEvent.action).where(
                AuditEvent.target == f"travel_request:{travel.request.id}",
                AuditEvent.action == "travel.booking_cancelled",
            )
        ).all()
        assert len(audited) == 2


def test_the_record_lists_travel_and_the_timeline_shows_its_steps(
    db: Database, clock: FrozenClock
) -> None:
    visit_id = booked_visit(db, clock, PATIENT_MD)
    andre_visit = booked_visit(db, clock, PATIENT_CO)
    with db.factory() as session:
        request = arranged_request(session, clock, visit_id)
        clock.advance(timedelta(hours=1))
        cancel(session, clock, visit_id)
        session.commit()
        patient_id, request_id = request.patient_id, request.id
    with db.factory() as session:
        [row] = travel_for_record(session, patient_id=patient_id)
        assert row.request.id == request_id and row.visit.id == visit_id
        assert (row.booked, row.cancelled, row.to_review) == (2, 0, True)
        steps = [
            entry
            for entry in patient_timeline(session, patient_id=patient_id)
            if entry.kind is TimelineKind.TRAVEL
        ]
        # Newest first: flagged by the platform when the visit was cancelled, after the
        # coordinator's steps and the patient's request.
        assert [entry.action for entry in steps] == [
            "flagged",
            "arranged",
            "booked",
            "booked",
            "approved",
            "requested",
        ]
        assert steps[0].system and steps[0].reason == "cancelled"
        assert {entry.actor for entry in steps[1:5]} == {"Morgan Reyes"}
        assert not any(entry.system for entry in steps[1:])
        assert steps[-1].kinds == ("flight", "lodging")
        assert {entry.visit_id for entry in steps} == {visit_id}
        # No cost and no free-text need on any line.
        for entry in steps:
            shown = " ".join(str(value) for value in vars(entry).values())
            assert "412" not in shown and "ground-floor" not in shown
        # Another patient's record shows none of it.
        andre = session.get(Visit, andre_visit)
        assert andre is not None
        assert travel_for_record(session, patient_id=andre.patient_id) == []
        assert not any(
            entry.kind is TimelineKind.TRAVEL
            for entry in patient_timeline(session, patient_id=andre.patient_id)
        )


# --- pages -------------------------------------------------------------------------------


def _asked_and_arranged(
    db: Database, browsers: Callable[[str], Browser], maya: int, visit_id: int
) -> tuple[Browser, str, int]:
    browsers(PATIENT_MD).post(f"/care/{maya}/visits/{visit_id}/travel", ASK)
    [asked] = requests_of(db, visit_id)
    staff = browsers(COORDINATOR_MD)
    base = f"/patients/{maya}/visits/{visit_id}/travel"
    staff.post(f"{base}/approve", {"request_id": str(asked.id)})
    staff.post(
        f"{base}/book",
        {
            "request_id": str(asked.id),
            "kind": "flight",
            "summary": "Southwest WN 1234",
            "starts_on": (DAY - timedelta(days=1)).isoformat(),
            "ends_on": DAY.isoformat(),
            "cost": "412.80",
        },
    )
    staff.post(f"{base}/arranged", {"request_id": str(asked.id)})
    return staff, base, asked.id


@BOTH_WAYS
def test_the_record_page_lists_travel_and_its_steps_without_costs_or_needs(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    maya = patient_id_of(db, PATIENT_MD)
    visit_id = booked(db, clock, maya)
    staff = browsers(COORDINATOR_MD)
    before = plain(staff.get(f"/patients/{maya}", htmx=htmx).text)
    assert "No travel support was asked for." in before
    _staff, base, _request_id = _asked_and_arranged(db, browsers, maya, visit_id)
    page = staff.get(f"/patients/{maya}", htmx=htmx)
    assert page.status_code == 200
    assert f'href="{base}"' in page.text
    text = plain(page.text)
    assert "No travel support was asked for." not in text
    assert "Arranged" in text and "Flight, Lodging" in text and "1 booking" in text
    assert "Travel support: Asked" in text
    assert "Travel support: Approved" in text
    assert "Travel support: Marked arranged" in text
    assert "Morgan Reyes" in text
    # Costs and the patient's needs stay on the travel page.
    assert "412.80" not in text and "A ground-floor room." not in text
    # Another state's coordinator cannot open the record at all.
    assert browsers(COORDINATOR_CO).get(f"/patients/{maya}", htmx=htmx).status_code == 404


@BOTH_WAYS
def test_a_cancelled_visit_is_said_plainly_and_its_bookings_are_recorded_cancelled(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    maya = patient_id_of(db, PATIENT_MD)
    visit_id = booked(db, clock, maya)
    staff, base, request_id = _asked_and_arranged(db, browsers, maya, visit_id)
    cancelled = staff.post(
        f"/patients/{maya}/visits/{visit_id}/cancel", {"cancel_reason": "The clinic closed."}
    )
    assert cancelled.status_code in (200, 303), cancelled.text[:500]
    patient = browsers(PATIENT_MD)
    mine = plain(patient.get(f"/care/{maya}/visits/{visit_id}/travel", htmx=htmx).text)
    assert "Your appointment was cancelled, so the travel booked for it will be cancelled." in mine
    page = plain(staff.get(base, htmx=htmx).text)
    assert "The visit was cancelled after this request. Cancel its bookings below" in page
    assert "Record it cancelled" in page
    with db.factory() as session:
        [booking_id] = [
            a.id for a in travel_for_visits(session, visit_ids=[visit_id])[visit_id].arrangements
        ]
    # Another state's coordinator cannot cancel it; a booking of nothing is refused plainly.
    elsewhere = browsers(COORDINATOR_CO).post(
        f"{base}/cancel-booking",
        {"request_id": str(request_id), "arrangement_id": str(booking_id)},
        htmx=htmx,
    )
    assert elsewhere.status_code == 404
    wrong = staff.post(
        f"{base}/cancel-booking",
        {"request_id": str(request_id), "arrangement_id": "nonsense"},
        htmx=htmx,
    )
    assert wrong.status_code == (200 if htmx else 400)  # htmx swaps the page with its error
    assert "This booking is not part of this request." in wrong.text
    done = staff.post(
        f"{base}/cancel-booking",
        {"request_id": str(request_id), "arrangement_id": str(booking_id)},
        htmx=htmx,
    )
    assert done.status_code == (200 if htmx else 303)
    after = plain(staff.get(base, htmx=htmx).text)
    assert "Cancelled on" in after and "by Morgan Reyes" in after
    assert "Cancelled bookings (cost kept for the record) $412.80" in after
    assert "Total $0.00" in after
    assert "Booking cancelled" in after  # the history
    mine = plain(patient.get(f"/care/{maya}/visits/{visit_id}/travel", htmx=htmx).text)
    assert "1 booking for this visit was cancelled by the care team." in mine
    assert "Southwest" not in mine
    record = plain(staff.get(f"/patients/{maya}").text)
    assert "Travel support: Booking cancelled" in record
    assert "Travel support: Visit changed: to review" in record
    assert "The visit was cancelled." in record
    assert "0 bookings" in record and "1 cancelled" in record


def test_a_cancelled_visit_is_said_in_spanish(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    andre = patient_id_of(db, PATIENT_CO)
    visit_id = booked(db, clock, andre)
    rosa = browsers(CAREGIVER_CO)  # Andre's grandmother reads Spanish, may act on visits
    url = f"/care/{andre}/visits/{visit_id}/travel"
    rosa.post(url, {**ASK, "kinds": ["lodging"], "travellers": "1"})
    [asked] = requests_of(db, visit_id)
    staff = browsers(COORDINATOR_CO)
    base = f"/patients/{andre}/visits/{visit_id}/travel"
    staff.post(
        f"{base}/book",
        {
            "request_id": str(asked.id),
            "kind": "lodging",
            "summary": "Ronald McDonald House",
            "starts_on": (DAY - timedelta(days=1)).isoformat(),
            "ends_on": DAY.isoformat(),
            "cost": "50",
        },
    )
    staff.post(f"{base}/arranged", {"request_id": str(asked.id)})
    staff.post(f"/patients/{andre}/visits/{visit_id}/cancel", {"cancel_reason": "Closed."})
    page = plain(rosa.get(url).text)
    assert "Su cita se canceló, por lo que el viaje reservado para ella se cancelará." in page
    with db.factory() as session:
        [booking] = travel_for_visits(session, visit_ids=[visit_id])[visit_id].arrangements
    staff.post(
        f"{base}/cancel-booking", {"request_id": str(asked.id), "arrangement_id": str(booking.id)}
    )
    page = plain(rosa.get(url).text)
    assert "El equipo de atención canceló 1 reserva para esta visita." in page
    assert "Ronald McDonald House" not in page
