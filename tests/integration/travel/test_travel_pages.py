"""Travel support in the portal: a patient asks beside a booked visit, a coordinator of the
patient's state approves, records what was booked and marks it arranged, and the patient
sees it beside the appointment; a caregiver without the right to act on visits is refused,
another state's coordinator sees nothing (404), the worklist's bucket lists the requests (and
the moved visits' travel to review), admins keep each state's policy with history, and the
pages speak Spanish. Pages run as plain requests and as htmx requests; SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, time, timedelta

import pytest
from sqlalchemy import select

from coordination.travel.models import TravelPolicy, TravelRequest, TravelStatus
from core.clock import FrozenClock
from tests.conftest import (
    ADMIN,
    CAREGIVER_CO,
    CAREGIVER_MD,
    COORDINATOR_CO,
    COORDINATOR_MD,
    PATIENT_CO,
    PATIENT_MD,
    Browser,
    Database,
    plain,
)
from tests.integration.followup.test_schedule_portal import (
    book,
    open_visit_ids,
    patient_id_named,
    patient_id_of,
    plan,
)

BOTH_WAYS = pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
DAY = date(2026, 12, 10)


def booked(db: Database, clock: FrozenClock, patient_id: int, day: date = DAY) -> int:
    plan(db, clock, patient_id)
    visit_id = open_visit_ids(db, patient_id)[0]
    book(db, clock, visit_id, day, time(10, 0))
    return visit_id


def requests_of(db: Database, visit_id: int) -> list[TravelRequest]:
    with db.factory() as session:
        return list(
            session.scalars(select(TravelRequest).where(TravelRequest.visit_id == visit_id))
        )


ASK = {
    "kinds": ["flight", "lodging"],
    "depart_on": (DAY - timedelta(days=1)).isoformat(),
    "return_on": DAY.isoformat(),
    "travellers": "2",
    "needs": "A ground-floor room.",
}


@BOTH_WAYS
def test_a_request_from_the_page_to_the_arrangement_on_the_schedule(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    maya = patient_id_of(db, PATIENT_MD)
    visit_id = booked(db, clock, maya)
    patient = browsers(PATIENT_MD)
    schedule = patient.get(f"/care/{maya}/schedule")
    assert "Ask for help with travel, lodging or meals" in schedule.text
    page = patient.get(f"/care/{maya}/visits/{visit_id}/travel", htmx=htmx)
    assert page.status_code == 200
    text = plain(page.text)
    assert "What Maryland Care Connect pays for" in text
    assert "Mileage (own car): $0.67 a mile" in text
    assert "Lodging: up to 3 nights per visit" in text
    assert ("<html" in page.text) is not htmx  # htmx gets the block only

    sent = patient.post(f"/care/{maya}/visits/{visit_id}/travel", ASK, htmx=htmx)
    if htmx:
        assert sent.status_code == 200
        assert "Your request is sent." in sent.text
    else:
        assert sent.status_code == 303
    [asked] = requests_of(db, visit_id)
    assert asked.status is TravelStatus.REQUESTED

    staff = browsers(COORDINATOR_MD)
    worklist = staff.get("/worklist?bucket=travel")
    assert f"/patients/{maya}/visits/{visit_id}/travel" in worklist.text
    assert "Asked, waiting for the care team" in plain(worklist.text)
    base = f"/patients/{maya}/visits/{visit_id}/travel"
    staff_page = staff.get(base, htmx=htmx)
    assert staff_page.status_code == 200
    assert "A ground-floor room." in staff_page.text
    assert staff.post(f"{base}/approve", {"request_id": str(asked.id)}, htmx=htmx).status_code in (
        200,
        303,
    )
    over = staff.post(
        f"{base}/book",
        {
            "request_id": str(asked.id),
            "kind": "lodging",
            "summary": "Harbor Hotel",
            "starts_on": (DAY - timedelta(days=1)).isoformat(),
            "ends_on": DAY.isoformat(),
            "cost": "180",
        },
        htmx=htmx,
    )
    assert over.status_code == (200 if htmx else 400)
    assert "Over the state&#39;s limit: at most $150.00 for 1 nights." in over.text
    for kind, summary, cost in (
        ("flight", "Southwest WN 1234 and back", "412.80"),
        ("lodging", "Hope Lodge", "120"),
    ):
        booked_answer = staff.post(
            f"{base}/book",
            {
                "request_id": str(asked.id),
                "kind": kind,
                "summary": summary,
                "starts_on": (DAY - timedelta(days=1)).isoformat(),
                "ends_on": DAY.isoformat(),
                "cost": cost,
            },
            htmx=htmx,
        )
        assert booked_answer.status_code in (200, 303)
    # Booked but not marked arranged: the patient does not see it yet.
    assert "Southwest" not in patient.get(f"/care/{maya}/schedule").text
    staff.post(f"{base}/arranged", {"request_id": str(asked.id)}, htmx=htmx)
    detail = plain(staff.get(base).text)
    assert "Total $532.80" in detail
    assert "Marked arranged" in detail and "Morgan Reyes" in detail

    arranged = plain(patient.get(f"/care/{maya}/schedule", htmx=htmx).text)
    assert "Your travel is arranged" in arranged
    assert "Flight: Southwest WN 1234 and back" in arranged
    assert "Lodging: Hope Lodge" in arranged
    # The patient reads no cost.
    assert "412.80" not in arranged
    # Nothing is waiting on the worklist any more.
    assert f"{base}" not in staff.get("/worklist?bucket=travel").text


def test_a_decline_and_its_reason_reach_the_patient(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    maya = patient_id_of(db, PATIENT_MD)
    visit_id = booked(db, clock, maya)
    patient = browsers(PATIENT_MD)
    patient.post(f"/care/{maya}/visits/{visit_id}/travel", ASK)
    [asked] = requests_of(db, visit_id)
    staff = browsers(COORDINATOR_MD)
    base = f"/patients/{maya}/visits/{visit_id}/travel"
    empty = staff.post(f"{base}/decline", {"request_id": str(asked.id), "reason": " "})
    assert empty.status_code == 400
    assert "Say why: the patient reads it." in empty.text
    staff.post(f"{base}/decline", {"request_id": str(asked.id), "reason": "Use the shuttle."})
    page = plain(patient.get(f"/care/{maya}/visits/{visit_id}/travel").text)
    assert "Declined" in page
    assert "The care team's answer: Use the shuttle." in page


def test_limits_and_unfunded_kinds_are_refused_with_the_limit(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    andre = patient_id_of(db, PATIENT_CO)
    visit_id = booked(db, clock, andre)
    patient = browsers(PATIENT_CO)
    url = f"/care/{andre}/visits/{visit_id}/travel"
    # Colorado does not fund flights: the form does not even offer them...
    assert 'value="flight"' not in patient.get(url).text
    # ...and a request for one is refused, saying so.
    refused = patient.post(url, {**ASK, "kinds": ["flight"]})
    assert refused.status_code == 400
    assert "Your state&#39;s program does not pay for flights." in refused.text
    too_long = patient.post(
        url,
        {**ASK, "kinds": ["lodging"], "depart_on": (DAY - timedelta(days=3)).isoformat()},
    )
    assert too_long.status_code == 400
    assert "pays at most 2 nights of lodging per visit; these dates make 3." in plain(too_long.text)
    assert requests_of(db, visit_id) == []


def test_a_caregiver_without_the_right_to_act_on_visits_is_refused(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    imani = patient_id_named(db, "Imani")  # Denise only sees her schedule
    visit_id = booked(db, clock, imani)
    denise = browsers(CAREGIVER_MD)
    page = denise.get(f"/care/{imani}/visits/{visit_id}/travel")
    assert page.status_code == 200
    assert "Ask for travel support" not in page.text
    assert "To ask for travel support, call Maryland Care Connect" in plain(page.text)
    assert denise.post(f"/care/{imani}/visits/{visit_id}/travel", ASK).status_code == 404
    assert requests_of(db, visit_id) == []
    # Maya's link gives her the right: she may ask for her.
    maya = patient_id_of(db, PATIENT_MD)
    maya_visit = booked(db, clock, maya)
    assert denise.post(f"/care/{maya}/visits/{maya_visit}/travel", ASK).status_code == 303
    assert len(requests_of(db, maya_visit)) == 1


def test_another_states_coordinator_sees_nothing(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    maya = patient_id_of(db, PATIENT_MD)
    visit_id = booked(db, clock, maya)
    browsers(PATIENT_MD).post(f"/care/{maya}/visits/{visit_id}/travel", ASK)
    [asked] = requests_of(db, visit_id)
    colorado = browsers(COORDINATOR_CO)
    base = f"/patients/{maya}/visits/{visit_id}/travel"
    assert colorado.get(base).status_code == 404
    for step in ("approve", "arranged", "reviewed"):
        assert colorado.post(f"{base}/{step}", {"request_id": str(asked.id)}).status_code == 404
    assert (
        colorado.post(f"{base}/decline", {"request_id": str(asked.id), "reason": "x"}).status_code
        == 404
    )
    assert base not in colorado.get("/worklist?bucket=travel").text
    assert requests_of(db, visit_id)[0].status is TravelStatus.REQUESTED
    # Nor do patients see the coordinators' page, nor admins the patients' requests.
    assert browsers(PATIENT_MD).get(base).status_code == 403


def test_a_moved_appointment_puts_its_travel_back_on_the_worklist(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    maya = patient_id_of(db, PATIENT_MD)
    visit_id = booked(db, clock, maya)
    browsers(PATIENT_MD).post(
        f"/care/{maya}/visits/{visit_id}/travel",
        {**ASK, "kinds": ["meals"], "depart_on": DAY.isoformat(), "travellers": "1"},
    )
    [asked] = requests_of(db, visit_id)
    staff = browsers(COORDINATOR_MD)
    base = f"/patients/{maya}/visits/{visit_id}/travel"
    staff.post(
        f"{base}/book",
        {
            "request_id": str(asked.id),
            "kind": "meals",
            "summary": "Per-diem card",
            "starts_on": DAY.isoformat(),
            "ends_on": DAY.isoformat(),
            "cost": "60",
        },
    )
    staff.post(f"{base}/arranged", {"request_id": str(asked.id)})
    assert base not in staff.get("/worklist?bucket=travel").text
    moved = staff.post(
        f"/patients/{maya}/visits/{visit_id}/appointment",
        {
            "day": (DAY + timedelta(days=3)).isoformat(),
            "time": "11:00",
            "location": "Clinic B",
            "reason": "The clinic asked.",
            "outside_window": "yes",
        },
    )
    assert moved.status_code in (200, 303), moved.text[:500]
    worklist = plain(staff.get("/worklist?bucket=travel").text)
    assert "To review: the visit changed" in worklist
    page = plain(staff.get(base).text)
    assert "The appointment moved after this request." in page
    patient_page = plain(browsers(PATIENT_MD).get(f"/care/{maya}/visits/{visit_id}/travel").text)
    assert "Your appointment changed. The care team is reviewing your travel" in patient_page
    staff.post(f"{base}/reviewed", {"request_id": str(asked.id)})
    assert base not in staff.get("/worklist?bucket=travel").text


@BOTH_WAYS
def test_admins_keep_each_states_policy_with_history(
    db: Database, browsers: Callable[[str], Browser], htmx: bool
) -> None:
    admin = browsers(ADMIN)
    page = admin.get("/admin/travel", htmx=htmx)
    assert page.status_code == 200
    text = plain(page.text)
    assert "Travel policy: Colorado" in text and "Travel policy: Maryland" in text
    assert "In force" in text and "Upcoming" in text and "Past" in text
    with db.factory() as session:
        colorado_id = session.scalar(
            select(TravelPolicy.state_id).where(TravelPolicy.max_lodging_nights == 2)
        )
    refused = admin.post(
        "/admin/travel",
        {"state_id": str(colorado_id), "effective_from": "2026-01-01", "kinds": ["ride"]},
        htmx=htmx,
    )
    assert refused.status_code == (200 if htmx else 400)
    assert "A new version starts today or later" in refused.text
    added = admin.post(
        "/admin/travel",
        {
            "state_id": str(colorado_id),
            "effective_from": "2027-03-01",
            "kinds": ["mileage", "lodging"],
            "mileage_rate": "0.70",
            "max_lodging_nights": "2",
            "lodging_night_cap": "130",
        },
        htmx=htmx,
    )
    assert added.status_code in (204, 303)
    with db.factory() as session:
        versions = session.scalars(
            select(TravelPolicy).where(TravelPolicy.state_id == colorado_id)
        ).all()
    assert len(versions) == 3  # the two earlier ones stay
    # Coordinators and patients do not set policies.
    assert browsers(COORDINATOR_MD).get("/admin/travel").status_code == 403


def test_the_pages_speak_spanish(
    db: Database, clock: FrozenClock, browsers: Callable[[str], Browser]
) -> None:
    andre = patient_id_of(db, PATIENT_CO)
    visit_id = booked(db, clock, andre)
    rosa = browsers(CAREGIVER_CO)  # Andre's grandmother reads Spanish, may act on visits
    page = plain(rosa.get(f"/care/{andre}/visits/{visit_id}/travel").text)
    assert "Ayuda para el viaje" in page
    assert "Lo que Colorado Care Connect paga" in page
    assert "Kilometraje (auto propio): $0.65 por milla" in page
    refused = rosa.post(f"/care/{andre}/visits/{visit_id}/travel", {**ASK, "kinds": ["flight"]})
    assert "El programa de su estado no paga vuelos." in plain(refused.text)
    schedule = plain(rosa.get(f"/care/{andre}/schedule").text)
    assert "Pedir ayuda para el viaje, el alojamiento o las comidas" in schedule
