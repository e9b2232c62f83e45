"""End to end in Chromium: travel support of issue 13, on a phone for the patient.

Maya (Maryland) has a booked visit. She opens her visits, asks for a flight and lodging
for it; the Maryland coordinator finds the request on the worklist, approves it, records
the flight and the lodging and marks it arranged; Maya sees the arrangement beside the
appointment on her visits page (without its cost). Every page is axe-clean; the patient's
pages fit a phone.

The journey gives Maya a schedule and a request other e2e tests do not expect: it runs on a
server of its own."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, time, timedelta

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from coordination.followup.models import OPEN_VISIT_STATUSES, Visit
from coordination.followup.protocol import shipped_protocols
from coordination.followup.schedule import book_appointment, outside_window, sync_schedule
from core.audit.service import Actor
from core.clock import SystemClock
from core.db import make_engine, make_session_factory, transaction
from core.identity.models import User
from core.models import Patient
from tests.conftest import COORDINATOR_MD, PATIENT_MD
from tests.e2e.conftest import (
    DESKTOP,
    E2E,
    PHONE,
    LiveServer,
    TotpCodes,
    assert_no_horizontal_scroll,
    axe_check,
    open_context,
    screenshot,
    serve_platform,
)
from tests.e2e.test_education_journey import log_in_reader
from tests.e2e.test_invitation_journey import log_in_staff, log_out

pytestmark = E2E

IN_DAYS = 12  # the appointment, from today
FLIGHT = "Southwest WN 1234 and back"
LODGING = "Hope Lodge"
NEEDS = "A ground-floor room."


@pytest.fixture(scope="module")
def journey_server(
    e2e_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with serve_platform(tmp_path_factory.mktemp("travel")) as server:
        yield server


@pytest.fixture(scope="module")
def booked_visit(journey_server: LiveServer) -> tuple[int, int, date]:
    """Maya's schedule, and her next open visit booked IN_DAYS from today (the server's
    real clock): (patient id, visit id, day)."""
    clock = SystemClock()
    actor = Actor.system("e2e")
    day = clock.now().date() + timedelta(days=IN_DAYS)
    engine = make_engine(journey_server.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            patient = session.scalars(
                select(Patient)
                .join(User, User.patient_id == Patient.id)
                .where(User.login == PATIENT_MD)
            ).one()
            sync_schedule(
                session, clock=clock, actor=actor, library=shipped_protocols(), patient=patient
            )
            visit = session.scalars(
                select(Visit)
                .where(Visit.patient_id == patient.id, Visit.status.in_(OPEN_VISIT_STATUSES))
                .order_by(Visit.target_date)
                .limit(1)
            ).one()
            book_appointment(
                session,
                clock=clock,
                actor=actor,
                visit=visit,
                patient=patient,
                day=day,
                at=time(10, 0),
                location="Clinic B",
                reason="the day the test needs" if outside_window(visit, day) else None,
                outside_window_confirmed=True,
            )
            return patient.id, visit.id, day
    finally:
        engine.dispose()


def checked(page: Page, name: str) -> None:
    axe_check(page)
    assert_no_horizontal_scroll(page)
    screenshot(page, name)


def patient_asks(page: Page, patient_id: int, visit_id: int, day: date) -> None:
    log_in_reader(page, PATIENT_MD)
    page.goto(f"/care/{patient_id}/schedule")
    next_visit = page.locator("#next-visit-travel")
    next_visit.get_by_role("link", name="Ask for help with travel, lodging or meals").click()
    expect(page).to_have_url(re.compile(rf"/care/{patient_id}/visits/{visit_id}/travel$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Travel support")
    expect(page.locator("main")).to_contain_text("Lodging: up to 3 nights per visit")
    checked(page, "travel-ask")

    # Nothing chosen: refused with the reason, tied to the question.
    page.get_by_role("button", name="Send the request").click()
    expect(page.locator("#f-kinds-error")).to_be_visible()
    page.get_by_label("Flight").check()
    page.get_by_label("Lodging").check()
    page.locator("#f-depart_on").fill((day - timedelta(days=1)).isoformat())
    page.locator("#f-return_on").fill(day.isoformat())
    page.locator("#f-travellers").fill("2")
    page.locator("#f-needs").fill(NEEDS)
    page.get_by_role("button", name="Send the request").click()
    expect(page.get_by_role("status")).to_contain_text("Your request is sent.")
    request = page.locator("#travel-request")
    expect(request).to_contain_text("Flight, Lodging")
    expect(request).to_contain_text("2 people travelling.")
    checked(page, "travel-asked")


def coordinator_arranges(page: Page, totp: TotpCodes, patient_id: int, visit_id: int) -> None:
    base = f"/patients/{patient_id}/visits/{visit_id}/travel"
    log_in_staff(page, COORDINATOR_MD, totp)
    page.goto("/worklist?bucket=travel")
    page.locator(f"#results a[href='{base}']").first.click()
    expect(page).to_have_url(re.compile(rf"{re.escape(base)}$"))
    expect(page.locator("main")).to_contain_text(NEEDS)
    axe_check(page)
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#requests")).to_contain_text("Approved, being booked")
    for kind, summary, cost in (("Flight", FLIGHT, "412.80"), ("Lodging", LODGING, "120")):
        booking = page.locator("#requests details", has_text="Record a booking")
        booking.locator("summary").click()
        expect(booking).to_have_attribute("open", "")
        page.locator("#f-kind").select_option(label=kind)
        page.locator("#f-summary").fill(summary)
        page.locator("#f-cost").fill(cost)
        page.get_by_role("button", name="Record the booking").click()
        expect(page.locator("#requests")).to_contain_text(summary)
    expect(page.locator("#requests")).to_contain_text(re.compile(r"Total\s*\$532\.80"))
    page.get_by_role("button", name="Mark arranged (the patient sees it)").click()
    expect(page.locator("#requests")).to_contain_text("Marked arranged")
    axe_check(page)
    screenshot(page, "travel-staff-arranged")
    log_out(page)


def patient_sees_the_arrangement(page: Page, patient_id: int) -> None:
    page.goto(f"/care/{patient_id}/schedule")
    beside = page.locator("#next-visit-travel")
    expect(beside.get_by_role("heading", name="Your travel is arranged")).to_be_visible()
    expect(beside).to_contain_text(f"Flight: {FLIGHT}")
    expect(beside).to_contain_text(f"Lodging: {LODGING}")
    expect(page.locator("main")).not_to_contain_text("412.80")  # no cost for the patient
    checked(page, "travel-arranged-schedule")
    log_out(page)


def test_a_patient_asks_for_travel_a_coordinator_arranges_it_the_patient_sees_it(
    browser: Browser, journey_server: LiveServer, booked_visit: tuple[int, int, date]
) -> None:
    patient_id, visit_id, day = booked_visit
    patient = open_context(browser, journey_server.url, viewport=PHONE)
    staff = open_context(browser, journey_server.url, viewport=DESKTOP)
    try:
        maya = patient.new_page()
        patient_asks(maya, patient_id, visit_id, day)
        coordinator_arranges(staff.new_page(), TotpCodes(), patient_id, visit_id)
        patient_sees_the_arrangement(maya, patient_id)
    finally:
        patient.close()
        staff.close()
