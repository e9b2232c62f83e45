"""End to end in Chromium: the follow-up journey of issue 3.

A Maryland coordinator enrolls a patient with an infusion date and sees the 15-year
schedule; books the next visit and invites the patient by text. The patient joins, sees the
next visit with its window in words, confirms it, downloads its `.ics` (parsed here: the
booked local time in the patient's zone, no diagnosis or therapy in the words) and asks to
move it. The coordinator finds both on the worklist; a Colorado coordinator finds none of
it and gets "not found" on the patient's pages.

The journey enrolls a patient, which changes what other e2e tests count on the shared
server (e.g. the Maryland patient list): it runs on a server of its own."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar, Event
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect

from coordination.followup.protocol import shipped_protocols
from coordination.worklist.buckets import Bucket
from tests.conftest import COORDINATOR_CO, COORDINATOR_MD
from tests.e2e.conftest import (
    E2E,
    LiveServer,
    TotpCodes,
    axe_check,
    open_context,
    screenshot,
    serve_platform,
)
from tests.e2e.test_invitation_journey import log_in_staff, log_out, newest_invitation_link

pytestmark = E2E

ZONE = "America/New_York"  # Maryland's, so the patient's (the form leaves the zone empty)
GIVEN, FAMILY = "Noor", "Castellanos"  # fictional, and no demo patient has either name
MEDICAID_ID = "MD90418270"
PHONE = "(410) 555-0184"  # the demo uses 0100-0101, 0110-0139 and 0160-0162 (portal/demo.py)
LOGIN, PASSWORD = "noor.castellanos", "tide pools at dawn 2026"
THERAPY = "casgevy"
DAYS_SINCE_INFUSION = 95  # the day-30 window is long closed; the day-100 one is open
BOOKED_IN_DAYS, BOOKED_AT = 3, "09:30"
PREFERRED_IN_DAYS = 10
MOVE_NOTE = "Mornings are hard that week; any afternoon suits me."
# Words that would tell a lock screen or a shared calendar what the patient is treated for.
HEALTH_WORDS = ("casgevy", "lyfgenia", "sickle", "gene", "therapy", "hemoglobin")


@pytest.fixture(scope="module")
def journey_server(
    e2e_tools: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    with serve_platform(tmp_path_factory.mktemp("follow-up")) as server:
        yield server


@pytest.fixture
def journey_contexts(browser: Browser, journey_server: LiveServer) -> Iterator[list[Page]]:
    """Three people, each in a browser of their own: MD coordinator, patient, CO coordinator."""
    contexts: list[BrowserContext] = [open_context(browser, journey_server.url) for _ in range(3)]
    try:
        yield [context.new_page() for context in contexts]
    finally:
        for context in contexts:
            context.close()


def long_day(day: date) -> str:
    """How the pages write a date in English ("November 30, 2026")."""
    return f"{day:%B} {day.day}, {day.year}"


def full_day(day: date) -> str:
    return f"{day:%A}, {long_day(day)}"


def medium_day(day: date) -> str:
    return f"{day:%b} {day.day}, {day.year}"


def path_of(page: Page) -> str:
    """The page's path, without the host or the query."""
    return urlsplit(page.url).path


def visit_labels() -> list[str]:
    """The English names of the protocol's visits, in order (day 30 ... year 15)."""
    protocol = shipped_protocols().current(THERAPY)
    assert protocol is not None
    return [visit.label.text("en") for visit in protocol.visits]


def day_100_window(today: date) -> tuple[date, date]:
    """When the day-100 visit's window opens and closes (by the shipped protocol)."""
    protocol = shipped_protocols().current(THERAPY)
    assert protocol is not None
    visit = protocol.visit("day-100")
    assert visit is not None
    opens, _target, closes = visit.window(infusion_date(today))
    assert opens <= today <= closes, "the day-100 window should be open today"
    return opens, closes


def infusion_date(today: date) -> date:
    return today - timedelta(days=DAYS_SINCE_INFUSION)


def open_bucket(page: Page, bucket: Bucket) -> Locator:
    """Click a worklist tab (htmx swaps the results); the rows of that bucket. Tabs are
    found by their address, not their words."""
    tab = page.get_by_role("navigation", name="Worklist buckets").locator(
        f"a[href*='bucket={bucket.value}']"
    )
    tab.click()
    expect(tab).to_have_attribute("aria-current", "page")
    expect(page).to_have_url(re.compile(rf"bucket={bucket.value}\b"))
    return page.locator("#results tbody tr")


def enroll_and_book(page: Page, totp: TotpCodes, today: date) -> tuple[str, str, date]:
    """Step 1, the MD coordinator. Returns the paths of the record and of the booked visit,
    and the booked day."""
    labels = visit_labels()
    infusion = infusion_date(today)
    booked = today + timedelta(days=BOOKED_IN_DAYS)

    log_in_staff(page, COORDINATOR_MD, totp)
    page.get_by_role("link", name="Enroll a patient").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Enroll a patient")
    axe_check(page)
    page.locator("#f-given_name").fill(GIVEN)
    page.locator("#f-family_name").fill(FAMILY)
    page.locator("#f-birth_date").fill("2009-04-18")
    page.locator("#f-preferred_language").select_option("en")
    page.locator("#f-mobile_phone").fill(PHONE)
    expect(page.locator("#f-state_id")).to_have_value(re.compile(r"^\d+$"))  # the only state
    page.locator("#f-center_id").select_option(label="Harborview Medical Center (MD)")
    page.locator("#f-therapy_id").select_option(label="Casgevy (exagamglogene autotemcel)")
    page.locator("#f-medicaid_id").fill(MEDICAID_ID)
    page.locator("#f-infusion_date").fill(infusion.isoformat())
    page.locator("#f-status").select_option("active")
    screenshot(page, "enroll")
    page.get_by_role("button", name="Enroll").click()

    # The record, with the whole schedule anchored on the infusion date.
    expect(page).to_have_url(re.compile(r"/patients/\d+\?done=enrolled$"))
    record_path = path_of(page)
    expect(page.get_by_role("status")).to_have_text("The patient is enrolled.")
    expect(page.get_by_role("heading", level=1)).to_contain_text(f"{GIVEN} {FAMILY}")
    schedule = page.locator("section", has=page.locator("#schedule-title"))
    rows = schedule.locator("tbody tr")
    expect(rows).to_have_count(len(labels))
    expect(rows.locator("td:first-child a")).to_have_text(labels)
    assert labels[0] == "Day 30 check-up" and labels[-1] == "Year 15 check-up", labels
    opens, closes = day_100_window(today)
    expect(rows.nth(1)).to_contain_text(f"{medium_day(opens)} to {medium_day(closes)}")
    axe_check(page)
    screenshot(page, "record-schedule")

    # Enrolled after the day-30 window closed: that visit could never be kept here, so it
    # is recorded missed (already followed up) and the day-100 visit comes next.
    expect(rows.nth(0)).to_contain_text("Missed")
    expect(rows.nth(0)).not_to_contain_text("Next")

    # The day-100 visit is next: the coordinator books it a few days ahead.
    expect(rows.nth(1)).to_contain_text("Next")
    rows.nth(1).get_by_role("link", name=labels[1]).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(labels[1])
    card = page.locator("#appointment-card")
    card.locator("#f-day").fill(booked.isoformat())
    card.locator("#f-time").fill(BOOKED_AT)
    expect(card.locator("#f-location")).to_have_value("Harborview Medical Center")
    card.get_by_role("button", name="Book the appointment").click()
    expect(page.get_by_role("status")).to_have_text("The appointment is booked.")
    visit_path = path_of(page)
    expect(page.locator(".facts")).to_contain_text(
        re.compile(rf"{re.escape(full_day(booked))}, 9:30\s*AM E[SD]T")
    )
    axe_check(page)
    screenshot(page, "visit-booked")

    # Invites the patient by text message.
    page.get_by_role("link", name=f"Back to the record of {GIVEN} {FAMILY}").click()
    portal_access = page.locator("section", has=page.locator("#portal-title"))
    portal_access.get_by_role("radio", name="By text message").check()
    portal_access.get_by_role("button", name="Send invitation").click()
    expect(page.get_by_role("status")).to_have_text("The invitation was texted.")
    log_out(page)
    return record_path, visit_path, booked


def patient_confirms_and_asks_to_move(page: Page, today: date, booked: date) -> None:
    """Step 2, the patient."""
    label = visit_labels()[1]
    opens, closes = day_100_window(today)
    window_words = f"This visit should take place between {long_day(opens)} and {long_day(closes)}."

    # Joins from the text message.
    link = newest_invitation_link(page, PHONE)
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Welcome, {GIVEN} {FAMILY}")
    page.locator("#f-login").fill(LOGIN)
    page.locator("#f-password").fill(PASSWORD)
    page.locator("#f-password_again").fill(PASSWORD)
    page.get_by_role("button", name="Save and continue").click()
    expect(page).to_have_url(re.compile(r"/login\?welcome=1$"))
    page.locator("#f-login").fill(LOGIN)
    page.locator("#f-password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/home$"))

    # The home page: the next visit, its window in words, the appointment; confirm (htmx).
    card = page.locator("[id^='visit-card-']")
    expect(card).to_contain_text(label)
    expect(card).to_contain_text(window_words)
    expect(card).to_contain_text(
        re.compile(rf"Appointment: {re.escape(full_day(booked))} at 9:30\s*AM")
    )
    card.get_by_role("button", name="Confirm this appointment").click()
    card = page.locator("[id^='visit-card-']")
    expect(card.get_by_role("status")).to_have_text("Thank you: the appointment is confirmed.")
    expect(card.locator(".badge")).to_have_text("Confirmed")
    expect(card.get_by_role("button", name="Confirm this appointment")).to_have_count(0)
    axe_check(page)
    screenshot(page, "home-confirmed")

    # The schedule page: the same visit, confirmed; its calendar file.
    card.get_by_role("link", name=re.compile(r"^See all visits")).click()
    expect(page).to_have_url(re.compile(r"/care/\d+/schedule$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Your visits")
    next_visit = page.locator("#next-visit")
    expect(next_visit).to_contain_text(label)
    expect(next_visit).to_contain_text(window_words)
    expect(next_visit).to_contain_text("This appointment is confirmed. Thank you.")
    axe_check(page)
    with page.expect_download() as info:
        next_visit.get_by_role("link", name="Add to my calendar").click()
    download = info.value
    assert download.suggested_filename == "visit.ics"
    check_calendar_file(Path(download.path()), booked)

    # Asks to move it (htmx): a preferred date and a note.
    preferred = today + timedelta(days=PREFERRED_IN_DAYS)
    next_visit.locator("summary", has_text="Ask to move this visit").click()
    next_visit.locator("#f-preferred_date").fill(preferred.isoformat())
    next_visit.locator("#f-note").fill(MOVE_NOTE)
    next_visit.get_by_role("button", name="Send the request").click()
    next_visit = page.locator("#next-visit")
    expect(next_visit.get_by_role("status")).to_have_text(
        "Your request is sent. Your care team will contact you to agree on a new date."
    )
    expect(next_visit).to_contain_text(f"Preferred date: {long_day(preferred)}.")
    axe_check(page)
    screenshot(page, "schedule-move-requested")
    log_out(page)


def check_calendar_file(path: Path, booked: date) -> None:
    """One event at the booked wall-clock time in the patient's zone, and no word in it
    that tells what the patient is treated for."""
    calendar = Calendar.from_ical(path.read_bytes())
    events = [part for part in calendar.walk() if isinstance(part, Event)]
    assert len(events) == 1, calendar.to_ical()
    event = events[0]
    start = event.decoded("DTSTART")
    assert isinstance(start, datetime)
    assert event["DTSTART"].params.get("TZID") == ZONE
    assert start.replace(tzinfo=None) == datetime(booked.year, booked.month, booked.day, 9, 30)
    local = datetime(booked.year, booked.month, booked.day, 9, 30, tzinfo=ZoneInfo(ZONE))
    assert start.utcoffset() == local.utcoffset()
    zones = [str(part["TZID"]) for part in calendar.walk("VTIMEZONE")]
    assert zones == [ZONE], zones
    assert str(event.get("STATUS")) == "CONFIRMED"
    summary, description = str(event["SUMMARY"]), str(event["DESCRIPTION"])
    assert "Maryland Care Connect" in summary, summary
    for text in (summary, description):
        found = [word for word in HEALTH_WORDS if word in text.lower()]
        assert not found, f"{found} in {text!r}"


def coordinator_sees_both(page: Page, totp: TotpCodes, today: date) -> None:
    """Step 3, the MD coordinator, on the worklist."""
    label = visit_labels()[1]
    name = f"{FAMILY}, {GIVEN}"
    log_in_staff(page, COORDINATOR_MD, totp)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Worklist").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Worklist")
    axe_check(page)

    # Recent activity: the patient's confirmation (and the request), by the patient.
    rows = open_bucket(page, Bucket.ACTIVITY).filter(has_text=name)
    confirmed = rows.filter(has_text=f"Confirmed: {label}")
    expect(confirmed).to_have_count(1)
    expect(confirmed).to_contain_text(f"By {GIVEN} {FAMILY} (patient)")
    expect(rows.filter(has_text=f"Asked to move: {label}")).to_have_count(1)
    axe_check(page)

    # Move requests: the visit, the preferred date, who asked.
    rows = open_bucket(page, Bucket.MOVE_REQUESTS).filter(has_text=name)
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(label)
    preferred = today + timedelta(days=PREFERRED_IN_DAYS)
    expect(rows).to_contain_text(f"Preferred date: {medium_day(preferred)}")
    expect(rows).to_contain_text(f"By {GIVEN} {FAMILY} (patient)")
    expect(rows).to_contain_text(MEDICAID_ID)
    screenshot(page, "worklist-move-requests")

    # Confirmed, so not among the appointments nobody confirmed.
    expect(open_bucket(page, Bucket.UNCONFIRMED).filter(has_text=name)).to_have_count(0)

    # Searching by the Medicaid ID counts the patient's rows in each bucket.
    page.locator("#f-q").fill(MEDICAID_ID)
    page.get_by_role("button", name="Show").click()
    tabs = page.locator("#results form[aria-label='Worklist buckets']")
    expect(tabs.locator(f"button[value='{Bucket.ACTIVITY.value}'] .badge")).to_have_text("2")
    expect(tabs.locator(f"button[value='{Bucket.MOVE_REQUESTS.value}'] .badge")).to_have_text("1")
    log_out(page)


def other_state_sees_nothing(
    page: Page, totp: TotpCodes, record_path: str, visit_path: str
) -> None:
    """Step 4, the CO coordinator: in no bucket, and the record is "not found"."""
    log_in_staff(page, COORDINATOR_CO, totp)
    page.goto("/worklist")
    for bucket in Bucket:
        open_bucket(page, bucket)
        results = page.locator("#results")
        expect(results).not_to_contain_text(FAMILY)
        expect(results).not_to_contain_text(MEDICAID_ID)

    # Searching the worklist by name or Medicaid ID: zero in every bucket.
    for text in (FAMILY, MEDICAID_ID):
        page.locator("#f-q").fill(text)
        page.get_by_role("button", name="Show").click()
        counts = page.locator("#results form[aria-label='Worklist buckets'] button .badge")
        expect(counts).to_have_text(["0"] * len(Bucket))

    patient_id = record_path.rsplit("/", 1)[1]
    visit_id = visit_path.rsplit("/", 1)[1]
    for path in (
        record_path,
        visit_path,
        f"/care/{patient_id}/schedule",
        f"/care/{patient_id}/visits/{visit_id}.ics",
    ):
        response = page.goto(path)
        assert response is not None and response.status == 404, (path, response)
        expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
        expect(page.locator("main")).not_to_contain_text(FAMILY)
    axe_check(page)
    # The error page's way back (it shows no menu): still logged in.
    page.get_by_role("link", name="Go to your home page").click()
    expect(page).to_have_url(re.compile(r"/worklist$"))
    log_out(page)


def test_enrolment_schedule_confirmation_calendar_and_worklist(
    journey_contexts: list[Page],
) -> None:
    coordinator_md, patient, coordinator_co = journey_contexts
    # This server's TOTP steps are its own (the shared server's codes do not count here).
    totp = TotpCodes()
    today = datetime.now(ZoneInfo(ZONE)).date()

    record_path, visit_path, booked = enroll_and_book(coordinator_md, totp, today)
    patient_confirms_and_asks_to_move(patient, today, booked)
    coordinator_sees_both(coordinator_md, totp, today)
    other_state_sees_nothing(coordinator_co, totp, record_path, visit_path)
